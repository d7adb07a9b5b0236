//! The host packages the build, the VM runs and the tests need: installed
//! with apt-get when running as root, otherwise named in the exact command
//! to run.

use std::process::Command;

use crate::cmd::{self, CmdError};

/// Everything `berth-image` and the test suite call on the host.
pub const HOST_PACKAGES: &[&str] = &[
    // the kernel
    "linux-source-6.1",
    "build-essential",
    "bc",
    "bison",
    "flex",
    "libelf-dev",
    "libssl-dev",
    "cpio",
    "xz-utils",
    // the root, the ESP, the disk
    "erofs-utils",
    "cryptsetup-bin",
    "dosfstools",
    "mtools",
    "e2fsprogs",
    "gdisk",
    "qemu-utils",
    // booting it
    "qemu-system-x86",
    "ovmf",
];

#[derive(Debug, thiserror::Error)]
pub enum DepsError {
    #[error("missing host packages; as root run:\n  apt-get update && apt-get install -y --no-install-recommends {0}")]
    NotRoot(String),
    #[error(transparent)]
    Cmd(#[from] CmdError),
}

fn missing() -> Vec<&'static str> {
    HOST_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            let out = Command::new("dpkg-query").args(["-W", "-f=${Status}", p]).output();
            !matches!(out, Ok(o) if String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect()
}

/// Installs what is missing (as root) or says exactly what to install.
pub fn ensure() -> Result<(), DepsError> {
    let missing = missing();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    if !is_root() {
        return Err(DepsError::NotRoot(list));
    }
    eprintln!("deps: installing {list}");
    cmd::run(Command::new("apt-get").args(["update", "-q"]))?;
    cmd::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing),
    )?;
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
