//! End-to-end tests of `hsm-coordinator identity`, `agent add` and `agent list`.

mod common;

use common::*;

#[test]
fn identity_is_created_once_under_hsm_home() {
    let home = tempfile::tempdir().unwrap();
    let p = Project::new(CONFIG, &[]);
    let first = p
        .command(&["identity"])
        .env("HSM_HOME", home.path())
        .output()
        .unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let fingerprint = String::from_utf8_lossy(&first.stdout).trim().to_string();
    assert!(
        fingerprint.starts_with("sha256:") && fingerprint.len() == 71,
        "{fingerprint}"
    );
    let second = p
        .command(&["identity"])
        .env("HSM_HOME", home.path())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&second.stdout).trim(), fingerprint);
}

#[test]
fn agent_add_writes_a_valid_source_and_list_shows_it() {
    let p = Project::new(
        "# my project\ncommand:\n  python: python3\n  script: task.py\n",
        &[("task.py", "")],
    );
    let fp = format!("sha256:{}", "0f".repeat(32));
    let run = p.run(&[
        "agent",
        "add",
        "gpu1",
        "127.0.0.1:7300",
        "--fingerprint",
        &fp,
        "--slots",
        "4",
    ]);
    run.expect_code(0);
    let config = std::fs::read_to_string(p.path().join(".hsm/config.yaml")).unwrap();
    assert!(
        config.starts_with("# my project"),
        "comments kept: {config}"
    );
    p.run(&["config", "validate"]).expect_code(0);
    let list = p.run(&["agent", "list"]);
    list.expect_code(0);
    assert!(
        list.stdout.contains("gpu1") && list.stdout.contains(&fp),
        "{}",
        list.stdout
    );

    for bad in [
        &["agent", "add", "gpu2", "no-port", "--fingerprint", &fp][..],
        &[
            "agent",
            "add",
            "gpu2",
            "127.0.0.1:7300",
            "--fingerprint",
            "sha256:xyz",
        ],
        &[
            "agent",
            "add",
            "bad name",
            "127.0.0.1:7300",
            "--fingerprint",
            &fp,
        ],
        &[
            "agent",
            "add",
            "gpu2",
            "127.0.0.1:7300",
            "--fingerprint",
            &fp,
            "--slots",
            "0",
        ],
    ] {
        p.run(bad).expect_code(2);
    }
    assert_eq!(
        std::fs::read_to_string(p.path().join(".hsm/config.yaml")).unwrap(),
        config,
        "a refused add changes nothing"
    );
}

#[test]
fn agent_ping_over_mutual_tls_and_clear_refusals() {
    let Some(agent_bin) = agent_bin() else {
        eprintln!(
            "SKIPPED: hsm-agent binary not built (run the workspace tests: tests/run-all.sh)"
        );
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let stranger = tempfile::tempdir().unwrap();
    let agent = start_agent(&agent_bin);
    let p = Project::new(CONFIG, &[]);
    let coordinator = |home: &std::path::Path, args: &[&str]| {
        let out = p.command(args).env("HSM_HOME", home).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (_, own_fp, _) = coordinator(home.path(), &["identity"]);
    let authorize = std::process::Command::new(&agent_bin)
        .args(["authorize", own_fp.trim(), "--state-dir"])
        .arg(&agent.state)
        .output()
        .unwrap();
    assert!(authorize.status.success());
    p.run(&[
        "agent",
        "add",
        "a1",
        &agent.addr,
        "--fingerprint",
        &agent.fingerprint,
    ])
    .expect_code(0);

    let (code, out, err) = coordinator(home.path(), &["agent", "ping", "a1"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("ok, round trip") && out.contains("3 slots") && out.contains("free disk"),
        "{out}"
    );

    // A coordinator the agent never authorized: refused in the handshake, told what to run.
    let (code, _, err) = coordinator(stranger.path(), &["agent", "ping", "a1"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("refused this coordinator") && err.contains("hsm-agent authorize sha256:"),
        "{err}"
    );

    // The coordinator pins another fingerprint: refused, both fingerprints named.
    let wrong = format!("sha256:{}", "cd".repeat(32));
    p.run(&["agent", "add", "a2", &agent.addr, "--fingerprint", &wrong])
        .expect_code(0);
    let (code, _, err) = coordinator(home.path(), &["agent", "ping", "a2"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&agent.fingerprint) && err.contains(&wrong),
        "{err}"
    );

    // Still serving after the refusals.
    let (code, out, err) = coordinator(home.path(), &["agent", "ping", "a1"]);
    assert_eq!(code, Some(0), "{out}{err}");
}

#[test]
fn a_sweep_across_local_and_two_agents_brings_every_file_back_intact() {
    let Some(agent_bin) = agent_bin() else {
        eprintln!(
            "SKIPPED: hsm-agent binary not built (run the workspace tests: tests/run-all.sh)"
        );
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let p = Project::new(
        "command:\n  python: python3\n  script: task.py\ndefaults:\n  kill_grace: 1s\n",
        &[
            ("task.py", RESULT_PY),
            (
                "sweeps/sweep.yaml",
                "sweep:\n  grid:\n    x: {range: [1, 61]}\n",
            ),
        ],
    );
    let identity = p
        .command(&["identity"])
        .env("HSM_HOME", home.path())
        .output()
        .unwrap();
    let own_fp = String::from_utf8_lossy(&identity.stdout).trim().to_string();
    let agents: Vec<AgentProcess> = (0..2).map(|_| start_agent(&agent_bin)).collect();
    for (i, agent) in agents.iter().enumerate() {
        enlist(&p, &agent_bin, agent, &format!("a{i}"), &own_fp);
    }
    let mut cmd = p.command(&[
        "sweep",
        "run",
        "--sources",
        "local,a0,a1",
        "--sweep-id",
        "multi",
        "--parallel",
        "2",
    ]);
    cmd.env("HSM_HOME", home.path());
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let run = Run::wait(cmd.spawn().unwrap(), "sweep run across agents".into());
    run.expect_code(0);
    let status = p.status("multi");
    assert_eq!(status["completed"], 60, "{status}");
    let mut by_source = std::collections::HashMap::new();
    for task in status["tasks"].as_array().unwrap() {
        *by_source
            .entry(task["source"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
        assert_eq!(task["attempt"], 1, "no task ran twice: {task}");
    }
    assert!(
        by_source.len() == 3,
        "every source ran tasks: {by_source:?}"
    );
    for x in 1..=60u64 {
        let dir = p.sweep_dir("multi").join(format!("tasks/task_{x:03}"));
        let data =
            std::fs::read(dir.join("results/data.bin")).unwrap_or_else(|e| panic!("task {x}: {e}"));
        assert!(
            data == expected_data(x),
            "task {x}: result differs ({} bytes)",
            data.len()
        );
        let stdout = std::fs::read_to_string(dir.join("stdout.log")).unwrap();
        assert!(
            stdout.contains(&format!("task {x} says hi")),
            "task {x} stdout: {stdout:?}"
        );
    }
}

#[test]
fn an_agent_killed_mid_sweep_loses_no_task_and_runs_none_twice() {
    let Some(agent_bin) = agent_bin() else {
        eprintln!(
            "SKIPPED: hsm-agent binary not built (run the workspace tests: tests/run-all.sh)"
        );
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let slow = RESULT_PY.replace("import os, sys", "import os, sys, time\ntime.sleep(0.3)");
    let p = Project::new(
        "command:\n  python: python3\n  script: task.py\ndefaults:\n  kill_grace: 1s\n  agent_grace: 2s\n",
        &[("task.py", &slow), ("sweeps/sweep.yaml", "sweep:\n  grid:\n    x: {range: [1, 41]}\n")],
    );
    let identity = p
        .command(&["identity"])
        .env("HSM_HOME", home.path())
        .output()
        .unwrap();
    let own_fp = String::from_utf8_lossy(&identity.stdout).trim().to_string();
    let mut agents: Vec<AgentProcess> = (0..2).map(|_| start_agent(&agent_bin)).collect();
    for (i, agent) in agents.iter().enumerate() {
        enlist(&p, &agent_bin, agent, &format!("a{i}"), &own_fp);
    }
    let mut cmd = p.command(&["sweep", "run", "--sources", "a0,a1", "--sweep-id", "lossy"]);
    cmd.env("HSM_HOME", home.path());
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let db = p.sweep_dir("lossy").join("sweep.db");
    wait_until(
        std::time::Duration::from_secs(60),
        "tasks completed on agent a0",
        || {
            db.exists()
                && p.try_status("lossy").is_some_and(|s| {
                    s["tasks"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|t| t["source"] == "a0" && t["status"] == "completed")
                        .count()
                        >= 3
                })
        },
    );
    agents[0].child.kill().expect("kill -9 agent a0");
    let run = Run::wait(child, "sweep run with an agent killed".into());
    run.expect_code(0);
    let status = p.status("lossy");
    assert_eq!(status["completed"], 40, "{status}");
    let db = rusqlite::Connection::open(p.sweep_dir("lossy").join("sweep.db")).unwrap();
    let twice: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM (SELECT idx FROM attempts WHERE status = 'completed' GROUP BY idx HAVING COUNT(*) > 1)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(twice, 0, "a task completed twice");
    let rerun: i64 = db
        .query_row("SELECT COUNT(*) FROM tasks WHERE attempt > 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(
        rerun >= 1,
        "the tasks running on a0 ran again: {}",
        run.stderr
    );
    for x in 1..=40u64 {
        let data = std::fs::read(
            p.sweep_dir("lossy")
                .join(format!("tasks/task_{x:03}/results/data.bin")),
        )
        .unwrap();
        assert!(data == expected_data(x), "task {x}: result differs");
    }
}

#[test]
fn complete_and_status_work_the_same_for_agent_sweeps() {
    let Some(agent_bin) = agent_bin() else {
        eprintln!(
            "SKIPPED: hsm-agent binary not built (run the workspace tests: tests/run-all.sh)"
        );
        return;
    };
    let home = tempfile::tempdir().unwrap();
    // Fails for even x until the file `fixed` exists in the project.
    let script = RESULT_PY.replace(
        "x = int(args[\"x\"])",
        "x = int(args[\"x\"])\nif x % 2 == 0 and not os.path.exists(\"fixed\"):\n    sys.exit(4)",
    );
    let p = Project::new(
        "command:\n  python: python3\n  script: task.py\n",
        &[
            ("task.py", &script),
            (
                "sweeps/sweep.yaml",
                "sweep:\n  grid:\n    x: {range: [1, 9]}\n",
            ),
        ],
    );
    let identity = p
        .command(&["identity"])
        .env("HSM_HOME", home.path())
        .output()
        .unwrap();
    let own_fp = String::from_utf8_lossy(&identity.stdout).trim().to_string();
    let agent = start_agent(&agent_bin);
    enlist(&p, &agent_bin, &agent, "a1", &own_fp);
    let run_with = |args: &[&str]| {
        let mut cmd = p.command(args);
        cmd.env("HSM_HOME", home.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        Run::wait(cmd.spawn().unwrap(), args.join(" "))
    };
    run_with(&["sweep", "run", "--sources", "a1", "--sweep-id", "agentc"]).expect_code(1);
    let status = p.status("agentc");
    assert_eq!(
        (status["completed"].as_u64(), status["failed"].as_u64()),
        (Some(4), Some(4)),
        "{status}"
    );
    assert!(status["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["source"] == "a1"));
    let failed = &status["tasks"][1];
    assert_eq!(failed["exit_code"], 4, "{failed}");

    p.write("fixed", "");
    run_with(&["sweep", "complete", "agentc", "--sources", "a1"]).expect_code(0);
    let status = p.status("agentc");
    assert_eq!(status["completed"], 8, "{status}");
    for task in status["tasks"].as_array().unwrap() {
        let x = task["params"]["x"].as_u64().unwrap();
        assert_eq!(task["attempt"], if x % 2 == 0 { 2 } else { 1 }, "{task}");
        let data = std::fs::read(
            p.sweep_dir("agentc")
                .join(format!("tasks/task_{x:03}/results/data.bin")),
        )
        .unwrap();
        assert!(data == expected_data(x), "task {x}");
    }
}
