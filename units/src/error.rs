//! Errors in unit files: every one names the file, the line and the key.

use std::fmt;
use std::path::PathBuf;

use super::name::{Relation, UnitName};

/// Where a problem is: file, 1-based line and column, and the key path
/// (`service.stop_timeout`, `dependencies.requires[1]`).
///
/// `line` and `key` are `None` only for problems that have no place in the
/// text: the file cannot be read, or its name is not a unit name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub key: Option<String>,
}

impl fmt::Display for Location {
    /// `FILE:LINE: key KEY`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key {key}")?;
        }
        Ok(())
    }
}

impl Location {
    /// `FILE:LINE`, for naming a place inside a longer message.
    pub fn file_line(&self) -> String {
        match self.line {
            Some(line) => format!("{}:{line}", self.file.display()),
            None => self.file.display().to_string(),
        }
    }
}

/// A problem with one unit file, or with the dependencies between units.
///
/// Displays as `FILE:LINE: key KEY: what is wrong`, e.g.
/// `/etc/berth/units/etcd.toml:12: key service.stop_timeout: invalid duration "10" (expected e.g. 500ms, 10s, 2m)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitError {
    pub at: Location,
    pub kind: ErrorKind,
}

impl fmt::Display for UnitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.kind)
    }
}

impl std::error::Error for UnitError {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// The file could not be read.
    Io(String),
    /// The file is larger than a unit file can sensibly be.
    TooLarge { size: u64, limit: u64 },
    /// The file name is not `NAME.toml` with a valid unit name.
    BadFileName(String),
    /// The text is not TOML, or does not fit the format (unknown key,
    /// wrong type, missing key): toml's message.
    Syntax(String),
    /// A value of the right type that is not acceptable.
    Invalid(String),
    /// A dependency names no unit. For `requires` the unit is left out; for
    /// `wants` and `after` only the edge is dropped.
    MissingDependency { unit: UnitName, dependency: UnitName, relation: Relation },
    /// Units that wait for each other: all of them are left out.
    Cycle(Cycle),
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Io(e) => write!(f, "cannot read: {e}"),
            ErrorKind::TooLarge { size, limit } => {
                write!(f, "file is {size} bytes, more than the {limit} a unit file may have")
            }
            ErrorKind::BadFileName(m) | ErrorKind::Syntax(m) | ErrorKind::Invalid(m) => f.write_str(m),
            ErrorKind::MissingDependency { unit, dependency, relation } => {
                let consequence = match relation {
                    Relation::Requires => format!("{unit} is left out"),
                    Relation::Wants | Relation::After => "the dependency is ignored".to_owned(),
                };
                write!(f, "{unit} {relation} {dependency}, but there is no unit {dependency} ({consequence})")
            }
            ErrorKind::Cycle(c) => c.fmt(f),
        }
    }
}

/// A dependency cycle, named in full: `a -> b -> c -> a`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    /// The edges of one cycle in order; the last one leads back to the
    /// first unit.
    pub steps: Vec<CycleStep>,
    /// Every unit of the strongly connected component the cycle is in
    /// (sorted): all of them are left out. Usually the units of `steps`.
    pub members: Vec<UnitName>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CycleStep {
    pub from: UnitName,
    pub to: UnitName,
    pub relation: Relation,
    /// The dependency entry that makes this edge.
    pub at: Location,
}

impl fmt::Display for Cycle {
    /// `dependency cycle a -> b -> c -> a (a requires b at FILE:LINE, ...);
    /// left out: a, b, c`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("dependency cycle ")?;
        if let Some(first) = self.steps.first() {
            write!(f, "{}", first.from)?;
        }
        for step in &self.steps {
            write!(f, " -> {}", step.to)?;
        }
        f.write_str(" (")?;
        for (i, step) in self.steps.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{} {} {} at {}", step.from, step.relation, step.to, step.at.file_line())?;
        }
        f.write_str("); left out: ")?;
        for (i, m) in self.members.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{m}")?;
        }
        Ok(())
    }
}
