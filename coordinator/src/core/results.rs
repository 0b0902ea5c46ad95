//! The results table (`sweep results`): one row per task with its parameters, status, timing,
//! usage and last metric values; filtering (`--where 'lr>0.01'`), sorting by any column with a
//! direction guessed from the metric's name, `--top`, column choice, and rendering as an aligned
//! table, CSV (what pandas reads as it is), JSON or JSON lines.

use super::diag::did_you_mean;
use super::state::{TaskStatus, Usage};
use super::value::{Params, Value};
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// What one task contributes to the table.
#[derive(Debug, Clone)]
pub struct TaskResult {
    pub task_id: String,
    pub index: u64,
    pub status: TaskStatus,
    pub attempt: u32,
    pub source: Option<String>,
    /// Unix milliseconds.
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub usage: Usage,
    pub params: Params,
    pub metrics: BTreeMap<String, f64>,
    pub reason: Option<String>,
}

/// One cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Empty,
    Text(String),
    Int(i64),
    Num(f64),
    /// A parameter value (kept as a value so JSON output keeps its type).
    Param(Value),
}

impl Cell {
    fn number(&self) -> Option<f64> {
        match self {
            Cell::Int(i) => Some(*i as f64),
            Cell::Num(f) => Some(*f),
            Cell::Param(Value::Int(i)) => Some(*i as f64),
            Cell::Param(Value::Float(f)) => Some(*f),
            Cell::Param(Value::Bool(b)) => Some(f64::from(u8::from(*b))),
            _ => None,
        }
    }

    /// The cell as text, as the table and CSV show it.
    pub fn text(&self) -> String {
        match self {
            Cell::Empty => String::new(),
            Cell::Text(t) => t.clone(),
            Cell::Int(i) => i.to_string(),
            Cell::Num(f) => format_number(*f),
            Cell::Param(v) => value_text(v),
        }
    }

    fn json(&self) -> serde_json::Value {
        match self {
            Cell::Empty => serde_json::Value::Null,
            Cell::Text(t) => t.clone().into(),
            Cell::Int(i) => (*i).into(),
            Cell::Num(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or_else(|| format_number(*f).into()),
            Cell::Param(v) => serde_json::to_value(v).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// What a column holds; JSON output nests params and metrics under their own keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Fixed,
    Param,
    Metric,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The column's name in the table and CSV header.
    pub name: String,
    /// The param or metric name (differs from `name` when a metric shares a param's name and
    /// its column is `metric:NAME`).
    pub key: String,
    pub kind: Kind,
}

/// A comparison of `--where`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub column: String,
    pub op: Op,
    pub value: String,
}

/// Parses one `--where` condition: `NAME OP VALUE` with OP one of `<`, `<=`, `>`, `>=`, `=`,
/// `==`, `!=`; the value may be quoted.
pub fn parse_filter(text: &str) -> Result<Filter, String> {
    let ops: [(&str, Op); 7] = [
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("!=", Op::Ne),
        ("==", Op::Eq),
        ("<", Op::Lt),
        (">", Op::Gt),
        ("=", Op::Eq),
    ];
    let found = ops
        .iter()
        .filter_map(|&(sym, op)| text.find(sym).map(|at| (at, sym, op)))
        .min_by_key(|&(at, sym, _)| (at, std::cmp::Reverse(sym.len())));
    let Some((at, sym, op)) = found else {
        return Err(format!(
            "`{text}` has no comparison; write NAME OP VALUE with OP one of < <= > >= = != (e.g. 'lr>0.01')"
        ));
    };
    let column = text[..at].trim().to_string();
    let value = text[at + sym.len()..].trim();
    let value = value
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .or_else(|| value.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
        .unwrap_or(value)
        .to_string();
    if column.is_empty() {
        return Err(format!("`{text}` names no column before `{sym}`"));
    }
    // `lr>>1` or `lr=>1` would compare against the text `>1` and quietly keep no row.
    if let Some(extra) = value.chars().next().filter(|c| "<>=!".contains(*c)) {
        return Err(format!(
            "`{text}`: the value `{value}` starts with `{extra}`; write one comparison, e.g. '{column}{sym}{}'",
            value.trim_start_matches(['<', '>', '=', '!'])
        ));
    }
    Ok(Filter { column, op, value })
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Asc,
    Desc,
}

/// `--sort NAME[:asc|desc]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sort {
    pub column: String,
    /// `None`: guessed from the name (`higher_is_better`).
    pub direction: Option<Direction>,
}

pub fn parse_sort(text: &str) -> Result<Sort, String> {
    let (column, direction) = match text.rsplit_once(':') {
        Some((c, "asc")) => (c, Some(Direction::Asc)),
        Some((c, "desc")) => (c, Some(Direction::Desc)),
        Some((_, other)) => {
            return Err(format!(
                "`{text}`: the direction after `:` is `{other}`; write asc or desc (e.g. loss:asc)"
            ))
        }
        None => (text, None),
    };
    if column.trim().is_empty() {
        return Err("--sort needs a column name, e.g. --sort loss".into());
    }
    Ok(Sort {
        column: column.trim().to_string(),
        direction,
    })
}

/// Whether a larger value of this metric is the better one (accuracy, F1, reward, …), judged
/// by the words of its last dotted part; everything else (loss, error, time) sorts smallest
/// first.
pub fn higher_is_better(name: &str) -> bool {
    const BETTER: [&str; 16] = [
        "acc",
        "accuracy",
        "auc",
        "auroc",
        "f1",
        "precision",
        "recall",
        "score",
        "reward",
        "return",
        "r2",
        "map",
        "bleu",
        "rouge",
        "iou",
        "dice",
    ];
    let last = name.rsplit('.').next().unwrap_or(name).to_ascii_lowercase();
    last.split(|c: char| !c.is_ascii_alphanumeric())
        .any(|word| BETTER.contains(&word))
}

/// What the table should show.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub sort: Option<Sort>,
    pub top: Option<usize>,
    pub filters: Vec<Filter>,
    /// Only these columns, in this order (`task` is always first).
    pub columns: Option<Vec<String>>,
    /// The fixed columns of the aligned table only (JSON and CSV carry them all).
    pub compact: bool,
}

/// The built table, and how it was sorted (for the note on stderr).
#[derive(Debug, Clone)]
pub struct Table {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Cell>>,
    pub sorted: Option<(String, Direction)>,
    /// Tasks before `--where` and `--top`.
    pub total: usize,
}

const FIXED_FULL: [&str; 11] = [
    "task",
    "status",
    "attempt",
    "source",
    "started",
    "finished",
    "duration_s",
    "cpu_user_s",
    "cpu_sys_s",
    "max_rss_mb",
    "reason",
];
const FIXED_COMPACT_HEAD: [&str; 2] = ["task", "status"];
const FIXED_COMPACT_TAIL: [&str; 4] = ["duration_s", "cpu_s", "max_rss_mb", "source"];

fn fixed_cell(name: &str, task: &TaskResult) -> Cell {
    let secs = |ms: Option<u64>| ms.map_or(Cell::Empty, |ms| Cell::Num(ms as f64 / 1000.0));
    match name {
        "task" => Cell::Text(task.task_id.clone()),
        "index" => Cell::Int(task.index as i64),
        "status" => Cell::Text(task.status.as_str().to_string()),
        "attempt" => Cell::Int(i64::from(task.attempt)),
        "source" => task.source.clone().map_or(Cell::Empty, Cell::Text),
        "started" => task
            .started_at
            .map_or(Cell::Empty, |t| Cell::Text(super::time::format_utc(t))),
        "finished" => task
            .finished_at
            .map_or(Cell::Empty, |t| Cell::Text(super::time::format_utc(t))),
        "duration_s" => match (task.usage.wall_ms, task.started_at, task.finished_at) {
            (Some(ms), _, _) => secs(Some(ms)),
            (None, Some(s), Some(f)) if f >= s => secs(Some((f - s) as u64)),
            _ => Cell::Empty,
        },
        "cpu_user_s" => secs(task.usage.cpu_user_ms),
        "cpu_sys_s" => secs(task.usage.cpu_sys_ms),
        "cpu_s" => match (task.usage.cpu_user_ms, task.usage.cpu_sys_ms) {
            (None, None) => Cell::Empty,
            (u, s) => secs(Some(u.unwrap_or(0) + s.unwrap_or(0))),
        },
        "max_rss_mb" => task.usage.max_rss_kb.map_or(Cell::Empty, |kb| {
            Cell::Num((kb as f64 / 1024.0 * 10.0).round() / 10.0)
        }),
        "reason" => task.reason.clone().map_or(Cell::Empty, Cell::Text),
        _ => Cell::Empty,
    }
}

fn cell(column: &Column, task: &TaskResult) -> Cell {
    match column.kind {
        Kind::Fixed => fixed_cell(&column.key, task),
        Kind::Param => task
            .params
            .get(&column.key)
            .map_or(Cell::Empty, |v| Cell::Param(v.clone())),
        Kind::Metric => task
            .metrics
            .get(&column.key)
            .map_or(Cell::Empty, |&v| Cell::Num(v)),
    }
}

/// Every column the tasks have: fixed ones, then params in sweep order, then metrics by name.
fn all_columns(tasks: &[TaskResult], compact: bool) -> (Vec<Column>, Vec<Column>) {
    let mut params: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for task in tasks {
        for name in task.params.keys() {
            if seen.insert(name.clone()) {
                params.push(name.clone());
            }
        }
    }
    let metrics: std::collections::BTreeSet<&String> =
        tasks.iter().flat_map(|t| t.metrics.keys()).collect();
    let fixed = |name: &str| Column {
        name: name.to_string(),
        key: name.to_string(),
        kind: Kind::Fixed,
    };
    let param_set: std::collections::HashSet<&str> = params.iter().map(String::as_str).collect();
    let reserved = |n: &str| {
        param_set.contains(n)
            || FIXED_FULL.contains(&n)
            || FIXED_COMPACT_TAIL.contains(&n)
            || n == "index"
    };
    let param_columns = params.iter().map(|p| Column {
        name: if FIXED_FULL.contains(&p.as_str()) || FIXED_COMPACT_TAIL.contains(&p.as_str()) {
            format!("param:{p}")
        } else {
            p.clone()
        },
        key: p.clone(),
        kind: Kind::Param,
    });
    let metric_columns = metrics.iter().map(|m| Column {
        name: if reserved(m) {
            format!("metric:{m}")
        } else {
            (*m).clone()
        },
        key: (*m).clone(),
        kind: Kind::Metric,
    });
    let mut shown: Vec<Column> = Vec::new();
    if compact {
        shown.extend(FIXED_COMPACT_HEAD.iter().map(|n| fixed(n)));
        shown.extend(param_columns.clone());
        shown.extend(metric_columns.clone());
        shown.extend(FIXED_COMPACT_TAIL.iter().map(|n| fixed(n)));
    } else {
        shown.extend(FIXED_FULL.iter().map(|n| fixed(n)));
        shown.extend(param_columns.clone());
        shown.extend(metric_columns.clone());
    }
    // Every name a filter, sort or --columns may use.
    let mut known: Vec<Column> = FIXED_FULL.iter().map(|n| fixed(n)).collect();
    known.push(fixed("index"));
    known.push(fixed("cpu_s"));
    known.extend(param_columns);
    known.extend(metric_columns);
    (shown, known)
}

fn find<'a>(known: &'a [Column], name: &str, what: &str) -> Result<&'a Column, String> {
    if let Some(c) = known.iter().find(|c| c.name == name) {
        return Ok(c);
    }
    // A metric or param may also be named by its bare key.
    if let Some(c) = known
        .iter()
        .find(|c| c.key == name && c.kind != Kind::Fixed)
    {
        return Ok(c);
    }
    let names: Vec<&str> = known.iter().map(|c| c.name.as_str()).collect();
    // Also near a dotted name's last part: `acuracy` finds `val.accuracy`.
    let last_parts: Vec<&str> = names
        .iter()
        .map(|n| n.rsplit('.').next().unwrap_or(n))
        .collect();
    let hint = did_you_mean(name, &names)
        .or_else(|| {
            let part = did_you_mean(name, &last_parts)?;
            let at = last_parts.iter().position(|p| *p == part)?;
            Some(names[at])
        })
        .map(|n| format!(" — did you mean `{n}`?"))
        .unwrap_or_default();
    let metrics: Vec<&str> = known
        .iter()
        .filter(|c| c.kind == Kind::Metric)
        .map(|c| c.name.as_str())
        .collect();
    let listed = if metrics.is_empty() {
        "no task reported metrics".to_string()
    } else {
        format!("metrics: {}", metrics.join(", "))
    };
    Err(format!("{what}: no column `{name}`{hint} ({listed})"))
}

fn matches(cell: &Cell, filter: &Filter) -> bool {
    let ord = match (cell.number(), filter.value.parse::<f64>()) {
        (Some(a), Ok(b)) => a.partial_cmp(&b),
        _ if matches!(cell, Cell::Empty) => return filter.op == Op::Ne,
        _ => Some(cell.text().as_str().cmp(filter.value.as_str())),
    };
    let Some(ord) = ord else {
        // NaN compares unequal to everything.
        return filter.op == Op::Ne;
    };
    match filter.op {
        Op::Lt => ord == Ordering::Less,
        Op::Le => ord != Ordering::Greater,
        Op::Gt => ord == Ordering::Greater,
        Op::Ge => ord != Ordering::Less,
        Op::Eq => ord == Ordering::Equal,
        Op::Ne => ord != Ordering::Equal,
    }
}

/// Whether every task that has a value in this column has a number there (and one has).
fn holds_numbers(tasks: &[TaskResult], column: &Column) -> bool {
    let mut any = false;
    for task in tasks {
        match cell(column, task) {
            Cell::Empty => {}
            c if c.number().is_some() => any = true,
            _ => return false,
        }
    }
    any
}

/// Builds the table. Errors name the unknown column (with a suggestion) for exit code 2.
pub fn build(tasks: &[TaskResult], query: &Query) -> Result<Table, String> {
    let (shown, known) = all_columns(tasks, query.compact);
    let filters: Vec<(&Column, &Filter)> = query
        .filters
        .iter()
        .map(|f| find(&known, &f.column, "--where").map(|c| (c, f)))
        .collect::<Result<_, _>>()?;
    for (column, filter) in &filters {
        if filter.value.parse::<f64>().is_err() && holds_numbers(tasks, column) {
            return Err(format!(
                "--where: `{}` holds numbers and `{}` is not one (e.g. '{}>0.01')",
                column.name, filter.value, column.name
            ));
        }
    }
    if query.top == Some(0) {
        return Err("--top 0 keeps no row; give N of 1 or more".into());
    }
    let sort = match &query.sort {
        Some(sort) => {
            let column = find(&known, &sort.column, "--sort")?;
            let direction = sort.direction.unwrap_or(
                if column.kind == Kind::Metric && higher_is_better(&column.key) {
                    Direction::Desc
                } else {
                    Direction::Asc
                },
            );
            Some((column.clone(), direction))
        }
        None => None,
    };
    let columns: Vec<Column> = match &query.columns {
        Some(names) => {
            let mut out = vec![known[0].clone()];
            for name in names.iter().filter(|n| n.as_str() != "task") {
                out.push(find(&known, name, "--columns")?.clone());
            }
            out
        }
        None => shown,
    };
    let mut kept: Vec<&TaskResult> = tasks
        .iter()
        .filter(|t| filters.iter().all(|(c, f)| matches(&cell(c, t), f)))
        .collect();
    if let Some((column, direction)) = &sort {
        // Tasks without the value (or NaN) go last whichever the direction.
        kept.sort_by(|a, b| {
            let (x, y) = (cell(column, a), cell(column, b));
            let key = |c: &Cell| match c.number() {
                Some(n) if !n.is_nan() => Some(Ok(n)),
                Some(_) => None,
                None if matches!(c, Cell::Empty) => None,
                None => Some(Err(c.text())),
            };
            match (key(&x), key(&y)) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(p), Some(q)) => {
                    let ord = match (p, q) {
                        (Ok(p), Ok(q)) => p.total_cmp(&q),
                        (Ok(_), Err(_)) => Ordering::Less,
                        (Err(_), Ok(_)) => Ordering::Greater,
                        (Err(p), Err(q)) => p.cmp(&q),
                    };
                    if *direction == Direction::Desc {
                        ord.reverse()
                    } else {
                        ord
                    }
                }
            }
        });
    }
    if let Some(top) = query.top {
        kept.truncate(top);
    }
    let rows = kept
        .iter()
        .map(|t| columns.iter().map(|c| cell(c, t)).collect())
        .collect();
    Ok(Table {
        columns,
        rows,
        sorted: sort.map(|(c, d)| (c.name, d)),
        total: tasks.len(),
    })
}

/// A number as a person reads it: integers without a fraction, others with up to 6
/// significant digits, very large/small in exponent form.
pub fn format_number(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    if f == f.trunc() && f.abs() < 1e15 {
        return format!("{}", f as i64);
    }
    let abs = f.abs();
    if !(1e-4..1e9).contains(&abs) {
        let text = format!("{f:.5e}");
        let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
        let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
        return format!("{mantissa}e{exponent}");
    }
    let digits = 6 - (abs.log10().floor() as i32 + 1);
    let text = format!("{:.*}", digits.max(0) as usize, f);
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// A parameter value as text: strings bare, lists and maps as compact JSON.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => {
            let s = format!("{f}");
            if s.contains(['.', 'e', 'E', 'n', 'i']) {
                s
            } else {
                format!("{s}.0")
            }
        }
        Value::Str(s) => s.clone(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

fn is_numeric_column(table: &Table, i: usize) -> bool {
    table
        .rows
        .iter()
        .all(|r| r[i] == Cell::Empty || r[i].number().is_some())
}

/// The aligned table for a terminal: numbers right-aligned, a header and a rule; cells past
/// `max_cell` characters are cut with `…`.
pub fn render_table(table: &Table, max_cell: usize) -> String {
    let texts: Vec<Vec<String>> = table
        .rows
        .iter()
        .map(|r| {
            r.iter()
                .map(|c| {
                    let t = c.text().replace(['\n', '\r', '\t'], " ");
                    if t.chars().count() > max_cell {
                        let cut: String = t.chars().take(max_cell.saturating_sub(1)).collect();
                        format!("{cut}…")
                    } else {
                        t
                    }
                })
                .collect()
        })
        .collect();
    let widths: Vec<usize> = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            texts
                .iter()
                .map(|r| r[i].chars().count())
                .chain([c.name.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let numeric: Vec<bool> = (0..table.columns.len())
        .map(|i| is_numeric_column(table, i))
        .collect();
    let line = |cells: Vec<&str>| -> String {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let pad = widths[i].saturating_sub(t.chars().count());
                if numeric[i] {
                    format!("{}{t}", " ".repeat(pad))
                } else {
                    format!("{t}{}", " ".repeat(pad))
                }
            })
            .collect();
        format!("{}\n", parts.join("  ").trim_end())
    };
    let mut out = line(table.columns.iter().map(|c| c.name.as_str()).collect());
    out.push_str(&line(
        widths
            .iter()
            .map(|&w| "─".repeat(w))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    ));
    for row in &texts {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// CSV (RFC 4180): a header, then one line per row; empty cells for missing values, `nan`/`inf`
/// as pandas reads them.
pub fn render_csv(table: &Table) -> String {
    let quote = |t: &str| {
        if t.contains([',', '"', '\n', '\r']) || t.starts_with(' ') || t.ends_with(' ') {
            format!("\"{}\"", t.replace('"', "\"\""))
        } else {
            t.to_string()
        }
    };
    let mut out = table
        .columns
        .iter()
        .map(|c| quote(&c.name))
        .collect::<Vec<_>>()
        .join(",");
    out.push('\n');
    for row in &table.rows {
        out.push_str(
            &row.iter()
                .map(|c| quote(&c.text()))
                .collect::<Vec<_>>()
                .join(","),
        );
        out.push('\n');
    }
    out
}

/// One JSON object per row: fixed columns at the top level, `params` and `metrics` nested.
pub fn row_objects(table: &Table) -> Vec<serde_json::Value> {
    table
        .rows
        .iter()
        .map(|row| {
            let mut top = serde_json::Map::new();
            let mut params = serde_json::Map::new();
            let mut metrics = serde_json::Map::new();
            for (column, cell) in table.columns.iter().zip(row) {
                match column.kind {
                    Kind::Fixed => {
                        top.insert(column.name.clone(), cell.json());
                    }
                    Kind::Param if *cell != Cell::Empty => {
                        params.insert(column.key.clone(), cell.json());
                    }
                    Kind::Metric if *cell != Cell::Empty => {
                        metrics.insert(column.key.clone(), cell.json());
                    }
                    _ => {}
                }
            }
            top.insert("params".into(), params.into());
            top.insert("metrics".into(), metrics.into());
            serde_json::Value::Object(top)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(index: u64, lr: f64, opt: &str, loss: Option<f64>, acc: Option<f64>) -> TaskResult {
        let mut params = Params::new();
        params.insert("lr".into(), Value::Float(lr));
        params.insert("optimizer".into(), Value::Str(opt.into()));
        let mut metrics = BTreeMap::new();
        if let Some(l) = loss {
            metrics.insert("loss".to_string(), l);
        }
        if let Some(a) = acc {
            metrics.insert("val.acc".to_string(), a);
        }
        TaskResult {
            task_id: format!("task_{index:03}"),
            index,
            status: if loss.is_some() {
                TaskStatus::Completed
            } else {
                TaskStatus::Failed
            },
            attempt: 1,
            source: Some("local".into()),
            started_at: Some(1_000),
            finished_at: Some(3_500),
            usage: Usage {
                wall_ms: None,
                cpu_user_ms: Some(1_500),
                cpu_sys_ms: Some(100),
                max_rss_kb: Some(51_200),
                scheduler: None,
            },
            params,
            metrics,
            reason: loss
                .is_none()
                .then(|| "exit code 1: ValueError: bad".to_string()),
        }
    }

    fn tasks() -> Vec<TaskResult> {
        vec![
            task(1, 0.1, "adam", Some(0.5), Some(0.7)),
            task(2, 0.01, "sgd", Some(0.2), Some(0.9)),
            task(3, 0.001, "adam", None, None),
            task(4, 0.01, "adam", Some(0.3), Some(0.8)),
        ]
    }

    fn ids(table: &Table) -> Vec<String> {
        table.rows.iter().map(|r| r[0].text()).collect()
    }

    #[test]
    fn sort_by_loss_puts_the_lowest_first_and_missing_last() {
        let query = Query {
            sort: Some(parse_sort("loss").unwrap()),
            ..Query::default()
        };
        let table = build(&tasks(), &query).unwrap();
        assert_eq!(
            ids(&table),
            ["task_002", "task_004", "task_001", "task_003"]
        );
        assert_eq!(table.sorted, Some(("loss".into(), Direction::Asc)));
    }

    #[test]
    fn accuracy_sorts_highest_first_unless_told() {
        let query = Query {
            sort: Some(parse_sort("val.acc").unwrap()),
            top: Some(2),
            ..Query::default()
        };
        assert_eq!(
            ids(&build(&tasks(), &query).unwrap()),
            ["task_002", "task_004"]
        );
        let query = Query {
            sort: Some(parse_sort("val.acc:asc").unwrap()),
            top: Some(1),
            ..Query::default()
        };
        assert_eq!(ids(&build(&tasks(), &query).unwrap()), ["task_001"]);
        assert!(higher_is_better("test_accuracy"));
        assert!(higher_is_better("eval.f1"));
        assert!(!higher_is_better("val.loss"));
        assert!(!higher_is_better("accumulated_time"));
    }

    #[test]
    fn filters_compare_numbers_as_numbers_and_text_as_text() {
        let query = |w: &[&str]| Query {
            filters: w.iter().map(|f| parse_filter(f).unwrap()).collect(),
            ..Query::default()
        };
        let t = tasks();
        assert_eq!(
            ids(&build(&t, &query(&["lr>0.005"])).unwrap()),
            ["task_001", "task_002", "task_004"]
        );
        assert_eq!(
            ids(&build(&t, &query(&["lr>=0.01", "optimizer='adam'"])).unwrap()),
            ["task_001", "task_004"]
        );
        assert_eq!(
            ids(&build(&t, &query(&["status!=completed"])).unwrap()),
            ["task_003"]
        );
        assert_eq!(
            ids(&build(&t, &query(&["loss<0.4"])).unwrap()),
            ["task_002", "task_004"]
        );
        assert_eq!(
            ids(&build(&t, &query(&["loss!=0.2"])).unwrap()),
            ["task_001", "task_003", "task_004"]
        );
    }

    #[test]
    fn mistyped_conditions_and_top_zero_are_errors_not_empty_tables() {
        let err = parse_filter("lr>>1").unwrap_err();
        assert!(
            err.contains("starts with `>`") && err.contains("'lr>1'"),
            "{err}"
        );
        assert!(parse_filter("lr=>1").is_err());
        assert_eq!(parse_filter("lr>=1").unwrap().op, Op::Ge);
        let query = |w: &str| Query {
            filters: vec![parse_filter(w).unwrap()],
            ..Query::default()
        };
        let err = build(&tasks(), &query("lr>abc")).unwrap_err();
        assert!(
            err.contains("`lr` holds numbers and `abc` is not one"),
            "{err}"
        );
        // Text columns still compare as text; NaN is a number.
        assert_eq!(
            ids(&build(&tasks(), &query("optimizer>b")).unwrap()),
            ["task_002"]
        );
        assert!(build(&tasks(), &query("loss!=nan")).is_ok());
        let top0 = Query {
            top: Some(0),
            ..Query::default()
        };
        assert!(build(&tasks(), &top0).unwrap_err().contains("--top 0"));
    }

    #[test]
    fn unknown_names_are_named_with_a_suggestion() {
        let query = Query {
            sort: Some(parse_sort("los").unwrap()),
            ..Query::default()
        };
        let err = build(&tasks(), &query).unwrap_err();
        assert!(err.contains("no column `los`"), "{err}");
        assert!(err.contains("did you mean `loss`"), "{err}");
        assert!(err.contains("metrics: loss, val.acc"), "{err}");
        assert!(parse_filter("lr").unwrap_err().contains("no comparison"));
        // Near the last part of a dotted name.
        let query = Query {
            sort: Some(parse_sort("vacc").unwrap()),
            ..Query::default()
        };
        let err = build(&tasks(), &query).unwrap_err();
        assert!(err.contains("did you mean `val.acc`"), "{err}");
        assert!(parse_sort("loss:up").unwrap_err().contains("asc or desc"));
    }

    #[test]
    fn csv_has_a_header_quotes_what_needs_it_and_leaves_missing_empty() {
        let query = Query {
            columns: Some(vec![
                "status".into(),
                "lr".into(),
                "loss".into(),
                "reason".into(),
            ]),
            ..Query::default()
        };
        let csv = render_csv(&build(&tasks(), &query).unwrap());
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "task,status,lr,loss,reason");
        assert_eq!(lines[1], "task_001,completed,0.1,0.5,");
        assert_eq!(
            lines[3],
            "task_003,failed,0.001,,exit code 1: ValueError: bad"
        );
        let mut quoted = tasks();
        quoted[0].reason = Some("a, \"b\"".into());
        let csv = render_csv(&build(&quoted, &query).unwrap());
        assert!(
            csv.lines().nth(1).unwrap().ends_with(",\"a, \"\"b\"\"\""),
            "{csv}"
        );
    }

    #[test]
    fn json_rows_nest_params_and_metrics_with_their_types() {
        let table = build(&tasks(), &Query::default()).unwrap();
        let rows = row_objects(&table);
        assert_eq!(rows[0]["params"]["lr"], serde_json::json!(0.1));
        assert_eq!(rows[0]["params"]["optimizer"], serde_json::json!("adam"));
        assert_eq!(rows[0]["metrics"]["val.acc"], serde_json::json!(0.7));
        assert_eq!(rows[0]["duration_s"], serde_json::json!(2.5));
        assert_eq!(rows[0]["cpu_user_s"], serde_json::json!(1.5));
        assert_eq!(rows[0]["max_rss_mb"], serde_json::json!(50.0));
        assert!(rows[2]["metrics"].as_object().unwrap().is_empty());
    }

    #[test]
    fn the_terminal_table_aligns_numbers_right() {
        let query = Query {
            compact: true,
            columns: Some(vec!["loss".into(), "optimizer".into()]),
            ..Query::default()
        };
        let text = render_table(&build(&tasks(), &query).unwrap(), 40);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "task      loss  optimizer");
        assert_eq!(lines[2], "task_001   0.5  adam");
        assert_eq!(lines[4], "task_003        adam");
    }

    #[test]
    fn a_metric_named_like_a_param_gets_its_own_column() {
        let mut t = tasks();
        t[0].metrics.insert("lr".into(), 0.05);
        let table = build(&t, &Query::default()).unwrap();
        let names: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
        assert!(
            names.contains(&"lr") && names.contains(&"metric:lr"),
            "{names:?}"
        );
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(format_number(0.123456789), "0.123457");
        assert_eq!(format_number(12.5), "12.5");
        assert_eq!(format_number(3.0), "3");
        assert_eq!(format_number(1234567.891), "1234568");
        assert_eq!(format_number(0.00001234), "1.234e-5");
        assert_eq!(format_number(f64::NAN), "nan");
    }
}
