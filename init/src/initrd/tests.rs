use super::*;
use crate::boot::fake::FakeSystem;
use berth_layout::disk::partition_uuid;
use berth_layout::Guid;

#[test]
fn a_slots_command_line_plans_its_verity_root() {
    let g = Guid::derive("root");
    let cmdline = format!(
        "console=ttyS0 dm-mod.create=\"root,,,ro,0 8 verity 1 PARTUUID={g} PARTUUID={g} 4096 4096 1 2 sha256 ab cd\" \
         dm-mod.waitfor=PARTUUID={g} root=/dev/dm-0 rootfstype=erofs ro rootwait panic=10 berth.slot=a"
    );
    let p = plan(&cmdline).unwrap();
    assert_eq!(p.devices.len(), 1);
    assert_eq!(p.devices[0].name, "root");
    assert_eq!(p.waitfor, [format!("PARTUUID={g}")], "the mapped root itself is not waited for first");
    assert_eq!((p.root.as_str(), p.fstype.as_str(), p.read_only), ("/dev/dm-0", "erofs", true));
    assert_eq!((p.flags, p.init.as_str()), (None, "/sbin/init"));
}

#[test]
fn a_plain_root_is_waited_for_and_options_are_honoured() {
    let g = Guid::derive("plain");
    let p = plan(&format!("root=PARTUUID={g} rootfstype=ext4 rootflags=noatime rw init=/bin/sh")).unwrap();
    assert!(p.devices.is_empty());
    assert_eq!(p.waitfor, [format!("PARTUUID={g}")]);
    assert_eq!(
        (p.fstype.as_str(), p.read_only, p.flags.as_deref(), p.init.as_str()),
        ("ext4", false, Some("noatime"), "/bin/sh")
    );
}

#[test]
fn bad_command_lines_name_the_parameter() {
    assert!(matches!(plan("console=ttyS0 ro"), Err(InitrdError::NoRoot)));
    let e = plan("root=LABEL=root").unwrap_err();
    assert!(e.to_string().contains("root=\"LABEL=root\""), "{e}");
    let e = plan("root=/dev/dm-0 dm-mod.waitfor=PARTUUID=nope").unwrap_err();
    assert!(e.to_string().starts_with("kernel command line: dm-mod.waitfor="), "{e}");
    let e = plan("root=/dev/dm-0 dm-mod.create=\"root,,,rx,0 8 zero\"").unwrap_err();
    assert_eq!(e.to_string(), "dm-mod.create: device 1: flags: \"rx\": expected ro or rw");
}

#[test]
fn a_partuuid_resolves_to_its_partition_once_the_disk_is_there() {
    let root = partition_uuid("0.1.0", "root-a");
    let mut sys = FakeSystem::berth(512, 1024);
    assert_eq!(resolve(&mut sys, &format!("PARTUUID={root}")), Some(PathBuf::from("/dev/vda2")));
    // A PARTUUID on no disk (yet): waited for.
    let other = partition_uuid("9.9.9", "root-a");
    assert_eq!(resolve(&mut sys, &format!("PARTUUID={other}")), None);
    assert_eq!(resolve(&mut sys, "/dev/vdb"), Some(PathBuf::from("/dev/vdb")));
    assert_eq!(resolve(&mut sys, "/dev/dm-0"), None, "a node devtmpfs has not made yet");
}

#[test]
fn stage_0_mounts_the_node_a_partuuid_root_resolves_to() {
    // mount(2) takes a device node: `root=PARTUUID=...` is the kernel's
    // syntax, which stage 0 resolves itself (it once passed the spec on).
    let root = partition_uuid("0.1.0", "root-a");
    let mut sys = FakeSystem::berth(512, 1024);
    let p = plan(&format!("root=PARTUUID={root} rootfstype=ext4 rw")).unwrap();
    assert_eq!(wait_for_root(&mut sys, &p), PathBuf::from("/dev/vda2"));
    let p = plan("root=/dev/vdb").unwrap();
    assert_eq!(wait_for_root(&mut sys, &p), PathBuf::from("/dev/vdb"));
}

#[test]
fn the_read_ahead_is_set_on_the_queue_the_root_reads_through() {
    // dm-0 has a queue of its own; a partition reads through its disk's.
    let dm0 = nix::sys::stat::makedev(253, 0);
    assert_eq!(read_ahead_path(dm0, false), std::path::PathBuf::from("/sys/dev/block/253:0/queue/read_ahead_kb"));
    let vda2 = nix::sys::stat::makedev(254, 2);
    assert_eq!(read_ahead_path(vda2, true), std::path::PathBuf::from("/sys/dev/block/254:2/../queue/read_ahead_kb"));
}
