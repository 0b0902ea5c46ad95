//! `sweep.db`'s schema: the tables of a new sweep (`SCHEMA`, then `SCHEMA_5`), what each upgrade
//! adds (`SCHEMA_4`, `SCHEMA_5`), and the task counts with the triggers that keep them
//! (`FILL_COUNTS`).

/// The metrics tables, in a new sweep's schema and added by the upgrade to schema 4 alike (a
/// macro, so both schemas stay one string each).
macro_rules! metrics_tables {
    () => {
        "
CREATE TABLE metrics (
    idx     INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    name    TEXT NOT NULL,
    step    INTEGER,
    value   REAL NOT NULL,
    at      INTEGER NOT NULL
);
CREATE INDEX metrics_by_task ON metrics (idx, attempt, name);
CREATE TABLE task_metrics (
    idx     INTEGER NOT NULL,
    name    TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    step    INTEGER,
    value   REAL NOT NULL,
    PRIMARY KEY (idx, name)
);
"
    };
}

pub(super) const SCHEMA: &str = concat!(
    "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tasks (
    idx         INTEGER PRIMARY KEY,
    task_id     TEXT NOT NULL,
    params_hash TEXT NOT NULL,
    params      TEXT NOT NULL,
    status      TEXT NOT NULL,
    attempt     INTEGER NOT NULL DEFAULT 0,
    source      TEXT,
    exit_code   INTEGER,
    reason      TEXT,
    pid         INTEGER,
    started_at  INTEGER,
    finished_at INTEGER,
    updated_at  INTEGER,
    job_id      TEXT
);
CREATE TABLE attempts (
    idx         INTEGER NOT NULL REFERENCES tasks (idx),
    attempt     INTEGER NOT NULL,
    source      TEXT,
    status      TEXT NOT NULL,
    exit_code   INTEGER,
    reason      TEXT,
    pid         INTEGER,
    queued_at   INTEGER,
    started_at  INTEGER,
    finished_at INTEGER,
    job_id      TEXT,
    -- The last lines of a failed attempt's stderr (at most 20 lines, 4 KiB).
    stderr_tail TEXT,
    wall_ms     INTEGER,
    cpu_user_ms INTEGER,
    cpu_sys_ms  INTEGER,
    max_rss_kb  INTEGER,
    -- When the attempt's metrics were read from its output (NULL: not yet).
    metrics_at  INTEGER,
    PRIMARY KEY (idx, attempt)
);
CREATE TABLE events (
    id      INTEGER PRIMARY KEY,
    idx     INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    status  TEXT NOT NULL,
    source  TEXT,
    at      INTEGER NOT NULL
);
CREATE TABLE control (key TEXT PRIMARY KEY, value TEXT NOT NULL);
",
    metrics_tables!()
);

/// Schema 5's `tasks` has no index but its key (`task_id` is `task_` and the key, and nothing
/// looks a task up by its hash): a million rows go in at append speed. Sweeps created before
/// keep their `task_id` and `tasks_by_hash` indexes.
///
/// Added by schema 5, for sweeps of a million tasks: the number of tasks in each status, kept
/// by triggers in the transaction that changes a task (so `sweep status` reads six rows, not a
/// million), and an index of the tasks in the few statuses listed one by one (queued, running,
/// failed). Its condition is spelled with `OR`, not `IN (…)`: SQLite evaluates it on every
/// insert and update of a task, and an `IN` list builds a temporary B-tree each time (it made
/// creating a million tasks twice as slow). `LISTED` is the same condition, which a query must
/// repeat word for word for SQLite to use the index. `task_counts` is filled once the tasks exist (`FILL_COUNTS`), before the triggers.
/// Added by schema 6: how a batch scheduler recorded each attempt's job (`FAILED 3:0`).
pub(super) const SCHEMA_6: &str = "ALTER TABLE attempts ADD COLUMN scheduler_state TEXT;";

pub(super) const SCHEMA_5: &str = "
CREATE TABLE task_counts (status TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX tasks_listed ON tasks (status)
    WHERE status = 'queued' OR status = 'running' OR status = 'failed';
";

/// The partial index `tasks_listed`'s condition.
pub(super) const LISTED: &str = "status = 'queued' OR status = 'running' OR status = 'failed'";

/// The trigger that keeps `task_counts` when a task's status changes (a macro, so that
/// `FILL_COUNTS` and `Store::cancel_unstarted`, which sets it aside, share one text).
macro_rules! count_update_trigger {
    () => {
        "
CREATE TRIGGER task_counts_update AFTER UPDATE OF status ON tasks
    WHEN OLD.status IS NOT NEW.status BEGIN
    UPDATE task_counts SET n = n - 1 WHERE status = OLD.status;
    UPDATE task_counts SET n = n + 1 WHERE status = NEW.status;
END;
"
    };
}
pub(crate) use count_update_trigger;

/// `task_counts` from the tasks as they are, then the triggers that keep it.
pub(super) const FILL_COUNTS: &str = concat!(
    "
INSERT INTO task_counts (status, n)
    SELECT s.status, (SELECT count(*) FROM tasks t WHERE t.status = s.status)
    FROM (SELECT 'pending' AS status UNION ALL SELECT 'queued' UNION ALL SELECT 'running'
          UNION ALL SELECT 'completed' UNION ALL SELECT 'failed' UNION ALL SELECT 'cancelled') s;
CREATE TRIGGER task_counts_insert AFTER INSERT ON tasks BEGIN
    UPDATE task_counts SET n = n + 1 WHERE status = NEW.status;
END;
",
    count_update_trigger!(),
    "
CREATE TRIGGER task_counts_delete AFTER DELETE ON tasks BEGIN
    UPDATE task_counts SET n = n - 1 WHERE status = OLD.status;
END;
"
);

/// Added by schema 4: what each attempt used, and the metrics. `metrics` holds every kept point
/// of every attempt (a bounded series per name); `task_metrics` the last value per name of the
/// attempt that reported last, which the results table and the report read.
pub(super) const SCHEMA_4: &str = concat!(
    "
ALTER TABLE attempts ADD COLUMN wall_ms INTEGER;
ALTER TABLE attempts ADD COLUMN cpu_user_ms INTEGER;
ALTER TABLE attempts ADD COLUMN cpu_sys_ms INTEGER;
ALTER TABLE attempts ADD COLUMN max_rss_kb INTEGER;
ALTER TABLE attempts ADD COLUMN metrics_at INTEGER;
",
    metrics_tables!()
);
