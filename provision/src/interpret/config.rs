//! The document's top level and cloud-init's keys.

use crate::diag::Place;
use crate::model::{Command, Config, Item, Ntp};
use crate::tree::Format;
use crate::tree::{Key, Node, Scalar, Style, Value};

use super::read::Ctx;
use super::schema::CLOUD_CONFIG_KEYS;
use super::{berth, files, network, users, valid};

/// Berth's own keys: under `berth:` in #cloud-config, top-level tables in TOML.
pub(crate) const BERTH_KEYS: &[&str] = &["units", "containerd", "etcd", "update", "ssh", "router"];

/// The whole document (a mapping) -> a config.
pub(crate) fn document(cx: &mut Ctx, root: &Node, source: &str) -> Config {
    let mut c = Config::default();
    let top = Place::new(source, 0, "");
    let Some(entries) = cx.map(root, &Place::new(source, root.line, "")) else { return c };
    let mut berth_entries: Vec<(&Key, &Node)> = Vec::new();
    for (k, v) in entries {
        let at = top.child(k.line, &k.name);
        match (k.name.as_str(), cx.format) {
            ("hostname", _) => c.hostname = host(cx, v, &at),
            ("fqdn", _) => c.fqdn = host(cx, v, &at),
            ("preserve_hostname", _) => c.preserve_hostname = cx.bool(v, &at).unwrap_or(false),
            ("users", _) => c.users = users::users(cx, v, &at),
            ("ssh_authorized_keys", _) => c.ssh_authorized_keys = users::keys(cx, v, &at),
            ("write_files", _) => c.write_files = files::write_files(cx, v, &at),
            ("bootcmd", _) => c.bootcmd = commands(cx, v, &at, false),
            ("runcmd", _) => c.runcmd = commands(cx, v, &at, true),
            ("ntp", _) => c.ntp = ntp(cx, v, &at),
            ("timezone", _) => {
                if let Some(s) = cx.nonempty(v, &at) {
                    match valid::timezone(&s) {
                        Ok(()) => c.timezone = Some(Item { value: s, at }),
                        Err(e) => cx.error(&at, e),
                    }
                }
            }
            ("ssh_pwauth", _) => c.ssh.password_auth = pwauth(cx, v, &at),
            ("disable_root", _) => c.ssh.disable_root = cx.bool(v, &at).map(|b| Item { value: b, at }),
            ("network", _) => c.network = network::network(cx, v, &at),
            ("berth", Format::CloudConfig) => match &v.value {
                Value::Map(m) => berth_entries.extend(m.iter().map(|(k, v)| (k, v))),
                Value::Null => {}
                _ => cx.error(
                    &at,
                    format!("expected a mapping of Berth's keys ({}), found {}", BERTH_KEYS.join(", "), v.kind()),
                ),
            },
            (name, Format::Native) if BERTH_KEYS.contains(&name) => berth_entries.push((k, v)),
            (name, _) => not_implemented(cx, name, &at),
        }
    }
    let berth_at = match cx.format {
        Format::CloudConfig => {
            entries.iter().find(|(k, _)| k.name == "berth").map_or(top.clone(), |(k, _)| top.child(k.line, "berth"))
        }
        Format::Native => top.clone(),
    };
    for (k, v) in berth_entries {
        let at = berth_at.child(k.line, &k.name);
        match k.name.as_str() {
            "units" => c.units = berth::units(cx, v, &at),
            "containerd" => c.containerd = berth::containerd(cx, v, &at),
            "etcd" => c.etcd = berth::etcd(cx, v, &at),
            "update" => c.update = berth::update(cx, v, &at),
            "ssh" => c.ssh.enabled = berth::ssh(cx, v, &at),
            "router" => c.router = berth::router(cx, v, &at),
            _ => cx.error(&at, format!("not a Berth key (Berth's keys: {})", BERTH_KEYS.join(", "))),
        }
    }
    if let Some(e) = &c.etcd {
        berth::etcd_cluster(cx, e, c.network.as_ref());
    }
    // cloud-init's reading (util.get_hostname_fqdn): an fqdn alone gives
    // the hostname its first label; a dotted hostname alone is the fqdn.
    match (&c.hostname, &c.fqdn) {
        (None, Some(f)) => c.hostname = Some(Item { value: first_label(&f.value), at: f.at.clone() }),
        (Some(h), None) if h.value.trim_end_matches('.').contains('.') => {
            c.fqdn = Some(h.clone());
            c.hostname = Some(Item { value: first_label(&h.value), at: h.at.clone() });
        }
        _ => {}
    }
    if c.preserve_hostname {
        for n in [&c.hostname, &c.fqdn].into_iter().flatten() {
            cx.warn(&n.at, "ignored: preserve_hostname is true");
        }
        c.hostname = None;
        c.fqdn = None;
    }
    c
}

/// A top-level key Berth does not read: a cloud-init module's (a warning
/// naming it), or a key of no schema (unknown).
fn not_implemented(cx: &mut Ctx, name: &str, at: &Place) {
    if let Some((_, module, deprecated)) = CLOUD_CONFIG_KEYS.iter().find(|(k, _, _)| *k == name) {
        let dep = if *deprecated { ", and deprecated in cloud-init" } else { "" };
        cx.warn(at, format!("not implemented on Berth (cloud-init's {module}){dep}: ignored"));
    } else if cx.format == Format::CloudConfig && BERTH_KEYS.contains(&name) {
        cx.warn(at, "unknown key, ignored: Berth's own keys go under `berth:`");
    } else if cx.format == Format::Native && name == "berth" {
        cx.error(at, "unknown key: in #berth-config, Berth's keys are top-level tables ([units], [etcd], ...)");
    } else {
        cx.unknown(at, "");
    }
}

fn first_label(name: &str) -> String {
    name.split('.').next().unwrap_or(name).to_string()
}

fn host(cx: &mut Ctx, n: &Node, at: &Place) -> Option<Item<String>> {
    let s = cx.nonempty(n, at)?;
    match valid::hostname(&s) {
        Ok(()) => Some(Item { value: s, at: at.clone() }),
        Err(e) => {
            cx.error(at, e);
            None
        }
    }
}

/// `ssh_pwauth`: a boolean; cloud-init's older string values (`unchanged`,
/// a quoted `"true"`) are accepted with a deprecation warning.
fn pwauth(cx: &mut Ctx, n: &Node, at: &Place) -> Option<Item<bool>> {
    // `unchanged` is a string to YAML quoted or not (as users write it).
    if let Value::Scalar(Scalar { text, style: Style::Plain | Style::Quoted }) = &n.value {
        if text == "unchanged" {
            cx.warn(at, "a string value is deprecated in cloud-init (22.3): `unchanged` leaves the setting as it is");
            return None;
        }
    }
    if let Value::Scalar(Scalar { text, style: Style::Quoted }) = &n.value {
        return match super::read::yaml11_bool(text) {
            Some(b) => {
                cx.warn(at, "a string value is deprecated in cloud-init (22.3): write a boolean");
                Some(Item { value: b, at: at.clone() })
            }
            None => {
                cx.error(at, format!("expected a boolean, found `{text}`"));
                None
            }
        };
    }
    cx.bool(n, at).map(|b| Item { value: b, at: at.clone() })
}

/// `bootcmd` / `runcmd`: a list; a string item runs with `sh -c`, a list
/// item is an argv. `runcmd` allows null items (skipped), as the schema.
fn commands(cx: &mut Ctx, n: &Node, at: &Place, nulls: bool) -> Vec<Item<Command>> {
    let mut out = Vec::new();
    let Some(items) = cx.list(n, at) else { return out };
    for (i, item) in items.iter().enumerate() {
        let p = at.item(item.line, i);
        match &item.value {
            Value::Null if nulls => {}
            Value::List(argv) => {
                let mut words = Vec::new();
                for (j, w) in argv.iter().enumerate() {
                    let wp = p.item(w.line, j);
                    match &w.value {
                        // argv words: any scalar's text (`[sleep, 5]`).
                        Value::Scalar(s) => words.push(s.text.clone()),
                        _ => cx.error(&wp, format!("expected a string, found {}", w.kind())),
                    }
                }
                if words.first().is_none_or(|w| w.is_empty()) {
                    cx.error(&p, "an argv list needs a program as its first word");
                } else {
                    out.push(Item { value: Command::Argv(words), at: p });
                }
            }
            _ => {
                if let Some(s) = cx.nonempty(item, &p) {
                    out.push(Item { value: Command::Shell(s), at: p });
                }
            }
        }
    }
    out
}

/// The NTP clients `ntp.ntp_client` may name: Berth's is chrony, and
/// `auto` (cloud-init's default) means the distribution's.
const NTP_CLIENTS: &[&str] = &["chrony", "auto"];

/// `ntp`: null (`ntp:` alone) means enabled with the defaults.
fn ntp(cx: &mut Ctx, n: &Node, at: &Place) -> Option<Ntp> {
    let mut ntp = Ntp::new(at.clone());
    if n.value == Value::Null {
        return Some(ntp);
    }
    for (k, v) in cx.map(n, at)? {
        let p = at.child(k.line, &k.name);
        match k.name.as_str() {
            "enabled" => ntp.enabled = cx.bool(v, &p).unwrap_or(true),
            "servers" => ntp.servers = hosts(cx, v, &p),
            "pools" => ntp.pools = hosts(cx, v, &p),
            "peers" => ntp.peers = hosts(cx, v, &p),
            "allow" => ntp.allow = networks(cx, v, &p),
            "ntp_client" => {
                if let Some(client) = cx.nonempty(v, &p) {
                    if !NTP_CLIENTS.contains(&client.as_str()) {
                        cx.error(
                            &p,
                            format!("`{client}` is not available on Berth: its NTP client is chrony (give `chrony` or `auto`, or leave it out)"),
                        );
                    }
                }
            }
            "config" => cx.warn(
                &p,
                "not implemented on Berth (chrony's settings are fixed; servers, pools, peers and allow configure it): ignored",
            ),
            _ => cx.unknown(&p, ""),
        }
    }
    Some(ntp)
}

/// `ntp.allow`: addresses or `ADDRESS/PREFIX` networks.
fn networks(cx: &mut Ctx, n: &Node, at: &Place) -> Vec<String> {
    let mut out = Vec::new();
    for item in cx.strings(n, at, false) {
        let ok =
            if item.value.contains('/') { valid::cidr(&item.value).is_ok() } else { valid::ip(&item.value).is_ok() };
        if ok {
            out.push(item.value);
        } else {
            cx.error(
                &item.at,
                format!("`{}` is neither an IP address nor ADDRESS/PREFIX (such as 192.0.2.0/24)", item.value),
            );
        }
    }
    out
}

/// `ntp.servers`, `pools`, `peers`: host names or IP addresses (each
/// becomes one word of a chronyd directive, so nothing else gets through).
fn hosts(cx: &mut Ctx, n: &Node, at: &Place) -> Vec<String> {
    let mut out = Vec::new();
    for item in cx.strings(n, at, false) {
        let ok = valid::hostname(&item.value).is_ok() || valid::ip(&item.value).is_ok();
        if ok {
            out.push(item.value);
        } else {
            cx.error(&item.at, format!("`{}` is neither a host name nor an IP address", item.value));
        }
    }
    out
}
