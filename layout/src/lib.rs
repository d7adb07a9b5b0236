//! Facts that more than one part of Berth needs, defined once: the disk
//! layout and its GPT, where things live in the image, the kernel command
//! line that sets up the verified root, and the lines PID1 prints that
//! tools read.
//!
//! PID1 links this crate, so it follows PID1's rule: no panicking
//! shortcuts, and what it reads from disk is checked before it is used.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

pub mod bootdisk;
pub mod cmdline;
pub mod disk;
pub mod gpt;
pub mod guid;
pub mod os_release;
pub mod paths;
pub mod regular_file;

pub use guid::Guid;

/// The OS version this tree builds by default; it names boot entries and
/// derives UUIDs. `berth-image build --os-version` can build another, so at
/// run time the booted version is os-release's `VERSION_ID`
/// ([`os_release::version_id`]), never this constant.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What PID1 prints on the console, for people and for the test harness.
pub mod console {
    /// `berth: ready in X.XXX s (firmware+loader A s, kernel B s, userspace C s)`,
    /// followed by [`NOT_READY`] when some units are not ready.
    pub const READY_PREFIX: &str = "berth: ready in ";
    /// Ends the ready line when some units are not ready (nothing the
    /// machine needs waits for them): `; not ready: etcd (starting), x (failed)`,
    /// each unit with its state.
    pub const NOT_READY: &str = "; not ready: ";
    /// `berth: units stopped in X.XXX s`: at shutdown, how long the units
    /// took to stop (each within its own stop timeout).
    pub const UNITS_STOPPED_PREFIX: &str = "berth: units stopped in ";
    /// Printed (and repeated) when early boot failed and the machine stays
    /// up in the emergency state.
    pub const EMERGENCY_PREFIX: &str = "berth: EMERGENCY: ";
    /// Printed right before the final reboot/poweroff system call.
    pub const SHUTDOWN_DONE: &str = "berth: shutdown complete";
}
