//! Rendering parameter values as command-line arguments: Hydra's override grammar (`key=value`,
//! typed so that a `@hydra.main` app receives exactly the intended value) and argparse's
//! `--key value`, plus Python's `repr()` of floats that both of them rely on.
//!
//! The Hydra rules follow hydra-core 1.3's grammar, `hydra/grammar/OverrideLexer.g4` and
//! `OverrideParser.g4` (facebookresearch/hydra), and the visitor that turns parse trees into
//! values, `hydra/core/override_parser/overrides_visitor.py`; string leaves then pass through
//! OmegaConf, whose `${` handling follows `omegaconf/grammar/OmegaConfGrammarLexer.g4` and
//! `omegaconf/grammar_visitor.py` (omry/omegaconf 2.3). `coordinator/tests/hydra_grammar.rs` checks
//! the result against the real parser when hydra-core is installed.

use crate::core::value::Value;
use indexmap::IndexMap;

/// A value that the Hydra override grammar (or OmegaConf behind it) cannot deliver intact.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RenderError {
    /// Hydra's dictionary keys cannot be quoted, so only some characters can be written at all.
    #[error(
        "mapping key {key:?} cannot be passed to Hydra: keys must be non-empty, not `null`, and use \
         only ASCII letters, digits, spaces and `_-/\\+.$%*@?|()[]{{}}:=,`"
    )]
    UnrepresentableKey { key: String },
    /// Two keys that Hydra reads as the same dictionary key (`1` and `1.0`, `1` and `true`).
    #[error("mapping keys {first:?} and {second:?} reach Hydra as the same key")]
    CollidingKeys { first: String, second: String },
    /// OmegaConf turns the string `???` into its missing-value marker, whatever the quoting.
    #[error("the string '???' is OmegaConf's missing-value marker and cannot be passed to Hydra")]
    MissingMarker,
}

/// Python's `repr()` of a float: the shortest digits that round-trip, in fixed notation when
/// `1e-4 <= |x| < 1e16` (always with a fractional part, `1.0`) and otherwise in exponent notation
/// with a sign and at least two exponent digits (`1e-05`, `1.5e+16`); `inf`, `-inf`, `nan`.
///
/// Python's own float parsing, Hydra's `FLOAT` token and argparse's `type=float` all read this back
/// to the same float, and it keeps a float a float (`1.0`, never `1`).
pub fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    // Rust's `{:e}` prints the shortest round-trip digits, as Python's repr does (both pick the
    // closest shortest decimal), e.g. `1.2345678901234568e17`; only the layout differs.
    let scientific = format!("{:e}", f.abs());
    let Some((mantissa, exponent)) = scientific.split_once('e') else {
        return format!("{f:?}");
    };
    let Ok(exponent) = exponent.parse::<i32>() else {
        return format!("{f:?}");
    };
    let sign = if f < 0.0 { "-" } else { "" };
    // Python's float_repr_style 'short' switches to exponent notation when the decimal point
    // position is below -4 or above 16 (Objects/floatobject.c, `float_repr` with mode 'r').
    if (-4..16).contains(&exponent) {
        let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
        let fixed = if exponent >= 0 {
            let int_len = exponent as usize + 1;
            if digits.len() <= int_len {
                format!("{digits}{}.0", "0".repeat(int_len - digits.len()))
            } else {
                format!("{}.{}", &digits[..int_len], &digits[int_len..])
            }
        } else {
            format!("0.{}{digits}", "0".repeat((-exponent - 1) as usize))
        };
        format!("{sign}{fixed}")
    } else {
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{exp_sign}{:02}", exponent.unsigned_abs())
    }
}

/// The value part of a Hydra override (`key=<this>`), written so that Hydra's override parser
/// and then OmegaConf hand the app exactly `v`:
///
/// - ints as digits, floats in Python repr (`1.0`, `1e-05`, `inf`), `true`/`false`, `null`;
/// - strings bare only when they are ID-like (letters, digits, `_./-`, starting with a letter, `_`
///   or `/`) and not one of Hydra's keywords; otherwise single-quoted (double-quoted when the string
///   contains `'` but no `"`), with backslashes doubled only where they precede a quote, which is
///   the one escape Hydra's quoted values know;
/// - `${` inside a string is written `\${` (OmegaConf's escaped interpolation) so the text arrives
///   literally instead of being resolved;
/// - lists `[a,b]` and mappings `{k:v}`, recursively.
///
/// Some values cannot be passed at all (see [`check_hydra_value`]); this function still renders
/// them as well as the grammar allows, so callers that care must check first.
pub fn hydra_value(v: &Value) -> String {
    let mut out = String::new();
    write_hydra_value(v, &mut out);
    out
}

/// `key=value` with the value rendered by [`hydra_value`]. The key is written as given: it may
/// carry Hydra's `+`, `++` or `~` prefixes, which a sweep uses to add keys missing from the config.
pub fn hydra_override(key: &str, v: &Value) -> String {
    format!("{key}={}", hydra_value(v))
}

/// Reports values that [`hydra_value`] cannot deliver intact: mapping keys Hydra cannot express
/// (dictionary keys have no quoted form in the grammar) and the string `???`, which OmegaConf
/// reads as a missing mandatory value.
///
/// Keys that Hydra reads as another scalar (`1`, `0.5`, `true`) are accepted and arrive as that
/// int, float or bool: a sweep file's `{1: a}` reaches us with the key as text, so this is the
/// reading the file most likely meant.
pub fn check_hydra_value(v: &Value) -> Result<(), RenderError> {
    match v {
        Value::Str(s) if s == "???" => Err(RenderError::MissingMarker),
        Value::List(items) => items.iter().try_for_each(check_hydra_value),
        Value::Map(map) => {
            let mut seen: Vec<(KeyReading, &String)> = Vec::with_capacity(map.len());
            for (key, value) in map {
                if !is_representable_key(key) {
                    return Err(RenderError::UnrepresentableKey { key: key.clone() });
                }
                let reading = key_reading(key);
                if let Some((_, first)) = seen.iter().find(|(r, _)| r.collides_with(&reading)) {
                    return Err(RenderError::CollidingKeys {
                        first: (*first).clone(),
                        second: key.clone(),
                    });
                }
                seen.push((reading, key));
                check_hydra_value(value)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The arguments for argparse: `["--key", "value"]`.
///
/// - strings verbatim (argparse does no unquoting), ints as digits, floats in Python repr so that
///   `type=float` reads them back exactly, bools as `true`/`false`;
/// - a list becomes one flag followed by its elements, for `nargs='+'` (or `'*'`, which also
///   accepts the empty list: `["--key"]`);
/// - mappings, and lists nested inside lists, become one JSON argument for the script to decode;
/// - `null` produces no arguments at all, so the flag keeps its argparse default (usually `None`):
///   there is no text that argparse turns into `None`, and `"None"` would fail `type=int`.
pub fn argparse_args(key: &str, v: &Value) -> Vec<String> {
    let flag = format!("--{key}");
    match v {
        Value::Null => Vec::new(),
        Value::List(items) => std::iter::once(flag)
            .chain(items.iter().map(argparse_scalar))
            .collect(),
        other => vec![flag, argparse_scalar(other)],
    }
}

fn argparse_scalar(v: &Value) -> String {
    match v {
        // Inside a list there is no "leave it out"; Python's spelling is the least surprising.
        Value::Null => "None".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => python_float_repr(*f),
        Value::Str(s) => s.clone(),
        Value::List(_) | Value::Map(_) => to_json(v),
    }
}

/// JSON with floats in Python repr, so `json.loads` gives back the same floats; `nan`/`inf`, which
/// JSON lacks, use Python's `NaN`/`Infinity` spellings that `json.loads` accepts.
fn to_json(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) if f.is_nan() => "NaN".into(),
        Value::Float(f) if f.is_infinite() => {
            if *f > 0.0 { "Infinity" } else { "-Infinity" }.into()
        }
        Value::Float(f) => python_float_repr(*f),
        Value::Str(s) => serde_json::to_string(s).unwrap_or_default(),
        Value::List(items) => {
            let inner: Vec<String> = items.iter().map(to_json).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Map(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{}: {}",
                        serde_json::to_string(k).unwrap_or_default(),
                        to_json(v)
                    )
                })
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
    }
}

fn write_hydra_value(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => out.push_str(&i.to_string()),
        Value::Float(f) => out.push_str(&python_float_repr(*f)),
        Value::Str(s) => write_hydra_string(s, out),
        Value::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_hydra_value(item, out);
            }
            out.push(']');
        }
        Value::Map(map) => write_hydra_map(map, out),
    }
}

fn write_hydra_map(map: &IndexMap<String, Value>, out: &mut String) {
    out.push('{');
    for (i, (key, value)) in map.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_hydra_key(key, out);
        out.push(':');
        write_hydra_value(value, out);
    }
    out.push('}');
}

fn write_hydra_string(s: &str, out: &mut String) {
    let escaped = escape_interpolations(s);
    if is_bare_string(&escaped) {
        out.push_str(&escaped);
    } else {
        write_quoted(&escaped, out);
    }
}

/// A string Hydra reads back unchanged without quotes. The lexer (OverrideLexer.g4, VALUE_MODE)
/// reads letters/digits/`_`/`-` as an `ID` and `/`, `.`, `-` as `UNQUOTED_CHAR`; a primitive made of
/// several tokens is their concatenated text (overrides_visitor.py `_createPrimitive`). The one way
/// such a string changes type is by being a single `INT`/`FLOAT`/`BOOL`/`NULL` token. Starting with
/// a letter, `_` or `/` rules out numbers, leaving the keywords `true`, `false`, `null`, `inf`,
/// `nan` in any case (`ID` ties with them and loses by rule order). Digits-first strings such as
/// `01` or `1.2.3` would also survive bare, but quoting them costs nothing and does not depend on
/// the finer points of the number tokens.
fn is_bare_string(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    if !(first.is_ascii_alphabetic() || first == '_' || first == '/') {
        return false;
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
    {
        return false;
    }
    let lower = s.to_ascii_lowercase();
    !matches!(lower.as_str(), "true" | "false" | "null" | "inf" | "nan")
}

/// Writes `s` as a Hydra `QUOTED_VALUE`. Inside quotes every character is literal except a run of
/// backslashes directly before a quote character (the closing one included): Hydra halves such a
/// run and an odd run escapes the quote (`_unescape_quoted_string` in overrides_visitor.py, and
/// `QuotedString.with_quotes` in types.py, which we mirror). So backslashes are doubled only there.
fn write_quoted(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    let mut backslashes = 0usize;
    for c in s.chars() {
        if c == '\\' {
            backslashes += 1;
            continue;
        }
        if c == quote {
            push_backslashes(out, 2 * backslashes + 1);
        } else {
            push_backslashes(out, backslashes);
        }
        out.push(c);
        backslashes = 0;
    }
    push_backslashes(out, 2 * backslashes);
    out.push(quote);
}

fn push_backslashes(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n('\\', n));
}

/// OmegaConf resolves any string containing `${` as an interpolation. Its escaped form is
/// `\${`, and a run of n literal backslashes before it is written as 2n+1 backslashes: OmegaConf
/// 2.3's `ESC_INTER` token is `\\...\${`, un-escaped by keeping the last `len/2 + 1` characters
/// (grammar_visitor.py `_unescape`). Backslashes anywhere else stay literal, because a `TOP_ESC`
/// run is only un-escaped before a real interpolation, and after this escaping there is none.
fn escape_interpolations(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains("${") {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 4);
    let mut backslashes = 0usize;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            backslashes += 1;
            continue;
        }
        if c == '$' && chars.peek() == Some(&'{') {
            push_backslashes(&mut out, 2 * backslashes + 1);
        } else {
            push_backslashes(&mut out, backslashes);
        }
        out.push(c);
        backslashes = 0;
    }
    push_backslashes(&mut out, backslashes);
    std::borrow::Cow::Owned(out)
}

/// Characters Hydra's `ESC` token accepts after a backslash, the same set as `_ESC` in
/// hydra/_internal/grammar/utils.py.
const KEY_ESCAPED: &[char] = &['\\', '(', ')', '[', ']', '{', '}', ':', '=', ',', ' ', '\t'];
/// `UNQUOTED_CHAR` in OverrideLexer.g4 (hydra-core 1.3).
const KEY_UNQUOTED: &[char] = &['/', '-', '+', '.', '$', '%', '*', '@', '?', '|'];

/// A mapping key is a `dictKey`: IDs, numbers, keywords, `UNQUOTED_CHAR` and `ESC` sequences, with
/// no quoted form; the visitor concatenates several tokens and un-escapes `ESC`. Special
/// characters are escaped as in Hydra's own `escape_special_characters`.
fn write_hydra_key(key: &str, out: &mut String) {
    for c in key.chars() {
        if KEY_ESCAPED.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
}

fn is_representable_key(key: &str) -> bool {
    !key.is_empty()
        && !key.eq_ignore_ascii_case("null")
        && key.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || c == '_'
                || KEY_ESCAPED.contains(&c)
                || KEY_UNQUOTED.contains(&c)
        })
}

/// What a mapping key becomes once Hydra has read it, as far as Python's dict equality goes:
/// `1`, `1.0`, `1_0e-1` and `true` are one key to Python.
#[derive(Debug)]
enum KeyReading {
    Str(String),
    /// An int, a bool or an integral float, by integer value.
    Integer(i128),
    /// An int too large for `i128`, by its canonical digits.
    BigInteger(String),
    Float(f64),
    /// NaN (never equal, even to itself) or a number we could not evaluate.
    Unique,
}

impl KeyReading {
    fn collides_with(&self, other: &KeyReading) -> bool {
        match (self, other) {
            (KeyReading::Str(a), KeyReading::Str(b)) => a == b,
            (KeyReading::Integer(a), KeyReading::Integer(b)) => a == b,
            (KeyReading::BigInteger(a), KeyReading::BigInteger(b)) => a == b,
            (KeyReading::Float(a), KeyReading::Float(b)) => a == b,
            _ => false,
        }
    }
}

/// Reads a key the way Hydra's lexer does: a key that is exactly one `INT`, `FLOAT` or `BOOL`
/// token (OverrideLexer.g4) becomes that Python value; anything else is a string.
fn key_reading(key: &str) -> KeyReading {
    let lower = key.to_ascii_lowercase();
    match lower.as_str() {
        "true" => return KeyReading::Integer(1),
        "false" => return KeyReading::Integer(0),
        _ => {}
    }
    let (negative, body) = match key.as_bytes().first() {
        Some(b'-') => (true, &key[1..]),
        Some(b'+') => (false, &key[1..]),
        _ => (false, key),
    };
    let body_lower = body.to_ascii_lowercase();
    if body_lower == "inf" {
        return KeyReading::Float(if negative {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
    }
    if body_lower == "nan" {
        return KeyReading::Unique;
    }
    let bytes = body.as_bytes();
    let without_underscores: String = body.chars().filter(|c| *c != '_').collect();
    if int_unsigned(bytes, 0) == Some(bytes.len()) {
        return match without_underscores.parse::<i128>() {
            Ok(n) => KeyReading::Integer(if negative { -n } else { n }),
            Err(_) => KeyReading::BigInteger(format!(
                "{}{without_underscores}",
                if negative { "-" } else { "" }
            )),
        };
    }
    if is_float_body(bytes) {
        return match without_underscores.parse::<f64>() {
            Ok(f) => {
                let f = if negative { -f } else { f };
                // Exact: every integral f64 below 2^127 converts to i128 without rounding.
                if f.fract() == 0.0 && f.abs() < 1.7e38 {
                    KeyReading::Integer(f as i128)
                } else {
                    KeyReading::Float(f)
                }
            }
            Err(_) => KeyReading::Unique,
        };
    }
    KeyReading::Str(key.to_string())
}

/// `INT_UNSIGNED: '0' | [1-9] (('_')? DIGIT)*` from position `i`; returns where it ends.
fn int_unsigned(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'0' => Some(i + 1),
        b'1'..=b'9' => Some(digits_tail(b, i + 1)),
        _ => None,
    }
}

/// `DIGIT (('_')? DIGIT)*` from position `i`.
fn digits(b: &[u8], i: usize) -> Option<usize> {
    b.get(i)
        .filter(|c| c.is_ascii_digit())
        .map(|_| digits_tail(b, i + 1))
}

/// `(('_')? DIGIT)*` from position `i`.
fn digits_tail(b: &[u8], mut i: usize) -> usize {
    loop {
        match (b.get(i), b.get(i + 1)) {
            (Some(c), _) if c.is_ascii_digit() => i += 1,
            (Some(b'_'), Some(c)) if c.is_ascii_digit() => i += 2,
            _ => return i,
        }
    }
}

/// `POINT_FLOAT: INT_UNSIGNED '.' | INT_UNSIGNED? '.' DIGIT (('_')? DIGIT)*`.
fn point_float(b: &[u8], i: usize) -> Option<usize> {
    let after_int = int_unsigned(b, i);
    let dot = after_int.unwrap_or(i);
    if b.get(dot) != Some(&b'.') {
        return None;
    }
    match digits(b, dot + 1) {
        Some(end) => Some(end),
        None => after_int.map(|_| dot + 1),
    }
}

/// The unsigned part of `FLOAT`, without `inf`/`nan`: `POINT_FLOAT` or
/// `EXPONENT_FLOAT: (INT_UNSIGNED | POINT_FLOAT) [eE] [+-]? DIGIT (('_')? DIGIT)*`, matching all of
/// `b`.
fn is_float_body(b: &[u8]) -> bool {
    let Some(mantissa_end) = point_float(b, 0).or_else(|| int_unsigned(b, 0)) else {
        return false;
    };
    if mantissa_end == b.len() {
        return point_float(b, 0) == Some(b.len());
    }
    if !matches!(b.get(mantissa_end), Some(b'e' | b'E')) {
        return false;
    }
    let mut i = mantissa_end + 1;
    if matches!(b.get(i), Some(b'+' | b'-')) {
        i += 1;
    }
    digits(b, i) == Some(b.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Value {
        Value::Str(text.into())
    }

    fn map(entries: &[(&str, Value)]) -> Value {
        Value::Map(
            entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn float_repr_matches_python() {
        let cases: &[(f64, &str)] = &[
            (1.0, "1.0"),
            (0.1, "0.1"),
            (1e-5, "1e-05"),
            (1e-4, "0.0001"),
            (0.00012, "0.00012"),
            (1.5e-7, "1.5e-07"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (1e16, "1e+16"),
            (9999999999999998.0, "9999999999999998.0"),
            (1e15, "1000000000000000.0"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            (-2.5, "-2.5"),
            (2.71, "2.71"),
            (100.0, "100.0"),
            (1e100, "1e+100"),
            (-1e-300, "-1e-300"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (0.30000000000000004, "0.30000000000000004"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (f64::NAN, "nan"),
        ];
        for (f, expected) in cases {
            assert_eq!(python_float_repr(*f), *expected, "repr of {f:?}");
        }
    }

    #[test]
    fn scalars() {
        assert_eq!(hydra_value(&Value::Null), "null");
        assert_eq!(hydra_value(&Value::Bool(true)), "true");
        assert_eq!(hydra_value(&Value::Bool(false)), "false");
        assert_eq!(hydra_value(&Value::Int(42)), "42");
        assert_eq!(hydra_value(&Value::Int(-7)), "-7");
        assert_eq!(hydra_value(&Value::Int(i64::MIN)), "-9223372036854775808");
        assert_eq!(hydra_value(&Value::Float(1.0)), "1.0");
        assert_eq!(hydra_value(&Value::Float(1e-3)), "0.001");
        assert_eq!(hydra_value(&Value::Float(-1e-5)), "-1e-05");
        assert_eq!(hydra_value(&Value::Float(f64::NAN)), "nan");
    }

    #[test]
    fn plain_strings_stay_bare() {
        for text in [
            "adam",
            "resnet_50",
            "foo-bar",
            "a.b.c",
            "/data/x.csv",
            "_x",
            "Infinity",
        ] {
            assert_eq!(hydra_value(&s(text)), text);
        }
        // Longer than the keyword, so the lexer reads an ID.
        assert_eq!(hydra_value(&s("nullable")), "nullable");
        assert_eq!(hydra_value(&s("true_x")), "true_x");
    }

    #[test]
    fn strings_that_look_like_other_types_are_quoted() {
        for text in [
            "1", "1.5", "-3", "+3", "1e-3", "1_000", ".5", "true", "True", "FALSE", "null", "NULL",
            "inf", "-inf", "nan", "NaN", "01", "1.2.3",
        ] {
            assert_eq!(hydra_value(&s(text)), format!("'{text}'"), "{text}");
        }
    }

    #[test]
    fn strings_with_grammar_characters_are_quoted() {
        assert_eq!(hydra_value(&s("")), "''");
        assert_eq!(hydra_value(&s("hello world")), "'hello world'");
        assert_eq!(hydra_value(&s(" lead")), "' lead'");
        assert_eq!(hydra_value(&s("trail ")), "'trail '");
        assert_eq!(hydra_value(&s("a,b")), "'a,b'");
        assert_eq!(hydra_value(&s("a=b")), "'a=b'");
        assert_eq!(hydra_value(&s("a:b")), "'a:b'");
        assert_eq!(hydra_value(&s("[x]")), "'[x]'");
        assert_eq!(hydra_value(&s("{x}")), "'{x}'");
        assert_eq!(hydra_value(&s("f(x)")), "'f(x)'");
        assert_eq!(hydra_value(&s("$HOME")), "'$HOME'");
        assert_eq!(hydra_value(&s("héllo")), "'héllo'");
        assert_eq!(hydra_value(&s("a\nb")), "'a\nb'");
        assert_eq!(hydra_value(&s("-")), "'-'");
    }

    #[test]
    fn quotes_and_backslashes() {
        assert_eq!(hydra_value(&s("it's")), "\"it's\"");
        assert_eq!(hydra_value(&s("say \"hi\"")), "'say \"hi\"'");
        assert_eq!(hydra_value(&s("both ' and \"")), "'both \\' and \"'");
        assert_eq!(hydra_value(&s("C:\\path\\x")), "'C:\\path\\x'");
        // Backslashes before the closing quote are doubled, so the quote still closes.
        assert_eq!(hydra_value(&s("ends\\")), "'ends\\\\'");
        // A backslash before an escaped quote: doubled, plus one for the quote.
        assert_eq!(hydra_value(&s("a\\'\"")), "'a\\\\\\'\"'");
    }

    #[test]
    fn interpolations_are_escaped() {
        assert_eq!(hydra_value(&s("${x}")), "'\\${x}'");
        assert_eq!(hydra_value(&s("a${b.c}d")), "'a\\${b.c}d'");
        // A literal backslash before `${`: 2n+1 backslashes.
        assert_eq!(hydra_value(&s("\\${x}")), "'\\\\\\${x}'");
        // `$` not followed by `{`, and `{` alone, are left alone.
        assert_eq!(hydra_value(&s("$x {y}")), "'$x {y}'");
    }

    #[test]
    fn lists_and_maps() {
        let list = Value::List(vec![
            Value::Int(1),
            Value::Float(2.0),
            s("a b"),
            Value::Null,
        ]);
        assert_eq!(hydra_value(&list), "[1,2.0,'a b',null]");
        let nested = Value::List(vec![
            Value::List(vec![Value::Int(1), Value::Int(2)]),
            Value::List(vec![]),
            Value::List(vec![s("x,y")]),
        ]);
        assert_eq!(hydra_value(&nested), "[[1,2],[],['x,y']]");
        let dict = map(&[
            ("lr", Value::Float(0.1)),
            ("name", s("1")),
            ("sub", map(&[("a", Value::List(vec![Value::Bool(true)]))])),
        ]);
        assert_eq!(hydra_value(&dict), "{lr:0.1,name:'1',sub:{a:[true]}}");
        assert_eq!(hydra_value(&map(&[])), "{}");
        assert_eq!(
            hydra_value(&map(&[("a b:c", Value::Int(1))])),
            "{a\\ b\\:c:1}"
        );
    }

    #[test]
    fn overrides() {
        assert_eq!(
            hydra_override("model.lr", &Value::Float(0.01)),
            "model.lr=0.01"
        );
        assert_eq!(hydra_override("+tag", &s("a b")), "+tag='a b'");
    }

    #[test]
    fn check_flags_what_hydra_cannot_carry() {
        assert_eq!(
            check_hydra_value(&s("???")),
            Err(RenderError::MissingMarker)
        );
        assert_eq!(
            check_hydra_value(&Value::List(vec![s("???")])),
            Err(RenderError::MissingMarker)
        );
        for key in ["", "null", "it's", "a\"b", "héllo", "a#b", "line\nbreak"] {
            assert_eq!(
                check_hydra_value(&map(&[(key, Value::Int(1))])),
                Err(RenderError::UnrepresentableKey { key: key.into() }),
                "{key:?}"
            );
        }
        for key in ["a", "1", "a b", "x:y", "a.b/c", "$x", "(){}[]=,\\"] {
            assert_eq!(check_hydra_value(&map(&[(key, Value::Int(1))])), Ok(()));
        }
        assert_eq!(check_hydra_value(&s("${x} it's")), Ok(()));
        assert_eq!(
            RenderError::UnrepresentableKey { key: "a#b".into() }.to_string(),
            "mapping key \"a#b\" cannot be passed to Hydra: keys must be non-empty, not `null`, \
             and use only ASCII letters, digits, spaces and `_-/\\+.$%*@?|()[]{}:=,`"
        );
    }

    #[test]
    fn keys_that_hydra_reads_as_one_key_collide() {
        let colliding = [
            ("1", "1.0"),
            ("1", "true"),
            ("0", "False"),
            ("-0", "0.0"),
            ("10", "1_0"),
            ("10", "1e1"),
            ("10", "+1_0.0"),
            ("inf", "INF"),
            ("5", "5."),
        ];
        for (first, second) in colliding {
            let mut entries = IndexMap::new();
            entries.insert(first.to_string(), Value::Int(1));
            entries.insert(second.to_string(), Value::Int(2));
            assert_eq!(
                check_hydra_value(&Value::Map(entries)),
                Err(RenderError::CollidingKeys {
                    first: first.into(),
                    second: second.into(),
                }),
                "{first} / {second}"
            );
        }
        let distinct = [
            ("1", "01"),
            ("1", "1 "),
            ("nan", "NaN"),
            ("0.5", "0.25"),
            ("1", "1_"),
            ("1e", "1"),
            ("-inf", "inf"),
            ("100000000000000000000000000000000000000000", "1e41"),
        ];
        for (first, second) in distinct {
            let value = map(&[(first, Value::Int(1)), (second, Value::Int(2))]);
            assert_eq!(check_hydra_value(&value), Ok(()), "{first} / {second}");
        }
    }

    #[test]
    fn float_token_recognizer() {
        for text in [
            "1.", ".5", "1.5", "1e5", "1E-05", "1.e5", ".5e+3", "1_0.5_5", "0.0",
        ] {
            assert!(is_float_body(text.as_bytes()), "{text}");
        }
        for text in [
            "1", ".", "e5", "1e", "1e_5", "01.5", "1__0.5", "1.5.", "1e5.", "",
        ] {
            assert!(!is_float_body(text.as_bytes()), "{text}");
        }
    }

    #[test]
    fn argparse() {
        assert_eq!(argparse_args("lr", &Value::Float(1e-5)), ["--lr", "1e-05"]);
        assert_eq!(argparse_args("n", &Value::Int(3)), ["--n", "3"]);
        assert_eq!(
            argparse_args("flag", &Value::Bool(false)),
            ["--flag", "false"]
        );
        assert_eq!(argparse_args("name", &s("a b $x")), ["--name", "a b $x"]);
        assert_eq!(argparse_args("seed", &Value::Null), Vec::<String>::new());
        assert_eq!(
            argparse_args(
                "layers",
                &Value::List(vec![Value::Int(1), s("x y"), Value::Float(2.0)])
            ),
            ["--layers", "1", "x y", "2.0"]
        );
        assert_eq!(argparse_args("empty", &Value::List(vec![])), ["--empty"]);
        assert_eq!(
            argparse_args(
                "cfg",
                &map(&[
                    ("a", Value::Float(1.0)),
                    ("b", Value::List(vec![Value::Null]))
                ])
            ),
            ["--cfg", "{\"a\": 1.0, \"b\": [null]}"]
        );
        assert_eq!(
            argparse_args("grid", &Value::List(vec![Value::List(vec![Value::Int(1)])])),
            ["--grid", "[1]"]
        );
    }
}
