//! The ssh transport against a real OpenSSH server: two network-namespace hosts
//! (`tests/ssh-netns.sh` through `common::ssh_hosts`), each running `hsm-agent serve` (started
//! here, not deployed) and sshd; the second drops all UDP from outside, like a login node. `transport: ssh` runs a sweep there (and survives its `ssh`
//! process killed mid-sweep); `auto` uses UDP for the first host and finds ssh for the second.
//! Needs root and openssh-server; otherwise it says why and passes without running.

mod common;

use common::ssh_hosts::{self, SshHosts};
use common::*;
use std::path::Path;
use std::time::Duration;

/// The `ssh` processes whose parent is `parent`.
fn ssh_children(parent: u32) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let ppid = stat[close + 1..].split_whitespace().nth(1);
        if comm == "ssh" && ppid == Some(&parent.to_string()) {
            found.push(pid);
        }
    }
    found
}

/// Ends the control master the relays started (`ssh -O exit`, which names it by its socket).
fn stop_master(hosts: &SshHosts, control_path: &Path) {
    let _ = std::process::Command::new("ssh")
        .arg("-F")
        .arg(hosts.dir.path().join("ssh_config"))
        .arg("-o")
        .arg(format!("ControlPath={}", control_path.display()))
        .args(["-O", "exit", "h2"])
        .output();
}

fn completed(p: &Project, sweep: &str) -> u64 {
    p.try_status(sweep)
        .and_then(|s| s["completed"].as_u64())
        .unwrap_or(0)
}

/// The project config; `extra_ssh_options` are added to each source's `ssh_options` list.
fn config(
    p: &Project,
    hosts: &SshHosts,
    agents: &[(&str, &AgentProcess, &str)],
    extra_ssh_options: &str,
) -> String {
    let mut text =
        "command:\n  python: python3\n  script: task.py\ndefaults:\n  kill_grace: 1s\n  \
                    agent_grace: 120s\n  connect_timeout: 60s\nsources:\n"
            .to_string();
    for (name, agent, transport) in agents {
        let ip = hosts.ip(name);
        text.push_str(&format!(
            "  {name}:\n    type: agent\n    address: {ip}:7300\n    fingerprint: {}\n    \
             project_dir: {}\n    transport: {transport}\n    ssh: {name}\n    ssh_options: [-F, {}{extra_ssh_options}]\n",
            agent.fingerprint,
            p.path().display(),
            hosts.dir.path().join("ssh_config").display()
        ));
    }
    text
}

fn sweep(p: &Project, home: &Path, sources: &str, id: &str) -> std::process::Child {
    p.command(&["sweep", "run", "--sources", sources, "--sweep-id", id])
        .env("HSM_HOME", home)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: std::process::Child, p: &Project, id: &str, n: u64) -> String {
    let out = wait_with_timeout(child, Duration::from_secs(300), "sweep run");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_exactly_once(p, id, n);
    assert_results_intact(p, id, n);
    stderr
}

#[test]
fn over_a_real_sshd_the_ssh_transport_works_where_udp_is_dropped_and_auto_finds_it() {
    let Some(agent_bin) = agent_bin() else {
        return;
    };
    let tag = format!("sn{}", std::process::id() % 100_000);
    // The sessions find this build's hsm-agent for `hsm-agent relay`.
    let path = format!(
        "{}:/usr/local/bin:/usr/bin:/bin",
        agent_bin.parent().unwrap().display()
    );
    let hosts = match ssh_hosts::up(&tag, Some(&path)) {
        Ok(hosts) => hosts,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let net = hosts.net.clone();
    let control_path = hosts.dir.path().join("cm-%C");
    let h1 = start_agent_in(&agent_bin, Some(&format!("{tag}-h1")), "0.0.0.0:7300");
    let h2 = start_agent_in(&agent_bin, Some(&format!("{tag}-h2")), "0.0.0.0:7300");
    // Its ssh control masters (the relays share one per host) are closed with the hosts.
    let home = hosts.home.path();
    let task = RESULT_PY.replace("import os, sys", "import os, sys, time\ntime.sleep(0.2)");
    let p = Project::new(
        CONFIG,
        &[
            ("task.py", &task),
            (
                "sweeps/sweep.yaml",
                "sweep:\n  grid:\n    x: {range: [1, 41]}\n",
            ),
        ],
    );
    let own = coordinator_fingerprint(&p, home);
    for agent in [&h1, &h2] {
        let ok = std::process::Command::new(&agent_bin)
            .args(["authorize", &own, "--state-dir"])
            .arg(&agent.state)
            .output()
            .unwrap();
        assert!(ok.status.success());
    }

    // transport: ssh to the host that drops UDP, its ssh process killed mid-sweep.
    p.write(
        ".hsm/config.yaml",
        &config(
            &p,
            &hosts,
            &[("h1", &h1, "auto"), ("h2", &h2, "ssh")],
            &format!(
                ", -o, ControlMaster=auto, -o, \"ControlPath={}\", -o, ControlPersist=60",
                control_path.display()
            ),
        ),
    );
    let logins_before = hosts.logins("h2");
    let child = sweep(&p, home, "h2", "viassh");
    wait_until(
        Duration::from_secs(120),
        "a third of the tasks done",
        || completed(&p, "viassh") >= 13,
    );
    let ssh = ssh_children(child.id());
    assert_eq!(ssh.len(), 1, "one ssh relay: {ssh:?}");
    // SAFETY: kill has no memory preconditions; the pid is our child's child.
    assert_eq!(unsafe { libc::kill(ssh[0], libc::SIGKILL) }, 0);
    let stderr = finish(child, &p, "viassh", 40);
    // The killed ssh was a client of the control master, which stayed: the new relay used it,
    // so no second login (no second 2FA prompt on a real cluster).
    assert_eq!(
        hosts.logins("h2") - logins_before,
        1,
        "one ssh authentication for both relays"
    );
    stop_master(&hosts, &control_path);
    assert_eq!(
        stderr.matches("over ssh to h2").count(),
        2,
        "connected over ssh, lost it with the ssh process, connected again: {stderr}"
    );

    // auto: UDP to h1 (it answers), ssh to h2 (UDP dropped there), in one sweep.
    p.write(
        ".hsm/config.yaml",
        &config(&p, &hosts, &[("h1", &h1, "auto"), ("h2", &h2, "auto")], ""),
    );
    let child = sweep(&p, home, "h1,h2", "auto");
    let stderr = finish(child, &p, "auto", 40);
    assert!(
        stderr.contains(&format!("at {net}.6:7300 over ssh to h2")),
        "auto found ssh for h2: {stderr}"
    );
    assert!(
        stderr.contains(&format!("at {net}.2:7300 (")),
        "auto used UDP for h1: {stderr}"
    );
    assert!(!stderr.contains("over ssh to h1"), "{stderr}");
}
