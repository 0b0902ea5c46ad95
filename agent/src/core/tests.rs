//! Unit tests of the core without IO: commands in, decisions out, virtual time.

use super::*;
use crate::hpc::script::Scheduler;
use hsm_protocol::FetchMsg;

#[test]
fn sweep_ids_must_be_one_safe_component() {
    for ok in ["sweep_20250101_120000", "a", "x-1.2"] {
        assert!(valid_sweep_id(ok), "{ok}");
    }
    for bad in [
        "",
        ".",
        "..",
        "../x",
        "a/b",
        ".hidden",
        "a\0b",
        "a b",
        &"x".repeat(129),
    ] {
        assert!(!valid_sweep_id(bad), "{bad:?}");
    }
}

#[test]
fn task_dirs_have_at_least_three_digits() {
    assert_eq!(task_dir_name(7), "task_007");
    assert_eq!(task_dir_name(1234), "task_1234");
}

use crate::ledger::{Recovered, StoredEvent, StoredKind, StoredPhase, StoredTask};
use hsm_protocol::{
    AttachMsg, Attempt, CancelMsg, EventKind, HpcMsg, HpcResources, ResultsDoneMsg,
    SchedulerChoice, SubmitMsg, TaskIndex, TaskMsg,
};

const WHO: &str = "coordinator-fingerprint";

fn sweep() -> SweepId {
    SweepId::from("s1")
}

fn task(index: u64, attempt: u32) -> TaskRef {
    TaskRef {
        index: TaskIndex(index),
        attempt: Attempt(attempt),
    }
}

fn template(hpc: bool) -> TemplateMsg {
    TemplateMsg {
        id: 0,
        argv_prefix: vec!["/bin/true".into()],
        env: Vec::new(),
        cwd: "/".into(),
        timeout_ms: None,
        kill_grace_ms: 1000,
        hpc: hpc.then(|| HpcMsg {
            scheduler: SchedulerChoice::Slurm,
            resources: HpcResources::default(),
        }),
        compact: false,
    }
}

fn submit_msg(tasks: &[(u64, u32)], hpc: bool) -> SubmitMsg {
    SubmitMsg {
        sweep_id: sweep(),
        templates: vec![template(hpc)],
        tasks: tasks
            .iter()
            .map(|&(index, attempt)| TaskMsg {
                index: TaskIndex(index),
                attempt: Attempt(attempt),
                template: 0,
                args: Vec::new(),
                env: Vec::new(),
            })
            .collect(),
    }
}

/// A core with a disk ledger and `slots` slots, its sweep owned by and claimed by [`WHO`].
fn core(slots: usize) -> AgentCore {
    let mut core = AgentCore::new(PathBuf::from("/w"), slots, true);
    core.sweep_access(&sweep(), WHO, true);
    core.handle_connect(&sweep(), 0);
    core
}

/// Submits and returns the ids launched now.
fn submit(core: &mut AgentCore, tasks: &[(u64, u32)]) -> Vec<u64> {
    assert!(core.handle_submit(submit_msg(tasks, false), 0).is_empty());
    core.poll_launches().iter().map(|l| l.id).collect()
}

/// Everything the ledger has made durable so far, as the writer would report.
fn make_durable(core: &mut AgentCore) {
    let gen = core.next_gen();
    core.handle_ledger_durable(gen);
}

/// What a session starting at cursor 0 is sent now.
fn replay(core: &AgentCore) -> Vec<TaskEventMsg> {
    core.poll_events(0, usize::MAX, usize::MAX, WHO).0
}

fn name(kind: &EventKind) -> String {
    match kind {
        EventKind::Submitted { .. } => "submitted".into(),
        EventKind::Started { .. } => "started".into(),
        EventKind::Output { data, .. } => format!("output {}", data.0.len()),
        EventKind::Exited { outcome, .. } => format!("exited {outcome:?}"),
        EventKind::ResultOffer { files } => format!("offer {}", files.len()),
    }
}

/// (task index, attempt, seq, event) of each event.
fn summary(events: &[TaskEventMsg]) -> Vec<(u64, u32, u64, String)> {
    events
        .iter()
        .map(|e| (e.task.index.0, e.task.attempt.0, e.seq.0, name(&e.kind)))
        .collect()
}

fn ack_all(core: &mut AgentCore) {
    let refs: Vec<EventRef> = replay(core).iter().map(TaskEventMsg::event_ref).collect();
    core.handle_ack(&refs);
}

fn started(core: &mut AgentCore, id: u64) {
    core.handle_backend_event(BackendEvent::Started {
        id,
        pid: 100 + id as u32,
        at_ms: 1_000,
    });
}

fn exited(core: &mut AgentCore, id: u64, code: i32) {
    core.handle_backend_event(BackendEvent::Exited {
        id,
        outcome: OutcomeMsg::Exited { code },
        at_ms: 2_000,
        usage: None,
    });
}

/// The tailer read everything: `Exited`, then the offer of `files`.
fn drained(core: &mut AgentCore, id: u64, files: Vec<FileOffer>) {
    let dir = core.handle_backend_event(BackendEvent::Drained { id });
    assert!(dir.is_some(), "an ended attempt has results to scan");
    core.handle_backend_event(BackendEvent::ResultsScanned { id, files });
}

fn offer(path: &str) -> FileOffer {
    FileOffer {
        path: path.into(),
        size: 3,
        sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into(),
    }
}

fn ledger_ops(core: &mut AgentCore) -> Vec<String> {
    core.poll_ledger_ops()
        .into_iter()
        .map(|op| match op {
            LedgerOp::Barrier(t) => format!("barrier {t}"),
            LedgerOp::Record(op) => match op {
                Op::Accept(t) => format!("accept {}", t.key.1),
                Op::Phase(k, p) => format!("phase {} {p:?}", k.1),
                Op::Cancel(k) => format!("cancel {}", k.1),
                Op::Exit(k, ..) => format!("exit {}", k.1),
                Op::Offered(k, f) => format!("offered {} {}", k.1, f.len()),
                Op::ResultsDone(k) => format!("results done {}", k.1),
                Op::Element(k, _) => format!("element {}", k.1),
                Op::Event { gen, key, seq, .. } => format!("event {gen} {}#{seq}", key.1),
                Op::Ack(k, seq) => format!("ack {}#{seq}", k.1),
                Op::Forget(k) => format!("forget {}", k.1),
                Op::Owner(..) => "owner".into(),
                Op::Seen(..) => "seen".into(),
                Op::ForgetSweep(_) => "forget sweep".into(),
                Op::Barrier(_) => "op barrier".into(),
            },
        })
        .collect()
}

#[test]
fn an_attempt_runs_reports_in_order_once_durable_and_is_forgotten_when_acked_and_fetched() {
    let mut core = core(1);
    let launched = submit(&mut core, &[(1, 1), (2, 1)]);
    assert_eq!(launched.len(), 1, "one slot");
    let id = launched[0];
    assert!(core.poll_launches().is_empty(), "the slot is busy");
    let ops = ledger_ops(&mut core);
    assert!(ops.contains(&"accept 1".into()) && ops.contains(&"accept 2".into()));
    assert!(ops.contains(&"phase 1 Launching".into()));

    started(&mut core, id);
    assert_eq!(
        core.poll_tails(),
        vec![Tail {
            id,
            dir: PathBuf::from("/w/s1/tasks/task_001"),
            from: [0, 0]
        }]
    );
    assert!(replay(&core).is_empty(), "not durable yet: nothing to send");
    make_durable(&mut core);
    assert_eq!(summary(&replay(&core)), [(1, 1, 1, "started".to_string())]);

    core.handle_backend_event(BackendEvent::Output {
        id,
        chunks: vec![(Stream::Stdout, b"hello".to_vec(), 0)],
    });
    assert_eq!(core.tail_state(id), Some((OUTPUT_WINDOW - 5, false)));
    exited(&mut core, id, 0);
    assert_eq!(core.poll_wakes(), vec![id], "the tailer reads to the end");
    assert_eq!(core.tail_state(id), Some((OUTPUT_WINDOW - 5, true)));
    // The slot is free once the process ended; the next task starts before the first drains.
    assert_eq!(core.poll_launches().len(), 1);
    drained(&mut core, id, vec![offer("results/a.txt")]);
    // The ledger ops carry the events' positions in order.
    let events: Vec<String> = ledger_ops(&mut core)
        .into_iter()
        .filter(|op| op.starts_with("event"))
        .collect();
    assert_eq!(
        events,
        ["event 0 1#1", "event 1 1#2", "event 2 1#3", "event 3 1#4"]
    );
    make_durable(&mut core);
    let mine: Vec<_> = summary(&replay(&core))
        .into_iter()
        .filter(|e| e.0 == 1)
        .collect();
    assert_eq!(
        mine,
        [
            (1, 1, 1, "started".to_string()),
            (1, 1, 2, "output 5".to_string()),
            (1, 1, 3, "exited Exited { code: 0 }".to_string()),
            (1, 1, 4, "offer 1".to_string()),
        ]
    );

    ack_all(&mut core);
    assert!(
        core.held().iter().all(|t| t.task.index.0 != 1),
        "ended: not held"
    );
    let fetch = FetchMsg {
        sweep_id: sweep(),
        task: task(1, 1),
        paths: Vec::new(),
    };
    let plan = core
        .fetch_plan(&fetch)
        .expect("its results wait to be fetched");
    assert_eq!(
        plan.files[0].path,
        PathBuf::from("/w/s1/tasks/task_001/results/a.txt")
    );
    ledger_ops(&mut core);
    let done = ResultsDoneMsg {
        sweep_id: sweep(),
        task: task(1, 1),
    };
    assert_eq!(
        core.handle_results_done(&done),
        Some((PathBuf::from("/w/s1/tasks/task_001"), false))
    );
    assert_eq!(ledger_ops(&mut core), ["results done 1", "forget 1"]);
    assert!(core.fetch_plan(&fetch).is_err(), "forgotten");
}

#[test]
fn without_a_disk_ledger_events_are_sendable_at_once_and_no_ops_pile_up() {
    let mut core = AgentCore::new(PathBuf::from("/w"), 1, false);
    core.sweep_access(&sweep(), WHO, true);
    let id = submit(&mut core, &[(1, 1)])[0];
    started(&mut core, id);
    assert_eq!(summary(&replay(&core)), [(1, 1, 1, "started".to_string())]);
    assert!(core.poll_ledger_ops().is_empty());
    assert_eq!(
        core.handle_submitting(vec![(id, None)], Scheduler::Slurm, "j".into(), false),
        None
    );
}

#[test]
fn output_beyond_the_window_waits_for_acknowledgements() {
    let mut core = core(1);
    let id = submit(&mut core, &[(1, 1)])[0];
    started(&mut core, id);
    core.handle_backend_event(BackendEvent::Output {
        id,
        chunks: vec![(Stream::Stderr, vec![b'x'; OUTPUT_WINDOW], 0)],
    });
    assert_eq!(core.tail_state(id), Some((0, false)), "no credit left");
    make_durable(&mut core);
    core.poll_wakes();
    ack_all(&mut core);
    assert_eq!(core.tail_state(id), Some((OUTPUT_WINDOW, false)));
    assert_eq!(core.poll_wakes(), vec![id], "the paused tailer is woken");
}

#[test]
fn cancel_acts_by_phase() {
    let mut core = core(2);
    let ids = submit(&mut core, &[(1, 1), (2, 1), (3, 1), (4, 1)]);
    let (running, launching) = (ids[0], ids[1]);
    started(&mut core, running);
    core.poll_tails();
    let cancel = |tasks: Vec<TaskRef>| CancelMsg {
        sweep_id: sweep(),
        tasks,
        unstarted_only: false,
    };
    // Queued: never starts, ends cancelled with an empty offer; nothing to kill.
    core.handle_cancel(&cancel(vec![task(3, 1)]), 5);
    assert!(core.poll_kills().is_empty());
    make_durable(&mut core);
    let ended: Vec<_> = summary(&replay(&core))
        .into_iter()
        .filter(|e| e.0 == 3)
        .collect();
    assert_eq!(
        ended,
        [
            (3, 1, 1, "exited Cancelled".to_string()),
            (3, 1, 2, "offer 0".to_string())
        ]
    );
    // Withdrawing takes back only what has not started.
    core.handle_withdraw(&sweep(), vec![task(1, 1), task(2, 1), task(4, 1)], 5);
    assert!(core.poll_kills().is_empty(), "running and launching stay");
    assert!(
        core.held().iter().all(|t| t.task.index.0 != 4),
        "queued one withdrawn"
    );
    // Launching: killed as soon as it is started.
    core.handle_cancel(&cancel(vec![task(2, 1)]), 5);
    assert!(core.poll_kills().is_empty());
    assert!(core.cancel_requested(launching));
    started(&mut core, launching);
    assert_eq!(
        core.poll_kills(),
        vec![Kill {
            id: launching,
            hpc: false
        }]
    );
    // Running: killed now; cancelled again after it ended (draining): nothing more.
    core.handle_cancel(&cancel(vec![task(1, 1)]), 5);
    assert_eq!(
        core.poll_kills(),
        vec![Kill {
            id: running,
            hpc: false
        }]
    );
    exited(&mut core, running, 143);
    core.handle_cancel(&cancel(Vec::new()), 5);
    assert_eq!(
        core.poll_kills(),
        vec![Kill {
            id: launching,
            hpc: false
        }],
        "only the one still running is killed again"
    );
}

#[test]
fn a_scheduler_task_handed_over_is_cancelled_in_the_scheduler() {
    let mut core = core(1);
    assert!(core
        .handle_submit(submit_msg(&[(1, 1)], true), 0)
        .is_empty());
    let launches = core.poll_launches();
    assert_eq!(launches.len(), 1);
    let id = launches[0].id;
    // Recorded before the submit command runs, then a barrier to wait for.
    ledger_ops(&mut core);
    assert_eq!(
        core.handle_submitting(
            vec![(id, Some(0))],
            Scheduler::Slurm,
            "hsm_s1".into(),
            false
        ),
        Some(0)
    );
    assert_eq!(ledger_ops(&mut core), ["element 1", "barrier 0"]);
    core.handle_withdraw(&sweep(), vec![task(1, 1)], 0);
    assert_eq!(
        core.poll_kills(),
        vec![Kill { id, hpc: true }],
        "it may wait there for hours"
    );
}

#[test]
fn a_newer_attempt_parks_behind_the_older_one_until_it_ends() {
    let mut core = core(2);
    let old = submit(&mut core, &[(1, 1)])[0];
    started(&mut core, old);
    // Not newer than what is here: refused.
    let refused = core.handle_submit(submit_msg(&[(1, 0)], false), 0);
    assert_eq!(refused.len(), 1, "{refused:?}");
    // The newer one stops the older one and waits for the task directory.
    assert!(submit(&mut core, &[(1, 2)]).is_empty(), "parked");
    assert_eq!(
        core.poll_kills(),
        vec![Kill {
            id: old,
            hpc: false
        }]
    );
    // A third attempt supersedes the parked one, which never runs.
    assert!(submit(&mut core, &[(1, 3)]).is_empty());
    make_durable(&mut core);
    let second: Vec<_> = summary(&replay(&core))
        .into_iter()
        .filter(|e| e.1 == 2)
        .collect();
    assert_eq!(
        second,
        [
            (1, 2, 1, "exited Cancelled".to_string()),
            (1, 2, 2, "offer 0".to_string())
        ]
    );
    exited(&mut core, old, 143);
    assert!(core.poll_launches().is_empty(), "the old one still drains");
    drained(&mut core, old, Vec::new());
    let next = core.poll_launches();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].task, task(1, 3));
}

#[test]
fn attach_names_the_unknown_and_reports_an_acknowledged_end_again() {
    let mut core = core(1);
    let id = submit(&mut core, &[(1, 1)])[0];
    started(&mut core, id);
    exited(&mut core, id, 3);
    drained(&mut core, id, vec![offer("results/r")]);
    make_durable(&mut core);
    let attach = AttachMsg {
        sweep_id: sweep(),
        tasks: vec![task(1, 1), task(9, 1)],
    };
    // Events unacknowledged: they are replayed anyway; nothing new.
    assert_eq!(core.handle_attach(&attach, 7), vec![task(9, 1)]);
    assert_eq!(replay(&core).len(), 3);
    // All acknowledged (the results not fetched, so it is still here): the end again, with
    // new sequence numbers.
    ack_all(&mut core);
    assert!(replay(&core).is_empty());
    assert_eq!(core.handle_attach(&attach, 7), vec![task(9, 1)]);
    make_durable(&mut core);
    assert_eq!(
        summary(&replay(&core)),
        [
            (1, 1, 4, "exited Exited { code: 3 }".to_string()),
            (1, 1, 5, "offer 1".to_string())
        ]
    );
}

#[test]
fn a_new_session_replays_everything_unacknowledged_from_cursor_zero() {
    let mut core = core(2);
    let ids = submit(&mut core, &[(1, 1), (2, 1)]);
    for &id in &ids {
        started(&mut core, id);
    }
    make_durable(&mut core);
    let (first, cursor) = core.poll_events(0, 1, usize::MAX, WHO);
    assert_eq!(first.len(), 1, "at most max_events");
    let (rest, end) = core.poll_events(cursor, 10, usize::MAX, WHO);
    assert_eq!(rest.len(), 1);
    assert!(core.poll_events(end, 10, usize::MAX, WHO).0.is_empty());
    core.handle_ack(&[first[0].event_ref()]);
    // The connection dropped: the next session starts at 0 and gets what was not acknowledged.
    assert_eq!(summary(&replay(&core)), summary(&rest));
    // Another coordinator sees none of this sweep's events.
    assert!(core
        .poll_events(0, 10, usize::MAX, "someone else")
        .0
        .is_empty());
}

#[test]
fn queued_attempts_of_an_unclaimed_sweep_wait_for_a_confirmation_or_the_timeout() {
    // Confirmed: a coordinator of the sweep attaches it.
    let mut core = core(1);
    let ids = submit(&mut core, &[(1, 1), (2, 1), (3, 1)]);
    assert_eq!(ids.len(), 1);
    // The coordinator's session ends: the queued ones wait to be confirmed.
    core.handle_disconnect(&sweep(), 0);
    exited(&mut core, ids[0], 0);
    assert!(
        core.poll_launches().is_empty(),
        "a slot is free, but nothing is confirmed"
    );
    core.handle_connect(&sweep(), 0);
    let attach = AttachMsg {
        sweep_id: sweep(),
        tasks: vec![task(3, 1)],
    };
    assert!(core.handle_attach(&attach, 0).is_empty());
    let launched = core.poll_launches();
    assert_eq!(launched.len(), 1);
    assert_eq!(launched[0].task, task(3, 1));
    exited(&mut core, launched[0].id, 0);
    assert!(
        core.poll_launches().is_empty(),
        "the one it did not confirm may have been taken back"
    );

    // Released: nobody claimed the sweep for the whole timeout (virtual time).
    let mut core = self::core(1);
    core.set_mono_ms(1_000);
    let ids = submit(&mut core, &[(1, 1), (2, 1), (3, 1)]);
    core.handle_disconnect(&sweep(), 0);
    exited(&mut core, ids[0], 0);
    assert_eq!(core.poll_timeout(60_000, 60_999), 0, "not yet");
    assert!(core.poll_launches().is_empty());
    assert_eq!(core.poll_timeout(60_000, 61_000), 2);
    let released = core.poll_launches();
    assert_eq!(released.len(), 1, "one slot");
    assert_eq!(released[0].task, task(2, 1), "in submission order");
}

fn stored(index: u64, phase: StoredPhase, exit: Option<(OutcomeMsg, i64)>) -> StoredTask {
    StoredTask {
        key: ("s1".into(), index, 1),
        dir: PathBuf::from(format!("/w/s1/tasks/{}", task_dir_name(index))),
        template: Arc::new(template(false)),
        args: Vec::new(),
        env: Vec::new(),
        phase,
        cancel_requested: false,
        next_seq: 3,
        output: [4, 0],
        exit,
        usage: None,
        offered: Vec::new(),
        results_done: false,
        element: None,
    }
}

#[test]
fn recovery_keeps_queued_unconfirmed_ends_running_processes_lost_and_tails_the_draining() {
    let mut core = AgentCore::new(PathBuf::from("/w"), 4, true);
    core.set_mono_ms(500);
    let recovered = Recovered {
        tasks: vec![
            stored(1, StoredPhase::Queued, None),
            stored(2, StoredPhase::Running, None),
            stored(
                3,
                StoredPhase::Draining,
                Some((OutcomeMsg::Exited { code: 0 }, 9)),
            ),
        ],
        events: vec![StoredEvent {
            key: ("s1".into(), 3, 1),
            seq: 2,
            kind: StoredKind::Output {
                stream: Stream::Stdout,
                offset: 0,
                len: 4,
            },
        }],
        owners: vec![("s1".into(), WHO.into())],
        seen: Vec::new(),
    };
    let mut reads = Vec::new();
    let recovery = core.recover(recovered, &mut |dir, stream, offset, len| {
        reads.push((dir.to_path_buf(), stream, offset, len));
        b"done".to_vec()
    });
    assert_eq!(
        reads,
        [(PathBuf::from("/w/s1/tasks/task_003"), Stream::Stdout, 0, 4)]
    );
    assert_eq!((recovery.tasks, recovery.events), (3, 1));
    assert!(recovery.adopt.is_empty() && recovery.find.is_empty());
    // The running process: its outcome cannot be known.
    assert_eq!(recovery.lost.len(), 1);
    let lost = recovery.lost[0];
    core.handle_backend_event(BackendEvent::NeverRan {
        id: lost,
        outcome: OutcomeMsg::Lost,
        at_ms: 10,
    });
    // The draining one is read on from where its events stopped.
    let tails = core.poll_tails();
    assert_eq!(tails.len(), 1);
    assert_eq!(tails[0].from, [4, 0]);
    // Recovered events are durable already; the new ones are not yet.
    assert_eq!(summary(&replay(&core)), [(3, 1, 2, "output 4".to_string())]);
    make_durable(&mut core);
    assert_eq!(
        summary(&replay(&core))[1..],
        [
            (2, 1, 3, "exited Lost".to_string()),
            (2, 1, 4, "offer 0".to_string())
        ]
    );
    // The queued one waits for a coordinator to confirm it (or for the timeout).
    assert!(core.poll_launches().is_empty());
    assert_eq!(core.poll_timeout(1_000, 1_499), 0);
    assert_eq!(core.poll_timeout(1_000, 1_500), 1);
    let launched = core.poll_launches();
    assert_eq!(launched.len(), 1);
    assert_eq!(launched[0].task, task(1, 1));
}
