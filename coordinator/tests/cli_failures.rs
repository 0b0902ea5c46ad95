//! End-to-end tests of what a failed or cancelled task says about why, through the real
//! binaries: the Python exception line of a local and of an agent task in the run's output,
//! `sweep status`, `status.yaml`, `failed_tasks.yaml` and `sweep status --json` (with the
//! stderr tail), a retried failure saying so, and the reason of a cancellation.

mod common;

use common::*;
use std::time::Duration;

/// `mode=raise` raises a Python exception after some progress-bar and warning noise;
/// `mode=exit` prints a plain error and exits 3; `mode=ok` succeeds; `sleep=S` sleeps first.
const TASK_PY: &str = r#"
import os, sys, time
args = dict(a.split("=", 1) for a in sys.argv[1:])
os.makedirs(args["output.dir"], exist_ok=True)
time.sleep(float(args.get("sleep", "0")))
sys.stderr.write(" 10%|#         | 1/10\r 50%|#####     | 5/10\n")
print("a warning: something odd", file=sys.stderr, flush=True)
mode = args.get("mode", "ok")
def forward(batch):
    raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
if mode == "raise":
    forward([1, 2, 3])
if mode == "exit":
    print("error: data.csv not found", file=sys.stderr)
    sys.exit(3)
"#;

const EXCEPTION: &str = "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB";

/// The reason of every view of one failed task mentions `line`, the run's output included.
fn assert_failure_shown(p: &Project, id: &str, run: &Run, task: &str, line: &str) {
    let expected = format!("exit code 1: {line}");
    assert!(
        run.stderr.contains(&format!("{task} failed (attempt 1")) && run.stderr.contains(&expected),
        "the run's output names the exception:\n{}",
        run.stderr
    );
    let status = p.run(&["sweep", "status", id]);
    status.expect_code(0);
    assert!(
        status
            .stdout
            .lines()
            .any(|l| l.contains(task) && l.contains("failed") && l.ends_with(&expected)),
        "sweep status:\n{}",
        status.stdout
    );
    let yaml = read(p.sweep_dir(id).join("tasks").join(task).join("status.yaml"));
    assert!(
        yaml.contains("status: failed") && yaml.contains(&expected),
        "{yaml}"
    );
    let failed = read(p.sweep_dir(id).join("logs/errors/failed_tasks.yaml"));
    assert!(
        failed.contains(task) && failed.contains(&expected),
        "{failed}"
    );
    let json = p.status(id);
    let entry = json["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task"] == task)
        .unwrap();
    assert_eq!(entry["reason"], expected.as_str(), "{entry}");
    let tail = entry["stderr_tail"]
        .as_str()
        .unwrap_or_else(|| panic!("{entry}"));
    assert!(
        tail.contains("Traceback (most recent call last)") && tail.ends_with(line),
        "{tail}"
    );
}

#[test]
fn a_local_task_s_python_exception_is_its_failure_reason_everywhere() {
    let p = Project::new(
        CONFIG,
        &[
            ("task.py", TASK_PY),
            (
                "sweeps/sweep.yaml",
                "sweep:\n  grid:\n    mode: [raise, exit, ok]\n",
            ),
        ],
    );
    let run = p.run(&["sweep", "run", "--sweep-id", "oom"]);
    run.expect_code(1);
    assert_failure_shown(&p, "oom", &run, "task_001", EXCEPTION);
    // Without an exception, the last real line (not the progress bar or blank lines).
    let json = p.status("oom");
    assert_eq!(
        json["tasks"][1]["reason"], "exit code 3: error: data.csv not found",
        "{json}"
    );
    assert_eq!(json["tasks"][2]["reason"], serde_json::Value::Null);
    assert_eq!(json["tasks"][2]["stderr_tail"], serde_json::Value::Null);
    assert!(
        run.stdout
            .contains("1 completed, 2 failed, 0 cancelled, 0 pending, of 3 tasks"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_failure_that_will_be_retried_says_so() {
    let p = Project::new(
        CONFIG,
        &[
            ("task.py", TASK_PY),
            ("sweeps/sweep.yaml", "sweep:\n  grid:\n    mode: [raise]\n"),
        ],
    );
    let run = p.run(&["sweep", "run", "--sweep-id", "retried", "--retries", "1"]);
    run.expect_code(1);
    let attempts: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("task_001 failed"))
        .collect();
    assert_eq!(attempts.len(), 2, "{}", run.stderr);
    assert!(
        attempts[0].starts_with("task_001 failed (attempt 1, local): exit code 1: RuntimeError")
            && attempts[0].ends_with("(will retry)"),
        "{attempts:?}"
    );
    assert!(
        attempts[1].starts_with("task_001 failed (attempt 2, local)")
            && !attempts[1].contains("will retry"),
        "{attempts:?}"
    );
    // Each attempt's tail is kept with it.
    let db = rusqlite::Connection::open(p.sweep_dir("retried").join("sweep.db")).unwrap();
    let tails: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM attempts WHERE stderr_tail LIKE '%RuntimeError: CUDA%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tails, 2);
}

#[test]
fn an_agent_task_s_python_exception_is_its_failure_reason_everywhere() {
    let Some(agent_bin) = agent_bin() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let p = Project::new(
        "command:\n  python: python3\n  script: task.py\n",
        &[
            ("task.py", TASK_PY),
            (
                "sweeps/sweep.yaml",
                "sweep:\n  grid:\n    mode: [raise, ok]\n",
            ),
        ],
    );
    let _agent = start_enlisted_agent(&p, &agent_bin, home.path(), "a1");
    let mut cmd = p.command(&["sweep", "run", "--sources", "a1", "--sweep-id", "remote"]);
    cmd.env("HSM_HOME", home.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let run = Run::wait(cmd.spawn().unwrap(), "sweep run --sources a1".into());
    run.expect_code(1);
    assert!(
        run.stderr.contains("task_001 failed (attempt 1, a1)"),
        "{}",
        run.stderr
    );
    assert_failure_shown(&p, "remote", &run, "task_001", EXCEPTION);
}

#[test]
fn cancelled_tasks_say_what_cancelled_them() {
    let p = Project::new(
        CONFIG,
        &[
            ("task.py", TASK_PY),
            (
                "sweeps/sweep.yaml",
                "sweep:\n  grid:\n    sleep: [60]\n    x: [1, 2, 3]\n",
            ),
        ],
    );
    let child = p.spawn(&["sweep", "run", "--sweep-id", "stopped"]);
    wait_until(Duration::from_secs(60), "two running tasks", || {
        p.sweep_dir("stopped").join("sweep.db").exists()
            && p.try_status("stopped").is_some_and(|s| s["running"] == 2)
    });
    p.run(&["sweep", "cancel", "stopped"]).expect_code(0);
    Run::wait(child, "sweep run (cancelled)".into()).expect_code(1);
    let json = p.status("stopped");
    let reasons: Vec<&str> = json["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["reason"].as_str().unwrap_or("none"))
        .collect();
    assert_eq!(
        reasons,
        [
            "cancelled by `sweep cancel`",
            "cancelled by `sweep cancel`",
            "cancelled by `sweep cancel` before it started"
        ],
        "{json}"
    );
    let yaml = read(p.sweep_dir("stopped").join("tasks/task_001/status.yaml"));
    assert!(yaml.contains("cancelled by `sweep cancel`"), "{yaml}");
    let all = p.run(&["sweep", "status", "stopped", "--all"]);
    assert!(
        all.stdout
            .contains("task_001 cancelled (attempt 1, local): cancelled by `sweep cancel`"),
        "{}",
        all.stdout
    );
}

#[test]
fn tasks_stopped_by_ctrl_c_say_interrupted_and_the_rest_stay_pending() {
    let p = Project::new(
        CONFIG,
        &[
            ("task.py", TASK_PY),
            (
                "sweeps/sweep.yaml",
                "sweep:\n  grid:\n    sleep: [60]\n    x: [1, 2, 3]\n",
            ),
        ],
    );
    let child = p.spawn(&["sweep", "run", "--sweep-id", "ctrlc"]);
    let pid = child.id() as i32;
    wait_until(Duration::from_secs(60), "two running tasks", || {
        p.sweep_dir("ctrlc").join("sweep.db").exists()
            && p.try_status("ctrlc").is_some_and(|s| s["running"] == 2)
    });
    // SAFETY: signalling the coordinator process this test started.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let run = Run::wait(child, "sweep run (interrupted)".into());
    run.expect_code(130);
    assert!(
        run.stdout
            .contains("0 completed, 0 failed, 2 cancelled, 1 pending, of 3 tasks"),
        "{}",
        run.stdout
    );
    let json = p.status("ctrlc");
    assert_eq!(
        json["tasks"][0]["reason"], "interrupted (Ctrl-C or SIGTERM)",
        "{json}"
    );
    assert_eq!(json["tasks"][2]["status"], "pending", "{json}");
}
