//! After an agent restart: taking up elements from the ledger, settling jobs the scheduler forgot
//! from the wrapper's records, and finding a submission cut short by its job name.

use super::*;

impl SchedulerBackend {
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
        self.adopt_all(vec![(key, element, task_dir, started, cancel_requested)]);
    }

    /// [`Self::adopt`] for several elements at once: all are followed before the next round,
    /// so a cancel kept for one task of a packed job does not end the job whole while the
    /// job's other tasks are still being taken up.
    pub fn adopt_all(&self, elements: Vec<(TaskKey, ElementRef, PathBuf, bool, bool)>) {
        {
            let mut state = self.lock();
            for (key, element, task_dir, started, cancel_requested) in elements {
                // A cancel asked for before the restart may not have reached the scheduler: it
                // is sent (again) with the next round.
                state.insert_element(
                    key,
                    Element {
                        scheduler: element.scheduler,
                        job: element.job,
                        index: element.index,
                        packed: element.packed,
                        task_dir,
                        started,
                        cancel_requested,
                        unaccounted_polls: 0,
                        restarts: 0,
                        requeued: false,
                        start_reported: started,
                        launch: None,
                    },
                );
            }
        }
        self.ensure_driver();
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
            self.started(key, task_dir);
        }
        self.exited_with(
            key,
            outcome,
            usage::from_records(task_dir),
            Some(exit_record.end_ms),
        );
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
            Scheduler::Sge => {
                let out = run("qstat", &["-xml"], None).await?;
                if !out.ok {
                    return Err(format!("qstat -xml: {}", out.stderr.trim()));
                }
                if let Some(job) = sge::job_named(&sge::parse_qstat_xml(&out.stdout), name) {
                    return Ok(Some(job));
                }
                // Ended already: the accounting file knows jobs by name too.
                let out = run("qacct", &["-j", name], None).await?;
                Ok(sge::parse_qacct(&out.stdout)
                    .into_iter()
                    .find(|r| r.job_name == name)
                    .map(|r| r.job_number))
            }
            Scheduler::PbsPro | Scheduler::Torque => {
                // qselect asks the server for this name only (PBS Pro: finished jobs too).
                let mut select = vec!["-N", name];
                if scheduler == Scheduler::PbsPro {
                    select.push("-x");
                }
                match run("qselect", &select, None).await {
                    Ok(out) if out.ok => return Ok(parse::pbs_parent_id(&out.stdout)),
                    // No qselect (Slurm's qsub wrappers, where squeue knows the array whole),
                    // or one that is not PBS's (Grid Engine's, beside Slurm's wrappers): the
                    // other ways below.
                    Ok(out) => {
                        tracing::debug!(stderr = %out.stderr.trim(), "qselect failed; asking squeue/qstat")
                    }
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

/// The array (or job) id `squeue` shows for jobs named `name`, finished ones it still holds
/// included.
async fn squeue_job_named(name: &str) -> Result<Option<String>, String> {
    let out = run("squeue", &["-h", "-t", "all", "-n", name, "-o", "%F"], None).await?;
    if !out.ok {
        return Err(format!("squeue: {}", out.stderr.trim()));
    }
    Ok(parse::first_job_id(&out.stdout))
}
