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

/// Reads what a report needs from an open store (and the first task's `command.txt`).
pub fn load(
    store: &Store,
    paths: &SweepPaths,
    sweep_id: &str,
    active: bool,
    now_ms: i64,
) -> anyhow::Result<model::ReportInput> {
    let tasks = store.tasks()?;
    let command = tasks.first().and_then(|t| {
        std::fs::read_to_string(paths.task_dir(t.index).join("command.txt"))
            .ok()
            .map(|c| c.trim_end().to_string())
    });
    Ok(model::ReportInput {
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
    })
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
