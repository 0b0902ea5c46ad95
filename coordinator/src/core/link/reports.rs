//! What an agent's reports mean for the sweep, as plain functions: whether its heartbeat says
//! its disk has room for new work, and how an attempt's outcome counts.

use crate::core::state::{ExitKind, Usage};
use hsm_protocol::{HeartbeatMsg, OutcomeMsg, UsageMsg};

/// Below this many free inodes an agent's disk counts as full however many bytes are free:
/// every task creates files (its directory, logs, records), and a file system out of inodes fails
/// them all. Checked while `min_free_disk` is on.
pub const MIN_FREE_INODES: u64 = 10_000;

/// Why an agent's disk has no room for new work, from its heartbeat (`None`: it has room).
pub fn disk_low(health: &HeartbeatMsg, min_free_disk: u64) -> Option<String> {
    if min_free_disk == 0 {
        return None;
    }
    if health.free_disk_bytes < min_free_disk {
        return Some(format!(
            "free disk {} below min_free_disk {}",
            gib(health.free_disk_bytes),
            gib(min_free_disk)
        ));
    }
    match health.free_inodes {
        Some(inodes) if inodes < MIN_FREE_INODES => Some(format!(
            "{inodes} free inodes (files that can still be created) on its disk, below {MIN_FREE_INODES}"
        )),
        _ => None,
    }
}

/// Bytes as GiB with two decimals, for notes.
pub fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// What an attempt used, as the process backend or an agent measured it.
pub fn usage_of(msg: UsageMsg) -> Usage {
    Usage {
        wall_ms: msg.wall_ms,
        cpu_user_ms: msg.cpu_user_ms,
        cpu_sys_ms: msg.cpu_sys_ms,
        max_rss_kb: msg.max_rss_kb,
        scheduler: msg.scheduler,
    }
}

/// How an agent-reported outcome counts for the sweep.
pub fn exit_of(outcome: OutcomeMsg) -> ExitKind {
    match outcome {
        OutcomeMsg::Exited { code: 0 } => ExitKind::Success,
        OutcomeMsg::Exited { code } => ExitKind::Failure {
            exit_code: Some(code),
            reason: format!("exit code {code}"),
        },
        OutcomeMsg::Signaled { signal } => ExitKind::Failure {
            exit_code: None,
            reason: format!("killed by signal {signal}"),
        },
        OutcomeMsg::TimedOut => ExitKind::Failure {
            exit_code: None,
            reason: "timeout".into(),
        },
        OutcomeMsg::Cancelled => ExitKind::Cancelled,
        OutcomeMsg::Failed { reason } => ExitKind::Failure {
            exit_code: None,
            reason,
        },
        OutcomeMsg::SpawnFailed { message } => ExitKind::Failure {
            exit_code: None,
            reason: format!("could not start: {message}"),
        },
        OutcomeMsg::Lost => ExitKind::Lost {
            reason: "lost by the agent (it restarted while the task ran)".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(free_disk_bytes: u64, free_inodes: Option<u64>) -> HeartbeatMsg {
        HeartbeatMsg {
            load1: 0.0,
            free_mem_bytes: 1 << 30,
            free_disk_bytes,
            running: 0,
            slots: 1,
            free_inodes,
            notice: None,
        }
    }

    #[test]
    fn a_disk_is_low_on_bytes_or_on_inodes_while_the_check_is_on() {
        const GIB: u64 = 1 << 30;
        assert_eq!(disk_low(&health(2 * GIB, Some(50_000)), GIB), None);
        assert_eq!(
            disk_low(&health(2 * GIB, None), GIB),
            None,
            "no inode count"
        );
        let bytes = disk_low(&health(GIB / 2, Some(50_000)), GIB).unwrap();
        assert!(bytes.contains("below min_free_disk 1.00 GiB"), "{bytes}");
        let inodes = disk_low(&health(2 * GIB, Some(9_999)), GIB).unwrap();
        assert!(inodes.starts_with("9999 free inodes"), "{inodes}");
        assert_eq!(
            disk_low(&health(0, Some(0)), 0),
            None,
            "min_free_disk 0 turns it off"
        );
    }
}
