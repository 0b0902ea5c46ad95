//! Two coordinator identities on one real `hsm-agent serve` (protocol-level test clients stand in
//! for the coordinators): each sweep belongs to the identity that submitted it. The other one
//! does not receive its events, and its Ack, Cancel, FetchResults, ResultsDone, Attach and
//! Submit for it are refused with an `Error` naming the sweep and change nothing; the owner
//! still gets everything, from a new connection too (`sweep complete` is a new process with the
//! same identity), and the binding survives a restart of the agent.
//!
//! Every wait is bounded (hang guards, not speed checks).

use hsm_agent::identity::{AuthorizedKeys, Identity};
use hsm_agent::wire::read_frame;
use hsm_protocol::{
    decode, AckMsg, AttachMsg, CancelMsg, EventKind, FetchMsg, FileHeader, OutcomeMsg,
    ResultsDoneMsg, SweepId, TaskEventMsg, ToAgent, MAX_FRAME,
};
use std::time::Duration;

mod protocol_client;

use protocol_client::*;

/// B's refusals: one `Error` per refused request, each naming A's sweep.
fn assert_refused(seen: &Seen, sweep: &SweepId, what: &[&str]) {
    for what in what {
        let prefix = format!("refused {what} for sweep {sweep}: ");
        assert!(
            seen.errors.iter().any(|e| e.starts_with(&prefix)),
            "no refusal of {what}: {:?}",
            seen.errors
        );
    }
}

#[tokio::test]
async fn a_coordinator_neither_sees_nor_touches_another_coordinators_sweep() {
    let tmp = tempfile::tempdir().unwrap();
    let (state, work, project) = (
        tmp.path().join("state"),
        tmp.path().join("work"),
        tmp.path().join("project"),
    );
    std::fs::create_dir_all(&project).unwrap();
    let a = Identity::generate("coordinator A").unwrap();
    let b = Identity::generate("coordinator B").unwrap();
    Identity::load_or_create(&state, "hsm-agent").unwrap();
    AuthorizedKeys::authorize(&state, &a.fingerprint()).unwrap();
    AuthorizedKeys::authorize(&state, &b.fingerprint()).unwrap();
    let mut agent = Agent::start(&state, &work);

    // A: task 1 writes a result file and ends; task 2 runs until stopped.
    let sweep_a = SweepId::from("sweep_a");
    let sweep_b = SweepId::from("sweep_b");
    let mut client_a = Client::connect(&agent, &a).await;
    let mut client_b = Client::connect(&agent, &b).await;
    client_a
        .send(submit(
            &sweep_a,
            &project,
            &[
                (1, "echo secret-a; echo a > \"$HSM_OUTPUT_DIR/r.txt\""),
                (2, "echo running-a; exec sleep 300"),
            ],
        ))
        .await;
    let mut seen_a = Seen::default();
    client_a
        .collect(&mut seen_a, |s| s.has(1, offered) && s.has(2, started))
        .await;
    let a_events: Vec<_> = seen_a.events.iter().map(TaskEventMsg::event_ref).collect();

    // B, knowing every id of A's sweep, tries everything; and runs a sweep of its own.
    client_b
        .send(ToAgent::Ack(AckMsg {
            acks: a_events.clone(),
        }))
        .await;
    client_b
        .send(ToAgent::Cancel(CancelMsg {
            sweep_id: sweep_a.clone(),
            tasks: Vec::new(),
            unstarted_only: false,
        }))
        .await;
    client_b
        .send(ToAgent::FetchResults(FetchMsg {
            sweep_id: sweep_a.clone(),
            task: task_ref(1),
            paths: Vec::new(),
        }))
        .await;
    client_b
        .send(ToAgent::ResultsDone(ResultsDoneMsg {
            sweep_id: sweep_a.clone(),
            task: task_ref(1),
        }))
        .await;
    client_b
        .send(ToAgent::Attach(AttachMsg {
            sweep_id: sweep_a.clone(),
            tasks: vec![task_ref(1), task_ref(2)],
        }))
        .await;
    client_b
        .send(submit(&sweep_a, &project, &[(3, "echo intruder")]))
        .await;
    client_b
        .send(submit(&sweep_b, &project, &[(1, "echo mine-b")]))
        .await;
    let mut seen_b = Seen::default();
    client_b.collect(&mut seen_b, |s| s.has(1, offered)).await;
    client_b.settle(&mut seen_b, 1).await;
    assert_eq!(seen_b.sweeps(), ["sweep_b"], "B saw only its own sweep");
    assert_refused(
        &seen_b,
        &sweep_a,
        &[
            "acknowledgement",
            "cancel",
            "fetch of results",
            "results done",
            "attach",
            "submission",
        ],
    );
    assert_eq!(seen_b.errors.len(), 6, "{:?}", seen_b.errors);
    // Nothing of A's sweep leaks into the refusals.
    assert!(
        !seen_b
            .errors
            .iter()
            .any(|e| e.contains("secret") || e.contains("r.txt") || e.contains("task_00")),
        "{:?}",
        seen_b.errors
    );
    // The refused attach names every attempt unknown (to B, it holds none of them).
    assert_eq!(
        seen_b.attached,
        [(sweep_a.clone(), vec![task_ref(1), task_ref(2)])]
    );
    // No result stream was opened for B's fetch: the ping answered after it, so the fetch
    // was handled, and a stream opened for it would be waiting now.
    let stream = tokio::time::timeout(Duration::from_millis(500), client_b.conn.accept_uni()).await;
    assert!(stream.is_err(), "a result stream was sent to B");
    client_b.close().await;

    // A, from a new connection (as `sweep complete` would): every event is still there
    // (B's acknowledgements changed nothing), task 2 still runs (B's cancel did nothing),
    // the result file is still there (B's results-done deleted nothing).
    client_a.close().await;
    let mut client_a = Client::connect(&agent, &a).await;
    assert_eq!(
        client_a.welcome.running,
        vec![hsm_protocol::SweepTaskRef {
            sweep_id: sweep_a.clone(),
            task: task_ref(2),
        }]
    );
    let mut replay = Seen::default();
    client_a.settle(&mut replay, 2).await;
    let replayed: Vec<_> = replay.events.iter().map(TaskEventMsg::event_ref).collect();
    assert!(
        a_events.iter().all(|e| replayed.contains(e)),
        "A's unacknowledged events are all replayed"
    );
    assert!(!replay.has(2, exited), "task 2 was not stopped by B");
    assert_eq!(replay.sweeps(), ["sweep_a"], "A does not see B's sweep");
    assert!(
        !replay.has(3, started),
        "B's submission into A's sweep did not run"
    );
    client_a
        .send(ToAgent::FetchResults(FetchMsg {
            sweep_id: sweep_a.clone(),
            task: task_ref(1),
            paths: Vec::new(),
        }))
        .await;
    let mut stream = tokio::time::timeout(FRAME_WAIT, client_a.conn.accept_uni())
        .await
        .expect("A's result stream in time")
        .unwrap();
    let header: FileHeader =
        decode(&read_frame(&mut stream, MAX_FRAME).await.unwrap().unwrap()).unwrap();
    assert_eq!(header.path, "results/r.txt");
    let bytes = stream.read_to_end(1 << 20).await.unwrap();
    assert_eq!(bytes, b"a\n");
    client_a.close().await;

    // Restarted, the agent still knows whose sweep it is.
    agent.stop();
    drop(agent);
    let agent = Agent::start(&state, &work);
    let mut client_b = Client::connect(&agent, &b).await;
    assert!(
        client_b.welcome.running.is_empty(),
        "{:?}",
        client_b.welcome.running
    );
    client_b
        .send(ToAgent::Cancel(CancelMsg {
            sweep_id: sweep_a.clone(),
            tasks: Vec::new(),
            unstarted_only: false,
        }))
        .await;
    let mut seen_b = Seen::default();
    client_b.settle(&mut seen_b, 3).await;
    assert_refused(&seen_b, &sweep_a, &["cancel"]);
    assert!(
        seen_b.events.iter().all(|e| e.sweep_id == sweep_b),
        "after the restart B sees only its own sweep: {:?}",
        seen_b.sweeps()
    );
    client_b.close().await;
    // A gets its sweep's events, including task 2's end (lost with the restart).
    let mut client_a = Client::connect(&agent, &a).await;
    let mut seen_a = Seen::default();
    client_a.collect(&mut seen_a, |s| s.has(2, exited)).await;
    assert_eq!(seen_a.sweeps(), ["sweep_a"]);
    assert!(seen_a.events.iter().any(|e| matches!(
        &e.kind,
        EventKind::Exited {
            outcome: OutcomeMsg::Lost,
            ..
        }
    )));
    client_a.close().await;
}

/// A ledger written before owners were kept (schema 1, no `sweeps` table): its sweeps belong to
/// nobody, so no coordinator gets their events, until one takes the sweep up (here by `Attach`,
/// as a reconnecting coordinator does); then that one gets the events already held (replayed at
/// once, on the same connection) and the other is refused.
#[tokio::test]
async fn a_sweep_from_an_old_ledger_belongs_to_the_coordinator_that_takes_it_up() {
    let tmp = tempfile::tempdir().unwrap();
    let (state, work, project) = (
        tmp.path().join("state"),
        tmp.path().join("work"),
        tmp.path().join("project"),
    );
    std::fs::create_dir_all(&project).unwrap();
    let a = Identity::generate("coordinator A").unwrap();
    let b = Identity::generate("coordinator B").unwrap();
    Identity::load_or_create(&state, "hsm-agent").unwrap();
    AuthorizedKeys::authorize(&state, &a.fingerprint()).unwrap();
    AuthorizedKeys::authorize(&state, &b.fingerprint()).unwrap();
    let sweep = SweepId::from("sweep_old");
    let mut agent = Agent::start(&state, &work);
    let mut client_a = Client::connect(&agent, &a).await;
    client_a
        .send(submit(&sweep, &project, &[(1, "echo old-a")]))
        .await;
    let mut seen = Seen::default();
    client_a.collect(&mut seen, |s| s.has(1, offered)).await;
    client_a.close().await;
    agent.stop();
    drop(agent);
    {
        // Back to what version 1 wrote: no owners.
        let db = rusqlite::Connection::open(state.join("ledger.db")).unwrap();
        db.execute_batch("DROP TABLE sweeps; PRAGMA user_version = 1;")
            .unwrap();
    }

    let agent = Agent::start(&state, &work);
    let mut client_b = Client::connect(&agent, &b).await;
    let mut seen_b = Seen::default();
    client_b.settle(&mut seen_b, 1).await;
    assert!(seen_b.events.is_empty(), "{:?}", seen_b.sweeps());

    let mut client_a = Client::connect(&agent, &a).await;
    client_a
        .send(ToAgent::Attach(AttachMsg {
            sweep_id: sweep.clone(),
            tasks: vec![task_ref(1)],
        }))
        .await;
    let mut seen_a = Seen::default();
    client_a
        .collect(&mut seen_a, |s| s.has(1, offered) && !s.attached.is_empty())
        .await;
    assert_eq!(seen_a.attached, [(sweep.clone(), vec![])]);
    assert!(seen_a.errors.is_empty(), "{:?}", seen_a.errors);

    client_b
        .send(ToAgent::Cancel(CancelMsg {
            sweep_id: sweep.clone(),
            tasks: Vec::new(),
            unstarted_only: false,
        }))
        .await;
    client_b.settle(&mut seen_b, 2).await;
    assert_refused(&seen_b, &sweep, &["cancel"]);
    assert!(seen_b.events.is_empty(), "{:?}", seen_b.sweeps());
    client_a.close().await;
    client_b.close().await;
}
