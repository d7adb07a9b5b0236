//! berthctl's side of the control API: the D-Bus client of
//! [`crate::api`], and what berthctl makes of the answers (the tables of
//! `status`, the log lines, `analyze`'s blame and critical chain), and `status`'s etcd section
//! ([`etcd`], from etcdctl's JSON). Pure
//! rendering, tested without a server; `src/bin/berthctl.rs` only wires.

pub mod analyze;
pub mod client;
pub mod etcd;
pub mod render;
pub mod router;
pub mod update;

pub use client::{Client, ClientError};
