//! IPv4 networks (`a.b.c.d/len`): parsing, containment, overlap, and the
//! subnets of a cluster network. Pure.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IPv4 network: an address with its host bits zero and a prefix
/// length of 0 to 32. Ordered by address, then length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    len: u8,
}

/// flannel's customary cluster network, 10.244.0.0/16.
pub const DEFAULT_NETWORK: Ipv4Net = Ipv4Net { addr: Ipv4Addr::new(10, 244, 0, 0), len: 16 };

/// Why a text is not an IPv4 network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetParseError {
    /// No `/len`.
    #[error("{0:?} is not a network: expected a.b.c.d/len")]
    NoPrefix(String),
    /// The address part is not an IPv4 address.
    #[error("{0:?}: not an IPv4 address")]
    Address(String),
    /// The length is not 0..=32.
    #[error("{0:?}: the prefix length must be 0 to 32")]
    Length(String),
    /// Bits set past the prefix (`10.244.1.0/16`).
    #[error("{0:?} has host bits set (the network is {1})")]
    HostBits(String, Ipv4Net),
}

impl Ipv4Net {
    /// The network of `addr/len`, host bits cleared. `None` if `len > 32`.
    pub fn new(addr: Ipv4Addr, len: u8) -> Option<Ipv4Net> {
        (len <= 32).then(|| Ipv4Net { addr: Ipv4Addr::from(u32::from(addr) & mask(len)), len })
    }

    /// The network address (host bits zero).
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// The last address (the broadcast address for len < 31).
    pub fn last(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !mask(self.len))
    }

    /// The `n`th address after the network address (`nth(1)` = `.1` of a /24),
    /// `None` past the end.
    pub fn nth(&self, n: u32) -> Option<Ipv4Addr> {
        let size = 1u64 << (32 - u32::from(self.len));
        (u64::from(n) < size).then(|| Ipv4Addr::from(u32::from(self.addr).wrapping_add(n)))
    }

    /// Whether `ip` is in this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.len) == u32::from(self.addr)
    }

    /// Whether the two networks share an address.
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }

    /// How many subnets of length `sub_len` this network holds, or `None`
    /// when `sub_len` is not longer than this network's length or longer than 32.
    pub fn subnet_count(&self, sub_len: u8) -> Option<u64> {
        (sub_len > self.len && sub_len <= 32).then(|| 1u64 << (sub_len - self.len))
    }

    /// The `i`th subnet of length `sub_len` (0-based), if there is one.
    pub fn subnet(&self, sub_len: u8, i: u64) -> Option<Ipv4Net> {
        let count = self.subnet_count(sub_len)?;
        if i >= count {
            return None;
        }
        let step = 1u64 << (32 - u32::from(sub_len));
        let base = u64::from(u32::from(self.addr)) + i * step;
        Ipv4Net::new(Ipv4Addr::from(u32::try_from(base).ok()?), sub_len)
    }

    /// flannel's key form `a.b.c.d-len` (`10.244.1.0-24`).
    pub fn key_form(&self) -> String {
        format!("{}-{}", self.addr, self.len)
    }

    /// Reads flannel's key form `a.b.c.d-len`.
    pub fn from_key_form(s: &str) -> Option<Ipv4Net> {
        let (a, l) = s.rsplit_once('-')?;
        let net = Ipv4Net::new(a.parse().ok()?, l.parse().ok()?)?;
        (net.addr.to_string() == a).then_some(net)
    }
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Ipv4Net {
    type Err = NetParseError;

    /// `a.b.c.d/len` with no host bits set.
    fn from_str(s: &str) -> Result<Ipv4Net, NetParseError> {
        let (a, l) = s.split_once('/').ok_or_else(|| NetParseError::NoPrefix(s.to_string()))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| NetParseError::Address(s.to_string()))?;
        let len: u8 = l.parse().map_err(|_| NetParseError::Length(s.to_string()))?;
        let net = Ipv4Net::new(addr, len).ok_or_else(|| NetParseError::Length(s.to_string()))?;
        if net.addr != addr {
            return Err(NetParseError::HostBits(s.to_string(), net));
        }
        Ok(net)
    }
}

impl Serialize for Ipv4Net {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Net {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Ipv4Net, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_refuses() {
        assert_eq!(n("10.244.0.0/16").to_string(), "10.244.0.0/16");
        assert!(matches!("10.244.1.0/16".parse::<Ipv4Net>(), Err(NetParseError::HostBits(..))));
        assert!(matches!("10.244.0.0/33".parse::<Ipv4Net>(), Err(NetParseError::Length(_))));
        assert!(matches!("10.244.0.0".parse::<Ipv4Net>(), Err(NetParseError::NoPrefix(_))));
        assert!(matches!("10.244.0/16".parse::<Ipv4Net>(), Err(NetParseError::Address(_))));
    }

    #[test]
    fn subnets_and_key_form() {
        let net = n("10.244.0.0/16");
        assert_eq!(net.subnet_count(24), Some(256));
        assert_eq!(net.subnet_count(16), None);
        assert_eq!(net.subnet(24, 3), Some(n("10.244.3.0/24")));
        assert_eq!(net.subnet(24, 256), None);
        assert_eq!(n("10.244.3.0/24").key_form(), "10.244.3.0-24");
        assert_eq!(Ipv4Net::from_key_form("10.244.3.0-24"), Some(n("10.244.3.0/24")));
        assert_eq!(Ipv4Net::from_key_form("10.244.3.1-24"), None);
        assert!(net.overlaps(&n("10.0.0.0/8")));
        assert!(!net.overlaps(&n("10.245.0.0/16")));
        assert_eq!(n("10.244.3.0/24").nth(1), Some("10.244.3.1".parse().unwrap()));
        assert_eq!(n("10.244.3.0/24").last(), "10.244.3.255".parse::<Ipv4Addr>().unwrap());
    }
}
