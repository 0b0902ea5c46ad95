//! The simulated world: a virtual clock and one queue of timed events, the in-memory network
//! between the coordinator and each agent (one ordered control stream per direction per
//! connection, result files on streams of their own, whole connections lost at once), the
//! faults drawn for a seed, and the run from start to the final checks.

use crate::agent::AgentHost;
use crate::check::Checker;
use crate::coord::{Coord, Store};
use crate::rng::Rng;
use hsm_exec::process::TaskKey;
use hsm_protocol::{FromAgent, OutcomeMsg, ToAgent};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

/// Wall-clock milliseconds at virtual time 0 (event times and `at_ms` fields).
pub const EPOCH_MS: i64 = 1_800_000_000_000;
/// The coordinator's identity, the same across its restarts.
pub const WHO: &str = "sha256:simulated-coordinator";
pub const SWEEP: &str = "sim_sweep";
/// A run that has not ended by then is stuck (faults stop long before).
const DEADLINE_MS: u64 = 30 * 60 * 1000;

/// What one seed simulates.
#[derive(Debug, Clone)]
pub struct Config {
    pub tasks: u64,
    pub slots: Vec<usize>,
    pub retries: u32,
    /// How long the coordinator waits for an unreachable agent's attempts.
    pub grace_ms: u64,
    /// Chance that an attempt's process exits 1.
    pub fail: f64,
    /// Longest one-way delay of a message.
    pub max_delay: u64,
    /// Task durations are drawn from `1..=max_task_ms`.
    pub max_task_ms: u64,
    /// Faults happen before this time.
    pub faults_until: u64,
    pub drops: u32,
    pub partitions: u32,
    pub agent_crashes: u32,
    pub coord_crashes: u32,
    pub cancel_at: Option<u64>,
    /// Times an agent's disk fills up for a while (its heartbeat then reports no free space).
    pub disk_fills: u32,
}

impl Config {
    pub fn draw(rng: &mut Rng) -> Config {
        let agents = rng.range(1, 3) as usize;
        let slots = (0..agents).map(|_| rng.range(1, 3) as usize).collect();
        let faults_until = rng.range(2_000, 20_000);
        Config {
            tasks: rng.range(1, 24),
            slots,
            retries: rng.range(0, 2) as u32,
            grace_ms: rng.range(1_000, 8_000),
            fail: [0.0, 0.1, 0.3][rng.range(0, 2) as usize],
            max_delay: rng.range(1, 60),
            max_task_ms: [50, 500, 3_000][rng.range(0, 2) as usize],
            faults_until,
            drops: rng.range(0, 4) as u32,
            partitions: rng.range(0, 2) as u32,
            agent_crashes: rng.range(0, 2) as u32,
            coord_crashes: rng.range(0, 2) as u32,
            cancel_at: rng.chance(0.1).then(|| rng.range(0, faults_until)),
            disk_fills: rng.range(0, 2) as u32,
        }
    }
}

/// What the coordinator receives on a control stream.
#[derive(Debug)]
pub enum Down {
    /// The agent accepted the connection (its `Welcome`).
    Welcome {
        slots: u32,
    },
    Msg(FromAgent),
}

#[derive(Debug)]
pub enum Ev {
    ToAgent {
        agent: usize,
        conn: u64,
        msg: ToAgent,
    },
    ToCoord {
        agent: usize,
        conn: u64,
        msg: Down,
    },
    File {
        agent: usize,
        conn: u64,
        key: TaskKey,
        path: String,
        size: u64,
        sha256: String,
        body: Vec<u8>,
    },
    Dial {
        agent: usize,
        inc: u64,
    },
    /// The connection broke (it must still be `conn`).
    Lost {
        agent: usize,
        conn: u64,
    },
    DropFault {
        agent: usize,
    },
    Partition {
        agent: usize,
        ms: u64,
    },
    ProcStart {
        agent: usize,
        inc: u64,
        id: u64,
    },
    ProcExit {
        agent: usize,
        inc: u64,
        id: u64,
        outcome: OutcomeMsg,
    },
    LedgerCommit {
        agent: usize,
        inc: u64,
    },
    AgentTick {
        agent: usize,
        inc: u64,
    },
    AgentCrash {
        agent: usize,
    },
    AgentRestart {
        agent: usize,
    },
    CoordFlush {
        inc: u64,
    },
    StoreCommit {
        inc: u64,
        batch: u64,
    },
    CoordTick {
        inc: u64,
    },
    CoordCrash,
    CoordRestart,
    Cancel,
    DiskFull {
        agent: usize,
        ms: u64,
    },
}

/// One agent's end of the network.
#[derive(Debug, Default)]
pub struct Wire {
    /// The current connection (0: none).
    pub conn: u64,
    /// Delivery times only grow on a stream: it is ordered.
    pub last_down: u64,
    pub last_up: u64,
    pub partitioned_until: u64,
}

pub struct World {
    pub now: u64,
    pub rng: Rng,
    pub cfg: Config,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Ev>,
    next_ev: u64,
    pub next_conn: u64,
    pub wires: Vec<Wire>,
    pub agents: Vec<AgentHost>,
    pub store: Store,
    pub coord: Option<Coord>,
    pub coord_inc: u64,
    pub check: Checker,
    /// The last lines of what happened, printed with a failure.
    pub trace: VecDeque<String>,
    /// A digest of everything that happened, to show a seed replays exactly.
    pub digest: u64,
    /// The run (the last one, after any coordinator restarts) has ended.
    pub ended_at: Option<u64>,
    /// Holds the agents' state directories until the run is dropped.
    _dir: tempfile::TempDir,
}

/// How a simulated run went.
pub struct Outcome {
    pub stats: crate::check::Stats,
    pub digest: u64,
    pub virtual_ms: u64,
    pub steps: u64,
}

impl World {
    pub fn new(seed: u64) -> World {
        let mut rng = Rng::new(seed);
        let cfg = Config::draw(&mut rng);
        // The agents' ledgers are real SQLite files: in memory when the host has a tmpfs.
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::Builder::new().prefix("hsm-sim").tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .expect("temporary directory");
        let agents = cfg
            .slots
            .iter()
            .enumerate()
            .map(|(i, slots)| AgentHost::new(i, *slots, dir.path()))
            .collect();
        World {
            now: 0,
            rng,
            wires: cfg.slots.iter().map(|_| Wire::default()).collect(),
            store: Store::new(cfg.tasks),
            check: Checker::new(cfg.tasks),
            cfg,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            next_ev: 0,
            next_conn: 0,
            agents,
            coord: None,
            coord_inc: 0,
            trace: VecDeque::new(),
            digest: 0xcbf2_9ce4_8422_2325,
            ended_at: None,
            _dir: dir,
        }
    }

    pub fn now_ms(&self) -> i64 {
        EPOCH_MS + self.now as i64
    }

    pub fn at(&mut self, delay: u64, ev: Ev) {
        let id = self.next_ev;
        self.next_ev += 1;
        self.queue.push(Reverse((self.now + delay, id)));
        self.events.insert(id, ev);
    }

    pub fn note(&mut self, line: String) {
        for b in line.bytes().chain(self.now.to_le_bytes()) {
            self.digest = (self.digest ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        if self.trace.len() >= 300 {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("{:>8} ms  {line}", self.now));
    }

    pub fn delay(&mut self) -> u64 {
        let max = self.cfg.max_delay;
        self.rng.range(1, max)
    }

    /// Sends on the agent's control stream, in order, on connection `conn`.
    pub fn send_to_agent(&mut self, agent: usize, conn: u64, msg: ToAgent) {
        let at = (self.now + self.delay()).max(self.wires[agent].last_up);
        self.wires[agent].last_up = at;
        let id = self.next_ev;
        self.next_ev += 1;
        self.queue.push(Reverse((at, id)));
        self.events.insert(id, Ev::ToAgent { agent, conn, msg });
    }

    pub fn send_to_coord(&mut self, agent: usize, conn: u64, msg: Down) {
        let at = (self.now + self.delay()).max(self.wires[agent].last_down);
        self.wires[agent].last_down = at;
        let id = self.next_ev;
        self.next_ev += 1;
        self.queue.push(Reverse((at, id)));
        self.events.insert(id, Ev::ToCoord { agent, conn, msg });
    }

    /// Ends agent `agent`'s connection on both sides, if it is `conn`.
    pub fn break_connection(&mut self, agent: usize, conn: u64, why: &str) {
        if conn == 0 || self.wires[agent].conn != conn {
            return;
        }
        self.wires[agent].conn = 0;
        self.note(format!("agent {agent}: connection {conn} lost ({why})"));
        self.agent_session_ended(agent, conn);
        self.coord_connection_lost(agent, why);
    }

    fn schedule_faults(&mut self) {
        let until = self.cfg.faults_until;
        let n = self.agents.len() as u64;
        for _ in 0..self.cfg.drops {
            let at = self.rng.range(0, until);
            let agent = self.rng.range(0, n - 1) as usize;
            self.at(at, Ev::DropFault { agent });
        }
        for _ in 0..self.cfg.partitions {
            let at = self.rng.range(0, until);
            let agent = self.rng.range(0, n - 1) as usize;
            let ms = self.rng.range(100, 2 * self.cfg.grace_ms);
            self.at(at, Ev::Partition { agent, ms });
        }
        for _ in 0..self.cfg.agent_crashes {
            let at = self.rng.range(0, until);
            let agent = self.rng.range(0, n - 1) as usize;
            self.at(at, Ev::AgentCrash { agent });
        }
        for _ in 0..self.cfg.coord_crashes {
            let at = self.rng.range(0, until);
            self.at(at, Ev::CoordCrash);
        }
        if let Some(at) = self.cfg.cancel_at {
            self.at(at, Ev::Cancel);
        }
        for _ in 0..self.cfg.disk_fills {
            let at = self.rng.range(0, until);
            let agent = self.rng.range(0, n - 1) as usize;
            let ms = self.rng.range(500, 2 * self.cfg.grace_ms);
            self.at(at, Ev::DiskFull { agent, ms });
        }
    }

    /// Runs the seed to its end; `Err` says which invariant broke (the trace is in `self`).
    pub fn run(&mut self) -> Result<Outcome, String> {
        for agent in 0..self.agents.len() {
            self.agent_start(agent);
        }
        self.coord_start(true);
        self.schedule_faults();
        let mut steps = 0u64;
        while let Some(Reverse((at, id))) = self.queue.pop() {
            let ev = self.events.remove(&id).expect("event");
            self.now = at;
            steps += 1;
            if let Some(ended) = self.ended_at {
                // After the run: let what is in flight arrive (acknowledgements, kills), then stop.
                if self.now > ended + 5_000 {
                    break;
                }
            }
            if self.now > DEADLINE_MS {
                return Err(format!(
                    "the run has not ended after {} s of virtual time",
                    DEADLINE_MS / 1000
                ));
            }
            self.step(ev);
            if let Some(violation) = self.check.take_violation() {
                return Err(violation);
            }
        }
        if self.ended_at.is_none() {
            return Err("nothing left to happen, yet the run has not ended".into());
        }
        self.final_checks()?;
        Ok(Outcome {
            stats: self.check.stats,
            digest: self.digest,
            virtual_ms: self.now,
            steps,
        })
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::ToAgent { agent, conn, msg } => {
                if self.wires[agent].conn == conn {
                    self.agent_receive(agent, conn, msg);
                }
            }
            Ev::ToCoord { agent, conn, msg } => {
                if self.wires[agent].conn == conn {
                    self.coord_receive(agent, msg);
                }
            }
            Ev::File {
                agent,
                conn,
                key,
                path,
                size,
                sha256,
                body,
            } => {
                if self.wires[agent].conn == conn {
                    self.coord_file(agent, key, &path, size, &sha256, &body);
                }
            }
            Ev::Dial { agent, inc } => self.dial(agent, inc),
            Ev::Lost { agent, conn } => self.break_connection(agent, conn, "connection lost"),
            Ev::DropFault { agent } => {
                let conn = self.wires[agent].conn;
                self.break_connection(agent, conn, "dropped by the network");
            }
            Ev::Partition { agent, ms } => {
                self.note(format!("agent {agent}: unreachable for {ms} ms"));
                self.wires[agent].partitioned_until = self.now + ms;
                let conn = self.wires[agent].conn;
                // Nothing arrives any more: each side notices after a while.
                let notice = self.rng.range(50, 1_500);
                self.at(notice, Ev::Lost { agent, conn });
            }
            Ev::ProcStart { agent, inc, id } => self.proc_start(agent, inc, id),
            Ev::ProcExit {
                agent,
                inc,
                id,
                outcome,
            } => self.proc_exit(agent, inc, id, outcome),
            Ev::LedgerCommit { agent, inc } => self.ledger_commit(agent, inc),
            Ev::AgentTick { agent, inc } => self.agent_tick(agent, inc),
            Ev::AgentCrash { agent } => self.agent_crash(agent),
            Ev::AgentRestart { agent } => self.agent_start(agent),
            Ev::CoordFlush { inc } => self.coord_flush_tick(inc),
            Ev::StoreCommit { inc, batch } => self.store_commit(inc, batch),
            Ev::CoordTick { inc } => self.coord_tick(inc),
            Ev::CoordCrash => self.coord_crash(),
            Ev::CoordRestart => self.coord_start(false),
            Ev::Cancel => self.coord_cancel(),
            Ev::DiskFull { agent, ms } => {
                self.note(format!("agent {agent}: disk full for {ms} ms"));
                self.agents[agent].disk_full_until = self.now + ms;
            }
        }
    }

    /// The coordinator dials agent `agent`.
    fn dial(&mut self, agent: usize, inc: u64) {
        if self.coord.is_none() || inc != self.coord_inc || self.wires[agent].conn != 0 {
            return;
        }
        let reachable =
            self.agents[agent].alive() && self.now >= self.wires[agent].partitioned_until;
        if !reachable {
            self.coord_dial_failed(agent);
            return;
        }
        self.next_conn += 1;
        let conn = self.next_conn;
        self.wires[agent].conn = conn;
        self.note(format!("agent {agent}: connection {conn} up"));
        self.agent_session_started(agent, conn);
    }

    /// End-of-run checks: every task ended with what it should have, nothing of a cancelled
    /// run still runs.
    fn final_checks(&mut self) -> Result<(), String> {
        let running: Vec<(usize, u64, u32)> = self
            .agents
            .iter()
            .enumerate()
            .flat_map(|(a, host)| host.running().into_iter().map(move |(i, t)| (a, i, t)))
            .collect();
        self.check.at_end(&self.store, &running)
    }
}

/// A short description of a message, for the trace.
pub fn describe(msg: &FromAgent) -> String {
    match msg {
        FromAgent::Events(batch) => {
            let events: Vec<String> = batch
                .events
                .iter()
                .map(|e| {
                    let kind = match &e.kind {
                        hsm_protocol::EventKind::Started { .. } => "started".to_string(),
                        hsm_protocol::EventKind::Exited { outcome, .. } => {
                            format!("exited {outcome:?}")
                        }
                        hsm_protocol::EventKind::ResultOffer { files } => {
                            format!("offer {}", files.len())
                        }
                        other => format!("{other:?}"),
                    };
                    format!("{}/{}#{} {kind}", e.task.index.0, e.task.attempt.0, e.seq.0)
                })
                .collect();
            format!("events [{}]", events.join(", "))
        }
        FromAgent::Attached(a) => format!(
            "attached, unknown {:?}",
            a.unknown
                .iter()
                .map(|t| (t.index.0, t.attempt.0))
                .collect::<Vec<_>>()
        ),
        FromAgent::Error(e) => format!("error {:?}", e.message),
        FromAgent::Heartbeat(h) => format!("heartbeat, {} bytes free", h.free_disk_bytes),
        other => format!("{other:?}"),
    }
}

pub fn describe_to(msg: &ToAgent) -> String {
    let refs = |tasks: &[hsm_protocol::TaskRef]| {
        tasks
            .iter()
            .map(|t| (t.index.0, t.attempt.0))
            .collect::<Vec<_>>()
    };
    match msg {
        ToAgent::Submit(s) => format!(
            "submit {:?}",
            s.tasks
                .iter()
                .map(|t| (t.index.0, t.attempt.0))
                .collect::<Vec<_>>()
        ),
        ToAgent::Cancel(c) => format!(
            "cancel {:?} unstarted_only={}",
            refs(&c.tasks),
            c.unstarted_only
        ),
        ToAgent::Ack(a) => format!(
            "ack {:?}",
            a.acks
                .iter()
                .map(|e| (e.task.index.0, e.task.attempt.0, e.seq.0))
                .collect::<Vec<_>>()
        ),
        ToAgent::FetchResults(f) => format!(
            "fetch {}/{} {:?}",
            f.task.index.0, f.task.attempt.0, f.paths
        ),
        ToAgent::ResultsDone(d) => format!("results done {}/{}", d.task.index.0, d.task.attempt.0),
        ToAgent::Attach(a) => format!("attach {:?}", refs(&a.tasks)),
        other => format!("{other:?}"),
    }
}
