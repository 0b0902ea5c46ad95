//! Shared test material: one hand-written sample of every message variant and proptest strategies
//! that generate arbitrary valid messages.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use hsm_protocol::*;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

pub fn task(index: u64, attempt: u32) -> TaskRef {
    TaskRef {
        index: TaskIndex(index),
        attempt: Attempt(attempt),
    }
}

pub fn sweep() -> SweepId {
    SweepId::from("sweep_20250101_120000")
}

fn event(seq: u64, kind: EventKind) -> TaskEventMsg {
    TaskEventMsg {
        sweep_id: sweep(),
        task: task(12, 1),
        seq: Seq(seq),
        kind,
    }
}

/// Every `ToAgent` variant at least once.
pub fn to_agent_samples() -> Vec<ToAgent> {
    vec![
        ToAgent::Submit(SubmitMsg {
            sweep_id: sweep(),
            templates: vec![TemplateMsg {
                id: 0,
                argv_prefix: vec!["python".into(), "train.py".into()],
                env: vec![("CUDA_VISIBLE_DEVICES".into(), "0".into())],
                cwd: "/home/user/project".into(),
                timeout_ms: Some(3_600_000),
                kill_grace_ms: 10_000,
                hpc: Some(sample_hpc()),
                compact: true,
            }],
            tasks: vec![
                TaskMsg {
                    index: TaskIndex(1),
                    attempt: Attempt(1),
                    template: 0,
                    args: vec!["lr=0.1".into(), "seed=1".into()],
                    env: vec![("HSM_TASK_INDEX".into(), "1".into())],
                },
                TaskMsg {
                    index: TaskIndex(2),
                    attempt: Attempt(3),
                    template: 0,
                    args: vec!["lr=0.01".into(), "name=ünï \"quoted\"".into()],
                    env: vec![],
                },
            ],
        }),
        ToAgent::Cancel(CancelMsg {
            sweep_id: sweep(),
            tasks: vec![task(1, 1), task(2, 3)],
            unstarted_only: true,
        }),
        ToAgent::Cancel(CancelMsg {
            sweep_id: sweep(),
            tasks: vec![],
            unstarted_only: false,
        }),
        ToAgent::Ack(AckMsg {
            acks: vec![
                EventRef {
                    sweep_id: sweep(),
                    task: task(1, 1),
                    seq: Seq(1),
                },
                EventRef {
                    sweep_id: sweep(),
                    task: task(1, 1),
                    seq: Seq(u64::MAX),
                },
            ],
        }),
        ToAgent::Ping(PingMsg { nonce: 0xdead_beef }),
        ToAgent::FetchResults(FetchMsg {
            sweep_id: sweep(),
            task: task(5, 2),
            paths: vec![],
        }),
        ToAgent::FetchResults(FetchMsg {
            sweep_id: sweep(),
            task: task(5, 2),
            paths: vec!["results/model.pt".into()],
        }),
        ToAgent::ResultsDone(ResultsDoneMsg {
            sweep_id: sweep(),
            task: task(5, 2),
        }),
        ToAgent::Attach(AttachMsg {
            sweep_id: sweep(),
            tasks: vec![task(5, 2), task(6, 1)],
        }),
        ToAgent::Clean(CleanMsg {
            sweeps: vec![sweep(), SweepId::from("other")],
            older_than_secs: Some(30 * 86_400),
            dry_run: true,
        }),
    ]
}

/// Every `FromAgent` variant, every `EventKind` and every `OutcomeMsg` at least once.
pub fn from_agent_samples() -> Vec<FromAgent> {
    let outcomes = [
        OutcomeMsg::Exited { code: 0 },
        OutcomeMsg::Exited { code: -1 },
        OutcomeMsg::Signaled { signal: 9 },
        OutcomeMsg::TimedOut,
        OutcomeMsg::Cancelled,
        OutcomeMsg::SpawnFailed {
            message: "no such file or directory (os error 2)".into(),
        },
        OutcomeMsg::Lost,
        OutcomeMsg::Failed {
            reason: "node failure".into(),
        },
    ];
    let mut events = vec![
        event(
            1,
            EventKind::Submitted {
                job_id: "4242_7".into(),
                script: Some(JobScriptMsg {
                    name: "job_1735732800000_0001.sh".into(),
                    text: "#!/bin/bash\n#SBATCH --array=0-9\n".into(),
                }),
            },
        ),
        event(
            1,
            EventKind::Started {
                pid: 4242,
                at_ms: 1_735_732_800_000,
            },
        ),
        event(
            2,
            EventKind::Output {
                stream: Stream::Stdout,
                data: Bytes(b"epoch 1 loss 0.5\n".to_vec()),
            },
        ),
        event(
            3,
            EventKind::Output {
                stream: Stream::Stderr,
                data: Bytes(vec![0, 0xff, 0x80]),
            },
        ),
        event(
            4,
            EventKind::Output {
                stream: Stream::Stdout,
                data: Bytes(vec![]),
            },
        ),
    ];
    for (seq, outcome) in (5..).zip(outcomes) {
        // One with every usage field, the others without (as an older agent sends).
        let usage = (seq == 5).then_some(UsageMsg {
            wall_ms: Some(1_234),
            cpu_user_ms: Some(u64::MAX),
            cpu_sys_ms: Some(0),
            max_rss_kb: Some(51_200),
            scheduler: Some(hsm_protocol::SchedulerRecordMsg {
                state: hsm_protocol::SchedulerStateMsg::Timeout,
                exit_code: Some(0),
                signal: Some(15),
            }),
        });
        events.push(event(
            seq,
            EventKind::Exited {
                outcome,
                at_ms: -5,
                usage,
            },
        ));
    }
    events.push(event(
        20,
        EventKind::ResultOffer {
            files: vec![
                FileOffer {
                    path: "metrics.json".into(),
                    size: 42,
                    sha256: "ab".repeat(32),
                },
                FileOffer {
                    path: "results/empty".into(),
                    size: 0,
                    sha256: "e3".repeat(32),
                },
            ],
        },
    ));
    events.push(event(21, EventKind::ResultOffer { files: vec![] }));
    vec![
        FromAgent::Events(EventsMsg { events }),
        FromAgent::Events(EventsMsg { events: vec![] }),
        FromAgent::Heartbeat(HeartbeatMsg {
            load1: 1.25,
            free_mem_bytes: 8 << 30,
            free_disk_bytes: u64::MAX,
            running: 3,
            slots: 4,
            free_inodes: Some(12),
            notice: Some("sbatch refused 4 jobs".into()),
        }),
        FromAgent::Pong(PongMsg { nonce: 0xdead_beef }),
        FromAgent::Error(ErrorMsg::new("unknown sweep sweep_x")),
        FromAgent::Error(ErrorMsg {
            message: "cannot send result \"results/a.txt\": it changed since it was offered".into(),
            file: Some(FileRef {
                sweep_id: sweep(),
                task: task(2, 1),
                path: "results/a.txt".into(),
            }),
        }),
        FromAgent::Attached(AttachedMsg {
            sweep_id: sweep(),
            unknown: vec![task(6, 1)],
        }),
        FromAgent::Cleaned(CleanedMsg {
            removed: vec![CleanedSweep {
                sweep_id: sweep(),
                dir: "/home/me/.local/state/hsm-agent/work/sweep_20250101_120000".into(),
                task_dirs: 12,
                bytes: u64::MAX,
            }],
            kept: vec![KeptSweep {
                sweep_id: SweepId::from("s2"),
                reason: "2 attempts still running".into(),
            }],
            absent: vec![SweepId::from("s3")],
        }),
    ]
}

pub fn hello_samples() -> Vec<Hello> {
    vec![
        Hello::new("0.1.0"),
        Hello::new("0.2.0").with_preflight(PreflightMsg {
            project_dir: "/srv/proj".into(),
            files: vec!["train.py".into()],
            interpreter: vec!["python3".into(), "--version".into()],
            setup: vec!["module load cuda".into()],
            min_free_disk: 1 << 30,
            scheduler: Some(hsm_protocol::SchedulerChoice::Pbs),
        }),
        Hello {
            protocol_version: u32::MAX,
            coordinator_version: String::new(),
            preflight: None,
            sync: Some(SyncRequest {
                project_dir: "/srv/proj".into(),
                files: vec![ManifestEntry {
                    path: "conf/x.yaml".into(),
                    size: 5,
                    sha256: "ab".repeat(32),
                    executable: false,
                }],
                push: true,
            }),
        },
    ]
}

pub fn hello_reply_samples() -> Vec<HelloReply> {
    vec![
        HelloReply::Welcome(Welcome {
            protocol_version: PROTOCOL_VERSION,
            agent_version: "0.1.0".into(),
            agent_name: "gpu01".into(),
            slots: 8,
            backend: "process".into(),
            running: vec![SweepTaskRef {
                sweep_id: sweep(),
                task: task(7, 2),
            }],
            work_dir: "/scratch/me/hsm-work".into(),
            preflight: Some(vec![PreflightProblem {
                check: "project_dir".into(),
                detail: "/srv/proj does not exist".into(),
            }]),
            sync: Some(SyncReport {
                differs: vec![SyncDiff {
                    path: "train.py".into(),
                    kind: "differs".into(),
                }],
                error: None,
            }),
        }),
        HelloReply::Reject(Reject {
            reason: "coordinator speaks protocol 2, this agent speaks 1: upgrade the agent".into(),
            agent_protocol_version: 1,
            coordinator_protocol_version: 2,
        }),
    ]
}

pub fn file_header_samples() -> Vec<FileHeader> {
    vec![FileHeader {
        sweep_id: sweep(),
        task: task(12, 1),
        path: "results/model.pt".into(),
        size: 11 << 20,
        sha256: "0f".repeat(32),
    }]
}

/// Encoded bodies (no length prefix) of every sample of every top-level type.
pub fn sample_bodies() -> Vec<Vec<u8>> {
    fn bodies<T: serde::Serialize>(samples: Vec<T>) -> Vec<Vec<u8>> {
        samples
            .iter()
            .map(|msg| encode(msg).unwrap()[PREFIX_LEN..].to_vec())
            .collect()
    }
    let mut all = bodies(to_agent_samples());
    all.extend(bodies(from_agent_samples()));
    all.extend(bodies(hello_samples()));
    all.extend(bodies(hello_reply_samples()));
    all.extend(bodies(file_header_samples()));
    all
}

/// Decodes `body` as every top-level type; the point is that it returns.
pub fn decode_as_everything(body: &[u8]) {
    let _ = decode::<ToAgent>(body);
    let _ = decode::<FromAgent>(body);
    let _ = decode::<Hello>(body);
    let _ = decode::<HelloReply>(body);
    let _ = decode::<FileHeader>(body);
}

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

fn text() -> impl Strategy<Value = String> {
    prop_oneof![3 => "[a-z0-9_./=-]{0,12}", 1 => any::<String>()]
}

fn sweep_id() -> impl Strategy<Value = SweepId> {
    text().prop_map(SweepId)
}

fn task_ref() -> impl Strategy<Value = TaskRef> {
    (any::<u64>(), any::<u32>()).prop_map(|(index, attempt)| task(index, attempt))
}

fn env() -> impl Strategy<Value = Vec<(String, String)>> {
    vec((text(), text()), 0..3)
}

fn template() -> impl Strategy<Value = TemplateMsg> {
    (
        any::<u32>(),
        vec(text(), 0..3),
        env(),
        text(),
        option::of(any::<u64>()),
        any::<u64>(),
    )
        .prop_map(
            |(id, argv_prefix, env, cwd, timeout_ms, kill_grace_ms)| TemplateMsg {
                id,
                argv_prefix,
                env,
                cwd,
                timeout_ms,
                kill_grace_ms,
                hpc: None,
                compact: false,
            },
        )
}

fn task_msg() -> impl Strategy<Value = TaskMsg> {
    (task_ref(), any::<u32>(), vec(text(), 0..4), env()).prop_map(|(task, template, args, env)| {
        TaskMsg {
            index: task.index,
            attempt: task.attempt,
            template,
            args,
            env,
        }
    })
}

fn event_ref() -> impl Strategy<Value = EventRef> {
    (sweep_id(), task_ref(), any::<u64>()).prop_map(|(sweep_id, task, seq)| EventRef {
        sweep_id,
        task,
        seq: Seq(seq),
    })
}

pub fn to_agent() -> impl Strategy<Value = ToAgent> {
    prop_oneof![
        (sweep_id(), vec(template(), 0..3), vec(task_msg(), 0..4)).prop_map(
            |(sweep_id, templates, tasks)| ToAgent::Submit(SubmitMsg {
                sweep_id,
                templates,
                tasks
            })
        ),
        (sweep_id(), vec(task_ref(), 0..4), any::<bool>()).prop_map(
            |(sweep_id, tasks, unstarted_only)| ToAgent::Cancel(CancelMsg {
                sweep_id,
                tasks,
                unstarted_only
            })
        ),
        vec(event_ref(), 0..4).prop_map(|acks| ToAgent::Ack(AckMsg { acks })),
        any::<u64>().prop_map(|nonce| ToAgent::Ping(PingMsg { nonce })),
        (sweep_id(), task_ref(), vec(text(), 0..3)).prop_map(|(sweep_id, task, paths)| {
            ToAgent::FetchResults(FetchMsg {
                sweep_id,
                task,
                paths,
            })
        }),
        (sweep_id(), task_ref())
            .prop_map(|(sweep_id, task)| ToAgent::ResultsDone(ResultsDoneMsg { sweep_id, task })),
        (sweep_id(), vec(task_ref(), 0..4))
            .prop_map(|(sweep_id, tasks)| ToAgent::Attach(AttachMsg { sweep_id, tasks })),
    ]
}

fn outcome() -> impl Strategy<Value = OutcomeMsg> {
    prop_oneof![
        any::<i32>().prop_map(|code| OutcomeMsg::Exited { code }),
        any::<i32>().prop_map(|signal| OutcomeMsg::Signaled { signal }),
        Just(OutcomeMsg::TimedOut),
        Just(OutcomeMsg::Cancelled),
        text().prop_map(|message| OutcomeMsg::SpawnFailed { message }),
        Just(OutcomeMsg::Lost),
        text().prop_map(|reason| OutcomeMsg::Failed { reason }),
    ]
}

fn file_offer() -> impl Strategy<Value = FileOffer> {
    (text(), any::<u64>(), text()).prop_map(|(path, size, sha256)| FileOffer { path, size, sha256 })
}

fn event_kind() -> impl Strategy<Value = EventKind> {
    prop_oneof![
        (any::<u32>(), any::<i64>()).prop_map(|(pid, at_ms)| EventKind::Started { pid, at_ms }),
        (
            prop_oneof![Just(Stream::Stdout), Just(Stream::Stderr)],
            vec(any::<u8>(), 0..300)
        )
            .prop_map(|(stream, data)| EventKind::Output {
                stream,
                data: Bytes(data)
            }),
        (
            outcome(),
            any::<i64>(),
            proptest::option::of(vec(proptest::option::of(any::<u64>()), 4))
        )
            .prop_map(|(outcome, at_ms, usage)| EventKind::Exited {
                outcome,
                at_ms,
                usage: usage.map(|u| UsageMsg {
                    wall_ms: u[0],
                    cpu_user_ms: u[1],
                    cpu_sys_ms: u[2],
                    max_rss_kb: u[3],
                    scheduler: None,
                }),
            }),
        vec(file_offer(), 0..3).prop_map(|files| EventKind::ResultOffer { files }),
        (text(), proptest::option::of((text(), text()))).prop_map(|(job_id, script)| {
            EventKind::Submitted {
                job_id,
                script: script.map(|(name, text)| JobScriptMsg { name, text }),
            }
        }),
    ]
}

fn task_event() -> impl Strategy<Value = TaskEventMsg> {
    (event_ref(), event_kind()).prop_map(|(at, kind)| TaskEventMsg {
        sweep_id: at.sweep_id,
        task: at.task,
        seq: at.seq,
        kind,
    })
}

pub fn from_agent() -> impl Strategy<Value = FromAgent> {
    prop_oneof![
        vec(task_event(), 0..4).prop_map(|events| FromAgent::Events(EventsMsg { events })),
        // Finite loads only: NaN != NaN would fail the equality check, not the codec.
        (
            -1e9f32..1e9f32,
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            any::<Option<u64>>(),
            proptest::option::of(text())
        )
            .prop_map(
                |(load1, free_mem_bytes, free_disk_bytes, running, slots, free_inodes, notice)| {
                    FromAgent::Heartbeat(HeartbeatMsg {
                        load1,
                        free_mem_bytes,
                        free_disk_bytes,
                        running,
                        slots,
                        free_inodes,
                        notice,
                    })
                },
            ),
        any::<u64>().prop_map(|nonce| FromAgent::Pong(PongMsg { nonce })),
        (
            text(),
            proptest::option::of((sweep_id(), task_ref(), text()))
        )
            .prop_map(|(message, file)| FromAgent::Error(ErrorMsg {
                message,
                file: file.map(|(sweep_id, task, path)| FileRef {
                    sweep_id,
                    task,
                    path
                }),
            })),
        (sweep_id(), vec(task_ref(), 0..4))
            .prop_map(|(sweep_id, unknown)| FromAgent::Attached(AttachedMsg { sweep_id, unknown })),
    ]
}

pub fn file_header() -> impl Strategy<Value = FileHeader> {
    (sweep_id(), task_ref(), text(), any::<u64>(), text()).prop_map(
        |(sweep_id, task, path, size, sha256)| FileHeader {
            sweep_id,
            task,
            path,
            size,
            sha256,
        },
    )
}

/// Bodies of arbitrary valid messages of every top-level type.
pub fn any_body() -> impl Strategy<Value = Vec<u8>> {
    fn body<T: serde::Serialize>(msg: T) -> Vec<u8> {
        encode(&msg).unwrap()[PREFIX_LEN..].to_vec()
    }
    prop_oneof![
        to_agent().prop_map(body),
        from_agent().prop_map(body),
        file_header().prop_map(body),
        (any::<u32>(), text()).prop_map(|(protocol_version, coordinator_version)| body(Hello {
            protocol_version,
            coordinator_version,
            preflight: None,
            sync: None,
        })),
    ]
}

/// A filled-in scheduler request, so the sample submission exercises every field.
pub fn sample_hpc() -> hsm_protocol::HpcMsg {
    hsm_protocol::HpcMsg {
        scheduler: hsm_protocol::SchedulerChoice::Slurm,
        resources: hsm_protocol::HpcResources {
            walltime: Some(3600),
            partition: Some("gpu".into()),
            cpus: Some(4),
            mem: Some("16G".into()),
            gres: Some("gpu:a100:1".into()),
            modules: vec!["cuda/12.1".into()],
            directives: vec!["--constraint=a100".into()],
            max_array_size: Some(1000),
            array_throttle: Some(50),
            ..hsm_protocol::HpcResources::default()
        },
    }
}
