//! Submitting: launches gathered into job arrays (or single jobs) per group of equal resources,
//! each recorded by job name before `sbatch`/`qsub` runs, their scripts and the wrapper's inputs
//! written, and the elements announced with their job ids.

use super::*;

/// Why a submission did not go in.
pub(super) enum NotSubmitted {
    /// Refused for a limit on queued jobs (its name): the tasks wait for room.
    Limit(String),
    /// Anything else (after the retries): the tasks fail to start.
    Failed(String),
}

impl SchedulerBackend {
    pub(super) async fn submit(&self, mut launches: Vec<HpcLaunch>) {
        // Caps: the user's `hpc.max_jobs`, the limit `sacctmgr` shows on a Slurm cluster with
        // accounting, and what a refusal for a limit taught. What does not fit waits in
        // `pending` (in order) for jobs to end.
        let mut max_jobs = launches
            .iter()
            .filter_map(|l| l.hpc.resources.max_jobs)
            .min();
        // The cluster's own limit, when it is the one that binds (said to the user once).
        let mut cluster_cap = None;
        if let Some(first) = launches.first() {
            if let Ok(Scheduler::Slurm) = self.scheduler_for(first.hpc.scheduler).await {
                let qos = first.hpc.resources.qos.clone();
                let account = first.hpc.resources.account.clone();
                if let Some(cap) = self.sacctmgr_cap(qos.as_deref(), account.as_deref()).await {
                    if max_jobs.is_none_or(|m| cap < m) {
                        cluster_cap = Some(cap);
                    }
                    max_jobs = Some(max_jobs.map_or(cap, |m| m.min(cap)));
                }
            }
        }
        // Caps count jobs: a packed job holds several tasks.
        let per_job = launches
            .iter()
            .map(|l| Pack::of(&l.hpc.resources).map_or(1, |p| p.tasks as usize))
            .min()
            .unwrap_or(1);
        let (room, cluster_binds) = {
            let mut state = self.lock();
            // Elements just decided that Slurm still holds count too, up to their deadline.
            let now = tokio::time::Instant::now();
            state.lingering.retain(|(.., until)| now < *until);
            let held = state.held_jobs();
            match state.hold_until {
                Some(until) if tokio::time::Instant::now() < until => (Some(0), false),
                _ => (
                    caps::room(max_jobs, state.learned_cap, held),
                    // The cluster's limit, not a cap learned from refusals, is what holds back.
                    cluster_cap.is_some()
                        && state
                            .learned_cap
                            .is_none_or(|l| max_jobs.is_some_and(|m| l >= m as usize)),
                ),
            }
        };
        let room = room.map(|jobs| jobs.saturating_mul(per_job));
        if let Some(room) = room.filter(|&room| room < launches.len()) {
            let later = launches.split_off(room);
            if let Some(cap) = cluster_cap.filter(|_| cluster_binds) {
                let mut state = self.lock();
                if state.limits_said.insert("sacctmgr".into()) {
                    let notice = format!(
                        "the cluster lets this user have {cap} jobs queued or running \
                         (sacctmgr): the tasks go in as jobs end, {cap} at a time"
                    );
                    tracing::info!("{notice}");
                    state.limit_notice = Some(notice);
                }
            }
            self.hold_back(later);
        }
        if launches.is_empty() {
            return;
        }
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
        let mut groups = groups.into_iter();
        while let Some(group) = groups.next() {
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
                let rerun = self.lock().reruns.get(&launch.launch.key).map(|r| r.0);
                match write_task_inputs(&launch, rerun) {
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
                // MaxArraySize counts elements; a packed element takes several tasks.
                let per = Pack::of(&resources).map_or(1, |p| p.tasks);
                let ranges = script::chunk_ranges(ready.len(), max.saturating_mul(per));
                let mut rest = ready;
                let mut chunks = Vec::new();
                for range in ranges.iter().rev() {
                    chunks.push(rest.split_off(range.start));
                }
                chunks.reverse();
                let mut chunks = chunks.into_iter();
                while let Some(chunk) = chunks.next() {
                    if let Some(refused) = self.submit_array(scheduler, &resources, chunk).await {
                        // Refused for a limit: nothing more goes to the scheduler now. What
                        // was refused waits first, then the rest, in order.
                        let rest = chunks.flatten().chain(groups.flatten());
                        self.hold_back(refused.into_iter().chain(rest).collect());
                        return;
                    }
                }
            } else {
                let mut ready = ready.into_iter();
                while let Some(launch) = ready.next() {
                    if let Some(refused) = self.submit_single(scheduler, &resources, launch).await {
                        let rest = ready.chain(groups.flatten());
                        self.hold_back(refused.into_iter().chain(rest).collect());
                        return;
                    }
                }
            }
        }
    }

    pub(super) fn next_chunk_dir(&self, scripts_dir: &Path) -> PathBuf {
        let mut state = self.lock();
        state.next_chunk += 1;
        let stamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        scripts_dir.join(format!("job_{stamp}_{:04}", state.next_chunk))
    }

    /// Submits one array; the launches back when the scheduler refused them for a limit on
    /// queued jobs (the caller holds them back with whatever else was to go now).
    pub(super) async fn submit_array(
        &self,
        scheduler: Scheduler,
        resources: &HpcResources,
        chunk: Vec<HpcLaunch>,
    ) -> Option<Vec<HpcLaunch>> {
        let chunk_dir = self.next_chunk_dir(&chunk[0].scripts_dir);
        let name = chunk_job_name(&chunk[0].scripts_dir, &chunk_dir);
        let dirs: Vec<PathBuf> = chunk.iter().map(|l| l.task_dir.clone()).collect();
        let pack = Pack::of(resources);
        let element_of = |i: usize| pack.map_or(i as u32, |p| p.element_of(i));
        let prepared = (|| -> Result<(PathBuf, String), String> {
            std::fs::create_dir_all(&chunk_dir)
                .map_err(|e| format!("cannot create {}: {e}", chunk_dir.display()))?;
            let index = script::tasks_index(&dirs).map_err(|e| e.to_string())?;
            write_file(&chunk_dir.join(script::TASKS_INDEX_FILE), &index)?;
            write_file(
                &chunk_dir.join(script::WRAPPER_FILE),
                wrapper::WRAPPER_SCRIPT.as_bytes(),
            )?;
            if pack.is_some() {
                write_file(
                    &chunk_dir.join(pack::PACK_FILE),
                    pack::PACK_SCRIPT.as_bytes(),
                )?;
            }
            let spec = ArrayJobSpec {
                job_name: name.clone(),
                chunk_dir: chunk_dir.clone(),
                count: pack.map_or(chunk.len(), |p| p.elements(chunk.len())) as u32,
                throttle: resources.array_throttle,
                resources: pack::with_task_limit(resources, task_limit(&chunk), grace(&chunk)),
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
                return None;
            }
        };
        self.announce(
            scheduler,
            &name,
            keys.iter()
                .enumerate()
                .map(|(i, (key, _))| (*key, Some(element_of(i))))
                .collect(),
            pack.is_some(),
        )
        .await;
        match self
            .submit_script(scheduler, &script_path, &chunk_dir, &name)
            .await
        {
            Ok(job) => {
                let mut script = Some((script_name(&chunk_dir, &job), script_text));
                let tasks = chunk.len();
                let mut state = self.lock();
                for (i, ((key, task_dir), launch)) in keys.into_iter().zip(chunk).enumerate() {
                    let restarts = state.reruns.remove(&key);
                    let _ = self.inner.events.send(ProcessEvent::Submitted {
                        key,
                        element: ElementRef {
                            scheduler,
                            job: job.clone(),
                            index: Some(element_of(i)),
                            packed: pack.is_some(),
                        },
                        script: script.take(),
                    });
                    state.insert_element(
                        key,
                        Element {
                            scheduler,
                            job: job.clone(),
                            index: Some(element_of(i)),
                            packed: pack.is_some(),
                            task_dir,
                            started: false,
                            cancel_requested: false,
                            unaccounted_polls: 0,
                            restarts: restarts.map_or(0, |r| r.0),
                            requeued: false,
                            start_reported: restarts.is_some_and(|r| r.1),
                            launch: Some(Arc::new(launch)),
                        },
                    );
                }
                drop(state);
                tracing::info!(job = %job, tasks, tasks_per_job = pack.map_or(1, |p| p.tasks), "job array submitted");
                self.submitted();
                None
            }
            Err(NotSubmitted::Limit(limit)) => {
                let _ = std::fs::remove_dir_all(&chunk_dir);
                self.limited(&limit, submit_command(scheduler), chunk)
            }
            Err(NotSubmitted::Failed(message)) => {
                for (key, _) in keys {
                    self.exited(key, Outcome::SpawnFailed(message.clone()));
                }
                None
            }
        }
    }

    /// Puts `launches` back at the head of the queue of launches (they came before the ones
    /// there), to be submitted when there is room.
    pub(super) fn hold_back(&self, launches: Vec<HpcLaunch>) {
        let mut state = self.lock();
        // A cancel that came while they were being submitted ends them here, unsubmitted.
        let (cancelled, kept): (Vec<HpcLaunch>, Vec<HpcLaunch>) = launches
            .into_iter()
            .partition(|l| state.early_cancels.contains(&l.launch.key));
        let rest = std::mem::take(&mut state.pending);
        state.pending = kept;
        state.pending.extend(rest);
        drop(state);
        for launch in cancelled {
            self.exited(launch.launch.key, Outcome::Cancelled);
        }
    }

    /// A submission went in: refusals stop counting, and a cap learned from them grows by one
    /// when it was reached (the limit may be higher than what the queue held at a refusal, or
    /// the user's other jobs that filled it may be gone; a refusal teaches it again).
    pub(super) fn submitted(&self) {
        let mut state = self.lock();
        state.limit_wait = None;
        state.refused_with_none_held = 0;
        let held = state.held_jobs();
        if state.pending.is_empty() {
            state.limit_notice = None;
        }
        if let Some(cap) = state.learned_cap.filter(|&cap| held >= cap) {
            state.learned_cap = Some(cap + 1);
        }
    }

    /// `command` refused `launches` for the scheduler's `limit` on queued jobs: not a failure.
    /// They are given back to wait; the cap learned from the refusal keeps later submissions
    /// under the limit, and none goes out for a while (doubling while refusals go on). Said
    /// once per limit. `None` (the launches failed) once the scheduler has refused
    /// [`LIMIT_GIVE_UP`] times in a row with none of our jobs queued: then the limit is not
    /// one that jobs ending will make room under (a quota of zero, another user's jobs).
    fn limited(
        &self,
        limit: &str,
        command: &str,
        launches: Vec<HpcLaunch>,
    ) -> Option<Vec<HpcLaunch>> {
        // In jobs: a packed job holds several of the launches.
        let tried = launches
            .first()
            .and_then(|l| Pack::of(&l.hpc.resources))
            .map_or(launches.len(), |p| p.elements(launches.len()));
        let (held, cap, wait, first, give_up) = {
            let mut state = self.lock();
            let held = state.held_jobs();
            let cap = caps::learned_after_refusal(held, tried, state.learned_cap);
            state.learned_cap = Some(cap);
            let wait = state
                .limit_wait
                .map_or(LIMIT_WAIT_FIRST, |w| (w * 2).min(LIMIT_WAIT_MAX))
                .max(LIMIT_WAIT_FIRST);
            state.limit_wait = Some(wait);
            state.hold_until = Some(tokio::time::Instant::now() + wait);
            if held == 0 {
                state.refused_with_none_held += 1;
            }
            let give_up = state.refused_with_none_held >= LIMIT_GIVE_UP;
            let first = state.limits_said.insert(limit.to_string());
            (held, cap, wait, first, give_up)
        };
        if give_up {
            let message = format!(
                "{command} refused the job {LIMIT_GIVE_UP} times in a row for the cluster's limit \
                 {limit} while none of this sweep's jobs were queued: the limit leaves no room \
                 (ask the cluster's administrators, or check `sacctmgr show assoc user=$USER`)"
            );
            tracing::warn!("{message}");
            for launch in launches {
                self.exited(launch.launch.key, Outcome::SpawnFailed(message.clone()));
            }
            return None;
        }
        if first {
            let notice = format!(
                "{command} refused {tried} jobs for the cluster's limit {limit} with {held} of \
                 ours queued or running: the tasks wait and go in as jobs end, at most {cap} \
                 at a time in the queue (set hpc.max_jobs to the limit to use all of it)"
            );
            tracing::warn!("{notice}");
            self.lock().limit_notice = Some(notice);
        } else {
            tracing::info!(%limit, tried, held, cap, wait_s = wait.as_secs(), "submission refused for a limit again; waiting");
        }
        Some(launches)
    }

    /// Submits one task as a job of its own; the launch back when refused for a limit (as
    /// `submit_array`).
    pub(super) async fn submit_single(
        &self,
        scheduler: Scheduler,
        resources: &HpcResources,
        launch: HpcLaunch,
    ) -> Option<Vec<HpcLaunch>> {
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
                resources: pack::with_task_limit(
                    resources,
                    task_limit(std::slice::from_ref(&launch)),
                    grace(std::slice::from_ref(&launch)),
                ),
                scheduler_output: None,
            };
            let text = script::single_job_script(scheduler, &spec).map_err(|e| e.to_string())?;
            let path = chunk_dir.join("job.sh");
            write_file(&path, text.as_bytes())?;
            Ok((path, text))
        })();
        let result = match prepared {
            Ok((path, text)) => {
                self.announce(scheduler, &name, vec![(key, None)], false)
                    .await;
                self.submit_script(scheduler, &path, &chunk_dir, &name)
                    .await
                    .map(|job| (job, text))
            }
            Err(message) => Err(NotSubmitted::Failed(message)),
        };
        match result {
            Ok((job, text)) => {
                let _ = self.inner.events.send(ProcessEvent::Submitted {
                    key,
                    element: ElementRef {
                        scheduler,
                        job: job.clone(),
                        index: None,
                        packed: false,
                    },
                    script: Some((script_name(&chunk_dir, &job), text)),
                });
                let mut state = self.lock();
                let restarts = state.reruns.remove(&key);
                state.insert_element(
                    key,
                    Element {
                        scheduler,
                        job,
                        index: None,
                        packed: false,
                        task_dir: launch.task_dir.clone(),
                        started: false,
                        cancel_requested: false,
                        unaccounted_polls: 0,
                        restarts: restarts.map_or(0, |r| r.0),
                        requeued: false,
                        start_reported: restarts.is_some_and(|r| r.1),
                        launch: Some(Arc::new(launch)),
                    },
                );
                drop(state);
                self.submitted();
                None
            }
            Err(NotSubmitted::Limit(limit)) => {
                let _ = std::fs::remove_dir_all(&chunk_dir);
                self.limited(&limit, submit_command(scheduler), vec![launch])
            }
            Err(NotSubmitted::Failed(message)) => {
                self.exited(key, Outcome::SpawnFailed(message));
                None
            }
        }
    }

    /// Tells the runner which tasks go out next under job name `name` and waits until it has
    /// recorded that: an agent killed while `sbatch`/`qsub` runs (the job accepted, its id not
    /// yet read) then finds the job by its name instead of submitting the tasks again. Without
    /// a ledger the event is dropped unanswered, which lets the submission go ahead as well.
    pub(super) async fn announce(
        &self,
        scheduler: Scheduler,
        name: &str,
        mut elements: Vec<(TaskKey, Option<u32>)>,
        packed: bool,
    ) {
        // A task going out again after a preemption keeps its running attempt's record (the
        // element it ran in) until the new job is known: recorded as a submission under way it
        // would be taken up after a restart as one that never started.
        {
            let state = self.lock();
            elements.retain(|(key, _)| !state.reruns.contains_key(key));
        }
        if elements.is_empty() {
            return;
        }
        let (recorded, done) = tokio::sync::oneshot::channel();
        let sent = self.inner.events.send(ProcessEvent::Submitting {
            elements,
            scheduler,
            name: name.to_string(),
            packed,
            recorded,
        });
        if sent.is_ok() {
            let _ = done.await;
        }
    }

    /// `sbatch`/`qsub` with retries; the job id on success. Before a retry the job is looked
    /// up by its `name`: a command that timed out or failed may have submitted it all the same.
    pub(super) async fn submit_script(
        &self,
        scheduler: Scheduler,
        script_path: &Path,
        dir: &Path,
        name: &str,
    ) -> Result<String, NotSubmitted> {
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
                Scheduler::Sge => run("qsub", &["-terse", &script_text], Some(dir)).await,
                Scheduler::PbsPro | Scheduler::Torque => {
                    run("qsub", &[&script_text], Some(dir)).await
                }
            };
            match out {
                Ok(out) if out.ok => {
                    let parsed = match scheduler {
                        Scheduler::Slurm => parse::parse_sbatch(&out.stdout)
                            .map(|s| s.job_id)
                            .map_err(|e| e.to_string()),
                        Scheduler::Sge => sge::parse_qsub_terse(&out.stdout),
                        Scheduler::PbsPro | Scheduler::Torque => parse::parse_qsub(&out.stdout)
                            .map(|s| s.job_id)
                            .map_err(|e| e.to_string()),
                    };
                    match parsed {
                        Ok(job_id) => return Ok(job_id),
                        Err(e) => {
                            // Submitted, but the id is unreadable: retrying would submit twice.
                            return Err(NotSubmitted::Failed(format!(
                                "submitted {script_text} but could not read the job id: {e}"
                            )));
                        }
                    }
                }
                Ok(out) => {
                    // A limit on queued jobs: trying again at once would only hammer the
                    // controller; the caller waits for room instead.
                    if let Some(limit) = parse::submit_limit(&out.stderr) {
                        if attempt > 0 {
                            // An earlier try that timed out may have gone in and taken the
                            // room: its job is this one.
                            match self.find_job_named(scheduler, name).await {
                                Ok(Some(job)) => return Ok(job),
                                Ok(None) => {}
                                Err(e) => {
                                    return Err(NotSubmitted::Failed(format!(
                                        "{} refused {script_text} ({limit}) after an earlier try that may have gone in, which cannot be looked up: {e}",
                                        submit_command(scheduler)
                                    )))
                                }
                            }
                        }
                        return Err(NotSubmitted::Limit(limit));
                    }
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
        Err(NotSubmitted::Failed(last))
    }
}

fn submit_command(scheduler: Scheduler) -> &'static str {
    match scheduler {
        Scheduler::Slurm => "sbatch",
        _ => "qsub",
    }
}

pub(super) fn failure_text(out: &Result<CommandOutput, String>) -> String {
    match out {
        Ok(out) => out.stderr.trim().to_string(),
        Err(e) => e.clone(),
    }
}

/// The job name of one submission, `hsm_<sweep>_<stamp>_<n>` after its directory under
/// `scripts_dir` (`job_<stamp>_<n>`): unique, so a restarted agent can find by it a job whose id
/// it never read.
pub(super) fn chunk_job_name(scripts_dir: &Path, chunk_dir: &Path) -> String {
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
/// to (the runner follows them while the task runs). `rerun`: the task goes out again after
/// Slurm preempted it (restarts so far): its logs are kept.
fn write_task_inputs(launch: &HpcLaunch, rerun: Option<u32>) -> Result<(), String> {
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
    for name in [
        wrapper::START_FILE,
        wrapper::EXIT_FILE,
        pack::CANCEL_FILE,
        pack::TIMED_OUT_MARK,
        "hsm_exit.requeued",
    ] {
        let _ = std::fs::remove_file(dir.join(name));
    }
    let resources = &launch.hpc.resources;
    let timeout = launch.launch.timeout.map(|t| t.as_secs_f64().ceil() as u64);
    let packed = resources.array && Pack::of(resources).is_some();
    // The wrapper keeps the task to its own limit: packed, the job's wall time covers all its
    // tasks (the limit is the task's timeout or the per-task walltime, whichever is shorter);
    // alone, the job's wall time is the walltime, or the timeout and a little more
    // (`pack::with_task_limit`), and `--timeout` is the wrapper's to enforce.
    let limit = if packed {
        timeout.into_iter().chain(resources.walltime).min()
    } else {
        timeout
    };
    let _ = std::fs::remove_file(dir.join(pack::LIMITS_FILE));
    if packed || limit.is_some() {
        let limits = pack::limits_file(limit, launch.launch.kill_grace.as_secs().max(1));
        write_file(&dir.join(pack::LIMITS_FILE), limits.as_bytes())?;
    }
    if rerun.is_none() {
        write_file(&launch.launch.stdout, b"")?;
        write_file(&launch.launch.stderr, b"")?;
    }
    Ok(())
}

/// The time limit every task of `chunk` has of its own (`--timeout`), in whole seconds: the
/// longest, as one job script serves them all; `None` when any has none.
fn task_limit(chunk: &[HpcLaunch]) -> Option<u64> {
    chunk
        .iter()
        .map(|l| l.launch.timeout.map(|t| t.as_secs_f64().ceil() as u64))
        .try_fold(0u64, |longest, t| Some(longest.max(t?)))
}

/// The longest kill grace of `chunk`'s tasks, in whole seconds (as `hsm_limits` has it).
fn grace(chunk: &[HpcLaunch]) -> u64 {
    chunk
        .iter()
        .map(|l| l.launch.kill_grace.as_secs().max(1))
        .max()
        .unwrap_or(10)
}
