//! Identifier newtypes carried on the wire, all made by one macro so they behave alike.
//!
//! Each id is `#[serde(transparent)]`: on the wire it is exactly its inner value, so wrapping a
//! number in a newtype costs nothing and a peer written in another language sees plain values.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Defines an id newtype with a public inner value, serde-transparent, displayed as its value.
///
/// Extra derives (`Copy` for the numeric ids) follow the inner type after a semicolon.
macro_rules! define_id {
    ($(#[$meta:meta])* $name:ident($inner:ty) $(; $($extra:ident),+)?) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize
            $($(, $extra)+)?
        )]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl From<$inner> for $name {
            fn from(value: $inner) -> Self {
                Self(value)
            }
        }
    };
}

define_id!(
    /// A sweep's id as the coordinator names it (the sweep directory's name); agents key their
    /// work directories and ledgers by it.
    SweepId(String)
);

define_id!(
    /// A task's number within its sweep, 1-based like `task_001` in the sweep directory.
    TaskIndex(u64); Copy
);

define_id!(
    /// Which run of a task this is, 1-based; a retry or a re-run after a lost agent is attempt + 1,
    /// and anything reported for an attempt that is no longer current is stale.
    Attempt(u32); Copy
);

define_id!(
    /// Position of an event in the stream of one task attempt, starting at 1 without gaps, so the
    /// coordinator applies an event once (seq = last applied + 1) and drops replays (seq <= last).
    Seq(u64); Copy
);

impl SweepId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for SweepId {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl Attempt {
    /// Every task starts at attempt 1.
    pub const FIRST: Attempt = Attempt(1);

    /// The attempt after this one, saturating rather than wrapping (four billion retries never
    /// happen, and wrapping would make a new attempt look stale).
    #[must_use]
    pub fn next(self) -> Attempt {
        Attempt(self.0.saturating_add(1))
    }
}

impl Seq {
    /// The first event of every task attempt.
    pub const FIRST: Seq = Seq(1);

    /// The sequence number after this one, saturating for the same reason as [`Attempt::next`].
    #[must_use]
    pub fn next(self) -> Seq {
        Seq(self.0.saturating_add(1))
    }
}

/// True when `id` is safe as one directory name, the rule for sweep ids on both sides: the
/// coordinator's `--sweep-id` and an agent's task directories (letters, digits, `_`, `-`, `.`,
/// not starting with `.`, at most 128 bytes).
pub fn valid_sweep_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_display_as_their_value() {
        assert_eq!(SweepId::from("sweep_a").to_string(), "sweep_a");
        assert_eq!(TaskIndex(7).to_string(), "7");
        assert_eq!(Attempt::FIRST.next().to_string(), "2");
        assert_eq!(Seq(u64::MAX).next(), Seq(u64::MAX));
    }

    #[test]
    fn ids_are_transparent_on_the_wire() {
        let wrapped = rmp_serde::to_vec_named(&TaskIndex(300)).unwrap();
        let plain = rmp_serde::to_vec_named(&300u64).unwrap();
        assert_eq!(wrapped, plain);
        let wrapped = rmp_serde::to_vec_named(&SweepId::from("s")).unwrap();
        assert_eq!(wrapped, rmp_serde::to_vec_named("s").unwrap());
    }
}
