//! Times on the wire: milliseconds since the Unix epoch, as `i64` (events' `at_ms`, the
//! coordinator's records), one conversion for both sides.

use std::time::SystemTime;

/// `at` in milliseconds since the Unix epoch; negative before it, saturating far from it.
pub fn epoch_ms(at: SystemTime) -> i64 {
    match at.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    epoch_ms(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_before_the_epoch_are_negative() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_500);
        assert_eq!(epoch_ms(at), 1_500);
        let before = SystemTime::UNIX_EPOCH - Duration::from_millis(2_000);
        assert_eq!(epoch_ms(before), -2_000);
    }
}
