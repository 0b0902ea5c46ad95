//! A real `hsm-agent serve` process against peers that misbehave on purpose: an authorized peer
//! announcing huge frames it never sends (the agent's memory must follow the bytes that arrive),
//! an unauthorized coordinator retrying hundreds of times (the agent's log must stay small), and
//! malformed messages (the agent's `Error` reply must arrive every time before it closes). The
//! peers are built from the protocol crate and the agent's TLS helpers; no real coordinator
//! sends any of this.
//!
//! Every wait is bounded by a hang guard; no assertion depends on how fast the machine is.

use hsm_agent::identity::{AuthorizedKeys, Identity};
use hsm_agent::tls::{self, TransportOptions};
use hsm_agent::wire::{read_frame, write_message};
use hsm_protocol::{decode, FromAgent, Hello, HelloReply, MAX_FRAME};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Hang guard for one step (a dial, a frame, a close): each takes milliseconds on an idle
/// machine, many times that on a busy one.
const STEP: Duration = Duration::from_secs(60);

/// A running `hsm-agent serve` whose log goes to a file, killed (by its pid) when dropped.
struct Agent {
    child: Child,
    addr: std::net::SocketAddr,
    fingerprint: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    fn start(authorized: &Identity) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        Identity::load_or_create(&state, "hsm-agent").unwrap();
        AuthorizedKeys::authorize(&state, &authorized.fingerprint()).unwrap();
        let log = dir.path().join("agent.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_hsm-agent"))
            .args(["serve", "--listen", "127.0.0.1:0", "--slots", "1"])
            .arg("--state-dir")
            .arg(&state)
            .env_remove("HSM_LOG")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
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
            log,
            _dir: dir,
        }
    }

    /// Resident memory of the agent process, in bytes.
    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .expect("VmRSS in /proc/<pid>/status");
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A connection to the agent as `identity`, with its control stream opened.
async fn dial(
    agent: &Agent,
    endpoint: &quinn::Endpoint,
    identity: &Identity,
) -> (quinn::Connection, quinn::SendStream, quinn::RecvStream) {
    let config =
        tls::client_config(identity, &agent.fingerprint, TransportOptions::default()).unwrap();
    let conn = tls::connect(endpoint, agent.addr, config, STEP)
        .await
        .expect("dial the agent");
    let (send, recv) = conn.open_bi().await.unwrap();
    (conn, send, recv)
}

fn client_endpoint() -> quinn::Endpoint {
    tls::client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap()
}

/// Bytes of frame body each hostile stream sends: enough that the agent's reading of it shows up
/// as a flow-control credit (quinn grants one after 1/8 of its 1.25 MB stream window is read),
/// so the test knows the agent has taken the announced length and the bytes, and a tiny fraction
/// of the 16 MiB announced.
const HOSTILE_BODY: usize = 192 * 1024;
const HOSTILE_STREAMS: usize = 50;

#[tokio::test]
async fn frames_announced_but_not_sent_cost_the_agent_only_what_arrives() {
    let coordinator = Identity::generate("hsm-coordinator").unwrap();
    let agent = Agent::start(&coordinator);
    let endpoint = client_endpoint();

    // One legitimate 16 MiB frame first (a hello of junk, refused as malformed): once the
    // allocator has recycled a freed buffer that large, a zeroed buffer of the announced size on
    // each later stream is real memory.
    let (conn, mut send, _recv) = dial(&agent, &endpoint, &coordinator).await;
    send.write_all(&(MAX_FRAME as u32).to_be_bytes())
        .await
        .unwrap();
    send.write_all(&vec![0xc1; MAX_FRAME]).await.unwrap();
    let _ = send.finish();
    tokio::time::timeout(STEP, conn.closed())
        .await
        .expect("the agent closes a connection whose hello is junk");
    let before = agent.rss();

    // Many streams, each announcing a full frame and sending a sliver of it, all held open.
    let mut held = Vec::new();
    for _ in 0..HOSTILE_STREAMS {
        let (conn, mut send, recv) = dial(&agent, &endpoint, &coordinator).await;
        send.write_all(&(MAX_FRAME as u32).to_be_bytes())
            .await
            .unwrap();
        send.write_all(&vec![0x90; HOSTILE_BODY]).await.unwrap();
        held.push((conn, send, recv));
    }
    // Wait until the agent has read from every stream (its flow-control credit came back).
    let guard = Instant::now() + STEP;
    for (conn, _, _) in &held {
        while conn.stats().frame_rx.max_stream_data == 0 {
            assert!(
                Instant::now() < guard,
                "the agent never read a hostile stream"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let after = agent.rss();
    let growth = after.saturating_sub(before);
    eprintln!(
        "agent RSS {} MB before, {} MB with {HOSTILE_STREAMS} streams announcing 16 MiB",
        before >> 20,
        after >> 20
    );
    // Buffers sized by the announcement would cost 16 MiB a stream (800 MB); buffers that grow
    // with the bytes cost about 2 x 192 KiB each, plus the connections themselves.
    assert!(
        growth < 64 << 20,
        "the agent grew by {} MB for {HOSTILE_STREAMS} streams that sent {} KiB each",
        growth >> 20,
        HOSTILE_BODY >> 10
    );

    // The agent still serves an honest coordinator.
    let (conn, mut send, mut recv) = dial(&agent, &endpoint, &coordinator).await;
    write_message(&mut send, &Hello::new("test")).await.unwrap();
    let reply = tokio::time::timeout(STEP, read_frame(&mut recv, MAX_FRAME))
        .await
        .expect("welcome in time")
        .unwrap()
        .unwrap();
    assert!(matches!(
        decode::<HelloReply>(&reply).unwrap(),
        HelloReply::Welcome(_)
    ));
    conn.close(0u32.into(), b"done");
    drop(held);
    endpoint.close(0u32.into(), b"done");
}

#[tokio::test]
async fn hundreds_of_refused_handshakes_write_a_few_lines_of_log() {
    let authorized = Identity::generate("hsm-coordinator").unwrap();
    let stranger = Identity::generate("someone else").unwrap();
    let agent = Agent::start(&authorized);
    let endpoint = client_endpoint();
    let config =
        tls::client_config(&stranger, &agent.fingerprint, TransportOptions::default()).unwrap();
    let started = agent.log_text().len();
    for _ in 0..300 {
        let refused = tls::connect(&endpoint, agent.addr, config.clone(), STEP).await;
        let err = refused.expect_err("an unauthorized coordinator is refused");
        assert!(err.is_permanent(), "{err:?}");
    }
    // The agent logs a refusal as it sends it; give the last one a moment to reach the file
    // (an upper bound is asserted, so an unflushed line can only make this pass less easily).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = agent.log_text();
    let written = log.len() - started;
    eprintln!("{written} bytes of log for 300 refused handshakes:\n{log}");
    assert!(
        written < 20_000,
        "{written} bytes of log for 300 refused handshakes"
    );
    // The first refusal is there in full, naming the coordinator and what to do.
    let stranger_fp = stranger.fingerprint();
    let full = log
        .lines()
        .filter(|l| l.contains(&format!("refused coordinator {stranger_fp}")))
        .count();
    assert!(full >= 1, "the first refusal is not logged in full:\n{log}");
    assert!(
        log.contains(&format!("hsm-agent authorize {stranger_fp}")),
        "{log}"
    );
    endpoint.close(0u32.into(), b"done");
}

#[tokio::test]
async fn every_malformed_message_gets_its_error_reply_before_the_close() {
    let coordinator = Identity::generate("hsm-coordinator").unwrap();
    let agent = Agent::start(&coordinator);
    let endpoint = client_endpoint();
    let mut lost = Vec::new();
    for round in 0..20 {
        let (conn, mut send, mut recv) = dial(&agent, &endpoint, &coordinator).await;
        write_message(&mut send, &Hello::new("test")).await.unwrap();
        let reply = tokio::time::timeout(STEP, read_frame(&mut recv, MAX_FRAME))
            .await
            .expect("welcome in time")
            .unwrap()
            .unwrap();
        assert!(matches!(
            decode::<HelloReply>(&reply).unwrap(),
            HelloReply::Welcome(_)
        ));
        // A frame whose body is no message (0xc1 is a MessagePack byte that is never used).
        send.write_all(b"\x00\x00\x00\x03\xc1\xc1\xc1")
            .await
            .unwrap();
        let answer = loop {
            let frame = tokio::time::timeout(STEP, read_frame(&mut recv, MAX_FRAME))
                .await
                .expect("the agent answers or closes in time");
            match frame {
                Ok(Some(frame)) => match decode::<FromAgent>(&frame).unwrap() {
                    FromAgent::Error(e) => break Ok(e.message),
                    FromAgent::Heartbeat(_) | FromAgent::Events(_) => {}
                    other => panic!("unexpected {other:?}"),
                },
                Ok(None) => break Err("the stream ended".to_string()),
                Err(e) => break Err(e.to_string()),
            }
        };
        match answer {
            Ok(message) => assert!(message.contains("malformed message"), "{message}"),
            Err(why) => lost.push(format!("round {round}: {why}")),
        }
        conn.close(0u32.into(), b"done");
    }
    assert!(lost.is_empty(), "error replies lost: {lost:#?}");

    // An oversized frame is answered the same way.
    let (conn, mut send, mut recv) = dial(&agent, &endpoint, &coordinator).await;
    write_message(&mut send, &Hello::new("test")).await.unwrap();
    tokio::time::timeout(STEP, read_frame(&mut recv, MAX_FRAME))
        .await
        .expect("welcome in time")
        .unwrap()
        .unwrap();
    send.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    let message = loop {
        let frame = tokio::time::timeout(STEP, read_frame(&mut recv, MAX_FRAME))
            .await
            .expect("the agent answers in time")
            .unwrap()
            .expect("an error frame before the end of the stream");
        if let FromAgent::Error(e) = decode::<FromAgent>(&frame).unwrap() {
            break e.message;
        }
    };
    assert!(
        message.contains("malformed frame") && message.contains("4294967295"),
        "{message}"
    );
    conn.close(0u32.into(), b"done");
    endpoint.close(0u32.into(), b"done");
}
