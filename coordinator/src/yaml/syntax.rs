//! Turns a YAML parser error into one a user understands: the line where the mistake most
//! likely is (the unclosed `[`, the tab, the mis-indented key), in plain words, with a fix.
//!
//! The parser reports where it gave up, which is often lines after the mistake and in grammar
//! terms ("illegal placement of ':' indicator"). This is a pure function over the text and that
//! error: a light scan of the text finds the usual mistakes at or before where parsing stopped;
//! when none fits, the parser's position is kept and its words are translated.

use super::Pos;

/// A syntax error as shown to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explained {
    pub pos: Pos,
    pub message: String,
    pub hint: Option<String>,
}

/// Explains the parser's error `message` at `at` in `text`.
pub fn explain(text: &str, at: Pos, message: &str) -> Explained {
    let scan = Scan::of(text, at);
    let stopped = stopped_at(text, at);
    let found = |pos: Pos, what: String, hint: String| Explained {
        pos,
        message: what,
        hint: Some(if pos.line >= at.line {
            hint
        } else {
            format!("{hint} ({stopped})")
        }),
    };
    if message.contains("tab") {
        if let Some(tab) = scan.tabs.iter().min_by_key(|t| t.line.abs_diff(at.line)) {
            return found(
                *tab,
                "tab character in the indentation".into(),
                "YAML indents with spaces only; replace the tab with spaces".into(),
            );
        }
    }
    if let Some(m) = scan.mismatch.filter(|m| m.at.line <= at.line) {
        let (open, close) = (m.opened.0, closer_of(m.opened.0));
        return found(
            m.at,
            format!(
                "`{}` does not close the `{open}` opened at line {} column {}",
                m.found, m.opened.1.line, m.opened.1.col
            ),
            format!("write `{close}` here"),
        );
    }
    if let Some(q) = scan
        .quotes
        .iter()
        .find(|q| q.opened.line <= at.line && q.closed.is_none_or(|c| c.line >= at.line))
    {
        let what = if q.quote == '"' { "double" } else { "single" };
        return match q.closed {
            None => found(
                q.opened,
                format!("the {what} quote `{}` opened here is never closed", q.quote),
                format!("end the value with `{}` on this line", q.quote),
            ),
            Some(closed) => found(
                q.opened,
                format!(
                    "the {what} quote `{}` opened here is closed only on line {}",
                    q.quote, closed.line
                ),
                format!("end the value with `{}` on this line", q.quote),
            ),
        };
    }
    if let Some(&(open, pos)) = scan.open_flow.first() {
        let close = closer_of(open);
        let never = scan.unclosed.contains(&(open, pos));
        // One closed further down may be a list written over several lines with another
        // mistake inside; only the parser's own words about brackets point at it then.
        if never {
            return found(
                pos,
                format!("the `{open}` opened here is never closed"),
                format!("close it with `{close}`"),
            );
        }
        if message.contains("flow") || message.contains("illegal placement") {
            return found(
                pos,
                format!("the `{open}` opened here is not closed where it should be"),
                format!("close it with `{close}` where its values end"),
            );
        }
    }
    if let Some(e) = explain_lines(text, &scan.lines, at, message) {
        return e;
    }
    let (message, hint) = translate(message);
    Explained {
        pos: at,
        message,
        hint,
    }
}

/// Where the parser gave up, as said after a hint.
fn stopped_at(text: &str, at: Pos) -> String {
    if at.line > text.lines().count() {
        "reading stopped at the end of the file".into()
    } else {
        format!("reading stopped at line {}", at.line)
    }
}

fn closer_of(open: char) -> char {
    if open == '[' {
        ']'
    } else {
        '}'
    }
}

/// The parser's words for what is left, in the user's terms (and a fix, when there is one).
fn translate(message: &str) -> (String, Option<String>) {
    let plain = if message.contains("mapping values are not allowed") {
        "a `key:` where no key can start (check the line's indentation and the line above)"
    } else if message.contains("did not find expected key") {
        "this line does not fit the mapping above it (keys of one mapping start in the same column)"
    } else if message.contains("did not find expected '-' indicator") {
        "this line does not fit the list above it (items of one list start with `- ` in the same column)"
    } else if message.contains("misplaced bracket") {
        "a closing bracket that closes nothing"
    } else if message.contains("trailing content after") {
        "text after the closing quote (a `'` inside '…' is written `''`, a `\"` inside \"…\" as `\\\"`)"
    } else if message.contains("simple key expect ':'") || message.contains("expected ':'") {
        "a line that is neither `key: value` nor a `- ` item (is a `:` missing?)"
    } else if let Some(c) = message.strip_prefix("unexpected character: `") {
        let c = c.trim_end_matches('\'');
        return (
            format!("a value cannot start with {c} unquoted"),
            Some(format!("put the value in quotes: \"{c}…\"")),
        );
    } else if message.contains("found a tab") {
        "a tab where YAML expects spaces — replace it with spaces"
    } else if message.contains("unknown anchor") {
        "`*name` refers to an anchor `&name` not defined above"
    } else {
        return (format!("YAML syntax error: {message}"), None);
    };
    (plain.to_string(), None)
}

/// What the line structure says about an error at `at`: a key with no space after `:`, a
/// `- ` item among keys, a key among `- ` items, a key indented to no level above, a line with
/// no `:`.
fn explain_lines(text: &str, lines: &[Line], at: Pos, message: &str) -> Option<Explained> {
    let here = lines.iter().rposition(|l| l.number <= at.line)?;
    let line = &lines[here];
    let above = here.checked_sub(1).map(|i| &lines[i]);
    let with_stop = |pos: Pos, what: String, hint: String| {
        let hint = if pos.line >= at.line {
            hint
        } else {
            format!("{hint} ({})", stopped_at(text, at))
        };
        Some(Explained {
            pos,
            message: what,
            hint: Some(hint),
        })
    };
    let start_of = |l: &Line| Pos {
        line: l.number,
        col: l.indent + 1,
    };
    let structural = message.contains("mapping values")
        || message.contains("expected key")
        || message.contains("expected ':'")
        || message.contains("simple key");
    // The parser stopped past the last line (at the end, or on a line it could not start):
    // that line is the suspect, else the one above the line it stopped on.
    let suspects: Vec<&Line> = if line.number < at.line {
        vec![line]
    } else {
        [Some(line), above].into_iter().flatten().collect()
    };
    // `lr:0.1` is one word to YAML; the next key then has nowhere to go.
    for l in suspects.iter().filter(|_| structural) {
        if let Some((key, value, col)) = glued_key(&l.text) {
            return with_stop(
                Pos {
                    line: l.number,
                    col: l.indent + col + 1,
                },
                format!("no space after the `:` in `{key}:{value}`, so YAML reads it as one word, not a key and a value"),
                format!("write `{key}: {value}`"),
            );
        }
    }
    // `-2` among `- 1` items is the value -2, not an item.
    for l in suspects.iter().filter(|_| structural) {
        let mut chars = l.text.chars();
        if chars.next() == Some('-') && chars.next().is_some_and(|c| !c.is_whitespace()) {
            let items_here = lines
                .iter()
                .any(|o| o.indent == l.indent && o.text.starts_with("- "));
            if items_here {
                return with_stop(
                    start_of(l),
                    format!("`{}` is not a list item (no space after `-`)", l.text),
                    format!("write `- {}`", &l.text[1..]),
                );
            }
        }
    }
    // A line that is neither `key: value` nor an item: the `:` is missing.
    let culprit = if line.number < at.line {
        Some(line)
    } else {
        above
    };
    if let Some(c) = culprit.filter(|c| c.is_plain() && structural && line.indent >= c.indent) {
        let words: Vec<&str> = c.text.split_whitespace().collect();
        let fix = match words.as_slice() {
            [key, value] => format!("write `{key}: {value}`"),
            _ => "write it as `key: value` (a `:` and a space after the key)".into(),
        };
        return with_stop(
            start_of(c),
            format!(
                "`{}` is not a `key: value` line (no `:` after the key)",
                c.text
            ),
            fix,
        );
    }
    let above = above?;
    let start = start_of(line);
    let is_item = line.text == "-" || line.text.starts_with("- ");
    if is_item && message.contains("expected key") {
        let key_sibling = lines[..here]
            .iter()
            .rev()
            .take_while(|l| l.indent >= line.indent)
            .find(|l| l.indent == line.indent && l.key().is_some());
        if let Some(sibling) = key_sibling {
            return with_stop(
                start,
                format!(
                    "a list item `- ` among the keys of a mapping (`{}:` on line {} is in the same column)",
                    sibling.key().unwrap_or_default(),
                    sibling.number
                ),
                "write `key: value` here, or put the items under a key of their own, indented (`name:` then `  - item`)".into(),
            );
        }
    }
    let key = line.key()?;
    // The columns this line could line up with: each enclosing block's keys.
    let mut levels: Vec<&Line> = Vec::new();
    for l in lines[..here].iter().rev() {
        if levels.last().is_none_or(|last| l.indent < last.indent) {
            levels.push(l);
        }
        if l.indent == 0 {
            break;
        }
    }
    let mut choices: Vec<(usize, String)> = Vec::new();
    for l in &levels {
        if let Some(k) = l.key() {
            if choices.iter().all(|(col, _)| *col != l.key_col()) {
                choices.push((
                    l.key_col(),
                    format!(
                        "{} to go with `{k}:` (line {})",
                        spaces(l.key_col()),
                        l.number
                    ),
                ));
            }
        }
    }
    let choices_text = choices
        .iter()
        .map(|(_, text)| text.as_str())
        .collect::<Vec<_>>()
        .join(", or by ");
    if message.contains("expected '-' indicator") && above.indent <= line.indent {
        return with_stop(
            start,
            format!("the key `{key}:` is among list items"),
            format!("list items start with `- `; indent `{key}:` by {choices_text}"),
        );
    }
    if line.indent > above.indent {
        if let (Some(parent), Some(value)) = (above.key(), above.inline_value()) {
            return with_stop(
                start,
                format!(
                    "`{key}:` is indented under `{parent}:` (line {}), which already has the value `{value}`",
                    above.number
                ),
                format!(
                    "indent `{key}:` by {} to put it next to `{parent}:`, or remove `{value}` to put it inside",
                    spaces(above.key_col())
                ),
            );
        }
    }
    if line.indent < above.indent
        && !choices.is_empty()
        && choices.iter().all(|(col, _)| *col != line.indent)
    {
        return with_stop(
            start,
            format!(
                "`{key}:` is indented by {}, which lines up with no key above it",
                spaces(line.indent)
            ),
            format!("indent it by {choices_text}"),
        );
    }
    None
}

fn spaces(n: usize) -> String {
    if n == 1 {
        "1 space".into()
    } else {
        format!("{n} spaces")
    }
}

/// `lr:0.1` (or `- lr:0.1`) → ("lr", "0.1", column of the `:` within the text).
fn glued_key(text: &str) -> Option<(&str, &str, usize)> {
    let (offset, body) = match text.strip_prefix("- ") {
        Some(rest) => (2, rest),
        None => (0, text),
    };
    let colon = body.find(':')?;
    let (key, value) = (&body[..colon], &body[colon + 1..]);
    let word = |s: &str| {
        s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    };
    let glued = value
        .chars()
        .next()
        .is_some_and(|c| !c.is_whitespace() && c != ':' && c != '/');
    (word(key) && glued).then_some((key, value.trim_end(), offset + colon))
}

/// A line that starts in block context (not inside quotes, brackets or a `|`/`>` text).
#[derive(Debug)]
struct Line {
    number: usize,
    indent: usize,
    /// Without indentation, comment and trailing spaces.
    text: String,
}

impl Line {
    /// The key this line starts, if it is a `key:` line.
    fn key(&self) -> Option<&str> {
        let text = self.text.strip_prefix("- ").unwrap_or(&self.text);
        let colon = text
            .find(": ")
            .or_else(|| text.ends_with(':').then(|| text.len() - 1))?;
        let key = text[..colon].trim();
        (!key.is_empty() && !key.starts_with(['[', '{', '"', '\''])).then_some(key)
    }

    /// The column (0-based) its key starts at: after `- ` for an item that starts a mapping.
    fn key_col(&self) -> usize {
        if self.text.starts_with("- ") {
            self.indent + 2
        } else {
            self.indent
        }
    }

    /// A plain word or words with no `:` and no `- `: not a line a block can hold.
    fn is_plain(&self) -> bool {
        self.key().is_none()
            && !self.text.starts_with('-')
            && !self
                .text
                .starts_with(['[', '{', '"', '\'', '?', ':', '&', '*', '!', '|', '>'])
    }

    /// The value written after `key:` on this line, if any.
    fn inline_value(&self) -> Option<&str> {
        let (_, value) = self.text.split_once(": ")?;
        let value = value.trim();
        (!value.is_empty() && !value.starts_with(['|', '>', '&', '!'])).then_some(value)
    }
}

struct Quote {
    quote: char,
    opened: Pos,
    closed: Option<Pos>,
}

struct Mismatch {
    opened: (char, Pos),
    found: char,
    at: Pos,
}

/// What one pass over the text found.
#[derive(Default)]
struct Scan {
    lines: Vec<Line>,
    tabs: Vec<Pos>,
    /// Quoted scalars that do not end on the line they start on.
    quotes: Vec<Quote>,
    /// The first `]`/`}` that closes the other kind of bracket.
    mismatch: Option<Mismatch>,
    /// Brackets still open where the parser stopped, outermost first.
    open_flow: Vec<(char, Pos)>,
    /// Brackets never closed in the whole text.
    unclosed: Vec<(char, Pos)>,
}

impl Scan {
    fn of(text: &str, stop: Pos) -> Scan {
        let mut scan = Scan::default();
        let mut flow: Vec<(char, Pos)> = Vec::new();
        let mut quote: Option<Quote> = None;
        // Inside a `|`/`>` block text: lines indented more than this are its content.
        let mut block_text: Option<usize> = None;
        let mut captured = false;
        for (index, raw) in text.lines().enumerate() {
            let number = index + 1;
            let indent = raw.len() - raw.trim_start_matches(' ').len();
            let rest = &raw[indent..];
            let blank = rest.trim().is_empty() || rest.starts_with('#');
            if let Some(level) = block_text {
                if blank || indent > level {
                    continue;
                }
                block_text = None;
            }
            let in_block = flow.is_empty() && quote.is_none();
            if in_block && !blank && rest.starts_with('\t') {
                scan.tabs.push(Pos {
                    line: number,
                    col: indent + 1,
                });
            }
            // Whether a quote or bracket here would start a value (line start, after `: `,
            // `- `, `? `, `[`, `{`, `,`); inside a plain word they are just characters.
            let mut scalar_start = true;
            // The `:`, `-` or `?` just read starts a value if a space follows.
            let mut indicator = false;
            let mut prev = ' ';
            let mut content_end = raw.len();
            // Inside `&anchor` or `!tag`, which a value may start with.
            let mut in_property = false;
            let mut skip = false;
            for (byte, c) in raw.char_indices() {
                let col = raw[..byte].chars().count() + 1;
                let pos = Pos { line: number, col };
                if !captured && (number, col) >= (stop.line, stop.col) {
                    scan.open_flow = flow.clone();
                    captured = true;
                }
                if skip {
                    skip = false;
                    continue;
                }
                if let Some(q) = &mut quote {
                    // `''` inside '…' is one quote.
                    if q.quote == '\'' && c == '\'' && raw[byte + 1..].starts_with('\'') {
                        skip = true;
                        continue;
                    }
                    let escaped = q.quote == '"' && prev == '\\';
                    if c == q.quote && !escaped {
                        if q.opened.line != number {
                            q.closed = Some(pos);
                            scan.quotes.extend(quote.take());
                        } else {
                            quote = None;
                        }
                        scalar_start = false;
                    }
                    // `\\` is an escaped backslash, which escapes nothing after it.
                    prev = if escaped { ' ' } else { c };
                    continue;
                }
                if c == '#' && prev.is_whitespace() {
                    content_end = byte;
                    break;
                }
                if in_property || (scalar_start && matches!(c, '&' | '!')) {
                    in_property = !c.is_whitespace();
                    prev = c;
                    continue;
                }
                match c {
                    '"' | '\'' if scalar_start => {
                        quote = Some(Quote {
                            quote: c,
                            opened: pos,
                            closed: None,
                        })
                    }
                    '[' | '{' if scalar_start || !flow.is_empty() => {
                        flow.push((c, pos));
                        scalar_start = true;
                    }
                    ']' | '}' if !flow.is_empty() => {
                        let (open, opened) = flow.pop().unwrap_or((c, pos));
                        if closer_of(open) != c && scan.mismatch.is_none() {
                            scan.mismatch = Some(Mismatch {
                                opened: (open, opened),
                                found: c,
                                at: pos,
                            });
                        }
                        scalar_start = false;
                    }
                    ',' if !flow.is_empty() => scalar_start = true,
                    c if c.is_whitespace() => scalar_start |= indicator,
                    ':' => scalar_start = false,
                    '-' | '?' if scalar_start => {}
                    _ => scalar_start = false,
                }
                indicator = c == ':' || (matches!(c, '-' | '?') && scalar_start);
                prev = c;
            }
            if !captured && number >= stop.line {
                scan.open_flow = flow.clone();
                captured = true;
            }
            let code = raw[..content_end].trim_end();
            if in_block && !blank {
                scan.lines.push(Line {
                    number,
                    indent,
                    text: code[indent.min(code.len())..].to_string(),
                });
                // `key: |`, `- >-`: the lines indented below are text, not YAML.
                let (before, word) = code.rsplit_once(' ').unwrap_or(("", code));
                let word =
                    word.trim_end_matches(|c: char| c == '-' || c == '+' || c.is_ascii_digit());
                let after_indicator = before.ends_with(':') || before.trim() == "-";
                if flow.is_empty()
                    && quote.is_none()
                    && after_indicator
                    && (word == "|" || word == ">")
                {
                    block_text = Some(indent);
                }
            }
        }
        if !captured {
            scan.open_flow = flow.clone();
        }
        scan.unclosed = flow;
        if let Some(q) = quote {
            scan.quotes.push(q);
        }
        scan
    }
}

#[cfg(test)]
mod tests {
    use crate::yaml::{parse, YamlError};

    /// What the user sees for `text`: `line:col: message — hint`.
    fn shown(text: &str) -> String {
        match parse(text) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{text:?} parsed"),
        }
    }

    fn line_of(text: &str) -> usize {
        let e: YamlError = parse(text).expect_err("a syntax error");
        e.pos.line
    }

    #[test]
    fn unclosed_bracket_points_at_its_opening() {
        // The parser stops on line 4 ("illegal placement of ':' indicator").
        let text = "name: x\ngrid:\n  lr: [0.1, 0.2\n  bs: [1, 2]\n";
        assert_eq!(
            shown(text),
            "3:7: the `[` opened here is never closed — close it with `]` (reading stopped at line 4)"
        );
        assert_eq!(line_of("grid:\n  lr: [0.1, 0.2\n"), 2);
        assert_eq!(line_of("grid:\n  opt: {a: 1, b: 2\n  bs: [1]\n"), 2);
        assert!(shown("grid:\n  opt: {a: 1, b: 2\n  bs: [1]\n").contains("close it with `}`"));
        // Closed further down: named only when the parser's words are about brackets.
        assert_eq!(
            shown("a: [1, 2\nb: [3]]\n"),
            "1:4: the `[` opened here is not closed where it should be — close it with `]` where its values end (reading stopped at line 2)"
        );
        let inner = shown("a: [1,\n    b: c: d]\n");
        assert!(!inner.contains("never closed"), "{inner}");
        // A bracket inside a `|` text is text, not the unclosed one.
        assert_eq!(line_of("a: |\n  x: [\n  y\nb: [1\nc: 2\n"), 4);
    }

    #[test]
    fn wrong_closing_bracket_is_named() {
        assert_eq!(
            shown("grid:\n  lr: [0.1, 0.2}\n  bs: [1]\n"),
            "2:16: `}` does not close the `[` opened at line 2 column 7 — write `]` here"
        );
    }

    #[test]
    fn unclosed_quotes_point_at_the_quote() {
        assert_eq!(
            shown("name: \"x\ngrid:\n  bs: [1]\n"),
            "1:7: the double quote `\"` opened here is never closed — end the value with `\"` on this line"
        );
        assert_eq!(
            shown("a: \"x\nb: \"y\"\nc: 1\n"),
            "1:4: the double quote `\"` opened here is closed only on line 2 — end the value with `\"` on this line"
        );
        assert_eq!(line_of("a: 1\nb: \"xyz\n"), 2);
        assert_eq!(line_of("a:\n  b: 'xyz\n  c: 1\n"), 2);
        // An apostrophe inside a word is not a quote.
        assert_eq!(line_of("a: don't\nb: [1\n"), 2);
    }

    #[test]
    fn tab_indentation_is_named() {
        assert_eq!(
            shown("grid:\n  lr: [1]\n\tbs: [1]\n"),
            "3:1: tab character in the indentation — YAML indents with spaces only; replace the tab with spaces"
        );
    }

    #[test]
    fn keys_indented_wrongly_say_where_they_could_go() {
        assert_eq!(
            shown("grid:\n  lr: [1]\n   bs: [2]\n"),
            "3:4: `bs:` is indented under `lr:` (line 2), which already has the value `[1]` — indent `bs:` by 2 spaces to put it next to `lr:`, or remove `[1]` to put it inside"
        );
        assert_eq!(
            shown("grid:\n    lr: [1]\n  bs: [2]\n"),
            "3:3: `bs:` is indented by 2 spaces, which lines up with no key above it — indent it by 4 spaces to go with `lr:` (line 2), or by 0 spaces to go with `grid:` (line 1)"
        );
        assert_eq!(
            shown("grid: x\n  lr: [1]\n"),
            "2:3: `lr:` is indented under `grid:` (line 1), which already has the value `x` — indent `lr:` by 0 spaces to put it next to `grid:`, or remove `x` to put it inside"
        );
    }

    #[test]
    fn missing_space_after_colon_is_named() {
        assert_eq!(
            shown("grid:\n  lr:0.1\n  bs: [2]\n"),
            "2:5: no space after the `:` in `lr:0.1`, so YAML reads it as one word, not a key and a value — write `lr: 0.1` (reading stopped at line 3)"
        );
        assert_eq!(line_of("name:foo\ngrid:\n  bs: [2]\n"), 1);
        // A URL's `:` is not a key.
        assert_ne!(line_of("url: http://x\nb: [1\n"), 1);
    }

    #[test]
    fn missing_colon_is_named() {
        assert_eq!(
            shown("grid:\n  lr [1]\n  bs: [2]\n"),
            "2:3: `lr [1]` is not a `key: value` line (no `:` after the key) — write `lr: [1]` (reading stopped at line 3)"
        );
    }

    #[test]
    fn list_items_and_keys_mixed_are_named() {
        assert_eq!(
            shown("grid:\n  lr: [1]\n  - bs\n"),
            "3:3: a list item `- ` among the keys of a mapping (`lr:` on line 2 is in the same column) — write `key: value` here, or put the items under a key of their own, indented (`name:` then `  - item`)"
        );
        assert_eq!(line_of("grid:\n  lr: [1]\n- x\n"), 3);
        assert_eq!(
            shown("grid:\n  lr:\n    - 1\n    - 2\n    bs: 3\n"),
            "5:5: the key `bs:` is among list items — list items start with `- `; indent `bs:` by 2 spaces to go with `lr:` (line 2), or by 0 spaces to go with `grid:` (line 1)"
        );
    }

    #[test]
    fn anchors_tags_and_doubled_quotes_do_not_hide_the_opening() {
        assert_eq!(line_of("a: &x [1, 2\nb: 1\n"), 1);
        assert_eq!(line_of("a: !!str \"x\nb: 1\n"), 1);
        // `''` is a quote inside '…', not its end.
        assert!(shown("a: 'it''s\nb: 1\n").starts_with("1:4: the single quote"));
        // A bracket in a comment is not open.
        assert_eq!(line_of("a: 1 # [x\nb: [1\nc: 2\n"), 2);
    }

    #[test]
    fn item_without_space_and_line_without_colon_are_named() {
        assert_eq!(
            shown("a:\n  - 1\n  -2\n  - 3\n"),
            "3:3: `-2` is not a list item (no space after `-`) — write `- 2` (reading stopped at line 4)"
        );
        assert_eq!(
            shown("grid:\n  lr: [0.1,\n       0.2]\n  bs [1]\n"),
            "4:3: `bs [1]` is not a `key: value` line (no `:` after the key) — write `bs: [1]` (reading stopped at the end of the file)"
        );
        assert_eq!(
            shown("- a\n- b: 1\n c: 2\n"),
            "3:2: the key `c:` is among list items — list items start with `- `; indent `c:` by 2 spaces to go with `b:` (line 2)"
        );
        assert_eq!(
            shown("a:\n  - x: 1\n    y: 2\n   z: 3\n"),
            "4:4: `z:` is indented by 3 spaces, which lines up with no key above it — indent it by 4 spaces to go with `y:` (line 3), or by 0 spaces to go with `a:` (line 1)"
        );
    }

    #[test]
    fn other_errors_keep_the_parser_position_in_plain_words() {
        assert_eq!(
            shown("a: @x\n"),
            "1:4: a value cannot start with @ unquoted — put the value in quotes: \"@…\""
        );
        assert_eq!(
            shown("a: [1,\n  2]\nb: c: d\n"),
            "3:5: a `key:` where no key can start (check the line's indentation and the line above)"
        );
        assert_eq!(
            shown("a: [1]]\n"),
            "1:7: a closing bracket that closes nothing"
        );
        assert_eq!(
            shown("a: *x\n"),
            "1:4: `*name` refers to an anchor `&name` not defined above"
        );
    }

    #[test]
    fn any_damaged_file_gets_a_position_inside_it() {
        // Every one-character deletion or insertion of a usual mistake into a realistic file:
        // never a panic, always a line of the file (or the one after its end).
        let text = "# sweep — café ☕\nscript: train.py\nsweep:\n  grid:\n    lr: [0.1, 0.01]\n    name: ['a', \"b\"]\n  paired:\n    - g:\n        a: [1, 2]\n        b: {x: 1}\nnote: |\n  text: [ here\n";
        let lines = text.lines().count();
        let cuts: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        for &at in &cuts {
            let next = text[at..].chars().next().map_or(0, char::len_utf8);
            let deleted = format!("{}{}", &text[..at], &text[at + next..]);
            let mut variants = vec![deleted];
            for insert in ["[", "{", "\"", "'", "\t", ":", "- ", "]", "\n  "] {
                variants.push(format!("{}{insert}{}", &text[..at], &text[at..]));
            }
            for variant in variants {
                if let Err(e) = parse(&variant) {
                    let max = variant.lines().count().max(lines) + 1;
                    assert!(
                        (1..=max).contains(&e.pos.line) && e.pos.col >= 1,
                        "{variant:?}: {e}"
                    );
                    assert!(!e.message.is_empty());
                }
            }
        }
    }
}
