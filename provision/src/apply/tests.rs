use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::*;
use crate::model::*;
use crate::plan::{plan, Facts, Previous, Scope};
use crate::testutil::{at, machine, snapshot, Faulty};

/// A document that touches every kind of change.
fn config() -> Config {
    let named = |v: &str| Some(Item { value: v.to_string(), at: at("x") });
    Config {
        hostname: named("node1"),
        fqdn: named("node1.example.com"),
        timezone: named("Europe/Berlin"),
        users: vec![User {
            gecos: Some("Ann".into()),
            groups: vec!["web".into()],
            ssh_authorized_keys: vec![Item { value: "ssh-ed25519 AAAA ann".into(), at: at("k") }],
            ..User::new("ann", at("users[0]"))
        }],
        ssh_authorized_keys: vec![Item { value: "ssh-ed25519 BBBB root".into(), at: at("k") }],
        write_files: vec![WriteFile {
            path: "/etc/app/app.conf".into(),
            content: b"x=1\n".to_vec(),
            mode: 0o640,
            owner: ("ann".into(), "web".into()),
            append: false,
            defer: true,
            at: at("write_files[0]"),
        }],
        ntp: Some(Ntp { pools: vec!["pool.example.com".into()], ..Ntp::new(at("ntp")) }),
        bootcmd: vec![Item { value: Command::Shell("echo booted".into()), at: at("bootcmd[0]") }],
        runcmd: vec![Item { value: Command::Shell("echo once".into()), at: at("runcmd[0]") }],
        units: Units { disable: vec![Item { value: "etcd".into(), at: at("units.disable[0]") }], ..Units::default() },
        ..Config::default()
    }
}

fn changes_for(host: &dyn Host, config: &Config, previous: &Previous) -> Vec<Change> {
    let facts = Facts::gather(host, config, None, "i-1").unwrap();
    plan(config, &facts, previous, Scope { per_instance: true, bootcmd: true }).unwrap().changes
}

#[test]
fn every_kind_of_change_is_made_and_described() {
    let (dir, mut host) = machine();
    std::fs::write(dir.path().join("etc/obsolete"), "old").unwrap();
    let mut changes = changes_for(&host, &config(), &Previous::default());
    changes.push(Change::Remove { path: "/etc/obsolete".into() });
    let applied = apply(&mut host, &changes, None).unwrap();
    let root = dir.path();
    let m = root.join("etc/app/app.conf").metadata().unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o640, 1000, 1001));
    let keys = root.join("var/home/ann/.ssh/authorized_keys").metadata().unwrap();
    assert_eq!((keys.mode() & 0o7777, keys.uid()), (0o600, 1000));
    assert_eq!(root.join("var/home/ann").metadata().unwrap().mode() & 0o7777, 0o700);
    assert_eq!(std::fs::read_link(root.join("etc/localtime")).unwrap(), Path::new("/usr/share/zoneinfo/Europe/Berlin"));
    assert_eq!(std::fs::read_to_string(root.join("etc/hostname")).unwrap(), "node1\n");
    assert_eq!(std::fs::read_to_string(root.join("etc/berth/units/etcd.toml")).unwrap(), "");
    assert!(!root.join("etc/obsolete").exists());
    assert!(!root.join("var/lib/berth/provision/backup").exists());
    assert_eq!(
        host.runner.ran.borrow().as_slice(),
        &[vec!["/usr/bin/sh".to_string(), "-c".into(), "echo booted".into()]]
    );
    assert_eq!(applied.hostname.as_deref(), Some("node1"));
    assert_eq!(applied.units_changed, vec!["etcd", "ntp", "user-runcmd"]);
    assert_eq!(applied.bootcmd, vec!["bootcmd echo booted: ok"]);
    for line in [
        "hostname: (none) -> node1",
        "unit etcd: masked (/etc/berth/units/etcd.toml)",
        "unit ntp: added (/etc/berth/units/ntp.toml)",
        "wrote /etc/app/app.conf (0640 1000:1001)",
        "made directory /var/home/ann (0700 1000:1000)",
        "linked /etc/localtime -> /usr/share/zoneinfo/Europe/Berlin",
        "removed /etc/obsolete",
    ] {
        assert!(applied.lines.iter().any(|l| l == line), "{line} not in {:#?}", applied.lines);
    }
}

#[test]
fn applying_twice_writes_nothing_the_second_time() {
    let (dir, mut host) = machine();
    let changes = changes_for(&host, &config(), &Previous::default());
    apply(&mut host, &changes, None).unwrap();
    let before = snapshot(dir.path());
    // Planned again from the machine as it is now.
    let changes = changes_for(&host, &config(), &Previous::default());
    let mut counting = Faulty::new(&mut host);
    let applied = apply(&mut counting, &changes, None).unwrap();
    assert_eq!(counting.writes, 0);
    assert!(applied.paths.is_empty() && applied.lines.is_empty(), "{applied:#?}");
    assert_eq!(applied.bootcmd.len(), 1, "bootcmd runs every time");
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn a_failed_write_puts_everything_back() {
    let (dir, mut host) = machine();
    std::fs::write(dir.path().join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    let before = snapshot(dir.path());
    let changes = changes_for(&host, &config(), &Previous::default());
    // Fail the last file: everything else was changed by then.
    let mut faulty = Faulty::new(&mut host);
    faulty.fail_path = Some("/var/lib/berth/provision/runcmd.sh".into());
    let e = apply(&mut faulty, &changes, None).unwrap_err();
    assert!(e.restore_failed.is_none(), "{e}");
    assert_eq!(
        e.to_string(),
        "write /var/lib/berth/provision/runcmd.sh: injected failure at /var/lib/berth/provision/runcmd.sh; everything it had changed was put back"
    );
    assert!(faulty.writes > 5);
    assert_eq!(snapshot(dir.path()), before);
    assert!(host.runner.ran.borrow().is_empty(), "bootcmd does not run when the apply fails");
}

#[test]
fn a_trial_is_reverted_from_its_backup_or_confirmed() {
    let (dir, mut host) = machine();
    let before = snapshot(dir.path());
    let changes = changes_for(&host, &config(), &Previous::default());
    apply(&mut host, &changes, Some(1_000)).unwrap();
    assert_eq!(pending(&host).unwrap().unwrap().state, State::Trial { until: 1_000 });
    // No other apply while it waits.
    assert!(apply(&mut host, &changes, None).is_err());
    let restored = restore(&mut host).unwrap().unwrap();
    assert_eq!(restored.state, State::Trial { until: 1_000 });
    assert_eq!(restored.units_changed, vec!["etcd", "ntp", "user-runcmd"]);
    assert_eq!(snapshot(dir.path()), before);
    // Confirmed: it stays.
    apply(&mut host, &changes, Some(1_000)).unwrap();
    assert!(discard(&mut host).unwrap());
    assert!(pending(&host).unwrap().is_none());
    assert!(dir.path().join("etc/hostname").exists());
    assert!(!dir.path().join("var/lib/berth/provision/backup").exists());
    assert!(!discard(&mut host).unwrap());
}

#[test]
fn a_power_cut_mid_apply_is_undone_from_the_backup() {
    for cut_after in [0, 1, 3, 8, 15] {
        let (dir, mut host) = machine();
        std::fs::write(dir.path().join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
        let before = snapshot(dir.path());
        let changes = changes_for(&host, &config(), &Previous::default());
        let mut faulty = Faulty::new(&mut host);
        faulty.ops_left = Some(cut_after);
        assert!(apply(&mut faulty, &changes, None).is_err());
        // The next boot.
        let mut rebooted = crate::host::FsHost {
            root: dir.path().to_path_buf(),
            runner: crate::testutil::FakeRunner::default(),
            set_kernel_hostname: false,
        };
        let r = restore(&mut rebooted).unwrap();
        // Cut before the index was written: nothing was changed yet.
        assert_eq!(r.is_some(), cut_after >= 8, "cut after {cut_after}");
        let after = snapshot(dir.path());
        // Leftover backup contents of a set whose index was never written
        // are harmless; the machine's files are as before.
        let strip = |s: &std::collections::BTreeMap<PathBuf, String>| {
            s.iter()
                .filter(|(p, _)| !p.starts_with("var/lib/berth/provision/backup"))
                .map(|(p, v)| (p.clone(), v.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(&after), strip(&before), "cut after {cut_after}");
        assert!(pending(&rebooted).unwrap().is_none());
    }
}

#[test]
fn a_file_larger_than_pid1_reads_whole_is_compared_backed_up_and_put_back_by_streaming() {
    let (dir, mut host) = machine();
    // One byte over what FsHost reads whole: its backup and comparison
    // used to read it, so the apply failed ("inspect /etc/big").
    let len = usize::try_from(crate::host::READ_LIMIT).unwrap() + 1;
    let mut big = vec![0u8; len];
    for (i, b) in big.iter_mut().enumerate().step_by(4093) {
        *b = (i % 251) as u8;
    }
    let real = dir.path().join("etc/big");
    std::fs::write(&real, &big).unwrap();
    let write = |content: Vec<u8>| Change::Write { path: "/etc/big".into(), content, mode: 0o644, uid: 0, gid: 0 };
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (uid, gid) = {
        let m = std::fs::metadata(&real).unwrap();
        (m.uid(), m.gid())
    };
    let same = Change::Write { path: "/etc/big".into(), content: big.clone(), mode: 0o644, uid, gid };
    // The same content: nothing to do, and nothing written.
    let mut faulty = Faulty::new(&mut host);
    let out = apply(&mut faulty, &[same], None).unwrap();
    assert!(out.paths.is_empty(), "{out:?}");
    assert_eq!(faulty.writes, 0);
    // Replaced, then a later change fails: the big file is put back whole.
    let mut last = big.clone();
    *last.last_mut().unwrap() ^= 1;
    let mut faulty = Faulty::new(&mut host);
    faulty.fail_path = Some("/etc/after".into());
    let other = Change::Write { path: "/etc/after".into(), content: b"x".to_vec(), mode: 0o644, uid: 0, gid: 0 };
    let e = apply(&mut faulty, &[write(last.clone()), other], None).unwrap_err();
    assert!(e.restore_failed.is_none(), "{e}");
    assert!(std::fs::read(&real).unwrap() == big, "the file put back differs");
    // A trial over it, reverted: the same.
    apply(&mut host, &[write(b"small\n".to_vec())], Some(1_000)).unwrap();
    assert_eq!(std::fs::read(&real).unwrap(), b"small\n");
    restore(&mut host).unwrap().unwrap();
    assert!(std::fs::read(&real).unwrap() == big, "the file put back differs");
    assert!(!dir.path().join("var/lib/berth/provision/backup").exists());
}
