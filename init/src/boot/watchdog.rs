//! The hardware watchdog (Linux watchdog API, `Documentation/watchdog/
//! watchdog-api.rst`): PID1 opens it in boot phase one, sets its timeout and
//! feeds it from its own event loop, so a hung event loop or a hung kernel
//! stops the feeding and the machine resets (spending one try of a counted
//! boot: systemd-boot then falls back by itself).
//!
//! At shutdown the timeout becomes [`SHUTDOWN_TIMEOUT`]; it is fed every
//! second by the loop that waits for the units to stop, then at each step
//! until just before reboot(2); a reboot leaves it armed (a firmware or
//! loader that hangs still resets), a poweroff disarms it (magic close).
//!
//! The device is behind [`WatchdogDevice`] (opened through
//! [`System::open_watchdog`]), so this is tested without /dev.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::system::System;
pub use super::system::WatchdogDevice;
use crate::power::Action;

/// Where to look, in order: the first watchdog's own node (the character
/// device of the watchdog core), then the legacy misc device (the same
/// watchdog, for drivers that register only that).
pub const DEVICES: [&str; 2] = ["/dev/watchdog0", "/dev/watchdog"];

/// While the machine runs: 60 s. The event loop feeds every quarter of it
/// (15 s), so it takes four missed feeds in a row, a minute of a stuck
/// loop, to reset; long enough that a loaded machine (TCG, e2fsck and
/// resize2fs on the boot threads, a slow disk) never trips it, short
/// enough that a hung machine is back within about a minute. Within every
/// common driver's range (i6300esb: 1..2046 s; iTCO: up to 613 s).
pub const RUNTIME_TIMEOUT: Duration = Duration::from_secs(60);

/// From the start of a shutdown until the firmware boots again: 10 min,
/// systemd's default `RebootWatchdogSec`. PID1's loop is blocked in
/// shutdown then: the loop waiting for the units to stop feeds it every
/// second (that wait may outlast this timeout: each unit has its own
/// stop_timeout), each later step feeds it once; a reboot leaves it
/// armed, so a hung shutdown, firmware or loader still resets.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(600);

/// The armed watchdog PID1 holds.
pub struct Watchdog {
    dev: Box<dyn WatchdogDevice>,
    path: PathBuf,
    identity: String,
    timeout: Duration,
    /// A feed failed and this was said once; said again when it works.
    feed_failing: bool,
}

impl fmt::Debug for Watchdog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Watchdog({}, {:?}, {:?})", self.path.display(), self.identity, self.timeout)
    }
}

impl Watchdog {
    /// Opens the first of [`DEVICES`] that exists, sets [`RUNTIME_TIMEOUT`]
    /// and feeds it once. Logs one line either way: the device, its
    /// identity and timeout, or that there is none (then `None`: the
    /// machine runs without one).
    pub fn arm(sys: &mut dyn System) -> Option<Watchdog> {
        let Some(path) = DEVICES.iter().map(Path::new).find(|p| sys.exists(p)) else {
            let [first, legacy] = DEVICES;
            crate::info!("watchdog: no {first} or {legacy}: running without one");
            return None;
        };
        let mut dev = match sys.open_watchdog(path) {
            Ok(dev) => dev,
            Err(e) => {
                crate::info!("watchdog: opening {}: {e}; running without one", path.display());
                return None;
            }
        };
        let identity = dev.identity().unwrap_or_else(|e| format!("identity unknown: {e}"));
        let wanted = secs(RUNTIME_TIMEOUT);
        let took = match dev.set_timeout(wanted) {
            Ok(took) => took,
            Err(e) => {
                // Open, so counting with the driver's own timeout: keep
                // feeding at a quarter of that.
                let took = dev.timeout().unwrap_or(wanted);
                crate::info!(
                    "watchdog: setting the timeout of {} to {wanted} s: {e}; it stays {took} s",
                    path.display()
                );
                took
            }
        };
        let timeout = Duration::from_secs(u64::from(took.max(1)));
        let mut w = Watchdog { dev, path: path.to_path_buf(), identity, timeout, feed_failing: false };
        w.feed();
        crate::info!("watchdog: {} ({}) armed, timeout {} s", w.path.display(), w.identity, took);
        Some(w)
    }

    /// How often the event loop feeds it: a quarter of the timeout.
    pub fn feed_interval(&self) -> Duration {
        self.timeout / 4
    }

    /// The timeout in force.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// WDIOC_KEEPALIVE. A failure is logged once (and its end once).
    pub fn feed(&mut self) {
        match self.dev.keepalive() {
            Ok(()) if self.feed_failing => {
                self.feed_failing = false;
                crate::info!("watchdog: {} fed again", self.path.display());
            }
            Ok(()) => {}
            Err(e) if !self.feed_failing => {
                self.feed_failing = true;
                crate::info!("watchdog: feeding {}: {e}; the machine may reset", self.path.display());
            }
            Err(_) => {}
        }
    }

    /// Shutdown begins: the timeout becomes [`SHUTDOWN_TIMEOUT`] (PID1's
    /// loop, which fed it, is now busy stopping units; the wait for them
    /// feeds it from now on), then fed.
    pub fn shutdown_begins(&mut self) {
        let wanted = secs(SHUTDOWN_TIMEOUT);
        match self.dev.set_timeout(wanted) {
            Ok(took) => self.timeout = Duration::from_secs(u64::from(took.max(1))),
            Err(e) => crate::info!("watchdog: setting the shutdown timeout ({wanted} s): {e}"),
        }
        self.feed();
    }

    /// Just before reboot(2). A reboot leaves it armed with the shutdown
    /// timeout, fed one last time: the firmware and loader have that long
    /// to start the next boot. A poweroff disarms it (magic close), or the
    /// machine would come back on its own. Returns the console line.
    pub fn before_reboot(mut self, action: Action) -> String {
        let path = self.path.display().to_string();
        match action {
            Action::Reboot => {
                self.feed();
                // Left open on purpose: a close without `V` leaves it running.
                std::mem::forget(self.dev);
                format!("watchdog: {path} left armed for the reboot ({} s)", self.timeout.as_secs())
            }
            Action::Poweroff => match self.dev.disarm() {
                Ok(()) => format!("watchdog: {path} disarmed"),
                Err(e) => format!("watchdog: disarming {path}: {e}; it may reset the machine"),
            },
        }
    }
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::fake::{FakeSystem, FakeWatchdog};

    fn armed(sys: &mut FakeSystem) -> Watchdog {
        Watchdog::arm(sys).expect("a watchdog")
    }

    #[test]
    fn arms_the_first_device_with_a_minute_and_feeds_it() {
        let mut sys = FakeSystem::berth(1024, 1024);
        let log = FakeWatchdog::install(&mut sys, "/dev/watchdog0", "i6300ESB timer");
        FakeWatchdog::install(&mut sys, "/dev/watchdog", "legacy");
        let mut w = armed(&mut sys);
        assert_eq!(w.timeout(), Duration::from_secs(60));
        assert_eq!(w.feed_interval(), Duration::from_secs(15));
        assert_eq!(log.calls(), ["open /dev/watchdog0", "set-timeout 60", "keepalive"]);
        w.feed();
        assert_eq!(log.calls().last().unwrap(), "keepalive");
        assert_eq!(format!("{w:?}"), "Watchdog(/dev/watchdog0, \"i6300ESB timer\", 60s)");
    }

    #[test]
    fn falls_back_to_dev_watchdog_and_runs_without_one() {
        let mut sys = FakeSystem::berth(1024, 1024);
        assert!(Watchdog::arm(&mut sys).is_none(), "no device: none");
        let log = FakeWatchdog::install(&mut sys, "/dev/watchdog", "iTCO_wdt");
        let w = armed(&mut sys);
        assert_eq!(w.path, Path::new("/dev/watchdog"));
        assert_eq!(log.calls()[0], "open /dev/watchdog");
    }

    #[test]
    fn a_refused_timeout_keeps_the_drivers_and_feeds_at_a_quarter_of_it() {
        let mut sys = FakeSystem::berth(1024, 1024);
        let log = FakeWatchdog::install(&mut sys, "/dev/watchdog0", "x");
        log.refuse_timeouts(30);
        let w = armed(&mut sys);
        assert_eq!(w.timeout(), Duration::from_secs(30));
        assert_eq!(w.feed_interval(), Duration::from_millis(7500));
    }

    #[test]
    fn a_reboot_leaves_it_armed_for_ten_minutes_a_poweroff_disarms_it() {
        let mut sys = FakeSystem::berth(1024, 1024);
        let log = FakeWatchdog::install(&mut sys, "/dev/watchdog0", "i6300ESB timer");
        let mut w = armed(&mut sys);
        w.shutdown_begins();
        assert_eq!(w.timeout(), SHUTDOWN_TIMEOUT);
        let line = w.before_reboot(Action::Reboot);
        assert_eq!(line, "watchdog: /dev/watchdog0 left armed for the reboot (600 s)");
        assert_eq!(&log.calls()[3..], ["set-timeout 600", "keepalive", "keepalive"]);
        assert!(!log.calls().iter().any(|c| c.starts_with("disarm")), "no magic close on reboot");

        let mut sys = FakeSystem::berth(1024, 1024);
        let log = FakeWatchdog::install(&mut sys, "/dev/watchdog0", "i6300ESB timer");
        let mut w = armed(&mut sys);
        w.shutdown_begins();
        assert_eq!(w.before_reboot(Action::Poweroff), "watchdog: /dev/watchdog0 disarmed");
        assert_eq!(log.calls().last().unwrap(), "disarm (magic close)");
    }
}
