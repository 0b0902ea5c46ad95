//! Work stealing: an idle slot takes over an attempt waiting unstarted at another source (behind
//! an agent's busy slots, or pending in a batch queue past `steal_after`); the attempt moves only
//! once its holder confirms it dropped it.

use super::{pace, Command, SourceClass, Steal, SweepCore};

impl SweepCore {
    /// Nothing is left to hand out: each idle slot of a process source (local or agent) asks
    /// for a task waiting unstarted elsewhere — behind an agent's busy slots, or pending in a
    /// batch queue for `steal_after`. The task moves only once its holder confirms it dropped it.
    pub(super) fn steal_for_idle(&mut self, now: i64, commands: &mut Vec<Command>) {
        for thief in 0..self.sources.len() {
            if self.sources[thief].class == SourceClass::Batch {
                continue; // its free slots are queue places, not idle workers
            }
            while self.sources[thief].free() > 0 {
                let Some((victim, index)) = self.steal_candidate(thief, now) else {
                    break;
                };
                let attempt = self.tasks[(index - 1) as usize].attempt;
                self.stealing.insert(
                    index,
                    Steal {
                        attempt,
                        victim,
                        thief,
                    },
                );
                self.sources[thief].incoming += 1;
                self.sources[victim].outgoing += 1;
                commands.push(Command::Steal {
                    index,
                    attempt,
                    source: victim,
                });
            }
        }
    }

    /// A task waiting unstarted at another source that `thief` may take: from the agent with the
    /// most surplus (its last-handed task, the one it would start last), else the batch job
    /// pending longest past `steal_after`.
    fn steal_candidate(&self, thief: usize, now: i64) -> Option<(usize, u64)> {
        let mean = self.durations.mean_ms();
        let not_taken = |index: &u64| {
            !self.stealing.contains_key(index)
                && !self.reclaiming.contains_key(index)
                && !self.moved.contains(index)
        };
        let from_agent = (0..self.sources.len())
            .filter(|&v| v != thief)
            .filter(|&v| {
                let s = &self.sources[v];
                s.healthy
                    && s.class == SourceClass::Agent
                    && s.surplus() > 0
                    && pace::worth_moving(
                        mean,
                        self.longest_running_ms(v, now),
                        s.latency_ms + self.sources[thief].latency_ms,
                    )
            })
            .max_by_key(|&v| self.sources[v].surplus())
            .and_then(|v| {
                let index = self.sources[v]
                    .waiting
                    .keys()
                    .rev()
                    .find(|i| not_taken(i))?;
                Some((v, *index))
            });
        if from_agent.is_some() {
            return from_agent;
        }
        let after = self.steal_after_ms?;
        (0..self.sources.len())
            .filter(|&v| v != thief)
            .filter(|&v| self.sources[v].healthy && self.sources[v].class == SourceClass::Batch)
            .flat_map(|v| {
                self.sources[v]
                    .waiting
                    .iter()
                    .filter(|(i, &since)| not_taken(i) && now.saturating_sub(since) >= after)
                    .map(move |(&i, &since)| (since, v, i))
            })
            .min()
            .map(|(_, v, i)| (v, i))
    }

    /// How long the longest-running task at `source` has run (ms).
    fn longest_running_ms(&self, source: usize, now: i64) -> Option<i64> {
        self.started_at
            .iter()
            .filter(|(&index, _)| self.tasks[(index - 1) as usize].source == Some(source))
            .map(|(_, &started)| now.saturating_sub(started))
            .max()
    }

    /// The answer to a `Steal` came (the attempt started, ended or was lost): the thief's
    /// reserved slot is free again. Returns the steal, if there was one for this attempt.
    pub(super) fn settle_steal(&mut self, index: u64, attempt: u32) -> Option<Steal> {
        let steal = *self.stealing.get(&index)?;
        if steal.attempt != attempt {
            return None;
        }
        self.stealing.remove(&index);
        let thief = &mut self.sources[steal.thief];
        thief.incoming = thief.incoming.saturating_sub(1);
        let victim = &mut self.sources[steal.victim];
        victim.outgoing = victim.outgoing.saturating_sub(1);
        Some(steal)
    }

    /// Forgets every unanswered steal and drain (the run stops, so nothing moves any more).
    pub(super) fn forget_steals(&mut self) {
        self.stealing.clear();
        self.reclaiming.clear();
        self.moved_to.clear();
        for s in &mut self.sources {
            s.incoming = 0;
            s.outgoing = 0;
        }
    }
}
