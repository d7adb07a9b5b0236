//! Where the harness finds images and puts VMs, and how long it waits:
//! defaults that environment variables override.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The workspace this crate belongs to (the parent of its manifest dir).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the crate lives inside the workspace").to_path_buf()
}

/// Where `berth-image build` puts its outputs: `$BERTH_IMAGE_DIR`, or
/// `<workspace>/target/berth`.
pub fn image_dir() -> PathBuf {
    match std::env::var_os("BERTH_IMAGE_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => workspace_root().join("target").join("berth"),
    }
}

/// The disk image that VMs boot by default: `image_dir()/berth.qcow2`.
pub fn default_image() -> PathBuf {
    image_dir().join("berth.qcow2")
}

/// Where VM working directories go: `$BERTH_VM_DIR`, or
/// `<workspace>/target/berth/vms`.
pub fn vms_dir() -> PathBuf {
    match std::env::var_os("BERTH_VM_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => workspace_root().join("target").join("berth").join("vms"),
    }
}

/// `berth-image` as the tests run it: `cargo run -q -p berth-image --` in
/// the workspace (`$CARGO`, the cargo that runs the tests, when set).
pub fn berth_image() -> std::process::Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut c = std::process::Command::new(cargo);
    c.current_dir(workspace_root()).args(["run", "-q", "-p", "berth-image", "--"]);
    c
}

fn env_secs(var: &str, default: u64) -> Duration {
    let secs = std::env::var(var).ok().and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(default);
    Duration::from_secs(secs)
}

/// How long a test waits for one boot to reach the ready line: generous,
/// because TCG on a shared 2-core machine can be several times slower than
/// usual. `$BERTH_BOOT_TIMEOUT` (seconds) overrides the default of 300.
/// Timeouts catch hangs; speed is measured by benchmarks, not tests.
pub fn boot_timeout() -> Duration {
    env_secs("BERTH_BOOT_TIMEOUT", 300)
}

/// How long a test waits for a clean shutdown (power button or reboot
/// request until QEMU exits / the next boot starts): `$BERTH_SHUTDOWN_TIMEOUT`
/// seconds, default 120.
pub fn shutdown_timeout() -> Duration {
    env_secs("BERTH_SHUTDOWN_TIMEOUT", 120)
}

/// One GiB, for [`VmConfig::disk_size`].
pub const GIB: u64 = 1024 * 1024 * 1024;
/// One MiB.
pub const MIB: u64 = 1024 * 1024;

/// What the examples (`guest`, `reboot`) take from the environment to look
/// into a boot: `$BERTH_QEMU_ARGS` appends QEMU arguments (split at
/// whitespace, e.g. `-monitor unix:/tmp/mon.sock,server=on,wait=off` to
/// sample the vCPUs from); `$BERTH_APPEND` boots the image's kernel and
/// stage 0's initramfs directly (QEMU's `-kernel` and `-initrd`, no
/// firmware) with the image's command line
/// (`image_dir()/cmdline.txt`) and these words after it (`initcall_debug`,
/// `nokaslr`). Errors: reading `cmdline.txt`.
pub fn with_debug_env(mut cfg: crate::VmConfig) -> crate::Result<crate::VmConfig> {
    if let Ok(extra) = std::env::var("BERTH_QEMU_ARGS") {
        for a in extra.split_whitespace() {
            cfg = cfg.arg(a);
        }
    }
    if let Ok(extra) = std::env::var("BERTH_APPEND") {
        let dir = image_dir();
        let path = dir.join("cmdline.txt");
        let cmdline = std::fs::read_to_string(&path)
            .map_err(|source| crate::Error::Io { what: format!("reading {}", path.display()), source })?;
        cfg = cfg.direct_kernel(crate::DirectKernel {
            kernel: dir.join("bzImage"),
            initrd: Some(dir.join("initrd.cpio")),
            append: format!("{} {extra}", cmdline.trim()),
        });
    }
    Ok(cfg)
}
