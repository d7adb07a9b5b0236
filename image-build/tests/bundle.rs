//! The update bundle a build writes verifies with the keys the image itself
//! carries, and holds exactly the image's root slot and a signed UKI per
//! slot: installing it into the other slot gives that slot what
//! `berth.raw` has in root-a, and a UKI whose signed command line boots it.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_layout::disk::{self, Slot};
use berth_layout::gpt::Gpt;
use berth_layout::paths::{OS_RELEASE, UPDATE_KEYS_DIR};
use berth_updater::bundle::{open, uki_payload, KeyRing, ROOT_PAYLOAD};

/// The suite's image (BERTH_IMAGE_DIR), or a build of our own.
fn image_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BERTH_IMAGE_DIR") {
        if Path::new(&dir).join("last-bundle.txt").exists() {
            return PathBuf::from(dir);
        }
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = repo.join("target").join("berth-bundle-test");
    let status = Command::new(env!("CARGO_BIN_EXE_berth-image")).arg("build").arg("--out").arg(&out).status().unwrap();
    assert!(status.success(), "berth-image build --out {} failed", out.display());
    out
}

#[test]
fn the_bundle_verifies_with_the_image_keys_and_holds_its_root_slot_and_a_signed_uki_per_slot() {
    let out = image_dir();
    let name = std::fs::read_to_string(out.join("last-bundle.txt")).unwrap();
    let bundle = out.join(name.trim());
    let root_tree = out.join("work").join("root");
    let keys = KeyRing::load_dir(&root_tree.join(UPDATE_KEYS_DIR.trim_start_matches('/'))).unwrap();
    let os_release = std::fs::read_to_string(root_tree.join(OS_RELEASE.trim_start_matches('/'))).unwrap();
    let version = berth_layout::os_release::version_id(&os_release).unwrap();
    assert_eq!(name.trim(), format!("berth-{version}.bundle"));

    let mut b = open(File::open(&bundle).unwrap(), &keys).unwrap();
    let m = b.manifest().clone();
    assert_eq!((m.os_version.as_str(), m.architecture.as_str()), (version.as_str(), "x86_64"));
    let root_payload = m.payload(ROOT_PAYLOAD).unwrap().clone();
    let verity = root_payload.verity.clone().unwrap();
    let cmdline = std::fs::read_to_string(out.join("cmdline.txt")).unwrap();
    assert!(cmdline.contains(&format!(" {} {} ", verity.root_hash, verity.salt)), "{cmdline}");

    // The root payload is root-a of berth.raw, byte for byte.
    let mut root = Vec::new();
    b.payload(ROOT_PAYLOAD).unwrap().read_to_end(&mut root).unwrap();
    let (_, start, end) = disk::plan().into_iter().find(|(s, _, _)| s.label == disk::ROOT_A_LABEL).unwrap();
    assert!(root.len() as u64 <= end - start);
    let mut raw = File::open(out.join("berth.raw")).unwrap();
    raw.seek(SeekFrom::Start(start)).unwrap();
    let mut slot = vec![0u8; root.len()];
    raw.read_exact(&mut slot).unwrap();
    assert!(slot == root, "the bundle's root differs from root-a of berth.raw");

    // Slot A of berth.raw is named by its root, as its UKI expects.
    let gpt = Gpt::read(&mut File::open(out.join("berth.raw")).unwrap(), 512, disk::image_size()).unwrap();
    let root_a = gpt.by_name(disk::ROOT_A_LABEL).unwrap().unique_guid;
    assert_eq!(root_a, disk::root_partition_uuid(&verity.root_hash, Slot::A), "root-a's PARTUUID");

    for slot in [Slot::A, Slot::B] {
        let mut uki = Vec::new();
        b.payload(uki_payload(slot)).unwrap().read_to_end(&mut uki).unwrap();
        let file = out.join(format!("berth-{}.efi", slot.name()));
        assert!(uki == std::fs::read(&file).unwrap(), "payload {} is not {}", uki_payload(slot), file.display());
        let list = Command::new("sbverify").arg("--list").arg(&file).output().expect("running sbverify");
        let listed = String::from_utf8_lossy(&list.stdout);
        assert!(listed.contains("signature 1"), "sbverify finds no signature on {}:\n{listed}", file.display());
        // Its signed command line boots this slot from the partition
        // named by the root hash, with the root's verity geometry.
        let cmdline = uki_cmdline(&file);
        let partuuid = disk::root_partition_uuid(&verity.root_hash, slot);
        assert!(cmdline.contains(&format!("dm-mod.waitfor=PARTUUID={partuuid} ")), "{slot:?}: {cmdline}");
        assert!(cmdline.contains(&format!("berth.slot={}", slot.name())), "{slot:?}: {cmdline}");
        assert!(cmdline.contains(&format!(" {} {} ", verity.root_hash, verity.salt)), "{slot:?}: {cmdline}");
    }
    b.finish().unwrap();
}

/// The `.cmdline` section of a UKI (objcopy from binutils).
fn uki_cmdline(uki: &Path) -> String {
    let dir = std::env::temp_dir().join(format!("berth-bundle-uki-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (copy, section) = (dir.join("uki.efi"), dir.join("cmdline"));
    std::fs::copy(uki, &copy).unwrap();
    let st = Command::new("objcopy")
        .args(["-O", "binary", "--only-section=.cmdline"])
        .arg(&copy)
        .arg(&section)
        .status()
        .expect("running objcopy");
    assert!(st.success(), "objcopy could not extract .cmdline from {}", uki.display());
    let text = std::fs::read_to_string(&section).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    text.trim_end_matches('\0').trim().to_string()
}
