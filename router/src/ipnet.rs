//! IPv4 networks (`a.b.c.d/len`) as Berth and flannel write them: a thin
//! newtype over [`ipnet::Ipv4Net`], which does the arithmetic (containment,
//! subnets, hosts, broadcast). What is ours: the strict parsing that refuses
//! host bits, overlap, the subnet count, and flannel's key form. Pure.

use std::fmt;
use std::net::Ipv4Addr;
use std::ops::Deref;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IPv4 network: an [`ipnet::Ipv4Net`] whose address has its host bits
/// zero (the network address). Ordered by address, then length. Dereferences
/// to the [`ipnet::Ipv4Net`] for the rest (`addr`, `prefix_len`, `contains`,
/// `subnets`, `hosts`, `broadcast`...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Net(ipnet::Ipv4Net);

/// flannel's customary cluster network, 10.244.0.0/16.
pub const DEFAULT_NETWORK: Ipv4Net = Ipv4Net(ipnet::Ipv4Net::new_assert(Ipv4Addr::new(10, 244, 0, 0), 16));

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
        ipnet::Ipv4Net::new(addr, len).ok().map(Ipv4Net::from)
    }

    /// Whether the two networks share an address (one holds the other).
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.0.contains(&other.0) || other.0.contains(&self.0)
    }

    /// How many subnets of length `sub_len` this network holds, or `None`
    /// when `sub_len` is not longer than this network's length or longer than 32.
    pub fn subnet_count(&self, sub_len: u8) -> Option<u64> {
        (sub_len > self.prefix_len() && sub_len <= 32).then(|| 1u64 << (sub_len - self.prefix_len()))
    }

    /// flannel's key form `a.b.c.d-len` (`10.244.1.0-24`).
    pub fn key_form(&self) -> String {
        format!("{}-{}", self.addr(), self.prefix_len())
    }

    /// Reads flannel's key form `a.b.c.d-len`; `None` with host bits set.
    pub fn from_key_form(s: &str) -> Option<Ipv4Net> {
        let (a, l) = s.rsplit_once('-')?;
        let addr: Ipv4Addr = a.parse().ok()?;
        let net = Ipv4Net::new(addr, l.parse().ok()?)?;
        (net.addr() == addr).then_some(net)
    }
}

/// The network of an [`ipnet::Ipv4Net`], host bits cleared.
impl From<ipnet::Ipv4Net> for Ipv4Net {
    fn from(net: ipnet::Ipv4Net) -> Ipv4Net {
        Ipv4Net(net.trunc())
    }
}

impl From<Ipv4Net> for ipnet::Ipv4Net {
    fn from(net: Ipv4Net) -> ipnet::Ipv4Net {
        net.0
    }
}

impl Deref for Ipv4Net {
    type Target = ipnet::Ipv4Net;

    fn deref(&self) -> &ipnet::Ipv4Net {
        &self.0
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
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
        if net.addr() != addr {
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
        assert_eq!(
            "10.244.1.0/16".parse::<Ipv4Net>().unwrap_err().to_string(),
            "\"10.244.1.0/16\" has host bits set (the network is 10.244.0.0/16)"
        );
        assert_eq!(Ipv4Net::new("10.244.3.7".parse().unwrap(), 24), Some(n("10.244.3.0/24")));
        assert_eq!(Ipv4Net::new("10.244.3.7".parse().unwrap(), 33), None);
        assert_eq!(DEFAULT_NETWORK, n("10.244.0.0/16"));
        assert_eq!(serde_json::to_string(&DEFAULT_NETWORK).unwrap(), "\"10.244.0.0/16\"");
        assert!(serde_json::from_str::<Ipv4Net>("\"10.244.1.0/16\"").is_err());
    }

    #[test]
    fn subnets_and_key_form() {
        let net = n("10.244.0.0/16");
        assert_eq!(net.subnet_count(24), Some(256));
        assert_eq!(net.subnet_count(16), None);
        assert_eq!(net.subnet_count(33), None);
        assert_eq!(n("10.244.3.0/24").key_form(), "10.244.3.0-24");
        assert_eq!(Ipv4Net::from_key_form("10.244.3.0-24"), Some(n("10.244.3.0/24")));
        assert_eq!(Ipv4Net::from_key_form("10.244.3.1-24"), None);
        assert_eq!(Ipv4Net::from_key_form("10.244.3.0/24"), None);
        assert!(net.overlaps(&n("10.0.0.0/8")));
        assert!(n("10.0.0.0/8").overlaps(&net));
        assert!(!net.overlaps(&n("10.245.0.0/16")));
    }
}
