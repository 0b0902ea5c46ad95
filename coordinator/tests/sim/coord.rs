//! The simulated coordinator: the real `SweepCore` and one real `AgentLink` per agent, with the
//! glue `SweepActor` and `AgentSource` have around them — the same `core::drive` rules (where
//! commands go, what a source's status does, orders and acknowledgements held until the batch
//! made with them is committed) over a modelled `sweep.db` (lost with a crash unless committed),
//! result files claimed against the offer, and `sweep complete`'s start from what was committed.

use crate::agent::{result_body, sha256_hex};
use crate::world::{Down, Ev, World, SWEEP};
use hsm_coordinator::core::drive::{self, Batch, Order, Route, WriteAhead};
use hsm_coordinator::core::link::{report_time, AgentLink, LinkSetup, Report};
use hsm_coordinator::core::plan::{plan_completion, CompletionRequest, RecordedTask};
use hsm_coordinator::core::state::{
    Change, Command, SourceClass, SourceState, Strategy, SweepCore, TaskState, TaskStatus,
};
use hsm_exec::process::TaskKey;
use hsm_protocol::TemplateMsg;
use std::collections::BTreeMap;
use std::time::Duration;

const FLUSH_EVERY_MS: u64 = 50;
const TICK_MS: u64 = 100;

/// A task's row in the modelled `sweep.db`.
#[derive(Debug, Clone)]
pub struct Row {
    pub status: TaskStatus,
    pub attempt: u32,
    pub source: Option<String>,
}

/// The durable part of the coordinator: committed rows, and the result files it received.
pub struct Store {
    pub rows: Vec<Row>,
    /// Task index → (attempt, bytes) of its `results/out.txt`.
    pub files: BTreeMap<u64, (u32, Vec<u8>)>,
}

impl Store {
    pub fn new(tasks: u64) -> Store {
        Store {
            rows: (0..tasks)
                .map(|_| Row {
                    status: TaskStatus::Pending,
                    attempt: 0,
                    source: None,
                })
                .collect(),
            files: BTreeMap::new(),
        }
    }

    pub fn row(&self, index: u64) -> &Row {
        &self.rows[(index - 1) as usize]
    }
}

pub struct Coord {
    pub core: SweepCore,
    pub links: Vec<AgentLink>,
    held: WriteAhead<Order>,
    batches: BTreeMap<u64, Batch<Order>>,
    next_batch: u64,
    last_commit_at: u64,
    cancelled: bool,
    finishing: bool,
}

fn template() -> TemplateMsg {
    TemplateMsg {
        id: 0,
        argv_prefix: vec!["sim-task".into()],
        env: Vec::new(),
        cwd: "/sim/project".into(),
        timeout_ms: None,
        kill_grace_ms: 1_000,
        hpc: None,
        compact: false,
    }
}

pub fn source_name(agent: usize) -> String {
    format!("agent{agent}")
}

impl World {
    /// Starts a run: the first (`fresh`), or `sweep complete` after a crash, from what
    /// `sweep.db` holds.
    pub fn coord_start(&mut self, fresh: bool) {
        self.coord_inc += 1;
        let inc = self.coord_inc;
        let n_agents = self.agents.len();
        let tasks: Vec<TaskState> = self
            .store
            .rows
            .iter()
            .enumerate()
            .map(|(i, row)| TaskState::recorded(i as u64 + 1, row.status, row.attempt))
            .collect();
        let sources = (0..n_agents)
            .map(|a| {
                SourceState::new(source_name(a), self.agents[a].slots)
                    .with_class(SourceClass::Agent)
            })
            .collect();
        let mut core = SweepCore::new(tasks, sources, Strategy::default());
        let now_ms = self.now_ms();
        let (to_run, attach) = if fresh {
            ((1..=self.cfg.tasks).collect::<Vec<u64>>(), Vec::new())
        } else {
            // Attempts an agent may hold from the run that died are taken up, not run again.
            let mut attach = Vec::new();
            for (i, row) in self.store.rows.iter().enumerate() {
                if !matches!(row.status, TaskStatus::Queued | TaskStatus::Running)
                    || row.attempt == 0
                {
                    continue;
                }
                let Some(source) = row
                    .source
                    .as_deref()
                    .and_then(|s| (0..n_agents).find(|a| source_name(*a) == s))
                else {
                    continue;
                };
                attach.push((i as u64 + 1, row.attempt, source));
            }
            let recorded: Vec<RecordedTask> = self
                .store
                .rows
                .iter()
                .enumerate()
                .map(|(i, row)| RecordedTask {
                    index: i as u64 + 1,
                    status: row.status,
                })
                .collect();
            let mut plan = plan_completion(
                &recorded,
                &CompletionRequest {
                    task_ids: None,
                    retry_failed: false,
                    max_runs: None,
                },
            );
            plan.runs.retain(|(i, _)| !attach.iter().any(|a| a.0 == *i));
            (plan.runs.iter().map(|r| r.0).collect(), attach)
        };
        core.enqueue(&to_run, self.cfg.retries, now_ms);
        core.attach(&attach, self.cfg.retries, now_ms);
        let links = (0..n_agents)
            .map(|a| {
                AgentLink::new(
                    LinkSetup {
                        name: source_name(a),
                        sweep_id: SWEEP.into(),
                        grace: Duration::from_millis(self.cfg.grace_ms),
                        min_free_disk: 1 << 30,
                        keep_waiting: false,
                        template: template(),
                    },
                    self.now,
                )
            })
            .collect();
        for a in 0..n_agents {
            // No work until it connects.
            core.handle_source_status(a, false, None);
        }
        self.coord = Some(Coord {
            core,
            links,
            held: WriteAhead::default(),
            batches: BTreeMap::new(),
            next_batch: 0,
            last_commit_at: self.now,
            cancelled: false,
            finishing: false,
        });
        self.note(format!(
            "coordinator: {} (run {inc}): {} to run, {} to take up",
            if fresh { "sweep run" } else { "sweep complete" },
            to_run.len(),
            attach.len()
        ));
        self.check.run_started(inc);
        for agent in 0..n_agents {
            self.at(0, Ev::Dial { agent, inc });
        }
        self.at(FLUSH_EVERY_MS, Ev::CoordFlush { inc });
        self.at(TICK_MS, Ev::CoordTick { inc });
        self.coord_pump();
    }

    pub fn coord_crash(&mut self) {
        if self.ended_at.is_some() || self.coord.take().is_none() {
            return;
        }
        self.note("coordinator: killed (uncommitted batches lost)".into());
        for agent in 0..self.agents.len() {
            let conn = self.wires[agent].conn;
            if conn != 0 {
                self.wires[agent].conn = 0;
                self.agent_session_ended(agent, conn);
            }
        }
        let back = self.rng.range(100, 5_000);
        self.at(back, Ev::CoordRestart);
    }

    pub fn coord_cancel(&mut self) {
        let now_ms = self.now_ms();
        let Some(coord) = self.coord.as_mut() else {
            return;
        };
        if coord.cancelled || coord.finishing {
            return;
        }
        coord.cancelled = true;
        self.check.cancel_requested();
        let commands = coord.core.handle_cancel(now_ms);
        self.note(format!(
            "coordinator: sweep cancel ({} to stop)",
            commands.len()
        ));
        for command in commands {
            self.carry_out(command);
        }
        self.coord_pump();
    }

    fn carry_out(&mut self, command: Command) {
        let coord = self.coord.as_mut().expect("coordinator");
        match command {
            Command::Withdraw { .. } => self.check.stats.withdrawals += 1,
            Command::Steal { .. } => self.check.stats.steals += 1,
            _ => {}
        }
        match drive::route(command) {
            Route::Order(source, order) => {
                coord.held.order(source, order);
            }
            Route::Attach(source, key) => {
                self.check.stats.attaches += 1;
                let link = &mut coord.links[source];
                link.handle_attach_task(key);
                link.handle_flush();
            }
        }
    }

    /// Writes the changes since the last flush; orders and acknowledgements go out once written.
    fn coord_flush(&mut self) {
        let inc = self.coord_inc;
        let now_ms = self.now_ms();
        let Some(coord) = self.coord.as_mut() else {
            return;
        };
        let mut changes = coord.core.poll_changes();
        // Tasks cancelled by range are written by the store in one statement per range; here
        // they are the changes that statement makes.
        for (from, to) in coord.core.poll_cancelled_unstarted() {
            for index in from..=to {
                let attempt = coord.core.task(index).map_or(0, |t| t.attempt);
                changes.push(Change {
                    reason: Some(hsm_coordinator::core::state::CANCELLED_UNSTARTED.into()),
                    ..Change::new(index, attempt, TaskStatus::Cancelled, None, now_ms)
                });
            }
        }
        let Some(written) = coord.held.take(changes) else {
            return;
        };
        let batch = coord.next_batch;
        coord.next_batch += 1;
        coord.batches.insert(batch, written);
        // One writer: batches are committed in order.
        let write = self.rng.range(1, 8);
        let at = (self.now + write).max(coord.last_commit_at);
        coord.last_commit_at = at;
        let delay = at - self.now;
        self.at(delay, Ev::StoreCommit { inc, batch });
    }

    pub fn coord_flush_tick(&mut self, inc: u64) {
        if inc != self.coord_inc || self.coord.is_none() {
            return;
        }
        self.coord_flush();
        self.at(FLUSH_EVERY_MS, Ev::CoordFlush { inc });
    }

    pub fn store_commit(&mut self, inc: u64, batch: u64) {
        if inc != self.coord_inc {
            return;
        }
        let Some(coord) = self.coord.as_mut() else {
            return;
        };
        let Some(batch) = coord.batches.remove(&batch) else {
            return;
        };
        for change in &batch.changes {
            if change.job_id.is_some() {
                continue;
            }
            let row = &mut self.store.rows[(change.index - 1) as usize];
            row.status = change.status;
            row.attempt = change.attempt;
            row.source = change.source.clone();
        }
        self.check.on_committed(inc, &batch.changes);
        let coord = self.coord.as_mut().expect("coordinator");
        let mut touched = Vec::new();
        for (source, order) in batch.orders {
            let link = &mut coord.links[source];
            match order {
                Order::Launch(key) => {
                    link.handle_launch(key, vec![key.index.to_string()], Vec::new());
                }
                Order::Cancel(key) => {
                    self.check.stats.cancels += 1;
                    link.handle_cancel(key)
                }
                Order::Steal(key) => link.handle_steal(key),
            }
            if !touched.contains(&source) {
                touched.push(source);
            }
        }
        for source in touched {
            coord.links[source].handle_flush();
        }
        for (source, acks) in batch.acks {
            coord.links[source].handle_acks(acks);
        }
        if coord.finishing && coord.batches.is_empty() {
            // The last batch is written and its acknowledgements are out: the run is over.
            let counts = coord.core.counts();
            self.note(format!("coordinator: run ended: {}", counts.breakdown()));
            self.coord_pump();
            self.ended_at = Some(self.now);
            self.check.run_ended(&self.store);
            return;
        }
        self.coord_pump();
    }

    pub fn coord_tick(&mut self, inc: u64) {
        if inc != self.coord_inc {
            return;
        }
        let now = self.now;
        let Some(coord) = self.coord.as_mut() else {
            return;
        };
        for link in &mut coord.links {
            link.handle_tick(now);
        }
        self.at(TICK_MS, Ev::CoordTick { inc });
        self.coord_pump();
    }

    pub fn coord_dial_failed(&mut self, agent: usize) {
        let now = self.now;
        let inc = self.coord_inc;
        if let Some(coord) = self.coord.as_mut() {
            coord.links[agent].handle_down(now, "unreachable".into());
        }
        let again = self.rng.range(100, 1_000);
        self.at(again, Ev::Dial { agent, inc });
        self.coord_pump();
    }

    pub fn coord_connection_lost(&mut self, agent: usize, why: &str) {
        let now = self.now;
        let inc = self.coord_inc;
        let Some(coord) = self.coord.as_mut() else {
            return;
        };
        coord.links[agent].handle_down(now, why.into());
        let again = self.rng.range(100, 1_000);
        self.at(again, Ev::Dial { agent, inc });
        self.coord_pump();
    }

    pub fn coord_receive(&mut self, agent: usize, msg: Down) {
        let now = self.now;
        let Some(coord) = self.coord.as_mut() else {
            return;
        };
        match msg {
            Down::Welcome { slots } => coord.links[agent].handle_up(
                now,
                slots,
                2,
                format!("connected ({slots} slots)"),
                None,
            ),
            Down::Msg(msg) => {
                let text = crate::world::describe(&msg);
                coord.links[agent].handle_frame(now, msg);
                self.note(format!("coordinator: from agent {agent}: {text}"));
            }
        }
        self.coord_pump();
    }

    pub fn coord_file(
        &mut self,
        agent: usize,
        key: TaskKey,
        path: &str,
        size: u64,
        sha256: &str,
        body: &[u8],
    ) {
        let now = self.now;
        let Some(coord) = self.coord.as_mut() else {
            return;
        };
        if coord.links[agent]
            .handle_file_claim(now, key, path, size, sha256)
            .is_err()
        {
            return;
        }
        coord.links[agent].handle_file_progress(now);
        if sha256_hex(body) != sha256 || body.len() as u64 != size {
            coord.links[agent].handle_file_failed(key, path, "damaged".into());
        } else {
            let current = coord.core.task(key.index).map(|t| (t.attempt, t.status));
            self.check.result_written(key, current);
            if body != result_body(key.index, key.attempt).as_slice() {
                self.check.fail(format!(
                    "task {}: attempt {} delivered {:?} as its result",
                    key.index,
                    key.attempt,
                    String::from_utf8_lossy(body)
                ));
            }
            self.store
                .files
                .insert(key.index, (key.attempt, body.to_vec()));
            let coord = self.coord.as_mut().expect("coordinator");
            coord.links[agent].handle_file_arrived(key, path);
        }
        self.coord_pump();
    }

    /// Carries out what the links and the core ask until nothing is left, like the actors'
    /// mailboxes would.
    pub fn coord_pump(&mut self) {
        loop {
            let now = self.now;
            let now_ms = self.now_ms();
            let Some(coord) = self.coord.as_mut() else {
                return;
            };
            let mut sends = Vec::new();
            let mut reconnect = Vec::new();
            let mut reports = Vec::new();
            let mut notes = Vec::new();
            for (agent, link) in coord.links.iter_mut().enumerate() {
                while link.poll_writes().is_some() {}
                while let Some(log) = link.poll_logs() {
                    notes.push(format!("link {agent}: {}", log.message));
                }
                if link.poll_reconnect() {
                    reconnect.push(agent);
                }
                if self.wires[agent].conn != 0 && link.connected() {
                    while let Some(msg) = link.poll_outgoing() {
                        sends.push((agent, msg));
                    }
                }
                while let Some(report) = link.poll_reports() {
                    reports.push((agent, report));
                }
            }
            let idle = sends.is_empty() && reconnect.is_empty() && reports.is_empty();
            for note in notes {
                self.note(note);
            }
            for (agent, msg) in sends {
                let conn = self.wires[agent].conn;
                self.note(format!(
                    "coordinator: to agent {agent}: {}",
                    crate::world::describe_to(&msg)
                ));
                self.send_to_agent(agent, conn, msg);
            }
            for (agent, report) in reports {
                self.coord_report(agent, report, now_ms);
            }
            for agent in reconnect {
                let conn = self.wires[agent].conn;
                self.break_connection(agent, conn, "protocol error");
            }
            // Dispatch, as the sweep actor does after every report.
            if self.coord.is_none() {
                return;
            }
            let mut dispatched = false;
            loop {
                let coord = self.coord.as_mut().expect("coordinator");
                let commands = coord.core.poll_dispatch(now_ms);
                if commands.is_empty() {
                    break;
                }
                dispatched = true;
                for command in commands {
                    self.carry_out(command);
                }
            }
            let coord = self.coord.as_mut().expect("coordinator");
            if coord.held.has_orders() {
                self.coord_flush();
            }
            let coord = self.coord.as_mut().expect("coordinator");
            if !coord.finishing && coord.core.is_finished() {
                coord.finishing = true;
                self.note("coordinator: every task ended; writing the last batch".into());
                self.coord_flush();
                let coord = self.coord.as_mut().expect("coordinator");
                if coord.batches.is_empty() {
                    self.ended_at = Some(now);
                    self.check.run_ended(&self.store);
                }
            }
            if idle && !dispatched {
                return;
            }
        }
    }

    fn coord_report(&mut self, agent: usize, report: Report, now_ms: i64) {
        let coord = self.coord.as_mut().expect("coordinator");
        match report {
            Report::Submitted { key, job_id } => {
                coord
                    .core
                    .handle_submitted(key.index, key.attempt, job_id, now_ms)
            }
            Report::Started { key, pid, at_ms } => coord.core.handle_started(
                key.index,
                key.attempt,
                pid,
                report_time(Some(at_ms), now_ms),
            ),
            Report::Finished {
                key,
                exit,
                usage,
                at_ms,
            } => {
                self.note(format!(
                    "coordinator: task {} attempt {} finished: {exit:?}",
                    key.index, key.attempt
                ));
                let coord = self.coord.as_mut().expect("coordinator");
                coord.core.handle_exited_using(
                    key.index,
                    key.attempt,
                    exit,
                    usage,
                    report_time(at_ms, now_ms),
                );
            }
            Report::Acks(acks) => coord.held.acks(agent, acks),
            Report::Status(status) => {
                // The sources' slot counts are configured: what an agent offers is its
                // parallelism.
                let effect = drive::apply_status(&mut coord.core, agent, &status, true, now_ms);
                if status.lost {
                    self.note(format!(
                        "coordinator: agent {agent} lost ({} tasks run again)",
                        effect.lost
                    ));
                    self.check.source_lost(agent);
                }
                if status.note.contains("min_free_disk") && !status.up {
                    self.check.stats.disk_low += 1;
                }
                for command in effect.drained {
                    self.carry_out(command);
                }
            }
        }
    }
}
