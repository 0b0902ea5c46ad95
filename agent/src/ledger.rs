//! The agent's durable ledger (`<state_dir>/ledger.db`): every task attempt it accepted, with its
//! phase, exit, result offer and scheduler job, and every event the coordinator has not
//! acknowledged, so an agent restarted after a crash knows everything it held.
//!
//! Why it is shaped like this:
//!
//! * SQLite (bundled, WAL, `synchronous=NORMAL`): a commit is an append to the WAL, so it survives
//!   `kill -9` of the agent at any moment; power loss may roll back the last moments, never leave
//!   a torn file. The coordinator's `sweep.db` uses the same settings.
//! * One writer thread owns the connection. The runner sends it operations in the order it makes
//!   them (under its state lock) and never waits; the writer applies whatever has queued up in one
//!   transaction and then reports how far the ledger is durable. Sessions send an event only
//!   once it is durable: an event the coordinator acknowledges must never be one a restarted agent
//!   forgets, or a later event could reuse its sequence number.
//! * Output events are stored as (stream, offset, length) into the task's log file, which is the
//!   buffer anyway; the bytes are read back on recovery. The ledger stays small however much
//!   a task prints, and the backlog while the coordinator is away is bounded by the runner's
//!   per-task output window.
//! * A failing write (disk full) is logged and the agent keeps running on its memory; what was
//!   not written is what a restart cannot know, and those tasks are then reported lost.
//! * When a coordinator last addressed each sweep is kept in a `seen` table (for
//!   `--ledger-retention`, see `clean.rs`). A table older agents ignore, so no schema bump: a
//!   ledger downgraded and upgraded again only loses those times (they restart from then).

use hsm_protocol::{EventKind, FileOffer, OutcomeMsg, Stream, TemplateMsg, UsageMsg};
use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

/// File name of the ledger inside the agent's state directory.
pub const LEDGER_FILE: &str = "ledger.db";
/// Operations applied per transaction at most (a burst of thousands is split).
const MAX_BATCH: usize = 20_000;
/// Least time between the starts of two transactions. A commit costs the same few locks and
/// WAL writes whether it holds one task's change or twenty, and a busy agent records several
/// changes per task: committing each as it came was a quarter of the agent's CPU at 1,000
/// tasks/s. Sessions wait 5 ms after an event becomes durable before sending anyway
/// (`server::BATCH_DELAY`), so 2 ms more at most is cheap; an idle writer commits at once.
const COMMIT_SPACING: std::time::Duration = std::time::Duration::from_millis(2);
/// 2: the `sweeps` table (each sweep's owner). A version-1 ledger is upgraded in place: its
/// sweeps have no owner and belong to the first coordinator that addresses them.
const SCHEMA_VERSION: i64 = 2;

/// A task attempt as the ledger knows it: sweep, task index, attempt.
pub type Key = (String, u64, u32);

/// Where an attempt is in its life, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredPhase {
    /// Accepted, waiting for a slot (or for the scheduler hand-over).
    Queued = 0,
    /// Being spawned, or handed to the batch scheduler and not started yet.
    Launching = 1,
    Running = 2,
    /// Ended; its remaining output was being read.
    Draining = 3,
    /// `ResultOffer` sent; waiting for the coordinator to take the files.
    Finished = 4,
}

impl StoredPhase {
    fn from_i64(value: i64) -> Option<StoredPhase> {
        Some(match value {
            0 => StoredPhase::Queued,
            1 => StoredPhase::Launching,
            2 => StoredPhase::Running,
            3 => StoredPhase::Draining,
            4 => StoredPhase::Finished,
            _ => return None,
        })
    }
}

/// A batch-scheduler element running a task, as kept (defined with the scheduler backend).
pub use hsm_exec::scheduler::StoredElement;

/// An event as stored: output as a reference into the task's log file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredKind {
    Event(EventKind),
    Output {
        stream: Stream,
        offset: u64,
        len: u64,
    },
}

/// One accepted attempt, as recovered.
#[derive(Debug, Clone)]
pub struct StoredTask {
    pub key: Key,
    pub dir: PathBuf,
    /// Shared by every task of a submission (serialised per task, never cloned).
    pub template: Arc<TemplateMsg>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub phase: StoredPhase,
    pub cancel_requested: bool,
    pub next_seq: u64,
    /// Bytes of stdout and stderr already turned into events.
    pub output: [u64; 2],
    pub exit: Option<(OutcomeMsg, i64)>,
    /// What the attempt used, stored with its exit.
    pub usage: Option<UsageMsg>,
    pub offered: Vec<FileOffer>,
    pub results_done: bool,
    pub element: Option<StoredElement>,
}

/// One unacknowledged event, as recovered (in the order they were appended).
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub key: Key,
    pub seq: u64,
    pub kind: StoredKind,
}

/// What the ledger held when the agent started.
#[derive(Debug, Default)]
pub struct Recovered {
    pub tasks: Vec<StoredTask>,
    pub events: Vec<StoredEvent>,
    /// Each sweep's owner: the fingerprint of the coordinator identity that submitted it.
    pub owners: Vec<(String, String)>,
    /// When a coordinator last addressed each sweep (milliseconds since the Unix epoch).
    pub seen: Vec<(String, i64)>,
}

/// A change to record.
pub enum Op {
    Accept(Box<StoredTask>),
    Phase(Key, StoredPhase),
    Cancel(Key),
    Exit(Key, OutcomeMsg, i64, Option<UsageMsg>),
    /// The result offer; the phase becomes `Finished`.
    Offered(Key, Vec<FileOffer>),
    ResultsDone(Key),
    Element(Key, StoredElement),
    /// An event with ledger position `gen` (reported durable once committed), and how much of
    /// the task's stdout/stderr has been turned into events with it.
    Event {
        gen: u64,
        key: Key,
        seq: u64,
        kind: StoredKind,
        output: [u64; 2],
    },
    Ack(Key, u64),
    Forget(Key),
    /// A sweep now belongs to a coordinator identity (sweep id, fingerprint); never changes
    /// (until the sweep is forgotten).
    Owner(String, String),
    /// A coordinator addressed the sweep at this time (ms since the Unix epoch).
    Seen(String, i64),
    /// Everything about a sweep: its attempts, events, owner and time seen (`agent clean`,
    /// `--ledger-retention`). What came before it in the batch about that sweep is moot.
    ForgetSweep(String),
    /// Answered once everything sent before it is committed.
    Barrier(mpsc::Sender<()>),
}

/// Called by the writer thread after each commit with the first ledger position not yet
/// durable.
pub type DurableFn = Box<dyn Fn(u64) + Send>;

/// Handle on the writer thread; cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    ops: mpsc::Sender<Op>,
    path: Arc<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
#[error("ledger {path}: {source}")]
pub struct LedgerError {
    path: String,
    source: rusqlite::Error,
}

fn blob<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing plain data to a Vec cannot fail.
    rmp_serde::to_vec_named(value).unwrap_or_default()
}

fn unblob<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Option<T> {
    rmp_serde::from_slice(bytes).ok()
}

impl Ledger {
    /// Opens (or creates) the ledger in `state_dir`, reads what it holds, and starts the writer.
    /// `durable` is told how far the ledger is committed after every transaction.
    pub fn open(state_dir: &Path, durable: DurableFn) -> Result<(Ledger, Recovered), LedgerError> {
        let path = state_dir.join(LEDGER_FILE);
        let err = |source| LedgerError {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(&path).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .and_then(|_| conn.pragma_update(None, "synchronous", "NORMAL"))
            .and_then(|_| {
                conn.execute_batch(
                    "CREATE TABLE IF NOT EXISTS tasks (
                        sweep_id TEXT NOT NULL, idx INTEGER NOT NULL, attempt INTEGER NOT NULL,
                        dir TEXT NOT NULL, template BLOB NOT NULL, args BLOB NOT NULL,
                        env BLOB NOT NULL, phase INTEGER NOT NULL, cancel INTEGER NOT NULL,
                        next_seq INTEGER NOT NULL, out_stdout INTEGER NOT NULL,
                        out_stderr INTEGER NOT NULL, exit BLOB, offered BLOB,
                        results_done INTEGER NOT NULL, element BLOB,
                        PRIMARY KEY (sweep_id, idx, attempt));
                     CREATE TABLE IF NOT EXISTS events (
                        id INTEGER PRIMARY KEY, sweep_id TEXT NOT NULL, idx INTEGER NOT NULL,
                        attempt INTEGER NOT NULL, seq INTEGER NOT NULL, kind BLOB NOT NULL,
                        UNIQUE (sweep_id, idx, attempt, seq));
                     CREATE TABLE IF NOT EXISTS sweeps (
                        sweep_id TEXT PRIMARY KEY, owner TEXT NOT NULL);
                     CREATE TABLE IF NOT EXISTS seen (
                        sweep_id TEXT PRIMARY KEY, at_ms INTEGER NOT NULL);",
                )
            })
            .map_err(err)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(err)?;
        if version > SCHEMA_VERSION {
            return Err(err(rusqlite::Error::ToSqlConversionFailure(
                format!(
                    "schema version {version} is newer than this hsm-agent knows \
                     ({SCHEMA_VERSION}): upgrade hsm-agent"
                )
                .into(),
            )));
        }
        // The `usage` column (what an attempt used, stored with its exit) came later without a
        // version bump: older agents name their columns and never see it.
        let has_usage: bool = conn
            .query_row(
                "SELECT COUNT(*) FROM pragma_table_info('tasks') WHERE name = 'usage'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(err)?;
        if !has_usage {
            conn.execute_batch("ALTER TABLE tasks ADD COLUMN usage BLOB")
                .map_err(err)?;
        }
        // Version 1 gained the `sweeps` table above; nothing else changed.
        if version < SCHEMA_VERSION {
            conn.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(err)?;
        }
        // Events whose task row is missing (a batch that failed to commit, disk full) can never
        // be reported or forgotten: dropped.
        conn.execute(
            "DELETE FROM events WHERE NOT EXISTS (SELECT 1 FROM tasks t WHERE t.sweep_id = \
             events.sweep_id AND t.idx = events.idx AND t.attempt = events.attempt)",
            [],
        )
        .map_err(err)?;
        let recovered = read_all(&conn).map_err(err)?;
        let (ops, rx) = mpsc::channel();
        let thread_path = path.clone();
        std::thread::Builder::new()
            .name("hsm-ledger".into())
            .spawn(move || writer(conn, rx, durable, &thread_path))
            .map_err(|e| LedgerError {
                path: path.display().to_string(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        Ok((
            Ledger {
                ops,
                path: Arc::new(path),
            },
            recovered,
        ))
    }

    /// Queues a change (never blocks).
    pub fn record(&self, op: Op) {
        if self.ops.send(op).is_err() {
            tracing::error!(path = %self.path.display(), "ledger writer is gone; change not recorded");
        }
    }

    /// Waits until everything recorded so far is committed.
    pub fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        self.record(Op::Barrier(tx));
        let _ = rx.recv();
    }
}

fn read_all(conn: &Connection) -> rusqlite::Result<Recovered> {
    let mut recovered = Recovered::default();
    let mut stmt = conn.prepare(
        "SELECT sweep_id, idx, attempt, dir, template, args, env, phase, cancel, next_seq,
                out_stdout, out_stderr, exit, offered, results_done, element, usage
         FROM tasks ORDER BY rowid",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            (
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, i64>(2)? as u32,
            ),
            r.get::<_, String>(3)?,
            r.get::<_, Vec<u8>>(4)?,
            r.get::<_, Vec<u8>>(5)?,
            r.get::<_, Vec<u8>>(6)?,
            r.get::<_, i64>(7)?,
            r.get::<_, bool>(8)?,
            r.get::<_, i64>(9)? as u64,
            [r.get::<_, i64>(10)? as u64, r.get::<_, i64>(11)? as u64],
            r.get::<_, Option<Vec<u8>>>(12)?,
            r.get::<_, Option<Vec<u8>>>(13)?,
            r.get::<_, bool>(14)?,
            r.get::<_, Option<Vec<u8>>>(15)?,
            r.get::<_, Option<Vec<u8>>>(16)?,
        ))
    })?;
    for row in rows {
        let (
            key,
            dir,
            template,
            args,
            env,
            phase,
            cancel,
            next_seq,
            output,
            exit,
            offered,
            done,
            element,
            usage,
        ) = row?;
        // A row this build cannot read (written by another version, damaged) is skipped and
        // said: its task is then unknown here, which the coordinator treats as lost.
        let parsed = (|| {
            Some(StoredTask {
                key: key.clone(),
                dir: PathBuf::from(dir),
                template: Arc::new(unblob(&template)?),
                args: unblob(&args)?,
                env: unblob(&env)?,
                phase: StoredPhase::from_i64(phase)?,
                cancel_requested: cancel,
                next_seq,
                output,
                exit: match exit {
                    Some(bytes) => Some(unblob(&bytes)?),
                    None => None,
                },
                // Only informative: an unreadable one is dropped, not the task.
                usage: usage.and_then(|bytes| unblob(&bytes)),
                offered: match offered {
                    Some(bytes) => unblob(&bytes)?,
                    None => Vec::new(),
                },
                results_done: done,
                element: match element {
                    Some(bytes) => Some(unblob(&bytes)?),
                    None => None,
                },
            })
        })();
        match parsed {
            Some(task) => recovered.tasks.push(task),
            None => tracing::warn!(?key, "unreadable task in the ledger; skipped"),
        }
    }
    let mut stmt =
        conn.prepare("SELECT sweep_id, idx, attempt, seq, kind FROM events ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            (
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, i64>(2)? as u32,
            ),
            r.get::<_, i64>(3)? as u64,
            r.get::<_, Vec<u8>>(4)?,
        ))
    })?;
    for row in rows {
        let (key, seq, kind) = row?;
        match unblob(&kind) {
            Some(kind) => recovered.events.push(StoredEvent { key, seq, kind }),
            None => tracing::warn!(?key, seq, "unreadable event in the ledger; skipped"),
        }
    }
    let mut stmt = conn.prepare("SELECT sweep_id, owner FROM sweeps")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    for row in rows {
        recovered.owners.push(row?);
    }
    let mut stmt = conn.prepare("SELECT sweep_id, at_ms FROM seen")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        recovered.seen.push(row?);
    }
    Ok(recovered)
}

fn writer(mut conn: Connection, ops: mpsc::Receiver<Op>, durable: DurableFn, path: &Path) {
    let mut failed_before = false;
    let mut last_start: Option<std::time::Instant> = None;
    while let Ok(first) = ops.recv() {
        if let Some(wait) = last_start
            .map(|at| (at + COMMIT_SPACING).saturating_duration_since(std::time::Instant::now()))
            .filter(|wait| !wait.is_zero())
        {
            std::thread::sleep(wait);
        }
        last_start = Some(std::time::Instant::now());
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match ops.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let mut max_gen = None;
        let mut barriers = Vec::new();
        let result = (|| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            apply_batch(&tx, batch, &mut max_gen, &mut barriers)?;
            tx.commit()
        })();
        match result {
            Ok(()) => failed_before = false,
            Err(e) => {
                if !failed_before {
                    tracing::error!(path = %path.display(), error = %e, "cannot write the ledger; carrying on from memory (a restart now would lose track of these tasks)");
                }
                failed_before = true;
            }
        }
        if let Some(gen) = max_gen {
            durable(gen + 1);
        }
        for done in barriers {
            let _ = done.send(());
        }
    }
}

/// What one batch changes in a task's row, merged (phases only move forward, so the highest
/// wins; the latest exit, offer and element win).
#[derive(Default)]
struct RowUpdate {
    phase: i64,
    cancel: bool,
    exit: Option<Vec<u8>>,
    usage: Option<Vec<u8>>,
    /// `Some(None)`: the offer was cleared (results done).
    offered: Option<Option<Vec<u8>>>,
    results_done: bool,
    element: Option<Vec<u8>>,
    next_seq: i64,
    output: [i64; 2],
}

/// Applies a batch as few statements as it takes: everything about an attempt forgotten in the
/// same batch is skipped, a task's row is updated once with the merged changes, and
/// acknowledgements delete each attempt's events up to the highest acknowledged (events are
/// acknowledged in order). On a fast machine a task's whole life may fit in two or three
/// batches: this halves the statements per task.
fn apply_batch(
    tx: &rusqlite::Transaction<'_>,
    batch: Vec<Op>,
    max_gen: &mut Option<u64>,
    barriers: &mut Vec<mpsc::Sender<()>>,
) -> rusqlite::Result<()> {
    const WHERE: &str = "WHERE sweep_id = ?1 AND idx = ?2 AND attempt = ?3";
    let k = |key: &Key| (key.0.clone(), key.1 as i64, key.2 as i64);
    // The last Forget of each key: what came before it in the batch is moot, what came after
    // (the same attempt accepted again) is applied after the deletes, which go first.
    let mut last_forget: std::collections::HashMap<Key, usize> = Default::default();
    for (at, op) in batch.iter().enumerate() {
        if let Op::Forget(key) = op {
            last_forget.insert(key.clone(), at);
        }
    }
    let mut last_sweep_forget: std::collections::HashMap<String, usize> = Default::default();
    for (at, op) in batch.iter().enumerate() {
        if let Op::ForgetSweep(sweep) = op {
            last_sweep_forget.insert(sweep.clone(), at);
        }
    }
    for sweep in last_sweep_forget.keys() {
        for table in ["events", "tasks", "sweeps", "seen"] {
            tx.prepare_cached(&format!("DELETE FROM {table} WHERE sweep_id = ?1"))?
                .execute(params![sweep])?;
        }
    }
    for key in last_forget.keys() {
        let (s, i, a) = k(key);
        tx.prepare_cached(&format!("DELETE FROM events {WHERE}"))?
            .execute(params![s, i, a])?;
        tx.prepare_cached(&format!("DELETE FROM tasks {WHERE}"))?
            .execute(params![s, i, a])?;
    }
    let sweep_moot = |sweep: &str, at: usize| last_sweep_forget.get(sweep).is_some_and(|&f| at < f);
    let moot = |key: &Key, at: usize| {
        last_forget.get(key).is_some_and(|&f| at < f) || sweep_moot(&key.0, at)
    };
    let mut updates: std::collections::HashMap<Key, RowUpdate> = Default::default();
    let mut acks: std::collections::HashMap<Key, u64> = Default::default();
    for (at, op) in batch.into_iter().enumerate() {
        match op {
            Op::Barrier(done) => barriers.push(done),
            Op::Event {
                gen,
                key,
                seq,
                kind,
                output,
            } => {
                *max_gen = Some(gen);
                if moot(&key, at) {
                    continue;
                }
                let (s, i, a) = k(&key);
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO events (sweep_id, idx, attempt, seq, kind)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![s, i, a, seq as i64, blob(&kind)])?;
                let u = updates.entry(key).or_default();
                u.next_seq = u.next_seq.max(seq as i64 + 1);
                u.output = [
                    u.output[0].max(output[0] as i64),
                    u.output[1].max(output[1] as i64),
                ];
            }
            Op::Accept(task) => {
                if moot(&task.key, at) {
                    continue;
                }
                let (s, i, a) = k(&task.key);
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO tasks (sweep_id, idx, attempt, dir, template, args, env,
                        phase, cancel, next_seq, out_stdout, out_stderr, exit, offered,
                        results_done, element)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, NULL, NULL, 0, NULL)",
                )?
                .execute(params![
                    s,
                    i,
                    a,
                    task.dir.to_string_lossy(),
                    blob(&*task.template),
                    blob(&task.args),
                    blob(&task.env),
                    task.phase as i64,
                    task.cancel_requested,
                    task.next_seq as i64,
                    task.output[0] as i64,
                    task.output[1] as i64,
                ])?;
            }
            Op::Phase(key, _)
            | Op::Cancel(key)
            | Op::Exit(key, ..)
            | Op::Offered(key, _)
            | Op::ResultsDone(key)
            | Op::Element(key, _)
            | Op::Ack(key, _)
                if moot(&key, at) => {}
            Op::Phase(key, phase) => {
                let u = updates.entry(key).or_default();
                u.phase = u.phase.max(phase as i64);
            }
            Op::Cancel(key) => updates.entry(key).or_default().cancel = true,
            Op::Exit(key, outcome, at_ms, usage) => {
                let u = updates.entry(key).or_default();
                u.exit = Some(blob(&(outcome, at_ms)));
                u.usage = usage.map(|usage| blob(&usage));
                u.phase = u.phase.max(StoredPhase::Draining as i64);
            }
            Op::Offered(key, files) => {
                let u = updates.entry(key).or_default();
                u.offered = Some(Some(blob(&files)));
                u.phase = u.phase.max(StoredPhase::Finished as i64);
            }
            Op::ResultsDone(key) => {
                let u = updates.entry(key).or_default();
                u.results_done = true;
                u.offered = Some(None);
            }
            Op::Element(key, element) => {
                updates.entry(key).or_default().element = Some(blob(&element))
            }
            Op::Ack(key, seq) => {
                let at = acks.entry(key).or_default();
                *at = (*at).max(seq);
            }
            Op::Forget(_) | Op::ForgetSweep(_) => {}
            Op::Owner(sweep, _) | Op::Seen(sweep, _) if sweep_moot(&sweep, at) => {}
            Op::Seen(sweep, at_ms) => {
                tx.prepare_cached(
                    "INSERT INTO seen (sweep_id, at_ms) VALUES (?1, ?2)
                     ON CONFLICT (sweep_id) DO UPDATE SET at_ms = MAX(at_ms, excluded.at_ms)",
                )?
                .execute(params![sweep, at_ms])?;
            }
            Op::Owner(sweep, owner) => {
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO sweeps (sweep_id, owner) VALUES (?1, ?2)",
                )?
                .execute(params![sweep, owner])?;
            }
        }
    }
    for (key, u) in updates {
        let (s, i, a) = k(&key);
        let (set_offered, offered) = match u.offered {
            Some(offered) => (true, offered),
            None => (false, None),
        };
        tx.prepare_cached(&format!(
            "UPDATE tasks SET phase = MAX(phase, ?4), cancel = MAX(cancel, ?5),
                exit = COALESCE(?6, exit), usage = COALESCE(?14, usage),
                offered = CASE WHEN ?7 THEN ?8 ELSE offered END,
                results_done = MAX(results_done, ?9), element = COALESCE(?10, element),
                next_seq = MAX(next_seq, ?11), out_stdout = MAX(out_stdout, ?12),
                out_stderr = MAX(out_stderr, ?13) {WHERE}"
        ))?
        .execute(params![
            s,
            i,
            a,
            u.phase,
            u.cancel,
            u.exit,
            set_offered,
            offered,
            u.results_done,
            u.element,
            u.next_seq,
            u.output[0],
            u.output[1],
            u.usage,
        ])?;
    }
    for (key, seq) in acks {
        let (s, i, a) = k(&key);
        tx.prepare_cached(&format!("DELETE FROM events {WHERE} AND seq <= ?4"))?
            .execute(params![s, i, a, seq as i64])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ledger_is_among_the_files_kept_under_strict_permissions() {
        // `hsm_transport::strict` names it without depending on this crate.
        assert!(crate::strict::GUARDED_FILES.contains(&LEDGER_FILE));
    }
    use std::sync::atomic::{AtomicU64, Ordering};

    fn template() -> TemplateMsg {
        TemplateMsg {
            id: 0,
            argv_prefix: vec!["python3".into()],
            env: vec![("A".into(), "1".into())],
            cwd: "/p".into(),
            timeout_ms: Some(5000),
            kill_grace_ms: 2000,
            hpc: None,
            compact: false,
        }
    }

    fn task(index: u64) -> StoredTask {
        StoredTask {
            key: ("s1".into(), index, 1),
            dir: format!("/w/s1/tasks/task_{index:03}").into(),
            template: Arc::new(template()),
            args: vec!["x=1".into()],
            env: vec![],
            phase: StoredPhase::Queued,
            cancel_requested: false,
            next_seq: 1,
            output: [0, 0],
            exit: None,
            usage: None,
            offered: vec![],
            results_done: false,
            element: None,
        }
    }

    fn usage() -> UsageMsg {
        UsageMsg {
            wall_ms: Some(1_500),
            cpu_user_ms: Some(1_200),
            cpu_sys_ms: None,
            max_rss_kb: Some(51_200),
            scheduler: None,
        }
    }

    /// The tasks table as versions 1 and 2 wrote it (no `usage` column).
    const TASKS_BEFORE_USAGE: &str = "CREATE TABLE tasks (
        sweep_id TEXT NOT NULL, idx INTEGER NOT NULL, attempt INTEGER NOT NULL,
        dir TEXT NOT NULL, template BLOB NOT NULL, args BLOB NOT NULL,
        env BLOB NOT NULL, phase INTEGER NOT NULL, cancel INTEGER NOT NULL,
        next_seq INTEGER NOT NULL, out_stdout INTEGER NOT NULL,
        out_stderr INTEGER NOT NULL, exit BLOB, offered BLOB,
        results_done INTEGER NOT NULL, element BLOB,
        PRIMARY KEY (sweep_id, idx, attempt));";

    /// A ledger written before the `usage` column gains it when opened, and keeps its tasks.
    #[test]
    fn a_ledger_without_the_usage_column_gains_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join(LEDGER_FILE)).unwrap();
            conn.execute_batch(&format!("{TASKS_BEFORE_USAGE} PRAGMA user_version = 2;"))
                .unwrap();
        }
        let (ledger, recovered, _) = open(dir.path());
        assert!(recovered.tasks.is_empty());
        ledger.record(Op::Accept(Box::new(task(1))));
        let key = ("s1".to_string(), 1u64, 1u32);
        ledger.record(Op::Exit(
            key,
            OutcomeMsg::Exited { code: 0 },
            5,
            Some(usage()),
        ));
        ledger.flush();
        drop(ledger);
        let (_, recovered, _) = open(dir.path());
        assert_eq!(recovered.tasks[0].usage, Some(usage()));
    }

    fn open(dir: &Path) -> (Ledger, Recovered, Arc<AtomicU64>) {
        let durable = Arc::new(AtomicU64::new(0));
        let d = Arc::clone(&durable);
        let (ledger, recovered) =
            Ledger::open(dir, Box::new(move |gen| d.store(gen, Ordering::SeqCst))).unwrap();
        (ledger, recovered, durable)
    }

    #[test]
    fn sweep_owners_survive_a_reopen_and_never_change() {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, recovered, _) = open(dir.path());
        assert!(recovered.owners.is_empty());
        ledger.record(Op::Owner("s1".into(), "sha256:aa".into()));
        ledger.record(Op::Owner("s1".into(), "sha256:bb".into()));
        ledger.record(Op::Owner("s2".into(), "sha256:bb".into()));
        ledger.flush();
        drop(ledger);
        let (_ledger, recovered, _) = open(dir.path());
        let mut owners = recovered.owners;
        owners.sort();
        assert_eq!(
            owners,
            vec![
                ("s1".to_string(), "sha256:aa".to_string()),
                ("s2".to_string(), "sha256:bb".to_string())
            ]
        );
    }

    #[test]
    fn a_version_1_ledger_is_upgraded_in_place_and_keeps_its_tasks() {
        let dir = tempfile::tempdir().unwrap();
        {
            // The schema as version 1 wrote it, with one accepted task.
            let conn = Connection::open(dir.path().join(LEDGER_FILE)).unwrap();
            conn.execute_batch(&format!(
                "{TASKS_BEFORE_USAGE}
                 CREATE TABLE events (
                    id INTEGER PRIMARY KEY, sweep_id TEXT NOT NULL, idx INTEGER NOT NULL,
                    attempt INTEGER NOT NULL, seq INTEGER NOT NULL, kind BLOB NOT NULL,
                    UNIQUE (sweep_id, idx, attempt, seq));
                 PRAGMA user_version = 1;"
            ))
            .unwrap();
            conn.execute(
                "INSERT INTO tasks VALUES ('s1', 3, 1, '/w/s1/tasks/task_003', ?1, ?2, ?3, 0, 0,
                    1, 0, 0, NULL, NULL, 0, NULL)",
                params![
                    blob(&template()),
                    blob(&vec!["x=1"]),
                    blob(&Vec::<(String, String)>::new())
                ],
            )
            .unwrap();
        }
        let (ledger, recovered, _) = open(dir.path());
        assert_eq!(recovered.tasks.len(), 1);
        assert_eq!(recovered.tasks[0].key, ("s1".to_string(), 3, 1));
        assert!(
            recovered.owners.is_empty(),
            "a version-1 sweep has no owner"
        );
        ledger.record(Op::Owner("s1".into(), "sha256:aa".into()));
        ledger.flush();
        drop(ledger);
        let (_ledger, recovered, _) = open(dir.path());
        assert_eq!(recovered.owners, vec![("s1".into(), "sha256:aa".into())]);
        let conn = Connection::open(dir.path().join(LEDGER_FILE)).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn what_was_recorded_is_recovered_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, recovered, durable) = open(dir.path());
        assert!(recovered.tasks.is_empty() && recovered.events.is_empty());
        for i in 1..=3 {
            ledger.record(Op::Accept(Box::new(task(i))));
        }
        let k = |i: u64| ("s1".to_string(), i, 1u32);
        ledger.record(Op::Phase(k(1), StoredPhase::Running));
        ledger.record(Op::Event {
            gen: 0,
            key: k(1),
            seq: 1,
            kind: StoredKind::Event(EventKind::Started { pid: 7, at_ms: 1 }),
            output: [0, 0],
        });
        ledger.record(Op::Event {
            gen: 1,
            key: k(1),
            seq: 2,
            kind: StoredKind::Output {
                stream: Stream::Stdout,
                offset: 0,
                len: 6,
            },
            output: [6, 0],
        });
        ledger.record(Op::Ack(k(1), 1));
        ledger.record(Op::Exit(
            k(2),
            OutcomeMsg::Exited { code: 3 },
            99,
            Some(usage()),
        ));
        ledger.record(Op::Offered(
            k(2),
            vec![FileOffer {
                path: "results/r.txt".into(),
                size: 4,
                sha256: "ab".into(),
            }],
        ));
        ledger.record(Op::Element(
            k(3),
            StoredElement {
                scheduler: "slurm".into(),
                job: "40".into(),
                index: Some(2),
                name: None,
                packed: true,
            },
        ));
        ledger.record(Op::Cancel(k(3)));
        ledger.flush();
        assert_eq!(durable.load(Ordering::SeqCst), 2, "both events committed");
        drop(ledger);

        let (ledger, recovered, _) = open(dir.path());
        assert_eq!(recovered.tasks.len(), 3);
        let t1 = &recovered.tasks[0];
        assert_eq!(
            (t1.phase, t1.next_seq, t1.output),
            (StoredPhase::Running, 3, [6, 0])
        );
        assert_eq!(*t1.template, template());
        assert_eq!(recovered.events.len(), 1, "the acknowledged event is gone");
        assert_eq!(recovered.events[0].seq, 2);
        let t2 = &recovered.tasks[1];
        assert_eq!(t2.phase, StoredPhase::Finished);
        assert_eq!(t2.exit, Some((OutcomeMsg::Exited { code: 3 }, 99)));
        assert_eq!(t2.usage, Some(usage()), "what it used survives a restart");
        assert_eq!(t2.offered.len(), 1);
        let t3 = &recovered.tasks[2];
        assert!(t3.cancel_requested);
        assert_eq!(t3.element.as_ref().map(|e| e.index), Some(Some(2)));
        ledger.record(Op::ResultsDone(k(2)));
        ledger.record(Op::Forget(k(1)));
        ledger.flush();
        drop(ledger);
        let (_, recovered, _) = open(dir.path());
        assert_eq!(recovered.tasks.len(), 2);
        assert!(recovered.events.is_empty(), "forgotten with its task");
        assert!(recovered.tasks[0].results_done && recovered.tasks[0].offered.is_empty());
    }

    #[test]
    fn an_attempt_forgotten_in_its_batch_costs_nothing_and_still_counts_as_durable() {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, _, durable) = open(dir.path());
        let k = ("s1".to_string(), 9u64, 1u32);
        // Queued back to back before the writer wakes: usually one batch (the test holds
        // either way, the end state is the same).
        ledger.record(Op::Accept(Box::new(task(9))));
        ledger.record(Op::Phase(k.clone(), StoredPhase::Running));
        ledger.record(Op::Event {
            gen: 41,
            key: k.clone(),
            seq: 1,
            kind: StoredKind::Event(EventKind::Started { pid: 1, at_ms: 1 }),
            output: [0, 0],
        });
        ledger.record(Op::Ack(k.clone(), 1));
        ledger.record(Op::Offered(k.clone(), vec![]));
        ledger.record(Op::Forget(k));
        ledger.record(Op::Accept(Box::new(task(10))));
        ledger.flush();
        assert_eq!(durable.load(Ordering::SeqCst), 42);
        drop(ledger);
        let (_, recovered, _) = open(dir.path());
        let keys: Vec<u64> = recovered.tasks.iter().map(|t| t.key.1).collect();
        assert_eq!(keys, [10]);
        assert!(recovered.events.is_empty());
    }

    #[test]
    fn an_attempt_accepted_again_after_its_forget_in_one_batch_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, _, _) = open(dir.path());
        let k = ("s1".to_string(), 4u64, 1u32);
        ledger.record(Op::Accept(Box::new(task(4))));
        ledger.flush();
        ledger.record(Op::Forget(k.clone()));
        ledger.record(Op::Accept(Box::new(task(4))));
        ledger.record(Op::Phase(k.clone(), StoredPhase::Running));
        ledger.flush();
        drop(ledger);
        let (_, recovered, _) = open(dir.path());
        assert_eq!(recovered.tasks.len(), 1);
        assert_eq!(recovered.tasks[0].phase, StoredPhase::Running);
    }

    #[test]
    fn a_forgotten_sweep_leaves_nothing_and_a_later_submission_of_it_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, _, _) = open(dir.path());
        let other = StoredTask {
            key: ("s2".into(), 1, 1),
            ..task(1)
        };
        ledger.record(Op::Accept(Box::new(task(1))));
        ledger.record(Op::Accept(Box::new(other)));
        ledger.record(Op::Owner("s1".into(), "sha256:aa".into()));
        ledger.record(Op::Owner("s2".into(), "sha256:aa".into()));
        ledger.record(Op::Seen("s1".into(), 5));
        ledger.record(Op::Seen("s1".into(), 3));
        ledger.record(Op::Seen("s2".into(), 7));
        ledger.record(Op::Event {
            gen: 0,
            key: ("s1".into(), 1, 1),
            seq: 1,
            kind: StoredKind::Event(EventKind::Started { pid: 1, at_ms: 1 }),
            output: [0, 0],
        });
        ledger.flush();
        drop(ledger);
        let (ledger, recovered, _) = open(dir.path());
        let mut seen = recovered.seen.clone();
        seen.sort();
        assert_eq!(
            seen,
            [("s1".into(), 5), ("s2".into(), 7)],
            "the latest time kept"
        );
        // In one batch: what came before the forget is moot, what came after is kept.
        ledger.record(Op::Phase(("s1".into(), 1, 1), StoredPhase::Running));
        ledger.record(Op::ForgetSweep("s1".into()));
        ledger.record(Op::Accept(Box::new(task(2))));
        ledger.record(Op::Owner("s1".into(), "sha256:bb".into()));
        ledger.flush();
        drop(ledger);
        let (_, recovered, _) = open(dir.path());
        let keys: Vec<Key> = recovered.tasks.iter().map(|t| t.key.clone()).collect();
        assert_eq!(keys, [("s2".into(), 1, 1), ("s1".into(), 2, 1)]);
        assert!(recovered.events.is_empty());
        let mut owners = recovered.owners;
        owners.sort();
        assert_eq!(
            owners,
            [
                ("s1".to_string(), "sha256:bb".to_string()),
                ("s2".to_string(), "sha256:aa".to_string())
            ]
        );
        assert_eq!(recovered.seen, [("s2".into(), 7)]);
    }
}
