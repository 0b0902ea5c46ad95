//! End-to-end tests of what attempts used: a task that burns CPU and holds ~60 MiB runs on the
//! local source and on a real `hsm-agent`, and `sweep.db`'s attempt rows, the task's
//! `status.yaml`, `sweep_metadata.yaml` and `sweep status` (text and `--json`) show it.

mod common;

use common::*;

/// ~60 MiB touched (a filled bytes object), then 0.4 s of CPU.
const BURN_PY: &str = "import time\nx = b'\\x01' * (60 << 20)\nt = time.process_time()\nwhile time.process_time() - t < 0.4:\n    pass\nprint(len(x))\n";

/// (source, wall_ms, cpu_user_ms, cpu_sys_ms, max_rss_kb) of every attempt.
type UsageRow = (String, Option<i64>, Option<i64>, Option<i64>, Option<i64>);

fn attempt_usage(p: &Project, sweep: &str) -> Vec<UsageRow> {
    let db = rusqlite::Connection::open(p.sweep_dir(sweep).join("sweep.db")).unwrap();
    let mut stmt = db
        .prepare(
            "SELECT source, wall_ms, cpu_user_ms, cpu_sys_ms, max_rss_kb FROM attempts
             ORDER BY idx, attempt",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn assert_measured(row: &UsageRow) {
    let (source, wall, user, sys, rss) = row;
    let (wall, user, sys, rss) = (
        wall.unwrap_or_else(|| panic!("{source}: no wall time: {row:?}")),
        user.unwrap_or_else(|| panic!("{source}: no user CPU: {row:?}")),
        sys.unwrap_or_else(|| panic!("{source}: no system CPU: {row:?}")),
        rss.unwrap_or_else(|| panic!("{source}: no peak RSS: {row:?}")),
    );
    assert!(user > 0 && user + sys >= 400, "{row:?}");
    // Wall time covers the CPU of the single-threaded task, up to the kernel's CPU accounting
    // granularity.
    assert!(wall + 50 >= user + sys, "{row:?}");
    assert!(rss > 40_000, "{row:?}");
}

/// The task's `status.yaml` has its times, duration and usage.
fn assert_status_yaml(p: &Project, sweep: &str, task: &str) {
    let path = p.sweep_dir(sweep).join(format!("tasks/{task}/status.yaml"));
    let text = std::fs::read_to_string(&path).unwrap();
    for key in [
        "status: completed",
        "started: ",
        "finished: ",
        "duration_s: ",
        "usage:",
        "wall_s: ",
        "cpu_user_s: ",
        "cpu_sys_s: ",
        "max_rss_mb: ",
    ] {
        assert!(
            text.contains(key),
            "{key:?} missing from {}:\n{text}",
            path.display()
        );
    }
}

#[test]
fn a_local_task_records_what_it_used() {
    let p = Project::new(
        "command:\n  python: python3\n  script: task.py\n",
        &[
            ("task.py", BURN_PY),
            ("sweeps/sweep.yaml", "sweep:\n  grid:\n    i: [1, 2]\n"),
        ],
    );
    p.run(&["sweep", "run", "--sweep-id", "burn"])
        .expect_code(0);
    let rows = attempt_usage(&p, "burn");
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!(row.0, "local");
        assert_measured(row);
    }
    assert_status_yaml(&p, "burn", "task_001");

    // The per-source figures: in the metadata, and in `sweep status` (text and JSON).
    let meta = std::fs::read_to_string(p.sweep_dir("burn").join("sweep_metadata.yaml")).unwrap();
    for key in [
        "name: local",
        "slots: ",
        "completed: 2",
        "median_duration_s: ",
        "throughput_per_min: ",
        "max_rss_mb: ",
    ] {
        assert!(
            meta.contains(key),
            "{key:?} missing from the metadata:\n{meta}"
        );
    }
    let status = p.status("burn");
    let sources = status["sources"].as_array().expect("sources in --json");
    assert_eq!(sources.len(), 1, "{status}");
    let local = &sources[0];
    assert_eq!(local["name"], "local");
    assert_eq!(
        (local["tasks"].as_u64(), local["completed"].as_u64()),
        (Some(2), Some(2))
    );
    assert!(local["mean_duration_s"].as_f64().unwrap() >= 0.4, "{local}");
    assert!(local["max_rss_mb"].as_f64().unwrap() > 40.0, "{local}");
    assert_eq!(status["completed"], 2, "the existing keys stay");
    let task = &status["tasks"][0];
    assert!(
        task["usage"]["max_rss_mb"].as_f64().unwrap() > 40.0,
        "{task}"
    );
    assert!(
        task["usage"]["cpu_user_s"].as_f64().unwrap() > 0.0,
        "{task}"
    );
    let text = p.run(&["sweep", "status", "burn"]);
    text.expect_code(0);
    let header = text
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("source"))
        .unwrap_or_else(|| panic!("no per-source table:\n{}", text.stdout));
    assert!(
        header.contains("median") && header.contains("tasks/min"),
        "{header}"
    );
    assert!(
        text.stdout
            .lines()
            .any(|l| l.trim_start().starts_with("local ")),
        "{}",
        text.stdout
    );
}

#[test]
fn an_agent_task_records_what_it_used() {
    let Some(agent_bin) = agent_bin() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let p = Project::new(
        "command:\n  python: python3\n  script: task.py\n",
        &[
            ("task.py", BURN_PY),
            ("sweeps/sweep.yaml", "sweep:\n  grid:\n    i: [1, 2]\n"),
        ],
    );
    let own_fp = coordinator_fingerprint(&p, home.path());
    let agent = start_agent(&agent_bin);
    enlist(&p, &agent_bin, &agent, "gpu1", &own_fp);
    p.run_in(
        home.path(),
        &["sweep", "run", "--sources", "gpu1", "--sweep-id", "burn"],
    )
    .expect_code(0);
    let rows = attempt_usage(&p, "burn");
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!(row.0, "gpu1");
        assert_measured(row);
    }
    assert_status_yaml(&p, "burn", "task_002");
    let status = p.status("burn");
    assert_eq!(status["sources"][0]["name"], "gpu1", "{status}");
    assert!(
        status["sources"][0]["cpu_s"].as_f64().unwrap() >= 0.8,
        "{status}"
    );
}
