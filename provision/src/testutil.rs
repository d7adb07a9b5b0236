//! Test fixtures: a machine root in a temp dir (the image's account files
//! and units), a fake runner, a host that fails on purpose, snapshots.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::diag::Place;
use crate::host::{Existing, FsHost, Host, Ran, Runner};

/// Records what it ran; answers exit 0 (or what `fail` says).
#[derive(Clone, Default)]
pub struct FakeRunner {
    pub ran: std::rc::Rc<std::cell::RefCell<Vec<Vec<String>>>>,
    pub fail: bool,
}

impl Runner for FakeRunner {
    fn run(&mut self, argv: &[String], _timeout: Duration) -> io::Result<Ran> {
        self.ran.borrow_mut().push(argv.to_vec());
        Ok(Ran {
            code: Some(if self.fail { 1 } else { 0 }),
            output: if self.fail { "boom".into() } else { String::new() },
        })
    }
}

pub fn at(key: &str) -> Place {
    Place::new("user-data", 3, key)
}

/// A root seeded like the image: account files, the image's units, two
/// time zones, /var/root.
pub fn machine() -> (tempfile::TempDir, FsHost<FakeRunner>) {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../image-build/rootfs");
    let root = dir.path();
    for f in ["etc/passwd", "etc/group", "etc/shadow"] {
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::copy(rootfs.join(f), root.join(f)).unwrap();
    }
    std::fs::create_dir_all(root.join("usr/lib/berth/units")).unwrap();
    for e in std::fs::read_dir(rootfs.join("usr/lib/berth/units")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), root.join("usr/lib/berth/units").join(e.file_name())).unwrap();
    }
    std::fs::create_dir_all(root.join("usr/share/zoneinfo/Europe")).unwrap();
    std::fs::write(root.join("usr/share/zoneinfo/Europe/Berlin"), b"TZif-berlin").unwrap();
    std::fs::write(root.join("usr/share/zoneinfo/UTC"), b"TZif-utc").unwrap();
    std::fs::create_dir_all(root.join("var/root")).unwrap();
    std::fs::create_dir_all(root.join("var/lib/berth/provision")).unwrap();
    std::fs::write(root.join("etc/machine-id"), b"0123456789abcdef0123456789abcdef\n").unwrap();
    let host = FsHost { root: root.to_path_buf(), runner: FakeRunner::default(), set_kernel_hostname: false };
    (dir, host)
}

/// Every path under `root`: its kind, content or target, mode and owner.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let m = p.symlink_metadata().unwrap();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            let owner = format!("{:o} {}:{}", m.mode() & 0o7777, m.uid(), m.gid());
            if m.file_type().is_symlink() {
                out.insert(rel, format!("-> {}", std::fs::read_link(&p).unwrap().display()));
            } else if m.is_dir() {
                out.insert(rel, format!("dir {owner}"));
                walk(root, &p, out);
            } else {
                out.insert(rel, format!("{owner} {}", String::from_utf8_lossy(&std::fs::read(&p).unwrap())));
            }
        }
    }
    walk(root, root, &mut out);
    out
}

/// A host that counts writes, fails writes to one path, or stops
/// working for good after some changes (a power cut).
pub struct Faulty<'a> {
    pub inner: &'a mut dyn Host,
    pub fail_path: Option<PathBuf>,
    /// Changes (write, remove, mkdir, symlink) allowed before every
    /// further one fails.
    pub ops_left: Option<usize>,
    pub writes: usize,
}

impl<'a> Faulty<'a> {
    pub fn new(inner: &'a mut dyn Host) -> Faulty<'a> {
        Faulty { inner, fail_path: None, ops_left: None, writes: 0 }
    }

    /// A file written at `path` (write_atomic, copy_atomic): the injected
    /// failure, a change counted, a write counted.
    fn write_step(&mut self, path: &Path) -> io::Result<()> {
        if self.fail_path.as_deref() == Some(path) {
            return Err(io::Error::other(format!("injected failure at {}", path.display())));
        }
        self.step()?;
        self.writes += 1;
        Ok(())
    }

    fn step(&mut self) -> io::Result<()> {
        match &mut self.ops_left {
            Some(0) => Err(io::Error::other("power cut")),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }
}

impl Host for Faulty<'_> {
    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        self.inner.read(path)
    }
    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }
    fn write_atomic(&mut self, path: &Path, bytes: &[u8], mode: u32, uid: u32, gid: u32) -> io::Result<()> {
        self.write_step(path)?;
        self.inner.write_atomic(path, bytes, mode, uid, gid)
    }
    fn copy_atomic(&mut self, from: &Path, to: &Path, mode: u32, uid: u32, gid: u32) -> io::Result<()> {
        self.write_step(to)?;
        self.inner.copy_atomic(from, to, mode, uid, gid)
    }
    fn same_content(&self, path: &Path, bytes: &[u8]) -> io::Result<bool> {
        self.inner.same_content(path, bytes)
    }
    fn remove(&mut self, path: &Path) -> io::Result<()> {
        self.step()?;
        self.inner.remove(path)
    }
    fn create_dir(&mut self, path: &Path, mode: u32, uid: u32, gid: u32) -> io::Result<()> {
        self.step()?;
        self.inner.create_dir(path, mode, uid, gid)
    }
    fn symlink(&mut self, target: &Path, path: &Path) -> io::Result<()> {
        self.step()?;
        self.inner.symlink(target, path)
    }
    fn set_hostname(&mut self, name: &str) -> io::Result<()> {
        self.inner.set_hostname(name)
    }
    fn run(&mut self, argv: &[String], timeout: Duration) -> io::Result<Ran> {
        self.inner.run(argv, timeout)
    }
    fn inspect(&self, path: &Path) -> io::Result<Option<Existing>> {
        self.inner.inspect(path)
    }
}

/// A generated unit file's text is a unit PID1 loads (berth-units' reader).
pub fn assert_valid_unit(name: &str, text: &str) {
    if text.is_empty() {
        return; // a mask
    }
    let unit = name.rsplit('/').next().unwrap_or(name).trim_end_matches(".toml");
    if let Err(e) = crate::interpret::unit_text(unit, text) {
        panic!("{name}: {e:?}\n{text}");
    }
}
