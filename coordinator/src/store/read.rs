//! Reading a sweep from another terminal (`sweep list`, `sweep errors`, `sweep logs`): a
//! read-only connection, counts per status, the sources and time span of its attempts, its
//! failures with their stderr tails (one task's row is `Store::task`, beside the other task
//! reads).

use super::{Store, StoreError, SCHEMA_VERSION};
use crate::core::errors::Failure;
use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::time::Duration;

/// When a sweep's attempts ran: the first start and the last end (Unix ms).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub first_start: Option<i64>,
    pub last_end: Option<i64>,
}

impl Store {
    /// Opens a sweep's database without writing to it (a run may be writing it: WAL readers
    /// never block it). A database of an older schema is opened as it is: `schema_version`
    /// tells, and what needs newer columns opens it with `open` (which upgrades it).
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        let display = path.display().to_string();
        let sqlite = |source| StoreError::Sqlite {
            path: display.clone(),
            source,
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sqlite)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(sqlite)?;
        let store = Store {
            conn,
            path: display,
        };
        match store.schema_version()? {
            0 => Err(StoreError::Incomplete { path: store.path }),
            v if v > SCHEMA_VERSION => Err(StoreError::Version {
                path: store.path,
                found: v,
            }),
            _ => Ok(store),
        }
    }

    /// `open_read_only` for a reader of this schema's columns (`sweep watch`): as it must not
    /// write, an older schema is refused (`Older`, with how to upgrade it) rather than upgraded.
    pub fn open_read_only_current(path: &Path) -> Result<Store, StoreError> {
        let store = Store::open_read_only(path)?;
        match store.schema_version()? {
            SCHEMA_VERSION => Ok(store),
            found => Err(StoreError::Older {
                path: store.path,
                found,
            }),
        }
    }

    /// The schema version the file was written with (0: never fully created).
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(|e| self.sqlite(e))
    }

    /// The sources any attempt was handed to, by name (any schema version).
    pub fn sources_used(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT DISTINCT source FROM attempts WHERE source IS NOT NULL ORDER BY source",
            )
            .map_err(|e| self.sqlite(e))?;
        let rows = stmt
            .query_map([], |r| r.get(0))
            .map_err(|e| self.sqlite(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sqlite(e))
    }

    /// The first start and last end of the sweep's attempts (any schema version).
    pub fn span(&self) -> Result<Span, StoreError> {
        self.conn
            .query_row(
                "SELECT min(started_at), max(finished_at) FROM attempts",
                [],
                |r| {
                    Ok(Span {
                        first_start: r.get(0)?,
                        last_end: r.get(1)?,
                    })
                },
            )
            .map_err(|e| self.sqlite(e))
    }

    /// Every task whose current attempt failed, with that attempt's stderr tail, in task order
    /// (schema 3 and later).
    pub fn failures(&self) -> Result<Vec<Failure>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT t.idx, t.task_id, t.reason, t.exit_code, a.stderr_tail, t.params
                 FROM tasks t LEFT JOIN attempts a ON a.idx = t.idx AND a.attempt = t.attempt
                 WHERE t.status = 'failed' ORDER BY t.idx",
            )
            .map_err(|e| self.sqlite(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })
            .map_err(|e| self.sqlite(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (index, task, reason, exit_code, tail, params) = row.map_err(|e| self.sqlite(e))?;
            out.push(Failure {
                index: index as u64,
                task,
                reason,
                exit_code: exit_code.map(|c| c as i32),
                tail,
                params: self.parse_params(index as u64, &params)?,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::state::{Change, TaskStatus};
    use crate::core::value::Value;

    fn change(index: u64, status: TaskStatus, at: i64) -> Change {
        Change::new(index, 1, status, Some("local".into()), at)
    }

    #[test]
    fn a_sweep_reads_back_through_a_read_only_connection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sweep.db");
        let mut store = Store::create(&path, &[], 3, crate::store::tests::new_tasks(3)).unwrap();
        store
            .apply(&[
                change(1, TaskStatus::Running, 10),
                change(1, TaskStatus::Completed, 20),
                change(2, TaskStatus::Running, 12),
                Change {
                    exit_code: Some(1),
                    reason: Some("exit code 1: ValueError: x".into()),
                    stderr_tail: Some("ValueError: x".into()),
                    ..change(2, TaskStatus::Failed, 30)
                },
            ])
            .unwrap();
        let reader = Store::open_read_only(&path).unwrap();
        let counts = reader.counts().unwrap();
        assert_eq!(
            (
                counts.completed,
                counts.failed,
                counts.pending,
                counts.total()
            ),
            (1, 1, 1, 3)
        );
        assert_eq!(reader.sources_used().unwrap(), ["local"]);
        assert_eq!(
            reader.span().unwrap(),
            Span {
                first_start: Some(10),
                last_end: Some(30)
            }
        );
        let failures = reader.failures().unwrap();
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].task, "task_002");
        assert_eq!(failures[0].tail.as_deref(), Some("ValueError: x"));
        assert_eq!(failures[0].params["seed"], Value::Int(2));
        assert!(reader.constant_params().unwrap().is_empty());
        assert_eq!(reader.task(2).unwrap().unwrap().attempt, 1);
        assert!(reader.task(9).unwrap().is_none());
        assert_eq!(reader.schema_version().unwrap(), SCHEMA_VERSION);
        // It cannot write.
        assert!(reader.request_cancel().is_err());
        // The writer still can while it is open.
        store.apply(&[change(3, TaskStatus::Running, 40)]).unwrap();
        assert_eq!(reader.task(3).unwrap().unwrap().status, TaskStatus::Running);
        // An older sweep is read as it is, not upgraded.
        store.conn.pragma_update(None, "user_version", 3).unwrap();
        drop(store);
        let old = Store::open_read_only(&path).unwrap();
        assert_eq!(old.schema_version().unwrap(), 3);
        // Counted from its tasks (as schema 3 it has no counts table to trust).
        assert_eq!(old.counts().unwrap().total(), 3);
        drop(old);
        let version: i64 = Connection::open(&path)
            .unwrap()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, 3);
    }
}
