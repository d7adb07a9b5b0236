//! The real [`RebootLock`]: the etcd semaphore of
//! `berth_cluster::reboot_lock` (keys under `/berth/reboot-lock/`), the
//! slot kept on disk in [`SLOT_FILE`] under the updater's state directory
//! across the reboot.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use berth_cluster::reboot_lock::{self, Held, Slot};

use super::lock::{LockFuture, RebootLock, Waiting};
use crate::config;

/// The saved slot's file name in the updater's state directory
/// (`/var/lib/berth/updater/reboot-lock.json`): `{"key", "lease", "machine_id"}`.
pub const SLOT_FILE: &str = "reboot-lock.json";

/// This host's machine-id, from `/etc/machine-id`.
pub const MACHINE_ID: &str = "/etc/machine-id";

/// The semaphore in etcd for this host.
pub struct EtcdRebootLock {
    settings: reboot_lock::Settings,
    machine_id: String,
    hostname: String,
    slot_file: PathBuf,
    held: Mutex<Option<Held>>,
}

impl EtcdRebootLock {
    /// For the settings' `[reboot_lock]`, this host (`machine_id`, shown
    /// as `hostname`), the slot saved in `state_dir`/[`SLOT_FILE`].
    pub fn new(c: &config::RebootLock, machine_id: &str, hostname: &str, state_dir: &std::path::Path) -> Self {
        EtcdRebootLock {
            settings: reboot_lock::Settings {
                endpoints: c.endpoints.clone(),
                max: c.max,
                ttl: c.ttl,
                timeout: Duration::from_secs(5),
            },
            machine_id: machine_id.to_string(),
            hostname: hostname.to_string(),
            slot_file: state_dir.join(SLOT_FILE),
            held: Mutex::new(None),
        }
    }

    async fn connect(&self) -> Result<reboot_lock::RebootLock, String> {
        reboot_lock::RebootLock::connect(self.settings.clone(), &self.machine_id, &self.hostname)
            .await
            .map_err(|e| e.to_string())
    }

    fn keep(&self, held: Option<Held>) -> Option<Held> {
        let mut g = self.held.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *g, held)
    }
}

impl RebootLock for EtcdRebootLock {
    fn acquire<'a>(&'a self, waiting: Waiting<'a>) -> LockFuture<'a, ()> {
        Box::pin(async move {
            let lock = self.connect().await?;
            // A slot saved by an earlier try keeps its lease (and place).
            let previous = Slot::load(&self.slot_file).map_err(|e| e.to_string())?;
            let queued = lock.enqueue(previous.as_ref()).await.map_err(|e| e.to_string())?;
            // Saved while queued: an updater restarted meanwhile finds it
            // (and releases it once blessed), a retry keeps its place.
            if let Err(e) = queued.slot.save(&self.slot_file) {
                // Not saved: the next boot could not release it; give it back.
                let _ = lock.release(&queued.slot).await;
                return Err(e.to_string());
            }
            let held = lock
                .wait(queued, None, |status| {
                    waiting(format!(
                        "waiting for a reboot slot ({} at once): held by {}",
                        status.max,
                        status.holders_text()
                    ))
                })
                .await
                .map_err(|e| e.to_string())?;
            self.keep(Some(held));
            Ok(())
        })
    }

    fn resume(&self) -> LockFuture<'_, bool> {
        Box::pin(async move {
            let Some(slot) = Slot::load(&self.slot_file).map_err(|e| e.to_string())? else { return Ok(false) };
            let lock = self.connect().await?;
            match lock.resume(&slot).await.map_err(|e| e.to_string())? {
                Some(held) => {
                    self.keep(Some(held));
                    Ok(true)
                }
                None => {
                    Slot::forget(&self.slot_file).map_err(|e| e.to_string())?;
                    Ok(false)
                }
            }
        })
    }

    fn release(&self) -> LockFuture<'_, bool> {
        Box::pin(async move {
            // Stop the keep-alives first: a release that fails still frees
            // the slot when the lease expires.
            let held = self.keep(None);
            let slot = match held {
                Some(h) => Some(h.slot.clone()),
                None => Slot::load(&self.slot_file).map_err(|e| e.to_string())?,
            };
            let Some(slot) = slot else { return Ok(false) };
            let lock = self.connect().await?;
            lock.release(&slot).await.map_err(|e| e.to_string())?;
            Slot::forget(&self.slot_file).map_err(|e| e.to_string())?;
            Ok(true)
        })
    }
}
