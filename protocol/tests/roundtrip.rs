//! Round trips of every message through frames split at every byte boundary, the pinned wire
//! shape, and compatibility between releases that add fields.

mod common;

use common::*;
use hsm_protocol::*;
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt::Debug;

/// Encodes `msg`, feeds the frame to a decoder split at `split`, and decodes what comes out.
fn through_split_frame<T: Serialize + DeserializeOwned>(msg: &T, split: usize) -> T {
    let frame = encode(msg).unwrap();
    let (head, tail) = frame.split_at(split);
    let mut decoder = FrameDecoder::new();
    decoder.push(head).unwrap();
    let mut bodies = Vec::new();
    while let Some(body) = decoder.next_frame().unwrap() {
        bodies.push(body);
    }
    decoder.push(tail).unwrap();
    while let Some(body) = decoder.next_frame().unwrap() {
        bodies.push(body);
    }
    assert_eq!(bodies.len(), 1, "split at {split}");
    assert!(decoder.buffered().is_empty());
    decode(&bodies[0]).unwrap()
}

fn round_trips_at_every_split<T: Serialize + DeserializeOwned + PartialEq + Debug>(samples: &[T]) {
    for msg in samples {
        let frame_len = encode(msg).unwrap().len();
        for split in 0..=frame_len {
            assert_eq!(&through_split_frame(msg, split), msg, "split at {split}");
        }
    }
}

#[test]
fn every_to_agent_variant_round_trips() {
    let samples = to_agent_samples();
    let covered: BTreeSet<_> = samples
        .iter()
        .map(|msg| match msg {
            // Exhaustive on purpose: a new variant fails to compile until it has a sample.
            ToAgent::Submit(_) => "Submit",
            ToAgent::Cancel(_) => "Cancel",
            ToAgent::Ack(_) => "Ack",
            ToAgent::Ping(_) => "Ping",
            ToAgent::FetchResults(_) => "FetchResults",
            ToAgent::ResultsDone(_) => "ResultsDone",
            ToAgent::Attach(_) => "Attach",
            ToAgent::Clean(_) => "Clean",
        })
        .collect();
    assert_eq!(covered.len(), 8);
    round_trips_at_every_split(&samples);
}

#[test]
fn every_from_agent_variant_round_trips() {
    let samples = from_agent_samples();
    // Exhaustive matches on purpose: a new variant fails to compile until it has a sample.
    fn outcome_name(outcome: &OutcomeMsg) -> &'static str {
        match outcome {
            OutcomeMsg::Exited { .. } => "outcome Exited",
            OutcomeMsg::Signaled { .. } => "outcome Signaled",
            OutcomeMsg::TimedOut => "outcome TimedOut",
            OutcomeMsg::Cancelled => "outcome Cancelled",
            OutcomeMsg::SpawnFailed { .. } => "outcome SpawnFailed",
            OutcomeMsg::Lost => "outcome Lost",
            OutcomeMsg::Failed { .. } => "outcome Failed",
        }
    }
    fn kind_names(kind: &EventKind) -> Vec<&'static str> {
        match kind {
            EventKind::Submitted { .. } => vec!["Submitted"],
            EventKind::Started { .. } => vec!["Started"],
            EventKind::Output { .. } => vec!["Output"],
            EventKind::Exited { outcome, .. } => vec!["Exited", outcome_name(outcome)],
            EventKind::ResultOffer { .. } => vec!["ResultOffer"],
        }
    }
    let mut covered = BTreeSet::new();
    for msg in &samples {
        match msg {
            FromAgent::Events(events) => {
                covered.insert("Events");
                for event in &events.events {
                    covered.extend(kind_names(&event.kind));
                }
            }
            FromAgent::Heartbeat(_) => _ = covered.insert("Heartbeat"),
            FromAgent::Pong(_) => _ = covered.insert("Pong"),
            FromAgent::Error(_) => _ = covered.insert("Error"),
            FromAgent::Attached(_) => _ = covered.insert("Attached"),
            FromAgent::Cleaned(_) => _ = covered.insert("Cleaned"),
        }
    }
    assert_eq!(covered.len(), 6 + 5 + 7, "{covered:?}");
    round_trips_at_every_split(&samples);
}

#[test]
fn handshake_and_file_header_round_trip() {
    let replies = hello_reply_samples();
    assert!(replies.iter().any(|r| matches!(r, HelloReply::Welcome(_))));
    assert!(replies.iter().any(|r| matches!(r, HelloReply::Reject(_))));
    round_trips_at_every_split(&hello_samples());
    round_trips_at_every_split(&replies);
    round_trips_at_every_split(&file_header_samples());
}

#[test]
fn a_stream_of_frames_fed_one_byte_at_a_time_comes_back_in_order() {
    let samples = from_agent_samples();
    let stream: Vec<u8> = samples
        .iter()
        .flat_map(|msg| encode(msg).unwrap())
        .collect();
    let mut decoder = FrameDecoder::new();
    let mut decoded = Vec::new();
    for byte in &stream {
        decoder.push(std::slice::from_ref(byte)).unwrap();
        while let Some(body) = decoder.next_frame().unwrap() {
            decoded.push(decode::<FromAgent>(&body).unwrap());
        }
    }
    assert_eq!(decoded, samples);
}

#[test]
fn file_bytes_that_arrive_with_the_header_are_handed_back() {
    let header = file_header_samples().remove(0);
    let mut stream = encode(&header).unwrap();
    stream.extend_from_slice(b"first bytes of the file");
    let mut decoder = FrameDecoder::new();
    decoder.push(&stream).unwrap();
    let body = decoder.next_frame().unwrap().unwrap();
    let decoded: FileHeader = decode(&body).unwrap();
    assert_eq!(decoded, header);
    assert_eq!(check_relative_path(&decoded.path), Ok(()));
    assert!(is_sha256_hex(&decoded.sha256));
    assert_eq!(decoder.into_buffered(), b"first bytes of the file");
}

#[test]
fn the_wire_shape_is_pinned() {
    // {"Ping": {"nonce": 5}}: enums are one-entry maps keyed by variant name, structs are maps
    // keyed by field name. Changing this breaks every deployed peer.
    let frame = encode(&ToAgent::Ping(PingMsg { nonce: 5 })).unwrap();
    let mut expected = vec![0, 0, 0, 14, 0x81, 0xa4];
    expected.extend(b"Ping");
    expected.extend([0x81, 0xa5]);
    expected.extend(b"nonce");
    expected.push(5);
    assert_eq!(frame, expected);
    // Unit variants are their name as a string.
    let body = &encode(&OutcomeMsg::Lost).unwrap()[PREFIX_LEN..];
    assert_eq!(body, b"\xa4Lost");
    // Output data is one `bin` value, not an array of numbers.
    let body = &encode(&EventKind::Output {
        stream: Stream::Stdout,
        data: Bytes(vec![9; 3]),
    })
    .unwrap()[PREFIX_LEN..];
    assert!(body.ends_with(&[0xc4, 3, 9, 9, 9]), "{body:x?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn arbitrary_to_agent_round_trips(msg in to_agent()) {
        let frame = encode(&msg).unwrap();
        prop_assert_eq!(decode::<ToAgent>(&frame[PREFIX_LEN..]).unwrap(), msg);
    }

    #[test]
    fn arbitrary_from_agent_round_trips(msg in from_agent()) {
        let frame = encode(&msg).unwrap();
        prop_assert_eq!(decode::<FromAgent>(&frame[PREFIX_LEN..]).unwrap(), msg);
    }

    #[test]
    fn arbitrary_file_header_round_trips(msg in file_header()) {
        let frame = encode(&msg).unwrap();
        prop_assert_eq!(decode::<FileHeader>(&frame[PREFIX_LEN..]).unwrap(), msg);
    }
}

// ---------------------------------------------------------------------------------------------
// Compatibility: what a newer or older release would put on the wire.
// ---------------------------------------------------------------------------------------------

/// `HeartbeatMsg` as a later release might send it, with a field this release does not know.
#[derive(Serialize)]
struct HeartbeatMsgV2 {
    load1: f32,
    gpu_free: Vec<u64>,
    free_mem_bytes: u64,
    free_disk_bytes: u64,
    running: u32,
    slots: u32,
    hostname: String,
}

/// `FromAgent` of that later release (same variant names).
#[derive(Serialize)]
enum FromAgentV2 {
    Heartbeat(HeartbeatMsgV2),
    Events { events: Vec<TaskEventMsgV2> },
}

#[derive(Serialize)]
struct TaskEventMsgV2 {
    sweep_id: String,
    task: TaskRef,
    seq: u64,
    kind: EventKindV2,
    node: Option<String>,
}

#[derive(Serialize)]
enum EventKindV2 {
    Started {
        pid: u32,
        at_ms: i64,
        cgroup: String,
    },
}

#[test]
fn fields_added_by_a_newer_release_are_ignored() {
    let newer = FromAgentV2::Heartbeat(HeartbeatMsgV2 {
        load1: 0.5,
        gpu_free: vec![1, 2],
        free_mem_bytes: 10,
        free_disk_bytes: 20,
        running: 1,
        slots: 2,
        hostname: "gpu01".into(),
    });
    let frame = encode(&newer).unwrap();
    assert_eq!(
        decode::<FromAgent>(&frame[PREFIX_LEN..]).unwrap(),
        FromAgent::Heartbeat(HeartbeatMsg {
            load1: 0.5,
            free_mem_bytes: 10,
            free_disk_bytes: 20,
            running: 1,
            slots: 2,
            free_inodes: None,
            notice: None,
        })
    );

    // Also deep inside: an extra field on an event and on a struct-like enum variant.
    let newer = FromAgentV2::Events {
        events: vec![TaskEventMsgV2 {
            sweep_id: "s".into(),
            task: task(1, 1),
            seq: 1,
            kind: EventKindV2::Started {
                pid: 7,
                at_ms: 8,
                cgroup: "/hsm/1".into(),
            },
            node: Some("n1".into()),
        }],
    };
    let frame = encode(&newer).unwrap();
    assert_eq!(
        decode::<FromAgent>(&frame[PREFIX_LEN..]).unwrap(),
        FromAgent::Events(EventsMsg {
            events: vec![TaskEventMsg {
                sweep_id: SweepId::from("s"),
                task: task(1, 1),
                seq: Seq(1),
                kind: EventKind::Started { pid: 7, at_ms: 8 },
            }]
        })
    );
}

/// `ToAgent::Submit`, `Cancel` and `FetchResults` as a minimal sender writes them, without any
/// of the fields that have defaults.
#[derive(Serialize)]
enum ToAgentMinimal {
    Submit {
        sweep_id: String,
        templates: Vec<TemplateMinimal>,
        tasks: Vec<TaskMinimal>,
    },
    Cancel {
        sweep_id: String,
    },
    FetchResults {
        sweep_id: String,
        task: TaskRef,
    },
}

#[derive(Serialize)]
struct TemplateMinimal {
    id: u32,
    argv_prefix: Vec<String>,
    cwd: String,
    kill_grace_ms: u64,
}

#[derive(Serialize)]
struct TaskMinimal {
    index: u64,
    attempt: u32,
    template: u32,
}

#[derive(Serialize)]
struct HelloMinimal {
    protocol_version: u32,
}

#[derive(Serialize)]
struct WelcomeMinimal {
    protocol_version: u32,
    agent_version: String,
    agent_name: String,
    slots: u32,
    backend: String,
}

#[derive(Serialize)]
enum HelloReplyMinimal {
    Welcome(WelcomeMinimal),
}

fn decode_frame<T: DeserializeOwned>(msg: &impl Serialize) -> Result<T, FrameError> {
    let frame = encode(msg).unwrap();
    decode(&frame[PREFIX_LEN..])
}

#[test]
fn fields_with_defaults_may_be_missing() {
    let older = ToAgentMinimal::Submit {
        sweep_id: "s".into(),
        templates: vec![TemplateMinimal {
            id: 3,
            argv_prefix: vec!["true".into()],
            cwd: "/p".into(),
            kill_grace_ms: 5,
        }],
        tasks: vec![TaskMinimal {
            index: 1,
            attempt: 1,
            template: 3,
        }],
    };
    assert_eq!(
        decode_frame::<ToAgent>(&older).unwrap(),
        ToAgent::Submit(SubmitMsg {
            sweep_id: SweepId::from("s"),
            templates: vec![TemplateMsg {
                id: 3,
                argv_prefix: vec!["true".into()],
                env: vec![],
                cwd: "/p".into(),
                timeout_ms: None,
                kill_grace_ms: 5,
                hpc: None,
                compact: false,
            }],
            tasks: vec![TaskMsg {
                index: TaskIndex(1),
                attempt: Attempt(1),
                template: 3,
                args: vec![],
                env: vec![],
            }],
        })
    );
    assert_eq!(
        decode_frame::<ToAgent>(&ToAgentMinimal::Cancel {
            sweep_id: "s".into()
        })
        .unwrap(),
        ToAgent::Cancel(CancelMsg {
            sweep_id: SweepId::from("s"),
            tasks: vec![],
            unstarted_only: false,
        })
    );
    assert_eq!(
        decode_frame::<ToAgent>(&ToAgentMinimal::FetchResults {
            sweep_id: "s".into(),
            task: task(2, 1)
        })
        .unwrap(),
        ToAgent::FetchResults(FetchMsg {
            sweep_id: SweepId::from("s"),
            task: task(2, 1),
            paths: vec![]
        })
    );
    assert_eq!(
        decode_frame::<Hello>(&HelloMinimal {
            protocol_version: 7
        })
        .unwrap(),
        Hello {
            protocol_version: 7,
            coordinator_version: String::new(),
            preflight: None,
            sync: None,
        }
    );
    let welcome = HelloReplyMinimal::Welcome(WelcomeMinimal {
        protocol_version: 1,
        agent_version: "0.1.0".into(),
        agent_name: "a".into(),
        slots: 1,
        backend: "process".into(),
    });
    match decode_frame::<HelloReply>(&welcome).unwrap() {
        HelloReply::Welcome(welcome) => {
            assert!(welcome.running.is_empty());
            assert_eq!(
                welcome.sync, None,
                "an agent that predates sync sends no report"
            );
        }
        other => panic!("expected a welcome, got {other:?}"),
    }
}

#[test]
fn a_missing_required_field_is_an_error_not_a_guess() {
    #[derive(Serialize)]
    struct PingWithoutNonce {}
    #[derive(Serialize)]
    enum ToAgentBroken {
        Ping(PingWithoutNonce),
    }
    let err = decode_frame::<ToAgent>(&ToAgentBroken::Ping(PingWithoutNonce {})).unwrap_err();
    assert!(matches!(err, FrameError::Decode(_)), "{err:?}");
}

#[test]
fn an_unknown_variant_is_an_error() {
    #[derive(Serialize)]
    enum ToAgentNewer {
        Drain { deadline_ms: u64 },
    }
    let err = decode_frame::<ToAgent>(&ToAgentNewer::Drain { deadline_ms: 1 }).unwrap_err();
    assert!(matches!(err, FrameError::Decode(_)), "{err:?}");
}

/// Any version's `Hello` can be read by this release, so it can always say why it refuses.
#[test]
fn a_future_hello_still_decodes_and_is_rejected_with_both_versions() {
    #[derive(Serialize, Deserialize)]
    struct HelloV9 {
        protocol_version: u32,
        coordinator_version: String,
        features: Vec<String>,
    }
    let hello: Hello = decode_frame(&HelloV9 {
        protocol_version: 9,
        coordinator_version: "9.0.0".into(),
        features: vec!["x".into()],
    })
    .unwrap();
    let agent = AgentInfo {
        agent_version: "0.1.0".into(),
        agent_name: "a".into(),
        slots: 1,
        backend: "process".into(),
        running: vec![],
        work_dir: String::new(),
    };
    let reject = negotiate(&hello, agent).unwrap_err();
    let expected = format!(
        "coordinator speaks protocol 9, this agent speaks {PROTOCOL_VERSION}: upgrade the agent"
    );
    assert!(reject.reason.starts_with(&expected), "{}", reject.reason);
}
