//! Runs one sweep run to its end: starts the actor system (store actor, sweep actor, sources),
//! forwards Ctrl-C, and returns the summary. The shell around the actors.

use crate::actors::store::StoreActor;
use crate::actors::sweep::{Interrupt, RunContext, RunSummary, SweepActor};
use crate::core::state::SweepCore;
use crate::progress::Progress;
use crate::store::Store;
use actix::{Actor, SyncArbiter};
use std::sync::{Arc, Mutex};

/// Blocks until the run ends. A second Ctrl-C exits the process at once with code 130 (the
/// state written so far is consistent; `sweep complete` picks up from there).
pub fn execute(
    run: RunContext,
    core: SweepCore,
    store: Store,
    progress: Progress,
) -> anyhow::Result<RunSummary> {
    // The run's own log, for as long as it runs (`run_log`).
    let _engine_log = match crate::run_log::start_engine_log(&run.paths.engine_log()) {
        Ok(guard) => Some(guard),
        Err(e) => {
            tracing::warn!(path = %run.paths.engine_log().display(), error = %e, "cannot write the engine log");
            None
        }
    };
    let sources: Vec<String> = run
        .sources
        .iter()
        .map(|s| format!("{} ({} slots)", s.name, s.slots))
        .collect();
    tracing::info!(
        sweep_id = %run.sweep_id,
        tasks = core.counts().total(),
        sources = %sources.join(", "),
        version = env!("CARGO_PKG_VERSION"),
        "run started"
    );
    let summary = run_actors(run, core, store, progress);
    match &summary {
        Ok(s) => tracing::info!(
            completed = s.counts.completed,
            failed = s.counts.failed,
            cancelled = s.counts.cancelled,
            left = s.counts.pending + s.counts.queued + s.counts.running,
            interrupted = s.interrupted,
            cancel_requested = s.cancelled,
            stopped = ?s.stopped.as_ref().map(|s| &s.message),
            store_failure = ?s.failure,
            elapsed_s = s.elapsed.as_secs_f64(),
            "run ended"
        ),
        Err(e) => tracing::info!(error = %e, "run ended without a summary"),
    }
    summary
}

fn run_actors(
    run: RunContext,
    core: SweepCore,
    store: Store,
    progress: Progress,
) -> anyhow::Result<RunSummary> {
    let system = actix_rt::System::new();
    system.block_on(async move {
        let paths = run.paths.clone();
        let sweep_id = run.sweep_id.clone();
        let store_slot = Arc::new(Mutex::new(Some(store)));
        let store = SyncArbiter::start(1, move || {
            let store = store_slot.lock().ok().and_then(|mut slot| slot.take());
            let store = match store {
                Some(store) => Ok(store),
                // Only if the arbiter restarts its actor: open the database again.
                None => Store::open(&paths.db()).map_err(|e| e.to_string()),
            };
            StoreActor::new(store, paths.clone(), sweep_id.clone())
        });
        let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
        let mode = progress.mode();
        let sweep = SweepActor::new(core, run, store, progress, done_tx).start();
        // SIGTERM (a shutdown, `kill`) is treated like Ctrl-C: stop, keep the state.
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let mut interrupts = 0;
        loop {
            let terminate = async {
                match sigterm.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                summary = &mut done_rx => {
                    return summary.map_err(|_| anyhow::anyhow!("the sweep actor stopped without a summary"));
                }
                signal = tokio::signal::ctrl_c() => {
                    if signal.is_err() {
                        // No signal handling available: just wait for the run.
                        return (&mut done_rx).await.map_err(|_| anyhow::anyhow!("the sweep actor stopped without a summary"));
                    }
                    interrupts += 1;
                }
                _ = terminate => interrupts += 1,
            }
            if interrupts == 1 {
                sweep.do_send(Interrupt);
            } else {
                // Exiting without this would leave the status line (and the `^C` the terminal
                // echoed onto it) on the screen.
                crate::progress::clear_status_line(mode);
                eprintln!("hsm-coordinator: interrupted again, exiting now; `sweep complete` finishes the sweep later");
                std::process::exit(130);
            }
        }
    })
}
