//! Removing sweeps from a real `hsm-agent serve` (protocol-level clients stand in for the
//! coordinators): a `Clean` removes a sweep's directory and ledger entries only when the
//! requester submitted it, no coordinator is connected to it, nothing of it runs and nothing
//! waits to be reported; `--ledger-retention` forgets a sweep whose coordinator never came back
//! for its results, and not before the retention.
//!
//! Every wait is bounded (hang guards, not speed checks).

use hsm_agent::identity::{AuthorizedKeys, Identity};
use hsm_agent::wire::read_frame;
use hsm_protocol::{
    decode, AckMsg, AttachMsg, CancelMsg, CleanMsg, CleanedMsg, FetchMsg, FileHeader,
    ResultsDoneMsg, SweepId, TaskEventMsg, ToAgent, MAX_FRAME,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod protocol_client;

use protocol_client::*;

/// Sends a `Clean` and waits for its answer.
async fn clean(client: &mut Client, seen: &mut Seen, msg: CleanMsg) -> CleanedMsg {
    let before = seen.cleaned.len();
    client.send(ToAgent::Clean(msg)).await;
    client.collect(seen, |s| s.cleaned.len() > before).await;
    seen.cleaned.last().unwrap().clone()
}

fn clean_of(sweeps: &[&SweepId], older_than_secs: Option<u64>, dry_run: bool) -> CleanMsg {
    CleanMsg {
        sweeps: sweeps.iter().map(|s| (*s).clone()).collect(),
        older_than_secs,
        dry_run,
    }
}

fn kept_reason(answer: &CleanedMsg, sweep: &SweepId) -> String {
    answer
        .kept
        .iter()
        .find(|k| &k.sweep_id == sweep)
        .map(|k| k.reason.clone())
        .unwrap_or_else(|| panic!("{sweep} not kept: {answer:?}"))
}

fn removed(answer: &CleanedMsg) -> Vec<&str> {
    answer.removed.iter().map(|r| r.sweep_id.as_str()).collect()
}

/// Acknowledges every event seen, fetches task `index`'s offered result (one file) and says the
/// results are done, as a coordinator does.
async fn take_everything(client: &mut Client, seen: &mut Seen, sweep: &SweepId, index: u64) {
    let acks = seen.events.iter().map(TaskEventMsg::event_ref).collect();
    client.send(ToAgent::Ack(AckMsg { acks })).await;
    client
        .send(ToAgent::FetchResults(FetchMsg {
            sweep_id: sweep.clone(),
            task: task_ref(index),
            paths: Vec::new(),
        }))
        .await;
    let mut stream = tokio::time::timeout(FRAME_WAIT, client.conn.accept_uni())
        .await
        .expect("result stream in time")
        .unwrap();
    let header: FileHeader =
        decode(&read_frame(&mut stream, MAX_FRAME).await.unwrap().unwrap()).unwrap();
    assert_eq!(header.path, "results/r.txt");
    stream.read_to_end(1 << 20).await.unwrap();
    client
        .send(ToAgent::ResultsDone(ResultsDoneMsg {
            sweep_id: sweep.clone(),
            task: task_ref(index),
        }))
        .await;
}

struct Setup {
    _tmp: tempfile::TempDir,
    state: PathBuf,
    work: PathBuf,
    project: PathBuf,
    a: Identity,
    b: Identity,
}

fn setup() -> Setup {
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
    Setup {
        _tmp: tmp,
        state,
        work,
        project,
        a,
        b,
    }
}

fn leftovers(work: &Path) -> Vec<String> {
    std::fs::read_dir(work)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

const WRITES_RESULT: &str = "echo hello; echo a > \"$HSM_OUTPUT_DIR/r.txt\"";

#[tokio::test]
async fn clean_removes_only_a_sweep_the_requester_may_remove_and_that_holds_nothing() {
    let s = setup();
    let agent = Agent::start(&s.state, &s.work);
    let done = SweepId::from("sweep_done");
    let live = SweepId::from("sweep_live");
    let dir = s.work.join(done.as_str());

    // A runs two sweeps: one whose task ends with a result, one whose task runs on.
    let mut first = Client::connect(&agent, &s.a).await;
    first
        .send(submit(&done, &s.project, &[(1, WRITES_RESULT)]))
        .await;
    first
        .send(submit(&live, &s.project, &[(1, "exec sleep 300")]))
        .await;
    let mut seen = Seen::default();
    first
        .collect(&mut seen, |s| s.has(1, offered) && s.has(1, started))
        .await;
    // While the session that runs it is connected, it is in use.
    let answer = clean(&mut first, &mut seen, clean_of(&[&done], None, false)).await;
    assert!(
        kept_reason(&answer, &done).contains("connected to it now"),
        "{answer:?}"
    );
    first.close().await;
    assert!(dir.join("tasks/task_001/results/r.txt").is_file());

    // Another identity may not remove A's sweep; a sweep never seen is absent.
    let mut other = Client::connect(&agent, &s.b).await;
    let mut seen_b = Seen::default();
    let nowhere = SweepId::from("sweep_nowhere");
    let answer = clean(
        &mut other,
        &mut seen_b,
        clean_of(&[&done, &nowhere], None, false),
    )
    .await;
    assert!(
        kept_reason(&answer, &done).contains("another coordinator identity"),
        "{answer:?}"
    );
    assert_eq!(answer.absent, std::slice::from_ref(&nowhere));
    assert!(answer.removed.is_empty());
    other.close().await;

    // A, from a new connection (as `agent clean` is): the running sweep is kept, and so is the
    // finished one while its events and result file have not been taken.
    let mut again = Client::connect(&agent, &s.a).await;
    let mut seen = Seen::default();
    again.collect(&mut seen, |s| s.has(1, offered)).await;
    let answer = clean(
        &mut again,
        &mut seen,
        clean_of(&[&done, &live], None, false),
    )
    .await;
    assert!(
        kept_reason(&answer, &live).contains("still queued or running"),
        "{answer:?}"
    );
    assert!(
        kept_reason(&answer, &done).contains("has not taken"),
        "{answer:?}"
    );
    assert!(dir.is_dir());

    let done_events: Vec<TaskEventMsg> = seen
        .events
        .iter()
        .filter(|e| e.sweep_id == done)
        .cloned()
        .collect();
    let mut taken = Seen {
        events: done_events,
        ..Seen::default()
    };
    take_everything(&mut again, &mut taken, &done, 1).await;
    again.settle(&mut seen, 7).await;

    // Now it holds nothing: a dry run and a too-recent one remove nothing.
    let answer = clean(&mut again, &mut seen, clean_of(&[&done], None, true)).await;
    assert_eq!(removed(&answer), ["sweep_done"], "{answer:?}");
    assert!(answer.removed[0].task_dirs == 1 && answer.removed[0].bytes > 0);
    assert!(dir.is_dir(), "a dry run removed it");
    let answer = clean(&mut again, &mut seen, clean_of(&[&done], Some(3600), false)).await;
    assert!(
        kept_reason(&answer, &done).contains("less than --older-than 1h"),
        "{answer:?}"
    );
    assert!(dir.is_dir());

    let answer = clean(&mut again, &mut seen, clean_of(&[&done], None, false)).await;
    assert_eq!(removed(&answer), ["sweep_done"], "{answer:?}");
    assert!(!dir.exists(), "its directory is gone");
    assert!(leftovers(&s.work).is_empty(), "{:?}", leftovers(&s.work));
    assert!(s.work.join(live.as_str()).is_dir(), "the other sweep stays");
    // Forgotten: asked again, there is nothing of it.
    let answer = clean(&mut again, &mut seen, clean_of(&[&done], None, false)).await;
    assert_eq!(answer.absent, std::slice::from_ref(&done), "{answer:?}");

    again
        .send(ToAgent::Cancel(CancelMsg {
            sweep_id: live,
            tasks: Vec::new(),
            unstarted_only: false,
        }))
        .await;
    again.close().await;
}

#[tokio::test]
async fn retention_forgets_an_abandoned_sweep_after_it_and_not_before() {
    let s = setup();
    let sweep = SweepId::from("sweep_abandoned");
    let dir = s.work.join(sweep.as_str());
    let mut agent = Agent::start_with(&s.state, &s.work, &["--ledger-retention", "10m"]);
    let mut client = Client::connect(&agent, &s.a).await;
    client
        .send(submit(&sweep, &s.project, &[(1, WRITES_RESULT)]))
        .await;
    let mut seen = Seen::default();
    client.collect(&mut seen, |s| s.has(1, offered)).await;
    // The coordinator goes away without taking anything.
    client.close().await;

    // Restarted with a retention it has not reached: checked at start, kept.
    agent.stop();
    drop(agent);
    let mut agent = Agent::start_with(&s.state, &s.work, &["--ledger-retention", "10m"]);
    let mut client = Client::connect(&agent, &s.a).await;
    let mut replay = Seen::default();
    client.collect(&mut replay, |s| s.has(1, offered)).await;
    client.close().await;
    assert!(dir.join("tasks/task_001/results/r.txt").is_file());

    // Restarted with a retention it has passed (2 s after its coordinator left): forgotten.
    agent.stop();
    drop(agent);
    let agent = Agent::start_with(&s.state, &s.work, &["--ledger-retention", "2s"]);
    let since = Instant::now();
    while dir.exists() {
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "the abandoned sweep is still there"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(leftovers(&s.work).is_empty(), "{:?}", leftovers(&s.work));
    let mut client = Client::connect(&agent, &s.a).await;
    client
        .send(ToAgent::Attach(AttachMsg {
            sweep_id: sweep.clone(),
            tasks: vec![task_ref(1)],
        }))
        .await;
    let mut after = Seen::default();
    client.collect(&mut after, |s| !s.attached.is_empty()).await;
    client.settle(&mut after, 1).await;
    assert_eq!(after.attached, [(sweep.clone(), vec![task_ref(1)])]);
    assert!(after.events.is_empty(), "{:?}", after.sweeps());
    client.close().await;
}
