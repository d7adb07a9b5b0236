//! Reading the serial console: PID1's ready line, failure markers, tails.

use berth_layout::console::{EMERGENCY_PREFIX, NOT_READY, READY_PREFIX};

use crate::error::{Error, Result};

/// How long each phase of a boot took, in seconds, as PID1's ready line
/// says: `berth: ready in X.XXX s (firmware+loader A s, kernel B s, initrd D s, userspace C s)`
/// (no initrd part on images from before stage 0),
/// and the units it names as not ready (`; not ready: etcd (starting)`).
#[derive(Clone, Debug, PartialEq)]
pub struct BootTimes {
    pub total: f64,
    /// `None` when the firmware did not say (`n/a`: no EFI loader timestamps).
    pub firmware_loader: Option<f64>,
    pub kernel: f64,
    /// Stage 0 in the initramfs: `None` on lines without the part.
    pub initrd: Option<f64>,
    pub userspace: f64,
    /// The units the line names as not ready (their states left out), in
    /// its order; empty when it names none (and for lines of older images).
    pub not_ready: Vec<String>,
}

impl BootTimes {
    /// Parses a console line holding PID1's ready line (text before the
    /// prefix, e.g. interleaved kernel output, is ignored).
    pub fn parse(line: &str) -> Result<BootTimes> {
        let bad = |why: &str| Error::Parse(format!("ready line {line:?}: {why}"));
        let at = line.find(READY_PREFIX).ok_or_else(|| bad("no ready prefix"))?;
        let rest = line[at + READY_PREFIX.len()..].trim_end();
        let (rest, not_ready) = match rest.split_once(NOT_READY) {
            Some((times, units)) => (times, not_ready_units(units).ok_or_else(|| bad("expected `UNIT (STATE), ...`"))?),
            None => (rest, Vec::new()),
        };
        let (total, rest) = rest.split_once(" s (").ok_or_else(|| bad("expected `<total> s (`"))?;
        let total = seconds(total).ok_or_else(|| bad("total is not a number"))?;
        let inner = rest.strip_suffix(')').ok_or_else(|| bad("expected a closing parenthesis"))?;
        let (mut fw, mut kernel, mut initrd, mut user) = (None, None, None, None);
        for part in inner.split(',') {
            let part = part.trim();
            let (name, value) = part.split_once(' ').ok_or_else(|| bad("expected `<name> <seconds> s`"))?;
            let value = value.trim();
            let parsed = if value == "n/a" {
                None
            } else {
                let v =
                    value.strip_suffix(" s").and_then(seconds).ok_or_else(|| bad("expected `<seconds> s` or `n/a`"))?;
                Some(v)
            };
            match name {
                "firmware+loader" => fw = Some(parsed),
                "kernel" => kernel = Some(parsed),
                "initrd" => initrd = Some(parsed.ok_or_else(|| bad("initrd time is n/a"))?),
                "userspace" => user = Some(parsed),
                _ => return Err(bad(&format!("unknown part {name:?}"))),
            }
        }
        Ok(BootTimes {
            total,
            firmware_loader: fw.ok_or_else(|| bad("no firmware+loader part"))?,
            kernel: kernel.ok_or_else(|| bad("no kernel part"))?.ok_or_else(|| bad("kernel time is n/a"))?,
            initrd,
            userspace: user.ok_or_else(|| bad("no userspace part"))?.ok_or_else(|| bad("userspace time is n/a"))?,
            not_ready,
        })
    }
}

impl BootTimes {
    /// Seconds from the kernel's start to the ready line: kernel, initrd
    /// and userspace (firmware and loader left out).
    pub fn since_kernel(&self) -> f64 {
        self.kernel + self.initrd.unwrap_or(0.0) + self.userspace
    }
}

/// `etcd (starting), x (failed)` -> the unit names.
fn not_ready_units(list: &str) -> Option<Vec<String>> {
    list.split(", ")
        .map(|item| {
            let (name, state) = item.trim().split_once(" (")?;
            let ok = !name.is_empty() && !name.contains(' ') && state.strip_suffix(')').is_some_and(|s| !s.is_empty());
            ok.then(|| name.to_string())
        })
        .collect()
}

fn seconds(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0)
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Console lines, with carriage returns and a torn last line handled:
/// only complete lines (ended by `\n`) are returned, so a line is never
/// matched while half written.
pub(crate) fn complete_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    let mut offset = 0;
    complete.split_inclusive('\n').map(move |l| {
        let start = offset;
        offset += l.len();
        (start, l.trim_end_matches(['\n', '\r']))
    })
}

/// Byte offset just past the `n`th (1-based) complete line containing
/// `pattern`, with that line.
pub(crate) fn nth_line(text: &str, n: usize, mut matches: impl FnMut(&str) -> bool) -> Option<(usize, &str)> {
    complete_lines(text).filter(|(_, l)| matches(l)).nth(n.checked_sub(1)?).map(|(start, l)| (start + l.len(), l))
}

pub(crate) fn count_lines(text: &str, pattern: &str) -> usize {
    complete_lines(text).filter(|(_, l)| l.contains(pattern)).count()
}

pub(crate) fn is_ready_line(l: &str) -> bool {
    l.contains(READY_PREFIX)
}

/// A line after `from` that shows the boot failed: PID1's emergency line or
/// a kernel panic.
pub(crate) enum Failure<'a> {
    Emergency(&'a str),
    Panic(&'a str),
}

pub(crate) fn failure_after(text: &str, from: usize) -> Option<Failure<'_>> {
    complete_lines(text).filter(|(start, _)| *start >= from).find_map(|(_, l)| {
        if l.contains(EMERGENCY_PREFIX) {
            Some(Failure::Emergency(l))
        } else if l.contains("Kernel panic") {
            Some(Failure::Panic(l))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_ready_line() {
        let r =
            BootTimes::parse("berth: ready in 21.346 s (firmware+loader 9.120 s, kernel 2.003 s, userspace 10.223 s)")
                .unwrap();
        assert_eq!(
            r,
            BootTimes {
                total: 21.346,
                firmware_loader: Some(9.12),
                kernel: 2.003,
                initrd: None,
                userspace: 10.223,
                not_ready: vec![]
            }
        );
        let r = BootTimes::parse(
            "berth: ready in 3.600 s (firmware+loader n/a, kernel 1.200 s, initrd 0.100 s, userspace 2.300 s)",
        )
        .unwrap();
        assert_eq!((r.kernel, r.initrd, r.userspace), (1.2, Some(0.1), 2.3));
        assert!((r.since_kernel() - 3.6).abs() < 1e-9);
    }

    #[test]
    fn the_units_not_ready_are_parsed_after_the_times() {
        let r = BootTimes::parse(
            "berth: ready in 21.346 s (firmware+loader 9.120 s, kernel 2.003 s, userspace 10.223 s); \
             not ready: etcd (starting), getty@hvc0 (failed)",
        )
        .unwrap();
        assert_eq!((r.total, r.userspace), (21.346, 10.223));
        assert_eq!(r.not_ready, ["etcd", "getty@hvc0"]);
        for bad in [
            "berth: ready in 1.0 s (firmware+loader 1 s, kernel 1 s, userspace 2 s); not ready: etcd",
            "berth: ready in 1.0 s (firmware+loader 1 s, kernel 1 s, userspace 2 s); not ready: ",
            "berth: ready in 1.0 s (firmware+loader 1 s, kernel 1 s, userspace 2 s); not ready: etcd ()",
        ] {
            let e = BootTimes::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn firmware_may_be_unknown_and_noise_before_the_prefix_is_ignored() {
        let r = BootTimes::parse(
            "[    3.1] random: crng init done\rberth: ready in 5.000 s (firmware+loader n/a, kernel 1.500 s, userspace 3.500 s)\r",
        )
        .unwrap();
        assert_eq!(r.firmware_loader, None);
        assert_eq!(r.kernel, 1.5);
        assert_eq!(r.total, 5.0);
    }

    #[test]
    fn malformed_ready_lines_are_errors_that_quote_the_line() {
        for bad in [
            "berth: ready in soon",
            "berth: ready in 1.0 s (kernel 1 s, userspace 2 s)",
            "berth: ready in 1.0 s (firmware+loader 1 s, kernel n/a, userspace 2 s)",
            "berth: ready in 1.0 s (firmware+loader 1 s, kernel 1 s, userspace 2 s",
            "berth: ready in 1.0 s (firmware+loader 1 s, kernel 1 s, userspace -2 s)",
            "berth: ready in 1.0 s (firmware+loader 1 s, kernel 1 s, bogus 2 s)",
        ] {
            let e = BootTimes::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn only_complete_lines_count() {
        let text = "a\r\nberth: ready in 1 s\nberth: ready in 2";
        assert_eq!(count_lines(text, READY_PREFIX), 1);
        let (end, line) = nth_line(text, 1, is_ready_line).unwrap();
        assert_eq!(line, "berth: ready in 1 s");
        assert_eq!(&text[end..end + 1], "\n");
        assert!(nth_line(text, 2, is_ready_line).is_none());
        assert!(nth_line(text, 0, is_ready_line).is_none());
    }

    #[test]
    fn failures_are_found_only_after_the_offset() {
        let text = "Kernel panic - not syncing: x\nberth: ready in 1 s\nberth: EMERGENCY: no data partition\n";
        let (end, _) = nth_line(text, 1, is_ready_line).unwrap();
        assert!(matches!(failure_after(text, 0), Some(Failure::Panic(_))));
        match failure_after(text, end) {
            Some(Failure::Emergency(l)) => assert!(l.contains("no data partition")),
            _ => panic!("emergency line not found"),
        }
        assert!(failure_after("fine\n", 0).is_none());
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("1\n2\n3\n", 2), "2\n3");
        assert_eq!(tail("1", 5), "1");
    }
}
