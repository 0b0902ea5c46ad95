//! A protocol-level stand-in for a coordinator, for tests against a real `hsm-agent serve`: the
//! agent process (stopped by its pid), a client speaking the protocol over mutual TLS, what it
//! has seen, and submissions of shell-command tasks.

#![allow(dead_code)]

use hsm_agent::identity::Identity;
use hsm_agent::tls::{self, TransportOptions};
use hsm_agent::wire::{read_frame, write_message};
use hsm_protocol::{
    decode, EventKind, FromAgent, Hello, HelloReply, PingMsg, SubmitMsg, SweepId, TaskEventMsg,
    TaskIndex, TaskMsg, TaskRef, TemplateMsg, ToAgent, Welcome, MAX_FRAME,
};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest wait for any one frame (the agent heartbeats every second).
pub const FRAME_WAIT: Duration = Duration::from_secs(60);

/// A running `hsm-agent serve`, stopped by its pid when dropped.
pub struct Agent {
    pub child: Child,
    pub addr: std::net::SocketAddr,
    pub fingerprint: String,
}

impl Agent {
    pub fn start(state: &Path, work: &Path) -> Agent {
        Agent::start_with(state, work, &[])
    }

    /// `start` with more `serve` flags.
    pub fn start_with(state: &Path, work: &Path, extra: &[&str]) -> Agent {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hsm-agent"))
            .args(["serve", "--listen", "127.0.0.1:0", "--heartbeat", "1"])
            .args(["--slots", "2"])
            .arg("--state-dir")
            .arg(state)
            .arg("--work-dir")
            .arg(work)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start hsm-agent serve");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = lines.next().unwrap().unwrap();
        let fingerprint = lines.next().unwrap().unwrap();
        Agent {
            addr: addr.strip_prefix("listening on ").unwrap().parse().unwrap(),
            fingerprint: fingerprint
                .strip_prefix("fingerprint ")
                .unwrap()
                .to_string(),
            child,
        }
    }

    /// SIGTERM (the daemon kills its tasks' groups), then SIGKILL if it lingers.
    pub fn stop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: plain syscall; the pid is our own unreaped child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

pub struct Client {
    pub endpoint: quinn::Endpoint,
    pub conn: quinn::Connection,
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    pub welcome: Welcome,
}

impl Client {
    pub async fn connect(agent: &Agent, coordinator: &Identity) -> Client {
        let endpoint = tls::client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
        let config =
            tls::client_config(coordinator, &agent.fingerprint, TransportOptions::default())
                .unwrap();
        let conn = tls::connect(&endpoint, agent.addr, config, FRAME_WAIT)
            .await
            .unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        write_message(&mut send, &Hello::new("test")).await.unwrap();
        let reply = tokio::time::timeout(FRAME_WAIT, read_frame(&mut recv, MAX_FRAME))
            .await
            .expect("welcome in time")
            .unwrap()
            .unwrap();
        let HelloReply::Welcome(welcome) = decode::<HelloReply>(&reply).unwrap() else {
            panic!("expected a welcome");
        };
        Client {
            endpoint,
            conn,
            send,
            recv,
            welcome,
        }
    }

    pub async fn send(&mut self, msg: ToAgent) {
        write_message(&mut self.send, &msg).await.unwrap();
    }

    pub async fn next(&mut self) -> FromAgent {
        let frame = tokio::time::timeout(FRAME_WAIT, read_frame(&mut self.recv, MAX_FRAME))
            .await
            .expect("agent sent something in time")
            .unwrap()
            .expect("a frame");
        decode(&frame).unwrap()
    }

    /// Reads frames until `done`; nothing is acknowledged.
    pub async fn collect(&mut self, seen: &mut Seen, done: impl Fn(&Seen) -> bool) {
        let mut heartbeats = 0;
        while !done(seen) {
            match self.next().await {
                FromAgent::Events(batch) => seen.events.extend(batch.events),
                FromAgent::Error(e) => seen.errors.push(e.message),
                FromAgent::Attached(a) => seen.attached.push((a.sweep_id, a.unknown)),
                FromAgent::Pong(p) => seen.pongs.push(p.nonce),
                FromAgent::Cleaned(c) => seen.cleaned.push(c),
                FromAgent::Heartbeat(_) => {
                    heartbeats += 1;
                    // Hang guard: a minute of heartbeats and nothing else.
                    assert!(
                        heartbeats < 60,
                        "condition not reached; errors {:?}, {} events",
                        seen.errors,
                        seen.events.len()
                    );
                }
            }
        }
    }

    /// Everything the agent sends before it answers a ping sent now (the agent handles a
    /// connection's requests in order and sends replies after the events it has).
    pub async fn settle(&mut self, seen: &mut Seen, nonce: u64) {
        self.send(ToAgent::Ping(PingMsg { nonce })).await;
        self.collect(seen, |s| s.pongs.contains(&nonce)).await;
    }

    pub async fn close(self) {
        self.conn.close(0u32.into(), b"done");
        let _ = tokio::time::timeout(Duration::from_secs(3), self.endpoint.wait_idle()).await;
    }
}

#[derive(Default)]
pub struct Seen {
    pub events: Vec<TaskEventMsg>,
    pub errors: Vec<String>,
    pub attached: Vec<(SweepId, Vec<TaskRef>)>,
    pub pongs: Vec<u64>,
    pub cleaned: Vec<hsm_protocol::CleanedMsg>,
}

impl Seen {
    pub fn has(&self, index: u64, what: fn(&EventKind) -> bool) -> bool {
        self.events
            .iter()
            .any(|e| e.task.index.0 == index && what(&e.kind))
    }

    pub fn sweeps(&self) -> Vec<&str> {
        let mut sweeps: Vec<&str> = self.events.iter().map(|e| e.sweep_id.as_str()).collect();
        sweeps.sort();
        sweeps.dedup();
        sweeps
    }
}

pub fn offered(kind: &EventKind) -> bool {
    matches!(kind, EventKind::ResultOffer { .. })
}

pub fn started(kind: &EventKind) -> bool {
    matches!(kind, EventKind::Started { .. })
}

pub fn exited(kind: &EventKind) -> bool {
    matches!(kind, EventKind::Exited { .. })
}

pub fn submit(sweep: &SweepId, project: &Path, scripts: &[(u64, &str)]) -> ToAgent {
    ToAgent::Submit(SubmitMsg {
        sweep_id: sweep.clone(),
        templates: scripts
            .iter()
            .map(|(i, script)| TemplateMsg {
                id: *i as u32,
                argv_prefix: vec!["/bin/sh".into(), "-c".into(), script.to_string()],
                env: Vec::new(),
                cwd: project.to_string_lossy().into_owned(),
                timeout_ms: None,
                kill_grace_ms: 200,
                hpc: None,
                compact: false,
            })
            .collect(),
        tasks: scripts
            .iter()
            .map(|(i, _)| TaskMsg {
                index: TaskIndex(*i),
                attempt: hsm_protocol::Attempt(1),
                template: *i as u32,
                args: Vec::new(),
                env: Vec::new(),
            })
            .collect(),
    })
}

pub fn task_ref(index: u64) -> TaskRef {
    TaskRef {
        index: TaskIndex(index),
        attempt: hsm_protocol::Attempt(1),
    }
}
