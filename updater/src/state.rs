//! The A/B state as one pure value, in the way of Bottlerocket's signpost:
//! loaded once ([`AbState::load`]), changed only through named transitions
//! ([`AbState::stage`], [`AbState::bless`], [`AbState::mark_bad`],
//! [`AbState::rollback`]), written once by applying [`AbState::plan`].
//!
//! Nothing here touches a disk: loading takes the inputs as plain values
//! (the ESP's `/loader/entries` file names with their contents, the text of
//! `/proc/cmdline`, the bytes of two efivarfs files) and the plan is a list
//! of file operations for the caller to apply.
//!
//! The sources of truth:
//! - Boot Loader Specification type #1 entries, one per slot, named
//!   `berth-<version>[+<left>[-<done>]].conf` ([`EntryName`]); the slot is
//!   `berth.slot=a|b` on the entry's `options` line, the partition is its
//!   `PARTUUID=`.
//! - systemd boot counting (Automatic Boot Assessment): before booting an
//!   entry with a counter, systemd-boot renames it to `+<left-1>-<done+1>`
//!   and sets `LoaderBootCountPath` to the renamed file's path; an entry at
//!   `+0` is "bad" and sorted after the others; a userspace that decides the
//!   boot is good removes the counter (blesses it).
//! - `LoaderEntrySelected`: the identifier of the entry systemd-boot booted
//!   (its file name without the counter).
//!
//! "Slot" means an A/B root slot ([`Slot`]) here and nowhere else.

use berth_layout::cmdline::slot_of;
use berth_layout::disk::Slot;

use crate::boot_entry::{self, EntryName, EntryNameError, INITIAL_TRIES};

/// The efivarfs name of systemd-boot's `LoaderBootCountPath` variable.
pub const LOADER_BOOT_COUNT_PATH: &str = "LoaderBootCountPath";
/// The efivarfs name of systemd-boot's `LoaderEntrySelected` variable.
pub const LOADER_ENTRY_SELECTED: &str = "LoaderEntrySelected";
/// Where the entries live on the ESP (Boot Loader Specification).
pub const ENTRIES_DIR: &str = "/loader/entries";

/// One Berth boot entry on the ESP: its file name and what it boots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The parsed file name (version and boot counter).
    pub name: EntryName,
    /// The root slot the entry boots (`berth.slot=` on its options line).
    pub slot: Slot,
    /// The root partition's PARTUUID named on the options line, if any.
    pub partuuid: Option<String>,
    /// The whole text of the entry file.
    pub text: String,
}

impl Entry {
    /// The file name in [`ENTRIES_DIR`], e.g. `berth-0.1.0+2-1.conf`.
    pub fn file_name(&self) -> String {
        self.name.to_string()
    }

    /// A boot that came up healthy: no counter.
    pub fn is_blessed(&self) -> bool {
        self.name.tries_left.is_none()
    }

    /// Spent its tries booting (`+0-<done>` with done > 0): this version
    /// failed here, systemd-boot did not pick it for a good reason.
    pub fn is_spent(&self) -> bool {
        self.name.is_bad() && self.name.tries_done.unwrap_or(0) > 0
    }
}

/// Why the inputs could not be loaded; each names the file or variable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LoadError {
    #[error("entry {0}: {1}")]
    EntryName(String, EntryNameError),
    #[error("entry {file}: neither an `options` line naming berth.slot=a or berth.slot=b nor an `efi` line naming /berth/a/berth.efi or /berth/b/berth.efi")]
    UnknownSlot { file: String },
    #[error("entry {file}: `linux {found}` is not slot {slot}'s kernel {expected}")]
    KernelMismatch { file: String, slot: &'static str, found: String, expected: String },
    #[error("entries {first} and {second} both boot slot {slot}")]
    TwoEntriesForSlot { first: String, second: String, slot: &'static str },
    #[error("/proc/cmdline names no slot (berth.slot=a|b)")]
    CmdlineNoSlot,
    #[error("/proc/cmdline boots slot {0}, but no entry boots it")]
    NoBootedEntry(&'static str),
    #[error("EFI variable {name}: {why}")]
    Variable { name: &'static str, why: &'static str },
    #[error("EFI variable {LOADER_BOOT_COUNT_PATH} names {found:?}, but the booted entry is {expected:?}")]
    BootCountPathMismatch { found: String, expected: String },
    #[error("EFI variable {LOADER_ENTRY_SELECTED} names {found:?}, but the booted slot's entry is {expected:?}")]
    EntrySelectedMismatch { found: String, expected: String },
}

/// Why a transition was refused; the state is then unchanged.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TransitionError {
    #[error("slot {0} is the booted slot: only the other slot can be staged")]
    TargetsBootedSlot(&'static str),
    #[error("version {0} is the booted version")]
    SameVersionAsBooted(String),
    #[error("the booted entry {0} is not blessed yet: staging now could leave no good entry")]
    BootedNotBlessed(String),
    #[error("version {0:?} cannot name an entry file")]
    BadVersion(String),
    #[error("the booted entry {0} is already blessed")]
    AlreadyBlessed(String),
    #[error("slot {0} has no boot entry")]
    NoEntry(&'static str),
    #[error("the other slot's entry {0} has not proven itself (still counting tries)")]
    OtherUnproven(String),
    #[error("the other slot's entry {0} spent its tries: that version failed here")]
    OtherFailed(String),
}

/// One step of writing the state, relative to [`ENTRIES_DIR`] on the ESP.
/// The caller applies them in order and syncs the ESP after each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileOp {
    /// Remove an entry file.
    Remove { file: String },
    /// Rename an entry file (the boot counter changes, the content not).
    Rename { from: String, to: String },
    /// Write the slot's root partition and its UKI
    /// ([`boot_entry::uki_path`]) with the staged version's payloads.
    /// Planned after the slot's old entry is gone and before its new one
    /// exists, so no entry ever points at a half-written slot.
    WritePayload { slot: Slot, version: String },
    /// Create an entry file with this content (temporary name, fsync,
    /// rename is the caller's business).
    Write { file: String, contents: String },
}

/// The A/B state: the entry of each slot, which slot is booted, and what
/// systemd-boot said about this boot. See the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AbState {
    booted: Slot,
    booted_partuuid: Option<String>,
    boot_count_path: Option<String>,
    entry_selected: Option<String>,
    /// As loaded.
    loaded: PerSlot<Option<Entry>>,
    /// As changed by the transitions.
    entries: PerSlot<Option<Entry>>,
    /// The slot whose payload must be written (set by `stage`).
    staged: Option<Slot>,
}

/// One value per slot (no indexing that could panic).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct PerSlot<T> {
    a: T,
    b: T,
}

impl<T> PerSlot<T> {
    fn get(&self, slot: Slot) -> &T {
        match slot {
            Slot::A => &self.a,
            Slot::B => &self.b,
        }
    }

    fn get_mut(&mut self, slot: Slot) -> &mut T {
        match slot {
            Slot::A => &mut self.a,
            Slot::B => &mut self.b,
        }
    }
}

/// The `PARTUUID=` a command line boots from (`dm-mod.waitfor=PARTUUID=...`
/// or `root=PARTUUID=...`).
pub fn partuuid_of(cmdline: &str) -> Option<String> {
    cmdline.split_whitespace().find_map(|w| {
        let v = w.strip_prefix("dm-mod.waitfor=").or_else(|| w.strip_prefix("root="))?;
        v.strip_prefix("PARTUUID=").map(|p| p.trim_matches('"').to_string())
    })
}

/// Decodes an efivarfs file holding a UTF-16LE string: a 4-byte attribute
/// prefix, then the string, optionally NUL-terminated.
pub fn parse_efi_string(name: &'static str, bytes: &[u8]) -> Result<String, LoadError> {
    let err = |why| LoadError::Variable { name, why };
    let text = bytes.get(4..).ok_or(err("shorter than its 4-byte attribute prefix"))?;
    if text.len() % 2 != 0 {
        return Err(err("odd number of bytes for a UTF-16LE string"));
    }
    let units: Vec<u16> = text
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c.first().copied().unwrap_or(0), c.get(1).copied().unwrap_or(0)]))
        .take_while(|u| *u != 0)
        .collect();
    let s = String::from_utf16(&units).map_err(|_| err("not valid UTF-16LE"))?;
    if s.is_empty() {
        return Err(err("empty string"));
    }
    Ok(s)
}

fn parse_entry(file: &str, text: &str) -> Result<Entry, LoadError> {
    let name = EntryName::parse(file).map_err(|e| LoadError::EntryName(file.to_string(), e))?;
    let line = |key: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.trim().split_once(char::is_whitespace)?;
            (k == key).then(|| v.trim().to_string())
        })
    };
    let options = line("options").unwrap_or_default();
    // A UKI entry has no options: its slot is the one its `efi` path is in.
    let slot = boot_entry::slot_of_entry(text).ok_or_else(|| LoadError::UnknownSlot { file: file.to_string() })?;
    if let Some(linux) = line("linux") {
        let expected = boot_entry::kernel_path(slot);
        if linux != expected {
            return Err(LoadError::KernelMismatch {
                file: file.to_string(),
                slot: slot.name(),
                found: linux,
                expected,
            });
        }
    }
    Ok(Entry { name, slot, partuuid: partuuid_of(&options), text: text.to_string() })
}

impl AbState {
    /// Loads the state from plain values:
    /// - `entries`: the file names in [`ENTRIES_DIR`] with their contents;
    ///   files not starting with `berth-` (other systems' entries) are ignored;
    /// - `cmdline`: the text of `/proc/cmdline` (the booted slot and PARTUUID);
    /// - `boot_count_path`, `entry_selected`: the bytes of the efivarfs files
    ///   of [`LOADER_BOOT_COUNT_PATH`] and [`LOADER_ENTRY_SELECTED`], `None`
    ///   when absent (no counter on this boot, or not booted by systemd-boot).
    ///
    /// The variables are checked against the entries: the counted path must
    /// be the booted slot's entry, the selected entry its identifier.
    pub fn load(
        entries: &[(String, String)],
        cmdline: &str,
        boot_count_path: Option<&[u8]>,
        entry_selected: Option<&[u8]>,
    ) -> Result<AbState, LoadError> {
        let mut slots: PerSlot<Option<Entry>> = PerSlot::default();
        for (file, text) in entries.iter().filter(|(f, _)| f.starts_with("berth-")) {
            let e = parse_entry(file, text)?;
            if let Some(first) = slots.get(e.slot) {
                return Err(LoadError::TwoEntriesForSlot {
                    first: first.file_name(),
                    second: file.clone(),
                    slot: e.slot.name(),
                });
            }
            let slot = e.slot;
            *slots.get_mut(slot) = Some(e);
        }
        let booted = slot_of(cmdline).ok_or(LoadError::CmdlineNoSlot)?;
        let booted_entry = slots.get(booted).as_ref().ok_or(LoadError::NoBootedEntry(booted.name()))?;

        let mut boot_count_path = boot_count_path.map(|b| parse_efi_string(LOADER_BOOT_COUNT_PATH, b)).transpose()?;
        if let Some(p) = &boot_count_path {
            let file = p.rsplit(['/', '\\']).next().unwrap_or(p);
            // The variable stays for the whole boot: once this boot is
            // blessed, it names the entry's old, counted name. Then the boot
            // is no longer counted.
            let blessed_since =
                booted_entry.is_blessed() && EntryName::parse(file).is_ok_and(|n| n.blessed() == booted_entry.name);
            if blessed_since {
                boot_count_path = None;
            } else if file != booted_entry.file_name() {
                return Err(LoadError::BootCountPathMismatch { found: p.clone(), expected: booted_entry.file_name() });
            }
        }
        let entry_selected = entry_selected.map(|b| parse_efi_string(LOADER_ENTRY_SELECTED, b)).transpose()?;
        if let Some(id) = &entry_selected {
            let expected = booted_entry.name.blessed().to_string();
            let with_conf = if id.ends_with(".conf") { id.clone() } else { format!("{id}.conf") };
            let matches = EntryName::parse(&with_conf).is_ok_and(|n| n.blessed().to_string() == expected);
            if !matches {
                return Err(LoadError::EntrySelectedMismatch { found: id.clone(), expected });
            }
        }
        Ok(AbState {
            booted,
            booted_partuuid: partuuid_of(cmdline),
            boot_count_path,
            entry_selected,
            loaded: slots.clone(),
            entries: slots,
            staged: None,
        })
    }

    /// The slot this system booted from.
    pub fn booted(&self) -> Slot {
        self.booted
    }

    /// The PARTUUID the booted root was set up from, if the command line names one.
    pub fn booted_partuuid(&self) -> Option<&str> {
        self.booted_partuuid.as_deref()
    }

    /// `LoaderBootCountPath` as loaded: set when this boot is being counted.
    pub fn boot_count_path(&self) -> Option<&str> {
        self.boot_count_path.as_deref()
    }

    /// `LoaderEntrySelected` as loaded.
    pub fn entry_selected(&self) -> Option<&str> {
        self.entry_selected.as_deref()
    }

    /// A slot's entry as the state is now (after the transitions so far).
    pub fn entry(&self, slot: Slot) -> Option<&Entry> {
        self.entries.get(slot).as_ref()
    }

    /// The booted slot's entry (always present: loading requires it).
    pub fn booted_entry(&self) -> Option<&Entry> {
        self.entry(self.booted)
    }

    /// Stages `version` into `target`, the other slot: its old entry goes,
    /// its partition and UKI are written, and a new entry with
    /// [`INITIAL_TRIES`] tries that boots the slot's UKI
    /// ([`boot_entry::uki_entry_text`]: the command line is the UKI's own,
    /// signed with it) is written last.
    ///
    /// Refused when `target` is the booted slot, when `version` is the
    /// booted version, or when the booted entry is not blessed (a failed
    /// new version would then fall back to an unproven one).
    pub fn stage(&mut self, version: &str, target: Slot) -> Result<(), TransitionError> {
        if target == self.booted {
            return Err(TransitionError::TargetsBootedSlot(target.name()));
        }
        let name = EntryName::new(version);
        if EntryName::parse(&name.to_string()).as_ref() != Ok(&name) {
            return Err(TransitionError::BadVersion(version.to_string()));
        }
        let booted = self.booted_entry().ok_or(TransitionError::NoEntry(self.booted.name()))?;
        if booted.name.version == version {
            return Err(TransitionError::SameVersionAsBooted(version.to_string()));
        }
        if !booted.is_blessed() {
            return Err(TransitionError::BootedNotBlessed(booted.file_name()));
        }
        let text = boot_entry::uki_entry_text(version, target);
        *self.entries.get_mut(target) = Some(Entry { name, slot: target, partuuid: None, text });
        self.staged = Some(target);
        Ok(())
    }

    /// Blesses this boot: the booted entry loses its counter, so
    /// systemd-boot stops counting it. Refused when it has none.
    pub fn bless(&mut self) -> Result<(), TransitionError> {
        let booted = self.booted;
        let e = self.entries.get_mut(booted).as_mut().ok_or(TransitionError::NoEntry(booted.name()))?;
        if e.is_blessed() {
            return Err(TransitionError::AlreadyBlessed(e.file_name()));
        }
        e.name = e.name.blessed();
        Ok(())
    }

    /// Marks a slot's entry bad (`+0`): systemd-boot sorts it after the
    /// others, so it boots only when nothing else is left.
    pub fn mark_bad(&mut self, slot: Slot) -> Result<(), TransitionError> {
        let e = self.entries.get_mut(slot).as_mut().ok_or(TransitionError::NoEntry(slot.name()))?;
        e.name.tries_left = Some(0);
        e.name.tries_done = None;
        Ok(())
    }

    /// Boots the other slot next, if it holds a good version, without ever
    /// pinning a default entry:
    /// - the other entry is blessed: the booted entry is marked bad (`+0`);
    /// - the other entry was marked bad by hand (`+0`, no tries done, as a
    ///   previous rollback leaves it): it is re-armed with [`INITIAL_TRIES`]
    ///   tries and the booted entry marked bad, so it boots next and is
    ///   blessed again by its health gate.
    ///
    /// Refused when the other slot has no entry, is still counting tries (a
    /// staged version not proven yet) or spent its tries (`+0-<done>`).
    pub fn rollback(&mut self) -> Result<(), TransitionError> {
        let other = self.booted.other();
        let o = self.entry(other).ok_or(TransitionError::NoEntry(other.name()))?;
        if o.is_spent() {
            return Err(TransitionError::OtherFailed(o.file_name()));
        }
        let rearm = o.name.is_bad();
        if !rearm && !o.is_blessed() {
            return Err(TransitionError::OtherUnproven(o.file_name()));
        }
        if self.booted_entry().is_none() {
            return Err(TransitionError::NoEntry(self.booted.name()));
        }
        if rearm {
            if let Some(o) = self.entries.get_mut(other).as_mut() {
                o.name.tries_left = Some(INITIAL_TRIES);
                o.name.tries_done = None;
            }
        }
        self.mark_bad(self.booted)
    }

    /// The file operations that take the ESP (and the staged slot) from the
    /// loaded state to this one, in a safe order: removals first (a staged
    /// slot's old entry goes before its partition is touched), then renames
    /// (counters), then the staged payload, then new entries last.
    pub fn plan(&self) -> Vec<FileOp> {
        let (mut removes, mut renames, mut payload, mut writes) = (vec![], vec![], vec![], vec![]);
        for slot in [Slot::A, Slot::B] {
            let staged = self.staged == Some(slot);
            match (self.loaded.get(slot), self.entries.get(slot)) {
                (None, None) => {}
                (Some(o), None) => removes.push(FileOp::Remove { file: o.file_name() }),
                (Some(o), Some(c)) if !staged && o.text == c.text => {
                    if o.name != c.name {
                        renames.push(FileOp::Rename { from: o.file_name(), to: c.file_name() });
                    }
                }
                (o, Some(c)) => {
                    if let Some(o) = o {
                        removes.push(FileOp::Remove { file: o.file_name() });
                    }
                    writes.push(FileOp::Write { file: c.file_name(), contents: c.text.clone() });
                }
            }
            if staged {
                if let Some(c) = self.entries.get(slot) {
                    payload.push(FileOp::WritePayload { slot, version: c.name.version.clone() });
                }
            }
        }
        removes.into_iter().chain(renames).chain(payload).chain(writes).collect()
    }
}

#[cfg(test)]
mod tests;
