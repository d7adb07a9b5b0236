//! Berth's D-Bus APIs are peer to peer on root-only unix sockets, with no
//! bus daemon: PID1's control API (`org.berth.Manager1`) and the updater's
//! (`org.berth.Updater1`). This crate is what they share:
//!
//! - [`server`]: binding the socket (directory 0700, socket 0600, a stale
//!   file replaced), checking every peer (SO_PEERCRED: allowed uids only),
//!   authenticating it with a bounded SASL EXTERNAL exchange ([`sasl`])
//!   under a deadline, bounding connections, calls in flight and idle
//!   time, and serving the caller's zbus interface to it;
//! - [`client`]: connecting with a deadline, calling with a deadline, and
//!   mapping zbus's errors to what a CLI prints.
//!
//! The D-Bus specification's authentication protocol and message format
//! apply; the only mechanism offered is EXTERNAL, fd passing is declined.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

pub mod client;
pub mod sasl;
pub mod server;

pub use client::{ClientError, Peer, Service};
pub use server::{peer_allowed, CallLimit, PeerConfig, PeerServer};

/// PID1's control API: `org.berth.Manager1` at `/org/berth/Manager` on
/// `berth_layout::paths::CONTROL_SOCKET`.
pub const MANAGER: Service = Service {
    name: "berth-init",
    path: "/org/berth/Manager",
    interface: "org.berth.Manager1",
    error_prefix: "org.berth.Manager1.Error",
};

/// The updater's API: `org.berth.Updater1` at `/org/berth/Updater` on
/// `berth_layout::paths::UPDATER_SOCKET`.
pub const UPDATER: Service = Service {
    name: "berth-updater",
    path: "/org/berth/Updater",
    interface: "org.berth.Updater1",
    error_prefix: "org.berth.Updater1.Error",
};
