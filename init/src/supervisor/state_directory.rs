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
//! usable. The top directory is handed over last: a handover cut short by
//! a power cut leaves it foreign, and the next start finishes the job.

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
    walk_contents_first(top, &mut |p| lchown(p, Some(uid), Some(gid)))
}

/// Calls `visit` on every path of the tree under `top` (symbolic links not
/// followed), each directory after everything in it and `top` last: a
/// handover cut short (a power cut, a failed lchown) leaves `top` foreign,
/// so the next start sees it and walks the tree again, where handing the
/// top over first would have marked the tree done with most of it still
/// the old owner's. One open directory per level of depth.
fn walk_contents_first(top: &Path, visit: &mut dyn FnMut(&Path) -> io::Result<()>) -> Result<(), (PathBuf, io::Error)> {
    // (path, its entries once it is known to be a directory)
    let mut stack: Vec<(PathBuf, Option<fs::ReadDir>)> = vec![(top.to_path_buf(), None)];
    while let Some((path, entries)) = stack.last_mut() {
        let at = |e: io::Error| (path.clone(), e);
        if entries.is_none() {
            if !fs::symlink_metadata(&*path).map_err(at)?.is_dir() {
                visit(path).map_err(at)?;
                stack.pop();
                continue;
            }
            *entries = Some(fs::read_dir(&*path).map_err(at)?);
        }
        match entries.as_mut().and_then(Iterator::next) {
            Some(entry) => {
                let child = entry.map_err(at)?.path();
                stack.push((child, None));
            }
            None => {
                visit(path).map_err(at)?;
                stack.pop();
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
    fn the_tree_is_walked_contents_first_and_the_top_last() {
        let root = tempfile::tempdir().unwrap();
        let top = root.path().join("etcd");
        fs::create_dir_all(top.join("member/wal")).unwrap();
        fs::create_dir_all(top.join("member/snap")).unwrap();
        fs::write(top.join("member/wal/0.wal"), b"x").unwrap();
        fs::write(top.join("member/snap/db"), b"x").unwrap();
        std::os::unix::fs::symlink("/", top.join("link")).unwrap();
        let mut seen = Vec::new();
        walk_contents_first(&top, &mut |p| {
            seen.push(p.strip_prefix(&top).unwrap().to_path_buf());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen.len(), 7, "{seen:?}");
        assert_eq!(seen.last(), Some(&PathBuf::new()), "the top comes last: {seen:?}");
        for (i, p) in seen.iter().enumerate() {
            for inner in &seen[i + 1..] {
                assert!(!inner.starts_with(p) || inner == p, "{} came before {} in it", p.display(), inner.display());
            }
        }
    }

    #[test]
    fn a_handover_cut_short_is_finished_by_the_next_start() {
        // Handing over to another user needs CAP_CHOWN: the test suite runs as root.
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("etcd");
        fs::create_dir_all(dir.join("member/wal")).unwrap();
        for n in 0..5 {
            fs::write(dir.join(format!("member/wal/{n}.wal")), b"x").unwrap();
        }
        // The first handover stops after three paths (a power cut).
        let mut left = 3;
        let cut = walk_contents_first(&dir, &mut |p| {
            if left == 0 {
                return Err(io::Error::other("power cut"));
            }
            left -= 1;
            lchown(p, Some(4242), Some(4343))
        });
        assert!(cut.is_err());
        prepare(root.path(), &["etcd".to_string()], 0o700, 4242, 4343).unwrap();
        for p in ["", "member", "member/wal", "member/wal/0.wal", "member/wal/4.wal"] {
            let (u, g, _) = owner_and_mode(&dir.join(p));
            assert_eq!((u, g), (4242, 4343), "{p} is still the old owner's");
        }
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
