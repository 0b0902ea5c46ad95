//! The runner's side of removing sweeps (`crate::clean`): the facts about a sweep, when its
//! coordinator last addressed it, and forgetting it whole, from the core under the runner's lock
//! (`core/sweeps.rs`).

use super::Runner;
use crate::clean::{Keep, SweepFacts};
use hsm_protocol::now_ms;
use hsm_protocol::SweepId;
use std::path::{Path, PathBuf};

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
        self.lock().known_sweeps()
    }

    /// A coordinator addressed `sweep` now (kept for `--ledger-retention`); `persist` writes it
    /// to the ledger even when one was written a moment ago (a session's end).
    pub fn seen(&self, sweep: &SweepId, persist: bool) {
        let now = now_ms();
        self.lock().seen(sweep, persist, now);
    }

    /// Forgets `sweep` whole when `check` (given the facts under the lock) allows it: its
    /// attempts (all ended: `check` refuses live ones), their events, its owner and times, in
    /// memory and in the ledger; its directory is moved aside under the lock (see `clean.rs`:
    /// the one rename done under it, so a submission of that sweep id right after starts
    /// afresh). Returns where it was moved, to be deleted by the caller (`None`: it had none).
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
}
