//! The interpreter through `check`: both formats mean the same, every
//! key's type and rules, all errors collected, each with source, line and key.

use berth_provision::interpret::{meta_data, network_config};
use berth_provision::model::{Command, Config};
use berth_provision::{check, Diagnostic, Document, Format};

/// The config's Debug text without its places (lines and key paths differ
/// between formats, the meaning must not).
fn meaning(c: &Config) -> String {
    let s = format!("{c:?}");
    let mut out = String::new();
    let mut rest = s.as_str();
    while let Some(i) = rest.find("Place {") {
        out.push_str(rest.get(..i).unwrap());
        let after = rest.get(i..).unwrap();
        let end = after.find('}').unwrap();
        rest = after.get(end + 1..).unwrap();
    }
    out.push_str(rest);
    out
}

fn ok(src: &str) -> Document {
    match check("u", src.as_bytes()) {
        Ok(d) => d,
        Err(r) => panic!("rejected: {:#?}", r.errors),
    }
}

fn errors(src: &str) -> Vec<String> {
    match check("u", src.as_bytes()) {
        Ok(d) => panic!("accepted: {:#?}", d.config),
        Err(r) => r.errors.iter().map(Diagnostic::to_string).collect(),
    }
}

fn warnings(d: &Document) -> Vec<String> {
    d.warnings.iter().map(Diagnostic::to_string).collect()
}

#[test]
fn the_two_examples_pass_and_mean_the_same() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/");
    let y = check("user-data.yaml", &std::fs::read(format!("{dir}user-data.yaml")).unwrap()).unwrap();
    let t = check("user-data.toml", &std::fs::read(format!("{dir}user-data.toml")).unwrap()).unwrap();
    assert_eq!(y.format, Format::CloudConfig);
    assert_eq!(t.format, Format::Native);
    assert!(y.warnings.is_empty(), "{:?}", y.warnings);
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    assert_eq!(meaning(&y.config), meaning(&t.config));
    // Every field is set by the examples (they are complete).
    let c = &y.config;
    assert!(c.hostname.is_some() && c.fqdn.is_some() && c.timezone.is_some() && c.ntp.is_some() && c.network.is_some());
    assert!(c.containerd.is_some() && c.etcd.is_some() && c.update.is_some() && c.router.is_some());
    let (u, r) = (c.update.as_ref().unwrap(), c.router.as_ref().unwrap());
    assert!(u.reboot_strategy.is_some() && u.reboot_lock_max.is_some() && u.reboot_lock_ttl.is_some());
    assert!(r.network.is_some() && r.subnet_len.is_some() && r.vni.is_some() && r.port.is_some());
    assert!(r.interface.is_some() && r.public_ip.is_some() && r.lease_ttl.is_some() && r.etcd_prefix.is_some());
    assert!(!r.etcd_endpoints.is_empty());
    let ntp = c.ntp.as_ref().unwrap();
    assert!(!ntp.servers.is_empty() && !ntp.pools.is_empty() && !ntp.peers.is_empty() && !ntp.allow.is_empty());
    assert!(c.ssh.enabled.is_some() && c.ssh.password_auth.is_some() && c.ssh.disable_root.is_some());
    assert_eq!(c.users.len(), 2);
    assert!(c.users.first().unwrap().is_default);
    assert_eq!(c.write_files.len(), 3);
    assert_eq!(c.write_files.get(1).unwrap().content, b"hello world\n");
    assert_eq!(c.write_files.get(2).unwrap().mode, 0o600);
    assert_eq!(c.units.files.len(), 2);
    assert_eq!(c.bootcmd.len(), 2);
    assert_eq!(c.runcmd.len(), 2);
}

#[test]
fn equivalent_documents_give_equal_configs() {
    let y = ok("#cloud-config\nhostname: a\nusers:\n  - name: bob\n    groups: x, y\n    lock_passwd: no\nwrite_files:\n  - path: /etc/f\n    permissions: 0755\nberth:\n  ssh:\n    enabled: off\n");
    let t = ok("#berth-config\nhostname = \"a\"\n[[users]]\nname = \"bob\"\ngroups = [\"x\", \"y\"]\nlock_passwd = false\n[[write_files]]\npath = \"/etc/f\"\npermissions = \"0755\"\n[ssh]\nenabled = false\n");
    assert_eq!(meaning(&y.config), meaning(&t.config));
    assert_eq!(y.config.write_files.first().unwrap().mode, 0o755);
}

#[test]
fn format_detection_and_what_is_refused() {
    assert_eq!(check("u", b"").unwrap().config, Config::default());
    assert_eq!(check("u", b"  \n\n").unwrap().config, Config::default());
    assert_eq!(check("u", b"#cloud-config\n").unwrap().config, Config::default());
    assert_eq!(check("u", b"#berth-config\n").unwrap().format, Format::Native);
    for (doc, why) in [
        ("#!/bin/sh\necho hi\n", "shell script"),
        ("Content-Type: multipart/mixed; boundary=x\n", "MIME multipart"),
        ("#include\nhttp://x/y\n", "#include"),
        ("#cloud-config-archive\n- a\n", "archive"),
        ("#cloud-boothook\necho\n", "not supported"),
        ("hostname: a\n", "first line must be"),
    ] {
        let e = errors(doc);
        assert!(e.first().unwrap().contains(why), "{doc}: {e:?}");
    }
    // gzip'd, and the sha256 of the bytes as given.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, b"#cloud-config\nhostname: zipped\n").unwrap();
    let bytes = gz.finish().unwrap();
    let d = check("u", &bytes).unwrap();
    assert_eq!(d.config.hostname.unwrap().value, "zipped");
    assert_eq!(d.sha256.len(), 64);
    assert_eq!(check("u", b"").unwrap().sha256, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

#[test]
fn every_error_is_collected_with_source_line_and_key() {
    let e = errors("#cloud-config\nhostname: -bad\ntimezone: ../x\nusers:\n  - name: bob\n    passwd: hunter2\nwrite_files:\n  - path: /usr/bin/x\nberth:\n  etcd:\n    nmae: x\n");
    assert_eq!(e.len(), 5, "{e:#?}");
    assert!(e.first().unwrap().starts_with("u:2: key hostname: "));
    assert!(e.get(1).unwrap().starts_with("u:3: key timezone: "));
    assert!(e.get(2).unwrap().starts_with("u:6: key users[0].passwd: "));
    assert!(e.get(3).unwrap().starts_with("u:8: key write_files[0].path: "));
    assert!(e.get(4).unwrap().starts_with("u:11: key berth.etcd.nmae: unknown key"));
}

#[test]
fn unknown_keys_warn_in_cloud_config_and_fail_in_toml() {
    let d = ok("#cloud-config\npackages: [vim]\napt: {}\nfrobnicate: 1\netcd: {}\n");
    let w = warnings(&d);
    assert_eq!(w.len(), 4, "{w:?}");
    assert!(w
        .first()
        .unwrap()
        .contains("u:2: key packages: not implemented on Berth (cloud-init's cc_package_update_upgrade_install)"));
    assert!(w.get(2).unwrap().contains("u:4: key frobnicate: unknown key"));
    assert!(w.get(3).unwrap().contains("under `berth:`"));
    let e = errors("#berth-config\nfrobnicate = 1\n");
    assert_eq!(e, ["u:2: key frobnicate: unknown key"]);
    // A cloud-init module Berth lacks: a warning in both formats.
    assert_eq!(ok("#berth-config\npackages = [\"vim\"]\n").warnings.len(), 1);
    // Misspelled Berth keys: errors in both.
    assert!(errors("#berth-config\n[update]\nauto = true\nreboto = \"never\"\n")
        .first()
        .unwrap()
        .contains("key update.reboto: unknown key"));
    assert!(errors("#cloud-config\nberth:\n  unitz: {}\n").first().unwrap().contains("key berth.unitz"));
}

#[test]
fn yaml11_scalars() {
    let d = ok("#cloud-config\nssh_pwauth: yes\ndisable_root: off\nwrite_files:\n  - path: /etc/a\n    permissions: 0644\n  - path: /etc/b\n    permissions: '0600'\n  - path: /etc/c\n    permissions: 0o755\n  - path: /etc/d\n    permissions: 644\n");
    assert!(d.config.ssh.password_auth.as_ref().unwrap().value);
    assert!(!d.config.ssh.disable_root.as_ref().unwrap().value);
    let modes: Vec<u32> = d.config.write_files.iter().map(|f| f.mode).collect();
    assert_eq!(modes, [0o644, 0o600, 0o755, 644]);
    assert!(warnings(&d).first().unwrap().contains("decimal"));
    // A quoted boolean is a string.
    assert!(errors("#cloud-config\ndisable_root: 'yes'\n")
        .first()
        .unwrap()
        .contains("expected a boolean, found a string"));
}

#[test]
fn users() {
    let d = ok("#cloud-config\nusers:\n  - default\n  - name: ann\n    groups: [a, b]\n    primary-group: ann\n    uid: 2000\n    sudo: ALL\n    ssh_authorized_keys: [ssh-ed25519 AAAA ann@x]\nssh_authorized_keys: ['ssh-rsa AAAAB root@x']\n");
    let u = &d.config.users;
    assert_eq!(u.len(), 2);
    let root = u.first().unwrap();
    assert!(root.is_default && root.name == "root" && root.lock_passwd);
    let ann = u.get(1).unwrap();
    assert_eq!(ann.groups, ["a", "b"]);
    assert_eq!(ann.primary_group.as_deref(), Some("ann"));
    assert_eq!(ann.uid, Some(2000));
    assert_eq!(ann.ssh_authorized_keys.first().unwrap().value, "ssh-ed25519 AAAA ann@x");
    assert!(ok("#cloud-config\nusers:\n  - {gecos: Root}\n").config.users.first().unwrap().is_default);
    assert!(errors("#cloud-config\nusers: [default, {gecos: R}]\n").first().unwrap().contains("given twice"));
    assert_eq!(d.config.ssh_authorized_keys.len(), 1);
    let w = warnings(&d);
    assert!(
        w.iter().any(|w| w.contains("users[1].primary-group: deprecated in cloud-init: use `primary_group`")),
        "{w:?}"
    );
    assert!(w.iter().any(|w| w.contains("users[1].sudo: not implemented")), "{w:?}");
    let e = errors("#cloud-config\nusers:\n  - name: x\n    plain_text_passwd: secret\n  - name: '1bad'\n  - name: y\n    homedir: /home/y\n");
    assert_eq!(e.len(), 3, "{e:?}");
    // users as a comma-separated string.
    let d = ok("#cloud-config\nusers: default, bob\n");
    assert_eq!(d.config.users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(), ["root", "bob"]);
}

#[test]
fn write_files_encodings() {
    let d = ok("#cloud-config\nwrite_files:\n  - path: /etc/a\n    encoding: gz+b64\n    content: H4sIAAAAAAAAA8tIzcnJBwCGphA2BQAAAA==\n  - path: /etc/b\n    content: !!binary aGk=\n  - path: /run//x/./y\n    owner: bob\n");
    let f = &d.config.write_files;
    assert_eq!(f.first().unwrap().content, b"hello");
    assert_eq!(f.get(1).unwrap().content, b"hi");
    assert_eq!(f.get(2).unwrap().path, "/run/x/y");
    assert_eq!(f.get(2).unwrap().owner, ("bob".to_string(), "root".to_string()));
    let e = errors("#cloud-config\nwrite_files:\n  - path: /etc/../x\n  - content: x\n  - path: /etc/z\n    encoding: rot13\n    content: x\n  - path: /etc/w\n    permissions: '9999'\n");
    assert_eq!(e.len(), 4, "{e:?}");
}

#[test]
fn commands() {
    let d = ok("#cloud-config\nbootcmd:\n  - echo hi\n  - [ls, -l, 5]\nruncmd:\n  -\n  - date\n");
    assert_eq!(d.config.bootcmd.first().unwrap().value, Command::Shell("echo hi".into()));
    assert_eq!(d.config.bootcmd.get(1).unwrap().value, Command::Argv(vec!["ls".into(), "-l".into(), "5".into()]));
    assert_eq!(d.config.runcmd.len(), 1);
    assert!(errors("#cloud-config\nbootcmd: echo\n").first().unwrap().contains("expected a list"));
}

#[test]
fn berth_keys() {
    let e = errors("#berth-config\n[units.add]\nx = \"[service]\\nexec = [\\\"rel\\\"]\\n\"\nY = \"\"\n[etcd]\ninitial_cluster = \"a=ftp://x\"\ninitial_cluster_state = \"old\"\n[update]\nreboot = \"window\"\ninterval = \"soon\"\n[containerd]\nconfig = \"not = [toml\"\n");
    assert_eq!(e.len(), 7, "{e:#?}");
    let d = ok("#berth-config\n[units]\ndisable = [\"sshd\"]\n[update]\nreboot = \"never\"\nauto = false\n");
    assert_eq!(d.config.units.disable.first().unwrap().value, "sshd");
    assert_eq!(d.config.update.unwrap().auto, Some(false));
}

#[test]
fn preserve_hostname_ignores_hostname() {
    let d = ok("#cloud-config\npreserve_hostname: true\nhostname: a\n");
    assert!(d.config.hostname.is_none());
    assert_eq!(d.warnings.len(), 1);
}

#[test]
fn network_v1_and_v2() {
    let d = ok("#cloud-config\nnetwork:\n  version: 2\n  ethernets:\n    eth0:\n      addresses: [10.0.0.2/24]\n      gateway4: 10.0.0.1\n      nameservers: {addresses: [1.1.1.1]}\n");
    let n = d.config.network.unwrap();
    let i = n.interfaces.first().unwrap();
    assert_eq!(i.routes.first().unwrap().to, "0.0.0.0/0");
    assert_eq!(n.nameservers, ["1.1.1.1"]);
    let n = network_config(
        "nc",
        b"version: 1\nconfig:\n  - type: physical\n    name: eth0\n    mac_address: 'AA:BB:CC:DD:EE:FF'\n    subnets:\n      - type: static\n        address: 192.168.1.5\n        netmask: 255.255.255.0\n        gateway: 192.168.1.1\n        dns_nameservers: [192.168.1.1]\n",
    )
    .unwrap();
    let i = n.interfaces.first().unwrap();
    assert_eq!(i.addresses, ["192.168.1.5/24"]);
    assert_eq!(i.mac.as_deref(), Some("aa:bb:cc:dd:ee:ff"));
    assert_eq!(n.version, 1);
    let e = network_config(
        "nc",
        b"network:\n  version: 2\n  bonds: {}\n  ethernets:\n    e:\n      addresses: [300.1.1.1/24]\n",
    )
    .unwrap_err();
    assert_eq!(e.len(), 2, "{e:?}");
}

#[test]
fn meta_data_reads_instance_id_and_hostname() {
    let m = meta_data("md", b"instance-id: iid-1\nlocal-hostname: box\nother: 1\n").unwrap();
    assert_eq!(m.instance_id.as_deref(), Some("iid-1"));
    assert_eq!(m.local_hostname.as_deref(), Some("box"));
    assert_eq!(meta_data("md", b"").unwrap(), Default::default());
    assert_eq!(meta_data("md", b"{\"instance-id\": \"j\"}").unwrap().instance_id.as_deref(), Some("j"));
    assert!(meta_data("md", b"- a\n").is_err());
}

#[test]
fn hostname_and_fqdn_as_cloud_init_reads_them() {
    let c = ok("#cloud-config\nfqdn: web.example.com\n").config;
    assert_eq!(c.hostname.unwrap().value, "web");
    let c = ok("#cloud-config\nhostname: db.example.com\n").config;
    assert_eq!(c.hostname.unwrap().value, "db");
    assert_eq!(c.fqdn.unwrap().value, "db.example.com");
    let c = ok("#cloud-config\nhostname: a\nfqdn: b.example.com\n").config;
    assert_eq!(c.hostname.unwrap().value, "a");
}

#[test]
fn network_config_disabled_and_odd_roots() {
    assert!(ok("#cloud-config\nnetwork: {config: disabled}\n").config.network.is_none());
    assert_eq!(errors("#cloud-config\n- a\n"), ["u:2: expected a mapping, found a list"]);
    assert_eq!(errors("#berth-config\nhostname = 5\n"), ["u:2: key hostname: expected a string, found an integer"]);
}

#[test]
fn toml_array_of_tables_users() {
    let d = ok("#berth-config\n[[users]]\nname = \"default\"\nssh_authorized_keys = [\"ssh-ed25519 AAAA r@x\"]\n[[users]]\nname = \"alice\"\n");
    let u = &d.config.users;
    assert!(u.first().unwrap().is_default);
    assert_eq!(u.first().unwrap().name, "root");
    assert_eq!(u.get(1).unwrap().name, "alice");
}

/// The README's two examples (section "Provisioning"): each passes
/// without a warning and they mean the same, so the README cannot drift
/// from what the machine accepts.
#[test]
fn the_readme_examples_pass_and_mean_the_same() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let block = |fence: &str, first: &str| -> String {
        let start = readme.find(&format!("```{fence}\n{first}")).unwrap_or_else(|| panic!("no {first} example"));
        let body = &readme[start + fence.len() + 4..];
        body[..body.find("```").unwrap()].to_string()
    };
    let y = check("README.md yaml", block("yaml", "#cloud-config").as_bytes()).unwrap();
    let t = check("README.md toml", block("toml", "#berth-config").as_bytes()).unwrap();
    assert!(y.warnings.is_empty() && t.warnings.is_empty(), "{:?} {:?}", y.warnings, t.warnings);
    assert_eq!(meaning(&y.config), meaning(&t.config));
    let gz = y.config.write_files.iter().find(|f| f.path == "/var/lib/app/hello.txt").unwrap();
    assert_eq!(gz.content, b"hello\n");
}

#[test]
fn a_system_user_without_homedir_has_nowhere_for_keys() {
    // A system user gets no home (/nonexistent, on the read-only root)
    // unless `homedir` gives one: its keys would fail on the machine.
    let e = errors(
        "#cloud-config\nusers:\n  - name: svc\n    system: true\n    ssh_authorized_keys: [ssh-ed25519 AAAA s]\n",
    );
    assert_eq!(
        e,
        ["u:3: key users[0]: a system user has no home unless `homedir` gives one: its ssh_authorized_keys have nowhere to go"]
    );
    ok("#cloud-config\nusers:\n  - name: svc\n    system: true\n    homedir: /var/lib/svc\n    ssh_authorized_keys: [ssh-ed25519 AAAA s]\n");
}

#[test]
fn toml_permissions_in_decimal_warn_as_yaml_does() {
    // `permissions = 644` in TOML is the decimal 644 (0o1204): a sticky,
    // world-readable, owner-write-only file. It went through in silence,
    // where the same in YAML warns.
    let d = ok("#berth-config\n[[write_files]]\npath = \"/etc/a\"\npermissions = 644\n");
    assert_eq!(d.config.write_files.first().unwrap().mode, 644);
    assert_eq!(
        warnings(&d),
        ["u:4: key write_files[0].permissions: `644` is the decimal 644 (0o1204); write 0o644 (or \"0644\") if octal was meant"]
    );
    // Octal as TOML writes it: no warning; elsewhere an octal integer reads too.
    let d = ok("#berth-config\n[[write_files]]\npath = \"/etc/a\"\npermissions = 0o644\n[[users]]\nname = \"bob\"\nuid = 0o1750\n");
    assert_eq!(d.config.write_files.first().unwrap().mode, 0o644);
    assert_eq!(d.config.users.first().unwrap().uid, Some(1000));
    assert!(d.warnings.is_empty(), "{:?}", warnings(&d));
}

#[test]
fn search_domains_are_dns_names() {
    // Each becomes a word of resolv.conf's `search` line: a space split it
    // into two domains, a line break wrote a line of its own, in silence.
    let e = errors("#cloud-config\nnetwork:\n  version: 2\n  ethernets:\n    eth0:\n      addresses: [10.0.0.2/24]\n      nameservers:\n        search: [example.com, \"bad domain\", \"x\\nnameserver 1.1.1.1\"]\n");
    assert_eq!(
        e,
        [
            "u:8: key network.ethernets.eth0.nameservers.search[1]: `bad domain` is not a search domain (a DNS name)",
            "u:8: key network.ethernets.eth0.nameservers.search[2]: `x\nnameserver 1.1.1.1` is not a search domain (a DNS name)",
        ]
    );
    let nc = "version: 1\nconfig:\n  - type: nameserver\n    address: [10.0.0.1]\n    search: [\"a b\"]\n";
    assert!(network_config("n", nc.as_bytes()).is_err());
}

#[test]
fn bytes_that_are_not_utf8_are_named_by_line() {
    // The error had no line: a user had to count bytes to find it.
    let r = check("u", b"#cloud-config\nhostname: a\nx: \xff\n").unwrap_err();
    assert_eq!(r.errors.first().unwrap().to_string(), "u:3: user data is not UTF-8 text (byte 29)");
}

#[test]
fn passwd_fields_cannot_hold_a_colon_or_a_line_break() {
    // /etc/passwd's fields are split at `:` and its entries at line breaks:
    // a gecos `Bob: ops` moved bob's home and shell one field along, and a
    // line break in it wrote an account of its own (`root2::0:0::/:/bin/sh`).
    let e = errors("#cloud-config\nusers:\n- name: bob\n  gecos: \"Bob: ops\\nroot2::0:0::/:/bin/sh\"\n  shell: \"/bin/sh:x\"\n  homedir: \"/var/b:c\"\n");
    assert_eq!(
        e,
        [
            "u:4: key users[0].gecos: `:` and control characters (line breaks) cannot be in /etc/passwd's fields",
            "u:5: key users[0].shell: `:` and control characters (line breaks) cannot be in /etc/passwd's fields",
            "u:6: key users[0].homedir: `:` and control characters (line breaks) cannot be in /etc/passwd's fields",
        ]
    );
    ok("#cloud-config\nusers:\n- name: bob\n  gecos: Bob Smith, ops (x-1234)\n");
}

#[test]
fn a_registry_host_is_a_directory_name_of_its_own() {
    // The host names a directory under /etc/containerd/certs.d: `..` and
    // `.` were accepted and wrote certs.d/hosts.toml, a mirror of nothing.
    let e = errors("#cloud-config\nberth:\n  containerd:\n    registry_mirrors:\n      \"..\": [https://m.example.com]\n      .: [https://m.example.com]\n");
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e.first().unwrap().starts_with("u:5: key berth.containerd.registry_mirrors...: `..` is not a registry host"),
        "{e:?}"
    );
    ok("#cloud-config\nberth:\n  containerd:\n    registry_mirrors:\n      registry.example.com:5000: [https://m.example.com]\n      docker.io: [https://m.example.com]\n");
}

#[test]
fn write_files_contents_have_one_budget_for_the_whole_document() {
    // Each gzip'd content may inflate to 64 MiB; a 16 MiB document holds
    // hundreds of them, and PID1 held them all in memory at boot (an OOM
    // with PID1 as its victim). The contents together have the budget.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &vec![0u8; 40 << 20]).unwrap();
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, gz.finish().unwrap());
    let mut doc = String::from("#cloud-config\nwrite_files:\n");
    for i in 0..3 {
        doc.push_str(&format!("- path: /var/big{i}\n  encoding: gz+b64\n  content: {b64}\n"));
    }
    let e = errors(&doc);
    assert_eq!(
        e,
        [
            "u:6: key write_files[1]: the contents of write_files are more than 64 MiB together",
            "u:9: key write_files[2]: the contents of write_files are more than 64 MiB together",
        ]
    );
}

#[test]
fn ssh_pwauth_unchanged_unquoted_is_cloud_inits_string() {
    // Plain `unchanged` is a string to PyYAML, which cloud-init takes (with
    // a deprecation); Berth rejected the whole document over it.
    let d = ok("#cloud-config\nssh_pwauth: unchanged\n");
    assert_eq!(d.config.ssh.password_auth, None);
    assert_eq!(warnings(&d).len(), 1);
}

#[test]
fn a_bad_owner_named_twice_is_one_error() {
    let e = errors("#cloud-config\nwrite_files:\n- path: /etc/a\n  owner: 1000:1000\n");
    assert_eq!(e.len(), 1, "{e:?}");
}

/// A unit given in user data is checked by PID1's own unit reader: a typo
/// that PID1 would refuse at load (and so lose the image's sshd it
/// overrides) rejects the document before anything is written.
#[test]
fn a_unit_pid1_would_refuse_rejects_the_document() {
    let doc = "#cloud-config\nberth:\n  units:\n    override:\n      sshd: |\n        [service]\n        exec = [\"/usr/sbin/dropbear\", \"-F\"]\n        stop_timout = \"10s\"\n        kind = \"oneshot\"\n        start_timeout = \"ten seconds\"\n";
    let e = errors(doc);
    assert!(e.iter().any(|e| e.contains("key berth.units.override.sshd") && e.contains("stop_timout")), "{e:?}");
    assert!(e.iter().any(|e| e.contains("start_timeout")), "every problem of the unit is named: {e:?}");
}

#[test]
fn router_and_reboot_lock_keys_mean_the_same_in_both_formats() {
    let y = ok("#cloud-config\nberth:\n  update:\n    reboot_strategy: etcd-lock\n    reboot_lock_max: 2\n    reboot_lock_ttl: 15m\n  router:\n    network: 10.244.0.0/16\n    subnet_len: 24\n    public_ip: 192.0.2.11\n");
    let t = ok("#berth-config\n[update]\nreboot_strategy = \"etcd-lock\"\nreboot_lock_max = 2\nreboot_lock_ttl = \"15m\"\n[router]\nnetwork = \"10.244.0.0/16\"\nsubnet_len = 24\npublic_ip = \"192.0.2.11\"\n");
    assert_eq!(meaning(&y.config), meaning(&t.config));
    let u = y.config.update.as_ref().unwrap();
    assert_eq!(
        (u.reboot_strategy.as_deref(), u.reboot_lock_max, u.reboot_lock_ttl.as_deref()),
        (Some("etcd-lock"), Some(2), Some("15m"))
    );
}

#[test]
fn bad_router_and_reboot_lock_values_name_line_and_key() {
    let e = errors("#cloud-config\nberth:\n  update:\n    reboot_strategy: locksmith\n    reboot_lock_max: 0\n    reboot_lock_ttl: 500ms\n");
    assert_eq!(
        e,
        [
            "u:4: key berth.update.reboot_strategy: expected `off` or `etcd-lock`, found `locksmith`",
            "u:5: key berth.update.reboot_lock_max: at least one host must be allowed to reboot at a time",
            "u:6: key berth.update.reboot_lock_ttl: `500ms`: the lease TTL is whole seconds, at least 2s",
        ]
    );
    let e = errors("#berth-config\n[router]\nnetwork = \"10.244.1.0/16\"\nvni = 0\nport = 70000\npublic_ip = \"eth0\"\nlease_ttl = \"1s\"\nmtu = 1400\n");
    assert_eq!(
        e,
        [
            "u:3: key router.network: `10.244.1.0/16` has host bits set (the network is 10.244.0.0/16)",
            "u:4: key router.vni: 0: a VXLAN VNI is 1 to 16777215",
            "u:5: key router.port: 70000: a UDP port is 1 to 65535",
            "u:6: key router.public_ip: `eth0` is not an IPv4 address",
            "u:7: key router.lease_ttl: `1s`: the lease TTL is whole seconds, at least 5s",
            "u:8: key router.mtu: unknown key (known here: etcd_endpoints, etcd_prefix, network, subnet_len, vni, port, interface, public_ip, lease_ttl)",
        ]
    );
    let e = errors("#berth-config\n[router]\nnetwork = \"10.244.0.0/16\"\nsubnet_len = 16\n");
    assert_eq!(
        e,
        ["u:4: key router.subnet_len: a host's subnet /16 does not fit in the cluster network /16 (it must be longer)"]
    );
}

/// Three hosts' etcd, as the cluster's user data gives it; `name` and
/// `ip` are this host's.
fn etcd_member(name: &str, ip: &str, peer_ip: &str) -> String {
    format!(
        "#cloud-config\nberth:\n  etcd:\n    name: {name}\n    initial_cluster: b1=http://192.0.2.11:2380,b2=http://192.0.2.12:2380,b3=http://192.0.2.13:2380\n    initial_cluster_state: new\n    listen_peer_urls: [http://{ip}:2380]\n    initial_advertise_peer_urls: [http://{peer_ip}:2380]\n    listen_client_urls: [http://{ip}:2379, http://127.0.0.1:2379]\n    advertise_client_urls: [http://{ip}:2379]\nnetwork:\n  version: 2\n  ethernets:\n    eth0:\n      addresses: [{ip}/24]\n"
    )
}

#[test]
fn an_etcd_cluster_member_must_be_in_the_cluster_as_it_advertises_itself_on_its_own_addresses() {
    ok(&etcd_member("b2", "192.0.2.12", "192.0.2.12"));
    let e = errors(&etcd_member("b4", "192.0.2.12", "192.0.2.12"));
    assert_eq!(e, ["u:5: key berth.etcd.initial_cluster: this member `b4` (etcd.name) is not in initial_cluster (its members: b1, b2, b3)"]);
    let e = errors(&etcd_member("b2", "192.0.2.12", "192.0.2.13"));
    assert_eq!(
        e,
        ["u:8: key berth.etcd.initial_advertise_peer_urls: this member `b2` advertises peer URLs http://192.0.2.13:2380 but its entry in initial_cluster says http://192.0.2.12:2380"]
    );
    // Listening on an address the network config does not give this host.
    let doc = etcd_member("b2", "192.0.2.12", "192.0.2.12")
        .replace("addresses: [192.0.2.12/24]", "addresses: [192.0.2.22/24]");
    let e = errors(&doc);
    assert_eq!(
        e,
        [
            "u:7: key berth.etcd.listen_peer_urls: `http://192.0.2.12:2380`: 192.0.2.12 is not an address of this host (the network config gives it 192.0.2.22)",
            "u:9: key berth.etcd.listen_client_urls: `http://192.0.2.12:2379`: 192.0.2.12 is not an address of this host (the network config gives it 192.0.2.22)",
        ]
    );
    // A member of three advertising the loopback: the others cannot reach it.
    let doc = "#berth-config\n[etcd]\nname = \"b1\"\ninitial_cluster = \"b1=http://127.0.0.1:2380,b2=http://192.0.2.12:2380\"\n";
    let e = errors(doc);
    assert_eq!(e, ["u:4: key etcd.initial_cluster: `http://127.0.0.1:2380`: a member of a cluster of 2 cannot advertise a loopback peer URL (the others could not reach it)"]);
}

#[test]
fn the_three_host_cluster_examples_pass_and_make_one_cluster() {
    use berth_provision::generate::{config as gen_config, units as gen_units};
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/cluster/");
    let mut clusters = Vec::new();
    for i in 1..=3 {
        let name = format!("host{i}.yaml");
        let d = check(&name, &std::fs::read(format!("{dir}{name}")).unwrap())
            .unwrap_or_else(|r| panic!("{name}: {:#?}", r.errors));
        assert!(d.warnings.is_empty(), "{name}: {:?}", d.warnings);
        let c = &d.config;
        let (etcd, router, update) = (c.etcd.as_ref().unwrap(), c.router.as_ref().unwrap(), c.update.as_ref().unwrap());
        assert_eq!(etcd.name.as_deref(), Some(format!("b{i}").as_str()));
        clusters.push(etcd.initial_cluster.clone());
        let client = gen_units::etcd_client_url(etcd);
        assert_eq!(client, "http://127.0.0.1:2379");
        let toml = gen_config::router(router, Some(client.clone()));
        assert!(toml.contains(&format!("public_ip = \"192.0.2.1{i}\"\n")), "{toml}");
        assert!(
            toml.contains(
                "etcd_endpoints = [\"http://127.0.0.1:2379\"]\nnetwork = \"10.244.0.0/16\"\nsubnet_len = 24\n"
            ),
            "{toml}"
        );
        let updater = gen_config::updater(update, Some(client));
        assert!(
            updater.ends_with("[reboot_lock]\nstrategy = \"etcd-lock\"\nmax = 1\nttl = \"10m\"\nendpoints = [\"http://127.0.0.1:2379\"]\n"),
            "{updater}"
        );
        let unit = gen_units::etcd(etcd);
        assert!(unit.contains(&format!("\"--initial-advertise-peer-urls\", \"http://192.0.2.1{i}:2380\"")), "{unit}");
    }
    clusters.dedup();
    assert_eq!(clusters.len(), 1, "the hosts disagree on initial_cluster: {clusters:?}");
}

/// The README's "Cluster" example (host 1 of three) passes the check
/// without a warning, etcd cluster checks included.
#[test]
fn the_readme_cluster_example_passes() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let section = &readme[readme.find("\n## Cluster\n").expect("a Cluster section")..];
    let start = section.find("```yaml\n#cloud-config").expect("a #cloud-config example in Cluster") + 8;
    let body = &section[start..];
    let doc = &body[..body.find("```").unwrap()];
    let checked = check("README.md cluster yaml", doc.as_bytes()).unwrap_or_else(|e| panic!("{e:?}"));
    assert!(checked.warnings.is_empty(), "{:?}", checked.warnings);
    let etcd = checked.config.etcd.as_ref().expect("etcd settings");
    assert_eq!(etcd.name.as_deref(), Some("b1"));
}

#[test]
fn ntp_keys_are_chronys_and_other_clients_are_refused() {
    let y = ok("#cloud-config\nntp:\n  ntp_client: chrony\n  servers: [time.example.com, 192.0.2.1]\n  pools: [0.pool.example.org]\n  peers: [peer-1]\n  allow: [192.0.2.0/24, '2001:db8::1']\n");
    assert!(y.warnings.is_empty(), "{:?}", y.warnings);
    let t = ok("#berth-config\n[ntp]\nntp_client = \"auto\"\nservers = [\"time.example.com\", \"192.0.2.1\"]\npools = [\"0.pool.example.org\"]\npeers = [\"peer-1\"]\nallow = [\"192.0.2.0/24\", \"2001:db8::1\"]\n");
    assert_eq!(meaning(&y.config), meaning(&t.config));
    let ntp = y.config.ntp.unwrap();
    assert!(ntp.enabled);
    assert_eq!(ntp.servers, ["time.example.com", "192.0.2.1"]);
    assert_eq!(ntp.pools, ["0.pool.example.org"]);
    assert_eq!(ntp.peers, ["peer-1"]);
    assert_eq!(ntp.allow, ["192.0.2.0/24", "2001:db8::1"]);
    assert!(!ok("#cloud-config\nntp:\n  enabled: false\n").config.ntp.unwrap().enabled);

    // Another client: an error naming line and key; `config` is ignored, said so.
    let e = errors("#cloud-config\nhostname: a\nntp:\n  ntp_client: ntpd\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e.first().unwrap().starts_with("u:4: key ntp.ntp_client: `ntpd` is not available on Berth"), "{e:?}");
    let d = ok("#cloud-config\nntp:\n  config:\n    confpath: /etc/chrony.conf\n");
    let w = warnings(&d);
    assert!(w.len() == 1 && w.first().unwrap().starts_with("u:3: key ntp.config: not implemented on Berth"), "{w:?}");

    // What would not be one word of a chronyd directive is refused.
    let e = errors("#cloud-config\nntp:\n  servers: ['a.example.com iburst maxpoll 1']\n  peers: [-bad]\n  allow: [192.0.2.0/33, all]\n");
    assert_eq!(e.len(), 4, "{e:?}");
    assert!(e.first().unwrap().starts_with("u:3: key ntp.servers[0]: "), "{e:?}");
    assert!(e.get(1).unwrap().starts_with("u:4: key ntp.peers[0]: "), "{e:?}");
    assert!(e.get(2).unwrap().starts_with("u:5: key ntp.allow[0]: "), "{e:?}");
    assert!(e.get(3).unwrap().contains("`all` is neither an IP address nor ADDRESS/PREFIX"), "{e:?}");
}
