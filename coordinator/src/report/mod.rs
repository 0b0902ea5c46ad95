//! The sweep report (`sweep report`, and written at the end of every run): one self-contained
//! HTML file. This module is the IO shell: it reads `sweep.db` and the first task's
//! `command.txt` into a `ReportInput`, and writes the page; `model` (what the page shows) and
//! `html` (the page) are pure.

pub mod html;
pub mod model;

use crate::layout::{self, SweepPaths};
use crate::store::Store;
use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where a sweep's report goes unless told otherwise.
pub fn default_path(paths: &SweepPaths) -> PathBuf {
    paths.root.join("reports").join("report.html")
}

/// What writing a report cost, for the output and the benchmark.
#[derive(Debug, Clone)]
pub struct Written {
    pub path: PathBuf,
    pub bytes: usize,
    pub tasks: usize,
    pub embedded: usize,
    /// Reading the database.
    pub read_ms: f64,
    /// Building the model and the page.
    pub build_ms: f64,
}

/// Reads what a report needs from an open store (and the first task's `command.txt`, or the
/// command `sweep run` recorded).
pub fn load(
    store: &Store,
    paths: &SweepPaths,
    sweep_id: &str,
    active: bool,
    now_ms: i64,
) -> anyhow::Result<model::ReportInput> {
    // Lean rows; parameters only for the rows the page embeds and the failed ones (below).
    let tasks = store.report_rows()?;
    // A compact sweep has no command.txt; `sweep run` recorded task 1's command.
    let command = tasks
        .first()
        .and_then(|t| {
            std::fs::read_to_string(paths.task_dir(t.index).join("command.txt"))
                .ok()
                .map(|c| c.trim_end().to_string())
        })
        .or(store.meta("first_command")?.filter(|c| !c.is_empty()));
    let mut input = model::ReportInput {
        sweep_id: sweep_id.to_string(),
        created_ms: store.meta("created")?.and_then(|c| c.parse().ok()),
        generated_ms: now_ms,
        active,
        command,
        sweep_file: store.meta("sweep_file")?,
        hsm_version: store
            .meta("hsm_version")?
            .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string()),
        task_width: paths.task_width,
        metrics: store.last_metrics()?,
        usage: store.usage()?,
        tails: store.stderr_tails()?,
        attempts: store.attempt_rows()?,
        tasks,
        constant: Some(store.constant_params()?),
    };
    for i in model::picked(&input, &model::LIMITS) {
        let task = &mut input.tasks[i];
        task.params = store.params_of(task.index)?.unwrap_or_default();
    }
    // The failed ones' for the error groups (found through their index).
    let mut failed = store.failed_tasks()?.into_iter().peekable();
    for task in input.tasks.iter_mut() {
        while failed.next_if(|f| f.index < task.index).is_some() {}
        if let Some(f) = failed.next_if(|f| f.index == task.index) {
            task.params = f.params;
        }
    }
    Ok(input)
}

/// Builds the report of the sweep in `paths` and writes it to `out` (atomically: a reader never
/// sees half a page).
pub fn write(
    paths: &SweepPaths,
    sweep_id: &str,
    active: bool,
    out: &Path,
) -> anyhow::Result<Written> {
    let started = Instant::now();
    let store = Store::open(&paths.db())?;
    let paths = paths.clone().with_task_width(store.task_width()?);
    let input = load(&store, &paths, sweep_id, active, now_ms())?;
    drop(store);
    let read_ms = started.elapsed().as_secs_f64() * 1e3;
    let started = Instant::now();
    let report = model::build(&input, &model::LIMITS);
    let page = html::render(&report);
    let build_ms = started.elapsed().as_secs_f64() * 1e3;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    layout::write_atomic(out, page.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(Written {
        path: out.to_path_buf(),
        bytes: page.len(),
        tasks: report.total,
        embedded: report.rows.idx.len(),
        read_ms,
        build_ms,
    })
}

use hsm_protocol::now_ms;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::state::{Change, TaskStatus};
    use crate::core::value::{params_hash, Params, Value};
    use crate::store::NewTask;

    #[test]
    fn the_lean_load_gives_the_model_what_reading_every_task_gave() {
        let dir = tempfile::tempdir().unwrap();
        let paths = SweepPaths::new(dir.path().to_path_buf());
        let tasks = (1..=6u64).map(|index| {
            let params: Params = [
                ("x".to_string(), Value::Int(index as i64)),
                ("k".to_string(), Value::Int(7)),
                (
                    "opt".to_string(),
                    Value::Str(if index < 3 { "sgd" } else { "adam" }.into()),
                ),
            ]
            .into_iter()
            .collect();
            NewTask {
                index,
                params_hash: params_hash(&params),
                params,
            }
        });
        let mut store = Store::create(&paths.db(), &[], 3, tasks).unwrap();
        let failed = |index| Change {
            exit_code: Some(1),
            reason: Some("exit code 1".into()),
            ..Change::new(index, 1, TaskStatus::Failed, Some("local".into()), 20)
        };
        store
            .apply(&[
                Change::new(3, 1, TaskStatus::Completed, Some("local".into()), 20),
                failed(1),
                failed(2),
            ])
            .unwrap();
        let lean = load(&store, &paths, "s", false, 30).unwrap();
        // What the report read before: every task with its parameters.
        let mut whole = load(&store, &paths, "s", false, 30).unwrap();
        whole.tasks = store.tasks().unwrap();
        whole.constant = None;
        let (a, b) = (
            model::build(&lean, &model::LIMITS),
            model::build(&whole, &model::LIMITS),
        );
        assert_eq!(a.rows.idx, b.rows.idx);
        assert_eq!(a.params, b.params);
        assert_eq!(a.params.len(), 3, "x, k and opt are all shown");
        assert_eq!(a.errors, b.errors);
        // The failures share opt=sgd, which others lack; k is the whole sweep's.
        assert_eq!(a.errors[0].count, 2);
        assert!(
            a.errors[0].shared.as_deref().unwrap().contains("opt=sgd"),
            "{:?}",
            a.errors[0].shared
        );
        // Only the failed rows keep their names and reasons.
        assert!(lean.tasks[2].task_id.is_empty() && lean.tasks[2].reason.is_none());
        assert_eq!(lean.tasks[0].task_id, "task_001");
    }
}
