//! The fault-injection suite: sweeps of 100+ short tasks with result files against real
//! `hsm-agent` processes, with one fault each — an agent or the coordinator killed and
//! restarted, a partition, packet loss, an agent restarted while a large result file is in
//! transfer, a task that ignores SIGTERM. Each ends with the same verdict
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

/// Waits (at most two minutes, a hang guard: recovery takes seconds, more on a busy machine)
/// until `sweep` has completed a few tasks more than `before`; the seconds since `since`: a
/// scenario's recovery time (printed, never asserted).
fn progress_after(p: &Project, sweep: &str, before: u64, since: Instant, what: &str) -> f64 {
    wait_until(Duration::from_secs(120), what, || {
        completed(p, sweep) > before + 3
    });
    since.elapsed().as_secs_f64()
}

/// The run ends with exit 0 and the suite's verdict holds: each of the `n` tasks completed
/// exactly once, by its current attempt, with its result files intact.
fn ends_complete(child: std::process::Child, p: &Project, sweep: &str, n: u64) {
    let out = wait_with_timeout(child, Duration::from_secs(300), "sweep run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_exactly_once(p, sweep, n);
    assert_results_intact(p, sweep, n);
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
    let recovery = progress_after(
        &p,
        "akill",
        at_kill,
        restarted,
        "progress after the restart",
    );
    ends_complete(child, &p, "akill", 120);
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

/// The coordinator on host 0 of `hosts`, running `id` on the agents of the project.
fn run_sweep_on_host(
    p: &Project,
    home: &std::path::Path,
    tag: &str,
    sources: &str,
    id: &str,
) -> std::process::Child {
    std::process::Command::new("ip")
        .args(["netns", "exec", &format!("{tag}-h0"), bin(), "-C"])
        .arg(p.path())
        .args(["sweep", "run", "--sources", sources, "--sweep-id", id])
        .env("HSM_HOME", home)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// An agent on host 1 of two fresh namespace hosts, and the project enlisting it as `a0`.
fn agent_on_second_host(
    agent_bin: &std::path::Path,
    tag: &str,
    home: &std::path::Path,
    sleep: f64,
    tasks: u64,
    defaults: &str,
) -> Option<(Hosts, AgentProcess, Project)> {
    let (hosts, net) = match hosts(tag, 2) {
        Ok(h) => h,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return None;
        }
    };
    let agent = start_agent_in(
        agent_bin,
        Some(&format!("{tag}-h1")),
        &format!("{net}.2:7300"),
    );
    let p = project_on_agents(agent_bin, &[&agent], home, sleep, tasks, defaults);
    Some((hosts, agent, p))
}

#[test]
fn a_30s_partition_between_coordinator_and_agent_loses_nothing() {
    let Some(agent_bin) = agent_bin() else {
        return;
    };
    let tag = format!("p{}", std::process::id() % 100_000);
    let home = tempfile::tempdir().unwrap();
    let Some((hosts, agent, p)) = agent_on_second_host(
        &agent_bin,
        &tag,
        home.path(),
        0.2,
        100,
        "  kill_grace: 1s\n  agent_grace: 120s\n",
    ) else {
        return;
    };
    let child = run_sweep_on_host(&p, home.path(), &tag, "a0", "cut");
    wait_until(Duration::from_secs(120), "30 tasks done", || {
        completed(&p, "cut") >= 30
    });
    hosts.net("cut", 1, &[]);
    // The agent keeps running its tasks while the coordinator cannot reach it.
    std::thread::sleep(Duration::from_secs(30));
    let at_heal = completed(&p, "cut");
    let healed = Instant::now();
    hosts.net("heal", 1, &[]);
    let recovery = progress_after(
        &p,
        "cut",
        at_heal,
        healed,
        "progress after the link is back",
    );
    ends_complete(child, &p, "cut", 100);
    eprintln!("RECOVERY 30 s partition: {recovery:.1} s from restoring the link to progress");
    drop(agent);
}

#[test]
fn ten_percent_packet_loss_at_the_agent_for_the_whole_sweep_loses_nothing() {
    let Some(agent_bin) = agent_bin() else {
        return;
    };
    if std::process::Command::new("iptables")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: no iptables (tests/run-all.sh installs it when run as root)");
        return;
    }
    let tag = format!("l{}", std::process::id() % 100_000);
    let home = tempfile::tempdir().unwrap();
    let Some((hosts, agent, p)) = agent_on_second_host(
        &agent_bin,
        &tag,
        home.path(),
        0.05,
        100,
        "  kill_grace: 1s\n  agent_grace: 120s\n",
    ) else {
        return;
    };
    hosts.net("loss", 1, &["10"]);
    let started = Instant::now();
    let child = run_sweep_on_host(&p, home.path(), &tag, "a0", "lossy");
    ends_complete(child, &p, "lossy", 100);
    eprintln!(
        "RECOVERY 10% packet loss: the whole 100-task sweep (11 MiB of results) took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    drop(agent);
}

#[test]
fn a_task_that_ignores_sigterm_is_killed_after_the_grace_and_ends_cancelled() {
    let Some(agent_bin) = agent_bin() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let agent = start_agent(&agent_bin);
    let p = project_on_agents(
        &agent_bin,
        &[&agent],
        home.path(),
        0.05,
        100,
        "  kill_grace: 2s\n",
    );
    // Task 50 ignores SIGTERM and would sleep for ten minutes, until `fixed` exists.
    let stubborn = RESULT_PY.replace(
        "import os, sys",
        "import os, sys, signal, time\nif 'x=50' in sys.argv and not os.path.exists('fixed'):\n    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n    open('stubborn.pid', 'w').write(str(os.getpid()))\n    time.sleep(600)",
    );
    p.write("task.py", &stubborn);
    let child = run_sweep(&p, home.path(), "a0", "stub");
    let pid_file = p.path().join("stubborn.pid");
    wait_until(Duration::from_secs(120), "task 50 running", || {
        std::fs::read_to_string(&pid_file).is_ok_and(|s| !s.is_empty())
    });
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let cancelled_at = Instant::now();
    let mut cancel = p.command(&["sweep", "cancel", "stub"]);
    cancel.env("HSM_HOME", home.path());
    assert!(cancel.output().unwrap().status.success());
    let out = wait_with_timeout(child, Duration::from_secs(60), "cancelled sweep run");
    let took = cancelled_at.elapsed().as_secs_f64();
    assert!(!pid_alive(pid), "the task that ignored SIGTERM is gone");
    let status = p.status("stub");
    let task = &status["tasks"][49];
    assert_eq!(task["status"], "cancelled", "{task}");
    assert!(
        took >= 2.0,
        "the run waited for the grace before it ended: {took:.1} s ({})",
        String::from_utf8_lossy(&out.stderr)
    );
    // Completed later: only what did not complete runs again, each task completes once.
    p.write("fixed", "");
    let mut complete = p.command(&["sweep", "complete", "stub", "--sources", "a0"]);
    complete.env("HSM_HOME", home.path());
    let done = wait_with_timeout(
        complete.spawn().unwrap(),
        Duration::from_secs(300),
        "complete",
    );
    assert_eq!(
        done.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_exactly_once(&p, "stub", 100);
    assert_results_intact(&p, "stub", 100);
    eprintln!("RECOVERY task ignoring SIGTERM: cancel took {took:.1} s (kill_grace 2 s)");
}

#[test]
fn the_coordinator_killed_mid_sweep_and_complete_5s_later_takes_up_what_agents_hold() {
    let Some(agent_bin) = agent_bin() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let agent = start_agent(&agent_bin);
    let p = project_on_agents(
        &agent_bin,
        &[&agent],
        home.path(),
        0.3,
        120,
        "  kill_grace: 1s\n  agent_grace: 60s\n",
    );
    let mut child = run_sweep(&p, home.path(), "a0", "ckill");
    wait_until(
        Duration::from_secs(120),
        "a third of the tasks done",
        || completed(&p, "ckill") >= 40,
    );
    child.kill().expect("kill -9 the coordinator");
    let _ = child.wait();
    // Meanwhile the agent finishes what it holds and keeps the outcomes and files.
    std::thread::sleep(Duration::from_secs(5));
    let at_restart = completed(&p, "ckill");
    let restarted = Instant::now();
    let mut complete = p.command(&["sweep", "complete", "ckill", "--sources", "a0"]);
    complete
        .env("HSM_HOME", home.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let complete = complete.spawn().unwrap();
    let recovery = progress_after(
        &p,
        "ckill",
        at_restart,
        restarted,
        "progress after the restart",
    );
    let out = wait_with_timeout(complete, Duration::from_secs(300), "sweep complete");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_exactly_once(&p, "ckill", 120);
    assert_results_intact(&p, "ckill", 120);
    let taken_up: u64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("taking up "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no tasks were taken up: {stderr}"));
    let db = rusqlite::Connection::open(p.sweep_dir("ckill").join("sweep.db")).unwrap();
    let rerun: i64 = db
        .query_row("SELECT COUNT(*) FROM tasks WHERE attempt > 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    eprintln!("RECOVERY coordinator kill -9, complete 5 s later: {recovery:.1} s to progress; {taken_up} attempts taken up, {rerun} tasks ran again");
    assert!(taken_up >= 3, "{stderr}");
    assert!(
        (rerun as u64) < taken_up,
        "what the agent held was taken up, not run again ({rerun} reruns): {stderr}"
    );
}

#[test]
fn an_agent_told_to_cancel_when_alone_stops_its_tasks_once_the_coordinator_is_gone() {
    let Some(agent_bin) = agent_bin() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let agent = start_agent_with(
        &agent_bin,
        None,
        "127.0.0.1:0",
        &[
            "--on-coordinator-lost",
            "cancel",
            "--coordinator-lost-after",
            "2",
        ],
    );
    let p = project_on_agents(
        &agent_bin,
        &[&agent],
        home.path(),
        0.0,
        3,
        "  kill_grace: 1s\n  agent_grace: 60s\n",
    );
    // Each task records its pid and sleeps for ten minutes.
    p.write(
        "task.py",
        "import os, sys, time\nx = [a for a in sys.argv[1:] if a.startswith('x=')][0][2:]\nopen(f'pid_{x}', 'w').write(str(os.getpid()))\ntime.sleep(600)\n",
    );
    let mut child = run_sweep(&p, home.path(), "a0", "alone");
    let pid_of = |x: u64| {
        std::fs::read_to_string(p.path().join(format!("pid_{x}")))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
    };
    wait_until(Duration::from_secs(60), "three tasks running", || {
        (1..=3).all(|x| pid_of(x).is_some())
    });
    let pids: Vec<i32> = (1..=3).map(|x| pid_of(x).unwrap()).collect();
    child.kill().expect("kill -9 the coordinator");
    let _ = child.wait();
    let gone = Instant::now();
    // A hang guard: the agent stops them 2 s after losing the coordinator, and the kill grace
    // after that.
    wait_until(
        Duration::from_secs(60),
        "the agent stopped its tasks",
        || pids.iter().all(|&pid| !pid_alive(pid)),
    );
    let stopped_after = gone.elapsed().as_secs_f64();
    // The next coordinator learns they ended cancelled.
    let mut complete = p.command(&["sweep", "complete", "alone", "--sources", "a0"]);
    complete.env("HSM_HOME", home.path());
    p.write("task.py", "print('not run')\n");
    let out = wait_with_timeout(
        complete
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(120),
        "sweep complete",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let status = p.status("alone");
    for task in status["tasks"].as_array().unwrap() {
        assert_eq!(
            (&task["status"], &task["attempt"]),
            (&"cancelled".into(), &1.into()),
            "{task}"
        );
    }
    eprintln!("RECOVERY --on-coordinator-lost cancel (after 2 s): tasks stopped {stopped_after:.1} s after the coordinator died");
}
