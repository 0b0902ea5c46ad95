//! The values a sweep run's state machine works with: task and source states, statuses,
//! strategies, the `Change`s it records and the `Command`s it gives.

use super::pace;
use std::collections::BTreeMap;
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
    pub(super) waiting: BTreeMap<u64, i64>,
    /// Tasks being taken from other sources for it (their holders have not confirmed yet).
    pub(super) incoming: usize,
    /// Its waiting tasks being taken for other sources.
    pub(super) outgoing: usize,
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

    pub(super) fn usable(&self) -> bool {
        self.healthy && !self.attach_only
    }

    /// The slots that really run tasks: an agent configured with more slots than it runs only
    /// makes tasks wait there. A batch scheduler's slots are queue places, whatever its agent
    /// runs itself.
    pub(super) fn effective_slots(&self) -> usize {
        match (self.class, self.parallel) {
            (SourceClass::Agent, Some(parallel)) => self.slots.min(parallel),
            _ => self.slots,
        }
    }

    /// Slots with nothing handed to them.
    pub(super) fn free(&self) -> usize {
        if self.usable() {
            self.effective_slots()
                .saturating_sub(self.running + self.incoming)
        } else {
            0
        }
    }

    /// Room for attempts to wait behind its slots.
    pub(super) fn free_ahead(&self, mean_ms: Option<f64>) -> usize {
        if !self.usable() || self.class != SourceClass::Agent {
            return 0;
        }
        let slots = self.effective_slots();
        let capacity = slots + pace::ahead(slots, self.latency_ms, mean_ms);
        capacity.saturating_sub(self.running + self.incoming)
    }

    /// Attempts waiting there that no slot of it will start next: those beyond its slots not
    /// running (and not already being taken).
    pub(super) fn surplus(&self) -> usize {
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

impl TaskState {
    /// Task `index` as a run starts with it: `status` and `attempt` as `sweep.db` recorded
    /// them, no source yet, no retries granted, nothing lost in this run.
    pub fn recorded(index: u64, status: TaskStatus, attempt: u32) -> TaskState {
        TaskState {
            index,
            status,
            attempt,
            source: None,
            retries_left: 0,
            pid: None,
            lost: 0,
        }
    }
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
    /// How a batch scheduler's accounting recorded the job (Slurm's State and ExitCode).
    pub scheduler: Option<hsm_protocol::SchedulerRecordMsg>,
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
    /// Ask back attempt `attempt` of task `index`, handed to drained source number `source` and
    /// not known to have started there: carried like a `Steal`. Nothing moves until the source
    /// answers: dropped (`Cancelled`), the task runs as a new attempt elsewhere; started, it
    /// stays.
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

    /// `n` more tasks in `status`.
    pub fn add_n(&mut self, status: TaskStatus, n: u64) {
        *self.slot(status) += n;
    }

    /// `completed 4 · failed 1 · cancelled 0 · running 2 · queued 0 · pending 3`: the line
    /// `sweep status` and `sweep watch` show.
    pub fn breakdown(&self) -> String {
        format!(
            "completed {} · failed {} · cancelled {} · running {} · queued {} · pending {}",
            self.completed, self.failed, self.cancelled, self.running, self.queued, self.pending
        )
    }

    pub(super) fn remove(&mut self, status: TaskStatus) {
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

    pub(super) fn slot(&mut self, status: TaskStatus) -> &mut u64 {
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
