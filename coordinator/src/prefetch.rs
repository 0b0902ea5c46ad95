//! Prepares task directories ahead of dispatch on a background thread, so that launching a task
//! is only "open two existing files and spawn". Creating a task's directories and files costs
//! more than spawning it (seven inodes on ext4); done on the launch path it leaves a slot idle
//! between one task's exit and the next one's start.

use crate::core::command::{build_argv, shell_display, CommandSpec, LaunchContext};
use crate::core::value::{task_name, Params};
use crate::layout::{self, SweepPaths};
use std::fs;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How far the preparer may run ahead of launches: bounded so a sweep interrupted early does not
/// leave thousands of never-run task directories behind.
pub const AHEAD: u64 = 256;

/// What the preparer needs to write a task's first attempt.
pub struct PrefetchPlan {
    pub paths: SweepPaths,
    pub sweep_id: String,
    pub group: String,
    pub command: CommandSpec,
    pub script_override: Option<String>,
    /// Parameters of every task of the sweep (index - 1), shared with the sweep actor.
    pub params: Arc<Vec<Params>>,
    /// Tasks about to run their first attempt, in dispatch order.
    pub order: Vec<u64>,
}

/// Shared between the preparer thread and the local source.
pub struct Prefetch {
    /// `prepared[index - 1]` is set once the task's first attempt is fully prepared.
    prepared: Vec<AtomicBool>,
    launched: AtomicU64,
    stop: AtomicBool,
}

impl Prefetch {
    /// Starts the preparer thread. The returned handle stops it when dropped.
    pub fn start(plan: PrefetchPlan) -> (Arc<Prefetch>, PrefetchThread) {
        let shared = Arc::new(Prefetch {
            prepared: (0..plan.params.len())
                .map(|_| AtomicBool::new(false))
                .collect(),
            launched: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let worker = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("hsm-prefetch".into())
            .spawn(move || worker.run(plan))
            .ok();
        (Arc::clone(&shared), PrefetchThread { shared, handle })
    }

    /// True when attempt 1 of `index` is prepared; marks one launch (lets the preparer advance).
    pub fn take(&self, index: u64) -> bool {
        self.launched.fetch_add(1, Ordering::Relaxed);
        index
            .checked_sub(1)
            .and_then(|i| self.prepared.get(i as usize))
            .is_some_and(|flag| flag.load(Ordering::Acquire))
    }

    fn run(&self, plan: PrefetchPlan) {
        for (n_done, &index) in plan.order.iter().enumerate() {
            while n_done as u64 >= self.launched.load(Ordering::Relaxed) + AHEAD {
                if self.stop.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            let Some(params) = index
                .checked_sub(1)
                .and_then(|i| plan.params.get(i as usize))
            else {
                continue;
            };
            match prepare_first_attempt(&plan, index, params) {
                Ok(()) => {
                    if let Some(flag) = self.prepared.get((index - 1) as usize) {
                        flag.store(true, Ordering::Release);
                    }
                }
                // The launch path prepares it again and reports the error on the task.
                Err(e) => tracing::debug!(task = index, error = %e, "prefetch failed"),
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
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// Everything `layout::prepare_task_dir` does for attempt 1, plus empty log files, so the
/// backend's open of stdout.log/stderr.log finds existing inodes.
fn prepare_first_attempt(plan: &PrefetchPlan, index: u64, params: &Params) -> io::Result<()> {
    let task_id = task_name(index);
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
    fs::File::create(stdout)?;
    fs::File::create(stderr)?;
    Ok(())
}
