//! The real target over a fake sysfs tree and disk image files in a temp
//! dir (no root, no real devices; mounting the ESP is not exercised here).

use std::fs;
use std::path::Path;

use berth_layout::disk::{partition_uuid, DATA_TYPE, ESP_TYPE, ROOT_X86_64_TYPE};
use berth_layout::gpt::Gpt;
use berth_layout::Guid;

use super::*;

const MIB: u64 = 2048; // sectors

/// A fresh directory, removed when the returned guard drops.
fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("berth-system-{name}-")).tempdir().unwrap()
}

/// A Berth-shaped disk `name` with its partitions as separate "device"
/// files (vdaN) and its sysfs entries.
fn disk(root: &Path, name: &str, version: &str) {
    let (sys, dev) = (root.join("sys"), root.join("dev"));
    let mut gpt = Gpt::new(Guid::derive(version), 512, 16 * MIB);
    let parts = [
        ("esp", ESP_TYPE, MIB, 2 * MIB - 1),
        ("root-a", ROOT_X86_64_TYPE, 2 * MIB, 4 * MIB - 1),
        ("root-b", ROOT_X86_64_TYPE, 4 * MIB, 6 * MIB - 1),
        ("data", DATA_TYPE, 6 * MIB, 8 * MIB - 1),
    ];
    for (label, ty, first, last) in parts {
        gpt.add(label, ty, partition_uuid(version, label), first, last).unwrap();
    }
    fs::create_dir_all(&dev).unwrap();
    let mut f = fs::File::create(dev.join(name)).unwrap();
    f.set_len(16 * MIB * 512).unwrap();
    gpt.write(&mut f).unwrap();
    let d = sys.join(name);
    fs::create_dir_all(d.join("queue")).unwrap();
    fs::write(d.join("size"), format!("{}\n", 16 * MIB)).unwrap();
    fs::write(d.join("queue/logical_block_size"), "512\n").unwrap();
    for (i, (_, _, first, last)) in parts.iter().enumerate() {
        let p = format!("{name}{}", i + 1);
        fs::create_dir_all(d.join(&p)).unwrap();
        fs::write(d.join(&p).join("partition"), format!("{}\n", i + 1)).unwrap();
        fs::create_dir_all(sys.join(&p)).unwrap();
        fs::write(sys.join(&p).join("partition"), format!("{}\n", i + 1)).unwrap();
        fs::write(dev.join(&p), vec![0u8; ((last - first + 1) * 512) as usize]).unwrap();
    }
}

fn cmdline(version: &str, slot: Slot) -> String {
    let g = partition_uuid(version, slot.label());
    format!("dm-mod.create=\"root,,,ro,0 8 verity 1 PARTUUID={g} PARTUUID={g} 4096\" dm-mod.waitfor=PARTUUID={g} root=/dev/dm-0 berth.slot={}", slot.name())
}

#[test]
fn finds_the_boot_disk_among_others_by_the_booted_partuuid() {
    let tmp = temp_dir("find");
    let root = tmp.path().to_path_buf();
    disk(&root, "vda", "9.9.9");
    disk(&root, "vdb", "0.1.0");
    fs::create_dir_all(root.join("sys/dm-0")).unwrap();
    let found = find_boot_disk_in(&root.join("sys"), &root.join("dev"), &cmdline("0.1.0", Slot::A)).unwrap();
    assert_eq!(found.name, "vdb");
    let b = slot_partition(&found.gpt, Slot::B).unwrap();
    assert_eq!(b.unique_guid, partition_uuid("0.1.0", "root-b"));
    let dev = partition_device_in(&root.join("sys"), &root.join("dev"), "vdb", b.number()).unwrap();
    assert_eq!(dev, root.join("dev/vdb3"));

    let e = find_boot_disk_in(&root.join("sys"), &root.join("dev"), &cmdline("5.5.5", Slot::A)).unwrap_err();
    assert!(matches!(e, SystemError::BootDiskNotFound { .. }), "{e}");
    assert!(e.to_string().contains("vda (no matching root partition)"), "{e}");
    assert!(matches!(find_boot_disk_in(&root.join("sys"), &root.join("dev"), "quiet"), Err(SystemError::NoPartuuid)));

    disk(&root, "vdc", "0.1.0");
    let e = find_boot_disk_in(&root.join("sys"), &root.join("dev"), &cmdline("0.1.0", Slot::A)).unwrap_err();
    assert!(matches!(e, SystemError::Ambiguous { .. }), "two disks of one image: {e}");
    // The root's verity device sits on vdc2: vdc is the boot disk.
    fs::create_dir_all(root.join("sys/dm-0/slaves/vdc2")).unwrap();
    let found = find_boot_disk_in(&root.join("sys"), &root.join("dev"), &cmdline("0.1.0", Slot::A)).unwrap();
    assert_eq!(found.name, "vdc");
}

#[test]
fn the_real_target_writes_only_the_other_slot() {
    let tmp = temp_dir("target");
    let root = tmp.path().to_path_buf();
    disk(&root, "vda", "0.1.0");
    let efivars = root.join("efivars");
    fs::create_dir_all(&efivars).unwrap();
    fs::write(efivars.join(format!("LoaderEntrySelected-{LOADER_VENDOR_GUID}")), [7, 0, 0, 0, b'x', 0]).unwrap();
    let mut t = RealTarget::open_in(
        &cmdline("0.1.0", Slot::A),
        &root.join("sys"),
        &root.join("dev"),
        &root.join("esp"),
        &efivars,
    )
    .unwrap();
    assert_eq!(t.partuuid(Slot::B).unwrap(), partition_uuid("0.1.0", "root-b"));
    assert_eq!(t.partition_size(Slot::B).unwrap(), 2 * MIB * 512);
    t.write_partition(Slot::B, 4096, b"new root").unwrap();
    t.sync_partition(Slot::B).unwrap();
    let mut back = [0u8; 8];
    t.read_partition(Slot::B, 4096, &mut back).unwrap();
    assert_eq!(&back, b"new root");
    assert_eq!(&fs::read(root.join("dev/vda3")).unwrap()[4096..4104], b"new root");
    assert!(matches!(t.write_partition(Slot::A, 0, b"x"), Err(TargetError::BootedSlot { slot: "a" })));
    assert!(matches!(t.write_partition(Slot::B, 2 * MIB * 512 - 1, b"xy"), Err(TargetError::OutOfRange { .. })));
    assert!(fs::read(root.join("dev/vda2")).unwrap().iter().all(|b| *b == 0));
    assert_eq!(t.efi_var("LoaderEntrySelected").unwrap(), Some(vec![7, 0, 0, 0, b'x', 0]));
    assert_eq!(t.efi_var("LoaderBootCountPath").unwrap(), None);
}

#[test]
fn version_id_is_read_from_os_release() {
    assert_eq!(version_id("NAME=Berth\nVERSION_ID=\"0.2.0\"\n").as_deref(), Some("0.2.0"));
    assert_eq!(version_id("VERSION_ID=0.1.0").as_deref(), Some("0.1.0"));
    assert_eq!(version_id("NAME=Berth\n"), None);
}

/// Naming the other slot rewrites both tables of the boot disk (a fresh
/// read finds the GUID in the primary and, with the primary gone, in the
/// backup), leaves every other field alone, and never renames the booted slot.
#[test]
fn naming_the_other_slot_rewrites_both_tables_and_nothing_else() {
    let tmp = temp_dir("name");
    let root = tmp.path().to_path_buf();
    disk(&root, "vda", "0.1.0");
    let mut t = RealTarget::open_in(
        &cmdline("0.1.0", Slot::A),
        &root.join("sys"),
        &root.join("dev"),
        &root.join("esp"),
        &root.join("efivars"),
    )
    .unwrap();
    let path = root.join("dev/vda");
    let before = Gpt::read(&mut fs::File::open(&path).unwrap(), 512, 16 * MIB * 512).unwrap();
    let name = Guid::derive("root hash of 0.2.0");
    t.set_partuuid(Slot::B, name).unwrap();
    assert_eq!(t.partuuid(Slot::B).unwrap(), name);

    let after = Gpt::read(&mut fs::File::open(&path).unwrap(), 512, 16 * MIB * 512).unwrap();
    let mut expected = before.clone();
    expected.partitions.iter_mut().find(|p| p.name == "root-b").unwrap().unique_guid = name;
    assert_eq!(after, expected, "only root-b's GUID changed");
    // The backup table says the same: wipe the primary header and read again.
    let mut bytes = fs::read(&path).unwrap();
    bytes[512..1024].fill(0);
    fs::write(&path, &bytes).unwrap();
    let backup = Gpt::read(&mut fs::File::open(&path).unwrap(), 512, 16 * MIB * 512).unwrap();
    assert_eq!(backup.partitions, expected.partitions, "the backup table holds the new name too");

    let booted = partition_uuid("0.1.0", "root-a");
    assert!(matches!(t.set_partuuid(Slot::A, Guid::derive("x")), Err(TargetError::BootedSlot { slot: "a" })));
    assert!(matches!(t.set_partuuid(Slot::B, booted), Err(TargetError::BootedSlot { .. })));
}

#[test]
fn the_esp_is_mounted_by_its_first_user_and_unmounted_by_its_last() {
    let (esp, other) = (Path::new("/run/berth/esp"), Path::new("/tmp/esp"));
    let mut users = std::collections::BTreeMap::new();
    // A bless, then a status query while it reads: one mount.
    assert!(esp_acquire(&mut users, esp), "the first user mounts");
    assert!(!esp_acquire(&mut users, esp), "the second finds it mounted");
    assert!(esp_acquire(&mut users, other), "another mount point is counted apart");
    // The status query is done first: the bless still reads.
    assert!(!esp_release_user(&mut users, esp), "unmounted under the other user");
    assert!(esp_release_user(&mut users, esp), "the last user unmounts");
    assert!(esp_release_user(&mut users, other));
    assert!(users.is_empty(), "{users:?}");
    // A mount point nobody counted (a release after a failed unmount was
    // counted again, then dropped): unmounted.
    assert!(esp_release_user(&mut users, esp));
}
