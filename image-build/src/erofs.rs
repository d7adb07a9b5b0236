//! The compressed, read-only root filesystem.

use std::path::Path;
use std::process::Command;

use berth_layout::Guid;

use crate::cmd::{self, CmdError};

/// Packs `root` into `out` with lz4hc compression. Every file is owned by
/// root and stamped with `epoch`, and the UUID is fixed, so the same tree
/// gives the same bytes.
pub fn build(root: &Path, out: &Path, uuid: Guid, epoch: u64) -> Result<u64, CmdError> {
    let _ = std::fs::remove_file(out);
    let mut mkfs = Command::new("mkfs.erofs");
    crate::progress::spin("EROFS: mkfs.erofs -zlz4hc", || {
        cmd::run(
            mkfs.arg("-zlz4hc")
                .arg(format!("-T{epoch}"))
                .arg(format!("-U{uuid}"))
                .arg("--all-root")
                .arg("--quiet")
                .arg(out)
                .arg(root),
        )
    })?;
    Ok(std::fs::metadata(out).map(|m| m.len()).unwrap_or(0))
}
