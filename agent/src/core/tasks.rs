//! The core's task lifecycle: submissions (with parking behind an older attempt), what to launch
//! when slots free up, cancels and withdrawals, attach, and what the backends report.

use super::{AgentCore, BackendEvent, Kill, Launch, Phase, Record, Tail};
use crate::hpc::script::Scheduler;
use crate::ledger::{Op, StoredPhase, StoredTask};
use crate::scheduler::PendingElement;
use hsm_protocol::{
    CancelMsg, EventKind, JobScriptMsg, OutcomeMsg, SubmitMsg, SweepId, SweepTaskRef, TaskRef,
    UsageMsg,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

impl AgentCore {
    /// Queues the tasks of a submission. Returns one message per refused task (or one for the
    /// whole submission); the others are accepted. What can start comes out of
    /// [`AgentCore::poll_launches`]; an older attempt it supersedes is stopped.
    pub fn handle_submit(&mut self, msg: SubmitMsg, now_ms: i64) -> Vec<String> {
        if !super::valid_sweep_id(msg.sweep_id.as_str()) {
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
        let mut supersede = Vec::new();
        let mut never_run = Vec::new();
        let sweep_id = msg.sweep_id.clone();
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
            if let Some(&id) = self.by_ref.get(&key) {
                // Submitted again: a coordinator that restarted and did not know it had
                // handed this attempt over (it died before writing that down). Whatever was
                // reported before it knew was ignored by it, so the end is reported again,
                // as for `attach`.
                tracing::debug!(?key, "task attempt submitted again; taking it up");
                self.confirm(id);
                self.report_end_again(id, now_ms);
                continue;
            }
            let active_key = (msg.sweep_id.clone(), task.index.0);
            let mut park = false;
            if let Some(&old_id) = self.active.get(&active_key) {
                let old_attempt = self.tasks.get(&old_id).map_or(0, |r| r.task.attempt.0);
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
                if let Some(old) = self.tasks.get(&old_id) {
                    supersede.push(old.task);
                }
                park = true;
            }
            let dir = self
                .work_dir
                .join(msg.sweep_id.as_str())
                .join("tasks")
                .join(super::task_dir_name(task.index.0));
            let id = self.next_id;
            self.next_id += 1;
            self.tasks.insert(
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
                    exit: None,
                    usage: None,
                    offered: Vec::new(),
                    results_done: false,
                    output: [0, 0],
                },
            );
            self.by_ref.insert(key, id);
            if self.on_disk {
                let record = &self.tasks[&id];
                let op = Op::Accept(Box::new(StoredTask {
                    key: record.ledger_key(),
                    dir: record.dir.clone(),
                    template: Arc::clone(template),
                    args: record.args.clone(),
                    env: record.env.clone(),
                    phase: StoredPhase::Queued,
                    cancel_requested: false,
                    next_seq: 1,
                    output: [0, 0],
                    exit: None,
                    usage: None,
                    offered: Vec::new(),
                    results_done: false,
                    element: None,
                }));
                self.log(op);
            }
            if park {
                if let Some(earlier) = self.parked.insert(active_key, id) {
                    // Parked before and superseded by this one before it could run.
                    if let Some(record) = self.tasks.get_mut(&earlier) {
                        record.phase = Phase::Launching;
                    }
                    never_run.push(earlier);
                }
            } else {
                self.active.insert(active_key, id);
                if hpc {
                    self.hpc_queue.push_back(id);
                } else {
                    self.queue.push_back(id);
                }
            }
        }
        if !supersede.is_empty() {
            self.handle_cancel(
                &CancelMsg {
                    sweep_id,
                    tasks: supersede,
                    unstarted_only: false,
                },
                now_ms,
            );
        }
        for id in never_run {
            self.finish_unstarted(id, OutcomeMsg::Cancelled, now_ms);
        }
        refused
    }

    /// What starts now: every queued scheduler task (they use no slot), then queued process
    /// tasks while slots are free. Each comes out `Launching` (recorded); one that cannot be
    /// prepared is reported back as `Exited` with `SpawnFailed`.
    pub fn poll_launches(&mut self) -> Vec<Launch> {
        let mut launches = Vec::new();
        while let Some(id) = self.hpc_queue.pop_front() {
            if let Some(launch) = self.launch(id) {
                launches.push(launch);
            }
        }
        while self.busy < self.slots {
            let Some(id) = self.queue.pop_front() else {
                break;
            };
            if let Some(launch) = self.launch(id) {
                self.busy += 1;
                launches.push(launch);
            }
        }
        launches
    }

    /// Marks a popped queue entry `Launching`; `None` when it is no longer queued (cancelled).
    fn launch(&mut self, id: u64) -> Option<Launch> {
        let record = self.tasks.get_mut(&id)?;
        if record.phase != Phase::Queued {
            return None;
        }
        record.phase = Phase::Launching;
        let key = record.ledger_key();
        let launch = Launch {
            id,
            task: record.task,
            dir: record.dir.clone(),
            template: Arc::clone(&record.template),
            args: record.args.clone(),
            env: record.env.clone(),
        };
        self.log(Op::Phase(key, StoredPhase::Launching));
        Some(launch)
    }

    /// Stops tasks: running ones are killed ([`AgentCore::poll_kills`]: SIGTERM, then SIGKILL
    /// after the grace), queued ones never start and report `Exited{Cancelled}`. Unknown or
    /// finished tasks are ignored. With `unstarted_only` (see [`AgentCore::handle_withdraw`]),
    /// only queued ones (and scheduler jobs, which may still be pending) stop.
    pub fn handle_cancel(&mut self, msg: &CancelMsg, now_ms: i64) {
        let mut dropped = Vec::new();
        let ids: Vec<u64> = if msg.tasks.is_empty() {
            // In submission order, not the map's: the same commands give the same events
            // (a simulator replays a seed bit for bit).
            let mut ids: Vec<u64> = self
                .tasks
                .iter()
                .filter(|(_, r)| r.sweep_id == msg.sweep_id)
                .map(|(id, _)| *id)
                .collect();
            ids.sort_unstable();
            ids
        } else {
            msg.tasks
                .iter()
                .filter_map(|task| {
                    self.by_ref.get(&SweepTaskRef {
                        sweep_id: msg.sweep_id.clone(),
                        task: *task,
                    })
                })
                .copied()
                .collect()
        };
        for id in ids {
            let Some(record) = self.tasks.get_mut(&id) else {
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
                    self.kills.push(Kill { id, hpc: true });
                }
                // Only the unstarted were asked for (a coordinator moving waiting tasks
                // to an idle source): one being spawned or running stays.
                Phase::Launching | Phase::Running if msg.unstarted_only => {}
                // Not spawned yet: `Started` cancels it as soon as it is.
                Phase::Launching => record.cancel_requested = true,
                Phase::Running => {
                    record.cancel_requested = true;
                    self.kills.push(Kill {
                        id,
                        hpc: record.template.hpc.is_some(),
                    });
                }
                Phase::Draining | Phase::Finished => {}
            }
            if record.cancel_requested {
                let key = record.ledger_key();
                self.log(Op::Cancel(key));
            }
        }
        for id in dropped {
            self.finish_unstarted(id, OutcomeMsg::Cancelled, now_ms);
        }
    }

    /// Takes back attempts that have not started (a coordinator moving waiting tasks to an idle
    /// source): the `unstarted_only` cancel.
    pub fn handle_withdraw(&mut self, sweep_id: &SweepId, tasks: Vec<TaskRef>, now_ms: i64) {
        self.handle_cancel(
            &CancelMsg {
                sweep_id: sweep_id.clone(),
                tasks,
                unstarted_only: true,
            },
            now_ms,
        );
    }

    /// The sweeps with attempts that have not ended (`--on-coordinator-lost cancel` cancels
    /// each).
    pub fn live_sweeps(&self) -> Vec<SweepId> {
        let mut sweeps: Vec<SweepId> = self
            .tasks
            .values()
            .filter(|r| r.phase != Phase::Finished && r.phase != Phase::Draining)
            .map(|r| r.sweep_id.clone())
            .collect();
        sweeps.sort();
        sweeps.dedup();
        sweeps
    }

    /// A restarted coordinator takes up these attempts. Returns the ones not held here (it will
    /// hear nothing more about those). An attempt that finished and whose end the previous
    /// coordinator acknowledged (all its events are) reports its end again: that coordinator may
    /// have died before it wrote the end down. One with events still unacknowledged needs
    /// nothing: they are replayed to every session.
    pub fn handle_attach(&mut self, msg: &hsm_protocol::AttachMsg, now_ms: i64) -> Vec<TaskRef> {
        let mut unknown = Vec::new();
        for task in &msg.tasks {
            let key = SweepTaskRef {
                sweep_id: msg.sweep_id.clone(),
                task: *task,
            };
            let Some(&id) = self.by_ref.get(&key) else {
                unknown.push(*task);
                continue;
            };
            if !self.tasks.contains_key(&id) {
                unknown.push(*task);
                continue;
            }
            self.confirm(id);
            self.report_end_again(id, now_ms);
        }
        unknown
    }

    /// Attempts the agent holds that have not reported `Exited` yet: queued, running, or running
    /// out their output. The coordinator re-attaches these after a reconnect instead of
    /// re-running them.
    pub fn held(&self) -> Vec<SweepTaskRef> {
        let mut held: Vec<SweepTaskRef> = self
            .tasks
            .values()
            .filter(|r| r.phase != Phase::Finished)
            .map(Record::key)
            .collect();
        held.sort();
        held
    }

    /// Tasks about to go out to the scheduler under job name `name`: recorded before
    /// `sbatch`/`qsub` runs, so that a restart in between finds the job by its name instead of
    /// submitting the tasks a second time. Returns the barrier to wait for before submitting;
    /// `None` without a disk ledger (nothing to remember it in: the submission goes ahead).
    pub fn handle_submitting(
        &mut self,
        elements: Vec<(u64, Option<u32>)>,
        scheduler: Scheduler,
        name: String,
        packed: bool,
    ) -> Option<u64> {
        if !self.on_disk {
            return None;
        }
        for (id, index) in elements {
            let Some(ledger_key) = self.tasks.get(&id).map(Record::ledger_key) else {
                continue;
            };
            let pending = PendingElement {
                scheduler,
                name: name.clone(),
                index,
                packed,
            };
            self.log(Op::Element(ledger_key, pending.to_stored()));
        }
        self.barrier()
    }

    /// What a backend or the tailer reports. Answers `Drained` with the task directory whose
    /// `results/` to scan (then `ResultsScanned`); nothing otherwise.
    /// Whether attempt `id` belongs to a compact sweep (its files are tidied once delivered).
    pub fn is_compact(&self, id: u64) -> bool {
        self.tasks.get(&id).is_some_and(|r| r.template.compact)
    }

    pub fn handle_backend_event(&mut self, event: BackendEvent) -> Option<PathBuf> {
        match event {
            BackendEvent::Submitted {
                id,
                element,
                script,
            } => {
                let key = self.tasks.get(&id).map(Record::ledger_key)?;
                // Before the event: a restart must find the job to follow it again.
                self.log(Op::Element(key, element.to_stored()));
                self.append(
                    id,
                    EventKind::Submitted {
                        job_id: element.id(),
                        script: script.map(|(name, text)| JobScriptMsg { name, text }),
                    },
                );
            }
            BackendEvent::Started { id, pid, at_ms } => self.started(id, pid, at_ms),
            BackendEvent::Exited {
                id,
                outcome,
                at_ms,
                usage,
            } => self.exited(id, outcome, at_ms, usage),
            BackendEvent::Output { id, chunks } => {
                for (stream, data, offset) in chunks {
                    self.append_output(id, stream, data, offset);
                }
            }
            BackendEvent::Drained { id } => {
                let record = self.tasks.get_mut(&id)?;
                let (outcome, at_ms) = record.exit.clone()?;
                let dir = record.dir.clone();
                let usage = record.usage;
                self.append(
                    id,
                    EventKind::Exited {
                        outcome,
                        at_ms,
                        usage,
                    },
                );
                return Some(dir);
            }
            BackendEvent::ResultsScanned { id, files } => {
                if let Some(record) = self.tasks.get_mut(&id) {
                    record.offered = files.clone();
                    record.phase = Phase::Finished;
                    let active_key = (record.sweep_id.clone(), record.task.index.0);
                    let key = record.ledger_key();
                    self.release(active_key, id);
                    self.log(Op::Offered(key, files.clone()));
                }
                self.append(id, EventKind::ResultOffer { files });
            }
            BackendEvent::NeverRan { id, outcome, at_ms } => {
                self.finish_unstarted(id, outcome, at_ms)
            }
        }
        None
    }

    fn started(&mut self, id: u64, pid: u32, at_ms: i64) {
        let Some(record) = self.tasks.get_mut(&id) else {
            return;
        };
        record.phase = Phase::Running;
        let cancel = record.cancel_requested;
        let hpc = record.template.hpc.is_some();
        let tail = Tail {
            id,
            dir: record.dir.clone(),
            from: record.output,
        };
        let key = record.ledger_key();
        self.log(Op::Phase(key, StoredPhase::Running));
        self.append(id, EventKind::Started { pid, at_ms });
        if cancel && !hpc {
            self.kills.push(Kill { id, hpc: false });
        }
        self.tails.push(tail);
    }

    /// The process ended (or never started): frees the slot; a started task's tailer reports
    /// the exit once the output is drained, a never-started one is reported here.
    fn exited(&mut self, id: u64, outcome: OutcomeMsg, at_ms: i64, usage: Option<UsageMsg>) {
        let hpc = self
            .tasks
            .get(&id)
            .is_some_and(|r| r.template.hpc.is_some());
        if !hpc {
            self.busy = self.busy.saturating_sub(1);
        }
        match self.tasks.get_mut(&id) {
            Some(record) if record.phase == Phase::Launching => {
                self.finish_unstarted(id, outcome, at_ms);
            }
            Some(record) => {
                record.exit = Some((outcome.clone(), at_ms));
                record.usage = usage;
                record.phase = Phase::Draining;
                let key = record.ledger_key();
                self.wakes.push(id);
                self.log(Op::Exit(key, outcome, at_ms, usage));
            }
            None => {}
        }
    }

    /// `Exited` then an empty `ResultOffer` for an attempt that never ran.
    fn finish_unstarted(&mut self, id: u64, outcome: OutcomeMsg, at_ms: i64) {
        let Some(record) = self.tasks.get_mut(&id) else {
            return;
        };
        record.exit = Some((outcome.clone(), at_ms));
        record.phase = Phase::Finished;
        let active_key = (record.sweep_id.clone(), record.task.index.0);
        let key = record.ledger_key();
        self.release(active_key, id);
        self.log(Op::Exit(key.clone(), outcome.clone(), at_ms, None));
        self.log(Op::Offered(key, Vec::new()));
        self.append(
            id,
            EventKind::Exited {
                outcome,
                at_ms,
                usage: None,
            },
        );
        self.append(id, EventKind::ResultOffer { files: Vec::new() });
    }

    /// A coordinator confirmed attempt `id`: if it was waiting for that, it may start now.
    pub(super) fn confirm(&mut self, id: u64) {
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
    pub(super) fn enqueue(&mut self, id: u64) -> bool {
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
                let now = self.mono_ms;
                self.unclaimed_since.entry(key.0).or_insert(now);
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
}
