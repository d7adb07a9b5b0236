//! PID1's event loop: signals, the reaper, early boot's progress, the admin
//! shell, the power button, the emergency reminder, the hardware watchdog's
//! feeding and the boot deadline.
//!
//! All state lives in [`Pid1`], outside the tokio runtime, and the boot
//! steps run on plain threads: when a bug panics out of the loop, `main`
//! builds a new runtime and calls [`Pid1::run`] again, and nothing that was
//! in flight (a running mke2fs, the shell) is lost with the old runtime.

mod deadline;
mod early_boot;
pub mod emergency;
pub mod power_button;
pub mod provision;
pub mod services;
pub mod shell;
pub mod shutdown;
mod signals;

use std::future::pending;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use berth_layout::paths::{ADMIN_CONSOLE, SHELL};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Interval, MissedTickBehavior};

use crate::boot::deadline::BootDeadline;
use crate::boot::watchdog::Watchdog;
use crate::journal::{self, Journal};
use crate::power::{self, Action, ShutdownFlag};
use crate::reaper::{ExitStatus, Reaper};
use crate::status::UnitState;
use crate::supervisor::Settle;
use crate::{info, log, timing};
use early_boot::{boot_progress, Boot, BootEvent};
use provision::{Provisioning, TrialTimer};
use services::Services;
use shutdown::RealOps;
pub use signals::signal_name;
use signals::Signals;

/// How long to wait before retrying a shell that could not be started.
const SHELL_RETRY: Duration = Duration::from_secs(10);
/// Reaping without SIGCHLD, should the signal handler be missing.
const REAP_FALLBACK: Duration = Duration::from_secs(1);
const REAP_BACKSTOP: Duration = Duration::from_secs(30);
/// Shutdown gives the units at least this long in all to stop (each also
/// has its own stop timeout, and longer ones are waited for: see
/// `SupervisorHandle::stop_all_blocking`); what is left is then killed.
const STOP_ALL_LIMIT: Duration = Duration::from_secs(90);
/// While the units stop, the loop waiting for them feeds the hardware
/// watchdog this often: far within any timeout it may have.
const STOP_FEED_PERIOD: Duration = Duration::from_secs(1);
/// A power request from the control API waits this long, so that its reply
/// leaves before shutdown takes over this thread.
const POWER_REPLY_GRACE: Duration = Duration::from_millis(200);

#[derive(Default)]
struct ShellState {
    running: Option<oneshot::Receiver<ExitStatus>>,
    /// The running shell's pid, also its session and process group.
    pid: Option<i32>,
    last_start: Option<Instant>,
    next_attempt: Option<Instant>,
    announced: bool,
}

enum Event {
    Signal(i32),
    Boot(BootEvent),
    ShellExited,
    ShellDue,
    PowerButton(PathBuf),
    EmergencyDue,
    PowerRequest(Action),
    PowerDue,
    Settled(Settle),
    FeedWatchdog,
    DeadlineDue,
    Trial(TrialTimer),
    TrialDue,
    UserDataSlow,
    Tick,
}

/// PID1's state, kept across a restart of its event loop.
pub struct Pid1 {
    /// CLOCK_MONOTONIC when PID1 started.
    start: Duration,
    reaper: &'static Reaper,
    boot: Boot,
    ready_printed: bool,
    /// The emergency line and when to print it again.
    emergency: Option<(String, Instant)>,
    shell: ShellState,
    buttons_started: bool,
    button_tx: mpsc::Sender<PathBuf>,
    button_rx: mpsc::Receiver<PathBuf>,
    services: Option<Services>,
    /// Whether the units have settled; the ready line waits for it.
    settle: Option<watch::Receiver<Settle>>,
    /// CLOCK_MONOTONIC µs of the ready line, for `berthctl analyze`.
    ready_us: Arc<AtomicU64>,
    power_tx: mpsc::Sender<Action>,
    power_rx: mpsc::Receiver<Action>,
    pending_power: Option<(Action, Instant)>,
    /// Raised when shutdown begins; the boot threads hold clones.
    shutdown_flag: ShutdownFlag,
    /// The hardware watchdog, armed in boot phase one, fed by the loop.
    watchdog: Option<Watchdog>,
    /// The entry systemd-boot counts this boot against, until the
    /// deadline is armed.
    counted: Option<String>,
    /// A counted boot's deadline and when to look at it next.
    deadline: Option<(BootDeadline, Instant)>,
    /// User data's state (the boot step's outcome, `config apply`).
    provisioning: Arc<Provisioning>,
    /// The control API arms and disarms the trial timer through this.
    trial_rx: mpsc::UnboundedReceiver<TrialTimer>,
    /// When a `config apply --try` reverts unless confirmed.
    trial: Option<Instant>,
    /// While the boot step of user data runs: when it began, and when to
    /// say on the console that the units still wait for it.
    user_data_slow: Option<(Instant, Instant)>,
}

async fn until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => pending().await,
    }
}

/// The watchdog's feeding ticks, at a quarter of its timeout; never
/// without one. The interval belongs to the running tokio runtime, so it
/// is made in the loop ([`Pid1::event_loop`]), not kept in [`Pid1`].
async fn feed_tick(feeder: &mut Option<Interval>) {
    match feeder {
        Some(i) => {
            i.tick().await;
        }
        None => pending().await,
    }
}

async fn settle_change(rx: &mut Option<watch::Receiver<Settle>>) -> Settle {
    match rx {
        Some(r) => {
            if r.changed().await.is_err() {
                // The supervisor is gone; nothing will settle any more.
                pending::<()>().await;
            }
            r.borrow_and_update().clone()
        }
        None => pending().await,
    }
}

async fn shell_exit(rx: &mut Option<oneshot::Receiver<ExitStatus>>) {
    match rx {
        // An error means the waiter was dropped; either way the shell is gone.
        Some(rx) => {
            let _ = rx.await;
        }
        None => pending().await,
    }
}

impl Pid1 {
    pub fn new(start: Duration) -> Pid1 {
        let (button_tx, button_rx) = mpsc::channel(4);
        let (power_tx, power_rx) = mpsc::channel(4);
        let shutdown_flag = ShutdownFlag::default();
        let (provisioning, trial_rx) = Provisioning::new(provision::Place::machine(shutdown_flag.clone()));
        // Service logs and PID1's own, held in memory until /var is mounted.
        match Journal::start(journal::LogLimits::default()) {
            Ok(j) => {
                if journal::install(j).is_err() {
                    info!("journal: already installed");
                }
            }
            Err(e) => info!("journal: {e}; service output is not kept"),
        }
        Pid1 {
            start,
            reaper: Reaper::global(),
            boot: Boot::NotStarted,
            ready_printed: false,
            emergency: None,
            shell: ShellState::default(),
            buttons_started: false,
            button_tx,
            button_rx,
            services: None,
            settle: None,
            ready_us: Arc::new(AtomicU64::new(0)),
            power_tx,
            power_rx,
            pending_power: None,
            shutdown_flag,
            watchdog: None,
            counted: None,
            deadline: None,
            provisioning: Arc::new(provisioning),
            trial_rx,
            trial: None,
            user_data_slow: None,
        }
    }

    /// Runs the event loop. Returns only when no runtime could be built;
    /// the caller tries again.
    pub fn run(&mut self) {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                info!("cannot build the event loop: {e}");
                return;
            }
        };
        rt.block_on(self.event_loop());
    }

    async fn event_loop(&mut self) {
        let mut signals = Signals::install();
        // Children that exited before SIGCHLD was handled.
        self.reaper.reap();
        // After a panic this is a new runtime: the API's tasks died with the old one.
        if let Some(s) = &mut self.services {
            s.ensure_server();
        }
        let mut feeder: Option<Interval> = None;
        loop {
            self.advance_boot();
            if let (None, Some(w)) = (&feeder, &mut self.watchdog) {
                // A new loop (first, or after a panic): fed now, then on ticks.
                w.feed();
                let period = w.feed_interval();
                let mut i = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                i.set_missed_tick_behavior(MissedTickBehavior::Delay);
                feeder = Some(i);
            }
            let event = self.next_event(&mut signals, &mut feeder).await;
            self.handle(event);
        }
    }

    async fn next_event(&mut self, signals: &mut Signals, feeder: &mut Option<Interval>) -> Event {
        let backstop = if signals.complete { REAP_BACKSTOP } else { REAP_FALLBACK };
        let emergency_due = self.emergency.as_ref().map(|(_, t)| *t);
        tokio::select! {
            sig = signals.recv() => Event::Signal(sig),
            b = boot_progress(&mut self.boot) => Event::Boot(b),
            () = shell_exit(&mut self.shell.running) => Event::ShellExited,
            () = until(self.shell.next_attempt) => Event::ShellDue,
            Some(dev) = self.button_rx.recv() => Event::PowerButton(dev),
            () = until(emergency_due) => Event::EmergencyDue,
            Some(action) = self.power_rx.recv() => Event::PowerRequest(action),
            () = until(self.pending_power.map(|(_, t)| t)) => Event::PowerDue,
            s = settle_change(&mut self.settle) => Event::Settled(s),
            () = feed_tick(feeder) => Event::FeedWatchdog,
            () = until(self.deadline.as_ref().map(|(_, t)| *t)) => Event::DeadlineDue,
            Some(t) = self.trial_rx.recv() => Event::Trial(t),
            () = until(self.trial) => Event::TrialDue,
            () = until(self.user_data_slow.map(|(_, t)| t)) => Event::UserDataSlow,
            () = tokio::time::sleep(backstop) => Event::Tick,
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Signal(libc::SIGCHLD) | Event::Tick => {
                self.reaper.reap();
            }
            Event::Signal(sig) => {
                if let Some(action) = power::action_for_signal(sig) {
                    self.shutdown(action, signal_name(sig));
                }
            }
            Event::Boot(BootEvent::Mounts(r)) => self.mounts_done(r),
            Event::Boot(BootEvent::Storage(r)) => self.storage_done(r),
            Event::Boot(BootEvent::Provisioned(r, first_boot)) => self.provisioned(r, first_boot),
            Event::ShellExited => {
                self.shell.running = None;
                self.shell.pid = None;
                self.shell.next_attempt = Some(shell::next_start(self.shell.last_start, Instant::now()));
            }
            Event::ShellDue => self.start_shell(),
            Event::PowerButton(dev) => {
                self.shutdown(Action::Poweroff, &format!("power button {}", dev.display()));
            }
            Event::PowerRequest(action) => {
                if self.pending_power.is_none() {
                    self.pending_power = Some((action, Instant::now() + POWER_REPLY_GRACE));
                }
            }
            Event::PowerDue => {
                if let Some((action, _)) = self.pending_power.take() {
                    self.shutdown(action, "requested over the control API");
                }
            }
            Event::Settled(s) => self.units_settled(&s),
            Event::FeedWatchdog => {
                if let Some(w) = &mut self.watchdog {
                    w.feed();
                }
            }
            Event::DeadlineDue => self.deadline_due(),
            Event::Trial(t) => self.arm_trial(t),
            Event::TrialDue => self.trial_due(),
            Event::UserDataSlow => {
                if let Some((began, next)) = &mut self.user_data_slow {
                    info!(
                        "user data: still being applied after {} s; the units start when it is done",
                        began.elapsed().as_secs()
                    );
                    *next = Instant::now() + early_boot::USER_DATA_REMINDER;
                }
                // The shell would otherwise wait for the services; once
                // started, its restarts keep their own backoff.
                if self.shell.last_start.is_none() {
                    self.start_shell();
                }
            }
            Event::EmergencyDue => {
                if let Some((line, next)) = &mut self.emergency {
                    log::line(line.clone());
                    *next = Instant::now() + emergency::REPEAT;
                }
            }
        }
    }

    pub(super) fn start_services(&mut self, first_boot: bool) {
        match Services::start(
            first_boot,
            self.start,
            self.ready_us.clone(),
            self.power_tx.clone(),
            self.provisioning.clone(),
        ) {
            Ok(services) => {
                let settle = services.settle.clone();
                let now = settle.borrow().clone();
                self.settle = Some(settle);
                self.services = Some(services);
                self.units_settled(&now);
            }
            Err(e) => {
                info!("service manager: {e}; no services run");
                self.print_ready(&[]);
            }
        }
    }

    /// Arms (or disarms) the timer of a `config apply --try`.
    pub(super) fn arm_trial(&mut self, t: TrialTimer) {
        self.trial = match t {
            TrialTimer::Arm(until) => {
                // A time too far to add: at most a day (a trial lasts no longer).
                let left = crate::provision::until_epoch(until, SystemTime::now()).min(Duration::from_secs(86_400));
                Instant::now().checked_add(left)
            }
            TrialTimer::Disarm => None,
        };
    }

    /// A trial ran out without a confirm: it is reverted, off this thread
    /// (the revert runs commands this loop reaps).
    fn trial_due(&mut self) {
        self.trial = None;
        let Some(services) = &self.services else {
            info!("config: the trial ran out, but no service manager runs to revert it");
            return;
        };
        info!("config: no `berthctl config confirm` within the trial: reverting");
        let (p, units) = (self.provisioning.clone(), services.handle.clone());
        tokio::spawn(async move { p.revert(&units).await });
    }

    /// The system is ready once every unit it needs has settled (active,
    /// failed, skipped, degraded): those another unit requires and those
    /// marked `required_for_ready` ([`Settle::ready`]); a unit nothing
    /// needs does not hold it back. The ready line names the units not
    /// ready, and what failed is said right after it.
    fn units_settled(&mut self, s: &Settle) {
        if !s.ready || self.ready_printed {
            return;
        }
        self.print_ready(&s.not_ready);
        if !s.failed.is_empty() {
            info!("failed units: {} (`berthctl status` says why)", s.failed.join(", "));
        }
    }

    fn print_ready(&mut self, not_ready: &[(String, UnitState)]) {
        if self.ready_printed || self.emergency.is_some() {
            return;
        }
        self.ready_printed = true;
        let now = timing::monotonic_now();
        self.ready_us.store(u64::try_from(now.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
        let userspace = now.saturating_sub(self.start);
        let before = timing::BeforeUserspace::split(self.start, crate::initrd::started_from_env());
        let mut line = timing::ready_line(timing::loader_time(), before, userspace);
        line.push_str(&timing::not_ready_suffix(not_ready));
        log::line(line);
        // The shell waited for this (`shell_after_services`); a shell that
        // ran and exited keeps its own respawn delay.
        if self.shell.last_start.is_none() {
            self.start_shell();
        }
        if let Err(e) = crate::memory::release_boot_memory() {
            info!("memory: the boot's pages stay resident: {e}");
        }
    }

    pub(super) fn enter_emergency(&mut self, step: &str, error: &dyn std::fmt::Display) {
        let line = emergency::line(step, error);
        log::line(line.clone());
        self.emergency = Some((line, Instant::now() + emergency::REPEAT));
    }

    pub(super) fn watch_power_buttons(&mut self) {
        if self.buttons_started {
            return;
        }
        self.buttons_started = true;
        let devices = power_button::find(Path::new(power_button::SYS_CLASS_INPUT), Path::new(power_button::DEV_INPUT));
        if devices.is_empty() {
            info!("power button: none found");
        }
        power_button::watch(devices, self.button_tx.clone());
    }

    pub(super) fn start_shell(&mut self) {
        self.shell.next_attempt = None;
        if self.shell.running.is_some() {
            return;
        }
        let console = Path::new(ADMIN_CONSOLE);
        if !console.exists() {
            if !self.shell.announced {
                self.shell.announced = true;
                info!("no {ADMIN_CONSOLE}: no admin shell");
            }
            return;
        }
        let now = Instant::now();
        match shell::start(self.reaper, console, SHELL) {
            Ok((pid, rx)) => {
                self.shell.running = Some(rx);
                self.shell.pid = Some(pid);
                self.shell.last_start = Some(now);
                if !self.shell.announced {
                    self.shell.announced = true;
                    info!("admin shell on {ADMIN_CONSOLE} (pid {pid})");
                }
            }
            Err(e) => {
                info!("admin shell {SHELL} on {ADMIN_CONSOLE}: {e}; retrying in {} s", SHELL_RETRY.as_secs());
                self.shell.next_attempt = Some(now + SHELL_RETRY);
            }
        }
    }

    fn shutdown(&mut self, action: Action, reason: &str) -> ! {
        // This loop stops feeding it now: it gets the shutdown timeout, is
        // fed every STOP_FEED_PERIOD by the loop that waits for the units
        // to stop (which may take longer than that timeout: each unit has
        // its own stop_timeout), then at each step of the rest.
        if let Some(w) = &mut self.watchdog {
            w.shutdown_begins();
        }
        if let Some(services) = &mut self.services {
            info!("stopping units ({reason})");
            let began = Instant::now();
            let watchdog = &mut self.watchdog;
            let mut feed = || {
                if let Some(w) = watchdog.as_mut() {
                    w.feed();
                }
            };
            services.stop_all(self.reaper, STOP_ALL_LIMIT, STOP_FEED_PERIOD, &mut feed);
            log::line(timing::units_stopped_line(began.elapsed()));
        }
        let sessions: Vec<i32> = self.shell.pid.into_iter().collect();
        let mut ops = RealOps { flag: self.shutdown_flag.clone(), watchdog: self.watchdog.take() };
        let err = shutdown::run(&mut ops, action, reason, &sessions);
        info!("{action:?} failed: {err}; the machine stays halted here");
        log::flush(Duration::from_secs(1));
        // Returning would re-enter a loop whose filesystems are gone;
        // exiting would panic the kernel.
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}
