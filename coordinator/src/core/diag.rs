//! User-facing problems found while validating a file: where, what, and how to fix it.

use crate::yaml::Pos;
use std::fmt::Write as _;

/// One problem in a user's file. Validation collects all of them before returning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where it was written; `None` when the problem is about something missing from the file.
    pub pos: Option<Pos>,
    /// The dotted path of the offending key (`grid.lr`, `sources.gpu1.slots`), or empty.
    pub path: String,
    /// What is wrong, lowercase, no trailing period.
    pub message: String,
    /// What to write instead, when we can say.
    pub hint: Option<String>,
}

impl Problem {
    pub fn new(pos: Option<Pos>, path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            pos,
            path: path.into(),
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// `sweeps/sweep.yaml:7:5: grid.lr: expected a list of values, got a number — write lr: [0.1]`
    pub fn render(&self, file: &str) -> String {
        self.render_in(Some(file))
    }

    /// [`Problem::render`], or without the file part when there is no file (a default value
    /// that no file wrote): `command.python: program `python3` not found — …`.
    pub fn render_in(&self, file: Option<&str>) -> String {
        let mut out = String::new();
        if let Some(file) = file {
            out.push_str(file);
            if let Some(pos) = self.pos {
                let _ = write!(out, ":{}:{}", pos.line, pos.col);
            }
            out.push_str(": ");
        }
        if !self.path.is_empty() {
            out.push_str(&self.path);
            out.push_str(": ");
        }
        out.push_str(&self.message);
        if let Some(hint) = &self.hint {
            out.push_str(" — ");
            out.push_str(hint);
        }
        out
    }
}

/// The closest candidate to `word` by edit distance, for "did you mean" hints.
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_position_path_and_hint() {
        let p = Problem::new(
            Some(Pos { line: 7, col: 5 }),
            "grid.lr",
            "expected a list of values, got a number",
        )
        .with_hint("write lr: [0.1]");
        assert_eq!(
            p.render("sweeps/sweep.yaml"),
            "sweeps/sweep.yaml:7:5: grid.lr: expected a list of values, got a number — write lr: [0.1]"
        );
    }

    #[test]
    fn renders_without_a_file() {
        let p = Problem::new(None, "command.python", "program `python3` not found")
            .with_hint("set command.python");
        assert_eq!(
            p.render_in(None),
            "command.python: program `python3` not found — set command.python"
        );
        assert_eq!(
            p.render_in(Some("c.yaml")),
            "c.yaml: command.python: program `python3` not found — set command.python"
        );
    }

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(
            did_you_mean("gird", &["grid", "paired", "random"]),
            Some("grid")
        );
        assert_eq!(did_you_mean("xyz", &["grid", "paired"]), None);
    }
}
