//! The fault-injection suite (issue 5): sweeps of 100+ short tasks with result files against real
//! `hsm-agent` processes, with one fault each — an agent killed and restarted, an agent
//! restarted while a large result file is in transfer. Each ends with the same verdict
//! (`assert_exactly_once`, `assert_results_intact`) and prints its recovery time as
//! `RECOVERY <scenario>: <seconds>` for the notes.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// Completed tasks of `sweep` so far (0 before the database exists).
fn completed(p: &Project, sweep: &str) -> u64 {
    p.try_status(sweep)
        .and_then(|s| s["completed"].as_u64())
        .unwrap_or(0)
}

/// A project whose tasks (`RESULT_PY` after `sleep` seconds) run on the given agents only.
fn project_on_agents(
    agent_bin: &std::path::Path,
    agents: &[&AgentProcess],
    home: &std::path::Path,
    sleep: f64,
    tasks: u64,
    defaults: &str,
) -> Project {
    let task = RESULT_PY.replace(
        "import os, sys",
        &format!("import os, sys, time\ntime.sleep({sleep})"),
    );
    let p = Project::new(
        &format!("command:\n  python: python3\n  script: task.py\ndefaults:\n{defaults}"),
        &[
            ("task.py", &task),
            (
                "sweeps/sweep.yaml",
                &format!("sweep:\n  grid:\n    x: {{range: [1, {}]}}\n", tasks + 1),
            ),
        ],
    );
    let own_fp = coordinator_fingerprint(&p, home);
    for (i, agent) in agents.iter().enumerate() {
        enlist(&p, agent_bin, agent, &format!("a{i}"), &own_fp);
    }
    p
}

fn run_sweep(p: &Project, home: &std::path::Path, sources: &str, id: &str) -> std::process::Child {
    let mut cmd = p.command(&["sweep", "run", "--sources", sources, "--sweep-id", id]);
    cmd.env("HSM_HOME", home)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd.spawn().unwrap()
}

#[test]
fn an_agent_killed_and_restarted_5s_later_loses_nothing_and_runs_nothing_twice() {
    let Some(agent_bin) = agent_bin() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let mut agent = start_agent(&agent_bin);
    // The agent is the only source, so the sweep must wait for it: a grace far longer than the
    // outage keeps its tasks assigned to it.
    let p = project_on_agents(
        &agent_bin,
        &[&agent],
        home.path(),
        0.2,
        120,
        "  kill_grace: 1s\n  agent_grace: 60s\n",
    );
    let child = run_sweep(&p, home.path(), "a0", "akill");
    wait_until(
        Duration::from_secs(120),
        "a third of the tasks done",
        || completed(&p, "akill") >= 40,
    );
    agent.kill();
    let at_kill = completed(&p, "akill");
    std::thread::sleep(Duration::from_secs(5));
    let restarted = Instant::now();
    agent.restart();
    wait_until(
        Duration::from_secs(60),
        "progress after the restart",
        || completed(&p, "akill") > at_kill + 3,
    );
    let recovery = restarted.elapsed().as_secs_f64();
    let out = wait_with_timeout(child, Duration::from_secs(300), "sweep run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_exactly_once(&p, "akill", 120);
    assert_results_intact(&p, "akill", 120);
    let db = rusqlite::Connection::open(p.sweep_dir("akill").join("sweep.db")).unwrap();
    let lost: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM attempts WHERE reason LIKE '%lost by the agent%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    eprintln!("RECOVERY agent kill -9 + restart after 5 s: {recovery:.1} s to progress again ({lost} attempts lost and re-run)");
    assert!(
        lost >= 1,
        "the tasks running at the kill were reported lost"
    );
}

#[test]
fn an_agent_restarted_while_a_50_mib_result_is_in_transfer_sends_it_again() {
    let Some(agent_bin) = agent_bin() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let mut agent = start_agent(&agent_bin);
    let big = 50 * 1024 * 1024;
    // Task 50 writes 50 MiB; the others are small. The restart happens while the big file is
    // on its way (the coordinator's partial copy exists).
    let task = format!(
        r#"
import os, sys, time
args = dict(a.split("=", 1) for a in sys.argv[1:])
x = int(args["x"])
out = args["output.dir"]
os.makedirs(out, exist_ok=True)
size = {big} if x == 50 else x * 997
pattern = bytes((x * 31 + i) % 251 for i in range(251))
with open(os.path.join(out, "data.bin"), "wb") as f:
    chunk = (pattern * (1024 * 1024 // 251 + 2))
    left = size
    while left > 0:
        n = min(left, 1024 * 1024 - (1024 * 1024 % 251))
        f.write(chunk[:n])
        left -= n
time.sleep(0.1)
"#
    );
    let p = Project::new(
        "command:\n  python: python3\n  script: task.py\ndefaults:\n  agent_grace: 60s\n",
        &[
            ("task.py", &task),
            (
                "sweeps/sweep.yaml",
                "sweep:\n  grid:\n    x: {range: [1, 101]}\n",
            ),
        ],
    );
    let own_fp = coordinator_fingerprint(&p, home.path());
    enlist(&p, &agent_bin, &agent, "a0", &own_fp);
    let child = run_sweep(&p, home.path(), "a0", "bigxfer");
    // The transfer's temporary file appears in the coordinator's task directory.
    let task_dir = p.sweep_dir("bigxfer").join("tasks/task_050/results");
    wait_until(
        Duration::from_secs(120),
        "the 50 MiB file in transfer",
        || {
            std::fs::read_dir(&task_dir).is_ok_and(|d| {
                d.flatten().any(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name != "data.bin" && e.metadata().is_ok_and(|m| m.len() > 0)
                })
            })
        },
    );
    agent.kill();
    let restarted = Instant::now();
    agent.restart();
    wait_until(Duration::from_secs(60), "the big file arrived", || {
        std::fs::metadata(task_dir.join("data.bin")).is_ok_and(|m| m.len() == big)
    });
    let recovery = restarted.elapsed().as_secs_f64();
    let out = wait_with_timeout(child, Duration::from_secs(300), "sweep run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_exactly_once(&p, "bigxfer", 100);
    let data = std::fs::read(task_dir.join("data.bin")).unwrap();
    let pattern: Vec<u8> = (0..251u64).map(|i| ((50 * 31 + i) % 251) as u8).collect();
    let chunk: Vec<u8> = pattern
        .iter()
        .cycle()
        .take(1024 * 1024 - (1024 * 1024 % 251))
        .copied()
        .collect();
    assert!(
        data.chunks(chunk.len()).all(|c| c == &chunk[..c.len()]),
        "the 50 MiB file arrived intact"
    );
    eprintln!("RECOVERY agent restart during a 50 MiB transfer: {recovery:.1} s until the file was complete");
}
