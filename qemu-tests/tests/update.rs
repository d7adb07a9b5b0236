//! A/B updates end to end, through OVMF and systemd-boot with real
//! reboots: versions N, N+1 and broken variants are built from this tree
//! and signed with a test key; a user's `berthctl update` installs them
//! from a file and from an HTTP server on the host; the machine blesses a
//! good boot, falls back by itself from a bad one, refuses bad bundles
//! before writing, and survives power cuts in the middle of it all. The
//! main cycle runs with Secure Boot enforced (the releases' UKIs are
//! signed with the snakeoil key OVMF enrolls): an update keeps the chain
//! of trust, command line and root hash included.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_layout::console::{READY_PREFIX, UNITS_STOPPED_PREFIX};
use berth_layout::disk::{root_partition_uuid, Slot};
use berth_qemu::cluster;
use berth_qemu::http::{CuttingProxy, StaticServer};
use berth_qemu::releases::{resign, Release, ReleaseBuilder};
use berth_qemu::updates::{self, install, install_paused, running_version, status, wait_blessed, CUT_POINTS};
use berth_qemu::{boot_timeout, fat_image, workspace_root, Vm, VmConfig, FW_CFG_USER_DATA, GIB, MIB};
use berth_updater::bundle::{load_signing_key, open, KeyRing, ROOT_PAYLOAD};
use berth_updater::bundle::{HEADER_LEN, SIGNATURE_BLOCK_LEN};

/// The versions: N, N+1, and the broken ones.
const N: &str = "1.0.0";
const N1: &str = "1.1.0";
const GATE_FAILS: &str = "1.2.0";
const PANICS: &str = "1.3.0";
const CORRUPTED: &str = "1.4.0";

/// The VMs' disks: big enough for etcd (its first WAL file takes 64 MB;
/// on the image's bare 32 MiB data partition etcd cannot start and the
/// health gate rightly never passes).
const DISK: u64 = 4 * GIB;

/// The health gate's deadline the tests set in /etc (the default is 5 min).
const DEADLINE_S: u64 = 40;

fn root() -> PathBuf {
    workspace_root().join("target").join("berth-updates")
}

/// The releases, each built once per test run (tests in this file share them).
fn release(version: &str, variant: Option<&str>) -> Release {
    static BUILDER: OnceLock<ReleaseBuilder> = OnceLock::new();
    static BUILT: Mutex<Option<HashMap<String, Release>>> = Mutex::new(None);
    let builder = BUILDER.get_or_init(|| ReleaseBuilder::with_cargo(&root()).expect("the release builder"));
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let map = built.get_or_insert_with(HashMap::new);
    map.entry(version.to_string())
        .or_insert_with(|| {
            builder.build(version, variant).unwrap_or_else(|e| panic!("building {version} ({variant:?}): {e}"))
        })
        .clone()
}

fn builder() -> ReleaseBuilder {
    ReleaseBuilder::with_cargo(&root()).expect("the release builder")
}

/// A directory served over HTTP holding the given bundles.
fn www(name: &str, releases: &[&Release]) -> PathBuf {
    let dir = root().join(format!("www-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for r in releases {
        std::fs::copy(&r.bundle, dir.join(r.bundle.file_name().unwrap())).unwrap();
    }
    dir
}

fn bundle_name(version: &str) -> String {
    format!("berth-{version}.bundle")
}

fn sha256_of_slot_b(vm: &mut Vm) -> String {
    let out = vm.sh_timeout("sha256sum /dev/vda3", Duration::from_secs(300)).expect("hashing /dev/vda3");
    assert!(out.success(), "sha256sum /dev/vda3: {}", out.output);
    out.output.split_whitespace().next().unwrap_or_default().to_string()
}

/// Installs, asserting success and the slot named in the last line.
#[track_caller]
fn install_ok(vm: &mut Vm, source: &str, version: &str, slot: &str) {
    let (st, out) = install(vm, source, false).expect("berthctl update install");
    if st != 0 {
        panic!("installing {source} exited with status {st}:\n{}", updates::failed_install_report(vm, &out));
    }
    assert!(out.contains(&format!("installed {version} into slot {slot}")), "installing {source}:\n{out}");
}

/// The verity root hash of a release's root (from its signed bundle).
fn root_hash(release: &Release) -> String {
    let key = load_signing_key(builder().key()).expect("the releases' signing key");
    let mut ring = KeyRing::new();
    ring.add(key.verifying_key());
    let bundle = open(std::fs::File::open(&release.bundle).unwrap(), &ring).expect("opening the bundle");
    let root = bundle.manifest().payload(ROOT_PAYLOAD).expect("a root payload").clone();
    root.verity.expect("the root's verity geometry").root_hash
}

/// The slot booted with Secure Boot enforced, from the partition its
/// signed UKI names by the release's root hash.
#[track_caller]
fn assert_secure_boot_from(vm: &mut Vm, release: &Release, slot: Slot) {
    assert_eq!(vm.secure_boot_enforced(), Some(true), "Secure Boot is enforced on {}", release.version);
    let cmdline = vm.read_file("/proc/cmdline").unwrap();
    let partuuid = root_partition_uuid(&root_hash(release), slot);
    assert!(
        cmdline.contains(&format!("dm-mod.waitfor=PARTUUID={partuuid} "))
            && cmdline.contains(&format!("berth.slot={}", slot.name())),
        "{} runs from slot {} through its signed UKI's command line (PARTUUID {partuuid}):\n{cmdline}",
        release.version,
        slot.name()
    );
}

fn reboot_into(vm: &mut Vm, version: &str) -> updates::UpdateStatus {
    updates::reboot(vm).expect("berthctl reboot");
    vm.wait_ready(boot_timeout()).unwrap_or_else(|e| panic!("booting into {version}: {e}"));
    let s = wait_blessed(vm, Duration::from_secs(300)).unwrap_or_else(|e| panic!("blessing {version}: {e}"));
    assert_eq!(s.booted.version, version, "{}", s.text);
    assert_eq!(running_version(vm).unwrap(), version);
    assert_eq!(s.booted.state, "good", "{}", s.text);
    updates::wait_online(vm, Duration::from_secs(120)).expect("the network");
    s
}

/// N -> N+1 from a file and from HTTP (through a proxy that drops the
/// connection twice), reboot, blessed, /var and /etc kept; rollback back
/// and forth; N+2 whose health gate never passes spends its tries and the
/// machine is back on N+1 by itself, with the failure in `status`; the
/// automatic mode does not install it again.
#[test]
fn install_bless_rollback_and_a_gate_that_never_passes() {
    let n = release(N, None);
    let n1 = release(N1, None);
    let gate = release(GATE_FAILS, Some("gate-fails"));
    let dir = www("main", &[&n1, &gate]);
    let server = StaticServer::start(&dir).expect("the HTTP server");
    let bundle_bytes = std::fs::metadata(&n1.bundle).unwrap().len();
    let proxy = CuttingProxy::start(server.port(), 2, bundle_bytes / 3).expect("the cutting proxy");
    let stick = root().join("stick-main.img");
    fat_image(&stick, 128 * MIB, &[(n1.bundle.as_path(), &bundle_name(N1))]).expect("the stick");

    let mut vm =
        Vm::start(VmConfig::new().name("update").disk(&n.qcow2).disk_size(DISK).stick(&stick).secure_boot(true))
            .expect("starting N with Secure Boot enforced");
    vm.wait_ready(boot_timeout()).expect("N boots");
    assert_secure_boot_from(&mut vm, &n, Slot::A);
    updates::wait_online(&mut vm, Duration::from_secs(120)).expect("the network");
    let s = wait_blessed(&mut vm, Duration::from_secs(120)).expect("N is blessed");
    assert_eq!((s.booted.slot.as_str(), s.booted.version.as_str()), ("a", N), "{}", s.text);
    assert_eq!(s.other.entry, "", "a fresh image has no entry for slot b:\n{}", s.text);
    vm.sh_ok("mkdir -p /var/lib/keep && echo kept > /var/lib/keep/file && echo updated-host > /etc/hostname");

    // From a file (a stick), then again from HTTP with two dropped connections.
    vm.sh_ok("mkdir -p /run/stick && mount -t vfat -o ro /dev/vdb /run/stick");
    install_ok(&mut vm, &format!("/run/stick/{}", bundle_name(N1)), N1, "b");
    install_ok(&mut vm, &proxy.guest_url(&bundle_name(N1)), N1, "b");
    assert_eq!(proxy.cuts_made(), 2, "the download was cut twice and resumed");
    let s = status(&mut vm);
    assert_eq!(s.other.entry, format!("berth-{N1}+3.conf"), "{}", s.text);

    let s = reboot_into(&mut vm, N1);
    assert_eq!(s.booted.slot, "b");
    assert_eq!(s.other.entry, format!("berth-{N}.conf"), "{}", s.text);
    assert_secure_boot_from(&mut vm, &n1, Slot::B);
    assert_eq!(vm.read_file("/var/lib/keep/file").unwrap(), "kept\n", "/var survives the update");
    assert_eq!(vm.read_file("/etc/hostname").unwrap(), "updated-host\n", "/etc survives the update");

    // Rollback goes back and forth between the two good slots.
    vm.sh_ok("berthctl update rollback");
    let s = reboot_into(&mut vm, N);
    assert_eq!(s.booted.slot, "a");
    assert_eq!(vm.read_file("/var/lib/keep/file").unwrap(), "kept\n", "/var survives the rollback");
    vm.sh_ok("berthctl update rollback");
    let s = reboot_into(&mut vm, N1);
    assert_eq!(s.booted.slot, "b");

    // N+2's health gate never passes: PID1 reboots at the deadline, three
    // tries are spent, and systemd-boot boots N+1 by itself.
    vm.write_file("/etc/berth/updater.toml", &format!("[gate]\ndeadline = \"{DEADLINE_S}s\"\n"));
    install_ok(&mut vm, &server.guest_url(&bundle_name(GATE_FAILS)), GATE_FAILS, "a");
    updates::reboot(&mut vm).expect("reboot into N+2");
    let per_try = boot_timeout() + Duration::from_secs(DEADLINE_S);
    vm.wait_for_nth("boot not blessed within", 3, per_try * 3).expect("three tries of N+2, each rebooted by PID1");
    vm.skip_ready_lines();
    vm.wait_ready(boot_timeout()).expect("N+1 boots after N+2 spent its tries");
    let s = wait_blessed(&mut vm, Duration::from_secs(120)).expect("N+1 still blessed");
    assert_eq!((s.booted.slot.as_str(), s.booted.version.as_str()), ("b", N1), "{}", s.text);
    assert_eq!(s.other.version, GATE_FAILS, "{}", s.text);
    assert!(s.other.state.starts_with("FAILED"), "N+2's entry spent its tries:\n{}", s.text);
    assert!(s.failed.contains(&GATE_FAILS.to_string()), "status records the failed attempt:\n{}", s.text);

    // The automatic mode sees N+2 published and leaves it alone.
    builder().publish(&dir, &[&gate]).expect("publishing N+2");
    vm.write_file(
        "/etc/berth/updater.toml",
        &format!(
            "[gate]\ndeadline = \"{DEADLINE_S}s\"\n[auto]\nenabled = true\nsource = \"{}\"\ninterval = \"3s\"\nreboot = \"never\"\n",
            server.guest_url("")
        ),
    );
    vm.sh_ok("berthctl restart updater");
    std::thread::sleep(Duration::from_secs(20));
    let check = vm.sh_ok("berthctl update check 2>&1 || true");
    assert!(
        check.contains("up to date") && check.contains(&format!("passed over (failed here): {GATE_FAILS}")),
        "check offers nothing and names the version it passed over:\n{check}"
    );
    let s = status(&mut vm);
    assert_eq!(s.other.entry, format!("berth-{GATE_FAILS}+0-3.conf"), "nothing was installed again:\n{}", s.text);
    assert!(!s.text.contains("now     installing"), "{}", s.text);
    vm.powerdown().expect("power button");
}

/// Bundles with a flipped payload byte, a bad signature, another
/// architecture or an older version are refused before a byte is written;
/// N+1 whose kernel panics, and N+1 whose root is corrupted after the
/// install, each end back in N with the failure in `status`.
#[test]
fn bad_bundles_are_refused_and_broken_versions_fall_back() {
    let n = release(N, None);
    let n1 = release(N1, None);
    let panics = release(PANICS, Some("panic"));
    let corrupted = release(CORRUPTED, None);
    let key = builder().key().to_path_buf();

    let crafted = root().join("crafted");
    std::fs::create_dir_all(&crafted).unwrap();
    let manifest_len = {
        let b = std::fs::read(&n1.bundle).unwrap();
        u64::from(u32::from_le_bytes([b[12], b[13], b[14], b[15]]))
    };
    let first_payload = HEADER_LEN + manifest_len + SIGNATURE_BLOCK_LEN;
    let flipped = crafted.join("flipped.bundle");
    std::fs::copy(&n1.bundle, &flipped).unwrap();
    berth_qemu::flip_byte(&flipped, first_payload + 5 * MIB, 0x01).unwrap();
    let bad_sig = crafted.join("badsig.bundle");
    std::fs::copy(&n1.bundle, &bad_sig).unwrap();
    berth_qemu::flip_byte(&bad_sig, HEADER_LEN + manifest_len + 32 + 7, 0x80).unwrap();
    let dir = www("faults", &[&panics, &corrupted]);
    resign(&n1.bundle, &dir.join("arch.bundle"), &key, |m| m.architecture = "aarch64".into()).unwrap();
    resign(&n1.bundle, &dir.join("old.bundle"), &key, |m| m.os_version = "0.9.0".into()).unwrap();
    let server = StaticServer::start(&dir).expect("the HTTP server");
    let stick = root().join("stick-faults.img");
    fat_image(&stick, 256 * MIB, &[(flipped.as_path(), "flipped.bundle"), (bad_sig.as_path(), "badsig.bundle")])
        .expect("the stick");

    let mut vm = Vm::start(VmConfig::new().name("update-faults").disk(&n.qcow2).disk_size(DISK).stick(&stick))
        .expect("starting N");
    vm.wait_ready(boot_timeout()).expect("N boots");
    updates::wait_online(&mut vm, Duration::from_secs(120)).expect("the network");
    wait_blessed(&mut vm, Duration::from_secs(120)).expect("N is blessed");
    let before = sha256_of_slot_b(&mut vm);
    vm.sh_ok("mkdir -p /run/stick && mount -t vfat -o ro /dev/vdb /run/stick");
    let cases = [
        ("/run/stick/flipped.bundle".to_string(), "sha256"),
        ("/run/stick/badsig.bundle".to_string(), "signature"),
        (server.guest_url("arch.bundle"), "aarch64"),
        (server.guest_url("old.bundle"), "0.9.0"),
    ];
    for (source, why) in &cases {
        let (st, out) = install(&mut vm, source, false).expect("berthctl update install");
        assert_ne!(st, 0, "{source} was installed:\n{out}");
        assert!(out.contains(why), "refusing {source} does not say why ({why}):\n{out}");
    }
    assert_eq!(sha256_of_slot_b(&mut vm), before, "a refused bundle wrote to the other slot");
    let s = status(&mut vm);
    assert_eq!(s.other.entry, "", "a refused bundle left an entry:\n{}", s.text);

    // A kernel panic in the new slot: three tries, then N by itself.
    install_ok(&mut vm, &server.guest_url(&bundle_name(PANICS)), PANICS, "b");
    updates::reboot(&mut vm).expect("reboot into the panicking version");
    vm.wait_for_nth("Kernel panic", 3, boot_timeout() * 3).expect("three panicking tries");
    vm.wait_ready_through_failures(boot_timeout()).expect("N boots after the panics");
    let s = wait_blessed(&mut vm, Duration::from_secs(120)).expect("N still blessed");
    assert_eq!((s.booted.slot.as_str(), s.booted.version.as_str()), ("a", N), "{}", s.text);
    assert!(s.other.state.starts_with("FAILED"), "{}", s.text);
    assert!(s.failed.contains(&PANICS.to_string()), "{}", s.text);
    updates::wait_online(&mut vm, Duration::from_secs(120)).expect("the network");

    // A root corrupted after the install (one flipped byte in the EROFS
    // superblock): dm-verity restarts the machine on each try.
    install_ok(&mut vm, &server.guest_url(&bundle_name(CORRUPTED)), CORRUPTED, "b");
    vm.sh_ok(
        "dd if=/dev/vda3 bs=1 skip=1024 count=1 2>/dev/null | tr '\\000-\\377' '\\001-\\377\\000' \
         | dd of=/dev/vda3 bs=1 seek=1024 count=1 conv=notrunc 2>/dev/null && sync && echo 3 > /proc/sys/vm/drop_caches",
    );
    let panics_before = vm.console_text().matches("Kernel panic").count();
    updates::reboot(&mut vm).expect("reboot into the corrupted version");
    vm.wait_ready_through_failures(boot_timeout() * 4).expect("N boots after the verity failures");
    let text = vm.console_text();
    assert!(text.contains("verity"), "dm-verity reported the corruption:\n{}", berth_qemu::tail(&text, 40));
    assert_eq!(text.matches("Kernel panic").count(), panics_before, "no panic: verity restarts");
    let s = wait_blessed(&mut vm, Duration::from_secs(120)).expect("N still blessed");
    assert_eq!((s.booted.slot.as_str(), s.booted.version.as_str()), ("a", N), "{}", s.text);
    assert!(s.failed.contains(&CORRUPTED.to_string()), "{}", s.text);
    vm.powerdown().expect("power button");
}

/// A power cut at points of an install chosen at random (each run prints
/// its seed) leaves the machine booting its old slot, and installing
/// again succeeds; a power cut in the first boot of the new version does
/// not roll it back: it still comes up and is blessed.
#[test]
fn power_cuts_during_an_install_and_the_first_boot() {
    let n = release(N, None);
    let n1 = release(N1, None);
    let dir = www("cuts", &[&n1]);
    let server = StaticServer::start(&dir).expect("the HTTP server");
    let url = server.guest_url(&bundle_name(N1));

    let seed = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
    let points = pick(seed, 3);
    eprintln!("power cuts at {points:?} (seed {seed})");

    let mut vm = Vm::start(VmConfig::new().name("update-cuts").disk(&n.qcow2).disk_size(DISK)).expect("starting N");
    vm.wait_ready(boot_timeout()).expect("N boots");
    updates::wait_online(&mut vm, Duration::from_secs(120)).expect("the network");
    for point in &points {
        install_paused(&mut vm, &url, point, Duration::from_secs(600))
            .unwrap_or_else(|e| panic!("pausing the install at {point}: {e}"));
        vm.power_cut().expect("power cut");
        vm.restart().expect("power on");
        vm.wait_ready(boot_timeout()).unwrap_or_else(|e| panic!("N after a cut at {point}: {e}"));
        let s = wait_blessed(&mut vm, Duration::from_secs(120)).expect("N blessed");
        assert_eq!((s.booted.slot.as_str(), s.booted.version.as_str()), ("a", N), "cut at {point}:\n{}", s.text);
        assert_eq!(s.other.entry, "", "cut at {point}: an entry points at a half-written slot:\n{}", s.text);
        updates::wait_online(&mut vm, Duration::from_secs(120)).expect("the network");
    }
    install_ok(&mut vm, &url, N1, "b");

    // Cut the power early in N+1's first boot (before its bless).
    updates::reboot(&mut vm).expect("reboot into N+1");
    let boots = vm.console_text().lines().filter(|l| l.contains(WATCHDOG_LINE)).count();
    vm.wait_for_nth(WATCHDOG_LINE, boots + 1, boot_timeout()).expect("N+1's PID1 starts");
    vm.power_cut().expect("power cut in the first boot");
    vm.restart().expect("power on");
    vm.skip_ready_lines();
    vm.wait_ready(boot_timeout()).expect("N+1 boots again after the cut");
    let s = wait_blessed(&mut vm, Duration::from_secs(300)).expect("N+1 blessed after one cut");
    assert_eq!((s.booted.slot.as_str(), s.booted.version.as_str()), ("b", N1), "{}", s.text);
    vm.powerdown().expect("power button");
}

/// What PID1 prints early in every boot (arming the watchdog).
const WATCHDOG_LINE: &str = "(i6300ESB timer) armed";

/// `count` distinct cut points from [`CUT_POINTS`], chosen by `seed`.
fn pick(seed: u64, count: usize) -> Vec<&'static str> {
    let mut points: Vec<&str> = CUT_POINTS.to_vec();
    let mut x = seed | 1;
    for i in (1..points.len()).rev() {
        // xorshift64: enough to shuffle five names.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        points.swap(i, (x % (i as u64 + 1)) as usize);
    }
    points.truncate(count);
    points
}

#[test]
fn cut_points_are_picked_without_repeats() {
    for seed in 0..50 {
        let p = pick(seed, 3);
        assert_eq!(p.len(), 3);
        assert!(p.iter().all(|x| CUT_POINTS.contains(x)));
        assert!(p[0] != p[1] && p[1] != p[2] && p[0] != p[2], "{p:?}");
    }
}

/// A rolling update of three hosts in one etcd cluster (issue 10, point 4):
/// each boots N with automatic updates from a published N+1 and
/// `reboot_strategy: etcd-lock` with one slot; all three install N+1 at
/// once, and the reboots go one at a time: no host goes down (its units
/// stop for the reboot) before the one before it is back up (its ready
/// line) and has released the slot, and all three end on N+1, blessed.
#[test]
fn a_rolling_update_of_three_hosts_reboots_one_at_a_time() {
    let n = release(N, None);
    let n1 = release(N1, None);
    let dir = www("rolling", &[]);
    builder().publish(&dir, &[&n1]).expect("publishing N+1");
    let server = StaticServer::start(&dir).expect("the HTTP server");
    let work = root().join("rolling");
    std::fs::create_dir_all(&work).unwrap();
    let segment = berth_qemu::ssh::free_port().expect("a free port for the segment");
    let roles = cluster::Roles { router: false, updates_from: Some(server.guest_url("")) };
    let mut vms: Vec<Vm> = (1..=3u8)
        .map(|i| {
            let ud = work.join(format!("user-data-{i}"));
            std::fs::write(&ud, cluster::user_data(i, &roles)).unwrap();
            let cfg = VmConfig::new()
                .name(&format!("rolling-{i}"))
                .disk(&n.qcow2)
                .disk_size(DISK)
                .fw_cfg(FW_CFG_USER_DATA, &ud)
                .segment_nic(segment, i);
            Vm::start(cfg).unwrap_or_else(|e| panic!("starting host {i}: {e}"))
        })
        .collect();

    // Watch the three consoles: when each goes down for its reboot and
    // when it is up again on N+1 (its second ready line).
    let mut down: [Option<Instant>; 3] = [None; 3];
    let mut up: [Option<Instant>; 3] = [None; 3];
    let deadline = Instant::now() + boot_timeout() * 2 + Duration::from_secs(1500);
    while up.iter().any(Option::is_none) {
        for (i, vm) in vms.iter().enumerate() {
            let console = vm.console_text();
            if down[i].is_none() && console.contains(UNITS_STOPPED_PREFIX) {
                down[i] = Some(Instant::now());
            }
            if up[i].is_none() && console.matches(READY_PREFIX).count() >= 2 {
                up[i] = Some(Instant::now());
            }
        }
        if Instant::now() > deadline {
            let contexts: Vec<String> = vms.iter().map(|vm| vm.paths().context()).collect();
            panic!("the rolling update did not finish: down {down:?}, up {up:?}\n{}", contexts.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut windows: Vec<(usize, Instant, Instant)> = (0..vms.len())
        .map(|i| {
            let (d, u) =
                (down[i].unwrap_or_else(|| panic!("host {} came up again without going down", i + 1)), up[i].unwrap());
            (i + 1, d, u)
        })
        .collect();
    windows.sort_by_key(|w| w.1);
    for pair in windows.windows(2) {
        let ((a, _, a_up), (b, b_down, _)) = (pair[0], pair[1]);
        assert!(
            b_down > a_up,
            "host {b} went down for its reboot before host {a} was back up: two hosts rebooting at once"
        );
    }
    for (i, vm) in vms.iter_mut().enumerate() {
        let s = wait_blessed(vm, Duration::from_secs(300)).unwrap_or_else(|e| panic!("host {} blessed: {e}", i + 1));
        assert_eq!(s.booted.version, N1, "host {} runs N+1:\n{}", i + 1, s.text);
    }
    let order: Vec<String> = windows.iter().map(|(h, _, _)| format!("host {h}")).collect();
    eprintln!("rolling update: reboots in turn: {}", order.join(", "));
    for vm in vms.iter_mut() {
        let _ = vm.quit();
    }
}
