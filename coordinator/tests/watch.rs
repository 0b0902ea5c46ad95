//! `sweep watch` as a person sees it: a real sweep runs in one process while the real binary's
//! watch runs in a tmux pane (a real terminal), and the test reads the screen with
//! `tmux capture-pane`: progress, the per-source row, a running task with its last output line,
//! a failure with its reason, a resize, the watch ending by itself with a summary when the sweep
//! ends, and `q` / Ctrl-C giving the terminal back as it was. Skipped, saying why, without tmux.
//! And a sweep over the local source and a real agent, seen through the plain snapshot; and a
//! read failing mid-watch (exit 1, the reason, the terminal given back).

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A screen condition must hold within this long: a hang guard (the sweep's first tasks start
/// within seconds even on a busy machine).
const SCREEN_TIMEOUT: Duration = Duration::from_secs(90);

/// Every task prints a line, then: x=3 and x=10 raise an exception; x >= `gate_from` prints
/// where it waits and waits for the file `release` in the project (or for the project to be
/// deleted, so a failed test leaves no task behind); the others finish after 0.3 s.
fn task_py(project: &Path, gate_from: u32) -> String {
    format!(
        r#"
import os, sys, time
args = dict(a.split("=", 1) for a in sys.argv[1:])
x = int(args["x"])
print(f"x={{x}} starting", flush=True)
time.sleep(0.3)
if x in (3, 10):
    raise ValueError(f"bad input x={{x}}")
if x >= {gate_from}:
    print(f"x={{x}} waiting at step 7", flush=True)
    project = {project:?}
    deadline = time.time() + 600
    while not os.path.exists(os.path.join(project, "release")):
        if not os.path.isdir(project) or time.time() > deadline:
            sys.exit(9)
        time.sleep(0.1)
print(f"x={{x}} done", flush=True)
"#,
        project = project.display().to_string()
    )
}

/// A project whose sweep has `n` tasks (x = 1..=n), tasks from `gate_from` on held until
/// released.
fn project(n: u32, gate_from: u32) -> Project {
    let p = Project::new(
        "command:\n  python: python3\n  script: task.py\ndefaults:\n  kill_grace: 1s\n",
        &[],
    );
    p.write("task.py", &task_py(p.path(), gate_from));
    let xs: Vec<String> = (1..=n).map(|x| x.to_string()).collect();
    p.write(
        "sweeps/sweep.yaml",
        &format!("sweep:\n  grid:\n    x: [{}]\n", xs.join(", ")),
    );
    p
}

/// A tmux server of this test's own (its own socket, `hsm-test-<pid>-<n>` in a temporary
/// directory, no config file), killed when dropped, its socket removed with the directory.
struct Tmux {
    socket: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmux {
    /// `None` (after saying why) when tmux is not installed.
    fn start() -> Option<Tmux> {
        if Command::new("tmux").arg("-V").output().is_err() {
            eprintln!("SKIP: tmux is not installed; `sweep watch` needs a terminal to be tested");
            return None;
        }
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join(format!(
            "hsm-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        Some(Tmux { socket, _dir: dir })
    }

    fn run(&self, args: &[&str]) -> Output {
        let output = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(["-f", "/dev/null"])
            .args(args)
            .output()
            .expect("run tmux");
        assert!(
            output.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// A detached session `name`, `width` x `height`, running `command` (through sh).
    fn session(&self, name: &str, width: u16, height: u16, command: &str) {
        self.run(&[
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            command,
        ]);
    }

    /// What the pane shows.
    fn screen(&self, name: &str) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", name]).stdout).into_owned()
    }

    /// What the pane shows and every line scrolled off it.
    fn history(&self, name: &str) -> String {
        String::from_utf8_lossy(
            &self
                .run(&["capture-pane", "-p", "-S", "-", "-t", name])
                .stdout,
        )
        .into_owned()
    }

    /// A tmux format (`#{pane_dead}`, …) of the session's pane.
    fn format(&self, name: &str, format: &str) -> String {
        String::from_utf8_lossy(
            &self
                .run(&["display-message", "-p", "-t", name, format])
                .stdout,
        )
        .trim()
        .to_string()
    }

    /// The screen once `cond` holds for it; the last screen in the failure otherwise.
    fn wait_for(&self, name: &str, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + SCREEN_TIMEOUT;
        loop {
            let screen = self.screen(name);
            if cond(&screen) {
                return screen;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; the screen:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

fn watch_command(p: &Project, id: &str) -> String {
    format!(
        "env -u HSM_LOG {} -C {} sweep watch {id}",
        bin(),
        p.path().display()
    )
}

/// `command` in a shell that, once it ends, prints its exit code and how the terminal is set
/// (`isig icanon echo` when signals, line editing and echo are on), then stays: the shell,
/// not tmux, waits for the watch, and the pane stays alive to be looked at.
fn in_shell(command: &str) -> String {
    format!(
        "{command}; echo \"WATCH-EXIT=$?\"; stty -a | tr -s ' ;\\n' '\\n\\n\\n' | grep -x -e icanon -e echo -e isig | tr '\\n' ' '; echo; echo SHELL-BACK; exec sleep 600"
    )
}

/// Starts `sweep run` and waits until its database reads.
fn start_sweep(p: &Project, id: &str, parallel: &str) -> std::process::Child {
    let child = p.spawn(&["sweep", "run", "--parallel", parallel, "--sweep-id", id]);
    wait_until(SCREEN_TIMEOUT, "the sweep's database", || {
        p.try_status(id).is_some()
    });
    child
}

#[test]
fn watch_shows_a_running_sweep_and_ends_with_it() {
    let Some(tmux) = Tmux::start() else {
        return;
    };
    // 20 tasks on 2 slots: 16 complete, 2 fail, the last two are held running until released.
    let p = project(20, 19);
    let run = start_sweep(&p, "w1", "2");
    tmux.session("w", 120, 40, &in_shell(&watch_command(&p, "w1")));

    let screen = tmux.wait_for("w", "18 of 20 done, two held running", |s| {
        s.contains("18/20 (90%)")
            && s.contains("x=19 waiting at step 7")
            && s.contains("x=20 waiting at step 7")
    });
    let lines: Vec<&str> = screen.lines().collect();
    assert!(lines[0].starts_with("hsm watch · w1 · running"), "{screen}");
    assert!(
        screen.contains("completed 16 · failed 2 · cancelled 0 · running 2 · queued 0 · pending 0"),
        "{screen}"
    );
    assert!(
        screen.contains("ETA"),
        "an estimate while tasks finish:\n{screen}"
    );
    let source: Vec<&str> = lines
        .iter()
        .find(|l| l.starts_with("local "))
        .unwrap_or_else(|| panic!("no row for the local source:\n{screen}"))
        .split_whitespace()
        .collect();
    assert_eq!(
        source[..7],
        ["local", "local", "2", "2", "0", "16", "2"],
        "name, kind, slots, running, queued, completed, failed:\n{screen}"
    );
    assert!(
        source[7].parse::<f64>().is_ok_and(|r| r > 0.0),
        "a throughput:\n{screen}"
    );
    for x in [19, 20] {
        let row = lines
            .iter()
            .find(|l| l.starts_with(&format!("task_0{x}")))
            .unwrap_or_else(|| panic!("task_0{x} not shown running:\n{screen}"));
        assert!(
            row.contains("local") && row.ends_with(&format!("x={x} waiting at step 7")),
            "elapsed time and the last output line: {row:?}\n{screen}"
        );
    }
    assert!(screen.contains("FAILED (2, newest first)"), "{screen}");
    let failure = lines
        .iter()
        .find(|l| l.starts_with("task_010"))
        .unwrap_or_else(|| panic!("the failure of task_010 not shown:\n{screen}"));
    assert!(
        failure.ends_with("ValueError: bad input x=<n>"),
        "{failure:?}"
    );
    assert!(
        lines.last().is_some_and(|l| l.starts_with("q quit")),
        "{screen}"
    );

    // Not a terminal: one plain snapshot, at once, while the sweep still runs.
    let plain = p.run(&["sweep", "watch", "w1"]);
    plain.expect_code(0);
    assert!(
        plain.stdout.starts_with("hsm watch · w1 · running")
            && plain.stdout.contains("x=19 waiting at step 7")
            && !plain.stdout.contains('\x1b'),
        "{}",
        plain.stdout
    );

    // A smaller terminal: the frame follows, no row wider than it.
    tmux.run(&["resize-window", "-t", "w", "-x", "60", "-y", "16"]);
    let small = tmux.wait_for("w", "the frame redrawn for 60x16", |s| {
        s.lines().count() <= 16
            && s.lines().all(|l| l.chars().count() < 60)
            && s.contains("RUNNING (2)")
    });
    assert!(small.starts_with("hsm watch · w1"), "{small}");
    assert!(small.contains("…"), "long rows cut, not wrapped:\n{small}");

    // The sweep ends: the watch ends by itself, exit 0, the summary on the shell's screen.
    p.write("release", "");
    let run = Run::wait(run, "sweep run".into());
    run.expect_code(1);
    let end = tmux.wait_for("w", "the watch ending by itself", |s| {
        s.contains("SHELL-BACK")
    });
    // Joined: the summary is wider than the resized pane.
    let joined = tmux.history("w").replace('\n', "");
    assert!(
        joined.contains("w1 ended: 18 completed, 2 failed, 0 cancelled, 0 pending, of 20 tasks"),
        "{end}"
    );
    assert!(end.contains("WATCH-EXIT=0"), "{end}");
    assert!(
        end.contains("isig icanon echo"),
        "the terminal given back:\n{end}"
    );
    assert!(
        !end.contains("hsm watch"),
        "the shell's screen back:\n{end}"
    );
    assert_eq!(tmux.format("w", "#{alternate_on}"), "0", "{end}");
    assert_eq!(
        tmux.format("w", "#{cursor_flag}"),
        "1",
        "cursor shown:\n{end}"
    );
}

#[test]
fn q_and_ctrl_c_leave_the_watch_and_give_the_terminal_back() {
    let Some(tmux) = Tmux::start() else {
        return;
    };
    let p = project(2, 1);
    let run = start_sweep(&p, "w2", "2");
    for (session, key, code) in [("quit", "q", 0), ("ctrlc", "C-c", 130)] {
        tmux.session(session, 100, 30, &in_shell(&watch_command(&p, "w2")));
        tmux.wait_for(session, "two tasks waiting", |s| {
            s.contains("RUNNING (2)") && s.contains("x=2 waiting at step 7")
        });
        assert_eq!(tmux.format(session, "#{alternate_on}"), "1");
        assert_eq!(
            tmux.format(session, "#{cursor_flag}"),
            "0",
            "no cursor in the view"
        );
        tmux.run(&["send-keys", "-t", session, key]);
        let screen = tmux.wait_for(session, "the shell after the watch", |s| {
            s.contains("SHELL-BACK")
        });
        assert!(
            screen.contains(&format!("WATCH-EXIT={code}")),
            "{key}: exit code {code}:\n{screen}"
        );
        assert!(
            screen.contains("isig icanon echo"),
            "{key}: signals, line editing and echo back on:\n{screen}"
        );
        assert!(
            !screen.contains("hsm watch"),
            "{key}: the shell's screen back:\n{screen}"
        );
        assert_eq!(tmux.format(session, "#{alternate_on}"), "0", "{key}");
        assert_eq!(
            tmux.format(session, "#{cursor_flag}"),
            "1",
            "{key}: cursor shown"
        );
        // The session is left open (its shell sleeps): killing the server's last session makes
        // the server exit, and the next `new-session` could reach it while it is going away.
    }
    assert!(
        p.try_status("w2").is_some_and(|s| s["running"] == 2),
        "the sweep goes on"
    );
    p.write("release", "");
    Run::wait(run, "sweep run".into()).expect_code(0);
}

/// A sweep spread over the local source and an agent: each has its row (kind, slots as the run
/// set them: `auto` for an agent that reports its own), and the agent's running tasks show the
/// last line they printed on the agent's host (streamed into the sweep's task directory).
#[test]
fn an_agent_s_tasks_and_row_are_shown_beside_the_local_ones() {
    let Some(agent_bin) = agent_bin() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    // x=3 fails; 1, 2 and 4 are held running.
    let p = project(4, 1);
    let own_fp = coordinator_fingerprint(&p, home.path());
    let agent = start_agent(&agent_bin);
    enlist(&p, &agent_bin, &agent, "a1", &own_fp);
    let mut cmd = p.command(&[
        "sweep",
        "run",
        "--sources",
        "local,a1",
        "--parallel",
        "1",
        "--sweep-id",
        "w3",
    ]);
    cmd.env("HSM_HOME", home.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let run = cmd.spawn().unwrap();
    wait_until(SCREEN_TIMEOUT, "the sweep's database", || {
        p.try_status("w3").is_some()
    });
    // One local slot: three waiting means two run on the agent.
    let deadline = Instant::now() + SCREEN_TIMEOUT;
    let snapshot = loop {
        let plain = p.run(&["sweep", "watch", "w3"]);
        plain.expect_code(0);
        // x=3's failure recorded too: it can still show as running for a moment after its
        // exit on the agent (its output arrives before its ending is written).
        if [1, 2, 4]
            .iter()
            .all(|x| plain.stdout.contains(&format!("x={x} waiting")))
            && plain.stdout.contains("failed 1 ·")
        {
            break plain.stdout;
        }
        if Instant::now() > deadline {
            panic!(
                "three tasks never shown waiting; the last snapshot:\n{}",
                plain.stdout
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let row = |name: &str| -> Vec<String> {
        snapshot
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for {name}:\n{snapshot}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        row("local")[..4],
        ["local", "local", "1", "1"],
        "{snapshot}"
    );
    assert_eq!(row("a1")[..4], ["a1", "agent", "auto", "2"], "{snapshot}");
    let running_on = |source: &str| {
        snapshot
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some(source))
            .filter(|l| l.ends_with(" waiting at step 7"))
            .count()
    };
    assert_eq!(
        (running_on("local"), running_on("a1")),
        (1, 2),
        "each running task with its source and last line:\n{snapshot}"
    );
    assert!(
        snapshot
            .lines()
            .any(|l| l.starts_with("task_003") && l.ends_with("ValueError: bad input x=<n>")),
        "the failure's signature, wherever it ran:\n{snapshot}"
    );
    p.write("release", "");
    Run::wait(run, "sweep run --sources local,a1".into()).expect_code(1);
    drop(agent);
}

/// A read that fails in the middle of a watch (here: the database removed while the sweep's
/// lock is held, as if its coordinator ran) ends the watch with exit 1 and the reason, on the
/// shell's screen, with the terminal given back.
#[test]
fn an_error_while_watching_gives_the_terminal_back_and_says_why() {
    let Some(tmux) = Tmux::start() else {
        return;
    };
    let p = project(2, 99);
    p.run(&["sweep", "run", "--sweep-id", "w4"]).expect_code(0);
    let dir = p.sweep_dir("w4");
    // This test is the "coordinator": it holds the sweep's lock.
    let lock = std::fs::File::options()
        .read(true)
        .write(true)
        .open(dir.join(".coordinator.lock"))
        .unwrap();
    lock.lock().unwrap();
    tmux.session("e", 100, 30, &in_shell(&watch_command(&p, "w4")));
    tmux.wait_for("e", "the watch of a sweep whose lock is held", |s| {
        s.starts_with("hsm watch · w4 · running") && s.contains("completed 2")
    });
    for name in ["sweep.db", "sweep.db-wal", "sweep.db-shm"] {
        let _ = std::fs::remove_file(dir.join(name));
    }
    let end = tmux.wait_for("e", "the watch ending on the error", |s| {
        s.contains("SHELL-BACK")
    });
    assert!(end.contains("WATCH-EXIT=1"), "{end}");
    assert!(
        end.lines()
            .any(|l| l.starts_with("hsm-coordinator: ") && l.contains("sweep.db")),
        "the reason, naming the file:\n{end}"
    );
    assert!(
        end.contains("isig icanon echo"),
        "the terminal given back:\n{end}"
    );
    assert_eq!(tmux.format("e", "#{alternate_on}"), "0", "{end}");
    assert_eq!(tmux.format("e", "#{cursor_flag}"), "1", "{end}");
    drop(lock);
}
