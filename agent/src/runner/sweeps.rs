//! The runner's side of removing sweeps (`crate::clean`): the facts about a sweep, when its
//! coordinator last addressed it, and forgetting it whole, all under the runner's lock.

use super::{epoch_ms, Phase, Runner, State};
use crate::clean::{Keep, SweepFacts};
use crate::ledger::Op;
use hsm_protocol::SweepId;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A coordinator's request for a sweep less than this long after the last one recorded is not
/// written to the ledger again (the time is for a retention of days).
const SEEN_GRAIN_MS: i64 = 60_000;

impl Runner {
    /// Where task directories live (`<work_dir>/<sweep>/tasks/…`).
    pub fn work_dir(&self) -> &Path {
        &self.shared.work_dir
    }

    /// What the runner and its ledger know of `sweep`.
    pub fn sweep_facts(&self, sweep: &SweepId) -> SweepFacts {
        self.lock().facts(sweep)
    }

    /// Every sweep the runner or its ledger knows.
    pub fn known_sweeps(&self) -> Vec<SweepId> {
        let state = self.lock();
        let mut sweeps: Vec<SweepId> = state
            .owners
            .keys()
            .chain(state.seen.keys())
            .chain(state.tasks.values().map(|r| &r.sweep_id))
            .cloned()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        sweeps.sort();
        sweeps
    }

    /// A coordinator addressed `sweep` now (kept for `--ledger-retention`); `persist` writes it
    /// to the ledger even when one was written a moment ago (a session's end).
    pub fn seen(&self, sweep: &SweepId, persist: bool) {
        let now = epoch_ms(SystemTime::now());
        let mut state = self.lock();
        // A request about a sweep nobody submitted here (a cancel of an unknown id) is no
        // activity of a sweep.
        if !state.owners.contains_key(sweep) {
            return;
        }
        state.seen.insert(sweep.clone(), now);
        let written = state.seen_written.get(sweep).copied();
        if persist || written.is_none_or(|at| now - at >= SEEN_GRAIN_MS) {
            state.seen_written.insert(sweep.clone(), now);
            state.log(Op::Seen(sweep.as_str().to_string(), now));
        }
    }

    /// Forgets `sweep` whole when `check` (given the facts under the lock) allows it: its
    /// attempts (all ended: `check` refuses live ones), their events, its owner and times, in
    /// memory and in the ledger; its directory is moved aside under the lock (see `clean.rs`).
    /// Returns where it was moved, to be deleted by the caller (`None`: it had none).
    pub fn forget_sweep(
        &self,
        sweep: &SweepId,
        check: impl FnOnce(&SweepFacts) -> Result<(), Keep>,
    ) -> Result<Option<PathBuf>, Keep> {
        let mut state = self.lock();
        let facts = state.facts(sweep);
        check(&facts)?;
        if facts.live > 0 {
            // Never forget a task that runs, whatever the check says.
            return Err(Keep::Live(facts.live));
        }
        state.drop_sweep(sweep);
        let dir = self.shared.work_dir.join(sweep.as_str());
        let moved = self
            .shared
            .work_dir
            .join(crate::clean::removing_name(sweep.as_str()));
        match std::fs::rename(&dir, &moved) {
            Ok(()) => Ok(Some(moved)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot move a forgotten sweep's directory aside");
                Ok(None)
            }
        }
    }

    /// After a restart: a sweep the ledger knows with no time recorded (a ledger from before
    /// times were kept) counts from now.
    pub(super) fn date_unseen_sweeps(&self) {
        let now = epoch_ms(SystemTime::now());
        for sweep in self.known_sweeps() {
            let mut state = self.lock();
            if !state.seen.contains_key(&sweep) {
                state.seen.insert(sweep.clone(), now);
                state.seen_written.insert(sweep.clone(), now);
                state.log(Op::Seen(sweep.as_str().to_string(), now));
            }
        }
    }
}

impl State {
    fn facts(&self, sweep: &SweepId) -> SweepFacts {
        let mut facts = SweepFacts {
            owner: self.owners.get(sweep).map(|o| o.to_string()),
            claimed: self.claims.contains_key(sweep),
            seen_ms: self.seen.get(sweep).copied(),
            ..SweepFacts::default()
        };
        for record in self.tasks.values().filter(|r| &r.sweep_id == sweep) {
            if record.phase == Phase::Finished {
                facts.unreported += 1;
            } else {
                facts.live += 1;
            }
            if let Some((_, at)) = &record.exit {
                facts.last_exit_ms = facts.last_exit_ms.max(Some(epoch_ms(*at)));
            }
        }
        facts
    }

    /// Removes every trace of `sweep` (whose attempts have all ended) and records it.
    fn drop_sweep(&mut self, sweep: &SweepId) {
        let ids: HashSet<u64> = self
            .tasks
            .iter()
            .filter(|(_, r)| &r.sweep_id == sweep)
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            if let Some(record) = self.tasks.remove(id) {
                self.by_ref.remove(&record.key());
            }
        }
        self.active.retain(|_, id| !ids.contains(id));
        self.parked.retain(|_, id| !ids.contains(id));
        self.queue.retain(|id| !ids.contains(id));
        self.hpc_queue.retain(|id| !ids.contains(id));
        let gens: Vec<u64> = self
            .ledger
            .iter()
            .filter(|(_, entry)| ids.contains(&entry.task))
            .map(|(gen, _)| *gen)
            .collect();
        for gen in gens {
            if let Some(entry) = self.ledger.remove(&gen) {
                self.ledger_index.remove(&entry.event.event_ref());
            }
        }
        self.unconfirmed.remove(sweep);
        self.unclaimed_since.remove(sweep);
        self.owners.remove(sweep);
        self.seen.remove(sweep);
        self.seen_written.remove(sweep);
        self.log(Op::ForgetSweep(sweep.as_str().to_string()));
    }
}
