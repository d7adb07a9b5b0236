//! The boot disk in the shapes machines give it: a "4Kn" disk (4096-byte
//! logical sectors, as on some bare metal and cloud volumes), which boots
//! `berth-4kn.qcow2`, and `berth.qcow2` on NVMe and on SATA (AHCI). Each
//! boots once to the ready line on an enlarged disk, with the verified root
//! on the disk's second partition and the data partition grown to the last
//! MiB boundary and formatted, then powers off cleanly.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use berth_layout::console::SHUTDOWN_DONE;
use berth_layout::disk::{self, DATA_LABEL, ESP_LABEL, MIB, ROOT_A_LABEL, SECTOR, SECTOR_4KN};
use berth_layout::gpt::Gpt;
use berth_qemu::{boot_timeout, image_dir, shutdown_timeout, DiskBus, Vm, VmConfig, GIB};

/// The disk each VM gets: the image's 1122 MiB, enlarged.
const DISK_SIZE: u64 = 2 * GIB;

fn sysfs_number(vm: &mut Vm, path: &str) -> u64 {
    let text = vm.read_file(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    text.trim().parse().unwrap_or_else(|e| panic!("{path} holds {text:?}: {e}"))
}

/// Byte offset of a partition in the image, from the layout.
fn plan_start(label: &str) -> u64 {
    disk::plan().into_iter().find(|(s, _, _)| s.label == label).map(|(_, start, _)| start).expect("in the plan")
}

/// Boots `image` on a disk attached by `bus` with logical sectors of
/// `sector_size` bytes, and checks what a user would: the guest sees the
/// disk as given, the root is on its second partition, the data partition
/// was grown and formatted and is /var; the power button shuts it down
/// cleanly.
fn boot_and_check(name: &str, image: &Path, bus: DiskBus, sector_size: u64) {
    let cfg = VmConfig::new().name(name).disk(image).disk_bus(bus).sector_size(sector_size as u32).disk_size(DISK_SIZE);
    let mut vm =
        Vm::start(cfg).unwrap_or_else(|e| panic!("starting the VM ({bus:?}, {sector_size}-byte sectors): {e}"));
    if let Err(e) = vm.wait_ready(boot_timeout()) {
        panic!("{bus:?} disk with {sector_size}-byte sectors: no ready line: {e}");
    }
    let d = bus.guest_disk();

    // The guest sees the disk as it was given.
    let lbs = sysfs_number(&mut vm, &format!("/sys/block/{d}/queue/logical_block_size"));
    assert_eq!(lbs, sector_size, "{d}'s logical sector size");
    assert_eq!(sysfs_number(&mut vm, &format!("/sys/block/{d}/size")) * SECTOR, DISK_SIZE, "{d}'s size");

    // The verified root sits on root-a, the second partition.
    let slaves = vm.list_dir("/sys/block/dm-0/slaves").expect("listing dm-0's slaves");
    assert_eq!(slaves, [bus.guest_partition(2)], "dm-0 (the root) sits on root-a of {d}");

    // PID1 read the GPT in the disk's sectors and grew the data partition
    // to the last MiB boundary before the backup table (header and 128
    // entries: 33 sectors of 512 bytes, 5 of 4096), then formatted it.
    let data = bus.guest_partition(4);
    let start = sysfs_number(&mut vm, &format!("/sys/class/block/{data}/start")) * SECTOR;
    let size = sysfs_number(&mut vm, &format!("/sys/class/block/{data}/size")) * SECTOR;
    let backup_table = if sector_size == SECTOR { 33 * SECTOR } else { 5 * SECTOR_4KN };
    let end = (DISK_SIZE - backup_table) / MIB * MIB;
    assert_eq!((start, start + size), (plan_start(DATA_LABEL), end), "{data} (bytes) is not grown to the last MiB");
    let console = vm.console_text();
    let grew = format!("data: grew /dev/{data} from {} to {} MiB", disk::DATA_SIZE / MIB, size / MIB);
    let formatted = format!("data: formatted /dev/{data} ({} MiB)", size / MIB);
    for line in [&grew, &formatted] {
        assert!(console.contains(line.as_str()), "no {line:?} on the console:\n{}", berth_qemu::tail(&console, 40));
    }
    let mounts = vm.read_file("/proc/mounts").expect("/proc/mounts");
    assert!(
        mounts.lines().any(|l| l.starts_with(&format!("/dev/{data} /var ext4 rw"))),
        "/var is not ext4 on {data}, read-write:\n{mounts}"
    );
    let kib = vm.df_kib("/var").expect("the size of /var");
    assert!(kib * 1024 > size / 10 * 9, "/var has {kib} KiB on a partition of {size} bytes");

    vm.powerdown().expect("pressing the power button");
    let st = vm.wait_exit(shutdown_timeout()).expect("QEMU exits after the power button");
    assert!(st.success(), "QEMU exited with {st}");
    assert!(vm.console_text().contains(SHUTDOWN_DONE), "no clean shutdown");
}

#[test]
fn boots_from_a_4kn_disk() {
    boot_and_check("disk-4kn", &image_dir().join("berth-4kn.qcow2"), DiskBus::Virtio, SECTOR_4KN);
}

#[test]
fn boots_from_nvme() {
    boot_and_check("disk-nvme", &image_dir().join("berth.qcow2"), DiskBus::Nvme, SECTOR);
}

#[test]
fn boots_from_sata() {
    boot_and_check("disk-sata", &image_dir().join("berth.qcow2"), DiskBus::Sata, SECTOR);
}

/// The image's GPT, read in sectors of `sector_size` bytes.
fn gpt(path: &Path, sector_size: u64) -> Gpt {
    let mut f = File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let len = f.metadata().expect("metadata").len();
    Gpt::read(&mut f, sector_size, len)
        .unwrap_or_else(|e| panic!("{}: no GPT in {sector_size}-byte sectors: {e}", path.display()))
}

fn read_at(f: &mut File, offset: u64, buf: &mut [u8]) {
    f.seek(SeekFrom::Start(offset)).expect("seeking");
    f.read_exact(buf).expect("reading the image");
}

/// Host side, no VM: `berth-4kn.raw` is `berth.raw` in 4096-byte sectors:
/// the same partitions (names, types, PARTUUIDs) at the same byte offsets,
/// an ESP whose FAT counts 4096-byte sectors, and the very same root slot,
/// so the kernel command line (PARTUUID, verity root hash) holds for both.
#[test]
fn the_4kn_image_is_the_same_disk_in_4096_byte_sectors() {
    let (raw, raw_4kn) = (image_dir().join("berth.raw"), image_dir().join("berth-4kn.raw"));
    let (a, b) = (gpt(&raw, SECTOR), gpt(&raw_4kn, SECTOR_4KN));
    assert_eq!(a.disk_guid, b.disk_guid);
    assert_eq!(a.total_sectors * SECTOR, b.total_sectors * SECTOR_4KN, "the same disk size");
    let bytes = |g: &Gpt, ss: u64| {
        g.partitions
            .iter()
            .map(|p| (p.name.clone(), p.type_guid, p.unique_guid, p.first_lba * ss, (p.last_lba + 1) * ss))
            .collect::<Vec<_>>()
    };
    assert_eq!(bytes(&a, SECTOR), bytes(&b, SECTOR_4KN));

    let (mut fa, mut fb) = (File::open(&raw).expect("berth.raw"), File::open(&raw_4kn).expect("berth-4kn.raw"));
    // The FAT boot sector's "bytes per sector" (offset 11).
    for (f, want) in [(&mut fa, SECTOR), (&mut fb, SECTOR_4KN)] {
        let mut bps = [0u8; 2];
        read_at(f, plan_start(ESP_LABEL) + 11, &mut bps);
        assert_eq!(u64::from(u16::from_le_bytes(bps)), want, "the ESP's sector size");
    }
    let root = a.by_name(ROOT_A_LABEL).expect("root-a");
    let (mut ba, mut bb) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
    for mib in 0..(root.sectors() * SECTOR / MIB) {
        let at = plan_start(ROOT_A_LABEL) + mib * MIB;
        read_at(&mut fa, at, &mut ba);
        read_at(&mut fb, at, &mut bb);
        assert!(ba == bb, "root-a differs between the two disks in its MiB {mib}");
    }
}
