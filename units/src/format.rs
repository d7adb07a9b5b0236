//! The unit file format: the [`Unit`] a `NAME.toml` describes once checked
//! (plain Rust types), and the defaults of what a file may leave out.
//!
//! [`super::parse_unit`] reads one in three steps, each in its own module:
//! `document` reads the text once into a tree that keeps every key's place;
//! `shape` checks its tables, keys and types; `check` checks what the values
//! mean and builds the [`Unit`]. Every problem is collected with the line
//! and path of its key. `docs/units.md` describes the format for people.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::Deserialize;

use super::error::Location;
use super::name::{Relation, UnitName};

// ---- the unit, as the supervisor sees it ------------------------------------

/// One checked unit file, defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Unit {
    pub name: UnitName,
    /// The file it was read from (after overrides: the one that won).
    pub file: PathBuf,
    /// `description`; empty when not given.
    pub description: String,
    pub service: Service,
    pub dependencies: Dependencies,
    pub restart: Restart,
    pub limits: Limits,
    pub health: Option<Health>,
    pub conditions: Conditions,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// Program (an absolute path) and arguments. Not run through a shell.
    pub exec: Vec<String>,
    /// Set on top of PID1's minimal environment.
    pub environment: BTreeMap<String, String>,
    /// Absolute; `None`: `/`.
    pub working_directory: Option<PathBuf>,
    /// `None`: root.
    pub user: Option<Account>,
    /// `None`: the user's primary group (root's when `user` is `None`).
    pub group: Option<Account>,
    /// `state_directory` (systemd's `StateDirectory=`): directories under
    /// [`STATE_ROOT`], each a relative path (`etcd`, `foo/bar`), that PID1
    /// creates before every start, owned by the unit's user and group (a
    /// tree owned by someone else is handed over whole), and names to the
    /// process in `$STATE_DIRECTORY` (absolute paths, `:`-separated).
    pub state_directory: Vec<String>,
    /// `state_directory_mode`: the permission bits those directories get
    /// (an octal string in the file, `"0700"`); default `0o755`.
    pub state_directory_mode: u32,
    pub kind: Kind,
    pub ready: Ready,
    /// How long it may take to become ready (oneshot: to exit).
    pub start_timeout: Duration,
    pub stop_signal: Signal,
    /// How long after `stop_signal` before SIGKILL.
    pub stop_timeout: Duration,
    /// What a restart (or `berthctl stop`) kills; shutdown always kills the group.
    pub kill_mode: KillMode,
    /// `exec_stop`: run (absolute program path, arguments) when the unit is
    /// stopped for good (`berthctl stop`, shutdown, removed by a reload),
    /// before `stop_signal`; given up on after `stop_timeout`. Not run for
    /// a restart. `None`: straight to `stop_signal`.
    pub exec_stop: Option<Vec<String>>,
}

/// A user or group: a name looked up at start, or a numeric id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Account {
    Name(String),
    Id(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A daemon: runs until stopped.
    #[default]
    LongRunning,
    /// Runs to completion; done when it exits 0.
    Oneshot,
}

/// When a started unit counts as ready, so that what requires it may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// The process sent `READY=1` on `$NOTIFY_SOCKET` (sd_notify).
    Notify,
    /// The process was started (exec succeeded).
    Started,
    /// A TCP connect to this address succeeds.
    Tcp(SocketAddr),
    /// A oneshot exited 0.
    Exit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KillMode {
    /// The whole cgroup: the main process and everything it started.
    #[default]
    Group,
    /// The main process only; its children live on (containerd's shims).
    Main,
}

/// One entry of a dependency list, with its place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub name: UnitName,
    pub at: Location,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dependencies {
    pub requires: Vec<Dependency>,
    pub wants: Vec<Dependency>,
    pub after: Vec<Dependency>,
    /// `required_for_ready`: the machine is not ready without this unit:
    /// PID1's ready line waits until it has settled, as it does for every
    /// unit another one requires.
    pub required_for_ready: bool,
    /// `idle` (systemd's `Type=idle`, with its 5 s limit): once its own
    /// dependencies allow, the unit's first start also waits until every
    /// other unit the machine's readiness waits for has settled, or for at
    /// most 5 s. For services that need not race the container runtime
    /// for the boot's CPU (an SSH server, the updater, time sync).
    pub idle: bool,
}

impl Dependencies {
    pub fn get(&self, relation: Relation) -> &[Dependency] {
        match relation {
            Relation::Requires => &self.requires,
            Relation::Wants => &self.wants,
            Relation::After => &self.after,
        }
    }

    pub(crate) fn get_mut(&mut self, relation: Relation) -> &mut Vec<Dependency> {
        match relation {
            Relation::Requires => &mut self.requires,
            Relation::Wants => &mut self.wants,
            Relation::After => &mut self.after,
        }
    }

    /// Every entry with its relation, in file order per relation.
    pub fn all(&self) -> impl Iterator<Item = (Relation, &Dependency)> {
        Relation::ALL.into_iter().flat_map(move |r| self.get(r).iter().map(move |d| (r, d)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Whenever it exits (a long-running unit only).
    Always,
    /// When it exits non-zero, is killed by a signal, times out or fails
    /// its health check.
    OnFailure,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restart {
    pub policy: RestartPolicy,
    /// The delay before the first restart; doubled for each further one.
    pub backoff_initial: Duration,
    /// The delay never grows past this.
    pub backoff_max: Duration,
    /// At most this many starts within `start_limit_interval`; one more and
    /// the unit is failed for good (until `berthctl restart`).
    pub start_limit: u32,
    pub start_limit_interval: Duration,
}

impl Restart {
    /// The delay before restart number `attempt` (1 for the first):
    /// `backoff_initial * 2^(attempt-1)`, at most `backoff_max`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.backoff_initial.saturating_mul(factor).min(self.backoff_max)
    }
}

/// A cgroup limit that may be unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Max,
    Value(u64),
}

impl fmt::Display for Limit {
    /// As the cgroup file takes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Max => f.write_str("max"),
            Limit::Value(v) => write!(f, "{v}"),
        }
    }
}

/// cgroup v2 limits of the unit's cgroup; `None` leaves the kernel's default.
/// Also the process resource limits (setrlimit(2)) its processes start with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Limits {
    /// `memory.max`, bytes.
    pub memory_max: Option<Limit>,
    /// `cpu.weight`, 1..=10000.
    pub cpu_weight: Option<u16>,
    /// `pids.max`.
    pub pids_max: Option<Limit>,
    /// The rlimits the unit sets (`nofile = "1024:524288"`); one it does
    /// not set is inherited from PID1, but for [`Rlimit::Nofile`], which is
    /// [`DEFAULT_NOFILE`] then.
    pub rlimits: BTreeMap<Rlimit, ResourceLimit>,
}

/// A process resource limit of `[limits]`, set with setrlimit(2) between
/// fork and exec. The key is the kernel's name without `RLIMIT_`, in lower
/// case (`RLIMIT_NOFILE`, systemd's `LimitNOFILE=`: `nofile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rlimit {
    /// Open files (file descriptors) per process.
    Nofile,
    /// Processes (threads) of the unit's user, counted over the whole system.
    Nproc,
    /// Bytes of a core dump; 0: none.
    Core,
    /// Bytes of memory locked in RAM (mlock, io_uring, BPF maps on old kernels).
    Memlock,
    /// Bytes of a process's main stack.
    Stack,
    /// Bytes of address space.
    As,
    /// Bytes of a file the process writes.
    Fsize,
    /// Signals queued for the unit's user.
    Sigpending,
    /// Bytes in POSIX message queues of the unit's user.
    Msgqueue,
    /// Highest real-time priority (0-99) the process may set.
    Rtprio,
}

impl Rlimit {
    /// Every one, in the order `docs/units.md` lists them.
    pub const ALL: [Rlimit; 10] = [
        Rlimit::Nofile,
        Rlimit::Nproc,
        Rlimit::Core,
        Rlimit::Memlock,
        Rlimit::Stack,
        Rlimit::As,
        Rlimit::Fsize,
        Rlimit::Sigpending,
        Rlimit::Msgqueue,
        Rlimit::Rtprio,
    ];

    /// Its key in `[limits]`.
    pub fn key(self) -> &'static str {
        match self {
            Rlimit::Nofile => "nofile",
            Rlimit::Nproc => "nproc",
            Rlimit::Core => "core",
            Rlimit::Memlock => "memlock",
            Rlimit::Stack => "stack",
            Rlimit::As => "as",
            Rlimit::Fsize => "fsize",
            Rlimit::Sigpending => "sigpending",
            Rlimit::Msgqueue => "msgqueue",
            Rlimit::Rtprio => "rtprio",
        }
    }

    /// Whether its values are bytes (and so take `K`, `M`, `G`, `T`).
    pub fn is_bytes(self) -> bool {
        matches!(self, Rlimit::Core | Rlimit::Memlock | Rlimit::Stack | Rlimit::As | Rlimit::Fsize | Rlimit::Msgqueue)
    }

    /// The resource number setrlimit(2) takes.
    pub fn resource(self) -> libc::__rlimit_resource_t {
        match self {
            Rlimit::Nofile => libc::RLIMIT_NOFILE,
            Rlimit::Nproc => libc::RLIMIT_NPROC,
            Rlimit::Core => libc::RLIMIT_CORE,
            Rlimit::Memlock => libc::RLIMIT_MEMLOCK,
            Rlimit::Stack => libc::RLIMIT_STACK,
            Rlimit::As => libc::RLIMIT_AS,
            Rlimit::Fsize => libc::RLIMIT_FSIZE,
            Rlimit::Sigpending => libc::RLIMIT_SIGPENDING,
            Rlimit::Msgqueue => libc::RLIMIT_MSGQUEUE,
            Rlimit::Rtprio => libc::RLIMIT_RTPRIO,
        }
    }
}

/// The soft limit (what the process gets) and the hard one (up to which it
/// may raise the soft one itself); [`Limit::Max`] is `RLIM_INFINITY`,
/// written `"infinity"`. `soft <= hard`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceLimit {
    pub soft: Limit,
    pub hard: Limit,
}

impl fmt::Display for ResourceLimit {
    /// As unit files write it: `1024:524288`, `infinity`, `65536`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let one = |l: Limit| match l {
            Limit::Max => "infinity".to_owned(),
            Limit::Value(v) => v.to_string(),
        };
        if self.soft == self.hard {
            f.write_str(&one(self.soft))
        } else {
            write!(f, "{}:{}", one(self.soft), one(self.hard))
        }
    }
}

/// The open files of a unit that does not set `nofile`, as systemd gives
/// services (`DefaultLimitNOFILE=1024:524288`): 1024 for programs that
/// still use select(2), which cannot watch a descriptor above 1023; up to
/// 524288 for those that raise it themselves (Go programs do at start).
pub const DEFAULT_NOFILE: ResourceLimit = ResourceLimit { soft: Limit::Value(1024), hard: Limit::Value(524_288) };

impl Limits {
    /// The cgroup files to write and what to write in them.
    pub fn cgroup_settings(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(m) = self.memory_max {
            out.push(("memory.max", m.to_string()));
        }
        if let Some(w) = self.cpu_weight {
            out.push(("cpu.weight", w.to_string()));
        }
        if let Some(p) = self.pids_max {
            out.push(("pids.max", p.to_string()));
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub check: HealthCheck,
    /// Time between checks, starting once the unit is ready.
    pub interval: Duration,
    /// A check that takes longer has failed.
    pub timeout: Duration,
    /// This many failed checks in a row restart the unit (or, with
    /// [`HealthAction::Degrade`], mark it degraded).
    pub failures: u32,
    /// `on_failure`: what `failures` failed checks in a row do.
    pub on_failure: HealthAction,
}

/// What a unit's failing health check does (`health.on_failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealthAction {
    /// Stop it and decide as for a failure: restart per the policy.
    #[default]
    Restart,
    /// Mark it degraded and leave it running, for units a restart cannot
    /// help (etcd without quorum): checks go on, and one that passes makes
    /// it active again. A start that is not ready within `start_timeout` is
    /// degraded the same way instead of being stopped.
    Degrade,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheck {
    /// Run this (absolute program path, arguments); healthy when it exits 0.
    Command(Vec<String>),
    /// Healthy when a TCP connect succeeds.
    Tcp(SocketAddr),
}

/// Conditions checked just before the start; a unit whose conditions do not
/// hold is skipped (not failed).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Conditions {
    /// `Some(true)`: only on the first boot; `Some(false)`: never on it.
    pub first_boot: Option<bool>,
    /// Every one must hold.
    pub path_exists: Vec<PathCondition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathCondition {
    pub path: PathBuf,
    /// `"!/path"`: the path must not exist.
    pub negate: bool,
}

impl Conditions {
    /// Whether the unit should start: `Err` names the first condition that
    /// does not hold. Pure: the caller says whether this is the first boot
    /// and how to test a path.
    pub fn check(&self, first_boot: bool, exists: impl Fn(&Path) -> bool) -> Result<(), String> {
        if let Some(want) = self.first_boot {
            if want != first_boot {
                return Err(if want {
                    "conditions.first_boot: not the first boot".to_owned()
                } else {
                    "conditions.first_boot: this is the first boot".to_owned()
                });
            }
        }
        for c in &self.path_exists {
            if exists(&c.path) == c.negate {
                let verdict = if c.negate { "exists" } else { "does not exist" };
                return Err(format!("conditions.path_exists: {} {verdict}", c.path.display()));
            }
        }
        Ok(())
    }
}

// ---- defaults ----------------------------------------------------------------

/// Where `state_directory` names are: systemd's `/var/lib`, on the data
/// partition.
pub const STATE_ROOT: &str = "/var/lib";
/// `state_directory_mode` when not given (systemd's default).
pub const DEFAULT_STATE_DIRECTORY_MODE: u32 = 0o755;
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_STOP_SIGNAL: Signal = Signal::SIGTERM;
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_millis(100);
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);
pub const DEFAULT_START_LIMIT: u32 = 5;
pub const DEFAULT_START_LIMIT_INTERVAL: Duration = Duration::from_secs(60);
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_HEALTH_FAILURES: u32 = 3;
