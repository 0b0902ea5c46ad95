//! The sweep output layout (README: Output layout): where every file of a sweep lives, sweep ids, atomic
//! writes, task directories and the human-readable YAML views of the durable state.

use crate::core::state::{TaskStatus, Usage};
use crate::core::task_layout::TaskLayout;
use crate::core::value::{task_name_in, Params, MIN_TASK_WIDTH};
use crate::store::TaskRow;
use crate::yaml::emit_json;
use serde_json::json;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// `<project>/sweeps/outputs`.
pub fn outputs_dir(project_root: &Path) -> PathBuf {
    project_root.join("sweeps").join("outputs")
}

/// The files of one sweep.
#[derive(Debug, Clone)]
pub struct SweepPaths {
    pub root: PathBuf,
    /// Digits of the sweep's task numbers (`core::value::task_width`), as recorded in its
    /// `sweep.db`.
    pub task_width: usize,
    /// Which per-task files the sweep keeps, as recorded in its `sweep.db`.
    pub task_layout: TaskLayout,
}

impl SweepPaths {
    /// The paths of a sweep whose task numbers have the minimal width, until `with_task_width`.
    pub fn new(root: PathBuf) -> Self {
        SweepPaths {
            root,
            task_width: MIN_TASK_WIDTH,
            task_layout: TaskLayout::Full,
        }
    }
    pub fn with_task_width(self, task_width: usize) -> Self {
        SweepPaths { task_width, ..self }
    }
    pub fn with_task_layout(self, task_layout: TaskLayout) -> Self {
        SweepPaths {
            task_layout,
            ..self
        }
    }
    /// Whether tasks get no `params.yaml`, `command.txt` and `status.yaml`, and keep their
    /// directory only when they leave something in it.
    pub fn compact(&self) -> bool {
        self.task_layout.is_compact()
    }
    /// The id of task `index` in this sweep (`task_007`, or `task_0007` in a 1,000-task sweep).
    pub fn task_name(&self, index: u64) -> String {
        task_name_in(index, self.task_width)
    }
    pub fn db(&self) -> PathBuf {
        self.root.join("sweep.db")
    }
    /// Held (flock) by the coordinator process running the sweep.
    pub fn lock(&self) -> PathBuf {
        self.root.join(".coordinator.lock")
    }
    /// Created by `sweep cancel` for the running coordinator, which looks for it often: a file
    /// reaches the run at once, where the request's row in `sweep.db` waits for the write lock
    /// that a busy run holds most of the time.
    pub fn cancel_request(&self) -> PathBuf {
        self.root.join(".cancel-request")
    }
    pub fn config_copy(&self) -> PathBuf {
        self.root.join("sweep_config.yaml")
    }
    pub fn metadata(&self) -> PathBuf {
        self.root.join("sweep_metadata.yaml")
    }
    pub fn mapping(&self) -> PathBuf {
        self.root.join("task_mapping.yaml")
    }
    pub fn tasks_dir(&self) -> PathBuf {
        self.root.join("tasks")
    }
    pub fn task_dir(&self, index: u64) -> PathBuf {
        self.tasks_dir().join(self.task_name(index))
    }
    pub fn results_dir(&self, index: u64) -> PathBuf {
        self.task_dir(index).join("results")
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn sweep_log(&self) -> PathBuf {
        self.logs_dir().join("sweep.log")
    }
    pub fn failed_tasks(&self) -> PathBuf {
        self.logs_dir().join("errors").join("failed_tasks.yaml")
    }
    /// Failures grouped by cause (`sweep errors`).
    pub fn error_patterns(&self) -> PathBuf {
        self.logs_dir().join("errors").join("error_patterns.yaml")
    }
    /// The run's own log (what the coordinator traced at info level, and its notes).
    pub fn engine_log(&self) -> PathBuf {
        self.logs_dir().join("engine.log")
    }
    /// One source's log: connections, losses, refusals, disk, submissions.
    pub fn source_log(&self, source: &str) -> PathBuf {
        let name = source.replace(['/', '\\'], "_");
        self.logs_dir().join("sources").join(format!("{name}.log"))
    }
}

/// `sweep_YYYYMMDD_HHMMSS` in local time (as Python HSM names them).
pub fn sweep_id_at(unix_seconds: i64) -> String {
    let t = unix_seconds as libc::time_t;
    // SAFETY: localtime_r writes into the zeroed struct we own and reads only `t`.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if !ok {
        return format!("sweep_{unix_seconds}");
    }
    format!(
        "sweep_{:04}{:02}{:02}_{:02}{:02}{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// True when `id` is safe as a directory name (user-given `--sweep-id`); the agent applies the
/// same rule.
pub use hsm_protocol::valid_sweep_id;

/// Creates the sweep directory. With `exact`, the id must be free; otherwise `_2`, `_3`, … are
/// appended on collision. `create_dir` is atomic, so two coordinators never share a directory.
pub fn create_sweep_dir(
    outputs: &Path,
    base_id: &str,
    exact: bool,
) -> io::Result<(String, SweepPaths)> {
    fs::create_dir_all(outputs)?;
    for n in 1..10_000 {
        let id = if n == 1 {
            base_id.to_string()
        } else {
            format!("{base_id}_{n}")
        };
        let root = outputs.join(&id);
        match fs::create_dir(&root) {
            Ok(()) => return Ok((id, SweepPaths::new(root))),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && !exact => continue,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("sweep {id} already exists in {}", outputs.display()),
                ))
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("too many sweeps with the same id"))
}

/// Writes a file via a temporary name and rename, so readers never see half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, |file| file.write_all(bytes))
}

/// `write_atomic` of what `write` writes (buffered); the temporary file is removed when it fails.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let written = fs::File::create(&tmp).and_then(|file| {
        let mut out = io::BufWriter::with_capacity(1 << 16, file);
        write(&mut out)?;
        out.flush()
    });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path)
}

/// Rewrites a small file in place: write at offset 0, then cut to length. Used for the per-task
/// `status.yaml`, which changes several times per task: temp + rename would create and delete an
/// inode on every change, and ext4's inode allocator then slows down scanning past recently
/// deleted inodes (it dominated the profile at ~70% of coordinator time over 10,000 tasks). A
/// reader racing a write can see the new text followed briefly by the old tail; these files are
/// views, `sweep.db` is the truth.
pub fn overwrite_in_place(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    let old_len = file.metadata()?.len();
    file.write_all_at(bytes, 0)?;
    // ftruncate is journalled on ext4 even when it changes nothing: only cut a longer file.
    if old_len > bytes.len() as u64 {
        file.set_len(bytes.len() as u64)?;
    }
    Ok(())
}

pub use crate::core::time::format_utc;

mod mapping;
pub use mapping::{
    finish_mapping_ahead, mapping_entry, mapping_header, mapping_yaml, write_mapping,
    write_mapping_ahead, write_mapping_split, write_mapping_unless, CancelOverlay, MappingAhead,
    MappingFormat,
};

/// The last `max` bytes of a file, and whether the file is longer than that: the end of a
/// task's log without reading all of it. A missing file reads as empty.
pub fn read_end(path: &Path, max: usize) -> io::Result<(Vec<u8>, bool)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), false)),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let start = len.saturating_sub(max as u64);
    file.seek(SeekFrom::Start(start))?;
    let mut end = Vec::with_capacity(max.min(len as usize));
    file.take(max as u64).read_to_end(&mut end)?;
    Ok((end, start > 0))
}

/// `params.yaml` of a task.
pub fn params_yaml(params: &Params) -> String {
    if params.is_empty() {
        return "{}\n".into();
    }
    emit_json(&serde_json::to_value(params).unwrap_or_default())
}

/// Everything `status.yaml` shows about a task.
#[derive(Debug, Clone)]
pub struct StatusView<'a> {
    /// The task's id (`task_007`).
    pub task: &'a str,
    pub status: TaskStatus,
    pub attempt: u32,
    pub source: Option<&'a str>,
    pub exit_code: Option<i32>,
    pub reason: Option<&'a str>,
    pub pid: Option<u32>,
    pub updated_at: i64,
    /// The last value of each metric, once the attempt's metrics were read.
    pub metrics: Option<&'a std::collections::BTreeMap<String, crate::core::metrics::LastValue>>,
    /// When the attempt started and ended (Unix ms), when it did.
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// What the attempt used, when its source measured it.
    pub usage: Option<Usage>,
}

/// A task's `status.yaml`: the block `emit_json` writes for the same object, formatted directly
/// (it is rewritten at each change of every task, thousands of times a second).
pub fn status_yaml(view: &StatusView<'_>) -> String {
    use crate::yaml::{emit_float, emit_string};
    use std::fmt::Write as _;
    let mut out = String::with_capacity(384);
    let text = |v: Option<&str>| v.map_or_else(|| "null".to_string(), emit_string);
    let number = |v: Option<i64>| v.map_or_else(|| "null".to_string(), |v| v.to_string());
    // serde_json has no NaN or infinity: `json!` made them null.
    let float = |v: f64| {
        if v.is_finite() {
            emit_float(v)
        } else {
            "null".to_string()
        }
    };
    // A time always has `:` and nothing to escape: `emit_string` would quote it as is.
    let _ = write!(
        out,
        "task: {}\nstatus: {}\nattempt: {}\nsource: {}\nexit_code: {}\nreason: {}\npid: {}\nupdated: \"{}\"\n",
        emit_string(view.task),
        emit_string(view.status.as_str()),
        view.attempt,
        text(view.source),
        number(view.exit_code.map(i64::from)),
        text(view.reason),
        number(view.pid.map(i64::from)),
        format_utc(view.updated_at),
    );
    // Times and usage only when known: a queued task has none of them.
    if let Some(started) = view.started_at {
        let _ = writeln!(out, "started: \"{}\"", format_utc(started));
    }
    if let Some(finished) = view.finished_at {
        let _ = writeln!(out, "finished: \"{}\"", format_utc(finished));
        if let Some(started) = view.started_at {
            let seconds = seconds(finished.saturating_sub(started).max(0) as u64);
            let _ = writeln!(out, "duration_s: {}", float(seconds));
        }
    }
    if let Some(usage) = &view.usage {
        let fields = usage_fields(usage);
        if fields.iter().any(|(_, v)| v.is_some()) {
            out.push_str("usage:\n");
            for (key, value) in fields {
                if let Some(v) = value {
                    let _ = writeln!(out, "  {key}: {}", float(v));
                }
            }
        }
    }
    if let Some(metrics) = view.metrics.filter(|m| !m.is_empty()) {
        out.push_str("metrics:\n");
        for (name, last) in metrics {
            let _ = writeln!(out, "  {}: {}", emit_string(name), float(last.value));
        }
    }
    out
}

/// Milliseconds as seconds with millisecond precision.
fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// `wall_s`, `cpu_user_s`, `cpu_sys_s` and `max_rss_mb` of an attempt, each when measured.
fn usage_fields(usage: &Usage) -> [(&'static str, Option<f64>); 4] {
    [
        ("wall_s", usage.wall_ms.map(seconds)),
        ("cpu_user_s", usage.cpu_user_ms.map(seconds)),
        ("cpu_sys_s", usage.cpu_sys_ms.map(seconds)),
        // One decimal: a KiB figure as MiB.
        (
            "max_rss_mb",
            usage
                .max_rss_kb
                .map(|kb| (kb as f64 / 1024.0 * 10.0).round() / 10.0),
        ),
    ]
}

/// `{wall_s, cpu_user_s, cpu_sys_s, max_rss_mb, scheduler}` with the fields that were known; `None`
/// when none was.
pub fn usage_json(usage: &Usage) -> Option<serde_json::Value> {
    let mut out: serde_json::Map<String, serde_json::Value> = usage_fields(usage)
        .into_iter()
        .filter_map(|(key, value)| value.map(|v| (key.to_string(), json!(v))))
        .collect();
    // How a batch scheduler's accounting recorded the job, in its words (`FAILED 3:0`).
    if let Some(record) = usage.scheduler {
        out.insert("scheduler".into(), json!(record.display()));
    }
    (!out.is_empty()).then_some(serde_json::Value::Object(out))
}

/// `logs/errors/failed_tasks.yaml`.
pub fn failed_tasks_yaml(tasks: &[TaskRow]) -> String {
    let failed: Vec<_> = tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Failed)
        .map(|t| {
            json!({
                "task": t.task_id,
                "attempt": t.attempt,
                "source": t.source,
                "exit_code": t.exit_code,
                "reason": t.reason,
                "params": t.params,
            })
        })
        .collect();
    if failed.is_empty() {
        return "failed_tasks: []\n".into();
    }
    emit_json(&json!({ "failed_tasks": failed }))
}

/// `logs/errors/error_patterns.yaml`: the failures grouped by cause (`core::errors`), each
/// traceback as a block list of lines (a flow list of them would be one unreadable line).
pub fn error_patterns_yaml(
    sweep_id: &str,
    failed: usize,
    groups: &[crate::core::errors::ErrorGroup],
) -> String {
    let mut out = String::from(
        "# failed tasks grouped by cause, largest group first (a view of sweep.db; `sweep errors`)\n",
    );
    out.push_str(&emit_json(
        &json!({ "sweep_id": sweep_id, "failed": failed }),
    ));
    if groups.is_empty() {
        out.push_str("groups: []\n");
        return out;
    }
    out.push_str("groups:\n");
    for group in crate::core::errors::to_json(groups)
        .as_array()
        .into_iter()
        .flatten()
    {
        let mut group = group.clone();
        let traceback = group
            .as_object_mut()
            .and_then(|g| g.remove("traceback"))
            .unwrap_or_default();
        for line in emit_json(&json!([group])).lines() {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
        let lines = traceback.as_array().cloned().unwrap_or_default();
        if lines.is_empty() {
            out.push_str("    traceback: []\n");
            continue;
        }
        out.push_str("    traceback:\n");
        for line in lines {
            out.push_str("      - ");
            out.push_str(&emit_json(&line));
        }
    }
    out
}

/// Whether `dir` holds exactly an empty `results/`, and `stdout.log` and `stderr.log`, both empty.
fn left_nothing(dir: &Path) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    let mut seen = 0;
    for entry in entries {
        let Ok(entry) = entry else {
            return false;
        };
        let name = entry.file_name();
        let empty = match name.to_str() {
            Some("stdout.log" | "stderr.log") => {
                entry.metadata().is_ok_and(|m| m.is_file() && m.len() == 0)
            }
            Some("results") => fs::read_dir(entry.path()).is_ok_and(|mut d| d.next().is_none()),
            _ => false,
        };
        if !empty {
            return false;
        }
        seen += 1;
    }
    seen == 3
}

/// The directories of a compact sweep's silent tasks, kept as `tasks/.spares/N` (an empty
/// `results/` and two empty logs each) for the next tasks to be renamed into place. Bounded;
/// whatever is left is removed when the pool is dropped, at the run's end, and `sweep complete`
/// removes what a killed run left (`remove_spares`).
pub struct SparePool {
    dir: PathBuf,
    free: std::sync::Mutex<Vec<PathBuf>>,
    next: std::sync::atomic::AtomicU64,
}

/// More spares than a run's tasks in flight and prepared ahead can use at once.
const MAX_SPARES: usize = 1024;

impl SparePool {
    pub fn new(paths: &SweepPaths) -> SparePool {
        SparePool {
            dir: spares_dir(paths),
            free: std::sync::Mutex::new(Vec::new()),
            next: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PathBuf>> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves `dir` into the pool; false (nothing moved) when the pool is full or the rename fails.
    fn put(&self, dir: &Path) -> bool {
        if self.lock().len() >= MAX_SPARES {
            return false;
        }
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let spare = self.dir.join(n.to_string());
        let moved = match fs::rename(dir, &spare) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && dir.is_dir() => {
                fs::create_dir_all(&self.dir).and_then(|()| fs::rename(dir, &spare))
            }
            other => other,
        };
        if moved.is_err() {
            return false;
        }
        self.lock().push(spare);
        true
    }

    /// Renames a spare to `target` (which must not exist); false when there is none or the
    /// rename fails (the spare is then removed).
    fn take_into(&self, target: &Path) -> bool {
        let Some(spare) = self.lock().pop() else {
            return false;
        };
        if fs::rename(&spare, target).is_ok() {
            return true;
        }
        let _ = fs::remove_dir_all(&spare);
        false
    }

    /// How many spares are waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for SparePool {
    fn drop(&mut self) {
        self.lock().clear();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `tasks/.spares`, where a compact sweep's run keeps spare task directories.
fn spares_dir(paths: &SweepPaths) -> PathBuf {
    paths.tasks_dir().join(".spares")
}

/// Removes the spare task directories a run left (one killed before it could).
pub fn remove_spares(paths: &SweepPaths) {
    match fs::remove_dir_all(spares_dir(paths)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(error = %e, "cannot remove tasks/.spares"),
    }
}

/// A compact sweep's task directory for an attempt: a spare renamed into place for a first
/// attempt when there is one (it holds `results/` and the two empty logs already, `created`
/// true), else made as `prepare_task_dir` makes it (`created` false: the logs are not made).
pub fn prepare_compact_task_dir(
    paths: &SweepPaths,
    index: u64,
    attempt: u32,
    spares: Option<&SparePool>,
) -> io::Result<(PathBuf, PathBuf, bool)> {
    let dir = paths.task_dir(index);
    if attempt <= 1 && spares.is_some_and(|s| s.take_into(&dir)) {
        return Ok((dir.join("stdout.log"), dir.join("stderr.log"), true));
    }
    let (stdout, stderr) = prepare_task_dir(paths, index, attempt, "", "")?;
    Ok((stdout, stderr, false))
}

/// Prepares a task directory for a new attempt: `results/`, `params.yaml`, `command.txt`. Logs of
/// an earlier attempt are kept as `stdout.attemptN.log` so a re-run never destroys evidence.
/// Returns the stdout and stderr paths for this attempt.
pub fn prepare_task_dir(
    paths: &SweepPaths,
    index: u64,
    attempt: u32,
    params_yaml: &str,
    command_txt: &str,
) -> io::Result<(PathBuf, PathBuf)> {
    let dir = paths.task_dir(index);
    // Two plain mkdirs in the common case; create_dir_all would first try (and fail) the
    // deepest one. `tasks/` itself is created once, on the first NotFound.
    match fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir_all(&dir)?,
        Err(e) => return Err(e),
    }
    match fs::create_dir(dir.join("results")) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let stdout = dir.join("stdout.log");
    let stderr = dir.join("stderr.log");
    if attempt > 1 {
        for (log, name) in [(&stdout, "stdout"), (&stderr, "stderr")] {
            if log.exists() {
                let _ = fs::rename(log, dir.join(format!("{name}.attempt{}.log", attempt - 1)));
            }
        }
    }
    if paths.compact() {
        return Ok((stdout, stderr));
    }
    if attempt <= 1 || !dir.join("params.yaml").exists() {
        fs::write(dir.join("params.yaml"), params_yaml)?;
    }
    fs::write(dir.join("command.txt"), command_txt)?;
    Ok((stdout, stderr))
}

/// After an attempt of a compact sweep's task ended: its empty logs removed, then `results/` and
/// the task directory if nothing is left in them, so a silent task leaves no file behind. What
/// the task printed or wrote stays (removal of a directory that is not empty fails, harmlessly).
/// Nothing happens in the full layout.
pub fn tidy_task_dir(paths: &SweepPaths, index: u64) {
    retire_task_dir(paths, index, None);
}

/// `tidy_task_dir`, except that the directory of a task that left nothing at all (empty logs,
/// empty `results/`, nothing else) goes to `spares` for the next task to take, when there is
/// room: one rename instead of four removals now and four creations for the next task. On ext4
/// the removals are what slows creation down (the allocator skips recently freed inodes).
pub fn retire_task_dir(paths: &SweepPaths, index: u64, spares: Option<&SparePool>) {
    if !paths.compact() {
        return;
    }
    let dir = paths.task_dir(index);
    if let Some(spares) = spares {
        if left_nothing(&dir) && spares.put(&dir) {
            return;
        }
    }
    for name in ["stdout.log", "stderr.log"] {
        let log = dir.join(name);
        if fs::metadata(&log).is_ok_and(|m| m.is_file() && m.len() == 0) {
            let _ = fs::remove_file(&log);
        }
    }
    if fs::remove_dir(dir.join("results")).is_ok() {
        let _ = fs::remove_dir(&dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `status_yaml` wrote before it formatted directly: the object through `emit_json`.
    fn status_yaml_through_json(view: &StatusView<'_>) -> String {
        let mut value = json!({
            "task": view.task,
            "status": view.status.as_str(),
            "attempt": view.attempt,
            "source": view.source,
            "exit_code": view.exit_code,
            "reason": view.reason,
            "pid": view.pid,
            "updated": format_utc(view.updated_at),
        });
        if let Some(started) = view.started_at {
            value["started"] = json!(format_utc(started));
        }
        if let Some(finished) = view.finished_at {
            value["finished"] = json!(format_utc(finished));
            if let Some(started) = view.started_at {
                value["duration_s"] =
                    json!(seconds(finished.saturating_sub(started).max(0) as u64));
            }
        }
        if let Some(usage) = view.usage.as_ref().and_then(usage_json) {
            value["usage"] = usage;
        }
        if let Some(metrics) = view.metrics.filter(|m| !m.is_empty()) {
            value["metrics"] = metrics
                .iter()
                .map(|(name, last)| (name.clone(), json!(last.value)))
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        emit_json(&value)
    }

    #[test]
    fn status_yaml_is_the_block_emit_json_writes() {
        use crate::core::metrics::LastValue;
        let metrics: std::collections::BTreeMap<String, LastValue> = [
            ("loss", 0.25),
            ("acc", 1.0),
            ("big", 1e300),
            ("nan", f64::NAN),
            ("true", -0.0),
            ("a b: c", f64::INFINITY),
        ]
        .into_iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                LastValue {
                    value: v,
                    step: None,
                },
            )
        })
        .collect();
        let usages = [
            None,
            Some(Usage::default()),
            Some(Usage {
                wall_ms: Some(2),
                cpu_user_ms: Some(1),
                cpu_sys_ms: Some(0),
                max_rss_kb: Some(10_445),
                scheduler: None,
            }),
            Some(Usage {
                max_rss_kb: Some(1),
                ..Usage::default()
            }),
        ];
        let mut checked = 0;
        for status in [TaskStatus::Queued, TaskStatus::Running, TaskStatus::Failed] {
            for (source, reason) in [
                (None, None),
                (Some("local"), Some("exit code 3")),
                (Some("gpu box: 2"), Some("line\nbreak \"quoted\" ü")),
                (Some("null"), Some("yes")),
            ] {
                for (started_at, finished_at) in [
                    (None, None),
                    (Some(1_700_000_000_123), None),
                    (Some(5), Some(3)),
                    (None, Some(7)),
                    (Some(1), Some(1_234_567)),
                ] {
                    for usage in &usages {
                        for with_metrics in [false, true] {
                            let view = StatusView {
                                task: "task_0007",
                                status,
                                attempt: 2,
                                source,
                                exit_code: reason.map(|_| -1),
                                reason,
                                pid: source.map(|_| 4242),
                                updated_at: 1_700_000_000_999,
                                metrics: with_metrics.then_some(&metrics),
                                started_at,
                                finished_at,
                                usage: *usage,
                            };
                            assert_eq!(
                                status_yaml(&view),
                                status_yaml_through_json(&view),
                                "{view:?}"
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 3 * 4 * 5 * 4 * 2);
    }

    #[test]
    fn sweep_ids_have_the_python_hsm_shape_and_never_collide() {
        let id = sweep_id_at(1_795_888_135);
        assert!(id.starts_with("sweep_2026112"), "{id}");
        assert_eq!(id.len(), "sweep_20261128_174855".len());
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = create_sweep_dir(dir.path(), "sweep_x", false).unwrap();
        let (b, _) = create_sweep_dir(dir.path(), "sweep_x", false).unwrap();
        assert_eq!((a.as_str(), b.as_str()), ("sweep_x", "sweep_x_2"));
        assert!(create_sweep_dir(dir.path(), "sweep_x", true).is_err());
        assert!(valid_sweep_id("my-sweep.1"));
        assert!(!valid_sweep_id("../x"));
        assert!(!valid_sweep_id(""));
    }

    #[test]
    fn in_place_overwrites_leave_exactly_the_new_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.yaml");
        for text in [
            "status: running\n",
            "status: completed\nexit_code: 0\n",
            "s: x\n",
        ] {
            overwrite_in_place(&path, text.as_bytes()).unwrap();
            assert_eq!(fs::read_to_string(&path).unwrap(), text);
        }
    }

    #[test]
    fn the_end_of_a_log_is_read_without_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stderr.log");
        assert_eq!(read_end(&path, 8).unwrap(), (Vec::new(), false));
        fs::write(&path, "0123456789").unwrap();
        assert_eq!(read_end(&path, 4).unwrap(), (b"6789".to_vec(), true));
        assert_eq!(
            read_end(&path, 64).unwrap(),
            (b"0123456789".to_vec(), false)
        );
    }

    #[test]
    fn error_patterns_read_back_as_yaml_with_block_tracebacks() {
        use crate::core::errors::ErrorGroup;
        use crate::core::value::Value;
        let groups = vec![ErrorGroup {
            signature: "KeyError: '<str>'".into(),
            count: 2,
            examples: vec!["task_001".into(), "task_002".into()],
            shared: vec![("lr".into(), Value::Float(0.1))],
            traceback: vec![
                "Traceback (most recent call last):".into(),
                "  File \"t.py\", line 1".into(),
                "KeyError: 'x'".into(),
            ],
        }];
        let text = error_patterns_yaml("s1", 2, &groups);
        assert!(
            text.contains("    traceback:\n      - \"Traceback"),
            "{text}"
        );
        let tree = crate::yaml::parse(&text).unwrap().unwrap();
        let value = crate::core::value::Value::from_node(&tree);
        let Value::Map(top) = value else {
            panic!("{text}")
        };
        assert_eq!(top["failed"], Value::Int(2));
        let Value::List(groups) = &top["groups"] else {
            panic!("{text}")
        };
        let Value::Map(first) = &groups[0] else {
            panic!("{text}")
        };
        assert_eq!(first["signature"], Value::Str("KeyError: '<str>'".into()));
        assert_eq!(first["count"], Value::Int(2));
        let Value::List(tb) = &first["traceback"] else {
            panic!("{text}")
        };
        assert_eq!(tb[1], Value::Str("  File \"t.py\", line 1".into()));
        assert!(error_patterns_yaml("s1", 0, &[]).ends_with("groups: []\n"));
    }

    #[test]
    fn a_compact_task_keeps_only_what_it_left() {
        let dir = tempfile::tempdir().unwrap();
        let paths = SweepPaths::new(dir.path().to_path_buf()).with_task_layout(TaskLayout::Compact);
        let names = |index: u64| -> Vec<String> {
            let mut v: Vec<String> = fs::read_dir(paths.task_dir(index))
                .map(|d| {
                    d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            v.sort();
            v
        };
        for index in 1..=3 {
            let (out, err) = prepare_task_dir(&paths, index, 1, "a: 1\n", "t\n").unwrap();
            assert_eq!(names(index), ["results"], "no params.yaml or command.txt");
            // As the run opens them.
            fs::File::create(&out).unwrap();
            fs::File::create(&err).unwrap();
        }
        // 1 is silent; 2 printed; 3 left a result.
        fs::write(paths.task_dir(2).join("stdout.log"), "hi\n").unwrap();
        fs::write(paths.results_dir(3).join("r.txt"), "3").unwrap();
        for index in 1..=3 {
            tidy_task_dir(&paths, index);
        }
        assert!(!paths.task_dir(1).exists(), "a silent task leaves nothing");
        assert_eq!(names(2), ["stdout.log"]);
        assert_eq!(names(3), ["results"]);
        assert_eq!(
            fs::read_to_string(paths.results_dir(3).join("r.txt")).unwrap(),
            "3"
        );

        // The full layout keeps everything.
        let full = SweepPaths::new(dir.path().join("full"));
        let (out, _) = prepare_task_dir(&full, 1, 1, "a: 1\n", "t\n").unwrap();
        fs::File::create(&out).unwrap();
        tidy_task_dir(&full, 1);
        for name in ["params.yaml", "command.txt", "stdout.log", "results"] {
            assert!(full.task_dir(1).join(name).exists(), "{name}");
        }
    }

    #[test]
    fn a_silent_task_s_directory_is_passed_on_to_the_next_task() {
        let dir = tempfile::tempdir().unwrap();
        let paths = SweepPaths::new(dir.path().to_path_buf()).with_task_layout(TaskLayout::Compact);
        let pool = SparePool::new(&paths);
        let launch = |index: u64| {
            let (out, err, recycled) =
                prepare_compact_task_dir(&paths, index, 1, Some(&pool)).unwrap();
            if !recycled {
                fs::File::create(&out).unwrap();
                fs::File::create(&err).unwrap();
            }
            recycled
        };
        assert!(!launch(1), "nothing to take yet");
        assert!(!launch(2));
        fs::write(paths.task_dir(2).join("stderr.log"), "oops\n").unwrap();
        retire_task_dir(&paths, 1, Some(&pool));
        retire_task_dir(&paths, 2, Some(&pool));
        assert!(!paths.task_dir(1).exists());
        assert_eq!(pool.len(), 1, "only the silent task's directory is kept");
        assert_eq!(
            fs::read_to_string(paths.task_dir(2).join("stderr.log")).unwrap(),
            "oops\n"
        );
        assert!(launch(3), "task 3 takes task 1's directory");
        assert!(pool.is_empty());
        for name in ["results", "stdout.log", "stderr.log"] {
            assert!(paths.task_dir(3).join(name).exists(), "{name}");
        }
        // A task that wrote a result keeps its directory; one retired at the end is removed
        // with the pool.
        fs::write(paths.results_dir(3).join("r"), "x").unwrap();
        retire_task_dir(&paths, 3, Some(&pool));
        assert!(paths.results_dir(3).join("r").exists());
        assert!(!launch(4));
        retire_task_dir(&paths, 4, Some(&pool));
        assert!(paths.tasks_dir().join(".spares").is_dir());
        drop(pool);
        assert!(!paths.tasks_dir().join(".spares").exists());
        assert!(!paths.task_dir(4).exists());
    }

    #[test]
    fn retries_keep_earlier_logs() {
        let dir = tempfile::tempdir().unwrap();
        let paths = SweepPaths::new(dir.path().to_path_buf());
        let (out, _) = prepare_task_dir(&paths, 3, 1, "a: 1\n", "python t.py\n").unwrap();
        fs::write(&out, "first\n").unwrap();
        let (out2, _) = prepare_task_dir(&paths, 3, 2, "a: 1\n", "python t.py\n").unwrap();
        assert_eq!(out, out2);
        let kept = fs::read_to_string(paths.task_dir(3).join("stdout.attempt1.log")).unwrap();
        assert_eq!(kept, "first\n");
        assert!(paths.results_dir(3).is_dir());
    }
}
