//! A fake agent built from the protocol crate, for what a real `hsm-agent` never does: lie about
//! a result file's hash or size, offer paths outside `results/`, skip event numbers, send files
//! of tasks it was never given. It speaks real QUIC with mutual TLS (it accepts any coordinator)
//! and follows a per-task script. Like a real agent it answers `Attach` after a reconnect: it
//! sends again every event it sent for the attempts it holds (events lost with the old
//! connection would otherwise leave their task running forever) and names the others unknown.

#![allow(dead_code)]

use hsm_protocol::*;
use hsm_transport::identity::Identity;
use hsm_transport::tls::{self, TransportOptions};
use hsm_transport::wire::{read_frame, write_message};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A result stream as the fake sends it: any header, any bytes.
#[derive(Clone)]
pub struct Stream {
    pub header: FileHeader,
    pub body: Vec<u8>,
    /// Send the header and this many bytes of the body, then stay silent with the stream open.
    pub stall_after: Option<usize>,
}

/// What the fake does with one task attempt it is given.
#[derive(Clone, Default)]
pub struct Script {
    /// Sent at once (usually `Started`).
    pub first: Vec<(u64, EventKind)>,
    /// Before going on: wait (at most 60 s) until these files exist.
    pub wait_for: Vec<PathBuf>,
    /// Then sent unasked, each on its own stream.
    pub unasked: Vec<Stream>,
    /// Then these events (usually `Exited` and `ResultOffer`).
    pub then: Vec<(u64, EventKind)>,
    /// Sent when the coordinator asks for the attempt's results.
    pub on_fetch: Vec<Stream>,
    /// Sent (as `Error` frames) after `on_fetch`.
    pub errors_on_fetch: Vec<ErrorMsg>,
}

type Planner = dyn Fn(&SweepId, TaskRef, &BTreeSet<u64>) -> Script + Send + Sync;
/// Every attempt's script, across connections (a coordinator that reconnects asks for results
/// again on the new one).
/// `FetchResults` received, as (task index, paths asked for).
pub type Fetches = Arc<Mutex<Vec<(u64, Vec<String>)>>>;
type Scripts = Arc<Mutex<std::collections::HashMap<(u64, u32), Script>>>;
/// Events sent so far for each attempt, sent again on `Attach`.
type SentLog = Arc<Mutex<std::collections::HashMap<(u64, u32), Vec<(u64, EventKind)>>>>;
/// The writer of the current connection's control stream: scripts outlive connections.
type Writer = Arc<Mutex<mpsc::UnboundedSender<FromAgent>>>;

pub struct FakeAgent {
    pub addr: String,
    pub fingerprint: String,
    /// Task indexes the coordinator gave it.
    pub given: Arc<Mutex<BTreeSet<u64>>>,
    /// `FetchResults` it received, as (task index, paths asked for).
    pub fetches: Fetches,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The bytes' SHA-256 as the protocol writes it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A file offer for these bytes.
pub fn offer(path: &str, body: &[u8]) -> FileOffer {
    FileOffer {
        path: path.into(),
        size: body.len() as u64,
        sha256: sha256_hex(body),
    }
}

/// A stream carrying exactly what `offer(path, body)` announces.
pub fn honest(sweep: &SweepId, task: TaskRef, path: &str, body: &[u8]) -> Stream {
    Stream {
        header: FileHeader {
            sweep_id: sweep.clone(),
            task,
            path: path.into(),
            size: body.len() as u64,
            sha256: sha256_hex(body),
        },
        body: body.to_vec(),
        stall_after: None,
    }
}

pub fn started() -> EventKind {
    EventKind::Started {
        pid: 4242,
        at_ms: 0,
    }
}

pub fn exited_ok() -> EventKind {
    EventKind::Exited {
        outcome: OutcomeMsg::Exited { code: 0 },
        at_ms: 0,
        usage: None,
    }
}

impl FakeAgent {
    /// Listens on 127.0.0.1 with `slots`, scripting each attempt it is given with `plan`
    /// (which also sees every task index given so far).
    pub fn start(
        slots: u32,
        plan: impl Fn(&SweepId, TaskRef, &BTreeSet<u64>) -> Script + Send + Sync + 'static,
    ) -> FakeAgent {
        let identity = Identity::generate("fake-agent").unwrap();
        let fingerprint = identity.fingerprint();
        let given = Arc::new(Mutex::new(BTreeSet::new()));
        let fetches = Arc::new(Mutex::new(Vec::new()));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let plan: Arc<Planner> = Arc::new(plan);
        let (given2, fetches2) = (given.clone(), fetches.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let config = tls::server_config(
                    &identity,
                    Arc::new(|_: &str| true),
                    TransportOptions::default(),
                )
                .unwrap();
                let endpoint =
                    tls::server_endpoint("127.0.0.1:0".parse().unwrap(), config, &identity)
                        .unwrap();
                addr_tx.send(endpoint.local_addr().unwrap()).unwrap();
                let scripts = Scripts::default();
                let sent = SentLog::default();
                let writer: Writer = Arc::new(Mutex::new(mpsc::unbounded_channel().0));
                let serve = async {
                    while let Some(incoming) = endpoint.accept().await {
                        let Ok(conn) = incoming.await else { continue };
                        tokio::spawn(serve_connection(
                            conn,
                            slots,
                            Shared {
                                plan: plan.clone(),
                                scripts: scripts.clone(),
                                sent: sent.clone(),
                                writer: writer.clone(),
                                given: given2.clone(),
                                fetches: fetches2.clone(),
                            },
                        ));
                    }
                };
                tokio::select! {
                    () = serve => {}
                    _ = stop_rx => {}
                }
                endpoint.close(0u32.into(), b"test over");
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("fake agent did not start");
        FakeAgent {
            addr: addr.to_string(),
            fingerprint,
            given,
            fetches,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

/// What every connection of one fake agent shares.
struct Shared {
    plan: Arc<Planner>,
    scripts: Scripts,
    sent: SentLog,
    writer: Writer,
    given: Arc<Mutex<BTreeSet<u64>>>,
    fetches: Fetches,
}

async fn serve_connection(conn: quinn::Connection, slots: u32, shared: Shared) {
    let Shared {
        plan,
        scripts,
        sent,
        writer,
        given,
        fetches,
    } = shared;
    let Ok((mut send, mut recv)) = conn.accept_bi().await else {
        return;
    };
    let Ok(Some(_hello)) = read_frame(&mut recv, MAX_FRAME).await else {
        return;
    };
    let welcome = HelloReply::Welcome(Welcome {
        protocol_version: PROTOCOL_VERSION,
        agent_version: "0.0.0-fake".into(),
        agent_name: "fake".into(),
        slots,
        backend: "process".into(),
        running: Vec::new(),
        work_dir: "/fake/work".into(),
        preflight: None,
        sync: None,
    });
    if write_message(&mut send, &welcome).await.is_err() {
        return;
    }
    // One writer for the control stream; scripts send through it.
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<FromAgent>();
    *writer.lock().unwrap() = out_tx.clone();
    tokio::spawn(async move {
        while let Some(msg) = out_rx.recv().await {
            if write_message(&mut send, &msg).await.is_err() {
                return;
            }
        }
    });
    while let Ok(Some(frame)) = read_frame(&mut recv, MAX_FRAME).await {
        let Ok(msg) = decode::<ToAgent>(&frame) else {
            return;
        };
        match msg {
            ToAgent::Submit(submit) => {
                for task in &submit.tasks {
                    given.lock().unwrap().insert(task.index.0);
                }
                for task in submit.tasks {
                    let task = TaskRef {
                        index: task.index,
                        attempt: task.attempt,
                    };
                    let all = given.lock().unwrap().clone();
                    let script = plan(&submit.sweep_id, task, &all);
                    scripts
                        .lock()
                        .unwrap()
                        .insert((task.index.0, task.attempt.0), script.clone());
                    tokio::spawn(run_script(
                        conn.clone(),
                        submit.sweep_id.clone(),
                        task,
                        script,
                        sent.clone(),
                        writer.clone(),
                    ));
                }
            }
            ToAgent::FetchResults(fetch) => {
                fetches
                    .lock()
                    .unwrap()
                    .push((fetch.task.index.0, fetch.paths.clone()));
                let script = scripts
                    .lock()
                    .unwrap()
                    .get(&(fetch.task.index.0, fetch.task.attempt.0))
                    .cloned();
                if let Some(script) = script {
                    let (conn, out) = (conn.clone(), out_tx.clone());
                    tokio::spawn(async move {
                        for stream in script.on_fetch {
                            send_stream(&conn, stream).await;
                        }
                        for error in script.errors_on_fetch {
                            let _ = out.send(FromAgent::Error(error));
                        }
                    });
                }
            }
            ToAgent::Attach(attach) => {
                let mut unknown = Vec::new();
                for task in attach.tasks {
                    let key = (task.index.0, task.attempt.0);
                    if !scripts.lock().unwrap().contains_key(&key) {
                        unknown.push(task);
                        continue;
                    }
                    let again = sent.lock().unwrap().get(&key).cloned().unwrap_or_default();
                    if !again.is_empty() {
                        let _ = out_tx.send(events(&attach.sweep_id, task, again));
                    }
                }
                let _ = out_tx.send(FromAgent::Attached(AttachedMsg {
                    sweep_id: attach.sweep_id,
                    unknown,
                }));
            }
            ToAgent::Ping(ping) => {
                let _ = out_tx.send(FromAgent::Pong(PongMsg { nonce: ping.nonce }));
            }
            _ => {}
        }
    }
}

fn events(sweep: &SweepId, task: TaskRef, list: Vec<(u64, EventKind)>) -> FromAgent {
    FromAgent::Events(EventsMsg {
        events: list
            .into_iter()
            .map(|(seq, kind)| TaskEventMsg {
                sweep_id: sweep.clone(),
                task,
                seq: Seq(seq),
                kind,
            })
            .collect(),
    })
}

async fn run_script(
    conn: quinn::Connection,
    sweep: SweepId,
    task: TaskRef,
    script: Script,
    sent: SentLog,
    writer: Writer,
) {
    // Logged before it is written, so an `Attach` racing the write sends it again rather than
    // never.
    let send = |list: Vec<(u64, EventKind)>| {
        sent.lock()
            .unwrap()
            .entry((task.index.0, task.attempt.0))
            .or_default()
            .extend(list.iter().cloned());
        let _ = writer.lock().unwrap().send(events(&sweep, task, list));
    };
    if !script.first.is_empty() {
        send(script.first);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && !script.wait_for.iter().all(|p| p.exists()) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for stream in script.unasked {
        send_stream(&conn, stream).await;
    }
    if !script.then.is_empty() {
        send(script.then);
    }
}

async fn send_stream(conn: &quinn::Connection, stream: Stream) {
    let Ok(mut uni) = conn.open_uni().await else {
        return;
    };
    if write_message(&mut uni, &stream.header).await.is_err() {
        return;
    }
    match stream.stall_after {
        Some(n) => {
            let _ = uni
                .write_all(&stream.body[..n.min(stream.body.len())])
                .await;
            // Hold the stream open, silent, until the connection goes.
            let _ = conn.closed().await;
        }
        None => {
            let _ = uni.write_all(&stream.body).await;
            let _ = uni.finish();
            let _ = uni.stopped().await;
        }
    }
}
