//! SweepCore's unit tests: dispatch, retries, losses, drains, attach, strategies and stealing.

use super::*;

fn core_with(n: u64, slots: &[usize], strategy: Strategy) -> SweepCore {
    let tasks = (1..=n)
        .map(|index| TaskState::recorded(index, TaskStatus::Pending, 0))
        .collect();
    let sources = slots
        .iter()
        .enumerate()
        .map(|(i, &s)| SourceState::new(format!("s{i}"), s))
        .collect();
    SweepCore::new(tasks, sources, strategy)
}

fn launches(commands: &[Command]) -> Vec<(u64, u32, usize)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Launch {
                index,
                attempt,
                source,
            } => Some((*index, *attempt, *source)),
            _ => None,
        })
        .collect()
}

#[test]
fn dispatch_fills_slots_in_order_and_refills_on_exit() {
    let mut core = core_with(5, &[2], Strategy::RoundRobin);
    core.enqueue(&[1, 2, 3, 4, 5], 0, 0);
    assert_eq!(launches(&core.poll_dispatch(1)), [(1, 1, 0), (2, 1, 0)]);
    assert!(core.poll_dispatch(1).is_empty(), "no free slot");
    core.handle_started(1, 1, Some(100), 2);
    core.handle_exited(1, 1, ExitKind::Success, 3);
    assert_eq!(launches(&core.poll_dispatch(3)), [(3, 1, 0)]);
    let c = core.counts();
    assert_eq!((c.completed, c.queued, c.pending), (1, 2, 2));
}

#[test]
fn a_run_finishes_with_every_task_final() {
    let mut core = core_with(3, &[4], Strategy::RoundRobin);
    core.enqueue(&[1, 2, 3], 0, 0);
    for (index, attempt, _) in launches(&core.poll_dispatch(0)) {
        core.handle_started(index, attempt, None, 1);
        let exit = if index == 2 {
            ExitKind::Failure {
                exit_code: Some(3),
                reason: "exit code 3".into(),
            }
        } else {
            ExitKind::Success
        };
        core.handle_exited(index, attempt, exit, 2);
    }
    assert!(core.is_finished());
    let c = core.counts();
    assert_eq!((c.completed, c.failed), (2, 1));
    let failed: Vec<_> = core
        .poll_changes()
        .into_iter()
        .filter(|ch| ch.status == TaskStatus::Failed)
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].exit_code, Some(3));
    assert_eq!(failed[0].source.as_deref(), Some("s0"));
}

#[test]
fn retries_start_a_new_attempt_and_stale_reports_are_ignored() {
    let mut core = core_with(1, &[1], Strategy::RoundRobin);
    core.enqueue(&[1], 1, 0);
    assert_eq!(launches(&core.poll_dispatch(0)), [(1, 1, 0)]);
    core.handle_exited(
        1,
        1,
        ExitKind::Failure {
            exit_code: None,
            reason: "timeout".into(),
        },
        1,
    );
    assert!(!core.is_finished());
    assert_eq!(launches(&core.poll_dispatch(2)), [(1, 2, 0)]);
    // A late report from attempt 1 must not complete attempt 2.
    core.handle_exited(1, 1, ExitKind::Success, 3);
    assert_eq!(core.task(1).unwrap().status, TaskStatus::Queued);
    core.handle_exited(
        1,
        2,
        ExitKind::Failure {
            exit_code: Some(1),
            reason: "exit code 1".into(),
        },
        4,
    );
    assert!(core.is_finished());
    assert_eq!(core.task(1).unwrap().status, TaskStatus::Failed);
    assert_eq!(core.task(1).unwrap().attempt, 2);
}

#[test]
fn what_an_attempt_used_goes_on_its_ending_change_only() {
    let used = Usage {
        wall_ms: Some(1_500),
        cpu_user_ms: Some(300),
        cpu_sys_ms: Some(20),
        max_rss_kb: Some(51_200),
        scheduler: None,
    };
    let mut core = core_with(2, &[2], Strategy::RoundRobin);
    core.enqueue(&[1, 2], 1, 0);
    core.poll_dispatch(0);
    core.handle_started(1, 1, None, 1);
    core.handle_started(2, 1, None, 1);
    core.poll_changes();
    let failure = ExitKind::Failure {
        exit_code: Some(1),
        reason: "exit code 1".into(),
    };
    core.handle_exited_using(1, 1, failure, Some(used), 2);
    core.handle_exited_using(2, 1, ExitKind::Success, Some(used), 2);
    let changes = core.poll_changes();
    let of = |index, status| {
        changes
            .iter()
            .find(|c| c.index == index && c.status == status)
            .unwrap_or_else(|| panic!("no {status:?} change of {index}: {changes:?}"))
            .usage
    };
    assert_eq!(of(1, TaskStatus::Failed), Some(used));
    assert_eq!(
        of(1, TaskStatus::Pending),
        None,
        "the retry is no attempt row"
    );
    assert_eq!(of(2, TaskStatus::Completed), Some(used));
}

#[test]
fn cancel_ends_unstarted_tasks_and_stops_running_ones() {
    let mut core = core_with(4, &[2], Strategy::RoundRobin);
    core.enqueue(&[1, 2, 3, 4], 0, 0);
    core.poll_dispatch(0);
    core.handle_started(1, 1, None, 0);
    let commands = core.handle_cancel(1);
    assert_eq!(commands.len(), 2);
    assert!(commands.iter().all(|c| matches!(c, Command::Cancel { .. })));
    assert_eq!(core.counts().cancelled, 2);
    assert!(!core.is_finished());
    core.handle_exited(1, 1, ExitKind::Cancelled, 2);
    core.handle_exited(2, 1, ExitKind::Cancelled, 2);
    assert!(core.is_finished());
    assert_eq!(core.counts().cancelled, 4);
    assert!(core.poll_dispatch(3).is_empty());
}

#[test]
fn cancel_of_a_long_queue_gives_a_change_each_to_the_first_and_ranges_for_the_rest() {
    let n = CANCEL_ONE_BY_ONE as u64 + 3000;
    let mut core = core_with(n, &[2], Strategy::RoundRobin);
    // A retried task ahead of the queue, and a gap (task 2000 not in this run).
    let queue: Vec<u64> = (1..=n).filter(|&i| i != 2000).collect();
    core.enqueue(&queue, 0, 0);
    core.poll_dispatch(0);
    core.poll_changes();
    let commands = core.handle_cancel(5);
    assert_eq!(commands.len(), 2, "the two launched tasks are stopped");
    let changes = core.poll_changes();
    assert_eq!(changes.len(), CANCEL_ONE_BY_ONE);
    assert!(changes
        .iter()
        .all(|c| c.status == TaskStatus::Cancelled
            && c.reason.as_deref() == Some(CANCELLED_UNSTARTED)));
    // Tasks 3..=1026 went one by one; the rest, around the gap, by range.
    assert_eq!(changes[0].index, 3);
    let first_ranged = 3 + CANCEL_ONE_BY_ONE as u64;
    assert_eq!(
        core.poll_cancelled_unstarted(),
        [(first_ranged, 1999), (2001, n)]
    );
    assert!(core.poll_cancelled_unstarted().is_empty(), "polled once");
    let c = core.counts();
    assert_eq!((c.cancelled, c.queued, c.pending), (n - 3, 2, 1));
    assert_eq!(core.task(2000).unwrap().status, TaskStatus::Pending);
    assert_eq!(core.task(n).unwrap().status, TaskStatus::Cancelled);
    core.handle_exited(1, 1, ExitKind::Cancelled, 6);
    core.handle_exited(2, 1, ExitKind::Cancelled, 6);
    assert!(core.is_finished());
}

#[test]
fn interrupt_keeps_unstarted_tasks_pending() {
    let mut core = core_with(4, &[1], Strategy::RoundRobin);
    core.enqueue(&[1, 2, 3, 4], 0, 0);
    core.poll_dispatch(0);
    assert_eq!(core.handle_interrupt(1).len(), 1);
    core.handle_exited(1, 1, ExitKind::Cancelled, 2);
    assert!(core.is_finished());
    let c = core.counts();
    assert_eq!((c.cancelled, c.pending), (1, 3));
}

#[test]
fn strategies_spread_work_as_named() {
    let mut rr = core_with(4, &[2, 2], Strategy::RoundRobin);
    rr.enqueue(&[1, 2, 3, 4], 0, 0);
    let sources: Vec<_> = launches(&rr.poll_dispatch(0)).iter().map(|l| l.2).collect();
    assert_eq!(sources, [0, 1, 0, 1]);

    let mut cap = core_with(4, &[1, 3], Strategy::Capacity);
    cap.enqueue(&[1, 2, 3, 4], 0, 0);
    let sources: Vec<_> = launches(&cap.poll_dispatch(0))
        .iter()
        .map(|l| l.2)
        .collect();
    assert_eq!(sources, [1, 1, 0, 1]);

    let mut least = core_with(3, &[1, 4], Strategy::LeastLoaded);
    least.enqueue(&[1, 2, 3], 0, 0);
    let sources: Vec<_> = launches(&least.poll_dispatch(0))
        .iter()
        .map(|l| l.2)
        .collect();
    assert_eq!(sources, [0, 1, 1]);
}

#[test]
fn a_lost_source_sends_its_tasks_elsewhere_as_new_attempts() {
    let mut core = core_with(4, &[2, 2], Strategy::RoundRobin);
    core.enqueue(&[1, 2, 3, 4], 0, 0);
    let first = launches(&core.poll_dispatch(0));
    assert_eq!(first, [(1, 1, 0), (2, 1, 1), (3, 1, 0), (4, 1, 1)]);
    core.handle_started(2, 1, None, 1);
    core.handle_exited(1, 1, ExitKind::Success, 2);
    assert_eq!(core.handle_source_lost(1, 3), 2);
    let again = launches(&core.poll_dispatch(4));
    assert_eq!(
        again,
        [(2, 2, 0)],
        "lost tasks first, on the surviving source"
    );
    // The lost attempt's late result is ignored; the new attempt decides.
    core.handle_exited(2, 1, ExitKind::Success, 5);
    assert_eq!(core.task(2).unwrap().status, TaskStatus::Queued);
    core.handle_exited(3, 1, ExitKind::Success, 6);
    assert_eq!(launches(&core.poll_dispatch(6)), [(4, 2, 0)]);
    core.handle_exited(2, 2, ExitKind::Success, 7);
    core.handle_exited(4, 2, ExitKind::Success, 8);
    assert!(core.is_finished());
    assert_eq!(core.counts().completed, 4);
    let lost: Vec<_> = core
        .poll_changes()
        .into_iter()
        .filter(|c| c.reason.as_deref().is_some_and(|r| r.contains("lost")))
        .map(|c| (c.index, c.status))
        .collect();
    assert_eq!(
        lost,
        [
            (4, TaskStatus::Failed),
            (4, TaskStatus::Pending),
            (2, TaskStatus::Failed),
            (2, TaskStatus::Pending)
        ],
        "the lost attempt ends failed in its history, the task waits for the next"
    );
}

#[test]
fn attached_attempts_finish_where_they_are_and_new_work_avoids_attach_only_sources() {
    let tasks: Vec<TaskState> = (1..=4)
        .map(|index| TaskState {
            index,
            status: if index <= 2 {
                TaskStatus::Running
            } else {
                TaskStatus::Pending
            },
            attempt: u32::from(index <= 2),
            source: None,
            retries_left: 0,
            pid: None,
            lost: 0,
        })
        .collect();
    let sources = vec![
        SourceState::new("local", 1),
        SourceState::attach_only("old-agent"),
    ];
    let mut core = SweepCore::new(tasks, sources, Strategy::RoundRobin);
    core.enqueue(&[3, 4], 0, 0);
    core.attach(&[(1, 1, 1), (2, 1, 1), (3, 0, 1)], 0, 0);
    let commands = core.poll_dispatch(1);
    assert_eq!(
        commands,
        [
            Command::Attach {
                index: 1,
                attempt: 1,
                source: 1
            },
            Command::Attach {
                index: 2,
                attempt: 1,
                source: 1
            },
            Command::Launch {
                index: 3,
                attempt: 1,
                source: 0
            },
        ],
        "task 3 is not held anywhere: it runs, on the source that takes new work"
    );
    core.handle_exited(1, 1, ExitKind::Success, 2);
    assert!(
        core.poll_dispatch(3).is_empty(),
        "the attach-only source's freed slot takes nothing new"
    );
    core.handle_exited(
        2,
        1,
        ExitKind::Lost {
            reason: "unknown to the agent".into(),
        },
        4,
    );
    core.handle_exited(3, 1, ExitKind::Success, 5);
    // The lost attempt goes first, on the source that takes new work, as attempt 2.
    assert_eq!(launches(&core.poll_dispatch(6)), [(2, 2, 0)]);
    core.handle_exited(2, 2, ExitKind::Success, 7);
    assert_eq!(launches(&core.poll_dispatch(8)), [(4, 1, 0)]);
    core.handle_exited(4, 1, ExitKind::Success, 8);
    assert!(core.is_finished());
    assert_eq!(core.counts().completed, 4);
}

#[test]
fn a_job_id_is_recorded_for_the_current_attempt_only() {
    let mut core = core_with(1, &[1], Strategy::RoundRobin);
    core.enqueue(&[1], 0, 0);
    assert_eq!(launches(&core.poll_dispatch(0)), [(1, 1, 0)]);
    core.poll_changes();
    core.handle_submitted(1, 1, "40_0".into(), 1);
    core.handle_submitted(1, 2, "41_0".into(), 1);
    let changes = core.poll_changes();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(
        (changes[0].job_id.as_deref(), changes[0].status),
        (Some("40_0"), TaskStatus::Queued)
    );
    assert_eq!(core.task(1).unwrap().status, TaskStatus::Queued);
    core.handle_exited(1, 1, ExitKind::Success, 2);
    core.handle_submitted(1, 1, "40_0".into(), 3);
    assert!(
        core.poll_changes().iter().all(|c| c.job_id.is_none()),
        "nothing for a finished attempt"
    );
}

#[test]
fn a_lost_attempt_runs_again_without_using_a_retry() {
    let mut core = core_with(2, &[2], Strategy::RoundRobin);
    core.enqueue(&[1, 2], 0, 0);
    assert_eq!(launches(&core.poll_dispatch(0)), [(1, 1, 0), (2, 1, 0)]);
    core.handle_started(1, 1, None, 1);
    let lost = ExitKind::Lost {
        reason: "lost by the agent".into(),
    };
    core.handle_exited(1, 1, lost.clone(), 2);
    assert_eq!(core.task(1).unwrap().status, TaskStatus::Pending);
    assert_eq!(launches(&core.poll_dispatch(3)), [(1, 2, 0)]);
    // A report from the lost attempt arriving late changes nothing.
    core.handle_exited(1, 1, ExitKind::Success, 4);
    assert_eq!(core.task(1).unwrap().status, TaskStatus::Queued);
    core.handle_exited(1, 2, ExitKind::Success, 5);
    core.handle_exited(2, 1, ExitKind::Success, 6);
    assert!(core.is_finished());
    assert_eq!(core.counts().completed, 2);
    assert_eq!(core.counts().failed, 0, "no retry was needed or used");
}

#[test]
fn a_task_lost_again_and_again_ends_failed_instead_of_running_for_ever() {
    let mut core = core_with(2, &[2, 2], Strategy::RoundRobin);
    core.enqueue(&[1, 2], 0, 0);
    assert_eq!(launches(&core.poll_dispatch(0)), [(1, 1, 0), (2, 1, 1)]);
    let lost = || ExitKind::Lost {
        reason: "lost by the agent".into(),
    };
    let attempts = |launched: Vec<(u64, u32, usize)>| -> Vec<(u64, u32)> {
        launched.iter().map(|l| (l.0, l.1)).collect()
    };
    core.handle_exited(2, 1, ExitKind::Success, 1);
    core.handle_started(1, 1, None, 1);
    core.handle_exited(1, 1, lost(), 1);
    assert_eq!(attempts(launches(&core.poll_dispatch(2))), [(1, 2)]);
    // Lost before it started: does not count.
    core.handle_exited(1, 2, lost(), 2);
    let again = launches(&core.poll_dispatch(2));
    assert_eq!(attempts(again.clone()), [(1, 3)]);
    // Its source lost with it while it ran counts too.
    core.handle_started(1, 3, None, 3);
    assert_eq!(core.handle_source_lost(again[0].2, 3), 1);
    core.handle_source_status(again[0].2, true, None);
    assert_eq!(attempts(launches(&core.poll_dispatch(4))), [(1, 4)]);
    core.handle_started(1, 4, None, 5);
    core.handle_exited(1, 4, lost(), 5);
    let task = core.task(1).unwrap();
    assert_eq!((task.status, task.attempt), (TaskStatus::Failed, 4));
    assert!(core.poll_dispatch(6).is_empty(), "not run a fifth time");
    assert!(core.is_finished());
    let counts = core.counts();
    assert_eq!((counts.completed, counts.failed), (1, 1));
    let reason = core
        .poll_changes()
        .into_iter()
        .filter(|c| c.index == 1 && c.status == TaskStatus::Failed)
        .filter_map(|c| c.reason)
        .next_back()
        .unwrap();
    assert!(
        reason.starts_with("lost by the agent on ") && reason.contains("3 attempts lost"),
        "{reason}"
    );
}

#[test]
fn a_drained_source_keeps_the_attempts_taken_up_from_an_earlier_run() {
    // Found by the simulator (seed 227): `sweep complete` took up task 1's queued attempt
    // on an agent that was down; the drain withdrew it and ran attempt 2 elsewhere, and
    // when the agent came back the queued `Attach` made it start attempt 1 of a completed
    // task. What a source holds from an earlier run is unknown until it reports.
    let mut tasks: Vec<TaskState> = (1..=2)
        .map(|index| TaskState::recorded(index, TaskStatus::Queued, 1))
        .collect();
    tasks[1].status = TaskStatus::Pending;
    tasks[1].attempt = 0;
    let sources = vec![SourceState::new("s0", 1), SourceState::new("s1", 2)];
    let mut core = SweepCore::new(tasks, sources, Strategy::RoundRobin);
    core.handle_source_status(1, false, None);
    core.attach(&[(1, 1, 1)], 0, 0);
    core.enqueue(&[2], 0, 0);
    core.handle_source_status(0, false, None);
    core.handle_source_status(1, true, None);
    let commands = core.poll_dispatch(0);
    assert!(commands.contains(&Command::Attach {
        index: 1,
        attempt: 1,
        source: 1
    }));
    assert_eq!(launches(&commands), [(2, 1, 1)]);
    let taken = core.handle_source_drain(1, "unreachable");
    assert_eq!(
        taken,
        [Command::Withdraw {
            index: 2,
            attempt: 1,
            source: 1
        }],
        "only the attempt this run handed over goes back"
    );
    assert_eq!(core.task(1).unwrap().status, TaskStatus::Queued);
    // Lost with the source after its grace (no answer came), both run again.
    assert_eq!(core.handle_source_lost(1, 2), 2);
    assert_eq!(core.task(1).unwrap().status, TaskStatus::Pending);
    assert_eq!(core.task(2).unwrap().status, TaskStatus::Pending);
}

#[test]
fn a_drained_source_keeps_its_running_tasks_and_gives_back_the_queued_ones() {
    let mut core = core_with(6, &[1, 4], Strategy::RoundRobin);
    core.enqueue(&[1, 2, 3, 4, 5, 6], 0, 0);
    let first = launches(&core.poll_dispatch(0));
    assert_eq!(
        first,
        [(1, 1, 0), (2, 1, 1), (3, 1, 1), (4, 1, 1), (5, 1, 1)]
    );
    core.handle_started(2, 1, None, 1);
    let taken = core.handle_source_drain(1, "free disk low");
    assert_eq!(
        taken,
        [3, 4, 5].map(|index| Command::Withdraw {
            index,
            attempt: 1,
            source: 1
        })
    );
    assert!(
        core.handle_source_drain(1, "free disk low").is_empty(),
        "asked back once"
    );
    assert!(
        core.poll_dispatch(2).is_empty(),
        "source 0 is busy, 1 drained"
    );
    // Until the source answers, the attempts are its own: nothing runs them elsewhere.
    core.handle_exited(1, 1, ExitKind::Success, 3);
    assert_eq!(
        launches(&core.poll_dispatch(3)),
        [(6, 1, 0)],
        "only the task not handed out yet"
    );
    // It dropped 3 and 4; 5 had started (its report was on the way): it stays.
    core.handle_exited(3, 1, ExitKind::Cancelled, 4);
    core.handle_exited(4, 1, ExitKind::Cancelled, 4);
    core.handle_started(5, 1, None, 4);
    assert_eq!(core.task(3).unwrap().status, TaskStatus::Pending);
    assert_eq!(core.task(5).unwrap().status, TaskStatus::Running);
    core.handle_exited(6, 1, ExitKind::Success, 5);
    assert_eq!(
        launches(&core.poll_dispatch(5)),
        [(4, 2, 0)],
        "taken-back tasks first (the last answered first), as new attempts, on the healthy source"
    );
    // The running tasks finish where they are.
    core.handle_exited(2, 1, ExitKind::Success, 5);
    core.handle_exited(5, 1, ExitKind::Success, 5);
    core.handle_source_status(1, true, None);
    assert_eq!(launches(&core.poll_dispatch(6)), [(3, 2, 1)]);
    for (index, attempt) in [(3, 2), (4, 2)] {
        core.handle_exited(index, attempt, ExitKind::Success, 7);
    }
    assert!(core.is_finished());
    assert_eq!(core.counts().completed, 6);
    let reasons: Vec<_> = core
        .poll_changes()
        .into_iter()
        .filter(|c| c.status == TaskStatus::Cancelled)
        .filter_map(|c| c.reason.filter(|r| r.contains("taken back")))
        .collect();
    assert_eq!(reasons.len(), 2, "each taken-back attempt ends cancelled");
    assert_eq!(reasons[0], "attempt 1 taken back from s1: free disk low");
}

#[test]
fn a_drained_attempt_stopped_as_it_started_runs_again_and_one_that_ran_on_completes() {
    // A batch scheduler's pending job is cancelled when asked back; one that started in that
    // moment reports `Started`, then ends `Cancelled`. That is the drain's doing, not the
    // user's: the task runs again elsewhere rather than ending cancelled.
    let mut core = core_with(2, &[1, 2], Strategy::RoundRobin);
    core.enqueue(&[1, 2], 0, 0);
    assert_eq!(launches(&core.poll_dispatch(0)), [(1, 1, 0), (2, 1, 1)]);
    assert_eq!(core.handle_source_drain(1, "free disk low").len(), 1);
    core.handle_started(2, 1, None, 2);
    assert_eq!(core.task(2).unwrap().status, TaskStatus::Running);
    core.handle_exited(2, 1, ExitKind::Cancelled, 3);
    assert_eq!(core.task(2).unwrap().status, TaskStatus::Pending);
    core.handle_exited(1, 1, ExitKind::Success, 4);
    assert_eq!(launches(&core.poll_dispatch(4)), [(2, 2, 0)]);
    // Asked back again, it started and ran on: it completes there.
    core.handle_source_drain(0, "free disk low");
    core.handle_started(2, 2, None, 5);
    core.handle_exited(2, 2, ExitKind::Success, 6);
    assert!(core.is_finished());
    assert_eq!(core.counts().completed, 2);
}

#[test]
fn a_batch_job_stolen_as_it_started_and_stopped_runs_again() {
    use SourceClass::*;
    let mut core = classed(2, &[(1, Local), (100, Batch)])
        .with_steal_after(Some(std::time::Duration::from_secs(60)));
    core.handle_source_status(0, false, None);
    core.enqueue(&[1, 2], 0, 0);
    core.poll_dispatch(1_000);
    core.handle_started(1, 1, None, 2_000);
    core.handle_source_status(0, true, None);
    assert_eq!(steals(&core.poll_dispatch(61_000)), [(2, 1, 1)]);
    // The job started as `scancel` reached it: a start, then a cancelled end. The drain's or
    // steal's doing, not the user's: the task runs again.
    core.handle_started(2, 1, None, 61_001);
    core.handle_exited(2, 1, ExitKind::Cancelled, 61_002);
    assert_eq!(core.task(2).unwrap().status, TaskStatus::Pending);
    assert_eq!(launches(&core.poll_dispatch(61_003)), [(2, 2, 0)]);
}

#[test]
fn unhealthy_sources_get_no_work() {
    let mut core = core_with(2, &[1, 1], Strategy::RoundRobin);
    core.sources[0].healthy = false;
    core.enqueue(&[1, 2], 0, 0);
    assert_eq!(launches(&core.poll_dispatch(0)), [(1, 1, 1)]);
}

#[test]
fn enqueue_records_only_real_transitions() {
    let mut core = core_with(3, &[1], Strategy::RoundRobin);
    core.tasks[1].status = TaskStatus::Failed;
    core.counts = Counts {
        pending: 2,
        failed: 1,
        ..Counts::default()
    };
    core.enqueue(&[1, 2, 3], 0, 0);
    let changes = core.poll_changes();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(
        (changes[0].index, changes[0].status),
        (2, TaskStatus::Pending)
    );
    assert_eq!(core.counts().pending, 3);
}

#[test]
fn status_names_round_trip() {
    for status in TaskStatus::ALL {
        assert_eq!(status.as_str().parse::<TaskStatus>(), Ok(status));
    }
    assert!("done".parse::<TaskStatus>().is_err());
}

fn classed(n: u64, sources: &[(usize, SourceClass)]) -> SweepCore {
    let mut core = core_with(n, &[], Strategy::RoundRobin);
    core.sources = sources
        .iter()
        .enumerate()
        .map(|(i, &(slots, class))| SourceState::new(format!("s{i}"), slots).with_class(class))
        .collect();
    core
}

fn steals(commands: &[Command]) -> Vec<(u64, u32, usize)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Steal {
                index,
                attempt,
                source,
            } => Some((*index, *attempt, *source)),
            _ => None,
        })
        .collect()
}

fn per_source(commands: &[Command]) -> Vec<usize> {
    let mut counts = Vec::new();
    for (_, _, source) in launches(commands) {
        if counts.len() <= source {
            counts.resize(source + 1, 0);
        }
        counts[source] += 1;
    }
    counts
}

#[test]
fn long_tasks_are_not_piled_on_the_first_agent_to_connect() {
    // local 2 slots, gpu1 4, gpu2 2 (not connected yet), 12 tasks of unknown length.
    use SourceClass::*;
    let mut core = classed(12, &[(2, Local), (4, Agent), (2, Agent)]);
    core.handle_source_status(2, false, None);
    core.enqueue(&(1..=12).collect::<Vec<_>>(), 0, 0);
    assert_eq!(per_source(&core.poll_dispatch(0)), [2, 4]);
    core.handle_source_status(2, true, None);
    assert_eq!(per_source(&core.poll_dispatch(1)), [0, 0, 2]);
    assert_eq!(
        core.counts().pending,
        4,
        "the rest waits for the first free slot"
    );
}

#[test]
fn short_tasks_keep_a_pipeline_at_agents_and_long_ones_do_not() {
    use SourceClass::*;
    let mut core = classed(200, &[(2, Agent)]);
    core.enqueue(&(1..=200).collect::<Vec<_>>(), 0, 0);
    assert_eq!(launches(&core.poll_dispatch(0)).len(), 2);
    core.handle_started(1, 1, None, 10);
    core.handle_exited(1, 1, ExitKind::Success, 12); // 2 ms
    let handed = launches(&core.poll_dispatch(12)).len();
    assert_eq!(
        handed,
        1 + pace::ahead(2, pace::REMOTE_OVERHEAD_MS, Some(2.0))
    );
    assert!(handed > 10, "{handed}");

    let mut core = classed(20, &[(2, Agent)]);
    core.enqueue(&(1..=20).collect::<Vec<_>>(), 0, 0);
    core.poll_dispatch(0);
    core.handle_started(1, 1, None, 0);
    core.handle_exited(1, 1, ExitKind::Success, 60_000);
    assert_eq!(
        launches(&core.poll_dispatch(60_000)).len(),
        1,
        "only the freed slot"
    );
}

#[test]
fn an_idle_source_takes_over_tasks_waiting_behind_busy_slots() {
    use SourceClass::*;
    // s1 was handed 4, then says it runs 2 at a time (restarted with fewer slots).
    let mut core = classed(6, &[(2, Local), (4, Agent)]);
    core.handle_source_status(0, false, None);
    core.enqueue(&[1, 2, 3, 4], 0, 0);
    assert_eq!(per_source(&core.poll_dispatch(0)), [0, 4]);
    core.handle_source_parallel(1, 2);
    core.handle_started(1, 1, None, 1);
    core.handle_started(2, 1, None, 1);
    core.handle_source_status(0, true, None);
    let commands = core.poll_dispatch(2);
    assert!(launches(&commands).is_empty());
    assert_eq!(
        steals(&commands),
        [(4, 1, 1), (3, 1, 1)],
        "last handed first"
    );
    assert!(
        steals(&core.poll_dispatch(3)).is_empty(),
        "asked once, and the idle slots are spoken for"
    );
    // 4 was dropped there: it runs locally as attempt 2, using no retry.
    core.handle_exited(4, 1, ExitKind::Cancelled, 4);
    assert_eq!(core.task(4).unwrap().status, TaskStatus::Pending);
    core.strategy = Strategy::Capacity; // would pick s1 (2 free of 4) but for the move
    core.handle_source_parallel(1, 4);
    assert_eq!(launches(&core.poll_dispatch(4)), [(4, 2, 0)]);
    // 3 had started before the agent read the request: it stays there.
    core.handle_started(3, 1, None, 5);
    assert!(steals(&core.poll_dispatch(5)).is_empty());
    core.handle_exited(3, 1, ExitKind::Success, 6);
    assert_eq!(core.task(3).unwrap().status, TaskStatus::Completed);
    let moved: Vec<_> = core
        .poll_changes()
        .into_iter()
        .filter(|c| c.index == 4 && c.status == TaskStatus::Cancelled)
        .collect();
    assert_eq!(moved.len(), 1);
    assert!(moved[0]
        .reason
        .as_deref()
        .unwrap()
        .starts_with("moved from s1"));
}

#[test]
fn short_tasks_are_not_moved_and_batch_jobs_only_after_steal_after() {
    use SourceClass::*;
    let mut core = classed(3, &[(1, Local), (4, Agent)]);
    core.durations.observe(5);
    core.handle_source_status(0, false, None);
    core.enqueue(&[1, 2, 3], 0, 0);
    core.poll_dispatch(0);
    core.handle_source_status(1, true, Some(1));
    core.handle_source_status(0, true, None);
    assert!(steals(&core.poll_dispatch(1)).is_empty(), "5 ms tasks stay");

    let mut core = classed(2, &[(1, Local), (100, Batch)])
        .with_steal_after(Some(std::time::Duration::from_secs(60)));
    core.handle_source_status(0, false, None);
    core.enqueue(&[1, 2], 0, 0);
    core.poll_dispatch(1_000);
    core.handle_started(1, 1, None, 2_000);
    core.handle_source_status(0, true, None);
    assert!(steals(&core.poll_dispatch(30_000)).is_empty());
    assert_eq!(steals(&core.poll_dispatch(61_000)), [(2, 1, 1)]);
    assert!(
        steals(&classed(0, &[]).with_steal_after(None).poll_dispatch(0)).is_empty(),
        "no sources, nothing"
    );
}

#[test]
fn a_sweep_cancel_while_a_move_is_asked_ends_the_task_cancelled() {
    use SourceClass::*;
    let mut core = classed(3, &[(1, Local), (3, Agent)]);
    core.handle_source_status(0, false, None);
    core.enqueue(&[1, 2, 3], 0, 0);
    core.poll_dispatch(0);
    core.handle_source_status(1, true, Some(1));
    core.handle_started(1, 1, None, 1);
    core.handle_source_status(0, true, None);
    assert_eq!(steals(&core.poll_dispatch(2)).len(), 1);
    core.handle_cancel(3);
    core.handle_exited(3, 1, ExitKind::Cancelled, 4);
    assert_eq!(core.task(3).unwrap().status, TaskStatus::Cancelled);
    assert!(core.poll_dispatch(5).is_empty());
}

#[test]
fn a_task_is_moved_once_at_most() {
    use SourceClass::*;
    let mut core = classed(3, &[(1, Local), (4, Agent)]);
    core.handle_source_status(0, false, None);
    core.enqueue(&[1, 2, 3], 0, 0);
    core.poll_dispatch(0);
    core.handle_source_parallel(1, 1);
    core.handle_started(1, 1, None, 1);
    core.handle_source_status(0, true, None);
    assert_eq!(steals(&core.poll_dispatch(2)), [(3, 1, 1)]);
    core.handle_exited(3, 1, ExitKind::Cancelled, 3);
    // The idle source got busy meanwhile: the moved task goes back to the agent...
    core.handle_source_status(0, false, None);
    core.handle_source_parallel(1, 4);
    assert_eq!(launches(&core.poll_dispatch(4)), [(3, 2, 1)]);
    core.handle_source_parallel(1, 1);
    core.handle_source_status(0, true, None);
    // ...and is not asked back a second time; task 2 still may be.
    assert_eq!(steals(&core.poll_dispatch(5)), [(2, 1, 1)]);
}
