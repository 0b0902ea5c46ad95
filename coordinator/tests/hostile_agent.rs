//! A trusted agent that lies (the fake agent of `common/fake_agent.rs`, since a real `hsm-agent`
//! never sends a wrong hash, a short file or an event out of sequence) cannot leave a task
//! running forever, cannot delete or replace files of other tasks, and one Ctrl-C stops a run
//! whose result files are stuck. The honest 255-byte result name goes through a real agent.

mod common;
#[path = "common/fake_agent.rs"]
mod fake_agent;

use common::*;
use fake_agent::*;
use hsm_protocol::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// Any hang fails the test well before the suite's guard.
const HANG: Duration = Duration::from_secs(180);

fn add_fake(p: &Project, fake: &FakeAgent, slots: &str) {
    p.run(&[
        "agent",
        "add",
        "fake",
        &fake.addr,
        "--fingerprint",
        &fake.fingerprint,
        "--slots",
        slots,
        "--project-dir",
        "/fake/project",
    ])
    .expect_code(0);
}

fn run_bounded(p: &Project, home: &Path, args: &[&str]) -> Run {
    let mut cmd = p.command(args);
    cmd.env("HSM_HOME", home)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    Run::wait_within(
        cmd.spawn().unwrap(),
        format!("hsm-coordinator {}", args.join(" ")),
        HANG,
    )
}

/// (status, reason) of each task's current attempt, by task index.
fn outcomes(p: &Project, sweep: &str) -> Vec<(u64, String, String)> {
    let db = rusqlite::Connection::open(p.sweep_dir(sweep).join("sweep.db")).unwrap();
    let mut stmt = db
        .prepare("SELECT idx, status, COALESCE(reason, '') FROM tasks ORDER BY idx")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            out.push(e.path().display().to_string());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(files_under(&e.path()));
            }
        }
    }
    out
}

const GOOD: &[u8] = b"the real result\n";

#[test]
fn result_files_that_do_not_arrive_intact_end_their_attempts_failed_and_the_run_finishes() {
    let home = tempfile::tempdir().unwrap();
    let p = Project::new(
        "command:\n  python: python3\n  script: task.py\n",
        &[
            ("task.py", ""),
            (
                "sweeps/sweep.yaml",
                "sweep:\n  grid:\n    i: {range: [1, 9]}\n",
            ),
        ],
    );
    let long_name = format!("results/{}", "n".repeat(MAX_COMPONENT_LEN));
    let too_long = format!("results/{}", "n".repeat(MAX_COMPONENT_LEN + 45));
    let name = long_name.clone();
    let fake = FakeAgent::start(8, move |sweep, task, _| {
        let long_name = &name;
        let ok_then =
            |files: Vec<FileOffer>| vec![(2, exited_ok()), (3, EventKind::ResultOffer { files })];
        let mut script = Script {
            first: vec![(1, started())],
            ..Script::default()
        };
        match task.index.0 {
            // Bytes that do not hash to what was offered.
            1 => {
                script.then = ok_then(vec![offer("results/a.txt", GOOD)]);
                let mut lie = honest(sweep, task, "results/a.txt", GOOD);
                lie.body = b"THE REAL RESULT\n".to_vec();
                script.on_fetch = vec![lie];
            }
            // Fewer bytes than offered, then the end of the stream.
            2 => {
                script.then = ok_then(vec![offer("results/a.txt", GOOD)]);
                let mut short = honest(sweep, task, "results/a.txt", GOOD);
                short.body.truncate(5);
                script.on_fetch = vec![short];
            }
            // Far more bytes than offered.
            3 => {
                let mut big = honest(sweep, task, "results/a.txt", GOOD);
                big.body = vec![b'x'; 4 << 20];
                script.then = ok_then(vec![offer("results/a.txt", GOOD)]);
                script.on_fetch = vec![big];
            }
            // A path the coordinator refuses: not a result file.
            4 => {
                script.then = ok_then(vec![offer("stdout.log", GOOD)]);
                script.on_fetch = vec![honest(sweep, task, "stdout.log", GOOD)];
            }
            // A name no file system here can hold.
            5 => {
                script.then = ok_then(vec![offer(&too_long, GOOD)]);
                script.on_fetch = vec![honest(sweep, task, &too_long, GOOD)];
            }
            // The offer's sequence number jumps to the end of the range.
            6 => {
                script.then = vec![
                    (2, exited_ok()),
                    (
                        u64::MAX,
                        EventKind::ResultOffer {
                            files: vec![offer("results/a.txt", GOOD)],
                        },
                    ),
                ];
                script.on_fetch = vec![honest(sweep, task, "results/a.txt", GOOD)];
            }
            // The agent says it cannot send what it offered.
            7 => {
                script.then = ok_then(vec![offer("results/a.txt", GOOD)]);
                script.errors_on_fetch = vec![ErrorMsg {
                    message:
                        "cannot send result \"results/a.txt\": it changed since it was offered"
                            .into(),
                    file: Some(FileRef {
                        sweep_id: sweep.clone(),
                        task,
                        path: "results/a.txt".into(),
                    }),
                }];
            }
            // Honest, with a name as long as a file name can be.
            _ => {
                script.then = ok_then(vec![offer(long_name, GOOD)]);
                script.on_fetch = vec![honest(sweep, task, long_name, GOOD)];
            }
        }
        script
    });
    add_fake(&p, &fake, "8");
    let run = run_bounded(
        &p,
        home.path(),
        &["sweep", "run", "--sources", "fake", "--sweep-id", "lies"],
    );
    run.expect_code(1);
    let got = outcomes(&p, "lies");
    let expect = [
        (1, "failed", "SHA-256 mismatch"),
        (2, "failed", "expected 16 bytes, got 5"),
        (3, "failed", "expected 16 bytes, got"),
        (4, "failed", "not under results/"),
        (5, "failed", "the limit is 255"),
        (
            6,
            "failed",
            "protocol error: fake sent event 18446744073709551615",
        ),
        (7, "failed", "it changed since it was offered"),
        (8, "completed", ""),
    ];
    for ((idx, status, reason), (want_idx, want_status, want_reason)) in got.iter().zip(expect) {
        assert_eq!(*idx, want_idx);
        if status != want_status || !reason.contains(want_reason) {
            run.fail(&format!(
                "task {idx}: {status} ({reason}), expected {want_status} with {want_reason:?}\nall: {got:#?}"
            ));
        }
    }
    let sweep_dir = p.sweep_dir("lies");
    let task8 = sweep_dir.join("tasks/task_008").join(&long_name);
    assert_eq!(std::fs::read(&task8).unwrap(), GOOD);
    let all = files_under(&sweep_dir);
    let partial: Vec<_> = all.iter().filter(|f| f.contains(".partial")).collect();
    assert!(partial.is_empty(), "temporary files left: {partial:?}");
    // Nothing the fake said replaced the task's own files, and no wrong bytes were kept.
    for x in 1..=7 {
        let task = sweep_dir.join(format!("tasks/task_{x:03}"));
        assert!(!task.join("results/a.txt").exists(), "task {x}");
        assert_ne!(
            std::fs::read(task.join("stdout.log")).unwrap_or_default(),
            GOOD,
            "task {x}"
        );
    }
}

#[test]
fn one_ctrl_c_stops_a_run_whose_result_file_stopped_arriving() {
    let home = tempfile::tempdir().unwrap();
    let p = Project::new(
        "command:\n  python: python3\n  script: task.py\n",
        &[
            ("task.py", ""),
            ("sweeps/sweep.yaml", "sweep:\n  grid:\n    i: [1]\n"),
        ],
    );
    let fake = FakeAgent::start(1, |sweep, task, _| {
        let mut stuck = honest(sweep, task, "results/a.txt", &[7u8; 100_000]);
        stuck.stall_after = Some(1000);
        Script {
            first: vec![(1, started())],
            then: vec![
                (2, exited_ok()),
                (
                    3,
                    EventKind::ResultOffer {
                        files: vec![offer("results/a.txt", &[7u8; 100_000])],
                    },
                ),
            ],
            on_fetch: vec![stuck],
            ..Script::default()
        }
    });
    add_fake(&p, &fake, "1");
    let mut cmd = p.command(&["sweep", "run", "--sources", "fake", "--sweep-id", "stuck"]);
    cmd.env("HSM_HOME", home.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    // Wait until the file is being fetched, then one Ctrl-C.
    wait_until(Duration::from_secs(60), "the fetch of the result", || {
        !fake.fetches.lock().unwrap().is_empty()
    });
    std::thread::sleep(Duration::from_millis(500));
    let interrupted = Instant::now();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let output = wait_with_timeout(child, HANG, "sweep run after one Ctrl-C");
    let stopped_in = interrupted.elapsed();
    assert_eq!(
        output.status.code(),
        Some(130),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("stopped {stopped_in:?} after Ctrl-C");
    let got = outcomes(&p, "stuck");
    assert_eq!(got[0].1, "cancelled", "{got:?}");
    let partial: Vec<_> = files_under(&p.sweep_dir("stuck"))
        .into_iter()
        .filter(|f| f.contains(".partial"))
        .collect();
    assert!(partial.is_empty(), "{partial:?}");
}

const MODEL_PY: &str = "import os, sys\nargs = dict(a.split('=', 1) for a in sys.argv[1:])\nopen(os.path.join(os.environ['HSM_OUTPUT_DIR'], 'model.txt'), 'w').write('model ' + args['i'])\nprint('trained', args['i'])\n";

#[test]
fn a_trusted_agent_cannot_replace_or_delete_files_of_other_tasks() {
    let home = tempfile::tempdir().unwrap();
    let p = Project::new(
        "command:\n  python: python3\n  script: task.py\n",
        &[
            ("task.py", MODEL_PY),
            (
                "sweeps/sweep.yaml",
                "sweep:\n  grid:\n    i: {range: [1, 5]}\n",
            ),
        ],
    );
    let tasks = p.sweep_dir("mixed").join("tasks");
    let tasks2 = tasks.clone();
    let fake = FakeAgent::start(1, move |sweep, task, given| {
        let own = task.index.0;
        let others: Vec<u64> = (1..=4).filter(|i| !given.contains(i)).collect();
        let mut script = Script {
            first: vec![(1, started())],
            ..Script::default()
        };
        // Once the local tasks are done, send "results" for them: the paths of their result,
        // parameters, command and log, under their own attempt numbers.
        script.wait_for = others
            .iter()
            .map(|i| tasks2.join(format!("task_{i:03}/results/model.txt")))
            .collect();
        for i in &others {
            for path in [
                "results/model.txt",
                "params.yaml",
                "command.txt",
                "stdout.log",
            ] {
                let other = TaskRef {
                    index: TaskIndex(*i),
                    attempt: Attempt(1),
                };
                script.unasked.push(honest(sweep, other, path, b"EVIL"));
            }
        }
        let mine = format!("model {own}");
        script.then = vec![
            (2, exited_ok()),
            (
                3,
                EventKind::ResultOffer {
                    files: vec![offer("results/model.txt", mine.as_bytes())],
                },
            ),
        ];
        // The offered file, twice; the second copy arrives after the attempt finished.
        let file = honest(sweep, task, "results/model.txt", mine.as_bytes());
        script.on_fetch = vec![file.clone(), file];
        script
    });
    add_fake(&p, &fake, "1");
    let run = run_bounded(
        &p,
        home.path(),
        &[
            "sweep",
            "run",
            "--sources",
            "local,fake",
            "--parallel",
            "3",
            "--sweep-id",
            "mixed",
        ],
    );
    run.expect_code(0);
    // Let a late second copy arrive (or not) before looking.
    std::thread::sleep(Duration::from_secs(1));
    let given = fake.given.lock().unwrap().clone();
    assert!(!given.is_empty(), "the fake agent got no task");
    for i in 1..=4u64 {
        let dir = tasks.join(format!("task_{i:03}"));
        let model = std::fs::read_to_string(dir.join("results/model.txt"))
            .unwrap_or_else(|e| run.fail(&format!("task {i} lost results/model.txt: {e}")));
        assert_eq!(model, format!("model {i}"), "task {i}");
        for own in ["params.yaml", "command.txt", "stdout.log"] {
            let text = std::fs::read_to_string(dir.join(own))
                .unwrap_or_else(|e| run.fail(&format!("task {i} lost {own}: {e}")));
            assert_ne!(text, "EVIL", "task {i}: {own} replaced");
        }
        if !given.contains(&i) {
            let log = std::fs::read_to_string(dir.join("stdout.log")).unwrap();
            assert!(log.contains(&format!("trained {i}")), "task {i}: {log:?}");
        }
    }
    let got = outcomes(&p, "mixed");
    assert!(got.iter().all(|(_, s, _)| s == "completed"), "{got:?}");
}

#[test]
fn a_real_agent_delivers_a_result_named_as_long_as_a_file_name_can_be() {
    let Some(agent_bin) = agent_bin() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let name = "n".repeat(MAX_COMPONENT_LEN);
    let script = format!(
        "import os\nopen(os.path.join(os.environ['HSM_OUTPUT_DIR'], '{name}'), 'w').write('long')\n"
    );
    let p = Project::new(
        "command:\n  python: python3\n  script: task.py\n",
        &[
            ("task.py", &script),
            ("sweeps/sweep.yaml", "sweep:\n  grid:\n    i: [1, 2]\n"),
        ],
    );
    let own_fp = coordinator_fingerprint(&p, home.path());
    let agent = start_agent(&agent_bin);
    enlist(&p, &agent_bin, &agent, "a1", &own_fp);
    let run = run_bounded(
        &p,
        home.path(),
        &["sweep", "run", "--sources", "a1", "--sweep-id", "long"],
    );
    run.expect_code(0);
    for i in 1..=2 {
        let path = p
            .sweep_dir("long")
            .join(format!("tasks/task_{i:03}/results/{name}"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "long");
    }
}
