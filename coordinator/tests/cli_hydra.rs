//! End-to-end: a real Hydra app (hydra-core) and a plain argparse app run through `sweep run`
//! with the default command and complete every task; W&B keys appear only when asked for.
//! The Hydra tests skip, saying so, when python3 cannot `import hydra`.

mod common;

use common::*;
use std::collections::BTreeSet;

fn hydra_available() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import hydra"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A Hydra app whose config has neither `wandb` nor `output`: it writes into the output dir it is
/// given and prints Hydra's run directory and the W&B group it received (if any).
const HYDRA_APP: &str = r#"
import os
import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

@hydra.main(version_base=None, config_path=".", config_name="config")
def main(cfg):
    out = cfg.output.dir
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "result.txt"), "w") as f:
        f.write(f"seed={cfg.seed} lr={cfg.lr}\n")
    print("run_dir", HydraConfig.get().runtime.output_dir, flush=True)
    print("wandb_group", OmegaConf.select(cfg, "wandb.group", default="none"), flush=True)

if __name__ == "__main__":
    main()
"#;

const HYDRA_CONFIG: &str = "seed: 0\nlr: 0.1\n";

/// 8 tasks; with --parallel 4 several start within the same second.
const SWEEP: &str = "sweep:\n  grid:\n    seed: [1, 2, 3, 4]\n    lr: [0.1, 0.2]\n";

fn sweep_id(run: &Run) -> String {
    run.stdout
        .lines()
        .find_map(|l| l.strip_prefix("sweep_id: "))
        .unwrap_or_else(|| run.fail("no sweep_id line"))
        .to_string()
}

fn stdout_of(p: &Project, id: &str, task: &str) -> String {
    std::fs::read_to_string(p.sweep_dir(id).join("tasks").join(task).join("stdout.log"))
        .unwrap_or_default()
}

fn line_value(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} ")))
        .map(str::to_string)
}

#[test]
fn a_plain_hydra_app_completes_every_task_with_a_run_dir_of_its_own() {
    if !hydra_available() {
        println!("SKIPPED: hydra-core not installed for python3 (pip install hydra-core)");
        return;
    }
    let p = Project::new(
        "command:\n  python: python3\n  script: train.py\n",
        &[
            ("train.py", HYDRA_APP),
            ("config.yaml", HYDRA_CONFIG),
            ("sweeps/sweep.yaml", SWEEP),
        ],
    );
    let run = p.run(&["sweep", "run", "--parallel", "4"]);
    run.expect_code(0);
    let id = sweep_id(&run);
    let mut run_dirs = BTreeSet::new();
    for k in 1..=8 {
        let task = format!("task_{k:03}");
        let results = p.sweep_dir(&id).join("tasks").join(&task).join("results");
        let out = stdout_of(&p, &id, &task);
        assert!(
            results.join("result.txt").is_file(),
            "{task}: no result.txt; stdout: {out}"
        );
        // Hydra's own files land in the task's results, not in a shared outputs/<date>/<time>.
        assert!(
            results.join(".hydra").join("config.yaml").is_file(),
            "{task}"
        );
        let run_dir = line_value(&out, "run_dir").unwrap_or_else(|| panic!("{task}: {out}"));
        assert_eq!(
            std::fs::canonicalize(&run_dir).unwrap(),
            std::fs::canonicalize(&results).unwrap()
        );
        run_dirs.insert(run_dir);
        assert_eq!(line_value(&out, "wandb_group").as_deref(), Some("none"));
    }
    assert_eq!(run_dirs.len(), 8, "every task has its own Hydra run dir");
    assert!(
        !p.path().join("outputs").exists(),
        "nothing written to Hydra's default outputs/"
    );
    let command =
        std::fs::read_to_string(p.sweep_dir(&id).join("tasks/task_001/command.txt")).unwrap();
    assert!(command.contains("++output.dir="), "{command}");
    assert!(command.contains("hydra.run.dir="), "{command}");
    assert!(!command.contains("wandb"), "{command}");

    // Asking for the W&B group (--group) passes it as ++wandb.group: still accepted by an app
    // whose config has no wandb key.
    let run = p.run(&["sweep", "run", "--parallel", "4", "--group", "g1"]);
    run.expect_code(0);
    let id = sweep_id(&run);
    for k in 1..=8 {
        let out = stdout_of(&p, &id, &format!("task_{k:03}"));
        assert_eq!(
            line_value(&out, "wandb_group").as_deref(),
            Some("g1"),
            "{out}"
        );
    }
    // `complete --task-ids` launches the way `run` did: with the group.
    let run = p.run(&["sweep", "complete", &id, "--task-ids", "2"]);
    run.expect_code(0);
    let out = stdout_of(&p, &id, "task_002");
    assert_eq!(
        line_value(&out, "wandb_group").as_deref(),
        Some("g1"),
        "{out}"
    );
}

#[test]
fn a_v1_config_with_a_wandb_project_keeps_passing_the_group() {
    if !hydra_available() {
        println!("SKIPPED: hydra-core not installed for python3 (pip install hydra-core)");
        return;
    }
    let p = Project::new(
        "command:\n  python: python3\n  script: train.py\nwandb:\n  project: nca\n  entity: ''\n",
        &[
            ("train.py", HYDRA_APP),
            ("config.yaml", HYDRA_CONFIG),
            ("sweeps/sweep.yaml", "sweep:\n  grid:\n    seed: [1, 2]\n"),
        ],
    );
    let run = p.run(&["sweep", "run", "--sweep-id", "s1"]);
    run.expect_code(0);
    for k in 1..=2 {
        let out = stdout_of(&p, "s1", &format!("task_{k:03}"));
        assert_eq!(
            line_value(&out, "wandb_group").as_deref(),
            Some("s1"),
            "{out}"
        );
    }
}

#[test]
fn an_argparse_app_completes_every_task_and_reads_hsm_output_dir() {
    let app = r#"
import argparse, os
parser = argparse.ArgumentParser()
parser.add_argument("--seed", type=int, required=True)
parser.add_argument("--lr", type=float, required=True)
args = parser.parse_args()
out = os.environ["HSM_OUTPUT_DIR"]
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "result.txt"), "w") as f:
    f.write(f"{args.seed} {args.lr}\n")
"#;
    let p = Project::new(
        "command:\n  python: python3\n  script: train.py\n  style: argparse\n",
        &[("train.py", app), ("sweeps/sweep.yaml", SWEEP)],
    );
    let run = p.run(&["sweep", "run", "--parallel", "4"]);
    run.expect_code(0);
    let id = sweep_id(&run);
    for k in 1..=8 {
        let result = p
            .sweep_dir(&id)
            .join(format!("tasks/task_{k:03}/results/result.txt"));
        assert!(result.is_file(), "task {k}");
    }
}

#[test]
fn a_script_that_is_not_a_hydra_app_gets_no_plus_keys_and_no_wandb_by_default() {
    let p = Project::new(
        "command:\n  python: python3\n  script: train.py\n",
        &[
            ("train.py", "import sys\nprint(sys.argv)\n"),
            ("sweeps/sweep.yaml", "sweep:\n  grid:\n    seed: [1]\n"),
        ],
    );
    let run = p.run(&["sweep", "run", "--dry-run", "--json"]);
    run.expect_code(0);
    let tasks: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let argv: Vec<String> = serde_json::from_value(tasks[0]["argv"].clone()).unwrap();
    assert_eq!(argv[..3], ["python3", "train.py", "seed=1"]);
    assert!(argv[3].starts_with("output.dir="), "{argv:?}");
    assert_eq!(argv.len(), 4, "no wandb.group, no hydra.run.dir: {argv:?}");
    // `command.hydra: true` forces the Hydra form.
    p.write(
        ".hsm/config.yaml",
        "command:\n  python: python3\n  script: train.py\n  hydra: true\n  wandb_group: true\n",
    );
    let run = p.run(&["sweep", "run", "--dry-run", "--json", "--sweep-id", "s"]);
    run.expect_code(0);
    let tasks: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let argv: Vec<String> = serde_json::from_value(tasks[0]["argv"].clone()).unwrap();
    assert!(argv[3].starts_with("++output.dir="), "{argv:?}");
    assert!(argv[4].starts_with("hydra.run.dir="), "{argv:?}");
    assert_eq!(argv[5], "++wandb.group=s");
}

#[test]
fn init_sets_up_an_argparse_script_with_its_output_flag() {
    // A new project: the script takes --output_dir, as many argparse scripts do.
    let app = r#"
import argparse, os
parser = argparse.ArgumentParser()
parser.add_argument("--seed", type=int, required=True)
parser.add_argument("--output_dir", required=True)
args = parser.parse_args()
os.makedirs(args.output_dir, exist_ok=True)
with open(os.path.join(args.output_dir, "result.txt"), "w") as f:
    f.write(f"{args.seed}\n")
"#;
    let p = Project::new("", &[("train.py", app)]);
    std::fs::remove_file(p.path().join(".hsm/config.yaml")).unwrap();
    p.run(&["init"]).expect_code(0);
    let config = std::fs::read_to_string(p.path().join(".hsm/config.yaml")).unwrap();
    assert!(
        config.contains("style: argparse") && config.contains("\"--output_dir\", \"{output_dir}\""),
        "{config}"
    );
    p.write(
        "sweeps/sweep.yaml",
        "sweep:\n  grid:\n    seed: [1, 2, 3]\n",
    );
    let run = p.run(&["sweep", "run"]);
    run.expect_code(0);
    let id = sweep_id(&run);
    for k in 1..=3 {
        let result = p
            .sweep_dir(&id)
            .join(format!("tasks/task_{k:03}/results/result.txt"));
        assert_eq!(std::fs::read_to_string(&result).unwrap(), format!("{k}\n"));
    }
}
