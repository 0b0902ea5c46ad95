//! The message catalogue: everything the coordinator sends an agent (`ToAgent`) and everything an
//! agent sends back (`FromAgent`) after the handshake, plus the header of a result-file stream.
//!
//! Payloads are structs with named fields, encoded as MessagePack maps, so a later release can add
//! a field (with `#[serde(default)]` or as an `Option`) and an older peer simply ignores it. Enum
//! variant names are the wire tags: never rename one. Only these types go on the wire; the
//! coordinator and agent convert their internal types at the edge.

use crate::bytes::Bytes;
use crate::ids::{Attempt, Seq, SweepId, TaskIndex};
use serde::{Deserialize, Serialize};

/// One attempt of one task within a sweep that the context already names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TaskRef {
    /// The task's 1-based index in its sweep.
    pub index: TaskIndex,
    /// The task's 1-based attempt.
    pub attempt: Attempt,
}

/// One attempt of one task, with its sweep (an agent may run several sweeps at once).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SweepTaskRef {
    /// The sweep the task belongs to.
    pub sweep_id: SweepId,
    /// The task attempt.
    pub task: TaskRef,
}

/// Names one event of one task attempt, to acknowledge it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EventRef {
    /// The sweep the task belongs to.
    pub sweep_id: SweepId,
    /// The task attempt that produced the event.
    pub task: TaskRef,
    /// The event's sequence number within that attempt.
    pub seq: Seq,
}

// ---------------------------------------------------------------------------------------------
// Coordinator → agent
// ---------------------------------------------------------------------------------------------

/// Stands for the task's results directory *on the agent* in task arguments and environment
/// values: the coordinator cannot know the agent's paths, so it writes this token and the agent
/// replaces every occurrence with the absolute path of the task's `results/` directory. Plain
/// letters and underscores, so Hydra's override grammar passes it through unquoted.
pub const AGENT_OUTPUT_DIR: &str = "__HSM_AGENT_OUTPUT_DIR__";

/// Everything the coordinator sends on the control stream after the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToAgent {
    /// Run these tasks.
    Submit(SubmitMsg),
    /// Stop these tasks.
    Cancel(CancelMsg),
    /// These events are stored; the agent may forget them.
    Ack(AckMsg),
    /// Answer with a `Pong` carrying the same nonce (round trip and liveness).
    Ping(PingMsg),
    /// Send the offered result files of a task, each on its own stream.
    FetchResults(FetchMsg),
    /// The coordinator has every result file of a task; the agent may delete them.
    ResultsDone(ResultsDoneMsg),
    /// A coordinator that restarted takes these attempts up again (`sweep complete` after a
    /// crash): the agent answers `Attached` naming the ones it does not hold, and sends again the
    /// end of any it holds whose end was acknowledged by the previous coordinator.
    Attach(AttachMsg),
    /// Remove the named sweeps' files and forget them (`agent clean`); answered by `Cleaned`.
    /// An agent that predates it answers `Error` (see `crate::clean`).
    Clean(crate::clean::CleanMsg),
}

/// Attempts a coordinator takes up again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachMsg {
    pub sweep_id: SweepId,
    pub tasks: Vec<TaskRef>,
}

/// A batch of tasks of one sweep.
///
/// Tasks of an array share a command: the shared part travels once as a [`TemplateMsg`] and each
/// [`TaskMsg`] carries only what differs, so a 10,000-task submission is not 10,000 copies of the
/// interpreter path and environment. A submission larger than a frame is split by the sender into
/// several `Submit`s, each repeating the templates it uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitMsg {
    /// The sweep the tasks belong to.
    pub sweep_id: SweepId,
    /// Command templates referenced by `tasks[].template`.
    pub templates: Vec<TemplateMsg>,
    /// The task attempts to run.
    pub tasks: Vec<TaskMsg>,
}

/// The part of a command shared by many tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateMsg {
    /// Key referenced by [`TaskMsg::template`], unique within one [`SubmitMsg`].
    pub id: u32,
    /// Program and leading arguments; a task's argv is this followed by its `args`.
    pub argv_prefix: Vec<String>,
    /// Environment added for every task of the template (a task's own `env` wins).
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Working directory on the agent's host (the source's project directory).
    pub cwd: String,
    /// Wall-clock limit per task; `None` means none.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// How long after SIGTERM (timeout or cancel) the agent waits before SIGKILL.
    pub kill_grace_ms: u64,
    /// Run through a batch scheduler (Slurm/PBS) instead of as processes on the agent's host.
    #[serde(default)]
    pub hpc: Option<HpcMsg>,
    /// The sweep keeps a compact layout: once an attempt's results are delivered, the agent
    /// removes its empty logs and its directory when nothing else is left in it, so a silent
    /// task leaves no file on the agent's host either. Absent (an older coordinator): false.
    #[serde(default)]
    pub compact: bool,
}

/// How the tasks of a template go through a batch scheduler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HpcMsg {
    pub scheduler: SchedulerChoice,
    pub resources: HpcResources,
}

/// Which scheduler an agent uses for a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SchedulerChoice {
    /// Whatever the agent's host has: Slurm first, then PBS or Grid Engine.
    Auto,
    Slurm,
    /// PBS Pro or Torque (the agent tells them apart).
    Pbs,
    /// Grid Engine (Son of Grid Engine, Univa/Altair, Open Grid Scheduler): `qsub -t`, `#$`.
    Sge,
}

/// Resources requested for every task of a sweep on an HPC source. Every field is optional except
/// the lists (empty = nothing) and `array` (default true).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HpcResources {
    /// Wall-clock limit per task, in seconds.
    pub walltime: Option<u64>,
    /// Slurm partition.
    pub partition: Option<String>,
    /// PBS queue (`-q`); for Slurm, used as the partition when `partition` is unset.
    pub queue: Option<String>,
    /// Account to charge (`--account` / `-A`).
    pub account: Option<String>,
    /// Slurm quality of service.
    pub qos: Option<String>,
    /// CPUs per task.
    pub cpus: Option<u32>,
    /// Memory per task as written: `16G`, `4000M`, `64gb`, `1.5T`, or a bare number of megabytes.
    pub mem: Option<String>,
    /// Number of GPUs of any type (`--gpus=N`, PBS Pro `ngpus=N`).
    pub gpus: Option<u32>,
    /// Slurm generic resource, e.g. `gpu:a100:1`; wins over `gpus` for Slurm.
    pub gres: Option<String>,
    /// Environment modules to load (`module load X`), in order.
    pub modules: Vec<String>,
    /// Conda environment to activate before the task runs.
    pub conda_env: Option<String>,
    /// Shell lines run before the task (after modules and conda), in order.
    pub pre_script: Vec<String>,
    /// Extra raw directive lines written after ours: either `--constraint=a100` (the scheduler's
    /// prefix is added) or a whole `#SBATCH ...` / `#PBS ...` line (written as is).
    pub directives: Vec<String>,
    /// Largest array the cluster accepts (overrides what `scontrol show config` says).
    pub max_array_size: Option<u32>,
    /// At most this many elements of one array run at once (`%K`).
    pub array_throttle: Option<u32>,
    /// `true`: one job array per chunk; `false`: one job per task, for sites that forbid arrays.
    pub array: bool,
    /// Whether the scheduler may run a job again after a preemption or a node failure
    /// (`--requeue`/`--no-requeue`, PBS `-r y`/`-r n`); `None`: the cluster's default.
    pub requeue: Option<bool>,
    /// At most this many of the agent's jobs (array elements count one each) queued or running
    /// at once: more are submitted as they end.
    pub max_jobs: Option<u32>,
    /// Tasks one job (array element) runs one after another (`hpc.tasks_per_job`, packing
    /// short tasks); `None` or 1: one task per job. Each keeps its own directory and records.
    pub tasks_per_job: Option<u32>,
    /// Of a packed job's tasks, at most this many at once (the job asks for that many times
    /// the per-task CPUs and memory); `None`: one at a time.
    pub pack_parallel: Option<u32>,
    /// A Python HSM v1 resource string (`hpc.default_resources`, e.g. `select=1:ncpus=4:mem=16gb`),
    /// passed through to the scheduler as written (`-l` for PBS, `#SBATCH` words for Slurm).
    pub resources: Option<String>,
}

impl Default for HpcResources {
    fn default() -> Self {
        HpcResources {
            walltime: None,
            partition: None,
            queue: None,
            account: None,
            qos: None,
            cpus: None,
            mem: None,
            gpus: None,
            gres: None,
            modules: Vec::new(),
            conda_env: None,
            pre_script: Vec::new(),
            directives: Vec::new(),
            max_array_size: None,
            array_throttle: None,
            array: true,
            requeue: None,
            max_jobs: None,
            tasks_per_job: None,
            pack_parallel: None,
            resources: None,
        }
    }
}

/// One task attempt to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskMsg {
    /// The task's 1-based index in its sweep.
    pub index: TaskIndex,
    /// The attempt being assigned to this agent.
    pub attempt: Attempt,
    /// The [`TemplateMsg::id`] whose command this task extends.
    pub template: u32,
    /// Arguments appended to the template's `argv_prefix`.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment specific to this task, applied after the template's.
    #[serde(default)]
    pub env: Vec<(String, String)>,
}

impl TaskMsg {
    /// This task's attempt as a [`TaskRef`].
    pub fn task_ref(&self) -> TaskRef {
        TaskRef {
            index: self.index,
            attempt: self.attempt,
        }
    }
}

/// Stop tasks of a sweep (SIGTERM, the template's grace, SIGKILL); queued ones never start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelMsg {
    /// The sweep whose tasks stop.
    pub sweep_id: SweepId,
    /// The task attempts to stop; empty means every task of the sweep.
    #[serde(default)]
    pub tasks: Vec<TaskRef>,
    /// Only drop attempts that have not started (they report `Exited{Cancelled}`); leave
    /// started ones running. The coordinator asks this to move a waiting task to an idle
    /// source. An agent that predates the field stops started ones too, which the coordinator
    /// also takes as the task being free to run elsewhere.
    #[serde(default)]
    pub unstarted_only: bool,
}

/// Acknowledges events the coordinator has durably applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckMsg {
    /// Each acknowledged event; the agent drops them from its ledger and never replays them.
    pub acks: Vec<EventRef>,
}

/// Liveness probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingMsg {
    /// Echoed in the `Pong`, so a reply can be matched to its ping.
    pub nonce: u64,
}

/// Asks for a task's offered result files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchMsg {
    /// The sweep the task belongs to.
    pub sweep_id: SweepId,
    /// The task attempt whose files are wanted.
    pub task: TaskRef,
    /// Which offered paths to send; empty means all of them (a coordinator resuming after a
    /// reconnect can ask only for the files it lacks).
    #[serde(default)]
    pub paths: Vec<String>,
}

/// The coordinator holds a task's files; the agent may delete its copies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultsDoneMsg {
    /// The sweep the task belongs to.
    pub sweep_id: SweepId,
    /// The task attempt whose files were received.
    pub task: TaskRef,
}

// ---------------------------------------------------------------------------------------------
// Agent → coordinator
// ---------------------------------------------------------------------------------------------

/// Everything an agent sends on the control stream after the handshake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FromAgent {
    /// Task events, batched.
    Events(EventsMsg),
    /// Periodic health report.
    Heartbeat(HeartbeatMsg),
    /// Reply to a `Ping`.
    Pong(PongMsg),
    /// The agent could not act on a message (unknown sweep, malformed request, ...).
    Error(ErrorMsg),
    /// The answer to `Attach`.
    Attached(AttachedMsg),
    /// The answer to `Clean`.
    Cleaned(crate::clean::CleanedMsg),
}

/// The answer to an `Attach`: which of the attempts the agent does not hold (never received,
/// or finished and forgotten); nothing more will come about those. The others report on as
/// usual.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachedMsg {
    pub sweep_id: SweepId,
    pub unknown: Vec<TaskRef>,
}

/// A batch of task events, possibly of several tasks and sweeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsMsg {
    /// The events, in the order they happened for each task attempt.
    pub events: Vec<TaskEventMsg>,
}

/// One event of one task attempt.
///
/// The agent keeps each event in its ledger until acknowledged and replays unacknowledged ones
/// after a reconnect, so the coordinator may see an event twice: it applies an event only when
/// `seq` is one past the last it applied for that attempt, and ignores attempts it no longer
/// assigns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEventMsg {
    /// The sweep the task belongs to.
    pub sweep_id: SweepId,
    /// The task attempt the event belongs to.
    pub task: TaskRef,
    /// Position in that attempt's event stream, from 1 without gaps.
    pub seq: Seq,
    /// What happened.
    pub kind: EventKind,
}

impl TaskEventMsg {
    /// The reference that acknowledges this event.
    pub fn event_ref(&self) -> EventRef {
        EventRef {
            sweep_id: self.sweep_id.clone(),
            task: self.task,
            seq: self.seq,
        }
    }
}

/// What happened to a task attempt. In order: `Submitted` (batch-scheduler tasks only), `Started`,
/// any `Output`, `Exited`, then one `ResultOffer` (possibly with no files) once the outcome's files
/// are ready; an attempt that never started goes straight to `Exited`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// Handed to a batch scheduler (Slurm, PBS) as part of a job.
    Submitted {
        /// The scheduler's id of the element that runs this task (`123_4`, `56[7].server`).
        job_id: String,
        /// The job script, sent with the first task of each submitted job only.
        script: Option<JobScriptMsg>,
    },
    /// The process was spawned.
    Started {
        /// Its process id on the agent's host.
        pid: u32,
        /// Agent wall clock, milliseconds since the Unix epoch.
        at_ms: i64,
    },
    /// A chunk of the task's stdout or stderr, in order within its stream.
    Output {
        /// Which stream the bytes came from.
        stream: Stream,
        /// The bytes, not necessarily ending at a line or UTF-8 boundary.
        data: Bytes,
    },
    /// The attempt ended.
    Exited {
        /// How it ended.
        outcome: OutcomeMsg,
        /// Agent wall clock, milliseconds since the Unix epoch.
        at_ms: i64,
        /// What the attempt used, when the agent measured it (absent from older agents).
        #[serde(default)]
        usage: Option<UsageMsg>,
    },
    /// Result files the agent holds for this attempt; fetch them with `FetchResults`.
    ResultOffer {
        /// The files, with paths relative to the task's directory.
        files: Vec<FileOffer>,
    },
}

/// What one attempt used. Each field is `None` when it could not be measured (a batch
/// scheduler without accounting, a task that never started).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageMsg {
    /// Wall time from start to exit, milliseconds.
    #[serde(default)]
    pub wall_ms: Option<u64>,
    /// CPU time in user mode, milliseconds (the process and the children it waited for).
    #[serde(default)]
    pub cpu_user_ms: Option<u64>,
    /// CPU time in kernel mode, milliseconds.
    #[serde(default)]
    pub cpu_sys_ms: Option<u64>,
    /// Peak resident set size, KiB.
    #[serde(default)]
    pub max_rss_kb: Option<u64>,
    /// How the batch scheduler's accounting recorded the attempt's job, where it keeps one
    /// (Slurm's `State` and `ExitCode` from `sacct`; PBS's `Exit_status`).
    #[serde(default)]
    pub scheduler: Option<SchedulerRecordMsg>,
}

/// A batch scheduler's record of how a job ended: Slurm's `State` and `ExitCode`
/// (`FAILED 3:0`, `TIMEOUT 0:15`), PBS's `Exit_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedulerRecordMsg {
    pub state: SchedulerStateMsg,
    /// The job's exit code (Slurm's `ExitCode` before the colon; PBS's `Exit_status`).
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// The signal that ended it (Slurm's `ExitCode` after the colon).
    #[serde(default)]
    pub signal: Option<i32>,
}

/// A job's final state in the scheduler's words (Slurm's names; PBS's finished jobs are
/// `Completed` or `Failed` by their exit status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SchedulerStateMsg {
    Completed,
    Failed,
    Cancelled,
    Timeout,
    OutOfMemory,
    NodeFail,
    Preempted,
    BootFail,
    Deadline,
    /// A state with no name here.
    Other,
}

impl SchedulerStateMsg {
    /// Slurm's name of the state (`OUT_OF_MEMORY`).
    pub fn name(self) -> &'static str {
        match self {
            SchedulerStateMsg::Completed => "COMPLETED",
            SchedulerStateMsg::Failed => "FAILED",
            SchedulerStateMsg::Cancelled => "CANCELLED",
            SchedulerStateMsg::Timeout => "TIMEOUT",
            SchedulerStateMsg::OutOfMemory => "OUT_OF_MEMORY",
            SchedulerStateMsg::NodeFail => "NODE_FAIL",
            SchedulerStateMsg::Preempted => "PREEMPTED",
            SchedulerStateMsg::BootFail => "BOOT_FAIL",
            SchedulerStateMsg::Deadline => "DEADLINE",
            SchedulerStateMsg::Other => "OTHER",
        }
    }

    /// The state a Slurm state word names (`CANCELLED by 0` and `COMPLETED+` too).
    pub fn from_slurm(word: &str) -> SchedulerStateMsg {
        let word = word
            .split_whitespace()
            .next()
            .unwrap_or("")
            .trim_end_matches('+')
            .to_ascii_uppercase();
        [
            SchedulerStateMsg::Completed,
            SchedulerStateMsg::Failed,
            SchedulerStateMsg::Cancelled,
            SchedulerStateMsg::Timeout,
            SchedulerStateMsg::OutOfMemory,
            SchedulerStateMsg::NodeFail,
            SchedulerStateMsg::Preempted,
            SchedulerStateMsg::BootFail,
            SchedulerStateMsg::Deadline,
        ]
        .into_iter()
        .find(|s| s.name() == word)
        .unwrap_or(SchedulerStateMsg::Other)
    }
}

impl SchedulerRecordMsg {
    /// As Slurm prints it: `FAILED 3:0` (the exit code and signal when known).
    pub fn display(&self) -> String {
        match (self.exit_code, self.signal) {
            (None, None) => self.state.name().to_string(),
            (code, signal) => format!(
                "{} {}:{}",
                self.state.name(),
                code.unwrap_or(0),
                signal.unwrap_or(0)
            ),
        }
    }

    /// Reads back what [`Self::display`] wrote.
    pub fn parse(text: &str) -> Option<SchedulerRecordMsg> {
        let mut words = text.split_whitespace();
        let state = SchedulerStateMsg::from_slurm(words.next()?);
        let (exit_code, signal) = match words.next() {
            Some(codes) => {
                let (code, signal) = codes.split_once(':')?;
                (Some(code.parse().ok()?), Some(signal.parse().ok()?))
            }
            None => (None, None),
        };
        Some(SchedulerRecordMsg {
            state,
            exit_code,
            signal,
        })
    }
}

/// A job script the agent submitted, for the coordinator's `scripts/job_scripts/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobScriptMsg {
    /// A plain file name (no directory), unique per agent and sweep.
    pub name: String,
    /// The script as submitted.
    pub text: String,
}

/// Which output stream a chunk belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// How a task attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutcomeMsg {
    /// The process exited by itself with this status (0 is success).
    Exited {
        /// The exit status.
        code: i32,
    },
    /// The process was killed by a signal nobody on our side sent.
    Signaled {
        /// The signal number.
        signal: i32,
    },
    /// The process ran past its template's timeout and was killed.
    TimedOut,
    /// The process was stopped (or never started) because of a `Cancel`.
    Cancelled,
    /// The process could not be started.
    SpawnFailed {
        /// Why, as the operating system said it.
        message: String,
    },
    /// The agent lost track of the process (it restarted and the process was gone).
    Lost,
    /// The batch scheduler ended the job: out of memory, node failure, preemption, or a job
    /// that ended without its exit record.
    Failed {
        /// Why, in words.
        reason: String,
    },
}

/// A result file the agent can send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOffer {
    /// Path relative to the task's directory; see [`crate::check_relative_path`].
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content, lowercase hex; see [`crate::is_sha256_hex`].
    pub sha256: String,
}

/// The agent's health, sent periodically; the coordinator stops giving work to a source whose
/// heartbeats stop or whose disk runs low.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatMsg {
    /// One-minute load average.
    pub load1: f32,
    /// Memory available to new processes, in bytes.
    pub free_mem_bytes: u64,
    /// Free space on the agent's work directory's file system, in bytes.
    pub free_disk_bytes: u64,
    /// Tasks running now.
    pub running: u32,
    /// Tasks the agent runs at once.
    pub slots: u32,
    /// Free inodes (files that can still be created) on that file system; `None` where it does
    /// not count them (btrfs and some network file systems report no limit), or from an agent
    /// that predates this field.
    #[serde(default)]
    pub free_inodes: Option<u64>,
    /// What the agent has to tell its users now, in words (a batch scheduler refusing jobs for
    /// a limit on queued jobs, and what the agent does about it); `None`: nothing. The
    /// coordinator shows each one once.
    #[serde(default)]
    pub notice: Option<String>,
}

/// Reply to a [`PingMsg`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PongMsg {
    /// The ping's nonce.
    pub nonce: u64,
}

/// A problem the agent reports instead of acting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMsg {
    /// Human-readable, lowercase, no trailing period.
    pub message: String,
    /// The offered result file this error is about (it cannot be sent), so the coordinator stops
    /// waiting for it and ends the attempt failed. An agent that predates the field leaves it out.
    #[serde(default)]
    pub file: Option<FileRef>,
}

impl ErrorMsg {
    /// An error about no file in particular.
    pub fn new(message: impl Into<String>) -> Self {
        ErrorMsg {
            message: message.into(),
            file: None,
        }
    }
}

/// One offered result file of one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    pub sweep_id: SweepId,
    pub task: TaskRef,
    pub path: String,
}

// ---------------------------------------------------------------------------------------------
// Result-file streams
// ---------------------------------------------------------------------------------------------

/// First frame of a result-file stream (one stream per file, opened by the agent); exactly `size`
/// raw bytes follow, then the stream ends. The receiver writes to a temporary name and renames
/// only after the byte count and the SHA-256 match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHeader {
    /// The sweep the task belongs to.
    pub sweep_id: SweepId,
    /// The task attempt that produced the file.
    pub task: TaskRef,
    /// Path relative to the task's directory; see [`crate::check_relative_path`].
    pub path: String,
    /// Number of raw bytes after the header.
    pub size: u64,
    /// SHA-256 of those bytes, lowercase hex.
    pub sha256: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Exited` as agents before `usage` sent it.
    #[derive(Serialize)]
    enum OldEventKind {
        Exited { outcome: OutcomeMsg, at_ms: i64 },
    }

    #[test]
    fn an_exited_without_usage_still_decodes() {
        let old = OldEventKind::Exited {
            outcome: OutcomeMsg::Exited { code: 3 },
            at_ms: 7,
        };
        let bytes = rmp_serde::to_vec_named(&old).unwrap();
        let new: EventKind = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(
            new,
            EventKind::Exited {
                outcome: OutcomeMsg::Exited { code: 3 },
                at_ms: 7,
                usage: None,
            }
        );
    }
}
