//! Times on the wire: milliseconds since the Unix epoch, as `i64` (events' `at_ms`, the
//! coordinator's records), one conversion for both sides; and the agent's ledger retention,
//! which the coordinator checks before it deploys an agent with one.

use std::time::{Duration, SystemTime};

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

/// An agent's `--ledger-retention` (which `agent deploy` checks before it starts one with it): `30d`, `12h`, `90m`, `45s`, `1d12h`, a number of seconds; `off` (or
/// `0`) keeps everything for ever.
pub fn parse_retention(text: &str) -> Result<Option<Duration>, String> {
    let t = text.trim();
    if matches!(t, "off" | "never" | "0") {
        return Ok(None);
    }
    let fail = || {
        format!(
            "`{text}` is not a duration: write e.g. 30d, 12h, 90m, 1d12h, a number of seconds, \
             or `off`"
        )
    };
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse()
            .map(|s| Some(Duration::from_secs(s)))
            .map_err(|_| fail());
    }
    let mut total: u64 = 0;
    let mut rest = t;
    if rest.is_empty() {
        return Err(fail());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let number: u64 = rest[..digits].parse().map_err(|_| fail())?;
        let factor = match rest.as_bytes().get(digits) {
            Some(b'd') => 86_400,
            Some(b'h') => 3_600,
            Some(b'm') => 60,
            Some(b's') => 1,
            _ => return Err(fail()),
        };
        total = number
            .checked_mul(factor)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(fail)?;
        rest = &rest[digits + 1..];
    }
    if total == 0 {
        return Ok(None);
    }
    Ok(Some(Duration::from_secs(total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_before_the_epoch_are_negative() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_500);
        assert_eq!(epoch_ms(at), 1_500);
        let before = SystemTime::UNIX_EPOCH - Duration::from_millis(2_000);
        assert_eq!(epoch_ms(before), -2_000);
    }

    #[test]
    fn retention_durations_parse_and_off_disables() {
        let d = |s: u64| Ok(Some(Duration::from_secs(s)));
        assert_eq!(parse_retention("30d"), d(30 * 86_400));
        assert_eq!(parse_retention("1d12h"), d(36 * 3_600));
        assert_eq!(parse_retention("2s"), d(2));
        assert_eq!(parse_retention("90"), d(90));
        assert_eq!(parse_retention("off"), Ok(None));
        assert_eq!(parse_retention("0"), Ok(None));
        assert_eq!(parse_retention("0d"), Ok(None));
        for bad in ["", "3w", "d", "1.5d", "-1d", "12h5"] {
            let e = parse_retention(bad).unwrap_err();
            assert!(e.contains("30d") && e.contains("off"), "{bad}: {e}");
        }
    }
}
