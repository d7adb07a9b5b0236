//! The router's settings: `/etc/berth/router.toml` (every key optional) and
//! the cluster network in flannel's JSON at `<prefix>/config`.
//!
//! router.toml (contract 1 of issue 10; provisioning writes it from the
//! `router:` key of user data):
//!
//! ```toml
//! etcd_endpoints = ["http://127.0.0.1:2379"]
//! etcd_prefix = "/coreos.com/network"
//! network = "10.244.0.0/16"   # written to <prefix>/config only when absent
//! subnet_len = 24
//! vni = 1
//! port = 8472
//! interface = "eth0"          # default: the default route's interface
//! public_ip = "192.0.2.11"    # default: the interface's first IPv4 address
//! lease_ttl = "30s"
//! reconcile_interval = "10s"
//! ```
//!
//! flannel's network config (`<prefix>/config`), whose value wins over
//! router.toml's once it exists:
//! `{"Network": "10.244.0.0/16", "SubnetLen": 24, "Backend": {"Type": "vxlan", "VNI": 1, "Port": 8472}}`.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::ipnet::Ipv4Net;

/// Where the router reads its settings.
pub const CONFIG_PATH: &str = berth_layout::paths::ROUTER_CONFIG;

/// The router's settings, defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct RouterConfig {
    /// etcd client URLs.
    pub etcd_endpoints: Vec<String>,
    /// The key prefix, flannel's `/coreos.com/network` by default.
    pub etcd_prefix: String,
    /// The cluster network proposed for `<prefix>/config`.
    pub network: NetworkConfig,
    /// The underlay interface; `None`: the default route's.
    pub interface: Option<String>,
    /// The address peers send VXLAN to; `None`: the interface's first IPv4.
    pub public_ip: Option<Ipv4Addr>,
    /// The TTL of the subnet lease (whole seconds, at least 2).
    pub lease_ttl: Duration,
    /// How often the kernel state is checked against etcd.
    pub reconcile_interval: Duration,
}

impl Default for RouterConfig {
    fn default() -> RouterConfig {
        RouterConfig {
            etcd_endpoints: vec!["http://127.0.0.1:2379".into()],
            etcd_prefix: "/coreos.com/network".into(),
            network: NetworkConfig::default(),
            interface: None,
            public_ip: None,
            lease_ttl: Duration::from_secs(30),
            reconcile_interval: Duration::from_secs(10),
        }
    }
}

/// A router.toml that cannot be used: the file, the line and the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but cannot be read.
    #[error("{file}: {message}")]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        message: String,
    },
    /// Not TOML, an unknown key, or a value of the wrong type.
    #[error("{file}:{line}: {message}")]
    Syntax {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// toml's message (it names the key).
        message: String,
    },
    /// A key whose value is well-typed but not usable.
    #[error("{file}:{line}: key {key}: {message}")]
    Value {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// The key.
        key: String,
        /// Why.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    etcd_endpoints: Option<Spanned<Vec<String>>>,
    etcd_prefix: Option<Spanned<String>>,
    network: Option<Spanned<String>>,
    subnet_len: Option<Spanned<i64>>,
    vni: Option<Spanned<i64>>,
    port: Option<Spanned<i64>>,
    interface: Option<Spanned<String>>,
    public_ip: Option<Spanned<String>>,
    lease_ttl: Option<Spanned<String>>,
    reconcile_interval: Option<Spanned<String>>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).unwrap_or(text).matches('\n').count() + 1
}

impl RouterConfig {
    /// Reads `path`; a missing file means all defaults.
    ///
    /// Errors: [`ConfigError`] naming the file, line and key.
    pub fn load(path: &Path) -> Result<RouterConfig, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => RouterConfig::parse(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RouterConfig::default()),
            Err(e) => Err(ConfigError::Read { file: path.to_path_buf(), message: e.to_string() }),
        }
    }

    /// Reads router.toml's text; `file` only names it in errors.
    pub fn parse(file: &Path, text: &str) -> Result<RouterConfig, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            file: file.to_path_buf(),
            line: e.span().map(|s| line_of(text, s.start)).unwrap_or(1),
            message: e.message().to_string(),
        })?;
        let bad = |key: &str, span: std::ops::Range<usize>, message: String| ConfigError::Value {
            file: file.to_path_buf(),
            line: line_of(text, span.start),
            key: key.to_string(),
            message,
        };
        let mut c = RouterConfig::default();
        // Where a subnet length that does not fit the network is reported.
        let fit_at = raw
            .subnet_len
            .as_ref()
            .map(|v| ("subnet_len", v.span()))
            .or(raw.network.as_ref().map(|v| ("network", v.span())));
        if let Some(v) = raw.etcd_endpoints {
            let span = v.span();
            let list = v.into_inner();
            if list.is_empty() {
                return Err(bad("etcd_endpoints", span, "must name at least one URL".into()));
            }
            if let Some(u) = list.iter().find(|u| !(u.starts_with("http://") || u.starts_with("https://"))) {
                return Err(bad("etcd_endpoints", span, format!("{u:?} is not an http:// or https:// URL")));
            }
            c.etcd_endpoints = list;
        }
        if let Some(v) = raw.etcd_prefix {
            let span = v.span();
            let p = v.into_inner();
            if !p.starts_with('/') || p.ends_with('/') {
                return Err(bad("etcd_prefix", span, format!("{p:?}: expected a key like /coreos.com/network")));
            }
            c.etcd_prefix = p;
        }
        if let Some(v) = raw.network {
            let span = v.span();
            c.network.network = v.get_ref().parse().map_err(|e| bad("network", span, format!("{e}")))?;
        }
        if let Some(v) = raw.subnet_len {
            let span = v.span();
            c.network.subnet_len = u8::try_from(*v.get_ref())
                .ok()
                .filter(|l| *l <= 30)
                .ok_or_else(|| bad("subnet_len", span, "must be 1 to 30".into()))?;
        }
        if let Some(v) = raw.vni {
            let span = v.span();
            c.network.backend.vni = u32::try_from(*v.get_ref())
                .ok()
                .filter(|n| *n < (1 << 24))
                .ok_or_else(|| bad("vni", span, "must be 0 to 16777215".into()))?;
        }
        if let Some(v) = raw.port {
            let span = v.span();
            c.network.backend.port = u16::try_from(*v.get_ref())
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad("port", span, "must be 1 to 65535".into()))?;
        }
        if let Some(v) = raw.interface {
            let span = v.span();
            let name = v.into_inner();
            if name.is_empty() || name.len() > 15 || name.contains('/') || name.contains(char::is_whitespace) {
                return Err(bad("interface", span, format!("{name:?} is not an interface name")));
            }
            c.interface = Some(name);
        }
        if let Some(v) = raw.public_ip {
            let span = v.span();
            c.public_ip = Some(
                v.get_ref()
                    .parse()
                    .map_err(|_| bad("public_ip", span, format!("{:?} is not an IPv4 address", v.get_ref())))?,
            );
        }
        if let Some(v) = raw.lease_ttl {
            let span = v.span();
            let d = humantime::parse_duration(v.get_ref())
                .map_err(|e| bad("lease_ttl", span.clone(), format!("{e} (expected e.g. 30s)")))?;
            if d < Duration::from_secs(2) || d.subsec_nanos() != 0 {
                return Err(bad("lease_ttl", span, "must be whole seconds, at least 2s".into()));
            }
            c.lease_ttl = d;
        }
        if let Some(v) = raw.reconcile_interval {
            let span = v.span();
            let d = humantime::parse_duration(v.get_ref())
                .map_err(|e| bad("reconcile_interval", span.clone(), format!("{e} (expected e.g. 10s)")))?;
            if d < Duration::from_millis(100) {
                return Err(bad("reconcile_interval", span, "must be at least 100ms".into()));
            }
            c.reconcile_interval = d;
        }
        if let Err(e) = c.network.check() {
            let (key, span) = fit_at.unwrap_or(("subnet_len", 0..0));
            return Err(bad(key, span, e.to_string()));
        }
        Ok(c)
    }
}

/// flannel's network config, the JSON at `<prefix>/config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkConfig {
    /// The cluster network (`Network`).
    #[serde(rename = "Network")]
    pub network: Ipv4Net,
    /// The length of each host's subnet (`SubnetLen`, flannel's default 24).
    #[serde(rename = "SubnetLen", default = "default_subnet_len")]
    pub subnet_len: u8,
    /// The backend (`Backend`): only vxlan.
    #[serde(rename = "Backend", default)]
    pub backend: Backend,
}

fn default_subnet_len() -> u8 {
    24
}

impl Default for NetworkConfig {
    fn default() -> NetworkConfig {
        NetworkConfig { network: crate::ipnet::DEFAULT_NETWORK, subnet_len: 24, backend: Backend::default() }
    }
}

/// flannel's `Backend` object: `{"Type": "vxlan", "VNI": 1, "Port": 8472}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    /// `Type`: `vxlan` (the only one Berth speaks).
    #[serde(rename = "Type", default = "default_type")]
    pub kind: String,
    /// `VNI`: the VXLAN id (flannel's default 1).
    #[serde(rename = "VNI", default = "default_vni")]
    pub vni: u32,
    /// `Port`: the UDP port (flannel's default 8472, the Linux kernel's).
    #[serde(rename = "Port", default = "default_port")]
    pub port: u16,
}

fn default_type() -> String {
    "vxlan".into()
}
fn default_vni() -> u32 {
    1
}
fn default_port() -> u16 {
    8472
}

impl Default for Backend {
    fn default() -> Backend {
        Backend { kind: default_type(), vni: default_vni(), port: default_port() }
    }
}

/// Why a network config cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    /// Not flannel's JSON.
    #[error("not a flannel network config: {0}")]
    Json(String),
    /// `SubnetLen` not longer than the network's prefix, or over 30.
    #[error("subnet length {subnet_len} does not fit network {network} (it must be longer than /{} and at most 30)", network.prefix_len())]
    SubnetLen {
        /// The network.
        network: Ipv4Net,
        /// The subnet length.
        subnet_len: u8,
    },
    /// Too few subnets to be useful (fewer than 2 besides the first).
    #[error("network {network} holds only {count} subnets of /{subnet_len}")]
    TooSmall {
        /// The network.
        network: Ipv4Net,
        /// The subnet length.
        subnet_len: u8,
        /// How many there are.
        count: u64,
    },
    /// A backend other than vxlan.
    #[error("backend type {0:?} is not supported (only \"vxlan\")")]
    Backend(String),
    /// The network overlaps an address or route of this host.
    #[error("network {network} overlaps {host_net} on this host ({what})")]
    Overlap {
        /// The cluster network.
        network: Ipv4Net,
        /// The host's network.
        host_net: Ipv4Net,
        /// Where it was seen (`address on eth0`, `route via eth0`).
        what: String,
    },
}

impl NetworkConfig {
    /// Reads flannel's JSON and checks it ([`NetworkConfig::check`]).
    pub fn from_json(bytes: &[u8]) -> Result<NetworkConfig, NetworkError> {
        let c: NetworkConfig = serde_json::from_slice(bytes).map_err(|e| NetworkError::Json(e.to_string()))?;
        c.check()?;
        Ok(c)
    }

    /// flannel's JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The subnet length fits and the backend is vxlan.
    pub fn check(&self) -> Result<(), NetworkError> {
        if !self.backend.kind.eq_ignore_ascii_case("vxlan") {
            return Err(NetworkError::Backend(self.backend.kind.clone()));
        }
        let count = match self.network.subnet_count(self.subnet_len) {
            Some(n) if self.subnet_len <= 30 => n,
            _ => return Err(NetworkError::SubnetLen { network: self.network, subnet_len: self.subnet_len }),
        };
        if count < 3 {
            return Err(NetworkError::TooSmall { network: self.network, subnet_len: self.subnet_len, count });
        }
        Ok(())
    }

    /// The first of `host_nets` (network, where seen) the cluster network overlaps.
    pub fn overlap(&self, host_nets: &[(Ipv4Net, String)]) -> Result<(), NetworkError> {
        match host_nets.iter().find(|(n, _)| n.prefix_len() > 0 && n.overlaps(&self.network)) {
            Some((n, what)) => Err(NetworkError::Overlap { network: self.network, host_net: *n, what: what.clone() }),
            None => Ok(()),
        }
    }

    /// The VXLAN device's name, flannel's `flannel.<VNI>`.
    pub fn vxlan_name(&self) -> String {
        format!("flannel.{}", self.backend.vni)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RouterConfig, ConfigError> {
        RouterConfig::parse(Path::new("/etc/berth/router.toml"), text)
    }

    #[test]
    fn empty_file_is_defaults() {
        assert_eq!(parse("").unwrap(), RouterConfig::default());
    }

    #[test]
    fn every_key() {
        let c = parse(
            "etcd_endpoints = [\"http://192.0.2.11:2379\"]\netcd_prefix = \"/x/net\"\nnetwork = \"10.50.0.0/16\"\nsubnet_len = 20\nvni = 7\nport = 4789\ninterface = \"eth1\"\npublic_ip = \"192.0.2.11\"\nlease_ttl = \"15s\"\nreconcile_interval = \"2s\"\n",
        )
        .unwrap();
        assert_eq!(
            c.network.to_json(),
            r#"{"Network":"10.50.0.0/16","SubnetLen":20,"Backend":{"Type":"vxlan","VNI":7,"Port":4789}}"#
        );
        assert_eq!(c.lease_ttl, Duration::from_secs(15));
        assert_eq!(c.public_ip, Some(Ipv4Addr::new(192, 0, 2, 11)));
        assert_eq!(c.interface.as_deref(), Some("eth1"));
        assert_eq!(c.etcd_prefix, "/x/net");
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e = parse("vni = 1\nnetwrok = \"10.0.0.0/8\"\n").unwrap_err().to_string();
        assert!(e.starts_with("/etc/berth/router.toml:2:") && e.contains("netwrok"), "{e}");
        let e = parse("vni = 1\n\nnetwork = \"10.244.1.0/16\"\n").unwrap_err().to_string();
        assert!(e.starts_with("/etc/berth/router.toml:3: key network:") && e.contains("host bits"), "{e}");
        let e = parse("lease_ttl = \"soon\"\n").unwrap_err().to_string();
        assert!(e.starts_with("/etc/berth/router.toml:1: key lease_ttl:"), "{e}");
        let e = parse("port = \"8472\"\n").unwrap_err().to_string();
        assert!(e.starts_with("/etc/berth/router.toml:1:"), "{e}");
        let e = parse("network = \"10.244.0.0/24\"\nsubnet_len = 24\n").unwrap_err().to_string();
        assert!(e.starts_with("/etc/berth/router.toml:2: key subnet_len:") && e.contains("does not fit"), "{e}");
        let e = parse("\nnetwork = \"10.244.0.0/30\"\n").unwrap_err().to_string();
        assert!(e.starts_with("/etc/berth/router.toml:2: key network:") && e.contains("does not fit"), "{e}");
    }

    #[test]
    fn flannel_json_round_trip_and_defaults() {
        let c = NetworkConfig::from_json(br#"{"Network":"10.1.0.0/16","Backend":{"Type":"vxlan"}}"#).unwrap();
        assert_eq!(c.subnet_len, 24);
        assert_eq!(c.backend.vni, 1);
        assert_eq!(c.backend.port, 8472);
        assert_eq!(c.vxlan_name(), "flannel.1");
        assert!(matches!(
            NetworkConfig::from_json(br#"{"Network":"10.1.0.0/16","Backend":{"Type":"udp"}}"#),
            Err(NetworkError::Backend(_))
        ));
        assert!(matches!(
            NetworkConfig::from_json(br#"{"Network":"10.1.0.0/16","SubnetLen":31}"#),
            Err(NetworkError::SubnetLen { .. })
        ));
    }

    #[test]
    fn overlap_with_a_host_network_is_named() {
        let c = NetworkConfig::default();
        let host = vec![("10.0.0.0/8".parse().unwrap(), "address on eth0".to_string())];
        let e = c.overlap(&host).unwrap_err().to_string();
        assert_eq!(e, "network 10.244.0.0/16 overlaps 10.0.0.0/8 on this host (address on eth0)");
        assert!(c.overlap(&[("192.0.2.0/24".parse().unwrap(), "x".into())]).is_ok());
    }
}
