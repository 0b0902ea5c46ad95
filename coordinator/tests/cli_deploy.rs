//! `agent deploy` through the real binary against a real OpenSSH server on a network-namespace
//! host (`tests/ssh-netns.sh` through `common::ssh_hosts`: h1, reachable over UDP, its own HOME): from nothing to a sweep
//! running there, a second deploy that changes nothing, an upgrade with a different binary, one
//! SSH authentication per deploy (counted in sshd's log), and `agent status|logs|stop`. Needs
//! root and openssh-server (tests/run-all.sh installs it); skips with a printed reason otherwise.

mod common;

use common::ssh_hosts::{self, close_masters};
use common::*;
use std::path::Path;
use std::time::Duration;

fn serve_pid(dir: &Path) -> Option<String> {
    let text =
        std::fs::read_to_string(dir.join("h1/home/.local/state/hsm-agent/serve.pid")).ok()?;
    text.lines().next().map(str::to_string)
}

fn sha256(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn run(p: &Project, home: &Path, args: &[&str]) -> Run {
    let mut cmd = p.command(args);
    cmd.env("HSM_HOME", home)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    Run::wait_within(
        cmd.spawn().unwrap(),
        format!("hsm-coordinator {}", args.join(" ")),
        Duration::from_secs(180),
    )
}

#[test]
fn deploy_from_nothing_to_a_sweep_then_up_to_date_then_upgrade_and_status_logs_stop() {
    let Some(agent_bin) = agent_bin() else {
        return;
    };
    let tag = format!("dp{}", std::process::id() % 100_000);
    let hosts = match ssh_hosts::up(&tag, None) {
        Ok(h) => h,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let dir = hosts.dir.path();
    let home = hosts.home.path();
    let net = &hosts.net;
    let ssh_config = dir.join("ssh_config");
    let ssh_config = ssh_config.to_str().unwrap();
    let p = Project::new(
        CONFIG,
        &[
            ("task.py", RESULT_PY),
            (
                "sweeps/sweep.yaml",
                "sweep:\n  grid:\n    x: {range: [1, 13]}\n",
            ),
        ],
    );
    // The namespace host shares this file system: the project is at the same path there.
    let project = p.path().to_str().unwrap();
    let deploy = |extra: &[&str]| {
        // A fresh connection per deploy, so each one's authentications can be counted.
        close_masters(home);
        let before = hosts.logins("h1");
        let mut args = vec![
            "agent",
            "deploy",
            "h1",
            "h1",
            "--ssh-config",
            ssh_config,
            "--project-dir",
            project,
        ];
        args.extend_from_slice(extra);
        let run = run(&p, home, &args);
        run.expect_code(0);
        // sshd logs the login a moment after the session starts; it is long done by now.
        let auths = hosts.logins("h1") - before;
        if auths != 1 {
            run.fail(&format!(
                "{auths} SSH authentications in one deploy, expected 1"
            ));
        }
        run
    };

    // 1. From nothing: binary installed in h1's home, identity, authorization, daemon, config.
    let first = deploy(&[]);
    assert!(first.stdout.contains("no hsm-agent at"), "{}", first.stdout);
    assert!(first.stdout.contains("sha256 verified"), "{}", first.stdout);
    assert!(first.stdout.contains("h1: deployed"), "{}", first.stdout);
    let installed = dir.join("h1/home/.local/bin/hsm-agent");
    assert_eq!(sha256(&installed), sha256(&agent_bin));
    let pid = serve_pid(dir).expect("a pidfile in h1's agent state dir");
    let config = std::fs::read_to_string(p.path().join(".hsm/config.yaml")).unwrap();
    assert!(
        config.contains(&format!("address: \"{net}.2:7300\""))
            || config.contains(&format!("address: {net}.2:7300")),
        "{config}"
    );
    assert!(config.contains("ssh: h1"), "{config}");

    // 2. A sweep on local and h1; results come back.
    let sweep = run(
        &p,
        home,
        &["sweep", "run", "--sources", "local,h1", "--sweep-id", "dep"],
    );
    sweep.expect_code(0);
    let status = p.status("dep");
    assert_eq!(status["completed"], 12, "{status}");
    let on_h1 = status["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["source"] == "h1")
        .count();
    assert!(on_h1 > 0, "no task ran on h1: {status}");
    assert_results_intact(&p, "dep", 12);

    // 3. Again: nothing changes, nothing restarts.
    let config_before = std::fs::read_to_string(p.path().join(".hsm/config.yaml")).unwrap();
    let second = deploy(&[]);
    assert!(
        second.stdout.contains("h1: up to date — nothing changed"),
        "{}",
        second.stdout
    );
    assert_eq!(serve_pid(dir).as_deref(), Some(pid.as_str()), "restarted");
    assert_eq!(
        std::fs::read_to_string(p.path().join(".hsm/config.yaml")).unwrap(),
        config_before
    );

    // 4. A different binary: copied, verified, the idle daemon restarted on it.
    let other = tempfile::tempdir().unwrap();
    let other_bin = other.path().join("hsm-agent");
    let mut bytes = std::fs::read(&agent_bin).unwrap();
    bytes.extend_from_slice(b"\nanother build\n");
    std::fs::write(&other_bin, bytes).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&other_bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let third = deploy(&["--agent-binary", other_bin.to_str().unwrap()]);
    assert!(third.stdout.contains("upgrading it"), "{}", third.stdout);
    assert!(
        third.stdout.contains("restarted hsm-agent serve"),
        "{}",
        third.stdout
    );
    assert_eq!(sha256(&installed), sha256(&other_bin));
    let new_pid = serve_pid(dir).unwrap();
    assert_ne!(new_pid, pid, "not restarted");
    p.run(&["-q", "sweep", "complete", "dep"]); // the upgraded agent is usable (and nothing is left)

    // 5. status, logs, stop over the same ssh path.
    let ssh_args = ["--ssh-config", ssh_config];
    let mut args = vec!["agent", "status", "h1"];
    args.extend_from_slice(&ssh_args);
    let st = run(&p, home, &args);
    st.expect_code(0);
    assert!(
        st.stdout.contains(&format!("h1: running, pid {new_pid}")),
        "{}",
        st.stdout
    );
    assert!(st.stdout.contains("0 tasks held"), "{}", st.stdout);
    let mut args = vec!["agent", "logs", "h1", "-n", "50"];
    args.extend_from_slice(&ssh_args);
    let logs = run(&p, home, &args);
    logs.expect_code(0);
    assert!(
        logs.stdout.contains("listening on 0.0.0.0:7300"),
        "{}",
        logs.stdout
    );
    let mut args = vec!["agent", "stop", "h1"];
    args.extend_from_slice(&ssh_args);
    let stop = run(&p, home, &args);
    stop.expect_code(0);
    assert!(
        stop.stdout
            .contains(&format!("stopped hsm-agent serve (pid {new_pid})")),
        "{}",
        stop.stdout
    );
    let mut args = vec!["agent", "status", "h1"];
    args.extend_from_slice(&ssh_args);
    let st = run(&p, home, &args);
    st.expect_code(1);
    assert!(st.stdout.contains("h1: not running"), "{}", st.stdout);
    drop(hosts);
}
