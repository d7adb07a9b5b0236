//! PID1's boot deadline, the half of systemd's Automatic Boot Assessment
//! that a hang or a health gate that never passes needs: systemd-boot
//! counts a try before it boots an entry with a counter
//! (`berth-<v>+<left>-<done>.conf`) and tells the booted system through the
//! EFI variable `LoaderBootCountPath`. berth-updater blesses a healthy boot
//! (removes the counter, then creates [`BOOT_BLESSED`]); a counted boot
//! that has not got there by `gate.deadline` (the updater's settings) is
//! rebooted by PID1, cleanly, so the version spends its tries and
//! systemd-boot falls back to the other entry by itself.
//!
//! One exception: an entry that was already out of tries before this boot
//! (`+0-<done>` with more tries done than an entry is armed with,
//! [`INITIAL_TRIES`]). systemd-boot boots such an entry only when no
//! better one is left, and renames it to `+0-<done+1>` each time: a reboot
//! would boot it again, forever. PID1 then says so loudly and stays up, so
//! the machine can still be reached and repaired.
//!
//! The decision is a pure value ([`BootDeadline`]); PID1 supplies the
//! clock, the marker's existence and the reboot.
//!
//! [`BOOT_BLESSED`]: berth_layout::paths::BOOT_BLESSED

use std::io;
use std::path::Path;
use std::time::Duration;

use berth_updater::boot_entry::{EntryName, INITIAL_TRIES};
use berth_updater::state::{parse_efi_string, LOADER_BOOT_COUNT_PATH};

use super::system::System;

/// systemd-boot's `LoaderBootCountPath` in efivarfs (vendor GUID
/// 4a67b082-0a4c-41cf-b6c7-440b29bb8c4f, the Boot Loader Interface's).
pub const LOADER_BOOT_COUNT_VAR: &str =
    "/sys/firmware/efi/efivars/LoaderBootCountPath-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

/// The entry file systemd-boot counts this boot against
/// (`\loader\entries\berth-0.1.0+2-1.conf`), or `None` for a boot that is
/// not counted (a blessed entry, no systemd-boot, no EFI). An unreadable
/// or malformed variable is logged and counts as not counted: PID1 never
/// reboots on a guess.
pub fn counted_boot(sys: &dyn System) -> Option<String> {
    let bytes = match sys.read_file(Path::new(LOADER_BOOT_COUNT_VAR)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            crate::info!("boot counting: reading {LOADER_BOOT_COUNT_VAR}: {e}; no boot deadline");
            return None;
        }
    };
    match parse_efi_string(LOADER_BOOT_COUNT_PATH, &bytes) {
        Ok(path) => Some(path),
        Err(e) => {
            crate::info!("boot counting: {e}; no boot deadline");
            None
        }
    }
}

/// The deadline of a counted boot, on CLOCK_MONOTONIC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootDeadline {
    /// The counted entry (`LoaderBootCountPath`).
    pub entry: String,
    /// `gate.deadline`: how long after PID1 started the boot must be blessed.
    pub deadline: Duration,
    /// CLOCK_MONOTONIC when PID1 started.
    pub start: Duration,
}

/// What to do when the deadline is looked at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not yet: look again after this long.
    Wait(Duration),
    /// Blessed in time: nothing more to do.
    Blessed,
    /// Passed without a bless: say this line on the console and reboot.
    Reboot(String),
    /// Passed without a bless, but the entry has no try left to spend: say
    /// this line on the console and stay up.
    StayUp(String),
}

impl BootDeadline {
    /// `Some` for a counted boot (see [`counted_boot`]).
    pub fn new(counted: Option<String>, deadline: Duration, start: Duration) -> Option<BootDeadline> {
        counted.map(|entry| BootDeadline { entry, deadline, start })
    }

    /// Whether the entry was out of tries before this boot: `+0-<done>`
    /// with `done` above [`INITIAL_TRIES`] (systemd-boot has renamed a
    /// `+0-<done-1>` entry, the only kind it boots once none better is
    /// left).
    pub fn out_of_tries(&self) -> bool {
        let file = self.entry.rsplit(['\\', '/']).next().unwrap_or(&self.entry);
        EntryName::parse(file)
            .is_ok_and(|n| n.tries_left == Some(0) && n.tries_done.is_some_and(|done| done > INITIAL_TRIES))
    }

    /// The line that says the deadline is running.
    pub fn armed_line(&self) -> String {
        format!(
            "boot counted ({}): not blessed within {} of PID1's start, it is rebooted",
            self.entry,
            humantime::format_duration(self.deadline)
        )
    }

    /// The decision at `now` (CLOCK_MONOTONIC), given whether the marker
    /// [`BOOT_BLESSED`](berth_layout::paths::BOOT_BLESSED) exists. A
    /// blessed boot is never rebooted, however late it is looked at.
    pub fn verdict(&self, now: Duration, blessed: bool) -> Verdict {
        if blessed {
            return Verdict::Blessed;
        }
        let due = self.start.saturating_add(self.deadline);
        if now < due {
            return Verdict::Wait(due - now);
        }
        let within = humantime::format_duration(self.deadline);
        if self.out_of_tries() {
            return Verdict::StayUp(format!(
                "boot not blessed within {within} (health gate did not pass), but {} has no tries left and \
                 systemd-boot had no better entry: staying up",
                self.entry
            ));
        }
        Verdict::Reboot(format!(
            "boot not blessed within {within} (health gate did not pass): rebooting; systemd-boot counts this try"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::fake::FakeSystem;

    fn efi_string(s: &str) -> Vec<u8> {
        let mut v = vec![6, 0, 0, 0];
        for u in s.encode_utf16().chain([0]) {
            v.extend_from_slice(&u.to_le_bytes());
        }
        v
    }

    const ENTRY: &str = "\\loader\\entries\\berth-0.1.0+2-1.conf";

    #[test]
    fn a_boot_is_counted_when_systemd_boot_says_so() {
        let mut sys = FakeSystem::berth(1024, 1024);
        assert_eq!(counted_boot(&sys), None, "no variable: not counted");
        sys.files.insert(LOADER_BOOT_COUNT_VAR.into(), efi_string(ENTRY));
        assert_eq!(counted_boot(&sys).as_deref(), Some(ENTRY));
        sys.files.insert(LOADER_BOOT_COUNT_VAR.into(), vec![6, 0, 0]);
        assert_eq!(counted_boot(&sys), None, "malformed: not counted, never a guessed reboot");
    }

    #[test]
    fn an_uncounted_boot_has_no_deadline() {
        assert_eq!(BootDeadline::new(None, Duration::from_secs(300), Duration::ZERO), None);
    }

    #[test]
    fn a_counted_boot_waits_until_the_deadline_then_reboots_unless_blessed() {
        let start = Duration::from_secs(3);
        let d = BootDeadline::new(Some(ENTRY.into()), Duration::from_secs(20), start).unwrap();
        assert_eq!(d.verdict(Duration::from_secs(10), false), Verdict::Wait(Duration::from_secs(13)));
        assert_eq!(d.verdict(Duration::from_secs(10), true), Verdict::Blessed);
        assert_eq!(d.verdict(Duration::from_secs(23), true), Verdict::Blessed, "late but blessed");
        assert_eq!(
            d.verdict(Duration::from_secs(23), false),
            Verdict::Reboot(
                "boot not blessed within 20s (health gate did not pass): rebooting; systemd-boot counts this try"
                    .into()
            )
        );
        let d = BootDeadline { deadline: Duration::from_secs(300), ..d };
        assert!(!d.out_of_tries());
        assert!(matches!(d.verdict(Duration::from_secs(400), false), Verdict::Reboot(l) if l.contains("within 5m ")));
        assert_eq!(
            d.armed_line(),
            format!("boot counted ({ENTRY}): not blessed within 5m of PID1's start, it is rebooted")
        );
    }

    #[test]
    fn the_last_try_reboots_but_an_entry_already_out_of_tries_stays_up() {
        let at = |entry: &str| {
            let d = BootDeadline::new(Some(entry.into()), Duration::from_secs(20), Duration::ZERO).unwrap();
            d.verdict(Duration::from_secs(21), false)
        };
        // +1-2 renamed to +0-3: the third and last try, spent by a reboot
        // (then systemd-boot prefers any entry that is not bad).
        assert!(matches!(at("\\loader\\entries\\berth-0.1.0+0-3.conf"), Verdict::Reboot(_)));
        // +0-3 renamed to +0-4: booted although bad, so nothing better is
        // left; a reboot would only boot it again.
        assert_eq!(
            at("\\loader\\entries\\berth-0.1.0+0-4.conf"),
            Verdict::StayUp(
                "boot not blessed within 20s (health gate did not pass), but \\loader\\entries\\berth-0.1.0+0-4.conf \
                 has no tries left and systemd-boot had no better entry: staying up"
                    .into()
            )
        );
        assert!(matches!(at("\\loader\\entries\\other.conf"), Verdict::Reboot(_)), "not Berth's name: counted");
    }
}
