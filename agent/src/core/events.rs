//! The core's events: appending with the next `seq` and ledger position, acknowledgements (and
//! the output credit they give back), what a session may send from its cursor, reporting an end
//! again, forgetting finished attempts, and result fetches.

use super::{AgentCore, Entry, FetchItem, FetchPlan, Phase};
use crate::ledger::{Op, StoredKind};
use hsm_protocol::{
    check_relative_path, display_safe, Bytes, EventKind, EventRef, FetchMsg, FileOffer, OutcomeMsg,
    ResultsDoneMsg, Seq, Stream, SweepTaskRef, TaskEventMsg,
};
use std::path::PathBuf;

impl AgentCore {
    /// The ledger committed everything below position `gen`: those events may be sent.
    pub fn handle_ledger_durable(&mut self, gen: u64) {
        self.durable = self.durable.max(gen);
    }

    /// The first position a session may not send yet: what is durable (with a disk ledger), or
    /// everything appended (without one).
    fn sendable(&self) -> u64 {
        if self.on_disk {
            self.durable
        } else {
            self.next_gen
        }
    }

    /// Unacknowledged events of the sweeps coordinator `who` owns, from ledger position
    /// `cursor` on, at most `max_events` and about `max_output` output bytes (at least one event
    /// when any is pending), and the cursor after them (past other sweeps' events too).
    pub fn poll_events(
        &self,
        cursor: u64,
        max_events: usize,
        max_output: usize,
        who: &str,
    ) -> (Vec<TaskEventMsg>, u64) {
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut next = cursor;
        let durable = self.sendable();
        for (gen, entry) in self.ledger.range(cursor..durable.max(cursor)) {
            if !out.is_empty()
                && (out.len() >= max_events || bytes + entry.output_bytes > max_output)
            {
                break;
            }
            next = gen + 1;
            if !self.owned_by(&entry.event.sweep_id, who) {
                continue;
            }
            bytes += entry.output_bytes;
            out.push(entry.event.clone());
        }
        (out, next)
    }

    /// Whether at least `threshold` output bytes (or many events) wait from `cursor` on; a
    /// session then sends at once instead of waiting to batch more.
    pub fn pending_is_large(&self, cursor: u64, threshold: usize, who: &str) -> bool {
        let mut bytes = 0;
        let durable = self.sendable();
        let mine = self
            .ledger
            .range(cursor..durable.max(cursor))
            .filter(|(_, entry)| self.owned_by(&entry.event.sweep_id, who));
        for (n, (_, entry)) in mine.enumerate() {
            bytes += entry.output_bytes;
            if bytes >= threshold || n >= 512 {
                return true;
            }
        }
        false
    }

    /// Forgets acknowledged events; output acknowledgements wake paused tailers
    /// ([`AgentCore::poll_wakes`]).
    pub fn handle_ack(&mut self, acks: &[EventRef]) {
        let mut touched = Vec::new();
        for event in acks {
            let Some(gen) = self.ledger_index.remove(event) else {
                continue;
            };
            let Some(entry) = self.ledger.remove(&gen) else {
                continue;
            };
            self.log(Op::Ack(
                (
                    event.sweep_id.as_str().to_string(),
                    event.task.index.0,
                    event.task.attempt.0,
                ),
                event.seq.0,
            ));
            if let Some(record) = self.tasks.get_mut(&entry.task) {
                record.unacked_events = record.unacked_events.saturating_sub(1);
                if entry.output_bytes > 0 {
                    record.unacked_output =
                        record.unacked_output.saturating_sub(entry.output_bytes);
                    self.wakes.push(entry.task);
                }
            }
            touched.push(entry.task);
        }
        touched.sort_unstable();
        touched.dedup();
        for id in touched {
            self.maybe_forget(id);
        }
    }

    /// For a coordinator taking up attempt `id` (`Attach`, or the same attempt submitted
    /// again): a finished attempt whose events were all acknowledged, by a coordinator that may
    /// have died before writing them down, reports its end again. One with events still
    /// unacknowledged needs nothing (they are replayed to every session), nor does one that has
    /// not ended.
    pub(super) fn report_end_again(&mut self, id: u64, now_ms: i64) {
        let Some(record) = self.tasks.get(&id) else {
            return;
        };
        if record.phase != Phase::Finished || record.unacked_events > 0 {
            return;
        }
        let (outcome, at_ms) = match &record.exit {
            Some((outcome, at)) => (outcome.clone(), *at),
            None => (OutcomeMsg::Lost, now_ms),
        };
        let files = record.offered.clone();
        let usage = record.usage;
        self.append(
            id,
            EventKind::Exited {
                outcome,
                at_ms,
                usage,
            },
        );
        self.append(id, EventKind::ResultOffer { files });
    }

    /// Appends an event of task `id` with its next `seq`.
    pub(super) fn append(&mut self, id: u64, kind: EventKind) {
        self.append_at(id, kind, None);
    }

    /// Appends output read from the task's log at `offset` (the ledger keeps only the place).
    pub(super) fn append_output(&mut self, id: u64, stream: Stream, data: Vec<u8>, offset: u64) {
        self.append_at(
            id,
            EventKind::Output {
                stream,
                data: Bytes(data),
            },
            Some(offset),
        );
    }

    fn append_at(&mut self, id: u64, kind: EventKind, offset: Option<u64>) {
        let Some(record) = self.tasks.get_mut(&id) else {
            return;
        };
        let (output_bytes, stored) = match (&kind, offset) {
            (EventKind::Output { data, stream }, Some(offset)) => {
                let len = data.0.len() as u64;
                let i = *stream as usize;
                record.output[i] = record.output[i].max(offset + len);
                (
                    data.0.len(),
                    StoredKind::Output {
                        stream: *stream,
                        offset,
                        len,
                    },
                )
            }
            (EventKind::Output { data, .. }, None) => {
                (data.0.len(), StoredKind::Event(kind.clone()))
            }
            _ => (0, StoredKind::Event(kind.clone())),
        };
        let event = TaskEventMsg {
            sweep_id: record.sweep_id.clone(),
            task: record.task,
            seq: Seq(record.next_seq),
            kind,
        };
        record.next_seq += 1;
        record.unacked_events += 1;
        record.unacked_output += output_bytes;
        let gen = self.next_gen;
        self.next_gen += 1;
        if self.on_disk {
            let op = Op::Event {
                gen,
                key: record.ledger_key(),
                seq: event.seq.0,
                kind: stored,
                output: record.output,
            };
            self.log(op);
        }
        self.ledger_index.insert(event.event_ref(), gen);
        self.ledger.insert(
            gen,
            Entry {
                task: id,
                event,
                output_bytes,
            },
        );
    }

    /// Drops a finished attempt once nothing about it is pending: all events acknowledged and
    /// its results either fetched (ResultsDone) or nonexistent.
    pub(super) fn maybe_forget(&mut self, id: u64) {
        let Some(record) = self.tasks.get(&id) else {
            return;
        };
        if record.phase == Phase::Finished
            && record.unacked_events == 0
            && (record.results_done || record.offered.is_empty())
        {
            let key = record.key();
            let ledger_key = record.ledger_key();
            self.tasks.remove(&id);
            self.by_ref.remove(&key);
            self.log(Op::Forget(ledger_key));
        }
    }

    /// The files a `FetchResults` asks for, checked against the attempt's offer.
    pub fn fetch_plan(&self, msg: &FetchMsg) -> Result<FetchPlan, String> {
        // The coordinator's text, in messages that are logged here and shown there.
        let sweep = display_safe(msg.sweep_id.as_str());
        let key = SweepTaskRef {
            sweep_id: msg.sweep_id.clone(),
            task: msg.task,
        };
        let record = self
            .by_ref
            .get(&key)
            .and_then(|id| self.tasks.get(id))
            .ok_or_else(|| {
                format!(
                    "cannot send results of task {} attempt {} of sweep {}: unknown here",
                    msg.task.index, msg.task.attempt, sweep
                )
            })?;
        if record.phase != Phase::Finished {
            return Err(format!(
                "cannot send results of task {} attempt {} of sweep {}: it has not finished",
                msg.task.index, msg.task.attempt, sweep
            ));
        }
        let wanted: Vec<&FileOffer> = if msg.paths.is_empty() {
            record.offered.iter().collect()
        } else {
            let mut wanted = Vec::new();
            for path in &msg.paths {
                check_relative_path(path)
                    .map_err(|e| format!("refused fetch: {}", display_safe(&e.to_string())))?;
                let offer = record
                    .offered
                    .iter()
                    .find(|o| &o.path == path)
                    .ok_or_else(|| {
                        format!(
                            "refused fetch: {path:?} was not offered by task {} attempt {} of \
                             sweep {}",
                            msg.task.index, msg.task.attempt, sweep
                        )
                    })?;
                wanted.push(offer);
            }
            wanted
        };
        Ok(FetchPlan {
            task_dir: record.dir.clone(),
            files: wanted
                .into_iter()
                .map(|offer| FetchItem {
                    path: record.dir.join(&offer.path),
                    offer: offer.clone(),
                })
                .collect(),
        })
    }

    /// The coordinator holds the attempt's files: they are no longer offered. Returns the task
    /// directory whose `results/` may now be deleted (`None`: unknown or not finished, ignored).
    pub fn handle_results_done(&mut self, msg: &ResultsDoneMsg) -> Option<(PathBuf, bool)> {
        let key = SweepTaskRef {
            sweep_id: msg.sweep_id.clone(),
            task: msg.task,
        };
        let Some(&id) = self.by_ref.get(&key) else {
            tracing::debug!(?key, "results done for a task not held here; ignored");
            return None;
        };
        let record = self.tasks.get_mut(&id)?;
        if record.phase != Phase::Finished {
            tracing::warn!(
                ?key,
                "results done for a task that has not finished; ignored"
            );
            return None;
        }
        record.offered.clear();
        record.results_done = true;
        let done = (record.dir.clone(), record.template.compact);
        let key = record.ledger_key();
        self.log(Op::ResultsDone(key));
        self.maybe_forget(id);
        Some(done)
    }
}
