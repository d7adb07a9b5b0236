//! Early boot as PID1 runs it: the two phases of [`crate::boot`] (mounts,
//! then storage and identity), each on a plain thread so that the event
//! loop keeps reaping the tools they run; then user data (found and
//! applied on a thread of its own, before the units are read, so that
//! they see its result); then the services. A failure of the user data
//! step never stops the boot: the machine comes up with its defaults. The
//! admin shell starts once the boot's units are ready (the ready line) or
//! [`SHELL_IDLE_LIMIT`] after the services started, whichever is first, as
//! systemd starts its serial getty (`Type=idle`); at once on an emergency;
//! and when user data is slow.

use std::future::pending;
use std::io;
use std::time::Duration;

use tokio::sync::oneshot;

use super::Pid1;
use crate::boot::data::Prepared;
use crate::boot::{self, BootFailure, BootReport, PhaseOne, RealSystem};
use crate::power::ShutdownFlag;
use crate::provision::{failed_status, provision_at_boot};
use crate::{info, journal, log};
use berth_provision::machine::BootOutcome;

type Pending<T> = oneshot::Receiver<T>;

/// While user data is applied at boot, how often the console says the
/// units wait for it.
pub(super) const USER_DATA_REMINDER: Duration = Duration::from_secs(30);
type Outcome<T> = Result<T, oneshot::error::RecvError>;

/// How long after the services start the admin shell waits at most for
/// the ready line: systemd's limit on a `Type=idle` unit, which its serial
/// getty is. Its exec (busybox, from a cold page cache) is then not among
/// the units' starts, which use every vCPU of a booting VM.
pub(super) const SHELL_IDLE_LIMIT: Duration = crate::supervisor::IDLE_LIMIT;

/// Where early boot is.
pub(super) enum Boot {
    NotStarted,
    Mounting(Pending<PhaseOne>),
    Storage(Pending<Result<BootReport, BootFailure>>),
    /// User data; `first_boot` is for the services that start after it.
    Provisioning {
        rx: Pending<(BootOutcome, Vec<String>)>,
        first_boot: bool,
    },
    Done,
}

/// A phase finished (or its thread vanished).
pub(super) enum BootEvent {
    Mounts(Outcome<PhaseOne>),
    Storage(Outcome<Result<BootReport, BootFailure>>),
    Provisioned(Outcome<(BootOutcome, Vec<String>)>, bool),
}

/// Resolves when the running phase has a result; never while none runs.
pub(super) async fn boot_progress(boot: &mut Boot) -> BootEvent {
    match boot {
        Boot::Mounting(rx) => BootEvent::Mounts(rx.await),
        Boot::Storage(rx) => BootEvent::Storage(rx.await),
        Boot::Provisioning { rx, first_boot } => BootEvent::Provisioned(rx.await, *first_boot),
        Boot::NotStarted | Boot::Done => pending().await,
    }
}

/// Runs a boot phase on its own thread; it blocks on the tools it runs,
/// which this loop reaps.
fn spawn_phase<T: Send + 'static>(
    name: &str,
    shutdown: &ShutdownFlag,
    phase: impl FnOnce(&mut RealSystem) -> T + Send + 'static,
) -> io::Result<Pending<T>> {
    let (tx, rx) = oneshot::channel();
    let shutdown = shutdown.clone();
    std::thread::Builder::new().name(name.to_string()).spawn(move || {
        let mut sys = RealSystem::new(shutdown);
        let _ = tx.send(phase(&mut sys));
    })?;
    Ok(rx)
}

impl Pid1 {
    pub(super) fn advance_boot(&mut self) {
        if let Boot::NotStarted = self.boot {
            boot::readahead::spawn(std::path::Path::new(berth_layout::paths::BOOT_READAHEAD));
            self.boot = match spawn_phase("boot-mounts", &self.shutdown_flag, |sys| boot::phase_one(sys)) {
                Ok(rx) => Boot::Mounting(rx),
                Err(e) => {
                    self.enter_emergency("mounts", &format!("starting the boot thread: {e}"));
                    self.start_shell();
                    Boot::Done
                }
            };
        }
    }

    pub(super) fn mounts_done(&mut self, r: Outcome<PhaseOne>) {
        // Whatever of /dev and /sys exists now is used, even after a
        // failure: the emergency shell and the power button need them.
        if let Err(e) = log::stdio_to_console() {
            info!("stdio on {}: {e}", log::CONSOLE);
        }
        self.watch_power_buttons();
        let r = r.map(|one| {
            self.watchdog = one.watchdog;
            self.counted = one.counted;
            one.mounted
        });
        match r {
            Ok(Ok(())) => {
                self.boot =
                    match spawn_phase("boot-storage", &self.shutdown_flag, |sys| boot::storage_and_identity(sys)) {
                        Ok(rx) => Boot::Storage(rx),
                        Err(e) => {
                            self.enter_emergency("data partition", &format!("starting the boot thread: {e}"));
                            self.start_shell();
                            Boot::Done
                        }
                    };
            }
            Ok(Err(failure)) => {
                self.boot = Boot::Done;
                self.enter_emergency(&failure.step.to_string(), &failure.error);
                self.start_shell();
            }
            Err(_) => {
                self.boot = Boot::Done;
                self.enter_emergency("mounts", &"the boot thread ended without a result");
                self.start_shell();
            }
        }
        if let Boot::Done = self.boot {
            // An emergency in a counted boot: the deadline still runs out,
            // so a version that cannot mount its API filesystems falls back.
            self.arm_deadline();
        }
    }

    pub(super) fn storage_done(&mut self, r: Outcome<Result<BootReport, BootFailure>>) {
        self.boot = Boot::Done;
        // /etc is mounted (or never will be): the updater's settings can be read.
        self.arm_deadline();
        match r {
            Ok(Ok(report)) => {
                for line in report.lines() {
                    info!("{line}");
                }
                if let Some(j) = journal::global() {
                    if let Err(e) = j.attach(berth_layout::paths::LOG_DIR, Duration::from_secs(2)) {
                        info!("journal: {}: {e}", berth_layout::paths::LOG_DIR);
                    }
                }
                // The admin shell starts after the services (see `provisioned`).
                self.start_provisioning(report.machine_id, matches!(report.data.prepared, Prepared::Formatted { .. }));
            }
            Ok(Err(failure)) => {
                self.enter_emergency(&failure.step.to_string(), &failure.error);
                self.start_shell();
            }
            Err(_) => {
                self.enter_emergency("data partition", &"the boot thread ended without a result");
                self.start_shell();
            }
        }
    }

    /// User data: probed for and applied on a boot thread, while this loop
    /// reaps the tools it runs. The services start when it is done.
    fn start_provisioning(&mut self, machine_id: String, first_boot: bool) {
        let shutdown = self.shutdown_flag.clone();
        match spawn_phase("boot-userdata", &self.shutdown_flag, move |_| {
            super::services::page_in_units();
            provision_at_boot(shutdown, machine_id)
        }) {
            Ok(rx) => {
                self.boot = Boot::Provisioning { rx, first_boot };
                let now = std::time::Instant::now();
                self.user_data_slow = Some((now, now + USER_DATA_REMINDER));
            }
            Err(e) => {
                let why = format!("user data: starting the boot thread: {e}; booting with the defaults");
                info!("{why}");
                self.provisioning.set_status(failed_status(&why));
                self.start_services(first_boot);
                self.shell_after_services();
            }
        }
    }

    pub(super) fn provisioned(&mut self, r: Outcome<(BootOutcome, Vec<String>)>, first_boot: bool) {
        self.boot = Boot::Done;
        self.user_data_slow = None;
        match r {
            Ok((outcome, lines)) => {
                for line in lines {
                    info!("{line}");
                }
                if let Some(until) = outcome.status.trial_until {
                    self.arm_trial(super::provision::TrialTimer::Arm(until));
                }
                self.provisioning.set_status(outcome.status);
            }
            Err(_) => {
                // Its thread panicked (a bug): nothing is known of what it did.
                let why = "user data: the boot step ended without a result; booting with the defaults";
                info!("{why}");
                self.provisioning.set_status(failed_status(why));
            }
        }
        self.start_services(first_boot);
        self.shell_after_services();
    }

    /// The admin shell once the services are started: at the ready line
    /// ([`Pid1::print_ready`]) or after [`SHELL_IDLE_LIMIT`], whichever is
    /// first. A shell already started (user data was slow) is left alone.
    fn shell_after_services(&mut self) {
        if self.shell.last_start.is_none() && !self.ready_printed {
            self.shell.next_attempt = Some(std::time::Instant::now() + SHELL_IDLE_LIMIT);
        }
    }
}
