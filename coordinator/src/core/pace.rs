//! Pacing of remote sources: how many attempts beyond its slots a source is handed so that it
//! never idles waiting for the coordinator, and whether a task waiting at one source is worth
//! moving to an idle one. Pure arithmetic on measured task durations and round trips.

/// The fixed part of the time between a task's end on an agent and its next task starting
/// there, on top of the network round trip: the agent batches its events (5 ms), the
/// coordinator applies them and dispatches, and launches are batched into one `Submit`.
pub const REMOTE_OVERHEAD_MS: u32 = 20;

/// How many times what the mean needs is kept waiting: the round trip varies (event batching,
/// the agent's host busy with the tasks themselves), and a slot left idle costs more than a task
/// waiting there a little longer. Measured: with 1x, 10,000 `/bin/true` through a 2-slot agent ran
/// at 0.84x of the fixed `slots x 2 + 16` pipeline; long tasks still get none (`ahead` rounds).
const HEADROOM: f64 = 4.0;

/// The most attempts handed to a source beyond its slots: enough for a pipeline of
/// few-millisecond tasks, short enough that the end of a sweep is not left waiting at one
/// source while others idle (and work stealing has little to undo).
pub fn max_ahead(slots: usize) -> usize {
    slots.max(1) * 2 + 16
}

/// Attempts to keep waiting at a remote source with `slots` slots beyond those slots, so that
/// each slot finds its next task there when one ends instead of idling for a round trip
/// (`latency_ms`). A slot idles `latency / duration` of its time without them, so `slots`
/// slots need `slots × latency / duration` waiting (kept `HEADROOM` times over): hundreds for tasks of a few milliseconds
/// (capped by `max_ahead`), none for tasks of minutes. Before any task has ended (`mean_ms`
/// unknown) none: the first tasks' ends arrive quickly when they are short, and long tasks
/// must not pile up at whichever source connected first.
pub fn ahead(slots: usize, latency_ms: u32, mean_ms: Option<f64>) -> usize {
    let Some(mean) = mean_ms else {
        return 0;
    };
    let wanted = (HEADROOM * slots as f64 * f64::from(latency_ms) / mean.max(1.0)).round();
    // `as` saturates: an absurd ratio is just the cap.
    (wanted as usize).min(max_ahead(slots))
}

/// Whether moving a task that waits at an agent to an idle source gains anything: the move
/// costs a round trip to each (the holder must confirm it dropped the task before it runs
/// elsewhere), so tasks not much longer than that are left where they are. Tasks are long when
/// they have been so far (`mean_ms`) or when one the holder runs now has been running longer
/// than that (`running_ms`: a sweep whose tasks turn long is seen before the mean catches up).
/// Unknown durations count as long: nothing has ended yet, and the first tasks of a sweep are
/// what may be stuck.
pub fn worth_moving(mean_ms: Option<f64>, running_ms: Option<i64>, latency_ms: u32) -> bool {
    let threshold = 4.0 * f64::from(latency_ms) + 200.0;
    mean_ms.is_none_or(|mean| mean > threshold)
        || running_ms.is_some_and(|ms| ms as f64 > threshold)
}

/// A running mean of task durations (exponentially weighted, so it follows a sweep whose tasks
/// get longer or shorter as it goes).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Durations {
    mean_ms: Option<f64>,
}

impl Durations {
    /// Weight of the newest duration.
    const ALPHA: f64 = 0.2;

    pub fn observe(&mut self, duration_ms: i64) {
        let x = duration_ms.max(1) as f64;
        self.mean_ms = Some(match self.mean_ms {
            None => x,
            Some(mean) => mean + Self::ALPHA * (x - mean),
        });
    }

    pub fn mean_ms(&self) -> Option<f64> {
        self.mean_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_tasks_get_a_pipeline_and_long_ones_none() {
        // 2 ms tasks over a 20 ms round trip: each slot needs ~10 waiting (x4), capped.
        assert_eq!(ahead(2, 20, Some(2.0)), 20);
        assert_eq!(
            ahead(2, 20, Some(8.0)),
            20,
            "8 ms tasks: the whole pipeline"
        );
        assert_eq!(
            ahead(4, 20, Some(0.0)),
            max_ahead(4),
            "a 0 ms mean is capped"
        );
        assert_eq!(ahead(4, 20, Some(160.0)), 2);
        // 3 s tasks: nothing beyond the slots.
        assert_eq!(ahead(4, 20, Some(3000.0)), 0);
        assert_eq!(ahead(64, 20, Some(60_000.0)), 0);
        assert_eq!(ahead(4, 20, None), 0, "nothing measured yet");
    }

    #[test]
    fn only_tasks_longer_than_a_few_round_trips_are_moved() {
        assert!(worth_moving(None, None, 20));
        assert!(worth_moving(Some(3000.0), None, 20));
        assert!(!worth_moving(Some(5.0), None, 20));
        assert!(!worth_moving(Some(250.0), Some(100), 20));
        // Short so far, but what runs there now has run for 2 s.
        assert!(worth_moving(Some(5.0), Some(2000), 20));
    }

    #[test]
    fn the_mean_follows_recent_durations() {
        let mut d = Durations::default();
        assert_eq!(d.mean_ms(), None);
        d.observe(1000);
        assert_eq!(d.mean_ms(), Some(1000.0));
        for _ in 0..50 {
            d.observe(10);
        }
        assert!(d.mean_ms().unwrap() < 20.0);
        d.observe(-5);
        assert!(
            d.mean_ms().unwrap() > 0.0,
            "clock skew never gives a negative mean"
        );
    }
}
