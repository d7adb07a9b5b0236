//! The router's loop: lease a subnet, set up the host, then follow the
//! other hosts' leases (watch + periodic list) and keep the kernel in line.
//!
//! Fault rules:
//! - etcd away (an error from any call, a broken watch): state degraded,
//!   retries with backoff, and the kernel's routes stay as they are; only
//!   a successful list or a watch's delete event removes a peer.
//! - this host's lease lost (keep-alive says it is gone, or a list or
//!   watch shows its key gone or someone else's): it leases again,
//!   preferring the same subnet.
//! - a bad network config (overlap with a host network, a subnet length
//!   that does not fit): degraded with the reason, retried with backoff.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::cni;
use crate::config::{NetworkConfig, RouterConfig};
use crate::ipnet::Ipv4Net;
use crate::lease::{LeaseAttrs, Listing, Store, StoreError, SubnetLease, VxlanData, WatchEvent};
use crate::nat::Nat;
use crate::netlink::{Dataplane, Underlay, Vtep, VxlanSpec, VXLAN_OVERHEAD};
use crate::plan::{self, Peer};
use crate::status::{now_unix_ms, Convergence, PeerStatus, State, Status};

/// Where the router keeps and writes things (the defaults are the real
/// paths; tests point them into a temporary directory).
#[derive(Debug, Clone)]
pub struct Paths {
    /// The status file.
    pub status: PathBuf,
    /// Where the last subnet is remembered (`<dir>/subnet`).
    pub state_dir: PathBuf,
    /// The CNI config directory.
    pub cni_dir: PathBuf,
}

impl Default for Paths {
    fn default() -> Paths {
        Paths {
            status: PathBuf::from(crate::status::STATUS_PATH),
            state_dir: PathBuf::from(berth_layout::paths::ROUTER_STATE_DIR),
            cni_dir: PathBuf::from(cni::CNI_DIR),
        }
    }
}

/// Why setting up failed (each is retried with backoff).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DaemonError {
    /// etcd.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The kernel.
    #[error(transparent)]
    Net(#[from] crate::netlink::NetError),
    /// The network config in etcd.
    #[error("{key}: {source}")]
    Network {
        /// The key it was read from.
        key: String,
        /// Why it is unusable.
        source: crate::config::NetworkError,
    },
    /// NAT.
    #[error(transparent)]
    Nat(#[from] crate::nat::NatError),
    /// No free subnet, or lost every race for one.
    #[error("no subnet: {0}")]
    NoSubnet(String),
    /// A file (CNI config, state).
    #[error("{0}")]
    File(String),
}

/// This host's lease while it holds one.
#[derive(Debug, Clone)]
struct Held {
    subnet: Ipv4Net,
    lease_id: i64,
}

/// The router: its settings, etcd, the kernel, NAT.
pub struct Router<S, D, N> {
    cfg: RouterConfig,
    paths: Paths,
    store: S,
    dp: D,
    nat: N,
    status: Status,
    network: Option<NetworkConfig>,
    underlay: Option<Underlay>,
    vtep: Option<Vtep>,
    held: Option<Held>,
    peers: BTreeMap<Ipv4Net, Peer>,
}

const BACKOFF_MAX: Duration = Duration::from_secs(30);

impl<S: Store, D: Dataplane, N: Nat> Router<S, D, N> {
    /// A router that has not started yet.
    pub fn new(cfg: RouterConfig, paths: Paths, store: S, dp: D, nat: N) -> Router<S, D, N> {
        Router {
            cfg,
            paths,
            store,
            dp,
            nat,
            status: Status::default(),
            network: None,
            underlay: None,
            vtep: None,
            held: None,
            peers: BTreeMap::new(),
        }
    }

    fn publish(&mut self) {
        if let Err(e) = self.status.write(&self.paths.status) {
            eprintln!("berth-router: writing the status: {e}");
        }
    }

    fn fail(&mut self, what: &str, e: &dyn std::fmt::Display) {
        let msg = format!("{what}: {e}");
        if self.status.last_error.as_deref() != Some(msg.as_str()) || self.status.state != State::Degraded {
            eprintln!("berth-router: {msg}");
        }
        self.status.state = State::Degraded;
        self.status.last_error = Some(msg);
        self.publish();
    }

    fn ok(&mut self) {
        if self.status.state != State::Running || self.status.last_error.is_some() {
            eprintln!("berth-router: running");
        }
        self.status.state = State::Running;
        self.status.last_error = None;
        self.publish();
    }

    /// Runs until `stop` turns true: then revokes the lease and returns.
    /// Never returns on its own: every failure is retried.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        self.status.state = State::Starting;
        self.status.lease_ttl_s = Some(self.cfg.lease_ttl.as_secs());
        self.publish();
        let mut backoff = Duration::from_millis(500);
        let listing = loop {
            match self.setup().await {
                Ok(l) => break l,
                Err(e) => {
                    self.fail("starting", &e);
                    if sleep_or_stop(backoff, &mut stop).await {
                        self.stopped().await;
                        return;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        };
        self.take_listing(&listing);
        let mut watcher = self.store.watch(listing.revision + 1).await.ok();
        self.converge().await;
        let ttl = self.cfg.lease_ttl;
        let mut keepalive = tokio::time::interval((ttl / 3).max(Duration::from_millis(500)));
        let mut reconcile = tokio::time::interval(self.cfg.reconcile_interval);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                r = stop.changed() => {
                    if r.is_err() || *stop.borrow() {
                        break;
                    }
                }
                ev = next_event(&mut watcher) => {
                    self.on_event(ev, &mut watcher).await;
                    // Drain what else is queued before touching the kernel once.
                    while let Some(rx) = watcher.as_mut() {
                        match rx.try_recv() {
                            Ok(ev) => self.on_event(Some(ev), &mut watcher).await,
                            Err(_) => break,
                        }
                    }
                    self.converge().await;
                }
                _ = keepalive.tick() => self.keep_alive().await,
                _ = reconcile.tick() => {
                    self.resync(&mut watcher).await;
                    self.converge().await;
                }
            }
        }
        self.stopped().await;
    }

    async fn stopped(&mut self) {
        if let Some(h) = self.held.take() {
            match self.store.revoke(h.lease_id).await {
                Ok(()) => eprintln!("berth-router: stopped; lease {:x} for {} revoked", h.lease_id, h.subnet),
                Err(e) => eprintln!("berth-router: stopped; revoking lease {:x}: {e}", h.lease_id),
            }
        }
        self.status.state = State::Stopped;
        self.status.lease_id = None;
        self.publish();
    }

    /// The network config, the underlay, the VXLAN device, a lease, the
    /// host's side (addresses, bridge, CNI, NAT). Returns the listing the
    /// lease was taken against.
    async fn setup(&mut self) -> Result<Listing, DaemonError> {
        let network = self.network_config().await?;
        self.status.network = Some(network.network.to_string());
        self.status.subnet_len = Some(network.subnet_len);
        let underlay = self.dp.underlay(self.cfg.interface.as_deref(), self.cfg.public_ip).await?;
        let vxlan_name = network.vxlan_name();
        let host = self.dp.host_networks(&[vxlan_name.clone(), cni::BRIDGE.to_string()]).await?;
        network
            .overlap(&host)
            .map_err(|source| DaemonError::Network { key: format!("{}/config", self.cfg.etcd_prefix), source })?;
        self.status.interface = Some(underlay.name.clone());
        self.status.public_ip = Some(underlay.ip.to_string());
        self.status.vxlan = Some(vxlan_name);
        self.status.mtu = Some(underlay.mtu.saturating_sub(VXLAN_OVERHEAD));
        self.dp.enable_forwarding().await?;
        self.network = Some(network);
        self.underlay = Some(underlay);
        // The device first: its MAC goes into the lease.
        let vtep = self.dp.ensure_vxlan(&self.vxlan_spec(None)?).await?;
        self.vtep = Some(vtep);
        self.status.vtep_mac = Some(vtep.mac.to_string());
        let listing = self.acquire().await?;
        self.host_side().await?;
        Ok(listing)
    }

    /// `<prefix>/config`, written from router.toml if absent.
    async fn network_config(&mut self) -> Result<NetworkConfig, DaemonError> {
        let key = format!("{}/config", self.cfg.etcd_prefix);
        let value = match self.store.get_config().await? {
            Some(v) => v,
            None => {
                if self.store.create_config(&self.cfg.network.to_json()).await? {
                    eprintln!("berth-router: wrote {key}: {}", self.cfg.network.to_json());
                }
                self.store
                    .get_config()
                    .await?
                    .ok_or_else(|| DaemonError::NoSubnet(format!("{key} vanished after it was written")))?
            }
        };
        NetworkConfig::from_json(&value).map_err(|source| DaemonError::Network { key, source })
    }

    fn vxlan_spec(&self, address: Option<Ipv4Addr>) -> Result<VxlanSpec, DaemonError> {
        let (Some(n), Some(u)) = (&self.network, &self.underlay) else {
            return Err(DaemonError::NoSubnet("no network config yet".into()));
        };
        Ok(VxlanSpec {
            name: n.vxlan_name(),
            vni: n.backend.vni,
            port: n.backend.port,
            local: u.ip,
            underlay_index: u.index,
            mtu: u.mtu.saturating_sub(VXLAN_OVERHEAD),
            address,
        })
    }

    fn attrs(&self) -> Option<LeaseAttrs> {
        Some(LeaseAttrs {
            public_ip: self.underlay.as_ref()?.ip,
            backend_type: "vxlan".into(),
            backend_data: VxlanData { vni: self.network.as_ref()?.backend.vni, vtep_mac: self.vtep?.mac.to_string() },
        })
    }

    fn saved_subnet(&self) -> Option<Ipv4Net> {
        std::fs::read_to_string(self.paths.state_dir.join("subnet")).ok()?.trim().parse().ok()
    }

    /// Leases a subnet: the one held before (this run, the state file, or
    /// a key with this host's PublicIP) when free, else a free one; a
    /// create-only transaction, retried against a fresh list when another
    /// host won the race.
    async fn acquire(&mut self) -> Result<Listing, DaemonError> {
        let (Some(network), Some(attrs)) = (self.network.clone(), self.attrs()) else {
            return Err(DaemonError::NoSubnet("not set up".into()));
        };
        let seed = u64::from(u32::from(attrs.public_ip)).wrapping_mul(2654435761);
        let ttl = i64::try_from(self.cfg.lease_ttl.as_secs()).unwrap_or(30);
        let lease_id = self.store.grant(ttl).await?;
        for attempt in 0..16u64 {
            let listing = self.store.list().await?;
            let mine = listing.leases.iter().find(|l| l.attrs.public_ip == attrs.public_ip).cloned();
            let preferred = self
                .held
                .as_ref()
                .map(|h| h.subnet)
                .or_else(|| self.saved_subnet())
                .or(mine.as_ref().map(|l| l.subnet));
            let taken: BTreeSet<Ipv4Net> =
                listing.leases.iter().filter(|l| l.attrs.public_ip != attrs.public_ip).map(|l| l.subnet).collect();
            let Some(subnet) =
                plan::choose_subnet(network.network, network.subnet_len, &taken, preferred, seed.wrapping_add(attempt))
            else {
                let _ = self.store.revoke(lease_id).await;
                return Err(DaemonError::NoSubnet(format!(
                    "every /{} of {} is leased",
                    network.subnet_len, network.network
                )));
            };
            let existing = listing.leases.iter().find(|l| l.subnet == subnet);
            let takeover = existing.filter(|l| l.attrs.public_ip == attrs.public_ip).map(|l| l.mod_revision);
            if existing.is_some() && takeover.is_none() {
                continue;
            }
            if self.store.create_lease(subnet, &attrs, lease_id, takeover).await? {
                if let Some(old) = existing.filter(|l| l.lease_id != 0 && l.lease_id != lease_id) {
                    let _ = self.store.revoke(old.lease_id).await;
                }
                if let Some(old) = self.held.replace(Held { subnet, lease_id }) {
                    if old.lease_id != lease_id {
                        let _ = self.store.revoke(old.lease_id).await;
                    }
                }
                eprintln!("berth-router: leased {subnet} (lease {lease_id:x}, ttl {ttl}s)");
                self.status.subnet = Some(subnet.to_string());
                self.status.lease_id = Some(format!("{lease_id:x}"));
                if let Err(e) =
                    crate::fsutil::write_atomic(&self.paths.state_dir.join("subnet"), format!("{subnet}\n").as_bytes())
                {
                    eprintln!("berth-router: remembering the subnet: {e}");
                }
                let mut listing = listing;
                listing.leases.retain(|l| l.subnet != subnet);
                listing.leases.push(SubnetLease { subnet, attrs: attrs.clone(), lease_id, mod_revision: 0 });
                return Ok(listing);
            }
        }
        let _ = self.store.revoke(lease_id).await;
        Err(DaemonError::NoSubnet("lost the race for a subnet 16 times".into()))
    }

    /// The VXLAN device's address, the bridge, the CNI config, NAT.
    async fn host_side(&mut self) -> Result<(), DaemonError> {
        let (Some(held), Some(network)) = (self.held.clone(), self.network.clone()) else {
            return Ok(());
        };
        let spec = self.vxlan_spec(Some(held.subnet.addr()))?;
        let vtep = self.dp.ensure_vxlan(&spec).await?;
        self.vtep = Some(vtep);
        let gateway = cni::gateway(held.subnet)
            .ok_or_else(|| DaemonError::NoSubnet(format!("{} has no host addresses", held.subnet)))?;
        self.dp.ensure_bridge(cni::BRIDGE, gateway, held.subnet.prefix_len(), spec.mtu).await?;
        let text = cni::conflist(network.network, held.subnet, spec.mtu);
        let path = self.paths.cni_dir.join(cni::CNI_FILE);
        crate::fsutil::write_atomic(&path, text.as_bytes()).map_err(|e| DaemonError::File(e.to_string()))?;
        self.nat.ensure(network.network).await?;
        Ok(())
    }

    fn own_subnet(&self) -> Option<Ipv4Net> {
        self.held.as_ref().map(|h| h.subnet)
    }

    /// A complete list: the peers are exactly its other leases.
    fn take_listing(&mut self, listing: &Listing) {
        let own = self.own_subnet();
        self.peers = listing
            .leases
            .iter()
            .filter(|l| Some(l.subnet) != own)
            .filter_map(|l| Peer::from_lease(l).map(|p| (l.subnet, p)))
            .collect();
        for (key, why) in &listing.skipped {
            eprintln!("berth-router: ignoring {key}: {why}");
        }
    }

    async fn on_event(&mut self, ev: Option<WatchEvent>, watcher: &mut Option<mpsc::Receiver<WatchEvent>>) {
        match ev {
            Some(WatchEvent::Put(l)) if Some(l.subnet) == self.own_subnet() => {
                // A put of this host's own key (even a stale one, from a
                // lease it has replaced since) is not a loss; another
                // host's is.
                let mine = self.attrs().is_some_and(|a| a.public_ip == l.attrs.public_ip);
                if !mine {
                    self.lost(&format!("{} was taken over by {}", l.subnet, l.attrs.public_ip)).await;
                }
            }
            Some(WatchEvent::Put(l)) => {
                if let Some(p) = Peer::from_lease(&l) {
                    self.peers.insert(l.subnet, p);
                }
            }
            Some(WatchEvent::Delete(n)) if Some(n) == self.own_subnet() => {
                self.lost(&format!("the key of {n} was deleted")).await
            }
            Some(WatchEvent::Delete(n)) => {
                self.peers.remove(&n);
            }
            Some(WatchEvent::Broken(why)) => {
                *watcher = None;
                self.fail("watch", &why);
            }
            None => {
                *watcher = None;
            }
        }
    }

    /// Whether etcd positively says this host still holds its key with
    /// its current lease (a stale delete event from before a re-lease).
    async fn still_held(&self) -> bool {
        let Some(h) = &self.held else { return false };
        match self.store.list().await {
            Ok(l) => l.leases.iter().any(|l| l.subnet == h.subnet && l.lease_id == h.lease_id),
            Err(_) => false,
        }
    }

    /// This host's lease is gone: lease again (the same subnet if free).
    async fn lost(&mut self, why: &str) {
        if self.still_held().await {
            return;
        }
        eprintln!("berth-router: lease lost ({why}); leasing again");
        let before = self.own_subnet();
        match self.acquire().await {
            Ok(listing) => {
                self.take_listing(&listing);
                if self.own_subnet() != before {
                    if let Err(e) = self.host_side().await {
                        self.fail("setting up the new subnet", &e);
                        return;
                    }
                }
                self.ok();
            }
            Err(e) => {
                // Keep the subnet in mind so the next try prefers it.
                self.fail("leasing again", &e);
            }
        }
    }

    async fn keep_alive(&mut self) {
        let Some(h) = self.held.clone() else { return };
        match self.store.keep_alive(h.lease_id).await {
            Ok(ttl) if ttl > 0 => {
                if self.status.state == State::Degraded
                    && self.status.last_error.as_deref().is_some_and(|e| e.starts_with("keep-alive"))
                {
                    self.ok();
                }
            }
            Ok(_) => self.lost(&format!("lease {:x} expired", h.lease_id)).await,
            Err(e) => self.fail("keep-alive", &e),
        }
    }

    /// A full list (the truth about peers) and a watch if there is none.
    async fn resync(&mut self, watcher: &mut Option<mpsc::Receiver<WatchEvent>>) {
        let listing = match self.store.list().await {
            Ok(l) => l,
            Err(e) => {
                self.fail("listing leases", &e);
                return;
            }
        };
        let own_ok = self
            .held
            .as_ref()
            .is_some_and(|h| listing.leases.iter().any(|l| l.subnet == h.subnet && l.lease_id == h.lease_id));
        if !own_ok {
            self.lost("its key is not in etcd").await;
            if self.status.state == State::Degraded {
                return;
            }
        } else {
            self.take_listing(&listing);
        }
        if watcher.is_none() {
            match self.store.watch(listing.revision + 1).await {
                Ok(rx) => *watcher = Some(rx),
                Err(e) => {
                    self.fail("watch", &e);
                    return;
                }
            }
        }
        if self.status.state != State::Running {
            // Host side again after an outage (idempotent).
            if let Err(e) = self.host_side().await {
                self.fail("setting up", &e);
                return;
            }
            self.ok();
        }
    }

    /// The kernel brought in line with the peers.
    async fn converge(&mut self) {
        let Some(vtep) = self.vtep else { return };
        let started = Instant::now();
        let peers: Vec<Peer> = self.peers.values().cloned().collect();
        self.status.peers = peers
            .iter()
            .map(|p| PeerStatus {
                subnet: p.subnet.to_string(),
                public_ip: p.public_ip.to_string(),
                vtep_mac: p.vtep_mac.to_string(),
            })
            .collect();
        let kernel = match self.dp.observe(vtep.index).await {
            Ok(k) => k,
            Err(e) => {
                self.fail("reading the kernel's state", &e);
                return;
            }
        };
        let changes = plan::plan(&peers, &kernel);
        let mut failed = None;
        for c in &changes {
            if let Err(e) = self.dp.apply(vtep.index, c).await {
                eprintln!("berth-router: {e}");
                failed = Some(e);
            } else {
                eprintln!("berth-router: {c}");
            }
        }
        self.status.last_convergence = Some(Convergence {
            at_unix_ms: now_unix_ms(),
            took_ms: started.elapsed().as_millis() as u64,
            changes: changes.len(),
        });
        match failed {
            Some(e) => self.fail("converging", &e),
            None if self.status.state == State::Starting => self.ok(),
            None => self.publish(),
        }
    }
}

async fn next_event(w: &mut Option<mpsc::Receiver<WatchEvent>>) -> Option<WatchEvent> {
    match w {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Sleeps `d`; `true` if `stop` turned true meanwhile.
async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        r = stop.changed() => r.is_err() || *stop.borrow(),
    }
}
