//! The report's data model, built from what a sweep's database holds by plain functions: which
//! tasks the page plots (a bounded sample that always keeps the best runs and failures), the
//! parameter and metric columns, the aggregated timeline and duration histogram, error groups and
//! per-source statistics (`core::stats`). No IO and no clock: the time of the report is an
//! argument.

use crate::core::errors;
use crate::core::state::{TaskStatus, Usage};
use crate::core::stats::{self, AttemptRow, SourceStats};
use crate::core::value::Value;
use crate::layout::format_utc;
use crate::store::TaskRow;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What the report is made of, as read from `sweep.db` (the shell in `report/mod.rs` reads it).
#[derive(Debug, Default)]
pub struct ReportInput {
    pub sweep_id: String,
    /// When the sweep was created (unix ms), from its meta.
    pub created_ms: Option<i64>,
    /// When the report is made (unix ms).
    pub generated_ms: i64,
    /// A coordinator is running the sweep right now.
    pub active: bool,
    /// The first task's command line (its `command.txt`), when there is one.
    pub command: Option<String>,
    pub sweep_file: Option<String>,
    pub hsm_version: String,
    pub task_width: usize,
    pub tasks: Vec<TaskRow>,
    /// The last value of every metric, by task index.
    pub metrics: BTreeMap<u64, BTreeMap<String, f64>>,
    /// What each task's current attempt used, by task index.
    pub usage: HashMap<u64, Usage>,
    /// The stderr tail of each task's current (failed) attempt, by task index.
    pub tails: HashMap<u64, String>,
    /// Every attempt (`Store::attempt_rows`), for the per-source statistics.
    pub attempts: Vec<AttemptRow>,
    /// The parameters every task of the sweep shares, when the shell read them itself: then
    /// `tasks` may carry parameters only for the rows `picked` chooses and the failed ones (a
    /// million tasks' parameters are most of a gigabyte). `None`: found from `tasks`.
    pub constant: Option<BTreeMap<String, Value>>,
}

/// Bounds that keep a report of any sweep a few MB and quick to open.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Limits {
    /// Tasks embedded for the plots and the best-runs table.
    pub max_rows: usize,
    /// Best tasks by each metric, in each direction, always among them.
    pub best_per_metric: usize,
    /// Failed tasks always among them (spread over the sweep).
    pub max_failures: usize,
    /// Metric and parameter columns (the most common names).
    pub max_columns: usize,
    /// Up to this many started tasks the timeline draws each one; beyond, it draws bins.
    pub max_bars: usize,
    pub timeline_bins: usize,
    pub histogram_bins: usize,
    pub max_error_groups: usize,
    pub examples_per_group: usize,
}

pub const LIMITS: Limits = Limits {
    max_rows: 10_000,
    best_per_metric: 100,
    max_failures: 2_000,
    max_columns: 32,
    max_bars: 2_000,
    timeline_bins: 240,
    histogram_bins: 40,
    max_error_groups: 30,
    examples_per_group: 5,
};

/// The statuses in the order their codes index (`Rows::status`).
pub const STATUS_NAMES: [&str; 6] = [
    "pending",
    "queued",
    "running",
    "completed",
    "failed",
    "cancelled",
];

fn status_code(status: TaskStatus) -> u8 {
    match status {
        TaskStatus::Pending => 0,
        TaskStatus::Queued => 1,
        TaskStatus::Running => 2,
        TaskStatus::Completed => 3,
        TaskStatus::Failed => 4,
        TaskStatus::Cancelled => 5,
    }
}

/// Everything the page shows; serialized once into the page as compact JSON.
#[derive(Debug, Serialize)]
pub struct Report {
    pub summary: Summary,
    pub limits: Limits,
    pub statuses: [&'static str; 6],
    /// Tasks in the sweep.
    pub total: usize,
    /// The embedded tasks (`rows.idx.len()` of `total`), columnar.
    pub rows: Rows,
    pub params: Vec<Column>,
    pub metrics: Vec<MetricColumn>,
    /// Metric names left out past `max_columns`.
    pub metrics_left_out: usize,
    pub params_left_out: usize,
    /// Wall time, CPU time (user + system) and peak RSS of the embedded tasks, when measured.
    pub usage: Vec<Column>,
    pub timeline: Timeline,
    pub histogram: Histogram,
    pub errors: Vec<ErrorGroup>,
    pub errors_left_out: usize,
    pub sources: Vec<SourceStats>,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub sweep_id: String,
    pub created: Option<String>,
    pub generated: String,
    pub active: bool,
    pub command: Option<String>,
    pub sweep_file: Option<String>,
    pub hsm_version: String,
    /// Count per status, in `STATUS_NAMES` order.
    pub counts: [usize; 6],
    /// From the first start to the last end (or now while running), ms.
    pub duration_ms: Option<i64>,
    pub sources: Vec<String>,
    /// Summed over tasks whose attempt measured it.
    pub cpu_ms: Option<u64>,
    pub wall_ms: Option<u64>,
    pub with_metrics: usize,
}

/// The embedded tasks, one entry per task in every vector.
#[derive(Debug, Default, Serialize)]
pub struct Rows {
    pub width: usize,
    pub idx: Vec<u64>,
    /// Index into `STATUS_NAMES`.
    pub status: Vec<u8>,
    /// Index into `Summary::sources`, -1 when it never had one.
    pub source: Vec<i32>,
    pub attempt: Vec<u32>,
    /// Start to end of the current attempt, ms.
    pub duration: Vec<Option<i64>>,
}

/// A column of parameter or usage values. Numbers stay numbers; anything else is a category
/// (`values` then index `cats`).
#[derive(Debug, Serialize, PartialEq)]
pub struct Column {
    pub name: String,
    /// "num" or "cat".
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cats: Vec<String>,
    pub values: Vec<Option<f64>>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct MetricColumn {
    pub name: String,
    /// The page's default direction for "best" (the reader can switch it).
    pub lower_is_better: bool,
    pub values: Vec<Option<f64>>,
}

/// Tasks over time per source: every task as a bar when there are few, else binned counts.
#[derive(Debug, Default, Serialize)]
pub struct Timeline {
    /// Unix ms of the left edge; every other time is ms after it.
    pub t0: i64,
    pub span: i64,
    pub lanes: Vec<String>,
    /// Running tasks on average in each bin, per lane.
    pub running: Vec<Vec<f32>>,
    /// Tasks that ended failed in each bin, per lane.
    pub failed: Vec<Vec<u32>>,
    pub bin_ms: f64,
    /// Present when at most `max_bars` tasks started: one per task.
    pub bars: Option<Bars>,
    pub started: usize,
}

#[derive(Debug, Default, Serialize)]
pub struct Bars {
    pub lane: Vec<u32>,
    pub start: Vec<i64>,
    pub end: Vec<i64>,
    pub status: Vec<u8>,
    pub idx: Vec<u64>,
}

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Histogram {
    /// Bin edges in ms (`bins + 1` of them); logarithmically spaced when `log`.
    pub edges: Vec<f64>,
    pub log: bool,
    pub completed: Vec<u32>,
    pub failed: Vec<u32>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct ErrorGroup {
    /// The group's signature (`core::errors::signature`).
    pub reason: String,
    pub count: usize,
    /// What every task of the group shares that others lack (`all 3 have lr=0.1`).
    pub shared: Option<String>,
    /// Names of the first tasks in the group.
    pub examples: Vec<String>,
    /// The stderr tail of the first example that kept one.
    pub tail: Option<String>,
    pub tail_of: Option<String>,
}

/// A task's current attempt's duration, when it started and ended.
fn duration(task: &TaskRow) -> Option<i64> {
    match (task.started_at, task.finished_at) {
        (Some(s), Some(f)) if f >= s => Some(f - s),
        _ => None,
    }
}

/// The metric columns the report shows (the most common names), and how many were left out.
fn metric_names<'a>(input: &'a ReportInput, limits: &Limits) -> (Vec<&'a str>, usize) {
    common_names(
        input
            .metrics
            .values()
            .flat_map(|m| m.keys().map(String::as_str)),
        limits.max_columns,
    )
}

/// The rows `build` embeds, as indices into `input.tasks`: they depend on statuses and metrics
/// only, so a shell can read parameters for these alone.
pub fn picked(input: &ReportInput, limits: &Limits) -> Vec<usize> {
    let (names, _) = metric_names(input, limits);
    select_rows(&input.tasks, &input.metrics, &names, limits)
}

/// Builds the whole model.
pub fn build(input: &ReportInput, limits: &Limits) -> Report {
    let tasks = &input.tasks;
    let sources = source_names(tasks);
    let source_index: HashMap<&str, i32> = sources
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i as i32))
        .collect();
    let (metric_names, metrics_left_out) = metric_names(input, limits);
    let (param_names, params_left_out) = common_names(
        tasks
            .iter()
            .flat_map(|t| t.params.keys().map(String::as_str)),
        limits.max_columns,
    );
    let chosen = select_rows(tasks, &input.metrics, &metric_names, limits);
    let picked: Vec<&TaskRow> = chosen.iter().map(|&i| &tasks[i]).collect();

    let mut rows = Rows {
        width: input.task_width,
        ..Rows::default()
    };
    for task in &picked {
        rows.idx.push(task.index);
        rows.status.push(status_code(task.status));
        rows.source.push(
            task.source
                .as_deref()
                .and_then(|s| source_index.get(s).copied())
                .unwrap_or(-1),
        );
        rows.attempt.push(task.attempt);
        rows.duration.push(duration(task));
    }
    let params = param_names
        .iter()
        .map(|name| param_column(name, picked.iter().map(|t| t.params.get(*name))))
        .collect();
    let metrics = metric_names
        .iter()
        .map(|name| MetricColumn {
            name: name.to_string(),
            lower_is_better: lower_is_better(name),
            values: picked
                .iter()
                .map(|t| {
                    input
                        .metrics
                        .get(&t.index)
                        .and_then(|m| m.get(*name))
                        .copied()
                        .filter(|v| v.is_finite())
                })
                .collect(),
        })
        .collect();
    let usage = usage_columns(&picked, &input.usage);
    let (errors, errors_left_out) =
        error_groups(tasks, &input.tails, input.constant.as_ref(), limits);
    Report {
        summary: summary(input, &sources),
        limits: *limits,
        statuses: STATUS_NAMES,
        total: tasks.len(),
        rows,
        params,
        metrics,
        metrics_left_out,
        params_left_out,
        usage,
        timeline: timeline(tasks, &sources, input, limits),
        histogram: histogram(tasks, limits.histogram_bins),
        errors,
        errors_left_out,
        sources: stats::source_stats(&input.attempts),
    }
}

fn summary(input: &ReportInput, sources: &[String]) -> Summary {
    let mut counts = [0usize; 6];
    for task in &input.tasks {
        counts[status_code(task.status) as usize] += 1;
    }
    let first_start = input.tasks.iter().filter_map(|t| t.started_at).min();
    let last_end = if input.active {
        Some(input.generated_ms)
    } else {
        input.tasks.iter().filter_map(|t| t.finished_at).max()
    };
    let duration_ms = match (first_start, last_end) {
        (Some(s), Some(e)) if e >= s => Some(e - s),
        _ => None,
    };
    let sum = |f: fn(&Usage) -> Option<u64>| -> Option<u64> {
        let mut any = false;
        let total = input
            .usage
            .values()
            .filter_map(f)
            .inspect(|_| any = true)
            .fold(0u64, u64::saturating_add);
        any.then_some(total)
    };
    Summary {
        sweep_id: input.sweep_id.clone(),
        created: input.created_ms.map(format_utc),
        generated: format_utc(input.generated_ms),
        active: input.active,
        command: input.command.clone(),
        sweep_file: input.sweep_file.clone(),
        hsm_version: input.hsm_version.clone(),
        counts,
        duration_ms,
        sources: sources.to_vec(),
        cpu_ms: sum(|u| match (u.cpu_user_ms, u.cpu_sys_ms) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        }),
        wall_ms: sum(|u| u.wall_ms),
        with_metrics: input.metrics.len(),
    }
}

/// The sources tasks ran on, sorted.
fn source_names(tasks: &[TaskRow]) -> Vec<String> {
    let names: BTreeSet<&str> = tasks.iter().filter_map(|t| t.source.as_deref()).collect();
    names.into_iter().map(str::to_string).collect()
}

/// The `max` most common names (ties in name order), then in name order; and how many were
/// left out.
fn common_names<'a>(names: impl Iterator<Item = &'a str>, max: usize) -> (Vec<&'a str>, usize) {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    // Parameters keep sweep order, which is how the user wrote them: remember first sight.
    let mut order: Vec<&str> = Vec::new();
    for name in names {
        let n = counts.entry(name).or_insert(0);
        if *n == 0 {
            order.push(name);
        }
        *n += 1;
    }
    let left_out = order.len().saturating_sub(max);
    if left_out > 0 {
        let mut by_count = order.clone();
        by_count.sort_by(|a, b| counts[b].cmp(&counts[a]).then(a.cmp(b)));
        let kept: BTreeSet<&str> = by_count.into_iter().take(max).collect();
        order.retain(|n| kept.contains(n));
    }
    (order, left_out)
}

/// Whether smaller is better for a metric of this name: losses, errors, times, perplexity.
pub fn lower_is_better(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "loss",
        "err",
        "mse",
        "mae",
        "rmse",
        "perplexity",
        "ppl",
        "time",
        "latency",
        "regret",
        "cost",
        "wer",
        "cer",
        "nll",
        "fid",
    ]
    .iter()
    .any(|k| name.contains(k))
}

/// Which tasks the page embeds (indices into `tasks`, ascending): all of them when they fit
/// in `max_rows`; else the best `best_per_metric` by each metric in each direction, up to
/// `max_failures` failed tasks spread over the sweep, then tasks spread evenly over the rest.
pub fn select_rows(
    tasks: &[TaskRow],
    metrics: &BTreeMap<u64, BTreeMap<String, f64>>,
    metric_names: &[&str],
    limits: &Limits,
) -> Vec<usize> {
    if tasks.len() <= limits.max_rows {
        return (0..tasks.len()).collect();
    }
    let mut chosen: BTreeSet<usize> = BTreeSet::new();
    for name in metric_names {
        let mut scored: Vec<(f64, usize)> = tasks
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let v = *metrics.get(&t.index)?.get(*name)?;
                v.is_finite().then_some((v, i))
            })
            .collect();
        scored.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let k = limits.best_per_metric.min(scored.len());
        chosen.extend(scored[..k].iter().map(|s| s.1));
        chosen.extend(scored[scored.len() - k..].iter().map(|s| s.1));
    }
    let failed: Vec<usize> = (0..tasks.len())
        .filter(|&i| tasks[i].status == TaskStatus::Failed)
        .collect();
    chosen.extend(spread(&failed, limits.max_failures));
    let room = limits.max_rows.saturating_sub(chosen.len());
    let rest: Vec<usize> = (0..tasks.len()).filter(|i| !chosen.contains(i)).collect();
    chosen.extend(spread(&rest, room));
    chosen.into_iter().collect()
}

/// `n` items of `items` spread evenly over it (all when `n` covers them).
fn spread(items: &[usize], n: usize) -> Vec<usize> {
    if n >= items.len() {
        return items.to_vec();
    }
    (0..n).map(|k| items[k * items.len() / n]).collect()
}

/// A parameter's values as a column: numeric when every present value is a number.
fn param_column<'a>(name: &str, values: impl Iterator<Item = Option<&'a Value>>) -> Column {
    let values: Vec<Option<&Value>> = values.collect();
    let numeric = values
        .iter()
        .flatten()
        .all(|v| matches!(v, Value::Int(_) | Value::Float(_)));
    if numeric {
        return Column {
            name: name.to_string(),
            kind: "num",
            cats: Vec::new(),
            values: values
                .iter()
                .map(|v| match v {
                    Some(Value::Int(i)) => Some(*i as f64),
                    Some(Value::Float(f)) if f.is_finite() => Some(*f),
                    _ => None,
                })
                .collect(),
        };
    }
    let mut cats: Vec<String> = values
        .iter()
        .flatten()
        .map(|v| value_text(v))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // Numbers among strings sort as numbers would ("2" before "10").
    cats.sort_by(|a, b| match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x.total_cmp(&y),
        _ => a.cmp(b),
    });
    let index: HashMap<&str, usize> = cats
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    let codes = values
        .iter()
        .map(|v| v.map(|v| index[value_text(v).as_str()] as f64))
        .collect();
    Column {
        name: name.to_string(),
        kind: "cat",
        cats,
        values: codes,
    }
}

/// How a value reads in the page: strings as they are, anything else as JSON.
fn value_text(value: &Value) -> String {
    match value {
        Value::Str(s) => s.clone(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

/// Reads one figure of a task's usage.
type UsageField = fn(&Usage) -> Option<f64>;

fn usage_columns(picked: &[&TaskRow], usage: &HashMap<u64, Usage>) -> Vec<Column> {
    let columns: [(&str, UsageField); 3] = [
        ("wall_s", |u| u.wall_ms.map(|v| v as f64 / 1000.0)),
        ("cpu_s", |u| match (u.cpu_user_ms, u.cpu_sys_ms) {
            (None, None) => None,
            (a, b) => Some((a.unwrap_or(0) + b.unwrap_or(0)) as f64 / 1000.0),
        }),
        ("peak_rss_mb", |u| u.max_rss_kb.map(|v| v as f64 / 1024.0)),
    ];
    columns
        .iter()
        .map(|(name, get)| Column {
            name: name.to_string(),
            kind: "num",
            cats: Vec::new(),
            values: picked
                .iter()
                .map(|t| usage.get(&t.index).and_then(get))
                .collect(),
        })
        .filter(|c| c.values.iter().any(Option::is_some))
        .collect()
}

/// Failed tasks grouped by cause as `sweep errors` groups them (`core::errors`: a normalised
/// signature, the parameters a group shares), largest group first, each with the stderr tail of
/// its first task.
pub fn error_groups(
    tasks: &[TaskRow],
    tails: &HashMap<u64, String>,
    constant: Option<&BTreeMap<String, Value>>,
    limits: &Limits,
) -> (Vec<ErrorGroup>, usize) {
    let failures: Vec<errors::Failure> = tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Failed)
        .map(|t| errors::Failure {
            index: t.index,
            task: t.task_id.clone(),
            reason: t.reason.clone(),
            exit_code: t.exit_code,
            tail: tails.get(&t.index).cloned(),
            params: t.params.clone(),
        })
        .collect();
    if failures.is_empty() {
        return (Vec::new(), 0);
    }
    let constant = match constant {
        Some(constant) => constant.clone(),
        None => errors::constant_params(tasks.iter().map(|t| &t.params)),
    };
    let by_id: HashMap<&str, u64> = failures
        .iter()
        .map(|f| (f.task.as_str(), f.index))
        .collect();
    let mut out: Vec<ErrorGroup> = errors::group(&failures, &constant)
        .into_iter()
        .map(|group| {
            let first = group.examples.first().and_then(|t| by_id.get(t.as_str()));
            ErrorGroup {
                reason: group.signature.clone(),
                count: group.count,
                shared: errors::describe_shared(&group),
                tail: first.and_then(|i| tails.get(i).cloned()),
                tail_of: group.examples.first().cloned(),
                examples: group
                    .examples
                    .into_iter()
                    .take(limits.examples_per_group)
                    .collect(),
            }
        })
        .collect();
    let left_out = out.len().saturating_sub(limits.max_error_groups);
    out.truncate(limits.max_error_groups);
    (out, left_out)
}

/// The timeline: per source, how many tasks ran on average in each of `timeline_bins` bins and
/// how many failed there; and each task as a bar when few started.
fn timeline(
    tasks: &[TaskRow],
    sources: &[String],
    input: &ReportInput,
    limits: &Limits,
) -> Timeline {
    let lane_of: HashMap<&str, usize> = sources
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    let started: Vec<&TaskRow> = tasks
        .iter()
        .filter(|t| t.started_at.is_some() && t.source.is_some())
        .collect();
    let Some(t0) = started.iter().filter_map(|t| t.started_at).min() else {
        return Timeline {
            lanes: sources.to_vec(),
            ..Timeline::default()
        };
    };
    let last_end = started
        .iter()
        .filter_map(|t| t.finished_at.or(t.started_at))
        .max()
        .unwrap_or(t0);
    // A task still running ends "now" while a coordinator runs the sweep; otherwise (its
    // coordinator died) at the sweep's last recorded moment, so the axis is not stretched.
    let open_end = if input.active {
        input.generated_ms.max(last_end)
    } else {
        last_end
    };
    let end_of = |t: &TaskRow| {
        t.finished_at
            .unwrap_or(open_end)
            .max(t.started_at.unwrap_or(t0))
    };
    let span = (open_end - t0).max(1);
    let bins = limits.timeline_bins.max(1);
    let bin_ms = span as f64 / bins as f64;
    let mut running = vec![vec![0f32; bins]; sources.len()];
    let mut failed = vec![vec![0u32; bins]; sources.len()];
    for task in &started {
        let lane = lane_of[task.source.as_deref().unwrap_or_default()];
        let s = (task.started_at.unwrap_or(t0) - t0) as f64;
        let e = (end_of(task) - t0) as f64;
        let first = ((s / bin_ms) as usize).min(bins - 1);
        let last = ((e / bin_ms) as usize).min(bins - 1);
        for (b, slot) in running[lane]
            .iter_mut()
            .enumerate()
            .take(last + 1)
            .skip(first)
        {
            let lo = b as f64 * bin_ms;
            let hi = lo + bin_ms;
            let overlap = (e.min(hi) - s.max(lo)).max(0.0);
            *slot += (overlap / bin_ms) as f32;
        }
        if task.status == TaskStatus::Failed {
            failed[lane][last] += 1;
        }
    }
    let bars = (started.len() <= limits.max_bars).then(|| {
        let mut bars = Bars::default();
        for task in &started {
            bars.lane
                .push(lane_of[task.source.as_deref().unwrap_or_default()] as u32);
            bars.start.push(task.started_at.unwrap_or(t0) - t0);
            bars.end.push(end_of(task) - t0);
            bars.status.push(status_code(task.status));
            bars.idx.push(task.index);
        }
        bars
    });
    // Two decimals are all a plot needs; shorter JSON for big sweeps.
    for lane in &mut running {
        for v in lane.iter_mut() {
            *v = (*v * 100.0).round() / 100.0;
        }
    }
    Timeline {
        t0,
        span,
        lanes: sources.to_vec(),
        running,
        failed,
        bin_ms,
        bars,
        started: started.len(),
    }
}

/// Durations of the ended (completed or failed) tasks in `bins` bins; logarithmic when the
/// longest is more than 50 times the shortest.
pub fn histogram(tasks: &[TaskRow], bins: usize) -> Histogram {
    let ended: Vec<(i64, bool)> = tasks
        .iter()
        .filter(|t| matches!(t.status, TaskStatus::Completed | TaskStatus::Failed))
        .filter_map(|t| Some((duration(t)?, t.status == TaskStatus::Failed)))
        .collect();
    let (Some(min), Some(max)) = (
        ended.iter().map(|e| e.0).min(),
        ended.iter().map(|e| e.0).max(),
    ) else {
        return Histogram::default();
    };
    let bins = bins.max(1);
    let log = min > 0 && max as f64 / min as f64 > 50.0;
    let (lo, hi) = if log {
        ((min as f64).ln(), (max as f64).ln())
    } else {
        (min as f64, (max.max(min + 1)) as f64)
    };
    let hi = if hi > lo { hi } else { lo + 1.0 };
    let width = (hi - lo) / bins as f64;
    let edges: Vec<f64> = (0..=bins)
        .map(|i| {
            let x = lo + width * i as f64;
            let v = if log { x.exp() } else { x };
            (v * 10.0).round() / 10.0
        })
        .collect();
    let mut completed = vec![0u32; bins];
    let mut failed = vec![0u32; bins];
    for (d, is_failed) in ended {
        let x = if log { (d as f64).ln() } else { d as f64 };
        let b = (((x - lo) / width) as usize).min(bins - 1);
        if is_failed {
            failed[b] += 1;
        } else {
            completed[b] += 1;
        }
    }
    Histogram {
        edges,
        log,
        completed,
        failed,
    }
}

/// The value every unit test builds tasks from.
#[cfg(test)]
pub(crate) fn task(index: u64, status: TaskStatus, params: crate::core::value::Params) -> TaskRow {
    TaskRow {
        index,
        task_id: crate::core::value::task_name_in(index, 3),
        params_hash: String::new(),
        params,
        status,
        attempt: 1,
        source: Some("local".into()),
        exit_code: None,
        reason: None,
        pid: None,
        job_id: None,
        started_at: Some(1_000 + index as i64 * 10),
        finished_at: Some(1_000 + index as i64 * 10 + 100),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::value::Params;

    use crate::core::value::params_from as params;

    fn small_limits() -> Limits {
        Limits {
            max_rows: 20,
            best_per_metric: 3,
            max_failures: 4,
            ..LIMITS
        }
    }

    #[test]
    fn a_small_sweep_is_embedded_whole_with_its_columns() {
        let tasks = vec![
            task(
                1,
                TaskStatus::Completed,
                params(&[
                    ("lr", Value::Float(0.1)),
                    ("opt", Value::Str("adam".into())),
                ]),
            ),
            task(
                2,
                TaskStatus::Failed,
                params(&[("lr", Value::Int(1)), ("opt", Value::Str("sgd".into()))]),
            ),
        ];
        let mut metrics = BTreeMap::new();
        metrics.insert(1, BTreeMap::from([("loss".to_string(), 0.5)]));
        let input = ReportInput {
            sweep_id: "s".into(),
            generated_ms: 5_000,
            task_width: 3,
            tasks,
            metrics,
            ..ReportInput::default()
        };
        let report = build(&input, &LIMITS);
        assert_eq!(report.rows.idx, [1, 2]);
        assert_eq!(report.rows.status, [3, 4]);
        assert_eq!(report.params[0].kind, "num");
        assert_eq!(report.params[0].values, [Some(0.1), Some(1.0)]);
        assert_eq!(report.params[1].kind, "cat");
        assert_eq!(report.params[1].cats, ["adam", "sgd"]);
        assert_eq!(report.params[1].values, [Some(0.0), Some(1.0)]);
        assert_eq!(report.metrics[0].values, [Some(0.5), None]);
        assert!(report.metrics[0].lower_is_better);
        assert_eq!(report.summary.counts, [0, 0, 0, 1, 1, 0]);
        assert_eq!(report.summary.duration_ms, Some(1_120 - 1_010));
        assert_eq!(report.summary.sources, ["local"]);
        assert!(report.usage.is_empty(), "nothing measured, no columns");
        assert!(
            report.sources.is_empty(),
            "no attempt rows, no source figures"
        );
    }

    #[test]
    fn source_figures_come_from_the_attempts() {
        let attempt = |index: u64, attempt: u32, status| AttemptRow {
            index,
            attempt,
            source: Some("gpu".into()),
            status,
            started_at: Some(0),
            finished_at: Some(2_000),
            usage: Usage::default(),
        };
        let input = ReportInput {
            tasks: vec![task(1, TaskStatus::Completed, Params::new())],
            // A failed first attempt, then the one that completed.
            attempts: vec![
                attempt(1, 1, TaskStatus::Failed),
                attempt(1, 2, TaskStatus::Completed),
            ],
            ..ReportInput::default()
        };
        let report = build(&input, &LIMITS);
        assert_eq!(report.sources, stats::source_stats(&input.attempts));
        let json = serde_json::to_value(&report.sources).unwrap();
        // The keys report.js reads.
        assert_eq!(json[0]["source"], "gpu");
        assert_eq!(
            (json[0]["tasks"].as_u64(), json[0]["attempts"].as_u64()),
            (Some(1), Some(2))
        );
        assert_eq!(json[0]["median_s"], 2.0);
        assert!(json[0]["throughput_per_min"].is_number());
    }

    #[test]
    fn a_big_sweep_keeps_the_best_of_each_metric_both_ways_and_its_failures() {
        let n = 200u64;
        let tasks: Vec<TaskRow> = (1..=n)
            .map(|i| {
                let status = if i % 50 == 7 {
                    TaskStatus::Failed
                } else {
                    TaskStatus::Completed
                };
                task(i, status, params(&[("x", Value::Int(i as i64))]))
            })
            .collect();
        // loss falls with the index, except that task 100 is best.
        let metrics: BTreeMap<u64, BTreeMap<String, f64>> = (1..=n)
            .map(|i| {
                let loss = if i == 100 { -1.0 } else { (n - i) as f64 };
                (i, BTreeMap::from([("loss".to_string(), loss)]))
            })
            .collect();
        let limits = small_limits();
        let rows = select_rows(&tasks, &metrics, &["loss"], &limits);
        let indices: Vec<u64> = rows.iter().map(|&r| tasks[r].index).collect();
        assert_eq!(indices.len(), limits.max_rows, "{indices:?}");
        for must in [100, 200, 199, 1, 2, 3, 7, 57, 107, 157] {
            assert!(indices.contains(&must), "{must} missing from {indices:?}");
        }
        assert!(indices.windows(2).all(|w| w[0] < w[1]), "ascending");
    }

    #[test]
    fn failures_beyond_the_cap_are_spread_over_the_sweep() {
        let tasks: Vec<TaskRow> = (1..=100)
            .map(|i| task(i, TaskStatus::Failed, Params::new()))
            .collect();
        let limits = Limits {
            max_rows: 10,
            max_failures: 4,
            ..LIMITS
        };
        let rows = select_rows(&tasks, &BTreeMap::new(), &[], &limits);
        assert_eq!(rows.len(), 10);
        assert!(rows.contains(&0) && rows.contains(&25) && rows.contains(&75));
    }

    #[test]
    fn categories_hold_any_non_number_and_sort_numbers_as_numbers() {
        let col = param_column(
            "p",
            [
                Some(&Value::Str("10".into())),
                Some(&Value::Str("2".into())),
                None,
                Some(&Value::Bool(true)),
            ]
            .into_iter(),
        );
        assert_eq!(col.kind, "cat");
        assert_eq!(col.cats, ["2", "10", "true"]);
        assert_eq!(col.values, [Some(1.0), Some(0.0), None, Some(2.0)]);
    }

    #[test]
    fn the_most_common_names_are_kept_in_first_seen_order() {
        let names = ["b", "a", "c", "a", "c", "d", "c"];
        let (kept, left_out) = common_names(names.into_iter(), 2);
        assert_eq!(kept, ["a", "c"]);
        assert_eq!(left_out, 2);
        let (kept, left_out) = common_names(names.into_iter(), 10);
        assert_eq!(kept, ["b", "a", "c", "d"]);
        assert_eq!(left_out, 0);
    }

    #[test]
    fn direction_is_guessed_from_the_name() {
        assert!(lower_is_better("val_loss"));
        assert!(lower_is_better("Test/Error"));
        assert!(!lower_is_better("accuracy"));
        assert!(!lower_is_better("f1"));
    }

    #[test]
    fn error_groups_share_the_signatures_of_sweep_errors() {
        let params = |batch: i64, lr: f64| -> Params {
            [
                ("batch".to_string(), Value::Int(batch)),
                ("lr".to_string(), Value::Float(lr)),
            ]
            .into_iter()
            .collect()
        };
        let failed = |i: u64, reason: Option<&str>, p: Params| TaskRow {
            reason: reason.map(str::to_string),
            exit_code: Some(1),
            ..task(i, TaskStatus::Failed, p)
        };
        let tasks = vec![
            failed(
                1,
                Some("exit code 1: ValueError: bad value 3"),
                params(512, 0.1),
            ),
            failed(
                2,
                Some("exit code 1: ValueError: bad value 17"),
                params(512, 0.2),
            ),
            failed(3, None, params(64, 0.1)),
            task(4, TaskStatus::Completed, params(64, 0.2)),
            failed(
                5,
                Some("exit code 1: ValueError: bad value 4"),
                params(512, 0.3),
            ),
        ];
        let tails = HashMap::from([(
            2,
            "Traceback (most recent call last):\nValueError: bad value 17".to_string(),
        )]);
        let limits = Limits {
            examples_per_group: 2,
            max_error_groups: 1,
            ..LIMITS
        };
        let (groups, left_out) = error_groups(&tasks, &tails, None, &limits);
        assert_eq!(left_out, 1);
        assert_eq!(
            groups,
            [ErrorGroup {
                reason: "ValueError: bad value <n>".into(),
                count: 3,
                shared: Some("all 3 have batch=512".into()),
                examples: vec!["task_001".into(), "task_002".into()],
                tail: None,
                tail_of: Some("task_001".into()),
            }]
        );
    }

    #[test]
    fn the_histogram_goes_logarithmic_for_wide_spreads() {
        let timed = |i: u64, d: i64, status| TaskRow {
            started_at: Some(0),
            finished_at: Some(d),
            ..task(i, status, Params::new())
        };
        let narrow = [
            timed(1, 100, TaskStatus::Completed),
            timed(2, 200, TaskStatus::Failed),
        ];
        let h = histogram(&narrow, 4);
        assert!(!h.log);
        assert_eq!(h.edges, [100.0, 125.0, 150.0, 175.0, 200.0]);
        assert_eq!(
            (h.completed, h.failed),
            (vec![1, 0, 0, 0], vec![0, 0, 0, 1])
        );
        let wide = [
            timed(1, 10, TaskStatus::Completed),
            timed(2, 100_000, TaskStatus::Completed),
            timed(3, 1_000, TaskStatus::Cancelled),
        ];
        let h = histogram(&wide, 4);
        assert!(h.log);
        assert_eq!(h.completed, [1, 0, 0, 1]);
        assert_eq!(h.edges[2], 1_000.0);
        assert_eq!(histogram(&[], 4), Histogram::default());
    }

    #[test]
    fn the_timeline_bins_running_tasks_per_source() {
        let tasks = vec![
            TaskRow {
                started_at: Some(0),
                finished_at: Some(1_000),
                ..task(1, TaskStatus::Completed, Params::new())
            },
            TaskRow {
                started_at: Some(500),
                finished_at: Some(1_000),
                ..task(2, TaskStatus::Failed, Params::new())
            },
            TaskRow {
                source: Some("gpu".into()),
                started_at: Some(0),
                finished_at: Some(250),
                ..task(3, TaskStatus::Completed, Params::new())
            },
            TaskRow {
                started_at: None,
                finished_at: None,
                ..task(4, TaskStatus::Pending, Params::new())
            },
        ];
        let input = ReportInput {
            tasks,
            ..ReportInput::default()
        };
        let sources = source_names(&input.tasks);
        let limits = Limits {
            timeline_bins: 4,
            ..LIMITS
        };
        let t = timeline(&input.tasks, &sources, &input, &limits);
        assert_eq!(t.lanes, ["gpu", "local"]);
        assert_eq!((t.t0, t.span, t.started), (0, 1_000, 3));
        assert_eq!(t.running[0], [1.0, 0.0, 0.0, 0.0]);
        assert_eq!(t.running[1], [1.0, 1.0, 2.0, 2.0]);
        assert_eq!(t.failed[1], [0, 0, 0, 1]);
        assert_eq!(t.bars.as_ref().unwrap().idx, [1, 2, 3]);
        let few = Limits {
            max_bars: 2,
            ..limits
        };
        assert!(timeline(&input.tasks, &sources, &input, &few)
            .bars
            .is_none());
    }
}
