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
const TOP_LEVEL_ONLY: [&str; 3] = ["script", "metadata", "defaults"];
const TOP_LEVEL_KEYS: [&str; 8] = [
    "sweep", "grid", "paired", "random", "exclude", "script", "metadata", "defaults",
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

// ---------------------------------------------------------------------------------------------
// Counting

fn count_tasks(dims: &[Dimension], rules: &[Rule]) -> TaskCount {
    let Some(total) = dims
        .iter()
        .try_fold(1u128, |acc, d| acc.checked_mul(d.rows.len() as u128))
    else {
        // More than 2^128 combinations: no answer we give could be run anyway, so say "too
        // many" rather than reason about what `exclude` removes.
        return TaskCount::TooMany;
    };
    if rules.is_empty() || total == 0 {
        return TaskCount::of(total);
    }
    let by_subsets = if rules.len() <= MAX_INCLUSION_EXCLUSION_RULES {
        excluded_by_inclusion_exclusion(dims, rules)
    } else {
        None
    };
    let excluded = by_subsets.unwrap_or_else(|| excluded_by_classes(dims, rules));
    TaskCount::of(total.saturating_sub(excluded))
}

/// Dimension → the rows (ascending) that every rule of the current subset matches there;
/// dimensions no rule of the subset constrains are absent. Shared through `Rc` because each
/// subset extends its parent's sets in only a few dimensions.
type RowSets = BTreeMap<usize, Rc<Vec<usize>>>;

/// For one rule: (dimension, rows it matches there) for each dimension it constrains.
type RuleRows = Vec<(usize, Rc<Vec<usize>>)>;

/// For each dimension a rule constrains: the rows of that dimension the rule matches, ascending.
fn matching_rows(dims: &[Dimension], rule: &Rule) -> RuleRows {
    rule.dims()
        .into_iter()
        .map(|d| {
            let rows = dims.get(d).map_or(Vec::new(), |dim| {
                (0..dim.rows.len())
                    .filter(|&r| rule.matches_row(d, &dim.rows[r]))
                    .collect()
            });
            (d, Rc::new(rows))
        })
        .collect()
}

fn intersect(a: &[usize], b: &[usize]) -> Vec<usize> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// |union of rules| by inclusion–exclusion: the combinations matching a set of rules are the
/// product over dimensions of the rows matching all of them there. A subset whose intersection is
/// empty is pruned with all its supersets. `None` when a partial sum overflows u128.
fn excluded_by_inclusion_exclusion(dims: &[Dimension], rules: &[Rule]) -> Option<u128> {
    let per_rule: Vec<_> = rules.iter().map(|r| matching_rows(dims, r)).collect();
    // sums[1] collects odd-sized subsets (added), sums[0] even-sized ones (subtracted).
    let mut sums = [0u128; 2];
    visit_subsets(dims, &per_rule, 0, &BTreeMap::new(), 1, &mut sums)?;
    sums[1].checked_sub(sums[0])
}

fn visit_subsets(
    dims: &[Dimension],
    per_rule: &[RuleRows],
    start: usize,
    state: &RowSets,
    depth: usize,
    sums: &mut [u128; 2],
) -> Option<()> {
    for (r, rule_rows) in per_rule.iter().enumerate().skip(start) {
        let mut next = state.clone();
        let mut empty = false;
        for (d, rows) in rule_rows {
            let merged = match next.get(d) {
                Some(current) => Rc::new(intersect(current, rows)),
                None => Rc::clone(rows),
            };
            if merged.is_empty() {
                empty = true;
                break;
            }
            next.insert(*d, merged);
        }
        if empty {
            continue;
        }
        let term = dims.iter().enumerate().try_fold(1u128, |acc, (d, dim)| {
            let rows = next.get(&d).map_or(dim.rows.len(), |rows| rows.len());
            acc.checked_mul(rows as u128)
        })?;
        sums[depth % 2] = sums[depth % 2].checked_add(term)?;
        visit_subsets(dims, per_rule, r + 1, &next, depth + 1, sums)?;
    }
    Some(())
}

/// One constrained dimension, with its rows grouped by which rules they satisfy there.
struct Level {
    /// (bitset of rules satisfied on this dimension, number of rows with exactly that set).
    /// Rows satisfying no rule are left out: no combination through them is excluded.
    classes: Vec<(Vec<u64>, u128)>,
    /// Rules whose last constrained dimension is this one.
    finished: Vec<u64>,
    /// Rows of all later levels multiplied together.
    rows_after: u128,
}

/// |union of rules| by enumerating the product of row classes over the dimensions rules touch.
/// Rows of one dimension that satisfy the same set of rules are interchangeable, so the product
/// is over classes (usually a handful per dimension), not rows; unconstrained dimensions only
/// multiply the result. Used when there are too many rules for inclusion–exclusion.
fn excluded_by_classes(dims: &[Dimension], rules: &[Rule]) -> u128 {
    let words = rules.len().div_ceil(64);
    let mut all_rules = vec![u64::MAX; words];
    if !rules.len().is_multiple_of(64) {
        if let Some(last) = all_rules.last_mut() {
            *last = (1u64 << (rules.len() % 64)) - 1;
        }
    }
    let mut rules_of_dim: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (r, rule) in rules.iter().enumerate() {
        for d in rule.dims() {
            rules_of_dim.entry(d).or_default().push(r);
        }
    }
    let mut levels = Vec::new();
    let mut sizes = Vec::new();
    for (&d, rule_ids) in &rules_of_dim {
        let Some(dim) = dims.get(d) else { continue };
        let mut classes: BTreeMap<Vec<u64>, u128> = BTreeMap::new();
        for row in &dim.rows {
            let mut signature = all_rules.clone();
            for &r in rule_ids {
                if !rules[r].matches_row(d, row) {
                    signature[r / 64] &= !(1u64 << (r % 64));
                }
            }
            if signature.iter().any(|w| *w != 0) {
                *classes.entry(signature).or_default() += 1;
            }
        }
        levels.push(Level {
            classes: classes.into_iter().collect(),
            finished: vec![0; words],
            rows_after: 1,
        });
        sizes.push(dim.rows.len() as u128);
    }
    let level_of_dim: HashMap<usize, usize> = rules_of_dim
        .keys()
        .enumerate()
        .map(|(level, &d)| (d, level))
        .collect();
    for (r, rule) in rules.iter().enumerate() {
        let last = rule
            .dims()
            .iter()
            .filter_map(|d| level_of_dim.get(d))
            .max()
            .copied();
        if let Some(level) = last.and_then(|l| levels.get_mut(l)) {
            level.finished[r / 64] |= 1u64 << (r % 64);
        }
    }
    let mut after = 1u128;
    for (level, size) in levels.iter_mut().zip(&sizes).rev() {
        level.rows_after = after;
        after = after.saturating_mul(*size);
    }
    let free = dims
        .iter()
        .enumerate()
        .filter(|(d, _)| !rules_of_dim.contains_key(d))
        .fold(1u128, |acc, (_, dim)| {
            acc.saturating_mul(dim.rows.len() as u128)
        });
    visit_classes(&levels, 0, &all_rules, 1).saturating_mul(free)
}

/// Excluded combinations below `level`, given the rules still alive (`alive`) and the number of
/// row combinations of earlier levels leading here (`weight`).
fn visit_classes(levels: &[Level], level: usize, alive: &[u64], weight: u128) -> u128 {
    let Some(current) = levels.get(level) else {
        return weight;
    };
    let mut sum = 0u128;
    for (signature, rows) in &current.classes {
        let next: Vec<u64> = alive.iter().zip(signature).map(|(a, s)| a & s).collect();
        if next.iter().all(|w| *w == 0) {
            continue;
        }
        let weight = weight.saturating_mul(*rows);
        let done = next.iter().zip(&current.finished).any(|(a, f)| a & f != 0);
        let excluded = if done {
            // A rule matched on all its dimensions: every continuation is excluded.
            weight.saturating_mul(current.rows_after)
        } else {
            visit_classes(levels, level + 1, &next, weight)
        };
        sum = sum.saturating_add(excluded);
    }
    sum
}

// ---------------------------------------------------------------------------------------------
// Parsing and validation

/// Parses and validates a sweep document. Collects every problem before returning.
pub fn parse_sweep(root: Option<&Spanned>) -> Result<SweepFile, Vec<Problem>> {
    let mut builder = Builder::default();
    let mut sections = Sections::default();
    let mut script = None;
    let mut metadata = None;
    let mut defaults = None;
    match root.map(|r| (r, &r.node)) {
        None | Some((_, Node::Null)) => {}
        Some((_, Node::Map(entries))) => {
            let mut wrapper = None;
            let mut outside = Vec::new();
            for (key, value) in entries {
                match key.as_str() {
                    Some("sweep") => wrapper = Some(value),
                    Some(name) if SECTIONS.contains(&name) => outside.push((key, value)),
                    Some("script") => match &value.node {
                        Node::Str(s) => script = Some(s.clone()),
                        Node::Null => {}
                        other => builder.report(
                            key.pos,
                            "script",
                            format!("expected the path of a script, got {}", other.kind()),
                            Some("e.g. script: scripts/train.py".into()),
                        ),
                    },
                    Some("metadata") => metadata = kept_value(value),
                    Some("defaults") => defaults = kept_value(value),
                    _ => builder.unknown_key(key, "", &TOP_LEVEL_KEYS),
                }
            }
            match wrapper {
                Some(wrapper) => {
                    for (key, _) in &outside {
                        let name = key.key_text();
                        builder.report(
                            key.pos,
                            &name,
                            format!("`{name}` is written at the top level while a `sweep:` section exists"),
                            Some(format!("move `{name}:` under `sweep:`")),
                        );
                    }
                    builder.collect_wrapped(wrapper, &mut sections);
                }
                None => {
                    for (key, value) in outside {
                        sections.set(key, value);
                    }
                }
            }
        }
        Some((root, other)) => builder.report(
            root.pos,
            "",
            format!(
                "expected a mapping at the top of the sweep file, got {}",
                other.kind()
            ),
            Some("e.g. sweep: {grid: {lr: [0.1, 0.01]}}".into()),
        ),
    }
    if let Some((key, value)) = sections.grid {
        builder.parse_grid(key, value);
    }
    if let Some((key, value)) = sections.paired {
        builder.parse_paired(key, value);
    }
    if let Some((key, value)) = sections.random {
        builder.parse_random(key, value);
    }
    let rules = match sections.exclude {
        Some((key, value)) => builder.parse_exclude(key, value),
        None => Vec::new(),
    };
    if let Some(over) = builder.over_budget.take() {
        builder.report(
            over.pos,
            &over.path,
            format!(
                "the parameters of this sweep have {} values in all, more than the limit of \
                 {MAX_TOTAL_VALUES}; `{}` here is where the total passes it",
                builder.total_values, over.name
            ),
            Some(format!(
                "use fewer or smaller generators (each makes at most {MAX_VALUES} values): a \
                 sweep this large could not be stored or run"
            )),
        );
    }
    if !builder.problems.is_empty() {
        // Reading order: sections are checked one after another, but the user fixes the file top
        // to bottom. The sort is stable, so problems at one place keep the order found.
        let mut problems = builder.problems;
        problems.sort_by_key(|p| p.pos.map(|pos| (pos.line, pos.col)));
        return Err(problems);
    }
    let dims = builder.planned.into_iter().map(Planned::make).collect();
    Ok(SweepFile {
        spec: SweepSpec::new(dims, rules),
        script,
        metadata,
        defaults,
    })
}

/// YAML text → [`SweepFile`]; a YAML syntax error becomes one problem with its position.
pub fn load_sweep_text(text: &str) -> Result<SweepFile, Vec<Problem>> {
    match yaml::parse(text) {
        Ok(root) => parse_sweep(root.as_ref()),
        Err(error) => Err(vec![error.problem()]),
    }
}

fn kept_value(node: &Spanned) -> Option<Value> {
    match node.node {
        Node::Null => None,
        _ => Some(Value::from_node(node)),
    }
}

/// The four sweep sections as (key, value), wherever they were written.
#[derive(Default)]
struct Sections<'a> {
    grid: Option<(&'a Spanned, &'a Spanned)>,
    paired: Option<(&'a Spanned, &'a Spanned)>,
    random: Option<(&'a Spanned, &'a Spanned)>,
    exclude: Option<(&'a Spanned, &'a Spanned)>,
}

impl<'a> Sections<'a> {
    fn set(&mut self, key: &'a Spanned, value: &'a Spanned) {
        let slot = match key.as_str() {
            Some("grid") => &mut self.grid,
            Some("paired") => &mut self.paired,
            Some("random") => &mut self.random,
            Some("exclude") => &mut self.exclude,
            _ => return,
        };
        *slot = Some((key, value));
    }
}

/// Where a parameter was first defined, for "already defined" problems.
struct Definition {
    pos: Pos,
    section: String,
}

/// A parameter found while flattening nested mappings: its dotted name and its definition.
struct Leaf<'a> {
    name: String,
    path: String,
    key: &'a Spanned,
    value: &'a Spanned,
}

/// What ends the descent into nested mappings: a list of values (or a generator) for grid and
/// paired, a distribution for random.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LeafKind {
    Values,
    Distribution,
}

#[derive(Default)]
struct Builder {
    problems: Vec<Problem>,
    /// Every parameter name seen, even when its values were bad, so later duplicates and exclude
    /// rules can refer to it without piling follow-up problems onto the first one.
    defined: IndexMap<String, Definition>,
    planned: Vec<Planned>,
    /// Parameter name → (dimension, column), for parameters whose values were valid.
    located: HashMap<String, (usize, usize)>,
    /// Values the planned dimensions will make, and every one refused after the total passed
    /// [`MAX_TOTAL_VALUES`].
    total_values: u64,
    /// Where the total first passed [`MAX_TOTAL_VALUES`]; reported once, with the final total.
    over_budget: Option<OverBudget>,
}

struct OverBudget {
    pos: Pos,
    path: String,
    name: String,
}

impl Builder {
    fn report(&mut self, pos: Pos, path: &str, message: String, hint: Option<String>) {
        let mut problem = Problem::new(Some(pos), path, message);
        problem.hint = hint;
        self.problems.push(problem);
    }

    fn unknown_key(&mut self, key: &Spanned, parent: &str, candidates: &[&str]) {
        let name = key.key_text();
        // The W&B-style layout (`parameters: {lr: {values: [...]}}`, `strategy: grid`) appears
        // in Python HSM's example docs, but its code never read it (its SweepConfig reads only
        // grid/paired): say how to write it here rather than guess at its meaning.
        let wandb_style = matches!(name.as_str(), "parameters" | "strategy" | "method");
        let hint = match did_you_mean(&name, candidates) {
            _ if wandb_style => "the `parameters:`/`values:` layout is not a sweep file here: \
                write `grid:` with each parameter's list of values, e.g. grid: {lr: [0.1, 0.01]} \
                (a grid is always every combination, so no `strategy:`)"
                .to_string(),
            Some(best) => format!("did you mean `{best}`?"),
            None => format!("expected one of: {}", candidates.join(", ")),
        };
        let where_ = if parent.is_empty() {
            String::new()
        } else {
            format!(" in {parent}")
        };
        self.report(
            key.pos,
            &join_path(parent, &name),
            format!("unknown key `{name}`{where_}"),
            Some(hint),
        );
    }

    fn collect_wrapped<'a>(&mut self, wrapper: &'a Spanned, sections: &mut Sections<'a>) {
        match &wrapper.node {
            Node::Null => {}
            Node::Map(entries) => {
                for (key, value) in entries {
                    match key.as_str() {
                        Some(name) if SECTIONS.contains(&name) => sections.set(key, value),
                        Some(name) if TOP_LEVEL_ONLY.contains(&name) => self.report(
                            key.pos,
                            &format!("sweep.{name}"),
                            format!("`{name}` belongs at the top level, not under `sweep:`"),
                            Some(format!("move `{name}:` out of `sweep:`")),
                        ),
                        _ => self.unknown_key(key, "sweep", &SECTIONS),
                    }
                }
            }
            other => self.report(
                wrapper.pos,
                "sweep",
                format!(
                    "expected a mapping with grid, paired, random or exclude, got {}",
                    other.kind()
                ),
                Some("e.g. sweep: {grid: {lr: [0.1, 0.01]}}".into()),
            ),
        }
    }

    /// Records that `name` is defined here. False (and a problem) when it already was.
    fn define(&mut self, name: &str, pos: Pos, path: &str, section: &str) -> bool {
        if let Some(first) = self.defined.get(name) {
            let message = format!(
                "parameter `{name}` is already defined in {} at line {}",
                first.section, first.pos.line
            );
            self.report(
                pos,
                path,
                message,
                Some(
                    "a parameter may be set in only one place across grid, paired and random"
                        .into(),
                ),
            );
            return false;
        }
        self.defined.insert(
            name.to_string(),
            Definition {
                pos,
                section: section.to_string(),
            },
        );
        true
    }

    /// Adds a dimension to be made, unless it takes the sweep past [`MAX_TOTAL_VALUES`] (then it
    /// is left out, as a parameter with bad values is, and reported once at the end).
    fn add_dimension(&mut self, names: Vec<String>, rows: PlannedRows, pos: Pos, path: &str) {
        let planned = Planned { names, rows };
        self.total_values = self.total_values.saturating_add(planned.values());
        if self.total_values > MAX_TOTAL_VALUES {
            if self.over_budget.is_none() {
                self.over_budget = Some(OverBudget {
                    pos,
                    path: path.to_string(),
                    name: planned.names.join(", "),
                });
            }
            return;
        }
        let dim = self.planned.len();
        for (column, name) in planned.names.iter().enumerate() {
            self.located.insert(name.clone(), (dim, column));
        }
        self.planned.push(planned);
    }

    /// A mapping key used as (part of) a parameter name.
    fn name_part(&mut self, key: &Spanned, parent_path: &str) -> Option<String> {
        let text = key.key_text();
        let bad = match &key.node {
            Node::Str(s) => s.is_empty(),
            Node::Int(_) | Node::Float(_) | Node::Bool(_) => false,
            Node::Null | Node::Seq(_) | Node::Map(_) => true,
        };
        if bad {
            self.report(
                key.pos,
                parent_path,
                format!("`{text}` is not a usable parameter name"),
                Some("parameter names are plain words such as lr or model.hidden".into()),
            );
            return None;
        }
        Some(text)
    }

    /// Walks `key: value`, turning nested mappings into dotted names, and collects the leaves:
    /// values that are not mappings, and single-key mappings naming a generator (grid, paired)
    /// or a distribution (random).
    fn flatten<'a>(
        &mut self,
        prefix: &str,
        parent_path: &str,
        key: &'a Spanned,
        value: &'a Spanned,
        kind: LeafKind,
        out: &mut Vec<Leaf<'a>>,
    ) {
        let Some(part) = self.name_part(key, parent_path) else {
            return;
        };
        let name = join_path(prefix, &part);
        let path = join_path(parent_path, &part);
        let entries = match &value.node {
            Node::Map(entries) => entries,
            _ => {
                out.push(Leaf {
                    name,
                    path,
                    key,
                    value,
                });
                return;
            }
        };
        if entries.is_empty() {
            let expected = match kind {
                LeafKind::Values => "a list of values",
                LeafKind::Distribution => "a distribution such as {uniform: [0.0, 1.0]}",
            };
            self.report(
                key.pos,
                &path,
                format!("expected {expected}, got an empty mapping"),
                None,
            );
            return;
        }
        if let [(only_key, only_value)] = entries.as_slice() {
            let word = only_key.key_text();
            match kind {
                LeafKind::Values => {
                    if GENERATORS.contains(&word.as_str()) {
                        out.push(Leaf {
                            name,
                            path,
                            key,
                            value,
                        });
                        return;
                    }
                    if let Some(best) = did_you_mean(&word, &GENERATORS) {
                        self.report(
                            only_key.pos,
                            &path,
                            format!("unknown generator `{word}`"),
                            Some(format!(
                                "did you mean `{best}`? (for a parameter named `{name}.{word}` write `{part}.{word}: [...]`)"
                            )),
                        );
                        return;
                    }
                }
                LeafKind::Distribution => {
                    // A single key holding a non-mapping is always meant as a distribution here:
                    // random parameters have no other single-key shape.
                    if DISTRIBUTIONS.contains(&word.as_str())
                        || !matches!(only_value.node, Node::Map(_))
                    {
                        out.push(Leaf {
                            name,
                            path,
                            key,
                            value,
                        });
                        return;
                    }
                }
            }
        }
        for (child_key, child_value) in entries {
            self.flatten(&name, &path, child_key, child_value, kind, out);
        }
    }

    /// Flattens a mapping of parameters (grid, a paired group, random.params).
    fn leaves<'a>(
        &mut self,
        path: &str,
        entries: &'a [(Spanned, Spanned)],
        kind: LeafKind,
    ) -> Vec<Leaf<'a>> {
        let mut out = Vec::new();
        for (key, value) in entries {
            self.flatten("", path, key, value, kind, &mut out);
        }
        out
    }

    /// The values of a grid or paired leaf: a literal list or a generator.
    fn values(&mut self, leaf: &Leaf<'_>) -> Option<Column> {
        let written = leaf.key.key_text();
        match &leaf.value.node {
            Node::Seq(items) if items.is_empty() => {
                self.report(
                    leaf.key.pos,
                    &leaf.path,
                    "empty list of values".into(),
                    Some(format!("give at least one value, e.g. {written}: [1]")),
                );
                None
            }
            Node::Seq(items) => Some(Column::Listed(items.iter().map(Value::from_node).collect())),
            Node::Map(entries) => {
                let (generator, args) = entries.first()?;
                self.generate(leaf, generator, args)
            }
            Node::Null => {
                self.report(
                    leaf.key.pos,
                    &leaf.path,
                    "expected a list of values, got null".into(),
                    Some(format!("give the values as a list, e.g. {written}: [1, 2]")),
                );
                None
            }
            other => {
                self.report(
                    leaf.key.pos,
                    &leaf.path,
                    format!("expected a list of values, got {}", other.kind()),
                    Some(format!("write {written}: [{}]", scalar_text(leaf.value))),
                );
                None
            }
        }
    }

    fn parse_grid(&mut self, key: &Spanned, section: &Spanned) {
        let entries = match &section.node {
            Node::Null => return,
            Node::Map(entries) => entries,
            other => {
                self.report(
                    key.pos,
                    "grid",
                    format!(
                        "expected a mapping of parameter → list of values, got {}",
                        other.kind()
                    ),
                    Some("e.g. grid: {lr: [0.1, 0.01]}".into()),
                );
                return;
            }
        };
        for leaf in self.leaves("grid", entries, LeafKind::Values) {
            let fresh = self.define(&leaf.name, leaf.key.pos, &leaf.path, "grid");
            if let Some(values) = self.values(&leaf) {
                if fresh {
                    let rows = PlannedRows::Zipped(vec![values]);
                    self.add_dimension(vec![leaf.name], rows, leaf.key.pos, &leaf.path);
                }
            }
        }
    }

    fn parse_paired(&mut self, key: &Spanned, section: &Spanned) {
        match &section.node {
            Node::Null => {}
            Node::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.parse_paired_item(i, item);
                }
            }
            Node::Map(entries) => {
                let group = entries
                    .first()
                    .map_or("my_group".to_string(), |(k, _)| k.key_text());
                self.report(
                    key.pos,
                    "paired",
                    "expected a list of groups, got a mapping".into(),
                    Some(format!(
                        "start each group with `- `: write `- {group}: {{...}}` under `paired:`"
                    )),
                );
            }
            other => self.report(
                key.pos,
                "paired",
                format!("expected a list of groups, got {}", other.kind()),
                Some("e.g. paired: [{model_and_data: {model: [a, b], data: [x, y]}}]".into()),
            ),
        }
    }

    /// One paired item: every parameter of every group in it is zipped into one dimension.
    fn parse_paired_item(&mut self, index: usize, item: &Spanned) {
        let path = format!("paired[{index}]");
        let entries = match &item.node {
            Node::Map(entries) if !entries.is_empty() => entries,
            other => {
                let got = match other {
                    Node::Map(_) => "an empty mapping",
                    other => other.kind(),
                };
                self.report(
                    item.pos,
                    &path,
                    format!("expected a mapping of group name → parameters, got {got}"),
                    Some("write `- my_group: {a: [1, 2], b: [3, 4]}`".into()),
                );
                return;
            }
        };
        // (label for messages, parameter name, values, defined here for the first time)
        let mut columns: Vec<(String, String, Option<Column>, bool)> = Vec::new();
        for (group_key, group_value) in entries {
            let group = group_key.key_text();
            let group_path = format!("{path}.{group}");
            let params = match &group_value.node {
                Node::Map(params) if !params.is_empty() => params,
                other => {
                    let got = match other {
                        Node::Map(_) => "an empty mapping",
                        other => other.kind(),
                    };
                    let hint = if matches!(other, Node::Seq(_)) {
                        format!("`{group}` looks like a parameter: put it inside a named group, `- my_group: {{{group}: [...]}}`")
                    } else {
                        format!("write `- {group}: {{a: [1, 2], b: [3, 4]}}`")
                    };
                    self.report(
                        group_key.pos,
                        &group_path,
                        format!("expected a mapping of parameter → list of values, got {got}"),
                        Some(hint),
                    );
                    continue;
                }
            };
            for leaf in self.leaves(&group_path, params, LeafKind::Values) {
                let fresh = self.define(&leaf.name, leaf.key.pos, &leaf.path, &path);
                let values = self.values(&leaf);
                columns.push((format!("{group}.{}", leaf.name), leaf.name, values, fresh));
            }
        }
        if columns.is_empty() || columns.iter().any(|c| c.2.is_none()) {
            return;
        }
        let lengths: Vec<usize> = columns
            .iter()
            .map(|c| c.2.as_ref().map_or(0, Column::len))
            .collect();
        if lengths.iter().any(|&n| n != lengths[0]) {
            let parts: Vec<String> = columns
                .iter()
                .zip(&lengths)
                .enumerate()
                .map(|(i, ((label, ..), n))| {
                    if i == 0 {
                        format!("{label} has {n} values")
                    } else {
                        format!("{label} has {n}")
                    }
                })
                .collect();
            self.report(
                item.pos,
                &path,
                format!("lengths differ: {}", parts.join(", ")),
                Some(
                    "parameters in one paired item are zipped, so each needs the same number of values"
                        .into(),
                ),
            );
            return;
        }
        if columns.iter().any(|c| !c.3) {
            return;
        }
        let mut names = Vec::with_capacity(columns.len());
        let mut value_columns = Vec::with_capacity(columns.len());
        for (_, name, values, _) in columns {
            names.push(name);
            value_columns.extend(values);
        }
        self.add_dimension(names, PlannedRows::Zipped(value_columns), item.pos, &path);
    }

    fn parse_random(&mut self, key: &Spanned, section: &Spanned) {
        let entries = match &section.node {
            Node::Null => return,
            Node::Map(entries) => entries,
            other => {
                self.report(
                    key.pos,
                    "random",
                    format!(
                        "expected a mapping with n, seed and params, got {}",
                        other.kind()
                    ),
                    Some(
                        "e.g. random: {n: 20, seed: 0, params: {dropout: {uniform: [0.0, 0.5]}}}"
                            .into(),
                    ),
                );
                return;
            }
        };
        let mut n = None;
        let mut n_seen = false;
        let mut seed = 0u64;
        let mut params = None;
        let mut ok = true;
        for (k, v) in entries {
            match k.as_str() {
                Some("n") => {
                    n_seen = true;
                    match v.node {
                        Node::Int(i) if i >= 1 && i as u64 <= MAX_VALUES => n = Some(i as u64),
                        Node::Int(i) => self.report(
                            k.pos,
                            "random.n",
                            format!("n must be between 1 and {MAX_VALUES}, got {i}"),
                            None,
                        ),
                        ref other => self.report(
                            k.pos,
                            "random.n",
                            format!("expected a whole number of samples, got {}", other.kind()),
                            Some("e.g. n: 20".into()),
                        ),
                    }
                }
                Some("seed") => match v.node {
                    // Negative seeds are as good as any: reinterpret the bits.
                    Node::Int(i) => seed = i as u64,
                    ref other => {
                        ok = false;
                        self.report(
                            k.pos,
                            "random.seed",
                            format!("expected an integer seed, got {}", other.kind()),
                            Some("e.g. seed: 0".into()),
                        );
                    }
                },
                Some("params") => params = Some((k, v)),
                _ => {
                    ok = false;
                    self.unknown_key(k, "random", &RANDOM_KEYS);
                }
            }
        }
        if !n_seen {
            self.report(
                key.pos,
                "random",
                "missing n, the number of samples".into(),
                Some("e.g. n: 20".into()),
            );
        }
        let params = match params {
            Some((_, v)) if matches!(&v.node, Node::Map(e) if !e.is_empty()) => {
                v.as_map().unwrap_or_default()
            }
            Some((k, v)) => {
                let got = match &v.node {
                    Node::Map(_) => "an empty mapping",
                    other => other.kind(),
                };
                self.report(
                    k.pos,
                    "random.params",
                    format!("expected a mapping of parameter → distribution, got {got}"),
                    Some("e.g. params: {dropout: {uniform: [0.0, 0.5]}}".into()),
                );
                return;
            }
            None => {
                self.report(
                    key.pos,
                    "random",
                    "missing params, the parameters to sample".into(),
                    Some("e.g. params: {dropout: {uniform: [0.0, 0.5]}}".into()),
                );
                return;
            }
        };
        let mut names = Vec::new();
        let mut distributions = Vec::new();
        for leaf in self.leaves("random.params", params, LeafKind::Distribution) {
            ok &= self.define(&leaf.name, leaf.key.pos, &leaf.path, "random");
            match self.distribution(&leaf) {
                Some(d) => distributions.push(d),
                None => ok = false,
            }
            names.push(leaf.name);
        }
        let Some(n) = n else { return };
        if !ok || names.is_empty() {
            return;
        }
        let rows = PlannedRows::Random {
            n,
            seed,
            distributions,
        };
        self.add_dimension(names, rows, key.pos, "random");
    }

    fn distribution(&mut self, leaf: &Leaf<'_>) -> Option<Distribution> {
        let (dist_key, args) = match &leaf.value.node {
            Node::Map(entries) if entries.len() == 1 => (&entries[0].0, &entries[0].1),
            other => {
                self.report(
                    leaf.key.pos,
                    &leaf.path,
                    format!(
                        "expected a distribution such as {{uniform: [0.0, 1.0]}}, got {}",
                        other.kind()
                    ),
                    Some("for a fixed list of values use grid".into()),
                );
                return None;
            }
        };
        let word = dist_key.key_text();
        let path = &leaf.path;
        match word.as_str() {
            "uniform" | "loguniform" => {
                let nums = self.numeric_args(path, &word, "[low, high]", args, &[2])?;
                let (low, high) = (nums[0].as_f64(), nums[1].as_f64());
                if word == "loguniform" && low <= 0.0 {
                    self.report(
                        args.pos,
                        path,
                        format!("loguniform needs low > 0, got {}", nums[0].text()),
                        Some("e.g. loguniform: [1.0e-5, 1.0e-1]".into()),
                    );
                    return None;
                }
                if low > high {
                    self.report(
                        args.pos,
                        path,
                        format!(
                            "{word} needs low <= high, got [{}, {}]",
                            nums[0].text(),
                            nums[1].text()
                        ),
                        None,
                    );
                    return None;
                }
                Some(if word == "uniform" {
                    Distribution::Uniform(low, high)
                } else {
                    Distribution::LogUniform(low, high)
                })
            }
            "randint" => {
                let nums = self.numeric_args(path, &word, "[low, high]", args, &[2])?;
                let (Num::Int(low), Num::Int(high)) = (nums[0], nums[1]) else {
                    self.report(
                        args.pos,
                        path,
                        "randint needs whole numbers".into(),
                        Some("e.g. randint: [0, 100] (both ends included)".into()),
                    );
                    return None;
                };
                if low > high {
                    self.report(
                        args.pos,
                        path,
                        format!("randint needs low <= high, got [{low}, {high}]"),
                        None,
                    );
                    return None;
                }
                Some(Distribution::RandInt(low, high))
            }
            "choice" => match &args.node {
                Node::Seq(items) if !items.is_empty() => Some(Distribution::Choice(
                    items.iter().map(Value::from_node).collect(),
                )),
                other => {
                    let got = match other {
                        Node::Seq(_) => "an empty list",
                        other => other.kind(),
                    };
                    self.report(
                        args.pos,
                        path,
                        format!("choice expects a list of values, got {got}"),
                        Some("e.g. choice: [16, 32, 64]".into()),
                    );
                    None
                }
            },
            _ => {
                let hint = match did_you_mean(&word, &DISTRIBUTIONS) {
                    Some(best) => format!("did you mean `{best}`?"),
                    None => format!("expected one of: {}", DISTRIBUTIONS.join(", ")),
                };
                self.report(
                    dist_key.pos,
                    path,
                    format!("unknown distribution `{word}`"),
                    Some(hint),
                );
                None
            }
        }
    }

    /// The arguments of a generator or distribution: a list of `counts` finite numbers.
    fn numeric_args(
        &mut self,
        path: &str,
        name: &str,
        usage: &str,
        args: &Spanned,
        counts: &[usize],
    ) -> Option<Vec<Num>> {
        let Node::Seq(items) = &args.node else {
            self.report(
                args.pos,
                path,
                format!("{name} expects a list {usage}, got {}", args.node.kind()),
                None,
            );
            return None;
        };
        if !counts.contains(&items.len()) {
            self.report(
                args.pos,
                path,
                format!("{name} expects {usage}, got {} values", items.len()),
                None,
            );
            return None;
        }
        let mut nums = Vec::with_capacity(items.len());
        for item in items {
            match item.node {
                Node::Int(i) => nums.push(Num::Int(i)),
                Node::Float(f) if f.is_finite() => nums.push(Num::Float(f)),
                ref other => {
                    let got = match other {
                        Node::Float(_) => "a number that is not finite",
                        other => other.kind(),
                    };
                    self.report(
                        item.pos,
                        path,
                        format!("{name} arguments must be finite numbers, got {got}"),
                        None,
                    );
                }
            }
        }
        (nums.len() == items.len()).then_some(nums)
    }

    fn generate(&mut self, leaf: &Leaf<'_>, generator: &Spanned, args: &Spanned) -> Option<Column> {
        let path = leaf.path.as_str();
        match generator.as_str()? {
            "range" => {
                let nums = self.numeric_args(
                    path,
                    "range",
                    "[start, stop] or [start, stop, step]",
                    args,
                    &[2, 3],
                )?;
                match range_column(&nums) {
                    Ok(column) => Some(column),
                    Err((message, hint)) => {
                        self.report(args.pos, path, message, hint);
                        None
                    }
                }
            }
            name @ ("linspace" | "logspace") => {
                let nums = self.numeric_args(path, name, "[start, stop, n]", args, &[3])?;
                let n = match nums[2] {
                    Num::Int(n) if n >= 1 && n as u64 <= MAX_VALUES => n as usize,
                    other => {
                        self.report(
                            args.pos,
                            path,
                            format!(
                                "{name} n must be a whole number from 1 to {MAX_VALUES}, got {}",
                                other.text()
                            ),
                            None,
                        );
                        return None;
                    }
                };
                let (a, b) = (nums[0].as_f64(), nums[1].as_f64());
                if name == "linspace" {
                    return Some(Column::Linspace(a, b, n));
                }
                if a <= 0.0 || b <= 0.0 {
                    self.report(
                        args.pos,
                        path,
                        format!(
                            "logspace needs start and stop greater than 0, got [{}, {}]",
                            nums[0].text(),
                            nums[1].text()
                        ),
                        Some("logspace takes the end values themselves, not exponents: e.g. logspace: [1.0e-5, 1.0e-1, 5]".into()),
                    );
                    return None;
                }
                Some(Column::Logspace(a, b, n))
            }
            _ => None,
        }
    }

    fn parse_exclude(&mut self, key: &Spanned, section: &Spanned) -> Vec<Rule> {
        let items = match &section.node {
            Node::Null => return Vec::new(),
            Node::Seq(items) => items,
            other => {
                self.report(
                    key.pos,
                    "exclude",
                    format!("expected a list of rules, got {}", other.kind()),
                    Some("write each rule as a list item: `- {seed: 3, lr: 0.01}`".into()),
                );
                return Vec::new();
            }
        };
        let mut rules = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("exclude[{i}]");
            match &item.node {
                Node::Map(entries) if !entries.is_empty() => {
                    let mut constraints = Vec::new();
                    self.rule_constraints("", &path, entries, &mut constraints);
                    rules.push(Rule { constraints });
                }
                other => {
                    let got = match other {
                        Node::Map(_) => "an empty mapping, which would exclude everything",
                        other => other.kind(),
                    };
                    self.report(
                        item.pos,
                        &path,
                        format!("expected a mapping of parameter → value, got {got}"),
                        Some("e.g. `- {seed: 3, lr: 0.01}`".into()),
                    );
                }
            }
        }
        rules
    }

    fn rule_constraints(
        &mut self,
        prefix: &str,
        parent_path: &str,
        entries: &[(Spanned, Spanned)],
        out: &mut Vec<Constraint>,
    ) {
        for (key, value) in entries {
            let Some(part) = self.name_part(key, parent_path) else {
                continue;
            };
            let name = join_path(prefix, &part);
            let path = join_path(parent_path, &part);
            if self.defined.contains_key(&name) {
                // Defined but not located means its values were bad, already reported.
                if let Some(&(dim, column)) = self.located.get(&name) {
                    out.push(Constraint {
                        dim,
                        column,
                        value: Value::from_node(value),
                    });
                }
                continue;
            }
            let nested_prefix = format!("{name}.");
            if let Node::Map(children) = &value.node {
                if !children.is_empty()
                    && self.defined.keys().any(|k| k.starts_with(&nested_prefix))
                {
                    self.rule_constraints(&name, &path, children, out);
                    continue;
                }
            }
            let names: Vec<&str> = self.defined.keys().map(String::as_str).collect();
            let hint = match did_you_mean(&name, &names) {
                Some(best) => format!("did you mean `{best}`?"),
                None if names.is_empty() => "the sweep defines no parameters".to_string(),
                None => format!("known parameters: {}", preview(&names)),
            };
            self.report(
                key.pos,
                &path,
                format!("unknown parameter `{name}` in exclude rule"),
                Some(hint),
            );
        }
    }
}

fn join_path(parent: &str, part: &str) -> String {
    if parent.is_empty() {
        part.to_string()
    } else {
        format!("{parent}.{part}")
    }
}

/// The first few names, for hints that list what exists.
fn preview(names: &[&str]) -> String {
    const SHOWN: usize = 8;
    let mut text = names
        .iter()
        .take(SHOWN)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(", … ({} in all)", names.len()));
    }
    text
}

/// A scalar as the user would write it, for "write lr: [0.1]" hints.
fn scalar_text(node: &Spanned) -> String {
    match &node.node {
        Node::Null => "null".into(),
        Node::Bool(b) => b.to_string(),
        Node::Int(i) => i.to_string(),
        Node::Float(f) => float_text(*f),
        // Plain scalars were written unquoted, so writing them back inside brackets is what
        // the user meant (`lr: 0.1, 0.2` becomes `lr: [0.1, 0.2]`).
        Node::Str(s) => s.clone(),
        Node::Seq(_) | Node::Map(_) => "...".into(),
    }
}

fn float_text(f: f64) -> String {
    let text = format!("{f:?}");
    if text.contains(['.', 'e', 'E', 'i', 'N']) {
        text
    } else {
        format!("{text}.0")
    }
}

// ---------------------------------------------------------------------------------------------
// Generators

#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    fn text(self) -> String {
        match self {
            Num::Int(i) => i.to_string(),
            Num::Float(f) => float_text(f),
        }
    }
}

/// Rounds to 12 significant digits so that `0.1 * 3` is `0.3`; values within 1e-12 of the
/// generator's `scale` of zero become zero (`-0.3 + 3 * 0.1` is `0.0`, not `5.55e-17`).
fn round12(x: f64, scale: f64) -> f64 {
    if !x.is_finite() {
        return x;
    }
    if x.abs() <= scale.abs() * 1e-12 {
        return 0.0;
    }
    format!("{x:.11e}").parse().unwrap_or(x)
}

type GeneratorProblem = (String, Option<String>);

/// `range: [start, stop, step]`, half-open like Python's; ints when all three are ints.
fn range_column(nums: &[Num]) -> Result<Column, GeneratorProblem> {
    let start = nums.first().copied().unwrap_or(Num::Int(0));
    let stop = nums.get(1).copied().unwrap_or(Num::Int(0));
    let step = nums.get(2).copied().unwrap_or(Num::Int(1));
    let written = format!(
        "[{}]",
        nums.iter().map(|n| n.text()).collect::<Vec<_>>().join(", ")
    );
    let no_values = || {
        Err((
            format!("range {written} produces no values"),
            Some("stop is excluded, and the step must lead from start towards stop".into()),
        ))
    };
    let too_many = |n: String| {
        Err((
            format!("range {written} produces {n} values, more than the limit of {MAX_VALUES}"),
            None,
        ))
    };
    if step.as_f64() == 0.0 {
        return Err((format!("range {written}: step must not be 0"), None));
    }
    if let (Num::Int(start), Num::Int(stop), Num::Int(step)) = (start, stop, step) {
        let (start, stop, step) = (i128::from(start), i128::from(stop), i128::from(step));
        let count = if step > 0 && stop > start {
            (stop - start + step - 1) / step
        } else if step < 0 && start > stop {
            (start - stop - step - 1) / -step
        } else {
            0
        };
        if count == 0 {
            return no_values();
        }
        if count > i128::from(MAX_VALUES) {
            return too_many(count.to_string());
        }
        return Ok(Column::IntRange {
            start,
            step,
            count: count as usize,
        });
    }
    let (start, stop, step) = (start.as_f64(), stop.as_f64(), step.as_f64());
    let estimate = ((stop - start) / step).ceil();
    if !estimate.is_finite() || estimate > MAX_VALUES as f64 {
        return too_many(format!("{estimate:.0}"));
    }
    let scale = start.abs().max(stop.abs()).max(step.abs());
    let value_at = |i: usize| round12(start + i as f64 * step, scale);
    let before_stop = |v: f64| if step > 0.0 { v < stop } else { v > stop };
    let mut count = if estimate > 0.0 { estimate as usize } else { 0 };
    // (stop - start) / step can land a hair above a whole number; never emit stop itself.
    while count > 0 && !before_stop(value_at(count - 1)) {
        count -= 1;
    }
    if count == 0 {
        return no_values();
    }
    Ok(Column::FloatRange {
        start,
        step,
        scale,
        count,
    })
}

/// `n` evenly spaced floats from `a` to `b`, both included.
fn linspace(a: f64, b: f64, n: usize) -> Vec<Value> {
    let scale = a.abs().max(b.abs());
    (0..n)
        .map(|i| {
            let v = if i == 0 {
                a
            } else if i + 1 == n {
                b
            } else {
                // a*(1-t) + b*t stays finite where b - a would overflow.
                let t = i as f64 / (n - 1) as f64;
                a * (1.0 - t) + b * t
            };
            Value::Float(round12(v, scale))
        })
        .collect()
}

/// `n` floats geometrically spaced from `a` to `b`, both included (the end values themselves,
/// unlike numpy's exponents).
fn logspace(a: f64, b: f64, n: usize) -> Vec<Value> {
    let (la, lb) = (a.log10(), b.log10());
    (0..n)
        .map(|i| {
            let v = if i == 0 {
                a
            } else if i + 1 == n {
                b
            } else {
                10f64.powf(la + (lb - la) * i as f64 / (n - 1) as f64)
            };
            Value::Float(round12(v, 0.0))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Random

#[derive(Debug, Clone)]
enum Distribution {
    Uniform(f64, f64),
    LogUniform(f64, f64),
    Choice(Vec<Value>),
    /// Both ends included.
    RandInt(i64, i64),
}

impl Distribution {
    /// Draws one value using exactly one number from `rng`, so a sample's values never depend
    /// on which distributions came before it beyond their count.
    fn sample(&self, rng: &mut SplitMix64) -> Value {
        match self {
            Distribution::Uniform(low, high) => {
                let u = rng.next_unit();
                // low*(1-u) + high*u cannot overflow where high - low could.
                let v = round12(low * (1.0 - u) + high * u, low.abs().max(high.abs()));
                Value::Float(v.clamp(*low, *high))
            }
            Distribution::LogUniform(low, high) => {
                let u = rng.next_unit();
                let v = round12((low.ln() * (1.0 - u) + high.ln() * u).exp(), 0.0);
                Value::Float(v.clamp(*low, *high))
            }
            Distribution::Choice(values) => {
                let index = rng.next_below(values.len() as u128);
                values
                    .get(usize::try_from(index).unwrap_or(0))
                    .cloned()
                    .unwrap_or(Value::Null)
            }
            Distribution::RandInt(low, high) => {
                let span = (i128::from(*high) - i128::from(*low) + 1) as u128;
                let offset = rng.next_below(span) as i128;
                Value::Int(i64::try_from(i128::from(*low) + offset).unwrap_or(*low))
            }
        }
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014), kept here so that a sweep's random samples never change
/// with a dependency's version: the same file gives the same tasks forever.
#[derive(Debug, Clone)]
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) from the top 53 bits.
    fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, bound) for bound in 1..=2^64 by multiply-shift (exact range, no
    /// float rounding at large bounds).
    fn next_below(&mut self, bound: u128) -> u128 {
        (u128::from(self.next_u64()) * bound) >> 64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> SweepFile {
        match load_sweep_text(text) {
            Ok(file) => file,
            Err(problems) => panic!("unexpected problems: {problems:#?}"),
        }
    }

    fn problems(text: &str) -> Vec<String> {
        match load_sweep_text(text) {
            Ok(file) => panic!("expected problems, got {:?}", file.spec),
            Err(problems) => problems.iter().map(|p| p.render("sweep.yaml")).collect(),
        }
    }

    fn show(value: &Value) -> String {
        match value {
            Value::Null => "null".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => format!("{f:?}"),
            Value::Str(s) => s.clone(),
            Value::List(items) => {
                let parts: Vec<String> = items.iter().map(show).collect();
                format!("[{}]", parts.join(","))
            }
            Value::Map(map) => {
                let parts: Vec<String> = map
                    .iter()
                    .map(|(k, v)| format!("{k}:{}", show(v)))
                    .collect();
                format!("{{{}}}", parts.join(","))
            }
        }
    }

    fn line(params: &Params) -> String {
        let parts: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", show(v)))
            .collect();
        parts.join(" ")
    }

    fn tasks(text: &str) -> Vec<String> {
        let file = load(text);
        let lines: Vec<String> = file.spec.iter().map(|p| line(&p)).collect();
        assert_eq!(
            file.spec.count(),
            lines.len() as u64,
            "count() disagrees with iter()"
        );
        lines
    }

    fn params_of(spec: &SweepSpec) -> Vec<String> {
        spec.iter().map(|p| line(&p)).collect()
    }

    /// Counts by every method we have; they must agree with each other and with iteration.
    fn assert_counts_agree(text: &str) -> u64 {
        let file = load(text);
        let spec = &file.spec;
        let by_iteration = spec.iter().count() as u128;
        let total: u128 = spec.dims.iter().map(|d| d.rows.len() as u128).product();
        let by_classes = total - excluded_by_classes(&spec.dims, &spec.rules);
        assert_eq!(
            by_classes, by_iteration,
            "class counting disagrees for\n{text}"
        );
        if spec.rules.len() <= MAX_INCLUSION_EXCLUSION_RULES {
            let excluded = excluded_by_inclusion_exclusion(&spec.dims, &spec.rules);
            assert_eq!(
                excluded.map(|e| total - e),
                Some(by_iteration),
                "inclusion-exclusion disagrees for\n{text}"
            );
        }
        let count = spec.count().exact().expect("a count that fits in u64");
        assert_eq!(
            u128::from(count),
            by_iteration,
            "count() disagrees for\n{text}"
        );
        count
    }

    #[test]
    fn last_grid_key_varies_fastest() {
        let lines = tasks("grid:\n  a: [1, 2]\n  b: [x, y, z]\n");
        assert_eq!(
            lines,
            ["a=1 b=x", "a=1 b=y", "a=1 b=z", "a=2 b=x", "a=2 b=y", "a=2 b=z"]
        );
    }

    #[test]
    fn nested_mappings_become_dotted_keys_and_list_values_stay_whole() {
        let text = "grid:\n  model:\n    hidden: [128, 256]\n    act: {fn: [relu]}\n  optimizer.lr: [0.1]\n  layers: [[64, 32], [128]]\n";
        let file = load(text);
        assert_eq!(
            file.spec.parameter_names(),
            ["model.hidden", "model.act.fn", "optimizer.lr", "layers"]
        );
        assert_eq!(
            params_of(&file.spec),
            [
                "model.hidden=128 model.act.fn=relu optimizer.lr=0.1 layers=[64,32]",
                "model.hidden=128 model.act.fn=relu optimizer.lr=0.1 layers=[128]",
                "model.hidden=256 model.act.fn=relu optimizer.lr=0.1 layers=[64,32]",
                "model.hidden=256 model.act.fn=relu optimizer.lr=0.1 layers=[128]",
            ]
        );
        // A mapping inside a list is one value too.
        let lines = tasks("grid:\n  opt: [{name: adam}, {name: sgd}]\n");
        assert_eq!(lines, ["opt={name:adam}", "opt={name:sgd}"]);
    }

    #[test]
    fn paired_items_multiply_and_groups_inside_one_item_zip() {
        let text = "\
sweep:
  grid:
    seed: [1, 2]
  paired:
    - model_and_data:
        model.name: [cnn, mlp]
        data.augmentation: [basic, none]
      batch:
        bs: [16, 32]
    - opt:
        name: [adam, sgd]
        lr: {linspace: [0.1, 0.2, 2]}
";
        let lines = tasks(text);
        assert_eq!(lines.len(), 8);
        assert_eq!(
            &lines[..4],
            [
                "seed=1 model.name=cnn data.augmentation=basic bs=16 name=adam lr=0.1",
                "seed=1 model.name=cnn data.augmentation=basic bs=16 name=sgd lr=0.2",
                "seed=1 model.name=mlp data.augmentation=none bs=32 name=adam lr=0.1",
                "seed=1 model.name=mlp data.augmentation=none bs=32 name=sgd lr=0.2",
            ]
        );
        assert!(lines[4].starts_with("seed=2 model.name=cnn"));
        assert_eq!(
            load(text).spec.parameter_names(),
            [
                "seed",
                "model.name",
                "data.augmentation",
                "bs",
                "name",
                "lr"
            ]
        );
    }

    #[test]
    fn paired_lengths_differ_names_every_parameter_and_length() {
        let text = "\
sweep:
  paired:
    - model_and_data:
        model.name: [cnn, mlp, transformer]
        data.augmentation: [basic, none]
";
        assert_eq!(
            problems(text),
            ["sweep.yaml:3:7: paired[0]: lengths differ: model_and_data.model.name has 3 values, \
              model_and_data.data.augmentation has 2 — parameters in one paired item are zipped, \
              so each needs the same number of values"]
        );
    }

    #[test]
    fn paired_as_a_mapping_asks_for_list_items() {
        let found = problems("paired:\n  model_and_data:\n    a: [1, 2]\n");
        assert_eq!(
            found,
            [
                "sweep.yaml:1:1: paired: expected a list of groups, got a mapping — start each \
              group with `- `: write `- model_and_data: {...}` under `paired:`"
            ]
        );
        let found = problems("paired:\n  - seed: [1, 2]\n");
        assert!(
            found[0].contains("paired[0].seed: expected a mapping of parameter"),
            "{found:?}"
        );
        assert!(
            found[0].contains("put it inside a named group"),
            "{found:?}"
        );
    }

    #[test]
    fn empty_documents_are_one_task_without_parameters() {
        for text in [
            "",
            "# only a comment\n",
            "sweep:\n",
            "sweep: {}\n",
            "{}\n",
            "~\n",
            "grid: {}\npaired: []\n",
        ] {
            let file = load(text);
            assert_eq!(file.spec.count(), 1, "{text:?}");
            let all: Vec<Params> = file.spec.iter().collect();
            assert_eq!(all, [Params::new()], "{text:?}");
            assert!(file.spec.parameter_names().is_empty());
        }
        let file = parse_sweep(None).unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(file.spec.count(), 1);
    }

    #[test]
    fn wrapped_and_unwrapped_forms_give_the_same_tasks() {
        let body = "grid:\n  a: [1, 2]\npaired:\n  - g: {b: [x, y], c: [3, 4]}\nrandom:\n  n: 2\n  params: {d: {uniform: [0, 1]}}\nexclude:\n  - {a: 2, b: y}\n";
        let wrapped: String = std::iter::once("sweep:\n".to_string())
            .chain(body.lines().map(|l| format!("  {l}\n")))
            .collect();
        let unwrapped = tasks(body);
        assert_eq!(unwrapped.len(), 6);
        assert_eq!(unwrapped, tasks(&wrapped));
    }

    #[test]
    fn script_metadata_and_defaults_are_kept() {
        let file = load(
            "defaults:\n  - override hydra/launcher: basic\n  - _self_\nsweep:\n  grid: {a: [1]}\nscript: scripts/train.py\nmetadata:\n  description: lr study\n  tags: [a, b]\n",
        );
        assert_eq!(file.script.as_deref(), Some("scripts/train.py"));
        let Some(Value::Map(metadata)) = &file.metadata else {
            panic!("metadata not kept: {:?}", file.metadata)
        };
        assert_eq!(
            metadata.get("description"),
            Some(&Value::Str("lr study".into()))
        );
        let Some(Value::List(defaults)) = &file.defaults else {
            panic!("defaults not kept: {:?}", file.defaults)
        };
        assert_eq!(defaults.len(), 2);
        let bare = load("grid: {a: [1]}\n");
        assert_eq!(
            (bare.script, bare.metadata, bare.defaults),
            (None, None, None)
        );
        let found = problems("script: [a.py]\n");
        assert_eq!(
            found,
            ["sweep.yaml:1:1: script: expected the path of a script, got a list — e.g. script: scripts/train.py"]
        );
    }

    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        // First outputs of SplitMix64 from state 0, as published with the algorithm.
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(rng.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(rng.next_u64(), 0x06c4_5d18_8009_454f);
    }

    #[test]
    fn random_samples_are_reproducible_and_within_bounds() {
        let sweep = |seed: i64| {
            format!(
                "random:\n  n: 200\n  seed: {seed}\n  params:\n    dropout: {{uniform: [0.1, 0.5]}}\n    lr: {{loguniform: [1.0e-5, 1.0e-1]}}\n    batch: {{choice: [16, 32, 64]}}\n    layers: {{randint: [1, 3]}}\n"
            )
        };
        let first = tasks(&sweep(0));
        assert_eq!(first.len(), 200);
        assert_eq!(first, tasks(&sweep(0)));
        assert_ne!(first, tasks(&sweep(1)));
        let file = load(&sweep(0));
        assert_eq!(
            file.spec.parameter_names(),
            ["dropout", "lr", "batch", "layers"]
        );
        let mut layers_seen = std::collections::BTreeSet::new();
        for params in file.spec.iter() {
            let Some(Value::Float(dropout)) = params.get("dropout") else {
                panic!()
            };
            assert!((0.1..=0.5).contains(dropout), "{dropout}");
            let Some(Value::Float(lr)) = params.get("lr") else {
                panic!()
            };
            assert!((1e-5..=1e-1).contains(lr), "{lr}");
            let Some(Value::Int(batch)) = params.get("batch") else {
                panic!()
            };
            assert!([16, 32, 64].contains(batch));
            let Some(Value::Int(layers)) = params.get("layers") else {
                panic!()
            };
            layers_seen.insert(*layers);
        }
        // randint includes both ends.
        assert_eq!(layers_seen.into_iter().collect::<Vec<_>>(), [1, 2, 3]);
        // Pinned: a change here would silently change every existing random sweep.
        assert_eq!(
            first[0],
            "dropout=0.453324323285 lr=0.000532245487643 batch=16 layers=3"
        );
    }

    #[test]
    fn random_is_the_innermost_dimension() {
        let lines = tasks("grid:\n  a: [1, 2]\nrandom:\n  n: 3\n  seed: 7\n  params:\n    x: {randint: [0, 1000000]}\n");
        assert_eq!(lines.len(), 6);
        let xs: Vec<&str> = lines
            .iter()
            .map(|l| l.split(' ').nth(1).unwrap_or(""))
            .collect();
        assert_eq!(xs[..3], xs[3..]);
        assert!(lines[..3].iter().all(|l| l.starts_with("a=1 ")));
        // Extreme integer bounds neither overflow nor panic.
        let lines = tasks("random:\n  n: 5\n  params:\n    x: {randint: [-9223372036854775808, 9223372036854775807]}\n");
        assert_eq!(lines.len(), 5);
    }

    #[test]
    fn range_generator_is_half_open_with_ints_or_floats() {
        let values = |text: &str| -> Vec<String> {
            let file = load(&format!("grid:\n  x: {{range: {text}}}\n"));
            file.spec.iter().map(|p| show(&p["x"])).collect()
        };
        assert_eq!(values("[0, 10, 3]"), ["0", "3", "6", "9"]);
        assert_eq!(values("[0, 4]"), ["0", "1", "2", "3"]);
        assert_eq!(values("[5, 0, -2]"), ["5", "3", "1"]);
        assert_eq!(values("[0, 0.5, 0.1]"), ["0.0", "0.1", "0.2", "0.3", "0.4"]);
        assert_eq!(values("[0.0, 3]"), ["0.0", "1.0", "2.0"]);
        assert_eq!(
            values("[-0.3, 0.3, 0.1]"),
            ["-0.3", "-0.2", "-0.1", "0.0", "0.1", "0.2"]
        );
        assert_eq!(values("[0, 1, 0.25]"), ["0.0", "0.25", "0.5", "0.75"]);
        assert_eq!(values("[1, 0, -0.3]"), ["1.0", "0.7", "0.4", "0.1"]);
        assert_eq!(
            values("[9223372036854775805, 9223372036854775807]"),
            ["9223372036854775805", "9223372036854775806"]
        );
    }

    #[test]
    fn linspace_and_logspace_include_both_ends() {
        let values = |text: &str| -> Vec<Value> {
            let file = load(&format!("grid:\n  x: {text}\n"));
            file.spec.iter().map(|p| p["x"].clone()).collect()
        };
        let floats = |v: &[f64]| -> Vec<Value> { v.iter().map(|f| Value::Float(*f)).collect() };
        assert_eq!(
            values("{linspace: [0.0, 0.1, 5]}"),
            floats(&[0.0, 0.025, 0.05, 0.075, 0.1])
        );
        assert_eq!(
            values("{linspace: [0, 0.3, 4]}"),
            floats(&[0.0, 0.1, 0.2, 0.3])
        );
        assert_eq!(values("{linspace: [2, 2, 1]}"), floats(&[2.0]));
        assert_eq!(values("{linspace: [1, 0, 3]}"), floats(&[1.0, 0.5, 0.0]));
        assert_eq!(
            values("{linspace: [-1.0e308, 1.0e308, 3]}"),
            floats(&[-1e308, 0.0, 1e308])
        );
        assert_eq!(
            values("{logspace: [1.0e-5, 1.0e-1, 5]}"),
            floats(&[1e-5, 1e-4, 1e-3, 1e-2, 1e-1])
        );
        assert_eq!(
            values("{logspace: [1, 1000, 4]}"),
            floats(&[1.0, 10.0, 100.0, 1000.0])
        );
        assert_eq!(values("{logspace: [2, 8, 3]}"), floats(&[2.0, 4.0, 8.0]));
    }

    #[test]
    fn bad_generator_arguments_are_reported() {
        let cases = [
            ("{range: [0, 10, 0]}", "grid.x: range [0, 10, 0]: step must not be 0"),
            ("{range: [0, 10, -1]}", "grid.x: range [0, 10, -1] produces no values"),
            ("{range: [3, 3]}", "grid.x: range [3, 3] produces no values"),
            ("{range: [0, 10000000]}", "grid.x: range [0, 10000000] produces 10000000 values, more than the limit of 1000000"),
            ("{range: [0, 1, 0.0000000001]}", "grid.x: range [0, 1, 1e-10] produces 10000000000 values"),
            ("{range: [1, 2, 3, 4]}", "grid.x: range expects [start, stop] or [start, stop, step], got 4 values"),
            ("{range: [0, ten]}", "2:18: grid.x: range arguments must be finite numbers, got a string"),
            ("{range: 5}", "grid.x: range expects a list [start, stop] or [start, stop, step], got a number"),
            ("{linspace: [0, 1, 0]}", "grid.x: linspace n must be a whole number from 1 to 1000000, got 0"),
            ("{linspace: [0, 1, 2.5]}", "grid.x: linspace n must be a whole number from 1 to 1000000, got 2.5"),
            ("{logspace: [-5, -1, 5]}", "grid.x: logspace needs start and stop greater than 0, got [-5, -1] — logspace takes the end values themselves"),
            ("{linspace: [0, .inf, 3]}", "grid.x: linspace arguments must be finite numbers, got a number that is not finite"),
            ("{rnage: [0, 10]}", "2:7: grid.x: unknown generator `rnage` — did you mean `range`? (for a parameter named `x.rnage` write `x.rnage: [...]`)"),
        ];
        for (value, expected) in cases {
            let found = problems(&format!("grid:\n  x: {value}\n"));
            assert_eq!(found.len(), 1, "{value}: {found:?}");
            assert!(
                found[0].contains(expected),
                "{value}:\n  got      {}\n  expected {expected}",
                found[0]
            );
        }
    }

    #[test]
    fn exclude_drops_matching_combinations_and_renumbers() {
        let lines = tasks(
            "grid:\n  seed: [1, 2, 3]\n  lr: [0.001, 0.01]\nexclude:\n  - {seed: 3, lr: 0.01}\n  - {seed: 1.0, lr: 0.001}\n",
        );
        assert_eq!(
            lines,
            [
                "seed=1 lr=0.01",
                "seed=2 lr=0.001",
                "seed=2 lr=0.01",
                "seed=3 lr=0.001"
            ]
        );
        // Nested mappings in a rule are dotted keys; whole list values compare as values.
        let lines = tasks(
            "grid:\n  model: {hidden: [1, 2]}\n  layers: [[64, 32], [128]]\nexclude:\n  - model: {hidden: 2}\n    layers: [64, 32]\n",
        );
        assert_eq!(
            lines,
            [
                "model.hidden=1 layers=[64,32]",
                "model.hidden=1 layers=[128]",
                "model.hidden=2 layers=[128]"
            ]
        );
        // A rule on a paired parameter drops the whole zipped row.
        let lines = tasks("paired:\n  - g: {a: [1, 2, 3], b: [x, y, z]}\nexclude:\n  - {b: y}\n");
        assert_eq!(lines, ["a=1 b=x", "a=3 b=z"]);
        // Everything excluded is zero tasks.
        let file = load("grid:\n  a: [1]\nexclude:\n  - {a: 1}\n");
        assert_eq!(file.spec.count(), 0);
        assert_eq!(file.spec.iter().count(), 0);
    }

    #[test]
    fn count_agrees_with_iteration_for_overlapping_rules() {
        let examples = [
            "grid: {a: [1, 2, 3], b: [1, 2, 3], c: [x, y]}\nexclude:\n  - {a: 1}\n  - {b: 1}\n  - {a: 1, b: 1}\n  - {a: 2, c: x}\n",
            "grid: {a: [1, 2, 1], b: [1, 2]}\nexclude:\n  - {a: 1}\n  - {a: 1.0, b: 2}\n",
            "grid: {a: [1, 2]}\nexclude:\n  - {a: 1}\n  - {a: 2}\n  - {a: 3}\n",
            "grid: {a: [1, 2, 3]}\npaired:\n  - g: {b: [1, 2, 3], c: [1, 1, 2]}\n  - h: {d: [1, 2]}\nrandom: {n: 4, params: {r: {choice: [1, 2]}}}\nexclude:\n  - {c: 1}\n  - {a: 1, r: 2}\n  - {b: 3, d: 2}\n  - {b: 1, c: 2}\n  - {a: 3, d: 1, r: 1}\n",
            "grid: {a: [1, 2, 3, 4], b: [1, 2, 3, 4], c: [1, 2, 3]}\nexclude:\n  - {a: 1, b: 1}\n  - {a: 1, b: 2}\n  - {a: 2, b: 1}\n  - {b: 3, c: 1}\n  - {a: 4}\n  - {c: 3}\n  - {a: 3, c: 2}\n  - {b: 4, c: 2}\n  - {a: 2, b: 2, c: 2}\n  - {a: 1, b: 3}\n  - {b: 2, c: 1}\n  - {a: 3, b: 4}\n  - {a: 2, c: 1}\n  - {b: 1, c: 2}\n",
        ];
        let counts: Vec<u64> = examples.iter().map(|t| assert_counts_agree(t)).collect();
        assert_eq!(counts[0], 18 - 6 - 6 + 2 - 2);
        assert_eq!(counts[1], 2);
        assert_eq!(counts[2], 0);
    }

    #[test]
    fn count_agrees_with_iteration_on_generated_sweeps() {
        // Small sweeps with random rules from our own generator: deterministic, no dependencies.
        let mut rng = SplitMix64::new(2024);
        let mut pick = |n: u64| rng.next_below(u128::from(n)) as u64;
        for _ in 0..60 {
            let mut text = String::from("grid:\n");
            let n_keys = 1 + pick(3);
            for k in 0..n_keys {
                text.push_str(&format!("  g{k}: {{range: [0, {}]}}\n", 1 + pick(3)));
            }
            text.push_str("paired:\n  - p: {q: [0, 1, 2, 0], s: [1, 1, 0, 0]}\nexclude:\n");
            let n_rules = 1 + pick(16);
            for _ in 0..n_rules {
                let mut rule = Vec::new();
                for k in 0..n_keys {
                    if pick(2) == 0 {
                        rule.push(format!("g{k}: {}", pick(3)));
                    }
                }
                if pick(3) == 0 {
                    rule.push(format!("q: {}", pick(3)));
                }
                if pick(3) == 0 {
                    rule.push(format!("s: {}", pick(2)));
                }
                if rule.is_empty() {
                    rule.push("q: 0".into());
                }
                text.push_str(&format!("  - {{{}}}\n", rule.join(", ")));
            }
            assert_counts_agree(&text);
        }
    }

    #[test]
    fn count_of_ten_million_tasks_does_not_enumerate() {
        let mut text = String::from("grid:\n");
        for k in 0..7 {
            text.push_str(&format!("  k{k}: {{range: [0, 10]}}\n"));
        }
        assert_eq!(load(&text).spec.count(), 10_000_000);
        // With overlapping excludes: 10^7 - 10^6 - 10^6 + 10^5.
        text.push_str("exclude:\n  - {k0: 0}\n  - {k6: 9}\n");
        assert_eq!(load(&text).spec.count(), 8_100_000);
        // More rules than inclusion-exclusion takes: 13 distinct values of k3 and k4 overlap.
        let mut many = text.clone();
        for v in 0..13 {
            many.push_str(&format!("  - {{k{}: {}}}\n", 3 + v % 2, v % 10));
        }
        // k0 = 0 or k6 = 9 or k3 in {0,2,4,6,8} or k4 in {1,3,5,7,9}: survivors have k0 != 0,
        // k6 != 9, k3 odd, k4 even.
        assert_eq!(load(&many).spec.count(), 9 * 9 * 5 * 5 * 1000);
    }

    /// The issue's 685-byte file: twenty generators of a million values each.
    fn twenty_ranges() -> String {
        let mut text = String::from("sweep:\n  grid:\n");
        for k in 0..20 {
            text.push_str(&format!("    p{k}: {{range: [0, 1000000, 1]}}\n"));
        }
        text
    }

    #[test]
    fn values_past_the_sweep_total_are_refused_once_before_any_is_made() {
        let found = problems(&twenty_ranges());
        assert_eq!(found.len(), 1, "{found:#?}");
        // p10 (line 13) is the first past 10 million; the total counts all twenty.
        assert!(
            found[0].starts_with("sweep.yaml:13:5:")
                && found[0].contains("20000000 values in all")
                && found[0].contains("limit of 10000000")
                && found[0].contains("`p10`"),
            "{found:#?}"
        );
        // Random samples count n × parameters; an exclude naming a refused parameter is not
        // also an unknown parameter.
        let mut random = String::from("random:\n  n: 1000000\n  params:\n");
        for k in 0..11 {
            random.push_str(&format!("    r{k}: {{uniform: [0.0, 1.0]}}\n"));
        }
        random.push_str("exclude:\n  - {r3: 0.5}\n");
        let found = problems(&random);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].starts_with("sweep.yaml:1:1:") && found[0].contains("11000000 values"),
            "{found:#?}"
        );
        // Paired items count each column.
        let paired = "paired:\n  - g: {a: {range: [0, 1000000]}, b: {range: [0, 1000000]}}\n  - h: {c: {range: [0, 1000000]}, d: {range: [0, 1000000]}}\n  - i: {e: {range: [0, 1000000]}, f: {range: [0, 1000000]}}\n  - j: {g: {range: [0, 1000000]}, h: {range: [0, 1000000]}}\n  - k: {i: {range: [0, 1000000]}, j: {range: [0, 1000000]}}\n  - l: {k: {range: [0, 1000000]}, l: {range: [0, 1000000]}}\n";
        let found = problems(paired);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].starts_with("sweep.yaml:7:5:") && found[0].contains("`k, l`"),
            "{found:#?}"
        );
    }

    #[test]
    fn counts_past_u64_say_so_instead_of_a_saturated_number() {
        // 10^20 tasks: past u64 (it printed as 18446744073709551615 before).
        let mut huge = String::from("grid:\n");
        for k in 0..4 {
            huge.push_str(&format!("  k{k}: {{range: [0, 100000]}}\n"));
        }
        let count = load(&huge).spec.count();
        assert_eq!(count, TaskCount::TooMany);
        assert_eq!(count.exact(), None);
        assert_eq!(count.to_string(), "2^64 or more");
        // Past 2^128, where even the product cannot be formed.
        let mut huger = String::from("grid:\n");
        for k in 0..8 {
            huger.push_str(&format!("  k{k}: {{range: [0, 100000]}}\n"));
        }
        huger.push_str("exclude:\n  - {k0: 0}\n");
        assert_eq!(load(&huger).spec.count().to_string(), "2^64 or more");
        // The largest u64 is still a number.
        assert_eq!(
            TaskCount::Exact(u64::MAX).to_string(),
            "18446744073709551615"
        );
        assert_eq!(TaskCount::Exact(7).to_string(), "7");
        assert_eq!(TaskCount::of(1u128 << 64), TaskCount::TooMany);
        assert_eq!(
            TaskCount::of(u128::from(u64::MAX)),
            TaskCount::Exact(u64::MAX)
        );
    }

    #[test]
    fn validation_reports_every_problem_with_positions_and_hints() {
        let text = "\
sweep:
  grid:
    seed: [1, 2]
    wd: []
    model:
      width: {linspce: [0, 1, 3]}
    lr: 0.1
  paired:
    - g:
        a: [1, 2]
        b: [1]
  gird: {}
";
        let found = problems(text);
        assert_eq!(
            found,
            [
                "sweep.yaml:4:5: grid.wd: empty list of values — give at least one value, e.g. wd: [1]",
                "sweep.yaml:6:15: grid.model.width: unknown generator `linspce` — did you mean \
                 `linspace`? (for a parameter named `model.width.linspce` write \
                 `width.linspce: [...]`)",
                "sweep.yaml:7:5: grid.lr: expected a list of values, got a number — write lr: [0.1]",
                "sweep.yaml:9:7: paired[0]: lengths differ: g.a has 2 values, g.b has 1 — \
                 parameters in one paired item are zipped, so each needs the same number of values",
                "sweep.yaml:12:3: sweep.gird: unknown key `gird` in sweep — did you mean `grid`?",
            ]
        );
    }

    #[test]
    fn unknown_top_level_keys_get_did_you_mean() {
        assert_eq!(
            problems("gird:\n  a: [1]\n"),
            ["sweep.yaml:1:1: gird: unknown key `gird` — did you mean `grid`?"]
        );
        let found = problems("parameters:\n  lr:\n    values: [1, 2]\nstrategy: grid\n");
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].starts_with("sweep.yaml:1:1: parameters: unknown key `parameters` — the `parameters:`/`values:` layout is not a sweep file here: write `grid:`"),
            "{found:?}"
        );
        let found = problems("colour: blue\n");
        assert!(
            found[0].contains("expected one of: sweep, grid"),
            "{found:?}"
        );
        let found = problems("sweep:\n  script: a.py\n");
        assert_eq!(
            found,
            ["sweep.yaml:2:3: sweep.script: `script` belongs at the top level, not under `sweep:` — move `script:` out of `sweep:`"]
        );
    }

    #[test]
    fn sections_both_inside_and_outside_sweep_are_a_problem() {
        let found = problems("sweep:\n  grid: {a: [1]}\ngrid:\n  b: [2]\n");
        assert_eq!(
            found,
            ["sweep.yaml:3:1: grid: `grid` is written at the top level while a `sweep:` section exists — move `grid:` under `sweep:`"]
        );
    }

    #[test]
    fn a_parameter_defined_twice_points_at_the_first_definition() {
        let found = problems(
            "grid:\n  lr: [1]\n  model.hidden: [1]\npaired:\n  - g: {lr: [1], b: [2]}\n  - h:\n      model: {hidden: [3]}\nrandom:\n  n: 2\n  params: {b: {uniform: [0, 1]}}\n",
        );
        assert_eq!(
            found,
            [
                "sweep.yaml:5:9: paired[0].g.lr: parameter `lr` is already defined in grid at line 2 — a parameter may be set in only one place across grid, paired and random",
                "sweep.yaml:7:15: paired[1].h.model.hidden: parameter `model.hidden` is already defined in grid at line 3 — a parameter may be set in only one place across grid, paired and random",
                "sweep.yaml:10:12: random.params.b: parameter `b` is already defined in paired[0] at line 5 — a parameter may be set in only one place across grid, paired and random",
            ]
        );
    }

    #[test]
    fn exclude_problems_name_unknown_parameters() {
        let found = problems("grid:\n  seed: [1]\n  lr: [0.1]\nexclude:\n  - {sed: 1}\n  - {optim: {lr: 1}}\n  - {}\n");
        assert_eq!(
            found,
            [
                "sweep.yaml:5:6: exclude[0].sed: unknown parameter `sed` in exclude rule — did you mean `seed`?",
                "sweep.yaml:6:6: exclude[1].optim: unknown parameter `optim` in exclude rule — known parameters: seed, lr",
                "sweep.yaml:7:5: exclude[2]: expected a mapping of parameter → value, got an empty mapping, which would exclude everything — e.g. `- {seed: 3, lr: 0.01}`",
            ]
        );
        let found = problems("grid: {a: [1]}\nexclude: {a: 1}\n");
        assert!(
            found[0].contains("exclude: expected a list of rules, got a mapping"),
            "{found:?}"
        );
        // An exclude on a parameter whose values were bad adds nothing to the first problem.
        assert_eq!(problems("grid: {a: 1}\nexclude: [{a: 1}]\n").len(), 1);
    }

    #[test]
    fn random_problems_are_reported() {
        let found = problems(
            "random:\n  n: 0\n  seeds: 1\n  params:\n    a: {unifrom: [0, 1]}\n    b: {loguniform: [0, 1]}\n    c: {randint: [1.5, 2]}\n    d: {choice: []}\n    e: [1, 2]\n    f: {normal: [0, 1]}\n",
        );
        assert_eq!(
            found,
            [
                "sweep.yaml:2:3: random.n: n must be between 1 and 1000000, got 0",
                "sweep.yaml:3:3: random.seeds: unknown key `seeds` in random — did you mean `seed`?",
                "sweep.yaml:5:9: random.params.a: unknown distribution `unifrom` — did you mean `uniform`?",
                "sweep.yaml:6:21: random.params.b: loguniform needs low > 0, got 0 — e.g. loguniform: [1.0e-5, 1.0e-1]",
                "sweep.yaml:7:18: random.params.c: randint needs whole numbers — e.g. randint: [0, 100] (both ends included)",
                "sweep.yaml:8:17: random.params.d: choice expects a list of values, got an empty list — e.g. choice: [16, 32, 64]",
                "sweep.yaml:9:5: random.params.e: expected a distribution such as {uniform: [0.0, 1.0]}, got a list — for a fixed list of values use grid",
                "sweep.yaml:10:9: random.params.f: unknown distribution `normal` — expected one of: uniform, loguniform, choice, randint",
            ]
        );
        assert_eq!(
            problems("random:\n  params: {a: {uniform: [0, 1]}}\n"),
            ["sweep.yaml:1:1: random: missing n, the number of samples — e.g. n: 20"]
        );
    }

    #[test]
    fn yaml_syntax_errors_become_one_problem_with_a_position() {
        let found = load_sweep_text("grid:\n  a: [1, 2\n  b: [3]\n")
            .err()
            .unwrap_or_default();
        assert_eq!(found.len(), 1);
        assert!(found[0].message.starts_with("invalid YAML: "), "{found:?}");
        assert!(found[0].pos.is_some());
        let found = load_sweep_text("grid:\n  a: [1]\n  a: [2]\n")
            .err()
            .unwrap_or_default();
        assert_eq!(found[0].pos, Some(Pos { line: 3, col: 3 }));
    }

    #[test]
    fn odd_documents_give_problems_not_panics() {
        let documents = [
            "- 1\n- 2\n",
            "42\n",
            "sweep: 3\n",
            "sweep: [grid]\n",
            "grid: [1, 2]\n",
            "grid: {a: {}}\n",
            "grid: {a: ~}\n",
            "grid: {'': [1]}\n",
            "grid: {? [1, 2] : [1]}\n",
            "grid: {a: {range: [0]}}\n",
            "grid: {a: {range: ~}}\n",
            "paired: 7\n",
            "paired: [7, {}, {g: ~}, {g: {}}, {g: {a: 1}}]\n",
            "random: []\n",
            "random: {n: 1.5, seed: x, params: []}\n",
            "random: {n: 100000000, params: {a: {uniform: [1, 0]}}}\n",
            "random: {n: 1, params: {a: {uniform: 1}}}\n",
            "random: {n: 1, params: {a: {}}}\n",
            "exclude: [1, [2]]\n",
            "grid: {a: [1]}\nexclude: [{a: {b: 1}}]\n",
            "grid: {a: {range: [-9223372036854775808, 9223372036854775807]}}\n",
            "grid: {a: {range: [9223372036854775807, -9223372036854775808, -1]}}\n",
            "grid: {a: {linspace: [-1.0e308, 1.0e308, 3]}}\n",
            "grid: {a: {logspace: [1.0e-300, 1.0e300, 3]}}\n",
        ];
        for text in documents {
            // Either outcome is fine; reaching here without a panic is the point, and any
            // problem must say where it is.
            if let Err(found) = load_sweep_text(text) {
                assert!(!found.is_empty(), "{text}");
                assert!(found.iter().all(|p| p.pos.is_some()), "{text}: {found:?}");
            }
        }
    }

    #[test]
    fn task_numbering_skips_excluded_combinations_lazily() {
        // A huge sweep whose first tasks come out immediately: iteration never materialises.
        let mut text = String::from("grid:\n");
        for k in 0..6 {
            text.push_str(&format!("  k{k}: {{range: [0, 1000]}}\n"));
        }
        text.push_str("exclude:\n  - {k5: 0}\n");
        let file = load(&text);
        assert_eq!(file.spec.count(), 1000u64.pow(5) * 999);
        let first: Vec<String> = file.spec.iter().take(2).map(|p| line(&p)).collect();
        assert_eq!(
            first,
            [
                "k0=0 k1=0 k2=0 k3=0 k4=0 k5=1",
                "k0=0 k1=0 k2=0 k3=0 k4=0 k5=2"
            ]
        );
    }
}
