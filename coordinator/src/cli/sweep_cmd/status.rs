//! `sweep status`: counts, per-source figures and failures of a sweep, as text or YAML/JSON.

use super::*;

pub fn status(global: &Global, args: &StatusArgs) -> anyhow::Result<i32> {
    let cfg = load_config(global)?;
    let (sweep_id, paths) = resolve_sweep(global, &cfg, args.sweep_id.as_deref())?;
    let store = open_store(&paths, &sweep_id)?;
    // Counts from the table the store keeps: six rows however many tasks the sweep has.
    let counts = store.counts()?;
    let active = is_active(&paths);
    if args.json {
        return status_json(&store, &sweep_id, &paths, counts, active);
    }
    let stats = source_stats(&store.attempt_rows()?);
    println!(
        "{sweep_id} ({})",
        if active { "running" } else { "not running" }
    );
    println!("  total {} · {}", counts.total(), counts.breakdown());
    print!("{}", crate::cli::source_stats::table(&stats));
    // Without --all only the failed and running tasks, found through their index.
    let rows = if args.all {
        store.task_statuses()?
    } else {
        store.listed_tasks()?
    };
    for row in &rows {
        let show = args.all || matches!(row.status, TaskStatus::Failed | TaskStatus::Running);
        if !show {
            continue;
        }
        println!(
            "  {} {} (attempt {}{}){}",
            row.task_id,
            row.status,
            row.attempt,
            row.source
                .as_deref()
                .map(|s| format!(", {s}"))
                .unwrap_or_default(),
            row.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
    }
    println!("  outputs: {}", display_path(global, &paths.root));
    Ok(EXIT_OK)
}

/// `sweep status --json`, written as it is read: the counts at once, then each task as its
/// row arrives (a million tasks in constant memory), then the per-source figures.
fn status_json(
    store: &Store,
    sweep_id: &str,
    paths: &SweepPaths,
    counts: Counts,
    active: bool,
) -> anyhow::Result<i32> {
    use std::io::Write;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut head = json!({
        "sweep_id": sweep_id,
        "path": paths.root.display().to_string(),
        "active": active,
    });
    if let (Some(head), serde_json::Value::Object(counts)) =
        (head.as_object_mut(), counts_json(&counts))
    {
        head.extend(counts);
    }
    // The object's fields without its closing brace, then the two lists: the same document
    // `serde_json::to_string_pretty` writes for the whole.
    let head = serde_json::to_string_pretty(&head)?;
    let head = head.trim_end().trim_end_matches('}').trim_end();
    write!(out, "{head},\n  \"tasks\": [")?;
    out.flush()?;
    let mut first = true;
    store.visit_task_details(&mut |r, tail, usage| {
        let task = json!({
            "task": r.task_id,
            "index": r.index,
            "status": r.status.as_str(),
            "attempt": r.attempt,
            "params": r.params,
            "params_hash": r.params_hash,
            "source": r.source,
            "exit_code": r.exit_code,
            "reason": r.reason,
            "stderr_tail": tail,
            "job_id": r.job_id,
            "started": r.started_at.map(layout::format_utc),
            "finished": r.finished_at.map(layout::format_utc),
            "usage": layout::usage_json(&usage),
        });
        let text = serde_json::to_string_pretty(&task).map_err(std::io::Error::other)?;
        out.write_all(if first { b"\n" } else { b",\n" })?;
        first = false;
        for (i, line) in text.lines().enumerate() {
            if i > 0 {
                out.write_all(b"\n")?;
            }
            out.write_all(b"    ")?;
            out.write_all(line.as_bytes())?;
        }
        Ok(())
    })?;
    let stats = source_stats(&store.attempt_rows()?);
    let sources: Vec<_> = stats
        .iter()
        .map(crate::cli::source_stats::stats_json)
        .collect();
    let sources = serde_json::to_string_pretty(&sources)?.replace('\n', "\n  ");
    if first {
        write!(out, "],\n  \"sources\": {sources}\n}}\n")?;
    } else {
        write!(out, "\n  ],\n  \"sources\": {sources}\n}}\n")?;
    }
    out.flush()?;
    Ok(EXIT_OK)
}

/// A sweep's counts as JSON fields (`sweep status --json` and `sweep_metadata.yaml`), in the order
/// they are shown.
pub(super) fn counts_json(counts: &Counts) -> serde_json::Value {
    json!({
        "total": counts.total(),
        "completed": counts.completed,
        "failed": counts.failed,
        "cancelled": counts.cancelled,
        "running": counts.running,
        "queued": counts.queued,
        "pending": counts.pending,
    })
}
