//! The sweep actor's rules around `SweepCore`, kept pure so the simulator runs the same ones:
//! where each command goes (an agent order waits until the changes made with it are written; an
//! `Attach` goes at once), what a source's status does to the core, and the write-ahead batch.

use super::link::LinkStatus;
use super::state::{Change, Command, SweepCore};
use hsm_exec::process::TaskKey;
use hsm_protocol::EventRef;

/// What a command asks of the source holding (or about to hold) an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Launch(TaskKey),
    Cancel(TaskKey),
    /// Ask for an unstarted attempt back (`Command::Steal`, and a drain's `Command::Withdraw`):
    /// it moves only once the source says it dropped it, since it may have started there
    /// meanwhile.
    Steal(TaskKey),
}

/// Where a command goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To `source`: an agent source's order waits in [`WriteAhead`] until the batch made with
    /// it is written (a local source's goes at once: it outlives no coordinator).
    Order(usize, Order),
    /// Take up an attempt an agent holds from an earlier run: at once, not after the next
    /// write. `sweep.db` holds the attempt already (it is where it came from), and the agent
    /// source must hold it before the agent replays its events: one that arrived first would be
    /// acknowledged as another run's and dropped, and the run would wait for it for ever (found
    /// by the simulator).
    Attach(usize, TaskKey),
}

pub fn route(command: Command) -> Route {
    let key = |index, attempt| TaskKey { index, attempt };
    match command {
        Command::Launch {
            index,
            attempt,
            source,
        } => Route::Order(source, Order::Launch(key(index, attempt))),
        Command::Cancel {
            index,
            attempt,
            source,
        } => Route::Order(source, Order::Cancel(key(index, attempt))),
        Command::Withdraw {
            index,
            attempt,
            source,
        }
        | Command::Steal {
            index,
            attempt,
            source,
        } => Route::Order(source, Order::Steal(key(index, attempt))),
        Command::Attach {
            index,
            attempt,
            source,
        } => Route::Attach(source, key(index, attempt)),
    }
}

/// What a source's status did to the run.
#[derive(Debug, Default, PartialEq)]
pub struct StatusEffect {
    /// Attempts lost with the source (they run again elsewhere).
    pub lost: usize,
    /// Unstarted attempts asked back from a drained source (to carry out).
    pub drained: Vec<Command>,
}

/// Applies a source's status to the core. `slots_configured`: the user fixed the source's slot
/// count, so what it says it offers changes only its parallelism.
pub fn apply_status(
    core: &mut SweepCore,
    source: usize,
    status: &LinkStatus,
    slots_configured: bool,
    now: i64,
) -> StatusEffect {
    if let Some(parallel) = status.slots {
        core.handle_source_parallel(source, parallel);
    }
    if let Some(rtt) = status.rtt_ms {
        core.handle_source_latency(source, rtt);
    }
    let mut effect = StatusEffect::default();
    if status.lost {
        effect.lost = core.handle_source_lost(source, now);
    } else if status.up {
        let slots = if slots_configured { None } else { status.slots };
        core.handle_source_status(source, true, slots);
    } else if status.keep_waiting {
        // A batch scheduler holds what waits there, connected or not.
        core.handle_source_status(source, false, None);
    } else {
        // No new work, and what waits there unstarted is asked back for other sources.
        effect.drained = core.handle_source_drain(source, &status.note);
    }
    effect
}

/// Agent orders and event acknowledgements held until the store has written the batch of
/// changes made with them. So an agent never holds an attempt `sweep.db` does not know, and
/// never forgets an event whose changes `sweep.db` lacks: after a `kill -9` of the coordinator,
/// `sweep complete` takes up every attempt an agent has and never launches the same attempt
/// number twice.
#[derive(Debug)]
pub struct WriteAhead<O> {
    orders: Vec<(usize, O)>,
    acks: Vec<(usize, Vec<EventRef>)>,
}

impl<O> Default for WriteAhead<O> {
    fn default() -> Self {
        WriteAhead {
            orders: Vec::new(),
            acks: Vec::new(),
        }
    }
}

/// A batch to write; once written, `orders` and `acks` go out, in this order.
#[derive(Debug)]
pub struct Batch<O> {
    pub changes: Vec<Change>,
    pub orders: Vec<(usize, O)>,
    pub acks: Vec<(usize, Vec<EventRef>)>,
}

impl<O> WriteAhead<O> {
    pub fn order(&mut self, source: usize, order: O) {
        self.orders.push((source, order));
    }

    /// Events of `source` applied: acknowledged once their changes are written.
    pub fn acks(&mut self, source: usize, acks: Vec<EventRef>) {
        self.acks.push((source, acks));
    }

    /// Whether orders wait (the shell then writes at once rather than at its next tick, so a
    /// launch waits for one commit).
    pub fn has_orders(&self) -> bool {
        !self.orders.is_empty()
    }

    /// The batch to write now: `changes` and what waits for them. An empty one is still written
    /// when orders or acknowledgements wait (the store writes in order: it answers once every
    /// earlier batch is written); `None` when there is nothing at all.
    pub fn take(&mut self, changes: Vec<Change>) -> Option<Batch<O>> {
        if changes.is_empty() && self.orders.is_empty() && self.acks.is_empty() {
            return None;
        }
        Some(Batch {
            changes,
            orders: std::mem::take(&mut self.orders),
            acks: std::mem::take(&mut self.acks),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::state::{SourceState, Strategy, TaskState, TaskStatus};

    fn core(n: u64) -> SweepCore {
        let tasks = (1..=n)
            .map(|index| TaskState::recorded(index, TaskStatus::Pending, 0))
            .collect();
        SweepCore::new(
            tasks,
            vec![SourceState::new("a0", 2), SourceState::new("a1", 1)],
            Strategy::RoundRobin,
        )
    }

    #[test]
    fn withdrawals_travel_as_steals_and_attaches_go_at_once() {
        let key = TaskKey {
            index: 3,
            attempt: 2,
        };
        assert_eq!(
            route(Command::Withdraw {
                index: 3,
                attempt: 2,
                source: 1
            }),
            Route::Order(1, Order::Steal(key))
        );
        assert_eq!(
            route(Command::Attach {
                index: 3,
                attempt: 2,
                source: 0
            }),
            Route::Attach(0, key)
        );
    }

    #[test]
    fn a_down_source_is_drained_unless_its_scheduler_keeps_the_work_and_a_lost_one_loses_it() {
        let mut c = core(3);
        c.enqueue(&[1, 2, 3], 0, 0);
        c.poll_dispatch(0);
        let down = LinkStatus {
            note: "connection lost".into(),
            ..LinkStatus::default()
        };
        let kept = LinkStatus {
            keep_waiting: true,
            ..down.clone()
        };
        assert_eq!(
            apply_status(&mut c, 0, &kept, false, 1),
            StatusEffect::default()
        );
        let effect = apply_status(&mut c, 0, &down, false, 1);
        assert_eq!(effect.drained.len(), 2, "{effect:?}");
        let lost = LinkStatus { lost: true, ..down };
        assert_eq!(apply_status(&mut c, 1, &lost, false, 2).lost, 1);
        // Configured slots stay; what the agent offers is its parallelism.
        let up = LinkStatus {
            up: true,
            slots: Some(8),
            ..LinkStatus::default()
        };
        apply_status(&mut c, 1, &up, true, 3);
        assert_eq!(c.sources()[1].slots, 1);
        apply_status(&mut c, 1, &up, false, 3);
        assert_eq!(c.sources()[1].slots, 8);
    }

    #[test]
    fn held_orders_and_acks_make_a_batch_even_without_changes() {
        let mut held: WriteAhead<Order> = WriteAhead::default();
        assert!(
            held.take(Vec::new()).is_none(),
            "an idle tick writes nothing"
        );
        let key = TaskKey {
            index: 1,
            attempt: 1,
        };
        held.order(0, Order::Cancel(key));
        assert!(held.has_orders());
        let batch = held.take(Vec::new()).expect("a batch");
        assert_eq!(batch.orders, [(0, Order::Cancel(key))]);
        assert!(!held.has_orders());
        assert!(held.take(Vec::new()).is_none());
    }
}
