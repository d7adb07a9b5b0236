//! PID1's service manager: loads the unit files, runs the supervisor on a
//! thread of its own (it outlives a panic in PID1's loop) and answers the
//! control API from it.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_layout::paths::{CONTROL_SOCKET, LOG_DIR, RUN_DIR};
use berth_provision::machine::{InForce, Status};
use tokio::sync::{mpsc, watch};

use super::provision::Provisioning;
use crate::api::{self, ConfigReport, Control, ControlError, ReloadOutcome, ServerHandle};
use crate::cgroup::{self, Cgroups};
use crate::journal;
use crate::power::Action;
use crate::reaper::Reaper;
use crate::status::{Timeline, UnitStatus};
use crate::supervisor::{Config, Settle, Supervisor, SupervisorError, SupervisorHandle};
use crate::unit::{self, Plan};
use crate::{info, timing};

/// Reads the unit directories and plans the start; every problem is
/// logged with its file, line and key, and the rest still starts.
pub fn load_plan() -> Plan {
    let plan = unit::plan(unit::load_system());
    for e in &plan.errors {
        info!("units: {e}");
    }
    plan
}

/// Reads and plans the unit files once without keeping the result, on the
/// boot thread that then waits for the storage drivers' probing: the unit
/// files (small LZMA files of the root) and PID1's own parsing code are
/// paged in while the vCPUs wait for the probe, so that [`load_plan`],
/// which runs after user data (which may write units) on every boot's
/// critical path, takes 8 ms instead of about 55 ms on a reboot under TCG.
/// Errors are not logged here: `load_plan` logs them.
pub fn page_in_units() {
    drop(unit::plan(unit::load_system()));
}

/// The running service manager, as PID1 holds it.
pub struct Services {
    pub handle: SupervisorHandle,
    pub settle: watch::Receiver<Settle>,
    control: ManagerControl,
    server: Option<ServerHandle>,
}

impl Services {
    /// Starts the supervisor with the system's units. `first_boot`: the
    /// data partition was formatted during this boot. `provisioning`: user
    /// data's state, for the control API.
    pub fn start(
        first_boot: bool,
        pid1_start: Duration,
        ready_us: Arc<AtomicU64>,
        power: mpsc::Sender<Action>,
        provisioning: Arc<Provisioning>,
    ) -> std::io::Result<Services> {
        // /run/berth holds the units' notify sockets, which services running
        // as other users must reach, next to the control socket, which only
        // root may use (the socket's own mode and a credentials check).
        let run_dir = Path::new(RUN_DIR);
        if let Err(e) = std::fs::create_dir_all(run_dir)
            .and_then(|()| std::fs::set_permissions(run_dir, std::fs::Permissions::from_mode(0o755)))
        {
            info!("{RUN_DIR}: {e}");
        }
        let cgroups = match Cgroups::setup(cgroup::DEFAULT_ROOT) {
            Ok(c) => Some(c),
            Err(e) => {
                info!("cgroups under {}: {e}; units run without limits", cgroup::DEFAULT_ROOT);
                None
            }
        };
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let before = timing::BeforeUserspace::split(pid1_start, crate::initrd::started_from_env());
        let config = Config {
            cgroups,
            first_boot,
            pid1_start_us: micros(pid1_start),
            // The kernel's share ends where stage 0 began.
            initrd_start_us: before.initrd.map_or(0, |_| micros(before.kernel)),
            ..Config::default()
        };
        let handle = Supervisor::spawn_thread(config, load_plan(), journal::global(), Reaper::global())?;
        let settle = handle.settled();
        let control = ManagerControl { handle: handle.clone(), power, ready_us, provisioning };
        let mut services = Services { handle, settle, control, server: None };
        services.ensure_server();
        Ok(services)
    }

    /// Serves the control API on the current runtime, unless it already
    /// runs there. Called again after PID1's loop was rebuilt (a panic
    /// ends the tasks of the old runtime); the stale socket is replaced.
    pub fn ensure_server(&mut self) {
        if self.server.as_ref().is_some_and(ServerHandle::is_running) {
            return;
        }
        match api::serve(self.control.clone(), Path::new(CONTROL_SOCKET), PathBuf::from(LOG_DIR)) {
            Ok(server) => self.server = Some(server),
            Err(e) => info!("control API on {CONTROL_SOCKET}: {e}"),
        }
    }

    /// Shutdown, first part: stop every unit (dependents first, each within
    /// its own timeout), keeping children reaped meanwhile, then let go of
    /// the log files so /var can be unmounted. Bounded by `limit`.
    pub fn stop_all(&mut self, reaper: &Reaper, limit: Duration, period: Duration, tick: &mut dyn FnMut()) {
        // The supervisor runs on its own thread; this one keeps reaping for
        // it, since the (now blocked) event loop no longer does, and calls
        // `tick` once per `period` meanwhile.
        match self.handle.stop_all_blocking(reaper, limit, period, tick) {
            Ok(true) => {}
            Ok(false) => info!("stopping units: still running after {} s; killing what is left", limit.as_secs()),
            Err(e) => info!("stopping units: {e}"),
        }
        if let Some(server) = &self.server {
            server.close_logs();
        }
        self.server = None;
        if let Some(j) = journal::global() {
            j.detach(Duration::from_secs(2));
        }
    }
}

/// The control API's view of the supervisor.
#[derive(Clone)]
struct ManagerControl {
    handle: SupervisorHandle,
    power: mpsc::Sender<Action>,
    /// CLOCK_MONOTONIC µs of the ready line, 0 before.
    ready_us: Arc<AtomicU64>,
    provisioning: Arc<Provisioning>,
}

fn control_error(e: SupervisorError) -> ControlError {
    match e {
        SupervisorError::NoSuchUnit(name) => ControlError::NoUnit(name),
        e @ (SupervisorError::NotStartable { .. } | SupervisorError::ShuttingDown) => {
            ControlError::Refused(e.to_string())
        }
        e @ SupervisorError::Gone => ControlError::Failed(e.to_string()),
    }
}

/// Runs `f` as a task of its own, to its end even when the caller's future
/// is dropped; the caller gets its result.
fn detached<T: Send + 'static>(
    f: impl Future<Output = Result<T, ControlError>> + Send + 'static,
) -> impl Future<Output = Result<T, ControlError>> + Send {
    let task = tokio::spawn(f);
    async move { task.await.map_err(|e| ControlError::Failed(format!("the change's task failed: {e}")))? }
}

impl Control for ManagerControl {
    fn list(&self) -> impl Future<Output = Vec<UnitStatus>> + Send {
        let h = self.handle.clone();
        async move { h.list().await.unwrap_or_default() }
    }

    fn status(&self, unit: &str) -> impl Future<Output = Result<UnitStatus, ControlError>> + Send {
        let (h, unit) = (self.handle.clone(), unit.to_string());
        async move { h.status(&unit).await.map_err(control_error) }
    }

    fn start(&self, unit: &str) -> impl Future<Output = Result<(), ControlError>> + Send {
        let (h, unit) = (self.handle.clone(), unit.to_string());
        async move { h.start(&unit).await.map(drop).map_err(control_error) }
    }

    fn stop(&self, unit: &str) -> impl Future<Output = Result<(), ControlError>> + Send {
        let (h, unit) = (self.handle.clone(), unit.to_string());
        async move { h.stop(&unit).await.map(drop).map_err(control_error) }
    }

    fn restart(&self, unit: &str) -> impl Future<Output = Result<(), ControlError>> + Send {
        let (h, unit) = (self.handle.clone(), unit.to_string());
        async move { h.restart(&unit).await.map(drop).map_err(control_error) }
    }

    fn reload(&self) -> impl Future<Output = Result<ReloadOutcome, ControlError>> + Send {
        let h = self.handle.clone();
        async move {
            // Reading files is blocking I/O: off PID1's thread.
            let plan = tokio::task::spawn_blocking(|| unit::plan(unit::load_system()))
                .await
                .map_err(|e| ControlError::Failed(format!("reading the unit files: {e}")))?;
            let errors: Vec<String> = plan.errors.iter().map(ToString::to_string).collect();
            for e in &errors {
                info!("units: {e}");
            }
            let r = h.reload(plan).await.map_err(control_error)?;
            Ok(ReloadOutcome { added: r.added, removed: r.removed, changed: r.changed, errors })
        }
    }

    fn timeline(&self) -> impl Future<Output = Timeline> + Send {
        let (h, ready) = (self.handle.clone(), self.ready_us.clone());
        async move {
            let mut t = h.timeline().await.unwrap_or(Timeline {
                initrd_start_us: 0,
                pid1_start_us: 0,
                ready_us: 0,
                units: Vec::new(),
            });
            t.ready_us = ready.load(Ordering::Relaxed);
            t
        }
    }

    fn power(&self, action: Action) -> impl Future<Output = ()> + Send {
        let tx = self.power.clone();
        async move {
            let _ = tx.send(action).await;
        }
    }

    fn provisioning(&self) -> impl Future<Output = Option<Status>> + Send {
        let p = self.provisioning.clone();
        async move { p.status() }
    }

    fn config_apply(
        &self,
        source: &str,
        bytes: Vec<u8>,
        try_for: Option<Duration>,
    ) -> impl Future<Output = Result<ConfigReport, ControlError>> + Send {
        let (p, h, source) = (self.provisioning.clone(), self.handle.clone(), source.to_string());
        // A task of its own: a client that hangs up half-way does not stop
        // a change between its files and the units' reload.
        detached(async move { p.apply(&h, source, bytes, try_for).await })
    }

    fn config_confirm(&self) -> impl Future<Output = Result<(), ControlError>> + Send {
        let p = self.provisioning.clone();
        detached(async move { p.confirm().await })
    }

    fn config_show(&self) -> impl Future<Output = Result<Option<InForce>, ControlError>> + Send {
        let p = self.provisioning.clone();
        async move { p.show().await }
    }
}
