//! The shapes of names, paths, URLs and addresses. Each returns why not.

use std::net::IpAddr;

/// A host name or FQDN (RFC 1123): labels of 1..=63 letters, digits and
/// `-`, not starting or ending with `-`; at most 253 characters; one
/// trailing dot allowed.
pub(crate) fn hostname(s: &str) -> Result<(), String> {
    let t = s.strip_suffix('.').unwrap_or(s);
    if t.is_empty() || t.len() > 253 {
        return Err("a host name is 1 to 253 characters".into());
    }
    for l in t.split('.') {
        let ok = !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-');
        if !ok {
            return Err(format!("`{s}` is not a valid host name (labels of letters, digits and `-`, 1 to 63 long)"));
        }
    }
    Ok(())
}

/// A user or group name: letters, digits, `_`, `.`, `-`, starting with a
/// letter or `_`, at most 32 characters (useradd's rule, upper case
/// allowed as cloud-init does).
pub(crate) fn account(s: &str) -> Result<(), String> {
    let first_ok = s.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if !first_ok || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
        return Err(format!("`{s}` is not a valid user or group name (letters, digits, `_.-`, starting with a letter or `_`, at most 32)"));
    }
    Ok(())
}

/// A unit's name (`docs/units.md`): lower-case letters, digits and
/// `- _ . @`, starting with a letter or digit, at most 128.
pub(crate) fn unit_name(s: &str) -> Result<(), String> {
    let first_ok = s.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    // `etcd.toml` would be the file etcd.toml.toml: a mask or unit of no
    // unit the user meant, in silence.
    if !first_ok
        || s.ends_with(".toml")
        || s.len() > 128
        || !s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.' | b'@'))
    {
        return Err(format!(
            "`{s}` is not a valid unit name (lower-case letters, digits and `-_.@`, starting with a letter or digit, at most 128; no `.toml`)"
        ));
    }
    Ok(())
}

/// An IANA time zone name: `UTC`, `Europe/Berlin`, `America/Argentina/Buenos_Aires`,
/// `Etc/GMT+5`: segments of letters, digits, `_+-`, each starting with a
/// letter. Whether the machine has it is checked when planned.
pub(crate) fn timezone(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.split('/').all(|seg| {
            seg.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
                && seg.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-'))
        });
    if ok {
        Ok(())
    } else {
        Err(format!("`{s}` is not an IANA time zone name (such as `UTC` or `Europe/Berlin`)"))
    }
}

/// An absolute path, normalised: `//` and `/./` collapsed, a trailing `/`
/// removed; `..` refused.
pub(crate) fn abs_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!("`{s}` is not an absolute path"));
    }
    if s.contains('\0') {
        return Err("a path cannot contain a NUL byte".into());
    }
    let mut parts = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(format!("`{s}`: `..` is not allowed in a path")),
            c => parts.push(c),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

/// The writable parts of a Berth machine (the root file system is the
/// read-only image).
pub(crate) const WRITABLE: &[&str] = &["/etc", "/var", "/run", "/tmp", "/root"];

/// A normalised absolute path strictly below one of [`WRITABLE`].
pub(crate) fn writable_path(s: &str) -> Result<String, String> {
    let p = abs_path(s)?;
    if WRITABLE.iter().any(|w| p.strip_prefix(w).is_some_and(|rest| rest.starts_with('/'))) {
        Ok(p)
    } else {
        Err(format!("`{p}` is on Berth's read-only root file system: only files under /etc, /var, /run, /tmp and /root can be written"))
    }
}

/// An `http://` or `https://` URL with a host.
pub(crate) fn http_url(s: &str) -> Result<(), String> {
    let rest = s.strip_prefix("http://").or_else(|| s.strip_prefix("https://"));
    let Some(rest) = rest else {
        return Err(format!("`{s}` is not an http:// or https:// URL"));
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{s}` is not a valid URL (no host, or a space in it)"));
    }
    Ok(())
}

/// An IPv4 or IPv6 address.
pub(crate) fn ip(s: &str) -> Result<IpAddr, String> {
    s.parse::<IpAddr>().map_err(|_| format!("`{s}` is not an IP address"))
}

/// `ADDRESS/PREFIX`, the prefix within the family's length.
pub(crate) fn cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let Some((a, p)) = s.split_once('/') else {
        return Err(format!("`{s}` is not ADDRESS/PREFIX"));
    };
    let a = ip(a)?;
    let max = if a.is_ipv4() { 32 } else { 128 };
    match p.parse::<u8>() {
        Ok(p) if p <= max => Ok((a, p)),
        _ => Err(format!("`{s}`: the prefix must be 0 to {max}")),
    }
}

/// A dotted IPv4 netmask -> its prefix length.
pub(crate) fn netmask_prefix(s: &str) -> Result<u8, String> {
    let m: std::net::Ipv4Addr = s.parse().map_err(|_| format!("`{s}` is not a netmask"))?;
    let bits = u32::from(m);
    let ones = bits.leading_ones();
    if bits.checked_shl(ones).unwrap_or(0) != 0 {
        return Err(format!("`{s}` is not a contiguous netmask"));
    }
    u8::try_from(ones).map_err(|_| format!("`{s}` is not a netmask"))
}

/// Whether `addr` is in `net/prefix`.
pub(crate) fn contains(net: IpAddr, prefix: u8, addr: IpAddr) -> bool {
    match (net, addr) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix.min(128))).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// A MAC address: six `:`-separated hex pairs; returned lower-case.
pub(crate) fn mac(s: &str) -> Result<String, String> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit())) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!("`{s}` is not a MAC address (aa:bb:cc:dd:ee:ff)"))
    }
}

/// A network interface's kernel name: 1..=15 bytes, no `/`, space or `:`.
pub(crate) fn ifname(s: &str) -> Result<(), String> {
    if s.is_empty()
        || s.len() > 15
        || s == "."
        || s == ".."
        || s.bytes().any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(format!("`{s}` is not an interface name (1 to 15 characters, no `/`, `:` or space)"));
    }
    Ok(())
}

/// A crypt(3) hash as /etc/shadow holds it: `$ID$...` (`$6$`, `$y$`,
/// `$2b$`, ...) of the crypt alphabet.
pub(crate) fn crypt_hash(s: &str) -> Result<(), String> {
    let ok = s.starts_with('$')
        && s.matches('$').count() >= 3
        && s.len() >= 13
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'$' | b'.' | b'/' | b'=' | b',' | b'-'));
    if ok {
        Ok(())
    } else {
        Err("must be a crypt(3) hash (`$6$...`, `$y$...`, as made by `mkpasswd`); a plain-text password is refused"
            .into())
    }
}

/// `HH:MM-HH:MM`.
pub(crate) fn window(s: &str) -> Result<(), String> {
    let hm = |t: &str| -> bool {
        let Some((h, m)) = t.split_once(':') else { return false };
        h.len() == 2 && m.len() == 2 && h.parse::<u8>().is_ok_and(|h| h < 24) && m.parse::<u8>().is_ok_and(|m| m < 60)
    };
    match s.split_once('-') {
        Some((a, b)) if hm(a) && hm(b) => Ok(()),
        _ => Err(format!("`{s}` is not a window HH:MM-HH:MM (UTC)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert!(hostname("web-1").is_ok());
        assert!(hostname("a.example.com.").is_ok());
        assert!(hostname("-a").is_err());
        assert!(hostname("a_b").is_err());
        assert!(timezone("America/Argentina/Buenos_Aires").is_ok());
        assert!(timezone("Etc/GMT+5").is_ok());
        assert!(timezone("../etc/passwd").is_err());
        assert_eq!(abs_path("/etc//x/./y/").unwrap(), "/etc/x/y");
        assert!(abs_path("/etc/../bin/x").is_err());
        assert!(writable_path("/etc/x").is_ok());
        assert!(writable_path("/etc").is_err());
        assert!(writable_path("/etcx/y").is_err());
        assert!(writable_path("/usr/bin/hello").is_err());
        assert!(http_url("https://a:8080/x").is_ok());
        assert!(http_url("ftp://a").is_err());
        assert!(http_url("http://").is_err());
        assert_eq!(netmask_prefix("255.255.255.0").unwrap(), 24);
        assert!(netmask_prefix("255.0.255.0").is_err());
        let (n, p) = cidr("10.0.0.0/8").unwrap();
        assert!(contains(n, p, "10.1.2.3".parse().unwrap()));
        assert!(!contains(n, p, "11.1.2.3".parse().unwrap()));
        assert!(crypt_hash("$6$rounds=4096$abc$defghijklmnop").is_ok());
        assert!(crypt_hash("hunter2").is_err());
        assert!(window("02:00-04:30").is_ok());
        assert!(window("25:00-04:30").is_err());
        assert!(mac("AA:bb:cc:dd:ee:ff").is_ok());
        assert!(unit_name("getty@hvc0").is_ok());
        assert!(unit_name("Foo").is_err());
        assert!(unit_name("etcd.toml").is_err());
        assert!(unit_name("a.b_c-d").is_ok());
    }
}
