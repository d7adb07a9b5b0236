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
