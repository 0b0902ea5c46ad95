//! End-to-end tests of `hsm-coordinator identity`, `agent add` and `agent list`.

mod common;

use common::*;

#[test]
fn identity_is_created_once_under_hsm_home() {
    let home = tempfile::tempdir().unwrap();
    let p = Project::new(CONFIG, &[]);
    let first = p
        .command(&["identity"])
        .env("HSM_HOME", home.path())
        .output()
        .unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let fingerprint = String::from_utf8_lossy(&first.stdout).trim().to_string();
    assert!(
        fingerprint.starts_with("sha256:") && fingerprint.len() == 71,
        "{fingerprint}"
    );
    let second = p
        .command(&["identity"])
        .env("HSM_HOME", home.path())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&second.stdout).trim(), fingerprint);
}

#[test]
fn agent_add_writes_a_valid_source_and_list_shows_it() {
    let p = Project::new(
        "# my project\ncommand:\n  python: python3\n  script: task.py\n",
        &[("task.py", "")],
    );
    let fp = format!("sha256:{}", "0f".repeat(32));
    let run = p.run(&[
        "agent",
        "add",
        "gpu1",
        "127.0.0.1:7300",
        "--fingerprint",
        &fp,
        "--slots",
        "4",
        "--project-dir",
        "/srv/proj",
    ]);
    run.expect_code(0);
    let config = std::fs::read_to_string(p.path().join(".hsm/config.yaml")).unwrap();
    assert!(
        config.starts_with("# my project"),
        "comments kept: {config}"
    );
    p.run(&["config", "validate"]).expect_code(0);
    let list = p.run(&["agent", "list"]);
    list.expect_code(0);
    assert!(
        list.stdout.contains("gpu1") && list.stdout.contains(&fp),
        "{}",
        list.stdout
    );

    for bad in [
        &["agent", "add", "gpu2", "no-port", "--fingerprint", &fp][..],
        &[
            "agent",
            "add",
            "gpu2",
            "127.0.0.1:7300",
            "--fingerprint",
            "sha256:xyz",
        ],
        &[
            "agent",
            "add",
            "bad name",
            "127.0.0.1:7300",
            "--fingerprint",
            &fp,
        ],
        &[
            "agent",
            "add",
            "gpu2",
            "127.0.0.1:7300",
            "--fingerprint",
            &fp,
            "--slots",
            "0",
        ],
    ] {
        p.run(bad).expect_code(2);
    }
    assert_eq!(
        std::fs::read_to_string(p.path().join(".hsm/config.yaml")).unwrap(),
        config,
        "a refused add changes nothing"
    );
}

#[test]
fn agent_ping_over_mutual_tls_and_clear_refusals() {
    let Some(agent_bin) = agent_bin() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let stranger = tempfile::tempdir().unwrap();
    let agent = start_agent(&agent_bin);
    let p = Project::new(CONFIG, &[]);
    let coordinator = |home: &std::path::Path, args: &[&str]| {
        let out = p.command(args).env("HSM_HOME", home).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (_, own_fp, _) = coordinator(home.path(), &["identity"]);
    let authorize = std::process::Command::new(&agent_bin)
        .args(["authorize", own_fp.trim(), "--state-dir"])
        .arg(&agent.state)
        .output()
        .unwrap();
    assert!(authorize.status.success());
    p.run(&[
        "agent",
        "add",
        "a1",
        &agent.addr,
        "--fingerprint",
        &agent.fingerprint,
        "--project-dir",
        "/srv/proj",
    ])
    .expect_code(0);

    let (code, out, err) = coordinator(home.path(), &["agent", "ping", "a1"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("ok, round trip")
            && out.contains("backend process")
            && out.contains("3 slots")
            && out.contains("free disk"),
        "{out}"
    );

    // A coordinator the agent never authorized: refused in the handshake, told what to run.
    let (code, _, err) = coordinator(stranger.path(), &["agent", "ping", "a1"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("refused this coordinator") && err.contains("hsm-agent authorize sha256:"),
        "{err}"
    );

    // The coordinator pins another fingerprint: refused, both fingerprints named.
    let wrong = format!("sha256:{}", "cd".repeat(32));
    p.run(&[
        "agent",
        "add",
        "a2",
        &agent.addr,
        "--fingerprint",
        &wrong,
        "--project-dir",
        "/srv/proj",
    ])
    .expect_code(0);
    let (code, _, err) = coordinator(home.path(), &["agent", "ping", "a2"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&agent.fingerprint) && err.contains(&wrong),
        "{err}"
    );

    // Still serving after the refusals.
    let (code, out, err) = coordinator(home.path(), &["agent", "ping", "a1"]);
    assert_eq!(code, Some(0), "{out}{err}");
}

#[test]
fn a_sweep_across_local_and_two_agents_brings_every_file_back_intact() {
    let Some(agent_bin) = agent_bin() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let p = Project::new(
        "command:\n  python: python3\n  script: task.py\ndefaults:\n  kill_grace: 1s\n",
        &[
            ("task.py", RESULT_PY),
            (
                "sweeps/sweep.yaml",
                "sweep:\n  grid:\n    x: {range: [1, 61]}\n",
            ),
        ],
    );
    let own_fp = coordinator_fingerprint(&p, home.path());
    let agents: Vec<AgentProcess> = (0..2).map(|_| start_agent(&agent_bin)).collect();
    for (i, agent) in agents.iter().enumerate() {
        enlist(&p, &agent_bin, agent, &format!("a{i}"), &own_fp);
    }
    let mut cmd = p.command(&[
        "sweep",
        "run",
        "--sources",
        "local,a0,a1",
        "--sweep-id",
        "multi",
        "--parallel",
        "2",
    ]);
    cmd.env("HSM_HOME", home.path());
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let run = Run::wait(cmd.spawn().unwrap(), "sweep run across agents".into());
    run.expect_code(0);
    let status = p.status("multi");
    assert_eq!(status["completed"], 60, "{status}");
    let mut by_source = std::collections::HashMap::new();
    for task in status["tasks"].as_array().unwrap() {
        *by_source
            .entry(task["source"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    // No task ran twice: an attempt moved to an idle source before it started (work
    // stealing) leaves a cancelled attempt that never started.
    let db = rusqlite::Connection::open(p.sweep_dir("multi").join("sweep.db")).unwrap();
    let started_twice: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM (SELECT idx FROM attempts WHERE started_at IS NOT NULL
               GROUP BY idx HAVING COUNT(*) > 1)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(started_twice, 0, "no task ran twice: {status}");
    assert!(
        by_source.len() == 3,
        "every source ran tasks: {by_source:?}"
    );
    // An agent task's command.txt shows where its results really go on that host.
    for task in status["tasks"].as_array().unwrap() {
        let Some(i) = ["a0", "a1"].iter().position(|a| task["source"] == *a) else {
            continue;
        };
        let dir = p
            .sweep_dir("multi")
            .join("tasks")
            .join(task["task"].as_str().unwrap());
        let command = std::fs::read_to_string(dir.join("command.txt")).unwrap();
        let work = std::fs::canonicalize(agents[i].work_dir()).unwrap();
        assert!(
            command.contains(&format!("output.dir={}/multi/tasks/", work.display()))
                && !command.contains("__HSM_AGENT_OUTPUT_DIR__"),
            "{command}"
        );
    }
    for x in 1..=60u64 {
        let dir = p.sweep_dir("multi").join(format!("tasks/task_{x:03}"));
        let data =
            std::fs::read(dir.join("results/data.bin")).unwrap_or_else(|e| panic!("task {x}: {e}"));
        assert!(
            data == expected_data(x),
            "task {x}: result differs ({} bytes)",
            data.len()
        );
        let stdout = std::fs::read_to_string(dir.join("stdout.log")).unwrap();
        assert!(
            stdout.contains(&format!("task {x} says hi")),
            "task {x} stdout: {stdout:?}"
        );
    }
}

#[test]
fn an_agent_killed_mid_sweep_loses_no_task_and_runs_none_twice() {
    let Some(agent_bin) = agent_bin() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let slow = RESULT_PY.replace("import os, sys", "import os, sys, time\ntime.sleep(0.3)");
    let p = Project::new(
        "command:\n  python: python3\n  script: task.py\ndefaults:\n  kill_grace: 1s\n  agent_grace: 2s\n",
        &[("task.py", &slow), ("sweeps/sweep.yaml", "sweep:\n  grid:\n    x: {range: [1, 41]}\n")],
    );
    let own_fp = coordinator_fingerprint(&p, home.path());
    let mut agents: Vec<AgentProcess> = (0..2).map(|_| start_agent(&agent_bin)).collect();
    for (i, agent) in agents.iter().enumerate() {
        enlist(&p, &agent_bin, agent, &format!("a{i}"), &own_fp);
    }
    let mut cmd = p.command(&["sweep", "run", "--sources", "a0,a1", "--sweep-id", "lossy"]);
    cmd.env("HSM_HOME", home.path());
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let db = p.sweep_dir("lossy").join("sweep.db");
    wait_until(
        std::time::Duration::from_secs(60),
        "tasks completed on agent a0",
        || {
            db.exists()
                && p.try_status("lossy").is_some_and(|s| {
                    s["tasks"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|t| t["source"] == "a0" && t["status"] == "completed")
                        .count()
                        >= 3
                })
        },
    );
    agents[0].child.kill().expect("kill -9 agent a0");
    let run = Run::wait(child, "sweep run with an agent killed".into());
    run.expect_code(0);
    let status = p.status("lossy");
    assert_eq!(status["completed"], 40, "{status}");
    let db = rusqlite::Connection::open(p.sweep_dir("lossy").join("sweep.db")).unwrap();
    assert_eq!(completed_twice(&p, "lossy"), 0, "a task completed twice");
    let rerun: i64 = db
        .query_row("SELECT COUNT(*) FROM tasks WHERE attempt > 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(
        rerun >= 1,
        "the tasks running on a0 ran again: {}",
        run.stderr
    );
    assert_results_intact(&p, "lossy", 40);
}

#[test]
fn complete_and_status_work_the_same_for_agent_sweeps() {
    let Some(agent_bin) = agent_bin() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    // Fails for even x until the file `fixed` exists in the project.
    let script = RESULT_PY.replace(
        "x = int(args[\"x\"])",
        "x = int(args[\"x\"])\nif x % 2 == 0 and not os.path.exists(\"fixed\"):\n    sys.exit(4)",
    );
    let p = Project::new(
        "command:\n  python: python3\n  script: task.py\n",
        &[
            ("task.py", &script),
            (
                "sweeps/sweep.yaml",
                "sweep:\n  grid:\n    x: {range: [1, 9]}\n",
            ),
        ],
    );
    let own_fp = coordinator_fingerprint(&p, home.path());
    let agent = start_agent(&agent_bin);
    enlist(&p, &agent_bin, &agent, "a1", &own_fp);
    let run_with = |args: &[&str]| {
        let mut cmd = p.command(args);
        cmd.env("HSM_HOME", home.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        Run::wait(cmd.spawn().unwrap(), args.join(" "))
    };
    let first = run_with(&["sweep", "run", "--sources", "a1", "--sweep-id", "agentc"]);
    first.expect_code(1);
    let status = p.status("agentc");
    assert_eq!(
        (status["completed"].as_u64(), status["failed"].as_u64()),
        (Some(4), Some(4)),
        "{status}"
    );
    assert!(status["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["source"] == "a1"));
    let failed = &status["tasks"][1];
    assert_eq!(failed["exit_code"], 4, "{failed}");

    p.write("fixed", "");
    let second = run_with(&["sweep", "complete", "agentc", "--sources", "a1"]);
    second.expect_code(0);
    let status = p.status("agentc");
    assert_eq!(status["completed"], 8, "{status}");
    let db = rusqlite::Connection::open(p.sweep_dir("agentc").join("sweep.db")).unwrap();
    for task in status["tasks"].as_array().unwrap() {
        let x = task["params"]["x"].as_u64().unwrap();
        let history: Vec<(i64, String, Option<String>)> = db
            .prepare("SELECT attempt, status, reason FROM attempts WHERE idx = ?1 ORDER BY attempt")
            .unwrap()
            .query_map([x], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            task["attempt"],
            if x % 2 == 0 { 2 } else { 1 },
            "{task}\nattempts: {history:?}\nrun: {}\ncomplete: {}",
            first.stderr,
            second.stderr
        );
        let data = std::fs::read(
            p.sweep_dir("agentc")
                .join(format!("tasks/task_{x:03}/results/data.bin")),
        )
        .unwrap();
        assert!(data == expected_data(x), "task {x}");
    }
}

/// statvfs of the filesystem holding `dir`.
fn statvfs(dir: &std::path::Path) -> libc::statvfs {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: statvfs fills the zeroed struct we own from a valid C string.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut stat) }, 0);
    stat
}

/// Free bytes for unprivileged users on the filesystem holding `dir` (statvfs `f_bavail`).
fn free_disk(dir: &std::path::Path) -> u64 {
    let stat = statvfs(dir);
    stat.f_bavail * stat.f_frsize
}

/// Attempts that `a0` received after `after_ms` (unix ms), from sweep.db.
fn handed_to_a0_after(db: &rusqlite::Connection, after_ms: i64) -> i64 {
    db.query_row(
        "SELECT COUNT(*) FROM attempts WHERE source = 'a0' AND queued_at > ?1",
        [after_ms],
        |r| r.get(0),
    )
    .unwrap()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn an_agent_low_on_disk_gets_no_new_work_and_its_waiting_tasks_move() {
    low_disk_moves_work(Fill::Bytes);
}

#[test]
fn an_agent_out_of_inodes_gets_no_new_work_and_its_waiting_tasks_move() {
    low_disk_moves_work(Fill::Inodes);
}

/// What fills the agent's disk.
#[derive(Clone, Copy, PartialEq)]
enum Fill {
    /// A 2 GiB file on the real disk, crossing a `min_free_disk` set 1 GiB below its free space
    /// (no root or tmpfs needed; other tests' files are far smaller than the margin).
    Bytes,
    /// Thousands of empty files on a tmpfs of 12,000 inodes mounted over the agent's work
    /// directory (root only), below the 10,000 free inodes an agent needs however many bytes
    /// are free.
    Inodes,
}

/// A tmpfs mounted by a test, detached again when dropped.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Free inodes for unprivileged users on the filesystem holding `dir` (statvfs `f_favail`).
fn free_inodes(dir: &std::path::Path) -> u64 {
    statvfs(dir).f_favail
}

/// An agent's disk fills mid-sweep (`fill`): the tasks waiting there move to the local source and
/// it gets no new work; room comes back and it takes work again. Nothing is lost or run twice.
fn low_disk_moves_work(fill: Fill) {
    let Some(agent_bin) = agent_bin() else {
        return;
    };
    const GIB: u64 = 1 << 30;
    // SAFETY: geteuid has no preconditions.
    if fill == Fill::Inodes && unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: mounting a tmpfs with few inodes needs root (the test command runs as root in CI)");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let agent = start_agent_with(&agent_bin, None, "127.0.0.1:0", &["--heartbeat", "1"]);
    let mut _mounted = None;
    let threshold_mib = match fill {
        Fill::Bytes => {
            let free = free_disk(&agent.work_dir());
            if free < 4 * GIB {
                eprintln!("SKIPPED: needs 4 GiB free where the agent works (has {free} bytes)");
                return;
            }
            (free - GIB) >> 20
        }
        Fill::Inodes => {
            let dir = agent.work_dir();
            std::fs::create_dir_all(&dir).unwrap();
            let mounted = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=1g,nr_inodes=12000", "hsm-test"])
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success());
            if !mounted {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs on {} (no CAP_SYS_ADMIN here?)",
                    dir.display()
                );
                return;
            }
            _mounted = Some(Mounted(dir));
            100
        }
    };
    let slow = RESULT_PY.replace("import os, sys", "import os, sys, time\ntime.sleep(0.2)");
    let p = Project::new(
        &format!(
            "command:\n  python: python3\n  script: task.py\ndefaults:\n  kill_grace: 1s\n  min_free_disk: {threshold_mib}M\n"
        ),
        &[
            ("task.py", &slow),
            (
                "sweeps/sweep.yaml",
                "sweep:\n  grid:\n    x: {range: [1, 71]}\n",
            ),
        ],
    );
    let own_fp = coordinator_fingerprint(&p, home.path());
    enlist(&p, &agent_bin, &agent, "a0", &own_fp);
    let mut cmd = p.command(&[
        "sweep",
        "run",
        "--sources",
        "local,a0",
        "--parallel",
        "1",
        "--sweep-id",
        "lowdisk",
    ]);
    cmd.env("HSM_HOME", home.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let completed_on_a0 = || {
        p.try_status("lowdisk").map_or(0, |s| {
            s["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["source"] == "a0" && t["status"] == "completed")
                .count()
        })
    };
    wait_until(
        std::time::Duration::from_secs(60),
        "tasks completed on agent a0",
        || p.sweep_dir("lowdisk").join("sweep.db").exists() && completed_on_a0() >= 3,
    );

    // The agent's disk fills up.
    let ballast = agent.work_dir().join("ballast");
    let file = match fill {
        Fill::Bytes => {
            let file = std::fs::File::create(&ballast).unwrap();
            use std::os::fd::AsRawFd;
            // SAFETY: fallocate on a file descriptor we own.
            let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, (2 * GIB) as libc::off_t) };
            assert_eq!(rc, 0, "fallocate: {}", std::io::Error::last_os_error());
            Some(file)
        }
        Fill::Inodes => {
            std::fs::create_dir(&ballast).unwrap();
            let mut n = 0;
            while free_inodes(&ballast) >= 9_000 {
                for _ in 0..100 {
                    std::fs::File::create(ballast.join(n.to_string())).unwrap();
                    n += 1;
                }
            }
            None
        }
    };
    let filled_at = now_ms();
    let db = rusqlite::Connection::open(p.sweep_dir("lowdisk").join("sweep.db")).unwrap();
    let taken_back = || -> i64 {
        db.query_row(
            "SELECT COUNT(*) FROM attempts WHERE reason LIKE '%taken back from a0%'",
            [],
            |r| r.get(0),
        )
        .unwrap_or(0)
    };
    // Heartbeats come every second: two and a half seconds after the fill the agent is out of
    // rotation. (Tasks waiting there then move elsewhere — when any wait: these take long
    // enough that the agent is handed no more than its slots, so usually none do.)
    std::thread::sleep(std::time::Duration::from_secs(5));
    println!("attempts taken back from a0: {}", taken_back());
    let quiet_from = filled_at + 2500;
    let quiet_to = now_ms();
    assert_eq!(
        db.query_row(
            "SELECT COUNT(*) FROM attempts WHERE source = 'a0' AND queued_at BETWEEN ?1 AND ?2",
            [quiet_from, quiet_to],
            |r| r.get::<_, i64>(0),
        )
        .unwrap(),
        0,
        "no new work for an agent low on disk"
    );

    // Space comes back: the agent takes work again.
    match file {
        Some(file) => {
            drop(file);
            std::fs::remove_file(&ballast).unwrap();
        }
        None => std::fs::remove_dir_all(&ballast).unwrap(),
    }
    let freed_at = now_ms();
    let run = Run::wait(child, "sweep run with an agent low on disk".into());
    run.expect_code(0);
    let why = match fill {
        Fill::Bytes => "below min_free_disk",
        Fill::Inodes => "free inodes (files that can still be created) on its disk, below 10000",
    };
    assert!(
        run.stderr.contains(why) || run.stdout.contains(why),
        "the user is told why: {}{}",
        run.stdout,
        run.stderr
    );
    assert!(
        handed_to_a0_after(&db, freed_at) > 0,
        "a0 got work again once its disk had room"
    );
    let status = p.status("lowdisk");
    assert_eq!(status["completed"], 70, "{status}");
    assert_eq!(completed_twice(&p, "lowdisk"), 0, "a task completed twice");
    assert_results_intact(&p, "lowdisk", 70);
}

#[test]
fn bursts_of_launches_and_large_output_keep_the_control_stream_in_step() {
    // Regression: frames were read inside a `select!` with the outgoing queue; a frame half read
    // when an acknowledgement or a launch won the race was lost and the stream read out of step
    // ("a frame of 1.9 GB"): the connection dropped and waiting tasks ran a second attempt.
    // Large output makes frames span many packets; 1,000 tasks handed over at once keep the
    // outgoing queue busy.
    let Some(agent_bin) = agent_bin() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    // As many slots as tasks, so that all 1,000 are handed over at once.
    let agent = start_agent_with(&agent_bin, None, "127.0.0.1:0", &["--slots", "1000"]);
    let p = Project::new(
        "command:\n  template: [\"/bin/true\"]\n",
        &[(
            "sweeps/sweep.yaml",
            "sweep:\n  grid:\n    x: {range: [0, 1000]}\n",
        )],
    );
    let own_fp = coordinator_fingerprint(&p, home.path());
    enlist(&p, &agent_bin, &agent, "a0", &own_fp);
    // Every tenth task prints 2 MB; all 1,000 are handed over at once.
    p.write(
        ".hsm/config.yaml",
        &format!(
            "command:\n  template: [\"/bin/sh\", \"-c\", \"case $0 in *0) head -c 1500000 /dev/urandom | base64 ;; esac\", \"{{overrides}}\"]\nsources:\n  a0:\n    type: agent\n    address: {}\n    fingerprint: {}\n    project_dir: {}\n    slots: 1000\n",
            agent.addr,
            agent.fingerprint,
            p.path().display()
        ),
    );
    let mut cmd = p.command(&["sweep", "run", "--sources", "a0", "--sweep-id", "burst"]);
    cmd.env("HSM_HOME", home.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let run = Run::wait(cmd.spawn().unwrap(), "sweep run of 1,000 tasks".into());
    run.expect_code(0);
    let db = rusqlite::Connection::open(p.sweep_dir("burst").join("sweep.db")).unwrap();
    let (completed, later): (i64, i64) = db
        .query_row(
            "SELECT SUM(status = 'completed'), SUM(attempt > 1) FROM tasks",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((completed, later), (1000, 0), "{}", run.stderr);
    let log =
        std::fs::read_to_string(p.sweep_dir("burst").join("tasks/task_0011/stdout.log")).unwrap();
    // 1.5 MB as base64: 2,000,000 characters in lines of 76, each with its newline.
    assert_eq!(
        log.len(),
        2_026_316,
        "task 11 (x=10): all its output arrived"
    );
}

#[test]
fn an_agent_keeps_result_files_only_when_told_to() {
    let Some(agent_bin) = agent_bin() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let p = Project::new(
        "command:\n  python: python3\n  script: task.py\n",
        &[
            ("task.py", RESULT_PY),
            ("sweeps/sweep.yaml", "sweep:\n  grid:\n    x: [1, 2, 3]\n"),
        ],
    );
    let own_fp = coordinator_fingerprint(&p, home.path());
    let keeping = start_agent_with(&agent_bin, None, "127.0.0.1:0", &["--keep-results"]);
    let default = start_agent(&agent_bin);
    enlist(&p, &agent_bin, &keeping, "keep", &own_fp);
    enlist(&p, &agent_bin, &default, "plain", &own_fp);
    for (source, id) in [("keep", "kept"), ("plain", "deleted")] {
        let mut cmd = p.command(&["sweep", "run", "--sources", source, "--sweep-id", id]);
        cmd.env("HSM_HOME", home.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        Run::wait(cmd.spawn().unwrap(), format!("sweep run on {source}")).expect_code(0);
        assert_results_intact(&p, id, 3);
    }
    for x in 1..=3u64 {
        let kept = keeping
            .work_dir()
            .join(format!("kept/tasks/task_{x:03}/results/data.bin"));
        assert_eq!(
            std::fs::read(&kept).unwrap(),
            expected_data(x),
            "{}",
            kept.display()
        );
        let deleted = default
            .work_dir()
            .join(format!("deleted/tasks/task_{x:03}/results"));
        assert!(!deleted.exists(), "{}", deleted.display());
    }
}
