//! Metrics end to end through the real binary: tasks on the local source and on a real
//! `hsm-agent` over QUIC print `HSM_METRIC` lines and write `results/metrics.json(l)`; the run
//! collects them into sweep.db, each task's `metrics.json` and `status.yaml`, and `sweep
//! results` shows, sorts, filters and exports them (CSV read back by Python's csv module, and by
//! pandas where it is installed).

mod common;

use common::*;

/// Prints a loss per step (and a few lines that only look like metrics), writes
/// `metrics.jsonl` and a nested `metrics.json`. Task 3's first attempt fails after printing
/// metrics (it is retried once); task 5 fails for good after printing some.
const TASK: &str = r#"
import json, os, sys
lr = float(sys.argv[sys.argv.index('--lr') + 1])
index = int(os.environ['HSM_TASK_INDEX'])
attempt = int(os.environ['HSM_ATTEMPT'])
out = os.environ['HSM_OUTPUT_DIR']
print('HSM_METRICS is not a metric line')
print('the loss is HSM_METRIC loss=123 (not at the start)')
for step in range(4):
    print(f'HSM_METRIC loss={lr * 10 / (step + 1):.6f} step={step}', flush=True)
with open(os.path.join(out, 'metrics.jsonl'), 'w') as f:
    for step in range(3):
        f.write(json.dumps({'step': step, 'grad_norm': step + lr}) + '\n')
with open(os.path.join(out, 'metrics.json'), 'w') as f:
    json.dump({'val': {'acc': 1.0 - lr, 'loss': lr * 2}, 'note': 'strings are left out'}, f)
if index == 3 and attempt == 1:
    print('HSM_METRIC loss=999', flush=True)
    sys.exit('first attempt fails')
if index == 5:
    sys.exit('task 5 always fails')
"#;

const SWEEP: &str = "sweep:\n  grid:\n    lr: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]\n";

fn rows(p: &Project, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["sweep", "results", "m", "--format", "json"];
    all.extend_from_slice(args);
    let run = p.run(&all);
    run.expect_code(0);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| run.fail(&format!("not JSON: {e}")))
}

#[test]
fn metrics_from_local_and_agent_tasks_reach_the_results_table() {
    let Some(agent_bin) = agent_bin() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let p = Project::new(
        "command:\n  python: python3\n  script: task.py\n  style: argparse\n",
        &[("task.py", TASK), ("sweeps/sweep.yaml", SWEEP)],
    );
    let own = coordinator_fingerprint(&p, home.path());
    let agent = start_agent(&agent_bin);
    enlist(&p, &agent_bin, &agent, "far", &own);
    let run = p.run_in(
        home.path(),
        &[
            "sweep",
            "run",
            "--sweep-id",
            "m",
            "--sources",
            "local,far",
            "--retries",
            "1",
            "--parallel",
            "1",
        ],
    );
    run.expect_code(1);

    let all = rows(&p, &[]);
    assert_eq!(all.len(), 6);
    let sources: std::collections::BTreeSet<&str> =
        all.iter().map(|r| r["source"].as_str().unwrap()).collect();
    assert_eq!(
        sources,
        ["far", "local"].into(),
        "tasks ran on both sources"
    );
    for row in &all {
        let lr = row["params"]["lr"].as_f64().unwrap();
        let m = &row["metrics"];
        let close = |v: &serde_json::Value, want: f64| (v.as_f64().unwrap() - want).abs() < 1e-6;
        // The last printed value of the attempt that counts (task 3's second).
        assert!(close(&m["loss"], lr * 10.0 / 4.0), "{row}");
        assert!(close(&m["grad_norm"], 2.0 + lr), "{row}");
        assert!(close(&m["val.acc"], 1.0 - lr), "{row}");
        assert!(close(&m["val.loss"], lr * 2.0), "{row}");
        assert!(m.get("note").is_none() && m.get("step").is_none(), "{row}");
        let expected = if row["task"] == "task_005" {
            "failed"
        } else {
            "completed"
        };
        assert_eq!(row["status"], expected, "{row}");
        // The task directory's own copies.
        let dir = p
            .sweep_dir("m")
            .join(format!("tasks/{}", row["task"].as_str().unwrap()));
        let kept: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).unwrap())
                .unwrap();
        assert!(close(&kept["loss"], lr * 10.0 / 4.0), "{kept}");
        let status = std::fs::read_to_string(dir.join("status.yaml")).unwrap();
        assert!(status.contains("\nmetrics:\n"), "{status}");
    }
    let task3 = all.iter().find(|r| r["task"] == "task_003").unwrap();
    assert_eq!(task3["attempt"], 2, "{task3}");

    // The database keeps each attempt's series: task 3's first attempt with its 999.
    let db = rusqlite::Connection::open(p.sweep_dir("m").join("sweep.db")).unwrap();
    let first: Vec<f64> = db
        .prepare("SELECT value FROM metrics WHERE idx = 3 AND attempt = 1 AND name = 'loss' ORDER BY rowid")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(first.last(), Some(&999.0), "{first:?}");
    assert_eq!(first.len(), 5);
    let steps: i64 = db
        .query_row(
            "SELECT count(*) FROM metrics WHERE idx = 1 AND name = 'loss' AND step IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(steps, 4);

    // Sorted, filtered, cut.
    let best = rows(&p, &["--sort", "val.acc", "--top", "2"]);
    let tasks: Vec<&str> = best.iter().map(|r| r["task"].as_str().unwrap()).collect();
    assert_eq!(
        tasks,
        ["task_001", "task_002"],
        "accuracy sorts highest first"
    );
    let some = rows(&p, &["--where", "lr>=0.3", "--where", "status=completed"]);
    let tasks: Vec<&str> = some.iter().map(|r| r["task"].as_str().unwrap()).collect();
    assert_eq!(tasks, ["task_003", "task_004", "task_006"]);

    // CSV as a researcher reads it.
    let csv = p.run(&["sweep", "results", "m", "--format", "csv"]);
    csv.expect_code(0);
    let path = p.path().join("results.csv");
    std::fs::write(&path, &csv.stdout).unwrap();
    let check = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import csv, sys\n\
             rows = list(csv.DictReader(open(sys.argv[1])))\n\
             assert len(rows) == 6, rows\n\
             assert abs(float(rows[0]['loss']) - 0.25) < 1e-9, rows[0]\n\
             assert rows[4]['status'] == 'failed' and rows[4]['reason'], rows[4]\n\
             try:\n    import pandas\nexcept ImportError:\n    print('pandas not installed: checked with csv only'); sys.exit(0)\n\
             df = pandas.read_csv(sys.argv[1])\n\
             assert df.shape[0] == 6, df\n\
             assert df['loss'].dtype.kind == 'f' and df['lr'].dtype.kind == 'f', df.dtypes\n\
             assert df.sort_values('loss').iloc[0]['task'] == 'task_001', df\n\
             print('pandas read it')\n",
        )
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    println!("{}", String::from_utf8_lossy(&check.stdout).trim());

    // A name that is not there is a usage error naming what is.
    let bad = p.run(&["sweep", "results", "m", "--sort", "los"]);
    bad.expect_code(2);
    assert!(bad.stderr.contains("did you mean `loss`"), "{}", bad.stderr);
    let bad = p.run(&["sweep", "results", "m", "--where", "lr~1"]);
    bad.expect_code(2);
    assert!(bad.stderr.contains("no comparison"), "{}", bad.stderr);
}

#[test]
fn metrics_an_interrupted_run_never_read_are_read_later() {
    let p = Project::new(
        "command:\n  python: python3\n  script: task.py\n  style: argparse\n",
        &[
            ("task.py", "print('HSM_METRIC loss=0.5 step=1')\n"),
            ("sweeps/sweep.yaml", "sweep:\n  grid:\n    lr: [1, 2]\n"),
        ],
    );
    p.run(&["sweep", "run", "--sweep-id", "m"]).expect_code(0);
    // As a coordinator killed between a task's end and reading its output would leave it.
    let db = rusqlite::Connection::open(p.sweep_dir("m").join("sweep.db")).unwrap();
    db.execute_batch(
        "DELETE FROM metrics; DELETE FROM task_metrics; UPDATE attempts SET metrics_at = NULL;",
    )
    .unwrap();
    drop(db);
    let all = rows(&p, &[]);
    for row in &all {
        assert_eq!(row["metrics"]["loss"], 0.5, "{row}");
    }
}
