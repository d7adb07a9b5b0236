//! PID1's event loop: signals, the reaper, early boot's progress, the admin
//! shell, the power button, the emergency reminder.
//!
//! All state lives in [`Pid1`], outside the tokio runtime, and the boot
//! steps run on plain threads: when a bug panics out of the loop, `main`
//! builds a new runtime and calls [`Pid1::run`] again, and nothing that was
//! in flight (a running mke2fs, the shell) is lost with the old runtime.

use std::future::{pending, poll_fn};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use berth_layout::paths::{ADMIN_CONSOLE, SHELL};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, oneshot, watch};

use crate::boot::data::Prepared;
use crate::boot::{self, BootFailure, BootReport, RealSystem};
use crate::journal::{self, Journal};
use crate::reaper::{ExitStatus, Reaper};
use crate::services::Services;
use crate::shutdown::{self, Action, RealOps};
use crate::supervisor::Settle;
use crate::{emergency, info, log, power_button, shell, timing};

/// How long to wait before retrying a shell that could not be started.
const SHELL_RETRY: Duration = Duration::from_secs(10);
/// Reaping without SIGCHLD, should the signal handler be missing.
const REAP_FALLBACK: Duration = Duration::from_secs(1);
const REAP_BACKSTOP: Duration = Duration::from_secs(30);
/// Shutdown gives the units this long in all to stop (each also has its
/// own stop timeout); what is left is then killed.
const STOP_ALL_LIMIT: Duration = Duration::from_secs(90);
/// A power request from the control API waits this long, so that its reply
/// leaves before shutdown takes over this thread.
const POWER_REPLY_GRACE: Duration = Duration::from_millis(200);

type Pending<T> = oneshot::Receiver<Result<T, BootFailure>>;

enum Boot {
    NotStarted,
    Mounting(Pending<()>),
    Storage(Pending<BootReport>),
    Done,
}

enum BootEvent {
    Mounts(Result<Result<(), BootFailure>, oneshot::error::RecvError>),
    Storage(Result<Result<BootReport, BootFailure>, oneshot::error::RecvError>),
}

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
    Tick,
}

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
}

struct Signals {
    streams: Vec<(i32, Signal)>,
    complete: bool,
}

impl Signals {
    /// SIGCHLD first: it must be handled before any child exists, or an
    /// early exit would go unnoticed until the backstop reap.
    fn install() -> Signals {
        let mut streams = Vec::new();
        let mut complete = true;
        for sig in [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGUSR1, libc::SIGUSR2, libc::SIGPWR] {
            match signal(SignalKind::from_raw(sig)) {
                Ok(s) => streams.push((sig, s)),
                Err(e) => {
                    complete = false;
                    info!("cannot handle {}: {e}", signal_name(sig));
                }
            }
        }
        Signals { streams, complete }
    }

    async fn recv(&mut self) -> i32 {
        poll_fn(|cx| {
            for (sig, stream) in &mut self.streams {
                if let Poll::Ready(Some(())) = stream.poll_recv(cx) {
                    return Poll::Ready(*sig);
                }
            }
            Poll::Pending
        })
        .await
    }
}

pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT (ctrl-alt-del)",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPWR => "SIGPWR",
        _ => "signal",
    }
}

async fn until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
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

async fn boot_progress(boot: &mut Boot) -> BootEvent {
    match boot {
        Boot::Mounting(rx) => BootEvent::Mounts(rx.await),
        Boot::Storage(rx) => BootEvent::Storage(rx.await),
        Boot::NotStarted | Boot::Done => pending().await,
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

/// Runs a boot phase on its own thread; it blocks on the tools it runs,
/// which this loop reaps.
fn spawn_phase<T: Send + 'static>(
    name: &str,
    phase: impl FnOnce(&mut RealSystem) -> Result<T, BootFailure> + Send + 'static,
) -> io::Result<Pending<T>> {
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new().name(name.to_string()).spawn(move || {
        let mut sys = RealSystem::default();
        let _ = tx.send(phase(&mut sys));
    })?;
    Ok(rx)
}

impl Pid1 {
    pub fn new(start: Duration) -> Pid1 {
        let (button_tx, button_rx) = mpsc::channel(4);
        let (power_tx, power_rx) = mpsc::channel(4);
        // Service logs and PID1's own, held in memory until /var is mounted.
        match Journal::start(journal::Limits::default()) {
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
        loop {
            self.advance_boot();
            let event = self.next_event(&mut signals).await;
            self.handle(event);
        }
    }

    async fn next_event(&mut self, signals: &mut Signals) -> Event {
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
            () = tokio::time::sleep(backstop) => Event::Tick,
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Signal(libc::SIGCHLD) | Event::Tick => {
                self.reaper.reap();
            }
            Event::Signal(sig) => {
                if let Some(action) = shutdown::action_for_signal(sig) {
                    self.shutdown(action, signal_name(sig));
                }
            }
            Event::Boot(BootEvent::Mounts(r)) => self.mounts_done(r),
            Event::Boot(BootEvent::Storage(r)) => self.storage_done(r),
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
            Event::EmergencyDue => {
                if let Some((line, next)) = &mut self.emergency {
                    log::line(line.clone());
                    *next = Instant::now() + emergency::REPEAT;
                }
            }
        }
    }

    fn advance_boot(&mut self) {
        if let Boot::NotStarted = self.boot {
            self.boot = match spawn_phase("boot-mounts", |sys| boot::early_mounts(sys)) {
                Ok(rx) => Boot::Mounting(rx),
                Err(e) => {
                    self.enter_emergency("mounts", &format!("starting the boot thread: {e}"));
                    self.start_shell();
                    Boot::Done
                }
            };
        }
    }

    fn mounts_done(&mut self, r: Result<Result<(), BootFailure>, oneshot::error::RecvError>) {
        // Whatever of /dev and /sys exists now is used, even after a
        // failure: the emergency shell and the power button need them.
        if let Err(e) = log::stdio_to_console() {
            info!("stdio on {}: {e}", log::CONSOLE);
        }
        self.watch_power_buttons();
        match r {
            Ok(Ok(())) => {
                self.boot = match spawn_phase("boot-storage", |sys| boot::storage_and_identity(sys)) {
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
    }

    fn storage_done(&mut self, r: Result<Result<BootReport, BootFailure>, oneshot::error::RecvError>) {
        self.boot = Boot::Done;
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
                self.start_shell();
                self.start_services(matches!(report.data.prepared, Prepared::Formatted { .. }));
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

    fn start_services(&mut self, first_boot: bool) {
        match Services::start(first_boot, self.start, self.ready_us.clone(), self.power_tx.clone()) {
            Ok(services) => {
                let settle = services.settle.clone();
                let now = settle.borrow().clone();
                self.settle = Some(settle);
                self.services = Some(services);
                self.units_settled(&now);
            }
            Err(e) => {
                info!("service manager: {e}; no services run");
                self.print_ready();
            }
        }
    }

    /// The system is ready once every unit has settled (active, failed,
    /// skipped): the ready line, and what failed said right after it.
    fn units_settled(&mut self, s: &Settle) {
        if !s.settled || self.ready_printed {
            return;
        }
        self.print_ready();
        if !s.failed.is_empty() {
            info!("failed units: {} (`berthctl status` says why)", s.failed.join(", "));
        }
    }

    fn print_ready(&mut self) {
        if self.ready_printed || self.emergency.is_some() {
            return;
        }
        self.ready_printed = true;
        let now = timing::monotonic_now();
        self.ready_us.store(u64::try_from(now.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
        let userspace = now.saturating_sub(self.start);
        log::line(timing::ready_line(timing::loader_time(), self.start, userspace));
    }

    fn enter_emergency(&mut self, step: &str, error: &dyn std::fmt::Display) {
        let line = emergency::line(step, error);
        log::line(line.clone());
        self.emergency = Some((line, Instant::now() + emergency::REPEAT));
    }

    fn watch_power_buttons(&mut self) {
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

    fn start_shell(&mut self) {
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
        if let Some(services) = &mut self.services {
            info!("stopping units ({reason})");
            services.stop_all(self.reaper, STOP_ALL_LIMIT);
        }
        let sessions: Vec<i32> = self.shell.pid.into_iter().collect();
        let err = shutdown::run(&mut RealOps, action, reason, &sessions);
        info!("{action:?} failed: {err}; the machine stays halted here");
        log::flush(Duration::from_secs(1));
        // Returning would re-enter a loop whose filesystems are gone;
        // exiting would panic the kernel.
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}
