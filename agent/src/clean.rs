//! Removing sweeps from the agent: `agent clean` (a coordinator names the sweeps whose results it
//! holds; `ToAgent::Clean`) and `--ledger-retention` (sweeps whose coordinator never came back).
//!
//! Why it is shaped like this:
//!
//! * The decisions are plain functions of a sweep's facts and the time ([`decide_clean`],
//!   [`expired`]); the runner gathers the facts under its lock ([`crate::runner::Runner::
//!   sweep_facts`]) and checks them again under the same lock when it forgets the sweep, so a
//!   submission arriving meanwhile keeps the sweep.
//! * The coordinator decides which sweeps it holds the results of; the agent never trusts that
//!   alone: a sweep with a live attempt, an unacknowledged event or results not taken, a
//!   connected coordinator, or another owner is kept, with the reason.
//! * Removal renames `<work_dir>/<sweep>` to a `.hsm-removing-…` name under the runner's lock
//!   (instant; a later submission of that sweep id starts afresh) and deletes it after. A
//!   removal cut short (kill, crash) leaves only such names, which [`remove_leftovers`] deletes
//!   at the next start. Sweep ids never start with a dot, so the names cannot collide.
//! * Retention forgets only sweeps that still hold something for their coordinator (results
//!   or events it never took) and have nothing running: a sweep whose coordinator took
//!   everything stays until `agent clean`, and a task running for months is never removed under
//!   it.

use crate::runner::{valid_sweep_id, Runner};
use hsm_protocol::{display_safe, CleanMsg, CleanedMsg, CleanedSweep, KeptSweep, SweepId};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Prefix of a directory under the work dir being removed.
pub const REMOVING_PREFIX: &str = ".hsm-removing-";
/// `--ledger-retention` when none is given.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 86_400);

/// What the agent knows about one sweep, gathered under the runner's lock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepFacts {
    /// The fingerprint of the coordinator identity that submitted it, when recorded.
    pub owner: Option<String>,
    /// Attempts not ended yet (queued, being launched, running, being drained).
    pub live: usize,
    /// Ended attempts still holding something for the coordinator: unacknowledged events, or
    /// result files it has not taken.
    pub unreported: usize,
    /// A connected coordinator session has claimed it (is running it now).
    pub claimed: bool,
    /// When a coordinator last addressed it (ms since the Unix epoch).
    pub seen_ms: Option<i64>,
    /// When its last attempt ended, of those the agent still holds.
    pub last_exit_ms: Option<i64>,
}

impl SweepFacts {
    /// Whether the ledger or the runner knows anything of the sweep.
    pub fn known(&self) -> bool {
        self.owner.is_some() || self.live + self.unreported > 0 || self.seen_ms.is_some()
    }
}

/// Why a sweep is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keep {
    /// Another coordinator identity submitted it.
    NotYours,
    /// A coordinator is connected to it now.
    InUse,
    /// This many attempts have not ended.
    Live(usize),
    /// This many ended attempts hold events or results the coordinator has not taken.
    Unreported(usize),
    /// Its last activity was `idle` ago, less than `--older-than`.
    Recent {
        idle: Duration,
        older_than: Duration,
    },
}

impl Keep {
    /// The reason as the coordinator prints it (lowercase, no trailing period).
    pub fn reason(&self) -> String {
        let s = |n: usize| if n == 1 { "" } else { "s" };
        match self {
            Keep::NotYours => "it was submitted by another coordinator identity (HSM_HOME), \
                               and only that one may remove it"
                .into(),
            Keep::InUse => "a coordinator is connected to it now (a run of it is going on)".into(),
            Keep::Live(n) => format!("{n} attempt{} of it still queued or running here", s(*n)),
            Keep::Unreported(n) => format!(
                "{n} ended attempt{} of it still hold{} events or result files the coordinator \
                 has not taken (run `sweep complete` to fetch them)",
                s(*n),
                if *n == 1 { "s" } else { "" }
            ),
            Keep::Recent { idle, older_than } => format!(
                "last active {} ago, less than --older-than {}",
                human(*idle),
                human(*older_than)
            ),
        }
    }
}

/// When the sweep last did anything on this agent: a coordinator's request, an attempt's end,
/// a file written under its directory (`newest_file_ms`).
pub fn last_activity(facts: &SweepFacts, newest_file_ms: Option<i64>) -> Option<i64> {
    [facts.seen_ms, facts.last_exit_ms, newest_file_ms]
        .into_iter()
        .flatten()
        .max()
}

/// Whether coordinator `who` may remove the sweep now (`agent clean`), and why not.
pub fn decide_clean(
    facts: &SweepFacts,
    who: &str,
    older_than: Option<Duration>,
    newest_file_ms: Option<i64>,
    now_ms: i64,
) -> Result<(), Keep> {
    // A sweep nobody owns (an agent without a ledger that restarted) has no other claimant.
    if facts.owner.as_deref().is_some_and(|owner| owner != who) {
        return Err(Keep::NotYours);
    }
    if facts.claimed {
        return Err(Keep::InUse);
    }
    if facts.live > 0 {
        return Err(Keep::Live(facts.live));
    }
    if facts.unreported > 0 {
        return Err(Keep::Unreported(facts.unreported));
    }
    if let (Some(older_than), Some(last)) = (older_than, last_activity(facts, newest_file_ms)) {
        let idle = Duration::from_millis(now_ms.saturating_sub(last).max(0) as u64);
        if idle < older_than {
            return Err(Keep::Recent { idle, older_than });
        }
    }
    Ok(())
}

/// Whether `--ledger-retention` forgets the sweep now: it still holds something for its
/// coordinator, nothing of it runs, no coordinator is connected to it, and none has addressed
/// it (nor has an attempt of it ended) for `retention`.
pub fn expired(facts: &SweepFacts, retention: Duration, now_ms: i64) -> bool {
    if facts.claimed || facts.live > 0 || facts.unreported == 0 {
        return false;
    }
    // Without a time (never the case once the runner has started) nothing is known: kept.
    let Some(last) = last_activity(facts, None) else {
        return false;
    };
    now_ms.saturating_sub(last) >= i64::try_from(retention.as_millis()).unwrap_or(i64::MAX)
}

/// How often retention is checked: often enough for a short retention, at most hourly.
pub fn retention_check_every(retention: Duration) -> Duration {
    (retention / 8).clamp(Duration::from_millis(100), Duration::from_secs(3600))
}

/// `3d 4h`, `2h 5m`, `40s`: a duration as people read it (two units at most).
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (d_, h, m, sec) = (s / 86_400, s / 3_600 % 24, s / 60 % 60, s % 60);
    match (d_, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) if sec == 0 => format!("{m}m"),
        (0, 0, _) => format!("{m}m {sec}s"),
        (0, _, 0) => format!("{h}h"),
        (0, _, _) => format!("{h}h {m}m"),
        (_, 0, _) => format!("{d_}d"),
        _ => format!("{d_}d {h}h"),
    }
}

/// What a sweep's directory holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Measured {
    pub task_dirs: u64,
    pub bytes: u64,
    /// The newest modification time of anything under it (ms since the Unix epoch).
    pub newest_ms: Option<i64>,
}

use hsm_protocol::epoch_ms as ms;

/// Walks `dir` without following symbolic links; `None` when it does not exist.
pub fn measure(dir: &Path) -> std::io::Result<Option<Measured>> {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut measured = Measured {
        newest_ms: meta.modified().ok().map(ms),
        ..Measured::default()
    };
    if !meta.is_dir() {
        measured.bytes = meta.len();
        return Ok(Some(measured));
    }
    if let Ok(tasks) = std::fs::read_dir(dir.join("tasks")) {
        measured.task_dirs = tasks
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .count() as u64;
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        // A directory that vanished or cannot be read is skipped: the sizes are for the report.
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let Ok(meta) = entry.metadata() else { continue };
            if let Some(at) = meta.modified().ok().map(ms) {
                measured.newest_ms = measured.newest_ms.max(Some(at));
            }
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                measured.bytes += meta.len();
            }
        }
    }
    Ok(Some(measured))
}

/// The name a sweep's directory is renamed to while it is removed.
pub fn removing_name(sweep: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{REMOVING_PREFIX}{sweep}-{}-{nanos}", std::process::id())
}

/// Deletes what removals cut short left under `work_dir` (see the module notes).
pub fn remove_leftovers(work_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(work_dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with(REMOVING_PREFIX)
        {
            continue;
        }
        let path = entry.path();
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::info!(dir = %path.display(), "removed what an interrupted clean-up left")
            }
            Err(e) => {
                tracing::warn!(dir = %path.display(), error = %e, "cannot remove what an interrupted clean-up left")
            }
        }
    }
}

/// One clean-up at a time (a `Clean` and the retention check): their measurements and reports
/// stay consistent, and a disk is not walked twice at once.
static CLEANING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Deletes a directory the runner has moved aside; the error names what is left.
fn delete(moved: &Path) -> Result<(), String> {
    std::fs::remove_dir_all(moved).map_err(|e| {
        format!(
            "forgotten, but deleting its files failed ({e}): what is left is in {} on the \
             agent's host",
            moved.display()
        )
    })
}

/// Answers a `Clean` from coordinator `who` (blocking: it walks and deletes directories).
pub fn clean(runner: &Runner, who: &str, msg: &CleanMsg, now: SystemTime) -> CleanedMsg {
    let _one = CLEANING.lock().unwrap_or_else(|e| e.into_inner());
    let now_ms = ms(now);
    let older_than = msg.older_than_secs.map(Duration::from_secs);
    let mut answer = CleanedMsg {
        removed: Vec::new(),
        kept: Vec::new(),
        absent: Vec::new(),
    };
    let mut named: Vec<&SweepId> = msg.sweeps.iter().collect();
    named.sort();
    named.dedup();
    for sweep in named {
        let keep = |reason: String| KeptSweep {
            sweep_id: sweep.clone(),
            reason,
        };
        if !valid_sweep_id(sweep.as_str()) {
            answer
                .kept
                .push(keep("not a sweep id this agent can hold".into()));
            continue;
        }
        let dir = runner.work_dir().join(sweep.as_str());
        let measured = match measure(&dir) {
            Ok(measured) => measured,
            Err(e) => {
                answer.kept.push(keep(format!(
                    "cannot read its directory {}: {e}",
                    dir.display()
                )));
                continue;
            }
        };
        let facts = runner.sweep_facts(sweep);
        if measured.is_none() && !facts.known() {
            answer.absent.push(sweep.clone());
            continue;
        }
        let newest = measured.and_then(|m| m.newest_ms);
        let decide = |facts: &SweepFacts| decide_clean(facts, who, older_than, newest, now_ms);
        if let Err(why) = decide(&facts) {
            answer.kept.push(keep(why.reason()));
            continue;
        }
        let removed = CleanedSweep {
            sweep_id: sweep.clone(),
            dir: measured.map_or_else(String::new, |_| dir.display().to_string()),
            task_dirs: measured.map_or(0, |m| m.task_dirs),
            bytes: measured.map_or(0, |m| m.bytes),
        };
        if msg.dry_run {
            answer.removed.push(removed);
            continue;
        }
        match runner.forget_sweep(sweep, decide) {
            Err(why) => answer.kept.push(keep(why.reason())),
            Ok(moved) => {
                if let Some(Err(failed)) = moved.as_deref().map(delete) {
                    tracing::warn!(sweep = %display_safe(sweep.as_str()), error = %failed, "clean-up incomplete");
                    answer.kept.push(keep(failed));
                    continue;
                }
                tracing::info!(
                    sweep = %display_safe(sweep.as_str()),
                    coordinator = %who,
                    task_dirs = removed.task_dirs,
                    bytes = removed.bytes,
                    "removed the sweep's files and forgot it (agent clean)"
                );
                answer.removed.push(removed);
            }
        }
    }
    answer
}

/// `--ledger-retention`: forgets every sweep [`expired`] says, removing its files. Returns the
/// sweeps forgotten.
pub fn expire(runner: &Runner, retention: Duration, now: SystemTime) -> Vec<SweepId> {
    let _one = CLEANING.lock().unwrap_or_else(|e| e.into_inner());
    let now_ms = ms(now);
    let mut forgotten = Vec::new();
    for sweep in runner.known_sweeps() {
        let facts = runner.sweep_facts(&sweep);
        if !expired(&facts, retention, now_ms) {
            continue;
        }
        let dir: PathBuf = runner.work_dir().join(sweep.as_str());
        let measured = measure(&dir).ok().flatten().unwrap_or_default();
        let check = |facts: &SweepFacts| {
            if expired(facts, retention, now_ms) {
                Ok(())
            } else {
                Err(Keep::InUse)
            }
        };
        let Ok(moved) = runner.forget_sweep(&sweep, check) else {
            continue;
        };
        let idle = last_activity(&facts, None)
            .map(|last| {
                human(Duration::from_millis(
                    now_ms.saturating_sub(last).max(0) as u64
                ))
            })
            .unwrap_or_default();
        tracing::warn!(
            sweep = %display_safe(sweep.as_str()),
            unreported = facts.unreported,
            idle = %idle,
            retention = %human(retention),
            dir = %dir.display(),
            task_dirs = measured.task_dirs,
            bytes = measured.bytes,
            "no coordinator came back for this sweep within --ledger-retention: forgot it, with \
             the results and events it never took, and removed its files"
        );
        if let Some(Err(failed)) = moved.as_deref().map(delete) {
            tracing::warn!(sweep = %display_safe(sweep.as_str()), error = %failed, "clean-up incomplete");
        }
        forgotten.push(sweep);
    }
    forgotten
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    fn facts() -> SweepFacts {
        SweepFacts {
            owner: Some("sha256:me".into()),
            seen_ms: Some(10 * DAY),
            ..SweepFacts::default()
        }
    }

    #[test]
    fn clean_removes_only_an_idle_finished_sweep_of_the_requester() {
        let now = 40 * DAY;
        assert_eq!(decide_clean(&facts(), "sha256:me", None, None, now), Ok(()));
        assert_eq!(
            decide_clean(&facts(), "sha256:other", None, None, now),
            Err(Keep::NotYours)
        );
        let unowned = SweepFacts {
            owner: None,
            ..facts()
        };
        assert_eq!(
            decide_clean(&unowned, "sha256:other", None, None, now),
            Ok(())
        );
        for (f, why) in [
            (
                SweepFacts {
                    claimed: true,
                    ..facts()
                },
                Keep::InUse,
            ),
            (
                SweepFacts {
                    live: 2,
                    unreported: 1,
                    ..facts()
                },
                Keep::Live(2),
            ),
            (
                SweepFacts {
                    unreported: 1,
                    ..facts()
                },
                Keep::Unreported(1),
            ),
        ] {
            assert_eq!(decide_clean(&f, "sha256:me", None, None, now), Err(why));
        }
    }

    #[test]
    fn older_than_counts_from_the_latest_activity_of_any_kind() {
        let month = Some(Duration::from_secs(30 * 86_400));
        let now = 40 * DAY + 1;
        // Seen 30 days and 1 ms ago, nothing newer.
        assert_eq!(
            decide_clean(&facts(), "sha256:me", month, None, now),
            Ok(())
        );
        // A file written 5 days ago keeps it.
        assert_eq!(
            decide_clean(&facts(), "sha256:me", month, Some(35 * DAY), now),
            Err(Keep::Recent {
                idle: Duration::from_millis(5 * 86_400_000 + 1),
                older_than: Duration::from_secs(30 * 86_400)
            })
        );
        // Nothing known about its time: old enough (it is finished and idle).
        let timeless = SweepFacts {
            seen_ms: None,
            ..facts()
        };
        assert_eq!(
            decide_clean(&timeless, "sha256:me", month, None, now),
            Ok(())
        );
        let recent = Keep::Recent {
            idle: Duration::from_secs(5 * 86_400 + 3_600),
            older_than: Duration::from_secs(30 * 86_400),
        };
        assert_eq!(
            recent.reason(),
            "last active 5d 1h ago, less than --older-than 30d"
        );
    }

    #[test]
    fn retention_forgets_only_abandoned_sweeps_after_the_retention() {
        let retention = Duration::from_secs(30 * 86_400);
        let abandoned = SweepFacts {
            unreported: 3,
            last_exit_ms: Some(12 * DAY),
            ..facts()
        };
        // 30 days after the last thing that happened (the exit at day 12), not before.
        assert!(!expired(&abandoned, retention, 42 * DAY - 1));
        assert!(expired(&abandoned, retention, 42 * DAY));
        let far = 100 * DAY;
        // A coordinator that took everything came back: nothing for retention to do.
        assert!(!expired(&facts(), retention, far));
        for kept in [
            SweepFacts {
                live: 1,
                ..abandoned.clone()
            },
            SweepFacts {
                claimed: true,
                ..abandoned.clone()
            },
            SweepFacts {
                seen_ms: None,
                last_exit_ms: None,
                ..abandoned.clone()
            },
        ] {
            assert!(!expired(&kept, retention, far), "{kept:?}");
        }
    }

    #[test]
    fn measure_counts_task_dirs_and_bytes_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        let sweep = dir.path().join("s1");
        assert_eq!(measure(&sweep).unwrap(), None);
        for (rel, size) in [
            ("tasks/task_001/stdout.log", 10),
            ("tasks/task_002/results/r.bin", 1000),
        ] {
            let path = sweep.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, vec![0u8; size]).unwrap();
        }
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("big"), vec![0u8; 50_000]).unwrap();
        std::os::unix::fs::symlink(&outside, sweep.join("tasks/task_001/link")).unwrap();
        let m = measure(&sweep).unwrap().unwrap();
        assert_eq!(m.task_dirs, 2);
        assert!(m.bytes >= 1010 && m.bytes < 50_000, "{m:?}");
        assert!(m.newest_ms.is_some());
    }

    #[test]
    fn leftovers_of_an_interrupted_removal_are_deleted_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let left = dir.path().join(removing_name("s1"));
        std::fs::create_dir_all(left.join("tasks/task_001")).unwrap();
        std::fs::create_dir_all(dir.path().join("s2/tasks")).unwrap();
        remove_leftovers(dir.path());
        assert!(!left.exists());
        assert!(dir.path().join("s2/tasks").exists());
    }

    #[test]
    fn retention_is_checked_often_enough_and_at_most_hourly() {
        assert_eq!(
            retention_check_every(Duration::from_secs(2)),
            Duration::from_millis(250)
        );
        assert_eq!(
            retention_check_every(DEFAULT_RETENTION),
            Duration::from_secs(3600)
        );
    }
}
