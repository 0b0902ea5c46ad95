//! Progress display for `sweep run` / `sweep complete`: a progress bar on a terminal, plain
//! periodic lines otherwise, nothing with `-q`. Failures are always reported as they happen.

use crate::core::state::{Change, Counts, TaskStatus};
use crate::core::value::task_name;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    Bar,
    Lines,
    Quiet,
}

impl ProgressMode {
    /// A bar when stderr is a terminal, plain lines otherwise.
    pub fn detect(quiet: bool) -> Self {
        use std::io::IsTerminal;
        if quiet {
            ProgressMode::Quiet
        } else if std::io::stderr().is_terminal() {
            ProgressMode::Bar
        } else {
            ProgressMode::Lines
        }
    }
}

/// How often plain progress lines are printed.
const LINE_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    mode: ProgressMode,
    bar: Option<ProgressBar>,
    run_total: u64,
    finished_before: u64,
    started: Instant,
    last_line: Instant,
}

fn n_final(counts: &Counts) -> u64 {
    counts.completed + counts.failed + counts.cancelled
}

impl Progress {
    /// `run_total` tasks are to run; `initial` are the sweep's counts before the run.
    pub fn new(mode: ProgressMode, run_total: u64, initial: Counts) -> Self {
        let bar = (mode == ProgressMode::Bar).then(|| {
            let bar = ProgressBar::with_draw_target(Some(run_total), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} {per_sec} eta {eta} {msg}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        // Tasks re-run by this run were final before it; they are counted down from there.
        Progress {
            mode,
            bar,
            run_total,
            finished_before: n_final(&initial).saturating_sub(0),
            started: Instant::now(),
            last_line: Instant::now(),
        }
    }

    /// The run re-runs tasks that were final before: subtract them from the baseline.
    pub fn rerunning(&mut self, n_previously_final: u64) {
        self.finished_before = self.finished_before.saturating_sub(n_previously_final);
    }

    fn done(&self, counts: &Counts) -> u64 {
        n_final(counts)
            .saturating_sub(self.finished_before)
            .min(self.run_total)
    }

    pub fn on_changes(&mut self, changes: &[Change], _sweep_id: &str) {
        if self.mode == ProgressMode::Quiet {
            return;
        }
        for change in changes.iter().filter(|c| c.status == TaskStatus::Failed) {
            let line = format!(
                "{} failed (attempt {}{}): {}",
                task_name(change.index),
                change.attempt,
                change
                    .source
                    .as_deref()
                    .map(|s| format!(", {s}"))
                    .unwrap_or_default(),
                change.reason.as_deref().unwrap_or("failed")
            );
            self.note(&line);
        }
    }

    pub fn note(&self, line: &str) {
        match (&self.bar, self.mode) {
            (Some(bar), _) => bar.println(line),
            (None, ProgressMode::Lines) => eprintln!("{line}"),
            _ => {}
        }
    }

    pub fn update(&mut self, counts: Counts) {
        let done = self.done(&counts);
        match self.mode {
            ProgressMode::Bar => {
                if let Some(bar) = &self.bar {
                    bar.set_position(done);
                    bar.set_message(format!(
                        "running {} · completed {} · failed {} · cancelled {}",
                        counts.running + counts.queued,
                        counts.completed,
                        counts.failed,
                        counts.cancelled
                    ));
                }
            }
            ProgressMode::Lines => {
                if self.last_line.elapsed() >= LINE_EVERY {
                    self.last_line = Instant::now();
                    eprintln!("{}", self.line(done, &counts));
                }
            }
            ProgressMode::Quiet => {}
        }
    }

    fn line(&self, done: u64, counts: &Counts) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        format!(
            "progress: {done}/{} done · running {} · completed {} · failed {} · cancelled {} · {:.1} tasks/s",
            self.run_total,
            counts.running + counts.queued,
            counts.completed,
            counts.failed,
            counts.cancelled,
            done as f64 / secs
        )
    }

    pub fn finish(&mut self, counts: Counts) {
        let done = self.done(&counts);
        match self.mode {
            ProgressMode::Bar => {
                if let Some(bar) = self.bar.take() {
                    bar.set_position(done);
                    bar.finish_and_clear();
                }
            }
            ProgressMode::Lines => eprintln!("{}", self.line(done, &counts)),
            ProgressMode::Quiet => {}
        }
    }
}
