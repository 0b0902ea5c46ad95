//! `hsm-agent serve --detach`, `status` and `stop` through the real binary: the daemon runs in
//! a session of its own (so the end of an SSH session does not stop it), says where it listens,
//! is seen by `status` (and a stale pidfile is not), and `stop` ends it.

use std::process::Command;
use std::time::{Duration, Instant};

fn agent(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hsm-agent"))
        .args(args)
        .env_remove("HSM_AGENT_HOME")
        .env_remove("HSM_AGENT_DETACHED")
        .output()
        .expect("run hsm-agent")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
}

/// Stops the daemon by its pid if the test fails before `stop` did.
struct Guard(Option<i32>);
impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            // SAFETY: kill has no memory preconditions; the pid is the daemon this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

#[test]
fn a_detached_daemon_runs_in_its_own_session_until_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let s = state.to_str().unwrap();
    assert!(agent(&["init", "--state-dir", s]).status.success());

    let out = agent(&["status", "--state-dir", s]);
    assert!(out.status.success());
    assert_eq!(field(&text(&out.stdout), "running"), Some("no"));

    // Returns (the parent exits) once the daemon listens.
    let out = agent(&[
        "serve",
        "--detach",
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        s,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let pid: i32 = field(&stdout, "pid").unwrap().parse().unwrap();
    let _guard = Guard(Some(pid));
    assert!(field(&stdout, "listening on")
        .unwrap()
        .starts_with("127.0.0.1:"));

    // Its own session: the session id (field 6 of /proc/PID/stat) is its pid.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(fields[3], pid.to_string(), "session of {pid}: {stat}");
    assert_eq!(fields[2], pid.to_string(), "process group of {pid}: {stat}");

    let out = agent(&["status", "--state-dir", s]);
    let status = text(&out.stdout);
    assert_eq!(field(&status, "running"), Some("yes"), "{status}");
    assert_eq!(field(&status, "pid"), Some(pid.to_string().as_str()));
    assert_eq!(field(&status, "version"), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(field(&status, "current"), Some("yes"), "{status}");
    assert_eq!(field(&status, "tasks"), Some("0"), "{status}");
    let log = std::fs::read_to_string(state.join("serve.log")).unwrap();
    assert!(log.contains("listening on 127.0.0.1:"), "{log}");

    // A second detached serve on the same state dir fails, and says why.
    let out = agent(&[
        "serve",
        "--detach",
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        s,
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("uses the state dir"),
        "{}",
        text(&out.stderr)
    );

    let out = agent(&["stop", "--state-dir", s]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("pid {pid}")));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = text(&agent(&["status", "--state-dir", s]).stdout);
        if field(&status, "running") == Some("no") {
            break;
        }
        assert!(Instant::now() < deadline, "still running: {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!state.join("serve.pid").exists(), "pidfile left behind");
    let out = agent(&["stop", "--state-dir", s]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("no hsm-agent serve runs"));
}
