//! The coordinator's actix actors: one sweep actor owns and alone mutates the sweep state, one
//! actor per compute source carries out its commands, and a store actor on its own thread does
//! the blocking SQLite and file writes. The logic lives in `crate::core`; these are thin shells.

pub mod agent;
pub mod local;
pub mod store;
pub mod sweep;

use crate::core::state::{ExitKind, Usage};
use hsm_exec::process::{Outcome, ProcessEvent, TaskKey};

/// What a source reports about one task attempt, whatever kind of source it is.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskReport {
    /// Handed to a batch scheduler as job `job_id`.
    Submitted { key: TaskKey, job_id: String },
    Started {
        key: TaskKey,
        pid: Option<u32>,
        at_ms: i64,
    },
    /// The attempt ended; for agents, only once its result files arrived and were verified.
    Finished {
        key: TaskKey,
        exit: ExitKind,
        at_ms: i64,
        /// What the attempt used, when its source measured it.
        usage: Option<Usage>,
    },
    /// Events an agent source applied, to be acknowledged to the agent only once the changes
    /// they made are in `sweep.db`: the agent forgets an acknowledged event, so a coordinator
    /// killed before its next write must not have acknowledged it (else `sweep complete` would
    /// find neither the attempt in the database nor its events at the agent).
    Acks(Vec<hsm_protocol::EventRef>),
}

/// A task report from source number `source`, delivered to the sweep actor.
#[derive(actix::Message, Debug)]
#[rtype(result = "()")]
pub struct SourceEvent {
    pub source: usize,
    pub report: TaskReport,
}

/// A source became usable (connected, with this many slots) or unusable.
#[derive(actix::Message, Debug)]
#[rtype(result = "()")]
pub struct SourceStatus {
    pub source: usize,
    pub up: bool,
    /// Slots the source offers, when it says (an agent's `Welcome`).
    pub slots: Option<usize>,
    /// Unreachable past its grace period: its running tasks are given up and run elsewhere.
    pub lost: bool,
    /// Down, but the attempts waiting there stay with it rather than move elsewhere: a batch
    /// scheduler holds them (and may start them) whether or not its agent is connected, and
    /// taking them back would cancel their jobs and lose their place in the queue.
    pub keep_waiting: bool,
    /// Why, for the person watching.
    pub note: String,
    /// The network round trip to it, when measured (ms).
    pub rtt_ms: Option<u32>,
    /// It refused this coordinator or was refused (fingerprint, authorization, protocol): it
    /// is out of the run for good (`lost` too).
    pub refused: bool,
}

/// Unix milliseconds of a `SystemTime`.
pub use hsm_protocol::epoch_ms as ms_of;

pub use crate::core::link::usage_of;

/// How a process outcome counts for the sweep: as the same outcome reported by an agent.
pub fn exit_of(outcome: Outcome) -> ExitKind {
    crate::core::link::exit_of(outcome.to_msg())
}

/// A local process event as a task report; `None` for a scheduler submission, whose job script
/// an in-process scheduler source already wrote into the sweep's `scripts/job_scripts/`.
pub fn report_of(event: ProcessEvent) -> Option<TaskReport> {
    match event {
        // Dropping `Submitting` lets the submission go ahead: this sweep's own store records
        // the task as handed over already.
        ProcessEvent::Submitting { .. } => None,
        ProcessEvent::Submitted { key, element, .. } => Some(TaskReport::Submitted {
            key,
            job_id: element.id(),
        }),
        ProcessEvent::Started { key, pid, at } => Some(TaskReport::Started {
            key,
            pid: Some(pid),
            at_ms: ms_of(at),
        }),
        ProcessEvent::Exited {
            key,
            outcome,
            at,
            usage,
        } => Some(TaskReport::Finished {
            key,
            exit: exit_of(outcome),
            at_ms: ms_of(at),
            usage: usage.map(usage_of),
        }),
    }
}
