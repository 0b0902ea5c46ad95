//! Human durations in config files and flags: `90s`, `15m`, `2h`, `1h30m`, `1d`, `HH:MM:SS`,
//! Slurm's `D-HH:MM:SS`, and a bare number of seconds (Python HSM v1 wrote walltimes that way).

use std::time::Duration;

/// The forms we accept, for error messages.
const FORMS: &str =
    "write e.g. 90s, 15m, 2h, 1h30m, 1d, HH:MM:SS, D-HH:MM:SS or a number of seconds";

/// Parses a duration. Errors name the input and the accepted forms.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let fail = |why: &str| {
        if why.is_empty() {
            format!("`{text}` is not a duration ({FORMS})")
        } else {
            format!("`{text}` is not a duration: {why} ({FORMS})")
        }
    };
    if trimmed.is_empty() {
        return Err(format!("empty duration ({FORMS})"));
    }
    if trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return trimmed
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| fail("too large"));
    }
    let slurm_days = trimmed
        .split_once('-')
        .is_some_and(|(days, _)| digits(days).is_some());
    let seconds = if trimmed.contains(':') || slurm_days {
        parse_clock(trimmed).map_err(fail)?
    } else {
        parse_units(trimmed).map_err(fail)?
    };
    Ok(Duration::from_secs(seconds))
}

/// `H:MM:SS`, and with a day prefix Slurm's `D-H`, `D-H:MM`, `D-H:MM:SS`. Two parts alone
/// (`05:00`) are refused: Slurm reads them as MM:SS, people often mean HH:MM.
fn parse_clock(text: &str) -> Result<u64, &'static str> {
    let (days, clock) = match text.split_once('-') {
        Some((days, clock)) => (
            Some(digits(days).ok_or("the days before `-` are not a number")?),
            clock,
        ),
        None => (None, text),
    };
    let parts: Vec<&str> = clock.split(':').collect();
    if days.is_none() && parts.len() != 3 {
        return Err("two-part times are ambiguous (MM:SS or HH:MM?); write HH:MM:SS");
    }
    if parts.len() > 3 {
        return Err("too many `:` parts");
    }
    let mut numbers = [0u64; 3];
    for (slot, part) in numbers.iter_mut().zip(&parts) {
        *slot = digits(part).ok_or("each part must be a whole number")?;
    }
    let [hours, minutes, seconds] = numbers;
    if parts.len() >= 2 && minutes >= 60 {
        return Err("minutes must be below 60");
    }
    if parts.len() == 3 && seconds >= 60 {
        return Err("seconds must be below 60");
    }
    days.unwrap_or(0)
        .checked_mul(86_400)
        .and_then(|d| d.checked_add(hours.checked_mul(3_600)?))
        .and_then(|t| t.checked_add(minutes * 60 + seconds))
        .ok_or("too large")
}

/// `1d2h3m4s` (any subset, largest unit first, each once; spaces between parts allowed).
fn parse_units(text: &str) -> Result<u64, &'static str> {
    if text.contains('.') {
        return Err("fractions are not supported, combine units instead (1h30m)");
    }
    let mut total: u64 = 0;
    let mut last_rank = usize::MAX;
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let n_digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if n_digits == 0 {
            return Err("expected a number before each unit");
        }
        let number: u64 = rest[..n_digits].parse().map_err(|_| "too large")?;
        rest = &rest[n_digits..];
        let (rank, factor) = match rest.as_bytes().first() {
            Some(b'd') => (0, 86_400),
            Some(b'h') => (1, 3_600),
            Some(b'm') => (2, 60),
            Some(b's') => (3, 1),
            Some(_) => return Err("units are d, h, m and s"),
            None => return Err("a number inside a duration needs a unit (d, h, m, s)"),
        };
        if last_rank != usize::MAX && rank <= last_rank {
            return Err("write units from largest to smallest, each once");
        }
        last_rank = rank;
        total = number
            .checked_mul(factor)
            .and_then(|v| total.checked_add(v))
            .ok_or("too large")?;
        rest = rest[1..].trim_start();
    }
    Ok(total)
}

fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Formats whole seconds in the compact unit form that `parse_duration` reads back:
/// 5400 s → `1h30m`, 90 s → `1m30s`, 0 → `0s`. Sub-second parts are dropped.
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&(secs / size).to_string());
            out.push_str(unit);
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(text: &str) -> u64 {
        parse_duration(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .as_secs()
    }

    #[test]
    fn every_accepted_form() {
        assert_eq!(secs("90s"), 90);
        assert_eq!(secs("15m"), 900);
        assert_eq!(secs("2h"), 7_200);
        assert_eq!(secs("1h30m"), 5_400);
        assert_eq!(secs("1h 30m"), 5_400);
        assert_eq!(secs("1d"), 86_400);
        assert_eq!(secs("1d2h3m4s"), 93_784);
        assert_eq!(secs("04:00:00"), 14_400);
        assert_eq!(secs("23:59:59"), 86_399);
        assert_eq!(secs("100:00:00"), 360_000);
        assert_eq!(secs("1-12:00:00"), 129_600);
        assert_eq!(secs("2-06"), 194_400);
        assert_eq!(secs("3600"), 3_600);
        assert_eq!(secs(" 45 "), 45);
        assert_eq!(secs("0"), 0);
    }

    #[test]
    fn errors_name_the_input_and_the_forms() {
        for bad in [
            "",
            "2hours",
            "1.5h",
            "h",
            "5x",
            "30m1h",
            "1h1h",
            "05:00",
            "1:60:00",
            "1:00:61",
            "a:b:c",
            "-5s",
            "1:2:3:4",
            "x-1:00:00",
            "99999999999999999999",
        ] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.contains("90s, 15m"), "{bad}: {err}");
            if !bad.is_empty() {
                assert!(err.contains(&format!("`{bad}`")), "{bad}: {err}");
            }
        }
        assert!(parse_duration("1.5h").unwrap_err().contains("1h30m"));
        assert!(parse_duration("05:00").unwrap_err().contains("ambiguous"));
        assert!(parse_duration("999999999999999d")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn formats_compactly_and_reads_back() {
        assert_eq!(format_duration(Duration::from_secs(5_400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_secs(0)), "0s");
        assert_eq!(format_duration(Duration::from_secs(86_400 + 3_600)), "1d1h");
        assert_eq!(format_duration(Duration::from_millis(10_500)), "10s");
        for n in [1, 59, 60, 61, 3_599, 3_600, 86_399, 86_400, 1_000_000] {
            let d = Duration::from_secs(n);
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
    }
}
