//! The task state machine and dispatch policy of one sweep run: which task goes to which source
//! next, what an exit means, retries, cancellation, and stale attempts. Pure: time is an argument,
//! effects come out as `Change`s (to persist) and `Command`s (to carry out).

use super::pace::{self, Durations};

mod steal;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;

/// The status vocabulary used everywhere (sweep.db, views, output, `--json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TaskStatus {
    /// Not started in any run yet (or waiting for a retry).
    Pending,
    /// Handed to a source, not yet running.
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 6] = [
        TaskStatus::Pending,
        TaskStatus::Queued,
        TaskStatus::Running,
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Queued => "queued",
            TaskStatus::Running => "running",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    /// Completed, failed and cancelled are final for a run.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        TaskStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown task status `{s}`"))
    }
}

/// How one attempt ended, as the core needs to know it (backend outcomes map onto this).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitKind {
    Success,
    /// Failed; the reason is shown to the user (`exit code 3`, `timeout`, `killed by signal 9`).
    Failure {
        exit_code: Option<i32>,
        reason: String,
    },
    Cancelled,
    /// The source cannot say how the attempt ended (an agent restarted while it ran): the task
    /// runs again as a new attempt without using a retry, like the tasks of a lost source.
    Lost {
        reason: String,
    },
}

/// How tasks are spread over sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Each next task to the next source with a free slot, in turn.
    #[default]
    RoundRobin,
    /// To the source with the lowest fraction of its slots in use.
    LeastLoaded,
    /// To the source with the most free slots.
    Capacity,
}

impl Strategy {
    pub const ALL: [Strategy; 3] = [
        Strategy::RoundRobin,
        Strategy::LeastLoaded,
        Strategy::Capacity,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round-robin",
            Strategy::LeastLoaded => "least-loaded",
            Strategy::Capacity => "capacity",
        }
    }
}

impl FromStr for Strategy {
    type Err = String;

    /// Accepts `round_robin` too: Python HSM's distributed mode spelled it that way.
    fn from_str(text: &str) -> Result<Self, String> {
        let wanted = text.trim().replace('_', "-");
        Strategy::ALL
            .into_iter()
            .find(|s| s.as_str() == wanted)
            .ok_or_else(|| {
                format!("unknown strategy `{text}`; expected round-robin, least-loaded or capacity")
            })
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of place a source's tasks wait in, which decides how far ahead it is fed and
/// whether its waiting tasks may move to an idle source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SourceClass {
    /// Processes on this machine: launched at once, never more than its slots handed over.
    #[default]
    Local,
    /// An agent running processes: fed a few attempts beyond its slots when tasks are short
    /// (`pace::ahead`); attempts waiting there behind its slots may move to an idle source.
    Agent,
    /// A batch scheduler (an agent's or this host's Slurm/PBS): its slots are queue places, not
    /// idle workers, so it never takes tasks from others; a job still pending after
    /// `steal_after` may move to an idle source.
    Batch,
}

/// A compute source as the core sees it.
#[derive(Debug, Clone)]
pub struct SourceState {
    pub name: String,
    pub slots: usize,
    /// Attempts handed to it and not finished (waiting there or running).
    pub running: usize,
    /// Unhealthy sources get no new work.
    pub healthy: bool,
    /// Only here to finish attempts it already holds (`sweep complete` taking up a sweep whose
    /// coordinator died, on other sources): never gets new work.
    pub attach_only: bool,
    pub class: SourceClass,
    /// Round trip of a dispatch to it, in ms (what an idle slot waits for its next task).
    pub latency_ms: u32,
    /// How many tasks it really runs at once, when it said (an agent's own `--slots`, which
    /// may be fewer than the `slots` the project configured for it).
    pub parallel: Option<usize>,
    /// Attempts handed to it that have not started, by task index, with when (unix ms).
    waiting: BTreeMap<u64, i64>,
    /// Tasks being taken from other sources for it (their holders have not confirmed yet).
    incoming: usize,
    /// Its waiting tasks being taken for other sources.
    outgoing: usize,
}

impl SourceState {
    pub fn new(name: impl Into<String>, slots: usize) -> Self {
        SourceState {
            name: name.into(),
            slots: slots.max(1),
            running: 0,
            healthy: true,
            attach_only: false,
            class: SourceClass::Local,
            latency_ms: 0,
            parallel: None,
            waiting: BTreeMap::new(),
            incoming: 0,
            outgoing: 0,
        }
    }

    /// The same source of another class; agents start with the fixed overhead as latency.
    pub fn with_class(mut self, class: SourceClass) -> Self {
        self.class = class;
        if class != SourceClass::Local {
            self.latency_ms = pace::REMOTE_OVERHEAD_MS;
        }
        self
    }

    /// A source that only finishes the attempts it holds.
    pub fn attach_only(name: impl Into<String>) -> Self {
        SourceState {
            attach_only: true,
            ..SourceState::new(name, 1)
        }
    }

    fn usable(&self) -> bool {
        self.healthy && !self.attach_only
    }

    /// The slots that really run tasks: an agent configured with more slots than it runs only
    /// makes tasks wait there. A batch scheduler's slots are queue places, whatever its agent
    /// runs itself.
    fn effective_slots(&self) -> usize {
        match (self.class, self.parallel) {
            (SourceClass::Agent, Some(parallel)) => self.slots.min(parallel),
            _ => self.slots,
        }
    }

    /// Slots with nothing handed to them.
    fn free(&self) -> usize {
        if self.usable() {
            self.effective_slots()
                .saturating_sub(self.running + self.incoming)
        } else {
            0
        }
    }

    /// Room for attempts to wait behind its slots.
    fn free_ahead(&self, mean_ms: Option<f64>) -> usize {
        if !self.usable() || self.class != SourceClass::Agent {
            return 0;
        }
        let slots = self.effective_slots();
        let capacity = slots + pace::ahead(slots, self.latency_ms, mean_ms);
        capacity.saturating_sub(self.running + self.incoming)
    }

    /// Attempts waiting there that no slot of it will start next: those beyond its slots not
    /// running (and not already being taken).
    fn surplus(&self) -> usize {
        let started = self.running.saturating_sub(self.waiting.len());
        let free_there = self.effective_slots().saturating_sub(started);
        self.waiting
            .len()
            .saturating_sub(self.outgoing + free_there)
    }
}

/// One task as the core tracks it. `attempt` is the attempt currently assigned (0 = never run).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskState {
    pub index: u64,
    pub status: TaskStatus,
    pub attempt: u32,
    pub source: Option<usize>,
    /// Automatic retries still allowed in this run.
    pub retries_left: u32,
    /// The current attempt's process id (local) once it started.
    pub pid: Option<u32>,
    /// Attempts lost in this run while running (their source or agent could not say how they
    /// ended).
    pub lost: u32,
}

/// Attempts of one task that may be lost while running in a run before it ends failed instead
/// of running again: a task that takes its host down (memory, a kernel bug) would otherwise be run, and
/// bring the host down, for ever. `sweep complete` runs it again.
pub const LOST_LIMIT: u32 = 3;

/// Default of `defaults.steal_after`: five minutes pending in a batch queue.
pub const DEFAULT_STEAL_AFTER_MS: i64 = 5 * 60 * 1000;

/// A durable change of one task (the store writes these in batches).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub index: u64,
    pub attempt: u32,
    pub status: TaskStatus,
    /// Source name, when assigned.
    pub source: Option<String>,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    /// Unix milliseconds.
    pub at: i64,
    /// The process id (local), once known.
    pub pid: Option<u32>,
    /// The batch scheduler's job id of the attempt (`123_4`, `56[7].server`). A change that
    /// carries one records only that: the task's status is unchanged and no history row is
    /// written.
    pub job_id: Option<String>,
    /// The last lines of a failed attempt's stderr (`core::failure`), filled in by the shell
    /// that read them.
    pub stderr_tail: Option<String>,
    /// What the attempt used (wall time, CPU, peak memory), when its source measured it; a
    /// change that carries it with an ending status records it with the attempt.
    pub usage: Option<Usage>,
}

impl Change {
    /// A change of attempt `attempt` of task `index` to `status` at `at` (unix ms), nothing
    /// else known: the other fields are set with struct update syntax.
    pub fn new(
        index: u64,
        attempt: u32,
        status: TaskStatus,
        source: Option<String>,
        at: i64,
    ) -> Change {
        Change {
            index,
            attempt,
            status,
            source,
            exit_code: None,
            reason: None,
            at,
            pid: None,
            job_id: None,
            stderr_tail: None,
            usage: None,
        }
    }
}

/// What one attempt used. Each field is `None` when the source could not measure it (a
/// scheduler without accounting, an older agent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Wall time from start to exit, milliseconds.
    pub wall_ms: Option<u64>,
    /// CPU time in user mode, milliseconds (the process and the children it waited for).
    pub cpu_user_ms: Option<u64>,
    /// CPU time in kernel mode, milliseconds.
    pub cpu_sys_ms: Option<u64>,
    /// Peak resident set size, KiB.
    pub max_rss_kb: Option<u64>,
}

/// Something the shells must carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Start attempt `attempt` of task `index` on source number `source`.
    Launch {
        index: u64,
        attempt: u32,
        source: usize,
    },
    /// Stop attempt `attempt` of task `index` on source number `source`.
    Cancel {
        index: u64,
        attempt: u32,
        source: usize,
    },
    /// Take up again attempt `attempt` of task `index`, which source number `source` holds from
    /// an earlier run (its coordinator died): its reports count as if this run had launched it.
    Attach {
        index: u64,
        attempt: u32,
        source: usize,
    },
    /// Take back attempt `attempt` of task `index`, handed to source number `source` and not
    /// started there: the source drops it (stops it, should it have started meanwhile) and
    /// reports nothing more about it. The task runs as a new attempt elsewhere.
    Withdraw {
        index: u64,
        attempt: u32,
        source: usize,
    },
    /// Ask source number `source` to drop attempt `attempt` of task `index` if it has not
    /// started there, so that an idle source can run it. Nothing moves until the source answers:
    /// the attempt ends `Cancelled` (dropped; the task runs again elsewhere as a new attempt) or
    /// starts (it stays), so a task never runs in two places.
    Steal {
        index: u64,
        attempt: u32,
        source: usize,
    },
}

/// Counts per status over the tasks of the sweep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub pending: u64,
    pub queued: u64,
    pub running: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
}

impl FromIterator<TaskStatus> for Counts {
    fn from_iter<I: IntoIterator<Item = TaskStatus>>(statuses: I) -> Self {
        let mut counts = Counts::default();
        for status in statuses {
            counts.add(status);
        }
        counts
    }
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.pending + self.queued + self.running + self.completed + self.failed + self.cancelled
    }

    pub fn add(&mut self, status: TaskStatus) {
        *self.slot(status) += 1;
    }

    /// `completed 4 · failed 1 · cancelled 0 · running 2 · queued 0 · pending 3`: the line
    /// `sweep status` and `sweep watch` show.
    pub fn breakdown(&self) -> String {
        format!(
            "completed {} · failed {} · cancelled {} · running {} · queued {} · pending {}",
            self.completed, self.failed, self.cancelled, self.running, self.queued, self.pending
        )
    }

    fn remove(&mut self, status: TaskStatus) {
        let slot = self.slot(status);
        *slot = slot.saturating_sub(1);
    }

    pub fn get(&self, status: TaskStatus) -> u64 {
        match status {
            TaskStatus::Pending => self.pending,
            TaskStatus::Queued => self.queued,
            TaskStatus::Running => self.running,
            TaskStatus::Completed => self.completed,
            TaskStatus::Failed => self.failed,
            TaskStatus::Cancelled => self.cancelled,
        }
    }

    fn slot(&mut self, status: TaskStatus) -> &mut u64 {
        match status {
            TaskStatus::Pending => &mut self.pending,
            TaskStatus::Queued => &mut self.queued,
            TaskStatus::Running => &mut self.running,
            TaskStatus::Completed => &mut self.completed,
            TaskStatus::Failed => &mut self.failed,
            TaskStatus::Cancelled => &mut self.cancelled,
        }
    }
}

/// The state of one run over a sweep's tasks.
///
/// Only the tasks handed to `enqueue` are run; the others are carried for counting. Every input
/// is a `handle_*` call; outputs are drained with `poll_*`.
#[derive(Debug)]
pub struct SweepCore {
    /// Indexed by task index - 1.
    tasks: Vec<TaskState>,
    sources: Vec<SourceState>,
    strategy: Strategy,
    /// Tasks waiting for a slot, in order.
    queue: VecDeque<u64>,
    /// Tasks of this run that have not reached a final status.
    open: u64,
    dispatching: bool,
    round_robin_next: usize,
    counts: Counts,
    changes: Vec<Change>,
    /// Commands waiting for the next `poll_dispatch` (attachments).
    pending: Vec<Command>,
    /// Durations of this run's attempts that ended, for pacing.
    durations: Durations,
    /// When the current attempt of a running task started (unix ms), by task index.
    started_at: HashMap<u64, i64>,
    /// Tasks asked back from their source for an idle one, by task index.
    stealing: HashMap<u64, Steal>,
    /// Tasks given back for an idle source, to be launched there: task index → source.
    moved_to: HashMap<u64, usize>,
    /// Tasks moved once in this run: never asked back again (a task handed on to another
    /// waiting place is not chased around a busy sweep).
    moved: std::collections::HashSet<u64>,
    /// How long a task waits in a batch scheduler's queue before it may move to an idle source
    /// (ms); `None`: never.
    steal_after_ms: Option<i64>,
    /// Attempts taken up from an earlier run (`attach`) that their source has said nothing
    /// about in this one: recorded queued, they may have started since. A drain does not take
    /// them back (that could run the task twice, or start the taken-back attempt when the
    /// source takes it up); they finish there or are lost with the source.
    taken_up: std::collections::HashSet<(u64, u32)>,
    /// Attempts asked back from a drained source, by task index: the attempt and why. Such an
    /// attempt stays its source's until the source answers (it may have started there, its
    /// `Started` lost with a connection): dropped, it runs again elsewhere as a new attempt;
    /// started, it stays.
    reclaiming: HashMap<u64, (u32, String)>,
}

/// A task asked back from the source holding it (`Command::Steal`), not yet answered.
#[derive(Debug, Clone, Copy)]
struct Steal {
    attempt: u32,
    victim: usize,
    thief: usize,
}

impl SweepCore {
    /// `tasks` must hold every task of the sweep, with indices 1..=N in order.
    pub fn new(tasks: Vec<TaskState>, sources: Vec<SourceState>, strategy: Strategy) -> Self {
        let counts = tasks.iter().map(|t| t.status).collect();
        SweepCore {
            tasks,
            sources,
            strategy,
            queue: VecDeque::new(),
            open: 0,
            dispatching: true,
            round_robin_next: 0,
            counts,
            changes: Vec::new(),
            pending: Vec::new(),
            durations: Durations::default(),
            started_at: HashMap::new(),
            stealing: HashMap::new(),
            moved_to: HashMap::new(),
            moved: std::collections::HashSet::new(),
            steal_after_ms: Some(DEFAULT_STEAL_AFTER_MS),
            taken_up: std::collections::HashSet::new(),
            reclaiming: HashMap::new(),
        }
    }

    /// How long a job must have been pending in a batch scheduler before it may move to an idle
    /// source; `None`: never.
    pub fn with_steal_after(mut self, after: Option<std::time::Duration>) -> Self {
        self.steal_after_ms = after.map(|d| d.as_millis().min(i64::MAX as u128) as i64);
        self
    }

    /// The mean duration of this run's attempts so far, in ms.
    pub fn mean_duration_ms(&self) -> Option<f64> {
        self.durations.mean_ms()
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    pub fn sources(&self) -> &[SourceState] {
        &self.sources
    }

    pub fn task(&self, index: u64) -> Option<&TaskState> {
        self.tasks.get(index.checked_sub(1)? as usize)
    }

    /// Tasks of this run not yet final.
    pub fn open(&self) -> u64 {
        self.open
    }

    /// True when nothing of this run is left to wait for.
    pub fn is_finished(&self) -> bool {
        self.open == 0 || (!self.dispatching && self.n_in_flight() == 0)
    }

    fn n_in_flight(&self) -> usize {
        self.sources.iter().map(|s| s.running).sum()
    }

    /// Adds tasks to this run, in the given order, each allowed `retries` automatic retries.
    /// Tasks that are already queued or running in this run are left alone.
    pub fn enqueue(&mut self, indices: &[u64], retries: u32, now: i64) {
        for &index in indices {
            let Some(task) = self.task_mut(index) else {
                continue;
            };
            if matches!(task.status, TaskStatus::Queued | TaskStatus::Running)
                && task.source.is_some()
            {
                continue;
            }
            task.retries_left = retries;
            let attempt = task.attempt;
            // Only a real transition is a change: a fresh sweep's tasks are pending already, and
            // a change per task would make the store rewrite every status.yaml up front.
            if task.status != TaskStatus::Pending {
                self.set_status(index, TaskStatus::Pending, attempt, None, None, now);
            }
            self.queue.push_back(index);
            self.open += 1;
        }
    }

    /// Takes up attempts that sources hold from an earlier run whose coordinator died: each task
    /// (recorded queued or running with that attempt) counts as this run's, running on
    /// `source`, and its reports apply as if this run had launched it; `retries` as for
    /// `enqueue`. The `Attach` commands come with the next `poll_dispatch`. Tasks not in that
    /// state are left alone.
    pub fn attach(&mut self, attempts: &[(u64, u32, usize)], retries: u32, now: i64) {
        for &(index, attempt, source) in attempts {
            if source >= self.sources.len() {
                continue;
            }
            let Some(task) = self.task_mut(index) else {
                continue;
            };
            if task.attempt != attempt
                || !matches!(task.status, TaskStatus::Queued | TaskStatus::Running)
                || task.source.is_some()
            {
                continue;
            }
            task.source = Some(source);
            task.retries_left = retries;
            if task.status == TaskStatus::Queued {
                self.sources[source].waiting.insert(index, now);
            }
            self.taken_up.insert((index, attempt));
            self.sources[source].running += 1;
            self.open += 1;
            self.pending.push(Command::Attach {
                index,
                attempt,
                source,
            });
        }
    }

    /// Assigns queued tasks to sources with free slots, as the strategy says. Each returned
    /// command starts a new attempt (attempt + 1).
    pub fn poll_dispatch(&mut self, now: i64) -> Vec<Command> {
        let mut commands = std::mem::take(&mut self.pending);
        while self.dispatching {
            let Some(&index) = self.queue.front() else {
                break;
            };
            // A task just moved for an idle source goes there, not back where it waited.
            let target = self
                .moved_to
                .remove(&index)
                .filter(|&thief| self.sources[thief].free() > 0);
            let Some(source) = target.or_else(|| self.choose_source()) else {
                break;
            };
            self.queue.pop_front();
            let attempt = self.tasks[(index - 1) as usize].attempt + 1;
            self.sources[source].running += 1;
            self.tasks[(index - 1) as usize].source = Some(source);
            self.set_status(index, TaskStatus::Queued, attempt, Some(source), None, now);
            commands.push(Command::Launch {
                index,
                attempt,
                source,
            });
        }
        if self.dispatching && self.queue.is_empty() {
            self.steal_for_idle(now, &mut commands);
        }
        commands
    }

    /// The source for the next task: one with an idle slot, as the strategy says; else, only
    /// when none has one, an agent with room to keep a task waiting behind its slots.
    fn choose_source(&mut self) -> Option<usize> {
        let mean = self.durations.mean_ms();
        self.choose_by(|s| s.free())
            .or_else(|| self.choose_by(|s| s.free_ahead(mean)))
    }

    fn choose_by(&mut self, room: impl Fn(&SourceState) -> usize) -> Option<usize> {
        let n = self.sources.len();
        if n == 0 {
            return None;
        }
        match self.strategy {
            Strategy::RoundRobin => {
                for offset in 0..n {
                    let candidate = (self.round_robin_next + offset) % n;
                    if room(&self.sources[candidate]) > 0 {
                        self.round_robin_next = (candidate + 1) % n;
                        return Some(candidate);
                    }
                }
                None
            }
            Strategy::LeastLoaded => {
                (0..n)
                    .filter(|&i| room(&self.sources[i]) > 0)
                    .min_by(|&a, &b| {
                        let load = |i: usize| {
                            self.sources[i].running as f64 / self.sources[i].slots as f64
                        };
                        load(a).total_cmp(&load(b))
                    })
            }
            Strategy::Capacity => (0..n)
                .filter(|&i| room(&self.sources[i]) > 0)
                .max_by_key(|&i| (room(&self.sources[i]), std::cmp::Reverse(i))),
        }
    }

    /// A source became usable or unusable (an agent connected or was lost). An unusable source
    /// gets no new work; `slots`, when given, replaces its slot count.
    pub fn handle_source_status(&mut self, source: usize, healthy: bool, slots: Option<usize>) {
        if let Some(s) = self.sources.get_mut(source) {
            s.healthy = healthy;
            if let Some(slots) = slots {
                s.slots = slots.max(1);
            }
        }
    }

    /// The source said how many tasks it runs at once (it may be fewer than its configured
    /// slots: the rest of what it is handed waits there, and may move to an idle source).
    pub fn handle_source_parallel(&mut self, source: usize, parallel: usize) {
        if let Some(s) = self.sources.get_mut(source) {
            s.parallel = Some(parallel.max(1));
        }
    }

    /// The network round trip to a remote source was measured (`rtt_ms`): its dispatch latency
    /// is that plus the fixed overhead of event and submit batching.
    pub fn handle_source_latency(&mut self, source: usize, rtt_ms: u32) {
        if let Some(s) = self.sources.get_mut(source) {
            if s.class != SourceClass::Local {
                s.latency_ms = rtt_ms.saturating_add(pace::REMOTE_OVERHEAD_MS);
            }
        }
    }

    /// The source cannot take work now (its heartbeat stopped, its disk is low): it gets no new
    /// work and the attempts handed to it that have not started are asked back. Each stays the
    /// source's until it answers (nobody can tell whether one started meanwhile, its report
    /// lost with the connection): one it dropped runs elsewhere as a new attempt (not counted
    /// against retries), one it started stays. Running attempts stay: they finish there, or are
    /// lost with the source.
    pub fn handle_source_drain(&mut self, source: usize, why: &str, _now: i64) -> Vec<Command> {
        let Some(name) = self.sources.get(source).map(|s| s.name.clone()) else {
            return Vec::new();
        };
        self.sources[source].healthy = false;
        let queued: Vec<(u64, u32)> = self
            .tasks
            .iter()
            .filter(|t| t.source == Some(source) && t.status == TaskStatus::Queued)
            .map(|t| (t.index, t.attempt))
            .filter(|key| !self.taken_up.contains(key))
            // Already asked back (for an idle source, or by an earlier drain): that answer
            // moves it.
            .filter(|(index, _)| {
                !self.stealing.contains_key(index) && !self.reclaiming.contains_key(index)
            })
            .collect();
        let mut commands = Vec::with_capacity(queued.len());
        for (index, attempt) in queued {
            let reason = format!("attempt {attempt} taken back from {name}: {why}");
            self.reclaiming.insert(index, (attempt, reason));
            commands.push(Command::Withdraw {
                index,
                attempt,
                source,
            });
        }
        commands
    }

    /// The answer to a drain's `Withdraw` came (the attempt started, ended or was lost): why
    /// it was asked back, if it was.
    fn settle_reclaim(&mut self, index: u64, attempt: u32) -> Option<String> {
        match self.reclaiming.get(&index) {
            Some((a, _)) if *a == attempt => self.reclaiming.remove(&index).map(|(_, why)| why),
            _ => None,
        }
    }

    /// The source is gone (unreachable past its grace period). Its queued and running attempts
    /// are lost: the tasks go back to the front of the queue and run again elsewhere as new
    /// attempts, without using up their retries (the loss was not the task's fault). A report
    /// from a lost attempt arriving later is stale and ignored like any other.
    pub fn handle_source_lost(&mut self, source: usize, now: i64) -> usize {
        let Some(name) = self.sources.get(source).map(|s| s.name.clone()) else {
            return 0;
        };
        self.sources[source].healthy = false;
        self.sources[source].running = 0;
        let lost: Vec<(u64, u32)> = self
            .tasks
            .iter()
            .filter(|t| {
                t.source == Some(source)
                    && matches!(t.status, TaskStatus::Queued | TaskStatus::Running)
            })
            .map(|t| (t.index, t.attempt))
            .collect();
        for &(index, attempt) in lost.iter().rev() {
            self.settle_steal(index, attempt);
            self.settle_reclaim(index, attempt);
            self.lose(
                index,
                attempt,
                Some(source),
                format!("lost with {name}"),
                now,
            );
        }
        lost.len()
    }

    /// An attempt nobody can say the end of (`why`): the task runs again as a new attempt
    /// without using a retry, unless this is its `LOST_LIMIT`th attempt in the run lost while
    /// running (one lost before it started says nothing about the task; one that brought its
    /// host down before its start was reported escapes the count, a narrow case).
    fn lose(&mut self, index: u64, attempt: u32, source: Option<usize>, why: String, now: i64) {
        let task = &mut self.tasks[(index - 1) as usize];
        if task.status == TaskStatus::Running {
            task.lost += 1;
        }
        if task.lost >= LOST_LIMIT {
            let reason = format!(
                "{why} (attempt {attempt}; {LOST_LIMIT} attempts lost in this run, so not run again: \
                 it may be what brings its host down; `sweep complete` runs it again)"
            );
            self.finish(
                index,
                TaskStatus::Failed,
                attempt,
                source,
                None,
                Some(reason),
                now,
            );
        } else {
            let task_reason = format!("attempt {attempt} {why}");
            self.requeue(index, attempt, TaskStatus::Failed, why, task_reason, now);
        }
    }

    /// Ends an attempt taken from its source (`ended` in its own history, with `why`; attempt
    /// rows ignore `pending`) and puts the task first in the queue for its next attempt, or
    /// leaves it pending for `sweep complete` when the run is stopping anyway (Ctrl-C).
    fn requeue(
        &mut self,
        index: u64,
        attempt: u32,
        ended: TaskStatus,
        why: String,
        task_reason: String,
        now: i64,
    ) {
        self.record(index, ended, attempt, None, None, Some(why), None, now);
        self.record(
            index,
            TaskStatus::Pending,
            attempt,
            None,
            None,
            Some(task_reason),
            None,
            now,
        );
        self.tasks[(index - 1) as usize].source = None;
        if self.dispatching {
            self.queue.push_front(index);
        } else {
            self.open = self.open.saturating_sub(1);
        }
    }

    /// The task, if `attempt` is its current one and still with a source (queued or running):
    /// what a source reports about any other attempt is stale.
    fn current_attempt(&self, index: u64, attempt: u32) -> Option<&TaskState> {
        self.task(index).filter(|t| {
            t.attempt == attempt && matches!(t.status, TaskStatus::Queued | TaskStatus::Running)
        })
    }

    /// The source handed the attempt to a batch scheduler as job `job_id`: kept with the task and
    /// the attempt (`sweep status` shows it). Stale attempts are ignored.
    pub fn handle_submitted(&mut self, index: u64, attempt: u32, job_id: String, now: i64) {
        let Some(task) = self.current_attempt(index, attempt) else {
            return;
        };
        let status = task.status;
        self.changes.push(Change {
            index,
            attempt,
            status,
            source: None,
            exit_code: None,
            reason: None,
            at: now,
            pid: None,
            job_id: Some(job_id),
            stderr_tail: None,
            usage: None,
        });
    }

    /// The source reports the attempt is running. Stale attempts are ignored.
    pub fn handle_started(&mut self, index: u64, attempt: u32, pid: Option<u32>, now: i64) {
        let Some(task) = self.task(index) else {
            return;
        };
        if task.attempt != attempt || task.status != TaskStatus::Queued {
            return;
        }
        let source = task.source;
        // Started before the source read the steal (or the drain's withdrawal): it stays there.
        self.settle_steal(index, attempt);
        self.settle_reclaim(index, attempt);
        self.started_at.insert(index, now);
        self.set_status(index, TaskStatus::Running, attempt, source, pid, now);
    }

    /// The source reports the attempt ended. A report for any attempt other than the current
    /// one, or for a task already final, is ignored: a result is accepted only from the attempt
    /// currently assigned. Failures with retries left go back to the queue as a new attempt.
    pub fn handle_exited(&mut self, index: u64, attempt: u32, exit: ExitKind, now: i64) {
        self.handle_exited_using(index, attempt, exit, None, now);
    }

    /// `handle_exited` with what the attempt used, which goes on the change that ends the
    /// attempt (and so onto its row in `sweep.db`).
    pub fn handle_exited_using(
        &mut self,
        index: u64,
        attempt: u32,
        exit: ExitKind,
        usage: Option<Usage>,
        now: i64,
    ) {
        let from = self.changes.len();
        self.end_attempt(index, attempt, exit, now);
        if let Some(usage) = usage {
            // A retry's `pending` change carries the ended attempt's number but is no attempt
            // row's; every other change of this attempt made here is its ending.
            for change in &mut self.changes[from..] {
                if change.index == index
                    && change.attempt == attempt
                    && change.status != TaskStatus::Pending
                    && change.job_id.is_none()
                {
                    change.usage = Some(usage);
                }
            }
        }
    }

    fn end_attempt(&mut self, index: u64, attempt: u32, exit: ExitKind, now: i64) {
        let Some(task) = self.current_attempt(index, attempt) else {
            return;
        };
        let source = task.source;
        self.taken_up.remove(&(index, attempt));
        if let Some(s) = source {
            self.sources[s].running = self.sources[s].running.saturating_sub(1);
        }
        if let Some(started) = self.started_at.remove(&index) {
            if matches!(exit, ExitKind::Success | ExitKind::Failure { .. }) {
                self.durations.observe(now.saturating_sub(started));
            }
        }
        if let Some(steal) = self.settle_steal(index, attempt) {
            if exit == ExitKind::Cancelled && self.dispatching {
                // Dropped by its holder as asked: it runs next, on the idle source.
                let from = self.sources[steal.victim].name.clone();
                let why = format!("moved from {from}, where it waited, to an idle source");
                self.requeue(index, attempt, TaskStatus::Cancelled, why.clone(), why, now);
                self.moved_to.insert(index, steal.thief);
                self.moved.insert(index);
                return;
            }
        }
        if let Some(why) = self.settle_reclaim(index, attempt) {
            if exit == ExitKind::Cancelled && self.dispatching {
                // Dropped by its drained source as asked: it runs next, elsewhere.
                self.requeue(index, attempt, TaskStatus::Cancelled, why.clone(), why, now);
                return;
            }
        }
        match exit {
            ExitKind::Success => self.finish(
                index,
                TaskStatus::Completed,
                attempt,
                source,
                Some(0),
                None,
                now,
            ),
            ExitKind::Cancelled => self.finish(
                index,
                TaskStatus::Cancelled,
                attempt,
                source,
                None,
                None,
                now,
            ),
            ExitKind::Lost { reason } => {
                let name = source
                    .and_then(|s| self.sources.get(s))
                    .map_or_else(|| "its source".to_string(), |s| s.name.clone());
                self.lose(index, attempt, source, format!("{reason} on {name}"), now);
            }
            ExitKind::Failure { exit_code, reason } => {
                let task = &mut self.tasks[(index - 1) as usize];
                if task.retries_left > 0 && self.dispatching {
                    task.retries_left -= 1;
                    // Record the failed attempt, then queue the next one.
                    self.finish(
                        index,
                        TaskStatus::Failed,
                        attempt,
                        source,
                        exit_code,
                        Some(reason),
                        now,
                    );
                    self.open += 1;
                    self.set_status(index, TaskStatus::Pending, attempt, None, None, now);
                    self.queue.push_back(index);
                } else {
                    self.finish(
                        index,
                        TaskStatus::Failed,
                        attempt,
                        source,
                        exit_code,
                        Some(reason),
                        now,
                    );
                }
            }
        }
    }

    /// Stop handing out work (Ctrl-C): queued tasks of this run stay pending for a later
    /// `sweep complete`; the returned commands stop the running ones.
    pub fn handle_interrupt(&mut self, _now: i64) -> Vec<Command> {
        self.dispatching = false;
        self.forget_steals();
        let dropped = self.queue.len() as u64;
        self.queue.clear();
        self.open = self.open.saturating_sub(dropped);
        self.cancel_commands()
    }

    /// Cancel the run (`sweep cancel`): tasks not started end cancelled; the returned commands
    /// stop the running ones, which end cancelled when their sources report it.
    pub fn handle_cancel(&mut self, now: i64) -> Vec<Command> {
        self.dispatching = false;
        self.forget_steals();
        while let Some(index) = self.queue.pop_front() {
            let attempt = self.tasks[(index - 1) as usize].attempt;
            self.finish(
                index,
                TaskStatus::Cancelled,
                attempt,
                None,
                None,
                Some("cancelled by `sweep cancel` before it started".into()),
                now,
            );
        }
        self.cancel_commands()
    }

    fn cancel_commands(&self) -> Vec<Command> {
        self.tasks
            .iter()
            .filter(|t| matches!(t.status, TaskStatus::Queued | TaskStatus::Running))
            .filter_map(|t| {
                Some(Command::Cancel {
                    index: t.index,
                    attempt: t.attempt,
                    source: t.source?,
                })
            })
            .collect()
    }

    /// Durable changes since the last call, in order.
    pub fn poll_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }

    fn task_mut(&mut self, index: u64) -> Option<&mut TaskState> {
        self.tasks.get_mut(index.checked_sub(1)? as usize)
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &mut self,
        index: u64,
        status: TaskStatus,
        attempt: u32,
        source: Option<usize>,
        exit_code: Option<i32>,
        reason: Option<String>,
        now: i64,
    ) {
        self.open = self.open.saturating_sub(1);
        self.record(index, status, attempt, source, exit_code, reason, None, now);
    }

    fn set_status(
        &mut self,
        index: u64,
        status: TaskStatus,
        attempt: u32,
        source: Option<usize>,
        pid: Option<u32>,
        now: i64,
    ) {
        self.record(index, status, attempt, source, None, None, pid, now);
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        index: u64,
        status: TaskStatus,
        attempt: u32,
        source: Option<usize>,
        exit_code: Option<i32>,
        reason: Option<String>,
        pid: Option<u32>,
        now: i64,
    ) {
        let slot = (index - 1) as usize;
        let old = self.tasks[slot].status;
        self.counts.remove(old);
        self.counts.add(status);
        // Keep each source's set of attempts waiting unstarted there.
        if old == TaskStatus::Queued {
            if let Some(s) = self.tasks[slot].source {
                self.sources[s].waiting.remove(&index);
            }
        }
        if status == TaskStatus::Queued {
            if let Some(s) = source.or(self.tasks[slot].source) {
                self.sources[s].waiting.insert(index, now);
            }
        }
        if old == TaskStatus::Running && status != TaskStatus::Running {
            self.started_at.remove(&index);
        }
        let task = &mut self.tasks[slot];
        if status == TaskStatus::Queued {
            task.pid = None;
        }
        if pid.is_some() {
            task.pid = pid;
        }
        task.status = status;
        task.attempt = attempt;
        if source.is_some() {
            task.source = source;
        }
        let pid = task.pid;
        let source_name = task.source.map(|s| self.sources[s].name.clone());
        self.changes.push(Change {
            index,
            attempt,
            status,
            source: source_name,
            exit_code,
            reason,
            at: now,
            pid,
            job_id: None,
            stderr_tail: None,
            usage: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core_with(n: u64, slots: &[usize], strategy: Strategy) -> SweepCore {
        let tasks = (1..=n)
            .map(|index| TaskState {
                index,
                status: TaskStatus::Pending,
                attempt: 0,
                source: None,
                retries_left: 0,
                pid: None,
                lost: 0,
            })
            .collect();
        let sources = slots
            .iter()
            .enumerate()
            .map(|(i, &s)| SourceState::new(format!("s{i}"), s))
            .collect();
        SweepCore::new(tasks, sources, strategy)
    }

    fn launches(commands: &[Command]) -> Vec<(u64, u32, usize)> {
        commands
            .iter()
            .filter_map(|c| match c {
                Command::Launch {
                    index,
                    attempt,
                    source,
                } => Some((*index, *attempt, *source)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn dispatch_fills_slots_in_order_and_refills_on_exit() {
        let mut core = core_with(5, &[2], Strategy::RoundRobin);
        core.enqueue(&[1, 2, 3, 4, 5], 0, 0);
        assert_eq!(launches(&core.poll_dispatch(1)), [(1, 1, 0), (2, 1, 0)]);
        assert!(core.poll_dispatch(1).is_empty(), "no free slot");
        core.handle_started(1, 1, Some(100), 2);
        core.handle_exited(1, 1, ExitKind::Success, 3);
        assert_eq!(launches(&core.poll_dispatch(3)), [(3, 1, 0)]);
        let c = core.counts();
        assert_eq!((c.completed, c.queued, c.pending), (1, 2, 2));
    }

    #[test]
    fn a_run_finishes_with_every_task_final() {
        let mut core = core_with(3, &[4], Strategy::RoundRobin);
        core.enqueue(&[1, 2, 3], 0, 0);
        for (index, attempt, _) in launches(&core.poll_dispatch(0)) {
            core.handle_started(index, attempt, None, 1);
            let exit = if index == 2 {
                ExitKind::Failure {
                    exit_code: Some(3),
                    reason: "exit code 3".into(),
                }
            } else {
                ExitKind::Success
            };
            core.handle_exited(index, attempt, exit, 2);
        }
        assert!(core.is_finished());
        let c = core.counts();
        assert_eq!((c.completed, c.failed), (2, 1));
        let failed: Vec<_> = core
            .poll_changes()
            .into_iter()
            .filter(|ch| ch.status == TaskStatus::Failed)
            .collect();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].exit_code, Some(3));
        assert_eq!(failed[0].source.as_deref(), Some("s0"));
    }

    #[test]
    fn retries_start_a_new_attempt_and_stale_reports_are_ignored() {
        let mut core = core_with(1, &[1], Strategy::RoundRobin);
        core.enqueue(&[1], 1, 0);
        assert_eq!(launches(&core.poll_dispatch(0)), [(1, 1, 0)]);
        core.handle_exited(
            1,
            1,
            ExitKind::Failure {
                exit_code: None,
                reason: "timeout".into(),
            },
            1,
        );
        assert!(!core.is_finished());
        assert_eq!(launches(&core.poll_dispatch(2)), [(1, 2, 0)]);
        // A late report from attempt 1 must not complete attempt 2.
        core.handle_exited(1, 1, ExitKind::Success, 3);
        assert_eq!(core.task(1).unwrap().status, TaskStatus::Queued);
        core.handle_exited(
            1,
            2,
            ExitKind::Failure {
                exit_code: Some(1),
                reason: "exit code 1".into(),
            },
            4,
        );
        assert!(core.is_finished());
        assert_eq!(core.task(1).unwrap().status, TaskStatus::Failed);
        assert_eq!(core.task(1).unwrap().attempt, 2);
    }

    #[test]
    fn what_an_attempt_used_goes_on_its_ending_change_only() {
        let used = Usage {
            wall_ms: Some(1_500),
            cpu_user_ms: Some(300),
            cpu_sys_ms: Some(20),
            max_rss_kb: Some(51_200),
        };
        let mut core = core_with(2, &[2], Strategy::RoundRobin);
        core.enqueue(&[1, 2], 1, 0);
        core.poll_dispatch(0);
        core.handle_started(1, 1, None, 1);
        core.handle_started(2, 1, None, 1);
        core.poll_changes();
        let failure = ExitKind::Failure {
            exit_code: Some(1),
            reason: "exit code 1".into(),
        };
        core.handle_exited_using(1, 1, failure, Some(used), 2);
        core.handle_exited_using(2, 1, ExitKind::Success, Some(used), 2);
        let changes = core.poll_changes();
        let of = |index, status| {
            changes
                .iter()
                .find(|c| c.index == index && c.status == status)
                .unwrap_or_else(|| panic!("no {status:?} change of {index}: {changes:?}"))
                .usage
        };
        assert_eq!(of(1, TaskStatus::Failed), Some(used));
        assert_eq!(
            of(1, TaskStatus::Pending),
            None,
            "the retry is no attempt row"
        );
        assert_eq!(of(2, TaskStatus::Completed), Some(used));
    }

    #[test]
    fn cancel_ends_unstarted_tasks_and_stops_running_ones() {
        let mut core = core_with(4, &[2], Strategy::RoundRobin);
        core.enqueue(&[1, 2, 3, 4], 0, 0);
        core.poll_dispatch(0);
        core.handle_started(1, 1, None, 0);
        let commands = core.handle_cancel(1);
        assert_eq!(commands.len(), 2);
        assert!(commands.iter().all(|c| matches!(c, Command::Cancel { .. })));
        assert_eq!(core.counts().cancelled, 2);
        assert!(!core.is_finished());
        core.handle_exited(1, 1, ExitKind::Cancelled, 2);
        core.handle_exited(2, 1, ExitKind::Cancelled, 2);
        assert!(core.is_finished());
        assert_eq!(core.counts().cancelled, 4);
        assert!(core.poll_dispatch(3).is_empty());
    }

    #[test]
    fn interrupt_keeps_unstarted_tasks_pending() {
        let mut core = core_with(4, &[1], Strategy::RoundRobin);
        core.enqueue(&[1, 2, 3, 4], 0, 0);
        core.poll_dispatch(0);
        assert_eq!(core.handle_interrupt(1).len(), 1);
        core.handle_exited(1, 1, ExitKind::Cancelled, 2);
        assert!(core.is_finished());
        let c = core.counts();
        assert_eq!((c.cancelled, c.pending), (1, 3));
    }

    #[test]
    fn strategies_spread_work_as_named() {
        let mut rr = core_with(4, &[2, 2], Strategy::RoundRobin);
        rr.enqueue(&[1, 2, 3, 4], 0, 0);
        let sources: Vec<_> = launches(&rr.poll_dispatch(0)).iter().map(|l| l.2).collect();
        assert_eq!(sources, [0, 1, 0, 1]);

        let mut cap = core_with(4, &[1, 3], Strategy::Capacity);
        cap.enqueue(&[1, 2, 3, 4], 0, 0);
        let sources: Vec<_> = launches(&cap.poll_dispatch(0))
            .iter()
            .map(|l| l.2)
            .collect();
        assert_eq!(sources, [1, 1, 0, 1]);

        let mut least = core_with(3, &[1, 4], Strategy::LeastLoaded);
        least.enqueue(&[1, 2, 3], 0, 0);
        let sources: Vec<_> = launches(&least.poll_dispatch(0))
            .iter()
            .map(|l| l.2)
            .collect();
        assert_eq!(sources, [0, 1, 1]);
    }

    #[test]
    fn a_lost_source_sends_its_tasks_elsewhere_as_new_attempts() {
        let mut core = core_with(4, &[2, 2], Strategy::RoundRobin);
        core.enqueue(&[1, 2, 3, 4], 0, 0);
        let first = launches(&core.poll_dispatch(0));
        assert_eq!(first, [(1, 1, 0), (2, 1, 1), (3, 1, 0), (4, 1, 1)]);
        core.handle_started(2, 1, None, 1);
        core.handle_exited(1, 1, ExitKind::Success, 2);
        assert_eq!(core.handle_source_lost(1, 3), 2);
        let again = launches(&core.poll_dispatch(4));
        assert_eq!(
            again,
            [(2, 2, 0)],
            "lost tasks first, on the surviving source"
        );
        // The lost attempt's late result is ignored; the new attempt decides.
        core.handle_exited(2, 1, ExitKind::Success, 5);
        assert_eq!(core.task(2).unwrap().status, TaskStatus::Queued);
        core.handle_exited(3, 1, ExitKind::Success, 6);
        assert_eq!(launches(&core.poll_dispatch(6)), [(4, 2, 0)]);
        core.handle_exited(2, 2, ExitKind::Success, 7);
        core.handle_exited(4, 2, ExitKind::Success, 8);
        assert!(core.is_finished());
        assert_eq!(core.counts().completed, 4);
        let lost: Vec<_> = core
            .poll_changes()
            .into_iter()
            .filter(|c| c.reason.as_deref().is_some_and(|r| r.contains("lost")))
            .map(|c| (c.index, c.status))
            .collect();
        assert_eq!(
            lost,
            [
                (4, TaskStatus::Failed),
                (4, TaskStatus::Pending),
                (2, TaskStatus::Failed),
                (2, TaskStatus::Pending)
            ],
            "the lost attempt ends failed in its history, the task waits for the next"
        );
    }

    #[test]
    fn attached_attempts_finish_where_they_are_and_new_work_avoids_attach_only_sources() {
        let tasks: Vec<TaskState> = (1..=4)
            .map(|index| TaskState {
                index,
                status: if index <= 2 {
                    TaskStatus::Running
                } else {
                    TaskStatus::Pending
                },
                attempt: u32::from(index <= 2),
                source: None,
                retries_left: 0,
                pid: None,
                lost: 0,
            })
            .collect();
        let sources = vec![
            SourceState::new("local", 1),
            SourceState::attach_only("old-agent"),
        ];
        let mut core = SweepCore::new(tasks, sources, Strategy::RoundRobin);
        core.enqueue(&[3, 4], 0, 0);
        core.attach(&[(1, 1, 1), (2, 1, 1), (3, 0, 1)], 0, 0);
        let commands = core.poll_dispatch(1);
        assert_eq!(
            commands,
            [
                Command::Attach {
                    index: 1,
                    attempt: 1,
                    source: 1
                },
                Command::Attach {
                    index: 2,
                    attempt: 1,
                    source: 1
                },
                Command::Launch {
                    index: 3,
                    attempt: 1,
                    source: 0
                },
            ],
            "task 3 is not held anywhere: it runs, on the source that takes new work"
        );
        core.handle_exited(1, 1, ExitKind::Success, 2);
        assert!(
            core.poll_dispatch(3).is_empty(),
            "the attach-only source's freed slot takes nothing new"
        );
        core.handle_exited(
            2,
            1,
            ExitKind::Lost {
                reason: "unknown to the agent".into(),
            },
            4,
        );
        core.handle_exited(3, 1, ExitKind::Success, 5);
        // The lost attempt goes first, on the source that takes new work, as attempt 2.
        assert_eq!(launches(&core.poll_dispatch(6)), [(2, 2, 0)]);
        core.handle_exited(2, 2, ExitKind::Success, 7);
        assert_eq!(launches(&core.poll_dispatch(8)), [(4, 1, 0)]);
        core.handle_exited(4, 1, ExitKind::Success, 8);
        assert!(core.is_finished());
        assert_eq!(core.counts().completed, 4);
    }

    #[test]
    fn a_job_id_is_recorded_for_the_current_attempt_only() {
        let mut core = core_with(1, &[1], Strategy::RoundRobin);
        core.enqueue(&[1], 0, 0);
        assert_eq!(launches(&core.poll_dispatch(0)), [(1, 1, 0)]);
        core.poll_changes();
        core.handle_submitted(1, 1, "40_0".into(), 1);
        core.handle_submitted(1, 2, "41_0".into(), 1);
        let changes = core.poll_changes();
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(
            (changes[0].job_id.as_deref(), changes[0].status),
            (Some("40_0"), TaskStatus::Queued)
        );
        assert_eq!(core.task(1).unwrap().status, TaskStatus::Queued);
        core.handle_exited(1, 1, ExitKind::Success, 2);
        core.handle_submitted(1, 1, "40_0".into(), 3);
        assert!(
            core.poll_changes().iter().all(|c| c.job_id.is_none()),
            "nothing for a finished attempt"
        );
    }

    #[test]
    fn a_lost_attempt_runs_again_without_using_a_retry() {
        let mut core = core_with(2, &[2], Strategy::RoundRobin);
        core.enqueue(&[1, 2], 0, 0);
        assert_eq!(launches(&core.poll_dispatch(0)), [(1, 1, 0), (2, 1, 0)]);
        core.handle_started(1, 1, None, 1);
        let lost = ExitKind::Lost {
            reason: "lost by the agent".into(),
        };
        core.handle_exited(1, 1, lost.clone(), 2);
        assert_eq!(core.task(1).unwrap().status, TaskStatus::Pending);
        assert_eq!(launches(&core.poll_dispatch(3)), [(1, 2, 0)]);
        // A report from the lost attempt arriving late changes nothing.
        core.handle_exited(1, 1, ExitKind::Success, 4);
        assert_eq!(core.task(1).unwrap().status, TaskStatus::Queued);
        core.handle_exited(1, 2, ExitKind::Success, 5);
        core.handle_exited(2, 1, ExitKind::Success, 6);
        assert!(core.is_finished());
        assert_eq!(core.counts().completed, 2);
        assert_eq!(core.counts().failed, 0, "no retry was needed or used");
    }

    #[test]
    fn a_task_lost_again_and_again_ends_failed_instead_of_running_for_ever() {
        let mut core = core_with(2, &[2, 2], Strategy::RoundRobin);
        core.enqueue(&[1, 2], 0, 0);
        assert_eq!(launches(&core.poll_dispatch(0)), [(1, 1, 0), (2, 1, 1)]);
        let lost = || ExitKind::Lost {
            reason: "lost by the agent".into(),
        };
        let attempts = |launched: Vec<(u64, u32, usize)>| -> Vec<(u64, u32)> {
            launched.iter().map(|l| (l.0, l.1)).collect()
        };
        core.handle_exited(2, 1, ExitKind::Success, 1);
        core.handle_started(1, 1, None, 1);
        core.handle_exited(1, 1, lost(), 1);
        assert_eq!(attempts(launches(&core.poll_dispatch(2))), [(1, 2)]);
        // Lost before it started: does not count.
        core.handle_exited(1, 2, lost(), 2);
        let again = launches(&core.poll_dispatch(2));
        assert_eq!(attempts(again.clone()), [(1, 3)]);
        // Its source lost with it while it ran counts too.
        core.handle_started(1, 3, None, 3);
        assert_eq!(core.handle_source_lost(again[0].2, 3), 1);
        core.handle_source_status(again[0].2, true, None);
        assert_eq!(attempts(launches(&core.poll_dispatch(4))), [(1, 4)]);
        core.handle_started(1, 4, None, 5);
        core.handle_exited(1, 4, lost(), 5);
        let task = core.task(1).unwrap();
        assert_eq!((task.status, task.attempt), (TaskStatus::Failed, 4));
        assert!(core.poll_dispatch(6).is_empty(), "not run a fifth time");
        assert!(core.is_finished());
        let counts = core.counts();
        assert_eq!((counts.completed, counts.failed), (1, 1));
        let reason = core
            .poll_changes()
            .into_iter()
            .filter(|c| c.index == 1 && c.status == TaskStatus::Failed)
            .filter_map(|c| c.reason)
            .next_back()
            .unwrap();
        assert!(
            reason.starts_with("lost by the agent on ") && reason.contains("3 attempts lost"),
            "{reason}"
        );
    }

    #[test]
    fn a_drained_source_keeps_the_attempts_taken_up_from_an_earlier_run() {
        // Found by the simulator (seed 227): `sweep complete` took up task 1's queued attempt
        // on an agent that was down; the drain withdrew it and ran attempt 2 elsewhere, and
        // when the agent came back the queued `Attach` made it start attempt 1 of a completed
        // task. What a source holds from an earlier run is unknown until it reports.
        let mut tasks: Vec<TaskState> = (1..=2)
            .map(|index| TaskState {
                index,
                status: TaskStatus::Queued,
                attempt: 1,
                source: None,
                retries_left: 0,
                pid: None,
                lost: 0,
            })
            .collect();
        tasks[1].status = TaskStatus::Pending;
        tasks[1].attempt = 0;
        let sources = vec![SourceState::new("s0", 1), SourceState::new("s1", 2)];
        let mut core = SweepCore::new(tasks, sources, Strategy::RoundRobin);
        core.handle_source_status(1, false, None);
        core.attach(&[(1, 1, 1)], 0, 0);
        core.enqueue(&[2], 0, 0);
        core.handle_source_status(0, false, None);
        core.handle_source_status(1, true, None);
        let commands = core.poll_dispatch(0);
        assert!(commands.contains(&Command::Attach {
            index: 1,
            attempt: 1,
            source: 1
        }));
        assert_eq!(launches(&commands), [(2, 1, 1)]);
        let taken = core.handle_source_drain(1, "unreachable", 1);
        assert_eq!(
            taken,
            [Command::Withdraw {
                index: 2,
                attempt: 1,
                source: 1
            }],
            "only the attempt this run handed over goes back"
        );
        assert_eq!(core.task(1).unwrap().status, TaskStatus::Queued);
        // Lost with the source after its grace (no answer came), both run again.
        assert_eq!(core.handle_source_lost(1, 2), 2);
        assert_eq!(core.task(1).unwrap().status, TaskStatus::Pending);
        assert_eq!(core.task(2).unwrap().status, TaskStatus::Pending);
    }

    #[test]
    fn a_drained_source_keeps_its_running_tasks_and_gives_back_the_queued_ones() {
        let mut core = core_with(6, &[1, 4], Strategy::RoundRobin);
        core.enqueue(&[1, 2, 3, 4, 5, 6], 0, 0);
        let first = launches(&core.poll_dispatch(0));
        assert_eq!(
            first,
            [(1, 1, 0), (2, 1, 1), (3, 1, 1), (4, 1, 1), (5, 1, 1)]
        );
        core.handle_started(2, 1, None, 1);
        let taken = core.handle_source_drain(1, "free disk low", 2);
        assert_eq!(
            taken,
            [3, 4, 5].map(|index| Command::Withdraw {
                index,
                attempt: 1,
                source: 1
            })
        );
        assert!(
            core.handle_source_drain(1, "free disk low", 2).is_empty(),
            "asked back once"
        );
        assert!(
            core.poll_dispatch(2).is_empty(),
            "source 0 is busy, 1 drained"
        );
        // Until the source answers, the attempts are its own: nothing runs them elsewhere.
        core.handle_exited(1, 1, ExitKind::Success, 3);
        assert_eq!(
            launches(&core.poll_dispatch(3)),
            [(6, 1, 0)],
            "only the task not handed out yet"
        );
        // It dropped 3 and 4; 5 had started (its report was on the way): it stays.
        core.handle_exited(3, 1, ExitKind::Cancelled, 4);
        core.handle_exited(4, 1, ExitKind::Cancelled, 4);
        core.handle_started(5, 1, None, 4);
        assert_eq!(core.task(3).unwrap().status, TaskStatus::Pending);
        assert_eq!(core.task(5).unwrap().status, TaskStatus::Running);
        core.handle_exited(6, 1, ExitKind::Success, 5);
        assert_eq!(
            launches(&core.poll_dispatch(5)),
            [(4, 2, 0)],
            "taken-back tasks first (the last answered first), as new attempts, on the healthy source"
        );
        // The running tasks finish where they are.
        core.handle_exited(2, 1, ExitKind::Success, 5);
        core.handle_exited(5, 1, ExitKind::Success, 5);
        core.handle_source_status(1, true, None);
        assert_eq!(launches(&core.poll_dispatch(6)), [(3, 2, 1)]);
        for (index, attempt) in [(3, 2), (4, 2)] {
            core.handle_exited(index, attempt, ExitKind::Success, 7);
        }
        assert!(core.is_finished());
        assert_eq!(core.counts().completed, 6);
        let reasons: Vec<_> = core
            .poll_changes()
            .into_iter()
            .filter(|c| c.status == TaskStatus::Cancelled)
            .filter_map(|c| c.reason.filter(|r| r.contains("taken back")))
            .collect();
        assert_eq!(reasons.len(), 2, "each taken-back attempt ends cancelled");
        assert_eq!(reasons[0], "attempt 1 taken back from s1: free disk low");
    }

    #[test]
    fn unhealthy_sources_get_no_work() {
        let mut core = core_with(2, &[1, 1], Strategy::RoundRobin);
        core.sources[0].healthy = false;
        core.enqueue(&[1, 2], 0, 0);
        assert_eq!(launches(&core.poll_dispatch(0)), [(1, 1, 1)]);
    }

    #[test]
    fn enqueue_records_only_real_transitions() {
        let mut core = core_with(3, &[1], Strategy::RoundRobin);
        core.tasks[1].status = TaskStatus::Failed;
        core.counts = Counts {
            pending: 2,
            failed: 1,
            ..Counts::default()
        };
        core.enqueue(&[1, 2, 3], 0, 0);
        let changes = core.poll_changes();
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(
            (changes[0].index, changes[0].status),
            (2, TaskStatus::Pending)
        );
        assert_eq!(core.counts().pending, 3);
    }

    #[test]
    fn status_names_round_trip() {
        for status in TaskStatus::ALL {
            assert_eq!(status.as_str().parse::<TaskStatus>(), Ok(status));
        }
        assert!("done".parse::<TaskStatus>().is_err());
    }

    fn classed(n: u64, sources: &[(usize, SourceClass)]) -> SweepCore {
        let mut core = core_with(n, &[], Strategy::RoundRobin);
        core.sources = sources
            .iter()
            .enumerate()
            .map(|(i, &(slots, class))| SourceState::new(format!("s{i}"), slots).with_class(class))
            .collect();
        core
    }

    fn steals(commands: &[Command]) -> Vec<(u64, u32, usize)> {
        commands
            .iter()
            .filter_map(|c| match c {
                Command::Steal {
                    index,
                    attempt,
                    source,
                } => Some((*index, *attempt, *source)),
                _ => None,
            })
            .collect()
    }

    fn per_source(commands: &[Command]) -> Vec<usize> {
        let mut counts = Vec::new();
        for (_, _, source) in launches(commands) {
            if counts.len() <= source {
                counts.resize(source + 1, 0);
            }
            counts[source] += 1;
        }
        counts
    }

    #[test]
    fn long_tasks_are_not_piled_on_the_first_agent_to_connect() {
        // local 2 slots, gpu1 4, gpu2 2 (not connected yet), 12 tasks of unknown length.
        use SourceClass::*;
        let mut core = classed(12, &[(2, Local), (4, Agent), (2, Agent)]);
        core.handle_source_status(2, false, None);
        core.enqueue(&(1..=12).collect::<Vec<_>>(), 0, 0);
        assert_eq!(per_source(&core.poll_dispatch(0)), [2, 4]);
        core.handle_source_status(2, true, None);
        assert_eq!(per_source(&core.poll_dispatch(1)), [0, 0, 2]);
        assert_eq!(
            core.counts().pending,
            4,
            "the rest waits for the first free slot"
        );
    }

    #[test]
    fn short_tasks_keep_a_pipeline_at_agents_and_long_ones_do_not() {
        use SourceClass::*;
        let mut core = classed(200, &[(2, Agent)]);
        core.enqueue(&(1..=200).collect::<Vec<_>>(), 0, 0);
        assert_eq!(launches(&core.poll_dispatch(0)).len(), 2);
        core.handle_started(1, 1, None, 10);
        core.handle_exited(1, 1, ExitKind::Success, 12); // 2 ms
        let handed = launches(&core.poll_dispatch(12)).len();
        assert_eq!(
            handed,
            1 + pace::ahead(2, pace::REMOTE_OVERHEAD_MS, Some(2.0))
        );
        assert!(handed > 10, "{handed}");

        let mut core = classed(20, &[(2, Agent)]);
        core.enqueue(&(1..=20).collect::<Vec<_>>(), 0, 0);
        core.poll_dispatch(0);
        core.handle_started(1, 1, None, 0);
        core.handle_exited(1, 1, ExitKind::Success, 60_000);
        assert_eq!(
            launches(&core.poll_dispatch(60_000)).len(),
            1,
            "only the freed slot"
        );
    }

    #[test]
    fn an_idle_source_takes_over_tasks_waiting_behind_busy_slots() {
        use SourceClass::*;
        // s1 was handed 4, then says it runs 2 at a time (restarted with fewer slots).
        let mut core = classed(6, &[(2, Local), (4, Agent)]);
        core.handle_source_status(0, false, None);
        core.enqueue(&[1, 2, 3, 4], 0, 0);
        assert_eq!(per_source(&core.poll_dispatch(0)), [0, 4]);
        core.handle_source_parallel(1, 2);
        core.handle_started(1, 1, None, 1);
        core.handle_started(2, 1, None, 1);
        core.handle_source_status(0, true, None);
        let commands = core.poll_dispatch(2);
        assert!(launches(&commands).is_empty());
        assert_eq!(
            steals(&commands),
            [(4, 1, 1), (3, 1, 1)],
            "last handed first"
        );
        assert!(
            steals(&core.poll_dispatch(3)).is_empty(),
            "asked once, and the idle slots are spoken for"
        );
        // 4 was dropped there: it runs locally as attempt 2, using no retry.
        core.handle_exited(4, 1, ExitKind::Cancelled, 4);
        assert_eq!(core.task(4).unwrap().status, TaskStatus::Pending);
        core.strategy = Strategy::Capacity; // would pick s1 (2 free of 4) but for the move
        core.handle_source_parallel(1, 4);
        assert_eq!(launches(&core.poll_dispatch(4)), [(4, 2, 0)]);
        // 3 had started before the agent read the request: it stays there.
        core.handle_started(3, 1, None, 5);
        assert!(steals(&core.poll_dispatch(5)).is_empty());
        core.handle_exited(3, 1, ExitKind::Success, 6);
        assert_eq!(core.task(3).unwrap().status, TaskStatus::Completed);
        let moved: Vec<_> = core
            .poll_changes()
            .into_iter()
            .filter(|c| c.index == 4 && c.status == TaskStatus::Cancelled)
            .collect();
        assert_eq!(moved.len(), 1);
        assert!(moved[0]
            .reason
            .as_deref()
            .unwrap()
            .starts_with("moved from s1"));
    }

    #[test]
    fn short_tasks_are_not_moved_and_batch_jobs_only_after_steal_after() {
        use SourceClass::*;
        let mut core = classed(3, &[(1, Local), (4, Agent)]);
        core.durations.observe(5);
        core.handle_source_status(0, false, None);
        core.enqueue(&[1, 2, 3], 0, 0);
        core.poll_dispatch(0);
        core.handle_source_status(1, true, Some(1));
        core.handle_source_status(0, true, None);
        assert!(steals(&core.poll_dispatch(1)).is_empty(), "5 ms tasks stay");

        let mut core = classed(2, &[(1, Local), (100, Batch)])
            .with_steal_after(Some(std::time::Duration::from_secs(60)));
        core.handle_source_status(0, false, None);
        core.enqueue(&[1, 2], 0, 0);
        core.poll_dispatch(1_000);
        core.handle_started(1, 1, None, 2_000);
        core.handle_source_status(0, true, None);
        assert!(steals(&core.poll_dispatch(30_000)).is_empty());
        assert_eq!(steals(&core.poll_dispatch(61_000)), [(2, 1, 1)]);
        assert!(
            steals(&classed(0, &[]).with_steal_after(None).poll_dispatch(0)).is_empty(),
            "no sources, nothing"
        );
    }

    #[test]
    fn a_sweep_cancel_while_a_move_is_asked_ends_the_task_cancelled() {
        use SourceClass::*;
        let mut core = classed(3, &[(1, Local), (3, Agent)]);
        core.handle_source_status(0, false, None);
        core.enqueue(&[1, 2, 3], 0, 0);
        core.poll_dispatch(0);
        core.handle_source_status(1, true, Some(1));
        core.handle_started(1, 1, None, 1);
        core.handle_source_status(0, true, None);
        assert_eq!(steals(&core.poll_dispatch(2)).len(), 1);
        core.handle_cancel(3);
        core.handle_exited(3, 1, ExitKind::Cancelled, 4);
        assert_eq!(core.task(3).unwrap().status, TaskStatus::Cancelled);
        assert!(core.poll_dispatch(5).is_empty());
    }

    #[test]
    fn a_task_is_moved_once_at_most() {
        use SourceClass::*;
        let mut core = classed(3, &[(1, Local), (4, Agent)]);
        core.handle_source_status(0, false, None);
        core.enqueue(&[1, 2, 3], 0, 0);
        core.poll_dispatch(0);
        core.handle_source_parallel(1, 1);
        core.handle_started(1, 1, None, 1);
        core.handle_source_status(0, true, None);
        assert_eq!(steals(&core.poll_dispatch(2)), [(3, 1, 1)]);
        core.handle_exited(3, 1, ExitKind::Cancelled, 3);
        // The idle source got busy meanwhile: the moved task goes back to the agent...
        core.handle_source_status(0, false, None);
        core.handle_source_parallel(1, 4);
        assert_eq!(launches(&core.poll_dispatch(4)), [(3, 2, 1)]);
        core.handle_source_parallel(1, 1);
        core.handle_source_status(0, true, None);
        // ...and is not asked back a second time; task 2 still may be.
        assert_eq!(steals(&core.poll_dispatch(5)), [(2, 1, 1)]);
    }
}
