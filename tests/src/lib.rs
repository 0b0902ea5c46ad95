//! Shared helpers for hsm end-to-end tests and benchmarks: a real `sweep run` in-process, and a
//! real `hsm-agent serve` on loopback that authorizes this process's coordinator identity.

use anyhow::{bail, Context};
use std::process::{Command, Stdio};

/// A real `sweep run` in-process (the same code path as the binary) of `tasks` tasks
/// (`i` = 0..tasks) on a throwaway project with `config`.
pub fn hsm_sweep(
    project: &std::path::Path,
    config: &str,
    tasks: u64,
    extra: &[&str],
) -> anyhow::Result<()> {
    use clap::Parser;
    write_project(project, config, tasks)?;
    let dir = project.display().to_string();
    let mut argv = vec!["hsm-coordinator", "-q", "-C", &dir, "sweep", "run"];
    argv.extend_from_slice(extra);
    let code = hsm_coordinator::cli::run(hsm_coordinator::cli::Cli::parse_from(argv))?;
    if code != 0 {
        bail!("sweep run exited with {code}");
    }
    Ok(())
}

/// A project in `project` with `config` and a sweep of `tasks` tasks (`i` = 0..tasks).
pub fn write_project(project: &std::path::Path, config: &str, tasks: u64) -> anyhow::Result<()> {
    write_project_in(project, config, tasks, None)
}

/// `write_project` with `layout: <layout>` in the sweep file when given (a build from before
/// layouts existed refuses the key: give it none).
pub fn write_project_in(
    project: &std::path::Path,
    config: &str,
    tasks: u64,
    layout: Option<&str>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(project.join(".hsm"))?;
    std::fs::create_dir_all(project.join("sweeps"))?;
    std::fs::write(project.join(".hsm/config.yaml"), config)?;
    let layout = layout_line(layout);
    std::fs::write(
        project.join("sweeps/sweep.yaml"),
        format!("{layout}sweep:\n  grid:\n    i: {{range: [0, {tasks}]}}\n"),
    )?;
    Ok(())
}

/// A bench's `PATH` or `PATH:full` / `PATH:compact` / `PATH:auto`: the path, and the layout its
/// sweep files ask for (none: they say nothing, as a build from before layouts needs).
pub fn path_and_layout(text: &str) -> (std::path::PathBuf, Option<String>) {
    match text.rsplit_once(':') {
        Some((path, layout)) if ["full", "compact", "auto"].contains(&layout) => {
            (path.into(), Some(layout.to_string()))
        }
        _ => (text.into(), None),
    }
}

/// The sweep file's `layout:` line for `layout`, or nothing.
pub fn layout_line(layout: Option<&str>) -> String {
    layout.map_or_else(String::new, |l| format!("layout: {l}\n"))
}

/// A running `hsm-agent serve` on loopback that authorizes this process's coordinator identity.
pub struct BenchAgent {
    pub child: std::process::Child,
    pub addr: String,
    pub fingerprint: String,
    /// The agent's `--work-dir`.
    pub work_dir: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for BenchAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts an agent with `slots` slots under `work_root`, with `extra` arguments to `serve` and
/// `env` added to its environment.
pub fn start_agent(
    agent: &std::path::Path,
    slots: u64,
    work_root: &std::path::Path,
    extra: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
) -> anyhow::Result<BenchAgent> {
    use std::io::BufRead;
    let dir = tempfile::tempdir_in(work_root)?;
    let state = dir.path().join("state");
    let coordinator = hsm_coordinator::home::coordinator_identity()?.fingerprint();
    for args in [vec!["init"], vec!["authorize", coordinator.as_str()]] {
        let out = Command::new(agent)
            .args(&args)
            .arg("--state-dir")
            .arg(&state)
            .output()?;
        if !out.status.success() {
            bail!(
                "hsm-agent {}: {}",
                args[0],
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let mut child = Command::new(agent)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--slots",
            &slots.to_string(),
            "--state-dir",
        ])
        .arg(&state)
        .arg("--work-dir")
        .arg(dir.path().join("work"))
        .args(extra)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut lines = std::io::BufReader::new(child.stdout.take().context("agent stdout")?).lines();
    let addr = lines
        .next()
        .context("agent address")??
        .replace("listening on ", "");
    let fingerprint = lines
        .next()
        .context("agent fingerprint")??
        .replace("fingerprint ", "");
    Ok(BenchAgent {
        child,
        addr,
        fingerprint,
        work_dir: dir.path().join("work"),
        _dir: dir,
    })
}

/// A project config whose only source `a1` is `agent`, running `template` in `project_dir`.
pub fn agent_config(agent: &BenchAgent, template: &str, project_dir: &std::path::Path) -> String {
    format!(
        "command:\n  template: {template}\nsources:\n  a1:\n    type: agent\n    address: \"{}\"\n    fingerprint: \"{}\"\n    project_dir: \"{}\"\n",
        agent.addr,
        agent.fingerprint,
        project_dir.display()
    )
}

/// Waits for our child with `wait4`: its resource usage (its own and its reaped children's).
/// An error when it did not exit with 0 (`what` names it).
pub fn wait_usage(child: std::process::Child, what: &str) -> anyhow::Result<libc::rusage> {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is a plain struct we own; wait4 reaps our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::wait4(pid, &mut status, 0, &mut usage) } < 0 {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    // Reaped above: the handle must not wait again.
    std::mem::forget(child);
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{what} failed (wait status {status})");
    }
    Ok(usage)
}

/// Files and directories under `dir`, recursively (not `dir` itself).
pub fn count_files(dir: &std::path::Path) -> u64 {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            n += 1;
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    n
}
