//! Host-side looks at a VM's disk once QEMU has stopped: its GPT, a
//! partition's bytes, whether an ext4 file system is clean.

use std::fs::File;
use std::io::{Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use berth_layout::disk::SECTOR;
use berth_layout::gpt::{Gpt, Partition};

use crate::error::{io, Error, Result};
use crate::host::require_program;

/// Runs a host tool; its combined output on success, an error naming the
/// command, its status and output otherwise.
pub(crate) fn run_tool(cmd: &mut Command) -> Result<String> {
    let shown = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
    );
    let out = cmd.output().map_err(io(format!("running `{shown}`")))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        Ok(text)
    } else {
        Err(Error::Command { command: shown, status: out.status.to_string(), output: text })
    }
}

fn qemu_img() -> Result<PathBuf> {
    require_program("qemu-img", "qemu-utils")
}

/// The format of a disk image file, as QEMU names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    Raw,
    Qcow2,
    /// VMware's VMDK (a stream-optimised one, as VMware imports).
    Vmdk,
    /// Microsoft's VHD (QEMU's `vpc`): Azure and Hyper-V.
    Vpc,
}

impl ImageFormat {
    /// By the file's magic: qcow2 (`QFI\xfb`), VMDK (`KDMV`, a sparse
    /// extent), VHD (the `conectix` footer in the last 512 bytes of a fixed
    /// one, or its copy at the start of a dynamic one); raw otherwise.
    pub fn detect(path: &Path) -> Result<ImageFormat> {
        let mut head = [0u8; 8];
        let mut f = File::open(path).map_err(io(format!("opening {}", path.display())))?;
        let n = f.read(&mut head).map_err(io(format!("reading {}", path.display())))?;
        let head = &head[..n];
        if head.starts_with(b"QFI\xfb") {
            return Ok(ImageFormat::Qcow2);
        }
        if head.starts_with(b"KDMV") {
            return Ok(ImageFormat::Vmdk);
        }
        if head.starts_with(b"conectix") {
            return Ok(ImageFormat::Vpc);
        }
        let len = f.metadata().map_err(io(format!("reading {}", path.display())))?.len();
        let mut footer = [0u8; 8];
        if len >= 512
            && f.seek(SeekFrom::Start(len - 512)).is_ok()
            && f.read_exact(&mut footer).is_ok()
            && &footer == b"conectix"
        {
            return Ok(ImageFormat::Vpc);
        }
        Ok(ImageFormat::Raw)
    }

    /// QEMU's name of the format (`-f`, `format=`).
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
            ImageFormat::Vmdk => "vmdk",
            ImageFormat::Vpc => "vpc",
        }
    }
}

/// A disk image file (raw, or qcow2 with its backing chain).
#[derive(Clone, Debug)]
pub struct Image {
    pub path: PathBuf,
    pub format: ImageFormat,
    /// The disk's size as the guest sees it, in bytes.
    pub virtual_size: u64,
}

impl Image {
    pub fn open(path: &Path) -> Result<Image> {
        let format = ImageFormat::detect(path)?;
        let virtual_size = match format {
            ImageFormat::Raw => path.metadata().map_err(io(format!("reading {}", path.display())))?.len(),
            other => {
                let out = run_tool(
                    Command::new(qemu_img()?).args(["info", "-U", "--output=json", "-f", other.as_str()]).arg(path),
                )?;
                let v: serde_json::Value =
                    serde_json::from_str(&out).map_err(|e| Error::Parse(format!("qemu-img info: {e}: {out}")))?;
                v["virtual-size"]
                    .as_u64()
                    .ok_or_else(|| Error::Parse(format!("qemu-img info gave no virtual-size: {out}")))?
            }
        };
        Ok(Image { path: path.to_path_buf(), format, virtual_size })
    }

    /// A raw copy of the whole disk at `dst` (sparse).
    pub fn to_raw(&self, dst: &Path) -> Result<Image> {
        run_tool(
            Command::new(qemu_img()?)
                .args(["convert", "-U", "-f", self.format.as_str(), "-O", "raw"])
                .arg(&self.path)
                .arg(dst),
        )?;
        Image::open(dst)
    }

    /// Copies `len` bytes from `offset` into the raw file `dst`, straight
    /// out of the image (no full conversion).
    pub fn extract(&self, offset: u64, len: u64, dst: &Path) -> Result<()> {
        let file = self.path.display().to_string().replace(',', ",,");
        let inner = match self.format {
            ImageFormat::Raw => format!("file.driver=file,file.filename={file}"),
            other => {
                format!("file.driver={},file.file.driver=file,file.file.filename={file}", other.as_str())
            }
        };
        run_tool(
            Command::new(qemu_img()?)
                .args(["convert", "-U", "-O", "raw", "--image-opts"])
                .arg(format!("driver=raw,offset={offset},size={len},{inner}"))
                .arg(dst),
        )?;
        Ok(())
    }

    /// `len` bytes from `offset`.
    pub fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        match self.format {
            ImageFormat::Raw => {
                let mut f = File::open(&self.path).map_err(io(format!("opening {}", self.path.display())))?;
                f.seek(SeekFrom::Start(offset)).map_err(io("seeking in the image"))?;
                let mut buf = vec![0u8; len as usize];
                f.read_exact(&mut buf).map_err(io(format!("reading {}", self.path.display())))?;
                Ok(buf)
            }
            _ => {
                static N: AtomicUsize = AtomicUsize::new(0);
                let tmp = std::env::temp_dir().join(format!(
                    "berth-read-{}-{}.raw",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                let r = self
                    .extract(offset, len, &tmp)
                    .and_then(|()| std::fs::read(&tmp).map_err(io("reading the extract")));
                let _ = std::fs::remove_file(&tmp);
                r
            }
        }
    }

    /// The partition table (the primary one; for a raw image the backup is
    /// used when the primary is damaged).
    pub fn gpt(&self) -> Result<Gpt> {
        let gpt = match self.format {
            ImageFormat::Raw => {
                let mut f = File::open(&self.path).map_err(io(format!("opening {}", self.path.display())))?;
                Gpt::read(&mut f, SECTOR, self.virtual_size)
            }
            _ => {
                // The primary table: MBR, header and 128 entries of 128 bytes.
                let head = self.read(0, 34 * SECTOR)?;
                Gpt::read(&mut Cursor::new(head), SECTOR, self.virtual_size)
            }
        };
        gpt.map_err(|e| Error::Other(format!("{}: {e}", self.path.display())))
    }

    /// The partition labelled `label`.
    pub fn partition(&self, label: &str) -> Result<Partition> {
        let gpt = self.gpt()?;
        gpt.by_name(label).cloned().ok_or_else(|| {
            Error::Other(format!(
                "{}: no partition labelled {label:?} (have: {})",
                self.path.display(),
                gpt.partitions.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// The partition labelled `label`, copied to the raw file `dst`.
    pub fn extract_partition(&self, label: &str, dst: &Path) -> Result<Partition> {
        let p = self.partition(label)?;
        self.extract(p.first_lba * SECTOR, p.sectors() * SECTOR, dst)?;
        Ok(p)
    }
}

/// Makes a FAT file system image of `size` bytes at `out` holding `files`
/// (host path, name in the root directory), the way a user carries files
/// to a machine on a USB stick. Attach it with [`crate::VmConfig::stick`].
pub fn fat_image(out: &Path, size: u64, files: &[(&Path, &str)]) -> Result<()> {
    let _ = std::fs::remove_file(out);
    File::create(out).and_then(|f| f.set_len(size)).map_err(io(format!("creating {}", out.display())))?;
    run_tool(Command::new(require_program("mkfs.vfat", "dosfstools")?).args(["-n", "STICK"]).arg(out))?;
    let mcopy = require_program("mcopy", "mtools")?;
    for (src, name) in files {
        run_tool(
            Command::new(&mcopy).env("MTOOLS_SKIP_CHECK", "1").arg("-i").arg(out).arg(src).arg(format!("::{name}")),
        )?;
    }
    Ok(())
}

/// XORs the byte at `offset` of a raw file with `mask`; returns the old and
/// the new value.
pub fn flip_byte(path: &Path, offset: u64, mask: u8) -> Result<(u8, u8)> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io(format!("opening {}", path.display())))?;
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).map_err(io("seeking"))?;
    f.read_exact(&mut b).map_err(io(format!("reading byte {offset} of {}", path.display())))?;
    let old = b[0];
    b[0] ^= mask;
    f.seek(SeekFrom::Start(offset)).map_err(io("seeking"))?;
    f.write_all(&b).and_then(|()| f.sync_all()).map_err(io(format!("writing byte {offset} of {}", path.display())))?;
    Ok((old, b[0]))
}

/// What `e2fsck -fn` and `dumpe2fs -h` say about a file system image.
#[derive(Clone, Debug)]
pub struct Fsck {
    /// e2fsck's exit code: 0 means no problems found.
    pub exit_code: i32,
    /// The superblock's "Filesystem state:" (`clean`, `not clean`, ...).
    pub state: Option<String>,
    /// The file system's size from the superblock (block count × size).
    pub size_bytes: Option<u64>,
    /// e2fsck's and dumpe2fs's output.
    pub output: String,
}

impl Fsck {
    /// Nothing to fix, and the file system was unmounted cleanly.
    pub fn clean(&self) -> bool {
        self.exit_code == 0 && self.state.as_deref() == Some("clean")
    }
}

/// Checks the ext4 file system in the file `path` without changing it.
/// Needs e2fsprogs on the host.
pub fn fsck_ext4(path: &Path) -> Result<Fsck> {
    let e2fsck = require_program("e2fsck", "e2fsprogs")?;
    let dumpe2fs = require_program("dumpe2fs", "e2fsprogs")?;
    let out = Command::new(e2fsck).arg("-fn").arg(path).output().map_err(io("running e2fsck"))?;
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    // dumpe2fs prints the header even when it then fails (e.g. on a bad
    // superblock checksum): take what it printed either way.
    let dump = Command::new(dumpe2fs).arg("-h").arg(path).output().map_err(io("running dumpe2fs"))?;
    let mut header = String::from_utf8_lossy(&dump.stdout).into_owned();
    header.push_str(&String::from_utf8_lossy(&dump.stderr));
    let state = header_field(&header, "Filesystem state:");
    let num = |k: &str| header_field(&header, k).and_then(|v| v.parse::<u64>().ok());
    let size_bytes = num("Block count:").zip(num("Block size:")).map(|(c, s)| c * s);
    output.push_str("\n--- dumpe2fs -h ---\n");
    output.push_str(&header);
    Ok(Fsck { exit_code: out.status.code().unwrap_or(-1), state, size_bytes, output })
}

fn header_field(dumpe2fs: &str, key: &str) -> Option<String> {
    dumpe2fs.lines().find_map(|l| l.strip_prefix(key).map(|s| s.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_read_from_dumpe2fs() {
        let h =
            "Filesystem magic number:  0xEF53\nFilesystem state:         not clean\nBlock count:              1024\n";
        assert_eq!(header_field(h, "Filesystem state:").as_deref(), Some("not clean"));
        assert_eq!(header_field(h, "Block count:").as_deref(), Some("1024"));
        assert_eq!(header_field("nothing", "Filesystem state:"), None);
    }

    #[test]
    fn flip_byte_changes_one_byte() {
        let dir = crate::workdir::WorkDir::create("unit-flip").unwrap();
        let p = dir.join("f");
        std::fs::write(&p, [1u8, 2, 3]).unwrap();
        assert_eq!(flip_byte(&p, 1, 0xff).unwrap(), (2, 0xfd));
        assert_eq!(std::fs::read(&p).unwrap(), vec![1, 0xfd, 3]);
        assert_eq!(ImageFormat::detect(&p).unwrap(), ImageFormat::Raw);
        std::fs::write(&p, b"KDMV\x01\0\0\0").unwrap();
        assert_eq!(ImageFormat::detect(&p).unwrap(), ImageFormat::Vmdk);
        let mut fixed_vhd = vec![0u8; 4096];
        fixed_vhd[4096 - 512..4096 - 504].copy_from_slice(b"conectix");
        std::fs::write(&p, &fixed_vhd).unwrap();
        assert_eq!(ImageFormat::detect(&p).unwrap(), ImageFormat::Vpc);
        assert_eq!(ImageFormat::Vpc.as_str(), "vpc");
    }

    #[test]
    fn a_fresh_ext4_is_clean_and_its_size_is_read() {
        let dir = crate::workdir::WorkDir::create("unit-fsck").unwrap();
        let p = dir.join("fs.img");
        std::fs::File::create(&p).unwrap().set_len(16 * crate::settings::MIB).unwrap();
        let mkfs = require_program("mkfs.ext4", "e2fsprogs").unwrap();
        run_tool(Command::new(mkfs).args(["-q", "-F", "-b", "4096"]).arg(&p)).unwrap();
        let f = fsck_ext4(&p).unwrap();
        assert!(f.clean(), "{f:?}");
        assert_eq!(f.size_bytes, Some(16 * crate::settings::MIB));
        // A superblock marked as mounted and never unmounted is not clean.
        let mut img = std::fs::read(&p).unwrap();
        // s_state (le16) at offset 58 of the superblock, which starts at 1024.
        img[1024 + 58] &= !1;
        std::fs::write(&p, img).unwrap();
        let f = fsck_ext4(&p).unwrap();
        assert!(!f.clean(), "{f:?}");
        assert_eq!(f.state.as_deref(), Some("not clean"));
    }
}
