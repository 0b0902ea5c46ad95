//! Following the jobs: one `squeue`/`qstat` per poll for every job, the wrapper's exit records,
//! accounting (`sacct`, `scontrol`, `qstat -f`) for elements that ended without one, and batched
//! cancels.

use super::*;

impl SchedulerBackend {
    pub(super) async fn send_cancels(&self, keys: &[TaskKey]) {
        let mut ids: Vec<(Scheduler, String)> = Vec::new();
        let mut alone: Vec<PathBuf> = Vec::new();
        {
            let state = self.lock();
            for e in keys.iter().filter_map(|k| state.elements.get(k)) {
                // A packed element runs other tasks too: it is cancelled whole only once every
                // task of it still followed is to be; until then the task alone is, through
                // its directory (the wrapper stops it, or skips it when its turn comes).
                let whole = !e.packed
                    || state
                        .elements
                        .values()
                        .filter(|o| o.job == e.job && o.index == e.index)
                        .all(|o| o.cancel_requested);
                if whole {
                    let id = (e.scheduler, element_id(e.scheduler, &e.job, e.index));
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                } else {
                    alone.push(e.task_dir.clone());
                }
            }
        }
        for dir in alone {
            if let Err(e) = std::fs::write(dir.join(pack::CANCEL_FILE), b"") {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot cancel a packed task");
            }
        }
        // Grid Engine: `qdel JOB -t N-M` per run of tasks (its `-t` takes one range).
        let mut sge_jobs: HashMap<&str, Vec<u32>> = HashMap::new();
        let mut sge_whole: Vec<&str> = Vec::new();
        for (scheduler, id) in &ids {
            if *scheduler != Scheduler::Sge {
                continue;
            }
            match id.split_once('.') {
                Some((job, task)) => match task.parse::<u32>() {
                    Ok(task) if task > 0 => sge_jobs.entry(job).or_default().push(task - 1),
                    _ => sge_whole.push(id),
                },
                None => sge_whole.push(id),
            }
        }
        let mut sge_calls: Vec<Vec<String>> = sge_whole
            .into_iter()
            .map(|job| vec![job.to_string()])
            .collect();
        for (job, indices) in sge_jobs {
            sge_calls.extend(sge::qdel_args(job, &indices, false));
        }
        for args in sge_calls {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            match run("qdel", &args, None).await {
                Ok(out) if out.ok => {}
                Ok(out) => {
                    tracing::warn!(program = "qdel", stderr = %out.stderr.trim(), "cancel reported a problem")
                }
                Err(e) => tracing::warn!(program = "qdel", error = %e, "cancel failed"),
            }
        }
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
    pub(super) async fn accounts(&self, due: &[(TaskKey, Element)]) -> HashMap<TaskKey, Account> {
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
        // Grid Engine: `qacct -j JOB` (one call per job) for the tasks of its that ended.
        let mut sge_jobs: Vec<&str> = due
            .iter()
            .filter(|(_, e)| e.scheduler == Scheduler::Sge)
            .map(|(_, e)| e.job.as_str())
            .collect();
        sge_jobs.sort_unstable();
        sge_jobs.dedup();
        for job in sge_jobs {
            match run("qacct", &["-j", job], None).await {
                Ok(out) if out.ok => {
                    let records = sge::parse_qacct(&out.stdout);
                    for (key, e) in due.iter().filter(|(_, e)| e.scheduler == Scheduler::Sge) {
                        if e.job == job {
                            if let Some(a) = sge::qacct_account(&records, &e.job, e.index) {
                                found.insert(*key, a);
                            }
                        }
                    }
                }
                // Not in the accounting file (yet, or at all): no account.
                Ok(_) => {}
                Err(e) => tracing::info!(error = %e, "qacct failed"),
            }
        }
        let pbs: Vec<&(TaskKey, Element)> = due
            .iter()
            .filter(|(_, e)| matches!(e.scheduler, Scheduler::PbsPro | Scheduler::Torque))
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

    /// Slurm put `element`, which had started, back in its queue (`scontrol requeue`, a
    /// preemption in REQUEUE mode, a node failure): it will run the task again in the same job,
    /// so the same attempt, which is neither failed nor done. The first poll that sees it so
    /// counts the restart and moves the stopped run's exit record aside (the new run's wrapper
    /// also removes it); past [`MAX_SLURM_RESTARTS`], the outcome to give up with.
    fn requeued(&self, key: TaskKey, element: &Element) -> Option<Outcome> {
        let mut state = self.lock();
        let e = state.elements.get_mut(&key)?;
        if e.requeued {
            return None;
        }
        e.requeued = true;
        e.restarts += 1;
        e.unaccounted_polls = 0;
        let restarts = e.restarts;
        drop(state);
        let id = element_id(element.scheduler, &element.job, element.index);
        let record = element.task_dir.join(wrapper::EXIT_FILE);
        let _ = std::fs::rename(&record, element.task_dir.join("hsm_exit.requeued"));
        if restarts > MAX_SLURM_RESTARTS {
            tracing::warn!(element = %id, restarts, "Slurm requeued the job again; giving up");
            self.lock().elements.remove(&key);
            return Some(Outcome::Failed(format!(
                "Slurm requeued its job {restarts} times (preempted, or a node failed); hsm stops at {MAX_SLURM_RESTARTS}"
            )));
        }
        tracing::info!(element = %id, restarts, "Slurm requeued the job; the task will run again");
        None
    }

    /// Slurm preempted `element` (PreemptMode CANCEL: its job is over) while its task ran or
    /// waited its turn: the task goes out again in a new job, in the same attempt (no retry
    /// used), its `stderr.log` saying why; `started`: the poll found it had started. `None`
    /// when it does; otherwise the outcome to end it with: `decided` for an element taken up
    /// after an agent restart (what was submitted is not known), a failure past
    /// [`MAX_SLURM_RESTARTS`].
    fn preempted(
        &self,
        key: TaskKey,
        element: &Element,
        started: bool,
        decided: Outcome,
    ) -> Option<Outcome> {
        let id = element_id(element.scheduler, &element.job, element.index);
        let restarts = element.restarts + 1;
        if restarts > MAX_SLURM_RESTARTS {
            tracing::warn!(element = %id, restarts, "Slurm preempted the job again; giving up");
            return Some(Outcome::Failed(format!(
                "Slurm preempted its job {restarts} times; hsm stops at {MAX_SLURM_RESTARTS}"
            )));
        }
        let Some(launch) = &element.launch else {
            return Some(decided);
        };
        if started && !element.start_reported {
            self.started(key, &element.task_dir);
        }
        // The run it stopped ended there: its record is not the next run's (a cancel while the
        // new job waits would otherwise be decided from it, and take its end time).
        let record = element.task_dir.join(wrapper::EXIT_FILE);
        let _ = std::fs::rename(&record, element.task_dir.join("hsm_exit.preempted"));
        let reported = started || element.start_reported;
        if reported {
            // Said once, here: the resubmission may be held back and tried again.
            use std::io::Write as _;
            let said = std::fs::OpenOptions::new()
                .append(true)
                .open(&launch.launch.stderr)
                .and_then(|mut f| {
                    writeln!(
                        f,
                        "hsm: running the task again: Slurm preempted its job (restart {restarts})"
                    )
                });
            if let Err(e) = said {
                tracing::warn!(element = %id, error = %e, "cannot note the preemption in stderr.log");
            }
        }
        {
            let mut state = self.lock();
            state.elements.remove(&key);
            state.reruns.insert(key, (restarts, reported));
            state.pending.push((**launch).clone());
        }
        tracing::info!(element = %id, restarts, "Slurm preempted the job; the task goes out again");
        self.inner.wake.notify_one();
        None
    }

    /// Counts polls whose scheduler command failed (`failed`: what failed). Once they go on
    /// for [`POLL_FAILURES_SAID`] polls in a row the user is told, through the agent's notice:
    /// the tasks only look queued (a broken `qstat` install, a controller that is down), and
    /// the error is what to fix. Nothing fails for it: a controller coming back is the usual
    /// end. The notice goes once as many polls in a row work again (one that works between
    /// failures is a flaky controller, not a fixed one: told again it would be noise).
    pub(super) fn polled(&self, failed: Option<String>) {
        let mut state = self.lock();
        match failed {
            None => {
                state.failed_polls = 0;
                state.good_polls = state.good_polls.saturating_add(1);
                if state.good_polls >= POLL_FAILURES_SAID {
                    state.poll_notice = None;
                }
            }
            Some(what) => {
                state.good_polls = 0;
                state.failed_polls += 1;
                if state.failed_polls == POLL_FAILURES_SAID && state.poll_notice.is_none() {
                    let notice = poll_failure_notice(&what, POLL_FAILURES_SAID);
                    tracing::warn!("{notice}");
                    state.poll_notice = Some(notice);
                }
            }
        }
    }

    /// One round of following; false when a scheduler command failed.
    pub(super) async fn poll(&self) -> bool {
        let elements: Vec<(TaskKey, Element)> = self
            .lock()
            .elements
            .iter()
            .map(|(k, e)| (*k, e.clone()))
            .collect();
        let lingering = self.lock().lingering.clone();
        let mut slurm_jobs: Vec<&str> = elements
            .iter()
            .filter(|(_, e)| e.scheduler == Scheduler::Slurm)
            .map(|(_, e)| e.job.as_str())
            .chain(lingering.iter().map(|(job, ..)| job.as_str()))
            .collect();
        slurm_jobs.sort_unstable();
        slurm_jobs.dedup();
        let mut pbs_jobs: Vec<&str> = elements
            .iter()
            .filter(|(_, e)| matches!(e.scheduler, Scheduler::PbsPro | Scheduler::Torque))
            .map(|(_, e)| e.job.as_str())
            .collect();
        let any_sge = elements.iter().any(|(_, e)| e.scheduler == Scheduler::Sge);
        pbs_jobs.sort_unstable();
        pbs_jobs.dedup();
        // What failed this time, said to the user when it goes on (`polled`).
        let mut failed: Option<String> = None;
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
                Ok(out) => call_failed("squeue", out.stderr.trim(), &mut failed),
                Err(e) => call_failed("squeue", &e, &mut failed),
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
                Ok(out) if parse::qstat_says_gone(&out.stderr) => Some(Vec::new()),
                Ok(out) => call_failed("qstat", out.stderr.trim(), &mut failed),
                Err(e) => call_failed("qstat", &e, &mut failed),
            }
        };
        // Grid Engine: `qstat -xml` lists every job of the user's, pending tasks together.
        let sge_rows = if !any_sge {
            Some(Vec::new())
        } else {
            match run("qstat", &["-xml"], None).await {
                Ok(out) if out.ok => Some(sge::parse_qstat_xml(&out.stdout)),
                Ok(out) => call_failed("qstat -xml", out.stderr.trim(), &mut failed),
                Err(e) => call_failed("qstat -xml", &e, &mut failed),
            }
        };
        let all_ok = slurm_rows.is_some() && pbs_rows.is_some() && sge_rows.is_some();
        self.polled(failed);
        if let Some(rows) = &slurm_rows {
            // Those Slurm lets go of no longer count against a limit on queued jobs.
            let now = tokio::time::Instant::now();
            self.lock().lingering.retain(|(job, index, until)| {
                now < *until
                    && matches!(slurm_seen(rows, job, *index), Seen::Listed(s) if !s.is_final())
            });
        }
        let mut observed = Vec::with_capacity(elements.len());
        let mut given_up = Vec::new();
        for (key, element) in elements {
            let seen = match element.scheduler {
                Scheduler::Slurm => match &slurm_rows {
                    Some(rows) => {
                        let row = slurm_row(rows, &element.job, element.index);
                        // In a packed element, a task that had ended before the requeue keeps
                        // its record (the new run skips it); only one the requeue stopped, or
                        // that was about to start, runs again.
                        let stopped = || {
                            !element.packed
                                || read_exit_record(&element.task_dir)
                                    .is_none_or(|r| r.signal.is_some())
                        };
                        if slurm_requeued(row, element.started) && stopped() {
                            if let Some(outcome) = self.requeued(key, &element) {
                                given_up.push((key, element, outcome));
                            }
                            continue;
                        }
                        row.map_or(Seen::Missing, |r| Seen::Listed(r.state.clone()))
                    }
                    None => continue,
                },
                Scheduler::Sge => match &sge_rows {
                    Some(rows) => sge::sge_seen(rows, &element.job, element.index),
                    None => continue,
                },
                Scheduler::PbsPro | Scheduler::Torque => match &pbs_rows {
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
            let waiting = matches!(element.scheduler, Scheduler::Slurm | Scheduler::Sge)
                && seen == Seen::Listed(JobState::Queued)
                && !(element.packed && element.started);
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
        // When the exit records an end was decided from say it happened.
        let mut ended_ms: HashMap<TaskKey, u64> = HashMap::new();
        let mut errored = Vec::new();
        for (key, element, seen, started_record, exit_record) in observed {
            let decision = if element.packed {
                decide_packed
            } else {
                decide
            }(
                &seen,
                started_record,
                exit_record.as_ref(),
                element.started,
                element.cancel_requested,
                element.unaccounted_polls,
                accounts.get(&key),
            );
            let mut decision = decision;
            // Grid Engine writes its accounting file late (`flush_time`, 15 s by default) and
            // kills without warning (qdel, h_rt): a task that started and left neither an exit
            // record nor an account yet is not concluded on for a while longer.
            if element.scheduler == Scheduler::Sge
                && decision.exit.is_some()
                && exit_record.is_none()
                && (started_record || element.started)
                && !element.cancel_requested
                && !accounts.contains_key(&key)
                && element.unaccounted_polls < RECORD_GRACE_POLLS + SGE_ACCOUNT_POLLS
            {
                // (Counted below as a poll without a conclusion.)
                decision.exit = None;
            }
            if decision.exit.is_some()
                && element.scheduler == Scheduler::Slurm
                && rerun_after_preemption(
                    &seen,
                    accounts.get(&key),
                    exit_record.as_ref(),
                    element.cancel_requested,
                )
            {
                if let Some(decided) = decision.exit.take() {
                    match self.preempted(key, &element, decision.start, decided) {
                        Some(outcome) => decision.exit = Some(outcome),
                        None => continue,
                    }
                }
            }
            {
                let mut state = self.lock();
                if let Some(e) = state.elements.get_mut(&key) {
                    if decision.start {
                        e.started = true;
                        e.start_reported = true;
                    }
                    let ended = match &seen {
                        Seen::Listed(s) => s.is_final(),
                        Seen::Missing => true,
                    };
                    if decision.exit.is_none() && (ended || exit_record.is_some()) {
                        e.unaccounted_polls += 1;
                    }
                    if e.requeued && seen != Seen::Listed(JobState::Queued) {
                        // Running again (or over): its records are this run's from here on.
                        e.requeued = false;
                    }
                }
                if decision.exit.is_some() {
                    state.elements.remove(&key);
                    let listed = state
                        .lingering
                        .iter()
                        .any(|(job, index, _)| *job == element.job && *index == element.index);
                    if element.scheduler == Scheduler::Slurm
                        && matches!(&seen, Seen::Listed(s) if !s.is_final())
                        && !listed
                    {
                        let until = tokio::time::Instant::now() + LINGER_AT_MOST;
                        state
                            .lingering
                            .push((element.job.clone(), element.index, until));
                    }
                }
            }
            if decision.start && !element.start_reported {
                self.started(key, &element.task_dir);
            }
            if let Some(outcome) = decision.exit {
                // A Grid Engine job in error state (Eqw) stays queued until someone clears it,
                // and would then run the task again: it is deleted once decided.
                if element.scheduler == Scheduler::Sge
                    && matches!(&seen, Seen::Listed(s) if s.is_final())
                {
                    errored.push((element.job.clone(), element.index));
                }
                if let Some(record) = &exit_record {
                    ended_ms.insert(key, record.end_ms);
                }
                ended.push((key, element, outcome));
            }
        }
        for (job, index) in errored {
            let args = match index {
                Some(i) => sge::qdel_args(&job, &[i], false),
                None => vec![vec![job.clone()]],
            };
            for args in args {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                if let Err(e) = run("qdel", &args, None).await {
                    tracing::warn!(job = %job, error = %e, "qdel of a job in error state failed");
                }
            }
        }
        for (key, element, outcome) in given_up {
            let id = element_id(element.scheduler, &element.job, element.index);
            // A packed job runs other tasks too: only this one is stopped (skipped when the
            // job runs again), unless none of its others is followed any more.
            let others = element.packed && {
                let state = self.lock();
                state
                    .elements
                    .values()
                    .any(|o| o.job == element.job && o.index == element.index)
            };
            if others {
                let _ = std::fs::write(element.task_dir.join(pack::CANCEL_FILE), b"");
            } else if let Err(e) = run("scancel", &[&id], None).await {
                tracing::warn!(element = %id, error = %e, "scancel failed");
            }
            ended.push((key, element, outcome));
        }
        // What the ended elements used: the wrapper's records, and the scheduler's accounts
        // (one call for all of them, bounded) where it keeps them.
        if !ended.is_empty() {
            let mut used = self.usages(&ended).await;
            for (key, _, outcome) in ended {
                let at = ended_ms.get(&key).copied();
                self.exited_with(key, outcome, used.remove(&key), at);
            }
        }
        all_ok
    }
}

/// The wrapper's exit record in `task_dir`, if it wrote a readable one.
pub(super) fn read_exit_record(task_dir: &Path) -> Option<ExitRecord> {
    let text = std::fs::read_to_string(task_dir.join(wrapper::EXIT_FILE)).ok()?;
    wrapper::parse_exit_record(&text).ok()
}

/// A poll's scheduler command (`command`) failed, saying `why`: logged, and the first failure
/// of the poll kept for the user (`polled`). Nothing is concluded from the call.
fn call_failed<T>(command: &str, why: &str, failed: &mut Option<String>) -> Option<T> {
    tracing::warn!(error = %why, "{command} failed; trying again at the next poll");
    failed.get_or_insert_with(|| format!("`{command}` fails: {}", first_line(Some(why))));
    None
}

/// What the user reads when following the jobs has failed `polls` times in a row.
fn poll_failure_notice(what: &str, polls: u32) -> String {
    format!(
        "{what} ({polls} polls in a row on the agent's host): its jobs cannot be followed, so \
         their tasks show as queued; fix the command there (hsm keeps trying, nothing is lost)"
    )
}
