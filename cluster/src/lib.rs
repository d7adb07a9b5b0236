//! What Berth hosts share through etcd (etcd v3 API, through the
//! `etcd-client` crate: gRPC, no hand-written protocol code).
//!
//! - [`reboot_lock`]: the reboot semaphore (at most N hosts rebooting into
//!   an update at once; keys under `/berth/reboot-lock/`).
//! - [`testing`] (feature `testing`): a real etcd for tests.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

pub mod reboot_lock;
#[cfg(feature = "testing")]
pub mod testing;
