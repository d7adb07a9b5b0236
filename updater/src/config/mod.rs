//! The updater's settings: the health gate that blesses a boot, the
//! deadline after which PID1 reboots a counted boot that is not blessed,
//! the automatic mode and the download retries.
//!
//! Two TOML files: the image's default ([`UPDATER_DEFAULT_CONFIG`]) and the
//! administrator's ([`UPDATER_CONFIG`]), either of which may be missing.
//! They are merged key by key, the /etc file winning per key; a
//! `[[gate.check]]` list in /etc replaces the image's whole list. With
//! neither file the values are [`Config::default`]. The shape:
//!
//! ```toml
//! [gate]
//! deadline = "5m"          # a counted boot not blessed by then: PID1 reboots
//! retry = "2s"             # between rounds of checks
//! [[gate.check]]           # every check must exit 0
//! name = "containerd"
//! exec = ["/usr/bin/ctr", "version"]
//! timeout = "10s"          # optional, 10s
//! [auto]
//! enabled = false
//! source = "http://host/berth/"   # the published directory
//! interval = "1h"
//! reboot = "never"         # never | immediately | window
//! window = "02:00-04:00"   # UTC, daily, for reboot = "window"
//! [fetch]
//! retries = 5              # resumes of a dropped download (HTTP Range)
//! [reboot_lock]            # coordinated reboots (Flatcar's locksmith idea)
//! strategy = "off"         # off | etcd-lock: take a slot of the etcd
//!                          # semaphore before rebooting into an update
//! max = 1                  # hosts rebooting at once (the first host's
//!                          # value is kept in etcd and wins)
//! ttl = "10m"              # the slot's lease: outlives a reboot
//! endpoints = ["http://127.0.0.1:2379"]
//! ```
//!
//! Durations are humantime's (`"500ms"`, `"20s"`, `"5m"`, `"1h 30m"`),
//! with a unit and above zero. Every problem is a [`ConfigError`] naming the
//! file, the line and the key path (`gate.check[1].timeout`), from toml's
//! spans. PID1 links this module (for the deadline): nothing here panics.
//!
//! [`UPDATER_DEFAULT_CONFIG`]: berth_layout::paths::UPDATER_DEFAULT_CONFIG
//! [`UPDATER_CONFIG`]: berth_layout::paths::UPDATER_CONFIG

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The timeout of a `[[gate.check]]` that names none.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// All the updater's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub gate: Gate,
    pub auto: Auto,
    pub fetch: Fetch,
    pub reboot_lock: RebootLock,
}

/// `[reboot_lock]`: whether a reboot into an installed update first takes
/// a slot of the etcd semaphore (`berth_cluster::reboot_lock`), released
/// once the new boot is blessed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebootLock {
    pub strategy: RebootStrategy,
    /// Hosts rebooting at once (at least 1).
    pub max: u32,
    /// The slot's lease TTL (whole seconds, at least 2 s).
    pub ttl: Duration,
    /// etcd's client URLs.
    pub endpoints: Vec<String>,
}

/// How reboots are coordinated (Flatcar's `REBOOT_STRATEGY` words).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebootStrategy {
    /// Not coordinated: the reboot policy alone decides.
    Off,
    /// A slot of the etcd semaphore first.
    EtcdLock,
}

impl FromStr for RebootStrategy {
    type Err = String;

    /// `off` or `etcd-lock`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(RebootStrategy::Off),
            "etcd-lock" => Ok(RebootStrategy::EtcdLock),
            _ => Err(format!("unknown reboot strategy {s:?} (expected off or etcd-lock)")),
        }
    }
}

impl fmt::Display for RebootStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RebootStrategy::Off => "off",
            RebootStrategy::EtcdLock => "etcd-lock",
        })
    }
}

/// `[gate]`: when a boot counts as healthy, and how long it may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    /// A counted boot (systemd-boot's `LoaderBootCountPath` is set) that is
    /// not blessed this long after PID1 started is rebooted by PID1, so it
    /// spends one of its tries (Automatic Boot Assessment).
    pub deadline: Duration,
    /// The pause between two rounds of checks.
    pub retry: Duration,
    /// The checks, all of which must exit 0 in one round.
    pub checks: Vec<Check>,
}

/// One `[[gate.check]]`: a command that exits 0 when its part is healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Unique in the list; names the check in logs and `status`.
    pub name: String,
    /// argv, not a shell line; `exec[0]` is an absolute path.
    pub exec: Vec<String>,
    /// Killed and counted as failed after this long.
    pub timeout: Duration,
}

/// `[auto]`: the automatic mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auto {
    pub enabled: bool,
    /// The published directory (`berth-image publish`): a path or an
    /// http(s):// URL. Required when `enabled`.
    pub source: Option<String>,
    /// How often to look for a new version.
    pub interval: Duration,
    /// When to reboot into an installed version.
    pub reboot: RebootPolicy,
    /// The daily reboot window; required for [`RebootPolicy::Window`].
    pub window: Option<Window>,
}

/// `[fetch]`: downloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    /// How many times a dropped download is resumed (HTTP Range).
    pub retries: u32,
}

/// When the automatic mode reboots into a version it installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebootPolicy {
    /// Never: the new version boots at the next reboot, whoever makes it.
    Never,
    /// As soon as the install is done.
    Immediately,
    /// Inside the daily [`Window`].
    Window,
}

impl FromStr for RebootPolicy {
    type Err = String;

    /// `never`, `immediately` or `window`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "never" => Ok(RebootPolicy::Never),
            "immediately" => Ok(RebootPolicy::Immediately),
            "window" => Ok(RebootPolicy::Window),
            _ => Err(format!("unknown reboot policy {s:?} (expected never, immediately or window)")),
        }
    }
}

impl fmt::Display for RebootPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RebootPolicy::Never => "never",
            RebootPolicy::Immediately => "immediately",
            RebootPolicy::Window => "window",
        })
    }
}

const MINUTES_PER_DAY: u16 = 24 * 60;

/// A daily time window in UTC, `"HH:MM-HH:MM"`: from the start minute
/// (included) to the end minute (excluded). It may wrap past midnight
/// (`"22:00-02:00"`); start and end differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Minutes after midnight UTC, below 1440.
    start: u16,
    end: u16,
}

impl Window {
    /// The window from `start` to `end`, in minutes after midnight UTC;
    /// `None` when either is not below 1440 or they are equal.
    pub fn new(start: u16, end: u16) -> Option<Window> {
        (start < MINUTES_PER_DAY && end < MINUTES_PER_DAY && start != end).then_some(Window { start, end })
    }

    /// Whether the minute of the day (UTC) `minute` is inside.
    pub fn contains_minute(&self, minute: u16) -> bool {
        if self.start < self.end {
            self.start <= minute && minute < self.end
        } else {
            minute >= self.start || minute < self.end
        }
    }

    /// How long from `now` until the window is open: zero inside it.
    pub fn wait(&self, now: SystemTime) -> Duration {
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let of_day = secs % 86_400;
        let minute = u16::try_from(of_day / 60).unwrap_or(0);
        if self.contains_minute(minute) {
            return Duration::ZERO;
        }
        let start = u64::from(self.start) * 60;
        Duration::from_secs((start + 86_400 - of_day) % 86_400)
    }
}

impl FromStr for Window {
    type Err = String;

    /// `"HH:MM-HH:MM"`, two digits each, 24-hour clock.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            |why: &str| format!("invalid window {s:?}: {why} (expected \"HH:MM-HH:MM\" in UTC, e.g. \"02:00-04:00\")");
        let time = |t: &str| -> Option<u16> {
            let (h, m) = t.split_once(':')?;
            let two_digits = |x: &str| x.len() == 2 && x.bytes().all(|b| b.is_ascii_digit());
            if !two_digits(h) || !two_digits(m) {
                return None;
            }
            let (h, m) = (h.parse::<u16>().ok()?, m.parse::<u16>().ok()?);
            (h < 24 && m < 60).then_some(h * 60 + m)
        };
        let (a, b) = s.split_once('-').ok_or_else(|| bad("no '-' between start and end"))?;
        let start = time(a).ok_or_else(|| bad(&format!("{a:?} is not a time HH:MM")))?;
        let end = time(b).ok_or_else(|| bad(&format!("{b:?} is not a time HH:MM")))?;
        Window::new(start, end).ok_or_else(|| bad("start and end are the same"))
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (s, e) = (self.start, self.end);
        write!(f, "{:02}:{:02}-{:02}:{:02}", s / 60, s % 60, e / 60, e % 60)
    }
}

impl Default for Config {
    /// The built-in values: deadline 5m, retry 2s, checks "containerd
    /// answers" (`ctr version`) and "etcd is healthy" (`etcdctl endpoint
    /// health` on the image's etcd unit's client URL); automatic mode off,
    /// interval 1h, reboot never; 5 download retries; reboot lock off
    /// (max 1, ttl 10m, etcd at http://127.0.0.1:2379).
    fn default() -> Self {
        let argv = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect();
        Config {
            gate: Gate {
                deadline: Duration::from_secs(5 * 60),
                retry: Duration::from_secs(2),
                checks: vec![
                    Check {
                        name: "containerd".into(),
                        exec: argv(&["/usr/bin/ctr", "version"]),
                        timeout: DEFAULT_CHECK_TIMEOUT,
                    },
                    Check {
                        name: "etcd".into(),
                        exec: argv(&["/usr/bin/etcdctl", "--endpoints", "http://127.0.0.1:2379", "endpoint", "health"]),
                        timeout: DEFAULT_CHECK_TIMEOUT,
                    },
                ],
            },
            auto: Auto {
                enabled: false,
                source: None,
                interval: Duration::from_secs(3600),
                reboot: RebootPolicy::Never,
                window: None,
            },
            fetch: Fetch { retries: 5 },
            reboot_lock: RebootLock {
                strategy: RebootStrategy::Off,
                max: 1,
                ttl: Duration::from_secs(600),
                endpoints: vec!["http://127.0.0.1:2379".into()],
            },
        }
    }
}

/// A problem with a settings file: `FILE:LINE: key KEY: what`, e.g.
/// `/etc/berth/updater.toml:2: key gate.deadline: invalid duration "5x": ...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}", self.place(), self.kind)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; `None` when the problem has no place in the text (the file
    /// cannot be read).
    pub line: Option<usize>,
    /// The key path (`auto.reboot`, `gate.check[0].exec`); `None` for a
    /// syntax error or an unreadable file.
    pub key: Option<String>,
    pub kind: ConfigErrorKind,
}

impl ConfigError {
    fn place(&self) -> String {
        let mut s = self.file.display().to_string();
        if let Some(line) = self.line {
            s.push_str(&format!(":{line}"));
        }
        if let Some(key) = &self.key {
            s.push_str(&format!(": key {key}"));
        }
        s + ": "
    }
}

/// What is wrong, without the place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigErrorKind {
    #[error("cannot read: {0}")]
    Io(String),
    /// Not TOML: toml's message.
    #[error("{0}")]
    Syntax(String),
    #[error("unknown key")]
    UnknownKey,
    #[error("missing key {0}")]
    MissingKey(&'static str),
    #[error("expected {expected}, found {found}")]
    WrongType { expected: &'static str, found: String },
    #[error("invalid duration {value:?}: {why} (expected e.g. \"500ms\", \"20s\", \"5m\", \"1h\")")]
    BadDuration { value: String, why: String },
    /// A bad window or reboot policy, a duplicate check name, a key that
    /// needs another.
    #[error("{0}")]
    Invalid(String),
}

/// Reads and merges the two files (see the module's docs). A missing file
/// counts as empty; both missing give [`Config::default`].
pub fn load(default: &Path, etc: &Path) -> Result<Config, ConfigError> {
    let base = Layer::read(default)?;
    let over = Layer::read(etc)?;
    base.merge(over).resolve()
}

/// What PID1 and the daemon use: [`load`]; when that fails, the image's
/// file alone; when that fails too, [`Config::default`]. Returns the
/// settings and the errors met on the way (to be logged), in that order.
pub fn load_or_fallback(default: &Path, etc: &Path) -> (Config, Vec<ConfigError>) {
    let mut errors = Vec::new();
    match load(default, etc) {
        Ok(c) => return (c, errors),
        Err(e) => errors.push(e),
    }
    // The /etc file may be what is wrong: then the image's alone is fine,
    // and its error (if any) is already logged.
    let image_alone = Layer::read(default).and_then(Layer::resolve);
    match image_alone {
        Ok(c) => (c, errors),
        Err(e) => {
            if errors.first() != Some(&e) {
                errors.push(e);
            }
            (Config::default(), errors)
        }
    }
}

mod read;
#[cfg(test)]
mod tests;

use read::Layer;
