//! NoCloud seed volumes, as cloud-init's `cloud-localds` makes them: a
//! volume labelled `CIDATA` (vfat, through dosfstools + mtools) or
//! `cidata` (iso9660 with Joliet and Rock Ridge, through xorriso's mkisofs
//! emulation) holding `user-data`, `meta-data` and optionally
//! `network-config`. Attach one with [`crate::VmConfig::seed`].

use std::fs::File;
use std::path::Path;
use std::process::Command;

use crate::disk::run_tool;
use crate::error::{io, Error, Result};
use crate::host::require_program;

/// The file system of a seed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SeedFormat {
    /// FAT, label `CIDATA`.
    #[default]
    Vfat,
    /// ISO 9660 + Joliet + Rock Ridge, label `cidata` (cloud-localds' default).
    Iso9660,
}

impl std::str::FromStr for SeedFormat {
    type Err = String;

    /// `vfat` or `iso9660` (also `iso`).
    fn from_str(s: &str) -> std::result::Result<SeedFormat, String> {
        match s {
            "vfat" => Ok(SeedFormat::Vfat),
            "iso9660" | "iso" => Ok(SeedFormat::Iso9660),
            _ => Err(format!("unknown seed format {s:?} (vfat or iso9660)")),
        }
    }
}

/// What goes on a seed: the bytes of each file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeedFiles {
    pub user_data: Option<Vec<u8>>,
    pub meta_data: Option<Vec<u8>>,
    pub network_config: Option<Vec<u8>>,
}

impl SeedFiles {
    /// The files by their names on the seed.
    pub fn named(&self) -> Vec<(&'static str, &[u8])> {
        [("user-data", &self.user_data), ("meta-data", &self.meta_data), ("network-config", &self.network_config)]
            .into_iter()
            .filter_map(|(n, b)| b.as_deref().map(|b| (n, b)))
            .collect()
    }
}

/// Writes a seed image to `out` (replacing it).
pub fn nocloud_seed(out: &Path, format: SeedFormat, files: &SeedFiles) -> Result<()> {
    let staging = out.with_extension("seed-files");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(io(format!("creating {}", staging.display())))?;
    let result = write_seed(out, format, files, &staging);
    let _ = std::fs::remove_dir_all(&staging);
    result
}

fn write_seed(out: &Path, format: SeedFormat, files: &SeedFiles, staging: &Path) -> Result<()> {
    let named = files.named();
    for (name, bytes) in &named {
        let p = staging.join(name);
        std::fs::write(&p, bytes).map_err(io(format!("writing {}", p.display())))?;
    }
    let _ = std::fs::remove_file(out);
    match format {
        SeedFormat::Vfat => {
            // Room for the files plus the FAT's own structures; mkfs.vfat
            // picks FAT12 or FAT16 for these sizes.
            let content: u64 = named.iter().map(|(_, b)| b.len() as u64).sum();
            let size = (content + (1 << 20)).div_ceil(1 << 20) * (1 << 20) + (1 << 20);
            File::create(out).and_then(|f| f.set_len(size)).map_err(io(format!("creating {}", out.display())))?;
            run_tool(Command::new(require_program("mkfs.vfat", "dosfstools")?).args(["-n", "CIDATA"]).arg(out))?;
            let mcopy = require_program("mcopy", "mtools")?;
            for (name, _) in &named {
                run_tool(
                    Command::new(&mcopy)
                        .env("MTOOLS_SKIP_CHECK", "1")
                        .arg("-i")
                        .arg(out)
                        .arg(staging.join(name))
                        .arg(format!("::{name}")),
                )?;
            }
        }
        SeedFormat::Iso9660 => {
            let xorriso = require_program("xorriso", "xorriso")?;
            run_tool(
                Command::new(xorriso)
                    .args(["-as", "mkisofs", "-quiet", "-output"])
                    .arg(out)
                    .args(["-volid", "cidata", "-joliet", "-rock"])
                    .arg(staging),
            )?;
        }
    }
    if !out.is_file() {
        return Err(Error::Other(format!("no seed image at {} after building it", out.display())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse() {
        assert_eq!("vfat".parse::<SeedFormat>(), Ok(SeedFormat::Vfat));
        assert_eq!("iso9660".parse::<SeedFormat>(), Ok(SeedFormat::Iso9660));
        assert!("ext4".parse::<SeedFormat>().is_err());
    }

    #[test]
    fn only_given_files_are_named() {
        let f =
            SeedFiles { user_data: Some(b"u".to_vec()), network_config: Some(b"n".to_vec()), ..SeedFiles::default() };
        let names: Vec<&str> = f.named().iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["user-data", "network-config"]);
    }
}

#[cfg(test)]
mod round_trip {
    use super::*;
    use berth_provision::sources::nocloud::{is_seed_label, volume, FsType};
    use berth_provision::sources::system::RealSystem;

    fn files() -> SeedFiles {
        SeedFiles {
            user_data: Some(b"#cloud-config\nhostname: seeded\n".to_vec()),
            meta_data: Some(b"instance-id: seed-1\n".to_vec()),
            network_config: None,
        }
    }

    /// The seeds this module builds are the ones the guest's probe finds.
    #[test]
    fn the_probe_reads_the_labels_of_both_formats() {
        let dir = std::env::temp_dir().join(format!("berth-seed-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (format, fstype, label) in
            [(SeedFormat::Vfat, FsType::Vfat, "CIDATA"), (SeedFormat::Iso9660, FsType::Iso9660, "cidata")]
        {
            let out = dir.join(format!("{format:?}.img"));
            nocloud_seed(&out, format, &files()).unwrap();
            let v = volume(&RealSystem, &out).unwrap_or_else(|| panic!("{format:?}: no label found"));
            assert_eq!((v.fstype, v.label.as_str()), (fstype, label));
            assert!(is_seed_label(&v.label));
            assert!(!out.with_extension("seed-files").exists(), "the staging directory is removed");
        }
        // The files are on the vfat seed, byte for byte.
        let vfat = dir.join("Vfat.img");
        let out = Command::new("mtype").env("MTOOLS_SKIP_CHECK", "1").arg("-i").arg(&vfat).arg("::meta-data").output();
        assert_eq!(out.unwrap().stdout, b"instance-id: seed-1\n");
        // And on the ISO, under their names (Rock Ridge keeps the dash and the case).
        let out =
            Command::new("xorriso").args(["-indev"]).arg(dir.join("Iso9660.img")).args(["-ls", "/"]).output().unwrap();
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(listing.contains("'user-data'") && listing.contains("'meta-data'"), "{listing}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
