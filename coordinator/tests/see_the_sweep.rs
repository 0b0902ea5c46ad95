//! Seeing a sweep spread over the local source, a real `hsm-agent` running processes and a real
//! `hsm-agent` submitting Slurm job arrays (the single-node Slurm the test command starts): the
//! results table has every task's metrics and usage whichever source ran it, `sweep errors`
//! groups one cause across sources, `sweep watch --once` shows each source, and the report the
//! run wrote holds all of it (opened in headless Chromium where it is installed). Skips with a
//! reason without Slurm (not root, or outside tests/run-all.sh).

mod common;

use common::browser::*;
use common::*;
use std::collections::BTreeSet;

/// Prints a loss per step and writes `results/metrics.json`; x = 4, 8 and 11 raise the same
/// ValueError with different numbers, x = 6 runs out of patience with a RuntimeError.
const TASK_PY: &str = r#"
import json, os, sys, time
args = dict(a.split("=", 1) for a in sys.argv[1:])
x = int(args["x"])
out = args["output.dir"]
os.makedirs(out, exist_ok=True)
for step in range(3):
    print(f"HSM_METRIC loss={x / (step + 1):.4f} step={step}", flush=True)
time.sleep(0.2)
if x in (4, 8, 11):
    raise ValueError(f"shard {x * 7} is corrupt at offset {x * 4096}")
if x == 6:
    raise RuntimeError("no progress after 3 epochs")
with open(os.path.join(out, "metrics.json"), "w") as f:
    json.dump({"val": {"acc": 1 - x / 100}}, f)
"#;

#[test]
fn a_sweep_over_local_an_agent_and_slurm_is_seen_whole() {
    let (Some(_), Some(agent_bin)) = (test_slurm(), agent_bin()) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let p = Project::new(
        "command:\n  python: python3\n  script: task.py\n",
        &[
            ("task.py", TASK_PY),
            (
                "sweeps/sweep.yaml",
                "sweep:\n  grid:\n    x: {range: [1, 13]}\n",
            ),
        ],
    );
    let own = coordinator_fingerprint(&p, home.path());
    let far = start_agent(&agent_bin);
    let hpc = start_agent_with_env(&agent_bin, None, "127.0.0.1:0", &["--poll", "1"], &[]);
    authorize(&agent_bin, &far, &own);
    authorize(&agent_bin, &hpc, &own);
    let source = |name: &str, agent: &AgentProcess, backend: &str| {
        format!(
            "  {name}:\n    type: agent\n    address: {}\n    fingerprint: {}\n    project_dir: {}\n    slots: 2\n    backend: {backend}\n",
            agent.addr,
            agent.fingerprint,
            p.path().display()
        )
    };
    p.write(
        ".hsm/config.yaml",
        &format!(
            "command:\n  python: python3\n  script: task.py\nsources:\n{}{}",
            source("far", &far, "process"),
            source("hpc", &hpc, "slurm")
        ),
    );
    let run = p.run_in(
        home.path(),
        &[
            "sweep",
            "run",
            "--sweep-id",
            "s",
            "--sources",
            "local,far,hpc",
            "--parallel",
            "2",
        ],
    );
    run.expect_code(1);
    assert!(run.stderr.contains("report: "), "{}", run.stderr);

    // The results table: every task, its metrics and its usage, whichever source ran it.
    let results = p.run(&["sweep", "results", "s", "--format", "json"]);
    results.expect_code(0);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&results.stdout).unwrap();
    assert_eq!(rows.len(), 12);
    let sources: BTreeSet<&str> = rows.iter().filter_map(|r| r["source"].as_str()).collect();
    assert_eq!(
        sources,
        ["far", "hpc", "local"].into(),
        "{}",
        results.stdout
    );
    for row in &rows {
        let x = row["params"]["x"].as_f64().unwrap();
        // The last printed loss, also for the tasks that failed after printing it.
        let loss = row["metrics"]["loss"].as_f64().unwrap_or(f64::NAN);
        assert!((loss - x / 3.0).abs() < 1e-4, "{row}");
        assert!(
            row["duration_s"].as_f64().is_some_and(|d| d >= 0.2),
            "{row}"
        );
        assert!(
            row["cpu_user_s"].is_number() || row["source"] == "hpc",
            "{row}"
        );
        if row["status"] == "completed" {
            assert!(row["metrics"]["val.acc"].is_number(), "{row}");
        }
    }
    let best = p.run(&[
        "sweep",
        "results",
        "s",
        "--sort",
        "loss",
        "--top",
        "3",
        "--format",
        "csv",
        "--columns",
        "loss",
    ]);
    best.expect_code(0);
    assert_eq!(
        best.stdout,
        "task,loss\ntask_001,0.3333\ntask_002,0.6667\ntask_003,1\n"
    );

    // One cause, three numbers apart, across sources; the other cause its own group.
    let errors = p.run(&["sweep", "errors", "s", "--json"]);
    errors.expect_code(0);
    let errors: serde_json::Value = serde_json::from_str(&errors.stdout).unwrap();
    let groups = errors["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{errors}");
    assert_eq!(groups[0]["count"], 3, "{errors}");
    assert_eq!(
        groups[0]["signature"], "ValueError: shard <n> is corrupt at offset <n>",
        "{errors}"
    );
    assert_eq!(
        groups[1]["signature"],
        "RuntimeError: no progress after <n> epochs"
    );
    let failed_sources: BTreeSet<&str> = rows
        .iter()
        .filter(|r| r["status"] == "failed")
        .filter_map(|r| r["source"].as_str())
        .collect();
    assert!(
        failed_sources.len() >= 2,
        "failures on several sources: {failed_sources:?}"
    );

    // The watch's snapshot of the ended sweep names each source.
    let watch = p.run(&["sweep", "watch", "s", "--once"]);
    watch.expect_code(0);
    for name in ["local", "far", "hpc"] {
        assert!(
            watch
                .stdout
                .lines()
                .any(|l| l.trim_start().starts_with(name)),
            "{name} in the watch:\n{}",
            watch.stdout
        );
    }

    // The report the run wrote, in a real browser where there is one.
    let report = p.sweep_dir("s").join("reports/report.html");
    let html = std::fs::read_to_string(&report).unwrap();
    for name in ["\"far\"", "\"hpc\"", "\"local\""] {
        assert!(html.contains(name), "{name} in the report");
    }
    let Some(browser) = chromium_or_skip() else {
        return;
    };
    let profile = tempfile::tempdir().unwrap();
    let (dom, log) = run_chromium(
        &browser,
        profile.path(),
        &["--dump-dom"],
        &format!("file://{}", report.display()),
    );
    assert!(dom.contains("data-rendered=\"ok\""), "{log}");
    assert!(page_errors(&log).is_empty(), "{log}");
    let best_rows: usize = attr_of(&dom, "best-table", "data-rows")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        best_rows >= 8,
        "the 8 completed tasks (and the failed ones that printed a loss)"
    );
    assert_eq!(
        attr_of(&dom, "error-groups", "data-groups").as_deref(),
        Some("2")
    );
}
