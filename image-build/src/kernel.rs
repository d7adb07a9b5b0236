//! The trimmed kernel: `make tinyconfig` + kernel-config/berth.config over
//! Debian's linux-source-6.1, built once per input hash and cached.
//!
//! Cache layout under `ctx.cache`:
//!
//! ```text
//! kernel/<key>/bzImage, config, build.log   one finished build (renamed into place whole)
//! kernel/<key>/modules/*.ko                 its modules (`=m` options), for stage 0's initramfs
//! kernel/work/<pkgversion>/linux-source-6.1 the extracted source, built in incrementally
//! kernel/work/<pkgversion>/build.log        the log of the last `make bzImage`
//! ```
//!
//! The key is a SHA-256 over the linux-source package version, the fragment's
//! bytes, [`OPTIMISED_FOR_SIZE`] and [`RECIPE_VERSION`]: the same inputs give
//! the same key, and a hit returns without touching the source tree.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::cmd::{self, CmdError};
use crate::context::Context;
use crate::error::{io_doing, IoError};

/// Bump this whenever the recipe below changes in a way that changes the
/// output (make targets, environment, the steps): it is part of the key.
const RECIPE_VERSION: &str = "3";

/// Top-level source directories built for size (`-Os`) although the kernel
/// as a whole is built for speed (`CONFIG_CC_OPTIMIZE_FOR_PERFORMANCE`,
/// `-O2`): device drivers and network protocols. Together they are half of
/// the kernel's code, and with them at `-O2` too the bzImage is 4.29 MiB,
/// over its 4 MiB budget; at `-Os` it is 3.95 MiB. The boot's time is in the
/// core (exec, page faults, page cache, EROFS, LZ4, dm-verity's hashing in
/// crypto/, the scheduler): `-O2` there alone made reboots 0.31 s shorter
/// under TCG, the same as `-O2` everywhere (kernel-config/README.md). The
/// list is part of the cache key.
const OPTIMISED_FOR_SIZE: &[&str] = &["drivers", "net"];

/// The line [`with_size_line`] adds to a listed directory's Makefile.
/// kbuild passes `subdir-ccflags-y` to every file in the directory and
/// below, after the global flags, and the last `-O` on gcc's command line
/// wins.
const SIZE_LINE: &str = "subdir-ccflags-y += -Os # berth: OPTIMISED_FOR_SIZE";

/// The Debian package that ships the kernel source, and what it installs.
const SOURCE_PACKAGE: &str = "linux-source-6.1";
const SOURCE_TARBALL: &str = "/usr/src/linux-source-6.1.tar.xz";
/// The top directory inside the tarball.
const SOURCE_TOPDIR: &str = "linux-source-6.1";
/// The fragment, in `ctx.kernel_config_dir()`.
const FRAGMENT: &str = "berth.config";
const ARCH: &str = "ARCH=x86_64";

/// What installs the source and everything the kernel build needs.
pub const INSTALL_HINT: &str =
    "apt-get install linux-source-6.1 build-essential bc bison flex libelf-dev libssl-dev cpio xz-utils";

/// Fixed build identity, so the same inputs give the same bzImage
/// (`uname -v` reads `#1 SMP <timestamp>`).
const BUILD_TIMESTAMP: &str = "Thu Jan  1 00:00:00 UTC 1970";
const BUILD_USER: &str = "berth";
const BUILD_HOST: &str = "berth";
const BUILD_VERSION: &str = "1";

/// A built kernel in the cache.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// `<cache>/kernel/<key>/bzImage`
    pub bzimage: PathBuf,
    /// The final `.config` it was built with.
    pub config: PathBuf,
    /// `<cache>/kernel/<key>/modules`: the modules the fragment builds
    /// (`=m`), stripped of debug sections; empty when it builds none.
    pub modules: PathBuf,
    /// The cache key (hex SHA-256 of the inputs).
    pub key: String,
    /// The linux-source-6.1 package version it was built from.
    pub version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{package} is not installed ({detail}); install it and the kernel build dependencies with:\n  {hint}")]
    SourceMissing { package: &'static str, detail: String, hint: &'static str },
    #[error("kernel: {0}")]
    Io(#[from] IoError),
    #[error("kernel config fragment {}:{line}: {problem}: `{text}`", .path.display())]
    FragmentSyntax { path: PathBuf, line: usize, text: String, problem: &'static str },
    #[error("kernel: {step} (in {}) failed: {source}", .dir.display())]
    Step { step: &'static str, dir: PathBuf, source: CmdError },
    #[error(
        "kernel config {} does not match the fragment {}: {} option(s) did not end up as asked \
         (merge_config drops an option whose dependencies are not met: add the missing `depends on` \
         symbols of each one to the fragment):\n{}",
        .config.display(), .fragment.display(), .mismatches.len(), list(.mismatches)
    )]
    Unverified { fragment: PathBuf, config: PathBuf, mismatches: Vec<Mismatch> },
}

fn list(mismatches: &[Mismatch]) -> String {
    mismatches.iter().map(|m| format!("  {m}")).collect::<Vec<_>>().join("\n")
}

/// What the fragment asks for one option.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Want {
    /// `CONFIG_X=value` (the value as written: `y`, `"-berth"`, `64`).
    Value(String),
    /// `# CONFIG_X is not set`
    Unset,
}

impl fmt::Display for Want {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Want::Value(v) => f.write_str(v),
            Want::Unset => f.write_str("not set"),
        }
    }
}

/// One option of the fragment that the final .config does not honour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    pub option: String,
    pub wanted: Want,
    /// The value in the final .config, `None` when it is not set there.
    pub found: Option<String>,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let found = self.found.as_deref().unwrap_or("not set");
        write!(f, "{}: wanted {}, got {}", self.option, self.wanted, found)
    }
}

/// A fragment line that is not an option: (1-based line, text, problem).
type SyntaxError = (usize, String, &'static str);

/// Parses a config fragment: `CONFIG_X=value` and `# CONFIG_X is not set`
/// lines; blank lines and other `#` lines are comments. Anything else, and
/// an option given twice, is an error (merge_config would ignore it or let
/// the last one win silently).
pub fn parse_fragment(text: &str) -> Result<BTreeMap<String, Want>, SyntaxError> {
    let mut wants = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let err = |problem| (i + 1, raw.to_string(), problem);
        let (name, want) = if line.is_empty() {
            continue;
        } else if let Some(name) = unset_option(line) {
            (name, Want::Unset)
        } else if line.starts_with('#') {
            continue;
        } else if let Some((name, value)) = line.split_once('=') {
            if !is_option_name(name) {
                return Err(err("not a CONFIG_ option name"));
            }
            if value.is_empty() {
                return Err(err("empty value (write `# CONFIG_X is not set` to disable an option)"));
            }
            (name, Want::Value(value.to_string()))
        } else {
            return Err(err("expected `CONFIG_X=value` or `# CONFIG_X is not set`"));
        };
        if wants.insert(name.to_string(), want).is_some() {
            return Err(err("option given twice"));
        }
    }
    Ok(wants)
}

/// `# CONFIG_X is not set` -> `CONFIG_X`.
fn unset_option(line: &str) -> Option<&str> {
    let name = line.strip_prefix('#')?.trim_start().strip_suffix(" is not set")?.trim_end();
    is_option_name(name).then_some(name)
}

fn is_option_name(name: &str) -> bool {
    name.strip_prefix("CONFIG_")
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
}

/// The options a .config sets, with their values (`is not set` lines and
/// comments are not settings).
pub fn parse_config(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| l.starts_with("CONFIG_"))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Every option of the fragment that the final config does not honour, in
/// name order.
pub fn verify(wants: &BTreeMap<String, Want>, config: &BTreeMap<String, String>) -> Vec<Mismatch> {
    let mut out = Vec::new();
    for (option, wanted) in wants {
        let found = config.get(option);
        let ok = match wanted {
            Want::Value(v) => found == Some(v),
            Want::Unset => found.is_none(),
        };
        if !ok {
            out.push(Mismatch { option: option.clone(), wanted: wanted.clone(), found: found.cloned() });
        }
    }
    out
}

/// The cache key: hex SHA-256 over the recipe version, the source package
/// version, the fragment and the directories built for size
/// ([`OPTIMISED_FOR_SIZE`], NUL-separated), each length-prefixed so no two
/// input sets collide by concatenation.
pub fn cache_key(package_version: &str, fragment: &[u8], size_dirs: &[&str]) -> String {
    let size_dirs = size_dirs.join("\0");
    let mut h = Sha256::new();
    h.update(b"berth-kernel\0");
    for part in [RECIPE_VERSION.as_bytes(), package_version.as_bytes(), fragment, size_dirs.as_bytes()] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Builds the kernel, or returns the cached one for the same inputs.
pub fn build(ctx: &Context) -> Result<Kernel, KernelError> {
    let version = source_version()?;
    let fragment_path = ctx.kernel_config_dir().join(FRAGMENT);
    let fragment =
        std::fs::read(&fragment_path).map_err(io_doing("read the kernel config fragment", &fragment_path))?;
    // A fragment that does not parse fails before anything is built.
    let wants = parse_fragment(&String::from_utf8_lossy(&fragment)).map_err(|(line, text, problem)| {
        KernelError::FragmentSyntax { path: fragment_path.clone(), line, text, problem }
    })?;

    let key = cache_key(&version, &fragment, OPTIMISED_FOR_SIZE);
    let root = ctx.cache.join("kernel");
    let entry = root.join(&key);
    let kernel = Kernel {
        bzimage: entry.join("bzImage"),
        config: entry.join("config"),
        modules: entry.join("modules"),
        key: key.clone(),
        version,
    };
    if kernel.bzimage.is_file() && kernel.config.is_file() && kernel.modules.is_dir() {
        eprintln!("kernel: cache hit {}", kernel.key);
        return Ok(kernel);
    }

    let work = root.join("work");
    let src = source_tree(&work, &kernel.version)?;
    let log = work.join(&kernel.version).join("build.log");
    eprintln!(
        "kernel: building {SOURCE_PACKAGE} {} with {} (key {key}; log: {})",
        kernel.version,
        fragment_path.display(),
        log.display()
    );

    configure(&src, &fragment_path, &wants)?;
    mark_optimised_for_size(&src, OPTIMISED_FOR_SIZE)?;

    let jobs = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut make = make(&src);
    make.arg(format!("-j{jobs}"))
        .arg("bzImage")
        .arg("modules")
        .env("KBUILD_BUILD_TIMESTAMP", BUILD_TIMESTAMP)
        .env("KBUILD_BUILD_USER", BUILD_USER)
        .env("KBUILD_BUILD_HOST", BUILD_HOST)
        .env("KBUILD_BUILD_VERSION", BUILD_VERSION);
    crate::progress::spin(format!("kernel: make -j{jobs} bzImage modules"), || cmd::run_logged(&mut make, &log))
        .map_err(step("make bzImage modules", &src))?;

    // Into a temporary directory first, then renamed: the entry appears whole or not at all.
    remove_leftovers(&root);
    let tmp = root.join(format!(".tmp-{key}-{}", std::process::id()));
    let result = fill_entry(&tmp, &src, &log).and_then(|()| {
        std::fs::rename(&tmp, &entry).or_else(|e| {
            // Another build of the same key finished first: keep its entry.
            if kernel.bzimage.is_file() && kernel.config.is_file() && kernel.modules.is_dir() {
                Ok(())
            } else {
                Err(io_doing("move the finished kernel into the cache at", &entry)(e).into())
            }
        })
    });
    let _ = std::fs::remove_dir_all(&tmp);
    result?;
    eprintln!("kernel: built {} ({} bytes, key {})", kernel.bzimage.display(), file_size(&kernel.bzimage), kernel.key);
    Ok(kernel)
}

/// Temporary entries of builds killed between copying and renaming.
fn remove_leftovers(root: &Path) {
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with(".tmp-") {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn fill_entry(tmp: &Path, src: &Path, log: &Path) -> Result<(), KernelError> {
    let _ = std::fs::remove_dir_all(tmp);
    std::fs::create_dir_all(tmp).map_err(io_doing("create", tmp))?;
    for (from, to) in [
        (src.join("arch/x86/boot/bzImage"), "bzImage"),
        (src.join(".config"), "config"),
        (log.to_path_buf(), "build.log"),
    ] {
        std::fs::copy(&from, tmp.join(to)).map_err(io_doing("copy the build output", &from))?;
    }
    // kbuild lists the modules it built in modules.order, one path per line.
    let modules = tmp.join("modules");
    std::fs::create_dir_all(&modules).map_err(io_doing("create", &modules))?;
    let order = src.join("modules.order");
    let list = std::fs::read_to_string(&order).map_err(io_doing("read", &order))?;
    for line in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let built = src.join(line.trim_end_matches(".o").trim_end_matches(".ko")).with_extension("ko");
        let name = built.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        let to = modules.join(name);
        let mut strip = Command::new("strip");
        strip.arg("--strip-debug").arg("-o").arg(&to).arg(&built);
        cmd::run(&mut strip).map_err(step("strip --strip-debug", src))?;
    }
    Ok(())
}

/// `make tinyconfig`, the fragment merged over it, `make olddefconfig`, and
/// the check that every option of the fragment survived.
fn configure(src: &Path, fragment_path: &Path, wants: &BTreeMap<String, Want>) -> Result<(), KernelError> {
    let task = crate::progress::spinner("kernel: configuring (tinyconfig + fragment)");
    cmd::run(make(src).arg("tinyconfig")).map_err(step("make tinyconfig", src))?;
    let mut merge = Command::new(src.join("scripts/kconfig/merge_config.sh"));
    merge.current_dir(src).env("ARCH", "x86_64").arg("-m").arg(".config").arg(fragment_path);
    cmd::run(&mut merge).map_err(step("merge_config.sh", src))?;
    cmd::run(make(src).arg("olddefconfig")).map_err(step("make olddefconfig", src))?;

    let config_path = src.join(".config");
    let config = std::fs::read_to_string(&config_path).map_err(io_doing("read", &config_path))?;
    let mismatches = verify(wants, &parse_config(&config));
    if !mismatches.is_empty() {
        return Err(KernelError::Unverified { fragment: fragment_path.to_path_buf(), config: config_path, mismatches });
    }
    task.finish();
    Ok(())
}

/// Puts [`SIZE_LINE`] at the end of the Makefile of each directory in
/// `dirs` and takes it out of every other top-level Makefile: the source tree
/// is reused between builds, so a directory taken off the list goes back to
/// the kernel's own flags. A Makefile is only written when it changes.
fn mark_optimised_for_size(src: &Path, dirs: &[&str]) -> Result<(), KernelError> {
    // A listed directory that this source does not have is an error before
    // any Makefile is touched.
    for dir in dirs {
        let makefile = src.join(dir).join("Makefile");
        if !makefile.is_file() {
            return Err(io_doing("find", &makefile)(std::io::Error::from(std::io::ErrorKind::NotFound)).into());
        }
    }
    let entries = std::fs::read_dir(src).map_err(io_doing("list", src))?;
    for entry in entries {
        let entry = entry.map_err(io_doing("list", src))?;
        let makefile = entry.path().join("Makefile");
        if !makefile.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&makefile).map_err(io_doing("read", &makefile))?;
        let wanted = dirs.iter().any(|d| entry.file_name() == **d);
        let new = with_size_line(&text, wanted);
        if new != text {
            std::fs::write(&makefile, new).map_err(io_doing("write", &makefile))?;
        }
    }
    Ok(())
}

/// `makefile` without [`SIZE_LINE`], and with it once at the end when
/// `wanted`; every other line as it was.
fn with_size_line(makefile: &str, wanted: bool) -> String {
    let mut out: String = makefile.split_inclusive('\n').filter(|l| l.trim_end() != SIZE_LINE).collect();
    if wanted {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(SIZE_LINE);
        out.push('\n');
    }
    out
}

/// `make ARCH=x86_64` in `src`, shielded from the caller's make and kbuild
/// environment.
fn make(src: &Path) -> Command {
    let mut c = Command::new("make");
    c.current_dir(src).arg(ARCH).env("LC_ALL", "C");
    for var in [
        "MAKEFLAGS",
        "MFLAGS",
        "MAKELEVEL",
        "KBUILD_OUTPUT",
        "KCONFIG_CONFIG",
        "KCONFIG_ALLCONFIG",
        "CROSS_COMPILE",
        "O",
    ] {
        c.env_remove(var);
    }
    c
}

/// The installed linux-source-6.1 version; an error with the install line if
/// the package or its tarball is missing.
fn source_version() -> Result<String, KernelError> {
    let missing = |detail: String| KernelError::SourceMissing { package: SOURCE_PACKAGE, detail, hint: INSTALL_HINT };
    let mut query = Command::new("dpkg-query");
    query.args(["-W", "-f=${db:Status-Status} ${Version}", SOURCE_PACKAGE]);
    let out = match cmd::stdout(&mut query) {
        Ok(out) => out,
        Err(CmdError::Failed { .. }) => return Err(missing("dpkg does not know the package".to_string())),
        Err(e) => return Err(KernelError::Step { step: "dpkg-query", dir: PathBuf::from("."), source: e }),
    };
    let (status, version) = out.trim().split_once(' ').unwrap_or((out.trim(), ""));
    if status != "installed" || version.is_empty() {
        return Err(missing(format!("dpkg status: {}", out.trim())));
    }
    if !Path::new(SOURCE_TARBALL).is_file() {
        return Err(missing(format!("{SOURCE_TARBALL} is missing")));
    }
    Ok(version.to_string())
}

/// The extracted source for `version` under `work`: reused when present
/// (incremental builds), else extracted beside it and renamed into place.
/// Extractions of other versions, and leftovers of killed extractions, are
/// removed.
fn source_tree(work: &Path, version: &str) -> Result<PathBuf, KernelError> {
    let dir = work.join(version);
    let src = dir.join(SOURCE_TOPDIR);
    std::fs::create_dir_all(work).map_err(io_doing("create", work))?;
    if let Ok(entries) = std::fs::read_dir(work) {
        for e in entries.flatten() {
            if e.file_name() != *version {
                eprintln!("kernel: removing stale work directory {}", e.path().display());
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    if src.join("Makefile").is_file() {
        return Ok(src);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let tmp = work.join(format!(".extract-{version}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io_doing("create", &tmp))?;
    eprintln!("kernel: extracting {SOURCE_TARBALL} into {}", dir.display());
    let mut tar = Command::new("tar");
    tar.arg("-xJf").arg(SOURCE_TARBALL).arg("-C").arg(&tmp);
    let extracted = crate::progress::spin("kernel: extracting the source", || cmd::run(&mut tar))
        .map_err(step("extract the source", &tmp))
        .and_then(|_| {
            std::fs::rename(&tmp, &dir).map_err(|e| io_doing("move the extracted source to", &dir)(e).into())
        });
    if extracted.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    extracted?;
    Ok(src)
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn step<'a>(step: &'static str, dir: &'a Path) -> impl FnOnce(CmdError) -> KernelError + 'a {
    move |source| KernelError::Step { step, dir: dir.to_path_buf(), source }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAGMENT: &str = "\
# a comment
CONFIG_EROFS_FS=y
CONFIG_LOCALVERSION=\"-berth\"

# CONFIG_MODULES is not set
";

    fn wants(text: &str) -> BTreeMap<String, Want> {
        parse_fragment(text).expect("fragment parses")
    }

    #[test]
    fn fragment_lines_parse() {
        let w = wants(FRAGMENT);
        assert_eq!(w.len(), 3);
        assert_eq!(w["CONFIG_EROFS_FS"], Want::Value("y".into()));
        assert_eq!(w["CONFIG_LOCALVERSION"], Want::Value("\"-berth\"".into()));
        assert_eq!(w["CONFIG_MODULES"], Want::Unset);
    }

    #[test]
    fn a_config_that_honours_the_fragment_verifies() {
        let config = "CONFIG_EROFS_FS=y\nCONFIG_LOCALVERSION=\"-berth\"\n# CONFIG_MODULES is not set\nCONFIG_64BIT=y\n";
        assert_eq!(verify(&wants(FRAGMENT), &parse_config(config)), vec![]);
    }

    #[test]
    fn a_dropped_option_is_reported_by_name() {
        // merge_config dropped EROFS (its menu was off): the .config says "is not set".
        let config = "# CONFIG_EROFS_FS is not set\nCONFIG_LOCALVERSION=\"-berth\"\n";
        let m = verify(&wants(FRAGMENT), &parse_config(config));
        assert_eq!(
            m,
            vec![Mismatch { option: "CONFIG_EROFS_FS".into(), wanted: Want::Value("y".into()), found: None }]
        );
        assert_eq!(m[0].to_string(), "CONFIG_EROFS_FS: wanted y, got not set");
        let err = KernelError::Unverified { fragment: "f".into(), config: "c".into(), mismatches: m };
        assert!(err.to_string().contains("CONFIG_EROFS_FS: wanted y, got not set"), "{err}");
    }

    #[test]
    fn a_different_value_is_reported() {
        let config = "CONFIG_EROFS_FS=m\nCONFIG_LOCALVERSION=\"\"\n";
        let m = verify(&wants(FRAGMENT), &parse_config(config));
        let names: Vec<&str> = m.iter().map(|m| m.option.as_str()).collect();
        assert_eq!(names, ["CONFIG_EROFS_FS", "CONFIG_LOCALVERSION"]);
        assert_eq!(m[0].found.as_deref(), Some("m"));
    }

    #[test]
    fn an_option_that_must_be_unset_but_is_set_is_reported() {
        let config = "CONFIG_EROFS_FS=y\nCONFIG_LOCALVERSION=\"-berth\"\nCONFIG_MODULES=y\n";
        let m = verify(&wants(FRAGMENT), &parse_config(config));
        assert_eq!(m, vec![Mismatch { option: "CONFIG_MODULES".into(), wanted: Want::Unset, found: Some("y".into()) }]);
        assert_eq!(m[0].to_string(), "CONFIG_MODULES: wanted not set, got y");
    }

    #[test]
    fn is_not_set_in_the_config_counts_as_unset() {
        let w = wants("# CONFIG_MODULES is not set\n");
        assert!(verify(&w, &parse_config("# CONFIG_MODULES is not set\n")).is_empty());
        assert!(verify(&w, &parse_config("")).is_empty());
    }

    #[test]
    fn bad_fragment_lines_are_errors_with_line_numbers() {
        assert_eq!(parse_fragment("CONFIG_A=y\nCONFIG_B y\n").unwrap_err().0, 2);
        assert_eq!(parse_fragment("EROFS_FS=y\n").unwrap_err().0, 1);
        assert_eq!(parse_fragment("CONFIG_A=\n").unwrap_err().0, 1);
        let (line, _, problem) = parse_fragment("CONFIG_A=y\n# CONFIG_A is not set\n").unwrap_err();
        assert_eq!((line, problem), (2, "option given twice"));
    }

    #[test]
    fn a_missing_source_says_what_to_install() {
        let err = KernelError::SourceMissing { package: SOURCE_PACKAGE, detail: "x".into(), hint: INSTALL_HINT };
        let text = err.to_string();
        assert!(text.contains("linux-source-6.1 is not installed"), "{text}");
        assert!(text.contains("apt-get install linux-source-6.1 build-essential bc bison flex"), "{text}");
    }

    #[test]
    fn the_cache_key_follows_every_input() {
        let dirs = &["drivers", "net"];
        let base = cache_key("6.1.192-3", FRAGMENT.as_bytes(), dirs);
        assert_eq!(base.len(), 64);
        assert_eq!(base, cache_key("6.1.192-3", FRAGMENT.as_bytes(), dirs), "same inputs, same key");
        let changed = format!("{FRAGMENT}CONFIG_TUN=y\n");
        assert_ne!(base, cache_key("6.1.192-3", changed.as_bytes(), dirs), "fragment changed");
        assert_ne!(base, cache_key("6.1.193-1", FRAGMENT.as_bytes(), dirs), "source version changed");
        assert_ne!(base, cache_key("6.1.192-3", FRAGMENT.as_bytes(), &["drivers"]), "size list changed");
        // Length prefixes: moving bytes between the fields changes the key.
        assert_ne!(cache_key("ab", b"c", dirs), cache_key("a", b"bc", dirs));
    }

    #[test]
    fn the_size_line_is_added_once_and_taken_out_again() {
        let makefile = "obj-y += a/\nobj-y += b/";
        let marked = with_size_line(makefile, true);
        assert_eq!(marked, format!("obj-y += a/\nobj-y += b/\n{SIZE_LINE}\n"));
        assert_eq!(with_size_line(&marked, true), marked, "a second build adds nothing");
        assert_eq!(with_size_line(&marked, false), "obj-y += a/\nobj-y += b/\n", "taken off the list");
        assert_eq!(with_size_line(makefile, false), makefile, "an unlisted Makefile is left as it is");
    }

    #[test]
    fn the_listed_directories_are_built_for_size_and_no_other() {
        let src = tempfile::tempdir().expect("tempdir");
        for dir in ["drivers", "net", "mm"] {
            std::fs::create_dir(src.path().join(dir)).expect("mkdir");
            std::fs::write(src.path().join(dir).join("Makefile"), "obj-y += x.o\n").expect("write");
        }
        mark_optimised_for_size(src.path(), &["drivers", "net"]).expect("marked");
        mark_optimised_for_size(src.path(), &["drivers"]).expect("marked again");
        let read = |d: &str| std::fs::read_to_string(src.path().join(d).join("Makefile")).expect("read");
        assert_eq!(read("drivers"), format!("obj-y += x.o\n{SIZE_LINE}\n"));
        assert_eq!(read("net"), "obj-y += x.o\n");
        assert_eq!(read("mm"), "obj-y += x.o\n");
        let err = mark_optimised_for_size(src.path(), &["sound"]).expect_err("no sound/ here");
        assert!(err.to_string().contains("sound/Makefile"), "{err}");
    }
}
