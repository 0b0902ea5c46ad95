//! The agent source actor: one per agent of a run. A connection task dials the agent (mutual
//! TLS, pinned fingerprint), keeps the control stream and reconnects with capped backoff; the
//! actor turns launches into `Submit`s and the agent's events into task reports — applying each
//! event once by its sequence number, appending live output to the local task logs, and
//! reporting an attempt finished only after its result files arrived and were verified.

mod connection;
mod reports;

pub use reports::MIN_FREE_INODES;
use reports::{disk_low, exit_of, gib};

use super::local::{CancelTask, LaunchTask};
use super::{SourceEvent, SourceStatus, TaskReport};
use crate::core::command::shell_display;
use crate::core::state::ExitKind;
use crate::core::value::Params;
use crate::layout::{self, SweepPaths};
use crate::offers::SharedOffers;
use crate::transfer::{receive_file, Arrival};
use actix::{Actor, AsyncContext, Context, Handler, Message, Recipient};
use connection::{connection, Dial};
use hsm_agent::identity::Identity;
use hsm_agent::process::TaskKey;
use hsm_agent::tls::TransportOptions;
use hsm_agent::wire::{read_frame, write_message};
use hsm_protocol::{
    AckMsg, AttachMsg, Attempt, CancelMsg, EventKind, FetchMsg, FileHeader, FromAgent, Hello,
    HelloReply, JobScriptMsg, ResultsDoneMsg, Stream, SubmitMsg, SweepId, TaskIndex, TaskMsg,
    TaskRef, TemplateMsg, ToAgent, MAX_FRAME,
};
use std::collections::HashMap;
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};

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
    pub params: Arc<Vec<Params>>,
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

/// How long result files may make no progress (no byte arriving from the agent on any of them,
/// no header on a new stream) while it is connected, before the attempts awaiting them end
/// failed. Generous: a file is only slow to start when many others are ahead of it.
pub const RESULT_STALL: Duration = Duration::from_secs(120);

/// An attempt between its launch and its report as finished.
#[derive(Default)]
struct Attempting {
    /// Highest event sequence number applied.
    last_seq: u64,
    /// Taken up from an earlier coordinator (`AttachTask`): the agent replays its events from
    /// wherever that one's acknowledgements ended, so the first one sets the sequence.
    attached: bool,
    exit: Option<ExitKind>,
    /// What the attempt used, as its `Exited` said.
    usage: Option<crate::core::state::Usage>,
    /// The first problem receiving result files (the files the attempt awaits are in `offers`).
    transfer_failure: Option<String>,
    /// A `ResultOffer` was applied: a repeated one (the end reported again to a coordinator
    /// taking the attempt up) must not fetch the files twice — a second copy arriving after the
    /// attempt finished would be refused as not offered and deleted in place.
    offer_seen: bool,
    /// The local log files, opened (for appending) on the first output: most tasks' logs exist
    /// already (created empty when the task directory was prepared) and many stay empty.
    stdout: Option<std::fs::File>,
    stderr: Option<std::fs::File>,
}

pub struct AgentSource {
    setup: AgentSetup,
    events_to: Recipient<SourceEvent>,
    status_to: Recipient<SourceStatus>,
    outbox: Option<mpsc::UnboundedSender<ToAgent>>,
    attempts: HashMap<TaskKey, Attempting>,
    /// Counts connection losses, so a grace timer knows whether the agent came back since.
    outage: u64,
    connected: bool,
    /// The last heartbeat reported free disk below `min_free_disk`.
    low_disk: bool,
    /// Why the last attempt to reach it failed, while it has not been reached since.
    last_down: Option<String>,
    /// The agent's work directory, as it said when it connected.
    work_dir: Option<String>,
    /// Resolves when the connection task has ended (see `Shutdown`).
    closed: Option<tokio::sync::oneshot::Receiver<()>>,
    /// Launches not yet sent (see `flush_submits`).
    submit_batch: Vec<TaskMsg>,
    /// Attempts to take up again, not yet asked for (one `Attach` per burst).
    attach_batch: Vec<TaskRef>,
    /// Result files offered and awaited, shared with the connection task.
    offers: SharedOffers,
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
        AgentSource {
            setup,
            events_to,
            status_to,
            outbox: None,
            attempts: HashMap::new(),
            outage: 0,
            connected: false,
            low_disk: false,
            last_down: None,
            work_dir: None,
            closed: None,
            submit_batch: Vec::new(),
            attach_batch: Vec::new(),
            offers: SharedOffers::new(Instant::now()),
            kick: Arc::new(Notify::new()),
        }
    }

    fn send(&self, msg: ToAgent) {
        if let Some(outbox) = &self.outbox {
            let _ = outbox.send(msg);
        }
    }

    fn task_ref(key: TaskKey) -> TaskRef {
        TaskRef {
            index: TaskIndex(key.index),
            attempt: Attempt(key.attempt),
        }
    }

    fn finish(&mut self, key: TaskKey, exit: ExitKind) {
        let usage = self.attempts.remove(&key).and_then(|a| a.usage);
        self.offers.lock().forget(key);
        self.events_to.do_send(SourceEvent {
            source: self.setup.source,
            report: TaskReport::Finished {
                key,
                exit,
                at_ms: super::sweep::now_ms(),
                usage,
            },
        });
    }

    /// Reports the attempt once its exit is known and no result file is outstanding.
    fn maybe_finish(&mut self, key: TaskKey) {
        let Some(attempt) = self.attempts.get(&key) else {
            return;
        };
        if self.offers.lock().awaiting(key) > 0 {
            return;
        }
        let Some(exit) = attempt.exit.clone() else {
            return;
        };
        let exit = match (&attempt.transfer_failure, exit) {
            (Some(why), ExitKind::Success) => ExitKind::Failure {
                exit_code: Some(0),
                reason: format!(
                    "result files did not arrive intact: {why} (the files stay on {})",
                    self.setup.name
                ),
            },
            (_, exit) => exit,
        };
        self.finish(key, exit);
    }

    /// A result file of the attempt will not arrive intact: stop waiting for it, remember why
    /// (the first reason), and end the attempt once nothing else is outstanding. The agent is not
    /// told its results are done, so it keeps them.
    fn file_failed(&mut self, key: TaskKey, path: &str, why: String) {
        self.offers.lock().settle(key, path);
        if let Some(attempt) = self.attempts.get_mut(&key) {
            tracing::warn!(agent = %self.setup.name, task = key.index, error = %why, "result file not received");
            attempt.transfer_failure.get_or_insert(why);
        }
        self.maybe_finish(key);
    }

    /// A result file of the attempt arrived intact.
    fn file_arrived(&mut self, key: TaskKey, path: &str) {
        let all_in = self.offers.lock().settle(key, path);
        if let Some(attempt) = self.attempts.get(&key) {
            if all_in && attempt.transfer_failure.is_none() {
                self.send(ToAgent::ResultsDone(ResultsDoneMsg {
                    sweep_id: SweepId(self.setup.sweep_id.clone()),
                    task: Self::task_ref(key),
                }));
            }
        }
        self.maybe_finish(key);
    }

    /// Ends the attempts whose result files made no progress for `RESULT_STALL` while the agent
    /// was connected (a stream that never came, a header that never arrived).
    fn check_stalled(&mut self) {
        let stalled = {
            let book = self.offers.lock();
            if !self.connected || !book.stalled(Instant::now(), RESULT_STALL) {
                return;
            }
            book.keys()
                .into_iter()
                .map(|key| (key, book.paths(key)))
                .collect::<Vec<_>>()
        };
        for (key, paths) in stalled {
            let why = format!(
                "no data of {} arrived from {} for {RESULT_STALL:?}",
                paths
                    .iter()
                    .map(|p| format!("{p:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                self.setup.name
            );
            if let Some(attempt) = self.attempts.get_mut(&key) {
                attempt.transfer_failure.get_or_insert(why);
            }
            self.offers.lock().forget(key);
            self.maybe_finish(key);
        }
    }

    /// Keeps a job script the agent submitted under `scripts/job_scripts/<source>/`, next to the
    /// scripts of in-process scheduler sources. A name that is not one plain file name is the
    /// peer's error: logged, not written.
    fn save_job_script(&self, script: &JobScriptMsg) {
        let name = script.name.as_str();
        let plain = !name.is_empty()
            && name.len() <= 200
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !plain {
            tracing::warn!(agent = %self.setup.name, name = ?name, "agent sent a job script with an unusable name; not saved");
            return;
        }
        let dir = self
            .setup
            .paths
            .root
            .join("scripts")
            .join("job_scripts")
            .join(&self.setup.name);
        let written = std::fs::create_dir_all(&dir).and_then(|()| {
            let tmp = dir.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, script.text.as_bytes())?;
            std::fs::rename(&tmp, dir.join(name))
        });
        if let Err(e) = written {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot save a job script");
        }
    }

    /// Applies one event of an attempt. Events of an attempt come numbered 1, 2, 3…; one that
    /// skips a number (`Gap`) is a protocol error: it is not applied or acknowledged, and the
    /// attempt ends failed.
    fn apply_event(&mut self, key: TaskKey, seq: u64, kind: EventKind) -> Applied {
        let Some(attempt) = self.attempts.get_mut(&key) else {
            // Not an attempt this run waits for (an old attempt, another run): acknowledged
            // by the caller and otherwise ignored.
            return Applied::Yes;
        };
        if seq <= attempt.last_seq {
            return Applied::Yes; // replayed after a reconnect: applied already
        }
        let first_of_taken_up = attempt.attached && attempt.last_seq == 0;
        if seq != attempt.last_seq + 1 && !first_of_taken_up {
            let after = attempt.last_seq;
            self.finish(
                key,
                ExitKind::Failure {
                    exit_code: None,
                    reason: format!(
                        "protocol error: {} sent event {seq} of this attempt after event {after}",
                        self.setup.name
                    ),
                },
            );
            return Applied::Gap;
        }
        attempt.last_seq = seq;
        match kind {
            EventKind::Submitted { job_id, script } => {
                tracing::debug!(task = key.index, job = %hsm_protocol::display_safe(&job_id), "submitted to the agent's scheduler");
                if let Some(script) = script {
                    self.save_job_script(&script);
                }
                self.events_to.do_send(SourceEvent {
                    source: self.setup.source,
                    report: TaskReport::Submitted { key, job_id },
                });
            }
            EventKind::Started { pid, at_ms } => self.events_to.do_send(SourceEvent {
                source: self.setup.source,
                report: TaskReport::Started {
                    key,
                    pid: Some(pid),
                    at_ms,
                },
            }),
            EventKind::Output { stream, data } => {
                let (file, name) = match stream {
                    Stream::Stdout => (&mut attempt.stdout, "stdout.log"),
                    Stream::Stderr => (&mut attempt.stderr, "stderr.log"),
                };
                if file.is_none() {
                    let path = self.setup.paths.task_dir(key.index).join(name);
                    match std::fs::OpenOptions::new()
                        .append(true)
                        .create(true)
                        .open(&path)
                    {
                        Ok(f) => *file = Some(f),
                        Err(e) => {
                            tracing::warn!(path = %path.display(), error = %e, "cannot open task log")
                        }
                    }
                }
                if let Some(file) = file {
                    if let Err(e) = file.write_all(&data.0) {
                        tracing::warn!(task = key.index, error = %e, "cannot append task output");
                    }
                }
            }
            EventKind::Exited { outcome, usage, .. } => {
                attempt.exit = Some(exit_of(outcome));
                attempt.usage = usage.map(super::usage_of);
            }
            EventKind::ResultOffer { files } => {
                if std::mem::replace(&mut attempt.offer_seen, true) {
                    return Applied::Yes;
                }
                let (problems, awaiting) = {
                    let mut book = self.offers.lock();
                    let problems = book.offer(key, files, Instant::now());
                    (problems, book.awaiting(key))
                };
                if let Some(first) = problems.first() {
                    let more = match problems.len() {
                        1 => String::new(),
                        n => format!(" (and {} more)", n - 1),
                    };
                    tracing::warn!(agent = %self.setup.name, task = key.index, problems = ?problems, "unusable result offer");
                    attempt
                        .transfer_failure
                        .get_or_insert(format!("{first}{more}"));
                }
                if awaiting == 0 {
                    self.maybe_finish(key);
                } else {
                    self.send(ToAgent::FetchResults(FetchMsg {
                        sweep_id: SweepId(self.setup.sweep_id.clone()),
                        task: Self::task_ref(key),
                        paths: Vec::new(),
                    }));
                }
            }
        }
        Applied::Yes
    }
}

/// Whether an event was taken in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applied {
    /// Applied now or before: acknowledge it.
    Yes,
    /// It skipped a sequence number.
    Gap,
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
            offers: self.offers.clone(),
            kick: self.kick.clone(),
            preflight: self.setup.preflight.clone(),
            transport: self.setup.transport.clone(),
            sync: self.setup.sync.clone(),
            project_dir: self.setup.project_dir.clone(),
        };
        // Result files that stopped coming end their attempts (see `RESULT_STALL`).
        ctx.run_interval(Duration::from_secs(5), |actor, _| actor.check_stalled());
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
        self.flush_submits();
        // The connection task sees the outbox end once it has sent what is in it.
        self.outbox = None;
        // An agent not connected now is not waited for (it may be dialling for 15 s).
        let closed = self.closed.take().filter(|_| self.connected);
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
        self.send(ToAgent::Ack(AckMsg { acks: msg.0 }));
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
        // the task runs).
        // The results directory is the agent's own: shown as the path it has there.
        let results = match &self.work_dir {
            Some(work) => format!(
                "{work}/{}/tasks/{}/results",
                self.setup.sweep_id,
                hsm_agent::runner::task_dir_name(key.index)
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
        let prepared = key.attempt == 1
            && self
                .setup
                .prefetch
                .as_ref()
                .is_some_and(|p| p.claim(key.index));
        let written = if prepared {
            std::fs::write(
                self.setup.paths.task_dir(key.index).join("command.txt"),
                &command_txt,
            )
        } else {
            let params_yaml = self
                .setup
                .params
                .get((key.index - 1) as usize)
                .map(layout::params_yaml)
                .unwrap_or_default();
            layout::prepare_task_dir(
                &self.setup.paths,
                key.index,
                key.attempt,
                &params_yaml,
                &command_txt,
            )
            .and_then(|(out, err)| {
                std::fs::File::create(out)?;
                std::fs::File::create(err)?;
                Ok(())
            })
        };
        if let Err(e) = written {
            tracing::warn!(task = key.index, error = %e, "cannot prepare the local task directory");
        }
        self.attempts.insert(key, Attempting::default());
        // Launches arrive in bursts (a dispatch round hands out many at once): they travel as
        // one `Submit`, sent once the burst has been handled.
        if self.submit_batch.is_empty() {
            ctx.run_later(Duration::ZERO, |actor, _| actor.flush_submits());
        }
        self.submit_batch.push(TaskMsg {
            index: TaskIndex(key.index),
            attempt: Attempt(key.attempt),
            template: 0,
            args: msg.argv,
            env: msg.env,
        });
    }
}

impl AgentSource {
    fn flush_submits(&mut self) {
        if self.submit_batch.is_empty() {
            return;
        }
        let tasks = std::mem::take(&mut self.submit_batch);
        let cwd = self.setup.project_dir.clone().unwrap_or_else(|| ".".into());
        self.send(ToAgent::Submit(SubmitMsg {
            sweep_id: SweepId(self.setup.sweep_id.clone()),
            templates: vec![TemplateMsg {
                id: 0,
                argv_prefix: Vec::new(),
                env: Vec::new(),
                cwd,
                timeout_ms: self.setup.timeout.map(|t| t.as_millis() as u64),
                kill_grace_ms: self.setup.kill_grace.as_millis() as u64,
                hpc: self.setup.hpc.clone(),
            }],
            tasks,
        }));
    }
}

/// Stop an attempt on the agent.
impl Handler<CancelTask> for AgentSource {
    type Result = ();
    fn handle(&mut self, msg: CancelTask, _: &mut Context<Self>) {
        let key = msg.0;
        // An attempt that ended and whose result files are still arriving has nothing left to
        // stop on the agent: it ends here, now, rather than when (or if) its files arrive. The
        // files stay on the agent.
        let receiving = self.attempts.get(&key).is_some_and(|a| a.exit.is_some());
        if receiving {
            self.finish(key, ExitKind::Cancelled);
            return;
        }
        self.send_cancel(key, false);
    }
}

impl AgentSource {
    /// Asks the agent to stop an attempt (`unstarted_only`: only if it has not started).
    fn send_cancel(&mut self, key: TaskKey, unstarted_only: bool) {
        // A cancel must not overtake the submission of the attempt it stops.
        self.flush_submits();
        self.send(ToAgent::Cancel(CancelMsg {
            sweep_id: SweepId(self.setup.sweep_id.clone()),
            tasks: vec![Self::task_ref(key)],
            unstarted_only,
        }));
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
        self.attempts.insert(
            msg.0,
            Attempting {
                attached: true,
                ..Attempting::default()
            },
        );
        if self.attach_batch.is_empty() {
            ctx.run_later(Duration::ZERO, |actor, _| {
                let tasks = std::mem::take(&mut actor.attach_batch);
                actor.send(ToAgent::Attach(AttachMsg {
                    sweep_id: SweepId(actor.setup.sweep_id.clone()),
                    tasks,
                }));
            });
        }
        self.attach_batch.push(Self::task_ref(msg.0));
    }
}

/// Take back an attempt that has not started on the agent: the agent drops it (or stops it,
/// should it have started meanwhile) and whatever it still reports about it is ignored.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct WithdrawTask(pub TaskKey);

impl Handler<WithdrawTask> for AgentSource {
    type Result = ();
    fn handle(&mut self, msg: WithdrawTask, _: &mut Context<Self>) {
        self.attempts.remove(&msg.0);
        self.offers.lock().forget(msg.0);
        self.send_cancel(msg.0, false);
    }
}

/// Ask the agent for an attempt back if it has not started there, so an idle source can run
/// it: the agent drops it and reports it ended `Cancelled`, or leaves it be if it has started
/// (its reports then go on as usual). Unlike a withdrawal, the attempt stays this run's until the
/// agent's answer arrives, so it never runs in two places.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StealTask(pub TaskKey);

impl Handler<StealTask> for AgentSource {
    type Result = ();
    fn handle(&mut self, msg: StealTask, _: &mut Context<Self>) {
        self.send_cancel(msg.0, true);
    }
}

/// What the connection task delivers to the actor.
#[derive(Message)]
#[rtype(result = "()")]
enum Incoming {
    Up {
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
        let source = self.setup.source;
        let status = move |up, slots, note: String| SourceStatus {
            source,
            up,
            slots,
            note,
            lost: false,
            keep_waiting: false,
            rtt_ms: None,
            refused: false,
        };
        match msg {
            Incoming::Up {
                slots,
                agent,
                rtt_ms,
                work_dir,
                via,
                synced,
            } => {
                self.connected = true;
                self.work_dir = (!work_dir.is_empty()).then_some(work_dir);
                self.last_down = None;
                // After an outage the agent may have restarted and not kept an attempt it had
                // only just accepted (or never got): ask about every attempt whose end has not
                // arrived; those it does not hold come back as unknown and run again.
                if self.outage > 0 {
                    let tasks: Vec<TaskRef> = self
                        .attempts
                        .iter()
                        .filter(|(_, a)| a.exit.is_none())
                        .map(|(k, _)| Self::task_ref(*k))
                        .collect();
                    if !tasks.is_empty() {
                        self.flush_submits();
                        self.send(ToAgent::Attach(AttachMsg {
                            sweep_id: SweepId(self.setup.sweep_id.clone()),
                            tasks,
                        }));
                    }
                }
                // Files in flight when the connection dropped will not come on their own:
                // ask again for what each ended attempt still awaits.
                // Only the paths still awaited: a file received twice would be refused as not
                // offered any more.
                let refetch: Vec<(TaskKey, Vec<String>)> = {
                    let mut book = self.offers.lock();
                    book.touch(Instant::now());
                    book.keys()
                        .into_iter()
                        .filter(|k| self.attempts.get(k).is_some_and(|a| a.exit.is_some()))
                        .map(|k| {
                            // Streams of the old connection are gone: claimable again.
                            let paths = book.paths(k);
                            for path in &paths {
                                book.release(k, path);
                            }
                            (k, paths)
                        })
                        .collect()
                };
                for (key, paths) in refetch {
                    self.send(ToAgent::FetchResults(FetchMsg {
                        sweep_id: SweepId(self.setup.sweep_id.clone()),
                        task: Self::task_ref(key),
                        paths,
                    }));
                }
                let mut note = format!(
                    "connected to {agent} at {}{via} ({slots} slots){synced}",
                    self.setup.address
                );
                if self.low_disk {
                    note.push_str(", free disk still low: no new work");
                }
                // Tasks run anyway (in the agent's directory); the user learns why their
                // files are not where they configured.
                if let (Some(configured), Some(reported)) = (&self.setup.work_dir, &self.work_dir) {
                    if !crate::config::work_dir_matches(configured, reported) {
                        let ssh = self.setup.transport.ssh.as_ref().map(|t| t.target.as_str());
                        note.push_str(&format!(
                            "; warning: {}",
                            crate::config::mismatch_warning(
                                &self.setup.name,
                                configured,
                                reported,
                                ssh
                            )
                        ));
                    }
                }
                self.status_to.do_send(SourceStatus {
                    rtt_ms: Some(rtt_ms),
                    ..status(!self.low_disk, Some(slots as usize), note)
                })
            }
            Incoming::Refused { why } => {
                self.connected = false;
                // Nothing more will come from it: whatever it held runs elsewhere.
                self.attempts.clear();
                self.offers.lock().clear();
                self.status_to.do_send(SourceStatus {
                    lost: true,
                    refused: true,
                    ..status(false, None, why)
                });
            }
            Incoming::Down { why } => {
                // The same failure again (a retry that found the agent still unreachable) is
                // said once.
                let repeated = !self.connected && self.last_down.as_deref() == Some(why.as_str());
                self.last_down = Some(why.clone());
                if repeated {
                    return;
                }
                if self.connected || self.outage == 0 {
                    // A new outage: its tasks get `grace` to come back before they are lost.
                    self.outage += 1;
                    let outage = self.outage;
                    let grace = self.setup.grace;
                    ctx.run_later(grace, move |actor, _| {
                        if actor.connected || actor.outage != outage {
                            return;
                        }
                        // Whatever the agent still reports about these attempts is stale now.
                        actor.attempts.clear();
                        actor.offers.lock().clear();
                        actor.status_to.do_send(SourceStatus {
                            source: actor.setup.source,
                            up: false,
                            slots: None,
                            note: format!(
                                "unreachable for {grace:?}: its tasks run again elsewhere"
                            ),
                            lost: true,
                            keep_waiting: false,
                            rtt_ms: None,
                            refused: false,
                        });
                    });
                }
                self.connected = false;
                self.status_to.do_send(SourceStatus {
                    keep_waiting: self.setup.hpc.is_some(),
                    ..status(false, None, why)
                });
            }
            Incoming::Frame(FromAgent::Events(batch)) => {
                let mut acks = Vec::with_capacity(batch.events.len());
                let mut gap = false;
                for event in batch.events {
                    // Another sweep's events are for its own coordinator: acknowledging them
                    // here would make the agent forget what that one has not seen.
                    if event.sweep_id.as_str() != self.setup.sweep_id {
                        continue;
                    }
                    let event_ref = event.event_ref();
                    let key = TaskKey {
                        index: event.task.index.0,
                        attempt: event.task.attempt.0,
                    };
                    match self.apply_event(key, event.seq.0, event.kind) {
                        Applied::Yes => acks.push(event_ref),
                        Applied::Gap => {
                            tracing::warn!(agent = %self.setup.name, task = key.index, seq = event_ref.seq.0, "event out of sequence: protocol error, reconnecting");
                            gap = true;
                        }
                    }
                }
                if !acks.is_empty() {
                    // Through the sweep actor: acknowledged once their changes are written.
                    self.events_to.do_send(SourceEvent {
                        source: self.setup.source,
                        report: TaskReport::Acks(acks),
                    });
                }
                if gap {
                    self.kick.notify_one();
                }
            }
            Incoming::Frame(FromAgent::Error(e)) => {
                tracing::warn!(agent = %self.setup.name, message = %hsm_protocol::display_safe(&e.message), "agent reported an error");
                // An offered file it cannot send: the attempt is not waited on for it.
                if let Some(file) = e
                    .file
                    .filter(|f| f.sweep_id.as_str() == self.setup.sweep_id)
                {
                    let key = TaskKey {
                        index: file.task.index.0,
                        attempt: file.task.attempt.0,
                    };
                    if self.offers.lock().paths(key).contains(&file.path) {
                        let why = format!("{} could not send it: {:?}", self.setup.name, e.message);
                        self.file_failed(key, &file.path, why);
                    }
                }
            }
            Incoming::Frame(FromAgent::Heartbeat(health)) => {
                let low = disk_low(&health, self.setup.min_free_disk);
                if low.is_some() != self.low_disk {
                    self.low_disk = low.is_some();
                    let note = match low {
                        Some(why) => format!("{why}: no new work"),
                        None => format!(
                            "disk has room again ({} free): taking work",
                            gib(health.free_disk_bytes)
                        ),
                    };
                    self.status_to.do_send(status(!self.low_disk, None, note));
                }
            }
            // A sweep's session never asks for a clean-up (`agent clean` has its own).
            Incoming::Frame(FromAgent::Pong(_) | FromAgent::Cleaned(_)) => {}
            Incoming::Frame(FromAgent::Attached(attached)) => {
                if attached.sweep_id.as_str() != self.setup.sweep_id {
                    return;
                }
                for task in attached.unknown {
                    let key = TaskKey {
                        index: task.index.0,
                        attempt: task.attempt.0,
                    };
                    if self.attempts.contains_key(&key) {
                        self.finish(
                            key,
                            ExitKind::Lost {
                                reason: format!(
                                    "unknown to {} when taken up again (never received, or \
                                     forgotten after it ended)",
                                    self.setup.name
                                ),
                            },
                        );
                    }
                }
            }
            Incoming::File(arrival) => self.file_arrival(arrival),
        }
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
            Ok(_) => self.file_arrived(key, &header.path),
            Err(e) if e.is_interruption() => {
                // The connection dropped: asked for again when it is back (`Incoming::Up`).
                tracing::info!(agent = %self.setup.name, error = %e, "result transfer broke off");
                self.offers.lock().release(key, &header.path);
            }
            Err(e) => self.file_failed(key, &header.path, e.to_string()),
        }
    }
}
