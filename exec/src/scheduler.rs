//! The batch-scheduler backend (Slurm, PBS Pro, Torque): turns launches into job arrays, follows
//! every job of the agent with one `squeue`/`qstat` call per poll, cancels with one
//! `scancel`/`qdel`, and reports `Started`/`Exited` exactly as the process backend does.
//!
//! Why it is shaped like this:
//!
//! * Launches arrive one by one from the runner; they are collected for a moment and submitted
//!   together, one array per group of tasks sharing resources, chunked to the cluster's
//!   `MaxArraySize`. Never one `sbatch` per task unless the resources say `array: false`.
//! * Each array element runs the wrapper of `hpc::wrapper`, which records start, host, exit code
//!   and end in the task directory. That exit record is the final truth; the scheduler's view
//!   (timeout, node failure, cancelled while pending) fills in when there is none.
//! * A failing scheduler command (a busy `slurmctld`) is logged and tried again at the next poll;
//!   it never marks a task failed. Only a submission refused repeatedly fails its tasks.
//! * The decisions are plain functions (`hpc::decide`, re-exported here) with unit tests; this
//!   file's async part only runs commands and moves their text through `hpc::parse`.
//!
//! Here: the backend's state, launch/cancel/adopt entry points and the driver loop; `submit.rs`
//! (arrays and single jobs), `poll.rs` (following jobs, accounting, cancels), `restart.rs`
//! (taking up elements after an agent restart), `usage.rs` (what an element used).

use crate::hpc::caps;
use crate::hpc::choose;
use crate::hpc::pack::{self, Pack};
use crate::hpc::parse::{self, JobState};
use crate::hpc::script::{self, ArrayJobSpec, Scheduler, SingleJobSpec};
use crate::hpc::sge;
use crate::hpc::usage::start_stamp_ms;
use crate::hpc::wrapper::{self, ExitRecord};
use crate::process::{Outcome, ProcessEvent, TaskKey, TaskLaunch};
use hsm_protocol::{HpcMsg, HpcResources, SchedulerChoice};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, Notify};

mod poll;
mod restart;
mod submit;
mod usage;

use poll::read_exit_record;
pub use restart::{submissions_in_flight, submitting};
use submit::failure_text;

use crate::hpc::decide::RECORD_GRACE_POLLS;
pub use crate::hpc::decide::{
    decide, decide_packed, element_id, qstat_account, qstat_element, rerun_after_preemption,
    sacct_account, scontrol_account, slurm_requeued, slurm_row, slurm_seen, wants_account, Account,
    Decision, Seen, MAX_SLURM_RESTARTS,
};

/// Longest a decided element counts as still queued (`State::lingering`).
const LINGER_AT_MOST: Duration = Duration::from_secs(60);
/// How long launches are collected before they are submitted together.
const GATHER: Duration = Duration::from_millis(200);
/// Longest a scheduler command may take before it counts as failed (and is retried later).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Submission attempts before the tasks of a refused submission are reported failed.
const SUBMIT_TRIES: u32 = 4;
/// Longest wait between polls while scheduler commands keep failing.
const MAX_POLL_BACKOFF: Duration = Duration::from_secs(60);
/// Polls in a row with a failing scheduler command before the user is told.
const POLL_FAILURES_SAID: u32 = 3;
/// Array size when the cluster does not say (PBS) and the resources do not either.
const DEFAULT_MAX_ARRAY: u32 = 1000;
/// After a submission refused for a limit on queued jobs, no submission for this long (doubled
/// at each refusal in a row, up to `LIMIT_WAIT_MAX`): room frees as jobs end, and a controller
/// refusing is not asked again at once.
const LIMIT_WAIT_FIRST: Duration = Duration::from_secs(5);
const LIMIT_WAIT_MAX: Duration = Duration::from_secs(300);
/// Refusals for a limit in a row, with none of our jobs queued, before the tasks fail.
const LIMIT_GIVE_UP: u32 = 5;
/// Polls past the usual grace a started Grid Engine task that left no exit record waits for its
/// `qacct` record (the accounting file is written late).
const SGE_ACCOUNT_POLLS: u32 = 20;

/// One task for the scheduler.
#[derive(Debug, Clone)]
pub struct HpcLaunch {
    pub launch: TaskLaunch,
    pub hpc: HpcMsg,
    /// The task's directory (argv0, env0, cwd, logs and records go there).
    pub task_dir: PathBuf,
    /// Where the job scripts of this sweep are kept (`<sweep>/scripts/job_scripts`).
    pub scripts_dir: PathBuf,
}

/// Where a task runs in the scheduler: enough to follow it again after an agent restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementRef {
    pub scheduler: Scheduler,
    /// The array's job id (or the job's, for a task submitted alone).
    pub job: String,
    /// Index within the array.
    pub index: Option<u32>,
    /// The element runs several tasks, this one among them (`hpc.tasks_per_job`).
    pub packed: bool,
}

impl ElementRef {
    /// The id `scancel`/`qdel` and the user know the element by (`123_4`, `56[7].server`).
    pub fn id(&self) -> String {
        element_id(self.scheduler, &self.job, self.index)
    }

    pub fn to_stored(&self) -> StoredElement {
        StoredElement {
            scheduler: scheduler_name(self.scheduler).into(),
            job: self.job.clone(),
            index: self.index,
            name: None,
            packed: self.packed,
        }
    }

    /// The element a stored one names; `None` for a submission under way (no job id yet) or an
    /// unknown scheduler.
    pub fn from_stored(stored: &StoredElement) -> Option<ElementRef> {
        if stored.job.is_empty() {
            return None;
        }
        Some(ElementRef {
            scheduler: scheduler_named(&stored.scheduler)?,
            job: stored.job.clone(),
            index: stored.index,
            packed: stored.packed,
        })
    }
}

fn scheduler_name(scheduler: Scheduler) -> &'static str {
    match scheduler {
        Scheduler::Slurm => "slurm",
        Scheduler::PbsPro => "pbspro",
        Scheduler::Torque => "torque",
        Scheduler::Sge => "sge",
    }
}

fn scheduler_named(name: &str) -> Option<Scheduler> {
    match name {
        "slurm" => Some(Scheduler::Slurm),
        "pbspro" => Some(Scheduler::PbsPro),
        "torque" => Some(Scheduler::Torque),
        "sge" => Some(Scheduler::Sge),
        _ => None,
    }
}

/// A task whose submission was under way when the agent stopped: the job name it went out under
/// and its place in that job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingElement {
    pub scheduler: Scheduler,
    pub name: String,
    pub index: Option<u32>,
    pub packed: bool,
}

impl PendingElement {
    /// As stored before `sbatch`/`qsub` runs (no job id yet).
    pub fn to_stored(&self) -> StoredElement {
        StoredElement {
            scheduler: scheduler_name(self.scheduler).into(),
            job: String::new(),
            index: self.index,
            name: Some(self.name.clone()),
            packed: self.packed,
        }
    }

    /// The pending submission a stored element names, if it is one.
    pub fn from_stored(stored: &StoredElement) -> Option<PendingElement> {
        if !stored.job.is_empty() {
            return None;
        }
        Some(PendingElement {
            scheduler: scheduler_named(&stored.scheduler)?,
            name: stored.name.clone()?,
            index: stored.index,
            packed: stored.packed,
        })
    }
}

/// What a scheduler command did.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

#[derive(Clone)]
pub struct SchedulerBackend {
    inner: Arc<Inner>,
}

struct Inner {
    events: mpsc::UnboundedSender<ProcessEvent>,
    state: Mutex<State>,
    wake: Notify,
    poll_every: Duration,
}

#[derive(Default)]
struct State {
    pending: Vec<HpcLaunch>,
    cancels: Vec<TaskKey>,
    elements: HashMap<TaskKey, Element>,
    /// Cancels for tasks whose job is not known yet (being submitted, or being looked up after a
    /// restart): applied when it is.
    early_cancels: std::collections::HashSet<TaskKey>,
    /// Detected scheduler per choice, once known.
    detected: HashMap<ChoiceKey, Scheduler>,
    /// What `scontrol show config` said, once asked: MaxArraySize and whether sacct has data.
    slurm_config: Option<(Option<u32>, bool, Option<String>)>,
    /// What `sacctmgr` says of the user's limit on queued jobs, once asked (Slurm with
    /// accounting only): `Some(None)` when it sets none or cannot be read.
    sacctmgr_cap: Option<Option<u32>>,
    /// What refused submissions taught (`limited`): at most this many of our jobs queued or
    /// running, no submission before `hold_until`, the wait after the next refusal, and the
    /// limits already named in the log.
    learned_cap: Option<usize>,
    /// Slurm elements decided (their exit record read) while Slurm still listed them active:
    /// their jobs still count against a limit on queued jobs until Slurm lets go of them.
    /// Dropped once `squeue` shows them final or gone, or at the deadline.
    lingering: Vec<(String, Option<u32>, tokio::time::Instant)>,
    hold_until: Option<tokio::time::Instant>,
    limit_wait: Option<Duration>,
    refused_with_none_held: u32,
    limits_said: std::collections::HashSet<String>,
    /// What its users should know now (see `notice()`): a refusal for a limit, cleared once
    /// nothing waits for room; a poll command that keeps failing, cleared once polls work
    /// again. Each path sets and clears only its own.
    limit_notice: Option<String>,
    poll_notice: Option<String>,
    /// Polls in a row whose scheduler command failed, and that worked.
    failed_polls: u32,
    good_polls: u32,
    /// Tasks going out again after Slurm preempted their element: restarts so far, and whether
    /// `Started` was reported for them.
    reruns: HashMap<TaskKey, (u32, bool)>,
    next_chunk: u64,
    driver_started: bool,
}

impl State {
    /// Our jobs the scheduler holds (queued or running): array elements, each counted once
    /// however many tasks it runs, and those just decided that it still lists.
    fn held_jobs(&self) -> usize {
        let mut jobs: std::collections::HashSet<(&str, Option<u32>)> = self
            .elements
            .values()
            .map(|e| (e.job.as_str(), e.index))
            .collect();
        jobs.extend(
            self.lingering
                .iter()
                .map(|(job, index, _)| (job.as_str(), *index)),
        );
        jobs.len()
    }

    /// Follows `element` from now on, with a cancel that arrived before it was known.
    fn insert_element(&mut self, key: TaskKey, mut element: Element) {
        if self.early_cancels.remove(&key) {
            element.cancel_requested = true;
        }
        if element.cancel_requested {
            self.cancels.push(key);
        }
        self.elements.insert(key, element);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ChoiceKey {
    Auto,
    Slurm,
    Pbs,
    Sge,
}

impl From<SchedulerChoice> for ChoiceKey {
    fn from(choice: SchedulerChoice) -> Self {
        match choice {
            SchedulerChoice::Auto => ChoiceKey::Auto,
            SchedulerChoice::Slurm => ChoiceKey::Slurm,
            SchedulerChoice::Pbs => ChoiceKey::Pbs,
            SchedulerChoice::Sge => ChoiceKey::Sge,
        }
    }
}

/// A submitted task: where it is in the scheduler and what is known of it.
#[derive(Debug, Clone)]
struct Element {
    scheduler: Scheduler,
    /// The array's job id (or the job's, for a task submitted alone).
    job: String,
    /// Index within the array; `None` for a task submitted alone.
    index: Option<u32>,
    /// The element runs other tasks too (`hpc.tasks_per_job`): see `hpc::pack`.
    packed: bool,
    task_dir: PathBuf,
    started: bool,
    cancel_requested: bool,
    /// Polls since the scheduler last listed it, or since it ended without an exit record.
    unaccounted_polls: u32,
    /// Times Slurm put it back in its queue after it had started (or preempted it, and hsm
    /// submitted it again), and whether it waits there now to run again.
    restarts: u32,
    requeued: bool,
    /// `Started` went to the runner already (by an element before this one, which Slurm
    /// preempted): not again.
    start_reported: bool,
    /// What was submitted, to submit it again after a preemption; `None` for an element taken
    /// up after an agent restart.
    launch: Option<Arc<HpcLaunch>>,
}

impl SchedulerBackend {
    pub fn new(poll_every: Duration) -> (SchedulerBackend, mpsc::UnboundedReceiver<ProcessEvent>) {
        let (events, rx) = mpsc::unbounded_channel();
        (
            SchedulerBackend {
                inner: Arc::new(Inner {
                    events,
                    state: Mutex::new(State::default()),
                    wake: Notify::new(),
                    poll_every,
                }),
            },
            rx,
        )
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a task for submission (within a moment, with the others launched meanwhile).
    pub fn launch(&self, launch: HpcLaunch) {
        self.lock().pending.push(launch);
        self.ensure_driver();
    }

    fn ensure_driver(&self) {
        let start_driver = !std::mem::replace(&mut self.lock().driver_started, true);
        if start_driver {
            tokio::spawn(self.clone().drive());
        }
        self.inner.wake.notify_one();
    }

    /// Asks for a task to be stopped (`scancel`/`qdel` at the next round; a task not yet
    /// submitted is dropped at once). True when the task is known here.
    pub fn cancel(&self, key: TaskKey) -> bool {
        let dropped = {
            let mut state = self.lock();
            if let Some(at) = state.pending.iter().position(|l| l.launch.key == key) {
                state.pending.remove(at);
                true
            } else if let Some(element) = state.elements.get_mut(&key) {
                element.cancel_requested = true;
                state.cancels.push(key);
                self.inner.wake.notify_one();
                return true;
            } else {
                // Its job may be on its way (sbatch running, or a restart looking it up): the
                // cancel is applied once it is known.
                state.early_cancels.insert(key);
                false
            }
        };
        if dropped {
            self.exited(key, Outcome::Cancelled);
        }
        dropped
    }

    /// What its users should know now, if anything: sent with the agent's heartbeats, shown
    /// once by the coordinator. A poll command failing comes first (nothing moves until it is
    /// fixed), then a limit the tasks wait under.
    pub fn notice(&self) -> Option<String> {
        let state = self.lock();
        state
            .poll_notice
            .clone()
            .or_else(|| state.limit_notice.clone())
    }

    /// Tasks submitted or waiting to be, not yet reported ended.
    pub fn active(&self) -> usize {
        let state = self.lock();
        state.pending.len() + state.elements.len()
    }

    /// A task that never ran (refused, cancelled while waiting) ended now.
    fn exited(&self, key: TaskKey, outcome: Outcome) {
        self.exited_with(key, outcome, None, None);
    }

    /// A task ended: at `ended_ms`, the time the exit record it was decided from says, when
    /// there is one (a poll notices an end seconds after it), else now.
    fn exited_with(
        &self,
        key: TaskKey,
        outcome: Outcome,
        usage: Option<hsm_protocol::UsageMsg>,
        ended_ms: Option<u64>,
    ) {
        {
            let mut state = self.lock();
            state.early_cancels.remove(&key);
            state.reruns.remove(&key);
        }
        let at = stamped(ended_ms);
        let _ = self.inner.events.send(ProcessEvent::Exited {
            key,
            outcome,
            at,
            usage,
        });
    }

    /// A task started: when the wrapper's start record in `task_dir` says, else now (the
    /// scheduler shows it running before the record can be read).
    fn started(&self, key: TaskKey, task_dir: &Path) {
        let _ = self.inner.events.send(ProcessEvent::Started {
            key,
            pid: 0,
            at: stamped(
                std::fs::read_to_string(task_dir.join(wrapper::START_FILE))
                    .ok()
                    .and_then(|text| start_stamp_ms(&text)),
            ),
        });
    }

    async fn drive(self) {
        // Doubled after a poll whose scheduler command failed (a busy or restarting
        // controller should not be hammered), back to `poll_every` after one that worked.
        let mut delay = self.inner.poll_every;
        // Polls keep to `delay` apart; a wake (launches, cancels, room a poll made) submits
        // and cancels at once without polling sooner.
        let mut next_poll = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                () = self.inner.wake.notified() => {}
                () = tokio::time::sleep_until(next_poll) => {}
            }
            if !self.lock().pending.is_empty() {
                // Launches come in bursts: gather the rest of this one.
                tokio::time::sleep(GATHER).await;
                let pending = std::mem::take(&mut self.lock().pending);
                self.submit(pending).await;
            }
            let cancels = std::mem::take(&mut self.lock().cancels);
            if !cancels.is_empty() {
                self.send_cancels(&cancels).await;
            }
            if tokio::time::Instant::now() >= next_poll {
                let follow = {
                    let state = self.lock();
                    // Lingering elements too: the poll is what lets them go.
                    !state.elements.is_empty() || !state.lingering.is_empty()
                };
                if follow {
                    let held_before = self.lock().held_jobs();
                    delay = if self.poll().await {
                        self.inner.poll_every
                    } else {
                        (delay * 2).min(MAX_POLL_BACKOFF.max(self.inner.poll_every))
                    };
                    // Under a cap, tasks wait for room: room this poll made is used now, not
                    // a poll interval later.
                    let freed = {
                        let state = self.lock();
                        !state.pending.is_empty() && state.held_jobs() < held_before
                    };
                    if freed {
                        self.inner.wake.notify_one();
                    }
                }
                next_poll = tokio::time::Instant::now() + delay;
            }
            if Arc::strong_count(&self.inner) == 1 {
                return; // every handle is gone
            }
        }
    }

    async fn scheduler_for(&self, choice: SchedulerChoice) -> Result<Scheduler, String> {
        let key = ChoiceKey::from(choice);
        if let Some(s) = self.lock().detected.get(&key) {
            return Ok(*s);
        }
        let sbatch = run("sbatch", &["--version"], None).await;
        let qstat = run("qstat", &["--version"], None).await;
        let probe = choose::Probe {
            sbatch: match &sbatch {
                Ok(out) if out.ok => Ok(out.stdout.clone()),
                _ => Err(failure_text(&sbatch)),
            },
            qstat: qstat.map(|out| format!("{}{}", out.stdout, out.stderr)),
        };
        let scheduler = choose::choose(choice, &probe)?;
        self.lock().detected.insert(key, scheduler);
        Ok(scheduler)
    }

    /// `MaxArraySize`, whether the cluster keeps accounting and its `ClusterName`, read once
    /// from `scontrol show config` (unknown and false when it cannot be read).
    async fn slurm_config(&self) -> (Option<u32>, bool, Option<String>) {
        let cached = self.lock().slurm_config.clone();
        if let Some(known) = cached {
            return known;
        }
        let known = match run("scontrol", &["show", "config"], None).await {
            Ok(out) if out.ok => {
                let config = parse::parse_scontrol_config(&out.stdout);
                let accounting = config.has_accounting();
                (config.max_array_size, accounting, config.cluster_name)
            }
            _ => (None, false, None),
        };
        self.lock().slurm_config = Some(known.clone());
        known
    }

    /// The user's limit on queued jobs as `sacctmgr` shows it (`parse::sacctmgr_submit_cap`),
    /// read once, on a Slurm cluster that keeps accounting: the jobs' QOS and account are the
    /// first submission's (`hpc.qos`, `hpc.account`, else the association's defaults). `None`
    /// where nothing limits them, or where `sacctmgr` cannot tell (a refusal then teaches the
    /// cap).
    async fn sacctmgr_cap(&self, job_qos: Option<&str>, job_account: Option<&str>) -> Option<u32> {
        if let Some(known) = self.lock().sacctmgr_cap {
            return known;
        }
        let mut known = self.read_sacctmgr_cap(job_qos, job_account).await;
        if known == Some(0) {
            // No room at all: left to sbatch, whose refusals then end the tasks, saying why.
            tracing::warn!("sacctmgr says this user may have no job queued (MaxSubmit 0)");
            known = None;
        }
        self.lock().sacctmgr_cap = Some(known);
        if let Some(cap) = known {
            tracing::info!(
                cap,
                "the cluster lets this user have {cap} jobs queued or running (sacctmgr): at most that many are submitted"
            );
        }
        known
    }

    async fn read_sacctmgr_cap(
        &self,
        job_qos: Option<&str>,
        job_account: Option<&str>,
    ) -> Option<u32> {
        let (_, accounting, cluster) = self.slurm_config().await;
        let cluster = cluster.filter(|_| accounting)?;
        let text = |out: Result<CommandOutput, String>| match out {
            Ok(out) if out.ok => Some(out.stdout),
            _ => None,
        };
        let user = text(run("id", &["-un"], None).await)?.trim().to_string();
        // The jobs' account: `hpc.account`, else the user's default one.
        let account = match job_account {
            Some(account) => Some(account.to_string()),
            None => text(
                run(
                    "sacctmgr",
                    &["-n", "-P", "show", "user", &user, "format=DefaultAccount"],
                    None,
                )
                .await,
            )
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty()),
        };
        let assoc = text(
            run(
                "sacctmgr",
                &[
                    "-n",
                    "-P",
                    "show",
                    "assoc",
                    &format!("user={user}"),
                    &format!("format={}", parse::SACCTMGR_ASSOC_FORMAT),
                ],
                None,
            )
            .await,
        )?;
        let qos = text(
            run(
                "sacctmgr",
                &[
                    "-n",
                    "-P",
                    "show",
                    "qos",
                    &format!("format={}", parse::SACCTMGR_QOS_FORMAT),
                ],
                None,
            )
            .await,
        )?;
        parse::sacctmgr_submit_cap(&assoc, &qos, &cluster, account.as_deref(), job_qos)
    }

    async fn max_array(&self, scheduler: Scheduler, resources: &HpcResources) -> u32 {
        let cluster = if scheduler == Scheduler::Slurm {
            self.slurm_config().await.0
        } else {
            None
        };
        // MaxArraySize N allows indices 0..N-1: N elements per array.
        match (cluster, resources.max_array_size) {
            (Some(c), Some(r)) => c.min(r),
            (Some(c), None) => c,
            (None, Some(r)) => r,
            (None, None) => DEFAULT_MAX_ARRAY,
        }
        .max(1)
    }

    /// Forgets a task the runner ended itself (a cancel kept for it is dropped).
    pub fn forget(&self, key: TaskKey) {
        self.lock().early_cancels.remove(&key);
    }
}

/// The first line of a command's output, for a message.
fn first_line(text: Option<&str>) -> String {
    text.and_then(|t| t.lines().map(str::trim).find(|l| !l.is_empty()))
        .unwrap_or("no output")
        .to_string()
}

/// Runs a scheduler command (no shell) with a time limit.
async fn run(program: &str, args: &[&str], dir: Option<&Path>) -> Result<CommandOutput, String> {
    run_within(program, args, dir, COMMAND_TIMEOUT).await
}

/// `run` with its own time limit.
async fn run_within(
    program: &str,
    args: &[&str],
    dir: Option<&Path>,
    limit: Duration,
) -> Result<CommandOutput, String> {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let output = tokio::time::timeout(limit, command.output())
        .await
        .map_err(|_| format!("`{program}` took longer than {limit:?}"))?
        .map_err(|e| format!("cannot run `{program}`: {e}"))?;
    Ok(CommandOutput {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// A batch-scheduler element running a task, enough to follow it again after a restart.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredElement {
    /// `slurm`, `pbspro` or `torque`.
    pub scheduler: String,
    /// The array's (or the single job's) id; empty while the submission is under way (the
    /// job is then found by `name`).
    pub job: String,
    /// Index within the array.
    pub index: Option<u32>,
    /// The job name the submission went out under (unique per submission). Absent in ledgers
    /// written before it was kept.
    #[serde(default)]
    pub name: Option<String>,
    /// The element runs several tasks (`hpc.tasks_per_job`). Absent in older ledgers: false.
    #[serde(default)]
    pub packed: bool,
}

/// The time a wrapper record's stamp (`ms` since the epoch) says, never later than now (a
/// compute node's clock may run ahead of this host's); now without one.
fn stamped(ms: Option<u64>) -> SystemTime {
    let now = SystemTime::now();
    ms.and_then(|ms| SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(ms)))
        .map_or(now, |at| at.min(now))
}

#[cfg(test)]
mod tests {
    use super::submit::chunk_job_name;
    use super::*;

    #[test]
    fn a_submission_under_way_is_stored_by_name_and_told_apart_from_a_submitted_element() {
        let pending = PendingElement {
            scheduler: Scheduler::Torque,
            name: "hsm_s_1_0001".into(),
            index: Some(3),
            packed: true,
        };
        let stored = pending.to_stored();
        assert_eq!(stored.job, "", "no job id yet");
        assert_eq!(PendingElement::from_stored(&stored), Some(pending));
        assert_eq!(
            ElementRef::from_stored(&stored),
            None,
            "nothing to follow yet"
        );
        let element = ElementRef {
            scheduler: Scheduler::Slurm,
            job: "40".into(),
            index: Some(3),
            packed: false,
        };
        let stored = element.to_stored();
        assert_eq!(ElementRef::from_stored(&stored), Some(element));
        assert_eq!(PendingElement::from_stored(&stored), None);
        // A ledger written before names were kept: a pending element without one is unusable.
        let old = StoredElement {
            scheduler: "slurm".into(),
            job: String::new(),
            index: None,
            name: None,
            packed: false,
        };
        assert_eq!(PendingElement::from_stored(&old), None);
    }

    #[test]
    fn a_scheduler_command_failing_poll_after_poll_is_told_once_and_untold_when_it_works() {
        let (backend, _events) = SchedulerBackend::new(Duration::from_secs(1));
        let broken = "`qstat` fails: Can't locate Slurmdb.pm in @INC";
        for _ in 1..POLL_FAILURES_SAID {
            backend.polled(Some(broken.into()));
            assert_eq!(
                backend.notice(),
                None,
                "a failure or two is a busy controller"
            );
        }
        backend.polled(Some(broken.into()));
        let notice = backend.notice().expect("told after three in a row");
        assert!(
            notice.starts_with(broken) && notice.contains("3 polls in a row"),
            "{notice}"
        );
        backend.polled(Some("`qstat` fails: something else".into()));
        assert_eq!(
            backend.notice(),
            Some(notice.clone()),
            "said once, not per poll"
        );
        // One poll that works between failures is a flaky controller still: kept.
        backend.polled(None);
        backend.polled(Some(broken.into()));
        backend.polled(None);
        assert_eq!(backend.notice(), Some(notice.clone()));
        for _ in 1..POLL_FAILURES_SAID {
            backend.polled(None);
        }
        assert_eq!(backend.notice(), None, "works again");
        // A run of failures broken by a poll that worked starts counting again.
        backend.polled(Some(broken.into()));
        backend.polled(None);
        backend.polled(Some(broken.into()));
        backend.polled(Some(broken.into()));
        assert_eq!(backend.notice(), None);
        // A limit's notice is not the poll's to clear, and one submission that goes in does
        // not clear the poll's.
        backend.lock().limit_notice = Some("limit".into());
        for _ in 0..POLL_FAILURES_SAID {
            backend.polled(Some(broken.into()));
        }
        assert_eq!(backend.notice(), Some(notice), "the poll's first");
        backend.submitted();
        for _ in 0..POLL_FAILURES_SAID {
            backend.polled(None);
        }
        assert_eq!(
            backend.notice(),
            None,
            "the limit's cleared by the submission"
        );
        backend.lock().limit_notice = Some("limit".into());
        for _ in 0..POLL_FAILURES_SAID {
            backend.polled(None);
        }
        assert_eq!(backend.notice(), Some("limit".into()));
    }

    #[test]
    fn a_job_the_scheduler_forgot_is_settled_from_the_wrapper_records() {
        let dir = tempfile::tempdir().unwrap();
        let (backend, mut events) = SchedulerBackend::new(Duration::from_secs(1));
        let key = TaskKey {
            index: 4,
            attempt: 1,
        };
        assert!(
            !backend.settle_from_records(key, dir.path(), false),
            "no exit record: nothing to go by"
        );
        assert!(events.try_recv().is_err());
        std::fs::write(
            dir.path().join(wrapper::START_FILE),
            "start=1\nhost=n\njob_id=9\nindex=0\n",
        )
        .unwrap();
        std::fs::write(dir.path().join(wrapper::EXIT_FILE), "exit_code=3\nend=2\n").unwrap();
        assert!(backend.settle_from_records(key, dir.path(), false));
        assert!(matches!(events.try_recv(), Ok(ProcessEvent::Started { key: k, .. }) if k == key));
        assert!(matches!(
            events.try_recv(),
            Ok(ProcessEvent::Exited { key: k, outcome: Outcome::Exited(3), .. }) if k == key
        ));
    }

    #[test]
    fn a_submit_command_left_running_is_found_by_its_job_script() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("w");
        let script = work.join("s/scripts/job_scripts/job_1_0001/job.sh");
        // Stands in for `sbatch --parsable <job.sh>` (its arguments are what is matched): a
        // shell waiting on its stdin, with no child of its own to leave behind.
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("read line")
            .arg("sh")
            .arg(&script)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        // The kernel fills in a new program's arguments a moment after spawn returns (later on
        // a busy machine); the loop ends as soon as they are there, 60 s is only a hang guard.
        let t0 = std::time::Instant::now();
        while std::fs::read(format!("/proc/{pid}/cmdline")).map_or(true, |c| c.is_empty())
            && t0.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(submitting(pid, &work));
        assert!(submissions_in_flight(&work).contains(&pid));
        let sibling = dir.path().join("w2");
        assert!(
            !submitting(pid, &sibling),
            "another work dir sharing the prefix"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!submitting(pid, &work), "ended");
    }

    #[test]
    fn every_submission_has_a_job_name_of_its_own() {
        let scripts = Path::new("/w/my sweep!/scripts/job_scripts");
        assert_eq!(
            chunk_job_name(scripts, &scripts.join("job_1796403548684_0001")),
            "hsm_my_sweep__1796403548684_0001"
        );
        assert_ne!(
            chunk_job_name(scripts, &scripts.join("job_1796403548684_0001")),
            chunk_job_name(scripts, &scripts.join("job_1796403548684_0002"))
        );
    }
}
