//! Where a value came from and what is wrong with it.
//!
//! Every error and warning about user data names its source, line and key,
//! printed as `SOURCE:LINE: key KEY: MESSAGE` (the shape of the unit files'
//! errors, `docs/units.md`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A place in a document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Place {
    /// The document's name: a path on the host (`check-config`), or where
    /// the machine found it (`fw_cfg:opt/org.berth/user-data`,
    /// `nocloud:/dev/vdb:user-data`, `imds:http://169.254.169.254/latest/user-data`,
    /// or the file given to `berthctl config apply`).
    pub source: String,
    /// 1-based; 0 when the problem is the document as a whole.
    pub line: usize,
    /// The key path, dotted, with list indexes: `users[1].ssh_authorized_keys[0]`;
    /// empty for the document as a whole.
    pub key: String,
}

impl Place {
    pub fn new(source: &str, line: usize, key: &str) -> Place {
        Place { source: source.to_string(), line, key: key.to_string() }
    }

    /// The same source and line, a key below this one: `users[0]` + `name`.
    pub fn child(&self, line: usize, key: &str) -> Place {
        let key = if self.key.is_empty() { key.to_string() } else { format!("{}.{key}", self.key) };
        Place { source: self.source.clone(), line, key }
    }

    /// The `index`th item of the list at this place.
    pub fn item(&self, line: usize, index: usize) -> Place {
        Place { source: self.source.clone(), line, key: format!("{}[{index}]", self.key) }
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.key.is_empty()) {
            (0, true) => write!(f, "{}", self.source),
            (0, false) => write!(f, "{}: key {}", self.source, self.key),
            (l, true) => write!(f, "{}:{l}", self.source),
            (l, false) => write!(f, "{}:{l}: key {}", self.source, self.key),
        }
    }
}

/// An error (the document is rejected) or a warning (it applies without
/// the part named).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    pub place: Place,
    pub message: String,
}

impl Diagnostic {
    pub fn new(place: Place, message: impl Into<String>) -> Diagnostic {
        Diagnostic { place, message: message.into() }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.place, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diagnostic_names_source_line_and_key() {
        let p = Place::new("user-data", 0, "").child(4, "users").item(5, 1).child(6, "shell");
        let d = Diagnostic::new(p, "expected a string, found a list");
        assert_eq!(d.to_string(), "user-data:6: key users[1].shell: expected a string, found a list");
        assert_eq!(Diagnostic::new(Place::new("u", 0, ""), "empty").to_string(), "u: empty");
    }
}
