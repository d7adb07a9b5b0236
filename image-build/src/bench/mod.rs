//! `berth-image bench`: boot figures over several boots (median and
//! spread per phase), the size report and PID1's memory; then update
//! figures (see [`updates::bench_updates`]; `--no-updates` skips them); with
//! `--peer`, Berth against the systemd peer instead (see [`peer::bench_peer`]);
//! with `--cluster`, the router's figures on three hosts ([`cluster`]). Figures, not assertions:
//! TCG speed depends on what else the machine does.

pub mod cluster;
pub mod erofs;
pub mod peer;
pub mod turns;
pub mod updates;

use crate::context::Context;
use crate::run::{smoke_once, RunOptions};

pub type Error = Box<dyn std::error::Error>;

/// The median and the range of a sample.
#[derive(Debug, PartialEq)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

pub fn stats(values: &[f64]) -> Option<Stats> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
    Some(Stats { median, min: v[0], max: v[n - 1] })
}

pub fn row(name: &str, unit: &str, values: &[f64]) {
    match stats(values) {
        Some(s) => println!(
            "  {name:<18} {:>9.3} {unit}   (min {:.3}, max {:.3}, spread {:.3})",
            s.median,
            s.min,
            s.max,
            s.max - s.min
        ),
        None => println!("  {name:<18} n/a"),
    }
}

pub fn bench(ctx: &Context, opts: &RunOptions, boots: usize) -> Result<(), Error> {
    crate::deps::ensure()?;
    if boots == 0 {
        return Ok(());
    }
    if !ctx.qcow2().exists() {
        crate::build::build(ctx, &crate::build::BuildOptions::default())?;
    }
    let (mut fw, mut kernel, mut initrd, mut user, mut total, mut rss, mut off) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..boots {
        let r = smoke_once(ctx, opts, &format!("bench{i}"))?;
        eprintln!("bench: boot {}/{boots}: ready in {:.3} s", i + 1, r.times.total);
        if let Some(f) = r.times.firmware_loader {
            fw.push(f);
        }
        kernel.push(r.times.kernel);
        initrd.extend(r.times.initrd);
        user.push(r.times.userspace);
        total.push(r.times.total);
        if let Some(k) = r.pid1_rss_kib {
            rss.push(k as f64 / 1024.0);
        }
        off.push(r.shutdown.as_secs_f64());
    }
    println!("boot ({boots} boots, {}, median and range)", if opts.kvm { "KVM" } else { "TCG" });
    row("firmware+loader", "s", &fw);
    row("kernel", "s", &kernel);
    if !initrd.is_empty() {
        row("initrd", "s", &initrd);
    }
    row("userspace", "s", &user);
    row("ready", "s", &total);
    row("ACPI power-off", "s", &off);
    row("PID1 RSS", "MiB", &rss);
    if let (Some(u), Some(t)) = (stats(&user), stats(&total)) {
        println!("  userspace share of boot: {:.1}%", 100.0 * u.median / t.median);
    }
    match std::fs::read_to_string(ctx.out.join("size-report.txt")) {
        Ok(report) => print!("{report}"),
        Err(_) => println!("size report: run `berth-image build` to produce it"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_range() {
        assert_eq!(stats(&[3.0, 1.0, 2.0]), Some(Stats { median: 2.0, min: 1.0, max: 3.0 }));
        assert_eq!(stats(&[4.0, 1.0, 2.0, 3.0]).map(|s| s.median), Some(2.5));
        assert_eq!(stats(&[]), None);
    }
}
