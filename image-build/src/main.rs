//! berth-image: builds Berth's disk image and boots it under QEMU.

use std::path::PathBuf;
use std::process::ExitCode;

use berth_qemu::DiskBus;
use clap::{Parser, Subcommand};

mod bench;
mod build;
mod bundle;
mod cmd;
mod context;
mod deps;
mod disk;
mod erofs;
mod erofs_utils;
mod error;
mod esp;
mod flash;
mod formats;
mod initramfs;
mod kernel;
mod keys;
mod manifest;
mod mirrors;
mod packages;
mod peer;
mod progress;
mod publish;
mod readahead;
mod rig;
mod rootfs;
mod run;
mod secureboot;
mod soak;
mod suite;
mod uki;
mod userdata;
mod variant;
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

#[derive(clap::Args)]
struct BuildArgs {
    /// The OS version to build (semver) instead of the workspace's: the
    /// os-release VERSION_ID, the boot entry and the bundle (tests build
    /// N+1 and N+2 from the same tree).
    #[arg(long, value_name = "V")]
    os_version: Option<String>,
    /// The oldest booted version the bundle may update (default:
    /// image.toml's min_update_from).
    #[arg(long, value_name = "V")]
    min_from_version: Option<String>,
    /// PKCS#8 PEM ed25519 key to sign the bundle with. Default: a
    /// development key made once and kept in the build cache
    /// ($BERTH_CACHE/keys/dev-signing-key.pem, mode 0600).
    #[arg(long, value_name = "FILE")]
    signing_key: Option<PathBuf>,
    /// Another key the image accepts bundles from (public or private PEM;
    /// repeatable), besides the signing key: to rotate keys, version N+1
    /// accepts old and new and is signed with the old, N+2 with the new.
    #[arg(long = "accept-key", value_name = "FILE")]
    accept_keys: Vec<PathBuf>,
    /// PEM private key to sign systemd-boot and the UKIs with for Secure
    /// Boot (the key of a certificate enrolled in the machines' db).
    /// Default: a development pair made once and kept in the build cache
    /// ($BERTH_CACHE/keys/secure-boot/).
    #[arg(long, value_name = "FILE", requires = "secure_boot_cert")]
    secure_boot_key: Option<PathBuf>,
    /// The PEM X.509 certificate of --secure-boot-key (put into sbsign's signatures).
    #[arg(long, value_name = "FILE", requires = "secure_boot_key")]
    secure_boot_cert: Option<PathBuf>,
    /// FOR TESTS ONLY: build a broken image. gate-fails: its health gate
    /// never passes; panic: /sbin/init exits at once and the kernel panics.
    #[arg(long, value_name = "NAME")]
    variant: Option<variant::Variant>,
    /// More formats of the disk besides berth.raw and berth.qcow2, which
    /// every build writes (comma-separated): vmdk (VMware), vhd (Azure),
    /// vhdx (Hyper-V), gce (Google Compute Engine); raw and qcow2 are accepted.
    #[arg(long = "format", value_name = "LIST", value_delimiter = ',')]
    formats: Vec<formats::Format>,
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
    /// berth-4kn.qcow2: for disks with 4096-byte logical sectors), the signed
    /// update bundle berth-<version>.bundle, and print the size report.
    Build(BuildArgs),
    /// Write an update source into DIR for any static HTTP server: the
    /// bundles and signed metadata.json(.sig) listing them. Versions already
    /// listed in DIR are kept (and signed again).
    Publish {
        /// The directory to write (created if missing).
        dir: PathBuf,
        /// A bundle to add (repeatable); default: the one the last build wrote.
        #[arg(long = "bundle", value_name = "FILE")]
        bundles: Vec<PathBuf>,
        /// How long the metadata stays valid; updaters refuse it after that (e.g. 30d, 12h).
        #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
        expires_in: std::time::Duration,
        /// PKCS#8 PEM ed25519 key to sign with (default: the cached development key).
        /// Every bundle must verify with its public key.
        #[arg(long, value_name = "FILE")]
        signing_key: Option<PathBuf>,
    },
    /// Write berth.raw to a disk (a USB stick, a server's disk) or a disk
    /// image file, then read it back and check it. Refuses a partition, a
    /// mounted or busy disk and the disk of the running system; asks before
    /// overwriting a disk that holds data.
    Flash {
        /// The whole disk (/dev/sdX, /dev/nvmeXnY) or a file.
        device: PathBuf,
        /// The image to write (default: berth.raw of the output directory).
        #[arg(long, value_name = "PATH")]
        image: Option<PathBuf>,
        /// Overwrite a disk that holds data without asking (needed without a terminal).
        #[arg(long)]
        yes: bool,
    },
    /// Convert the built berth.raw into the formats hypervisors and clouds
    /// import, into the output directory: qcow2, vmdk (stream-optimised,
    /// VMware), vhd (fixed, 1 MiB aligned: Azure), vhdx (Hyper-V), gce
    /// (disk.raw in a tar.gz), raw.
    Convert {
        /// The formats, comma-separated.
        #[arg(long = "format", value_name = "LIST", value_delimiter = ',', required = true)]
        formats: Vec<formats::Format>,
        /// The raw disk to convert (default: berth.raw of the output directory).
        #[arg(long, value_name = "PATH")]
        image: Option<PathBuf>,
    },
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
        /// How the boot disk is attached: virtio, nvme, sata or usb (a USB stick on xHCI).
        #[arg(long, default_value = "virtio")]
        bus: DiskBus,
        /// Boot berth-4kn.qcow2 from a disk with 4096-byte logical sectors
        /// (virtio or nvme).
        #[arg(long = "4kn")]
        four_kn: bool,
        /// User data for the VM (#cloud-config or #berth-config); it is
        /// checked first (as check-config does) and given to the VM either way.
        #[arg(long, value_name = "FILE")]
        user_data: Option<PathBuf>,
        /// Meta-data (YAML: instance-id, local-hostname) to go with it.
        /// NoCloud and IMDS seeds get `instance-id: iid-local01` without it.
        #[arg(long, value_name = "FILE", requires = "user_data")]
        meta_data: Option<PathBuf>,
        /// How the VM gets the user data: fw_cfg (QEMU's firmware config),
        /// nocloud (a vfat CIDATA disk), nocloud-iso (an iso9660 cidata
        /// disk), imds (an EC2-style metadata service on the host, the VM
        /// looking like EC2).
        #[arg(long, value_enum, default_value = "fw_cfg", requires = "user_data")]
        seed: userdata::Seed,
    },
    /// Check a user-data file (#cloud-config YAML or #berth-config TOML)
    /// with the code the machine runs: every error and warning with its
    /// line and key, then a summary. Exit 1 when the machine would reject it.
    CheckConfig {
        /// The user-data file.
        file: PathBuf,
    },
    /// Boot the image several times and print boot, size and memory
    /// figures, then update figures (unless --no-updates).
    Bench {
        /// Boots of the image for the boot figures (0: none).
        #[arg(long, default_value_t = 5)]
        boots: usize,
        #[arg(long)]
        kvm: bool,
        /// Skip the update figures (by default N and N+1 are built and
        /// updates between them measured: install throughput against the
        /// raw write throughput of the same virtual disk, install to the
        /// new slot's ready line, bundle size against the root tree).
        #[arg(long)]
        no_updates: bool,
        /// Update runs (install, boot N+1, roll back) for the medians (0: none);
        /// with `--cluster`, transfers per path and router restarts.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Instead: Berth against the systemd peer (Debian 12 + systemd +
        /// the same containerd, runc and etcd; built and cached on the
        /// first run), `--boots` steady-state reboots of each, alternating,
        /// after a first boot of each (TCG, 2 vCPUs, 1 GiB).
        #[arg(long, group = "nic_with")]
        peer: bool,
        /// With --peer or --against: give the VMs a virtio NIC on QEMU's
        /// user network (default: no NIC); "every unit ready" then waits
        /// for the network too.
        #[arg(long, requires = "nic_with")]
        nic: bool,
        /// Only the cluster figures instead: three hosts with the router,
        /// container-to-container throughput against host-to-host on the
        /// same segment, and the time to converge after a join and a leave.
        #[arg(long, conflicts_with = "peer")]
        cluster: bool,
        /// Only the root's packing instead: the image built once per
        /// candidate compression (before, lz4hc in big clusters,
        /// image.toml's, LZMA everywhere), each booted `--boots` times in
        /// turns: size against boot time.
        #[arg(long, conflicts_with_all = ["peer", "cluster"])]
        erofs: bool,
        /// Only this build against other builds instead: this build's disk
        /// and each DISK (another build's berth.qcow2, e.g. copied aside
        /// before a change) booted `--boots` times in turns; a before and
        /// after of one change, in one sitting.
        #[arg(
            long,
            value_name = "DISK",
            num_args = 1..,
            conflicts_with_all = ["peer", "cluster", "erofs"],
            group = "nic_with"
        )]
        against: Vec<PathBuf>,
    },
    /// Build releases N and N+1, then cut the power of a VM installing N+1
    /// (or booting it the first time) N times at random points, and count
    /// the cuts after which it does not come up on its old slot (bricks).
    /// Hours under TCG; not part of `test`.
    Soak {
        /// How many power cuts.
        #[arg(long, value_name = "N")]
        power_cuts: usize,
        /// Seed of the random cut points (default: the clock; printed).
        #[arg(long)]
        seed: Option<u64>,
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
        Command::Build(a) => {
            let opts = build::BuildOptions {
                os_version: a.os_version,
                min_from_version: a.min_from_version,
                signing_key: a.signing_key,
                accept_keys: a.accept_keys,
                secure_boot: (a.secure_boot_key, a.secure_boot_cert),
                variant: a.variant,
                // raw and qcow2 are always written.
                formats: a
                    .formats
                    .into_iter()
                    .filter(|f| !matches!(f, formats::Format::Raw | formats::Format::Qcow2))
                    .collect(),
                erofs: None,
            };
            build::build(&ctx, &opts).map(|report| println!("{report}"))
        }
        Command::Publish { dir, bundles, expires_in, signing_key } => {
            let opts = publish::PublishOptions { dir, bundles, expires_in, signing_key };
            publish::publish(&ctx, &opts).map(|m| print!("{}", publish::summary(&opts.dir, &m)))
        }
        Command::Flash { device, image, yes } => {
            let opts = flash::FlashOptions { target: device, image: image.unwrap_or_else(|| ctx.raw()), yes };
            flash::flash(&opts)
                .map(|f| {
                    println!(
                        "flash: wrote {} bytes to {}, read back: sha256 {}",
                        f.bytes,
                        opts.target.display(),
                        f.sha256
                    )
                })
                .map_err(Into::into)
        }
        Command::Convert { formats, image } => {
            formats::convert(&image.unwrap_or_else(|| ctx.raw()), &ctx.out, &formats)
                .map(|files| files.iter().for_each(|f| println!("{}", f.display())))
                .map_err(Into::into)
        }
        Command::Run { smoke, kvm, memory, bus, four_kn, user_data, meta_data, seed } => {
            let user_data = userdata::UserData { user_data, meta_data, seed };
            run::run(&ctx, &run::RunOptions { smoke, kvm, memory_mib: memory, bus, four_kn, user_data })
        }
        Command::CheckConfig { file } => match userdata::check_config(&file) {
            Ok(report) => {
                print!("{}", report.text);
                return if report.accepted { ExitCode::SUCCESS } else { ExitCode::FAILURE };
            }
            Err(e) => Err(e),
        },
        Command::Bench { boots, kvm, erofs: true, .. } => bench::erofs::bench_erofs(&ctx, boots, kvm),
        Command::Bench { boots, kvm, against, nic, .. } if !against.is_empty() => {
            bench::turns::bench_against(&ctx, &against, boots, kvm, nic)
        }
        Command::Bench { boots, kvm, peer: true, nic, .. } => {
            bench::peer::bench_peer(&ctx, &bench::peer::PeerBenchOptions { boots, kvm, nic })
        }
        Command::Bench { boots, kvm, no_updates, runs, cluster, .. } => {
            let opts = run::RunOptions {
                smoke: true,
                kvm,
                memory_mib: 1024,
                bus: DiskBus::Virtio,
                four_kn: false,
                user_data: userdata::UserData::default(),
            };
            if cluster {
                bench::cluster::bench_cluster(&ctx, &opts, runs.max(1))
            } else {
                bench::bench(&ctx, &opts, boots).and_then(|()| {
                    if no_updates || runs == 0 {
                        Ok(())
                    } else {
                        bench::updates::bench_updates(&opts, runs)
                    }
                })
            }
        }
        Command::Soak { power_cuts, seed, kvm } => soak::soak(&soak::SoakOptions { cuts: power_cuts, seed, kvm }),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("berth-image").chain(args.iter().copied()))
    }

    #[test]
    fn run_takes_user_data_and_a_seed() {
        let Ok(Cli { command: Command::Run { user_data, seed, .. }, .. }) = parse(&["run", "--smoke"]) else {
            panic!("run --smoke parses")
        };
        assert_eq!((user_data, seed), (None, userdata::Seed::FwCfg));
        let Ok(Cli { command: Command::Run { user_data, meta_data, seed, .. }, .. }) =
            parse(&["run", "--user-data", "u", "--meta-data", "m", "--seed", "nocloud-iso"])
        else {
            panic!("run with user data parses")
        };
        assert_eq!((user_data, meta_data, seed), (Some("u".into()), Some("m".into()), userdata::Seed::NocloudIso));
        assert!(parse(&["run", "--seed", "imds"]).is_err(), "a seed without user data");
        assert!(parse(&["run", "--user-data", "u", "--seed", "floppy"]).is_err());
        assert!(matches!(parse(&["check-config", "f"]), Ok(Cli { command: Command::CheckConfig { .. }, .. })));
    }

    #[test]
    fn bench_peer_takes_boots_and_a_nic() {
        let Ok(Cli { command: Command::Bench { peer, boots, nic, .. }, .. }) = parse(&["bench", "--peer"]) else {
            panic!("bench --peer parses")
        };
        assert_eq!((peer, boots, nic), (true, 5, false));
        assert!(matches!(
            parse(&["bench", "--peer", "--boots", "3", "--nic"]),
            Ok(Cli { command: Command::Bench { peer: true, boots: 3, nic: true, .. }, .. })
        ));
        assert!(
            matches!(
                parse(&["bench", "--against", "x.qcow2", "--nic"]),
                Ok(Cli { command: Command::Bench { nic: true, .. }, .. })
            ),
            "--against takes --nic"
        );
        assert!(parse(&["bench", "--nic"]).is_err(), "--nic needs --peer or --against");
        assert!(parse(&["bench", "--erofs", "--nic"]).is_err(), "--erofs has no NIC");
    }

    #[test]
    fn flash_convert_and_build_formats_parse() {
        let Ok(Cli { command: Command::Flash { device, image, yes }, .. }) = parse(&["flash", "/dev/sdb"]) else {
            panic!("flash DEVICE parses")
        };
        assert_eq!((device, image, yes), ("/dev/sdb".into(), None, false));
        assert!(matches!(
            parse(&["flash", "disk.raw", "--image", "x.raw", "--yes"]),
            Ok(Cli { command: Command::Flash { yes: true, image: Some(_), .. }, .. })
        ));
        assert!(parse(&["flash"]).is_err(), "flash needs a device");
        let Ok(Cli { command: Command::Build(b), .. }) = parse(&["build", "--format", "raw,qcow2,vmdk,vhd"]) else {
            panic!("build --format parses")
        };
        use formats::Format;
        assert_eq!(b.formats, [Format::Raw, Format::Qcow2, Format::Vmdk, Format::Vhd]);
        assert!(parse(&["build", "--format", "vdi"]).is_err());
        assert!(parse(&["convert"]).is_err(), "convert needs --format");
        assert!(matches!(
            parse(&["convert", "--format", "gce"]),
            Ok(Cli { command: Command::Convert { image: None, .. }, .. })
        ));
    }
}
