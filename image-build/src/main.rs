//! berth-image: builds Berth's disk image and boots it under QEMU.

use std::path::PathBuf;
use std::process::ExitCode;

use berth_qemu::DiskBus;
use clap::{Parser, Subcommand};

mod bench;
mod build;
mod cmd;
mod context;
mod deps;
mod disk;
mod erofs;
mod error;
mod esp;
mod kernel;
mod manifest;
mod packages;
mod rootfs;
mod run;
mod suite;
mod verity;

use context::Context;

#[derive(Parser)]
#[command(name = "berth-image", version, about)]
struct Cli {
    /// Write outputs here instead of target/berth/.
    #[arg(long, global = true)]
    out: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the host packages the build and the VMs need (as root).
    Deps,
    /// Pin the current Debian version of every package of image.toml in packages.lock.
    Lock,
    /// Build (or take from the cache) the trimmed kernel and print its path.
    Kernel,
    /// Build berth.raw and berth.qcow2, their 4Kn variants (berth-4kn.raw,
    /// berth-4kn.qcow2: for disks with 4096-byte logical sectors) and print
    /// the size report.
    Build,
    /// Boot the image under QEMU + OVMF (building it first if missing).
    Run {
        /// Headless: wait for the ready line, power off over ACPI, print the boot report.
        #[arg(long)]
        smoke: bool,
        /// Use KVM instead of TCG.
        #[arg(long)]
        kvm: bool,
        /// Guest memory in MiB.
        #[arg(long, default_value_t = 1024)]
        memory: u32,
        /// How the boot disk is attached: virtio, nvme or sata.
        #[arg(long, default_value = "virtio")]
        bus: DiskBus,
        /// Boot berth-4kn.qcow2 from a disk with 4096-byte logical sectors
        /// (virtio or nvme).
        #[arg(long = "4kn")]
        four_kn: bool,
    },
    /// Boot the image several times and print boot, size and memory figures.
    Bench {
        #[arg(long, default_value_t = 5)]
        boots: usize,
        #[arg(long)]
        kvm: bool,
    },
    /// Build the image, then run every test of the workspace (unit and QEMU).
    Test {
        /// Passed on to `cargo test` (e.g. `-p berth-qemu`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        cargo_args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ctx = Context::new(cli.out);
    let result: Result<(), Box<dyn std::error::Error>> = match cli.command {
        Command::Deps => deps::ensure().map_err(Into::into),
        Command::Lock => build::lock(&ctx),
        Command::Kernel => kernel::build(&ctx).map(|k| println!("{}", k.bzimage.display())).map_err(Into::into),
        Command::Build => build::build(&ctx).map(|report| println!("{report}")),
        Command::Run { smoke, kvm, memory, bus, four_kn } => {
            run::run(&ctx, &run::RunOptions { smoke, kvm, memory_mib: memory, bus, four_kn })
        }
        Command::Bench { boots, kvm } => bench::bench(
            &ctx,
            &run::RunOptions { smoke: true, kvm, memory_mib: 1024, bus: DiskBus::Virtio, four_kn: false },
            boots,
        ),
        Command::Test { cargo_args } => suite::run(&ctx, &cargo_args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-image: {e}");
            ExitCode::FAILURE
        }
    }
}
