//! The agent as a detached daemon: `serve --detach` (own session, log and pidfile in the state
//! dir), `status` (is one running, since when, which binary, how many tasks its ledger holds) and
//! `stop`. `hsm-coordinator agent deploy|status|stop` run these over SSH.
//!
//! What is running is decided by the state dir's `serve.lock` (an OS lock held by a live
//! `serve`, with its pid), not by the pidfile: a pidfile outlives a `kill -9`. The pidfile adds
//! what the lock does not carry: version, start time, address and which executable file it was
//! started from, so that a binary replaced since (an upgrade) shows as not current.

use anyhow::Context as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `serve --detach` writes this (in the state dir) once it listens; removed when it stops.
pub const PID_FILE: &str = "serve.pid";
/// Where a detached `serve` writes its stdout and stderr (appended).
pub const LOG_FILE: &str = "serve.log";
/// Set in the environment of the detached child: it writes the pidfile.
pub const DETACHED_ENV: &str = "HSM_AGENT_DETACHED";
/// A log past this size is moved to `serve.log.1` when the next daemon starts.
const LOG_ROTATE_BYTES: u64 = 16 << 20;

/// What a running daemon says about itself in its pidfile.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PidInfo {
    pub pid: u32,
    pub version: String,
    pub listen: String,
    /// Seconds since the Unix epoch.
    pub started: u64,
    pub exe: String,
    /// `dev:inode:size:mtime` of `exe` when it started.
    pub exe_id: String,
    /// Where it keeps task directories (absolute, symlinks resolved); empty in the pidfile of an
    /// agent that predates it.
    pub work_dir: String,
}

impl PidInfo {
    /// The pidfile's text: the pid alone on the first line (for scripts), then `key value`.
    pub fn render(&self) -> String {
        format!(
            "{}\nversion {}\nlisten {}\nstarted {}\nexe {}\nexe_id {}\nwork_dir {}\n",
            self.pid, self.version, self.listen, self.started, self.exe, self.exe_id, self.work_dir
        )
    }

    /// Reads what [`render`](Self::render) wrote; `None` when the first line is not a pid.
    pub fn parse(text: &str) -> Option<PidInfo> {
        let mut lines = text.lines();
        let pid = lines.next()?.trim().parse().ok()?;
        let mut info = PidInfo {
            pid,
            ..PidInfo::default()
        };
        for line in lines {
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            let value = value.to_string();
            match key {
                "version" => info.version = value,
                "listen" => info.listen = value,
                "started" => info.started = value.parse().unwrap_or(0),
                "exe" => info.exe = value,
                "exe_id" => info.exe_id = value,
                "work_dir" => info.work_dir = value,
                _ => {}
            }
        }
        Some(info)
    }
}

/// The identity of an executable file as it is now (`None` when it cannot be read): a binary
/// renamed over it by an upgrade has another inode.
pub fn exe_id(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).ok()?;
    Some(format!(
        "{}:{}:{}:{}",
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime_nsec() as i128 + meta.mtime() as i128 * 1_000_000_000
    ))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// In the detached child, once the server listens: writes the pidfile (atomically).
pub fn write_pid_file(state_dir: &Path, listen: &str, work_dir: &Path) -> anyhow::Result<()> {
    let exe = std::env::current_exe().unwrap_or_default();
    let info = PidInfo {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        listen: listen.to_string(),
        started: now_secs(),
        exe_id: exe_id(&exe).unwrap_or_default(),
        exe: exe.display().to_string(),
        work_dir: std::fs::canonicalize(work_dir)
            .unwrap_or_else(|_| work_dir.to_path_buf())
            .display()
            .to_string(),
    };
    let path = state_dir.join(PID_FILE);
    let tmp = state_dir.join(format!(".{PID_FILE}.tmp"));
    std::fs::write(&tmp, info.render()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
}

/// When the daemon stops: removes the pidfile if it is still this process's.
pub fn remove_pid_file(state_dir: &Path) {
    let path = state_dir.join(PID_FILE);
    let ours = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| PidInfo::parse(&t))
        .is_some_and(|info| info.pid == std::process::id());
    if ours {
        let _ = std::fs::remove_file(path);
    }
}

/// `serve --detach`: starts this executable again with `args` (the same `serve` arguments
/// without `--detach`) in a session of its own, stdin from /dev/null, stdout and stderr
/// appended to `serve.log`, and waits until it listens (its pidfile names it) or exits.
/// Returns the daemon's pidfile information.
pub fn spawn_detached(
    state_dir: &Path,
    args: &[std::ffi::OsString],
    timeout: Duration,
) -> anyhow::Result<PidInfo> {
    use std::os::unix::process::CommandExt as _;
    let log_path = state_dir.join(LOG_FILE);
    if std::fs::metadata(&log_path).is_ok_and(|m| m.len() > LOG_ROTATE_BYTES) {
        let _ = std::fs::rename(&log_path, state_dir.join(format!("{LOG_FILE}.1")));
    }
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let _ = writeln!(
        log,
        "--- hsm-agent {} starting (detached) at {} ---",
        env!("CARGO_PKG_VERSION"),
        now_secs()
    );
    let start_of_run = log.metadata().map_or(0, |m| m.len());
    let exe = std::env::current_exe().context("finding this executable")?;
    let mut command = std::process::Command::new(&exe);
    command
        .args(args)
        .env(DETACHED_ENV, "1")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent; the child gets a
    // session (and process group) of its own, so the end of an SSH session (SIGHUP to its
    // session) does not reach it.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            let tail = log_tail(&log_path, start_of_run, 20);
            anyhow::bail!(
                "hsm-agent serve exited ({status}) before listening; {}:\n{tail}",
                log_path.display()
            );
        }
        let info = std::fs::read_to_string(state_dir.join(PID_FILE))
            .ok()
            .and_then(|t| PidInfo::parse(&t));
        if let Some(info) = info.filter(|i| i.pid == child.id()) {
            return Ok(info);
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!(
                "hsm-agent serve (pid {}) did not start listening within {timeout:?}; see {}",
                child.id(),
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last `lines` lines written to `path` after byte `from`.
fn log_tail(path: &Path, from: u64, lines: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(text.get(from as usize..).unwrap_or_default());
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// What `hsm-agent status` reports.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Status {
    pub state_dir: PathBuf,
    /// The pid of the `serve` holding the state dir's lock.
    pub running: Option<u32>,
    /// The pidfile, when it describes that process.
    pub info: Option<PidInfo>,
    /// Whether the file it was started from is still the one at that path.
    pub current: Option<bool>,
    /// Task attempts its ledger holds (`None`: no ledger, or unreadable).
    pub tasks: Option<u64>,
}

impl Status {
    /// `key value` lines (parsed by `hsm-coordinator agent status|deploy`).
    pub fn render(&self) -> String {
        let mut out = format!(
            "state_dir {}\nlog {}\n",
            self.state_dir.display(),
            self.state_dir.join(LOG_FILE).display()
        );
        match self.running {
            None => out.push_str("running no\n"),
            Some(pid) => {
                out.push_str(&format!("running yes\npid {pid}\n"));
                if let Some(info) = &self.info {
                    out.push_str(&format!(
                        "version {}\nlisten {}\nstarted {}\nuptime {}\n",
                        info.version,
                        info.listen,
                        info.started,
                        now_secs().saturating_sub(info.started)
                    ));
                    if !info.work_dir.is_empty() {
                        out.push_str(&format!("work_dir {}\n", info.work_dir));
                    }
                }
                if let Some(current) = self.current {
                    out.push_str(&format!("current {}\n", if current { "yes" } else { "no" }));
                }
            }
        }
        if let Some(tasks) = self.tasks {
            out.push_str(&format!("tasks {tasks}\n"));
        }
        out
    }
}

/// The pid of the `serve` that holds `state_dir`'s lock, `None` when none does.
pub fn running_pid(state_dir: &Path) -> Option<u32> {
    let path = state_dir.join("serve.lock");
    let file = std::fs::File::open(&path).ok()?;
    match file.try_lock_shared() {
        // Nobody holds it: no daemon (ours is dropped, and with it the lock, right away).
        Ok(()) => None,
        Err(_) => std::fs::read_to_string(&path).ok()?.trim().parse().ok(),
    }
}

/// Looks at the state dir without changing anything a running daemon uses.
pub fn status(state_dir: &Path) -> Status {
    let running = running_pid(state_dir);
    let info = std::fs::read_to_string(state_dir.join(PID_FILE))
        .ok()
        .and_then(|t| PidInfo::parse(&t))
        .filter(|info| Some(info.pid) == running);
    let current = info
        .as_ref()
        .map(|info| exe_id(Path::new(&info.exe)).is_some_and(|id| id == info.exe_id));
    Status {
        state_dir: state_dir.to_path_buf(),
        running,
        info,
        current,
        tasks: ledger_tasks(state_dir),
    }
}

/// Task attempts in the ledger, read-only (SQLite allows a reader beside the daemon's writer).
fn ledger_tasks(state_dir: &Path) -> Option<u64> {
    let path = state_dir.join(crate::ledger::LEDGER_FILE);
    if !path.exists() {
        return Some(0);
    }
    let conn = rusqlite::Connection::open_with_flags(
        &path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .ok()?;
    conn.busy_timeout(Duration::from_secs(5)).ok()?;
    conn.query_row("SELECT COUNT(*) FROM tasks", [], |r| r.get::<_, i64>(0))
        .ok()
        .map(|n| n.max(0) as u64)
}

/// `hsm-agent stop`: SIGTERM to the running daemon, then waits for it to let go of the state
/// dir. `Ok(None)` when none was running.
pub fn stop(state_dir: &Path, timeout: Duration) -> anyhow::Result<Option<u32>> {
    let Some(pid) = running_pid(state_dir) else {
        return Ok(None);
    };
    let Ok(raw) = i32::try_from(pid) else {
        anyhow::bail!("serve.lock names pid {pid}, which is not a process id");
    };
    // SAFETY: kill has no memory preconditions; the pid is the lock holder's.
    if unsafe { libc::kill(raw, libc::SIGTERM) } != 0 {
        let e = std::io::Error::last_os_error();
        anyhow::bail!("cannot signal hsm-agent serve (pid {pid}): {e}");
    }
    let deadline = std::time::Instant::now() + timeout;
    while running_pid(state_dir) == Some(pid) {
        if std::time::Instant::now() > deadline {
            anyhow::bail!(
                "hsm-agent serve (pid {pid}) still runs {timeout:?} after SIGTERM; see {}",
                state_dir.join(LOG_FILE).display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Some(pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_file_round_trips_and_starts_with_the_pid() {
        let info = PidInfo {
            pid: 4242,
            version: "0.3.0".into(),
            listen: "0.0.0.0:7300".into(),
            started: 1_700_000_000,
            exe: "/home/me/.local/bin/hsm-agent".into(),
            exe_id: "1:2:3:4".into(),
            work_dir: "/scratch/me/hsm work".into(),
        };
        let text = info.render();
        assert_eq!(text.lines().next(), Some("4242"));
        assert_eq!(PidInfo::parse(&text), Some(info));
        assert_eq!(PidInfo::parse("not a pid\n"), None);
        assert_eq!(PidInfo::parse("7\n").map(|i| i.pid), Some(7));
    }

    #[test]
    fn a_state_dir_nobody_serves_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("serve.lock"), "12345").unwrap();
        // A stale pidfile (kill -9) does not make it running.
        std::fs::write(dir.path().join(PID_FILE), "12345\nversion 0.1.0\n").unwrap();
        let status = status(dir.path());
        assert_eq!(status.running, None);
        assert_eq!(status.info, None);
        assert_eq!(status.tasks, Some(0));
        assert!(status.render().contains("running no\n"));
    }

    #[test]
    fn a_held_lock_names_the_running_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serve.lock");
        std::fs::write(&path, "777").unwrap();
        let held = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        held.try_lock().unwrap();
        assert_eq!(running_pid(dir.path()), Some(777));
        drop(held);
        assert_eq!(running_pid(dir.path()), None);
    }

    #[test]
    fn a_replaced_executable_has_another_identity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bin");
        std::fs::write(&path, b"one").unwrap();
        let before = exe_id(&path).unwrap();
        let tmp = dir.path().join("bin.new");
        std::fs::write(&tmp, b"two").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_ne!(exe_id(&path).unwrap(), before);
        assert_eq!(exe_id(&dir.path().join("missing")), None);
    }
}
