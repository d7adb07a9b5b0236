//! The dm-verity hash tree, appended to the EROFS image in the same
//! partition, and the values the kernel command line needs.

use std::path::Path;
use std::process::Command;

use berth_layout::cmdline::{Verity, VERITY_BLOCK};
use berth_layout::Guid;
use sha2::{Digest, Sha256};

use crate::cmd::{self, CmdError};
use crate::error::{io_at, IoError};
use crate::packages::hex;

#[derive(Debug, thiserror::Error)]
pub enum VerityError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Cmd(#[from] CmdError),
    #[error("veritysetup printed no root hash:\n{0}")]
    NoRootHash(String),
}

/// The salt of a version: fixed per version, so builds are reproducible,
/// and different across versions.
pub fn salt(version: &str) -> String {
    hex(&Sha256::digest(format!("berth-verity-salt:{version}").as_bytes()))
}

/// Pads `image` to whole blocks and appends its hash tree (after a
/// veritysetup superblock). Returns the parameters and the new file size.
pub fn append_hash_tree(image: &Path, version: &str) -> Result<(Verity, u64), VerityError> {
    let len = std::fs::metadata(image).map_err(io_at(image))?.len();
    let data_blocks = len.div_ceil(VERITY_BLOCK);
    let data_size = data_blocks * VERITY_BLOCK;
    let f = std::fs::OpenOptions::new().write(true).open(image).map_err(io_at(image))?;
    f.set_len(data_size).map_err(io_at(image))?;
    drop(f);
    let salt = salt(version);
    let uuid = Guid::derive(&format!("{version}/verity"));
    let mut veritysetup = Command::new("veritysetup");
    let out = crate::progress::spin("verity: veritysetup format", || {
        cmd::stdout(
            veritysetup
                .arg("format")
                .arg(format!("--data-block-size={VERITY_BLOCK}"))
                .arg(format!("--hash-block-size={VERITY_BLOCK}"))
                .arg("--hash=sha256")
                .arg(format!("--salt={salt}"))
                .arg(format!("--uuid={uuid}"))
                .arg(format!("--data-blocks={data_blocks}"))
                .arg(format!("--hash-offset={data_size}"))
                .arg(image)
                .arg(image),
        )
    })?;
    let root_hash = out
        .lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .map(|h| h.trim().to_string())
        .ok_or_else(|| VerityError::NoRootHash(out.clone()))?;
    let total = std::fs::metadata(image).map_err(io_at(image))?.len();
    // The hash area starts one block past the data: veritysetup's superblock.
    Ok((Verity { data_blocks, hash_start_block: data_blocks + 1, root_hash, salt }, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks with veritysetup's own verifier that the parameters we put on
    /// the kernel command line describe the tree: exactly what the kernel
    /// will be given (no superblock, explicit offset, salt and hash).
    fn verify(image: &Path, v: &Verity) -> bool {
        Command::new("veritysetup")
            .arg("verify")
            .arg("--no-superblock")
            .arg(format!("--data-blocks={}", v.data_blocks))
            .arg(format!("--hash-offset={}", v.hash_start_block * VERITY_BLOCK))
            .arg(format!("--salt={}", v.salt))
            .arg("--hash=sha256")
            .arg(image)
            .arg(image)
            .arg(&v.root_hash)
            .status()
            .expect("veritysetup (Debian package cryptsetup-bin) is needed")
            .success()
    }

    #[test]
    fn kernel_parameters_verify_and_a_flipped_byte_is_caught() {
        let dir = std::env::temp_dir().join(format!("berth-verity-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let img = dir.join("root.img");
        let data: Vec<u8> = (0..(3 * 4096 + 100)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&img, &data).unwrap();
        let (v, total) = append_hash_tree(&img, "test").unwrap();
        assert_eq!(v.data_blocks, 4);
        assert!(total > 4 * 4096);
        assert!(verify(&img, &v));
        let again = dir.join("again.img");
        std::fs::write(&again, &data).unwrap();
        assert_eq!(append_hash_tree(&again, "test").unwrap().0, v, "reproducible");
        let mut bytes = std::fs::read(&img).unwrap();
        bytes[5000] ^= 1;
        std::fs::write(&img, &bytes).unwrap();
        assert!(!verify(&img, &v));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
