//! Berth hosts as a cluster in tests (issue 10): host `i` (1 to 3) has a
//! second NIC on one virtual segment ([`crate::VmConfig::segment_nic`])
//! with the documentation address 192.0.2.1`i`/24, and `#cloud-config`
//! user data making it a member of a three-member etcd on those addresses,
//! with the router on that segment and, when asked, automatic updates
//! coordinated through etcd.

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
}
