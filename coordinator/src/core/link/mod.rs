//! The agent link: what the coordinator decides about one agent's attempts, as a sans-IO state
//! machine. It applies each event once by its sequence number, says which output to append and
//! which job script to keep, awaits offered result files and decides when an attempt is finished
//! and how it counts, batches submissions, and decides what a connection, a disconnection, a
//! grace deadline, a stalled transfer or a low disk mean. Inputs are `handle_*` calls with time
//! as an argument (monotonic milliseconds); outputs are drained with `poll_*`. The agent actor
//! (`actors/agent.rs`) carries them out: it owns the sockets, timers and files.

mod offers;
mod reports;
#[cfg(test)]
mod tests;

pub use offers::{OfferBook, Refusal, RESULTS_DIR};
pub use reports::{disk_low, exit_of, gib, usage_of, MIN_FREE_INODES};

use crate::core::state::{ExitKind, Usage};
use hsm_exec::process::TaskKey;
use hsm_protocol::{
    AckMsg, AttachMsg, Attempt, CancelMsg, EventKind, EventRef, FetchMsg, FromAgent,
    ResultsDoneMsg, Stream, SubmitMsg, SweepId, TaskIndex, TaskMsg, TaskRef, TemplateMsg, ToAgent,
};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// How long result files may make no progress (no byte arriving from the agent on any of them,
/// no header on a new stream) while it is connected, before the attempts awaiting them end
/// failed. Generous: a file is only slow to start when many others are ahead of it.
pub const RESULT_STALL: Duration = Duration::from_secs(120);
const RESULT_STALL_MS: u64 = RESULT_STALL.as_millis() as u64;

/// What the link needs to know about its source.
#[derive(Debug, Clone)]
pub struct LinkSetup {
    /// The source's name, for notes and reasons.
    pub name: String,
    pub sweep_id: String,
    /// How long running tasks wait for an unreachable agent before they run elsewhere.
    pub grace: Duration,
    /// Below this much free disk (in its heartbeat) the agent gets no new work; 0: no check.
    pub min_free_disk: u64,
    /// A batch scheduler runs its tasks: while its agent is away, they stay in the cluster's
    /// queue (see `SourceStatus::keep_waiting`).
    pub keep_waiting: bool,
    /// The one template every `Submit` carries (cwd, timeout, kill grace, scheduler resources).
    pub template: TemplateMsg,
}

/// What the link reports to the sweep, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    Submitted {
        key: TaskKey,
        job_id: String,
    },
    Started {
        key: TaskKey,
        pid: Option<u32>,
        at_ms: i64,
    },
    /// The attempt ended (its result files arrived, or cannot). `at_ms`: when its `Exited` says
    /// it ended, by the agent's clock (a cluster task: the wrapper's stamp on the compute node),
    /// so its duration is its run and not its run plus a poll and the result transfer; `None`
    /// (no `Exited` applied) has the shell stamp the time.
    Finished {
        key: TaskKey,
        exit: ExitKind,
        usage: Option<Usage>,
        at_ms: Option<i64>,
    },
    /// Events applied, to be acknowledged once their changes are written.
    Acks(Vec<EventRef>),
    Status(LinkStatus),
}

/// The source became usable or unusable (see `actors::SourceStatus`, which this becomes).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinkStatus {
    pub up: bool,
    pub slots: Option<usize>,
    pub note: String,
    pub lost: bool,
    pub keep_waiting: bool,
    pub rtt_ms: Option<u32>,
    pub refused: bool,
}

/// A file write the shell carries out. Writes of one call come before its reports: a
/// `Finished` is reported only after the attempt's output was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Append to the attempt's local `stdout.log` / `stderr.log`.
    Append {
        key: TaskKey,
        stream: Stream,
        data: Vec<u8>,
    },
    /// Keep a job script under `scripts/job_scripts/<source>/NAME` (`name` is one plain file
    /// name).
    JobScript { name: String, text: String },
    /// The attempt is no longer this link's: its log files can be closed.
    Close(TaskKey),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
}

/// A line for the coordinator's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    pub level: Level,
    pub task: Option<u64>,
    pub message: String,
}

/// An attempt between its launch and its report as finished.
#[derive(Debug, Default)]
struct Attempting {
    /// Highest event sequence number applied.
    last_seq: u64,
    /// Taken up from an earlier coordinator (`AttachTask`): the agent replays its events from
    /// wherever that one's acknowledgements ended, so the first one sets the sequence.
    attached: bool,
    exit: Option<ExitKind>,
    /// What the attempt used, as its `Exited` said.
    usage: Option<Usage>,
    /// When the attempt ended, as its `Exited` said (agent clock, ms since the epoch).
    exited_at_ms: Option<i64>,
    /// The first problem receiving result files (the files the attempt awaits are in `offers`).
    transfer_failure: Option<String>,
    /// Asked to stop (`Some(unstarted_only)`): asked again after a reconnect, since the
    /// cancel may have been lost with the connection.
    cancel: Option<bool>,
    /// A `ResultOffer` was applied: a repeated one (the end reported again to a coordinator
    /// taking the attempt up) must not fetch the files twice — a second copy arriving after the
    /// attempt finished would be refused as not offered and deleted in place.
    offer_seen: bool,
}

/// Whether an event was taken in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applied {
    /// Applied now or before: acknowledge it.
    Yes,
    /// It skipped a sequence number.
    Gap,
}

/// One agent's attempts and connection, as the coordinator sees them.
#[derive(Debug)]
pub struct AgentLink {
    setup: LinkSetup,
    attempts: HashMap<TaskKey, Attempting>,
    /// Counts connection losses (a grace deadline belongs to the latest).
    outage: u64,
    connected: bool,
    /// When the current outage's attempts run elsewhere, unless the agent is back by then.
    grace_deadline: Option<u64>,
    /// The last heartbeat reported free disk below `min_free_disk`.
    low_disk: bool,
    /// The agent's last notice shown (each is shown once).
    notice: Option<String>,
    /// Why the last attempt to reach it failed, while it has not been reached since.
    last_down: Option<String>,
    /// Launches not yet sent (see `handle_flush`).
    submit_batch: Vec<TaskMsg>,
    /// Attempts to take up again, not yet asked for (one `Attach` per burst).
    attach_batch: Vec<TaskRef>,
    /// Result files offered and awaited.
    offers: OfferBook,
    /// The agent broke the protocol: the connection is to be dropped (and dialled again, so
    /// the agent replays what was not acknowledged).
    reconnect: bool,
    outgoing: VecDeque<ToAgent>,
    /// Attempts given up on while the agent was away, to stop when it is back.
    abandoned: Vec<TaskKey>,
    reports: VecDeque<Report>,
    writes: VecDeque<Write>,
    logs: VecDeque<Log>,
}

/// The time of a report by this host's clock: the agent's stamp `at_ms` (when the report has
/// one), never later than `now_ms`, since an agent's clock may run ahead of this one's.
pub fn report_time(at_ms: Option<i64>, now_ms: i64) -> i64 {
    at_ms.map_or(now_ms, |at| at.min(now_ms))
}

fn task_ref(key: TaskKey) -> TaskRef {
    TaskRef {
        index: TaskIndex(key.index),
        attempt: Attempt(key.attempt),
    }
}

fn key_of(task: TaskRef) -> TaskKey {
    TaskKey {
        index: task.index.0,
        attempt: task.attempt.0,
    }
}

/// Whether a job script's name is one plain file name (anything else is the peer's error).
fn plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl AgentLink {
    pub fn new(setup: LinkSetup, now: u64) -> Self {
        AgentLink {
            setup,
            attempts: HashMap::new(),
            outage: 0,
            connected: false,
            grace_deadline: None,
            low_disk: false,
            notice: None,
            last_down: None,
            submit_batch: Vec::new(),
            attach_batch: Vec::new(),
            offers: OfferBook::new(now),
            reconnect: false,
            outgoing: VecDeque::new(),
            abandoned: Vec::new(),
            reports: VecDeque::new(),
            writes: VecDeque::new(),
            logs: VecDeque::new(),
        }
    }

    // ---- outputs ------------------------------------------------------------------------------

    /// The next message to send to the agent (queued while disconnected: the connection sends
    /// them once it is back).
    pub fn poll_outgoing(&mut self) -> Option<ToAgent> {
        self.outgoing.pop_front()
    }

    /// The next report for the sweep. Run the writes polled so far first.
    pub fn poll_reports(&mut self) -> Option<Report> {
        self.reports.pop_front()
    }

    pub fn poll_writes(&mut self) -> Option<Write> {
        self.writes.pop_front()
    }

    pub fn poll_logs(&mut self) -> Option<Log> {
        self.logs.pop_front()
    }

    /// Whether the connection is to be dropped now (the agent broke the protocol); asked once.
    pub fn poll_reconnect(&mut self) -> bool {
        std::mem::take(&mut self.reconnect)
    }

    /// The earliest time `handle_tick` has something to decide: the grace deadline while
    /// disconnected, the stall deadline of awaited files while connected.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.connected {
            self.offers.stall_deadline(RESULT_STALL_MS)
        } else {
            self.grace_deadline
        }
    }

    /// Whether the agent is connected now.
    pub fn connected(&self) -> bool {
        self.connected
    }

    /// Whether the attempt is this link's (launched or taken up, not yet finished or given back).
    pub fn holds(&self, key: TaskKey) -> bool {
        self.attempts.contains_key(&key)
    }

    /// Attempts held, sorted.
    pub fn held(&self) -> Vec<TaskKey> {
        let mut keys: Vec<TaskKey> = self.attempts.keys().copied().collect();
        keys.sort();
        keys
    }

    /// Paths of the attempt's result files still awaited.
    pub fn awaited(&self, key: TaskKey) -> Vec<String> {
        self.offers.paths(key)
    }

    fn send(&mut self, msg: ToAgent) {
        self.outgoing.push_back(msg);
    }

    fn log(&mut self, level: Level, task: Option<u64>, message: String) {
        self.logs.push_back(Log {
            level,
            task,
            message,
        });
    }

    fn status(&mut self, status: LinkStatus) {
        self.reports.push_back(Report::Status(status));
    }

    fn sweep_id(&self) -> SweepId {
        SweepId(self.setup.sweep_id.clone())
    }

    /// Forgets an attempt (and what it awaits); its log files can close.
    fn drop_attempt(&mut self, key: TaskKey) -> Option<Attempting> {
        self.offers.forget(key);
        let attempt = self.attempts.remove(&key);
        if attempt.is_some() {
            self.writes.push_back(Write::Close(key));
        }
        attempt
    }

    /// Forgets every attempt: whatever the agent still reports about them is stale. Orders not
    /// yet sent are dropped with them (a `Submit` or `Attach` queued for an agent given up on
    /// would start, when it came back, attempts that run elsewhere by then; what the shell had
    /// handed out goes down with its session), and the agent is asked to stop them when it is
    /// back: they run elsewhere now.
    fn drop_all(&mut self) {
        let held = self.held();
        for key in &held {
            self.drop_attempt(*key);
        }
        self.abandoned.extend(held);
        self.offers.clear();
        self.outgoing.clear();
        self.submit_batch.clear();
        self.attach_batch.clear();
    }

    // ---- orders from the sweep ----------------------------------------------------------------

    /// Start an attempt on the agent. Launches arrive in bursts (a dispatch round hands out many
    /// at once): they travel as one `Submit`, sent by `handle_flush`. Returns whether this opened
    /// a burst (the caller then calls `handle_flush` once the burst has been handled).
    pub fn handle_launch(
        &mut self,
        key: TaskKey,
        argv: Vec<String>,
        env: Vec<(String, String)>,
    ) -> bool {
        let opens = self.submit_batch.is_empty() && self.attach_batch.is_empty();
        self.attempts.insert(key, Attempting::default());
        self.submit_batch.push(TaskMsg {
            index: TaskIndex(key.index),
            attempt: Attempt(key.attempt),
            template: 0,
            args: argv,
            env,
        });
        opens
    }

    /// Take up an attempt the agent holds from a coordinator that died: its events (replayed by
    /// the agent) and results count as this run's. One `Attach` per burst; returns whether this
    /// opened a burst (see `handle_launch`).
    pub fn handle_attach_task(&mut self, key: TaskKey) -> bool {
        let opens = self.submit_batch.is_empty() && self.attach_batch.is_empty();
        self.attempts.insert(
            key,
            Attempting {
                attached: true,
                ..Attempting::default()
            },
        );
        self.attach_batch.push(task_ref(key));
        opens
    }

    /// The burst of orders has been handled: send what it batched.
    pub fn handle_flush(&mut self) {
        self.flush_submits();
        if !self.attach_batch.is_empty() {
            let tasks = std::mem::take(&mut self.attach_batch);
            let sweep_id = self.sweep_id();
            self.send(ToAgent::Attach(AttachMsg { sweep_id, tasks }));
        }
    }

    fn flush_submits(&mut self) {
        if self.submit_batch.is_empty() {
            return;
        }
        let tasks = std::mem::take(&mut self.submit_batch);
        let msg = ToAgent::Submit(SubmitMsg {
            sweep_id: self.sweep_id(),
            templates: vec![self.setup.template.clone()],
            tasks,
        });
        self.send(msg);
    }

    /// Stop an attempt on the agent.
    pub fn handle_cancel(&mut self, key: TaskKey) {
        // An attempt that ended and whose result files are still arriving has nothing left to
        // stop on the agent: it ends here, now, rather than when (or if) its files arrive. The
        // files stay on the agent.
        let receiving = self.attempts.get(&key).is_some_and(|a| a.exit.is_some());
        if receiving {
            self.finish(key, ExitKind::Cancelled);
            return;
        }
        if let Some(attempt) = self.attempts.get_mut(&key) {
            attempt.cancel = Some(false);
        }
        self.send_cancel(key, false);
    }

    /// Takes attempt `key` out of the submissions not yet handed out; whether it was there.
    fn retract_submit(&mut self, key: TaskKey) -> bool {
        let is = |t: &TaskMsg| t.index.0 == key.index && t.attempt.0 == key.attempt;
        let before = self.submit_batch.len();
        self.submit_batch.retain(|t| !is(t));
        if self.submit_batch.len() != before {
            return true;
        }
        let mut found = false;
        for msg in &mut self.outgoing {
            if let ToAgent::Submit(submit) = msg {
                let n = submit.tasks.len();
                submit.tasks.retain(|t| !is(t));
                found |= submit.tasks.len() != n;
            }
        }
        self.outgoing
            .retain(|m| !matches!(m, ToAgent::Submit(s) if s.tasks.is_empty()));
        found
    }

    /// Ask the agent for an attempt back if it has not started there (for an idle source, or
    /// from a drained one): the agent drops it and reports it ended `Cancelled`, or leaves it be
    /// if it has started (its reports then go on as usual). The attempt stays this link's until
    /// the agent's answer arrives, so it never runs in two places; one whose submission was not
    /// sent yet is taken out and answered at once.
    pub fn handle_steal(&mut self, key: TaskKey) {
        // Not handed out yet: the agent never hears of it, and it is back at once.
        if self.retract_submit(key) {
            self.finish(key, ExitKind::Cancelled);
            return;
        }
        if let Some(attempt) = self.attempts.get_mut(&key) {
            attempt.cancel.get_or_insert(true);
        }
        self.send_cancel(key, true);
    }

    /// Asks the agent to stop an attempt (`unstarted_only`: only if it has not started).
    fn send_cancel(&mut self, key: TaskKey, unstarted_only: bool) {
        // A cancel must not overtake the submission of the attempt it stops.
        self.flush_submits();
        let msg = ToAgent::Cancel(CancelMsg {
            sweep_id: self.sweep_id(),
            tasks: vec![task_ref(key)],
            unstarted_only,
        });
        self.send(msg);
    }

    /// Acknowledge events to the agent: the sweep sends these once the changes they made are
    /// written (see `Report::Acks`).
    pub fn handle_acks(&mut self, acks: Vec<EventRef>) {
        self.send(ToAgent::Ack(AckMsg { acks }));
    }

    /// The run is over: send what is batched.
    pub fn handle_shutdown(&mut self) {
        self.flush_submits();
    }

    // ---- the connection -----------------------------------------------------------------------

    /// The agent welcomed this coordinator. `note` says what connected ("connected to … (N
    /// slots)"); `warning` is added after it (a work directory other than configured).
    pub fn handle_up(
        &mut self,
        now: u64,
        slots: u32,
        rtt_ms: u32,
        note: String,
        warning: Option<String>,
    ) {
        self.connected = true;
        self.last_down = None;
        self.grace_deadline = None;
        // What was given up on runs elsewhere now: the agent stops it (one it never started
        // is dropped; one it does not hold is ignored).
        if !self.abandoned.is_empty() {
            let mut tasks: Vec<TaskRef> = self.abandoned.drain(..).map(task_ref).collect();
            tasks.sort();
            let msg = ToAgent::Cancel(CancelMsg {
                sweep_id: self.sweep_id(),
                tasks,
                unstarted_only: false,
            });
            self.send(msg);
        }
        // After an outage the agent may have restarted and not kept an attempt it had only just
        // accepted (or never got): ask about every attempt whose end has not arrived; those it
        // does not hold come back as unknown and run again.
        if self.outage > 0 {
            let mut again: Vec<(TaskKey, bool)> = self
                .attempts
                .iter()
                .filter(|(_, a)| a.exit.is_none())
                .filter_map(|(k, a)| Some((*k, a.cancel?)))
                .collect();
            again.sort();
            for (key, unstarted_only) in again {
                self.send_cancel(key, unstarted_only);
            }
            let mut keys: Vec<TaskKey> = self
                .attempts
                .iter()
                .filter(|(_, a)| a.exit.is_none())
                .map(|(k, _)| *k)
                .collect();
            keys.sort();
            if !keys.is_empty() {
                self.flush_submits();
                let msg = ToAgent::Attach(AttachMsg {
                    sweep_id: self.sweep_id(),
                    tasks: keys.into_iter().map(task_ref).collect(),
                });
                self.send(msg);
            }
        }
        // Files in flight when the connection dropped will not come on their own: ask again
        // for what each ended attempt still awaits. Only the paths still awaited: a file
        // received twice would be refused as not offered any more.
        self.offers.touch(now);
        let refetch: Vec<(TaskKey, Vec<String>)> = self
            .offers
            .keys()
            .into_iter()
            .filter(|k| self.attempts.get(k).is_some_and(|a| a.exit.is_some()))
            .map(|k| (k, self.offers.paths(k)))
            .collect();
        for (key, paths) in refetch {
            // Streams of the old connection are gone: claimable again.
            for path in &paths {
                self.offers.release(key, path);
            }
            let msg = ToAgent::FetchResults(FetchMsg {
                sweep_id: self.sweep_id(),
                task: task_ref(key),
                paths,
            });
            self.send(msg);
        }
        let mut note = note;
        if self.low_disk {
            note.push_str(", free disk still low: no new work");
        }
        // Tasks run anyway (in the agent's directory); the user learns why their files are not
        // where they configured.
        if let Some(warning) = warning {
            note.push_str(&format!("; warning: {warning}"));
        }
        self.status(LinkStatus {
            up: !self.low_disk,
            slots: Some(slots as usize),
            note,
            rtt_ms: Some(rtt_ms),
            ..LinkStatus::default()
        });
    }

    /// The connection dropped, or dialling failed.
    pub fn handle_down(&mut self, now: u64, why: String) {
        // The same failure again (a retry that found the agent still unreachable) is said once.
        let repeated = !self.connected && self.last_down.as_deref() == Some(why.as_str());
        self.last_down = Some(why.clone());
        if repeated {
            return;
        }
        if self.connected || self.outage == 0 {
            // A new outage: its tasks get `grace` to come back before they are lost.
            self.outage += 1;
            self.grace_deadline = Some(now.saturating_add(self.setup.grace.as_millis() as u64));
        }
        self.connected = false;
        self.status(LinkStatus {
            keep_waiting: self.setup.keep_waiting,
            note: why,
            ..LinkStatus::default()
        });
    }

    /// The agent or this coordinator refused the other (fingerprint, authorization, protocol):
    /// dialling again cannot help, and nothing more will come from it.
    pub fn handle_refused(&mut self, why: String) {
        self.connected = false;
        // Whatever it held runs elsewhere.
        self.drop_all();
        self.status(LinkStatus {
            lost: true,
            refused: true,
            note: why,
            ..LinkStatus::default()
        });
    }

    /// Time passed: an outage past its grace hands the attempts back; result files that made
    /// no progress for `RESULT_STALL` while connected end their attempts failed.
    pub fn handle_tick(&mut self, now: u64) {
        if let Some(deadline) = self.grace_deadline {
            if now >= deadline {
                self.grace_deadline = None;
                if !self.connected {
                    self.drop_all();
                    let grace = self.setup.grace;
                    self.status(LinkStatus {
                        lost: true,
                        note: format!("unreachable for {grace:?}: its tasks run again elsewhere"),
                        ..LinkStatus::default()
                    });
                }
            }
        }
        self.check_stalled(now);
    }

    /// Ends the attempts whose result files made no progress for `RESULT_STALL` while the agent
    /// was connected (a stream that never came, a header that never arrived).
    fn check_stalled(&mut self, now: u64) {
        if !self.connected || !self.offers.stalled(now, RESULT_STALL_MS) {
            return;
        }
        for key in self.offers.keys() {
            let paths = self.offers.paths(key);
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
            self.offers.forget(key);
            self.maybe_finish(key);
        }
    }

    // ---- result files -------------------------------------------------------------------------

    /// A file stream announces `path` of attempt `key` with this size and hash: accepted only if
    /// the attempt offered exactly that and no other stream carries it now (nothing is written
    /// before this agreed).
    pub fn handle_file_claim(
        &mut self,
        now: u64,
        key: TaskKey,
        path: &str,
        size: u64,
        sha256: &str,
    ) -> Result<(), Refusal> {
        self.offers.claim(key, path, size, sha256, now)
    }

    /// Bytes of a claimed file arrived at `at` (reported by the shell at most as late as its
    /// next tick).
    pub fn handle_file_progress(&mut self, at: u64) {
        self.offers.progress(at);
    }

    /// A result file of the attempt arrived intact.
    pub fn handle_file_arrived(&mut self, key: TaskKey, path: &str) {
        let all_in = self.offers.settle(key, path);
        if let Some(attempt) = self.attempts.get(&key) {
            if all_in && attempt.transfer_failure.is_none() {
                let msg = ToAgent::ResultsDone(ResultsDoneMsg {
                    sweep_id: self.sweep_id(),
                    task: task_ref(key),
                });
                self.send(msg);
            }
        }
        self.maybe_finish(key);
    }

    /// A result file of the attempt will not arrive intact: stop waiting for it, remember why
    /// (the first reason), and end the attempt once nothing else is outstanding. The agent is not
    /// told its results are done, so it keeps them.
    pub fn handle_file_failed(&mut self, key: TaskKey, path: &str, why: String) {
        self.offers.settle(key, path);
        if let Some(attempt) = self.attempts.get_mut(&key) {
            attempt.transfer_failure.get_or_insert(why.clone());
            self.log(
                Level::Warn,
                Some(key.index),
                format!("result file not received: {why}"),
            );
        }
        self.maybe_finish(key);
    }

    /// A claimed file's stream broke off with the connection: asked for again when it is back
    /// (`handle_up`).
    pub fn handle_file_interrupted(&mut self, key: TaskKey, path: &str) {
        self.offers.release(key, path);
    }

    // ---- the agent's messages -----------------------------------------------------------------

    pub fn handle_frame(&mut self, now: u64, msg: FromAgent) {
        match msg {
            FromAgent::Events(batch) => {
                let mut acks = Vec::with_capacity(batch.events.len());
                let mut gap = false;
                for event in batch.events {
                    // Another sweep's events are for its own coordinator: acknowledging them
                    // here would make the agent forget what that one has not seen.
                    if event.sweep_id.as_str() != self.setup.sweep_id {
                        continue;
                    }
                    let event_ref = event.event_ref();
                    let key = key_of(event.task);
                    match self.apply_event(now, key, event.seq.0, event.kind) {
                        Applied::Yes => acks.push(event_ref),
                        Applied::Gap => {
                            self.log(
                                Level::Warn,
                                Some(key.index),
                                format!(
                                    "event {} out of sequence: protocol error, reconnecting",
                                    event_ref.seq.0
                                ),
                            );
                            gap = true;
                        }
                    }
                }
                if !acks.is_empty() {
                    // Through the sweep: acknowledged once their changes are written.
                    self.reports.push_back(Report::Acks(acks));
                }
                if gap {
                    self.reconnect = true;
                }
            }
            FromAgent::Error(e) => {
                self.log(
                    Level::Warn,
                    None,
                    format!(
                        "agent reported an error: {}",
                        hsm_protocol::display_safe(&e.message)
                    ),
                );
                // An offered file it cannot send: the attempt is not waited on for it.
                if let Some(file) = e
                    .file
                    .filter(|f| f.sweep_id.as_str() == self.setup.sweep_id)
                {
                    let key = key_of(file.task);
                    if self.offers.paths(key).contains(&file.path) {
                        let why = format!("{} could not send it: {:?}", self.setup.name, e.message);
                        self.handle_file_failed(key, &file.path, why);
                    }
                }
            }
            FromAgent::Heartbeat(health) => {
                if health.notice.is_none() {
                    // Cleared on the agent: a notice that comes back later is news again.
                    self.notice = None;
                } else if health.notice != self.notice {
                    self.notice = health.notice.clone();
                    let text = hsm_protocol::display_safe(health.notice.as_deref().unwrap_or(""));
                    self.log(Level::Warn, None, format!("{}: {text}", self.setup.name));
                }
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
                    self.status(LinkStatus {
                        up: !self.low_disk,
                        note,
                        ..LinkStatus::default()
                    });
                }
            }
            // A sweep's session never asks for a clean-up (`agent clean` has its own).
            FromAgent::Pong(_) | FromAgent::Cleaned(_) => {}
            FromAgent::Attached(attached) => {
                if attached.sweep_id.as_str() != self.setup.sweep_id {
                    return;
                }
                for task in attached.unknown {
                    let key = key_of(task);
                    if self.attempts.contains_key(&key) {
                        let reason = format!(
                            "unknown to {} when taken up again (never received, or forgotten \
                             after it ended)",
                            self.setup.name
                        );
                        self.finish(key, ExitKind::Lost { reason });
                    }
                }
            }
        }
    }

    fn finish(&mut self, key: TaskKey, exit: ExitKind) {
        let (usage, at_ms) = self
            .drop_attempt(key)
            .map_or((None, None), |a| (a.usage, a.exited_at_ms));
        self.reports.push_back(Report::Finished {
            key,
            exit,
            usage,
            at_ms,
        });
    }

    /// Reports the attempt once its exit is known and no result file is outstanding.
    fn maybe_finish(&mut self, key: TaskKey) {
        let Some(attempt) = self.attempts.get(&key) else {
            return;
        };
        if self.offers.awaiting(key) > 0 {
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

    /// Applies one event of an attempt. Events of an attempt come numbered 1, 2, 3…; one that
    /// skips a number (`Gap`) is a protocol error: it is not applied or acknowledged, and the
    /// attempt ends failed.
    fn apply_event(&mut self, now: u64, key: TaskKey, seq: u64, kind: EventKind) -> Applied {
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
            let reason = format!(
                "protocol error: {} sent event {seq} of this attempt after event {after}",
                self.setup.name
            );
            self.finish(
                key,
                ExitKind::Failure {
                    exit_code: None,
                    reason,
                },
            );
            return Applied::Gap;
        }
        attempt.last_seq = seq;
        match kind {
            EventKind::Submitted { job_id, script } => {
                self.log(
                    Level::Debug,
                    Some(key.index),
                    format!(
                        "submitted to the agent's scheduler as {}",
                        hsm_protocol::display_safe(&job_id)
                    ),
                );
                if let Some(script) = script {
                    // Kept next to the scripts of in-process scheduler sources. A name that is
                    // not one plain file name is the peer's error: logged, not written.
                    if plain_file_name(&script.name) {
                        self.writes.push_back(Write::JobScript {
                            name: script.name,
                            text: script.text,
                        });
                    } else {
                        self.log(
                            Level::Warn,
                            Some(key.index),
                            format!(
                                "agent sent a job script with an unusable name {:?}; not saved",
                                script.name
                            ),
                        );
                    }
                }
                self.reports.push_back(Report::Submitted { key, job_id });
            }
            EventKind::Started { pid, at_ms } => self.reports.push_back(Report::Started {
                key,
                pid: Some(pid),
                at_ms,
            }),
            EventKind::Output { stream, data } => self.writes.push_back(Write::Append {
                key,
                stream,
                data: data.0,
            }),
            EventKind::Exited {
                outcome,
                usage,
                at_ms,
            } => {
                attempt.exit = Some(exit_of(outcome));
                attempt.usage = usage.map(usage_of);
                attempt.exited_at_ms = Some(at_ms);
            }
            EventKind::ResultOffer { files } => {
                if std::mem::replace(&mut attempt.offer_seen, true) {
                    return Applied::Yes;
                }
                let problems = self.offers.offer(key, files, now);
                let awaiting = self.offers.awaiting(key);
                if let Some(first) = problems.first() {
                    let more = match problems.len() {
                        1 => String::new(),
                        n => format!(" (and {} more)", n - 1),
                    };
                    let why = format!("{first}{more}");
                    self.log(
                        Level::Warn,
                        Some(key.index),
                        format!("unusable result offer: {problems:?}"),
                    );
                    if let Some(attempt) = self.attempts.get_mut(&key) {
                        attempt.transfer_failure.get_or_insert(why);
                    }
                }
                if awaiting == 0 {
                    self.maybe_finish(key);
                } else {
                    let msg = ToAgent::FetchResults(FetchMsg {
                        sweep_id: self.sweep_id(),
                        task: task_ref(key),
                        paths: Vec::new(),
                    });
                    self.send(msg);
                }
            }
        }
        Applied::Yes
    }
}
