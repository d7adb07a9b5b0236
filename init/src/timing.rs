//! The boot time split the ready line reports.

use std::time::Duration;

use berth_layout::console::{NOT_READY, READY_PREFIX, UNITS_STOPPED_PREFIX};

use crate::status::UnitState;

/// Written by systemd-boot: microseconds from firmware start until it
/// started the kernel.
pub const LOADER_TIME_EXEC: &str = "/sys/firmware/efi/efivars/LoaderTimeExecUSec-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

/// CLOCK_MONOTONIC now: read first thing in PID1, it is how long the kernel
/// took to reach init.
pub fn monotonic_now() -> Duration {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    Duration::new(u64::try_from(ts.tv_sec).unwrap_or(0), u32::try_from(ts.tv_nsec).unwrap_or(0))
}

/// Parses an efivarfs file holding a systemd-boot time: 4 bytes of
/// attributes, then a NUL-terminated UTF-16LE decimal number of
/// microseconds.
pub fn parse_loader_usec(bytes: &[u8]) -> Option<Duration> {
    let text = bytes.get(4..)?;
    let units: Vec<u16> = text
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c.first().copied().unwrap_or(0), c.get(1).copied().unwrap_or(0)]))
        .take_while(|u| *u != 0)
        .collect();
    let s = String::from_utf16(&units).ok()?;
    let usec: u64 = s.trim().parse().ok()?;
    Some(Duration::from_micros(usec))
}

/// Reads the loader's time, if the firmware and loader reported it.
pub fn loader_time() -> Option<Duration> {
    std::fs::read(LOADER_TIME_EXEC).ok().and_then(|b| parse_loader_usec(&b))
}

fn millis(d: Duration) -> u128 {
    // Round to the millisecond, so that the parts add up to the total
    // exactly as printed.
    (d.as_micros() + 500) / 1000
}

fn secs(ms: u128) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// Where the time before PID1 went: the kernel's share and, when stage 0
/// ran from the initramfs, its share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BeforeUserspace {
    /// CLOCK_MONOTONIC when the kernel started its first userspace process.
    pub kernel: Duration,
    /// Stage 0's time, from its start until this PID1 started.
    pub initrd: Option<Duration>,
}

impl BeforeUserspace {
    /// Splits `start` (this PID1's start) at stage 0's start, when stage
    /// 0 ran before it (`initrd_started`, from its environment).
    pub fn split(start: Duration, initrd_started: Option<Duration>) -> BeforeUserspace {
        match initrd_started.filter(|s| *s <= start) {
            Some(s) => BeforeUserspace { kernel: s, initrd: Some(start - s) },
            None => BeforeUserspace { kernel: start, initrd: None },
        }
    }
}

/// `berth: ready in X s (firmware+loader A s, kernel B s, initrd D s, userspace C s)`,
/// systemd-analyze's split; without stage 0 the initrd part is left out.
pub fn ready_line(loader: Option<Duration>, before: BeforeUserspace, userspace: Duration) -> String {
    let (a, b, d, c) = (loader.map(millis), millis(before.kernel), before.initrd.map(millis), millis(userspace));
    let total = a.unwrap_or(0) + b + d.unwrap_or(0) + c;
    let firmware = match a {
        Some(a) => format!("firmware+loader {} s", secs(a)),
        None => "firmware+loader n/a".to_string(),
    };
    let initrd = d.map(|d| format!(", initrd {} s", secs(d))).unwrap_or_default();
    format!("{READY_PREFIX}{} s ({firmware}, kernel {} s{initrd}, userspace {} s)", secs(total), secs(b), secs(c))
}

/// What ends the ready line when units are not ready:
/// `; not ready: etcd (starting), x (failed)`; empty when all are.
pub fn not_ready_suffix(not_ready: &[(String, UnitState)]) -> String {
    if not_ready.is_empty() {
        return String::new();
    }
    let units: Vec<String> = not_ready.iter().map(|(name, state)| format!("{name} ({})", state.as_str())).collect();
    format!("{NOT_READY}{}", units.join(", "))
}

/// `berth: units stopped in X.XXX s`.
pub fn units_stopped_line(took: Duration) -> String {
    format!("{UNITS_STOPPED_PREFIX}{} s", secs(millis(took)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn efi_var(text: &str) -> Vec<u8> {
        let mut v = vec![0x06, 0, 0, 0];
        for u in text.encode_utf16().chain([0]) {
            v.extend_from_slice(&u.to_le_bytes());
        }
        v
    }

    #[test]
    fn loader_time_is_utf16_microseconds_after_attributes() {
        assert_eq!(parse_loader_usec(&efi_var("5432100")), Some(Duration::from_micros(5_432_100)));
        // Without the terminating NUL too.
        let mut v = efi_var("42");
        v.truncate(v.len() - 2);
        assert_eq!(parse_loader_usec(&v), Some(Duration::from_micros(42)));
    }

    #[test]
    fn malformed_loader_time_is_none() {
        assert_eq!(parse_loader_usec(&[]), None);
        assert_eq!(parse_loader_usec(&[6, 0, 0, 0]), None);
        assert_eq!(parse_loader_usec(&efi_var("12x")), None);
        assert_eq!(parse_loader_usec(&[6, 0, 0, 0, 0xff]), None);
    }

    #[test]
    fn the_ready_line_ends_with_the_units_not_ready_and_the_stop_line_says_how_long() {
        assert_eq!(not_ready_suffix(&[]), "");
        let units = [("etcd".to_string(), UnitState::Degraded), ("x".to_string(), UnitState::Failed)];
        assert_eq!(not_ready_suffix(&units), "; not ready: etcd (degraded), x (failed)");
        assert_eq!(units_stopped_line(Duration::from_micros(8_412_400)), "berth: units stopped in 8.412 s");
    }

    #[test]
    fn ready_line_adds_up_the_parts() {
        let line = ready_line(
            Some(Duration::from_micros(5_432_100)),
            BeforeUserspace::split(Duration::from_millis(2_100), None),
            Duration::from_micros(1_234_567),
        );
        assert_eq!(line, "berth: ready in 8.767 s (firmware+loader 5.432 s, kernel 2.100 s, userspace 1.235 s)");
        assert!(line.starts_with(READY_PREFIX));
        let staged = BeforeUserspace::split(Duration::from_millis(2_100), Some(Duration::from_millis(1_800)));
        assert_eq!(
            ready_line(None, staged, Duration::from_millis(1_000)),
            "berth: ready in 3.100 s (firmware+loader n/a, kernel 1.800 s, initrd 0.300 s, userspace 1.000 s)"
        );
    }

    #[test]
    fn ready_line_without_loader_time_says_na() {
        assert_eq!(
            ready_line(None, BeforeUserspace::split(Duration::from_millis(900), None), Duration::from_millis(50)),
            "berth: ready in 0.950 s (firmware+loader n/a, kernel 0.900 s, userspace 0.050 s)"
        );
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_now();
        let b = monotonic_now();
        assert!(b >= a && a > Duration::ZERO);
    }
}
