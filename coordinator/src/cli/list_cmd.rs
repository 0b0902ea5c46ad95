//! `sweep list [--all] [--json]` (alias `monitor recent`): the project's sweeps, newest first,
//! each read from its `sweep.db` without writing to it: when it started, whether a coordinator
//! runs it, counts per status, the sources its attempts ran on, and how long it ran.

use super::config_cmd::{display_path, load_config};
use super::errors_cmd::open_for_reading;
use super::sweep_cmd::{is_active, list_sweeps};
use super::{Global, ListArgs, EXIT_OK};
use crate::actors::sweep::now_ms;
use crate::core::state::Counts;
use crate::layout::{self, SweepPaths};
use serde_json::json;

/// Sweeps shown without `--all`.
const RECENT: usize = 20;

/// One line of the list.
#[derive(Debug, Clone, Default, PartialEq)]
struct Entry {
    id: String,
    created: Option<i64>,
    active: bool,
    counts: Counts,
    sources: Vec<String>,
    /// Milliseconds from its creation to its last attempt's end (to now while it runs).
    duration_ms: Option<i64>,
    /// Why its database could not be read, instead of the rest.
    unreadable: Option<String>,
}

fn read_entry(id: String, paths: SweepPaths, now: i64) -> Entry {
    let active = is_active(&paths);
    let read = || -> anyhow::Result<Entry> {
        // Any schema: a list must not upgrade (write to) every old sweep it shows.
        let (store, _) = open_for_reading(paths.clone(), &id, false)?;
        // Kept by the store (schema 5); counted from the tasks in older sweeps.
        let counts = store.counts()?;
        let span = store.span()?;
        let created = store
            .meta("created")?
            .and_then(|c| c.parse::<i64>().ok())
            .or(span.first_start);
        let end = if active { Some(now) } else { span.last_end };
        Ok(Entry {
            id: id.clone(),
            created,
            active,
            counts,
            sources: store.sources_used()?,
            duration_ms: created.zip(end).map(|(s, e)| (e - s).max(0)),
            unreadable: None,
        })
    };
    read().unwrap_or_else(|e| Entry {
        id: id.clone(),
        active,
        unreadable: Some(format!("{e:#}")),
        ..Entry::default()
    })
}

pub fn list(global: &Global, args: &ListArgs) -> anyhow::Result<i32> {
    let cfg = load_config(global)?;
    let outputs = layout::outputs_dir(&cfg.root);
    let sweeps = list_sweeps(&outputs);
    let total = sweeps.len();
    let shown = if args.all { total } else { total.min(RECENT) };
    let now = now_ms();
    let entries: Vec<Entry> = sweeps
        .into_iter()
        .rev()
        .take(shown)
        .map(|(id, paths)| read_entry(id, paths, now))
        .collect();
    if args.json {
        let sweeps: Vec<_> = entries.iter().map(entry_json).collect();
        let value = json!({
            "outputs": outputs.display().to_string(),
            "total": total,
            "sweeps": sweeps,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(EXIT_OK);
    }
    if entries.is_empty() {
        println!(
            "no sweeps in {} — start one with `hsm-coordinator sweep run`",
            display_path(global, &outputs)
        );
        return Ok(EXIT_OK);
    }
    print!("{}", table(&entries));
    if shown < total {
        println!(
            "({} older sweep{}: --all)",
            total - shown,
            if total - shown == 1 { "" } else { "s" }
        );
    }
    Ok(EXIT_OK)
}

fn entry_json(e: &Entry) -> serde_json::Value {
    let c = &e.counts;
    json!({
        "sweep_id": e.id,
        "created": e.created.map(layout::format_utc),
        "active": e.active,
        "state": state(e),
        "total": c.total(),
        "completed": c.completed,
        "failed": c.failed,
        "cancelled": c.cancelled,
        "running": c.running,
        "queued": c.queued,
        "pending": c.pending,
        "sources": e.sources,
        "duration_s": e.duration_ms.map(|ms| ms as f64 / 1000.0),
        "error": e.unreadable,
    })
}

/// `running` (a coordinator holds it), `done` (every task completed), `failed` (some task
/// failed or was cancelled and nothing is left), `incomplete` (tasks left to run), `unreadable`.
fn state(e: &Entry) -> &'static str {
    let c = &e.counts;
    if e.unreadable.is_some() {
        "unreadable"
    } else if e.active {
        "running"
    } else if c.pending + c.queued + c.running > 0 {
        "incomplete"
    } else if c.failed + c.cancelled > 0 {
        "failed"
    } else {
        "done"
    }
}

/// The list as aligned columns.
fn table(entries: &[Entry]) -> String {
    let header = [
        "SWEEP", "STARTED", "STATE", "TASKS", "DONE", "FAILED", "LEFT", "SOURCES", "DURATION",
    ];
    let rows: Vec<[String; 9]> = entries
        .iter()
        .map(|e| {
            let c = &e.counts;
            [
                e.id.clone(),
                e.created.map(local_minute).unwrap_or_else(|| "-".into()),
                state(e).to_string(),
                c.total().to_string(),
                c.completed.to_string(),
                (c.failed + c.cancelled).to_string(),
                (c.pending + c.queued + c.running).to_string(),
                if e.sources.is_empty() {
                    "-".into()
                } else {
                    e.sources.join(",")
                },
                match (&e.unreadable, e.duration_ms) {
                    (Some(why), _) => why.clone(),
                    (None, Some(ms)) => duration(ms),
                    (None, None) => "-".into(),
                },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `45s`, `12m03s`, `3h07m`, `2d04h`.
fn duration(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// `2026-12-06 09:48` in local time (sweep ids are in local time too).
fn local_minute(ms: i64) -> String {
    let t = ms.div_euclid(1000) as libc::time_t;
    // SAFETY: localtime_r writes into the zeroed struct we own and reads only `t`.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&t, &mut tm).is_null() } {
        return layout::format_utc(ms);
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::state::TaskStatus;

    #[test]
    fn durations_are_short_and_states_follow_the_counts() {
        assert_eq!(duration(45_900), "45s");
        assert_eq!(duration(723_000), "12m03s");
        assert_eq!(duration(11_220_000), "3h07m");
        assert_eq!(duration(187_200_000), "2d04h");
        let mut e = Entry::default();
        e.counts.add_n(TaskStatus::Completed, 3);
        assert_eq!(state(&e), "done");
        e.counts.add_n(TaskStatus::Failed, 1);
        assert_eq!(state(&e), "failed");
        e.counts.add_n(TaskStatus::Pending, 1);
        assert_eq!(state(&e), "incomplete");
        e.active = true;
        assert_eq!(state(&e), "running");
    }

    #[test]
    fn the_table_aligns_its_columns() {
        let mut a = Entry {
            id: "sweep_b".into(),
            sources: vec!["local".into(), "gpu1".into()],
            duration_ms: Some(90_000),
            ..Entry::default()
        };
        a.counts.add_n(TaskStatus::Completed, 10);
        let b = Entry {
            id: "long_sweep_name".into(),
            unreadable: Some("schema version 99".into()),
            ..Entry::default()
        };
        let text = table(&[a, b]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let col = lines[0].find("STARTED").unwrap();
        assert_eq!(lines[1].find('-'), Some(col), "{text}");
        assert!(lines[1].ends_with("local,gpu1  1m30s"), "{text}");
        assert!(lines[2].contains("unreadable") && lines[2].ends_with("schema version 99"));
    }
}
