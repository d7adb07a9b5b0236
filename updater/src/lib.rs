//! Berth's A/B updates: boot entries and their boot counters, the A/B
//! state as one pure value ([`state::AbState`]) and signed update bundles
//! ([`bundle`]), the signed update metadata of a published directory
//! ([`publish`]); installation grows here with the update issue.

pub mod boot_entry;
pub mod bundle;
pub mod publish;
pub mod state;
