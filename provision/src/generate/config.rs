//! Generated settings files of other programs: the updater's, the
//! router's and containerd's.

use super::{toml_list, toml_str, HEADER};
use crate::model::{Router, Update};

/// /etc/berth/router.toml (the router's settings, every key optional)
/// from `router`; `etcd_endpoints` defaults to `etcd` (the etcd unit's
/// client URL, when the document configures etcd).
pub fn router(r: &Router, etcd: Option<String>) -> String {
    let mut s = format!("{HEADER}\n");
    let endpoints = if r.etcd_endpoints.is_empty() { etcd.into_iter().collect() } else { r.etcd_endpoints.clone() };
    if !endpoints.is_empty() {
        s.push_str(&format!("etcd_endpoints = {}\n", toml_list(&endpoints)));
    }
    let strings = [("etcd_prefix", &r.etcd_prefix), ("network", &r.network)];
    for (k, v) in strings {
        if let Some(v) = v {
            s.push_str(&format!("{k} = {}\n", toml_str(v)));
        }
    }
    let numbers = [("subnet_len", r.subnet_len.map(u32::from)), ("vni", r.vni), ("port", r.port.map(u32::from))];
    for (k, v) in numbers {
        if let Some(v) = v {
            s.push_str(&format!("{k} = {v}\n"));
        }
    }
    for (k, v) in [("interface", &r.interface), ("public_ip", &r.public_ip), ("lease_ttl", &r.lease_ttl)] {
        if let Some(v) = v {
            s.push_str(&format!("{k} = {}\n", toml_str(v)));
        }
    }
    s
}

/// /etc/berth/updater.toml: the `[auto]` keys of `update`, and its
/// `[reboot_lock]` when a reboot key is given (endpoints: `etcd`, the etcd
/// unit's client URL, when the document configures etcd). The updater
/// merges it key by key over the image's /usr/lib/berth/updater.toml.
pub fn updater(u: &Update, etcd: Option<String>) -> String {
    let mut s = format!("{HEADER}\n[auto]\n");
    if let Some(enabled) = u.auto {
        s.push_str(&format!("enabled = {enabled}\n"));
    }
    if let Some(source) = &u.source {
        s.push_str(&format!("source = {}\n", toml_str(source)));
    }
    if let Some(interval) = &u.interval {
        s.push_str(&format!("interval = {}\n", toml_str(interval)));
    }
    if let Some(reboot) = &u.reboot {
        s.push_str(&format!("reboot = {}\n", toml_str(reboot)));
    }
    if let Some(window) = &u.window {
        s.push_str(&format!("window = {}\n", toml_str(window)));
    }
    if u.reboot_strategy.is_some() || u.reboot_lock_max.is_some() || u.reboot_lock_ttl.is_some() {
        s.push_str("\n[reboot_lock]\n");
        if let Some(strategy) = &u.reboot_strategy {
            s.push_str(&format!("strategy = {}\n", toml_str(strategy)));
        }
        if let Some(max) = u.reboot_lock_max {
            s.push_str(&format!("max = {max}\n"));
        }
        if let Some(ttl) = &u.reboot_lock_ttl {
            s.push_str(&format!("ttl = {}\n", toml_str(ttl)));
        }
        if let Some(etcd) = etcd {
            s.push_str(&format!("endpoints = {}\n", toml_list(&[etcd])));
        }
    }
    s
}

/// containerd's `certs.d/HOST/hosts.toml` for a registry and its mirrors,
/// tried in order before the registry itself (`docker.io` is served by
/// registry-1.docker.io).
pub fn registry_hosts(host: &str, mirrors: &[String]) -> String {
    let server =
        if host == "docker.io" { "https://registry-1.docker.io".to_string() } else { format!("https://{host}") };
    let mut s = format!("{HEADER}server = {}\n", toml_str(&server));
    for m in mirrors {
        let m = if m.contains("://") { m.clone() } else { format!("https://{m}") };
        s.push_str(&format!(
            "\n[host.{}]\n  capabilities = {}\n",
            toml_str(&m),
            toml_list(&["pull".into(), "resolve".into()])
        ));
    }
    s
}
