//! End-to-end tests of looking at a sweep from another command, through the real binary and
//! real Python tasks: `sweep errors` (and `monitor errors`) grouping failures by cause with the
//! parameters each group shares, `logs/errors/error_patterns.yaml`, `sweep list` (and `monitor
//! recent`), `sweep logs` of current and earlier attempts and `-f` on a running task, and the
//! run's `logs/engine.log` and `logs/sources/local.log`.

mod common;

use common::*;
use std::time::Duration;

/// `bs=512` runs out of CUDA memory (sizes differ per task), `lr=0.9` goes nan at a step that
/// differs per task, `bs=64 lr=0.1 seed=3` exits 4 saying nothing on stderr; the rest succeed. Every
/// attempt prints its number on stdout and stderr. `ticks=N` waits for the file `go` in the
/// project, then prints N lines 0.2 s apart.
const TASK_PY: &str = r#"
import os, sys, time
args = dict(a.split("=", 1) for a in sys.argv[1:])
attempt = os.environ["HSM_ATTEMPT"]
bs, lr, seed = int(args.get("bs", "64")), float(args.get("lr", "0.1")), int(args.get("seed", "1"))
print(f"attempt {attempt} of {os.environ['HSM_TASK_ID']}", flush=True)
if (bs, lr, seed) == (64, 0.1, 3):
    os._exit(4)
print(f"stderr of attempt {attempt}", file=sys.stderr, flush=True)
if "ticks" in args:
    while not os.path.exists("go"):
        time.sleep(0.05)
for i in range(int(args.get("ticks", "0"))):
    print(f"tick {i}", flush=True)
    time.sleep(0.2)
def forward():
    raise RuntimeError(f"CUDA out of memory. Tried to allocate {bs * seed / 100:.2f} GiB (GPU 0; 15.78 GiB total capacity)")
if bs == 512:
    forward()
if lr > 0.5:
    raise ValueError(f"loss is nan at step {seed * 100} in /tmp/run_{seed}/ckpt")
"#;

const SWEEP: &str = "sweep:\n  grid:\n    bs: [64, 512]\n    lr: [0.1, 0.9]\n    seed: [1, 2, 3]\n";

fn json(run: &Run) -> serde_json::Value {
    run.expect_code(0);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| run.fail(&format!("bad JSON: {e}")))
}

#[test]
fn failures_are_grouped_by_cause_and_a_sweep_s_logs_are_readable_from_another_command() {
    let p = Project::new(
        CONFIG,
        &[("task.py", TASK_PY), ("sweeps/sweep.yaml", SWEEP)],
    );
    let run = p.run(&["sweep", "run", "--sweep-id", "grid", "--retries", "1"]);
    run.expect_code(1);

    // sweep errors --json: three groups, largest first, each with what its tasks share.
    let errors = json(&p.run(&["sweep", "errors", "grid", "--json"]));
    assert_eq!(errors["sweep_id"], "grid");
    assert_eq!(errors["failed"], 10, "{errors:#}");
    let groups = errors["groups"].as_array().unwrap();
    let summary: Vec<(String, u64)> = groups
        .iter()
        .map(|g| {
            (
                g["signature"].as_str().unwrap().to_string(),
                g["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("RuntimeError: CUDA out of memory".to_string(), 6),
            (
                "ValueError: loss is nan at step <n> in <path>".to_string(),
                3
            ),
            ("exit code 4".to_string(), 1),
        ],
        "{errors:#}"
    );
    let oom = &groups[0];
    assert_eq!(
        oom["shared_params"],
        serde_json::json!({"bs": 512}),
        "{oom:#}"
    );
    assert_eq!(
        oom["example_tasks"],
        serde_json::json!(["task_007", "task_008", "task_009", "task_010", "task_011"])
    );
    let traceback: Vec<&str> = oom["traceback"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(
        traceback[0], "Traceback (most recent call last):",
        "{oom:#}"
    );
    assert!(
        traceback
            .last()
            .unwrap()
            .starts_with("RuntimeError: CUDA out of memory. Tried"),
        "{traceback:?}"
    );
    assert_eq!(
        groups[1]["shared_params"],
        serde_json::json!({"bs": 64, "lr": 0.9})
    );
    assert_eq!(
        groups[2]["shared_params"],
        serde_json::json!({"bs": 64, "lr": 0.1, "seed": 3})
    );
    assert_eq!(groups[2]["example_tasks"], serde_json::json!(["task_003"]));
    // The alias says the same.
    let alias = json(&p.run(&["monitor", "errors", "grid", "--json"]));
    assert_eq!(alias["groups"], errors["groups"]);

    // The readable form.
    let text = p.run(&["sweep", "errors"]);
    text.expect_code(0);
    for expected in [
        "grid: 10 failed tasks in 3 groups",
        "6 × RuntimeError: CUDA out of memory",
        "tasks: task_007, task_008, task_009, task_010, task_011 and 1 more",
        "all 6 have bs=512",
        "all 3 have bs=64, lr=0.9",
        "task_003 has bs=64, lr=0.1, seed=3",
        "│ Traceback (most recent call last):",
    ] {
        assert!(
            text.stdout.contains(expected),
            "missing {expected:?}:\n{}",
            text.stdout
        );
    }

    // The view written by the run.
    let patterns = read(p.sweep_dir("grid").join("logs/errors/error_patterns.yaml"));
    assert!(patterns.contains("failed: 10"), "{patterns}");
    assert!(
        patterns.contains("  - signature: \"RuntimeError: CUDA out of memory\"\n    count: 6\n"),
        "{patterns}"
    );
    assert!(
        patterns.contains("    shared_params:\n      bs: 512\n"),
        "{patterns}"
    );
    assert!(
        patterns.contains("    traceback:\n      - \"Traceback (most recent call last):\"\n"),
        "{patterns}"
    );

    // An unknown sweep is the user's mistake.
    let unknown = p.run(&["sweep", "errors", "nope"]);
    unknown.expect_code(2);
    assert!(
        unknown.stderr.contains("no sweep `nope`"),
        "{}",
        unknown.stderr
    );

    // sweep logs: the current attempt by default, an earlier one with --attempt, any spelling
    // of the task.
    for task in ["7", "007", "task_007"] {
        let out = p.run(&["sweep", "logs", "grid", task]);
        out.expect_code(0);
        assert_eq!(out.stdout, "attempt 2 of task_007\n", "{task}");
    }
    let stderr = p.run(&["sweep", "logs", "grid", "7", "--stderr"]);
    stderr.expect_code(0);
    assert!(
        stderr.stdout.starts_with("stderr of attempt 2\nTraceback"),
        "{}",
        stderr.stdout
    );
    let first = p.run(&["sweep", "logs", "grid", "7", "--stderr", "--attempt", "1"]);
    first.expect_code(0);
    assert!(
        first.stdout.starts_with("stderr of attempt 1\n"),
        "{}",
        first.stdout
    );
    let first_out = p.run(&["sweep", "logs", "grid", "task_007", "--attempt", "1"]);
    assert_eq!(first_out.stdout, "attempt 1 of task_007\n");
    let completed = p.run(&["sweep", "logs", "grid", "1"]);
    assert_eq!(completed.stdout, "attempt 1 of task_001\n");
    let too_far = p.run(&["sweep", "logs", "grid", "1", "--attempt", "2"]);
    too_far.expect_code(2);
    assert!(
        too_far
            .stderr
            .contains("task_001 has one attempt (1): there is no attempt 2"),
        "{}",
        too_far.stderr
    );
    let no_task = p.run(&["sweep", "logs", "grid", "99"]);
    no_task.expect_code(2);
    assert!(
        no_task.stderr.contains("has no task 99"),
        "{}",
        no_task.stderr
    );
    let not_a_task = p.run(&["sweep", "logs", "grid", "seven"]);
    not_a_task.expect_code(2);

    // The run's own logs.
    let engine = read(p.sweep_dir("grid").join("logs/engine.log"));
    assert!(
        engine.contains("INFO run started sweep_id=grid tasks=12"),
        "{engine}"
    );
    assert!(
        engine.contains("NOTE task_007 failed (attempt 1, local): exit code 1: RuntimeError: CUDA out of memory"),
        "{engine}"
    );
    assert!(
        engine.contains("INFO run ended completed=2 failed=10"),
        "{engine}"
    );
    let local = read(p.sweep_dir("grid").join("logs/sources/local.log"));
    let lines: Vec<&str> = local.lines().collect();
    assert_eq!(lines.len(), 2, "{local}");
    assert!(
        lines[0].ends_with(" run of grid started: local processes, 2 slots"),
        "{local}"
    );
    assert!(
        lines[1].ends_with(
            " run of grid ended (2 completed, 10 failed, 0 cancelled, 0 left in the sweep)"
        ),
        "{local}"
    );

    // A second sweep that leaves tasks unrun: listed first, and its unrun task has no logs.
    p.write("sweeps/two.yaml", "sweep:\n  grid:\n    seed: [1, 2, 4]\n");
    p.run(&[
        "sweep",
        "run",
        "sweeps/two.yaml",
        "--sweep-id",
        "partial",
        "--max-runs",
        "2",
    ])
    .expect_code(0);
    let never = p.run(&["sweep", "logs", "partial", "3"]);
    never.expect_code(2);
    assert!(
        never
            .stderr
            .contains("task_003 never ran (pending): it has no logs yet"),
        "{}",
        never.stderr
    );
    let list = json(&p.run(&["sweep", "list", "--json"]));
    assert_eq!(list["total"], 2);
    let sweeps = list["sweeps"].as_array().unwrap();
    let ids: Vec<&str> = sweeps
        .iter()
        .map(|s| s["sweep_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["partial", "grid"], "newest first: {list:#}");
    assert_eq!(sweeps[0]["state"], "incomplete");
    assert_eq!(
        (
            sweeps[0]["completed"].as_u64(),
            sweeps[0]["pending"].as_u64()
        ),
        (Some(2), Some(1))
    );
    assert_eq!(sweeps[1]["state"], "failed");
    assert_eq!(
        (sweeps[1]["total"].as_u64(), sweeps[1]["failed"].as_u64()),
        (Some(12), Some(10))
    );
    assert_eq!(sweeps[1]["sources"], serde_json::json!(["local"]));
    assert!(
        sweeps[1]["duration_s"].as_f64().is_some_and(|d| d > 0.0),
        "{list:#}"
    );
    assert!(sweeps[1]["created"]
        .as_str()
        .is_some_and(|c| c.ends_with('Z')));
    let recent = json(&p.run(&["monitor", "recent", "--json"]));
    assert_eq!(recent["sweeps"].as_array().unwrap().len(), 2);
    let table = p.run(&["sweep", "list"]);
    table.expect_code(0);
    let rows: Vec<&str> = table.stdout.lines().collect();
    assert!(
        rows[0].starts_with("SWEEP") && rows[0].contains("DURATION"),
        "{}",
        table.stdout
    );
    assert!(
        rows[1].starts_with("partial ") && rows[1].contains("incomplete"),
        "{}",
        table.stdout
    );
    assert!(
        rows[2].starts_with("grid ") && rows[2].contains(" local "),
        "{}",
        table.stdout
    );
    // No failures: no groups, still exit 0; the view says so too.
    let none = json(&p.run(&["sweep", "errors", "partial", "--json"]));
    assert_eq!(none["groups"], serde_json::json!([]));
    let view = read(
        p.sweep_dir("partial")
            .join("logs/errors/error_patterns.yaml"),
    );
    assert!(view.contains("groups: []"), "{view}");
}

/// Task 1 fails at once, task 2 after 4.5 s (after the views' first rewrite, before the next
/// tick), task 3 runs until the file `go` appears (two minutes at most).
const STALE_PY: &str = r#"
import os, sys, time
x = int(sys.argv[1].split("=", 1)[1])
if x == 2:
    time.sleep(4.5)
if x == 3:
    # Bounded, so a failed test leaves nothing running for long.
    deadline = time.time() + 120
    while not os.path.exists("go") and time.time() < deadline:
        time.sleep(0.05)
    sys.exit(0)
raise ValueError(f"bad shard {x}")
"#;

#[test]
fn error_patterns_yaml_is_kept_current_while_tasks_still_run() {
    // The views were rewritten at most every 3 s, and a rewrite asked for too soon after the
    // last was dropped, not put off: task 2's failure then waited for the next change (here,
    // task 3's end, which may be hours away).
    let p = Project::new(
        "command:\n  python: python3\n  script: task.py\ndefaults:\n  parallel: 3\n",
        &[
            ("task.py", STALE_PY),
            ("sweeps/sweep.yaml", "sweep:\n  grid:\n    x: [1, 2, 3]\n"),
        ],
    );
    let sweep = p.spawn(&["sweep", "run", "--sweep-id", "stale"]);
    let patterns = p.sweep_dir("stale").join("logs/errors/error_patterns.yaml");
    // A hang guard, not a speed limit: without the fix the file never shows both while
    // task 3 waits.
    wait_until(
        Duration::from_secs(60),
        "error_patterns.yaml listing both failures while task 3 runs",
        || std::fs::read_to_string(&patterns).is_ok_and(|t| t.contains("failed: 2")),
    );
    let status = p.status("stale");
    assert_eq!(status["running"], 1, "task 3 still runs: {status:#}");
    p.write("go", "");
    Run::wait(sweep, "sweep run stale".into()).expect_code(1);
}

#[test]
fn logs_follow_a_running_task_until_its_attempt_ends() {
    let p = Project::new(
        CONFIG,
        &[
            ("task.py", TASK_PY),
            ("sweeps/sweep.yaml", "sweep:\n  grid:\n    ticks: [6]\n"),
        ],
    );
    let sweep = p.spawn(&["sweep", "run", "--sweep-id", "ticking"]);
    wait_until(Duration::from_secs(60), "the task running", || {
        p.sweep_dir("ticking").join("sweep.db").exists()
            && p.try_status("ticking").is_some_and(|s| s["running"] == 1)
    });
    // Started while the task waits: it keeps following until the attempt ends.
    let mut follow = p.spawn(&["sweep", "logs", "ticking", "1", "-f"]);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        follow.try_wait().unwrap().is_none(),
        "`sweep logs -f` ended while the task was still running"
    );
    p.write("go", "");
    let follow = Run::wait(follow, "sweep logs ticking 1 -f".into());
    follow.expect_code(0);
    let expected: String = std::iter::once("attempt 1 of task_001\n".to_string())
        .chain((0..6).map(|i| format!("tick {i}\n")))
        .collect();
    assert_eq!(follow.stdout, expected);
    Run::wait(sweep, "sweep run ticking".into()).expect_code(0);
    let status = p.status("ticking");
    assert_eq!(status["tasks"][0]["status"], "completed", "{status:#}");
}

#[test]
fn an_agent_source_has_its_own_log_and_its_failures_group_like_local_ones() {
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
                "sweep:\n  grid:\n    bs: [512]\n    seed: [1, 2]\n",
            ),
        ],
    );
    let _agent = start_enlisted_agent(&p, &agent_bin, home.path(), "a1");
    let run = p.run_in(
        home.path(),
        &["sweep", "run", "--sources", "a1", "--sweep-id", "remote"],
    );
    run.expect_code(1);
    let errors = json(&p.run(&["sweep", "errors", "remote", "--json"]));
    assert_eq!(
        errors["groups"][0]["signature"], "RuntimeError: CUDA out of memory",
        "{errors:#}"
    );
    assert_eq!(errors["groups"][0]["count"], 2);
    let log = read(p.sweep_dir("remote").join("logs/sources/a1.log"));
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        lines[0].contains(" run of remote started: agent at "),
        "{log}"
    );
    assert!(lines.iter().any(|l| l.contains(" connected to ")), "{log}");
    assert!(
        lines
            .last()
            .unwrap()
            .contains(" run of remote ended (0 completed, 2 failed"),
        "{log}"
    );
    assert!(
        !p.sweep_dir("remote")
            .join("logs/sources/local.log")
            .exists(),
        "no local source in this run"
    );
}
