//! Generated unit files (`docs/units.md`), written to /etc/berth/units.

use super::{sh_quote, toml_list, toml_str, HEADER};
use crate::model::{Command, Etcd, Network, Ntp};

/// The oneshot that runs `runcmd`, once per instance.
pub const RUNCMD_UNIT: &str = "user-runcmd";
/// The script it runs (`runcmd`, one command a line).
pub const RUNCMD_SCRIPT: &str = "/var/lib/berth/provision/runcmd.sh";
/// One empty file per instance-id whose runcmd has run.
pub const RUNCMD_DONE_DIR: &str = "/var/lib/berth/provision/runcmd-done";

/// An instance-id as a file name: letters, digits, `.`, `_` and `-` kept,
/// anything else `_`.
pub fn instance_file_name(instance_id: &str) -> String {
    let s: String = instance_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .collect();
    match s.as_str() {
        "" | "." | ".." => format!("_{s}"),
        _ => s,
    }
}

/// One command as a line of shell: a string as written, a list quoted.
pub fn command_line(c: &Command) -> String {
    match c {
        Command::Shell(s) => s.clone(),
        Command::Argv(v) => v.iter().map(|a| sh_quote(a)).collect::<Vec<_>>().join(" "),
    }
}

/// `runcmd` as a script run by `sh` (not `-e`: as cloud-init, a failing
/// command does not stop the next; the script's status is the last one's).
pub fn runcmd_script(commands: &[Command]) -> String {
    let mut s = String::from("#!/usr/bin/sh\n");
    s.push_str(HEADER);
    for c in commands {
        s.push_str(&command_line(c));
        s.push('\n');
    }
    s
}

/// The `user-runcmd` unit: after the network is online, runs
/// [`RUNCMD_SCRIPT`] unless this instance's stamp exists, then makes the
/// stamp (whatever the script's status: once means once, as cloud-init).
pub fn runcmd_unit(instance_id: &str) -> String {
    let stamp = format!("{RUNCMD_DONE_DIR}/{}", instance_file_name(instance_id));
    let shell =
        format!("/usr/bin/sh {RUNCMD_SCRIPT}; rc=$?; mkdir -p {RUNCMD_DONE_DIR} && : > {}; exit $rc", sh_quote(&stamp));
    format!(
        "{HEADER}description = \"user data: runcmd (once per instance)\"\n\n\
[service]\n\
exec = {}\n\
kind = \"oneshot\"\n\
start_timeout = \"1h\"\n\n\
[dependencies]\n\
wants = [\"network-online\"]\n\
after = [\"network-online\"]\n\n\
[conditions]\n\
path_exists = {}\n",
        toml_list(&["/usr/bin/sh".into(), "-c".into(), shell]),
        toml_str(&format!("!{stamp}")),
    )
}

/// chronyd as the image's `ntp` unit starts it, before its sources: in
/// the foreground, as root (the image's ntp unit says why), with its system call
/// filter, and the settings every host shares (`/usr/lib/berth/chrony.conf`).
pub const CHRONYD: &[&str] =
    &["/usr/sbin/chronyd", "-d", "-u", "root", "-F", "1", "include /usr/lib/berth/chrony.conf"];

/// The pool the image's unit uses, and so the generated one when the
/// document names no server and no pool (as cloud-init: `peers` and
/// `allow` alone keep the default pool).
pub const DEFAULT_POOL: &str = "pool.ntp.org";

/// chronyd's command line for `ntp`: [`CHRONYD`], then one directive per
/// argument (chronyd reads no file when given some): `server H iburst`,
/// `pool H iburst`, `peer H`, `allow X`, in the document's order.
pub fn chronyd_argv(ntp: &Ntp) -> Vec<String> {
    let mut argv: Vec<String> = CHRONYD.iter().map(|s| s.to_string()).collect();
    argv.extend(ntp.servers.iter().map(|h| format!("server {h} iburst")));
    argv.extend(ntp.pools.iter().map(|h| format!("pool {h} iburst")));
    if ntp.servers.is_empty() && ntp.pools.is_empty() {
        argv.push(format!("pool {DEFAULT_POOL} iburst"));
    }
    argv.extend(ntp.peers.iter().map(|h| format!("peer {h}")));
    argv.extend(ntp.allow.iter().map(|a| format!("allow {a}")));
    argv
}

/// The `ntp` unit (replaces the image's `/usr/lib/berth/units/ntp.toml`):
/// chronyd with the document's sources ([`chronyd_argv`]), ordered,
/// weighted and restarted as the image's unit.
pub fn ntp(ntp: &Ntp) -> String {
    format!(
        "{HEADER}# chronyd with the time sources of user data's `ntp` key; its other\n\
# settings are in /usr/lib/berth/chrony.conf. `chronyc sources` shows them.\n\
description = \"time sync (chronyd)\"\n\n\
[service]\n\
exec = {}\n\n\
[dependencies]\n\
wants = [\"network-online\"]\n\
after = [\"network-online\"]\n\
idle = true\n\n\
[limits]\n\
cpu_weight = 1\n\n\
[restart]\n\
policy = \"always\"\n\
backoff_max = \"60s\"\n",
        toml_list(&chronyd_argv(ntp))
    )
}

/// The image's sshd unit (`/usr/lib/berth/units/sshd.toml`) with
/// dropbear's flags for `ssh_pwauth` (without it `-s`: no password
/// logins) and `disable_root` (`-w`: no root logins).
pub fn sshd(password_auth: bool, disable_root: bool) -> String {
    let mut argv: Vec<String> = vec!["/usr/sbin/dropbear".into(), "-F".into(), "-E".into()];
    if !password_auth {
        argv.push("-s".into());
    }
    if disable_root {
        argv.push("-w".into());
    }
    argv.extend(
        ["-m", "-r", "/etc/dropbear/dropbear_ed25519_host_key", "-p", "22", "-P", "/run/dropbear.pid"]
            .map(String::from),
    );
    format!(
        "{HEADER}# dropbear on port 22{}{}.\n\
description = \"SSH server (dropbear)\"\n\n\
[service]\n\
exec = {}\n\
ready = {{ tcp = \"127.0.0.1:22\" }}\n\
kill_mode = \"main\"\n\n\
[dependencies]\n\
requires = [\"ssh-keygen\"]\n\
after = [\"network\"]\n\
required_for_ready = true\n\
idle = true\n\n\
[restart]\n\
policy = \"always\"\n",
        if password_auth { ", password logins allowed (ssh_pwauth)" } else { ", keys only" },
        if disable_root { ", no root logins (disable_root)" } else { "" },
        toml_list(&argv)
    )
}

/// The client URL this host's programs reach etcd at (its health check,
/// the updater's reboot lock, the router): a URL etcd listens on, plain
/// HTTP on the loopback if there is one, else plain HTTP, else the first
/// (etcdctl's default, 127.0.0.1, may not be listened on); a wildcard
/// listen address is asked on the loopback.
pub fn etcd_client_url(e: &Etcd) -> String {
    let l = &e.listen_client_urls;
    let client = l
        .iter()
        .find(|u| u.starts_with("http://127.0.0.1:"))
        .or_else(|| l.iter().find(|u| u.starts_with("http://")))
        .or_else(|| l.first())
        .map_or("http://127.0.0.1:2379", |s| s.as_str());
    client.replace("://0.0.0.0:", "://127.0.0.1:").replace("://[::]:", "://[::1]:")
}

/// etcd's raft timing for a cluster of one member (milliseconds). A member
/// that restarts waits a whole randomised election timeout for its own
/// election (between one and two timeouts): etcd 3.4 fast-forwards the
/// election ticks only when it already knows its members at start, and a
/// restarted member learns them from its WAL just after it has decided
/// (`adjustTicks` in etcdserver/server.go). That is 1 to 2 s with etcd's
/// defaults (100 ms, 1000 ms), 250 to 500 ms with these, on every reboot's
/// path to a ready etcd. 250 ms is the least etcd accepts with a 50 ms
/// heartbeat (five heartbeats) and stays within its tuning guide for a LAN
/// (election timeout at least ten round trips). A cluster written by user
/// data with two or more members keeps etcd's defaults, which tolerate
/// slow disks better; a single member grown into a cluster by `etcdctl
/// member add` keeps these until its user data names the cluster (then its
/// timings match the other members' again).
pub const SINGLE_MEMBER_TIMING: [&str; 4] = ["--heartbeat-interval", "50", "--election-timeout", "250"];

/// The image's etcd unit (`/usr/lib/berth/units/etcd.toml`) with the
/// member and cluster settings; what the document leaves out keeps the
/// image's value (a single node `berth` on 127.0.0.1).
pub fn etcd(e: &Etcd) -> String {
    let urls = |v: &[String], default: &str| if v.is_empty() { default.to_string() } else { v.join(",") };
    let name = e.name.clone().unwrap_or_else(|| "berth".into());
    let peer_adv = urls(&e.initial_advertise_peer_urls, "http://127.0.0.1:2380");
    // This member alone: NAME=URL for each of its peer URLs.
    let cluster = e
        .initial_cluster
        .clone()
        .unwrap_or_else(|| peer_adv.split(',').map(|u| format!("{name}={u}")).collect::<Vec<_>>().join(","));
    let members: std::collections::BTreeSet<&str> =
        cluster.split(',').map(|m| m.split_once('=').map_or(m, |(name, _)| name)).collect();
    let single_member = members.len() == 1;
    let mut argv: Vec<String> = vec![
        "/usr/bin/etcd".into(),
        "--name".into(),
        name,
        "--data-dir".into(),
        "/var/lib/etcd".into(),
        "--listen-client-urls".into(),
        urls(&e.listen_client_urls, "http://127.0.0.1:2379"),
        "--advertise-client-urls".into(),
        urls(&e.advertise_client_urls, "http://127.0.0.1:2379"),
        "--listen-peer-urls".into(),
        urls(&e.listen_peer_urls, "http://127.0.0.1:2380"),
        "--initial-advertise-peer-urls".into(),
        peer_adv,
        "--initial-cluster".into(),
        cluster,
    ];
    if let Some(state) = &e.initial_cluster_state {
        argv.extend(["--initial-cluster-state".into(), state.clone()]);
    }
    if let Some(token) = &e.initial_cluster_token {
        argv.extend(["--initial-cluster-token".into(), token.clone()]);
    }
    if single_member {
        argv.extend(SINGLE_MEMBER_TIMING.map(String::from));
    }
    argv.extend(
        [
            "--auto-compaction-mode",
            "periodic",
            "--auto-compaction-retention",
            "1h",
            "--logger",
            "zap",
            "--log-outputs",
            "stderr",
        ]
        .map(String::from),
    );
    let client = etcd_client_url(e);
    format!(
        "{HEADER}description = \"etcd key-value store\"\n\n\
[service]\n\
exec = {}\n\
user = \"etcd\"\n\
state_directory = [\"etcd\"]\n\
state_directory_mode = \"0700\"\n\
ready = \"notify\"\n\
start_timeout = \"60s\"\n\
stop_timeout = \"30s\"\n\n\
[limits]\n\
nofile = 1048576\n\n\
[restart]\n\
policy = \"always\"\n\n\
[health]\n\
check = {{ command = {} }}\n\
interval = \"30s\"\n\
timeout = \"10s\"\n\
on_failure = \"degrade\"\n",
        toml_list(&argv),
        toml_list(&["/usr/bin/etcdctl".into(), "--endpoints".into(), client, "endpoint".into(), "health".into()]),
    )
}

/// Whether a route or address is IPv6.
fn is_v6(s: &str) -> bool {
    s.contains(':')
}

/// The network unit for static settings: a shell script that renames
/// interfaces matched by MAC, sets MTUs, brings them up, sets addresses and
/// routes with iproute2's `ip` and writes /etc/resolv.conf. Without a
/// `dhcp4` interface it is a oneshot; with some, the script then execs
/// dhcpcd on those in the foreground (long-running, as the image's unit).
pub fn network(net: &Network) -> String {
    const IP: &str = "/usr/bin/ip";
    let mut script = String::new();
    for i in &net.interfaces {
        let name = sh_quote(&i.name);
        if let Some(mac) = &i.mac {
            let mac = sh_quote(&mac.to_ascii_lowercase());
            script.push_str(&format!(
                "dev=$(for d in /sys/class/net/*; do [ \"$(cat \"$d/address\" 2>/dev/null)\" = {mac} ] && echo \"${{d##*/}}\"; done | head -n 1)\n\
[ -n \"$dev\" ] || {{ echo \"no interface has MAC address \"{mac} >&2; exit 1; }}\n\
if [ \"$dev\" != {name} ]; then {IP} link set dev \"$dev\" down; {IP} link set dev \"$dev\" name {name}; fi\n"
            ));
        }
        if let Some(mtu) = i.mtu {
            script.push_str(&format!("{IP} link set dev {name} mtu {mtu}\n"));
        }
        script.push_str(&format!("{IP} link set dev {name} up\n"));
        for a in &i.addresses {
            script.push_str(&format!("{IP} address replace {} dev {name}\n", sh_quote(a)));
        }
    }
    for i in &net.interfaces {
        for r in &i.routes {
            let v6 = is_v6(&r.to) || is_v6(&r.via);
            let to = match r.to.as_str() {
                "default" | "0.0.0.0/0" | "::/0" => "default".to_string(),
                other => sh_quote(other),
            };
            let family = if v6 { " -6" } else { "" };
            let metric = r.metric.map(|m| format!(" metric {m}")).unwrap_or_default();
            script.push_str(&format!(
                "{IP}{family} route replace {to} via {} dev {}{metric}\n",
                sh_quote(&r.via),
                sh_quote(&i.name)
            ));
        }
    }
    if !net.nameservers.is_empty() || !net.search.is_empty() {
        let mut lines: Vec<String> = net.nameservers.iter().map(|n| format!("nameserver {n}")).collect();
        if !net.search.is_empty() {
            lines.push(format!("search {}", net.search.join(" ")));
        }
        script.push_str(&format!(
            "printf '%s\\n' {} > /etc/resolv.conf\n",
            lines.iter().map(|l| sh_quote(l)).collect::<Vec<_>>().join(" ")
        ));
    }
    let dhcp: Vec<String> = net.interfaces.iter().filter(|i| i.dhcp4).map(|i| sh_quote(&i.name)).collect();
    let names = net.interfaces.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ");
    if dhcp.is_empty() {
        format!(
            "{HEADER}description = {}\n\n\
[service]\n\
exec = {}\n\
kind = \"oneshot\"\n\
start_timeout = \"30s\"\n\n\
[dependencies]\n\
required_for_ready = true\n",
            toml_str(&format!("network: static addresses on {names} (user data)")),
            toml_list(&["/usr/bin/sh".into(), "-ec".into(), script]),
        )
    } else {
        script.push_str(&format!("exec /usr/sbin/dhcpcd --nobackground {}\n", dhcp.join(" ")));
        format!(
            "{HEADER}description = {}\n\n\
[service]\n\
exec = {}\n\
ready = \"started\"\n\n\
[dependencies]\n\
required_for_ready = true\n\n\
[restart]\n\
policy = \"always\"\n",
            toml_str(&format!("network: {names} (user data; DHCP on some)")),
            toml_list(&["/usr/bin/sh".into(), "-ec".into(), script]),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_list_becomes_one_directive_per_item_in_order() {
        let n = Ntp {
            enabled: true,
            servers: vec!["192.0.2.1".into(), "time.example.com".into()],
            pools: vec![],
            peers: vec!["peer-1".into()],
            allow: vec!["192.0.2.0/24".into()],
            at: crate::diag::Place::new("u", 1, "ntp"),
        };
        assert_eq!(
            chronyd_argv(&n).get(CHRONYD.len()..).unwrap(),
            ["server 192.0.2.1 iburst", "server time.example.com iburst", "peer peer-1", "allow 192.0.2.0/24"]
        );
        // Peers and allow alone keep the default pool, as cloud-init does.
        let n = Ntp { servers: vec![], ..n };
        assert_eq!(
            chronyd_argv(&n).get(CHRONYD.len()..).unwrap(),
            ["pool pool.ntp.org iburst", "peer peer-1", "allow 192.0.2.0/24"]
        );
        let n = Ntp { pools: vec!["0.pool.example.org".into()], peers: vec![], allow: vec![], ..n };
        assert_eq!(chronyd_argv(&n).get(CHRONYD.len()..).unwrap(), ["pool 0.pool.example.org iburst"]);
    }

    #[test]
    fn a_cluster_of_several_members_keeps_etcds_own_raft_timing() {
        let (_, etcd) = crate::generate::examples().into_iter().find(|(name, _)| name == "etcd").unwrap();
        assert!(etcd.contains("n2=http://192.0.2.11:2380"), "{etcd}");
        assert!(!etcd.contains("--heartbeat-interval") && !etcd.contains("--election-timeout"), "{etcd}");
    }
}
