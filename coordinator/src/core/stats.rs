//! Per-source statistics of a sweep's attempts (tasks, outcomes, mean/median duration,
//! throughput, recent pace, CPU, peak memory): one pure function over per-attempt rows, shared
//! by `sweep_metadata.yaml`, `sweep status`, the report and `sweep watch`.

use super::state::{TaskStatus, Usage};
use serde::Serialize;

/// One attempt as `sweep.db` holds it (`Store::attempt_rows`).
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRow {
    pub index: u64,
    pub attempt: u32,
    /// Where it ran (or was handed); `None` for an attempt never assigned.
    pub source: Option<String>,
    pub status: TaskStatus,
    /// Unix milliseconds.
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub usage: Usage,
}

impl AttemptRow {
    /// How long it ran: the runner's wall time when it measured one, else start to end as
    /// recorded (both in milliseconds); `None` for an attempt that did not run to an end.
    pub fn duration_ms(&self) -> Option<u64> {
        if !matches!(self.status, TaskStatus::Completed | TaskStatus::Failed) {
            return None;
        }
        self.usage.wall_ms.or_else(|| {
            let (start, end) = (self.started_at?, self.finished_at?);
            u64::try_from(end.checked_sub(start)?).ok()
        })
    }
}

/// What one source did in a sweep.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceStats {
    pub source: String,
    /// Distinct tasks with at least one attempt here.
    pub tasks: u64,
    pub attempts: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
    /// Started and not ended.
    pub running: u64,
    /// Handed to the source and not started yet (an agent's queue, a scheduler's pending job).
    pub queued: u64,
    /// Duration of the attempts that ran to an end (completed or failed), seconds.
    pub mean_s: Option<f64>,
    pub median_s: Option<f64>,
    /// Completed attempts per minute, from the first start to the last end here.
    pub throughput_per_min: Option<f64>,
    /// Attempts ended (completed, failed or cancelled) per minute over the `RATE_WINDOW_MS`
    /// before the time asked for ([`source_stats_at`]); `None` when not asked or none ended then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recent_per_min: Option<f64>,
    /// CPU (user + system) of every measured attempt here, seconds.
    pub cpu_s: Option<f64>,
    /// The largest peak RSS of an attempt here, MiB.
    pub max_rss_mb: Option<f64>,
}

/// Rates are measured over the ends of the last five minutes: recent enough to follow a change
/// of pace, long enough to smooth out attempts ending in bursts.
pub const RATE_WINDOW_MS: i64 = 5 * 60 * 1000;

/// Statistics per source, ordered by source name. Attempts without a source are left out.
pub fn source_stats(rows: &[AttemptRow]) -> Vec<SourceStats> {
    source_stats_at(rows, None)
}

/// [`source_stats`], with each source's `recent_per_min` up to `rate_to` (unix ms) when given.
pub fn source_stats_at(rows: &[AttemptRow], rate_to: Option<i64>) -> Vec<SourceStats> {
    let mut by_source: std::collections::BTreeMap<&str, Vec<&AttemptRow>> = Default::default();
    for row in rows {
        if let Some(source) = row.source.as_deref() {
            by_source.entry(source).or_default().push(row);
        }
    }
    by_source
        .into_iter()
        .map(|(source, rows)| one_source(source, &rows, rate_to))
        .collect()
}

/// Ended per minute over the `RATE_WINDOW_MS` before `now_ms`, from the `(started, finished)`
/// times of ended tasks or attempts: the ends in the window divided by the time since the
/// window began, or since the earliest of those started when that is later (a run that began a
/// minute ago is measured over that minute). `None` without an end in the window.
pub fn rate_per_min(
    finished: impl IntoIterator<Item = (Option<i64>, i64)>,
    now_ms: i64,
) -> Option<f64> {
    let window_start = now_ms - RATE_WINDOW_MS;
    let mut count = 0u64;
    let mut earliest = now_ms;
    for (started, finished) in finished {
        if finished <= window_start || finished > now_ms {
            continue;
        }
        count += 1;
        earliest = earliest.min(started.unwrap_or(finished));
    }
    if count == 0 {
        return None;
    }
    let span_ms = (now_ms - earliest.max(window_start)).max(1000);
    Some(count as f64 * 60_000.0 / span_ms as f64)
}

fn one_source(source: &str, rows: &[&AttemptRow], rate_to: Option<i64>) -> SourceStats {
    let count = |status: TaskStatus| rows.iter().filter(|r| r.status == status).count() as u64;
    let mut tasks: Vec<u64> = rows.iter().map(|r| r.index).collect();
    tasks.sort_unstable();
    tasks.dedup();
    let mut durations: Vec<u64> = rows.iter().filter_map(|r| r.duration_ms()).collect();
    durations.sort_unstable();
    let completed = count(TaskStatus::Completed);
    let ran: Vec<&&AttemptRow> = rows
        .iter()
        .filter(|r| matches!(r.status, TaskStatus::Completed | TaskStatus::Failed))
        .collect();
    let first = ran.iter().filter_map(|r| r.started_at).min();
    let last = ran.iter().filter_map(|r| r.finished_at).max();
    let throughput_per_min = match (first, last) {
        (Some(first), Some(last)) if last > first && completed > 0 => {
            Some(completed as f64 * 60_000.0 / (last - first) as f64)
        }
        _ => None,
    };
    let cpu: Vec<u64> = rows
        .iter()
        .filter_map(|r| match (r.usage.cpu_user_ms, r.usage.cpu_sys_ms) {
            (None, None) => None,
            (user, sys) => Some(user.unwrap_or(0).saturating_add(sys.unwrap_or(0))),
        })
        .collect();
    SourceStats {
        source: source.to_string(),
        tasks: tasks.len() as u64,
        attempts: rows.len() as u64,
        completed,
        failed: count(TaskStatus::Failed),
        cancelled: count(TaskStatus::Cancelled),
        running: count(TaskStatus::Running),
        queued: count(TaskStatus::Queued),
        mean_s: (!durations.is_empty())
            .then(|| durations.iter().map(|&d| d as f64).sum::<f64>() / durations.len() as f64)
            .map(seconds),
        median_s: median(&durations).map(seconds),
        throughput_per_min,
        recent_per_min: rate_to.and_then(|now| {
            let ended = rows
                .iter()
                .filter(|r| r.status.is_final())
                .filter_map(|r| Some((r.started_at, r.finished_at?)));
            rate_per_min(ended, now)
        }),
        cpu_s: (!cpu.is_empty()).then(|| seconds(cpu.iter().map(|&c| c as f64).sum())),
        max_rss_mb: rows
            .iter()
            .filter_map(|r| r.usage.max_rss_kb)
            .max()
            .map(|kb| kb as f64 / 1024.0),
    }
}

fn seconds(ms: f64) -> f64 {
    ms / 1000.0
}

/// The middle of sorted values (the mean of the two middle ones for an even count).
fn median(sorted: &[u64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2] as f64),
        _ => Some((sorted[n / 2 - 1] as f64 + sorted[n / 2] as f64) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(index: u64, source: &str, status: TaskStatus, start: i64, end: i64) -> AttemptRow {
        AttemptRow {
            index,
            attempt: 1,
            source: Some(source.into()),
            status,
            started_at: Some(start),
            finished_at: Some(end),
            usage: Usage::default(),
        }
    }

    #[test]
    fn counts_durations_and_throughput_per_source() {
        let mut rows = vec![
            row(1, "local", TaskStatus::Completed, 0, 1_000),
            row(2, "local", TaskStatus::Completed, 0, 3_000),
            row(3, "local", TaskStatus::Failed, 1_000, 6_000),
            row(4, "gpu", TaskStatus::Completed, 10_000, 70_000),
        ];
        // Task 3 ran again on gpu and was cancelled there; task 5 is still running there.
        let mut again = row(3, "gpu", TaskStatus::Cancelled, 60_000, 61_000);
        again.attempt = 2;
        rows.push(again);
        let mut running = row(5, "gpu", TaskStatus::Running, 65_000, 0);
        running.finished_at = None;
        rows.push(running);
        // Never assigned: in no source's figures.
        rows.push(AttemptRow {
            source: None,
            ..row(6, "-", TaskStatus::Pending, 0, 0)
        });
        let stats = source_stats(&rows);
        assert_eq!(
            stats.iter().map(|s| s.source.as_str()).collect::<Vec<_>>(),
            ["gpu", "local"]
        );
        let local = &stats[1];
        assert_eq!(
            (local.tasks, local.attempts, local.completed, local.failed),
            (3, 3, 2, 1)
        );
        assert_eq!(local.mean_s, Some(3.0), "(1 + 3 + 5) / 3");
        assert_eq!(local.median_s, Some(3.0));
        // 2 completed between the first start (0) and the last end (6 s).
        assert_eq!(local.throughput_per_min, Some(20.0));
        let gpu = &stats[0];
        assert_eq!(
            (gpu.tasks, gpu.completed, gpu.cancelled, gpu.running),
            (3, 1, 1, 1)
        );
        assert_eq!(gpu.recent_per_min, None, "not asked for");
        assert_eq!(
            gpu.mean_s,
            Some(60.0),
            "cancelled and running attempts have no duration"
        );
        assert_eq!(gpu.throughput_per_min, Some(1.0));
        assert_eq!((gpu.cpu_s, gpu.max_rss_mb), (None, None));
    }

    #[test]
    fn measured_wall_time_cpu_and_memory_are_preferred_and_summed() {
        let mut a = row(1, "s", TaskStatus::Completed, 0, 9_000);
        a.usage = Usage {
            wall_ms: Some(2_000),
            cpu_user_ms: Some(1_500),
            cpu_sys_ms: Some(500),
            max_rss_kb: Some(2_048),
            scheduler: None,
        };
        let mut b = row(2, "s", TaskStatus::Completed, 0, 4_000);
        b.usage.cpu_user_ms = Some(1_000);
        b.usage.max_rss_kb = Some(51_200);
        let stats = source_stats(&[a, b]);
        // 2 s measured, 4 s from the recorded times.
        assert_eq!(stats[0].median_s, Some(3.0));
        assert_eq!(stats[0].cpu_s, Some(3.0));
        assert_eq!(stats[0].max_rss_mb, Some(50.0));
    }

    #[test]
    fn nothing_ended_means_no_figures() {
        assert!(source_stats(&[]).is_empty());
        let mut r = row(1, "s", TaskStatus::Queued, 0, 0);
        r.started_at = None;
        r.finished_at = None;
        let stats = source_stats(&[r]);
        assert_eq!((stats[0].running, stats[0].queued), (0, 1));
        assert_eq!(
            (
                stats[0].mean_s,
                stats[0].median_s,
                stats[0].throughput_per_min
            ),
            (None, None, None)
        );
    }

    const MIN: i64 = 60_000;

    #[test]
    fn the_rate_is_recent_ends_over_the_time_they_took() {
        // Five ends in the minutes since the run began at 0.
        let five = (1..=5).map(|i| (Some(0), i * MIN));
        assert_eq!(rate_per_min(five, 5 * MIN), Some(1.0));
        // An end before the window does not count; an attempt that started before it is
        // measured from the window's start.
        let old_and_new = [(Some(0), MIN), (Some(2 * MIN), 10 * MIN)];
        assert_eq!(rate_per_min(old_and_new, 10 * MIN), Some(0.2));
        assert_eq!(rate_per_min([], 10 * MIN), None);
        // A burst the same second is measured over at least one second, not zero.
        assert_eq!(rate_per_min([(Some(5), 5), (Some(5), 5)], 5), Some(120.0));
    }

    #[test]
    fn the_recent_pace_counts_every_end_in_the_window() {
        let rows = [
            row(1, "s", TaskStatus::Completed, 0, MIN),
            row(2, "s", TaskStatus::Failed, 0, 2 * MIN),
            row(3, "s", TaskStatus::Cancelled, MIN, 3 * MIN),
            row(4, "s", TaskStatus::Completed, 0, 20 * MIN),
        ];
        // Three ends in the 3 minutes since the first of them started.
        let stats = source_stats_at(&rows[..3], Some(3 * MIN));
        assert_eq!(stats[0].recent_per_min, Some(1.0));
        // Twenty minutes on, only the last end is in the window.
        let stats = source_stats_at(&rows, Some(20 * MIN));
        assert_eq!(stats[0].recent_per_min, Some(0.2));
        assert_eq!(
            source_stats_at(&rows, Some(40 * MIN))[0].recent_per_min,
            None
        );
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(median(&[1, 2, 3, 10]), Some(2.5));
        assert_eq!(median(&[7]), Some(7.0));
        assert_eq!(median(&[]), None);
    }
}
