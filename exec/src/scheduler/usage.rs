//! What ended scheduler elements used, gathered when they end: the wrapper's records in each
//! task directory, then one bounded `sacct` (Slurm with accounting) or `qstat -f` (PBS) call
//! for all elements that ended in the same poll. The figures are parsed by `hpc::usage`;
//! a scheduler that answers late, not at all or without accounting only means fewer figures,
//! never a later exit report than `USAGE_WAIT`.

use super::{element_id, qstat_element, run_within, Element, SchedulerBackend};
use crate::hpc::parse;
use crate::hpc::script::Scheduler;
use crate::hpc::usage as parse_usage;
use crate::hpc::wrapper;
use crate::process::{Outcome, TaskKey};
use hsm_protocol::UsageMsg;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

/// Longest the exit reports of a poll wait for the scheduler's accounts of what they used.
const USAGE_WAIT: Duration = Duration::from_secs(6);
/// Between two `sacct` calls for elements it did not list completely yet.
const SACCT_RETRY: Duration = Duration::from_secs(1);

/// What the wrapper's records in `task_dir` say the task used.
pub(super) fn from_records(task_dir: &Path) -> Option<UsageMsg> {
    let exit = std::fs::read_to_string(task_dir.join(wrapper::EXIT_FILE)).ok()?;
    let start = std::fs::read_to_string(task_dir.join(wrapper::START_FILE)).ok();
    parse_usage::wrapper_usage(start.as_deref(), &exit)
}

impl SchedulerBackend {
    /// What each ended element used, as far as anybody can say.
    pub(super) async fn usages(
        &self,
        ended: &[(TaskKey, Element, Outcome)],
    ) -> HashMap<TaskKey, UsageMsg> {
        // An element cancelled before its wrapper started used nothing worth asking about.
        let ran: Vec<&(TaskKey, Element, Outcome)> = ended
            .iter()
            .filter(|(_, e, outcome)| {
                !matches!(outcome, Outcome::Cancelled)
                    || e.task_dir.join(wrapper::START_FILE).exists()
            })
            .collect();
        let mut scheduler: HashMap<TaskKey, UsageMsg> = HashMap::new();
        // The scheduler accounts for whole elements: a packed one's figures are its tasks'
        // together (and it may still run), so its tasks have the wrapper's records only.
        let slurm: Vec<_> = ran
            .iter()
            .filter(|(_, e, _)| e.scheduler == Scheduler::Slurm && !e.packed)
            .collect();
        if !slurm.is_empty() && self.slurm_config().await.1 {
            let mut jobs: Vec<&str> = slurm.iter().map(|(_, e, _)| e.job.as_str()).collect();
            jobs.sort_unstable();
            jobs.dedup();
            let list = jobs.join(",");
            let args = [
                "-n",
                "-P",
                "-o",
                parse_usage::SACCT_USAGE_FORMAT,
                "-j",
                &list,
            ];
            // sacct lags the controller by about a second: an element that just ended may
            // not be listed yet, or without its step lines (where MaxRSS is), or still as
            // RUNNING. Asked again every second until every element's record is complete,
            // within USAGE_WAIT; what is still missing then stays missing.
            let deadline = tokio::time::Instant::now() + USAGE_WAIT;
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let mut complete = true;
                match run_within("sacct", &args, None, left).await {
                    Ok(out) if out.ok => {
                        for (key, e, _) in &slurm {
                            let id = element_id(e.scheduler, &e.job, e.index);
                            if let Some(u) = parse_usage::sacct_usage(&out.stdout, &id) {
                                scheduler.insert(*key, u);
                            }
                            complete &= parse_usage::sacct_is_complete(&out.stdout, &id);
                        }
                    }
                    Ok(out) => {
                        tracing::debug!(stderr = %out.stderr.trim(), "sacct has no usage figures");
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "sacct for usage failed");
                        break;
                    }
                }
                if complete || left < SACCT_RETRY * 2 {
                    break;
                }
                tokio::time::sleep(SACCT_RETRY).await;
            }
        }
        let pbs: Vec<_> = ran
            .iter()
            .filter(|(_, e, _)| {
                matches!(e.scheduler, Scheduler::PbsPro | Scheduler::Torque) && !e.packed
            })
            .collect();
        if !pbs.is_empty() {
            let mut ids: Vec<String> = pbs
                .iter()
                .map(|(_, e, _)| element_id(e.scheduler, &e.job, e.index))
                .collect();
            ids.sort_unstable();
            ids.dedup();
            let mut args = vec!["-f"];
            // PBS Pro lists finished jobs only with -x.
            if pbs.iter().any(|(_, e, _)| e.scheduler == Scheduler::PbsPro) {
                args.push("-x");
            }
            args.extend(ids.iter().map(String::as_str));
            match run_within("qstat", &args, None, USAGE_WAIT).await {
                Ok(out) if !out.stdout.trim().is_empty() => {
                    if let Ok(jobs) = parse::parse_qstat_full(&out.stdout) {
                        for (key, e, _) in &pbs {
                            if let Some(u) = qstat_element(&jobs, &e.job, e.index)
                                .and_then(|j| parse_usage::pbs_usage(&j.attributes))
                            {
                                scheduler.insert(*key, u);
                            }
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "qstat -f for usage failed"),
            }
        }
        ran.iter()
            .filter_map(|(key, e, _)| {
                let used = parse_usage::merge(scheduler.remove(key), from_records(&e.task_dir))?;
                Some((*key, used))
            })
            .collect()
    }
}
