//! The CNI network config for this host's containers: the bridge plugin
//! on `cni0` with host-local IPAM handing out addresses from this host's
//! subnet, routes to the cluster network (and a default route) through
//! the bridge, and the MTU of the VXLAN device.
//!
//! It is written as `/etc/cni/net.d/05-berth-router.conflist`: containerd
//! (and `ctr run --cni`) take the lexically first file there, so it
//! outranks the image's single-host default `10-berth.conflist` (bridge
//! `berth0`, 10.88.0.0/16) without removing it: a host without the router
//! keeps that default.

use std::net::Ipv4Addr;

use serde_json::json;

use crate::ipnet::Ipv4Net;

/// The directory containerd reads CNI configs from.
pub const CNI_DIR: &str = "/etc/cni/net.d";
/// The router's config file name in [`CNI_DIR`].
pub const CNI_FILE: &str = "05-berth-router.conflist";
/// The containers' bridge (flannel's and the CNI docs' name).
pub const BRIDGE: &str = "cni0";
/// The CNI network name (host-local keeps its leases under
/// /var/lib/cni/networks/<name>).
pub const NETWORK_NAME: &str = "berth-cluster";

/// The bridge's address: the subnet's first host address (`.1`), the
/// containers' gateway. Never the network address, which is the VTEP's
/// (so `None` for a /32).
pub fn gateway(subnet: Ipv4Net) -> Option<Ipv4Addr> {
    subnet.hosts().find(|&ip| ip != subnet.addr())
}

/// The conflist (CNI spec 1.0.0) for `subnet` of `network` with `mtu`.
pub fn conflist(network: Ipv4Net, subnet: Ipv4Net, mtu: u32) -> String {
    let range = match gateway(subnet) {
        Some(gw) => json!({ "subnet": subnet.to_string(), "gateway": gw.to_string() }),
        None => json!({ "subnet": subnet.to_string() }),
    };
    let doc = json!({
        "cniVersion": "1.0.0",
        "name": NETWORK_NAME,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                // berth-router masquerades what leaves the cluster network itself.
                "ipMasq": false,
                "hairpinMode": true,
                "mtu": mtu,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[range]],
                    "routes": [{ "dst": network.to_string() }, { "dst": "0.0.0.0/0" }]
                }
            },
            { "type": "portmap", "capabilities": { "portMappings": true } }
        ]
    });
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflist_for_a_subnet() {
        let text = conflist("10.244.0.0/16".parse().unwrap(), "10.244.3.0/24".parse().unwrap(), 1450);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let bridge = &v["plugins"][0];
        assert_eq!(bridge["type"], "bridge");
        assert_eq!(bridge["bridge"], "cni0");
        assert_eq!(bridge["mtu"], 1450);
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "10.244.3.0/24");
        assert_eq!(bridge["ipam"]["ranges"][0][0]["gateway"], "10.244.3.1");
        assert_eq!(bridge["ipam"]["routes"][0]["dst"], "10.244.0.0/16");
        assert!(CNI_FILE < "10-berth.conflist", "must outrank the image's default");
    }

    #[test]
    fn the_gateway_is_never_the_vtep_address() {
        let gw = |s: &str| gateway(s.parse().unwrap()).map(|ip| ip.to_string());
        assert_eq!(gw("10.244.3.0/24").as_deref(), Some("10.244.3.1"));
        assert_eq!(gw("10.244.3.0/31").as_deref(), Some("10.244.3.1"));
        assert_eq!(gw("10.244.3.0/32"), None);
    }
}
