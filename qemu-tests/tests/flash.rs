//! `berth-image flash` as a user runs it, onto a fresh 3 GiB (sparse) disk
//! file standing in for a USB stick or a server's disk: the written disk
//! boots from a USB stick (usb-storage on qemu-xhci) and from an NVMe disk,
//! each to the ready line, with the data partition grown to the disk's
//! end. The file is flashed once and shared by both VMs (each boots its
//! own copy-on-write overlay of it). And the refusals a user meets at the
//! command line: a disk that holds data without --yes and without a
//! terminal, a device that does not exist.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex, Weak};

use berth_layout::console::SHUTDOWN_DONE;
use berth_layout::disk::{self, DATA_LABEL, MIB, SECTOR};
use berth_qemu::{berth_image, boot_timeout, image_dir, shutdown_timeout, DiskBus, Vm, VmConfig, WorkDir, GIB};

/// The stick: bigger than the image (1122 MiB), so the data partition grows.
const STICK_SIZE: u64 = 3 * GIB;

/// `berth-image flash ARGS` with stdin not a terminal.
fn flash(args: &[&std::ffi::OsStr]) -> Output {
    berth_image()
        .arg("flash")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running berth-image flash (cargo run -p berth-image)")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A flashed stick, shared by the tests running at the same time.
struct Stick {
    path: PathBuf,
    _dir: WorkDir,
}

static STICK: Mutex<Weak<Stick>> = Mutex::new(Weak::new());

/// Flashes berth.raw onto a fresh sparse file of [`STICK_SIZE`] bytes
/// (once for the tests that run together) and checks what was written.
fn stick() -> Arc<Stick> {
    let mut shared = STICK.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = shared.upgrade() {
        return s;
    }
    let dir = WorkDir::create("flash-stick").expect("a scratch directory");
    let path = dir.join("stick.raw");
    File::create(&path).and_then(|f| f.set_len(STICK_SIZE)).expect("creating the stick file");
    let image = image_dir().join("berth.raw");
    // A fresh (all-zero) disk: no question, no --yes needed.
    let out = flash(&[path.as_os_str(), "--image".as_ref(), image.as_os_str()]);
    assert!(out.status.success(), "berth-image flash failed:\n{}", text(&out));
    assert!(text(&out).contains("read back: sha256 "), "{}", text(&out));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), STICK_SIZE, "the stick keeps its size");
    same_prefix(&image, &path);
    let s = Arc::new(Stick { path, _dir: dir });
    *shared = Arc::downgrade(&s);
    s
}

/// The first bytes of `disk` are `image`, byte for byte.
fn same_prefix(image: &Path, disk: &Path) {
    let (mut a, mut b) = (File::open(image).expect("the image"), File::open(disk).expect("the disk"));
    let (mut ba, mut bb) = (vec![0u8; 4 << 20], vec![0u8; 4 << 20]);
    let mut at = 0u64;
    loop {
        let n = a.read(&mut ba).expect("reading the image");
        if n == 0 {
            break;
        }
        b.read_exact(&mut bb[..n]).expect("reading the disk");
        assert!(ba[..n] == bb[..n], "the disk differs from the image in the 4 MiB at {at}");
        at += n as u64;
    }
}

fn sysfs_number(vm: &mut Vm, path: &str) -> u64 {
    let text = vm.read_file(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    text.trim().parse().unwrap_or_else(|e| panic!("{path} holds {text:?}: {e}"))
}

/// Boots the stick on `bus`: ready, the verified root on its second
/// partition, the data partition grown to the last MiB before the backup
/// GPT of the 3 GiB disk and mounted on /var, then a clean power-off.
fn boot_stick(name: &str, bus: DiskBus) {
    let stick = stick();
    let mut vm = Vm::start(VmConfig::new().name(name).disk(&stick.path).disk_bus(bus))
        .unwrap_or_else(|e| panic!("starting the VM ({bus:?}): {e}"));
    if let Err(e) = vm.wait_ready(boot_timeout()) {
        panic!("the flashed disk on {bus:?}: no ready line: {e}");
    }
    let d = bus.guest_disk();
    assert_eq!(sysfs_number(&mut vm, &format!("/sys/block/{d}/size")) * SECTOR, STICK_SIZE, "{d}'s size");
    let slaves = vm.list_dir("/sys/block/dm-0/slaves").expect("listing dm-0's slaves");
    assert_eq!(slaves, [bus.guest_partition(2)], "dm-0 (the root) sits on root-a of {d}");

    let data = bus.guest_partition(4);
    let start = sysfs_number(&mut vm, &format!("/sys/class/block/{data}/start")) * SECTOR;
    let size = sysfs_number(&mut vm, &format!("/sys/class/block/{data}/size")) * SECTOR;
    let plan_start = disk::plan().into_iter().find(|(s, _, _)| s.label == DATA_LABEL).map(|(_, s, _)| s).unwrap();
    // The backup GPT (header and 128 entries) takes the last 33 sectors.
    let end = (STICK_SIZE - 33 * SECTOR) / MIB * MIB;
    assert_eq!((start, start + size), (plan_start, end), "{data} is not grown to the disk's last MiB");
    let console = vm.console_text();
    let grew = format!("data: grew /dev/{data} from {} to {} MiB", disk::DATA_SIZE / MIB, size / MIB);
    assert!(console.contains(&grew), "no {grew:?} on the console:\n{}", berth_qemu::tail(&console, 40));
    let mounts = vm.read_file("/proc/mounts").expect("/proc/mounts");
    assert!(
        mounts.lines().any(|l| l.starts_with(&format!("/dev/{data} /var ext4 rw"))),
        "/var is not ext4 on {data}:\n{mounts}"
    );

    vm.powerdown().expect("pressing the power button");
    let st = vm.wait_exit(shutdown_timeout()).expect("QEMU exits after the power button");
    assert!(st.success(), "QEMU exited with {st}");
    assert!(vm.console_text().contains(SHUTDOWN_DONE), "no clean shutdown");
}

#[test]
fn a_flashed_usb_stick_boots() {
    boot_stick("flash-usb", DiskBus::Usb);
}

#[test]
fn a_flashed_nvme_disk_boots() {
    boot_stick("flash-nvme", DiskBus::Nvme);
}

/// No VM: a disk that holds data is not overwritten without --yes when
/// nobody can be asked, and a missing device is not created as a file.
#[test]
fn flash_refuses_data_without_yes_and_missing_devices() {
    let dir = WorkDir::create("flash-refusals").expect("a scratch directory");
    let used = dir.join("used.raw");
    let old = vec![0xa5u8; 64 * 1024];
    std::fs::write(&used, &old).expect("writing a disk with data");
    let image = image_dir().join("berth.raw");
    let out = flash(&[used.as_os_str(), "--image".as_ref(), image.as_os_str()]);
    assert!(!out.status.success(), "flash overwrote data without --yes:\n{}", text(&out));
    assert!(text(&out).contains("holds data") && text(&out).contains("--yes"), "{}", text(&out));
    assert_eq!(std::fs::read(&used).expect("the disk"), old, "the disk was changed");

    let out = flash(&["/dev/berth-no-such-disk".as_ref(), "--image".as_ref(), image.as_os_str(), "--yes".as_ref()]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("no such device"), "{}", text(&out));
    assert!(!Path::new("/dev/berth-no-such-disk").exists());
}
