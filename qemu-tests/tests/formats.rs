//! The disk in the formats hypervisors and clouds import, written by
//! `berth-image convert` from the built berth.raw: qemu-img reads each
//! (info, and check where the format has one: not VHD), the VMDK is stream-optimised
//! (VMware's import format), the VHD is fixed with a virtual size that is a
//! multiple of 1 MiB (Azure's rule), the GCE archive holds `disk.raw`; the
//! VMDK boots on VMware-like devices (a SATA boot disk, as OVMF has no
//! PVSCSI driver, a PVSCSI data disk and a vmxnet3 NIC) and the VHD on
//! virtio-scsi (GCE's disks) with an Intel e1000e NIC, each to the ready
//! line and a DHCP lease on that NIC, each device run by its driver. The files are
//! converted once and shared by the tests running at the same time.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, Weak};

use berth_qemu::updates::wait_online;
use berth_qemu::{berth_image, boot_timeout, image_dir, shutdown_timeout, DiskBus, Vm, VmConfig, WorkDir, MIB};

struct Converted {
    dir: WorkDir,
}

impl Converted {
    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

static CONVERTED: Mutex<Weak<Converted>> = Mutex::new(Weak::new());

fn raw() -> PathBuf {
    image_dir().join("berth.raw")
}

/// `berth-image --out DIR convert --format vmdk,vhd,gce --image berth.raw`.
fn converted() -> Arc<Converted> {
    let mut shared = CONVERTED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = shared.upgrade() {
        return c;
    }
    let dir = WorkDir::create("formats").expect("a scratch directory");
    let out = berth_image()
        .arg("--out")
        .arg(dir.path())
        .args(["convert", "--format", "vmdk,vhd,vhdx,gce", "--image"])
        .arg(raw())
        .output()
        .expect("running berth-image convert (cargo run -p berth-image)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "berth-image convert failed:\n{text}");
    let c = Arc::new(Converted { dir });
    for name in ["berth.vmdk", "berth.vhd", "berth.vhdx", "berth-gce.tar.gz"] {
        assert!(c.file(name).is_file(), "convert wrote no {name}:\n{text}");
    }
    *shared = Arc::downgrade(&c);
    c
}

fn qemu_img(args: &[&str], file: &Path) -> (bool, String) {
    let out = Command::new("qemu-img").args(args).arg(file).output().expect("running qemu-img (qemu-utils)");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn info(file: &Path, format: &str) -> serde_json::Value {
    let (ok, out) = qemu_img(&["info", "--output=json", "-f", format], file);
    assert!(ok, "qemu-img info {}: {out}", file.display());
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("qemu-img info: {e}: {out}"))
}

/// Host side, no VM.
#[test]
fn every_format_reads_back_as_its_cloud_wants_it() {
    let c = converted();
    let raw_len = std::fs::metadata(raw()).expect("berth.raw").len();

    let vmdk = info(&c.file("berth.vmdk"), "vmdk");
    assert_eq!(vmdk["virtual-size"].as_u64(), Some(raw_len), "{vmdk}");
    assert_eq!(vmdk["format-specific"]["data"]["create-type"], "streamOptimized", "{vmdk}");
    let (ok, out) = qemu_img(&["check", "-f", "vmdk"], &c.file("berth.vmdk"));
    assert!(ok, "qemu-img check of the VMDK: {out}");

    // A fixed VHD: the raw disk and a 512-byte footer ("conectix", disk
    // type 2 = fixed, at byte 60), its size a whole number of MiB.
    // (qemu-img has no check for vpc.)
    let vhd_path = c.file("berth.vhd");
    let vhd = info(&vhd_path, "vpc");
    let size = vhd["virtual-size"].as_u64().expect("virtual-size");
    assert_eq!(size % MIB, 0, "the VHD's virtual size {size} is not a multiple of 1 MiB");
    assert_eq!(size, raw_len.div_ceil(MIB) * MIB, "the raw size rounded up to 1 MiB");
    let mut f = std::fs::File::open(&vhd_path).expect("the VHD");
    let len = f.metadata().expect("metadata").len();
    assert_eq!(len, size + 512, "a fixed VHD is its disk and a footer");
    let mut footer = [0u8; 512];
    f.seek(SeekFrom::Start(len - 512)).and_then(|_| f.read_exact(&mut footer)).expect("reading the footer");
    assert_eq!(&footer[..8], b"conectix");
    assert_eq!(u32::from_be_bytes([footer[60], footer[61], footer[62], footer[63]]), 2, "disk type: fixed");

    // Hyper-V's VHDX.
    let vhdx = c.file("berth.vhdx");
    assert_eq!(info(&vhdx, "vhdx")["virtual-size"].as_u64(), Some(raw_len));
    let (ok, out) = qemu_img(&["check", "-f", "vhdx"], &vhdx);
    assert!(ok, "qemu-img check of the VHDX: {out}");

    // The qcow2 every build writes.
    let qcow2 = image_dir().join("berth.qcow2");
    let (ok, out) = qemu_img(&["check", "-f", "qcow2"], &qcow2);
    assert!(ok, "qemu-img check of berth.qcow2: {out}");
    assert_eq!(info(&qcow2, "qcow2")["virtual-size"].as_u64(), Some(raw_len));

    // GCE: one member, disk.raw, the raw disk's size.
    let out = Command::new("tar").arg("-tvzf").arg(c.file("berth-gce.tar.gz")).output().expect("running tar");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "tar: {}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 1, "{listing}");
    assert!(lines[0].ends_with(" disk.raw"), "{listing}");
    assert!(
        lines[0].split_whitespace().any(|w| w == raw_len.to_string()),
        "disk.raw is not {raw_len} bytes: {listing}"
    );
}

/// The driver of the controller a SCSI disk (`sda`) is on: the disk's
/// SCSI host's parent device is the controller (`.../0000:00:04.0/host0`
/// for PVSCSI and AHCI's ports one level deeper, `.../virtio1/host0` for
/// virtio-scsi).
fn controller_driver(vm: &mut Vm, disk: &str) -> String {
    let dev = vm.sh_ok(&format!("readlink -f /sys/class/block/{disk}/device"));
    let host = dev.trim().split("/target").next().unwrap_or_default().to_string();
    let driver = vm.sh_ok(&format!(
        "d={host}/..; while [ ! -e $d/driver ] && [ $d != / ]; do d=$(readlink -f $d/..); done; readlink -f $d/driver"
    ));
    driver.trim().rsplit('/').next().unwrap_or_default().to_string()
}

/// Boots `file` from a disk on `bus` with a NIC of QEMU model `nic` (and a
/// data disk on `data`, a QEMU SCSI controller model): the harness takes
/// the format from the file, the VM reaches ready, the boot disk's
/// controller is driven by `boot_driver`, the data disk's by `data_driver`,
/// the NIC by `nic_driver` and it has its DHCP lease; the VM powers off
/// cleanly.
fn boot(
    name: &str,
    file: &Path,
    bus: DiskBus,
    boot_driver: &str,
    data: Option<(&str, &str)>,
    nic: &str,
    nic_driver: &str,
) {
    let mut config = VmConfig::new().name(name).disk(file).disk_bus(bus).nic_model(nic);
    let scratch = WorkDir::create(&format!("{name}-data")).expect("a scratch directory");
    if let Some((controller, _)) = data {
        let disk = scratch.path().join("data.raw");
        std::fs::File::create(&disk).and_then(|f| f.set_len(64 * MIB)).expect("a data disk");
        config = config
            .arg("-drive")
            .arg(format!("if=none,id=data1,format=raw,file={}", disk.display()))
            .arg("-device")
            .arg(format!("{controller},id=data0"))
            .arg("-device")
            .arg("scsi-hd,drive=data1,bus=data0.0");
    }
    let mut vm = Vm::start(config).unwrap_or_else(|e| panic!("starting {name}: {e}"));
    if let Err(e) = vm.wait_ready(boot_timeout()) {
        panic!("{}: no ready line: {e}", file.display());
    }
    // The disk the root came from: the partition under the verity device.
    let slaves = vm.sh_ok("ls /sys/block/dm-0/slaves");
    let part = slaves.split_whitespace().next().unwrap_or_default().to_string();
    let disk = part.trim_end_matches(|c: char| c.is_ascii_digit()).to_string();
    assert!(disk.starts_with(&bus.guest_disk()[..2]), "the root is on {part}, not on a {bus:?} disk");
    assert_eq!(controller_driver(&mut vm, &disk), boot_driver, "the boot disk {disk} is not on {boot_driver}");
    if let Some((controller, data_driver)) = data {
        let disks = vm.sh_ok("for d in /sys/class/block/sd?; do echo ${d##*/}; done");
        let drivers: Vec<String> = disks.split_whitespace().map(|d| controller_driver(&mut vm, d)).collect();
        assert!(
            drivers.iter().any(|d| d == data_driver),
            "no disk on the {controller} controller ({data_driver}): {disks:?} on {drivers:?}"
        );
    }
    let driver = vm.sh_ok("readlink -f /sys/class/net/eth0/device/driver");
    assert!(driver.trim().ends_with(&format!("/{nic_driver}")), "eth0 is not a {nic_driver} NIC: {driver}");
    wait_online(&mut vm, boot_timeout()).unwrap_or_else(|e| panic!("no network on the {nic_driver} NIC: {e}"));
    let addr = vm.sh_ok("ip -4 -o addr show dev eth0");
    assert!(addr.contains("inet 10.0.2.15/"), "no DHCP lease on the {nic_driver} NIC:\n{addr}");
    vm.powerdown().expect("pressing the power button");
    let st = vm.wait_exit(shutdown_timeout()).expect("QEMU exits after the power button");
    assert!(st.success(), "QEMU exited with {st}");
}

#[test]
fn the_vmdk_boots() {
    let c = converted();
    boot(
        "format-vmdk",
        &c.file("berth.vmdk"),
        DiskBus::Sata,
        "ahci",
        Some(("pvscsi", "vmw_pvscsi")),
        "vmxnet3",
        "vmxnet3",
    );
}

#[test]
fn the_vhd_boots() {
    let c = converted();
    boot("format-vhd", &c.file("berth.vhd"), DiskBus::VirtioScsi, "virtio_scsi", None, "e1000e", "e1000e");
}
