//! Running tasks through a real `hsm-agent serve` process, with a test client speaking the
//! protocol through the library in place of the coordinator: slots, live output, outcomes,
//! cancel, result offers and result-file streams, replay of unacknowledged events after a
//! reconnect, bounded memory for a task that prints a lot, and refusal of unsafe sweep ids.
//!
//! Every wait is bounded, and the agent is stopped by its pid when a test ends (SIGTERM, so it
//! kills its tasks' process groups, then SIGKILL if it lingers). Task commands never run longer
//! than a few seconds on their own, so nothing outlives a failed test for long.
//!
//! The bounds are hang guards, not speed checks: a wait fails when nothing new has happened for
//! a long while (`STALL`), never because the whole of some work took long. A debug build on a
//! machine busy with other work can be many times slower than on an idle one.

use hsm_agent::identity::{AuthorizedKeys, Identity};
use hsm_agent::tls::{self, TransportOptions};
use hsm_agent::wire::{read_frame, write_message};
use hsm_protocol::{
    decode, AckMsg, CancelMsg, EventKind, FetchMsg, FileHeader, FileOffer, FromAgent, Hello,
    HelloReply, OutcomeMsg, ResultsDoneMsg, Stream, SubmitMsg, SweepId, TaskEventMsg, TaskIndex,
    TaskMsg, TaskRef, TemplateMsg, ToAgent, Welcome, MAX_FRAME,
};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest wait for any single frame. The agent heartbeats every second, so only an agent that
/// is stuck (or starved for this long) stays silent this long.
const FRAME_WAIT: Duration = Duration::from_secs(30);

/// Longest time a wait may go without progress (a new event, error or attach; a byte of output
/// or of a log) before it fails. Generous: each step these tests wait for takes well under a
/// second on an idle machine.
const STALL: Duration = Duration::from_secs(60);

/// Fails a loop that has gone `STALL` without its measure of progress changing; never because
/// of the total time, which grows with the machine's load.
struct Progress<T> {
    last: T,
    since: Instant,
}

impl<T: PartialEq> Progress<T> {
    fn new(start: T) -> Progress<T> {
        Progress {
            last: start,
            since: Instant::now(),
        }
    }

    /// Records `now`; true while it changed within the last `STALL`.
    fn moving(&mut self, now: T) -> bool {
        if now != self.last {
            self.last = now;
            self.since = Instant::now();
        }
        self.since.elapsed() < STALL
    }
}

/// A running `hsm-agent serve`, stopped by its pid when dropped.
struct Agent {
    child: Child,
    addr: std::net::SocketAddr,
    fingerprint: String,
    work_dir: PathBuf,
    dir: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SIGTERM first: the daemon then shuts its runtime down, which kills its tasks' groups.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: plain syscall; the pid is our own unreaped child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(6);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_agent(coordinator: &Identity, slots: u32) -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let work_dir = dir.path().join("work");
    Identity::load_or_create(&state, "hsm-agent").unwrap();
    AuthorizedKeys::authorize(&state, &coordinator.fingerprint()).unwrap();
    // HSM_TEST_AGENT_LOG=1 shows the daemon's log while debugging a test.
    let stderr = if std::env::var_os("HSM_TEST_AGENT_LOG").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_hsm-agent"))
        .args(["serve", "--listen", "127.0.0.1:0", "--heartbeat", "1"])
        .arg("--slots")
        .arg(slots.to_string())
        .arg("--state-dir")
        .arg(&state)
        .arg("--work-dir")
        .arg(&work_dir)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start hsm-agent serve");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = lines.next().unwrap().unwrap();
    let fingerprint = lines.next().unwrap().unwrap();
    Agent {
        addr: addr.strip_prefix("listening on ").unwrap().parse().unwrap(),
        fingerprint: fingerprint
            .strip_prefix("fingerprint ")
            .unwrap()
            .to_string(),
        child,
        work_dir,
        dir,
    }
}

/// A protocol-speaking stand-in for the coordinator, connected and welcomed.
struct Client {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    welcome: Welcome,
}

impl Client {
    async fn connect(agent: &Agent, coordinator: &Identity) -> Client {
        let endpoint = tls::client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
        let config =
            tls::client_config(coordinator, &agent.fingerprint, TransportOptions::default())
                .unwrap();
        let conn = tls::connect(&endpoint, agent.addr, config, FRAME_WAIT)
            .await
            .unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        write_message(&mut send, &Hello::new("test")).await.unwrap();
        let reply = tokio::time::timeout(FRAME_WAIT, read_frame(&mut recv, MAX_FRAME))
            .await
            .expect("welcome in time")
            .unwrap()
            .unwrap();
        let welcome = match decode::<HelloReply>(&reply).unwrap() {
            HelloReply::Welcome(w) => w,
            other => panic!("expected a welcome, got {other:?}"),
        };
        Client {
            endpoint,
            conn,
            send,
            recv,
            welcome,
        }
    }

    async fn next(&mut self) -> FromAgent {
        let frame = tokio::time::timeout(FRAME_WAIT, read_frame(&mut self.recv, MAX_FRAME))
            .await
            .expect("agent sent something in time")
            .unwrap()
            .expect("a frame");
        decode(&frame).unwrap()
    }

    async fn send(&mut self, msg: &ToAgent) {
        write_message(&mut self.send, msg).await.unwrap();
    }

    async fn ack(&mut self, events: &[TaskEventMsg]) {
        let acks = events.iter().map(TaskEventMsg::event_ref).collect();
        self.send(&ToAgent::Ack(AckMsg { acks })).await;
    }

    async fn close(self) {
        self.conn.close(0u32.into(), b"done");
        let _ = tokio::time::timeout(Duration::from_secs(3), self.endpoint.wait_idle()).await;
    }
}

/// What a client saw while collecting events.
#[derive(Default)]
struct Seen {
    /// Every event in arrival order.
    events: Vec<TaskEventMsg>,
    errors: Vec<String>,
    /// `running` of every heartbeat.
    heartbeats: Vec<u32>,
    /// `unknown` of every `Attached`.
    attached: Vec<Vec<TaskRef>>,
}

impl Seen {
    fn of(&self, index: u64) -> Vec<&TaskEventMsg> {
        self.events
            .iter()
            .filter(|e| e.task.index.0 == index)
            .collect()
    }

    fn offered(&self, index: u64) -> bool {
        self.of(index)
            .iter()
            .any(|e| matches!(e.kind, EventKind::ResultOffer { .. }))
    }

    fn outcome(&self, index: u64) -> Option<&OutcomeMsg> {
        self.of(index).into_iter().find_map(|e| match &e.kind {
            EventKind::Exited { outcome, .. } => Some(outcome),
            _ => None,
        })
    }

    fn started(&self, index: u64) -> bool {
        self.of(index)
            .iter()
            .any(|e| matches!(e.kind, EventKind::Started { .. }))
    }

    fn output(&self, index: u64, stream: Stream) -> Vec<u8> {
        let mut out = Vec::new();
        for e in self.of(index) {
            if let EventKind::Output { stream: s, data } = &e.kind {
                if *s == stream {
                    out.extend_from_slice(data.as_slice());
                }
            }
        }
        out
    }

    fn offer(&self, index: u64) -> Vec<FileOffer> {
        self.of(index)
            .into_iter()
            .find_map(|e| match &e.kind {
                EventKind::ResultOffer { files } => Some(files.clone()),
                _ => None,
            })
            .unwrap_or_default()
    }
}

/// Reads frames (acknowledging each batch of events when `ack`) until `done` holds; fails when
/// `STALL` passes without a new event, error or attach (heartbeats do not count: they come
/// every second from an agent that is otherwise stuck).
async fn collect(client: &mut Client, seen: &mut Seen, ack: bool, done: impl Fn(&Seen) -> bool) {
    let mut progress = Progress::new((0, 0, 0));
    while !done(seen) {
        assert!(
            progress.moving((seen.events.len(), seen.errors.len(), seen.attached.len())),
            "condition not reached, nothing new for {STALL:?}; errors {:?}; events {:#?}",
            seen.errors,
            seen.events.iter().map(short).collect::<Vec<_>>()
        );
        match client.next().await {
            FromAgent::Events(batch) => {
                if ack {
                    client.ack(&batch.events).await;
                }
                seen.events.extend(batch.events);
            }
            FromAgent::Heartbeat(h) => seen.heartbeats.push(h.running),
            FromAgent::Error(e) => seen.errors.push(e.message),
            FromAgent::Pong(_) | FromAgent::Cleaned(_) => {}
            FromAgent::Attached(a) => seen.attached.push(a.unknown),
        }
    }
}

/// An event without its output bytes, for failure messages.
fn short(e: &TaskEventMsg) -> String {
    let kind = match &e.kind {
        EventKind::Output { stream, data } => format!("Output({stream:?}, {} bytes)", data.0.len()),
        other => format!("{other:?}"),
    };
    format!("task {} seq {}: {kind}", e.task.index, e.seq)
}

/// Checks the documented per-attempt order: seq 1.. without gaps; Started (unless it never
/// ran), Output*, Exited, ResultOffer; nothing after the offer.
fn check_sequence(seen: &Seen, index: u64) {
    let events = seen.of(index);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq.0, i as u64 + 1, "task {index}: seqs {:?}", {
            events.iter().map(|e| e.seq.0).collect::<Vec<_>>()
        });
    }
    let kinds: Vec<char> = events
        .iter()
        .map(|e| match e.kind {
            EventKind::Submitted { .. } => 'J',
            EventKind::Started { .. } => 'S',
            EventKind::Output { .. } => 'O',
            EventKind::Exited { .. } => 'E',
            EventKind::ResultOffer { .. } => 'R',
        })
        .collect();
    let text: String = kinds.iter().collect();
    let ok = text.strip_suffix("ER").is_some_and(|head| {
        head.is_empty() || (head.starts_with('S') && head[1..].chars().all(|c| c == 'O'))
    });
    assert!(ok, "task {index}: event kinds {text}");
}

fn template(id: u32, script: &str, cwd: &Path) -> TemplateMsg {
    TemplateMsg {
        id,
        argv_prefix: vec!["/bin/sh".into(), "-c".into(), script.into(), "sh".into()],
        env: vec![
            ("HSM_OUTPUT_DIR".into(), "/coordinator/side/path".into()),
            ("GREETING".into(), "hi".into()),
        ],
        cwd: cwd.to_string_lossy().into_owned(),
        timeout_ms: None,
        kill_grace_ms: 200,
        hpc: None,
        compact: false,
    }
}

fn task(index: u64, template: u32, args: &[&str]) -> TaskMsg {
    TaskMsg {
        index: TaskIndex(index),
        attempt: hsm_protocol::Attempt(1),
        template,
        args: args.iter().map(|s| s.to_string()).collect(),
        env: Vec::new(),
    }
}

fn task_ref(index: u64) -> TaskRef {
    TaskRef {
        index: TaskIndex(index),
        attempt: hsm_protocol::Attempt(1),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Receives the result-file streams of one fetch: header, then the bytes to the stream's end.
async fn receive_files(client: &Client, count: usize) -> Vec<(FileHeader, Vec<u8>)> {
    let mut files = Vec::new();
    for _ in 0..count {
        let mut stream = tokio::time::timeout(FRAME_WAIT, client.conn.accept_uni())
            .await
            .expect("a result stream in time")
            .unwrap();
        let header = read_frame(&mut stream, MAX_FRAME).await.unwrap().unwrap();
        let header: FileHeader = decode(&header).unwrap();
        let bytes = tokio::time::timeout(FRAME_WAIT, stream.read_to_end(64 << 20))
            .await
            .expect("file bytes in time")
            .unwrap();
        files.push((header, bytes));
    }
    files
}

const WRITE_RESULTS: &str = r#"
echo "hello from $1 in $(pwd) ($GREETING)"
echo "warning from $1" >&2
if [ "$2" = big ]; then
    head -c 12582912 /dev/urandom > "$HSM_OUTPUT_DIR/out.txt"
else
    head -c "$2" /dev/zero | tr '\0' x > "$HSM_OUTPUT_DIR/out.txt"
fi
mkdir -p "$HSM_OUTPUT_DIR/sub"
echo "$1" > "$HSM_OUTPUT_DIR/sub/name.txt"
sleep 0.3
echo "bye from $1"
"#;

#[tokio::test]
async fn six_tasks_run_two_at_a_time_and_their_files_arrive_intact() {
    let coordinator = Identity::generate("hsm-coordinator").unwrap();
    let agent = start_agent(&coordinator, 2);
    let project = agent.dir.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    let mut client = Client::connect(&agent, &coordinator).await;
    assert!(client.welcome.running.is_empty());
    let sizes = ["0", "1", "1000", "100000", "big", "5000"];
    let sweep = SweepId::from("sweep_20250101_120000");
    client
        .send(&ToAgent::Submit(SubmitMsg {
            sweep_id: sweep.clone(),
            templates: vec![template(7, WRITE_RESULTS, &project)],
            tasks: (1..=6)
                .map(|i| task(i, 7, &[&format!("t{i}"), sizes[i as usize - 1]]))
                .collect(),
        }))
        .await;
    let mut seen = Seen::default();
    collect(&mut client, &mut seen, false, |s| {
        (1..=6).all(|i| s.offered(i))
    })
    .await;
    assert!(seen.errors.is_empty(), "{:?}", seen.errors);

    // Never more than two processes at once, by the agent's own start and exit times (an exit
    // is reported after the task's output is drained, so arrival order alone can show the next
    // task's start first).
    let mut moments = Vec::new();
    for e in &seen.events {
        match e.kind {
            EventKind::Started { at_ms, .. } => moments.push((at_ms, 1, e.task.index.0)),
            EventKind::Exited { at_ms, .. } => moments.push((at_ms, -1, e.task.index.0)),
            _ => {}
        }
    }
    moments.sort();
    let mut running = 0;
    for (_, delta, _) in &moments {
        running += delta;
        assert!(running <= 2, "more than two running: {moments:?}");
    }
    assert!(
        seen.heartbeats.iter().all(|&r| r <= 2),
        "{:?}",
        seen.heartbeats
    );

    let tasks_dir = agent.work_dir.join(sweep.as_str()).join("tasks");
    for i in 1..=6u64 {
        check_sequence(&seen, i);
        assert_eq!(
            seen.outcome(i),
            Some(&OutcomeMsg::Exited { code: 0 }),
            "task {i}"
        );
        let stdout = String::from_utf8(seen.output(i, Stream::Stdout)).unwrap();
        let cwd = std::fs::canonicalize(&project).unwrap();
        assert_eq!(
            stdout,
            format!("hello from t{i} in {} (hi)\nbye from t{i}\n", cwd.display())
        );
        assert_eq!(
            seen.output(i, Stream::Stderr),
            format!("warning from t{i}\n").into_bytes()
        );
        let dir = tasks_dir.join(format!("task_{i:03}"));
        assert_eq!(
            std::fs::read_to_string(dir.join("stdout.log")).unwrap(),
            stdout
        );
        let offer = seen.offer(i);
        let paths: Vec<&str> = offer.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            ["results/out.txt", "results/sub/name.txt"],
            "task {i}"
        );
        let expected = match sizes[i as usize - 1] {
            "big" => 12 << 20,
            n => n.parse().unwrap(),
        };
        assert_eq!(offer[0].size, expected, "task {i}");
        assert_eq!(offer[1].size, format!("t{i}\n").len() as u64);
    }

    // Fetch every task's files; each arrives on its own stream, matching the offer and the
    // agent's copy byte for byte.
    for i in 1..=6u64 {
        let offer = seen.offer(i);
        client
            .send(&ToAgent::FetchResults(FetchMsg {
                sweep_id: sweep.clone(),
                task: task_ref(i),
                paths: Vec::new(),
            }))
            .await;
        let files = receive_files(&client, offer.len()).await;
        let dir = tasks_dir.join(format!("task_{i:03}"));
        for (header, bytes) in files {
            assert_eq!(
                (header.sweep_id.clone(), header.task),
                (sweep.clone(), task_ref(i))
            );
            let offered = offer.iter().find(|f| f.path == header.path).unwrap();
            assert_eq!(
                (header.size, &header.sha256),
                (offered.size, &offered.sha256)
            );
            assert_eq!(bytes.len() as u64, header.size, "{}", header.path);
            assert_eq!(sha256_hex(&bytes), header.sha256, "{}", header.path);
            assert_eq!(bytes, std::fs::read(dir.join(&header.path)).unwrap());
        }
    }
    // A subset by path; a path that was not offered, or that climbs out, is refused.
    client
        .send(&ToAgent::FetchResults(FetchMsg {
            sweep_id: sweep.clone(),
            task: task_ref(5),
            paths: vec!["results/sub/name.txt".into()],
        }))
        .await;
    let files = receive_files(&client, 1).await;
    assert_eq!(files[0].0.path, "results/sub/name.txt");
    assert_eq!(files[0].1, b"t5\n");
    for path in ["../task_001/stdout.log", "stdout.log", "/etc/passwd"] {
        client
            .send(&ToAgent::FetchResults(FetchMsg {
                sweep_id: sweep.clone(),
                task: task_ref(5),
                paths: vec![path.into()],
            }))
            .await;
        let mut errors = Seen::default();
        collect(&mut client, &mut errors, false, |s| !s.errors.is_empty()).await;
        assert!(
            errors.errors[0].contains("refused fetch"),
            "{:?}",
            errors.errors
        );
    }

    // Acknowledged and done: the agent deletes the results and keeps the logs.
    client.ack(&seen.events).await;
    for i in 1..=6 {
        client
            .send(&ToAgent::ResultsDone(ResultsDoneMsg {
                sweep_id: sweep.clone(),
                task: task_ref(i),
            }))
            .await;
    }
    // A hang guard: deleting six small trees takes milliseconds.
    let deadline = Instant::now() + STALL;
    for i in 1..=6 {
        let dir = tasks_dir.join(format!("task_{i:03}"));
        while dir.join("results").exists() {
            assert!(Instant::now() < deadline, "results of task {i} not deleted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(dir.join("stdout.log").is_file() && dir.join("stderr.log").is_file());
    }
    client.close().await;
    // Nothing unacknowledged is replayed, and nothing is held.
    let mut client = Client::connect(&agent, &coordinator).await;
    assert!(client.welcome.running.is_empty());
    let mut after = Seen::default();
    collect(&mut client, &mut after, false, |s| s.heartbeats.len() >= 2).await;
    assert!(
        after.events.is_empty(),
        "{:?}",
        after.events.iter().map(short).collect::<Vec<_>>()
    );
    assert_eq!(after.heartbeats.last(), Some(&0));
    client.close().await;
}

#[tokio::test]
async fn failures_timeouts_cancels_and_bad_cwds_have_their_outcomes() {
    let coordinator = Identity::generate("hsm-coordinator").unwrap();
    let agent = start_agent(&coordinator, 2);
    let project = agent.dir.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    let mut client = Client::connect(&agent, &coordinator).await;
    let sweep = SweepId::from("s2");
    let mut timed = template(2, "sleep 10", &project);
    timed.timeout_ms = Some(500);
    let missing = agent.dir.path().join("no/such/dir");
    client
        .send(&ToAgent::Submit(SubmitMsg {
            sweep_id: sweep.clone(),
            templates: vec![
                template(1, "echo failing; exit 3", &project),
                timed,
                template(3, "sleep 10", &project),
                template(4, "echo never", &missing),
            ],
            tasks: vec![
                task(1, 1, &[]),
                task(2, 2, &[]),
                task(3, 3, &[]),
                task(4, 4, &[]),
                task(5, 3, &[]),
                task(6, 3, &[]),
                task(7, 3, &[]),
            ],
        }))
        .await;
    let mut seen = Seen::default();
    // 1 fails, 2 times out, 4 cannot start; 3 and 5 then hold the two slots.
    collect(&mut client, &mut seen, true, |s| {
        s.offered(1) && s.offered(2) && s.offered(4) && s.started(3) && s.started(5)
    })
    .await;
    assert_eq!(seen.outcome(1), Some(&OutcomeMsg::Exited { code: 3 }));
    assert_eq!(seen.output(1, Stream::Stdout), b"failing\n");
    assert_eq!(seen.outcome(2), Some(&OutcomeMsg::TimedOut));
    match seen.outcome(4) {
        Some(OutcomeMsg::SpawnFailed { message }) => assert!(
            message.contains(&missing.display().to_string()),
            "{message}"
        ),
        other => panic!("task 4: {other:?}"),
    }
    assert!(!seen.started(4));
    assert!(!seen.started(6) && !seen.started(7));

    // Resending the same attempt (a coordinator unsure whether it arrived) is ignored.
    client
        .send(&ToAgent::Submit(SubmitMsg {
            sweep_id: sweep.clone(),
            templates: vec![template(3, "sleep 10", &project)],
            tasks: vec![task(5, 3, &[])],
        }))
        .await;
    // Cancel one running task; the next queued one takes its slot.
    client
        .send(&ToAgent::Cancel(CancelMsg {
            sweep_id: sweep.clone(),
            tasks: vec![task_ref(3)],
            unstarted_only: false,
        }))
        .await;
    collect(&mut client, &mut seen, true, |s| {
        s.offered(3) && s.started(6)
    })
    .await;
    assert_eq!(seen.outcome(3), Some(&OutcomeMsg::Cancelled));
    // Cancel the rest of the sweep: 5 and 6 are running, 7 never starts.
    client
        .send(&ToAgent::Cancel(CancelMsg {
            sweep_id: sweep.clone(),
            tasks: Vec::new(),
            unstarted_only: false,
        }))
        .await;
    collect(&mut client, &mut seen, true, |s| {
        (1..=7).all(|i| s.offered(i))
    })
    .await;
    for i in [5, 6, 7] {
        assert_eq!(seen.outcome(i), Some(&OutcomeMsg::Cancelled), "task {i}");
    }
    assert!(!seen.started(7));
    for i in 1..=7 {
        check_sequence(&seen, i);
    }
    assert!(seen.errors.is_empty(), "{:?}", seen.errors);
    // The heartbeat counts running processes: none now.
    let mut after = Seen::default();
    collect(&mut client, &mut after, true, |s| !s.heartbeats.is_empty()).await;
    assert_eq!(after.heartbeats, [0]);
    client.close().await;
}

#[tokio::test]
async fn unacknowledged_events_are_replayed_after_a_reconnect() {
    let coordinator = Identity::generate("hsm-coordinator").unwrap();
    let agent = start_agent(&coordinator, 2);
    let project = agent.dir.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    let sweep = SweepId::from("s3");
    let mut client = Client::connect(&agent, &coordinator).await;
    client
        .send(&ToAgent::Submit(SubmitMsg {
            sweep_id: sweep.clone(),
            templates: vec![template(
                1,
                "echo first; sleep 1.5; echo second; echo data > $HSM_OUTPUT_DIR/r.txt",
                &project,
            )],
            tasks: vec![task(1, 1, &[])],
        }))
        .await;
    let mut first = Seen::default();
    collect(&mut client, &mut first, false, |s| {
        !s.output(1, Stream::Stdout).is_empty()
    })
    .await;
    // Drop the connection without acknowledging anything, while the task runs.
    client.close().await;

    let mut client = Client::connect(&agent, &coordinator).await;
    assert_eq!(
        client.welcome.running,
        [hsm_protocol::SweepTaskRef {
            sweep_id: sweep.clone(),
            task: task_ref(1)
        }],
        "the task is still running"
    );
    let mut second = Seen::default();
    collect(&mut client, &mut second, false, |s| s.offered(1)).await;
    check_sequence(&second, 1);
    // The replay starts at seq 1 and repeats exactly what the first connection saw.
    assert_eq!(second.events[..first.events.len()], first.events[..]);
    assert_eq!(second.output(1, Stream::Stdout), b"first\nsecond\n");
    assert_eq!(second.offer(1)[0].path, "results/r.txt");
    client.close().await;

    // Still nothing acknowledged: everything again.
    let mut client = Client::connect(&agent, &coordinator).await;
    assert!(client.welcome.running.is_empty(), "the task has exited");
    let mut third = Seen::default();
    collect(&mut client, &mut third, false, |s| s.offered(1)).await;
    assert_eq!(third.events, second.events);
    // Acknowledge all but the offer: only the offer comes back next time.
    let (offer, rest) = third.events.split_last().unwrap();
    client.ack(rest).await;
    // Ping as a barrier: the agent has applied the ack once the pong arrives.
    client
        .send(&ToAgent::Ping(hsm_protocol::PingMsg { nonce: 1 }))
        .await;
    while !matches!(client.next().await, FromAgent::Pong(_)) {}
    client.close().await;

    let mut client = Client::connect(&agent, &coordinator).await;
    let mut fourth = Seen::default();
    collect(&mut client, &mut fourth, false, |s| s.offered(1)).await;
    assert_eq!(fourth.events, std::slice::from_ref(offer));
    client.ack(&fourth.events).await;
    client
        .send(&ToAgent::Ping(hsm_protocol::PingMsg { nonce: 2 }))
        .await;
    while !matches!(client.next().await, FromAgent::Pong(_)) {}
    client.close().await;

    let mut client = Client::connect(&agent, &coordinator).await;
    let mut fifth = Seen::default();
    collect(&mut client, &mut fifth, false, |s| s.heartbeats.len() >= 2).await;
    assert!(
        fifth.events.is_empty(),
        "acknowledged events are not replayed"
    );

    // A coordinator that restarted (and may have died before writing down what it had
    // acknowledged) takes the attempt up: its end is reported again, after the last seq; an
    // attempt never held here is named unknown.
    let never = TaskRef {
        index: hsm_protocol::TaskIndex(2),
        attempt: hsm_protocol::Attempt(1),
    };
    client
        .send(&ToAgent::Attach(hsm_protocol::AttachMsg {
            sweep_id: sweep.clone(),
            tasks: vec![task_ref(1), never],
        }))
        .await;
    let mut sixth = Seen::default();
    collect(&mut client, &mut sixth, true, |s| {
        s.offered(1) && !s.attached.is_empty()
    })
    .await;
    assert_eq!(sixth.attached, [vec![never]]);
    let last_seq = third.events.last().unwrap().seq.0;
    let again: Vec<(u64, bool)> = sixth
        .events
        .iter()
        .map(|e| (e.seq.0, matches!(e.kind, EventKind::Exited { .. })))
        .collect();
    assert_eq!(again, [(last_seq + 1, true), (last_seq + 2, false)]);
    assert_eq!(sixth.outcome(1), Some(&OutcomeMsg::Exited { code: 0 }));
    assert_eq!(sixth.offer(1), third.offer(1), "the same files, still here");

    // The same attempt submitted again (a restarted coordinator that never wrote down it had
    // handed it over) is taken up the same way, not run again.
    client
        .send(&ToAgent::Submit(SubmitMsg {
            sweep_id: sweep.clone(),
            templates: vec![template(
                1,
                "echo ran again > $HSM_OUTPUT_DIR/r.txt",
                &project,
            )],
            tasks: vec![task(1, 1, &[])],
        }))
        .await;
    let mut seventh = Seen::default();
    collect(&mut client, &mut seventh, true, |s| s.offered(1)).await;
    assert!(!seventh.started(1), "not run again");
    assert_eq!(seventh.offer(1), third.offer(1));
    client.close().await;
}

/// The agent's resident memory, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[tokio::test]
async fn a_task_printing_200_mib_to_a_lagging_coordinator_keeps_memory_bounded() {
    const SIZE: u64 = 200 << 20;
    const RSS_LIMIT: u64 = 150 << 20;
    let coordinator = Identity::generate("hsm-coordinator").unwrap();
    let agent = start_agent(&coordinator, 2);
    let project = agent.dir.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    let pid = agent.child.id();
    let mut client = Client::connect(&agent, &coordinator).await;
    let sweep = SweepId::from("s4");
    client
        .send(&ToAgent::Submit(SubmitMsg {
            sweep_id: sweep.clone(),
            templates: vec![template(1, &format!("head -c {SIZE} /dev/zero"), &project)],
            tasks: vec![task(1, 1, &[])],
        }))
        .await;
    // Not reading (for at least three seconds) until the task has written its whole log: the
    // agent must take all of it while the client lags. How long writing 200 MiB takes depends
    // on the machine and its load, so this waits for the log to stop growing, not for a time.
    let log = agent.work_dir.join("s4/tasks/task_001/stdout.log");
    let log_len = || std::fs::metadata(&log).map_or(0, |m| m.len());
    let mut peak = 0;
    let lagging = Instant::now();
    let mut written = Progress::new(0);
    while lagging.elapsed() < Duration::from_secs(3) || log_len() < SIZE {
        assert!(
            written.moving(log_len()),
            "the log stopped growing at {} bytes",
            log_len()
        );
        peak = peak.max(rss_bytes(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(log_len(), SIZE, "task wrote it all");
    assert!(peak < RSS_LIMIT, "agent RSS {peak} while the client lagged");

    // Now read and acknowledge everything. Streaming 200 MiB through a debug build takes from
    // a few seconds to minutes depending on the machine's load, so the loop fails only when no
    // output arrives for `STALL`, not on the total time.
    let started = Instant::now();
    let mut received = 0u64;
    let mut last_seq = 0u64;
    let mut done = false;
    let mut counter = 0;
    let mut streaming = Progress::new(0);
    while !done {
        assert!(
            streaming.moving(last_seq),
            "only {received} bytes so far, nothing new for {STALL:?}"
        );
        if let FromAgent::Events(batch) = client.next().await {
            for e in &batch.events {
                assert_eq!(e.seq.0, last_seq + 1);
                last_seq = e.seq.0;
                match &e.kind {
                    EventKind::Output { data, stream } => {
                        assert_eq!(*stream, Stream::Stdout);
                        assert!(data.0.len() <= 64 * 1024);
                        assert!(data.0.iter().all(|&b| b == 0));
                        received += data.0.len() as u64;
                    }
                    EventKind::Exited { outcome, .. } => {
                        assert_eq!(outcome, &OutcomeMsg::Exited { code: 0 });
                        assert_eq!(received, SIZE, "all output before the exit");
                    }
                    EventKind::ResultOffer { .. } => done = true,
                    EventKind::Started { .. } => {}
                    EventKind::Submitted { .. } => {
                        panic!("a process task was submitted to a scheduler")
                    }
                }
            }
            client.ack(&batch.events).await;
            counter += 1;
            if counter % 20 == 0 {
                peak = peak.max(rss_bytes(pid));
            }
        }
    }
    assert_eq!(received, SIZE);
    peak = peak.max(rss_bytes(pid));
    assert!(peak < RSS_LIMIT, "agent RSS {peak} while streaming");
    eprintln!(
        "200 MiB of output streamed in {:?}, agent peak RSS {} MiB",
        started.elapsed(),
        peak >> 20
    );
    client.close().await;
}

#[tokio::test]
async fn unsafe_sweep_ids_are_refused_and_create_nothing() {
    let coordinator = Identity::generate("hsm-coordinator").unwrap();
    let agent = start_agent(&coordinator, 2);
    let project = agent.dir.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    let mut client = Client::connect(&agent, &coordinator).await;
    let bad = ["../x", "..", ".", "a/b", "/abs", ".hidden", ""];
    for id in bad {
        client
            .send(&ToAgent::Submit(SubmitMsg {
                sweep_id: SweepId::from(id),
                templates: vec![template(1, "echo pwned > $HSM_OUTPUT_DIR/x", &project)],
                tasks: vec![task(1, 1, &[])],
            }))
            .await;
        let mut seen = Seen::default();
        collect(&mut client, &mut seen, false, |s| !s.errors.is_empty()).await;
        assert!(
            seen.errors[0].contains("sweep id") && seen.errors[0].contains(&format!("{id:?}")),
            "{:?}",
            seen.errors
        );
        assert!(seen.events.is_empty());
    }
    // A moment for anything wrongly started to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let work: Vec<_> = std::fs::read_dir(&agent.work_dir).unwrap().collect();
    assert!(work.is_empty(), "work dir holds {work:?}");
    let mut top: Vec<String> = std::fs::read_dir(agent.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, ["project", "state", "work"]);
    assert_eq!(std::fs::read_dir(&project).unwrap().count(), 0);
    // A template the tasks do not name is refused per task; the rest of the submission runs.
    client
        .send(&ToAgent::Submit(SubmitMsg {
            sweep_id: SweepId::from("ok"),
            templates: vec![template(1, "true", &project)],
            tasks: vec![task(1, 9, &[]), task(2, 1, &[])],
        }))
        .await;
    let mut seen = Seen::default();
    collect(&mut client, &mut seen, true, |s| {
        s.offered(2) && !s.errors.is_empty()
    })
    .await;
    assert!(
        seen.errors[0].contains("unknown template 9"),
        "{:?}",
        seen.errors
    );
    assert!(seen.of(1).is_empty());
    client.close().await;
}

#[tokio::test]
async fn a_newer_attempt_stops_the_older_one_and_runs_in_its_directory() {
    let coordinator = Identity::generate("hsm-coordinator").unwrap();
    let agent = start_agent(&coordinator, 2);
    let project = agent.dir.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    let mut client = Client::connect(&agent, &coordinator).await;
    let sweep = SweepId::from("s5");
    let attempt = |index: u64, n: u32, template: u32| {
        let mut t = task(index, template, &[]);
        t.attempt = hsm_protocol::Attempt(n);
        t
    };
    let submit = |tasks: Vec<TaskMsg>| {
        ToAgent::Submit(SubmitMsg {
            sweep_id: sweep.clone(),
            templates: vec![
                template(
                    1,
                    "echo old > \"$HSM_OUTPUT_DIR/which\"; sleep 10",
                    &project,
                ),
                template(
                    2,
                    "echo new > \"$HSM_OUTPUT_DIR/which\"; echo second",
                    &project,
                ),
            ],
            tasks,
        })
    };
    // Task 1 attempt 1 and task 2 attempt 3 run (and would for 10 s).
    client
        .send(&submit(vec![attempt(1, 1, 1), attempt(2, 3, 1)]))
        .await;
    let mut seen = Seen::default();
    collect(&mut client, &mut seen, true, |s| {
        s.started(1) && s.started(2)
    })
    .await;
    // The coordinator moved on from attempt 1 of task 1 (lost, taken back) and sends attempt 2
    // here: attempt 1 is stopped, attempt 2 waits for it, then runs in the same directory with
    // only its own results. An attempt older than the one present is refused.
    client
        .send(&submit(vec![attempt(1, 2, 2), attempt(2, 2, 2)]))
        .await;
    let of = |s: &Seen, index: u64, n: u32| -> Vec<TaskEventMsg> {
        s.events
            .iter()
            .filter(|e| e.task.index.0 == index && e.task.attempt.0 == n)
            .cloned()
            .collect()
    };
    let offered = |events: &[TaskEventMsg]| -> Option<Vec<FileOffer>> {
        events.iter().find_map(|e| match &e.kind {
            EventKind::ResultOffer { files } => Some(files.clone()),
            _ => None,
        })
    };
    collect(&mut client, &mut seen, true, |s| {
        offered(&of(s, 1, 2)).is_some() && !s.errors.is_empty()
    })
    .await;
    let first = of(&seen, 1, 1);
    let exited = |events: &[TaskEventMsg]| {
        events.iter().find_map(|e| match &e.kind {
            EventKind::Exited { outcome, .. } => Some(outcome.clone()),
            _ => None,
        })
    };
    assert_eq!(exited(&first), Some(OutcomeMsg::Cancelled));
    let second = of(&seen, 1, 2);
    assert_eq!(exited(&second), Some(OutcomeMsg::Exited { code: 0 }));
    let first_end = seen
        .events
        .iter()
        .position(|e| e.task.attempt.0 == 1 && matches!(e.kind, EventKind::ResultOffer { .. }))
        .unwrap();
    let second_start = seen
        .events
        .iter()
        .position(|e| e.task.attempt.0 == 2 && matches!(e.kind, EventKind::Started { .. }))
        .unwrap();
    assert!(
        first_end < second_start,
        "attempt 2 started only after attempt 1 ended"
    );
    let files = offered(&second).unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].sha256, sha256_hex(b"new\n"));
    assert_eq!(seen.errors.len(), 1, "{:?}", seen.errors);
    assert!(
        seen.errors[0].contains("task 2 attempt 2") && seen.errors[0].contains("attempt 3"),
        "{:?}",
        seen.errors
    );
    assert!(of(&seen, 2, 2).is_empty(), "the refused attempt never ran");
    client
        .send(&ToAgent::Cancel(CancelMsg {
            sweep_id: sweep.clone(),
            tasks: Vec::new(),
            unstarted_only: false,
        }))
        .await;
    collect(&mut client, &mut seen, true, |s| {
        offered(&of(s, 2, 3)).is_some()
    })
    .await;
    client.close().await;
}

/// Queued tasks of a sweep whose coordinator went away wait until a coordinator of that sweep
/// confirms them: the coordinator takes waiting tasks back when it loses an agent and runs them
/// elsewhere, so starting them on its own would run them twice.
#[tokio::test]
async fn queued_tasks_wait_for_their_coordinator_to_confirm_them_after_it_left() {
    let coordinator = Identity::generate("hsm-coordinator").unwrap();
    let agent = start_agent(&coordinator, 1);
    let project = agent.dir.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    let sweep = SweepId::from("held");
    let mut client = Client::connect(&agent, &coordinator).await;
    // One slot: task 1 runs for 1.5 s, tasks 2 and 3 wait behind it.
    client
        .send(&ToAgent::Submit(SubmitMsg {
            sweep_id: sweep.clone(),
            templates: vec![template(1, "sleep ${1:-0}", &project)],
            tasks: vec![task(1, 1, &["1.5"]), task(2, 1, &[]), task(3, 1, &[])],
        }))
        .await;
    let mut seen = Seen::default();
    collect(&mut client, &mut seen, true, |s| s.started(1)).await;
    client.close().await;

    // Task 1 ends meanwhile; 2 and 3 must not start without their coordinator.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut client = Client::connect(&agent, &coordinator).await;
    let mut seen = Seen::default();
    collect(&mut client, &mut seen, true, |s| s.offered(1)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    client
        .send(&ToAgent::Ping(hsm_protocol::PingMsg { nonce: 7 }))
        .await;
    collect(&mut client, &mut seen, true, |s| !s.heartbeats.is_empty()).await;
    assert!(
        !seen.started(2) && !seen.started(3),
        "queued tasks started with no coordinator: {:?}",
        seen.events.iter().map(short).collect::<Vec<_>>()
    );
    // The coordinator confirms task 3 and takes task 2 back.
    client
        .send(&ToAgent::Cancel(CancelMsg {
            sweep_id: sweep.clone(),
            tasks: vec![task_ref(2)],
            unstarted_only: true,
        }))
        .await;
    client
        .send(&ToAgent::Attach(hsm_protocol::AttachMsg {
            sweep_id: sweep.clone(),
            tasks: vec![task_ref(3)],
        }))
        .await;
    collect(&mut client, &mut seen, true, |s| {
        s.offered(2) && s.offered(3)
    })
    .await;
    assert_eq!(seen.outcome(2), Some(&OutcomeMsg::Cancelled));
    assert!(!seen.started(2), "the task taken back never ran");
    assert_eq!(seen.outcome(3), Some(&OutcomeMsg::Exited { code: 0 }));
    client.close().await;
}
