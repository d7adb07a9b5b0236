//! The dm-verity hash tree, appended to the EROFS image in the same
//! partition, and the values the kernel command line needs.
//!
//! The tree is built here, not by `veritysetup format`: its hash is
//! BLAKE2b-256 ([`VERITY_HASH`], why: docs/verity.md), which Debian 12's
//! veritysetup 2.6.1 cannot compute ("Hash algorithm blake2b-256 not
//! supported"). The layout is veritysetup's and the kernel's, so nothing
//! else changes: format version 1 (the salt hashed before each block), 4 KiB
//! data and hash blocks, a 512-byte superblock in the block after the data
//! (cryptsetup's `struct verity_sb`, docs/on-disk-format-verity), then the
//! levels of the tree, the top one first (`verity_ctr` in
//! drivers/md/dm-verity-target.c; Documentation/admin-guide/device-mapper/verity.rst).
//! With SHA-256 the same builder writes what veritysetup writes, byte for
//! byte (the tests below); the kernel checks the BLAKE2b tree on every boot
//! (qemu-tests/tests/verity.rs changes a byte and sees the boot refused).

use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use berth_layout::cmdline::{Verity, VERITY_BLOCK, VERITY_HASH};
use berth_layout::Guid;
use blake2::digest::consts::U32;
use blake2::Blake2b;
use sha2::{Digest, Sha256};

use crate::error::{io_at, io_doing, IoError};
use crate::packages::hex;

/// The hash the tree is built with: the one [`VERITY_HASH`] names to the kernel.
type TreeHash = Blake2b<U32>;

/// The salt of a version: fixed per version, so builds are reproducible,
/// and different across versions. 32 bytes.
fn salt_bytes(version: &str) -> Vec<u8> {
    Sha256::digest(format!("berth-verity-salt:{version}").as_bytes()).to_vec()
}

/// Pads `image` to whole 4 KiB blocks and appends a verity superblock and
/// the BLAKE2b-256 hash tree of those blocks. Returns the parameters the
/// kernel command line needs and the new file size in bytes.
///
/// Errors: reading or writing `image`; an empty `image` (InvalidInput).
pub fn append_hash_tree(image: &Path, version: &str) -> Result<(Verity, u64), IoError> {
    crate::progress::spin("verity: hash tree", || {
        append::<TreeHash>(image, VERITY_HASH, &salt_bytes(version), &Guid::derive(&format!("{version}/verity")))
    })
}

/// The tree of `image` with the hash `D` (named `algorithm` in the superblock).
fn append<D: Digest>(image: &Path, algorithm: &str, salt: &[u8], uuid: &Guid) -> Result<(Verity, u64), IoError> {
    let len = std::fs::metadata(image).map_err(io_at(image))?.len();
    if len == 0 {
        let empty = std::io::Error::new(std::io::ErrorKind::InvalidInput, "the image is empty: nothing to protect");
        return Err(io_doing("build the verity hash tree of", image)(empty));
    }
    let data_blocks = len.div_ceil(VERITY_BLOCK);
    let data_size = data_blocks * VERITY_BLOCK;
    let file = std::fs::OpenOptions::new().read(true).write(true).open(image).map_err(io_at(image))?;
    file.set_len(data_size).map_err(io_at(image))?;

    let levels = Levels::new(data_blocks, <D as Digest>::output_size());
    // The hash area starts one block past the data: the superblock's.
    let hash_start_block = data_blocks + 1;
    let total = (hash_start_block + levels.blocks()) * VERITY_BLOCK;
    file.set_len(total).map_err(io_at(image))?;
    let sb = superblock(algorithm, uuid, data_blocks, salt);
    file.write_all_at(&sb, data_size).map_err(io_doing("write the verity superblock into", image))?;

    // Level 0 hashes the data blocks; each level above hashes the blocks of
    // the one below; the top level is one block, whose digest is the root.
    let mut digests = Vec::with_capacity(data_blocks as usize * <D as Digest>::output_size());
    let mut data = BufReader::with_capacity(1 << 20, &file).take(data_size);
    let mut block = vec![0u8; VERITY_BLOCK as usize];
    for _ in 0..data_blocks {
        data.read_exact(&mut block).map_err(io_doing("read the root image", image))?;
        digests.extend_from_slice(&hash_block::<D>(salt, &block));
    }
    for level in 0..levels.count() {
        let packed = levels.pack(&digests);
        let at = (hash_start_block + levels.first_block(level)) * VERITY_BLOCK;
        file.write_all_at(&packed, at).map_err(io_doing("write the verity hash tree into", image))?;
        digests = packed.chunks(VERITY_BLOCK as usize).flat_map(|b| hash_block::<D>(salt, b)).collect();
    }
    file.sync_all().map_err(io_doing("sync", image))?;
    let verity = Verity { data_blocks, hash_start_block, root_hash: hex(&digests), salt: hex(salt) };
    Ok((verity, total))
}

/// `D(salt || block)`: format version 1.
fn hash_block<D: Digest>(salt: &[u8], block: &[u8]) -> Vec<u8> {
    D::new().chain_update(salt).chain_update(block).finalize().to_vec()
}

/// How many hash blocks each level of a tree has, as the kernel counts them.
struct Levels {
    /// Hash blocks of level 0 (the lowest) upwards.
    blocks: Vec<u64>,
    /// Bytes of one digest.
    digest_size: usize,
    /// log2 of the digests one hash block holds.
    per_block_bits: u32,
}

impl Levels {
    /// The levels over `data_blocks` blocks with digests of `digest_size`
    /// bytes: each digest takes a power-of-two slot, and levels are added
    /// until one block covers them all (`verity_ctr`).
    fn new(data_blocks: u64, digest_size: usize) -> Levels {
        let per_block_bits = (VERITY_BLOCK / digest_size as u64).ilog2();
        let mut blocks = Vec::new();
        let mut covered_bits = 0;
        while covered_bits < 64 && (data_blocks - 1) >> covered_bits != 0 {
            covered_bits += per_block_bits;
            let span = 1u64.checked_shl(covered_bits).unwrap_or(u64::MAX);
            blocks.push(data_blocks.div_ceil(span));
        }
        Levels { blocks, digest_size, per_block_bits }
    }

    fn count(&self) -> usize {
        self.blocks.len()
    }

    fn blocks(&self) -> u64 {
        self.blocks.iter().sum()
    }

    /// The first block of `level`, counted from the hash area's start: the
    /// levels are stored top first.
    fn first_block(&self, level: usize) -> u64 {
        self.blocks[level + 1..].iter().sum()
    }

    /// `digests` laid out in hash blocks: one slot of 2^k bytes per digest,
    /// the rest of the last block zero.
    fn pack(&self, digests: &[u8]) -> Vec<u8> {
        let slot = VERITY_BLOCK as usize >> self.per_block_bits;
        let count = digests.len() / self.digest_size;
        let per_block = 1usize << self.per_block_bits;
        let mut out = vec![0u8; count.div_ceil(per_block) * VERITY_BLOCK as usize];
        for (i, d) in digests.chunks(self.digest_size).enumerate() {
            out[i * slot..i * slot + self.digest_size].copy_from_slice(d);
        }
        out
    }
}

/// cryptsetup's verity superblock (`struct verity_sb`, little-endian,
/// 512 bytes): what `veritysetup open/verify` reads when given no
/// parameters. The kernel gets every value on its command line instead.
fn superblock(algorithm: &str, uuid: &Guid, data_blocks: u64, salt: &[u8]) -> [u8; 512] {
    let mut sb = [0u8; 512];
    sb[0..8].copy_from_slice(b"verity\0\0");
    sb[8..12].copy_from_slice(&1u32.to_le_bytes()); // superblock version
    sb[12..16].copy_from_slice(&1u32.to_le_bytes()); // hash type: normal (salt first)
    sb[16..32].copy_from_slice(uuid.as_bytes());
    let name = algorithm.as_bytes();
    sb[32..32 + name.len().min(31)].copy_from_slice(&name[..name.len().min(31)]);
    sb[64..68].copy_from_slice(&(VERITY_BLOCK as u32).to_le_bytes());
    sb[68..72].copy_from_slice(&(VERITY_BLOCK as u32).to_le_bytes());
    sb[72..80].copy_from_slice(&data_blocks.to_le_bytes());
    let salt = &salt[..salt.len().min(256)];
    sb[80..82].copy_from_slice(&(salt.len() as u16).to_le_bytes());
    sb[88..88 + salt.len()].copy_from_slice(salt);
    sb
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use berth_qemu::WorkDir;

    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8 ^ (i / 4096) as u8).collect()
    }

    fn veritysetup() -> Command {
        let mut c = Command::new("veritysetup");
        c.arg(format!("--data-block-size={VERITY_BLOCK}")).arg(format!("--hash-block-size={VERITY_BLOCK}"));
        c
    }

    fn run(c: &mut Command) -> (bool, String) {
        let out = c.output().expect("veritysetup (Debian package cryptsetup-bin) is needed");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// veritysetup's own verifier, given what the kernel is given (no
    /// superblock: explicit offset, salt and hash).
    fn verify_sha256(image: &Path, v: &Verity) -> bool {
        run(veritysetup()
            .arg("verify")
            .arg("--no-superblock")
            .arg(format!("--data-blocks={}", v.data_blocks))
            .arg(format!("--hash-offset={}", v.hash_start_block * VERITY_BLOCK))
            .arg(format!("--salt={}", v.salt))
            .arg("--hash=sha256")
            .arg(image)
            .arg(image)
            .arg(&v.root_hash))
        .0
    }

    /// Sizes across the level boundaries: one block (no level), one full
    /// hash block (one level), one past it, and three levels.
    #[test]
    fn with_sha256_the_tree_is_veritysetups_byte_for_byte() {
        let dir = WorkDir::create("verity-oracle").unwrap();
        let salt = salt_bytes("test");
        let uuid = Guid::derive("test/verity");
        for len in [100, 128 * 4096, 128 * 4096 + 1, 129 * 128 * 4096 + 7] {
            let ours = dir.join(&format!("ours-{len}.img"));
            let theirs = dir.join(&format!("theirs-{len}.img"));
            let data = pattern(len);
            std::fs::write(&ours, &data).unwrap();
            let (v, total) = append::<Sha256>(&ours, "sha256", &salt, &uuid).unwrap();

            let mut padded = data.clone();
            padded.resize(len.div_ceil(4096) * 4096, 0);
            std::fs::write(&theirs, &padded).unwrap();
            let (ok, out) = run(veritysetup()
                .arg("format")
                .arg("--hash=sha256")
                .arg(format!("--salt={}", hex(&salt)))
                .arg(format!("--uuid={uuid}"))
                .arg(format!("--data-blocks={}", v.data_blocks))
                .arg(format!("--hash-offset={}", v.data_blocks * VERITY_BLOCK))
                .arg(&theirs)
                .arg(&theirs));
            assert!(ok, "veritysetup format: {out}");
            let root = out.lines().find_map(|l| l.strip_prefix("Root hash:")).map(str::trim);
            assert_eq!(root, Some(v.root_hash.as_str()), "root hash of {len} bytes");
            let (a, b) = (std::fs::read(&ours).unwrap(), std::fs::read(&theirs).unwrap());
            assert_eq!(a.len() as u64, total);
            assert_eq!(a.len(), b.len(), "file size of {len} bytes");
            let first_diff = a.iter().zip(&b).position(|(x, y)| x != y);
            assert_eq!(first_diff, None, "{len} bytes: the first byte that differs from veritysetup's");
            assert!(verify_sha256(&ours, &v), "{len} bytes: the kernel's parameters verify");
        }
    }

    #[test]
    fn an_empty_image_is_refused_not_hashed() {
        let dir = WorkDir::create("verity-empty").unwrap();
        let img = dir.join("root.img");
        std::fs::write(&img, b"").unwrap();
        let err = append_hash_tree(&img, "test").unwrap_err();
        assert_eq!(err.source.kind(), std::io::ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains("root.img"), "{err}");
        assert_eq!(std::fs::metadata(&img).unwrap().len(), 0, "nothing written");
    }

    #[test]
    fn a_flipped_byte_no_longer_verifies() {
        let dir = WorkDir::create("verity-flip").unwrap();
        let img = dir.join("root.img");
        std::fs::write(&img, pattern(3 * 4096 + 100)).unwrap();
        let (v, _) = append::<Sha256>(&img, "sha256", &salt_bytes("test"), &Guid::derive("x")).unwrap();
        assert!(verify_sha256(&img, &v));
        let mut bytes = std::fs::read(&img).unwrap();
        bytes[5000] ^= 1;
        std::fs::write(&img, &bytes).unwrap();
        assert!(!verify_sha256(&img, &v));
    }

    /// The root's tree: BLAKE2b-256, named so in the superblock, reproducible.
    /// The expected root was computed apart from this code, with Python's
    /// hashlib (`blake2b(salt + block, digest_size=32)` over the data block,
    /// then over the one level-0 block of that digest and zeros), as the
    /// kernel's blake2b-256 computes it.
    #[test]
    fn the_roots_tree_is_blake2b_256() {
        let dir = WorkDir::create("verity-blake2b").unwrap();
        let img = dir.join("root.img");
        std::fs::write(&img, vec![0x5a; 4096 * 2]).unwrap();
        let (v, total) = append_hash_tree(&img, "test").unwrap();
        assert_eq!((v.data_blocks, v.hash_start_block, total), (2, 3, 4 * 4096));
        assert_eq!(v.salt, hex(&salt_bytes("test")));
        assert_eq!(v.root_hash, EXPECTED_BLAKE2B_ROOT);
        let bytes = std::fs::read(&img).unwrap();
        assert_eq!(&bytes[2 * 4096 + 32..2 * 4096 + 32 + VERITY_HASH.len()], VERITY_HASH.as_bytes());
        let again = dir.join("again.img");
        std::fs::write(&again, vec![0x5a; 4096 * 2]).unwrap();
        assert_eq!(append_hash_tree(&again, "test").unwrap().0, v, "reproducible");
    }

    const EXPECTED_BLAKE2B_ROOT: &str = "6f492297752b9f910502f8824f8c885e5746ba985e47e37c04d83b975bab112e";
}
