//! Coordinated reboots as the daemon sees them: the [`RebootLock`] seam
//! (real: [`super::etcd_lock::EtcdRebootLock`], the etcd semaphore of
//! `berth_cluster::reboot_lock`; a fake in tests), so the daemon's logic
//! around a reboot is tested without etcd.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A boxed future of a lock operation; errors are the text the user sees.
pub type LockFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// Told what the lock waits for (who holds the slots), each time it waits.
pub type Waiting<'a> = &'a (dyn Fn(String) + Send + Sync);

/// The reboot semaphore: at most N hosts rebooting into an update at once.
pub trait RebootLock: Send + Sync + 'static {
    /// Takes a slot, waiting (as long as it takes) for one to be free;
    /// `waiting` is told who holds the slots each time this host waits.
    /// Returns once the slot is held, its lease kept alive and saved on
    /// disk so the next boot can release it. An error (etcd unreachable)
    /// means no slot is held: the host must not reboot.
    fn acquire<'a>(&'a self, waiting: Waiting<'a>) -> LockFuture<'a, ()>;
    /// After a boot: re-attaches the slot saved before the reboot and keeps
    /// its lease alive. `Ok(true)` when a slot was saved and is still held.
    fn resume(&self) -> LockFuture<'_, bool>;
    /// Releases the slot held or saved (its key deleted, its lease revoked,
    /// the saved file removed). `Ok(false)` when none was held. Stops the
    /// lease's keep-alives even when it fails, so the slot then goes when
    /// the lease expires.
    fn release(&self) -> LockFuture<'_, bool>;
}

/// How the daemon retries a lock operation that failed (etcd unreachable):
/// `first`, doubling up to `max` between tries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockRetry {
    pub first: Duration,
    pub max: Duration,
    /// Tries of `resume` and `release` around a boot before giving up (the
    /// slot then goes when its lease expires). `acquire` is tried until it
    /// works: the host does not reboot without a slot.
    pub tries: u32,
}

impl Default for LockRetry {
    /// 1 s doubling up to 1 min; 8 tries.
    fn default() -> Self {
        LockRetry { first: Duration::from_secs(1), max: Duration::from_secs(60), tries: 8 }
    }
}

impl LockRetry {
    /// The pause after a pause of `last`.
    pub fn next(&self, last: Duration) -> Duration {
        (last * 2).min(self.max)
    }
}
