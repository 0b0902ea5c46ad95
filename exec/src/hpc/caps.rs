//! How many jobs may go to the scheduler now: the user's `hpc.max_jobs` and what refused
//! submissions taught about the cluster's limit on queued jobs (`MaxSubmitJobs` and the like,
//! which count every array element as a job). Plain functions; the backend keeps the numbers.

/// How many more of our jobs may be submitted while `held` are queued or running: `None` when
/// nothing limits them.
pub fn room(max_jobs: Option<u32>, learned: Option<usize>, held: usize) -> Option<usize> {
    let cap = match (max_jobs.map(|m| m as usize), learned) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    cap.map(|cap| cap.saturating_sub(held))
}

/// The cap to keep after the scheduler refused `tried` more jobs for a limit while `held` of
/// ours were queued or running. It took `held`, so at least that many fit (unless other jobs
/// of the user's share the limit): keep to that. With none of ours queued, the limit is below
/// `tried`: half of it is tried next. Never below one, and never above an earlier cap.
pub fn learned_after_refusal(held: usize, tried: usize, earlier: Option<usize>) -> usize {
    let cap = if held > 0 { held } else { tried / 2 };
    let cap = cap.max(1);
    earlier.map_or(cap, |earlier| earlier.min(cap).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_what_the_lower_cap_leaves() {
        assert_eq!(room(None, None, 5), None);
        assert_eq!(room(Some(8), None, 5), Some(3));
        assert_eq!(room(Some(8), Some(4), 1), Some(3));
        assert_eq!(room(None, Some(4), 6), Some(0));
        assert_eq!(room(Some(8), Some(20), 8), Some(0));
    }

    #[test]
    fn a_refusal_teaches_a_cap_that_fits() {
        // 8 of ours in the queue and 10 more refused: the limit is about 8.
        assert_eq!(learned_after_refusal(8, 10, None), 8);
        // An array of 10 refused with nothing queued (limit 8): 5 next.
        assert_eq!(learned_after_refusal(0, 10, None), 5);
        // Then 5 refused too (other jobs of the user's fill the quota): 2, then 1, never 0.
        assert_eq!(learned_after_refusal(0, 5, Some(5)), 2);
        assert_eq!(learned_after_refusal(0, 1, Some(1)), 1);
        // A later refusal never raises the cap.
        assert_eq!(learned_after_refusal(9, 3, Some(6)), 6);
    }
}
