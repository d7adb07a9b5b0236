//! The apply plan: config + machine facts + the record -> changes (pure).
//!
//! [`Facts::gather`] reads what the plan needs from the machine (the
//! account files, which of the image's units and time zones exist, the
//! current content of files it merges into); [`plan`] turns a
//! [`Config`] and those facts into an ordered list of [`Change`]s with the
//! full final content of every file, so that [`crate::apply`] only writes.
//!
//! Which keys are planned depends on the [`Scope`]: the every-boot keys
//! always; the once-per-instance ones (users, `ssh_authorized_keys`,
//! `write_files`) for a new instance and for `berthctl config apply`;
//! `bootcmd` only at boot. `runcmd` is a unit that runs once per
//! instance-id by itself (a stamp file per instance).

mod accounts;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::Path;

/// The network router's settings file (berth-router reads the same path).
pub use berth_layout::paths::ROUTER_CONFIG;
use berth_layout::paths::{ETC_UNIT_DIR, IMAGE_UNIT_DIR, UPDATER_CONFIG};

pub use accounts::{Accounts, Table};

use crate::diag::{Diagnostic, Place};
use crate::generate::{config as gen_config, units as gen_units};
use crate::host::Host;
use crate::model::{Command, Config, User};

/// Where time zones are.
pub const ZONEINFO: &str = "/usr/share/zoneinfo";
/// Homes of users user data makes (/home is on the read-only root).
pub const HOME_BASE: &str = "/var/home";
/// root's home.
pub const ROOT_HOME: &str = "/var/root";
/// The default shell of users user data makes.
pub const DEFAULT_SHELL: &str = "/usr/bin/sh";
/// Marks the line of /etc/hosts that user data owns.
pub const HOSTS_MARK: &str = "# berth user data";

/// What the plan needs to know of the machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub passwd: String,
    pub group: String,
    pub shadow: String,
    /// Names of the image's units (/usr/lib/berth/units/NAME.toml) among
    /// those the document names (and sshd, network, etcd).
    pub image_units: BTreeSet<String>,
    /// Time zones present under /usr/share/zoneinfo among those asked.
    pub zoneinfo: BTreeSet<String>,
    /// Current contents of the files the plan merges into (appended
    /// write_files, /etc/hosts, authorized_keys, masks to enable); a path
    /// missing here does not exist.
    pub files: BTreeMap<String, Vec<u8>>,
    /// meta-data's `local-hostname`: the hostname when the document sets none.
    pub local_hostname: Option<String>,
    /// This instance (meta-data's instance-id, or the machine-id).
    pub instance_id: String,
}

/// What the record of the previous apply says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Previous {
    /// Files the every-boot keys wrote last time: removed when the new
    /// document no longer makes them (a unit dropped from it goes away).
    pub managed: Vec<String>,
}

/// Which keys are planned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scope {
    /// users, ssh_authorized_keys, write_files.
    pub per_instance: bool,
    /// bootcmd (at boot only).
    pub bootcmd: bool,
}

/// One change. Paths are absolute, as on the machine.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// The file's whole new content.
    Write {
        path: String,
        content: Vec<u8>,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Remove {
        path: String,
    },
    /// Made when missing (with its missing parents); an existing directory
    /// is left as it is.
    Mkdir {
        path: String,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Symlink {
        target: String,
        path: String,
    },
    SetHostname(String),
    /// A `bootcmd` entry, run after the files are in place.
    Bootcmd(Command),
}

/// What [`plan`] gives.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub changes: Vec<Change>,
    /// Units whose files the plan writes or removes (a superset of what
    /// changes; [`crate::apply`] tells which did).
    pub units: Vec<String>,
    /// The hostname user data sets (or meta-data's local-hostname).
    pub hostname: Option<String>,
    /// The files of every-boot keys, for the next [`Previous`].
    pub managed: Vec<String>,
    pub warnings: Vec<Diagnostic>,
}

/// The unit a changed path belongs to (it is restarted when the path
/// changes): /etc/berth/units/NAME.toml is NAME's, /etc/containerd/**
/// containerd's, /etc/berth/updater.toml the updater's,
/// /etc/berth/router.toml the router's, the runcmd script
/// user-runcmd's.
pub fn unit_of_path(path: &str) -> Option<String> {
    if let Some(name) = path.strip_prefix(&format!("{ETC_UNIT_DIR}/")).and_then(|n| n.strip_suffix(".toml")) {
        if !name.contains('/') {
            return Some(name.to_string());
        }
    }
    if path.starts_with("/etc/containerd/") {
        return Some("containerd".into());
    }
    if path == UPDATER_CONFIG {
        return Some("updater".into());
    }
    if path == ROUTER_CONFIG {
        return Some("router".into());
    }
    if path == gen_units::RUNCMD_SCRIPT {
        return Some(gen_units::RUNCMD_UNIT.into());
    }
    None
}

fn unit_path(name: &str) -> String {
    format!("{ETC_UNIT_DIR}/{name}.toml")
}

/// The users the plan touches, by name: `default` is root.
fn user_name(u: &User) -> &str {
    if u.is_default {
        "root"
    } else {
        &u.name
    }
}

/// A user's home: `homedir`, else what /etc/passwd says, else
/// /var/home/NAME (root: /var/root; a system user: /nonexistent).
fn home_for(u: &User, accounts: &Accounts) -> String {
    let name = user_name(u);
    if let Some(h) = &u.homedir {
        return h.clone();
    }
    if let Some(h) = accounts.home(name) {
        if !h.is_empty() {
            return h.to_string();
        }
    }
    if name == "root" {
        ROOT_HOME.into()
    } else if u.system {
        "/nonexistent".into()
    } else {
        format!("{HOME_BASE}/{name}")
    }
}

fn authorized_keys_path(home: &str) -> String {
    format!("{}/.ssh/authorized_keys", home.trim_end_matches('/'))
}

impl Facts {
    /// Reads what [`plan`] needs for `config` from the machine.
    pub fn gather(
        host: &dyn Host,
        config: &Config,
        local_hostname: Option<String>,
        instance_id: &str,
    ) -> io::Result<Facts> {
        let text = |p: &str| -> io::Result<String> {
            Ok(host.read(Path::new(p))?.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default())
        };
        let mut facts = Facts {
            passwd: text("/etc/passwd")?,
            group: text("/etc/group")?,
            shadow: text("/etc/shadow")?,
            local_hostname,
            instance_id: instance_id.to_string(),
            ..Facts::default()
        };
        let accounts = Accounts::parse(&facts.passwd, &facts.group, &facts.shadow);
        let mut names: BTreeSet<String> = ["sshd", "network", "etcd", "ntp"].map(String::from).into();
        names.extend(config.units.files.iter().map(|u| u.name.clone()));
        names.extend(config.units.disable.iter().map(|u| u.value.clone()));
        names.extend(config.units.enable.iter().map(|u| u.value.clone()));
        for n in names {
            if host.exists(Path::new(&format!("{IMAGE_UNIT_DIR}/{n}.toml"))) {
                facts.image_units.insert(n);
            }
        }
        if let Some(tz) = &config.timezone {
            if host.read(Path::new(&format!("{ZONEINFO}/{}", tz.value)))?.is_some() {
                facts.zoneinfo.insert(tz.value.clone());
            }
        }
        let mut paths: Vec<String> = vec!["/etc/hosts".into()];
        paths.extend(config.write_files.iter().filter(|w| w.append).map(|w| w.path.clone()));
        paths.extend(config.units.enable.iter().map(|u| unit_path(&u.value)));
        paths.push(authorized_keys_path(ROOT_HOME));
        for u in &config.users {
            paths.push(authorized_keys_path(&home_for(u, &accounts)));
        }
        for p in paths {
            if let Some(bytes) = host.read(Path::new(&p))? {
                facts.files.insert(p, bytes);
            }
        }
        Ok(facts)
    }
}

/// The changes that make the machine what `config` says, in order:
/// write_files (not deferred), accounts, homes and keys, deferred
/// write_files, hostname, time zone, the files of every-boot keys (units,
/// settings), removal of those the previous document made and this one
/// does not, the hostname, bootcmd.
///
/// Errors (each at its item's place): an owner that exists neither in
/// the document nor on the machine, a time zone the machine lacks, an
/// `override` of a unit the image lacks or an `add` of one it has, no
/// free uid or gid left.
pub fn plan(config: &Config, facts: &Facts, previous: &Previous, scope: Scope) -> Result<Plan, Vec<Diagnostic>> {
    let mut p = Planner { facts, out: Plan::default(), errors: vec![] };
    let mut accounts = Accounts::parse(&facts.passwd, &facts.group, &facts.shadow);
    if scope.per_instance {
        p.users(config, &mut accounts);
        // Owners resolve against the accounts as they will be, the
        // document's users included.
        let (now, deferred): (Vec<_>, Vec<_>) = config.write_files.iter().partition(|w| !w.defer);
        let mut accounts_changes = std::mem::take(&mut p.out.changes);
        for w in now {
            p.write_file(w, &accounts);
        }
        p.out.changes.append(&mut accounts_changes);
        for w in deferred {
            p.write_file(w, &accounts);
        }
    }
    p.every_boot(config, previous);
    if scope.bootcmd {
        for c in &config.bootcmd {
            p.out.changes.push(Change::Bootcmd(c.value.clone()));
        }
    }
    if p.errors.is_empty() {
        Ok(p.out)
    } else {
        Err(p.errors)
    }
}

struct Planner<'a> {
    facts: &'a Facts,
    out: Plan,
    errors: Vec<Diagnostic>,
}

impl Planner<'_> {
    fn write(&mut self, path: &str, content: impl Into<Vec<u8>>, mode: u32, uid: u32, gid: u32) {
        self.out.changes.push(Change::Write { path: path.to_string(), content: content.into(), mode, uid, gid });
    }

    fn error(&mut self, at: &Place, message: impl Into<String>) {
        self.errors.push(Diagnostic::new(at.clone(), message));
    }

    fn users(&mut self, config: &Config, accounts: &mut Accounts) {
        let before = accounts.clone();
        // Keys for root: the top-level list and those of the default user.
        let mut keys: BTreeMap<String, (u32, u32, Vec<String>)> = BTreeMap::new();
        let mut homes: Vec<(String, u32, u32)> = vec![];
        if !config.ssh_authorized_keys.is_empty() {
            let home = accounts.home("root").filter(|h| !h.is_empty()).unwrap_or(ROOT_HOME).to_string();
            keys.entry(home)
                .or_insert((0, 0, vec![]))
                .2
                .extend(config.ssh_authorized_keys.iter().map(|k| k.value.clone()));
        }
        for u in &config.users {
            let name = user_name(u).to_string();
            let home = home_for(u, accounts);
            let Some((uid, gid)) = self.user(u, &name, &home, accounts) else { continue };
            // A home on the read-only root (the image's `nobody` has
            // /nonexistent; a system user without `homedir` too) is not
            // made, and keys cannot be written there.
            let writable = crate::interpret::valid::writable_path(&home).is_ok();
            let has_home = !(u.system && u.homedir.is_none()) && writable;
            if has_home && !homes.iter().any(|(h, _, _)| *h == home) {
                homes.push((home.clone(), uid, gid));
            }
            if !u.ssh_authorized_keys.is_empty() && !writable {
                self.error(
                    &u.at,
                    format!(
                        "user {name}'s home {home} is not writable on Berth: its ssh_authorized_keys cannot be written (give `homedir`)"
                    ),
                );
            } else if !u.ssh_authorized_keys.is_empty() {
                let e = keys.entry(home).or_insert((uid, gid, vec![]));
                e.2.extend(u.ssh_authorized_keys.iter().map(|k| k.value.clone()));
            }
        }
        if accounts.passwd != before.passwd {
            self.write("/etc/passwd", accounts.passwd.text(), 0o644, 0, 0);
        }
        if accounts.group != before.group {
            self.write("/etc/group", accounts.group.text(), 0o644, 0, 0);
        }
        if accounts.shadow != before.shadow {
            self.write("/etc/shadow", accounts.shadow.text(), 0o600, 0, 0);
        }
        for (home, uid, gid) in &homes {
            if home.starts_with(&format!("{HOME_BASE}/")) {
                self.out.changes.push(Change::Mkdir { path: HOME_BASE.into(), mode: 0o755, uid: 0, gid: 0 });
            }
            self.out.changes.push(Change::Mkdir { path: home.clone(), mode: 0o700, uid: *uid, gid: *gid });
        }
        for (home, (uid, gid, new)) in keys {
            let path = authorized_keys_path(&home);
            self.out.changes.push(Change::Mkdir {
                path: format!("{}/.ssh", home.trim_end_matches('/')),
                mode: 0o700,
                uid,
                gid,
            });
            let current =
                self.facts.files.get(&path).map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
            let mut lines: Vec<String> = current.lines().map(String::from).collect();
            for k in new {
                let k = k.trim().to_string();
                if !k.is_empty() && !lines.contains(&k) {
                    lines.push(k);
                }
            }
            let mut text = lines.join("\n");
            text.push('\n');
            self.write(&path, text, 0o600, uid, gid);
        }
    }

    /// Makes or changes one user; its uid and primary gid.
    fn user(&mut self, u: &User, name: &str, home: &str, accounts: &mut Accounts) -> Option<(u32, u32)> {
        let exists = accounts.passwd.get(name).is_some();
        let (uid, gid) = if exists {
            let uid = accounts.uid(name).unwrap_or(0);
            if let Some(want) = u.uid.filter(|w| *w != uid) {
                self.error(
                    &u.at,
                    format!("user {name} exists with uid {uid}: uid {want} cannot be given to it (an existing user's uid is not changed)"),
                );
                return None;
            }
            let mut gid = accounts.primary_gid(name).unwrap_or(0);
            if let Some(pg) = &u.primary_group {
                match accounts.ensure_group(pg, u.system, None) {
                    Some(g) => gid = g,
                    None => {
                        self.error(&u.at, format!("no free group id left for group {pg}"));
                        return None;
                    }
                }
                accounts.passwd.set(name, 3, &gid.to_string());
            }
            if let Some(g) = &u.gecos {
                accounts.passwd.set(name, 4, g);
            }
            if u.homedir.is_some() {
                accounts.passwd.set(name, 5, home);
            }
            if let Some(s) = &u.shell {
                accounts.passwd.set(name, 6, s);
            }
            (uid, gid)
        } else {
            let taken = accounts.passwd.ids(2);
            let Some(uid) = accounts::free_id(&taken, u.system, u.uid) else {
                self.error(&u.at, format!("no free user id left for user {name}"));
                return None;
            };
            if let Some(want) = u.uid {
                if want != uid {
                    let owner = accounts.passwd.name_by_id(2, want).unwrap_or("another user").to_string();
                    self.error(&u.at, format!("uid {want} of user {name} is taken by {owner}"));
                    return None;
                }
            }
            let group = u.primary_group.clone().unwrap_or_else(|| name.to_string());
            let Some(gid) = accounts.ensure_group(&group, u.system, Some(uid)) else {
                self.error(&u.at, format!("no free group id left for group {group}"));
                return None;
            };
            accounts.passwd.push(vec![
                name.into(),
                "x".into(),
                uid.to_string(),
                gid.to_string(),
                u.gecos.clone().unwrap_or_default(),
                home.into(),
                u.shell.clone().unwrap_or_else(|| DEFAULT_SHELL.into()),
            ]);
            (uid, gid)
        };
        for g in &u.groups {
            if accounts.ensure_group(g, u.system, None).is_none() {
                self.error(&u.at, format!("no free group id left for group {g}"));
                return None;
            }
            accounts.add_member(g, name);
        }
        // The password: a hash as given (`!` before it when locked); no
        // hash: a new user gets `!`, an existing one is locked if asked.
        if accounts.shadow.get(name).is_none() {
            accounts.shadow.push(vec![
                name.into(),
                "!".into(),
                "1".into(),
                "".into(),
                "".into(),
                "".into(),
                "".into(),
                "".into(),
                "".into(),
            ]);
        }
        let current = accounts.shadow.field(name, 1).unwrap_or("").to_string();
        let new = match (&u.passwd, u.lock_passwd) {
            (Some(hash), true) => format!("!{hash}"),
            (Some(hash), false) => hash.clone(),
            (None, true) if current.is_empty() || current.starts_with('!') || current.starts_with('*') => {
                if current.is_empty() {
                    "!".into()
                } else {
                    current.clone()
                }
            }
            (None, true) => format!("!{current}"),
            (None, false) => current.clone(),
        };
        if new != current {
            accounts.shadow.set(name, 1, &new);
        }
        Some((uid, gid))
    }

    fn write_file(&mut self, w: &crate::model::WriteFile, accounts: &Accounts) {
        let (user, group) = &w.owner;
        let uid = accounts.uid(user).or_else(|| user.parse().ok());
        let gid = accounts.gid(group).or_else(|| group.parse().ok());
        let (Some(uid), Some(gid)) = (uid, gid) else {
            let missing = if uid.is_none() { format!("user {user}") } else { format!("group {group}") };
            self.error(
                &w.at,
                format!("owner {user}:{group} of {}: no {missing} in the document's users or on this machine", w.path),
            );
            return;
        };
        let mut content = w.content.clone();
        if w.append {
            // What is there, then the content; applying again (config
            // apply on the same instance) does not add it twice.
            // What an earlier entry of the document writes there, else what
            // the machine has.
            let planned = self.out.changes.iter().rev().find_map(|c| match c {
                Change::Write { path, content, .. } if *path == w.path => Some(content.clone()),
                _ => None,
            });
            let mut current = planned.or_else(|| self.facts.files.get(&w.path).cloned()).unwrap_or_default();
            if !current.ends_with(&content) || content.is_empty() {
                current.extend_from_slice(&content);
            }
            content = current;
        }
        self.write(&w.path, content, w.mode, uid, gid);
    }

    fn every_boot(&mut self, config: &Config, previous: &Previous) {
        self.hostname(config);
        self.timezone(config);
        // Files of every-boot keys: path -> (content, mode, what wrote it).
        let mut files: BTreeMap<String, (Vec<u8>, u32, String)> = BTreeMap::new();
        let mut put = |this: &mut Self, path: String, text: String, mode: u32, what: &str| {
            if let Some((_, _, before)) = files.get(&path) {
                this.out.warnings.push(Diagnostic::new(
                    Place::new("", 0, what),
                    format!("{path} is also written by {before}; {what} wins"),
                ));
            }
            files.insert(path, (text.into_bytes(), mode, what.to_string()));
        };
        if !config.runcmd.is_empty() {
            let cmds: Vec<Command> = config.runcmd.iter().map(|c| c.value.clone()).collect();
            put(self, gen_units::RUNCMD_SCRIPT.into(), gen_units::runcmd_script(&cmds), 0o700, "runcmd");
            put(
                self,
                unit_path(gen_units::RUNCMD_UNIT),
                gen_units::runcmd_unit(&self.facts.instance_id),
                0o644,
                "runcmd",
            );
        }
        // The image runs chronyd with the default pool: user data replaces
        // its unit when it names sources or `allow`, masks it when disabled.
        match &config.ntp {
            Some(ntp) if !ntp.enabled => put(self, unit_path("ntp"), String::new(), 0o644, "ntp.enabled"),
            Some(ntp) if ntp.has_settings() => put(self, unit_path("ntp"), gen_units::ntp(ntp), 0o644, "ntp"),
            _ => {}
        }
        let ssh = &config.ssh;
        if ssh.enabled.as_ref().is_some_and(|e| !e.value) {
            put(self, unit_path("sshd"), String::new(), 0o644, "ssh.enabled");
        } else {
            let pw = ssh.password_auth.as_ref().is_some_and(|i| i.value);
            let noroot = ssh.disable_root.as_ref().is_some_and(|i| i.value);
            if pw || noroot {
                put(self, unit_path("sshd"), gen_units::sshd(pw, noroot), 0o644, "ssh_pwauth/disable_root");
            }
        }
        // A network config without interfaces keeps the image's DHCP.
        if let Some(net) = config.network.as_ref().filter(|n| !n.interfaces.is_empty()) {
            put(self, unit_path("network"), gen_units::network(net), 0o644, "network");
        }
        if let Some(etcd) = &config.etcd {
            put(self, unit_path("etcd"), gen_units::etcd(etcd), 0o644, "etcd");
        }
        if let Some(update) = &config.update {
            // What the updater would refuse in its file (and then ignore
            // the whole of it): refused here, at the document's place.
            if update.auto == Some(true) && update.source.is_none() {
                self.error(&update.at, "auto = true needs a source (the updater has nowhere to look)");
            }
            if update.reboot.as_deref() == Some("window") && update.window.is_none() {
                self.error(&update.at, "reboot = \"window\" needs a window (\"HH:MM-HH:MM\", UTC)");
            }
            let etcd = config.etcd.as_ref().map(gen_units::etcd_client_url);
            put(self, UPDATER_CONFIG.into(), gen_config::updater(update, etcd), 0o644, "update");
        }
        if let Some(router) = &config.router {
            let etcd = config.etcd.as_ref().map(gen_units::etcd_client_url);
            put(self, ROUTER_CONFIG.into(), gen_config::router(router, etcd), 0o644, "router");
        }
        if let Some(c) = &config.containerd {
            for (host, mirrors) in &c.registry_mirrors {
                let path = format!("/etc/containerd/certs.d/{host}/hosts.toml");
                put(self, path, gen_config::registry_hosts(host, mirrors), 0o644, "containerd.registry_mirrors");
            }
        }
        for u in &config.units.files {
            let has = self.facts.image_units.contains(&u.name);
            if u.is_override && !has {
                self.error(&u.at, format!("the image has no unit {} to override (add it instead)", u.name));
            } else if !u.is_override && has {
                self.error(&u.at, format!("the image has a unit {}: override it instead of adding one", u.name));
            }
            put(self, unit_path(&u.name), u.text.clone(), 0o644, &u.at.key.clone());
        }
        for d in &config.units.disable {
            put(self, unit_path(&d.value), String::new(), 0o644, &d.at.key.clone());
        }
        for e in &config.units.enable {
            let path = unit_path(&e.value);
            let masked = self.facts.files.get(&path).is_some_and(|b| b.iter().all(|c| c.is_ascii_whitespace()));
            if masked && !previous.managed.contains(&path) && !files.contains_key(&path) {
                self.out.warnings.push(Diagnostic::new(
                    e.at.clone(),
                    format!("unit {} is masked by {path}, which user data did not make: left as it is", e.value),
                ));
            }
        }
        // containerd's own config is not managed: the image has one in
        // /etc, which removing would hide rather than restore.
        if let Some(text) = config.containerd.as_ref().and_then(|c| c.config.as_ref()) {
            self.write("/etc/containerd/config.toml", text.value.clone(), 0o644, 0, 0);
            self.out.units.push("containerd".into());
        }
        for (path, (content, mode, _)) in &files {
            self.write(path, content.clone(), *mode, 0, 0);
        }
        self.out.managed = files.keys().cloned().collect();
        if config.timezone.is_some() {
            self.out.managed.extend(["/etc/localtime".to_string(), "/etc/timezone".to_string()]);
        }
        self.out.managed.sort();
        self.out.managed.dedup();
        for old in &previous.managed {
            if !self.out.managed.contains(old) {
                self.out.changes.push(Change::Remove { path: old.clone() });
            }
        }
        let mut units: BTreeSet<String> = self.out.units.drain(..).collect();
        for path in files.keys().chain(previous.managed.iter()) {
            if let Some(u) = unit_of_path(path) {
                units.insert(u);
            }
        }
        self.out.units = units.into_iter().collect();
        if let Some(h) = self.out.hostname.clone() {
            self.out.changes.push(Change::SetHostname(h));
        }
    }

    fn hostname(&mut self, config: &Config) {
        if config.preserve_hostname {
            return;
        }
        let fqdn = config
            .fqdn
            .as_ref()
            .map(|f| f.value.clone())
            .or_else(|| config.hostname.as_ref().filter(|h| h.value.contains('.')).map(|h| h.value.clone()));
        let short = config
            .hostname
            .as_ref()
            .map(|h| h.value.clone())
            .or_else(|| fqdn.clone())
            .or_else(|| self.facts.local_hostname.clone())
            .map(|h| h.split('.').next().unwrap_or_default().to_string())
            .filter(|h| !h.is_empty());
        let Some(short) = short else { return };
        self.write("/etc/hostname", format!("{short}\n"), 0o644, 0, 0);
        if let Some(fqdn) = fqdn {
            let current = self.facts.files.get("/etc/hosts").map(|b| String::from_utf8_lossy(b).into_owned());
            let mut text = current.unwrap_or_else(|| "127.0.0.1\tlocalhost\n::1\tlocalhost\n".into());
            text = text.lines().filter(|l| !l.ends_with(HOSTS_MARK)).map(|l| format!("{l}\n")).collect();
            let names = if fqdn == short { fqdn.clone() } else { format!("{fqdn} {short}") };
            text.push_str(&format!("127.0.1.1\t{names}\t{HOSTS_MARK}\n"));
            self.write("/etc/hosts", text, 0o644, 0, 0);
        }
        self.out.hostname = Some(short);
    }

    fn timezone(&mut self, config: &Config) {
        let Some(tz) = &config.timezone else { return };
        let name = tz.value.as_str();
        let file = format!("{ZONEINFO}/{name}");
        if self.facts.zoneinfo.contains(name) {
            self.out.changes.push(Change::Symlink { target: file, path: "/etc/localtime".into() });
        } else if matches!(name, "UTC" | "Etc/UTC" | "Etc/Universal" | "Universal" | "Zulu") {
            // No zoneinfo at all: no /etc/localtime is UTC.
            self.out.changes.push(Change::Remove { path: "/etc/localtime".into() });
        } else {
            self.error(&tz.at, format!("time zone {name}: {file} is not on this machine"));
            return;
        }
        self.write("/etc/timezone", format!("{name}\n"), 0o644, 0, 0);
    }
}

#[cfg(test)]
mod tests;
