//! The process backend: runs task argv vectors as local processes, each in its own process group,
//! enforces timeouts, cancels on request, terminates whole process groups, and reports
//! `Started`/`Exited` events. Shared by the coordinator's local source and the agent daemon.
//!
//! Design notes (the reasons behind the code below):
//!
//! * Spawning goes through std's `Command` (what `tokio::process::Command` wraps) with
//!   `process_group(0)` and plain file redirections only. std then takes its `posix_spawn` fast
//!   path (vfork-like, independent of our RSS). Anything that needs code in the child between fork
//!   and exec (`pre_exec`, uid/gid, ...) would force a real `fork` and cost ~3x spawn rate, so none
//!   of that is used. One more thing disables the fast path in std: setting `PATH` in the extra
//!   environment while `argv[0]` is a bare name (std must then search the child's PATH itself).
//! * One tokio task per process, no threads, no polling. Exits are noticed without reaping (a
//!   pidfd on Linux >= 5.3, O(1) per exit; SIGCHLD plus `waitid(WNOWAIT)` on older kernels) and
//!   the leader is then reaped with `wait4`, whose rusage says what the task used
//!   (`process/leader.rs`).
//! * Process-group ids can be reused once the group is empty and its leader has been reaped.
//!   Signalling `-pgid` is therefore only done while our leader is *not yet reaped*: an unreaped
//!   leader (alive or zombie) keeps its pid allocated, so the number cannot name anybody else's
//!   group. On timeout/cancel we watch for the leader's exit with `waitid(WNOWAIT)` (which does not
//!   reap), SIGKILL the group while the zombie still pins the pgid, and only then reap it.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::process::{CommandExt as _, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use hsm_protocol::UsageMsg;
use tokio::sync::{mpsc, oneshot};

/// The environment variable that marks a process task as an agent's (`<task dir>#<attempt>`), so
/// a restarted agent can end the ones it can no longer follow, and the coordinator's orphan
/// sweep leaves an agent's tasks on its own host alone.
pub const TASK_MARK: &str = "HSM_AGENT_TASK";
use tokio::time::Instant;

mod leader;
use leader::{sleep_until_opt, Leader, LeaderState};

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
    /// Files that receive the process's stdout and stderr (created or truncated). Relative paths are
    /// relative to the backend's working directory, not to `cwd`. The same path for both makes them
    /// share one file description, so the two streams interleave instead of overwriting each other.
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    /// Wall-clock limit; on expiry the process group gets SIGTERM, then SIGKILL after `kill_grace`.
    pub timeout: Option<Duration>,
    pub kill_grace: Duration,
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Exited by itself with this code (0 = success). `-1` means the exit status could not be
    /// collected (somebody else reaped the process); it is logged at error level.
    Exited(i32),
    /// Killed by a signal we did not send.
    Signaled(i32),
    /// Ran past its timeout and was terminated.
    TimedOut,
    /// Cancelled through `cancel` / `cancel_all`.
    Cancelled,
    /// Could not be started (program not found, bad cwd, ...).
    SpawnFailed(String),
    /// Ended by something outside the process (a batch scheduler: out of memory, node failure,
    /// preemption), with the reason in words.
    Failed(String),
}

impl Outcome {
    /// As the protocol reports it (the coordinator maps that to how the attempt counts, for
    /// local and agent tasks alike: `core::link::exit_of`).
    pub fn to_msg(&self) -> hsm_protocol::OutcomeMsg {
        use hsm_protocol::OutcomeMsg;
        match self {
            Outcome::Exited(code) => OutcomeMsg::Exited { code: *code },
            Outcome::Signaled(signal) => OutcomeMsg::Signaled { signal: *signal },
            Outcome::TimedOut => OutcomeMsg::TimedOut,
            Outcome::Cancelled => OutcomeMsg::Cancelled,
            Outcome::Failed(reason) => OutcomeMsg::Failed {
                reason: reason.clone(),
            },
            Outcome::SpawnFailed(message) => OutcomeMsg::SpawnFailed {
                message: message.clone(),
            },
        }
    }
}

/// What the backend reports, in order per task: `Started` (unless spawning failed) then `Exited`.
#[derive(Debug)]
pub enum ProcessEvent {
    /// About to be handed to a batch scheduler (scheduler backend only): these tasks, as the
    /// elements at these indices, go out next under job name `name`. The backend submits once
    /// `recorded` is answered or dropped, so the name is on disk before the job can exist.
    Submitting {
        elements: Vec<(TaskKey, Option<u32>)>,
        scheduler: crate::hpc::script::Scheduler,
        name: String,
        /// The elements run several tasks each (`hpc.tasks_per_job`).
        packed: bool,
        recorded: tokio::sync::oneshot::Sender<()>,
    },
    /// Handed to a batch scheduler (scheduler backend only): where it runs there and, for the
    /// first task of a job, the script's file name and text.
    Submitted {
        key: TaskKey,
        element: crate::scheduler::ElementRef,
        script: Option<(String, String)>,
    },
    Started {
        key: TaskKey,
        pid: u32,
        at: SystemTime,
    },
    Exited {
        key: TaskKey,
        outcome: Outcome,
        at: SystemTime,
        /// What the process used (wall time from spawn to exit, CPU, peak RSS), when measured:
        /// `None` for a task that never started or whose leader somebody else reaped.
        usage: Option<UsageMsg>,
    },
}

/// Runs tasks as local processes. Cheap to clone; all clones share the same set of running tasks
/// and the same event channel.
///
/// `launch` must be called from inside a tokio runtime with I/O enabled (current-thread, as in
/// actix-rt, or multi-thread); each process is watched by one task spawned on that runtime. If the
/// runtime shuts down while tasks run, their process groups are SIGKILLed (no outcome could be
/// reported for them anyway) and no `Exited` event is sent.
#[derive(Clone)]
pub struct ProcessBackend {
    inner: Arc<Inner>,
}

struct Inner {
    events: mpsc::UnboundedSender<ProcessEvent>,
    /// Tasks between `launch` and their `Exited` event. The sender is taken by the first `cancel`.
    tasks: Mutex<HashMap<TaskKey, Option<oneshot::Sender<()>>>>,
}

impl std::fmt::Debug for ProcessBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessBackend")
            .field("running", &self.running())
            .finish()
    }
}

impl ProcessBackend {
    pub fn new() -> (ProcessBackend, mpsc::UnboundedReceiver<ProcessEvent>) {
        let (events, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            events,
            tasks: Mutex::new(HashMap::new()),
        });
        (ProcessBackend { inner }, rx)
    }

    /// Spawns the process now and watches it on a tokio task. Emits `Started` then `Exited`; a
    /// spawn failure is reported as `Exited { SpawnFailed }` (without `Started`) before this
    /// returns. Launching a key that is still running is a caller bug: it is logged and ignored,
    /// so that every key still gets exactly one `Started`/`Exited` pair.
    pub fn launch(&self, launch: TaskLaunch) {
        let key = launch.key;
        // Checked before spawning: without a runtime the child could not be watched (and tokio
        // would panic while registering it).
        if tokio::runtime::Handle::try_current().is_err() {
            tracing::error!(
                ?key,
                "ProcessBackend::launch called outside a tokio runtime"
            );
            self.inner.send_exit(
                key,
                Outcome::SpawnFailed("process backend used outside a tokio runtime".into()),
                None,
            );
            return;
        }
        // Reserve the key before spawning (without holding the lock across the spawn), so a
        // concurrent duplicate launch cannot slip in and a `cancel` racing with the spawn is not
        // lost: the watcher finds the cancellation already pending.
        let (cancel_tx, cancel_rx) = oneshot::channel();
        {
            let mut tasks = self.inner.lock();
            if tasks.contains_key(&key) {
                drop(tasks);
                tracing::error!(?key, "launch of a task that is already running; ignored");
                return;
            }
            tasks.insert(key, Some(cancel_tx));
        }
        let started = std::time::Instant::now();
        let child = match spawn(&launch) {
            Ok(child) => child,
            Err(message) => {
                tracing::warn!(?key, %message, "task could not be started");
                self.inner.lock().remove(&key);
                self.inner
                    .send_exit(key, Outcome::SpawnFailed(message), None);
                return;
            }
        };
        // std's `Child` does nothing when dropped (no wait, no kill): from here on the pid is
        // the leader's to watch and reap.
        let pid = child.id();
        drop(child);
        tracing::debug!(?key, pid, "task started");
        // Started is sent before the watcher exists, so it always precedes Exited.
        let _ = self.inner.events.send(ProcessEvent::Started {
            key,
            pid,
            at: SystemTime::now(),
        });
        // Watched from here (a pidfd or a SIGCHLD subscription), before the watcher task runs.
        let leader = Leader::new(libc::pid_t::try_from(pid).unwrap_or(0), started);
        tokio::spawn(watch(
            Arc::clone(&self.inner),
            key,
            leader,
            launch.timeout,
            launch.kill_grace,
            cancel_rx,
        ));
    }

    /// Terminates the task (SIGTERM to its process group, SIGKILL after its `kill_grace`); its
    /// outcome will be `Cancelled`. Returns false if the task is not running. Calling it again
    /// while the task is being terminated returns true and changes nothing.
    pub fn cancel(&self, key: TaskKey) -> bool {
        let mut tasks = self.inner.lock();
        match tasks.get_mut(&key) {
            Some(slot) => {
                if let Some(tx) = slot.take() {
                    let _ = tx.send(());
                }
                true
            }
            None => false,
        }
    }

    /// `cancel` for every running task.
    pub fn cancel_all(&self) {
        let mut tasks = self.inner.lock();
        for slot in tasks.values_mut() {
            if let Some(tx) = slot.take() {
                let _ = tx.send(());
            }
        }
    }

    /// Tasks launched whose `Exited` event has not been sent yet.
    pub fn running(&self) -> usize {
        self.inner.lock().len()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HashMap<TaskKey, Option<oneshot::Sender<()>>>> {
        // The map stays consistent even if a holder panicked (every critical section is a single
        // map operation), so a poisoned lock is safe to keep using.
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send_exit(&self, key: TaskKey, outcome: Outcome, usage: Option<UsageMsg>) {
        // A dropped receiver means nobody listens any more; there is nothing useful to do then.
        let _ = self.events.send(ProcessEvent::Exited {
            key,
            outcome,
            at: SystemTime::now(),
            usage,
        });
    }

    /// Forgets the task, then reports it: whoever sees `Exited` also sees `running()` without it
    /// and may relaunch the key.
    fn finish(&self, key: TaskKey, outcome: Outcome, usage: Option<UsageMsg>) {
        tracing::debug!(?key, ?outcome, ?usage, "task ended");
        self.lock().remove(&key);
        self.send_exit(key, outcome, usage);
    }
}

/// Like `File::create`, but leaves an existing empty file alone: O_TRUNC costs a journalled
/// metadata update on ext4 even for a file that is already empty, and the coordinator creates the
/// log files ahead of time.
fn create_empty(path: &std::path::Path) -> std::io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    if file.metadata()?.len() > 0 {
        file.set_len(0)?;
    }
    Ok(file)
}

fn spawn(launch: &TaskLaunch) -> Result<std::process::Child, String> {
    let Some((program, args)) = launch.argv.split_first() else {
        return Err("empty argv".into());
    };
    let stdout = create_empty(&launch.stdout)
        .map_err(|e| format!("cannot create stdout file {}: {e}", launch.stdout.display()))?;
    let stderr = if launch.stderr == launch.stdout {
        stdout.try_clone()
    } else {
        create_empty(&launch.stderr)
    }
    .map_err(|e| format!("cannot create stderr file {}: {e}", launch.stderr.display()))?;

    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&launch.cwd)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        // Own process group: terminal Ctrl-C does not reach the task, and we can signal all of
        // its descendants at once. The group id equals the child's pid.
        .process_group(0);
    // `cmd` (holding our copies of the output files) is dropped on return, closing them here.
    cmd.spawn()
        .map_err(|e| describe_spawn_error(program, &launch.cwd, &e))
}

/// posix_spawn reports a missing program and a missing working directory with the same errno, so
/// the message says which one it was (the check only runs on the failure path).
fn describe_spawn_error(program: &str, cwd: &Path, err: &io::Error) -> String {
    if cwd.is_dir() {
        format!("cannot start {program:?} in {}: {err}", cwd.display())
    } else {
        format!(
            "cannot start {program:?}: working directory {} is not an accessible directory ({err})",
            cwd.display()
        )
    }
}

fn exit_outcome(status: io::Result<ExitStatus>) -> Outcome {
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => Outcome::Exited(code),
            (None, Some(sig)) => Outcome::Signaled(sig),
            (None, None) => {
                tracing::error!(?status, "task ended with an unrecognised status");
                Outcome::Exited(-1)
            }
        },
        Err(err) => {
            tracing::error!(%err, "could not collect the task's exit status");
            Outcome::Exited(-1)
        }
    }
}

/// The one tokio task per process: waits for exit, timeout or cancellation and reports.
async fn watch(
    inner: Arc<Inner>,
    key: TaskKey,
    mut leader: Leader,
    timeout: Option<Duration>,
    grace: Duration,
    cancel: oneshot::Receiver<()>,
) {
    enum Ending {
        Exited(LeaderState),
        Terminate(Outcome),
    }
    let expired = sleep_until_opt(timeout.and_then(|t| Instant::now().checked_add(t)));
    let cancelled = async move {
        // The sender is only ever dropped unsent together with the task's entry, i.e. never
        // while we run; treat that as "no cancellation" rather than cancelling.
        if cancel.await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let ending = tokio::select! {
        state = leader.exited() => Ending::Exited(state),
        () = cancelled => Ending::Terminate(Outcome::Cancelled),
        () = expired => Ending::Terminate(Outcome::TimedOut),
    };
    let (outcome, usage) = match ending {
        Ending::Exited(LeaderState::Unknown(err)) => {
            leader.may_signal = false;
            (exit_outcome(Err(err)), None)
        }
        Ending::Exited(_) => {
            let (status, usage) = leader.reap();
            (exit_outcome(status), usage)
        }
        Ending::Terminate(outcome) => {
            tracing::debug!(?key, ?outcome, pgid = leader.pgid, "terminating task");
            let usage = leader.terminate(grace).await;
            (outcome, usage)
        }
    };
    drop(leader);
    inner.finish(key, outcome, usage);
}

/// Kills (SIGKILL) the process group of every process of this user whose environment
/// (`/proc/PID/environ`, split into `KEY=VALUE` entries) satisfies `matches`, and waits (about
/// 5 s at most) until they are gone, so a re-run never overlaps its predecessor. Used to end
/// tasks whose owner died: hsm marks every task's environment, and a marked process is one hsm
/// started, whatever its pid is now. Never signals group 0/1 or the caller's own group.
/// Returns the number of groups killed.
pub fn kill_groups_where(matches: impl Fn(&[&[u8]]) -> bool) -> usize {
    let mut groups = std::collections::BTreeSet::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let me = std::process::id();
    // SAFETY: getpgrp has no preconditions.
    let own = unsafe { libc::getpgrp() } as u32;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        // Another user's processes are unreadable here, and a zombie's environ is empty.
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = environ.split(|&b| b == 0).collect();
        if !matches(&vars) {
            continue;
        }
        if let Some(pgid) = process_group(pid) {
            if pgid > 1 && pgid != own {
                groups.insert(pgid);
            }
        }
    }
    for &pgid in &groups {
        // SAFETY: plain syscall on a group holding a verified task process.
        unsafe {
            libc::kill(-(pgid as libc::pid_t), libc::SIGKILL);
        }
    }
    for _ in 0..250 {
        if groups.iter().all(|&pgid| !group_alive(pgid)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    groups.len()
}

/// Field 5 of /proc/PID/stat (after the parenthesised command name, which may contain spaces).
fn process_group(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(2)?.parse().ok()
}

fn group_alive(pgid: u32) -> bool {
    // kill(-pgid, 0) succeeds while any member exists; zombies count until reaped, so "only the
    // zombie leader left" counts as gone.
    // SAFETY: signal 0 only checks for existence.
    let exists = unsafe { libc::kill(-(pgid as libc::pid_t), 0) } == 0;
    if !exists {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pgid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}
