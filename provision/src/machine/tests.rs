use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use super::change::change_with;
use super::*;
use crate::check::{Document, Format, Rejected};
use crate::diag::Place;
use crate::host::FsHost;
use crate::model::{Command, Item, User, WriteFile};
use crate::sources::{Found, Kind};
use crate::testutil::{machine, snapshot, FakeRunner, Faulty};

/// A stand-in for H1's reader, so that these tests run before the merge:
/// one directive a line (`hostname X`, `user NAME`, `file PATH TEXT`,
/// `runcmd CMD`, `bootcmd CMD`, `tz NAME`, `disable UNIT`, `invalid`).
fn fake_check(source: &str, bytes: &[u8]) -> crate::check::Checked {
    let text = String::from_utf8_lossy(bytes);
    let sha256 = record::sha256_hex(bytes);
    let mut c = Config::default();
    for (i, line) in text.lines().enumerate() {
        let at = Place::new(source, i + 1, line.split(' ').next().unwrap_or_default());
        let (what, rest) = line.split_once(' ').unwrap_or((line, ""));
        match what {
            "hostname" => c.hostname = Some(Item { value: rest.into(), at }),
            "tz" => c.timezone = Some(Item { value: rest.into(), at }),
            "user" => c.users.push(User {
                ssh_authorized_keys: vec![Item { value: format!("ssh-ed25519 AAAA {rest}"), at: at.clone() }],
                ..User::new(rest, at)
            }),
            "file" => {
                let (path, content) = rest.split_once(' ').unwrap_or((rest, ""));
                c.write_files.push(WriteFile {
                    path: path.into(),
                    content: format!("{content}\n").into_bytes(),
                    mode: 0o644,
                    owner: ("root".into(), "root".into()),
                    append: false,
                    defer: false,
                    at,
                });
            }
            "runcmd" => c.runcmd.push(Item { value: Command::Shell(rest.into()), at }),
            "bootcmd" => c.bootcmd.push(Item { value: Command::Shell(rest.into()), at }),
            "disable" => c.units.disable.push(Item { value: rest.into(), at }),
            "invalid" => {
                return Err(Rejected {
                    source: source.into(),
                    errors: vec![Diagnostic::new(at, "expected a string, found a list")],
                    warnings: vec![],
                    sha256,
                })
            }
            _ => {}
        }
    }
    let warnings = if text.contains("packages") {
        vec![Diagnostic::new(Place::new(source, 1, "packages"), "not supported by Berth: ignored")]
    } else {
        vec![]
    };
    Ok(Document { source: source.into(), format: Format::CloudConfig, config: c, warnings, sha256 })
}

fn fake_meta(source: &str, bytes: &[u8]) -> Result<MetaData, Diagnostic> {
    let mut m = MetaData::default();
    for line in String::from_utf8_lossy(bytes).lines() {
        match line.split_once(": ") {
            Some(("instance-id", v)) => m.instance_id = Some(v.into()),
            Some(("local-hostname", v)) => m.local_hostname = Some(v.into()),
            _ => return Err(Diagnostic::new(Place::new(source, 1, ""), "not meta-data")),
        }
    }
    Ok(m)
}

fn fake_network(source: &str, _bytes: &[u8]) -> Result<crate::model::Network, Vec<Diagnostic>> {
    Ok(crate::model::Network {
        version: 2,
        interfaces: vec![],
        nameservers: vec![],
        search: vec![],
        at: Place::new(source, 0, ""),
    })
}

const FAKE: Readers = Readers { check: fake_check, meta_data: fake_meta, network_config: fake_network };

fn probed(user_data: Option<&str>, instance: Option<&str>) -> Probed {
    Probed {
        found: if user_data.is_none() && instance.is_none() {
            None
        } else {
            Some(Found {
                kind: Kind::NoCloud,
                origin: "nocloud:/dev/vdb:user-data".into(),
                user_data: user_data.map(|u| u.as_bytes().to_vec()),
                meta_data: instance.map(|i| format!("instance-id: {i}").into_bytes()),
                network_config: None,
            })
        },
        probe_time: Duration::from_millis(12),
        tried: vec!["fw_cfg: none".into(), "nocloud: /dev/vdb (CIDATA)".into()],
    }
}

fn facts() -> BootFacts {
    BootFacts {
        machine_id: "0123456789abcdef0123456789abcdef".into(),
        now: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    }
}

fn boot(host: &mut dyn Host, user_data: Option<&str>, instance: Option<&str>) -> BootOutcome {
    at_boot_with(&FAKE, host, probed(user_data, instance), &facts())
}

fn read(dir: &tempfile::TempDir, path: &str) -> Option<String> {
    std::fs::read_to_string(dir.path().join(path.trim_start_matches('/'))).ok()
}

const DOC: &str = "#cloud-config\nhostname node1\nuser ann\nfile /etc/motd hello\nruncmd echo once\nbootcmd echo boot\ntz Europe/Berlin\n";

#[test]
fn no_user_data_and_nothing_recorded_is_no_outcome_and_no_change() {
    let (dir, mut host) = machine();
    let before = snapshot(dir.path());
    let out = boot(&mut host, None, None);
    assert_eq!(out.status.outcome, Outcome::None);
    assert_eq!(out.status.probe_ms, 12);
    assert_eq!(out.lines, vec!["user data: none found in 12 ms (fw_cfg: none; nocloud: /dev/vdb (CIDATA))"]);
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn the_first_boot_applies_everything_and_records_it() {
    let (dir, mut host) = machine();
    let out = boot(&mut host, Some(DOC), Some("i-1"));
    assert_eq!(out.status.outcome, Outcome::Applied, "{:#?}", out.lines);
    assert_eq!(out.lines[0], "user data: nocloud:/dev/vdb:user-data applied (instance i-1, 0 warnings) in 12 ms (fw_cfg: none; nocloud: /dev/vdb (CIDATA))");
    assert!(out.lines.contains(&"user data: hostname: (none) -> node1".to_string()), "{:#?}", out.lines);
    assert!(out.lines.contains(&"user data: bootcmd echo boot: ok".to_string()));
    assert_eq!(out.hostname.as_deref(), Some("node1"));
    assert_eq!(out.status.instance_id.as_deref(), Some("i-1"));
    assert_eq!(out.status.sha256, Some(record::sha256_hex(DOC.as_bytes())));
    assert_eq!(read(&dir, "/etc/motd").as_deref(), Some("hello\n"));
    assert!(read(&dir, "/etc/passwd").unwrap().contains("\nann:x:1000:1000::/var/home/ann:/usr/bin/sh\n"));
    assert!(read(&dir, "/etc/berth/units/user-runcmd.toml").unwrap().contains("runcmd-done/i-1"));
    let shown = show(&host).unwrap();
    assert_eq!((shown.instance_id.as_str(), shown.text.as_str(), shown.applied_at), ("i-1", DOC, 1_700_000_000));
    assert_eq!(shown.source, "nocloud:/dev/vdb:user-data");
    assert_eq!(read(&dir, "/var/lib/berth/provision/meta-data").as_deref(), Some("instance-id: i-1"));
    assert_eq!(host.runner.ran.borrow().len(), 1);
    // The next boot, nothing changed: nothing is written.
    let mut counting = Faulty::new(&mut host);
    let out = boot(&mut counting, Some(DOC), Some("i-1"));
    assert_eq!((out.status.outcome, counting.writes), (Outcome::Unchanged, 0), "{:#?}", out.lines);
    assert_eq!(out.lines.len(), 2, "{:#?}", out.lines);
    // Without meta-data the instance is the machine.
    let (_d, mut host) = machine();
    let out = boot(&mut host, Some(DOC), None);
    assert_eq!(out.status.instance_id.as_deref(), Some("0123456789abcdef0123456789abcdef"));
}

#[test]
fn the_same_instance_gets_only_the_every_boot_keys_again() {
    let (dir, mut host) = machine();
    boot(&mut host, Some(DOC), Some("i-1"));
    // The user changes what once-per-instance keys made, and something an
    // every-boot key owns.
    std::fs::write(dir.path().join("etc/motd"), "edited\n").unwrap();
    std::fs::write(dir.path().join("etc/hostname"), "other\n").unwrap();
    let out = boot(&mut host, Some(DOC), Some("i-1"));
    assert_eq!(out.status.outcome, Outcome::Unchanged);
    assert_eq!(read(&dir, "/etc/motd").as_deref(), Some("edited\n"), "write_files is once per instance");
    assert_eq!(read(&dir, "/etc/hostname").as_deref(), Some("node1\n"), "hostname is every boot");
    assert_eq!(host.runner.ran.borrow().len(), 2, "bootcmd every boot");
    // No source at all this boot: the document in force stays.
    let out = boot(&mut host, None, None);
    assert_eq!(out.status.outcome, Outcome::Unchanged);
    assert!(out.lines[0].ends_with("; nocloud:/dev/vdb:user-data (instance i-1) stays in force"), "{:#?}", out.lines);
    assert_eq!(host.runner.ran.borrow().len(), 3);
    // A new instance-id: everything again.
    let out = boot(&mut host, Some(DOC), Some("i-2"));
    assert_eq!(out.status.outcome, Outcome::Applied);
    assert_eq!(read(&dir, "/etc/motd").as_deref(), Some("hello\n"));
    assert!(read(&dir, "/etc/berth/units/user-runcmd.toml").unwrap().contains("runcmd-done/i-2"));
}

#[test]
fn a_changed_document_for_the_same_instance_is_not_applied_and_says_so() {
    let (dir, mut host) = machine();
    boot(&mut host, Some(DOC), Some("i-1"));
    let changed = format!("{DOC}hostname node2\n");
    let out = boot(&mut host, Some(&changed), Some("i-1"));
    assert_eq!(out.status.outcome, Outcome::ChangedNotApplied);
    let a = &record::sha256_hex(DOC.as_bytes())[..12];
    let b = &record::sha256_hex(changed.as_bytes())[..12];
    assert!(out.lines.contains(&format!(
        "user data changed (sha {a} -> {b}) but instance-id i-1 is the same: not applied; apply it with `berthctl config apply FILE` or give a new instance-id"
    )), "{:#?}", out.lines);
    assert_eq!(read(&dir, "/etc/hostname").as_deref(), Some("node1\n"));
    assert_eq!(out.status.sha256, Some(record::sha256_hex(DOC.as_bytes())), "the sha in force");
    assert_eq!(show(&host).unwrap().text, DOC);
}

#[test]
fn an_invalid_document_applies_nothing_and_names_the_error() {
    let (dir, mut host) = machine();
    let before = snapshot(dir.path());
    let out = boot(&mut host, Some("#cloud-config\nhostname x\ninvalid\n"), Some("i-1"));
    assert_eq!(out.status.outcome, Outcome::Rejected);
    assert_eq!(out.status.errors, vec!["nocloud:/dev/vdb:user-data:3: key invalid: expected a string, found a list"]);
    assert!(out.lines.contains(&"user data: the machine comes up with its defaults".to_string()), "{:#?}", out.lines);
    assert_eq!(snapshot(dir.path()), before);
    // With a document in force, that one stays.
    boot(&mut host, Some(DOC), Some("i-1"));
    let out = boot(&mut host, Some("invalid\n"), Some("i-2"));
    assert_eq!(out.status.outcome, Outcome::Rejected);
    assert_eq!(read(&dir, "/etc/hostname").as_deref(), Some("node1\n"));
    assert_eq!(show(&host).unwrap().instance_id, "i-1");
    // What only the machine can tell (a time zone it lacks) rejects it too.
    let out = boot(&mut host, Some("tz Mars/Olympus\n"), Some("i-3"));
    assert_eq!(out.status.outcome, Outcome::Rejected, "{:#?}", out.lines);
    assert!(out.status.errors[0]
        .ends_with("key tz: time zone Mars/Olympus: /usr/share/zoneinfo/Mars/Olympus is not on this machine"));
}

#[test]
fn a_failing_machine_is_failed_and_left_as_it_was() {
    let (dir, mut host) = machine();
    let before = snapshot(dir.path());
    let mut faulty = Faulty::new(&mut host);
    faulty.fail_path = Some("/etc/motd".into());
    let out = boot(&mut faulty, Some(DOC), Some("i-1"));
    assert_eq!(out.status.outcome, Outcome::Failed, "{:#?}", out.lines);
    assert!(out.status.errors[0].starts_with("write /etc/motd: injected failure"), "{:?}", out.status.errors);
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn config_apply_try_revert_confirm() {
    let (dir, mut host) = machine();
    boot(&mut host, Some(DOC), Some("i-1"));
    let before = snapshot(dir.path());
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_100);
    let doc2 = "hostname node2\ndisable etcd\nfile /etc/motd again\nrunncmd\n";
    let report =
        change_with(&FAKE, &mut host, "/root/new.yaml", doc2.as_bytes(), Some(Duration::from_secs(60)), now).unwrap();
    assert_eq!(report.trial_until, Some(1_700_000_160));
    assert_eq!(report.hostname.as_deref(), Some("node2"));
    assert_eq!(report.units_changed, vec!["etcd", "user-runcmd"]);
    assert!(report.changes.contains(&"hostname: node1 -> node2".to_string()), "{:#?}", report.changes);
    assert!(report.changes.contains(&"unit etcd: masked (/etc/berth/units/etcd.toml)".to_string()));
    assert!(
        report.changes.contains(&"unit user-runcmd: removed (/etc/berth/units/user-runcmd.toml)".to_string()),
        "{:#?}",
        report.changes
    );
    assert_eq!(read(&dir, "/etc/motd").as_deref(), Some("again\n"), "config apply includes once-per-instance keys");
    assert_eq!(show(&host).unwrap().trial_until, Some(1_700_000_160));
    assert!(matches!(
        change_with(&FAKE, &mut host, "x", b"", None, now),
        Err(ChangeError::TrialPending { until: 1_700_000_160 })
    ));
    let reverted = revert(&mut host).unwrap();
    assert_eq!(reverted.hostname.as_deref(), Some("node1"));
    assert_eq!(reverted.units_changed, vec!["etcd", "user-runcmd"]);
    assert_eq!(snapshot(dir.path()), before);
    assert!(matches!(revert(&mut host), Err(ChangeError::NoTrial)));
    assert!(matches!(confirm(&mut host), Err(ChangeError::NoTrial)));
    // Again, confirmed: it is in force, and the instance is still i-1.
    change_with(&FAKE, &mut host, "/root/new.yaml", doc2.as_bytes(), Some(Duration::from_secs(60)), now).unwrap();
    confirm(&mut host).unwrap();
    let shown = show(&host).unwrap();
    assert_eq!((shown.source.as_str(), shown.instance_id.as_str(), shown.trial_until), ("/root/new.yaml", "i-1", None));
    // The next boot keeps it (same instance, the source's old document
    // differs: not applied).
    let out = boot(&mut host, Some(DOC), Some("i-1"));
    assert_eq!(out.status.outcome, Outcome::ChangedNotApplied);
    assert_eq!(read(&dir, "/etc/hostname").as_deref(), Some("node2\n"));
    // An invalid document: refused, nothing changed.
    let before = snapshot(dir.path());
    match change_with(&FAKE, &mut host, "bad.yaml", b"invalid\n", None, now) {
        Err(ChangeError::Invalid(e)) => {
            assert_eq!(e[0].to_string(), "bad.yaml:1: key invalid: expected a string, found a list")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn a_trial_pending_at_boot_is_reverted_first() {
    let (dir, mut host) = machine();
    boot(&mut host, Some(DOC), Some("i-1"));
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_100);
    change_with(&FAKE, &mut host, "new", b"hostname node2\n", Some(Duration::from_secs(600)), now).unwrap();
    let out = boot(&mut host, Some(DOC), Some("i-1"));
    assert!(
        out.lines[0].starts_with(
            "user data: the configuration on trial was not confirmed before this boot: the last known good one is back"
        ),
        "{:#?}",
        out.lines
    );
    assert_eq!(out.status.outcome, Outcome::Unchanged);
    assert_eq!(read(&dir, "/etc/hostname").as_deref(), Some("node1\n"));
    assert_eq!(out.status.trial_until, None);
}

#[test]
fn a_power_cut_during_a_change_is_undone_at_the_next_boot() {
    let (dir, mut host) = machine();
    boot(&mut host, Some(DOC), Some("i-1"));
    let before = snapshot(dir.path());
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_100);
    {
        let mut faulty = Faulty::new(&mut host);
        // Past the backup (a few contents and the index), some changes made.
        faulty.ops_left = Some(12);
        assert!(change_with(&FAKE, &mut faulty, "new", b"hostname node2\nuser bob\nfile /etc/motd cut\n", None, now)
            .is_err());
    }
    assert!(dir.path().join("var/lib/berth/provision/backup/index.json").exists(), "the cut left the backup");
    let mut rebooted =
        FsHost { root: dir.path().to_path_buf(), runner: FakeRunner::default(), set_kernel_hostname: false };
    let out = boot(&mut rebooted, Some(DOC), Some("i-1"));
    assert!(out.lines[0].starts_with("user data: an apply was cut short (power loss or crash)"), "{:#?}", out.lines);
    assert_eq!(out.status.outcome, Outcome::Unchanged);
    assert_eq!(snapshot(dir.path()), before);
}

/// These use H1's reader (crate::check): they pass once it is merged.
mod with_the_real_reader {
    use super::*;

    #[test]
    fn a_cloud_config_document_is_applied_at_boot() {
        let (dir, mut host) = machine();
        let doc = "#cloud-config\nhostname: node1\nwrite_files:\n  - path: /etc/motd\n    content: hello\n";
        let out = at_boot(&mut host, probed(Some(doc), Some("i-1")), &facts());
        assert_eq!(out.status.outcome, Outcome::Applied, "{:#?}", out.lines);
        assert_eq!(read(&dir, "/etc/hostname").as_deref(), Some("node1\n"));
        assert_eq!(read(&dir, "/etc/motd").as_deref(), Some("hello"));
    }

    #[test]
    fn a_native_document_is_applied_by_config_apply() {
        let (dir, mut host) = machine();
        let doc = "#berth-config\nhostname = \"node2\"\n";
        let report = change(&mut host, "new.toml", doc.as_bytes(), None, UNIX_EPOCH).unwrap();
        assert_eq!(report.hostname.as_deref(), Some("node2"));
        assert_eq!(read(&dir, "/etc/hostname").as_deref(), Some("node2\n"));
        assert!(matches!(
            change(&mut host, "bad.toml", b"#berth-config\nhostname = [1]\n", None, UNIX_EPOCH),
            Err(ChangeError::Invalid(_))
        ));
    }

    /// H1's complete examples apply on the image, both formats the same,
    /// and a second apply changes nothing.
    #[test]
    fn the_complete_examples_apply_and_apply_again_changes_nothing() {
        for name in ["user-data.yaml", "user-data.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name);
            let doc = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let (dir, mut host) = machine();
            let report = change(&mut host, name, &doc, None, UNIX_EPOCH).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(report.hostname.as_deref(), Some("node-1"), "{name}");
            for unit in ["app", "app-legacy", "containerd", "etcd", "network", "ntp", "sshd", "updater", "user-runcmd"]
            {
                assert!(
                    report.units_changed.iter().any(|u| u == unit),
                    "{name}: {unit} not in {:?}",
                    report.units_changed
                );
            }
            assert!(read(&dir, "/etc/passwd").unwrap().contains("\nalice:x:1500:"), "{name}");
            let network = read(&dir, "/etc/berth/units/network.toml").unwrap();
            crate::testutil::assert_valid_unit("network", &network);
            assert!(network.contains("exec /usr/sbin/dhcpcd --nobackground eth1"), "{name}: {network}");
            let again = change(&mut host, name, &doc, None, UNIX_EPOCH).unwrap();
            assert!(again.changes.is_empty() && again.units_changed.is_empty(), "{name}: {again:#?}");
        }
    }
}
