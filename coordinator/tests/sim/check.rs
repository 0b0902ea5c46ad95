//! The invariants, checked as things happen and at the end: every task ends exactly once per
//! run; a completed task is never run again; at most one attempt of a task runs at a time
//! unless the earlier is known lost; a result is accepted only from the current attempt; an
//! event is acknowledged only once what it says is written; sequence numbers never repeat;
//! cancel reaches every running attempt.

use crate::coord::Store;
use hsm_coordinator::core::state::TaskStatus;
use hsm_exec::process::TaskKey;
use hsm_protocol::{EventKind, EventRef, TaskEventMsg};
use std::collections::{BTreeMap, BTreeSet};

pub struct Checker {
    tasks: u64,
    violation: Option<String>,
    run: u64,
    /// Tasks whose row ended final in this run, with the attempt.
    finals: BTreeMap<u64, u32>,
    /// Processes running now: (task, attempt) → agent.
    running: BTreeMap<(u64, u32), usize>,
    /// Every event an agent sent: (task, attempt, seq) → what it said.
    sent: BTreeMap<(u64, u32, u64), String>,
    /// Agents the coordinator gave up on at some point: their attempts are known lost.
    lost_agents: BTreeSet<usize>,
    cancelled: bool,
    pub stats: Stats,
}

/// What the seeds exercised, summed (shown with the result, so a fault mix that stopped
/// reaching some path shows).
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub starts: u64,
    pub runs: u64,
    pub steals: u64,
    pub withdrawals: u64,
    pub attaches: u64,
    pub cancels: u64,
    pub lost_sources: u64,
    pub agent_restarts: u64,
    /// Times an agent was out of rotation for a full disk.
    pub disk_low: u64,
}

impl Stats {
    pub fn add(&mut self, other: &Stats) {
        self.starts += other.starts;
        self.runs += other.runs;
        self.steals += other.steals;
        self.withdrawals += other.withdrawals;
        self.attaches += other.attaches;
        self.cancels += other.cancels;
        self.lost_sources += other.lost_sources;
        self.disk_low += other.disk_low;
        self.agent_restarts += other.agent_restarts;
    }
}

fn kind_text(kind: &EventKind) -> String {
    format!("{kind:?}")
}

impl Checker {
    pub fn new(tasks: u64) -> Checker {
        Checker {
            tasks,
            violation: None,
            run: 0,
            finals: BTreeMap::new(),
            running: BTreeMap::new(),
            sent: BTreeMap::new(),
            lost_agents: BTreeSet::new(),
            cancelled: false,
            stats: Stats::default(),
        }
    }

    pub fn fail(&mut self, what: String) {
        self.violation.get_or_insert(what);
    }

    pub fn take_violation(&mut self) -> Option<String> {
        self.violation.take()
    }

    pub fn run_started(&mut self, run: u64) {
        self.run = run;
        self.finals.clear();
        self.stats.runs += 1;
    }

    /// A batch is written: a task whose row ended final in an earlier batch of this run must
    /// not change again in this run (a retried failure's `failed` and `pending` come together).
    pub fn on_committed(&mut self, _run: u64, changes: &[hsm_coordinator::core::state::Change]) {
        let mut last: BTreeMap<u64, (TaskStatus, u32)> = BTreeMap::new();
        for change in changes {
            if change.job_id.is_some() {
                continue;
            }
            if let Some(&ended) = self.finals.get(&change.index) {
                self.fail(format!(
                    "exactly once: task {} ended in run {} (attempt {ended}), then changed to \
                     {:?} (attempt {})",
                    change.index, self.run, change.status, change.attempt
                ));
            }
            last.insert(change.index, (change.status, change.attempt));
        }
        for (index, (status, attempt)) in last {
            if status.is_final() {
                self.finals.insert(index, attempt);
            }
        }
    }

    pub fn run_ended(&mut self, store: &Store) {
        for index in 1..=self.tasks {
            let row = store.row(index);
            // After `sweep cancel`, an attempt lost with its agent leaves its task pending (for
            // `sweep complete`), as one interrupted does.
            let left_for_later = self.cancelled && row.status == TaskStatus::Pending;
            if !row.status.is_final() && !left_for_later {
                self.fail(format!(
                    "the run ended with task {index} {:?} (attempt {})",
                    row.status, row.attempt
                ));
            }
        }
    }

    pub fn proc_started(
        &mut self,
        agent: usize,
        index: u64,
        attempt: u32,
        _now: u64,
        store: &Store,
    ) {
        self.stats.starts += 1;
        let row = store.row(index);
        if row.status == TaskStatus::Completed {
            self.fail(format!(
                "completed task {index} (attempt {}) ran again: attempt {attempt} on agent {agent}",
                row.attempt
            ));
        }
        if let Some((&(_, other), &where_)) = self
            .running
            .range((index, attempt)..=(index, u32::MAX))
            .next()
        {
            self.fail(format!(
                "task {index}: attempt {attempt} started on agent {agent} while attempt {other} \
                 runs on agent {where_}"
            ));
        }
        if row.attempt > attempt {
            self.fail(format!(
                "task {index}: attempt {attempt} started on agent {agent} after the coordinator \
                 had recorded attempt {}",
                row.attempt
            ));
        }
        self.running.insert((index, attempt), agent);
    }

    pub fn proc_ended(&mut self, _agent: usize, index: u64, attempt: u32, _now: u64) {
        self.running.remove(&(index, attempt));
    }

    pub fn source_lost(&mut self, agent: usize) {
        self.stats.lost_sources += 1;
        self.lost_agents.insert(agent);
    }

    pub fn cancel_requested(&mut self) {
        self.cancelled = true;
    }

    /// A result file was written into the task directory, from attempt `key`; `current` is the
    /// task's attempt and status in the coordinator's core.
    pub fn result_written(&mut self, key: TaskKey, current: Option<(u32, TaskStatus)>) {
        let ok = matches!(current, Some((attempt, TaskStatus::Queued | TaskStatus::Running)) if attempt == key.attempt);
        if !ok {
            self.fail(format!(
                "task {}: a result of attempt {} was accepted while the task is {current:?}",
                key.index, key.attempt
            ));
        }
    }

    pub fn on_sent(&mut self, agent: usize, events: &[TaskEventMsg]) {
        for event in events {
            let key = (event.task.index.0, event.task.attempt.0, event.seq.0);
            let text = kind_text(&event.kind);
            match self.sent.get(&key) {
                Some(before) if *before != text => {
                    let before = before.clone();
                    self.fail(format!(
                        "sequence number reused: agent {agent} sent task {} attempt {} event {} \
                         as {text}, earlier as {before}",
                        key.0, key.1, key.2
                    ));
                }
                Some(_) => {}
                None => {
                    self.sent.insert(key, text);
                }
            }
        }
    }

    pub fn on_ack(&mut self, agent: usize, acks: &[EventRef]) {
        for ack in acks {
            let key = (ack.task.index.0, ack.task.attempt.0, ack.seq.0);
            if !self.sent.contains_key(&key) {
                self.fail(format!(
                    "agent {agent} got an acknowledgement of task {} attempt {} event {}, \
                     which no agent sent",
                    key.0, key.1, key.2
                ));
            }
        }
    }

    /// `running`: (agent, task, attempt) of every process still running at the end.
    pub fn at_end(&mut self, store: &Store, running: &[(usize, u64, u32)]) -> Result<(), String> {
        if let Some(v) = self.violation.take() {
            return Err(v);
        }
        for &(agent, index, attempt) in running {
            if self.lost_agents.contains(&agent) {
                continue;
            }
            let row = store.row(index);
            if row.attempt == attempt && row.status.is_final() {
                return Err(format!(
                    "task {index} ended {:?} in sweep.db, but its attempt {attempt} still runs on \
                     agent {agent}{}",
                    row.status,
                    if self.cancelled {
                        " (the cancel did not reach it)"
                    } else {
                        ""
                    }
                ));
            }
        }
        for index in 1..=self.tasks {
            let row = store.row(index);
            if row.status == TaskStatus::Completed {
                match store.files.get(&index) {
                    Some((attempt, _)) if *attempt == row.attempt => {}
                    other => {
                        return Err(format!(
                            "task {index} completed with attempt {} but its result file is {:?}",
                            row.attempt,
                            other.map(|o| o.0)
                        ))
                    }
                }
            }
        }
        Ok(())
    }
}
