//! Berth's A/B updates: boot entries and their boot counters (this crate
//! grows the slot state, bundles and installation with the update issue).

pub mod boot_entry;
