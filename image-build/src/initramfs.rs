//! The initramfs each UKI carries: stage 0 (`berth-initrd`) as `/init`,
//! systemd's `/etc/initrd-release` (os-release(5) for an initrd), the
//! kernel's modules with the order stage 0 loads them in
//! (`/lib/modules/load.order`), and the directories stage 0 mounts on, as
//! an uncompressed newc cpio archive
//! (the kernel's buffer format, Documentation/driver-api/early-userspace/
//! buffer-format.rst). The kernel unpacks it over its own built-in one,
//! which holds /dev and /dev/console.
//!
//! Uncompressed: the kernel is built without initramfs decompressors, and
//! the archive is about the size of the one program in it.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;

use crate::error::{io_at, IoError};

/// Where the modules go, and the file naming their load order.
pub const MODULES_DIR: &str = "lib/modules";
pub const LOAD_ORDER: &str = "lib/modules/load.order";

/// A kernel module: its file name (`ahci.ko`) and bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    pub file: String,
    pub bytes: Vec<u8>,
}

/// Why the modules could not be put in order.
#[derive(Debug, thiserror::Error)]
pub enum ModulesError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{file}: not a kernel module: {message}")]
    NotModule { file: String, message: String },
    #[error("{file}: depends on {depends:?}, which the kernel build did not make")]
    MissingDependency { file: String, depends: String },
    #[error("the modules depend on each other in a circle: {0}")]
    Cycle(String),
}

/// The `depends=` of a module's `.modinfo` section (NUL-separated
/// `key=value` strings): the module names it needs loaded first.
fn depends(file: &str, bytes: &[u8]) -> Result<Vec<String>, ModulesError> {
    let not = |message: String| ModulesError::NotModule { file: file.to_string(), message };
    let elf = goblin::elf::Elf::parse(bytes).map_err(|e| not(e.to_string()))?;
    let info = elf
        .section_headers
        .iter()
        .find(|s| elf.shdr_strtab.get_at(s.sh_name) == Some(".modinfo"))
        .ok_or_else(|| not("no .modinfo section".into()))?;
    let range = info.file_range().ok_or_else(|| not(".modinfo has no bytes".into()))?;
    let data = bytes.get(range).ok_or_else(|| not(".modinfo lies past the end of the file".into()))?;
    Ok(data
        .split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok()?.strip_prefix("depends="))
        .flat_map(|d| d.split(','))
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect())
}

/// Every `*.ko` of `dir`, each after the modules it depends on (a module's
/// name is its file name without `.ko`, `-` and `_` alike), the others in
/// name order.
pub fn load_order(dir: &Path) -> Result<Vec<Module>, ModulesError> {
    let mut by_name = BTreeMap::new();
    for e in std::fs::read_dir(dir).map_err(io_at(dir))? {
        let path = e.map_err(io_at(dir))?.path();
        let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if let Some(name) = file.strip_suffix(".ko") {
            let bytes = std::fs::read(&path).map_err(io_at(&path))?;
            let deps = depends(&file, &bytes)?;
            by_name.insert(name.replace('-', "_"), (Module { file, bytes }, deps));
        }
    }
    order(by_name)
}

fn order(mut pending: BTreeMap<String, (Module, Vec<String>)>) -> Result<Vec<Module>, ModulesError> {
    for (module, deps) in pending.values() {
        if let Some(d) = deps.iter().find(|d| !pending.contains_key(&d.replace('-', "_"))) {
            return Err(ModulesError::MissingDependency { file: module.file.clone(), depends: d.clone() });
        }
    }
    let mut out: Vec<Module> = Vec::new();
    let mut loaded: Vec<String> = Vec::new();
    while !pending.is_empty() {
        let ready = pending
            .iter()
            .find(|(_, (_, deps))| deps.iter().all(|d| loaded.contains(&d.replace('-', "_"))))
            .map(|(name, _)| name.clone());
        let Some(name) = ready else {
            return Err(ModulesError::Cycle(pending.keys().cloned().collect::<Vec<_>>().join(", ")));
        };
        if let Some((module, _)) = pending.remove(&name) {
            out.push(module);
        }
        loaded.push(name);
    }
    Ok(out)
}

/// The archive's entries: (path without the leading /, mode with the file
/// type bits, content). Directories come before what they hold.
fn entries<'a>(
    init: &'a [u8],
    initrd_release: &'a str,
    modules: &'a [Module],
    order: &'a str,
) -> Vec<(String, u32, &'a [u8])> {
    let mut e: Vec<(String, u32, &[u8])> = ["etc", "proc", "sys", "sysroot", "lib", MODULES_DIR]
        .iter()
        .map(|d| (d.to_string(), 0o040755, &[][..]))
        .collect();
    e.push(("etc/initrd-release".into(), 0o100644, initrd_release.as_bytes()));
    for m in modules {
        e.push((format!("{MODULES_DIR}/{}", m.file), 0o100644, &m.bytes));
    }
    e.push((LOAD_ORDER.into(), 0o100644, order.as_bytes()));
    e.push(("init".into(), 0o100755, init));
    e
}

/// The archive bytes for stage 0's program `init`, the OS release text and
/// the `modules` in load order ([`load_order`]). Reproducible: every entry
/// has owner root, time `mtime` (seconds since the epoch) and an inode
/// number by position.
pub fn archive(init: &[u8], initrd_release: &str, modules: &[Module], mtime: u32) -> std::io::Result<Vec<u8>> {
    let order: String = modules.iter().map(|m| format!("{}\n", m.file)).collect();
    let inputs = entries(init, initrd_release, modules, &order).into_iter().map(|(name, mode, data)| {
        let b = cpio::NewcBuilder::new(&name).mode(mode).uid(0).gid(0).mtime(mtime).nlink(if mode & 0o040000 != 0 {
            2
        } else {
            1
        });
        (b, Cursor::new(data))
    });
    let out = cpio::write_cpio(inputs, Vec::new())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn the_archive_holds_init_and_initrd_release_and_reads_back() {
        let modules = [
            Module { file: "libx.ko".into(), bytes: b"lib".to_vec() },
            Module { file: "x.ko".into(), bytes: b"x".to_vec() },
        ];
        let bytes = archive(b"\x7fELF program", "NAME=Berth\n", &modules, 1_700_000_000).unwrap();
        assert_eq!(&bytes[..6], b"070701", "newc");
        let mut r = Cursor::new(bytes.clone());
        let mut seen = Vec::new();
        loop {
            let mut entry = cpio::NewcReader::new(r).unwrap();
            if entry.entry().is_trailer() {
                break;
            }
            let (name, mode, mtime) = (entry.entry().name().to_string(), entry.entry().mode(), entry.entry().mtime());
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            seen.push((name, mode, mtime, data));
            r = entry.finish().unwrap();
        }
        let names: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "etc",
                "proc",
                "sys",
                "sysroot",
                "lib",
                "lib/modules",
                "etc/initrd-release",
                "lib/modules/libx.ko",
                "lib/modules/x.ko",
                "lib/modules/load.order",
                "init"
            ]
        );
        assert_eq!(seen[9].3, b"libx.ko\nx.ko\n");
        let init = seen.iter().find(|s| s.0 == "init").unwrap();
        assert_eq!((init.1, init.2, init.3.as_slice()), (0o100755, 1_700_000_000, &b"\x7fELF program"[..]));
        assert_eq!(seen[6].3, b"NAME=Berth\n");
        assert_eq!(
            bytes,
            archive(b"\x7fELF program", "NAME=Berth\n", &modules, 1_700_000_000).unwrap(),
            "reproducible"
        );
    }

    fn m(file: &str, deps: &[&str]) -> (String, (Module, Vec<String>)) {
        let name = file.trim_end_matches(".ko").replace('-', "_");
        (name, (Module { file: file.into(), bytes: vec![] }, deps.iter().map(|d| d.to_string()).collect()))
    }

    #[test]
    fn modules_load_after_what_they_depend_on() {
        let files = |v: Vec<Module>| v.into_iter().map(|m| m.file).collect::<Vec<_>>();
        let got = order([m("ahci.ko", &["libahci"]), m("libahci.ko", &[]), m("zz.ko", &[])].into()).unwrap();
        assert_eq!(files(got), ["libahci.ko", "ahci.ko", "zz.ko"]);
        let got = order([m("a.ko", &["b-c"]), m("b_c.ko", &[])].into()).unwrap();
        assert_eq!(files(got), ["b_c.ko", "a.ko"], "- and _ name the same module");
        let e = order([m("ahci.ko", &["libahci"])].into()).unwrap_err();
        assert_eq!(e.to_string(), "ahci.ko: depends on \"libahci\", which the kernel build did not make");
        let e = order([m("a.ko", &["b"]), m("b.ko", &["a"])].into()).unwrap_err();
        assert!(matches!(e, ModulesError::Cycle(_)), "{e}");
    }
}
