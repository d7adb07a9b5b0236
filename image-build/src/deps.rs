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
    // mkfs.erofs 1.8 is built from source (erofs_utils.rs): autotools and
    // the libraries of the algorithms it writes
    "autoconf",
    "automake",
    "libtool",
    "pkg-config",
    "liblz4-dev",
    "liblzma-dev",
    "cryptsetup-bin",
    "dosfstools",
    "mtools",
    "e2fsprogs",
    "gdisk",
    "qemu-utils",
    // the chain of trust: UKIs (objcopy), signatures (sbsign), the
    // development Secure Boot certificate (openssl req -x509)
    "binutils",
    "sbsigntool",
    "openssl",
    // tools that write the time into their output run with the clock
    // stopped at SOURCE_DATE_EPOCH (reproducible UKIs and signatures)
    "faketime",
    // booting it
    "qemu-system-x86",
    "ovmf",
    // a real SSH client for the tests (qemu-tests/tests/limits.rs)
    "openssh-client",
    // a real static HTTP server with Range requests, for update downloads
    // in the tests (qemu-tests/src/http.rs runs `busybox httpd`)
    "busybox-static",
    // user data (issue 9): NoCloud ISO seeds (`xorriso -as mkisofs`), and
    // the guest forward of the metadata service at 169.254.169.254 to the
    // host's server (QEMU's `guestfwd=...-cmd:nc 127.0.0.1 PORT`)
    "xorriso",
    "netcat-openbsd",
    // the etcd v3 client crate (etcd-client) compiles etcd's .proto files
    // at build time: protoc and the well-known types it imports (berth-image
    // itself must not need them: the test in this file)
    "protobuf-compiler",
    "libprotobuf-dev",
    // a real etcd and etcdctl for the host tests of the router and the
    // reboot semaphore (berth_cluster::testing)
    "etcd-server",
    "etcd-client",
    // the router's NAT test runs iptables (nf_tables backend, as in the
    // image) in a fresh network namespace
    "iptables",
    // `bench --peer`: the Debian 12 + systemd peer is debootstrapped
    "debootstrap",
];

#[derive(Debug, thiserror::Error)]
pub enum DepsError {
    #[error("missing host packages; as root run:\n  apt-get update && apt-get install -y --no-install-recommends {0}")]
    NotRoot(String),
    #[error("still missing after apt-get install (removed to satisfy another package?): {0}")]
    StillMissing(String),
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
///
/// Checks again after installing: apt may remove a listed package to
/// satisfy another (a newer qemu-utils from backports conflicts with
/// Debian 12's qemu-system-x86 and is removed when that comes in), so what
/// is missing afterwards is installed in a second round, and anything still
/// missing then is an error that names it.
pub fn ensure() -> Result<(), DepsError> {
    let mut updated = false;
    for _round in 0..2 {
        let missing = missing();
        if missing.is_empty() {
            return Ok(());
        }
        let list = missing.join(" ");
        if !is_root() {
            return Err(DepsError::NotRoot(list));
        }
        eprintln!("deps: installing {list}");
        if !updated {
            cmd::run(Command::new("apt-get").args(["update", "-q"]))?;
            updated = true;
        }
        cmd::run(
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&missing),
        )?;
    }
    let missing = missing();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(DepsError::StillMissing(missing.join(" ")))
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Crates whose build scripts run a host tool that only [`super::ensure`]
    /// installs (`prost-build`: protoc). `berth-image` is what installs the
    /// host packages, so none of these may be in its own build: on a fresh
    /// machine it could not compile to run `deps` (the etcd client came in
    /// through the updater's library until its etcd lock became a feature).
    const BUILD_TIME_TOOL_CRATES: &[&str] = &["prost-build"];

    /// The README's commands start with `cargo run -p berth-image` on a
    /// machine that has none of [`HOST_PACKAGES`]: what berth-image
    /// compiles (normal and build dependencies) must not need them.
    #[test]
    fn berth_image_builds_before_the_host_packages_are_installed() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["tree", "--offline", "-p", "berth-image", "-e", "normal,build", "--prefix", "none"])
            .output()
            .unwrap();
        assert!(out.status.success(), "cargo tree: {}", String::from_utf8_lossy(&out.stderr));
        let tree = String::from_utf8_lossy(&out.stdout);
        let crates: Vec<&str> = tree.lines().filter_map(|l| l.split_whitespace().next()).collect();
        assert!(crates.contains(&"berth-updater"), "the tree was read: {tree}");
        for tool in BUILD_TIME_TOOL_CRATES {
            assert!(!crates.contains(tool), "berth-image's build pulls in {tool}, which needs a host package:\n{tree}");
        }
    }
}
