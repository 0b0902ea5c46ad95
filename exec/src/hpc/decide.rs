//! What the batch-scheduler backend concludes about one array element from what it saw: the
//! scheduler's view (`squeue`/`qstat` rows, [`slurm_seen`]), the wrapper's records and the
//! scheduler's account (`sacct`, `scontrol`, `qstat -f`): [`decide`]. Plain functions, no IO;
//! `scheduler.rs` runs the commands and feeds their parsed text in.

use crate::hpc::parse::{self, JobState, SqueueRow};
use crate::hpc::script::Scheduler;
use crate::hpc::wrapper::{self, ExitRecord};
use crate::process::Outcome;

/// Polls an ended job may go without an exit record (a shared filesystem may show it late)
/// before the task is reported failed.
pub const RECORD_GRACE_POLLS: u32 = 3;

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

/// The scheduler's own record of an element that ended without an exit record: from `sacct`
/// (where the cluster keeps accounting), `scontrol show job`, or PBS `qstat -f`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The final state, with the exit code folded in (`FAILED` 3:0 is `NonZeroExit(3)`).
    pub state: JobState,
    /// The signal the job's script died of, when the scheduler says.
    pub signal: Option<i32>,
}

impl Account {
    /// What the account says happened, when it says enough: `None` for states that do not tell
    /// how the task ended (PBS `F` without an exit status, a state still active).
    fn outcome(&self, cancel_requested: bool) -> Option<Outcome> {
        // Killed by a signal after hsm asked for it to stop: the cancel (Grid Engine's qdel
        // kills with SIGKILL, leaving no exit record).
        if cancel_requested && self.signal.is_some() {
            return Some(Outcome::Cancelled);
        }
        match &self.state {
            JobState::Completed => Some(Outcome::Exited(0)),
            JobState::Failed { reason } => Some(match reason {
                parse::FailReason::Timeout => Outcome::TimedOut,
                parse::FailReason::NonZeroExit(code) => Outcome::Exited(*code),
                parse::FailReason::Other(why) => match self.signal {
                    Some(signal) => Outcome::Signaled(signal),
                    None => Outcome::Failed(format!("{why} (by the scheduler's account)")),
                },
                other => Outcome::Failed(scheduler_reason(other)?),
            }),
            JobState::Cancelled if cancel_requested => Some(Outcome::Cancelled),
            JobState::Cancelled => Some(Outcome::Failed(
                "cancelled outside hsm (scancel/qdel by a user or an administrator)".into(),
            )),
            JobState::Queued | JobState::Running | JobState::Ended | JobState::Unknown(_) => None,
        }
    }

    /// True when the account shows the task ran (its outcome came from the task, not from a
    /// job that never started).
    fn ran(&self) -> bool {
        match &self.state {
            JobState::Completed => true,
            JobState::Failed { reason } => {
                matches!(
                    reason,
                    parse::FailReason::NonZeroExit(_) | parse::FailReason::Timeout
                ) || self.signal.is_some()
            }
            _ => false,
        }
    }
}

/// Decides an element's fate from what the scheduler says, the wrapper's records and whether a
/// cancel was asked for. `unaccounted_polls` counts polls the element went without an exit
/// record after the scheduler stopped showing it as active; once they are used up, the
/// scheduler's `account` of the job (when there is one) decides before anything is guessed.
pub fn decide(
    seen: &Seen,
    started_record: bool,
    exit_record: Option<&ExitRecord>,
    already_started: bool,
    cancel_requested: bool,
    unaccounted_polls: u32,
    account: Option<&Account>,
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
        // A packed job's wrapper ends a task itself: skipped when cancelled before its turn
        // (it never started), or stopped at its own time limit.
        if record.skipped {
            return Decision {
                start: false,
                exit: Some(Outcome::Cancelled),
            };
        }
        if record.timed_out {
            return Decision {
                start,
                exit: Some(Outcome::TimedOut),
            };
        }
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
    let accounted = account.and_then(|a| a.outcome(cancel_requested));
    let exit = match seen {
        Seen::Listed(JobState::Cancelled) if cancel_requested => Some(Outcome::Cancelled),
        _ if cancel_requested && !already_started && !started_record => Some(Outcome::Cancelled),
        // Asked to stop and gone without a word (Grid Engine's qdel kills with SIGKILL): the
        // cancel, once a late record has had its chance.
        _ if cancel_requested && unaccounted_polls >= RECORD_GRACE_POLLS => {
            Some(Outcome::Cancelled)
        }
        Seen::Listed(JobState::Failed {
            reason: parse::FailReason::Timeout,
        }) => Some(Outcome::TimedOut),
        _ if killed_by_scheduler.is_some() => killed_by_scheduler.clone().map(Outcome::Failed),
        _ if unaccounted_polls < RECORD_GRACE_POLLS => None,
        _ if accounted.is_some() => accounted,
        Seen::Listed(state) => Some(Outcome::SpawnFailed(format!(
            "the scheduler ended the job ({}) and the task left no exit record",
            describe(state)
        ))),
        Seen::Missing => Some(Outcome::SpawnFailed(
            "the job left the scheduler's queue and the task left no exit record".into(),
        )),
    };
    // A task that ran is reported started first, so its output and result files are collected.
    let ran = started_record || account.is_some_and(Account::ran);
    Decision {
        start: !already_started && exit.is_some() && ran,
        exit,
    }
}

/// [`decide`] for a task packed with others into one element (`hpc.tasks_per_job`): the
/// element running does not mean this task started (it may wait for its turn), and an element
/// that ended before the task's turn came did not run it, whatever the element's own fate.
/// A task that started is decided as an element of its own.
pub fn decide_packed(
    seen: &Seen,
    started_record: bool,
    exit_record: Option<&ExitRecord>,
    already_started: bool,
    cancel_requested: bool,
    unaccounted_polls: u32,
    account: Option<&Account>,
) -> Decision {
    if let Some(record) = exit_record.filter(|r| r.signal.is_none()) {
        // Ended on its own (no signal reached the job while it ran): what happened to the
        // element later, to another of its tasks (a timeout, memory, a preemption), is not
        // this task's story.
        return decide(
            &Seen::Missing,
            started_record,
            Some(record),
            already_started,
            cancel_requested,
            unaccounted_polls,
            account,
        );
    }
    if exit_record.is_some() || started_record || already_started {
        // The scheduler's account is the whole job's: a packed job ends 0 whatever its tasks
        // did. Only what it did to the job as a whole (a timeout, memory, a node, a preemption,
        // a cancel) may speak for the task that was running.
        let job_level = account.filter(|a| {
            matches!(
                &a.state,
                JobState::Cancelled
                    | JobState::Failed {
                        reason: parse::FailReason::Timeout
                            | parse::FailReason::OutOfMemory
                            | parse::FailReason::NodeFail
                            | parse::FailReason::Preempted
                    }
            )
        });
        return decide(
            seen,
            started_record,
            exit_record,
            already_started,
            cancel_requested,
            unaccounted_polls,
            job_level,
        );
    }
    let ended = match seen {
        Seen::Listed(state) => state.is_final(),
        Seen::Missing => true,
    };
    let exit = match seen {
        _ if !ended => None,
        _ if cancel_requested => Some(Outcome::Cancelled),
        // The start record may show up late on a shared filesystem (and nothing else tells
        // whether the task ran): twice the usual grace.
        _ if unaccounted_polls < 2 * RECORD_GRACE_POLLS => None,
        Seen::Listed(state) => Some(Outcome::Failed(format!(
            "its job ended ({}) before the task's turn came, so it did not run (it was packed \
             with other tasks: hpc.tasks_per_job; a job's wall time covers all of them)",
            describe(state)
        ))),
        Seen::Missing => Some(Outcome::Failed(
            "its job left the scheduler's queue before the task's turn came, so it did not run \
             (it was packed with other tasks: hpc.tasks_per_job)"
                .into(),
        )),
    };
    Decision { start: false, exit }
}

/// Whether a task whose element has just been decided is to run again instead: Slurm preempted
/// the element (PreemptMode CANCEL: the job is over, state PREEMPTED, by `squeue` or the
/// account) while the task ran or waited its turn, and nobody asked for it to stop. A task that
/// had ended on its own before (an exit record without a signal) keeps its outcome.
pub fn rerun_after_preemption(
    seen: &Seen,
    account: Option<&Account>,
    exit_record: Option<&ExitRecord>,
    cancel_requested: bool,
) -> bool {
    let preempted = |state: &JobState| {
        matches!(
            state,
            JobState::Failed {
                reason: parse::FailReason::Preempted
            }
        )
    };
    let was_preempted = matches!(seen, Seen::Listed(state) if preempted(state))
        || account.is_some_and(|a| preempted(&a.state));
    was_preempted
        && !cancel_requested
        && exit_record.is_none_or(|r| r.signal.is_some() && !r.skipped)
}

/// Whether an element is due for the scheduler's account at this poll: it has ended without an
/// exit record and its grace polls are used up, so `decide` would otherwise conclude blind.
pub fn wants_account(seen: &Seen, exit_record: bool, unaccounted_polls: u32) -> bool {
    let ended = match seen {
        Seen::Listed(state) => state.is_final(),
        Seen::Missing => true,
    };
    ended && !exit_record && unaccounted_polls >= RECORD_GRACE_POLLS
}

/// One element's line in `sacct -n -P -o SACCT_FORMAT` output (the job line, not a step).
pub fn sacct_account(rows: &[parse::SacctRow], job: &str, index: Option<u32>) -> Option<Account> {
    rows.iter()
        .find(|r| {
            r.step.is_none()
                && r.array_job_id == job
                && match (index, &r.indices) {
                    (Some(i), Some(set)) => set.contains(i),
                    (None, None) => true,
                    _ => false,
                }
        })
        .map(|r| Account {
            state: r.state.clone(),
            signal: r.exit_code.map(|e| e.signal).filter(|&s| s != 0),
        })
}

/// One element's record in `scontrol show job JOB` output.
pub fn scontrol_account(
    jobs: &[parse::ScontrolJob],
    job: &str,
    index: Option<u32>,
) -> Option<Account> {
    jobs.iter()
        .find(|j| match index {
            Some(i) => {
                j.array_job_id.as_deref() == Some(job)
                    && j.array_task_id.as_ref().is_some_and(|set| set.contains(i))
            }
            None => j.job_id == job,
        })
        .map(|j| Account {
            state: j.state.clone(),
            signal: j.exit_code.map(|e| e.signal).filter(|&s| s != 0),
        })
}

/// One element's block in PBS `qstat -f` output (`123[4].server`, or `123.server` alone).
pub fn qstat_element<'a>(
    jobs: &'a [parse::QstatJob],
    job: &str,
    index: Option<u32>,
) -> Option<&'a parse::QstatJob> {
    let number = |id: &str| id.split(['.', '[']).next().unwrap_or("").to_string();
    let wanted = number(job);
    jobs.iter().find(|j| {
        number(&j.job_id) == wanted
            && match index {
                Some(i) => j.array_index == Some(i),
                None => j.array_index.is_none() && j.array_indices_submitted.is_none(),
            }
    })
}

/// The account of one element in PBS `qstat -f` output.
pub fn qstat_account(jobs: &[parse::QstatJob], job: &str, index: Option<u32>) -> Option<Account> {
    qstat_element(jobs, job, index).map(|j| Account {
        state: j.state.clone(),
        // PBS Pro: an exit status above 256 is a signal (status - 256).
        signal: j.exit_status.filter(|&s| s > 256).map(|s| s - 256),
    })
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
        JobState::Failed { reason } => match reason {
            parse::FailReason::Timeout => "timeout".into(),
            parse::FailReason::NonZeroExit(code) => format!("failed with exit code {code}"),
            parse::FailReason::Other(why) => format!("failed: {why}"),
            other => scheduler_reason(other).unwrap_or_else(|| "failed".into()),
        },
        JobState::Unknown(raw) => format!("state {raw}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// The state of one element in `squeue` rows: an exact row for it, or a row of its array whose
/// index range contains it (pending ranges).
pub fn slurm_seen(rows: &[SqueueRow], job: &str, index: Option<u32>) -> Seen {
    slurm_row(rows, job, index).map_or(Seen::Missing, |row| Seen::Listed(row.state.clone()))
}

/// The row `squeue` lists an element in, if any.
pub fn slurm_row<'a>(
    rows: &'a [SqueueRow],
    job: &str,
    index: Option<u32>,
) -> Option<&'a SqueueRow> {
    rows.iter().find(|row| match index {
        Some(i) => {
            row.array_job_id == job && row.indices.as_ref().is_some_and(|set| set.contains(i))
        }
        None => row.job_id == job || (row.array_job_id == job && row.indices.is_none()),
    })
}

/// Times Slurm may put a started element back in its queue before hsm gives up on it (cancels
/// it and reports the task failed): a task that takes a node down, or a partition preempting it
/// over and over, is not run for ever.
pub const MAX_SLURM_RESTARTS: u32 = 3;

/// Whether Slurm put an element that had started back in its queue to run it again (in the
/// same job, so the same attempt): `row` is where `squeue` lists it now.
pub fn slurm_requeued(row: Option<&SqueueRow>, already_started: bool) -> bool {
    already_started && row.is_some_and(|r| parse::slurm_waiting_to_restart(&r.raw_state))
}

/// The id `scancel`/`qdel` takes for one element.
pub fn element_id(scheduler: Scheduler, job: &str, index: Option<u32>) -> String {
    match (scheduler, index) {
        (_, None) => job.to_string(),
        (Scheduler::Slurm, Some(i)) => format!("{job}_{i}"),
        // Grid Engine's task ids count from 1 (`qdel JOB -t N`).
        (Scheduler::Sge, Some(i)) => format!("{job}.{}", i + 1),
        (Scheduler::PbsPro | Scheduler::Torque, Some(i)) => match job.split_once('[') {
            Some((head, tail)) => format!("{head}[{i}]{}", tail.trim_start_matches(']')),
            None => format!("{job}[{i}]"),
        },
    }
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
            end_ms: 1_000,
            error: None,
            timed_out: false,
            skipped: false,
        }
    }

    #[test]
    fn the_exit_record_decides_when_there_is_one() {
        let running = Seen::Listed(JobState::Running);
        let d = decide(
            &running,
            true,
            Some(&record(0, None)),
            false,
            false,
            0,
            None,
        );
        assert_eq!(
            d,
            Decision {
                start: true,
                exit: Some(Outcome::Exited(0))
            }
        );
        let d = decide(
            &Seen::Missing,
            true,
            Some(&record(3, None)),
            true,
            false,
            0,
            None,
        );
        assert_eq!(d.exit, Some(Outcome::Exited(3)));
        assert!(!d.start, "already reported started");
        let d = decide(
            &running,
            true,
            Some(&record(143, Some(15))),
            true,
            true,
            0,
            None,
        );
        assert_eq!(d.exit, Some(Outcome::Cancelled));
        // A signal nobody here sent, the job still shown running: wait for the scheduler's
        // account (it may be a walltime kill) a few polls, then report the signal.
        let d = decide(
            &running,
            true,
            Some(&record(143, Some(15))),
            true,
            false,
            0,
            None,
        );
        assert_eq!(d.exit, None);
        let d = decide(
            &running,
            true,
            Some(&record(143, Some(15))),
            true,
            false,
            RECORD_GRACE_POLLS,
            None,
        );
        assert_eq!(d.exit, Some(Outcome::Signaled(15)));
        let timeout = Seen::Listed(JobState::Failed {
            reason: FailReason::Timeout,
        });
        let d = decide(
            &timeout,
            true,
            Some(&record(143, Some(15))),
            true,
            false,
            0,
            None,
        );
        assert_eq!(
            d.exit,
            Some(Outcome::TimedOut),
            "the scheduler's reason wins over the signal"
        );
        let mut failed_start = record(127, None);
        failed_start.error = Some("cannot change directory to /nope".into());
        let d = decide(
            &Seen::Missing,
            true,
            Some(&failed_start),
            false,
            false,
            0,
            None,
        );
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
            decide(&queued, false, None, false, false, 0, None),
            Decision {
                start: false,
                exit: None
            }
        );
        let running = Seen::Listed(JobState::Running);
        assert_eq!(
            decide(&running, false, None, false, false, 0, None),
            Decision {
                start: true,
                exit: None
            }
        );
        // Cancelled while pending: never started, ends cancelled at once.
        let cancelled = Seen::Listed(JobState::Cancelled);
        assert_eq!(
            decide(&cancelled, false, None, false, true, 0, None),
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
            decide(&node, true, None, true, false, 0, None).exit,
            Some(Outcome::Failed("node failure".into()))
        );
        let oom = Seen::Listed(JobState::Failed {
            reason: FailReason::OutOfMemory,
        });
        assert_eq!(
            decide(
                &oom,
                true,
                Some(&record(137, Some(9))),
                true,
                false,
                0,
                None
            )
            .exit,
            Some(Outcome::Failed(
                "out of memory (killed by the scheduler)".into()
            ))
        );
        // Ended without a record for a reason of its own: wait a few polls (shared
        // filesystems lag), then fail.
        let ended = Seen::Listed(JobState::Failed {
            reason: FailReason::NonZeroExit(2),
        });
        assert_eq!(decide(&ended, true, None, true, false, 0, None).exit, None);
        match decide(&ended, true, None, true, false, RECORD_GRACE_POLLS, None).exit {
            Some(Outcome::SpawnFailed(why)) => {
                assert!(why.contains("failed with exit code 2"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        match decide(
            &Seen::Missing,
            false,
            None,
            false,
            false,
            RECORD_GRACE_POLLS,
            None,
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
            decide(&timeout, true, None, true, false, 0, None).exit,
            Some(Outcome::TimedOut)
        );
        // Never success without a record or the scheduler's account of the exit.
        let completed = Seen::Listed(JobState::Completed);
        for polls in 0..10 {
            assert!(!matches!(
                decide(&completed, true, None, true, false, polls, None).exit,
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

    #[test]
    fn past_the_grace_the_schedulers_account_decides() {
        let account = |state: JobState, signal: Option<i32>| Account { state, signal };
        let missing = Seen::Missing;
        let grace = RECORD_GRACE_POLLS;
        // Not asked for before the grace is used up, nor when there is an exit record.
        assert!(!wants_account(&missing, false, grace - 1));
        assert!(!wants_account(&missing, true, grace));
        assert!(!wants_account(
            &Seen::Listed(JobState::Running),
            false,
            grace
        ));
        assert!(wants_account(&missing, false, grace));
        assert!(wants_account(
            &Seen::Listed(JobState::Completed),
            false,
            grace
        ));
        // Before the grace, an account changes nothing.
        let ok = account(JobState::Completed, None);
        assert_eq!(
            decide(&missing, false, None, false, false, 0, Some(&ok)).exit,
            None
        );
        // The wrapper was killed with SIGKILL (FAILED 0:9): the task ran; reported started
        // first (so its output and files are collected), then the signal.
        let killed = account(
            JobState::Failed {
                reason: FailReason::Other("killed by signal 9".into()),
            },
            Some(9),
        );
        assert_eq!(
            decide(&missing, true, None, false, false, grace, Some(&killed)),
            Decision {
                start: true,
                exit: Some(Outcome::Signaled(9))
            }
        );
        // COMPLETED 0:0 by sacct is evidence of success even with no record.
        assert_eq!(
            decide(&missing, false, None, false, false, grace, Some(&ok)),
            Decision {
                start: true,
                exit: Some(Outcome::Exited(0))
            }
        );
        let three = account(
            JobState::Failed {
                reason: FailReason::NonZeroExit(3),
            },
            None,
        );
        assert_eq!(
            decide(&missing, true, None, true, false, grace, Some(&three)).exit,
            Some(Outcome::Exited(3))
        );
        let timeout = account(
            JobState::Failed {
                reason: FailReason::Timeout,
            },
            None,
        );
        assert_eq!(
            decide(&missing, true, None, true, false, grace, Some(&timeout)).exit,
            Some(Outcome::TimedOut)
        );
        let node = account(
            JobState::Failed {
                reason: FailReason::NodeFail,
            },
            None,
        );
        assert_eq!(
            decide(&missing, false, None, false, false, grace, Some(&node)),
            Decision {
                start: false,
                exit: Some(Outcome::Failed("node failure".into()))
            }
        );
        // Cancelled by someone else: failed, saying so; by us: cancelled.
        let cancelled = account(JobState::Cancelled, None);
        match decide(&missing, true, None, true, false, grace, Some(&cancelled)).exit {
            Some(Outcome::Failed(why)) => assert!(why.contains("outside hsm"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            decide(&missing, true, None, true, true, grace, Some(&cancelled)).exit,
            Some(Outcome::Cancelled)
        );
        // An account that does not say how it ended (PBS `F` without status) is no account.
        let vague = account(JobState::Ended, None);
        assert!(matches!(
            decide(&missing, true, None, true, false, grace, Some(&vague)).exit,
            Some(Outcome::SpawnFailed(_))
        ));
    }

    #[test]
    fn accounts_are_found_for_the_right_element() {
        let sacct = parse::parse_sacct(
            "40_0|COMPLETED|0:0\n40_0.batch|COMPLETED|0:0\n40_1|FAILED|0:9\n40_1.batch|FAILED|0:9\n41|TIMEOUT|0:0\n",
        )
        .rows;
        assert_eq!(
            sacct_account(&sacct, "40", Some(0)).map(|a| a.state),
            Some(JobState::Completed)
        );
        assert_eq!(
            sacct_account(&sacct, "40", Some(1)).and_then(|a| a.signal),
            Some(9)
        );
        assert_eq!(sacct_account(&sacct, "40", Some(2)), None);
        assert_eq!(
            sacct_account(&sacct, "41", None).map(|a| a.state),
            Some(JobState::Failed {
                reason: FailReason::Timeout
            })
        );
        assert_eq!(sacct_account(&sacct, "41", Some(0)), None);
        let scontrol = parse::parse_scontrol_job(
            "JobId=51 ArrayJobId=50 ArrayTaskId=1 JobName=hsm_x\n   JobState=FAILED Reason=NonZeroExitCode Dependency=(null)\n   ExitCode=0:9\n\nJobId=52 ArrayJobId=50 ArrayTaskId=2 JobName=hsm_x\n   JobState=COMPLETED Reason=None\n   ExitCode=0:0\n",
        )
        .unwrap();
        let a = scontrol_account(&scontrol, "50", Some(1)).unwrap();
        assert_eq!(a.signal, Some(9));
        assert!(matches!(a.state, JobState::Failed { .. }));
        assert_eq!(
            scontrol_account(&scontrol, "50", Some(2)).map(|a| a.state),
            Some(JobState::Completed)
        );
        assert_eq!(scontrol_account(&scontrol, "50", Some(3)), None);
        assert_eq!(
            scontrol_account(&scontrol, "51", None).map(|a| a.signal),
            Some(Some(9))
        );
        let qstat = parse::parse_qstat_full(
            "Job Id: 123[4].pbs01\n    job_state = F\n    Exit_status = 265\n    array_index = 4\n\nJob Id: 124.pbs01\n    job_state = F\n    Exit_status = -29\n",
        )
        .unwrap();
        assert_eq!(
            qstat_account(&qstat, "123[].pbs01", Some(4)).and_then(|a| a.signal),
            Some(9)
        );
        assert_eq!(qstat_account(&qstat, "123[].pbs01", Some(5)), None);
        assert_eq!(
            qstat_account(&qstat, "124.pbs01", None).map(|a| a.state),
            Some(JobState::Failed {
                reason: FailReason::Timeout
            })
        );
    }

    #[test]
    fn a_started_element_listed_pending_again_was_requeued_and_a_suspended_one_was_not() {
        let row = |raw: &str| SqueueRow {
            array_job_id: "7".into(),
            indices: Some(parse::IndexSet::parse("2").unwrap()),
            job_id: "9".into(),
            state: parse::slurm_state(raw, None),
            raw_state: raw.into(),
            reason: "BeginTime".into(),
        };
        for (raw, started, requeued) in [
            ("PENDING", true, true),
            ("REQUEUED", true, true),
            ("REQUEUE_HOLD", true, true),
            ("PENDING", false, false),
            ("SUSPENDED", true, false),
            ("RUNNING", true, false),
            ("COMPLETING", true, false),
        ] {
            let rows = [row(raw)];
            let found = slurm_row(&rows, "7", Some(2));
            assert!(found.is_some());
            assert_eq!(
                slurm_requeued(found, started),
                requeued,
                "{raw} started={started}"
            );
        }
        assert!(!slurm_requeued(None, true), "gone from the queue");
        let rows = [row("PENDING")];
        assert_eq!(slurm_row(&rows, "7", Some(3)), None);
    }

    #[test]
    fn a_packed_task_waits_for_its_turn_and_one_that_never_got_it_did_not_run() {
        let running = Seen::Listed(JobState::Running);
        // Its element runs another task: this one has not started.
        assert_eq!(
            decide_packed(&running, false, None, false, false, 0, None),
            Decision {
                start: false,
                exit: None
            }
        );
        // Its turn: the start record says so.
        assert_eq!(
            decide_packed(&running, true, None, false, false, 0, None),
            Decision {
                start: true,
                exit: None
            }
        );
        // The element timed out before its turn: after the grace, a failure that says why,
        // never a timeout of a task that did not run.
        let timeout = Seen::Listed(JobState::Failed {
            reason: FailReason::Timeout,
        });
        assert_eq!(
            decide_packed(&timeout, false, None, false, false, 0, None).exit,
            None
        );
        let late = decide_packed(
            &timeout,
            false,
            None,
            false,
            false,
            2 * RECORD_GRACE_POLLS,
            None,
        );
        assert!(!late.start);
        assert!(
            matches!(&late.exit, Some(Outcome::Failed(why)) if why.contains("before the task's turn") && why.contains("timeout")),
            "{late:?}"
        );
        // Cancelled (the element with it) before its turn: cancelled.
        let cancelled = Seen::Listed(JobState::Cancelled);
        assert_eq!(
            decide_packed(&cancelled, false, None, false, true, 0, None).exit,
            Some(Outcome::Cancelled)
        );
        // The element completed and forgot this task's turn (a lost line): not a success.
        let completed = decide_packed(&Seen::Missing, false, None, false, false, 6, None);
        assert!(matches!(completed.exit, Some(Outcome::Failed(_))));
        // A task that started and lost its element is decided as any element.
        let lost = decide_packed(&Seen::Missing, true, None, false, false, 5, None);
        assert!(
            matches!(lost.exit, Some(Outcome::SpawnFailed(_))),
            "{lost:?}"
        );
    }

    #[test]
    fn a_packed_job_s_account_speaks_for_its_task_only_of_what_befell_the_job() {
        // The task started, its exit record is not there (yet): the job's COMPLETED 0:0 is
        // the pack runner's, not the task's.
        let done = Account {
            state: JobState::Completed,
            signal: None,
        };
        let d = decide_packed(&Seen::Missing, true, None, true, false, 5, Some(&done));
        assert!(
            matches!(d.exit, Some(Outcome::SpawnFailed(_))),
            "never a success without the task's record: {d:?}"
        );
        // A timeout of the whole job is the running task's.
        let timeout = Account {
            state: JobState::Failed {
                reason: FailReason::Timeout,
            },
            signal: None,
        };
        let d = decide_packed(&Seen::Missing, true, None, true, false, 5, Some(&timeout));
        assert_eq!(d.exit, Some(Outcome::TimedOut));
    }

    #[test]
    fn the_wrapper_s_own_timeout_and_skip_decide() {
        let running = Seen::Listed(JobState::Running);
        let mut timed_out = record(143, None);
        timed_out.timed_out = true;
        assert_eq!(
            decide_packed(&running, true, Some(&timed_out), false, false, 0, None),
            Decision {
                start: true,
                exit: Some(Outcome::TimedOut)
            }
        );
        let mut skipped = record(143, None);
        skipped.skipped = true;
        assert_eq!(
            decide_packed(&running, false, Some(&skipped), false, true, 0, None),
            Decision {
                start: false,
                exit: Some(Outcome::Cancelled)
            }
        );
    }

    #[test]
    fn a_preempted_task_runs_again_unless_it_had_ended_or_was_cancelled() {
        let preempted = Seen::Listed(JobState::Failed {
            reason: FailReason::Preempted,
        });
        let stopped = record(143, Some(15));
        // Stopped by the preemption, or never got to run: again.
        assert!(rerun_after_preemption(
            &preempted,
            None,
            Some(&stopped),
            false
        ));
        assert!(rerun_after_preemption(&preempted, None, None, false));
        // Known only from the account, the queue having forgotten it.
        let account = Account {
            state: JobState::Failed {
                reason: FailReason::Preempted,
            },
            signal: None,
        };
        assert!(rerun_after_preemption(
            &Seen::Missing,
            Some(&account),
            None,
            false
        ));
        // Ended on its own before the preemption, or cancelled: its outcome stands.
        assert!(!rerun_after_preemption(
            &preempted,
            None,
            Some(&record(3, None)),
            false
        ));
        assert!(!rerun_after_preemption(
            &preempted,
            None,
            Some(&stopped),
            true
        ));
        // Not preempted at all.
        let timeout = Seen::Listed(JobState::Failed {
            reason: FailReason::Timeout,
        });
        assert!(!rerun_after_preemption(
            &timeout,
            None,
            Some(&stopped),
            false
        ));
    }

    #[test]
    fn a_packed_task_that_ended_on_its_own_keeps_its_outcome_whatever_befell_its_job() {
        // Exit 3 before another task of the job ran out of memory: exit 3, not "out of memory".
        let oom = Seen::Listed(JobState::Failed {
            reason: FailReason::OutOfMemory,
        });
        assert_eq!(
            decide_packed(&oom, true, Some(&record(3, None)), true, false, 0, None).exit,
            Some(Outcome::Exited(3))
        );
        // The task the job's end stopped (a signal reached it) is decided by that end.
        assert_eq!(
            decide_packed(
                &oom,
                true,
                Some(&record(137, Some(15))),
                true,
                false,
                5,
                None
            )
            .exit,
            Some(Outcome::Failed(
                "out of memory (killed by the scheduler)".into()
            ))
        );
    }
}
