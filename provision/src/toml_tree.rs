//! Berth's native TOML -> [`crate::tree::Node`].
//!
//! `toml_edit` parses (TOML 1.0; duplicate keys and tables are its
//! errors) and keeps the byte span of every key and value, which become
//! lines. Strings are [`Style::Quoted`]; the typed scalars become
//! [`Style::TomlBool`], [`Style::TomlInteger`], [`Style::TomlFloat`] and
//! [`Style::TomlDatetime`] with their canonical text (an integer written
//! in octal as `0o...`, others in decimal). An array of tables
//! (`[[users]]`) is a list of mappings. A table with no span of its own
//! (implied by `[a.b]`) takes its first key's line, else its parent's.

use toml_edit::{ImDocument, Item, Table, Value as TValue};

use crate::diag::{Diagnostic, Place};
use crate::tree::{Key, Node, Scalar, Style, Value};

/// Reads a TOML document. The error: the parser's first, at its line.
pub fn read(source: &str, text: &str) -> Result<Node, Diagnostic> {
    let doc = ImDocument::parse(text).map_err(|e| {
        let line = e.span().map_or(0, |s| line_of(text, s.start));
        let msg = e.message().trim().to_string();
        Diagnostic::new(Place::new(source, line, ""), format!("TOML: {msg}"))
    })?;
    let lines = Lines { text };
    Ok(lines.table(doc.as_table(), 1))
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes().iter().take(end).filter(|b| **b == b'\n').count() + 1
}

struct Lines<'t> {
    text: &'t str,
}

impl Lines<'_> {
    fn at(&self, span: Option<std::ops::Range<usize>>, default: usize) -> usize {
        span.map_or(default, |s| line_of(self.text, s.start))
    }

    fn table(&self, t: &Table, parent: usize) -> Node {
        let line = match t.span() {
            Some(s) => line_of(self.text, s.start),
            None => t.iter().next().and_then(|(k, _)| t.key(k)).map_or(parent, |k| self.at(k.span(), parent)),
        };
        let mut entries = Vec::new();
        for (name, item) in t.iter() {
            let kline = t.key(name).map_or(line, |k| self.at(k.span(), line));
            if let Some(node) = self.item(item, kline) {
                entries.push((Key { name: name.to_string(), line: kline }, node));
            }
        }
        Node { line, value: Value::Map(entries) }
    }

    fn item(&self, item: &Item, parent: usize) -> Option<Node> {
        match item {
            Item::None => None,
            Item::Value(v) => Some(self.value(v, parent)),
            Item::Table(t) => Some(self.table(t, parent)),
            Item::ArrayOfTables(a) => {
                let line = self.at(a.span(), parent);
                Some(Node { line, value: Value::List(a.iter().map(|t| self.table(t, line)).collect()) })
            }
        }
    }

    fn value(&self, v: &TValue, parent: usize) -> Node {
        let line = self.at(v.span(), parent);
        let scalar = |text: String, style: Style| Node { line, value: Value::Scalar(Scalar { text, style }) };
        match v {
            TValue::String(s) => scalar(s.value().clone(), Style::Quoted),
            // Written in octal (`0o644`), the text keeps it: a mode in decimal
            // (`644`) is then told from one in octal, as in YAML.
            TValue::Integer(i) => {
                let raw = v.span().and_then(|s| self.text.get(s)).unwrap_or("");
                let n = *i.value();
                let text = if raw.trim_start_matches(['+', '-']).starts_with("0o") {
                    format!("{}0o{:o}", if n < 0 { "-" } else { "" }, n.unsigned_abs())
                } else {
                    n.to_string()
                };
                scalar(text, Style::TomlInteger)
            }
            TValue::Float(f) => scalar(f.value().to_string(), Style::TomlFloat),
            TValue::Boolean(b) => scalar(b.value().to_string(), Style::TomlBool),
            TValue::Datetime(d) => scalar(d.value().to_string(), Style::TomlDatetime),
            TValue::Array(a) => Node { line, value: Value::List(a.iter().map(|v| self.value(v, line)).collect()) },
            TValue::InlineTable(t) => {
                let mut entries = Vec::new();
                for (name, v) in t.iter() {
                    let kline = t.key(name).map_or(line, |k| self.at(k.span(), line));
                    entries.push((Key { name: name.to_string(), line: kline }, self.value(v, kline)));
                }
                Node { line, value: Value::Map(entries) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_styles() {
        let t = "#berth-config\nhostname = \"a\"\nn = 420\nb = true\n\n[[users]]\nname = \"x\"\ngroups = [\"a\",\n  \"b\"]\n\n[etcd]\nname = \"e\"\nx = { y = 1.5 }\n";
        let n = read("u", t).unwrap();
        let Value::Map(m) = &n.value else { panic!() };
        assert_eq!(m[0].0, Key { name: "hostname".into(), line: 2 });
        assert_eq!(m[0].1.value, Value::Scalar(Scalar { text: "a".into(), style: Style::Quoted }));
        assert_eq!(m[1].1.value, Value::Scalar(Scalar { text: "420".into(), style: Style::TomlInteger }));
        assert_eq!(m[2].1.value, Value::Scalar(Scalar { text: "true".into(), style: Style::TomlBool }));
        assert_eq!(m[3].0.name, "users");
        let Value::List(users) = &m[3].1.value else { panic!() };
        assert_eq!(users[0].line, 6);
        let Value::Map(u) = &users[0].value else { panic!() };
        assert_eq!(u[1].0.line, 8);
        assert_eq!(m[4].0.name, "etcd");
        assert_eq!(m[4].1.line, 11);
        let Value::Map(e) = &m[4].1.value else { panic!() };
        assert_eq!(e[1].0.line, 13);
    }

    #[test]
    fn errors_have_lines() {
        let e = read("u", "a = 1\nb = \nc = 2\n").unwrap_err();
        assert_eq!(e.place.line, 2, "{e}");
        let e = read("u", "a = 1\n\na = 2\n").unwrap_err();
        assert_eq!(e.place.line, 3, "{e}");
        assert!(e.message.starts_with("TOML:"));
    }
}
