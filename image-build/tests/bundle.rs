//! The update bundle a build writes verifies with the keys the image itself
//! carries, and holds exactly the image's root slot and kernel: installing
//! it into the other slot gives that slot what `berth.raw` has in root-a.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_layout::disk;
use berth_layout::paths::{OS_RELEASE, UPDATE_KEYS_DIR};
use berth_updater::bundle::{open, KeyRing, KERNEL_PAYLOAD, ROOT_PAYLOAD};

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
fn the_bundle_verifies_with_the_image_keys_and_holds_its_root_slot_and_kernel() {
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

    let mut kernel = Vec::new();
    b.payload(KERNEL_PAYLOAD).unwrap().read_to_end(&mut kernel).unwrap();
    // The slot's kernel as the build signed it for Secure Boot: the
    // image's bzImage with an Authenticode signature appended.
    let signed = out.join("work").join("bzImage.signed");
    assert!(kernel == std::fs::read(&signed).unwrap(), "the bundle's kernel is not the image's signed bzImage");
    let unsigned = std::fs::read(out.join("bzImage")).unwrap();
    assert!(kernel.len() > unsigned.len(), "the bundle's kernel carries no signature");
    let list = std::process::Command::new("sbverify").arg("--list").arg(&signed).output().expect("running sbverify");
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(listed.contains("signature 1"), "sbverify finds no signature on the bundle's kernel:\n{listed}");
    b.finish().unwrap();
}
