//! The agent source actor: one per agent of a run, the IO shell of its `core::link::AgentLink`.
//! A connection task dials the agent (mutual TLS, pinned fingerprint), keeps the control stream
//! and reconnects with capped backoff; the actor turns launches, the agent's frames, file
//! streams and timers into the link's `handle_*` calls and carries out what it decides: messages
//! to the agent, and — through one writer thread per source, in order — output appended to the
//! local task logs, job scripts, prepared task directories, and the reports to the sweep actor
//! (so an attempt is reported finished only after its output is on disk).

mod connection;
mod writer;

pub use crate::core::link::{MIN_FREE_INODES, RESULT_STALL};

use super::local::{CancelTask, LaunchTask};
use super::{SourceEvent, SourceStatus, TaskReport};
use crate::core::command::shell_display;
use crate::core::link::{report_time, AgentLink, Level, LinkSetup, LinkStatus, Refusal, Report};
use crate::layout::SweepPaths;
use crate::transfer::{receive_file, Arrival};
use actix::{Actor, AsyncContext, Context, Handler, Message, Recipient};
use connection::{connection, Dial};
use hsm_exec::process::TaskKey;
use hsm_protocol::{FileHeader, FromAgent, Hello, HelloReply, TemplateMsg, ToAgent, MAX_FRAME};
use hsm_transport::identity::Identity;
use hsm_transport::tls::TransportOptions;
use hsm_transport::wire::{read_frame, write_message};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};
use writer::{Job, Writer};

/// Everything an agent source needs.
pub struct AgentSetup {
    pub source: usize,
    pub name: String,
    pub address: String,
    pub fingerprint: String,
    /// The project on the agent's host: the tasks' working directory (default: the agent's).
    pub project_dir: Option<String>,
    pub paths: SweepPaths,
    pub sweep_id: String,
    pub timeout: Option<Duration>,
    pub kill_grace: Duration,
    pub params: Arc<crate::store::TaskParams>,
    /// How long running tasks wait for an unreachable agent before they run elsewhere.
    pub grace: Duration,
    /// Below this much free disk (in its heartbeat) the agent gets no new work; 0: no check.
    pub min_free_disk: u64,
    /// Task directories prepared ahead of time, when the run prefetches.
    pub prefetch: Option<Arc<crate::prefetch::Prefetch>>,
    /// Run through the agent's batch scheduler, asking for these resources.
    pub hpc: Option<hsm_protocol::HpcMsg>,
    /// Checks the agent makes before it is sent any task (see `crate::preflight`).
    pub preflight: Option<hsm_protocol::PreflightMsg>,
    /// UDP, ssh or auto (see `crate::transport`).
    pub transport: crate::config::AgentTransport,
    /// Compare (and push) the project before any task (see `crate::sync`); `None`: off.
    pub sync: Option<crate::sync::SourceSync>,
    /// The configured `work_dir` on its host; a running agent elsewhere is warned about.
    pub work_dir: Option<String>,
}

pub struct AgentSource {
    setup: AgentSetup,
    /// What is decided about the agent's attempts and connection.
    link: AgentLink,
    /// The link's clock: its times are milliseconds since this instant.
    epoch: Instant,
    /// Messages for the connection task, each tagged with the session it was meant for: one
    /// of a session that ended before it was written is dropped, not sent on the next (it may
    /// be stale by then: a submission of an attempt taken back meanwhile). The link says again
    /// on the next `Up` what still matters.
    outbox: Option<mpsc::UnboundedSender<(u64, ToAgent)>>,
    /// The session the last `Up` announced.
    session: u64,
    /// File writes and reports to the sweep actor, carried out in order off the actor thread.
    writer: Writer,
    /// The agent's work directory, as it said when it connected.
    work_dir: Option<String>,
    /// Resolves when the connection task has ended (see `Shutdown`).
    closed: Option<tokio::sync::oneshot::Receiver<()>>,
    /// When result bytes last arrived (ms on the link's clock): streams record it as they read,
    /// the tick hands it to the link.
    file_progress: Arc<AtomicU64>,
    /// Tells the connection task to drop the connection (the agent broke the protocol); it then
    /// dials again and the agent replays what was not acknowledged.
    kick: Arc<Notify>,
}

impl AgentSource {
    pub fn new(
        setup: AgentSetup,
        events_to: Recipient<SourceEvent>,
        status_to: Recipient<SourceStatus>,
    ) -> Self {
        let link = AgentLink::new(
            LinkSetup {
                name: setup.name.clone(),
                sweep_id: setup.sweep_id.clone(),
                grace: setup.grace,
                min_free_disk: setup.min_free_disk,
                keep_waiting: setup.hpc.is_some(),
                template: TemplateMsg {
                    id: 0,
                    argv_prefix: Vec::new(),
                    env: Vec::new(),
                    cwd: setup.project_dir.clone().unwrap_or_else(|| ".".into()),
                    timeout_ms: setup.timeout.map(|t| t.as_millis() as u64),
                    kill_grace_ms: setup.kill_grace.as_millis() as u64,
                    hpc: setup.hpc.clone(),
                    compact: setup.paths.compact(),
                },
            },
            0,
        );
        let writer = Writer::start(writer::WriterSetup {
            source: setup.source,
            name: setup.name.clone(),
            paths: setup.paths.clone(),
            params: setup.params.clone(),
            prefetch: setup.prefetch.clone(),
            events_to,
            status_to,
        });
        AgentSource {
            setup,
            link,
            epoch: Instant::now(),
            outbox: None,
            session: 0,
            writer,
            work_dir: None,
            closed: None,
            file_progress: Arc::new(AtomicU64::new(0)),
            kick: Arc::new(Notify::new()),
        }
    }

    /// Now on the link's clock.
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn send(&self, msg: ToAgent) {
        if let Some(outbox) = &self.outbox {
            let _ = outbox.send((self.session, msg));
        }
    }

    /// Carries out what the link decided: messages to the agent, a dropped connection, log
    /// lines, then its writes and reports in order through the writer.
    fn drain(&mut self) {
        self.drain_link();
        self.writer.flush();
    }

    /// `drain`, leaving the writer's jobs queued for the next `flush`.
    fn drain_link(&mut self) {
        // While the agent is away, messages stay with the link, which can still take one back
        // (the submission of an attempt asked back) or drop them (an agent given up on).
        if self.link.connected() {
            while let Some(msg) = self.link.poll_outgoing() {
                self.send(msg);
            }
        }
        if self.link.poll_reconnect() {
            self.kick.notify_one();
        }
        while let Some(log) = self.link.poll_logs() {
            let (agent, message) = (&self.setup.name, log.message);
            match (log.level, log.task) {
                (Level::Debug, Some(task)) => tracing::debug!(%agent, task, "{message}"),
                (Level::Debug, None) => tracing::debug!(%agent, "{message}"),
                (Level::Info, Some(task)) => tracing::info!(%agent, task, "{message}"),
                (Level::Info, None) => tracing::info!(%agent, "{message}"),
                (Level::Warn, Some(task)) => tracing::warn!(%agent, task, "{message}"),
                (Level::Warn, None) => tracing::warn!(%agent, "{message}"),
            }
        }
        while let Some(write) = self.link.poll_writes() {
            self.writer.push(Job::Write(write));
        }
        let source = self.setup.source;
        while let Some(report) = self.link.poll_reports() {
            let job = match report {
                Report::Submitted { key, job_id } => {
                    Job::Event(TaskReport::Submitted { key, job_id })
                }
                Report::Started { key, pid, at_ms } => Job::Event(TaskReport::Started {
                    key,
                    pid,
                    at_ms: report_time(Some(at_ms), super::sweep::now_ms()),
                }),
                Report::Finished {
                    key,
                    exit,
                    usage,
                    at_ms,
                } => Job::Event(TaskReport::Finished {
                    key,
                    exit,
                    at_ms: report_time(at_ms, super::sweep::now_ms()),
                    usage,
                }),
                Report::Acks(acks) => Job::Event(TaskReport::Acks(acks)),
                Report::Status(LinkStatus {
                    up,
                    slots,
                    note,
                    lost,
                    keep_waiting,
                    rtt_ms,
                    refused,
                }) => Job::Status(SourceStatus {
                    source,
                    up,
                    slots,
                    note,
                    lost,
                    keep_waiting,
                    rtt_ms,
                    refused,
                }),
            };
            self.writer.report(job);
        }
    }

    /// Hands the link the time and the file progress seen since, and carries out what it
    /// decides (a grace deadline passed, result files stalled).
    fn tick(&mut self) {
        self.link
            .handle_file_progress(self.file_progress.load(Ordering::Relaxed));
        let now = self.now();
        self.link.handle_tick(now);
        self.drain();
    }
}

impl Actor for AgentSource {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let (outbox_tx, outbox_rx) = mpsc::unbounded_channel();
        self.outbox = Some(outbox_tx);
        let dial = Dial {
            name: self.setup.name.clone(),
            address: self.setup.address.clone(),
            fingerprint: self.setup.fingerprint.clone(),
            sweep_id: self.setup.sweep_id.clone(),
            paths: self.setup.paths.clone(),
            epoch: self.epoch,
            file_progress: self.file_progress.clone(),
            kick: self.kick.clone(),
            preflight: self.setup.preflight.clone(),
            transport: self.setup.transport.clone(),
            sync: self.setup.sync.clone(),
            project_dir: self.setup.project_dir.clone(),
        };
        // Result files that stopped coming end their attempts (see `RESULT_STALL`).
        ctx.run_interval(Duration::from_secs(5), |actor, _| actor.tick());
        let me = ctx.address();
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
        self.closed = Some(closed_rx);
        ctx.spawn(actix::fut::wrap_future(async move {
            connection(dial, me, outbox_rx).await;
            let _ = closed_tx.send(());
        }));
    }
}

/// The run is over: send what is queued, close the connection the way a finished sweep does
/// (the agent then logs a plain disconnect, not a lost connection), and answer once it is closed
/// (at most 2 s: an unreachable agent is not waited for).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Handler<Shutdown> for AgentSource {
    type Result = actix::ResponseFuture<()>;
    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> Self::Result {
        self.link.handle_shutdown();
        self.drain();
        // The connection task sees the outbox end once it has sent what is in it.
        self.outbox = None;
        // An agent not connected now is not waited for (it may be dialling for 15 s).
        let closed = self.closed.take().filter(|_| self.link.connected());
        Box::pin(async move {
            if let Some(closed) = closed {
                let _ = tokio::time::timeout(Duration::from_secs(2), closed).await;
            }
        })
    }
}

/// Acknowledge events to the agent: the sweep actor sends this once the changes they made are
/// written (see `TaskReport::Acks`).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SendAcks(pub Vec<hsm_protocol::EventRef>);

impl Handler<SendAcks> for AgentSource {
    type Result = ();
    fn handle(&mut self, msg: SendAcks, _: &mut Context<Self>) {
        self.link.handle_acks(msg.0);
        self.drain();
    }
}

/// Start an attempt on the agent.
impl Handler<LaunchTask> for AgentSource {
    type Result = ();
    fn handle(&mut self, msg: LaunchTask, ctx: &mut Context<Self>) {
        let key = msg.key;
        // The local task directory holds what the user reads: params, command, live logs,
        // and the result files once they arrive. A first attempt's directory was usually made
        // ahead of time by the preparer thread; then only command.txt changes (it says where
        // the task runs). Written by the writer thread, before any output of the attempt.
        // The results directory is the agent's own: shown as the path it has there.
        let results = match &self.work_dir {
            Some(work) => format!(
                "{work}/{}/tasks/{}/results",
                self.setup.sweep_id,
                hsm_protocol::task_dir_name(key.index)
            ),
            None => "<its results directory>".to_string(),
        };
        let shown: Vec<String> = msg
            .argv
            .iter()
            .map(|arg| arg.replace(hsm_protocol::AGENT_OUTPUT_DIR, &results))
            .collect();
        let command_txt = format!(
            "# on agent {}\n{}\n",
            self.setup.name,
            shell_display(&shown)
        );
        self.writer.push(Job::Prepare { key, command_txt });
        if self.link.handle_launch(key, msg.argv, msg.env) {
            // Launches arrive in bursts: sent as one `Submit` once the burst has been handled
            // (and the burst's directories handed to the writer in one batch).
            ctx.run_later(Duration::ZERO, |actor, _| {
                actor.link.handle_flush();
                actor.drain();
            });
        }
        // A burst is open (this launch opened it or joined it): its flush hands the writer
        // this launch's directory.
        self.drain_link();
    }
}

/// Stop an attempt on the agent.
impl Handler<CancelTask> for AgentSource {
    type Result = ();
    fn handle(&mut self, msg: CancelTask, _: &mut Context<Self>) {
        self.link.handle_cancel(msg.0);
        self.drain();
    }
}

/// Take up an attempt the agent holds from a coordinator that died: its events (replayed by the
/// agent) and results count as this run's.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct AttachTask(pub TaskKey);

impl Handler<AttachTask> for AgentSource {
    type Result = ();
    fn handle(&mut self, msg: AttachTask, ctx: &mut Context<Self>) {
        if self.link.handle_attach_task(msg.0) {
            ctx.run_later(Duration::ZERO, |actor, _| {
                actor.link.handle_flush();
                actor.drain();
            });
        }
        self.drain();
    }
}

/// Ask the agent for an attempt back if it has not started there (see
/// `AgentLink::handle_steal`).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StealTask(pub TaskKey);

impl Handler<StealTask> for AgentSource {
    type Result = ();
    fn handle(&mut self, msg: StealTask, _: &mut Context<Self>) {
        self.link.handle_steal(msg.0);
        self.drain();
    }
}

/// A file stream announces a result file: may it be received? (see
/// `AgentLink::handle_file_claim`).
#[derive(Message)]
#[rtype(result = "Result<(), Refusal>")]
struct ClaimFile {
    key: TaskKey,
    path: String,
    size: u64,
    sha256: String,
}

impl Handler<ClaimFile> for AgentSource {
    type Result = actix::ResponseFuture<Result<(), Refusal>>;
    fn handle(&mut self, msg: ClaimFile, _: &mut Context<Self>) -> Self::Result {
        let now = self.now();
        let claimed = self
            .link
            .handle_file_claim(now, msg.key, &msg.path, msg.size, &msg.sha256);
        // The writer thread prepares a launched attempt's directory: the file is written into
        // it only once the work queued before this claim (that launch among it) is done.
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        if claimed.is_ok() {
            self.writer.push(Job::Barrier(done_tx));
            self.writer.flush();
        }
        Box::pin(async move {
            if claimed.is_ok() {
                let _ = done_rx.await;
            }
            claimed
        })
    }
}

/// What the connection task delivers to the actor.
#[derive(Message)]
#[rtype(result = "()")]
enum Incoming {
    Up {
        /// Counts the connection task's sessions (see `AgentSource::outbox`).
        session: u64,
        slots: u32,
        agent: String,
        rtt_ms: u32,
        work_dir: String,
        /// How the connection is carried: empty for UDP, else " over ssh to HOST".
        via: String,
        /// What the project sync did, ", project pushed: …", or empty.
        synced: String,
    },
    Down {
        why: String,
    },
    /// The agent or this coordinator refused the other (fingerprint, authorization, protocol):
    /// dialling again cannot help, so the connection task has stopped.
    Refused {
        why: String,
    },
    Frame(FromAgent),
    File(Arrival),
}

impl Handler<Incoming> for AgentSource {
    type Result = ();
    fn handle(&mut self, msg: Incoming, ctx: &mut Context<Self>) {
        let now = self.now();
        match msg {
            Incoming::Up {
                session,
                slots,
                agent,
                rtt_ms,
                work_dir,
                via,
                synced,
            } => {
                self.session = session;
                self.work_dir = (!work_dir.is_empty()).then_some(work_dir);
                let note = format!(
                    "connected to {agent} at {}{via} ({slots} slots){synced}",
                    self.setup.address
                );
                // Tasks run anyway (in the agent's directory); the user learns why their
                // files are not where they configured.
                let warning = match (&self.setup.work_dir, &self.work_dir) {
                    (Some(configured), Some(reported))
                        if !crate::config::work_dir_matches(configured, reported) =>
                    {
                        let ssh = self.setup.transport.ssh.as_ref().map(|t| t.target.as_str());
                        Some(crate::config::mismatch_warning(
                            &self.setup.name,
                            configured,
                            reported,
                            ssh,
                        ))
                    }
                    _ => None,
                };
                self.link.handle_up(now, slots, rtt_ms, note, warning);
            }
            Incoming::Refused { why } => self.link.handle_refused(why),
            Incoming::Down { why } => {
                let before = self.link.poll_timeout();
                self.link.handle_down(now, why);
                // A new outage: its tasks get `grace` to come back before they are lost.
                if let Some(deadline) = self.link.poll_timeout().filter(|d| before != Some(*d)) {
                    let wait = Duration::from_millis(deadline.saturating_sub(now));
                    ctx.run_later(wait, |actor, _| actor.tick());
                }
            }
            Incoming::Frame(msg) => self.link.handle_frame(now, msg),
            Incoming::File(arrival) => self.file_arrival(arrival),
        }
        self.drain();
    }
}

impl AgentSource {
    /// Settles what a file stream brought. A stream that was not claimed against an offer wrote
    /// nothing and changes nothing.
    fn file_arrival(&mut self, arrival: Arrival) {
        let header = match (arrival.claimed, arrival.header, &arrival.outcome) {
            (true, Some(header), _) => header,
            (_, header, outcome) => {
                let error = outcome.as_ref().err().map(|e| e.to_string());
                tracing::warn!(agent = %self.setup.name, path = ?header.map(|h| h.path), error = ?error, "result file refused; nothing written");
                return;
            }
        };
        let key = TaskKey {
            index: header.task.index.0,
            attempt: header.task.attempt.0,
        };
        match arrival.outcome {
            Ok(_) => self.link.handle_file_arrived(key, &header.path),
            Err(e) if e.is_interruption() => {
                // The connection dropped: asked for again when it is back.
                tracing::info!(agent = %self.setup.name, error = %e, "result transfer broke off");
                self.link.handle_file_interrupted(key, &header.path);
            }
            Err(e) => self
                .link
                .handle_file_failed(key, &header.path, e.to_string()),
        }
    }
}
