//! Waits until the main routing table has an IPv4 default route: what the
//! `network-online` unit means (systemd's `network-online.target`, as
//! `systemd-networkd-wait-online` reaches it), as the `berth-wait-online`
//! program. Not a mode of berth-init: a process left waiting (a machine
//! without a lease) would share PID1's pages, which PID1 then could not
//! drop at its ready line (`MADV_PAGEOUT` leaves shared pages): +0.9 MiB of
//! PID1's RSS measured.
//!
//! One rtnetlink socket (rtnetlink(7)) joins the IPv4 route multicast group
//! first, then asks for a dump of the routes, so a route added between the
//! two is still seen. It then sleeps in `recv` until the kernel reports a
//! new route: no polling, so nothing runs while a machine without a lease
//! waits (a shell loop of `ip route | grep` every 0.2 s took 0.14 s of CPU
//! per round under TCG, beside containerd and etcd starting). How long to
//! wait is the unit's `start_timeout`.
//!
//! [`wait_for_link`] waits the same way for a network interface to appear
//! (`berth-wait-online --link eth0 -- dhcpcd ...`, the `network` unit): a
//! NIC that registers after PID1 reaches the unit (a USB adapter, Hyper-V's
//! netvsc, which probes asynchronously), or comes back after its driver was
//! rebound, still gets its DHCP client.

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::route::{RouteAttribute, RouteHeader, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};

/// `RTMGRP_IPV4_ROUTE` (linux/rtnetlink.h): the legacy group bit of
/// `RTNLGRP_IPV4_ROUTE`, as `bind` takes it.
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
/// `RTMGRP_LINK` (linux/rtnetlink.h): the legacy group bit of
/// `RTNLGRP_LINK`, link (interface) events.
const RTMGRP_LINK: u32 = 0x1;
/// `RT_TABLE_MAIN` (linux/rtnetlink.h).
const RT_TABLE_MAIN: u32 = 254;

#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("opening an rtnetlink socket: {0}")]
    Socket(std::io::Error),
    #[error("joining an rtnetlink group (RTMGRP_IPV4_ROUTE or RTMGRP_LINK): {0}")]
    Bind(std::io::Error),
    #[error("asking the kernel for its routes or links: {0}")]
    Dump(std::io::Error),
    #[error("reading rtnetlink messages: {0}")]
    Recv(std::io::Error),
    #[error("the kernel refused the route dump: {0}")]
    Refused(String),
}

/// Whether `route` is a unicast IPv4 default route of the main table:
/// destination 0.0.0.0/0 (`ip -4 route show default` also lists default
/// routes of other types, such as `unreachable default`, which give no way
/// out and do not count).
pub fn is_default_route(route: &RouteMessage) -> bool {
    let table = route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Table(t) => Some(*t),
        _ => None,
    });
    let RouteHeader { address_family, destination_prefix_length, kind, .. } = route.header;
    address_family == AddressFamily::Inet
        && destination_prefix_length == 0
        && kind == RouteType::Unicast
        && table.unwrap_or(u32::from(route.header.table)) == RT_TABLE_MAIN
}

/// Whether `link` is the interface named `name` (its `IFLA_IFNAME`).
pub fn is_link_named(link: &LinkMessage, name: &str) -> bool {
    link.attributes.iter().any(|a| matches!(a, LinkAttribute::IfName(n) if n == name))
}

/// What one datagram of rtnetlink messages (`buf`) says: whether a default
/// route is among its new routes. Messages that do not parse are skipped
/// (other families, newer attributes); a refused request is an error.
pub fn datagram_has_default_route(buf: &[u8]) -> Result<bool, WaitError> {
    datagram_has(buf, |m| matches!(m, RouteNetlinkMessage::NewRoute(r) if is_default_route(r)))
}

/// What one datagram of rtnetlink messages (`buf`) says: whether a link
/// named `name` is among its new links (a dump's, or an event's: a new
/// interface, or one renamed to `name`). As [`datagram_has_default_route`]
/// for what does not parse.
pub fn datagram_has_link(buf: &[u8], name: &str) -> Result<bool, WaitError> {
    datagram_has(buf, |m| matches!(m, RouteNetlinkMessage::NewLink(l) if is_link_named(l, name)))
}

/// Whether any message of the datagram `buf` is one `wanted` takes.
fn datagram_has(mut buf: &[u8], wanted: impl Fn(&RouteNetlinkMessage) -> bool) -> Result<bool, WaitError> {
    let mut found = false;
    while !buf.is_empty() {
        let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(buf) else {
            // The length is the header's first field: skip the message.
            let len = buf.get(..4).map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize);
            if len < 16 || len > buf.len() {
                break;
            }
            buf = &buf[align(len).min(buf.len())..];
            continue;
        };
        match &msg.payload {
            NetlinkPayload::InnerMessage(m) if wanted(m) => found = true,
            NetlinkPayload::Error(e) if e.code.is_some() => return Err(WaitError::Refused(e.to_string())),
            _ => {}
        }
        let len = msg.header.length as usize;
        if len == 0 {
            break;
        }
        buf = &buf[align(len).min(buf.len())..];
    }
    Ok(found)
}

/// Netlink messages start on 4-byte boundaries (NLMSG_ALIGN).
fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// Returns once the main table has an IPv4 default route; never before.
/// When the socket's buffer overflows (a burst of route events, ENOBUFS),
/// events are lost: it starts over with a new socket and a new dump.
/// Errors: the socket cannot be opened, bound or read.
pub fn wait_for_default_route() -> Result<(), WaitError> {
    wait_for(RTMGRP_IPV4_ROUTE, ask_for_routes, datagram_has_default_route)
}

/// Returns once a network interface named `name` exists (at once if it
/// does, by `/sys/class/net/<name>`, looked at once the socket listens);
/// never before. Starts over on ENOBUFS as [`wait_for_default_route`].
/// Errors: as that.
pub fn wait_for_link(name: &str) -> Result<(), WaitError> {
    // An interface is a directory there (a symlink to its device's);
    // `bonding_masters` is a file.
    let present = |_: &Socket| Ok(std::path::Path::new("/sys/class/net").join(name).is_dir());
    wait_for(RTMGRP_LINK, present, |buf| datagram_has_link(buf, name))
}

/// Sockets until one sees what `found` looks for (or `present` says it is
/// there already), each [`subscribe_and_wait`].
fn wait_for(
    group: u32,
    present: impl Fn(&Socket) -> Result<bool, WaitError>,
    found: impl Fn(&[u8]) -> Result<bool, WaitError>,
) -> Result<(), WaitError> {
    loop {
        match subscribe_and_wait(group, &present, &found) {
            Err(WaitError::Recv(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => continue,
            done => return done,
        }
    }
}

/// Asks the kernel for a dump of its IPv4 routes on `socket` (the answer
/// comes as datagrams like events); never says "present" by itself.
fn ask_for_routes(socket: &Socket) -> Result<bool, WaitError> {
    let mut request = RouteMessage::default();
    request.header.address_family = AddressFamily::Inet;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(RouteNetlinkMessage::GetRoute(request)));
    msg.finalize();
    let mut out = vec![0; msg.buffer_len()];
    msg.serialize(&mut out);
    socket.send_to(&out, &SocketAddr::new(0, 0), 0).map_err(WaitError::Dump)?;
    Ok(false)
}

/// One socket: `group` joined first, then `present` asked (so that nothing
/// that happens in between is missed), then events until a datagram
/// `found` takes.
fn subscribe_and_wait(
    group: u32,
    present: &impl Fn(&Socket) -> Result<bool, WaitError>,
    found: &impl Fn(&[u8]) -> Result<bool, WaitError>,
) -> Result<(), WaitError> {
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(WaitError::Socket)?;
    socket.bind(&SocketAddr::new(0, group)).map_err(WaitError::Bind)?;
    if present(&socket)? {
        return Ok(());
    }
    loop {
        let (buf, _) = socket.recv_from_full().map_err(WaitError::Recv)?;
        if found(&buf)? {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests;
