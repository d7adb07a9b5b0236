//! What the host needs to run Berth VMs, found once.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// OVMF's code, mapped read-only as the first pflash of every VM.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// OVMF's empty variable store; each VM gets its own copy.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// OVMF built with Secure Boot (and SMM, which guards its variables): the
/// first pflash of a VM with [`crate::VmConfig::secure_boot`] on.
pub const OVMF_CODE_SECBOOT: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
/// A variable store with Debian's snakeoil PK, KEK and db enrolled, so
/// Secure Boot is on and enforced from the first boot; each such VM gets its
/// own copy. Binaries signed with [`SNAKEOIL_KEY`] and [`SNAKEOIL_CERT`] pass.
pub const OVMF_VARS_SNAKEOIL: &str = "/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd";
/// The private key of the snakeoil db certificate (package ovmf),
/// encrypted with [`SNAKEOIL_PASSPHRASE`].
pub const SNAKEOIL_KEY: &str = "/usr/share/ovmf/PkKek-1-snakeoil.key";
/// The passphrase of [`SNAKEOIL_KEY`] (Debian's README.Debian of ovmf).
pub const SNAKEOIL_PASSPHRASE: &str = "snakeoil";
/// The snakeoil certificate enrolled in [`OVMF_VARS_SNAKEOIL`]'s db.
pub const SNAKEOIL_CERT: &str = "/usr/share/ovmf/PkKek-1-snakeoil.pem";
/// [`SNAKEOIL_KEY`] decrypted into `dir/snakeoil.key` (made once): sbsign,
/// and so `berth-image build --secure-boot-key`, cannot be given a
/// passphrase. Errors: openssl failed or is missing.
pub fn snakeoil_key(dir: &Path) -> Result<PathBuf> {
    let key = dir.join("snakeoil.key");
    if !key.exists() {
        std::fs::create_dir_all(dir).map_err(crate::error::io(format!("creating {}", dir.display())))?;
        let out = std::process::Command::new("openssl")
            .args(["pkey", "-in", SNAKEOIL_KEY, "-passin"])
            .arg(format!("pass:{SNAKEOIL_PASSPHRASE}"))
            .arg("-out")
            .arg(&key)
            .output()
            .map_err(crate::error::io("running openssl pkey"))?;
        if !out.status.success() {
            return Err(Error::Other(format!(
                "openssl pkey -in {SNAKEOIL_KEY}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    Ok(key)
}

/// The one line that installs everything the harness needs (Debian).
pub const INSTALL_HINT: &str = "apt-get install qemu-system-x86 qemu-utils ovmf";

/// The programs and firmware the harness runs.
#[derive(Clone, Debug)]
pub struct Host {
    pub qemu: PathBuf,
    pub qemu_img: PathBuf,
    pub ovmf_code: PathBuf,
    pub ovmf_vars: PathBuf,
}

impl Host {
    /// Finds `qemu-system-x86_64`, `qemu-img` and OVMF, or names everything
    /// that is missing together with the `apt-get install` line.
    pub fn check() -> Result<Host> {
        let mut missing = Vec::new();
        let qemu = find_program("qemu-system-x86_64");
        let qemu_img = find_program("qemu-img");
        if qemu.is_none() {
            missing.push("qemu-system-x86_64 (package qemu-system-x86)".to_string());
        }
        if qemu_img.is_none() {
            missing.push("qemu-img (package qemu-utils)".to_string());
        }
        for f in [OVMF_CODE, OVMF_VARS] {
            if !Path::new(f).is_file() {
                missing.push(format!("{f} (package ovmf)"));
            }
        }
        match (qemu, qemu_img) {
            (Some(qemu), Some(qemu_img)) if missing.is_empty() => {
                Ok(Host { qemu, qemu_img, ovmf_code: OVMF_CODE.into(), ovmf_vars: OVMF_VARS.into() })
            }
            _ => Err(Error::HostMissing { missing, install: INSTALL_HINT }),
        }
    }
}

/// `name` on `$PATH`, or in the sbin directories (e2fsck lives there and
/// they are not on every user's path).
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// Like [`find_program`], or an error naming the Debian package.
pub(crate) fn require_program(name: &str, package: &str) -> Result<PathBuf> {
    find_program(name).ok_or_else(|| Error::HostMissing {
        missing: vec![format!("{name} (package {package})")],
        install: INSTALL_HINT,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_and_not_nonsense() {
        assert!(find_program("sh").is_some());
        assert!(find_program("no-such-program-berth").is_none());
    }

    #[test]
    fn missing_message_has_the_install_line() {
        let e = Error::HostMissing { missing: vec!["qemu-img (package qemu-utils)".into()], install: INSTALL_HINT }
            .to_string();
        assert!(e.contains("qemu-img"), "{e}");
        assert!(e.contains("apt-get install qemu-system-x86 qemu-utils ovmf"), "{e}");
    }
}
