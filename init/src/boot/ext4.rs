//! Just enough of the ext4 superblock to tell a filesystem from blank space
//! and to know its size.

/// The superblock starts 1024 bytes into the partition.
pub const SUPERBLOCK_OFFSET: usize = 1024;
pub const MAGIC: u16 = 0xEF53;
const MAGIC_AT: usize = 0x38;
const BLOCKS_LO_AT: usize = 0x04;
const LOG_BLOCK_SIZE_AT: usize = 0x18;
const INCOMPAT_AT: usize = 0x60;
const BLOCKS_HI_AT: usize = 0x150;
const INCOMPAT_64BIT: u32 = 0x80;
/// How much of a partition is read to decide what it holds. The image
/// ships the data partition zeroed; 1 MiB of zeros is never a filesystem.
pub const HEAD: usize = 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Superblock {
    pub block_size: u64,
    pub blocks: u64,
}

impl Superblock {
    pub fn bytes(&self) -> u64 {
        self.blocks.saturating_mul(self.block_size)
    }
}

fn u16_at(sb: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(sb.get(o..o + 2)?.try_into().ok()?))
}

fn u32_at(sb: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(sb.get(o..o + 4)?.try_into().ok()?))
}

/// The superblock in `head` (the partition's first bytes), if it has one.
pub fn parse(head: &[u8]) -> Option<Superblock> {
    let sb = head.get(SUPERBLOCK_OFFSET..)?;
    if u16_at(sb, MAGIC_AT)? != MAGIC {
        return None;
    }
    let log = u32_at(sb, LOG_BLOCK_SIZE_AT)?;
    let block_size = 1024u64.checked_shl(log).filter(|b| *b <= 1 << 16)?;
    let mut blocks = u64::from(u32_at(sb, BLOCKS_LO_AT)?);
    if u32_at(sb, INCOMPAT_AT)? & INCOMPAT_64BIT != 0 {
        blocks |= u64::from(u32_at(sb, BLOCKS_HI_AT)?) << 32;
    }
    Some(Superblock { block_size, blocks })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Content {
    /// All zeros: never used, safe to format.
    Blank,
    Ext4(Superblock),
    /// Anything else. It may be someone's data: never formatted.
    Unknown,
}

pub fn classify(head: &[u8]) -> Content {
    if let Some(sb) = parse(head) {
        return Content::Ext4(sb);
    }
    if !head.is_empty() && head.iter().all(|b| *b == 0) {
        return Content::Blank;
    }
    Content::Unknown
}

/// A minimal superblock, as the tests' fake mke2fs writes it.
#[cfg(test)]
pub fn superblock_bytes(blocks: u64, block_size: u64) -> Vec<u8> {
    let mut sb = vec![0u8; 1024];
    sb[MAGIC_AT..MAGIC_AT + 2].copy_from_slice(&MAGIC.to_le_bytes());
    sb[LOG_BLOCK_SIZE_AT..LOG_BLOCK_SIZE_AT + 4].copy_from_slice(&(block_size.trailing_zeros() - 10).to_le_bytes());
    sb[BLOCKS_LO_AT..BLOCKS_LO_AT + 4].copy_from_slice(&(blocks as u32).to_le_bytes());
    sb[INCOMPAT_AT..INCOMPAT_AT + 4].copy_from_slice(&INCOMPAT_64BIT.to_le_bytes());
    sb[BLOCKS_HI_AT..BLOCKS_HI_AT + 4].copy_from_slice(&((blocks >> 32) as u32).to_le_bytes());
    sb
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reaper::tests::run_reaped;

    #[test]
    fn classifies_zeros_ext4_and_anything_else() {
        assert_eq!(classify(&vec![0; HEAD]), Content::Blank);
        let mut head = vec![0; HEAD];
        head[1024..2048].copy_from_slice(&superblock_bytes(5 << 32 | 7, 4096));
        assert_eq!(classify(&head), Content::Ext4(Superblock { block_size: 4096, blocks: 5 << 32 | 7 }));
        let mut junk = vec![0; HEAD];
        junk[HEAD - 1] = 1;
        assert_eq!(classify(&junk), Content::Unknown);
        assert_eq!(classify(&[]), Content::Unknown);
    }

    #[test]
    fn reads_the_size_mke2fs_wrote() {
        if !std::path::Path::new("/usr/sbin/mke2fs").exists() {
            panic!("mke2fs (Debian package e2fsprogs) is needed for this test");
        }
        let dir = std::env::temp_dir().join(format!("berth-ext4-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let img = dir.join("fs.img");
        std::fs::File::create(&img).unwrap().set_len(48 << 20).unwrap();
        let mut cmd = std::process::Command::new("/usr/sbin/mke2fs");
        cmd.args(["-q", "-t", "ext4", "-L", "data", "-F"]).arg(&img).stdout(std::process::Stdio::null());
        assert!(run_reaped(cmd).unwrap().success());
        let head = std::fs::read(&img).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        match classify(&head[..HEAD]) {
            Content::Ext4(sb) => assert_eq!(sb.bytes(), 48 << 20),
            other => panic!("{other:?}"),
        }
    }
}
