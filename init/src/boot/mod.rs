//! Early boot: the API filesystems, the data partition on /var, the /etc
//! overlay, the machine's identity.
//!
//! Two phases, run from a thread each so the event loop keeps reaping (the
//! tools they run are reaped there) and answering signals: [`early_mounts`]
//! first, then, once /dev exists and the power button can be watched,
//! [`storage_and_identity`].

use std::fmt;

pub mod ceilings;
pub mod data;
pub mod deadline;
pub mod discover;
pub mod ext4;
pub mod identity;
pub mod mounts;
pub mod readahead;
pub mod real;
pub mod system;
pub mod watchdog;

#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
mod tests;

pub use real::RealSystem;
pub use system::{Disk, MountSpec, System};

/// The steps early boot reports failures by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Mounts,
    DataPartition,
    EtcOverlay,
    MachineId,
    Hostname,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Mounts => "mounts",
            Step::DataPartition => "data partition",
            Step::EtcOverlay => "/etc overlay",
            Step::MachineId => "machine-id",
            Step::Hostname => "hostname",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error(transparent)]
    Mount(#[from] mounts::MountError),
    #[error(transparent)]
    Data(#[from] data::DataError),
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
}

/// An early boot step that failed: the machine goes into emergency.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {error}")]
pub struct BootFailure {
    pub step: Step,
    pub error: BootError,
}

fn at<T, E: Into<BootError>>(step: Step, r: Result<T, E>) -> Result<T, BootFailure> {
    r.map_err(|e| BootFailure { step, error: e.into() })
}

/// What early boot established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootReport {
    pub data: data::DataReport,
    pub machine_id: String,
    pub machine_id_created: bool,
    pub hostname: String,
}

impl BootReport {
    /// The facts for the console, one per line.
    pub fn lines(&self) -> Vec<String> {
        let mut out = self.data.lines();
        if self.machine_id_created {
            out.push(format!("machine-id: created {}", self.machine_id));
        }
        out.push(format!("hostname: {}", self.hostname));
        out
    }
}

/// What phase one hands to PID1.
#[derive(Debug)]
pub struct PhaseOne {
    /// Whether the API filesystems are mounted ([`early_mounts`]).
    pub mounted: Result<(), BootFailure>,
    /// The hardware watchdog, armed (none when the machine has none).
    pub watchdog: Option<watchdog::Watchdog>,
    /// The entry systemd-boot counts this boot against
    /// ([`deadline::counted_boot`]).
    pub counted: Option<String>,
}

/// Phase 1 as PID1 runs it: [`early_mounts`], then, /dev and efivarfs
/// being there, the watchdog is armed and the boot counter read.
pub fn phase_one(sys: &mut dyn System) -> PhaseOne {
    let mounted = early_mounts(sys);
    let watchdog = watchdog::Watchdog::arm(sys);
    let counted = deadline::counted_boot(sys);
    PhaseOne { mounted, watchdog, counted }
}

/// Phase 1: /proc, /sys, /dev and the other API filesystems; then the
/// system-wide ceilings on open files ([`ceilings`]), which need /proc,
/// and the loopback interface up (as systemd's PID1 does: etcd, sshd's
/// readiness check and containers' port forwards use 127.0.0.1, and no
/// unit should have to wait for a oneshot for it). Neither fails the
/// boot: a problem is logged.
pub fn early_mounts(sys: &mut dyn System) -> Result<(), BootFailure> {
    let mounted = at(Step::Mounts, mounts::mount_early(sys));
    for problem in ceilings::raise(sys) {
        crate::info!("early boot: {problem}");
    }
    if let Err(e) = sys.set_link_up(LOOPBACK) {
        crate::info!("early boot: loopback {LOOPBACK} not up: {e}");
    }
    mounted
}

/// The loopback interface's name.
pub const LOOPBACK: &str = "lo";

/// Phase 2: the data partition on /var, the /etc overlay, machine id and
/// hostname. Stops at the first failure: each step needs the one before.
pub fn storage_and_identity(sys: &mut dyn System) -> Result<BootReport, BootFailure> {
    let data = at(Step::DataPartition, data::setup(sys))?;
    at(Step::EtcOverlay, data::etc_overlay(sys))?;
    let (machine_id, machine_id_created) = at(Step::MachineId, identity::ensure_machine_id(sys))?;
    let hostname = at(Step::Hostname, identity::set_hostname(sys, &machine_id))?;
    Ok(BootReport { data, machine_id, machine_id_created, hostname })
}
