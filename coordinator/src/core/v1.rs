//! Reading Python HSM v1 sweep directories (pure): which directory holds which task, what a
//! task's `task_info.txt` says about how it ended, and which compute source `source_mapping.yaml`
//! names for it. The shell (`cli::v1_import`) walks the directory and writes `sweep.db`.
//!
//! What v1 wrote varied by version and backend (see `docs/python-hsm-v1.md`); these functions
//! accept every variant found in its code:
//!
//! * task directories `task_003` (local, remote), `task_3` (PBS/Slurm arrays) and
//!   `<sweep_id>_task_003` (individual Slurm jobs); `task_003_backup_<ts>` is not a task;
//! * `task_info.txt` is appended to over an attempt and the last `Status: ` line wins, matched by
//!   substring as v1 did: `SUCCESS` or `COMPLETED` is done, `FAILED` failed, `CANCELLED`,
//!   `KILLED`, `FORCE_KILLED` cancelled; `RUNNING`, `CHUNK_INCOMPLETE`, no line or no file means
//!   it never finished;
//! * `source_mapping.yaml` is often stale (v1 itself re-checked it against `task_info.txt`), so
//!   it only says where a task ran, never whether it is done.

use crate::yaml::{self, Spanned};
use std::collections::BTreeMap;

/// How a v1 task ended, by its `task_info.txt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V1Status {
    Completed,
    Failed,
    Cancelled,
    /// Still marked running, an incomplete chunk, or no status at all: never finished.
    Unfinished,
}

/// The task number a v1 task directory stands for: `task_N`, or `<prefix>_task_N` (individual
/// Slurm jobs), N > 0. Anything else (backups, logs, `task_7.slurm`) is not a task directory.
pub fn task_index_of_dir(name: &str) -> Option<u64> {
    let at = name.rfind("task_")?;
    let (prefix, rest) = name.split_at(at);
    if !prefix.is_empty() && !prefix.ends_with('_') {
        return None;
    }
    let digits = &rest["task_".len()..];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&n| n > 0)
}

/// The status a `task_info.txt` ends with (its last `Status: ` line).
pub fn task_info_status(text: &str) -> V1Status {
    let Some(last) = text
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("Status: "))
    else {
        return V1Status::Unfinished;
    };
    if last.contains("SUCCESS") || last.contains("COMPLETED") {
        V1Status::Completed
    } else if last.contains("FAILED") {
        V1Status::Failed
    } else if last.contains("CANCELLED") || last.contains("KILLED") {
        V1Status::Cancelled
    } else {
        V1Status::Unfinished
    }
}

/// Task number → compute source name from `source_mapping.yaml`
/// (`task_assignments.<task dir>.compute_source`). Unreadable text or entries give nothing:
/// the mapping is a hint.
pub fn mapping_sources(text: &str) -> BTreeMap<u64, String> {
    let mut sources = BTreeMap::new();
    let Ok(Some(root)) = yaml::parse(text) else {
        return sources;
    };
    let Some(assignments) = root.get("task_assignments").and_then(Spanned::as_map) else {
        return sources;
    };
    for (key, entry) in assignments {
        let Some(index) = task_index_of_dir(&key.key_text()) else {
            continue;
        };
        if let Some(source) = entry
            .get("compute_source")
            .and_then(Spanned::as_str)
            .filter(|s| !s.is_empty() && *s != "unknown")
        {
            sources.insert(index, source.to_string());
        }
    }
    sources
}

/// One task directory found in a v1 sweep: its task number, its status and its path relative to
/// `tasks/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundTask {
    pub index: u64,
    pub status: V1Status,
    pub rel_dir: String,
}

/// For each task number, the directory that decides it when several stand for the same task
/// (`task_007` and `remote_a/task_007`): a completed one first, then failed, cancelled,
/// unfinished; the first found among equals.
pub fn choose(found: Vec<FoundTask>) -> BTreeMap<u64, FoundTask> {
    let rank = |s: V1Status| match s {
        V1Status::Completed => 0,
        V1Status::Failed => 1,
        V1Status::Cancelled => 2,
        V1Status::Unfinished => 3,
    };
    let mut chosen: BTreeMap<u64, FoundTask> = BTreeMap::new();
    for task in found {
        match chosen.get(&task.index) {
            Some(kept) if rank(kept.status) <= rank(task.status) => {}
            _ => {
                chosen.insert(task.index, task);
            }
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_directories_of_every_v1_backend_are_recognised() {
        assert_eq!(task_index_of_dir("task_003"), Some(3));
        assert_eq!(task_index_of_dir("task_7"), Some(7));
        assert_eq!(task_index_of_dir("task_1000"), Some(1000));
        assert_eq!(
            task_index_of_dir("sweep_20251110_212023_task_012"),
            Some(12)
        );
        for not_a_task in [
            "task_003_backup_20251110",
            "task_7.slurm",
            "xtask_7",
            "task_",
            "task_0",
            "task_info.txt",
            "remote_gpu1",
            "logs",
        ] {
            assert_eq!(task_index_of_dir(not_a_task), None, "{not_a_task}");
        }
    }

    #[test]
    fn the_last_status_line_decides() {
        let local = "Job ID: local_sweep_1_3\nTask Name: task_003\nStart Time: Mon Nov 10 21:20:31 CET 2025\nParameters: seed=2 lr=0.001\nStatus: RUNNING\nStatus: COMPLETED\nEnd Time: Mon Nov 10 21:41:07 CET 2025\n";
        assert_eq!(task_info_status(local), V1Status::Completed);
        let array = "PBS Array Index: 3\nGlobal Task Index: 3\nParameters: \"seed=2\"\nStarted: x\nNode: n1\nFailed: y\nStatus: FAILED\nExit Code: 1\n";
        assert_eq!(task_info_status(array), V1Status::Failed);
        let e2 = "Job ID: 1\nTask: t\nStarted: x\nCompleted: y\nStatus: SUCCESS\n";
        assert_eq!(task_info_status(e2), V1Status::Completed);
        assert_eq!(
            task_info_status("Status: RUNNING\nStatus: CANCELLED (force killed)\n"),
            V1Status::Cancelled
        );
        assert_eq!(
            task_info_status("Status: RUNNING\nStatus: FORCE_KILLED\n"),
            V1Status::Cancelled
        );
        assert_eq!(task_info_status("Status: RUNNING\n"), V1Status::Unfinished);
        assert_eq!(
            task_info_status("Status: CHUNK_INCOMPLETE\n"),
            V1Status::Unfinished
        );
        assert_eq!(task_info_status("Job ID: 4\n"), V1Status::Unfinished);
        // A failed first attempt, then a successful retry appended: the retry counts.
        assert_eq!(
            task_info_status("Status: FAILED\nStatus: RUNNING\nStatus: SUCCESS\n"),
            V1Status::Completed
        );
        // Mentions elsewhere do not count, only `Status: ` lines.
        assert_eq!(
            task_info_status("Parameters: note=COMPLETED\nStatus: FAILED\n"),
            V1Status::Failed
        );
    }

    #[test]
    fn the_mapping_says_where_tasks_ran() {
        let text = "sweep_metadata:\n  compute_sources:\n  - local\n  strategy: local\n  total_tasks: 3\ntask_assignments:\n  task_001:\n    complete_time: null\n    compute_source: local\n    status: COMPLETED\n  task_2:\n    compute_source: HPC\n    status: PENDING\n  task_003:\n    compute_source: unknown\n";
        let sources = mapping_sources(text);
        assert_eq!(sources.get(&1).map(String::as_str), Some("local"));
        assert_eq!(sources.get(&2).map(String::as_str), Some("HPC"));
        assert_eq!(sources.get(&3), None);
        assert!(mapping_sources(": not yaml [").is_empty());
        assert!(mapping_sources("sweep_metadata: {}\n").is_empty());
    }

    #[test]
    fn a_completed_directory_wins_over_others_for_the_same_task() {
        let t = |index, status, rel_dir: &str| FoundTask {
            index,
            status,
            rel_dir: rel_dir.into(),
        };
        let chosen = choose(vec![
            t(7, V1Status::Failed, "task_007"),
            t(7, V1Status::Completed, "remote_a/task_007"),
            t(8, V1Status::Unfinished, "task_8"),
            t(8, V1Status::Unfinished, "remote_a/task_008"),
        ]);
        assert_eq!(chosen[&7].rel_dir, "remote_a/task_007");
        assert_eq!(chosen[&8].rel_dir, "task_8", "the first among equals");
    }
}
