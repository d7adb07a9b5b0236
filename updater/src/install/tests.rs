use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_layout::cmdline::{Verity, VERITY_BLOCK};
use berth_layout::disk::{root_partition_uuid, Slot};
use berth_layout::Guid;
use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};

use super::*;
use crate::boot_entry::{entry_text, uki_entry_text};
use crate::bundle::{
    generate_dev_keypair, measure, sign, KeyRing, Manifest, Payload, VerityGeometry, FORMAT_VERSION, ROOT_PAYLOAD,
    UKI_PAYLOADS,
};
use crate::state::FileOp;

const PART: u64 = 64 * 1024;

/// A fresh directory, removed when the returned guard drops.
fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("berth-install-{name}-")).tempdir().unwrap()
}

struct Bundle {
    bytes: Vec<u8>,
    root: Vec<u8>,
    /// The UKIs of slot a and slot b.
    ukis: [Vec<u8>; 2],
}

impl Bundle {
    /// Slot b's UKI: what an install from a machine booted in a writes.
    fn uki_b(&self) -> &[u8] {
        &self.ukis[1]
    }
}

/// The verity root hash of the test bundles' root.
fn root_hash() -> String {
    "ab".repeat(32)
}

fn payloads(seed: u8) -> (Vec<u8>, [Vec<u8>; 2]) {
    let root = (0..6 * VERITY_BLOCK).map(|i| (i % 251) as u8 ^ seed).collect();
    let uki = |n: u32| (0..10_000u32 + n).map(|i| (i % 13) as u8 ^ seed ^ n as u8).collect();
    (root, [uki(0), uki(1)])
}

fn make_bundle(key: &SigningKey, version: &str, arch: &str, min_from: &str, root: Vec<u8>) -> Bundle {
    let (_, ukis) = payloads(1);
    let (rs, rh) = measure(root.as_slice()).unwrap();
    let verity = Verity { data_blocks: 4, hash_start_block: 5, root_hash: root_hash(), salt: "cd".repeat(32) };
    let mut payloads = vec![Payload {
        name: ROOT_PAYLOAD.into(),
        offset: 0,
        size: rs,
        sha256: rh,
        verity: Some(VerityGeometry::from(&verity)),
    }];
    let mut offset = rs;
    for (name, uki) in UKI_PAYLOADS.iter().zip(&ukis) {
        let (size, sha256) = measure(uki.as_slice()).unwrap();
        payloads.push(Payload { name: name.to_string(), offset, size, sha256, verity: None });
        offset += size;
    }
    let m = Manifest {
        format_version: FORMAT_VERSION,
        os_version: version.into(),
        architecture: arch.into(),
        min_from_version: min_from.into(),
        payloads,
    };
    let mut bytes = Vec::new();
    let [a, b] = &ukis;
    sign(&m, &mut [&mut root.as_slice(), &mut a.as_slice(), &mut b.as_slice()], key, &mut bytes).unwrap();
    Bundle { bytes, root, ukis }
}

fn good(key: &SigningKey, version: &str) -> Bundle {
    make_bundle(key, version, std::env::consts::ARCH, "0.1.0", payloads(7).0)
}

fn ring(key: &SigningKey) -> KeyRing {
    let mut r = KeyRing::new();
    r.add(key.verifying_key());
    r
}

fn options(slot: Slot) -> String {
    format!("dm-mod.waitfor=PARTUUID={} root=/dev/dm-0 ro berth.slot={}", fake_partuuid(slot), slot.name())
}

/// Booted 0.1.0 (blessed) in A; 0.0.9 (blessed) in B, whose partition is
/// filled with 0xAA and whose kernel is "old b kernel": a disk from before
/// UKIs (bare kernels with the command line in the entry), which an
/// install moves to UKIs slot by slot.
fn machine(dir: &Path) -> FakeTarget {
    let fake = FakeTarget::new(dir, Slot::A, PART).unwrap();
    let esp = fake.esp_dir();
    fs::write(esp.join("loader/entries/berth-0.1.0.conf"), entry_text("0.1.0", Slot::A, &options(Slot::A))).unwrap();
    fs::write(esp.join("loader/entries/berth-0.0.9.conf"), entry_text("0.0.9", Slot::B, &options(Slot::B))).unwrap();
    for slot in [Slot::A, Slot::B] {
        fs::create_dir_all(esp.join(format!("berth/{}", slot.name()))).unwrap();
        fs::write(esp.join(format!("berth/{}/linux.efi", slot.name())), format!("old {} kernel", slot.name())).unwrap();
    }
    fs::write(fake.partition_path(Slot::B), vec![0xAA; PART as usize]).unwrap();
    fake
}

/// What a user could notice: slot B's bytes and every file on the ESP.
fn snapshot(fake: &FakeTarget) -> (String, BTreeMap<String, Vec<u8>>) {
    let slot = hex(&Sha256::digest(fs::read(fake.partition_path(Slot::B)).unwrap()));
    let mut files = BTreeMap::new();
    let mut stack = vec![fake.esp_dir()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(fake.esp_dir()).unwrap().to_string_lossy().into_owned();
                files.insert(rel, fs::read(&p).unwrap());
            }
        }
    }
    (slot, files)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn ctx() -> InstallContext {
    InstallContext::new("0.1.0")
}

fn write_file(dir: &Path, b: &Bundle) -> PathBuf {
    let p = dir.join("bundle");
    fs::write(&p, &b.bytes).unwrap();
    p
}

fn run_file(
    fake: &mut FakeTarget,
    path: &Path,
    keys: &KeyRing,
    ctx: &InstallContext,
) -> Result<Installed, InstallError> {
    let state = load_state(fake).unwrap();
    install_file(path, keys, ctx, state, fake, &mut |_| {})
}

fn entry_names(fake: &mut FakeTarget) -> Vec<String> {
    fake.entries().unwrap().into_iter().map(|(n, _)| n).collect()
}

#[test]
fn a_good_install_writes_the_slot_names_it_writes_its_uki_and_the_entry_last() {
    let tmp = temp_dir("good");
    let dir = tmp.path().to_path_buf();
    let key = generate_dev_keypair();
    let b = good(&key, "0.2.0");
    let path = write_file(&dir, &b);
    let mut fake = machine(&dir.join("disk"));
    let mut steps = Vec::new();
    let state = load_state(&mut fake).unwrap();
    let done = install_file(&path, &ring(&key), &ctx(), state, &mut fake, &mut |p| steps.push(p)).unwrap();

    assert_eq!((done.version.as_str(), done.slot, done.entry_file.as_str()), ("0.2.0", Slot::B, "berth-0.2.0+3.conf"));
    assert_eq!(done.bytes, (b.root.len() + b.uki_b().len()) as u64);
    assert_eq!(entry_names(&mut fake), ["berth-0.1.0.conf", "berth-0.2.0+3.conf"]);
    let text = fs::read_to_string(fake.esp_dir().join("loader/entries/berth-0.2.0+3.conf")).unwrap();
    assert_eq!(text, uki_entry_text("0.2.0", Slot::B), "the entry boots slot b's UKI, no options");
    assert_eq!(fs::read(fake.esp_dir().join("berth/b/berth.efi")).unwrap(), b.uki_b(), "slot b's UKI, not a's");
    assert!(!fake.esp_dir().join("berth/b/linux.efi").exists(), "the slot's old bare kernel is gone");
    assert_eq!(fs::read(fake.esp_dir().join("berth/a/linux.efi")).unwrap(), b"old a kernel");
    // The partition is named as the UKI's signed command line expects.
    assert_eq!(fake.partuuid(Slot::B).unwrap(), root_partition_uuid(&root_hash(), Slot::B));
    assert_eq!(fake.partuuid(Slot::A).unwrap(), fake_partuuid(Slot::A), "the booted slot keeps its name");
    let part = fs::read(fake.partition_path(Slot::B)).unwrap();
    assert_eq!(&part[..b.root.len()], b.root.as_slice());
    assert!(part[b.root.len()..].iter().all(|x| *x == 0xAA), "bytes past the payload are left alone");
    assert!(fs::read(fake.partition_path(Slot::A)).unwrap().iter().all(|x| *x == 0), "the booted slot is untouched");
    let (_, files) = snapshot(&fake);
    assert!(!files.keys().any(|f| f.contains(".tmp")), "{:?}", files.keys());

    // Progress goes through the steps in order and ends at done.
    let mut order: Vec<Step> = steps.iter().map(|p| p.step).collect();
    order.dedup();
    assert_eq!(order, Step::ALL.to_vec());
    let root = steps.iter().rfind(|p| p.step == Step::WriteRoot).unwrap();
    assert_eq!((root.done, root.total), (b.root.len() as u64, b.root.len() as u64));

    // The new state loads back: slot B counts its tries.
    let s = load_state(&mut fake).unwrap();
    assert_eq!(s.entry(Slot::B).unwrap().name.tries_left, Some(3));
}

#[test]
fn the_plan_is_applied_in_the_order_abstate_gives() {
    let tmp = temp_dir("order");
    let dir = tmp.path().to_path_buf();
    let key = generate_dev_keypair();
    let b = good(&key, "0.2.0");
    let mut fake = machine(&dir.join("disk"));
    let mut state = load_state(&mut fake).unwrap();
    let mut staged = state.clone();
    staged.stage("0.2.0", Slot::B).unwrap();
    let plan = staged.plan();
    assert!(matches!(&plan[..], [FileOp::Remove { .. }, FileOp::WritePayload { .. }, FileOp::Write { .. }]));
    state = load_state(&mut fake).unwrap();
    install(b.bytes.as_slice(), &ring(&key), &ctx(), state, &mut fake, &mut |_| {}).unwrap();
    assert_eq!(
        fake.log,
        [
            "remove loader/entries/berth-0.0.9.conf",
            "sync-esp",
            "write-partition b",
            "sync-partition b",
            "read-partition b",
            &format!("set-partuuid b {}", root_partition_uuid(&root_hash(), Slot::B)),
            "remove berth/b/berth.efi",
            "remove berth/b/linux.efi",
            "write berth/b/.berth.efi.tmp",
            "rename berth/b/.berth.efi.tmp -> berth/b/berth.efi",
            "sync-esp",
            "write loader/entries/.berth-b.conf.tmp",
            "rename loader/entries/.berth-b.conf.tmp -> loader/entries/berth-0.2.0+3.conf",
            "sync-esp",
        ]
    );
}

#[test]
fn each_refusal_leaves_the_slot_and_the_esp_unchanged() {
    let tmp = temp_dir("refusals");
    let dir = tmp.path().to_path_buf();
    let key = generate_dev_keypair();
    let keys = ring(&key);
    let mut flipped = good(&key, "0.2.0");
    let at = flipped.bytes.len() - flipped.ukis[0].len() - flipped.ukis[1].len() - 100; // inside the root payload
    flipped.bytes[at] ^= 1;
    let failed = InstallContext { failed_versions: vec!["0.2.0".into()], ..ctx() };
    type Case<'a> = (&'a str, Bundle, InstallContext, &'a dyn Fn(&InstallError) -> bool);
    let cases: Vec<Case> = vec![
        (
            "arch",
            make_bundle(&key, "0.2.0", "sparc64", "0.1.0", payloads(7).0),
            ctx(),
            &|e| matches!(e, InstallError::Architecture { bundle, .. } if bundle == "sparc64"),
        ),
        (
            "downgrade",
            good(&key, "0.0.5"),
            ctx(),
            &|e| matches!(e, InstallError::Downgrade { version, booted } if version == "0.0.5" && booted == "0.1.0"),
        ),
        ("same", good(&key, "0.1.0"), InstallContext { force: true, ..ctx() }, &|e| {
            matches!(e, InstallError::SameVersion { .. })
        }),
        (
            "min-from",
            make_bundle(&key, "0.3.0", std::env::consts::ARCH, "0.2.0", payloads(7).0),
            ctx(),
            &|e| matches!(e, InstallError::BootedTooOld { min_from, booted, .. } if min_from == "0.2.0" && booted == "0.1.0"),
        ),
        ("failed-here", good(&key, "0.2.0"), failed, &|e| matches!(e, InstallError::FailedHere { .. })),
        ("build-metadata", good(&key, "0.2.0+git1"), ctx(), &|e| matches!(e, InstallError::BadVersion { .. })),
        ("unknown-key", good(&generate_dev_keypair(), "0.2.0"), ctx(), &|e| {
            matches!(e, InstallError::Bundle(crate::bundle::BundleError::UnknownKey { .. }))
        }),
        (
            "too-large",
            make_bundle(&key, "0.2.0", std::env::consts::ARCH, "0.1.0", vec![1; PART as usize + 4096]),
            ctx(),
            &|e| matches!(e, InstallError::PayloadTooLarge { slot: "b", .. }),
        ),
        (
            "flipped-byte",
            flipped,
            ctx(),
            &|e| matches!(e, InstallError::Bundle(crate::bundle::BundleError::PayloadDigest { name, .. }) if name == "root"),
        ),
    ];
    for (name, bundle, ctx, expected) in cases {
        let mut fake = machine(&dir.join(name));
        let before = snapshot(&fake);
        let path = write_file(&dir.join(name), &bundle);
        let e = run_file(&mut fake, &path, &keys, &ctx).unwrap_err();
        assert!(expected(&e), "{name}: {e}");
        assert_eq!(e.step(), None, "{name}: a refusal, not a stop: {e}");
        assert_eq!(snapshot(&fake), before, "{name}");
        assert!(fake.log.is_empty(), "{name}: {:?}", fake.log);
        // A stream is refused the same way, except for the flipped byte (below).
        if name != "flipped-byte" {
            let state = load_state(&mut fake).unwrap();
            assert!(install(bundle.bytes.as_slice(), &keys, &ctx, state, &mut fake, &mut |_| {}).is_err());
            assert_eq!(snapshot(&fake), before, "{name} (stream)");
        }
    }
}

#[test]
fn force_installs_a_downgrade_and_a_version_that_failed() {
    let tmp = temp_dir("force");
    let dir = tmp.path().to_path_buf();
    let key = generate_dev_keypair();
    let forced = InstallContext { force: true, failed_versions: vec!["0.0.5".into()], ..ctx() };
    let mut fake = machine(&dir.join("disk"));
    let path = write_file(&dir, &good(&key, "0.0.5"));
    let done = run_file(&mut fake, &path, &ring(&key), &forced).unwrap();
    assert_eq!(done.entry_file, "berth-0.0.5+3.conf");
    // systemd-boot tries the newest good entry first: the booted, newer one
    // is marked bad so the older version boots next (and it is still the
    // last resort if that fails).
    assert_eq!(entry_names(&mut fake), ["berth-0.0.5+3.conf", "berth-0.1.0+0.conf"]);
}

#[test]
fn an_unblessed_boot_is_not_updated() {
    let tmp = temp_dir("unblessed");
    let dir = tmp.path().to_path_buf();
    let key = generate_dev_keypair();
    let mut fake = machine(&dir.join("disk"));
    let esp = fake.esp_dir().join("loader/entries");
    fs::rename(esp.join("berth-0.1.0.conf"), esp.join("berth-0.1.0+2-1.conf")).unwrap();
    let before = snapshot(&fake);
    let path = write_file(&dir, &good(&key, "0.2.0"));
    let e = run_file(&mut fake, &path, &ring(&key), &ctx()).unwrap_err();
    assert!(matches!(e, InstallError::State(crate::state::TransitionError::BootedNotBlessed(_))), "{e}");
    assert_eq!(snapshot(&fake), before);
}

#[test]
fn a_flipped_byte_in_a_stream_stops_with_no_entry_for_the_slot() {
    let tmp = temp_dir("stream-flip");
    let dir = tmp.path().to_path_buf();
    let key = generate_dev_keypair();
    let mut b = good(&key, "0.2.0");
    let at = b.bytes.len() - b.ukis[0].len() - b.ukis[1].len() - 100;
    b.bytes[at] ^= 1;
    let mut fake = machine(&dir.join("disk"));
    let state = load_state(&mut fake).unwrap();
    let e = install(b.bytes.as_slice(), &ring(&key), &ctx(), state, &mut fake, &mut |_| {}).unwrap_err();
    assert_eq!(e.step(), Some(Step::WriteRoot), "{e}");
    assert!(e.to_string().contains("no boot entry points at a half-written slot b"), "{e}");
    assert_eq!(entry_names(&mut fake), ["berth-0.1.0.conf"]);
    // And the next install succeeds.
    let good = good(&key, "0.2.0");
    let state = load_state(&mut fake).unwrap();
    install(good.bytes.as_slice(), &ring(&key), &ctx(), state, &mut fake, &mut |_| {}).unwrap();
    assert_eq!(entry_names(&mut fake), ["berth-0.1.0.conf", "berth-0.2.0+3.conf"]);
}

#[test]
fn a_failure_at_each_step_leaves_no_entry_for_the_other_slot_and_a_new_install_succeeds() {
    let tmp = temp_dir("failures");
    let dir = tmp.path().to_path_buf();
    let key = generate_dev_keypair();
    let keys = ring(&key);
    let b = good(&key, "0.2.0");
    let path = write_file(&dir, &b);
    let cases: [(FakeOp, &str, Step); 10] = [
        (FakeOp::EspRemove, "berth-0.0.9", Step::RemoveEntry),
        (FakeOp::EspSync, "esp", Step::RemoveEntry),
        (FakeOp::PartitionWrite, "b", Step::WriteRoot),
        (FakeOp::PartitionSync, "b", Step::WriteRoot),
        (FakeOp::PartitionRead, "b", Step::ReadBack),
        (FakeOp::SetPartuuid, "b", Step::NamePartition),
        (FakeOp::EspWrite, "berth.efi", Step::WriteUki),
        (FakeOp::EspRename, "berth.efi", Step::RenameUki),
        (FakeOp::EspWrite, ".berth-b", Step::WriteEntry),
        (FakeOp::EspRename, "+3.conf", Step::RenameEntry),
    ];
    for (i, (op, matching, step)) in cases.into_iter().enumerate() {
        let disk = dir.join(format!("disk{i}"));
        let mut fake = machine(&disk);
        fake.fail_at(op, matching);
        let e = run_file(&mut fake, &path, &keys, &ctx()).unwrap_err();
        assert_eq!(e.step(), Some(step), "{op:?}: {e}");
        let names = entry_names(&mut fake);
        assert!(!names.iter().any(|n| n.contains("0.2.0")), "{op:?}: {names:?}");
        if names.iter().any(|n| n.contains("0.0.9")) {
            // Only when the removal itself failed: then the slot is untouched.
            assert_eq!(step, Step::RemoveEntry);
            assert!(fs::read(fake.partition_path(Slot::B)).unwrap().iter().all(|x| *x == 0xAA));
        }
        assert!(names.contains(&"berth-0.1.0.conf".to_string()), "the booted entry stays: {names:?}");

        // The machine reboots (a new target over the same disk) and installs again.
        let mut fake = FakeTarget::new(&disk, Slot::A, PART).unwrap();
        run_file(&mut fake, &path, &keys, &ctx()).unwrap();
        assert_eq!(entry_names(&mut fake), ["berth-0.1.0.conf", "berth-0.2.0+3.conf"], "{op:?}");
        assert_eq!(fs::read(fake.esp_dir().join("berth/b/berth.efi")).unwrap(), b.uki_b());
    }
}

#[test]
fn a_bad_read_back_stops_before_the_name_the_uki_and_the_entry() {
    let tmp = temp_dir("readback");
    let dir = tmp.path().to_path_buf();
    let key = generate_dev_keypair();
    let path = write_file(&dir, &good(&key, "0.2.0"));
    let mut fake = machine(&dir.join("disk"));
    fake.corrupt_next_write();
    let e = run_file(&mut fake, &path, &ring(&key), &ctx()).unwrap_err();
    assert_eq!(e.step(), Some(Step::ReadBack), "{e}");
    assert!(
        matches!(&e, InstallError::Stopped { source, .. } if matches!(**source, InstallError::ReadBack { slot: "b", .. }))
    );
    assert_eq!(entry_names(&mut fake), ["berth-0.1.0.conf"]);
    assert_eq!(fs::read(fake.esp_dir().join("berth/b/linux.efi")).unwrap(), b"old b kernel");
    assert!(!fake.esp_dir().join("berth/b/berth.efi").exists());
    assert_eq!(fake.partuuid(Slot::B).unwrap(), fake_partuuid(Slot::B), "not renamed after a bad read-back");
}

#[test]
fn the_booted_slot_is_never_written() {
    let tmp = temp_dir("booted");
    let dir = tmp.path().to_path_buf();
    let mut fake = machine(&dir.join("disk"));
    assert!(matches!(fake.write_partition(Slot::A, 0, b"x"), Err(TargetError::BootedSlot { slot: "a" })));
    assert!(matches!(fake.write_partition(Slot::B, PART - 1, b"xy"), Err(TargetError::OutOfRange { .. })));
    assert!(matches!(fake.esp_write("../escape", &mut &b""[..]), Err(TargetError::BadPath(_))));
    let booted_name = fake_partuuid(Slot::A);
    assert!(matches!(fake.set_partuuid(Slot::A, Guid::derive("x")), Err(TargetError::BootedSlot { .. })));
    assert!(matches!(fake.set_partuuid(Slot::B, booted_name), Err(TargetError::BootedSlot { .. })));
}

#[test]
fn pause_before_stops_at_that_step_for_good() {
    let tmp = temp_dir("pause");
    let dir = tmp.path().to_path_buf();
    let key = generate_dev_keypair();
    let b = good(&key, "0.2.0");
    let path = write_file(&dir, &b);
    let disk = dir.join("disk");
    let mut fake = machine(&disk);
    let uki = fake.esp_dir().join("berth/b/berth.efi");
    let paused = InstallContext { pause_before: Some(Step::WriteEntry), ..ctx() };
    let keys = ring(&key);
    std::thread::spawn(move || run_file(&mut fake, &path, &keys, &paused));
    // The thread writes the slot and the UKI, then sleeps for good.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while fs::read(&uki).ok().as_deref() != Some(b.uki_b()) {
        assert!(std::time::Instant::now() < deadline, "the UKI was never written");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut look = FakeTarget::new(&disk, Slot::A, PART).unwrap();
    assert_eq!(entry_names(&mut look), ["berth-0.1.0.conf"], "paused before the entry: a power cut here boots slot a");
}

#[test]
fn pause_mid_stream_stops_with_part_of_the_root_written() {
    let tmp = temp_dir("pause-mid");
    let dir = tmp.path().to_path_buf();
    let key = generate_dev_keypair();
    let b = good(&key, "0.2.0");
    let path = write_file(&dir, &b);
    let disk = dir.join("disk");
    let mut fake = machine(&disk);
    let uki = fake.esp_dir().join("berth/b/berth.efi");
    let (step, percent) = parse_pause_point("write-root@50").unwrap();
    let paused = InstallContext { pause_before: Some(step), pause_percent: percent, ..ctx() };
    let keys = ring(&key);
    let progress = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = progress.clone();
    std::thread::spawn(move || {
        let mut p = |p: Progress| seen.lock().unwrap().push(p);
        let _ = install_file(&path, &keys, &paused, load_state(&mut fake).unwrap(), &mut fake, &mut p);
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let last = progress.lock().unwrap().last().copied();
        if let Some(p) = last.filter(|p| p.step == Step::WriteRoot && p.done > 0) {
            std::thread::sleep(Duration::from_millis(300));
            let p2 = *progress.lock().unwrap().last().unwrap();
            assert_eq!(p, p2, "the install went on after the pause");
            // The test root is one write chunk: the pause comes after it, before the read-back.
            assert!(p.done * 2 >= p.total, "paused at {} of {}", p.done, p.total);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the root was never written");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_ne!(fs::read(&uki).ok().as_deref(), Some(b.uki_b()), "paused in the root: the new UKI is not written yet");
}

#[test]
fn pause_points_parse() {
    assert_eq!(parse_pause_point("rename-entry"), Ok((Step::RenameEntry, None)));
    assert_eq!(parse_pause_point("write-root@50"), Ok((Step::WriteRoot, Some(50))));
    for bad in ["write-root@0", "write-root@100", "write-uki@5", "write-kernel", "nowhere", "write-root@x"] {
        assert!(parse_pause_point(bad).is_err(), "{bad}");
    }
}

#[test]
fn apply_renames_and_reads_back_and_refuses_payloads() {
    let tmp = temp_dir("apply");
    let dir = tmp.path().to_path_buf();
    let mut fake = FakeTarget::new(&dir, Slot::B, PART).unwrap();
    let esp = fake.esp_dir().join("loader/entries");
    fs::write(esp.join("berth-0.1.0.conf"), entry_text("0.1.0", Slot::A, &options(Slot::A))).unwrap();
    fs::write(esp.join("berth-0.2.0+2-1.conf"), entry_text("0.2.0", Slot::B, &options(Slot::B))).unwrap();
    let mut state = load_state(&mut fake).unwrap();
    state.bless().unwrap();
    apply(&state.plan(), &mut fake).unwrap();
    assert_eq!(entry_names(&mut fake), ["berth-0.1.0.conf", "berth-0.2.0.conf"]);
    assert_eq!(fake.log, ["rename loader/entries/berth-0.2.0+2-1.conf -> loader/entries/berth-0.2.0.conf", "sync-esp"]);

    let plan = [FileOp::WritePayload { slot: Slot::A, version: "9".into() }];
    assert!(matches!(apply(&plan, &mut fake), Err(ApplyError::NeedsBundle { .. })));

    let mut state = load_state(&mut fake).unwrap();
    state.rollback().unwrap();
    fake.fail_at(FakeOp::EspRename, "berth-0.2.0+0");
    let e = apply(&state.plan(), &mut fake).unwrap_err();
    assert!(e.to_string().contains("berth-0.2.0.conf"), "{e}");
}

#[test]
fn step_names_are_stable_and_parse() {
    let names: Vec<&str> = Step::ALL.iter().map(|s| s.name()).collect();
    assert_eq!(
        names,
        [
            "verify",
            "remove-entry",
            "write-root",
            "read-back",
            "name-partition",
            "write-uki",
            "rename-uki",
            "write-entry",
            "rename-entry",
            "done"
        ]
    );
    for s in Step::ALL {
        assert_eq!(s.name().parse::<Step>(), Ok(s));
    }
    assert!("write-everything".parse::<Step>().is_err());
}
