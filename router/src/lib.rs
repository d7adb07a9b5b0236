//! berth-router: the per-host subnet router of a Berth cluster, compatible
//! with flannel's etcd layout and vxlan backend.
//!
//! Each host leases a subnet of the cluster network in etcd
//! (`/coreos.com/network/subnets/<a.b.c.d>-<len>`, an etcd v3 lease kept
//! alive), creates `flannel.<VNI>` (VXLAN) and the containers' bridge
//! `cni0`, writes the CNI config for its subnet, masquerades what leaves
//! the cluster network, and for every other host's lease programs a route,
//! a neighbour and an FDB entry on the VXLAN device, following etcd's
//! watch and reconciling every few seconds.
//!
//! Modules, one job each: [`config`] (router.toml, flannel's network
//! JSON), [`ipnet`], [`lease`] (etcd behind [`lease::Store`]), [`plan`]
//! (pure: leases + kernel state -> changes), [`netlink`] (the kernel behind
//! [`netlink::Dataplane`]), [`cni`], [`nat`], [`status`], [`daemon`] (the loop).

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

pub mod cni;
pub mod config;
pub mod daemon;
pub mod fsutil;
pub mod ipnet;
pub mod lease;
pub mod nat;
pub mod netlink;
pub mod plan;
pub mod status;
