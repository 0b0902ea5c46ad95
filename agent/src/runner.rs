//! Task execution for the agent daemon: takes submitted task attempts, runs at most `slots` of them
//! at once through the process backend in `<work_dir>/<sweep_id>/tasks/task_NNN/`, turns what
//! happens into numbered task events, keeps every event until the coordinator acknowledges it, and
//! knows which result files each finished attempt offers.
//!
//! Why it is shaped like this:
//!
//! * One `Mutex<State>` holds everything (never held across an `.await`), so the order events are
//!   appended in is the order they get their ledger position (`gen`) and their `seq`.
//! * Events survive a dropped connection (they are replayed to the next one) and, when the agent
//!   has a state directory, a restart: every change is also recorded in the durable ledger
//!   (`ledger.rs`) and an event is sent only once it is durable there. After a restart the
//!   runner rebuilds its state from the ledger: queued tasks run, scheduler jobs are followed
//!   again, finished attempts keep their results, and process tasks that were running are ended
//!   (their process groups, found by the `HSM_AGENT_TASK` mark in their environment) and reported
//!   `Lost`, because nobody can know how they would have ended.
//! * Output is read from the task's `stdout.log`/`stderr.log`, never from pipes: the files are the
//!   buffer. Each attempt may have at most [`OUTPUT_WINDOW`] bytes of unacknowledged output in the
//!   ledger; beyond that the tailer stops reading until acknowledgements free room, so a task that
//!   prints gigabytes to a coordinator that lags (or is away) costs disk, not memory. `Exited` is
//!   only emitted once the whole output has been read, to keep the documented event order.
//! * Sessions (connections) do not own events; each keeps a cursor into the ledger. A new session
//!   starts at the beginning, which is the replay of everything unacknowledged.

use crate::hpc::script::Scheduler;
use crate::ledger::{self, Key, Ledger, Op, StoredKind, StoredPhase, StoredTask};
use crate::owners::{self, Decision};
use crate::process::{Outcome, ProcessBackend, ProcessEvent, TaskKey, TaskLaunch};
use crate::scheduler::{ElementRef, HpcLaunch, PendingElement, SchedulerBackend};
use hsm_protocol::{
    check_relative_path, display_safe, Bytes, CancelMsg, EventKind, EventRef, FetchMsg, FileOffer,
    JobScriptMsg, OutcomeMsg, ResultsDoneMsg, Seq, Stream, SubmitMsg, SweepId, SweepTaskRef,
    TaskEventMsg, TaskRef, TemplateMsg, UsageMsg, AGENT_OUTPUT_DIR,
};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch, Notify};

mod sweeps;

/// Largest `Output` event payload.
pub const OUTPUT_CHUNK: usize = 64 * 1024;
/// Unacknowledged output bytes one attempt may hold in memory before its tailer pauses.
pub const OUTPUT_WINDOW: usize = 1024 * 1024;
/// How often a running task's log files are checked for new bytes when nothing else wakes the
/// tailer.
const TAIL_EVERY: Duration = Duration::from_millis(150);
/// How long a restarted agent keeps asking a failing scheduler for a job whose submission the
/// restart cut short (1 s apart, doubling to 60 s), before its tasks are reported lost.
const FIND_FOR: Duration = Duration::from_secs(600);
/// Longest a restarted agent waits for a submit command its previous run left running.
const SUBMIT_WAIT: Duration = Duration::from_secs(120);

/// A task whose submission a restart cut short: its id, the job name and place it went out
/// under, its directory.
type Unsubmitted = (u64, PendingElement, PathBuf);
/// Total path text a `ResultOffer` may carry, so the event always fits in one frame (MAX_FRAME is
/// 16 MiB); files beyond it are left out and logged.
const MAX_OFFER_PATH_BYTES: usize = 4 * 1024 * 1024;
/// Directory depth under `results/` that is scanned; deeper trees are a sign of a loop or a bug.
/// The coordinator refuses paths of more components, so nothing deeper is offered (`results/`
/// and the file name are the other two).
const MAX_RESULTS_DEPTH: usize = hsm_protocol::MAX_PATH_COMPONENTS - 2;
/// The environment variable that marks a process task as this agent's (`<task dir>#<attempt>`),
/// so a restarted agent can end the ones it can no longer follow.
pub const TASK_MARK: &str = "HSM_AGENT_TASK";

/// Handle on the agent's task runner; cheap to clone, shared by every session.
#[derive(Clone)]
pub struct Runner {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    backend: ProcessBackend,
    /// Tasks whose template asks for a batch scheduler (Slurm/PBS) go here instead.
    scheduler: SchedulerBackend,
    work_dir: PathBuf,
    slots: usize,
    /// The first ledger position not yet durable (sessions send only what is below it), sent
    /// whenever it moves; sessions wait on it.
    appended: Arc<watch::Sender<u64>>,
    durable: Arc<AtomicU64>,
    /// Whether events wait for the disk ledger before they are sent.
    on_disk: bool,
    /// Keep result files after the coordinator has them (`--keep-results`).
    keep_results: bool,
}

/// How the runner is set up (`hsm-agent serve` flags).
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    pub slots: u32,
    /// How often Slurm/PBS jobs are checked.
    pub poll_every: Duration,
    /// Where the durable ledger lives; `None`: memory only.
    pub state_dir: Option<PathBuf>,
    /// Keep result files after the coordinator has them.
    pub keep_results: bool,
}

#[derive(Default)]
struct State {
    /// Internal ids; also the backend's `TaskKey::index`, because the backend's key has no sweep.
    next_id: u64,
    tasks: HashMap<u64, Record>,
    by_ref: HashMap<SweepTaskRef, u64>,
    /// Tasks (by sweep and index, any attempt) that have not finished: they own their task
    /// directory, so another attempt of the same task must wait. A map, not a scan, so a
    /// 10,000-task submission stays linear.
    active: HashMap<(SweepId, u64), u64>,
    /// A newer attempt of an active task, waiting for the older one to end (it was stopped).
    parked: HashMap<(SweepId, u64), u64>,
    /// Ids waiting for a slot, in submission order; entries whose record is no longer `Queued`
    /// (cancelled) are skipped when popped.
    queue: VecDeque<u64>,
    /// Ids of scheduler tasks waiting to be handed to the scheduler backend: they use no slot
    /// (the scheduler decides when they run), so they never wait behind process tasks.
    hpc_queue: VecDeque<u64>,
    /// Tasks launched and not yet exited (slots in use).
    busy: usize,
    /// Queued attempts of sweeps no coordinator has claimed since they were queued (this agent
    /// restarted, or that sweep's coordinator went away): they start only once a coordinator
    /// of their sweep confirms them (`Attach`, or the same attempt submitted again) — it may
    /// have taken them back and run them elsewhere meanwhile — or once their sweep has been
    /// unclaimed for `--coordinator-lost-after` (`release_unclaimed`). By sweep, in
    /// submission order.
    unconfirmed: HashMap<SweepId, BTreeSet<u64>>,
    /// Coordinator sessions that sent a sweep's `Submit` or `Attach` and are still connected.
    claims: HashMap<SweepId, usize>,
    /// Since when a sweep with unconfirmed attempts has had no claiming session.
    unclaimed_since: HashMap<SweepId, std::time::Instant>,
    /// Unacknowledged events by append position.
    ledger: BTreeMap<u64, Entry>,
    ledger_index: HashMap<EventRef, u64>,
    next_gen: u64,
    /// The disk ledger every change is also recorded in, when the agent has one.
    disk: Option<Ledger>,
    /// Each sweep's owner: the fingerprint of the coordinator identity that submitted it
    /// (`owners.rs`). Kept until the sweep is forgotten, like the ledger's `sweeps` table.
    owners: HashMap<SweepId, Arc<str>>,
    /// When a coordinator last addressed each sweep (ms since the Unix epoch), and the last
    /// such time written to the ledger (`runner/sweeps.rs`).
    seen: HashMap<SweepId, i64>,
    seen_written: HashMap<SweepId, i64>,
}

struct Entry {
    task: u64,
    event: TaskEventMsg,
    output_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Queued,
    /// Popped from the queue, being prepared and spawned.
    Launching,
    Running,
    /// The process ended; its remaining output is being read before `Exited` is reported.
    Draining,
    /// `ResultOffer` was emitted.
    Finished,
}

struct Record {
    sweep_id: SweepId,
    task: TaskRef,
    dir: PathBuf,
    template: Arc<TemplateMsg>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    phase: Phase,
    cancel_requested: bool,
    next_seq: u64,
    unacked_output: usize,
    unacked_events: usize,
    /// Wakes the tailer (acknowledged output, process exit).
    wake: Arc<Notify>,
    /// How it ended, as reported (`Lost` has no process outcome).
    exit: Option<(OutcomeMsg, SystemTime)>,
    /// What it used, when measured (sent with `Exited`, kept in the ledger with the exit).
    usage: Option<UsageMsg>,
    offered: Vec<FileOffer>,
    results_done: bool,
    /// Bytes of stdout and stderr turned into `Output` events so far.
    output: [u64; 2],
}

impl Record {
    fn key(&self) -> SweepTaskRef {
        SweepTaskRef {
            sweep_id: self.sweep_id.clone(),
            task: self.task,
        }
    }

    fn ledger_key(&self) -> Key {
        (
            self.sweep_id.as_str().to_string(),
            self.task.index.0,
            self.task.attempt.0,
        )
    }
}

/// A file to send for a `FetchResults`: where it is and what was offered.
#[derive(Debug, Clone)]
pub struct FetchItem {
    pub path: PathBuf,
    pub offer: FileOffer,
}

/// What a `FetchResults` resolved to.
#[derive(Debug, Clone)]
pub struct FetchPlan {
    pub task_dir: PathBuf,
    pub files: Vec<FetchItem>,
}

/// True when `id` is safe as one directory name: the rule the coordinator uses for sweep ids.
pub fn valid_sweep_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

/// `task_007`: at least three digits, like the coordinator's layout.
pub fn task_dir_name(index: u64) -> String {
    format!("task_{index:03}")
}

fn epoch_ms(at: SystemTime) -> i64 {
    match at.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

fn outcome_msg(outcome: &Outcome) -> OutcomeMsg {
    match outcome {
        Outcome::Exited(code) => OutcomeMsg::Exited { code: *code },
        Outcome::Signaled(signal) => OutcomeMsg::Signaled { signal: *signal },
        Outcome::TimedOut => OutcomeMsg::TimedOut,
        Outcome::Cancelled => OutcomeMsg::Cancelled,
        Outcome::Failed(reason) => OutcomeMsg::Failed {
            reason: reason.clone(),
        },
        Outcome::SpawnFailed(message) => OutcomeMsg::SpawnFailed {
            message: message.clone(),
        },
    }
}

impl Runner {
    /// Starts the runner (must be called inside a tokio runtime): `work_dir` must exist. With a
    /// `state_dir`, changes are recorded in its durable ledger and what the ledger held from an
    /// earlier run is taken up again (see the module notes).
    pub fn start(work_dir: &Path, options: RunnerOptions) -> std::io::Result<Runner> {
        let RunnerOptions {
            slots,
            poll_every,
            state_dir,
            keep_results,
        } = options;
        let work_dir = std::fs::canonicalize(work_dir)?;
        let (backend, events) = ProcessBackend::new();
        let (scheduler, scheduler_events) = SchedulerBackend::new(poll_every);
        let appended = Arc::new(watch::channel(0).0);
        let durable = Arc::new(AtomicU64::new(0));
        let (disk, recovered) = match state_dir.as_deref() {
            Some(dir) => {
                let (appended, durable) = (Arc::clone(&appended), Arc::clone(&durable));
                let (ledger, recovered) = Ledger::open(
                    dir,
                    Box::new(move |gen| {
                        durable.fetch_max(gen, Ordering::SeqCst);
                        appended.send_replace(gen);
                    }),
                )
                .map_err(std::io::Error::other)?;
                (Some(ledger), recovered)
            }
            None => (None, ledger::Recovered::default()),
        };
        let runner = Runner {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    disk: disk.clone(),
                    ..State::default()
                }),
                backend,
                scheduler,
                work_dir,
                slots: slots.max(1) as usize,
                appended,
                durable,
                on_disk: disk.is_some(),
                keep_results,
            }),
        };
        tokio::spawn(runner.clone().process_events(events));
        tokio::spawn(runner.clone().process_events(scheduler_events));
        runner.recover(recovered);
        Ok(runner)
    }

    /// Takes up what the ledger held: queued tasks are queued again, scheduler jobs followed
    /// again, ended tasks finish reporting, finished ones wait for their results to be fetched,
    /// and process tasks that were running are ended and reported lost.
    fn recover(&self, mut recovered: ledger::Recovered) {
        // No process task of an earlier run of this agent can be followed now (they were not
        // its children): every one still alive is ended, found by the mark in its environment
        // under this work directory. That includes one spawned in the moment before its
        // acceptance reached the ledger, which the ledger cannot name.
        if self.shared.on_disk {
            let prefix = format!("{TASK_MARK}={}/", self.shared.work_dir.display());
            let killed = crate::process::kill_groups_where(|environ| {
                environ.iter().any(|var| var.starts_with(prefix.as_bytes()))
            });
            if killed > 0 {
                tracing::warn!(killed, "ended task processes the previous run left behind");
            }
        }
        {
            let mut state = self.lock();
            for (sweep, owner) in std::mem::take(&mut recovered.owners) {
                state
                    .owners
                    .insert(SweepId::from(sweep.as_str()), owner.into());
            }
            for (sweep, at) in std::mem::take(&mut recovered.seen) {
                state.seen.insert(SweepId::from(sweep.as_str()), at);
                state.seen_written.insert(SweepId::from(sweep.as_str()), at);
            }
        }
        if recovered.tasks.is_empty() {
            self.date_unseen_sweeps();
            return;
        }
        let mut lost = Vec::new();
        let mut tails = Vec::new();
        let mut adopt = Vec::new();
        let mut find = Vec::new();
        let counts = {
            let mut state = self.lock();
            let mut ids: HashMap<Key, u64> = HashMap::new();
            for stored in recovered.tasks {
                let StoredTask {
                    key,
                    dir,
                    template,
                    args,
                    env,
                    phase,
                    cancel_requested,
                    next_seq,
                    output,
                    exit,
                    usage,
                    offered,
                    results_done,
                    element,
                } = stored;
                let id = state.next_id;
                state.next_id += 1;
                let sweep_id = SweepId::from(key.0.as_str());
                let task = TaskRef {
                    index: hsm_protocol::TaskIndex(key.1),
                    attempt: hsm_protocol::Attempt(key.2),
                };
                let hpc = template.hpc.is_some();
                let exit = exit.map(|(msg, at_ms)| (msg, time_of(at_ms)));
                let mut record = Record {
                    sweep_id: sweep_id.clone(),
                    task,
                    dir: dir.clone(),
                    template,
                    args,
                    env,
                    phase: Phase::Queued,
                    cancel_requested,
                    next_seq,
                    unacked_output: 0,
                    unacked_events: 0,
                    wake: Arc::new(Notify::new()),
                    exit,
                    usage,
                    offered,
                    results_done,
                    output,
                };
                let adoptable = element.as_ref().and_then(ElementRef::from_stored);
                let unsubmitted = element.as_ref().and_then(PendingElement::from_stored);
                let active_key = (sweep_id.clone(), key.1);
                let mut own_dir = true;
                match phase {
                    StoredPhase::Finished => {
                        record.phase = Phase::Finished;
                        own_dir = false;
                    }
                    StoredPhase::Queued => {}
                    StoredPhase::Draining if record.exit.is_some() => {
                        record.phase = Phase::Draining;
                        tails.push((id, Arc::clone(&record.wake), dir.clone(), output));
                    }
                    StoredPhase::Launching | StoredPhase::Running if hpc && adoptable.is_some() => {
                        let started = phase == StoredPhase::Running;
                        record.phase = if started {
                            Phase::Running
                        } else {
                            Phase::Launching
                        };
                        if started {
                            tails.push((id, Arc::clone(&record.wake), dir.clone(), output));
                        }
                        if let Some(element) = adoptable {
                            adopt.push((id, element, dir.clone(), started, cancel_requested));
                        }
                    }
                    // Being submitted when the agent stopped: the job may exist; it is looked
                    // up by the name it went out under.
                    // (Running: it was settled from the wrapper's records after a restart and
                    // the agent stopped again before the end was written.)
                    StoredPhase::Launching | StoredPhase::Running
                        if hpc && unsubmitted.is_some() =>
                    {
                        record.phase = Phase::Launching;
                        if let Some(pending) = unsubmitted {
                            find.push((id, pending, dir.clone()));
                        }
                    }
                    // Spawned (or being spawned, or handed to a scheduler without a job id we
                    // kept): its outcome cannot be known.
                    _ => {
                        record.phase = Phase::Launching;
                        lost.push(id);
                    }
                }
                if own_dir {
                    // Attempts are recovered in the order they were accepted: an older attempt
                    // of the same task comes first and a newer one waits for it (parked).
                    match state.active.entry(active_key.clone()) {
                        std::collections::hash_map::Entry::Occupied(_) => {
                            state.parked.insert(active_key, id);
                        }
                        std::collections::hash_map::Entry::Vacant(slot) => {
                            slot.insert(id);
                            // Not started before the restart: the coordinator may have taken it
                            // back and run it elsewhere meanwhile. It waits for a coordinator
                            // of its sweep to confirm it.
                            if record.phase == Phase::Queued {
                                state
                                    .unconfirmed
                                    .entry(sweep_id.clone())
                                    .or_default()
                                    .insert(id);
                                state
                                    .unclaimed_since
                                    .entry(sweep_id.clone())
                                    .or_insert_with(std::time::Instant::now);
                            }
                        }
                    }
                }
                state.by_ref.insert(record.key(), id);
                state.tasks.insert(id, record);
                ids.insert(key, id);
            }
            let mut n_events = 0;
            for event in recovered.events {
                let Some(&id) = ids.get(&event.key) else {
                    continue;
                };
                let Some(record) = state.tasks.get_mut(&id) else {
                    continue;
                };
                let (kind, bytes) = match event.kind {
                    StoredKind::Event(kind) => (kind, 0),
                    StoredKind::Output {
                        stream,
                        offset,
                        len,
                    } => {
                        let data = read_log_range(&record.dir, stream, offset, len);
                        let n = data.len();
                        (
                            EventKind::Output {
                                stream,
                                data: Bytes(data),
                            },
                            n,
                        )
                    }
                };
                record.unacked_events += 1;
                record.unacked_output += bytes;
                let msg = TaskEventMsg {
                    sweep_id: record.sweep_id.clone(),
                    task: record.task,
                    seq: Seq(event.seq),
                    kind,
                };
                let gen = state.next_gen;
                state.next_gen += 1;
                state.ledger_index.insert(msg.event_ref(), gen);
                state.ledger.insert(
                    gen,
                    Entry {
                        task: id,
                        event: msg,
                        output_bytes: bytes,
                    },
                );
                n_events += 1;
            }
            // Finished attempts with nothing left to report or fetch are done with.
            let all: Vec<u64> = ids.values().copied().collect();
            for id in all {
                state.maybe_forget(id);
            }
            // Recovered events are durable already.
            let next = state.next_gen;
            self.shared.durable.store(next, Ordering::SeqCst);
            (state.tasks.len(), n_events)
        };
        self.shared
            .appended
            .send_replace(self.shared.durable.load(Ordering::SeqCst));
        tracing::info!(
            tasks = counts.0,
            events = counts.1,
            lost = lost.len(),
            "took up the ledger of the previous run"
        );
        self.date_unseen_sweeps();
        let now = SystemTime::now();
        for id in lost {
            self.finish_unstarted_msg(id, OutcomeMsg::Lost, now);
        }
        for (id, element, dir, started, cancel) in adopt {
            self.shared
                .scheduler
                .adopt(backend_key(id), element, dir, started, cancel);
        }
        if !find.is_empty() {
            // Taken before this run submits anything itself: the sbatch/qsub a kill -9 left
            // running may still be creating a job.
            let in_flight = crate::scheduler::submissions_in_flight(&self.shared.work_dir);
            tokio::spawn(self.clone().find_submitted(find, in_flight));
        }
        for (id, wake, dir, output) in tails {
            tokio::spawn(self.clone().tail(
                id,
                wake,
                dir.join("stdout.log"),
                dir.join("stderr.log"),
                output,
            ));
        }
        self.fill_slots();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent; a panic elsewhere must not stop
        // the agent from reporting.
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Processes running now (the heartbeat's `running`).
    pub fn running(&self) -> u32 {
        u32::try_from(self.shared.backend.running() + self.shared.scheduler.active())
            .unwrap_or(u32::MAX)
    }

    /// Attempts the agent holds that have not reported `Exited` yet: queued, running, or running
    /// out their output. The coordinator re-attaches these after a reconnect instead of
    /// re-running them.
    pub fn held(&self) -> Vec<SweepTaskRef> {
        let state = self.lock();
        let mut held: Vec<SweepTaskRef> = state
            .tasks
            .values()
            .filter(|r| r.phase != Phase::Finished)
            .map(Record::key)
            .collect();
        held.sort();
        held
    }

    /// Whether coordinator `who` (its fingerprint) may address `sweep`, by the rule of
    /// `owners.rs`; an unowned sweep is bound to it when the rule says so (and the binding
    /// recorded in the ledger). `Bind` tells the session that a sweep the agent already held
    /// became its own, so its earlier events are now this coordinator's to see.
    pub fn sweep_access(&self, sweep: &SweepId, who: &str, submit: bool) -> Decision {
        let mut state = self.lock();
        let owner = state.owners.get(sweep).cloned();
        let holds = owner.is_none() && state.tasks.values().any(|r| &r.sweep_id == sweep);
        let decision = owners::decide(owner.as_deref(), who, submit, holds);
        if decision == Decision::Bind {
            state.owners.insert(sweep.clone(), who.into());
            state.log(Op::Owner(sweep.as_str().to_string(), who.to_string()));
            if holds {
                tracing::info!(
                    sweep = %display_safe(sweep.as_str()),
                    coordinator = %who,
                    "a sweep from before owners were kept now belongs to the coordinator that took it up"
                );
            } else {
                return Decision::Allow;
            }
        }
        decision
    }

    /// Attempts of sweeps `who` owns that have not reported `Exited` yet (see [`Runner::held`]).
    pub fn held_by(&self, who: &str) -> Vec<SweepTaskRef> {
        let state = self.lock();
        let mut held: Vec<SweepTaskRef> = state
            .tasks
            .values()
            .filter(|r| r.phase != Phase::Finished && state.owned_by(&r.sweep_id, who))
            .map(Record::key)
            .collect();
        held.sort();
        held
    }

    /// A coordinator session sent a `Submit` or `Attach` for `sweep`: while it is connected,
    /// that sweep's queued attempts start as slots free up.
    fn claim(&self, sweep: &SweepId) {
        {
            let mut state = self.lock();
            *state.claims.entry(sweep.clone()).or_default() += 1;
            state.unclaimed_since.remove(sweep);
        }
        self.seen(sweep, true);
    }

    /// A session that claimed `sweep` ended. With no other session claiming it, its queued
    /// attempts wait to be confirmed: that coordinator may be taking them back to run elsewhere
    /// (it does when it loses the connection), and one that died may never come back for them.
    fn unclaim(&self, sweep: &SweepId) {
        // Retention counts from the end of the last session that claimed it.
        self.seen(sweep, true);
        let mut state = self.lock();
        let Some(count) = state.claims.get_mut(sweep) else {
            return;
        };
        *count -= 1;
        if *count > 0 {
            return;
        }
        state.claims.remove(sweep);
        let waiting: Vec<u64> = state
            .queue
            .iter()
            .chain(&state.hpc_queue)
            .copied()
            .filter(|id| {
                state
                    .tasks
                    .get(id)
                    .is_some_and(|r| &r.sweep_id == sweep && r.phase == Phase::Queued)
            })
            .collect();
        if waiting.is_empty() {
            return;
        }
        let held: HashSet<u64> = waiting.iter().copied().collect();
        state.queue.retain(|id| !held.contains(id));
        state.hpc_queue.retain(|id| !held.contains(id));
        tracing::info!(
            sweep = %display_safe(sweep.as_str()),
            tasks = waiting.len(),
            "its coordinator is gone: queued tasks wait until it confirms them"
        );
        state
            .unconfirmed
            .entry(sweep.clone())
            .or_default()
            .extend(waiting);
        state
            .unclaimed_since
            .insert(sweep.clone(), std::time::Instant::now());
    }

    /// Starts the unconfirmed attempts of every sweep no coordinator has claimed for `after`
    /// (`--on-coordinator-lost keep-running`: they run, and report when a coordinator comes).
    /// Returns how many were released.
    pub fn release_unclaimed(&self, after: Duration) -> usize {
        let released = {
            let mut state = self.lock();
            let stale: Vec<SweepId> = state
                .unclaimed_since
                .iter()
                .filter(|(_, since)| since.elapsed() >= after)
                .map(|(sweep, _)| sweep.clone())
                .collect();
            let mut released = 0;
            for sweep in stale {
                state.unclaimed_since.remove(&sweep);
                for id in state.unconfirmed.remove(&sweep).unwrap_or_default() {
                    released += usize::from(state.enqueue(id));
                }
            }
            released
        };
        if released > 0 {
            tracing::warn!(
                tasks = released,
                ?after,
                "no coordinator confirmed queued tasks: starting them (--on-coordinator-lost keep-running)"
            );
            self.fill_slots();
        }
        released
    }

    /// Queues the tasks of a submission and starts what fits in the free slots. Returns one
    /// message per refused task (or one for the whole submission); the others are accepted.
    pub fn submit(&self, msg: SubmitMsg) -> Vec<String> {
        if !valid_sweep_id(msg.sweep_id.as_str()) {
            return vec![format!(
                "refused submission: sweep id {:?} is not a safe directory name \
                 (letters, digits, '_', '-', '.', not starting with '.', at most 128 bytes)",
                msg.sweep_id.as_str()
            )];
        }
        let mut templates = HashMap::new();
        for template in msg.templates {
            let id = template.id;
            if templates.insert(id, Arc::new(template)).is_some() {
                return vec![format!(
                    "refused submission for sweep {}: template id {id} appears twice",
                    msg.sweep_id
                )];
            }
        }
        let mut refused = Vec::new();
        let mut resent = false;
        let mut supersede = Vec::new();
        let mut never_run = Vec::new();
        let sweep_id = msg.sweep_id.clone();
        {
            let mut state = self.lock();
            for task in msg.tasks {
                let task_ref = task.task_ref();
                let Some(template) = templates.get(&task.template) else {
                    refused.push(format!(
                        "refused task {} attempt {} of sweep {}: unknown template {}",
                        task.index, task.attempt, msg.sweep_id, task.template
                    ));
                    continue;
                };
                let hpc = template.hpc.is_some();
                let key = SweepTaskRef {
                    sweep_id: msg.sweep_id.clone(),
                    task: task_ref,
                };
                if let Some(&id) = state.by_ref.get(&key) {
                    // Submitted again: a coordinator that restarted and did not know it had
                    // handed this attempt over (it died before writing that down). Whatever was
                    // reported before it knew was ignored by it, so the end is reported again,
                    // as for `attach`.
                    tracing::debug!(?key, "task attempt submitted again; taking it up");
                    state.confirm(id);
                    state.report_end_again(id);
                    resent = true;
                    continue;
                }
                let active_key = (msg.sweep_id.clone(), task.index.0);
                let mut park = false;
                if let Some(&old_id) = state.active.get(&active_key) {
                    let old_attempt = state.tasks.get(&old_id).map_or(0, |r| r.task.attempt.0);
                    if task.attempt.0 <= old_attempt {
                        refused.push(format!(
                            "refused task {} attempt {} of sweep {}: attempt {old_attempt} of \
                             that task is newer and still here",
                            task.index, task.attempt, msg.sweep_id
                        ));
                        continue;
                    }
                    // The coordinator gave up on the older attempt (lost, taken back) and
                    // sent this one here: the old one is stopped and this one waits for the
                    // task directory it shares.
                    if let Some(old) = state.tasks.get(&old_id) {
                        supersede.push(old.task);
                    }
                    park = true;
                }
                let dir = self
                    .shared
                    .work_dir
                    .join(msg.sweep_id.as_str())
                    .join("tasks")
                    .join(task_dir_name(task.index.0));
                let id = state.next_id;
                state.next_id += 1;
                state.tasks.insert(
                    id,
                    Record {
                        sweep_id: msg.sweep_id.clone(),
                        task: task_ref,
                        dir,
                        template: Arc::clone(template),
                        args: task.args,
                        env: task.env,
                        phase: Phase::Queued,
                        cancel_requested: false,
                        next_seq: 1,
                        unacked_output: 0,
                        unacked_events: 0,
                        wake: Arc::new(Notify::new()),
                        exit: None,
                        usage: None,
                        offered: Vec::new(),
                        results_done: false,
                        output: [0, 0],
                    },
                );
                state.by_ref.insert(key, id);
                if let Some(disk) = &state.disk {
                    disk.record(Op::Accept(Box::new(StoredTask {
                        key: (
                            msg.sweep_id.as_str().to_string(),
                            task.index.0,
                            task.attempt.0,
                        ),
                        dir: state.tasks[&id].dir.clone(),
                        template: Arc::clone(template),
                        args: state.tasks[&id].args.clone(),
                        env: state.tasks[&id].env.clone(),
                        phase: StoredPhase::Queued,
                        cancel_requested: false,
                        next_seq: 1,
                        output: [0, 0],
                        exit: None,
                        usage: None,
                        offered: Vec::new(),
                        results_done: false,
                        element: None,
                    })));
                }
                if park {
                    if let Some(earlier) = state.parked.insert(active_key, id) {
                        // Parked before and superseded by this one before it could run.
                        if let Some(record) = state.tasks.get_mut(&earlier) {
                            record.phase = Phase::Launching;
                        }
                        never_run.push(earlier);
                    }
                } else {
                    state.active.insert(active_key, id);
                    if hpc {
                        state.hpc_queue.push_back(id);
                    } else {
                        state.queue.push_back(id);
                    }
                }
            }
        }
        if !supersede.is_empty() {
            self.cancel(&CancelMsg {
                sweep_id: sweep_id.clone(),
                tasks: supersede,
                unstarted_only: false,
            });
        }
        let now = SystemTime::now();
        for id in never_run {
            self.finish_unstarted(id, Outcome::Cancelled, now);
        }
        if resent {
            self.notify_appended();
        }
        self.fill_slots();
        refused
    }

    /// Starts queued tasks while slots are free; hands scheduler tasks over at once.
    fn fill_slots(&self) {
        loop {
            let next = {
                let mut state = self.lock();
                let Some(id) = state.hpc_queue.pop_front() else {
                    break;
                };
                match state.tasks.get_mut(&id) {
                    Some(record) if record.phase == Phase::Queued => {
                        record.phase = Phase::Launching;
                        let key = record.ledger_key();
                        state.log(Op::Phase(key, StoredPhase::Launching));
                        let record = &state.tasks[&id];
                        (
                            id,
                            record.task.attempt.0,
                            record.dir.clone(),
                            Arc::clone(&record.template),
                            record.args.clone(),
                            record.env.clone(),
                        )
                    }
                    _ => continue,
                }
            };
            let (id, attempt, dir, template, args, env) = next;
            let Some(mut hpc) = template.hpc.clone() else {
                continue;
            };
            // A per-task time limit without a walltime becomes the walltime.
            if hpc.resources.walltime.is_none() {
                hpc.resources.walltime = template.timeout_ms.map(|ms| ms.div_ceil(1000).max(60));
            }
            match prepare(id, attempt, &dir, &template, args, env) {
                Ok(mut launch) => {
                    // Not this agent's process: the scheduler runs it, and a restarted agent
                    // follows the job again instead of ending marked processes.
                    launch.env.retain(|(k, _)| k != TASK_MARK);
                    let scripts_dir = dir
                        .parent()
                        .and_then(Path::parent)
                        .map(|sweep| sweep.join("scripts").join("job_scripts"))
                        .unwrap_or_else(|| dir.join("job_scripts"));
                    self.shared.scheduler.launch(HpcLaunch {
                        launch,
                        hpc,
                        task_dir: dir,
                        scripts_dir,
                    });
                }
                Err(message) => {
                    tracing::warn!(%message, "task could not be prepared");
                    self.on_exited(id, Outcome::SpawnFailed(message), SystemTime::now(), None);
                }
            }
        }
        loop {
            let launch = {
                let mut state = self.lock();
                if state.busy >= self.shared.slots {
                    return;
                }
                let Some(id) = state.queue.pop_front() else {
                    return;
                };
                let Some(record) = state.tasks.get_mut(&id) else {
                    continue;
                };
                if record.phase != Phase::Queued {
                    continue;
                }
                record.phase = Phase::Launching;
                let key = record.ledger_key();
                state.log(Op::Phase(key, StoredPhase::Launching));
                let record = &state.tasks[&id];
                let prepared = (
                    id,
                    record.dir.clone(),
                    Arc::clone(&record.template),
                    record.args.clone(),
                    record.env.clone(),
                    record.task,
                );
                state.busy += 1;
                prepared
            };
            let (id, dir, template, args, env, task) = launch;
            match prepare(id, task.attempt.0, &dir, &template, args, env) {
                Ok(launch) => {
                    tracing::debug!(
                        id,
                        index = task.index.0,
                        attempt = task.attempt.0,
                        "launching"
                    );
                    self.shared.backend.launch(launch);
                }
                Err(message) => {
                    tracing::warn!(%message, "task could not be prepared");
                    self.on_exited(id, Outcome::SpawnFailed(message), SystemTime::now(), None);
                }
            }
        }
    }

    async fn process_events(self, mut events: mpsc::UnboundedReceiver<ProcessEvent>) {
        while let Some(event) = events.recv().await {
            match event {
                ProcessEvent::Submitting {
                    elements,
                    scheduler,
                    name,
                    recorded,
                } => self.on_submitting(elements, scheduler, name, recorded),
                ProcessEvent::Submitted {
                    key,
                    element,
                    script,
                } => self.on_submitted(key.index, element, script),
                ProcessEvent::Started { key, pid, at } => self.on_started(key.index, pid, at),
                ProcessEvent::Exited {
                    key,
                    outcome,
                    at,
                    usage,
                } => self.on_exited(key.index, outcome, at, usage),
            }
        }
    }

    /// Tasks about to go out to the scheduler under job name `name`: recorded before
    /// `sbatch`/`qsub` runs (`recorded` answered once durable), so that a restart in between
    /// finds the job by its name instead of submitting the tasks a second time.
    fn on_submitting(
        &self,
        elements: Vec<(TaskKey, Option<u32>)>,
        scheduler: Scheduler,
        name: String,
        recorded: tokio::sync::oneshot::Sender<()>,
    ) {
        let state = self.lock();
        if state.disk.is_none() {
            // Nothing to remember it in: dropping `recorded` lets the submission go ahead.
            return;
        }
        for (key, index) in elements {
            let Some(ledger_key) = state.tasks.get(&key.index).map(Record::ledger_key) else {
                continue;
            };
            let pending = PendingElement {
                scheduler,
                name: name.clone(),
                index,
            };
            state.log(Op::Element(ledger_key, pending.to_stored()));
        }
        let (durable, wait) = std::sync::mpsc::channel();
        state.log(Op::Barrier(durable));
        drop(state);
        tokio::task::spawn_blocking(move || {
            let _ = wait.recv();
            let _ = recorded.send(());
        });
    }

    /// Tasks whose submission was under way when the previous run of this agent stopped. The
    /// scheduler is asked for a job of that name: found, it is followed like any other; not
    /// found, the task never went out, or its job ran and is forgotten already, in which case the
    /// wrapper's exit record says how it ended. Only with neither is the attempt `Lost` (and
    /// run again by the coordinator).
    async fn find_submitted(self, pending: Vec<Unsubmitted>, in_flight: Vec<u32>) {
        // A submit command the previous run left behind decides whether its job exists when it
        // ends; until then "no such job" proves nothing.
        let since = std::time::Instant::now();
        while in_flight
            .iter()
            .any(|&pid| crate::scheduler::submitting(pid, &self.shared.work_dir))
            && since.elapsed() < SUBMIT_WAIT
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut by_job: HashMap<(Scheduler, String), Vec<Unsubmitted>> = HashMap::new();
        for task in pending {
            let group = (task.1.scheduler, task.1.name.clone());
            by_job.entry(group).or_default().push(task);
        }
        for ((scheduler, name), tasks) in by_job {
            // A failing scheduler command proves nothing either way: asked again, with backoff
            // (for all names together at most FIND_FOR).
            let mut delay = Duration::from_secs(1);
            let found = loop {
                match self.shared.scheduler.find_job_named(scheduler, &name).await {
                    Err(e) if since.elapsed() < FIND_FOR => {
                        tracing::warn!(job_name = %name, error = %e, "cannot look up a job by name; asking again");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(60));
                    }
                    other => break other,
                }
            };
            match found {
                Ok(Some(job)) => {
                    tracing::info!(job = %job, job_name = %name, tasks = tasks.len(), "following a job whose submission the previous run did not see through");
                    for (id, pending, dir) in tasks {
                        let element = ElementRef {
                            scheduler,
                            job: job.clone(),
                            index: pending.index,
                        };
                        self.on_submitted(id, element.clone(), None);
                        // A cancel that arrives meanwhile waits in the scheduler backend for the
                        // element (`early_cancels`); one from before is passed here.
                        let cancel = self.cancel_requested(id);
                        self.shared
                            .scheduler
                            .adopt(backend_key(id), element, dir, false, cancel);
                    }
                }
                Ok(None) => {
                    for (id, _, dir) in tasks {
                        self.settle_unsubmitted(id, &dir);
                    }
                }
                Err(e) => {
                    tracing::error!(job_name = %name, error = %e, "cannot tell whether these tasks were submitted; reporting them lost (if a job of this name runs, `scancel --name` / `qdel` ends it)");
                    for (id, _, dir) in tasks {
                        self.settle_unsubmitted(id, &dir);
                    }
                }
            }
        }
    }

    fn cancel_requested(&self, id: u64) -> bool {
        self.lock()
            .tasks
            .get(&id)
            .is_some_and(|r| r.cancel_requested)
    }

    /// A task of a submission the restart cut short whose job the scheduler does not show: the
    /// wrapper's exit record settles it if the job ran; otherwise it never went out, and ends
    /// cancelled if that was asked for meanwhile, else `Lost` (run again by the coordinator).
    fn settle_unsubmitted(&self, id: u64, dir: &Path) {
        let cancel = self.cancel_requested(id);
        if self
            .shared
            .scheduler
            .settle_from_records(backend_key(id), dir, cancel)
        {
            return;
        }
        self.shared.scheduler.forget(backend_key(id));
        let now = SystemTime::now();
        if cancel {
            self.finish_unstarted(id, Outcome::Cancelled, now);
        } else {
            self.finish_unstarted_msg(id, OutcomeMsg::Lost, now);
        }
    }

    /// A scheduler task went into a job: the coordinator learns the job id and, once per job,
    /// gets the script for its `scripts/job_scripts/`.
    fn on_submitted(&self, id: u64, element: ElementRef, script: Option<(String, String)>) {
        {
            let mut state = self.lock();
            let Some(key) = state.tasks.get(&id).map(Record::ledger_key) else {
                return;
            };
            // Before the event: a restart must find the job to follow it again.
            state.log(Op::Element(key, element.to_stored()));
            state.append(
                id,
                EventKind::Submitted {
                    job_id: element.id(),
                    script: script.map(|(name, text)| JobScriptMsg { name, text }),
                },
            );
        }
        self.notify_appended();
    }

    fn on_started(&self, id: u64, pid: u32, at: SystemTime) {
        let (cancel, wake, stdout, stderr, hpc, output) = {
            let mut state = self.lock();
            let Some(record) = state.tasks.get_mut(&id) else {
                return;
            };
            record.phase = Phase::Running;
            let cancel = record.cancel_requested;
            let hpc = record.template.hpc.is_some();
            let wake = Arc::clone(&record.wake);
            let dir = record.dir.clone();
            let output = record.output;
            let key = record.ledger_key();
            state.log(Op::Phase(key, StoredPhase::Running));
            state.append(
                id,
                EventKind::Started {
                    pid,
                    at_ms: epoch_ms(at),
                },
            );
            (
                cancel,
                wake,
                dir.join("stdout.log"),
                dir.join("stderr.log"),
                hpc,
                output,
            )
        };
        self.notify_appended();
        if cancel && !hpc {
            self.shared.backend.cancel(backend_key(id));
        }
        tokio::spawn(self.clone().tail(id, wake, stdout, stderr, output));
    }

    /// The process ended (or never started): frees the slot; a started task's tailer reports
    /// the exit once the output is drained, a never-started one is reported here.
    fn on_exited(&self, id: u64, outcome: Outcome, at: SystemTime, usage: Option<UsageMsg>) {
        let never_started = {
            let mut state = self.lock();
            let hpc = state
                .tasks
                .get(&id)
                .is_some_and(|r| r.template.hpc.is_some());
            if !hpc {
                state.busy = state.busy.saturating_sub(1);
            }
            match state.tasks.get_mut(&id) {
                Some(record) if record.phase == Phase::Launching => true,
                Some(record) => {
                    record.exit = Some((outcome_msg(&outcome), at));
                    record.usage = usage;
                    record.phase = Phase::Draining;
                    record.wake.notify_one();
                    let key = record.ledger_key();
                    state.log(Op::Exit(key, outcome_msg(&outcome), epoch_ms(at), usage));
                    false
                }
                None => false,
            }
        };
        if never_started {
            self.finish_unstarted(id, outcome, at);
        }
        self.fill_slots();
    }

    /// `Exited` then an empty `ResultOffer` for an attempt that never ran.
    fn finish_unstarted(&self, id: u64, outcome: Outcome, at: SystemTime) {
        self.finish_unstarted_msg(id, outcome_msg(&outcome), at);
    }

    /// `finish_unstarted` with the outcome as reported (`Lost` has no process outcome).
    fn finish_unstarted_msg(&self, id: u64, outcome: OutcomeMsg, at: SystemTime) {
        {
            let mut state = self.lock();
            let Some(record) = state.tasks.get_mut(&id) else {
                return;
            };
            record.exit = Some((outcome.clone(), at));
            record.phase = Phase::Finished;
            let active_key = (record.sweep_id.clone(), record.task.index.0);
            let key = record.ledger_key();
            state.release(active_key, id);
            state.log(Op::Exit(key.clone(), outcome.clone(), epoch_ms(at), None));
            state.log(Op::Offered(key, Vec::new()));
            state.append(
                id,
                EventKind::Exited {
                    outcome,
                    at_ms: epoch_ms(at),
                    usage: None,
                },
            );
            state.append(id, EventKind::ResultOffer { files: Vec::new() });
        }
        self.notify_appended();
    }

    /// Follows a started task's log files into `Output` events (within the output window), then
    /// reports `Exited` and the `ResultOffer`.
    async fn tail(
        self,
        id: u64,
        wake: Arc<Notify>,
        stdout: PathBuf,
        stderr: PathBuf,
        from: [u64; 2],
    ) {
        let mut positions = from;
        let mut files: [Option<std::fs::File>; 2] = [None, None];
        loop {
            // Read the exit flag before reading the files: end-of-file seen after an exit is
            // the real end of the output.
            let (credit, exited) = {
                let state = self.lock();
                let Some(record) = state.tasks.get(&id) else {
                    return;
                };
                (
                    OUTPUT_WINDOW.saturating_sub(record.unacked_output),
                    record.exit.is_some(),
                )
            };
            if credit > 0 {
                let paths = [stdout.clone(), stderr.clone()];
                let before = positions;
                let mut held = std::mem::take(&mut files);
                let read = tokio::task::spawn_blocking(move || {
                    read_appended(&paths, &mut held, &mut positions, credit)
                        .map(|chunks| (chunks, positions, held))
                })
                .await;
                let (chunks, at_end) = match read {
                    Ok(Ok((chunks, new_positions, held))) => {
                        positions = new_positions;
                        files = held;
                        let got: usize = chunks.iter().map(|(_, c)| c.len()).sum();
                        (chunks, got < credit)
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(id, error = %e, "cannot read task output; giving up on it");
                        (Vec::new(), true)
                    }
                    Err(e) => {
                        tracing::error!(id, error = %e, "output reader failed");
                        (Vec::new(), true)
                    }
                };
                if !chunks.is_empty() {
                    {
                        let mut state = self.lock();
                        let mut at = before;
                        for (stream, data) in chunks {
                            let i = stream as usize;
                            let offset = at[i];
                            at[i] += data.len() as u64;
                            state.append_output(id, stream, data, offset);
                        }
                    }
                    self.notify_appended();
                }
                if exited && at_end {
                    self.finish_started(id).await;
                    return;
                }
                if !at_end {
                    // More may be waiting and the window still has room: go again right away.
                    continue;
                }
            }
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(TAIL_EVERY) => {}
            }
        }
    }

    async fn finish_started(&self, id: u64) {
        let dir = {
            let mut state = self.lock();
            let Some(record) = state.tasks.get_mut(&id) else {
                return;
            };
            let Some((outcome, at)) = record.exit.clone() else {
                return;
            };
            let dir = record.dir.clone();
            let usage = record.usage;
            state.append(
                id,
                EventKind::Exited {
                    outcome,
                    at_ms: epoch_ms(at),
                    usage,
                },
            );
            dir
        };
        self.notify_appended();
        let files = tokio::task::spawn_blocking(move || scan_results(&dir))
            .await
            .unwrap_or_else(|e| {
                tracing::error!(id, error = %e, "scanning results failed");
                Vec::new()
            });
        {
            let mut state = self.lock();
            if let Some(record) = state.tasks.get_mut(&id) {
                record.offered = files.clone();
                record.phase = Phase::Finished;
                let active_key = (record.sweep_id.clone(), record.task.index.0);
                let key = record.ledger_key();
                state.release(active_key, id);
                state.log(Op::Offered(key, files.clone()));
            }
            state.append(id, EventKind::ResultOffer { files });
        }
        self.notify_appended();
        // A newer attempt of the task may have been waiting for the directory.
        self.fill_slots();
    }

    /// Tells sessions about new events. With a disk ledger the writer does this once they are
    /// durable; without one they are sendable at once.
    fn notify_appended(&self) {
        if self.shared.on_disk {
            return;
        }
        let next = self.lock().next_gen;
        self.shared.durable.store(next, Ordering::SeqCst);
        self.shared.appended.send_replace(next);
    }

    /// Wakes every session's writer without new events (one that must replay, see
    /// `server::Sweeps`).
    pub fn wake_sessions(&self) {
        self.shared.appended.send_modify(|_| {});
    }

    /// Waits until every change so far is in the disk ledger (no-op without one).
    pub fn flush_ledger(&self) {
        let disk = self.lock().disk.clone();
        if let Some(disk) = disk {
            disk.flush();
        }
    }

    /// Stops tasks: running ones get SIGTERM (then SIGKILL after the grace), queued ones never
    /// start and report `Exited{Cancelled}`. Unknown or finished tasks are ignored. With
    /// `unstarted_only`, only queued ones (and scheduler jobs, which may still be pending) stop.
    pub fn cancel(&self, msg: &CancelMsg) {
        let mut to_kill = Vec::new();
        let mut dropped = Vec::new();
        {
            let mut state = self.lock();
            let ids: Vec<u64> = if msg.tasks.is_empty() {
                state
                    .tasks
                    .iter()
                    .filter(|(_, r)| r.sweep_id == msg.sweep_id)
                    .map(|(id, _)| *id)
                    .collect()
            } else {
                msg.tasks
                    .iter()
                    .filter_map(|task| {
                        state.by_ref.get(&SweepTaskRef {
                            sweep_id: msg.sweep_id.clone(),
                            task: *task,
                        })
                    })
                    .copied()
                    .collect()
            };
            for id in ids {
                let Some(record) = state.tasks.get_mut(&id) else {
                    continue;
                };
                match record.phase {
                    Phase::Queued => {
                        // Marked, so the queue skips it when it comes up.
                        record.phase = Phase::Launching;
                        dropped.push(id);
                    }
                    // Handed to the scheduler: it may wait there for hours; cancel it there now.
                    Phase::Launching if record.template.hpc.is_some() => {
                        record.cancel_requested = true;
                        to_kill.push((id, true));
                    }
                    // Only the unstarted were asked for (a coordinator moving waiting tasks
                    // to an idle source): one being spawned or running stays.
                    Phase::Launching | Phase::Running if msg.unstarted_only => {}
                    // Not spawned yet: `on_started` cancels it as soon as it is.
                    Phase::Launching => record.cancel_requested = true,
                    Phase::Running => {
                        record.cancel_requested = true;
                        to_kill.push((id, record.template.hpc.is_some()));
                    }
                    Phase::Draining | Phase::Finished => {}
                }
                if record.cancel_requested {
                    let key = record.ledger_key();
                    state.log(Op::Cancel(key));
                }
            }
        }
        for (id, hpc) in to_kill {
            if hpc {
                self.shared.scheduler.cancel(backend_key(id));
            } else {
                self.shared.backend.cancel(backend_key(id));
            }
        }
        let now = SystemTime::now();
        for id in dropped {
            self.finish_unstarted(id, Outcome::Cancelled, now);
        }
        self.fill_slots();
    }

    /// A restarted coordinator takes up these attempts. Returns the ones not held here (it will
    /// hear nothing more about those). An attempt that finished and whose end the previous
    /// coordinator acknowledged (all its events are) reports its end again: that coordinator may
    /// have died before it wrote the end down. One with events still unacknowledged needs
    /// nothing: they are replayed to every session.
    pub fn attach(&self, msg: &hsm_protocol::AttachMsg) -> Vec<TaskRef> {
        let mut unknown = Vec::new();
        {
            let mut state = self.lock();
            for task in &msg.tasks {
                let key = SweepTaskRef {
                    sweep_id: msg.sweep_id.clone(),
                    task: *task,
                };
                let Some(&id) = state.by_ref.get(&key) else {
                    unknown.push(*task);
                    continue;
                };
                if !state.tasks.contains_key(&id) {
                    unknown.push(*task);
                    continue;
                }
                state.confirm(id);
                state.report_end_again(id);
            }
        }
        self.notify_appended();
        self.fill_slots();
        unknown
    }

    /// Forgets acknowledged events; output acknowledgements let paused tailers read on.
    pub fn ack(&self, acks: &[EventRef]) {
        let mut state = self.lock();
        let mut touched = Vec::new();
        for event in acks {
            let Some(gen) = state.ledger_index.remove(event) else {
                continue;
            };
            let Some(entry) = state.ledger.remove(&gen) else {
                continue;
            };
            state.log(Op::Ack(
                (
                    event.sweep_id.as_str().to_string(),
                    event.task.index.0,
                    event.task.attempt.0,
                ),
                event.seq.0,
            ));
            if let Some(record) = state.tasks.get_mut(&entry.task) {
                record.unacked_events = record.unacked_events.saturating_sub(1);
                if entry.output_bytes > 0 {
                    record.unacked_output =
                        record.unacked_output.saturating_sub(entry.output_bytes);
                    record.wake.notify_one();
                }
            }
            touched.push(entry.task);
        }
        touched.sort_unstable();
        touched.dedup();
        for id in touched {
            state.maybe_forget(id);
        }
    }

    /// The files a `FetchResults` asks for, checked against the attempt's offer.
    pub fn fetch_plan(&self, msg: &FetchMsg) -> Result<FetchPlan, String> {
        // The coordinator's text, in messages that are logged here and shown there.
        let sweep = display_safe(msg.sweep_id.as_str());
        let state = self.lock();
        let key = SweepTaskRef {
            sweep_id: msg.sweep_id.clone(),
            task: msg.task,
        };
        let record = state
            .by_ref
            .get(&key)
            .and_then(|id| state.tasks.get(id))
            .ok_or_else(|| {
                format!(
                    "cannot send results of task {} attempt {} of sweep {}: unknown here",
                    msg.task.index, msg.task.attempt, sweep
                )
            })?;
        if record.phase != Phase::Finished {
            return Err(format!(
                "cannot send results of task {} attempt {} of sweep {}: it has not finished",
                msg.task.index, msg.task.attempt, sweep
            ));
        }
        let wanted: Vec<&FileOffer> = if msg.paths.is_empty() {
            record.offered.iter().collect()
        } else {
            let mut wanted = Vec::new();
            for path in &msg.paths {
                check_relative_path(path)
                    .map_err(|e| format!("refused fetch: {}", display_safe(&e.to_string())))?;
                let offer = record
                    .offered
                    .iter()
                    .find(|o| &o.path == path)
                    .ok_or_else(|| {
                        format!(
                            "refused fetch: {path:?} was not offered by task {} attempt {} of \
                             sweep {}",
                            msg.task.index, msg.task.attempt, sweep
                        )
                    })?;
                wanted.push(offer);
            }
            wanted
        };
        Ok(FetchPlan {
            task_dir: record.dir.clone(),
            files: wanted
                .into_iter()
                .map(|offer| FetchItem {
                    path: record.dir.join(&offer.path),
                    offer: offer.clone(),
                })
                .collect(),
        })
    }

    /// Stops every task of every sweep (`--on-coordinator-lost cancel`): running ones get SIGTERM
    /// then SIGKILL after their grace, queued ones never start; all end `cancelled` and report so
    /// when a coordinator comes back.
    pub fn cancel_everything(&self) -> usize {
        let sweeps: Vec<SweepId> = {
            let state = self.lock();
            let mut sweeps: Vec<SweepId> = state
                .tasks
                .values()
                .filter(|r| r.phase != Phase::Finished && r.phase != Phase::Draining)
                .map(|r| r.sweep_id.clone())
                .collect();
            sweeps.sort();
            sweeps.dedup();
            sweeps
        };
        let n = sweeps.len();
        for sweep_id in sweeps {
            self.cancel(&CancelMsg {
                sweep_id,
                tasks: Vec::new(),
                unstarted_only: false,
            });
        }
        n
    }

    /// The coordinator holds the attempt's files: delete them here (the logs stay), unless the
    /// agent keeps results.
    pub fn results_done(&self, msg: &ResultsDoneMsg) {
        let dir = {
            let mut state = self.lock();
            let key = SweepTaskRef {
                sweep_id: msg.sweep_id.clone(),
                task: msg.task,
            };
            let Some(&id) = state.by_ref.get(&key) else {
                tracing::debug!(?key, "results done for a task not held here; ignored");
                return;
            };
            let Some(record) = state.tasks.get_mut(&id) else {
                return;
            };
            if record.phase != Phase::Finished {
                tracing::warn!(
                    ?key,
                    "results done for a task that has not finished; ignored"
                );
                return;
            }
            record.offered.clear();
            record.results_done = true;
            let dir = record.dir.clone();
            let key = record.ledger_key();
            state.log(Op::ResultsDone(key));
            state.maybe_forget(id);
            dir
        };
        if self.shared.keep_results {
            return;
        }
        let results = dir.join("results");
        if let Err(e) = std::fs::remove_dir_all(&results) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %results.display(), error = %e, "cannot delete results");
            }
        }
    }

    /// A receiver that changes whenever events are appended.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.appended.subscribe()
    }

    /// Unacknowledged events of the sweeps coordinator `who` owns, from ledger position
    /// `cursor` on, at most `max_events` and about `max_output` output bytes (at least one event
    /// when any is pending), and the cursor after them (past other sweeps' events too).
    pub fn events_from(
        &self,
        cursor: u64,
        max_events: usize,
        max_output: usize,
        who: &str,
    ) -> (Vec<TaskEventMsg>, u64) {
        let state = self.lock();
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut next = cursor;
        let durable = self.shared.durable.load(Ordering::SeqCst);
        for (gen, entry) in state.ledger.range(cursor..durable.max(cursor)) {
            if !out.is_empty()
                && (out.len() >= max_events || bytes + entry.output_bytes > max_output)
            {
                break;
            }
            next = gen + 1;
            if !state.owned_by(&entry.event.sweep_id, who) {
                continue;
            }
            bytes += entry.output_bytes;
            out.push(entry.event.clone());
        }
        (out, next)
    }

    /// Whether at least `threshold` output bytes (or many events) wait from `cursor` on; a
    /// session then sends at once instead of waiting to batch more.
    pub fn pending_is_large(&self, cursor: u64, threshold: usize, who: &str) -> bool {
        let state = self.lock();
        let mut bytes = 0;
        let durable = self.shared.durable.load(Ordering::SeqCst);
        let mine = state
            .ledger
            .range(cursor..durable.max(cursor))
            .filter(|(_, entry)| state.owned_by(&entry.event.sweep_id, who));
        for (n, (_, entry)) in mine.enumerate() {
            bytes += entry.output_bytes;
            if bytes >= threshold || n >= 512 {
                return true;
            }
        }
        false
    }
}

impl State {
    /// Whether `sweep` belongs to coordinator `who` (an unowned one belongs to nobody yet).
    fn owned_by(&self, sweep: &SweepId, who: &str) -> bool {
        self.owners.get(sweep).is_some_and(|owner| **owner == *who)
    }

    /// For a coordinator taking up attempt `id` (`Attach`, or the same attempt submitted
    /// again): a finished attempt whose events were all acknowledged, by a coordinator that may
    /// have died before writing them down, reports its end again. One with events still
    /// unacknowledged needs nothing (they are replayed to every session), nor does one that has
    /// not ended.
    /// A coordinator confirmed attempt `id`: if it was waiting for that, it may start now.
    fn confirm(&mut self, id: u64) {
        let Some(sweep) = self.tasks.get(&id).map(|r| r.sweep_id.clone()) else {
            return;
        };
        let Some(set) = self.unconfirmed.get_mut(&sweep) else {
            return;
        };
        if set.remove(&id) {
            if set.is_empty() {
                self.unconfirmed.remove(&sweep);
                self.unclaimed_since.remove(&sweep);
            }
            self.enqueue(id);
        }
    }

    /// Puts a queued attempt in line for a slot (or the scheduler); false when it is no longer
    /// queued (cancelled meanwhile).
    fn enqueue(&mut self, id: u64) -> bool {
        let Some(record) = self.tasks.get(&id) else {
            return false;
        };
        if record.phase != Phase::Queued {
            return false;
        }
        if record.template.hpc.is_some() {
            self.hpc_queue.push_back(id);
        } else {
            self.queue.push_back(id);
        }
        true
    }

    fn report_end_again(&mut self, id: u64) {
        let Some(record) = self.tasks.get(&id) else {
            return;
        };
        if record.phase != Phase::Finished || record.unacked_events > 0 {
            return;
        }
        let (outcome, at) = match &record.exit {
            Some((outcome, at)) => (outcome.clone(), *at),
            None => (OutcomeMsg::Lost, SystemTime::now()),
        };
        let files = record.offered.clone();
        let usage = record.usage;
        self.append(
            id,
            EventKind::Exited {
                outcome,
                at_ms: epoch_ms(at),
                usage,
            },
        );
        self.append(id, EventKind::ResultOffer { files });
    }

    /// Records a change in the disk ledger, when there is one.
    fn log(&self, op: Op) {
        if let Some(disk) = &self.disk {
            disk.record(op);
        }
    }

    /// Appends an event of task `id` with its next `seq`.
    fn append(&mut self, id: u64, kind: EventKind) {
        self.append_at(id, kind, None);
    }

    /// Appends output read from the task's log at `offset` (the ledger keeps only the place).
    fn append_output(&mut self, id: u64, stream: Stream, data: Vec<u8>, offset: u64) {
        self.append_at(
            id,
            EventKind::Output {
                stream,
                data: Bytes(data),
            },
            Some(offset),
        );
    }

    fn append_at(&mut self, id: u64, kind: EventKind, offset: Option<u64>) {
        let Some(record) = self.tasks.get_mut(&id) else {
            return;
        };
        let (output_bytes, stored) = match (&kind, offset) {
            (EventKind::Output { data, stream }, Some(offset)) => {
                let len = data.0.len() as u64;
                let i = *stream as usize;
                record.output[i] = record.output[i].max(offset + len);
                (
                    data.0.len(),
                    StoredKind::Output {
                        stream: *stream,
                        offset,
                        len,
                    },
                )
            }
            (EventKind::Output { data, .. }, None) => {
                (data.0.len(), StoredKind::Event(kind.clone()))
            }
            _ => (0, StoredKind::Event(kind.clone())),
        };
        let event = TaskEventMsg {
            sweep_id: record.sweep_id.clone(),
            task: record.task,
            seq: Seq(record.next_seq),
            kind,
        };
        record.next_seq += 1;
        record.unacked_events += 1;
        record.unacked_output += output_bytes;
        let gen = self.next_gen;
        self.next_gen += 1;
        if let Some(disk) = &self.disk {
            disk.record(Op::Event {
                gen,
                key: record.ledger_key(),
                seq: event.seq.0,
                kind: stored,
                output: record.output,
            });
        }
        self.ledger_index.insert(event.event_ref(), gen);
        self.ledger.insert(
            gen,
            Entry {
                task: id,
                event,
                output_bytes,
            },
        );
    }

    /// Drops a finished attempt once nothing about it is pending: all events acknowledged and
    /// its results either fetched (ResultsDone) or nonexistent.
    /// Attempt `id` no longer owns its task directory: a parked newer attempt of the task
    /// takes it over and goes first in the queue.
    fn release(&mut self, key: (SweepId, u64), id: u64) {
        if self.parked.get(&key) == Some(&id) {
            self.parked.remove(&key);
            return;
        }
        if self.active.get(&key) != Some(&id) {
            return;
        }
        self.active.remove(&key);
        if let Some(next) = self.parked.remove(&key) {
            self.active.insert(key.clone(), next);
            // No coordinator of its sweep is connected: it waits to be confirmed, like every
            // queued attempt of such a sweep (see `unconfirmed`).
            if !self.claims.contains_key(&key.0) {
                self.unconfirmed
                    .entry(key.0.clone())
                    .or_default()
                    .insert(next);
                self.unclaimed_since
                    .entry(key.0)
                    .or_insert_with(std::time::Instant::now);
                return;
            }
            let hpc = self
                .tasks
                .get(&next)
                .is_some_and(|r| r.template.hpc.is_some());
            if hpc {
                self.hpc_queue.push_front(next);
            } else {
                self.queue.push_front(next);
            }
        }
    }

    fn maybe_forget(&mut self, id: u64) {
        let Some(record) = self.tasks.get(&id) else {
            return;
        };
        if record.phase == Phase::Finished
            && record.unacked_events == 0
            && (record.results_done || record.offered.is_empty())
        {
            let key = record.key();
            let ledger_key = record.ledger_key();
            self.tasks.remove(&id);
            self.by_ref.remove(&key);
            self.log(Op::Forget(ledger_key));
        }
    }
}

/// The sweeps one coordinator session has claimed (by sending their `Submit` or `Attach`);
/// dropped when the session ends, which unclaims them.
pub struct SessionClaims {
    runner: Runner,
    sweeps: Mutex<HashSet<SweepId>>,
}

impl SessionClaims {
    pub fn new(runner: Runner) -> Self {
        SessionClaims {
            runner,
            sweeps: Mutex::new(HashSet::new()),
        }
    }

    pub fn claim(&self, sweep: &SweepId) {
        let mut sweeps = self.sweeps.lock().unwrap_or_else(|e| e.into_inner());
        if sweeps.insert(sweep.clone()) {
            self.runner.claim(sweep);
        }
    }
}

impl Drop for SessionClaims {
    fn drop(&mut self) {
        let sweeps = std::mem::take(self.sweeps.get_mut().unwrap_or_else(|e| e.into_inner()));
        for sweep in sweeps {
            self.runner.unclaim(&sweep);
        }
    }
}

fn time_of(at_ms: i64) -> SystemTime {
    let ms = Duration::from_millis(at_ms.unsigned_abs());
    if at_ms >= 0 {
        SystemTime::UNIX_EPOCH + ms
    } else {
        SystemTime::UNIX_EPOCH - ms
    }
}

/// `len` bytes of a task's log from `offset` (what a recovered `Output` event carried); fewer
/// when the file is shorter now.
fn read_log_range(dir: &Path, stream: Stream, offset: u64, len: u64) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let name = match stream {
        Stream::Stdout => "stdout.log",
        Stream::Stderr => "stderr.log",
    };
    let Ok(file) = std::fs::File::open(dir.join(name)) else {
        return Vec::new();
    };
    let mut buf = vec![0u8; len.min(OUTPUT_CHUNK as u64) as usize];
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
    }
    buf.truncate(filled);
    buf
}

fn backend_key(id: u64) -> TaskKey {
    TaskKey {
        index: id,
        attempt: 0,
    }
}

/// Creates the task directory (fresh `results/`) and builds the launch.
fn prepare(
    id: u64,
    attempt: u32,
    dir: &Path,
    template: &TemplateMsg,
    args: Vec<String>,
    env: Vec<(String, String)>,
) -> Result<TaskLaunch, String> {
    let results = dir.join("results");
    // A task directory made just now has nothing to clear; otherwise results of an earlier
    // attempt of the same task on this agent must not be offered as this attempt's.
    let fresh = match std::fs::create_dir(dir) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            true
        }
        Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
    };
    if !fresh {
        match std::fs::remove_dir_all(&results) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot clear {}: {e}", results.display())),
        }
    }
    std::fs::create_dir(&results)
        .map_err(|e| format!("cannot create {}: {e}", results.display()))?;
    // The coordinator cannot know this host's paths: it writes a token where the task's
    // results directory goes (e.g. `output.dir=<token>`), replaced here.
    let results_text = results.to_string_lossy().into_owned();
    let localize = |text: String| {
        if text.contains(AGENT_OUTPUT_DIR) {
            text.replace(AGENT_OUTPUT_DIR, &results_text)
        } else {
            text
        }
    };
    let mut argv: Vec<String> = template.argv_prefix.iter().cloned().map(localize).collect();
    argv.extend(args.into_iter().map(localize));
    let mut full_env: Vec<(String, String)> = template
        .env
        .iter()
        .cloned()
        .chain(env)
        .map(|(k, v)| (k, localize(v)))
        .collect();
    // Last, so it wins over the coordinator's value: paths differ per host.
    full_env.push(("HSM_OUTPUT_DIR".to_string(), results_text.clone()));
    full_env.push((
        TASK_MARK.to_string(),
        format!("{}#{attempt}", dir.display()),
    ));
    Ok(TaskLaunch {
        key: backend_key(id),
        argv,
        env: full_env,
        cwd: PathBuf::from(&template.cwd),
        stdout: dir.join("stdout.log"),
        stderr: dir.join("stderr.log"),
        timeout: template.timeout_ms.map(Duration::from_millis),
        kill_grace: Duration::from_millis(template.kill_grace_ms),
    })
}

/// Reads what was appended to the log files since `positions`, alternating between them in
/// chunks of at most [`OUTPUT_CHUNK`], until `credit` bytes were read or both are at their end.
/// A missing file counts as empty.
fn read_appended(
    paths: &[PathBuf; 2],
    files: &mut [Option<std::fs::File>; 2],
    positions: &mut [u64; 2],
    mut credit: usize,
) -> std::io::Result<Vec<(Stream, Vec<u8>)>> {
    use std::os::unix::fs::FileExt;
    let streams = [Stream::Stdout, Stream::Stderr];
    // Opened once and kept by the caller: a task is read several times.
    for (path, file) in paths.iter().zip(files.iter_mut()) {
        if file.is_none() {
            match std::fs::File::open(path) {
                Ok(f) => *file = Some(f),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    let mut chunks = Vec::new();
    for i in 0..2 {
        let Some(file) = &files[i] else {
            continue;
        };
        // The size says how much is new, so an empty log (the common case) costs one fstat
        // and no buffer.
        let mut available = file.metadata()?.len().saturating_sub(positions[i]);
        while credit > 0 && available > 0 {
            let want = (available as usize).min(credit).min(OUTPUT_CHUNK);
            let mut buf = vec![0u8; want];
            let mut filled = 0;
            while filled < want {
                let n = file.read_at(&mut buf[filled..], positions[i] + filled as u64)?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break; // truncated under us
            }
            buf.truncate(filled);
            positions[i] += filled as u64;
            available = available.saturating_sub(filled as u64);
            credit -= filled;
            chunks.push((streams[i], buf));
        }
    }
    Ok(chunks)
}

/// Every regular file under `<task_dir>/results/`, recursively, with size and SHA-256; paths
/// relative to the task directory. Symlinks are followed only when they resolve to a regular
/// file inside the task directory; others are skipped and logged.
pub fn scan_results(task_dir: &Path) -> Vec<FileOffer> {
    let mut files = Vec::new();
    // Resolved only when a symlink needs checking: most results have none, and resolving costs
    // a readlink per path component.
    let root = Root {
        dir: task_dir,
        resolved: std::cell::OnceCell::new(),
    };
    let mut budget = MAX_OFFER_PATH_BYTES;
    walk(
        &root,
        &task_dir.join("results"),
        "results",
        0,
        &mut budget,
        &mut files,
    );
    files
}

/// The task directory, canonicalized on first use.
struct Root<'a> {
    dir: &'a Path,
    resolved: std::cell::OnceCell<Option<PathBuf>>,
}

impl Root<'_> {
    fn get(&self) -> Option<&Path> {
        self.resolved
            .get_or_init(|| std::fs::canonicalize(self.dir).ok())
            .as_deref()
    }
}

fn walk(
    root: &Root<'_>,
    dir: &Path,
    rel: &str,
    depth: usize,
    budget: &mut usize,
    files: &mut Vec<FileOffer>,
) {
    if depth > MAX_RESULTS_DEPTH {
        tracing::warn!(dir = %dir.display(), "results nested too deep; not offered");
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot list results");
            }
            return;
        }
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            tracing::warn!(path = %path.display(), "result file name is not UTF-8; not offered");
            continue;
        };
        let rel_path = format!("{rel}/{name}");
        if let Err(e) = check_relative_path(&rel_path) {
            tracing::warn!(error = %e, "result path not offered");
            continue;
        }
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        if file_type.is_dir() {
            walk(root, &path, &rel_path, depth + 1, budget, files);
            continue;
        }
        if file_type.is_symlink() {
            let inside = match (root.get(), std::fs::canonicalize(&path)) {
                (Some(root), Ok(target)) => target.starts_with(root) && target.is_file(),
                _ => false,
            };
            if !inside {
                tracing::warn!(
                    path = %path.display(),
                    "result symlink does not resolve to a file inside the task directory; not offered"
                );
                continue;
            }
        } else if !file_type.is_file() {
            tracing::warn!(path = %path.display(), "result is not a regular file; not offered");
            continue;
        }
        if rel_path.len() + 100 > *budget {
            tracing::error!(path = %rel_path, "too many result files for one offer; the rest are not offered");
            return;
        }
        match hash_file(&path) {
            Ok((size, sha256)) => {
                *budget -= rel_path.len() + 100;
                files.push(FileOffer {
                    path: rel_path,
                    size,
                    sha256,
                });
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read result; not offered")
            }
        }
    }
}

/// Size and lowercase-hex SHA-256 of a file, read in pieces.
pub fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex(&hasher.finalize())))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_ids_must_be_one_safe_component() {
        for ok in ["sweep_20250101_120000", "a", "x-1.2"] {
            assert!(valid_sweep_id(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            ".hidden",
            "a\0b",
            "a b",
            &"x".repeat(129),
        ] {
            assert!(!valid_sweep_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn task_dirs_have_at_least_three_digits() {
        assert_eq!(task_dir_name(7), "task_007");
        assert_eq!(task_dir_name(1234), "task_1234");
    }

    #[test]
    fn results_are_scanned_recursively_without_escaping_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let task = dir.path().join("task_001");
        std::fs::create_dir_all(task.join("results/sub")).unwrap();
        std::fs::write(task.join("results/a.txt"), b"abc").unwrap();
        std::fs::write(task.join("results/empty"), b"").unwrap();
        std::fs::write(task.join("results/sub/b.bin"), vec![7u8; 1000]).unwrap();
        std::fs::write(task.join("stdout.log"), b"log").unwrap();
        std::fs::write(dir.path().join("secret"), b"outside").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), task.join("results/escape")).unwrap();
        std::os::unix::fs::symlink(task.join("stdout.log"), task.join("results/log")).unwrap();
        std::os::unix::fs::symlink("/", task.join("results/root")).unwrap();
        let files = scan_results(&task);
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "results/a.txt",
                "results/empty",
                "results/log",
                "results/sub/b.bin"
            ]
        );
        assert_eq!(files[0].size, 3);
        assert_eq!(
            files[0].sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(files[1].size, 0);
        assert_eq!(
            files[1].sha256,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(files[3].size, 1000);
    }

    #[test]
    fn appended_output_is_read_in_bounded_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let err = dir.path().join("err");
        std::fs::write(&out, vec![b'o'; 200 * 1024]).unwrap();
        std::fs::write(&err, b"e").unwrap();
        let paths = [out, err];
        let mut pos = [0, 0];
        let mut files = [None, None];
        let chunks = read_appended(&paths, &mut files, &mut pos, 100 * 1024).unwrap();
        let total: usize = chunks.iter().map(|(_, c)| c.len()).sum();
        assert_eq!(total, 100 * 1024);
        assert!(chunks.iter().all(|(_, c)| c.len() <= OUTPUT_CHUNK));
        let chunks = read_appended(&paths, &mut files, &mut pos, usize::MAX).unwrap();
        let total: usize = chunks.iter().map(|(_, c)| c.len()).sum();
        // Both files together hold 200 KiB + 1; the first call took 100 KiB of them.
        assert_eq!(total, 200 * 1024 + 1 - 100 * 1024);
        assert_eq!(pos, [200 * 1024, 1]);
        assert!(read_appended(&paths, &mut files, &mut pos, 10)
            .unwrap()
            .is_empty());
    }
}
