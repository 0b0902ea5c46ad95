//! Unit tests of the agent link, without IO: messages in, decisions out, time as an argument.

use super::*;
use hsm_protocol::{
    AttachedMsg, Bytes, ErrorMsg, EventsMsg, FileOffer, FileRef, HeartbeatMsg, OutcomeMsg, Seq,
    TaskEventMsg,
};

const GRACE: Duration = Duration::from_secs(30);
const GIB: u64 = 1 << 30;

fn key(index: u64, attempt: u32) -> TaskKey {
    TaskKey { index, attempt }
}

fn link() -> AgentLink {
    AgentLink::new(
        LinkSetup {
            name: "gpu1".into(),
            sweep_id: "s1".into(),
            grace: GRACE,
            min_free_disk: GIB,
            keep_waiting: false,
            template: TemplateMsg {
                id: 0,
                argv_prefix: Vec::new(),
                env: Vec::new(),
                cwd: ".".into(),
                timeout_ms: None,
                kill_grace_ms: 1_000,
                hpc: None,
                compact: false,
            },
        },
        0,
    )
}

/// A link with the agent connected and `keys` launched and submitted.
fn running(keys: &[TaskKey]) -> AgentLink {
    let mut link = link();
    link.handle_up(0, 4, 1, "connected".into(), None);
    for &k in keys {
        link.handle_launch(k, vec!["true".into()], Vec::new());
    }
    link.handle_flush();
    drain(&mut link);
    link
}

/// Everything the link has to say, dropped.
fn drain(link: &mut AgentLink) {
    outgoing(link);
    reports(link);
    writes(link);
    while link.poll_logs().is_some() {}
}

fn outgoing(link: &mut AgentLink) -> Vec<ToAgent> {
    std::iter::from_fn(|| link.poll_outgoing()).collect()
}

fn reports(link: &mut AgentLink) -> Vec<Report> {
    std::iter::from_fn(|| link.poll_reports()).collect()
}

fn writes(link: &mut AgentLink) -> Vec<Write> {
    std::iter::from_fn(|| link.poll_writes()).collect()
}

fn finished(reports: &[Report]) -> Vec<(TaskKey, ExitKind)> {
    reports
        .iter()
        .filter_map(|r| match r {
            Report::Finished { key, exit, .. } => Some((*key, exit.clone())),
            _ => None,
        })
        .collect()
}

fn acked(reports: &[Report]) -> Vec<u64> {
    reports
        .iter()
        .flat_map(|r| match r {
            Report::Acks(acks) => acks.iter().map(|a| a.seq.0).collect(),
            _ => Vec::new(),
        })
        .collect()
}

fn event(k: TaskKey, seq: u64, kind: EventKind) -> TaskEventMsg {
    TaskEventMsg {
        sweep_id: SweepId("s1".into()),
        task: task_ref(k),
        seq: Seq(seq),
        kind,
    }
}

fn events(list: Vec<TaskEventMsg>) -> FromAgent {
    FromAgent::Events(EventsMsg { events: list })
}

fn output(data: &str) -> EventKind {
    EventKind::Output {
        stream: Stream::Stdout,
        data: Bytes(data.as_bytes().to_vec()),
    }
}

fn exited(code: i32) -> EventKind {
    EventKind::Exited {
        outcome: OutcomeMsg::Exited { code },
        at_ms: 0,
        usage: None,
    }
}

fn offer(paths: &[&str]) -> EventKind {
    EventKind::ResultOffer {
        files: paths
            .iter()
            .map(|p| FileOffer {
                path: p.to_string(),
                size: 3,
                sha256: "a".repeat(64),
            })
            .collect(),
    }
}

fn heartbeat(free_disk_bytes: u64) -> FromAgent {
    FromAgent::Heartbeat(HeartbeatMsg {
        load1: 0.0,
        free_mem_bytes: GIB,
        free_disk_bytes,
        running: 0,
        slots: 4,
        free_inodes: None,
        notice: None,
    })
}

#[test]
fn each_event_is_applied_once_however_often_it_is_replayed() {
    let k = key(1, 1);
    let mut link = running(&[k]);
    let batch = vec![
        event(k, 1, EventKind::Started { pid: 7, at_ms: 5 }),
        event(k, 2, output("a")),
        event(k, 3, output("b")),
    ];
    link.handle_frame(10, events(batch.clone()));
    let first = reports(&mut link);
    assert_eq!(acked(&first), vec![1, 2, 3]);
    assert!(matches!(first[0], Report::Started { pid: Some(7), .. }));
    assert_eq!(writes(&mut link).len(), 2);
    // Replayed after a reconnect (the acknowledgements were lost), then with one new event.
    link.handle_frame(20, events(batch.clone()));
    let mut again = batch;
    again.push(event(k, 4, output("c")));
    link.handle_frame(30, events(again));
    let later = reports(&mut link);
    // Every copy is acknowledged (so the agent forgets it); only event 4 is applied.
    assert_eq!(acked(&later), vec![1, 2, 3, 1, 2, 3, 4]);
    assert!(!later.iter().any(|r| matches!(r, Report::Started { .. })));
    assert_eq!(
        writes(&mut link),
        vec![Write::Append {
            key: k,
            stream: Stream::Stdout,
            data: b"c".to_vec()
        }]
    );
    // Another sweep's events are neither applied nor acknowledged.
    let mut other = event(k, 5, output("x"));
    other.sweep_id = SweepId("s2".into());
    link.handle_frame(40, events(vec![other]));
    assert!(reports(&mut link).is_empty());
    assert!(writes(&mut link).is_empty());
}

#[test]
fn a_gap_in_the_sequence_is_a_protocol_error() {
    let (k, other) = (key(1, 1), key(2, 1));
    let mut link = running(&[k, other]);
    link.handle_frame(
        10,
        events(vec![
            event(k, 1, EventKind::Started { pid: 7, at_ms: 5 }),
            event(k, 3, output("skipped 2")),
            event(other, 1, EventKind::Started { pid: 8, at_ms: 5 }),
        ]),
    );
    let out = reports(&mut link);
    // The gap is not acknowledged; the attempt ends failed; the others go on.
    assert_eq!(acked(&out), vec![1, 1]);
    let ended = finished(&out);
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].0, k);
    assert!(
        matches!(&ended[0].1, ExitKind::Failure { reason, .. } if reason.contains("sent event 3 of this attempt after event 1")),
        "{ended:?}"
    );
    assert!(link.poll_reconnect(), "the connection is dropped");
    assert!(!link.poll_reconnect(), "once");
    assert!(writes(&mut link)
        .iter()
        .all(|w| matches!(w, Write::Close(_))));
    assert!(!link.holds(k) && link.holds(other));
}

#[test]
fn an_attempt_taken_up_starts_its_sequence_at_its_first_event() {
    let k = key(4, 2);
    let mut link = link();
    link.handle_up(0, 4, 1, "connected".into(), None);
    assert!(link.handle_attach_task(k), "opens a burst");
    assert!(!link.handle_attach_task(key(5, 1)), "joins the burst");
    link.handle_flush();
    let out = outgoing(&mut link);
    assert!(
        matches!(&out[..], [ToAgent::Attach(a)] if a.tasks.len() == 2),
        "{out:?}"
    );
    // The earlier coordinator acknowledged events 1-6: the replay starts at 7.
    link.handle_frame(10, events(vec![event(k, 7, output("x"))]));
    assert_eq!(acked(&reports(&mut link)), vec![7]);
    // After that, a gap is a gap.
    link.handle_frame(10, events(vec![event(k, 9, output("y"))]));
    assert_eq!(finished(&reports(&mut link)).len(), 1);
    // A launched attempt has no such allowance.
    let fresh = key(6, 1);
    let mut link = running(&[fresh]);
    link.handle_frame(10, events(vec![event(fresh, 2, output("x"))]));
    assert_eq!(finished(&reports(&mut link)).len(), 1);
}

#[test]
fn an_attempt_finishes_only_with_its_exit_and_all_its_files() {
    let k = key(1, 1);
    let mut link = running(&[k]);
    link.handle_frame(
        10,
        events(vec![
            event(k, 1, EventKind::Started { pid: 7, at_ms: 5 }),
            event(k, 2, output("loss=1")),
            event(k, 3, exited(0)),
        ]),
    );
    assert!(
        finished(&reports(&mut link)).is_empty(),
        "the offer is to come"
    );
    link.handle_frame(
        20,
        events(vec![event(k, 4, offer(&["results/a", "results/b"]))]),
    );
    assert!(finished(&reports(&mut link)).is_empty());
    assert!(matches!(
        &outgoing(&mut link)[..],
        [ToAgent::FetchResults(f)] if f.paths.is_empty()
    ));
    let sha = "a".repeat(64);
    assert_eq!(link.handle_file_claim(30, k, "results/a", 3, &sha), Ok(()));
    assert_eq!(
        link.handle_file_claim(30, k, "results/a", 3, &sha),
        Err(Refusal::Duplicate)
    );
    link.handle_file_arrived(k, "results/a");
    assert!(finished(&reports(&mut link)).is_empty(), "b is awaited");
    assert!(outgoing(&mut link).is_empty());
    // The same offer again (replayed to a coordinator taking the attempt up) fetches nothing.
    link.handle_frame(35, events(vec![event(k, 4, offer(&["results/a"]))]));
    assert!(outgoing(&mut link).is_empty());
    drain(&mut link);
    link.handle_file_claim(40, k, "results/b", 3, &sha).unwrap();
    link.handle_file_arrived(k, "results/b");
    assert!(matches!(
        &outgoing(&mut link)[..],
        [ToAgent::ResultsDone(_)]
    ));
    assert_eq!(finished(&reports(&mut link)), vec![(k, ExitKind::Success)]);
    assert!(!link.holds(k));
    // A file of a finished attempt is not offered any more.
    assert_eq!(
        link.handle_file_claim(50, k, "results/b", 3, &sha),
        Err(Refusal::NotOffered)
    );
}

#[test]
fn output_is_written_before_the_finish_is_reported() {
    let k = key(1, 1);
    let mut link = running(&[k]);
    link.handle_frame(
        10,
        events(vec![
            event(k, 1, EventKind::Started { pid: 7, at_ms: 5 }),
            event(k, 2, output("last words")),
            event(k, 3, exited(1)),
            event(k, 4, offer(&[])),
        ]),
    );
    // The shell runs a call's writes before its reports: the append is queued, and the attempt
    // closes after it.
    let w = writes(&mut link);
    assert!(
        matches!(&w[..], [Write::Append { .. }, Write::Close(c)] if *c == k),
        "{w:?}"
    );
    let ended = finished(&reports(&mut link));
    assert!(matches!(
        &ended[..],
        [(
            _,
            ExitKind::Failure {
                exit_code: Some(1),
                ..
            }
        )]
    ));
}

#[test]
fn a_transfer_failure_turns_a_success_into_a_failure_and_keeps_other_outcomes() {
    let (ok, bad) = (key(1, 1), key(2, 1));
    let mut link = running(&[ok, bad]);
    link.handle_frame(
        10,
        events(vec![
            event(ok, 1, exited(0)),
            event(ok, 2, offer(&["results/a"])),
            event(bad, 1, exited(3)),
            event(bad, 2, offer(&["results/a"])),
        ]),
    );
    drain(&mut link);
    link.handle_file_failed(ok, "results/a", "SHA-256 mismatch".into());
    // The agent says it cannot send the other attempt's file.
    link.handle_frame(
        20,
        FromAgent::Error(ErrorMsg {
            message: "cannot read it".into(),
            file: Some(FileRef {
                sweep_id: SweepId("s1".into()),
                task: task_ref(bad),
                path: "results/a".into(),
            }),
        }),
    );
    let ended = finished(&reports(&mut link));
    assert!(
        matches!(&ended[0], (k, ExitKind::Failure { exit_code: Some(0), reason })
            if *k == ok && reason.contains("did not arrive intact: SHA-256 mismatch (the files stay on gpu1)")),
        "{ended:?}"
    );
    assert!(
        matches!(&ended[1], (k, ExitKind::Failure { exit_code: Some(3), reason })
            if *k == bad && reason == "exit code 3"),
        "{ended:?}"
    );
    // No `ResultsDone`: the agent keeps the files.
    assert!(!outgoing(&mut link)
        .iter()
        .any(|m| matches!(m, ToAgent::ResultsDone(_))));
    // An unusable offer fails the attempt at once.
    let k = key(3, 1);
    let mut link = running(&[k]);
    link.handle_frame(
        10,
        events(vec![
            event(k, 1, exited(0)),
            event(k, 2, offer(&["params.yaml"])),
        ]),
    );
    assert!(matches!(
        &finished(&reports(&mut link))[..],
        [(_, ExitKind::Failure { reason, .. })] if reason.contains("not under results/")
    ));
}

#[test]
fn after_a_reconnect_it_attaches_unended_attempts_and_refetches_awaited_files() {
    let (ended, unended, unstarted) = (key(1, 1), key(2, 1), key(3, 1));
    let mut link = running(&[ended, unended, unstarted]);
    link.handle_frame(
        10,
        events(vec![
            event(ended, 1, exited(0)),
            event(ended, 2, offer(&["results/a", "results/b"])),
            event(unended, 1, EventKind::Started { pid: 7, at_ms: 5 }),
        ]),
    );
    drain(&mut link);
    let sha = "a".repeat(64);
    link.handle_file_claim(20, ended, "results/a", 3, &sha)
        .unwrap();
    link.handle_file_arrived(ended, "results/a");
    link.handle_file_claim(20, ended, "results/b", 3, &sha)
        .unwrap();
    link.handle_down(30, "connection lost".into());
    link.handle_file_interrupted(ended, "results/b");
    // Launched while away: queued, and sent before the `Attach`.
    link.handle_launch(key(4, 1), vec!["true".into()], Vec::new());
    drain(&mut link);
    link.handle_up(40, 4, 1, "connected".into(), None);
    let out = outgoing(&mut link);
    assert!(
        matches!(&out[0], ToAgent::Submit(s) if s.tasks.len() == 1),
        "{out:?}"
    );
    let ToAgent::Attach(attach) = &out[1] else {
        panic!("{out:?}")
    };
    let asked: Vec<TaskKey> = attach.tasks.iter().map(|t| key_of(*t)).collect();
    assert_eq!(asked, vec![unended, unstarted, key(4, 1)]);
    let ToAgent::FetchResults(fetch) = &out[2] else {
        panic!("{out:?}")
    };
    assert_eq!(key_of(fetch.task), ended);
    assert_eq!(
        fetch.paths,
        vec!["results/b".to_string()],
        "only what is awaited"
    );
    // The broken-off stream's file is claimable again.
    assert_eq!(
        link.handle_file_claim(50, ended, "results/b", 3, &sha),
        Ok(())
    );
    // The agent restarted and does not hold one: it ends lost, the others go on.
    link.handle_frame(
        60,
        FromAgent::Attached(AttachedMsg {
            sweep_id: SweepId("s1".into()),
            unknown: vec![task_ref(unstarted)],
        }),
    );
    let out = finished(&reports(&mut link));
    assert!(
        matches!(&out[..], [(k, ExitKind::Lost { .. })] if *k == unstarted),
        "{out:?}"
    );
    assert!(link.holds(unended));
}

#[test]
fn past_the_grace_an_unreachable_agents_attempts_are_handed_back() {
    let k = key(1, 1);
    let mut link = running(&[k]);
    link.handle_down(1_000, "connection lost".into());
    let down = reports(&mut link);
    assert!(
        matches!(&down[..], [Report::Status(s)] if !s.up && !s.lost && s.note == "connection lost")
    );
    let deadline = 1_000 + GRACE.as_millis() as u64;
    assert_eq!(link.poll_timeout(), Some(deadline));
    // The same failure again, dialling: said once, and the deadline stays.
    link.handle_down(5_000, "connection lost".into());
    assert!(reports(&mut link).is_empty());
    assert_eq!(link.poll_timeout(), Some(deadline));
    link.handle_tick(deadline - 1);
    assert!(reports(&mut link).is_empty());
    link.handle_tick(deadline);
    let lost = reports(&mut link);
    assert!(
        matches!(&lost[..], [Report::Status(s)] if s.lost && s.note.contains("unreachable for 30s")),
        "{lost:?}"
    );
    assert!(!link.holds(k), "what it still reports is stale");
    // Back in time: nothing is handed back.
    let mut link = running(&[k]);
    link.handle_down(1_000, "connection lost".into());
    link.handle_up(2_000, 4, 1, "connected".into(), None);
    drain(&mut link);
    link.handle_tick(deadline + 1);
    assert!(reports(&mut link).is_empty());
    assert!(link.holds(k));
    // A batch scheduler's agent keeps its waiting tasks while away.
    let mut link = running(&[k]);
    link.setup.keep_waiting = true;
    link.handle_down(1_000, "connection lost".into());
    assert!(matches!(&reports(&mut link)[..], [Report::Status(s)] if s.keep_waiting));
}

#[test]
fn an_agent_s_notice_is_shown_once() {
    let mut link = running(&[]);
    let with_notice = |text: &str| match heartbeat(2 * GIB) {
        FromAgent::Heartbeat(mut h) => {
            h.notice = Some(text.to_string());
            FromAgent::Heartbeat(h)
        }
        _ => unreachable!(),
    };
    let warnings = |link: &mut AgentLink| -> Vec<String> {
        std::iter::from_fn(|| link.poll_logs())
            .filter(|l| l.level == Level::Warn)
            .map(|l| l.message)
            .collect()
    };
    let refused = "sbatch refused 10 jobs for the cluster's limit QOSMaxSubmitJobPerUserLimit";
    link.handle_frame(10, with_notice(refused));
    let shown = warnings(&mut link);
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert!(shown[0].ends_with(refused), "{shown:?}");
    assert!(
        shown[0].starts_with(&link.setup.name),
        "names the source: {shown:?}"
    );
    link.handle_frame(20, with_notice(refused));
    link.handle_frame(30, heartbeat(2 * GIB));
    assert!(warnings(&mut link).is_empty(), "shown once");
    link.handle_frame(40, with_notice("another limit \x1b[31m"));
    let shown = warnings(&mut link);
    assert_eq!(shown.len(), 1, "a new one is shown: {shown:?}");
    assert!(!shown[0].contains('\x1b'), "made safe to print: {shown:?}");
    // Cleared on the agent (a poll command works again), then back: news again.
    link.handle_frame(50, with_notice(refused));
    link.handle_frame(60, heartbeat(2 * GIB));
    link.handle_frame(70, with_notice(refused));
    let shown = warnings(&mut link);
    assert_eq!(shown.len(), 2, "{shown:?}");
}

#[test]
fn a_low_disk_stops_new_work_until_it_has_room() {
    let mut link = running(&[]);
    link.handle_frame(10, heartbeat(2 * GIB));
    assert!(reports(&mut link).is_empty(), "nothing changed");
    link.handle_frame(20, heartbeat(GIB / 2));
    let low = reports(&mut link);
    assert!(
        matches!(&low[..], [Report::Status(s)] if !s.up && s.note.contains("below min_free_disk")),
        "{low:?}"
    );
    link.handle_frame(30, heartbeat(GIB / 4));
    assert!(reports(&mut link).is_empty(), "said once");
    // Reconnecting while low: up, but no new work.
    link.handle_down(40, "connection lost".into());
    drain(&mut link);
    link.handle_up(50, 4, 1, "connected".into(), None);
    let up = reports(&mut link);
    assert!(
        matches!(&up[..], [Report::Status(s)] if !s.up && s.note.ends_with("free disk still low: no new work")),
        "{up:?}"
    );
    link.handle_frame(60, heartbeat(3 * GIB));
    assert!(
        matches!(&reports(&mut link)[..], [Report::Status(s)] if s.up && s.note.contains("taking work"))
    );
}

#[test]
fn files_that_stall_fail_their_attempt_after_result_stall_of_virtual_time() {
    let k = key(1, 1);
    let mut link = running(&[k]);
    // Longer than the stall, so the attempt outlives the outage below.
    link.setup.grace = Duration::from_secs(3_600);
    link.handle_frame(
        1_000,
        events(vec![
            event(k, 1, exited(0)),
            event(k, 2, offer(&["results/a"])),
        ]),
    );
    drain(&mut link);
    let stall = RESULT_STALL.as_millis() as u64;
    assert_eq!(link.poll_timeout(), Some(1_000 + stall));
    link.handle_tick(1_000 + stall / 2);
    assert!(reports(&mut link).is_empty());
    // Bytes arrived: the wait starts again from then.
    link.handle_file_progress(1_000 + stall / 2);
    link.handle_tick(1_000 + stall);
    assert!(reports(&mut link).is_empty());
    // While disconnected nothing stalls (the files are asked for again on reconnect).
    link.handle_down(1_000 + stall, "connection lost".into());
    link.handle_tick(1_000 + 3 * stall / 2 + 1);
    assert!(finished(&reports(&mut link)).is_empty());
    assert!(link.holds(k));
    link.handle_up(1_000 + 2 * stall, 4, 1, "connected".into(), None);
    drain(&mut link);
    link.handle_tick(1_000 + 3 * stall);
    let ended = finished(&reports(&mut link));
    assert!(
        matches!(&ended[..], [(_, ExitKind::Failure { exit_code: Some(0), reason })]
            if reason.contains("no data of \"results/a\" arrived from gpu1 for 120s")),
        "{ended:?}"
    );
}

#[test]
fn orders_cancel_and_steal_go_out_behind_the_submission() {
    let (a, b, c, d) = (key(1, 1), key(2, 1), key(3, 1), key(4, 1));
    let mut link = link();
    link.handle_up(0, 4, 1, "connected".into(), None);
    drain(&mut link);
    assert!(link.handle_launch(a, vec![], vec![]), "opens a burst");
    assert!(!link.handle_launch(b, vec![], vec![]));
    // A cancel in the same burst sends the submission first.
    link.handle_cancel(a);
    let out = outgoing(&mut link);
    assert!(
        matches!(&out[0], ToAgent::Submit(s) if s.tasks.len() == 2),
        "{out:?}"
    );
    assert!(matches!(&out[1], ToAgent::Cancel(c) if !c.unstarted_only));
    link.handle_flush();
    assert!(outgoing(&mut link).is_empty(), "nothing left to flush");
    // A steal asks only for an unstarted attempt and keeps it until the agent answers.
    link.handle_launch(c, vec![], vec![]);
    link.handle_flush();
    drain(&mut link);
    link.handle_steal(c);
    assert!(matches!(&outgoing(&mut link)[..], [ToAgent::Cancel(m)] if m.unstarted_only));
    assert!(link.holds(c));
    // Its answer: it had started (the steal is void) — the start is reported as usual.
    link.handle_frame(
        10,
        events(vec![event(c, 1, EventKind::Started { pid: 1, at_ms: 0 })]),
    );
    let out = reports(&mut link);
    assert_eq!(acked(&out), vec![1]);
    assert!(out
        .iter()
        .any(|r| matches!(r, Report::Started { key, .. } if *key == c)));
    assert!(link.holds(c));
    // Cancelling an attempt whose files are still arriving ends it now.
    link.handle_launch(d, vec![], vec![]);
    link.handle_flush();
    link.handle_frame(
        20,
        events(vec![
            event(d, 1, exited(0)),
            event(d, 2, offer(&["results/a"])),
        ]),
    );
    drain(&mut link);
    link.handle_cancel(d);
    assert_eq!(
        finished(&reports(&mut link)),
        vec![(d, ExitKind::Cancelled)]
    );
    assert!(
        outgoing(&mut link).is_empty(),
        "nothing to stop on the agent"
    );
}

#[test]
fn a_refused_agent_hands_back_everything_for_good() {
    let k = key(1, 1);
    let mut link = running(&[k]);
    link.handle_refused("fingerprint mismatch".into());
    let out = reports(&mut link);
    assert!(matches!(&out[..], [Report::Status(s)] if s.lost && s.refused));
    assert!(!link.holds(k));
    assert_eq!(link.poll_timeout(), None);
}

#[test]
fn job_scripts_are_kept_only_under_a_plain_name() {
    let k = key(1, 1);
    let mut link = running(&[k]);
    let submitted = |seq, name: &str| {
        event(
            k,
            seq,
            EventKind::Submitted {
                job_id: "12_0".into(),
                script: Some(hsm_protocol::JobScriptMsg {
                    name: name.into(),
                    text: "#!/bin/sh".into(),
                }),
            },
        )
    };
    link.handle_frame(10, events(vec![submitted(1, "job_1.sbatch")]));
    assert!(
        matches!(&writes(&mut link)[..], [Write::JobScript { name, .. }] if name == "job_1.sbatch")
    );
    assert!(
        matches!(&reports(&mut link)[..], [Report::Submitted { job_id, .. }, Report::Acks(_)] if job_id == "12_0")
    );
    link.handle_frame(20, events(vec![submitted(2, "../escape")]));
    assert!(writes(&mut link).is_empty());
    let logs: Vec<Log> = std::iter::from_fn(|| link.poll_logs()).collect();
    assert!(
        logs.iter()
            .any(|l| l.level == Level::Warn && l.message.contains("unusable name")),
        "{logs:?}"
    );
}

#[test]
fn orders_for_an_agent_given_up_on_are_dropped_and_its_attempts_stopped_when_it_is_back() {
    // Found by the simulator (seed 227): a `sweep complete` queued an `Attach` for an agent
    // that was down; past the grace its attempts ran elsewhere, and when it came back the
    // queued `Attach` started attempt 1 of a task that had completed.
    let (a, b) = (key(1, 1), key(2, 1));
    let mut link = link();
    link.handle_attach_task(a);
    link.handle_launch(b, vec![], vec![]);
    link.handle_flush();
    link.handle_down(0, "unreachable".into());
    drain(&mut link);
    let deadline = GRACE.as_millis() as u64;
    link.handle_tick(deadline);
    drain(&mut link);
    assert!(!link.holds(a) && !link.holds(b));
    link.handle_up(deadline + 1, 4, 1, "connected".into(), None);
    let out = outgoing(&mut link);
    assert!(
        !out.iter()
            .any(|m| matches!(m, ToAgent::Submit(_) | ToAgent::Attach(_))),
        "nothing queued for it before goes out: {out:?}"
    );
    let stopped: Vec<(u64, u32)> = out
        .iter()
        .filter_map(|m| match m {
            ToAgent::Cancel(c) if !c.unstarted_only => Some(c.tasks.clone()),
            _ => None,
        })
        .flatten()
        .map(|t| (t.index.0, t.attempt.0))
        .collect();
    assert_eq!(stopped, [(1, 1), (2, 1)], "{out:?}");
    // Asked once: the next connection sends nothing more about them.
    link.handle_down(deadline + 2, "connection lost".into());
    link.handle_up(deadline + 3, 4, 1, "connected".into(), None);
    assert!(outgoing(&mut link).is_empty());
}

#[test]
fn asking_back_a_submission_not_sent_yet_takes_it_out_and_answers_at_once() {
    // Found by the simulator (seed 1543): a submission queued while the agent was away, then
    // taken back, went out when it came back, and the attempt started before the cancel
    // behind it stopped it — after the task had completed elsewhere.
    let (a, b) = (key(1, 1), key(2, 1));
    let mut link = running(&[]);
    link.handle_down(0, "connection lost".into());
    drain(&mut link);
    link.handle_launch(a, vec![], vec![]);
    link.handle_launch(b, vec![], vec![]);
    link.handle_flush();
    link.handle_steal(a);
    assert_eq!(
        finished(&reports(&mut link)),
        vec![(a, ExitKind::Cancelled)]
    );
    assert!(!link.holds(a));
    link.handle_up(10, 4, 1, "connected".into(), None);
    let out = outgoing(&mut link);
    let submitted: Vec<u64> = out
        .iter()
        .filter_map(|m| match m {
            ToAgent::Submit(s) => Some(s.tasks.iter().map(|t| t.index.0).collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(submitted, [2], "{out:?}");
    assert!(
        !out.iter().any(|m| matches!(m, ToAgent::Cancel(_))),
        "the agent never heard of it: nothing to stop"
    );
}

#[test]
fn cancels_are_sent_again_after_a_reconnect() {
    let (a, b) = (key(1, 1), key(2, 1));
    let mut link = running(&[a, b]);
    link.handle_cancel(a);
    link.handle_steal(b);
    drain(&mut link);
    // The connection dropped: the cancels may not have arrived.
    link.handle_down(100, "connection lost".into());
    link.handle_up(200, 4, 1, "connected".into(), None);
    let cancels: Vec<(u64, bool)> = outgoing(&mut link)
        .iter()
        .filter_map(|m| match m {
            ToAgent::Cancel(c) => Some((c.tasks[0].index.0, c.unstarted_only)),
            _ => None,
        })
        .collect();
    assert_eq!(cancels, [(1, false), (2, true)]);
}
