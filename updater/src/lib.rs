//! Berth's A/B updates: boot entries and their boot counters, the A/B
//! state as one pure value ([`state::AbState`]) and signed update bundles
//! ([`bundle`]), installing a bundle into the other slot ([`install`]),
//! downloading it ([`fetch`]) and the real machine's disk ([`system`]).
//!
//! It runs unattended (berth-updater is a service): no panicking shortcuts
//! outside tests.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

pub mod boot_entry;
pub mod bundle;
pub mod fetch;
pub mod install;
pub mod state;
pub mod system;
