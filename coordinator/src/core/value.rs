//! Parameter values and parameter sets: the typed values a sweep assigns to each task, their
//! canonical text form, and the stable hash that identifies a combination across runs.

use crate::yaml::{Node, Spanned};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One parameter value. Serialized untagged, so JSON and YAML views show plain values; read
/// back by `ValueVisitor` (as serde's untagged reading would, without trying each variant in
/// turn: a million tasks' parameters are read at a sweep's start and in its views).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Value>),
    Map(IndexMap<String, Value>),
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> serde::de::Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a parameter value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    /// Past `i64::MAX` a number is kept as a float, as the untagged reading did.
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or(Value::Float(v as f64), Value::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::List(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = IndexMap::new();
        while let Some((k, v)) = map.next_entry::<String, Value>()? {
            out.insert(k, v);
        }
        Ok(Value::Map(out))
    }
}

/// A task's parameters in sweep order (grid keys, then paired keys, then random keys).
pub type Params = IndexMap<String, Value>;

impl Value {
    /// Converts a YAML node (positions dropped). Mapping keys become their text.
    pub fn from_node(node: &Spanned) -> Value {
        match &node.node {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Int(i) => Value::Int(*i),
            Node::Float(f) => Value::Float(*f),
            Node::Str(s) => Value::Str(s.clone()),
            Node::Seq(items) => Value::List(items.iter().map(Value::from_node).collect()),
            Node::Map(entries) => Value::Map(
                entries
                    .iter()
                    .map(|(k, v)| (k.key_text(), Value::from_node(v)))
                    .collect(),
            ),
        }
    }

    /// Equality used by `exclude`: numbers compare by value (`1` matches `1.0`), everything else
    /// structurally.
    pub fn matches(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Int(a), Value::Float(b)) | (Value::Float(b), Value::Int(a)) => *a as f64 == *b,
            (Value::List(a), Value::List(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.matches(y))
            }
            _ => self == other,
        }
    }

    /// Canonical text used for hashing: JSON with mapping keys sorted, floats in shortest
    /// round-trip form with a type marker so that `1` and `1.0` hash differently.
    fn write_canonical(&self, out: &mut String) {
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => out.push_str(&i.to_string()),
            Value::Float(f) => {
                out.push_str("f:");
                out.push_str(&format!("{f:?}"));
            }
            Value::Str(s) => out.push_str(&serde_json::to_string(s).unwrap_or_default()),
            Value::List(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write_canonical(out);
                }
                out.push(']');
            }
            Value::Map(map) => write_canonical_map(map, out),
        }
    }
}

fn write_canonical_map(map: &IndexMap<String, Value>, out: &mut String) {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    out.push('{');
    for (i, key) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(key).unwrap_or_default());
        out.push(':');
        map[key].write_canonical(out);
    }
    out.push('}');
}

/// A stable identity of a parameter combination: the first 16 hex digits of the SHA-256 of its
/// canonical form. Key order does not matter; value types do. Completion matches tasks by this.
pub fn params_hash(params: &Params) -> String {
    let mut canonical = String::new();
    write_canonical_map(params, &mut canonical);
    let digest = Sha256::digest(canonical.as_bytes());
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(16);
    for b in &digest[..8] {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
    out
}

/// The narrowest task numbers are zero-padded to (Python HSM's `task_001`); also the width of
/// every sweep created before the width was recorded.
pub const MIN_TASK_WIDTH: usize = 3;

/// The width task numbers are zero-padded to in a sweep of `n_tasks`: every name of the sweep
/// is as wide as its last, so they sort (`task_0001` … `task_1000`).
pub fn task_width(n_tasks: u64) -> usize {
    (n_tasks.max(1).ilog10() as usize + 1).max(MIN_TASK_WIDTH)
}

/// `task_001` … `task_999`, `task_1000` …: the task id of a 1-based index with the sweep's
/// `MIN_TASK_WIDTH` (a sweep of up to 999 tasks, or one created before widths were recorded).
pub fn task_name(index: u64) -> String {
    task_name_in(index, MIN_TASK_WIDTH)
}

/// The task id of a 1-based index in a sweep whose numbers are `width` digits wide.
pub fn task_name_in(index: u64, width: usize) -> String {
    format!("task_{index:0width$}")
}

/// Parses `task_007` (or `7`) back into its index.
pub fn parse_task_name(text: &str) -> Option<u64> {
    let digits = text.strip_prefix("task_").unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&i| i > 0)
}

/// Parameters from `(name, value)` pairs: what unit tests build tasks from.
#[cfg(test)]
pub(crate) fn params_from(pairs: &[(&str, Value)]) -> Params {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_back_from_json_as_written() {
        let value = Value::List(vec![
            Value::Null,
            Value::Bool(true),
            Value::Int(-3),
            Value::Float(0.5),
            Value::Str("1e-3".into()),
            Value::Map(
                [("z", Value::Int(1)), ("a", Value::List(vec![]))]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            ),
        ]);
        let text = serde_json::to_string(&value).unwrap();
        assert_eq!(text, r#"[null,true,-3,0.5,"1e-3",{"z":1,"a":[]}]"#);
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), value);
        // Past i64 a number is a float, as before.
        assert_eq!(
            serde_json::from_str::<Value>("18446744073709551615").unwrap(),
            Value::Float(u64::MAX as f64)
        );
        assert_eq!(
            serde_json::from_str::<Value>("2.0").unwrap(),
            Value::Float(2.0)
        );
    }

    use super::params_from as params;

    #[test]
    fn hash_ignores_key_order_but_not_types() {
        let a = params(&[("lr", Value::Float(0.1)), ("seed", Value::Int(1))]);
        let b = params(&[("seed", Value::Int(1)), ("lr", Value::Float(0.1))]);
        assert_eq!(params_hash(&a), params_hash(&b));
        let c = params(&[("seed", Value::Float(1.0)), ("lr", Value::Float(0.1))]);
        assert_ne!(params_hash(&a), params_hash(&c));
        let d = params(&[("seed", Value::Str("1".into())), ("lr", Value::Float(0.1))]);
        assert_ne!(params_hash(&a), params_hash(&d));
        assert_eq!(params_hash(&a).len(), 16);
    }

    #[test]
    fn hash_is_stable_across_releases() {
        // Pinned: changing the canonical form would make `sweep complete` re-run finished tasks.
        let p = params(&[
            ("lr", Value::Float(0.001)),
            ("model", Value::Str("cnn".into())),
        ]);
        assert_eq!(params_hash(&p), "d5b447aae2d3cf0b");
    }

    #[test]
    fn task_names_round_trip() {
        assert_eq!(task_name(7), "task_007");
        assert_eq!(task_name(1000), "task_1000");
        assert_eq!(task_width(0), 3);
        assert_eq!(task_width(999), 3);
        assert_eq!(task_width(1000), 4);
        assert_eq!(task_width(10_000), 5);
        assert_eq!(task_name_in(1, task_width(1000)), "task_0001");
        assert_eq!(task_name_in(1000, task_width(1000)), "task_1000");
        assert_eq!(parse_task_name("task_0007"), Some(7));
        assert_eq!(parse_task_name("task_007"), Some(7));
        assert_eq!(parse_task_name("12"), Some(12));
        assert_eq!(parse_task_name("task_0"), None);
        assert_eq!(parse_task_name("task_x"), None);
    }

    #[test]
    fn exclude_matching_compares_numbers_by_value() {
        assert!(Value::Int(1).matches(&Value::Float(1.0)));
        assert!(!Value::Int(1).matches(&Value::Str("1".into())));
    }
}
