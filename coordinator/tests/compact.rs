//! The compact layout end to end, as a user meets it: a sweep that runs, fails and is completed
//! locally, one spread over the local source and a real agent (results back over QUIC), and
//! `layout: auto` choosing compact past the threshold and saying so. The Slurm run of a compact
//! sweep is in cli_slurm.rs with the other Slurm tests. In each, the per-task views are absent,
//! a silent task leaves nothing behind, and everything a task printed or wrote is kept and read
//! by `sweep logs`, `sweep results` and the report.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::path::Path;

/// x % 4 == 1 prints (a metric too), x % 4 == 2 writes a result silently, x == 3 fails with a
/// message on stderr, the rest print and write nothing.
const TASK_PY: &str = r#"
import os, sys
args = dict(a.split("=", 1) for a in sys.argv[1:])
x = int(args["x"])
if x % 4 == 1:
    print(f"task {x} says hi", flush=True)
    print(f"HSM_METRIC loss={x / 100}", flush=True)
elif x % 4 == 2:
    os.makedirs(args["output.dir"], exist_ok=True)
    with open(os.path.join(args["output.dir"], "r.txt"), "w") as f:
        f.write(f"x={x}\n")
elif x == 3:
    print(f"boom {x}: shard missing", file=sys.stderr)
    sys.exit(3)
"#;

/// Every file and directory under `dir`, relative, sorted.
fn tree(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            out.insert(path.strip_prefix(dir).unwrap().display().to_string());
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    out
}

fn meta(p: &Project, sweep: &str, key: &str) -> Option<String> {
    let db = rusqlite::Connection::open(p.sweep_dir(sweep).join("sweep.db")).unwrap();
    db.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .ok()
}

fn no_views(files: &BTreeSet<String>) {
    for name in ["params.yaml", "command.txt", "status.yaml"] {
        assert!(
            !files.iter().any(|f| f.ends_with(name)),
            "no {name} in a compact sweep: {files:?}"
        );
    }
}

#[test]
fn a_compact_sweep_keeps_only_what_tasks_leave_and_fails_and_completes_like_a_full_one() {
    let p = Project::new(
        CONFIG,
        &[
            ("task.py", TASK_PY),
            (
                "sweeps/sweep.yaml",
                "layout: compact\nsweep:\n  grid:\n    x: {range: [1, 13]}\n",
            ),
        ],
    );
    let run = p.run(&["sweep", "run", "--sweep-id", "c1"]);
    run.expect_code(1);
    assert!(
        !run.stderr.contains("layout: compact ("),
        "a layout the file chose is not announced as automatic:\n{}",
        run.stderr
    );
    let status = p.status("c1");
    assert_eq!(status["completed"], 11, "{status}");
    assert_eq!(status["failed"], 1, "{status}");
    assert_eq!(meta(&p, "c1", "layout").as_deref(), Some("compact"));
    let metadata = read(p.sweep_dir("c1").join("sweep_metadata.yaml"));
    assert!(metadata.contains("layout: compact"), "{metadata}");

    // Silent tasks are read too (nothing to read): no later command looks for their files.
    let db = rusqlite::Connection::open(p.sweep_dir("c1").join("sweep.db")).unwrap();
    let unread: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM attempts WHERE metrics_at IS NULL AND started_at IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(unread, 0, "every ended attempt's metrics read");

    let files = tree(&p.sweep_dir("c1").join("tasks"));
    no_views(&files);
    let expected: BTreeSet<String> = [
        "task_001",
        "task_001/metrics.json",
        "task_001/stdout.log",
        "task_002",
        "task_002/results",
        "task_002/results/r.txt",
        "task_003",
        "task_003/stderr.log",
        "task_005",
        "task_005/metrics.json",
        "task_005/stdout.log",
        "task_006",
        "task_006/results",
        "task_006/results/r.txt",
        "task_009",
        "task_009/metrics.json",
        "task_009/stdout.log",
        "task_010",
        "task_010/results",
        "task_010/results/r.txt",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(files, expected, "only what tasks printed or wrote");

    // What a person reads: the failure with its stderr, logs, results, the report.
    let failed = status["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["status"] == "failed")
        .unwrap();
    assert!(
        failed["reason"].as_str().unwrap_or("").contains("boom 3"),
        "the failure says why: {failed}"
    );
    let logs = p.run(&["sweep", "logs", "c1", "1"]);
    logs.expect_code(0);
    assert!(logs.stdout.contains("task 1 says hi"), "{}", logs.stdout);
    let silent = p.run(&["sweep", "logs", "c1", "4"]);
    silent.expect_code(0);
    assert_eq!(
        silent.stdout, "",
        "a silent task's log is empty, not an error"
    );
    let results = p.run(&["sweep", "results", "c1", "--format", "csv"]);
    results.expect_code(0);
    assert!(
        results.stdout.lines().any(|l| l.contains("0.05")),
        "task 5's metric in the table:\n{}",
        results.stdout
    );
    let report = read(p.sweep_dir("c1").join("reports").join("report.html"));
    assert!(
        report.contains("task.py"),
        "the report shows the sweep's command"
    );

    // Fixed and completed: only the failed task runs again; its first attempt's stderr stays.
    p.write(
        "task.py",
        &TASK_PY.replace("elif x == 3:", "elif x == 3 and False:"),
    );
    p.run(&["sweep", "complete", "c1"]).expect_code(0);
    let status = p.status("c1");
    assert_eq!(status["completed"], 12, "{status}");
    for task in status["tasks"].as_array().unwrap() {
        let x = task["params"]["x"].as_u64().unwrap();
        assert_eq!(task["attempt"], if x == 3 { 2 } else { 1 }, "{task}");
    }
    let files = tree(&p.sweep_dir("c1").join("tasks"));
    no_views(&files);
    let earlier = p.run(&["sweep", "logs", "c1", "3", "--stderr", "--attempt", "1"]);
    earlier.expect_code(0);
    assert!(earlier.stdout.contains("boom 3"), "{}", earlier.stdout);
    assert!(
        !files.contains("task_003/stderr.log"),
        "the second attempt printed nothing: {files:?}"
    );
}

#[test]
fn auto_is_compact_past_ten_thousand_tasks_says_so_and_full_can_be_asked_for() {
    let big = "sweep:\n  grid:\n    x: {range: [1, 10002]}\n";
    let p = Project::new(CONFIG, &[("task.py", TASK_PY), ("sweeps/sweep.yaml", big)]);
    let run = p.run(&["sweep", "run", "--sweep-id", "auto", "--max-runs", "2"]);
    run.expect_code(0);
    assert!(
        run.stderr
            .contains("layout: compact (10001 tasks, more than 10000)")
            && run.stderr.contains("`layout: full`"),
        "the automatic choice is said, with how to undo it:\n{}",
        run.stderr
    );
    assert_eq!(meta(&p, "auto", "layout").as_deref(), Some("compact"));
    no_views(&tree(&p.sweep_dir("auto").join("tasks")));

    p.write("sweeps/sweep.yaml", &format!("layout: full\n{big}"));
    let run = p.run(&["sweep", "run", "--sweep-id", "full", "--max-runs", "2"]);
    run.expect_code(0);
    assert!(!run.stderr.contains("layout: compact"), "{}", run.stderr);
    assert_eq!(meta(&p, "full", "layout").as_deref(), Some("full"));
    let files = tree(&p.sweep_dir("full").join("tasks"));
    for task in ["task_00001", "task_00002"] {
        for name in ["params.yaml", "command.txt", "status.yaml"] {
            assert!(files.contains(&format!("{task}/{name}")), "{files:?}");
        }
    }

    // Small sweeps keep the full layout without being told.
    p.write("sweeps/sweep.yaml", "sweep:\n  grid:\n    x: [1, 2]\n");
    let run = p.run(&["sweep", "run", "--sweep-id", "small"]);
    run.expect_code(0);
    assert_eq!(meta(&p, "small", "layout").as_deref(), Some("full"));

    p.write("sweeps/sweep.yaml", &format!("layout: tiny\n{big}"));
    let run = p.run(&["sweep", "run"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("sweep.yaml:1") && run.stderr.contains("`tiny`"),
        "{}",
        run.stderr
    );
}

/// `RESULT_PY` with every third task silent and without results.
fn agent_py() -> String {
    let py = RESULT_PY.replace("out = args", "if x % 3 == 0:\n    sys.exit(0)\nout = args");
    assert!(py.contains("sys.exit(0)"), "RESULT_PY changed shape");
    py
}

#[test]
fn a_compact_sweep_across_local_and_an_agent_brings_back_what_tasks_leave() {
    let Some(agent_bin) = agent_bin() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let p = Project::new(
        "command:\n  python: python3\n  script: task.py\ndefaults:\n  kill_grace: 1s\n",
        &[
            ("task.py", &agent_py()),
            (
                "sweeps/sweep.yaml",
                "layout: compact\nsweep:\n  grid:\n    x: {range: [1, 31]}\n",
            ),
        ],
    );
    let own_fp = coordinator_fingerprint(&p, home.path());
    let agent = start_agent(&agent_bin);
    enlist(&p, &agent_bin, &agent, "a0", &own_fp);
    let mut cmd = p.command(&[
        "sweep",
        "run",
        "--sources",
        "local,a0",
        "--sweep-id",
        "ca",
        "--parallel",
        "1",
    ]);
    cmd.env("HSM_HOME", home.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    Run::wait(cmd.spawn().unwrap(), "a compact sweep on an agent".into()).expect_code(0);
    let status = p.status("ca");
    assert_eq!(status["completed"], 30, "{status}");
    assert_eq!(completed_twice(&p, "ca"), 0);
    let on_agent = status["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["source"] == "a0")
        .count();
    assert!(on_agent > 0, "the agent ran tasks: {status}");

    let files = tree(&p.sweep_dir("ca").join("tasks"));
    no_views(&files);
    for x in 1..=30u64 {
        let dir = format!("task_{x:03}");
        if x % 3 == 0 {
            assert!(
                !files.iter().any(|f| f.starts_with(&dir)),
                "silent task {x} left nothing: {files:?}"
            );
            continue;
        }
        let data = std::fs::read(
            p.sweep_dir("ca")
                .join("tasks")
                .join(&dir)
                .join("results/data.bin"),
        )
        .unwrap_or_else(|e| panic!("task {x}: {e}"));
        assert!(data == expected_data(x), "task {x}: result differs");
        let stdout = read(
            p.sweep_dir("ca")
                .join("tasks")
                .join(&dir)
                .join("stdout.log"),
        );
        assert!(stdout.contains(&format!("task {x} says hi")), "{stdout}");
    }

    // On the agent's host too: once a task's results are delivered, a silent one leaves no
    // directory and no task keeps an empty log (the agent hears of the delivery just after).
    let on_agent: Vec<u64> = status["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["source"] == "a0")
        .map(|t| t["params"]["x"].as_u64().unwrap())
        .collect();
    let agent_tasks = agent.work_dir().join("ca").join("tasks");
    let left = || tree(&agent_tasks);
    let tidy = |files: &BTreeSet<String>| {
        on_agent.iter().all(|x| {
            let dir = format!("task_{x:03}");
            let mine: Vec<&String> = files.iter().filter(|f| f.starts_with(&dir)).collect();
            if x % 3 == 0 {
                mine.is_empty()
            } else {
                mine.iter()
                    .all(|f| !f.ends_with("stderr.log") && !f.contains("results"))
            }
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !tidy(&left()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent did not tidy delivered tasks: {:?}",
            left()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        on_agent.iter().any(|x| x % 3 != 0) && left().iter().any(|f| f.ends_with("stdout.log")),
        "printed logs stay on the agent: {:?}",
        left()
    );
}
