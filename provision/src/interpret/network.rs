//! Network config version 1 and 2 (cloud-init's and netplan's formats),
//! reduced to one meaning: physical interfaces with DHCPv4 or static
//! addresses, routes, MTU and a MAC match; global nameservers and search
//! domains.
//!
//! Berth's limits, errors: bonds, bridges, VLANs, Wi-Fi and tunnels
//! (there is no software for them in the image), interfaces matched by
//! name pattern or driver. Warnings: DHCPv6, `renderer` and other
//! settings with no effect here.

use std::net::IpAddr;

use crate::diag::Place;
use crate::model::{Interface, Network, Route};
use crate::tree::{Key, Node, Value};

use super::read::Ctx;
use super::valid;

/// The `network` key, or the whole NoCloud `network-config` document
/// (which may itself hold a `network:` mapping).
pub(crate) fn network(cx: &mut Ctx, n: &Node, at: &Place) -> Option<Network> {
    if n.value == Value::Null {
        return None;
    }
    let entries = cx.map(n, at)?;
    // `network: {network: {...}}` (a network-config file with the key).
    if let [(k, inner)] = entries {
        if k.name == "network" {
            return network(cx, inner, &at.child(k.line, "network"));
        }
    }
    // `network: {config: disabled}`: cloud-init's way to leave the network
    // as the image sets it.
    if let Some((_, v)) = entries.iter().find(|(k, _)| k.name == "config") {
        if matches!(&v.value, Value::Scalar(s) if s.text == "disabled") {
            if let Some((k2, _)) = entries.iter().find(|(k2, _)| k2.name != "config") {
                cx.error(&at.child(k2.line, &k2.name), "`config: disabled` takes no other key");
            }
            return None;
        }
    }
    let version = match entries.iter().find(|(k, _)| k.name == "version") {
        Some((k, v)) => cx.uint(v, &at.child(k.line, "version")),
        None => {
            cx.error(at, "`version` is required (1 or 2)");
            None
        }
    }?;
    match version {
        1 => v1(cx, entries, at),
        2 => v2(cx, entries, at),
        v => {
            cx.error(at, format!("network config version {v} is not supported (1 or 2)"));
            None
        }
    }
}

fn blank_iface(name: String, at: &Place) -> Interface {
    Interface { name, mac: None, dhcp4: false, addresses: Vec::new(), routes: Vec::new(), mtu: None, at: at.clone() }
}

fn ip_item(cx: &mut Ctx, n: &Node, at: &Place) -> Option<String> {
    let s = cx.nonempty(n, at)?;
    match valid::ip(&s) {
        Ok(_) => Some(s),
        Err(e) => {
            cx.error(at, e);
            None
        }
    }
}

fn ips(cx: &mut Ctx, n: &Node, at: &Place) -> Vec<String> {
    let mut out = Vec::new();
    for s in cx.strings(n, at, false) {
        match valid::ip(&s.value) {
            Ok(_) => out.push(s.value),
            Err(e) => cx.error(&s.at, e),
        }
    }
    out
}

/// Search domains: each a DNS name (it becomes a word of resolv.conf's
/// `search` line, so a space or a line break would be taken apart there).
fn domains(cx: &mut Ctx, n: &Node, at: &Place) -> Vec<String> {
    let mut out = Vec::new();
    for s in cx.strings(n, at, false) {
        match valid::hostname(&s.value) {
            Ok(()) => out.push(s.value),
            Err(_) => cx.error(&s.at, format!("`{}` is not a search domain (a DNS name)", s.value)),
        }
    }
    out
}

fn push_unique(v: &mut Vec<String>, items: Vec<String>) {
    let mut have: std::collections::HashSet<String> = v.iter().cloned().collect();
    for i in items {
        if have.insert(i.clone()) {
            v.push(i);
        }
    }
}

fn default_to(gw: &str) -> String {
    if gw.contains(':') { "::/0" } else { "0.0.0.0/0" }.to_string()
}

// ---- version 1 ----

fn v1(cx: &mut Ctx, entries: &[(Key, Node)], at: &Place) -> Option<Network> {
    let mut net =
        Network { version: 1, interfaces: Vec::new(), nameservers: Vec::new(), search: Vec::new(), at: at.clone() };
    let mut global_routes: Vec<(Route, Place)> = Vec::new();
    for (k, v) in entries {
        let p = at.child(k.line, &k.name);
        match k.name.as_str() {
            "version" => {}
            "config" => {
                if v.value == Value::Null {
                    continue;
                }
                let Some(items) = cx.list(v, &p) else { continue };
                for (i, item) in items.iter().enumerate() {
                    let ip = p.item(item.line, i);
                    let Some(m) = cx.map(item, &ip) else { continue };
                    let ty = m
                        .iter()
                        .find(|(k, _)| k.name == "type")
                        .and_then(|(k, v)| cx.string(v, &ip.child(k.line, "type")));
                    match ty.as_deref() {
                        Some("physical") => {
                            if let Some(iface) = v1_physical(cx, m, &ip, &mut net) {
                                net.interfaces.push(iface);
                            }
                        }
                        Some("nameserver") => {
                            for (k, v) in m {
                                let np = ip.child(k.line, &k.name);
                                match k.name.as_str() {
                                    "type" => {}
                                    "address" => {
                                        let a = match &v.value {
                                            Value::Scalar(_) => ip_item(cx, v, &np).into_iter().collect(),
                                            _ => ips(cx, v, &np),
                                        };
                                        push_unique(&mut net.nameservers, a);
                                    }
                                    "search" => {
                                        let s = domains(cx, v, &np);
                                        push_unique(&mut net.search, s);
                                    }
                                    "interface" => cx.warn(&np, "nameservers apply to the whole machine on Berth"),
                                    _ => cx.unknown(&np, ""),
                                }
                            }
                        }
                        Some("route") => {
                            if let Some(r) = v1_route(cx, m, &ip, &["type"]) {
                                global_routes.push((r, ip));
                            }
                        }
                        Some(t @ ("bond" | "bridge" | "vlan" | "infiniband")) => {
                            cx.error(&ip, format!("a `{t}` is not supported on Berth: only physical interfaces"))
                        }
                        Some(t) => cx.error(&ip, format!("unknown type `{t}` (physical, nameserver, route)")),
                        None => cx.error(&ip, "`type` is required"),
                    }
                }
            }
            _ => cx.unknown(&p, ""),
        }
    }
    // A global route goes to the interface whose addresses hold its
    // gateway; with a single interface, to that one.
    for (r, p) in global_routes {
        let via: Option<IpAddr> = r.via.parse().ok();
        let idx = net.interfaces.iter().position(|i| {
            i.addresses.iter().any(|a| match (valid::cidr(a), via) {
                (Ok((n, pre)), Some(v)) => valid::contains(n, pre, v),
                _ => false,
            })
        });
        let idx = match (idx, net.interfaces.len()) {
            (Some(i), _) => Some(i),
            (None, 1) => {
                cx.warn(
                    &p,
                    format!("the gateway {} is in no subnet of the interface: the route is set on it anyway", r.via),
                );
                Some(0)
            }
            _ => None,
        };
        match idx.and_then(|i| net.interfaces.get_mut(i)) {
            Some(i) => i.routes.push(r),
            None => cx.error(&p, format!("the gateway {} is in no interface's subnet", r.via)),
        }
    }
    Some(net)
}

/// A v1 route's mapping (`destination` or `network`, `netmask`,
/// `gateway`, `metric`; the keys in `ignored` are read elsewhere) -> a
/// route to a prefix.
fn v1_route(cx: &mut Ctx, m: &[(Key, Node)], at: &Place, ignored: &[&str]) -> Option<Route> {
    let mut r = Route { to: String::new(), via: String::new(), metric: None };
    let mut netmask = None;
    for (k, v) in m {
        let p = at.child(k.line, &k.name);
        match k.name.as_str() {
            name if ignored.contains(&name) => {}
            "destination" | "network" => r.to = cx.nonempty(v, &p).unwrap_or_default(),
            "netmask" => netmask = cx.nonempty(v, &p).map(|s| (s, p.clone())),
            "gateway" => r.via = ip_item(cx, v, &p).unwrap_or_default(),
            "metric" => r.metric = cx.u32(v, &p),
            _ => cx.unknown(&p, ""),
        }
    }
    if r.to.is_empty() || r.via.is_empty() {
        cx.error(at, "a route needs `destination` and `gateway`");
        return None;
    }
    if r.to == "default" {
        r.to = default_to(&r.via);
    }
    if !r.to.contains('/') {
        let prefix = match &netmask {
            Some((m, mp)) => match valid::netmask_prefix(m) {
                Ok(p) => p,
                Err(e) => {
                    cx.error(mp, e);
                    return None;
                }
            },
            None => {
                if r.to.contains(':') {
                    128
                } else {
                    32
                }
            }
        };
        r.to = format!("{}/{prefix}", r.to);
    }
    if let Err(e) = valid::cidr(&r.to) {
        cx.error(at, e);
        return None;
    }
    Some(r)
}

fn v1_physical(cx: &mut Ctx, m: &[(Key, Node)], at: &Place, net: &mut Network) -> Option<Interface> {
    let before = cx.errors.len();
    let name = m.iter().find(|(k, _)| k.name == "name").and_then(|(k, v)| cx.nonempty(v, &at.child(k.line, "name")));
    let Some(name) = name else {
        cx.error(at, "`name` is required");
        return None;
    };
    if let Err(e) = valid::ifname(&name) {
        cx.error(at, e);
    }
    let mut iface = blank_iface(name, at);
    for (k, v) in m {
        let p = at.child(k.line, &k.name);
        match k.name.as_str() {
            "type" | "name" => {}
            "mac_address" => {
                if let Some(s) = cx.nonempty(v, &p) {
                    match valid::mac(&s) {
                        Ok(mac) => iface.mac = Some(mac),
                        Err(e) => cx.error(&p, e),
                    }
                }
            }
            "mtu" => iface.mtu = cx.u32(v, &p),
            "subnets" => {
                let Some(subnets) = cx.list(v, &p) else { continue };
                for (i, s) in subnets.iter().enumerate() {
                    let sp = p.item(s.line, i);
                    v1_subnet(cx, s, &sp, &mut iface, net);
                }
            }
            "accept-ra" | "keep_configuration" => cx.warn(&p, "not implemented on Berth: ignored"),
            _ => cx.unknown(&p, ""),
        }
    }
    (cx.errors.len() == before).then_some(iface)
}

fn v1_subnet(cx: &mut Ctx, n: &Node, at: &Place, iface: &mut Interface, net: &mut Network) {
    let Some(m) = cx.map(n, at) else { return };
    let ty = m.iter().find(|(k, _)| k.name == "type").and_then(|(k, v)| cx.string(v, &at.child(k.line, "type")));
    let statik = match ty.as_deref() {
        Some("dhcp" | "dhcp4") => {
            iface.dhcp4 = true;
            false
        }
        Some("dhcp6" | "ipv6_dhcpv6-stateful" | "ipv6_dhcpv6-stateless" | "ipv6_slaac") => {
            cx.warn(at, "DHCPv6 and SLAAC settings are not implemented on Berth: ignored");
            false
        }
        Some("static" | "static6") => true,
        Some("manual") => false,
        Some(t) => {
            cx.error(at, format!("unknown subnet type `{t}` (dhcp, dhcp4, dhcp6, static, static6)"));
            return;
        }
        None => {
            cx.error(at, "`type` is required");
            return;
        }
    };
    let mut address = None;
    let mut netmask = None;
    let mut gateway = None;
    let mut metric = None;
    for (k, v) in m {
        let p = at.child(k.line, &k.name);
        match k.name.as_str() {
            "type" => {}
            "address" => address = cx.nonempty(v, &p).map(|a| (a, p)),
            "netmask" => netmask = cx.nonempty(v, &p).map(|a| (a, p)),
            "gateway" => gateway = ip_item(cx, v, &p),
            "metric" => metric = cx.u32(v, &p),
            "dns_nameservers" => {
                let a = ips(cx, v, &p);
                push_unique(&mut net.nameservers, a);
            }
            "dns_search" => {
                let s = domains(cx, v, &p);
                push_unique(&mut net.search, s);
            }
            "routes" => {
                let Some(routes) = cx.list(v, &p) else { continue };
                for (i, r) in routes.iter().enumerate() {
                    let rp = p.item(r.line, i);
                    let Some(rm) = cx.map(r, &rp) else { continue };
                    if let Some(r) = v1_route(cx, rm, &rp, &[]) {
                        iface.routes.push(r);
                    }
                }
            }
            "control" | "ipv4" | "ipv6" => cx.warn(&p, "not implemented on Berth: ignored"),
            _ => cx.unknown(&p, ""),
        }
    }
    if !statik {
        return;
    }
    let Some((addr, ap)) = address else {
        cx.error(at, "a static subnet needs `address`");
        return;
    };
    let cidr = if addr.contains('/') {
        addr
    } else {
        match &netmask {
            Some((m, mp)) => match valid::netmask_prefix(m) {
                Ok(pre) => format!("{addr}/{pre}"),
                Err(e) => {
                    cx.error(mp, e);
                    return;
                }
            },
            None => format!("{addr}/{}", if addr.contains(':') { 64 } else { 24 }),
        }
    };
    match valid::cidr(&cidr) {
        Ok(_) => iface.addresses.push(cidr),
        Err(e) => cx.error(&ap, e),
    }
    if let Some(gw) = gateway {
        iface.routes.push(Route { to: default_to(&gw), via: gw, metric });
    }
}

// ---- version 2 ----

fn v2(cx: &mut Ctx, entries: &[(Key, Node)], at: &Place) -> Option<Network> {
    let mut net =
        Network { version: 2, interfaces: Vec::new(), nameservers: Vec::new(), search: Vec::new(), at: at.clone() };
    for (k, v) in entries {
        let p = at.child(k.line, &k.name);
        match k.name.as_str() {
            "version" => {}
            "renderer" => cx.warn(&p, "ignored: Berth configures the network itself"),
            "ethernets" => {
                let Some(m) = cx.map(v, &p) else { continue };
                for (id, e) in m {
                    let ep = p.child(id.line, &id.name);
                    if let Some(i) = v2_ethernet(cx, &id.name, e, &ep, &mut net) {
                        net.interfaces.push(i);
                    }
                }
            }
            t @ ("bonds" | "bridges" | "vlans" | "wifis" | "tunnels" | "vrfs" | "modems") => {
                cx.error(&p, format!("`{t}` are not supported on Berth: only physical interfaces (ethernets)"))
            }
            _ => cx.unknown(&p, ""),
        }
    }
    Some(net)
}

fn v2_ethernet(cx: &mut Ctx, id: &str, n: &Node, at: &Place, net: &mut Network) -> Option<Interface> {
    let before = cx.errors.len();
    let m = cx.map(n, at)?;
    let mut iface = blank_iface(id.to_string(), at);
    let mut set_name = None;
    for (k, v) in m {
        let p = at.child(k.line, &k.name);
        match k.name.as_str() {
            "match" => {
                let Some(mm) = cx.map(v, &p) else { continue };
                for (k, v) in mm {
                    let q = p.child(k.line, &k.name);
                    match k.name.as_str() {
                        "macaddress" => {
                            if let Some(s) = cx.nonempty(v, &q) {
                                match valid::mac(&s) {
                                    Ok(mac) => iface.mac = Some(mac),
                                    Err(e) => cx.error(&q, e),
                                }
                            }
                        }
                        "name" | "driver" => cx.error(&q, "matching by name or driver is not supported on Berth: match `macaddress`, or name the interface by its id"),
                        _ => cx.unknown(&q, ""),
                    }
                }
            }
            "set-name" => set_name = cx.nonempty(v, &p),
            "dhcp4" => iface.dhcp4 = cx.bool(v, &p).unwrap_or(false),
            "dhcp6" => {
                if cx.bool(v, &p) == Some(true) {
                    cx.warn(&p, "DHCPv6 is not implemented on Berth: ignored");
                }
            }
            "addresses" => {
                for a in cx.strings(v, &p, false) {
                    match valid::cidr(&a.value) {
                        Ok(_) => iface.addresses.push(a.value),
                        Err(e) => cx.error(&a.at, e),
                    }
                }
            }
            "gateway4" | "gateway6" => {
                cx.warn(&p, "deprecated in netplan: use `routes` with `to: default`");
                if let Some(gw) = ip_item(cx, v, &p) {
                    let is_v6 = gw.contains(':');
                    if is_v6 != (k.name == "gateway6") {
                        cx.error(
                            &p,
                            format!("{gw} is not an {} address", if k.name == "gateway6" { "IPv6" } else { "IPv4" }),
                        );
                    } else {
                        iface.routes.push(Route { to: default_to(&gw), via: gw, metric: None });
                    }
                }
            }
            "nameservers" => {
                let Some(nm) = cx.map(v, &p) else { continue };
                for (k, v) in nm {
                    let q = p.child(k.line, &k.name);
                    match k.name.as_str() {
                        "addresses" => {
                            let a = ips(cx, v, &q);
                            push_unique(&mut net.nameservers, a);
                        }
                        "search" => {
                            let s = domains(cx, v, &q);
                            push_unique(&mut net.search, s);
                        }
                        _ => cx.unknown(&q, ""),
                    }
                }
            }
            "routes" => {
                let Some(routes) = cx.list(v, &p) else { continue };
                for (i, r) in routes.iter().enumerate() {
                    let rp = p.item(r.line, i);
                    let Some(rm) = cx.map(r, &rp) else { continue };
                    let mut route = Route { to: String::new(), via: String::new(), metric: None };
                    for (k, v) in rm {
                        let q = rp.child(k.line, &k.name);
                        match k.name.as_str() {
                            "to" => route.to = cx.nonempty(v, &q).unwrap_or_default(),
                            "via" => route.via = ip_item(cx, v, &q).unwrap_or_default(),
                            "metric" => route.metric = cx.u32(v, &q),
                            "on-link" | "table" | "scope" | "type" | "from" | "mtu" => {
                                cx.warn(&q, "not implemented on Berth: ignored")
                            }
                            _ => cx.unknown(&q, ""),
                        }
                    }
                    if route.to.is_empty() || route.via.is_empty() {
                        cx.error(&rp, "a route needs `to` and `via`");
                        continue;
                    }
                    if route.to == "default" {
                        route.to = default_to(&route.via);
                    } else if !route.to.contains('/') {
                        route.to = format!("{}/{}", route.to, if route.to.contains(':') { 128 } else { 32 });
                    }
                    match valid::cidr(&route.to) {
                        Ok(_) => iface.routes.push(route),
                        Err(e) => cx.error(&rp, e),
                    }
                }
            }
            "mtu" => iface.mtu = cx.u32(v, &p),
            "optional" | "dhcp4-overrides" | "dhcp6-overrides" | "accept-ra" | "wakeonlan" | "link-local"
            | "critical" | "dhcp-identifier" | "ipv6-privacy" | "macaddress" | "renderer" => {
                cx.warn(&p, "not implemented on Berth: ignored")
            }
            _ => cx.unknown(&p, ""),
        }
    }
    if let Some(n) = set_name {
        if iface.mac.is_none() {
            cx.error(at, "`set-name` needs `match: {macaddress: ...}`");
        }
        iface.name = n;
    }
    if let Err(e) = valid::ifname(&iface.name) {
        cx.error(at, e);
    }
    (cx.errors.len() == before).then_some(iface)
}
