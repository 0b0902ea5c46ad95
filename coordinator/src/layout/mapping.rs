//! `task_mapping.yaml`, the human-readable view of every task's hash, status, attempt,
//! source and times: written from `sweep.db` a task at a time, by hand rather than through the
//! YAML emitter (a million-task sweep's mapping is 180 MB).

use super::write_atomic_with;
use crate::store::{MappingRow, TaskRow};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// `task_mapping.yaml`: every task with its hash, source, status, attempt and times.
pub fn mapping_yaml(sweep_id: &str, tasks: &[TaskRow]) -> String {
    let mut out = mapping_header(sweep_id);
    let mut format = MappingFormat::default();
    for task in tasks {
        format.entry(&mut out, &mapping_row(task));
    }
    out
}

/// The lines of `task_mapping.yaml` before its tasks.
pub fn mapping_header(sweep_id: &str) -> String {
    format!(
        "# task -> params hash, source, status, attempt, times (a view of sweep.db)\nsweep_id: {sweep_id}\ntasks:\n"
    )
}

/// One task's entry of `task_mapping.yaml`, appended to `out`: the block `emit_json` writes for
/// the same object (a million of them are written at a sweep's end).
pub fn mapping_entry(out: &mut String, task: &MappingRow<'_>) {
    MappingFormat::default().entry(out, task);
}

/// Writes `task_mapping.yaml` entries by hand rather than through `format!` and the YAML
/// emitter (whose allocations were half of a million-task mapping's time), keeping the last
/// source's YAML text: a sweep's tasks name a few sources a million times.
#[derive(Default)]
pub struct MappingFormat {
    source: Option<(String, String)>,
    /// The last time written and its text: tasks cancelled together share one, and tasks
    /// that end in the same millisecond as they start share theirs.
    time: (Option<i64>, String),
}

impl MappingFormat {
    /// `mapping_entry`, with what this formatter keeps.
    pub fn entry(&mut self, out: &mut String, task: &MappingRow<'_>) {
        out.push_str("  ");
        out.push_str(task.task_id);
        out.push_str(":\n    params_hash: ");
        // What `emit_string` gives, without running the YAML resolver a million times: a hex
        // hash with a letter other than `e` cannot read as a number, so it stays plain.
        let hash = task.params_hash;
        let plain_hash = hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && hash.bytes().any(|b| matches!(b, b'a'..=b'd' | b'f'));
        if plain_hash {
            out.push_str(hash);
        } else {
            out.push_str(&crate::yaml::emit_string(hash));
        }
        out.push_str("\n    status: ");
        out.push_str(task.status);
        out.push_str("\n    attempt: ");
        push_int(out, task.attempt);
        out.push_str("\n    source: ");
        match task.source {
            None => out.push_str("null"),
            Some(source) => {
                if self.source.as_ref().is_none_or(|(s, _)| s != source) {
                    self.source = Some((source.into(), crate::yaml::emit_string(source)));
                }
                if let Some((_, text)) = &self.source {
                    out.push_str(text);
                }
            }
        }
        out.push_str("\n    exit_code: ");
        match task.exit_code {
            None => out.push_str("null"),
            Some(code) => push_int(out, code),
        }
        // A time always has `:`, so it is quoted, and has nothing to escape.
        for (key, time) in [
            ("\n    started: ", task.started_at),
            ("\n    finished: ", task.finished_at),
        ] {
            out.push_str(key);
            match time {
                None => out.push_str("null"),
                Some(t) => {
                    let (at, text) = &mut self.time;
                    if *at != Some(t) {
                        text.clear();
                        text.push('"');
                        crate::core::time::push_utc(text, t);
                        text.push('"');
                        *at = Some(t);
                    }
                    out.push_str(text);
                }
            }
        }
        out.push('\n');
    }
}

/// `n` in decimal, appended without the formatting machinery.
fn push_int(out: &mut String, n: i64) {
    if n < 0 {
        out.push('-');
    }
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    for &d in &digits[at..] {
        out.push(char::from(d));
    }
}

/// A task row as `mapping_entry` reads it.
fn mapping_row(task: &TaskRow) -> MappingRow<'_> {
    MappingRow {
        index: task.index,
        task_id: &task.task_id,
        params_hash: &task.params_hash,
        status: task.status.as_str(),
        attempt: i64::from(task.attempt),
        source: task.source.as_deref(),
        exit_code: task.exit_code.map(i64::from),
        started_at: task.started_at,
        finished_at: task.finished_at,
    }
}

/// Writes `task_mapping.yaml` from the database a task at a time (temp + rename): a million
/// tasks' view without a million rows in memory.
pub fn write_mapping(path: &Path, sweep_id: &str, store: &crate::store::Store) -> io::Result<()> {
    write_mapping_unless(
        path,
        sweep_id,
        store,
        &std::sync::atomic::AtomicBool::new(false),
    )
}

/// `write_mapping` of the sweep whose database is `db`, by two threads with a connection each:
/// the second renders the upper half of the tasks into a file of its own, appended at the end.
/// For the run's last mapping, when nothing else needs the cores: a million tasks' mapping
/// takes over a second on one.
pub fn write_mapping_split(path: &Path, sweep_id: &str, db: &Path) -> io::Result<()> {
    split_mapping(path, sweep_id, db, SPLIT_MAPPING_ABOVE)
}

fn split_mapping(path: &Path, sweep_id: &str, db: &Path, above: u64) -> io::Result<()> {
    use crate::store::Store;
    let open = || Store::open_read_only(db).map_err(|e| io::Error::other(e.to_string()));
    let store = open()?;
    let last = store
        .last_index()
        .map_err(|e| io::Error::other(e.to_string()))?;
    if last < above {
        return write_mapping(path, sweep_id, &store);
    }
    let middle = last / 2;
    let never = std::sync::atomic::AtomicBool::new(false);
    let mut upper = path.as_os_str().to_owned();
    upper.push(".upper.tmp");
    let upper = PathBuf::from(upper);
    let written = std::thread::scope(|scope| {
        let second = scope.spawn(|| -> io::Result<()> {
            let mut out = io::BufWriter::with_capacity(1 << 16, fs::File::create(&upper)?);
            mapping_entries(&open()?, middle + 1, u64::MAX, &mut out, &never)?;
            out.flush()
        });
        write_atomic_with(path, |file| {
            file.write_all(mapping_header(sweep_id).as_bytes())?;
            mapping_entries(&store, 0, middle, file, &never)?;
            second
                .join()
                .map_err(|_| io::Error::other("the mapping's second writer panicked"))??;
            io::copy(&mut fs::File::open(&upper)?, file)?;
            Ok(())
        })
    });
    let _ = fs::remove_file(&upper);
    written
}

/// Below this many tasks one thread writes the mapping (a tenth of a second or less).
const SPLIT_MAPPING_ABOVE: u64 = 100_000;

/// The mapping entries of the tasks numbered `from..=to`, written to `out`; stops with an
/// `Interrupted` error once `superseded` is set.
fn mapping_entries(
    store: &crate::store::Store,
    from: u64,
    to: u64,
    out: &mut dyn Write,
    superseded: &std::sync::atomic::AtomicBool,
) -> io::Result<()> {
    entries_with(store, from, to, out, superseded, None, None)
}

/// `mapping_entries` with `cancel` applied, noting in `starts.0` where each entry starts
/// (counting from `starts.1`).
fn entries_with(
    store: &crate::store::Store,
    from: u64,
    to: u64,
    out: &mut dyn Write,
    superseded: &std::sync::atomic::AtomicBool,
    cancel: Option<&CancelOverlay>,
    mut starts: Option<(&mut Starts, u64)>,
) -> io::Result<()> {
    let mut entry = String::new();
    let mut format = MappingFormat::default();
    store
        .visit_mapping_between(from, to, &mut |task| {
            if superseded.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(io::Error::new(io::ErrorKind::Interrupted, "superseded"));
            }
            let cancelled;
            let task = match cancel {
                Some(cancel) if task.status == "pending" && cancel.covers(task.index) => {
                    cancelled = MappingRow {
                        status: "cancelled",
                        exit_code: None,
                        started_at: None,
                        finished_at: Some(cancel.at),
                        ..*task
                    };
                    &cancelled
                }
                _ => task,
            };
            entry.clear();
            format.entry(&mut entry, task);
            if let Some((starts, at)) = &mut starts {
                starts.push(task.index, *at);
                *at += entry.len() as u64;
            }
            out.write_all(entry.as_bytes())
        })
        .map_err(|e| match e {
            crate::store::StoreError::Write(e) => e,
            other => io::Error::other(other.to_string()),
        })
}

/// Tasks being cancelled by range (`Store::cancel_unstarted`) while a mapping is read: a
/// pending task in `ranges` is shown as that statement leaves it (cancelled at `at`, never
/// started, no exit code, attempt and source kept), whether or not the reader's snapshot
/// already has the statement's commit.
#[derive(Debug, Clone)]
pub struct CancelOverlay {
    ranges: Vec<(u64, u64)>,
    at: i64,
}

impl CancelOverlay {
    /// The ranges (inclusive) as `Store::cancel_unstarted` is given them, and its time.
    pub fn new(ranges: &[(u64, u64)], at: i64) -> CancelOverlay {
        let mut ranges = ranges.to_vec();
        ranges.sort_unstable();
        CancelOverlay { ranges, at }
    }

    fn covers(&self, index: u64) -> bool {
        // Ranges of one cancel never overlap: the first ending at or after `index` is the
        // only one that can hold it.
        let i = self.ranges.partition_point(|&(_, to)| to < index);
        self.ranges.get(i).is_some_and(|&(from, _)| from <= index)
    }
}

/// A mapping written while a cancel's transaction runs (`write_mapping_ahead`): its temporary
/// file, and where each task's entry starts there.
#[derive(Debug)]
pub struct MappingAhead {
    file: PathBuf,
    starts: Starts,
}

/// Where each entry of a mapping starts: tasks are numbered without gaps, so an offset per
/// task from the first (4 bytes each: 4 MB for a million tasks) is enough. `None` once that
/// does not hold (a gap, or a file past 4 GiB): the mapping is then not patched but rewritten.
#[derive(Debug)]
struct Starts {
    first: u64,
    offsets: Option<Vec<u32>>,
}

impl Starts {
    fn push(&mut self, index: u64, at: u64) {
        let Some(offsets) = &mut self.offsets else {
            return;
        };
        if offsets.is_empty() {
            self.first = index;
        }
        match u32::try_from(at) {
            Ok(at) if index == self.first + offsets.len() as u64 => offsets.push(at),
            _ => self.offsets = None,
        }
    }

    /// Where task `index`'s entry starts and ends (`len`: the file's length).
    fn span(&self, index: u64, len: u64) -> Option<(u64, u64)> {
        let offsets = self.offsets.as_ref()?;
        let k = usize::try_from(index.checked_sub(self.first)?).ok()?;
        let start = u64::from(*offsets.get(k)?);
        let end = offsets.get(k + 1).map_or(len, |&s| u64::from(s));
        Some((start, end))
    }
}

impl MappingAhead {
    /// Removes the temporary file (the mapping is not used).
    pub fn discard(self) {
        let _ = fs::remove_file(&self.file);
    }
}

/// The whole mapping of the sweep at `db`, with `cancel` applied, written to `file` (not yet
/// the mapping: `finish_mapping_ahead` puts it in place). A million-task sweep's cancel takes
/// a core for a second or two in one transaction; the mapping it must then write took
/// another half second after it, and is written on the other core meanwhile. Stops with an
/// `Interrupted` error once `superseded` is set.
pub fn write_mapping_ahead(
    file: &Path,
    sweep_id: &str,
    db: &Path,
    cancel: &CancelOverlay,
    superseded: &std::sync::atomic::AtomicBool,
) -> io::Result<MappingAhead> {
    let store =
        crate::store::Store::open_read_only(db).map_err(|e| io::Error::other(e.to_string()))?;
    let mut starts = Starts {
        first: 0,
        offsets: Some(Vec::new()),
    };
    let written = fs::File::create(file).and_then(|f| {
        let mut out = io::BufWriter::with_capacity(1 << 16, f);
        let header = mapping_header(sweep_id);
        out.write_all(header.as_bytes())?;
        let from = (&mut starts, header.len() as u64);
        entries_with(
            &store,
            0,
            u64::MAX,
            &mut out,
            superseded,
            Some(cancel),
            Some(from),
        )?;
        out.flush()
    });
    match written {
        Ok(()) => Ok(MappingAhead {
            file: file.to_path_buf(),
            starts,
        }),
        Err(e) => {
            let _ = fs::remove_file(file);
            Err(e)
        }
    }
}

/// Puts `ahead` in place as the mapping at `path`, with the entries of the `changed` tasks
/// (changed since it was read: tasks that ended after the cancel) read again from `store`.
/// Nothing changed: a rename. On an error the mapping at `path` is left as it was.
pub fn finish_mapping_ahead(
    path: &Path,
    ahead: MappingAhead,
    changed: &std::collections::BTreeSet<u64>,
    store: &crate::store::Store,
) -> io::Result<()> {
    if changed.is_empty() {
        return fs::rename(&ahead.file, path).inspect_err(|_| {
            let _ = fs::remove_file(&ahead.file);
        });
    }
    let written = write_atomic_with(path, |out| {
        use std::io::{Read, Seek};
        let mut src = fs::File::open(&ahead.file)?;
        let len = src.metadata()?.len();
        let mut buf = vec![0u8; 1 << 20];
        let mut copy_to = |src: &mut fs::File, out: &mut dyn Write, n: u64| -> io::Result<()> {
            let mut left = n;
            while left > 0 {
                let want = left.min(buf.len() as u64) as usize;
                src.read_exact(&mut buf[..want])?;
                out.write_all(&buf[..want])?;
                left -= want as u64;
            }
            Ok(())
        };
        let never = std::sync::atomic::AtomicBool::new(false);
        let mut at = 0;
        for &index in changed {
            let (start, end) = ahead.starts.span(index, len).ok_or_else(|| {
                io::Error::other(format!(
                    "task {index}'s entry cannot be found in the mapping"
                ))
            })?;
            copy_to(&mut src, out, start - at)?;
            mapping_entries(store, index, index, out, &never)?;
            src.seek(io::SeekFrom::Start(end))?;
            at = end;
        }
        copy_to(&mut src, out, len - at)
    });
    let _ = fs::remove_file(&ahead.file);
    written
}

/// `write_mapping`, given up (an error of kind `Interrupted`, the file left as it was) once
/// `superseded` is set: a newer one is about to be written.
pub fn write_mapping_unless(
    path: &Path,
    sweep_id: &str,
    store: &crate::store::Store,
    superseded: &std::sync::atomic::AtomicBool,
) -> io::Result<()> {
    write_atomic_with(path, |file| {
        file.write_all(mapping_header(sweep_id).as_bytes())?;
        mapping_entries(store, 0, u64::MAX, file, superseded)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::state::TaskStatus;
    use crate::core::value::Params;
    use crate::layout::format_utc;
    use crate::yaml::emit_json;
    use serde_json::json;

    #[test]
    fn a_mapping_written_in_two_halves_is_the_one_written_whole() {
        for n in [1u64, 2, 5, 8] {
            let dir = tempfile::tempdir().unwrap();
            let db = dir.path().join("sweep.db");
            let mut store =
                crate::store::Store::create(&db, &[], 3, crate::store::tests::new_tasks(n))
                    .unwrap();
            let mut done = crate::core::state::Change::new(
                n,
                1,
                TaskStatus::Completed,
                Some("gpu box".into()),
                1_700_000_000_000,
            );
            done.exit_code = Some(0);
            store.apply(&[done]).unwrap();
            let whole = dir.path().join("whole.yaml");
            write_mapping(&whole, "s1", &store).unwrap();
            let halves = dir.path().join("halves.yaml");
            split_mapping(&halves, "s1", &db, 0).unwrap();
            assert_eq!(
                fs::read_to_string(&halves).unwrap(),
                fs::read_to_string(&whole).unwrap(),
                "{n} tasks"
            );
            let left: Vec<_> = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|name| name.contains("tmp"))
                .collect();
            assert!(left.is_empty(), "{left:?}");
        }
    }

    #[test]
    fn a_superseded_mapping_stops_and_leaves_the_last_one_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::create(
            &dir.path().join("sweep.db"),
            &[],
            3,
            crate::store::tests::new_tasks(5),
        )
        .unwrap();
        let path = dir.path().join("task_mapping.yaml");
        write_mapping(&path, "s1", &store).unwrap();
        let written = fs::read_to_string(&path).unwrap();
        assert!(written.contains("task_005:"), "{written}");
        let superseded = std::sync::atomic::AtomicBool::new(true);
        let err = write_mapping_unless(&path, "s2", &store, &superseded).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Interrupted);
        assert_eq!(fs::read_to_string(&path).unwrap(), written);
        assert!(!dir.path().join("task_mapping.yaml.tmp").exists());
    }

    #[test]
    fn a_mapping_entry_is_the_block_emit_json_writes() {
        let mut task = crate::report::model::task(12, TaskStatus::Failed, Params::new());
        let (mut format, mut all, mut all_expected) =
            (MappingFormat::default(), String::new(), String::new());
        for (hash, source, exit_code, times) in [
            (
                "0123456789012345",
                Some("local"),
                Some(3),
                (Some(1_700_000_000_123), Some(1_700_000_001_000)),
            ),
            ("1e10", None, None, (None, None)),
            (
                "abcdef0123456789",
                Some("gpu box: 2"),
                Some(-1),
                (None, Some(5)),
            ),
            ("yes", Some("on"), Some(0), (Some(0), None)),
            ("yes", Some("on"), Some(i32::MIN), (Some(-1), None)),
            ("f00", Some("local"), Some(i32::MAX), (None, None)),
            ("deadbeef00000000", None, None, (None, None)),
            ("0000000000000e12", None, None, (None, None)),
        ] {
            task.task_id = "task_012".into();
            task.params_hash = hash.into();
            task.source = source.map(str::to_string);
            task.exit_code = exit_code;
            (task.started_at, task.finished_at) = times;
            let entry = json!({
                "params_hash": task.params_hash,
                "status": task.status.as_str(),
                "attempt": task.attempt,
                "source": task.source,
                "exit_code": task.exit_code,
                "started": task.started_at.map(format_utc),
                "finished": task.finished_at.map(format_utc),
            });
            let mut expected = String::from("  task_012:\n");
            for line in emit_json(&entry).lines() {
                expected.push_str("    ");
                expected.push_str(line);
                expected.push('\n');
            }
            let mut got = String::new();
            mapping_entry(&mut got, &mapping_row(&task));
            assert_eq!(got, expected);
            // One formatter for every entry, as a mapping is written: the source it keeps
            // from the entry before is never the wrong one.
            format.entry(&mut all, &mapping_row(&task));
            all_expected.push_str(&expected);
        }
        assert_eq!(all, all_expected);
    }

    #[test]
    fn a_mapping_written_ahead_of_a_cancel_is_the_one_written_after_it() {
        use crate::core::state::Change;
        // The reader's snapshot may have the cancel's commit or not, and tasks may change
        // after it (a running task ends cancelled): the mapping put in place is the one
        // written from the database at the end either way.
        for (commit_first, later_change) in [(false, true), (true, true), (false, false)] {
            let dir = tempfile::tempdir().unwrap();
            let db = dir.path().join("sweep.db");
            let mut store =
                crate::store::Store::create(&db, &[], 3, crate::store::tests::new_tasks(9))
                    .unwrap();
            let mut done = Change::new(1, 1, TaskStatus::Completed, Some("local".into()), 10);
            done.exit_code = Some(0);
            let running = Change::new(5, 1, TaskStatus::Running, Some("gpu box".into()), 11);
            store.apply(&[done, running]).unwrap();
            // Task 5 is in a range but running (left alone); 9 ends the second range.
            let ranges = [(7, 9), (3, 6)];
            let cancel = CancelOverlay::new(&ranges, 1_700_000_000_000);
            let never = std::sync::atomic::AtomicBool::new(false);
            let file = dir.path().join("ahead.tmp");
            let reason = crate::core::state::CANCELLED_UNSTARTED;
            if commit_first {
                store.cancel_unstarted(&ranges, reason, cancel.at).unwrap();
            }
            let ahead = write_mapping_ahead(&file, "s1", &db, &cancel, &never).unwrap();
            if !commit_first {
                store.cancel_unstarted(&ranges, reason, cancel.at).unwrap();
            }
            let mut changed = std::collections::BTreeSet::new();
            if later_change {
                let mut stopped =
                    Change::new(5, 1, TaskStatus::Cancelled, Some("gpu box".into()), 12);
                stopped.exit_code = Some(-15);
                store.apply(&[stopped]).unwrap();
                changed.insert(5);
            }
            let path = dir.path().join("task_mapping.yaml");
            finish_mapping_ahead(&path, ahead, &changed, &store).unwrap();
            let fresh = dir.path().join("fresh.yaml");
            write_mapping(&fresh, "s1", &store).unwrap();
            let got = fs::read_to_string(&path).unwrap();
            assert_eq!(got, fs::read_to_string(&fresh).unwrap());
            assert!(got.contains("  task_009:\n    params_hash"), "{got}");
            assert_eq!(
                got.matches("status: cancelled").count(),
                6 + usize::from(later_change)
            );
            assert!(!file.exists());
        }
    }

    #[test]
    fn a_cancel_overlay_covers_exactly_its_ranges() {
        let cancel = CancelOverlay::new(&[(10, 12), (1, 1), (5, 7)], 0);
        let covered: Vec<u64> = (0..15).filter(|&i| cancel.covers(i)).collect();
        assert_eq!(covered, [1, 5, 6, 7, 10, 11, 12]);
        assert!(!CancelOverlay::new(&[], 0).covers(1));
    }

    #[test]
    fn entry_starts_are_found_by_task_and_a_gap_gives_them_up() {
        let mut starts = Starts {
            first: 0,
            offsets: Some(Vec::new()),
        };
        for (index, at) in [(3, 10), (4, 25), (5, 40)] {
            starts.push(index, at);
        }
        assert_eq!(starts.span(3, 99), Some((10, 25)));
        assert_eq!(starts.span(5, 99), Some((40, 99)));
        assert_eq!(starts.span(2, 99), None);
        assert_eq!(starts.span(6, 99), None);
        starts.push(7, 60);
        assert_eq!(starts.span(3, 99), None, "a gap");
        let mut big = Starts {
            first: 0,
            offsets: Some(Vec::new()),
        };
        big.push(1, 0);
        big.push(2, u64::from(u32::MAX) + 1);
        assert!(big.offsets.is_none(), "past 4 GiB");
    }
}
