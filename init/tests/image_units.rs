//! The units the image ships (`image-build/rootfs/usr/lib/berth/units`, the
//! image's `/usr/lib/berth/units`) load and plan without a single error, with
//! the settings their services depend on. Written against the public API of
//! `berth_init::unit`: when that API or the format changes, this fails and
//! the image's units must follow.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_init::unit::{
    self, Account, HealthAction, HealthCheck, KillMode, Kind, Plan, Ready, RestartPolicy, Unit, UnitName,
};

fn image_build() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../image-build")
}

/// The image's unit directory, as berth-init reads it on the target.
fn unit_dir() -> PathBuf {
    image_build().join("rootfs").join(berth_layout::paths::IMAGE_UNIT_DIR.trim_start_matches('/'))
}

/// An override directory the image ships as a documented example.
fn static_network_example() -> PathBuf {
    image_build().join("rootfs/usr/share/berth/examples/static-network")
}

fn name(s: &str) -> UnitName {
    UnitName::new(s).unwrap()
}

fn plan_of(dirs: &[&Path]) -> Plan {
    let plan = unit::plan(unit::load(dirs));
    let errors: Vec<String> = plan.errors.iter().map(ToString::to_string).collect();
    assert!(errors.is_empty(), "unit errors:\n{}", errors.join("\n"));
    let excluded: Vec<String> = plan.excluded.iter().map(|(n, x)| format!("{n}: {}", x.reason)).collect();
    assert!(excluded.is_empty(), "units left out:\n{}", excluded.join("\n"));
    assert!(plan.masked.is_empty(), "masked: {:?}", plan.masked);
    plan
}

fn image_plan() -> Plan {
    plan_of(&[&unit_dir()])
}

fn get<'a>(plan: &'a Plan, n: &str) -> &'a Unit {
    plan.units.get(&name(n)).unwrap_or_else(|| panic!("no unit {n} in {}", unit_dir().display()))
}

fn names(deps: &[unit::Dependency]) -> BTreeSet<&str> {
    deps.iter().map(|d| d.name.as_str()).collect()
}

/// The value after `flag` in the unit's command line.
fn arg<'a>(u: &'a Unit, flag: &str) -> Option<&'a str> {
    let exec = &u.service.exec;
    exec.iter().position(|a| a == flag).and_then(|i| exec.get(i + 1)).map(String::as_str)
}

#[test]
fn the_image_units_load_and_plan_without_errors() {
    let plan = image_plan();
    let got: Vec<&str> = plan.units.keys().map(UnitName::as_str).collect();
    assert_eq!(
        got,
        ["containerd", "etcd", "network", "network-online", "ntp", "router", "ssh-keygen", "sshd", "updater"]
    );
    // The updater's gate waits for the machine's readiness: it must not be
    // part of it, nor require the network (it blesses without one).
    let updater = get(&plan, "updater");
    assert!(!updater.dependencies.required_for_ready);
    assert!(updater.dependencies.requires.is_empty());
    // Every unit is somewhere in the start order and the stop order.
    let started: BTreeSet<&UnitName> = plan.layers.iter().flatten().collect();
    let stopped: BTreeSet<&UnitName> = plan.shutdown.iter().flatten().collect();
    assert_eq!(started.len(), plan.units.len());
    assert_eq!(stopped.len(), plan.units.len());
}

/// Time sync holds nothing up (issue 11): not the ready line, not
/// containerd or etcd; chronyd itself waits for network-online only, so
/// that its first burst of requests finds a route.
/// The services the machine is not for start after containerd, not beside
/// it (docs/units.md, "Idle units"); containerd, etcd and the network do not.
#[test]
fn sshd_the_updater_and_time_sync_are_idle() {
    let plan = image_plan();
    let idle: BTreeSet<&str> = plan.units.values().filter(|u| u.dependencies.idle).map(|u| u.name.as_str()).collect();
    assert_eq!(idle, ["ntp", "sshd", "updater"].into());
}

#[test]
fn time_sync_holds_nothing_up() {
    let plan = image_plan();
    let ntp = get(&plan, "ntp");
    assert_eq!(ntp.service.exec.first().map(String::as_str), Some("/usr/sbin/chronyd"));
    // root: an /etc/passwd that user data wrote before chrony came hides
    // any system user the image adds (the ntp unit says more).
    assert_eq!(arg(ntp, "-u"), Some("root"));
    assert!(!ntp.dependencies.required_for_ready);
    assert!(ntp.dependencies.requires.is_empty());
    assert_eq!(names(&ntp.dependencies.after), BTreeSet::from(["network-online"]));
    assert_eq!(ntp.limits.cpu_weight, Some(1), "chronyd yields the CPU to the units starting beside it");
    for (n, u) in &plan.units {
        let waits = names(&u.dependencies.requires).contains("ntp") || names(&u.dependencies.after).contains("ntp");
        assert!(!waits, "{n} waits for ntp");
    }
}

#[test]
fn containerd_survives_its_own_restart_and_does_not_need_the_network() {
    let plan = image_plan();
    let c = get(&plan, "containerd");
    assert_eq!(c.service.exec.first().map(String::as_str), Some("/usr/bin/containerd"));
    assert_eq!(arg(c, "--config"), Some("/etc/containerd/config.toml"));
    assert_eq!(c.service.kind, Kind::LongRunning);
    assert_eq!(c.service.ready, Ready::Notify);
    assert_eq!(c.service.kill_mode, KillMode::Main, "a restart must leave the shims (running containers) alone");
    assert_eq!(c.restart.policy, RestartPolicy::Always);
    assert!(c.dependencies.requires.is_empty(), "containerd works without a network: order after it, never require it");
    assert!(names(&c.dependencies.after).contains("network"));
    assert_eq!(c.limits.pids_max, Some(unit::Limit::Max));
}

#[test]
fn containerd_stops_the_containers_gracefully_when_it_stops_for_good() {
    let plan = image_plan();
    let c = get(&plan, "containerd");
    let exec_stop = c.service.exec_stop.as_deref().unwrap_or_else(|| panic!("containerd has no exec_stop"));
    assert_eq!(exec_stop, ["/usr/lib/berth/stop-containers"]);
    let script = std::fs::read_to_string(image_build().join("rootfs/usr/lib/berth/stop-containers")).unwrap();
    for what in ["STOP_TIMEOUT_USEC", "ctr namespaces ls", "kill -s SIGTERM", "delete --force"] {
        assert!(script.contains(what), "stop-containers does not use {what}");
    }
    // The containers' grace is stop_timeout less 10 s: 80 s, as long as
    // systemd hosts give them (90 s at most).
    assert_eq!(c.service.stop_timeout, Duration::from_secs(90));
}

#[test]
fn the_ready_line_waits_for_the_network_containerd_and_sshd_only() {
    let plan = image_plan();
    let marked: BTreeSet<&str> =
        plan.units.values().filter(|u| u.dependencies.required_for_ready).map(|u| u.name.as_str()).collect();
    assert_eq!(marked, ["containerd", "network", "sshd"].into());
}

#[test]
fn etcd_is_left_running_when_not_ready_or_unhealthy_and_holds_nothing_up() {
    let plan = image_plan();
    let e = get(&plan, "etcd");
    assert_eq!(e.service.exec.first().map(String::as_str), Some("/usr/bin/etcd"));
    assert_eq!(e.service.ready, Ready::Notify);
    // Without quorum etcd never sends READY=1 and a restart does not help:
    // degraded after the start timeout (and after failed health checks),
    // never stopped.
    assert_eq!(e.health.as_ref().map(|h| h.on_failure), Some(HealthAction::Degrade));
    assert!(e.service.start_timeout >= Duration::from_secs(30), "{:?}", e.service.start_timeout);
    assert_eq!(e.service.user, Some(Account::Name("etcd".into())));
    assert_eq!(arg(e, "--data-dir"), Some("/var/lib/etcd"));
    assert_eq!(arg(e, "--listen-client-urls"), Some("http://127.0.0.1:2379"));
    assert_eq!(arg(e, "--advertise-client-urls"), Some("http://127.0.0.1:2379"));
    assert_eq!(arg(e, "--listen-peer-urls"), Some("http://127.0.0.1:2380"));
    // --initial-cluster must name this member, or etcd refuses to start.
    let member = arg(e, "--name").unwrap();
    let peer = arg(e, "--initial-advertise-peer-urls").unwrap();
    assert_eq!(arg(e, "--initial-cluster"), Some(format!("{member}={peer}").as_str()));
    // Its data directory is made by PID1 for its user, 0700 as etcd wants
    // it; the loopback is up from early boot: nothing to wait for.
    assert_eq!(
        (e.service.state_directory.as_slice(), e.service.state_directory_mode),
        (["etcd".to_string()].as_slice(), 0o700)
    );
    assert!(e.dependencies.requires.is_empty(), "{:?}", e.dependencies.requires);
    assert!(!names(&e.dependencies.requires).contains("network"), "clients are on 127.0.0.1 only");
    match e.health.as_ref().map(|h| &h.check) {
        Some(HealthCheck::Command(cmd)) => assert_eq!(cmd.first().map(String::as_str), Some("/usr/bin/etcdctl")),
        other => panic!("etcd health check: {other:?}"),
    }

    // Nothing requires etcd, waits for it to be ready or pulls it in; the
    // router only orders itself after it (it retries etcd by itself).
    let etcd = name("etcd");
    for (n, u) in &plan.units {
        let on_etcd: Vec<_> = u.dependencies.all().filter(|(_, d)| d.name == etcd).collect();
        let only_after = n.as_str() == "router" && names(&u.dependencies.after).contains("etcd") && on_etcd.len() == 1;
        assert!(on_etcd.is_empty() || only_after, "{n} depends on etcd");
    }
    assert!(!plan.needs.get(&etcd).unwrap().dependents.iter().any(|d| d.as_str() != "router"));
}

#[test]
fn the_router_runs_only_when_configured_and_holds_nothing_up() {
    let plan = image_plan();
    let r = get(&plan, "router");
    assert_eq!(r.service.exec, ["/usr/bin/berth-router"]);
    assert!(!r.dependencies.required_for_ready);
    assert!(r.dependencies.requires.is_empty(), "a slow or degraded etcd must not keep the router from starting");
    assert!(names(&r.dependencies.after).is_superset(&["etcd", "network"].into()));
    assert_eq!(r.restart.policy, RestartPolicy::Always);
    let paths: Vec<_> =
        r.conditions.path_exists.iter().map(|c| (c.path.to_string_lossy().into_owned(), c.negate)).collect();
    assert_eq!(paths, [("/etc/berth/router.toml".to_string(), false)]);
}

#[test]
fn sshd_takes_keys_only_and_its_host_key_is_made_once() {
    let plan = image_plan();
    let s = get(&plan, "sshd");
    assert_eq!(s.service.exec.first().map(String::as_str), Some("/usr/sbin/dropbear"));
    for flag in ["-F", "-E", "-s"] {
        assert!(s.service.exec.iter().any(|a| a == flag), "dropbear without {flag}: {:?}", s.service.exec);
    }
    assert!(!s.service.exec.iter().any(|a| a == "-w"), "-w would refuse root, the only user");
    assert_eq!(s.service.ready, Ready::Tcp("127.0.0.1:22".parse().unwrap()));
    assert_eq!(names(&s.dependencies.requires), ["ssh-keygen"].into());
    assert!(names(&s.dependencies.after).is_superset(&["network"].into()));

    // ssh-keygen makes exactly the key sshd reads, only when it is missing.
    let key = arg(s, "-r").unwrap();
    let k = get(&plan, "ssh-keygen");
    assert_eq!(k.service.kind, Kind::Oneshot);
    assert_eq!(k.service.exec.first().map(String::as_str), Some("/usr/bin/dropbearkey"));
    assert_eq!(arg(k, "-f"), Some(key));
    assert_eq!(arg(k, "-t"), Some("ed25519"));
    let cond = &k.conditions.path_exists;
    assert!(cond.len() == 1 && cond[0].negate && cond[0].path == Path::new(key), "{cond:?}");
    assert!(key.starts_with("/etc/"), "host keys persist on the /etc overlay");

    // root's authorized_keys live on writable storage: the home PID1 makes
    // on /var (init/src/boot/data.rs).
    let passwd = std::fs::read_to_string(image_build().join("rootfs/etc/passwd")).unwrap();
    let root = passwd.lines().find(|l| l.starts_with("root:")).unwrap();
    assert_eq!(root.split(':').nth(5), Some(berth_layout::paths::ROOT_HOME), "{root}");
}

#[test]
fn networking_is_dhcp_on_the_first_nic() {
    let plan = image_plan();
    let n = get(&plan, "network");
    // dhcpcd on eth0 once eth0 exists: berth-wait-online waits for the
    // link on rtnetlink, then execs dhcpcd (same process, same unit).
    assert_eq!(n.service.exec[..5], ["/usr/bin/berth-wait-online", "--link", "eth0", "--", "/usr/sbin/dhcpcd"]);
    let dhcpcd = &n.service.exec[4..];
    assert!(dhcpcd.iter().any(|a| a == "--nobackground" || a == "-B"), "dhcpcd must stay in the foreground");
    assert_eq!(dhcpcd.last().map(String::as_str), Some("eth0"));
    assert_eq!(n.service.kind, Kind::LongRunning);
    assert_eq!(n.restart.policy, RestartPolicy::Always);
    // No condition read once at boot: a NIC that comes later still gets its
    // lease (services.rs rebinds the NIC's driver; secure_boot.rs boots
    // without a NIC).
    assert!(n.conditions.path_exists.is_empty(), "{:?}", n.conditions.path_exists);

    let o = get(&plan, "network-online");
    assert_eq!(o.service.kind, Kind::Oneshot);
    assert_eq!(o.service.exec, ["/usr/bin/berth-wait-online"]);
    assert_eq!(names(&o.dependencies.requires), ["network"].into());
}

#[test]
fn the_static_network_example_replaces_the_dhcp_unit_cleanly() {
    let plan = plan_of(&[&unit_dir(), &static_network_example()]);
    let n = get(&plan, "network");
    assert!(n.file.starts_with(static_network_example()), "{}", n.file.display());
    assert_eq!(n.service.kind, Kind::Oneshot);
    let script = n.service.exec.join(" ");
    assert!(
        script.contains("/usr/bin/ip address replace") && script.contains("/usr/bin/ip route replace default"),
        "{script}"
    );
    // A TOML literal string: printf, not TOML, reads the \n.
    assert!(script.contains(r"printf 'nameserver 192.0.2.1\n' > /etc/resolv.conf"), "{script}");
    // What depended on the DHCP unit still starts.
    assert!(plan.units.contains_key(&name("network-online")));
    assert!(plan.units.contains_key(&name("containerd")));
}

/// Every program a unit runs (or checks health with) is put in the image by
/// image.toml, or is busybox's. Catches a binary dropped from the image while
/// a unit still runs it.
#[test]
fn every_program_the_units_run_is_in_the_image() {
    let manifest: toml::Table =
        toml::from_str(&std::fs::read_to_string(image_build().join("image.toml")).unwrap()).unwrap();
    let mut files: BTreeSet<String> =
        manifest["files"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    // Berth's own binaries go to /usr/bin.
    files.extend(
        manifest["berth_binaries"].as_array().unwrap().iter().map(|v| format!("/usr/bin/{}", v.as_str().unwrap())),
    );
    let busybox = ["/usr/bin/sh", "/usr/bin/mkdir"];
    let plan = image_plan();
    for (n, u) in &plan.units {
        let mut programs = vec![u.service.exec.first().unwrap()];
        if let Some(HealthCheck::Command(cmd)) = u.health.as_ref().map(|h| &h.check) {
            programs.push(cmd.first().unwrap());
        }
        for p in programs {
            assert!(
                files.contains(p) || busybox.contains(&p.as_str()),
                "{n} runs {p}, which image.toml does not put in the image"
            );
        }
    }
    // And the accounts they run as exist.
    let passwd = std::fs::read_to_string(image_build().join("rootfs/etc/passwd")).unwrap();
    for (n, u) in &plan.units {
        if let Some(Account::Name(user)) = &u.service.user {
            assert!(
                passwd.lines().any(|l| l.split(':').next() == Some(user)),
                "{n} runs as {user}, not in /etc/passwd"
            );
        }
    }
}

#[test]
fn containerd_and_etcd_may_open_many_files_and_ssh_sessions_outlive_the_listener() {
    let plan = image_plan();
    let many = unit::ResourceLimit { soft: unit::Limit::Value(1 << 20), hard: unit::Limit::Value(1 << 20) };
    for n in ["containerd", "etcd"] {
        assert_eq!(get(&plan, n).limits.rlimits.get(&unit::Rlimit::Nofile), Some(&many), "{n}: containerd's 1048576");
    }
    let c = get(&plan, "containerd");
    let infinity = unit::ResourceLimit { soft: unit::Limit::Max, hard: unit::Limit::Max };
    assert_eq!(c.limits.rlimits.get(&unit::Rlimit::Nproc), Some(&infinity));
    assert_eq!(c.limits.rlimits.get(&unit::Rlimit::Core), Some(&infinity));
    // Each SSH session is a child of the listener in its cgroup.
    let s = get(&plan, "sshd");
    assert_eq!(s.service.kill_mode, KillMode::Main, "a restart or crash of dropbear must leave the sessions alone");
    assert_eq!(s.restart.policy, RestartPolicy::Always);
}

/// Every unit file user data can generate (`berth_provision::generate`:
/// runcmd, ntp, static network, sshd and etcd overrides) loads with the
/// image's units without an error: provision cannot link berth-init's unit
/// reader, so this is where its texts meet it.
#[test]
fn units_generated_from_user_data_load_with_the_image_units() {
    let examples = berth_provision::generate::examples();
    assert!(examples.len() >= 5, "the generated examples: {:?}", examples.iter().map(|e| &e.0).collect::<Vec<_>>());
    for (file, text) in examples {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(format!("{file}.toml")), &text).unwrap();
        let plan = unit::plan(unit::load(&[&unit_dir(), dir.path()]));
        let unit = plan.units.get(&name(&file));
        assert!(unit.is_some_and(|u| u.file.starts_with(dir.path())), "{file} is not the generated unit: {unit:?}");
        let errors: Vec<String> = plan.errors.iter().map(ToString::to_string).collect();
        assert!(errors.is_empty(), "{file}:\n{text}\nunit errors:\n{}", errors.join("\n"));
        let excluded: Vec<String> = plan.excluded.iter().map(|(n, x)| format!("{n}: {}", x.reason)).collect();
        assert!(excluded.is_empty(), "{file}: units left out:\n{}", excluded.join("\n"));
    }
}
