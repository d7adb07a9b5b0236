//! Several Berth disks booted in turns, on the guest kernel's clock: what
//! `bench --erofs` (one disk per packing of the root) and `bench --against`
//! (this build against other builds) share.
//!
//! Each disk first boots once (its first boot, reported apart: it also
//! grows and formats /var), then `boots` times more, the disks taking
//! turns so that a change in the host's load falls on all of them alike.
//! Every boot is a new QEMU process (TCG, [`CPUS`] vCPUs, [`MEMORY_MIB`]
//! MiB, no NIC), so the guest's page cache starts cold, as on a real
//! reboot. Each boot is measured by [`berth_boot`], as in `bench --peer`.

use std::path::PathBuf;

use berth_qemu::{Vm, VmConfig, GIB};

use super::peer::{berth_boot, busy_verdict, size_report_mib, HostLoad, Sample, CPUS, MEMORY_MIB};
use super::{stats, Error};
use crate::context::Context;

/// One disk to boot: its name in the table, its qcow2 image, and the
/// sizes of its root (MiB, from its build's `size-report.txt`) when known.
pub struct Disk {
    pub name: String,
    pub qcow2: PathBuf,
    pub erofs_mib: Option<f64>,
    pub slot_mib: Option<f64>,
}

/// What the boots of one disk measured.
pub struct Measured {
    pub disk: Disk,
    pub first: Sample,
    pub boots: Vec<Sample>,
}

/// Boots every disk once, then `boots` more times each in turns, with a
/// virtio NIC on QEMU's user network when `nic` (then "every unit ready"
/// waits for `network-online` too). Returns the measurements (in the order
/// given) and, when the rest of the host used more than
/// [`super::peer::BUSY_CORES`] during any boot, why the figures are noisy.
pub fn boot_in_turns(
    disks: Vec<Disk>,
    boots: usize,
    kvm: bool,
    nic: bool,
) -> Result<(Vec<Measured>, Option<String>), Error> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut loads: Vec<(String, HostLoad)> = Vec::new();
    let mut vms = Vec::new();
    let mut measured = Vec::new();
    for (i, disk) in disks.into_iter().enumerate() {
        let config = VmConfig::new()
            .name(&format!("bench-turns-{i}"))
            .cpus(CPUS)
            .memory_mib(MEMORY_MIB)
            .kvm(kvm)
            .disk_size(4 * GIB)
            .net(if nic { berth_qemu::UserNet::default().args() } else { Vec::new() })
            .disk(&disk.qcow2);
        let mut vm = Vm::start(config)?;
        let first = berth_boot(&mut vm, cores, nic)?;
        report(&disk.name, "first boot", &first);
        loads.push((format!("{}: first boot", disk.name), first.load));
        vms.push(vm);
        measured.push(Measured { disk, first, boots: Vec::new() });
    }
    for round in 1..=boots {
        for (vm, m) in vms.iter_mut().zip(measured.iter_mut()) {
            vm.restart()?;
            let s = berth_boot(vm, cores, nic)?;
            report(&m.disk.name, &format!("boot {round}/{boots}"), &s);
            loads.push((format!("{}: boot {round}", m.disk.name), s.load));
            m.boots.push(s);
        }
    }
    Ok((measured, busy_verdict(&loads)))
}

/// `bench --against`: this build's disk (built first if missing) and each
/// of `others` (qcow2 files of other builds) booted in turns, with a NIC
/// when `nic`; prints the table and whether the host was quiet. A disk's
/// sizes come from the `size-report.txt` beside it, when there is one.
pub fn bench_against(ctx: &Context, others: &[PathBuf], boots: usize, kvm: bool, nic: bool) -> Result<(), Error> {
    crate::deps::ensure()?;
    if !ctx.qcow2().exists() {
        crate::build::build(ctx, &crate::build::BuildOptions::default())?;
    }
    let mut disks = vec![disk("this build".into(), ctx.qcow2())];
    for path in others {
        if !path.is_file() {
            return Err(format!("--against {}: no such disk image", path.display()).into());
        }
        disks.push(disk(path.display().to_string(), path.clone()));
    }
    let (measured, busy) = boot_in_turns(disks, boots, kvm, nic)?;
    let accel = if kvm { "KVM" } else { "TCG" };
    let net = if nic { "a virtio NIC on user networking" } else { "no NIC" };
    print_report(
        &format!(
            "Berth builds in turns ({accel}, {CPUS} vCPUs, {MEMORY_MIB} MiB, {net}; kernel start -> ready on the \
             guest's clock; {boots} reboots each, median and range; the first boot apart)"
        ),
        &measured,
        busy,
    );
    Ok(())
}

/// Prints `heading`, the [`table`] of `measured`, and whether the host was
/// quiet (`busy`: why not, from [`boot_in_turns`]).
pub fn print_report(heading: &str, measured: &[Measured], busy: Option<String>) {
    println!("{heading}\n");
    print!("{}", table(measured));
    match busy {
        Some(why) => println!("\nhost busy during the run ({why}): the times are noisy, a rough guide only"),
        None => println!("\nhost quiet during the run"),
    }
}

/// A disk named `name`, its sizes read from the size report beside it.
fn disk(name: String, qcow2: PathBuf) -> Disk {
    let report = qcow2.parent().map(|d| d.join("size-report.txt")).and_then(|p| std::fs::read_to_string(p).ok());
    let size = |label| report.as_deref().and_then(|r| size_report_mib(r, label));
    Disk { name, erofs_mib: size("EROFS"), slot_mib: size("root slot"), qcow2 }
}

fn report(name: &str, which: &str, s: &Sample) {
    eprintln!(
        "bench: {name}: {which}: containerd+etcd {:.2} s, all {:.2} s, power-off {:.2} s (host: {:.2} other cores)",
        s.core_ready, s.all_ready, s.poweroff, s.load.others_cores
    );
}

/// The Markdown table: a row per disk with its sizes, the medians and
/// ranges of its reboots (containerd and etcd ready, every unit ready,
/// PID1's RSS, power-off), and its first boot's core figure.
pub fn table(measured: &[Measured]) -> String {
    let mut out = String::from(
        "| build | EROFS | root slot | containerd + etcd ready | every unit ready | PID1 RSS | power-off | first boot |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mib = |v: Option<f64>| v.map(|v| format!("{v:.1} MiB")).unwrap_or_else(|| "n/a".into());
    let spread = |v: Vec<f64>, unit: &str, digits: usize| match stats(&v) {
        Some(s) => format!("{:.d$} {unit} ({:.d$} to {:.d$})", s.median, s.min, s.max, d = digits),
        None => "n/a".into(),
    };
    for m in measured {
        let b = &m.boots;
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.2} s |\n",
            m.disk.name,
            mib(m.disk.erofs_mib),
            mib(m.disk.slot_mib),
            spread(b.iter().map(|s| s.core_ready).collect(), "s", 2),
            spread(b.iter().map(|s| s.all_ready).collect(), "s", 2),
            spread(b.iter().filter_map(|s| s.pid1_rss_kib).map(|k| k as f64 / 1024.0).collect(), "MiB", 2),
            spread(b.iter().map(|s| s.poweroff).collect(), "s", 2),
            m.first.core_ready
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_a_row_per_disk_with_sizes_and_spreads() {
        let s = |t: f64, rss: u64| Sample {
            core_ready: t,
            all_ready: t + 0.5,
            pid1_rss_kib: Some(rss),
            poweroff: t / 10.0,
            ..Sample::default()
        };
        let m = vec![Measured {
            disk: Disk { name: "lzma".into(), qcow2: "/x.qcow2".into(), erofs_mib: Some(49.3), slot_mib: None },
            first: s(9.0, 3072),
            boots: vec![s(5.0, 2048), s(4.0, 3072), s(6.0, 4096)],
        }];
        let t = table(&m);
        assert!(
            t.contains(
                "| lzma | 49.3 MiB | n/a | 5.00 s (4.00 to 6.00) | 5.50 s (4.50 to 6.50) | \
                 3.00 MiB (2.00 to 4.00) | 0.50 s (0.40 to 0.60) | 9.00 s |"
            ),
            "{t}"
        );
    }
}
