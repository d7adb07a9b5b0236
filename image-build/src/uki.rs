//! Unified Kernel Images: systemd's EFI stub (`linuxx64.efi.stub` from
//! Debian's systemd-boot-efi) with the OS release (`.osrel`), the slot's
//! kernel command line (`.cmdline`, which carries the verity root hash),
//! the kernel (`.linux`) and stage 0's initramfs (`.initrd`, which the
//! stub hands to the kernel through the LINUX_INITRD_MEDIA device path)
//! added as PE sections by `objcopy`, the method systemd documented before
//! `ukify` (which Debian 12 does not ship).
//!
//! The new sections go after the stub's last section, each at the next
//! 4 KiB boundary past the one before, so none overlaps the stub or
//! another: the addresses are computed from the stub's own section table
//! (read with goblin), not fixed numbers that a bigger stub would collide
//! with. Signed afterwards ([`crate::secureboot::sign`]), the image is the
//! one thing Secure Boot firmware checks for the kernel, its command line
//! and the OS release together.

use std::path::Path;

use goblin::pe::PE;

use crate::cmd::{self, CmdError};
use crate::error::{io_at, IoError};

/// Where systemd-boot-efi puts the stub (inside the unpacked packages).
pub const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

/// Alignment of the added sections' addresses: a page, as systemd's
/// documented layout and `ukify` use.
const ALIGN: u64 = 4096;

/// Why a UKI could not be made.
#[derive(Debug, thiserror::Error)]
pub enum UkiError {
    /// Reading or writing a file failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// `objcopy` failed.
    #[error(transparent)]
    Cmd(#[from] CmdError),
    /// The stub is no PE image goblin can read.
    #[error("{path}: not a PE image: {message}")]
    NotPe {
        /// The stub's path.
        path: String,
        /// goblin's complaint.
        message: String,
    },
    /// The stub already has a section the UKI adds.
    #[error("{path}: the stub already has a {section} section")]
    HasSection {
        /// The stub's path.
        path: String,
        /// The section name.
        section: &'static str,
    },
}

/// What a stub's section table says about where new sections may go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StubLayout {
    /// The PE image base: objcopy's section addresses (VMAs) include it.
    pub image_base: u64,
    /// The first relative address past every section of the stub.
    pub end: u64,
}

fn align_up(v: u64) -> u64 {
    v.div_ceil(ALIGN) * ALIGN
}

/// Reads the stub's image base and where its last section ends.
pub fn stub_layout(stub: &[u8], path: &Path) -> Result<StubLayout, UkiError> {
    let pe =
        PE::parse(stub).map_err(|e| UkiError::NotPe { path: path.display().to_string(), message: e.to_string() })?;
    for s in &pe.sections {
        let name = s.name().unwrap_or_default();
        for section in [".osrel", ".cmdline", ".linux", ".initrd"] {
            if name == section {
                return Err(UkiError::HasSection { path: path.display().to_string(), section });
            }
        }
    }
    let end = pe
        .sections
        .iter()
        .map(|s| u64::from(s.virtual_address) + u64::from(s.virtual_size.max(s.size_of_raw_data)))
        .max()
        .unwrap_or(0);
    Ok(StubLayout { image_base: pe.image_base as u64, end })
}

/// The VMA of each added section, in order: each starts at the first
/// page boundary past the end of the one before (the stub's last section
/// for the first).
pub fn placement(layout: StubLayout, sizes: &[u64]) -> Vec<u64> {
    let mut at = align_up(layout.end);
    sizes
        .iter()
        .map(|size| {
            let vma = at;
            at = align_up(at + size.max(&1));
            layout.image_base + vma
        })
        .collect()
}

/// What goes into a UKI besides the stub.
pub struct UkiParts<'a> {
    /// The os-release text (`.osrel`).
    pub os_release: &'a str,
    /// The kernel command line (`.cmdline`).
    pub cmdline: &'a str,
    /// The kernel image (`.linux`).
    pub linux: &'a Path,
    /// The initramfs archive (`.initrd`).
    pub initrd: &'a Path,
}

/// Assembles the UKI at `out` from `stub` and `parts` (unsigned; sign it
/// with [`crate::secureboot::sign`]). Reproducible: objcopy writes the time
/// into the PE header, so it runs with the clock stopped at `epoch`.
pub fn assemble(stub: &Path, parts: &UkiParts<'_>, out: &Path, epoch: u64) -> Result<(), UkiError> {
    let UkiParts { os_release, cmdline, linux, initrd } = *parts;
    let bytes = std::fs::read(stub).map_err(io_at(stub))?;
    let layout = stub_layout(&bytes, stub)?;
    let dir = out.parent().unwrap_or(Path::new("."));
    let osrel = dir.join(".uki-osrel");
    let cmdline_file = dir.join(".uki-cmdline");
    std::fs::write(&osrel, os_release).map_err(io_at(&osrel))?;
    // systemd-stub passes the section's bytes as the command line; a
    // trailing NUL ends it cleanly (as ukify writes it).
    std::fs::write(&cmdline_file, format!("{cmdline}\0")).map_err(io_at(&cmdline_file))?;
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).map_err(io_at(p));
    let sections: [(&str, &Path, u64); 4] = [
        (".osrel", &osrel, os_release.len() as u64),
        (".cmdline", &cmdline_file, cmdline.len() as u64 + 1),
        (".linux", linux, size(linux)?),
        (".initrd", initrd, size(initrd)?),
    ];
    let vmas = placement(layout, &sections.iter().map(|s| s.2).collect::<Vec<_>>());
    let mut c = crate::secureboot::at_epoch("objcopy", epoch);
    for ((name, file, _), vma) in sections.iter().zip(&vmas) {
        c.arg("--add-section").arg(format!("{name}={}", file.display()));
        c.arg("--change-section-vma").arg(format!("{name}={vma:#x}"));
    }
    let _ = std::fs::remove_file(out);
    cmd::run(c.arg(stub).arg(out))?;
    let _ = std::fs::remove_file(&osrel);
    let _ = std::fs::remove_file(&cmdline_file);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_go_past_the_stub_on_pages_without_overlap() {
        // Debian 12's stub: its last section (.sdmagic) ends at 0x19134.
        let layout = StubLayout { image_base: 0, end: 0x19134 };
        let vmas = placement(layout, &[100, 0x1001, 7_000_000]);
        assert_eq!(vmas, [0x1a000, 0x1b000, 0x1d000]);
        // An image base is added to every address.
        let based = placement(StubLayout { image_base: 0x1_0000_0000, end: 0x1000 }, &[1, 1]);
        assert_eq!(based, [0x1_0000_1000, 0x1_0000_2000]);
    }
}
