//! Per-source statistics as the commands show them: the table `sweep status` prints, the
//! `sources` of its `--json`, and the entries of `sweep_metadata.yaml`'s `sources`. The figures
//! come from `core::stats::source_stats`.

use crate::core::stats::SourceStats;
use serde_json::{json, Value};

/// One source's figures as JSON (seconds and MiB rounded to milliseconds and 0.1 MiB).
pub fn stats_json(s: &SourceStats) -> Value {
    json!({
        "name": s.source,
        "tasks": s.tasks,
        "attempts": s.attempts,
        "completed": s.completed,
        "failed": s.failed,
        "cancelled": s.cancelled,
        "running": s.running,
        "queued": s.queued,
        "mean_duration_s": s.mean_s.map(|v| round(v, 3)),
        "median_duration_s": s.median_s.map(|v| round(v, 3)),
        "throughput_per_min": s.throughput_per_min.map(|v| round(v, 2)),
        "cpu_s": s.cpu_s.map(|v| round(v, 3)),
        "max_rss_mb": s.max_rss_mb.map(|v| round(v, 1)),
    })
}

/// `sweep_metadata.yaml`'s `sources`: every configured source (`name`, `slots`) with its
/// figures, then sources that ran attempts of the sweep earlier but are not configured now.
pub fn metadata_sources(configured: &[(String, usize)], stats: &[SourceStats]) -> Vec<Value> {
    let mut out: Vec<Value> = configured
        .iter()
        .map(|(name, slots)| {
            let mut entry = json!({ "name": name, "slots": slots });
            if let (Some(s), Some(map)) = (
                stats.iter().find(|s| &s.source == name),
                entry.as_object_mut(),
            ) {
                if let Value::Object(figures) = stats_json(s) {
                    map.extend(figures.into_iter().filter(|(k, _)| k != "name"));
                }
            }
            entry
        })
        .collect();
    out.extend(
        stats
            .iter()
            .filter(|s| !configured.iter().any(|(name, _)| name == &s.source))
            .map(stats_json),
    );
    out
}

/// The table `sweep status` prints (nothing when no attempt ran yet). Outcomes count attempts
/// (a retried task's failed attempt too, wherever it ran), so `attempts` stands beside `tasks`
/// for them to add up.
pub fn table(stats: &[SourceStats]) -> String {
    if stats.is_empty() {
        return String::new();
    }
    let header = [
        "source",
        "tasks",
        "attempts",
        "completed",
        "failed",
        "mean",
        "median",
        "tasks/min",
        "CPU",
        "max RSS",
    ];
    let rows: Vec<[String; 10]> = stats
        .iter()
        .map(|s| {
            [
                hsm_protocol::display_safe(&s.source).into_owned(),
                s.tasks.to_string(),
                s.attempts.to_string(),
                s.completed.to_string(),
                s.failed.to_string(),
                s.mean_s.map_or("-".into(), duration),
                s.median_s.map_or("-".into(), duration),
                s.throughput_per_min
                    .map_or("-".into(), |v| format!("{v:.1}")),
                s.cpu_s.map_or("-".into(), duration),
                s.max_rss_mb.map_or("-".into(), |mb| format!("{mb:.0} MB")),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut text = String::from(" ");
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            // The name left-aligned, the figures right-aligned.
            if i == 0 {
                text.push_str(&format!(" {cell:<w$}"));
            } else {
                text.push_str(&format!("  {cell:>w$}"));
            }
        }
        text.trim_end().to_string() + "\n"
    };
    let mut out = line(&header);
    for row in &rows {
        out.push_str(&line(&row.each_ref().map(String::as_str)));
    }
    out
}

/// `0.42s`, `12.3s`, `4m05s`, `2h03m`.
fn duration(seconds: f64) -> String {
    if seconds < 10.0 {
        format!("{seconds:.2}s")
    } else if seconds < 60.0 {
        format!("{seconds:.1}s")
    } else if seconds < 3600.0 {
        let s = seconds.round() as u64;
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        let m = (seconds / 60.0).round() as u64;
        format!("{}h{:02}m", m / 60, m % 60)
    }
}

fn round(value: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (value * f).round() / f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(source: &str) -> SourceStats {
        SourceStats {
            source: source.into(),
            tasks: 12,
            attempts: 13,
            completed: 10,
            failed: 2,
            cancelled: 1,
            running: 0,
            queued: 0,
            recent_per_min: None,
            mean_s: Some(75.4321),
            median_s: Some(3.0),
            throughput_per_min: Some(4.56),
            cpu_s: Some(0.5),
            max_rss_mb: Some(51.26),
        }
    }

    #[test]
    fn table_aligns_columns_and_writes_durations_readably() {
        let mut other = stats("gpu-node-1");
        other.mean_s = None;
        other.max_rss_mb = None;
        let text = table(&[stats("local"), other]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("  source    "), "{text}");
        // Outcomes are of attempts: the attempts column makes them add up.
        assert!(
            lines[0].contains("tasks  attempts  completed  failed"),
            "{text}"
        );
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(cells[1..5], ["12", "13", "10", "2"], "{text}");
        assert!(lines[1].contains("1m15s"), "{text}");
        assert!(lines[1].contains("3.00s"), "{text}");
        assert!(lines[1].ends_with("51 MB"), "{text}");
        assert!(lines[2].starts_with("  gpu-node-1"), "{text}");
        assert!(lines[2].ends_with('-'), "{text}");
        // Every row as wide as the header up to its last column.
        assert_eq!(lines[0].len(), lines[1].len(), "{text}");
        assert_eq!(table(&[]), "");
    }

    #[test]
    fn metadata_keeps_configured_sources_and_adds_earlier_ones() {
        let configured = vec![("local".to_string(), 4), ("idle".to_string(), 2)];
        let out = metadata_sources(&configured, &[stats("gone"), stats("local")]);
        let names: Vec<_> = out.iter().map(|v| v["name"].clone()).collect();
        assert_eq!(names, [json!("local"), json!("idle"), json!("gone")]);
        assert_eq!(out[0]["slots"], json!(4));
        assert_eq!(out[0]["completed"], json!(10));
        assert_eq!(out[0]["mean_duration_s"], json!(75.432));
        assert_eq!(out[1], json!({"name": "idle", "slots": 2}));
        assert!(out[2].get("slots").is_none());
    }

    #[test]
    fn durations() {
        assert_eq!(duration(0.4242), "0.42s");
        assert_eq!(duration(12.34), "12.3s");
        assert_eq!(duration(245.0), "4m05s");
        assert_eq!(duration(7380.0), "2h03m");
    }
}
