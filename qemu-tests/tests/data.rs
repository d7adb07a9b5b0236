//! The data partition: grown to the end of an enlarged disk at first boot,
//! ext4 on /var, and what is written under /var and /etc survives a clean
//! reboot; after a power-button shutdown the file system is clean.

use berth_layout::console::SHUTDOWN_DONE;
use berth_layout::disk::{DATA_FORMATTING_ATTR, DATA_LABEL, SECTOR};
use berth_qemu::{boot_timeout, fsck_ext4, shutdown_timeout, Vm, VmConfig, GIB};

fn sysfs_number(vm: &mut Vm, path: &str) -> u64 {
    let text = vm.read_file(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    text.trim().parse().unwrap_or_else(|e| panic!("{path} holds {text:?}: {e}"))
}

#[test]
fn data_partition_grows_persists_across_reboot_and_unmounts_clean() {
    let disk_size = 4 * GIB;
    let mut vm =
        Vm::start(VmConfig::new().name("data").disk_size(disk_size)).expect("starting the VM on an enlarged disk");
    vm.wait_ready(boot_timeout()).expect("first boot");

    // Grown to the last MiB boundary before the last usable sector of the
    // bigger disk (the backup GPT takes the last 33 sectors).
    let disk = sysfs_number(&mut vm, "/sys/class/block/vda/size");
    assert_eq!(disk * SECTOR, disk_size, "the guest sees the enlarged disk");
    let start = sysfs_number(&mut vm, "/sys/class/block/vda4/start");
    let size = sysfs_number(&mut vm, "/sys/class/block/vda4/size");
    let end = start + size;
    assert!(
        end.is_multiple_of(2048) && size.is_multiple_of(8) && end <= disk - 33 && disk - 33 - end < 2048,
        "vda4 ({start}+{size}) does not end at the last MiB boundary before the disk's last usable sector ({} of {disk})",
        disk - 34
    );
    let kib = vm.df_kib("/var").expect("the size of /var");
    // The file system fills the partition, less ext4's own overhead.
    let part_bytes = size * SECTOR;
    assert!(kib * 1024 > part_bytes / 10 * 9, "/var has {kib} KiB on a partition of {part_bytes} bytes");
    let mounts = vm.read_file("/proc/mounts").expect("/proc/mounts");
    assert!(
        mounts.lines().any(|l| l.starts_with("/dev/vda4 /var ext4 rw")),
        "/var is not ext4 on vda4, read-write:\n{mounts}"
    );

    // Write under /var and /etc, then reboot cleanly (SIGINT to PID1).
    vm.sh_ok("echo hello > /var/berth-test && echo hello > /etc/berth-test && echo myhost > /etc/hostname");
    vm.sh_nowait("kill -INT 1").expect("asking PID1 to reboot");
    vm.wait_ready(boot_timeout()).expect("second boot after the reboot");
    assert_eq!(vm.console_text().matches(SHUTDOWN_DONE).count(), 1, "the reboot went through a clean shutdown");
    assert_eq!(vm.read_file("/var/berth-test").expect("/var file"), "hello\n");
    assert_eq!(vm.read_file("/etc/berth-test").expect("/etc file"), "hello\n");
    assert_eq!(
        vm.read_file("/proc/sys/kernel/hostname").expect("hostname").trim(),
        "myhost",
        "the hostname comes from the changed /etc/hostname"
    );

    // `reboot` at the admin shell reboots (busybox's applet signals PID1),
    // and the machine keeps its identity.
    let machine_id = vm.read_file("/etc/machine-id").expect("machine-id");
    vm.sh_nowait("reboot").expect("typing reboot");
    vm.wait_ready(boot_timeout()).expect("third boot after `reboot`");
    assert_eq!(vm.read_file("/etc/machine-id").expect("machine-id"), machine_id);

    // Power button; then the file system must be clean from the host.
    vm.powerdown().expect("power button");
    let st = vm.wait_exit(shutdown_timeout()).expect("QEMU exits");
    assert!(st.success(), "QEMU exited with {st}");
    assert_eq!(vm.console_text().matches(SHUTDOWN_DONE).count(), 3);

    let image = vm.image().expect("the VM's disk");
    let gpt = image.gpt().expect("the GPT of the VM's disk");
    assert_eq!(gpt.total_sectors * SECTOR, disk_size, "the GPT covers the disk");
    let data = gpt.by_name(DATA_LABEL).expect("a data partition");
    assert!((data.last_lba + 1).is_multiple_of(2048), "the data partition ends on a MiB boundary: {gpt:?}");
    assert!(gpt.last_usable - data.last_lba < 2048, "more than a MiB left after the data partition: {gpt:?}");
    let extract = vm.dir().join("data.ext4");
    image.extract_partition(DATA_LABEL, &extract).expect("extracting the data partition");
    let fsck = fsck_ext4(&extract).expect("e2fsck");
    assert!(fsck.clean(), "the data file system is not clean after a clean shutdown:\n{}", fsck.output);
    let fs_bytes = fsck.size_bytes.unwrap_or(0);
    let part_bytes = data.sectors() * SECTOR;
    assert!(
        fs_bytes <= part_bytes && fs_bytes + 4096 > part_bytes,
        "the file system ({fs_bytes} bytes) does not fill the partition ({part_bytes} bytes)"
    );
}

/// Where in a first boot the power is cut: a console line to wait for, then
/// how long to wait after it.
const FIRST_BOOT_CUTS: [(&str, u64); 4] = [
    // The firmware starts the boot loader: the cut lands in the kernel or
    // PID1's early mounts.
    ("BdsDxe", 1_500),
    // mke2fs prints its banner to the console as it starts: cuts as it
    // begins, while it writes, and as it (or the mount after it) ends.
    ("mke2fs 1.", 0),
    ("mke2fs 1.", 300),
    ("mke2fs 1.", 1_000),
];

#[test]
fn a_power_cut_anywhere_in_the_first_boot_still_comes_up_with_a_clean_data_partition() {
    for (i, (line, after_ms)) in FIRST_BOOT_CUTS.iter().enumerate() {
        let mut vm = Vm::start(VmConfig::new().name(&format!("first-boot-cut-{i}")).disk_size(2 * GIB))
            .expect("starting a VM on a fresh disk");
        vm.wait_for(line, boot_timeout()).unwrap_or_else(|e| panic!("cut {i}: waiting for {line:?}: {e}"));
        std::thread::sleep(std::time::Duration::from_millis(*after_ms));
        vm.power_cut().expect("power cut");
        eprintln!("cut {i}: power cut {after_ms} ms after {line:?}");

        vm.restart().expect("booting the same disk again");
        if let Err(e) = vm.wait_ready(boot_timeout()) {
            panic!(
                "cut {i} ({after_ms} ms after {line:?}): no ready line on the next boot: {e}\n{}",
                berth_qemu::tail(&vm.console_text(), 40)
            );
        }
        let mounts = vm.sh_ok("grep ' /var ' /proc/mounts");
        assert!(mounts.contains(" ext4 "), "cut {i}: /var is not ext4 after the cut: {mounts}");
        vm.sh_ok("echo kept > /var/after-cut && sync");
        vm.powerdown().expect("power button");
        vm.wait_exit(shutdown_timeout()).expect("QEMU exits");
        let image = vm.image().expect("the VM's disk");
        let gpt = image.gpt().expect("the GPT of the VM's disk");
        let data = gpt.by_name(DATA_LABEL).expect("a data partition");
        assert_eq!(data.attributes & DATA_FORMATTING_ATTR, 0, "cut {i}: the format is still marked unfinished");
        let extract = vm.dir().join("data.ext4");
        image.extract_partition(DATA_LABEL, &extract).expect("extracting the data partition");
        let fsck = fsck_ext4(&extract).expect("e2fsck");
        assert!(fsck.clean(), "cut {i}: the data file system is not clean after the next boot:\n{}", fsck.output);
    }
}
