//! The result files an agent offered and this coordinator still awaits, per attempt. The agent
//! link owns it (it records offers and decides when an attempt is done); the connection task
//! claims each file stream against it through the link (`AgentLink::handle_file_claim`).
//!
//! A file stream is matched against the current attempt's offer — path, size and hash — and
//! claimed *before* any byte of it is written, so a peer can neither write a file nobody offered
//! nor make the coordinator delete one (nothing is ever written that then has to be removed,
//! except the receiver's own temporary file). A claimed file is received at most once at a time.
//!
//! Time is an argument (monotonic milliseconds): the table remembers when result bytes last
//! arrived from the agent, so the link can end attempts whose files stopped coming.

use hsm_exec::process::TaskKey;
use hsm_protocol::{check_relative_path, is_sha256_hex, FileOffer};
use std::collections::HashMap;

/// Offered result files live under this directory of the task; anything else in a task
/// directory (params, command, logs) is the coordinator's own and never replaced by a peer.
pub const RESULTS_DIR: &str = "results/";

/// A file offered and not yet received.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Wanted {
    size: u64,
    sha256: String,
    /// A stream carrying it is being received now.
    receiving: bool,
}

/// Why a file stream was not accepted. Nothing was written for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not a file the attempt offered (or it arrived already)")]
    NotOffered,
    #[error("it is arriving on another stream already")]
    Duplicate,
    #[error("it was offered as {offered_size} bytes with SHA-256 {offered_sha}, the stream announces {size} bytes with {sha}")]
    Differs {
        offered_size: u64,
        offered_sha: String,
        size: u64,
        sha: String,
    },
}

/// The offers of one agent's attempts.
#[derive(Debug)]
pub struct OfferBook {
    attempts: HashMap<TaskKey, HashMap<String, Wanted>>,
    /// When the agent last made progress sending results (or was last asked for them), ms.
    last_progress: u64,
}

impl OfferBook {
    pub fn new(now: u64) -> Self {
        OfferBook {
            attempts: HashMap::new(),
            last_progress: now,
        }
    }

    /// Records an attempt's offer. Files whose path or hash is unusable are not awaited; the
    /// returned problems say why (the attempt cannot be complete without them).
    pub fn offer(&mut self, key: TaskKey, files: Vec<FileOffer>, now: u64) -> Vec<String> {
        let mut problems = Vec::new();
        let entry = self.attempts.entry(key).or_default();
        for FileOffer { path, size, sha256 } in files {
            if let Some(why) = offer_problem(&path, &sha256) {
                problems.push(why);
                continue;
            }
            entry.insert(
                path,
                Wanted {
                    size,
                    sha256,
                    receiving: false,
                },
            );
        }
        if entry.is_empty() {
            self.attempts.remove(&key);
        } else {
            self.last_progress = now;
        }
        problems
    }

    /// How many files of the attempt are still awaited.
    pub fn awaiting(&self, key: TaskKey) -> usize {
        self.attempts.get(&key).map_or(0, HashMap::len)
    }

    /// The attempt's awaited paths, sorted (for a new fetch, or to name them).
    pub fn paths(&self, key: TaskKey) -> Vec<String> {
        let mut paths: Vec<String> = self
            .attempts
            .get(&key)
            .map(|files| files.keys().cloned().collect())
            .unwrap_or_default();
        paths.sort();
        paths
    }

    /// Attempts with files awaited.
    pub fn keys(&self) -> Vec<TaskKey> {
        let mut keys: Vec<TaskKey> = self.attempts.keys().copied().collect();
        keys.sort();
        keys
    }

    /// Accepts a stream announcing `path` of attempt `key` with this size and hash only if the
    /// attempt offered exactly that and no other stream carries it now; marks it as arriving.
    pub fn claim(
        &mut self,
        key: TaskKey,
        path: &str,
        size: u64,
        sha256: &str,
        now: u64,
    ) -> Result<(), Refusal> {
        let wanted = self
            .attempts
            .get_mut(&key)
            .and_then(|files| files.get_mut(path))
            .ok_or(Refusal::NotOffered)?;
        if wanted.receiving {
            return Err(Refusal::Duplicate);
        }
        if wanted.size != size || wanted.sha256 != sha256 {
            return Err(Refusal::Differs {
                offered_size: wanted.size,
                offered_sha: wanted.sha256.clone(),
                size,
                sha: sha256.to_string(),
            });
        }
        wanted.receiving = true;
        self.last_progress = now;
        Ok(())
    }

    /// Bytes of a claimed file arrived (at `at`; reported late by the shell, so never moves
    /// the time back).
    pub fn progress(&mut self, at: u64) {
        self.last_progress = self.last_progress.max(at);
    }

    /// The agent was (again) asked for files: waiting starts afresh.
    pub fn touch(&mut self, now: u64) {
        self.last_progress = now;
    }

    /// A claimed file arrived intact (or cannot arrive: `failed`). Returns whether the attempt
    /// now awaits nothing more.
    pub fn settle(&mut self, key: TaskKey, path: &str) -> bool {
        let Some(files) = self.attempts.get_mut(&key) else {
            return true;
        };
        files.remove(path);
        if files.is_empty() {
            self.attempts.remove(&key);
            true
        } else {
            false
        }
    }

    /// A claimed file's stream broke off (the connection dropped): it is awaited again, from a
    /// new fetch.
    pub fn release(&mut self, key: TaskKey, path: &str) {
        if let Some(wanted) = self.attempts.get_mut(&key).and_then(|f| f.get_mut(path)) {
            wanted.receiving = false;
        }
    }

    /// Stops waiting for any file of the attempt.
    pub fn forget(&mut self, key: TaskKey) {
        self.attempts.remove(&key);
    }

    pub fn clear(&mut self) {
        self.attempts.clear();
    }

    /// Whether files are awaited and none made progress for `limit`.
    pub fn stalled(&self, now: u64, limit_ms: u64) -> bool {
        !self.attempts.is_empty() && now.saturating_sub(self.last_progress) >= limit_ms
    }

    /// When waiting would count as stalled, while files are awaited.
    pub fn stall_deadline(&self, limit_ms: u64) -> Option<u64> {
        (!self.attempts.is_empty()).then(|| self.last_progress.saturating_add(limit_ms))
    }
}

/// Why an offered file cannot be accepted, by its text alone.
fn offer_problem(path: &str, sha256: &str) -> Option<String> {
    if let Err(e) = check_relative_path(path) {
        return Some(e.to_string());
    }
    if !path.starts_with(RESULTS_DIR) {
        return Some(format!(
            "offered {path:?}, which is not under {RESULTS_DIR}; only result files are received"
        ));
    }
    if !is_sha256_hex(sha256) {
        return Some(format!(
            "offered {path:?} with {sha256:?}, which is not a SHA-256"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: TaskKey = TaskKey {
        index: 3,
        attempt: 1,
    };

    fn sha(c: char) -> String {
        c.to_string().repeat(64)
    }

    fn offer(path: &str, size: u64, c: char) -> FileOffer {
        FileOffer {
            path: path.into(),
            size,
            sha256: sha(c),
        }
    }

    #[test]
    fn a_stream_is_accepted_only_for_what_the_attempt_offered_and_only_once() {
        let t0 = 1_000;
        let mut book = OfferBook::new(t0);
        let problems = book.offer(
            KEY,
            vec![
                offer("results/a.txt", 5, 'a'),
                offer("results/b.txt", 7, 'b'),
            ],
            t0,
        );
        assert!(problems.is_empty());
        assert_eq!(book.awaiting(KEY), 2);
        // Another attempt of the same task, another path, another size or hash: refused.
        let other = TaskKey {
            index: 3,
            attempt: 2,
        };
        assert_eq!(
            book.claim(other, "results/a.txt", 5, &sha('a'), t0),
            Err(Refusal::NotOffered)
        );
        assert_eq!(
            book.claim(KEY, "params.yaml", 5, &sha('a'), t0),
            Err(Refusal::NotOffered)
        );
        assert!(matches!(
            book.claim(KEY, "results/a.txt", 6, &sha('a'), t0),
            Err(Refusal::Differs { .. })
        ));
        assert!(matches!(
            book.claim(KEY, "results/a.txt", 5, &sha('c'), t0),
            Err(Refusal::Differs { .. })
        ));
        assert_eq!(book.claim(KEY, "results/a.txt", 5, &sha('a'), t0), Ok(()));
        // The same file on a second stream while the first is arriving.
        assert_eq!(
            book.claim(KEY, "results/a.txt", 5, &sha('a'), t0),
            Err(Refusal::Duplicate)
        );
        assert!(!book.settle(KEY, "results/a.txt"));
        // Sent again after it arrived: not offered any more.
        assert_eq!(
            book.claim(KEY, "results/a.txt", 5, &sha('a'), t0),
            Err(Refusal::NotOffered)
        );
        assert_eq!(book.claim(KEY, "results/b.txt", 7, &sha('b'), t0), Ok(()));
        // The connection dropped mid-way: awaited again, claimable again.
        book.release(KEY, "results/b.txt");
        assert_eq!(book.claim(KEY, "results/b.txt", 7, &sha('b'), t0), Ok(()));
        assert!(book.settle(KEY, "results/b.txt"));
        assert_eq!(book.awaiting(KEY), 0);
        assert!(book.keys().is_empty());
    }

    #[test]
    fn offers_outside_results_or_with_unusable_paths_or_hashes_are_not_awaited() {
        let t0 = 1_000;
        let mut book = OfferBook::new(t0);
        let long_name = format!("results/{}", "n".repeat(300));
        let problems = book.offer(
            KEY,
            vec![
                offer("stdout.log", 1, 'a'),
                offer("params.yaml", 1, 'a'),
                offer("results/../params.yaml", 1, 'a'),
                offer(&long_name, 1, 'a'),
                FileOffer {
                    path: "results/x".into(),
                    size: 1,
                    sha256: "not a hash".into(),
                },
                offer("results/ok.txt", 1, 'a'),
            ],
            t0,
        );
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(problems[0].contains("not under results/"), "{problems:?}");
        assert!(problems[3].contains("255"), "{problems:?}");
        assert_eq!(book.paths(KEY), vec!["results/ok.txt".to_string()]);
        // Nothing usable: the attempt awaits nothing.
        let other = TaskKey {
            index: 4,
            attempt: 1,
        };
        assert_eq!(book.offer(other, vec![offer("x", 1, 'a')], t0).len(), 1);
        assert_eq!(book.awaiting(other), 0);
    }

    #[test]
    fn waiting_stalls_only_while_files_are_awaited_without_progress() {
        let t0 = 1_000;
        let limit = 120_000;
        let mut book = OfferBook::new(t0);
        assert!(!book.stalled(t0 + limit * 2, limit), "nothing awaited");
        book.offer(KEY, vec![offer("results/a.txt", 5, 'a')], t0);
        assert!(!book.stalled(t0 + limit / 2, limit));
        book.progress(t0 + limit / 2);
        assert!(!book.stalled(t0 + limit, limit));
        assert!(book.stalled(t0 + limit / 2 + limit, limit));
        book.touch(t0 + limit * 2);
        assert!(!book.stalled(t0 + limit * 2, limit));
        book.forget(KEY);
        assert!(!book.stalled(t0 + limit * 10, limit));
    }
}
