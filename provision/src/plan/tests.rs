use super::*;
use crate::model::*;
use crate::testutil::{assert_valid_unit, at, machine};

fn user(name: &str) -> User {
    User::new(name, at("users[0]"))
}

fn key(k: &str) -> Item<String> {
    Item { value: k.into(), at: at("ssh_authorized_keys[0]") }
}

fn file(path: &str, content: &str, owner: (&str, &str)) -> WriteFile {
    WriteFile {
        path: path.into(),
        content: content.as_bytes().to_vec(),
        mode: 0o640,
        owner: (owner.0.into(), owner.1.into()),
        append: false,
        defer: false,
        at: at("write_files[0]"),
    }
}

const ALL: Scope = Scope { per_instance: true, bootcmd: true };
const BOOT: Scope = Scope { per_instance: false, bootcmd: true };

fn plan_on_image(config: &Config, scope: Scope) -> Result<Plan, Vec<Diagnostic>> {
    let (_dir, host) = machine();
    let facts = Facts::gather(&host, config, None, "i-1").unwrap();
    plan(config, &facts, &Previous::default(), scope)
}

fn written<'a>(p: &'a Plan, path: &str) -> Option<(&'a [u8], u32, u32, u32)> {
    p.changes.iter().rev().find_map(|c| match c {
        Change::Write { path: q, content, mode, uid, gid } if q == path => {
            Some((content.as_slice(), *mode, *uid, *gid))
        }
        _ => None,
    })
}

fn text(p: &Plan, path: &str) -> String {
    String::from_utf8(written(p, path).unwrap_or_else(|| panic!("{path} not written: {:#?}", p.changes)).0.to_vec())
        .unwrap()
}

#[test]
fn a_new_user_gets_accounts_groups_a_home_and_keys() {
    let mut ann = user("ann");
    ann.groups = vec!["wheel".into(), "etcd".into()];
    ann.ssh_authorized_keys = vec![key("ssh-ed25519 AAAA ann@x")];
    ann.passwd = Some("$6$salt$hash".into());
    ann.lock_passwd = false;
    let config =
        Config { users: vec![ann], ssh_authorized_keys: vec![key("ssh-ed25519 BBBB root@x")], ..Config::default() };
    let p = plan_on_image(&config, ALL).unwrap();
    let passwd = text(&p, "/etc/passwd");
    assert!(passwd.starts_with("root:x:0:0:root:/var/root:/usr/bin/sh\n"), "{passwd}");
    assert!(passwd.ends_with("ann:x:1000:1000::/var/home/ann:/usr/bin/sh\n"), "{passwd}");
    let group = text(&p, "/etc/group");
    assert!(
        group.contains("etcd:x:101:ann\n") && group.contains("ann:x:1000:\n") && group.contains("wheel:x:1001:ann\n"),
        "{group}"
    );
    assert!(text(&p, "/etc/shadow").ends_with("ann:$6$salt$hash:1::::::\n"));
    assert_eq!(written(&p, "/etc/shadow").unwrap().1, 0o600);
    assert!(p.changes.contains(&Change::Mkdir { path: "/var/home".into(), mode: 0o755, uid: 0, gid: 0 }));
    assert!(p.changes.contains(&Change::Mkdir { path: "/var/home/ann".into(), mode: 0o700, uid: 1000, gid: 1000 }));
    assert!(p.changes.contains(&Change::Mkdir {
        path: "/var/home/ann/.ssh".into(),
        mode: 0o700,
        uid: 1000,
        gid: 1000
    }));
    let (keys, mode, uid, gid) = written(&p, "/var/home/ann/.ssh/authorized_keys").unwrap();
    assert_eq!((keys, mode, uid, gid), (&b"ssh-ed25519 AAAA ann@x\n"[..], 0o600, 1000, 1000));
    assert_eq!(text(&p, "/var/root/.ssh/authorized_keys"), "ssh-ed25519 BBBB root@x\n");
    // Once-per-instance keys are not planned at every boot.
    let p = plan_on_image(&config, BOOT).unwrap();
    assert!(written(&p, "/etc/passwd").is_none() && written(&p, "/var/root/.ssh/authorized_keys").is_none());
}

#[test]
fn the_default_user_is_root_and_existing_users_are_changed_in_place() {
    let mut root = user("default");
    root.is_default = true;
    root.ssh_authorized_keys = vec![key("ssh-rsa CCCC")];
    let mut etcd = user("etcd");
    etcd.shell = Some("/usr/bin/sh".into());
    let mut sys = user("svc");
    sys.system = true;
    let config = Config { users: vec![root, etcd, sys], ..Config::default() };
    let p = plan_on_image(&config, ALL).unwrap();
    let passwd = text(&p, "/etc/passwd");
    assert!(passwd.contains("etcd:x:101:101:etcd:/var/lib/etcd:/usr/bin/sh\n"), "{passwd}");
    assert!(passwd.contains("svc:x:999:999::/nonexistent:/usr/bin/sh\n"), "{passwd}");
    assert!(!passwd.contains("default"));
    // root stays `*` (locked, no password); etcd too.
    let shadow = text(&p, "/etc/shadow");
    assert!(shadow.starts_with("root:*:1::::::\n") && shadow.contains("etcd:*:1"), "{shadow}");
    assert_eq!(text(&p, "/var/root/.ssh/authorized_keys"), "ssh-rsa CCCC\n");
    assert!(!p
        .changes
        .iter()
        .any(|c| matches!(c, Change::Mkdir { path, .. } if path.contains("svc") || path == "/nonexistent")));
}

#[test]
fn a_taken_uid_is_an_error_at_the_users_place() {
    let mut bob = user("bob");
    bob.uid = Some(101);
    let e = plan_on_image(&Config { users: vec![bob], ..Config::default() }, ALL).unwrap_err();
    assert_eq!(e[0].to_string(), "user-data:3: key users[0]: uid 101 of user bob is taken by etcd");
}

#[test]
fn write_files_resolve_owners_append_and_defer() {
    let mut ann = user("ann");
    ann.groups = vec!["web".into()];
    let mut deferred = file("/var/home/ann/notes", "hi\n", ("ann", "web"));
    deferred.defer = true;
    let mut appended = file("/etc/motd", "more\n", ("root", "root"));
    appended.append = true;
    let config = Config {
        users: vec![ann],
        write_files: vec![file("/etc/app.conf", "x=1\n", ("etcd", "etcd")), deferred, appended],
        ..Config::default()
    };
    let (dir, host) = machine();
    std::fs::write(dir.path().join("etc/motd"), "welcome\n").unwrap();
    let facts = Facts::gather(&host, &config, None, "i-1").unwrap();
    let p = plan(&config, &facts, &Previous::default(), ALL).unwrap();
    assert_eq!(written(&p, "/etc/app.conf").unwrap(), (&b"x=1\n"[..], 0o640, 101, 101));
    assert_eq!(written(&p, "/var/home/ann/notes").unwrap(), (&b"hi\n"[..], 0o640, 1000, 1001));
    assert_eq!(text(&p, "/etc/motd"), "welcome\nmore\n");
    // Order: the file not deferred first, the accounts, the deferred one.
    let pos =
        |path: &str| p.changes.iter().position(|c| matches!(c, Change::Write { path: q, .. } if q == path)).unwrap();
    assert!(pos("/etc/app.conf") < pos("/etc/passwd") && pos("/etc/passwd") < pos("/var/home/ann/notes"));
    // Appending again (config apply on the same instance) adds nothing.
    std::fs::write(dir.path().join("etc/motd"), "welcome\nmore\n").unwrap();
    let facts = Facts::gather(&host, &config, None, "i-1").unwrap();
    assert_eq!(text(&plan(&config, &facts, &Previous::default(), ALL).unwrap(), "/etc/motd"), "welcome\nmore\n");
}

#[test]
fn an_unknown_owner_is_an_error_at_the_items_place() {
    let config = Config { write_files: vec![file("/etc/x", "", ("nobody", "wheel"))], ..Config::default() };
    let e = plan_on_image(&config, ALL).unwrap_err();
    assert_eq!(
        e[0].to_string(),
        "user-data:3: key write_files[0]: owner nobody:wheel of /etc/x: no group wheel in the document's users or on this machine"
    );
}

#[test]
fn hostname_fqdn_and_preserve_hostname() {
    let named = |v: &str| Some(Item { value: v.to_string(), at: at("hostname") });
    let config = Config { hostname: named("node1"), fqdn: named("node1.example.com"), ..Config::default() };
    let p = plan_on_image(&config, BOOT).unwrap();
    assert_eq!(text(&p, "/etc/hostname"), "node1\n");
    assert_eq!(
        text(&p, "/etc/hosts"),
        "127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\tnode1.example.com node1\t# berth user data\n"
    );
    assert_eq!(p.hostname.as_deref(), Some("node1"));
    assert_eq!(p.changes.last(), Some(&Change::SetHostname("node1".into())));
    // A dotted hostname is the fqdn; the line is replaced, not added.
    let (dir, host) = machine();
    std::fs::write(dir.path().join("etc/hosts"), "10.0.0.1 db\n127.0.1.1\told\t# berth user data\n").unwrap();
    let config = Config { hostname: named("web.example.org"), ..Config::default() };
    let p = plan(&config, &Facts::gather(&host, &config, None, "i").unwrap(), &Previous::default(), BOOT).unwrap();
    assert_eq!(text(&p, "/etc/hostname"), "web\n");
    assert_eq!(text(&p, "/etc/hosts"), "10.0.0.1 db\n127.0.1.1\tweb.example.org web\t# berth user data\n");
    // meta-data's local-hostname when the document has none.
    let p = plan(
        &Config::default(),
        &Facts { local_hostname: Some("meta".into()), ..Facts::default() },
        &Previous::default(),
        BOOT,
    )
    .unwrap();
    assert_eq!(text(&p, "/etc/hostname"), "meta\n");
    let config = Config { hostname: named("x"), preserve_hostname: true, ..Config::default() };
    assert!(plan_on_image(&config, BOOT).unwrap().changes.is_empty());
}

#[test]
fn timezone_links_localtime_or_is_an_error_when_missing() {
    let tz = |v: &str| Config { timezone: Some(Item { value: v.into(), at: at("timezone") }), ..Config::default() };
    let p = plan_on_image(&tz("Europe/Berlin"), BOOT).unwrap();
    assert!(p.changes.contains(&Change::Symlink {
        target: "/usr/share/zoneinfo/Europe/Berlin".into(),
        path: "/etc/localtime".into()
    }));
    assert_eq!(text(&p, "/etc/timezone"), "Europe/Berlin\n");
    let e = plan_on_image(&tz("Mars/Olympus"), BOOT).unwrap_err();
    assert_eq!(
        e[0].to_string(),
        "user-data:3: key timezone: time zone Mars/Olympus: /usr/share/zoneinfo/Mars/Olympus is not on this machine"
    );
    // UTC without zoneinfo: no /etc/localtime.
    let p = plan(&tz("Etc/UTC"), &Facts::default(), &Previous::default(), BOOT).unwrap();
    assert!(p.changes.contains(&Change::Remove { path: "/etc/localtime".into() }));
}

fn net(dhcp_second: bool) -> Network {
    let iface = |name: &str, dhcp4: bool, addrs: &[&str]| Interface {
        name: name.into(),
        mac: None,
        dhcp4,
        addresses: addrs.iter().map(|s| s.to_string()).collect(),
        routes: if addrs.is_empty() {
            vec![]
        } else {
            vec![Route { to: "0.0.0.0/0".into(), via: "192.0.2.1".into(), metric: None }]
        },
        mtu: Some(9000),
        at: at("network.ethernets.eth0"),
    };
    let mut interfaces = vec![iface("eth0", false, &["192.0.2.10/24"])];
    if dhcp_second {
        interfaces.push(iface("eth1", true, &[]));
    }
    Network {
        version: 2,
        interfaces,
        nameservers: vec!["192.0.2.53".into()],
        search: vec!["example.com".into()],
        at: at("network"),
    }
}

#[test]
fn every_boot_keys_become_units_and_settings() {
    let config = Config {
        ntp: Some(Ntp {
            enabled: true,
            servers: vec!["time.example.com".into()],
            peers: vec!["192.0.2.7".into()],
            allow: vec!["192.0.2.0/24".into()],
            ..Ntp::new(at("ntp"))
        }),
        ssh: Ssh {
            password_auth: Some(Item { value: true, at: at("ssh_pwauth") }),
            disable_root: Some(Item { value: true, at: at("disable_root") }),
            enabled: None,
        },
        network: Some(net(false)),
        runcmd: vec![Item { value: Command::Argv(vec!["touch".into(), "/var/a b".into()]), at: at("runcmd[0]") }],
        bootcmd: vec![Item { value: Command::Shell("echo hi".into()), at: at("bootcmd[0]") }],
        update: Some(Update {
            source: Some("http://10.0.2.2/berth/".into()),
            auto: Some(true),
            interval: Some("6h".into()),
            reboot: Some("window".into()),
            window: Some("02:00-04:00".into()),
            reboot_strategy: Some("etcd-lock".into()),
            reboot_lock_max: Some(2),
            reboot_lock_ttl: Some("15m".into()),
            at: at("update"),
        }),
        router: Some(Router {
            network: Some("10.244.0.0/16".into()),
            subnet_len: Some(24),
            vni: Some(1),
            public_ip: Some("192.0.2.10".into()),
            lease_ttl: Some("30s".into()),
            ..Router::new(at("router"))
        }),
        containerd: Some(Containerd {
            config: Some(Item { value: "version = 2\n".into(), at: at("containerd.config") }),
            registry_mirrors: vec![("docker.io".into(), vec!["mirror.example.com".into()])],
            at: at("containerd"),
        }),
        etcd: Some(Etcd {
            name: Some("n1".into()),
            initial_cluster: None,
            initial_cluster_state: Some("new".into()),
            initial_cluster_token: None,
            listen_peer_urls: vec![],
            initial_advertise_peer_urls: vec!["http://192.0.2.10:2380".into()],
            listen_client_urls: vec![],
            advertise_client_urls: vec![],
            at: at("etcd"),
            places: Vec::new(),
        }),
        ..Config::default()
    };
    let p = plan_on_image(&config, BOOT).unwrap();
    let ntp = text(&p, "/etc/berth/units/ntp.toml");
    assert!(
        ntp.contains(
            r#"exec = ["/usr/sbin/chronyd", "-d", "-u", "root", "-F", "1", "include /usr/lib/berth/chrony.conf", "server time.example.com iburst", "peer 192.0.2.7", "allow 192.0.2.0/24"]"#
        ),
        "servers, peers and allow, and no default pool beside a server:\n{ntp}"
    );
    let sshd = text(&p, "/etc/berth/units/sshd.toml");
    assert!(sshd.contains(r#"exec = ["/usr/sbin/dropbear", "-F", "-E", "-w", "-m","#), "{sshd}");
    let network = text(&p, "/etc/berth/units/network.toml");
    assert!(
        network.contains("kind = \"oneshot\"")
            && network.contains("/usr/bin/ip address replace 192.0.2.10/24 dev eth0"),
        "{network}"
    );
    assert!(
        network.contains("/usr/bin/ip link set dev eth0 mtu 9000")
            && network.contains("/usr/bin/ip route replace default via 192.0.2.1 dev eth0")
    );
    assert!(
        network.contains("printf '%s\\n' 'nameserver 192.0.2.53' 'search example.com' > /etc/resolv.conf"),
        "{network}"
    );
    let runcmd = text(&p, "/etc/berth/units/user-runcmd.toml");
    assert!(runcmd.contains(r#"path_exists = "!/var/lib/berth/provision/runcmd-done/i-1""#), "{runcmd}");
    assert!(text(&p, "/var/lib/berth/provision/runcmd.sh").ends_with("\ntouch '/var/a b'\n"));
    assert_eq!(
        text(&p, "/etc/berth/updater.toml").split_once("\n\n").unwrap().1,
        "[auto]\nenabled = true\nsource = \"http://10.0.2.2/berth/\"\ninterval = \"6h\"\nreboot = \"window\"\nwindow = \"02:00-04:00\"\n\n\
         [reboot_lock]\nstrategy = \"etcd-lock\"\nmax = 2\nttl = \"15m\"\nendpoints = [\"http://127.0.0.1:2379\"]\n"
    );
    // The router's file, its etcd the etcd unit's client URL; a change
    // restarts the router.
    assert_eq!(
        text(&p, "/etc/berth/router.toml").split_once("\n\n").unwrap().1,
        "etcd_endpoints = [\"http://127.0.0.1:2379\"]\nnetwork = \"10.244.0.0/16\"\nsubnet_len = 24\nvni = 1\n\
         public_ip = \"192.0.2.10\"\nlease_ttl = \"30s\"\n"
    );
    assert_eq!(crate::plan::unit_of_path("/etc/berth/router.toml").as_deref(), Some("router"));
    assert_eq!(text(&p, "/etc/containerd/config.toml"), "version = 2\n");
    let hosts = text(&p, "/etc/containerd/certs.d/docker.io/hosts.toml");
    assert!(hosts.contains("server = \"https://registry-1.docker.io\"\n\n[host.\"https://mirror.example.com\"]\n  capabilities = [\"pull\", \"resolve\"]\n"), "{hosts}");
    let etcd = text(&p, "/etc/berth/units/etcd.toml");
    assert!(
        etcd.contains(r#""--initial-cluster", "n1=http://192.0.2.10:2380", "--initial-cluster-state", "new""#),
        "{etcd}"
    );
    assert!(etcd.contains(r#""--heartbeat-interval", "50", "--election-timeout", "250""#), "a cluster of one: {etcd}");
    assert_eq!(p.units, vec!["containerd", "etcd", "network", "ntp", "router", "sshd", "updater", "user-runcmd"]);
    assert_eq!(p.changes.last(), Some(&Change::Bootcmd(Command::Shell("echo hi".into()))));
    for (path, content, ..) in p.changes.iter().filter_map(|c| match c {
        Change::Write { path, content, .. } if path.starts_with("/etc/berth/units/") => Some((path, content)),
        _ => None,
    }) {
        assert_valid_unit(path, std::str::from_utf8(content).unwrap());
    }
    // bootcmd only when asked (at boot).
    assert!(!plan_on_image(&config, Scope { per_instance: true, bootcmd: false })
        .unwrap()
        .changes
        .iter()
        .any(|c| matches!(c, Change::Bootcmd(_))));
}

#[test]
fn units_add_override_disable_enable_and_what_a_new_document_drops() {
    let unit = |name: &str, is_override: bool| UnitFile {
        name: name.into(),
        text: "[service]\nexec = [\"/usr/bin/true\"]\n".into(),
        is_override,
        at: at("units.add.x"),
    };
    let ssh_off = Ssh { enabled: Some(Item { value: false, at: at("ssh.enabled") }), ..Ssh::default() };
    let config = Config {
        units: Units {
            files: vec![unit("web", false), unit("containerd", true)],
            disable: vec![Item { value: "etcd".into(), at: at("units.disable[0]") }],
            enable: vec![],
        },
        ssh: ssh_off,
        ..Config::default()
    };
    let p = plan_on_image(&config, BOOT).unwrap();
    assert_eq!(text(&p, "/etc/berth/units/web.toml"), "[service]\nexec = [\"/usr/bin/true\"]\n");
    assert_eq!(text(&p, "/etc/berth/units/etcd.toml"), "");
    assert_eq!(text(&p, "/etc/berth/units/sshd.toml"), "");
    assert_eq!(
        p.managed,
        vec![
            "/etc/berth/units/containerd.toml",
            "/etc/berth/units/etcd.toml",
            "/etc/berth/units/sshd.toml",
            "/etc/berth/units/web.toml"
        ]
    );
    // The next document drops them: they are removed (masks lifted).
    let (dir, host) = machine();
    std::fs::create_dir_all(dir.path().join("etc/berth/units")).unwrap();
    std::fs::write(dir.path().join("etc/berth/units/etcd.toml"), "").unwrap();
    let next = Config {
        units: Units { enable: vec![Item { value: "etcd".into(), at: at("units.enable[0]") }], ..Units::default() },
        ..Config::default()
    };
    let previous = Previous { managed: p.managed.clone() };
    let q = plan(&next, &Facts::gather(&host, &next, None, "i").unwrap(), &previous, BOOT).unwrap();
    assert!(q.warnings.is_empty(), "{:?}", q.warnings);
    for m in &p.managed {
        assert!(q.changes.contains(&Change::Remove { path: m.clone() }), "{m}");
    }
    assert_eq!(q.units, vec!["containerd", "etcd", "sshd", "web"]);
    // A mask user data did not make is left, with a warning.
    let q = plan(&next, &Facts::gather(&host, &next, None, "i").unwrap(), &Previous::default(), BOOT).unwrap();
    assert!(q.changes.is_empty());
    assert!(q.warnings[0].message.contains("which user data did not make"), "{:?}", q.warnings);
    // add of an image unit, override of a missing one: errors.
    let bad = Config {
        units: Units { files: vec![unit("sshd", false), unit("nope", true)], ..Units::default() },
        ..Config::default()
    };
    let e = plan_on_image(&bad, BOOT).unwrap_err();
    assert!(e[0].message.contains("the image has a unit sshd") && e[1].message.contains("no unit nope"), "{e:?}");
}

/// `ntp`: sources or `allow` replace the image's unit, `enabled: false`
/// masks it, `ntp:` alone leaves the image's (default pool) in place.
#[test]
fn ntp_replaces_masks_or_keeps_the_images_unit() {
    let ntp = |n: Ntp| Config { ntp: Some(n), ..Config::default() };
    let p = plan_on_image(&ntp(Ntp { enabled: false, ..Ntp::new(at("ntp")) }), BOOT).unwrap();
    assert_eq!(text(&p, "/etc/berth/units/ntp.toml"), "", "disabled: masked");
    assert_eq!(p.units, vec!["ntp"]);
    let p = plan_on_image(&ntp(Ntp::new(at("ntp"))), BOOT).unwrap();
    assert!(written(&p, "/etc/berth/units/ntp.toml").is_none(), "`ntp:` alone: the image's unit");
    assert!(p.units.is_empty());
    let p = plan_on_image(&ntp(Ntp { allow: vec!["192.0.2.0/24".into()], ..Ntp::new(at("ntp")) }), BOOT).unwrap();
    let unit = text(&p, "/etc/berth/units/ntp.toml");
    assert!(unit.contains(r#""pool pool.ntp.org iburst", "allow 192.0.2.0/24"]"#), "{unit}");
    assert_valid_unit("ntp", &unit);
}

#[test]
fn update_settings_the_updater_would_refuse_are_errors() {
    let update = |auto: Option<bool>, reboot: Option<&str>| Config {
        update: Some(Update {
            source: None,
            auto,
            interval: None,
            reboot: reboot.map(String::from),
            window: None,
            reboot_strategy: None,
            reboot_lock_max: None,
            reboot_lock_ttl: None,
            at: at("update"),
        }),
        ..Config::default()
    };
    let e = plan_on_image(&update(Some(true), None), BOOT).unwrap_err();
    assert_eq!(
        e[0].to_string(),
        "user-data:3: key update: auto = true needs a source (the updater has nowhere to look)"
    );
    let e = plan_on_image(&update(None, Some("window")), BOOT).unwrap_err();
    assert!(e[0].message.starts_with("reboot = \"window\" needs a window"));
    assert!(plan_on_image(&update(Some(false), Some("never")), BOOT).is_ok());
}

/// The generated sshd (no flags changed), etcd (no settings) and ntp (no
/// sources) units are the image's, comments aside: they stay in step with
/// the image.
#[test]
fn generated_overrides_match_the_images_units() {
    let image = |name: &str| -> toml::Table {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../image-build/rootfs/usr/lib/berth/units/{name}.toml"));
        toml::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let sshd: toml::Table = toml::from_str(&gen_units::sshd(false, false)).unwrap();
    assert_eq!(sshd, image("sshd"));
    let etcd = Etcd {
        name: None,
        initial_cluster: None,
        initial_cluster_state: None,
        initial_cluster_token: None,
        listen_peer_urls: vec![],
        initial_advertise_peer_urls: vec![],
        listen_client_urls: vec![],
        advertise_client_urls: vec![],
        at: at("etcd"),
        places: Vec::new(),
    };
    let generated: toml::Table = toml::from_str(&gen_units::etcd(&etcd)).unwrap();
    assert_eq!(generated, image("etcd"));
    let ntp: toml::Table = toml::from_str(&gen_units::ntp(&Ntp::new(at("ntp")))).unwrap();
    assert_eq!(ntp, image("ntp"));
    for (name, text) in crate::generate::examples() {
        assert_valid_unit(&name, &text);
    }
}

#[test]
fn static_network_with_dhcp_on_another_interface_keeps_dhcpcd() {
    let text = gen_units::network(&net(true));
    assert!(
        text.contains("exec /usr/sbin/dhcpcd --nobackground eth1\n") && text.contains("ready = \"started\""),
        "{text}"
    );
    assert_valid_unit("network", &text);
    let mut with_mac = net(false);
    with_mac.interfaces[0].mac = Some("52:54:00:AA:BB:CC".into());
    let text = gen_units::network(&with_mac);
    assert!(text.contains("= 52:54:00:aa:bb:cc ]"), "{text}");
    // Run the script's shell part through sh -n: it parses.
    let v: toml::Table = toml::from_str(&text).unwrap();
    let script = v["service"]["exec"][2].as_str().unwrap();
    let ok = std::process::Command::new("sh").args(["-n", "-c", script]).status().unwrap();
    assert!(ok.success(), "{script}");
}

/// The planner never panics, whatever the config and the machine's files
/// say (a fuzz run without a dependency: a fixed-seed generator over
/// tricky values; H1's proptest covers the readers).
#[test]
fn the_planner_does_not_panic_on_odd_configs_and_machines() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    const S: &[&str] = &[
        "",
        "root",
        "a:b",
        "x\ny",
        "..",
        "/",
        "/etc/passwd",
        "1000",
        "4294967295",
        "default",
        "é",
        "-",
        "a,b",
        "/var/home/x",
        "0.0.0.0/0",
        "::/0",
        "eth0",
        "Europe/Berlin",
        "sshd",
        "etcd",
        "#",
        "'\"$(x)`",
    ];
    const TEXTS: &[&str] = &[
        "",
        "root:x:0:0::/var/root:/usr/bin/sh\n",
        "a\n::::\n#c\nb:x:notanumber:y\n",
        "x:x:59999:59999::/h:/s\n",
        ":\n\n",
    ];
    for _ in 0..3000 {
        let mut pick = |xs: &[&'static str]| -> String { xs[(next() % xs.len() as u64) as usize].to_string() };
        let place = at("k");
        let mut u = user(&pick(S));
        u.groups = vec![pick(S), pick(S)];
        u.primary_group = Some(pick(S)).filter(|s| !s.is_empty());
        u.homedir = Some(pick(S)).filter(|s| s.starts_with('/'));
        u.uid = pick(S).parse().ok();
        u.system = pick(S).len() % 2 == 0;
        u.is_default = pick(S).is_empty();
        u.ssh_authorized_keys = vec![key(&pick(S))];
        u.passwd = Some(pick(S));
        let mut w = file(&format!("/{}", pick(S)), &pick(S), ("root", "root"));
        w.owner = (pick(S), pick(S));
        w.append = pick(S).len() % 2 == 1;
        w.defer = pick(S).len() % 3 == 1;
        let config = Config {
            hostname: Some(Item { value: pick(S), at: place.clone() }),
            fqdn: Some(Item { value: pick(S), at: place.clone() }),
            timezone: Some(Item { value: pick(S), at: place.clone() }),
            users: vec![u.clone(), u],
            write_files: vec![w],
            network: Some(Network {
                version: 1,
                interfaces: vec![Interface {
                    name: pick(S),
                    mac: Some(pick(S)),
                    dhcp4: pick(S).is_empty(),
                    addresses: vec![pick(S)],
                    routes: vec![Route { to: pick(S), via: pick(S), metric: pick(S).parse().ok() }],
                    mtu: pick(S).parse().ok(),
                    at: place.clone(),
                }],
                nameservers: vec![pick(S)],
                search: vec![pick(S)],
                at: place.clone(),
            }),
            units: Units {
                files: vec![UnitFile {
                    name: pick(S),
                    text: pick(S),
                    is_override: pick(S).is_empty(),
                    at: place.clone(),
                }],
                disable: vec![Item { value: pick(S), at: place.clone() }],
                enable: vec![Item { value: pick(S), at: place.clone() }],
            },
            ..Config::default()
        };
        let facts = Facts {
            passwd: pick(TEXTS),
            group: pick(TEXTS),
            shadow: pick(TEXTS),
            instance_id: pick(S),
            local_hostname: Some(pick(S)),
            files: [("/etc/hosts".to_string(), pick(S).into_bytes())].into(),
            ..Facts::default()
        };
        let previous = Previous { managed: vec![pick(S)] };
        let _ = plan(&config, &facts, &previous, ALL);
    }
}

#[test]
fn a_home_on_the_read_only_root_is_not_made_and_keys_there_are_an_error() {
    // `nobody` is the image's, with its home /nonexistent on the read-only
    // root: naming it made the planner mkdir /nonexistent, which failed on
    // the machine after `check-config` had passed.
    let p = plan_on_image(&Config { users: vec![user("nobody")], ..Config::default() }, ALL).unwrap();
    assert!(!p.changes.iter().any(|c| matches!(c, Change::Mkdir { path, .. } if path.starts_with("/nonexistent"))));
    // Keys for it (or for a new system user without `homedir`) have nowhere
    // to go: an error at the user's place, not a failed apply.
    let mut nobody = user("nobody");
    nobody.ssh_authorized_keys = vec![key("ssh-ed25519 AAAA n")];
    let e = plan_on_image(&Config { users: vec![nobody], ..Config::default() }, ALL).unwrap_err();
    assert_eq!(
        e[0].to_string(),
        "user-data:3: key users[0]: user nobody's home /nonexistent is not writable on Berth: its ssh_authorized_keys cannot be written (give `homedir`)"
    );
    let mut svc = user("svc");
    svc.system = true;
    svc.ssh_authorized_keys = vec![key("ssh-ed25519 AAAA s")];
    assert!(plan_on_image(&Config { users: vec![svc], ..Config::default() }, ALL).is_err());
}

#[test]
fn a_uid_asked_of_an_existing_user_that_differs_is_an_error() {
    // etcd is the image's, uid 101: `uid: 5000` was dropped without a word
    // and the user believed files owned by 5000 were etcd's.
    let mut etcd = user("etcd");
    etcd.uid = Some(5000);
    let e = plan_on_image(&Config { users: vec![etcd], ..Config::default() }, ALL).unwrap_err();
    assert_eq!(
        e[0].to_string(),
        "user-data:3: key users[0]: user etcd exists with uid 101: uid 5000 cannot be given to it (an existing user's uid is not changed)"
    );
    let mut same = user("etcd");
    same.uid = Some(101);
    assert!(plan_on_image(&Config { users: vec![same], ..Config::default() }, ALL).is_ok());
}

#[test]
fn an_append_follows_an_earlier_write_of_the_same_path() {
    // Two entries for one file, the second `append: true` (as cloud-init
    // users write a base and then add to it): the append read the
    // machine's file, not the first entry's, so the first was lost at the
    // first boot and came back only at a second apply.
    let mut more = file("/etc/app.conf", "b=2\n", ("root", "root"));
    more.append = true;
    let config =
        Config { write_files: vec![file("/etc/app.conf", "a=1\n", ("root", "root")), more], ..Config::default() };
    let p = plan_on_image(&config, ALL).unwrap();
    assert_eq!(text(&p, "/etc/app.conf"), "a=1\nb=2\n");
}
