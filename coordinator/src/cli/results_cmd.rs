//! `sweep results`: the results table of a sweep (one row per task: params, status, duration,
//! usage, last metric values) as an aligned table, CSV, JSON or JSON lines. The table logic is
//! `core::results`; this shell loads the sweep and reads metrics a killed run never got to.

use super::config_cmd::load_config;
use super::sweep_cmd::{is_active, open_store, resolve_sweep};
use super::{user_error, Global, ResultsArgs, ResultsFormat, EXIT_OK};
use crate::core::results::{self, Direction, Query, TaskResult};
use crate::layout::SweepPaths;
use crate::store::Store;
use std::io::Write;

pub fn run(global: &Global, args: &ResultsArgs) -> anyhow::Result<i32> {
    let cfg = load_config(global)?;
    let (sweep_id, paths) = resolve_sweep(global, &cfg, args.sweep_id.as_deref())?;
    let mut store = open_store(&paths, &sweep_id)?;
    let paths = paths.with_task_layout(store.task_layout()?);
    let query = Query {
        sort: args
            .sort
            .as_deref()
            .map(results::parse_sort)
            .transpose()
            .map_err(user_error)?,
        top: args.top,
        filters: args
            .filter
            .iter()
            .map(|f| results::parse_filter(f))
            .collect::<Result<_, _>>()
            .map_err(|e| user_error(format!("--where {e}")))?,
        columns: (!args.columns.is_empty()).then(|| args.columns.clone()),
        compact: args.format == ResultsFormat::Table,
    };
    if !is_active(&paths) {
        read_unread_metrics(&mut store, &paths);
    }
    let tasks = load(&store)?;
    let table = results::build(&tasks, &query).map_err(|e| {
        let hint = if e.contains("no column") && tasks.iter().all(|t| t.metrics.is_empty()) {
            "\n  hint: a task reports metrics by printing lines like `HSM_METRIC loss=0.25 step=3`, or by writing metrics.json or metrics.jsonl into its results directory ($HSM_OUTPUT_DIR)"
        } else {
            ""
        };
        user_error(format!("{e}{hint}"))
    })?;
    let mut out = std::io::stdout().lock();
    let text = match args.format {
        ResultsFormat::Table => results::render_table(&table, 40),
        ResultsFormat::Csv => results::render_csv(&table),
        ResultsFormat::Json => {
            let mut t = serde_json::to_string_pretty(&results::row_objects(&table))?;
            t.push('\n');
            t
        }
        ResultsFormat::Jsonl => results::row_objects(&table)
            .iter()
            .map(|row| format!("{row}\n"))
            .collect(),
    };
    // A closed pipe (`| head`) is not an error.
    if out
        .write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .is_err()
    {
        return Ok(EXIT_OK);
    }
    if args.format == ResultsFormat::Table {
        let mut note = format!("{sweep_id}: {} of {} tasks", table.rows.len(), table.total);
        if let Some((column, direction)) = &table.sorted {
            note.push_str(&format!(
                ", sorted by {column} ({})",
                match direction {
                    Direction::Asc => "lowest first; add :desc for highest first",
                    Direction::Desc => "highest first; add :asc for lowest first",
                }
            ));
        }
        eprintln!("{note}");
    }
    Ok(EXIT_OK)
}

/// Every task with its current attempt's usage and last metric values.
pub fn load(store: &Store) -> anyhow::Result<Vec<TaskResult>> {
    let mut usage = store.usage()?;
    let mut metrics = store.last_metrics()?;
    Ok(store
        .tasks()?
        .into_iter()
        .map(|row| TaskResult {
            usage: usage.remove(&row.index).unwrap_or_default(),
            metrics: metrics.remove(&row.index).unwrap_or_default(),
            task_id: row.task_id,
            index: row.index,
            status: row.status,
            attempt: row.attempt,
            source: row.source,
            started_at: row.started_at,
            finished_at: row.finished_at,
            params: row.params,
            reason: row.reason,
        })
        .collect())
}

/// Reads the metrics of ended attempts that a coordinator killed before reading them left
/// behind (only when no run of the sweep is active: an active run reads its own).
pub fn read_unread_metrics(store: &mut Store, paths: &SweepPaths) {
    let unread = match store.metrics_unread() {
        Ok(unread) => unread,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list attempts with unread metrics");
            return;
        }
    };
    let read: Vec<_> = unread
        .into_iter()
        .map(|(index, attempt)| {
            crate::metrics_worker::read_and_write(index, attempt, &paths.task_dir(index))
        })
        // As the run does: in a compact sweep, no directory means nothing to read.
        .filter(|e| e.had_output || paths.compact())
        .collect();
    let reported: Vec<_> = read
        .iter()
        .map(|e| (e.index, e.attempt, &e.metrics))
        .collect();
    if let Err(e) = store.record_metrics(&reported, crate::actors::sweep::now_ms()) {
        tracing::warn!(error = %e, "cannot record metrics");
    }
}
