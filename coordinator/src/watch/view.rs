//! What `sweep watch` shows, as plain functions of a snapshot of `sweep.db` and the terminal's
//! size: the frame's rows, the completion rate and ETA, the per-source rows (figures from
//! `core::stats`), the last line of a task's output and the summary printed when the sweep ends.
//! No IO, no clock.

use crate::core::state::{Counts, TaskStatus};
use crate::core::stats::{rate_per_min, source_stats_at, AttemptRow};
use crate::store::TaskRow;
use std::collections::HashMap;

/// The `meta` key where `sweep run`/`sweep complete` record the run's sources: JSON
/// `[{"name", "kind", "slots"}]` ([`SourceInfo`]).
pub const SOURCES_META: &str = "sources";

/// A source of the run, as `sweep run`/`sweep complete` recorded it in `meta` (`sources`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct SourceInfo {
    pub name: String,
    #[serde(default)]
    pub kind: String,
    /// `None`: an agent that says how many it has when it connects.
    #[serde(default)]
    pub slots: Option<usize>,
}

/// The run's sources from the `sources` meta value; an unreadable or missing value (a sweep
/// run before it was recorded) is no sources, and the tasks' own sources are shown instead.
pub fn parse_sources(meta: Option<&str>) -> Vec<SourceInfo> {
    meta.and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default()
}

/// Everything one frame is built from.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub sweep_id: String,
    /// Milliseconds since the epoch when the snapshot was read (the unit of `sweep.db`'s times).
    pub now_ms: i64,
    /// The local wall-clock time, shown so a frozen screen is told apart from a quiet sweep.
    pub clock: String,
    /// Whether a coordinator holds the sweep's lock.
    pub active: bool,
    pub sources: Vec<SourceInfo>,
    /// Every task (parameters not needed).
    pub tasks: Vec<TaskRow>,
    /// Every attempt (`Store::attempt_rows`), for the per-source rows.
    pub attempts: Vec<AttemptRow>,
    /// The last line of output of running tasks, by task index (see [`running_order`]).
    pub last_lines: HashMap<u64, String>,
}

/// One source's row of the frame: how the run recorded it and its figures from
/// `core::stats::source_stats_at` (counted per attempt).
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRow {
    pub name: String,
    pub kind: String,
    pub slots: Option<usize>,
    pub running: u64,
    pub queued: u64,
    pub completed: u64,
    pub failed: u64,
    /// Attempts ended per minute recently (`core::stats::rate_per_min`).
    pub per_min: Option<f64>,
}

/// The time rates are measured up to: now while a coordinator runs the sweep, else the last
/// finish (an ended sweep's pace, not its pace diluted by the time since).
fn rate_reference(tasks: &[TaskRow], now_ms: i64, active: bool) -> i64 {
    if active {
        return now_ms;
    }
    tasks
        .iter()
        .filter_map(|t| t.finished_at)
        .max()
        .unwrap_or(now_ms)
}

/// The finished tasks' `(started, finished)` times.
fn finishes<'a>(tasks: impl IntoIterator<Item = &'a TaskRow>) -> Vec<(Option<i64>, i64)> {
    tasks
        .into_iter()
        .filter(|t| t.status.is_final())
        .filter_map(|t| t.finished_at.map(|f| (t.started_at, f)))
        .collect()
}

/// Seconds until the tasks not yet finished are, at `per_min`; `None` when nothing is left or
/// nothing finishes.
pub fn eta_secs(remaining: u64, per_min: Option<f64>) -> Option<u64> {
    let rate = per_min.filter(|r| *r > 0.0)?;
    (remaining > 0).then(|| (remaining as f64 / rate * 60.0).ceil() as u64)
}

/// Per source: the run's sources in their order, then any other source an attempt ran on (an
/// earlier run's). Attempts never handed anywhere count nowhere.
pub fn source_rows(
    sources: &[SourceInfo],
    tasks: &[TaskRow],
    attempts: &[AttemptRow],
    now_ms: i64,
    active: bool,
) -> Vec<SourceRow> {
    let reference = rate_reference(tasks, now_ms, active);
    let stats = source_stats_at(attempts, Some(reference));
    let row = |name: &str, kind: &str, slots: Option<usize>| {
        let figures = stats.iter().find(|s| s.source == name);
        SourceRow {
            name: name.to_string(),
            kind: kind.to_string(),
            slots,
            running: figures.map_or(0, |s| s.running),
            queued: figures.map_or(0, |s| s.queued),
            completed: figures.map_or(0, |s| s.completed),
            failed: figures.map_or(0, |s| s.failed),
            per_min: figures.and_then(|s| s.recent_per_min),
        }
    };
    let mut rows: Vec<SourceRow> = sources
        .iter()
        .map(|s| row(&s.name, &s.kind, s.slots))
        .collect();
    // `stats` is in name order.
    rows.extend(
        stats
            .iter()
            .filter(|s| !sources.iter().any(|info| info.name == s.source))
            .map(|s| row(&s.source, "", None)),
    );
    rows
}

/// The running tasks, the most recently started first: the ones the frame shows when not all
/// fit, and whose output the caller reads.
pub fn running_order(tasks: &[TaskRow]) -> Vec<&TaskRow> {
    let mut running: Vec<&TaskRow> = tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Running)
        .collect();
    running.sort_by(|a, b| b.started_at.cmp(&a.started_at).then(a.index.cmp(&b.index)));
    running
}

/// The failed tasks, newest first.
fn failures_newest_first(tasks: &[TaskRow]) -> Vec<&TaskRow> {
    let mut failed: Vec<&TaskRow> = tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Failed)
        .collect();
    failed.sort_by(|a, b| {
        b.finished_at
            .cmp(&a.finished_at)
            .then(b.index.cmp(&a.index))
    });
    failed
}

/// What a failure is shown as: its signature as `sweep errors` groups it (from the reason,
/// which carries the stderr line that mattered; numbers, paths and quoted values masked).
pub fn failure_label(task: &TaskRow) -> String {
    clean_text(&crate::core::errors::signature(
        task.reason.as_deref(),
        task.exit_code,
        None,
    ))
}

/// The last line a task printed, from the end of its output: the last line with something
/// visible, and of a line redrawn with carriage returns (a progress bar) what was drawn last.
/// Terminal escape sequences are dropped and other control characters shown escaped.
pub fn last_line(end: &[u8]) -> String {
    let text = String::from_utf8_lossy(end);
    text.split('\n')
        .rev()
        .filter_map(|line| {
            line.split('\r')
                .rev()
                .map(clean_text)
                .find(|part| !part.trim().is_empty())
        })
        .next()
        .map(|line| line.trim_end().to_string())
        .unwrap_or_default()
}

/// `text` without terminal escape sequences (CSI such as colours, OSC such as titles), tabs as
/// spaces, every other control character escaped visibly: one line that cannot move the
/// cursor.
pub fn clean_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.peek() {
                Some('[') => {
                    chars.next();
                    // Parameters and intermediates, then one final byte in @..~.
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    chars.next();
                    // Up to BEL or ESC \.
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == '\u{1b}' {
                            if chars.peek() == Some(&'\\') {
                                chars.next();
                            }
                            break;
                        }
                    }
                }
                _ => {
                    chars.next();
                }
            },
            '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    hsm_protocol::display_safe(&out).into_owned()
}

/// Columns a character takes on a terminal: 2 for the wide East Asian ranges and emoji, 0 for
/// combining marks, else 1. Close enough that a row never wraps.
fn char_width(c: char) -> usize {
    match c as u32 {
        0x0300..=0x036F | 0x200B..=0x200D | 0xFE00..=0xFE0F => 0,
        0x1100..=0x115F
        | 0x2E80..=0xA4CF
        | 0xAC00..=0xD7A3
        | 0xF900..=0xFAFF
        | 0xFE30..=0xFE4F
        | 0xFF00..=0xFF60
        | 0xFFE0..=0xFFE6
        | 0x1F300..=0x1F64F
        | 0x1F900..=0x1F9FF
        | 0x20000..=0x3FFFD => 2,
        _ => 1,
    }
}

/// Columns `text` takes.
pub fn text_width(text: &str) -> usize {
    text.chars().map(char_width).sum()
}

/// `text` cut to at most `width` columns, ending in `…` when cut.
pub fn fit(text: &str, width: usize) -> String {
    if text_width(text) <= width {
        return text.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = char_width(c);
        if used + w + 1 > width {
            break;
        }
        out.push(c);
        used += w;
    }
    if width > 0 {
        out.push('…');
    }
    out
}

/// `1:02:03`, `2:03`.
pub fn clock(secs: u64) -> String {
    if secs >= 3600 {
        format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
    } else {
        format!("{}:{:02}", secs / 60, secs % 60)
    }
}

fn counts_of(tasks: &[TaskRow]) -> Counts {
    tasks.iter().map(|t| t.status).collect()
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The line printed when the watch ends because no coordinator runs the sweep any more.
pub fn summary_line(sweep_id: &str, counts: &Counts) -> String {
    let unfinished = counts.pending + counts.queued + counts.running;
    let base = format!(
        "{} completed, {} failed, {} cancelled, {} pending, of {} task{}",
        counts.completed,
        counts.failed,
        counts.cancelled,
        unfinished,
        counts.total(),
        plural(counts.total())
    );
    if counts.queued + counts.running > 0 {
        // The coordinator stopped with tasks it had handed out: killed, or crashed.
        format!(
            "{sweep_id}: no coordinator runs it; {base} — `hsm-coordinator sweep complete {sweep_id}` runs the rest"
        )
    } else {
        format!("{sweep_id} ended: {base}")
    }
}

/// The frame for a terminal `width` columns by `height` rows: at most `height` rows, each at
/// most `width - 1` columns (a row as wide as the terminal would leave the cursor past its
/// edge). `footer` is shown on the last row when there is room.
pub fn frame(snap: &Snapshot, width: usize, height: usize, footer: Option<&str>) -> Vec<String> {
    let cols = width.saturating_sub(1).max(1);
    let counts = counts_of(&snap.tasks);
    let done = counts.completed + counts.failed + counts.cancelled;
    let total = counts.total();
    let reference = rate_reference(&snap.tasks, snap.now_ms, snap.active);
    let per_min = rate_per_min(finishes(&snap.tasks), reference);
    let remaining = counts.pending + counts.queued + counts.running;

    let mut head = Vec::new();
    let state = if snap.active {
        "running"
    } else if counts.running + counts.queued > 0 {
        "no coordinator"
    } else {
        "ended"
    };
    let title = format!("hsm watch · {} · {state}", snap.sweep_id);
    let gap = cols.saturating_sub(text_width(&title) + text_width(&snap.clock));
    head.push(if gap >= 2 {
        format!("{title}{}{}", " ".repeat(gap), snap.clock)
    } else {
        title
    });

    let pct = if total == 0 {
        100
    } else {
        (u128::from(done) * 100 / u128::from(total)) as u64
    };
    let mut tail = format!(" {done}/{total} ({pct}%)");
    if let Some(rate) = per_min {
        tail += &format!("  {rate:.1} tasks/min");
    }
    if snap.active {
        match eta_secs(remaining, per_min) {
            Some(eta) => tail += &format!("  ETA {}", clock(eta)),
            None if remaining > 0 => tail += "  ETA —",
            None => {}
        }
    }
    let bar_room = cols.saturating_sub(text_width(&tail) + 2);
    if bar_room >= 10 {
        let inner = bar_room.min(50);
        let filled = if total == 0 {
            inner
        } else {
            (u128::from(done) * inner as u128 / u128::from(total)) as usize
        };
        head.push(format!(
            "[{}{}]{tail}",
            "#".repeat(filled),
            "-".repeat(inner - filled)
        ));
    } else {
        head.push(tail.trim_start().to_string());
    }
    head.push(counts.breakdown());

    let stats = source_rows(
        &snap.sources,
        &snap.tasks,
        &snap.attempts,
        snap.now_ms,
        snap.active,
    );
    let name_w = stats
        .iter()
        .map(|s| text_width(&s.name))
        .chain([6])
        .max()
        .unwrap_or(6);
    let kind_w = stats
        .iter()
        .map(|s| text_width(&s.kind))
        .chain([4])
        .max()
        .unwrap_or(4);
    let mut source_rows = vec![format!(
        "{:<name_w$}  {:<kind_w$}  {:>5}  {:>7}  {:>6}  {:>9}  {:>6}  {:>9}",
        "SOURCE", "KIND", "SLOTS", "RUNNING", "QUEUED", "COMPLETED", "FAILED", "TASKS/MIN"
    )];
    for s in &stats {
        source_rows.push(format!(
            "{:<name_w$}  {:<kind_w$}  {:>5}  {:>7}  {:>6}  {:>9}  {:>6}  {:>9}",
            clean_text(&s.name),
            s.kind,
            s.slots.map_or("auto".to_string(), |n| n.to_string()),
            s.running,
            s.queued,
            s.completed,
            s.failed,
            s.per_min.map_or("—".to_string(), |r| format!("{r:.1}")),
        ));
    }

    let running = running_order(&snap.tasks);
    let failed = failures_newest_first(&snap.tasks);
    // Rows: head, blank, sources, blank, RUNNING title + rows, blank, FAILED title + rows,
    // footer. Sources are cut first to what leaves room for the lists' titles.
    let footer_rows = usize::from(footer.is_some());
    let fixed = head.len() + 1 + 1 + 1 + footer_rows + usize::from(!failed.is_empty()) * 2;
    let source_room = height.saturating_sub(fixed).max(1);
    let sources_shown = source_rows.len().min(source_room);
    let mut rest = height.saturating_sub(fixed + sources_shown);
    // Failures get a third of what is left (at least one when two rows are left), running
    // tasks the rest, and failures take back what running tasks leave: in a short terminal
    // the live part is not crowded out by old failures.
    let fail_rows = failed.len().min((rest / 3).max(usize::from(rest >= 2)));
    rest -= fail_rows;
    let run_rows = running.len().min(rest);
    let fail_rows = failed.len().min(fail_rows + rest - run_rows);

    let mut rows = head;
    rows.push(String::new());
    rows.extend(source_rows.into_iter().take(sources_shown));
    rows.push(String::new());
    rows.push(if run_rows < running.len() {
        format!("RUNNING ({} of {}, newest first)", run_rows, running.len())
    } else {
        format!("RUNNING ({})", running.len())
    });
    let task_w = running
        .iter()
        .take(run_rows)
        .chain(failed.iter().take(fail_rows))
        .map(|t| text_width(&t.task_id))
        .max()
        .unwrap_or(0);
    let src_w = running
        .iter()
        .take(run_rows)
        .chain(failed.iter().take(fail_rows))
        .map(|t| text_width(t.source.as_deref().unwrap_or("")))
        .max()
        .unwrap_or(0);
    for task in running.iter().take(run_rows) {
        let elapsed = task
            .started_at
            .map(|s| clock(((snap.now_ms - s).max(0) / 1000) as u64))
            .unwrap_or_default();
        let line = snap
            .last_lines
            .get(&task.index)
            .map(String::as_str)
            .unwrap_or("");
        rows.push(format!(
            "{:<task_w$}  {:<src_w$}  {:>7}  {line}",
            task.task_id,
            clean_text(task.source.as_deref().unwrap_or("")),
            elapsed
        ));
    }
    if !failed.is_empty() {
        rows.push(String::new());
        rows.push(if fail_rows < failed.len() {
            format!("FAILED ({} of {}, newest first)", fail_rows, failed.len())
        } else {
            format!("FAILED ({}, newest first)", failed.len())
        });
        for task in failed.iter().take(fail_rows) {
            rows.push(format!(
                "{:<task_w$}  {:<src_w$}  {}",
                task.task_id,
                clean_text(task.source.as_deref().unwrap_or("")),
                failure_label(task)
            ));
        }
    }
    if let Some(footer) = footer {
        if rows.len() < height {
            rows.resize(height - 1, String::new());
            rows.push(footer.to_string());
        }
    }
    rows.truncate(height);
    rows.into_iter().map(|row| fit(&row, cols)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::value::Params;

    const MIN: i64 = 60_000;

    fn task(
        index: u64,
        status: TaskStatus,
        source: Option<&str>,
        started: Option<i64>,
        finished: Option<i64>,
    ) -> TaskRow {
        TaskRow {
            index,
            task_id: format!("task_{index:03}"),
            params_hash: String::new(),
            params: Params::new(),
            status,
            attempt: 1,
            source: source.map(str::to_string),
            exit_code: None,
            reason: None,
            pid: None,
            job_id: None,
            started_at: started,
            finished_at: finished,
        }
    }

    fn local(slots: usize) -> SourceInfo {
        SourceInfo {
            name: "local".into(),
            kind: "local".into(),
            slots: Some(slots),
        }
    }

    /// A sweep of 10 started at 0: 4 completed a minute apart, 1 failed, 2 running, 3 pending.
    fn snapshot(now: i64) -> Snapshot {
        let mut tasks = Vec::new();
        for i in 1..=4 {
            tasks.push(task(
                i,
                TaskStatus::Completed,
                Some("local"),
                Some((i as i64 - 1) * MIN),
                Some(i as i64 * MIN),
            ));
        }
        let mut failed = task(5, TaskStatus::Failed, Some("gpu1"), Some(0), Some(90_000));
        failed.reason = Some("exit code 1: ValueError: bad x".into());
        tasks.push(failed);
        tasks.push(task(
            6,
            TaskStatus::Running,
            Some("local"),
            Some(4 * MIN),
            None,
        ));
        tasks.push(task(
            7,
            TaskStatus::Running,
            Some("gpu1"),
            Some(4 * MIN + 30_000),
            None,
        ));
        for i in 8..=10 {
            tasks.push(task(i, TaskStatus::Pending, None, None, None));
        }
        Snapshot {
            sweep_id: "sweep_1".into(),
            now_ms: now,
            clock: "12:00:00".into(),
            active: true,
            sources: vec![
                local(2),
                SourceInfo {
                    name: "gpu1".into(),
                    kind: "agent".into(),
                    slots: None,
                },
            ],
            attempts: attempts_of(&tasks),
            tasks,
            last_lines: [(6, "epoch 3 loss=0.25".to_string())].into_iter().collect(),
        }
    }

    /// One attempt per task that was handed to a source, as `sweep.db` would hold it.
    fn attempts_of(tasks: &[TaskRow]) -> Vec<AttemptRow> {
        tasks
            .iter()
            .filter(|t| t.source.is_some())
            .map(|t| AttemptRow {
                index: t.index,
                attempt: t.attempt,
                source: t.source.clone(),
                status: t.status,
                started_at: t.started_at,
                finished_at: t.finished_at,
                usage: Default::default(),
            })
            .collect()
    }

    #[test]
    fn the_eta_is_what_is_left_at_the_rate() {
        assert_eq!(eta_secs(10, Some(2.0)), Some(300));
        assert_eq!(eta_secs(0, Some(2.0)), None);
        assert_eq!(eta_secs(10, Some(0.0)), None);
        assert_eq!(eta_secs(10, None), None);
    }

    #[test]
    fn sources_count_their_tasks_and_pace() {
        let mut snap = snapshot(5 * MIN);
        // Task 5 failed on gpu1 and its next attempt waits in gpu1's queue: rows count
        // attempts, so gpu1 shows both.
        snap.attempts.push(AttemptRow {
            attempt: 2,
            status: TaskStatus::Queued,
            started_at: None,
            finished_at: None,
            ..snap.attempts[4].clone()
        });
        let stats = source_rows(
            &snap.sources,
            &snap.tasks,
            &snap.attempts,
            snap.now_ms,
            true,
        );
        assert_eq!(stats.len(), 2);
        let local = &stats[0];
        assert_eq!(
            (
                local.name.as_str(),
                local.slots,
                local.running,
                local.completed,
                local.failed
            ),
            ("local", Some(2), 1, 4, 0)
        );
        // Four finishes over the five minutes since its first started.
        assert_eq!(local.per_min, Some(0.8));
        let gpu = &stats[1];
        assert_eq!(
            (gpu.running, gpu.queued, gpu.failed, gpu.slots),
            (1, 1, 1, None)
        );
    }

    #[test]
    fn a_source_only_an_earlier_run_used_is_listed_after_the_runs() {
        let tasks = [task(
            1,
            TaskStatus::Completed,
            Some("old"),
            Some(0),
            Some(1000),
        )];
        let stats = source_rows(&[local(1)], &tasks, &attempts_of(&tasks), 2000, false);
        let names: Vec<&str> = stats.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["local", "old"]);
        assert_eq!(stats[1].completed, 1);
        assert!(stats[1].per_min.is_some(), "measured up to its last finish");
    }

    #[test]
    fn the_frame_shows_progress_sources_running_output_and_failures() {
        let snap = snapshot(5 * MIN);
        let rows = frame(&snap, 100, 30, Some("q quit"));
        let text = rows.join("\n");
        assert!(
            rows[0].starts_with("hsm watch · sweep_1 · running") && rows[0].ends_with("12:00:00"),
            "{text}"
        );
        assert!(
            rows[1].starts_with('[') && rows[1].contains("] 5/10 (50%)"),
            "{text}"
        );
        assert!(rows[1].contains("ETA "), "{text}");
        assert!(
            text.contains(
                "completed 4 · failed 1 · cancelled 0 · running 2 · queued 0 · pending 3"
            ),
            "{text}"
        );
        let local = rows.iter().find(|r| r.starts_with("local ")).unwrap();
        let cells: Vec<&str> = local.split_whitespace().collect();
        assert_eq!(
            cells,
            ["local", "local", "2", "1", "0", "4", "0", "0.8"],
            "{text}"
        );
        let gpu = rows.iter().find(|r| r.starts_with("gpu1 ")).unwrap();
        assert!(gpu.contains(" auto "), "{text}");
        assert!(text.contains("RUNNING (2)"), "{text}");
        let running = rows.iter().find(|r| r.starts_with("task_006")).unwrap();
        assert!(
            running.contains("1:00") && running.ends_with("epoch 3 loss=0.25"),
            "{text}"
        );
        // The newest start first.
        let first = rows.iter().position(|r| r.starts_with("task_007")).unwrap();
        assert!(first < rows.iter().position(|r| r.starts_with("task_006")).unwrap());
        assert!(text.contains("FAILED (1, newest first)"), "{text}");
        assert!(
            rows.iter()
                .any(|r| r.starts_with("task_005") && r.ends_with("ValueError: bad x")),
            "{text}"
        );
        assert_eq!(rows.len(), 30);
        assert_eq!(rows.last().unwrap(), "q quit");
    }

    #[test]
    fn every_row_fits_the_terminal_however_small() {
        let mut snap = snapshot(5 * MIN);
        snap.last_lines.insert(7, "x".repeat(500));
        for (width, height) in [
            (120, 40),
            (80, 24),
            (40, 10),
            (20, 5),
            (1, 1),
            (0, 0),
            (10, 3),
        ] {
            let rows = frame(&snap, width, height, Some("q quit"));
            assert!(rows.len() <= height, "{width}x{height}: {rows:#?}");
            for row in &rows {
                assert!(text_width(row) < width.max(2), "{width}x{height}: {row:?}");
            }
        }
    }

    #[test]
    fn a_short_terminal_shows_the_newest_running_tasks_and_says_how_many() {
        let mut snap = snapshot(10 * MIN);
        for i in 8..=10 {
            snap.tasks[i as usize - 1] = task(
                i,
                TaskStatus::Running,
                Some("local"),
                Some(i as i64 * 1000),
                None,
            );
        }
        snap.attempts = attempts_of(&snap.tasks);
        let rows = frame(&snap, 80, 14, None);
        let text = rows.join("\n");
        assert!(
            text.contains("RUNNING (") && text.contains(" of 5, newest first)"),
            "{text}"
        );
        assert!(text.contains("task_007"), "the newest is shown:\n{text}");
        assert!(text.contains("task_005"), "a failure still shown:\n{text}");
        assert_eq!(rows.len(), 14, "{text}");
    }

    #[test]
    fn running_tasks_keep_rows_when_failures_are_many_and_the_terminal_short() {
        // Found by a new-user check: at 70x14 with three failures, RUNNING had no row.
        let mut snap = snapshot(10 * MIN);
        for i in 8..=10 {
            let mut failed = task(i, TaskStatus::Failed, Some("local"), Some(0), Some(MIN));
            failed.reason = Some("exit code 1: ValueError: bad x".into());
            snap.tasks[i as usize - 1] = failed;
        }
        snap.attempts = attempts_of(&snap.tasks);
        for height in [13, 14, 16] {
            let text = frame(&snap, 70, height, Some("q quit")).join("\n");
            assert!(
                text.contains("task_007") || text.contains("task_006"),
                "{height} rows: a running task shown:\n{text}"
            );
            if height > 13 {
                assert!(
                    text.contains("ValueError"),
                    "{height} rows: a failure shown:\n{text}"
                );
            }
        }
    }

    #[test]
    fn an_ended_sweep_shows_no_eta_and_its_pace_at_the_end() {
        let mut snap = snapshot(100 * MIN);
        snap.active = false;
        for t in &mut snap.tasks {
            if !t.status.is_final() {
                t.status = TaskStatus::Completed;
                t.started_at = Some(4 * MIN);
                t.finished_at = Some(5 * MIN);
            }
        }
        snap.attempts = attempts_of(&snap.tasks);
        let rows = frame(&snap, 100, 30, None);
        assert!(rows[0].contains("· ended"), "{rows:#?}");
        assert!(
            rows[1].contains("10/10 (100%)") && !rows[1].contains("ETA"),
            "{rows:#?}"
        );
        assert!(
            rows[1].contains("tasks/min"),
            "measured up to the last finish: {rows:#?}"
        );
    }

    #[test]
    fn the_last_line_is_the_last_visible_text() {
        assert_eq!(last_line(b"one\ntwo\n\n  \n"), "two");
        assert_eq!(
            last_line(b"epoch 1\r 10%|#   |\r 50%|##  |\r"),
            " 50%|##  |"
        );
        assert_eq!(last_line(b"\x1b[32mgreen\x1b[0m done\n"), "green done");
        assert_eq!(last_line(b"title\x1b]0;evil\x07 ok\tend"), "title ok end");
        assert_eq!(last_line(b"bell\x07 here"), "bell\\x07 here");
        assert_eq!(last_line(b""), "");
        // A cut in the middle of a UTF-8 character (the tail starts anywhere) still reads.
        assert_eq!(last_line(&"é".as_bytes()[1..]), "\u{fffd}");
    }

    #[test]
    fn text_is_cut_to_columns_counting_wide_characters() {
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("abc", 3), "abc");
        assert_eq!(fit("日本語テキスト", 7), "日本語…");
        assert_eq!(text_width("日本"), 4);
    }

    #[test]
    fn the_summary_says_how_the_sweep_ended() {
        let counts = Counts {
            completed: 17,
            failed: 3,
            ..Counts::default()
        };
        assert_eq!(
            summary_line("s1", &counts),
            "s1 ended: 17 completed, 3 failed, 0 cancelled, 0 pending, of 20 tasks"
        );
        let stopped = Counts {
            running: 2,
            ..counts
        };
        assert!(summary_line("s1", &stopped).starts_with("s1: no coordinator runs it; 17 completed, 3 failed, 0 cancelled, 2 pending, of 22 tasks"));
    }

    #[test]
    fn recorded_sources_are_read_and_a_missing_record_is_none() {
        let sources = parse_sources(Some(
            r#"[{"name":"local","kind":"local","slots":4},{"name":"a1","kind":"agent","slots":null}]"#,
        ));
        assert_eq!(
            sources,
            vec![
                local(4),
                SourceInfo {
                    name: "a1".into(),
                    kind: "agent".into(),
                    slots: None
                }
            ]
        );
        assert!(parse_sources(None).is_empty());
        assert!(parse_sources(Some("not json")).is_empty());
    }
}
