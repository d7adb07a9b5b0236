//! The root tree: only the files the image names, the shared libraries
//! their ELF headers ask for, Berth's own binaries and its config files.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use crate::cmd::{self, CmdError};
use crate::error::{io_at, IoError};
use crate::manifest::Image;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("image.toml names {path}, which no pinned package contains")]
    MissingFile { path: String },
    #[error("{binary} needs {library}, found in no pinned package (searched {searched}); add the package that has it to image-build/image.toml")]
    MissingLibrary { binary: String, library: String, searched: String },
    #[error("{path}: not a readable ELF file: {message}")]
    BadElf { path: String, message: String },
    #[error("a unit of the image: {message}")]
    BadUnit { message: String },
    #[error("{path}: symbolic links loop")]
    LinkLoop { path: String },
    #[error(transparent)]
    Cmd(#[from] CmdError),
}

/// What went into the root, for the size report.
#[derive(Debug, Default)]
pub struct RootReport {
    /// Image path -> size in bytes, for every regular file.
    pub files: BTreeMap<String, u64>,
}

impl RootReport {
    pub fn total(&self) -> u64 {
        self.files.values().sum()
    }

    pub fn largest(&self, n: usize) -> Vec<(&str, u64)> {
        let mut v: Vec<(&str, u64)> = self.files.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v.truncate(n);
        v
    }
}

/// Resolves `path` inside the tree at `root`, following symbolic links as
/// if `root` were `/`.
pub fn resolve(root: &Path, path: &str) -> Result<PathBuf, RootfsError> {
    let mut todo: Vec<String> = path.split('/').filter(|c| !c.is_empty()).rev().map(str::to_string).collect();
    let mut at: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        match c.as_str() {
            "." => continue,
            ".." => {
                at.pop();
                continue;
            }
            _ => {}
        }
        let candidate: PathBuf = root.join(at.join("/")).join(&c);
        match std::fs::read_link(&candidate) {
            Ok(target) => {
                hops += 1;
                if hops > 40 {
                    return Err(RootfsError::LinkLoop { path: path.to_string() });
                }
                if target.is_absolute() {
                    at.clear();
                }
                for comp in target.components().rev() {
                    if let Component::Normal(s) = comp {
                        todo.push(s.to_string_lossy().into_owned());
                    } else if comp == Component::ParentDir {
                        todo.push("..".into());
                    }
                }
            }
            Err(_) => at.push(c),
        }
    }
    Ok(root.join(at.join("/")))
}

/// What the dynamic loader maps for the ELF file `bytes` (image path
/// `path`), found in the tree at `root`: its interpreter (by its /usr
/// path: the root merges /usr), then each DT_NEEDED library from the
/// first of [`LIB_DIRS`] that has it; as (image path, path in the tree).
///
/// Errors: `bytes` not ELF goblin can read, an interpreter or library
/// the tree does not have, links that loop.
pub fn elf_needs(root: &Path, path: &str, bytes: &[u8]) -> Result<Vec<(String, PathBuf)>, RootfsError> {
    let elf = goblin::elf::Elf::parse(bytes)
        .map_err(|e| RootfsError::BadElf { path: path.to_string(), message: e.to_string() })?;
    let mut needs = Vec::new();
    if let Some(interp) = elf.interpreter {
        let found = resolve(root, interp)?;
        if !found.is_file() {
            return Err(RootfsError::MissingLibrary {
                binary: path.to_string(),
                library: interp.to_string(),
                searched: interp.to_string(),
            });
        }
        needs.push((usr_merged(interp), found));
    }
    for lib in &elf.libraries {
        let mut hit = None;
        for dir in LIB_DIRS {
            let candidate = resolve(root, &format!("{dir}/{lib}"))?;
            if candidate.is_file() {
                hit = Some((format!("{dir}/{lib}"), candidate));
                break;
            }
        }
        needs.push(hit.ok_or_else(|| RootfsError::MissingLibrary {
            binary: path.to_string(),
            library: lib.to_string(),
            searched: LIB_DIRS.join(", "),
        })?);
    }
    Ok(needs)
}

/// The library search path of the pinned Debian userland.
const LIB_DIRS: [&str; 3] = ["/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"];

struct Builder<'a> {
    pkgroot: &'a Path,
    root: &'a Path,
    report: RootReport,
    seen: BTreeSet<String>,
    /// Source file -> the image path it was copied to first.
    copied: BTreeMap<PathBuf, String>,
}

impl Builder<'_> {
    /// Copies the file at image path `dest` from `src` (dereferenced), keeping its mode.
    /// A source already copied under another name becomes a symbolic link
    /// to that copy (the dynamic loader is reached as the programs'
    /// interpreter, /lib64/..., and as libc's dependency, /lib/x86_64-linux-gnu/...):
    /// one file in the root, as in Debian.
    fn install(&mut self, src: &Path, dest: &str) -> Result<(), RootfsError> {
        let to = self.root.join(dest.trim_start_matches('/'));
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(io_at(parent))?;
        }
        if let Some(first) = self.copied.get(src) {
            let target = relative_link(dest, first);
            symlink(&target, &to).map_err(io_at(&to))?;
            return Ok(());
        }
        self.copied.insert(src.to_path_buf(), dest.to_string());
        // A link made above for a second name must be replaced, not written
        // through (that would overwrite the first name's file).
        if to.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()) {
            std::fs::remove_file(&to).map_err(io_at(&to))?;
        }
        std::fs::copy(src, &to).map_err(io_at(src))?;
        let mode = std::fs::metadata(src).map_err(io_at(src))?.permissions().mode() & 0o7777;
        let mode = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).map_err(io_at(&to))?;
        let size = std::fs::metadata(&to).map_err(io_at(&to))?.len();
        self.report.files.insert(dest.to_string(), size);
        Ok(())
    }

    /// Installs a file from the packages and, if it is ELF, what it links against.
    fn install_with_closure(&mut self, src: &Path, dest: &str) -> Result<(), RootfsError> {
        if !self.seen.insert(dest.to_string()) {
            return Ok(());
        }
        self.install(src, dest)?;
        let bytes = std::fs::read(src).map_err(io_at(src))?;
        if !bytes.starts_with(b"\x7fELF") {
            return Ok(());
        }
        for (dest_dep, src_dep) in elf_needs(self.pkgroot, dest, &bytes)? {
            self.install_with_closure(&src_dep, &dest_dep)?;
        }
        Ok(())
    }
}

/// The target of a symbolic link at image path `link` that points to
/// image path `to`, relative (`/usr/lib/x/a` -> `/usr/lib64/b`: `../../lib64/b`),
/// so the link resolves the same in the build tree and on the machine.
fn relative_link(link: &str, to: &str) -> String {
    let from: Vec<&str> = link.split('/').filter(|c| !c.is_empty()).collect();
    let to: Vec<&str> = to.split('/').filter(|c| !c.is_empty()).collect();
    let dir = &from[..from.len().saturating_sub(1)];
    let common = dir.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<&str> = vec![".."; dir.len() - common];
    parts.extend(&to[common..]);
    parts.join("/")
}

fn usr_merged(path: &str) -> String {
    for d in ["/bin/", "/sbin/", "/lib/", "/lib64/"] {
        if let Some(rest) = path.strip_prefix(d) {
            return format!("/usr{d}{rest}");
        }
    }
    path.to_string()
}

/// Builds the root tree at `root` (replacing it) from the unpacked packages
/// at `pkgroot`, Berth's binaries in `bins` and the static files of `static_dir`.
pub fn build(
    image: &Image,
    pkgroot: &Path,
    bins: &Path,
    static_dir: &Path,
    os_release: &str,
    root: &Path,
) -> Result<RootReport, RootfsError> {
    if root.exists() {
        std::fs::remove_dir_all(root).map_err(io_at(root))?;
    }
    for d in [
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
        "var",
        "etc",
        // dropbear's host keys (made at first boot by the ssh-keygen unit).
        "etc/dropbear",
        "usr/bin",
        "usr/sbin",
        "usr/lib64",
        "usr/lib/x86_64-linux-gnu",
    ] {
        let p = root.join(d);
        std::fs::create_dir_all(&p).map_err(io_at(&p))?;
    }
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).map_err(io_at(root))?;
    for d in ["bin", "sbin", "lib", "lib64"] {
        let link = root.join(d);
        symlink(format!("usr/{d}"), &link).map_err(io_at(&link))?;
    }
    // root's home is on the data partition (its ~/.ssh/authorized_keys must
    // be writable; /etc/passwd says /var/root, PID1 makes it with /var);
    // /root points there for whatever assumes the usual path.
    let home = root.join("root");
    symlink("var/root", &home).map_err(io_at(&home))?;
    let mut b =
        Builder { pkgroot, root, report: RootReport::default(), seen: BTreeSet::new(), copied: BTreeMap::new() };
    for f in &image.files {
        let src = resolve(pkgroot, f)?;
        if !src.is_file() {
            return Err(RootfsError::MissingFile { path: f.clone() });
        }
        b.install_with_closure(&src, f)?;
    }
    for name in &image.berth_binaries {
        b.install_with_closure(&bins.join(name), &format!("{}/{name}", berth_layout::paths::BIN_DIR))?;
    }
    let init = root.join("usr/sbin/init");
    let init_target = format!(
        "../bin/{}",
        Path::new(berth_layout::paths::INIT).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    );
    symlink(&init_target, &init).map_err(io_at(&init))?;
    for name in &image.power_commands {
        let link = root.join("usr/sbin").join(name);
        symlink(&init_target, &link).map_err(io_at(&link))?;
    }

    busybox_links(image, pkgroot, root)?;
    copy_static(static_dir, static_dir, root, &mut b)?;

    let rel = root.join(berth_layout::paths::OS_RELEASE.trim_start_matches('/'));
    std::fs::write(&rel, os_release).map_err(io_at(&rel))?;
    b.report.files.insert(berth_layout::paths::OS_RELEASE.to_string(), os_release.len() as u64);
    let etc_rel = root.join("etc/os-release");
    symlink("../usr/lib/os-release", &etc_rel).map_err(io_at(&etc_rel))?;
    Ok(b.report)
}

/// One link per busybox applet, unless a real tool of that name is there.
fn busybox_links(image: &Image, pkgroot: &Path, root: &Path) -> Result<(), RootfsError> {
    let bb = resolve(pkgroot, &image.busybox)?;
    let list = cmd::stdout(Command::new(&bb).arg("--list"))?;
    let mut names: Vec<&str> = list.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    names.sort_unstable();
    for name in names {
        if image.busybox_skip.iter().any(|s| s == name) || name.contains('/') {
            continue;
        }
        let exists = ["usr/bin", "usr/sbin"].iter().any(|d| root.join(d).join(name).symlink_metadata().is_ok());
        if exists {
            continue;
        }
        let link = root.join("usr/bin").join(name);
        symlink("busybox", &link).map_err(io_at(&link))?;
    }
    Ok(())
}

/// Copies image-build/rootfs/ into the root. Secrets stay private.
/// Symbolic links are copied as links, their targets as written (they are
/// meant for the image, e.g. `iptables -> xtables-nft-multi`).
fn copy_static(base: &Path, dir: &Path, root: &Path, b: &mut Builder) -> Result<(), RootfsError> {
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(dir).map_err(io_at(dir))?.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for src in entries {
        let rel = src.strip_prefix(base).map_err(|_| RootfsError::MissingFile { path: src.display().to_string() })?;
        if src.symlink_metadata().map_err(io_at(&src))?.file_type().is_symlink() {
            let target = std::fs::read_link(&src).map_err(io_at(&src))?;
            let to = root.join(rel);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(io_at(parent))?;
            }
            if to.symlink_metadata().is_ok() {
                std::fs::remove_file(&to).map_err(io_at(&to))?;
            }
            symlink(&target, &to).map_err(io_at(&to))?;
            continue;
        }
        if src.is_dir() {
            copy_static(base, &src, root, b)?;
            continue;
        }
        let dest = format!("/{}", rel.display());
        b.install(&src, &dest)?;
        if dest == "/etc/shadow" {
            let to = root.join("etc/shadow");
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).map_err(io_at(&to))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_follows_links_inside_the_tree() {
        let t = std::env::temp_dir().join(format!("berth-resolve-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&t);
        std::fs::create_dir_all(t.join("usr/lib/x")).unwrap();
        symlink("usr/lib", t.join("lib")).unwrap();
        std::fs::write(t.join("usr/lib/x/libz.so.1.2"), b"z").unwrap();
        symlink("libz.so.1.2", t.join("usr/lib/x/libz.so.1")).unwrap();
        // An absolute link is taken relative to the tree, not the host.
        symlink("/lib/x/libz.so.1", t.join("usr/lib/abs")).unwrap();
        assert_eq!(resolve(&t, "/lib/x/libz.so.1").unwrap(), t.join("usr/lib/x/libz.so.1.2"));
        assert_eq!(resolve(&t, "/usr/lib/abs").unwrap(), t.join("usr/lib/x/libz.so.1.2"));
        symlink("loop2", t.join("loop1")).unwrap();
        symlink("loop1", t.join("loop2")).unwrap();
        assert!(matches!(resolve(&t, "/loop1"), Err(RootfsError::LinkLoop { .. })));
        std::fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn a_file_reached_under_two_names_is_copied_once() {
        let t = std::env::temp_dir().join(format!("berth-dedupe-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&t);
        let (pkgroot, root) = (t.join("pkg"), t.join("root"));
        std::fs::create_dir_all(pkgroot.join("usr/lib/x86_64-linux-gnu")).unwrap();
        let ld = pkgroot.join("usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2");
        std::fs::write(&ld, b"the loader").unwrap();
        let mut b = Builder {
            pkgroot: &pkgroot,
            root: &root,
            report: RootReport::default(),
            seen: BTreeSet::new(),
            copied: BTreeMap::new(),
        };
        b.install(&ld, "/usr/lib64/ld-linux-x86-64.so.2").unwrap();
        b.install(&ld, "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2").unwrap();
        let second = root.join("usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2");
        assert_eq!(std::fs::read_link(&second).unwrap(), Path::new("../../lib64/ld-linux-x86-64.so.2"));
        assert_eq!(std::fs::read(&second).unwrap(), b"the loader");
        assert_eq!(b.report.files.len(), 1, "{:?}", b.report.files);
        // Another file later put at the second name replaces the link, not the first copy.
        let other = pkgroot.join("other");
        std::fs::write(&other, b"another file").unwrap();
        b.install(&other, "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2").unwrap();
        assert_eq!(std::fs::read(root.join("usr/lib64/ld-linux-x86-64.so.2")).unwrap(), b"the loader");
        assert_eq!(std::fs::read(&second).unwrap(), b"another file");
        std::fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn relative_links_between_image_paths() {
        assert_eq!(relative_link("/usr/lib/x86_64-linux-gnu/a", "/usr/lib64/b"), "../../lib64/b");
        assert_eq!(relative_link("/usr/lib64/a", "/usr/lib64/b"), "b");
        assert_eq!(relative_link("/usr/bin/a", "/usr/lib/x/b"), "../lib/x/b");
    }

    #[test]
    fn legacy_paths_map_into_usr() {
        assert_eq!(usr_merged("/lib64/ld-linux-x86-64.so.2"), "/usr/lib64/ld-linux-x86-64.so.2");
        assert_eq!(usr_merged("/usr/bin/x"), "/usr/bin/x");
    }
}
