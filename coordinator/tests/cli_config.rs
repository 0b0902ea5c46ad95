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
fn config_validate_reports_config_problems_and_run_checks_together_at_their_keys() {
    let p = Project::new(
        "command:\n  script: missing.py\n  python: /no/such/python3\ndefaults:\n  parallel: four\nsources:\n  gpu1:\n    type: agent\n    address: 127.0.0.1:7000\n    fingerprint: sha256:0000000000000000000000000000000000000000000000000000000000000000\n",
        &[(
            "sweeps/sweep.yaml",
            "script: nope.py\nsweep:\n  grid:\n    lr: 0.1\n",
        )],
    );
    let run = p.run(&["config", "validate"]);
    run.expect_code(2);
    for needle in [
        // The config's own problems ...
        ".hsm/config.yaml:5:13",
        // ... the interpreter at the key that set it, though the config has problems ...
        ".hsm/config.yaml:3:3: command.python: program `/no/such/python3` not found",
        // ... an agent source without project_dir at the source ...
        ".hsm/config.yaml:8:5: sources.gpu1: an agent source needs `project_dir`",
        // ... the sweep's problems and its script at `script:`.
        "2 problems in sweeps/sweep.yaml:\nsweeps/sweep.yaml:1:1: script: training script nope.py not found",
        "sweeps/sweep.yaml:4:5",
    ] {
        assert!(
            run.stderr.contains(needle),
            "missing {needle:?} in:\n{}",
            run.stderr
        );
    }
    assert_eq!(
        run.stderr
            .lines()
            .filter(|l| l.contains("sources.gpu1"))
            .count(),
        1,
        "one problem per key:\n{}",
        run.stderr
    );
    // The sweep's script replaces the config's, so the config's missing.py is not reported.
    assert!(!run.stderr.contains("missing.py"), "{}", run.stderr);

    // Config valid: the run checks alone, still at their keys, with the config's script.
    p.write(".hsm/config.yaml", "command:\n  script: missing.py\n");
    p.write("sweeps/sweep.yaml", "sweep:\n  grid:\n    lr: [0.1]\n");
    let run = p.run(&["config", "validate"]);
    run.expect_code(2);
    assert!(
        run.stderr
            .contains(".hsm/config.yaml:2:3: command.script: training script missing.py not found"),
        "{}",
        run.stderr
    );
    p.write("missing.py", "");
    p.run(&["config", "validate"]).expect_code(0);

    // A Python HSM v1 config: the key is named as it is written there.
    std::fs::remove_dir_all(p.path().join(".hsm")).unwrap();
    p.write(
        "sweeps/hsm_config.yaml",
        "paths:\n  python_interpreter: /no/such/py\n  train_script: missing.py\n",
    );
    let run = p.run(&["config", "validate"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains(
            "sweeps/hsm_config.yaml:2:3: paths.python_interpreter: program `/no/such/py` not found"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn yaml_syntax_errors_point_at_the_mistake_and_create_nothing() {
    // (config text, sweep text, the line that must be named, words that must be said)
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "command:\n  script: train.py\ndefaults: {parallel: 2\nsources: {}\n",
            "sweep:\n  grid:\n    lr: [0.1]\n",
            ".hsm/config.yaml:3:11:",
            "never closed",
        ),
        (
            "command:\n  script: train.py\n",
            "sweep:\n  grid:\n    lr: [0.1, 0.2\n    bs: [1, 2]\n",
            "sweeps/sweep.yaml:3:9:",
            "close it with `]`",
        ),
        (
            "command:\n  script: train.py\n",
            "sweep:\n  grid:\n\tlr: [0.1]\n",
            "sweeps/sweep.yaml:3:1:",
            "tab",
        ),
        (
            "command:\n  script: train.py\n",
            "sweep:\n  grid:\n    lr:0.1\n    bs: [1]\n",
            "sweeps/sweep.yaml:3:7:",
            "write `lr: 0.1`",
        ),
        (
            "command:\n  script: train.py\n",
            "sweep:\n  grid:\n    lr: [0.1]\n    - bs\n",
            "sweeps/sweep.yaml:4:5:",
            "list item",
        ),
        (
            "command:\n  script: train.py\n",
            "sweep:\n  grid:\n      lr: [0.1]\n    bs: [1]\n",
            "sweeps/sweep.yaml:4:5:",
            "lines up with no key",
        ),
        (
            "command:\n  script: \"train.py\n  python: python3\n",
            "sweep:\n  grid:\n    lr: [0.1]\n",
            ".hsm/config.yaml:2:11:",
            "quote",
        ),
    ];
    for (config, sweep, line, words) in cases {
        let p = Project::new(config, &[("sweeps/sweep.yaml", sweep), ("train.py", "")]);
        for args in [&["config", "validate"][..], &["sweep", "run", "--dry-run"]] {
            let run = p.run(args);
            run.expect_code(2);
            assert!(
                run.stderr.contains(line) && run.stderr.contains(words),
                "{args:?} should name {line} and say {words:?}:\n{}",
                run.stderr
            );
            assert!(run.stderr.contains("invalid YAML"), "{}", run.stderr);
            assert!(!p.outputs().exists(), "nothing may be created");
        }
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
    let read_json = |path: std::path::PathBuf| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    for i in 1..=12 {
        let task = p.sweep_dir("qs").join(format!("tasks/task_{i:03}"));
        let config = read_json(task.join("results/config.json"));
        // Hydra-rendered values arrive with their types.
        assert!(config["optimizer.lr"].is_f64(), "{config}");
        assert!(config["model.hidden"].is_i64(), "{config}");
        assert!(task.join("results/model.txt").is_file());
        // The metrics it printed and wrote, collected into the task's metrics.json and
        // status.yaml.
        let metrics = read_json(task.join("metrics.json"));
        assert!(metrics["loss"].is_f64(), "{metrics}");
        assert!(metrics["eval.loss"].is_f64(), "{metrics}");
        assert!(metrics["eval.accuracy"].is_f64(), "{metrics}");
        let status = std::fs::read_to_string(task.join("status.yaml")).unwrap();
        assert!(
            status.contains("metrics:\n") && status.contains("  loss: "),
            "{status}"
        );
    }
    // The results table, best three by loss: the stand-in learns best at lr=0.01.
    let best = p.run(&[
        "sweep", "results", "qs", "--sort", "loss", "--top", "3", "--format", "json",
    ]);
    best.expect_code(0);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&best.stdout).unwrap();
    assert_eq!(rows.len(), 3, "{}", best.stdout);
    let losses: Vec<f64> = rows
        .iter()
        .map(|r| r["metrics"]["loss"].as_f64().unwrap())
        .collect();
    assert!(losses.windows(2).all(|w| w[0] <= w[1]), "{losses:?}");
    for row in &rows {
        assert_eq!(row["params"]["optimizer.lr"], 0.01, "{row}");
        assert_eq!(row["status"], "completed", "{row}");
    }
    // Every task kept its per-epoch series (5 points of `loss`).
    let csv = p.run(&[
        "sweep",
        "results",
        "qs",
        "--format",
        "csv",
        "--columns",
        "loss,optimizer.lr",
    ]);
    csv.expect_code(0);
    let lines: Vec<&str> = csv.stdout.lines().collect();
    assert_eq!(lines[0], "task,loss,optimizer.lr");
    assert_eq!(lines.len(), 13, "{}", csv.stdout);
    let db = rusqlite::Connection::open(p.sweep_dir("qs").join("sweep.db")).unwrap();
    let points: i64 = db
        .query_row(
            "SELECT count(*) FROM metrics WHERE name = 'loss'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(points, 12 * 5);
}

#[test]
fn an_argparse_flag_spelled_with_the_other_separator_is_named_before_anything_runs() {
    let p = Project::new(
        "command:\n  python: python3\n  script: train.py\n  style: argparse\n",
        &[
            (
                "train.py",
                "import argparse\np = argparse.ArgumentParser()\np.add_argument('--batch-size', type=int)\np.add_argument('--lr', type=float)\np.parse_args()\n",
            ),
            (
                "sweeps/sweep.yaml",
                "sweep:\n  grid:\n    batch_size: [32, 64]\n    lr: [0.1]\n",
            ),
        ],
    );
    let expected = "train.py declares --batch-size, not --batch_size";
    let validate = p.run(&["config", "validate"]);
    validate.expect_code(2);
    assert!(validate.stderr.contains(expected), "{}", validate.stderr);
    assert!(
        validate.stderr.contains("name the key `batch-size`"),
        "{}",
        validate.stderr
    );
    let run = p.run(&["sweep", "run"]);
    run.expect_code(2);
    assert!(run.stderr.contains(expected), "{}", run.stderr);
    assert!(!p.outputs().exists(), "nothing was created");
    // Named as the script declares it, the sweep runs.
    p.write(
        "sweeps/sweep.yaml",
        "sweep:\n  grid:\n    batch-size: [32, 64]\n    lr: [0.1]\n",
    );
    p.run(&["sweep", "run"]).expect_code(0);
}
