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

use super::peer::{CPUS, MEMORY_MIB};
use super::turns::{self, Disk};
use super::Error;
use crate::build::{self, BuildOptions};
use crate::context::Context;
use crate::manifest::{self, Erofs};

/// One packing to measure: a name for the table and the settings.
pub struct Candidate {
    pub name: String,
    pub settings: Erofs,
}

/// The cluster of the LZMA-everywhere packing, bytes: what erofs-hints.txt
/// gives the LZMA files on the boot's path (image.toml's `pcluster` is only
/// the largest any file gets).
const LZMA_EVERYWHERE_PCLUSTER: u32 = 262_144;

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
            name: format!("image.toml: {}, up to {} KiB, hints", own.compressors, own.pcluster / 1024),
            settings: own.clone(),
        },
        Candidate {
            name: format!("lzma, {} KiB clusters", LZMA_EVERYWHERE_PCLUSTER / 1024),
            settings: single("lzma", LZMA_EVERYWHERE_PCLUSTER),
        },
    ]
}

/// Builds the image once per candidate packing, then boots each build's
/// disk in turns ([`turns::boot_in_turns`]) and prints the table: sizes
/// against boot time.
pub fn bench_erofs(ctx: &Context, boots: usize, kvm: bool) -> Result<(), Error> {
    crate::deps::ensure()?;
    let image = manifest::image(&ctx.image_build_dir())?;
    let mut disks = Vec::new();
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
        disks.push(Disk {
            name: c.name,
            qcow2: cctx.qcow2(),
            erofs_mib: super::peer::size_report_mib(&text, "EROFS"),
            slot_mib: super::peer::size_report_mib(&text, "root slot"),
        });
    }
    let (measured, busy) = turns::boot_in_turns(disks, boots, kvm, false)?;
    let accel = if kvm { "KVM" } else { "TCG" };
    turns::print_report(
        &format!(
            "Root packing: size against boot time ({accel}, {CPUS} vCPUs, {MEMORY_MIB} MiB; kernel start -> \
             containerd and etcd ready; {boots} boots each in turns, median and range; the first boot of each disk \
             apart)"
        ),
        &measured,
        busy,
    );
    Ok(())
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
                "image.toml: lzma:lz4hc, up to 64 KiB, hints",
                "lzma, 256 KiB clusters"
            ]
        );
        assert_eq!(c[2].settings, own());
        // Single-algorithm packings name no second algorithm in their hints.
        assert!(c.iter().filter(|c| !c.settings.compressors.contains(':')).all(|c| c.settings.hints.is_none()));
        assert!(c.iter().all(|c| c.settings.source == own().source));
        assert!(c[0].settings.extended.is_empty() && c[1].settings.extended == own().extended);
    }
}
