//! The disk in the formats hypervisors and clouds import, converted from
//! `berth.raw` with qemu-img (`build --format`, `convert`):
//!
//! | format  | file              | for                                            |
//! |---------|-------------------|------------------------------------------------|
//! | raw     | berth.raw         | AWS (import-snapshot), dd, `flash`             |
//! | qcow2   | berth.qcow2       | QEMU/KVM, libvirt, Proxmox, OpenStack          |
//! | vmdk    | berth.vmdk        | VMware (stream-optimised, as OVF/ESXi import)  |
//! | vhd     | berth.vhd         | Azure (fixed, size a multiple of 1 MiB)        |
//! | vhdx    | berth.vhdx        | Hyper-V (Generation 2 VMs boot VHDX only)      |
//! | gce     | berth-gce.tar.gz  | Google Compute Engine (`disk.raw` in a tar.gz) |
//!
//! raw and qcow2 are what every build writes; the others are written on
//! request.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cmd::{self, CmdError};
use crate::error::{io_at, IoError};
use crate::progress;

/// One MiB: Azure takes only VHDs whose virtual size is a multiple of it.
pub const MIB: u64 = 1024 * 1024;

/// An output format of the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Format {
    Raw,
    Qcow2,
    Vmdk,
    Vhd,
    Vhdx,
    Gce,
}

impl Format {
    /// Every format, in the order they are written.
    pub const ALL: [Format; 6] = [Format::Raw, Format::Qcow2, Format::Vmdk, Format::Vhd, Format::Vhdx, Format::Gce];

    /// The file it is written to, in the output directory.
    pub fn file_name(self) -> &'static str {
        match self {
            Format::Raw => "berth.raw",
            Format::Qcow2 => "berth.qcow2",
            Format::Vmdk => "berth.vmdk",
            Format::Vhd => "berth.vhd",
            Format::Vhdx => "berth.vhdx",
            Format::Gce => "berth-gce.tar.gz",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vhd => "vhd",
            Format::Vhdx => "vhdx",
            Format::Gce => "gce",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Format {
    type Err = String;

    /// `raw`, `qcow2`, `vmdk`, `vhd` (also `vpc`) or `gce`.
    fn from_str(s: &str) -> Result<Format, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "raw" => Ok(Format::Raw),
            "qcow2" => Ok(Format::Qcow2),
            "vmdk" => Ok(Format::Vmdk),
            "vhd" | "vpc" => Ok(Format::Vhd),
            "vhdx" => Ok(Format::Vhdx),
            "gce" => Ok(Format::Gce),
            other => {
                let names: Vec<&str> = Format::ALL.iter().map(|f| f.name()).collect();
                Err(format!("unknown format {other:?} (one of {})", names.join(", ")))
            }
        }
    }
}

/// A conversion that failed: a file operation or qemu-img, cp or tar.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Cmd(#[from] CmdError),
}

/// `size` rounded up to a whole MiB.
pub fn round_up_mib(size: u64) -> u64 {
    size.div_ceil(MIB) * MIB
}

/// The qemu-img arguments that write `format` (after `convert -f raw`).
fn qemu_img_args(format: Format) -> &'static [&'static str] {
    match format {
        Format::Raw => &["-O", "raw"],
        Format::Qcow2 => &["-O", "qcow2"],
        Format::Vmdk => &["-O", "vmdk", "-o", "subformat=streamOptimized"],
        // force_size: the virtual size is the raw size, not rounded to a
        // CHS geometry (which would break the 1 MiB multiple).
        Format::Vhd => &["-O", "vpc", "-o", "subformat=fixed,force_size=on"],
        Format::Vhdx => &["-O", "vhdx", "-o", "subformat=dynamic"],
        Format::Gce => &[],
    }
}

/// Writes each of `formats` of the disk `raw` into `out_dir` (raw: a copy
/// unless `raw` is already there) and returns the files written.
pub fn convert(raw: &Path, out_dir: &Path, formats: &[Format]) -> Result<Vec<PathBuf>, FormatError> {
    std::fs::create_dir_all(out_dir).map_err(io_at(out_dir))?;
    let mut written = Vec::new();
    let mut formats = formats.to_vec();
    formats.sort();
    formats.dedup();
    for format in formats {
        let out = out_dir.join(format.file_name());
        let label = format!("convert: {} -> {}", raw.display(), out.display());
        match format {
            Format::Raw => {
                if !same_file(raw, &out) {
                    progress::spin(label, || {
                        cmd::run(Command::new("cp").arg("--sparse=always").arg(raw).arg(&out)).map(drop)
                    })?;
                }
            }
            Format::Qcow2 | Format::Vmdk | Format::Vhdx => {
                progress::spin(label, || qemu_img_convert(raw, &out, format))?
            }
            Format::Vhd => progress::spin(label, || to_vhd(raw, &out))?,
            Format::Gce => progress::spin(label, || to_gce(raw, &out))?,
        }
        written.push(out);
    }
    Ok(written)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn qemu_img_convert(raw: &Path, out: &Path, format: Format) -> Result<(), FormatError> {
    let _ = std::fs::remove_file(out);
    cmd::run(Command::new("qemu-img").args(["convert", "-f", "raw"]).args(qemu_img_args(format)).arg(raw).arg(out))?;
    Ok(())
}

/// A scratch file next to `out`, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_file(&self.0);
    }
}

fn scratch(out: &Path, what: &str) -> Scratch {
    let name =
        format!(".{}.{what}-{}", out.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(), std::process::id());
    Scratch(out.with_file_name(name))
}

/// A fixed VHD whose virtual size is the raw size rounded up to 1 MiB
/// (Azure's rule; Hyper-V takes it as is).
fn to_vhd(raw: &Path, out: &Path) -> Result<(), FormatError> {
    let len = std::fs::metadata(raw).map_err(io_at(raw))?.len();
    let rounded = round_up_mib(len);
    if rounded == len {
        return qemu_img_convert(raw, out, Format::Vhd);
    }
    let tmp = scratch(out, "raw");
    cmd::run(Command::new("cp").arg("--sparse=always").arg(raw).arg(&tmp.0))?;
    std::fs::OpenOptions::new().write(true).open(&tmp.0).and_then(|f| f.set_len(rounded)).map_err(io_at(&tmp.0))?;
    qemu_img_convert(&tmp.0, out, Format::Vhd)
}

/// Google Compute Engine's import format: the raw disk named `disk.raw` in
/// a gzip'd tar (GNU format, sparse), as its documentation builds it.
fn to_gce(raw: &Path, out: &Path) -> Result<(), FormatError> {
    let dir = scratch(out, "gce");
    std::fs::create_dir_all(&dir.0).map_err(io_at(&dir.0))?;
    let disk = dir.0.join("disk.raw");
    if std::fs::hard_link(raw, &disk).is_err() {
        cmd::run(Command::new("cp").arg("--sparse=always").arg(raw).arg(&disk))?;
    }
    let _ = std::fs::remove_file(out);
    cmd::run(
        Command::new("tar")
            .args(["--format=oldgnu", "-S", "-c", "-z", "-f"])
            .arg(out)
            .arg("-C")
            .arg(&dir.0)
            .arg("disk.raw"),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_name_their_files() {
        assert_eq!("VMDK".parse::<Format>(), Ok(Format::Vmdk));
        assert_eq!("vpc".parse::<Format>(), Ok(Format::Vhd));
        assert!("vdi".parse::<Format>().is_err());
        for f in Format::ALL {
            assert_eq!(f.to_string().parse::<Format>(), Ok(f));
        }
        assert_eq!(Format::Gce.file_name(), "berth-gce.tar.gz");
    }

    #[test]
    fn vhd_and_vmdk_take_the_options_clouds_need() {
        assert_eq!(qemu_img_args(Format::Vmdk), ["-O", "vmdk", "-o", "subformat=streamOptimized"]);
        assert_eq!(qemu_img_args(Format::Vhd), ["-O", "vpc", "-o", "subformat=fixed,force_size=on"]);
        assert_eq!(round_up_mib(MIB), MIB);
        assert_eq!(round_up_mib(MIB + 1), 2 * MIB);
        assert_eq!(round_up_mib(1122 * MIB - 512), 1122 * MIB);
    }

    /// A small disk (not a whole MiB) in every format: qemu-img reads each
    /// back with the raw's contents, the VHD's virtual size rounded up.
    #[test]
    fn a_small_disk_converts_to_every_format() {
        let dir = std::env::temp_dir().join(format!("berth-formats-{}", std::process::id()));
        let out = dir.join("out");
        std::fs::create_dir_all(&dir).unwrap();
        let raw = dir.join("berth.raw");
        let mut data = vec![0u8; (3 * MIB + 4096) as usize];
        data[..8].copy_from_slice(b"EFI PART");
        std::fs::write(&raw, &data).unwrap();
        let files = convert(&raw, &out, &Format::ALL).unwrap();
        assert_eq!(files.len(), 6);
        let info = |p: &Path, f: &str| {
            let o = cmd::stdout(Command::new("qemu-img").args(["info", "--output=json", "-f", f]).arg(p)).unwrap();
            let v: serde_json::Value = serde_json::from_str(&o).unwrap();
            v["virtual-size"].as_u64().unwrap()
        };
        assert_eq!(info(&out.join("berth.vmdk"), "vmdk"), data.len() as u64);
        assert_eq!(info(&out.join("berth.vhd"), "vpc"), 4 * MIB);
        assert_eq!(info(&out.join("berth.qcow2"), "qcow2"), data.len() as u64);
        assert_eq!(info(&out.join("berth.vhdx"), "vhdx"), data.len() as u64);
        assert_eq!(std::fs::read(out.join("berth.raw")).unwrap(), data);
        let listing = cmd::stdout(Command::new("tar").arg("-tzf").arg(out.join("berth-gce.tar.gz"))).unwrap();
        assert_eq!(listing.trim(), "disk.raw");
        let leftovers: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "scratch files left: {leftovers:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
