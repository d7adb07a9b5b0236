//! The kernel side: the VXLAN device, the containers' bridge, and the
//! peers' routes, neighbours and FDB entries, behind the [`Dataplane`]
//! trait; [`RtDataplane`] does it over rtnetlink, [`FakeDataplane`] in memory.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVxlan, RouteMessageBuilder};

use crate::ipnet::Ipv4Net;
use crate::plan::{Change, Fdb, KernelState, Mac, Neighbour, Route};

mod fake;
pub use fake::{FakeDataplane, FakeState};

/// The VXLAN overhead over IPv4 (outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14).
pub const VXLAN_OVERHEAD: u32 = 50;

/// The underlay: the interface VXLAN packets leave by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Underlay {
    /// Its name.
    pub name: String,
    /// Its index.
    pub index: u32,
    /// Its MTU.
    pub mtu: u32,
    /// The address peers send to (the configured public_ip, else its first IPv4).
    pub ip: Ipv4Addr,
}

/// The VXLAN device as flannel makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    /// `flannel.<VNI>`.
    pub name: String,
    /// The VNI.
    pub vni: u32,
    /// The UDP port (dstport).
    pub port: u16,
    /// The local (public) address.
    pub local: Ipv4Addr,
    /// The underlay's index (dev).
    pub underlay_index: u32,
    /// Underlay MTU less [`VXLAN_OVERHEAD`].
    pub mtu: u32,
    /// Its address: this host's subnet's network address, as a /32
    /// (`None`: leave its addresses, before a subnet is leased).
    pub address: Option<Ipv4Addr>,
}

/// The VXLAN device once it is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vtep {
    /// Its index.
    pub index: u32,
    /// Its MAC (the lease's VtepMAC).
    pub mac: Mac,
}

/// What failed in the kernel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    /// A netlink request failed.
    #[error("netlink: {what}: {message}")]
    Netlink {
        /// What was asked (`create vxlan flannel.1`, `add route 10.244.2.0/24`).
        what: String,
        /// The kernel's answer.
        message: String,
    },
    /// No underlay interface could be chosen.
    #[error("no underlay interface: {0}")]
    NoUnderlay(String),
    /// A file in /proc/sys could not be written.
    #[error("{path}: {message}")]
    Sysctl {
        /// The file.
        path: String,
        /// The error.
        message: String,
    },
}

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let what = what.into();
    move |e| NetError::Netlink { what, message: e.to_string() }
}

/// The kernel operations the router needs.
pub trait Dataplane {
    /// The underlay: `name` if given; else the interface holding
    /// `public_ip` if given; else the default route's interface; else the
    /// only up non-loopback interface with an IPv4 address.
    fn underlay(
        &self,
        name: Option<&str>,
        public_ip: Option<Ipv4Addr>,
    ) -> impl Future<Output = Result<Underlay, NetError>> + Send;
    /// This host's IPv4 networks (addresses and routes other than the
    /// default route) on interfaces other than `skip`, each with where it
    /// was seen, for the overlap check.
    fn host_networks(&self, skip: &[String]) -> impl Future<Output = Result<Vec<(Ipv4Net, String)>, NetError>> + Send;
    /// Creates the VXLAN device (or re-creates one whose VNI, port, local
    /// address or underlay differ), sets its MTU, its only IPv4 address and
    /// brings it up.
    fn ensure_vxlan(&self, spec: &VxlanSpec) -> impl Future<Output = Result<Vtep, NetError>> + Send;
    /// Creates the bridge `name` if missing, gives it `gateway` as its only
    /// IPv4 address and brings it up.
    fn ensure_bridge(
        &self,
        name: &str,
        gateway: Ipv4Addr,
        prefix_len: u8,
        mtu: u32,
    ) -> impl Future<Output = Result<(), NetError>> + Send;
    /// The routes (main table), permanent neighbours and remote FDB entries on the device.
    fn observe(&self, index: u32) -> impl Future<Output = Result<KernelState, NetError>> + Send;
    /// Makes one change on the device.
    fn apply(&self, index: u32, change: &Change) -> impl Future<Output = Result<(), NetError>> + Send;
    /// Turns on IPv4 forwarding (`/proc/sys/net/ipv4/ip_forward`).
    fn enable_forwarding(&self) -> impl Future<Output = Result<(), NetError>> + Send;
}

/// The real data plane: rtnetlink on the calling thread's network namespace.
#[derive(Clone)]
pub struct RtDataplane {
    handle: Handle,
}

impl RtDataplane {
    /// Opens a netlink socket (its connection task is spawned on the
    /// current tokio runtime).
    pub fn new() -> Result<RtDataplane, NetError> {
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| NetError::Netlink { what: "open a netlink socket".into(), message: e.to_string() })?;
        tokio::spawn(conn);
        Ok(RtDataplane { handle })
    }

    async fn links(&self) -> Result<Vec<LinkMessage>, NetError> {
        self.handle.link().get().execute().try_collect().await.map_err(nl("list links"))
    }

    async fn link_by_name(&self, name: &str) -> Result<Option<LinkMessage>, NetError> {
        Ok(self.links().await?.into_iter().find(|l| link_name(l) == Some(name)))
    }

    async fn addresses(&self) -> Result<Vec<AddressMessage>, NetError> {
        self.handle.address().get().execute().try_collect().await.map_err(nl("list addresses"))
    }

    async fn routes(&self) -> Result<Vec<RouteMessage>, NetError> {
        let req = RouteMessageBuilder::<Ipv4Addr>::new().build();
        self.handle.route().get(req).execute().try_collect().await.map_err(nl("list routes"))
    }

    /// Makes `addr/len` the only IPv4 address of `index`.
    async fn only_address(&self, index: u32, name: &str, addr: Ipv4Addr, len: u8) -> Result<(), NetError> {
        let mut have = false;
        for a in self.addresses().await?.into_iter().filter(|a| a.header.index == index) {
            match addr_of(&a) {
                Some(ip) if ip == addr && a.header.prefix_len == len => have = true,
                Some(ip) => {
                    self.handle
                        .address()
                        .del(a)
                        .execute()
                        .await
                        .map_err(nl(format!("delete address {ip} from {name}")))?;
                }
                None => {}
            }
        }
        if !have {
            self.handle
                .address()
                .add(index, IpAddr::V4(addr), len)
                .execute()
                .await
                .map_err(nl(format!("add address {addr}/{len} to {name}")))?;
        }
        Ok(())
    }
}

fn link_name(l: &LinkMessage) -> Option<&str> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

fn link_mtu(l: &LinkMessage) -> Option<u32> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(m) => Some(*m),
        _ => None,
    })
}

fn link_mac(l: &LinkMessage) -> Option<Mac> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(m) => <[u8; 6]>::try_from(m.as_slice()).ok().map(Mac),
        _ => None,
    })
}

fn vxlan_info(l: &LinkMessage) -> Option<&Vec<InfoVxlan>> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Data(InfoData::Vxlan(v)) => Some(v),
            _ => None,
        }),
        _ => None,
    })
}

fn is_bridge(l: &LinkMessage) -> bool {
    l.attributes.iter().any(|a| matches!(a, LinkAttribute::LinkInfo(infos) if infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Bridge)))))
}

fn addr_of(a: &AddressMessage) -> Option<Ipv4Addr> {
    a.attributes
        .iter()
        .find_map(|x| match x {
            AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        })
        .or_else(|| {
            a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            })
        })
}

fn route_oif(r: &RouteMessage) -> Option<u32> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })
}

fn route_dst(r: &RouteMessage) -> Option<Ipv4Net> {
    let addr = r
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
            _ => None,
        })
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    Ipv4Net::new(addr, r.header.destination_prefix_length)
}

fn route_gateway(r: &RouteMessage) -> Option<Ipv4Addr> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })
}

fn route_table(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table))
}

const RT_TABLE_MAIN: u32 = 254;

/// The neighbour's or FDB entry's IPv4 destination (for the bridge
/// family the crate leaves it as raw bytes).
fn neigh_ip(n: &NeighbourMessage) -> Option<Ipv4Addr> {
    n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
            <[u8; 4]>::try_from(b.as_slice()).ok().map(Ipv4Addr::from)
        }
        _ => None,
    })
}

fn neigh_mac(n: &NeighbourMessage) -> Option<Mac> {
    n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(m) => <[u8; 6]>::try_from(m.as_slice()).ok().map(Mac),
        _ => None,
    })
}

impl Dataplane for RtDataplane {
    async fn underlay(&self, name: Option<&str>, public_ip: Option<Ipv4Addr>) -> Result<Underlay, NetError> {
        let links = self.links().await?;
        let addrs = self.addresses().await?;
        let first_v4 = |index: u32| addrs.iter().filter(|a| a.header.index == index).find_map(addr_of);
        let pick = |l: &LinkMessage| -> Result<Underlay, NetError> {
            let name = link_name(l).unwrap_or_default().to_string();
            let ip = match public_ip.or_else(|| first_v4(l.header.index)) {
                Some(ip) => ip,
                None => return Err(NetError::NoUnderlay(format!("{name} has no IPv4 address (set public_ip)"))),
            };
            Ok(Underlay { name, index: l.header.index, mtu: link_mtu(l).unwrap_or(1500), ip })
        };
        if let Some(name) = name {
            let l = links
                .iter()
                .find(|l| link_name(l) == Some(name))
                .ok_or_else(|| NetError::NoUnderlay(format!("interface {name} does not exist")))?;
            return pick(l);
        }
        if let Some(ip) = public_ip {
            if let Some(a) = addrs.iter().find(|a| addr_of(a) == Some(ip)) {
                if let Some(l) = links.iter().find(|l| l.header.index == a.header.index) {
                    return pick(l);
                }
            }
        }
        let routes = self.routes().await?;
        let default =
            routes.iter().find(|r| route_table(r) == RT_TABLE_MAIN && r.header.destination_prefix_length == 0);
        if let Some(oif) = default.and_then(route_oif) {
            if let Some(l) = links.iter().find(|l| l.header.index == oif) {
                return pick(l);
            }
        }
        let candidates: Vec<&LinkMessage> = links
            .iter()
            .filter(|l| !l.header.flags.contains(LinkFlags::Loopback) && l.header.flags.contains(LinkFlags::Up))
            .filter(|l| first_v4(l.header.index).is_some())
            .collect();
        match candidates.as_slice() {
            [one] => pick(one),
            [] => Err(NetError::NoUnderlay("no default route and no up interface with an IPv4 address".into())),
            many => Err(NetError::NoUnderlay(format!(
                "no default route and {} interfaces with IPv4 addresses ({}): set interface",
                many.len(),
                many.iter().filter_map(|l| link_name(l)).collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    async fn host_networks(&self, skip: &[String]) -> Result<Vec<(Ipv4Net, String)>, NetError> {
        let links = self.links().await?;
        let name_of =
            |i: u32| links.iter().find(|l| l.header.index == i).and_then(link_name).unwrap_or("?").to_string();
        let mut out = Vec::new();
        for a in self.addresses().await? {
            let dev = name_of(a.header.index);
            if skip.contains(&dev) || dev == "lo" {
                continue;
            }
            if let Some(net) = addr_of(&a).and_then(|ip| Ipv4Net::new(ip, a.header.prefix_len)) {
                out.push((net, format!("address on {dev}")));
            }
        }
        for r in self.routes().await? {
            let Some(oif) = route_oif(&r) else { continue };
            let dev = name_of(oif);
            if route_table(&r) != RT_TABLE_MAIN || skip.contains(&dev) || dev == "lo" {
                continue;
            }
            if let Some(net) = route_dst(&r).filter(|n| n.prefix_len() > 0) {
                out.push((net, format!("route via {dev}")));
            }
        }
        Ok(out)
    }

    async fn ensure_vxlan(&self, spec: &VxlanSpec) -> Result<Vtep, NetError> {
        let name = &spec.name;
        if let Some(l) = self.link_by_name(name).await? {
            let info = vxlan_info(&l);
            let same = info.is_some_and(|v| {
                v.contains(&InfoVxlan::Id(spec.vni))
                    && v.contains(&InfoVxlan::Port(spec.port))
                    && v.contains(&InfoVxlan::Local(spec.local))
                    && v.contains(&InfoVxlan::Link(spec.underlay_index))
                    && v.contains(&InfoVxlan::Learning(false))
            });
            if !same {
                self.handle
                    .link()
                    .del(l.header.index)
                    .execute()
                    .await
                    .map_err(nl(format!("delete {name} (its settings differ)")))?;
            }
        }
        if self.link_by_name(name).await?.is_none() {
            let msg = LinkVxlan::new(name, spec.vni)
                .dev(spec.underlay_index)
                .port(spec.port)
                .local(spec.local)
                .learning(false)
                .mtu(spec.mtu)
                .build();
            self.handle.link().add(msg).execute().await.map_err(nl(format!("create vxlan {name}")))?;
        }
        let l = self.link_by_name(name).await?.ok_or_else(|| NetError::Netlink {
            what: format!("create vxlan {name}"),
            message: "not there after creating it".into(),
        })?;
        let index = l.header.index;
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).mtu(spec.mtu).up().build())
            .execute()
            .await
            .map_err(nl(format!("set {name} mtu {} up", spec.mtu)))?;
        if let Some(addr) = spec.address {
            self.only_address(index, name, addr, 32).await?;
        }
        let mac = link_mac(&l)
            .ok_or_else(|| NetError::Netlink { what: format!("read {name}"), message: "no MAC address".into() })?;
        Ok(Vtep { index, mac })
    }

    async fn ensure_bridge(&self, name: &str, gateway: Ipv4Addr, prefix_len: u8, mtu: u32) -> Result<(), NetError> {
        match self.link_by_name(name).await? {
            Some(l) if !is_bridge(&l) => {
                return Err(NetError::Netlink {
                    what: format!("bridge {name}"),
                    message: "an interface of that name is not a bridge".into(),
                })
            }
            Some(_) => {}
            None => {
                self.handle
                    .link()
                    .add(LinkBridge::new(name).mtu(mtu).build())
                    .execute()
                    .await
                    .map_err(nl(format!("create bridge {name}")))?;
            }
        }
        let l = self.link_by_name(name).await?.ok_or_else(|| NetError::Netlink {
            what: format!("create bridge {name}"),
            message: "not there after creating it".into(),
        })?;
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(l.header.index).up().build())
            .execute()
            .await
            .map_err(nl(format!("set {name} up")))?;
        self.only_address(l.header.index, name, gateway, prefix_len).await
    }

    async fn observe(&self, index: u32) -> Result<KernelState, NetError> {
        let mut s = KernelState::default();
        for r in self.routes().await? {
            if route_oif(&r) != Some(index) || route_table(&r) != RT_TABLE_MAIN {
                continue;
            }
            if let (Some(dst), Some(gateway)) = (route_dst(&r), route_gateway(&r)) {
                s.routes.insert(Route { dst, gateway });
            }
        }
        let neighbours: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute()
            .try_collect()
            .await
            .map_err(nl("list neighbours"))?;
        for n in neighbours.iter().filter(|n| n.header.ifindex == index && n.header.state == NeighbourState::Permanent)
        {
            if let (Some(ip), Some(mac)) = (neigh_ip(n), neigh_mac(n)) {
                s.neighbours.insert(Neighbour { ip, mac });
            }
        }
        let fdb: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute()
            .try_collect()
            .await
            .map_err(nl("list fdb"))?;
        for n in fdb.iter().filter(|n| n.header.ifindex == index) {
            if let (Some(dst), Some(mac)) = (neigh_ip(n), neigh_mac(n)) {
                s.fdb.insert(Fdb { mac, dst });
            }
        }
        Ok(s)
    }

    async fn apply(&self, index: u32, change: &Change) -> Result<(), NetError> {
        let what = change.to_string();
        match change {
            Change::AddRoute(r) => {
                let msg = RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(r.dst.addr(), r.dst.prefix_len())
                    .gateway(r.gateway)
                    .output_interface(index)
                    .onlink()
                    .build();
                self.handle.route().add(msg).replace().execute().await.map_err(nl(what))
            }
            Change::DelRoute(r) => {
                // As `ip route del`: any protocol (a route added by hand
                // is `proto boot`), scope "nowhere" matches every scope.
                let msg = RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(r.dst.addr(), r.dst.prefix_len())
                    .gateway(r.gateway)
                    .output_interface(index)
                    .protocol(RouteProtocol::Unspec)
                    .scope(RouteScope::NoWhere)
                    .build();
                self.handle.route().del(msg).execute().await.map_err(nl(what))
            }
            Change::AddNeighbour(n) => self
                .handle
                .neighbours()
                .add(index, IpAddr::V4(n.ip))
                .link_layer_address(&n.mac.0)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await
                .map_err(nl(what)),
            Change::DelNeighbour(n) => {
                let mut msg = NeighbourMessage::default();
                msg.header.family = AddressFamily::Inet;
                msg.header.ifindex = index;
                msg.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(n.ip)));
                self.handle.neighbours().del(msg).execute().await.map_err(nl(what))
            }
            Change::AddFdb(e) => self
                .handle
                .neighbours()
                .add_bridge(index, &e.mac.0)
                .destination(IpAddr::V4(e.dst))
                .flags(NeighbourFlags::Own)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await
                .map_err(nl(what)),
            Change::DelFdb(e) => {
                let mut msg = NeighbourMessage::default();
                msg.header.family = AddressFamily::Bridge;
                msg.header.ifindex = index;
                msg.header.flags = NeighbourFlags::Own;
                msg.attributes.push(NeighbourAttribute::LinkLayerAddress(e.mac.0.to_vec()));
                msg.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(e.dst)));
                self.handle.neighbours().del(msg).execute().await.map_err(nl(what))
            }
        }
    }

    async fn enable_forwarding(&self) -> Result<(), NetError> {
        let path = "/proc/sys/net/ipv4/ip_forward";
        tokio::fs::write(path, b"1\n").await.map_err(|e| NetError::Sysctl { path: path.into(), message: e.to_string() })
    }
}
