//! `sweep complete` on a Python HSM v1 sweep directory: task directories of every v1 backend
//! (`task_001`, `task_2`, `remote_<host>/task_004`, `<sweep_id>_task_005`), `task_info.txt` whose
//! last `Status:` line decides, `source_mapping.yaml`, and `sweep_config.yaml` regenerating the
//! combinations in v1's order. The directory is hand-made from the formats v1's code writes
//! (see `docs/python-hsm-v1.md`); Python HSM itself is not installed here.

mod common;

use common::*;

const SWEEP_ID: &str = "sweep_20251110_212023";

/// v1's example sweep: 2 x 2 grid times two paired groups (2 and 3 rows) = 24 tasks.
const V1_SWEEP: &str = r#"defaults:
  - override hydra/launcher: basic
sweep:
  grid:
    seed: [1, 2]
    training.lr: [0.001, 0.01]
  paired:
    - arch:
        model.hidden: [64, 128]
        model.layers: [2, 4]
    - opt:
        optimizer: [adam, sgd, rmsprop]
        momentum: [0.0, 0.9, 0.5]
metadata:
  description: "demo"
"#;

/// Writes `results/r.txt` with its arguments, so a re-run is visible.
const TASK_PY: &str = r#"
import os, sys
args = dict(a.split("=", 1) for a in sys.argv[1:])
out = args["output.dir"]
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "r.txt"), "w") as f:
    f.write(" ".join(sorted(a for a in sys.argv[1:] if not a.startswith(("output.dir", "wandb")))) + "\n")
"#;

fn v1_project() -> Project {
    let p = Project::new(
        "command:\n  python: python3\n  script: task.py\n",
        &[("task.py", TASK_PY)],
    );
    let root = format!("sweeps/outputs/{SWEEP_ID}");
    p.write(&format!("{root}/sweep_config.yaml"), V1_SWEEP);
    let info = |first: &str, status: &str| {
        format!(
            "{first}\nStarted: Mon Nov 10 21:20:31 CET 2025\nNode: n1\nStatus: RUNNING\n{status}"
        )
    };
    let tasks = [
        // local: RUNNING then COMPLETED
        ("task_001", info("Job ID: local_x_1", "Status: COMPLETED\n")),
        // array, unpadded: failed
        (
            "task_2",
            info("PBS Array Index: 2", "Status: FAILED\nExit Code: 1\n"),
        ),
        // never finished
        ("task_003", info("Job ID: local_x_3", "")),
        // remote mode's nested copy: done
        (
            "remote_gpu1/task_004",
            info("Job Name: x", "Status: SUCCESS\n"),
        ),
        // individual Slurm job directory: done
        (
            &format!("{SWEEP_ID}_task_005") as &str,
            info("Job ID: 77", "Status: SUCCESS\n"),
        ),
        // cancelled by v1's cancel
        (
            "task_006",
            info("Job ID: local_x_6", "Status: CANCELLED (force killed)\n"),
        ),
        // a backup and a task beyond the sweep: not tasks of it
        (
            "task_007_backup_20251110",
            info("Job ID: b", "Status: SUCCESS\n"),
        ),
        ("task_030", info("Job ID: z", "Status: SUCCESS\n")),
    ];
    for (dir, text) in tasks {
        p.write(&format!("{root}/tasks/{dir}/task_info.txt"), &text);
        p.write(&format!("{root}/tasks/{dir}/results/from_v1.txt"), dir);
    }
    p.write(
        &format!("{root}/source_mapping.yaml"),
        "sweep_metadata:\n  compute_sources:\n  - local\n  strategy: local\n  total_tasks: 24\ntask_assignments:\n  task_001:\n    compute_source: local\n    status: COMPLETED\n  task_003:\n    compute_source: local\n    status: RUNNING\n",
    );
    p
}

#[test]
fn a_v1_sweep_is_completed_in_place_running_only_what_did_not_complete() {
    let p = v1_project();
    let root = p.sweep_dir(SWEEP_ID);

    // A dry run says what it found and creates nothing.
    let dry = p.run(&["sweep", "complete", SWEEP_ID, "--dry-run"]);
    dry.expect_code(0);
    assert!(
        dry.stdout.contains(
            "24 tasks: 3 completed, 1 failed, 1 cancelled, 1 never finished, 18 never started"
        ),
        "{}",
        dry.stdout
    );
    assert!(!root.join("sweep.db").exists());
    assert!(root.join("tasks/remote_gpu1/task_004").is_dir());

    let run = p.run(&["sweep", "complete", SWEEP_ID]);
    run.expect_code(0);
    assert!(run.stderr.contains("Python HSM v1 sweep"), "{}", run.stderr);
    assert_exactly_once(&p, SWEEP_ID, 24);
    let status = p.status(SWEEP_ID);
    let task = |n: usize| &status["tasks"][n - 1];
    // Completed in v1: kept, not run again (their v1 files are all they have).
    for (n, from) in [
        (1, "task_001"),
        (4, "remote_gpu1/task_004"),
        (5, &format!("{SWEEP_ID}_task_005") as &str),
    ] {
        assert_eq!(
            (&task(n)["status"], &task(n)["attempt"]),
            (&"completed".into(), &1.into()),
            "{}",
            task(n)
        );
        let dir = root.join(format!("tasks/task_{n:03}"));
        assert_eq!(
            std::fs::read_to_string(dir.join("results/from_v1.txt")).unwrap(),
            from
        );
        assert!(!dir.join("results/r.txt").exists(), "task {n} ran again");
    }
    assert_eq!(task(1)["source"], "local", "from source_mapping.yaml");
    // Failed and cancelled in v1: attempt 2 now; never finished / never started: attempt 1.
    for (n, attempt) in [(2, 2), (6, 2), (3, 1), (8, 1), (24, 1)] {
        assert_eq!(task(n)["attempt"], attempt, "{}", task(n));
        let r = root.join(format!("tasks/task_{n:03}/results/r.txt"));
        assert!(r.is_file(), "task {n} ran: {}", r.display());
    }
    // v1's order: grid outside (last key fastest), paired inside (last group fastest).
    let r12 = std::fs::read_to_string(root.join("tasks/task_012/results/r.txt")).unwrap();
    assert_eq!(
        r12.trim(),
        "model.hidden=128 model.layers=4 momentum=0.5 optimizer=rmsprop seed=1 training.lr=0.01"
    );
    let r7 = std::fs::read_to_string(root.join("tasks/task_007/results/r.txt")).unwrap();
    assert_eq!(
        r7.trim(),
        "model.hidden=64 model.layers=2 momentum=0.0 optimizer=adam seed=1 training.lr=0.01"
    );
    // Renamed to this layout's names; what is not a task of this sweep is left alone.
    assert!(!root.join("tasks/task_2").exists());
    assert!(!root.join("tasks/remote_gpu1/task_004").exists());
    assert!(root
        .join("tasks/task_007_backup_20251110/task_info.txt")
        .is_file());
    assert!(root.join("tasks/task_030/task_info.txt").is_file());
    assert!(run.stderr.contains("task_2 -> task_002"), "{}", run.stderr);

    // Once taken over it is an ordinary sweep: completing again runs nothing.
    let again = p.run(&["sweep", "complete", SWEEP_ID]);
    again.expect_code(0);
    assert!(again.stderr.contains("nothing to run"), "{}", again.stderr);
}

#[test]
fn an_unreadable_v1_sweep_file_is_reported_with_its_place_and_nothing_is_created() {
    let p = v1_project();
    let root = p.sweep_dir(SWEEP_ID);
    p.write(
        &format!("sweeps/outputs/{SWEEP_ID}/sweep_config.yaml"),
        "sweep:\n  grid:\n    seed: 3\n",
    );
    let run = p.run(&["sweep", "complete", SWEEP_ID]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("sweep_config.yaml:3:") && run.stderr.contains("Python HSM v1"),
        "{}",
        run.stderr
    );
    assert!(!root.join("sweep.db").exists());
    assert!(root.join("tasks/task_2").is_dir(), "nothing renamed");
}
