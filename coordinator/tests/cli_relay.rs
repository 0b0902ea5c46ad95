//! The ssh transport without sshd: `HSM_SSH` names a stand-in for `ssh` that runs the remote
//! command (`hsm-agent relay --to 127.0.0.1:PORT`) on this machine, so the QUIC connection to a
//! real `hsm-agent serve` goes through a real relay process over a pipe. The relay is killed
//! mid-sweep; the coordinator starts a new one and nothing is lost or run twice. (A real sshd
//! whose host drops UDP is `cli_ssh_netns.rs`.)

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The stand-in for `ssh`: appends its pid (which becomes the relay's: `exec` all the way) to
/// `$RELAY_PIDS` and runs its last argument, the remote command, with `sh -c`.
const FAKE_SSH: &str =
    "#!/bin/sh\necho $$ >> \"$RELAY_PIDS\"\nfor last; do :; done\nexec sh -c \"$last\"\n";

struct FakeSsh {
    dir: tempfile::TempDir,
}

impl FakeSsh {
    fn new() -> FakeSsh {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fake-ssh");
        std::fs::write(&path, FAKE_SSH).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        FakeSsh { dir }
    }

    fn program(&self) -> PathBuf {
        self.dir.path().join("fake-ssh")
    }

    fn pids_file(&self) -> PathBuf {
        self.dir.path().join("pids")
    }

    /// The relays started so far, oldest first.
    fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.pids_file())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// The environment that makes the coordinator use it, with `hsm-agent` on the PATH.
    fn env(&self, agent_bin: &Path) -> Vec<(String, String)> {
        let path = format!(
            "{}:{}",
            agent_bin.parent().unwrap().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        vec![
            ("HSM_SSH".into(), self.program().display().to_string()),
            ("RELAY_PIDS".into(), self.pids_file().display().to_string()),
            ("PATH".into(), path),
        ]
    }
}

fn completed(p: &Project, sweep: &str) -> u64 {
    p.try_status(sweep)
        .and_then(|s| s["completed"].as_u64())
        .unwrap_or(0)
}

/// A project whose tasks (`RESULT_PY`, after `sleep` seconds) run only on `agent`, reached with
/// `transport` (the source's other transport keys in `extra`).
fn project(
    agent_bin: &Path,
    agent: &AgentProcess,
    home: &Path,
    tasks: u64,
    sleep: f64,
    source_keys: &str,
) -> Project {
    let task = RESULT_PY.replace(
        "import os, sys",
        &format!("import os, sys, time\ntime.sleep({sleep})"),
    );
    let p = Project::new(
        "command:\n  python: python3\n  script: task.py\n",
        &[
            ("task.py", &task),
            (
                "sweeps/sweep.yaml",
                &format!("sweep:\n  grid:\n    x: {{range: [1, {}]}}\n", tasks + 1),
            ),
        ],
    );
    let own = coordinator_fingerprint(&p, home);
    let ok = std::process::Command::new(agent_bin)
        .args(["authorize", &own, "--state-dir"])
        .arg(&agent.state)
        .output()
        .unwrap();
    assert!(ok.status.success());
    p.write(
        ".hsm/config.yaml",
        &format!(
            "command:\n  python: python3\n  script: task.py\ndefaults:\n  kill_grace: 1s\n  agent_grace: 120s\n\
             sources:\n  a0:\n    type: agent\n    address: {}\n    fingerprint: {}\n    project_dir: {}\n{source_keys}",
            agent.addr,
            agent.fingerprint,
            p.path().display()
        ),
    );
    p
}

fn run_sweep(p: &Project, home: &Path, env: &[(String, String)], id: &str) -> std::process::Child {
    let mut cmd = p.command(&["sweep", "run", "--sources", "a0", "--sweep-id", id]);
    cmd.env("HSM_HOME", home)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd.spawn().unwrap()
}

#[test]
fn a_sweep_runs_through_the_relay_and_survives_the_relay_killed_mid_sweep() {
    let Some(agent_bin) = agent_bin() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let agent = start_agent(&agent_bin);
    let ssh = FakeSsh::new();
    let p = project(
        &agent_bin,
        &agent,
        home.path(),
        60,
        0.2,
        "    transport: ssh\n    ssh: relayhost\n",
    );
    let child = run_sweep(&p, home.path(), &ssh.env(&agent_bin), "relay");
    wait_until(
        Duration::from_secs(120),
        "a third of the tasks done",
        || completed(&p, "relay") >= 20,
    );
    let first = ssh.pids();
    assert_eq!(first.len(), 1, "one relay so far: {first:?}");
    // kill -9 of the relay (the process the coordinator started as `ssh`).
    // SAFETY: kill has no memory preconditions; the pid is the test's own grandchild.
    assert_eq!(unsafe { libc::kill(first[0], libc::SIGKILL) }, 0);
    wait_until(Duration::from_secs(60), "a new relay", || {
        ssh.pids().len() >= 2
    });
    let out = wait_with_timeout(child, Duration::from_secs(300), "sweep run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_exactly_once(&p, "relay", 60);
    assert_results_intact(&p, "relay", 60);
    // Connected over ssh, lost the connection when the relay died, connected again.
    assert_eq!(
        stderr.matches("over ssh to relayhost").count(),
        2,
        "the run says it connected over ssh, twice: {stderr}"
    );
    assert!(
        stderr.contains("ended: signal: 9"),
        "the lost connection names the relay's end: {stderr}"
    );
    assert!(!pid_alive(first[0]), "the killed relay is gone");
}

#[test]
fn a_relay_that_cannot_start_is_retried_and_said_why() {
    let Some(agent_bin) = agent_bin() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let agent = start_agent(&agent_bin);
    let ssh = FakeSsh::new();
    let p = project(
        &agent_bin,
        &agent,
        home.path(),
        2,
        0.0,
        "    transport: ssh\n    ssh: relayhost\n",
    );
    // No hsm-agent on the PATH the remote command sees: the "ssh" exits 127 at once.
    let mut env = ssh.env(&agent_bin);
    env.retain(|(k, _)| k != "PATH");
    env.push(("PATH".into(), "/usr/bin:/bin".into()));
    let mut cmd = p.command(&["sweep", "run", "--sources", "a0", "--sweep-id", "norelay"]);
    cmd.env("HSM_HOME", home.path())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    wait_until(Duration::from_secs(60), "the relay started again", || {
        ssh.pids().len() >= 3
    });
    // SAFETY: as above; the coordinator is the test's child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = wait_with_timeout(child, Duration::from_secs(60), "sweep run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ssh to relayhost failed") && stderr.contains("hsm-agent"),
        "the reason names the relay and what it said: {stderr}"
    );
}

#[test]
fn config_validate_refuses_transport_ssh_without_a_target_and_unknown_transports() {
    let agent = |keys: &str| {
        format!(
            "command:\n  python: python3\n  script: task.py\nsources:\n  a0:\n    type: agent\n    \
             address: gpu1:7300\n    fingerprint: sha256:{}\n    project_dir: /p\n{keys}",
            "ab".repeat(32)
        )
    };
    let files = [
        ("task.py", ""),
        ("sweeps/sweep.yaml", "sweep:\n  grid:\n    x: [1]\n"),
    ];
    let p = Project::new(&agent("    transport: ssh\n"), &files);
    let run = p.run(&["config", "validate"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains(".hsm/config.yaml:10:16")
            && run
                .stderr
                .contains("transport: ssh needs `ssh: [user@]host`"),
        "{}",
        run.stderr
    );
    let p = Project::new(&agent("    transport: udp\n"), &files);
    let run = p.run(&["config", "validate"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("unknown transport `udp`") && run.stderr.contains("auto"),
        "{}",
        run.stderr
    );
    let p = Project::new(
        &agent("    transport: ssh\n    ssh: alice@gpu1\n    ssh_options: [-p, \"2222\"]\n"),
        &files,
    );
    p.run(&["config", "validate"]).expect_code(0);
    let shown = p.run(&["config", "show"]);
    shown.expect_code(0);
    assert!(shown.stdout.contains("alice@gpu1"), "{}", shown.stdout);
}

#[test]
fn agent_ping_goes_through_the_relay_when_the_source_says_ssh() {
    let Some(agent_bin) = agent_bin() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let agent = start_agent(&agent_bin);
    let ssh = FakeSsh::new();
    let p = project(
        &agent_bin,
        &agent,
        home.path(),
        1,
        0.0,
        "    transport: ssh\n    ssh: relayhost\n",
    );
    let out = p
        .command(&["agent", "ping", "a0"])
        .env("HSM_HOME", home.path())
        .envs(ssh.env(&agent_bin).iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("a0 (") && stdout.contains("ok, round trip"),
        "{stdout}"
    );
    assert_eq!(ssh.pids().len(), 1, "the ping went through one relay");
}
