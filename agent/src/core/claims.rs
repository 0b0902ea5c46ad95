//! The core's view of coordinators: which sessions claim which sweeps (and what waits for a
//! claim), releasing what no coordinator confirmed in time, and who owns a sweep.

use super::{AgentCore, Phase, Record};
use crate::ledger::Op;
use crate::owners::{self, Decision};
use hsm_protocol::{display_safe, SweepId, SweepTaskRef};
use std::collections::HashSet;

impl AgentCore {
    /// A coordinator session sent a `Submit` or `Attach` for `sweep` (its first): while it is
    /// connected, that sweep's queued attempts start as slots free up.
    pub fn handle_connect(&mut self, sweep: &SweepId, now_ms: i64) {
        *self.claims.entry(sweep.clone()).or_default() += 1;
        self.unclaimed_since.remove(sweep);
        self.seen(sweep, true, now_ms);
    }

    /// A session that claimed `sweep` ended. With no other session claiming it, its queued
    /// attempts wait to be confirmed: that coordinator may be taking them back to run elsewhere
    /// (it does when it loses the connection), and one that died may never come back for them.
    pub fn handle_disconnect(&mut self, sweep: &SweepId, now_ms: i64) {
        // Retention counts from the end of the last session that claimed it.
        self.seen(sweep, true, now_ms);
        let Some(count) = self.claims.get_mut(sweep) else {
            return;
        };
        *count -= 1;
        if *count > 0 {
            return;
        }
        self.claims.remove(sweep);
        let waiting: Vec<u64> = self
            .queue
            .iter()
            .chain(&self.hpc_queue)
            .copied()
            .filter(|id| {
                self.tasks
                    .get(id)
                    .is_some_and(|r| &r.sweep_id == sweep && r.phase == Phase::Queued)
            })
            .collect();
        if waiting.is_empty() {
            return;
        }
        let held: HashSet<u64> = waiting.iter().copied().collect();
        self.queue.retain(|id| !held.contains(id));
        self.hpc_queue.retain(|id| !held.contains(id));
        tracing::info!(
            sweep = %display_safe(sweep.as_str()),
            tasks = waiting.len(),
            "its coordinator is gone: queued tasks wait until it confirms them"
        );
        self.unconfirmed
            .entry(sweep.clone())
            .or_default()
            .extend(waiting);
        self.unclaimed_since.insert(sweep.clone(), self.mono_ms);
    }

    /// Queues the unconfirmed attempts of every sweep no coordinator has claimed for
    /// `after_ms` (monotonic) by `mono_ms` (`--on-coordinator-lost keep-running`: they run, and
    /// report when a coordinator comes). Returns how many were released.
    pub fn poll_timeout(&mut self, after_ms: u64, mono_ms: u64) -> usize {
        self.set_mono_ms(mono_ms);
        let mut stale: Vec<SweepId> = self
            .unclaimed_since
            .iter()
            .filter(|(_, since)| self.mono_ms.saturating_sub(**since) >= after_ms)
            .map(|(sweep, _)| sweep.clone())
            .collect();
        // Sorted, so the same commands give the same queue order (deterministic replays).
        stale.sort();
        let mut released = 0;
        for sweep in stale {
            self.unclaimed_since.remove(&sweep);
            for id in self.unconfirmed.remove(&sweep).unwrap_or_default() {
                released += usize::from(self.enqueue(id));
            }
        }
        released
    }

    /// Whether coordinator `who` (its fingerprint) may address `sweep`, by the rule of
    /// `owners.rs`; an unowned sweep is bound to it when the rule says so (and the binding
    /// recorded in the ledger). `Bind` tells the session that a sweep the agent already held
    /// became its own, so its earlier events are now this coordinator's to see.
    pub fn sweep_access(&mut self, sweep: &SweepId, who: &str, submit: bool) -> Decision {
        let owner = self.owners.get(sweep).cloned();
        let holds = owner.is_none() && self.tasks.values().any(|r| &r.sweep_id == sweep);
        let decision = owners::decide(owner.as_deref(), who, submit, holds);
        if decision == Decision::Bind {
            self.owners.insert(sweep.clone(), who.into());
            self.log(Op::Owner(sweep.as_str().to_string(), who.to_string()));
            if holds {
                tracing::info!(
                    sweep = %display_safe(sweep.as_str()),
                    coordinator = %who,
                    "a sweep from before owners were kept now belongs to the coordinator that took it up"
                );
            } else {
                return Decision::Allow;
            }
        }
        decision
    }

    /// Attempts of sweeps `who` owns that have not reported `Exited` yet (see
    /// [`AgentCore::held`]).
    pub fn held_by(&self, who: &str) -> Vec<SweepTaskRef> {
        let mut held: Vec<SweepTaskRef> = self
            .tasks
            .values()
            .filter(|r| r.phase != Phase::Finished && self.owned_by(&r.sweep_id, who))
            .map(Record::key)
            .collect();
        held.sort();
        held
    }

    /// Whether `sweep` belongs to coordinator `who` (an unowned one belongs to nobody yet).
    pub(super) fn owned_by(&self, sweep: &SweepId, who: &str) -> bool {
        self.owners.get(sweep).is_some_and(|owner| **owner == *who)
    }
}
