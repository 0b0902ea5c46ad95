//! Across hosts: the coordinator and two agents each in their own network namespace (separate
//! "hosts" joined by a bridge, see `tests/netns.sh`), each agent with its own directories. A
//! sweep runs across all three; one agent is killed mid-sweep; every task completes exactly once
//! with its files intact. Needs root (namespaces); skips with a printed reason otherwise.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn a_sweep_across_three_hosts_survives_losing_an_agent() {
    let Some(agent_bin) = agent_bin() else {
        return;
    };
    let tag = format!("h{}", std::process::id() % 100_000);
    let (hosts, net) = match hosts(&tag, 3) {
        Ok(h) => h,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let home = tempfile::tempdir().unwrap();
    let slow = RESULT_PY.replace("import os, sys", "import os, sys, time\ntime.sleep(0.2)");
    let p = Project::new(
        "command:\n  python: python3\n  script: task.py\ndefaults:\n  kill_grace: 1s\n  agent_grace: 2s\n",
        &[("task.py", &slow), ("sweeps/sweep.yaml", "sweep:\n  grid:\n    x: {range: [1, 61]}\n")],
    );
    let own_fp = coordinator_fingerprint(&p, home.path());
    // Host 0 runs the coordinator; hosts 1 and 2 run an agent each.
    let mut agents = Vec::new();
    for i in 1..=2 {
        let ns = format!("{tag}-h{i}");
        let agent = start_agent_in(&agent_bin, Some(&ns), &format!("{net}.{}:7300", i + 1));
        enlist(&p, &agent_bin, &agent, &format!("a{i}"), &own_fp);
        agents.push(agent);
    }
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", &format!("{tag}-h0"), bin(), "-C"])
        .arg(p.path())
        .args([
            "sweep",
            "run",
            "--sources",
            "local,a1,a2",
            "--sweep-id",
            "hosts",
            "--parallel",
            "1",
        ])
        .env("HSM_HOME", home.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let db = p.sweep_dir("hosts").join("sweep.db");
    wait_until(
        Duration::from_secs(90),
        "tasks completed on agent a1",
        || {
            db.exists()
                && p.try_status("hosts").is_some_and(|s| {
                    s["tasks"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|t| t["source"] == "a1" && t["status"] == "completed")
                        .count()
                        >= 3
                })
        },
    );
    agents[0].child.kill().expect("kill -9 agent a1");
    let run = Run::wait(child, "sweep run across hosts".into());
    run.expect_code(0);

    let status = p.status("hosts");
    assert_eq!(status["completed"], 60, "{status}");
    let sources: std::collections::HashSet<&str> = status["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["source"].as_str().unwrap())
        .collect();
    assert!(
        sources.contains("a2") && sources.contains("local"),
        "{sources:?}"
    );
    assert_eq!(completed_twice(&p, "hosts"), 0, "a task completed twice");
    for x in 1..=60u64 {
        let dir = p.sweep_dir("hosts").join(format!("tasks/task_{x:03}"));
        let data =
            std::fs::read(dir.join("results/data.bin")).unwrap_or_else(|e| panic!("task {x}: {e}"));
        assert!(data == expected_data(x), "task {x}: result differs");
        let stdout = std::fs::read_to_string(dir.join("stdout.log")).unwrap();
        assert!(
            stdout.contains(&format!("task {x} says hi")),
            "task {x}: {stdout:?}"
        );
    }
    drop(agents);
    drop(hosts);
}
