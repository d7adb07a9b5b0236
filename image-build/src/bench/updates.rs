//! `berth-image bench`'s update figures: install throughput against the
//! raw write throughput of the same virtual disk, and install to ready.

use std::time::Instant;

use berth_qemu::releases::read_manifest;
use berth_qemu::{fat_image, workspace_root, DiskBus, VmConfig, GIB, MIB};

use super::{row, Error};
use crate::rig::{timed, Machine, Rig};
use crate::run::RunOptions;

/// Where the update bench keeps its releases and its stick.
fn bench_root() -> std::path::PathBuf {
    workspace_root().join("target").join("berth-bench")
}

/// The update figures, over `runs` runs in one VM, each against a
/// baseline measured in the same VM in the same run:
/// - install throughput: N+1's bundle (MiB) over the seconds of
///   `berthctl update install` from a file on the data partition (page
///   cache dropped first), against the raw write throughput of the same
///   virtual disk: `dd if=/dev/zero bs=1M conv=fsync` of as many MiB as
///   the root payload into the other slot's partition (buffered writes
///   then one fsync, the way the install engine writes); the ratio is the
///   figure. Both timed in the guest (/proc/uptime around the command).
///   A third figure tells where the rest goes: busybox `sha256sum` of the
///   bundle file (page cache dropped), since the install hashes what it
///   streams and hashes it again reading it back.
/// - install -> ready: host time from the start of the install to the
///   ready line of N+1's boot (install, reboot, firmware, boot), and the
///   part after the install.
/// - the bundle against the root tree (from N+1's size report).
///
/// Each run ends with `berthctl update rollback` and a reboot to N, so the
/// next one installs from N again. Builds N and N+1 first (about 20 s
/// each once the image's binaries are built); 3 runs take about 4
/// minutes under TCG here, so `bench` runs it unless `--no-updates`.
pub fn bench_updates(opts: &RunOptions, runs: usize) -> Result<(), Error> {
    crate::deps::ensure()?;
    let root = bench_root();
    let rig = Rig::build(&root)?;
    let (n, n1) = (rig.n.version.as_str(), rig.n1.version.as_str());
    let name = rig.n1_bundle_name();
    let bundle_bytes = std::fs::metadata(&rig.n1.bundle)?.len();
    let manifest = read_manifest(&rig.n1.bundle, &rig.key)?;
    let root_payload = manifest.payloads.iter().find(|p| p.verity.is_some()).ok_or("the bundle has no root payload")?;
    let dd_mib = root_payload.size.div_ceil(MIB);
    let stick = root.join("stick.img");
    fat_image(&stick, (bundle_bytes / MIB + 32) * MIB, &[(rig.n1.bundle.as_path(), &name)])?;

    let cfg = VmConfig::new()
        .name("bench-updates")
        .disk(&rig.n.qcow2)
        .disk_size(4 * GIB)
        .stick(&stick)
        .memory_mib(opts.memory_mib)
        .kvm(opts.kvm);
    let mut m = Machine::start(cfg, n)?;
    let file = format!("/var/lib/berth-bench/{name}");
    m.vm.sh_timeout(
        &format!(
            "mkdir -p /run/stick /var/lib/berth-bench && mount -t vfat -o ro /dev/vdb /run/stick \
             && cp /run/stick/{name} {file} && sync && umount /run/stick"
        ),
        std::time::Duration::from_secs(600),
    )
    .map_err(|e| format!("copying the bundle to /var: {e}"))
    .and_then(|o| if o.success() { Ok(()) } else { Err(format!("copying the bundle to /var:\n{}", o.output)) })?;
    let away_number = if m.away == "a" { 2 } else { 3 };
    let device = format!("/dev/{}", DiskBus::Virtio.guest_partition(away_number));

    let (mut raw, mut hash, mut install, mut ratio, mut install_s, mut to_ready, mut reboot) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let long = std::time::Duration::from_secs(1200);
    let bundle_mib = bundle_bytes as f64 / MIB as f64;
    for r in 1..=runs {
        let dd = format!("dd if=/dev/zero of={device} bs=1M count={dd_mib} conv=fsync 2>&1");
        let (rc, out, dd_s) = timed(&mut m.vm, &dd, long)?;
        if rc != 0 {
            return Err(format!("`{dd}` (exit {rc}):\n{out}").into());
        }
        m.vm.sh("sync; echo 3 > /proc/sys/vm/drop_caches")?;
        let (rc, out, hash_s) = timed(&mut m.vm, &format!("sha256sum {file}"), long)?;
        if rc != 0 {
            return Err(format!("`sha256sum {file}` (exit {rc}):\n{out}").into());
        }
        m.vm.sh("sync; echo 3 > /proc/sys/vm/drop_caches")?;
        let t0 = Instant::now();
        let (secs, up) = m.round_trip(&file, n, n1)?;
        let ready = up.ready_at.duration_since(t0).as_secs_f64();
        let (raw_r, install_r) = (dd_mib as f64 / dd_s, bundle_mib / secs);
        eprintln!(
            "bench: update run {r}/{runs}: raw write {raw_r:.1} MiB/s, install {install_r:.1} MiB/s ({secs:.1} s), \
             install -> ready {ready:.1} s"
        );
        raw.push(raw_r);
        hash.push(bundle_mib / hash_s);
        install.push(install_r);
        ratio.push(install_r / raw_r);
        install_s.push(secs);
        to_ready.push(ready);
        reboot.push(ready - secs);
    }
    drop(m);
    println!(
        "updates ({runs} runs, {}, median and range; {n} -> {n1}, bundle {bundle_mib:.2} MiB from a file in /var)",
        if opts.kvm { "KVM" } else { "TCG" }
    );
    row("raw write", "MiB/s", &raw);
    println!("      (dd bs=1M count={dd_mib} conv=fsync to {device}, the other slot, as many MiB as the root payload)");
    row("sha256 of bundle", "MiB/s", &hash);
    println!("      (busybox sha256sum of the bundle file, page cache dropped: the guest CPU's hashing)");
    row("install", "MiB/s", &install);
    row("install / raw", "", &ratio);
    row("install", "s", &install_s);
    row("install -> ready", "s", &to_ready);
    row("reboot -> ready", "s", &reboot);
    println!("      (install -> ready less the install: shutdown, firmware, loader, kernel, userspace of N+1)");
    let report = std::fs::read_to_string(rig.n1.dir.join("size-report.txt")).unwrap_or_default();
    match size_of(&report, "root tree") {
        Some(tree) => println!(
            "  bundle {bundle_mib:.2} MiB against the root tree {tree:.2} MiB: {:.1}% (EROFS {})",
            100.0 * bundle_mib / tree,
            size_of(&report, "EROFS").map(|e| format!("{e:.2} MiB")).unwrap_or_else(|| "n/a".into())
        ),
        None => println!("  bundle {bundle_mib:.2} MiB (no root tree size in {})", rig.n1.dir.display()),
    }
    Ok(())
}

/// The size in MiB on the line of the size report that starts with `label`.
fn size_of(report: &str, label: &str) -> Option<f64> {
    let line = report.lines().map(str::trim_start).find(|l| l.starts_with(label))?;
    let rest = line.split_once("  ").map(|(_, r)| r)?;
    let mut words = rest.split_whitespace();
    let value = words.next()?.parse().ok()?;
    (words.next() == Some("MiB")).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_read_from_the_size_report() {
        let report = "size report\n  kernel (bzImage)              9.51 MiB\n  \
                      root tree                   180.25 MiB  (1234 files)\n      /usr/bin/etcd     25.00 MiB\n  \
                      EROFS (lz4hc)                70.50 MiB  (39% of the tree)\n";
        assert_eq!(size_of(report, "root tree"), Some(180.25));
        assert_eq!(size_of(report, "EROFS"), Some(70.5));
        assert_eq!(size_of(report, "update bundle"), None);
    }
}
