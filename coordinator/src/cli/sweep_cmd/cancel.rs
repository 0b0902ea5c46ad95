//! `sweep cancel`: stops a running sweep through its coordinator, or marks an abandoned one's
//! unfinished tasks cancelled.

use super::*;

pub fn cancel(global: &Global, args: &CancelArgs) -> anyhow::Result<i32> {
    let cfg = load_config(global)?;
    let (sweep_id, paths) = match &args.sweep_id {
        Some(id) => find_sweep(global, &cfg, id)?,
        None => {
            let (id, paths) = latest_sweep(global, &cfg)?;
            note(global, &format!("cancelling the latest sweep, {id}"));
            (id, paths)
        }
    };
    let mut store = open_store(&paths, &sweep_id)?;
    // A coordinator that holds the lock now is asked at once. The lock's holder may also have
    // been another command probing it for an instant, or the run may die before it is done:
    // whatever is left unfinished once no coordinator holds the lock is cancelled here.
    let asked = is_active(&paths);
    if asked && !ask_running(&paths, &store, &sweep_id)? {
        return Ok(EXIT_OK);
    }
    match try_acquire_lock(&paths)? {
        Some(_lock) => {
            remove_cancel_request(&paths)?;
            let n = cancel_abandoned(&mut store, &paths, &sweep_id)?;
            let tasks = if n == 1 { "task" } else { "tasks" };
            if !asked {
                eprintln!("{sweep_id} was not running; marked {n} unfinished {tasks} cancelled");
            } else if n > 0 {
                eprintln!(
                    "{sweep_id}'s coordinator stopped before it was done; marked {n} unfinished {tasks} cancelled"
                );
            }
        }
        // Busy after the run we asked let go: another coordinator took the sweep since (a
        // `sweep complete`), and that one was not asked about.
        None if asked => {}
        // A coordinator started, or was running all along and the lock only looked free.
        None => {
            if !ask_running(&paths, &store, &sweep_id)? {
                return Ok(EXIT_OK);
            }
        }
    }
    let counts = Store::open(&paths.db())?.counts()?;
    println!(
        "{sweep_id}: {} completed, {} failed, {} cancelled, {} pending, of {}",
        counts.completed,
        counts.failed,
        counts.cancelled,
        counts.pending + counts.queued + counts.running,
        counts.total()
    );
    Ok(EXIT_OK)
}

/// Asks the coordinator running the sweep to cancel it and waits for it to let the sweep go.
/// False when it still runs after 10 minutes (said so; it finishes on its own).
fn ask_running(paths: &SweepPaths, store: &Store, sweep_id: &str) -> anyhow::Result<bool> {
    // The file first: the run looks for it every 50 ms, while the row below may wait for the
    // database's write lock, which a busy run holds most of the time. The row stays the
    // durable record of the request.
    std::fs::write(paths.cancel_request(), b"")
        .with_context(|| format!("cannot write {}", paths.cancel_request().display()))?;
    store.request_cancel()?;
    eprintln!("asked the running coordinator to cancel {sweep_id}; waiting for its tasks to stop");
    // The request is recorded; waiting is a courtesy, so a coordinator that takes long to
    // stop (a grace period, a huge sweep) is reported, not treated as a failure.
    let started = std::time::Instant::now();
    let mut next_note = Duration::from_secs(15);
    while is_active(paths) {
        if started.elapsed() > Duration::from_secs(600) {
            eprintln!(
                "the coordinator is still stopping after 10 minutes; it will finish on its own"
            );
            return Ok(false);
        }
        if started.elapsed() > next_note {
            eprintln!("still stopping ({} s)…", started.elapsed().as_secs());
            next_note += Duration::from_secs(15);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Ok(true)
}

/// With the sweep's lock held (no coordinator runs it, none can start): ends what an
/// abandoned run left behind and marks its unfinished tasks cancelled. How many it marked.
fn cancel_abandoned(store: &mut Store, paths: &SweepPaths, sweep_id: &str) -> anyhow::Result<u64> {
    let counts = store.counts()?;
    if counts.pending + counts.queued + counts.running == 0 {
        return Ok(0);
    }
    kill_orphans(sweep_id);
    let now = now_ms();
    let reason = crate::core::failure::StopCause::Cancel.reason();
    // Queued and running tasks one by one (they have attempts and sources); the pending ones,
    // possibly a million, in one statement.
    let changes: Vec<Change> = store
        .listed_tasks()?
        .into_iter()
        .filter(|r| !r.status.is_final())
        .map(|r| Change {
            reason: Some(reason.into()),
            ..Change::new(r.index, r.attempt, TaskStatus::Cancelled, r.source, now)
        })
        .collect();
    store.apply(&changes)?;
    let n_pending = store.cancel_unstarted(&[(1, i64::MAX as u64)], reason, now)?;
    let _ = layout::write_mapping(&paths.mapping(), sweep_id, store);
    Ok(changes.len() as u64 + n_pending)
}
