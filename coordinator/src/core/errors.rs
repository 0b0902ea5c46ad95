//! Failures grouped by cause: the signature of a failed attempt (the line that says why it
//! failed — a Python exception, a Rust panic, an out-of-memory or time-limit kill — with the
//! parts that differ from task to task masked) and the groups `sweep errors` and
//! `logs/errors/error_patterns.yaml` show: count, signature, example tasks, the parameters
//! every task of a group shares, and the first lines of one traceback.

use crate::core::failure;
use crate::core::value::{Params, Value};
use std::collections::{BTreeMap, HashMap};

/// Example task ids kept per group.
pub const EXAMPLES: usize = 5;
/// Lines of the example traceback kept per group.
pub const TRACEBACK_LINES: usize = 15;
/// A signature is cut to this many characters (it is a heading, not a log).
pub const SIGNATURE_MAX_CHARS: usize = 200;

/// One failed task as the grouping sees it: its current attempt's end.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub index: u64,
    /// `task_007`.
    pub task: String,
    pub reason: Option<String>,
    pub exit_code: Option<i32>,
    /// The kept end of the attempt's stderr (`core::failure::stderr_tail`).
    pub tail: Option<String>,
    pub params: Params,
}

/// Failures that share a signature.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorGroup {
    pub signature: String,
    pub count: usize,
    /// The first few task ids (in task order).
    pub examples: Vec<String>,
    /// Parameters whose one value every task of the group has while some task of the sweep
    /// outside the group has another (`batch_size = 512`), in the sweep's key order.
    pub shared: Vec<(String, Value)>,
    /// The first lines of the first task's traceback (or of its stderr tail without one).
    pub traceback: Vec<String>,
}

/// Keys that have one and the same value in every task of the sweep: a group sharing them says
/// nothing about why it failed. Built once per sweep from every task's parameters.
pub fn constant_params<'a>(all: impl IntoIterator<Item = &'a Params>) -> BTreeMap<String, Value> {
    let mut constant: Option<BTreeMap<String, Value>> = None;
    for params in all {
        match &mut constant {
            None => {
                constant = Some(params.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
            }
            Some(keys) => keys.retain(|k, v| params.get(k) == Some(v)),
        }
        if constant.as_ref().is_some_and(BTreeMap::is_empty) {
            break;
        }
    }
    constant.unwrap_or_default()
}

/// Groups failures by signature, largest group first (then by signature, so the order is
/// stable). `constant` is what `constant_params` found over the whole sweep.
pub fn group(failures: &[Failure], constant: &BTreeMap<String, Value>) -> Vec<ErrorGroup> {
    let mut by_signature: HashMap<String, Vec<&Failure>> = HashMap::new();
    for f in failures {
        let sig = signature(f.reason.as_deref(), f.exit_code, f.tail.as_deref());
        by_signature.entry(sig).or_default().push(f);
    }
    let mut groups: Vec<ErrorGroup> = by_signature
        .into_iter()
        .map(|(signature, mut members)| {
            members.sort_by_key(|f| f.index);
            ErrorGroup {
                count: members.len(),
                examples: members
                    .iter()
                    .take(EXAMPLES)
                    .map(|f| f.task.clone())
                    .collect(),
                shared: shared_params(&members, constant),
                traceback: members[0]
                    .tail
                    .as_deref()
                    .map(traceback)
                    .unwrap_or_default(),
                signature,
            }
        })
        .collect();
    groups.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.signature.cmp(&b.signature))
    });
    groups
}

/// The groups as `sweep errors --json` and `error_patterns.yaml` show them (stable keys:
/// `signature`, `count`, `example_tasks`, `shared_params`, `traceback`).
pub fn to_json(groups: &[ErrorGroup]) -> serde_json::Value {
    serde_json::Value::Array(
        groups
            .iter()
            .map(|g| {
                let shared: serde_json::Map<String, serde_json::Value> = g
                    .shared
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or_default()))
                    .collect();
                serde_json::json!({
                    "signature": g.signature,
                    "count": g.count,
                    "example_tasks": g.examples,
                    "shared_params": shared,
                    "traceback": g.traceback,
                })
            })
            .collect(),
    )
}

/// `all 12 have batch_size=512, lr=0.1` (`task_003 has …` for a group of one); `None` when
/// the group shares nothing the rest of the sweep lacks.
pub fn describe_shared(group: &ErrorGroup) -> Option<String> {
    if group.shared.is_empty() {
        return None;
    }
    let pairs: Vec<String> = group
        .shared
        .iter()
        .map(|(k, v)| format!("{k}={}", crate::core::render::hydra_value(v)))
        .collect();
    Some(match (group.count, group.examples.first()) {
        (1, Some(task)) => format!("{task} has {}", pairs.join(", ")),
        (2, _) => format!("both have {}", pairs.join(", ")),
        (n, _) => format!("all {n} have {}", pairs.join(", ")),
    })
}

fn shared_params(members: &[&Failure], constant: &BTreeMap<String, Value>) -> Vec<(String, Value)> {
    let Some(first) = members.first() else {
        return Vec::new();
    };
    first
        .params
        .iter()
        .filter(|(key, value)| {
            constant.get(*key) != Some(*value)
                && members[1..]
                    .iter()
                    .all(|m| m.params.get(*key) == Some(*value))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The first lines of the last traceback in a stderr tail (Python's `Traceback (most recent
/// call last)` or a Rust `panicked at`), else its last lines.
pub fn traceback(tail: &str) -> Vec<String> {
    let lines: Vec<&str> = tail.lines().collect();
    let start = lines
        .iter()
        .rposition(|l| {
            l.trim_start()
                .starts_with("Traceback (most recent call last)")
                || l.contains("panicked at")
        })
        .unwrap_or_else(|| lines.len().saturating_sub(TRACEBACK_LINES));
    lines[start..]
        .iter()
        .take(TRACEBACK_LINES)
        .map(|l| l.to_string())
        .collect()
}

/// The signature of a failed attempt from its reason (`exit code 1: …`, `timeout`, `killed by
/// signal 9`, the scheduler's `out of memory …`), exit code and stderr tail. The cause named
/// by the scheduler or by hsm comes first (a timeout's last output line is not its cause), then
/// CUDA out of memory, then the last exception or panic, then a `Killed` line, then the last
/// meaningful line, then `exit code N` when stderr said nothing.
pub fn signature(reason: Option<&str>, exit_code: Option<i32>, tail: Option<&str>) -> String {
    let reason = reason.map(str::trim).unwrap_or("");
    let tail = tail.unwrap_or("");
    // What hsm itself wrote before `: <stderr line>` (see `failure::reason_with_line`).
    let head = reason.split(": ").next().unwrap_or("");
    let both = |needle: &str| tail.contains(needle) || reason.contains(needle);
    // PBS says `=>> PBS: job killed: walltime 3615 exceeded limit 3600` (or `mem …`).
    let pbs_kill = |what: &[&str]| {
        tail.lines().chain(reason.lines()).any(|l| {
            l.contains("PBS: job killed:")
                && l.contains("exceeded")
                && what.iter().any(|w| l.contains(w))
        })
    };
    if both("oom-kill")
        || both("oom_kill")
        || both("OUT_OF_MEMORY")
        || pbs_kill(&[" mem ", " vmem ", " pmem "])
        || head.starts_with("out of memory")
    {
        return "out of memory (killed by the scheduler)".into();
    }
    let scheduler_time = both("DUE TO TIME LIMIT") || pbs_kill(&[" walltime "]);
    if scheduler_time || head == "timeout" {
        return if scheduler_time {
            "timeout (the scheduler's time limit)".into()
        } else {
            "timeout".into()
        };
    }
    if both("DUE TO NODE FAILURE") || both("NODE_FAIL") || head == "node failure" {
        return "node failure".into();
    }
    if head == "preempted" || tail.contains("DUE TO PREEMPTION") {
        return "preempted".into();
    }
    // A batch job whose exit record was lost says `failed with exit code N`.
    if let Some(code) = head.strip_prefix("failed with exit code ") {
        if tail.trim().is_empty() {
            return format!("exit code {code}");
        }
    }
    // The attempt never ran its command, or was lost with its source: the reason is the cause.
    if head.starts_with("could not start")
        || (!reason.is_empty()
            && exit_code.is_none()
            && tail.is_empty()
            && !head.starts_with("killed by signal"))
    {
        return cut(&normalise(reason));
    }
    let lines: Vec<&str> = tail.lines().map(str::trim_end).collect();
    if let Some(line) = lines
        .iter()
        .rev()
        .find(|l| l.contains("CUDA out of memory"))
    {
        return match failure::exception_name(line) {
            Some(name) => format!("{name}: CUDA out of memory"),
            None => "CUDA out of memory".into(),
        };
    }
    if let Some(found) = last_exception_or_panic(&lines) {
        return cut(&normalise(&found));
    }
    let signal = head
        .strip_prefix("killed by signal ")
        .map(|n| format!("killed by signal {n}"));
    if let Some(signal) = signal {
        return signal;
    }
    if lines.iter().rev().take(3).any(|l| is_killed_line(l)) {
        return "Killed".into();
    }
    if let Some(line) = failure::meaningful_line(tail) {
        return cut(&normalise(&line));
    }
    // No tail kept (a sweep from before tails were), but the reason carries the line that
    // mattered after `exit code N: `.
    if head.starts_with("exit code ") {
        if let Some((_, line)) = reason.split_once(": ") {
            let line = line.trim_end_matches(" (will retry)").trim();
            if !line.is_empty() {
                return cut(&normalise(line));
            }
        }
    }
    if let Some(code) = exit_code {
        return format!("exit code {code}");
    }
    if reason.is_empty() {
        "failed (no reason recorded)".into()
    } else {
        cut(&normalise(reason))
    }
}

/// The last Python exception line or Rust panic message of a tail, whichever comes later.
fn last_exception_or_panic(lines: &[&str]) -> Option<String> {
    let panic = lines
        .iter()
        .rposition(|l| l.contains("panicked at"))
        .map(|i| (i, panic_message(lines, i)));
    let exception = lines
        .iter()
        .rposition(|l| {
            l.trim_start()
                .starts_with("Traceback (most recent call last)")
        })
        .and_then(|header| {
            // The exception line: the first unindented line after the frames.
            let offset = lines[header + 1..]
                .iter()
                .position(|l| !l.starts_with([' ', '\t']) && !l.trim().is_empty())?;
            Some(header + 1 + offset)
        })
        .or_else(|| {
            lines
                .iter()
                .rposition(|l| failure::exception_name(l).is_some())
        })
        .map(|i| (i, lines[i].trim().to_string()));
    match (panic, exception) {
        (Some(p), Some(e)) => Some(if p.0 > e.0 { p.1 } else { e.1 }),
        (p, e) => p.or(e).map(|(_, text)| text),
    }
}

/// `panicked: <message>` from `thread 'main' panicked at src/x.rs:3:5:` followed by the
/// message line (Rust 1.73+), or the older `panicked at 'message', src/x.rs:3:5`.
fn panic_message(lines: &[&str], at: usize) -> String {
    let line = lines[at];
    let after = &line[line.find("panicked at").unwrap_or(0) + "panicked at".len()..];
    let after = after.trim();
    if let Some(rest) = after.strip_prefix('\'') {
        // Older form: the message is quoted, the location follows.
        let message = rest.rsplit_once("', ").map_or(rest, |(m, _)| m);
        return format!("panicked: {message}");
    }
    let message = after
        .split_once(": ")
        .map(|(_, m)| m.trim())
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .or_else(|| lines.get(at + 1).map(|l| l.trim().to_string()))
        .unwrap_or_default();
    format!("panicked: {message}")
}

/// `Killed` as a shell or the kernel's OOM killer leaves it (`/bin/sh: line 1: 42 Killed …`).
fn is_killed_line(line: &str) -> bool {
    let t = line.trim();
    t == "Killed"
        || t.contains(" Killed ")
        || t.ends_with(" Killed")
        || t.starts_with("Killed process")
}

fn cut(text: &str) -> String {
    if text.chars().count() <= SIGNATURE_MAX_CHARS {
        return text.to_string();
    }
    let mut out: String = text.chars().take(SIGNATURE_MAX_CHARS - 1).collect();
    out.push('…');
    out
}

/// Masks what differs between occurrences of the same error: quoted values (`'<str>'`),
/// UUIDs (`<uuid>`), hex ids (`<hex>`: `0x7f3a…`, or 8+ hex digits with a digit and a letter),
/// paths (`<path>`: a word with a `/` and a letter), memory sizes (`<size>`: `2.00 GiB`,
/// `512MB`) and numbers (`<n>`); digits inside identifiers (`conv2d`, `float32`) stay.
/// Whitespace runs become one space.
pub fn normalise(line: &str) -> String {
    let chars: Vec<char> = line.trim().chars().collect();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let prev = i.checked_sub(1).map(|p| chars[p]);
        let at_word_start = prev.is_none_or(|p| !is_word(p));
        if c.is_whitespace() {
            if !out.ends_with(' ') {
                out.push(' ');
            }
            i += 1;
            continue;
        }
        if (c == '\'' || c == '"') && at_word_start {
            if let Some(len) = quoted_len(&chars[i..], c) {
                out.push(c);
                out.push_str("<str>");
                out.push(c);
                i += len;
                continue;
            }
        }
        if at_word_start && is_token_start(prev) {
            let len = token_len(&chars[i..]);
            let token: String = chars[i..i + len].iter().collect();
            let token = token.trim_end_matches(['.', ':']);
            if token.contains('/') && token.chars().any(|c| c.is_alphabetic()) {
                out.push_str("<path>");
                i += token.chars().count();
                continue;
            }
        }
        if at_word_start && is_word(c) {
            let len = chars[i..].iter().take_while(|c| is_word(**c)).count();
            let word = &chars[i..i + len];
            if is_uuid(&chars[i..]) {
                out.push_str("<uuid>");
                i += 36;
                continue;
            }
            if len > 2
                && word[0] == '0'
                && (word[1] == 'x' || word[1] == 'X')
                && word[2..].iter().all(char::is_ascii_hexdigit)
            {
                out.push_str("<hex>");
                i += len;
                continue;
            }
            if len >= 8
                && word.iter().all(char::is_ascii_hexdigit)
                && word.iter().any(char::is_ascii_digit)
                && word.iter().any(char::is_ascii_alphabetic)
            {
                out.push_str("<hex>");
                i += len;
                continue;
            }
            if c.is_ascii_digit() {
                let n = number_len(&chars[i..]);
                if let Some(unit) = size_unit_len(&chars[i + n..]) {
                    out.push_str("<size>");
                    i += n + unit;
                } else {
                    out.push_str("<n>");
                    i += n;
                }
                continue;
            }
            out.extend(word);
            i += len;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out.trim_end().to_string()
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// A path starts after a space, an opening bracket, `=` or `:` (`file=/data/x`, `at:/x`).
fn is_token_start(prev: Option<char>) -> bool {
    prev.is_none_or(|p| p.is_whitespace() || "([{=:,<".contains(p))
}

/// The length of a run of characters that can be part of a path.
fn token_len(chars: &[char]) -> usize {
    chars
        .iter()
        .take_while(|c| !c.is_whitespace() && !",;()[]{}'\"<>".contains(**c))
        .count()
}

/// The length of `'…'` (quotes included) when it closes on this line before a character that
/// ends a word, so `can't` and `don't` are not taken for quotes.
fn quoted_len(chars: &[char], quote: char) -> Option<usize> {
    let close = chars[1..].iter().position(|c| *c == quote)? + 1;
    let after = chars.get(close + 1);
    after.is_none_or(|c| !is_word(*c)).then_some(close + 1)
}

fn is_uuid(chars: &[char]) -> bool {
    if chars.len() < 36 || chars.get(36).is_some_and(|c| is_word(*c)) {
        return false;
    }
    chars[..36].iter().enumerate().all(|(i, c)| match i {
        8 | 13 | 18 | 23 => *c == '-',
        _ => c.is_ascii_hexdigit(),
    })
}

/// `12`, `3.5`, `1e-3`, `2.00`: digits, a fraction, an exponent.
fn number_len(chars: &[char]) -> usize {
    let digits = |from: usize| {
        chars[from..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count()
    };
    let mut n = digits(0);
    if chars.get(n) == Some(&'.') && chars.get(n + 1).is_some_and(char::is_ascii_digit) {
        n += 1 + digits(n + 1);
    }
    if matches!(chars.get(n), Some('e' | 'E')) {
        let sign = usize::from(matches!(chars.get(n + 1), Some('+' | '-')));
        let exp = digits(n + 1 + sign);
        if exp > 0 {
            n += 1 + sign + exp;
        }
    }
    n
}

/// The length of a memory unit right after a number (`GiB`, ` MB`, `K`), if one is there.
fn size_unit_len(chars: &[char]) -> Option<usize> {
    const UNITS: [&str; 14] = [
        "KiB", "MiB", "GiB", "TiB", "KB", "MB", "GB", "TB", "kB", "B", "K", "M", "G", "T",
    ];
    let space = usize::from(chars.first() == Some(&' '));
    UNITS.iter().find_map(|unit| {
        let len = unit.chars().count();
        let word: String = chars.iter().skip(space).take(len).collect();
        let ends = chars.get(space + len).is_none_or(|c| !is_word(*c));
        // A bare letter after a space is a word (`3 G` is rare, `in 3 B` would be wrong).
        (word == *unit && ends && !(space == 1 && len == 1)).then_some(space + len)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn python() -> String {
        crate::core::failure::python_traceback(
            "ValueError: batch_size 512 too large for /data/set_07/train.csv",
        )
    }

    fn sig(reason: &str, code: Option<i32>, tail: &str) -> String {
        signature(Some(reason), code, Some(tail))
    }

    #[test]
    fn a_python_exception_line_is_masked() {
        assert_eq!(
            sig("exit code 1: ValueError: …", Some(1), &python()),
            "ValueError: batch_size <n> too large for <path>"
        );
        assert_eq!(
            sig("exit code 1", Some(1), "Traceback (most recent call last):\n  File \"x.py\", line 3, in <module>\nKeyError: 'learning_rate'\n"),
            "KeyError: '<str>'"
        );
    }

    #[test]
    fn a_chained_python_traceback_gives_the_last_exception() {
        let tail =
            "Traceback (most recent call last):\n  File \"a.py\", line 2, in f\nKeyError: 'x'\n\n\
                    During handling of the above exception, another exception occurred:\n\n\
                    Traceback (most recent call last):\n  File \"a.py\", line 4, in <module>\n\
                    RuntimeError: lookup failed after 3 tries\n";
        assert_eq!(
            sig("exit code 1", Some(1), tail),
            "RuntimeError: lookup failed after <n> tries"
        );
    }

    #[test]
    fn cuda_out_of_memory_is_one_signature_whatever_the_sizes() {
        let a = "Traceback (most recent call last):\n  File \"t.py\", line 9\n\
                 torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.78 GiB total capacity; 13.1 GiB already allocated)\n";
        let b = "RuntimeError: CUDA out of memory. Tried to allocate 20.00 MiB (GPU 1; 7.79 GiB total capacity)\n";
        assert_eq!(
            sig("exit code 1", Some(1), a),
            "torch.cuda.OutOfMemoryError: CUDA out of memory"
        );
        assert_eq!(
            sig("exit code 1", Some(1), b),
            "RuntimeError: CUDA out of memory"
        );
    }

    #[test]
    fn rust_panics_old_and_new_style() {
        let new = "thread 'main' panicked at src/main.rs:12:5:\nindex out of bounds: the len is 3 but the index is 7\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(
            sig("exit code 101", Some(101), new),
            "panicked: index out of bounds: the len is <n> but the index is <n>"
        );
        let old = "thread 'main' panicked at 'called `Option::unwrap()` on a `None` value', src/lib.rs:40:9\n";
        assert_eq!(
            sig("exit code 101", Some(101), old),
            "panicked: called `Option::unwrap()` on a `None` value"
        );
    }

    #[test]
    fn scheduler_and_hsm_causes_come_before_the_last_output_line() {
        let slurm_oom = "epoch 3 loss 0.41\nslurmstepd: error: Detected 1 oom-kill event(s) in StepId=4711.batch. Some of your processes may have been killed by the cgroup out-of-memory handler.\n";
        assert_eq!(
            sig("exit code 137", Some(137), slurm_oom),
            "out of memory (killed by the scheduler)"
        );
        assert_eq!(
            sig("out of memory (killed by the scheduler)", None, ""),
            "out of memory (killed by the scheduler)"
        );
        let slurm_time = "step 900\nslurmstepd: error: *** JOB 4711 ON node12 CANCELLED AT 2026-12-01T10:00:00 DUE TO TIME LIMIT ***\n";
        assert_eq!(
            sig("timeout", None, slurm_time),
            "timeout (the scheduler's time limit)"
        );
        assert_eq!(sig("timeout", None, "step 17 of 100\n"), "timeout");
        let pbs_time = "=>> PBS: job killed: walltime 3615 exceeded limit 3600\n";
        assert_eq!(
            sig("exit code 271", Some(271), pbs_time),
            "timeout (the scheduler's time limit)"
        );
        let pbs_mem = "=>> PBS: job killed: mem 4194304kb exceeded limit 2097152kb\n";
        assert_eq!(
            sig("exit code 271", Some(271), pbs_mem),
            "out of memory (killed by the scheduler)"
        );
        assert_eq!(
            sig(
                "node failure",
                None,
                "slurmstepd: *** JOB 9 CANCELLED AT x DUE TO NODE FAILURE ***"
            ),
            "node failure"
        );
        assert_eq!(
            sig("killed by signal 9", None, "step 3\n"),
            "killed by signal 9"
        );
        assert_eq!(
            sig("exit code 137", Some(137), "step 3\nKilled\n"),
            "Killed"
        );
        assert_eq!(
            sig(
                "could not start: No such file or directory (os error 2)",
                None,
                ""
            ),
            "could not start: No such file or directory (os error <n>)"
        );
    }

    #[test]
    fn exit_codes_without_stderr_are_signatures_of_their_own() {
        assert_eq!(signature(Some("exit code 3"), Some(3), None), "exit code 3");
        assert_eq!(
            signature(Some("exit code 4"), Some(4), Some("")),
            "exit code 4"
        );
        assert_eq!(signature(None, None, None), "failed (no reason recorded)");
        assert_eq!(
            signature(Some("failed with exit code 3"), None, None),
            "exit code 3"
        );
        assert_eq!(
            signature(Some("unknown to a1 when taken up again"), None, None),
            "unknown to a1 when taken up again"
        );
        // Without an exception, the last real line.
        assert_eq!(
            sig(
                "exit code 3: error: data.csv not found",
                Some(3),
                "a warning\nerror: data.csv not found\n"
            ),
            "error: data.csv not found"
        );
    }

    #[test]
    fn normalisation_masks_what_varies_and_keeps_identifiers() {
        let cases = [
            (
                "loss is nan at step 1200, lr=3e-4",
                "loss is nan at step <n>, lr=<n>",
            ),
            ("object at 0x7f3a2b10c0d0 freed", "object at <hex> freed"),
            ("run 9f86d081884c7d65 failed", "run <hex> failed"),
            (
                "id 123e4567-e89b-12d3-a456-426614174000 gone",
                "id <uuid> gone",
            ),
            (
                "open('/tmp/x.txt') failed: ./data/a.csv: No such file",
                "open('<str>') failed: <path>: No such file",
            ),
            ("cannot read data/train_3.csv.", "cannot read <path>."),
            ("needs 512MB, has 2.5 GiB", "needs <size>, has <size>"),
            (
                "conv2d float32 layer3 cuda:0",
                "conv2d float32 layer3 cuda:<n>",
            ),
            ("can't open \"weights.pt\"", "can't open \"<str>\""),
            ("a   b\tc", "a b c"),
            ("deadbeef is a word", "deadbeef is a word"),
        ];
        for (input, expected) in cases {
            assert_eq!(normalise(input), expected, "{input}");
        }
    }

    #[test]
    fn the_traceback_starts_at_its_header() {
        let lines = traceback(&python());
        assert_eq!(lines[0], "Traceback (most recent call last):");
        assert_eq!(
            lines.last().unwrap(),
            "ValueError: batch_size 512 too large for /data/set_07/train.csv"
        );
        let long: String = (0..40).map(|i| format!("line {i}\n")).collect();
        let lines = traceback(&long);
        assert_eq!(lines.len(), TRACEBACK_LINES);
        assert_eq!(lines[0], "line 25");
    }

    use crate::core::value::params_from as params;

    fn failure(index: u64, tail: &str, p: Params) -> Failure {
        Failure {
            index,
            task: format!("task_{index:03}"),
            reason: Some("exit code 1".into()),
            exit_code: Some(1),
            tail: Some(tail.into()),
            params: p,
        }
    }

    #[test]
    fn groups_are_counted_sorted_and_name_what_their_tasks_share() {
        let oom = "Traceback (most recent call last):\n  File \"t.py\", line 2\nRuntimeError: CUDA out of memory. Tried to allocate 1.00 GiB\n";
        let nan = "ValueError: loss is nan at step 17\n";
        let p = |bs: i64, lr: f64, seed: i64| {
            params(&[
                ("batch_size", Value::Int(bs)),
                ("lr", Value::Float(lr)),
                ("seed", Value::Int(seed)),
                ("model", Value::Str("resnet".into())),
            ])
        };
        let mut all = Vec::new();
        for bs in [64, 512] {
            for lr in [0.1, 0.01] {
                for seed in 0..3 {
                    all.push(p(bs, lr, seed));
                }
            }
        }
        let constant = constant_params(&all);
        assert_eq!(constant.keys().collect::<Vec<_>>(), ["model"]);
        // Every batch_size=512 task ran out of memory; lr=0.1 with batch_size=64 went nan.
        let failures = vec![
            failure(4, nan, p(64, 0.1, 0)),
            failure(5, nan, p(64, 0.1, 1)),
            failure(7, oom, p(512, 0.1, 0)),
            failure(8, oom, p(512, 0.1, 1)),
            failure(9, oom, p(512, 0.1, 2)),
            failure(10, oom, p(512, 0.01, 0)),
            failure(11, oom, p(512, 0.01, 1)),
            failure(12, oom, p(512, 0.01, 2)),
            Failure {
                tail: None,
                reason: Some("exit code 2".into()),
                exit_code: Some(2),
                ..failure(1, "", p(64, 0.1, 0))
            },
        ];
        let groups = group(&failures, &constant);
        assert_eq!(groups.len(), 3);
        assert_eq!(groups[0].signature, "RuntimeError: CUDA out of memory");
        assert_eq!(groups[0].count, 6);
        assert_eq!(
            groups[0].examples,
            ["task_007", "task_008", "task_009", "task_010", "task_011"]
        );
        assert_eq!(
            groups[0].shared,
            [("batch_size".to_string(), Value::Int(512))]
        );
        assert_eq!(groups[0].traceback[0], "Traceback (most recent call last):");
        assert_eq!(groups[1].signature, "ValueError: loss is nan at step <n>");
        assert_eq!(
            groups[1].shared,
            [
                ("batch_size".to_string(), Value::Int(64)),
                ("lr".to_string(), Value::Float(0.1))
            ]
        );
        assert_eq!(groups[2].signature, "exit code 2");
        assert_eq!(groups[2].count, 1);
        assert!(groups[2].traceback.is_empty());
        // A single-task group shares all its non-constant params.
        assert_eq!(groups[2].shared.len(), 3);
        assert_eq!(
            describe_shared(&groups[0]).as_deref(),
            Some("all 6 have batch_size=512")
        );
        assert_eq!(
            describe_shared(&groups[1]).as_deref(),
            Some("both have batch_size=64, lr=0.1")
        );
        assert_eq!(
            describe_shared(&groups[2]).as_deref(),
            Some("task_001 has batch_size=64, lr=0.1, seed=0")
        );
        let json = to_json(&groups);
        assert_eq!(json[0]["count"], 6);
        assert_eq!(json[0]["shared_params"]["batch_size"], 512);
        assert_eq!(json[1]["example_tasks"][1], "task_005");
    }

    #[test]
    fn any_text_gives_a_signature_without_panicking() {
        let hostile = "Traceback (most recent call last):\n'\"0x 0xZZ 1e 1e+ 2. 3 G é/ü 'a\"b' \u{202e}\r\n\
                       thread 'x' panicked at\npanicked at '\n123e4567-e89b-12d3-a456-42661417400\nKilled";
        let chars: Vec<char> = hostile.chars().collect();
        for start in 0..chars.len() {
            for end in start..=chars.len() {
                let text: String = chars[start..end].iter().collect();
                let s = signature(Some(&text), None, Some(&text));
                assert!(s.chars().count() <= SIGNATURE_MAX_CHARS);
                let _ = traceback(&text);
            }
        }
        let long = "x".repeat(1000);
        assert_eq!(
            signature(None, Some(1), Some(&long)).chars().count(),
            SIGNATURE_MAX_CHARS
        );
    }

    #[test]
    fn no_failures_no_groups_and_no_tasks_no_constants() {
        assert!(group(&[], &BTreeMap::new()).is_empty());
        assert!(constant_params(std::iter::empty()).is_empty());
    }
}
