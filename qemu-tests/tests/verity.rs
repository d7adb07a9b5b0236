//! dm-verity: a root whose EROFS superblock has one byte changed on disk is
//! refused by the kernel (restart_on_corruption), and the machine never
//! comes up.

use berth_layout::console::READY_PREFIX;
use berth_layout::disk::{ROOT_A_LABEL, SECTOR};
use berth_qemu::{boot_timeout, default_image, flip_byte, shutdown_timeout, Error, Image, Vm, VmConfig, WorkDir};

#[test]
fn a_flipped_byte_in_the_root_stops_the_boot() {
    let base = default_image();
    if !base.is_file() {
        panic!("{}", Error::NoImage(base));
    }
    let scratch = WorkDir::create("verity-disk").expect("a scratch directory");
    let raw = Image::open(&base).and_then(|i| i.to_raw(&scratch.join("disk.raw"))).expect("a raw copy of the image");
    let root = raw.partition(ROOT_A_LABEL).expect("root-a in the GPT");
    // Inside the EROFS superblock (at 1024), which mounting / must read.
    let offset = root.first_lba * SECTOR + 1024 + 8;
    let (old, new) = flip_byte(&raw.path, offset, 0xff).expect("flipping a byte");
    eprintln!("byte {offset} of the disk: {old:#04x} -> {new:#04x}");

    let mut vm = Vm::start(VmConfig::new().name("verity").disk(&raw.path).no_reboot(true))
        .expect("starting the VM on the corrupted disk");
    let line = vm
        .wait_line("the kernel's dm-verity corruption message", boot_timeout(), |l| {
            l.contains("verity") && l.contains("corrupted")
        })
        .expect("dm-verity reports the corruption");
    eprintln!("{line}");
    // restart_on_corruption reboots; under -no-reboot QEMU exits.
    vm.wait_exit(shutdown_timeout()).expect("the machine restarts (QEMU exits under -no-reboot)");
    let console = vm.console_text();
    assert!(!console.contains(READY_PREFIX), "a corrupted root came up:\n{}", berth_qemu::tail(&console, 40));
}
