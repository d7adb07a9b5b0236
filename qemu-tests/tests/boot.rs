//! Boot: the image comes up to PID1's ready line on a dm-verity + EROFS
//! read-only root, runs its time sync, and the ACPI power button shuts it
//! down cleanly.

use std::time::{Duration, Instant};

use berth_layout::console::SHUTDOWN_DONE;
use berth_layout::paths::INIT;
use berth_qemu::{boot_timeout, shutdown_timeout, Vm, VmConfig};

/// The root mount in /proc/self/mountinfo: (major:minor, options, fs type, source).
fn root_mount(mountinfo: &str) -> Option<(String, String, String, String)> {
    mountinfo
        .lines()
        .rev()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let f: Vec<&str> = left.split_whitespace().collect();
            let r: Vec<&str> = right.split_whitespace().collect();
            (f.len() >= 6 && f[4] == "/" && r.len() >= 2)
                .then(|| (f[2].to_string(), f[5].to_string(), r[0].to_string(), r[1].to_string()))
        })
        // The last mount on / is the one in effect.
        .next()
}

/// The optional fields (`shared:N`, `master:N`, ...) of the last mount on
/// `target` in a mountinfo text.
fn mount_optional_fields(mountinfo: &str, target: &str) -> Option<Vec<String>> {
    mountinfo.lines().rev().find_map(|l| {
        let (left, _) = l.split_once(" - ")?;
        let f: Vec<&str> = left.split_whitespace().collect();
        (f.get(4) == Some(&target)).then(|| f.iter().skip(6).map(|s| s.to_string()).collect())
    })
}

/// The time of day in seconds of a log line that starts with an RFC 3339
/// timestamp in UTC (`2026-12-05T07:20:24.932104Z ...`).
fn log_seconds(line: &str) -> Option<f64> {
    let time = line.split_whitespace().next()?.split_once('T')?.1.strip_suffix('Z')?;
    let mut parts = time.split(':');
    let (h, m, s): (f64, f64, f64) =
        (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
    Some(h * 3600.0 + m * 60.0 + s)
}

#[test]
fn boots_to_ready_on_a_verified_read_only_root_and_powers_off_cleanly() {
    let mut vm = Vm::start(VmConfig::new().name("boot")).expect("starting the VM");
    let report = vm.wait_ready(boot_timeout()).expect("booting to ready");
    eprintln!("boot report: {report:?}");
    assert!(report.total > 0.0, "{report:?}");
    assert!(report.kernel > 0.0, "{report:?}");
    assert!(report.userspace > 0.0, "{report:?}");
    // Stage 0 ran from the UKI's initramfs: the ready line gives its share.
    assert!(report.initrd.is_some_and(|t| t > 0.0), "no initrd part on the ready line: {report:?}");
    if let Some(fw) = report.firmware_loader {
        assert!(fw > 0.0, "{report:?}");
    }

    // No user data anywhere: the probe says so and costs next to nothing
    // (local sources only; no metadata service on a machine DMI calls QEMU).
    let console = vm.console_text();
    let probe = console
        .lines()
        .find(|l| l.contains("user data: none found in"))
        .unwrap_or_else(|| panic!("no `user data: none found` line:\n{}", vm.paths().context()));
    let ms: u64 = probe
        .split("none found in ")
        .nth(1)
        .and_then(|r| r.split(" ms").next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no probe time in {probe:?}"));
    assert!(ms < 500, "finding no user data took {ms} ms: {probe}");
    assert!(probe.contains("imds: skipped"), "the metadata service is not asked on QEMU's DMI: {probe}");

    // PID1 is berth-init (started as /sbin/init, so its comm is "init").
    let exe = vm.sh_ok("readlink /proc/1/exe");
    assert_eq!(exe.trim(), INIT, "PID1's executable");
    // The admin shell (answering now) waited for the ready line or 5 s
    // after the units started (right after user data's line), whichever
    // came first, as systemd's serial getty (`Type=idle`) does: its exec is
    // not among the units' starts.
    let lines = vm.sh_ok(
        "grep -h -e 'berth: admin shell on' -e 'berth: ready in' -e 'berth: user data: none found' \
         /var/log/berth/berth.log",
    );
    let when = |needle: &str| {
        lines
            .lines()
            .find(|l| l.contains(needle))
            .and_then(log_seconds)
            .unwrap_or_else(|| panic!("no timed `{needle}` line:\n{lines}"))
    };
    let (shell, ready, units) = (when("admin shell on"), when("ready in"), when("user data: none found"));
    assert!(
        shell >= ready || shell - units >= 4.9,
        "the admin shell started {:.3} s after the units and {:.3} s before the ready line:\n{lines}",
        shell - units,
        ready - shell
    );

    // / is EROFS, read-only, on the device-mapper device "root" over vda2.
    let mountinfo = vm.read_file("/proc/self/mountinfo").expect("reading mountinfo");
    let (devno, opts, fstype, source) =
        root_mount(&mountinfo).unwrap_or_else(|| panic!("no / in mountinfo:\n{mountinfo}"));
    assert_eq!(fstype, "erofs", "/ is mounted from {source}:\n{mountinfo}");
    assert!(opts.split(',').any(|o| o == "ro"), "/ is not read-only ({opts})");
    let dm_dev = vm.read_file("/sys/block/dm-0/dev").expect("dm-0 exists");
    assert_eq!(devno, dm_dev.trim(), "/ ({source}) is not on dm-0:\n{mountinfo}");
    let dm_name = vm.read_file("/sys/block/dm-0/dm/name").expect("dm name");
    assert_eq!(dm_name.trim(), "root");
    let slaves = vm.list_dir("/sys/block/dm-0/slaves").expect("listing dm-0's slaves");
    assert_eq!(slaves, ["vda2"], "dm-0 sits on root-a");
    // Stage 0 reads the root in whole compressed clusters (4 MiB windows).
    let read_ahead = vm.read_file("/sys/block/dm-0/queue/read_ahead_kb").expect("dm-0's read-ahead");
    assert_eq!(read_ahead.trim(), "4096", "the root's read-ahead in KiB");
    // PID1 read the programs of the daemons the boot waits for (the image's
    // read-ahead list) into the page cache during early boot.
    let list = vm.read_file("/usr/lib/berth/boot-readahead.list").expect("the boot's read-ahead list");
    let listed: Vec<&str> = list.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).collect();
    assert_eq!(listed.first().copied(), Some("/usr/bin/containerd"), "the largest daemon first:\n{list}");
    assert!(listed.contains(&"/usr/bin/etcd"), "etcd's program is read ahead:\n{list}");
    let log = vm.sh_ok("grep 'readahead:' /var/log/berth/berth.log");
    let all = format!("readahead: {n} of {n} files", n = listed.len());
    assert!(log.contains(&all), "the boot's read-ahead did not read every listed file:\n{log}");
    let cmdline = vm.read_file("/proc/cmdline").expect("/proc/cmdline");
    assert!(
        cmdline.contains(" verity ") && cmdline.contains("root=/dev/dm-0"),
        "the root is set up as dm-verity: {cmdline}"
    );

    // Stage 0 loaded AHCI from the initramfs (QEMU's q35 has the
    // controller and its CD-ROM drive is probed), then locked module
    // loading for good; the initramfs's files are gone.
    let modules = vm.read_file("/proc/modules").expect("reading /proc/modules");
    for m in ["ahci", "libahci"] {
        assert!(
            modules.lines().any(|l| l.split_whitespace().next() == Some(m) && l.contains(" Live ")),
            "module {m} not loaded:\n{modules}"
        );
    }
    assert!(vm.list_dir("/sys/class/block").expect("listing block devices").iter().any(|d| d == "sr0"));
    let disabled = vm.read_file("/proc/sys/kernel/modules_disabled").expect("reading modules_disabled");
    assert_eq!(disabled.trim(), "1", "module loading is not locked after stage 0");

    // The mount tree is shared, as container hosts expect (Kubernetes'
    // bidirectional mounts, CSI drivers), and bpffs is mounted.
    let pid1_mounts = vm.read_file("/proc/1/mountinfo").expect("reading PID1's mountinfo");
    for target in ["/", "/run", "/var", "/etc"] {
        let optional = mount_optional_fields(&pid1_mounts, target)
            .unwrap_or_else(|| panic!("{target} is not a mount point:\n{pid1_mounts}"));
        assert!(
            optional.iter().any(|f| f.starts_with("shared:")),
            "{target} is not shared ({optional:?}):\n{pid1_mounts}"
        );
    }
    assert!(
        pid1_mounts.lines().any(|l| l.split(" - ").nth(1).is_some_and(|r| r.starts_with("bpf "))
            && l.split_whitespace().nth(4) == Some("/sys/fs/bpf")),
        "no bpf file system on /sys/fs/bpf:\n{pid1_mounts}"
    );

    // A shell (the admin console's, an SSH login's, a unit's `sh -c`) runs
    // the program PATH names, not a busybox applet of the same name: every
    // real program in /usr/bin and /usr/sbin is what `command -v` finds
    // (iproute2's `ip`, e2fsprogs' `tune2fs`, ...).
    let shadowed = vm.sh_ok(
        "for f in /usr/sbin/* /usr/bin/*; do [ -L \"$f\" ] && [ \"$(readlink \"$f\")\" = busybox ] && continue; \
         n=${f##*/}; p=$(command -v \"$n\"); case \"$p\" in /*) ;; *) echo \"$n -> ${p:-nothing}\";; esac; done",
    );
    assert!(shadowed.trim().is_empty(), "the shell runs a builtin or applet instead of the program:\n{shadowed}");
    let ip = vm.sh_ok("ip -V");
    assert!(ip.contains("iproute2"), "`ip` in a shell is not iproute2's: {ip}");

    // Time sync runs by default, without user data: chronyd (the `ntp`
    // unit, after network-online), with its system call filter loaded. It
    // keeps root: see the unit file for why.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut st, mut out) = vm.sh_status("berthctl status ntp");
    while st != 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        (st, out) = vm.sh_status("berthctl status ntp");
    }
    assert_eq!(st, 0, "the ntp unit is not active (exit {st}):\n{out}\n{}", vm.paths().context());
    // (chronyd and the helper process it forks.)
    let users = vm.sh_ok("for p in $(pidof chronyd); do stat -c %U /proc/$p; done | sort -u");
    assert_eq!(users.trim(), "root", "chronyd runs as a user an updated machine may not have");
    let logs = vm.sh_ok("berthctl logs ntp");
    assert!(logs.contains("Loaded seccomp filter"), "chronyd runs without its seccomp filter:\n{logs}");

    // Writing to / fails.
    let w = vm.sh("echo x > /berth-write-test").expect("running the write");
    assert_ne!(w.status, 0, "writing to / succeeded: {}", w.output);
    assert!(w.output.contains("Read-only file system"), "writing to / failed, but not as read-only: {}", w.output);

    // The ACPI power button shuts the machine down cleanly.
    vm.powerdown().expect("pressing the power button");
    let st = vm.wait_exit(shutdown_timeout()).expect("QEMU exits after the power button");
    assert!(st.success(), "QEMU exited with {st}");
    let console = vm.console_text();
    assert!(
        console.contains(SHUTDOWN_DONE),
        "no {SHUTDOWN_DONE:?} on the console:\n{}",
        berth_qemu::tail(&console, 40)
    );
}

#[test]
fn root_mount_is_read_from_mountinfo() {
    let m = "22 1 254:0 / / ro,relatime shared:1 - erofs /dev/root ro,user_xattr\n\
             23 22 0:5 / /dev rw,nosuid - devtmpfs devtmpfs rw\n";
    assert_eq!(root_mount(m), Some(("254:0".into(), "ro,relatime".into(), "erofs".into(), "/dev/root".into())));
    assert_eq!(mount_optional_fields(m, "/"), Some(vec!["shared:1".to_string()]));
    assert_eq!(mount_optional_fields(m, "/dev"), Some(vec![]));
    assert_eq!(mount_optional_fields(m, "/run"), None);
}
