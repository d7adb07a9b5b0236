//! The router's status file, `/run/berth/router/status.json`, written
//! atomically (rename) on every change; `berthctl status router` reads it.
//!
//! Shape (JSON object; absent values are `null`):
//! ```json
//! {
//!   "state": "running",                 // starting | running | degraded | stopped
//!   "updated_unix_ms": 1764583200000,
//!   "last_error": null,                 // or "etcd get /coreos.com/network/subnets/: ..."
//!   "network": "10.244.0.0/16", "subnet_len": 24,
//!   "subnet": "10.244.3.0/24",
//!   "lease_id": "694d7a1b2c3d4e5f", "lease_ttl_s": 30,
//!   "interface": "eth0", "public_ip": "192.0.2.11",
//!   "vxlan": "flannel.1", "vtep_mac": "02:..", "mtu": 1450,
//!   "peers": [{"subnet": "10.244.7.0/24", "public_ip": "192.0.2.12", "vtep_mac": "02:.."}],
//!   "last_convergence": {"at_unix_ms": 1764583200000, "took_ms": 3, "changes": 3}
//! }
//! ```

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Where the router writes its status.
pub const STATUS_PATH: &str = berth_layout::paths::ROUTER_STATUS;

/// The router's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Reading its config, reaching etcd, leasing a subnet.
    #[default]
    Starting,
    /// Holding its lease, the kernel converged to the peers.
    Running,
    /// Something fails (see `last_error`); the routes last known stay.
    Degraded,
    /// Stopped cleanly (lease revoked).
    Stopped,
}

/// One other host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Its subnet.
    pub subnet: String,
    /// Its underlay address.
    pub public_ip: String,
    /// Its VTEP MAC.
    pub vtep_mac: String,
}

/// The last time the kernel was brought in line with the leases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Convergence {
    /// When it finished (ms since the Unix epoch).
    pub at_unix_ms: u64,
    /// How long it took (ms).
    pub took_ms: u64,
    /// How many netlink changes it made.
    pub changes: usize,
}

/// The status file's contents (see the module's docs for the JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Status {
    /// The state.
    pub state: State,
    /// When this was written (ms since the Unix epoch).
    pub updated_unix_ms: u64,
    /// The last error, cleared once things work again.
    pub last_error: Option<String>,
    /// The cluster network.
    pub network: Option<String>,
    /// The subnet length.
    pub subnet_len: Option<u8>,
    /// This host's subnet.
    pub subnet: Option<String>,
    /// The etcd lease id (hex, as etcdctl prints it).
    pub lease_id: Option<String>,
    /// The lease's TTL in seconds.
    pub lease_ttl_s: Option<u64>,
    /// The underlay interface.
    pub interface: Option<String>,
    /// This host's public address.
    pub public_ip: Option<String>,
    /// The VXLAN device.
    pub vxlan: Option<String>,
    /// Its MAC.
    pub vtep_mac: Option<String>,
    /// Its MTU.
    pub mtu: Option<u32>,
    /// The other hosts.
    pub peers: Vec<PeerStatus>,
    /// The last convergence.
    pub last_convergence: Option<Convergence>,
}

/// Milliseconds since the Unix epoch now.
pub fn now_unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Status {
    /// Writes it to `path` atomically, stamped with the time.
    pub fn write(&mut self, path: &Path) -> std::io::Result<()> {
        self.updated_unix_ms = now_unix_ms();
        let mut text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        text.push('\n');
        crate::fsutil::write_atomic(path, text.as_bytes())
    }

    /// Reads a status file.
    pub fn read(path: &Path) -> Result<Status, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}
