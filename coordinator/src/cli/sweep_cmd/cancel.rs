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
    // A coordinator that holds the lock now is asked at once; only when none seems to is the
    // lock taken (with its retries, in case another command was probing it for an instant).
    let lock = if is_active(&paths) {
        None
    } else {
        try_acquire_lock(&paths)?
    };
    if let Some(_lock) = lock {
        // No coordinator runs the sweep, and none can start while we hold the lock: end what
        // an abandoned run left behind and record the cancellation ourselves.
        kill_orphans(&sweep_id);
        let now = now_ms();
        let reason = crate::core::failure::StopCause::Cancel.reason();
        // Queued and running tasks one by one (they have attempts and sources); the pending
        // ones, possibly a million, in one statement.
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
        let n = changes.len() as u64 + n_pending;
        let _ = layout::write_mapping(&paths.mapping(), &sweep_id, &store);
        eprintln!(
            "{sweep_id} was not running; marked {n} unfinished task{} cancelled",
            if n == 1 { "" } else { "s" }
        );
    } else {
        // The file first: the run looks for it every 50 ms, while the row below may wait for
        // the database's write lock, which a busy run holds most of the time. The row stays
        // the durable record of the request.
        std::fs::write(paths.cancel_request(), b"")
            .with_context(|| format!("cannot write {}", paths.cancel_request().display()))?;
        store.request_cancel()?;
        eprintln!(
            "asked the running coordinator to cancel {sweep_id}; waiting for its tasks to stop"
        );
        // The request is recorded; waiting is a courtesy, so a coordinator that takes long to
        // stop (a grace period, a huge sweep) is reported, not treated as a failure.
        let started = std::time::Instant::now();
        let mut next_note = Duration::from_secs(15);
        while is_active(&paths) {
            if started.elapsed() > Duration::from_secs(600) {
                eprintln!(
                    "the coordinator is still stopping after 10 minutes; it will finish on its own"
                );
                return Ok(EXIT_OK);
            }
            if started.elapsed() > next_note {
                eprintln!("still stopping ({} s)…", started.elapsed().as_secs());
                next_note += Duration::from_secs(15);
            }
            std::thread::sleep(Duration::from_millis(25));
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
