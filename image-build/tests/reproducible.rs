//! Two builds from the same inputs give a byte-identical berth.raw, a
//! byte-identical berth-4kn.raw (its 4Kn variant) and a byte-identical
//! update bundle (ed25519 signatures are deterministic).

use std::path::{Path, PathBuf};
use std::process::Command;

fn build_into(out: &Path) {
    let status = Command::new(env!("CARGO_BIN_EXE_berth-image"))
        .arg("build")
        .arg("--out")
        .arg(out)
        .status()
        .expect("running berth-image");
    assert!(status.success(), "berth-image build --out {} failed", out.display());
}

/// The disks a build writes, compared byte for byte.
const DISKS: [&str; 2] = ["berth.raw", "berth-4kn.raw"];

/// The first difference between two files, as a byte offset.
fn first_difference(a: &Path, b: &Path) -> Option<u64> {
    use std::io::Read;
    let (mut fa, mut fb) = (std::fs::File::open(a).unwrap(), std::fs::File::open(b).unwrap());
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut at = 0u64;
    loop {
        let na = fa.read(&mut ba).unwrap();
        let nb = fb.read(&mut bb).unwrap();
        if na != nb || ba[..na] != bb[..nb] {
            let i = ba[..na].iter().zip(&bb[..nb]).position(|(x, y)| x != y).unwrap_or(na.min(nb));
            return Some(at + i as u64);
        }
        if na == 0 {
            return None;
        }
        at += na as u64;
    }
}

#[test]
fn two_builds_give_identical_disks() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let scratch = repo.join("target").join("berth-repro");
    let _ = std::fs::remove_dir_all(&scratch);
    // The suite's image (BERTH_IMAGE_DIR) is one build; make it if absent.
    let first: PathBuf = match std::env::var_os("BERTH_IMAGE_DIR") {
        Some(dir) if DISKS.iter().chain(&["last-bundle.txt"]).all(|d| Path::new(&dir).join(d).exists()) => {
            PathBuf::from(dir)
        }
        _ => {
            let d = scratch.join("one");
            build_into(&d);
            d
        }
    };
    let second = scratch.join("two");
    build_into(&second);
    let bundle = std::fs::read_to_string(second.join("last-bundle.txt")).unwrap();
    for disk in DISKS.into_iter().chain([bundle.trim()]) {
        let (a, b) = (first.join(disk), second.join(disk));
        if let Some(at) = first_difference(&a, &b) {
            panic!(
                "{} and {} differ first at byte {at} (partition offsets are in berth-layout's disk plan)",
                a.display(),
                b.display()
            );
        }
    }
    std::fs::remove_dir_all(&scratch).unwrap();
}
