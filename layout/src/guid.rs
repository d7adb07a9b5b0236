//! GUIDs as the GPT stores them: the first three fields little-endian.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// A GUID in its textual (RFC 4122) byte order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Guid([u8; 16]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a GUID: {0:?} (expected 8-4-4-4-12 hex digits)")]
pub struct GuidParseError(pub String);

impl Guid {
    pub const NIL: Guid = Guid([0; 16]);

    /// A GUID known at compile time, e.g. a partition type.
    ///
    /// # Panics
    /// On a malformed literal; used in a `const`, that fails the build.
    pub const fn from_const(s: &str) -> Guid {
        match parse(s.as_bytes()) {
            Some(g) => g,
            #[allow(clippy::panic)] // only ever evaluated at compile time, on literals
            None => panic!("GUID literal must be 8-4-4-4-12 hex digits"),
        }
    }

    /// A stable GUID derived from a name, so that two builds of the same
    /// version produce the same disk, bit for bit. Marked as an RFC 9562
    /// version 8 (vendor-specific) UUID.
    pub fn derive(name: &str) -> Guid {
        let digest = Sha256::digest(format!("berth-guid:{name}").as_bytes());
        let mut out = [0u8; 16];
        for (o, d) in out.iter_mut().zip(digest.iter()) {
            *o = *d;
        }
        out[6] = (out[6] & 0x0f) | 0x80;
        out[8] = (out[8] & 0x3f) | 0x80;
        Guid(out)
    }

    pub fn from_bytes(bytes: [u8; 16]) -> Guid {
        Guid(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The 16 bytes as they stand on disk in a GPT (mixed endian).
    pub fn to_gpt_bytes(&self) -> [u8; 16] {
        let b = self.0;
        [b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]
    }

    pub fn from_gpt_bytes(d: &[u8; 16]) -> Guid {
        Guid([d[3], d[2], d[1], d[0], d[5], d[4], d[7], d[6], d[8], d[9], d[10], d[11], d[12], d[13], d[14], d[15]])
    }
}

/// The 8-4-4-4-12 hex digit text of a GUID, in either case.
const fn parse(s: &[u8]) -> Option<Guid> {
    if s.len() != 36 {
        return None;
    }
    let mut value: u128 = 0;
    let mut rest = s;
    let mut pos = 0;
    while let [c, tail @ ..] = rest {
        if matches!(pos, 8 | 13 | 18 | 23) {
            if *c != b'-' {
                return None;
            }
        } else {
            match hex(*c) {
                Some(digit) => value = (value << 4) | digit as u128,
                None => return None,
            }
        }
        rest = tail;
        pos += 1;
    }
    Some(Guid(value.to_be_bytes()))
}

const fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl FromStr for Guid {
    type Err = GuidParseError;

    fn from_str(s: &str) -> Result<Guid, GuidParseError> {
        parse(s.as_bytes()).ok_or_else(|| GuidParseError(s.to_string()))
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_and_gpt_bytes_are_mixed_endian() {
        let g: Guid = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B".parse().unwrap();
        assert_eq!(g.to_string(), "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
        assert_eq!(g, Guid::from_const("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"));
        // The ESP type GUID as every GPT tool writes it.
        assert_eq!(
            g.to_gpt_bytes(),
            [0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b]
        );
        assert_eq!(Guid::from_gpt_bytes(&g.to_gpt_bytes()), g);
    }

    #[test]
    fn malformed_text_is_rejected() {
        assert!("c12a7328f81f11d2ba4b00a0c93ec93b".parse::<Guid>().is_err());
        assert!("g12a7328-f81f-11d2-ba4b-00a0c93ec93b".parse::<Guid>().is_err());
        assert!("c12a7328-f81f-11d2-ba4b-00a0c93ec93".parse::<Guid>().is_err(), "35 characters");
        assert!("c12a7328-f81f-11d2-ba4b+00a0c93ec93b".parse::<Guid>().is_err(), "a dash missing");
        assert!("c12a7328-f81f-11d2-ba4b-00a0c93ec93bb".parse::<Guid>().is_err(), "37 characters");
    }

    #[test]
    fn derived_guids_are_stable_and_distinct() {
        let a = Guid::derive("0.1.0/root-a");
        assert_eq!(a, Guid::derive("0.1.0/root-a"));
        assert_ne!(a, Guid::derive("0.1.0/root-b"));
        assert_eq!(a.as_bytes()[6] >> 4, 8, "version 8");
    }
}
