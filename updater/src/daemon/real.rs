//! The real [`Machine`] (the disk through `system::` and the install
//! engine) and the real [`Pid1`] (PID1's control API on
//! [`berth_layout::paths::CONTROL_SOCKET`]).

use std::path::PathBuf;
use std::time::Duration;

use berth_dbus::{Peer, MANAGER};

use super::service::{Machine, Pid1, Readiness};
use crate::bundle::KeyRing;
use crate::install::{self, InstallContext, Installed, Progress};
use crate::state::{AbState, FileOp};
use crate::system::{self, RealTarget};

/// Where this boot's id is.
pub const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// This machine's disk and ESP.
#[derive(Debug, Default)]
pub struct RealMachine;

impl Machine for RealMachine {
    fn load(&self) -> Result<AbState, String> {
        let mut target = RealTarget::open().map_err(|e| e.to_string())?;
        system::load_state(&mut target).map_err(|e| e.to_string())
    }

    fn apply(&self, state: &AbState) -> Result<(), String> {
        // A plan that writes a payload is refused by `apply` (NeedsBundle).
        let plan: Vec<FileOp> = state.plan();
        let mut target = RealTarget::open().map_err(|e| e.to_string())?;
        system::apply(&plan, &mut target).map_err(|e| e.to_string())
    }

    fn install(
        &self,
        source: &str,
        retries: u32,
        keys: &KeyRing,
        ctx: &InstallContext,
        state: AbState,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Installed, String> {
        let mut target = RealTarget::open().map_err(|e| e.to_string())?;
        install::install_from(source, retries, keys, ctx, state, &mut target, progress).map_err(|e| e.to_string())
    }

    fn boot_id(&self) -> String {
        std::fs::read_to_string(BOOT_ID).map(|s| s.trim().to_string()).unwrap_or_default()
    }
}

/// PID1 through its control API; a connection per question.
#[derive(Clone, Debug)]
pub struct RealPid1 {
    pub socket: PathBuf,
    pub timeout: Duration,
}

/// `Timeline()`'s answer as the updater reads it: `(tta(stttas)t)` (PID1's
/// start, its ready time or 0, the units, stage 0's start or 0).
type Timeline = (u64, u64, Vec<(String, u64, u64, u64, Vec<String>)>, u64);
/// `List()`'s answer: `a(ssssutusit)`; name and state are what is read.
type UnitList = Vec<(String, String, String, String, u32, u64, u32, String, i32, u64)>;

impl Pid1 for RealPid1 {
    async fn readiness(&self) -> Result<Readiness, String> {
        let peer = Peer::connect(&self.socket, MANAGER, self.timeout).await.map_err(|e| e.to_string())?;
        let timeline: Timeline = peer.call("Timeline", &(), self.timeout).await.map_err(|e| e.to_string())?;
        let units: UnitList = peer.call("List", &(), self.timeout).await.map_err(|e| e.to_string())?;
        let mut failed: Vec<String> = units.into_iter().filter(|u| u.1 == "failed").map(|u| u.0).collect();
        failed.sort();
        Ok(Readiness { ready: timeline.1 != 0, failed })
    }

    async fn reboot(&self) -> Result<(), String> {
        let peer = Peer::connect(&self.socket, MANAGER, self.timeout).await.map_err(|e| e.to_string())?;
        peer.call::<_, ()>("Reboot", &(), self.timeout).await.map_err(|e| e.to_string())
    }
}
