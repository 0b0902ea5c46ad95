//! Packed jobs (`hpc.tasks_per_job`) run for real with bash, as an array element would run
//! them: the pack runner hands each of its tasks to the wrapper in turn (or several at once),
//! every task keeps its own records and logs, a failure does not stop the others, each task has
//! its own time limit and cancel, a signal to the job stops it, and a requeued run skips what
//! finished.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hsm_agent::hpc::pack::{limits_file, CANCEL_FILE, LIMITS_FILE, PACK_FILE, PACK_SCRIPT};
use hsm_agent::hpc::script::{tasks_index, TASKS_INDEX_FILE, WRAPPER_FILE};
use hsm_agent::hpc::wrapper::{parse_exit_record, parse_start_record, write_argv0, WRAPPER_SCRIPT};

struct Chunk {
    _root: tempfile::TempDir,
    chunk_dir: PathBuf,
    task_dirs: Vec<PathBuf>,
}

/// A chunk directory with the wrapper, the pack runner and `n` tasks running `scripts[i]` with
/// `sh -c`, each with a time limit of `timeout` seconds (none: `None`) and a 1 s grace.
fn chunk(scripts: &[&str], timeout: Option<u64>) -> Chunk {
    let root = tempfile::tempdir().unwrap();
    let chunk_dir = root.path().join("chunk 0");
    fs::create_dir_all(&chunk_dir).unwrap();
    fs::write(chunk_dir.join(WRAPPER_FILE), WRAPPER_SCRIPT).unwrap();
    fs::write(chunk_dir.join(PACK_FILE), PACK_SCRIPT).unwrap();
    let task_dirs: Vec<PathBuf> = scripts
        .iter()
        .enumerate()
        .map(|(i, script)| {
            let dir = root.path().join(format!("tasks/task {i:03}"));
            fs::create_dir_all(&dir).unwrap();
            let argv: Vec<String> = ["sh", "-c", script].iter().map(|s| s.to_string()).collect();
            fs::write(dir.join("argv0"), write_argv0(&argv).unwrap()).unwrap();
            fs::write(dir.join(LIMITS_FILE), limits_file(timeout, 1)).unwrap();
            dir
        })
        .collect();
    fs::write(
        chunk_dir.join(TASKS_INDEX_FILE),
        tasks_index(&task_dirs).unwrap(),
    )
    .unwrap();
    Chunk {
        _root: root,
        chunk_dir,
        task_dirs,
    }
}

/// The runner for element `element` of `per` tasks, `parallel` at a time.
fn runner(chunk: &Chunk, element: u32, per: u32, parallel: u32) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(chunk.chunk_dir.join(PACK_FILE))
        .arg(chunk.chunk_dir.join(TASKS_INDEX_FILE))
        .arg(element.to_string())
        .arg(per.to_string())
        .arg(parallel.to_string())
        .env("SLURM_JOB_ID", "77")
        .env_remove("SLURM_RESTART_COUNT")
        .stdin(Stdio::null());
    cmd
}

fn read(dir: &Path, name: &str) -> String {
    fs::read_to_string(dir.join(name))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()))
}

fn exit_of(dir: &Path) -> hsm_agent::hpc::wrapper::ExitRecord {
    parse_exit_record(&read(dir, "hsm_exit")).unwrap()
}

/// Waits (a hang guard, not a timing assertion) until `path` exists.
fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_element_runs_its_tasks_in_turn_each_with_its_own_records_and_a_failure_stops_none() {
    // Two elements of three; element 1 runs tasks 3..5. Each task appends to a shared log so
    // the order is visible.
    let chunk = chunk(
        &[
            "echo zero",
            "echo one",
            "echo two",
            "echo three; echo 3 >> ../order",
            "echo four >&2; echo 4 >> ../order; exit 7",
            "echo five; echo 5 >> ../order",
        ],
        None,
    );
    let status = runner(&chunk, 1, 3, 1).status().unwrap();
    assert!(status.success(), "the runner ends 0 whatever its tasks did");
    for i in 0..3 {
        assert!(
            !chunk.task_dirs[i].join("hsm_start").exists(),
            "another element's task"
        );
    }
    let order = fs::read_to_string(chunk.task_dirs[3].parent().unwrap().join("order")).unwrap();
    assert_eq!(order, "3\n4\n5\n", "one after another, in order");
    assert_eq!(read(&chunk.task_dirs[3], "stdout.log"), "three\n");
    assert_eq!(read(&chunk.task_dirs[4], "stderr.log"), "four\n");
    assert_eq!(exit_of(&chunk.task_dirs[3]).exit_code, 0);
    assert_eq!(exit_of(&chunk.task_dirs[4]).exit_code, 7);
    assert_eq!(
        exit_of(&chunk.task_dirs[5]).exit_code,
        0,
        "ran after a failure"
    );
    let start = parse_start_record(&read(&chunk.task_dirs[5], "hsm_start")).unwrap();
    assert_eq!(
        (start.job_id.as_deref(), start.index),
        (Some("77"), Some(5)),
        "the task's line in the tasks file"
    );
    // The last element may be short.
    let short = runner(&chunk, 1, 4, 1).status().unwrap();
    assert!(short.success());
}

#[test]
fn several_at_once_when_asked() {
    // Four tasks of 1 s, two at a time: each pair overlaps (both started before either ends).
    let chunk = chunk(&["sleep 1"; 4], None);
    let status = runner(&chunk, 0, 4, 2).status().unwrap();
    assert!(status.success());
    let times: Vec<(f64, f64)> = chunk
        .task_dirs
        .iter()
        .map(|d| {
            let start = read(d, "hsm_start");
            let exit = read(d, "hsm_exit");
            let real = |text: &str, key: &str| -> f64 {
                text.lines()
                    .find_map(|l| l.strip_prefix(key))
                    .unwrap()
                    .parse()
                    .unwrap()
            };
            (real(&start, "start_real="), real(&exit, "end_real="))
        })
        .collect();
    assert!(
        times[1].0 < times[0].1,
        "tasks 0 and 1 ran together: {times:?}"
    );
    assert!(
        times[3].0 < times[2].1,
        "tasks 2 and 3 ran together: {times:?}"
    );
    assert!(
        times[2].0 >= times[0].1.min(times[1].1),
        "task 2 waited for a free slot: {times:?}"
    );
    for d in &chunk.task_dirs {
        assert_eq!(exit_of(d).exit_code, 0);
    }
}

#[test]
fn each_task_has_its_own_time_limit() {
    // Limit 1 s: the first task outlives it and is stopped (TERM), the second is quick.
    let chunk = chunk(&["echo started; sleep 120", "echo quick"], Some(1));
    let began = Instant::now();
    let status = runner(&chunk, 0, 2, 1).status().unwrap();
    assert!(status.success());
    assert!(
        began.elapsed() < Duration::from_secs(60),
        "the 120 s task was not stopped"
    );
    let stopped = exit_of(&chunk.task_dirs[0]);
    assert!(stopped.timed_out, "{stopped:?}");
    assert_eq!(stopped.signal, None, "no signal reached the job");
    let quick = exit_of(&chunk.task_dirs[1]);
    assert!(!quick.timed_out);
    assert_eq!(quick.exit_code, 0);
    assert_eq!(read(&chunk.task_dirs[1], "stdout.log"), "quick\n");
}

#[test]
fn a_task_ignoring_term_is_killed_after_the_grace() {
    let chunk = chunk(&["trap '' TERM; echo started; sleep 120"], Some(1));
    let began = Instant::now();
    let status = runner(&chunk, 0, 1, 1).status().unwrap();
    assert!(status.success());
    assert!(began.elapsed() < Duration::from_secs(60), "never killed");
    let record = exit_of(&chunk.task_dirs[0]);
    assert!(record.timed_out);
    assert_eq!(
        record.exit_code, 137,
        "SIGKILL after the 1 s grace: {record:?}"
    );
}

#[test]
fn a_task_is_cancelled_alone_running_or_before_its_turn() {
    // Task 0 runs until cancelled; task 1 was cancelled before its turn; task 2 runs normally.
    let chunk = chunk(&["echo started; sleep 120", "echo ran", "echo two"], None);
    fs::write(chunk.task_dirs[1].join(CANCEL_FILE), b"").unwrap();
    let mut child = runner(&chunk, 0, 3, 1).spawn().unwrap();
    wait_for(&chunk.task_dirs[0].join("hsm_start"));
    fs::write(chunk.task_dirs[0].join(CANCEL_FILE), b"").unwrap();
    let status = child.wait().unwrap();
    assert!(status.success());
    let cancelled = exit_of(&chunk.task_dirs[0]);
    assert_eq!((cancelled.exit_code, cancelled.signal), (143, None));
    assert!(!cancelled.timed_out && !cancelled.skipped);
    let skipped = exit_of(&chunk.task_dirs[1]);
    assert!(skipped.skipped, "{skipped:?}");
    assert!(
        !chunk.task_dirs[1].join("hsm_start").exists(),
        "a skipped task never started"
    );
    assert!(!chunk.task_dirs[1].join("stdout.log").exists());
    assert_eq!(exit_of(&chunk.task_dirs[2]).exit_code, 0);
    assert_eq!(read(&chunk.task_dirs[2], "stdout.log"), "two\n");
}

#[test]
fn a_signal_to_the_job_stops_its_task_and_starts_no_other_and_a_requeued_run_skips_what_finished() {
    let chunk = chunk(&["echo zero", "echo started; sleep 120", "echo two"], None);
    let mut child = runner(&chunk, 0, 3, 1).spawn().unwrap();
    wait_for(&chunk.task_dirs[1].join("hsm_start"));
    // As scancel or a requeue: the job's batch shell gets SIGTERM.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success());
    assert_eq!(exit_of(&chunk.task_dirs[0]).exit_code, 0);
    let stopped = exit_of(&chunk.task_dirs[1]);
    assert_eq!(stopped.signal, Some(15), "{stopped:?}");
    assert!(
        !chunk.task_dirs[2].join("hsm_start").exists(),
        "no task starts once the job is stopped"
    );
    // Slurm runs the job again (a requeue): the finished task is not run again, the stopped
    // one is, and the one that never started runs for the first time.
    fs::write(
        chunk.task_dirs[1].join("argv0"),
        write_argv0(&["true".into()]).unwrap(),
    )
    .unwrap();
    let status = runner(&chunk, 0, 3, 1)
        .env("SLURM_RESTART_COUNT", "1")
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        read(&chunk.task_dirs[0], "stdout.log"),
        "zero\n",
        "not run twice"
    );
    let rerun = exit_of(&chunk.task_dirs[1]);
    assert_eq!(
        (rerun.exit_code, rerun.signal),
        (0, None),
        "this run's record"
    );
    assert!(read(&chunk.task_dirs[1], "stderr.log").contains("Slurm requeued its job (restart 1)"));
    assert_eq!(read(&chunk.task_dirs[2], "stdout.log"), "two\n");
    assert_eq!(
        read(&chunk.task_dirs[2], "stderr.log"),
        "",
        "its first run: nothing to say of a requeue"
    );
}

#[test]
fn bad_arguments_are_refused_with_a_message() {
    let chunk = chunk(&["true"], None);
    for args in [["x", "1", "1"], ["0", "", "1"], ["0", "1", "-1"]] {
        let out = Command::new("bash")
            .arg(chunk.chunk_dir.join(PACK_FILE))
            .arg(chunk.chunk_dir.join(TASKS_INDEX_FILE))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(127), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("hsm pack: bad arguments"));
    }
    assert!(!chunk.task_dirs[0].join("hsm_start").exists());
}

/// Whether process `pid` is alive (a zombie awaiting its reaper counts as gone).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        })
        .unwrap_or(false)
}

#[test]
fn a_task_stopped_at_its_limit_leaves_none_of_its_processes_behind() {
    // The task starts a child of its own that would outlive it; at the limit both go, so the
    // job's next task does not share the node with leftovers.
    let chunk = chunk(
        &[
            "sleep 300 & echo $! > child; echo started; sleep 300",
            "echo next",
        ],
        Some(1),
    );
    let status = runner(&chunk, 0, 2, 1).status().unwrap();
    assert!(status.success());
    let child: u32 = read(&chunk.task_dirs[0], "child").trim().parse().unwrap();
    // A hang guard: a killed orphan is reaped by init, a moment later on a busy machine.
    let deadline = Instant::now() + Duration::from_secs(30);
    while alive(child) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !alive(child),
        "the task's own child {child} outlived its limit"
    );
    assert!(exit_of(&chunk.task_dirs[0]).timed_out);
    assert_eq!(read(&chunk.task_dirs[1], "stdout.log"), "next\n");
}

#[test]
fn a_warning_signal_reaches_the_running_task_and_the_job_goes_on() {
    // USR1 (`--signal=B:USR1@N`, a checkpoint warning) is passed on; the next task still runs.
    let chunk = chunk(
        &[
            "trap 'echo warned; exit 0' USR1; echo started; while :; do sleep 0.05; done",
            "echo next",
        ],
        None,
    );
    let mut child = runner(&chunk, 0, 2, 1).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while fs::read_to_string(chunk.task_dirs[0].join("stdout.log")).unwrap_or_default()
        != "started\n"
    {
        assert!(Instant::now() < deadline, "task never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGUSR1) };
    assert!(child.wait().unwrap().success());
    assert_eq!(read(&chunk.task_dirs[0], "stdout.log"), "started\nwarned\n");
    assert_eq!(
        read(&chunk.task_dirs[1], "stdout.log"),
        "next\n",
        "the job went on"
    );
}
