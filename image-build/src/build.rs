//! `berth-image build`: kernel, root, EROFS, verity, ESP, disk, qcow2 and
//! the signed update bundle, in that order, with a size report at the end.
//! The disk is written twice around the one root slot image: in 512-byte
//! sectors (`berth.raw`) and in 4096-byte ones for 4Kn drives
//! (`berth-4kn.raw`); the bundle carries that same root slot image.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use berth_layout::cmdline::{kernel_cmdline, Verity};
use berth_layout::disk::{self, Slot, SECTOR, SECTOR_4KN};
use berth_layout::{os_release, Guid, VERSION};
use berth_updater::boot_entry::{self, EntryName};

use crate::cmd;
use crate::context::Context;
use crate::error::io_at;
use crate::esp::EspFile;
use crate::variant::{self, Variant};
use crate::{
    bundle, deps, disk as diskimg, erofs, erofs_utils, esp, initramfs, kernel, keys, manifest, packages, rootfs,
    secureboot, uki, verity,
};

type Error = Box<dyn std::error::Error>;

/// Timestamps inside the image: SOURCE_DATE_EPOCH when set, else a constant.
fn epoch() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.parse().ok()).unwrap_or(1_735_689_600)
}

pub struct SizeReport {
    pub kernel: u64,
    pub root_files: usize,
    pub root_bytes: u64,
    pub largest: Vec<(String, u64)>,
    pub erofs: u64,
    /// How it was packed: mkfs.erofs's `-z` and `-C`.
    pub erofs_packing: String,
    pub root_partition: u64,
    pub esp_used: u64,
    pub disk_virtual: u64,
    pub disk_allocated: u64,
    pub qcow2: u64,
    pub qcow2_4kn: u64,
    /// The update bundle written and its size in bytes.
    pub bundle: (PathBuf, u64),
}

/// What `berth-image build` may change from its defaults.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// The OS version (semver without build metadata) in place of the
    /// workspace's: os-release's VERSION_ID, the boot entry, the bundle,
    /// and what derives from the version (partition UUIDs, verity salt).
    pub os_version: Option<String>,
    /// The bundle's min_from_version in place of image.toml's `min_update_from`.
    pub min_from_version: Option<String>,
    /// Sign with this PKCS#8 PEM key instead of the cached development key.
    pub signing_key: Option<PathBuf>,
    /// More public keys the image accepts (public or private PEM files).
    pub accept_keys: Vec<PathBuf>,
    /// Sign systemd-boot and the UKIs with this PEM key and X.509
    /// certificate instead of the cached development pair.
    pub secure_boot: (Option<PathBuf>, Option<PathBuf>),
    /// A broken image, for the update tests.
    pub variant: Option<Variant>,
    /// More formats of the disk (`--format`), see [`crate::formats`].
    pub formats: Vec<crate::formats::Format>,
    /// The root's packing in place of image.toml's `[erofs]` (`bench --erofs`).
    pub erofs: Option<manifest::Erofs>,
}

/// The file holding the file name of the bundle the last build wrote (in the output directory).
pub const LAST_BUNDLE: &str = "last-bundle.txt";

/// A version as the updater compares them (semver) and as a boot entry
/// name can carry it (no `+`, which starts the boot counter).
fn check_version(flag: &str, v: &str) -> Result<(), Error> {
    let parsed = semver::Version::parse(v).map_err(|e| format!("{flag} {v:?} is not a semver version: {e}"))?;
    if !parsed.build.is_empty() {
        return Err(format!("{flag} {v:?}: build metadata (+...) cannot go in a boot entry name").into());
    }
    Ok(())
}

fn mib(b: u64) -> String {
    format!("{:.2} MiB", b as f64 / (1024.0 * 1024.0))
}

impl std::fmt::Display for SizeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "size report")?;
        writeln!(f, "  kernel (bzImage)        {:>12}", mib(self.kernel))?;
        writeln!(f, "  root tree               {:>12}  ({} files)", mib(self.root_bytes), self.root_files)?;
        for (path, size) in &self.largest {
            writeln!(f, "      {:<36} {:>12}", path, mib(*size))?;
        }
        writeln!(
            f,
            "  EROFS                   {:>12}  ({:.0}% of the tree; {})",
            mib(self.erofs),
            100.0 * self.erofs as f64 / self.root_bytes.max(1) as f64,
            self.erofs_packing
        )?;
        writeln!(f, "  root slot (+ verity)    {:>12}  of {}", mib(self.root_partition), mib(disk::ROOT_SIZE))?;
        writeln!(f, "  ESP contents            {:>12}  of {}", mib(self.esp_used), mib(disk::ESP_SIZE))?;
        writeln!(f, "  disk (virtual)          {:>12}", mib(self.disk_virtual))?;
        writeln!(f, "  disk (allocated)        {:>12}", mib(self.disk_allocated))?;
        writeln!(f, "  berth.qcow2             {:>12}", mib(self.qcow2))?;
        writeln!(f, "  berth-4kn.qcow2         {:>12}", mib(self.qcow2_4kn))?;
        write!(f, "  update bundle           {:>12}  {}", mib(self.bundle.1), self.bundle.0.display())
    }
}

fn step(name: &str, started: Instant) {
    eprintln!("build: {name} done ({:.1} s)", started.elapsed().as_secs_f64());
}

/// Berth's binaries for the image: `cargo build --profile image`, and
/// `cargo rustc --profile image -- -C target-feature=+crt-static` for each
/// of them in `static_names` (the flag goes to the binary's link only; the
/// libraries it links are the same either way). Returns the directory
/// holding them all (`target/image`).
fn build_binaries(ctx: &Context, names: &[String], static_names: &[String]) -> Result<PathBuf, Error> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let dynamic: Vec<&String> = names.iter().filter(|n| !static_names.contains(n)).collect();
    if !dynamic.is_empty() {
        let mut c = Command::new(&cargo);
        c.current_dir(&ctx.repo).args(["build", "--profile", "image"]);
        for n in dynamic {
            c.arg("--bin").arg(n);
        }
        let status = c.status().map_err(|e| format!("running cargo: {e}"))?;
        if !status.success() {
            return Err(format!("cargo build --profile image failed ({status})").into());
        }
    }
    for n in names.iter().filter(|n| static_names.contains(n)) {
        let package = package_of_bin(&cargo, &ctx.repo, n)?;
        let mut c = Command::new(&cargo);
        c.current_dir(&ctx.repo).args(["rustc", "--profile", "image", "-p", &package, "--bin", n]);
        c.args(["--", "-C", "target-feature=+crt-static"]);
        let status = c.status().map_err(|e| format!("running cargo: {e}"))?;
        if !status.success() {
            return Err(format!("cargo rustc --profile image --bin {n} (static) failed ({status})").into());
        }
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| ctx.repo.join("target"));
    Ok(target.join("image"))
}

/// The workspace package that has the binary `bin` (`cargo rustc` takes
/// one package), from `cargo metadata`.
fn package_of_bin(cargo: &std::ffi::OsStr, repo: &Path, bin: &str) -> Result<String, Error> {
    let out =
        cmd::stdout(Command::new(cargo).current_dir(repo).args(["metadata", "--no-deps", "--format-version", "1"]))?;
    let meta: serde_json::Value = serde_json::from_str(&out).map_err(|e| format!("cargo metadata: {e}"))?;
    let packages = meta["packages"].as_array().map(Vec::as_slice).unwrap_or_default();
    packages
        .iter()
        .find(|p| {
            p["targets"].as_array().is_some_and(|ts| {
                ts.iter()
                    .any(|t| t["name"] == bin && t["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "bin")))
            })
        })
        .and_then(|p| p["name"].as_str())
        .map(str::to_string)
        .ok_or_else(|| format!("image.toml: berth_static names {bin:?}, which no workspace package builds").into())
}

/// Builds everything into `ctx.out` and returns the size report.
pub fn build(ctx: &Context, opts: &BuildOptions) -> Result<SizeReport, Error> {
    let version = opts.os_version.as_deref().unwrap_or(VERSION);
    check_version("--os-version", version)?;
    deps::ensure()?;
    let t0 = Instant::now();
    let work = ctx.out.join("work");
    std::fs::create_dir_all(&work)?;
    let dir = ctx.image_build_dir();
    let image = manifest::image(&dir)?;
    let lock = manifest::lock(&dir)?;
    let pins = lock.pins_for(&image, &manifest::lock_path(&dir))?;
    let min_from = opts.min_from_version.as_deref().unwrap_or(&image.min_update_from);
    check_version("--min-from-version", min_from)?;
    let (signing_key, key_file) = keys::signing_key(opts.signing_key.as_deref(), &ctx.cache)?;
    let mut accepted = vec![signing_key.verifying_key()];
    for path in &opts.accept_keys {
        accepted.push(keys::accepted_key(path)?);
    }

    let t = Instant::now();
    let kernel = kernel::build(ctx)?;
    step("kernel", t);

    let t = Instant::now();
    let (mut names, mut statics) = (image.berth_binaries.clone(), image.berth_static.clone());
    names.push(image.initrd_init.clone());
    statics.push(image.initrd_init.clone());
    let bins = build_binaries(ctx, &names, &statics)?;
    step("berth binaries", t);

    let t = Instant::now();
    let debs = packages::fetch(&ctx.cache, &pins)?;
    let pkgroot = work.join("packages");
    packages::unpack(&debs, &pkgroot)?;
    step("packages", t);

    let t = Instant::now();
    let root = work.join("root");
    let mut tree = rootfs::build(&image, &pkgroot, &bins, &dir.join("rootfs"), &os_release::render(version), &root)?;
    let keys_dir = berth_layout::paths::UPDATE_KEYS_DIR;
    for name in keys::write_keys_dir(&root.join(keys_dir.trim_start_matches('/')), &accepted)? {
        tree.files
            .insert(format!("{keys_dir}/{name}"), file_len(&root.join(keys_dir.trim_start_matches('/')).join(&name)));
    }
    let readahead = crate::readahead::write(&root)?;
    let list = berth_layout::paths::BOOT_READAHEAD;
    tree.files.insert(list.to_string(), file_len(&root.join(list.trim_start_matches('/'))));
    eprintln!("build: boot read-ahead: {} files ({list})", readahead.len());
    if let Some(v) = opts.variant {
        variant::apply(v, &root)?;
        eprintln!("build: test variant {v:?} applied: this image is broken on purpose");
    }
    step("root tree", t);

    let t = Instant::now();
    let root_img = work.join("root-a.img");
    let settings = opts.erofs.as_ref().unwrap_or(&image.erofs);
    let mkfs = erofs_utils::mkfs_erofs(&ctx.cache, settings)?;
    let packing = erofs::Packing { mkfs: &mkfs, settings, dir: &dir };
    let erofs_size = erofs::build(&packing, &root, &root_img, Guid::derive(&format!("{version}/erofs")), epoch())?;
    let (verity, root_partition) = verity::append_hash_tree(&root_img, version)?;
    step("EROFS + verity", t);

    let t = Instant::now();
    // Slot A's partition is named by the root it holds, as an update names
    // the slot it writes: the signed UKIs' command lines are fixed here.
    let partuuid = disk::root_partition_uuid(&verity.root_hash, Slot::A);
    let cmdline = kernel_cmdline(Slot::A, partuuid, &verity);
    let loader_conf = work.join("loader.conf");
    // timeout 0: straight to the best entry; editor no: the command line
    // carries the verity root hash and must not be editable at the console.
    std::fs::write(&loader_conf, "timeout 0\neditor no\n")?;
    let entry = work.join("entry.conf");
    std::fs::write(&entry, boot_entry::uki_entry_text(version, Slot::A))?;
    let initrd = work.join("initrd.cpio");
    let stage0 = bins.join(&image.initrd_init);
    let stage0 = std::fs::read(&stage0).map_err(io_at(&stage0))?;
    let modules = initramfs::load_order(&kernel.modules)?;
    let archive =
        initramfs::archive(&stage0, &os_release::render(version), &modules, u32::try_from(epoch()).unwrap_or(0))?;
    std::fs::write(&initrd, archive).map_err(io_at(&initrd))?;
    let boot = BootFiles { bzimage: &kernel.bzimage, initrd: &initrd };
    let signed = sign_boot_chain(ctx, opts, &pkgroot, &image.systemd_boot, &boot, version, &verity)?;
    let files = [
        EspFile { source: &signed.systemd_boot, dest: "/EFI/BOOT/BOOTX64.EFI".into() },
        EspFile { source: &signed.systemd_boot, dest: "/EFI/systemd/systemd-bootx64.efi".into() },
        EspFile { source: &loader_conf, dest: "/loader/loader.conf".into() },
        // Blessed from the start: a fresh disk has no other slot to fall
        // back to, so counting its first boots would only reboot a machine
        // whose health gate fails (say, etcd not configured yet) three
        // times for nothing. Installed updates get their tries (+3).
        EspFile { source: &entry, dest: format!("/loader/entries/{}", EntryName::new(version).blessed()) },
        EspFile { source: &signed.ukis[0], dest: boot_entry::uki_path(Slot::A) },
    ];
    let volume_id = u32::from_be_bytes(esp_volume_id(version));
    // One disk per logical sector size: berth.raw, and for 4Kn drives
    // berth-4kn.raw with the same root slot image (so the same PARTUUIDs,
    // verity root hash and command line) at the same offsets, in a GPT of
    // 4096-byte sectors around an ESP whose FAT has 4096-byte sectors.
    let disks =
        [(SECTOR, "esp.img", ctx.raw(), ctx.qcow2()), (SECTOR_4KN, "esp-4kn.img", ctx.raw_4kn(), ctx.qcow2_4kn())];
    for (sector_size, esp_name, _, _) in &disks {
        esp::build(&work.join(esp_name), disk::ESP_SIZE, *sector_size, volume_id, epoch(), &files)?;
    }
    step("ESP", t);

    let t = Instant::now();
    for (sector_size, esp_name, raw, qcow2) in &disks {
        let esp_img = work.join(esp_name);
        let contents = [(disk::ESP_LABEL, esp_img.as_path()), (disk::ROOT_A_LABEL, root_img.as_path())];
        diskimg::assemble(raw, version, *sector_size, &contents, &[(disk::ROOT_A_LABEL, partuuid)])?;
        diskimg::to_qcow2(raw, qcow2)?;
    }
    let [(_, _, raw, qcow2), (_, _, _, qcow2_4kn)] = disks;
    std::fs::write(ctx.out.join("cmdline.txt"), format!("{cmdline}\n"))?;
    std::fs::copy(&kernel.bzimage, ctx.out.join("bzImage"))?;
    std::fs::copy(&initrd, ctx.out.join("initrd.cpio"))?;
    crate::formats::convert(&raw, &ctx.out, &opts.formats)?;
    step("disk", t);

    let t = Instant::now();
    let bundle_path = ctx.out.join(bundle::file_name(version));
    let input = bundle::BundleInput {
        os_version: version,
        min_from_version: min_from,
        root_image: &root_img,
        verity: &verity,
        ukis: [&signed.ukis[0], &signed.ukis[1]],
    };
    bundle::write(&input, &signing_key, &bundle_path)?;
    std::fs::write(ctx.out.join(LAST_BUNDLE), format!("{}\n", bundle::file_name(version)))?;
    step(&format!("bundle (signed with {})", key_file.display()), t);

    let report = SizeReport {
        kernel: file_len(&kernel.bzimage),
        root_files: tree.files.len(),
        root_bytes: tree.total(),
        largest: tree.largest(5).into_iter().map(|(p, s)| (p.to_string(), s)).collect(),
        erofs: erofs_size,
        erofs_packing: format!("-z{} -C{}", settings.compressors, settings.pcluster),
        root_partition,
        esp_used: esp::used(&files),
        disk_virtual: file_len(&raw),
        disk_allocated: allocated(&raw),
        qcow2: file_len(&qcow2),
        qcow2_4kn: file_len(&qcow2_4kn),
        bundle: (bundle_path.clone(), file_len(&bundle_path)),
    };
    std::fs::write(ctx.out.join("size-report.txt"), format!("{report}\n"))?;
    eprintln!("build: {} in {:.1} s", raw.display(), t0.elapsed().as_secs_f64());
    Ok(report)
}

/// The signed binaries of the boot chain (in the output directory).
struct SignedChain {
    /// systemd-boot, for `BOOTX64.EFI` and `systemd-bootx64.efi`.
    systemd_boot: PathBuf,
    /// The UKI of each slot (A, B): the stub, os-release, the slot's
    /// command line, the kernel. Slot A's goes on the ESP; both go into the
    /// update bundle, which installs the one of the slot it writes (their
    /// command lines name the root partition by
    /// [`disk::root_partition_uuid`], so they fit any disk).
    ukis: [PathBuf; 2],
}

/// The kernel and the initramfs every UKI of a build carries.
struct BootFiles<'a> {
    bzimage: &'a Path,
    initrd: &'a Path,
}

/// Assembles each slot's UKI for the root of `verity` and signs them and
/// systemd-boot with the Secure Boot pair ([`secureboot::signing_pair`]).
/// Writes `berth-a.efi`, `berth-b.efi`, their `.unsigned.efi` twins,
/// `systemd-bootx64.efi` and `systemd-bootx64.unsigned.efi` into the
/// output directory, for tests that re-sign or break them.
fn sign_boot_chain(
    ctx: &Context,
    opts: &BuildOptions,
    pkgroot: &Path,
    systemd_boot: &str,
    boot: &BootFiles<'_>,
    version: &str,
    verity: &Verity,
) -> Result<SignedChain, Error> {
    let pair = secureboot::signing_pair(opts.secure_boot.0.as_deref(), opts.secure_boot.1.as_deref(), &ctx.cache)?;
    let stub = rootfs::resolve(pkgroot, uki::STUB)?;
    let chain = SignedChain {
        systemd_boot: ctx.out.join("systemd-bootx64.efi"),
        ukis: [ctx.out.join("berth-a.efi"), ctx.out.join("berth-b.efi")],
    };
    for (slot, signed) in [Slot::A, Slot::B].into_iter().zip(&chain.ukis) {
        let cmdline = kernel_cmdline(slot, disk::root_partition_uuid(&verity.root_hash, slot), verity);
        let unsigned = ctx.out.join(format!("berth-{}.unsigned.efi", slot.name()));
        let os_release = os_release::render(version);
        let parts =
            uki::UkiParts { os_release: &os_release, cmdline: &cmdline, linux: boot.bzimage, initrd: boot.initrd };
        uki::assemble(&stub, &parts, &unsigned, epoch())?;
        secureboot::sign(&pair, &unsigned, signed, epoch())?;
    }
    let unsigned_boot = ctx.out.join("systemd-bootx64.unsigned.efi");
    std::fs::copy(rootfs::resolve(pkgroot, systemd_boot)?, &unsigned_boot)?;
    secureboot::sign(&pair, &unsigned_boot, &chain.systemd_boot, epoch())?;
    eprintln!("build: systemd-boot and the UKIs signed with {}", pair.cert.display());
    Ok(chain)
}

fn esp_volume_id(version: &str) -> [u8; 4] {
    let g = Guid::derive(&format!("{version}/esp"));
    let b = g.as_bytes();
    [b[0], b[1], b[2], b[3]]
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn allocated(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).map(|m| m.blocks() * 512).unwrap_or(0)
}

/// `berth-image lock`: pins the current archive version of every package.
pub fn lock(ctx: &Context) -> Result<(), Error> {
    deps::ensure()?;
    let dir = ctx.image_build_dir();
    let image = manifest::image(&dir)?;
    cmd::run(Command::new("apt-get").args(["update", "-q"]))?;
    let lock = packages::lock(&ctx.cache, &image.packages)?;
    let path = manifest::lock_path(&dir);
    std::fs::write(&path, lock.to_toml())?;
    eprintln!("lock: wrote {}", path.display());
    Ok(())
}
