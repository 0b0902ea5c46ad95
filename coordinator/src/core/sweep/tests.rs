//! Tests of sweep parsing, counting and expansion.

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
        [
            "sweep.yaml:3:7: paired[0]: lengths differ: model_and_data.model.name has 3 values, \
              model_and_data.data.augmentation has 2 — parameters in one paired item are zipped, \
              so each needs the same number of values"
        ]
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

/// The 685-byte file: twenty generators of a million values each.
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
    let found = problems(
        "grid:\n  seed: [1]\n  lr: [0.1]\nexclude:\n  - {sed: 1}\n  - {optim: {lr: 1}}\n  - {}\n",
    );
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

#[test]
fn layout_is_read_and_a_wrong_one_is_named_with_its_line() {
    use crate::core::task_layout::LayoutChoice;
    assert_eq!(load("grid: {x: [1]}\n").layout, LayoutChoice::Auto);
    assert_eq!(
        load("layout: compact\ngrid: {x: [1]}\n").layout,
        LayoutChoice::Compact
    );
    assert_eq!(
        load("sweep: {grid: {x: [1]}}\nlayout: full\n").layout,
        LayoutChoice::Full
    );
    let bad = problems("grid: {x: [1]}\nlayout: tiny\n");
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(
        bad[0].contains("sweep.yaml:2") && bad[0].contains("`tiny`") && bad[0].contains("compact"),
        "{bad:?}"
    );
    let nested = problems("sweep: {grid: {x: [1]}, layout: compact}\n");
    assert!(nested[0].contains("top level"), "{nested:?}");
}
