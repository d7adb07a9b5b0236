//! The one VM driver of Berth: boots a Berth disk image under QEMU + OVMF
//! (TCG by default) on a copy-on-write overlay, and drives it through
//!
//! - the serial console (ttyS0, captured to `console.log`): [`Vm::wait_for`],
//!   [`Vm::wait_ready`] (parses PID1's ready line into [`BootTimes`]);
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
//! let times = vm.wait_ready(boot_timeout())?;
//! println!("up in {} s", times.total);
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

pub mod cluster;
mod config;
mod console;
mod disk;
mod error;
mod host;
pub mod http;
mod imds;
pub mod ntp;
pub mod oci;
mod qemu_args;
mod qmp;
pub mod releases;
mod seed;
mod settings;
mod shell;
pub mod ssh;
pub mod updates;
mod vm;
mod vm_paths;
mod workdir;

pub use config::{DirectKernel, DiskBus, UserNet, VmConfig, EC2_SMBIOS, FW_CFG_META_DATA, FW_CFG_USER_DATA};
pub use console::{tail, BootTimes};
pub use disk::{fat_image, flip_byte, fsck_ext4, Fsck, Image, ImageFormat};
pub use error::{Error, Result};
pub use host::{
    snakeoil_key, Host, INSTALL_HINT, OVMF_CODE, OVMF_CODE_SECBOOT, OVMF_VARS, OVMF_VARS_SNAKEOIL, SNAKEOIL_CERT,
    SNAKEOIL_KEY, SNAKEOIL_PASSPHRASE,
};
pub use imds::{ImdsData, ImdsRequest, ImdsServer, IMDS_PROBE_BOUND, TOKEN_HEADER, TOKEN_TTL_HEADER};
pub use qmp::Qmp;
pub use seed::{nocloud_seed, SeedFiles, SeedFormat};
pub use settings::{
    berth_image, boot_timeout, default_image, image_dir, shutdown_timeout, vms_dir, with_debug_env, workspace_root,
    GIB, MIB,
};
pub use shell::{Output, MAX_COMMAND};
pub use vm::{Vm, SECURE_BOOT_VAR, SH_TIMEOUT};
pub use vm_paths::VmPaths;
pub use workdir::WorkDir;
