//! Why a task ended the way it did, in words the user can act on: the bounded tail of a failed
//! attempt's stderr, the one line of it worth showing (a Python exception line when there is
//! one), and the reasons filled into a run's changes before they are stored and shown (a failure
//! with its stderr line, a failure that will be retried, a cancellation and what caused it).

use crate::core::state::{Change, TaskStatus};
use std::collections::HashMap;

/// At most this many lines of a failed attempt's stderr are kept in `sweep.db`…
pub const TAIL_MAX_LINES: usize = 20;
/// …and at most this many bytes: the tail of every failed attempt is stored, and a sweep of
/// 100,000 failing tasks must not grow its database by gigabytes.
pub const TAIL_MAX_BYTES: usize = 4096;
/// The line shown with a reason is cut to this many characters: it goes into one-line views
/// (`sweep status`, the run's output).
pub const LINE_MAX_CHARS: usize = 200;

/// The last lines of a log from its last bytes `end` (at most `TAIL_MAX_BYTES` are used);
/// `cut` says the log is longer than `end`, so its first line is partial and dropped. A line
/// rewritten with carriage returns (a progress bar) keeps what a terminal would show: the part
/// after the last `\r`. `None` when nothing but blank lines is left.
pub fn stderr_tail(end: &[u8], cut: bool) -> Option<String> {
    let cut = cut || end.len() > TAIL_MAX_BYTES;
    let end = &end[end.len().saturating_sub(TAIL_MAX_BYTES)..];
    let text = String::from_utf8_lossy(end);
    let mut lines: Vec<&str> = text.split('\n').collect();
    if cut && lines.len() > 1 {
        lines.remove(0);
    }
    let lines: Vec<&str> = lines
        .into_iter()
        .map(|l| l.rsplit('\r').find(|p| !p.trim().is_empty()).unwrap_or(""))
        .map(str::trim_end)
        .collect();
    let last = lines.iter().rposition(|l| !l.is_empty())?;
    let first = lines[..=last]
        .iter()
        .position(|l| !l.is_empty())
        .unwrap_or(0);
    let kept = &lines[first..=last];
    let kept = &kept[kept.len().saturating_sub(TAIL_MAX_LINES)..];
    Some(kept.join("\n"))
}

/// The line of a stderr tail that says why the task failed: the exception line of the last
/// Python traceback (`RuntimeError: CUDA out of memory`), else the last line that looks like an
/// exception, else the last line that is not blank, a progress bar or a `^^^^` marker. Control
/// characters are dropped and the line is cut to `LINE_MAX_CHARS`.
pub fn meaningful_line(tail: &str) -> Option<String> {
    let lines: Vec<&str> = tail.lines().map(str::trim_end).collect();
    let after_traceback = lines
        .iter()
        .rposition(|l| {
            l.trim_start()
                .starts_with("Traceback (most recent call last)")
        })
        .and_then(|header| {
            lines[header + 1..]
                .iter()
                .find(|l| !l.starts_with([' ', '\t']) && !is_junk(l))
        });
    let line = after_traceback
        .or_else(|| lines.iter().rev().find(|l| exception_name(l).is_some()))
        .or_else(|| lines.iter().rev().find(|l| !is_junk(l)))?;
    Some(clean(line))
}

/// `exit code 1: RuntimeError: CUDA out of memory`.
pub fn reason_with_line(reason: &str, line: Option<&str>) -> String {
    match line {
        Some(line) if !line.is_empty() && !reason.contains(line) => format!("{reason}: {line}"),
        _ => reason.to_string(),
    }
}

/// Blank lines, progress bars (`45%|####  |`, `[=====>   ]`) and Python's `^^^^`/`~~~~` markers.
fn is_junk(line: &str) -> bool {
    let t = line.trim();
    t.is_empty()
        || t.contains("%|")
        || t.chars()
            .all(|c| "^~-=#*.|>[] ".contains(c) || ('\u{2580}'..='\u{259f}').contains(&c))
}

/// `ValueError` of `ValueError: bad`, `KeyboardInterrupt` of `KeyboardInterrupt`, `torch.cuda.OutOfMemoryError` of `torch.cuda.…: …`: an
/// unindented dotted name ending in Error/Exception/Interrupt/Exit, alone or before `:`.
pub(crate) fn exception_name(line: &str) -> Option<&str> {
    if line.starts_with([' ', '\t']) {
        return None;
    }
    let name = line
        .split_once(':')
        .map_or(line, |(name, _)| name)
        .trim_end();
    let valid = !name.is_empty()
        && name.split('.').all(|part| {
            part.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
    let kind = ["Error", "Exception", "Interrupt", "Exit"]
        .iter()
        .any(|suffix| name.ends_with(suffix));
    (valid && kind).then_some(name)
}

fn clean(line: &str) -> String {
    let text: String = line
        .trim()
        .chars()
        .map(|c| if c == '\t' { ' ' } else { c })
        .filter(|c| !c.is_control())
        .collect();
    if text.chars().count() <= LINE_MAX_CHARS {
        return text;
    }
    let mut cut: String = text.chars().take(LINE_MAX_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// Why a run stops its running tasks, for the reason of the attempts it cancels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    /// `sweep cancel`.
    Cancel,
    /// Ctrl-C or SIGTERM.
    Interrupt,
    /// The sweep state could not be written.
    StoreFailure,
    /// No source of the run can run tasks (refused, or none answered).
    NoSource,
}

impl StopCause {
    pub fn reason(self) -> &'static str {
        match self {
            StopCause::Cancel => "cancelled by `sweep cancel`",
            StopCause::Interrupt => "interrupted (Ctrl-C or SIGTERM)",
            StopCause::StoreFailure => "stopped: the sweep state could not be written",
            StopCause::NoSource => "stopped: no source of the run can run tasks",
        }
    }
}

/// What the progress output makes of a change: a failure that ends the task, one that is
/// retried, an attempt lost or taken back that runs again, or nothing to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Failed,
    WillRetry,
    /// The attempt is gone without the task being at fault; the task waits for its next one.
    RunsAgain,
    Quiet,
}

/// Classifies each change of a batch. A task's failed attempt that is followed in the same batch
/// by the task going back to `pending` is not final: the core records a retry as `failed` then
/// `pending` (no reason), and an attempt lost with its source or taken back as `failed` or
/// `cancelled` then `pending` with the reason it was taken.
pub fn classify(changes: &[Change]) -> Vec<Outcome> {
    changes
        .iter()
        .enumerate()
        .map(|(i, change)| {
            let next = changes[i + 1..].iter().find(|c| c.index == change.index);
            let requeued = next.filter(|n| {
                n.status == TaskStatus::Pending && n.attempt == change.attempt && n.job_id.is_none()
            });
            match (change.status, requeued) {
                (TaskStatus::Failed, Some(n)) if n.reason.is_none() => Outcome::WillRetry,
                (TaskStatus::Failed | TaskStatus::Cancelled, Some(_)) => Outcome::RunsAgain,
                (TaskStatus::Failed, None) => Outcome::Failed,
                _ => Outcome::Quiet,
            }
        })
        .collect()
}

/// Fills in what the core cannot know before a batch is stored and shown: each failed attempt's
/// stderr tail (from `tails`, by task and attempt, read when the attempt was reported; entries
/// used or stale are removed), the pending state of a task whose failure will be retried (`attempt
/// 1 failed: …; will retry`), and the reason of a cancellation without one (`stop`: why the run
/// stops; otherwise the source ended it). Returns what `classify` made of the changes as the
/// core wrote them (once annotated, a retry's pending change has a reason too).
pub fn annotate(
    changes: &mut [Change],
    tails: &mut HashMap<(u64, u32), String>,
    stop: Option<StopCause>,
) -> Vec<Outcome> {
    let outcomes = classify(changes);
    let mut retried: HashMap<u64, String> = HashMap::new();
    for (change, outcome) in changes.iter_mut().zip(&outcomes) {
        match change.status {
            TaskStatus::Failed => {
                if let Some(tail) = tails.remove(&(change.index, change.attempt)) {
                    change.stderr_tail = Some(tail);
                }
                if *outcome == Outcome::WillRetry {
                    let why = change.reason.as_deref().unwrap_or("failed");
                    retried.insert(
                        change.index,
                        format!("attempt {} failed: {why}; will retry", change.attempt),
                    );
                }
            }
            TaskStatus::Pending if change.reason.is_none() => {
                change.reason = retried.remove(&change.index);
            }
            TaskStatus::Cancelled if change.reason.is_none() => {
                change.reason = Some(
                    stop.map_or("cancelled by its source", StopCause::reason)
                        .to_string(),
                );
            }
            _ => {}
        }
    }
    // A tail read for a report the core found stale has no change to go with.
    tails.clear();
    outcomes
}

/// A Python task's stderr ending in a traceback that raised `exception` (a progress bar before
/// it): what the unit tests of failures and their signatures read.
#[cfg(test)]
pub(crate) fn python_traceback(exception: &str) -> String {
    format!(
        "\
Epoch 1:  45%|████▌     | 45/100 [00:03<00:04, 13.2it/s]
Traceback (most recent call last):
  File \"/home/me/train.py\", line 40, in <module>
    main()
  File \"/home/me/train.py\", line 31, in main
    x = model(batch)
        ^^^^^^^^^^^^
{exception}
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::state::{ExitKind, SourceState, Strategy, SweepCore, TaskState};

    #[test]
    fn a_python_traceback_gives_its_exception_line() {
        assert_eq!(
            meaningful_line(&python_traceback(
                "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
            ))
            .as_deref(),
            Some("RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB")
        );
    }

    #[test]
    fn hydra_s_closing_hint_does_not_hide_the_exception() {
        let text = "Error executing job with overrides: ['lr=0.1']\n\
                    Traceback (most recent call last):\n  File \"train.py\", line 9, in main\n    \
                    raise ValueError(\"lr too high\")\nValueError: lr too high\n\n\
                    Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.\n";
        assert_eq!(
            meaningful_line(text).as_deref(),
            Some("ValueError: lr too high")
        );
    }

    #[test]
    fn chained_tracebacks_give_the_last_exception() {
        let text = "Traceback (most recent call last):\n  File \"a.py\", line 1\nKeyError: 'x'\n\n\
                    During handling of the above exception, another exception occurred:\n\n\
                    Traceback (most recent call last):\n  File \"a.py\", line 3\n\
                    torch.cuda.OutOfMemoryError: CUDA out of memory\n";
        assert_eq!(
            meaningful_line(text).as_deref(),
            Some("torch.cuda.OutOfMemoryError: CUDA out of memory")
        );
    }

    #[test]
    fn an_exception_line_is_found_when_the_traceback_header_was_cut_off() {
        let text = "    loss.backward()\n    ~~~~~~~~~~~~~^^\nKeyboardInterrupt\nwandb: syncing\n";
        assert_eq!(meaningful_line(text).as_deref(), Some("KeyboardInterrupt"));
    }

    #[test]
    fn without_an_exception_the_last_real_line_is_taken() {
        let text = "loading data\nerror: file data.csv not found\n\n  50%|#####     |\n^^^^\n";
        assert_eq!(
            meaningful_line(text).as_deref(),
            Some("error: file data.csv not found")
        );
        assert_eq!(meaningful_line("\n  \n^^^\n"), None);
        assert_eq!(meaningful_line(""), None);
    }

    #[test]
    fn the_line_is_bounded_and_clean() {
        let long = format!("ValueError: {}\n", "x".repeat(1000));
        let line = meaningful_line(&long).unwrap();
        assert_eq!(line.chars().count(), LINE_MAX_CHARS);
        assert!(line.ends_with('…'));
        assert_eq!(
            meaningful_line("bad\tthing\x1b[0m\n").as_deref(),
            Some("bad thing[0m")
        );
    }

    #[test]
    fn the_tail_keeps_the_last_lines_and_bytes_and_drops_a_partial_first_line() {
        let text: String = (1..=50).map(|i| format!("line {i}\n")).collect();
        let tail = stderr_tail(text.as_bytes(), false).unwrap();
        assert_eq!(tail.lines().count(), TAIL_MAX_LINES);
        assert!(
            tail.starts_with("line 31\n") && tail.ends_with("line 50"),
            "{tail}"
        );
        let tail = stderr_tail(b"ial line\nwhole line\n", true).unwrap();
        assert_eq!(tail, "whole line");
        let big = "y".repeat(10_000) + "\nlast\n";
        let tail = stderr_tail(big.as_bytes(), false).unwrap();
        assert!(tail.len() <= TAIL_MAX_BYTES, "{}", tail.len());
        assert!(tail.ends_with("last"));
        assert_eq!(stderr_tail(b"\n\n  \n", false), None);
        // What a terminal shows of a line redrawn with carriage returns.
        let bar = stderr_tail(
            b" 10%|#   |\r 90%|######### |\r100%|##########|\ndone\n",
            false,
        );
        assert_eq!(bar.as_deref(), Some("100%|##########|\ndone"));
    }

    #[test]
    fn reasons_carry_the_line_once() {
        assert_eq!(
            reason_with_line("exit code 1", Some("RuntimeError: CUDA out of memory")),
            "exit code 1: RuntimeError: CUDA out of memory"
        );
        assert_eq!(reason_with_line("timeout", None), "timeout");
        assert_eq!(reason_with_line("boom", Some("boom")), "boom");
    }

    fn core(n: u64, sources: usize) -> SweepCore {
        let tasks = (1..=n)
            .map(|index| TaskState::recorded(index, TaskStatus::Pending, 0))
            .collect();
        let sources = (0..sources)
            .map(|i| SourceState::new(format!("s{i}"), 4))
            .collect();
        SweepCore::new(tasks, sources, Strategy::RoundRobin)
    }

    fn failure(reason: &str) -> ExitKind {
        ExitKind::Failure {
            exit_code: Some(1),
            reason: reason.into(),
        }
    }

    // These drive the real core, so a change in how it records retries and losses shows here.
    #[test]
    fn a_retried_failure_says_so_and_the_pending_task_says_why() {
        let mut core = core(2, 1);
        core.enqueue(&[1], 1, 0);
        core.enqueue(&[2], 0, 0);
        core.poll_dispatch(0);
        core.handle_started(1, 1, None, 1);
        core.handle_started(2, 1, None, 1);
        core.poll_changes();
        core.handle_exited(1, 1, failure("exit code 1: ValueError: x"), 2);
        core.handle_exited(2, 1, failure("exit code 1: KeyError: y"), 2);
        let mut changes = core.poll_changes();
        let mut tails = HashMap::from([
            ((1, 1), "tail one".to_string()),
            ((2, 1), "tail two".to_string()),
            ((2, 7), "stale".to_string()),
        ]);
        let outcomes = annotate(&mut changes, &mut tails, None);
        let failed: Vec<_> = changes
            .iter()
            .zip(&outcomes)
            .filter(|(c, _)| c.status == TaskStatus::Failed)
            .map(|(c, o)| (c.index, o.clone()))
            .collect();
        assert_eq!(failed, [(1, Outcome::WillRetry), (2, Outcome::Failed)]);
        assert!(tails.is_empty());
        let pending = changes
            .iter()
            .find(|c| c.index == 1 && c.status == TaskStatus::Pending)
            .unwrap();
        assert_eq!(
            pending.reason.as_deref(),
            Some("attempt 1 failed: exit code 1: ValueError: x; will retry")
        );
        let tails: Vec<_> = changes
            .iter()
            .filter_map(|c| c.stderr_tail.as_deref())
            .collect();
        assert_eq!(tails, ["tail one", "tail two"]);
    }

    #[test]
    fn a_lost_attempt_runs_again_and_is_not_a_failure() {
        let mut core = core(2, 2);
        core.enqueue(&[1, 2], 0, 0);
        core.poll_dispatch(0);
        core.handle_started(2, 1, None, 1);
        core.poll_changes();
        core.handle_source_lost(1, 2);
        core.handle_exited(
            1,
            1,
            ExitKind::Lost {
                reason: "lost by the agent".into(),
            },
            3,
        );
        let changes = core.poll_changes();
        let outcomes = classify(&changes);
        assert!(outcomes.contains(&Outcome::RunsAgain), "{changes:?}");
        assert!(
            !outcomes.contains(&Outcome::Failed) && !outcomes.contains(&Outcome::WillRetry),
            "{changes:?}"
        );
    }

    #[test]
    fn cancellations_get_the_reason_the_run_stopped() {
        let mut core = core(3, 1);
        core.enqueue(&[1, 2, 3], 0, 0);
        core.poll_dispatch(0);
        core.poll_changes();
        core.handle_exited(3, 1, ExitKind::Cancelled, 1);
        let mut changes = core.poll_changes();
        annotate(&mut changes, &mut HashMap::new(), None);
        assert_eq!(
            changes[0].reason.as_deref(),
            Some("cancelled by its source")
        );
        core.handle_interrupt(2);
        core.handle_exited(1, 1, ExitKind::Cancelled, 3);
        let mut changes = core.poll_changes();
        annotate(
            &mut changes,
            &mut HashMap::new(),
            Some(StopCause::Interrupt),
        );
        assert_eq!(
            changes[0].reason.as_deref(),
            Some("interrupted (Ctrl-C or SIGTERM)")
        );
        core.handle_exited(2, 1, ExitKind::Cancelled, 4);
        let mut changes = core.poll_changes();
        annotate(&mut changes, &mut HashMap::new(), Some(StopCause::Cancel));
        assert_eq!(
            changes[0].reason.as_deref(),
            Some("cancelled by `sweep cancel`")
        );
    }
}
