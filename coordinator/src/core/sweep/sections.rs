//! The sweep file's sections — `grid`, `paired`, `random` (its distributions), the value
//! generators' arguments and `exclude` rules — parsed into the builder's dimensions and rules.

use super::*;

impl Builder {
    pub(super) fn parse_grid(&mut self, key: &Spanned, section: &Spanned) {
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

    pub(super) fn parse_paired(&mut self, key: &Spanned, section: &Spanned) {
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
    pub(super) fn parse_paired_item(&mut self, index: usize, item: &Spanned) {
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

    pub(super) fn parse_random(&mut self, key: &Spanned, section: &Spanned) {
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

    pub(super) fn distribution(&mut self, leaf: &Leaf<'_>) -> Option<Distribution> {
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
    pub(super) fn numeric_args(
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

    pub(super) fn generate(
        &mut self,
        leaf: &Leaf<'_>,
        generator: &Spanned,
        args: &Spanned,
    ) -> Option<Column> {
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

    pub(super) fn parse_exclude(&mut self, key: &Spanned, section: &Spanned) -> Vec<Rule> {
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

    pub(super) fn rule_constraints(
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
