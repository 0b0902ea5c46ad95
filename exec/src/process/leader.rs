//! A task's leader process from spawn until it is reaped: noticing its exit without reaping it
//! (a pidfd on Linux >= 5.3, SIGCHLD plus `waitid(WNOWAIT)` on older kernels), signalling its
//! process group only while the unreaped leader pins the group id, and reaping it with `wait4`,
//! which also says what it used (CPU user/system, peak RSS).
//!
//! Why not tokio's `Child::wait`: it reaps with `waitpid`, which drops the resource usage, and a
//! tokio `Child` we reaped ourselves would be handed to tokio's orphan queue, which could later
//! `waitpid` a reused pid (a newer task of ours). So the leader is spawned with std's `Command`
//! (the same `posix_spawn` path tokio uses) and watched here: the same one pidfd per task that
//! tokio would open, and the same SIGCHLD fallback.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant as StdInstant};

use hsm_protocol::UsageMsg;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::Instant;

/// Our child, the leader of its own process group, until it is reaped.
pub(super) struct Leader {
    pub(super) pgid: libc::pid_t,
    /// True while the leader is unreaped by us, i.e. while `pgid` provably still names our group.
    pub(super) may_signal: bool,
    /// When it was spawned: wall time runs from here to the moment its exit was noticed.
    started: StdInstant,
    /// When its exit was first noticed.
    ended: Option<StdInstant>,
    watch: ExitWatch,
}

/// How the leader's exit is noticed without reaping it.
enum ExitWatch {
    /// Readable once the process has exited (Linux >= 5.3); one epoll registration per task.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    Pidfd(tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>),
    /// Every SIGCHLD of the process wakes the watcher, which then asks `waitid(WNOWAIT)`.
    Sigchld(Signal),
    /// No SIGCHLD stream either (cannot happen once a child was spawned, that needed the same
    /// driver): ask every 20 ms.
    Poll,
}

pub(super) enum LeaderState {
    Running,
    /// Exited, not reaped yet (a zombie that still pins the pid and thus the pgid).
    Exited,
    /// `waitid` failed (e.g. somebody else reaped it); the pgid may no longer be ours.
    Unknown(io::Error),
}

impl Drop for Leader {
    /// Reached with `may_signal` set only if the watcher is dropped mid-flight (runtime shutdown):
    /// nobody would ever report or clean up these processes, so end the whole group now, and
    /// reap the leader on a thread of its own (nobody else will).
    fn drop(&mut self) {
        if self.may_signal {
            tracing::warn!(
                pgid = self.pgid,
                "watcher dropped; killing the task's group"
            );
            self.signal_group(libc::SIGKILL);
            self.may_signal = false;
            let pid = self.pgid;
            let _ = std::thread::Builder::new()
                .name("hsm-reap".into())
                .spawn(move || {
                    let mut status = 0;
                    // SAFETY: plain syscall on our own unreaped child.
                    unsafe { libc::waitpid(pid, &mut status, 0) };
                });
        }
    }
}

impl Leader {
    /// Takes charge of a just-spawned, unreaped child.
    pub(super) fn new(pid: libc::pid_t, started: StdInstant) -> Leader {
        Leader {
            pgid: pid,
            may_signal: true,
            started,
            ended: None,
            watch: ExitWatch::open(pid),
        }
    }

    pub(super) fn signal_group(&self, sig: libc::c_int) {
        // pgid <= 1 would address our own group (0), init's group or every process (-1).
        if !self.may_signal || self.pgid <= 1 {
            return;
        }
        // SAFETY: plain syscall without memory arguments.
        let rc = unsafe { libc::kill(-self.pgid, sig) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            tracing::warn!(pgid = self.pgid, sig, %err, "could not signal task group");
        }
    }

    /// Whether the leader has exited, without reaping it.
    pub(super) fn state(&self) -> LeaderState {
        if self.pgid <= 0 {
            return LeaderState::Unknown(io::Error::other("no process id"));
        }
        loop {
            // SAFETY: siginfo_t is plain data for which all-zero is a valid value; waitid only
            // writes into it.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let rc = unsafe {
                libc::waitid(
                    libc::P_PID,
                    self.pgid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
                )
            };
            if rc != 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return LeaderState::Unknown(err);
            }
            // With WNOHANG and nothing to report, the kernel leaves the pid field zero.
            #[cfg(any(target_os = "linux", target_os = "android"))]
            // SAFETY: the union field read is the one waitid fills for child events.
            let found = unsafe { info.si_pid() } != 0;
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            let found = info.si_signo != 0;
            return if found {
                LeaderState::Exited
            } else {
                LeaderState::Running
            };
        }
    }

    /// Waits until the leader has exited (it stays unreaped) or can no longer be followed.
    /// Cancel-safe: dropping the future loses nothing.
    pub(super) async fn exited(&mut self) -> LeaderState {
        let state = loop {
            match &mut self.watch {
                #[cfg(any(target_os = "linux", target_os = "android"))]
                ExitWatch::Pidfd(fd) => match fd.readable().await {
                    // A pidfd stays readable once its process exited: no need to clear it.
                    Ok(_guard) => break LeaderState::Exited,
                    Err(err) => {
                        tracing::warn!(pgid = self.pgid, %err, "pidfd failed; watching SIGCHLD instead");
                        self.watch = ExitWatch::sigchld();
                    }
                },
                ExitWatch::Sigchld(_) | ExitWatch::Poll => {
                    // The state is asked after subscribing (in `open`) and before every wait, so
                    // the SIGCHLD of the leader's exit cannot fall between check and wait.
                    match self.state() {
                        LeaderState::Running => {}
                        other => break other,
                    }
                    match &mut self.watch {
                        ExitWatch::Sigchld(sigchld) => {
                            if sigchld.recv().await.is_none() {
                                // Runtime shutting down: this future is dropped soon.
                                std::future::pending::<()>().await;
                            }
                        }
                        _ => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            }
        };
        if matches!(state, LeaderState::Exited) && self.ended.is_none() {
            self.ended = Some(StdInstant::now());
        }
        state
    }

    /// Reaps the exited leader: its exit status and what it used (with the wall time from spawn
    /// to exit). From here on its pgid may be reused, so the group is never signalled again.
    pub(super) fn reap(&mut self) -> (io::Result<ExitStatus>, Option<UsageMsg>) {
        self.may_signal = false;
        let mut status: libc::c_int = 0;
        // SAFETY: rusage is plain data for which all-zero is a valid value; wait4 writes it.
        let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: our own child; the out-pointers are valid for the call.
            let rc = unsafe { libc::wait4(self.pgid, &mut status, 0, &mut rusage) };
            if rc == self.pgid {
                break;
            }
            let err = io::Error::last_os_error();
            if rc < 0 && err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return (Err(err), None);
        }
        let ended = self.ended.unwrap_or_else(StdInstant::now);
        let wall = ended.saturating_duration_since(self.started);
        (
            Ok(ExitStatus::from_raw(status)),
            Some(usage_of(&rusage, wall)),
        )
    }
}

impl ExitWatch {
    fn open(pid: libc::pid_t) -> ExitWatch {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Some(fd) = pidfd(pid) {
            return ExitWatch::Pidfd(fd);
        }
        let _ = pid;
        ExitWatch::sigchld()
    }

    fn sigchld() -> ExitWatch {
        match signal(SignalKind::child()) {
            Ok(sigchld) => ExitWatch::Sigchld(sigchld),
            Err(err) => {
                tracing::warn!(%err, "no SIGCHLD stream; polling for task exits");
                ExitWatch::Poll
            }
        }
    }
}

/// A pidfd for our unreaped child, registered with the runtime; `None` where the kernel has no
/// `pidfd_open` (before 5.3: CentOS 7's 3.10) or forbids it.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn pidfd(pid: libc::pid_t) -> Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    use std::os::fd::FromRawFd;
    use std::sync::atomic::{AtomicBool, Ordering};
    // Once the kernel said no, do not ask again for every task.
    static UNSUPPORTED: AtomicBool = AtomicBool::new(false);
    // `HSM_PROCESS_NO_PIDFD=1` takes the path of kernels before 5.3 (CentOS 7), so tests run
    // it on any kernel.
    static FORCED_OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if UNSUPPORTED.load(Ordering::Relaxed)
        || *FORCED_OFF.get_or_init(|| std::env::var_os("HSM_PROCESS_NO_PIDFD").is_some())
    {
        return None;
    }
    // SAFETY: plain syscall; the pid is our unreaped child, so it names nobody else.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let err = io::Error::last_os_error();
        if matches!(err.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) {
            UNSUPPORTED.store(true, Ordering::Relaxed);
        }
        return None;
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as libc::c_int) };
    // SAFETY: the descriptor is owned by the AsyncFd and lives as long as its registration.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .ok()
}

fn ms_of_timeval(tv: &libc::timeval) -> u64 {
    let secs = u64::try_from(tv.tv_sec).unwrap_or(0);
    let micros = u64::try_from(tv.tv_usec).unwrap_or(0);
    secs.saturating_mul(1000).saturating_add(micros / 1000)
}

/// What `wait4` reported, as the protocol carries it.
fn usage_of(rusage: &libc::rusage, wall: Duration) -> UsageMsg {
    let maxrss = u64::try_from(rusage.ru_maxrss).unwrap_or(0);
    // Linux reports KiB, macOS bytes.
    #[cfg(target_os = "macos")]
    let maxrss = maxrss / 1024;
    UsageMsg {
        scheduler: None,
        wall_ms: Some(u64::try_from(wall.as_millis()).unwrap_or(u64::MAX)),
        cpu_user_ms: Some(ms_of_timeval(&rusage.ru_utime)),
        cpu_sys_ms: Some(ms_of_timeval(&rusage.ru_stime)),
        max_rss_kb: Some(maxrss),
    }
}

/// Sleeps until `deadline`; `None` (a deadline beyond what `Instant` can represent) never ends.
pub(super) async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl Leader {
    /// SIGTERM (plus SIGCONT, so a stopped group can act on it) to the group; then, once the
    /// leader has exited or `grace` has passed, whichever comes first, SIGKILL to the group while
    /// the unreaped leader still pins the pgid; finally reap the leader.
    ///
    /// Group members therefore get at most `grace` after SIGTERM, and no more than the leader takes
    /// to exit: once the leader is gone the task is over, and holding its zombie for the rest of
    /// the grace (the only way to signal its group safely later) would delay every report.
    pub(super) async fn terminate(&mut self, grace: Duration) -> Option<UsageMsg> {
        self.signal_group(libc::SIGTERM);
        self.signal_group(libc::SIGCONT);
        let deadline = sleep_until_opt(Instant::now().checked_add(grace));
        tokio::pin!(deadline);
        let state = tokio::select! {
            state = self.exited() => Some(state),
            () = &mut deadline => None,
        };
        if let Some(LeaderState::Unknown(err)) = state {
            tracing::error!(pgid = self.pgid, %err, "lost track of task leader");
            self.may_signal = false;
            return None;
        }
        self.signal_group(libc::SIGKILL);
        if state.is_none() {
            // SIGKILLed while running: wait for it to die (it stays unreaped until `reap`).
            if let LeaderState::Unknown(err) = self.exited().await {
                tracing::error!(pgid = self.pgid, %err, "lost track of task leader");
                self.may_signal = false;
                return None;
            }
        }
        match self.reap() {
            (Ok(_), usage) => usage,
            (Err(err), _) => {
                tracing::error!(pgid = self.pgid, %err, "waiting for terminated task failed");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rusage_becomes_milliseconds_and_kib() {
        // SAFETY: plain data.
        let mut r: libc::rusage = unsafe { std::mem::zeroed() };
        r.ru_utime.tv_sec = 2;
        r.ru_utime.tv_usec = 345_678;
        r.ru_stime.tv_usec = 999;
        r.ru_maxrss = 51_200;
        let u = usage_of(&r, Duration::from_millis(1_500));
        assert_eq!(u.wall_ms, Some(1_500));
        assert_eq!(u.cpu_user_ms, Some(2_345));
        assert_eq!(u.cpu_sys_ms, Some(0));
        #[cfg(not(target_os = "macos"))]
        assert_eq!(u.max_rss_kb, Some(51_200));
    }
}
