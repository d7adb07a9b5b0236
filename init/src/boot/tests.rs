//! The early boot sequence against the fake machine.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use berth_layout::disk::{partition_uuid, DATA_LABEL};
use berth_layout::gpt::Gpt;
use nix::errno::Errno;

use super::data::{DataError, Fsck, Prepared, Resize};
use super::discover::DiscoverError;
use super::fake::{berth_image, FakeSystem, MIB};
use super::*;
use berth_layout::disk::DATA_FORMATTING_ATTR;

/// Both phases, as PID1 runs them.
fn boot(sys: &mut FakeSystem) -> Result<BootReport, BootFailure> {
    early_mounts(sys)?;
    storage_and_identity(sys)
}

fn mount_targets(sys: &FakeSystem) -> Vec<String> {
    sys.calls_starting("mount ")
        .iter()
        .map(|c| c.split(" on ").nth(1).unwrap().split(' ').next().unwrap().to_string())
        .collect()
}

#[test]
fn early_mounts_come_in_order_with_their_options() {
    let mut sys = FakeSystem::berth(10, 10);
    early_mounts(&mut sys).unwrap();
    assert_eq!(
        mount_targets(&sys),
        [
            "/proc",
            "/sys",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/run",
            "/tmp",
            "/sys/fs/cgroup",
            "/sys/firmware/efi/efivars",
            "/sys/fs/bpf"
        ]
    );
    assert!(sys.calls.contains(&"mount bpf bpf on /sys/fs/bpf (mode=0700)".to_string()));
    // The whole tree is made shared once everything early is mounted.
    let shared = sys.pos("make-shared /");
    assert!(sys.calls.iter().rposition(|c| c.starts_with("mount ")).is_some_and(|last| last < shared));
    assert!(sys.pos("mkdir /dev/pts") > sys.pos("mount devtmpfs"));
    assert!(sys.pos("mkdir /dev/pts") < sys.pos("mount devpts"));
    assert!(sys.calls.contains(&"mount tmpfs tmpfs on /tmp (mode=1777)".to_string()));
    assert!(sys.calls.contains(&"mount tmpfs tmpfs on /run (mode=0755)".to_string()));
    assert!(sys.calls.contains(&"mount cgroup2 cgroup2 on /sys/fs/cgroup (nsdelegate)".to_string()));
    // The loopback comes up in early boot, once /proc and /sys are there.
    assert_eq!(sys.calls.iter().filter(|c| c.starts_with("link ")).collect::<Vec<_>>(), ["link lo up"]);
    assert!(sys.pos("link lo up") > sys.pos("mount sysfs"));
}

#[test]
fn already_mounted_and_ebusy_are_fine_and_efivarfs_needs_efi() {
    let mut sys = FakeSystem::berth(10, 10);
    // The kernel mounted devtmpfs itself (CONFIG_DEVTMPFS_MOUNT).
    sys.mounted.push(("devtmpfs".into(), "/dev".into(), "devtmpfs".into()));
    sys.mount_errors.insert("/tmp".into(), Errno::EBUSY);
    sys.dirs.remove(Path::new("/sys/firmware/efi"));
    early_mounts(&mut sys).unwrap();
    let targets = mount_targets(&sys);
    assert!(!targets.contains(&"/dev".to_string()), "{targets:?}");
    assert!(!targets.iter().any(|t| t.contains("efivars")), "{targets:?}");
    assert!(targets.contains(&"/tmp".to_string()));
}

#[test]
fn a_failed_mount_is_an_emergency_but_the_rest_are_still_tried() {
    let mut sys = FakeSystem::berth(10, 10);
    sys.mount_errors.insert("/run".into(), Errno::ENOMEM);
    let err = early_mounts(&mut sys).unwrap_err();
    assert_eq!(err.step, Step::Mounts);
    let text = err.to_string();
    assert!(text.starts_with("mounts: mounting tmpfs on /run: ENOMEM"), "{text}");
    assert!(mount_targets(&sys).contains(&"/sys/fs/cgroup".to_string()));

    // efivarfs is optional.
    let mut sys = FakeSystem::berth(10, 10);
    sys.mount_errors.insert("/sys/firmware/efi/efivars".into(), Errno::ENODEV);
    early_mounts(&mut sys).unwrap();
}

#[test]
fn first_boot_formats_then_mounts_and_sets_up_etc() {
    let mut sys = FakeSystem::berth(10, 10);
    let report = boot(&mut sys).unwrap();
    // The data partition is 6..10 MiB minus the backup table: it grew to the
    // end of the disk even though the disk was not enlarged.
    assert_eq!(sys.calls_starting("run ").len(), 1, "{:#?}", sys.calls);
    assert_eq!(
        sys.calls_starting("run ")[0],
        "run /usr/sbin/mke2fs -t ext4 -L data -E lazy_itable_init=1,lazy_journal_init=1,nodiscard -F /dev/vda4"
    );
    let format = sys.pos("run /usr/sbin/mke2fs");
    let mount_var = sys.pos("mount ext4 /dev/vda4 on /var");
    let overlay = sys.pos("mount overlay overlay on /etc");
    assert!(format < mount_var && mount_var < overlay);
    assert!(sys.pos("mkdir /var/lib/berth/etc/upper 755") > mount_var);
    assert!(sys.pos("mkdir /var/lib/berth/etc/work 755") < overlay);
    assert!(sys.pos("mkdir /var/tmp 1777") > mount_var);
    assert!(sys.pos("mkdir /var/log 755") > mount_var);
    assert!(sys.pos("mkdir /var/root 700") > mount_var);
    assert!(sys.pos("mkdir /var/root/.ssh 700") > sys.pos("mkdir /var/root 700"));
    assert!(sys.calls.contains(
        &"mount overlay overlay on /etc (lowerdir=/etc,upperdir=/var/lib/berth/etc/upper,workdir=/var/lib/berth/etc/work)"
            .to_string()
    ));
    assert!(!sys.calls.iter().any(|c| c.contains("e2fsck")));
    assert!(sys.pos("write /etc/machine-id") > overlay);
    assert!(matches!(report.data.prepared, Prepared::Formatted { .. }));
    assert_eq!(report.data.device, PathBuf::from("/dev/vda4"));
    assert!(report.machine_id_created);
    assert_eq!(report.hostname, format!("berth-{}", &report.machine_id[..8]));
    assert!(sys.calls.contains(&format!("hostname berth-{}", &report.machine_id[..8])));
    let lines = report.lines();
    assert!(lines.contains(&"data: formatted /dev/vda4 (3 MiB)".to_string()), "{lines:?}");
    assert!(lines.contains(&"data: mounted /dev/vda4 on /var (new)".to_string()), "{lines:?}");
}

#[test]
fn a_file_where_roots_home_goes_is_a_warning_and_the_boot_goes_on() {
    let mut sys = FakeSystem::berth(10, 10);
    assert_eq!(boot(&mut sys).unwrap().data.root_home, None);
    sys.reboot();
    sys.files.insert("/var/root/.ssh".into(), b"not a directory".to_vec());
    let report = boot(&mut sys).unwrap();
    let line = "data: WARNING: creating /var/root/.ssh: File exists (os error 17); root's SSH keys \
                (/var/root/.ssh/authorized_keys) cannot be read";
    assert!(report.lines().contains(&line.to_string()), "{:?}", report.lines());
}

#[test]
fn second_boot_after_a_clean_shutdown_mounts_without_a_check_or_format() {
    let mut sys = FakeSystem::berth(10, 10);
    let first = boot(&mut sys).unwrap();
    sys.reboot();
    let report = boot(&mut sys).unwrap();
    assert!(sys.calls_starting("run ").is_empty(), "no e2fsck, mke2fs or resize2fs: {:#?}", sys.calls);
    assert!(sys.calls_starting("open-rw").is_empty(), "table untouched");
    assert_eq!(report.data.prepared, Prepared::Clean);
    assert_eq!(report.data.grew, None);
    assert!(!report.machine_id_created);
    assert_eq!(report.machine_id, first.machine_id);
    assert!(sys.calls_starting("write").is_empty());
    assert!(report.lines().contains(&"data: mounted /dev/vda4 on /var (clean)".to_string()));
}

#[test]
fn a_boot_after_a_power_cut_replays_the_journal_with_e2fsck_before_mounting() {
    let mut sys = FakeSystem::berth(10, 10);
    boot(&mut sys).unwrap();
    sys.power_cut();
    let report = boot(&mut sys).unwrap();
    assert_eq!(sys.calls_starting("run "), ["run /usr/sbin/e2fsck -p /dev/vda4"], "no mke2fs, no resize2fs");
    assert!(sys.pos("run /usr/sbin/e2fsck") < sys.pos("mount ext4 /dev/vda4 on /var"));
    let reason = "its journal needs replaying (it was not unmounted)";
    assert_eq!(report.data.prepared, Prepared::Checked { reason: reason.into(), fsck: Fsck::Clean });
    let line = format!("data: mounted /dev/vda4 on /var (checked, as {reason}: clean)");
    assert!(report.lines().contains(&line), "{:?}", report.lines());

    // Errors the kernel recorded are checked for even after a clean shutdown.
    sys.reboot();
    sys.edit_superblock("vda4", |sb| sb[0x3A] |= 0x2);
    let report = boot(&mut sys).unwrap();
    assert_eq!(sys.calls_starting("run "), ["run /usr/sbin/e2fsck -p /dev/vda4"]);
    assert!(matches!(&report.data.prepared, Prepared::Checked { reason, .. } if reason.contains("recorded errors")));
}

fn data_attributes(sys: &FakeSystem) -> u64 {
    let table = sys.disk("vda");
    let gpt = Gpt::read(&mut Cursor::new(&table), 512, table.len() as u64).unwrap();
    gpt.by_name(DATA_LABEL).unwrap().attributes
}

#[test]
fn a_first_boot_format_cut_short_is_done_again_at_the_next_boot() {
    let mut sys = FakeSystem::berth(10, 10);
    // The power goes during mke2fs: it never returns, and what it wrote so
    // far (here one byte 4 KiB in) is neither zeros nor a file system.
    sys.exit_codes.insert("mke2fs", 1);
    early_mounts(&mut sys).unwrap();
    let err = storage_and_identity(&mut sys).unwrap_err();
    assert!(matches!(err.error, BootError::Data(DataError::Tool { tool: "mke2fs", .. })), "{err}");
    assert_ne!(data_attributes(&sys) & DATA_FORMATTING_ATTR, 0, "the attempt is recorded before mke2fs");
    sys.write_part("vda4", 4096, &[1]);
    sys.exit_codes.clear();
    sys.reboot();

    let report = boot(&mut sys).unwrap();
    assert!(matches!(report.data.prepared, Prepared::Formatted { .. }), "{:?}", report.data);
    assert_eq!(data_attributes(&sys) & DATA_FORMATTING_ATTR, 0, "the record is cleared after mke2fs");
    assert!(sys.pos("run /usr/sbin/mke2fs") < sys.pos("mount ext4 /dev/vda4 on /var"));

    // The next boot mounts it like any other.
    sys.reboot();
    let again = boot(&mut sys).unwrap();
    assert_eq!(again.data.prepared, Prepared::Clean);
    assert!(sys.calls_starting("run /usr/sbin/mke2fs").is_empty());
}

#[test]
fn unknown_content_is_an_emergency_and_never_formatted() {
    let mut sys = FakeSystem::berth(10, 10);
    early_mounts(&mut sys).unwrap();
    sys.write_part("vda4", 512 * 1024, b"someone's data");
    let err = storage_and_identity(&mut sys).unwrap_err();
    assert_eq!(err.step, Step::DataPartition);
    assert!(matches!(err.error, BootError::Data(DataError::UnknownContent { .. })));
    assert!(err.to_string().contains("/dev/vda4"), "{err}");
    assert!(sys.calls_starting("run ").is_empty(), "{:#?}", sys.calls);
    assert!(!mount_targets(&sys).contains(&"/var".to_string()));
}

#[test]
fn enlarged_disk_grows_the_partition_then_the_filesystem() {
    let mut sys = FakeSystem::berth(10, 10);
    boot(&mut sys).unwrap();
    sys.enlarge("vda", 64);
    sys.reboot();
    let report = boot(&mut sys).unwrap();

    let table = sys.disk("vda");
    let gpt = Gpt::read(&mut Cursor::new(&table), 512, table.len() as u64).unwrap();
    let data = gpt.by_name(DATA_LABEL).unwrap();
    assert_eq!(gpt.total_sectors, 64 * 2048, "backup table moved to the end");
    // The last MiB boundary before the last usable sector.
    assert_eq!(data.last_lba, 64 * 2048 - 2048 - 1, "{data:?}, last usable {}", gpt.last_usable);
    let blkpg = format!("blkpg /dev/vda 4 {} {}", 6 * MIB, data.sectors() * 512);
    let order = [
        sys.pos("open-rw /dev/vda"),
        sys.pos(&blkpg),
        sys.pos("mount ext4 /dev/vda4 on /var"),
        sys.pos("run /usr/sbin/resize2fs /dev/vda4"),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{:#?}", sys.calls);
    assert_eq!(report.data.grew.map(|(a, b)| (a / MIB, b / MIB)), Some((3, 57)));
    assert_eq!(report.data.grew.map(|(_, b)| b % MIB), Some(0), "a whole number of MiB");
    match report.data.resized {
        Some(Resize::Grew { from, to }) => assert_eq!((from / MIB, to / MIB), (3, 57)),
        other => panic!("{other:?}"),
    }
    let lines = report.lines();
    assert!(lines.contains(&"data: grew /dev/vda4 from 3 to 57 MiB".to_string()), "{lines:?}");
    assert!(lines.contains(&"data: resized the filesystem on /dev/vda4 from 3 to 57 MiB".to_string()), "{lines:?}");

    // The next boot finds nothing to grow.
    sys.reboot();
    let again = boot(&mut sys).unwrap();
    assert_eq!((again.data.grew, again.data.resized), (None, None));
    assert!(sys.calls_starting("blkpg").is_empty());
}

#[test]
fn first_boot_on_an_enlarged_disk_grows_before_formatting() {
    let mut sys = FakeSystem::berth(10, 32);
    let report = boot(&mut sys).unwrap();
    assert!(sys.pos("blkpg /dev/vda 4") < sys.pos("run /usr/sbin/mke2fs"));
    // From 6 MiB to the last MiB boundary before the backup table (33
    // sectors) and header.
    assert_eq!(report.data.prepared, Prepared::Formatted { bytes: 31 * MIB - 6 * MIB });
    assert!(sys.calls_starting("run /usr/sbin/resize2fs").is_empty());
}

#[test]
fn a_4kn_disk_is_read_grown_and_formatted_in_4096_byte_sectors() {
    // The image's 4Kn variant on an enlarged disk whose kernel reports
    // 4096-byte logical sectors: the GPT is in those sectors.
    let mut sys = FakeSystem::berth_with_sectors(10, 32, 4096);
    let report = boot(&mut sys).unwrap();
    assert_eq!(report.data.grew, Some((2 * MIB, 25 * MIB)), "{:?}", report.data);
    assert_eq!(report.data.prepared, Prepared::Formatted { bytes: 25 * MIB });
    assert_eq!(sys.calls_starting("blkpg"), [format!("blkpg /dev/vda 4 {} {}", 6 * MIB, 25 * MIB)]);
    assert!(sys.pos("blkpg /dev/vda 4") < sys.pos("run /usr/sbin/mke2fs"));
    let table = sys.disk("vda");
    let gpt = Gpt::read(&mut Cursor::new(&table), 4096, table.len() as u64).unwrap();
    assert_eq!(gpt.total_sectors, 32 * 256, "the backup table moved to the end, in 4096-byte sectors");
    // From 6 MiB to the last MiB boundary before the backup table (5 sectors).
    let data = gpt.by_name(DATA_LABEL).unwrap();
    assert_eq!((data.first_lba, data.last_lba), (6 * 256, 31 * 256 - 1));
    assert!(Gpt::read(&mut Cursor::new(&table), 512, table.len() as u64).is_err(), "no 512-byte table was written");

    sys.reboot();
    let again = boot(&mut sys).unwrap();
    assert_eq!((again.data.grew, again.data.prepared), (None, Prepared::Clean));
}

#[test]
fn a_kernel_that_keeps_the_old_size_is_an_error() {
    let mut sys = FakeSystem::berth(10, 32);
    sys.kernel_follows_blkpg = false;
    early_mounts(&mut sys).unwrap();
    let err = storage_and_identity(&mut sys).unwrap_err();
    assert!(matches!(err.error, BootError::Data(DataError::KernelSize { .. })), "{err}");
    assert!(sys.calls_starting("run").is_empty());
}

#[test]
fn fsck_errors_it_cannot_fix_are_an_emergency_a_reboot_request_is_not() {
    let mut sys = FakeSystem::berth(10, 10);
    boot(&mut sys).unwrap();
    sys.power_cut();
    sys.exit_codes.insert("e2fsck", 4);
    let err = boot(&mut sys).unwrap_err();
    assert_eq!(err.step, Step::DataPartition);
    assert_eq!(err.to_string(), "data partition: /dev/vda4: e2fsck found errors it could not fix (exit status 4)");
    assert!(!mount_targets(&sys).contains(&"/var".to_string()));

    sys.power_cut();
    sys.exit_codes.insert("e2fsck", 2);
    let report = boot(&mut sys).unwrap();
    assert!(matches!(report.data.prepared, Prepared::Checked { fsck: Fsck::RebootRecommended, .. }));
    let line = "data: mounted /dev/vda4 on /var (checked, as its journal needs replaying (it was not unmounted): repaired, reboot recommended)";
    assert!(report.lines().contains(&line.to_string()), "{:?}", report.lines());
}

#[test]
fn a_failed_mke2fs_is_an_emergency() {
    let mut sys = FakeSystem::berth(10, 10);
    sys.exit_codes.insert("mke2fs", 1);
    let err = boot(&mut sys).unwrap_err();
    assert_eq!(err.to_string(), "data partition: /dev/vda4: mke2fs failed (exit status 1)");
}

#[test]
fn the_boot_disk_is_the_one_named_on_the_command_line() {
    // A second disk from another image sorts first; it is left alone.
    let mut sys = FakeSystem::berth(10, 10);
    sys.add_disk("sda", &berth_image(10, 10, partition_uuid("9.9.9", "root-a")));
    let before = sys.disk("sda");
    let report = boot(&mut sys).unwrap();
    assert_eq!(report.data.device, PathBuf::from("/dev/vda4"));
    assert_eq!(sys.disk("sda"), before);
}

#[test]
fn of_two_disks_with_the_boot_partuuid_the_one_under_the_verity_root_is_used() {
    // The kernel built dm-0 on vdc2: vdc is the boot disk, vda is left alone.
    let mut sys = FakeSystem::berth(10, 10);
    sys.add_disk("vdc", &sys.disk("vda"));
    sys.add_dir("/sys/class/block/dm-0/slaves/vdc2");
    let before = sys.disk("vda");
    let report = boot(&mut sys).unwrap();
    assert_eq!(report.data.device, PathBuf::from("/dev/vdc4"));
    assert_eq!(sys.disk("vda"), before);
}

#[test]
fn two_disks_with_the_boot_partuuid_are_refused() {
    let mut sys = FakeSystem::berth(10, 10);
    sys.add_disk("vdc", &sys.disk("vda"));
    let err = boot(&mut sys).unwrap_err();
    assert!(matches!(err.error, BootError::Data(DataError::Discover(DiscoverError::AmbiguousRoot { .. }))), "{err}");
    assert!(err.to_string().contains("vda, vdc"), "{err}");
    assert!(sys.calls_starting("open-rw").is_empty());
}

#[test]
fn no_partuuid_on_the_command_line_is_explained() {
    let mut sys = FakeSystem::berth(10, 10);
    sys.set_file("/proc/cmdline", "root=/dev/vda2\n");
    let err = boot(&mut sys).unwrap_err();
    assert!(err.to_string().contains("no PARTUUID="), "{err}");
}

#[test]
fn partitions_are_named_from_sysfs_not_guessed() {
    // nvme names partitions nvme0n1p4; the name comes from sysfs.
    let mut sys = FakeSystem::berth(10, 10);
    let image = sys.disk("vda");
    sys.disks.clear();
    sys.parts.clear();
    sys.files.retain(|p, _| !p.starts_with("/sys/class/block"));
    sys.dirs.retain(|p| !p.starts_with("/sys/class/block/vd"));
    sys.add_disk("nvme0n1", &image);
    // add_disk names partitions <disk><n>; rename as the nvme driver does.
    let files: Vec<_> = sys.files.keys().cloned().collect();
    for f in files {
        let s = f.to_string_lossy().replace("nvme0n14", "nvme0n1p4");
        if s != f.to_string_lossy() {
            let v = sys.files.remove(&f).unwrap();
            sys.set_file(&s, v);
        }
    }
    let part = sys.parts.remove("nvme0n14").unwrap();
    sys.parts.insert("nvme0n1p4".into(), part);
    sys.dirs.retain(|d| !d.to_string_lossy().ends_with("nvme0n14"));
    let report = boot(&mut sys).unwrap();
    assert_eq!(report.data.device, PathBuf::from("/dev/nvme0n1p4"));
}

#[test]
fn hostname_from_etc_hostname_is_used() {
    let mut sys = FakeSystem::berth(10, 10);
    sys.set_file("/etc/hostname", "node-7\n");
    let report = boot(&mut sys).unwrap();
    assert_eq!(report.hostname, "node-7");
    assert!(sys.calls.contains(&"hostname node-7".to_string()));
}

#[test]
fn a_failed_resize2fs_is_a_warning_not_an_emergency() {
    let mut sys = FakeSystem::berth(10, 10);
    boot(&mut sys).unwrap();
    sys.enlarge("vda", 64);
    sys.reboot();
    sys.exit_codes.insert("resize2fs", 1);
    let report = boot(&mut sys).unwrap();
    assert!(matches!(report.data.resized, Some(Resize::Failed { .. })));
    let lines = report.lines();
    assert!(
        lines.contains(
            &"data: WARNING: the filesystem on /dev/vda4 stays at 3 MiB of its 57 MiB partition: resize2fs failed (exit status 1)"
                .to_string()
        ),
        "{lines:?}"
    );
    assert!(mount_targets(&sys).contains(&"/etc".to_string()));
}

#[test]
fn early_boot_raises_the_ceilings_on_open_files_once_proc_is_mounted() {
    let mut sys = FakeSystem::berth(10, 10);
    early_mounts(&mut sys).unwrap();
    assert!(sys.pos("mount proc") < sys.pos("sysctl fs/nr_open=1073741816"));
    assert!(sys.calls.contains(&"sysctl fs/file-max=9223372036854775807".to_string()));
    let read = |sys: &FakeSystem, p: &str| String::from_utf8(sys.read_file(Path::new(p)).unwrap()).unwrap();
    assert_eq!(read(&sys, "/proc/sys/fs/nr_open"), "1073741816\n");
    assert_eq!(read(&sys, "/proc/sys/fs/file-max"), "9223372036854775807\n");
    // PID1's hard limit up to fs.nr_open; its soft one (what the shell and
    // boot tools inherit) stays.
    assert!(sys.pos("sysctl fs/nr_open") < sys.pos("rlimit nofile"));
    assert_eq!(sys.nofile, (1024, 1_073_741_816));

    // A kernel that refuses the value: the hard limit follows what it
    // kept, and the boot goes on.
    let mut sys = FakeSystem::berth(10, 10);
    sys.sysctl_errors.insert("fs/nr_open".into());
    early_mounts(&mut sys).unwrap();
    assert_eq!(sys.nofile, (1024, 1_048_576));
    assert!(sys.calls.contains(&"sysctl fs/file-max=9223372036854775807".to_string()));
    let problems = ceilings::raise(&mut sys);
    assert_eq!(problems, ["setting fs.nr_open to 1073741816: Invalid argument (os error 22)"]);

    // Already high enough (a second boot phase, a kexec): left alone.
    let mut sys = FakeSystem::berth(10, 10);
    sys.nofile = (1024, u64::MAX);
    early_mounts(&mut sys).unwrap();
    assert!(sys.calls_starting("rlimit").is_empty(), "{:?}", sys.calls);
}

#[test]
fn phase_one_arms_the_watchdog_and_reads_the_boot_counter_after_the_mounts() {
    use super::deadline::LOADER_BOOT_COUNT_VAR;
    use super::fake::FakeWatchdog;
    let mut sys = FakeSystem::berth(1024, 1024);
    let dog = FakeWatchdog::install(&mut sys, "/dev/watchdog0", "i6300ESB timer");
    let mut var = vec![7, 0, 0, 0];
    for u in "\\loader\\entries\\berth-0.1.0+2-1.conf".encode_utf16().chain([0]) {
        var.extend_from_slice(&u.to_le_bytes());
    }
    sys.files.insert(LOADER_BOOT_COUNT_VAR.into(), var);
    let one = phase_one(&mut sys);
    one.mounted.unwrap();
    assert_eq!(one.watchdog.unwrap().timeout(), std::time::Duration::from_secs(60));
    assert_eq!(dog.calls(), ["open /dev/watchdog0", "set-timeout 60", "keepalive"]);
    assert_eq!(one.counted.as_deref(), Some("\\loader\\entries\\berth-0.1.0+2-1.conf"));

    let mut sys = FakeSystem::berth(1024, 1024);
    sys.mount_errors.insert("/proc".into(), Errno::ENODEV);
    let one = phase_one(&mut sys);
    assert!(one.mounted.is_err() && one.watchdog.is_none() && one.counted.is_none(), "{one:?}");
}
