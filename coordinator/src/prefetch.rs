//! Prepares task directories ahead of dispatch on a background thread, so that launching a task
//! is only "open two existing files and spawn". Creating a task's directories and files costs
//! more than spawning it (seven inodes on ext4); done on the launch path it leaves a slot idle
//! between one task's exit and the next one's start.

use crate::core::command::{build_argv, shell_display, CommandSpec, LaunchContext};
use crate::core::value::Params;
use crate::layout::{self, SweepPaths};
use crate::store::TaskParams;
use std::fs;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How far the preparer may run ahead of launches: bounded so a sweep interrupted early does not
/// leave thousands of never-run task directories behind.
pub const AHEAD: u64 = 256;

// A `sweep cancel` gives the first `CANCEL_ONE_BY_ONE` queued tasks a change each, so that every
// task directory prepared ahead gets its `status.yaml` rewritten; the rest are cancelled by range.
const _: () = assert!(AHEAD < crate::core::state::CANCEL_ONE_BY_ONE as u64);

/// What the preparer needs to write a task's first attempt.
pub struct PrefetchPlan {
    pub paths: SweepPaths,
    pub sweep_id: String,
    pub group: String,
    pub command: CommandSpec,
    pub script_override: Option<String>,
    /// Parameters of the sweep's tasks, shared with the sweep actor.
    pub params: Arc<TaskParams>,
    /// How many tasks the sweep has.
    pub total: u64,
    /// Tasks about to run their first attempt, in dispatch order.
    pub order: Vec<u64>,
    /// Whether to create the empty log files: a local or scheduler source opens them at launch,
    /// which is then cheaper; an agent source's tasks get theirs on their first output.
    pub create_logs: bool,
    /// A compact sweep's spare task directories, taken before new ones are made.
    pub spares: Option<Arc<layout::SparePool>>,
}

/// Per-task states. A task is prepared by exactly one side: the preparer moves it
/// UNTOUCHED → PREPARING → PREPARED; the source claims it with a compare-and-swap, either
/// UNTOUCHED → CLAIMED (and prepares it itself) or PREPARED → CLAIMED (and launches at once). The
/// preparer never touches a CLAIMED task, so it can never truncate the logs of a running one.
const UNTOUCHED: u8 = 0;
const PREPARING: u8 = 1;
const PREPARED: u8 = 2;
const CLAIMED: u8 = 3;

/// Shared between the preparer thread and the local source.
pub struct Prefetch {
    /// How many launches must have been claimed before the parked preparer is woken
    /// (`u64::MAX` while it works): it waits for a quarter of its lead to be used, not for
    /// each launch, and polls nothing while tasks are long.
    wake_at: AtomicU64,
    /// `state[index - 1]`, see the constants above.
    state: Vec<AtomicU8>,
    launched: AtomicU64,
    /// The preparer thread, for `claim` to wake it.
    preparer: std::sync::OnceLock<std::thread::Thread>,
    stop: AtomicBool,
    /// A compact sweep's paths: tasks prepared but never launched are tidied away at the end.
    compact: Option<SweepPaths>,
}

impl Prefetch {
    /// Starts the preparer thread. The returned handle stops it when dropped.
    pub fn start(plan: PrefetchPlan) -> (Arc<Prefetch>, PrefetchThread) {
        let shared = Arc::new(Prefetch {
            wake_at: AtomicU64::new(u64::MAX),
            state: (0..plan.total).map(|_| AtomicU8::new(UNTOUCHED)).collect(),
            launched: AtomicU64::new(0),
            preparer: std::sync::OnceLock::new(),
            stop: AtomicBool::new(false),
            compact: plan.paths.compact().then(|| plan.paths.clone()),
        });
        let worker = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("hsm-prefetch".into())
            .spawn(move || worker.run(plan))
            .ok();
        (Arc::clone(&shared), PrefetchThread { shared, handle })
    }

    /// Claims attempt 1 of `index` for launching. True when the preparer already prepared it;
    /// false when the caller must prepare it itself. Waits while the preparer is in the middle
    /// of that very task (a few file operations).
    pub fn claim(&self, index: u64) -> bool {
        let launched = self.launched.fetch_add(1, Ordering::SeqCst) + 1;
        if launched >= self.wake_at.load(Ordering::SeqCst) {
            if let Some(preparer) = self.preparer.get() {
                preparer.unpark();
            }
        }
        let Some(state) = index
            .checked_sub(1)
            .and_then(|i| self.state.get(i as usize))
        else {
            return false;
        };
        loop {
            match state.compare_exchange(UNTOUCHED, CLAIMED, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return false,
                Err(PREPARED) => {
                    if state
                        .compare_exchange(PREPARED, CLAIMED, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        return true;
                    }
                }
                Err(PREPARING) => std::thread::yield_now(),
                // Already claimed: attempt 1 is launched once; prepare again to be safe.
                Err(_) => return false,
            }
        }
    }

    fn run(&self, plan: PrefetchPlan) {
        let _ = self.preparer.set(std::thread::current());
        for (n_done, &index) in plan.order.iter().enumerate() {
            let n_done = n_done as u64;
            while n_done >= self.launched.load(Ordering::SeqCst) + AHEAD {
                if self.stop.load(Ordering::SeqCst) {
                    return;
                }
                // Stored before the launches are read again, so a claim that misses the new
                // mark is seen here (both SeqCst) and no wake-up is lost.
                self.wake_at
                    .store(n_done + 1 - AHEAD + AHEAD / 4, Ordering::SeqCst);
                if n_done >= self.launched.load(Ordering::SeqCst) + AHEAD {
                    std::thread::park_timeout(Duration::from_millis(500));
                }
                self.wake_at.store(u64::MAX, Ordering::SeqCst);
            }
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            let Some(slot) = index.checked_sub(1).map(|i| i as usize) else {
                continue;
            };
            let Some(state) = self.state.get(slot) else {
                continue;
            };
            // A compact sweep writes no params.yaml or command.txt: nothing to read.
            let read = (!plan.paths.compact()).then(|| plan.params.get(index));
            let params = match read {
                None => Params::default(),
                Some(Ok(params)) => params,
                // The source reads them again when it launches the task, and reports it.
                Some(Err(e)) => {
                    tracing::debug!(task = index, error = %e, "prefetch cannot read parameters");
                    continue;
                }
            };
            if state
                .compare_exchange(UNTOUCHED, PREPARING, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                // Claimed by the source, which prepares it itself.
                continue;
            }
            match prepare_first_attempt(&plan, index, &params) {
                Ok(()) => state.store(PREPARED, Ordering::Release),
                Err(e) => {
                    // The source prepares it again and reports the error on the task.
                    tracing::debug!(task = index, error = %e, "prefetch failed");
                    state.store(UNTOUCHED, Ordering::Release);
                }
            }
        }
    }
}

/// Stops the preparer when dropped.
pub struct PrefetchThread {
    shared: Arc<Prefetch>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for PrefetchThread {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.handle.take() {
            handle.thread().unpark();
            let _ = handle.join();
        }
        // A compact sweep keeps no directory for a task that never ran: those prepared ahead
        // and not launched (the run was cancelled or interrupted) go. Each is claimed first,
        // so a launch still racing the run's end prepares its own.
        if let Some(paths) = &self.shared.compact {
            for (i, state) in self.shared.state.iter().enumerate() {
                if state
                    .compare_exchange(PREPARED, CLAIMED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    layout::tidy_task_dir(paths, i as u64 + 1);
                }
            }
        }
    }
}

/// Everything `layout::prepare_task_dir` does for attempt 1, plus (for a local or scheduler
/// source) empty log files, so the backend's open of stdout.log/stderr.log finds existing inodes.
fn prepare_first_attempt(plan: &PrefetchPlan, index: u64, params: &Params) -> io::Result<()> {
    if plan.paths.compact() {
        // No per-task views; an agent's task gets its directory when something arrives for it.
        if plan.create_logs {
            let (stdout, stderr, recycled) =
                layout::prepare_compact_task_dir(&plan.paths, index, 1, plan.spares.as_deref())?;
            if !recycled {
                fs::File::create(stdout)?;
                fs::File::create(stderr)?;
            }
        }
        return Ok(());
    }
    let task_id = plan.paths.task_name(index);
    let results = plan.paths.results_dir(index);
    let output_dir = results.display().to_string();
    let ctx = LaunchContext {
        sweep_id: &plan.sweep_id,
        task_index: index,
        task_id: &task_id,
        attempt: 1,
        output_dir: &output_dir,
        group: &plan.group,
        script_override: plan.script_override.as_deref(),
    };
    let argv = build_argv(&plan.command, params, &ctx).map_err(io::Error::other)?;
    let command_txt = format!("{}\n", shell_display(&argv));
    let (stdout, stderr) = layout::prepare_task_dir(
        &plan.paths,
        index,
        1,
        &layout::params_yaml(params),
        &command_txt,
    )?;
    if plan.create_logs {
        fs::File::create(stdout)?;
        fs::File::create(stderr)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::value::Value;

    #[test]
    fn a_claimed_task_is_never_touched_by_the_preparer() {
        // Repeated: the race needs the two threads to meet on the same task.
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let paths = SweepPaths::new(dir.path().to_path_buf());
            let n = 300u64;
            let params: Vec<Params> = (0..n)
                .map(|i| {
                    [("x".to_string(), Value::Int(i as i64))]
                        .into_iter()
                        .collect()
                })
                .collect();
            let command = CommandSpec {
                template: Some(vec!["/bin/true".into(), "{overrides}".into()]),
                ..CommandSpec::default()
            };
            let (shared, thread) = Prefetch::start(PrefetchPlan {
                paths: paths.clone(),
                sweep_id: "s".into(),
                group: "g".into(),
                command,
                script_override: None,
                params: Arc::new(TaskParams::in_memory(params)),
                total: n,
                order: (1..=n).collect(),
                create_logs: true,
                spares: None,
            });
            // Claim from the back while the preparer works from the front, so they meet.
            let mut self_prepared = Vec::new();
            for index in (1..=n).rev() {
                if !shared.claim(index) {
                    layout::prepare_task_dir(&paths, index, 1, "x: 0\n", "true\n").unwrap();
                    fs::write(paths.task_dir(index).join("stdout.log"), "output").unwrap();
                    self_prepared.push(index);
                } else {
                    assert!(paths.task_dir(index).join("stdout.log").is_file());
                }
            }
            drop(thread);
            for index in self_prepared {
                let log = fs::read_to_string(paths.task_dir(index).join("stdout.log")).unwrap();
                assert_eq!(
                    log, "output",
                    "round {round}: task {index} truncated by the preparer"
                );
            }
        }
    }
}
