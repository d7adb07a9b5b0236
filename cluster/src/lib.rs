//! What Berth hosts share through etcd (etcd v3 API, through the
//! `etcd-client` crate: gRPC, no hand-written protocol code).
//!
//! - [`testing`] (feature `testing`): a real etcd for tests.

#[cfg(feature = "testing")]
pub mod testing;
