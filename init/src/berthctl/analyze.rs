//! `berthctl analyze`: the boot timeline read like systemd-analyze's blame
//! and critical-chain. Pure.
//!
//! Times are CLOCK_MONOTONIC, i.e. since the kernel started; `@` is when a
//! unit became ready, `+` how long it took from exec to ready.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use super::render::duration;
use crate::status::{Timeline, TimelineEntry};

/// Exec to ready, when both happened.
fn start_time(e: &TimelineEntry) -> Option<u64> {
    (e.ready_us > 0 && e.started_us > 0).then(|| e.ready_us.saturating_sub(e.started_us))
}

/// The units sorted by how long they took from exec to ready, longest
/// first, then the ones never ready (by name).
pub fn blame(t: &Timeline) -> Vec<(&TimelineEntry, Option<u64>)> {
    let mut out: Vec<(&TimelineEntry, Option<u64>)> = t.units.iter().map(|e| (e, start_time(e))).collect();
    out.sort_by(|(a, da), (b, db)| match (da, db) {
        (Some(x), Some(y)) => y.cmp(x).then_with(|| a.name.cmp(&b.name)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.name.cmp(&b.name),
    });
    out
}

/// From the unit that became ready last back to the start: at each step
/// the unit it waited for that became ready last. Last-ready first.
pub fn critical_chain(t: &Timeline) -> Vec<&TimelineEntry> {
    let by_name: HashMap<&str, &TimelineEntry> = t.units.iter().map(|e| (e.name.as_str(), e)).collect();
    let ready = |e: &&TimelineEntry| e.ready_us > 0;
    let Some(mut at) =
        t.units.iter().filter(ready).max_by(|a, b| a.ready_us.cmp(&b.ready_us).then(b.name.cmp(&a.name)))
    else {
        return Vec::new();
    };
    let mut seen = HashSet::new();
    let mut chain = Vec::new();
    loop {
        if !seen.insert(at.name.as_str()) {
            break; // a cycle: the graph would not have let it, but stop
        }
        chain.push(at);
        let next = at
            .waited_for
            .iter()
            .filter_map(|n| by_name.get(n.as_str()).copied())
            .filter(ready)
            .max_by(|a, b| a.ready_us.cmp(&b.ready_us).then(b.name.cmp(&a.name)));
        match next {
            Some(n) => at = n,
            None => break,
        }
    }
    chain
}

/// The whole of `berthctl analyze`.
pub fn report(t: &Timeline) -> String {
    let mut out = String::new();
    if t.ready_us > 0 {
        // systemd-analyze's line: the kernel's share ends where stage 0
        // (the initramfs's /init) began, when there was one.
        let userspace = duration(t.ready_us.saturating_sub(t.pid1_start_us));
        let total = duration(t.ready_us);
        let _ = match t.initrd_start_us {
            0 => writeln!(
                out,
                "Startup finished in {} (kernel) + {userspace} (userspace) = {total}",
                duration(t.pid1_start_us)
            ),
            initrd => writeln!(
                out,
                "Startup finished in {} (kernel) + {} (initrd) + {userspace} (userspace) = {total}",
                duration(initrd.min(t.pid1_start_us)),
                duration(t.pid1_start_us.saturating_sub(initrd))
            ),
        };
    } else {
        let _ = writeln!(
            out,
            "Boot not finished: the system is not ready (yet); PID1 started @{}",
            duration(t.pid1_start_us)
        );
    }

    out.push_str("\nBlame (exec to ready):\n");
    let rows = blame(t);
    let cells: Vec<String> = rows.iter().map(|(_, d)| d.map_or_else(|| "never ready".to_string(), duration)).collect();
    let width = cells.iter().map(String::len).max().unwrap_or(0);
    for ((e, _), cell) in rows.iter().zip(&cells) {
        let _ = writeln!(out, "{cell:>width$} {}", e.name);
    }
    if rows.is_empty() {
        out.push_str("(no units)\n");
    }

    out.push_str("\nCritical chain (@ready since boot, +exec to ready):\n");
    let chain = critical_chain(t);
    for (depth, e) in chain.iter().enumerate() {
        let indent = if depth == 0 { String::new() } else { format!("{}└─", "  ".repeat(depth - 1)) };
        let took = start_time(e).map(|d| format!(" +{}", duration(d))).unwrap_or_default();
        let _ = writeln!(out, "{indent}{} @{}{took}", e.name, duration(e.ready_us));
    }
    if chain.is_empty() {
        out.push_str("(no unit became ready)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, from: u64, started: u64, ready: u64, waited_for: &[&str]) -> TimelineEntry {
        TimelineEntry {
            name: name.into(),
            waited_from_us: from,
            started_us: started,
            ready_us: ready,
            waited_for: waited_for.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn boot() -> Timeline {
        Timeline {
            initrd_start_us: 0,
            pid1_start_us: 1_000_000,
            ready_us: 4_000_000,
            units: vec![
                entry("network", 0, 1_100_000, 1_900_000, &[]),
                entry("containerd", 0, 1_100_000, 1_400_000, &[]),
                entry("etcd", 1_900_000, 1_950_000, 3_200_000, &["network", "containerd"]),
                entry("router", 3_200_000, 3_250_000, 4_000_000, &["etcd", "network"]),
                entry("sshd", 1_900_000, 1_910_000, 2_000_000, &["network"]),
                entry("broken", 0, 1_100_000, 0, &[]),
            ],
        }
    }

    #[test]
    fn blame_longest_first_never_ready_last() {
        let t = boot();
        let names: Vec<&str> = blame(&t).iter().map(|(e, _)| e.name.as_str()).collect();
        assert_eq!(names, ["etcd", "network", "router", "containerd", "sshd", "broken"]);
    }

    #[test]
    fn chain_walks_back_through_the_last_ready_dependency() {
        let t = boot();
        let names: Vec<&str> = critical_chain(&t).iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["router", "etcd", "network"]);
        let out = report(&t);
        assert!(out.starts_with("Startup finished in 1s (kernel) + 3s (userspace) = 4s\n"), "{out}");
        // With stage 0, the kernel's share ends where it began.
        let staged = report(&Timeline { initrd_start_us: 900_000, ..t });
        assert!(
            staged.starts_with("Startup finished in 900ms (kernel) + 100ms (initrd) + 3s (userspace) = 4s\n"),
            "{staged}"
        );
        assert!(out.contains("router @4s +750ms\n└─etcd @3s 200ms +1s 250ms\n  └─network @1s 900ms +800ms\n"), "{out}");
        assert!(out.contains("never ready broken\n"), "{out}");
    }

    #[test]
    fn cycles_and_empty_timelines_end() {
        let t = Timeline {
            initrd_start_us: 0,
            pid1_start_us: 5,
            ready_us: 0,
            units: vec![entry("a", 0, 1, 10, &["b"]), entry("b", 0, 1, 5, &["a"])],
        };
        assert_eq!(critical_chain(&t).len(), 2);
        let empty = Timeline { initrd_start_us: 0, pid1_start_us: 5, ready_us: 0, units: vec![] };
        assert!(critical_chain(&empty).is_empty());
        assert!(report(&empty).contains("(no units)"));
    }
}
