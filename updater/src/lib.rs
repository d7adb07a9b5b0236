//! Berth's A/B updates: boot entries and their boot counters, the A/B
//! state as one pure value ([`state::AbState`]) and signed update bundles
//! ([`bundle`]), installing a bundle into the other slot ([`install`]),
//! downloading it ([`fetch`]), the real machine's disk ([`system`]), the
//! signed update metadata of a published directory ([`publish`]) and the
//! updater's settings ([`config`], which PID1 reads too).
//!
//! It runs unattended (berth-updater is a service, PID1 links the
//! settings): no panicking shortcuts outside tests.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

pub mod boot_entry;
pub mod bundle;
pub mod config;
pub mod daemon;
pub mod fetch;
pub mod install;
pub mod publish;
pub mod state;
pub mod system;
