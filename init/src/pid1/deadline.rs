//! The boot deadline as PID1 runs it ([`crate::boot::deadline`] decides):
//! armed once early boot is over (the updater's settings are on /etc),
//! looked at when it is due, and a clean reboot when it passed unblessed.

use std::path::Path;
use std::time::{Duration, Instant};

use berth_layout::paths::{BOOT_BLESSED, UPDATER_CONFIG, UPDATER_DEFAULT_CONFIG};
use berth_updater::config;

use super::Pid1;
use crate::boot::deadline::{BootDeadline, Verdict};
use crate::power::Action;
use crate::{info, log, timing};

impl Pid1 {
    /// For a counted boot: reads `gate.deadline` from the updater's
    /// settings (a bad file is logged, naming file, line and key, and the
    /// fallback used) and schedules the look at it. Once.
    pub(super) fn arm_deadline(&mut self) {
        let Some(counted) = self.counted.take() else {
            return;
        };
        let (settings, errors) = config::load_or_fallback(Path::new(UPDATER_DEFAULT_CONFIG), Path::new(UPDATER_CONFIG));
        for e in errors {
            info!("updater settings: {e}; using the defaults for what it sets");
        }
        let Some(deadline) = BootDeadline::new(Some(counted), settings.gate.deadline, self.start) else {
            return;
        };
        info!("{}", deadline.armed_line());
        self.deadline = Some((deadline, Instant::now()));
        self.deadline_due();
    }

    /// Looks at the deadline: later again, done, or the reboot.
    pub(super) fn deadline_due(&mut self) {
        let Some((deadline, _)) = self.deadline.take() else {
            return;
        };
        match deadline.verdict(timing::monotonic_now(), Path::new(BOOT_BLESSED).exists()) {
            Verdict::Wait(left) => {
                // The marker may appear any time; the deadline is what counts,
                // but a bless is noticed within a minute for the log.
                let next = Instant::now() + left.min(Duration::from_secs(60));
                self.deadline = Some((deadline, next));
            }
            Verdict::Blessed => info!("boot blessed ({BOOT_BLESSED}): boot deadline off"),
            Verdict::StayUp(line) => log::line(format!("{}{line}", log::PREFIX)),
            Verdict::Reboot(line) => {
                // Loud: on the console, whatever the log level, before the
                // units stop.
                log::line(format!("{}{line}", log::PREFIX));
                self.shutdown(Action::Reboot, "boot not blessed by its deadline");
            }
        }
    }
}
