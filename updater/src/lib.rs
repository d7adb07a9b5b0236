//! Berth's A/B updates: boot entries and their boot counters, the A/B
//! state as one pure value ([`state::AbState`]), signed update bundles
//! ([`bundle`]) and the updater's settings ([`config`]); installation grows
//! here with the update issue.

pub mod boot_entry;
pub mod bundle;
pub mod config;
pub mod state;
