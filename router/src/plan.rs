//! From the live leases and what the kernel has on the VXLAN device, the
//! netlink changes that make the kernel match. Pure.
//!
//! For every other host's lease (flannel's vxlan backend, "directrouting"
//! off), the VXLAN device `flannel.<VNI>` carries:
//! - a route `<peer subnet> via <peer vtep addr> dev flannel.N onlink`,
//! - a permanent neighbour `<peer vtep addr> lladdr <peer VtepMAC>`,
//! - a permanent FDB entry `<peer VtepMAC> dst <peer PublicIP>`,
//!
//! where the peer's vtep address is its subnet's network address (flannel's
//! `10.244.2.0` for `10.244.2.0/24`). Anything else of these kinds on the
//! device is stale and removed.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;

use crate::ipnet::Ipv4Net;
use crate::lease::SubnetLease;

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

impl std::str::FromStr for Mac {
    type Err = String;

    /// `aa:bb:cc:dd:ee:ff` (either case).
    fn from_str(s: &str) -> Result<Mac, String> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in out.iter_mut() {
            let p = parts.next().filter(|p| p.len() == 2).ok_or_else(|| format!("{s:?} is not a MAC address"))?;
            *b = u8::from_str_radix(p, 16).map_err(|_| format!("{s:?} is not a MAC address"))?;
        }
        if parts.next().is_some() {
            return Err(format!("{s:?} is not a MAC address"));
        }
        Ok(Mac(out))
    }
}

/// Another host, as its lease says.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    /// Its subnet.
    pub subnet: Ipv4Net,
    /// Its underlay address (VXLAN destination).
    pub public_ip: Ipv4Addr,
    /// Its VXLAN device's MAC.
    pub vtep_mac: Mac,
}

impl Peer {
    /// The peer from a lease; `None` if its VtepMAC is not a MAC address.
    pub fn from_lease(l: &SubnetLease) -> Option<Peer> {
        Some(Peer {
            subnet: l.subnet,
            public_ip: l.attrs.public_ip,
            vtep_mac: l.attrs.backend_data.vtep_mac.parse().ok()?,
        })
    }

    /// Its VXLAN device's address: the subnet's network address (flannel's).
    pub fn vtep_addr(&self) -> Ipv4Addr {
        self.subnet.addr()
    }
}

/// A route on the VXLAN device: `dst via gateway onlink`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Route {
    /// The destination.
    pub dst: Ipv4Net,
    /// The gateway (a peer's vtep address).
    pub gateway: Ipv4Addr,
}

/// A permanent neighbour on the VXLAN device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Neighbour {
    /// The IP.
    pub ip: Ipv4Addr,
    /// Its MAC.
    pub mac: Mac,
}

/// A VXLAN FDB entry: frames for `mac` go to `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fdb {
    /// The peer's VTEP MAC.
    pub mac: Mac,
    /// The peer's underlay address.
    pub dst: Ipv4Addr,
}

/// What the kernel has on the VXLAN device (routes of the main table
/// through it, its permanent neighbours, its FDB entries with a remote).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelState {
    /// Routes.
    pub routes: BTreeSet<Route>,
    /// Neighbours.
    pub neighbours: BTreeSet<Neighbour>,
    /// FDB entries.
    pub fdb: BTreeSet<Fdb>,
}

/// One netlink change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// `ip route add DST via GW dev flannel.N onlink`.
    AddRoute(Route),
    /// `ip route del DST via GW dev flannel.N`.
    DelRoute(Route),
    /// `ip neigh add IP lladdr MAC dev flannel.N nud permanent`.
    AddNeighbour(Neighbour),
    /// `ip neigh del IP dev flannel.N`.
    DelNeighbour(Neighbour),
    /// `bridge fdb add MAC dev flannel.N dst IP self permanent`.
    AddFdb(Fdb),
    /// `bridge fdb del MAC dev flannel.N dst IP self`.
    DelFdb(Fdb),
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::AddRoute(r) => write!(f, "add route {} via {} onlink", r.dst, r.gateway),
            Change::DelRoute(r) => write!(f, "delete route {} via {}", r.dst, r.gateway),
            Change::AddNeighbour(n) => write!(f, "add neighbour {} lladdr {}", n.ip, n.mac),
            Change::DelNeighbour(n) => write!(f, "delete neighbour {} lladdr {}", n.ip, n.mac),
            Change::AddFdb(e) => write!(f, "add fdb {} dst {}", e.mac, e.dst),
            Change::DelFdb(e) => write!(f, "delete fdb {} dst {}", e.mac, e.dst),
        }
    }
}

/// What the kernel should have for these peers.
pub fn desired(peers: &[Peer]) -> KernelState {
    let mut s = KernelState::default();
    for p in peers {
        s.routes.insert(Route { dst: p.subnet, gateway: p.vtep_addr() });
        s.neighbours.insert(Neighbour { ip: p.vtep_addr(), mac: p.vtep_mac });
        s.fdb.insert(Fdb { mac: p.vtep_mac, dst: p.public_ip });
    }
    s
}

/// The changes from `kernel` to what `peers` need: removals first (route,
/// neighbour, FDB), then additions (FDB, neighbour, route, so a route is
/// usable the moment it exists). Empty when they match.
pub fn plan(peers: &[Peer], kernel: &KernelState) -> Vec<Change> {
    let want = desired(peers);
    let mut out = Vec::new();
    out.extend(kernel.routes.difference(&want.routes).map(|r| Change::DelRoute(*r)));
    out.extend(kernel.neighbours.difference(&want.neighbours).map(|n| Change::DelNeighbour(*n)));
    out.extend(kernel.fdb.difference(&want.fdb).map(|e| Change::DelFdb(*e)));
    out.extend(want.fdb.difference(&kernel.fdb).map(|e| Change::AddFdb(*e)));
    out.extend(want.neighbours.difference(&kernel.neighbours).map(|n| Change::AddNeighbour(*n)));
    out.extend(want.routes.difference(&kernel.routes).map(|r| Change::AddRoute(*r)));
    out
}

/// Applies a change to a state (what the fake data plane does, and what
/// the kernel does).
pub fn apply(state: &mut KernelState, change: &Change) {
    match change {
        Change::AddRoute(r) => {
            state.routes.insert(*r);
        }
        Change::DelRoute(r) => {
            state.routes.remove(r);
        }
        Change::AddNeighbour(n) => {
            state.neighbours.insert(*n);
        }
        Change::DelNeighbour(n) => {
            state.neighbours.remove(n);
        }
        Change::AddFdb(e) => {
            state.fdb.insert(*e);
        }
        Change::DelFdb(e) => {
            state.fdb.remove(e);
        }
    }
}

/// The subnet this host should try to lease: `preferred` when it is in the
/// network, of the right length and free; else a free one picked by
/// `seed` (so hosts starting together spread out instead of racing for
/// the same one). The network's first subnet is never handed out (flannel's
/// SubnetMin), so its gateway-looking addresses stay free. `None`: full.
pub fn choose_subnet(
    network: Ipv4Net,
    subnet_len: u8,
    taken: &BTreeSet<Ipv4Net>,
    preferred: Option<Ipv4Net>,
    seed: u64,
) -> Option<Ipv4Net> {
    if let Some(p) = preferred {
        if p.prefix_len() == subnet_len && network.contains(&*p) && p.addr() != network.addr() && !taken.contains(&p) {
            return Some(p);
        }
    }
    let usable = network.subnet_count(subnet_len)? - 1;
    let start = usize::try_from(seed % usable).ok()?;
    // All but the first, from the `start`th on, then around.
    let rest = network.subnets(subnet_len).ok()?.skip(1);
    rest.clone().skip(start).chain(rest.take(start)).map(Ipv4Net::from).find(|s| !taken.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> Peer {
        Peer {
            subnet: format!("10.244.{n}.0/24").parse().unwrap(),
            public_ip: Ipv4Addr::new(192, 0, 2, 10 + n),
            vtep_mac: Mac([2, 0, 0, 0, 0, n]),
        }
    }

    fn converge(peers: &[Peer], kernel: &mut KernelState) {
        for c in plan(peers, kernel) {
            apply(kernel, &c);
        }
    }

    #[test]
    fn a_join_adds_fdb_neighbour_then_route() {
        let changes = plan(&[peer(2)], &KernelState::default());
        let text: Vec<String> = changes.iter().map(|c| c.to_string()).collect();
        assert_eq!(
            text,
            [
                "add fdb 02:00:00:00:00:02 dst 192.0.2.12",
                "add neighbour 10.244.2.0 lladdr 02:00:00:00:00:02",
                "add route 10.244.2.0/24 via 10.244.2.0 onlink"
            ]
        );
    }

    #[test]
    fn converged_means_no_changes_and_a_leave_removes_all_three() {
        let mut k = KernelState::default();
        converge(&[peer(2), peer(3)], &mut k);
        assert!(plan(&[peer(2), peer(3)], &k).is_empty());
        let changes = plan(&[peer(3)], &k);
        assert_eq!(changes.len(), 3);
        assert!(changes.iter().all(|c| matches!(c, Change::DelRoute(_) | Change::DelNeighbour(_) | Change::DelFdb(_))));
        converge(&[peer(3)], &mut k);
        assert_eq!(k, desired(&[peer(3)]));
    }

    #[test]
    fn a_peer_with_a_new_mac_or_address_is_replaced() {
        let mut k = KernelState::default();
        converge(&[peer(2)], &mut k);
        let mut moved = peer(2);
        moved.vtep_mac = Mac([2, 0, 0, 0, 0, 0x22]);
        moved.public_ip = Ipv4Addr::new(192, 0, 2, 99);
        converge(&[moved.clone()], &mut k);
        assert_eq!(k, desired(&[moved]));
    }

    #[test]
    fn choose_prefers_its_old_subnet_and_skips_the_first() {
        let net: Ipv4Net = "10.244.0.0/16".parse().unwrap();
        let mut taken = BTreeSet::new();
        let old: Ipv4Net = "10.244.7.0/24".parse().unwrap();
        assert_eq!(choose_subnet(net, 24, &taken, Some(old), 0), Some(old));
        taken.insert(old);
        let got = choose_subnet(net, 24, &taken, Some(old), 6).unwrap();
        assert_eq!(got.to_string(), "10.244.8.0/24");
        assert_eq!(choose_subnet(net, 24, &taken, None, 254).unwrap().to_string(), "10.244.255.0/24");
        assert_eq!(choose_subnet(net, 24, &taken, None, 255).unwrap().to_string(), "10.244.1.0/24");
        let small: Ipv4Net = "10.0.0.0/30".parse().unwrap();
        let all: BTreeSet<Ipv4Net> = small.subnets(32).unwrap().skip(1).map(Ipv4Net::from).collect();
        assert_eq!(choose_subnet(small, 32, &all, None, 1), None);
        assert_eq!(
            choose_subnet(net, 24, &taken, Some("10.244.0.0/24".parse().unwrap()), 0).unwrap().to_string(),
            "10.244.1.0/24"
        );
    }

    #[test]
    fn mac_text() {
        assert_eq!("AA:bb:0c:dd:ee:ff".parse::<Mac>().unwrap().to_string(), "aa:bb:0c:dd:ee:ff");
        assert!("aa:bb:cc:dd:ee".parse::<Mac>().is_err());
        assert!("aa:bb:cc:dd:ee:ff:00".parse::<Mac>().is_err());
    }
}
