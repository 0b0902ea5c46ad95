//! A run's own log files in its sweep directory: `logs/engine.log` (what the coordinator
//! traces at info level during the run, plus the notes the run prints) and
//! `logs/sources/NAME.log` (one source's connections, losses, refusals, disk warnings and
//! batch submissions). Both are appended to (a `sweep complete` adds to the run before it),
//! one timestamped line per entry.

use crate::layout::{format_utc, SweepPaths};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;

/// The engine log of the run in progress; `None` outside a run (the tracing layer that writes
/// to it then writes nothing).
static ENGINE: Mutex<Option<File>> = Mutex::new(None);

fn append(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

/// Makes `path` the engine log until the guard is dropped (the run's end).
pub fn start_engine_log(path: &Path) -> io::Result<EngineLogGuard> {
    let file = append(path)?;
    if let Ok(mut slot) = ENGINE.lock() {
        *slot = Some(file);
    }
    Ok(EngineLogGuard)
}

/// Closes the engine log when the run ends.
pub struct EngineLogGuard;

impl Drop for EngineLogGuard {
    fn drop(&mut self) {
        if let Ok(mut slot) = ENGINE.lock() {
            *slot = None;
        }
    }
}

/// A line the run shows its user (a failed task, a source's news), kept in the engine log too.
pub fn note(line: &str, now_ms: i64) {
    if let Ok(mut slot) = ENGINE.lock() {
        if let Some(file) = slot.as_mut() {
            let _ = file.write_all(format!("{}  NOTE {line}\n", format_utc(now_ms)).as_bytes());
        }
    }
}

/// The tracing writer for the engine log (`tracing_subscriber`'s `MakeWriter`): each event
/// arrives formatted as one write, appended under the lock; nothing is written outside a run.
#[derive(Clone, Copy, Default)]
pub struct EngineLog;

pub struct EngineLogWriter;

impl Write for EngineLogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Ok(mut slot) = ENGINE.lock() {
            if let Some(file) = slot.as_mut() {
                file.write_all(buf)?;
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for EngineLog {
    type Writer = EngineLogWriter;
    fn make_writer(&'a self) -> Self::Writer {
        EngineLogWriter
    }
}

/// The per-source logs of a run: lines are gathered and written per source in one append at
/// each `flush` (the sweep actor flushes with its store batches), so a burst of submissions is
/// one write, not one per task.
pub struct SourceLogs {
    paths: SweepPaths,
    pending: BTreeMap<String, String>,
    files: BTreeMap<String, File>,
    /// Sources whose log could not be opened: said once, not at every flush.
    broken: BTreeMap<String, String>,
}

impl SourceLogs {
    pub fn new(paths: SweepPaths) -> Self {
        SourceLogs {
            paths,
            pending: BTreeMap::new(),
            files: BTreeMap::new(),
            broken: BTreeMap::new(),
        }
    }

    /// Queues a line for `source`'s log, stamped `now_ms`.
    pub fn line(&mut self, source: &str, text: &str, now_ms: i64) {
        let buffer = self.pending.entry(source.to_string()).or_default();
        buffer.push_str(&format_utc(now_ms));
        buffer.push(' ');
        buffer.push_str(text);
        buffer.push('\n');
    }

    /// Writes what was queued.
    pub fn flush(&mut self) {
        for (source, text) in std::mem::take(&mut self.pending) {
            if self.broken.contains_key(&source) {
                continue;
            }
            if !self.files.contains_key(&source) {
                let path = self.paths.source_log(&source);
                match append(&path) {
                    Ok(file) => {
                        self.files.insert(source.clone(), file);
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "cannot write the source's log");
                        self.broken.insert(source, e.to_string());
                        continue;
                    }
                }
            }
            if let Some(file) = self.files.get_mut(&source) {
                if let Err(e) = file.write_all(text.as_bytes()) {
                    tracing::warn!(source = %source, error = %e, "cannot write the source's log");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_lines_are_appended_per_source_at_each_flush() {
        let dir = tempfile::tempdir().unwrap();
        let paths = SweepPaths::new(dir.path().to_path_buf());
        let mut logs = SourceLogs::new(paths.clone());
        logs.line("gpu1", "connected", 0);
        logs.line("local", "2 slots", 1000);
        assert!(
            !paths.source_log("gpu1").exists(),
            "nothing before the flush"
        );
        logs.flush();
        logs.line("gpu1", "lost", 2000);
        logs.flush();
        let gpu1 = std::fs::read_to_string(paths.source_log("gpu1")).unwrap();
        assert_eq!(
            gpu1,
            "1970-01-01T00:00:00.000Z connected\n1970-01-01T00:00:02.000Z lost\n"
        );
        // A second run appends.
        let mut again = SourceLogs::new(paths.clone());
        again.line("local", "run 2", 3000);
        again.flush();
        let local = std::fs::read_to_string(paths.source_log("local")).unwrap();
        assert_eq!(local.lines().count(), 2, "{local}");
    }
}
