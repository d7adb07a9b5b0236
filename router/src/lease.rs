//! The etcd side: flannel's subnet leases and network config behind the
//! [`Store`] trait, with the real etcd implementation ([`EtcdStore`]) and an
//! in-memory one for tests ([`MemStore`]).
//!
//! Layout (flannel's, so `etcdctl get --prefix /coreos.com/network` reads the same):
//! - `<prefix>/config`: the network config JSON ([`crate::config::NetworkConfig`]);
//! - `<prefix>/subnets/<a.b.c.d>-<len>`: one key per host's subnet, attached
//!   to an etcd v3 lease, value [`LeaseAttrs`]:
//!   `{"PublicIP":"192.0.2.11","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:..."}}`.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::ipnet::Ipv4Net;

/// flannel's `LeaseAttrs`: the value of a subnet key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseAttrs {
    /// `PublicIP`: where the other hosts send this subnet's VXLAN packets.
    #[serde(rename = "PublicIP")]
    pub public_ip: Ipv4Addr,
    /// `BackendType`: `vxlan`.
    #[serde(rename = "BackendType", default)]
    pub backend_type: String,
    /// `BackendData`: the VXLAN endpoint.
    #[serde(rename = "BackendData")]
    pub backend_data: VxlanData,
}

/// flannel's vxlan `BackendData`: `{"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:ff"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanData {
    /// `VNI`.
    #[serde(rename = "VNI", default)]
    pub vni: u32,
    /// `VtepMAC`: the MAC of the host's `flannel.<VNI>` device, `aa:bb:cc:dd:ee:ff`.
    #[serde(rename = "VtepMAC")]
    pub vtep_mac: String,
}

/// One host's subnet lease as read from etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetLease {
    /// The subnet (from the key).
    pub subnet: Ipv4Net,
    /// The value.
    pub attrs: LeaseAttrs,
    /// The etcd lease the key is attached to (0: none).
    pub lease_id: i64,
    /// The key's mod revision (for a take-over transaction).
    pub mod_revision: i64,
}

/// All subnet leases at one etcd revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// The leases whose keys and values could be read (others are skipped
    /// and named in `skipped`).
    pub leases: Vec<SubnetLease>,
    /// Keys under `subnets/` that are not flannel leases: (key, why).
    pub skipped: Vec<(String, String)>,
    /// The revision of the read; a watch starts after it.
    pub revision: i64,
}

/// A change under `<prefix>/subnets/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A lease was created or changed.
    Put(SubnetLease),
    /// A lease's key was deleted (revoked or expired).
    Delete(Ipv4Net),
    /// The watch ended (etcd away, compacted): list again, then watch again.
    Broken(String),
}

/// What failed talking to etcd.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// etcd could not be reached or refused the request.
    #[error("etcd {op} {key}: {message}")]
    Etcd {
        /// The operation (`get`, `txn`, `lease grant`, ...).
        op: &'static str,
        /// The key or lease it was about.
        key: String,
        /// The client's message.
        message: String,
    },
}

fn etcd_err(op: &'static str, key: impl Into<String>) -> impl FnOnce(etcd_client::Error) -> StoreError {
    let key = key.into();
    move |e| StoreError::Etcd { op, key, message: e.to_string() }
}

/// The etcd operations the router needs. Keys are relative to the prefix
/// the store was made with.
pub trait Store {
    /// The value of `<prefix>/config`, if the key exists.
    fn get_config(&self) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;
    /// Writes `<prefix>/config` only if it does not exist (a transaction on
    /// create_revision == 0). `Ok(false)`: it existed already.
    fn create_config(&self, json: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Every subnet lease.
    fn list(&self) -> impl Future<Output = Result<Listing, StoreError>> + Send;
    /// A new etcd lease of `ttl` seconds; its id.
    fn grant(&self, ttl: i64) -> impl Future<Output = Result<i64, StoreError>> + Send;
    /// Writes the key of `subnet` attached to `lease_id` in one transaction:
    /// only if the key does not exist (`takeover: None`), or only if it is
    /// still at that mod revision (`Some(rev)`: taking over this host's own
    /// key from a run that did not revoke it). `Ok(false)`: someone else won.
    fn create_lease(
        &self,
        subnet: Ipv4Net,
        attrs: &LeaseAttrs,
        lease_id: i64,
        takeover: Option<i64>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// One keep-alive of the lease; its remaining TTL in seconds (0 or less:
    /// the lease is gone).
    fn keep_alive(&self, lease_id: i64) -> impl Future<Output = Result<i64, StoreError>> + Send;
    /// Revokes the lease (its keys are deleted).
    fn revoke(&self, lease_id: i64) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Watches `<prefix>/subnets/` from `start_revision` on. The channel ends
    /// with a [`WatchEvent::Broken`] when the watch does.
    fn watch(&self, start_revision: i64)
        -> impl Future<Output = Result<mpsc::Receiver<WatchEvent>, StoreError>> + Send;
}

/// Reads one subnet key's value. Errors: why it is not a flannel lease.
pub fn parse_lease(
    prefix: &str,
    key: &[u8],
    value: &[u8],
    lease_id: i64,
    mod_revision: i64,
) -> Result<SubnetLease, String> {
    let key = String::from_utf8_lossy(key);
    let name = key.strip_prefix(&format!("{prefix}/subnets/")).ok_or("not under subnets/")?;
    let subnet = Ipv4Net::from_key_form(name).ok_or_else(|| format!("{name:?} is not a.b.c.d-len"))?;
    let attrs: LeaseAttrs = serde_json::from_slice(value).map_err(|e| format!("value: {e}"))?;
    Ok(SubnetLease { subnet, attrs, lease_id, mod_revision })
}

/// The real store: etcd v3 through etcd-client.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    prefix: String,
}

impl EtcdStore {
    /// A client for `endpoints` (2 s to connect, 5 s per request). The
    /// channel reconnects by itself after an outage.
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<EtcdStore, StoreError> {
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3));
        let client = Client::connect(endpoints, Some(opts)).await.map_err(etcd_err("connect", endpoints.join(",")))?;
        Ok(EtcdStore { client, prefix: prefix.to_string() })
    }

    fn config_key(&self) -> String {
        format!("{}/config", self.prefix)
    }

    fn subnets_prefix(&self) -> String {
        format!("{}/subnets/", self.prefix)
    }
}

impl Store for EtcdStore {
    async fn get_config(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.config_key();
        let r = self.client.clone().get(key.clone(), None).await.map_err(etcd_err("get", &key))?;
        Ok(r.kvs().first().map(|kv| kv.value().to_vec()))
    }

    async fn create_config(&self, json: &str) -> Result<bool, StoreError> {
        let key = self.config_key();
        let txn = Txn::new().when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)]).and_then([TxnOp::put(
            key.clone(),
            json,
            None,
        )]);
        let r = self.client.clone().txn(txn).await.map_err(etcd_err("txn", &key))?;
        Ok(r.succeeded())
    }

    async fn list(&self) -> Result<Listing, StoreError> {
        let p = self.subnets_prefix();
        let r = self
            .client
            .clone()
            .get(p.clone(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(etcd_err("get", &p))?;
        let mut out = Listing { revision: r.header().map(|h| h.revision()).unwrap_or(0), ..Listing::default() };
        for kv in r.kvs() {
            match parse_lease(&self.prefix, kv.key(), kv.value(), kv.lease(), kv.mod_revision()) {
                Ok(l) => out.leases.push(l),
                Err(why) => out.skipped.push((String::from_utf8_lossy(kv.key()).into_owned(), why)),
            }
        }
        Ok(out)
    }

    async fn grant(&self, ttl: i64) -> Result<i64, StoreError> {
        let r =
            self.client.clone().lease_grant(ttl, None).await.map_err(etcd_err("lease grant", format!("ttl {ttl}s")))?;
        Ok(r.id())
    }

    async fn create_lease(
        &self,
        subnet: Ipv4Net,
        attrs: &LeaseAttrs,
        lease_id: i64,
        takeover: Option<i64>,
    ) -> Result<bool, StoreError> {
        let key = format!("{}{}", self.subnets_prefix(), subnet.key_form());
        let value = serde_json::to_string(attrs).unwrap_or_default();
        let cmp = match takeover {
            None => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
            Some(rev) => Compare::mod_revision(key.clone(), CompareOp::Equal, rev),
        };
        let txn = Txn::new().when([cmp]).and_then([TxnOp::put(
            key.clone(),
            value,
            Some(PutOptions::new().with_lease(lease_id)),
        )]);
        let r = self.client.clone().txn(txn).await.map_err(etcd_err("txn", &key))?;
        Ok(r.succeeded())
    }

    async fn keep_alive(&self, lease_id: i64) -> Result<i64, StoreError> {
        let what = format!("lease {lease_id:x}");
        let (mut keeper, mut stream) =
            self.client.clone().lease_keep_alive(lease_id).await.map_err(etcd_err("lease keep-alive", &what))?;
        keeper.keep_alive().await.map_err(etcd_err("lease keep-alive", &what))?;
        match stream.message().await.map_err(etcd_err("lease keep-alive", &what))? {
            Some(r) => Ok(r.ttl()),
            None => Err(StoreError::Etcd { op: "lease keep-alive", key: what, message: "the stream ended".into() }),
        }
    }

    async fn revoke(&self, lease_id: i64) -> Result<(), StoreError> {
        self.client
            .clone()
            .lease_revoke(lease_id)
            .await
            .map_err(etcd_err("lease revoke", format!("lease {lease_id:x}")))?;
        Ok(())
    }

    async fn watch(&self, start_revision: i64) -> Result<mpsc::Receiver<WatchEvent>, StoreError> {
        let p = self.subnets_prefix();
        let opts = WatchOptions::new().with_prefix().with_start_revision(start_revision);
        let mut stream = self.client.clone().watch(p.clone(), Some(opts)).await.map_err(etcd_err("watch", &p))?;
        let (tx, rx) = mpsc::channel(64);
        let prefix = self.prefix.clone();
        tokio::spawn(async move {
            let why = loop {
                let resp = match stream.message().await {
                    Ok(Some(r)) => r,
                    Ok(None) => break "the watch stream ended".to_string(),
                    Err(e) => break format!("watch {p}: {e}"),
                };
                if resp.canceled() {
                    break format!(
                        "watch {p} cancelled (compacted at {}): {}",
                        resp.compact_revision(),
                        resp.cancel_reason()
                    );
                }
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let msg = match ev.event_type() {
                        EventType::Put => {
                            match parse_lease(&prefix, kv.key(), kv.value(), kv.lease(), kv.mod_revision()) {
                                Ok(l) => WatchEvent::Put(l),
                                Err(_) => continue,
                            }
                        }
                        EventType::Delete => {
                            let key = String::from_utf8_lossy(kv.key()).into_owned();
                            match key.strip_prefix(&p).and_then(Ipv4Net::from_key_form) {
                                Some(n) => WatchEvent::Delete(n),
                                None => continue,
                            }
                        }
                    };
                    if tx.send(msg).await.is_err() {
                        return;
                    }
                }
            };
            let _ = tx.send(WatchEvent::Broken(why)).await;
        });
        Ok(rx)
    }
}

/// An in-memory [`Store`] with etcd's semantics for what the router uses
/// (revisions, create-only transactions, keys deleted with their lease,
/// watch events). Clones share one state, so several routers in a test
/// see one "etcd". [`MemStore::set_down`] makes every call fail and breaks
/// the watches (an outage); [`MemStore::expire`] ends a lease as etcd does
/// when its TTL runs out.
#[derive(Clone, Default)]
pub struct MemStore {
    inner: Arc<Mutex<MemState>>,
    prefix: String,
}

#[derive(Default)]
struct MemState {
    revision: i64,
    next_lease: i64,
    keys: BTreeMap<String, MemKey>,
    leases: HashMap<i64, i64>,
    watchers: Vec<mpsc::Sender<WatchEvent>>,
    down: bool,
}

struct MemKey {
    value: Vec<u8>,
    lease: i64,
    create_revision: i64,
    mod_revision: i64,
}

impl MemStore {
    /// An empty store under `prefix`.
    pub fn new(prefix: &str) -> MemStore {
        MemStore { inner: Arc::default(), prefix: prefix.to_string() }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, MemState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn up(&self, op: &'static str) -> Result<std::sync::MutexGuard<'_, MemState>, StoreError> {
        let s = self.state();
        if s.down {
            return Err(StoreError::Etcd {
                op,
                key: self.prefix.clone(),
                message: "connection refused (MemStore is down)".into(),
            });
        }
        Ok(s)
    }

    /// An outage (`true`) or its end. Going down breaks every watch.
    pub fn set_down(&self, down: bool) {
        let mut s = self.state();
        s.down = down;
        if down {
            for w in s.watchers.drain(..) {
                let _ = w.try_send(WatchEvent::Broken("MemStore went down".into()));
            }
        }
    }

    /// Ends a lease as its TTL running out would: its keys are deleted
    /// (with watch events).
    pub fn expire(&self, lease_id: i64) {
        let mut s = self.state();
        s.revoke(lease_id, &self.prefix);
    }

    /// The live lease ids.
    pub fn leases(&self) -> Vec<i64> {
        self.state().leases.keys().copied().collect()
    }
}

impl MemState {
    fn notify(&mut self, ev: WatchEvent) {
        self.watchers.retain(|w| w.try_send(ev.clone()).is_ok());
    }

    fn revoke(&mut self, lease_id: i64, prefix: &str) {
        self.leases.remove(&lease_id);
        let gone: Vec<String> = self.keys.iter().filter(|(_, k)| k.lease == lease_id).map(|(n, _)| n.clone()).collect();
        if gone.is_empty() {
            return;
        }
        self.revision += 1;
        for key in gone {
            self.keys.remove(&key);
            if let Some(n) = key.strip_prefix(&format!("{prefix}/subnets/")).and_then(Ipv4Net::from_key_form) {
                self.notify(WatchEvent::Delete(n));
            }
        }
    }
}

impl Store for MemStore {
    async fn get_config(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let s = self.up("get")?;
        Ok(s.keys.get(&format!("{}/config", self.prefix)).map(|k| k.value.clone()))
    }

    async fn create_config(&self, json: &str) -> Result<bool, StoreError> {
        let mut s = self.up("txn")?;
        let key = format!("{}/config", self.prefix);
        if s.keys.contains_key(&key) {
            return Ok(false);
        }
        s.revision += 1;
        let rev = s.revision;
        s.keys
            .insert(key, MemKey { value: json.as_bytes().to_vec(), lease: 0, create_revision: rev, mod_revision: rev });
        Ok(true)
    }

    async fn list(&self) -> Result<Listing, StoreError> {
        let s = self.up("get")?;
        let mut out = Listing { revision: s.revision, ..Listing::default() };
        let p = format!("{}/subnets/", self.prefix);
        for (key, k) in s.keys.range(p.clone()..).take_while(|(n, _)| n.starts_with(&p)) {
            match parse_lease(&self.prefix, key.as_bytes(), &k.value, k.lease, k.mod_revision) {
                Ok(l) => out.leases.push(l),
                Err(why) => out.skipped.push((key.clone(), why)),
            }
        }
        Ok(out)
    }

    async fn grant(&self, ttl: i64) -> Result<i64, StoreError> {
        let mut s = self.up("lease grant")?;
        s.next_lease += 1;
        let id = 0x1000 + s.next_lease;
        s.leases.insert(id, ttl);
        Ok(id)
    }

    async fn create_lease(
        &self,
        subnet: Ipv4Net,
        attrs: &LeaseAttrs,
        lease_id: i64,
        takeover: Option<i64>,
    ) -> Result<bool, StoreError> {
        let mut s = self.up("txn")?;
        let key = format!("{}/subnets/{}", self.prefix, subnet.key_form());
        let ok = match (takeover, s.keys.get(&key)) {
            (None, None) => true,
            (Some(rev), Some(k)) => k.mod_revision == rev,
            _ => false,
        };
        if !ok {
            return Ok(false);
        }
        if !s.leases.contains_key(&lease_id) {
            return Err(StoreError::Etcd { op: "txn", key, message: "etcdserver: requested lease not found".into() });
        }
        s.revision += 1;
        let rev = s.revision;
        let create_revision = s.keys.get(&key).map(|k| k.create_revision).unwrap_or(rev);
        let value = serde_json::to_vec(attrs).unwrap_or_default();
        s.keys.insert(key, MemKey { value, lease: lease_id, create_revision, mod_revision: rev });
        s.notify(WatchEvent::Put(SubnetLease { subnet, attrs: attrs.clone(), lease_id, mod_revision: rev }));
        Ok(true)
    }

    async fn keep_alive(&self, lease_id: i64) -> Result<i64, StoreError> {
        let s = self.up("lease keep-alive")?;
        Ok(s.leases.get(&lease_id).copied().unwrap_or(0))
    }

    async fn revoke(&self, lease_id: i64) -> Result<(), StoreError> {
        let mut s = self.up("lease revoke")?;
        s.revoke(lease_id, &self.prefix);
        Ok(())
    }

    async fn watch(&self, _start_revision: i64) -> Result<mpsc::Receiver<WatchEvent>, StoreError> {
        let mut s = self.up("watch")?;
        let (tx, rx) = mpsc::channel(256);
        s.watchers.push(tx);
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(ip: [u8; 4]) -> LeaseAttrs {
        LeaseAttrs {
            public_ip: Ipv4Addr::from(ip),
            backend_type: "vxlan".into(),
            backend_data: VxlanData { vni: 1, vtep_mac: "02:00:00:00:00:01".into() },
        }
    }

    #[test]
    fn lease_json_is_flannels() {
        let j = serde_json::to_string(&attrs([192, 0, 2, 11])).unwrap();
        assert_eq!(
            j,
            r#"{"PublicIP":"192.0.2.11","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}}"#
        );
        // flannel's own value (PublicIPv6 null, extra keys) reads too.
        let l = parse_lease(
            "/coreos.com/network",
            b"/coreos.com/network/subnets/10.244.3.0-24",
            br#"{"PublicIP":"192.0.2.13","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}"#,
            7,
            9,
        )
        .unwrap();
        assert_eq!(l.subnet.to_string(), "10.244.3.0/24");
        assert_eq!(l.attrs.backend_data.vtep_mac, "aa:bb:cc:dd:ee:ff");
        assert!(parse_lease("/p", b"/p/subnets/10.244.3.0", b"{}", 0, 0).is_err());
    }

    #[tokio::test]
    async fn mem_store_create_only_and_expiry() {
        let s = MemStore::new("/coreos.com/network");
        let n: Ipv4Net = "10.244.1.0/24".parse().unwrap();
        let a = s.grant(30).await.unwrap();
        let b = s.grant(30).await.unwrap();
        let mut w = s.watch(0).await.unwrap();
        assert!(s.create_lease(n, &attrs([192, 0, 2, 11]), a, None).await.unwrap());
        assert!(!s.create_lease(n, &attrs([192, 0, 2, 12]), b, None).await.unwrap());
        assert!(matches!(w.recv().await, Some(WatchEvent::Put(_))));
        s.expire(a);
        assert_eq!(w.recv().await, Some(WatchEvent::Delete(n)));
        assert!(s.list().await.unwrap().leases.is_empty());
        assert_eq!(s.keep_alive(a).await.unwrap(), 0);
        s.set_down(true);
        assert!(s.list().await.is_err());
    }
}
