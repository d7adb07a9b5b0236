//! The service manager: starts the units of a [`Plan`], each as soon as
//! what it needs is ready, keeps them running, and stops them.
//!
//! One tokio task (the manager) owns all state; [`SupervisorHandle`]s talk
//! to it through a channel. Each run of a unit's main process is a task of
//! its own (the runner: exit status, readiness, health checks, stop
//! sequence) reporting back to the manager. Child exit statuses come from
//! the [`Reaper`]: nothing here ever waits for a process itself.
//!
//! A unit's life (its phases, their diagram, and what follows a run) is
//! the pure `lifecycle` module; the manager is the shell that applies it:
//! runs, timers, channels.
//!
//! Stopping a run for good (stop, shutdown, removal; not a restart) first
//! runs the unit's `exec_stop`, for at most `stop_timeout`. Then:
//! `stop_signal` (and SIGCONT) to the main process
//! (`kill_mode = "main"`) or to the whole cgroup (`"group"`, and always at
//! shutdown); up to `stop_timeout` for the main process to exit and, for a
//! group stop, the group to empty; then SIGKILL (`cgroup.kill`) and up to
//! 5 s more. When the main process ends on its own under kill_mode group,
//! what it left in its group is stopped the same way before anything else
//! happens; under kill_mode main it stays (containerd's shims). A main
//! process that exits 0 while processes of its unit live on has put itself
//! in the background: the unit is failed with that said, never restarted.
//!
//! [`SupervisorHandle::stop_all`] (shutdown) stops each unit once every
//! unit that requires it or is ordered after it has stopped (dependents
//! first, unrelated units in parallel, each within its own timeout) and
//! always kills the whole group, leftovers of earlier runs included.
//!
//! Without cgroups ([`Config::cgroups`] `None`, as an unprivileged
//! process), "the group" is the session each run is started in.

mod accounts;
mod exec;
mod lifecycle;
mod manager;
mod members;
mod runner;
mod state_directory;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

pub use accounts::{resolve as resolve_credentials, Credentials};

use crate::cgroup::Cgroups;
use crate::journal::Journal;
use crate::reaper::Reaper;
use crate::status::{Timeline, UnitState, UnitStatus};
use crate::unit::Plan;

use manager::{Event, Manager, Request};

/// How the supervisor runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The units' cgroups; `None`: none (an unprivileged run; stops then
    /// reach only the processes left in each run's session).
    pub cgroups: Option<Cgroups>,
    /// Where the units' notification sockets go (created if missing).
    pub notify_dir: PathBuf,
    /// For `conditions.first_boot`.
    pub first_boot: bool,
    /// Users and groups, read at each start (no NSS in PID1).
    pub passwd: PathBuf,
    pub group: PathBuf,
    /// CLOCK_MONOTONIC µs at PID1's start, for the timeline.
    pub pid1_start_us: u64,
    /// CLOCK_MONOTONIC µs at stage 0's start (the initramfs's `/init`),
    /// 0 when the kernel started PID1 itself.
    pub initrd_start_us: u64,
    /// How long an `idle` unit's first start waits at most for the units
    /// the machine's readiness waits for ([`IDLE_LIMIT`]).
    pub idle_limit: Duration,
}

/// systemd's limit on a `Type=idle` unit's wait: 5 s.
pub const IDLE_LIMIT: Duration = Duration::from_secs(5);

impl Default for Config {
    fn default() -> Config {
        Config {
            cgroups: None,
            notify_dir: PathBuf::from(crate::notify::DEFAULT_DIR),
            first_boot: false,
            passwd: PathBuf::from("/etc/passwd"),
            group: PathBuf::from("/etc/group"),
            pid1_start_us: 0,
            initrd_start_us: 0,
            idle_limit: IDLE_LIMIT,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SupervisorError {
    #[error("no unit {0}")]
    NoSuchUnit(String),
    #[error("{unit} cannot be started: {reason}")]
    NotStartable { unit: String, reason: String },
    #[error("the system is shutting down")]
    ShuttingDown,
    #[error("the service manager is not running")]
    Gone,
}

/// Whether the units have settled, for PID1's ready line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settle {
    /// No unit is waiting, starting, restarting or stopping: each is
    /// active, failed, skipped, inactive or degraded. Goes back to false
    /// when one restarts.
    pub settled: bool,
    /// Units failed, by name (left-out ones included).
    pub failed: Vec<String>,
    /// Units not settled yet.
    pub pending: Vec<String>,
    /// Every unit the machine's readiness waits for has settled: those
    /// another unit requires and those whose file says
    /// `required_for_ready = true`. A unit nothing needs (etcd in the
    /// image) never holds this back.
    pub ready: bool,
    /// Every unit that is not active (or skipped), by name, with its state.
    pub not_ready: Vec<(String, UnitState)>,
}

/// What [`SupervisorHandle::reload`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// New units, being started.
    pub added: Vec<String>,
    /// Units gone from the plan, being stopped.
    pub removed: Vec<String>,
    /// Units whose definition changed: restarted if they ran.
    pub changed: Vec<String>,
}

/// Starts the service manager.
pub struct Supervisor;

impl Supervisor {
    /// Starts the manager as a task on the current tokio runtime (PID1's
    /// current_thread one) and every unit of `plan` as its dependencies
    /// allow. Units the plan left out are listed as failed, with why.
    ///
    /// Service output goes to `journal` (to /dev/null without one). Child
    /// statuses come from `reaper`; someone must call its `reap()` on
    /// SIGCHLD (PID1's event loop; [`reap_on_sigchld`] elsewhere).
    ///
    /// Must be called within a tokio runtime.
    pub fn spawn(
        config: Config,
        plan: Plan,
        journal: Option<&'static Journal>,
        reaper: &'static Reaper,
    ) -> SupervisorHandle {
        let (req_tx, req_rx) = mpsc::unbounded_channel();
        let (settle_tx, settle_rx) = watch::channel(Settle::default());
        let manager = Manager::new(config, plan, journal, reaper, req_rx, settle_tx);
        tokio::spawn(manager.run());
        SupervisorHandle { tx: req_tx, settle: settle_rx }
    }
}

impl Supervisor {
    /// [`Supervisor::spawn`], but on a thread of its own with its own
    /// current_thread runtime, so that the manager keeps running whatever
    /// happens to the caller's event loop (PID1 builds a new runtime after
    /// a panic in its loop, which ends every task spawned on the old one).
    pub fn spawn_thread(
        config: Config,
        plan: Plan,
        journal: Option<&'static Journal>,
        reaper: &'static Reaper,
    ) -> std::io::Result<SupervisorHandle> {
        let (req_tx, req_rx) = mpsc::unbounded_channel();
        let (settle_tx, settle_rx) = watch::channel(Settle::default());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        std::thread::Builder::new().name("supervisor".into()).spawn(move || {
            let manager = Manager::new(config, plan, journal, reaper, req_rx, settle_tx);
            rt.block_on(manager.run());
        })?;
        Ok(SupervisorHandle { tx: req_tx, settle: settle_rx })
    }
}

/// Talks to the manager; cheap to clone.
#[derive(Clone, Debug)]
pub struct SupervisorHandle {
    tx: mpsc::UnboundedSender<Request>,
    settle: watch::Receiver<Settle>,
}

type Reply<T> = oneshot::Sender<Result<T, SupervisorError>>;

impl SupervisorHandle {
    async fn ask<T>(&self, request: impl FnOnce(Reply<T>) -> Request) -> Result<T, SupervisorError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(request(tx)).map_err(|_| SupervisorError::Gone)?;
        rx.await.map_err(|_| SupervisorError::Gone)?
    }

    /// Every unit, by name.
    pub async fn list(&self) -> Result<Vec<UnitStatus>, SupervisorError> {
        self.ask(Request::List).await
    }

    pub async fn status(&self, name: &str) -> Result<UnitStatus, SupervisorError> {
        self.ask(|r| Request::Status(name.to_owned(), r)).await
    }

    /// Starts a unit that is not running (inactive, failed, skipped), with
    /// a fresh start limit, along with what it requires and wants that is
    /// not running; answers once it has settled (active, failed, skipped).
    pub async fn start(&self, name: &str) -> Result<UnitStatus, SupervisorError> {
        self.ask(|r| Request::Start(name.to_owned(), r)).await
    }

    /// Stops a unit (its main process or its whole group, as its kill_mode
    /// says); answers once it is inactive.
    pub async fn stop(&self, name: &str) -> Result<UnitStatus, SupervisorError> {
        self.ask(|r| Request::Stop(name.to_owned(), r)).await
    }

    /// Stops (as [`stop`](Self::stop)) and starts it again with a fresh
    /// start limit; answers once it has settled.
    pub async fn restart(&self, name: &str) -> Result<UnitStatus, SupervisorError> {
        self.ask(|r| Request::Restart(name.to_owned(), r)).await
    }

    /// Takes a new plan: new units start, removed ones stop (whole group),
    /// changed ones restart. Answers at once.
    pub async fn reload(&self, plan: Plan) -> Result<ReloadReport, SupervisorError> {
        self.ask(|r| Request::Reload(Box::new(plan), r)).await
    }

    pub async fn timeline(&self) -> Result<Timeline, SupervisorError> {
        self.ask(Request::Timeline).await
    }

    /// Shutdown: stops every unit, dependents first, each within its own
    /// stop_timeout, killing whole groups; nothing starts afterwards.
    /// Answers when every unit's processes are gone.
    pub async fn stop_all(&self) -> Result<(), SupervisorError> {
        self.ask(Request::StopAll).await
    }

    /// [`stop_all`](Self::stop_all) for a caller that cannot await: PID1's
    /// synchronous shutdown path. Reaps with `reaper` while it waits (the
    /// caller's thread may be the one that normally reaps), polling every
    /// 20 ms, for at most `limit` or the units' [stop bound](Self::stop_bound)
    /// (and a few seconds), whichever is longer: a unit given a long
    /// stop_timeout (containerd's grace for its containers) gets it. The
    /// manager must run on another thread ([`Supervisor::spawn_thread`]):
    /// one on the caller's runtime could not make progress while this
    /// blocks. `Ok(false)`: not done within that time.
    ///
    /// While it waits, the waiting loop itself calls `tick` once per
    /// `period` (the first a `period` in): PID1 feeds its hardware watchdog
    /// there, since the wait may outlast the watchdog's shutdown timeout (a
    /// stop_timeout of minutes), yet a hang of this thread still stops the
    /// feeding.
    pub fn stop_all_blocking(
        &self,
        reaper: &Reaper,
        limit: Duration,
        period: Duration,
        tick: &mut dyn FnMut(),
    ) -> Result<bool, SupervisorError> {
        let (tx, mut rx) = oneshot::channel();
        self.tx.send(Request::StopBound(tx)).map_err(|_| SupervisorError::Gone)?;
        let bound = blocking_answer(reaper, &mut rx, STOP_BOUND_WAIT, period, tick)?.unwrap_or(Duration::ZERO);
        let limit = limit.max(bound.saturating_add(STOP_BOUND_SLACK));
        let (tx, mut rx) = oneshot::channel();
        self.tx.send(Request::StopAll(tx)).map_err(|_| SupervisorError::Gone)?;
        Ok(blocking_answer(reaper, &mut rx, limit, period, tick)?.is_some())
    }

    /// The longest shutdown the units may take, each within its own
    /// timeouts (`exec_stop` and `stop_timeout` each, SIGKILL's wait),
    /// dependents first: [`stop_all`](Self::stop_all) takes no longer
    /// unless the kernel cannot tear a process down.
    pub async fn stop_bound(&self) -> Result<Duration, SupervisorError> {
        self.ask(Request::StopBound).await
    }

    /// Changes whenever the units' settledness does.
    pub fn settled(&self) -> watch::Receiver<Settle> {
        self.settle.clone()
    }

    /// Waits until every unit has settled.
    pub async fn wait_settled(&self) -> Result<Settle, SupervisorError> {
        let mut rx = self.settle.clone();
        let s = rx.wait_for(|s| s.settled).await.map_err(|_| SupervisorError::Gone)?;
        Ok(s.clone())
    }
}

/// How long [`SupervisorHandle::stop_all_blocking`] waits for the stop bound.
const STOP_BOUND_WAIT: Duration = Duration::from_secs(2);
/// Added to the stop bound: the manager's own work, the reaper's polling.
const STOP_BOUND_SLACK: Duration = Duration::from_secs(5);

/// Waits for an answer on `rx` for at most `limit`, reaping with `reaper`
/// meanwhile (see [`SupervisorHandle::stop_all_blocking`]) and calling
/// `tick` once per `period` of the wait (the first a `period` in);
/// `Ok(None)`: none within `limit`.
fn blocking_answer<T>(
    reaper: &Reaper,
    rx: &mut oneshot::Receiver<Result<T, SupervisorError>>,
    limit: Duration,
    period: Duration,
    tick: &mut dyn FnMut(),
) -> Result<Option<T>, SupervisorError> {
    let start = Instant::now();
    let mut next = start.checked_add(period);
    loop {
        reaper.reap();
        match rx.try_recv() {
            Ok(result) => return result.map(Some),
            Err(oneshot::error::TryRecvError::Closed) => return Err(SupervisorError::Gone),
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        let now = Instant::now();
        if now.duration_since(start) >= limit {
            return Ok(None);
        }
        if next.is_some_and(|t| now >= t) {
            tick();
            next = now.checked_add(period);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// For a manager that is not PID1: makes this process the "subreaper" of
/// its descendants, so that the orphans of its services (a daemon's
/// double fork, what a killed main process leaves) become its children,
/// are reaped, and stay within reach.
pub fn become_subreaper() -> std::io::Result<()> {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))?;
    Ok(())
}

/// For a manager that is not PID1 (PID1's event loop does this itself):
/// reaps on every SIGCHLD, and every `backstop` in case a signal is
/// missed. Runs forever; spawn it.
pub async fn reap_on_sigchld(reaper: &'static Reaper, backstop: Duration) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigchld = signal(SignalKind::child()).ok();
    loop {
        reaper.reap();
        match &mut sigchld {
            Some(s) => {
                let _ = tokio::time::timeout(backstop, s.recv()).await;
            }
            None => tokio::time::sleep(backstop).await,
        }
    }
}

/// `250ms`, `1s 600ms`, `2m`: a duration as people write it in unit
/// files, to the millisecond (rounded).
pub(crate) fn human(d: Duration) -> humantime::FormattedDuration {
    let ms = d.as_nanos().saturating_add(500_000) / 1_000_000;
    humantime::format_duration(Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_ticks_once_per_period_until_the_limit() {
        let (_tx, mut rx) = oneshot::channel::<Result<(), SupervisorError>>();
        let mut calls = Vec::new();
        let begin = Instant::now();
        let period = Duration::from_millis(100);
        let answer = blocking_answer(Reaper::global(), &mut rx, Duration::from_millis(550), period, &mut || {
            calls.push(Instant::now());
        });
        assert_eq!(answer, Ok(None));
        assert!((4..=5).contains(&calls.len()), "{} calls", calls.len());
        assert!(calls[0] - begin >= period, "the first a period in");
        for w in calls.windows(2) {
            assert!(w[1] - w[0] >= period && w[1] - w[0] < period * 3, "{:?}", w[1] - w[0]);
        }
    }

    #[test]
    fn durations_read_like_unit_files() {
        let h = |d: Duration| human(d).to_string();
        assert_eq!(h(Duration::from_millis(100)), "100ms");
        assert_eq!(h(Duration::from_millis(1600)), "1s 600ms");
        assert_eq!(h(Duration::from_millis(1250)), "1s 250ms");
        assert_eq!(h(Duration::from_secs(10)), "10s");
        assert_eq!(h(Duration::from_secs(120)), "2m");
        assert_eq!(h(Duration::from_secs(90)), "1m 30s");
        // To the millisecond, rounded: no micro- or nanoseconds.
        assert_eq!(h(Duration::from_micros(1_499)), "1ms");
        assert_eq!(h(Duration::from_micros(2_500)), "3ms");
        assert_eq!(h(Duration::ZERO), "0s");
        assert_eq!(h(Duration::MAX), h(Duration::from_millis(u64::MAX)));
    }
}
