//! The TOML reader behind [`super::load`]: each file read into a tree of
//! values that keep their place (file, line, key path), the two merged key
//! by key, then resolved into a [`Config`] with errors that name the place.

use std::io;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::{Spanned, Value};

use super::*;

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
pub(super) struct Layer {
    deadline: Option<At<Duration>>,
    retry: Option<At<Duration>>,
    checks: Option<At<Vec<Check>>>,
    enabled: Option<At<bool>>,
    source: Option<At<String>>,
    interval: Option<At<Duration>>,
    reboot: Option<At<RebootPolicy>>,
    window: Option<At<Window>>,
    retries: Option<At<u32>>,
    strategy: Option<At<RebootStrategy>>,
    lock_max: Option<At<u32>>,
    lock_ttl: Option<At<Duration>>,
    lock_endpoints: Option<At<Vec<String>>>,
}

impl Layer {
    /// The file's settings; none when it does not exist.
    pub(super) fn read(file: &Path) -> Result<Layer, ConfigError> {
        match read_text(file) {
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
    pub(super) fn merge(self, over: Layer) -> Layer {
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
            strategy: over.strategy.or(self.strategy),
            lock_max: over.lock_max.or(self.lock_max),
            lock_ttl: over.lock_ttl.or(self.lock_ttl),
            lock_endpoints: over.lock_endpoints.or(self.lock_endpoints),
        }
    }

    /// The settings, built-in values where no file sets a key, after the
    /// checks between keys.
    pub(super) fn resolve(self) -> Result<Config, ConfigError> {
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
            reboot_lock: RebootLock {
                strategy: self.strategy.map_or(d.reboot_lock.strategy, |a| a.value),
                max: self.lock_max.map_or(d.reboot_lock.max, |a| a.value),
                ttl: get(self.lock_ttl, d.reboot_lock.ttl),
                endpoints: self.lock_endpoints.map_or(d.reboot_lock.endpoints, |a| a.value),
            },
        })
    }
}

/// A config file larger than this is refused rather than read into PID1.
pub(super) const MAX_CONFIG_FILE: u64 = 1 << 20;

/// The text of the config file `file`. PID1 reads it at boot, so it goes
/// through [`berth_layout::regular_file::read`]: a FIFO or a device in its
/// place is an error, not a hang.
fn read_text(file: &Path) -> io::Result<String> {
    let bytes = berth_layout::regular_file::read(file, MAX_CONFIG_FILE)?;
    String::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("not UTF-8 text ({e})")))
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
                "reboot_lock" => self.reboot_lock(&mut layer, node, &at("reboot_lock"))?,
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

impl Doc<'_> {
    fn reboot_lock(&self, layer: &mut Layer, node: &Node, section: &Place) -> Result<(), ConfigError> {
        for (place, value) in self.entries(section, node)? {
            match leaf(&place) {
                "strategy" => layer.strategy = Some(parsed(string(place, value)?)?),
                "max" => match value {
                    Node::Scalar(Value::Integer(n)) => match u32::try_from(*n) {
                        Ok(n) if n >= 1 => layer.lock_max = Some(At { value: n, place }),
                        _ => {
                            let why = format!("{n} is not a count of hosts from 1 to {}", u32::MAX);
                            return Err(place.error(ConfigErrorKind::Invalid(why)));
                        }
                    },
                    other => return Err(place.error(wrong("an integer", other))),
                },
                "ttl" => {
                    let ttl = duration(place, value)?;
                    if ttl.value < Duration::from_secs(2) || ttl.value.subsec_nanos() != 0 {
                        let why = "the lease TTL is whole seconds, at least 2s (etcd's leases)".to_string();
                        return Err(ttl.place.error(ConfigErrorKind::Invalid(why)));
                    }
                    layer.lock_ttl = Some(ttl);
                }
                "endpoints" => layer.lock_endpoints = Some(endpoints(place, value)?),
                _ => return Err(place.error(ConfigErrorKind::UnknownKey)),
            }
        }
        Ok(())
    }
}

/// A non-empty array of `http://` or `https://` URLs.
fn endpoints(place: Place, node: &Node) -> Result<At<Vec<String>>, ConfigError> {
    let expected = "a non-empty array of etcd client URLs (\"http://HOST:2379\")";
    let Node::Array(items) = node else {
        return Err(place.error(wrong(expected, node)));
    };
    let mut urls = Vec::new();
    for item in items {
        match item.get_ref() {
            Node::Scalar(Value::String(s)) if s.starts_with("http://") || s.starts_with("https://") => {
                urls.push(s.clone())
            }
            other => return Err(place.error(wrong(expected, other))),
        }
    }
    if urls.is_empty() {
        return Err(place.error(ConfigErrorKind::WrongType { expected, found: "an empty array".into() }));
    }
    Ok(At { value: urls, place })
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
