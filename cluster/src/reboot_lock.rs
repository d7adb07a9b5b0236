//! The reboot semaphore: at most `max` Berth hosts reboot at once (the
//! idea of Flatcar's locksmith, on etcd v3 through `etcd-client`).
//!
//! # Layout in etcd
//!
//! ```text
//! /berth/reboot-lock/max                    "1"   the number of slots; written
//!                                                 create-only by the first host
//!                                                 that takes a slot (its own
//!                                                 `max`); etcd's value wins after
//! /berth/reboot-lock/holders/<machine-id>   JSON  one key per host that holds or
//!                                                 waits for a slot, attached to
//!                                                 that host's lease:
//!   {"machine_id": "...", "hostname": "host-1", "since": 1764583200, "lease": 7587...}
//! ```
//!
//! The holders are ordered by their keys' create revision (the etcd
//! semaphore recipe): the first `max` keys hold a slot, the others wait, in
//! that order, watching the prefix until a key ahead of theirs is deleted.
//! A host puts its key again under the same name on a retry, which keeps
//! the key's create revision and so its place.
//!
//! Each key is attached to an etcd lease of `ttl` (default 10 minutes,
//! longer than a reboot). The lease is kept alive while the host waits and
//! up to the reboot; its id is kept on disk ([`Slot::save`]), so after the
//! reboot the new process re-attaches it ([`RebootLock::resume`]), keeps it
//! alive, and releases the slot ([`RebootLock::release`]: the key deleted,
//! the lease revoked) once the new boot is blessed. A host that dies
//! holding a slot stops keeping its lease alive: etcd deletes its key when
//! the lease expires, and the next waiter takes the slot.
//!
//! Look at it with etcdctl:
//! `etcdctl get --prefix /berth/reboot-lock/` and
//! `etcdctl del /berth/reboot-lock/holders/<machine-id>` to free a slot by hand.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    WatchOptions,
};
use serde::{Deserialize, Serialize};

/// Everything of the semaphore is under this prefix.
pub const PREFIX: &str = "/berth/reboot-lock/";
/// The number of slots (a decimal integer), written create-only.
pub const MAX_KEY: &str = "/berth/reboot-lock/max";
/// The holders' and waiters' keys: `HOLDERS_PREFIX` + machine-id.
pub const HOLDERS_PREFIX: &str = "/berth/reboot-lock/holders/";
/// A holder's lease TTL when none is configured: 10 minutes, longer than
/// a reboot.
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);
/// The slots when none is configured.
pub const DEFAULT_MAX: u32 = 1;

/// How to reach etcd and what this host asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// etcd's client URLs (`http://127.0.0.1:2379`).
    pub endpoints: Vec<String>,
    /// The slots this host writes when etcd has none yet ([`MAX_KEY`]).
    pub max: u32,
    /// The holder lease's time to live (whole seconds, at least 2).
    pub ttl: Duration,
    /// How long one etcd request may take (connect and each call).
    pub timeout: Duration,
}

impl Default for Settings {
    /// `http://127.0.0.1:2379`, 1 slot, a 10-minute lease, 5 s per request.
    fn default() -> Self {
        Settings {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            max: DEFAULT_MAX,
            ttl: DEFAULT_TTL,
            timeout: Duration::from_secs(5),
        }
    }
}

/// What went wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    /// etcd did not answer (connect or a request), with what was asked.
    #[error("etcd at {endpoints}: {what}: {why}")]
    Etcd { endpoints: String, what: String, why: String },
    /// The value under a key is not what this module writes.
    #[error("etcd key {key}: {why}")]
    BadValue { key: String, why: String },
    /// No slot came free in time; who holds them.
    #[error("no reboot slot free after {}: held by {holders}", humantime::format_duration(*waited))]
    Timeout { waited: Duration, holders: String },
    /// The lease expired or was revoked while it was needed (etcd deleted
    /// the holder key with it).
    #[error("the reboot lock's lease {lease:x} is gone (expired or revoked)")]
    LeaseGone { lease: i64 },
    /// The slot file cannot be read or written.
    #[error("{}: {why}", path.display())]
    File { path: PathBuf, why: String },
    /// A setting this module cannot use.
    #[error("reboot lock settings: {0}")]
    Settings(String),
}

/// What a holder key holds (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderValue {
    pub machine_id: String,
    pub hostname: String,
    /// When it asked for a slot, seconds since the Unix epoch.
    pub since: u64,
    /// Its lease id.
    pub lease: i64,
}

/// One host in the queue, as [`RebootLock::status`] shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub value: HolderValue,
    /// The key's create revision: its place in the queue.
    pub create_revision: i64,
    /// Whether it is among the first `max` (holds a slot) or waits.
    pub holds: bool,
}

/// The semaphore as it is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The slots (etcd's [`MAX_KEY`], else this host's setting).
    pub max: u32,
    /// Holders first, then waiters, by create revision.
    pub queue: Vec<Holder>,
}

impl Status {
    /// `host-1 (machine-id 0123abcd..., since 2026-12-01T10:00:00Z)`, comma
    /// separated, the hosts holding a slot; "nobody" when none.
    pub fn holders_text(&self) -> String {
        let held: Vec<String> = self.queue.iter().filter(|h| h.holds).map(describe).collect();
        if held.is_empty() {
            "nobody".into()
        } else {
            held.join(", ")
        }
    }
}

fn describe(h: &Holder) -> String {
    let since = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(h.value.since));
    let id: String = h.value.machine_id.chars().take(12).collect();
    format!("{} (machine {id}, since {since})", h.value.hostname)
}

/// A slot this host holds or waits for: what is kept on disk across the
/// reboot (JSON: `{"key": "...", "lease": 123, "machine_id": "..."}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// The holder key ([`HOLDERS_PREFIX`] + machine-id).
    pub key: String,
    /// The etcd lease the key is attached to.
    pub lease: i64,
    pub machine_id: String,
}

impl Slot {
    /// Writes the slot to `path` atomically (a temporary file, fsynced,
    /// renamed), making the directory when needed.
    pub fn save(&self, path: &Path) -> Result<(), LockError> {
        let err = |e: std::io::Error| LockError::File { path: path.to_path_buf(), why: e.to_string() };
        let json = serde_json::to_vec(self).map_err(|e| LockError::File { path: path.into(), why: e.to_string() })?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let tmp = path.with_extension("tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(err)?;
            f.write_all(&json).map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, path).map_err(err)
    }

    /// The slot saved at `path`; `None` when there is no file.
    pub fn load(path: &Path) -> Result<Option<Slot>, LockError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| LockError::File { path: path.into(), why: format!("not a saved reboot slot: {e}") }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(LockError::File { path: path.into(), why: e.to_string() }),
        }
    }

    /// Removes the file at `path` (gone already is fine).
    pub fn forget(path: &Path) -> Result<(), LockError> {
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(LockError::File { path: path.into(), why: e.to_string() }),
        }
    }
}

/// Keeps a lease alive in a background task until dropped. Dropping it
/// stops the keep-alives: the lease then expires after its TTL unless it
/// is revoked.
pub struct KeepAlive {
    task: tokio::task::JoinHandle<()>,
    lost: Arc<Mutex<Option<String>>>,
}

impl KeepAlive {
    /// Why the lease cannot be kept alive any more (etcd said it is gone),
    /// `None` while it is kept. A failing connection is retried, not
    /// reported here.
    pub fn lost(&self) -> Option<String> {
        self.lost.lock().map(|g| g.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A place in the queue ([`RebootLock::enqueue`]): the slot asked for and
/// its lease's keep-alive.
pub struct Queued {
    pub slot: Slot,
    pub keep_alive: KeepAlive,
}

/// A slot held: the slot and its lease's keep-alive.
pub struct Held {
    pub slot: Slot,
    pub keep_alive: KeepAlive,
}

/// The semaphore over one etcd client, for this host (`machine_id`).
#[derive(Clone)]
pub struct RebootLock {
    client: Client,
    settings: Settings,
    machine_id: String,
    hostname: String,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl RebootLock {
    /// Connects to etcd (within `settings.timeout`) for the host
    /// `machine_id` (`/etc/machine-id`: 32 lowercase hex digits or any
    /// non-empty name of letters, digits, `-_.`), shown as `hostname`.
    pub async fn connect(settings: Settings, machine_id: &str, hostname: &str) -> Result<RebootLock, LockError> {
        let valid = !machine_id.is_empty()
            && machine_id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid {
            return Err(LockError::Settings(format!("{machine_id:?} is not a machine id")));
        }
        if settings.max == 0 {
            return Err(LockError::Settings("max must be at least 1".into()));
        }
        if settings.ttl < Duration::from_secs(2) {
            return Err(LockError::Settings("ttl must be at least 2s".into()));
        }
        if settings.endpoints.is_empty() {
            return Err(LockError::Settings("no etcd endpoints".into()));
        }
        let options = ConnectOptions::new().with_connect_timeout(settings.timeout).with_timeout(settings.timeout);
        let endpoints = settings.endpoints.join(",");
        let client = tokio::time::timeout(settings.timeout, Client::connect(&settings.endpoints, Some(options)))
            .await
            .map_err(|_| LockError::Etcd {
                endpoints: endpoints.clone(),
                what: "connecting".into(),
                why: format!("no answer within {}", humantime::format_duration(settings.timeout)),
            })?
            .map_err(|e| LockError::Etcd { endpoints, what: "connecting".into(), why: e.to_string() })?;
        Ok(RebootLock { client, settings, machine_id: machine_id.into(), hostname: hostname.into() })
    }

    /// This host's holder key.
    pub fn key(&self) -> String {
        format!("{HOLDERS_PREFIX}{}", self.machine_id)
    }

    fn etcd(&self, what: impl Into<String>, e: impl std::fmt::Display) -> LockError {
        LockError::Etcd { endpoints: self.settings.endpoints.join(","), what: what.into(), why: e.to_string() }
    }

    /// The slots and the queue, read once.
    pub async fn status(&self) -> Result<Status, LockError> {
        Ok(self.read_queue().await?.0)
    }

    async fn read_max(&self) -> Result<u32, LockError> {
        let mut c = self.client.clone();
        let got = c.get(MAX_KEY, None).await.map_err(|e| self.etcd(format!("reading {MAX_KEY}"), e))?;
        match got.kvs().first() {
            None => Ok(self.settings.max),
            Some(kv) => parse_max(kv.value()),
        }
    }

    /// The queue and the revision it was read at.
    async fn read_queue(&self) -> Result<(Status, i64), LockError> {
        let max = self.read_max().await?;
        let mut c = self.client.clone();
        let options = GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Ascend);
        let got = c
            .get(HOLDERS_PREFIX, Some(options))
            .await
            .map_err(|e| self.etcd(format!("listing {HOLDERS_PREFIX}"), e))?;
        let revision = got.header().map_or(0, |h| h.revision());
        let mut queue = Vec::new();
        for (i, kv) in got.kvs().iter().enumerate() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let value: HolderValue = serde_json::from_slice(kv.value())
                .map_err(|e| LockError::BadValue { key: key.clone(), why: format!("not a holder: {e}") })?;
            let holds = u32::try_from(i).is_ok_and(|i| i < max);
            queue.push(Holder { value, create_revision: kv.create_revision(), holds });
        }
        Ok((Status { max, queue }, revision))
    }

    /// Starts keeping `lease` alive (a keep-alive every third of the TTL;
    /// a lost connection is retried every second).
    pub fn keep_alive(&self, lease: i64) -> KeepAlive {
        let lost = Arc::new(Mutex::new(None));
        let (client, ttl, lost2) = (self.client.clone(), self.settings.ttl, Arc::clone(&lost));
        let task = tokio::spawn(async move {
            let every = (ttl / 3).max(Duration::from_millis(500));
            loop {
                let mut c = client.clone();
                if let Ok((mut keeper, mut stream)) = c.lease_keep_alive(lease).await {
                    loop {
                        if keeper.keep_alive().await.is_err() {
                            break;
                        }
                        match stream.message().await {
                            Ok(Some(r)) if r.ttl() <= 0 => {
                                if let Ok(mut g) = lost2.lock() {
                                    *g = Some(format!("etcd says lease {lease:x} has expired"));
                                }
                                return;
                            }
                            Ok(Some(_)) => tokio::time::sleep(every).await,
                            Ok(None) | Err(_) => break,
                        }
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        KeepAlive { task, lost }
    }

    /// Whether `lease` is still alive in etcd.
    async fn lease_alive(&self, lease: i64) -> Result<bool, LockError> {
        let mut c = self.client.clone();
        let r = c.lease_time_to_live(lease, None).await.map_err(|e| self.etcd(format!("lease {lease:x}"), e))?;
        Ok(r.ttl() > 0)
    }

    /// Takes a slot: grants a lease (or reuses `previous`'s when it is
    /// still alive), keeps it alive, puts this host's key, and waits,
    /// watching the holders, until the key is among the first `max` by
    /// create revision. `on_wait` is called with the queue each time this
    /// host finds itself waiting. Gives up after `timeout` (`None`: waits
    /// for ever) with [`LockError::Timeout`], deleting the key and revoking
    /// the lease. Dropping the future stops the keep-alives: the key then
    /// goes with its lease after the TTL.
    ///
    /// The caller saves the returned slot ([`Slot::save`]) to release it
    /// after a reboot.
    pub async fn acquire(
        &self,
        previous: Option<&Slot>,
        timeout: Option<Duration>,
        on_wait: impl FnMut(&Status) + Send,
    ) -> Result<Held, LockError> {
        let queued = self.enqueue(previous).await?;
        self.wait(queued, timeout, on_wait).await
    }

    /// The first half of [`RebootLock::acquire`]: the lease (`previous`'s
    /// when it is still alive, which keeps its place in the queue), its
    /// keep-alives, [`MAX_KEY`] when etcd has none, and this host's key in
    /// the queue. Save the slot now ([`Slot::save`]) to keep the place
    /// across a restart of the caller while it waits.
    pub async fn enqueue(&self, previous: Option<&Slot>) -> Result<Queued, LockError> {
        let mut c = self.client.clone();
        let lease = match previous {
            Some(p) if p.key == self.key() && self.lease_alive(p.lease).await? => p.lease,
            _ => {
                let ttl = i64::try_from(self.settings.ttl.as_secs()).unwrap_or(i64::MAX);
                let granted = c.lease_grant(ttl, None).await.map_err(|e| self.etcd("granting a lease", e))?;
                granted.id()
            }
        };
        let keep_alive = self.keep_alive(lease);
        let slot = Slot { key: self.key(), lease, machine_id: self.machine_id.clone() };
        // The first host writes the slots; etcd's value wins after.
        let max = self.settings.max.to_string();
        let txn = Txn::new()
            .when(vec![Compare::create_revision(MAX_KEY, CompareOp::Equal, 0)])
            .and_then(vec![TxnOp::put(MAX_KEY, max, None)]);
        c.txn(txn).await.map_err(|e| self.etcd(format!("writing {MAX_KEY}"), e))?;
        let value = HolderValue {
            machine_id: self.machine_id.clone(),
            hostname: self.hostname.clone(),
            since: unix_now(),
            lease,
        };
        let json = serde_json::to_vec(&value)
            .map_err(|e| LockError::BadValue { key: slot.key.clone(), why: e.to_string() })?;
        // A put on an existing key keeps its create revision: a retry keeps
        // its place in the queue.
        c.put(slot.key.clone(), json, Some(PutOptions::new().with_lease(lease)))
            .await
            .map_err(|e| self.etcd(format!("putting {}", slot.key), e))?;
        Ok(Queued { slot, keep_alive })
    }

    /// The second half of [`RebootLock::acquire`]: waits, watching the
    /// queue, until the queued key is among the first `max`.
    pub async fn wait(
        &self,
        queued: Queued,
        timeout: Option<Duration>,
        mut on_wait: impl FnMut(&Status) + Send,
    ) -> Result<Held, LockError> {
        let Queued { slot, keep_alive } = queued;
        let wait = self.wait_for_slot(&keep_alive, slot.lease, &mut on_wait);
        let outcome = match timeout {
            None => wait.await,
            Some(t) => match tokio::time::timeout(t, wait).await {
                Ok(r) => r,
                Err(_) => {
                    let holders = self.status().await.map(|s| s.holders_text()).unwrap_or_else(|e| e.to_string());
                    let _ = self.release(&slot).await;
                    return Err(LockError::Timeout { waited: t, holders });
                }
            },
        };
        outcome.map(|()| Held { slot, keep_alive })
    }

    async fn wait_for_slot(
        &self,
        keep_alive: &KeepAlive,
        lease: i64,
        on_wait: &mut (impl FnMut(&Status) + Send),
    ) -> Result<(), LockError> {
        let key = self.key();
        loop {
            if keep_alive.lost().is_some() {
                return Err(LockError::LeaseGone { lease });
            }
            let (status, revision) = self.read_queue().await?;
            let mine = status.queue.iter().find(|h| h.value.machine_id == self.machine_id);
            match mine {
                None => return Err(LockError::LeaseGone { lease }),
                Some(h) if h.holds => return Ok(()),
                Some(_) => on_wait(&status),
            }
            // Wait for a change after what was read: a deleted key ahead
            // of ours, or a changed max.
            let mut c = self.client.clone();
            let options = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
            let mut stream =
                c.watch(PREFIX, Some(options)).await.map_err(|e| self.etcd(format!("watching {PREFIX}"), e))?;
            loop {
                let msg = stream.message().await.map_err(|e| self.etcd(format!("watching {PREFIX}"), e))?;
                let Some(msg) = msg else { break };
                if msg.canceled() {
                    break;
                }
                let relevant = msg.events().iter().any(|e| {
                    let k = e.kv().map(|kv| kv.key()).unwrap_or_default();
                    e.event_type() == EventType::Delete || k == MAX_KEY.as_bytes() || k == key.as_bytes()
                });
                if relevant {
                    break;
                }
            }
        }
    }

    /// Re-attaches a slot saved before a reboot: when its lease is alive
    /// and its key still carries it, keeps the lease alive and returns the
    /// held slot; `None` when the lease is gone (the slot went with it).
    pub async fn resume(&self, slot: &Slot) -> Result<Option<Held>, LockError> {
        if !self.lease_alive(slot.lease).await? {
            return Ok(None);
        }
        let mut c = self.client.clone();
        let got = c.get(slot.key.clone(), None).await.map_err(|e| self.etcd(format!("reading {}", slot.key), e))?;
        if got.kvs().first().is_none_or(|kv| kv.lease() != slot.lease) {
            return Ok(None);
        }
        Ok(Some(Held { slot: slot.clone(), keep_alive: self.keep_alive(slot.lease) }))
    }

    /// Releases a slot: deletes its key (only while it still carries the
    /// slot's lease) and revokes the lease. A lease gone already is fine.
    pub async fn release(&self, slot: &Slot) -> Result<(), LockError> {
        let mut c = self.client.clone();
        let txn = Txn::new()
            .when(vec![Compare::lease(slot.key.clone(), CompareOp::Equal, slot.lease)])
            .and_then(vec![TxnOp::delete(slot.key.clone(), None)]);
        c.txn(txn).await.map_err(|e| self.etcd(format!("deleting {}", slot.key), e))?;
        match c.lease_revoke(slot.lease).await {
            Ok(_) => Ok(()),
            // etcd: "etcdserver: requested lease not found".
            Err(e) if e.to_string().contains("lease not found") => Ok(()),
            Err(e) => Err(self.etcd(format!("revoking lease {:x}", slot.lease), e)),
        }
    }
}

/// The slots in [`MAX_KEY`]: a decimal integer of at least 1.
pub fn parse_max(bytes: &[u8]) -> Result<u32, LockError> {
    let text = String::from_utf8_lossy(bytes);
    match text.trim().parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(LockError::BadValue { key: MAX_KEY.into(), why: format!("{text:?} is not a count of at least 1") }),
    }
}
