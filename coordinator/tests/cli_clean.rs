//! End-to-end tests of `hsm-coordinator agent clean` against a real `hsm-agent` on loopback:
//! finished sweeps' directories are removed on the agent (and a second clean finds nothing), a
//! sweep being run is kept, `--older-than` keeps recent ones, `--dry-run` changes nothing, and a
//! named sweep this coordinator does not hold is refused.

mod common;

use common::*;
use std::time::Duration;

/// Waits while the file `hold` exists in the project (the agent runs tasks there), then writes
/// its result.
fn script() -> String {
    RESULT_PY.replace(
        "import os, sys\n",
        "import os, sys, time\nwhile os.path.exists(\"hold\"):\n    time.sleep(0.05)\n",
    )
}

#[test]
fn agent_clean_removes_what_the_coordinator_holds_and_keeps_the_rest() {
    let Some(agent_bin) = agent_bin() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let p = Project::new(
        "command:\n  python: python3\n  script: task.py\n",
        &[
            ("task.py", &script()),
            (
                "sweeps/sweep.yaml",
                "sweep:\n  grid:\n    x: {range: [1, 4]}\n",
            ),
        ],
    );
    let own_fp = coordinator_fingerprint(&p, home.path());
    let agent = start_agent(&agent_bin);
    enlist(&p, &agent_bin, &agent, "a1", &own_fp);
    let on_agent = |sweep: &str| agent.work_dir().join(sweep);
    let run = |args: &[&str]| p.run_in(home.path(), args);

    for id in ["done1", "done2"] {
        run(&["sweep", "run", "--sources", "a1", "--sweep-id", id]).expect_code(0);
        assert!(on_agent(id).join("tasks/task_001/stdout.log").is_file());
    }

    // A dry run says what would go and removes nothing.
    let dry = run(&["agent", "clean", "a1", "--dry-run"]);
    dry.expect_code(0);
    for id in ["done1", "done2"] {
        assert!(
            dry.stdout
                .contains(&format!("would remove {id} (3 task dirs")),
            "{}",
            dry.stdout
        );
        assert!(on_agent(id).is_dir(), "--dry-run removed {id}");
    }
    assert!(
        dry.stdout.contains("a1: would remove 2 sweeps"),
        "{}",
        dry.stdout
    );

    // Both ran moments ago.
    let recent = run(&["agent", "clean", "a1", "--older-than", "30d"]);
    recent.expect_code(0);
    assert!(
        recent.stdout.contains("kept done1: last active")
            && recent.stdout.contains("less than --older-than 30d")
            && recent.stdout.contains("a1: nothing to clean"),
        "{}",
        recent.stdout
    );
    assert!(on_agent("done1").is_dir() && on_agent("done2").is_dir());

    // A sweep being run is not held: named, it is refused; otherwise kept and said so.
    p.write("hold", "");
    let busy = p
        .command(&["sweep", "run", "--sources", "a1", "--sweep-id", "busy"])
        .env("HSM_HOME", home.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(
        Duration::from_secs(120),
        "busy's tasks running on a1",
        || {
            p.try_status("busy").is_some_and(|s| {
                s["tasks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|t| t["source"] == "a1" && t["status"] == "running")
            })
        },
    );
    let refused = run(&["agent", "clean", "a1", "--sweep", "busy"]);
    refused.expect_code(2);
    assert!(
        refused
            .stderr
            .contains("sweep busy: a coordinator is running it now"),
        "{}",
        refused.stderr
    );
    let unknown = run(&["agent", "clean", "a1", "--sweep", "nosuch"]);
    unknown.expect_code(2);
    assert!(
        unknown.stderr.contains("--sweep nosuch: no such sweep"),
        "{}",
        unknown.stderr
    );

    let cleaned = run(&["agent", "clean", "a1"]);
    cleaned.expect_code(0);
    for id in ["done1", "done2"] {
        assert!(
            cleaned
                .stdout
                .contains(&format!("removed {id} (3 task dirs")),
            "{}",
            cleaned.stdout
        );
        assert!(!on_agent(id).exists(), "{id} is still on the agent");
    }
    assert!(
        cleaned
            .stdout
            .contains("kept busy: a coordinator is running it now"),
        "{}",
        cleaned.stdout
    );
    assert!(on_agent("busy").is_dir(), "the running sweep was removed");
    // Its results are still here, with the coordinator.
    assert_results_intact(&p, "done1", 3);

    let second = run(&["agent", "clean", "a1"]);
    second.expect_code(0);
    assert!(
        second.stdout.contains("nothing left of done1, done2 on a1")
            && second.stdout.contains("a1: nothing to clean"),
        "{}",
        second.stdout
    );

    // Once it has finished, the named sweep goes too.
    std::fs::remove_file(p.path().join("hold")).unwrap();
    Run::wait(busy, "sweep run busy".into()).expect_code(0);
    let last = run(&["agent", "clean", "a1", "--sweep", "busy"]);
    last.expect_code(0);
    assert!(
        last.stdout.contains("removed busy (3 task dirs"),
        "{}",
        last.stdout
    );
    assert!(!on_agent("busy").exists());
}
