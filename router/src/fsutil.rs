//! Writing a file so readers see the old or the new contents, never a part.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` through a temporary file in the same
/// directory (fsynced, then renamed over it); creates the directory.
/// Does nothing when the file already holds exactly these bytes.
///
/// Errors: the I/O error, with the path in its message.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    let named = |e: std::io::Error, p: &Path| std::io::Error::new(e.kind(), format!("{}: {e}", p.display()));
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| named(e, dir))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(|e| named(e, &tmp))?;
    f.write_all(bytes).map_err(|e| named(e, &tmp))?;
    f.sync_all().map_err(|e| named(e, &tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| named(e, path))
}
