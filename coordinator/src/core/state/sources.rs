//! What the sources' state does to a run: usable or not, their measured parallelism and latency,
//! a drain (unstarted attempts asked back) and a loss (their attempts run again elsewhere).

use super::pace;
use super::{Command, SourceClass, SweepCore, TaskStatus};

impl SweepCore {
    /// A source became usable or unusable (an agent connected or was lost). An unusable source
    /// gets no new work; `slots`, when given, replaces its slot count.
    pub fn handle_source_status(&mut self, source: usize, healthy: bool, slots: Option<usize>) {
        if let Some(s) = self.sources.get_mut(source) {
            s.healthy = healthy;
            if let Some(slots) = slots {
                s.slots = slots.max(1);
            }
        }
    }

    /// The source said how many tasks it runs at once (it may be fewer than its configured
    /// slots: the rest of what it is handed waits there, and may move to an idle source).
    pub fn handle_source_parallel(&mut self, source: usize, parallel: usize) {
        if let Some(s) = self.sources.get_mut(source) {
            s.parallel = Some(parallel.max(1));
        }
    }

    /// The network round trip to a remote source was measured (`rtt_ms`): its dispatch latency
    /// is that plus the fixed overhead of event and submit batching.
    pub fn handle_source_latency(&mut self, source: usize, rtt_ms: u32) {
        if let Some(s) = self.sources.get_mut(source) {
            if s.class != SourceClass::Local {
                s.latency_ms = rtt_ms.saturating_add(pace::REMOTE_OVERHEAD_MS);
            }
        }
    }

    /// The source cannot take work now (its heartbeat stopped, its disk is low): it gets no new
    /// work and the attempts handed to it that have not started are asked back. Each stays the
    /// source's until it answers (nobody can tell whether one started meanwhile, its report
    /// lost with the connection): one it dropped runs elsewhere as a new attempt (not counted
    /// against retries), one it started stays. Running attempts stay: they finish there, or are
    /// lost with the source.
    pub fn handle_source_drain(&mut self, source: usize, why: &str) -> Vec<Command> {
        let Some(name) = self.sources.get(source).map(|s| s.name.clone()) else {
            return Vec::new();
        };
        self.sources[source].healthy = false;
        let queued: Vec<(u64, u32)> = self
            .tasks
            .iter()
            .filter(|t| t.source == Some(source) && t.status == TaskStatus::Queued)
            .map(|t| (t.index, t.attempt))
            .filter(|key| !self.taken_up.contains(key))
            // Already asked back (for an idle source, or by an earlier drain): that answer
            // moves it.
            .filter(|(index, _)| {
                !self.stealing.contains_key(index) && !self.reclaiming.contains_key(index)
            })
            .collect();
        let mut commands = Vec::with_capacity(queued.len());
        for (index, attempt) in queued {
            let reason = format!("attempt {attempt} taken back from {name}: {why}");
            self.reclaiming.insert(index, (attempt, reason));
            commands.push(Command::Withdraw {
                index,
                attempt,
                source,
            });
        }
        commands
    }

    /// The attempt a drain asked back ended or was lost: why it was asked back, if it was.
    pub(super) fn settle_reclaim(&mut self, index: u64, attempt: u32) -> Option<String> {
        match self.reclaiming.get(&index) {
            Some((a, _)) if *a == attempt => self.reclaiming.remove(&index).map(|(_, why)| why),
            _ => None,
        }
    }

    /// The source is gone (unreachable past its grace period). Its queued and running attempts
    /// are lost: the tasks go back to the front of the queue and run again elsewhere as new
    /// attempts, without using up their retries (the loss was not the task's fault). A report
    /// from a lost attempt arriving later is stale and ignored like any other.
    pub fn handle_source_lost(&mut self, source: usize, now: i64) -> usize {
        let Some(name) = self.sources.get(source).map(|s| s.name.clone()) else {
            return 0;
        };
        self.sources[source].healthy = false;
        self.sources[source].running = 0;
        let lost: Vec<(u64, u32)> = self
            .tasks
            .iter()
            .filter(|t| {
                t.source == Some(source)
                    && matches!(t.status, TaskStatus::Queued | TaskStatus::Running)
            })
            .map(|t| (t.index, t.attempt))
            .collect();
        for &(index, attempt) in lost.iter().rev() {
            self.settle_steal(index, attempt);
            self.settle_reclaim(index, attempt);
            self.lose(
                index,
                attempt,
                Some(source),
                format!("lost with {name}"),
                now,
            );
        }
        lost.len()
    }
}
