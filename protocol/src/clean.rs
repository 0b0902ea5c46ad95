//! `agent clean`'s request and answer: the coordinator names the sweeps whose results it holds,
//! the agent removes their task directories and forgets them in its ledger, and says what it
//! removed and what it kept and why.
//!
//! The variants carrying them (`ToAgent::Clean`, `FromAgent::Cleaned`) came without a protocol
//! bump: only `agent clean` sends `Clean`, on a connection of its own, and an agent that predates
//! it answers with its usual `Error("malformed message: …")` and closes, which
//! the coordinator recognises ([`is_unknown_request`]) and reports as "agent too old". A sweep's
//! connection never sends it, so nothing else changes for an older agent.

use crate::ids::SweepId;
use serde::{Deserialize, Serialize};

/// Remove these sweeps' files on the agent and forget them in its ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanMsg {
    /// The sweeps whose results the coordinator holds (it decided from its `sweep.db`s); the
    /// agent checks each again and removes only what it may.
    pub sweeps: Vec<SweepId>,
    /// Only sweeps whose last activity on the agent (a file written, a coordinator's request) is
    /// at least this many seconds ago; `None`: any age.
    #[serde(default)]
    pub older_than_secs: Option<u64>,
    /// Say what would be removed; remove and forget nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// The answer to a [`CleanMsg`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanedMsg {
    /// Removed (or, with `dry_run`, would be removed).
    pub removed: Vec<CleanedSweep>,
    /// Named but kept, each with why.
    pub kept: Vec<KeptSweep>,
    /// Named sweeps the agent has nothing of (no directory, nothing in its ledger).
    #[serde(default)]
    pub absent: Vec<SweepId>,
}

/// One sweep removed from the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanedSweep {
    pub sweep_id: SweepId,
    /// The sweep's directory on the agent's host (empty when it had none, only ledger entries).
    pub dir: String,
    /// Task directories under it.
    pub task_dirs: u64,
    /// Bytes of the files under it.
    pub bytes: u64,
}

/// One sweep the agent kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptSweep {
    pub sweep_id: SweepId,
    /// Why, for the person at the coordinator: lowercase, no trailing period.
    pub reason: String,
}

/// Whether an agent's `Error` text is its answer to a request it cannot decode: what an agent
/// that predates a request variant says to a well-formed request of that variant (see the
/// module notes).
pub fn is_unknown_request(error: &str) -> bool {
    error.starts_with("malformed message")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, encode, PingMsg, ToAgent};

    #[test]
    fn an_old_agents_answer_to_clean_is_recognised() {
        // The catalogue as an agent of the previous release decodes it.
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        enum OldToAgent {
            Ping(PingMsg),
        }
        let frame = encode(&ToAgent::Clean(CleanMsg {
            sweeps: vec![SweepId::from("s1")],
            older_than_secs: None,
            dry_run: false,
        }))
        .unwrap();
        let body = &frame[crate::PREFIX_LEN..];
        let e = decode::<OldToAgent>(body).unwrap_err();
        // What its read loop answers (server.rs).
        let answer = format!("malformed message: {e}");
        assert!(is_unknown_request(&answer), "{answer}");
        assert!(!is_unknown_request(
            "refused cancel for sweep s: malformed message"
        ));
    }
}
