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

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::route::{RouteAttribute, RouteHeader, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};

/// `RTMGRP_IPV4_ROUTE` (linux/rtnetlink.h): the legacy group bit of
/// `RTNLGRP_IPV4_ROUTE`, as `bind` takes it.
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
/// `RT_TABLE_MAIN` (linux/rtnetlink.h).
const RT_TABLE_MAIN: u32 = 254;

#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("opening an rtnetlink socket: {0}")]
    Socket(std::io::Error),
    #[error("joining rtnetlink's IPv4 route group (RTMGRP_IPV4_ROUTE): {0}")]
    Bind(std::io::Error),
    #[error("asking the kernel for its routes: {0}")]
    Dump(std::io::Error),
    #[error("reading route messages: {0}")]
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

/// What one datagram of rtnetlink messages (`buf`) says: whether a default
/// route is among its new routes. Messages that do not parse are skipped
/// (other families, newer attributes); a refused request is an error.
pub fn datagram_has_default_route(mut buf: &[u8]) -> Result<bool, WaitError> {
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
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r)) if is_default_route(r) => found = true,
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
    loop {
        match subscribe_and_wait() {
            Err(WaitError::Recv(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => continue,
            done => return done,
        }
    }
}

/// One socket: the group joined, the routes dumped, then events.
fn subscribe_and_wait() -> Result<(), WaitError> {
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(WaitError::Socket)?;
    socket.bind(&SocketAddr::new(0, RTMGRP_IPV4_ROUTE)).map_err(WaitError::Bind)?;
    let mut request = RouteMessage::default();
    request.header.address_family = AddressFamily::Inet;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(RouteNetlinkMessage::GetRoute(request)));
    msg.finalize();
    let mut out = vec![0; msg.buffer_len()];
    msg.serialize(&mut out);
    socket.send_to(&out, &SocketAddr::new(0, 0), 0).map_err(WaitError::Dump)?;
    loop {
        let (buf, _) = socket.recv_from_full().map_err(WaitError::Recv)?;
        if datagram_has_default_route(&buf)? {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests;
