//! Reading a finished attempt's metrics from its task directory (`stdout.log` metric lines,
//! `results/metrics.json`, `results/metrics.jsonl`) on a thread of its own, so a task that printed
//! a million lines delays neither the store's writes nor the run. The store actor hands it
//! ended attempts and records what comes back (`Store::record_metrics`, `status.yaml`).

use crate::core::metrics::{TaskMetrics, METRIC_MARKER};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

/// Longest stdout line looked at; the rest of a longer line is skipped (a metric line is short,
/// a progress bar without newlines can be megabytes).
const MAX_LINE: usize = 64 * 1024;
/// Largest `metrics.json` read.
const MAX_JSON: u64 = 16 * 1024 * 1024;

/// What one ended attempt reported.
#[derive(Debug)]
pub struct Extracted {
    pub index: u64,
    pub attempt: u32,
    pub metrics: TaskMetrics,
    /// What could not be read (a broken `metrics.json`), one line each, for the run's log.
    pub problems: Vec<String>,
    /// Whether the attempt left any output to read (an attempt cancelled before it started
    /// left none, and is not marked read).
    pub had_output: bool,
}

/// The attempt's stdout: `stdout.attemptN.log` once a later attempt has started (the task
/// directory keeps earlier attempts' logs under that name), else `stdout.log`.
fn open_stdout(dir: &Path, attempt: u32) -> Option<File> {
    let kept = dir.join(format!("stdout.attempt{attempt}.log"));
    if let Ok(file) = File::open(&kept) {
        return Some(file);
    }
    let current = File::open(dir.join("stdout.log")).ok()?;
    // A retry may have renamed the log between the two opens; the kept one is then ours.
    match File::open(&kept) {
        Ok(file) => Some(file),
        Err(_) => Some(current),
    }
}

/// Reads every metric an attempt left in `dir` (its task directory). Never fails: what cannot be
/// read is named in `problems`.
pub fn extract(index: u64, attempt: u32, dir: &Path) -> Extracted {
    let mut metrics = TaskMetrics::default();
    let mut problems = Vec::new();
    // A compact sweep's silent task has no directory: one look instead of five.
    if !dir.is_dir() {
        return Extracted {
            index,
            attempt,
            metrics,
            problems,
            had_output: false,
        };
    }
    let stdout = open_stdout(dir, attempt);
    let had_output = stdout.is_some() || dir.join("results").is_dir();
    if let Some(file) = stdout {
        if let Err(e) = scan_lines(file, |line| {
            if line.contains(METRIC_MARKER) {
                metrics.parse_line(line)
            }
        }) {
            problems.push(format!("stdout.log: {e}"));
        }
    }
    let results = dir.join("results");
    match File::open(results.join("metrics.json")) {
        Ok(file) => {
            let mut text = String::new();
            match file.take(MAX_JSON).read_to_string(&mut text) {
                Ok(_) => {
                    if let Err(e) = metrics.parse_json(&text) {
                        problems.push(format!("results/metrics.json: {e}"));
                    }
                }
                Err(e) => problems.push(format!("results/metrics.json: {e}")),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => problems.push(format!("results/metrics.json: {e}")),
    }
    match File::open(results.join("metrics.jsonl")) {
        Ok(file) => {
            if let Err(e) = scan_lines(file, |line| metrics.parse_jsonl_line(line)) {
                problems.push(format!("results/metrics.jsonl: {e}"));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => problems.push(format!("results/metrics.jsonl: {e}")),
    }
    if metrics.dropped > 0 {
        problems.push(format!(
            "{} metric value(s) left out{}",
            metrics.dropped,
            metrics
                .first_dropped
                .as_deref()
                .map(|why| format!(", the first because {why}"))
                .unwrap_or_default()
        ));
    }
    Extracted {
        index,
        attempt,
        metrics,
        problems,
        had_output,
    }
}

/// Calls `each` with every line (lossy UTF-8, without the newline), skipping past `MAX_LINE`
/// bytes of any one line.
fn scan_lines(file: File, mut each: impl FnMut(&str)) -> std::io::Result<()> {
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)?;
        if read == 0 {
            return Ok(());
        }
        if line.last() != Some(&b'\n') && read == MAX_LINE {
            // Too long: skip to the end of this line.
            let mut rest = Vec::new();
            loop {
                rest.clear();
                let n = (&mut reader)
                    .take(MAX_LINE as u64)
                    .read_until(b'\n', &mut rest)?;
                if n == 0 || rest.last() == Some(&b'\n') {
                    break;
                }
            }
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        each(text.trim_end_matches(['\n', '\r']));
    }
}

/// The `metrics.json` a task directory gets: the last value of every name.
pub fn metrics_json(metrics: &TaskMetrics) -> String {
    let object: serde_json::Map<String, serde_json::Value> = metrics
        .last()
        .iter()
        .map(|(name, last)| {
            (
                name.clone(),
                serde_json::Number::from_f64(last.value)
                    .map(serde_json::Value::Number)
                    .unwrap_or(serde_json::Value::Null),
            )
        })
        .collect();
    let mut text = serde_json::to_string_pretty(&object).unwrap_or_default();
    text.push('\n');
    text
}

/// Reads an attempt's metrics and, when it reported any, writes the task's `metrics.json`.
pub fn read_and_write(index: u64, attempt: u32, dir: &Path) -> Extracted {
    let extracted = extract(index, attempt, dir);
    if !extracted.metrics.is_empty() {
        let path = dir.join("metrics.json");
        if let Err(e) =
            crate::layout::write_atomic(&path, metrics_json(&extracted.metrics).as_bytes())
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot write metrics.json");
        }
    }
    extracted
}

/// A thread reading ended attempts' metrics, in the order they were handed over.
pub struct MetricsWorker {
    jobs: Option<mpsc::Sender<(u64, u32, PathBuf)>>,
    done: mpsc::Receiver<Extracted>,
    /// Handed over and not yet collected.
    pending: usize,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetricsWorker {
    pub fn spawn() -> std::io::Result<MetricsWorker> {
        let (jobs, inbox) = mpsc::channel::<(u64, u32, PathBuf)>();
        let (outbox, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("hsm-metrics".into())
            .spawn(move || {
                for (index, attempt, dir) in inbox {
                    let extracted = read_and_write(index, attempt, &dir);
                    if outbox.send(extracted).is_err() {
                        return;
                    }
                }
            })?;
        Ok(MetricsWorker {
            jobs: Some(jobs),
            done,
            pending: 0,
            thread: Some(thread),
        })
    }

    /// Reads attempt `attempt` of task `index` from its directory `dir`.
    pub fn submit(&mut self, index: u64, attempt: u32, dir: PathBuf) {
        if let Some(jobs) = &self.jobs {
            if jobs.send((index, attempt, dir)).is_ok() {
                self.pending += 1;
            }
        }
    }

    pub fn pending(&self) -> usize {
        self.pending
    }

    /// What is ready, without waiting.
    pub fn ready(&mut self) -> Vec<Extracted> {
        let out: Vec<Extracted> = self.done.try_iter().collect();
        self.pending -= out.len();
        out
    }

    /// Everything handed over, waiting for what is still being read.
    pub fn all(&mut self) -> Vec<Extracted> {
        let mut out = Vec::with_capacity(self.pending);
        while self.pending > 0 {
            match self.done.recv() {
                Ok(extracted) => {
                    self.pending -= 1;
                    out.push(extracted);
                }
                Err(_) => {
                    self.pending = 0;
                }
            }
        }
        out
    }
}

impl Drop for MetricsWorker {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdout_lines_and_both_result_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("results")).unwrap();
        std::fs::write(
            dir.path().join("stdout.log"),
            "start\nHSM_METRIC loss=0.5 step=1\nHSM_METRIC loss=0.25 step=2\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("results/metrics.json"),
            r#"{"test": {"acc": 0.75}}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("results/metrics.jsonl"),
            "{\"step\": 1, \"lr\": 0.1}\n{\"step\": 2, \"lr\": 0.05}\n",
        )
        .unwrap();
        let got = extract(1, 1, dir.path());
        let last = got.metrics.last();
        assert_eq!(last["loss"].value, 0.25);
        assert_eq!(last["test.acc"].value, 0.75);
        assert_eq!(last["lr"].value, 0.05);
        assert!(got.problems.is_empty(), "{:?}", got.problems);
        assert_eq!(
            metrics_json(&got.metrics),
            "{\n  \"loss\": 0.25,\n  \"lr\": 0.05,\n  \"test.acc\": 0.75\n}\n"
        );
    }

    #[test]
    fn an_earlier_attempts_kept_log_is_read_for_that_attempt() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("stdout.attempt1.log"),
            "HSM_METRIC loss=9\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("stdout.log"), "HSM_METRIC loss=1\n").unwrap();
        assert_eq!(extract(1, 1, dir.path()).metrics.last()["loss"].value, 9.0);
        assert_eq!(extract(1, 2, dir.path()).metrics.last()["loss"].value, 1.0);
    }

    #[test]
    fn a_broken_metrics_json_is_named_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("results")).unwrap();
        std::fs::write(dir.path().join("results/metrics.json"), "{\"a\": ").unwrap();
        std::fs::write(dir.path().join("stdout.log"), "HSM_METRIC b=1\n").unwrap();
        let got = extract(1, 1, dir.path());
        assert_eq!(got.metrics.last().len(), 1);
        assert!(
            got.problems[0].starts_with("results/metrics.json: "),
            "{:?}",
            got.problems
        );
    }

    #[test]
    fn a_huge_line_without_newline_is_skipped_and_the_next_line_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = "x".repeat(3 * MAX_LINE + 17);
        text.push_str("\nHSM_METRIC loss=2\n");
        std::fs::write(dir.path().join("stdout.log"), text).unwrap();
        let got = extract(1, 1, dir.path());
        assert_eq!(got.metrics.last()["loss"].value, 2.0);
    }

    #[test]
    fn the_worker_returns_every_job() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("stdout.log"), "HSM_METRIC loss=3\n").unwrap();
        let mut worker = MetricsWorker::spawn().unwrap();
        for attempt in 1..=3 {
            worker.submit(7, attempt, dir.path().to_path_buf());
        }
        let all = worker.all();
        assert_eq!(all.len(), 3);
        assert_eq!(worker.pending(), 0);
        assert!(dir.path().join("metrics.json").is_file());
    }
}
