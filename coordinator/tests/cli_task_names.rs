//! End-to-end test of task names through the real binary: a sweep of 1,000 tasks numbers them
//! `task_0001` … `task_1000` everywhere (directories, `HSM_TASK_ID`, status, output), and
//! `sweep complete` keeps the width the sweep was created with.

mod common;

use common::*;

/// Each task prints its `HSM_TASK_ID`; task 7 fails until the file `fixed` exists.
const CONFIG: &str = "command:\n  template: [\"sh\", \"-c\", \"echo $HSM_TASK_ID; [ $HSM_TASK_INDEX != 7 ] || [ -e fixed ]\", \"{overrides}\"]\ndefaults:\n  parallel: 4\n";

#[test]
fn a_thousand_task_sweep_has_names_that_sort_and_complete_keeps_them() {
    let p = Project::new(
        CONFIG,
        &[(
            "sweeps/sweep.yaml",
            "sweep:\n  grid:\n    x: {range: [1, 1001]}\n",
        )],
    );
    let run = p.run(&["sweep", "run", "--sweep-id", "wide"]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("task_0007 failed (attempt 1, local)"),
        "{}",
        run.stderr
    );
    let mut dirs: Vec<String> = std::fs::read_dir(p.sweep_dir("wide").join("tasks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let expected: Vec<String> = (1..=1000).map(|i| format!("task_{i:04}")).collect();
    assert_eq!(dirs, expected, "sorted by name is sorted by number");
    let status = p.status("wide");
    let ids: Vec<&str> = status["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["task"].as_str().unwrap())
        .collect();
    assert_eq!(ids, expected);
    let stdout = |task: &str| {
        std::fs::read_to_string(
            p.sweep_dir("wide")
                .join("tasks")
                .join(task)
                .join("stdout.log"),
        )
        .unwrap()
    };
    assert_eq!(stdout("task_0001"), "task_0001\n");
    assert_eq!(stdout("task_1000"), "task_1000\n");

    p.write("fixed", "");
    p.run(&["sweep", "complete", "wide"]).expect_code(0);
    assert_eq!(
        stdout("task_0007"),
        "task_0007\n",
        "the re-run has the sweep's name"
    );
    assert!(p
        .sweep_dir("wide")
        .join("tasks/task_0007/stdout.attempt1.log")
        .exists());
    assert!(!p.sweep_dir("wide").join("tasks/task_007").exists());
    assert_eq!(p.status("wide")["completed"], 1000);
}
