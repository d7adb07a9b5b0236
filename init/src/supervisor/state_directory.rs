//! A unit's `state_directory` (systemd's `StateDirectory=`): the
//! directories under `/var/lib` it keeps its data in, made ready by PID1
//! before every start, so that a service running as its own user needs no
//! root helper (a oneshot with `mkdir` and `chown`) in front of it.
//!
//! As systemd does: missing directories are created with their parents
//! (parents root's, 0755); each named one gets the unit's mode; one that
//! belongs to another user or group is handed over with everything in it
//! (lchown, symbolic links not followed), so that data written by an
//! earlier version running as root, or restored from a backup, stays
//! usable.

use std::fs;
use std::io;
use std::os::unix::fs::{lchown, DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// `$STATE_DIRECTORY` for `names` under `root`: absolute paths joined by
/// `:`; `None` when there are none.
pub(crate) fn environment_value(root: &Path, names: &[String]) -> Option<String> {
    (!names.is_empty()).then(|| names.iter().map(|n| root.join(n).display().to_string()).collect::<Vec<_>>().join(":"))
}

/// Makes each of `names` (relative paths, checked by the unit format)
/// under `root` a directory with `mode`, owned by `uid`:`gid`; see the
/// module. Returns the directories. An error names the path and what
/// failed (a file in the way, a read-only /var, a failed chown); the unit
/// then does not start.
pub(crate) fn prepare(root: &Path, names: &[String], mode: u32, uid: u32, gid: u32) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let dir = root.join(name);
        let fail = |what: &str, e: io::Error| format!("state_directory {}: {what}: {e}", dir.display());
        if let Some(parent) = dir.parent() {
            fs::DirBuilder::new().recursive(true).mode(0o755).create(parent).map_err(|e| fail("creating", e))?;
        }
        match fs::DirBuilder::new().mode(mode).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(fail("creating", e)),
        }
        let meta = fs::symlink_metadata(&dir).map_err(|e| fail("reading", e))?;
        if !meta.is_dir() {
            return Err(format!("state_directory {}: exists and is not a directory", dir.display()));
        }
        if meta.uid() != uid || meta.gid() != gid {
            chown_tree(&dir, uid, gid).map_err(|(path, e)| {
                format!("state_directory {}: handing {} to {uid}:{gid}: {e}", dir.display(), path.display())
            })?;
        }
        // The umask applied at creation; an existing one may have another.
        if meta.permissions().mode() & 0o7777 != mode {
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).map_err(|e| fail("setting its mode", e))?;
        }
        out.push(dir);
    }
    Ok(out)
}

/// lchown of `top` and everything below it; on failure, the path and error.
fn chown_tree(top: &Path, uid: u32, gid: u32) -> Result<(), (PathBuf, io::Error)> {
    let mut stack = vec![top.to_path_buf()];
    while let Some(path) = stack.pop() {
        lchown(&path, Some(uid), Some(gid)).map_err(|e| (path.clone(), e))?;
        let meta = fs::symlink_metadata(&path).map_err(|e| (path.clone(), e))?;
        if meta.is_dir() {
            for entry in fs::read_dir(&path).map_err(|e| (path.clone(), e))? {
                stack.push(entry.map_err(|e| (path.clone(), e))?.path());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner_and_mode(p: &Path) -> (u32, u32, u32) {
        let m = fs::symlink_metadata(p).unwrap();
        (m.uid(), m.gid(), m.permissions().mode() & 0o7777)
    }

    #[test]
    fn missing_directories_are_made_with_their_parents_and_the_mode() {
        let root = tempfile::tempdir().unwrap();
        let (uid, gid) = (rustix::process::getuid().as_raw(), rustix::process::getgid().as_raw());
        let names = vec!["etcd".to_string(), "deep/er/one".to_string()];
        let dirs = prepare(root.path(), &names, 0o700, uid, gid).unwrap();
        assert_eq!(dirs, [root.path().join("etcd"), root.path().join("deep/er/one")]);
        assert_eq!(owner_and_mode(&dirs[0]), (uid, gid, 0o700));
        assert_eq!(owner_and_mode(&dirs[1]), (uid, gid, 0o700));
        assert_eq!(owner_and_mode(&root.path().join("deep/er")).2, 0o755);
        // Again: nothing to do, no error.
        assert_eq!(prepare(root.path(), &names, 0o700, uid, gid).unwrap(), dirs);
    }

    #[test]
    fn an_existing_directory_gets_the_mode_and_a_foreign_tree_is_handed_over() {
        // Handing over to another user needs CAP_CHOWN: the test suite runs as root.
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("etcd");
        fs::create_dir_all(dir.join("member/wal")).unwrap();
        fs::write(dir.join("member/wal/0.wal"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join("link")).unwrap();
        let before = owner_and_mode(Path::new("/etc/passwd"));
        prepare(root.path(), &["etcd".to_string()], 0o700, 4242, 4343).unwrap();
        assert_eq!(owner_and_mode(&dir), (4242, 4343, 0o700));
        for p in ["member", "member/wal", "member/wal/0.wal", "link"] {
            let (u, g, _) = owner_and_mode(&dir.join(p));
            assert_eq!((u, g), (4242, 4343), "{p}");
        }
        assert_eq!(owner_and_mode(Path::new("/etc/passwd")), before, "a link's target is not touched");
    }

    #[test]
    fn a_file_in_the_way_is_an_error_that_names_it() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("etcd"), b"").unwrap();
        let e = prepare(root.path(), &["etcd".to_string()], 0o755, 0, 0).unwrap_err();
        assert!(e.contains(&format!("{}/etcd: exists and is not a directory", root.path().display())), "{e}");
    }

    #[test]
    fn the_environment_lists_absolute_paths() {
        let names = ["a".to_string(), "b/c".to_string()];
        assert_eq!(environment_value(Path::new("/var/lib"), &names).as_deref(), Some("/var/lib/a:/var/lib/b/c"));
        assert_eq!(environment_value(Path::new("/var/lib"), &[]), None);
    }
}
