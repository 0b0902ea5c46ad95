//! End-to-end tests of local sweeps through the real `hsm-coordinator` binary: real processes,
//! real SQLite, real files. Failures, completion, timeouts, cancellation, Ctrl-C, kill -9, bad
//! input.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// A task script driven by its parameters: `fail=N` exits N unless the file `fixed` exists in
/// the project, `sleep=S` sleeps, `ignore_term=true` ignores SIGTERM, `slow_sleep=S` sleeps while the file `slow` exists. Every attempt appends a
/// line to `results/runs.txt`, and writes its argv and HSM_* environment to `results/argv.json`.
const TASK_PY: &str = r#"
import json, os, signal, sys, time
args = dict(a.split("=", 1) for a in sys.argv[1:])
out = args["output.dir"]
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "runs.txt"), "a") as f:
    f.write(os.environ["HSM_ATTEMPT"] + "\n")
with open(os.path.join(out, "argv.json"), "w") as f:
    json.dump({"argv": sys.argv[1:], "env": {k: v for k, v in os.environ.items() if k.startswith("HSM_")},
               "cwd": os.getcwd()}, f)
print("hello from", os.environ["HSM_TASK_ID"], flush=True)
print("a warning", file=sys.stderr, flush=True)
if args.get("ignore_term") == "true":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if "sleep" in args:
    time.sleep(float(args["sleep"]))
if "slow_sleep" in args and os.path.exists("slow"):
    time.sleep(float(args["slow_sleep"]))
fail = int(args.get("fail", "0"))
if fail and not os.path.exists("fixed"):
    sys.exit(fail)
"#;

fn project(sweep: &str) -> Project {
    Project::new(
        CONFIG,
        &[("task.py", TASK_PY), ("sweeps/sweep.yaml", sweep)],
    )
}

fn runs(project: &Project, id: &str, task: &str) -> Vec<String> {
    let path = project
        .sweep_dir(id)
        .join("tasks")
        .join(task)
        .join("results")
        .join("runs.txt");
    std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn failed_combinations_then_complete_reruns_only_those() {
    let p = project("sweep:\n  grid:\n    fail: [0, 3]\n    x: [1, 2, 3]\n");
    let run = p.run(&["sweep", "run"]);
    run.expect_code(1);
    let id = run.sweep_id();
    assert!(
        run.stdout.starts_with("sweep_id: "),
        "the sweep id comes first"
    );
    let status = p.status(&id);
    assert_eq!(status["total"], 6);
    assert_eq!(status["completed"], 3);
    assert_eq!(status["failed"], 3);
    let tasks = status["tasks"].as_array().unwrap();
    // Last key fastest: tasks 4-6 have fail=3.
    for (i, task) in tasks.iter().enumerate() {
        let expect_fail = i >= 3;
        assert_eq!(
            task["status"],
            if expect_fail { "failed" } else { "completed" },
            "{task}"
        );
        assert_eq!(task["params"]["fail"], if expect_fail { 3 } else { 0 });
        if expect_fail {
            assert_eq!(task["exit_code"], 3);
        }
    }
    let params_before: Vec<String> = (1..=6)
        .map(|i| {
            std::fs::read_to_string(
                p.sweep_dir(&id)
                    .join(format!("tasks/task_{i:03}/params.yaml")),
            )
            .unwrap()
        })
        .collect();

    // Fix the script's environment, then complete.
    p.write("fixed", "");
    let dry = p.run(&["sweep", "complete", &id, "--dry-run", "--json"]);
    dry.expect_code(0);
    let planned: serde_json::Value = serde_json::from_str(&dry.stdout).unwrap();
    let planned: Vec<&str> = planned
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["task"].as_str().unwrap())
        .collect();
    assert_eq!(planned, ["task_004", "task_005", "task_006"]);

    // A `sweep cancel` request that an earlier run ended before seeing must not stop this one.
    let stale = p.sweep_dir(&id).join(".cancel-request");
    std::fs::write(&stale, "").unwrap();
    let complete = p.run(&["sweep", "complete", &id]);
    complete.expect_code(0);
    assert!(!stale.exists());
    let status = p.status(&id);
    assert_eq!(status["completed"], 6);
    for (task, st, attempt) in statuses(&status) {
        assert_eq!(st, "completed");
        let n = task[5..].parse::<u32>().unwrap();
        let expected_attempt = if n >= 4 { 2 } else { 1 };
        assert_eq!(attempt, expected_attempt, "{task}");
        assert_eq!(
            runs(&p, &id, &task).len() as u64,
            expected_attempt,
            "{task} ran again?"
        );
    }
    // Numbers and parameters unchanged; earlier logs kept.
    for i in 1..=6 {
        let now = std::fs::read_to_string(
            p.sweep_dir(&id)
                .join(format!("tasks/task_{i:03}/params.yaml")),
        )
        .unwrap();
        assert_eq!(now, params_before[i - 1]);
    }
    let task4 = p.sweep_dir(&id).join("tasks/task_004");
    assert!(task4.join("stdout.attempt1.log").exists());
    assert!(std::fs::read_to_string(task4.join("stdout.log"))
        .unwrap()
        .contains("hello from task_004"));
    assert!(std::fs::read_to_string(task4.join("stderr.log"))
        .unwrap()
        .contains("a warning"));

    // A complete sweep has nothing left to do.
    let again = p.run(&["sweep", "complete", &id]);
    again.expect_code(0);
    assert!(again.stderr.contains("nothing to run"), "{}", again.stderr);
}

#[test]
fn layout_views_and_task_environment() {
    let p = project("sweep:\n  grid:\n    x: [1, 2]\n    label: ['two words', 'a=b,c', \"it's\"]\nmetadata:\n  description: layout\n");
    let run = p.run(&["sweep", "run", "--sweep-id", "layout_test"]);
    run.expect_code(0);
    let root = p.sweep_dir("layout_test");
    for file in [
        "sweep_config.yaml",
        "sweep_metadata.yaml",
        "task_mapping.yaml",
        "sweep.db",
        "logs/sweep.log",
    ] {
        assert!(root.join(file).exists(), "{file} missing");
    }
    assert_eq!(
        std::fs::read_to_string(root.join("sweep_config.yaml")).unwrap(),
        std::fs::read_to_string(p.path().join("sweeps/sweep.yaml")).unwrap()
    );
    let mapping = std::fs::read_to_string(root.join("task_mapping.yaml")).unwrap();
    assert!(
        mapping.contains("task_006:") && mapping.contains("params_hash:"),
        "{mapping}"
    );
    let metadata = std::fs::read_to_string(root.join("sweep_metadata.yaml")).unwrap();
    assert!(metadata.contains("completed: 6"), "{metadata}");
    for i in 1..=6 {
        let dir = root.join(format!("tasks/task_{i:03}"));
        for file in [
            "params.yaml",
            "status.yaml",
            "command.txt",
            "stdout.log",
            "stderr.log",
            "results",
        ] {
            assert!(dir.join(file).exists(), "task_{i:03}/{file} missing");
        }
        let status = std::fs::read_to_string(dir.join("status.yaml")).unwrap();
        assert!(status.contains("status: completed"), "{status}");
    }
    // Values with spaces, `=`, commas and quotes arrive as one Hydra override each.
    let argv: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("tasks/task_001/results/argv.json")).unwrap(),
    )
    .unwrap();
    let args: Vec<&str> = argv["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "x=1");
    assert!(
        args[1].starts_with("label=") && args[1].contains("two words"),
        "{args:?}"
    );
    assert!(args
        .iter()
        .any(|a| a.starts_with("output.dir=") && a.ends_with("tasks/task_001/results")));
    // W&B's group only when the project asks for it (not here).
    assert!(!args.iter().any(|a| a.contains("wandb")), "{args:?}");
    let env = &argv["env"];
    assert_eq!(env["HSM_SWEEP_ID"], "layout_test");
    assert_eq!(env["HSM_TASK_ID"], "task_001");
    assert_eq!(env["HSM_TASK_INDEX"], "1");
    assert_eq!(env["HSM_ATTEMPT"], "1");
    assert!(env["HSM_OUTPUT_DIR"]
        .as_str()
        .unwrap()
        .ends_with("tasks/task_001/results"));
    assert_eq!(
        std::fs::canonicalize(argv["cwd"].as_str().unwrap()).unwrap(),
        std::fs::canonicalize(p.path()).unwrap(),
        "tasks run in the project root"
    );
    // The same id again is refused.
    p.run(&["sweep", "run", "--sweep-id", "layout_test"])
        .expect_code(2);
}

#[test]
fn timeout_fails_the_task_with_reason_and_retries_count_attempts() {
    let p = project("sweep:\n  grid:\n    sleep: [0, 90]\n");
    let run = p.run(&["sweep", "run", "--timeout", "1s", "--retries", "1"]);
    run.expect_code(1);
    // Two attempts of 1 s each take a few seconds (more on a busy machine); a timeout not
    // enforced would let the 90 s sleep run out.
    assert!(
        run.elapsed < Duration::from_secs(60),
        "timeout not enforced: {:?}",
        run.elapsed
    );
    let status = p.status(&run.sweep_id());
    let tasks = status["tasks"].as_array().unwrap();
    assert_eq!(tasks[0]["status"], "completed");
    assert_eq!(tasks[1]["status"], "failed");
    assert_eq!(tasks[1]["reason"], "timeout");
    assert_eq!(tasks[1]["attempt"], 2, "one automatic retry");
}

#[test]
fn a_task_ignoring_sigterm_is_killed_after_the_grace_period() {
    let p = project("sweep:\n  grid:\n    sleep: [100]\n    ignore_term: [true]\n");
    let run = p.run(&["sweep", "run", "--timeout", "1s"]);
    run.expect_code(1);
    // Timeout plus kill_grace is 2 s (more on a busy machine); a task never killed would
    // sleep its 100 s out.
    assert!(run.elapsed < Duration::from_secs(60), "{:?}", run.elapsed);
    let status = p.status(&run.sweep_id());
    assert_eq!(status["tasks"][0]["reason"], "timeout");
}

#[test]
fn cancel_from_another_terminal_cancels_running_and_pending_tasks() {
    let p = project("sweep:\n  grid:\n    sleep: [100]\n    x: [1, 2, 3, 4, 5]\n");
    let child = p.spawn(&["sweep", "run", "--sweep-id", "to_cancel"]);
    let db = p.sweep_dir("to_cancel").join("sweep.db");
    wait_until(Duration::from_secs(60), "two running tasks", || {
        db.exists() && p.try_status("to_cancel").is_some_and(|s| s["running"] == 2)
    });
    let pids: Vec<i32> = (1..=2)
        .map(|i| {
            let status = std::fs::read_to_string(
                p.sweep_dir("to_cancel")
                    .join(format!("tasks/task_{i:03}/status.yaml")),
            )
            .unwrap();
            status
                .lines()
                .find_map(|l| l.strip_prefix("pid: "))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        })
        .collect();
    let started = Instant::now();
    let cancel = p.run(&["sweep", "cancel", "to_cancel"]);
    cancel.expect_code(0);
    let run = Run::wait(child, "sweep run (cancelled)".into());
    run.expect_code(1);
    // Cancelling takes a moment (more on a busy machine); tasks not stopped would sleep their
    // 100 s out.
    assert!(started.elapsed() < Duration::from_secs(60));
    let status = p.status("to_cancel");
    assert_eq!(status["cancelled"], 5, "{status}");
    // The run consumed the request file it stopped on.
    assert!(!p.sweep_dir("to_cancel").join(".cancel-request").exists());
    for pid in pids {
        assert!(!pid_alive(pid), "task process {pid} still alive");
    }
    // complete picks the cancelled tasks up again.
    let dry = p.run(&["sweep", "complete", "to_cancel", "--dry-run", "--json"]);
    let planned: serde_json::Value = serde_json::from_str(&dry.stdout).unwrap();
    assert_eq!(planned.as_array().unwrap().len(), 5);
}

#[test]
fn cancel_finishes_the_job_itself_when_the_lock_holder_lets_go_without_doing_it() {
    // A run killed with -9 leaves tasks running and pending; then something that is not a
    // coordinator holds the sweep's lock for a moment (another command probing it) as
    // `sweep cancel` looks. Cancel asks, sees the lock let go with tasks unfinished, and
    // cancels them itself.
    let p = project("sweep:\n  grid:\n    sleep: [60]\n    x: [1, 2, 3, 4]\n");
    let mut child = p.spawn(&["sweep", "run", "--sweep-id", "held"]);
    wait_until(Duration::from_secs(60), "two running tasks", || {
        p.sweep_dir("held").join("sweep.db").exists()
            && p.try_status("held").is_some_and(|s| s["running"] == 2)
    });
    child.kill().expect("kill -9 the coordinator");
    let _ = child.wait();
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(p.sweep_dir("held").join(".coordinator.lock"))
        .unwrap();
    lock.lock().unwrap();
    let holder = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        drop(lock);
    });
    let cancel = p.run(&["sweep", "cancel", "held"]);
    holder.join().unwrap();
    cancel.expect_code(0);
    assert!(
        cancel.stderr.contains("asked the running coordinator")
            && cancel
                .stderr
                .contains("coordinator stopped before it was done; marked 4 unfinished tasks"),
        "{}",
        cancel.stderr
    );
    let status = p.status("held");
    assert_eq!(status["cancelled"], 4, "{status}");
    assert!(!p.sweep_dir("held").join(".cancel-request").exists());
}

#[test]
fn ctrl_c_stops_running_tasks_keeps_pending_and_exits_130() {
    let p = project("sweep:\n  grid:\n    sleep: [60]\n    x: [1, 2, 3, 4]\n");
    let child = p.spawn(&["sweep", "run", "--sweep-id", "interrupted"]);
    let pid = child.id() as i32;
    let db = p.sweep_dir("interrupted").join("sweep.db");
    wait_until(Duration::from_secs(60), "two running tasks", || {
        db.exists()
            && p.try_status("interrupted")
                .is_some_and(|s| s["running"] == 2)
    });
    // SAFETY: signalling the coordinator process this test started.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let run = Run::wait(child, "sweep run (interrupted)".into());
    run.expect_code(130);
    let status = p.status("interrupted");
    assert_eq!(status["cancelled"], 2, "{status}");
    assert_eq!(status["pending"], 2, "{status}");
}

#[test]
fn kill_9_mid_sweep_then_complete_never_reruns_completed_tasks() {
    let p = project("sweep:\n  grid:\n    sleep: [0.3]\n    x: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]\n");
    let mut child = p.spawn(&["sweep", "run", "--sweep-id", "killed"]);
    let db = p.sweep_dir("killed").join("sweep.db");
    wait_until(Duration::from_secs(60), "four completed tasks", || {
        db.exists()
            && p.try_status("killed")
                .is_some_and(|s| s["completed"].as_u64().unwrap_or(0) >= 4)
    });
    child.kill().expect("kill -9 the coordinator");
    let _ = child.wait();
    let before = p.status("killed");
    let completed_before: Vec<String> = statuses(&before)
        .into_iter()
        .filter(|(_, st, _)| st == "completed")
        .map(|(t, _, _)| t)
        .collect();
    assert!(
        completed_before.len() >= 4 && completed_before.len() < 16,
        "{before}"
    );

    let complete = p.run(&["sweep", "complete", "killed"]);
    complete.expect_code(0);
    let after = p.status("killed");
    assert_eq!(after["completed"], 16, "{after}");
    for task in &completed_before {
        assert_eq!(
            runs(&p, "killed", task).len(),
            1,
            "{task} completed before the kill but ran again"
        );
    }
    let db = rusqlite::Connection::open(p.sweep_dir("killed").join("sweep.db")).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

#[test]
fn malformed_sweep_files_exit_2_with_positions_and_create_nothing() {
    let bad = "sweep:\n  grid:\n    lr: 0.1\n    seed: []\n  paired:\n    - g:\n        a: [1, 2]\n        b: [1]\n  gird: {}\n";
    let p = project(bad);
    let run = p.run(&["sweep", "run"]);
    run.expect_code(2);
    for needle in [
        "sweeps/sweep.yaml:3:",
        "sweeps/sweep.yaml:4:",
        "grid.lr",
        "grid.seed",
        "did you mean",
    ] {
        assert!(
            run.stderr.contains(needle),
            "missing {needle:?} in:\n{}",
            run.stderr
        );
    }
    assert!(
        !p.outputs().exists(),
        "nothing may be created for an invalid sweep"
    );

    // A syntax error names the line of the unclosed `[`, not where the parser gave up.
    p.write(
        "sweeps/sweep.yaml",
        "sweep:\n  grid:\n    a: [1, 2\n    b: [3]\n",
    );
    let run = p.run(&["sweep", "run"]);
    run.expect_code(2);
    assert!(
        run.stderr
            .contains("sweeps/sweep.yaml:3:8: invalid YAML: the `[` opened here is never closed"),
        "{}",
        run.stderr
    );
    assert!(!p.outputs().exists());

    let run = p.run(&["sweep", "run", "does/not/exist.yaml"]);
    run.expect_code(2);
    assert!(!p.outputs().exists());
}

#[test]
fn bad_flags_and_config_exit_2() {
    let p = project("sweep:\n  grid:\n    x: [1, 2]\n");
    for args in [
        &["sweep", "run", "--max-runs", "0"][..],
        &["sweep", "run", "--max-runs", "-3"],
        &["sweep", "run", "--parallel", "0"],
        &["sweep", "run", "--timeout", "soon"],
        &["sweep", "run", "--strategy", "random"],
        &["sweep", "run", "--sources", "nowhere"],
        &["sweep", "run", "--no-such-flag"],
        &["sweep", "complete", "no_such_sweep"],
    ] {
        let run = p.run(args);
        run.expect_code(2);
        assert!(!run.stderr.trim().is_empty());
    }
    assert!(!p.outputs().exists());
    p.write(".hsm/config.yaml", "command:\n  pyhton: python3\n");
    let run = p.run(&["sweep", "run"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains(".hsm/config.yaml:2:3") && run.stderr.contains("python"),
        "{}",
        run.stderr
    );
    p.write(
        ".hsm/config.yaml",
        "command:\n  python: python3\n  script: missing.py\n",
    );
    let run = p.run(&["sweep", "run"]);
    run.expect_code(2);
    assert!(run.stderr.contains("missing.py"), "{}", run.stderr);
    assert!(!p.outputs().exists());
}

#[test]
fn dry_run_count_only_and_max_runs() {
    let p = project("sweep:\n  grid:\n    a: [1, 2, 3]\n    b: ['x y', '1']\n");
    let count = p.run(&["sweep", "run", "--count-only"]);
    count.expect_code(0);
    assert_eq!(count.stdout.trim(), "6");
    let dry = p.run(&["sweep", "run", "--dry-run", "--json", "--max-runs", "4"]);
    dry.expect_code(0);
    let items: serde_json::Value = serde_json::from_str(&dry.stdout).unwrap();
    let items = items.as_array().unwrap();
    assert_eq!(items.len(), 4);
    assert_eq!(items[0]["task"], "task_001");
    assert_eq!(items[0]["index"], 1);
    assert_eq!(items[1]["params"]["b"], "1");
    let argv: Vec<&str> = items[1]["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(argv[0], "python3");
    assert_eq!(argv[1], "task.py");
    assert_eq!(argv[2], "a=1");
    assert!(
        argv[3] == "b='1'" || argv[3] == "b=\"1\"",
        "a string that looks like a number is quoted: {argv:?}"
    );
    assert!(!p.outputs().exists(), "dry run creates nothing");
    let text = p.run(&["sweep", "run", "--dry-run"]);
    text.expect_code(0);
    assert!(text.stdout.contains("task_006"));

    // The whole sweep is created and 2 of it run; `complete` (the latest sweep, no id needed)
    // runs the rest.
    let run = p.run(&["sweep", "run", "--max-runs", "2"]);
    run.expect_code(0);
    assert!(
        run.stderr
            .contains("4 tasks pending; `hsm-coordinator sweep complete"),
        "{}",
        run.stderr
    );
    let status = p.status(&run.sweep_id());
    assert_eq!(status["total"], 6);
    assert_eq!(status["completed"], 2);
    assert_eq!(status["pending"], 4, "{status}");
    let complete = p.run(&["sweep", "complete"]);
    complete.expect_code(0);
    assert!(complete
        .stderr
        .contains(&format!("completing the latest sweep, {}", run.sweep_id())));
    assert_eq!(p.status(&run.sweep_id())["completed"], 6);
}

#[test]
fn count_only_is_instant_for_ten_million_tasks() {
    let p = project("sweep:\n  grid:\n    a: [1,2,3,4,5,6,7,8,9,10]\n    b: [1,2,3,4,5,6,7,8,9,10]\n    c: [1,2,3,4,5,6,7,8,9,10]\n    d: [1,2,3,4,5,6,7,8,9,10]\n    e: [1,2,3,4,5,6,7,8,9,10]\n    f: [1,2,3,4,5,6,7,8,9,10]\n    g: [1,2,3,4,5,6,7,8,9,10]\n");
    let count = p.run(&["sweep", "run", "--count-only"]);
    count.expect_code(0);
    assert_eq!(count.stdout.trim(), "10000000");
}

#[test]
fn status_of_the_latest_sweep_and_text_output() {
    let p = project("sweep:\n  grid:\n    fail: [0, 2]\n");
    p.run(&["sweep", "run", "--sweep-id", "first"])
        .expect_code(1);
    let status = p.run(&["sweep", "status"]);
    status.expect_code(0);
    assert!(status.stdout.contains("first"), "{}", status.stdout);
    assert!(
        status.stdout.contains("task_002 failed"),
        "{}",
        status.stdout
    );
    let all = p.run(&["sweep", "status", "first", "--all"]);
    assert!(all.stdout.contains("task_001 completed"), "{}", all.stdout);
}

#[test]
fn sigterm_is_handled_like_ctrl_c() {
    let p = project("sweep:\n  grid:\n    sleep: [60]\n    x: [1, 2, 3]\n");
    let child = p.spawn(&[
        "sweep",
        "run",
        "--sweep-id",
        "terminated",
        "--parallel",
        "1",
    ]);
    let pid = child.id() as i32;
    let db = p.sweep_dir("terminated").join("sweep.db");
    wait_until(Duration::from_secs(60), "a running task", || {
        db.exists()
            && p.try_status("terminated")
                .is_some_and(|s| s["running"] == 1)
    });
    // SAFETY: signalling the coordinator process this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let run = Run::wait(child, "sweep run (SIGTERM)".into());
    run.expect_code(130);
    let status = p.status("terminated");
    assert_eq!(
        (status["cancelled"].as_u64(), status["pending"].as_u64()),
        (Some(1), Some(2)),
        "{status}"
    );
}

#[test]
fn cancelling_a_large_sweep_creates_no_directories_for_unstarted_tasks() {
    let p = project("sweep:\n  grid:\n    sleep: [60]\n    x: {range: [0, 20000]}\n");
    let child = p.spawn(&["sweep", "run", "--sweep-id", "large"]);
    let db = p.sweep_dir("large").join("sweep.db");
    wait_until(Duration::from_secs(60), "two running tasks", || {
        db.exists() && p.try_status("large").is_some_and(|s| s["running"] == 2)
    });
    p.run(&["sweep", "cancel", "large"]).expect_code(0);
    Run::wait(child, "sweep run (cancelled)".into()).expect_code(1);
    let status = p.status("large");
    assert_eq!(status["cancelled"], 20000);
    // The mapping is written while the cancel's transaction runs, and the two running tasks
    // end after it: both show in it as the database has them.
    let mapping = std::fs::read_to_string(p.sweep_dir("large").join("task_mapping.yaml")).unwrap();
    assert_eq!(mapping.matches("status: cancelled").count(), 20000);
    assert_eq!(mapping.matches("started: null").count(), 20000 - 2);
    let n_dirs = std::fs::read_dir(p.sweep_dir("large").join("tasks"))
        .unwrap()
        .count();
    // Started tasks plus at most the prefetch window have directories; never all 20,000.
    assert!(
        n_dirs <= 2 + 256 + 2,
        "{n_dirs} task directories for 2 started tasks"
    );
}

/// Pids of live (non-zombie) processes whose environment says they belong to `sweep_id`.
fn sweep_processes(sweep_id: &str) -> Vec<i32> {
    let want = format!("HSM_SWEEP_ID={sweep_id}");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|&b| b == 0).any(|v| v == want.as_bytes()))
                .unwrap_or(false)
                && pid_alive(pid)
        })
        .collect()
}

#[test]
fn kill_9_right_after_launch_leaves_no_task_running_twice() {
    let p = project("sweep:\n  grid:\n    slow_sleep: [60]\n    x: [1, 2, 3, 4, 5, 6, 7, 8]\n");
    p.write("slow", "");
    let mut child = p.spawn(&["sweep", "run", "--sweep-id", "early", "--parallel", "8"]);
    // Kill the coordinator the moment its first task process exists, before the 50 ms flush
    // can record the pid in sweep.db.
    wait_until(Duration::from_secs(60), "a task process", || {
        !sweep_processes("early").is_empty()
    });
    child.kill().expect("kill -9 the coordinator");
    let _ = child.wait();
    let orphans = sweep_processes("early");
    assert!(!orphans.is_empty());
    // The re-run is quick; only the orphans of the first run would still be sleeping.
    std::fs::remove_file(p.path().join("slow")).unwrap();

    let complete = p.run(&["sweep", "complete", "early"]);
    complete.expect_code(0);
    assert!(
        sweep_processes("early").is_empty(),
        "processes of the first run survived: {orphans:?}"
    );
    for pid in orphans {
        assert!(!pid_alive(pid), "orphan {pid} still alive");
    }
    let status = p.status("early");
    assert_eq!(status["completed"], 8, "{status}");
}

#[test]
fn review_regressions_bad_timeout_exclude_all_and_huge_ints_exit_2() {
    let p = project("sweep:\n  grid:\n    x: [1, 2]\n  exclude:\n    - {x: 1}\n    - {x: 2}\n");
    let run = p.run(&["sweep", "run"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("removes every combination"),
        "{}",
        run.stderr
    );
    p.write(
        "sweeps/sweep.yaml",
        "sweep:\n  grid:\n    x: [99999999999999999999999]\n",
    );
    let run = p.run(&["sweep", "run"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("sweeps/sweep.yaml:3:9") && run.stderr.contains("64 bits"),
        "{}",
        run.stderr
    );
    p.write("sweeps/sweep.yaml", "sweep:\n  grid:\n    x: [1]\n");
    let run = p.run(&["sweep", "run", "--timeout", "0s"]);
    run.expect_code(2);
    assert!(!p.outputs().exists());
}

#[test]
fn complete_keeps_metadata_and_attempt_history() {
    let p = project("sweep:\n  grid:\n    fail: [4]\nmetadata:\n  description: hello\n");
    p.run(&["sweep", "run", "--sweep-id", "meta", "--retries", "1"])
        .expect_code(1);
    p.write("fixed", "");
    p.run(&["sweep", "complete", "meta"]).expect_code(0);
    let metadata =
        std::fs::read_to_string(p.sweep_dir("meta").join("sweep_metadata.yaml")).unwrap();
    assert!(metadata.contains("description: hello"), "{metadata}");
    let db = rusqlite::Connection::open(p.sweep_dir("meta").join("sweep.db")).unwrap();
    let attempts: Vec<(i64, String, Option<i64>)> = db
        .prepare("SELECT attempt, status, exit_code FROM attempts WHERE idx = 1 ORDER BY attempt")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        attempts,
        [
            (1, "failed".into(), Some(4)),
            (2, "failed".into(), Some(4)),
            (3, "completed".into(), Some(0))
        ]
    );
}
