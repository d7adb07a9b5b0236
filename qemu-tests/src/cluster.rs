//! Berth hosts as a cluster in tests (issue 10): host `i` (1 to 3) has a
//! second NIC on one virtual segment ([`crate::VmConfig::segment_nic`])
//! with the documentation address 192.0.2.1`i`/24, and `#cloud-config`
//! user data making it a member of a three-member etcd on those addresses,
//! with the router on that segment and, when asked, automatic updates
//! coordinated through etcd.
//!
//! The helpers below drive such a cluster for the tests
//! (`qemu-tests/tests/cluster.rs`) and the benchmark (`berth-image bench
//! --cluster`): [`start_host`], [`poll`], [`lease_of`], [`container_addr`].

use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{io, Error, Result};
use crate::{Vm, VmConfig, FW_CFG_USER_DATA, GIB};

/// The cluster network (flannel's `Network`) the hosts' routers share.
pub const NETWORK: &str = "10.244.0.0/16";
/// The routers' lease TTL in seconds (short, so a leave shows quickly).
pub const LEASE_TTL_S: u64 = 15;
/// etcd's prefix of the routers' subnet leases (flannel's layout).
pub const SUBNETS: &str = "/coreos.com/network/subnets/";

/// Host `i`'s address on the segment (`192.0.2.1i`).
pub fn addr(i: u8) -> String {
    format!("192.0.2.1{i}")
}

/// The etcd client URLs of the three hosts, comma-separated (etcdctl's
/// `--endpoints`).
pub fn endpoints() -> String {
    (1..=3).map(|j| format!("http://{}:2379", addr(j))).collect::<Vec<_>>().join(",")
}

/// What a host's user data turns on besides its etcd membership.
#[derive(Clone, Debug, Default)]
pub struct Roles {
    /// The router on the segment (`berth.router`).
    pub router: bool,
    /// Automatic updates from this update source URL, rebooting at once
    /// but one host at a time (`reboot_strategy: etcd-lock`, one slot).
    pub updates_from: Option<String>,
}

/// The `#cloud-config` user data of host `i` (1 to 3): hostname `node<i>`,
/// eth0 on DHCP (QEMU's user network), eth1 on the segment, a member of
/// the three-member etcd, and `roles`.
pub fn user_data(i: u8, roles: &Roles) -> String {
    let cluster: Vec<String> = (1..=3).map(|j| format!("node{j}=http://{}:2380", addr(j))).collect();
    let me = addr(i);
    let mut ud = format!(
        "#cloud-config
hostname: node{i}
network:
  version: 2
  ethernets:
    eth0:
      dhcp4: true
    eth1:
      addresses: [{me}/24]
berth:
  etcd:
    name: node{i}
    initial_cluster: {cluster}
    initial_cluster_state: new
    initial_cluster_token: berth-test
    listen_peer_urls: [http://{me}:2380]
    initial_advertise_peer_urls: [http://{me}:2380]
    listen_client_urls: [http://{me}:2379, http://127.0.0.1:2379]
    advertise_client_urls: [http://{me}:2379]
",
        cluster = cluster.join(",")
    );
    if roles.router {
        ud.push_str(&format!(
            "  router:
    network: {NETWORK}
    subnet_len: 24
    interface: eth1
    public_ip: {me}
    lease_ttl: {LEASE_TTL_S}s
"
        ));
    }
    if let Some(source) = &roles.updates_from {
        ud.push_str(&format!(
            "  update:
    source: {source}
    auto: true
    interval: 10s
    reboot: immediately
    reboot_strategy: etcd-lock
    reboot_lock_max: 1
    reboot_lock_ttl: 10m
"
        ));
    }
    ud
}

/// Starts host `i` from `base` (its disk, memory, ...): a 4 GiB data disk,
/// [`user_data`]`(i, roles)` over fw_cfg (written into `dir`), the NIC on
/// `segment` and, when given, `extra_drive` as a second disk (a QEMU
/// `-drive` value, e.g. [`crate::oci::readonly_drive`]). Does not wait for it.
pub fn start_host(
    base: VmConfig,
    dir: &Path,
    i: u8,
    roles: &Roles,
    segment: u16,
    extra_drive: Option<&str>,
) -> Result<Vm> {
    let ud = dir.join(format!("user-data-{i}"));
    std::fs::write(&ud, user_data(i, roles)).map_err(io(format!("writing {}", ud.display())))?;
    let mut cfg = base.disk_size(4 * GIB).fw_cfg(FW_CFG_USER_DATA, &ud).segment_nic(segment, i);
    if let Some(d) = extra_drive {
        cfg = cfg.arg("-drive").arg(d);
    }
    Vm::start(cfg)
}

/// Runs `cmd` in `vm` every 0.2 s until it exits 0 and `done` accepts its
/// output; returns that output. [`Error::Timeout`] (with the last output)
/// when `timeout` passes first. A command that fails (a tool missing, a
/// typo) never counts as done, so `done` may test for absence.
pub fn poll(vm: &mut Vm, what: &str, cmd: &str, timeout: Duration, done: impl Fn(&str) -> bool) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let out = vm.sh(cmd)?;
        if out.success() && done(&out.output) {
            return Ok(out.output);
        }
        if Instant::now() > deadline {
            return Err(Error::Timeout {
                what: what.to_string(),
                after: timeout,
                context: format!("`{cmd}` (exit {}) says:\n{}\n{}", out.status, out.output, vm.paths().context()),
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A router's subnet lease as etcd holds it (flannel's layout).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The key's last part, flannel's form: `10.244.3.0-24`.
    pub key: String,
    /// The same subnet as CIDR: `10.244.3.0/24`.
    pub subnet: String,
    /// `BackendData.VtepMAC`: the host's VXLAN device's MAC.
    pub vtep_mac: String,
}

/// The leases in `etcdctl get --prefix` output (key and value lines
/// alternating), with the `PublicIP` of each.
pub fn parse_leases(etcdctl_get: &str) -> Vec<(String, Lease)> {
    let lines: Vec<&str> = etcdctl_get.lines().collect();
    lines
        .chunks(2)
        .filter_map(|kv| {
            let [k, v] = kv else { return None };
            let key = k.strip_prefix(SUBNETS)?.to_string();
            let json: serde_json::Value = serde_json::from_str(v).ok()?;
            let ip = json["PublicIP"].as_str()?.to_string();
            let vtep_mac = json["BackendData"]["VtepMAC"].as_str().unwrap_or_default().to_string();
            Some((ip, Lease { subnet: key.replace('-', "/"), key, vtep_mac }))
        })
        .collect()
}

/// The lease of the host whose `PublicIP` is `ip`, as `vm`'s etcd sees it.
pub fn lease_of(vm: &mut Vm, ip: &str) -> Result<Option<Lease>> {
    let out = vm.sh(&format!("etcdctl get --prefix {SUBNETS}"))?;
    if !out.success() {
        return Err(Error::Command {
            command: format!("etcdctl get --prefix {SUBNETS}"),
            status: out.status.to_string(),
            output: out.output,
        });
    }
    Ok(parse_leases(&out.output).into_iter().find(|(p, _)| p == ip).map(|(_, l)| l))
}

/// The IPv4 address of `eth0` in the container `name` (started with
/// `ctr run --cni`).
pub fn container_addr(vm: &mut Vm, name: &str) -> Result<String> {
    let cmd = format!("ctr task exec --exec-id addr-{name} {name} ip -4 -o addr show eth0");
    let out = vm.sh(&cmd)?;
    out.output
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .filter(|_| out.success())
        .map(str::to_string)
        .ok_or_else(|| Error::Parse(format!("no IPv4 address in `{cmd}` (exit {}):\n{}", out.status, out.output)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_host_names_itself_and_the_roles_it_has() {
        let ud = user_data(2, &Roles { router: true, updates_from: None });
        assert!(ud.contains("name: node2\n") && ud.contains("addresses: [192.0.2.12/24]"), "{ud}");
        assert!(ud.contains("node3=http://192.0.2.13:2380"), "{ud}");
        assert!(ud.contains("public_ip: 192.0.2.12") && !ud.contains("update:"), "{ud}");
        let ud = user_data(1, &Roles { router: false, updates_from: Some("http://10.0.2.2:8080/".into()) });
        assert!(!ud.contains("router:") && ud.contains("reboot_strategy: etcd-lock"), "{ud}");
    }

    #[test]
    fn leases_are_read_from_etcdctl_output_by_public_ip() {
        let out = "/coreos.com/network/subnets/10.244.7.0-24\n\
                   {\"PublicIP\":\"192.0.2.12\",\"BackendType\":\"vxlan\",\"BackendData\":{\"VNI\":1,\"VtepMAC\":\"aa:bb:cc:dd:ee:ff\"}}\n\
                   /coreos.com/network/config\n{\"Network\":\"10.244.0.0/16\"}\n";
        let leases = parse_leases(out);
        assert_eq!(leases.len(), 1, "{leases:?}");
        let (ip, lease) = &leases[0];
        assert_eq!(ip, "192.0.2.12");
        assert_eq!(
            lease,
            &Lease {
                key: "10.244.7.0-24".into(),
                subnet: "10.244.7.0/24".into(),
                vtep_mac: "aa:bb:cc:dd:ee:ff".into()
            }
        );
    }
}
