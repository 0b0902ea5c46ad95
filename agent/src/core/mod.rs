//! The agent's task logic as a sans-IO state machine: [`AgentCore`] owns every task attempt the
//! agent holds (slots, queues, phases, parked and unconfirmed attempts, per-attempt `seq`, the
//! unacknowledged events and output credit, owners, claims) and decides everything about them.
//! It does no IO and reads no clock: commands come in through `handle_*` (with the time as an
//! argument), and what the shell must do comes out through `poll_*` — processes to launch and
//! kill, log files to tail, tailers to wake, ledger ops to record in order, events a session may
//! send. `runner.rs` is the shell (processes, files, the ledger writer, sessions); a simulator
//! can drive the same core under a virtual clock.
//!
//! Why it is shaped like this (the rules `runner.rs` used to keep under its lock):
//!
//! * One core, one order: the order events are appended in is the order they get their ledger
//!   position (`gen`) and their `seq`, and ledger ops come out of [`AgentCore::poll_ledger_ops`]
//!   in the order they were made.
//! * Events survive a dropped connection (they are replayed to the next one) and, with a disk
//!   ledger, a restart: an event becomes sendable only once the ledger reports it durable
//!   ([`AgentCore::handle_ledger_durable`]); without one, at once.
//! * Each attempt may have at most [`OUTPUT_WINDOW`] bytes of unacknowledged output; beyond that
//!   its tailer gets no credit until acknowledgements free room. `Exited` is only appended once
//!   the whole output was read, to keep the documented event order.
//! * Sessions do not own events; each keeps a cursor into the ledger positions. A new session
//!   starts at the beginning, which is the replay of everything unacknowledged.
//!
//! Two clocks are arguments: wall-clock milliseconds since the Unix epoch (`now_ms`, for event
//! times and when a sweep was seen) and a monotonic millisecond count (`mono_ms`, for how long a
//! sweep has gone unclaimed).

use crate::ledger::{Key, Op};
use crate::scheduler::{ElementRef, PendingElement};
use hsm_protocol::{
    EventRef, FileOffer, OutcomeMsg, Stream, SweepId, SweepTaskRef, TaskEventMsg, TaskRef,
    TemplateMsg, UsageMsg,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

mod claims;
mod events;
mod recover;
mod sweeps;
mod tasks;
#[cfg(test)]
mod tests;

pub use recover::Recovery;

/// Unacknowledged output bytes one attempt may hold in memory before its tailer pauses.
pub const OUTPUT_WINDOW: usize = 1024 * 1024;

pub use hsm_protocol::{task_dir_name, valid_sweep_id};

/// A task whose submission a restart cut short: its id, the job name and place it went out
/// under, its directory.
pub type Unsubmitted = (u64, PendingElement, PathBuf);

/// The task logic of one agent (see the module notes).
#[derive(Default)]
pub struct AgentCore {
    /// Where task directories go (`<work_dir>/<sweep>/tasks/task_NNN`); only joined, never read.
    work_dir: PathBuf,
    slots: usize,
    /// Whether changes are recorded in a disk ledger (ops are kept for
    /// [`AgentCore::poll_ledger_ops`], and events wait until they are durable).
    on_disk: bool,
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
    /// unclaimed for `--coordinator-lost-after` ([`AgentCore::poll_timeout`]). By sweep, in
    /// submission order.
    unconfirmed: HashMap<SweepId, BTreeSet<u64>>,
    /// Coordinator sessions that sent a sweep's `Submit` or `Attach` and are still connected.
    claims: HashMap<SweepId, usize>,
    /// Since when (monotonic ms) a sweep with unconfirmed attempts has had no claiming session.
    unclaimed_since: HashMap<SweepId, u64>,
    /// The monotonic time last given ([`AgentCore::set_mono_ms`]), for changes that start an
    /// unclaimed time as a side effect (an attempt ending releases a parked one).
    mono_ms: u64,
    /// Unacknowledged events by append position.
    ledger: BTreeMap<u64, Entry>,
    ledger_index: HashMap<EventRef, u64>,
    next_gen: u64,
    /// The first ledger position not yet durable (with a disk ledger).
    durable: u64,
    /// Each sweep's owner: the fingerprint of the coordinator identity that submitted it
    /// (`owners.rs`). Kept until the sweep is forgotten, like the ledger's `sweeps` table.
    owners: HashMap<SweepId, Arc<str>>,
    /// When a coordinator last addressed each sweep (ms since the Unix epoch), and the last
    /// such time written to the ledger (`core/sweeps.rs`).
    seen: HashMap<SweepId, i64>,
    seen_written: HashMap<SweepId, i64>,
    /// What the shell is to do, in the order it was decided.
    ops: Vec<LedgerOp>,
    next_barrier: u64,
    kills: Vec<Kill>,
    tails: Vec<Tail>,
    wakes: Vec<u64>,
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
    /// How it ended, as reported (`Lost` has no process outcome), and when (ms since the epoch).
    exit: Option<(OutcomeMsg, i64)>,
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

/// A change for the disk ledger, in order. `Barrier(token)` asks the shell to learn when every
/// op before it is committed (it maps the token to its own means, e.g. `Op::Barrier`).
pub enum LedgerOp {
    Record(Op),
    Barrier(u64),
}

/// An attempt to start: prepare its directory and hand it to the process backend, or (with
/// `template.hpc`) to the scheduler backend.
#[derive(Debug, Clone)]
pub struct Launch {
    pub id: u64,
    pub task: TaskRef,
    pub dir: PathBuf,
    pub template: Arc<TemplateMsg>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// A started attempt to stop: `hpc` says which backend holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kill {
    pub id: u64,
    pub hpc: bool,
}

/// A started attempt whose `stdout.log`/`stderr.log` are to be followed from `from` (bytes
/// already turned into events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tail {
    pub id: u64,
    pub dir: PathBuf,
    pub from: [u64; 2],
}

/// What a backend (process or scheduler) or the shell's file reading reports about attempt `id`.
#[derive(Debug, Clone)]
pub enum BackendEvent {
    /// A scheduler task went into a job.
    Submitted {
        id: u64,
        element: ElementRef,
        script: Option<(String, String)>,
    },
    Started {
        id: u64,
        pid: u32,
        at_ms: i64,
    },
    /// The process ended (or never started).
    Exited {
        id: u64,
        outcome: OutcomeMsg,
        at_ms: i64,
        usage: Option<UsageMsg>,
    },
    /// Bytes read from the task's logs, each at the offset it was read from.
    Output {
        id: u64,
        chunks: Vec<(Stream, Vec<u8>, u64)>,
    },
    /// The tailer read the whole output of an ended attempt: `Exited` is appended, and
    /// [`AgentCore::handle_backend_event`] answers with the directory whose results to scan.
    Drained {
        id: u64,
    },
    /// The files under `results/` of a drained attempt: the `ResultOffer`.
    ResultsScanned {
        id: u64,
        files: Vec<FileOffer>,
    },
    /// An attempt that never ran ends with this outcome (`Lost`, `Cancelled`): `Exited` then an
    /// empty `ResultOffer`.
    NeverRan {
        id: u64,
        outcome: OutcomeMsg,
        at_ms: i64,
    },
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

impl AgentCore {
    /// A core for `slots` process tasks at once, with task directories under `work_dir`;
    /// `on_disk`: changes go to a disk ledger (and events wait until they are durable there).
    pub fn new(work_dir: PathBuf, slots: usize, on_disk: bool) -> AgentCore {
        AgentCore {
            work_dir,
            slots: slots.max(1),
            on_disk,
            ..AgentCore::default()
        }
    }

    /// The monotonic clock (ms) reads `mono_ms` now; the shell sets it before each command.
    pub fn set_mono_ms(&mut self, mono_ms: u64) {
        self.mono_ms = self.mono_ms.max(mono_ms);
    }

    /// Ledger ops made since the last call, in order (none without a disk ledger).
    pub fn poll_ledger_ops(&mut self) -> Vec<LedgerOp> {
        std::mem::take(&mut self.ops)
    }

    /// Started attempts to stop, in the order asked.
    pub fn poll_kills(&mut self) -> Vec<Kill> {
        std::mem::take(&mut self.kills)
    }

    /// Log files to start following.
    pub fn poll_tails(&mut self) -> Vec<Tail> {
        std::mem::take(&mut self.tails)
    }

    /// Tailers to wake (their attempt ended, or acknowledgements gave them credit).
    pub fn poll_wakes(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.wakes)
    }

    /// The first ledger position not yet appended.
    pub fn next_gen(&self) -> u64 {
        self.next_gen
    }

    /// Records a change in the disk ledger, when there is one.
    fn log(&mut self, op: Op) {
        if self.on_disk {
            self.ops.push(LedgerOp::Record(op));
        }
    }

    /// A barrier after every op so far; `None` without a disk ledger (nothing to wait for).
    fn barrier(&mut self) -> Option<u64> {
        if !self.on_disk {
            return None;
        }
        let token = self.next_barrier;
        self.next_barrier += 1;
        self.ops.push(LedgerOp::Barrier(token));
        Some(token)
    }

    /// Whether attempt `id` was asked to stop.
    pub fn cancel_requested(&self, id: u64) -> bool {
        self.tasks.get(&id).is_some_and(|r| r.cancel_requested)
    }

    /// For a tailer: the output credit attempt `id` has left and whether it has ended (read
    /// before the files, so end-of-file seen after an exit is the real end of the output);
    /// `None` once the attempt is gone.
    pub fn tail_state(&self, id: u64) -> Option<(usize, bool)> {
        let record = self.tasks.get(&id)?;
        Some((
            OUTPUT_WINDOW.saturating_sub(record.unacked_output),
            record.exit.is_some(),
        ))
    }
}
