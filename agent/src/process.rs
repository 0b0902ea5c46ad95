//! (in progress) The process backend: runs task argv vectors as local processes.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// Identifies one attempt of one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskKey {
    /// 1-based task index within its sweep.
    pub index: u64,
    /// 1-based attempt number.
    pub attempt: u32,
}

/// One process to run.
#[derive(Debug, Clone)]
pub struct TaskLaunch {
    pub key: TaskKey,
    /// Program and arguments; never passed through a shell.
    pub argv: Vec<String>,
    /// Extra environment variables on top of the backend's own environment.
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// Files that receive the process's stdout and stderr (created or truncated).
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    /// Wall-clock limit; on expiry the process group gets SIGTERM, then SIGKILL after `kill_grace`.
    pub timeout: Option<Duration>,
    pub kill_grace: Duration,
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Exited by itself with this code (0 = success).
    Exited(i32),
    /// Killed by a signal we did not send.
    Signaled(i32),
    /// Ran past its timeout and was terminated.
    TimedOut,
    /// Cancelled through `cancel` / `cancel_all`.
    Cancelled,
    /// Could not be started (program not found, bad cwd, ...).
    SpawnFailed(String),
}

/// What the backend reports, in order per task: `Started` (unless spawning failed) then `Exited`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessEvent {
    Started {
        key: TaskKey,
        pid: u32,
        at: SystemTime,
    },
    Exited {
        key: TaskKey,
        outcome: Outcome,
        at: SystemTime,
    },
}
