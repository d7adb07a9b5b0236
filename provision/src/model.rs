//! What a user-data document means, whichever format it came in: the
//! output of [`crate::interpret`] and the input of [`crate::plan`].
//!
//! Everything here is already validated: names are valid, paths absolute,
//! modes parsed, contents decoded. Items keep their [`Place`] so that what
//! only the machine can check (an owner that does not exist there, a time
//! zone it lacks) is still reported at its line.
//!
//! Which keys apply once per instance and which on every boot: see
//! [`When`] and `docs/user-data.md`.

use crate::diag::Place;

/// A validated document. Default: a document that changes nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Config {
    /// `hostname` (cloud-init: the short name; with `fqdn` it is the
    /// first label of that). Every boot.
    pub hostname: Option<Named>,
    /// `fqdn`: written to /etc/hosts with the short name. Every boot.
    pub fqdn: Option<Named>,
    /// `preserve_hostname: true`: leave /etc/hostname as the machine has it
    /// (hostname and fqdn are then ignored, with a warning if set).
    pub preserve_hostname: bool,
    /// `users`, in document order; the `default` entry is the default user
    /// (on Berth: root). Once per instance.
    pub users: Vec<User>,
    /// Top-level `ssh_authorized_keys`: for the default user (root). Once
    /// per instance.
    pub ssh_authorized_keys: Vec<Item<String>>,
    /// `write_files`. Once per instance (`defer: true` ones after users are
    /// made, so their owners exist).
    pub write_files: Vec<WriteFile>,
    /// `bootcmd`: every boot, before the units start.
    pub bootcmd: Vec<Item<Command>>,
    /// `runcmd`: once per instance, after the network is online (a oneshot
    /// unit, `user-runcmd`).
    pub runcmd: Vec<Item<Command>>,
    /// `ntp`. Every boot (a unit).
    pub ntp: Option<Ntp>,
    /// `timezone`, an IANA name (`Europe/Berlin`). Every boot.
    pub timezone: Option<Named>,
    /// `ssh_pwauth`, `disable_root`, and Berth's `ssh.enabled`. Every boot.
    pub ssh: Ssh,
    /// Network config v1 or v2 (from the NoCloud `network-config` file, or
    /// the `network` key). Every boot.
    pub network: Option<Network>,
    /// Berth's own keys (`berth:` in #cloud-config, top level in TOML).
    pub units: Units,
    pub containerd: Option<Containerd>,
    pub etcd: Option<Etcd>,
    pub update: Option<Update>,
    pub router: Option<Router>,
}

/// A value and where it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Item<T> {
    pub value: T,
    pub at: Place,
}

/// A validated name (hostname, fqdn, time zone) and its place.
pub type Named = Item<String>;

/// When a key takes effect (cloud-init's module frequencies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// At every boot, from the document in force.
    EveryBoot,
    /// When the instance-id is new (first boot, or a new one in the
    /// meta-data), or by `berthctl config apply`.
    PerInstance,
}

/// One entry of `users`.
#[derive(Clone, Debug, PartialEq)]
pub struct User {
    /// `name`; `root` for the `default` entry.
    pub name: String,
    /// The `default` entry (the string `default`, or a name-less mapping).
    pub is_default: bool,
    /// `gecos`.
    pub gecos: Option<String>,
    /// `groups` (a comma-separated string or a list); groups that do not
    /// exist are made.
    pub groups: Vec<String>,
    /// `primary_group`; default: a group of the user's name.
    pub primary_group: Option<String>,
    /// `shell`, an absolute path; default `/usr/bin/sh`.
    pub shell: Option<String>,
    /// `homedir`; default `/var/home/NAME` (root: `/var/root`): /home is on
    /// the read-only root.
    pub homedir: Option<String>,
    /// `uid`.
    pub uid: Option<u32>,
    /// `system: true`: a uid below 1000, no home unless `homedir`.
    pub system: bool,
    /// `lock_passwd` (default true, as cloud-init): no password login.
    pub lock_passwd: bool,
    /// `passwd`: a crypt(3) hash (`$6$...`, `$y$...`), never plain text.
    pub passwd: Option<String>,
    /// `ssh_authorized_keys`.
    pub ssh_authorized_keys: Vec<Item<String>>,
    pub at: Place,
}

impl User {
    /// A user with cloud-init's defaults for every key (`lock_passwd`
    /// true, nothing else set): what a bare name in `users` means.
    pub fn new(name: &str, at: Place) -> User {
        User {
            name: name.to_string(),
            is_default: false,
            gecos: None,
            groups: Vec::new(),
            primary_group: None,
            shell: None,
            homedir: None,
            uid: None,
            system: false,
            lock_passwd: true,
            passwd: None,
            ssh_authorized_keys: Vec::new(),
            at,
        }
    }
}

/// One entry of `write_files`.
#[derive(Clone, Debug, PartialEq)]
pub struct WriteFile {
    /// Absolute, normalised (no `..`), not under a read-only part of the
    /// image (only /etc, /var, /run, /tmp and /root are writable).
    pub path: String,
    /// Decoded (`encoding` b64, gzip, gz+b64, or `!!binary`).
    pub content: Vec<u8>,
    /// `permissions`, default 0o644.
    pub mode: u32,
    /// `owner` `user:group` as names, default `root:root`; resolved when
    /// planned (the users of the document and of the machine).
    pub owner: (String, String),
    /// `append: true`: add to the end of an existing file.
    pub append: bool,
    /// `defer: true`: written after users are made.
    pub defer: bool,
    pub at: Place,
}

/// A command of `bootcmd` or `runcmd`.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// A string: run by `sh -c`.
    Shell(String),
    /// A list: exec'd as is (`argv[0]` looked up in PATH).
    Argv(Vec<String>),
}

/// `ntp` (cloud-init's cc_ntp), for chronyd: each list becomes one
/// directive per item, in order (`server H iburst`, `pool H iburst`,
/// `peer H`, `allow X`).
#[derive(Clone, Debug, PartialEq)]
pub struct Ntp {
    /// `enabled` (default true when `ntp` is given); false masks the unit.
    pub enabled: bool,
    /// `servers`: host names or addresses.
    pub servers: Vec<String>,
    /// `pools`: host names (or addresses) that resolve to several servers.
    pub pools: Vec<String>,
    /// `peers`: host names or addresses, synchronised both ways.
    pub peers: Vec<String>,
    /// `allow`: addresses or `ADDRESS/PREFIX` networks served NTP.
    pub allow: Vec<String>,
    pub at: Place,
}

impl Ntp {
    /// `ntp:` alone, written at `at`: enabled, no key given.
    pub fn new(at: Place) -> Ntp {
        Ntp { enabled: true, servers: Vec::new(), pools: Vec::new(), peers: Vec::new(), allow: Vec::new(), at }
    }

    /// Whether it changes anything of the image's time sync besides
    /// turning it off: without sources or `allow` the image's unit (the
    /// default pool) stays.
    pub fn has_settings(&self) -> bool {
        !(self.servers.is_empty() && self.pools.is_empty() && self.peers.is_empty() && self.allow.is_empty())
    }
}

/// The SSH server's settings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ssh {
    /// Berth's `ssh.enabled` (default: on).
    pub enabled: Option<Item<bool>>,
    /// `ssh_pwauth` (default: off, keys only).
    pub password_auth: Option<Item<bool>>,
    /// `disable_root` (default on Berth: false, root is the admin).
    pub disable_root: Option<Item<bool>>,
}

/// Static network settings (network config v1 or v2, one meaning).
#[derive(Clone, Debug, PartialEq)]
pub struct Network {
    pub version: u8,
    /// Interfaces by kernel name (`eth0`). An interface with `dhcp4: true`
    /// and no addresses keeps DHCP.
    pub interfaces: Vec<Interface>,
    /// Global nameservers (v1 `type: nameserver`, or every interface's v2
    /// `nameservers` merged in order).
    pub nameservers: Vec<String>,
    pub search: Vec<String>,
    pub at: Place,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Interface {
    pub name: String,
    /// v2 `match: macaddress` / v1 `mac_address`: the interface is the one
    /// with this MAC, renamed to `name` (`set-name`).
    pub mac: Option<String>,
    pub dhcp4: bool,
    /// `address/prefix`, IPv4 or IPv6.
    pub addresses: Vec<String>,
    /// Default route included (v2 `gateway4`/`gateway6` become routes to
    /// `0.0.0.0/0` and `::/0`).
    pub routes: Vec<Route>,
    pub mtu: Option<u32>,
    pub at: Place,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// `to`: `0.0.0.0/0`, `default`, or a prefix.
    pub to: String,
    pub via: String,
    pub metric: Option<u32>,
}

/// Units to add, override or mask (`docs/units.md`): written to
/// /etc/berth/units. Every boot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Units {
    /// `units.add` / `units.override`: NAME -> the unit file's text, which
    /// must itself be a valid unit (checked with the unit reader).
    pub files: Vec<UnitFile>,
    /// `units.disable`: masked (an empty file).
    pub disable: Vec<Item<String>>,
    /// `units.enable`: a mask user data made earlier is removed.
    pub enable: Vec<Item<String>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct UnitFile {
    pub name: String,
    pub text: String,
    /// Whether the document said `override` (a unit of the image by that
    /// name must exist) rather than `add` (it must not).
    pub is_override: bool,
    pub at: Place,
}

/// containerd's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Containerd {
    /// `config`: the whole of /etc/containerd/config.toml (valid TOML).
    pub config: Option<Item<String>>,
    /// `registry_mirrors`: host -> mirror endpoints, written as
    /// containerd's `hosts.toml` files under /etc/containerd/certs.d.
    pub registry_mirrors: Vec<(String, Vec<String>)>,
    pub at: Place,
}

/// etcd's member and cluster settings: the etcd unit's arguments.
#[derive(Clone, Debug, PartialEq)]
pub struct Etcd {
    /// `name` (default `berth`).
    pub name: Option<String>,
    /// `initial_cluster`: `NAME=PEER_URL,...`.
    pub initial_cluster: Option<String>,
    /// `initial_cluster_state`: `new` or `existing`.
    pub initial_cluster_state: Option<String>,
    /// `initial_cluster_token`.
    pub initial_cluster_token: Option<String>,
    /// URLs (http or https, absolute).
    pub listen_peer_urls: Vec<String>,
    pub initial_advertise_peer_urls: Vec<String>,
    pub listen_client_urls: Vec<String>,
    pub advertise_client_urls: Vec<String>,
    pub at: Place,
    /// Where each key given was written (`listen_peer_urls` -> its place),
    /// for the checks across keys.
    pub places: Vec<(String, Place)>,
}

impl Etcd {
    /// Where `key` was written; the section's place when it was not.
    pub fn place(&self, key: &str) -> &Place {
        self.places.iter().find(|(k, _)| k == key).map_or(&self.at, |(_, p)| p)
    }
}

/// The network router's settings (`router`): written to
/// /etc/berth/router.toml, every key optional (the router's defaults).
#[derive(Clone, Debug, PartialEq)]
pub struct Router {
    /// `etcd_endpoints`: etcd client URLs (default: the etcd unit's client URL).
    pub etcd_endpoints: Vec<String>,
    /// `etcd_prefix`: flannel's layout root (`/coreos.com/network`).
    pub etcd_prefix: Option<String>,
    /// `network`: the cluster network, IPv4 `a.b.c.d/len`.
    pub network: Option<String>,
    /// `subnet_len`: each host's subnet prefix length.
    pub subnet_len: Option<u8>,
    /// `vni`: the VXLAN network identifier, 1 to 16777215.
    pub vni: Option<u32>,
    /// `port`: the VXLAN UDP port.
    pub port: Option<u16>,
    /// `interface`: the underlay interface.
    pub interface: Option<String>,
    /// `public_ip`: this host's underlay IPv4 address.
    pub public_ip: Option<String>,
    /// `lease_ttl`: the subnet lease's TTL, humantime (`30s`).
    pub lease_ttl: Option<String>,
    pub at: Place,
}

impl Router {
    /// No key given, written at `at`.
    pub fn new(at: Place) -> Router {
        Router {
            etcd_endpoints: Vec::new(),
            etcd_prefix: None,
            network: None,
            subnet_len: None,
            vni: None,
            port: None,
            interface: None,
            public_ip: None,
            lease_ttl: None,
            at,
        }
    }
}

/// The updater's settings: written to /etc/berth/updater.toml.
#[derive(Clone, Debug, PartialEq)]
pub struct Update {
    /// `source`: the release metadata URL (http or https).
    pub source: Option<String>,
    /// `auto` (automatic mode on or off).
    pub auto: Option<bool>,
    /// `interval`, humantime (`6h`).
    pub interval: Option<String>,
    /// `reboot`: `immediately`, `window` or `never`.
    pub reboot: Option<String>,
    /// `window`: `HH:MM-HH:MM` UTC, with `reboot = "window"`.
    pub window: Option<String>,
    /// `reboot_strategy`: `off` or `etcd-lock` (Flatcar's words): whether
    /// a reboot into an update first takes a slot of the etcd semaphore.
    pub reboot_strategy: Option<String>,
    /// `reboot_lock_max`: hosts rebooting at once (at least 1).
    pub reboot_lock_max: Option<u32>,
    /// `reboot_lock_ttl`: the slot's lease TTL, humantime, whole seconds.
    pub reboot_lock_ttl: Option<String>,
    pub at: Place,
}

/// A NoCloud `meta-data` (or the metadata service's answers).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetaData {
    /// `instance-id`. Without one, the instance is the machine
    /// (its machine-id).
    pub instance_id: Option<String>,
    /// `local-hostname`: the hostname when user data sets none.
    pub local_hostname: Option<String>,
}
