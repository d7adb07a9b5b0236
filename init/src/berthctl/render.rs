//! What `berthctl status` prints. Pure: the statuses and the time in, text
//! out.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use berth_provision::machine::{InForce, Status};

use crate::api::ConfigReport;
use crate::journal::{self, Record};
use crate::provision::outcome_name;
use crate::status::{Exit, UnitState, UnitStatus};

/// A duration as humantime prints one, to the millisecond (to the
/// microsecond below one): `850us`, `12ms`, `1s 234ms`, `2m 3s 456ms`.
pub fn duration(us: u64) -> String {
    let d = if us < 1_000 { Duration::from_micros(us) } else { Duration::from_millis((us + 500) / 1_000) };
    humantime::format_duration(d).to_string()
}

/// A time in the past, coarsely (to the second from one second on):
/// `850ms`, `42s`, `3m 2s`, `2days 3h 4m 5s`.
pub fn age(us: u64) -> String {
    let d = if us < 1_000_000 { Duration::from_millis(us / 1_000) } else { Duration::from_secs(us / 1_000_000) };
    humantime::format_duration(d).to_string()
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
/// that names the failed ones, and the degraded ones if any. `now_us` is CLOCK_MONOTONIC, like the
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
        out.push_str(", none failed");
    } else {
        let _ = write!(out, ", {} failed: {}", failed.len(), failed.join(", "));
    }
    let degraded: Vec<&str> =
        sorted.iter().filter(|s| s.state == UnitState::Degraded).map(|s| s.name.as_str()).collect();
    if !degraded.is_empty() {
        let _ = write!(out, "; {} degraded: {}", degraded.len(), degraded.join(", "));
    }
    out.push('\n');
    out
}

/// Log records as `berthctl logs` prints them, one line each:
/// `TIME STREAM TEXT`, `STREAM+` for a line not ended yet (or too long to
/// join). Join pieces first ([`journal::join`], [`journal::Joiner`]).
pub fn log_lines(records: &[Record]) -> String {
    let mut out = String::new();
    for r in records {
        let _ = writeln!(out, "{r}");
    }
    out
}

/// `berthctl status UNIT`: the details, then its last log lines (pieces
/// joined).
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
        out.push_str(&log_lines(&journal::join(logs.iter().cloned(), journal::MAX_JOINED_BYTES)));
    }
    out
}

/// The last second RFC 3339 can write: 9999-12-31T23:59:59Z.
const LAST_RFC3339: u64 = 253_402_300_799;

/// A time in seconds since the epoch, as RFC 3339 in UTC (`@SECONDS`
/// past the year 9999).
pub fn epoch_time(secs: u64) -> String {
    match SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs)) {
        Some(t) if secs <= LAST_RFC3339 => humantime::format_rfc3339_seconds(t).to_string(),
        _ => format!("@{secs}"),
    }
}

/// When a trial reverts: `2026-12-01T06:50:00Z (in 1m 30s)`.
fn trial_end(until: u64, now: u64) -> String {
    let left = humantime::format_duration(Duration::from_secs(until.saturating_sub(now)));
    format!("reverts at {} (in {left}) unless `berthctl config confirm`", epoch_time(until))
}

/// `berthctl status`'s user data section, after the table: the outcome,
/// where the document came from, its instance-id and sha256, the time
/// spent finding it at boot, a trial's end, and every error and warning,
/// each `SOURCE:LINE: key K: message`. `now`: seconds since the epoch.
pub fn provisioning(s: &Status, now: u64) -> String {
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let mut out = format!("\nUser data: {}\n", outcome_name(&s.outcome));
    let _ = writeln!(out, "       Source: {}", dash(&s.source));
    let _ = writeln!(out, "  Instance-id: {}", dash(&s.instance_id));
    let _ = writeln!(out, "       SHA256: {}", dash(&s.sha256));
    let _ = writeln!(out, "   Probe time: {}", humantime::format_duration(Duration::from_millis(s.probe_ms)));
    if let Some(until) = s.trial_until {
        let _ = writeln!(out, "        Trial: {}", trial_end(until, now));
    }
    for e in &s.errors {
        let _ = writeln!(out, "        Error: {e}");
    }
    for w in &s.warnings {
        let _ = writeln!(out, "      Warning: {w}");
    }
    out
}

/// What `berthctl config apply` prints: each change, what happened to the
/// units, the document's warnings, a trial's end (the problems after the
/// change go to stderr: [`config_problems`]).
pub fn config_report(r: &ConfigReport, now: u64) -> String {
    let mut out = String::new();
    if r.changes.is_empty() {
        out.push_str("no changes\n");
    }
    for c in &r.changes {
        let _ = writeln!(out, "{c}");
    }
    for (what, names) in [("started", &r.started), ("stopped", &r.stopped), ("restarted", &r.restarted)] {
        if !names.is_empty() {
            let _ = writeln!(out, "{what}: {}", names.join(", "));
        }
    }
    for w in &r.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    if r.trial_until != 0 {
        let _ = writeln!(out, "on trial: {}", trial_end(r.trial_until, now));
    }
    out
}

/// The problems after an applied change, for stderr, one `berthctl: ...`
/// line each.
pub fn config_problems(r: &ConfigReport) -> String {
    r.problems.iter().map(|p| format!("berthctl: applied, but: {p}\n")).collect()
}

/// An invalid document's errors, for stderr: each as it is
/// (`SOURCE:LINE: key K: message`), then what it means.
pub fn config_invalid(source: &str, errors: &str) -> String {
    let mut out = String::new();
    let mut n = 0;
    for e in errors.lines().filter(|l| !l.is_empty()) {
        let _ = writeln!(out, "{e}");
        n += 1;
    }
    let _ = writeln!(out, "berthctl: {source}: {n} error{}: nothing applied", if n == 1 { "" } else { "s" });
    out
}

/// `berthctl config show`: the record of the document in force, then the
/// document.
pub fn in_force(f: Option<&InForce>, now: u64) -> String {
    let Some(f) = f else {
        return "no user data is in force: none was found at boot nor applied since\n".into();
    };
    let mut out = String::new();
    let _ = writeln!(out, "     Source: {}", f.source);
    let _ = writeln!(out, "Instance-id: {}", f.instance_id);
    let _ = writeln!(out, "     SHA256: {}", f.sha256);
    let ago = humantime::format_duration(Duration::from_secs(now.saturating_sub(f.applied_at)));
    let _ = writeln!(out, "    Applied: {} ({ago} ago)", epoch_time(f.applied_at));
    let trial = match f.trial_until {
        Some(until) => trial_end(until, now),
        None => "none".into(),
    };
    let _ = writeln!(out, "      Trial: {trial}");
    for w in &f.warnings {
        let _ = writeln!(out, "    Warning: {w}");
    }
    out.push('\n');
    out.push_str(&f.text);
    if !f.text.is_empty() && !f.text.ends_with('\n') {
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(name: &str, state: UnitState) -> UnitStatus {
        UnitStatus::new(name, state)
    }

    #[test]
    fn durations() {
        assert_eq!(duration(850), "850us");
        assert_eq!(duration(12_345), "12ms");
        assert_eq!(duration(1_234_567), "1s 235ms");
        assert_eq!(duration(123_456_789), "2m 3s 457ms");
        assert_eq!(duration(3_723_000_000), "1h 2m 3s");
        assert_eq!(age(850_000), "850ms");
        assert_eq!(age(42_100_000), "42s");
        assert_eq!(age(182_000_000), "3m 2s");
        assert_eq!(age(2 * 86_400_000_000 + 3 * 3_600_000_000), "2days 3h");
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
        assert_eq!(lines[1], "containerd  active  6s ago  321  0         1s 500ms    -");
        assert_eq!(lines[2], "etcd        failed  1s ago  -    5         -           exit 1");
        assert_eq!(lines[4], "2 units, 1 failed: etcd");
    }

    #[test]
    fn the_table_names_the_degraded_too() {
        let mut etcd = unit("etcd", UnitState::Degraded);
        etcd.pid = 77;
        let out = status_table(&[etcd, unit("sshd", UnitState::Active)], 10_000_000);
        assert!(out.lines().any(|l| l.starts_with("etcd  degraded")), "{out}");
        assert!(out.ends_with("\n2 units, none failed; 1 degraded: etcd\n"), "{out}");
    }

    #[test]
    fn details() {
        let mut s = unit("etcd", UnitState::Failed);
        s.description = "the KV store".into();
        s.reason = "start limit hit".into();
        s.since_us = 2_000_000;
        let out = status_details(&s, 5_000_000, &[]);
        assert!(out.starts_with("etcd - the KV store\n     State: failed since @2s (3s ago)\n"), "{out}");
        assert!(out.contains("    Reason: start limit hit\n"));
        assert!(!is_active(s.state));
        let t = journal::Timestamp(1_795_910_399_123_456);
        let logs = [
            Record::piece(t, journal::Stream::Stdout, "one "),
            Record::new(t, journal::Stream::Stdout, "line"),
            Record::piece(t, journal::Stream::Stderr, "prompt> "),
        ];
        let out = status_details(&s, 5_000_000, &logs);
        assert!(
            out.ends_with(
                "\n\n2026-11-28T23:59:59.123456Z stdout one line\n2026-11-28T23:59:59.123456Z stderr+ prompt> \n"
            ),
            "{out}"
        );
    }

    fn rejected() -> Status {
        Status {
            outcome: berth_provision::machine::Outcome::Rejected,
            source: Some("fw_cfg:opt/org.berth/user-data".into()),
            instance_id: None,
            sha256: None,
            probe_ms: 3,
            errors: vec!["fw_cfg:opt/org.berth/user-data:4: key users[0].shell: expected a string".into()],
            warnings: vec!["fw_cfg:opt/org.berth/user-data:9: key packages: not supported by Berth".into()],
            trial_until: None,
        }
    }

    #[test]
    fn the_status_section_shows_the_source_and_every_problem() {
        let out = provisioning(&rejected(), 0);
        assert_eq!(
            out,
            "\nUser data: rejected\n\
             \x20      Source: fw_cfg:opt/org.berth/user-data\n\
             \x20 Instance-id: -\n\
             \x20      SHA256: -\n\
             \x20  Probe time: 3ms\n\
             \x20       Error: fw_cfg:opt/org.berth/user-data:4: key users[0].shell: expected a string\n\
             \x20     Warning: fw_cfg:opt/org.berth/user-data:9: key packages: not supported by Berth\n"
        );
        let on_trial = Status { trial_until: Some(1_795_910_490), ..rejected() };
        assert!(provisioning(&on_trial, 1_795_910_400)
            .contains("        Trial: reverts at 2026-11-29T00:01:30Z (in 1m 30s) unless `berthctl config confirm`\n"));
    }

    #[test]
    fn a_config_report_names_changes_units_warnings_and_the_trial() {
        let r = ConfigReport {
            changes: vec!["hostname: a -> b".into(), "unit web: added".into()],
            units_changed: vec!["web".into()],
            hostname: "b".into(),
            warnings: vec!["u.yaml:9: key packages: not supported by Berth".into()],
            trial_until: 1_795_910_490,
            started: vec!["web".into()],
            stopped: vec![],
            restarted: vec!["etcd".into(), "sshd".into()],
            problems: vec!["restarting etcd: failed: exit 1".into()],
        };
        assert_eq!(
            config_report(&r, 1_795_910_400),
            "hostname: a -> b\nunit web: added\nstarted: web\nrestarted: etcd, sshd\n\
             warning: u.yaml:9: key packages: not supported by Berth\n\
             on trial: reverts at 2026-11-29T00:01:30Z (in 1m 30s) unless `berthctl config confirm`\n"
        );
        assert_eq!(config_problems(&r), "berthctl: applied, but: restarting etcd: failed: exit 1\n");
        assert_eq!(config_report(&ConfigReport::default(), 0), "no changes\n");
        assert_eq!(config_problems(&ConfigReport::default()), "");
    }

    #[test]
    fn times_past_rfc3339_do_not_panic() {
        assert_eq!(epoch_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(epoch_time(LAST_RFC3339), "9999-12-31T23:59:59Z");
        assert_eq!(epoch_time(u64::MAX), format!("@{}", u64::MAX));
        assert!(provisioning(&Status { trial_until: Some(u64::MAX), ..rejected() }, 0).contains("reverts at @"));
    }

    #[test]
    fn an_invalid_document_lists_every_error() {
        assert_eq!(
            config_invalid("u.yaml", "u.yaml:3: key users: expected a list\nu.yaml:5: key hostname: expected a string"),
            "u.yaml:3: key users: expected a list\nu.yaml:5: key hostname: expected a string\n\
             berthctl: u.yaml: 2 errors: nothing applied\n"
        );
    }

    #[test]
    fn config_show_prints_the_record_then_the_document() {
        assert!(in_force(None, 0).starts_with("no user data is in force"));
        let f = InForce {
            source: "nocloud:/dev/vdb:user-data".into(),
            instance_id: "i-1".into(),
            sha256: "ab".repeat(32),
            applied_at: 1_795_910_340,
            warnings: vec![],
            text: "#cloud-config\nhostname: b".into(),
            trial_until: None,
        };
        let out = in_force(Some(&f), 1_795_910_400);
        assert!(out.contains("    Applied: 2026-11-28T23:59:00Z (1m ago)\n      Trial: none\n"), "{out}");
        assert!(out.ends_with("\n\n#cloud-config\nhostname: b\n"), "{out}");
        assert!(out.starts_with("     Source: nocloud:/dev/vdb:user-data\nInstance-id: i-1\n"), "{out}");
    }
}
