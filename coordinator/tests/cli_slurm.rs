//! Sweeps through a real Slurm: an `hsm-agent` with the slurm (or pbs) backend on a single-node
//! Slurm that the test command starts (`tests/slurm.sh`, MaxArraySize 10, `SLURM_CONF` exported).
//! Without it (not root, or run outside the test command) every test here skips with a reason.

mod common;

use common::hpc::*;
use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Writes `results/r.txt` (`x=<x>`), prints a line, fails with 3 for x == 13, sleeps for
/// `sleep` seconds when given (600 more when x == `hang`), kills its wrapper (SIGKILL) when x == `kill_wrapper`, and appends
/// `x` to the file `runs` when given (one line per run, to count them).
const TASK_PY: &str = r#"
import os, sys, time
args = dict(a.split("=", 1) for a in sys.argv[1:])
x = int(args["x"])
if "runs" in args:
    with open(args["runs"], "a") as f:
        f.write(f"{x}\n")
time.sleep(float(args.get("sleep", "0")))
if x == int(args.get("hang", "0")):
    time.sleep(600)
out = args["output.dir"]
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "r.txt"), "w") as f:
    f.write(f"x={x}\n")
print(f"task {x} ran in job {os.environ.get('SLURM_JOB_ID')}", flush=True)
if x == int(args.get("kill_wrapper", "0")):
    # Takes the wrapper down with it: no exit record, only the scheduler knows.
    os.kill(os.getppid(), 9)
    time.sleep(5)
sys.exit(3 if x == 13 else 0)
"#;

type Cluster = HpcCluster;

/// An agent on this host with `backend` for the project (source `hpc1`), holding up to 100 tasks.
fn cluster(agent_bin: &Path, backend: &str, sweep: &str, extra_config: &str) -> Cluster {
    cluster_with_agent_env(agent_bin, backend, sweep, extra_config, &[])
}

/// `cluster`, the agent's environment extended by `env`.
fn cluster_with_agent_env(
    agent_bin: &Path,
    backend: &str,
    sweep: &str,
    extra_config: &str,
    env: &[(String, String)],
) -> Cluster {
    HpcCluster::new(
        agent_bin,
        "hpc1",
        backend,
        TASK_PY,
        sweep,
        extra_config,
        env,
    )
}

/// Every task of `status` names its Slurm array element (`<job>_<index>`), the tasks in order
/// filling arrays of `max_array` elements.
fn assert_slurm_job_ids(status: &serde_json::Value, max_array: usize) {
    let tasks = status["tasks"].as_array().unwrap();
    let mut arrays = std::collections::BTreeSet::new();
    for (i, task) in tasks.iter().enumerate() {
        let job_id = task["job_id"].as_str().unwrap_or_default();
        let (job, index) = job_id
            .split_once('_')
            .unwrap_or_else(|| panic!("no array element id: {task}"));
        assert_eq!(index, (i % max_array).to_string(), "{task}");
        arrays.insert(job.to_string());
    }
    assert_eq!(arrays.len(), tasks.len().div_ceil(max_array), "{arrays:?}");
}

/// A search path whose `qsub`/`qstat`/`qdel` are Debian's wrappers over the test Slurm
/// (slurm-wlm-torque): the copy `tests/slurm.sh` keeps next to its `slurm.conf` when Grid
/// Engine's client took `/usr/bin/qsub`, else the PATH when its qsub is the wrapper. `None`, with
/// the reason printed, when there is neither.
fn pbs_path() -> Option<String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let conf = std::env::var_os("SLURM_CONF").map(PathBuf::from)?;
    let copy = conf.parent()?.join("torque/usr/bin");
    if copy.join("qsub").is_file() {
        let dirs = std::iter::once(copy).chain(std::env::split_paths(&path));
        return Some(
            std::env::join_paths(dirs)
                .ok()?
                .to_string_lossy()
                .into_owned(),
        );
    }
    let qsub = std::env::split_paths(&path)
        .map(|d| d.join("qsub"))
        .find(|p| p.is_file());
    match qsub.and_then(|q| std::fs::read_to_string(q).ok()) {
        Some(text) if text.contains("Slurm") => Some(path.to_string_lossy().into_owned()),
        _ => {
            eprintln!("SKIPPED: no qsub wrappers over Slurm (slurm-wlm-torque) on PATH or next to SLURM_CONF");
            None
        }
    }
}

/// Lines `squeue` still shows (pending or running) for jobs of `sweep` (named `hsm_<sweep>_…`).
fn in_queue(sweep: &str) -> String {
    let out = std::process::Command::new("squeue")
        .args(["-h", "-o", "%i %T %j"])
        .output()
        .unwrap();
    let prefix = format!(" hsm_{sweep}_");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| line.contains(&prefix))
        .map(|line| format!("{line}\n"))
        .collect()
}

/// Waits until element `_<index>` of `sweep`'s array runs and its task `x` has started (written
/// its run to `runs`), then has Slurm requeue the element (what a preemption in REQUEUE mode or
/// a node failure does) and start it again at once: a requeued job otherwise waits out a
/// BeginTime, the test does not.
fn requeue_once_running(sweep: &str, index: usize, x: &str, runs: &Path) {
    let mut element = String::new();
    let running = format!("_{index} RUNNING");
    wait_until(Duration::from_secs(120), "the task running", || {
        let queue = in_queue(sweep);
        let ran = std::fs::read_to_string(runs).unwrap_or_default();
        match queue.lines().find(|l| l.contains(&running)) {
            Some(line) if ran.lines().any(|l| l == x) => {
                element = line.split_whitespace().next().unwrap().to_string();
                true
            }
            _ => false,
        }
    });
    let scontrol = |args: &[&str]| {
        let out = std::process::Command::new("scontrol")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "scontrol {args:?}: {out:?}");
    };
    scontrol(&["requeue", &element]);
    wait_until(Duration::from_secs(60), "the element pending again", || {
        in_queue(sweep).contains(&format!("{element} PENDING"))
    });
    std::thread::sleep(Duration::from_secs(2));
    scontrol(&["update", &format!("JobId={element}"), "StartTime=now"]);
}

#[test]
fn a_sweep_runs_as_job_arrays_chunked_to_max_array_size() {
    let (Some(_), Some(agent_bin)) = (test_slurm(), agent_bin()) else {
        return;
    };
    let c = cluster(
        &agent_bin,
        "slurm",
        "sweep:\n  grid:\n    x: {range: [1, 26]}\n",
        "",
    );
    // `agent ping` names what the source's tasks run under.
    let ping = c.run(&["agent", "ping", "hpc1"]);
    assert!(ping.stdout.contains("backend slurm,"), "{}", ping.stdout);
    let run = c.run(&["sweep", "run", "--sources", "hpc1", "--sweep-id", "arr"]);
    run.expect_code(1);
    let status = c.project.status("arr");
    assert_eq!(
        (status["completed"].as_u64(), status["failed"].as_u64()),
        (Some(24), Some(1)),
        "{status}"
    );
    let failed = &status["tasks"][12];
    assert_eq!(failed["exit_code"], 3, "{failed}");
    assert_slurm_job_ids(&status, 10);
    // MaxArraySize is 10 on the test cluster: 25 tasks are 3 arrays (10 + 10 + 5).
    let jobs = c.jobs("arr");
    assert_eq!(jobs.len(), 3, "{jobs:?}");
    let arrays: Vec<String> = jobs
        .iter()
        .map(|j| {
            std::fs::read_to_string(j.join("job.sh"))
                .unwrap()
                .lines()
                .find(|l| l.starts_with("#SBATCH --array="))
                .unwrap_or("none")
                .to_string()
        })
        .collect();
    assert_eq!(
        arrays,
        [
            "#SBATCH --array=0-9",
            "#SBATCH --array=0-9",
            "#SBATCH --array=0-4"
        ]
    );
    // The same scripts came back to the coordinator's sweep directory, named with their job id.
    let back = c.project.sweep_dir("arr").join("scripts/job_scripts/hpc1");
    let mut synced: Vec<(String, String)> = std::fs::read_dir(&back)
        .unwrap_or_else(|e| panic!("{}: {e}", back.display()))
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(e.path()).unwrap())
        })
        .collect();
    synced.sort();
    assert_eq!(synced.len(), 3, "{synced:?}");
    for (job, (name, text)) in jobs.iter().zip(&synced) {
        let chunk = job.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with(&format!("{chunk}-")) && name.ends_with(".sh"),
            "{name}"
        );
        assert_eq!(text, &std::fs::read_to_string(job.join("job.sh")).unwrap());
    }
    for x in 1..=25u64 {
        let dir = c
            .project
            .sweep_dir("arr")
            .join(format!("tasks/task_{x:03}"));
        assert_eq!(
            std::fs::read_to_string(dir.join("results/r.txt")).unwrap(),
            format!("x={x}\n"),
            "task {x}"
        );
        let stdout = std::fs::read_to_string(dir.join("stdout.log")).unwrap();
        assert!(
            stdout.starts_with(&format!("task {x} ran in job ")) && !stdout.contains("job None"),
            "task {x}: {stdout:?}"
        );
    }
    // The source's log names each task's array element.
    let log =
        std::fs::read_to_string(c.project.sweep_dir("arr").join("logs/sources/hpc1.log")).unwrap();
    for task in status["tasks"].as_array().unwrap() {
        let line = format!(
            " {} attempt 1 submitted as job {}\n",
            task["task"].as_str().unwrap(),
            task["job_id"].as_str().unwrap()
        );
        assert!(log.contains(&line), "no {line:?} in:\n{log}");
    }
}

#[test]
fn thirty_tasks_complete_with_their_files_and_complete_reruns_the_failed_one() {
    thirty_tasks("", "thirty");
}

/// The same in the compact layout: no per-task views on the coordinator, the same results.
#[test]
fn thirty_tasks_of_a_compact_sweep_complete_with_their_files() {
    thirty_tasks("layout: compact\n", "thirty-compact");
}

fn thirty_tasks(layout: &str, id: &str) {
    let (Some(_), Some(agent_bin)) = (test_slurm(), agent_bin()) else {
        return;
    };
    let c = cluster(
        &agent_bin,
        "slurm",
        &format!("{layout}sweep:\n  grid:\n    x: {{range: [1, 31]}}\n"),
        "",
    );
    c.run(&["sweep", "run", "--sources", "hpc1", "--sweep-id", id])
        .expect_code(1);
    // Task 13 fails by design; with the fix in place `complete` re-runs only it, on Slurm again.
    let fixed = TASK_PY.replace("3 if x == 13 else 0", "0");
    c.project.write("task.py", &fixed);
    c.run(&["sweep", "complete", id, "--sources", "hpc1"])
        .expect_code(0);
    let compact = !layout.is_empty();
    let views = count_named(&c.project.sweep_dir(id).join("tasks"), "status.yaml");
    assert_eq!(views, if compact { 0 } else { 30 }, "status.yaml files");
    let status = c.project.status(id);
    assert_eq!(status["completed"], 30, "{status}");
    for task in status["tasks"].as_array().unwrap() {
        let x = task["params"]["x"].as_u64().unwrap();
        assert_eq!(task["attempt"], if x == 13 { 2 } else { 1 }, "{task}");
        let r = c
            .project
            .sweep_dir(id)
            .join(format!("tasks/task_{x:03}/results/r.txt"));
        assert_eq!(std::fs::read_to_string(r).unwrap(), format!("x={x}\n"));
    }
    assert_measured(&c.project, id, 31);
}

/// Every attempt of `sweep` that ran has its wall time and CPU in `sweep.db` (the wrapper's
/// records measure them where the cluster keeps no accounting, as the test cluster does not),
/// and the per-source figures of `sweep status --json` count them.
fn assert_measured(project: &Project, sweep: &str, attempts: usize) {
    let db = rusqlite::Connection::open(project.sweep_dir(sweep).join("sweep.db")).unwrap();
    let rows: Vec<(i64, i64, Option<i64>, Option<i64>)> = db
        .prepare("SELECT idx, attempt, wall_ms, cpu_user_ms FROM attempts WHERE status IN ('completed', 'failed')")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), attempts, "{rows:?}");
    for row in &rows {
        assert!(row.2.is_some() && row.3.is_some(), "not measured: {row:?}");
    }
    // Python's start-up alone takes CPU: somebody measured more than nothing.
    assert!(rows.iter().any(|r| r.3 > Some(0)), "{rows:?}");
    let status = project.status(sweep);
    assert_eq!(status["sources"][0]["name"], "hpc1", "{status}");
    assert_eq!(status["sources"][0]["attempts"], attempts, "{status}");
    assert!(
        status["sources"][0]["median_duration_s"].is_number(),
        "{status}"
    );
}

#[test]
fn a_cancelled_sweep_leaves_nothing_in_the_queue() {
    let (Some(_), Some(agent_bin)) = (test_slurm(), agent_bin()) else {
        return;
    };
    let c = cluster(
        &agent_bin,
        "slurm",
        "sweep:\n  grid:\n    sleep: [120]\n    x: {range: [1, 21]}\n",
        "",
    );
    let child = c
        .command(&["sweep", "run", "--sources", "hpc1", "--sweep-id", "cnl"])
        .spawn()
        .unwrap();
    let db = c.project.sweep_dir("cnl").join("sweep.db");
    wait_until(Duration::from_secs(60), "tasks running on Slurm", || {
        db.exists()
            && c.project
                .try_status("cnl")
                .is_some_and(|s| s["running"].as_u64().unwrap_or(0) >= 2)
    });
    cancel_and_expect_nothing_queued(&c, child, "cnl", 20);
}

/// `sweep cancel` of the running `sweep`: its run stops, `n` tasks end cancelled, and no job of
/// the sweep stays in the queue.
fn cancel_and_expect_nothing_queued(c: &Cluster, run: std::process::Child, sweep: &str, n: u64) {
    c.run(&["sweep", "cancel", sweep]).expect_code(0);
    let run = Run::wait(run, format!("sweep run {sweep}, cancelled"));
    assert_ne!(run.code, Some(0), "{}", run.stderr);
    let status = c.project.status(sweep);
    assert_eq!(status["cancelled"], n, "{status}");
    // A hang guard: scancel'd jobs leave the queue within seconds, slower on a busy machine.
    wait_until(
        Duration::from_secs(90),
        "the queue empty of the sweep's jobs",
        || in_queue(sweep).trim().is_empty(),
    );
}

#[test]
fn packed_tasks_run_several_per_job_each_with_its_own_outcome_files_and_time_limit() {
    let (Some(_), Some(agent_bin)) = (test_slurm(), agent_bin()) else {
        return;
    };
    // 23 tasks, 5 per job: 5 jobs (the last with 3), at most 2 queued. x=13 fails, x=30
    // outlives its own 5 s limit; the tasks after them in their jobs still run.
    let c = cluster(
        &agent_bin,
        "slurm",
        "sweep:\n  grid:\n    hang: [30]\n    x: {range: [10, 33]}\n",
        "hpc:\n  tasks_per_job: 5\n  max_jobs: 2\n",
    );
    let run = c.run(&[
        "sweep",
        "run",
        "--sources",
        "hpc1",
        "--sweep-id",
        "packed",
        "--timeout",
        "5s",
    ]);
    run.expect_code(1);
    let status = c.project.status("packed");
    assert_eq!(
        (&status["completed"], &status["failed"]),
        (&21.into(), &2.into()),
        "{status}"
    );
    // `max_jobs: 2` counts jobs, not tasks: arrays of at most two elements, five in all.
    let jobs = c.jobs("packed");
    let sizes: Vec<usize> = jobs
        .iter()
        .map(|j| {
            let script = std::fs::read_to_string(j.join("job.sh")).unwrap();
            let line = script
                .lines()
                .find_map(|l| l.strip_prefix("#SBATCH --array=0-"))
                .unwrap_or_else(|| panic!("{script}"));
            line.parse::<usize>().unwrap() + 1
        })
        .collect();
    assert_eq!(sizes[0], 2, "the first array fills the cap: {sizes:?}");
    assert!(sizes.iter().all(|&n| n <= 2), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 5, "{sizes:?}");
    let script = std::fs::read_to_string(jobs[0].join("job.sh")).unwrap();
    // The job's wall time covers its five tasks' limits (5 s each, and 15 s to stop each) and
    // the slack: no more than that is asked of the scheduler.
    assert!(script.contains("#SBATCH --time=00:02:40\n"), "{script}");
    assert!(script.contains("hsm_pack.sh"), "{script}");
    let mut per_element: std::collections::BTreeMap<String, usize> = Default::default();
    for task in status["tasks"].as_array().unwrap() {
        let x: u64 = task["params"]["x"].as_u64().unwrap();
        let job_id = task["job_id"].as_str().unwrap_or_default().to_string();
        assert!(job_id.contains('_'), "an array element: {task}");
        *per_element.entry(job_id).or_default() += 1;
        assert_eq!(task["attempt"], 1, "{task}");
        // Its start and end are the wrapper's stamps, not when a poll noticed them (several
        // tasks of a job run between two polls): its duration is what it ran, to the
        // millisecond (a 0.1 s task seen start and end at one poll would show about 0).
        let at = |key: &str| time_of_day_s(task[key].as_str().unwrap_or_default());
        let duration = (at("finished") - at("started")).rem_euclid(86_400.0);
        let wall = task["usage"]["wall_s"].as_f64().unwrap_or(-9.0);
        assert!(
            (duration - wall).abs() < 0.01,
            "finished - started against wall_s: {task}"
        );
        match x {
            13 => assert_eq!(task["status"], "failed", "{task}"),
            30 => {
                assert_eq!(task["status"], "failed", "{task}");
                assert_eq!(task["reason"], "timeout", "{task}");
            }
            _ => {
                assert_eq!(task["status"], "completed", "{task}");
                let result = c.project.sweep_dir("packed").join(format!(
                    "tasks/{}/results/r.txt",
                    task["task"].as_str().unwrap()
                ));
                assert_eq!(
                    std::fs::read_to_string(&result).unwrap_or_default(),
                    format!("x={x}\n"),
                    "{}",
                    result.display()
                );
            }
        }
    }
    // Five jobs: four of five tasks and the last of three.
    let mut counts: Vec<usize> = per_element.values().copied().collect();
    counts.sort_unstable();
    assert_eq!(counts, [3, 5, 5, 5, 5], "{per_element:?}");
}

/// Seconds into the day of a `2026-12-07T12:05:41.350Z` stamp (NaN when it is not one).
fn time_of_day_s(stamp: &str) -> f64 {
    let time = stamp
        .split_once('T')
        .map_or("", |(_, t)| t.trim_end_matches('Z'));
    let parts: Vec<f64> = time
        .split(':')
        .map(|p| p.parse().unwrap_or(f64::NAN))
        .collect();
    match parts[..] {
        [h, m, s] => h * 3600.0 + m * 60.0 + s,
        _ => f64::NAN,
    }
}

#[test]
fn a_requeued_packed_job_runs_again_only_the_task_it_stopped_and_those_not_yet_run() {
    let (Some(_), Some(agent_bin)) = (test_slurm(), agent_bin()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    // One job of three tasks, 4 s each, one after another.
    let c = cluster(
        &agent_bin,
        "slurm",
        &format!(
            "sweep:\n  grid:\n    runs: ['{}']\n    sleep: [4]\n    x: [1, 2, 3]\n",
            runs.display()
        ),
        "hpc:\n  tasks_per_job: 3\n",
    );
    let child = c
        .command(&["sweep", "run", "--sources", "hpc1", "--sweep-id", "prq"])
        .spawn()
        .unwrap();
    // Task 1 done, task 2 running in the same element.
    requeue_once_running("prq", 0, "2", &runs);
    let run = Run::wait(child, "sweep run (packed, requeued)".into());
    run.expect_code(0);
    let status = c.project.status("prq");
    assert_eq!(status["completed"], 3, "{status}");
    for task in status["tasks"].as_array().unwrap() {
        assert_eq!(task["attempt"], 1, "the requeue used no retry: {task}");
    }
    assert_eq!(
        runs_sorted(&runs),
        ["1", "2", "2", "3"],
        "the finished task ran once, the stopped one twice, the waiting one once"
    );
    let stderr = |task: &str| c.run(&["sweep", "logs", "prq", task, "--stderr"]).stdout;
    assert!(
        stderr("task_002").contains("Slurm requeued its job (restart 1)"),
        "{}",
        stderr("task_002")
    );
    assert!(
        !stderr("task_003").contains("requeued"),
        "task 3's first run: {}",
        stderr("task_003")
    );
}

#[test]
fn a_cancelled_packed_sweep_cancels_every_task_and_leaves_nothing_in_the_queue() {
    let (Some(_), Some(agent_bin)) = (test_slurm(), agent_bin()) else {
        return;
    };
    let c = cluster(
        &agent_bin,
        "slurm",
        "sweep:\n  grid:\n    sleep: [120]\n    x: {range: [1, 21]}\n",
        "hpc:\n  tasks_per_job: 4\n",
    );
    let child = c
        .command(&["sweep", "run", "--sources", "hpc1", "--sweep-id", "pcnl"])
        .spawn()
        .unwrap();
    let db = c.project.sweep_dir("pcnl").join("sweep.db");
    // One task of each of the 5 jobs runs; the other 15 wait for their turn.
    wait_until(
        Duration::from_secs(60),
        "packed tasks running on Slurm",
        || {
            db.exists()
                && c.project
                    .try_status("pcnl")
                    .is_some_and(|s| s["running"].as_u64().unwrap_or(0) >= 2)
        },
    );
    let status = c.project.status("pcnl");
    assert!(
        status["running"].as_u64().unwrap() <= 5,
        "a task waiting for its turn counted as running: {status}"
    );
    cancel_and_expect_nothing_queued(&c, child, "pcnl", 20);
}

#[test]
fn a_task_over_its_walltime_ends_failed_with_reason_timeout() {
    let (Some(_), Some(agent_bin)) = (test_slurm(), agent_bin()) else {
        return;
    };
    // Slurm enforces walltime with minute granularity and about a minute late: ~2 minutes.
    let c = cluster(
        &agent_bin,
        "slurm",
        "sweep:\n  grid:\n    sleep: [600]\n    x: [1]\n",
        "",
    );
    let child = c
        .command(&[
            "sweep",
            "run",
            "--sources",
            "hpc1",
            "--sweep-id",
            "wall",
            "--walltime",
            "1m",
        ])
        .spawn()
        .unwrap();
    let out = wait_with_timeout(child, Duration::from_secs(300), "sweep run over walltime");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = c.project.status("wall");
    let task = &status["tasks"][0];
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["reason"], "timeout", "{task}");
    let script = std::fs::read_to_string(c.jobs("wall")[0].join("job.sh")).unwrap();
    assert!(script.contains("#SBATCH --time=00:01:00"), "{script}");
}

#[test]
fn a_task_over_its_timeout_is_stopped_by_the_wrapper_and_the_job_asks_only_for_that_time() {
    let (Some(_), Some(agent_bin)) = (test_slurm(), agent_bin()) else {
        return;
    };
    // `--timeout 3s` with the default 4 h walltime: the task is stopped at 3 s (not after
    // hours), ends `timeout`, and its job asks Slurm for the timeout and a little more.
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let c = cluster(
        &agent_bin,
        "slurm",
        &format!(
            "sweep:\n  grid:\n    runs: ['{}']\n    sleep: [120]\n    x: [1, 2]\n",
            runs.display()
        ),
        "hpc:\n  walltime: 4h\n",
    );
    let started = std::time::Instant::now();
    let run = c.run(&[
        "sweep",
        "run",
        "--sources",
        "hpc1",
        "--sweep-id",
        "tmo",
        "--timeout",
        "3s",
    ]);
    run.expect_code(1);
    assert!(
        started.elapsed() < Duration::from_secs(100),
        "the tasks ran their 120 s: {:?}",
        started.elapsed()
    );
    let status = c.project.status("tmo");
    for task in status["tasks"].as_array().unwrap() {
        assert_eq!(task["status"], "failed", "{task}");
        assert_eq!(task["reason"], "timeout", "{task}");
    }
    assert_eq!(runs_sorted(&runs), ["1", "2"], "each ran once");
    let script = std::fs::read_to_string(c.jobs("tmo")[0].join("job.sh")).unwrap();
    // 3 s, 15 s to stop the task, 60 s for the job: 78 s, which Slurm takes in minutes.
    assert!(
        script.contains("#SBATCH --time=00:01:18") || script.contains("#SBATCH --time=00:02:00"),
        "{script}"
    );
    // A hang guard: the stopped jobs leave the queue within seconds.
    wait_until(
        Duration::from_secs(60),
        "the jobs gone from the queue",
        || in_queue("tmo").trim().is_empty(),
    );
}

#[test]
fn a_task_that_leaves_no_exit_record_ends_as_the_scheduler_recorded_it() {
    let (Some(_), Some(agent_bin)) = (test_slurm(), agent_bin()) else {
        return;
    };
    // Task 2 SIGKILLs the wrapper, so no exit record is written; Slurm records FAILED 0:9.
    // This cluster keeps no accounting, so `scontrol show job` is where that is read.
    let c = cluster(
        &agent_bin,
        "slurm",
        "sweep:\n  grid:\n    x: [1, 2, 3]\n    kill_wrapper: [2]\n",
        "",
    );
    c.run(&["sweep", "run", "--sources", "hpc1", "--sweep-id", "norec"])
        .expect_code(1);
    let status = c.project.status("norec");
    assert_eq!(status["completed"], 2, "{status}");
    let task = &status["tasks"][1];
    assert_eq!(
        (&task["status"], &task["reason"]),
        (&"failed".into(), &"killed by signal 9".into()),
        "{task}"
    );
    // It ran: reported started, its output and files collected like any other task's.
    let dir = c.project.sweep_dir("norec").join("tasks/task_002");
    let stdout = std::fs::read_to_string(dir.join("stdout.log")).unwrap();
    assert!(stdout.starts_with("task 2 ran in job "), "{stdout:?}");
    assert_eq!(
        std::fs::read_to_string(dir.join("results/r.txt")).unwrap(),
        "x=2\n"
    );
    let agent_dir = c.agent.work_dir().join("norec/tasks/task_002");
    assert!(agent_dir.join("hsm_start").exists());
    assert!(
        !agent_dir.join("hsm_exit").exists(),
        "the wrapper wrote no record"
    );
}

/// Array elements of `sweep`'s jobs Slurm holds now (pending or running; `-r`: one line each),
/// on the cluster of `conf` (default: the test Slurm).
fn queued_elements(sweep: &str, conf: Option<&Path>) -> usize {
    let mut squeue = std::process::Command::new("squeue");
    if let Some(conf) = conf {
        squeue.env("SLURM_CONF", conf);
    }
    let out = squeue.args(["-h", "-r", "-o", "%j"]).output().unwrap();
    let prefix = format!("hsm_{sweep}_");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|name| name.starts_with(&prefix))
        .count()
}

/// Runs `sweep run` of `sweep` to its end while watching the queue (of the cluster of `conf`):
/// the run, and the most elements of the sweep Slurm held at once.
fn run_watching_the_queue(c: &Cluster, sweep: &str, conf: Option<&Path>) -> (Run, usize) {
    let child = c
        .command(&["sweep", "run", "--sources", "hpc1", "--sweep-id", sweep])
        .spawn()
        .unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (done, sweep) = (std::sync::Arc::clone(&done), sweep.to_string());
        let conf = conf.map(Path::to_path_buf);
        std::thread::spawn(move || {
            let mut most = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                most = most.max(queued_elements(&sweep, conf.as_deref()));
                std::thread::sleep(Duration::from_millis(100));
            }
            most
        })
    };
    let run = Run::wait(child, format!("sweep run {sweep}"));
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    (run, watcher.join().unwrap())
}

#[test]
fn hpc_max_jobs_keeps_the_queue_under_it_and_every_task_runs() {
    let (Some(_), Some(agent_bin)) = (test_slurm(), agent_bin()) else {
        return;
    };
    // 40 tasks, arrays of up to 10 (the test cluster's MaxArraySize), at most 8 in the queue.
    let c = cluster(
        &agent_bin,
        "slurm",
        "sweep:\n  grid:\n    sleep: [1]\n    x: {range: [14, 54]}\n",
        "hpc:\n  max_jobs: 8\n",
    );
    let (run, most) = run_watching_the_queue(&c, "capped", None);
    run.expect_code(0);
    let status = c.project.status("capped");
    assert_eq!(
        (&status["completed"], &status["failed"]),
        (&40.into(), &0.into()),
        "{status}"
    );
    assert!(most <= 8, "{most} elements in the queue at once");
    assert!(most >= 2, "the queue was watched: {most}");
    // The first job took 8 elements, not the 10 an array may hold.
    let first = std::fs::read_to_string(c.jobs("capped")[0].join("job.sh")).unwrap();
    assert!(first.contains("#SBATCH --array=0-7\n"), "{first}");
}

/// `n` tasks on the test Slurm with accounting, whose QOS lets a user have 8 jobs queued or
/// running: every task completes on its first attempt, and never more than 8 elements wait.
/// `sacctmgr`: whether the agent may read the limit there (if not, the refusals teach it).
fn tasks_under_a_real_qos_limit(
    agent_bin: &Path,
    conf: &Path,
    sweep: &str,
    n: u64,
    sacctmgr: bool,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut env = vec![("SLURM_CONF".to_string(), conf.display().to_string())];
    if !sacctmgr {
        // A shim that fails as a sacctmgr without access to slurmdbd would.
        let path = shim_on_path(dir.path(), "sacctmgr", |_| {
            "# test shim: sacctmgr cannot reach slurmdbd\necho 'sacctmgr: error: Problem talking to the database: Connection refused' >&2\nexit 1\n".into()
        });
        env.push(("PATH".into(), path));
    }
    let c = cluster_with_agent_env(
        agent_bin,
        "slurm",
        &format!(
            "sweep:\n  grid:\n    sleep: [1]\n    x: {{range: [14, {}]}}\n",
            14 + n
        ),
        "",
        &env,
    );
    // slurmctld logs each refusal for a limit (`_job_create: exceeded association/QOS limit`).
    let ctld_log = conf
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("log/slurmctld.log");
    let refusals = || {
        std::fs::read_to_string(&ctld_log)
            .unwrap_or_default()
            .matches("exceeded association/QOS limit")
            .count()
    };
    let refused_before = refusals();
    let (run, most) = run_watching_the_queue(&c, sweep, Some(conf));
    run.expect_code(0);
    let refused = refusals() - refused_before;
    if sacctmgr {
        assert_eq!(refused, 0, "the limit read from sacctmgr was not kept to");
        // Why only 8 run is said once, at the coordinator.
        let said: Vec<&str> = run
            .stderr
            .lines()
            .filter(|l| l.contains("the cluster lets this user have 8 jobs queued or running"))
            .collect();
        assert_eq!(said.len(), 1, "{}", run.stderr);
        assert!(said[0].contains("hpc1"), "{}", said[0]);
    } else {
        assert!(refused > 0, "the limit was never met");
        // The user hears of it once, at the coordinator, naming the limit and the source.
        let said: Vec<&str> = run
            .stderr
            .lines()
            .filter(|l| l.contains("refused") && l.contains("for the cluster's limit"))
            .collect();
        assert_eq!(said.len(), 1, "{}", run.stderr);
        assert!(
            said[0].contains("QOSMaxSubmitJobPerUserLimit") && said[0].contains("hpc1"),
            "{}",
            said[0]
        );
    }
    let status = c.project.status(sweep);
    assert_eq!(
        (&status["completed"], &status["failed"]),
        (&n.into(), &0.into()),
        "{status}"
    );
    for task in status["tasks"].as_array().unwrap() {
        assert_eq!(task["attempt"], 1, "a limit used a retry: {task}");
        // The cluster keeps accounting: Slurm's own record of each job is kept with the task.
        assert_eq!(task["usage"]["scheduler"], "COMPLETED 0:0", "{task}");
    }
    assert!(most <= 8, "{most} elements in the queue at once");
    assert!(most >= 2, "the queue was watched: {most}");
}

/// Taken by each test on the test Slurm with accounting: its limit is the user's, and a
/// preemption there may cancel any job of the preemptible QOS, so they run one at a time.
static QOS_CLUSTER: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn under_a_real_qos_submit_limit_tasks_wait_for_room_and_none_fails() {
    let (Some(conf), Some(agent_bin)) = (test_slurm_qos(), agent_bin()) else {
        return;
    };
    let _alone = QOS_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    // One after the other: the limit is the user's, so two sweeps at once would share it.
    // First 40 tasks with the agent reading the limit from sacctmgr; then 16 (each wave waits
    // for sacct's usage figures) with sacctmgr failing, so the refusals teach it.
    tasks_under_a_real_qos_limit(&agent_bin, &conf, "qosread", 40, true);
    tasks_under_a_real_qos_limit(&agent_bin, &conf, "qosrefused", 16, false);
}

/// Lines `squeue` shows for jobs of `sweep` on the cluster of `conf`: `<id> <state>`.
fn queue_of(sweep: &str, conf: &Path) -> String {
    let out = std::process::Command::new("squeue")
        .args(["-h", "-t", "all", "-o", "%i %T %j"])
        .env("SLURM_CONF", conf)
        .output()
        .unwrap();
    let prefix = format!(" hsm_{sweep}_");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| line.contains(&prefix))
        .map(|line| format!("{line}\n"))
        .collect()
}

/// A sweep of tasks 1..=n (4 s each, `extra_config` on top of QOS scavenger) on the test Slurm
/// with accounting; once task `running` runs, a job of QOS urgent asking for the whole node
/// preempts the sweep's jobs (PreemptMode CANCEL: they end PREEMPTED). Returns the cluster, the
/// sorted runs of each task, and the finished run.
fn preempted_while_running(
    agent_bin: &Path,
    conf: &Path,
    sweep: &str,
    n: u32,
    running: u32,
    extra_config: &str,
) -> (Cluster, Vec<String>, Run) {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let xs: Vec<String> = (1..=n).map(|x| x.to_string()).collect();
    let c = cluster_with_agent_env(
        agent_bin,
        "slurm",
        &format!(
            "sweep:\n  grid:\n    runs: ['{}']\n    sleep: [4]\n    x: [{}]\n",
            runs.display(),
            xs.join(", ")
        ),
        &format!("hpc:\n  qos: scavenger\n{extra_config}"),
        &[("SLURM_CONF".to_string(), conf.display().to_string())],
    );
    let child = c
        .command(&["sweep", "run", "--sources", "hpc1", "--sweep-id", sweep])
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(120), "the task running", || {
        let ran = std::fs::read_to_string(&runs).unwrap_or_default();
        ran.lines().any(|l| l == running.to_string()) && queue_of(sweep, conf).contains(" RUNNING ")
    });
    let out = std::process::Command::new("sbatch")
        .args([
            "--qos=urgent",
            "--exclusive",
            "--job-name=preemptor",
            "--output=/dev/null",
            "--wrap",
            "sleep 1",
        ])
        .env("SLURM_CONF", conf)
        .output()
        .unwrap();
    assert!(out.status.success(), "sbatch the preemptor: {out:?}");
    wait_until(
        Duration::from_secs(60),
        "the sweep's jobs preempted",
        || queue_of(sweep, conf).contains(" PREEMPTED "),
    );
    let run = Run::wait(child, format!("sweep run {sweep} (preempted)"));
    let mut ran: Vec<String> = std::fs::read_to_string(&runs)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    ran.sort();
    (c, ran, run)
}

#[test]
fn a_preempted_task_runs_again_in_a_new_job_without_using_a_retry() {
    let (Some(conf), Some(agent_bin)) = (test_slurm_qos(), agent_bin()) else {
        return;
    };
    let _alone = QOS_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let (c, ran, run) = preempted_while_running(&agent_bin, &conf, "preempt", 2, 2, "");
    run.expect_code(0);
    let status = c.project.status("preempt");
    assert_eq!(status["completed"], 2, "{status}");
    for task in status["tasks"].as_array().unwrap() {
        assert_eq!(task["attempt"], 1, "the preemption used no retry: {task}");
    }
    assert_eq!(ran, ["1", "1", "2", "2"], "each ran again");
    assert!(
        c.jobs("preempt").len() >= 2,
        "a new job: {:?}",
        c.jobs("preempt")
    );
    let logs = c.run(&["sweep", "logs", "preempt", "task_001", "--stderr"]);
    assert!(
        logs.stdout
            .contains("running the task again: Slurm preempted its job (restart 1)"),
        "{}",
        logs.stdout
    );
}

#[test]
fn a_preempted_packed_job_runs_again_only_its_unfinished_tasks() {
    let (Some(conf), Some(agent_bin)) = (test_slurm_qos(), agent_bin()) else {
        return;
    };
    let _alone = QOS_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    // One job of three tasks; preempted while the second runs.
    let (c, ran, run) =
        preempted_while_running(&agent_bin, &conf, "ppre", 3, 2, "  tasks_per_job: 3\n");
    run.expect_code(0);
    let status = c.project.status("ppre");
    assert_eq!(status["completed"], 3, "{status}");
    for task in status["tasks"].as_array().unwrap() {
        assert_eq!(task["attempt"], 1, "the preemption used no retry: {task}");
    }
    assert_eq!(
        ran,
        ["1", "2", "2", "3"],
        "the finished task once, the stopped one twice, the waiting one once"
    );
}

#[test]
fn an_element_slurm_requeues_runs_again_in_the_same_attempt_and_says_why() {
    let (Some(_), Some(agent_bin)) = (test_slurm(), agent_bin()) else {
        return;
    };
    // `scontrol requeue` of a running element (what a preemption in REQUEUE mode or a node
    // failure does): Slurm stops it and runs the same job again. Not a failure, not done, no
    // retry used.
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let c = cluster(
        &agent_bin,
        "slurm",
        &format!(
            "sweep:\n  grid:\n    runs: ['{}']\n    sleep: [6]\n    x: [1, 2, 3]\n",
            runs.display()
        ),
        "",
    );
    let child = c
        .command(&["sweep", "run", "--sources", "hpc1", "--sweep-id", "requeue"])
        .spawn()
        .unwrap();
    // Task 2 (element 1 of the array) running, and its task started (it wrote its run).
    requeue_once_running("requeue", 1, "2", &runs);
    let run = Run::wait(child, "sweep run (requeued)".into());
    run.expect_code(0);
    let status = c.project.status("requeue");
    assert_eq!(status["completed"], 3, "{status}");
    let task = &status["tasks"][1];
    assert_eq!(task["attempt"], 1, "the requeue used no retry: {task}");
    assert_eq!(
        runs_sorted(&runs),
        ["1", "2", "2", "3"],
        "task 2 ran twice, the others once"
    );
    // Why it ran twice is in its log, as the user reads it.
    let logs = c.run(&["sweep", "logs", "requeue", "task_002", "--stderr"]);
    assert!(
        logs.stdout.contains("Slurm requeued its job (restart 1)"),
        "{}",
        logs.stdout
    );
}

#[test]
fn an_agent_killed_while_sbatch_runs_follows_that_job_after_a_restart_instead_of_running_it_again()
{
    if let (Some(_), Some(agent_bin)) = (test_slurm(), agent_bin()) {
        killed_while_submitting(&agent_bin, "slurm", "sbatch", "", Kill::After);
    }
}

#[test]
fn an_agent_killed_while_a_slow_sbatch_runs_waits_for_it_and_follows_its_job() {
    if let (Some(_), Some(agent_bin)) = (test_slurm(), agent_bin()) {
        killed_while_submitting(&agent_bin, "slurm", "sbatch", "", Kill::DuringSlow);
    }
}

#[test]
fn an_agent_killed_before_sbatch_ran_finds_no_job_and_its_tasks_run_once() {
    if let (Some(_), Some(agent_bin)) = (test_slurm(), agent_bin()) {
        killed_while_submitting(&agent_bin, "slurm", "sbatch", "", Kill::Before);
    }
}

#[test]
fn an_agent_killed_while_qsub_runs_follows_that_job_after_a_restart_instead_of_running_it_again() {
    if let (Some(_), Some(agent_bin)) = (test_slurm(), agent_bin()) {
        // PBS servers do not tell their array limit; the one under this qsub is Slurm's.
        killed_while_submitting(
            &agent_bin,
            "pbs",
            "qsub",
            "hpc:\n  max_array_size: 10\n",
            Kill::After,
        );
    }
}

#[test]
fn a_scheduler_command_that_keeps_failing_is_told_to_the_user_and_the_sweep_goes_on_once_fixed() {
    let (Some(_), Some(agent_bin)) = (test_slurm(), agent_bin()) else {
        return;
    };
    // `squeue` broken on the agent's host, as a half-installed client or a controller that is
    // down leave it: the tasks' jobs cannot be followed. The user hears why instead of watching
    // "queued" forever; once it works again the sweep finishes, nothing lost or run twice.
    let dir = tempfile::tempdir().unwrap();
    let fixed = dir.path().join("fixed");
    let path = shim_on_path(dir.path(), "squeue", |real| {
        format!(
            "[ -e '{}' ] && exec '{real}' \"$@\"\necho 'squeue: error: slurm_load_jobs error: Unable to contact slurm controller (connect failure)' >&2\nexit 1\n",
            fixed.display()
        )
    });
    let c = cluster_with_agent_env(
        &agent_bin,
        "slurm",
        "sweep:\n  grid:\n    x: [1, 2]\n",
        "",
        &[("PATH".to_string(), path)],
    );
    let mut child = c
        .command(&["sweep", "run", "--sources", "hpc1", "--sweep-id", "blind"])
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let said = "hpc1: `squeue` fails: squeue: error: slurm_load_jobs error: Unable to contact slurm controller (connect failure) (3 polls in a row on the agent's host)";
    wait_until(Duration::from_secs(120), "the failing squeue told", || {
        seen.extend(lines_rx.try_iter());
        seen.iter().any(|l| l.contains(said))
    });
    std::fs::write(&fixed, "").unwrap();
    let run = Run::wait(child, "sweep run (squeue fixed)".into());
    seen.extend(lines_rx.recv_timeout(Duration::from_secs(5)));
    seen.extend(lines_rx.try_iter());
    assert_eq!(run.code, Some(0), "its stderr: {seen:#?}");
    let status = c.project.status("blind");
    assert_eq!(status["completed"], 2, "{status}");
    for task in status["tasks"].as_array().unwrap() {
        assert_eq!(task["attempt"], 1, "{task}");
    }
    let told = seen.iter().filter(|l| l.contains("`squeue` fails")).count();
    assert_eq!(told, 1, "said once: {seen:#?}");
}

/// A PATH for the agent with a shell script in front of the real `command`: `body(real)` after
/// `#!/bin/sh`, given the real command's path. The script lives in `dir`.
fn shim_on_path(dir: &Path, command: &str, body: impl Fn(&str) -> String) -> String {
    shim_on(
        &std::env::var_os("PATH").unwrap_or_default(),
        dir,
        command,
        body,
    )
}

/// `shim_on_path` over the search path `path`.
fn shim_on(
    path: &std::ffi::OsStr,
    dir: &Path,
    command: &str,
    body: impl Fn(&str) -> String,
) -> String {
    let real = std::env::split_paths(path)
        .map(|d| d.join(command))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{command} on PATH"));
    let shims = dir.join("bin");
    std::fs::create_dir_all(&shims).unwrap();
    let shim = shims.join(command);
    let text = format!("#!/bin/sh\n{}", body(&real.to_string_lossy()));
    std::fs::write(&shim, text).unwrap();
    std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::env::join_paths(std::iter::once(shims).chain(std::env::split_paths(path)))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn a_cancel_while_sbatch_runs_reaches_the_job_it_creates() {
    let (Some(_), Some(agent_bin)) = (test_slurm(), agent_bin()) else {
        return;
    };
    // The cancel arrives while sbatch is still submitting (a slow controller, here a shim that
    // waits 3 s first): the job does not exist yet, and nothing of it may run.
    let dir = tempfile::tempdir().unwrap();
    let (busy, runs) = (dir.path().join("busy"), dir.path().join("runs"));
    let path = shim_on_path(dir.path(), "sbatch", |real| {
        format!(
            "# test shim: a slow sbatch (3 s) that says when it started\ncase \"$*\" in *--version*) ;; *) : >'{}'; sleep 3 ;; esac\nexec '{real}' \"$@\"\n",
            busy.display()
        )
    });
    let c = cluster_with_agent_env(
        &agent_bin,
        "slurm",
        &format!(
            "sweep:\n  grid:\n    runs: ['{}']\n    sleep: [5]\n    x: {{range: [1, 6]}}\n",
            runs.display()
        ),
        "",
        &[("PATH".into(), path)],
    );
    let child = c
        .command(&["sweep", "run", "--sources", "hpc1", "--sweep-id", "slowcnl"])
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(60), "sbatch submitting", || {
        busy.exists()
    });
    cancel_and_expect_nothing_queued(&c, child, "slowcnl", 5);
    // Long enough for a job that escaped the cancel to have started its 5 s tasks.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !runs.exists(),
        "a cancelled task ran: {:?}",
        std::fs::read_to_string(&runs)
    );
}

/// When the agent is killed, around its first submission (`sbatch`/`qsub`).
#[derive(Clone, Copy, PartialEq, Debug)]
enum Kill {
    /// After the scheduler accepted the array, before the agent read its job id: the one moment
    /// a restarted agent cannot know the job from its own records.
    After,
    /// Just before the command ran: the ledger names a submission that never happened.
    Before,
    /// While a slow submit command runs, which creates the job only after the agent restarted.
    DuringSlow,
}

/// A shim in front of the real `submit` command (on the agent's PATH only) kills the agent once,
/// at `kill`; an accepted job still runs, so an agent that ran those tasks again would run them
/// twice. 12 tasks: the killed submission holds the first 10 (MaxArraySize), the other 2 were
/// never submitted.
fn killed_while_submitting(
    agent_bin: &Path,
    backend: &str,
    submit: &str,
    extra_config: &str,
    kill: Kill,
) {
    let accepted = kill != Kill::Before;
    let dir = tempfile::tempdir().unwrap();
    let (fired, runs) = (dir.path().join("fired"), dir.path().join("runs"));
    let fire = format!(
        "case \"$*\" in *--version*) ;; *) if [ ! -e '{0}' ]; then : >'{0}'; kill -9 \"$PPID\"; {1}fi ;; esac",
        fired.display(),
        match kill {
            Kill::After => "",
            Kill::Before => "exit 1; ",
            Kill::DuringSlow => "sleep 4; ",
        }
    );
    // PBS: the qsub/qstat wrappers over the test Slurm (not Grid Engine's, when installed).
    let base = if backend == "pbs" {
        let Some(path) = pbs_path() else {
            return;
        };
        std::ffi::OsString::from(path)
    } else {
        std::env::var_os("PATH").unwrap_or_default()
    };
    let path = shim_on(&base, dir.path(), submit, |real| {
        if kill == Kill::After {
            format!("# test shim: the real {submit}, its first submission followed (once) by kill -9 of the agent that ran it\nout=$('{real}' \"$@\")\nrc=$?\n{fire}\nprintf '%s\\n' \"$out\"\nexit $rc\n")
        } else {
            format!("# test shim: kill -9 of the agent before its first submission (once), then (slow: 4 s later) or else the real {submit}\n{fire}\nexec '{real}' \"$@\"\n")
        }
    });
    let sweep = format!(
        "sub{backend}{}",
        match kill {
            Kill::After => "",
            Kill::Before => "before",
            Kill::DuringSlow => "slow",
        }
    );
    let mut c = cluster_with_agent_env(
        agent_bin,
        backend,
        &format!(
            "sweep:\n  grid:\n    runs: ['{}']\n    sleep: [1]\n    x: {{range: [1, 13]}}\n",
            runs.display()
        ),
        extra_config,
        &[("PATH".into(), path)],
    );
    let child = c
        .command(&["sweep", "run", "--sources", "hpc1", "--sweep-id", &sweep])
        .spawn()
        .unwrap();
    wait_until(
        Duration::from_secs(60),
        &format!("the agent killed by the {submit} shim"),
        || c.agent.child.try_wait().unwrap().is_some(),
    );
    std::thread::sleep(Duration::from_secs(2));
    c.agent.restart();
    let out = wait_with_timeout(
        child,
        Duration::from_secs(180),
        "sweep run after the restart",
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = c.project.status(&sweep);
    assert_eq!(status["completed"], 12, "{status}");
    // Every task ran exactly once, the job of the killed submission included.
    let mut ran: Vec<u64> = std::fs::read_to_string(&runs)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    ran.sort_unstable();
    assert_eq!(ran, (1..=12).collect::<Vec<u64>>(), "runs per task");
    // An accepted submission's tasks were followed as attempt 1; the rest (never submitted) ran
    // as attempt 2.
    let attempt_one = status["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["attempt"] == 1)
        .count();
    assert_eq!(attempt_one, if accepted { 10 } else { 0 }, "{status}");
    assert!(in_queue(&sweep).trim().is_empty());
}

#[test]
fn the_pbs_backend_submits_follows_and_cancels_through_qsub_qstat_qdel() {
    let (Some(_), Some(agent_bin)) = (test_slurm(), agent_bin()) else {
        return;
    };
    // Debian's slurm-wlm-torque: real qsub/qstat/qdel binaries over the same Slurm.
    let Some(path) = pbs_path() else {
        return;
    };
    let c = cluster_with_agent_env(
        &agent_bin,
        "pbs",
        "sweep:\n  grid:\n    x: {range: [1, 7]}\n",
        "",
        &[("PATH".to_string(), path)],
    );
    c.run(&["sweep", "run", "--sources", "hpc1", "--sweep-id", "pbs"])
        .expect_code(0);
    let status = c.project.status("pbs");
    assert_eq!(status["completed"], 6, "{status}");
    // Torque-style element ids (`123[4]`) name each task's job.
    for (i, task) in status["tasks"].as_array().unwrap().iter().enumerate() {
        let job = task["job_id"].as_str().unwrap_or_default();
        assert!(job.ends_with(&format!("[{i}]")), "{task}");
    }
    let script = std::fs::read_to_string(c.jobs("pbs")[0].join("job.sh")).unwrap();
    assert!(script.contains("#PBS -t 0-5"), "{script}");
    for x in 1..=6u64 {
        let r = c
            .project
            .sweep_dir("pbs")
            .join(format!("tasks/task_{x:03}/results/r.txt"));
        assert_eq!(std::fs::read_to_string(r).unwrap(), format!("x={x}\n"));
    }
    assert_measured(&c.project, "pbs", 6);

    c.project.write(
        "sweeps/slow.yaml",
        "sweep:\n  grid:\n    sleep: [120]\n    x: [1, 2, 3]\n",
    );
    let child = c
        .command(&[
            "sweep",
            "run",
            "sweeps/slow.yaml",
            "--sources",
            "hpc1",
            "--sweep-id",
            "pbsc",
        ])
        .spawn()
        .unwrap();
    let db = c.project.sweep_dir("pbsc").join("sweep.db");
    wait_until(
        Duration::from_secs(60),
        "a task running through qsub",
        || {
            db.exists()
                && c.project
                    .try_status("pbsc")
                    .is_some_and(|s| s["running"].as_u64().unwrap_or(0) >= 1)
        },
    );
    c.run(&["sweep", "cancel", "pbsc"]).expect_code(0);
    Run::wait(child, "pbs sweep, cancelled".into());
    let status = c.project.status("pbsc");
    assert_eq!(status["cancelled"], 3, "{status}");
    // A hang guard: scancel'd jobs leave the queue within seconds, slower on a busy machine.
    wait_until(
        Duration::from_secs(90),
        "the queue empty of the sweep's jobs",
        || in_queue("pbsc").trim().is_empty(),
    );
}

#[test]
fn a_sweep_half_cancelled_locally_is_completed_on_test_slurm() {
    let (Some(_), Some(agent_bin)) = (test_slurm(), agent_bin()) else {
        return;
    };
    // Also: backend `auto` finds Slurm, and `array: false` submits one job per task.
    let c = cluster(
        &agent_bin,
        "auto",
        "sweep:\n  grid:\n    sleep: [0.4]\n    x: {range: [1, 11]}\n",
        "hpc:\n  array: false\n",
    );
    let child = c
        .command(&["sweep", "run", "--sweep-id", "cross", "--parallel", "1"])
        .spawn()
        .unwrap();
    let db = c.project.sweep_dir("cross").join("sweep.db");
    wait_until(
        Duration::from_secs(60),
        "half the tasks done locally",
        || {
            db.exists()
                && c.project
                    .try_status("cross")
                    .is_some_and(|s| s["completed"].as_u64().unwrap_or(0) >= 5)
        },
    );
    c.run(&["sweep", "cancel", "cross"]).expect_code(0);
    Run::wait(child, "local run, cancelled".into());
    let status = c.project.status("cross");
    let done_locally = status["completed"].as_u64().unwrap();
    assert!((5..10).contains(&done_locally), "{status}");
    c.run(&["sweep", "complete", "cross", "--sources", "hpc1"])
        .expect_code(0);
    let status = c.project.status("cross");
    assert_eq!(status["completed"], 10, "{status}");
    let on_slurm = status["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["source"] == "hpc1")
        .count() as u64;
    assert_eq!(on_slurm, 10 - done_locally, "{status}");
    let jobs = c.jobs("cross");
    assert_eq!(jobs.len() as u64, on_slurm, "one job per task: {jobs:?}");
    for job in jobs {
        let script = std::fs::read_to_string(job.join("job.sh")).unwrap();
        assert!(
            script.starts_with("#!/bin/bash\n#SBATCH") && !script.contains("--array"),
            "{script}"
        );
    }
    for x in 1..=10u64 {
        let r = c
            .project
            .sweep_dir("cross")
            .join(format!("tasks/task_{x:03}/results/r.txt"));
        assert_eq!(std::fs::read_to_string(r).unwrap(), format!("x={x}\n"));
    }
}

#[test]
fn a_dry_run_with_an_hpc_source_shows_the_job_script_it_would_submit() {
    // No agent or Slurm needed: nothing is started.
    let fp = format!("sha256:{}", "ab".repeat(32));
    let p = Project::new(
        &format!(
            "command:\n  python: python3\n  script: task.py\nhpc:\n  partition: gpu\n  cpus: 4\n  mem: 16G\n  gres: gpu:a100:1\n  modules: [cuda/12.1]\n  max_array_size: 4\nsources:\n  hpc1:\n    type: agent\n    address: 127.0.0.1:7300\n    fingerprint: {fp}\n    project_dir: /srv/proj\n    backend: slurm\n    hpc:\n      walltime: \"01:00:00\"\n"
        ),
        &[
            ("task.py", TASK_PY),
            ("sweeps/sweep.yaml", "sweep:\n  grid:\n    x: {range: [1, 11]}\n"),
        ],
    );
    let run = p.run(&[
        "sweep",
        "run",
        "--sources",
        "hpc1",
        "--dry-run",
        "--array-throttle",
        "2",
        "--sweep-id",
        "dry",
    ]);
    run.expect_code(0);
    for line in [
        "job script for source hpc1, backend slurm: 3 arrays of up to 4 tasks",
        "#SBATCH --array=0-3%2",
        "#SBATCH --time=01:00:00",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=16G",
        "#SBATCH --gres=gpu:a100:1",
        "#SBATCH --partition=gpu",
        "module load cuda/12.1",
        // The argv shown is this host's; the agent's differs.
        "on source hpc1, tasks start `python3` (its `python:`) in /srv/proj",
    ] {
        assert!(
            run.stdout.contains(line),
            "missing {line:?}:\n{}",
            run.stdout
        );
    }
    assert!(!p.sweep_dir("dry").exists(), "a dry run creates nothing");
    p.run(&[
        "sweep",
        "run",
        "--sources",
        "hpc1",
        "--dry-run",
        "--walltime",
        "soon",
    ])
    .expect_code(2);
    // Packed: 10 tasks, 3 per job, 2 at a time: 4 jobs in one array, each asking for two
    // tasks' CPUs and memory and two rounds of the walltime.
    p.write(
        ".hsm/config.yaml",
        &std::fs::read_to_string(p.path().join(".hsm/config.yaml"))
            .unwrap()
            .replace(
                "  max_array_size: 4\n",
                "  tasks_per_job: 3\n  pack_parallel: 2\n",
            )
            // Tasks side by side may not share GPUs.
            .replace("  gres: gpu:a100:1\n", ""),
    );
    let run = p.run(&["sweep", "run", "--sources", "hpc1", "--dry-run"]);
    run.expect_code(0);
    for line in [
        "10 tasks packed 3 per job, 2 at a time, into 4 jobs (array elements), 1 array of up to 1000 jobs",
        "#SBATCH --array=0-3\n",
        "#SBATCH --time=02:01:30",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=32G",
        "hsm_pack.sh",
    ] {
        assert!(
            run.stdout.contains(line),
            "missing {line:?}:\n{}",
            run.stdout
        );
    }
}

#[test]
fn a_coordinator_on_the_login_node_submits_to_slurm_itself() {
    let Some(_) = test_slurm() else {
        return;
    };
    let p = Project::new(
        "command:\n  python: python3\n  script: task.py\nsources:\n  here:\n    type: slurm\n    hpc:\n      poll: 1s\n",
        &[
            ("task.py", TASK_PY),
            ("sweeps/sweep.yaml", "sweep:\n  grid:\n    x: {range: [1, 14]}\n"),
        ],
    );
    // The dry run shows the job script with this host's paths (no agent is involved).
    let dry = p.run(&[
        "sweep",
        "run",
        "--sources",
        "here",
        "--sweep-id",
        "inproc",
        "--dry-run",
    ]);
    dry.expect_code(0);
    let chunk = p
        .sweep_dir("inproc")
        .join("scripts/job_scripts/job_STAMP_0001");
    assert!(
        dry.stdout.contains(&chunk.display().to_string()) && !dry.stdout.contains("AGENT_WORK_DIR"),
        "{}",
        dry.stdout
    );
    let run = p.run(&["sweep", "run", "--sources", "here", "--sweep-id", "inproc"]);
    run.expect_code(1);
    // The way to finish is on the same source, not the default local one.
    assert!(
        run.stderr
            .contains("`hsm-coordinator sweep complete inproc --sources here` re-runs failed"),
        "{}",
        run.stderr
    );
    let status = p.status("inproc");
    assert_eq!(
        (status["completed"].as_u64(), status["failed"].as_u64()),
        (Some(12), Some(1)),
        "{status}"
    );
    assert_eq!(status["tasks"][12]["exit_code"], 3);
    assert_slurm_job_ids(&status, 10);
    // The job scripts sit in the sweep directory; 13 tasks are 2 arrays (MaxArraySize 10).
    let scripts = p.sweep_dir("inproc").join("scripts/job_scripts");
    let jobs = std::fs::read_dir(&scripts).unwrap().count();
    assert_eq!(jobs, 2, "{}", scripts.display());
    for x in 1..=13u64 {
        let dir = p.sweep_dir("inproc").join(format!("tasks/task_{x:03}"));
        assert_eq!(
            std::fs::read_to_string(dir.join("results/r.txt")).unwrap(),
            format!("x={x}\n")
        );
        let stdout = std::fs::read_to_string(dir.join("stdout.log")).unwrap();
        assert!(
            stdout.starts_with(&format!("task {x} ran in job ")),
            "{stdout:?}"
        );
    }
}
