//! The daemon's half of coordinated reboots: taking a slot of the reboot
//! lock before rebooting into an update (no slot, no reboot), re-attaching
//! it after the reboot and releasing it once the boot is blessed. The lock
//! itself is behind [`RebootLock`] (etcd's in the updater binary).

use super::{lock, say, Daemon, DaemonError, Machine, Pid1};
use crate::daemon::lock::{LockRetry, RebootLock};

impl<M: Machine, P: Pid1> Daemon<M, P> {
    pub(super) fn set_lock(&self, what: impl Into<String>) {
        lock(&self.live).lock = what.into();
    }

    /// Re-attaches the slot saved before the reboot; tried `retry.tries`
    /// times while etcd does not answer. Whether a slot is held.
    pub(super) async fn resume_lock(&self, reboot_lock: &dyn RebootLock, retry: LockRetry) -> bool {
        let mut pause = retry.first;
        for attempt in 1..=retry.tries.max(1) {
            match reboot_lock.resume().await {
                Ok(true) => {
                    say(format_args!(
                        "reboot lock: holding the slot taken before the reboot until this boot is blessed"
                    ));
                    self.set_lock("holding the reboot slot taken before the reboot until this boot is blessed");
                    return true;
                }
                Ok(false) => {
                    self.set_lock("no reboot slot held");
                    return false;
                }
                Err(e) => {
                    say(format_args!("reboot lock: re-attaching the saved slot (try {attempt}): {e}"));
                    self.set_lock(format!("cannot re-attach the saved reboot slot: {e}"));
                    tokio::time::sleep(pause).await;
                    pause = retry.next(pause);
                }
            }
        }
        false
    }

    /// Releases the slot held or saved, tried `retry.tries` times; the
    /// slot otherwise goes when its lease expires.
    pub(super) async fn release_lock(&self, reboot_lock: &dyn RebootLock, retry: LockRetry, why: &str) {
        let mut pause = retry.first;
        for attempt in 1..=retry.tries.max(1) {
            match reboot_lock.release().await {
                Ok(true) => {
                    say(format_args!("reboot lock: slot released ({why})"));
                    self.set_lock(format!("no reboot slot held (released: {why})"));
                    return;
                }
                Ok(false) => {
                    self.set_lock("no reboot slot held");
                    return;
                }
                Err(e) => {
                    say(format_args!("reboot lock: releasing the slot (try {attempt}): {e}"));
                    self.set_lock(format!("cannot release the reboot slot (it goes when its lease expires): {e}"));
                    tokio::time::sleep(pause).await;
                    pause = retry.next(pause);
                }
            }
        }
    }

    /// Reboots into an installed update: with a reboot lock, takes a slot
    /// first (retried while etcd fails: no slot, no reboot); a reboot PID1
    /// refuses gives the slot back.
    pub(super) async fn reboot_into_update(&self) -> Result<(), DaemonError> {
        let Some((reboot_lock, retry)) = self.reboot_lock.clone() else {
            return self.pid1.reboot().await.map_err(DaemonError::Failed);
        };
        let mut pause = retry.first;
        let waiting = |what: String| {
            let mut live = lock(&self.live);
            if live.lock != what {
                say(format_args!("reboot lock: {what}"));
                live.lock = what;
            }
        };
        self.set_lock("taking a reboot slot");
        loop {
            match reboot_lock.acquire(&waiting).await {
                Ok(()) => break,
                Err(e) => {
                    let what = format!(
                        "no reboot slot: {e}; not rebooting, trying again in {}",
                        humantime::format_duration(pause)
                    );
                    say(format_args!("reboot lock: {what}"));
                    self.set_lock(what);
                    tokio::time::sleep(pause).await;
                    pause = retry.next(pause);
                }
            }
        }
        say(format_args!("reboot lock: slot taken, rebooting"));
        self.set_lock("holding a reboot slot: rebooting");
        match self.pid1.reboot().await {
            Ok(()) => Ok(()),
            Err(e) => {
                say(format_args!("the reboot failed ({e}): giving the reboot slot back"));
                self.release_lock(&*reboot_lock, retry, "the reboot failed").await;
                Err(DaemonError::Failed(e))
            }
        }
    }
}
