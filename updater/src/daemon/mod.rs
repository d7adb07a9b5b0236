//! `berth-updater`, the daemon: the D-Bus interface `org.berth.Updater1`
//! ([`api`]) over the daemon's logic ([`service`]): status, install,
//! rollback and check; at start the health gate and the bless of a counted
//! boot (systemd's Automatic Boot Assessment: the counter is removed from
//! the entry `LoaderBootCountPath` names only once every required unit is
//! ready and every `[[gate.check]]` passes); the automatic mode; and the
//! history of what it did and of the versions that failed here
//! ([`history`]); coordinated reboots: a slot of the etcd semaphore
//! before rebooting into an update, released once the next boot is
//! blessed ([`lock`], [`etcd_lock`]).
//!
//! It runs unattended, so it follows PID1's rule: no panicking shortcuts.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

pub mod api;
#[cfg(feature = "etcd-lock")]
pub mod etcd_lock;
pub mod history;
pub mod lock;
pub mod real;
pub mod service;
pub mod wire;

pub use lock::{LockRetry, RebootLock};
pub use service::{Bless, Daemon, DaemonError, Machine, Pid1, Readiness, Settings};
