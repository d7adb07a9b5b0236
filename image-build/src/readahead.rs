//! The boot's read-ahead list (`berth_layout::paths::BOOT_READAHEAD`):
//! the programs of the daemons the boot waits for, which PID1 reads into
//! the page cache at idle priority while early boot waits on the hardware
//! (init/src/boot/readahead.rs).
//!
//! Made from the image's own units (`usr/lib/berth/units`): the program
//! of each unit whose readiness is its own notification (`ready =
//! "notify"`: containerd and etcd, the long starts the boot waits for),
//! with its ELF interpreter and the libraries it needs (DT_NEEDED,
//! resolved in the tree as the dynamic loader would: the first library
//! directory that has the name); the largest file first. Units with a
//! `[conditions]` table are left out (whether they run is decided at
//! boot). Only those: reading the other units' programs too (the small
//! tools the boot execs, the idle units' programs, many of them LZMA)
//! measured no better, and slower when it went on past the units' start
//! (README, "Steps of point 2").

use std::collections::BTreeSet;
use std::path::Path;

use berth_units::format::Ready;

use crate::error::io_at;
use crate::rootfs::{elf_needs, resolve, RootfsError};

/// The list's header: what reads it and what a line is.
const HEADER: &str = "# The programs of the daemons the boot waits for (units with ready = \"notify\")\n\
# and the libraries they map, in the order PID1 reads them into the page cache\n\
# at idle priority during early boot (one absolute path a line; written by\n\
# berth-image from the image's units, image-build/src/readahead.rs).\n";

/// Writes the list for the tree at `root` to its place in the tree and
/// returns the image paths it holds, in order.
///
/// Errors: a unit file that does not parse (its file and line), a program
/// or library missing from the tree, an ELF file goblin cannot read, or
/// the list's write.
pub fn write(root: &Path) -> Result<Vec<String>, RootfsError> {
    let files = list(root)?;
    let out = root.join(berth_layout::paths::BOOT_READAHEAD.trim_start_matches('/'));
    let mut text = String::from(HEADER);
    for f in &files {
        text.push_str(f);
        text.push('\n');
    }
    std::fs::write(&out, text).map_err(io_at(&out))?;
    Ok(files)
}

/// The list for the tree at `root`, without writing it (see the module's
/// doc for what is in it and in which order).
pub fn list(root: &Path) -> Result<Vec<String>, RootfsError> {
    let dir = root.join(berth_layout::paths::IMAGE_UNIT_DIR.trim_start_matches('/'));
    let loaded = berth_units::load(&[&dir]);
    if let Some(e) = loaded.errors.first() {
        return Err(RootfsError::BadUnit { message: e.to_string() });
    }
    let mut listed = BTreeSet::new();
    let mut sized: Vec<(u64, String)> = Vec::new();
    for unit in loaded.units.values() {
        let c = &unit.conditions;
        if unit.service.ready != Ready::Notify || c.first_boot.is_some() || !c.path_exists.is_empty() {
            continue;
        }
        let Some(program) = unit.service.exec.first() else { continue };
        for f in closure(root, program, &unit.file.display().to_string())? {
            if listed.insert(f.clone()) {
                let size = std::fs::metadata(root.join(f.trim_start_matches('/'))).map(|m| m.len()).unwrap_or(0);
                sized.push((size, f));
            }
        }
    }
    sized.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    Ok(sized.into_iter().map(|(_, f)| f).collect())
}

/// `program` (an image path) and what the dynamic loader maps for it, as
/// image paths of regular files (symbolic links followed in the tree).
fn closure(root: &Path, program: &str, unit: &str) -> Result<Vec<String>, RootfsError> {
    let mut todo = vec![program.to_string()];
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    while let Some(path) = todo.pop() {
        let host = resolve(root, &path)?;
        if !host.is_file() {
            return Err(RootfsError::MissingFile { path: format!("{path} (run by {unit})") });
        }
        let image = format!("/{}", host.strip_prefix(root).unwrap_or(&host).display());
        if !seen.insert(image.clone()) {
            continue;
        }
        out.push(image.clone());
        let bytes = std::fs::read(&host).map_err(io_at(&host))?;
        if !bytes.starts_with(b"\x7fELF") {
            continue;
        }
        todo.extend(elf_needs(root, &image, &bytes)?.into_iter().map(|(dep, _)| dep));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A root tree with the units' and programs' directories, removed
    /// when the returned guard drops.
    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("usr/lib/berth/units")).unwrap();
        std::fs::create_dir_all(t.path().join("usr/bin")).unwrap();
        t
    }

    fn unit(t: &Path, name: &str, body: &str) {
        std::fs::write(t.join(format!("usr/lib/berth/units/{name}.toml")), body).unwrap();
    }

    fn program(t: &Path, name: &str, size: usize) {
        std::fs::write(t.join("usr/bin").join(name), vec![b'#'; size]).unwrap();
    }

    #[test]
    fn the_notify_daemons_programs_are_listed_largest_first_and_nothing_else() {
        let dir = tree();
        let t = dir.path();
        program(t, "big", 3000);
        program(t, "small", 10);
        program(t, "tool", 5);
        program(t, "maybe", 1);
        std::os::unix::fs::symlink("small", t.join("usr/bin/alias")).unwrap();
        unit(t, "a", "[service]\nexec = [\"/usr/bin/alias\", \"-x\"]\nready = \"notify\"\n");
        unit(t, "b", "[service]\nexec = [\"/usr/bin/big\"]\nready = \"notify\"\n");
        unit(t, "c", "[service]\nexec = [\"/usr/bin/tool\"]\n");
        unit(
            t,
            "d",
            "[service]\nexec = [\"/usr/bin/maybe\"]\nready = \"notify\"\n[conditions]\npath_exists = \"/etc/x\"\n",
        );
        unit(t, "e", "[service]\nexec = [\"/usr/bin/small\"]\nready = \"notify\"\n");
        assert_eq!(list(t).unwrap(), ["/usr/bin/big", "/usr/bin/small"]);
        write(t).unwrap();
        let text = std::fs::read_to_string(t.join("usr/lib/berth/boot-readahead.list")).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(lines, ["/usr/bin/big", "/usr/bin/small"]);
    }

    #[test]
    fn a_missing_program_names_the_unit_file() {
        let dir = tree();
        let t = dir.path();
        unit(t, "a", "[service]\nexec = [\"/usr/bin/nothing\"]\nready = \"notify\"\n");
        let e = list(t).unwrap_err().to_string();
        assert!(e.contains("/usr/bin/nothing") && e.contains("a.toml"), "{e}");
    }

    #[test]
    fn a_bad_unit_file_is_an_error() {
        let dir = tree();
        let t = dir.path();
        unit(t, "a", "[service]\nexecc = [\"/usr/bin/x\"]\n");
        let e = list(t).unwrap_err().to_string();
        assert!(e.contains("a.toml"), "{e}");
    }
}
