//! Berth's A/B updates: boot entries and their boot counters, the A/B
//! state as one pure value ([`state::AbState`]) and signed update bundles
//! ([`bundle`]), installing a bundle into the other slot ([`install`]),
//! downloading it ([`fetch`]), the real machine's disk ([`system`]) and the
//! signed update metadata of a published directory ([`publish`]).
//!
//! It runs unattended (berth-updater is a service): no panicking shortcuts
//! outside tests.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

pub mod boot_entry;
pub mod bundle;
pub mod fetch;
pub mod install;
pub mod publish;
pub mod state;
pub mod system;
