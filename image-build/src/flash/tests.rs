use super::*;
use std::cell::RefCell;
use std::collections::BTreeMap;

const SDA: DevNum = DevNum { major: 8, minor: 0 };
const SDA1: DevNum = DevNum { major: 8, minor: 1 };
const SDA2: DevNum = DevNum { major: 8, minor: 2 };
const SDB: DevNum = DevNum { major: 8, minor: 16 };
const SDB1: DevNum = DevNum { major: 8, minor: 17 };
const SDC: DevNum = DevNum { major: 8, minor: 32 };
const DM0: DevNum = DevNum { major: 253, minor: 0 };
const GIB: u64 = 1 << 30;

/// A machine of disks: sda (the system: sda2 is /, sda1 /boot/efi),
/// sdb (a stick), sdc; devices as given.
struct Fake {
    paths: BTreeMap<PathBuf, Kind>,
    names: BTreeMap<DevNum, &'static str>,
    parents: BTreeMap<DevNum, DevNum>,
    slaves: BTreeMap<DevNum, Vec<DevNum>>,
    holders: BTreeMap<DevNum, Vec<String>>,
    mountinfo: String,
    size: u64,
    head: Vec<u8>,
    terminal: bool,
    answer: bool,
    asked: RefCell<Vec<String>>,
}

fn mount_line(id: u32, dev: DevNum, point: &str, source: &str) -> String {
    format!("{id} 1 {dev} / {point} rw,relatime shared:1 - ext4 {source} rw\n")
}

impl Fake {
    fn new() -> Fake {
        let mut paths = BTreeMap::new();
        for (p, d) in [("/dev/sda", SDA), ("/dev/sda1", SDA1), ("/dev/sda2", SDA2), ("/dev/sdb", SDB)] {
            paths.insert(PathBuf::from(p), Kind::Block(d));
        }
        paths.insert("/dev/sdb1".into(), Kind::Block(SDB1));
        paths.insert("/dev/sdc".into(), Kind::Block(SDC));
        paths.insert("/dev/dm-0".into(), Kind::Block(DM0));
        paths.insert("/dev/null".into(), Kind::Other);
        paths.insert("/tmp/disk.raw".into(), Kind::File);
        let names = BTreeMap::from([
            (SDA, "sda"),
            (SDA1, "sda1"),
            (SDA2, "sda2"),
            (SDB, "sdb"),
            (SDB1, "sdb1"),
            (SDC, "sdc"),
            (DM0, "dm-0"),
        ]);
        let parents = BTreeMap::from([(SDA1, SDA), (SDA2, SDA), (SDB1, SDB)]);
        let mountinfo = [
            mount_line(20, SDA2, "/", "/dev/sda2"),
            mount_line(21, SDA1, "/boot/efi", "/dev/sda1"),
            "22 20 0:5 / /proc rw - proc proc rw\n".to_string(),
            "23 20 0:25 / /tmp rw - tmpfs tmpfs rw\n".to_string(),
        ]
        .concat();
        Fake {
            paths,
            names,
            parents,
            slaves: BTreeMap::new(),
            holders: BTreeMap::new(),
            mountinfo,
            size: 32 * GIB,
            head: vec![0; HEAD as usize],
            terminal: false,
            answer: false,
            asked: RefCell::new(Vec::new()),
        }
    }

    fn mount(mut self, dev: DevNum, point: &str, source: &str) -> Fake {
        self.mountinfo.push_str(&mount_line(99, dev, point, source));
        self
    }
}

impl Machine for Fake {
    fn kind(&self, path: &Path) -> std::io::Result<Kind> {
        Ok(self.paths.get(path).copied().unwrap_or(Kind::Missing))
    }
    fn mountinfo(&self) -> std::io::Result<String> {
        Ok(self.mountinfo.clone())
    }
    fn name(&self, dev: DevNum) -> Option<String> {
        self.names.get(&dev).map(|s| s.to_string())
    }
    fn parent_disk(&self, dev: DevNum) -> Option<DevNum> {
        self.parents.get(&dev).copied()
    }
    fn slaves(&self, dev: DevNum) -> Vec<DevNum> {
        self.slaves.get(&dev).cloned().unwrap_or_default()
    }
    fn partitions(&self, disk: DevNum) -> Vec<DevNum> {
        self.parents.iter().filter(|(_, d)| **d == disk).map(|(p, _)| *p).collect()
    }
    fn holders(&self, dev: DevNum) -> Vec<String> {
        self.holders.get(&dev).cloned().unwrap_or_default()
    }
    fn size(&self, _: &Path) -> std::io::Result<u64> {
        Ok(self.size)
    }
    fn head(&self, _: &Path, len: u64) -> std::io::Result<Vec<u8>> {
        Ok(self.head[..len.min(self.head.len() as u64) as usize].to_vec())
    }
    fn interactive(&self) -> bool {
        self.terminal
    }
    fn confirm(&self, question: &str) -> std::io::Result<bool> {
        self.asked.borrow_mut().push(question.to_string());
        Ok(self.answer)
    }
}

fn opts(target: &str, yes: bool) -> FlashOptions {
    FlashOptions { target: target.into(), image: "berth.raw".into(), yes }
}

fn check_fake(m: &Fake, target: &str, yes: bool) -> Result<Target, FlashError> {
    check(m, &opts(target, yes), 1122 << 20)
}

#[test]
fn an_idle_empty_disk_and_a_file_are_taken() {
    let m = Fake::new();
    assert_eq!(check_fake(&m, "/dev/sdb", false).unwrap(), Target::Disk(SDB));
    assert_eq!(check_fake(&m, "/tmp/disk.raw", false).unwrap(), Target::File);
    assert_eq!(check_fake(&m, "/tmp/new.raw", false).unwrap(), Target::File);
    assert!(m.asked.borrow().is_empty());
}

#[test]
fn the_disk_of_the_running_system_is_refused() {
    let m = Fake::new();
    let e = check_fake(&m, "/dev/sda", true).unwrap_err();
    assert!(matches!(&e, FlashError::RunningSystem { what, .. } if what.contains("/dev/sda2 on /")), "{e}");
    // The root on device-mapper (LVM, LUKS, verity) over sdc.
    let mut m = Fake::new();
    m.mountinfo = [mount_line(20, DM0, "/", "/dev/mapper/root"), mount_line(21, SDB1, "/boot", "/dev/sdb1")].concat();
    m.slaves.insert(DM0, vec![SDC]);
    assert!(matches!(check_fake(&m, "/dev/sdc", true), Err(FlashError::RunningSystem { .. })));
    let e = check_fake(&m, "/dev/sdb", true).unwrap_err();
    assert!(matches!(&e, FlashError::RunningSystem { what, .. } if what.contains("on /boot")), "{e}");
}

#[test]
fn a_disk_with_a_mounted_partition_is_refused() {
    let m = Fake::new().mount(SDB1, "/media/stick", "/dev/sdb1");
    let e = check_fake(&m, "/dev/sdb", true).unwrap_err();
    assert!(matches!(&e, FlashError::Mounted { what, .. } if what == "/dev/sdb1 on /media/stick"), "{e}");
    assert!(e.to_string().contains("unmount it first"), "{e}");
    // A btrfs-like mount: an anonymous device number, the source names the partition.
    let m = Fake::new().mount(DevNum { major: 0, minor: 40 }, "/srv", "/dev/sdb1");
    assert!(matches!(check_fake(&m, "/dev/sdb", true), Err(FlashError::Mounted { .. })));
}

#[test]
fn a_disk_under_device_mapper_is_refused() {
    let mut m = Fake::new();
    m.holders.insert(SDB1, vec!["dm-3".into()]);
    let e = check_fake(&m, "/dev/sdb", true).unwrap_err();
    assert!(matches!(&e, FlashError::InUse { holders, .. } if holders == "dm-3"), "{e}");
}

#[test]
fn partitions_and_other_things_are_refused() {
    let m = Fake::new();
    let e = check_fake(&m, "/dev/sdb1", true).unwrap_err();
    assert!(matches!(&e, FlashError::Partition { disk, .. } if disk == "sdb"), "{e}");
    assert!(matches!(check_fake(&m, "/dev/null", true), Err(FlashError::NotADisk(_))));
    assert!(matches!(check_fake(&m, "/dev/sdz", true), Err(FlashError::NoSuchDevice(_))));
    let mut small = Fake::new();
    small.size = GIB;
    assert!(matches!(check_fake(&small, "/dev/sdb", true), Err(FlashError::TooSmall { .. })));
}

#[test]
fn data_is_overwritten_only_when_the_user_says_so() {
    let mut m = Fake::new();
    m.head[510] = 0x55;
    // No terminal, no --yes: refused without asking.
    let e = check_fake(&m, "/dev/sdb", false).unwrap_err();
    assert!(matches!(e, FlashError::HoldsData(_)), "{e}");
    assert!(e.to_string().contains("--yes"), "{e}");
    // --yes: taken without asking.
    assert_eq!(check_fake(&m, "/dev/sdb", true).unwrap(), Target::Disk(SDB));
    assert!(m.asked.borrow().is_empty());
    // A terminal: asked; N declines, y accepts.
    m.terminal = true;
    assert!(matches!(check_fake(&m, "/dev/sdb", false), Err(FlashError::Declined(_))));
    m.answer = true;
    assert_eq!(check_fake(&m, "/tmp/disk.raw", false).unwrap(), Target::File);
    let asked = m.asked.borrow();
    assert_eq!(asked.len(), 2);
    assert!(asked[0].starts_with("/dev/sdb (32.0 GiB) holds data. Overwrite it with berth.raw? [y/N]"));
}

#[test]
fn mountinfo_is_parsed_with_escapes() {
    let text = "36 35 98:0 /mnt1 /mnt/my\\040disk rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                37 36 0:5 / /proc rw - proc proc rw\n";
    let m = parse_mountinfo(text);
    assert_eq!(
        m[0],
        Mount { dev: DevNum { major: 98, minor: 0 }, source: "/dev/root".into(), point: "/mnt/my disk".into() }
    );
    assert_eq!(m[1].point, "/proc");
    assert_eq!(DevNum::parse("259:3"), Some(DevNum { major: 259, minor: 3 }));
    assert_eq!(DevNum::parse("x"), None);
}

/// A real write to a file: its size is kept, old data is gone, the
/// read-back matches; the image itself is refused as a target.
#[test]
fn a_file_is_written_and_read_back() {
    let dir = std::env::temp_dir().join(format!("berth-flash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let image = dir.join("image.raw");
    let mut data = vec![0u8; 3 * CHUNK + 4096];
    data[..8].copy_from_slice(b"EFI PART");
    data[2 * CHUNK + 5] = 9;
    std::fs::write(&image, &data).unwrap();
    let target = dir.join("disk.raw");
    let mut old = vec![0u8; 20 * CHUNK];
    old[CHUNK + 1] = 1; // data inside the image's range, where the image is zero
    std::fs::write(&target, &old).unwrap();
    let o = FlashOptions { target: target.clone(), image: image.clone(), yes: true };
    let done = flash_on(&RealMachine, &o).unwrap();
    assert_eq!(done.bytes, data.len() as u64);
    assert_eq!(done.sha256, hex(&Sha256::digest(&data)));
    let after = std::fs::read(&target).unwrap();
    assert_eq!(after.len(), old.len(), "the file keeps its size");
    assert_eq!(&after[..data.len()], &data[..]);
    assert!(after[data.len()..].iter().all(|b| *b == 0));
    // Without --yes and without a terminal, the data on it is kept.
    let o = FlashOptions { yes: false, ..o };
    if !RealMachine.interactive() {
        assert!(matches!(flash_on(&RealMachine, &o), Err(FlashError::HoldsData(_))));
    }
    let same = FlashOptions { target: image.clone(), image: image.clone(), yes: true };
    assert!(matches!(flash_on(&RealMachine, &same), Err(FlashError::SameAsImage(_))));
    std::fs::remove_dir_all(&dir).unwrap();
}
