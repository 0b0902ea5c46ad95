//! The long options an argparse script declares (`add_argument('-b', '--batch-size', …)`), read
//! from its text, and the sweep keys whose `--key` it does not declare while the same name with
//! `-` and `_` swapped is declared: argparse would stop every task with "unrecognized arguments"
//! (or, with `parse_known_args`, silently run the default), so `sweep run` and `config validate`
//! name the key before anything starts.

use std::collections::BTreeSet;

/// Every `--option` string literal inside an `add_argument(…)` call of `text`.
pub fn declared_flags(text: &str) -> BTreeSet<String> {
    let mut flags = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("add_argument(") {
        rest = &rest[at + "add_argument(".len()..];
        // The option strings come first; stop at the first keyword argument or the call's end.
        let end = rest.find([')', '=']).unwrap_or(rest.len());
        let args = &rest[..end];
        let mut chars = args.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c != '\'' && c != '"' {
                continue;
            }
            let Some(close) = args[i + 1..].find(c) else {
                break;
            };
            let literal = &args[i + 1..i + 1 + close];
            if literal.starts_with("--") && literal.len() > 2 {
                flags.insert(literal.to_string());
            }
            while chars.peek().is_some_and(|&(j, _)| j <= i + 1 + close) {
                chars.next();
            }
        }
    }
    flags
}

/// For each key rendered as `--key` that `declared` lacks while it has the spelling with `-`
/// and `_` swapped: `(key, the declared flag)`.
pub fn misspelled<'a>(
    keys: impl IntoIterator<Item = &'a str>,
    declared: &BTreeSet<String>,
) -> Vec<(String, String)> {
    keys.into_iter()
        .filter_map(|key| {
            let flag = format!("--{key}");
            if declared.contains(&flag) {
                return None;
            }
            let swapped: String = key
                .chars()
                .map(|c| match c {
                    '_' => '-',
                    '-' => '_',
                    c => c,
                })
                .collect();
            let other = format!("--{swapped}");
            (swapped != key && declared.contains(&other)).then(|| (key.to_string(), other))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = r#"
import argparse
p = argparse.ArgumentParser()
p.add_argument("--lr", type=float, default=0.1)
p.add_argument('-b', '--batch-size', type=int, help="size (see --not-a-flag)")
p.add_argument(
    "--weight_decay",
    type=float,
)
p.add_argument("epochs", type=int)
"#;

    #[test]
    fn option_strings_of_every_call_are_found() {
        let flags = declared_flags(SCRIPT);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        assert_eq!(flags, ["--batch-size", "--lr", "--weight_decay"]);
    }

    #[test]
    fn a_key_spelled_with_the_other_separator_is_named() {
        let flags = declared_flags(SCRIPT);
        let found = misspelled(["lr", "batch_size", "weight-decay", "seed"], &flags);
        assert_eq!(
            found,
            [
                ("batch_size".to_string(), "--batch-size".to_string()),
                ("weight-decay".to_string(), "--weight_decay".to_string())
            ]
        );
        // Keys the script does not declare at all are its business (it may read them another
        // way); only a near miss is named.
        assert!(misspelled(["seed"], &flags).is_empty());
    }
}
