//! The versioned handshake: the coordinator's `Hello`, the agent's `Welcome` or `Reject`, and the
//! pure decision between them.
//!
//! The first frame on the control stream is a [`Hello`]; the agent answers with one
//! [`HelloReply`]. Both must stay decodable by every past and future release, because a peer
//! learns the other's version from them: the fields that exist now are never removed or renamed,
//! and a `Reject` is the one thing an old coordinator can always read from a newer agent.

use crate::messages::SweepTaskRef;
use crate::preflight::{PreflightMsg, PreflightProblem};
use crate::sync::{SyncReport, SyncRequest};
use serde::{Deserialize, Serialize};

/// The protocol this build speaks. Bumped for any change an older peer cannot decode or would
/// misread: a new message variant, a changed field type or meaning. Adding a field that has a
/// default does not need a bump.
pub const PROTOCOL_VERSION: u32 = 3;

/// Coordinator → agent, the first frame on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol the coordinator speaks.
    pub protocol_version: u32,
    /// The coordinator's release (`CARGO_PKG_VERSION`), for messages and logs.
    #[serde(default)]
    pub coordinator_version: String,
    /// Checks to make before welcoming (see [`crate::preflight`]); `None`: none asked.
    #[serde(default)]
    pub preflight: Option<PreflightMsg>,
    /// The project's manifest to compare with the agent's copy (see [`crate::sync`]); `None`:
    /// no comparison asked.
    #[serde(default)]
    pub sync: Option<SyncRequest>,
}

impl Hello {
    /// The `Hello` this build sends.
    pub fn new(coordinator_version: impl Into<String>) -> Hello {
        Hello {
            protocol_version: PROTOCOL_VERSION,
            coordinator_version: coordinator_version.into(),
            preflight: None,
            sync: None,
        }
    }

    /// This `Hello`, asking for pre-flight checks.
    pub fn with_preflight(mut self, preflight: PreflightMsg) -> Hello {
        self.preflight = Some(preflight);
        self
    }
}

/// Agent → coordinator, the answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    /// The agent speaks the coordinator's protocol; `ToAgent`/`FromAgent` frames follow.
    Welcome(Welcome),
    /// The agent will not talk; it closes the connection after sending this.
    Reject(Reject),
}

/// The agent accepts the connection and describes itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The protocol the agent speaks (equal to the coordinator's, or it would have rejected).
    pub protocol_version: u32,
    /// The agent's release.
    pub agent_version: String,
    /// The agent's name for itself (host name unless configured), for messages and logs.
    pub agent_name: String,
    /// Tasks the agent runs at once.
    pub slots: u32,
    /// The backend that runs tasks (`process`, `slurm`, `pbs`).
    pub backend: String,
    /// Task attempts still running from before this connection, which the coordinator
    /// re-attaches instead of re-running.
    #[serde(default)]
    pub running: Vec<SweepTaskRef>,
    /// The agent's work directory (tasks' files live under `<work_dir>/<sweep>/tasks/`), so the
    /// coordinator can show where an agent task's files really are; empty when unknown.
    #[serde(default)]
    pub work_dir: String,
    /// The problems the asked pre-flight checks found (empty: all passed); `None` when none were
    /// asked or the agent predates them.
    #[serde(default)]
    pub preflight: Option<Vec<PreflightProblem>>,
    /// What differs from the coordinator's project; `None` when no comparison was asked or the
    /// agent predates project sync.
    #[serde(default)]
    pub sync: Option<SyncReport>,
}

/// The agent refuses the connection; `reason` is meant for the person at the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("agent refused the connection: {reason}")]
pub struct Reject {
    /// What went wrong and what to do about it, naming both versions when they differ.
    pub reason: String,
    /// The protocol the agent speaks.
    pub agent_protocol_version: u32,
    /// The protocol the coordinator said it speaks.
    pub coordinator_protocol_version: u32,
}

/// What an agent knows about itself, to fill a [`Welcome`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInfo {
    /// The agent's release.
    pub agent_version: String,
    /// The agent's name.
    pub agent_name: String,
    /// Tasks the agent runs at once.
    pub slots: u32,
    /// The backend that runs tasks.
    pub backend: String,
    /// Task attempts still running from before this connection.
    pub running: Vec<SweepTaskRef>,
    /// The agent's work directory.
    pub work_dir: String,
}

/// Whether a coordinator and an agent speaking these protocols can talk. Only equal versions can:
/// with a handful of hosts, upgrading the older side is cheaper than carrying translation code.
pub fn is_compatible(coordinator_protocol_version: u32, agent_protocol_version: u32) -> bool {
    coordinator_protocol_version == agent_protocol_version
}

/// The agent's answer to a `Hello`: a `Welcome` when the versions match, otherwise a `Reject`
/// whose reason names both versions and which side to upgrade.
pub fn negotiate(hello: &Hello, agent: AgentInfo) -> Result<Welcome, Reject> {
    if !is_compatible(hello.protocol_version, PROTOCOL_VERSION) {
        let older = if hello.protocol_version > PROTOCOL_VERSION {
            "agent"
        } else {
            "coordinator"
        };
        // The peer's text: the agent logs this reason too.
        let coordinator_version = if hello.coordinator_version.is_empty() {
            "unknown".into()
        } else {
            crate::display_safe(&hello.coordinator_version)
        };
        return Err(Reject {
            reason: format!(
                "coordinator speaks protocol {}, this agent speaks {}: upgrade the {} \
                 (coordinator release {}, agent {} release {})",
                hello.protocol_version,
                PROTOCOL_VERSION,
                older,
                coordinator_version,
                agent.agent_name,
                agent.agent_version,
            ),
            agent_protocol_version: PROTOCOL_VERSION,
            coordinator_protocol_version: hello.protocol_version,
        });
    }
    Ok(Welcome {
        protocol_version: PROTOCOL_VERSION,
        agent_version: agent.agent_version,
        agent_name: agent.agent_name,
        slots: agent.slots,
        backend: agent.backend,
        running: agent.running,
        work_dir: agent.work_dir,
        preflight: None,
        sync: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Attempt, SweepId, TaskIndex};
    use crate::messages::TaskRef;

    fn agent() -> AgentInfo {
        AgentInfo {
            agent_version: "0.1.0".into(),
            agent_name: "gpu01".into(),
            slots: 4,
            backend: "process".into(),
            running: vec![SweepTaskRef {
                sweep_id: SweepId::from("s1"),
                task: TaskRef {
                    index: TaskIndex(3),
                    attempt: Attempt(2),
                },
            }],
            work_dir: "/srv/hsm/work".into(),
        }
    }

    #[test]
    fn same_version_is_welcomed_with_the_agents_description() {
        let welcome = negotiate(&Hello::new("0.1.0"), agent()).unwrap();
        assert_eq!(welcome.protocol_version, PROTOCOL_VERSION);
        assert_eq!(welcome.agent_name, "gpu01");
        assert_eq!(welcome.slots, 4);
        assert_eq!(welcome.backend, "process");
        assert_eq!(welcome.running, agent().running);
    }

    #[test]
    fn newer_coordinator_is_told_to_upgrade_the_agent() {
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION + 1,
            coordinator_version: "9.0.0".into(),
            preflight: None,
            sync: None,
        };
        let reject = negotiate(&hello, agent()).unwrap_err();
        assert_eq!(reject.agent_protocol_version, PROTOCOL_VERSION);
        assert_eq!(reject.coordinator_protocol_version, PROTOCOL_VERSION + 1);
        let expected = format!(
            "coordinator speaks protocol {}, this agent speaks {}: upgrade the agent",
            PROTOCOL_VERSION + 1,
            PROTOCOL_VERSION
        );
        assert!(reject.reason.starts_with(&expected), "{}", reject.reason);
        assert!(reject.reason.contains("9.0.0") && reject.reason.contains("gpu01"));
        assert!(reject
            .to_string()
            .starts_with("agent refused the connection: coordinator speaks"));
    }

    #[test]
    fn older_coordinator_is_told_to_upgrade_itself() {
        let hello = Hello {
            protocol_version: 0,
            coordinator_version: String::new(),
            preflight: None,
            sync: None,
        };
        let reject = negotiate(&hello, agent()).unwrap_err();
        assert!(
            reject.reason.starts_with(&format!(
                "coordinator speaks protocol 0, this agent speaks {PROTOCOL_VERSION}: upgrade the coordinator"
            )),
            "{}",
            reject.reason
        );
        assert!(reject.reason.contains("coordinator release unknown"));
    }

    #[test]
    fn a_coordinator_version_with_terminal_controls_is_escaped_in_the_reason() {
        let hello = Hello {
            protocol_version: 0,
            coordinator_version: "9\r\nFORGED\x1b[2K".into(),
            preflight: None,
            sync: None,
        };
        let reject = negotiate(&hello, agent()).unwrap_err();
        assert!(
            reject.reason.contains("release 9\\r\\nFORGED\\x1b[2K,"),
            "{}",
            reject.reason
        );
    }

    #[test]
    fn only_equal_versions_are_compatible() {
        assert!(is_compatible(1, 1));
        assert!(!is_compatible(1, 2));
        assert!(!is_compatible(2, 1));
    }
}
