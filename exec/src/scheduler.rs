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

use crate::hpc::parse::{self, JobState};
use crate::hpc::script::{self, ArrayJobSpec, Scheduler, SingleJobSpec};
use crate::hpc::wrapper::{self, ExitRecord};
use crate::process::{Outcome, ProcessEvent, TaskKey, TaskLaunch};
use hsm_protocol::{HpcMsg, HpcResources, SchedulerChoice};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, Notify};

mod usage;

use crate::hpc::decide::RECORD_GRACE_POLLS;
pub use crate::hpc::decide::{
    decide, element_id, qstat_account, qstat_element, sacct_account, scontrol_account, slurm_seen,
    wants_account, Account, Decision, Seen,
};

/// How long launches are collected before they are submitted together.
const GATHER: Duration = Duration::from_millis(200);
/// Longest a scheduler command may take before it counts as failed (and is retried later).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Submission attempts before the tasks of a refused submission are reported failed.
const SUBMIT_TRIES: u32 = 4;
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

/// Where a task runs in the scheduler: enough to follow it again after an agent restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementRef {
    pub scheduler: Scheduler,
    /// The array's job id (or the job's, for a task submitted alone).
    pub job: String,
    /// Index within the array.
    pub index: Option<u32>,
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
        })
    }
}

fn scheduler_name(scheduler: Scheduler) -> &'static str {
    match scheduler {
        Scheduler::Slurm => "slurm",
        Scheduler::PbsPro => "pbspro",
        Scheduler::Torque => "torque",
    }
}

fn scheduler_named(name: &str) -> Option<Scheduler> {
    match name {
        "slurm" => Some(Scheduler::Slurm),
        "pbspro" => Some(Scheduler::PbsPro),
        "torque" => Some(Scheduler::Torque),
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
}

impl PendingElement {
    /// As stored before `sbatch`/`qsub` runs (no job id yet).
    pub fn to_stored(&self) -> StoredElement {
        StoredElement {
            scheduler: scheduler_name(self.scheduler).into(),
            job: String::new(),
            index: self.index,
            name: Some(self.name.clone()),
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
    slurm_config: Option<(Option<u32>, bool)>,
    next_chunk: u64,
    driver_started: bool,
}

impl State {
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

    /// Follows an element submitted before an agent restart, as if this backend had submitted
    /// it; `started` when `Started` was reported already.
    pub fn adopt(
        &self,
        key: TaskKey,
        element: ElementRef,
        task_dir: PathBuf,
        started: bool,
        cancel_requested: bool,
    ) {
        // A cancel asked for before the restart may not have reached the scheduler: it is sent
        // (again) with the next round.
        self.lock().insert_element(
            key,
            Element {
                scheduler: element.scheduler,
                job: element.job,
                index: element.index,
                task_dir,
                started,
                cancel_requested,
                unaccounted_polls: 0,
            },
        );
        self.ensure_driver();
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

    /// Tasks submitted or waiting to be, not yet reported ended.
    pub fn active(&self) -> usize {
        let state = self.lock();
        state.pending.len() + state.elements.len()
    }

    fn exited(&self, key: TaskKey, outcome: Outcome) {
        self.exited_with(key, outcome, None);
    }

    fn exited_with(&self, key: TaskKey, outcome: Outcome, usage: Option<hsm_protocol::UsageMsg>) {
        self.lock().early_cancels.remove(&key);
        let _ = self.inner.events.send(ProcessEvent::Exited {
            key,
            outcome,
            at: SystemTime::now(),
            usage,
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

    /// `MaxArraySize` and whether the cluster keeps accounting, read once from
    /// `scontrol show config` (unknown and false when it cannot be read).
    async fn slurm_config(&self) -> (Option<u32>, bool) {
        let cached = self.lock().slurm_config;
        if let Some(known) = cached {
            return known;
        }
        let known = match run("scontrol", &["show", "config"], None).await {
            Ok(out) if out.ok => {
                let config = parse::parse_scontrol_config(&out.stdout);
                (config.max_array_size, config.has_accounting())
            }
            _ => (None, false),
        };
        self.lock().slurm_config = Some(known);
        known
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
        let name = chunk_job_name(&chunk[0].scripts_dir, &chunk_dir);
        let dirs: Vec<PathBuf> = chunk.iter().map(|l| l.task_dir.clone()).collect();
        let prepared = (|| -> Result<(PathBuf, String), String> {
            std::fs::create_dir_all(&chunk_dir)
                .map_err(|e| format!("cannot create {}: {e}", chunk_dir.display()))?;
            let index = script::tasks_index(&dirs).map_err(|e| e.to_string())?;
            write_file(&chunk_dir.join(script::TASKS_INDEX_FILE), &index)?;
            write_file(
                &chunk_dir.join(script::WRAPPER_FILE),
                wrapper::WRAPPER_SCRIPT.as_bytes(),
            )?;
            let spec = ArrayJobSpec {
                job_name: name.clone(),
                chunk_dir: chunk_dir.clone(),
                count: chunk.len() as u32,
                throttle: resources.array_throttle,
                resources: resources.clone(),
                scheduler_output: None,
            };
            let text = script::array_job_script(scheduler, &spec).map_err(|e| e.to_string())?;
            let path = chunk_dir.join("job.sh");
            write_file(&path, text.as_bytes())?;
            Ok((path, text))
        })();
        let keys: Vec<(TaskKey, PathBuf)> = chunk
            .iter()
            .map(|l| (l.launch.key, l.task_dir.clone()))
            .collect();
        let (script_path, script_text) = match prepared {
            Ok(prepared) => prepared,
            Err(message) => {
                for (key, _) in keys {
                    self.exited(key, Outcome::SpawnFailed(message.clone()));
                }
                return;
            }
        };
        self.announce(
            scheduler,
            &name,
            keys.iter()
                .enumerate()
                .map(|(i, (key, _))| (*key, Some(i as u32)))
                .collect(),
        )
        .await;
        match self
            .submit_script(scheduler, &script_path, &chunk_dir, &name)
            .await
        {
            Ok(job) => {
                let mut script = Some((script_name(&chunk_dir, &job), script_text));
                let mut state = self.lock();
                for (i, (key, task_dir)) in keys.into_iter().enumerate() {
                    let _ = self.inner.events.send(ProcessEvent::Submitted {
                        key,
                        element: ElementRef {
                            scheduler,
                            job: job.clone(),
                            index: Some(i as u32),
                        },
                        script: script.take(),
                    });
                    state.insert_element(
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
        let name = chunk_job_name(&launch.scripts_dir, &chunk_dir);
        let key = launch.launch.key;
        let prepared = (|| -> Result<(PathBuf, String), String> {
            std::fs::create_dir_all(&chunk_dir)
                .map_err(|e| format!("cannot create {}: {e}", chunk_dir.display()))?;
            let wrapper_path = chunk_dir.join(script::WRAPPER_FILE);
            write_file(&wrapper_path, wrapper::WRAPPER_SCRIPT.as_bytes())?;
            let spec = SingleJobSpec {
                job_name: name.clone(),
                wrapper: wrapper_path,
                task_dir: launch.task_dir.clone(),
                resources: resources.clone(),
                scheduler_output: None,
            };
            let text = script::single_job_script(scheduler, &spec).map_err(|e| e.to_string())?;
            let path = chunk_dir.join("job.sh");
            write_file(&path, text.as_bytes())?;
            Ok((path, text))
        })();
        let result = match prepared {
            Ok((path, text)) => {
                self.announce(scheduler, &name, vec![(key, None)]).await;
                self.submit_script(scheduler, &path, &chunk_dir, &name)
                    .await
                    .map(|job| (job, text))
            }
            Err(message) => Err(message),
        };
        match result {
            Ok((job, text)) => {
                let _ = self.inner.events.send(ProcessEvent::Submitted {
                    key,
                    element: ElementRef {
                        scheduler,
                        job: job.clone(),
                        index: None,
                    },
                    script: Some((script_name(&chunk_dir, &job), text)),
                });
                self.lock().insert_element(
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

    /// Tells the runner which tasks go out next under job name `name` and waits until it has
    /// recorded that: an agent killed while `sbatch`/`qsub` runs (the job accepted, its id not
    /// yet read) then finds the job by its name instead of submitting the tasks again. Without
    /// a ledger the event is dropped unanswered, which lets the submission go ahead as well.
    async fn announce(
        &self,
        scheduler: Scheduler,
        name: &str,
        elements: Vec<(TaskKey, Option<u32>)>,
    ) {
        let (recorded, done) = tokio::sync::oneshot::channel();
        let sent = self.inner.events.send(ProcessEvent::Submitting {
            elements,
            scheduler,
            name: name.to_string(),
            recorded,
        });
        if sent.is_ok() {
            let _ = done.await;
        }
    }

    /// Forgets a task the runner ended itself (a cancel kept for it is dropped).
    pub fn forget(&self, key: TaskKey) {
        self.lock().early_cancels.remove(&key);
    }

    /// Ends a task whose job the scheduler no longer knows from the wrapper's records in
    /// `task_dir` (`Started`, then `Exited`). False when there is no exit record to go by.
    pub fn settle_from_records(
        &self,
        key: TaskKey,
        task_dir: &Path,
        cancel_requested: bool,
    ) -> bool {
        let Some(exit_record) = read_exit_record(task_dir) else {
            return false;
        };
        let decision = decide(
            &Seen::Missing,
            task_dir.join(wrapper::START_FILE).exists(),
            Some(&exit_record),
            false,
            cancel_requested,
            RECORD_GRACE_POLLS,
            None,
        );
        let Some(outcome) = decision.exit else {
            return false;
        };
        if decision.start {
            self.started(key);
        }
        self.exited_with(key, outcome, usage::from_records(task_dir));
        true
    }

    /// The id of the job submitted under `name`; `Ok(None)` when the scheduler shows no such job
    /// (still queued, running or recently ended; `sacct` too where Slurm keeps accounting).
    pub async fn find_job_named(
        &self,
        scheduler: Scheduler,
        name: &str,
    ) -> Result<Option<String>, String> {
        match scheduler {
            Scheduler::Slurm => {
                if let Some(job) = squeue_job_named(name).await? {
                    return Ok(Some(job));
                }
                if !self.slurm_config().await.1 {
                    return Ok(None);
                }
                let name_arg = format!("--name={name}");
                let out = run(
                    "sacct",
                    &[
                        "-n",
                        "-X",
                        "-P",
                        &name_arg,
                        "-o",
                        "JobID",
                        "-S",
                        "now-7days",
                    ],
                    None,
                )
                .await?;
                if out.ok {
                    Ok(parse::first_job_id(&out.stdout))
                } else if parse::sacct_unavailable(&out.stderr) {
                    Ok(None)
                } else {
                    Err(format!("sacct: {}", out.stderr.trim()))
                }
            }
            Scheduler::PbsPro | Scheduler::Torque => {
                // qselect asks the server for this name only (PBS Pro: finished jobs too).
                let mut select = vec!["-N", name];
                if scheduler == Scheduler::PbsPro {
                    select.push("-x");
                }
                match run("qselect", &select, None).await {
                    Ok(out) if out.ok => return Ok(parse::pbs_parent_id(&out.stdout)),
                    Ok(out) => return Err(format!("qselect: {}", out.stderr.trim())),
                    // No qselect: Slurm's qsub wrappers, where squeue knows the array whole.
                    Err(_) => {}
                }
                if let Ok(found) = squeue_job_named(name).await {
                    return Ok(found);
                }
                let args: &[&str] = if scheduler == Scheduler::PbsPro {
                    &["-f", "-x"]
                } else {
                    &["-f"]
                };
                let out = run("qstat", args, None).await?;
                if !out.ok && out.stdout.trim().is_empty() {
                    return Err(format!("qstat: {}", out.stderr.trim()));
                }
                let jobs = parse::parse_qstat_full(&out.stdout).map_err(|e| e.to_string())?;
                Ok(parse::pbs_job_named(&jobs, name))
            }
        }
    }

    /// `sbatch`/`qsub` with retries; the job id on success. Before a retry the job is looked
    /// up by its `name`: a command that timed out or failed may have submitted it all the same.
    async fn submit_script(
        &self,
        scheduler: Scheduler,
        script_path: &Path,
        dir: &Path,
        name: &str,
    ) -> Result<String, String> {
        let script_text = script_path.to_string_lossy().into_owned();
        let mut last = String::new();
        for attempt in 0..SUBMIT_TRIES {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
                if let Ok(Some(job)) = self.find_job_named(scheduler, name).await {
                    tracing::info!(job = %job, job_name = %name, "the failed submission went through after all");
                    return Ok(job);
                }
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

    /// The scheduler's records of elements that left without an exit record: Slurm's `sacct`
    /// (one call, when the cluster keeps accounting), then `scontrol show job` (one call per
    /// job) for what sacct did not know; PBS `qstat -f` (`-x` on PBS Pro for finished jobs).
    /// Failures only mean no account: the caller then concludes as before.
    async fn accounts(&self, due: &[(TaskKey, Element)]) -> HashMap<TaskKey, Account> {
        let mut found = HashMap::new();
        let slurm: Vec<&(TaskKey, Element)> = due
            .iter()
            .filter(|(_, e)| e.scheduler == Scheduler::Slurm)
            .collect();
        if !slurm.is_empty() {
            let mut jobs: Vec<&str> = slurm.iter().map(|(_, e)| e.job.as_str()).collect();
            jobs.sort_unstable();
            jobs.dedup();
            if self.slurm_config().await.1 {
                let list = jobs.join(",");
                match run(
                    "sacct",
                    &["-n", "-P", "-o", parse::SACCT_FORMAT, "-j", &list],
                    None,
                )
                .await
                {
                    Ok(out) if out.ok => {
                        let rows = parse::parse_sacct(&out.stdout).rows;
                        for (key, e) in &slurm {
                            if let Some(a) = sacct_account(&rows, &e.job, e.index) {
                                found.insert(*key, a);
                            }
                        }
                    }
                    Ok(out) => {
                        tracing::info!(stderr = %out.stderr.trim(), "sacct has no answer; asking scontrol")
                    }
                    Err(e) => tracing::info!(error = %e, "sacct failed; asking scontrol"),
                }
            }
            for job in jobs {
                if slurm
                    .iter()
                    .all(|(k, e)| e.job != job || found.contains_key(k))
                {
                    continue;
                }
                match run("scontrol", &["show", "job", job], None).await {
                    Ok(out) if out.ok => match parse::parse_scontrol_job(&out.stdout) {
                        Ok(records) => {
                            for (key, e) in slurm.iter().filter(|(_, e)| e.job == job) {
                                if let Some(a) = scontrol_account(&records, &e.job, e.index) {
                                    found.entry(*key).or_insert(a);
                                }
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot read scontrol show job"),
                    },
                    // Gone from the controller too (older than MinJobAge): no account.
                    Ok(_) => {}
                    Err(e) => tracing::info!(error = %e, "scontrol show job failed"),
                }
            }
        }
        let pbs: Vec<&(TaskKey, Element)> = due
            .iter()
            .filter(|(_, e)| e.scheduler != Scheduler::Slurm)
            .collect();
        if !pbs.is_empty() {
            let mut ids: Vec<String> = pbs
                .iter()
                .map(|(_, e)| element_id(e.scheduler, &e.job, e.index))
                .collect();
            ids.sort_unstable();
            ids.dedup();
            let mut args = vec!["-f"];
            if pbs.iter().any(|(_, e)| e.scheduler == Scheduler::PbsPro) {
                args.push("-x");
            }
            args.extend(ids.iter().map(String::as_str));
            match run("qstat", &args, None).await {
                // qstat prints what it knows and complains about the rest.
                Ok(out) if !out.stdout.trim().is_empty() => {
                    match parse::parse_qstat_full(&out.stdout) {
                        Ok(records) => {
                            for (key, e) in &pbs {
                                if let Some(a) = qstat_account(&records, &e.job, e.index) {
                                    found.insert(*key, a);
                                }
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot read qstat -f"),
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::info!(error = %e, "qstat -f failed"),
            }
        }
        found
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
        let mut observed = Vec::with_capacity(elements.len());
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
                read_exit_record(&element.task_dir)
            };
            observed.push((key, element, seen, started_record, exit_record));
        }
        // Elements that ended without an exit record and used up their grace: ask the
        // scheduler's records how they ended (a few calls for all of them, never one per task).
        let due: Vec<(TaskKey, Element)> = observed
            .iter()
            .filter(|(_, e, seen, _, record)| {
                wants_account(seen, record.is_some(), e.unaccounted_polls)
            })
            .map(|(k, e, ..)| (*k, e.clone()))
            .collect();
        let accounts = if due.is_empty() {
            HashMap::new()
        } else {
            self.accounts(&due).await
        };
        let mut ended = Vec::new();
        for (key, element, seen, started_record, exit_record) in observed {
            let decision = decide(
                &seen,
                started_record,
                exit_record.as_ref(),
                element.started,
                element.cancel_requested,
                element.unaccounted_polls,
                accounts.get(&key),
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
                ended.push((key, element, outcome));
            }
        }
        // What the ended elements used: the wrapper's records, and the scheduler's accounts
        // (one call for all of them, bounded) where it keeps them.
        if !ended.is_empty() {
            let mut used = self.usages(&ended).await;
            for (key, _, outcome) in ended {
                self.exited_with(key, outcome, used.remove(&key));
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

/// Processes submitting a job script of this work directory (`sbatch`/`qsub … <work_dir>/…/job.sh`,
/// or anything running with such an argument, a wrapper script included), by pid: after a
/// `kill -9` of the agent they live on, and whether their job exists is decided when they end.
pub fn submissions_in_flight(work_dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| submitting(pid, work_dir))
        .collect()
}

/// True while process `pid` is alive (not a zombie: an orphan's may never be reaped) and has a
/// `job.sh` under `work_dir` among its arguments (so a reused pid does not count).
pub fn submitting(pid: u32, work_dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let mut prefix = work_dir.as_os_str().as_bytes().to_vec();
    prefix.push(b'/');
    // A zombie's cmdline is empty, so it never matches.
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        cmdline
            .split(|&b| b == 0)
            .any(|arg| arg.starts_with(&prefix) && arg.ends_with(b"/job.sh"))
    })
}

/// The wrapper's exit record in `task_dir`, if it wrote a readable one.
fn read_exit_record(task_dir: &Path) -> Option<ExitRecord> {
    let text = std::fs::read_to_string(task_dir.join(wrapper::EXIT_FILE)).ok()?;
    wrapper::parse_exit_record(&text).ok()
}

/// The array (or job) id `squeue` shows for jobs named `name`, finished ones it still holds
/// included.
async fn squeue_job_named(name: &str) -> Result<Option<String>, String> {
    let out = run("squeue", &["-h", "-t", "all", "-n", name, "-o", "%F"], None).await?;
    if !out.ok {
        return Err(format!("squeue: {}", out.stderr.trim()));
    }
    Ok(parse::first_job_id(&out.stdout))
}

/// The job name of one submission, `hsm_<sweep>_<stamp>_<n>` after its directory under
/// `scripts_dir` (`job_<stamp>_<n>`): unique, so a restarted agent can find by it a job whose id
/// it never read.
fn chunk_job_name(scripts_dir: &Path, chunk_dir: &Path) -> String {
    let chunk = chunk_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    format!(
        "{}_{}",
        job_name(scripts_dir),
        chunk.strip_prefix("job_").unwrap_or(chunk)
    )
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

/// The name a job script travels under: its chunk directory and the job id, as one safe file
/// name (`job_1764370000000_0001-4242.sh`).
fn script_name(chunk_dir: &Path, job: &str) -> String {
    let chunk = chunk_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("job");
    let id: String = job
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    format!("{chunk}-{id}.sh")
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_submission_under_way_is_stored_by_name_and_told_apart_from_a_submitted_element() {
        let pending = PendingElement {
            scheduler: Scheduler::Torque,
            name: "hsm_s_1_0001".into(),
            index: Some(3),
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
        };
        assert_eq!(PendingElement::from_stored(&old), None);
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
