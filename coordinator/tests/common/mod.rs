//! Test harness for the `hsm-coordinator` binary: throwaway projects in temp dirs, commands run
//! with a global timeout, and command/cwd/stdout/stderr printed when something fails.

#![allow(dead_code)]

pub mod browser;
pub mod hpc;
pub mod ssh_hosts;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Every command gets at most this long; a hang fails the test instead of the suite. A hang
/// guard, not a speed check: the longest commands here (sweeps of 1,000 and 20,000 tasks, or
/// moving hundreds of MiB through debug builds) take seconds to tens of seconds on an idle
/// machine and several times that on a busy one.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(600);

pub struct Project {
    pub dir: tempfile::TempDir,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_hsm-coordinator")
}

impl Project {
    /// A project with `.hsm/config.yaml` using `script` (a Python file written here).
    pub fn new(config: &str, files: &[(&str, &str)]) -> Project {
        let dir = tempfile::tempdir().expect("tempdir");
        let project = Project { dir };
        project.write(".hsm/config.yaml", config);
        for (path, text) in files {
            project.write(path, text);
        }
        project
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, text: &str) {
        let path = self.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.arg("-C").arg(self.path()).args(args);
        cmd.current_dir(self.path());
        cmd.env_remove("HSM_LOG");
        cmd
    }

    /// Runs to the end (bounded by COMMAND_TIMEOUT).
    pub fn run(&self, args: &[&str]) -> Run {
        let cmd = self.command(args);
        let description = format!("{} -C {} {}", bin(), self.path().display(), args.join(" "));
        let child = spawn_piped(cmd);
        Run::wait(child, description)
    }

    /// `run` with `HSM_HOME` set to `home` (the coordinator identity a test's agents trust).
    pub fn run_in(&self, home: &Path, args: &[&str]) -> Run {
        let mut cmd = self.command(args);
        cmd.env("HSM_HOME", home);
        let description = format!(
            "HSM_HOME={} {} -C {} {}",
            home.display(),
            bin(),
            self.path().display(),
            args.join(" ")
        );
        Run::wait(spawn_piped(cmd), description)
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        spawn_piped(self.command(args))
    }

    pub fn outputs(&self) -> PathBuf {
        self.path().join("sweeps").join("outputs")
    }

    pub fn sweep_dir(&self, id: &str) -> PathBuf {
        self.outputs().join(id)
    }

    /// `sweep status ID --json` while a sweep may still be being created: `None` until it reads.
    pub fn try_status(&self, id: &str) -> Option<serde_json::Value> {
        let run = self.run(&["sweep", "status", id, "--json"]);
        if run.code != Some(0) {
            return None;
        }
        serde_json::from_str(&run.stdout).ok()
    }

    /// `sweep status ID --json`, parsed.
    pub fn status(&self, id: &str) -> serde_json::Value {
        let run = self.run(&["sweep", "status", id, "--json"]);
        run.expect_code(0);
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| run.fail(&format!("bad JSON: {e}")))
    }
}

fn spawn_piped(mut cmd: Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hsm-coordinator")
}

pub struct Run {
    pub description: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    pub fn wait(child: Child, description: String) -> Run {
        Run::wait_within(child, description, COMMAND_TIMEOUT)
    }

    /// `wait` with a guard of its own (a test that would otherwise hang for COMMAND_TIMEOUT).
    pub fn wait_within(child: Child, description: String, timeout: Duration) -> Run {
        let started = Instant::now();
        let output = wait_with_timeout(child, timeout, &description);
        Run {
            description,
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            elapsed: started.elapsed(),
        }
    }

    pub fn fail(&self, why: &str) -> ! {
        panic!(
            "{why}\ncommand: {}\nexit code: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.description, self.code, self.stdout, self.stderr
        );
    }

    pub fn expect_code(&self, code: i32) -> &Run {
        if self.code != Some(code) {
            self.fail(&format!("expected exit code {code}"));
        }
        self
    }

    /// The sweep id printed first (`sweep_id: …`).
    pub fn sweep_id(&self) -> String {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix("sweep_id: "))
            .map(str::to_string)
            .unwrap_or_else(|| self.fail("no `sweep_id:` line on stdout"))
    }
}

/// Waits for a child, killing it (by its own pid) after `timeout`.
pub fn wait_with_timeout(mut child: Child, timeout: Duration, what: &str) -> Output {
    let deadline = Instant::now() + timeout;
    // Drain pipes on threads so a chatty child never blocks on a full pipe.
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = std::io::Read::read_to_end(s, &mut buf);
        }
        buf
    });
    let err_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = std::io::Read::read_to_end(s, &mut buf);
        }
        buf
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let out = out_thread.join().unwrap_or_default();
            let err = err_thread.join().unwrap_or_default();
            panic!(
                "timed out after {timeout:?}: {what}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_thread.join().unwrap_or_default(),
        stderr: err_thread.join().unwrap_or_default(),
    }
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Task statuses from `sweep status --json`, in task order.
pub fn statuses(status: &serde_json::Value) -> Vec<(String, String, u64)> {
    status["tasks"]
        .as_array()
        .expect("tasks array")
        .iter()
        .map(|t| {
            (
                t["task"].as_str().unwrap().to_string(),
                t["status"].as_str().unwrap().to_string(),
                t["attempt"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// True when a process with this pid exists (and is not a zombie we could reap).
pub fn pid_alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Field 3 is the state; Z = zombie.
    !stat
        .rsplit(')')
        .next()
        .map(|rest| rest.trim_start().starts_with('Z'))
        .unwrap_or(false)
}

pub const CONFIG: &str =
    "command:\n  python: python3\n  script: task.py\ndefaults:\n  parallel: 2\n  kill_grace: 1s\n";

/// The `hsm-agent` binary next to this crate's binary. `cargo test --workspace` (the test
/// command) builds it; a run of this crate alone may not have, and then the test says so.
pub fn agent_bin() -> Option<std::path::PathBuf> {
    let path = std::path::Path::new(bin()).with_file_name("hsm-agent");
    if !path.is_file() {
        eprintln!(
            "SKIPPED: hsm-agent binary not built (run the workspace tests: tests/run-all.sh)"
        );
        return None;
    }
    Some(path)
}

/// Tasks of `sweep` with more than one completed attempt in its `sweep.db`.
pub fn completed_twice(p: &Project, sweep: &str) -> i64 {
    let db = rusqlite::Connection::open(p.sweep_dir(sweep).join("sweep.db")).unwrap();
    db.query_row(
        "SELECT COUNT(*) FROM (SELECT idx FROM attempts WHERE status = 'completed' GROUP BY idx HAVING COUNT(*) > 1)",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

/// Every task 1..=n of `sweep` has the `results/data.bin` that `RESULT_PY` writes for it.
pub fn assert_results_intact(p: &Project, sweep: &str, n: u64) {
    for x in 1..=n {
        let path = p
            .sweep_dir(sweep)
            .join(format!("tasks/task_{x:03}/results/data.bin"));
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("task {x}: {e}"));
        assert!(
            data == expected_data(x),
            "task {x}: result differs ({} bytes)",
            data.len()
        );
    }
}

pub struct AgentProcess {
    pub child: std::process::Child,
    pub addr: String,
    pub fingerprint: String,
    pub state: std::path::PathBuf,
    _dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    netns: Option<String>,
    extra: Vec<String>,
    env: Vec<(String, String)>,
}

impl AgentProcess {
    /// Where the agent keeps its tasks' files (`--work-dir`).
    pub fn work_dir(&self) -> std::path::PathBuf {
        self._dir.path().join("work")
    }

    /// `kill -9` (a no-op when it is dead already).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the agent again on the same address, state and work directories (after `kill`).
    pub fn restart(&mut self) {
        self.kill();
        let (child, addr, fingerprint) = spawn_serve(
            &self.bin,
            self.netns.as_deref(),
            &self.addr,
            &self.state,
            &self.work_dir(),
            &self.extra.iter().map(String::as_str).collect::<Vec<_>>(),
            &self.env,
        );
        assert_eq!((&addr, &fingerprint), (&self.addr, &self.fingerprint));
        self.child = child;
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_agent(agent: &std::path::Path) -> AgentProcess {
    start_agent_in(agent, None, "127.0.0.1:0")
}

/// Starts `hsm-agent serve` on `listen`, inside network namespace `netns` when given (through
/// `ip netns exec`, which execs the agent: the child's pid is the agent's).
pub fn start_agent_in(agent: &std::path::Path, netns: Option<&str>, listen: &str) -> AgentProcess {
    start_agent_with(agent, netns, listen, &[])
}

/// `start_agent_in` with extra `serve` flags. The work directory is `<dir>/work` (see
/// `AgentProcess::work_dir`).
pub fn start_agent_with(
    agent: &std::path::Path,
    netns: Option<&str>,
    listen: &str,
    extra: &[&str],
) -> AgentProcess {
    start_agent_with_env(agent, netns, listen, extra, &[])
}

/// `start_agent_with`, the agent's environment extended by `env` (kept across `restart`).
pub fn start_agent_with_env(
    agent: &std::path::Path,
    netns: Option<&str>,
    listen: &str,
    extra: &[&str],
    env: &[(String, String)],
) -> AgentProcess {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let init = std::process::Command::new(agent)
        .args(["init", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(init.status.success());
    let (child, addr, fingerprint) = spawn_serve(
        agent,
        netns,
        listen,
        &state,
        &dir.path().join("work"),
        extra,
        env,
    );
    AgentProcess {
        child,
        addr,
        fingerprint,
        state,
        _dir: dir,
        bin: agent.to_path_buf(),
        netns: netns.map(str::to_string),
        extra: extra.iter().map(|s| s.to_string()).collect(),
        env: env.to_vec(),
    }
}

/// `hsm-agent serve` with 3 slots unless `extra` names `--slots`; its address and fingerprint
/// as it prints them.
fn spawn_serve(
    agent: &std::path::Path,
    netns: Option<&str>,
    listen: &str,
    state: &std::path::Path,
    work: &std::path::Path,
    extra: &[&str],
    env: &[(String, String)],
) -> (std::process::Child, String, String) {
    use std::io::BufRead;
    let mut command = match netns {
        Some(ns) => {
            let mut c = std::process::Command::new("ip");
            c.args(["netns", "exec", ns]).arg(agent);
            c
        }
        None => std::process::Command::new(agent),
    };
    command.args(["serve", "--listen", listen]);
    if !extra.contains(&"--slots") {
        command.args(["--slots", "3"]);
    }
    let mut child = command
        .arg("--state-dir")
        .arg(state)
        .arg("--work-dir")
        .arg(work)
        .args(extra)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = lines.next().unwrap().unwrap().replace("listening on ", "");
    let fingerprint = lines.next().unwrap().unwrap().replace("fingerprint ", "");
    (child, addr, fingerprint)
}

/// The fault suite's verdict on a finished sweep of `n` tasks: every task completed exactly
/// once, by the attempt the sweep records as its current one (nothing completed by a stale
/// attempt), attempts recorded, and `PRAGMA integrity_check` ok.
pub fn assert_exactly_once(p: &Project, sweep: &str, n: u64) {
    let db = rusqlite::Connection::open(p.sweep_dir(sweep).join("sweep.db")).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let completed: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM tasks WHERE status = 'completed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(completed, n as i64, "tasks completed");
    assert_eq!(completed_twice(p, sweep), 0, "a task completed twice");
    let stale: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM tasks t WHERE NOT EXISTS (SELECT 1 FROM attempts a
               WHERE a.idx = t.idx AND a.attempt = t.attempt AND a.status = 'completed')
             OR EXISTS (SELECT 1 FROM attempts a WHERE a.idx = t.idx
               AND a.attempt <> t.attempt AND a.status = 'completed')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        stale, 0,
        "tasks whose completion is not their current attempt's"
    );
    let recorded: i64 = db
        .query_row("SELECT COUNT(DISTINCT idx) FROM attempts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(recorded, n as i64, "every task has its attempts recorded");
}

/// Writes `results/data.bin` whose size depends on `x` (empty for x % 5 == 0, 11 MiB for x == 7,
/// otherwise x * 997 bytes) with content derived from x, and prints a line.
pub const RESULT_PY: &str = r#"
import os, sys
args = dict(a.split("=", 1) for a in sys.argv[1:])
x = int(args["x"])
out = args["output.dir"]
os.makedirs(out, exist_ok=True)
size = 0 if x % 5 == 0 else (11 * 1024 * 1024 if x == 7 else x * 997)
pattern = bytes((x * 31 + i) % 251 for i in range(251))
with open(os.path.join(out, "data.bin"), "wb") as f:
    f.write((pattern * (size // 251 + 1))[:size])
print(f"task {x} says hi from {os.environ.get('HSM_TASK_ID')}", flush=True)
"#;

pub fn expected_data(x: u64) -> Vec<u8> {
    let size = if x.is_multiple_of(5) {
        0
    } else if x == 7 {
        11 * 1024 * 1024
    } else {
        x as usize * 997
    };
    let pattern: Vec<u8> = (0..251u64).map(|i| ((x * 31 + i) % 251) as u8).collect();
    pattern.iter().cycle().take(size).copied().collect()
}

/// A file's text; the test fails naming the file when it cannot be read.
pub fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One agent started and enlisted as source `name` for the coordinator identity under `home`.
pub fn start_enlisted_agent(
    p: &Project,
    agent_bin: &Path,
    home: &Path,
    name: &str,
) -> AgentProcess {
    let own_fp = coordinator_fingerprint(p, home);
    let agent = start_agent(agent_bin);
    enlist(p, agent_bin, &agent, name, &own_fp);
    agent
}

/// The fingerprint of the coordinator identity under `home` (`HSM_HOME`), created if needed.
pub fn coordinator_fingerprint(p: &Project, home: &Path) -> String {
    let identity = p
        .command(&["identity"])
        .env("HSM_HOME", home)
        .output()
        .unwrap();
    assert!(identity.status.success(), "hsm-coordinator identity failed");
    String::from_utf8_lossy(&identity.stdout).trim().to_string()
}

/// `hsm-agent authorize own_fp` in `agent`'s state directory.
pub fn authorize(agent_bin: &Path, agent: &AgentProcess, own_fp: &str) {
    let ok = std::process::Command::new(agent_bin)
        .args(["authorize", own_fp, "--state-dir"])
        .arg(&agent.state)
        .output()
        .unwrap();
    assert!(ok.status.success(), "hsm-agent authorize failed");
}

/// The Slurm configuration of the running test cluster, or `None` with a printed reason.
pub fn test_slurm() -> Option<PathBuf> {
    match std::env::var_os("SLURM_CONF") {
        Some(conf) if Path::new(&conf).is_file() => Some(PathBuf::from(conf)),
        _ => {
            eprintln!(
                "SKIPPED: no test Slurm (SLURM_CONF unset; tests/run-all.sh starts one when run as root)"
            );
            None
        }
    }
}

/// The environment of the running test Grid Engine (`tests/sge.sh`, started by tests/run-all.sh
/// as root): the `export K=V` lines of its `env.sh` (SGE_ROOT, SGE_CELL, ports), or `None` with a
/// printed reason.
pub fn test_sge() -> Option<Vec<(String, String)>> {
    let env =
        std::env::var_os("HSM_TEST_SGE_ENV").and_then(|path| std::fs::read_to_string(path).ok());
    let Some(env) = env else {
        eprintln!(
            "SKIPPED: no test Grid Engine (HSM_TEST_SGE_ENV unset; tests/run-all.sh starts one when run as root)"
        );
        return None;
    };
    Some(
        env.lines()
            .filter_map(|l| l.trim().strip_prefix("export ")?.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// The test Slurm with accounting and a QOS limit of 8 queued jobs per user
/// (`tests/slurm-qos.sh`, started by tests/run-all.sh as root): its `slurm.conf`.
pub fn test_slurm_qos() -> Option<PathBuf> {
    match std::env::var_os("HSM_TEST_SLURM_QOS_CONF") {
        Some(conf) if Path::new(&conf).is_file() => Some(PathBuf::from(conf)),
        _ => {
            eprintln!(
                "SKIPPED: no test Slurm with accounting (HSM_TEST_SLURM_QOS_CONF unset; tests/run-all.sh starts one when run as root)"
            );
            None
        }
    }
}

/// Authorizes this coordinator (`own_fp`) on `agent` and adds it to the project as source `name`,
/// running tasks in the project directory.
pub fn enlist(
    p: &Project,
    agent_bin: &std::path::Path,
    agent: &AgentProcess,
    name: &str,
    own_fp: &str,
) {
    authorize(agent_bin, agent, own_fp);
    let project = p.path().to_str().unwrap();
    p.run(&[
        "agent",
        "add",
        name,
        &agent.addr,
        "--fingerprint",
        &agent.fingerprint,
        "--project-dir",
        project,
    ])
    .expect_code(0);
}

/// The namespaces of one test, removed (and the blackhole route with the last of them) on drop.
pub struct Hosts {
    pub tag: String,
    n: usize,
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let _ = std::process::Command::new(netns_script())
            .args(["down", &self.tag, &self.n.to_string()])
            .status();
    }
}

pub fn netns_script() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/netns.sh")
}

/// `n` hosts (`TAG-h0` ..) and their network prefix (`10.77.K`), or why they cannot be made
/// here.
pub fn hosts(tag: &str, n: usize) -> Result<(Hosts, String), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root (network namespaces need it)".into());
    }
    let out = std::process::Command::new(netns_script())
        .args(["up", tag, &n.to_string()])
        .output()
        .map_err(|e| format!("cannot run tests/netns.sh: {e}"))?;
    let hosts = Hosts {
        tag: tag.to_string(),
        n,
    };
    if !out.status.success() {
        return Err(format!(
            "tests/netns.sh up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok((
        hosts,
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    ))
}

impl Hosts {
    /// Runs `tests/netns.sh CMD TAG I` (cut, heal, loss) for host `i`.
    pub fn net(&self, cmd: &str, i: usize, extra: &[&str]) {
        let out = std::process::Command::new(netns_script())
            .args([cmd, &self.tag, &i.to_string()])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "netns.sh {cmd} {} {i}: {}",
            self.tag,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Entries under `dir` (at any depth) whose names start with `prefix`: an agent's task
/// directories are `task_…` under its work dir, so 0 means no task reached it.
pub fn count_named(dir: &Path, prefix: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let own = e.file_name().to_string_lossy().starts_with(prefix) as usize;
            own + if e.path().is_dir() {
                count_named(&e.path(), prefix)
            } else {
                0
            }
        })
        .sum()
}
