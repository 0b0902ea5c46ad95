//! Project sync through real `hsm-agent` processes on loopback and the real `sweep run`: the
//! agent's copy of the project lives in its own directory; an edit here is named by `check`
//! (no task goes there), allowed with `--allow-remote-drift`, and sent by `push` — after which
//! the tasks there run the new code, and a run with nothing changed sends nothing.

mod common;

use common::*;
use std::path::Path;

const SWEEP: &str = "sweep:\n  grid:\n    i: [1, 2]\n";

fn task_py(version: u32) -> String {
    format!(
        "import sys, pathlib\nprint('version {version}', pathlib.Path('conf/x.yaml').exists(), sys.argv[1:])\n"
    )
}

/// Copies the project's files (not its `.hsm/` or outputs) to `to`, as a user's `rsync` would.
fn copy_project(p: &Project, to: &Path, files: &[&str]) {
    for rel in files {
        let target = to.join(rel);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(p.path().join(rel), target).unwrap();
    }
}

fn authorize_and_add(p: &Project, agent_bin: &Path, agent: &AgentProcess, own: &str, dir: &str) {
    authorize(agent_bin, agent, own);
    p.run(&[
        "agent",
        "add",
        "far",
        &agent.addr,
        "--fingerprint",
        &agent.fingerprint,
        "--project-dir",
        dir,
    ])
    .expect_code(0);
}

fn stdout_of(p: &Project, sweep: &str, task: u32) -> String {
    std::fs::read_to_string(
        p.sweep_dir(sweep)
            .join(format!("tasks/task_{task:03}/stdout.log")),
    )
    .unwrap_or_default()
}

fn task_dirs(agent: &AgentProcess) -> usize {
    count_named(&agent.work_dir(), "task_")
}

#[test]
fn check_names_an_edit_push_sends_it_and_the_next_tasks_run_the_new_code() {
    let Some(agent_bin) = agent_bin() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let p = Project::new(
        "command:\n  python: python3\n  script: task.py\n  style: argparse\n",
        &[("task.py", &task_py(1)), ("sweeps/sweep.yaml", SWEEP)],
    );
    let remote = tempfile::tempdir().unwrap();
    let remote_dir = remote.path().join("proj");
    copy_project(&p, &remote_dir, &["task.py", "sweeps/sweep.yaml"]);
    let own = coordinator_fingerprint(&p, home.path());
    let agent = start_agent(&agent_bin);
    authorize_and_add(
        &p,
        &agent_bin,
        &agent,
        &own,
        &remote_dir.display().to_string(),
    );

    // In step: the default `check` passes and the tasks run there.
    let run = p.run_in(
        home.path(),
        &["sweep", "run", "--sources", "far", "--sweep-id", "same"],
    );
    run.expect_code(0);
    assert!(stdout_of(&p, "same", 1).contains("version 1 False"));

    // Edited here, and a new file: `check` names both and keeps tasks off the source.
    p.write("task.py", &task_py(2));
    p.write("conf/x.yaml", "a: 1\n");
    let run = p.run_in(
        home.path(),
        &["sweep", "run", "--sources", "far", "--sweep-id", "drift"],
    );
    eprintln!("--- check ---\n{}{}", run.stdout, run.stderr);
    assert_ne!(
        run.code,
        Some(0),
        "a run with its only source refused cannot succeed"
    );
    let all = format!("{}{}", run.stdout, run.stderr);
    for needed in [
        "far (",
        "differs from this one",
        "task.py differs",
        "conf/x.yaml missing",
        "sync: push",
        "--allow-remote-drift",
    ] {
        if !all.contains(needed) {
            run.fail(&format!("the output does not say {needed:?}"));
        }
    }
    let dirs_before = task_dirs(&agent);
    // The same comparison without a sweep.
    let check = p.run_in(home.path(), &["config", "validate", "--remote"]);
    check.expect_code(2);
    if !check.stdout.contains("task.py differs") || !check.stdout.contains("conf/x.yaml missing") {
        check.fail("the remote check does not name the files that differ");
    }

    // Allowed: the tasks run there, on the old code, and the run says so.
    let run = p.run_in(
        home.path(),
        &[
            "sweep",
            "run",
            "--sources",
            "far",
            "--sweep-id",
            "allowed",
            "--allow-remote-drift",
        ],
    );
    run.expect_code(0);
    let all = format!("{}{}", run.stdout, run.stderr);
    if !all.contains("project differs (--allow-remote-drift): ") || !all.contains("task.py differs")
    {
        run.fail("the run does not warn about the drift it allowed");
    }
    assert!(stdout_of(&p, "allowed", 1).contains("version 1 False"));
    assert_eq!(task_dirs(&agent), dirs_before + 2);

    // `push`: the changed and the new file are sent before any task, which then runs them.
    let config = std::fs::read_to_string(p.path().join(".hsm/config.yaml")).unwrap();
    p.write(".hsm/config.yaml", &format!("{config}sync: push\n"));
    let run = p.run_in(
        home.path(),
        &["sweep", "run", "--sources", "far", "--sweep-id", "pushed"],
    );
    eprintln!("--- push ---\n{}{}", run.stdout, run.stderr);
    run.expect_code(0);
    let all = format!("{}{}", run.stdout, run.stderr);
    if !all.contains("project pushed: 2 files (") {
        run.fail("the run does not say what it pushed");
    }
    for i in 1..=2 {
        let out = stdout_of(&p, "pushed", i);
        assert!(out.contains("version 2 True"), "task {i}: {out:?}");
    }
    assert_eq!(
        std::fs::read_to_string(remote_dir.join("task.py")).unwrap(),
        task_py(2)
    );
    assert_eq!(
        std::fs::read_to_string(remote_dir.join("conf/x.yaml")).unwrap(),
        "a: 1\n"
    );
    // Only the project's files: not hsm's config, not the sweeps' outputs.
    assert!(!remote_dir.join(".hsm").exists());
    assert!(!remote_dir.join("sweeps/outputs").exists());

    // Nothing changed: nothing sent.
    let run = p.run_in(
        home.path(),
        &["sweep", "run", "--sources", "far", "--sweep-id", "again"],
    );
    run.expect_code(0);
    let all = format!("{}{}", run.stdout, run.stderr);
    if all.contains("project pushed") {
        run.fail("a run with nothing changed pushed files");
    }
}

#[test]
fn push_fills_a_project_dir_that_does_not_exist_yet_and_off_compares_nothing() {
    let Some(agent_bin) = agent_bin() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let p = Project::new(
        "command:\n  python: python3\n  script: task.py\n  style: argparse\nsync:\n  mode: push\n  exclude: [data/]\n",
        &[
            ("task.py", &task_py(7)),
            ("conf/x.yaml", "a: 1\n"),
            ("data/big.csv", "1,2,3\n"),
            ("sweeps/sweep.yaml", SWEEP),
        ],
    );
    let remote = tempfile::tempdir().unwrap();
    let remote_dir = remote.path().join("not/yet/here");
    let own = coordinator_fingerprint(&p, home.path());
    let agent = start_agent(&agent_bin);
    authorize_and_add(
        &p,
        &agent_bin,
        &agent,
        &own,
        &remote_dir.display().to_string(),
    );
    let run = p.run_in(
        home.path(),
        &["sweep", "run", "--sources", "far", "--sweep-id", "fresh"],
    );
    eprintln!("--- push to nothing ---\n{}{}", run.stdout, run.stderr);
    run.expect_code(0);
    assert!(stdout_of(&p, "fresh", 2).contains("version 7 True"));
    // task.py, conf/x.yaml, sweeps/sweep.yaml; data/ left out as the config says.
    let all = format!("{}{}", run.stdout, run.stderr);
    if !all.contains("project pushed: 3 files (") {
        run.fail("the run does not say it pushed the three project files");
    }
    assert!(!remote_dir.join("data").exists());

    // `sync: off` on the source: a drifted copy is used without a word.
    p.write("task.py", &task_py(8));
    let config = std::fs::read_to_string(p.path().join(".hsm/config.yaml")).unwrap();
    let dir = remote_dir.display().to_string();
    let config = config.replacen(
        &format!("project_dir: {dir}"),
        &format!("project_dir: {dir}\n    sync: off"),
        1,
    );
    assert!(config.contains("sync: off"), "{config}");
    p.write(".hsm/config.yaml", &config);
    let run = p.run_in(
        home.path(),
        &["sweep", "run", "--sources", "far", "--sweep-id", "off"],
    );
    run.expect_code(0);
    assert!(stdout_of(&p, "off", 1).contains("version 7 True"));
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(
        !all.contains("project pushed") && !all.contains("differs"),
        "{all}"
    );
}

#[test]
fn a_bad_sync_setting_is_named_with_its_line() {
    let p = Project::new(
        "command:\n  python: python3\n  script: task.py\nsync:\n  mode: pusj\n  exclude: ['[']\n",
        &[("task.py", "print(1)\n"), ("sweeps/sweep.yaml", SWEEP)],
    );
    let run = p.run(&["config", "validate"]);
    run.expect_code(2);
    let all = format!("{}{}", run.stdout, run.stderr);
    for needed in [
        "config.yaml:5",
        "unknown sync mode `pusj`",
        "did you mean `push`",
        "config.yaml:6",
        "not a usable glob",
    ] {
        if !all.contains(needed) {
            run.fail(&format!("the output does not say {needed:?}"));
        }
    }
}
