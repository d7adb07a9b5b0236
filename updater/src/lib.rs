//! Berth's A/B updates: boot entries and their boot counters (this crate
//! grows the slot state and installation with the update issue) and signed
//! update bundles.

pub mod boot_entry;
pub mod bundle;
