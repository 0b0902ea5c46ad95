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
//! * The decisions are plain functions ([`decide`]) with unit tests; this file's async part only
//!   runs commands and moves their text through `hpc::parse`.

use crate::hpc::parse::{self, JobState, SqueueRow};
use crate::hpc::script::{self, ArrayJobSpec, Scheduler, SingleJobSpec};
use crate::hpc::wrapper::{self, ExitRecord};
use crate::process::{Outcome, ProcessEvent, TaskKey, TaskLaunch};
use hsm_protocol::{HpcMsg, HpcResources, SchedulerChoice};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, Notify};

/// How long launches are collected before they are submitted together.
const GATHER: Duration = Duration::from_millis(200);
/// Longest a scheduler command may take before it counts as failed (and is retried later).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Submission attempts before the tasks of a refused submission are reported failed.
const SUBMIT_TRIES: u32 = 4;
/// Polls an ended job may go without an exit record (a shared filesystem may show it late)
/// before the task is reported failed.
const RECORD_GRACE_POLLS: u32 = 3;
/// Longest wait between polls while scheduler commands keep failing.
const MAX_POLL_BACKOFF: Duration = Duration::from_secs(60);
/// Array size when the cluster does not say (PBS) and the resources do not either.
const DEFAULT_MAX_ARRAY: u32 = 1000;

/// One task for the scheduler.
pub struct HpcLaunch {
    pub launch: TaskLaunch,
    pub hpc: HpcMsg,
    /// The task's directory (argv0, env0, cwd, logs and records go there).
    pub task_dir: PathBuf,
    /// Where the job scripts of this sweep are kept (`<sweep>/scripts/job_scripts`).
    pub scripts_dir: PathBuf,
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
    /// Detected scheduler per choice, once known.
    detected: HashMap<ChoiceKey, Scheduler>,
    slurm_max_array: Option<Option<u32>>,
    next_chunk: u64,
    driver_started: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ChoiceKey {
    Auto,
    Slurm,
    Pbs,
}

impl From<SchedulerChoice> for ChoiceKey {
    fn from(choice: SchedulerChoice) -> Self {
        match choice {
            SchedulerChoice::Auto => ChoiceKey::Auto,
            SchedulerChoice::Slurm => ChoiceKey::Slurm,
            SchedulerChoice::Pbs => ChoiceKey::Pbs,
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
    task_dir: PathBuf,
    started: bool,
    cancel_requested: bool,
    /// Polls since the scheduler last listed it, or since it ended without an exit record.
    unaccounted_polls: u32,
}

/// What the scheduler said about one element at a poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Listed, with this state.
    Listed(JobState),
    /// Not listed (finished and aged out, or never known).
    Missing,
}

/// What to report about an element after a poll.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Report `Started` now (it had not been).
    pub start: bool,
    /// Report `Exited` with this outcome (after `Started` when it ran).
    pub exit: Option<Outcome>,
}

/// Decides an element's fate from what the scheduler says, the wrapper's records and whether a
/// cancel was asked for. `unaccounted_polls` counts polls the element went without an exit
/// record after the scheduler stopped showing it as active.
pub fn decide(
    seen: &Seen,
    started_record: bool,
    exit_record: Option<&ExitRecord>,
    already_started: bool,
    cancel_requested: bool,
    unaccounted_polls: u32,
) -> Decision {
    let running = matches!(seen, Seen::Listed(JobState::Running));
    let start = !already_started && (started_record || running || exit_record.is_some());
    let timed_out = matches!(
        seen,
        Seen::Listed(JobState::Failed {
            reason: parse::FailReason::Timeout
        })
    );
    // What the scheduler did to the job says more than the signal the task died of.
    let killed_by_scheduler = match seen {
        Seen::Listed(JobState::Failed { reason }) => scheduler_reason(reason),
        _ => None,
    };
    if let Some(record) = exit_record {
        // Killed by a signal we did not send while the scheduler still shows the job active:
        // its account (TIMEOUT, OUT_OF_MEMORY, PREEMPTED) usually follows a poll later and
        // says more than the signal. Waited for a few polls, never longer.
        let still_active = matches!(seen, Seen::Listed(state) if !state.is_final());
        if record.signal.is_some()
            && !cancel_requested
            && still_active
            && unaccounted_polls < RECORD_GRACE_POLLS
        {
            return Decision { start, exit: None };
        }
        let exit = if timed_out {
            Outcome::TimedOut
        } else if let (Some(why), true) = (&killed_by_scheduler, record.exit_code != 0) {
            Outcome::Failed(why.clone())
        } else if cancel_requested && (record.signal.is_some() || record.exit_code != 0) {
            Outcome::Cancelled
        } else if let Some(signal) = record.signal {
            Outcome::Signaled(signal)
        } else if let (wrapper::WRAPPER_FAILURE_EXIT, Some(error)) =
            (record.exit_code, &record.error)
        {
            Outcome::SpawnFailed(error.clone())
        } else {
            Outcome::Exited(record.exit_code)
        };
        return Decision {
            start,
            exit: Some(exit),
        };
    }
    let ended = match seen {
        Seen::Listed(state) => state.is_final(),
        Seen::Missing => true,
    };
    if !ended {
        return Decision { start, exit: None };
    }
    // Over, by the scheduler's account, without an exit record.
    let exit = match seen {
        Seen::Listed(JobState::Cancelled) if cancel_requested => Some(Outcome::Cancelled),
        _ if cancel_requested && !already_started && !started_record => Some(Outcome::Cancelled),
        Seen::Listed(JobState::Failed {
            reason: parse::FailReason::Timeout,
        }) => Some(Outcome::TimedOut),
        _ if killed_by_scheduler.is_some() => killed_by_scheduler.clone().map(Outcome::Failed),
        _ if unaccounted_polls < RECORD_GRACE_POLLS => None,
        Seen::Listed(state) => Some(Outcome::SpawnFailed(format!(
            "the scheduler ended the job ({}) and the task left no exit record",
            describe(state)
        ))),
        Seen::Missing => Some(Outcome::SpawnFailed(
            "the job left the scheduler's queue and the task left no exit record".into(),
        )),
    };
    Decision {
        start: start && exit.as_ref().is_some_and(|_| started_record),
        exit,
    }
}

/// The words for a scheduler-caused failure; `None` for the task's own (non-zero exit, other).
fn scheduler_reason(reason: &parse::FailReason) -> Option<String> {
    match reason {
        parse::FailReason::OutOfMemory => Some("out of memory (killed by the scheduler)".into()),
        parse::FailReason::NodeFail => Some("node failure".into()),
        parse::FailReason::Preempted => Some("preempted".into()),
        _ => None,
    }
}

fn describe(state: &JobState) -> String {
    match state {
        JobState::Failed { reason } => format!("failed: {reason:?}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// The state of one element in `squeue` rows: an exact row for it, or a row of its array whose
/// index range contains it (pending ranges).
pub fn slurm_seen(rows: &[SqueueRow], job: &str, index: Option<u32>) -> Seen {
    for row in rows {
        let hit = match index {
            Some(i) => {
                row.array_job_id == job && row.indices.as_ref().is_some_and(|set| set.contains(i))
            }
            None => row.job_id == job || (row.array_job_id == job && row.indices.is_none()),
        };
        if hit {
            return Seen::Listed(row.state.clone());
        }
    }
    Seen::Missing
}

/// The id `scancel`/`qdel` takes for one element.
pub fn element_id(scheduler: Scheduler, job: &str, index: Option<u32>) -> String {
    match (scheduler, index) {
        (_, None) => job.to_string(),
        (Scheduler::Slurm, Some(i)) => format!("{job}_{i}"),
        (Scheduler::PbsPro | Scheduler::Torque, Some(i)) => match job.split_once('[') {
            Some((head, tail)) => format!("{head}[{i}]{}", tail.trim_start_matches(']')),
            None => format!("{job}[{i}]"),
        },
    }
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
        let start_driver = {
            let mut state = self.lock();
            state.pending.push(launch);
            !std::mem::replace(&mut state.driver_started, true)
        };
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
                false
            }
        };
        if dropped {
            self.exited(key, Outcome::Cancelled);
        }
        dropped
    }

    /// Tasks submitted or waiting to be, not yet reported ended.
    pub fn active(&self) -> usize {
        let state = self.lock();
        state.pending.len() + state.elements.len()
    }

    fn exited(&self, key: TaskKey, outcome: Outcome) {
        let _ = self.inner.events.send(ProcessEvent::Exited {
            key,
            outcome,
            at: SystemTime::now(),
        });
    }

    fn started(&self, key: TaskKey) {
        let _ = self.inner.events.send(ProcessEvent::Started {
            key,
            pid: 0,
            at: SystemTime::now(),
        });
    }

    async fn drive(self) {
        // Doubled after a poll whose scheduler command failed (a busy or restarting
        // controller should not be hammered), back to `poll_every` after one that worked.
        let mut delay = self.inner.poll_every;
        loop {
            tokio::select! {
                () = self.inner.wake.notified() => {}
                () = tokio::time::sleep(delay) => {}
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
            if !self.lock().elements.is_empty() {
                delay = if self.poll().await {
                    self.inner.poll_every
                } else {
                    (delay * 2).min(MAX_POLL_BACKOFF.max(self.inner.poll_every))
                };
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
        let sbatch_text = sbatch
            .as_ref()
            .ok()
            .filter(|o| o.ok)
            .map(|o| o.stdout.as_str());
        let qstat_text = qstat
            .as_ref()
            .ok()
            .map(|o| format!("{}{}", o.stdout, o.stderr));
        let found = parse::detect(sbatch_text, qstat_text.as_deref());
        let qstat_present = qstat.is_ok();
        let scheduler = match choice {
            SchedulerChoice::Slurm => match sbatch_text {
                Some(_) => Scheduler::Slurm,
                None => {
                    return Err(format!(
                        "backend slurm: `sbatch --version` does not work on this host ({})",
                        failure_text(&sbatch)
                    ))
                }
            },
            SchedulerChoice::Pbs => match found {
                Some(s @ (Scheduler::PbsPro | Scheduler::Torque)) => s,
                // Slurm's qsub wrappers (and some Torque builds) do not answer --version: their
                // `qsub -t` arrays are Torque-style.
                _ if qstat_present => Scheduler::Torque,
                _ => {
                    return Err(format!(
                        "backend pbs: `qstat` is not available on this host ({})",
                        failure_text(&qstat)
                    ))
                }
            },
            SchedulerChoice::Auto => match found {
                Some(s) => s,
                None if qstat_present => Scheduler::Torque,
                None => {
                    return Err(
                        "backend auto: neither `sbatch` nor `qstat` works on this host".into(),
                    )
                }
            },
        };
        self.lock().detected.insert(key, scheduler);
        Ok(scheduler)
    }

    async fn max_array(&self, scheduler: Scheduler, resources: &HpcResources) -> u32 {
        let cluster = if scheduler == Scheduler::Slurm {
            let cached = self.lock().slurm_max_array;
            match cached {
                Some(known) => known,
                None => {
                    let known = match run("scontrol", &["show", "config"], None).await {
                        Ok(out) if out.ok => {
                            parse::parse_scontrol_config(&out.stdout).max_array_size
                        }
                        _ => None,
                    };
                    self.lock().slurm_max_array = Some(known);
                    known
                }
            }
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

    async fn submit(&self, launches: Vec<HpcLaunch>) {
        // Groups: same scheduler choice, resources and scripts directory go in one array.
        let mut groups: Vec<Vec<HpcLaunch>> = Vec::new();
        for launch in launches {
            match groups
                .iter_mut()
                .find(|g| g[0].hpc == launch.hpc && g[0].scripts_dir == launch.scripts_dir)
            {
                Some(group) => group.push(launch),
                None => groups.push(vec![launch]),
            }
        }
        for group in groups {
            let scheduler = match self.scheduler_for(group[0].hpc.scheduler).await {
                Ok(s) => s,
                Err(message) => {
                    for launch in group {
                        self.exited(launch.launch.key, Outcome::SpawnFailed(message.clone()));
                    }
                    continue;
                }
            };
            let mut ready = Vec::with_capacity(group.len());
            for launch in group {
                match write_task_inputs(&launch) {
                    Ok(()) => ready.push(launch),
                    Err(message) => self.exited(launch.launch.key, Outcome::SpawnFailed(message)),
                }
            }
            if ready.is_empty() {
                continue;
            }
            let resources = ready[0].hpc.resources.clone();
            if resources.array {
                let max = self.max_array(scheduler, &resources).await;
                let ranges = script::chunk_ranges(ready.len(), max);
                let mut rest = ready;
                let mut chunks = Vec::new();
                for range in ranges.iter().rev() {
                    chunks.push(rest.split_off(range.start));
                }
                chunks.reverse();
                for chunk in chunks {
                    self.submit_array(scheduler, &resources, chunk).await;
                }
            } else {
                for launch in ready {
                    self.submit_single(scheduler, &resources, launch).await;
                }
            }
        }
    }

    fn next_chunk_dir(&self, scripts_dir: &Path) -> PathBuf {
        let mut state = self.lock();
        state.next_chunk += 1;
        let stamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        scripts_dir.join(format!("job_{stamp}_{:04}", state.next_chunk))
    }

    async fn submit_array(
        &self,
        scheduler: Scheduler,
        resources: &HpcResources,
        chunk: Vec<HpcLaunch>,
    ) {
        let chunk_dir = self.next_chunk_dir(&chunk[0].scripts_dir);
        let dirs: Vec<PathBuf> = chunk.iter().map(|l| l.task_dir.clone()).collect();
        let prepared = (|| -> Result<PathBuf, String> {
            std::fs::create_dir_all(&chunk_dir)
                .map_err(|e| format!("cannot create {}: {e}", chunk_dir.display()))?;
            let index = script::tasks_index(&dirs).map_err(|e| e.to_string())?;
            write_file(&chunk_dir.join(script::TASKS_INDEX_FILE), &index)?;
            write_file(
                &chunk_dir.join(script::WRAPPER_FILE),
                wrapper::WRAPPER_SCRIPT.as_bytes(),
            )?;
            let spec = ArrayJobSpec {
                job_name: job_name(&chunk[0].scripts_dir),
                chunk_dir: chunk_dir.clone(),
                count: chunk.len() as u32,
                throttle: resources.array_throttle,
                resources: resources.clone(),
                scheduler_output: None,
            };
            let text = script::array_job_script(scheduler, &spec).map_err(|e| e.to_string())?;
            let path = chunk_dir.join("job.sh");
            write_file(&path, text.as_bytes())?;
            Ok(path)
        })();
        let keys: Vec<(TaskKey, PathBuf)> = chunk
            .iter()
            .map(|l| (l.launch.key, l.task_dir.clone()))
            .collect();
        let script_path = match prepared {
            Ok(path) => path,
            Err(message) => {
                for (key, _) in keys {
                    self.exited(key, Outcome::SpawnFailed(message.clone()));
                }
                return;
            }
        };
        match self
            .submit_script(scheduler, &script_path, &chunk_dir)
            .await
        {
            Ok(job) => {
                let mut state = self.lock();
                for (i, (key, task_dir)) in keys.into_iter().enumerate() {
                    state.elements.insert(
                        key,
                        Element {
                            scheduler,
                            job: job.clone(),
                            index: Some(i as u32),
                            task_dir,
                            started: false,
                            cancel_requested: false,
                            unaccounted_polls: 0,
                        },
                    );
                }
                tracing::info!(job = %job, tasks = chunk.len(), "job array submitted");
            }
            Err(message) => {
                for (key, _) in keys {
                    self.exited(key, Outcome::SpawnFailed(message.clone()));
                }
            }
        }
    }

    async fn submit_single(
        &self,
        scheduler: Scheduler,
        resources: &HpcResources,
        launch: HpcLaunch,
    ) {
        let chunk_dir = self.next_chunk_dir(&launch.scripts_dir);
        let key = launch.launch.key;
        let prepared = (|| -> Result<PathBuf, String> {
            std::fs::create_dir_all(&chunk_dir)
                .map_err(|e| format!("cannot create {}: {e}", chunk_dir.display()))?;
            let wrapper_path = chunk_dir.join(script::WRAPPER_FILE);
            write_file(&wrapper_path, wrapper::WRAPPER_SCRIPT.as_bytes())?;
            let spec = SingleJobSpec {
                job_name: job_name(&launch.scripts_dir),
                wrapper: wrapper_path,
                task_dir: launch.task_dir.clone(),
                resources: resources.clone(),
                scheduler_output: None,
            };
            let text = script::single_job_script(scheduler, &spec).map_err(|e| e.to_string())?;
            let path = chunk_dir.join("job.sh");
            write_file(&path, text.as_bytes())?;
            Ok(path)
        })();
        let result = match prepared {
            Ok(path) => self.submit_script(scheduler, &path, &chunk_dir).await,
            Err(message) => Err(message),
        };
        match result {
            Ok(job) => {
                self.lock().elements.insert(
                    key,
                    Element {
                        scheduler,
                        job,
                        index: None,
                        task_dir: launch.task_dir,
                        started: false,
                        cancel_requested: false,
                        unaccounted_polls: 0,
                    },
                );
            }
            Err(message) => self.exited(key, Outcome::SpawnFailed(message)),
        }
    }

    /// `sbatch`/`qsub` with retries; the job id on success.
    async fn submit_script(
        &self,
        scheduler: Scheduler,
        script_path: &Path,
        dir: &Path,
    ) -> Result<String, String> {
        let script_text = script_path.to_string_lossy().into_owned();
        let mut last = String::new();
        for attempt in 0..SUBMIT_TRIES {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
            }
            let out = match scheduler {
                Scheduler::Slurm => run("sbatch", &["--parsable", &script_text], Some(dir)).await,
                _ => run("qsub", &[&script_text], Some(dir)).await,
            };
            match out {
                Ok(out) if out.ok => {
                    let parsed = match scheduler {
                        Scheduler::Slurm => parse::parse_sbatch(&out.stdout),
                        _ => parse::parse_qsub(&out.stdout),
                    };
                    match parsed {
                        Ok(submitted) => return Ok(submitted.job_id),
                        Err(e) => {
                            // Submitted, but the id is unreadable: retrying would submit twice.
                            return Err(format!(
                                "submitted {script_text} but could not read the job id: {e}"
                            ));
                        }
                    }
                }
                Ok(out) => {
                    last = format!(
                        "{} refused {script_text}: {}",
                        submit_command(scheduler),
                        out.stderr.trim()
                    );
                    tracing::warn!(%last, attempt, "submission failed");
                }
                Err(e) => {
                    last = e;
                    tracing::warn!(%last, attempt, "submission failed");
                }
            }
        }
        Err(last)
    }

    async fn send_cancels(&self, keys: &[TaskKey]) {
        let ids: Vec<(Scheduler, String)> = {
            let state = self.lock();
            keys.iter()
                .filter_map(|k| state.elements.get(k))
                .map(|e| (e.scheduler, element_id(e.scheduler, &e.job, e.index)))
                .collect()
        };
        for scheduler in [Scheduler::Slurm, Scheduler::PbsPro, Scheduler::Torque] {
            let ids: Vec<&str> = ids
                .iter()
                .filter(|(s, _)| *s == scheduler)
                .map(|(_, id)| id.as_str())
                .collect();
            if ids.is_empty() {
                continue;
            }
            let program = if scheduler == Scheduler::Slurm {
                "scancel"
            } else {
                "qdel"
            };
            match run(program, &ids, None).await {
                Ok(out) if out.ok => {}
                Ok(out) => {
                    tracing::warn!(program, stderr = %out.stderr.trim(), "cancel reported a problem")
                }
                Err(e) => tracing::warn!(program, error = %e, "cancel failed"),
            }
        }
    }

    /// One round of following; false when a scheduler command failed.
    async fn poll(&self) -> bool {
        let elements: Vec<(TaskKey, Element)> = self
            .lock()
            .elements
            .iter()
            .map(|(k, e)| (*k, e.clone()))
            .collect();
        let mut slurm_jobs: Vec<&str> = elements
            .iter()
            .filter(|(_, e)| e.scheduler == Scheduler::Slurm)
            .map(|(_, e)| e.job.as_str())
            .collect();
        slurm_jobs.sort_unstable();
        slurm_jobs.dedup();
        let mut pbs_jobs: Vec<&str> = elements
            .iter()
            .filter(|(_, e)| e.scheduler != Scheduler::Slurm)
            .map(|(_, e)| e.job.as_str())
            .collect();
        pbs_jobs.sort_unstable();
        pbs_jobs.dedup();
        // One call per scheduler for every job of the agent; `None`: the call failed, so
        // nothing is concluded from this poll.
        let slurm_rows = if slurm_jobs.is_empty() {
            Some(Vec::new())
        } else {
            let list = slurm_jobs.join(",");
            match run(
                "squeue",
                &["-h", "-t", "all", "-o", parse::SQUEUE_FORMAT, "-j", &list],
                None,
            )
            .await
            {
                Ok(out) if out.ok => Some(parse::parse_squeue(&out.stdout).rows),
                Ok(out) if parse::is_invalid_job_id(&out.stderr) => Some(Vec::new()),
                Ok(out) => {
                    tracing::warn!(stderr = %out.stderr.trim(), "squeue failed; trying again at the next poll");
                    None
                }
                Err(e) => {
                    tracing::warn!(error = %e, "squeue failed; trying again at the next poll");
                    None
                }
            }
        };
        let pbs_rows = if pbs_jobs.is_empty() {
            Some(Vec::new())
        } else {
            match run("qstat", &pbs_jobs, None).await {
                Ok(out) if out.ok || !out.stdout.trim().is_empty() => {
                    Some(parse::parse_qstat_list(&out.stdout).rows)
                }
                // qstat exits non-zero when every job asked about is gone.
                Ok(out)
                    if out.stderr.to_ascii_lowercase().contains("unknown job")
                        || out.stderr.to_ascii_lowercase().contains("invalid job") =>
                {
                    Some(Vec::new())
                }
                Ok(out) => {
                    tracing::warn!(stderr = %out.stderr.trim(), "qstat failed; trying again at the next poll");
                    None
                }
                Err(e) => {
                    tracing::warn!(error = %e, "qstat failed; trying again at the next poll");
                    None
                }
            }
        };
        let all_ok = slurm_rows.is_some() && pbs_rows.is_some();
        for (key, element) in elements {
            let seen = match element.scheduler {
                Scheduler::Slurm => match &slurm_rows {
                    Some(rows) => slurm_seen(rows, &element.job, element.index),
                    None => continue,
                },
                _ => match &pbs_rows {
                    // The list shows the array as a whole: whether it is still there.
                    Some(rows) => {
                        let number = element.job.split(['.', '[']).next().unwrap_or("");
                        match rows
                            .iter()
                            .find(|r| r.job_id.split(['.', '[']).next() == Some(number))
                        {
                            Some(row) if row.state.is_final() => Seen::Listed(JobState::Ended),
                            Some(_) if element.started => Seen::Listed(JobState::Running),
                            Some(row) => Seen::Listed(match row.state {
                                JobState::Running => JobState::Queued,
                                ref other => other.clone(),
                            }),
                            None => Seen::Missing,
                        }
                    }
                    None => continue,
                },
            };
            // An element Slurm still holds in its queue has written no record: no file access
            // for the (usually many) waiting elements at each poll. (PBS lists the array as a
            // whole, so there the records are what tell its elements apart.)
            let waiting =
                element.scheduler == Scheduler::Slurm && seen == Seen::Listed(JobState::Queued);
            let started_record = !waiting && element.task_dir.join(wrapper::START_FILE).exists();
            let exit_record = if waiting {
                None
            } else {
                std::fs::read_to_string(element.task_dir.join(wrapper::EXIT_FILE))
                    .ok()
                    .and_then(|text| wrapper::parse_exit_record(&text).ok())
            };
            let decision = decide(
                &seen,
                started_record,
                exit_record.as_ref(),
                element.started,
                element.cancel_requested,
                element.unaccounted_polls,
            );
            {
                let mut state = self.lock();
                if let Some(e) = state.elements.get_mut(&key) {
                    if decision.start {
                        e.started = true;
                    }
                    let ended = match &seen {
                        Seen::Listed(s) => s.is_final(),
                        Seen::Missing => true,
                    };
                    if decision.exit.is_none() && (ended || exit_record.is_some()) {
                        e.unaccounted_polls += 1;
                    }
                }
                if decision.exit.is_some() {
                    state.elements.remove(&key);
                }
            }
            if decision.start {
                self.started(key);
            }
            if let Some(outcome) = decision.exit {
                self.exited(key, outcome);
            }
        }
        all_ok
    }
}

fn submit_command(scheduler: Scheduler) -> &'static str {
    match scheduler {
        Scheduler::Slurm => "sbatch",
        _ => "qsub",
    }
}

fn failure_text(out: &Result<CommandOutput, String>) -> String {
    match out {
        Ok(out) => out.stderr.trim().to_string(),
        Err(e) => e.clone(),
    }
}

/// A job name from the sweep (the scripts directory is `<sweep>/scripts/job_scripts`).
fn job_name(scripts_dir: &Path) -> String {
    let sweep = scripts_dir
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .unwrap_or("sweep");
    let name: String = sweep
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    format!("hsm_{name}")
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The task's argv, environment and working directory for the wrapper, and empty logs it appends
/// to (the runner follows them while the task runs).
fn write_task_inputs(launch: &HpcLaunch) -> Result<(), String> {
    let dir = &launch.task_dir;
    let argv = wrapper::write_argv0(&launch.launch.argv).map_err(|e| e.to_string())?;
    let env = wrapper::write_env0(&launch.launch.env).map_err(|e| e.to_string())?;
    write_file(&dir.join(wrapper::ARGV_FILE), &argv)?;
    write_file(&dir.join(wrapper::ENV_FILE), &env)?;
    let mut cwd = launch
        .launch
        .cwd
        .to_string_lossy()
        .into_owned()
        .into_bytes();
    cwd.push(0);
    write_file(&dir.join(wrapper::CWD_FILE), &cwd)?;
    for name in [wrapper::START_FILE, wrapper::EXIT_FILE] {
        let _ = std::fs::remove_file(dir.join(name));
    }
    write_file(&launch.launch.stdout, b"")?;
    write_file(&launch.launch.stderr, b"")?;
    Ok(())
}

/// Runs a scheduler command (no shell) with a time limit.
async fn run(program: &str, args: &[&str], dir: Option<&Path>) -> Result<CommandOutput, String> {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let output = tokio::time::timeout(COMMAND_TIMEOUT, command.output())
        .await
        .map_err(|_| format!("`{program}` took longer than {COMMAND_TIMEOUT:?}"))?
        .map_err(|e| format!("cannot run `{program}`: {e}"))?;
    Ok(CommandOutput {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hpc::parse::FailReason;

    fn record(code: i32, signal: Option<i32>) -> ExitRecord {
        ExitRecord {
            exit_code: code,
            signal,
            end_time: 1,
            error: None,
        }
    }

    #[test]
    fn the_exit_record_decides_when_there_is_one() {
        let running = Seen::Listed(JobState::Running);
        let d = decide(&running, true, Some(&record(0, None)), false, false, 0);
        assert_eq!(
            d,
            Decision {
                start: true,
                exit: Some(Outcome::Exited(0))
            }
        );
        let d = decide(&Seen::Missing, true, Some(&record(3, None)), true, false, 0);
        assert_eq!(d.exit, Some(Outcome::Exited(3)));
        assert!(!d.start, "already reported started");
        let d = decide(&running, true, Some(&record(143, Some(15))), true, true, 0);
        assert_eq!(d.exit, Some(Outcome::Cancelled));
        // A signal nobody here sent, the job still shown running: wait for the scheduler's
        // account (it may be a walltime kill) a few polls, then report the signal.
        let d = decide(&running, true, Some(&record(143, Some(15))), true, false, 0);
        assert_eq!(d.exit, None);
        let d = decide(
            &running,
            true,
            Some(&record(143, Some(15))),
            true,
            false,
            RECORD_GRACE_POLLS,
        );
        assert_eq!(d.exit, Some(Outcome::Signaled(15)));
        let timeout = Seen::Listed(JobState::Failed {
            reason: FailReason::Timeout,
        });
        let d = decide(&timeout, true, Some(&record(143, Some(15))), true, false, 0);
        assert_eq!(
            d.exit,
            Some(Outcome::TimedOut),
            "the scheduler's reason wins over the signal"
        );
        let mut failed_start = record(127, None);
        failed_start.error = Some("cannot change directory to /nope".into());
        let d = decide(&Seen::Missing, true, Some(&failed_start), false, false, 0);
        assert_eq!(
            d.exit,
            Some(Outcome::SpawnFailed(
                "cannot change directory to /nope".into()
            ))
        );
    }

    #[test]
    fn without_a_record_the_scheduler_view_fills_in_after_a_grace() {
        let queued = Seen::Listed(JobState::Queued);
        assert_eq!(
            decide(&queued, false, None, false, false, 0),
            Decision {
                start: false,
                exit: None
            }
        );
        let running = Seen::Listed(JobState::Running);
        assert_eq!(
            decide(&running, false, None, false, false, 0),
            Decision {
                start: true,
                exit: None
            }
        );
        // Cancelled while pending: never started, ends cancelled at once.
        let cancelled = Seen::Listed(JobState::Cancelled);
        assert_eq!(
            decide(&cancelled, false, None, false, true, 0),
            Decision {
                start: false,
                exit: Some(Outcome::Cancelled)
            }
        );
        // The scheduler's own reasons are reported as such, record or not.
        let node = Seen::Listed(JobState::Failed {
            reason: FailReason::NodeFail,
        });
        assert_eq!(
            decide(&node, true, None, true, false, 0).exit,
            Some(Outcome::Failed("node failure".into()))
        );
        let oom = Seen::Listed(JobState::Failed {
            reason: FailReason::OutOfMemory,
        });
        assert_eq!(
            decide(&oom, true, Some(&record(137, Some(9))), true, false, 0).exit,
            Some(Outcome::Failed(
                "out of memory (killed by the scheduler)".into()
            ))
        );
        // Ended without a record for a reason of its own: wait a few polls (shared
        // filesystems lag), then fail.
        let ended = Seen::Listed(JobState::Failed {
            reason: FailReason::NonZeroExit(2),
        });
        assert_eq!(decide(&ended, true, None, true, false, 0).exit, None);
        match decide(&ended, true, None, true, false, RECORD_GRACE_POLLS).exit {
            Some(Outcome::SpawnFailed(why)) => assert!(why.contains("NonZeroExit"), "{why}"),
            other => panic!("{other:?}"),
        }
        match decide(
            &Seen::Missing,
            false,
            None,
            false,
            false,
            RECORD_GRACE_POLLS,
        )
        .exit
        {
            Some(Outcome::SpawnFailed(why)) => assert!(why.contains("left the scheduler"), "{why}"),
            other => panic!("{other:?}"),
        }
        let timeout = Seen::Listed(JobState::Failed {
            reason: FailReason::Timeout,
        });
        assert_eq!(
            decide(&timeout, true, None, true, false, 0).exit,
            Some(Outcome::TimedOut)
        );
        // Never success without a record.
        let completed = Seen::Listed(JobState::Completed);
        for polls in 0..10 {
            assert!(!matches!(
                decide(&completed, true, None, true, false, polls).exit,
                Some(Outcome::Exited(0))
            ));
        }
    }

    #[test]
    fn elements_are_found_in_exact_rows_and_pending_ranges() {
        let rows = parse::parse_squeue(
            "12_3|12|3|15|RUNNING|None\n12_[4-9%2]|12|4-9%2|12|PENDING|JobArrayTaskLimit\n20|20|N/A|20|COMPLETED|None\n",
        )
        .rows;
        assert_eq!(
            slurm_seen(&rows, "12", Some(3)),
            Seen::Listed(JobState::Running)
        );
        assert_eq!(
            slurm_seen(&rows, "12", Some(7)),
            Seen::Listed(JobState::Queued)
        );
        assert_eq!(slurm_seen(&rows, "12", Some(1)), Seen::Missing);
        assert_eq!(
            slurm_seen(&rows, "20", None),
            Seen::Listed(JobState::Completed)
        );
        assert_eq!(element_id(Scheduler::Slurm, "12", Some(4)), "12_4");
        assert_eq!(
            element_id(Scheduler::PbsPro, "123[].pbs01", Some(4)),
            "123[4].pbs01"
        );
        assert_eq!(element_id(Scheduler::Torque, "77", Some(2)), "77[2]");
        assert_eq!(element_id(Scheduler::Slurm, "5", None), "5");
    }
}
