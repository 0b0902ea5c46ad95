//! The HPC task wrapper run for real with bash, as a scheduler would run it: arguments arrive
//! byte-exact, environment and cwd apply, logs and records are written, SIGTERM is forwarded and
//! recorded, and bad inputs still leave a record.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hsm_agent::hpc::script::{tasks_index, TASKS_INDEX_FILE, WRAPPER_FILE};
use hsm_agent::hpc::wrapper::{
    parse_exit_record, parse_start_record, write_argv0, write_env0, WRAPPER_SCRIPT,
};

struct Chunk {
    _root: tempfile::TempDir,
    chunk_dir: PathBuf,
    task_dirs: Vec<PathBuf>,
}

/// A chunk directory with the wrapper and a tasks index over `n` task directories.
fn chunk(n: usize) -> Chunk {
    let root = tempfile::tempdir().unwrap();
    let chunk_dir = root.path().join("chunk 0");
    fs::create_dir_all(&chunk_dir).unwrap();
    fs::write(chunk_dir.join(WRAPPER_FILE), WRAPPER_SCRIPT).unwrap();
    let task_dirs: Vec<PathBuf> = (0..n)
        .map(|i| {
            let dir = root.path().join(format!("tasks/task {i:03}"));
            fs::create_dir_all(&dir).unwrap();
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

fn write_task(dir: &Path, argv: &[&str], env: &[(&str, &str)], cwd: Option<&Path>) {
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    fs::write(dir.join("argv0"), write_argv0(&argv).unwrap()).unwrap();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    fs::write(dir.join("env0"), write_env0(&env).unwrap()).unwrap();
    if let Some(cwd) = cwd {
        fs::write(dir.join("cwd"), cwd.as_os_str().as_encoded_bytes()).unwrap();
    }
}

fn wrapper_command(chunk: &Chunk, index: &str) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(chunk.chunk_dir.join(WRAPPER_FILE))
        .arg(chunk.chunk_dir.join(TASKS_INDEX_FILE))
        .arg(index)
        .env("SLURM_JOB_ID", "4242")
        .stdin(Stdio::null());
    cmd
}

fn read(dir: &Path, name: &str) -> String {
    fs::read_to_string(dir.join(name))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()))
}

#[test]
fn arguments_env_and_cwd_arrive_exactly() {
    let chunk = chunk(3);
    let dir = &chunk.task_dirs[1];
    let cwd = chunk.task_dirs[0].clone();
    let tricky = [
        "a b",
        "",
        "'single' \"double\"",
        "$HOME `id` $(id) ${x}",
        "line1\nline2\n",
        "back\\slash\t tab",
        "-n",
        "*",
        "ünïcödé",
    ];
    // printf prints each argument between markers, so every byte is visible in stdout.
    let mut argv = vec!["printf", "<%s>\\n"];
    argv.extend(tricky);
    write_task(
        dir,
        &argv,
        &[("HSM_TASK_ID", "2"), ("WEIRD", "x y=$z\nq")],
        Some(&cwd),
    );
    let status = wrapper_command(&chunk, "1").status().unwrap();
    assert!(status.success());
    let expected: String = tricky.iter().map(|a| format!("<{a}>\n")).collect();
    assert_eq!(read(dir, "stdout.log"), expected);
    let exit = parse_exit_record(&read(dir, "hsm_exit")).unwrap();
    assert_eq!((exit.exit_code, exit.signal, exit.error), (0, None, None));
    let start = parse_start_record(&read(dir, "hsm_start")).unwrap();
    assert_eq!(start.job_id.as_deref(), Some("4242"));
    assert_eq!(start.index, Some(1));
    assert!(!start.host.is_empty());
    assert!(exit.end_time >= start.start_time);

    // Environment and working directory, in a second run appending to the same logs.
    write_task(
        dir,
        &[
            "bash",
            "-c",
            "printf '%s|%s|%s' \"$HSM_TASK_ID\" \"$WEIRD\" \"$PWD\"; echo err >&2; exit 3",
        ],
        &[("HSM_TASK_ID", "2"), ("WEIRD", "x y=$z\nq")],
        Some(&cwd),
    );
    let status = wrapper_command(&chunk, "1").status().unwrap();
    assert_eq!(status.code(), Some(3));
    let stdout = read(dir, "stdout.log");
    assert!(
        stdout.ends_with(&format!("2|x y=$z\nq|{}", cwd.display())),
        "{stdout:?}"
    );
    assert_eq!(read(dir, "stderr.log"), "err\n");
    assert_eq!(
        parse_exit_record(&read(dir, "hsm_exit")).unwrap().exit_code,
        3
    );
    // Other tasks are untouched, and no temp files are left behind.
    assert!(!chunk.task_dirs[2].join("hsm_start").exists());
    let leftovers: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn task_dir_mode_and_default_cwd() {
    let chunk = chunk(1);
    let dir = &chunk.task_dirs[0];
    write_task(dir, &["pwd"], &[], None);
    let status = Command::new("bash")
        .arg(chunk.chunk_dir.join(WRAPPER_FILE))
        .arg("--task-dir")
        .arg(dir)
        .env_remove("SLURM_JOB_ID")
        .env("PBS_JOBID", "77.server")
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(read(dir, "stdout.log"), format!("{}\n", dir.display()));
    let start = parse_start_record(&read(dir, "hsm_start")).unwrap();
    assert_eq!(
        (start.job_id.as_deref(), start.index),
        (Some("77.server"), None)
    );
}

#[test]
fn failures_to_start_leave_a_record() {
    let chunk = chunk(3);
    // Empty argv file.
    fs::write(chunk.task_dirs[0].join("argv0"), b"").unwrap();
    // Missing argv file: task_dirs[1] has none.
    // Unreachable cwd.
    write_task(
        &chunk.task_dirs[2],
        &["true"],
        &[],
        Some(Path::new("/nonexistent/dir")),
    );
    for (i, needle) in [
        (0, "empty argv"),
        (1, "missing"),
        (2, "cannot change directory"),
    ] {
        let status = wrapper_command(&chunk, &i.to_string()).status().unwrap();
        assert_eq!(status.code(), Some(127));
        let dir = &chunk.task_dirs[i];
        let exit = parse_exit_record(&read(dir, "hsm_exit")).unwrap();
        assert_eq!(exit.exit_code, 127);
        assert!(
            exit.error.as_deref().unwrap_or("").contains(needle),
            "{exit:?}"
        );
        assert!(read(dir, "stderr.log").contains(needle));
    }
    // Job set-up failure (a module that would not load) is recorded, the task does not run.
    write_task(&chunk.task_dirs[0], &["touch", "ran"], &[], None);
    let status = wrapper_command(&chunk, "0")
        .env("HSM_SETUP_FAILED", "module load 'cuda/99'; ")
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(127));
    let exit = parse_exit_record(&read(&chunk.task_dirs[0], "hsm_exit")).unwrap();
    assert!(exit.error.unwrap().contains("cuda/99"));
    assert!(!chunk.task_dirs[0].join("ran").exists());
    // An index past the end or not a number: nothing to record into, a clear message.
    for index in ["7", "x", "-1", ""] {
        let out = wrapper_command(&chunk, index).output().unwrap();
        assert_eq!(out.status.code(), Some(127), "{index}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("hsm wrapper"));
    }
}

#[test]
fn a_run_slurm_requeued_replaces_the_stopped_run_s_exit_record_and_says_why() {
    let chunk = chunk(2);
    for dir in &chunk.task_dirs {
        write_task(dir, &["sh", "-c", "echo ran"], &[], None);
    }
    // What the run Slurm stopped for the requeue left: SIGTERM, recorded.
    let dir = &chunk.task_dirs[0];
    fs::write(
        dir.join("hsm_start"),
        "start=1\nhost=n\njob_id=4242\nindex=0\n",
    )
    .unwrap();
    fs::write(dir.join("hsm_exit"), "exit_code=143\nsignal=15\nend=1\n").unwrap();
    fs::write(dir.join("stdout.log"), "ran\n").unwrap();
    let status = wrapper_command(&chunk, "0")
        .env("SLURM_RESTART_COUNT", "1")
        .status()
        .unwrap();
    assert!(status.success());
    let exit = parse_exit_record(&read(dir, "hsm_exit")).unwrap();
    assert_eq!(
        (exit.exit_code, exit.signal),
        (0, None),
        "this run's record"
    );
    assert!(read(dir, "hsm_start").contains("\nrestart=1\n"));
    assert_eq!(read(dir, "stdout.log"), "ran\nran\n", "appended to");
    assert_eq!(
        read(dir, "stderr.log"),
        "hsm wrapper: running the task again: Slurm requeued its job (restart 1)\n"
    );
    // A first run says nothing of the kind.
    let first = &chunk.task_dirs[1];
    let status = wrapper_command(&chunk, "1")
        .env_remove("SLURM_RESTART_COUNT")
        .status()
        .unwrap();
    assert!(status.success());
    assert!(read(first, "hsm_start").contains("\nrestart=0\n"));
    assert_eq!(read(first, "stderr.log"), "");
}

#[test]
fn sigterm_is_forwarded_and_recorded() {
    let chunk = chunk(1);
    let dir = &chunk.task_dirs[0];
    // The task traps TERM itself to prove it received it, then exits 143 like a killed process.
    write_task(
        dir,
        &[
            "bash",
            "-c",
            "trap 'echo got-term; exit 143' TERM; echo started; while :; do sleep 0.05; done",
        ],
        &[],
        None,
    );
    let mut child = wrapper_command(&chunk, "0").spawn().unwrap();
    // A hang guard: starting bash takes milliseconds, more on a busy machine.
    let deadline = Instant::now() + Duration::from_secs(60);
    while fs::read_to_string(dir.join("stdout.log")).unwrap_or_default() != "started\n" {
        assert!(Instant::now() < deadline, "task never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    assert_eq!(read(dir, "stdout.log"), "started\ngot-term\n");
    let exit = parse_exit_record(&read(dir, "hsm_exit")).unwrap();
    assert_eq!((exit.exit_code, exit.signal), (143, Some(15)));
}

#[test]
fn sigterm_kills_a_task_without_handler() {
    let chunk = chunk(1);
    let dir = &chunk.task_dirs[0];
    write_task(
        dir,
        &["bash", "-c", "echo started; exec sleep 120"],
        &[],
        None,
    );
    let mut child = wrapper_command(&chunk, "0").spawn().unwrap();
    // A hang guard: starting bash takes milliseconds, more on a busy machine.
    let deadline = Instant::now() + Duration::from_secs(60);
    while fs::read_to_string(dir.join("stdout.log")).unwrap_or_default() != "started\n" {
        assert!(Instant::now() < deadline, "task never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    let sent = Instant::now();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    // Killed at once (milliseconds), long before its own 120 s sleep would end.
    assert!(
        sent.elapsed() < Duration::from_secs(60),
        "sleep was not killed"
    );
    assert_eq!(status.code(), Some(143));
    let exit = parse_exit_record(&read(dir, "hsm_exit")).unwrap();
    assert_eq!((exit.exit_code, exit.signal), (143, Some(15)));
}

#[test]
fn a_task_over_its_own_time_limit_is_stopped_with_what_it_started_and_recorded_as_timed_out() {
    // `--timeout` on a job of one task: the job's wall time is the scheduler's, the task's own
    // limit (`hsm_limits`) the wrapper's.
    let chunk = chunk(1);
    let dir = &chunk.task_dirs[0];
    let pids = dir.join("grandchild.pid");
    write_task(
        dir,
        &[
            "bash",
            "-c",
            &format!("sleep 120 & echo $! > '{}'; wait", pids.display()),
        ],
        &[],
        None,
    );
    fs::write(dir.join("hsm_limits"), "timeout=1\ngrace=1\n").unwrap();
    let started = Instant::now();
    let status = wrapper_command(&chunk, "0").status().unwrap();
    // Stopped about a second in (the wrapper looks once a second), not after 120 s.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "not stopped: {:?}",
        started.elapsed()
    );
    let exit = parse_exit_record(&read(dir, "hsm_exit")).unwrap();
    assert!(exit.timed_out, "{exit:?}");
    assert_eq!(status.code(), Some(exit.exit_code));
    // The sleep the task started went with it.
    let grandchild: i32 = read(dir, "grandchild.pid").trim().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while unsafe { libc::kill(grandchild, 0) } == 0 {
        assert!(Instant::now() < deadline, "pid {grandchild} left running");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Through a real Slurm when one is up (`tests/slurm.sh up DIR`, then
/// `HSM_TEST_SLURM_CONF=DIR/slurm.conf`): the generated array job script is accepted by
/// `sbatch`, every element runs its own task through the wrapper, and `squeue`'s output parses.
/// Skipped (passes with a note) otherwise: the backend's tests own the real-Slurm suite.
#[test]
fn real_slurm_array_when_available() {
    use hsm_agent::hpc::parse::{parse_sbatch, parse_squeue, SQUEUE_FORMAT};
    use hsm_agent::hpc::script::{array_job_script, ArrayJobSpec, Scheduler};
    use hsm_agent::hpc::Resources;
    let Ok(conf) = std::env::var("HSM_TEST_SLURM_CONF") else {
        eprintln!("skipped: HSM_TEST_SLURM_CONF is not set");
        return;
    };
    let chunk = chunk(3);
    for (i, dir) in chunk.task_dirs.iter().enumerate() {
        let code = i.to_string();
        write_task(
            dir,
            &[
                "bash",
                "-c",
                "echo \"task $1 arg <$2>\"; exit $1",
                "x",
                &code,
                "a b",
            ],
            &[],
            None,
        );
    }
    let spec = ArrayJobSpec {
        job_name: "hsm-wrapper-test".into(),
        chunk_dir: chunk.chunk_dir.clone(),
        count: 3,
        throttle: Some(2),
        resources: Resources {
            walltime: Some(120),
            mem: Some("100M".into()),
            cpus: Some(1),
            pre_script: vec!["export HSM_PRE=1".into()],
            ..Resources::default()
        },
        scheduler_output: None,
    };
    let script_path = chunk.chunk_dir.join("job.sh");
    fs::write(
        &script_path,
        array_job_script(Scheduler::Slurm, &spec).unwrap(),
    )
    .unwrap();
    let out = Command::new("sbatch")
        .arg(&script_path)
        .env("SLURM_CONF", &conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job = parse_sbatch(&String::from_utf8_lossy(&out.stdout)).unwrap();
    // A hang guard: three one-line tasks through the test Slurm, slower on a busy machine.
    let deadline = Instant::now() + Duration::from_secs(180);
    while !chunk.task_dirs.iter().all(|d| d.join("hsm_exit").exists()) {
        assert!(
            Instant::now() < deadline,
            "array {} did not finish",
            job.job_id
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for (i, dir) in chunk.task_dirs.iter().enumerate() {
        let exit = parse_exit_record(&read(dir, "hsm_exit")).unwrap();
        assert_eq!(exit.exit_code, i as i32);
        assert_eq!(read(dir, "stdout.log"), format!("task {i} arg <a b>\n"));
        let start = parse_start_record(&read(dir, "hsm_start")).unwrap();
        assert_eq!(start.index, Some(i as u32));
    }
    let out = Command::new("squeue")
        .args(["-h", "-t", "all", "-o", SQUEUE_FORMAT, "-j", &job.job_id])
        .env("SLURM_CONF", &conf)
        .output()
        .unwrap();
    let rows = parse_squeue(&String::from_utf8_lossy(&out.stdout));
    assert!(rows.bad_lines.is_empty(), "{:?}", rows.bad_lines);
    assert!(rows.rows.iter().all(|r| r.array_job_id == job.job_id));
}

/// `scancel` of a running element through a real Slurm (when `HSM_TEST_SLURM_CONF` is set):
/// Slurm's SIGTERM reaches the wrapper, which forwards it and leaves an exit record with
/// `signal=15` before Slurm's SIGKILL (KillWait, 30 s by default).
#[test]
fn real_slurm_scancel_leaves_a_record_when_available() {
    use hsm_agent::hpc::parse::parse_sbatch;
    use hsm_agent::hpc::script::{array_job_script, ArrayJobSpec, Scheduler};
    use hsm_agent::hpc::Resources;
    let Ok(conf) = std::env::var("HSM_TEST_SLURM_CONF") else {
        eprintln!("skipped: HSM_TEST_SLURM_CONF is not set");
        return;
    };
    let chunk = chunk(1);
    let dir = &chunk.task_dirs[0];
    write_task(
        dir,
        &["bash", "-c", "echo started; exec sleep 60"],
        &[],
        None,
    );
    let spec = ArrayJobSpec {
        job_name: "hsm-scancel-test".into(),
        chunk_dir: chunk.chunk_dir.clone(),
        count: 1,
        throttle: None,
        resources: Resources::default(),
        scheduler_output: None,
    };
    let script_path = chunk.chunk_dir.join("job.sh");
    fs::write(
        &script_path,
        array_job_script(Scheduler::Slurm, &spec).unwrap(),
    )
    .unwrap();
    let out = Command::new("sbatch")
        .arg(&script_path)
        .env("SLURM_CONF", &conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job = parse_sbatch(&String::from_utf8_lossy(&out.stdout)).unwrap();
    // A hang guard: scheduling one element on the test Slurm, slower on a busy machine.
    let deadline = Instant::now() + Duration::from_secs(120);
    while fs::read_to_string(dir.join("stdout.log")).unwrap_or_default() != "started\n" {
        assert!(
            Instant::now() < deadline,
            "job {} never started",
            job.job_id
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = Command::new("scancel")
        .arg(&job.job_id)
        .env("SLURM_CONF", &conf)
        .status()
        .unwrap();
    assert!(status.success());
    // A hang guard: the wrapper writes its record as soon as TERM arrives. Were it SIGKILLed
    // first (KillWait) it would write none, so waiting longer cannot pass a wrong wrapper.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dir.join("hsm_exit").exists() {
        assert!(Instant::now() < deadline, "no exit record after scancel");
        std::thread::sleep(Duration::from_millis(100));
    }
    let exit = parse_exit_record(&read(dir, "hsm_exit")).unwrap();
    assert_eq!((exit.exit_code, exit.signal), (143, Some(15)), "{exit:?}");
}

/// SIGTERM to the whole process group at once, as `scancel`/`qdel` deliver it: the task dies
/// before the wrapper's trap runs, bash has already reaped it, and the record still says 143.
#[test]
fn sigterm_to_the_whole_group_still_records_the_status() {
    use std::os::unix::process::CommandExt;
    let chunk = chunk(1);
    let dir = &chunk.task_dirs[0];
    write_task(
        dir,
        &["bash", "-c", "echo started; exec sleep 30"],
        &[],
        None,
    );
    let mut child = wrapper_command(&chunk, "0")
        .process_group(0)
        .spawn()
        .unwrap();
    // A hang guard: starting bash takes milliseconds, more on a busy machine.
    let deadline = Instant::now() + Duration::from_secs(60);
    while fs::read_to_string(dir.join("stdout.log")).unwrap_or_default() != "started\n" {
        assert!(Instant::now() < deadline, "task never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    unsafe { libc::kill(-(child.id() as i32), libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    let exit = parse_exit_record(&read(dir, "hsm_exit")).unwrap();
    assert_eq!((exit.exit_code, exit.signal), (143, Some(15)));
}

/// Slurm's proctrack/linuxproc signals a job's processes one at a time, the task before the
/// wrapper: the task dies of the job's TERM a moment before the wrapper gets its own. The record
/// still says the job was signalled (a requeued packed job decides from it whether the task ran
/// to its end); a task that dies of TERM when nothing signals the wrapper keeps its exit code.
#[test]
fn a_task_signalled_just_before_the_wrapper_is_recorded_as_signalled() {
    for wrapper_too in [true, false] {
        let chunk = chunk(1);
        let dir = &chunk.task_dirs[0];
        write_task(dir, &["bash", "-c", "echo $$; exec sleep 120"], &[], None);
        let mut child = wrapper_command(&chunk, "0").spawn().unwrap();
        // A hang guard: starting bash takes milliseconds, more on a busy machine.
        let deadline = Instant::now() + Duration::from_secs(60);
        let task_pid = loop {
            let out = fs::read_to_string(dir.join("stdout.log")).unwrap_or_default();
            if let Some(pid) = out.strip_suffix('\n').and_then(|p| p.parse::<i32>().ok()) {
                break pid;
            }
            assert!(Instant::now() < deadline, "task never started");
            std::thread::sleep(Duration::from_millis(20));
        };
        let killed = std::time::SystemTime::now();
        unsafe { libc::kill(task_pid, libc::SIGTERM) };
        // Well past the wrapper's own reaction (milliseconds), well inside its 1 s wait.
        std::thread::sleep(Duration::from_millis(100));
        if wrapper_too {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
        assert_eq!(child.wait().unwrap().code(), Some(143));
        let exit = parse_exit_record(&read(dir, "hsm_exit")).unwrap();
        let signal = wrapper_too.then_some(15);
        assert_eq!((exit.exit_code, exit.signal), (143, signal), "{exit:?}");
        // The end is when the task died, not after the wait for a signal.
        let end_ms = hsm_agent::hpc::usage::end_stamp_ms(&read(dir, "hsm_exit")).unwrap();
        let killed_ms = killed
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(
            end_ms < killed_ms + 500,
            "ended {} ms after the kill",
            end_ms.saturating_sub(killed_ms)
        );
    }
}

/// The wrapper measures the task it ran: wall time from its records' stamps and the task's CPU
/// from bash's `times` (the children line), read back by `hpc::usage::wrapper_usage`.
#[test]
fn the_records_say_what_the_task_used() {
    let chunk = chunk(1);
    let dir = &chunk.task_dirs[0];
    let burn =
        "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3:\n    pass\n";
    write_task(dir, &["python3", "-c", burn], &[], None);
    let status = wrapper_command(&chunk, "0").status().unwrap();
    assert!(status.success());
    let (start, exit) = (read(dir, "hsm_start"), read(dir, "hsm_exit"));
    // The records stay readable by the parsers that know nothing of the new lines.
    parse_start_record(&start).unwrap();
    assert_eq!(parse_exit_record(&exit).unwrap().exit_code, 0);
    let usage = hsm_agent::hpc::usage::wrapper_usage(Some(&start), &exit)
        .unwrap_or_else(|| panic!("nothing measured:\n{start}\n{exit}"));
    let cpu = usage.cpu_user_ms.unwrap() + usage.cpu_sys_ms.unwrap();
    assert!(cpu >= 300, "{usage:?}\n{exit}");
    let wall = usage.wall_ms.unwrap();
    // Milliseconds with bash 5's $EPOCHREALTIME; whole seconds (maybe 0) with bash 4.
    if start.contains("start_real=1") {
        // Up to the CPU accounting granularity (`times` counts clock ticks).
        assert!(wall + 50 >= cpu, "{usage:?}\n{start}\n{exit}");
    }
    assert_eq!(usage.max_rss_kb, None, "a shell cannot see the peak memory");
    assert_eq!(
        fs::read_dir(dir)
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".times"))
            .count(),
        0,
        "the wrapper's temporary file is gone"
    );
}
