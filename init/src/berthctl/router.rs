//! `berthctl status router`'s router section: berth-router's status file
//! (`/run/berth/router/status.json`, its shape documented in the router's
//! `status` module) rendered like the other sections. Pure: the file's
//! text and the time in, text out. Only the keys shown are read; others
//! are ignored, so the file may grow.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(default)]
struct RouterStatus {
    state: String,
    updated_unix_ms: u64,
    last_error: Option<String>,
    network: Option<String>,
    subnet: Option<String>,
    lease_id: Option<String>,
    lease_ttl_s: Option<u64>,
    interface: Option<String>,
    public_ip: Option<String>,
    vxlan: Option<String>,
    vtep_mac: Option<String>,
    mtu: Option<u32>,
    peers: Vec<Peer>,
    last_convergence: Option<Convergence>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Peer {
    subnet: String,
    public_ip: String,
    vtep_mac: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Convergence {
    at_unix_ms: u64,
    took_ms: u64,
    changes: usize,
}

fn ago(then_ms: u64, now_ms: u64) -> String {
    let secs = now_ms.saturating_sub(then_ms) / 1000;
    format!("{} ago", humantime::format_duration(Duration::from_secs(secs)))
}

/// The section for the status file's `text`; `now_ms`: ms since the epoch.
/// A file that is not the router's JSON is said in one line.
pub fn section(text: &str, now_ms: u64) -> String {
    let s: RouterStatus = match serde_json::from_str(text) {
        Ok(s) => s,
        Err(e) => return format!("\nRouter: unreadable status ({e})\n"),
    };
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let mut out = format!("\nRouter: {} (updated {})\n", s.state, ago(s.updated_unix_ms, now_ms));
    if let Some(e) = &s.last_error {
        let _ = writeln!(out, "       Error: {e}");
    }
    let _ = writeln!(out, "     Network: {}", dash(&s.network));
    let _ = writeln!(out, "      Subnet: {}", dash(&s.subnet));
    let ttl = s.lease_ttl_s.map(|t| format!(" (ttl {t}s)")).unwrap_or_default();
    let _ = writeln!(out, "       Lease: {}{ttl}", dash(&s.lease_id));
    let _ = writeln!(out, "    Underlay: {} {}", dash(&s.interface), dash(&s.public_ip));
    let mtu = s.mtu.map(|m| format!(" mtu {m}")).unwrap_or_default();
    let _ = writeln!(out, "       VXLAN: {} {}{mtu}", dash(&s.vxlan), dash(&s.vtep_mac));
    match &s.last_convergence {
        Some(c) => {
            let _ =
                writeln!(out, " Convergence: {} ({} ms, {} changes)", ago(c.at_unix_ms, now_ms), c.took_ms, c.changes);
        }
        None => {
            let _ = writeln!(out, " Convergence: -");
        }
    }
    let _ = writeln!(out, "       Peers: {}", s.peers.len());
    for p in &s.peers {
        let _ = writeln!(out, "              {:<18} {:<15} {}", p.subnet, p.public_ip, p.vtep_mac);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_state_subnet_peers_and_convergence() {
        let text = r#"{"state":"running","updated_unix_ms":100000,"last_error":null,"network":"10.244.0.0/16",
            "subnet_len":24,"subnet":"10.244.3.0/24","lease_id":"694d7a1b2c3d4e5f","lease_ttl_s":30,
            "interface":"eth0","public_ip":"192.0.2.11","vxlan":"flannel.1","vtep_mac":"02:00:00:00:00:01","mtu":1450,
            "peers":[{"subnet":"10.244.7.0/24","public_ip":"192.0.2.12","vtep_mac":"02:00:00:00:00:02"}],
            "last_convergence":{"at_unix_ms":95000,"took_ms":3,"changes":3}}"#;
        let out = section(text, 102_000);
        assert!(out.starts_with("\nRouter: running (updated 2s ago)\n"), "{out}");
        assert!(out.contains("      Subnet: 10.244.3.0/24\n"), "{out}");
        assert!(out.contains("       Lease: 694d7a1b2c3d4e5f (ttl 30s)\n"), "{out}");
        assert!(out.contains(" Convergence: 7s ago (3 ms, 3 changes)\n"), "{out}");
        assert!(
            out.contains("       Peers: 1\n              10.244.7.0/24      192.0.2.12      02:00:00:00:00:02\n"),
            "{out}"
        );
    }

    #[test]
    fn a_degraded_router_shows_its_error() {
        let out = section(
            r#"{"state":"degraded","last_error":"listing leases: etcd get /coreos.com/network/subnets/: connection refused"}"#,
            0,
        );
        assert!(out.contains("Router: degraded"), "{out}");
        assert!(out.contains("       Error: listing leases: etcd get"), "{out}");
        assert!(section("not json", 0).contains("unreadable status"));
    }
}
