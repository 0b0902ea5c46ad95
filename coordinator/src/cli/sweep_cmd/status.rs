//! `sweep status`: counts, per-source figures and failures of a sweep, as text or YAML/JSON.

use super::*;

pub fn status(global: &Global, args: &StatusArgs) -> anyhow::Result<i32> {
    let cfg = load_config(global)?;
    let (sweep_id, paths) = resolve_sweep(global, &cfg, args.sweep_id.as_deref())?;
    let store = open_store(&paths, &sweep_id)?;
    let rows = if args.json {
        store.tasks()?
    } else {
        store.task_statuses()?
    };
    let counts: Counts = rows.iter().map(|r| r.status).collect();
    let active = is_active(&paths);
    let attempts = store.attempt_rows()?;
    let stats = source_stats(&attempts);
    if args.json {
        let mut tails = store.stderr_tails()?;
        // What each task's current attempt used, when measured.
        let used: std::collections::HashMap<(u64, u32), crate::core::state::Usage> = attempts
            .iter()
            .map(|a| ((a.index, a.attempt), a.usage))
            .collect();
        let tasks: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({
                    "task": r.task_id,
                    "index": r.index,
                    "status": r.status.as_str(),
                    "attempt": r.attempt,
                    "params": r.params,
                    "params_hash": r.params_hash,
                    "source": r.source,
                    "exit_code": r.exit_code,
                    "reason": r.reason,
                    "stderr_tail": tails.remove(&r.index),
                    "job_id": r.job_id,
                    "started": r.started_at.map(layout::format_utc),
                    "finished": r.finished_at.map(layout::format_utc),
                    "usage": used.get(&(r.index, r.attempt)).and_then(layout::usage_json),
                })
            })
            .collect();
        let value = json!({
            "sweep_id": sweep_id,
            "path": paths.root.display().to_string(),
            "active": active,
            "total": counts.total(),
            "completed": counts.completed,
            "failed": counts.failed,
            "cancelled": counts.cancelled,
            "running": counts.running,
            "queued": counts.queued,
            "pending": counts.pending,
            "tasks": tasks,
            "sources": stats.iter().map(crate::cli::source_stats::stats_json).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(EXIT_OK);
    }
    println!(
        "{sweep_id} ({})",
        if active { "running" } else { "not running" }
    );
    println!("  total {} · {}", counts.total(), counts.breakdown());
    print!("{}", crate::cli::source_stats::table(&stats));
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
