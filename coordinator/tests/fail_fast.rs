//! Runs stop at once on errors that waiting cannot fix — a pinned fingerprint the agent does
//! not present, a coordinator the agent has not authorized — and after
//! `defaults.connect_timeout` when no source ever answered; the reason is said once. Real
//! `hsm-agent` processes on loopback, real `sweep run`.

mod common;

use common::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

const PROJECT: &str = "command:\n  python: python3\n  script: task.py\n";
const FILES: &[(&str, &str)] = &[
    ("task.py", "print('ok')\n"),
    ("sweeps/sweep.yaml", "sweep:\n  grid:\n    x: [1, 2, 3]\n"),
];

fn sweep_run(p: &Project, home: &std::path::Path, sources: &str, id: &str) -> (Run, Duration) {
    let started = Instant::now();
    let mut cmd = p.command(&["sweep", "run", "--sources", sources, "--sweep-id", id]);
    cmd.env("HSM_HOME", home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let run = Run::wait(
        cmd.spawn().unwrap(),
        format!("sweep run --sources {sources}"),
    );
    (run, started.elapsed())
}

#[test]
fn a_wrong_fingerprint_or_an_unauthorized_coordinator_stops_the_run_with_the_fix() {
    let Some(agent_bin) = agent_bin() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let p = Project::new(PROJECT, FILES);
    let own_fp = coordinator_fingerprint(&p, home.path());
    let agent = start_agent(&agent_bin);
    let project = p.path().to_str().unwrap();

    // Pinned to a fingerprint the agent does not have.
    let wrong = format!("sha256:{}", "cd".repeat(32));
    p.run(&[
        "agent",
        "add",
        "gpu1",
        &agent.addr,
        "--fingerprint",
        &wrong,
        "--project-dir",
        project,
    ])
    .expect_code(0);
    let (run, took) = sweep_run(&p, home.path(), "gpu1", "wrongfp");
    run.expect_code(2);
    assert!(
        run.stderr.contains(&agent.fingerprint) && run.stderr.contains(&wrong),
        "both fingerprints named: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("hsm-coordinator agent add")
            && run.stderr.contains("sweep complete wrongfp"),
        "the fix and how to go on: {}",
        run.stderr
    );
    assert_eq!(
        run.stderr.matches(&wrong).count(),
        2,
        "said once (and once in the summary): {}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("WARN"),
        "no raw log lines: {}",
        run.stderr
    );
    println!("wrong fingerprint: stopped after {took:?}");
    assert_eq!(
        p.status("wrongfp")["pending"],
        3,
        "the tasks wait for `sweep complete`"
    );

    // The agent has not authorized this coordinator.
    p.run(&[
        "agent",
        "add",
        "gpu1",
        &agent.addr,
        "--fingerprint",
        &agent.fingerprint,
        "--project-dir",
        project,
    ])
    .expect_code(0);
    let (run, _) = sweep_run(&p, home.path(), "gpu1", "unauthorized");
    run.expect_code(2);
    assert!(
        run.stderr
            .contains(&format!("hsm-agent authorize {own_fp}")),
        "{}",
        run.stderr
    );

    // Beside a usable source, the refusing one is only left out: the sweep runs on the other.
    let (run, _) = sweep_run(&p, home.path(), "local,gpu1", "beside");
    run.expect_code(0);
    assert!(
        run.stderr.contains("refused this coordinator"),
        "{}",
        run.stderr
    );
    assert_eq!(p.status("beside")["completed"], 3);
}

#[test]
fn a_run_whose_sources_never_answer_stops_after_connect_timeout_with_its_state_kept() {
    let home = tempfile::tempdir().unwrap();
    let p = Project::new(
        &format!("{PROJECT}defaults:\n  connect_timeout: 3s\n"),
        FILES,
    );
    coordinator_fingerprint(&p, home.path());
    // A UDP port nobody listens on.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let fp = format!("sha256:{}", "ab".repeat(32));
    p.run(&[
        "agent",
        "add",
        "gone",
        &address,
        "--fingerprint",
        &fp,
        "--project-dir",
        "/tmp",
    ])
    .expect_code(0);
    let (run, took) = sweep_run(&p, home.path(), "gone", "silent");
    run.expect_code(1);
    assert!(
        run.stderr.contains("no source answered within 3s")
            && run.stderr.contains("sweep complete silent"),
        "{}",
        run.stderr
    );
    println!("no answer: stopped after {took:?}");
    assert_eq!(p.status("silent")["pending"], 3);
}
