//! The one VM driver of Berth: boots a Berth disk image under QEMU + OVMF
//! (TCG by default) on a copy-on-write overlay, and drives it through
//!
//! - the serial console (ttyS0, captured to `console.log`): [`Vm::wait_for`],
//!   [`Vm::wait_ready`] (parses PID1's ready line into a [`BootReport`]);
//! - the admin shell that PID1 runs on the virtio console (`/dev/hvc0`):
//!   [`Vm::sh`], [`Vm::sh_ok`], [`Vm::sh_nowait`], [`Vm::read_file`];
//! - QMP: [`Vm::powerdown`] (ACPI power button), [`Vm::quit`],
//!   [`Vm::power_cut`], [`Vm::reset`], [`Vm::wait_exit`];
//!
//! and checks disks from the host once the VM is stopped ([`Image`],
//! [`fsck_ext4`]).
//!
//! ```no_run
//! use berth_qemu::{Vm, VmConfig, boot_timeout};
//! let mut vm = Vm::start(VmConfig::new().name("example"))?;
//! let report = vm.wait_ready(boot_timeout())?;
//! println!("up in {} s", report.total);
//! assert_eq!(vm.sh_ok("echo hi"), "hi\n");
//! vm.powerdown()?;
//! vm.wait_exit(std::time::Duration::from_secs(60))?;
//! # Ok::<(), berth_qemu::Error>(())
//! ```
//!
//! Every VM lives in its own working directory (overlay, EFI variables,
//! console log, sockets, QEMU's own log), removed when the [`Vm`] is dropped
//! normally and kept when the thread is panicking, so a failed test leaves
//! its console log behind.

mod config;
mod console;
mod disk;
mod error;
mod host;
mod qmp;
mod shell;
mod vm;
mod workdir;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use config::VmConfig;
pub use console::{tail, BootReport};
pub use disk::{flip_byte, fsck_ext4, Fsck, Image, ImageFormat};
pub use error::{Error, Result};
pub use host::{Host, INSTALL_HINT, OVMF_CODE, OVMF_VARS};
pub use qmp::Qmp;
pub use shell::{Output, MAX_COMMAND};
pub use vm::{Vm, VmPaths, SH_TIMEOUT};
pub use workdir::WorkDir;

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
