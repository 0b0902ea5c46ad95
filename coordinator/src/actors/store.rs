//! The store actor: runs on a SyncArbiter thread so SQLite transactions and view files never block
//! the sweep actor. Writes arrive in batches; each batch is one transaction.

use crate::core::state::{Change, TaskStatus};
use crate::layout::{self, StatusView, SweepPaths};
use crate::metrics_worker::{Extracted, MetricsWorker};
use crate::store::Store;
use actix::{Actor, Handler, Message, SyncContext};
use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;

pub struct StoreActor {
    store: Option<Store>,
    paths: SweepPaths,
    sweep_id: String,
    /// The first persistence error; reported to the sweep actor, which then stops the run.
    failure: Option<String>,
    log: Option<std::fs::File>,
    /// When the failure views were last written and how long that took: rewrites are spaced
    /// to at least ten times their cost (`task_mapping.yaml` keeps its own spacing).
    last_views: Option<(std::time::Instant, std::time::Duration)>,
    /// Reads ended attempts' metrics off this thread (`None` if its thread could not start:
    /// the run goes on without metrics, which `sweep complete` reads later).
    metrics: Option<MetricsWorker>,
    /// A failure was written (or a failed task queued again) since `error_patterns.yaml` was:
    /// the grouping reads every failed task, so it runs only when they changed.
    errors_dirty: bool,
    /// The parameters every task of the sweep shares (`core::errors::constant_params`): read
    /// once, at the first grouping (parameters never change).
    constant: Option<std::collections::BTreeMap<String, crate::core::value::Value>>,
    /// The attempt running of each task and when it started (for `status.yaml`'s times).
    started: HashMap<u64, (u32, i64)>,
    /// The thread writing `task_mapping.yaml`, while it runs; when the last one was written and
    /// how long it took.
    mapping: Option<MappingWriter>,
    last_mapping: Option<(std::time::Instant, std::time::Duration)>,
    /// The mapping being written while a cancel's transaction runs, put in place by the next
    /// mapping write once it is done.
    ahead: Option<AheadWriter>,
}

impl StoreActor {
    /// `store` is the opened database, or why it could not be opened (then every write fails
    /// and the sweep actor stops the run at its next poll).
    pub fn new(store: Result<Store, String>, paths: SweepPaths, sweep_id: String) -> Self {
        let log = std::fs::create_dir_all(paths.logs_dir())
            .and_then(|_| {
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(paths.sweep_log())
            })
            .ok();
        let (store, failure) = match store {
            Ok(store) => (Some(store), None),
            Err(e) => (None, Some(e)),
        };
        let mut metrics = MetricsWorker::spawn()
            .map_err(|e| tracing::warn!(error = %e, "cannot start the metrics reader"))
            .ok();
        // Attempts that ended while an earlier coordinator of this sweep ran but whose metrics
        // it never read (it was killed): read them now.
        if let (Some(store), Some(worker)) = (&store, &mut metrics) {
            match store.metrics_unread() {
                Ok(unread) => {
                    for (index, attempt) in unread {
                        worker.submit(index, attempt, paths.task_dir(index));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot list attempts with unread metrics"),
            }
        }
        StoreActor {
            store,
            paths,
            sweep_id,
            failure,
            log,
            last_views: None,
            metrics,
            errors_dirty: true,
            constant: None,
            started: HashMap::new(),
            mapping: None,
            last_mapping: None,
            ahead: None,
        }
    }

    /// Records the metrics read so far (`wait`: and every one still being read), and rewrites
    /// `status.yaml` of each task whose current attempt reported some.
    fn collect_metrics(&mut self, wait: bool) {
        let (Some(worker), Some(store)) = (&mut self.metrics, &mut self.store) else {
            return;
        };
        let ready: Vec<Extracted> = if wait { worker.all() } else { worker.ready() };
        // A compact sweep's ended attempt with no directory left nothing, and never will (its
        // output arrives before its end is reported): read, so no later command looks again.
        let compact = self.paths.compact();
        let ready: Vec<Extracted> = ready
            .into_iter()
            .filter(|e| e.had_output || compact)
            .collect();
        if ready.is_empty() {
            return;
        }
        let at = super::sweep::now_ms();
        let reported: Vec<(u64, u32, &crate::core::metrics::TaskMetrics)> = ready
            .iter()
            .map(|e| (e.index, e.attempt, &e.metrics))
            .collect();
        if let Err(e) = store.record_metrics(&reported, at) {
            tracing::warn!(error = %e, "cannot record metrics");
            return;
        }
        for extracted in &ready {
            let task = self.paths.task_name(extracted.index);
            for problem in &extracted.problems {
                tracing::warn!("{task} attempt {}: {problem}", extracted.attempt);
            }
            // A compact sweep has no status.yaml: its metrics are in sweep.db only.
            if extracted.metrics.is_empty() || self.paths.compact() {
                continue;
            }
            let row = match store.task(extracted.index) {
                Ok(Some(row)) if row.attempt == extracted.attempt => row,
                _ => continue,
            };
            let view = StatusView {
                task: &task,
                status: row.status,
                attempt: row.attempt,
                source: row.source.as_deref(),
                exit_code: row.exit_code,
                reason: row.reason.as_deref(),
                pid: row.pid,
                updated_at: row.finished_at.unwrap_or(at),
                metrics: Some(extracted.metrics.last()),
                started_at: row.started_at,
                finished_at: row.finished_at,
                usage: store
                    .attempt_usage(extracted.index, extracted.attempt)
                    .ok()
                    .flatten(),
            };
            let path = self.paths.task_dir(extracted.index).join("status.yaml");
            if let Err(e) = layout::overwrite_in_place(&path, layout::status_yaml(&view).as_bytes())
            {
                tracing::warn!(task = extracted.index, error = %e, "cannot write status.yaml");
            }
        }
    }

    fn persist(&mut self, changes: &[Change]) {
        let Some(store) = &mut self.store else {
            return;
        };
        if let Err(e) = store.apply(changes) {
            tracing::error!(error = %e, "cannot write the sweep state");
            self.failure.get_or_insert_with(|| e.to_string());
            return;
        }
        if let Some(ahead) = &mut self.ahead {
            ahead.changed.extend(changes.iter().map(|c| c.index));
            if ahead.changed.len() > AHEAD_CHANGED_AT_MOST {
                // Cheaper to write it again than to read these back one by one.
                ahead.give_up();
            }
        }
        self.errors_dirty |= changes
            .iter()
            .any(|c| matches!(c.status, TaskStatus::Failed | TaskStatus::Pending));
        // status.yaml shows the latest state: write it once per task per batch. (A change that
        // only records a job id changes no state.) A compact sweep has none.
        let changes: Vec<&Change> = changes.iter().filter(|c| c.job_id.is_none()).collect();
        let views = !self.paths.compact();
        let mut last: HashMap<u64, &Change> = HashMap::new();
        for change in changes.iter().filter(|_| views) {
            last.insert(change.index, change);
            // When each attempt started, for its `started`/`duration_s` once it ends.
            if change.status == TaskStatus::Running {
                self.started
                    .insert(change.index, (change.attempt, change.at));
            }
        }
        for change in last.values() {
            let task = self.paths.task_name(change.index);
            let (started_at, finished_at) = self.times_of(change);
            let view = StatusView {
                task: &task,
                status: change.status,
                attempt: change.attempt,
                source: change.source.as_deref(),
                exit_code: change.exit_code,
                reason: change.reason.as_deref(),
                pid: change.pid,
                updated_at: change.at,
                metrics: None,
                started_at,
                finished_at,
                usage: change.usage,
            };
            let dir = self.paths.task_dir(change.index);
            let text = layout::status_yaml(&view);
            let path = dir.join("status.yaml");
            // The task directory normally exists (the source prepared it). It is created here
            // only for a task being started (the store may see `queued` before the source made
            // the directory); a task that never started (pending, cancelled before start) gets
            // no directory at all: cancelling 500,000 queued tasks must not create 500,000.
            let started = matches!(change.status, TaskStatus::Queued | TaskStatus::Running);
            let result = match layout::overwrite_in_place(&path, text.as_bytes()) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && started => {
                    std::fs::create_dir_all(&dir)
                        .and_then(|_| layout::overwrite_in_place(&path, text.as_bytes()))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            };
            if let Err(e) = result {
                tracing::warn!(task = change.index, error = %e, "cannot write status.yaml");
            }
        }
        if let Some(worker) = &mut self.metrics {
            for change in &changes {
                if matches!(
                    change.status,
                    TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled
                ) && change.attempt > 0
                {
                    worker.submit(
                        change.index,
                        change.attempt,
                        self.paths.task_dir(change.index),
                    );
                }
            }
        }
        if let Some(log) = &mut self.log {
            let mut text = String::new();
            for c in changes
                .iter()
                .filter(|c| c.status.is_final() || c.status == TaskStatus::Running)
            {
                text.push_str(&format!(
                    "{} {} attempt {} {}{}{}\n",
                    layout::format_utc(c.at),
                    self.paths.task_name(c.index),
                    c.attempt,
                    c.status,
                    c.source
                        .as_deref()
                        .map(|s| format!(" on {s}"))
                        .unwrap_or_default(),
                    c.reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default(),
                ));
            }
            let _ = log.write_all(text.as_bytes());
        }
    }

    /// When the change's attempt started and, for an ending, ended. A start this run did not
    /// see (an attempt taken up from an earlier coordinator) is read from `sweep.db`.
    fn times_of(&mut self, change: &Change) -> (Option<i64>, Option<i64>) {
        let ended = matches!(
            change.status,
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled
        );
        let started = match self.started.get(&change.index) {
            Some(&(attempt, at)) if attempt == change.attempt => Some(at),
            _ if ended => self
                .store
                .as_ref()
                .and_then(|s| s.attempt_started(change.index, change.attempt).ok())
                .flatten(),
            _ => None,
        };
        if ended || !matches!(change.status, TaskStatus::Running) {
            self.started.remove(&change.index);
        }
        (started, ended.then_some(change.at))
    }

    /// Whether it wrote them (`Ok(false)`: skipped, the last rewrite being recent).
    fn write_views(&mut self, force: bool) -> Result<bool, String> {
        if let (false, Some((at, took))) = (force, self.last_views) {
            if at.elapsed() < (took * 10).max(VIEWS_AT_MOST_EVERY) {
                return Ok(false);
            }
        }
        let started = std::time::Instant::now();
        self.write_mapping(force)?;
        let store = self
            .store
            .as_ref()
            .ok_or("the sweep database is not open")?;
        // Only the failed tasks, found through their index, with their parameters.
        let failed_rows = store.failed_tasks().map_err(|e| e.to_string())?;
        let failed = self.paths.failed_tasks();
        if let Some(dir) = failed.parent() {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        }
        layout::write_atomic(&failed, layout::failed_tasks_yaml(&failed_rows).as_bytes())
            .map_err(|e| e.to_string())?;
        if std::mem::take(&mut self.errors_dirty) {
            let result = self.write_error_patterns();
            if result.is_err() {
                self.errors_dirty = true;
            }
            result?;
        }
        self.last_views = Some((std::time::Instant::now(), started.elapsed()));
        Ok(true)
    }
}

/// A mapping written ahead (`layout::write_mapping_ahead`) by a thread of its own while a
/// cancel's transaction runs, and what changed after that cancel.
struct AheadWriter {
    thread: std::thread::JoinHandle<std::io::Result<layout::MappingAhead>>,
    superseded: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Tasks written since the cancel: their entries are read again when it is put in place.
    changed: std::collections::BTreeSet<u64>,
    /// The cancel's transaction failed, or too much changed since: not to be used.
    void: bool,
}

impl AheadWriter {
    fn give_up(&mut self) {
        self.void = true;
        self.superseded
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn give_up_and_join(mut self) {
        self.give_up();
        let _ = self.join();
    }

    /// The mapping it wrote, unless given up or failed.
    fn join(self) -> Option<(layout::MappingAhead, std::collections::BTreeSet<u64>)> {
        match self.thread.join() {
            Ok(Ok(ahead)) if !self.void => Some((ahead, self.changed)),
            Ok(Ok(ahead)) => {
                ahead.discard();
                None
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => None,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot write task_mapping.yaml ahead of the cancel");
                None
            }
            Err(_) => {
                tracing::warn!("the task_mapping.yaml writer panicked");
                None
            }
        }
    }
}

/// Past this many tasks changed after a cancel, its mapping written ahead is not used.
const AHEAD_CHANGED_AT_MOST: usize = 10_000;

/// A `task_mapping.yaml` being written by a thread of its own.
struct MappingWriter {
    thread: std::thread::JoinHandle<std::io::Result<std::time::Duration>>,
    /// Set when a newer mapping is on its way: the thread stops where it is.
    superseded: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl StoreActor {
    /// Stops the mapping writer under way, if any (it is joined later, as usual).
    fn supersede_mapping(&self) {
        if let Some(writer) = &self.mapping {
            writer
                .superseded
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// `task_mapping.yaml`, on a thread of its own reading through its own read-only
    /// connection: for a million tasks it takes a second or two, which on this thread would
    /// hold up every batch (and with them the orders to agents) and the cancel poll. One at a
    /// time, spaced ten times its cost apart; `force` (the run's end) gives up one under way,
    /// then writes it here with two threads, after every batch. A mapping written ahead of a
    /// cancel is put in place instead, once done (waited for at the run's end).
    fn write_mapping(&mut self, force: bool) -> Result<(), String> {
        if let Some(ahead) = self
            .ahead
            .take_if(|a| force || a.void || a.thread.is_finished())
        {
            // A periodic writer superseded by the cancel shares the temporary file's name.
            if let Some(writer) = self.mapping.take() {
                let _ = writer.thread.join();
            }
            if self.put_ahead_in_place(ahead) {
                return Ok(());
            }
        } else if self.ahead.is_some() {
            // The mapping written ahead of a cancel is nearly done: it is put in place next.
            return Ok(());
        }
        if force {
            // The one under way is out of date: it stops, and the run's end does not wait for
            // it (a second for a million tasks).
            self.supersede_mapping();
        }
        if let Some(writer) = self.mapping.take_if(|w| w.thread.is_finished() || force) {
            match writer.thread.join() {
                Ok(Ok(took)) => self.last_mapping = Some((std::time::Instant::now(), took)),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {
                    tracing::debug!("an out-of-date task_mapping.yaml was given up");
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot write task_mapping.yaml"),
                Err(_) => tracing::warn!("the task_mapping.yaml writer panicked"),
            }
        }
        if self.mapping.is_some() {
            return Ok(());
        }
        if let (false, Some((at, took))) = (force, self.last_mapping) {
            if at.elapsed() < (took * 10).max(VIEWS_AT_MOST_EVERY) {
                return Ok(());
            }
        }
        if force {
            // The run's last: both cores, nothing else is running.
            let started = std::time::Instant::now();
            layout::write_mapping_split(&self.paths.mapping(), &self.sweep_id, &self.paths.db())
                .map_err(|e| e.to_string())?;
            let took = started.elapsed();
            tracing::debug!(ms = took.as_millis() as u64, "task_mapping.yaml written");
            self.last_mapping = Some((std::time::Instant::now(), took));
            return Ok(());
        }
        let (db, path, sweep_id) = (self.paths.db(), self.paths.mapping(), self.sweep_id.clone());
        let superseded = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&superseded);
        let write = move || -> std::io::Result<std::time::Duration> {
            let started = std::time::Instant::now();
            let store =
                Store::open_read_only(&db).map_err(|e| std::io::Error::other(e.to_string()))?;
            layout::write_mapping_unless(&path, &sweep_id, &store, &flag)?;
            Ok(started.elapsed())
        };
        match std::thread::Builder::new()
            .name("hsm-mapping".into())
            .spawn(write)
        {
            Ok(thread) => self.mapping = Some(MappingWriter { thread, superseded }),
            Err(e) => tracing::warn!(error = %e, "cannot start the task_mapping.yaml writer"),
        }
        Ok(())
    }

    /// Puts the mapping written ahead of a cancel in place, with the tasks changed since read
    /// again; whether it did (if not, the mapping is written as usual).
    fn put_ahead_in_place(&mut self, ahead: AheadWriter) -> bool {
        let started = std::time::Instant::now();
        let Some(store) = &self.store else {
            ahead.give_up_and_join();
            return false;
        };
        let Some((written, changed)) = ahead.join() else {
            return false;
        };
        let waited = started.elapsed();
        match layout::finish_mapping_ahead(&self.paths.mapping(), written, &changed, store) {
            Ok(()) => {
                tracing::debug!(
                    waited_ms = waited.as_millis() as u64,
                    ms = started.elapsed().as_millis() as u64,
                    changed = changed.len(),
                    "task_mapping.yaml written ahead of the cancel put in place"
                );
                self.last_mapping = Some((std::time::Instant::now(), started.elapsed()));
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot use the task_mapping.yaml written ahead");
                false
            }
        }
    }

    /// Starts writing the mapping as it will be once the cancel of `ranges` at `at` commits
    /// (an earlier one under way is out of date).
    fn start_ahead(&mut self, ranges: &[(u64, u64)], at: i64) {
        if let Some(earlier) = self.ahead.take() {
            earlier.give_up_and_join();
        }
        let cancel = layout::CancelOverlay::new(ranges, at);
        let (db, sweep_id) = (self.paths.db(), self.sweep_id.clone());
        let mut file = self.paths.mapping().into_os_string();
        file.push(".ahead.tmp");
        let superseded = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&superseded);
        let write =
            move || layout::write_mapping_ahead(file.as_ref(), &sweep_id, &db, &cancel, &flag);
        match std::thread::Builder::new()
            .name("hsm-mapping-ahead".into())
            .spawn(write)
        {
            Ok(thread) => {
                self.ahead = Some(AheadWriter {
                    thread,
                    superseded,
                    changed: Default::default(),
                    void: false,
                })
            }
            Err(e) => tracing::warn!(error = %e, "cannot start the task_mapping.yaml writer"),
        }
    }

    /// `logs/errors/error_patterns.yaml` from the failed tasks now in the database.
    fn write_error_patterns(&mut self) -> Result<(), String> {
        let store = self
            .store
            .as_ref()
            .ok_or("the sweep database is not open")?;
        let failures = store.failures().map_err(|e| e.to_string())?;
        if self.constant.is_none() && !failures.is_empty() {
            self.constant = Some(store.constant_params().map_err(|e| e.to_string())?);
        }
        let groups = crate::core::errors::group(
            &failures,
            self.constant.as_ref().unwrap_or(&Default::default()),
        );
        let text = layout::error_patterns_yaml(&self.sweep_id, failures.len(), &groups);
        layout::write_atomic(&self.paths.error_patterns(), text.as_bytes())
            .map_err(|e| e.to_string())
    }
}

impl Actor for StoreActor {
    type Context = SyncContext<Self>;
}

impl Drop for StoreActor {
    /// A mapping written ahead of a cancel and never put in place (the run ended without
    /// `Close`) is not left behind: it is as large as the mapping.
    fn drop(&mut self) {
        if let Some(ahead) = self.ahead.take() {
            ahead.give_up_and_join();
        }
    }
}

/// A batch of changes to write in one transaction.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Persist(pub Vec<Change>);

impl Handler<Persist> for StoreActor {
    /// Whether everything so far is written (no write has failed).
    type Result = bool;
    fn handle(&mut self, msg: Persist, _: &mut SyncContext<Self>) -> bool {
        self.persist(&msg.0);
        self.collect_metrics(false);
        self.failure.is_none()
    }
}

/// Tasks cancelled before they started, by range (`SweepCore::poll_cancelled_unstarted`):
/// written in one transaction, with one line in `logs/sweep.log` for them all.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CancelUnstarted {
    pub ranges: Vec<(u64, u64)>,
    pub at: i64,
}

impl Handler<CancelUnstarted> for StoreActor {
    type Result = ();
    fn handle(&mut self, msg: CancelUnstarted, _: &mut SyncContext<Self>) {
        // A mapping being written now is out of date the moment this commits: it would only
        // take a core from the statements below.
        self.supersede_mapping();
        if self.store.is_none() {
            return;
        }
        // The mapping the run's end writes is written meanwhile, on the other core.
        self.start_ahead(&msg.ranges, msg.at);
        let Some(store) = &mut self.store else {
            return;
        };
        let reason = crate::core::state::CANCELLED_UNSTARTED;
        let started = std::time::Instant::now();
        match store.cancel_unstarted(&msg.ranges, reason, msg.at) {
            Ok(n) => {
                tracing::debug!(
                    tasks = n,
                    ranges = msg.ranges.len(),
                    ms = started.elapsed().as_millis() as u64,
                    "cancelled unstarted tasks by range"
                );
                if let (Some(log), Some(first), Some(last)) =
                    (&mut self.log, msg.ranges.first(), msg.ranges.last())
                {
                    let _ = writeln!(
                        log,
                        "{} {n} tasks ({} … {}) cancelled: {reason}",
                        layout::format_utc(msg.at),
                        self.paths.task_name(first.0),
                        self.paths.task_name(last.1),
                    );
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot write the sweep state");
                self.failure.get_or_insert_with(|| e.to_string());
                if let Some(ahead) = &mut self.ahead {
                    ahead.give_up();
                }
            }
        }
    }
}

/// Regenerate `task_mapping.yaml`, `failed_tasks.yaml` and (when failures changed)
/// `error_patterns.yaml` from the database. Unless `force`d
/// (at the end of a run), skipped while the last rewrite is recent relative to its cost; the
/// answer says whether they were written (the sender asks again later when not).
#[derive(Message)]
#[rtype(result = "Result<bool, String>")]
pub struct WriteViews {
    pub force: bool,
}

/// Views are rewritten at most this often, or ten times their last cost if that is longer
/// (a large sweep's views take long to build).
const VIEWS_AT_MOST_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

impl Handler<WriteViews> for StoreActor {
    type Result = Result<bool, String>;
    fn handle(&mut self, msg: WriteViews, _: &mut SyncContext<Self>) -> Self::Result {
        // At the end of a run (forced) every ended attempt's metrics are in before the views
        // and the report are written.
        let started = std::time::Instant::now();
        self.collect_metrics(msg.force);
        if msg.force {
            tracing::debug!(
                ms = started.elapsed().as_millis() as u64,
                "metrics collected"
            );
        }
        self.write_views(msg.force)
    }
}

/// Periodic check: has `sweep cancel` asked to cancel, and has persistence failed?
#[derive(Message)]
#[rtype(result = "Poll")]
pub struct PollControl;

#[derive(Debug, Clone, Default)]
pub struct Poll {
    pub cancel_requested: bool,
    pub failure: Option<String>,
}

impl Handler<PollControl> for StoreActor {
    type Result = actix::MessageResult<PollControl>;
    fn handle(&mut self, _: PollControl, _: &mut SyncContext<Self>) -> Self::Result {
        let cancel_requested = match self.store.as_ref().map(Store::cancel_requested) {
            Some(Ok(v)) => v,
            None => false,
            Some(Err(e)) => {
                self.failure.get_or_insert_with(|| e.to_string());
                false
            }
        };
        actix::MessageResult(Poll {
            cancel_requested,
            failure: self.failure.clone(),
        })
    }
}

/// Close the database at the end of a run, so SQLite checkpoints the WAL into `sweep.db`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Close;

impl Handler<Close> for StoreActor {
    type Result = ();
    fn handle(&mut self, _: Close, _: &mut SyncContext<Self>) {
        // A view being written finishes first (its reader would otherwise outlive the run).
        if let Some(writer) = self.mapping.take() {
            let _ = writer.thread.join();
        }
        if let Some(ahead) = self.ahead.take() {
            ahead.give_up_and_join();
        }
        self.store = None;
    }
}
