//! Pre-flight: what a coordinator asks an agent to check, in its `Hello`, before any task goes
//! there — the project directory, the script, the interpreter (with its conda env and setup
//! lines) and free disk — and the problems the agent found, in its `Welcome`.
//!
//! Both ride on the handshake as defaulted fields: an agent that predates them ignores the
//! request and answers without a verdict (`Welcome.preflight` is `None`), which the coordinator
//! reports as "not checked" rather than as a failure.

use serde::{Deserialize, Serialize};

/// What the tasks of a run need on the agent's host.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PreflightMsg {
    /// The tasks' working directory (the source's `project_dir`); empty: the agent's own.
    #[serde(default)]
    pub project_dir: String,
    /// Files that must exist, relative to `project_dir` unless absolute (the script).
    #[serde(default)]
    pub files: Vec<String>,
    /// The command that shows the interpreter runs (`python3 --version`, through `conda run`
    /// when the run uses a conda env); empty: no interpreter check.
    #[serde(default)]
    pub interpreter: Vec<String>,
    /// Shell lines run before the interpreter check, as before each task (`module load …`).
    #[serde(default)]
    pub setup: Vec<String>,
    /// Free bytes wanted in the agent's work directory; 0: no check.
    #[serde(default)]
    pub min_free_disk: u64,
    /// The batch scheduler the tasks go to (the source's `backend:`): its commands must be
    /// the ones this host answers with. `None`: tasks run as processes (and older coordinators).
    #[serde(default)]
    pub scheduler: Option<crate::SchedulerChoice>,
}

/// One thing the tasks need that the agent's host does not have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreflightProblem {
    /// Which check: `project_dir`, `file`, `interpreter`, `disk` (a newer agent may add more;
    /// the coordinator shows an unknown one as it is).
    pub check: String,
    /// What was found, for a person: "/srv/proj does not exist".
    pub detail: String,
}

/// The names of the checks.
pub mod check {
    pub const PROJECT_DIR: &str = "project_dir";
    pub const FILE: &str = "file";
    pub const INTERPRETER: &str = "interpreter";
    pub const DISK: &str = "disk";
    pub const SCHEDULER: &str = "scheduler";
}
