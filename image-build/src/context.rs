//! Where the build reads its inputs and writes its outputs.

use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct Context {
    /// The repository checkout (holds `kernel-config/`, `image-build/`).
    pub repo: PathBuf,
    /// Build outputs: `target/berth/` unless `--out` says otherwise.
    pub out: PathBuf,
    /// Caches kept across clones (kernel builds, downloaded packages):
    /// `$BERTH_CACHE`, default `/var/cache/berth`.
    pub cache: PathBuf,
}

impl Context {
    pub fn new(out: Option<PathBuf>) -> Context {
        let repo = repo_root();
        let out = out.unwrap_or_else(|| repo.join("target").join("berth"));
        let cache =
            std::env::var_os("BERTH_CACHE").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/cache/berth"));
        Context { repo, out, cache }
    }

    pub fn kernel_config_dir(&self) -> PathBuf {
        self.repo.join("kernel-config")
    }

    pub fn image_build_dir(&self) -> PathBuf {
        self.repo.join("image-build")
    }

    pub fn qcow2(&self) -> PathBuf {
        self.out.join("berth.qcow2")
    }

    pub fn raw(&self) -> PathBuf {
        self.out.join("berth.raw")
    }

    /// The disk for drives with 4096-byte logical sectors ("4Kn").
    pub fn raw_4kn(&self) -> PathBuf {
        self.out.join("berth-4kn.raw")
    }

    pub fn qcow2_4kn(&self) -> PathBuf {
        self.out.join("berth-4kn.qcow2")
    }
}

/// The workspace root: this crate's parent directory.
fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or_else(|| manifest.to_path_buf())
}
