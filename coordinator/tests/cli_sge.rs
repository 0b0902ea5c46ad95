//! Sweeps through a real Grid Engine: an `hsm-agent` with `backend: sge` on the single-node Son
//! of Grid Engine 8.1.9 that the test command starts (`tests/sge.sh`, 4 slots, a PE `smp`,
//! `HSM_TEST_SGE_ENV` exported). Without it (not root, or run outside the test command) every
//! test here skips with a reason.

mod common;

use common::hpc::*;
use common::*;
use std::path::Path;
use std::time::Duration;

/// Writes `results/r.txt` (`x=<x>`), prints a line, fails with 3 for x == 13 and sleeps for
/// `sleep` seconds when given.
const TASK_PY: &str = r#"
import os, sys, time
args = dict(a.split("=", 1) for a in sys.argv[1:])
x = int(args["x"])
time.sleep(float(args.get("sleep", "0")))
out = args["output.dir"]
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "r.txt"), "w") as f:
    f.write(f"x={x}\n")
print(f"task {x} ran as Grid Engine task {os.environ.get('SGE_TASK_ID')}", flush=True)
sys.exit(3 if x == 13 else 0)
"#;

type Cluster = HpcCluster;

/// An agent on this host with `backend`, in Grid Engine's environment `env` (source `grid`).
fn cluster(
    agent_bin: &Path,
    env: &[(String, String)],
    backend: &str,
    sweep: &str,
    extra_config: &str,
) -> Cluster {
    HpcCluster::new(
        agent_bin,
        "grid",
        backend,
        TASK_PY,
        sweep,
        extra_config,
        env,
    )
}

/// `qstat -xml` lines of jobs named for `sweep` (`hsm_<sweep>_…`), in Grid Engine's environment.
fn queued(env: &[(String, String)], sweep: &str) -> usize {
    let out = std::process::Command::new("qstat")
        .arg("-xml")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .matches(&format!("<JB_name>hsm_{sweep}_"))
        .count()
}

#[test]
fn a_sweep_runs_as_grid_engine_arrays_each_task_with_its_outcome_and_files() {
    let (Some(env), Some(agent_bin)) = (test_sge(), agent_bin()) else {
        return;
    };
    let c = cluster(
        &agent_bin,
        &env,
        "sge",
        "sweep:\n  grid:\n    x: {range: [10, 16]}\n",
        "hpc:\n  cpus: 2\n  mem: 1G\n",
    );
    c.run(&["sweep", "run", "--sources", "grid", "--sweep-id", "sge"])
        .expect_code(1);
    let status = c.project.status("sge");
    assert_eq!(
        (&status["completed"], &status["failed"]),
        (&5.into(), &1.into()),
        "{status}"
    );
    let jobs = c.jobs("sge");
    assert_eq!(jobs.len(), 1, "one array: {jobs:?}");
    let script = std::fs::read_to_string(jobs[0].join("job.sh")).unwrap();
    for line in [
        "#$ -t 1-6\n",
        "#$ -S /bin/bash\n",
        "#$ -pe smp 2\n",
        "#$ -l h_vmem=512M\n",
    ] {
        assert!(script.contains(line), "{line:?} in\n{script}");
    }
    for (i, task) in status["tasks"].as_array().unwrap().iter().enumerate() {
        let x = task["params"]["x"].as_u64().unwrap();
        // Grid Engine's task ids count from 1: `<job>.<task>`.
        let job_id = task["job_id"].as_str().unwrap_or_default();
        assert!(job_id.ends_with(&format!(".{}", i + 1)), "{task}");
        assert_eq!(task["attempt"], 1, "{task}");
        if x == 13 {
            assert_eq!(task["status"], "failed", "{task}");
            assert_eq!(task["exit_code"], 3, "{task}");
        } else {
            assert_eq!(task["status"], "completed", "{task}");
        }
        let result = c
            .project
            .sweep_dir("sge")
            .join(format!("tasks/task_{:03}/results/r.txt", i + 1));
        assert_eq!(
            std::fs::read_to_string(&result).unwrap_or_default(),
            format!("x={x}\n"),
            "{}",
            result.display()
        );
    }
    let logs = c.run(&["sweep", "logs", "sge", "task_002"]);
    assert!(
        logs.stdout.contains("task 11 ran as Grid Engine task 2"),
        "{}",
        logs.stdout
    );
}

#[test]
fn packed_tasks_run_several_per_grid_engine_task() {
    let (Some(env), Some(agent_bin)) = (test_sge(), agent_bin()) else {
        return;
    };
    let c = cluster(
        &agent_bin,
        &env,
        "sge",
        "sweep:\n  grid:\n    x: {range: [1, 8]}\n",
        "hpc:\n  tasks_per_job: 3\n",
    );
    c.run(&["sweep", "run", "--sources", "grid", "--sweep-id", "sgepack"])
        .expect_code(0);
    let status = c.project.status("sgepack");
    assert_eq!(status["completed"], 7, "{status}");
    let script = std::fs::read_to_string(c.jobs("sgepack")[0].join("job.sh")).unwrap();
    assert!(script.contains("#$ -t 1-3\n"), "{script}");
    assert!(script.contains("hsm_pack.sh"), "{script}");
    for (i, task) in status["tasks"].as_array().unwrap().iter().enumerate() {
        let job_id = task["job_id"].as_str().unwrap_or_default();
        assert!(job_id.ends_with(&format!(".{}", i / 3 + 1)), "{task}");
    }
}

#[test]
fn a_cancelled_grid_engine_sweep_leaves_nothing_queued() {
    let (Some(env), Some(agent_bin)) = (test_sge(), agent_bin()) else {
        return;
    };
    // More tasks than the queue's 4 slots: some run, the rest wait.
    let c = cluster(
        &agent_bin,
        &env,
        "sge",
        "sweep:\n  grid:\n    sleep: [120]\n    x: {range: [1, 9]}\n",
        "",
    );
    let child = c
        .command(&["sweep", "run", "--sources", "grid", "--sweep-id", "sgecnl"])
        .spawn()
        .unwrap();
    let db = c.project.sweep_dir("sgecnl").join("sweep.db");
    wait_until(
        Duration::from_secs(90),
        "tasks running on Grid Engine",
        || {
            db.exists()
                && c.project
                    .try_status("sgecnl")
                    .is_some_and(|s| s["running"].as_u64().unwrap_or(0) >= 2)
        },
    );
    c.run(&["sweep", "cancel", "sgecnl"]).expect_code(0);
    let run = Run::wait(child, "sweep run sgecnl, cancelled".into());
    assert_ne!(run.code, Some(0), "{}", run.stderr);
    let status = c.project.status("sgecnl");
    assert_eq!(status["cancelled"], 8, "{status}");
    // A hang guard: qdel'd tasks leave qstat within seconds.
    wait_until(
        Duration::from_secs(90),
        "the queue empty of the sweep",
        || queued(&env, "sgecnl") == 0,
    );
}

#[test]
fn a_task_over_its_walltime_on_grid_engine_ends_timed_out() {
    let (Some(env), Some(agent_bin)) = (test_sge(), agent_bin()) else {
        return;
    };
    // h_rt is a minute at least (hsm rounds walltimes up to minutes); Grid Engine kills the
    // job with SIGKILL, so its accounting (`failed 37`) says what happened.
    let c = cluster(
        &agent_bin,
        &env,
        "sge",
        "sweep:\n  grid:\n    sleep: [600]\n    x: [1]\n",
        "",
    );
    let child = c
        .command(&[
            "sweep",
            "run",
            "--sources",
            "grid",
            "--sweep-id",
            "sgewall",
            "--walltime",
            "1m",
        ])
        .spawn()
        .unwrap();
    let out = wait_with_timeout(child, Duration::from_secs(300), "sweep run over h_rt");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = c.project.status("sgewall");
    let task = &status["tasks"][0];
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["reason"], "timeout", "{task}");
    let script = std::fs::read_to_string(c.jobs("sgewall")[0].join("job.sh")).unwrap();
    assert!(script.contains("#$ -l h_rt=00:01:00"), "{script}");
}

#[test]
fn a_pbs_source_that_finds_grid_engine_s_qsub_says_so_before_any_task_and_submits_nothing() {
    let (Some(env), Some(agent_bin)) = (test_sge(), agent_bin()) else {
        return;
    };
    // The host's qsub/qstat are Grid Engine's (as on a machine with gridengine-client next to
    // Slurm's wrappers): a source configured for PBS must not hand them PBS job scripts.
    let c = cluster(
        &agent_bin,
        &env,
        "pbs",
        "sweep:\n  grid:\n    x: [1, 2]\n",
        "",
    );
    // The agent's pre-flight check finds it: `config validate --remote` and the run say so,
    // and no task goes there (none failed: they wait for a source that can run them).
    let said = |out: &str| {
        out.contains("pre-flight checks failed on grid")
            && out.contains("the `qsub`/`qstat` on this host are Grid Engine's")
            && out.contains("use `backend: sge` for this source")
            && out.contains("sources.grid.backend")
    };
    let check = c.run(&["config", "validate", "--remote"]);
    check.expect_code(2);
    assert!(said(&check.stdout), "{}", check.stdout);
    let run = c.run(&["sweep", "run", "--sources", "grid", "--sweep-id", "notpbs"]);
    run.expect_code(2);
    assert!(
        said(&format!("{}{}", run.stdout, run.stderr)),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("`hsm-coordinator sweep complete notpbs --sources grid` runs what is left"),
        "{}",
        run.stderr
    );
    let status = c.project.status("notpbs");
    assert_eq!(
        (&status["failed"], &status["pending"]),
        (&0.into(), &2.into()),
        "{status}"
    );
    assert!(c.jobs("notpbs").is_empty(), "a job script was submitted");
    assert_eq!(queued(&env, "notpbs"), 0);
}

#[test]
fn a_coordinator_on_the_login_node_submits_to_grid_engine_itself() {
    let Some(env) = test_sge() else {
        return;
    };
    // `type: sge`: no agent, this process runs qsub/qstat/qacct in Grid Engine's environment.
    let p = Project::new(
        "command:\n  python: python3\n  script: task.py\nsources:\n  here:\n    type: sge\n    hpc:\n      poll: 1s\n",
        &[
            ("task.py", TASK_PY),
            ("sweeps/sweep.yaml", "sweep:\n  grid:\n    x: {range: [11, 15]}\n"),
        ],
    );
    let mut cmd = p.command(&["sweep", "run", "--sources", "here", "--sweep-id", "inproc"]);
    cmd.envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let run = Run::wait(cmd.spawn().unwrap(), "sweep run (type: sge)".into());
    run.expect_code(1);
    let status = p.status("inproc");
    assert_eq!(
        (&status["completed"], &status["failed"]),
        (&3.into(), &1.into()),
        "{status}"
    );
    // One array; its script kept in the sweep directory.
    let scripts = p.sweep_dir("inproc").join("scripts/job_scripts");
    let jobs: Vec<_> = std::fs::read_dir(&scripts).unwrap().collect();
    assert_eq!(jobs.len(), 1, "{}", scripts.display());
    for (i, task) in status["tasks"].as_array().unwrap().iter().enumerate() {
        let x = task["params"]["x"].as_u64().unwrap();
        let job_id = task["job_id"].as_str().unwrap_or_default();
        assert!(job_id.ends_with(&format!(".{}", i + 1)), "{task}");
        if x == 13 {
            assert_eq!(task["exit_code"], 3, "{task}");
        }
        let dir = p
            .sweep_dir("inproc")
            .join(format!("tasks/task_{:03}", i + 1));
        assert_eq!(
            std::fs::read_to_string(dir.join("results/r.txt")).unwrap_or_default(),
            format!("x={x}\n")
        );
        let stdout = std::fs::read_to_string(dir.join("stdout.log")).unwrap_or_default();
        assert!(
            stdout.starts_with(&format!("task {x} ran as Grid Engine task {}", i + 1)),
            "{stdout:?}"
        );
    }
}
