//! The control API's server side: what `berthctl` talks to (its client is
//! [`crate::berthctl`]; the wire types in [`wire`] are shared).
//!
//! A D-Bus interface, peer to peer on a root-only unix socket
//! ([`berth_layout::paths::CONTROL_SOCKET`]): no bus daemon. PID1 listens
//! ([`server::serve`]); every accepted connection is checked (SO_PEERCRED:
//! root only), authenticated with a small, bounded SASL exchange of our own
//! ([`sasl`], from [`berth_dbus`], shared with the updater) and then served by zbus in a task of its own, so a client that
//! sends garbage, stalls or vanishes costs one task and nothing else.
//!
//! ```text
//! interface org.berth.Manager1 at /org/berth/Manager
//!   List()                      -> a(ssssutusit)       every unit's status
//!   Status(s unit)              -> (ssssutusit)
//!   Start(s unit) Stop(s unit) Restart(s unit)
//!   Reload()                    -> (asasasas)          added removed changed errors
//!   Logs(s unit, u n)           -> a(xss)              the last n records
//!   Follow(s unit, u n)         -> a(xss)              the last n, then follow
//!   FollowNext(u timeout_ms)    -> a(xss)              records after those
//!   Timeline()                  -> (tta(stttas)t)
//!   Reboot() PowerOff()
//!   Provisioning()              -> (sssstasast)        user data: outcome source instance-id
//!                                                      sha256 probe_ms errors warnings trial_until
//!   ConfigApply(s name, ay document, u try_seconds)
//!                               -> (asassastasasasas)  changes units_changed hostname warnings
//!                                                      trial_until started stopped restarted problems
//!   ConfigConfirm()
//!   ConfigShow()                -> (bssstasst)         present source instance-id sha256
//!                                                      applied_at warnings text trial_until
//! errors: org.berth.Manager1.Error.{NoUnit,Refused,Failed,Io,Invalid}, text = the message
//! (Invalid: a document's errors, one per line)
//! ```
//!
//! The service manager is behind the [`Control`] trait, so the API (and
//! berthctl) are tested against a fake.

pub mod control;
pub mod server;
pub mod wire;

pub use berth_dbus::sasl;
pub use control::{ConfigReport, Control, ControlError, ReloadOutcome};
pub use server::{serve, serve_with, ServerConfig, ServerHandle};

/// The D-Bus interface PID1 serves.
pub const INTERFACE: &str = berth_dbus::MANAGER.interface;
/// The object it is served at.
pub const OBJECT_PATH: &str = berth_dbus::MANAGER.path;
/// The prefix of the errors it returns.
pub const ERROR_PREFIX: &str = berth_dbus::MANAGER.error_prefix;
