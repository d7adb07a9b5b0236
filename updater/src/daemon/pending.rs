//! TEMPORARY SHIM, deleted at merge: the contracts of common8.md for the
//! parts other helpers write at the same time (H4 `config`, H2 `install`,
//! `fetch` and `system`, H1 `publish`), with the signatures the daemon
//! codes against. Nothing here is real: each function says so when called.
#![allow(dead_code, missing_docs)]

/// H4: `updater/src/config.rs`.
pub mod config {
    use std::path::Path;
    use std::time::Duration;

    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Config {
        pub gate: Gate,
        pub auto: Auto,
        pub fetch: Fetch,
    }
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Gate {
        pub deadline: Duration,
        pub retry: Duration,
        pub checks: Vec<Check>,
    }
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Check {
        pub name: String,
        pub exec: Vec<String>,
        pub timeout: Duration,
    }
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Auto {
        pub enabled: bool,
        pub source: Option<String>,
        pub interval: Duration,
        pub reboot: RebootPolicy,
        pub window: Option<Window>,
    }
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum RebootPolicy {
        Never,
        Immediately,
        Window,
    }
    /// A daily UTC window: from `start` to `end` after midnight (it may
    /// wrap past midnight).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Window {
        pub start: Duration,
        pub end: Duration,
    }
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Fetch {
        pub retries: u32,
    }
    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    pub struct ConfigError(pub String);

    impl Default for Config {
        fn default() -> Config {
            Config {
                gate: Gate { deadline: Duration::from_secs(300), retry: Duration::from_secs(2), checks: Vec::new() },
                auto: Auto {
                    enabled: false,
                    source: None,
                    interval: Duration::from_secs(3600),
                    reboot: RebootPolicy::Never,
                    window: None,
                },
                fetch: Fetch { retries: 5 },
            }
        }
    }

    pub fn load(_default: &Path, _etc: &Path) -> Result<Config, ConfigError> {
        Ok(Config::default())
    }
}

/// H2: `updater/src/install/`.
pub mod install {
    use std::io::Read;
    use std::time::Duration;

    use berth_layout::disk::Slot;

    use crate::bundle::KeyRing;
    use crate::state::AbState;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Step {
        Verify,
        RemoveEntry,
        WriteRoot,
        ReadBack,
        WriteKernel,
        RenameKernel,
        WriteEntry,
        RenameEntry,
        Done,
    }
    impl Step {
        pub fn name(self) -> &'static str {
            match self {
                Step::Verify => "verify",
                Step::RemoveEntry => "remove-entry",
                Step::WriteRoot => "write-root",
                Step::ReadBack => "read-back",
                Step::WriteKernel => "write-kernel",
                Step::RenameKernel => "rename-kernel",
                Step::WriteEntry => "write-entry",
                Step::RenameEntry => "rename-entry",
                Step::Done => "done",
            }
        }
        pub fn parse(s: &str) -> Option<Step> {
            use Step::*;
            [Verify, RemoveEntry, WriteRoot, ReadBack, WriteKernel, RenameKernel, WriteEntry, RenameEntry, Done]
                .into_iter()
                .find(|st| st.name() == s)
        }
    }
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Progress {
        pub step: Step,
        pub done: u64,
        pub total: u64,
    }
    #[derive(Clone, Debug, Default)]
    pub struct InstallContext {
        pub booted_version: String,
        pub arch: String,
        pub failed_here: Vec<String>,
        pub force: bool,
        pub pause_before: Option<Step>,
    }
    #[derive(Clone, Debug)]
    pub struct Installed {
        pub version: String,
        pub slot: Slot,
        pub entry: String,
        pub bytes: u64,
        pub elapsed: Duration,
    }
    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    pub struct InstallError(pub String);

    pub trait Target {}

    pub fn install(
        _source: impl Read,
        _keys: &KeyRing,
        _ctx: &InstallContext,
        _state: AbState,
        _target: &mut impl Target,
        _progress: &mut dyn FnMut(Progress),
    ) -> Result<Installed, InstallError> {
        Err(InstallError("the install engine is not merged yet (shim)".into()))
    }
}

/// H2: `updater/src/fetch.rs`.
pub mod fetch {
    use std::io::Read;

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    pub struct FetchError(pub String);

    pub fn open(source: &str, _retries: u32) -> Result<(Box<dyn Read + Send>, Option<u64>), FetchError> {
        let f = std::fs::File::open(source).map_err(|e| FetchError(format!("{source}: {e}")))?;
        let len = f.metadata().ok().map(|m| m.len());
        Ok((Box::new(f), len))
    }
}

/// H2: `updater/src/system/`: the real machine.
pub mod system {
    use super::install::Target;
    use crate::state::{AbState, FileOp};

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    pub struct SystemError(pub String);

    /// The boot disk's other slot and the ESP.
    pub struct RealTarget;
    impl Target for RealTarget {}

    pub fn open_target() -> Result<RealTarget, SystemError> {
        Err(SystemError("the system target is not merged yet (shim)".into()))
    }
    /// Loads the A/B state from the ESP's entries, /proc/cmdline and
    /// systemd-boot's EFI variables. NEEDED BY THE DAEMON: a
    /// LoaderBootCountPath naming a file that is no longer on the ESP (the
    /// entry was blessed during this boot; the variable stays until the
    /// next) loads as "not counted", not as an error: the daemon reads the
    /// state back after a bless, and loads it for status and installs.
    pub fn load_state() -> Result<AbState, SystemError> {
        Err(SystemError("the system target is not merged yet (shim)".into()))
    }
    /// Applies a plan (no payload ops) to the ESP: sync after each op.
    pub fn apply(_plan: &[FileOp], _target: &mut impl Target) -> Result<(), SystemError> {
        Err(SystemError("the system target is not merged yet (shim)".into()))
    }
}

/// H1: `updater/src/publish.rs`.
pub mod publish {
    use std::time::SystemTime;

    use crate::bundle::KeyRing;

    /// The metadata file in a published directory.
    pub const METADATA_FILE: &str = "metadata.json";

    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Release {
        pub version: String,
        pub arch: String,
        pub bundle: String,
        pub size: u64,
        pub sha256: String,
    }
    #[derive(Clone, Debug)]
    pub struct Metadata {
        pub releases: Vec<Release>,
    }
    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    pub struct PublishError(pub String);

    pub fn verify(_bytes: &[u8], _keys: &KeyRing, _now: SystemTime) -> Result<Metadata, PublishError> {
        Err(PublishError("update metadata is not merged yet (shim)".into()))
    }

    impl Metadata {
        /// The newest release for `arch` newer than `booted` and not in
        /// `failed`.
        pub fn candidate(&self, arch: &str, booted: &str, failed: &[String]) -> Option<&Release> {
            self.releases
                .iter()
                .rev()
                .find(|r| r.arch == arch && r.version.as_str() != booted && !failed.contains(&r.version))
        }
    }
}
