//! The core's side of removing sweeps (`crate::clean`): the facts about a sweep, when its
//! coordinator last addressed it, and forgetting it whole.

use super::{AgentCore, Phase};
use crate::clean::SweepFacts;
use crate::ledger::Op;
use hsm_protocol::SweepId;
use std::collections::HashSet;

/// A coordinator's request for a sweep less than this long after the last one recorded is not
/// written to the ledger again (the time is for a retention of days).
const SEEN_GRAIN_MS: i64 = 60_000;

impl AgentCore {
    /// What the core and its ledger know of `sweep`.
    pub fn facts(&self, sweep: &SweepId) -> SweepFacts {
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
                facts.last_exit_ms = facts.last_exit_ms.max(Some(*at));
            }
        }
        facts
    }

    /// Every sweep the core or its ledger knows.
    pub fn known_sweeps(&self) -> Vec<SweepId> {
        let mut sweeps: Vec<SweepId> = self
            .owners
            .keys()
            .chain(self.seen.keys())
            .chain(self.tasks.values().map(|r| &r.sweep_id))
            .cloned()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        sweeps.sort();
        sweeps
    }

    /// A coordinator addressed `sweep` at `now_ms` (kept for `--ledger-retention`); `persist`
    /// writes it to the ledger even when one was written a moment ago (a session's end).
    pub fn seen(&mut self, sweep: &SweepId, persist: bool, now_ms: i64) {
        // A request about a sweep nobody submitted here (a cancel of an unknown id) is no
        // activity of a sweep.
        if !self.owners.contains_key(sweep) {
            return;
        }
        self.seen.insert(sweep.clone(), now_ms);
        let written = self.seen_written.get(sweep).copied();
        if persist || written.is_none_or(|at| now_ms - at >= SEEN_GRAIN_MS) {
            self.seen_written.insert(sweep.clone(), now_ms);
            self.log(Op::Seen(sweep.as_str().to_string(), now_ms));
        }
    }

    /// After a restart: a sweep the ledger knows with no time recorded (a ledger from before
    /// times were kept) counts from `now_ms`.
    pub fn date_unseen_sweeps(&mut self, now_ms: i64) {
        for sweep in self.known_sweeps() {
            if !self.seen.contains_key(&sweep) {
                self.seen.insert(sweep.clone(), now_ms);
                self.seen_written.insert(sweep.clone(), now_ms);
                self.log(Op::Seen(sweep.as_str().to_string(), now_ms));
            }
        }
    }

    /// Removes every trace of `sweep` (whose attempts have all ended) and records it.
    pub fn drop_sweep(&mut self, sweep: &SweepId) {
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
