//! The unit file format: what `NAME.toml` may say, and the unit it
//! describes once checked and given its defaults.
//!
//! Two layers. The `Raw*` structs mirror the file for serde, with
//! `deny_unknown_fields` everywhere so a misspelt key is an error; values
//! that need more than a type check (durations, sizes, addresses, signals,
//! paths) are read as strings or `toml::Value`. [`parse_unit`] then checks
//! each of them, collecting every problem with the line of its key, and
//! builds the [`Unit`] the supervisor uses: plain Rust types, defaults
//! filled in. `docs/units.md` describes the format for people.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::Deserialize;
use toml::Value;

use super::error::{ErrorKind, Location, UnitError};
use super::source::{Seg, Source};

// ---- names -------------------------------------------------------------------

/// A unit's name: the file stem of `NAME.toml`, `[a-z0-9][a-z0-9-_.@]*`,
/// at most 128 characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnitName(String);

impl UnitName {
    pub const MAX_LEN: usize = 128;

    pub fn new(name: &str) -> Result<Self, String> {
        let mut chars = name.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.' | '@'));
        if first_ok && rest_ok && name.len() <= Self::MAX_LEN {
            Ok(UnitName(name.to_owned()))
        } else {
            Err(format!(
                "invalid unit name {name:?} (expected lower-case letters, digits and - _ . @, \
                 starting with a letter or digit, at most {} characters)",
                Self::MAX_LEN
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UnitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// ---- the unit, as the supervisor sees it ------------------------------------

/// One checked unit file, defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Unit {
    pub name: UnitName,
    /// The file it was read from (after overrides: the one that won).
    pub file: PathBuf,
    /// `description`; empty when not given.
    pub description: String,
    pub service: Service,
    pub dependencies: Dependencies,
    pub restart: Restart,
    pub limits: Limits,
    pub health: Option<Health>,
    pub conditions: Conditions,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// Program (an absolute path) and arguments. Not run through a shell.
    pub exec: Vec<String>,
    /// Set on top of PID1's minimal environment.
    pub environment: BTreeMap<String, String>,
    /// Absolute; `None`: `/`.
    pub working_directory: Option<PathBuf>,
    /// `None`: root.
    pub user: Option<Account>,
    /// `None`: the user's primary group (root's when `user` is `None`).
    pub group: Option<Account>,
    pub kind: Kind,
    pub ready: Ready,
    /// How long it may take to become ready (oneshot: to exit).
    pub start_timeout: Duration,
    pub stop_signal: Signal,
    /// How long after `stop_signal` before SIGKILL.
    pub stop_timeout: Duration,
    /// What a restart (or `berthctl stop`) kills; shutdown always kills the group.
    pub kill_mode: KillMode,
}

/// A user or group: a name looked up at start, or a numeric id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Account {
    Name(String),
    Id(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A daemon: runs until stopped.
    #[default]
    LongRunning,
    /// Runs to completion; done when it exits 0.
    Oneshot,
}

/// When a started unit counts as ready, so that what requires it may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// The process sent `READY=1` on `$NOTIFY_SOCKET` (sd_notify).
    Notify,
    /// The process was started (exec succeeded).
    Started,
    /// A TCP connect to this address succeeds.
    Tcp(SocketAddr),
    /// A oneshot exited 0.
    Exit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KillMode {
    /// The whole cgroup: the main process and everything it started.
    #[default]
    Group,
    /// The main process only; its children live on (containerd's shims).
    Main,
}

/// The three kinds of dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Relation {
    /// Must be ready before this starts; if it fails, this does not start.
    Requires,
    /// Started along with this one; neither waited for nor required.
    Wants,
    /// Ordering only: if it is to start, this waits until it has settled
    /// (ready, failed or skipped).
    After,
}

impl Relation {
    pub const ALL: [Relation; 3] = [Relation::Requires, Relation::Wants, Relation::After];

    /// The key under `[dependencies]`.
    pub fn key(self) -> &'static str {
        match self {
            Relation::Requires => "requires",
            Relation::Wants => "wants",
            Relation::After => "after",
        }
    }
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// One entry of a dependency list, with its place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub name: UnitName,
    pub at: Location,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dependencies {
    pub requires: Vec<Dependency>,
    pub wants: Vec<Dependency>,
    pub after: Vec<Dependency>,
}

impl Dependencies {
    pub fn get(&self, relation: Relation) -> &[Dependency] {
        match relation {
            Relation::Requires => &self.requires,
            Relation::Wants => &self.wants,
            Relation::After => &self.after,
        }
    }

    fn get_mut(&mut self, relation: Relation) -> &mut Vec<Dependency> {
        match relation {
            Relation::Requires => &mut self.requires,
            Relation::Wants => &mut self.wants,
            Relation::After => &mut self.after,
        }
    }

    /// Every entry with its relation, in file order per relation.
    pub fn all(&self) -> impl Iterator<Item = (Relation, &Dependency)> {
        Relation::ALL.into_iter().flat_map(move |r| self.get(r).iter().map(move |d| (r, d)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Whenever it exits (a long-running unit only).
    Always,
    /// When it exits non-zero, is killed by a signal, times out or fails
    /// its health check.
    OnFailure,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restart {
    pub policy: RestartPolicy,
    /// The delay before the first restart; doubled for each further one.
    pub backoff_initial: Duration,
    /// The delay never grows past this.
    pub backoff_max: Duration,
    /// At most this many starts within `start_limit_interval`; one more and
    /// the unit is failed for good (until `berthctl restart`).
    pub start_limit: u32,
    pub start_limit_interval: Duration,
}

impl Restart {
    /// The delay before restart number `attempt` (1 for the first):
    /// `backoff_initial * 2^(attempt-1)`, at most `backoff_max`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.backoff_initial.saturating_mul(factor).min(self.backoff_max)
    }
}

/// A cgroup limit that may be unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Max,
    Value(u64),
}

impl fmt::Display for Limit {
    /// As the cgroup file takes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Max => f.write_str("max"),
            Limit::Value(v) => write!(f, "{v}"),
        }
    }
}

/// cgroup v2 limits of the unit's cgroup; `None` leaves the kernel's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// `memory.max`, bytes.
    pub memory_max: Option<Limit>,
    /// `cpu.weight`, 1..=10000.
    pub cpu_weight: Option<u16>,
    /// `pids.max`.
    pub pids_max: Option<Limit>,
}

impl Limits {
    /// The cgroup files to write and what to write in them.
    pub fn cgroup_settings(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(m) = self.memory_max {
            out.push(("memory.max", m.to_string()));
        }
        if let Some(w) = self.cpu_weight {
            out.push(("cpu.weight", w.to_string()));
        }
        if let Some(p) = self.pids_max {
            out.push(("pids.max", p.to_string()));
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub check: HealthCheck,
    /// Time between checks, starting once the unit is ready.
    pub interval: Duration,
    /// A check that takes longer has failed.
    pub timeout: Duration,
    /// This many failed checks in a row restart the unit.
    pub failures: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheck {
    /// Run this (absolute program path, arguments); healthy when it exits 0.
    Command(Vec<String>),
    /// Healthy when a TCP connect succeeds.
    Tcp(SocketAddr),
}

/// Conditions checked just before the start; a unit whose conditions do not
/// hold is skipped (not failed).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Conditions {
    /// `Some(true)`: only on the first boot; `Some(false)`: never on it.
    pub first_boot: Option<bool>,
    /// Every one must hold.
    pub path_exists: Vec<PathCondition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathCondition {
    pub path: PathBuf,
    /// `"!/path"`: the path must not exist.
    pub negate: bool,
}

impl Conditions {
    /// Whether the unit should start: `Err` names the first condition that
    /// does not hold. Pure: the caller says whether this is the first boot
    /// and how to test a path.
    pub fn check(&self, first_boot: bool, exists: impl Fn(&Path) -> bool) -> Result<(), String> {
        if let Some(want) = self.first_boot {
            if want != first_boot {
                return Err(if want {
                    "conditions.first_boot: not the first boot".to_owned()
                } else {
                    "conditions.first_boot: this is the first boot".to_owned()
                });
            }
        }
        for c in &self.path_exists {
            if exists(&c.path) == c.negate {
                let verdict = if c.negate { "exists" } else { "does not exist" };
                return Err(format!("conditions.path_exists: {} {verdict}", c.path.display()));
            }
        }
        Ok(())
    }
}

// ---- defaults ----------------------------------------------------------------

pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_STOP_SIGNAL: Signal = Signal::SIGTERM;
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_millis(100);
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);
pub const DEFAULT_START_LIMIT: u32 = 5;
pub const DEFAULT_START_LIMIT_INTERVAL: Duration = Duration::from_secs(60);
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_HEALTH_FAILURES: u32 = 3;

// ---- the file, as serde reads it --------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnit {
    #[serde(default)]
    description: String,
    service: RawService,
    #[serde(default)]
    dependencies: RawDependencies,
    #[serde(default)]
    restart: RawRestart,
    #[serde(default)]
    limits: RawLimits,
    health: Option<RawHealth>,
    #[serde(default)]
    conditions: RawConditions,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    exec: Vec<String>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    working_directory: Option<String>,
    user: Option<Value>,
    group: Option<Value>,
    #[serde(default)]
    kind: Kind,
    ready: Option<Value>,
    start_timeout: Option<Value>,
    stop_signal: Option<String>,
    stop_timeout: Option<Value>,
    #[serde(default)]
    kill_mode: KillMode,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDependencies {
    #[serde(default)]
    requires: Vec<String>,
    #[serde(default)]
    wants: Vec<String>,
    #[serde(default)]
    after: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRestart {
    policy: Option<RestartPolicy>,
    backoff_initial: Option<Value>,
    backoff_max: Option<Value>,
    start_limit: Option<u32>,
    start_limit_interval: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory_max: Option<Value>,
    cpu_weight: Option<i64>,
    pids_max: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    check: Value,
    interval: Option<Value>,
    timeout: Option<Value>,
    failures: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConditions {
    first_boot: Option<bool>,
    path_exists: Option<Value>,
}

// ---- parsing and checking ----------------------------------------------------

/// Parse and check one unit file's text. `file` is only used to name it in
/// errors and in [`Unit::file`]. Every problem found is returned, each with
/// its line and key; a unit with any problem is not returned at all.
pub fn parse_unit(name: &UnitName, file: &Path, text: &str) -> Result<Unit, Vec<UnitError>> {
    let src = Source::new(file, text);
    let raw: RawUnit = toml::from_str(text).map_err(|e| vec![src.toml_error(&e)])?;
    let mut c = Check { src: &src, errors: Vec::new() };
    let unit = c.unit(name, file, raw);
    if c.errors.is_empty() {
        Ok(unit)
    } else {
        Err(c.errors)
    }
}

const DURATION_HINT: &str = "expected e.g. 500ms, 10s, 2m";

/// `"500ms"`, `"10s"`, `"2m"`, `"1h"`: a whole number and a unit.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = (s.get(..split)?, s.get(split..)?);
    if digits.is_empty() {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let millis_per = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    Some(Duration::from_millis(n.checked_mul(millis_per)?))
}

/// `"512M"`, `"2G"`, `"1048576"`: bytes, or a whole number with K, M, G or
/// T (powers of 1024).
pub fn parse_size(s: &str) -> Option<u64> {
    let (digits, shift) = match s.char_indices().last()? {
        (i, 'K') => (s.get(..i)?, 10),
        (i, 'M') => (s.get(..i)?, 20),
        (i, 'G') => (s.get(..i)?, 30),
        (i, 'T') => (s.get(..i)?, 40),
        _ => (s, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(1u64 << shift)
}

/// `"SIGTERM"` or `"TERM"`.
pub fn parse_signal(s: &str) -> Option<Signal> {
    let name = if s.starts_with("SIG") { s.to_owned() } else { format!("SIG{s}") };
    Signal::from_str(&name).ok()
}

struct Check<'a> {
    src: &'a Source<'a>,
    errors: Vec<UnitError>,
}

use Seg::{Index, Key};

impl Check<'_> {
    fn err(&mut self, path: &[Seg<'_>], message: impl Into<String>) {
        self.errors.push(self.src.error_at(path, ErrorKind::Invalid(message.into())));
    }

    fn unit(&mut self, name: &UnitName, file: &Path, raw: RawUnit) -> Unit {
        let service = self.service(raw.service);
        let dependencies = self.dependencies(name, raw.dependencies);
        let restart = self.restart(service.kind, raw.restart);
        let limits = self.limits(raw.limits);
        let health = raw.health.map(|h| self.health(service.kind, h));
        let conditions = self.conditions(raw.conditions);
        Unit {
            name: name.clone(),
            file: file.to_path_buf(),
            description: raw.description,
            service,
            dependencies,
            restart,
            limits,
            health,
            conditions,
        }
    }

    fn duration(&mut self, path: &[Seg<'_>], value: Option<Value>, default: Duration) -> Duration {
        let Some(value) = value else { return default };
        match value.as_str().map(parse_duration) {
            Some(Some(d)) if !d.is_zero() => d,
            Some(Some(_)) => {
                self.err(path, format!("invalid duration {value}: must be more than 0"));
                default
            }
            _ => {
                self.err(path, format!("invalid duration {value} ({DURATION_HINT})"));
                default
            }
        }
    }

    fn absolute_program(&mut self, path: &[Seg<'_>], argv: &[String]) {
        match argv.first() {
            None => self.err(path, "must name a program: [\"/usr/bin/program\", \"arg\", ...]"),
            Some(program) if !program.starts_with('/') => {
                let mut p = path.to_vec();
                p.push(Index(0));
                self.err(&p, format!("program {program:?} is not an absolute path"));
            }
            Some(_) => {}
        }
        for (i, arg) in argv.iter().enumerate() {
            if arg.contains('\0') {
                let mut p = path.to_vec();
                p.push(Index(i));
                self.err(&p, "contains a NUL byte");
            }
        }
    }

    fn socket_addr(&mut self, path: &[Seg<'_>], value: &Value) -> Option<SocketAddr> {
        match value.as_str().map(SocketAddr::from_str) {
            Some(Ok(a)) => Some(a),
            _ => {
                self.err(
                    path,
                    format!("invalid address {value} (expected IP:PORT, e.g. \"127.0.0.1:2379\" or \"[::1]:22\")"),
                );
                None
            }
        }
    }

    fn account(&mut self, path: &[Seg<'_>], value: Option<Value>) -> Option<Account> {
        let value = value?;
        let account = match &value {
            Value::Integer(i) => u32::try_from(*i).ok().filter(|&id| id != u32::MAX).map(Account::Id),
            Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                s.parse().ok().filter(|&id| id != u32::MAX).map(Account::Id)
            }
            Value::String(s) => {
                let mut chars = s.chars();
                let first = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
                let rest = s
                    .trim_end_matches('$')
                    .chars()
                    .skip(1)
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
                (first && rest && s.len() <= 32).then(|| Account::Name(s.clone()))
            }
            _ => None,
        };
        if account.is_none() {
            self.err(path, format!("invalid user or group {value} (expected a name like \"etcd\" or a numeric id)"));
        }
        account
    }

    fn service(&mut self, raw: RawService) -> Service {
        const S: Seg<'static> = Key("service");
        self.absolute_program(&[S, Key("exec")], &raw.exec);
        for (k, v) in &raw.environment {
            let mut chars = k.chars();
            let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                self.err(
                    &[S, Key("environment"), Key(k)],
                    format!("invalid variable name {k:?} (expected letters, digits and _, not starting with a digit)"),
                );
            }
            if v.contains('\0') {
                self.err(&[S, Key("environment"), Key(k)], "value contains a NUL byte");
            }
        }
        let working_directory = raw.working_directory.and_then(|w| {
            if w.starts_with('/') {
                Some(PathBuf::from(w))
            } else {
                self.err(&[S, Key("working_directory")], format!("{w:?} is not an absolute path"));
                None
            }
        });
        let user = self.account(&[S, Key("user")], raw.user);
        let group = self.account(&[S, Key("group")], raw.group);
        let kind = raw.kind;
        let default_ready = match kind {
            Kind::LongRunning => Ready::Started,
            Kind::Oneshot => Ready::Exit,
        };
        let ready = match raw.ready {
            None => default_ready,
            Some(v) => self.ready(kind, &v).unwrap_or(default_ready),
        };
        let start_timeout = self.duration(&[S, Key("start_timeout")], raw.start_timeout, DEFAULT_START_TIMEOUT);
        let stop_signal = match raw.stop_signal {
            None => DEFAULT_STOP_SIGNAL,
            Some(s) => parse_signal(&s).unwrap_or_else(|| {
                self.err(
                    &[S, Key("stop_signal")],
                    format!("invalid signal {s:?} (expected a name like \"SIGTERM\" or \"SIGINT\")"),
                );
                DEFAULT_STOP_SIGNAL
            }),
        };
        let stop_timeout = self.duration(&[S, Key("stop_timeout")], raw.stop_timeout, DEFAULT_STOP_TIMEOUT);
        Service {
            exec: raw.exec,
            environment: raw.environment,
            working_directory,
            user,
            group,
            kind,
            ready,
            start_timeout,
            stop_signal,
            stop_timeout,
            kill_mode: raw.kill_mode,
        }
    }

    fn ready(&mut self, kind: Kind, value: &Value) -> Option<Ready> {
        const PATH: [Seg<'static>; 2] = [Key("service"), Key("ready")];
        let ready = match value {
            Value::String(s) if s == "notify" => Ready::Notify,
            Value::String(s) if s == "started" => Ready::Started,
            Value::String(s) if s == "exit" => Ready::Exit,
            Value::Table(t) if t.len() == 1 && t.contains_key("tcp") => {
                let addr = t.get("tcp")?;
                Ready::Tcp(self.socket_addr(&[Key("service"), Key("ready"), Key("tcp")], addr)?)
            }
            _ => {
                self.err(
                    &PATH,
                    format!(
                        "invalid readiness {value} (expected \"notify\", \"started\", \"exit\" \
                         or {{ tcp = \"IP:PORT\" }})"
                    ),
                );
                return None;
            }
        };
        match (kind, ready) {
            (Kind::Oneshot, Ready::Exit) | (Kind::LongRunning, Ready::Notify | Ready::Started | Ready::Tcp(_)) => {
                Some(ready)
            }
            (Kind::Oneshot, _) => {
                self.err(&PATH, "a oneshot is ready when it exits 0: use ready = \"exit\" or leave it out");
                None
            }
            (Kind::LongRunning, _) => {
                self.err(&PATH, "ready = \"exit\" is for kind = \"oneshot\"");
                None
            }
        }
    }

    fn dependencies(&mut self, name: &UnitName, raw: RawDependencies) -> Dependencies {
        let mut deps = Dependencies::default();
        for (relation, list) in
            [(Relation::Requires, raw.requires), (Relation::Wants, raw.wants), (Relation::After, raw.after)]
        {
            for (i, entry) in list.iter().enumerate() {
                let path = [Key("dependencies"), Key(relation.key()), Index(i)];
                match UnitName::new(entry) {
                    Err(e) => self.err(&path, e),
                    Ok(dep) if dep == *name => {
                        self.err(&path, format!("{name} cannot depend on itself"));
                    }
                    Ok(dep) => {
                        let out = deps.get_mut(relation);
                        // A repeated entry says nothing new.
                        if !out.iter().any(|d| d.name == dep) {
                            out.push(Dependency { name: dep, at: self.src.locate(&path) });
                        }
                    }
                }
            }
        }
        deps
    }

    fn restart(&mut self, kind: Kind, raw: RawRestart) -> Restart {
        const R: Seg<'static> = Key("restart");
        let policy = match (kind, raw.policy) {
            (Kind::Oneshot, Some(RestartPolicy::Always)) => {
                self.err(&[R, Key("policy")], "a oneshot that exited 0 is done: use \"on-failure\" or \"never\"");
                RestartPolicy::Never
            }
            (_, Some(p)) => p,
            (Kind::LongRunning, None) => RestartPolicy::OnFailure,
            (Kind::Oneshot, None) => RestartPolicy::Never,
        };
        let backoff_initial = self.duration(&[R, Key("backoff_initial")], raw.backoff_initial, DEFAULT_BACKOFF_INITIAL);
        let backoff_max = self.duration(&[R, Key("backoff_max")], raw.backoff_max, DEFAULT_BACKOFF_MAX);
        if backoff_initial > backoff_max {
            self.err(
                &[R, Key("backoff_initial")],
                format!("backoff_initial ({backoff_initial:?}) is more than backoff_max ({backoff_max:?})"),
            );
        }
        let start_limit = raw.start_limit.unwrap_or(DEFAULT_START_LIMIT);
        if start_limit == 0 {
            self.err(&[R, Key("start_limit")], "must be at least 1");
        }
        let start_limit_interval =
            self.duration(&[R, Key("start_limit_interval")], raw.start_limit_interval, DEFAULT_START_LIMIT_INTERVAL);
        Restart { policy, backoff_initial, backoff_max, start_limit, start_limit_interval }
    }

    fn limit(&mut self, path: &[Seg<'_>], value: Option<Value>, sizes: bool) -> Option<Limit> {
        let value = value?;
        let limit = match &value {
            Value::String(s) if s == "max" => Some(Limit::Max),
            Value::String(s) if sizes => parse_size(s).map(Limit::Value),
            Value::Integer(i) => u64::try_from(*i).ok().map(Limit::Value),
            _ => None,
        };
        match limit {
            Some(Limit::Value(0)) | None => {
                let expected = if sizes {
                    "expected bytes or a number with K, M, G or T, e.g. \"512M\", or \"max\""
                } else {
                    "expected a number of at least 1, or \"max\""
                };
                let what = if sizes { "size" } else { "limit" };
                self.err(path, format!("invalid {what} {value} ({expected})"));
                None
            }
            some => some,
        }
    }

    fn limits(&mut self, raw: RawLimits) -> Limits {
        const L: Seg<'static> = Key("limits");
        let memory_max = self.limit(&[L, Key("memory_max")], raw.memory_max, true);
        let pids_max = self.limit(&[L, Key("pids_max")], raw.pids_max, false);
        let cpu_weight = raw.cpu_weight.and_then(|w| match u16::try_from(w) {
            Ok(w) if (1..=10_000).contains(&w) => Some(w),
            _ => {
                self.err(
                    &[L, Key("cpu_weight")],
                    format!("cpu_weight {w} is not in 1..=10000 (100 is the default share)"),
                );
                None
            }
        });
        Limits { memory_max, cpu_weight, pids_max }
    }

    fn health(&mut self, kind: Kind, raw: RawHealth) -> Health {
        const H: Seg<'static> = Key("health");
        if kind == Kind::Oneshot {
            self.err(&[H], "a oneshot has no health check");
        }
        let invalid = |v: &Value| {
            format!(
                "invalid health check {v} (expected {{ command = [\"/usr/bin/program\", ...] }} \
                 or {{ tcp = \"IP:PORT\" }})"
            )
        };
        let check = match &raw.check {
            Value::Table(t) if t.len() == 1 && t.contains_key("tcp") => {
                t.get("tcp").and_then(|a| self.socket_addr(&[H, Key("check"), Key("tcp")], a)).map(HealthCheck::Tcp)
            }
            Value::Table(t) if t.len() == 1 && t.contains_key("command") => {
                match t.get("command").and_then(Value::as_array) {
                    Some(items) => {
                        let argv: Option<Vec<String>> = items.iter().map(|i| i.as_str().map(str::to_owned)).collect();
                        match argv {
                            Some(argv) => {
                                self.absolute_program(&[H, Key("check"), Key("command")], &argv);
                                Some(HealthCheck::Command(argv))
                            }
                            None => {
                                self.err(&[H, Key("check"), Key("command")], "expected an array of strings");
                                None
                            }
                        }
                    }
                    None => {
                        self.err(&[H, Key("check"), Key("command")], "expected an array of strings");
                        None
                    }
                }
            }
            v => {
                self.err(&[H, Key("check")], invalid(v));
                None
            }
        };
        let interval = self.duration(&[H, Key("interval")], raw.interval, DEFAULT_HEALTH_INTERVAL);
        let timeout = self.duration(&[H, Key("timeout")], raw.timeout, DEFAULT_HEALTH_TIMEOUT);
        let failures = raw.failures.unwrap_or(DEFAULT_HEALTH_FAILURES);
        if failures == 0 {
            self.err(&[H, Key("failures")], "must be at least 1");
        }
        Health { check: check.unwrap_or(HealthCheck::Command(Vec::new())), interval, timeout, failures }
    }

    fn conditions(&mut self, raw: RawConditions) -> Conditions {
        const P: [Seg<'static>; 2] = [Key("conditions"), Key("path_exists")];
        let mut path_exists = Vec::new();
        let entries: Vec<(Option<usize>, &Value)> = match &raw.path_exists {
            None => Vec::new(),
            Some(Value::Array(items)) => items.iter().enumerate().map(|(i, v)| (Some(i), v)).collect(),
            Some(v) => vec![(None, v)],
        };
        for (index, value) in entries {
            let mut path = P.to_vec();
            if let Some(i) = index {
                path.push(Index(i));
            }
            let Some(s) = value.as_str() else {
                self.err(&path, format!("expected a path or a list of paths, not {value}"));
                continue;
            };
            let (negate, p) = match s.strip_prefix('!') {
                Some(p) => (true, p),
                None => (false, s),
            };
            if p.starts_with('/') {
                path_exists.push(PathCondition { path: PathBuf::from(p), negate });
            } else {
                self.err(&path, format!("{s:?} is not an absolute path (\"!/path\" negates)"));
            }
        }
        Conditions { first_boot: raw.first_boot, path_exists }
    }
}
