//! The daemon's logic, behind two seams so it is tested without a disk or
//! a PID1: [`Machine`] (the A/B state, applying it, the install engine)
//! and [`Pid1`] (readiness, reboot). Blocking work (the disk, the network,
//! the gate's checks) runs on tokio's blocking pool.

use std::future::Future;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::history::{History, Kind, Operation, Staged, Store};
use super::lock::{LockRetry, RebootLock};
use super::wire::{WireCandidate, WireFailed, WireOperation, WireSlot, WireStatus};
use crate::bundle::KeyRing;
use crate::config::{Config, RebootPolicy};
use crate::install::{InstallContext, Installed, Progress, Step};
use crate::state::AbState;
use crate::{fetch, publish};

mod bless;
mod reboot_lock;

pub use bless::run_check;

/// Bless attempts before giving up on this boot (PID1's deadline then
/// reboots it).
pub const BLESS_ATTEMPTS: u32 = 3;

/// The machine: real ([`super::real::RealMachine`]) or a fake in tests.
/// Errors are the text the user sees.
pub trait Machine: Send + Sync + 'static {
    /// Loads the A/B state (ESP entries, /proc/cmdline, EFI variables).
    fn load(&self) -> Result<AbState, String>;
    /// Writes a changed state (no payload: bless, rollback) to the ESP.
    fn apply(&self, state: &AbState) -> Result<(), String>;
    /// Runs the install engine on a loaded state, from `source` (a bundle
    /// file, or an http(s) URL fetched with `retries` resumes).
    fn install(
        &self,
        source: &str,
        retries: u32,
        keys: &KeyRing,
        ctx: &InstallContext,
        state: AbState,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Installed, String>;
    /// This boot's id (`/proc/sys/kernel/random/boot_id`).
    fn boot_id(&self) -> String;
}

/// What PID1 says about the machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    /// PID1 printed its ready line: every required unit settled.
    pub ready: bool,
    /// The units that failed (names), which fail the gate.
    pub failed: Vec<String>,
}

/// PID1's control API as the daemon uses it.
pub trait Pid1: Send + Sync + 'static {
    fn readiness(&self) -> impl Future<Output = Result<Readiness, String>> + Send;
    fn reboot(&self) -> impl Future<Output = Result<(), String>> + Send;
}

/// Why a call failed; the D-Bus error's name is the variant's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DaemonError {
    /// Another install runs.
    #[error("an install is already running ({0}); try again when it is done")]
    Busy(String),
    /// Not allowed now or at all (the engine's refusals, a rollback the
    /// state refuses).
    #[error("{0}")]
    Refused(String),
    /// Tried and failed.
    #[error("{0}")]
    Failed(String),
}

/// Where the daemon finds what it needs.
#[derive(Clone, Debug)]
pub struct Settings {
    pub config: Config,
    /// The accepted public keys ([`berth_layout::paths::UPDATE_KEYS_DIR`]).
    pub keys_dir: PathBuf,
    /// The history's directory ([`berth_layout::paths::UPDATER_STATE_DIR`]).
    pub state_dir: PathBuf,
    /// Made once this boot is blessed ([`berth_layout::paths::BOOT_BLESSED`]).
    pub blessed_marker: PathBuf,
    /// The architecture bundles must be for (`x86_64`).
    pub arch: String,
    /// A file read at the start of each install that, when it exists,
    /// names a point where the install stops for good
    /// ([`crate::install::parse_pause_point`]): power-cut tests only.
    /// berth-updater passes [`berth_layout::paths::UPDATER_PAUSE_FILE`], on tmpfs, so a
    /// power cut forgets it.
    pub pause_file: Option<PathBuf>,
}

/// How this boot's bless stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Bless {
    /// Not looked at yet.
    #[default]
    Unknown,
    /// The gate is waiting; what for.
    Waiting(String),
    /// Blessed (or not counted).
    Done,
    /// Blessing failed; why.
    Failed(String),
}

#[derive(Default)]
struct Live {
    bless: Bless,
    counted: bool,
    installing: Option<String>,
    /// What the reboot lock is doing ("" when there is none).
    lock: String,
}

/// The daemon. Shared (`Arc`) by the API, the start-up gate and the
/// automatic mode.
pub struct Daemon<M, P> {
    machine: Arc<M>,
    pid1: P,
    settings: Settings,
    store: Store,
    history: Arc<Mutex<History>>,
    live: Mutex<Live>,
    reboot_lock: Option<(Arc<dyn RebootLock>, LockRetry)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, String> + Send + 'static) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(format!("a task of the updater failed: {e}")),
    }
}

/// Says something on the console (PID1 logs the unit's stderr).
pub fn say(args: std::fmt::Arguments<'_>) {
    eprintln!("berth-updater: {args}");
}

impl<M: Machine, P: Pid1> Daemon<M, P> {
    /// A daemon over `machine` and `pid1`; reads the history (an unreadable
    /// one is reported and replaced by an empty one: losing the record must
    /// not stop updates).
    pub fn new(machine: M, pid1: P, settings: Settings) -> Arc<Daemon<M, P>> {
        Self::with_reboot_lock(machine, pid1, settings, None)
    }

    /// [`Daemon::new`] with coordinated reboots: a reboot into an installed
    /// update first takes a slot of `lock` (retried per its [`LockRetry`]
    /// while it fails: no slot, no reboot), and the slot is released once
    /// the next boot is blessed ([`Daemon::start`]).
    pub fn with_reboot_lock(
        machine: M,
        pid1: P,
        settings: Settings,
        lock: Option<(Arc<dyn RebootLock>, LockRetry)>,
    ) -> Arc<Daemon<M, P>> {
        let store = Store::new(&settings.state_dir);
        let history = store.load().unwrap_or_else(|e| {
            say(format_args!("the history cannot be read, starting a new one: {e}"));
            History::default()
        });
        Arc::new(Daemon {
            machine: Arc::new(machine),
            pid1,
            settings,
            store,
            history: Arc::new(Mutex::new(history)),
            live: Mutex::new(Live::default()),
            reboot_lock: lock,
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn pid1(&self) -> &P {
        &self.pid1
    }

    /// A copy of the history as it is now.
    pub fn history(&self) -> History {
        lock(&self.history).clone()
    }

    /// How this boot's bless stands.
    pub fn bless_state(&self) -> Bless {
        lock(&self.live).bless.clone()
    }

    async fn load(&self) -> Result<AbState, String> {
        let machine = Arc::clone(&self.machine);
        blocking(move || machine.load()).await
    }

    async fn apply(&self, state: AbState) -> Result<(), String> {
        let machine = Arc::clone(&self.machine);
        blocking(move || machine.apply(&state)).await
    }

    /// Changes the history and saves it (on the blocking pool); a failed
    /// save is reported, the change is kept in memory.
    async fn remember(&self, change: impl FnOnce(&mut History)) {
        let snapshot = {
            let mut h = lock(&self.history);
            change(&mut h);
            h.clone()
        };
        let store = self.store.clone();
        if let Err(e) = blocking(move || store.save(&snapshot).map_err(|e| e.to_string())).await {
            say(format_args!("the history could not be saved: {e}"));
        }
    }

    fn keys(&self) -> Result<KeyRing, String> {
        KeyRing::load_dir(&self.settings.keys_dir)
            .map_err(|e| format!("the update keys in {}: {e}", self.settings.keys_dir.display()))
    }

    // ------------------------------------------------------------- status

    pub async fn status(&self) -> Result<WireStatus, DaemonError> {
        let state = self.load().await.map_err(DaemonError::Failed)?;
        let slot = |s| {
            let e = state.entry(s);
            WireSlot {
                slot: s.name().to_string(),
                version: e.map(|e| e.name.version.clone()).unwrap_or_default(),
                entry: e.map(|e| e.file_name()).unwrap_or_default(),
            }
        };
        let (bless, counted, installing, reboot_lock) = {
            let live = lock(&self.live);
            (live.bless.clone(), live.counted, live.installing.clone(), live.lock.clone())
        };
        let blessed = state.booted_entry().is_some_and(|e| e.is_blessed()) || bless == Bless::Done;
        let (bless_error, gate) = match bless {
            Bless::Failed(why) => (why, String::new()),
            Bless::Waiting(what) => (String::new(), what),
            Bless::Unknown | Bless::Done => (String::new(), String::new()),
        };
        let history = lock(&self.history);
        Ok(WireStatus {
            booted: slot(state.booted()),
            other: slot(state.booted().other()),
            blessed,
            bless_error,
            counted,
            gate,
            last: history.last_change().map(WireOperation::from).into_iter().collect(),
            failed: history.failed.iter().map(WireFailed::from).collect(),
            installing: installing.unwrap_or_default(),
            reboot_lock,
        })
    }

    // ------------------------------------------------------------ install

    /// Installs from a file or URL. One at a time: a second call while one
    /// runs is refused with [`DaemonError::Busy`]. `progress` gets the
    /// engine's progress (called on the blocking pool).
    pub async fn install(
        &self,
        source: &str,
        force: bool,
        progress: impl FnMut(Progress) + Send + 'static,
    ) -> Result<Installed, DaemonError> {
        {
            let mut live = lock(&self.live);
            if let Some(running) = &live.installing {
                return Err(DaemonError::Busy(running.clone()));
            }
            live.installing = Some(source.to_string());
        }
        let result = self.install_now(source, force, progress).await;
        lock(&self.live).installing = None;
        let (version, slot, ok, message) = match &result {
            Ok(i) => (i.version.clone(), i.slot.name().to_string(), true, format!("installed from {source}")),
            Err(e) => (String::new(), String::new(), false, format!("{source}: {e}")),
        };
        if ok {
            say(format_args!("installed {version} into slot {slot} from {source}"));
        } else {
            say(format_args!("install failed: {message}"));
        }
        let boot_id = self.machine.boot_id();
        self.remember(|h| {
            if ok {
                h.staged = Some(Staged { version: version.clone(), slot: slot.clone(), boot_id });
            }
            h.record(Operation { kind: Kind::Install, version, slot, ok, message, time: now() });
        })
        .await;
        result
    }

    /// The pause point of [`Settings::pause_file`], if the file exists.
    fn pause_point(&self) -> Result<(Option<Step>, Option<u8>), DaemonError> {
        let Some(path) = &self.settings.pause_file else { return Ok((None, None)) };
        match std::fs::read_to_string(path) {
            Ok(text) => crate::install::parse_pause_point(&text)
                .map(|(step, percent)| (Some(step), percent))
                .map_err(|e| DaemonError::Refused(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((None, None)),
            Err(e) => Err(DaemonError::Failed(format!("{}: {e}", path.display()))),
        }
    }

    async fn install_now(
        &self,
        source: &str,
        force: bool,
        mut progress: impl FnMut(Progress) + Send + 'static,
    ) -> Result<Installed, DaemonError> {
        let keys = self.keys().map_err(DaemonError::Failed)?;
        let state = self.load().await.map_err(DaemonError::Failed)?;
        let (pause_before, pause_percent) = self.pause_point()?;
        let ctx = InstallContext {
            booted_version: state.booted_entry().map(|e| e.name.version.clone()).unwrap_or_default(),
            architecture: self.settings.arch.clone(),
            failed_versions: lock(&self.history).failed_versions(),
            force,
            pause_before,
            pause_percent,
        };
        let (src, retries) = (source.to_string(), self.settings.config.fetch.retries);
        let machine = Arc::clone(&self.machine);
        let outcome = tokio::task::spawn_blocking(move || {
            machine.install(&src, retries, &keys, &ctx, state, &mut progress).map_err(DaemonError::Refused)
        })
        .await;
        outcome.unwrap_or_else(|e| Err(DaemonError::Failed(format!("the install task failed: {e}"))))
    }

    // ----------------------------------------------------------- rollback

    /// Boots the other slot next (AbState::rollback), written to the ESP.
    pub async fn rollback(&self) -> Result<WireSlot, DaemonError> {
        let mut state = self.load().await.map_err(DaemonError::Failed)?;
        let other = state.booted().other();
        let result = match state.rollback() {
            Err(e) => Err(DaemonError::Refused(e.to_string())),
            Ok(()) => {
                let version = state.entry(other).map(|e| e.name.version.clone()).unwrap_or_default();
                let entry = state.entry(other).map(|e| e.file_name()).unwrap_or_default();
                match self.apply(state).await {
                    Ok(()) => Ok(WireSlot { slot: other.name().to_string(), version, entry }),
                    Err(e) => Err(DaemonError::Failed(e)),
                }
            }
        };
        let (version, ok, message) = match &result {
            Ok(s) => (s.version.clone(), true, format!("slot {} boots next", other.name())),
            Err(e) => (String::new(), false, e.to_string()),
        };
        self.remember(|h| {
            h.record(Operation {
                kind: Kind::Rollback,
                version,
                slot: other.name().to_string(),
                ok,
                message,
                time: now(),
            })
        })
        .await;
        result
    }

    // -------------------------------------------------------------- check

    /// Reads the published metadata at `url` (or the configured source),
    /// verifies it with the image's keys and returns the candidate: the
    /// newest version for this architecture, not the booted one, not one
    /// that failed here.
    pub async fn check(&self, url: Option<&str>) -> Result<WireCandidate, DaemonError> {
        let source = match url.filter(|u| !u.is_empty()) {
            Some(u) => u.to_string(),
            None => self.settings.config.auto.source.clone().ok_or_else(|| {
                DaemonError::Refused("no update source: give a URL or set [auto] source in the settings".into())
            })?,
        };
        let keys = self.keys().map_err(DaemonError::Failed)?;
        let state = self.load().await.map_err(DaemonError::Failed)?;
        let booted = state.booted_entry().map(|e| e.name.version.clone()).unwrap_or_default();
        let failed = lock(&self.history).failed_versions();
        let base = source.trim_end_matches('/').to_string();
        let retries = self.settings.config.fetch.retries;
        let arch = self.settings.arch.clone();
        let booted2 = booted.clone();
        blocking(move || {
            let read = |name: &str, max: u64| -> Result<Vec<u8>, String> {
                let url = format!("{base}/{name}");
                let (reader, _) = fetch::open(&url, retries).map_err(|e| e.to_string())?;
                let mut bytes = Vec::new();
                reader.take(max + 1).read_to_end(&mut bytes).map_err(|e| format!("{url}: {e}"))?;
                if bytes.len() as u64 > max {
                    return Err(format!("{url}: larger than {max} bytes"));
                }
                Ok(bytes)
            };
            let json = read(publish::METADATA_FILE, publish::MAX_METADATA_LEN)?;
            let sig = read(publish::SIGNATURE_FILE, publish::MAX_SIGNATURE_LEN)?;
            let meta = publish::verify(&json, &sig, &keys, SystemTime::now())
                .map_err(|e| format!("{base}/{}: {e}", publish::METADATA_FILE))?;
            let failed_here = meta.failed_here(&booted2, &arch, &failed).iter().map(|r| r.version.clone()).collect();
            Ok(match meta.candidate(&booted2, &arch, &failed) {
                Some(r) => WireCandidate {
                    available: true,
                    version: r.version.clone(),
                    url: format!("{base}/{}", r.bundle),
                    size: r.size,
                    booted: booted2,
                    failed_here,
                },
                None => WireCandidate { booted: booted2, failed_here, ..WireCandidate::default() },
            })
        })
        .await
        .map_err(DaemonError::Failed)
    }

    // ------------------------------------------------------- auto mode

    /// One round of the automatic mode: check, install the candidate (never
    /// a version that failed here, never forced), and reboot per the
    /// policy. Returns what it did, for the log.
    pub async fn auto_round(&self) -> Result<String, DaemonError> {
        if self.bless_state() != Bless::Done {
            return Ok("this boot is not blessed yet: nothing installed".into());
        }
        let c = self.check(None).await?;
        if !c.available {
            return Ok(format!("up to date ({})", c.booted));
        }
        if lock(&self.history).has_failed(&c.version) {
            return Ok(format!("{} failed here before: not installed", c.version));
        }
        if lock(&self.history).staged.as_ref().is_some_and(|s| s.version == c.version) {
            return Ok(format!("{} is staged already, waiting for a reboot", c.version));
        }
        let installed = self.install(&c.url, false, |_| {}).await?;
        let policy = self.settings.config.auto.reboot;
        let done = format!("installed {} into slot {}", installed.version, installed.slot.name());
        match policy {
            RebootPolicy::Never => Ok(format!("{done}; reboot = never: it boots at the next reboot")),
            RebootPolicy::Immediately => {
                self.reboot_into_update().await?;
                Ok(format!("{done}; rebooting"))
            }
            RebootPolicy::Window => {
                let Some(window) = self.settings.config.auto.window else {
                    return Err(DaemonError::Refused("reboot = \"window\" without a window".into()));
                };
                let wait = window.wait(SystemTime::now());
                say(format_args!("{done}; rebooting in {}s, inside the window", wait.as_secs()));
                tokio::time::sleep(wait).await;
                self.reboot_into_update().await?;
                Ok(format!("{done}; rebooting"))
            }
        }
    }

    /// The automatic mode: a round every `auto.interval`, forever.
    pub async fn auto_loop(&self) {
        let interval = self.settings.config.auto.interval.max(Duration::from_secs(1));
        loop {
            match self.auto_round().await {
                Ok(what) => say(format_args!("auto: {what}")),
                Err(e) => say(format_args!("auto: {e}")),
            }
            tokio::time::sleep(interval).await;
        }
    }
}
