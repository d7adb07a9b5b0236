use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use netlink_packet_core::ErrorMessage;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::route::RouteAddress;

use super::*;

fn route(family: AddressFamily, prefix: u8, kind: RouteType, table: u32) -> RouteMessage {
    let mut r = RouteMessage::default();
    r.header.address_family = family;
    r.header.destination_prefix_length = prefix;
    r.header.kind = kind;
    r.header.table = u8::try_from(table).unwrap_or(252);
    r.attributes.push(RouteAttribute::Table(table));
    if prefix > 0 {
        r.attributes.push(RouteAttribute::Destination(RouteAddress::Inet(Ipv4Addr::new(10, 0, 2, 0))));
    }
    r
}

/// One datagram of NEWROUTE messages, as the kernel sends a dump or an event.
fn datagram(payloads: Vec<NetlinkPayload<RouteNetlinkMessage>>) -> Vec<u8> {
    let mut out = Vec::new();
    for payload in payloads {
        let mut msg = NetlinkMessage::new(NetlinkHeader::default(), payload);
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        buf.resize(align(buf.len()), 0);
        out.extend(buf);
    }
    out
}

fn new_route(r: RouteMessage) -> NetlinkPayload<RouteNetlinkMessage> {
    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r))
}

/// A message the route parser cannot read (an unknown type with a length
/// that is not a multiple of 4) is skipped, and the default route after it
/// still counts.
#[test]
fn a_message_that_does_not_parse_is_skipped_by_its_aligned_length() {
    let default = route(AddressFamily::Inet, 0, RouteType::Unicast, RT_TABLE_MAIN);
    // nlmsghdr: length 21 (16 of header, 5 of payload), type 0x7fff.
    let mut buf = Vec::new();
    buf.extend(21u32.to_ne_bytes());
    buf.extend(0x7fffu16.to_ne_bytes());
    buf.extend([0u8; 10]);
    buf.extend([1, 2, 3, 4, 5]);
    buf.resize(align(buf.len()), 0);
    assert_eq!(buf.len(), 24);
    buf.extend(datagram(vec![new_route(default)]));
    assert!(datagram_has_default_route(&buf).unwrap());
    // A length past the end stops the walk instead of reading beyond it.
    let mut cut = buf[..24].to_vec();
    cut[..4].copy_from_slice(&400u32.to_ne_bytes());
    assert!(!datagram_has_default_route(&cut).unwrap());
}

#[test]
fn only_an_ipv4_unicast_default_route_of_the_main_table_counts() {
    let inet = AddressFamily::Inet;
    assert!(is_default_route(&route(inet, 0, RouteType::Unicast, RT_TABLE_MAIN)));
    assert!(!is_default_route(&route(inet, 24, RouteType::Unicast, RT_TABLE_MAIN)), "a subnet route");
    assert!(!is_default_route(&route(AddressFamily::Inet6, 0, RouteType::Unicast, RT_TABLE_MAIN)), "IPv6");
    assert!(!is_default_route(&route(inet, 0, RouteType::Unicast, 1000)), "another table");
    assert!(!is_default_route(&route(inet, 0, RouteType::Unreachable, RT_TABLE_MAIN)), "unreachable");
}

#[test]
fn a_datagram_is_read_message_by_message() {
    let subnet = route(AddressFamily::Inet, 24, RouteType::Unicast, RT_TABLE_MAIN);
    let default = route(AddressFamily::Inet, 0, RouteType::Unicast, RT_TABLE_MAIN);
    assert!(!datagram_has_default_route(&datagram(vec![new_route(subnet.clone())])).unwrap());
    assert!(datagram_has_default_route(&datagram(vec![new_route(subnet), new_route(default)])).unwrap());
    assert!(!datagram_has_default_route(&[]).unwrap());
    let mut refused = ErrorMessage::default();
    refused.code = std::num::NonZeroI32::new(-1); // -EPERM
    let err = datagram_has_default_route(&datagram(vec![NetlinkPayload::Error(refused)])).unwrap_err();
    assert!(matches!(err, WaitError::Refused(_)), "{err}");
}

/// Runs `wait` on a thread in a network namespace of its own: it must not
/// return within 500 ms, then must return `Ok` within 5 s of `ip` running
/// each of `changes` in that namespace (an event, not a poll).
fn returns_once_changed(
    wait: impl FnOnce() -> Result<(), WaitError> + Send + 'static,
    changes: &'static [&'static [&'static str]],
) {
    if !nix::unistd::Uid::effective().is_root() {
        panic!("this test needs root (a network namespace, changed with ip)");
    }
    let (ns_tx, ns_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        let ns = std::fs::File::open("/proc/thread-self/ns/net").expect("this thread's netns");
        ns_tx.send(ns).unwrap();
        let _ = done_tx.send(wait().map_err(|e| e.to_string()));
    });
    let ns = ns_rx.recv_timeout(Duration::from_secs(5)).expect("the namespace");
    assert!(done_rx.recv_timeout(Duration::from_millis(500)).is_err(), "it returned before the change");
    let changer = std::thread::spawn(move || {
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        for args in changes {
            let ip = ["/usr/sbin/ip", "/usr/bin/ip", "/sbin/ip"].into_iter().find(|p| std::path::Path::new(p).exists());
            let status = Command::new(ip.expect("ip (Debian package iproute2)")).args(*args).status().expect("ip");
            assert!(status.success(), "ip {args:?}");
        }
    });
    changer.join().unwrap();
    let result = done_rx.recv_timeout(Duration::from_secs(5)).expect("no return after the change");
    assert_eq!(result, Ok(()));
}

/// The wait goes on while there is no default route, and ends when one is
/// added.
#[test]
fn returns_when_a_default_route_appears_in_a_fresh_network_namespace() {
    returns_once_changed(
        wait_for_default_route,
        &[
            &["link", "set", "lo", "up"],
            &["route", "add", "10.9.0.0/24", "dev", "lo"],
            &["route", "add", "default", "dev", "lo"],
        ],
    );
}

fn link(name: &str) -> LinkMessage {
    let mut l = LinkMessage::default();
    l.attributes.push(LinkAttribute::IfName(name.to_string()));
    l
}

#[test]
fn a_new_link_counts_by_its_name_and_a_removed_one_does_not() {
    let new = |l| NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l));
    let del = |l| NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(l));
    assert!(datagram_has_link(&datagram(vec![new(link("lo")), new(link("eth0"))]), "eth0").unwrap());
    assert!(!datagram_has_link(&datagram(vec![new(link("eth01")), new(link("eth1"))]), "eth0").unwrap());
    assert!(!datagram_has_link(&datagram(vec![del(link("eth0"))]), "eth0").unwrap());
    // A route is not a link.
    let default = route(AddressFamily::Inet, 0, RouteType::Unicast, RT_TABLE_MAIN);
    assert!(!datagram_has_link(&datagram(vec![new_route(default)]), "eth0").unwrap());
}

/// The wait goes on while there is no interface of that name, and ends
/// when one gets it (here `lo` renamed, as the host may have no dummy or
/// veth driver to make a new one; the kernel reports both as a new link).
#[test]
fn returns_when_the_link_appears_in_a_fresh_network_namespace() {
    returns_once_changed(|| wait_for_link("bwo-late"), &[&["link", "set", "lo", "name", "bwo-late"]]);
}
