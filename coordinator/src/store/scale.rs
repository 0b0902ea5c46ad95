//! The reads and writes of `sweep.db` that stay cheap at a million tasks: counts from the
//! `task_counts` table, each task's state without its text columns, the listed tasks (queued,
//! running, failed) through their partial index, parameters one chunk at a time
//! (`TaskParams`), and the tasks still waiting cancelled by range in one statement.

use super::{Store, StoreError, TaskRow, TASK_COLUMNS};
use crate::core::state::{Counts, TaskState, TaskStatus, Usage};
use crate::core::value::{Params, Value};
use rusqlite::{params, Connection, OpenFlags};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// How many tasks' parameters `TaskParams` reads at once: tasks are dispatched mostly in index
/// order, so one query serves a chunk of launches.
pub const PARAMS_CHUNK: u64 = 1024;

/// Chunks `TaskParams` keeps: the prefetcher runs up to a few hundred tasks ahead of launches,
/// and retries go back to earlier tasks, so a few chunks are live at once.
const CHUNKS_KEPT: usize = 8;

impl Store {
    /// How many tasks have each status: from `task_counts` (six rows) when the schema keeps
    /// it, else counted from the tasks.
    pub fn counts(&self) -> Result<Counts, StoreError> {
        let kept = self.schema_version()? >= 5;
        let sql = if kept {
            "SELECT status, n FROM task_counts"
        } else {
            "SELECT status, COUNT(*) FROM tasks GROUP BY status"
        };
        let mut counts = Counts::default();
        for (status, n) in self.count_by_status(sql, [])? {
            counts.add_n(status, n);
        }
        Ok(counts)
    }

    /// Every task's status and attempt as a run starts with them, in index order, without the
    /// text columns (a million rows of strings would be hundreds of megabytes).
    pub fn task_states(&self) -> Result<Vec<TaskState>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT idx, status, attempt FROM tasks ORDER BY idx")
            .map_err(|e| self.sqlite(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.sqlite(e))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|e| self.sqlite(e))? {
            let index = row.get::<_, i64>(0).map_err(|e| self.sqlite(e))? as u64;
            let status = self.text_at(row, 1)?;
            let status = parse_status(status).ok_or_else(|| StoreError::Corrupt {
                path: self.path.clone(),
                index,
                message: format!("unknown task status `{status}`"),
            })?;
            let attempt = row.get::<_, i64>(2).map_err(|e| self.sqlite(e))? as u32;
            out.push(TaskState::recorded(index, status, attempt));
        }
        Ok(out)
    }

    /// The tasks `sweep status` lists one by one (queued, running, failed; parameters left
    /// empty), in index order, found through their index rather than a scan.
    pub fn listed_tasks(&self) -> Result<Vec<TaskRow>, StoreError> {
        self.read_tasks_where(super::LISTED)
    }

    /// Hands every task's row with its parameters, its current attempt's stderr tail and what
    /// that attempt used to `visit`, in index order, one at a time (`sweep status --json`
    /// streams a million tasks this way in constant memory).
    pub fn visit_task_details(
        &self,
        visit: &mut dyn FnMut(TaskRow, Option<String>, Usage) -> std::io::Result<()>,
    ) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT q.*, a.stderr_tail, a.wall_ms, a.cpu_user_ms, a.cpu_sys_ms, a.max_rss_kb,
                        a.scheduler_state
                 FROM (SELECT {TASK_COLUMNS} FROM tasks) q
                 LEFT JOIN attempts a ON a.idx = q.idx AND a.attempt = q.attempt
                 ORDER BY q.idx"
            ))
            .map_err(|e| self.sqlite(e))?;
        let mut rows = stmt.query(params![true]).map_err(|e| self.sqlite(e))?;
        let ms = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok());
        while let Some(row) = rows.next().map_err(|e| self.sqlite(e))? {
            let task = self.task_row(row)?;
            let sqlite = |e| self.sqlite(e);
            let tail: Option<String> = row.get(13).map_err(sqlite)?;
            let usage = Usage {
                wall_ms: ms(row.get(14).map_err(sqlite)?),
                cpu_user_ms: ms(row.get(15).map_err(sqlite)?),
                cpu_sys_ms: ms(row.get(16).map_err(sqlite)?),
                max_rss_kb: ms(row.get(17).map_err(sqlite)?),
                scheduler: row
                    .get::<_, Option<String>>(18)
                    .map_err(sqlite)?
                    .as_deref()
                    .and_then(hsm_protocol::SchedulerRecordMsg::parse),
            };
            visit(task, tail, usage).map_err(StoreError::Write)?;
        }
        Ok(())
    }

    /// The highest task number (0 for no tasks).
    pub fn last_index(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT COALESCE(MAX(idx), 0) FROM tasks", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n.max(0) as u64)
            .map_err(|e| self.sqlite(e))
    }

    /// Hands the `task_mapping.yaml` fields of the tasks numbered `from..=to` to `visit`, in
    /// order, borrowed from the row being read (no allocation per task: the view of a million
    /// tasks is written at a run's end).
    pub fn visit_mapping_between(
        &self,
        from: u64,
        to: u64,
        visit: &mut dyn FnMut(&MappingRow<'_>) -> std::io::Result<()>,
    ) -> Result<(), StoreError> {
        // Cached: a mapping written ahead of a cancel reads the tasks changed since one by one.
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT task_id, params_hash, status, attempt, source, exit_code, started_at,
                        finished_at, idx
                 FROM tasks WHERE idx BETWEEN ?1 AND ?2 ORDER BY idx",
            )
            .map_err(|e| self.sqlite(e))?;
        let bound = |n: u64| n.min(i64::MAX as u64) as i64;
        let mut rows = stmt
            .query([bound(from), bound(to)])
            .map_err(|e| self.sqlite(e))?;
        while let Some(row) = rows.next().map_err(|e| self.sqlite(e))? {
            let sqlite = |e| self.sqlite(e);
            let text = |i| {
                row.get_ref(i)
                    .and_then(|v| v.as_str_or_null().map_err(Into::into))
                    .map_err(sqlite)
            };
            let mapping = MappingRow {
                index: row.get::<_, i64>(8).map_err(sqlite)? as u64,
                task_id: text(0)?.unwrap_or_default(),
                params_hash: text(1)?.unwrap_or_default(),
                status: text(2)?.unwrap_or_default(),
                attempt: row.get(3).map_err(sqlite)?,
                source: text(4)?,
                exit_code: row.get(5).map_err(sqlite)?,
                started_at: row.get(6).map_err(sqlite)?,
                finished_at: row.get(7).map_err(sqlite)?,
            };
            visit(&mapping).map_err(StoreError::Write)?;
        }
        Ok(())
    }

    /// Every task's row as the report reads it, in index order: no parameters and no hash,
    /// the name and reason of failed tasks only (the report names those), so a million rows
    /// stay small; `params_of` fills in the rows it embeds.
    pub fn report_rows(&self) -> Result<Vec<TaskRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT idx, CASE WHEN status = 'failed' THEN task_id ELSE '' END, '', '',
                        status, attempt, source, exit_code,
                        CASE WHEN status = 'failed' THEN reason END, NULL, started_at,
                        finished_at, NULL
                 FROM tasks ORDER BY idx",
            )
            .map_err(|e| self.sqlite(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.sqlite(e))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|e| self.sqlite(e))? {
            out.push(self.task_row(row)?);
        }
        Ok(out)
    }

    /// Task `index`'s parameters (`None`: no such task).
    pub fn params_of(&self, index: u64) -> Result<Option<Params>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT params FROM tasks WHERE idx = ?1")
            .map_err(|e| self.sqlite(e))?;
        let mut rows = stmt
            .query(params![index as i64])
            .map_err(|e| self.sqlite(e))?;
        match rows.next().map_err(|e| self.sqlite(e))? {
            Some(row) => {
                let text = self.text_at(row, 0)?;
                Ok(Some(self.parse_params(index, text)?))
            }
            None => Ok(None),
        }
    }

    /// The failed tasks' rows with their parameters (`failed_tasks.yaml`), in index order.
    pub fn failed_tasks(&self) -> Result<Vec<TaskRow>, StoreError> {
        self.read_tasks_with("status = 'failed'", params![true])
    }

    /// Tasks `from..=to`'s parameters, in index order.
    pub fn params_between(&self, from: u64, to: u64) -> Result<Vec<(u64, Params)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT idx, params FROM tasks WHERE idx BETWEEN ?1 AND ?2 ORDER BY idx",
            )
            .map_err(|e| self.sqlite(e))?;
        let mut rows = stmt
            .query(params![from as i64, to as i64])
            .map_err(|e| self.sqlite(e))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|e| self.sqlite(e))? {
            let index = row.get::<_, i64>(0).map_err(|e| self.sqlite(e))? as u64;
            let text = self.text_at(row, 1)?;
            out.push((index, self.parse_params(index, text)?));
        }
        Ok(out)
    }

    /// The parameters every task shares, read task by task and stopped as soon as none is
    /// left (`core::errors::constant_params` without holding every task's parameters).
    pub fn constant_params(&self) -> Result<BTreeMap<String, Value>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT idx, params FROM tasks ORDER BY idx")
            .map_err(|e| self.sqlite(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.sqlite(e))?;
        let mut constant: Option<BTreeMap<String, Value>> = None;
        while let Some(row) = rows.next().map_err(|e| self.sqlite(e))? {
            let index = row.get::<_, i64>(0).map_err(|e| self.sqlite(e))? as u64;
            let text = self.text_at(row, 1)?;
            let params = self.parse_params(index, text)?;
            match &mut constant {
                None => constant = Some(params.into_iter().collect()),
                Some(keys) => keys.retain(|k, v| params.get(k) == Some(v)),
            }
            if constant.as_ref().is_some_and(BTreeMap::is_empty) {
                break;
            }
        }
        Ok(constant.unwrap_or_default())
    }

    /// Cancels the tasks `ranges` (inclusive, each task pending and never started in this
    /// run) in one transaction of a statement per range: a cancelled million-task sweep is
    /// written in seconds instead of a row at a time. Each gets its `events` row; tasks not
    /// pending (changed since) are left alone. Returns how many were cancelled. The trigger
    /// that counts status changes is set aside for the statements and the counts moved once
    /// (it would run two updates per task: 40% of the time), all in the one transaction, so
    /// no reader ever sees counts that disagree with the tasks.
    pub fn cancel_unstarted(
        &mut self,
        ranges: &[(u64, u64)],
        reason: &str,
        at: i64,
    ) -> Result<u64, StoreError> {
        let mut n = 0;
        self.in_transaction(|tx| {
            let mut event = tx.prepare_cached(
                "INSERT INTO events (idx, attempt, status, source, at)
                 SELECT idx, attempt, 'cancelled', NULL, ?3 FROM tasks
                 WHERE idx BETWEEN ?1 AND ?2 AND status = 'pending'",
            )?;
            let mut update = tx.prepare_cached(
                "UPDATE tasks SET status = 'cancelled', exit_code = NULL, reason = ?3,
                     started_at = NULL, finished_at = ?4, job_id = NULL, updated_at = ?4
                 WHERE idx BETWEEN ?1 AND ?2 AND status = 'pending'",
            )?;
            tx.execute_batch("DROP TRIGGER task_counts_update")?;
            for &(from, to) in ranges {
                event.execute(params![from as i64, to as i64, at])?;
                n += update.execute(params![from as i64, to as i64, reason, at])? as u64;
            }
            tx.execute(
                "UPDATE task_counts SET n = n + (CASE status WHEN 'cancelled' THEN ?1 ELSE -?1 END)
                 WHERE status IN ('pending', 'cancelled')",
                params![n as i64],
            )?;
            tx.execute_batch(super::schema::count_update_trigger!())?;
            Ok(())
        })?;
        Ok(n)
    }
}

/// What `task_mapping.yaml` shows of a task, borrowed from its row.
#[derive(Debug, Clone, Copy)]
pub struct MappingRow<'a> {
    pub index: u64,
    pub task_id: &'a str,
    pub params_hash: &'a str,
    pub status: &'a str,
    pub attempt: i64,
    pub source: Option<&'a str>,
    pub exit_code: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

fn parse_status(text: &str) -> Option<TaskStatus> {
    TaskStatus::ALL.into_iter().find(|s| s.as_str() == text)
}

/// The parameters of a sweep's tasks, read from `sweep.db` when a task is prepared or launched
/// rather than held for every task (a million tasks' parameters are most of a gigabyte as
/// values): a chunk of `PARAMS_CHUNK` tasks per query, a few chunks kept. Shared by the
/// threads that launch and prepare tasks; each lookup is short.
pub struct TaskParams {
    inner: Mutex<Chunks>,
}

struct Chunks {
    /// A read-only connection of its own (`None` for parameters given in memory).
    store: Option<Store>,
    /// Chunk number (index - 1) / PARAMS_CHUNK → its tasks' parameters, and when last used.
    kept: HashMap<u64, (Vec<Option<Params>>, u64)>,
    clock: u64,
    /// Parameters given in memory (`TaskParams::in_memory`), by index - 1.
    given: Vec<Params>,
}

impl TaskParams {
    /// Reads from the sweep database at `db` through a read-only connection of its own (WAL:
    /// it never blocks the run's writes).
    pub fn open(db: &Path) -> Result<TaskParams, StoreError> {
        let display = db.display().to_string();
        let conn = Connection::open_with_flags(
            db,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| StoreError::Sqlite {
            path: display.clone(),
            source,
        })?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(|source| StoreError::Sqlite {
                path: display.clone(),
                source,
            })?;
        Ok(TaskParams {
            inner: Mutex::new(Chunks {
                store: Some(Store {
                    conn,
                    path: display,
                }),
                kept: HashMap::new(),
                clock: 0,
                given: Vec::new(),
            }),
        })
    }

    /// Parameters given in memory, task `i + 1`'s at `i` (a dry run, tests).
    pub fn in_memory(params: Vec<Params>) -> TaskParams {
        TaskParams {
            inner: Mutex::new(Chunks {
                store: None,
                kept: HashMap::new(),
                clock: 0,
                given: params,
            }),
        }
    }

    /// Task `index`'s parameters.
    pub fn get(&self, index: u64) -> Result<Params, StoreError> {
        let mut chunks = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let chunks = &mut *chunks;
        let missing = || StoreError::Corrupt {
            path: chunks
                .store
                .as_ref()
                .map(|s| s.path.clone())
                .unwrap_or_default(),
            index,
            message: "no such task".into(),
        };
        let Some(slot) = index.checked_sub(1) else {
            return Err(missing());
        };
        let Some(store) = &chunks.store else {
            return chunks.given.get(slot as usize).cloned().ok_or_else(missing);
        };
        let chunk = slot / PARAMS_CHUNK;
        chunks.clock += 1;
        let now = chunks.clock;
        if !chunks.kept.contains_key(&chunk) {
            let from = chunk * PARAMS_CHUNK + 1;
            // Placed by number: a sweep with a gap in its numbers (an imported one) keeps every
            // other task's parameters in their place.
            let mut params: Vec<Option<Params>> = vec![None; PARAMS_CHUNK as usize];
            for (idx, p) in store.params_between(from, from + PARAMS_CHUNK - 1)? {
                params[(idx - from) as usize] = Some(p);
            }
            if chunks.kept.len() >= CHUNKS_KEPT {
                if let Some(oldest) = chunks
                    .kept
                    .iter()
                    .min_by_key(|(_, (_, used))| *used)
                    .map(|(k, _)| *k)
                {
                    chunks.kept.remove(&oldest);
                }
            }
            chunks.kept.insert(chunk, (params, now));
        }
        let missing = missing();
        let (params, used) = chunks.kept.get_mut(&chunk).expect("inserted above");
        *used = now;
        params
            .get((slot % PARAMS_CHUNK) as usize)
            .cloned()
            .flatten()
            .ok_or(missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::state::Change;

    /// Attempt 1 of task `index` on `local` changed to `status` at `at`.
    fn local(index: u64, status: TaskStatus, at: i64) -> Change {
        Change::new(index, 1, status, Some("local".into()), at)
    }

    fn sweep(n: u64) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(
            &dir.path().join("sweep.db"),
            &[],
            3,
            crate::store::tests::new_tasks(n),
        )
        .unwrap();
        (dir, store)
    }

    #[test]
    fn counts_follow_every_change_and_the_bulk_cancel() {
        let (_dir, mut store) = sweep(10);
        assert_eq!(store.counts().unwrap().pending, 10);
        store
            .apply(&[
                local(1, TaskStatus::Queued, 5),
                local(1, TaskStatus::Running, 6),
                local(2, TaskStatus::Queued, 6),
                local(1, TaskStatus::Completed, 7),
            ])
            .unwrap();
        let counts = store.counts().unwrap();
        assert_eq!((counts.pending, counts.queued, counts.completed), (8, 1, 1));
        // Task 2 is queued, not pending: the range leaves it alone.
        let n = store
            .cancel_unstarted(&[(2, 6), (9, 10)], "cancelled by `sweep cancel`", 8)
            .unwrap();
        assert_eq!(n, 6);
        let counts = store.counts().unwrap();
        assert_eq!(
            (
                counts.pending,
                counts.queued,
                counts.cancelled,
                counts.total()
            ),
            (2, 1, 6, 10)
        );
        // What the triggers keep is what a count of the rows says.
        let mut counted = Counts::default();
        for row in store.task_statuses().unwrap() {
            counted.add(row.status);
        }
        assert_eq!(counted, counts);
        // The trigger is back: a later change is counted.
        store.apply(&[local(2, TaskStatus::Running, 9)]).unwrap();
        let counts = store.counts().unwrap();
        assert_eq!((counts.queued, counts.running), (0, 1));
        let row = store.task(9).unwrap().unwrap();
        assert_eq!(row.status, TaskStatus::Cancelled);
        assert_eq!(row.reason.as_deref(), Some("cancelled by `sweep cancel`"));
        assert_eq!(row.finished_at, Some(8));
        let events: i64 = store
            .conn
            .query_row(
                "SELECT count(*) FROM events WHERE status = 'cancelled'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(events, 6);
    }

    #[test]
    fn states_listed_tasks_and_parameters_read_back() {
        let (dir, mut store) = sweep(2500);
        store
            .apply(&[
                local(7, TaskStatus::Running, 5),
                local(8, TaskStatus::Failed, 6),
                local(9, TaskStatus::Completed, 6),
            ])
            .unwrap();
        let states = store.task_states().unwrap();
        assert_eq!(states.len(), 2500);
        assert_eq!(states[6], TaskState::recorded(7, TaskStatus::Running, 1));
        assert_eq!(states[9], TaskState::recorded(10, TaskStatus::Pending, 0));
        // Through the partial index, not a scan of every task.
        let plan: String = store
            .conn
            .query_row(
                &format!(
                    "EXPLAIN QUERY PLAN SELECT idx FROM tasks WHERE {}",
                    super::super::LISTED
                ),
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("tasks_listed"), "{plan}");
        let listed: Vec<u64> = store
            .listed_tasks()
            .unwrap()
            .iter()
            .map(|r| r.index)
            .collect();
        assert_eq!(listed, [7, 8]);
        let all = store.tasks().unwrap();
        let params = TaskParams::open(&dir.path().join("sweep.db")).unwrap();
        // Across chunk boundaries, out of order and back again.
        for index in [1, 1024, 1025, 2500, 3, 2049, 1500, 1] {
            assert_eq!(
                params.get(index).unwrap(),
                all[(index - 1) as usize].params,
                "task {index}"
            );
        }
        assert!(params.get(0).is_err());
        assert!(params.get(2501).is_err());
        // A gap in the numbers leaves the others in place.
        store
            .conn
            .execute("DELETE FROM tasks WHERE idx = 2100", [])
            .unwrap();
        let params = TaskParams::open(&dir.path().join("sweep.db")).unwrap();
        assert!(params.get(2100).is_err());
        assert_eq!(params.get(2101).unwrap(), all[2100].params);
        assert_eq!(
            store.counts().unwrap().total(),
            2499,
            "the delete trigger counts too"
        );
        let given = TaskParams::in_memory(vec![all[0].params.clone()]);
        assert_eq!(given.get(1).unwrap(), all[0].params);
        assert!(given.get(2).is_err());
    }

    #[test]
    fn an_older_database_gains_its_counts_when_opened() {
        let (dir, mut store) = sweep(5);
        store.apply(&[local(2, TaskStatus::Failed, 6)]).unwrap();
        super::super::tests::downgrade(&store, 4);
        drop(store);
        let path = dir.path().join("sweep.db");
        // A reader of the older file counts the rows.
        let old = Store::open_read_only(&path).unwrap();
        assert_eq!(old.counts().unwrap().failed, 1);
        let mut store = Store::open(&path).unwrap();
        assert_eq!(
            store.schema_version().unwrap(),
            super::super::SCHEMA_VERSION
        );
        let counts = store.counts().unwrap();
        assert_eq!((counts.pending, counts.failed), (4, 1));
        store.apply(&[local(3, TaskStatus::Completed, 7)]).unwrap();
        let counts = store.counts().unwrap();
        assert_eq!((counts.pending, counts.completed), (3, 1));
    }

    #[test]
    fn constant_parameters_are_found_without_reading_every_task() {
        let (_dir, store) = sweep(4);
        // new_tasks gives every task its own `i`: nothing is shared.
        assert!(store.constant_params().unwrap().is_empty());
    }
}
