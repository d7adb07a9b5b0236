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
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::{Spanned, Value};

/// The timeout of a `[[gate.check]]` that names none.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// All the updater's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub gate: Gate,
    pub auto: Auto,
    pub fetch: Fetch,
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
    /// interval 1h, reboot never; 5 download retries.
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

/// A value and the place it came from.
#[derive(Debug, Clone)]
struct At<T> {
    value: T,
    place: Place,
}

#[derive(Debug, Clone)]
struct Place {
    file: PathBuf,
    line: usize,
    key: String,
}

impl Place {
    fn error(&self, kind: ConfigErrorKind) -> ConfigError {
        ConfigError { file: self.file.clone(), line: Some(self.line), key: Some(self.key.clone()), kind }
    }
}

/// What one file sets.
#[derive(Debug, Default)]
struct Layer {
    deadline: Option<At<Duration>>,
    retry: Option<At<Duration>>,
    checks: Option<At<Vec<Check>>>,
    enabled: Option<At<bool>>,
    source: Option<At<String>>,
    interval: Option<At<Duration>>,
    reboot: Option<At<RebootPolicy>>,
    window: Option<At<Window>>,
    retries: Option<At<u32>>,
}

impl Layer {
    /// The file's settings; none when it does not exist.
    fn read(file: &Path) -> Result<Layer, ConfigError> {
        match std::fs::read_to_string(file) {
            Ok(text) => Doc { file, text: &text }.layer(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Layer::default()),
            Err(e) => Err(ConfigError {
                file: file.to_path_buf(),
                line: None,
                key: None,
                kind: ConfigErrorKind::Io(e.to_string()),
            }),
        }
    }

    /// `over`'s keys win.
    fn merge(self, over: Layer) -> Layer {
        Layer {
            deadline: over.deadline.or(self.deadline),
            retry: over.retry.or(self.retry),
            checks: over.checks.or(self.checks),
            enabled: over.enabled.or(self.enabled),
            source: over.source.or(self.source),
            interval: over.interval.or(self.interval),
            reboot: over.reboot.or(self.reboot),
            window: over.window.or(self.window),
            retries: over.retries.or(self.retries),
        }
    }

    /// The settings, built-in values where no file sets a key, after the
    /// checks between keys.
    fn resolve(self) -> Result<Config, ConfigError> {
        if let Some(reboot) = &self.reboot {
            if reboot.value == RebootPolicy::Window && self.window.is_none() {
                return Err(reboot
                    .place
                    .error(ConfigErrorKind::Invalid("reboot = \"window\" needs auto.window".into())));
            }
        }
        if let Some(enabled) = &self.enabled {
            if enabled.value && self.source.is_none() {
                return Err(enabled.place.error(ConfigErrorKind::Invalid("enabled = true needs auto.source".into())));
            }
        }
        let d = Config::default();
        let get = |x: Option<At<Duration>>, default: Duration| x.map_or(default, |a| a.value);
        Ok(Config {
            gate: Gate {
                deadline: get(self.deadline, d.gate.deadline),
                retry: get(self.retry, d.gate.retry),
                checks: self.checks.map_or(d.gate.checks, |a| a.value),
            },
            auto: Auto {
                enabled: self.enabled.is_some_and(|a| a.value),
                source: self.source.map(|a| a.value),
                interval: get(self.interval, d.auto.interval),
                reboot: self.reboot.map_or(d.auto.reboot, |a| a.value),
                window: self.window.map(|a| a.value),
            },
            fetch: Fetch { retries: self.retries.map_or(d.fetch.retries, |a| a.value) },
        })
    }
}

/// A TOML value as written, each table key and array element with its
/// span (read with toml's public [`Spanned`]). A table has no span of its
/// own (toml has none for an implied one), so a value is placed at its key.
#[derive(Debug)]
enum Node {
    Table(Vec<(Spanned<String>, Node)>),
    Array(Vec<Spanned<Node>>),
    Scalar(Value),
}

impl Node {
    /// What it is, for "expected X, found Y".
    fn describe(&self) -> String {
        match self {
            Node::Table(_) => "a table".into(),
            Node::Array(_) => "an array".into(),
            Node::Scalar(Value::String(s)) => format!("string {s:?}"),
            Node::Scalar(v) => format!("{} {v}", v.type_str()),
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Scalar(Value::Boolean(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Scalar(Value::Integer(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        i64::try_from(v).map(|v| Node::Scalar(Value::Integer(v))).map_err(|_| E::custom("integer out of range"))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Scalar(Value::Float(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Scalar(Value::String(v.to_owned())))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        loop {
            match map.next_key::<Spanned<String>>() {
                Ok(Some(key)) => entries.push((key, map.next_value::<Node>()?)),
                Ok(None) => return Ok(Node::Table(entries)),
                // A date comes as a map whose one key has no span; no key
                // takes a date, so it only needs to read as something.
                Err(_) if entries.is_empty() => {
                    let text = map.next_value::<String>()?;
                    return Ok(Node::Scalar(Value::String(text)));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

type Entries = [(Spanned<String>, Node)];

/// One file's text, read into a [`Layer`].
struct Doc<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Doc<'_> {
    fn line(&self, offset: usize) -> usize {
        let before = self.text.as_bytes().get(..offset).unwrap_or(self.text.as_bytes());
        before.iter().filter(|&&b| b == b'\n').count() + 1
    }

    fn place(&self, key: String, offset: usize) -> Place {
        Place { file: self.file.to_path_buf(), line: self.line(offset), key }
    }

    fn layer(&self) -> Result<Layer, ConfigError> {
        let root = toml::from_str::<Node>(self.text).map_err(|e| ConfigError {
            file: self.file.to_path_buf(),
            line: e.span().map(|s| self.line(s.start)),
            key: None,
            // toml's messages can span lines ("invalid array\nexpected `]`").
            kind: ConfigErrorKind::Syntax(e.message().trim().replace('\n', ": ")),
        })?;
        let mut layer = Layer::default();
        for (key, node) in self.table("", &root, 0)? {
            let at = |name: &str| self.place(name.to_owned(), key.span().start);
            match key.get_ref().as_str() {
                "gate" => self.gate(&mut layer, node, &at("gate"))?,
                "auto" => self.auto(&mut layer, node, &at("auto"))?,
                "fetch" => self.fetch(&mut layer, node, &at("fetch"))?,
                other => return Err(at(other).error(ConfigErrorKind::UnknownKey)),
            }
        }
        Ok(layer)
    }

    /// The entries of a table, each with its place (`prefix.key`).
    fn table<'n>(&self, prefix: &str, node: &'n Node, offset: usize) -> Result<&'n Entries, ConfigError> {
        match node {
            Node::Table(entries) => Ok(entries),
            other => Err(self
                .place(prefix.to_owned(), offset)
                .error(ConfigErrorKind::WrongType { expected: "a table", found: other.describe() })),
        }
    }

    fn entries<'n>(&self, section: &Place, node: &'n Node) -> Result<Vec<(Place, &'n Node)>, ConfigError> {
        let entries = match node {
            Node::Table(entries) => entries,
            other => {
                return Err(section.error(ConfigErrorKind::WrongType { expected: "a table", found: other.describe() }))
            }
        };
        Ok(entries
            .iter()
            .map(|(k, v)| (self.place(format!("{}.{}", section.key, k.get_ref()), k.span().start), v))
            .collect())
    }

    fn gate(&self, layer: &mut Layer, node: &Node, section: &Place) -> Result<(), ConfigError> {
        for (place, value) in self.entries(section, node)? {
            match leaf(&place) {
                "deadline" => layer.deadline = Some(duration(place, value)?),
                "retry" => layer.retry = Some(duration(place, value)?),
                "check" => layer.checks = Some(self.checks(place, value)?),
                _ => return Err(place.error(ConfigErrorKind::UnknownKey)),
            }
        }
        Ok(())
    }

    fn checks(&self, place: Place, node: &Node) -> Result<At<Vec<Check>>, ConfigError> {
        let Node::Array(items) = node else {
            return Err(place.error(wrong("an array of tables ([[gate.check]])", node)));
        };
        let mut checks: Vec<Check> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = self.place(format!("{}[{i}]", place.key), item.span().start);
            let (mut name, mut exec, mut timeout) = (None, None, None);
            for (place, value) in self.entries(&at, item.get_ref())? {
                match leaf(&place) {
                    "name" => name = Some(string(place, value)?),
                    "exec" => exec = Some(argv(place, value)?),
                    "timeout" => timeout = Some(duration(place, value)?),
                    _ => return Err(place.error(ConfigErrorKind::UnknownKey)),
                }
            }
            let name = name.ok_or_else(|| at.error(ConfigErrorKind::MissingKey("name")))?;
            let exec = exec.ok_or_else(|| at.error(ConfigErrorKind::MissingKey("exec")))?;
            if checks.iter().any(|c| c.name == name.value) {
                let why = format!("a check named {:?} is already in the list", name.value);
                return Err(name.place.error(ConfigErrorKind::Invalid(why)));
            }
            checks.push(Check {
                name: name.value,
                exec: exec.value,
                timeout: timeout.map_or(DEFAULT_CHECK_TIMEOUT, |t| t.value),
            });
        }
        Ok(At { value: checks, place })
    }

    fn auto(&self, layer: &mut Layer, node: &Node, section: &Place) -> Result<(), ConfigError> {
        for (place, value) in self.entries(section, node)? {
            match leaf(&place) {
                "enabled" => match value {
                    Node::Scalar(Value::Boolean(b)) => layer.enabled = Some(At { value: *b, place }),
                    other => return Err(place.error(wrong("a boolean", other))),
                },
                "source" => {
                    let source = string(place, value)?;
                    if source.value.is_empty() {
                        return Err(source.place.error(ConfigErrorKind::Invalid("empty source".into())));
                    }
                    layer.source = Some(source);
                }
                "interval" => layer.interval = Some(duration(place, value)?),
                "reboot" => layer.reboot = Some(parsed(string(place, value)?)?),
                "window" => layer.window = Some(parsed(string(place, value)?)?),
                _ => return Err(place.error(ConfigErrorKind::UnknownKey)),
            }
        }
        Ok(())
    }

    fn fetch(&self, layer: &mut Layer, node: &Node, section: &Place) -> Result<(), ConfigError> {
        for (place, value) in self.entries(section, node)? {
            match leaf(&place) {
                "retries" => match value {
                    Node::Scalar(Value::Integer(n)) => match u32::try_from(*n) {
                        Ok(n) => layer.retries = Some(At { value: n, place }),
                        Err(_) => {
                            return Err(place
                                .error(ConfigErrorKind::Invalid(format!("{n} is not a count from 0 to {}", u32::MAX))))
                        }
                    },
                    other => return Err(place.error(wrong("an integer", other))),
                },
                _ => return Err(place.error(ConfigErrorKind::UnknownKey)),
            }
        }
        Ok(())
    }
}

/// The last part of a place's key path.
fn leaf(place: &Place) -> &str {
    place.key.rsplit('.').next().unwrap_or_default()
}

fn wrong(expected: &'static str, found: &Node) -> ConfigErrorKind {
    ConfigErrorKind::WrongType { expected, found: found.describe() }
}

fn string(place: Place, node: &Node) -> Result<At<String>, ConfigError> {
    match node {
        Node::Scalar(Value::String(s)) => Ok(At { value: s.clone(), place }),
        other => Err(place.error(wrong("a string", other))),
    }
}

fn parsed<T: FromStr<Err = String>>(s: At<String>) -> Result<At<T>, ConfigError> {
    match s.value.parse() {
        Ok(value) => Ok(At { value, place: s.place }),
        Err(why) => Err(s.place.error(ConfigErrorKind::Invalid(why))),
    }
}

/// A non-empty array of strings whose first is an absolute path.
fn argv(place: Place, node: &Node) -> Result<At<Vec<String>>, ConfigError> {
    let expected = "a non-empty array of strings, the first an absolute path";
    let Node::Array(items) = node else {
        return Err(place.error(wrong(expected, node)));
    };
    let mut argv = Vec::new();
    for item in items {
        match item.get_ref() {
            Node::Scalar(Value::String(s)) => argv.push(s.clone()),
            other => return Err(place.error(wrong(expected, other))),
        }
    }
    if !argv.first().is_some_and(|p| p.starts_with('/')) {
        return Err(place.error(ConfigErrorKind::WrongType { expected, found: node_text(items) }));
    }
    Ok(At { value: argv, place })
}

fn node_text(items: &[Spanned<Node>]) -> String {
    let words: Vec<String> = items.iter().map(|i| i.get_ref().describe()).collect();
    format!("[{}]", words.join(", "))
}

/// humantime's units for months and years: `"1M"` is a month there, too
/// easily meant as a minute.
const CALENDAR_UNITS: [&str; 8] = ["M", "month", "months", "y", "yr", "yrs", "year", "years"];

/// A humantime duration with a unit, above zero, without months or years.
fn duration(place: Place, node: &Node) -> Result<At<Duration>, ConfigError> {
    let s = string(place, node)?;
    let bad = |why: &str| s.place.error(ConfigErrorKind::BadDuration { value: s.value.clone(), why: why.to_owned() });
    let mut units = s.value.split(|c: char| !c.is_alphabetic()).filter(|u| !u.is_empty()).peekable();
    if units.peek().is_none() {
        return Err(bad("a number needs a unit"));
    }
    if units.any(|u| CALENDAR_UNITS.contains(&u)) {
        return Err(bad("months and years are not taken"));
    }
    match humantime::parse_duration(&s.value) {
        Ok(d) if d.is_zero() => Err(bad("must be above zero")),
        Ok(value) => Ok(At { value, place: s.place }),
        Err(e) => Err(bad(&e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        dir: PathBuf,
    }

    impl Files {
        fn new(tag: &str) -> Files {
            let dir = std::env::temp_dir().join(format!("berth-config-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Files { dir }
        }
        fn image(&self) -> PathBuf {
            self.dir.join("usr-updater.toml")
        }
        fn etc(&self) -> PathBuf {
            self.dir.join("etc-updater.toml")
        }
        fn write(&self, image: Option<&str>, etc: Option<&str>) -> &Self {
            for (path, text) in [(self.image(), image), (self.etc(), etc)] {
                let _ = std::fs::remove_file(&path);
                if let Some(text) = text {
                    std::fs::write(path, text).unwrap();
                }
            }
            self
        }
        fn load(&self) -> Result<Config, ConfigError> {
            load(&self.image(), &self.etc())
        }
        /// The error of `etc` over an empty image file, as displayed.
        fn etc_error(&self, etc: &str) -> String {
            self.write(None, Some(etc)).load().unwrap_err().to_string()
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    const IMAGE: &str = r#"
[gate]
deadline = "5m"
retry = "2s"

[[gate.check]]
name = "containerd"
exec = ["/usr/bin/ctr", "version"]
timeout = "10s"

[[gate.check]]
name = "etcd"
exec = ["/usr/bin/etcdctl", "endpoint", "health"]

[auto]
enabled = false
interval = "1h"
reboot = "never"

[fetch]
retries = 5
"#;

    #[test]
    fn no_files_give_the_built_in_values() {
        let f = Files::new("none");
        let c = f.write(None, None).load().unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.gate.deadline, Duration::from_secs(300));
        assert_eq!(c.gate.checks.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["containerd", "etcd"]);
        assert_eq!(c.auto.reboot, RebootPolicy::Never);
        assert_eq!(c.fetch.retries, 5);
    }

    #[test]
    fn etc_wins_key_by_key_and_replaces_the_check_list() {
        let f = Files::new("merge");
        let etc = "[gate]\ndeadline = \"20s\"\n[auto]\nenabled = true\nsource = \"http://10.0.2.2/berth/\"\n";
        let c = f.write(Some(IMAGE), Some(etc)).load().unwrap();
        assert_eq!(c.gate.deadline, Duration::from_secs(20), "from /etc");
        assert_eq!(c.gate.retry, Duration::from_secs(2), "from the image");
        assert_eq!(c.gate.checks.len(), 2, "the image's list stays when /etc has none");
        assert_eq!(c.gate.checks[1].timeout, DEFAULT_CHECK_TIMEOUT, "timeout is optional");
        assert_eq!(c.gate.checks[1].exec, ["/usr/bin/etcdctl", "endpoint", "health"]);
        assert!(c.auto.enabled);
        assert_eq!(c.auto.source.as_deref(), Some("http://10.0.2.2/berth/"));
        assert_eq!(c.auto.interval, Duration::from_secs(3600));

        let etc = "[[gate.check]]\nname = \"ping\"\nexec = [\"/bin/true\"]\ntimeout = \"1s\"\n";
        let c = f.write(Some(IMAGE), Some(etc)).load().unwrap();
        let expected = Check { name: "ping".into(), exec: vec!["/bin/true".into()], timeout: Duration::from_secs(1) };
        assert_eq!(c.gate.checks, [expected], "an /etc list replaces the whole list");
        assert_eq!(c.gate.deadline, Duration::from_secs(300));
    }

    #[test]
    fn window_policy_and_durations() {
        let f = Files::new("window");
        let etc = "[auto]\nreboot = \"window\"\nwindow = \"22:30-01:15\"\ninterval = \"1h 30m\"\n";
        let c = f.write(Some(IMAGE), Some(etc)).load().unwrap();
        assert_eq!(c.auto.reboot, RebootPolicy::Window);
        assert_eq!(c.auto.window, Window::new(22 * 60 + 30, 75));
        assert_eq!(c.auto.window.unwrap().to_string(), "22:30-01:15");
        assert_eq!(c.auto.interval, Duration::from_secs(5400));
    }

    #[test]
    fn unknown_keys_name_file_line_and_key_path() {
        let f = Files::new("unknown");
        let e = f.etc_error("[gate]\ndeadline = \"1m\"\ndedline = \"2m\"\n");
        assert_eq!(e, format!("{}:3: key gate.dedline: unknown key", f.etc().display()));
        let e = f.etc_error("[gates]\n");
        assert_eq!(e, format!("{}:1: key gates: unknown key", f.etc().display()));
        let e = f.etc_error(
            "\n[[gate.check]]\nname = \"a\"\nexec = [\"/a\"]\n[[gate.check]]\nname = \"b\"\ncommand = [\"/b\"]\n",
        );
        assert_eq!(e, format!("{}:7: key gate.check[1].command: unknown key", f.etc().display()));
        let e = f.etc_error("auto.enable = true\n");
        assert_eq!(e, format!("{}:1: key auto.enable: unknown key", f.etc().display()));
    }

    #[test]
    fn an_error_in_the_image_file_names_the_image_file() {
        let f = Files::new("imgerr");
        let e = f.write(Some("[fetch]\nretries = -1\n"), Some("[gate]\n")).load().unwrap_err();
        assert_eq!(e.file, f.image());
        assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("fetch.retries")));
        assert_eq!(e.kind, ConfigErrorKind::Invalid("-1 is not a count from 0 to 4294967295".into()));
    }

    #[test]
    fn bad_durations_are_refused_with_the_reason() {
        let f = Files::new("duration");
        let e = f.etc_error("[gate]\ndeadline = \"5x\"\n");
        assert!(
            e.starts_with(&format!("{}:2: key gate.deadline: invalid duration \"5x\": ", f.etc().display())),
            "{e}"
        );
        assert!(e.contains("unknown time unit \"x\""), "{e}");
        let e = f.etc_error("[gate]\nretry = \"10\"\n");
        assert!(e.contains("key gate.retry: invalid duration \"10\": a number needs a unit"), "{e}");
        let e = f.etc_error("[gate]\ndeadline = \"0s\"\n");
        assert!(e.contains("key gate.deadline: invalid duration \"0s\": must be above zero"), "{e}");
        let e = f.etc_error("[auto]\ninterval = \"1M\"\n");
        assert!(e.contains("key auto.interval: invalid duration \"1M\": months and years are not taken"), "{e}");
        let e = f.etc_error("[gate]\ndeadline = 300\n");
        assert!(e.ends_with(":2: key gate.deadline: expected a string, found integer 300"), "{e}");
    }

    #[test]
    fn bad_windows_are_refused() {
        let f = Files::new("badwindow");
        for (window, why) in [
            ("2-4", "\"2\" is not a time HH:MM"),
            ("02:00", "no '-' between start and end"),
            ("02:00-24:00", "\"24:00\" is not a time HH:MM"),
            ("02:60-03:00", "\"02:60\" is not a time HH:MM"),
            ("03:00-03:00", "start and end are the same"),
        ] {
            let e = f.etc_error(&format!("[auto]\nwindow = \"{window}\"\n"));
            let expected = format!(
                "{}:2: key auto.window: invalid window \"{window}\": {why} (expected \"HH:MM-HH:MM\" in UTC, e.g. \"02:00-04:00\")",
                f.etc().display()
            );
            assert_eq!(e, expected);
        }
        let e = f.etc_error("[auto]\nreboot = \"window\"\n");
        assert_eq!(e, format!("{}:2: key auto.reboot: reboot = \"window\" needs auto.window", f.etc().display()));
    }

    #[test]
    fn bad_reboot_policy_is_refused() {
        let f = Files::new("badreboot");
        let e = f.etc_error("[auto]\nreboot = \"nightly\"\n");
        let expected = "key auto.reboot: unknown reboot policy \"nightly\" (expected never, immediately or window)";
        assert_eq!(e, format!("{}:2: {expected}", f.etc().display()));
    }

    #[test]
    fn bad_checks_and_bad_syntax() {
        let f = Files::new("badcheck");
        let e = f.etc_error("[[gate.check]]\nexec = [\"/bin/true\"]\n");
        assert!(e.ends_with(":1: key gate.check[0]: missing key name"), "{e}");
        let e = f.etc_error("[[gate.check]]\nname = \"a\"\nexec = [\"true\"]\n");
        assert!(e.contains(":3: key gate.check[0].exec: expected a non-empty array of strings"), "{e}");
        let e = f.etc_error(
            "[[gate.check]]\nname = \"a\"\nexec = [\"/a\"]\n[[gate.check]]\nname = \"a\"\nexec = [\"/b\"]\n",
        );
        assert!(e.ends_with(":5: key gate.check[1].name: a check named \"a\" is already in the list"), "{e}");
        let e = f.etc_error("[gate.check]\nname = \"a\"\n");
        assert!(e.contains(":1: key gate.check: expected an array of tables ([[gate.check]]), found a table"), "{e}");
        let e = f.etc_error("[auto]\nenabled = true\n");
        assert!(e.ends_with(":2: key auto.enabled: enabled = true needs auto.source"), "{e}");
        let e = f.etc_error("[gate]\ndeadline = \n");
        let err = f.write(None, Some("[gate]\ndeadline = \n")).load().unwrap_err();
        assert_eq!((err.line, err.key), (Some(2), None), "{e}");
        assert!(matches!(err.kind, ConfigErrorKind::Syntax(_)));
    }

    #[test]
    fn fallback_uses_the_image_file_when_etc_is_bad() {
        let f = Files::new("fallback");
        f.write(Some("[gate]\ndeadline = \"7m\"\n"), Some("[gate]\ndeadline = \"soon\"\n"));
        let (c, errors) = load_or_fallback(&f.image(), &f.etc());
        assert_eq!(c.gate.deadline, Duration::from_secs(420));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].file, f.etc());

        f.write(Some("[gate]\ndeadline = \"never\"\n"), None);
        let (c, errors) = load_or_fallback(&f.image(), &f.etc());
        assert_eq!(c, Config::default());
        assert_eq!(errors.len(), 1, "the image's error once: {errors:?}");
    }

    #[test]
    fn windows_open_and_wrap() {
        let w: Window = "22:00-02:00".parse().unwrap();
        assert!(
            w.contains_minute(23 * 60) && w.contains_minute(60) && !w.contains_minute(120) && !w.contains_minute(600)
        );
        let at = |h: u64, m: u64| UNIX_EPOCH + Duration::from_secs(19_000 * 86_400 + h * 3600 + m * 60);
        assert_eq!(w.wait(at(23, 0)), Duration::ZERO);
        assert_eq!(w.wait(at(21, 30)), Duration::from_secs(30 * 60));
        assert_eq!(w.wait(at(2, 0)), Duration::from_secs(20 * 3600));
        let w: Window = "02:00-04:00".parse().unwrap();
        assert_eq!(w.wait(at(4, 0)), Duration::from_secs(22 * 3600));
        assert_eq!(w.wait(at(3, 59)), Duration::ZERO);
    }
}
