//! Progress display for `sweep run` / `sweep complete`: one status line on a terminal (redrawn
//! in place, always narrower than the terminal so it never wraps), plain periodic lines
//! otherwise, nothing with `-q`. Failures are always reported as they happen, with their reason.
//!
//! The status line is drawn here rather than by a progress-bar library: those pad the line to
//! the terminal's edge, so the `^C` the terminal echoes wraps onto a new row and the line
//! clearing after it leaves the old one on the screen. Ours ends the line three columns short
//! of the edge, with the cursor right after it: an echoed `^C` stays on its row.

use crate::core::failure::Outcome;
use crate::core::state::{Change, Counts, TaskStatus};
use crate::core::value::task_name_in;
use std::io::Write;
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
/// The terminal width assumed when it cannot be read.
const DEFAULT_WIDTH: usize = 80;

/// Erases the status line: carriage return, then erase the whole row.
const ERASE: &str = "\r\x1b[2K";

/// The status line on the terminal: what it shows now, if anything.
#[derive(Debug, Default)]
struct StatusLine {
    shown: Option<String>,
}

impl StatusLine {
    fn draw(&mut self, text: String) {
        if self.shown.as_ref() != Some(&text) {
            write_stderr(&format!("{ERASE}{text}"));
            self.shown = Some(text);
        }
    }

    /// A line of its own above the status line, which is drawn again below it.
    fn println(&self, line: &str) {
        let again = self.shown.as_deref().unwrap_or("");
        write_stderr(&format!("{ERASE}{line}\n{again}"));
    }

    fn clear(&mut self) {
        if self.shown.take().is_some() {
            write_stderr(ERASE);
        }
    }
}

/// One write, so a redraw is never split by another writer.
fn write_stderr(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
}

/// Erases the status line, from wherever the process is about to exit (a second Ctrl-C).
pub fn clear_status_line(mode: ProgressMode) {
    if mode == ProgressMode::Bar {
        write_stderr(ERASE);
    }
}

pub struct Progress {
    mode: ProgressMode,
    bar: Option<StatusLine>,
    run_total: u64,
    /// Digits of the sweep's task numbers.
    task_width: usize,
    finished_before: u64,
    started: Instant,
    last_line: Instant,
}

fn n_final(counts: &Counts) -> u64 {
    counts.completed + counts.failed + counts.cancelled
}

/// What the status line shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snapshot {
    /// Tasks of this run that reached a final status, of `total`.
    pub done: u64,
    pub total: u64,
    /// Over the whole sweep: `running` started, `queued` handed to a source and not started.
    pub counts: Counts,
    pub elapsed: Duration,
}

impl Snapshot {
    fn rate(&self) -> f64 {
        self.done as f64 / self.elapsed.as_secs_f64().max(1e-3)
    }
}

/// `1:02:03`, `2:03`.
fn clock(secs: u64) -> String {
    if secs >= 3600 {
        format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
    } else {
        format!("{}:{:02}", secs / 60, secs % 60)
    }
}

/// `45/100 · running 4 · queued 12 · completed 40 · failed 1`; `short`: `45/100 run 4 queued 12
/// ok 40 fail 1`. Failed, cancelled and queued only when there are any.
fn counts_text(snapshot: &Snapshot, short: bool) -> String {
    let c = &snapshot.counts;
    let word = |long: &'static str, brief: &'static str| if short { brief } else { long };
    let mut parts = vec![format!("{}/{}", snapshot.done, snapshot.total)];
    parts.push(format!("{} {}", word("running", "run"), c.running));
    if c.queued > 0 {
        parts.push(format!("queued {}", c.queued));
    }
    parts.push(format!("{} {}", word("completed", "ok"), c.completed));
    if c.failed > 0 {
        parts.push(format!("{} {}", word("failed", "fail"), c.failed));
    }
    if c.cancelled > 0 {
        parts.push(format!("{} {}", word("cancelled", "cancel"), c.cancelled));
    }
    parts.join(if short { " " } else { " · " })
}

/// The status line for a terminal `width` columns wide: at most `width - 3` characters (a line
/// as wide as the terminal leaves the cursor past its edge, and a `^C` echoed after it must fit
/// too). The
/// parts that matter least go first as the terminal narrows: the bar, the rate, the eta, the
/// elapsed time; then the words shorten; a terminal narrower than that gets the line cut.
pub fn status_line(snapshot: &Snapshot, width: usize) -> String {
    let fit = width.saturating_sub(3);
    let counts = |short| counts_text(snapshot, short);
    let elapsed = format!("[{}]", clock(snapshot.elapsed.as_secs()));
    let rate = snapshot.rate();
    let rate_text = format!("{rate:.1}/s");
    let remaining = snapshot.total.saturating_sub(snapshot.done);
    let eta = (rate > 0.0 && snapshot.done > 0 && remaining > 0)
        .then(|| format!("eta {}", clock((remaining as f64 / rate).ceil() as u64)));
    // From the fullest line to the barest; the first that fits wins.
    let candidates: Vec<Vec<Option<String>>> = vec![
        vec![
            Some(elapsed.clone()),
            None,
            Some(counts(false)),
            Some(rate_text.clone()),
            eta.clone(),
        ],
        vec![
            Some(elapsed.clone()),
            Some(counts(false)),
            Some(rate_text),
            eta.clone(),
        ],
        vec![Some(elapsed.clone()), Some(counts(false)), eta],
        vec![Some(elapsed.clone()), Some(counts(false))],
        vec![Some(counts(false))],
        vec![Some(elapsed), Some(counts(true))],
        vec![Some(counts(true))],
    ];
    for (n, parts) in candidates.into_iter().enumerate() {
        let with_bar = n == 0;
        let text: Vec<String> = parts.into_iter().flatten().collect();
        let base = text.join(" ");
        if with_bar {
            // The bar takes what is left, between 10 and 30 columns.
            let room = fit.saturating_sub(base.chars().count() + 3);
            if room >= 10 {
                let inner = room.min(30);
                let filled = if snapshot.total == 0 {
                    inner
                } else {
                    let done = u128::from(snapshot.done.min(snapshot.total));
                    (done * inner as u128 / u128::from(snapshot.total)) as usize
                };
                let bar = format!("{}{}", "=".repeat(filled), " ".repeat(inner - filled));
                let (first, rest) = base.split_once(' ').unwrap_or((&base, ""));
                return format!("{first} [{bar}] {rest}");
            }
            continue;
        }
        if base.chars().count() <= fit {
            return base;
        }
    }
    counts(true).chars().take(fit).collect()
}

/// The width of the terminal on stderr, if it is one.
fn terminal_width() -> Option<usize> {
    // SAFETY: TIOCGWINSZ writes a winsize into the zeroed struct we own.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_col > 0).then_some(size.ws_col as usize)
}

/// The line printed for a change worth reporting on its own, by what `classify` made of it, in
/// a sweep whose task numbers are `task_width` digits wide.
pub fn change_line(change: &Change, outcome: &Outcome, task_width: usize) -> Option<String> {
    let name = task_name_in(change.index, task_width);
    let source = change
        .source
        .as_deref()
        .map(|s| format!(", {s}"))
        .unwrap_or_default();
    // A reason may quote an agent's message or a task's stderr: one escaped line.
    let reason = hsm_protocol::display_safe(change.reason.as_deref().unwrap_or("no reason given"));
    match outcome {
        Outcome::Failed => Some(format!(
            "{name} failed (attempt {}{source}): {reason}",
            change.attempt
        )),
        Outcome::WillRetry => Some(format!(
            "{name} failed (attempt {}{source}): {reason} (will retry)",
            change.attempt
        )),
        // An attempt taken back from a source with low disk is summed up by the run's note;
        // one lost says which.
        Outcome::RunsAgain if change.status == TaskStatus::Failed => Some(format!(
            "{name} attempt {} {reason}: runs again as a new attempt (no retry used)",
            change.attempt
        )),
        _ => None,
    }
}

impl Progress {
    /// `run_total` tasks are to run; `initial` are the sweep's counts before the run; task
    /// numbers are `task_width` digits wide.
    pub fn new(mode: ProgressMode, run_total: u64, initial: Counts, task_width: usize) -> Self {
        let bar = (mode == ProgressMode::Bar).then(StatusLine::default);
        // Tasks re-run by this run were final before it; they are counted down from there.
        Progress {
            mode,
            bar,
            run_total,
            task_width,
            finished_before: n_final(&initial),
            started: Instant::now(),
            last_line: Instant::now(),
        }
    }

    pub fn mode(&self) -> ProgressMode {
        self.mode
    }

    /// The run re-runs tasks that were final before: subtract them from the baseline.
    pub fn rerunning(&mut self, n_previously_final: u64) {
        self.finished_before = self.finished_before.saturating_sub(n_previously_final);
    }

    fn snapshot(&self, counts: Counts) -> Snapshot {
        Snapshot {
            done: n_final(&counts)
                .saturating_sub(self.finished_before)
                .min(self.run_total),
            total: self.run_total,
            counts,
            elapsed: self.started.elapsed(),
        }
    }

    /// Reports the changes worth a line of their own; `outcomes` are `classify`'s, one per
    /// change.
    pub fn on_changes(&mut self, changes: &[Change], outcomes: &[Outcome]) {
        if self.mode == ProgressMode::Quiet {
            return;
        }
        for (change, outcome) in changes.iter().zip(outcomes) {
            if let Some(line) = change_line(change, outcome, self.task_width) {
                self.note(&line);
            }
        }
    }

    pub fn note(&self, line: &str) {
        crate::run_log::note(line, crate::actors::sweep::now_ms());
        match (&self.bar, self.mode) {
            (Some(bar), _) => bar.println(line),
            (None, ProgressMode::Lines) => eprintln!("{line}"),
            _ => {}
        }
    }

    pub fn update(&mut self, counts: Counts) {
        let snapshot = self.snapshot(counts);
        match self.mode {
            ProgressMode::Bar => {
                if let Some(bar) = &mut self.bar {
                    let width = terminal_width().unwrap_or(DEFAULT_WIDTH);
                    bar.draw(status_line(&snapshot, width));
                }
            }
            ProgressMode::Lines => {
                if self.last_line.elapsed() >= LINE_EVERY {
                    self.last_line = Instant::now();
                    eprintln!("{}", plain_line(&snapshot));
                }
            }
            ProgressMode::Quiet => {}
        }
    }

    pub fn finish(&mut self, counts: Counts) {
        let snapshot = self.snapshot(counts);
        match self.mode {
            ProgressMode::Bar => {
                if let Some(mut bar) = self.bar.take() {
                    bar.clear();
                }
            }
            ProgressMode::Lines => eprintln!("{}", plain_line(&snapshot)),
            ProgressMode::Quiet => {}
        }
    }
}

/// The periodic line when stderr is not a terminal (a log file has no width).
fn plain_line(snapshot: &Snapshot) -> String {
    format!(
        "progress: {} · elapsed {} · {:.1} tasks/s",
        counts_text(snapshot, false),
        clock(snapshot.elapsed.as_secs()),
        snapshot.rate()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::failure::classify;

    fn snapshot(done: u64, total: u64, counts: Counts) -> Snapshot {
        Snapshot {
            done,
            total,
            counts,
            elapsed: Duration::from_secs(83),
        }
    }

    fn busy() -> Counts {
        Counts {
            pending: 1_000,
            queued: 1_234,
            running: 48,
            completed: 98_765,
            failed: 321,
            cancelled: 12,
        }
    }

    #[test]
    fn the_line_never_reaches_the_terminal_edge() {
        let cases = [
            snapshot(0, 12, Counts::default()),
            snapshot(
                5,
                12,
                Counts {
                    running: 4,
                    completed: 5,
                    ..Counts::default()
                },
            ),
            snapshot(99_098, 101_380, busy()),
            snapshot(u64::MAX / 2, u64::MAX / 2, busy()),
        ];
        for width in [0, 1, 10, 20, 40, 59, 60, 61, 79, 80, 100, 200, 1000] {
            for s in &cases {
                let line = status_line(s, width);
                assert!(
                    line.chars().count() + 2 < width.max(3),
                    "{width} columns: {line:?} ({} chars)",
                    line.chars().count()
                );
            }
        }
    }

    #[test]
    fn a_wide_terminal_gets_everything_and_a_narrow_one_keeps_the_counts() {
        let s = snapshot(99_098, 101_380, busy());
        let wide = status_line(&s, 200);
        for part in [
            "[1:23]",
            "99098/101380",
            "running 48",
            "queued 1234",
            "completed 98765",
            "failed 321",
            "cancelled 12",
            "/s",
            "eta ",
            "[====",
        ] {
            assert!(wide.contains(part), "{part} missing from {wide:?}");
        }
        // At 80 and 60 columns the bar and the extras give way, never the counts.
        for width in [80, 60] {
            let line = status_line(&s, width);
            for part in ["99098/101380", "48", "1234", "98765", "321", "12"] {
                assert!(line.contains(part), "{width}: {part} missing from {line:?}");
            }
        }
        let sixty = status_line(&s, 60);
        assert!(
            sixty.contains("run 48") && sixty.contains("queued 1234"),
            "{sixty}"
        );
    }

    #[test]
    fn running_and_queued_are_separate_and_zero_extras_are_left_out() {
        let line = status_line(
            &snapshot(
                2,
                12,
                Counts {
                    queued: 6,
                    running: 4,
                    completed: 2,
                    ..Counts::default()
                },
            ),
            120,
        );
        assert!(
            line.contains("running 4 · queued 6 · completed 2"),
            "{line}"
        );
        assert!(
            !line.contains("failed") && !line.contains("cancelled"),
            "{line}"
        );
        let line = status_line(
            &snapshot(
                0,
                3,
                Counts {
                    running: 3,
                    ..Counts::default()
                },
            ),
            120,
        );
        assert!(!line.contains("queued") && !line.contains("eta"), "{line}");
    }

    #[test]
    fn the_bar_fills_with_progress() {
        let bar = |done| {
            let line = status_line(&snapshot(done, 10, Counts::default()), 120);
            let inner = line
                .split('[')
                .nth(2)
                .unwrap()
                .split(']')
                .next()
                .unwrap()
                .to_string();
            inner
        };
        assert_eq!(bar(0).trim(), "");
        assert_eq!(bar(10), "=".repeat(30));
        assert_eq!(bar(5).matches('=').count(), 15);
    }

    #[test]
    fn plain_lines_say_the_same() {
        let line = plain_line(&snapshot(
            2,
            12,
            Counts {
                queued: 6,
                running: 4,
                completed: 2,
                ..Counts::default()
            },
        ));
        assert!(
            line.starts_with("progress: 2/12 · running 4 · queued 6 · completed 2 · elapsed 1:23"),
            "{line}"
        );
    }

    fn change(index: u64, status: TaskStatus, reason: Option<&str>) -> Change {
        Change {
            reason: reason.map(str::to_string),
            ..Change::new(index, 1, status, Some("gpu1".into()), 0)
        }
    }

    #[test]
    fn failures_lost_attempts_and_retries_read_differently() {
        let changes = [
            change(1, TaskStatus::Failed, Some("exit code 1: ValueError: x")),
            change(2, TaskStatus::Failed, Some("exit code 2")),
            change(2, TaskStatus::Pending, None),
            change(3, TaskStatus::Failed, Some("lost with gpu1")),
            change(3, TaskStatus::Pending, Some("attempt 1 lost with gpu1")),
            change(
                4,
                TaskStatus::Cancelled,
                Some("attempt 1 taken back from gpu1: disk"),
            ),
            change(
                4,
                TaskStatus::Pending,
                Some("attempt 1 taken back from gpu1: disk"),
            ),
            change(5, TaskStatus::Completed, None),
        ];
        let lines: Vec<String> = changes
            .iter()
            .zip(classify(&changes))
            .filter_map(|(c, o)| change_line(c, &o, 3))
            .collect();
        assert_eq!(
            lines,
            [
                "task_001 failed (attempt 1, gpu1): exit code 1: ValueError: x",
                "task_002 failed (attempt 1, gpu1): exit code 2 (will retry)",
                "task_003 attempt 1 lost with gpu1: runs again as a new attempt (no retry used)",
            ]
        );
    }

    #[test]
    fn a_reason_from_an_agent_is_one_escaped_line() {
        let forged = change(
            1,
            TaskStatus::Failed,
            Some("could not start: x\r\nFORGED: all tasks completed\x1b]0;t\x07"),
        );
        let line = change_line(&forged, &Outcome::Failed, 3).unwrap();
        assert_eq!(
            line,
            "task_001 failed (attempt 1, gpu1): could not start: \
             x\\r\\nFORGED: all tasks completed\\x1b]0;t\\x07"
        );
    }
}
