//! `berth-image run`: boots the image under QEMU + OVMF, interactively on
//! the terminal or headless as a smoke test.

use std::path::Path;
use std::time::{Duration, Instant};

use berth_qemu::{boot_timeout, shutdown_timeout, BootTimes, DiskBus, Vm, VmConfig, GIB};

use crate::build;
use crate::context::Context;

type Error = Box<dyn std::error::Error>;

/// The disk a `run` VM gets: room for the data partition to grow into.
const RUN_DISK: u64 = 8 * GIB;

pub struct RunOptions {
    pub smoke: bool,
    pub kvm: bool,
    pub memory_mib: u32,
    /// How the boot disk is attached.
    pub bus: DiskBus,
    /// Boot the 4Kn disk (`berth-4kn.qcow2`) on a disk with 4096-byte
    /// logical sectors.
    pub four_kn: bool,
    /// User data for the VM, and how it gets there.
    pub user_data: crate::userdata::UserData,
}

impl RunOptions {
    /// The image this run boots.
    fn image(&self, ctx: &Context) -> std::path::PathBuf {
        if self.four_kn {
            ctx.qcow2_4kn()
        } else {
            ctx.qcow2()
        }
    }

    /// A VM of these options on a throwaway or kept overlay of the image.
    pub fn vm(&self, ctx: &Context, name: &str) -> VmConfig {
        VmConfig::new()
            .name(name)
            .disk(self.image(ctx))
            .disk_bus(self.bus)
            .sector_size(if self.four_kn { 4096 } else { 512 })
            .memory_mib(self.memory_mib)
            .kvm(self.kvm)
    }
}

fn ensure_image(ctx: &Context, opts: &RunOptions) -> Result<(), Error> {
    if !opts.image(ctx).exists() {
        build::build(ctx, &build::BuildOptions::default())?;
    }
    Ok(())
}

pub fn run(ctx: &Context, opts: &RunOptions) -> Result<(), Error> {
    crate::deps::ensure()?;
    if opts.four_kn && opts.bus == DiskBus::Sata {
        return Err("QEMU's SATA disks have 512-byte sectors only: --4kn needs --bus virtio or nvme".into());
    }
    ensure_image(ctx, opts)?;
    if opts.smoke {
        smoke(ctx, opts).map(|_| ())
    } else {
        interactive(ctx, opts)
    }
}

/// A persistent VM in `target/berth/run/`: its overlay keeps /etc and /var
/// across runs, and starts over when the image is rebuilt (an overlay on a
/// changed base would be garbage).
fn interactive(ctx: &Context, opts: &RunOptions) -> Result<(), Error> {
    // The 4Kn disk is another disk: it keeps its own VM state.
    let dir = ctx.out.join(if opts.four_kn { "run-4kn" } else { "run" });
    std::fs::create_dir_all(&dir)?;
    let overlay = dir.join("overlay.qcow2");
    if newer(&opts.image(ctx), &overlay) {
        let _ = std::fs::remove_file(&overlay);
        let _ = std::fs::remove_file(dir.join("vars.fd"));
    }
    eprintln!("run: booting {} (VM state in {})", opts.image(ctx).display(), dir.display());
    eprintln!("run: Ctrl-a c switches between the console, the admin shell and the QEMU monitor; Ctrl-a x quits");
    let cfg = opts.vm(ctx, "run").disk_size(RUN_DISK).serial_to_stdio(true).work_dir(&dir);
    // The metadata service (if any) serves as long as the VM runs.
    let attached = crate::userdata::attach(cfg, &opts.user_data, &dir)?;
    let mut vm = Vm::start(attached.config)?;
    let status = vm.wait()?;
    eprintln!("run: QEMU exited ({status})");
    Ok(())
}

fn newer(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a).and_then(|m| m.modified()), std::fs::metadata(b).and_then(|m| m.modified())) {
        (Ok(ma), Ok(mb)) => ma > mb,
        _ => true,
    }
}

/// What one headless boot measured.
pub struct SmokeResult {
    pub times: BootTimes,
    /// PID1's resident KiB after `berthctl status` was answered.
    pub pid1_rss_kib: Option<u64>,
    /// `berthctl status` right after the ready line.
    pub units: String,
    pub shutdown: Duration,
}

/// Boots a throwaway overlay, waits for the ready line, asks `berthctl
/// status`, reads PID1's RSS (/proc/1/smaps_rollup), powers off over ACPI
/// and waits for QEMU to exit.
pub fn smoke_once(ctx: &Context, opts: &RunOptions, name: &str) -> Result<SmokeResult, Error> {
    let cfg = opts.vm(ctx, name).disk_size(4 * GIB);
    let attached = crate::userdata::attach(cfg, &opts.user_data, &ctx.out.join(format!("{name}-seed")))?;
    let mut vm = Vm::start(attached.config)?;
    let times = vm.wait_ready(boot_timeout())?;
    let units = vm.sh("berthctl status").map(|o| o.output).unwrap_or_else(|e| format!("berthctl status: {e}\n"));
    // After `berthctl status`: PID1 drops its boot pages at the ready line
    // and reads its code back as it runs, so the figure counts the control
    // API's share too. smaps_rollup walks the page tables; VmRSS is the
    // kernel's counter, which lags by up to 64 pages per thread (split RSS
    // counting): it read 0.5 MiB for PID1's 1 MiB after the drop.
    let rss = vm
        .sh("grep ^Rss: /proc/1/smaps_rollup || grep VmRSS /proc/1/status")
        .ok()
        .and_then(|o| parse_rss_kib(&o.output));
    let t = Instant::now();
    vm.powerdown()?;
    let status = vm.wait_exit(shutdown_timeout())?;
    let shutdown = t.elapsed();
    let console = vm.console_text();
    drop(attached.imds);
    if opts.user_data.user_data.is_some() {
        // What the boot said about the user data (PID1's lines about it).
        for line in console.lines().filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("user data") || l.contains("user-data") || l.contains("provision")
        }) {
            eprintln!("run: console: {line}");
        }
    }
    if !console.contains(berth_layout::console::SHUTDOWN_DONE) {
        return Err(
            format!("the VM exited ({status}) without a clean shutdown:\n{}", berth_qemu::tail(&console, 40)).into()
        );
    }
    Ok(SmokeResult { times, pid1_rss_kib: rss, units, shutdown })
}

/// KiB resident from `Rss:` (/proc/PID/smaps_rollup) or `VmRSS:`
/// (/proc/PID/status), whichever line comes first; `None` without either.
pub fn parse_rss_kib(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("Rss:").or_else(|| l.strip_prefix("VmRSS:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

fn smoke(ctx: &Context, opts: &RunOptions) -> Result<SmokeResult, Error> {
    let r = smoke_once(ctx, opts, "smoke")?;
    println!("boot report");
    println!(
        "  firmware+loader  {}",
        r.times.firmware_loader.map(|s| format!("{s:.3} s")).unwrap_or_else(|| "n/a".into())
    );
    println!("  kernel           {:.3} s", r.times.kernel);
    if let Some(initrd) = r.times.initrd {
        println!("  initrd           {initrd:.3} s");
    }
    println!("  userspace        {:.3} s", r.times.userspace);
    println!("  ready in         {:.3} s", r.times.total);
    if let Some(rss) = r.pid1_rss_kib {
        println!("  PID1 RSS         {rss} KiB");
    }
    println!("  ACPI power-off   {:.1} s (clean)", r.shutdown.as_secs_f64());
    println!("units at ready");
    for line in r.units.lines() {
        println!("  {line}");
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_read_from_proc_status() {
        assert_eq!(parse_rss_kib("VmRSS:\t    1234 kB\n"), Some(1234));
        assert_eq!(parse_rss_kib("Rss:                1004 kB\n"), Some(1004));
        assert_eq!(parse_rss_kib("nothing"), None);
    }
}
