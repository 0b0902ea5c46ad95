//! The coordinator's actix actors: one sweep actor owns and alone mutates the sweep state, one
//! actor per compute source carries out its commands, and a store actor on its own thread does
//! the blocking SQLite and file writes. The logic lives in `crate::core`; these are thin shells.

pub mod local;
pub mod store;
pub mod sweep;

use hsm_agent::process::ProcessEvent;

/// A task event from source number `source`, delivered to the sweep actor.
#[derive(actix::Message, Debug)]
#[rtype(result = "()")]
pub struct SourceEvent {
    pub source: usize,
    pub event: ProcessEvent,
}
