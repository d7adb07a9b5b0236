//! The texts of the files user data makes: units (runcmd, ntp, static
//! network, etcd and sshd overrides), the updater's settings and
//! containerd's registry hosts. Pure: values in, text out. Every unit is a
//! valid Berth unit (`docs/units.md`); [`examples`] gives one of each kind
//! for the unit reader's tests in berth-init.

pub mod config;
pub mod units;

/// The first lines of every generated file.
pub const HEADER: &str = "# Written by berth-provision from user data: it is rewritten at every boot\n\
# from the document in force. Change the user data (berthctl config apply FILE).\n";

/// `s` as one POSIX shell word: single-quoted, `'` as `'\''`.
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b)) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `s` as a TOML basic string, quotes included.
pub fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A TOML array of strings on one line.
pub fn toml_list(items: &[String]) -> String {
    format!("[{}]", items.iter().map(|s| toml_str(s)).collect::<Vec<_>>().join(", "))
}

/// One generated unit of each kind, `(name, text)`, from a config that
/// sets every option: for a test in berth-init that reads each with the
/// unit reader (this crate cannot depend on berth-init).
pub fn examples() -> Vec<(String, String)> {
    use crate::diag::Place;
    use crate::model::{Etcd, Interface, Network, Ntp, Route};
    let at = Place::new("example", 1, "");
    let ntp = Ntp {
        enabled: true,
        servers: vec!["192.0.2.1".into()],
        pools: vec!["pool.ntp.org".into()],
        peers: vec!["ntp-peer.example.com".into()],
        allow: vec!["192.0.2.0/24".into(), "2001:db8::/32".into()],
        at: at.clone(),
    };
    let iface = |name: &str, dhcp4: bool| Interface {
        name: name.into(),
        mac: Some("52:54:00:12:34:56".into()),
        dhcp4,
        addresses: vec!["192.0.2.10/24".into(), "2001:db8::10/64".into()],
        routes: vec![
            Route { to: "0.0.0.0/0".into(), via: "192.0.2.1".into(), metric: Some(100) },
            Route { to: "::/0".into(), via: "2001:db8::1".into(), metric: None },
        ],
        mtu: Some(1400),
        at: at.clone(),
    };
    let static_net = Network {
        version: 2,
        interfaces: vec![iface("eth0", false)],
        nameservers: vec!["192.0.2.53".into()],
        search: vec!["example.com".into()],
        at: at.clone(),
    };
    let dhcp_net = Network { interfaces: vec![iface("eth0", false), iface("eth1", true)], ..static_net.clone() };
    let etcd = Etcd {
        name: Some("n1".into()),
        initial_cluster: Some("n1=http://192.0.2.10:2380,n2=http://192.0.2.11:2380".into()),
        initial_cluster_state: Some("new".into()),
        initial_cluster_token: Some("t".into()),
        listen_peer_urls: vec!["http://192.0.2.10:2380".into()],
        initial_advertise_peer_urls: vec!["http://192.0.2.10:2380".into()],
        listen_client_urls: vec!["http://192.0.2.10:2379".into(), "http://127.0.0.1:2379".into()],
        advertise_client_urls: vec!["http://192.0.2.10:2379".into()],
        at,
        places: Vec::new(),
    };
    vec![
        ("ntp".into(), units::ntp(&ntp)),
        ("network".into(), units::network(&static_net)),
        ("network".into(), units::network(&dhcp_net)),
        ("sshd".into(), units::sshd(true, true)),
        ("sshd".into(), units::sshd(false, false)),
        ("etcd".into(), units::etcd(&etcd)),
        (units::RUNCMD_UNIT.into(), units::runcmd_unit("i-0a1b/c")),
    ]
}
