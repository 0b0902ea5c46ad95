//! Time as text: Unix milliseconds as RFC 3339 UTC, for every view and the results table.

/// Unix milliseconds as an RFC 3339 UTC timestamp (`2026-11-28T17:48:55.123Z`).
pub fn format_utc(ms: i64) -> String {
    let mut out = String::with_capacity(24);
    push_utc(&mut out, ms);
    out
}

/// `format_utc` appended to `out`, digit by digit: `task_mapping.yaml` writes two for each of
/// a million tasks, and `format!` was a fifth of its time.
pub fn push_utc(out: &mut String, ms: i64) {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if (0..=9999).contains(&year) {
        push_digits(out, year, 4);
    } else {
        // Outside what four digits hold (never a real task's time): as `format!` writes it.
        out.push_str(&format!("{year:04}"));
    }
    for (sep, value, width) in [
        ('-', month, 2),
        ('-', day, 2),
        ('T', rem / 3600, 2),
        (':', rem % 3600 / 60, 2),
        (':', rem % 60, 2),
        ('.', millis, 3),
    ] {
        out.push(sep);
        push_digits(out, value, width);
    }
    out.push('Z');
}

/// `value` (0 ≤ value < 10^width) as exactly `width` decimal digits.
fn push_digits(out: &mut String, value: i64, width: u32) {
    let mut div = 10_i64.pow(width - 1);
    while div > 0 {
        out.push(char::from(b'0' + (value / div % 10) as u8));
        div /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting_matches_known_instants() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_utc(1_795_888_135_123), "2026-11-28T17:48:55.123Z");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_utc(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(format_utc(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        assert_eq!(format_utc(253_402_300_800_000), "10000-01-01T00:00:00.000Z");
    }

    #[test]
    fn push_utc_appends_what_format_utc_returns() {
        let mut out = String::from("at ");
        push_utc(&mut out, 1_700_000_000_007);
        push_utc(&mut out, 86_399_999);
        assert_eq!(out, "at 2023-11-14T22:13:20.007Z1970-01-01T23:59:59.999Z");
    }
}
