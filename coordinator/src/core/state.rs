//! The task state machine and dispatch policy of one sweep run: which task goes to which source
//! next, what an exit means, retries, cancellation, and stale attempts. Pure: time is an argument,
//! effects come out as `Change`s (to persist) and `Command`s (to carry out).

use super::pace::{self, Durations};

mod model;
mod sources;
mod steal;
#[cfg(test)]
mod tests;

pub use model::*;
use std::collections::{HashMap, VecDeque};

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
    /// Ranges of unstarted tasks cancelled in bulk, not yet polled.
    cancelled_unstarted: Vec<(u64, u64)>,
}

/// How many queued tasks `handle_cancel` cancels with a change each before the rest go by
/// range: more than the shell prepares ahead of launches.
pub const CANCEL_ONE_BY_ONE: usize = 1024;

/// Why a task cancelled before it started ended.
pub const CANCELLED_UNSTARTED: &str = "cancelled by `sweep cancel` before it started";

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
            cancelled_unstarted: Vec::new(),
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

    /// How many tasks the sweep has.
    pub fn total(&self) -> u64 {
        self.tasks.len() as u64
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
        // It stays marked as asked back until it ends: a batch scheduler's job that started in
        // the moment it was cancelled ends `Cancelled`, and then runs again elsewhere.
        if let Some(steal) = self.settle_steal(index, attempt) {
            let from = &self.sources[steal.victim].name;
            let why = format!(
                "attempt {attempt} stopped at {from} as it started (asked back for an idle source)"
            );
            self.reclaiming.entry(index).or_insert((attempt, why));
        }
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
        let started = self.started_at.remove(&index);
        // No earlier than it started: an agent's times are its host's clock (a cluster task's,
        // a compute node's), and its start may have been stamped when first noticed.
        let now = started.map_or(now, |s| now.max(s));
        if let Some(started) = started {
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
                // Dropped (or, a batch job that had just started, stopped) by its drained source
                // as asked: it runs next, elsewhere.
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
    /// stop the running ones, which end cancelled when their sources report it. The first
    /// `CANCEL_ONE_BY_ONE` tasks of the queue are changes like any other (they may have task
    /// directories prepared ahead, whose `status.yaml` must say so); the rest never got
    /// anything on disk and are cancelled by range (`poll_cancelled_unstarted`), so a cancelled
    /// million-task sweep is one statement, not a million changes.
    pub fn handle_cancel(&mut self, now: i64) -> Vec<Command> {
        self.dispatching = false;
        self.forget_steals();
        let mut rest = Vec::new();
        let mut n = 0;
        while let Some(index) = self.queue.pop_front() {
            let attempt = self.tasks[(index - 1) as usize].attempt;
            if n < CANCEL_ONE_BY_ONE {
                n += 1;
                self.finish(
                    index,
                    TaskStatus::Cancelled,
                    attempt,
                    None,
                    None,
                    Some(CANCELLED_UNSTARTED.into()),
                    now,
                );
                continue;
            }
            let task = &mut self.tasks[(index - 1) as usize];
            self.counts.remove(task.status);
            self.counts.add(TaskStatus::Cancelled);
            task.status = TaskStatus::Cancelled;
            self.open = self.open.saturating_sub(1);
            rest.push(index);
        }
        rest.sort_unstable();
        for index in rest {
            match self.cancelled_unstarted.last_mut() {
                Some((_, to)) if *to + 1 == index => *to = index,
                _ => self.cancelled_unstarted.push((index, index)),
            }
        }
        self.cancel_commands()
    }

    /// Ranges of tasks (inclusive) `handle_cancel` cancelled without a change each, since the
    /// last call: the store cancels them with `CANCELLED_UNSTARTED` as the reason.
    pub fn poll_cancelled_unstarted(&mut self) -> Vec<(u64, u64)> {
        std::mem::take(&mut self.cancelled_unstarted)
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
