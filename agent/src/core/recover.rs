//! The core rebuilt from what the disk ledger held after a restart: queued attempts wait to be
//! confirmed, scheduler jobs are followed again, ended attempts finish reporting, finished ones
//! wait for their results to be fetched, and process attempts that were running are `Lost`.

use super::{AgentCore, Entry, Phase, Record, Tail, Unsubmitted};
use crate::ledger::{self, Key, StoredKind, StoredPhase, StoredTask};
use crate::scheduler::{ElementRef, PendingElement};
use hsm_protocol::{Bytes, EventKind, Seq, Stream, SweepId, TaskEventMsg, TaskRef};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What recovery asks of the shell (tails come out of [`AgentCore::poll_tails`]).
#[derive(Debug, Default)]
pub struct Recovery {
    /// Attempts whose outcome cannot be known: to end as `Lost` once the processes the previous
    /// run left behind are ended (`BackendEvent::NeverRan`).
    pub lost: Vec<u64>,
    /// Scheduler elements to follow again: id, element, task directory, started, cancel asked.
    pub adopt: Vec<(u64, ElementRef, PathBuf, bool, bool)>,
    /// Submissions the restart cut short: to look up by job name.
    pub find: Vec<Unsubmitted>,
    /// Attempts and unacknowledged events taken up.
    pub tasks: usize,
    pub events: usize,
}

impl AgentCore {
    /// Takes up what the ledger held. `read_log(dir, stream, offset, len)` gives back the bytes
    /// of a task's log a recovered `Output` event carried (fewer when the file is shorter now);
    /// recovered events are durable already.
    pub fn recover(
        &mut self,
        mut recovered: ledger::Recovered,
        read_log: &mut dyn FnMut(&Path, Stream, u64, u64) -> Vec<u8>,
    ) -> Recovery {
        for (sweep, owner) in std::mem::take(&mut recovered.owners) {
            self.owners
                .insert(SweepId::from(sweep.as_str()), owner.into());
        }
        for (sweep, at) in std::mem::take(&mut recovered.seen) {
            self.seen.insert(SweepId::from(sweep.as_str()), at);
            self.seen_written.insert(SweepId::from(sweep.as_str()), at);
        }
        let mut out = Recovery::default();
        if recovered.tasks.is_empty() {
            return out;
        }
        let mut ids: HashMap<Key, u64> = HashMap::new();
        for stored in recovered.tasks {
            let StoredTask {
                key,
                dir,
                template,
                args,
                env,
                phase,
                cancel_requested,
                next_seq,
                output,
                exit,
                usage,
                offered,
                results_done,
                element,
            } = stored;
            let id = self.next_id;
            self.next_id += 1;
            let sweep_id = SweepId::from(key.0.as_str());
            let task = TaskRef {
                index: hsm_protocol::TaskIndex(key.1),
                attempt: hsm_protocol::Attempt(key.2),
            };
            let hpc = template.hpc.is_some();
            let mut record = Record {
                sweep_id: sweep_id.clone(),
                task,
                dir: dir.clone(),
                template,
                args,
                env,
                phase: Phase::Queued,
                cancel_requested,
                next_seq,
                unacked_output: 0,
                unacked_events: 0,
                exit,
                usage,
                offered,
                results_done,
                output,
            };
            let adoptable = element.as_ref().and_then(ElementRef::from_stored);
            let unsubmitted = element.as_ref().and_then(PendingElement::from_stored);
            let active_key = (sweep_id.clone(), key.1);
            let mut own_dir = true;
            match phase {
                StoredPhase::Finished => {
                    record.phase = Phase::Finished;
                    own_dir = false;
                }
                StoredPhase::Queued => {}
                StoredPhase::Draining if record.exit.is_some() => {
                    record.phase = Phase::Draining;
                    self.tails.push(Tail {
                        id,
                        dir: dir.clone(),
                        from: output,
                    });
                }
                StoredPhase::Launching | StoredPhase::Running if hpc && adoptable.is_some() => {
                    let started = phase == StoredPhase::Running;
                    record.phase = if started {
                        Phase::Running
                    } else {
                        Phase::Launching
                    };
                    if started {
                        self.tails.push(Tail {
                            id,
                            dir: dir.clone(),
                            from: output,
                        });
                    }
                    if let Some(element) = adoptable {
                        out.adopt
                            .push((id, element, dir.clone(), started, cancel_requested));
                    }
                }
                // Being submitted when the agent stopped: the job may exist; it is looked
                // up by the name it went out under.
                // (Running: it was settled from the wrapper's records after a restart and
                // the agent stopped again before the end was written.)
                StoredPhase::Launching | StoredPhase::Running if hpc && unsubmitted.is_some() => {
                    record.phase = Phase::Launching;
                    if let Some(pending) = unsubmitted {
                        out.find.push((id, pending, dir.clone()));
                    }
                }
                // Spawned (or being spawned, or handed to a scheduler without a job id we
                // kept): its outcome cannot be known.
                _ => {
                    record.phase = Phase::Launching;
                    out.lost.push(id);
                }
            }
            if own_dir {
                // Attempts are recovered in the order they were accepted: an older attempt
                // of the same task comes first and a newer one waits for it (parked).
                match self.active.entry(active_key.clone()) {
                    std::collections::hash_map::Entry::Occupied(_) => {
                        self.parked.insert(active_key, id);
                    }
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(id);
                        // Not started before the restart: the coordinator may have taken it
                        // back and run it elsewhere meanwhile. It waits for a coordinator
                        // of its sweep to confirm it.
                        if record.phase == Phase::Queued {
                            self.unconfirmed
                                .entry(sweep_id.clone())
                                .or_default()
                                .insert(id);
                            let now = self.mono_ms;
                            self.unclaimed_since.entry(sweep_id.clone()).or_insert(now);
                        }
                    }
                }
            }
            self.by_ref.insert(record.key(), id);
            self.tasks.insert(id, record);
            ids.insert(key, id);
        }
        for event in recovered.events {
            let Some(&id) = ids.get(&event.key) else {
                continue;
            };
            let Some(record) = self.tasks.get_mut(&id) else {
                continue;
            };
            let (kind, bytes) = match event.kind {
                StoredKind::Event(kind) => (kind, 0),
                StoredKind::Output {
                    stream,
                    offset,
                    len,
                } => {
                    let data = read_log(&record.dir, stream, offset, len);
                    let n = data.len();
                    (
                        EventKind::Output {
                            stream,
                            data: Bytes(data),
                        },
                        n,
                    )
                }
            };
            record.unacked_events += 1;
            record.unacked_output += bytes;
            let msg = TaskEventMsg {
                sweep_id: record.sweep_id.clone(),
                task: record.task,
                seq: Seq(event.seq),
                kind,
            };
            let gen = self.next_gen;
            self.next_gen += 1;
            self.ledger_index.insert(msg.event_ref(), gen);
            self.ledger.insert(
                gen,
                Entry {
                    task: id,
                    event: msg,
                    output_bytes: bytes,
                },
            );
            out.events += 1;
        }
        // Finished attempts with nothing left to report or fetch are done with.
        let mut all: Vec<u64> = ids.values().copied().collect();
        // In the ledger's order, not the map's (the `Forget` ops come out in it).
        all.sort_unstable();
        for id in all {
            self.maybe_forget(id);
        }
        // Recovered events are durable already.
        self.durable = self.next_gen;
        out.tasks = self.tasks.len();
        out
    }
}
