//! The sweep file (`sweep.yaml`): validation into a [`SweepSpec`], counting its tasks without
//! materialising them, and lazy expansion of the tasks in task order.
//!
//! A sweep is modelled as an ordered list of *dimensions*: every grid key is one dimension, every
//! paired list item is one dimension whose rows are the zipped tuples, and the random block is one
//! dimension of `n` samples drawn once at parse time. Tasks are the odometer over the dimensions
//! (last dimension fastest) minus the combinations an `exclude` rule matches. Counting works on the
//! dimensions too, so `--count-only` on 10^7 tasks never enumerates them.
//!
//! Values are made only once the whole file is read and within [`MAX_TOTAL_VALUES`]: each
//! dimension is first a plan (literal values, or a generator's arguments) that knows its length.

use crate::core::diag::{did_you_mean, Problem};
use crate::core::value::{Params, Value};
use crate::yaml::{self, Node, Pos, Spanned};
use indexmap::IndexMap;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

/// The most values one generator or one `random.n` may produce. A typo such as
/// `range: [0, 1.0e9]` would otherwise exhaust memory long before the sweep could run.
const MAX_VALUES: u64 = 1_000_000;

/// The most values a whole sweep may make: every grid and paired parameter's values and every
/// random sample (n × parameters) together. One generator is capped by [`MAX_VALUES`], but twenty
/// `{range: [0, 1000000]}` (a 685-byte file) made 20 million values, over 2 GiB, before a count
/// could refuse them. Ten million is far past any sweep that runs (a sweep holds 20 million
/// tasks, and any two parameters of 10 values multiply instead of add). Lengths are known before
/// anything is made, so a file over it costs no memory; one at it takes ~1.1 GB.
pub const MAX_TOTAL_VALUES: u64 = 10_000_000;

/// Inclusion–exclusion visits up to 2^rules subsets; beyond this many rules we count by
/// enumerating classes of rows instead.
const MAX_INCLUSION_EXCLUSION_RULES: usize = 12;

const SECTIONS: [&str; 4] = ["grid", "paired", "random", "exclude"];
const TOP_LEVEL_ONLY: [&str; 4] = ["script", "metadata", "defaults", "layout"];
const TOP_LEVEL_KEYS: [&str; 9] = [
    "sweep", "grid", "paired", "random", "exclude", "script", "metadata", "defaults", "layout",
];
const GENERATORS: [&str; 3] = ["range", "linspace", "logspace"];
const DISTRIBUTIONS: [&str; 4] = ["uniform", "loguniform", "choice", "randint"];
const RANDOM_KEYS: [&str; 3] = ["n", "seed", "params"];

/// A validated sweep file.
#[derive(Debug, Clone)]
pub struct SweepFile {
    /// What to run: the combinations of parameters.
    pub spec: SweepSpec,
    /// `script:`, the per-sweep script that overrides the project config.
    pub script: Option<String>,
    /// `metadata:`, kept as written for reports (absent or null is `None`).
    pub metadata: Option<Value>,
    /// `defaults:`, Hydra's list; kept as written and otherwise unused (absent or null is `None`).
    pub defaults: Option<Value>,
    /// `layout:`, which per-task files the sweep keeps (`auto` when absent).
    pub layout: crate::core::task_layout::LayoutChoice,
}

/// The expanded shape of a sweep: dimensions, exclude rules and the task count.
#[derive(Debug, Clone)]
pub struct SweepSpec {
    dims: Vec<Dimension>,
    rules: Vec<Rule>,
    /// Computed once when the spec is built, so `count()` is free however often it is asked.
    count: TaskCount,
}

/// How many tasks a sweep has. Past `u64` only that is known: a saturated count printed as
/// 18446744073709551615 "tasks", a number nobody wrote and no sweep has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskCount {
    Exact(u64),
    /// 2^64 or more.
    TooMany,
}

impl TaskCount {
    fn of(n: u128) -> TaskCount {
        u64::try_from(n).map_or(TaskCount::TooMany, TaskCount::Exact)
    }

    /// The count, when it fits in a `u64`.
    pub fn exact(self) -> Option<u64> {
        match self {
            TaskCount::Exact(n) => Some(n),
            TaskCount::TooMany => None,
        }
    }
}

/// The number, or "2^64 or more": what messages say where a count is shown.
impl std::fmt::Display for TaskCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskCount::Exact(n) => write!(f, "{n}"),
            TaskCount::TooMany => f.write_str("2^64 or more"),
        }
    }
}

impl PartialEq<u64> for TaskCount {
    fn eq(&self, other: &u64) -> bool {
        *self == TaskCount::Exact(*other)
    }
}

/// One axis of the odometer: the parameters it sets and its rows (one value per parameter).
#[derive(Debug, Clone)]
struct Dimension {
    names: Vec<String>,
    rows: Vec<Vec<Value>>,
}

/// A dimension before its values are made (see [`MAX_TOTAL_VALUES`]).
struct Planned {
    names: Vec<String>,
    rows: PlannedRows,
}

enum PlannedRows {
    /// One column per name, all of one length, zipped into rows (a grid key has one column).
    Zipped(Vec<Column>),
    /// `n` rows, each one sample of every distribution, drawn in order from `seed`.
    Random {
        n: u64,
        seed: u64,
        distributions: Vec<Distribution>,
    },
}

/// One parameter's values: written out, or a generator's that are made on demand.
enum Column {
    Listed(Vec<Value>),
    IntRange {
        start: i128,
        step: i128,
        count: usize,
    },
    FloatRange {
        start: f64,
        step: f64,
        scale: f64,
        count: usize,
    },
    Linspace(f64, f64, usize),
    Logspace(f64, f64, usize),
}

impl Column {
    fn len(&self) -> usize {
        match self {
            Column::Listed(values) => values.len(),
            Column::IntRange { count, .. } | Column::FloatRange { count, .. } => *count,
            Column::Linspace(_, _, n) | Column::Logspace(_, _, n) => *n,
        }
    }

    fn make(self) -> Vec<Value> {
        match self {
            Column::Listed(values) => values,
            Column::IntRange { start, step, count } => (0..count as i128)
                .filter_map(|i| i64::try_from(start + i * step).ok())
                .map(Value::Int)
                .collect(),
            Column::FloatRange {
                start,
                step,
                scale,
                count,
            } => (0..count)
                .map(|i| Value::Float(round12(start + i as f64 * step, scale)))
                .collect(),
            Column::Linspace(a, b, n) => linspace(a, b, n),
            Column::Logspace(a, b, n) => logspace(a, b, n),
        }
    }
}

impl Planned {
    /// How many values making it takes.
    fn values(&self) -> u64 {
        match &self.rows {
            PlannedRows::Zipped(columns) => columns.iter().map(|c| c.len() as u64).sum(),
            PlannedRows::Random {
                n, distributions, ..
            } => n.saturating_mul(distributions.len() as u64),
        }
    }

    fn make(self) -> Dimension {
        let rows = match self.rows {
            PlannedRows::Zipped(columns) => {
                let (len, width) = (columns.first().map_or(0, Column::len), columns.len());
                let mut columns: Vec<_> =
                    columns.into_iter().map(|c| c.make().into_iter()).collect();
                // Sized rows: collecting through `filter_map` gave every one-value row room for
                // four, 3.3 GB instead of 1.2 GB at the limit of ten million values.
                (0..len)
                    .map(|_| {
                        let mut row = Vec::with_capacity(width);
                        row.extend(columns.iter_mut().filter_map(Iterator::next));
                        row
                    })
                    .collect()
            }
            PlannedRows::Random {
                n,
                seed,
                distributions,
            } => {
                let mut rng = SplitMix64::new(seed);
                (0..n)
                    .map(|_| distributions.iter().map(|d| d.sample(&mut rng)).collect())
                    .collect()
            }
        };
        Dimension {
            names: self.names,
            rows,
        }
    }
}

/// One `exclude` item: a combination is dropped when every constraint matches.
#[derive(Debug, Clone)]
struct Rule {
    constraints: Vec<Constraint>,
}

/// `parameter == value`, with the parameter resolved to its dimension and column.
#[derive(Debug, Clone)]
struct Constraint {
    dim: usize,
    column: usize,
    value: Value,
}

impl Rule {
    /// Whether `row` of dimension `dim` satisfies this rule's constraints on that dimension
    /// (true when the rule says nothing about it).
    fn matches_row(&self, dim: usize, row: &[Value]) -> bool {
        self.constraints
            .iter()
            .filter(|c| c.dim == dim)
            .all(|c| row.get(c.column).is_some_and(|v| v.matches(&c.value)))
    }

    fn matches_combination(&self, dims: &[Dimension], odometer: &[usize]) -> bool {
        self.constraints.iter().all(|c| {
            let row = dims
                .get(c.dim)
                .zip(odometer.get(c.dim))
                .and_then(|(dim, &row)| dim.rows.get(row));
            row.and_then(|row| row.get(c.column))
                .is_some_and(|v| v.matches(&c.value))
        })
    }

    /// The dimensions this rule constrains, ascending, without repeats.
    fn dims(&self) -> Vec<usize> {
        let mut dims: Vec<usize> = self.constraints.iter().map(|c| c.dim).collect();
        dims.sort_unstable();
        dims.dedup();
        dims
    }
}

impl SweepSpec {
    fn new(dims: Vec<Dimension>, rules: Vec<Rule>) -> Self {
        let count = count_tasks(&dims, &rules);
        SweepSpec { dims, rules, count }
    }

    /// Number of tasks after `exclude`, computed without materialising combinations.
    pub fn count(&self) -> TaskCount {
        self.count
    }

    /// Tasks in order (task k is the k-th item, 1-based); excluded combinations are skipped.
    /// Lazy: one combination is built at a time.
    pub fn iter(&self) -> impl Iterator<Item = Params> + '_ {
        let any_empty = self.dims.iter().any(|d| d.rows.is_empty());
        Tasks {
            spec: self,
            odometer: (!any_empty).then(|| vec![0; self.dims.len()]),
        }
    }

    /// All parameter names in task order (grid keys, then paired keys, then random keys).
    pub fn parameter_names(&self) -> Vec<String> {
        self.dims
            .iter()
            .flat_map(|d| d.names.iter().cloned())
            .collect()
    }
}

/// The odometer over dimensions; `None` once every combination has been visited.
struct Tasks<'a> {
    spec: &'a SweepSpec,
    odometer: Option<Vec<usize>>,
}

impl Iterator for Tasks<'_> {
    type Item = Params;

    fn next(&mut self) -> Option<Params> {
        let spec = self.spec;
        loop {
            let odometer = self.odometer.as_mut()?;
            let excluded = spec
                .rules
                .iter()
                .any(|rule| rule.matches_combination(&spec.dims, odometer));
            let params = (!excluded).then(|| build_params(&spec.dims, odometer));
            if !advance(&spec.dims, odometer) {
                self.odometer = None;
            }
            if let Some(params) = params {
                return Some(params);
            }
        }
    }
}

fn build_params(dims: &[Dimension], odometer: &[usize]) -> Params {
    let mut params = Params::new();
    for (dim, &row) in dims.iter().zip(odometer) {
        if let Some(row) = dim.rows.get(row) {
            for (name, value) in dim.names.iter().zip(row) {
                params.insert(name.clone(), value.clone());
            }
        }
    }
    params
}

/// Moves the odometer one step, last dimension fastest. False when it wrapped past the end.
fn advance(dims: &[Dimension], odometer: &mut [usize]) -> bool {
    for (dim, position) in dims.iter().zip(odometer.iter_mut()).rev() {
        *position += 1;
        if *position < dim.rows.len() {
            return true;
        }
        *position = 0;
    }
    false
}

mod count;
mod generators;
mod parse;
mod sections;
#[cfg(test)]
mod tests;

use count::*;
use generators::*;
use parse::*;
pub use parse::{load_sweep_text, parse_sweep};
