//! The `hsm-agent serve` daemon as a real process: handshake, ping, heartbeat, a protocol
//! version mismatch, and malformed frames from an authenticated peer (a test client speaking the
//! protocol through the library stands in for the coordinator).

use hsm_agent::identity::{AuthorizedKeys, Identity};
use hsm_agent::tls::{self, TransportOptions};
use hsm_agent::wire::{read_frame, write_message};
use hsm_protocol::{
    decode, FromAgent, Hello, HelloReply, PingMsg, ToAgent, MAX_FRAME, PROTOCOL_VERSION,
};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `hsm-agent serve`, killed (by its pid) when dropped.
struct Agent {
    child: Child,
    addr: std::net::SocketAddr,
    fingerprint: String,
    _dir: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_agent(coordinator: &Identity) -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    Identity::load_or_create(&state, "hsm-agent").unwrap();
    AuthorizedKeys::authorize(&state, &coordinator.fingerprint()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hsm-agent"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--slots",
            "2",
            "--heartbeat",
            "1",
        ])
        .arg("--state-dir")
        .arg(&state)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
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
        _dir: dir,
    }
}

async fn control_stream(
    agent: &Agent,
    coordinator: &Identity,
) -> (
    quinn::Endpoint,
    quinn::Connection,
    quinn::SendStream,
    quinn::RecvStream,
) {
    let endpoint = tls::client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    let config =
        tls::client_config(coordinator, &agent.fingerprint, TransportOptions::default()).unwrap();
    // Hang guards (60 s) on what takes milliseconds on an idle machine, many times that on a
    // busy one.
    let conn = tls::connect(&endpoint, agent.addr, config, Duration::from_secs(60))
        .await
        .unwrap();
    let (send, recv) = conn.open_bi().await.unwrap();
    (endpoint, conn, send, recv)
}

async fn next(recv: &mut quinn::RecvStream) -> FromAgent {
    let frame = tokio::time::timeout(Duration::from_secs(60), read_frame(recv, MAX_FRAME))
        .await
        .expect("agent answered in time")
        .unwrap()
        .expect("a frame");
    decode(&frame).unwrap()
}

async fn ping_round_trip(agent: &Agent, coordinator: &Identity) {
    let (endpoint, conn, mut send, mut recv) = control_stream(agent, coordinator).await;
    write_message(&mut send, &Hello::new("test")).await.unwrap();
    let reply = read_frame(&mut recv, MAX_FRAME).await.unwrap().unwrap();
    assert!(
        matches!(decode::<HelloReply>(&reply).unwrap(), HelloReply::Welcome(w) if w.slots == 2)
    );
    write_message(&mut send, &ToAgent::Ping(PingMsg { nonce: 42 }))
        .await
        .unwrap();
    let mut heartbeats = 0;
    loop {
        match next(&mut recv).await {
            FromAgent::Pong(p) => {
                assert_eq!(p.nonce, 42);
                break;
            }
            FromAgent::Heartbeat(h) => {
                assert_eq!(h.slots, 2);
                heartbeats += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(heartbeats >= 1, "a heartbeat comes right after the welcome");
    conn.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
}

#[tokio::test]
async fn handshake_ping_and_heartbeats() {
    let coordinator = Identity::generate("hsm-coordinator").unwrap();
    let agent = start_agent(&coordinator);
    ping_round_trip(&agent, &coordinator).await;
    // Heartbeats keep coming on an idle connection.
    let (endpoint, conn, mut send, mut recv) = control_stream(&agent, &coordinator).await;
    write_message(&mut send, &Hello::new("test")).await.unwrap();
    read_frame(&mut recv, MAX_FRAME).await.unwrap().unwrap();
    for _ in 0..3 {
        assert!(matches!(next(&mut recv).await, FromAgent::Heartbeat(_)));
    }
    conn.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
}

#[tokio::test]
async fn another_protocol_version_is_rejected_naming_both() {
    let coordinator = Identity::generate("hsm-coordinator").unwrap();
    let agent = start_agent(&coordinator);
    let (_endpoint, _conn, mut send, mut recv) = control_stream(&agent, &coordinator).await;
    let hello = Hello {
        protocol_version: 99,
        coordinator_version: "9.9.9".into(),
        preflight: None,
        sync: None,
    };
    write_message(&mut send, &hello).await.unwrap();
    let reply = read_frame(&mut recv, MAX_FRAME).await.unwrap().unwrap();
    match decode::<HelloReply>(&reply).unwrap() {
        HelloReply::Reject(reject) => {
            assert!(
                reject.reason.contains("99")
                    && reject.reason.contains(&PROTOCOL_VERSION.to_string()),
                "{}",
                reject.reason
            );
            assert_eq!(
                (
                    reject.coordinator_protocol_version,
                    reject.agent_protocol_version
                ),
                (99, PROTOCOL_VERSION)
            );
        }
        other => panic!("expected a reject, got {other:?}"),
    }
}

#[tokio::test]
async fn malformed_frames_from_a_peer_do_not_hurt_the_agent() {
    let coordinator = Identity::generate("hsm-coordinator").unwrap();
    let agent = start_agent(&coordinator);
    // Garbage instead of a hello; a huge announced frame; random bytes after a valid hello.
    let garbage: [&[u8]; 3] = [
        b"\x00\x00\x00\x05hello",
        &u32::MAX.to_be_bytes(),
        b"\xff\xfe\xfd",
    ];
    for bytes in garbage {
        let (endpoint, conn, mut send, _recv) = control_stream(&agent, &coordinator).await;
        send.write_all(bytes).await.unwrap();
        let _ = send.finish();
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
        endpoint.close(0u32.into(), b"");
    }
    let (endpoint, conn, mut send, mut recv) = control_stream(&agent, &coordinator).await;
    write_message(&mut send, &Hello::new("test")).await.unwrap();
    read_frame(&mut recv, MAX_FRAME).await.unwrap().unwrap();
    send.write_all(b"\x00\x00\x00\x03\xc1\xc1\xc1")
        .await
        .unwrap();
    match next(&mut recv).await {
        FromAgent::Error(e) => assert!(e.message.contains("malformed"), "{}", e.message),
        FromAgent::Heartbeat(_) => {}
        other => panic!("unexpected {other:?}"),
    }
    conn.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
    // The daemon is still up and serving.
    ping_round_trip(&agent, &coordinator).await;
}
