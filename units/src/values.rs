//! The values a unit file writes as text: durations, sizes, signals.

use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::Signal;

/// humantime's units for months and years: `"1M"` is a month there, too
/// easily meant as a minute, and no timeout or interval is that long.
const CALENDAR_UNITS: [&str; 8] = ["M", "month", "months", "y", "yr", "yrs", "year", "years"];

/// A duration in humantime's format: numbers with units, summed (`"500ms"`,
/// `"10s"`, `"2m"`, `"1h"`, `"1m 30s"`, `"2min"`, `"1.5s"`). `None` for
/// what humantime rejects, and for two things it accepts that a unit file
/// should not: a number without a unit (`"10"`, even `"0"`: seconds or
/// milliseconds?) and months or years (`"1M"`, `"1y"`).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut units = s.split(|c: char| !c.is_alphabetic()).filter(|u| !u.is_empty()).peekable();
    units.peek()?;
    if units.any(|u| CALENDAR_UNITS.contains(&u)) {
        return None;
    }
    humantime::parse_duration(s).ok()
}

/// `"512M"`, `"2G"`, `"1048576"`: bytes, or a whole number with K, M, G or
/// T (powers of 1024).
pub fn parse_size(s: &str) -> Option<u64> {
    let (digits, shift) = match s.char_indices().last()? {
        (i, 'K') => (s.get(..i)?, 10),
        (i, 'M') => (s.get(..i)?, 20),
        (i, 'G') => (s.get(..i)?, 30),
        (i, 'T') => (s.get(..i)?, 40),
        _ => (s, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(1u64 << shift)
}

/// `"SIGTERM"` or `"TERM"`.
pub fn parse_signal(s: &str) -> Option<Signal> {
    let name = if s.starts_with("SIG") { s.to_owned() } else { format!("SIG{s}") };
    Signal::from_str(&name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_humantimes_units_but_not_bare_numbers_or_months() {
        assert_eq!(parse_duration("1m 30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("2min"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1d"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("250us"), Some(Duration::from_micros(250)));
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        assert_eq!(humantime::parse_duration("0"), Ok(Duration::ZERO), "humantime takes a bare 0");
        for bad in ["0", "15", "1M", "2 months", "1y", "1yr", "5m 1year"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }
}
