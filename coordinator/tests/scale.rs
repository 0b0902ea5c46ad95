//! A sweep of 200,000 tasks through the real binary: created, counted while it runs, listed
//! as JSON, cancelled while running (the pending ones by range), and planned by
//! `sweep complete --dry-run`. Bounded only by the suite's time limit: the speeds are measured
//! by `hsm-bench-scale`, never asserted here.

mod common;

use common::*;
use std::io::BufRead;
use std::time::Duration;

const TASKS: u64 = 200_000;

/// Every task sleeps far longer than the test: the two running ones end only by the cancel.
const CONFIG: &str =
    "command:\n  template: [\"/bin/sh\", \"-c\", \"sleep 600\", \"sh\", \"{overrides}\"]\n";

fn counts_line(p: &Project, id: &str) -> String {
    try_counts_line(p, id).unwrap_or_else(|| panic!("`sweep status {id}` failed"))
}

/// `None` while the sweep is still being created.
fn try_counts_line(p: &Project, id: &str) -> Option<String> {
    let run = p.run(&["sweep", "status", id]);
    if run.code != Some(0) {
        return None;
    }
    Some(
        run.stdout
            .lines()
            .find(|l| l.trim_start().starts_with("total "))
            .unwrap_or_else(|| run.fail("no `total` line"))
            .trim()
            .to_string(),
    )
}

/// The sweep run, killed by its pid if the test fails before it ends.
struct Running(Option<std::process::Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Tasks per status: `(status, n)` rows.
type Counts = Vec<(String, i64)>;

/// What `task_counts` says, and what counting the tasks says.
fn db_counts(db: &std::path::Path) -> (Counts, Counts) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let read = |sql: &str| -> Counts {
        let mut stmt = conn.prepare(sql).unwrap();
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        rows
    };
    (
        read("SELECT status, n FROM task_counts WHERE n > 0 ORDER BY status"),
        read("SELECT status, count(*) FROM tasks GROUP BY status ORDER BY status"),
    )
}

#[test]
fn a_200000_task_sweep_is_counted_cancelled_and_planned_without_touching_every_task() {
    let p = Project::new(
        CONFIG,
        &[(
            "sweeps/sweep.yaml",
            "sweep:\n  grid:\n    a: {range: [0, 200]}\n    b: {range: [0, 1000]}\n",
        )],
    );
    let mut run = Running(Some(p.spawn(&["-q", "sweep", "run", "--parallel", "2"])));
    let child = run.0.as_mut().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let id = first
        .trim()
        .strip_prefix("sweep_id: ")
        .unwrap_or_else(|| panic!("expected `sweep_id: …`, got {first:?}"))
        .to_string();
    let dir = p.sweep_dir(&id);
    wait_until(Duration::from_secs(600), "two tasks running", || {
        try_counts_line(&p, &id).is_some_and(|l| l.contains("running 2 "))
    });
    assert_eq!(
        counts_line(&p, &id),
        "total 200000 · completed 0 · failed 0 · cancelled 0 · running 2 · queued 0 · pending 199998"
    );

    // The whole sweep as JSON, streamed: every task, with its parameters.
    let status = p.status(&id);
    let tasks = status["tasks"].as_array().unwrap();
    assert_eq!(tasks.len() as u64, TASKS);
    assert_eq!(status["total"], TASKS);
    assert_eq!(status["pending"], TASKS - 2);
    assert_eq!(tasks[0]["task"], "task_000001");
    assert_eq!(tasks[0]["params"], serde_json::json!({"a": 0, "b": 0}));
    assert_eq!(
        tasks[199_999]["params"],
        serde_json::json!({"a": 199, "b": 999})
    );
    assert_eq!(status["sources"][0]["name"], "local");
    assert_eq!(status["sources"][0]["running"], 2);

    // Only the running tasks and the few prepared ahead have directories.
    let task_dirs = std::fs::read_dir(dir.join("tasks")).unwrap().count();
    assert!(
        (2..=1024).contains(&task_dirs),
        "{task_dirs} task directories for 2 started tasks"
    );

    let cancel = p.run(&["sweep", "cancel", &id]);
    cancel.expect_code(0);
    assert!(
        cancel.stdout.contains(&format!(
            "{id}: 0 completed, 0 failed, 200000 cancelled, 0 pending"
        )),
        "{}",
        cancel.stdout
    );
    let ended = wait_with_timeout(
        run.0.take().unwrap(),
        Duration::from_secs(300),
        "the cancelled sweep run",
    );
    assert_eq!(ended.status.code(), Some(1), "a cancelled run exits 1");
    let (kept, counted) = db_counts(&dir.join("sweep.db"));
    assert_eq!(kept, counted, "task_counts must match the tasks");
    assert_eq!(counted, [("cancelled".to_string(), TASKS as i64)]);
    // A cancel creates no task directory; and 200,000 tasks are past the compact layout's
    // threshold, so the silent tasks that ran and those prepared ahead of them leave none.
    let after = std::fs::read_dir(dir.join("tasks")).unwrap().count();
    assert_eq!(after, 0, "{task_dirs} task directories before the cancel");
    let log = std::fs::read_to_string(dir.join("logs/sweep.log")).unwrap();
    assert!(
        log.lines().count() < 2000,
        "sweep.log has a line per cancelled task: {} lines",
        log.lines().count()
    );
    let mapping = std::fs::read_to_string(dir.join("task_mapping.yaml")).unwrap();
    assert_eq!(mapping.matches("status: cancelled").count() as u64, TASKS);

    // Nine in ten marked completed (as a finished sweep would be): the plan runs the rest.
    {
        let conn = rusqlite::Connection::open(dir.join("sweep.db")).unwrap();
        conn.execute(
            "UPDATE tasks SET status = 'completed' WHERE idx % 10 != 0",
            [],
        )
        .unwrap();
    }
    let (kept, counted) = db_counts(&dir.join("sweep.db"));
    assert_eq!(
        kept, counted,
        "task_counts follow an update from sqlite3 too"
    );
    let dry = p.run(&["sweep", "complete", &id, "--dry-run", "--json"]);
    dry.expect_code(0);
    let planned: serde_json::Value =
        serde_json::from_str(&dry.stdout).unwrap_or_else(|e| dry.fail(&format!("bad JSON: {e}")));
    let planned = planned.as_array().unwrap();
    assert_eq!(planned.len() as u64, TASKS / 10);
    assert_eq!(planned[0]["task"], "task_000010");
    assert_eq!(planned[0]["params"], serde_json::json!({"a": 0, "b": 9}));
    assert_eq!(planned[0]["reason"], "cancelled");
    assert_eq!(
        counts_line(&p, &id),
        "total 200000 · completed 180000 · failed 0 · cancelled 20000 · running 0 · queued 0 · pending 0"
    );
}
