//! Berth's own keys: `units`, `containerd`, `etcd`, `update`, `ssh`
//! (under `berth:` in #cloud-config, top-level tables in TOML). A key
//! these do not know is an error in both formats.

use crate::diag::Place;
use crate::model::{Containerd, Etcd, Item, Network, Router, UnitFile, Units, Update};
use crate::tree::Node;

use super::read::Ctx;
use super::valid;

fn not_berth(cx: &mut Ctx, at: &Place, known: &[&str]) {
    cx.error(at, format!("unknown key (known here: {})", known.join(", ")));
}

/// `units`: `add` and `override` (NAME -> unit text), `disable` and
/// `enable` (lists of names).
pub(crate) fn units(cx: &mut Ctx, n: &Node, at: &Place) -> Units {
    let mut u = Units::default();
    let Some(entries) = cx.map(n, at) else { return u };
    for (k, v) in entries {
        let p = at.child(k.line, &k.name);
        match k.name.as_str() {
            "add" | "override" => {
                let is_override = k.name == "override";
                let Some(files) = cx.map(v, &p) else { continue };
                for (name, text) in files {
                    let fp = p.child(name.line, &name.name);
                    if let Err(e) = valid::unit_name(&name.name) {
                        cx.error(&fp, e);
                        continue;
                    }
                    let Some(t) = cx.string(text, &fp) else { continue };
                    if let Err(errors) = unit_text(&name.name, &t) {
                        for e in errors {
                            cx.error(&fp, format!("not a valid unit: {e}"));
                        }
                        continue;
                    }
                    u.files.push(UnitFile { name: name.name.clone(), text: t, is_override, at: fp });
                }
            }
            "disable" | "enable" => {
                let mut names = Vec::new();
                for item in cx.strings(v, &p, false) {
                    match valid::unit_name(&item.value) {
                        Ok(()) => names.push(item),
                        Err(e) => cx.error(&item.at, e),
                    }
                }
                if k.name == "disable" {
                    u.disable = names;
                } else {
                    u.enable = names;
                }
            }
            _ => not_berth(cx, &p, &["add", "override", "disable", "enable"]),
        }
    }
    let mut seen = std::collections::HashSet::new();
    for f in &u.files {
        if !seen.insert(f.name.as_str()) {
            cx.error(&f.at, format!("unit `{}` is given twice", f.name));
        }
    }
    let enabled: std::collections::HashSet<&str> = u.enable.iter().map(|e| e.value.as_str()).collect();
    for d in &u.disable {
        if seen.contains(d.value.as_str()) || enabled.contains(d.value.as_str()) {
            cx.error(&d.at, format!("unit `{}` is both disabled and added, overridden or enabled", d.value));
        }
    }
    u
}

/// A unit file's text, checked by the same reader PID1 loads units with
/// (`berth-units`): every problem, each as `line L of the unit: key K:
/// what` (a unit PID1 would refuse is refused here, before anything is
/// written; it would otherwise stop the image's unit it overrides).
/// Dependencies on units are checked when PID1 plans the units.
pub(crate) fn unit_text(name: &str, t: &str) -> Result<(), Vec<String>> {
    let unit = berth_units::UnitName::new(name).map_err(|e| vec![e])?;
    let file = std::path::PathBuf::from(format!("{}/{name}.toml", berth_layout::paths::ETC_UNIT_DIR));
    berth_units::parse_unit(&unit, &file, t).map(|_| ()).map_err(|errors| {
        errors
            .into_iter()
            .map(|e| {
                let line = e.at.line.map(|l| format!("line {l} of the unit: ")).unwrap_or_default();
                let key = e.at.key.as_ref().map(|k| format!("key {k}: ")).unwrap_or_default();
                format!("{line}{key}{}", e.kind)
            })
            .collect()
    })
}

/// `containerd`: `config` (the whole config.toml, valid TOML) and
/// `registry_mirrors` (HOST -> list of endpoint URLs).
pub(crate) fn containerd(cx: &mut Ctx, n: &Node, at: &Place) -> Option<Containerd> {
    let mut c = Containerd { config: None, registry_mirrors: Vec::new(), at: at.clone() };
    for (k, v) in cx.map(n, at)? {
        let p = at.child(k.line, &k.name);
        match k.name.as_str() {
            "config" => {
                if let Some(t) = cx.string(v, &p) {
                    match toml::from_str::<toml::Table>(&t) {
                        Ok(_) => c.config = Some(Item { value: t, at: p }),
                        Err(e) => cx.error(&p, format!("not valid TOML: {}", e.message())),
                    }
                }
            }
            "registry_mirrors" => {
                let Some(hosts) = cx.map(v, &p) else { continue };
                for (h, urls) in hosts {
                    let hp = p.child(h.line, &h.name);
                    // A directory of its own under certs.d: not `.` or `..`.
                    let host_ok = h.name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                        && h.name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'));
                    if !host_ok {
                        cx.error(
                            &hp,
                            format!("`{}` is not a registry host (`docker.io`, `registry.example.com:5000`)", h.name),
                        );
                        continue;
                    }
                    let mut list = Vec::new();
                    for u in cx.strings(urls, &hp, false) {
                        match valid::http_url(&u.value) {
                            Ok(()) => list.push(u.value),
                            Err(e) => cx.error(&u.at, e),
                        }
                    }
                    if list.is_empty() {
                        cx.error(&hp, "needs at least one mirror URL");
                    }
                    c.registry_mirrors.push((h.name.clone(), list));
                }
            }
            _ => not_berth(cx, &p, &["config", "registry_mirrors"]),
        }
    }
    Some(c)
}

/// A list of URLs, or one string of comma-separated URLs (etcd's flags).
fn urls(cx: &mut Ctx, n: &Node, at: &Place) -> Vec<String> {
    let mut out = Vec::new();
    for u in cx.strings(n, at, true) {
        match valid::http_url(&u.value) {
            Ok(()) => out.push(u.value),
            Err(e) => cx.error(&u.at, e),
        }
    }
    out
}

/// `etcd`: the member's name, the initial cluster and the four URL lists.
pub(crate) fn etcd(cx: &mut Ctx, n: &Node, at: &Place) -> Option<Etcd> {
    let mut e = Etcd {
        name: None,
        initial_cluster: None,
        initial_cluster_state: None,
        initial_cluster_token: None,
        listen_peer_urls: Vec::new(),
        initial_advertise_peer_urls: Vec::new(),
        listen_client_urls: Vec::new(),
        advertise_client_urls: Vec::new(),
        at: at.clone(),
        places: Vec::new(),
    };
    let member =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    for (k, v) in cx.map(n, at)? {
        let p = at.child(k.line, &k.name);
        e.places.push((k.name.clone(), p.clone()));
        match k.name.as_str() {
            "name" => {
                if let Some(s) = cx.nonempty(v, &p) {
                    if member(&s) {
                        e.name = Some(s);
                    } else {
                        cx.error(&p, format!("`{s}` is not a member name (letters, digits, `-_.`)"));
                    }
                }
            }
            "initial_cluster" => {
                if let Some(s) = cx.nonempty(v, &p) {
                    let mut ok = true;
                    for m in s.split(',') {
                        match m.trim().split_once('=') {
                            Some((name, url)) if member(name) => {
                                if let Err(err) = valid::http_url(url) {
                                    cx.error(&p, format!("member `{name}`: {err}"));
                                    ok = false;
                                }
                            }
                            _ => {
                                cx.error(&p, format!("`{m}` is not NAME=PEER_URL"));
                                ok = false;
                            }
                        }
                    }
                    if ok {
                        e.initial_cluster = Some(s);
                    }
                }
            }
            "initial_cluster_state" => {
                if let Some(s) = cx.string(v, &p) {
                    if s == "new" || s == "existing" {
                        e.initial_cluster_state = Some(s);
                    } else {
                        cx.error(&p, format!("expected `new` or `existing`, found `{s}`"));
                    }
                }
            }
            "initial_cluster_token" => e.initial_cluster_token = cx.nonempty(v, &p),
            "listen_peer_urls" => e.listen_peer_urls = urls(cx, v, &p),
            "initial_advertise_peer_urls" => e.initial_advertise_peer_urls = urls(cx, v, &p),
            "listen_client_urls" => e.listen_client_urls = urls(cx, v, &p),
            "advertise_client_urls" => e.advertise_client_urls = urls(cx, v, &p),
            _ => not_berth(
                cx,
                &p,
                &[
                    "name",
                    "initial_cluster",
                    "initial_cluster_state",
                    "initial_cluster_token",
                    "listen_peer_urls",
                    "initial_advertise_peer_urls",
                    "listen_client_urls",
                    "advertise_client_urls",
                ],
            ),
        }
    }
    Some(e)
}

/// `update`: the updater's settings (/etc/berth/updater.toml).
pub(crate) fn update(cx: &mut Ctx, n: &Node, at: &Place) -> Option<Update> {
    let mut u = Update {
        source: None,
        auto: None,
        interval: None,
        reboot: None,
        window: None,
        reboot_strategy: None,
        reboot_lock_max: None,
        reboot_lock_ttl: None,
        at: at.clone(),
    };
    let mut window_at = at.clone();
    for (k, v) in cx.map(n, at)? {
        let p = at.child(k.line, &k.name);
        match k.name.as_str() {
            "source" => {
                if let Some(s) = cx.nonempty(v, &p) {
                    match valid::http_url(&s) {
                        Ok(()) => u.source = Some(s),
                        Err(e) => cx.error(&p, e),
                    }
                }
            }
            "auto" => u.auto = cx.bool(v, &p),
            "interval" => {
                if let Some(s) = cx.nonempty(v, &p) {
                    match humantime::parse_duration(&s) {
                        Ok(d) if !d.is_zero() => u.interval = Some(s),
                        Ok(_) => cx.error(&p, "the interval must be more than zero"),
                        Err(e) => cx.error(&p, format!("`{s}` is not a duration (`6h`, `30m`): {e}")),
                    }
                }
            }
            "reboot" => {
                if let Some(s) = cx.string(v, &p) {
                    if matches!(s.as_str(), "immediately" | "window" | "never") {
                        u.reboot = Some(s);
                    } else {
                        cx.error(&p, format!("expected `immediately`, `window` or `never`, found `{s}`"));
                    }
                }
            }
            "window" => {
                window_at = p.clone();
                if let Some(s) = cx.string(v, &p) {
                    match valid::window(&s) {
                        Ok(()) => u.window = Some(s),
                        Err(e) => cx.error(&p, e),
                    }
                }
            }
            "reboot_strategy" => {
                if let Some(s) = cx.string(v, &p) {
                    if matches!(s.as_str(), "off" | "etcd-lock") {
                        u.reboot_strategy = Some(s);
                    } else {
                        cx.error(&p, format!("expected `off` or `etcd-lock`, found `{s}`"));
                    }
                }
            }
            "reboot_lock_max" => match cx.u32(v, &p) {
                Some(0) => cx.error(&p, "at least one host must be allowed to reboot at a time"),
                Some(n) => u.reboot_lock_max = Some(n),
                None => {}
            },
            "reboot_lock_ttl" => u.reboot_lock_ttl = lease_ttl(cx, v, &p, 2, "`10m`, `15m`"),
            _ => not_berth(
                cx,
                &p,
                &[
                    "source",
                    "auto",
                    "interval",
                    "reboot",
                    "window",
                    "reboot_strategy",
                    "reboot_lock_max",
                    "reboot_lock_ttl",
                ],
            ),
        }
    }
    match (u.reboot.as_deref(), &u.window) {
        (Some("window"), None) => cx.error(at, "`reboot = window` needs a `window` (HH:MM-HH:MM)"),
        (Some("immediately" | "never") | None, Some(_)) => {
            cx.error(&window_at, "`window` is only read with `reboot: window`")
        }
        _ => {}
    }
    Some(u)
}

/// An etcd lease's TTL: a humantime duration of whole seconds, at least
/// `min_secs` (`examples` shows good ones in the error).
fn lease_ttl(cx: &mut Ctx, v: &Node, p: &Place, min_secs: u64, examples: &str) -> Option<String> {
    let s = cx.nonempty(v, p)?;
    match humantime::parse_duration(&s) {
        Ok(d) if d >= std::time::Duration::from_secs(min_secs) && d.subsec_nanos() == 0 => Some(s),
        Ok(_) => {
            cx.error(p, format!("`{s}`: the lease TTL is whole seconds, at least {min_secs}s"));
            None
        }
        Err(e) => {
            cx.error(p, format!("`{s}` is not a duration ({examples}): {e}"));
            None
        }
    }
}

/// `ssh`: `enabled` (the sshd unit on or off).
pub(crate) fn ssh(cx: &mut Ctx, n: &Node, at: &Place) -> Option<Item<bool>> {
    let mut out = None;
    for (k, v) in cx.map(n, at)? {
        let p = at.child(k.line, &k.name);
        match k.name.as_str() {
            "enabled" => out = cx.bool(v, &p).map(|b| Item { value: b, at: p }),
            _ => not_berth(cx, &p, &["enabled"]),
        }
    }
    out
}

/// The checks across `etcd`'s keys (and the network's addresses) that a
/// cluster needs: this member (`name`, default `berth`) is in
/// `initial_cluster`, its peer URLs there are the ones it advertises, a
/// member of several does not advertise the loopback, and the URLs it
/// listens on are on addresses this host can have.
pub(crate) fn etcd_cluster(cx: &mut Ctx, e: &Etcd, network: Option<&Network>) {
    let name = e.name.clone().unwrap_or_else(|| "berth".into());
    let advertised: Vec<String> = if e.initial_advertise_peer_urls.is_empty() {
        vec!["http://127.0.0.1:2380".into()]
    } else {
        e.initial_advertise_peer_urls.clone()
    };
    if let Some(cluster) = &e.initial_cluster {
        let members: Vec<(&str, &str)> =
            cluster.split(',').filter_map(|m| m.trim().split_once('=')).map(|(n, u)| (n.trim(), u.trim())).collect();
        let mut mine: Vec<String> = members.iter().filter(|(n, _)| *n == name).map(|(_, u)| u.to_string()).collect();
        let cluster_at = e.place("initial_cluster");
        if mine.is_empty() {
            let names: Vec<&str> = members.iter().map(|(n, _)| *n).collect();
            cx.error(
                cluster_at,
                format!(
                    "this member `{name}` (etcd.name) is not in initial_cluster (its members: {})",
                    names.join(", ")
                ),
            );
        } else {
            let mut adv = advertised.clone();
            adv.sort();
            mine.sort();
            if adv != mine {
                let at = if e.initial_advertise_peer_urls.is_empty() {
                    cluster_at
                } else {
                    e.place("initial_advertise_peer_urls")
                };
                cx.error(
                    at,
                    format!(
                        "this member `{name}` advertises peer URLs {} but its entry in initial_cluster says {}",
                        adv.join(","),
                        mine.join(",")
                    ),
                );
            }
        }
        let mut names: Vec<&str> = members.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        if names.len() > 1 {
            for u in &advertised {
                if host_ip(u).is_some_and(|ip| ip.is_loopback()) {
                    let at = if e.initial_advertise_peer_urls.is_empty() {
                        cluster_at
                    } else {
                        e.place("initial_advertise_peer_urls")
                    };
                    cx.error(at, format!("`{u}`: a member of a cluster of {} cannot advertise a loopback peer URL (the others could not reach it)", names.len()));
                }
            }
        }
    }
    // The addresses this host will have, when the network config says
    // (static addresses, no DHCP): a listen URL must be on one of them,
    // the wildcard or the loopback.
    let Some(net) = network else { return };
    if net.interfaces.is_empty() || net.interfaces.iter().any(|i| i.dhcp4) {
        return;
    }
    let own: Vec<std::net::IpAddr> = net
        .interfaces
        .iter()
        .flat_map(|i| i.addresses.iter())
        .filter_map(|a| valid::cidr(a).ok())
        .map(|(ip, _)| ip)
        .collect();
    for (key, urls) in [("listen_peer_urls", &e.listen_peer_urls), ("listen_client_urls", &e.listen_client_urls)] {
        for u in urls {
            let Some(ip) = host_ip(u) else { continue };
            if !(ip.is_unspecified() || ip.is_loopback() || own.contains(&ip)) {
                let list: Vec<String> = own.iter().map(|a| a.to_string()).collect();
                cx.error(
                    e.place(key),
                    format!(
                        "`{u}`: {ip} is not an address of this host (the network config gives it {})",
                        list.join(", ")
                    ),
                );
            }
        }
    }
}

/// The IP address a URL's host is, if it is one (`http://192.0.2.11:2380`,
/// `http://[::1]:2379`).
fn host_ip(url: &str) -> Option<std::net::IpAddr> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.parse().ok()
}

/// `router`: the network router's settings (/etc/berth/router.toml).
pub(crate) fn router(cx: &mut Ctx, n: &Node, at: &Place) -> Option<Router> {
    let mut r = Router::new(at.clone());
    let mut network_prefix = None;
    let mut subnet_at = None;
    for (k, v) in cx.map(n, at)? {
        let p = at.child(k.line, &k.name);
        match k.name.as_str() {
            "etcd_endpoints" => r.etcd_endpoints = urls(cx, v, &p),
            "etcd_prefix" => {
                if let Some(s) = cx.nonempty(v, &p) {
                    if s.starts_with('/') && !s.ends_with('/') || s == "/" {
                        r.etcd_prefix = Some(s);
                    } else {
                        cx.error(&p, format!("`{s}` is not an etcd key prefix (`/coreos.com/network`: a leading `/`, no trailing one)"));
                    }
                }
            }
            "network" => {
                if let Some(s) = cx.nonempty(v, &p) {
                    match valid::cidr(&s) {
                        Ok((std::net::IpAddr::V4(a), len)) => {
                            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                            if u32::from(a) & !mask != 0 {
                                cx.error(
                                    &p,
                                    format!(
                                        "`{s}` has host bits set (the network is {}/{len})",
                                        std::net::Ipv4Addr::from(u32::from(a) & mask)
                                    ),
                                );
                            } else if len > 28 {
                                cx.error(&p, format!("`{s}` is too small for a cluster network (at most /28)"));
                            } else {
                                network_prefix = Some(len);
                                r.network = Some(s);
                            }
                        }
                        Ok(_) => cx.error(&p, format!("`{s}`: the cluster network is IPv4 (flannel's layout)")),
                        Err(e) => cx.error(&p, e),
                    }
                }
            }
            "subnet_len" => {
                if let Some(n) = cx.u32(v, &p) {
                    match u8::try_from(n) {
                        Ok(n) if (8..=30).contains(&n) => {
                            r.subnet_len = Some(n);
                            subnet_at = Some(p.clone());
                        }
                        _ => cx.error(&p, format!("{n}: a host's subnet length is 8 to 30")),
                    }
                }
            }
            "vni" => match cx.u32(v, &p) {
                Some(n) if (1..=16_777_215).contains(&n) => r.vni = Some(n),
                Some(n) => cx.error(&p, format!("{n}: a VXLAN VNI is 1 to 16777215")),
                None => {}
            },
            "port" => {
                if let Some(n) = cx.u32(v, &p) {
                    match u16::try_from(n) {
                        Ok(port) if port > 0 => r.port = Some(port),
                        _ => cx.error(&p, format!("{n}: a UDP port is 1 to 65535")),
                    }
                }
            }
            "interface" => {
                if let Some(s) = cx.nonempty(v, &p) {
                    match valid::ifname(&s) {
                        Ok(()) => r.interface = Some(s),
                        Err(e) => cx.error(&p, e),
                    }
                }
            }
            "public_ip" => {
                if let Some(s) = cx.nonempty(v, &p) {
                    match s.parse::<std::net::Ipv4Addr>() {
                        Ok(_) => r.public_ip = Some(s),
                        Err(_) => cx.error(&p, format!("`{s}` is not an IPv4 address")),
                    }
                }
            }
            "lease_ttl" => r.lease_ttl = lease_ttl(cx, v, &p, 5, "`30s`, `1m`"),
            _ => not_berth(
                cx,
                &p,
                &[
                    "etcd_endpoints",
                    "etcd_prefix",
                    "network",
                    "subnet_len",
                    "vni",
                    "port",
                    "interface",
                    "public_ip",
                    "lease_ttl",
                ],
            ),
        }
    }
    if let (Some(net), Some(len), Some(sat)) = (network_prefix, r.subnet_len, &subnet_at) {
        if len <= net {
            cx.error(
                sat,
                format!("a host's subnet /{len} does not fit in the cluster network /{net} (it must be longer)"),
            );
            r.subnet_len = None;
        }
    }
    Some(r)
}
