//! The names a unit file uses for other units: a unit's name and the
//! relation a dependency entry states. Kept apart from the format so that
//! errors ([`super::error`]) can name units and relations without depending
//! on the parser.

use std::fmt;

/// A unit's name: the file stem of `NAME.toml`, `[a-z0-9][a-z0-9-_.@]*`,
/// at most 128 characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnitName(String);

impl UnitName {
    pub const MAX_LEN: usize = 128;

    /// `Err` says what a unit name may be.
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
