//! Just enough of the ext4 superblock to tell a filesystem from blank space,
//! to know its size, and to know whether `e2fsck -p` would check it.
//! Offsets and flags are those of the kernel's `struct ext4_super_block`
//! (Documentation/filesystems/ext4/super.rst).

/// The superblock starts 1024 bytes into the partition.
pub const SUPERBLOCK_OFFSET: usize = 1024;
pub const MAGIC: u16 = 0xEF53;
const MAGIC_AT: usize = 0x38;
const BLOCKS_LO_AT: usize = 0x04;
const LOG_BLOCK_SIZE_AT: usize = 0x18;
const MNT_COUNT_AT: usize = 0x34;
const MAX_MNT_COUNT_AT: usize = 0x36;
const STATE_AT: usize = 0x3A;
const CHECKINTERVAL_AT: usize = 0x44;
const INCOMPAT_AT: usize = 0x60;
const BLOCKS_HI_AT: usize = 0x150;
const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_64BIT: u32 = 0x80;
/// `s_state`: unmounted cleanly (or, with a journal, consistent once the
/// journal is replayed).
const STATE_VALID: u16 = 0x1;
/// `s_state`: the kernel found an error while it was mounted.
const STATE_ERROR: u16 = 0x2;
/// How much of a partition is read to decide what it holds. The image
/// ships the data partition zeroed; 1 MiB of zeros is never a filesystem.
pub const HEAD: usize = 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Superblock {
    pub block_size: u64,
    pub blocks: u64,
    /// `s_state`: `STATE_VALID`, `STATE_ERROR` bits.
    state: u16,
    /// `s_feature_incompat`.
    incompat: u32,
    /// Mounts since the last check, and the limit (0 or less: none).
    mnt_count: u16,
    max_mnt_count: i16,
    /// Seconds allowed between checks (0: no limit).
    checkinterval: u32,
}

impl Superblock {
    pub fn bytes(&self) -> u64 {
        self.blocks.saturating_mul(self.block_size)
    }

    /// Why `e2fsck -p` would check this file system, or `None` when it
    /// would only print "clean" and exit 0: the tests of e2fsprogs'
    /// `check_if_skip` (e2fsck/unix.c) that the superblock answers. A
    /// journal that needs replaying (the file system was mounted when the
    /// power went) is a reason, as e2fsck replays it first. A check
    /// interval is one too, whatever the time: the clock may not be set
    /// this early, and mke2fs sets none.
    pub fn check_reason(&self) -> Option<String> {
        if self.state & STATE_ERROR != 0 {
            Some("the kernel recorded errors in it".into())
        } else if self.incompat & INCOMPAT_RECOVER != 0 {
            Some("its journal needs replaying (it was not unmounted)".into())
        } else if self.state & STATE_VALID == 0 {
            Some("it was not cleanly unmounted".into())
        } else if self.max_mnt_count > 0 && i32::from(self.mnt_count) >= i32::from(self.max_mnt_count) {
            Some(format!("it has been mounted {} times without a check", self.mnt_count))
        } else if self.checkinterval != 0 {
            Some("it has a check interval".into())
        } else {
            None
        }
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
    let incompat = u32_at(sb, INCOMPAT_AT)?;
    if incompat & INCOMPAT_64BIT != 0 {
        blocks |= u64::from(u32_at(sb, BLOCKS_HI_AT)?) << 32;
    }
    Some(Superblock {
        block_size,
        blocks,
        state: u16_at(sb, STATE_AT)?,
        incompat,
        mnt_count: u16_at(sb, MNT_COUNT_AT)?,
        max_mnt_count: u16_at(sb, MAX_MNT_COUNT_AT)? as i16,
        checkinterval: u32_at(sb, CHECKINTERVAL_AT)?,
    })
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

/// A minimal superblock, as the tests' fake mke2fs writes it: unmounted
/// cleanly, no mount limit, no check interval.
#[cfg(test)]
pub fn superblock_bytes(blocks: u64, block_size: u64) -> Vec<u8> {
    let mut sb = vec![0u8; 1024];
    sb[MAGIC_AT..MAGIC_AT + 2].copy_from_slice(&MAGIC.to_le_bytes());
    sb[LOG_BLOCK_SIZE_AT..LOG_BLOCK_SIZE_AT + 4].copy_from_slice(&(block_size.trailing_zeros() - 10).to_le_bytes());
    sb[INCOMPAT_AT..INCOMPAT_AT + 4].copy_from_slice(&INCOMPAT_64BIT.to_le_bytes());
    sb[STATE_AT..STATE_AT + 2].copy_from_slice(&STATE_VALID.to_le_bytes());
    sb[MAX_MNT_COUNT_AT..MAX_MNT_COUNT_AT + 2].copy_from_slice(&(-1i16).to_le_bytes());
    set_blocks(&mut sb, blocks);
    sb
}

/// Sets the block count of superblock bytes `sb`, as the fake resize2fs does.
#[cfg(test)]
pub fn set_blocks(sb: &mut [u8], blocks: u64) {
    sb[BLOCKS_LO_AT..BLOCKS_LO_AT + 4].copy_from_slice(&(blocks as u32).to_le_bytes());
    sb[BLOCKS_HI_AT..BLOCKS_HI_AT + 4].copy_from_slice(&((blocks >> 32) as u32).to_le_bytes());
}

/// Sets or clears the journal's needs-recovery flag in superblock bytes
/// `sb`, as the kernel does when it mounts ext4 and unmounts it cleanly.
#[cfg(test)]
pub fn set_needs_recovery(sb: &mut [u8], on: bool) {
    let mut incompat = u32_at(sb, INCOMPAT_AT).unwrap();
    if on {
        incompat |= INCOMPAT_RECOVER;
    } else {
        incompat &= !INCOMPAT_RECOVER;
    }
    sb[INCOMPAT_AT..INCOMPAT_AT + 4].copy_from_slice(&incompat.to_le_bytes());
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
        match classify(&head) {
            Content::Ext4(sb) => assert_eq!((sb.block_size, sb.blocks), (4096, 5 << 32 | 7)),
            other => panic!("{other:?}"),
        }
        let mut junk = vec![0; HEAD];
        junk[HEAD - 1] = 1;
        assert_eq!(classify(&junk), Content::Unknown);
        assert_eq!(classify(&[]), Content::Unknown);
    }

    fn e2fsprogs(tool: &str, args: &[&str], img: &std::path::Path) {
        let path = format!("/usr/sbin/{tool}");
        if !std::path::Path::new(&path).exists() {
            panic!("{tool} (Debian package e2fsprogs) is needed for this test");
        }
        let mut cmd = std::process::Command::new(path);
        cmd.args(args).arg(img).stdout(std::process::Stdio::null());
        assert!(run_reaped(cmd).unwrap().success(), "{tool} {args:?}");
    }

    fn superblock_of(img: &std::path::Path) -> Superblock {
        let head = std::fs::read(img).unwrap();
        match classify(&head[..HEAD]) {
            Content::Ext4(sb) => sb,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_the_size_and_the_clean_state_mke2fs_and_tune2fs_wrote() {
        let dir = std::env::temp_dir().join(format!("berth-ext4-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let img = dir.join("fs.img");
        std::fs::File::create(&img).unwrap().set_len(48 << 20).unwrap();
        e2fsprogs("mke2fs", &["-q", "-t", "ext4", "-L", "data", "-F"], &img);
        let fresh = superblock_of(&img);
        assert_eq!(fresh.bytes(), 48 << 20);
        assert_eq!(fresh.check_reason(), None, "a fresh file system is clean: {fresh:?}");

        // tune2fs's own ways to make e2fsck -p check: a mount limit reached,
        // a check interval, errors marked.
        e2fsprogs("tune2fs", &["-c", "3", "-C", "3"], &img);
        assert_eq!(superblock_of(&img).check_reason().as_deref(), Some("it has been mounted 3 times without a check"));
        e2fsprogs("tune2fs", &["-c", "-1", "-i", "1d"], &img);
        assert_eq!(superblock_of(&img).check_reason().as_deref(), Some("it has a check interval"));
        e2fsprogs("tune2fs", &["-i", "0", "-E", "force_fsck"], &img);
        assert_eq!(superblock_of(&img).check_reason().as_deref(), Some("the kernel recorded errors in it"));
        // e2fsck -p then checks it and leaves it clean.
        let mut cmd = std::process::Command::new("/usr/sbin/e2fsck");
        cmd.arg("-p").arg(&img).stdout(std::process::Stdio::null());
        assert!(run_reaped(cmd).unwrap().code().is_some_and(|c| c <= 1));
        assert_eq!(superblock_of(&img).check_reason(), None);

        let mut head = std::fs::read(&img).unwrap();
        set_needs_recovery(&mut head[SUPERBLOCK_OFFSET..], true);
        let Content::Ext4(sb) = classify(&head[..HEAD]) else { panic!() };
        assert_eq!(sb.check_reason().as_deref(), Some("its journal needs replaying (it was not unmounted)"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
