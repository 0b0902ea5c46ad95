//! The sweep's durable state: `sweep.db`, an SQLite database in WAL mode holding tasks, attempts,
//! status events and control flags. It is the source of truth; the YAML files are views of it.

use crate::core::metrics::TaskMetrics;
use crate::core::state::{Change, TaskStatus, Usage};
use crate::core::value::{task_name_in, Params, MIN_TASK_WIDTH};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use std::path::Path;
use std::time::Duration;

// Read-only access for the commands that look at a sweep from another terminal.
mod read;
pub use read::Span;
// Reads and writes that stay cheap at a million tasks: counts, compact states, parameters.
mod scale;
pub use scale::{MappingRow, TaskParams, PARAMS_CHUNK};
// The schema: tables, indexes and triggers of each version.
mod schema;
use schema::{FILL_COUNTS, LISTED, SCHEMA, SCHEMA_4, SCHEMA_5, SCHEMA_6};

/// The `meta` key holding the digits of the sweep's task numbers.
const TASK_WIDTH_KEY: &str = "task_width";
/// `meta.layout`: `full` or `compact` (`core::task_layout`), written by `sweep run`.
pub const LAYOUT_KEY: &str = "layout";

/// Bumped when the schema changes. Versions 1 (no job ids), 2 (no stderr tails), 3 (no
/// usage columns, no metrics tables) and 4 (no task counts) are upgraded in place when opened;
/// newer files are refused with a clear message.
pub const SCHEMA_VERSION: i64 = 6;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("sweep database {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    /// The coordinator stopped while creating the database (no committed schema).
    #[error("sweep database {path} was never fully created")]
    Incomplete { path: String },
    /// Writing what was read from the database failed (a view, a command's output).
    #[error("writing: {0}")]
    Write(#[source] std::io::Error),
    /// The file was written by a newer hsm.
    #[error("sweep database {path} has schema version {found}, this hsm understands {SCHEMA_VERSION}: upgrade hsm")]
    Version { path: String, found: i64 },
    /// Opened read-only, the file has an older schema that only a writer upgrades.
    #[error("sweep database {path} has the older schema version {found}: `hsm-coordinator sweep status` upgrades it")]
    Older { path: String, found: i64 },
    /// A row holds something this version cannot read.
    #[error("sweep database {path}: task {index}: {message}")]
    Corrupt {
        path: String,
        index: u64,
        message: String,
    },
}

/// One task row.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRow {
    pub index: u64,
    pub task_id: String,
    pub params_hash: String,
    pub params: Params,
    pub status: TaskStatus,
    pub attempt: u32,
    pub source: Option<String>,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub pid: Option<u32>,
    /// The batch scheduler's job id of the current attempt, when it ran as a job.
    pub job_id: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// The columns a `TaskRow` is decoded from (`Store::task_row`), in order; `?1` says whether
/// to read the parameters.
const TASK_COLUMNS: &str = "idx, task_id, params_hash, CASE WHEN ?1 THEN params ELSE '' END,
    status, attempt, source, exit_code, reason, pid, started_at, finished_at, job_id";

/// A new task to insert at sweep creation.
pub struct NewTask {
    pub index: u64,
    pub params_hash: String,
    pub params: Params,
}

pub struct Store {
    conn: Connection,
    path: String,
}

impl Store {
    /// Creates a new database with its schema and all tasks (pending), in one transaction. Task
    /// ids are `task_width` digits wide (`core::value::task_width`); the width is kept in `meta`.
    pub fn create(
        path: &Path,
        meta: &[(&str, String)],
        task_width: usize,
        tasks: impl Iterator<Item = NewTask>,
    ) -> Result<Store, StoreError> {
        let mut store = Store::connect(path)?;
        let display = store.path.clone();
        let err = |source| StoreError::Sqlite {
            path: display.clone(),
            source,
        };
        // Schema, meta and tasks in one transaction, the schema version written last: a
        // coordinator killed while creating the sweep leaves a database that `open` recognises
        // as never created, not an empty sweep that looks finished.
        // A page cache of 64 MiB while the tasks go in (a million rows overflow SQLite's
        // default 2 MiB, and evicted pages are read back), then the default again.
        store
            .conn
            .pragma_update(None, "cache_size", -65536)
            .map_err(err)?;
        let tx = store.conn.transaction().map_err(err)?;
        tx.execute_batch(SCHEMA).map_err(err)?;
        tx.execute_batch(SCHEMA_5).map_err(err)?;
        tx.execute_batch(SCHEMA_6).map_err(err)?;
        {
            let mut insert_meta = tx
                .prepare("INSERT INTO meta (key, value) VALUES (?1, ?2)")
                .map_err(err)?;
            for (key, value) in meta {
                insert_meta.execute(params![key, value]).map_err(err)?;
            }
            insert_meta
                .execute(params![TASK_WIDTH_KEY, task_width.to_string()])
                .map_err(err)?;
            let mut insert_task = tx
                .prepare(
                    "INSERT INTO tasks (idx, task_id, params_hash, params, status, attempt)
                     VALUES (?1, ?2, ?3, ?4, 'pending', 0)",
                )
                .map_err(err)?;
            for task in tasks {
                let params_json = serde_json::to_string(&task.params).unwrap_or_default();
                insert_task
                    .execute(params![
                        task.index as i64,
                        task_name_in(task.index, task_width),
                        task.params_hash,
                        params_json
                    ])
                    .map_err(err)?;
            }
        }
        // Counted once all tasks are in: a trigger per inserted row would be a million updates
        // of the same six rows.
        tx.execute_batch(FILL_COUNTS).map_err(err)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(err)?;
        tx.commit().map_err(err)?;
        store
            .conn
            .pragma_update(None, "cache_size", -2000)
            .map_err(err)?;
        Ok(store)
    }

    /// Opens an existing database.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let store = Store::connect(path)?;
        let found: i64 = store
            .conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(|source| store.sqlite(source))?;
        if found == 0 {
            return Err(StoreError::Incomplete {
                path: store.path.clone(),
            });
        }
        if found < SCHEMA_VERSION {
            store.upgrade()?;
        } else if found != SCHEMA_VERSION {
            return Err(StoreError::Version {
                path: store.path.clone(),
                found,
            });
        }
        Ok(store)
    }

    /// An older schema to this one, step by step: version 1 (before job ids were kept) gains
    /// the `job_id` columns, version 2 (before stderr tails were kept) `attempts.stderr_tail`,
    /// version 3 the usage columns and the metrics tables, version 4 the task counts, version 5
    /// the scheduler's record of each attempt.
    /// One transaction that holds the write lock from the start and looks at the version again,
    /// so two processes opening the same file at once upgrade it once.
    fn upgrade(&self) -> Result<(), StoreError> {
        let err = |source| self.sqlite(source);
        let tx =
            Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate).map_err(err)?;
        let found: i64 = tx
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(err)?;
        if found >= SCHEMA_VERSION {
            return tx.commit().map_err(err);
        }
        if found < 2 {
            tx.execute_batch(
                "ALTER TABLE tasks ADD COLUMN job_id TEXT;
                 ALTER TABLE attempts ADD COLUMN job_id TEXT;",
            )
            .map_err(err)?;
        }
        if found < 3 {
            tx.execute_batch("ALTER TABLE attempts ADD COLUMN stderr_tail TEXT;")
                .map_err(err)?;
        }
        if found < 4 {
            tx.execute_batch(SCHEMA_4).map_err(err)?;
        }
        if found < 5 {
            tx.execute_batch(SCHEMA_5).map_err(err)?;
            tx.execute_batch(FILL_COUNTS).map_err(err)?;
        }
        if found < 6 {
            tx.execute_batch(SCHEMA_6).map_err(err)?;
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(err)?;
        tx.commit().map_err(err)
    }

    fn connect(path: &Path) -> Result<Store, StoreError> {
        let display = path.display().to_string();
        let conn = Connection::open(path).map_err(|source| StoreError::Sqlite {
            path: display.clone(),
            source,
        })?;
        let store = Store {
            conn,
            path: display,
        };
        // WAL: readers (`sweep status` in another terminal) never block the writer.
        // synchronous=NORMAL in WAL is durable against process crashes (kill -9); a power loss
        // can lose the last transactions, which `sweep complete` re-runs.
        store
            .conn
            .busy_timeout(Duration::from_secs(10))
            .and_then(|_| store.conn.pragma_update(None, "journal_mode", "WAL"))
            .and_then(|_| store.conn.pragma_update(None, "synchronous", "NORMAL"))
            .and_then(|_| store.conn.pragma_update(None, "foreign_keys", "ON"))
            .map_err(|source| store.sqlite(source))?;
        Ok(store)
    }

    /// A task's parameters as stored (JSON); unreadable ones name the task and the file.
    fn parse_params(&self, index: u64, text: &str) -> Result<Params, StoreError> {
        serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            index,
            message: format!("unreadable parameters: {e}"),
        })
    }

    fn sqlite(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
                row.get(0)
            })
            .optional()
            .map_err(|e| self.sqlite(e))
    }

    /// Digits of the sweep's task numbers: as recorded at creation, or `MIN_TASK_WIDTH` for a
    /// sweep created before widths were recorded (its names keep their width).
    pub fn task_width(&self) -> Result<usize, StoreError> {
        Ok(self
            .meta(TASK_WIDTH_KEY)?
            .and_then(|w| w.parse().ok())
            .filter(|&w| (MIN_TASK_WIDTH..=20).contains(&w))
            .unwrap_or(MIN_TASK_WIDTH))
    }

    /// The sweep's per-task layout: as recorded at creation, or the full layout for a sweep
    /// created before layouts were recorded.
    pub fn task_layout(&self) -> Result<crate::core::task_layout::TaskLayout, StoreError> {
        Ok(crate::core::task_layout::TaskLayout::recorded(
            self.meta(LAYOUT_KEY)?.as_deref(),
        ))
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map(|_| ())
            .map_err(|e| self.sqlite(e))
    }

    /// Writes a batch of changes in one transaction: the task rows, the attempt history and the
    /// event log.
    pub fn apply(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        self.in_transaction(|tx| apply_in(tx, changes))
    }

    /// Runs `write` in one transaction, committed when it succeeds.
    fn in_transaction(
        &mut self,
        write: impl FnOnce(&Transaction) -> rusqlite::Result<()>,
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        write(&tx).map_err(err)?;
        tx.commit().map_err(err)
    }

    /// Every task, in index order.
    pub fn tasks(&self) -> Result<Vec<TaskRow>, StoreError> {
        self.read_tasks(true, None)
    }

    /// Every task without its parameters (left empty): enough for the status views, and much
    /// cheaper on big sweeps than parsing every task's parameters.
    pub fn task_statuses(&self) -> Result<Vec<TaskRow>, StoreError> {
        self.read_tasks(false, None)
    }

    /// One task's row (parameters left empty), `None` for a number the sweep does not have.
    pub fn task(&self, index: u64) -> Result<Option<TaskRow>, StoreError> {
        Ok(self.read_tasks(false, Some(index))?.pop())
    }

    /// Every task's row, or only task `only`.
    fn read_tasks(&self, with_params: bool, only: Option<u64>) -> Result<Vec<TaskRow>, StoreError> {
        // Two statements, so that one task is looked up by its key rather than by a scan.
        let filter = if only.is_some() {
            "idx = ?2"
        } else {
            "?2 IS NULL"
        };
        self.read_tasks_with(filter, params![with_params, only.map(|i| i as i64)])
    }

    /// The rows of the tasks matching `filter` (an SQL condition on `tasks`), parameters left
    /// empty.
    pub(crate) fn read_tasks_where(&self, filter: &str) -> Result<Vec<TaskRow>, StoreError> {
        self.read_tasks_with(filter, params![false])
    }

    /// The rows of the tasks matching `filter`, in index order: `?1` says whether to read the
    /// parameters.
    pub(crate) fn read_tasks_with(
        &self,
        filter: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<TaskRow>, StoreError> {
        let mut tasks = Vec::new();
        self.visit_tasks_with(filter, args, &mut |row| {
            tasks.push(row);
            Ok(())
        })?;
        Ok(tasks)
    }

    /// The one place task rows are decoded: `?1` says whether to read the parameters.
    fn visit_tasks_with(
        &self,
        filter: &str,
        args: impl rusqlite::Params,
        visit: &mut dyn FnMut(TaskRow) -> std::io::Result<()>,
    ) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE {filter} ORDER BY idx"
            ))
            .map_err(|e| self.sqlite(e))?;
        let mut rows = stmt.query(args).map_err(|e| self.sqlite(e))?;
        while let Some(row) = rows.next().map_err(|e| self.sqlite(e))? {
            visit(self.task_row(row)?).map_err(StoreError::Write)?;
        }
        Ok(())
    }

    /// Column `i` of `row` as text, borrowed from the row (no copy per row read).
    pub(super) fn text_at<'r>(
        &self,
        row: &'r rusqlite::Row<'_>,
        i: usize,
    ) -> Result<&'r str, StoreError> {
        row.get_ref(i)
            .and_then(|v| v.as_str().map_err(Into::into))
            .map_err(|e| self.sqlite(e))
    }

    /// A row selected as `TASK_COLUMNS` (its first 13 columns).
    pub(super) fn task_row(&self, row: &rusqlite::Row<'_>) -> Result<TaskRow, StoreError> {
        let sqlite = |e| self.sqlite(e);
        let index = row.get::<_, i64>(0).map_err(sqlite)? as u64;
        let params_json = self.text_at(row, 3)?;
        let params: Params = if params_json.is_empty() {
            Params::new()
        } else {
            self.parse_params(index, params_json)?
        };
        let status = self.text_at(row, 4)?;
        let status: TaskStatus = status.parse().map_err(|message| StoreError::Corrupt {
            path: self.path.clone(),
            index,
            message,
        })?;
        Ok(TaskRow {
            index,
            task_id: row.get(1).map_err(sqlite)?,
            params_hash: row.get(2).map_err(sqlite)?,
            params,
            status,
            attempt: row.get::<_, i64>(5).map_err(sqlite)? as u32,
            source: row.get(6).map_err(sqlite)?,
            exit_code: row
                .get::<_, Option<i64>>(7)
                .map_err(sqlite)?
                .map(|c| c as i32),
            reason: row.get(8).map_err(sqlite)?,
            pid: row
                .get::<_, Option<i64>>(9)
                .map_err(sqlite)?
                .map(|p| p as u32),
            started_at: row.get(10).map_err(sqlite)?,
            finished_at: row.get(11).map_err(sqlite)?,
            job_id: row.get(12).map_err(sqlite)?,
        })
    }

    /// How many attempts ran (or were handed) on `source`, by status (`agent clean` asks which
    /// of them have not ended).
    pub fn attempts_on(&self, source: &str) -> Result<Vec<(TaskStatus, u64)>, StoreError> {
        self.count_by_status(
            "SELECT status, COUNT(*) FROM attempts WHERE source = ?1 GROUP BY status",
            [source],
        )
    }

    /// `(status, count)` rows of a `SELECT status, COUNT(*) … GROUP BY status`.
    fn count_by_status(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<(TaskStatus, u64)>, StoreError> {
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.sqlite(e))?;
        let rows = stmt
            .query_map(params, |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .map_err(|e| self.sqlite(e))?;
        let mut counts = Vec::new();
        for row in rows {
            let (status, n) = row.map_err(|e| self.sqlite(e))?;
            let status = status.parse().map_err(|message| StoreError::Corrupt {
                path: self.path.clone(),
                index: 0,
                message,
            })?;
            counts.push((status, n as u64));
        }
        Ok(counts)
    }

    /// The stderr tail kept with each task's current attempt, for the tasks that have one (a
    /// failed attempt's), by task index.
    pub fn stderr_tails(&self) -> Result<std::collections::HashMap<u64, String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT a.idx, a.stderr_tail FROM attempts a
                 JOIN tasks t ON t.idx = a.idx AND t.attempt = a.attempt
                 WHERE a.stderr_tail IS NOT NULL",
            )
            .map_err(|e| self.sqlite(e))?;
        let rows = stmt
            .query_map([], |row| Ok((row.get::<_, i64>(0)? as u64, row.get(1)?)))
            .map_err(|e| self.sqlite(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sqlite(e))
    }

    /// Asks the coordinator running this sweep (if any) to cancel it.
    pub fn request_cancel(&self) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO control (key, value) VALUES ('cancel', '1')
                 ON CONFLICT(key) DO UPDATE SET value = '1'",
                [],
            )
            .map(|_| ())
            .map_err(|e| self.sqlite(e))
    }

    /// Clears a cancel request (a new run or completion starts fresh).
    pub fn clear_cancel(&self) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM control WHERE key = 'cancel'", [])
            .map(|_| ())
            .map_err(|e| self.sqlite(e))
    }

    pub fn cancel_requested(&self) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT value FROM control WHERE key = 'cancel'",
                [],
                |row| row.get::<_, String>(0),
            )
            .optional()
            .map(|v| v.as_deref() == Some("1"))
            .map_err(|e| self.sqlite(e))
    }

    /// Keeps what attempts reported, `(index, attempt, metrics)`, in one transaction: each
    /// attempt's series replace any it reported before, its last values become the task's
    /// (`task_metrics`) unless a later attempt of the task already reported, and the attempt is
    /// marked read (`metrics_at`).
    pub fn record_metrics(
        &mut self,
        reported: &[(u64, u32, &TaskMetrics)],
        at: i64,
    ) -> Result<(), StoreError> {
        if reported.is_empty() {
            return Ok(());
        }
        self.in_transaction(|tx| {
            for &(index, attempt, metrics) in reported {
                record_metrics_in(tx, index as i64, attempt, metrics, at)?;
            }
            Ok(())
        })
    }

    /// The last value of every metric of every task that reported any, by task index.
    pub fn last_metrics(
        &self,
    ) -> Result<std::collections::BTreeMap<u64, std::collections::BTreeMap<String, f64>>, StoreError>
    {
        let mut out: std::collections::BTreeMap<u64, std::collections::BTreeMap<String, f64>> =
            Default::default();
        let mut stmt = self
            .conn
            .prepare("SELECT idx, name, value FROM task_metrics ORDER BY idx")
            .map_err(|e| self.sqlite(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    metric_value(r, 2)?,
                ))
            })
            .map_err(|e| self.sqlite(e))?;
        for row in rows {
            let (idx, name, value) = row.map_err(|e| self.sqlite(e))?;
            out.entry(idx as u64).or_default().insert(name, value);
        }
        Ok(out)
    }

    /// Ended attempts (each task's current one) whose metrics were never read: the coordinator
    /// stopped before it got to them. `(index, attempt)`, in task order.
    pub fn metrics_unread(&self) -> Result<Vec<(u64, u32)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT a.idx, a.attempt FROM attempts a
                 JOIN tasks t ON t.idx = a.idx AND t.attempt = a.attempt
                 WHERE a.status IN ('completed', 'failed', 'cancelled') AND a.metrics_at IS NULL
                   AND a.started_at IS NOT NULL
                 ORDER BY a.idx",
            )
            .map_err(|e| self.sqlite(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, u32>(1)?))
            })
            .map_err(|e| self.sqlite(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sqlite(e))
    }

    /// What each task's current attempt used, by task index (tasks whose attempt measured
    /// nothing are left out).
    pub fn usage(&self) -> Result<std::collections::HashMap<u64, Usage>, StoreError> {
        self.usage_where("", [])
    }

    /// What attempt `attempt` of task `index` used, when its source measured anything.
    pub fn attempt_usage(&self, index: u64, attempt: u32) -> Result<Option<Usage>, StoreError> {
        Ok(self
            .usage_where(
                "AND a.idx = ?1 AND a.attempt = ?2",
                [index as i64, i64::from(attempt)],
            )?
            .remove(&index))
    }

    fn usage_where<const N: usize>(
        &self,
        filter: &str,
        args: [i64; N],
    ) -> Result<std::collections::HashMap<u64, Usage>, StoreError> {
        // Without a filter the task's current attempt; with one, the attempt it names.
        let join = if filter.is_empty() {
            "JOIN tasks t ON t.idx = a.idx AND t.attempt = a.attempt"
        } else {
            ""
        };
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT a.idx, a.wall_ms, a.cpu_user_ms, a.cpu_sys_ms, a.max_rss_kb,
                        a.scheduler_state
                 FROM attempts a {join}
                 WHERE (a.wall_ms IS NOT NULL OR a.cpu_user_ms IS NOT NULL
                        OR a.max_rss_kb IS NOT NULL OR a.scheduler_state IS NOT NULL) {filter}"
            ))
            .map_err(|e| self.sqlite(e))?;
        let ms = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok());
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    Usage {
                        wall_ms: ms(r.get(1)?),
                        cpu_user_ms: ms(r.get(2)?),
                        cpu_sys_ms: ms(r.get(3)?),
                        max_rss_kb: ms(r.get(4)?),
                        scheduler: scheduler_record(r.get(5)?),
                    },
                ))
            })
            .map_err(|e| self.sqlite(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sqlite(e))
    }

    /// The kept series of one attempt: (name, step, value), by name then in reported order.
    pub fn metric_series(
        &self,
        index: u64,
        attempt: u32,
    ) -> Result<Vec<(String, Option<i64>, f64)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT name, step, value FROM metrics WHERE idx = ?1 AND attempt = ?2
                 ORDER BY name, rowid",
            )
            .map_err(|e| self.sqlite(e))?;
        let rows = stmt
            .query_map(params![index as i64, attempt], |r| {
                Ok((r.get(0)?, r.get(1)?, metric_value(r, 2)?))
            })
            .map_err(|e| self.sqlite(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sqlite(e))
    }

    /// Every attempt with where it ran, its status, times and what it used, in task and
    /// attempt order: the input of `core::stats::source_stats`.
    pub fn attempt_rows(&self) -> Result<Vec<crate::core::stats::AttemptRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT idx, attempt, source, status, started_at, finished_at,
                        wall_ms, cpu_user_ms, cpu_sys_ms, max_rss_kb, scheduler_state
                 FROM attempts ORDER BY idx, attempt",
            )
            .map_err(|e| self.sqlite(e))?;
        let rows = stmt
            .query_map([], |r| {
                let ms = |i| {
                    r.get::<_, Option<i64>>(i)
                        .map(|v| v.and_then(|v| u64::try_from(v).ok()))
                };
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    Usage {
                        wall_ms: ms(6)?,
                        cpu_user_ms: ms(7)?,
                        cpu_sys_ms: ms(8)?,
                        max_rss_kb: ms(9)?,
                        scheduler: scheduler_record(r.get(10)?),
                    },
                ))
            })
            .map_err(|e| self.sqlite(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (index, attempt, source, status, started_at, finished_at, usage) =
                row.map_err(|e| self.sqlite(e))?;
            let status: TaskStatus = status.parse().map_err(|message| StoreError::Corrupt {
                path: self.path.clone(),
                index: index as u64,
                message,
            })?;
            out.push(crate::core::stats::AttemptRow {
                index: index as u64,
                attempt: attempt as u32,
                source,
                status,
                started_at,
                finished_at,
                usage,
            });
        }
        Ok(out)
    }

    /// When attempt `attempt` of task `index` started (Unix ms), if it did.
    pub fn attempt_started(&self, index: u64, attempt: u32) -> Result<Option<i64>, StoreError> {
        self.conn
            .prepare_cached("SELECT started_at FROM attempts WHERE idx = ?1 AND attempt = ?2")
            .and_then(|mut stmt| {
                stmt.query_row(params![index as i64, attempt], |r| {
                    r.get::<_, Option<i64>>(0)
                })
                .optional()
            })
            .map(Option::flatten)
            .map_err(|e| self.sqlite(e))
    }

    /// `PRAGMA integrity_check` result (`ok` when healthy).
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        self.conn
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .map_err(|e| self.sqlite(e))
    }
}

/// A metric value as SQLite keeps it. SQLite turns a NaN it is given into NULL (which the
/// `NOT NULL` columns refuse, losing the attempt's every metric), so NaN — a diverged loss, worth
/// seeing — is kept as the text `nan`; infinities are REALs SQLite keeps as they are.
fn metric_sql(value: f64) -> rusqlite::types::Value {
    if value.is_nan() {
        rusqlite::types::Value::Text("nan".into())
    } else {
        rusqlite::types::Value::Real(value)
    }
}

/// Reads a metric value written by `metric_sql` (a REAL, an INTEGER, or the text `nan`).
fn metric_value(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<f64> {
    use rusqlite::types::{FromSqlError, ValueRef};
    match row.get_ref(column)? {
        ValueRef::Real(v) => Ok(v),
        ValueRef::Integer(v) => Ok(v as f64),
        ValueRef::Text(b"nan") => Ok(f64::NAN),
        other => Err(rusqlite::Error::FromSqlConversionFailure(
            column,
            other.data_type(),
            Box::new(FromSqlError::InvalidType),
        )),
    }
}

fn record_metrics_in(
    tx: &Transaction<'_>,
    idx: i64,
    attempt: u32,
    metrics: &TaskMetrics,
    at: i64,
) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM metrics WHERE idx = ?1 AND attempt = ?2")?
        .execute(params![idx, attempt])?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO metrics (idx, attempt, name, step, value, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for point in metrics.points() {
        insert.execute(params![
            idx,
            attempt,
            point.name,
            point.step,
            metric_sql(point.value),
            at
        ])?;
    }
    let newer: Option<i64> = tx
        .prepare_cached("SELECT max(attempt) FROM task_metrics WHERE idx = ?1")?
        .query_row([idx], |r| r.get(0))?;
    if newer.is_none_or(|n| n <= attempt as i64) {
        tx.prepare_cached("DELETE FROM task_metrics WHERE idx = ?1")?
            .execute([idx])?;
        let mut insert = tx.prepare_cached(
            "INSERT INTO task_metrics (idx, name, attempt, step, value) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for (name, last) in metrics.last() {
            insert.execute(params![
                idx,
                name,
                attempt,
                last.step,
                metric_sql(last.value)
            ])?;
        }
    }
    tx.prepare_cached("UPDATE attempts SET metrics_at = ?3 WHERE idx = ?1 AND attempt = ?2")?
        .execute(params![idx, attempt, at])?;
    Ok(())
}

/// Attempts that start and end within one batch (a short task on a busy source): the position
/// of each ending change, with the position of the `running` change of the same attempt just
/// before it. The task's row and its attempt's row are then written once, for the ending, with
/// the start's time, pid and source; the `running` change adds only its history event. Two
/// statements (and a count trigger) fewer per short task.
fn started_in_batch(changes: &[Change]) -> Vec<InBatch> {
    let mut running: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    let mut merged = vec![InBatch::Alone; changes.len()];
    for (i, change) in changes.iter().enumerate() {
        if change.job_id.is_some() {
            continue;
        }
        match change.status {
            TaskStatus::Running => {
                running.insert(change.index, i);
            }
            status if status.is_final() => {
                if let Some(r) = running.remove(&change.index) {
                    if changes[r].attempt == change.attempt {
                        merged[r] = InBatch::EndsLater;
                        merged[i] = InBatch::StartedAt(r);
                    }
                }
            }
            _ => {
                running.remove(&change.index);
            }
        }
    }
    merged
}

/// How a change is written (`started_in_batch`).
#[derive(Clone, Copy)]
enum InBatch {
    /// On its own.
    Alone,
    /// A start whose attempt ends later in the batch: its history event only.
    EndsLater,
    /// An ending whose start (at this position) is in the batch.
    StartedAt(usize),
}

fn apply_in(tx: &Transaction<'_>, changes: &[Change]) -> rusqlite::Result<()> {
    let mut update = tx.prepare_cached(
        "UPDATE tasks SET status = ?2, attempt = ?3, source = COALESCE(?4, source),
             exit_code = ?5, reason = ?6, pid = COALESCE(?7, pid),
             started_at = CASE WHEN ?2 = 'running' THEN ?8
                               WHEN ?2 IN ('pending', 'queued') THEN NULL
                               ELSE COALESCE(?9, started_at) END,
             finished_at = CASE WHEN ?2 IN ('completed', 'failed', 'cancelled') THEN ?8 ELSE NULL END,
             job_id = CASE WHEN ?2 IN ('pending', 'queued') THEN NULL ELSE job_id END,
             updated_at = ?8
         WHERE idx = ?1",
    )?;
    let mut task_job =
        tx.prepare_cached("UPDATE tasks SET job_id = ?3 WHERE idx = ?1 AND attempt = ?2")?;
    let mut attempt_job =
        tx.prepare_cached("UPDATE attempts SET job_id = ?3 WHERE idx = ?1 AND attempt = ?2")?;
    let mut attempt = tx.prepare_cached(
        "INSERT INTO attempts (idx, attempt, source, status, exit_code, reason, pid, queued_at,
                               started_at, finished_at, stderr_tail,
                               wall_ms, cpu_user_ms, cpu_sys_ms, max_rss_kb, scheduler_state)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8,
                 CASE WHEN ?4 = 'running' THEN ?8 ELSE ?14 END,
                 CASE WHEN ?4 IN ('completed', 'failed', 'cancelled') THEN ?8 END, ?9,
                 ?10, ?11, ?12, ?13, ?15)
         ON CONFLICT(idx, attempt) DO UPDATE SET
             source = COALESCE(excluded.source, source), status = excluded.status,
             exit_code = excluded.exit_code, reason = excluded.reason,
             pid = COALESCE(excluded.pid, pid),
             stderr_tail = COALESCE(excluded.stderr_tail, stderr_tail),
             wall_ms = COALESCE(excluded.wall_ms, wall_ms),
             cpu_user_ms = COALESCE(excluded.cpu_user_ms, cpu_user_ms),
             cpu_sys_ms = COALESCE(excluded.cpu_sys_ms, cpu_sys_ms),
             max_rss_kb = COALESCE(excluded.max_rss_kb, max_rss_kb),
             scheduler_state = COALESCE(excluded.scheduler_state, scheduler_state),
             started_at = COALESCE(excluded.started_at, started_at),
             finished_at = COALESCE(excluded.finished_at, finished_at)",
    )?;
    let mut event = tx.prepare_cached(
        "INSERT INTO events (idx, attempt, status, source, at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let started_in_batch = started_in_batch(changes);
    for (i, change) in changes.iter().enumerate() {
        if let Some(job_id) = &change.job_id {
            task_job.execute(params![change.index as i64, change.attempt, job_id])?;
            attempt_job.execute(params![change.index as i64, change.attempt, job_id])?;
            continue;
        }
        let status = change.status.as_str();
        event.execute(params![
            change.index as i64,
            change.attempt,
            status,
            change.source,
            change.at
        ])?;
        let started = match started_in_batch.get(i) {
            // Its attempt ends later in this batch: the history row above is all for now.
            Some(InBatch::EndsLater) => continue,
            Some(InBatch::StartedAt(r)) => changes.get(*r),
            _ => None,
        };
        let source = change
            .source
            .as_deref()
            .or(started.and_then(|r| r.source.as_deref()));
        let pid = change.pid.or(started.and_then(|r| r.pid));
        let started_at = started.map(|r| r.at);
        update.execute(params![
            change.index as i64,
            status,
            change.attempt,
            source,
            change.exit_code,
            change.reason,
            pid,
            change.at,
            started_at
        ])?;
        // Attempt 0 means "never ran", and `pending` (a retry or a `complete` queueing the task
        // again) carries the previous attempt's number: neither may touch an attempt row, or
        // the history of the failed attempt would be overwritten.
        if change.attempt > 0 && change.status != TaskStatus::Pending {
            let usage = change.usage.unwrap_or_default();
            let ms = |v: Option<u64>| v.map(|v| v.min(i64::MAX as u64) as i64);
            attempt.execute(params![
                change.index as i64,
                change.attempt,
                source,
                status,
                change.exit_code,
                change.reason,
                pid,
                change.at,
                change.stderr_tail,
                ms(usage.wall_ms),
                ms(usage.cpu_user_ms),
                ms(usage.cpu_sys_ms),
                ms(usage.max_rss_kb),
                started_at,
                usage.scheduler.map(|s| s.display())
            ])?;
        }
    }
    Ok(())
}

/// What a `scheduler_state` column holds, read back (`FAILED 3:0`).
fn scheduler_record(text: Option<String>) -> Option<hsm_protocol::SchedulerRecordMsg> {
    text.as_deref()
        .and_then(hsm_protocol::SchedulerRecordMsg::parse)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::core::value::{params_hash, Value};

    /// Tasks 1..=n with one parameter, `seed` = the index.
    pub(crate) fn new_tasks(n: u64) -> impl Iterator<Item = NewTask> {
        (1..=n).map(|index| {
            let params: Params = [("seed".to_string(), Value::Int(index as i64))]
                .into_iter()
                .collect();
            NewTask {
                index,
                params_hash: params_hash(&params),
                params,
            }
        })
    }

    fn change(index: u64, attempt: u32, status: TaskStatus, at: i64) -> Change {
        Change::new(index, attempt, status, Some("local".into()), at)
    }

    #[test]
    fn create_apply_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sweep.db");
        let mut store =
            Store::create(&path, &[("sweep_id", "s1".into())], 3, new_tasks(3)).unwrap();
        store
            .apply(&[
                change(1, 1, TaskStatus::Queued, 10),
                Change {
                    pid: Some(42),
                    ..change(1, 1, TaskStatus::Running, 11)
                },
                change(1, 1, TaskStatus::Completed, 15),
                Change {
                    exit_code: Some(3),
                    reason: Some("exit code 3".into()),
                    ..change(2, 1, TaskStatus::Failed, 16)
                },
            ])
            .unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.meta("sweep_id").unwrap().as_deref(), Some("s1"));
        let tasks = store.tasks().unwrap();
        assert_eq!(tasks.len(), 3);
        assert_eq!(tasks[0].status, TaskStatus::Completed);
        assert_eq!(tasks[0].pid, Some(42));
        assert_eq!(tasks[0].started_at, Some(11));
        assert_eq!(tasks[0].finished_at, Some(15));
        assert_eq!(tasks[1].exit_code, Some(3));
        assert_eq!(tasks[2].status, TaskStatus::Pending);
        assert_eq!(tasks[2].params["seed"], Value::Int(3));
        let n_events: i64 = store
            .conn
            .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n_events, 4);
        let n_attempts: i64 = store
            .conn
            .query_row("SELECT COUNT(*) FROM attempts", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n_attempts, 2);
        assert_eq!(store.integrity_check().unwrap(), "ok");
    }

    /// Every row of the tables a change writes, as text, in a fixed order.
    fn dump(store: &Store) -> Vec<String> {
        let mut rows = Vec::new();
        for sql in [
            "SELECT idx, status, attempt, source, exit_code, reason, pid, started_at, finished_at, \
             job_id, updated_at FROM tasks ORDER BY idx",
            "SELECT idx, attempt, source, status, exit_code, reason, pid, queued_at, started_at, \
             finished_at, stderr_tail, wall_ms, cpu_user_ms, cpu_sys_ms, max_rss_kb, job_id \
             FROM attempts ORDER BY idx, attempt",
            "SELECT id, idx, attempt, status, source, at FROM events ORDER BY id",
            "SELECT status, n FROM task_counts ORDER BY status",
        ] {
            let mut stmt = store.conn.prepare(sql).unwrap();
            let n = stmt.column_count();
            let mut found = stmt.query([]).unwrap();
            while let Some(row) = found.next().unwrap() {
                let cells: Vec<String> = (0..n)
                    .map(|i| format!("{:?}", row.get::<_, rusqlite::types::Value>(i).unwrap()))
                    .collect();
                rows.push(cells.join("|"));
            }
        }
        rows
    }

    #[test]
    fn a_batch_writes_what_its_changes_write_one_by_one() {
        let usage = Usage {
            wall_ms: Some(5),
            cpu_user_ms: Some(1),
            cpu_sys_ms: None,
            max_rss_kb: Some(2048),
            scheduler: None,
        };
        let changes = vec![
            change(1, 1, TaskStatus::Queued, 10),
            change(2, 1, TaskStatus::Queued, 10),
            change(3, 1, TaskStatus::Queued, 10),
            Change {
                pid: Some(41),
                source: Some("a1".into()),
                ..change(1, 1, TaskStatus::Running, 11)
            },
            Change {
                pid: Some(42),
                ..change(2, 1, TaskStatus::Running, 12)
            },
            Change {
                pid: Some(43),
                ..change(3, 1, TaskStatus::Running, 12)
            },
            // Task 1 ends with no source or pid of its own: the start's are kept.
            Change {
                exit_code: Some(0),
                source: None,
                usage: Some(usage),
                ..change(1, 1, TaskStatus::Completed, 15)
            },
            Change {
                job_id: Some("77_2".into()),
                ..change(2, 1, TaskStatus::Running, 15)
            },
            Change {
                exit_code: Some(3),
                reason: Some("exit code 3".into()),
                stderr_tail: Some("boom".into()),
                ..change(2, 1, TaskStatus::Failed, 16)
            },
            change(2, 1, TaskStatus::Pending, 17),
            change(2, 2, TaskStatus::Queued, 18),
            change(2, 2, TaskStatus::Running, 19),
            // Task 3 is still running when the batch ends; task 4 is cancelled unstarted.
            Change {
                reason: Some("cancelled".into()),
                ..change(4, 0, TaskStatus::Cancelled, 20)
            },
            change(2, 2, TaskStatus::Cancelled, 21),
        ];
        let dir = tempfile::tempdir().unwrap();
        let mut batch = Store::create(&dir.path().join("a.db"), &[], 3, new_tasks(4)).unwrap();
        batch.apply(&changes).unwrap();
        let mut single = Store::create(&dir.path().join("b.db"), &[], 3, new_tasks(4)).unwrap();
        for c in &changes {
            single.apply(std::slice::from_ref(c)).unwrap();
        }
        let (a, b) = (dump(&batch), dump(&single));
        assert_eq!(a, b);
        // Written once: task 1's row has the start's time and pid with its ending.
        assert!(a.iter().any(|r| r.starts_with("Integer(1)|Text(\"completed\")|Integer(1)|Text(\"a1\")|Integer(0)|Null|Integer(41)|Integer(11)|Integer(15)")), "{a:#?}");
        assert_eq!(batch.integrity_check().unwrap(), "ok");
    }

    #[test]
    fn a_retry_keeps_the_failed_attempt_in_history() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::create(&dir.path().join("sweep.db"), &[], 3, new_tasks(1)).unwrap();
        store
            .apply(&[
                change(1, 1, TaskStatus::Running, 1),
                Change {
                    exit_code: Some(2),
                    reason: Some("exit code 2".into()),
                    ..change(1, 1, TaskStatus::Failed, 2)
                },
                change(1, 1, TaskStatus::Pending, 3),
                change(1, 2, TaskStatus::Queued, 4),
            ])
            .unwrap();
        let (status, code): (String, Option<i64>) = store
            .conn
            .query_row(
                "SELECT status, exit_code FROM attempts WHERE idx = 1 AND attempt = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((status.as_str(), code), ("failed", Some(2)));
    }

    #[test]
    fn a_database_whose_creation_never_committed_is_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sweep.db");
        // What a coordinator killed mid-creation leaves: a WAL database without the schema.
        drop(Store::connect(&path).unwrap());
        assert!(matches!(
            Store::open(&path),
            Err(StoreError::Incomplete { .. })
        ));
    }

    #[test]
    fn cancel_flag_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("sweep.db"), &[], 3, new_tasks(1)).unwrap();
        assert!(!store.cancel_requested().unwrap());
        store.request_cancel().unwrap();
        assert!(store.cancel_requested().unwrap());
        store.clear_cancel().unwrap();
        assert!(!store.cancel_requested().unwrap());
    }

    #[test]
    fn a_job_id_is_kept_with_the_task_and_its_attempt_until_the_next_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sweep.db");
        let mut store = Store::create(&path, &[], 3, new_tasks(1)).unwrap();
        let job = |attempt, id: &str| Change {
            source: None,
            job_id: Some(id.into()),
            ..change(1, attempt, TaskStatus::Queued, 11)
        };
        store
            .apply(&[
                change(1, 1, TaskStatus::Queued, 10),
                job(1, "40_3"),
                change(1, 1, TaskStatus::Running, 12),
            ])
            .unwrap();
        let task = &store.tasks().unwrap()[0];
        assert_eq!(task.job_id.as_deref(), Some("40_3"));
        assert_eq!(
            (task.status, task.source.as_deref(), task.started_at),
            (TaskStatus::Running, Some("local"), Some(12)),
            "the job id changed nothing else"
        );
        let history: i64 = store
            .conn
            .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(history, 2, "no history row for a job id");
        store
            .apply(&[
                change(1, 1, TaskStatus::Failed, 13),
                change(1, 1, TaskStatus::Pending, 14),
                change(1, 2, TaskStatus::Queued, 15),
            ])
            .unwrap();
        assert_eq!(
            store.tasks().unwrap()[0].job_id,
            None,
            "attempt 2 has none yet"
        );
        store.apply(&[job(2, "41_0")]).unwrap();
        let jobs: Vec<String> = store
            .conn
            .prepare("SELECT job_id FROM attempts ORDER BY attempt")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(jobs, ["40_3", "41_0"]);
    }

    /// Makes a current database look like one written by schema version `to`: each version's
    /// schema is the next one's without what the next one added.
    pub(super) fn downgrade(store: &Store, to: i64) {
        let mut sql = String::new();
        if to < 6 {
            sql += "ALTER TABLE attempts DROP COLUMN scheduler_state;";
        }
        if to < 5 {
            sql += "DROP TRIGGER task_counts_insert; DROP TRIGGER task_counts_update;
                    DROP TRIGGER task_counts_delete; DROP TABLE task_counts;
                    DROP INDEX tasks_listed;";
        }
        if to < 4 {
            sql += "DROP TABLE metrics; DROP TABLE task_metrics;
                    ALTER TABLE attempts DROP COLUMN wall_ms;
                    ALTER TABLE attempts DROP COLUMN cpu_user_ms;
                    ALTER TABLE attempts DROP COLUMN cpu_sys_ms;
                    ALTER TABLE attempts DROP COLUMN max_rss_kb;
                    ALTER TABLE attempts DROP COLUMN metrics_at;";
        }
        if to < 3 {
            sql += "ALTER TABLE attempts DROP COLUMN stderr_tail;";
        }
        if to < 2 {
            sql += "ALTER TABLE tasks DROP COLUMN job_id; ALTER TABLE attempts DROP COLUMN job_id;";
        }
        sql += &format!("PRAGMA user_version = {to};");
        store.conn.execute_batch(&sql).unwrap();
    }

    #[test]
    fn metrics_of_the_latest_attempt_are_the_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::create(&dir.path().join("sweep.db"), &[], 3, new_tasks(2)).unwrap();
        let mut first = TaskMetrics::default();
        first.parse_line("HSM_METRIC loss=2 step=1");
        first.parse_line("HSM_METRIC loss=1 acc=0.5 step=2");
        let mut second = TaskMetrics::default();
        second.parse_line("HSM_METRIC loss=0.5");
        store.record_metrics(&[(1, 2, &second)], 20).unwrap();
        // A late report of the first attempt keeps its series but not the task's values.
        store.record_metrics(&[(1, 1, &first)], 21).unwrap();
        let last = store.last_metrics().unwrap();
        assert_eq!(last[&1].get("loss"), Some(&0.5));
        assert!(!last[&1].contains_key("acc"));
        assert!(!last.contains_key(&2));
        let series = store.metric_series(1, 1).unwrap();
        assert_eq!(
            series,
            [
                ("acc".to_string(), Some(2), 0.5),
                ("loss".to_string(), Some(1), 2.0),
                ("loss".to_string(), Some(2), 1.0)
            ]
        );
        // Recorded again (a rerun of the extraction): replaced, not doubled.
        store.record_metrics(&[(1, 1, &first)], 22).unwrap();
        assert_eq!(store.metric_series(1, 1).unwrap().len(), 3);
    }

    #[test]
    fn nan_and_infinite_metrics_are_kept_with_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::create(&dir.path().join("sweep.db"), &[], 3, new_tasks(1)).unwrap();
        let mut m = TaskMetrics::default();
        m.parse_line("HSM_METRIC loss=0.5 step=1");
        m.parse_line("HSM_METRIC loss=nan acc=inf gap=-inf step=2");
        store.record_metrics(&[(1, 1, &m)], 20).unwrap();
        let last = &store.last_metrics().unwrap()[&1];
        assert!(last["loss"].is_nan(), "{last:?}");
        assert_eq!(last["acc"], f64::INFINITY);
        assert_eq!(last["gap"], f64::NEG_INFINITY);
        let series = store.metric_series(1, 1).unwrap();
        let loss: Vec<f64> = series
            .iter()
            .filter(|(name, _, _)| name == "loss")
            .map(|&(_, _, v)| v)
            .collect();
        assert_eq!(loss.len(), 2, "{series:?}");
        assert_eq!(loss[0], 0.5);
        assert!(loss[1].is_nan());
    }

    #[test]
    fn a_version_3_database_gains_usage_and_metrics_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sweep.db");
        let store = Store::create(&path, &[], 3, new_tasks(1)).unwrap();
        downgrade(&store, 3);
        drop(store);
        let mut store = Store::open(&path).unwrap();
        let usage = Usage {
            wall_ms: Some(1500),
            cpu_user_ms: Some(1200),
            cpu_sys_ms: Some(30),
            max_rss_kb: Some(204_800),
            scheduler: hsm_protocol::SchedulerRecordMsg::parse("OUT_OF_MEMORY 0:125"),
        };
        store
            .apply(&[
                change(1, 1, TaskStatus::Running, 10),
                Change {
                    usage: Some(usage),
                    ..change(1, 1, TaskStatus::Completed, 11)
                },
            ])
            .unwrap();
        // The scheduler's record, a column of schema 6, reads back as it was.
        assert_eq!(store.usage().unwrap()[&1], usage);
        let kept: (i64, i64, i64, i64) = store
            .conn
            .query_row(
                "SELECT wall_ms, cpu_user_ms, cpu_sys_ms, max_rss_kb FROM attempts",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(kept, (1500, 1200, 30, 204_800));
        let tables: i64 = store
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name IN ('metrics', 'task_metrics')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 2);
    }

    #[test]
    fn a_version_1_database_gains_the_job_id_columns_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sweep.db");
        let store = Store::create(&path, &[], 3, new_tasks(2)).unwrap();
        downgrade(&store, 1);
        drop(store);
        let mut store = Store::open(&path).unwrap();
        store
            .apply(&[
                change(1, 1, TaskStatus::Queued, 10),
                Change {
                    job_id: Some("7".into()),
                    ..change(1, 1, TaskStatus::Queued, 11)
                },
            ])
            .unwrap();
        assert_eq!(store.tasks().unwrap()[0].job_id.as_deref(), Some("7"));
        drop(store);
        let version: i64 = Store::open(&path)
            .unwrap()
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn a_version_2_database_gains_the_stderr_tail_column_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sweep.db");
        let mut store = Store::create(&path, &[], 3, new_tasks(2)).unwrap();
        // An attempt written by version 2, which kept no tails.
        store
            .apply(&[
                change(2, 1, TaskStatus::Running, 5),
                change(2, 1, TaskStatus::Failed, 6),
            ])
            .unwrap();
        downgrade(&store, 2);
        drop(store);
        let mut store = Store::open(&path).unwrap();
        let version: i64 = store
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        assert!(store.stderr_tails().unwrap().is_empty());
        store
            .apply(&[
                change(1, 1, TaskStatus::Running, 10),
                Change {
                    exit_code: Some(1),
                    reason: Some("exit code 1: ValueError: x".into()),
                    stderr_tail: Some("Traceback …\nValueError: x".into()),
                    ..change(1, 1, TaskStatus::Failed, 11)
                },
            ])
            .unwrap();
        drop(store);
        // Opened again (now version 3): nothing to upgrade, the tail is there.
        let store = Store::open(&path).unwrap();
        let tails = store.stderr_tails().unwrap();
        assert_eq!(
            tails.get(&1).map(String::as_str),
            Some("Traceback …\nValueError: x")
        );
        assert_eq!(tails.len(), 1);
        assert_eq!(store.tasks().unwrap()[1].status, TaskStatus::Failed);
    }

    #[test]
    fn a_failed_attempt_keeps_its_tail_after_the_task_is_retried() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::create(&dir.path().join("sweep.db"), &[], 3, new_tasks(1)).unwrap();
        store
            .apply(&[
                change(1, 1, TaskStatus::Running, 1),
                Change {
                    stderr_tail: Some("first".into()),
                    ..change(1, 1, TaskStatus::Failed, 2)
                },
                change(1, 1, TaskStatus::Pending, 3),
                change(1, 2, TaskStatus::Queued, 4),
            ])
            .unwrap();
        assert!(
            store.stderr_tails().unwrap().is_empty(),
            "attempt 2 has no tail yet"
        );
        let kept: String = store
            .conn
            .query_row(
                "SELECT stderr_tail FROM attempts WHERE idx = 1 AND attempt = 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(kept, "first");
    }

    #[test]
    fn task_ids_have_the_recorded_width_and_older_sweeps_keep_theirs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wide.db");
        let store = Store::create(&path, &[], 4, new_tasks(2)).unwrap();
        assert_eq!(store.task_width().unwrap(), 4);
        let ids: Vec<String> = store
            .tasks()
            .unwrap()
            .into_iter()
            .map(|t| t.task_id)
            .collect();
        assert_eq!(ids, ["task_0001", "task_0002"]);
        // A sweep from before the width was recorded: three digits.
        store
            .conn
            .execute("DELETE FROM meta WHERE key = 'task_width'", [])
            .unwrap();
        assert_eq!(store.task_width().unwrap(), MIN_TASK_WIDTH);
    }

    #[test]
    fn a_read_only_store_reads_and_never_writes_or_upgrades() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sweep.db");
        let mut store =
            Store::create(&path, &[("sweep_id", "s1".into())], 3, new_tasks(2)).unwrap();
        let reader = Store::open_read_only(&path).unwrap();
        // The writer goes on while the reader is open (WAL); the reader sees each commit.
        store
            .apply(&[change(1, 1, TaskStatus::Running, 10)])
            .unwrap();
        assert_eq!(
            reader.task_statuses().unwrap()[0].status,
            TaskStatus::Running
        );
        assert_eq!(reader.meta("sweep_id").unwrap().as_deref(), Some("s1"));
        assert!(
            reader.set_meta("x", "y").is_err(),
            "a read-only store cannot write"
        );
        drop(reader);
        downgrade(&store, 3);
        drop(store);
        let err = Store::open_read_only_current(&path).err().unwrap();
        assert!(matches!(err, StoreError::Older { found: 3, .. }), "{err}");
        let version: i64 = Store::connect(&path)
            .unwrap()
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, 3, "left as it was");
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sweep.db");
        let store = Store::create(&path, &[], 3, new_tasks(1)).unwrap();
        store.conn.pragma_update(None, "user_version", 99).unwrap();
        drop(store);
        let err = Store::open(&path).err().unwrap();
        assert!(err.to_string().contains("schema version 99"), "{err}");
    }
}
