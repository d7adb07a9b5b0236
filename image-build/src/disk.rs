//! The GPT disk: the four partitions of the layout, written sparsely, and
//! its qcow2 form. The same partitions can be written in a table of
//! 512-byte sectors (`berth.raw`) or of 4096-byte ones (`berth-4kn.raw`).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;

use berth_layout::disk;
use berth_layout::gpt::{Gpt, GptError};
use berth_layout::Guid;

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

/// Writes a disk image (`berth.raw`, `berth-4kn.raw`): a GPT in sectors of
/// `sector_size` bytes (what the disk it will be written to reports as
/// its logical sector: the firmware and the kernel read the table in
/// those), then each given partition image at its offset, the same byte
/// offsets for every sector size. `contents` maps a partition label to the
/// image file that fills it; partitions without one stay zero (the data
/// partition: formatted at first boot). A partition's unique GUID is the
/// one `partuuids` gives its label (a filled root slot is named by its
/// contents: [`disk::root_partition_uuid`]), else
/// [`disk::partition_uuid`] of `version`.
pub fn assemble(
    out: &Path,
    version: &str,
    sector_size: u64,
    contents: &[(&'static str, &Path)],
    partuuids: &[(&'static str, Guid)],
) -> Result<(), DiskError> {
    let size = disk::image_size();
    let _ = std::fs::remove_file(out);
    let mut f = File::create(out).map_err(io_at(out))?;
    f.set_len(size).map_err(io_at(out))?;
    let mut gpt = Gpt::new(disk::disk_guid(version), sector_size, size / sector_size);
    for (spec, start, end) in disk::plan() {
        gpt.add(
            spec.label,
            spec.type_guid,
            partuuids
                .iter()
                .find(|(label, _)| *label == spec.label)
                .map(|(_, g)| *g)
                .unwrap_or_else(|| disk::partition_uuid(version, spec.label)),
            start / sector_size,
            end / sector_size - 1,
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

/// `berth.qcow2` from `berth.raw` (and the same for the 4Kn variant).
pub fn to_qcow2(raw: &Path, qcow2: &Path) -> Result<(), CmdError> {
    let _ = std::fs::remove_file(qcow2);
    let mut convert = Command::new("qemu-img");
    convert.args(["convert", "-f", "raw", "-O", "qcow2"]).arg(raw).arg(qcow2);
    crate::progress::spin(format!("disk: {} -> {}", raw.display(), qcow2.display()), || cmd::run(&mut convert))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_layout::disk::{SECTOR, SECTOR_4KN};

    /// Both tables, read back in their own sector size, put every
    /// partition at the plan's byte offsets with the same GUIDs, and the
    /// contents land there.
    #[test]
    fn both_sector_sizes_put_the_partitions_at_the_plan_offsets() {
        let dir = std::env::temp_dir().join(format!("berth-disk-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let root = dir.join("root.img");
        std::fs::write(&root, b"root contents").unwrap();
        for ss in [SECTOR, SECTOR_4KN] {
            let out = dir.join(format!("disk-{ss}.raw"));
            let named = Guid::derive("root-a contents");
            assemble(&out, "9.9.9", ss, &[(disk::ROOT_A_LABEL, root.as_path())], &[(disk::ROOT_A_LABEL, named)])
                .unwrap();
            let mut f = File::open(&out).unwrap();
            let gpt = Gpt::read(&mut f, ss, disk::image_size()).unwrap();
            assert_eq!(gpt.sector_size, ss);
            for (spec, start, end) in disk::plan() {
                let p = gpt.by_name(spec.label).unwrap();
                assert_eq!(
                    (p.first_lba * ss, (p.last_lba + 1) * ss),
                    (start, end),
                    "{} in {ss}-byte sectors",
                    spec.label
                );
                let uuid =
                    if spec.label == disk::ROOT_A_LABEL { named } else { disk::partition_uuid("9.9.9", spec.label) };
                assert_eq!((p.type_guid, p.unique_guid), (spec.type_guid, uuid));
            }
            let (_, start, _) = disk::plan().into_iter().find(|(s, _, _)| s.label == disk::ROOT_A_LABEL).unwrap();
            let mut head = [0u8; 13];
            f.seek(SeekFrom::Start(start)).unwrap();
            f.read_exact(&mut head).unwrap();
            assert_eq!(&head, b"root contents");
            // A table in the other sector size is not there.
            let other = if ss == SECTOR { SECTOR_4KN } else { SECTOR };
            assert!(Gpt::read(&mut f, other, disk::image_size()).is_err(), "{ss}-byte table also reads as {other}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
