//! `berth-image bench --erofs`: the root's packing chosen by measurement,
//! image size against boot time (issue 11, point 3).
//!
//! The image is built once per candidate packing (each into its own
//! directory under `target/berth-bench/`): Debian 12's lz4hc in 4 KiB
//! clusters (the packing before), lz4hc in 128 KiB clusters, image.toml's
//! own (LZMA, with the boot path's files lz4hc) and LZMA everywhere. Then
//! each candidate's disk boots once (its first boot, reported apart: it
//! also grows and formats /var), and `--boots` times more, the candidates
//! taking turns so that a change in the host's load falls on all of them.
//! Every boot is a new QEMU process, so the guest's page cache starts cold
//! and the root's pages are read and decompressed again: the cost being
//! measured. Times are on the guest kernel's clock, as in `bench --peer`.

use std::time::Instant;

use berth_qemu::{Vm, VmConfig, GIB};

use super::peer::{berth_boot, busy_verdict, Sample, CPUS, MEMORY_MIB};
use super::{stats, Error};
use crate::build::{self, BuildOptions};
use crate::context::Context;
use crate::manifest::{self, Erofs};

/// One packing to measure: a name for the table and the settings.
pub struct Candidate {
    pub name: String,
    pub settings: Erofs,
}

/// The packings compared: three fixed ones around image.toml's own.
pub fn candidates(own: &Erofs) -> Vec<Candidate> {
    let single = |compressors: &str, pcluster: u32| Erofs {
        compressors: compressors.into(),
        pcluster,
        // One algorithm: no file is told to use another.
        hints: None,
        ..own.clone()
    };
    // Exactly what Debian 12's mkfs.erofs wrote before: no extended features.
    let before = Erofs { extended: Vec::new(), ..single("lz4hc", 4096) };
    vec![
        Candidate { name: "lz4hc, 4 KiB clusters (before)".into(), settings: before },
        Candidate { name: "lz4hc,12, 128 KiB clusters".into(), settings: single("lz4hc,level=12", 131072) },
        Candidate {
            name: format!("image.toml: {}, {} KiB, hints", own.compressors, own.pcluster / 1024),
            settings: own.clone(),
        },
        Candidate {
            name: format!("lzma, {} KiB clusters", own.pcluster / 1024),
            settings: single("lzma", own.pcluster),
        },
    ]
}

/// What one candidate measured.
struct Measured {
    name: String,
    erofs_mib: Option<f64>,
    slot_mib: Option<f64>,
    first: Sample,
    boots: Vec<Sample>,
}

/// Builds every candidate, boots them in turns and prints the table.
pub fn bench_erofs(ctx: &Context, boots: usize, kvm: bool) -> Result<(), Error> {
    crate::deps::ensure()?;
    let image = manifest::image(&ctx.image_build_dir())?;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut built = Vec::new();
    for (i, c) in candidates(&image.erofs).into_iter().enumerate() {
        let out = ctx.repo.join("target").join("berth-bench").join(format!("erofs-{i}"));
        let cctx = Context { out, ..ctx.clone() };
        let t = Instant::now();
        let report = build::build(&cctx, &BuildOptions { erofs: Some(c.settings), ..BuildOptions::default() })?;
        eprintln!(
            "bench: {}: EROFS {:.2} MiB, built in {:.0} s",
            c.name,
            report.erofs as f64 / (1024.0 * 1024.0),
            t.elapsed().as_secs_f64()
        );
        let text = report.to_string();
        built.push((
            c.name,
            cctx,
            super::peer::size_report_mib(&text, "EROFS"),
            super::peer::size_report_mib(&text, "root slot"),
        ));
    }

    let vm_config = |name: &str, cctx: &Context| {
        VmConfig::new().name(name).cpus(CPUS).memory_mib(MEMORY_MIB).kvm(kvm).disk_size(4 * GIB).disk(cctx.qcow2())
    };
    let mut vms = Vec::new();
    let mut measured = Vec::new();
    let mut loads = Vec::new();
    for (i, (name, cctx, erofs_mib, slot_mib)) in built.iter().enumerate() {
        let mut vm = Vm::start(vm_config(&format!("bench-erofs-{i}"), cctx))?;
        let first = berth_boot(&mut vm, cores)?;
        eprintln!("bench: {name}: first boot: containerd+etcd {:.2} s, all {:.2} s", first.core_ready, first.all_ready);
        loads.push((format!("{name}: first boot"), first.load));
        vms.push(vm);
        measured.push(Measured {
            name: name.clone(),
            erofs_mib: *erofs_mib,
            slot_mib: *slot_mib,
            first,
            boots: vec![],
        });
    }
    for round in 0..boots {
        for (vm, m) in vms.iter_mut().zip(measured.iter_mut()) {
            vm.restart()?;
            let s = berth_boot(vm, cores)?;
            eprintln!(
                "bench: {}: boot {}/{boots}: containerd+etcd {:.2} s, all {:.2} s",
                m.name,
                round + 1,
                s.core_ready,
                s.all_ready
            );
            loads.push((format!("{}: boot {}", m.name, round + 1), s.load));
            m.boots.push(s);
        }
    }
    drop(vms);
    print!("{}", table(&measured, boots, kvm));
    match busy_verdict(&loads) {
        Some(why) => {
            println!("\nhost busy during the run ({why}): the times are noisy; compare them only as a rough guide")
        }
        None => println!("\nhost quiet during the run"),
    }
    Ok(())
}

fn table(measured: &[Measured], boots: usize, kvm: bool) -> String {
    let accel = if kvm { "KVM" } else { "TCG" };
    let mut out = format!(
        "Root packing: size against boot time ({accel}, {CPUS} vCPUs, {MEMORY_MIB} MiB; kernel start -> containerd and etcd ready; \
         {boots} boots each in turns, median and range; the first boot of each disk apart)\n\n"
    );
    out.push_str("| packing | EROFS | root slot | containerd + etcd ready | every unit ready | first boot |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|\n");
    let mib = |v: Option<f64>| v.map(|v| format!("{v:.1} MiB")).unwrap_or_else(|| "n/a".into());
    let secs = |v: Vec<f64>| match stats(&v) {
        Some(s) => format!("{:.2} s ({:.2} to {:.2})", s.median, s.min, s.max),
        None => "n/a".into(),
    };
    for m in measured {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.2} s |\n",
            m.name,
            mib(m.erofs_mib),
            mib(m.slot_mib),
            secs(m.boots.iter().map(|s| s.core_ready).collect()),
            secs(m.boots.iter().map(|s| s.all_ready).collect()),
            m.first.core_ready
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own() -> Erofs {
        Erofs {
            source: "pool/x.orig.tar.gz".into(),
            sha256: "00".into(),
            compressors: "lzma:lz4hc".into(),
            pcluster: 65536,
            extended: vec!["ztailpacking".into()],
            hints: Some("erofs-hints.txt".into()),
        }
    }

    #[test]
    fn the_candidates_are_the_before_the_own_and_the_extremes() {
        let c = candidates(&own());
        let names: Vec<&str> = c.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "lz4hc, 4 KiB clusters (before)",
                "lz4hc,12, 128 KiB clusters",
                "image.toml: lzma:lz4hc, 64 KiB, hints",
                "lzma, 64 KiB clusters"
            ]
        );
        assert_eq!(c[2].settings, own());
        // Single-algorithm packings name no second algorithm in their hints.
        assert!(c.iter().filter(|c| !c.settings.compressors.contains(':')).all(|c| c.settings.hints.is_none()));
        assert!(c.iter().all(|c| c.settings.source == own().source));
        assert!(c[0].settings.extended.is_empty() && c[1].settings.extended == own().extended);
    }

    #[test]
    fn the_table_has_a_row_per_packing_with_sizes_and_times() {
        let s = |t: f64| Sample { core_ready: t, all_ready: t + 0.5, ..Sample::default() };
        let m = vec![Measured {
            name: "lzma".into(),
            erofs_mib: Some(49.3),
            slot_mib: Some(49.8),
            first: s(9.0),
            boots: vec![s(5.0), s(4.0), s(6.0)],
        }];
        let t = table(&m, 3, false);
        assert!(
            t.contains("| lzma | 49.3 MiB | 49.8 MiB | 5.00 s (4.00 to 6.00) | 5.50 s (4.50 to 6.50) | 9.00 s |"),
            "{t}"
        );
        assert!(t.starts_with("Root packing: size against boot time (TCG, 2 vCPUs"), "{t}");
    }
}
