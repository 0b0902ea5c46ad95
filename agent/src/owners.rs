//! Which coordinator a sweep on this agent belongs to: the identity (certificate fingerprint)
//! that submitted it. Only that identity sees the sweep's events and may cancel, acknowledge,
//! fetch, attach or finish it; every other authorized coordinator is refused, so two users
//! sharing an agent cannot read or change each other's sweeps. One identity (one `HSM_HOME`)
//! runs any number of sweeps, and `sweep complete` from a new process is the same identity.
//!
//! A sweep is bound by its first `Submit` and stays bound (the ledger keeps it across restarts,
//! and the binding outlives the sweep's tasks, so nobody can later submit into its directories).
//! Sweeps taken up from a ledger written before owners were kept have none: the first
//! coordinator that addresses one while the agent still holds its tasks takes it, which is the
//! coordinator that is reconnecting to it in practice.

use hsm_protocol::{display_safe, SweepId};

/// What a request for a sweep may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The requester owns the sweep, or the sweep is unknown and the request touches nothing.
    Allow,
    /// The sweep has no owner yet: it becomes the requester's, then the request goes on.
    Bind,
    /// The sweep belongs to another identity.
    Refuse,
}

/// The rule: `owner` of the sweep (if any), whether the request is a submission, and whether
/// the agent holds tasks of the sweep (a sweep from an old ledger).
pub fn decide(owner: Option<&str>, who: &str, submit: bool, holds_tasks: bool) -> Decision {
    match owner {
        Some(owner) if owner == who => Decision::Allow,
        Some(_) => Decision::Refuse,
        // Binding on a request that finds nothing (a cancel or an attach of a sweep never seen)
        // would let one coordinator reserve sweep ids another is about to use.
        None if submit || holds_tasks => Decision::Bind,
        None => Decision::Allow,
    }
}

/// The `Error` text for a refused request: it names the sweep the requester gave and why, and
/// nothing about the sweep itself.
pub fn refusal(what: &str, sweep: &SweepId) -> String {
    format!(
        "refused {what} for sweep {}: this agent holds a sweep of that id submitted by another \
         coordinator identity, and a sweep is seen and changed only by the identity (HSM_HOME) \
         that submitted it",
        display_safe(sweep.as_str())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_owner_is_allowed_and_an_unowned_sweep_is_bound_when_it_matters() {
        use Decision::*;
        for submit in [false, true] {
            for holds in [false, true] {
                assert_eq!(decide(Some("a"), "a", submit, holds), Allow);
                assert_eq!(decide(Some("a"), "b", submit, holds), Refuse);
            }
        }
        assert_eq!(decide(None, "b", true, false), Bind);
        assert_eq!(decide(None, "b", false, true), Bind);
        assert_eq!(decide(None, "b", false, false), Allow);
    }

    #[test]
    fn the_refusal_names_the_sweep_safely() {
        let text = refusal("cancel", &SweepId::from("s1\x1b]0;x\x07"));
        assert!(
            text.starts_with("refused cancel for sweep s1\\x1b]0;x\\x07:"),
            "{text}"
        );
    }
}
