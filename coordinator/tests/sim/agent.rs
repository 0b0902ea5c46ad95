//! A simulated agent host: the real `AgentCore` with the real SQLite ledger (only what the
//! simulator committed survives a crash), modelled processes that run for a drawn time and write
//! a result file, a modelled file system, and the session glue `server.rs` has (ownership
//! checks, claims, a replay cursor from 0 on every connection).

use crate::world::{Down, Ev, World, WHO};
use hsm_agent::core::{AgentCore, BackendEvent, LedgerOp};
use hsm_agent::ledger::{Ledger, Op};
use hsm_agent::owners::Decision;
use hsm_protocol::{
    AttachedMsg, ErrorMsg, EventsMsg, FileOffer, FileRef, FromAgent, OutcomeMsg, SweepId, ToAgent,
};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// How long a sweep's queued attempts wait for a coordinator before they run anyway; longer
/// than any simulated run.
const COORDINATOR_LOST_AFTER_MS: u64 = 3_600_000;
const AGENT_TICK_MS: u64 = 500;

pub struct Proc {
    pub index: u64,
    pub attempt: u32,
    pub dir: PathBuf,
    pub started: bool,
    pub killing: bool,
}

pub struct Session {
    pub conn: u64,
    pub cursor: u64,
    pub claimed: BTreeSet<SweepId>,
}

pub struct Live {
    pub core: AgentCore,
    pub ledger: Ledger,
    /// Ops not yet handed to the ledger, and the first ledger position after them.
    pub pending: Vec<Op>,
    pub pending_gen: u64,
    pub commit_scheduled: bool,
    pub procs: BTreeMap<u64, Proc>,
    pub tails: BTreeSet<u64>,
    pub session: Option<Session>,
    /// Ticks since it started (a heartbeat goes out every other one).
    pub ticks: u64,
}

pub struct AgentHost {
    pub slots: usize,
    pub state_dir: PathBuf,
    pub work_dir: PathBuf,
    /// Incarnation: events of an earlier one are stale.
    pub inc: u64,
    pub live: Option<Live>,
    /// Processes a crash left running: the restarted agent ends them.
    pub orphans: Vec<(u64, u32)>,
    /// The host's files (result files), which outlive the agent.
    pub files: BTreeMap<PathBuf, Vec<u8>>,
    /// Until then (virtual ms) its work directory's disk is full.
    pub disk_full_until: u64,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What attempt `attempt` of task `index` writes as its result.
pub fn result_body(index: u64, attempt: u32) -> Vec<u8> {
    format!("result of task {index} attempt {attempt}\n").into_bytes()
}

pub const RESULT_PATH: &str = "results/out.txt";

impl AgentHost {
    pub fn new(index: usize, slots: usize, root: &Path) -> AgentHost {
        let state_dir = root.join(format!("agent{index}/state"));
        std::fs::create_dir_all(&state_dir).expect("state dir");
        AgentHost {
            slots,
            state_dir,
            work_dir: PathBuf::from(format!("/sim/agent{index}/work")),
            inc: 0,
            live: None,
            orphans: Vec::new(),
            files: BTreeMap::new(),
            disk_full_until: 0,
        }
    }

    pub fn alive(&self) -> bool {
        self.live.is_some()
    }

    /// (task, attempt) of every process a running agent follows now. Processes a crash left
    /// behind are not among them: no coordinator can reach them while the agent is down, and
    /// the restarted agent ends them (seed 172643 of the soak ended its run in that window).
    pub fn running(&self) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        if let Some(live) = &self.live {
            out.extend(
                live.procs
                    .values()
                    .filter(|p| p.started)
                    .map(|p| (p.index, p.attempt)),
            );
        }
        out
    }
}

impl World {
    /// Starts (or restarts) agent `agent` from its ledger.
    pub fn agent_start(&mut self, agent: usize) {
        if self.agents[agent].alive() {
            return;
        }
        let host = &mut self.agents[agent];
        host.inc += 1;
        let inc = host.inc;
        let (ledger, recovered) =
            Ledger::open(&host.state_dir, Box::new(|_| {})).expect("open the ledger");
        let mut core = AgentCore::new(host.work_dir.clone(), host.slots, true);
        core.set_mono_ms(self.now);
        let recovery = core.recover(recovered, &mut |_, _, _, _| Vec::new());
        let orphans = std::mem::take(&mut host.orphans);
        if inc > 1 {
            self.check.stats.agent_restarts += 1;
        }
        host.live = Some(Live {
            core,
            ledger,
            pending: Vec::new(),
            pending_gen: 0,
            commit_scheduled: false,
            procs: BTreeMap::new(),
            tails: BTreeSet::new(),
            session: None,
            ticks: 0,
        });
        self.note(format!(
            "agent {agent}: started (incarnation {inc}; took up {} attempts, {} events, {} lost)",
            recovery.tasks,
            recovery.events,
            recovery.lost.len()
        ));
        // The restart ends the processes the previous run left behind.
        for (index, attempt) in orphans {
            self.check.proc_ended(agent, index, attempt, self.now);
        }
        let now_ms = self.now_ms();
        if let Some(live) = self.agents[agent].live.as_mut() {
            for id in recovery.lost {
                live.core.handle_backend_event(BackendEvent::NeverRan {
                    id,
                    outcome: OutcomeMsg::Lost,
                    at_ms: now_ms,
                });
            }
        }
        self.at(AGENT_TICK_MS, Ev::AgentTick { agent, inc });
        self.agent_pump(agent);
    }

    pub fn agent_crash(&mut self, agent: usize) {
        let Some(live) = self.agents[agent].live.take() else {
            return;
        };
        // What the ledger has committed stays; what was still pending is gone.
        drop(live.ledger);
        let orphans: Vec<(u64, u32)> = live
            .procs
            .values()
            .filter(|p| p.started)
            .map(|p| (p.index, p.attempt))
            .collect();
        self.agents[agent].orphans.extend(orphans);
        self.note(format!(
            "agent {agent}: crashed ({} ops not yet in the ledger lost)",
            live.pending.len()
        ));
        let conn = self.wires[agent].conn;
        let notice = self.rng.range(50, 2_000);
        self.at(notice, Ev::Lost { agent, conn });
        let back = self.rng.range(100, 3 * self.cfg.grace_ms);
        self.at(back, Ev::AgentRestart { agent });
    }

    pub fn agent_session_started(&mut self, agent: usize, conn: u64) {
        let Some(live) = self.agents[agent].live.as_mut() else {
            return;
        };
        live.session = Some(Session {
            conn,
            cursor: 0,
            claimed: BTreeSet::new(),
        });
        let slots = self.agents[agent].slots as u32;
        self.send_to_coord(agent, conn, Down::Welcome { slots });
        self.agent_pump(agent);
    }

    pub fn agent_session_ended(&mut self, agent: usize, conn: u64) {
        let now_ms = self.now_ms();
        let Some(live) = self.agents[agent].live.as_mut() else {
            return;
        };
        if live.session.as_ref().is_some_and(|s| s.conn == conn) {
            let session = live.session.take().expect("session");
            for sweep in session.claimed {
                live.core.handle_disconnect(&sweep, now_ms);
            }
        }
        self.agent_pump(agent);
    }

    fn reply(&mut self, agent: usize, conn: u64, msg: FromAgent) {
        self.send_to_coord(agent, conn, Down::Msg(msg));
    }

    /// A coordinator's message on the agent's current session.
    pub fn agent_receive(&mut self, agent: usize, conn: u64, msg: ToAgent) {
        let now_ms = self.now_ms();
        let now = self.now;
        let Some(live) = self.agents[agent].live.as_mut() else {
            return;
        };
        if live.session.as_ref().is_none_or(|s| s.conn != conn) {
            return;
        }
        live.core.set_mono_ms(now);
        let mut replies = Vec::new();
        let allowed = |live: &mut Live, sweep: &SweepId, submit: bool| {
            live.core.sweep_access(sweep, WHO, submit) != Decision::Refuse
        };
        let claim = |live: &mut Live, sweep: &SweepId| {
            let session = live.session.as_mut().expect("session");
            if session.claimed.insert(sweep.clone()) {
                live.core.handle_connect(sweep, now_ms);
            }
        };
        let mut files = Vec::new();
        let mut note = None;
        match msg {
            ToAgent::Submit(submit) => {
                if allowed(live, &submit.sweep_id, true) {
                    claim(live, &submit.sweep_id);
                    let n = submit.tasks.len();
                    for refusal in live.core.handle_submit(submit, now_ms) {
                        replies.push(FromAgent::Error(ErrorMsg::new(refusal)));
                    }
                    note = Some(format!("agent {agent}: submit of {n}"));
                }
            }
            ToAgent::Cancel(cancel) => {
                if allowed(live, &cancel.sweep_id, false) {
                    note = Some(format!(
                        "agent {agent}: cancel {:?}{}",
                        cancel
                            .tasks
                            .iter()
                            .map(|t| (t.index.0, t.attempt.0))
                            .collect::<Vec<_>>(),
                        if cancel.unstarted_only {
                            " (unstarted only)"
                        } else {
                            ""
                        }
                    ));
                    live.core.handle_cancel(&cancel, now_ms);
                }
            }
            ToAgent::Ack(ack) => {
                self.check.on_ack(agent, &ack.acks);
                live.core.handle_ack(&ack.acks);
            }
            ToAgent::FetchResults(fetch) => match live.core.fetch_plan(&fetch) {
                Ok(plan) => {
                    for item in plan.files {
                        let body = self.agents[agent].files.get(&item.path).cloned();
                        match body {
                            Some(body) if sha256_hex(&body) == item.offer.sha256 => {
                                files.push((fetch.task, item.offer, body));
                            }
                            _ => replies.push(FromAgent::Error(ErrorMsg {
                                message: format!("cannot send {:?}: it is gone", item.offer.path),
                                file: Some(FileRef {
                                    sweep_id: fetch.sweep_id.clone(),
                                    task: fetch.task,
                                    path: item.offer.path.clone(),
                                }),
                            })),
                        }
                    }
                }
                Err(message) => replies.push(FromAgent::Error(ErrorMsg::new(message))),
            },
            ToAgent::ResultsDone(done) => {
                if let Some((dir, _)) = live.core.handle_results_done(&done) {
                    let results = dir.join("results");
                    self.agents[agent]
                        .files
                        .retain(|path, _| !path.starts_with(&results));
                }
            }
            ToAgent::Attach(attach) => {
                if allowed(live, &attach.sweep_id, false) {
                    claim(live, &attach.sweep_id);
                    let unknown = live.core.handle_attach(&attach, now_ms);
                    note = Some(format!(
                        "agent {agent}: attach {} ({} unknown)",
                        attach.tasks.len(),
                        unknown.len()
                    ));
                    replies.push(FromAgent::Attached(AttachedMsg {
                        sweep_id: attach.sweep_id,
                        unknown,
                    }));
                } else {
                    replies.push(FromAgent::Attached(AttachedMsg {
                        sweep_id: attach.sweep_id,
                        unknown: attach.tasks,
                    }));
                }
            }
            ToAgent::Ping(_) | ToAgent::Clean(_) => {}
        }
        if let Some(note) = note {
            self.note(note);
        }
        for (task, offer, body) in files {
            let at = self.delay() + self.rng.range(0, 20);
            self.at(
                at,
                Ev::File {
                    agent,
                    conn,
                    key: hsm_exec::process::TaskKey {
                        index: task.index.0,
                        attempt: task.attempt.0,
                    },
                    path: offer.path,
                    size: offer.size,
                    sha256: offer.sha256,
                    body,
                },
            );
        }
        for reply in replies {
            self.reply(agent, conn, reply);
        }
        self.agent_pump(agent);
    }

    /// Carries out what the core asks until it asks nothing more.
    pub fn agent_pump(&mut self, agent: usize) {
        let now_ms = self.now_ms();
        loop {
            let mut progress = false;
            let inc = self.agents[agent].inc;
            let Some(live) = self.agents[agent].live.as_mut() else {
                return;
            };
            let launches = live.core.poll_launches();
            let kills = live.core.poll_kills();
            let tails = live.core.poll_tails();
            let wakes = live.core.poll_wakes();
            let mut starts = Vec::new();
            let clear: Vec<PathBuf> = launches.iter().map(|l| l.dir.join("results")).collect();
            for launch in launches {
                live.procs.insert(
                    launch.id,
                    Proc {
                        index: launch.task.index.0,
                        attempt: launch.task.attempt.0,
                        dir: launch.dir.clone(),
                        started: false,
                        killing: false,
                    },
                );
                starts.push(launch.id);
            }
            let mut ends = Vec::new();
            for kill in kills {
                if let Some(proc) = live.procs.get_mut(&kill.id) {
                    if !proc.killing {
                        proc.killing = true;
                        ends.push(kill.id);
                    }
                }
            }
            // `prepare` clears what an earlier attempt of the task left in `results/`.
            for results in clear {
                self.agents[agent]
                    .files
                    .retain(|path, _| !path.starts_with(&results));
            }
            let live = self.agents[agent].live.as_mut().expect("alive");
            for tail in tails {
                live.tails.insert(tail.id);
            }
            let mut drained = Vec::new();
            for id in wakes {
                if live.tails.contains(&id)
                    && !live.procs.contains_key(&id)
                    && live.core.tail_state(id).is_some_and(|(_, ended)| ended)
                {
                    drained.push(id);
                }
            }
            for id in drained {
                progress = true;
                let AgentHost { live, files, .. } = &mut self.agents[agent];
                let live = live.as_mut().expect("alive");
                live.tails.remove(&id);
                if let Some(dir) = live.core.handle_backend_event(BackendEvent::Drained { id }) {
                    let results = dir.join("results");
                    let files: Vec<FileOffer> = files
                        .range(results.clone()..)
                        .take_while(|(path, _)| path.starts_with(&results))
                        .map(|(path, body)| FileOffer {
                            path: path
                                .strip_prefix(&dir)
                                .expect("under the task dir")
                                .display()
                                .to_string(),
                            size: body.len() as u64,
                            sha256: sha256_hex(body),
                        })
                        .collect();
                    live.core
                        .handle_backend_event(BackendEvent::ResultsScanned { id, files });
                }
            }
            let live = self.agents[agent].live.as_mut().expect("alive");
            let ops = live.core.poll_ledger_ops();
            if !ops.is_empty() {
                for op in ops {
                    if let LedgerOp::Record(op) = op {
                        live.pending.push(op);
                    }
                }
                live.pending_gen = live.core.next_gen();
                if !live.commit_scheduled {
                    live.commit_scheduled = true;
                    let at = self.rng.range(1, 10);
                    self.at(at, Ev::LedgerCommit { agent, inc });
                }
            }
            for id in starts {
                let at = self.rng.range(1, 20);
                self.at(at, Ev::ProcStart { agent, inc, id });
            }
            for id in ends {
                let at = self.rng.range(1, 30);
                self.at(
                    at,
                    Ev::ProcExit {
                        agent,
                        inc,
                        id,
                        outcome: OutcomeMsg::Cancelled,
                    },
                );
            }
            // The session sends what is sendable from its cursor.
            let live = self.agents[agent].live.as_mut().expect("alive");
            if let Some(session) = live.session.as_mut() {
                let conn = session.conn;
                let mut batches = Vec::new();
                loop {
                    let (events, next) = live.core.poll_events(session.cursor, 256, 1 << 20, WHO);
                    session.cursor = next;
                    if events.is_empty() {
                        break;
                    }
                    batches.push(events);
                }
                for events in batches {
                    self.check.on_sent(agent, &events);
                    self.reply(agent, conn, FromAgent::Events(EventsMsg { events }));
                }
            }
            let _ = now_ms;
            if !progress {
                return;
            }
        }
    }

    pub fn proc_start(&mut self, agent: usize, inc: u64, id: u64) {
        if self.agents[agent].inc != inc {
            return;
        }
        let now_ms = self.now_ms();
        let Some(live) = self.agents[agent].live.as_mut() else {
            return;
        };
        let Some(proc) = live.procs.get_mut(&id) else {
            return;
        };
        if proc.killing {
            // Stopped before it started: the backend reports it ended without a start.
            return;
        }
        proc.started = true;
        let (index, attempt, dir) = (proc.index, proc.attempt, proc.dir.clone());
        live.core.handle_backend_event(BackendEvent::Started {
            id,
            pid: 1000 + id as u32,
            at_ms: now_ms,
        });
        self.note(format!(
            "agent {agent}: task {index} attempt {attempt} started"
        ));
        self.check
            .proc_started(agent, index, attempt, self.now, &self.store);
        // It writes its result as it runs; whether it exits 0 is drawn now.
        let fails = self.rng.chance(self.cfg.fail);
        if !fails {
            self.agents[agent]
                .files
                .insert(dir.join(RESULT_PATH), result_body(index, attempt));
        }
        let max = self.cfg.max_task_ms;
        let runs = self.rng.range(1, max);
        let outcome = OutcomeMsg::Exited {
            code: i32::from(fails),
        };
        self.at(
            runs,
            Ev::ProcExit {
                agent,
                inc,
                id,
                outcome,
            },
        );
        self.agent_pump(agent);
    }

    pub fn proc_exit(&mut self, agent: usize, inc: u64, id: u64, outcome: OutcomeMsg) {
        if self.agents[agent].inc != inc {
            return;
        }
        let now_ms = self.now_ms();
        let Some(live) = self.agents[agent].live.as_mut() else {
            return;
        };
        let Some(proc) = live.procs.remove(&id) else {
            return;
        };
        // A kill and a natural exit may both be scheduled: the first one ends it.
        let outcome = if proc.killing {
            OutcomeMsg::Cancelled
        } else {
            outcome
        };
        live.core.handle_backend_event(BackendEvent::Exited {
            id,
            outcome: outcome.clone(),
            at_ms: now_ms,
            usage: None,
        });
        if proc.started {
            self.check
                .proc_ended(agent, proc.index, proc.attempt, self.now);
        }
        self.note(format!(
            "agent {agent}: task {} attempt {} ended {outcome:?}",
            proc.index, proc.attempt
        ));
        self.agent_pump(agent);
    }

    pub fn ledger_commit(&mut self, agent: usize, inc: u64) {
        if self.agents[agent].inc != inc {
            return;
        }
        let Some(live) = self.agents[agent].live.as_mut() else {
            return;
        };
        live.commit_scheduled = false;
        for op in live.pending.drain(..) {
            live.ledger.record(op);
        }
        live.ledger.flush();
        let gen = live.pending_gen;
        live.core.handle_ledger_durable(gen);
        self.agent_pump(agent);
    }

    pub fn agent_tick(&mut self, agent: usize, inc: u64) {
        if self.agents[agent].inc != inc {
            return;
        }
        let now = self.now;
        let Some(live) = self.agents[agent].live.as_mut() else {
            return;
        };
        live.core.poll_timeout(COORDINATOR_LOST_AFTER_MS, now);
        // A heartbeat every other tick (a second), as a connected agent sends them: the free
        // space is what a disk-full fault leaves.
        live.ticks += 1;
        let heartbeat = (live.ticks % 2 == 0)
            .then(|| live.session.as_ref().map(|s| s.conn))
            .flatten();
        if let Some(conn) = heartbeat {
            let full = now < self.agents[agent].disk_full_until;
            let msg = FromAgent::Heartbeat(hsm_protocol::HeartbeatMsg {
                load1: 0.0,
                free_mem_bytes: 1 << 34,
                free_disk_bytes: if full { 0 } else { 1 << 40 },
                running: 0,
                slots: self.agents[agent].slots as u32,
                free_inodes: Some(if full { 0 } else { 1 << 20 }),
                notice: None,
            });
            self.send_to_coord(agent, conn, Down::Msg(msg));
        }
        self.at(AGENT_TICK_MS, Ev::AgentTick { agent, inc });
        self.agent_pump(agent);
    }
}
