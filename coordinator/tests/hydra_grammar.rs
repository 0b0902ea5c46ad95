//! Checks `core::render`'s Hydra overrides against hydra-core itself: every rendered override is
//! parsed by Hydra's `OverridesParser` and applied to a config the way Hydra's config loader does
//! (`OmegaConf.update(cfg, key, value, merge=True)`), and the value the app would see must equal
//! the intended value, type included. Skipped, with a note, when python3 cannot `import hydra`.

use hsm_coordinator::core::render::{check_hydra_value, hydra_override, python_float_repr};
use hsm_coordinator::core::value::Value;
use indexmap::IndexMap;
use serde_json::{json, Value as Json};
use std::process::Command;

/// Parses each argv element as an override, then reports what Hydra parsed (`.value()`) and what
/// the app sees after OmegaConf resolves the config, as JSON with explicit Python type names.
const CHECKER: &str = r#"
import json, sys
import hydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

def enc(x):
    if x is None:
        return {"t": "null"}
    if isinstance(x, bool):
        return {"t": "bool", "v": x}
    if isinstance(x, int):
        return {"t": "int", "v": str(x)}
    if isinstance(x, float):
        return {"t": "float", "v": repr(x)}
    if isinstance(x, str):
        return {"t": "str", "v": x}
    if isinstance(x, list):
        return {"t": "list", "v": [enc(i) for i in x]}
    if isinstance(x, dict):
        return {"t": "dict", "v": [[enc(k), enc(v)] for k, v in x.items()]}
    return {"t": type(x).__name__, "v": repr(x)}

parser = OverridesParser.create()
results = []
for text in sys.argv[1:]:
    try:
        override = parser.parse_overrides([text])[0]
        parsed = override.value()
        cfg = OmegaConf.create({})
        key = override.key_or_group
        OmegaConf.update(cfg, key, parsed, merge=True, force_add=True)
        seen = OmegaConf.to_container(cfg, resolve=True)[key]
        results.append({"ok": True, "type": str(override.value_type), "parsed": enc(parsed), "seen": enc(seen)})
    except Exception as e:
        results.append({"ok": False, "error": type(e).__name__ + ": " + str(e)})
print(json.dumps({"version": hydra.__version__, "results": results}))
"#;

fn hydra_available() -> bool {
    Command::new("python3")
        .args(["-c", "import hydra"])
        .output()
        .map(|out| out.status.success())
        .unwrap_or(false)
}

/// The intended value in the checker's encoding.
fn expect(v: &Value) -> Json {
    match v {
        Value::Null => json!({"t": "null"}),
        Value::Bool(b) => json!({"t": "bool", "v": b}),
        Value::Int(i) => json!({"t": "int", "v": i.to_string()}),
        Value::Float(f) => json!({"t": "float", "v": python_float_repr(*f)}),
        Value::Str(s) => json!({"t": "str", "v": s}),
        Value::List(items) => {
            json!({"t": "list", "v": items.iter().map(expect).collect::<Vec<_>>()})
        }
        Value::Map(map) => json!({
            "t": "dict",
            "v": map.iter().map(|(k, v)| json!([{"t": "str", "v": k}, expect(v)])).collect::<Vec<_>>(),
        }),
    }
}

/// Equality of encoded values; floats compare as numbers (NaN equals NaN, -0.0 differs from 0.0).
fn same(a: &Json, b: &Json) -> bool {
    if a["t"] == "float" && b["t"] == "float" {
        let parse = |j: &Json| j["v"].as_str().and_then(|s| s.parse::<f64>().ok());
        return match (parse(a), parse(b)) {
            (Some(x), Some(y)) => (x.is_nan() && y.is_nan()) || x.to_bits() == y.to_bits(),
            _ => false,
        };
    }
    match (a, b) {
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same(v, w))
        }
        _ => a == b,
    }
}

fn contains_interpolation(v: &Value) -> bool {
    match v {
        Value::Str(s) => s.contains("${"),
        Value::List(items) => items.iter().any(contains_interpolation),
        Value::Map(map) => map.values().any(contains_interpolation),
        _ => false,
    }
}

fn s(text: &str) -> Value {
    Value::Str(text.into())
}

fn list(items: Vec<Value>) -> Value {
    Value::List(items)
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<IndexMap<_, _>>(),
    )
}

fn hand_picked() -> Vec<Value> {
    let mut values = vec![
        Value::Null,
        Value::Bool(true),
        Value::Bool(false),
        Value::Int(0),
        Value::Int(42),
        Value::Int(-7),
        Value::Int(i64::MAX),
        Value::Int(i64::MIN),
    ];
    for f in [
        1.0,
        0.1,
        -2.5,
        1e-5,
        1e-4,
        1.5e-7,
        1e16,
        1e15,
        123456789012345680.0,
        1e300,
        -1e-300,
        5e-324,
        -0.0,
        0.0,
        100.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
    ] {
        values.push(Value::Float(f));
    }
    for text in [
        "",
        " ",
        "adam",
        "resnet_50",
        "foo-bar",
        "a.b.c",
        "/data/x.csv",
        "./rel/path",
        "_x",
        "Infinity",
        "nullable",
        "true_x",
        "1",
        "1.5",
        "-3",
        "+3",
        "1e-3",
        "1E5",
        "1_000",
        ".5",
        "5.",
        "01",
        "1.2.3",
        "true",
        "True",
        "FALSE",
        "null",
        "NULL",
        "None",
        "inf",
        "-inf",
        "nan",
        "NaN",
        "hello world",
        " leading",
        "trailing ",
        "  both  ",
        "tab\there",
        "a,b",
        "a=b",
        "a:b",
        "key: value",
        "[x]",
        "{x}",
        "(x)",
        "f(x)",
        "choice(a,b)",
        "range(1,3)",
        "interval(0,1)",
        "glob(*)",
        "$",
        "$HOME",
        "$$",
        "${x}",
        "${",
        "a${b.c}d",
        "${oc.env:USER}",
        "\\${x}",
        "\\\\${x}",
        "$${x}",
        "it's",
        "say \"hi\"",
        "both ' and \"",
        "'",
        "\"",
        "''",
        "\"\"",
        "\\",
        "\\\\",
        "ends\\",
        "C:\\path\\to",
        "a\\'b",
        "a\\\"b",
        "\\'",
        "x\\\\'y",
        "héllo",
        "日本語",
        "emoji 🎉",
        "a\nb",
        "-",
        "+",
        "~",
        "~x",
        "@x",
        "a@b",
        "a?b",
        "a|b",
        "50%",
        "*",
        "a#b",
        "#comment",
        "a;b",
        "a&b",
        "a!b",
        "`cmd`",
        "<x>",
        "'quoted'",
        "\"dq\"",
    ] {
        values.push(s(text));
    }
    values.extend([
        list(vec![]),
        list(vec![
            Value::Int(1),
            Value::Float(2.0),
            s("three"),
            Value::Null,
            Value::Bool(true),
        ]),
        list(vec![s("a,b"), s("c d"), s("1"), s(""), s("it's")]),
        list(vec![
            list(vec![Value::Int(1), Value::Int(2)]),
            list(vec![]),
            list(vec![s("x,y")]),
        ]),
        list(vec![list(vec![list(vec![Value::Float(-1e-5)])])]),
        list(vec![s("${x}"), s("]"), s("["), s("\\")]),
        map(vec![]),
        map(vec![
            ("lr", Value::Float(0.1)),
            ("name", s("1")),
            ("tags", list(vec![s("a b")])),
        ]),
        map(vec![(
            "sub",
            map(vec![("deep", map(vec![("x", Value::Null)]))]),
        )]),
        map(vec![
            ("a b", Value::Int(1)),
            ("x:y", Value::Int(2)),
            ("p/q.r", Value::Int(3)),
            ("$k", Value::Int(4)),
            ("(){}[]=,\\", Value::Int(5)),
            (" pad ", Value::Int(6)),
            ("tab\tkey", Value::Int(7)),
            ("a-b+c%d*e@f?g|h", Value::Int(8)),
            ("1x", Value::Int(9)),
            ("${k}", Value::Int(10)),
        ]),
        map(vec![("s", s("${x} it's, [1]"))]),
    ]);
    values
}

/// Deterministic pseudo-random strings over the characters that matter to the two grammars.
fn generated(count: usize) -> Vec<Value> {
    const ALPHABET: &[char] = &[
        'a', 'e', 'n', 'T', '1', '0', '_', '-', '+', '.', '/', ' ', '\t', '\'', '"', '\\', ',',
        '=', ':', '$', '{', '}', '[', ']', '(', ')', '@', '?', '|', '%', '*', '#', '~', '!', 'é',
        '\n',
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    let mut values = Vec::new();
    while values.len() < count {
        let len = next() % 9;
        let text: String = (0..len)
            .map(|_| ALPHABET[next() % ALPHABET.len()])
            .collect();
        if text != "???" {
            values.push(s(&text));
        }
    }
    values
}

/// Runs the checker on the overrides; `None` when hydra-core is not importable.
fn run_checker(overrides: &[String]) -> Option<(String, Vec<Json>)> {
    if !hydra_available() {
        println!("SKIPPED: hydra-core not installed (pip install hydra-core)");
        return None;
    }
    let output = Command::new("python3")
        .arg("-c")
        .arg(CHECKER)
        .args(overrides)
        .output()
        .expect("run python3");
    assert!(
        output.status.success(),
        "checker failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Json = serde_json::from_slice(&output.stdout).expect("checker prints JSON");
    let version = report["version"].as_str().unwrap_or("?").to_string();
    let results = report["results"].as_array().expect("results").clone();
    assert_eq!(results.len(), overrides.len());
    println!("hydra-core {version} checked {} overrides", overrides.len());
    Some((version, results))
}

#[test]
fn hydra_reads_back_every_rendered_value() {
    let mut cases: Vec<(Value, Json)> = hand_picked()
        .into_iter()
        .chain(generated(400))
        .map(|v| {
            let expected = expect(&v);
            (v, expected)
        })
        .collect();
    // Keys Hydra reads as another scalar arrive as that scalar (documented in render.rs).
    for (key, reading) in [
        ("1", json!({"t": "int", "v": "1"})),
        ("-2", json!({"t": "int", "v": "-2"})),
        ("0.5", json!({"t": "float", "v": "0.5"})),
        ("1e3", json!({"t": "float", "v": "1000.0"})),
        ("true", json!({"t": "bool", "v": true})),
    ] {
        let expected = json!({"t": "dict", "v": [[reading, {"t": "str", "v": "x"}]]});
        cases.push((map(vec![(key, s("x"))]), expected));
    }

    for (value, _) in &cases {
        check_hydra_value(value).unwrap_or_else(|e| panic!("{value:?} rejected: {e}"));
    }
    let overrides: Vec<String> = cases.iter().map(|(v, _)| hydra_override("v", v)).collect();
    let Some((_, results)) = run_checker(&overrides) else {
        return;
    };

    let mut failures = Vec::new();
    for (((value, expected), rendered), result) in cases.iter().zip(&overrides).zip(&results) {
        if result["ok"] != true {
            failures.push(format!("{value:?} as {rendered}: {}", result["error"]));
            continue;
        }
        if !same(&result["seen"], expected) {
            failures.push(format!(
                "{value:?} as {rendered}: the app sees {}, expected {expected}",
                result["seen"]
            ));
        }
        // Before OmegaConf, only escaped interpolations (`\${`) may differ from the intent.
        if !contains_interpolation(value) && !same(&result["parsed"], expected) {
            failures.push(format!(
                "{value:?} as {rendered}: Hydra parses {}, expected {expected}",
                result["parsed"]
            ));
        }
        if result["type"] != "ValueType.ELEMENT" {
            failures.push(format!(
                "{value:?} as {rendered}: parsed as {}, not a single element",
                result["type"]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} overrides did not round-trip:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// `check_hydra_value` predicts which pairs of mapping keys Hydra folds into one dictionary key;
/// Hydra's answer is whether the parsed dict still has two entries.
#[test]
fn key_collisions_match_hydra() {
    const ALPHABET: &[char] = &['0', '1', '5', '_', '.', 'e', 'E', '+', '-', 'i', 'n', 'f'];
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    let mut random_key = || -> String {
        let len = 1 + next() % 5;
        (0..len)
            .map(|_| ALPHABET[next() % ALPHABET.len()])
            .collect()
    };
    let fixed = [
        "1", "1.0", "true", "True", "false", "0", "-0", "0.0", "-0.0", "10", "1_0", "1e1",
        "1E+0_1", "5.", ".5", "0.5", "5e-1", "inf", "+inf", "-inf", "INF", "nan", "NaN", "01",
        "1.e5", "100000.0", "1 ", "a",
    ];
    let mut pairs: Vec<(String, String)> = Vec::new();
    for a in fixed {
        for b in fixed {
            if a < b {
                pairs.push((a.into(), b.into()));
            }
        }
    }
    while pairs.len() < 1200 {
        let (a, b) = (random_key(), random_key());
        if a != b {
            pairs.push((a, b));
        }
    }

    let maps: Vec<Value> = pairs
        .iter()
        .map(|(a, b)| map(vec![(a, Value::Int(1)), (b, Value::Int(2))]))
        .collect();
    let overrides: Vec<String> = maps.iter().map(|m| hydra_override("v", m)).collect();
    let Some((_, results)) = run_checker(&overrides) else {
        return;
    };
    let mut failures = Vec::new();
    for (((a, b), value), result) in pairs.iter().zip(&maps).zip(&results) {
        let predicted = check_hydra_value(value).is_err();
        let hydra_folds = match result["parsed"]["v"].as_array() {
            Some(entries) => entries.len() < 2,
            None => {
                failures.push(format!("{a:?}, {b:?}: {}", result));
                continue;
            }
        };
        if predicted != hydra_folds {
            failures.push(format!(
                "{a:?}, {b:?}: predicted collision {predicted}, Hydra folds {hydra_folds}: {}",
                result["parsed"]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} key pairs mispredicted:\n{}",
        failures.len(),
        pairs.len(),
        failures.join("\n")
    );
}

/// `python_float_repr` against Python's own `repr(float)` on random bit patterns and edge cases.
/// Needs only python3; skipped without it.
#[test]
fn float_repr_matches_python() {
    let mut state: u64 = 0xdead_beef_cafe_f00d;
    let mut floats: Vec<f64> = vec![
        0.0,
        -0.0,
        1.0,
        0.1,
        1e-4,
        9.999999999999999e-5,
        1e-5,
        1e16,
        9999999999999998.0,
        1e22,
        f64::MAX,
        f64::MIN_POSITIVE,
        5e-324,
        f64::EPSILON,
        123456789012345680.0,
    ];
    while floats.len() < 3000 {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let f = if floats.len().is_multiple_of(2) {
            f64::from_bits(state)
        } else {
            // Human-scale values: a few digits at exponents around the notation switch.
            let digits = (state >> 40) % 100_000;
            let exponent = ((state >> 20) % 44) as i32 - 22;
            digits as f64 * 10f64.powi(exponent)
        };
        if f.is_finite() {
            floats.push(f);
        }
    }
    let bits: Vec<String> = floats.iter().map(|f| f.to_bits().to_string()).collect();
    let script = "import struct, sys\nfor b in sys.argv[1:]:\n    print(repr(struct.unpack('<d', struct.pack('<Q', int(b)))[0]))";
    let Ok(output) = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(&bits)
        .output()
    else {
        println!("SKIPPED: python3 not found");
        return;
    };
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let reprs: Vec<&str> = stdout.lines().collect();
    assert_eq!(reprs.len(), floats.len());
    let mismatches: Vec<String> = floats
        .iter()
        .zip(&reprs)
        .filter(|(f, repr)| python_float_repr(**f) != **repr)
        .map(|(f, repr)| format!("{f:?}: ours {}, Python {repr}", python_float_repr(*f)))
        .collect();
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
