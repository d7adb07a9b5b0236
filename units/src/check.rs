//! [`parse_unit`]: one unit file's text -> a [`Unit`]. What the values
//! mean: each one checked, defaults filled in, the [`Unit`] built. Every problem is collected with its key's line
//! and path; keys and types are checked on the way by [`Reader`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use toml::Value;

use super::document::{Node, Source, Table};
use super::error::UnitError;
use super::format::{
    Account, Conditions, Dependencies, Dependency, Health, HealthAction, HealthCheck, KillMode, Kind, Limit, Limits,
    PathCondition, Ready, Restart, RestartPolicy, Service, Unit, DEFAULT_BACKOFF_INITIAL, DEFAULT_BACKOFF_MAX,
    DEFAULT_HEALTH_FAILURES, DEFAULT_HEALTH_INTERVAL, DEFAULT_HEALTH_TIMEOUT, DEFAULT_START_LIMIT,
    DEFAULT_START_LIMIT_INTERVAL, DEFAULT_START_TIMEOUT, DEFAULT_STATE_DIRECTORY_MODE, DEFAULT_STOP_SIGNAL,
    DEFAULT_STOP_TIMEOUT,
};
use super::format::{ResourceLimit, Rlimit};
use super::name::{Relation, UnitName};
use super::shape::{Field, Place, Reader, Section};
use super::values::{parse_duration, parse_signal, parse_size};

/// The keys of each table, in the order "expected one of" lists them.
const ROOT: &[&str] = &["description", "service", "dependencies", "restart", "limits", "health", "conditions"];
const SERVICE: &[&str] = &[
    "exec",
    "environment",
    "working_directory",
    "user",
    "group",
    "state_directory",
    "state_directory_mode",
    "kind",
    "ready",
    "start_timeout",
    "stop_signal",
    "stop_timeout",
    "kill_mode",
    "exec_stop",
];
const DEPENDENCIES: &[&str] = &["requires", "wants", "after", "required_for_ready", "idle"];
const RESTART: &[&str] = &["policy", "backoff_initial", "backoff_max", "start_limit", "start_limit_interval"];
/// The cgroup limits, then every [`Rlimit`] key in its order.
const LIMITS: &[&str] = &[
    "memory_max",
    "cpu_weight",
    "pids_max",
    "nofile",
    "nproc",
    "core",
    "memlock",
    "stack",
    "as",
    "fsize",
    "sigpending",
    "msgqueue",
    "rtprio",
];
const HEALTH: &[&str] = &["check", "interval", "timeout", "failures", "on_failure"];
const CONDITIONS: &[&str] = &["first_boot", "path_exists"];

const DURATION_HINT: &str = "expected e.g. 500ms, 10s, 2m";

/// Parse and check one unit file's text. `file` is only used to name it in
/// errors and in [`Unit::file`]. Every problem found is returned, each with
/// its line and key; a unit with any problem is not returned at all.
pub fn parse_unit(name: &UnitName, file: &Path, text: &str) -> Result<Unit, Vec<UnitError>> {
    let src = Source::new(file, text);
    let table = src.parse()?;
    unit(&src, &table, name, file)
}

/// Check the root table of `src` and build its unit, or return every
/// problem found.
fn unit(src: &Source<'_>, table: &Table, name: &UnitName, file: &Path) -> Result<Unit, Vec<UnitError>> {
    let mut c = Check { r: Reader::new(src) };
    let root = c.r.root(table, ROOT);
    let description = c.r.optional::<String>(&root, "description").unwrap_or_default();
    // `None` only with its problem reported: no `[service]`, not a table,
    // or no usable `exec`.
    let service = c.r.required(&root, "service").and_then(|f| c.r.table(&f, SERVICE)).and_then(|s| c.service(&s));
    let kind = service.as_ref().map_or_else(Kind::default, |s| s.kind);
    let section = c.r.section_or_default(&root, "dependencies", DEPENDENCIES);
    let dependencies = c.dependencies(name, &section);
    let section = c.r.section_or_default(&root, "restart", RESTART);
    let restart = c.restart(kind, &section);
    let section = c.r.section_or_default(&root, "limits", LIMITS);
    let limits = c.limits(&section);
    let health = c.r.section(&root, "health", HEALTH).map(|h| c.health(kind, &h));
    let section = c.r.section_or_default(&root, "conditions", CONDITIONS);
    let conditions = c.conditions(&section);
    match service {
        Some(service) if c.r.errors.is_empty() => Ok(Unit {
            name: name.clone(),
            file: file.to_path_buf(),
            description,
            service,
            dependencies,
            restart,
            limits,
            health,
            conditions,
        }),
        _ => Err(c.r.errors),
    }
}

struct Check<'a> {
    r: Reader<'a>,
}

impl<'t> Check<'_> {
    fn duration(&mut self, section: &Section<'t>, key: &str, default: Duration) -> Duration {
        let Some(field) = section.get(key) else { return default };
        let node = field.node;
        match node.as_str().map(parse_duration) {
            Some(Some(d)) if !d.is_zero() => d,
            Some(Some(_)) => {
                self.r.invalid(&field.at, format!("invalid duration {node}: must be more than 0"));
                default
            }
            _ => {
                self.r.invalid(&field.at, format!("invalid duration {node} ({DURATION_HINT})"));
                default
            }
        }
    }

    /// A command line: a program given by absolute path, no NUL anywhere.
    fn absolute_program(&mut self, at: &Place<'t>, argv: &[(Place<'t>, String)]) {
        match argv.first() {
            None => self.r.invalid(at, "must name a program: [\"/usr/bin/program\", \"arg\", ...]"),
            Some((place, program)) if !program.starts_with('/') => {
                self.r.invalid(place, format!("program {program:?} is not an absolute path"));
            }
            Some(_) => {}
        }
        for (place, arg) in argv {
            if arg.contains('\0') {
                self.r.invalid(place, "contains a NUL byte");
            }
        }
    }

    fn socket_addr(&mut self, field: &Field<'t>) -> Option<SocketAddr> {
        let node = field.node;
        match node.as_str().map(SocketAddr::from_str) {
            Some(Ok(a)) => Some(a),
            _ => {
                self.r.invalid(
                    &field.at,
                    format!("invalid address {node} (expected IP:PORT, e.g. \"127.0.0.1:2379\" or \"[::1]:22\")"),
                );
                None
            }
        }
    }

    fn account(&mut self, field: &Field<'t>) -> Option<Account> {
        let node = field.node;
        let account = match node {
            Node::Scalar(Value::Integer(i)) => u32::try_from(*i).ok().filter(|&id| id != u32::MAX).map(Account::Id),
            Node::Scalar(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                s.parse().ok().filter(|&id| id != u32::MAX).map(Account::Id)
            }
            Node::Scalar(Value::String(s)) => {
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
            self.r.invalid(
                &field.at,
                format!("invalid user or group {node} (expected a name like \"etcd\" or a numeric id)"),
            );
        }
        account
    }

    /// `state_directory`: relative paths under /var/lib, without `.` or
    /// `..` parts; each once.
    fn state_directory(&mut self, s: &Section<'t>) -> Vec<String> {
        let Some(names) = s.get("state_directory").and_then(|f| self.r.strings(&f)) else { return Vec::new() };
        let mut out: Vec<String> = Vec::new();
        for (at, name) in names {
            let ok = !name.is_empty()
                && !name.starts_with('/')
                && name.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
                && !name.contains('\0');
            if !ok {
                self.r.invalid(
                    &at,
                    format!("invalid state directory {name:?} (expected a relative path under /var/lib like \"etcd\")"),
                );
            } else if out.contains(&name) {
                self.r.invalid(&at, format!("state directory {name:?} is listed twice"));
            } else {
                out.push(name);
            }
        }
        out
    }

    fn environment(&mut self, s: &Section<'t>) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(env) = s.get("environment").and_then(|f| self.r.map(&f)) else { return out };
        for field in env.fields() {
            let Some(v) = self.r.typed::<String>(&field) else { continue };
            let k = field.key();
            let mut chars = k.chars();
            let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                self.r.invalid(
                    &field.at,
                    format!("invalid variable name {k:?} (expected letters, digits and _, not starting with a digit)"),
                );
            }
            if v.contains('\0') {
                self.r.invalid(&field.at, "value contains a NUL byte");
            }
            out.insert(k.to_owned(), v);
        }
        out
    }

    /// `None` when `exec` is missing or not a list of strings (reported).
    fn service(&mut self, s: &Section<'t>) -> Option<Service> {
        let exec = self.r.required(s, "exec").and_then(|f| self.r.strings(&f));
        if let Some(argv) = &exec {
            self.absolute_program(&s.place("exec"), argv);
        }
        let environment = self.environment(s);
        let working_directory = s.get("working_directory").and_then(|f| {
            let w = self.r.typed::<String>(&f)?;
            if w.starts_with('/') {
                Some(PathBuf::from(w))
            } else {
                self.r.invalid(&f.at, format!("{w:?} is not an absolute path"));
                None
            }
        });
        let user = s.get("user").and_then(|f| self.account(&f));
        let group = s.get("group").and_then(|f| self.account(&f));
        let state_directory = self.state_directory(s);
        let state_directory_mode = s
            .get("state_directory_mode")
            .and_then(|f| {
                let mode = self.r.typed::<String>(&f)?;
                let parsed = u32::from_str_radix(&mode, 8).ok().filter(|_| (3..=4).contains(&mode.len()));
                if parsed.is_none() {
                    self.r.invalid(&f.at, format!("invalid mode {mode:?} (expected an octal mode like \"0700\")"));
                }
                parsed
            })
            .unwrap_or(DEFAULT_STATE_DIRECTORY_MODE);
        let kind = self.r.optional::<Kind>(s, "kind").unwrap_or_default();
        let default_ready = match kind {
            Kind::LongRunning => Ready::Started,
            Kind::Oneshot => Ready::Exit,
        };
        let ready = match s.get("ready") {
            None => default_ready,
            Some(f) => self.ready(kind, &f).unwrap_or(default_ready),
        };
        let start_timeout = self.duration(s, "start_timeout", DEFAULT_START_TIMEOUT);
        let stop_signal = match s.get("stop_signal") {
            None => None,
            Some(f) => self.r.typed::<String>(&f).and_then(|name| {
                let signal = parse_signal(&name);
                if signal.is_none() {
                    self.r.invalid(
                        &f.at,
                        format!("invalid signal {name:?} (expected a name like \"SIGTERM\" or \"SIGINT\")"),
                    );
                }
                signal
            }),
        }
        .unwrap_or(DEFAULT_STOP_SIGNAL);
        let stop_timeout = self.duration(s, "stop_timeout", DEFAULT_STOP_TIMEOUT);
        let kill_mode = self.r.optional::<KillMode>(s, "kill_mode").unwrap_or_default();
        let exec_stop = s.get("exec_stop").and_then(|f| {
            let argv = self.r.strings(&f)?;
            self.absolute_program(&f.at, &argv);
            Some(argv.into_iter().map(|(_, arg)| arg).collect())
        });
        Some(Service {
            exec: exec?.into_iter().map(|(_, arg)| arg).collect(),
            environment,
            working_directory,
            user,
            group,
            state_directory,
            state_directory_mode,
            kind,
            ready,
            start_timeout,
            stop_signal,
            stop_timeout,
            kill_mode,
            exec_stop,
        })
    }

    fn ready(&mut self, kind: Kind, field: &Field<'t>) -> Option<Ready> {
        let ready = match field.node {
            Node::Scalar(Value::String(s)) if s == "notify" => Ready::Notify,
            Node::Scalar(Value::String(s)) if s == "started" => Ready::Started,
            Node::Scalar(Value::String(s)) if s == "exit" => Ready::Exit,
            _ => match field.sole_entry("tcp") {
                Some(tcp) => Ready::Tcp(self.socket_addr(&tcp)?),
                None => {
                    self.r.invalid(
                        &field.at,
                        format!(
                            "invalid readiness {} (expected \"notify\", \"started\", \"exit\" \
                             or {{ tcp = \"IP:PORT\" }})",
                            field.node
                        ),
                    );
                    return None;
                }
            },
        };
        match (kind, ready) {
            (Kind::Oneshot, Ready::Exit) | (Kind::LongRunning, Ready::Notify | Ready::Started | Ready::Tcp(_)) => {
                Some(ready)
            }
            (Kind::Oneshot, _) => {
                self.r.invalid(&field.at, "a oneshot is ready when it exits 0: use ready = \"exit\" or leave it out");
                None
            }
            (Kind::LongRunning, _) => {
                self.r.invalid(&field.at, "ready = \"exit\" is for kind = \"oneshot\"");
                None
            }
        }
    }

    fn dependencies(&mut self, name: &UnitName, d: &Section<'t>) -> Dependencies {
        let mut deps = Dependencies::default();
        for relation in Relation::ALL {
            let Some(entries) = d.get(relation.key()).and_then(|f| self.r.strings(&f)) else { continue };
            for (at, entry) in entries {
                match UnitName::new(&entry) {
                    Err(e) => self.r.invalid(&at, e),
                    Ok(dep) if dep == *name => self.r.invalid(&at, format!("{name} cannot depend on itself")),
                    Ok(dep) => {
                        let out = deps.get_mut(relation);
                        // A repeated entry says nothing new.
                        if !out.iter().any(|d| d.name == dep) {
                            out.push(Dependency { name: dep, at: self.r.locate(&at) });
                        }
                    }
                }
            }
        }
        deps.required_for_ready = self.r.optional::<bool>(d, "required_for_ready").unwrap_or(false);
        deps.idle = self.r.optional::<bool>(d, "idle").unwrap_or(false);
        deps
    }

    fn restart(&mut self, kind: Kind, r: &Section<'t>) -> Restart {
        let policy = match (kind, self.r.optional::<RestartPolicy>(r, "policy")) {
            (Kind::Oneshot, Some(RestartPolicy::Always)) => {
                self.r.invalid(&r.place("policy"), "a oneshot that exited 0 is done: use \"on-failure\" or \"never\"");
                RestartPolicy::Never
            }
            (_, Some(p)) => p,
            (Kind::LongRunning, None) => RestartPolicy::OnFailure,
            (Kind::Oneshot, None) => RestartPolicy::Never,
        };
        let backoff_initial = self.duration(r, "backoff_initial", DEFAULT_BACKOFF_INITIAL);
        let backoff_max = self.duration(r, "backoff_max", DEFAULT_BACKOFF_MAX);
        if backoff_initial > backoff_max {
            self.r.invalid(
                &r.place("backoff_initial"),
                format!("backoff_initial ({backoff_initial:?}) is more than backoff_max ({backoff_max:?})"),
            );
        }
        let start_limit = self.r.optional::<u32>(r, "start_limit").unwrap_or(DEFAULT_START_LIMIT);
        if start_limit == 0 {
            self.r.invalid(&r.place("start_limit"), "must be at least 1");
        }
        let start_limit_interval = self.duration(r, "start_limit_interval", DEFAULT_START_LIMIT_INTERVAL);
        Restart { policy, backoff_initial, backoff_max, start_limit, start_limit_interval }
    }

    /// A cgroup limit: `"max"`, a number, or with `sizes` a size.
    fn limit(&mut self, field: Option<Field<'t>>, sizes: bool) -> Option<Limit> {
        let field = field?;
        let node = field.node;
        let limit = match node {
            Node::Scalar(Value::String(s)) if s == "max" => Some(Limit::Max),
            Node::Scalar(Value::String(s)) if sizes => parse_size(s).map(Limit::Value),
            Node::Scalar(Value::Integer(i)) => u64::try_from(*i).ok().map(Limit::Value),
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
                self.r.invalid(&field.at, format!("invalid {what} {node} ({expected})"));
                None
            }
            some => some,
        }
    }

    fn limits(&mut self, l: &Section<'t>) -> Limits {
        let memory_max = self.limit(l.get("memory_max"), true);
        let pids_max = self.limit(l.get("pids_max"), false);
        let cpu_weight = self.r.optional::<i64>(l, "cpu_weight").and_then(|w| match u16::try_from(w) {
            Ok(w) if (1..=10_000).contains(&w) => Some(w),
            _ => {
                self.r.invalid(
                    &l.place("cpu_weight"),
                    format!("cpu_weight {w} is not in 1..=10000 (100 is the default share)"),
                );
                None
            }
        });
        let mut rlimits = BTreeMap::new();
        for r in Rlimit::ALL {
            if let Some(limit) = l.get(r.key()).and_then(|f| self.rlimit(r, &f)) {
                rlimits.insert(r, limit);
            }
        }
        Limits { memory_max, cpu_weight, pids_max, rlimits }
    }

    /// A process resource limit: a number (bytes may take K, M, G, T),
    /// `"infinity"`, or `"SOFT:HARD"` of those, soft not above hard.
    fn rlimit(&mut self, r: Rlimit, field: &Field<'t>) -> Option<ResourceLimit> {
        let node = field.node;
        let one = |s: &str| -> Option<Limit> {
            match s {
                "infinity" => Some(Limit::Max),
                s if r.is_bytes() => parse_size(s).map(Limit::Value),
                s if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok().map(Limit::Value),
                _ => None,
            }
        };
        let limit = match node {
            Node::Scalar(Value::Integer(i)) => {
                u64::try_from(*i).ok().map(|v| ResourceLimit { soft: Limit::Value(v), hard: Limit::Value(v) })
            }
            Node::Scalar(Value::String(s)) => match s.split_once(':') {
                Some((soft, hard)) => one(soft).zip(one(hard)).map(|(soft, hard)| ResourceLimit { soft, hard }),
                None => one(s).map(|v| ResourceLimit { soft: v, hard: v }),
            },
            _ => None,
        };
        let Some(limit) = limit else {
            let example = if r.is_bytes() { "\"64M\", \"8M:infinity\"" } else { "65536, \"1024:524288\"" };
            let number = if r.is_bytes() { "bytes or a number with K, M, G or T" } else { "a number" };
            self.r.invalid(
                &field.at,
                format!(
                    "invalid limit {node} (expected {number}, \"infinity\", or \"SOFT:HARD\" of those, e.g. {example})"
                ),
            );
            return None;
        };
        let above = match (limit.soft, limit.hard) {
            (Limit::Max, Limit::Value(_)) => true,
            (Limit::Value(s), Limit::Value(h)) => s > h,
            _ => false,
        };
        if above {
            self.r.invalid(&field.at, format!("invalid limit {node}: the soft limit is above the hard limit"));
            return None;
        }
        Some(limit)
    }

    fn health(&mut self, kind: Kind, h: &Section<'t>) -> Health {
        if kind == Kind::Oneshot {
            self.r.invalid(h.at(), "a oneshot has no health check");
        }
        let check = self.r.required(h, "check").and_then(|field| {
            if let Some(tcp) = field.sole_entry("tcp") {
                return self.socket_addr(&tcp).map(HealthCheck::Tcp);
            }
            if let Some(command) = field.sole_entry("command") {
                let argv = self.r.strings(&command)?;
                self.absolute_program(&command.at, &argv);
                return Some(HealthCheck::Command(argv.into_iter().map(|(_, arg)| arg).collect()));
            }
            self.r.invalid(
                &field.at,
                format!(
                    "invalid health check {} (expected {{ command = [\"/usr/bin/program\", ...] }} \
                     or {{ tcp = \"IP:PORT\" }})",
                    field.node
                ),
            );
            None
        });
        let interval = self.duration(h, "interval", DEFAULT_HEALTH_INTERVAL);
        let timeout = self.duration(h, "timeout", DEFAULT_HEALTH_TIMEOUT);
        let failures = self.r.optional::<u32>(h, "failures").unwrap_or(DEFAULT_HEALTH_FAILURES);
        if failures == 0 {
            self.r.invalid(&h.place("failures"), "must be at least 1");
        }
        let on_failure = self.r.optional::<HealthAction>(h, "on_failure").unwrap_or_default();
        Health { check: check.unwrap_or(HealthCheck::Command(Vec::new())), interval, timeout, failures, on_failure }
    }

    fn conditions(&mut self, c: &Section<'t>) -> Conditions {
        let first_boot = self.r.optional::<bool>(c, "first_boot");
        let mut path_exists = Vec::new();
        // One path, or a list of them.
        let entries = match c.get("path_exists") {
            None => Vec::new(),
            Some(field) if matches!(field.node, Node::Array(_)) => self.r.array(&field).unwrap_or_default(),
            Some(field) => vec![field],
        };
        for field in entries {
            let Node::Scalar(Value::String(s)) = field.node else {
                self.r.invalid(&field.at, format!("expected a path or a list of paths, not {}", field.node));
                continue;
            };
            let (negate, p) = match s.strip_prefix('!') {
                Some(p) => (true, p),
                None => (false, s.as_str()),
            };
            if p.starts_with('/') {
                path_exists.push(PathCondition { path: PathBuf::from(p), negate });
            } else {
                self.r.invalid(&field.at, format!("{s:?} is not an absolute path (\"!/path\" negates)"));
            }
        }
        Conditions { first_boot, path_exists }
    }
}
