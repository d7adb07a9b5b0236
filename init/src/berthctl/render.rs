//! What `berthctl status` prints. Pure: the statuses and the time in, text
//! out.

use std::fmt::Write as _;

use crate::journal::Record;
use crate::status::{Exit, UnitState, UnitStatus};

/// A duration the way systemd prints one: `850us`, `12ms`, `1.234s`,
/// `2min 3.456s`, `1h 2min 3s`.
pub fn duration(us: u64) -> String {
    let ms = us / 1_000;
    let s = us / 1_000_000;
    match us {
        0..1_000 => format!("{us}us"),
        1_000..1_000_000 => format!("{ms}ms"),
        1_000_000..60_000_000 => format!("{s}.{:03}s", ms % 1_000),
        60_000_000..3_600_000_000 => format!("{}min {}.{:03}s", s / 60, s % 60, ms % 1_000),
        _ => format!("{}h {}min {}s", s / 3_600, s / 60 % 60, s % 60),
    }
}

/// A time in the past, coarsely: `850ms`, `42s`, `3min 2s`, `5h 1min`, `2d 3h`.
pub fn age(us: u64) -> String {
    let s = us / 1_000_000;
    match s {
        0 => format!("{}ms", us / 1_000),
        1..60 => format!("{s}s"),
        60..3_600 => format!("{}min {}s", s / 60, s % 60),
        3_600..86_400 => format!("{}h {}min", s / 3_600, s / 60 % 60),
        _ => format!("{}d {}h", s / 86_400, s / 3_600 % 24),
    }
}

/// `exit 0`, `exit 3`, `SIGKILL`, or `-`.
pub fn last_exit(exit: Option<&Exit>) -> String {
    match exit {
        None => "-".into(),
        Some(Exit::Code(c)) => format!("exit {c}"),
        Some(Exit::Signal(n)) => match nix::sys::signal::Signal::try_from(*n) {
            Ok(sig) => sig.as_str().to_string(),
            Err(_) => format!("signal {n}"),
        },
    }
}

fn since(s: &UnitStatus, now_us: u64) -> String {
    if s.since_us == 0 {
        "-".into()
    } else {
        format!("{} ago", age(now_us.saturating_sub(s.since_us)))
    }
}

fn dash_or<T: PartialEq + Default + ToString>(v: T) -> String {
    if v == T::default() {
        "-".into()
    } else {
        v.to_string()
    }
}

/// Whether `status UNIT` exits 0 for this state (systemctl's habit: 3 when
/// the unit is not active).
pub fn is_active(state: UnitState) -> bool {
    state == UnitState::Active
}

/// `berthctl status`: one line per unit, sorted by name, and a last line
/// that names the failed ones. `now_us` is CLOCK_MONOTONIC, like the
/// statuses' times.
pub fn status_table(units: &[UnitStatus], now_us: u64) -> String {
    let mut sorted: Vec<&UnitStatus> = units.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let header = ["UNIT", "STATE", "SINCE", "PID", "RESTARTS", "READY-TIME", "LAST-EXIT"].map(String::from);
    let mut rows = vec![header];
    for s in &sorted {
        let ready = if s.ready_after_us == 0 { "-".to_string() } else { duration(s.ready_after_us) };
        rows.push([
            s.name.clone(),
            s.state.as_str().to_string(),
            since(s, now_us),
            dash_or(s.pid),
            s.restarts.to_string(),
            ready,
            last_exit(s.last_exit.as_ref()),
        ]);
    }
    let mut widths = [0usize; 7];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (w, cell)) in widths.iter().zip(row.iter()).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let _ = write!(line, "{cell:<w$}");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let failed: Vec<&str> = sorted.iter().filter(|s| s.state == UnitState::Failed).map(|s| s.name.as_str()).collect();
    let _ = write!(out, "\n{} units", sorted.len());
    if failed.is_empty() {
        out.push_str(", none failed\n");
    } else {
        let _ = writeln!(out, ", {} failed: {}", failed.len(), failed.join(", "));
    }
    out
}

/// `berthctl status UNIT`: the details, then its last log lines.
pub fn status_details(s: &UnitStatus, now_us: u64, logs: &[Record]) -> String {
    let mut out = String::new();
    if s.description.is_empty() {
        let _ = writeln!(out, "{}", s.name);
    } else {
        let _ = writeln!(out, "{} - {}", s.name, s.description);
    }
    let state = if s.since_us == 0 {
        s.state.as_str().to_string()
    } else {
        format!("{} since @{} ({} ago)", s.state.as_str(), duration(s.since_us), age(now_us.saturating_sub(s.since_us)))
    };
    let _ = writeln!(out, "     State: {state}");
    if !s.reason.is_empty() {
        let _ = writeln!(out, "    Reason: {}", s.reason);
    }
    let _ = writeln!(out, "       PID: {}", dash_or(s.pid));
    let _ = writeln!(out, "  Restarts: {}", s.restarts);
    let _ = writeln!(out, " Last exit: {}", last_exit(s.last_exit.as_ref()));
    let ready =
        if s.ready_after_us == 0 { "-".to_string() } else { format!("{} after exec", duration(s.ready_after_us)) };
    let _ = writeln!(out, "     Ready: {ready}");
    if !logs.is_empty() {
        out.push('\n');
        for r in logs {
            let _ = writeln!(out, "{r}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(name: &str, state: UnitState) -> UnitStatus {
        UnitStatus {
            name: name.into(),
            description: String::new(),
            state,
            reason: String::new(),
            pid: 0,
            since_us: 0,
            restarts: 0,
            last_exit: None,
            ready_after_us: 0,
        }
    }

    #[test]
    fn durations() {
        assert_eq!(duration(850), "850us");
        assert_eq!(duration(12_345), "12ms");
        assert_eq!(duration(1_234_567), "1.234s");
        assert_eq!(duration(123_456_789), "2min 3.456s");
        assert_eq!(duration(3_723_000_000), "1h 2min 3s");
        assert_eq!(age(42_100_000), "42s");
        assert_eq!(age(182_000_000), "3min 2s");
        assert_eq!(age(2 * 86_400_000_000 + 3 * 3_600_000_000), "2d 3h");
        assert_eq!(last_exit(Some(&Exit::Signal(9))), "SIGKILL");
        assert_eq!(last_exit(Some(&Exit::Code(3))), "exit 3");
        assert_eq!(last_exit(Some(&Exit::Signal(99))), "signal 99");
    }

    #[test]
    fn table_is_sorted_aligned_and_names_the_failed() {
        let mut etcd = unit("etcd", UnitState::Failed);
        etcd.last_exit = Some(Exit::Code(1));
        etcd.restarts = 5;
        etcd.since_us = 9_000_000;
        let mut cd = unit("containerd", UnitState::Active);
        cd.pid = 321;
        cd.ready_after_us = 1_500_000;
        cd.since_us = 4_000_000;
        let out = status_table(&[etcd, cd], 10_000_000);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "UNIT        STATE   SINCE   PID  RESTARTS  READY-TIME  LAST-EXIT");
        assert_eq!(lines[1], "containerd  active  6s ago  321  0         1.500s      -");
        assert_eq!(lines[2], "etcd        failed  1s ago  -    5         -           exit 1");
        assert_eq!(lines[4], "2 units, 1 failed: etcd");
    }

    #[test]
    fn details() {
        let mut s = unit("etcd", UnitState::Failed);
        s.description = "the KV store".into();
        s.reason = "start limit hit".into();
        s.since_us = 2_000_000;
        let out = status_details(&s, 5_000_000, &[]);
        assert!(out.starts_with("etcd - the KV store\n     State: failed since @2.000s (3s ago)\n"), "{out}");
        assert!(out.contains("    Reason: start limit hit\n"));
        assert!(!is_active(s.state));
    }
}
