//! Generated settings files of other programs: the updater's and containerd's.

use super::{toml_list, toml_str, HEADER};
use crate::model::Update;

/// /etc/berth/updater.toml: the `[auto]` keys of `update` (the updater
/// merges it key by key over the image's /usr/lib/berth/updater.toml).
pub fn updater(u: &Update) -> String {
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
