//! What the service manager reports about its units: the values the control
//! API carries and `berthctl` prints. Plain data, shared by the supervisor
//! (which fills them) and the API (which serializes them).

use serde::{Deserialize, Serialize};

/// Where a unit is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnitState {
    /// Not started (yet), or stopped on request.
    Inactive,
    /// Waiting for what it requires to be ready.
    Waiting,
    /// Its process runs; readiness not reached yet.
    Starting,
    /// Ready (long-running), or exited 0 (oneshot).
    Active,
    /// Failed; waiting for the backoff delay before the next start.
    Restarting,
    /// Being stopped: stop signal sent, waiting for the group to empty.
    Stopping,
    /// Gave up: start limit hit, a oneshot failed, or a dependency failed.
    Failed,
    /// A condition was not met; nothing was started.
    Skipped,
    /// Its main process runs but it is not doing its job: its health checks
    /// failed, or it was not ready within its start timeout, and its
    /// `health.on_failure = "degrade"` says a restart would not help. The
    /// reason says which; it becomes active again once it is ready and
    /// healthy.
    Degraded,
}

impl UnitState {
    pub const ALL: [UnitState; 9] = [
        UnitState::Inactive,
        UnitState::Waiting,
        UnitState::Starting,
        UnitState::Active,
        UnitState::Restarting,
        UnitState::Stopping,
        UnitState::Failed,
        UnitState::Skipped,
        UnitState::Degraded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UnitState::Inactive => "inactive",
            UnitState::Waiting => "waiting",
            UnitState::Starting => "starting",
            UnitState::Active => "active",
            UnitState::Restarting => "restarting",
            UnitState::Stopping => "stopping",
            UnitState::Failed => "failed",
            UnitState::Skipped => "skipped",
            UnitState::Degraded => "degraded",
        }
    }
}

/// How a process ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

/// One unit's status, as `berthctl status` shows it. Times are
/// microseconds of CLOCK_MONOTONIC (comparable with the boot timeline);
/// 0 means "not yet".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitStatus {
    pub name: String,
    pub description: String,
    pub state: UnitState,
    /// Why it is in this state, when that needs saying (the error of a
    /// failure, the unmet condition, the backoff delay).
    pub reason: String,
    /// The main process, 0 when none runs.
    pub pid: u32,
    /// When it entered `state`.
    pub since_us: u64,
    /// Restarts since boot (not counting the first start).
    pub restarts: u32,
    pub last_exit: Option<Exit>,
    /// How long the last start took from exec to ready, 0 when not ready.
    pub ready_after_us: u64,
}

impl UnitStatus {
    /// A unit named `name` in `state` with nothing else known yet (no
    /// description, reason, process, restarts or exit; times 0). Fill in
    /// the rest with struct update syntax:
    /// `UnitStatus { pid: 42, ..UnitStatus::new("etcd", UnitState::Active) }`.
    pub fn new(name: &str, state: UnitState) -> UnitStatus {
        UnitStatus {
            name: name.to_owned(),
            description: String::new(),
            state,
            reason: String::new(),
            pid: 0,
            since_us: 0,
            restarts: 0,
            last_exit: None,
            ready_after_us: 0,
        }
    }
}

/// One unit in the boot timeline (`berthctl analyze`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub name: String,
    /// CLOCK_MONOTONIC microseconds: when its dependencies were all ready
    /// (0 if it had none; an idle unit: when its hold began), when it was
    /// exec'd, when it became ready (0: never).
    pub waited_from_us: u64,
    pub started_us: u64,
    pub ready_us: u64,
    /// The units it waited for (requires + after, and what held an idle
    /// unit back), to draw the critical chain.
    pub waited_for: Vec<String>,
}

/// The boot as a whole: PID1's start, its ready time and every unit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    /// CLOCK_MONOTONIC µs at stage 0's start; 0 without one.
    pub initrd_start_us: u64,
    /// CLOCK_MONOTONIC µs at PID1's start.
    pub pid1_start_us: u64,
    /// 0 until the system is ready.
    pub ready_us: u64,
    pub units: Vec<TimelineEntry>,
}
