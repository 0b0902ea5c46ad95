//! `agent deploy` through the real binary against real OpenSSH servers on network-namespace
//! hosts (`tests/ssh-netns.sh` through `common::ssh_hosts`, each host with its own HOME), one
//! SSH authentication per deploy (counted in sshd's log).
//! - h1 (UDP reaches it): from nothing to a sweep, a second deploy that changes nothing, an
//!   upgrade with a different binary, a `work_dir` set later (the run warns; a deploy moves the
//!   agent there), `agent status|logs|stop` with the ssh config the deploy stored.
//! - h2 (all UDP from outside dropped): from nothing to a sweep over ssh (`transport: auto`)
//!   with a per-source `python` and `pre_script`, pre-flight refusing a wrong `project_dir`,
//!   an upgrade held while it holds tasks and then `--restart`ed mid-sweep; and, from a
//!   project that is not on h2, `sync: push` written by deploy and the project sent by the
//!   first sweep.
//!
//! Needs root and openssh-server (tests/run-all.sh installs it); skips with a printed reason
//! otherwise.
mod common;

use common::ssh_hosts::{self, close_masters};
use common::*;
use std::path::Path;
use std::time::Duration;

/// The pid of the agent daemon whose state dir is in `home` (a host's home).
fn serve_pid_in(home: &Path) -> Option<String> {
    let text = std::fs::read_to_string(home.join(".local/state/hsm-agent/serve.pid")).ok()?;
    text.lines().next().map(str::to_string)
}

fn serve_pid(dir: &Path) -> Option<String> {
    serve_pid_in(&dir.join("h1/home"))
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
fn deploy_from_nothing_to_a_sweep_then_up_to_date_upgrade_work_dir_and_status_logs_stop() {
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
        let mut args = vec!["agent", "deploy", "h1", "h1"];
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
    let first = deploy(&[
        "--ssh-config",
        ssh_config,
        "--project-dir",
        project,
        "--ledger-retention",
        "7d",
    ]);
    assert!(first.stdout.contains("no hsm-agent at"), "{}", first.stdout);
    assert!(first.stdout.contains("sha256 verified"), "{}", first.stdout);
    assert!(first.stdout.contains("h1: deployed"), "{}", first.stdout);
    let installed = dir.join("h1/home/.local/bin/hsm-agent");
    assert_eq!(sha256(&installed), sha256(&agent_bin));
    let pid = serve_pid(dir).expect("a pidfile in h1's agent state dir");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("--ledger-retention\x007d"),
        "the daemon was started without the retention given: {:?}",
        String::from_utf8_lossy(&cmdline)
    );
    let config = std::fs::read_to_string(p.path().join(".hsm/config.yaml")).unwrap();
    assert!(
        config.contains(&format!("address: \"{net}.2:7300\""))
            || config.contains(&format!("address: {net}.2:7300")),
        "{config}"
    );
    assert!(config.contains("ssh: h1"), "{config}");
    assert!(
        config.contains(&format!("ssh_options: [\"-F\", {ssh_config}]")),
        "{config}"
    );

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
    let second = deploy(&["--ssh-config", ssh_config, "--project-dir", project]);
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
    // Without --ssh-config: the one the first deploy stored is used.
    let third = deploy(&["--agent-binary", other_bin.to_str().unwrap()]);
    assert!(third.stdout.contains("upgrading it"), "{}", third.stdout);
    assert!(
        third.stdout.contains("restarted hsm-agent serve"),
        "{}",
        third.stdout
    );
    assert_eq!(sha256(&installed), sha256(&other_bin));
    let upgraded_pid = serve_pid(dir).unwrap();
    assert_ne!(upgraded_pid, pid, "not restarted");
    p.run(&["-q", "sweep", "complete", "dep"]); // the upgraded agent is usable (and nothing is left)

    // 4b. A work_dir set after the agent started: the run warns (host, both paths, the fix)
    // and still runs there; a deploy restarts the idle agent in it; the next run is quiet and
    // its task directories are there.
    set_source_key(&p, "h1", "work_dir", "~/hsm-work");
    let warned = run(
        &p,
        home,
        &["sweep", "run", "--sources", "h1", "--sweep-id", "wd1"],
    );
    warned.expect_code(0);
    let default_work = dir.join("h1/home/.local/state/hsm-agent/work");
    for want in [
        "source h1: connected to ".to_string(),
        format!(
            "warning: its agent keeps task directories in {}, not in the configured work_dir \
             ~/hsm-work",
            default_work.display()
        ),
        "`hsm-coordinator agent deploy h1 h1 --restart`".to_string(),
    ] {
        if !warned.stderr.contains(&want) {
            warned.fail(&format!("no `{want}`"));
        }
    }
    assert!(
        default_work.join("wd1").is_dir(),
        "wd1 ran in the agent's dir"
    );
    let moved = deploy(&[]);
    let work = dir.join("h1/home/hsm-work");
    for want in [
        "keeps task directories in".to_string(),
        "restarted hsm-agent serve".to_string(),
        format!("task directories in {}", work.display()),
    ] {
        if !moved.stdout.contains(&want) {
            moved.fail(&format!("no `{want}`"));
        }
    }
    let new_pid = serve_pid(dir).unwrap();
    assert_ne!(new_pid, upgraded_pid, "not restarted in the new work_dir");
    let quiet = run(
        &p,
        home,
        &["sweep", "run", "--sources", "h1", "--sweep-id", "wd2"],
    );
    quiet.expect_code(0);
    if quiet.stderr.contains("warning: its agent keeps") {
        quiet.fail("warned although the agent now runs in its work_dir");
    }
    assert!(
        work.join("wd2").is_dir(),
        "wd2 not in the configured work_dir"
    );
    assert!(!default_work.join("wd2").exists());

    // 5. status, logs, stop over the same ssh path: the ssh config the deploy used is in the
    // source (`ssh_options`), so they need no --ssh-config (and log in again without the
    // deploy's connection).
    close_masters(home);
    let st = run(&p, home, &["agent", "status", "h1"]);
    st.expect_code(0);
    assert!(
        st.stdout.contains(&format!("h1: running, pid {new_pid}")),
        "{}",
        st.stdout
    );
    assert!(st.stdout.contains("0 tasks held"), "{}", st.stdout);
    assert!(
        st.stdout
            .contains(&format!("task directories in {}", work.display())),
        "{}",
        st.stdout
    );
    let logs = run(&p, home, &["agent", "logs", "h1", "-n", "50"]);
    logs.expect_code(0);
    assert!(
        logs.stdout.contains("listening on 0.0.0.0:7300"),
        "{}",
        logs.stdout
    );
    let stop = run(&p, home, &["agent", "stop", "h1"]);
    stop.expect_code(0);
    assert!(
        stop.stdout
            .contains(&format!("stopped hsm-agent serve (pid {new_pid})")),
        "{}",
        stop.stdout
    );
    // Given options replace the stored ones for that command.
    let st = run(
        &p,
        home,
        &["agent", "status", "h1", "--ssh-config", ssh_config],
    );
    st.expect_code(1);
    assert!(st.stdout.contains("h1: not running"), "{}", st.stdout);
    drop(hosts);
}

/// A task that says which interpreter wrapper and pre_script it ran under, sleeps for
/// `sleep=S` when given, and writes `RESULT_PY`'s result.
const MARKING_PY: &str = r#"
import os, sys, time
args = dict(a.split("=", 1) for a in sys.argv[1:])
print(f"wrapped={os.environ.get('HSM_TEST_WRAPPED')} mark={os.environ.get('HSM_TEST_MARK')}", flush=True)
time.sleep(float(args.get("sleep", "0.3")))
"#;

/// Sets (or adds) `key: value` in the entry of source `name`, the last section of the file
/// that `agent deploy` wrote (its keys indented by four spaces).
fn set_source_key(p: &Project, name: &str, key: &str, value: &str) {
    let path = p.path().join(".hsm/config.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text
        .find(&format!("\n  {name}:\n"))
        .unwrap_or_else(|| panic!("no source {name}: {text}"));
    let (head, entry) = text.split_at(start);
    let mut lines: Vec<String> = entry.lines().map(str::to_string).collect();
    let prefix = format!("    {key}:");
    let line = format!("    {key}: {value}");
    match lines.iter().position(|l| l.starts_with(&prefix)) {
        Some(i) => lines[i] = line,
        None => lines.push(line),
    }
    std::fs::write(&path, format!("{head}{}\n", lines.join("\n"))).unwrap();
}

/// The host that drops UDP: `agent deploy` from nothing (auto finds ssh, one authentication),
/// a sweep on local and it over ssh with its own `python` and `pre_script`, pre-flight refusing
/// a wrong `project_dir` (the other source runs everything), and an upgrade while it holds
/// tasks: kept without `--restart`, restarted with it, nothing lost or run twice.
#[test]
fn deploy_where_udp_is_dropped_uses_ssh_with_per_source_setup_preflight_and_restart() {
    let Some(agent_bin) = agent_bin() else {
        return;
    };
    let tag = format!("dq{}", std::process::id() % 100_000);
    let hosts = match ssh_hosts::up(&tag, None) {
        Ok(h) => h,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let home = hosts.home.path();
    let ssh_config = hosts.ssh_config();
    let ssh_config = ssh_config.to_str().unwrap();
    let task = format!("{MARKING_PY}{}", RESULT_PY.replace("import os, sys", ""));
    let p = Project::new(
        "command:\n  python: python3\n  script: task.py\ndefaults:\n  parallel: 2\n  \
         kill_grace: 1s\n  agent_grace: 120s\n  connect_timeout: 60s\n",
        &[
            ("task.py", &task),
            // Long enough that h2 joins (auto: 3 s of UDP silence, then ssh) before local
            // alone would have finished.
            (
                "sweeps/sweep.yaml",
                "sweep:\n  grid:\n    x: {range: [1, 17]}\n    sleep: [1]\n",
            ),
            (
                "sweeps/slow.yaml",
                "sweep:\n  grid:\n    x: {range: [1, 11]}\n    sleep: [5]\n",
            ),
        ],
    );
    let project = p.path().to_str().unwrap();
    let remote = hosts.remote_home("h2");
    let deploy = |extra: &[&str]| {
        let mut args = vec!["agent", "deploy", "h2", "h2"];
        args.extend_from_slice(extra);
        run(&p, home, &args)
    };

    // 1. From nothing, through ssh alone: deploy's wait finds the agent over ssh, through the
    // connection the deploy authenticated (one login), and stores how to run ssh.
    let before = hosts.logins("h2");
    let first = deploy(&["--ssh-config", ssh_config, "--project-dir", project]);
    first.expect_code(0);
    let auths = hosts.logins("h2") - before;
    if auths != 1 {
        first.fail(&format!(
            "{auths} SSH authentications in one deploy, expected 1"
        ));
    }
    let answered = format!("h2 answers at {}:7300 over ssh to h2", hosts.ip("h2"));
    assert!(first.stdout.contains(&answered), "{}", first.stdout);
    assert!(first.stdout.contains("h2: deployed"), "{}", first.stdout);
    let config = std::fs::read_to_string(p.path().join(".hsm/config.yaml")).unwrap();
    assert!(config.contains(ssh_config), "ssh_options stored: {config}");
    let pid = serve_pid_in(&remote).expect("a pidfile in h2's agent state dir");

    // 2. Its own interpreter (a wrapper that marks its use) and pre_script, used on the host.
    let wrapper = remote.join("bin/py");
    std::fs::create_dir_all(wrapper.parent().unwrap()).unwrap();
    std::fs::write(
        &wrapper,
        "#!/bin/sh\necho \"$$\" >> \"$HOME/python-wrapper-used\"\nHSM_TEST_WRAPPED=yes exec python3 \"$@\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    set_source_key(&p, "h2", "python", wrapper.to_str().unwrap());
    set_source_key(
        &p,
        "h2",
        "pre_script",
        "[\"export HSM_TEST_MARK=from-pre-script\", \"touch \\\"$HOME/pre-script-ran\\\"\"]",
    );
    let sweep = run(
        &p,
        home,
        &[
            "sweep",
            "run",
            "--sources",
            "local,h2",
            "--sweep-id",
            "viassh",
        ],
    );
    sweep.expect_code(0);
    if !sweep.stderr.contains("over ssh to h2") {
        sweep.fail("transport auto did not say it uses ssh for h2");
    }
    assert_exactly_once(&p, "viassh", 16);
    assert_results_intact(&p, "viassh", 16);
    let status = p.status("viassh");
    let mut on_h2 = 0;
    for t in status["tasks"].as_array().unwrap() {
        let name = t["task"].as_str().unwrap();
        let out = std::fs::read_to_string(
            p.sweep_dir("viassh")
                .join("tasks")
                .join(name)
                .join("stdout.log"),
        )
        .unwrap_or_default();
        let want = if t["source"] == "h2" {
            on_h2 += 1;
            "wrapped=yes mark=from-pre-script"
        } else {
            "wrapped=None mark=None"
        };
        assert!(out.contains(want), "{name} on {}: {out}", t["source"]);
    }
    assert!(on_h2 > 0, "no task ran on h2: {status}");
    assert!(
        remote.join("pre-script-ran").exists(),
        "pre_script not run on h2"
    );
    let wrapped = std::fs::read_to_string(remote.join("python-wrapper-used")).unwrap();
    // Once per task there, and once more for pre-flight's check that the interpreter runs.
    assert!(
        wrapped.lines().count() >= on_h2,
        "the wrapper ran {} times for {on_h2} tasks on h2",
        wrapped.lines().count()
    );

    // 3. A project_dir that is not there: h2 is out before any task, the run says why and how
    // to fix it, local runs everything.
    let missing = format!("{project}/not-here");
    set_source_key(&p, "h2", "project_dir", &missing);
    let refused = run(
        &p,
        home,
        &[
            "sweep",
            "run",
            "--sources",
            "local,h2",
            "--sweep-id",
            "wrongdir",
        ],
    );
    refused.expect_code(0);
    for want in [
        "pre-flight checks failed on h2",
        &missing,
        "set sources.h2.project_dir",
    ] {
        if !refused.stderr.contains(want) {
            refused.fail(&format!("the refusal does not say `{want}`"));
        }
    }
    let status = p.status("wrongdir");
    assert_eq!(status["completed"], 16, "{status}");
    assert!(
        status["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["source"] == "local"),
        "{status}"
    );
    let agent_work = remote.join(".local/state/hsm-agent/work");
    assert!(
        !agent_work.join("wrongdir").exists(),
        "a task dir was made on h2 for the refused sweep"
    );
    set_source_key(&p, "h2", "project_dir", project);

    // 4. An upgrade while it holds tasks: without --restart the new binary waits; with it the
    // agent restarts; its ledger keeps the queued tasks and the running ones run again.
    let other = tempfile::tempdir().unwrap();
    let other_bin = other.path().join("hsm-agent");
    let mut bytes = std::fs::read(&agent_bin).unwrap();
    bytes.extend_from_slice(b"\nanother build\n");
    std::fs::write(&other_bin, bytes).unwrap();
    std::fs::set_permissions(&other_bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let slow = p
        .command(&[
            "sweep",
            "run",
            "sweeps/slow.yaml",
            "--sources",
            "h2",
            "--sweep-id",
            "held",
        ])
        .env("HSM_HOME", home)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(120), "tasks running on h2", || {
        p.try_status("held")
            .and_then(|s| s["running"].as_u64())
            .is_some_and(|n| n > 0)
    });
    let held = deploy(&["--agent-binary", other_bin.to_str().unwrap()]);
    held.expect_code(0);
    assert!(held.stdout.contains("not restarting it"), "{}", held.stdout);
    assert!(
        held.stdout.contains("h2: installed, not restarted"),
        "{}",
        held.stdout
    );
    assert_eq!(
        serve_pid_in(&remote).as_deref(),
        Some(pid.as_str()),
        "restarted"
    );
    let restarted = deploy(&["--agent-binary", other_bin.to_str().unwrap(), "--restart"]);
    restarted.expect_code(0);
    assert!(
        restarted.stdout.contains("restarted hsm-agent serve"),
        "{}",
        restarted.stdout
    );
    assert_ne!(
        serve_pid_in(&remote).as_deref(),
        Some(pid.as_str()),
        "not restarted"
    );
    let out = wait_with_timeout(slow, Duration::from_secs(300), "sweep run (held)");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It was restarted with tasks on it, and the sweep reconnected to the new daemon.
    assert!(
        restarted.stdout.contains("queued ones wait in its ledger"),
        "{}",
        restarted.stdout
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.matches("source h2: connected to").count() >= 2,
        "no reconnection after the restart: {stderr}"
    );
    assert_exactly_once(&p, "held", 10);
    assert_results_intact(&p, "held", 10);
    drop(hosts);
}

/// The new user's whole path to a login node without the project: `agent deploy` to h2 (UDP
/// dropped) with a `project_dir` that does not exist there gives the source `sync: push`, and
/// the first `sweep run --sources local,h2` sends the project there before any task, over ssh;
/// the tasks on h2 run the pushed files. A second run sends nothing.
#[test]
fn deploy_to_a_host_without_the_project_and_the_first_sweep_pushes_it_there() {
    if agent_bin().is_none() {
        return;
    }
    let tag = format!("dn{}", std::process::id() % 100_000);
    let hosts = match ssh_hosts::up(&tag, None) {
        Ok(h) => h,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let home = hosts.home.path();
    let ssh_config = hosts.ssh_config();
    let ssh_config = ssh_config.to_str().unwrap();
    let p = Project::new(
        "command:\n  python: python3\n  script: train.py\n  style: argparse\ndefaults:\n  parallel: 1\n  connect_timeout: 60s\n",
        &[
            (
                "train.py",
                "import argparse, os, pathlib, time\ntime.sleep(1)\nap = argparse.ArgumentParser()\nap.add_argument('--x')\na = ap.parse_args()\nprint('x', a.x, 'cwd', os.getcwd(), 'conf', pathlib.Path('conf/base.yaml').read_text().strip())\n",
            ),
            ("conf/base.yaml", "lr: 0.1\n"),
            (
                "sweeps/sweep.yaml",
                "sweep:\n  grid:\n    x: {range: [1, 9]}\n",
            ),
        ],
    );
    let remote = hosts.remote_home("h2");
    let deployed = run(
        &p,
        home,
        &[
            "agent",
            "deploy",
            "h2",
            "h2",
            "--ssh-config",
            ssh_config,
            "--project-dir",
            "demo",
        ],
    );
    deployed.expect_code(0);
    if !deployed.stdout.contains("the source gets `sync: push`") {
        deployed.fail("deploy does not say the first sweep sends the project");
    }
    assert!(!remote.join("demo").exists());
    let first = run(
        &p,
        home,
        &[
            "sweep",
            "run",
            "--sources",
            "local,h2",
            "--sweep-id",
            "pushed",
        ],
    );
    first.expect_code(0);
    eprintln!("--- first sweep ---\n{}", first.stderr);
    for want in ["over ssh to h2", "project pushed: 3 files ("] {
        if !first.stderr.contains(want) {
            first.fail(&format!("the run does not say `{want}`"));
        }
    }
    assert_eq!(
        std::fs::read_to_string(remote.join("demo/conf/base.yaml")).unwrap(),
        "lr: 0.1\n"
    );
    let status = p.status("pushed");
    assert_eq!(status["completed"], 8, "{status}");
    let mut on_h2 = 0;
    for t in status["tasks"].as_array().unwrap() {
        if t["source"] != "h2" {
            continue;
        }
        on_h2 += 1;
        let name = t["task"].as_str().unwrap();
        let out = std::fs::read_to_string(
            p.sweep_dir("pushed")
                .join("tasks")
                .join(name)
                .join("stdout.log"),
        )
        .unwrap();
        let want = format!("cwd {} conf lr: 0.1", remote.join("demo").display());
        assert!(out.contains(&want), "{name}: {out:?}, wanted {want:?}");
    }
    assert!(on_h2 > 0, "no task ran on h2: {status}");
    // In step now: the next run sends nothing.
    let second = run(
        &p,
        home,
        &[
            "sweep",
            "run",
            "--sources",
            "local,h2",
            "--sweep-id",
            "again",
        ],
    );
    second.expect_code(0);
    if second.stderr.contains("project pushed") {
        second.fail("a run with nothing changed pushed files");
    }
    drop(hosts);
}
