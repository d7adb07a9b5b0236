//! Boot Loader Specification entries and their boot counters.
//!
//! An entry is `berth-<version>[+<left>[-<done>]].conf`: systemd-boot
//! decrements `left` and increments `done` on every try, and an entry at
//! `+0` is "bad" and sorted last, so the other slot boots. Blessing a boot
//! drops the counter. Berth never pins a default entry.

use std::fmt;

use berth_layout::disk::Slot;

/// How many tries a newly installed entry gets.
pub const INITIAL_TRIES: u32 = 3;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryName {
    pub version: String,
    /// `None` once the boot was blessed (no counter in the name).
    pub tries_left: Option<u32>,
    pub tries_done: Option<u32>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a Berth boot entry name (berth-<version>[+<left>[-<done>]].conf)")]
pub struct EntryNameError(pub String);

impl EntryName {
    pub fn new(version: &str) -> EntryName {
        EntryName { version: version.to_string(), tries_left: Some(INITIAL_TRIES), tries_done: None }
    }

    pub fn parse(file: &str) -> Result<EntryName, EntryNameError> {
        let err = || EntryNameError(file.to_string());
        let stem = file.strip_prefix("berth-").and_then(|s| s.strip_suffix(".conf")).ok_or_else(err)?;
        let (version, counter) = match stem.rsplit_once('+') {
            Some((v, c)) => (v, Some(c)),
            None => (stem, None),
        };
        if version.is_empty() || version.contains('/') {
            return Err(err());
        }
        let (left, done) = match counter {
            None => (None, None),
            Some(c) => {
                let (l, d) = match c.split_once('-') {
                    Some((l, d)) => (l, Some(d)),
                    None => (c, None),
                };
                let l: u32 = l.parse().map_err(|_| err())?;
                let d: Option<u32> = d.map(str::parse).transpose().map_err(|_| err())?;
                (Some(l), d)
            }
        };
        Ok(EntryName { version: version.to_string(), tries_left: left, tries_done: done })
    }

    /// systemd-boot's "bad" state: counter at zero.
    pub fn is_bad(&self) -> bool {
        self.tries_left == Some(0)
    }

    /// The entry of a boot that came up healthy: the counter is removed.
    pub fn blessed(&self) -> EntryName {
        EntryName { version: self.version.clone(), tries_left: None, tries_done: None }
    }
}

impl fmt::Display for EntryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "berth-{}", self.version)?;
        if let Some(l) = self.tries_left {
            write!(f, "+{l}")?;
            if let Some(d) = self.tries_done {
                write!(f, "-{d}")?;
            }
        }
        write!(f, ".conf")
    }
}

/// Where a slot's kernel lives on the ESP when its entry names a kernel
/// and its command line (`linux` + `options`: what the updater installs).
pub fn kernel_path(slot: Slot) -> String {
    format!("/berth/{}/linux.efi", slot.name())
}

/// Where a slot's signed Unified Kernel Image lives on the ESP: the kernel,
/// its command line (with the verity root hash) and os-release in one
/// binary that Secure Boot firmware checks as a whole.
pub fn uki_path(slot: Slot) -> String {
    format!("/berth/{}/berth.efi", slot.name())
}

/// The text of a slot's entry that starts its UKI ([`uki_path`]): an
/// `efi` line and no `options`, since the command line is inside the
/// signed image (systemd-stub ignores one passed to it under Secure Boot).
/// The boot counter stays in the entry's file name, as for
/// [`entry_text`]'s entries.
pub fn uki_entry_text(version: &str, slot: Slot) -> String {
    format!(
        "title Berth {version} (slot {slot})\nversion {version}\nsort-key berth\nefi {uki}\n",
        slot = slot.name(),
        uki = uki_path(slot),
    )
}

/// The slot an entry's text boots: `berth.slot=` on its `options` line,
/// else the slot whose UKI its `efi` line names ([`slot_of_uki`]).
pub fn slot_of_entry(text: &str) -> Option<Slot> {
    let line = |key: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.trim().split_once(char::is_whitespace)?;
            (k == key).then(|| v.trim())
        })
    };
    line("options").and_then(berth_layout::cmdline::slot_of).or_else(|| line("efi").and_then(slot_of_uki))
}

/// The slot a UKI entry's `efi` path starts ([`uki_path`]), if it is one.
pub fn slot_of_uki(efi: &str) -> Option<Slot> {
    [Slot::A, Slot::B].into_iter().find(|s| uki_path(*s) == efi)
}

/// The text of a slot's entry file that names its kernel ([`kernel_path`])
/// and command line.
pub fn entry_text(version: &str, slot: Slot, cmdline: &str) -> String {
    format!(
        "title Berth {version} (slot {slot})\nversion {version}\nsort-key berth\nlinux {kernel}\noptions {cmdline}\n",
        slot = slot.name(),
        kernel = kernel_path(slot),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_the_counter_states() {
        for s in
            ["berth-1.0+3.conf", "berth-1.0+2-1.conf", "berth-1.0+0-3.conf", "berth-1.0.conf", "berth-2.0~rc1+1.conf"]
        {
            assert_eq!(EntryName::parse(s).unwrap().to_string(), s);
        }
        let n = EntryName::parse("berth-0.1.0+0-3.conf").unwrap();
        assert!(n.is_bad());
        assert_eq!(n.version, "0.1.0");
        assert_eq!(n.blessed().to_string(), "berth-0.1.0.conf");
        assert_eq!(EntryName::new("0.1.0").to_string(), "berth-0.1.0+3.conf");
    }

    #[test]
    fn foreign_names_are_rejected() {
        for s in ["loader.conf", "berth-.conf", "berth-1.0+x.conf", "berth-1.0+1-y.conf", "debian-1.conf"] {
            assert!(EntryName::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn entry_text_names_slot_kernel_and_options() {
        let t = entry_text("0.1.0", Slot::A, "root=/dev/dm-0");
        assert!(t.contains("linux /berth/a/linux.efi\n"));
        assert!(t.contains("options root=/dev/dm-0\n"));
        assert!(t.contains("version 0.1.0\n"));
    }

    #[test]
    fn uki_entries_name_the_image_and_no_options() {
        let t = uki_entry_text("0.1.0", Slot::B);
        assert!(t.contains("efi /berth/b/berth.efi\n"), "{t}");
        assert!(!t.contains("options") && !t.contains("linux "), "{t}");
        assert_eq!(slot_of_uki("/berth/b/berth.efi"), Some(Slot::B));
        assert_eq!(slot_of_uki("/berth/a/linux.efi"), None);
    }
}
