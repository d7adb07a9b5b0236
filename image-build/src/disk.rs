//! The GPT disk: the four partitions of the layout, written sparsely, and
//! its qcow2 form.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;

use berth_layout::disk::{self, SECTOR};
use berth_layout::gpt::{Gpt, GptError};

use crate::cmd::{self, CmdError};
use crate::error::{io_at, IoError};

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Gpt(#[from] GptError),
    #[error(transparent)]
    Cmd(#[from] CmdError),
    #[error("{what} is {size} bytes, more than its partition {label} ({room} bytes)")]
    TooBig { what: String, size: u64, label: &'static str, room: u64 },
}

/// Writes `berth.raw`: GPT, then each given partition image at its offset.
/// `contents` maps a partition label to the image file that fills it;
/// partitions without one stay zero (the data partition: formatted at first boot).
pub fn assemble(out: &Path, version: &str, contents: &[(&'static str, &Path)]) -> Result<(), DiskError> {
    let size = disk::image_size();
    let _ = std::fs::remove_file(out);
    let mut f = File::create(out).map_err(io_at(out))?;
    f.set_len(size).map_err(io_at(out))?;
    let mut gpt = Gpt::new(disk::disk_guid(version), SECTOR, size / SECTOR);
    for (spec, start, end) in disk::plan() {
        gpt.add(
            spec.label,
            spec.type_guid,
            disk::partition_uuid(version, spec.label),
            start / SECTOR,
            end / SECTOR - 1,
        )?;
    }
    gpt.write(&mut f)?;
    for (label, image) in contents {
        let Some((spec, start, end)) = disk::plan().into_iter().find(|(s, _, _)| s.label == *label) else {
            continue;
        };
        let len = std::fs::metadata(image).map_err(io_at(image))?.len();
        if len > end - start {
            return Err(DiskError::TooBig {
                what: image.display().to_string(),
                size: len,
                label: spec.label,
                room: end - start,
            });
        }
        copy_sparse(image, &mut f, start).map_err(io_at(image))?;
    }
    f.sync_all().map_err(io_at(out))?;
    Ok(())
}

/// Copies `src` into `dst` at `offset`, seeking over all-zero blocks so the
/// output stays sparse.
fn copy_sparse(src: &Path, dst: &mut File, offset: u64) -> std::io::Result<()> {
    let mut s = File::open(src)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = offset;
    loop {
        let n = read_full(&mut s, &mut buf)?;
        if n == 0 {
            break;
        }
        for chunk in buf[..n].chunks(4096) {
            if chunk.iter().any(|b| *b != 0) {
                dst.seek(SeekFrom::Start(at))?;
                dst.write_all(chunk)?;
            }
            at += chunk.len() as u64;
        }
    }
    Ok(())
}

fn read_full(r: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// `berth.qcow2` from `berth.raw`.
pub fn to_qcow2(raw: &Path, qcow2: &Path) -> Result<(), CmdError> {
    let _ = std::fs::remove_file(qcow2);
    cmd::run(Command::new("qemu-img").args(["convert", "-f", "raw", "-O", "qcow2"]).arg(raw).arg(qcow2))?;
    Ok(())
}
