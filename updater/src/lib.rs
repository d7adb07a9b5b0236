//! Berth's A/B updates: boot entries and their boot counters, and the A/B
//! state as one pure value ([`state::AbState`]); bundles and installation
//! grow here with the update issue.

pub mod boot_entry;
pub mod state;
