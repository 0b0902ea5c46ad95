//! The agent daemon's network side: a QUIC server that admits only authorized coordinators
//! (refused in the TLS handshake), speaks the hsm protocol on one control stream per connection,
//! answers pings and reports its health every few seconds, and drives the task runner
//! ([`crate::runner`]): submissions, cancels, acknowledgements, event delivery (with replay of
//! everything unacknowledged to each new connection) and result files on their own streams.

use crate::identity::{AuthorizedKeys, Identity};
use crate::owners::{self, Decision};
use crate::runner::{FetchItem, FetchPlan, Runner, RunnerOptions, SessionClaims};
use crate::tls::{self, TransportOptions};
use crate::wire::{read_frame, write_message, WireError};
use anyhow::Context as _;
use hsm_protocol::{
    decode, negotiate, AgentInfo, AttachedMsg, ErrorMsg, EventsMsg, FileHeader, FileRef, FromAgent,
    HeartbeatMsg, Hello, HelloReply, PongMsg, SweepId, TaskRef, ToAgent, MAX_FRAME,
};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    pub work_dir: PathBuf,
    pub slots: u32,
    /// The agent's name in `Welcome` (the host name unless set).
    pub name: String,
    pub heartbeat_every: Duration,
    pub transport: TransportOptions,
    /// How often Slurm/PBS jobs are checked (one `squeue`/`qstat` call for all of them).
    pub scheduler_poll: Duration,
    /// Keep the durable ledger in the state directory (off: memory only, nothing survives a
    /// restart; for throwaway agents and for measuring what the ledger costs).
    pub ledger: bool,
    /// Keep result files after the coordinator has them.
    pub keep_results: bool,
    /// With no coordinator connected for this long, stop every task (`None`: keep running,
    /// the default: tasks finish and report when a coordinator comes back).
    pub cancel_when_alone: Option<Duration>,
    /// Queued tasks of a sweep whose coordinator is gone wait to be confirmed by one; after this
    /// long without any, they start (`None`: never; they are stopped instead).
    pub release_unconfirmed_after: Option<Duration>,
    /// Forget a sweep (and remove its files) that holds results or events no coordinator came
    /// back for within this long (`None`: never; see `clean.rs`).
    pub ledger_retention: Option<Duration>,
}

/// A bound, ready server: its address is known before `run` starts accepting.
pub struct Server {
    endpoint: quinn::Endpoint,
    options: ServeOptions,
    fingerprint: String,
    /// Held while the server lives: one `serve` per state dir.
    _state_lock: std::fs::File,
}

/// A state dir taken by another running `hsm-agent serve`.
#[derive(Debug, thiserror::Error)]
#[error(
    "another `hsm-agent serve` (pid {pid}) uses the state dir {dir}: two agents on one ledger \
     would corrupt it — stop that one, or give this one its own --state-dir"
)]
pub struct StateDirInUse {
    pub dir: PathBuf,
    pub pid: String,
}

/// Takes the state dir's lock (`serve.lock`, an OS lock that vanishes with the process) and
/// writes this pid into it.
fn lock_state_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = dir.join("serve.lock");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    if file.try_lock().is_err() {
        let pid = std::fs::read_to_string(&path).unwrap_or_default();
        return Err(StateDirInUse {
            dir: dir.to_path_buf(),
            pid: pid.trim().to_string(),
        }
        .into());
    }
    use std::io::Write as _;
    file.set_len(0)?;
    write!(file, "{}", std::process::id())?;
    Ok(file)
}

impl Server {
    /// Loads the identity, binds the UDP port.
    pub fn bind(options: ServeOptions) -> anyhow::Result<Server> {
        let identity = Identity::load(&options.state_dir)?;
        let state_lock = lock_state_dir(&options.state_dir)?;
        let checker = AuthorizedKeys::checker(&options.state_dir);
        let config = tls::server_config(&identity, checker, options.transport)?;
        let endpoint = tls::server_endpoint(options.listen, config, &identity)?;
        std::fs::create_dir_all(&options.work_dir)
            .with_context(|| format!("creating work dir {}", options.work_dir.display()))?;
        Ok(Server {
            endpoint,
            fingerprint: identity.fingerprint(),
            options,
            _state_lock: state_lock,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Accepts connections until `shutdown` resolves, then closes every connection and waits
    /// (bounded) for the peers to be told.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        // Tasks outlive connections: one runner for the daemon, shared by every session.
        let runner = Runner::start(
            &self.options.work_dir,
            RunnerOptions {
                slots: self.options.slots,
                poll_every: self.options.scheduler_poll,
                state_dir: self.options.ledger.then(|| self.options.state_dir.clone()),
                keep_results: self.options.keep_results,
            },
        )
        .with_context(|| format!("opening work dir {}", self.options.work_dir.display()))?;
        crate::clean::remove_leftovers(&self.options.work_dir);
        if let Some(retention) = self.options.ledger_retention {
            // The first check before any coordinator is served: one that connects finds what
            // retention left.
            expire_once(&runner, retention).await;
            tokio::spawn(expire_sweeps(runner.clone(), retention));
        }
        // Coordinators connected now; when the last one has been gone long enough, the tasks
        // may be stopped (`--on-coordinator-lost cancel`).
        let sessions = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        if let Some(after) = self.options.cancel_when_alone {
            tokio::spawn(cancel_when_alone(
                runner.clone(),
                Arc::clone(&sessions),
                after,
            ));
        }
        if let Some(after) = self.options.release_unconfirmed_after {
            let runner = runner.clone();
            let check = (after / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(check).await;
                    runner.release_unclaimed(after);
                }
            });
        }
        let refusals = tls::RefusalLog::start();
        let limits = tls::ConnectionLimits::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                incoming = self.endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    let remote = incoming.remote_address();
                    let Some(handshake) = limits.handshake() else {
                        incoming.refuse();
                        refusals.note(remote, "too many handshakes", || format!(
                            "refused a connection from {remote}: {} handshakes are \
                             already in progress",
                            tls::MAX_HANDSHAKES
                        ));
                        continue;
                    };
                    let options = self.options.clone();
                    let runner = runner.clone();
                    let sessions = Arc::clone(&sessions);
                    let refusals = Arc::clone(&refusals);
                    let limits = limits.clone();
                    tokio::spawn(async move {
                        let accepted = incoming.await;
                        drop(handshake);
                        match accepted {
                            Ok(conn) => {
                                let Some(_session) = limits.session() else {
                                    conn.close(tls::BUSY, b"agent busy: too many coordinator connections");
                                    refusals.note(remote, "too many connections", || format!(
                                        "refused coordinator {} from {remote}: {} connections \
                                         are already open",
                                        tls::peer_fingerprint(&conn).unwrap_or_default(),
                                        tls::MAX_SESSIONS
                                    ));
                                    return;
                                };
                                let peer = tls::peer_fingerprint(&conn).unwrap_or_default();
                                tracing::info!(%remote, coordinator = %peer, "coordinator connected");
                                sessions.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                let ended = session(conn.clone(), &options, &runner, &peer).await;
                                match (ended, conn.close_reason()) {
                                    // The coordinator closed as it does when done (a sweep's
                                    // end, `agent ping`): nothing went wrong.
                                    (_, Some(quinn::ConnectionError::ApplicationClosed(close)))
                                        if close.error_code == quinn::VarInt::from_u32(0) =>
                                    {
                                        tracing::info!(
                                            %remote,
                                            reason = %hsm_protocol::display_safe(&String::from_utf8_lossy(&close.reason)),
                                            "coordinator disconnected"
                                        );
                                    }
                                    (Ok(()), _) => {
                                        tracing::info!(%remote, "coordinator disconnected")
                                    }
                                    (Err(e), _) => tracing::info!(
                                        %remote,
                                        error = %format!("{e:#}"),
                                        "connection to the coordinator ended"
                                    ),
                                }
                                sessions.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                            }
                            Err(e) => refusals.refused(&e, remote),
                        }
                    });
                }
                _ = &mut shutdown => break,
            }
        }
        self.endpoint.close(0u32.into(), b"agent shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(3), self.endpoint.wait_idle()).await;
        Ok(())
    }
}

/// `--on-coordinator-lost cancel`: once no coordinator has been connected for `after` while
/// tasks are held, stops them all (once per absence).
async fn cancel_when_alone(
    runner: Runner,
    sessions: Arc<std::sync::atomic::AtomicUsize>,
    after: Duration,
) {
    let check = (after / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut alone_since: Option<tokio::time::Instant> = None;
    let mut done = false;
    loop {
        tokio::time::sleep(check).await;
        if sessions.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            alone_since = None;
            done = false;
            continue;
        }
        let since = *alone_since.get_or_insert_with(tokio::time::Instant::now);
        if !done && since.elapsed() >= after && !runner.held().is_empty() {
            let n = runner.cancel_everything();
            tracing::warn!(
                sweeps = n,
                ?after,
                "no coordinator for too long: stopping every task (--on-coordinator-lost cancel)"
            );
            done = true;
        }
    }
}

/// `--ledger-retention`: checks at start and then periodically (`clean::retention_check_every`).
async fn expire_sweeps(runner: Runner, retention: Duration) {
    let every = crate::clean::retention_check_every(retention);
    loop {
        tokio::time::sleep(every).await;
        expire_once(&runner, retention).await;
    }
}

async fn expire_once(runner: &Runner, retention: Duration) {
    let runner = runner.clone();
    let _ = tokio::task::spawn_blocking(move || {
        crate::clean::expire(&runner, retention, std::time::SystemTime::now())
    })
    .await;
}

/// Longest wait, when a session ends, for the coordinator to acknowledge the last frames.
const FLUSH_LIMIT: Duration = Duration::from_secs(2);

/// Events per `Events` frame at most.
const BATCH_EVENTS: usize = 1024;
/// Output bytes per `Events` frame, about (one chunk may overshoot it); far below MAX_FRAME.
const BATCH_OUTPUT: usize = 1024 * 1024;
/// Pending output that is sent at once instead of waiting for the batching delay.
const BATCH_LARGE: usize = 256 * 1024;
/// How long a session waits after new events appear, to send them in fewer, larger frames. It is
/// on the path of every task's end to the coordinator, which hands the next task only then: at
/// 50 ms a 2-slot agent managed 380 tasks/s; at 5 ms the frames still carry many events each.
const BATCH_DELAY: Duration = Duration::from_millis(5);

/// One coordinator connection: the first bidirectional stream is the control stream. `who` is
/// the coordinator's fingerprint: it sees and changes only the sweeps it submitted
/// (`owners.rs`).
async fn session(
    conn: quinn::Connection,
    options: &ServeOptions,
    runner: &Runner,
    who: &str,
) -> anyhow::Result<()> {
    // Mutual TLS always gives one; without it no sweep could be told apart from another's.
    anyhow::ensure!(!who.is_empty(), "the coordinator presented no certificate");
    let who: Arc<str> = who.into();
    let (mut send, mut recv) = conn
        .accept_bi()
        .await
        .context("waiting for the control stream")?;
    let hello_frame = read_frame(&mut recv, MAX_FRAME)
        .await?
        .context("the coordinator closed the control stream before saying hello")?;
    let hello: Hello = decode(&hello_frame).context("malformed hello")?;
    let info = AgentInfo {
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        agent_name: options.name.clone(),
        slots: options.slots,
        backend: "process".into(),
        running: runner.held_by(&who),
        work_dir: std::fs::canonicalize(&options.work_dir)
            .unwrap_or_else(|_| options.work_dir.clone())
            .display()
            .to_string(),
    };
    let mut push_window = None;
    let welcome = match negotiate(&hello, info) {
        Ok(mut welcome) => {
            // Sync before pre-flight: a push-mode comparison creates a missing project_dir,
            // which pre-flight then finds (the push fills it before any task is sent).
            if let Some(request) = hello.sync {
                let report = tokio::task::spawn_blocking(move || {
                    let report = crate::sync::compare(&request);
                    (
                        crate::sync::PushWindow::for_report(&request, &report),
                        report,
                    )
                })
                .await
                .context("comparing the project")?;
                if !report.1.differs.is_empty() {
                    tracing::info!(
                        files = report.1.differs.len(),
                        "the project differs from the coordinator's"
                    );
                }
                push_window = report.0;
                welcome.sync = Some(report.1);
            }
            if let Some(request) = hello.preflight {
                let work_dir = options.work_dir.clone();
                let checked = tokio::task::spawn_blocking(move || {
                    crate::preflight::run(&request, &work_dir, |dir| {
                        free_space(dir).map(|(bytes, _)| bytes)
                    })
                })
                .await
                .context("pre-flight checks")?;
                if !checked.is_empty() {
                    tracing::info!(problems = checked.len(), "pre-flight checks found problems");
                }
                welcome.preflight = Some(checked);
            }
            welcome
        }
        Err(reject) => {
            tracing::warn!(reason = %reject.reason, "refused a coordinator speaking another protocol");
            write_message(&mut send, &HelloReply::Reject(reject)).await?;
            let _ = send.finish();
            // Let the reply reach the coordinator before the connection goes away.
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
            return Ok(());
        }
    };
    write_message(&mut send, &HelloReply::Welcome(welcome)).await?;
    // Push streams are the bidirectional streams after the control stream; accepted for this
    // session only, and only for what its comparison found different.
    // The endpoint lets a coordinator open only the control stream; a push window lets it open
    // one more at a time (the coordinator sends files one after another).
    let _pushes = push_window.map(|window| {
        conn.set_max_concurrent_bi_streams(2u32.into());
        AbortOnDrop(tokio::spawn(accept_pushes(conn.clone(), window)))
    });
    // Reading and writing run separately: a coordinator that does not read (flow control blocks
    // our writes) must still be able to send acknowledgements and cancels, and the other way
    // round.
    let (replies_tx, replies) = mpsc::channel(64);
    let claims = SessionClaims::new(runner.clone());
    let rewind = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut reader = tokio::spawn(read_loop(
        recv,
        conn.clone(),
        runner.clone(),
        claims,
        replies_tx,
        Sweeps {
            who: Arc::clone(&who),
            rewind: Arc::clone(&rewind),
        },
    ));
    let written = write_loop(send, options, runner, replies, &who, &rewind).await;
    if written.is_err() {
        reader.abort();
    }
    match (&mut reader).await {
        Ok(read) => read.and(written),
        Err(_) => written,
    }
}

/// Aborts a spawned task when dropped (the end of the session that started it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Receives pushed project files, each on its own bidirectional stream, until the connection
/// ends.
async fn accept_pushes(conn: quinn::Connection, window: crate::sync::PushWindow) {
    let window = Arc::new(window);
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let window = Arc::clone(&window);
        tokio::spawn(async move {
            crate::sync::receive_push(&mut recv, &mut send, &window).await;
        });
    }
}

/// The session's coordinator, for the sweep-ownership checks of its requests.
struct Sweeps {
    /// Its fingerprint.
    who: Arc<str>,
    /// Set when a sweep the agent already held became this coordinator's (a ledger from before
    /// owners were kept): the writer then replays from the start, since it skipped that sweep's
    /// earlier events.
    rewind: Arc<std::sync::atomic::AtomicBool>,
}

impl Sweeps {
    /// Whether this coordinator may `what` sweep `sweep`; the refusal (logged, and the text
    /// for the coordinator) otherwise.
    fn check(
        &self,
        runner: &Runner,
        sweep: &SweepId,
        what: &str,
        submit: bool,
    ) -> Result<(), String> {
        match runner.sweep_access(sweep, &self.who, submit) {
            Decision::Allow => {
                runner.seen(sweep, false);
                Ok(())
            }
            Decision::Bind => {
                self.rewind.store(true, std::sync::atomic::Ordering::SeqCst);
                runner.wake_sessions();
                runner.seen(sweep, false);
                Ok(())
            }
            Decision::Refuse => {
                let message = owners::refusal(what, sweep);
                tracing::warn!(coordinator = %self.who, %message, "request refused");
                Err(message)
            }
        }
    }
}

/// Applies what the coordinator sends; replies go to the writer. Ends when the coordinator
/// finishes its side of the control stream, or on a malformed frame (after saying why).
/// Requests for a sweep another coordinator identity submitted are refused with an `Error`
/// and change nothing.
async fn read_loop(
    mut recv: quinn::RecvStream,
    conn: quinn::Connection,
    runner: Runner,
    // Unclaims this session's sweeps when the reader ends (the session is over).
    claims: SessionClaims,
    replies: mpsc::Sender<FromAgent>,
    sweeps: Sweeps,
) -> anyhow::Result<()> {
    let error = |message: String| FromAgent::Error(ErrorMsg::new(message));
    loop {
        let frame = match read_frame(&mut recv, MAX_FRAME).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(()),
            Err(e @ (WireError::TooLarge { .. } | WireError::Truncated)) => {
                // Framing broken by the peer: say why before closing, as for a malformed body.
                let _ = replies.send(error(format!("malformed frame: {e}"))).await;
                anyhow::bail!("malformed frame from the coordinator: {e}");
            }
            Err(e) => return Err(e.into()),
        };
        // A closed channel means the writer is gone, so the session ends anyway.
        match decode::<ToAgent>(&frame) {
            Ok(ToAgent::Ping(ping)) => {
                let _ = replies
                    .send(FromAgent::Pong(PongMsg { nonce: ping.nonce }))
                    .await;
            }
            Ok(ToAgent::Submit(submit)) => {
                if let Err(refused) = sweeps.check(&runner, &submit.sweep_id, "submission", true) {
                    let _ = replies.send(error(refused)).await;
                    continue;
                }
                claims.claim(&submit.sweep_id);
                for refusal in runner.submit(submit) {
                    tracing::warn!(%refusal, "submission refused");
                    let _ = replies.send(error(refusal)).await;
                }
            }
            Ok(ToAgent::Cancel(cancel)) => {
                match sweeps.check(&runner, &cancel.sweep_id, "cancel", false) {
                    Ok(()) => runner.cancel(&cancel),
                    Err(refused) => {
                        let _ = replies.send(error(refused)).await;
                    }
                }
            }
            Ok(ToAgent::Ack(mut ack)) => {
                // Checked once per sweep named (a batch usually names one).
                let mut refused: Vec<SweepId> = Vec::new();
                let mut allowed: Vec<SweepId> = Vec::new();
                ack.acks.retain(|event| {
                    if allowed.contains(&event.sweep_id) {
                        return true;
                    }
                    if refused.contains(&event.sweep_id) {
                        return false;
                    }
                    let ok = sweeps
                        .check(&runner, &event.sweep_id, "acknowledgement", false)
                        .is_ok();
                    if ok {
                        allowed.push(event.sweep_id.clone());
                    } else {
                        refused.push(event.sweep_id.clone());
                    }
                    ok
                });
                runner.ack(&ack.acks);
                for sweep in refused {
                    let _ = replies
                        .send(error(owners::refusal("acknowledgement", &sweep)))
                        .await;
                }
            }
            Ok(ToAgent::FetchResults(fetch))
                if sweeps
                    .check(&runner, &fetch.sweep_id, "fetch of results", false)
                    .is_err() =>
            {
                let refused = owners::refusal("fetch of results", &fetch.sweep_id);
                let _ = replies.send(error(refused)).await;
            }
            Ok(ToAgent::FetchResults(fetch)) => match runner.fetch_plan(&fetch) {
                Ok(plan) => {
                    tokio::spawn(send_files(
                        conn.clone(),
                        fetch.sweep_id,
                        fetch.task,
                        plan,
                        replies.clone(),
                    ));
                }
                Err(message) => {
                    tracing::warn!(%message, "fetch refused");
                    let _ = replies.send(error(message)).await;
                }
            },
            Ok(ToAgent::ResultsDone(done)) => {
                match sweeps.check(&runner, &done.sweep_id, "results done", false) {
                    Ok(()) => runner.results_done(&done),
                    Err(refused) => {
                        let _ = replies.send(error(refused)).await;
                    }
                }
            }
            Ok(ToAgent::Attach(attach)) => {
                if let Err(refused) = sweeps.check(&runner, &attach.sweep_id, "attach", false) {
                    // Answered too, so a coordinator waiting for `Attached` is not left
                    // waiting: for it, the agent holds none of these.
                    let _ = replies.send(error(refused)).await;
                    let _ = replies
                        .send(FromAgent::Attached(AttachedMsg {
                            sweep_id: attach.sweep_id,
                            unknown: attach.tasks,
                        }))
                        .await;
                    continue;
                }
                claims.claim(&attach.sweep_id);
                let unknown = runner.attach(&attach);
                let _ = replies
                    .send(FromAgent::Attached(AttachedMsg {
                        sweep_id: attach.sweep_id,
                        unknown,
                    }))
                    .await;
            }
            Ok(ToAgent::Clean(clean)) => {
                // Walking and deleting directories blocks; the session goes on meanwhile.
                let runner = runner.clone();
                let who = Arc::clone(&sweeps.who);
                let replies = replies.clone();
                tokio::spawn(async move {
                    let answer = tokio::task::spawn_blocking(move || {
                        crate::clean::clean(&runner, &who, &clean, std::time::SystemTime::now())
                    })
                    .await;
                    let reply = match answer {
                        Ok(answer) => FromAgent::Cleaned(answer),
                        Err(e) => FromAgent::Error(ErrorMsg::new(format!("clean-up failed: {e}"))),
                    };
                    let _ = replies.send(reply).await;
                });
            }
            Err(e) => {
                // A peer that sends garbage after authenticating is broken: say why, close.
                // The decoder's message can quote the peer's bytes (variant names).
                let e = hsm_protocol::display_safe(&e.to_string()).into_owned();
                let _ = replies.send(error(format!("malformed message: {e}"))).await;
                anyhow::bail!("malformed message from the coordinator: {e}");
            }
        }
    }
}

/// Sends the heartbeat, replays every unacknowledged event, then keeps sending new events,
/// replies and heartbeats until the reader is done (the reply channel closes).
async fn write_loop(
    mut send: quinn::SendStream,
    options: &ServeOptions,
    runner: &Runner,
    mut replies: mpsc::Receiver<FromAgent>,
    // Only this coordinator's sweeps' events are sent.
    who: &str,
    rewind: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<()> {
    // A first heartbeat right away, so `agent ping` shows health without waiting.
    send_frame(
        &mut send,
        &FromAgent::Heartbeat(health(options, runner.running(), runner.notice())),
    )
    .await?;
    let mut appended = runner.subscribe();
    // From the start of the ledger: a new connection first gets everything unacknowledged.
    let mut cursor = 0;
    let mut heartbeat = tokio::time::interval(options.heartbeat_every);
    heartbeat.tick().await;
    loop {
        if rewind.swap(false, std::sync::atomic::Ordering::SeqCst) {
            cursor = 0;
        }
        loop {
            let (events, next) = runner.events_from(cursor, BATCH_EVENTS, BATCH_OUTPUT, who);
            // Past other sweeps' events even when none of ours came.
            cursor = next;
            if events.is_empty() {
                break;
            }
            send_frame(&mut send, &FromAgent::Events(EventsMsg { events })).await?;
        }
        tokio::select! {
            reply = replies.recv() => match reply {
                Some(reply) => send_frame(&mut send, &reply).await?,
                None => {
                    // The reader is done, perhaps after a malformed message whose `Error` reply
                    // was just written: the connection closes when the session ends, and a close
                    // discards data not yet delivered. Wait (bounded) for the coordinator to
                    // acknowledge everything, or to close first.
                    let _ = send.finish();
                    let _ = tokio::time::timeout(FLUSH_LIMIT, send.stopped()).await;
                    return Ok(());
                }
            },
            _ = heartbeat.tick() => {
                send_frame(&mut send, &FromAgent::Heartbeat(health(options, runner.running(), runner.notice()))).await?;
            }
            changed = appended.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                if !runner.pending_is_large(cursor, BATCH_LARGE, who) {
                    tokio::time::sleep(BATCH_DELAY).await;
                }
            }
        }
    }
}

/// Sends the planned result files, each on its own unidirectional stream: a `FileHeader` frame,
/// exactly `size` bytes, end of stream. A file that changed or left the task directory since it
/// was offered is not sent; the coordinator gets an `Error` naming it.
async fn send_files(
    conn: quinn::Connection,
    sweep_id: SweepId,
    task: TaskRef,
    plan: FetchPlan,
    replies: mpsc::Sender<FromAgent>,
) {
    let root = match tokio::fs::canonicalize(&plan.task_dir).await {
        Ok(root) => root,
        Err(e) => {
            let message = format!(
                "cannot send results: task directory {}: {e}",
                plan.task_dir.display()
            );
            let _ = replies.send(FromAgent::Error(ErrorMsg::new(message))).await;
            return;
        }
    };
    for item in plan.files {
        let header = FileHeader {
            sweep_id: sweep_id.clone(),
            task,
            path: item.offer.path.clone(),
            size: item.offer.size,
            sha256: item.offer.sha256.clone(),
        };
        match send_file(&conn, &root, &item, &header).await {
            Ok(()) => {}
            Err(SendFileError::Connection(e)) => {
                tracing::info!(path = %item.offer.path, error = %e, "result transfer stopped: connection lost");
                return;
            }
            Err(SendFileError::File(message)) => {
                tracing::warn!(%message, "result file not sent");
                // Naming the file lets the coordinator end the attempt failed instead of waiting
                // for a file that will not come.
                let file = Some(FileRef {
                    sweep_id: sweep_id.clone(),
                    task,
                    path: item.offer.path.clone(),
                });
                let _ = replies
                    .send(FromAgent::Error(ErrorMsg { message, file }))
                    .await;
            }
        }
    }
}

enum SendFileError {
    /// The connection failed; later files cannot be sent either.
    Connection(String),
    /// This file cannot be sent.
    File(String),
}

/// Bytes read from a result file per step when sending it.
const TRANSFER_PIECE: usize = 1024 * 1024;

async fn send_file(
    conn: &quinn::Connection,
    root: &Path,
    item: &FetchItem,
    header: &FileHeader,
) -> Result<(), SendFileError> {
    use tokio::io::AsyncReadExt as _;
    let path = &item.offer.path;
    let refuse = |why: String| SendFileError::File(format!("cannot send result {path:?}: {why}"));
    // Checked again at sending time: the task may have replaced a file with a symlink since.
    let resolved = tokio::fs::canonicalize(&item.path)
        .await
        .map_err(|e| refuse(e.to_string()))?;
    if !resolved.starts_with(root) {
        return Err(refuse("it resolves outside the task directory".into()));
    }
    let file = tokio::fs::File::open(&resolved)
        .await
        .map_err(|e| refuse(e.to_string()))?;
    let meta = file.metadata().await.map_err(|e| refuse(e.to_string()))?;
    if !meta.is_file() || meta.len() != item.offer.size {
        return Err(refuse(format!(
            "it changed since it was offered ({} bytes offered, {} now)",
            item.offer.size,
            meta.len()
        )));
    }
    let connection = |e: &dyn std::fmt::Display| SendFileError::Connection(e.to_string());
    let mut stream = conn.open_uni().await.map_err(|e| connection(&e))?;
    write_message(&mut stream, header)
        .await
        .map_err(|e| connection(&e))?;
    // Streamed in 1 MiB pieces, never the whole file in memory. (`tokio::io::copy` reads 8 KiB
    // at a time, and every read of a `tokio::fs::File` is a trip to the blocking pool: 131,072
    // trips per GiB, which made the agent the bottleneck of large transfers.)
    let mut file = file.take(item.offer.size);
    let mut buf = vec![0u8; TRANSFER_PIECE];
    let mut copied: u64 = 0;
    loop {
        let n = file.read(&mut buf).await.map_err(|e| connection(&e))?;
        if n == 0 {
            break;
        }
        stream
            .write_all(&buf[..n])
            .await
            .map_err(|e| connection(&e))?;
        copied += n as u64;
    }
    if copied != item.offer.size {
        // Shrunk while being sent: tell the receiver the stream is not a complete file.
        let _ = stream.reset(1u32.into());
        return Err(refuse(format!(
            "it shrank while being sent ({copied} of {} bytes)",
            item.offer.size
        )));
    }
    stream.finish().map_err(|e| connection(&e))?;
    Ok(())
}

async fn send_frame(send: &mut quinn::SendStream, msg: &FromAgent) -> anyhow::Result<()> {
    write_message(send, msg).await?;
    Ok(())
}

/// The agent's health as reported in heartbeats.
pub fn health(options: &ServeOptions, running: u32, notice: Option<String>) -> HeartbeatMsg {
    let free = free_space(&options.work_dir);
    HeartbeatMsg {
        load1: load_average().unwrap_or(0.0),
        free_mem_bytes: available_memory().unwrap_or(0),
        free_disk_bytes: free.map_or(0, |f| f.0),
        running,
        slots: options.slots,
        free_inodes: free.and_then(|f| f.1),
        notice,
    }
}

fn load_average() -> Option<f32> {
    parse_loadavg(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

/// First field of /proc/loadavg.
fn parse_loadavg(text: &str) -> Option<f32> {
    text.split_whitespace().next()?.parse().ok()
}

fn available_memory() -> Option<u64> {
    parse_meminfo_available(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

/// `MemAvailable:` of /proc/meminfo, in bytes.
fn parse_meminfo_available(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Free bytes and free inodes of the file system holding `dir` (inodes `None` where it reports
/// no inode count, as btrfs does).
fn free_space(dir: &Path) -> Option<(u64, Option<u64>)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills the zeroed struct we own from a valid C string.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    let bytes = (stat.f_bavail as u64).checked_mul(stat.f_frsize as u64)?;
    let inodes = (stat.f_files > 0).then_some(stat.f_favail as u64);
    Some((bytes, inodes))
}

/// This host's name, for `Welcome.agent_name`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "hsm-agent".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        assert_eq!(parse_loadavg("0.52 0.31 0.20 1/234 5678\n"), Some(0.52));
        assert_eq!(parse_loadavg(""), None);
        let meminfo = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(parse_meminfo_available(meminfo), Some(2048 * 1024));
        assert_eq!(parse_meminfo_available("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn health_reads_this_machine() {
        let dir = tempfile::tempdir().unwrap();
        let options = ServeOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            state_dir: dir.path().into(),
            work_dir: dir.path().into(),
            slots: 3,
            name: "t".into(),
            heartbeat_every: Duration::from_secs(1),
            scheduler_poll: Duration::from_secs(1),
            transport: TransportOptions::default(),
            ledger: true,
            keep_results: false,
            cancel_when_alone: None,
            release_unconfirmed_after: None,
            ledger_retention: None,
        };
        let h = health(&options, 1, None);
        assert_eq!((h.slots, h.running), (3, 1));
        assert!(h.free_mem_bytes > 0 && h.free_disk_bytes > 0, "{h:?}");
    }
}
