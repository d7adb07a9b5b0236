//! Reading typed values out of tree nodes, with the YAML 1.1 rules
//! cloud-init (PyYAML) applies to plain scalars, and collecting every
//! error and warning instead of stopping at the first.

use crate::diag::{Diagnostic, Place};
use crate::tree::Format;
use crate::tree::{Key, Node, Scalar, Style, Value};

/// The diagnostics of one document, and its format (which decides whether
/// an unknown key is a warning or an error).
pub(crate) struct Ctx {
    pub format: Format,
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
}

impl Ctx {
    pub fn new(format: Format) -> Ctx {
        Ctx { format, errors: Vec::new(), warnings: Vec::new() }
    }

    pub fn error(&mut self, at: &Place, msg: impl Into<String>) {
        self.errors.push(Diagnostic::new(at.clone(), msg));
    }

    pub fn warn(&mut self, at: &Place, msg: impl Into<String>) {
        self.warnings.push(Diagnostic::new(at.clone(), msg));
    }

    /// A key in no schema: a warning in #cloud-config (cloud-init would
    /// ignore it too), an error in the native format.
    pub fn unknown(&mut self, at: &Place, hint: &str) {
        match self.format {
            Format::CloudConfig => self.warn(at, format!("unknown key, ignored{hint}")),
            Format::Native => self.error(at, format!("unknown key{hint}")),
        }
    }

    fn wrong(&mut self, n: &Node, at: &Place, want: &str) {
        self.error(at, format!("expected {want}, found {}", n.kind()));
    }

    /// A mapping's entries.
    pub fn map<'n>(&mut self, n: &'n Node, at: &Place) -> Option<&'n [(Key, Node)]> {
        match &n.value {
            Value::Map(m) => Some(m),
            _ => {
                self.wrong(n, at, "a mapping");
                None
            }
        }
    }

    /// A list's items.
    pub fn list<'n>(&mut self, n: &'n Node, at: &Place) -> Option<&'n [Node]> {
        match &n.value {
            Value::List(l) => Some(l),
            _ => {
                self.wrong(n, at, "a list");
                None
            }
        }
    }

    /// A string: any YAML scalar's text (plain `123` is the string "123",
    /// as the key wants a string); in TOML only a string.
    pub fn string(&mut self, n: &Node, at: &Place) -> Option<String> {
        match &n.value {
            Value::Scalar(Scalar { text, style: Style::Plain | Style::Quoted }) => Some(text.clone()),
            _ => {
                self.wrong(n, at, "a string");
                None
            }
        }
    }

    /// A string that is not empty.
    pub fn nonempty(&mut self, n: &Node, at: &Place) -> Option<String> {
        let s = self.string(n, at)?;
        if s.trim().is_empty() {
            self.error(at, "must not be empty");
            return None;
        }
        Some(s)
    }

    /// A boolean: TOML's, or a YAML plain scalar in YAML 1.1's spellings
    /// (`true`/`false`/`yes`/`no`/`on`/`off`, any of the three cases).
    pub fn bool(&mut self, n: &Node, at: &Place) -> Option<bool> {
        match &n.value {
            Value::Scalar(Scalar { text, style: Style::Plain | Style::TomlBool }) => match yaml11_bool(text) {
                Some(b) => Some(b),
                None => {
                    self.error(at, format!("expected a boolean (true/false, yes/no, on/off), found `{text}`"));
                    None
                }
            },
            _ => {
                self.wrong(n, at, "a boolean");
                None
            }
        }
    }

    /// A non-negative integer: TOML's, or a YAML plain scalar read as
    /// YAML 1.1 does (`0x1F` hex, a leading `0` octal, `_` separators).
    pub fn uint(&mut self, n: &Node, at: &Place) -> Option<u64> {
        match &n.value {
            Value::Scalar(Scalar { text, style: style @ (Style::Plain | Style::TomlInteger) }) => {
                let v = if *style == Style::TomlInteger { toml_int(text) } else { yaml11_int(text) };
                match v {
                    Some(i) if i >= 0 => u64::try_from(i).ok(),
                    _ => {
                        self.error(at, format!("expected a non-negative integer, found `{text}`"));
                        None
                    }
                }
            }
            _ => {
                self.wrong(n, at, "an integer");
                None
            }
        }
    }

    pub fn u32(&mut self, n: &Node, at: &Place) -> Option<u32> {
        let v = self.uint(n, at)?;
        match u32::try_from(v) {
            Ok(v) => Some(v),
            Err(_) => {
                self.error(at, format!("{v} is too large"));
                None
            }
        }
    }

    /// A list of strings; with `comma`, a single string is split at commas
    /// (cloud-init's `groups: a, b`). Items trimmed, empty ones refused.
    pub fn strings(&mut self, n: &Node, at: &Place, comma: bool) -> Vec<Item> {
        let mut out = Vec::new();
        match &n.value {
            Value::Scalar(Scalar { text, style: Style::Plain | Style::Quoted }) if comma => {
                for s in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    out.push(Item { value: s.to_string(), at: at.clone() });
                }
            }
            Value::List(l) => {
                for (i, item) in l.iter().enumerate() {
                    let p = at.item(item.line, i);
                    if let Some(s) = self.nonempty(item, &p) {
                        out.push(Item { value: s.trim().to_string(), at: p });
                    }
                }
            }
            _ => self.wrong(n, at, if comma { "a list or a comma-separated string" } else { "a list of strings" }),
        }
        out
    }
}

/// A string and its place.
pub(crate) type Item = crate::model::Item<String>;

/// YAML 1.1's booleans (PyYAML's resolver).
pub(crate) fn yaml11_bool(t: &str) -> Option<bool> {
    match t {
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Some(true),
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

/// A TOML integer's text in the tree: decimal, or `0o...` when written in
/// octal (`crate::toml_tree`).
pub(crate) fn toml_int(t: &str) -> Option<i64> {
    let (neg, body) = match t.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, t),
    };
    let v = match body.strip_prefix("0o") {
        Some(o) => i64::from_str_radix(o, 8).ok()?,
        None => body.parse::<i64>().ok()?,
    };
    Some(if neg { -v } else { v })
}

/// YAML 1.1's integers (PyYAML): `[-+]` then `0b...`, `0x...`, `0...`
/// (octal), or decimal, `_` allowed between digits. Sexagesimal (`1:20`)
/// is not taken.
pub(crate) fn yaml11_int(t: &str) -> Option<i64> {
    let (neg, body) = match t.as_bytes().first() {
        Some(b'-') => (true, t.get(1..)?),
        Some(b'+') => (false, t.get(1..)?),
        _ => (false, t),
    };
    let body: String = body.chars().filter(|c| *c != '_').collect();
    if body.is_empty() || t.ends_with('_') {
        return None;
    }
    let v = if let Some(b) = body.strip_prefix("0b") {
        i64::from_str_radix(b, 2).ok()?
    } else if let Some(h) = body.strip_prefix("0x") {
        i64::from_str_radix(h, 16).ok()?
    } else if body.len() > 1 && body.starts_with('0') {
        i64::from_str_radix(body.get(1..)?, 8).ok()?
    } else if body.bytes().all(|b| b.is_ascii_digit()) {
        body.parse::<i64>().ok()?
    } else {
        return None;
    };
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml11() {
        assert_eq!(yaml11_int("0644"), Some(0o644));
        assert_eq!(yaml11_int("644"), Some(644));
        assert_eq!(yaml11_int("0x1f"), Some(31));
        assert_eq!(yaml11_int("1_000"), Some(1000));
        assert_eq!(yaml11_int("0"), Some(0));
        assert_eq!(yaml11_int("-5"), Some(-5));
        assert_eq!(yaml11_int("09"), None);
        assert_eq!(yaml11_int("0o644"), None);
        assert_eq!(yaml11_int(""), None);
        assert_eq!(yaml11_int("-"), None);
        assert_eq!(yaml11_bool("Yes"), Some(true));
        assert_eq!(yaml11_bool("off"), Some(false));
        assert_eq!(yaml11_bool("y"), None);
    }
}
