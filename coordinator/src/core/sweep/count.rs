//! Counting a sweep's tasks without enumerating them: the odometer's size minus the rows the
//! `exclude` rules remove (inclusion–exclusion over few rules, classes of rows over many).

use super::*;

pub(super) fn count_tasks(dims: &[Dimension], rules: &[Rule]) -> TaskCount {
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
pub(super) type RowSets = BTreeMap<usize, Rc<Vec<usize>>>;

/// For one rule: (dimension, rows it matches there) for each dimension it constrains.
pub(super) type RuleRows = Vec<(usize, Rc<Vec<usize>>)>;

/// For each dimension a rule constrains: the rows of that dimension the rule matches, ascending.
pub(super) fn matching_rows(dims: &[Dimension], rule: &Rule) -> RuleRows {
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

pub(super) fn intersect(a: &[usize], b: &[usize]) -> Vec<usize> {
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
pub(super) fn excluded_by_inclusion_exclusion(dims: &[Dimension], rules: &[Rule]) -> Option<u128> {
    let per_rule: Vec<_> = rules.iter().map(|r| matching_rows(dims, r)).collect();
    // sums[1] collects odd-sized subsets (added), sums[0] even-sized ones (subtracted).
    let mut sums = [0u128; 2];
    visit_subsets(dims, &per_rule, 0, &BTreeMap::new(), 1, &mut sums)?;
    sums[1].checked_sub(sums[0])
}

pub(super) fn visit_subsets(
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
pub(super) struct Level {
    /// (bitset of rules satisfied on this dimension, number of rows with exactly that set).
    /// Rows satisfying no rule are left out: no combination through them is excluded.
    pub(super) classes: Vec<(Vec<u64>, u128)>,
    /// Rules whose last constrained dimension is this one.
    pub(super) finished: Vec<u64>,
    /// Rows of all later levels multiplied together.
    pub(super) rows_after: u128,
}

/// |union of rules| by enumerating the product of row classes over the dimensions rules touch.
/// Rows of one dimension that satisfy the same set of rules are interchangeable, so the product
/// is over classes (usually a handful per dimension), not rows; unconstrained dimensions only
/// multiply the result. Used when there are too many rules for inclusion–exclusion.
pub(super) fn excluded_by_classes(dims: &[Dimension], rules: &[Rule]) -> u128 {
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
pub(super) fn visit_classes(levels: &[Level], level: usize, alive: &[u64], weight: u128) -> u128 {
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
