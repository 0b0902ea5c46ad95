//! Task execution for the agent daemon, the IO shell around [`crate::core::AgentCore`]: it
//! prepares task directories and hands attempts to the process or scheduler backend, follows
//! each started attempt's log files and feeds what it reads to the core, scans and hashes result
//! files, records the core's ledger ops through the durable ledger's writer thread, and answers
//! the sessions (`server.rs`) from the core. What happens to an attempt, in which order events
//! are numbered, what is kept until acknowledged and what a restart takes up are the core's
//! decisions (see its module notes).
//!
//! Why it is shaped like this:
//!
//! * One `Mutex<Inner>` holds the core (never held across an `.await`, no file or process IO
//!   under it). The ledger ops the core makes are sent into the ledger writer's channel while
//!   the lock is still held, when the lock is let go (`Locked`): the order they reach the
//!   writer is the order the core made them in, which is their `gen` order. Sending on that
//!   unbounded channel does not block.
//! * Events are sent only once durable in the ledger (`ledger.rs`): its writer reports each
//!   commit and sessions are woken then. After a restart the core is rebuilt from the ledger:
//!   queued tasks run, scheduler jobs are followed again, finished attempts keep their results,
//!   and process tasks that were running are ended (their process groups, found by the
//!   `HSM_AGENT_TASK` mark in their environment) and reported `Lost`, because nobody can know
//!   how they would have ended.
//! * Output is read from the task's `stdout.log`/`stderr.log`, never from pipes: the files are the
//!   buffer. A tailer reads only as much as the core's output credit allows, so a task that
//!   prints gigabytes to a coordinator that lags (or is away) costs disk, not memory.

use crate::core::{AgentCore, BackendEvent, Launch, LedgerOp, Tail, Unsubmitted};
use crate::hpc::script::Scheduler;
use crate::ledger::{self, Ledger, Op};
use crate::owners::Decision;
use crate::process::{Outcome, ProcessBackend, ProcessEvent, TaskKey};
use crate::scheduler::{ElementRef, HpcLaunch, SchedulerBackend};
use hsm_protocol::{
    CancelMsg, EventRef, FetchMsg, FileOffer, OutcomeMsg, ResultsDoneMsg, SubmitMsg, SweepId,
    SweepTaskRef, TaskEventMsg, TaskRef, UsageMsg,
};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, watch, Notify};

pub use crate::core::{task_dir_name, valid_sweep_id, FetchItem, FetchPlan, OUTPUT_WINDOW};

mod files;
mod sweeps;

pub use files::scan_results;
use files::{prepare, read_appended, read_log_range};
pub use hsm_protocol::digest::hash_file;

/// Largest `Output` event payload.
pub const OUTPUT_CHUNK: usize = 64 * 1024;
/// How often a running task's log files are checked for new bytes when nothing else wakes the
/// tailer.
const TAIL_EVERY: Duration = Duration::from_millis(150);
/// How long a restarted agent keeps asking a failing scheduler for a job whose submission the
/// restart cut short (1 s apart, doubling to 60 s), before its tasks are reported lost.
const FIND_FOR: Duration = Duration::from_secs(600);
/// Longest a restarted agent waits for a submit command its previous run left running.
const SUBMIT_WAIT: Duration = Duration::from_secs(120);

pub use hsm_exec::process::TASK_MARK;

/// Handle on the agent's task runner; cheap to clone, shared by every session.
#[derive(Clone)]
pub struct Runner {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<Inner>,
    backend: ProcessBackend,
    /// Tasks whose template asks for a batch scheduler (Slurm/PBS) go here instead.
    scheduler: SchedulerBackend,
    work_dir: PathBuf,
    /// The first ledger position not yet durable, sent whenever it moves (or, without a disk
    /// ledger, whenever events are appended); sessions wait on it.
    appended: Arc<watch::Sender<u64>>,
    /// What the ledger writer last reported durable (given to the core when sessions ask).
    durable: Arc<AtomicU64>,
    /// Whether events wait for the disk ledger before they are sent.
    on_disk: bool,
    /// Keep result files after the coordinator has them (`--keep-results`).
    keep_results: bool,
    /// The core's monotonic clock counts from here.
    clock: Instant,
}

/// The core and what the shell keeps beside it to carry out the core's decisions.
struct Inner {
    core: AgentCore,
    /// The disk ledger every change is also recorded in, when the agent has one.
    disk: Option<Ledger>,
    /// Wakes each running tailer (acknowledged output, process exit), by task id.
    wakes: HashMap<u64, Arc<Notify>>,
    /// Where to answer barriers the core asked for, by token.
    barriers: HashMap<u64, std::sync::mpsc::Sender<()>>,
    /// Tailers the core asked for, to be started outside the lock.
    tails: Vec<(Tail, Arc<Notify>)>,
}

impl Inner {
    /// Carries out what the core decided that needs no IO: its ledger ops into the writer's
    /// channel (in order, see the module notes), wakes for tailers, and tailers to start (their
    /// wake exists from now on, so no wake is lost before they run).
    fn flush(&mut self) {
        for op in self.core.poll_ledger_ops() {
            let Some(disk) = &self.disk else {
                continue;
            };
            match op {
                LedgerOp::Record(op) => disk.record(op),
                LedgerOp::Barrier(token) => {
                    if let Some(durable) = self.barriers.remove(&token) {
                        disk.record(Op::Barrier(durable));
                    }
                }
            }
        }
        for id in self.core.poll_wakes() {
            if let Some(wake) = self.wakes.get(&id) {
                wake.notify_one();
            }
        }
        for tail in self.core.poll_tails() {
            let wake = Arc::new(Notify::new());
            self.wakes.insert(tail.id, Arc::clone(&wake));
            self.tails.push((tail, wake));
        }
    }
}

/// The locked core; what it decided is flushed when the lock is let go.
struct Locked<'a>(MutexGuard<'a, Inner>);

impl std::ops::Deref for Locked<'_> {
    type Target = AgentCore;
    fn deref(&self) -> &AgentCore {
        &self.0.core
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut AgentCore {
        &mut self.0.core
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.0.flush();
    }
}

/// How the runner is set up (`hsm-agent serve` flags).
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    pub slots: u32,
    /// How often Slurm/PBS jobs are checked.
    pub poll_every: Duration,
    /// Where the durable ledger lives; `None`: memory only.
    pub state_dir: Option<PathBuf>,
    /// Keep result files after the coordinator has them.
    pub keep_results: bool,
}

use hsm_protocol::{epoch_ms, now_ms};

impl Runner {
    /// Starts the runner (must be called inside a tokio runtime): `work_dir` must exist. With a
    /// `state_dir`, changes are recorded in its durable ledger and what the ledger held from an
    /// earlier run is taken up again (see the module notes).
    pub fn start(work_dir: &Path, options: RunnerOptions) -> std::io::Result<Runner> {
        let RunnerOptions {
            slots,
            poll_every,
            state_dir,
            keep_results,
        } = options;
        let work_dir = std::fs::canonicalize(work_dir)?;
        let (backend, events) = ProcessBackend::new();
        let (scheduler, scheduler_events) = SchedulerBackend::new(poll_every);
        let appended = Arc::new(watch::channel(0).0);
        let durable = Arc::new(AtomicU64::new(0));
        let (disk, recovered) = match state_dir.as_deref() {
            Some(dir) => {
                let (appended, durable) = (Arc::clone(&appended), Arc::clone(&durable));
                let (ledger, recovered) = Ledger::open(
                    dir,
                    Box::new(move |gen| {
                        durable.fetch_max(gen, Ordering::SeqCst);
                        appended.send_replace(gen);
                    }),
                )
                .map_err(std::io::Error::other)?;
                (Some(ledger), recovered)
            }
            None => (None, ledger::Recovered::default()),
        };
        let runner = Runner {
            shared: Arc::new(Shared {
                state: Mutex::new(Inner {
                    core: AgentCore::new(work_dir.clone(), slots as usize, disk.is_some()),
                    disk: disk.clone(),
                    wakes: HashMap::new(),
                    barriers: HashMap::new(),
                    tails: Vec::new(),
                }),
                backend,
                scheduler,
                work_dir,
                appended,
                durable,
                on_disk: disk.is_some(),
                keep_results,
                clock: Instant::now(),
            }),
        };
        tokio::spawn(runner.clone().process_events(events));
        tokio::spawn(runner.clone().process_events(scheduler_events));
        runner.recover(recovered);
        Ok(runner)
    }

    /// Takes up what the ledger held: queued tasks are queued again, scheduler jobs followed
    /// again, ended tasks finish reporting, finished ones wait for their results to be fetched,
    /// and process tasks that were running are ended and reported lost.
    fn recover(&self, recovered: ledger::Recovered) {
        // No process task of an earlier run of this agent can be followed now (they were not
        // its children): every one still alive is ended, found by the mark in its environment
        // under this work directory. That includes one spawned in the moment before its
        // acceptance reached the ledger, which the ledger cannot name.
        if self.shared.on_disk {
            let prefix = format!("{TASK_MARK}={}/", self.shared.work_dir.display());
            let killed = crate::process::kill_groups_where(|environ| {
                environ.iter().any(|var| var.starts_with(prefix.as_bytes()))
            });
            if killed > 0 {
                tracing::warn!(killed, "ended task processes the previous run left behind");
            }
        }
        if recovered.tasks.is_empty() {
            let mut state = self.lock();
            state.recover(recovered, &mut |_, _, _, _| Vec::new());
            state.date_unseen_sweeps(now_ms());
            return;
        }
        // The output the ledger's unacknowledged `Output` events carried, read back from the
        // logs before the lock is taken.
        let dirs: HashMap<&ledger::Key, &Path> = recovered
            .tasks
            .iter()
            .map(|t| (&t.key, t.dir.as_path()))
            .collect();
        let mut logs: HashMap<(PathBuf, usize, u64, u64), Vec<u8>> = HashMap::new();
        for event in &recovered.events {
            if let ledger::StoredKind::Output {
                stream,
                offset,
                len,
            } = event.kind
            {
                if let Some(dir) = dirs.get(&event.key) {
                    let data = read_log_range(dir, stream, offset, len);
                    logs.insert((dir.to_path_buf(), stream as usize, offset, len), data);
                }
            }
        }
        drop(dirs);
        let now = now_ms();
        let recovery = {
            let mut state = self.lock();
            let recovery = state.recover(recovered, &mut |dir, stream, offset, len| {
                logs.remove(&(dir.to_path_buf(), stream as usize, offset, len))
                    .unwrap_or_default()
            });
            state.date_unseen_sweeps(now);
            recovery
        };
        // Recovered events are durable already.
        self.shared
            .durable
            .fetch_max(self.lock().next_gen(), Ordering::SeqCst);
        self.shared
            .appended
            .send_replace(self.shared.durable.load(Ordering::SeqCst));
        tracing::info!(
            tasks = recovery.tasks,
            events = recovery.events,
            lost = recovery.lost.len(),
            "took up the ledger of the previous run"
        );
        {
            let mut state = self.lock();
            for id in recovery.lost {
                state.handle_backend_event(BackendEvent::NeverRan {
                    id,
                    outcome: OutcomeMsg::Lost,
                    at_ms: now,
                });
            }
        }
        self.notify_appended();
        let adopted = recovery
            .adopt
            .into_iter()
            .map(|(id, element, dir, started, cancel)| {
                (backend_key(id), element, dir, started, cancel)
            })
            .collect();
        self.shared.scheduler.adopt_all(adopted);
        if !recovery.find.is_empty() {
            // Taken before this run submits anything itself: the sbatch/qsub a kill -9 left
            // running may still be creating a job.
            let in_flight = crate::scheduler::submissions_in_flight(&self.shared.work_dir);
            tokio::spawn(self.clone().find_submitted(recovery.find, in_flight));
        }
        self.drive();
    }

    fn lock(&self) -> Locked<'_> {
        // Every critical section leaves the state consistent; a panic elsewhere must not stop
        // the agent from reporting.
        let mut inner = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let mono = u64::try_from(self.shared.clock.elapsed().as_millis()).unwrap_or(u64::MAX);
        inner.core.set_mono_ms(mono);
        Locked(inner)
    }

    /// What the agent has to tell its users now (the heartbeat's `notice`).
    pub fn notice(&self) -> Option<String> {
        self.shared.scheduler.notice()
    }

    /// Processes running now (the heartbeat's `running`).
    pub fn running(&self) -> u32 {
        u32::try_from(self.shared.backend.running() + self.shared.scheduler.active())
            .unwrap_or(u32::MAX)
    }

    /// Attempts the agent holds that have not reported `Exited` yet: queued, running, or running
    /// out their output. The coordinator re-attaches these after a reconnect instead of
    /// re-running them.
    pub fn held(&self) -> Vec<SweepTaskRef> {
        self.lock().held()
    }

    /// Whether coordinator `who` (its fingerprint) may address `sweep` (see
    /// [`AgentCore::sweep_access`]).
    pub fn sweep_access(&self, sweep: &SweepId, who: &str, submit: bool) -> Decision {
        self.lock().sweep_access(sweep, who, submit)
    }

    /// Attempts of sweeps `who` owns that have not reported `Exited` yet (see [`Runner::held`]).
    pub fn held_by(&self, who: &str) -> Vec<SweepTaskRef> {
        self.lock().held_by(who)
    }

    /// A coordinator session sent a `Submit` or `Attach` for `sweep`: while it is connected,
    /// that sweep's queued attempts start as slots free up.
    fn claim(&self, sweep: &SweepId) {
        self.lock().handle_connect(sweep, now_ms());
    }

    /// A session that claimed `sweep` ended (see [`AgentCore::handle_disconnect`]).
    fn unclaim(&self, sweep: &SweepId) {
        self.lock().handle_disconnect(sweep, now_ms());
    }

    /// Starts the unconfirmed attempts of every sweep no coordinator has claimed for `after`
    /// (`--on-coordinator-lost keep-running`: they run, and report when a coordinator comes).
    /// Returns how many were released.
    pub fn release_unclaimed(&self, after: Duration) -> usize {
        let released = {
            let mut state = self.lock();
            let mono = self.mono_ms();
            state.poll_timeout(u64::try_from(after.as_millis()).unwrap_or(u64::MAX), mono)
        };
        if released > 0 {
            tracing::warn!(
                tasks = released,
                ?after,
                "no coordinator confirmed queued tasks: starting them (--on-coordinator-lost keep-running)"
            );
            self.drive();
        }
        released
    }

    /// Queues the tasks of a submission and starts what fits in the free slots. Returns one
    /// message per refused task (or one for the whole submission); the others are accepted.
    pub fn submit(&self, msg: SubmitMsg) -> Vec<String> {
        let refused = self.lock().handle_submit(msg, now_ms());
        self.notify_appended();
        self.drive();
        refused
    }

    /// Carries out what the core decided: stops what it asks to stop, starts the tailers it
    /// asks for, and prepares and launches what it starts (scheduler tasks at once, process
    /// tasks while slots are free), until it asks for nothing more.
    fn drive(&self) {
        loop {
            let (kills, launches, tails) = {
                let mut state = self.lock();
                let kills = state.poll_kills();
                let launches = state.poll_launches();
                state.0.flush();
                let tails = std::mem::take(&mut state.0.tails);
                (kills, launches, tails)
            };
            if kills.is_empty() && launches.is_empty() && tails.is_empty() {
                return;
            }
            for kill in kills {
                if kill.hpc {
                    self.shared.scheduler.cancel(backend_key(kill.id));
                } else {
                    self.shared.backend.cancel(backend_key(kill.id));
                }
            }
            for (tail, wake) in tails {
                tokio::spawn(self.clone().tail(tail, wake));
            }
            for launch in launches {
                self.launch(launch);
            }
        }
    }

    fn launch(&self, launch: Launch) {
        let Launch {
            id,
            task,
            dir,
            template,
            args,
            env,
        } = launch;
        if let Some(hpc) = template.hpc.clone() {
            // A per-task time limit bounds the job's walltime where it is shorter (or there is
            // none): `hpc::pack::with_task_limit`, when the job is submitted.
            match prepare(id, task.attempt.0, &dir, &template, args, env) {
                Ok(mut launch) => {
                    // Not this agent's process: the scheduler runs it, and a restarted agent
                    // follows the job again instead of ending marked processes.
                    launch.env.retain(|(k, _)| k != TASK_MARK);
                    let scripts_dir = dir
                        .parent()
                        .and_then(Path::parent)
                        .map(|sweep| sweep.join("scripts").join("job_scripts"))
                        .unwrap_or_else(|| dir.join("job_scripts"));
                    self.shared.scheduler.launch(HpcLaunch {
                        launch,
                        hpc,
                        task_dir: dir,
                        scripts_dir,
                    });
                }
                Err(message) => {
                    tracing::warn!(%message, "task could not be prepared");
                    self.on_exited(id, Outcome::SpawnFailed(message), SystemTime::now(), None);
                }
            }
            return;
        }
        match prepare(id, task.attempt.0, &dir, &template, args, env) {
            Ok(launch) => {
                tracing::debug!(
                    id,
                    index = task.index.0,
                    attempt = task.attempt.0,
                    "launching"
                );
                self.shared.backend.launch(launch);
            }
            Err(message) => {
                tracing::warn!(%message, "task could not be prepared");
                self.on_exited(id, Outcome::SpawnFailed(message), SystemTime::now(), None);
            }
        }
    }

    async fn process_events(self, mut events: mpsc::UnboundedReceiver<ProcessEvent>) {
        while let Some(event) = events.recv().await {
            match event {
                ProcessEvent::Submitting {
                    elements,
                    scheduler,
                    name,
                    packed,
                    recorded,
                } => self.on_submitting(elements, scheduler, name, packed, recorded),
                ProcessEvent::Submitted {
                    key,
                    element,
                    script,
                } => self.on_submitted(key.index, element, script),
                ProcessEvent::Started { key, pid, at } => {
                    self.lock().handle_backend_event(BackendEvent::Started {
                        id: key.index,
                        pid,
                        at_ms: epoch_ms(at),
                    });
                    self.notify_appended();
                    self.drive();
                }
                ProcessEvent::Exited {
                    key,
                    outcome,
                    at,
                    usage,
                } => {
                    self.on_exited(key.index, outcome, at, usage);
                    self.drive();
                }
            }
        }
    }

    /// Tasks about to go out to the scheduler under job name `name`: recorded before
    /// `sbatch`/`qsub` runs (`recorded` answered once durable), so that a restart in between
    /// finds the job by its name instead of submitting the tasks a second time.
    fn on_submitting(
        &self,
        elements: Vec<(TaskKey, Option<u32>)>,
        scheduler: Scheduler,
        name: String,
        packed: bool,
        recorded: tokio::sync::oneshot::Sender<()>,
    ) {
        let elements = elements.into_iter().map(|(k, i)| (k.index, i)).collect();
        let mut state = self.lock();
        // Without a disk ledger there is nothing to remember it in: dropping `recorded` lets
        // the submission go ahead.
        let Some(token) = state.handle_submitting(elements, scheduler, name, packed) else {
            return;
        };
        let (durable, wait) = std::sync::mpsc::channel();
        state.0.barriers.insert(token, durable);
        drop(state);
        tokio::task::spawn_blocking(move || {
            let _ = wait.recv();
            let _ = recorded.send(());
        });
    }

    /// Tasks whose submission was under way when the previous run of this agent stopped. The
    /// scheduler is asked for a job of that name: found, it is followed like any other; not
    /// found, the task never went out, or its job ran and is forgotten already, in which case the
    /// wrapper's exit record says how it ended. Only with neither is the attempt `Lost` (and
    /// run again by the coordinator).
    async fn find_submitted(self, pending: Vec<Unsubmitted>, in_flight: Vec<u32>) {
        // A submit command the previous run left behind decides whether its job exists when it
        // ends; until then "no such job" proves nothing.
        let since = std::time::Instant::now();
        while in_flight
            .iter()
            .any(|&pid| crate::scheduler::submitting(pid, &self.shared.work_dir))
            && since.elapsed() < SUBMIT_WAIT
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut by_job: HashMap<(Scheduler, String), Vec<Unsubmitted>> = HashMap::new();
        for task in pending {
            let group = (task.1.scheduler, task.1.name.clone());
            by_job.entry(group).or_default().push(task);
        }
        for ((scheduler, name), tasks) in by_job {
            // A failing scheduler command proves nothing either way: asked again, with backoff
            // (for all names together at most FIND_FOR).
            let mut delay = Duration::from_secs(1);
            let found = loop {
                match self.shared.scheduler.find_job_named(scheduler, &name).await {
                    Err(e) if since.elapsed() < FIND_FOR => {
                        tracing::warn!(job_name = %name, error = %e, "cannot look up a job by name; asking again");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(60));
                    }
                    other => break other,
                }
            };
            match found {
                Ok(Some(job)) => {
                    tracing::info!(job = %job, job_name = %name, tasks = tasks.len(), "following a job whose submission the previous run did not see through");
                    let mut adopted = Vec::with_capacity(tasks.len());
                    for (id, pending, dir) in tasks {
                        let element = ElementRef {
                            scheduler,
                            job: job.clone(),
                            index: pending.index,
                            packed: pending.packed,
                        };
                        self.on_submitted(id, element.clone(), None);
                        // A cancel that arrives meanwhile waits in the scheduler backend for the
                        // element (`early_cancels`); one from before is passed here.
                        let cancel = self.cancel_requested(id);
                        adopted.push((backend_key(id), element, dir, false, cancel));
                    }
                    self.shared.scheduler.adopt_all(adopted);
                }
                Ok(None) => {
                    for (id, _, dir) in tasks {
                        self.settle_unsubmitted(id, &dir);
                    }
                }
                Err(e) => {
                    tracing::error!(job_name = %name, error = %e, "cannot tell whether these tasks were submitted; reporting them lost (if a job of this name runs, `scancel --name` / `qdel` ends it)");
                    for (id, _, dir) in tasks {
                        self.settle_unsubmitted(id, &dir);
                    }
                }
            }
        }
    }

    fn cancel_requested(&self, id: u64) -> bool {
        self.lock().cancel_requested(id)
    }

    /// A task of a submission the restart cut short whose job the scheduler does not show: the
    /// wrapper's exit record settles it if the job ran; otherwise it never went out, and ends
    /// cancelled if that was asked for meanwhile, else `Lost` (run again by the coordinator).
    fn settle_unsubmitted(&self, id: u64, dir: &Path) {
        let cancel = self.cancel_requested(id);
        if self
            .shared
            .scheduler
            .settle_from_records(backend_key(id), dir, cancel)
        {
            return;
        }
        self.shared.scheduler.forget(backend_key(id));
        let outcome = if cancel {
            OutcomeMsg::Cancelled
        } else {
            OutcomeMsg::Lost
        };
        self.lock().handle_backend_event(BackendEvent::NeverRan {
            id,
            outcome,
            at_ms: now_ms(),
        });
        self.notify_appended();
        self.drive();
    }

    /// A scheduler task went into a job: the coordinator learns the job id and, once per job,
    /// gets the script for its `scripts/job_scripts/`.
    fn on_submitted(&self, id: u64, element: ElementRef, script: Option<(String, String)>) {
        self.lock().handle_backend_event(BackendEvent::Submitted {
            id,
            element,
            script,
        });
        self.notify_appended();
    }

    /// The process ended (or never started): frees the slot; a started task's tailer reports
    /// the exit once the output is drained, a never-started one is reported here. The caller
    /// drives what the freed slot lets start.
    fn on_exited(&self, id: u64, outcome: Outcome, at: SystemTime, usage: Option<UsageMsg>) {
        self.lock().handle_backend_event(BackendEvent::Exited {
            id,
            outcome: outcome.to_msg(),
            at_ms: epoch_ms(at),
            usage,
        });
        self.notify_appended();
    }

    /// Follows a started task's log files into `Output` events (within the output credit the
    /// core gives), then has the core report `Exited` and the `ResultOffer`.
    async fn tail(self, tail: Tail, wake: Arc<Notify>) {
        let Tail { id, dir, from } = tail;
        self.tail_until_done(id, &wake, &dir, from).await;
        let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.wakes.get(&id).is_some_and(|w| Arc::ptr_eq(w, &wake)) {
            state.wakes.remove(&id);
        }
    }

    async fn tail_until_done(&self, id: u64, wake: &Notify, dir: &Path, from: [u64; 2]) {
        let (stdout, stderr) = (dir.join("stdout.log"), dir.join("stderr.log"));
        let mut positions = from;
        let mut files: [Option<std::fs::File>; 2] = [None, None];
        // A task that just started has printed nothing yet: its first read waits for its exit
        // or the first tick. Each read is a round trip to the blocking pool, and a short task
        // then needs one (output and results together) instead of three.
        let mut first = from == [0, 0];
        loop {
            // Read the exit flag before reading the files: end-of-file seen after an exit is
            // the real end of the output.
            let Some((credit, exited)) = self.lock().tail_state(id) else {
                return;
            };
            if std::mem::take(&mut first) && !exited {
                tokio::select! {
                    () = wake.notified() => {}
                    () = tokio::time::sleep(TAIL_EVERY) => {}
                }
                continue;
            }
            if credit > 0 {
                let paths = [stdout.clone(), stderr.clone()];
                let before = positions;
                let mut held = std::mem::take(&mut files);
                let task_dir = dir.to_path_buf();
                let read = tokio::task::spawn_blocking(move || {
                    read_appended(&paths, &mut held, &mut positions, credit).map(|chunks| {
                        let got: usize = chunks.iter().map(|(_, c)| c.len()).sum();
                        // After the exit and at the end of the output: the results are final
                        // too, so they are scanned in the same trip.
                        let scanned = (exited && got < credit).then(|| scan_results(&task_dir));
                        (chunks, positions, held, scanned)
                    })
                })
                .await;
                let (chunks, at_end, scanned) = match read {
                    Ok(Ok((chunks, new_positions, held, scanned))) => {
                        positions = new_positions;
                        files = held;
                        let got: usize = chunks.iter().map(|(_, c)| c.len()).sum();
                        (chunks, got < credit, scanned)
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(id, error = %e, "cannot read task output; giving up on it");
                        (Vec::new(), true, None)
                    }
                    Err(e) => {
                        tracing::error!(id, error = %e, "output reader failed");
                        (Vec::new(), true, None)
                    }
                };
                if !chunks.is_empty() {
                    let mut at = before;
                    let chunks = chunks
                        .into_iter()
                        .map(|(stream, data)| {
                            let i = stream as usize;
                            let offset = at[i];
                            at[i] += data.len() as u64;
                            (stream, data, offset)
                        })
                        .collect();
                    self.lock()
                        .handle_backend_event(BackendEvent::Output { id, chunks });
                    self.notify_appended();
                }
                if exited && at_end {
                    self.finish_started(id, scanned).await;
                    return;
                }
                if !at_end {
                    // More may be waiting and the window still has room: go again right away.
                    continue;
                }
            }
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(TAIL_EVERY) => {}
            }
        }
    }

    /// `scanned`: the task directory's results, when the last read already scanned them.
    async fn finish_started(&self, id: u64, scanned: Option<Vec<FileOffer>>) {
        let Some(dir) = self
            .lock()
            .handle_backend_event(BackendEvent::Drained { id })
        else {
            return;
        };
        self.notify_appended();
        let compact = self.lock().is_compact(id);
        let scan_dir = dir.clone();
        let files = match scanned {
            Some(files) => files,
            None => tokio::task::spawn_blocking(move || scan_results(&scan_dir))
                .await
                .unwrap_or_else(|e| {
                    tracing::error!(id, error = %e, "scanning results failed");
                    Vec::new()
                }),
        };
        // Nothing to deliver: a compact sweep's silent task leaves nothing here (with results,
        // this waits for their delivery, `results_done`).
        if compact && files.is_empty() {
            files::tidy(&dir);
        }
        self.lock()
            .handle_backend_event(BackendEvent::ResultsScanned { id, files });
        self.notify_appended();
        // A newer attempt of the task may have been waiting for the directory.
        self.drive();
    }

    /// Tells sessions about new events. With a disk ledger the writer does this once they are
    /// durable; without one they are sendable at once.
    fn notify_appended(&self) {
        if self.shared.on_disk {
            return;
        }
        let next = self.lock().next_gen();
        self.shared.durable.store(next, Ordering::SeqCst);
        self.shared.appended.send_replace(next);
    }

    /// Wakes every session's writer without new events (one that must replay, see
    /// `server::Sweeps`).
    pub fn wake_sessions(&self) {
        self.shared.appended.send_modify(|_| {});
    }

    /// Waits until every change so far is in the disk ledger (no-op without one).
    pub fn flush_ledger(&self) {
        let disk = self.lock().0.disk.clone();
        if let Some(disk) = disk {
            disk.flush();
        }
    }

    /// Stops tasks: running ones get SIGTERM (then SIGKILL after the grace), queued ones never
    /// start and report `Exited{Cancelled}`. Unknown or finished tasks are ignored. With
    /// `unstarted_only`, only queued ones (and scheduler jobs, which may still be pending) stop.
    pub fn cancel(&self, msg: &CancelMsg) {
        self.lock().handle_cancel(msg, now_ms());
        self.notify_appended();
        self.drive();
    }

    /// A restarted coordinator takes up these attempts. Returns the ones not held here (see
    /// [`AgentCore::handle_attach`]).
    pub fn attach(&self, msg: &hsm_protocol::AttachMsg) -> Vec<TaskRef> {
        let unknown = self.lock().handle_attach(msg, now_ms());
        self.notify_appended();
        self.drive();
        unknown
    }

    /// Forgets acknowledged events; output acknowledgements let paused tailers read on.
    pub fn ack(&self, acks: &[EventRef]) {
        self.lock().handle_ack(acks);
    }

    /// The files a `FetchResults` asks for, checked against the attempt's offer.
    pub fn fetch_plan(&self, msg: &FetchMsg) -> Result<FetchPlan, String> {
        self.lock().fetch_plan(msg)
    }

    /// Stops every task of every sweep (`--on-coordinator-lost cancel`): running ones get SIGTERM
    /// then SIGKILL after their grace, queued ones never start; all end `cancelled` and report so
    /// when a coordinator comes back.
    pub fn cancel_everything(&self) -> usize {
        let sweeps = self.lock().live_sweeps();
        let n = sweeps.len();
        for sweep_id in sweeps {
            self.cancel(&CancelMsg {
                sweep_id,
                tasks: Vec::new(),
                unstarted_only: false,
            });
        }
        n
    }

    /// The coordinator holds the attempt's files: delete them here (the logs stay), unless the
    /// agent keeps results. In a compact sweep the logs stay only when something was written to
    /// them, and the task directory only when something is left in it.
    pub fn results_done(&self, msg: &ResultsDoneMsg) {
        let Some((dir, compact)) = self.lock().handle_results_done(msg) else {
            return;
        };
        if self.shared.keep_results {
            return;
        }
        let results = dir.join("results");
        if let Err(e) = std::fs::remove_dir_all(&results) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %results.display(), error = %e, "cannot delete results");
            }
        }
        if compact {
            files::tidy(&dir);
        }
    }

    /// A receiver that changes whenever events are appended.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.appended.subscribe()
    }

    /// Unacknowledged events of the sweeps coordinator `who` owns, from ledger position
    /// `cursor` on (see [`AgentCore::poll_events`]).
    pub fn events_from(
        &self,
        cursor: u64,
        max_events: usize,
        max_output: usize,
        who: &str,
    ) -> (Vec<TaskEventMsg>, u64) {
        let mut state = self.lock();
        state.handle_ledger_durable(self.shared.durable.load(Ordering::SeqCst));
        state.poll_events(cursor, max_events, max_output, who)
    }

    /// Whether at least `threshold` output bytes (or many events) wait from `cursor` on; a
    /// session then sends at once instead of waiting to batch more.
    pub fn pending_is_large(&self, cursor: u64, threshold: usize, who: &str) -> bool {
        let mut state = self.lock();
        state.handle_ledger_durable(self.shared.durable.load(Ordering::SeqCst));
        state.pending_is_large(cursor, threshold, who)
    }

    /// The core's monotonic clock now.
    fn mono_ms(&self) -> u64 {
        u64::try_from(self.shared.clock.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// The sweeps one coordinator session has claimed (by sending their `Submit` or `Attach`);
/// dropped when the session ends, which unclaims them.
pub struct SessionClaims {
    runner: Runner,
    sweeps: Mutex<HashSet<SweepId>>,
}

impl SessionClaims {
    pub fn new(runner: Runner) -> Self {
        SessionClaims {
            runner,
            sweeps: Mutex::new(HashSet::new()),
        }
    }

    pub fn claim(&self, sweep: &SweepId) {
        let mut sweeps = self.sweeps.lock().unwrap_or_else(|e| e.into_inner());
        if sweeps.insert(sweep.clone()) {
            self.runner.claim(sweep);
        }
    }
}

impl Drop for SessionClaims {
    fn drop(&mut self) {
        let sweeps = std::mem::take(self.sweeps.get_mut().unwrap_or_else(|e| e.into_inner()));
        for sweep in sweeps {
            self.runner.unclaim(&sweep);
        }
    }
}

fn backend_key(id: u64) -> TaskKey {
    TaskKey {
        index: id,
        attempt: 0,
    }
}
