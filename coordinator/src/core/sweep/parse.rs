//! Parsing and validating the sweep file's YAML tree into dimensions and exclude rules, every
//! problem collected with its position.

use super::*;
use crate::core::task_layout::{LayoutChoice, COMPACT_ABOVE};

/// Parses and validates a sweep document. Collects every problem before returning.
pub fn parse_sweep(root: Option<&Spanned>) -> Result<SweepFile, Vec<Problem>> {
    let mut builder = Builder::default();
    let mut sections = Sections::default();
    let mut script = None;
    let mut metadata = None;
    let mut defaults = None;
    let mut layout = LayoutChoice::Auto;
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
                    Some("layout") => match value.as_str().and_then(LayoutChoice::parse) {
                        Some(choice) => layout = choice,
                        None => builder.report(
                            value.pos,
                            "layout",
                            format!(
                                "expected one of auto, full, compact, got {}",
                                match value.as_str() {
                                    Some(word) => format!("`{word}`"),
                                    None => value.node.kind().to_string(),
                                }
                            ),
                            Some(format!(
                                "`full` keeps every task's directory and files, `compact` keeps \
                                 only what tasks leave; `auto` (the default) is compact above \
                                 {COMPACT_ABOVE} tasks"
                            )),
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
        layout,
    })
}

/// YAML text → [`SweepFile`]; a YAML syntax error becomes one problem with its position.
pub fn load_sweep_text(text: &str) -> Result<SweepFile, Vec<Problem>> {
    match yaml::parse(text) {
        Ok(root) => parse_sweep(root.as_ref()),
        Err(error) => Err(vec![error.problem()]),
    }
}

pub(super) fn kept_value(node: &Spanned) -> Option<Value> {
    match node.node {
        Node::Null => None,
        _ => Some(Value::from_node(node)),
    }
}

/// The four sweep sections as (key, value), wherever they were written.
#[derive(Default)]
pub(super) struct Sections<'a> {
    pub(super) grid: Option<(&'a Spanned, &'a Spanned)>,
    pub(super) paired: Option<(&'a Spanned, &'a Spanned)>,
    pub(super) random: Option<(&'a Spanned, &'a Spanned)>,
    pub(super) exclude: Option<(&'a Spanned, &'a Spanned)>,
}

impl<'a> Sections<'a> {
    pub(super) fn set(&mut self, key: &'a Spanned, value: &'a Spanned) {
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
pub(super) struct Definition {
    pub(super) pos: Pos,
    pub(super) section: String,
}

/// A parameter found while flattening nested mappings: its dotted name and its definition.
pub(super) struct Leaf<'a> {
    pub(super) name: String,
    pub(super) path: String,
    pub(super) key: &'a Spanned,
    pub(super) value: &'a Spanned,
}

/// What ends the descent into nested mappings: a list of values (or a generator) for grid and
/// paired, a distribution for random.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum LeafKind {
    Values,
    Distribution,
}

#[derive(Default)]
pub(super) struct Builder {
    pub(super) problems: Vec<Problem>,
    /// Every parameter name seen, even when its values were bad, so later duplicates and exclude
    /// rules can refer to it without piling follow-up problems onto the first one.
    pub(super) defined: IndexMap<String, Definition>,
    pub(super) planned: Vec<Planned>,
    /// Parameter name → (dimension, column), for parameters whose values were valid.
    pub(super) located: HashMap<String, (usize, usize)>,
    /// Values the planned dimensions will make, and every one refused after the total passed
    /// [`MAX_TOTAL_VALUES`].
    pub(super) total_values: u64,
    /// Where the total first passed [`MAX_TOTAL_VALUES`]; reported once, with the final total.
    pub(super) over_budget: Option<OverBudget>,
}

pub(super) struct OverBudget {
    pub(super) pos: Pos,
    pub(super) path: String,
    pub(super) name: String,
}

impl Builder {
    pub(super) fn report(&mut self, pos: Pos, path: &str, message: String, hint: Option<String>) {
        let mut problem = Problem::new(Some(pos), path, message);
        problem.hint = hint;
        self.problems.push(problem);
    }

    pub(super) fn unknown_key(&mut self, key: &Spanned, parent: &str, candidates: &[&str]) {
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

    pub(super) fn collect_wrapped<'a>(
        &mut self,
        wrapper: &'a Spanned,
        sections: &mut Sections<'a>,
    ) {
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
    pub(super) fn define(&mut self, name: &str, pos: Pos, path: &str, section: &str) -> bool {
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
    pub(super) fn add_dimension(
        &mut self,
        names: Vec<String>,
        rows: PlannedRows,
        pos: Pos,
        path: &str,
    ) {
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
    pub(super) fn name_part(&mut self, key: &Spanned, parent_path: &str) -> Option<String> {
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
    pub(super) fn flatten<'a>(
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
    pub(super) fn leaves<'a>(
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
    pub(super) fn values(&mut self, leaf: &Leaf<'_>) -> Option<Column> {
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
}

pub(super) fn join_path(parent: &str, part: &str) -> String {
    if parent.is_empty() {
        part.to_string()
    } else {
        format!("{parent}.{part}")
    }
}

/// The first few names, for hints that list what exists.
pub(super) fn preview(names: &[&str]) -> String {
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
pub(super) fn scalar_text(node: &Spanned) -> String {
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

pub(super) fn float_text(f: f64) -> String {
    let text = format!("{f:?}");
    if text.contains(['.', 'e', 'E', 'i', 'N']) {
        text
    } else {
        format!("{text}.0")
    }
}
