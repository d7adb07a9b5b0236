//! The chain of trust under OVMF with Secure Boot enforced (Debian's
//! snakeoil keys enrolled, [`VmConfig::secure_boot`]): systemd-boot and the
//! slot's UKI signed with the snakeoil key boot to ready and the firmware
//! says Secure Boot is on (and, as that VM has no NIC, the `network` unit
//! is skipped rather than restarted); a UKI with one byte of its command line changed
//! is refused and nothing boots; an unsigned image does not boot.
//!
//! The disks are copies of the suite's image whose ESP gets the build's
//! unsigned binaries (`systemd-bootx64.unsigned.efi`, `berth-a.unsigned.efi`
//! in the image directory), signed here with the snakeoil key, or left
//! unsigned. The image's own signatures (the development key) are not in
//! the snakeoil db.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_layout::cmdline::VERITY_HASH;
use berth_layout::console::READY_PREFIX;
use berth_layout::disk::{ESP_LABEL, SECTOR};
use berth_qemu::{
    boot_timeout, default_image, image_dir, snakeoil_key, Error, Image, Vm, VmConfig, WorkDir, SNAKEOIL_CERT,
};

/// The ESP paths of systemd-boot and of slot A's UKI.
const BOOT_PATHS: [&str; 2] = ["/EFI/BOOT/BOOTX64.EFI", "/EFI/systemd/systemd-bootx64.efi"];
const UKI_PATH: &str = "/berth/a/berth.efi";

fn run(c: &mut Command) {
    let out = c.output().unwrap_or_else(|e| panic!("running {c:?}: {e}"));
    assert!(out.status.success(), "{c:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// The build's unsigned binary `name` in the image directory.
fn unsigned(name: &str) -> PathBuf {
    let p = image_dir().join(name);
    assert!(p.is_file(), "{} is missing: build the image (berth-image build)", p.display());
    p
}

/// `input` signed with the snakeoil key into `dir`.
fn snakeoil_signed(input: &Path, dir: &Path) -> PathBuf {
    let key = snakeoil_key(dir).expect("the decrypted snakeoil key");
    let out = dir.join(format!("snakeoil-{}", input.file_name().unwrap().to_string_lossy()));
    let _ = std::fs::remove_file(&out);
    run(Command::new("sbsign").arg("--key").arg(&key).args(["--cert", SNAKEOIL_CERT, "--output"]).arg(&out).arg(input));
    out
}

/// A raw copy of the suite's image at `dir/name` whose ESP holds `boot` as
/// systemd-boot and `uki` as slot A's UKI.
fn disk_with(dir: &Path, name: &str, boot: &Path, uki: &Path) -> PathBuf {
    let base = default_image();
    if !base.is_file() {
        panic!("{}", Error::NoImage(base));
    }
    let raw = Image::open(&base).and_then(|i| i.to_raw(&dir.join(name))).expect("a raw copy of the image");
    let esp_img = dir.join(format!("{name}.esp"));
    let esp = raw.extract_partition(ESP_LABEL, &esp_img).expect("the ESP");
    let mcopy = |src: &Path, dest: &str| {
        run(Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-o", "-i"])
            .arg(&esp_img)
            .arg(src)
            .arg(format!("::{dest}")));
    };
    for dest in BOOT_PATHS {
        mcopy(boot, dest);
    }
    mcopy(uki, UKI_PATH);
    let bytes = std::fs::read(&esp_img).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&raw.path).unwrap();
    file.write_all_at(&bytes, esp.first_lba * SECTOR).unwrap();
    file.sync_all().unwrap();
    raw.path
}

fn start(name: &str, disk: &Path) -> Vm {
    Vm::start(VmConfig::new().name(name).disk(disk).secure_boot(true).no_reboot(true).net(vec![]))
        .expect("starting a Secure Boot VM")
}

/// The firmware's or systemd-boot's words for an image that failed its
/// signature check (OVMF: "Access Denied"; systemd-boot: "Error loading
/// ...: Security Violation").
fn is_refusal(line: &str) -> bool {
    line.contains("Access Denied") || line.contains("Security Violation")
}

/// Waits for the refusal, then checks no kernel ever came up.
fn assert_refused(vm: &mut Vm, what: &str) {
    let line = vm
        .wait_line(&format!("the refusal of {what}"), boot_timeout(), is_refusal)
        .unwrap_or_else(|e| panic!("{what} was not refused: {e}"));
    eprintln!("refused: {}", line.trim());
    let console = vm.console_text();
    assert!(!console.contains(READY_PREFIX), "{what} came up:\n{}", berth_qemu::tail(&console, 40));
    let _ = vm.quit();
}

#[test]
fn an_image_signed_with_the_enrolled_key_boots_with_secure_boot_enforced() {
    let scratch = WorkDir::create("sb-signed").expect("a scratch directory");
    let boot = snakeoil_signed(&unsigned("systemd-bootx64.unsigned.efi"), scratch.path());
    let uki = snakeoil_signed(&unsigned("berth-a.unsigned.efi"), scratch.path());
    let disk = disk_with(scratch.path(), "signed.raw", &boot, &uki);
    let mut vm = start("sb-signed", &disk);
    vm.wait_ready(boot_timeout()).expect("the snakeoil-signed image boots to ready under Secure Boot");
    assert_eq!(vm.secure_boot_enforced(), Some(true), "the SecureBoot variable says enforced");
    // This boot has no NIC: `network` waits for eth0 without running
    // dhcpcd (which exits at once without eth0: the unit was restarted
    // until its start limit, then marked failed, beside containerd's start).
    let network = vm.sh_ok("berthctl status network; berthctl logs network -n 20");
    assert!(
        network.contains("State: active")
            && network.contains("Restarts: 0")
            && network.contains("waiting for network interface eth0"),
        "network does not wait for eth0:\n{network}"
    );
    assert!(!network.contains("dhcpcd-"), "dhcpcd ran without a NIC:\n{network}");
    let _ = vm.quit();
}

#[test]
fn a_uki_with_one_byte_of_its_command_line_changed_is_refused() {
    let scratch = WorkDir::create("sb-cmdline").expect("a scratch directory");
    let boot = snakeoil_signed(&unsigned("systemd-bootx64.unsigned.efi"), scratch.path());
    let uki = snakeoil_signed(&unsigned("berth-a.unsigned.efi"), scratch.path());
    // One hex digit of the verity root hash in .cmdline, after signing:
    // the image now promises another root than the one it was signed with.
    let mut bytes = std::fs::read(&uki).unwrap();
    let hash = format!("{VERITY_HASH} ");
    let at =
        bytes.windows(hash.len()).position(|w| w == hash.as_bytes()).expect("the command line in the UKI") + hash.len();
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    std::fs::write(&uki, &bytes).unwrap();
    let disk = disk_with(scratch.path(), "cmdline.raw", &boot, &uki);
    let mut vm = start("sb-cmdline", &disk);
    assert_refused(&mut vm, "a UKI with a changed command line");
}

#[test]
fn an_unsigned_image_does_not_boot() {
    let scratch = WorkDir::create("sb-unsigned").expect("a scratch directory");
    let disk = disk_with(
        scratch.path(),
        "unsigned.raw",
        &unsigned("systemd-bootx64.unsigned.efi"),
        &unsigned("berth-a.unsigned.efi"),
    );
    let mut vm = start("sb-unsigned", &disk);
    assert_refused(&mut vm, "unsigned systemd-boot");
}
