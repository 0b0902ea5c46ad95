//! Collapsing repeated handshake refusals in the agent's log: the first refusal of a peer for a
//! cause is logged in full, later ones within the minute are only counted, and one summary line
//! per peer and cause reports them. A coordinator retrying with an unauthorized certificate, or a
//! scanner, otherwise writes half a kilobyte of warning per attempt, without limit.
//!
//! [`RefusalLimiter`] is the pure bookkeeping (time is passed in); [`RefusalLog`] is the shell
//! that logs through `tracing` and wakes up to write the summaries.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long repeats are counted before their summary is written.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// Peers (and causes) tracked at once; refusals from further ones share one entry, so a flood
/// from many addresses costs bounded memory and still bounded log.
const MAX_PEERS: usize = 256;

/// Whom a refusal came from and why, as a limiter key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RefusalKey {
    /// The peer's address without its port (a retrying client often changes port); `None` for
    /// the shared entry of peers past [`MAX_PEERS`].
    pub peer: Option<IpAddr>,
    /// A short name of the cause (not the fingerprint: a peer cycling certificates is one peer).
    pub cause: &'static str,
}

impl std::fmt::Display for RefusalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.peer {
            Some(ip) => write!(f, "from {ip} ({})", self.cause),
            None => write!(f, "from other peers ({})", self.cause),
        }
    }
}

/// What to do with one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Log it in full.
    Log,
    /// Count it; a summary reports it later.
    Count,
}

/// Refusals counted for one key since the summary window began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub key: RefusalKey,
    pub repeats: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = if self.repeats == 1 { "" } else { "s" };
        write!(
            f,
            "{} more refused handshake{s} {} in the last minute",
            self.repeats, self.key
        )
    }
}

#[derive(Debug)]
struct Window {
    started: Instant,
    repeats: u64,
}

/// Per-key windows of [`SUMMARY_EVERY`]: the first refusal of a key is logged, repeats are
/// counted, and when the window ends with repeats a summary is due and a new window starts. A
/// window that ends with none forgets the key, so its next refusal is logged in full again.
/// Each key thus writes at most one full line and one summary a minute.
#[derive(Debug)]
pub struct RefusalLimiter {
    every: Duration,
    max_keys: usize,
    windows: HashMap<RefusalKey, Window>,
}

impl Default for RefusalLimiter {
    fn default() -> Self {
        RefusalLimiter::new(SUMMARY_EVERY, MAX_PEERS)
    }
}

impl RefusalLimiter {
    pub fn new(every: Duration, max_keys: usize) -> RefusalLimiter {
        RefusalLimiter {
            every,
            max_keys: max_keys.max(1),
            windows: HashMap::new(),
        }
    }

    /// Records a refusal at `now`.
    pub fn refused(&mut self, key: RefusalKey, now: Instant) -> Verdict {
        let key = if self.windows.contains_key(&key) || self.windows.len() < self.max_keys {
            key
        } else {
            RefusalKey { peer: None, ..key }
        };
        match self.windows.get_mut(&key) {
            Some(window) => {
                window.repeats = window.repeats.saturating_add(1);
                Verdict::Count
            }
            None => {
                // The shared entry may be one past the limit; it is a single extra key.
                self.windows.insert(
                    key,
                    Window {
                        started: now,
                        repeats: 0,
                    },
                );
                Verdict::Log
            }
        }
    }

    /// The summaries due at `now`, oldest window first; their keys start a new window.
    pub fn due(&mut self, now: Instant) -> Vec<Summary> {
        let every = self.every;
        let mut due = Vec::new();
        self.windows.retain(|key, window| {
            if now.saturating_duration_since(window.started) < every {
                return true;
            }
            if window.repeats == 0 {
                return false;
            }
            due.push((
                window.started,
                Summary {
                    key: key.clone(),
                    repeats: window.repeats,
                },
            ));
            *window = Window {
                started: now,
                repeats: 0,
            };
            true
        });
        due.sort_by_key(|(started, _)| *started);
        due.into_iter().map(|(_, summary)| summary).collect()
    }

    /// When the next window ends (a summary may then be due, or a key forgotten).
    pub fn next_due(&self) -> Option<Instant> {
        self.windows
            .values()
            .map(|window| window.started + self.every)
            .min()
    }
}

/// The agent's log of refused handshakes: full lines through the limiter, and a task that
/// writes the summaries when their windows end.
pub struct RefusalLog {
    limiter: Mutex<RefusalLimiter>,
    wake: tokio::sync::Notify,
}

impl RefusalLog {
    /// Starts the summary task on the current tokio runtime.
    pub fn start() -> Arc<RefusalLog> {
        let log = Arc::new(RefusalLog {
            limiter: Mutex::new(RefusalLimiter::default()),
            wake: tokio::sync::Notify::new(),
        });
        // A weak handle: the task ends with the server that owns the log.
        let weak = Arc::downgrade(&log);
        tokio::spawn(async move {
            loop {
                let Some(log) = weak.upgrade() else { return };
                let next = log.lock().next_due();
                let wait = async {
                    match next {
                        Some(at) => tokio::time::sleep_until(at.into()).await,
                        None => log.wake.notified().await,
                    }
                };
                // Re-check at least every window so a dropped log ends the task.
                let _ = tokio::time::timeout(SUMMARY_EVERY, wait).await;
                for summary in log.lock().due(Instant::now()) {
                    tracing::warn!("{summary}");
                }
            }
        });
        log
    }

    /// Logs a failed incoming handshake (see [`super::explain_accept_error`]), or counts it when
    /// the same peer failed for the same cause within the minute.
    pub fn refused(&self, err: &quinn::ConnectionError, remote: SocketAddr) {
        self.note(remote, super::accept_error_cause(err), || {
            super::explain_accept_error(err, remote)
        });
    }

    /// Logs `message()` as a warning about `remote`, or counts it when `remote` was already
    /// reported for `cause` within the minute.
    pub fn note(&self, remote: SocketAddr, cause: &'static str, message: impl FnOnce() -> String) {
        let key = RefusalKey {
            peer: Some(remote.ip()),
            cause,
        };
        let (verdict, first) = {
            let mut limiter = self.lock();
            let first = limiter.windows.is_empty();
            (limiter.refused(key, Instant::now()), first)
        };
        if first {
            // The summary task may be waiting with nothing to time.
            self.wake.notify_one();
        }
        if verdict == Verdict::Log {
            tracing::warn!("{} (repeats are summarised once a minute)", message());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RefusalLimiter> {
        // The limiter's state is consistent after any panic (plain counters).
        self.limiter.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(last: u8, cause: &'static str) -> RefusalKey {
        RefusalKey {
            peer: Some(IpAddr::from([10, 0, 0, last])),
            cause,
        }
    }

    #[test]
    fn the_first_refusal_is_logged_and_repeats_are_summarised_once_a_minute() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut limiter = RefusalLimiter::default();
        let a = key(1, "not authorized");
        assert_eq!(limiter.refused(a.clone(), t0), Verdict::Log);
        for i in 1..300 {
            assert_eq!(
                limiter.refused(a.clone(), t0 + Duration::from_millis(i)),
                Verdict::Count
            );
        }
        assert_eq!(limiter.next_due(), Some(t0 + s(60)));
        assert!(limiter.due(t0 + s(59)).is_empty(), "not before the minute");
        let summaries = limiter.due(t0 + s(60));
        assert_eq!(
            summaries,
            vec![Summary {
                key: a.clone(),
                repeats: 299
            }]
        );
        assert_eq!(
            summaries[0].to_string(),
            "299 more refused handshakes from 10.0.0.1 (not authorized) in the last minute"
        );
        // Still refusing: counted into the next summary, not logged in full again.
        assert_eq!(limiter.refused(a.clone(), t0 + s(70)), Verdict::Count);
        assert!(limiter.due(t0 + s(100)).is_empty());
        let next = limiter.due(t0 + s(120));
        assert_eq!(next.len(), 1);
        assert_eq!(
            next[0].to_string(),
            "1 more refused handshake from 10.0.0.1 (not authorized) in the last minute"
        );
        // A quiet minute forgets the peer: its next refusal is news again.
        assert!(limiter.due(t0 + s(180)).is_empty());
        assert_eq!(limiter.next_due(), None);
        assert_eq!(limiter.refused(a, t0 + s(181)), Verdict::Log);
    }

    #[test]
    fn peers_and_causes_are_counted_separately() {
        let t0 = Instant::now();
        let mut limiter = RefusalLimiter::default();
        assert_eq!(limiter.refused(key(1, "not authorized"), t0), Verdict::Log);
        assert_eq!(limiter.refused(key(2, "not authorized"), t0), Verdict::Log);
        assert_eq!(limiter.refused(key(1, "timed out"), t0), Verdict::Log);
        assert_eq!(
            limiter.refused(key(2, "not authorized"), t0),
            Verdict::Count
        );
        let due = limiter.due(t0 + SUMMARY_EVERY);
        assert_eq!(
            due,
            vec![Summary {
                key: key(2, "not authorized"),
                repeats: 1
            }]
        );
    }

    #[test]
    fn many_peers_share_one_entry_past_the_limit() {
        let t0 = Instant::now();
        let mut limiter = RefusalLimiter::new(SUMMARY_EVERY, 2);
        assert_eq!(limiter.refused(key(1, "x"), t0), Verdict::Log);
        assert_eq!(limiter.refused(key(2, "x"), t0), Verdict::Log);
        // The third and every later new peer: one full line, then counted together.
        assert_eq!(limiter.refused(key(3, "x"), t0), Verdict::Log);
        for last in 4..=200 {
            assert_eq!(limiter.refused(key(last, "x"), t0), Verdict::Count);
        }
        assert_eq!(limiter.windows.len(), 3);
        let due = limiter.due(t0 + SUMMARY_EVERY);
        assert_eq!(due.len(), 1);
        assert_eq!(
            due[0].to_string(),
            "197 more refused handshakes from other peers (x) in the last minute"
        );
    }
}
