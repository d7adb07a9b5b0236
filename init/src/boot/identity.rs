//! The machine's identity: /etc/machine-id and the hostname.

use std::path::{Path, PathBuf};

use super::system::System;

pub const MACHINE_ID: &str = "/etc/machine-id";
pub const HOSTNAME: &str = "/etc/hostname";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("reading 16 random bytes for {path}: {source}")]
    Random { path: PathBuf, source: std::io::Error },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("setting the hostname to {name:?}: {source}")]
    SetHostname { name: String, source: std::io::Error },
}

/// 32 lowercase hex digits, not all zero (machine-id(5)).
pub fn valid_machine_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) && id.bytes().any(|b| b != b'0')
}

/// A random machine id, formatted like a version 4 UUID without dashes.
pub fn machine_id_from(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads /etc/machine-id, creating it when missing or empty (first boot).
/// Returns the id and whether it was created.
pub fn ensure_machine_id(sys: &mut dyn System) -> Result<(String, bool), IdentityError> {
    let path = Path::new(MACHINE_ID);
    let current = sys.read_file(path).map(|b| String::from_utf8_lossy(&b).trim().to_string()).unwrap_or_default();
    if valid_machine_id(&current) {
        return Ok((current, false));
    }
    if !current.is_empty() {
        crate::info!("{MACHINE_ID} holds {current:?}, not a machine id: replacing it");
    }
    let mut bytes = [0u8; 16];
    sys.random(&mut bytes).map_err(|source| IdentityError::Random { path: path.into(), source })?;
    let id = machine_id_from(bytes);
    sys.write_file(path, format!("{id}\n").as_bytes(), 0o444)
        .map_err(|source| IdentityError::Write { path: path.into(), source })?;
    Ok((id, true))
}

/// A hostname the kernel and DNS both accept: 1-63 characters of letters,
/// digits, `-` and `.`, not starting or ending with `-` or `.`.
pub fn valid_hostname(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !name.starts_with(['-', '.'])
        && !name.ends_with(['-', '.'])
        && !name.contains("..")
}

/// The first line of /etc/hostname when valid, else `berth-` and the first
/// 8 digits of the machine id.
pub fn choose_hostname(etc_hostname: Option<&str>, machine_id: &str) -> String {
    if let Some(name) = etc_hostname.and_then(|t| t.lines().next()).map(str::trim).filter(|n| valid_hostname(n)) {
        return name.to_string();
    }
    format!("berth-{}", machine_id.get(..8).unwrap_or(machine_id))
}

pub fn set_hostname(sys: &mut dyn System, machine_id: &str) -> Result<String, IdentityError> {
    let file = sys.read_file(Path::new(HOSTNAME)).ok().map(|b| String::from_utf8_lossy(&b).into_owned());
    let name = choose_hostname(file.as_deref(), machine_id);
    if let Some(f) = file.as_deref() {
        let first = f.lines().next().unwrap_or("").trim();
        if !first.is_empty() && first != name {
            crate::info!("{HOSTNAME}: {first:?} is not a valid hostname; using {name}");
        }
    }
    sys.set_hostname(&name).map_err(|source| IdentityError::SetHostname { name: name.clone(), source })?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_ids_are_32_hex_and_uuid_shaped() {
        let id = machine_id_from([0xff; 16]);
        assert_eq!(id, "ffffffffffff4fffbfffffffffffffff");
        assert!(valid_machine_id(&id));
        assert!(!valid_machine_id(&"0".repeat(32)));
        assert!(!valid_machine_id("uninitialized"));
        assert!(!valid_machine_id(&"A".repeat(32)));
    }

    #[test]
    fn hostname_comes_from_etc_hostname_or_the_machine_id() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(choose_hostname(Some("node-1\nignored\n"), id), "node-1");
        assert_eq!(choose_hostname(Some("  web.example \n"), id), "web.example");
        assert_eq!(choose_hostname(None, id), "berth-01234567");
        assert_eq!(choose_hostname(Some(""), id), "berth-01234567");
        assert_eq!(choose_hostname(Some("-bad"), id), "berth-01234567");
        assert_eq!(choose_hostname(Some("a b"), id), "berth-01234567");
        assert_eq!(choose_hostname(Some(&"x".repeat(64)), id), "berth-01234567");
    }
}
