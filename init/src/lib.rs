//! berth-init: PID1 of Berth.
//!
//! PID1 must never panic and never exit: when it dies the kernel panics and
//! the machine is gone, taking the logs of what went wrong with it. So the
//! crate denies the panicking shortcuts, every failure is a value that says
//! what failed where, and `main` still wraps the event loop in
//! `catch_unwind` as the last line of defence.
//!
//! Everything that touches the machine (mounts, block devices, processes) in
//! early boot goes through [`boot::System`], so the boot sequence is
//! unit-tested against a recording fake without root.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

pub mod log;

// What PID1 asks of the kernel and malloc to stay small.
pub mod memory;

// PID1's own parts: the event loop and what it wires together.
pub mod pid1;

// The service manager and what it reads.
pub mod supervisor;
/// Unit files (their own crate, `units/`, which user data's checks share).
pub use berth_units as unit;

// Early boot against the `System` seam (mounts, data partition, identity).
pub mod boot;
// Stage 0 in the initramfs: the verity root set up, then switch_root.
pub mod initrd;

// The control API's server, and berthctl's client, rendering and analysis.
pub mod api;
pub mod berthctl;

// User data: the boot step's runner and the decisions after a change.
pub mod provision;

// Shared plumbing.
pub mod cgroup;
pub mod journal;
pub mod mountinfo;
pub mod notify;
pub mod power;
pub mod reaper;
pub mod spawn;
pub mod status;
pub mod timing;
