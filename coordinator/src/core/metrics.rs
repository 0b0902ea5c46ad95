//! A task's metrics: parsing `HSM_METRIC name=value [name=value …] [step=N]` lines of its stdout,
//! `results/metrics.json` (a flat or nested object; nested keys dotted) and
//! `results/metrics.jsonl` (one object per line, optional `step`), kept bounded: the last value
//! of every name, and per name a series of at most `MAX_SERIES_POINTS` points thinned evenly,
//! so a task printing a million metric lines costs a bounded amount of memory and storage.

use std::collections::BTreeMap;

/// The marker a metric line starts with (after leading whitespace).
pub const METRIC_MARKER: &str = "HSM_METRIC";
/// Points kept per metric name and attempt; past it every other point is dropped and the
/// stride doubles, so the series still spans the whole run.
pub const MAX_SERIES_POINTS: usize = 512;
/// Distinct metric names kept per attempt; more are counted as dropped.
pub const MAX_NAMES: usize = 256;
/// Longest metric name kept.
pub const MAX_NAME_LEN: usize = 128;

/// One kept point of a series.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    pub name: String,
    pub step: Option<i64>,
    pub value: f64,
}

/// The last value of a name and the step it was reported at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LastValue {
    pub value: f64,
    pub step: Option<i64>,
}

/// A name's series while it is being collected.
#[derive(Debug, Clone, Default)]
struct Series {
    points: Vec<(Option<i64>, f64)>,
    /// Keep one point in `stride`.
    stride: u64,
    /// Points offered so far.
    seen: u64,
}

impl Series {
    fn push(&mut self, step: Option<i64>, value: f64) {
        if self.stride == 0 {
            self.stride = 1;
        }
        let keep = self.seen.is_multiple_of(self.stride);
        self.seen += 1;
        if !keep {
            return;
        }
        if self.points.len() == MAX_SERIES_POINTS {
            // Keep every other point and take half as many from now on.
            let mut i = 0;
            self.points.retain(|_| {
                i += 1;
                i % 2 == 1
            });
            self.stride *= 2;
            if !(self.seen - 1).is_multiple_of(self.stride) {
                return;
            }
        }
        self.points.push((step, value));
    }
}

/// Everything one attempt reported, bounded.
#[derive(Debug, Clone, Default)]
pub struct TaskMetrics {
    last: BTreeMap<String, LastValue>,
    series: BTreeMap<String, Series>,
    /// Values that were not numbers, names too long, past `MAX_NAMES`: counted, not kept.
    pub dropped: u64,
    /// Why the first of them was left out (`` `loss=abc` is not a number ``), so the warning
    /// shows the user one case to fix rather than only a count.
    pub first_dropped: Option<String>,
}

impl TaskMetrics {
    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }

    /// The last value of every name.
    pub fn last(&self) -> &BTreeMap<String, LastValue> {
        &self.last
    }

    /// Every kept point, by name then in the order reported.
    pub fn points(&self) -> impl Iterator<Item = MetricPoint> + '_ {
        self.series.iter().flat_map(|(name, series)| {
            series.points.iter().map(move |&(step, value)| MetricPoint {
                name: name.clone(),
                step,
                value,
            })
        })
    }

    /// Counts one value left out, keeping the reason of the first.
    fn drop_one(&mut self, why: impl FnOnce() -> String) {
        self.dropped += 1;
        if self.first_dropped.is_none() {
            self.first_dropped = Some(why());
        }
    }

    /// Records one value.
    pub fn record(&mut self, name: &str, value: f64, step: Option<i64>) {
        if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
            self.drop_one(|| {
                format!("a metric name must be 1 to {MAX_NAME_LEN} characters without control characters")
            });
            return;
        }
        if !self.last.contains_key(name) && self.last.len() >= MAX_NAMES {
            self.drop_one(|| format!("`{name}` is past the limit of {MAX_NAMES} names per task"));
            return;
        }
        // The names repeat on every line: look up before allocating a key.
        let last = LastValue { value, step };
        match self.last.get_mut(name) {
            Some(kept) => *kept = last,
            None => {
                self.last.insert(name.to_string(), last);
            }
        }
        match self.series.get_mut(name) {
            Some(series) => series.push(step, value),
            None => self
                .series
                .entry(name.to_string())
                .or_default()
                .push(step, value),
        }
    }

    /// Parses one stdout line; anything that is not a metric line is ignored.
    pub fn parse_line(&mut self, line: &str) {
        let Some(rest) = line.trim_start().strip_prefix(METRIC_MARKER) else {
            return;
        };
        if !rest.is_empty() && !rest.starts_with([' ', '\t', ':']) {
            return;
        }
        let rest = rest.trim_start_matches(':');
        let mut pairs = Vec::new();
        let mut step = None;
        for word in rest.split_whitespace() {
            let Some((name, value)) = word.split_once('=') else {
                self.drop_one(|| format!("`{word}` is not name=value"));
                continue;
            };
            if name == "step" {
                match value.parse::<i64>() {
                    Ok(s) => step = Some(s),
                    Err(_) => match parse_number(value) {
                        Some(v) if v.fract() == 0.0 && v.abs() < 9e15 => step = Some(v as i64),
                        _ => self.drop_one(|| format!("`{word}`: a step is a whole number")),
                    },
                }
                continue;
            }
            match parse_number(value) {
                Some(v) => pairs.push((name, v)),
                None => self.drop_one(|| format!("`{word}`: `{value}` is not a number")),
            }
        }
        for (name, value) in pairs {
            self.record(name, value, step);
        }
    }

    /// Takes the numbers of a JSON object, nested keys joined with `.`; `step` at the top
    /// level is the step of the others.
    pub fn record_json_object(&mut self, object: &serde_json::Map<String, serde_json::Value>) {
        let step = object
            .get("step")
            .and_then(|s| s.as_i64().or_else(|| s.as_f64().map(|f| f as i64)));
        let mut flat = Vec::new();
        flatten("", object, &mut flat, 0);
        for (name, value) in flat {
            if name == "step" {
                continue;
            }
            self.record(&name, value, step);
        }
    }

    /// `results/metrics.json`: one object. An error says what is wrong, for the task's log.
    pub fn parse_json(&mut self, text: &str) -> Result<(), String> {
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(object)) => {
                self.record_json_object(&object);
                Ok(())
            }
            Ok(_) => Err("not a JSON object (write one object, e.g. {\"loss\": 0.25})".into()),
            Err(e) => Err(format!("not valid JSON: {e}")),
        }
    }

    /// One line of `results/metrics.jsonl`; blank lines are fine, anything else not an object
    /// is counted as dropped.
    pub fn parse_jsonl_line(&mut self, line: &str) {
        if line.trim().is_empty() {
            return;
        }
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(serde_json::Value::Object(object)) => self.record_json_object(&object),
            _ => self.drop_one(|| "a line of metrics.jsonl is not a JSON object".to_string()),
        }
    }
}

/// A metric value: a decimal number, `nan`, `inf`, `-inf`, `true`/`false` as 1/0.
pub fn parse_number(text: &str) -> Option<f64> {
    let text = text.trim_end_matches([',', ';']);
    // Rust's float grammar also takes "infinity"/"nan" in any case, which is what we want, and
    // rejects hex and empty text.
    if let Ok(value) = text.parse::<f64>() {
        return Some(value);
    }
    match text {
        "true" | "True" => Some(1.0),
        "false" | "False" => Some(0.0),
        _ if text.contains('_')
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || b"+-.eE_".contains(&b)) =>
        {
            text.replace('_', "").parse().ok()
        }
        _ => None,
    }
}

/// Nested objects to dotted names; arrays and strings are not metrics. Depth is bounded.
fn flatten(
    prefix: &str,
    object: &serde_json::Map<String, serde_json::Value>,
    out: &mut Vec<(String, f64)>,
    depth: usize,
) {
    if depth > 16 {
        return;
    }
    for (key, value) in object {
        let name = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            serde_json::Value::Number(n) => {
                if let Some(f) = n.as_f64() {
                    out.push((name, f));
                }
            }
            serde_json::Value::Bool(b) => out.push((name, if *b { 1.0 } else { 0.0 })),
            serde_json::Value::Object(inner) => flatten(&name, inner, out, depth + 1),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last(m: &TaskMetrics, name: &str) -> Option<(f64, Option<i64>)> {
        m.last().get(name).map(|l| (l.value, l.step))
    }

    #[test]
    fn metric_lines_give_values_with_their_step() {
        let mut m = TaskMetrics::default();
        m.parse_line("epoch 1 done");
        m.parse_line("HSM_METRIC loss=0.5 acc=0.9 step=1");
        m.parse_line("  HSM_METRIC loss=0.25 step=2");
        m.parse_line("HSM_METRIC final_loss=1e-3");
        m.parse_line("HSM_METRICS loss=7");
        assert_eq!(last(&m, "loss"), Some((0.25, Some(2))));
        assert_eq!(last(&m, "acc"), Some((0.9, Some(1))));
        assert_eq!(last(&m, "final_loss"), Some((0.001, None)));
        assert_eq!(m.points().filter(|p| p.name == "loss").count(), 2);
        assert_eq!(m.dropped, 0);
    }

    #[test]
    fn bad_values_are_counted_not_kept() {
        let mut m = TaskMetrics::default();
        m.parse_line("HSM_METRIC loss=abc lr=0.1 junk step=x");
        assert_eq!(last(&m, "lr"), Some((0.1, None)));
        assert!(last(&m, "loss").is_none());
        assert_eq!(m.dropped, 3);
        // The first one is named, for the warning.
        assert_eq!(
            m.first_dropped.as_deref(),
            Some("`loss=abc`: `abc` is not a number")
        );
        m.parse_line("HSM_METRIC loss=nan");
        assert!(m.last()["loss"].value.is_nan());
    }

    #[test]
    fn nested_json_keys_are_dotted_and_strings_ignored() {
        let mut m = TaskMetrics::default();
        m.parse_json(r#"{"val": {"loss": 0.3, "acc": 0.8}, "best": true, "note": "x", "step": 9}"#)
            .unwrap();
        assert_eq!(last(&m, "val.loss"), Some((0.3, Some(9))));
        assert_eq!(last(&m, "best"), Some((1.0, Some(9))));
        assert!(last(&m, "note").is_none());
        assert!(last(&m, "step").is_none());
        assert!(m.parse_json("[1, 2]").is_err());
        assert!(m
            .parse_json("{")
            .unwrap_err()
            .starts_with("not valid JSON: "));
    }

    #[test]
    fn jsonl_lines_each_add_a_point() {
        let mut m = TaskMetrics::default();
        for line in [
            r#"{"step": 1, "loss": 2.0}"#,
            "",
            r#"{"step": 2, "loss": 1.0}"#,
            "oops",
        ] {
            m.parse_jsonl_line(line);
        }
        assert_eq!(last(&m, "loss"), Some((1.0, Some(2))));
        assert_eq!(m.points().count(), 2);
        assert_eq!(m.dropped, 1);
    }

    #[test]
    fn a_million_points_keep_a_bounded_series_spanning_the_run() {
        let mut m = TaskMetrics::default();
        for step in 0..1_000_000i64 {
            m.record("loss", 1.0 / (step + 1) as f64, Some(step));
        }
        let points: Vec<_> = m.points().collect();
        assert!(points.len() <= MAX_SERIES_POINTS, "{}", points.len());
        assert!(points.len() >= MAX_SERIES_POINTS / 2, "{}", points.len());
        assert_eq!(points[0].step, Some(0));
        // Evenly thinned: the steps kept are a multiple of one stride apart.
        let stride = points[1].step.unwrap() - points[0].step.unwrap();
        assert!(points
            .windows(2)
            .all(|w| w[1].step.unwrap() - w[0].step.unwrap() == stride));
        assert!(points.last().unwrap().step.unwrap() > 1_000_000 - 2 * stride);
        assert_eq!(last(&m, "loss").unwrap().1, Some(999_999));
    }

    #[test]
    fn names_are_bounded() {
        let mut m = TaskMetrics::default();
        for i in 0..(MAX_NAMES + 10) {
            m.record(&format!("m{i}"), 1.0, None);
        }
        m.record(&"x".repeat(MAX_NAME_LEN + 1), 1.0, None);
        assert_eq!(m.last().len(), MAX_NAMES);
        assert_eq!(m.dropped, 11);
        assert_eq!(
            m.first_dropped.as_deref(),
            Some("`m256` is past the limit of 256 names per task")
        );
    }

    #[test]
    fn numbers_parse_like_a_person_writes_them() {
        assert_eq!(parse_number("0.5"), Some(0.5));
        assert_eq!(parse_number("-3e2"), Some(-300.0));
        assert_eq!(parse_number("1_000"), Some(1000.0));
        assert_eq!(parse_number("0.5,"), Some(0.5));
        assert_eq!(parse_number("inf"), Some(f64::INFINITY));
        assert_eq!(parse_number("True"), Some(1.0));
        assert_eq!(parse_number("0x10"), None);
        assert_eq!(parse_number(""), None);
        assert_eq!(parse_number("-"), None);
    }
}
