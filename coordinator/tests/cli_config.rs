//! End-to-end tests of `init`, `config show`, `config validate`, and the example configs and
//! quickstart shipped in `configs/`, through the real binary.

mod common;

use common::*;
use std::path::PathBuf;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn init_detects_and_writes_files_that_validate_and_run() {
    let p = Project::new("", &[]);
    std::fs::remove_file(p.path().join(".hsm/config.yaml")).unwrap();
    p.write("train.py", "import sys\nprint(sys.argv)\n");
    p.write("scripts/train_big.py", "print('big')\n");
    let run = p.run(&["init"]);
    run.expect_code(0);
    assert!(
        run.stderr.contains("2 candidates"),
        "every candidate is listed: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("scripts/train_big.py"),
        "{}",
        run.stderr
    );
    assert!(p.path().join(".hsm/config.yaml").is_file());
    assert!(p.path().join("sweeps/sweep.yaml").is_file());
    p.run(&["config", "validate"]).expect_code(0);
    let show = p.run(&["config", "show"]);
    show.expect_code(0);
    assert!(show.stdout.contains("script: train.py"), "{}", show.stdout);
    // The generated sweep runs as written.
    let dry = p.run(&["sweep", "run", "--dry-run", "--json"]);
    dry.expect_code(0);
    let tasks: serde_json::Value = serde_json::from_str(&dry.stdout).unwrap();
    assert!(!tasks.as_array().unwrap().is_empty());
    // A second init refuses to overwrite.
    let again = p.run(&["init"]);
    again.expect_code(2);
    assert!(again.stderr.contains("--force"), "{}", again.stderr);
}

#[test]
fn config_validate_reports_every_problem_with_positions() {
    let p = Project::new(
        "command:\n  pyhton: python3\ndefaults:\n  parallel: four\n  timeout: soon\nsorces: {}\n",
        &[("sweeps/sweep.yaml", "sweep:\n  grid:\n    lr: 0.1\n")],
    );
    let run = p.run(&["config", "validate"]);
    run.expect_code(2);
    for needle in [
        ".hsm/config.yaml:2:3",
        ".hsm/config.yaml:4:13",
        ".hsm/config.yaml:5:12",
        ".hsm/config.yaml:6:1",
        "sources",
        "sweeps/sweep.yaml:3:5",
    ] {
        assert!(
            run.stderr.contains(needle),
            "missing {needle:?} in:\n{}",
            run.stderr
        );
    }
}

#[test]
fn shipped_example_configs_validate() {
    let root = repo_root();
    // `config validate` checks that the configured script exists, as `sweep run` does.
    let p = Project::new("", &[("train.py", "")]);
    let config = root.join("configs/hsm_config.example.yaml");
    let sweep = root.join("configs/sweep.example.yaml");
    let run = p.run(&[
        "--config",
        config.to_str().unwrap(),
        "config",
        "validate",
        sweep.to_str().unwrap(),
    ]);
    run.expect_code(0);
    assert!(run.stdout.contains("40 tasks"), "{}", run.stdout);
}

#[test]
fn quickstart_runs_to_completion_with_results() {
    // A copy, so the repository's example directory stays clean.
    let p = Project::new("", &[]);
    let quickstart = repo_root().join("configs/examples/quickstart");
    for rel in [".hsm/config.yaml", "sweeps/sweep.yaml", "train.py"] {
        p.write(rel, &std::fs::read_to_string(quickstart.join(rel)).unwrap());
    }
    let run = p.run(&["sweep", "run", "--sweep-id", "qs"]);
    run.expect_code(0);
    let status = p.status("qs");
    assert_eq!(status["completed"], 12, "{status}");
    for i in 1..=12 {
        let results = p.sweep_dir("qs").join(format!("tasks/task_{i:03}/results"));
        let metrics: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(results.join("metrics.json")).unwrap())
                .unwrap();
        // Hydra-rendered values arrive with their types.
        assert!(metrics["config"]["optimizer.lr"].is_f64(), "{metrics}");
        assert!(metrics["config"]["model.hidden"].is_i64(), "{metrics}");
        assert!(results.join("model.txt").is_file());
    }
}
