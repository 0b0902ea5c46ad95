//! Completion planning: which tasks of an existing sweep `sweep complete` runs again. Tasks keep
//! their numbers and directories; a completed task runs again only when named explicitly.

use super::state::TaskStatus;

/// A task as recorded in the sweep's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedTask {
    pub index: u64,
    pub status: TaskStatus,
}

/// What the user asked `sweep complete` to do.
#[derive(Debug, Clone, Default)]
pub struct CompletionRequest {
    /// `--task-ids`: exactly these tasks (completed ones included), when given.
    pub task_ids: Option<Vec<u64>>,
    /// `--no-retry-failed` sets this to false.
    pub retry_failed: bool,
    /// `--max-runs N`: at most the first N of the plan.
    pub max_runs: Option<u64>,
}

/// Why a task is in the plan (shown by `--dry-run`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Never ran to an end (pending, queued or still marked running by a coordinator that died).
    Missing,
    Failed,
    Cancelled,
    /// Named in `--task-ids` although completed.
    Requested,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::Failed => "failed",
            Reason::Cancelled => "cancelled",
            Reason::Requested => "requested",
        }
    }
}

/// The tasks to run, in task order, with the reason for each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompletionPlan {
    pub runs: Vec<(u64, Reason)>,
    /// Completed tasks left alone.
    pub n_completed: u64,
    /// Failed tasks left alone because of `--no-retry-failed`.
    pub n_failed_kept: u64,
    /// Tasks dropped by `--max-runs`.
    pub n_deferred: u64,
}

/// Plans a completion. `tasks` must be in index order; ids in `task_ids` that no task has are
/// ignored here (the CLI validates them against the total first).
pub fn plan_completion(tasks: &[RecordedTask], request: &CompletionRequest) -> CompletionPlan {
    let mut plan = CompletionPlan::default();
    let named = request.task_ids.as_ref().map(|ids| {
        let mut ids = ids.clone();
        ids.sort_unstable();
        ids.dedup();
        ids
    });
    for task in tasks {
        if let Some(named) = &named {
            if named.binary_search(&task.index).is_err() {
                continue;
            }
        }
        let reason = match task.status {
            TaskStatus::Pending | TaskStatus::Queued | TaskStatus::Running => Some(Reason::Missing),
            TaskStatus::Cancelled => Some(Reason::Cancelled),
            TaskStatus::Failed if request.retry_failed || named.is_some() => Some(Reason::Failed),
            TaskStatus::Failed => {
                plan.n_failed_kept += 1;
                None
            }
            TaskStatus::Completed if named.is_some() => Some(Reason::Requested),
            TaskStatus::Completed => {
                plan.n_completed += 1;
                None
            }
        };
        if let Some(reason) = reason {
            plan.runs.push((task.index, reason));
        }
    }
    if let Some(max) = request.max_runs {
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        if plan.runs.len() > max {
            plan.n_deferred = (plan.runs.len() - max) as u64;
            plan.runs.truncate(max);
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskStatus::*;

    fn recorded(statuses: &[TaskStatus]) -> Vec<RecordedTask> {
        statuses
            .iter()
            .enumerate()
            .map(|(i, &status)| RecordedTask {
                index: i as u64 + 1,
                status,
            })
            .collect()
    }

    fn indices(plan: &CompletionPlan) -> Vec<u64> {
        plan.runs.iter().map(|(i, _)| *i).collect()
    }

    #[test]
    fn missing_failed_and_cancelled_keep_their_numbers() {
        let tasks = recorded(&[Completed, Failed, Pending, Completed, Cancelled, Running]);
        let plan = plan_completion(
            &tasks,
            &CompletionRequest {
                retry_failed: true,
                ..Default::default()
            },
        );
        assert_eq!(indices(&plan), [2, 3, 5, 6]);
        assert_eq!(plan.runs[0].1, Reason::Failed);
        assert_eq!(plan.runs[1].1, Reason::Missing);
        assert_eq!(
            plan.runs[3].1,
            Reason::Missing,
            "running with no coordinator is lost"
        );
        assert_eq!(plan.n_completed, 2);
    }

    #[test]
    fn no_retry_failed_leaves_failed_tasks_alone() {
        let tasks = recorded(&[Failed, Pending, Failed]);
        let plan = plan_completion(
            &tasks,
            &CompletionRequest {
                retry_failed: false,
                ..Default::default()
            },
        );
        assert_eq!(indices(&plan), [2]);
        assert_eq!(plan.n_failed_kept, 2);
    }

    #[test]
    fn task_ids_select_exactly_those_including_completed() {
        let tasks = recorded(&[Completed, Failed, Pending, Completed]);
        let request = CompletionRequest {
            task_ids: Some(vec![4, 1, 4]),
            retry_failed: true,
            max_runs: None,
        };
        let plan = plan_completion(&tasks, &request);
        assert_eq!(indices(&plan), [1, 4]);
        assert!(plan.runs.iter().all(|(_, r)| *r == Reason::Requested));
    }

    #[test]
    fn max_runs_takes_the_first_n() {
        let tasks = recorded(&[Pending, Pending, Pending, Completed, Pending]);
        let request = CompletionRequest {
            max_runs: Some(2),
            retry_failed: true,
            ..Default::default()
        };
        let plan = plan_completion(&tasks, &request);
        assert_eq!(indices(&plan), [1, 2]);
        assert_eq!(plan.n_deferred, 2);
    }

    #[test]
    fn a_finished_sweep_plans_nothing() {
        let tasks = recorded(&[Completed, Completed]);
        let plan = plan_completion(
            &tasks,
            &CompletionRequest {
                retry_failed: true,
                ..Default::default()
            },
        );
        assert!(plan.runs.is_empty());
        assert_eq!(plan.n_completed, 2);
    }
}
