//! The compressed, read-only root filesystem.

use std::path::Path;
use std::process::Command;

use berth_layout::Guid;

use crate::cmd::{self, CmdError};
use crate::manifest::Erofs;

/// How one root is packed: the tool and image.toml's `[erofs]`.
pub struct Packing<'a> {
    /// A `mkfs.erofs` that knows `settings.compressors` (erofs_utils.rs).
    pub mkfs: &'a Path,
    pub settings: &'a Erofs,
    /// image-build/, where `settings.hints` lives.
    pub dir: &'a Path,
}

impl Packing<'_> {
    /// The arguments before the image and the tree: `-z`, `-C`, `-E`, the hints.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![format!("-z{}", self.settings.compressors), format!("-C{}", self.settings.pcluster)];
        if !self.settings.extended.is_empty() {
            args.push(format!("-E{}", self.settings.extended.join(",")));
        }
        if let Some(hints) = &self.settings.hints {
            args.push(format!("--compress-hints={}", self.dir.join(hints).display()));
        }
        args
    }
}

/// Packs `root` into `out` as `packing` says. Every file is owned by root
/// and stamped with `epoch`, and the UUID is fixed, so the same tree gives
/// the same bytes. Returns the image's size in bytes.
pub fn build(packing: &Packing, root: &Path, out: &Path, uuid: Guid, epoch: u64) -> Result<u64, CmdError> {
    let _ = std::fs::remove_file(out);
    let mut mkfs = Command::new(packing.mkfs);
    let label = format!("EROFS: mkfs.erofs -z{} -C{}", packing.settings.compressors, packing.settings.pcluster);
    crate::progress::spin(label, || {
        cmd::run(
            mkfs.args(packing.args())
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
