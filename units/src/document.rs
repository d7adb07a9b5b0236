//! A unit file read once into a tree that keeps the place of every key and
//! array element, and those places turned into file, line, column and key
//! path.
//!
//! The places come from toml's public [`Spanned`]: every key is read as a
//! `Spanned<String>`, every array element as a `Spanned<Node>`. A table is
//! not read as `Spanned`: toml has no span for a table that is only implied,
//! by dotted keys (`service.exec = ...`) or by a longer header
//! (`[service.environment]` with no `[service]`), and `Spanned` refuses a
//! value without one. So a table is placed at its key, the header's or the
//! first dotted key's (where a person looks for it), and a key's value at the
//! key itself: TOML puts a value on its key's line. The root table has no
//! key; it is placed at the start of the file.
//!
//! Reading the tree never fails on a value of the wrong type, an unknown or
//! a missing key: only on text that is not TOML. Those checks are the
//! format's ([`super::shape`]), which knows the path of every key.

use std::fmt::{self, Write as _};
use std::ops::Range;
use std::path::Path;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Unexpected, Visitor};
use toml::{Spanned, Value};

use super::error::{ErrorKind, Location, UnitError};

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// `service.exec[0]`, `service.environment."A.B"`.
pub(crate) fn key_path(segs: &[Seg<'_>]) -> String {
    let mut out = String::new();
    for seg in segs {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                let bare = !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if bare {
                    out.push_str(k);
                } else {
                    let _ = write!(out, "{k:?}");
                }
            }
            Seg::Index(i) => {
                let _ = write!(out, "[{i}]");
            }
        }
    }
    out
}

/// A table's entries in file order, each key with its span.
#[derive(Debug, Default)]
pub(crate) struct Table(pub(crate) Vec<(Spanned<String>, Node)>);

/// A TOML value as written.
#[derive(Debug)]
pub(crate) enum Node {
    Table(Table),
    Array(Vec<Spanned<Node>>),
    /// A string, number, boolean or date.
    Scalar(Value),
}

impl Node {
    /// The value without its places: for messages that show it, and for
    /// reading it into a type with serde.
    pub(crate) fn to_value(&self) -> Value {
        match self {
            Node::Scalar(v) => v.clone(),
            Node::Array(items) => Value::Array(items.iter().map(|i| i.get_ref().to_value()).collect()),
            Node::Table(t) => Value::Table(t.0.iter().map(|(k, v)| (k.get_ref().clone(), v.to_value())).collect()),
        }
    }

    /// The string, if it is one.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Node::Scalar(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    /// What it is, as serde's "invalid type" messages name it.
    pub(crate) fn unexpected(&self) -> Unexpected<'_> {
        match self {
            Node::Table(_) => Unexpected::Map,
            Node::Array(_) => Unexpected::Seq,
            Node::Scalar(Value::String(s)) => Unexpected::Str(s),
            Node::Scalar(Value::Integer(i)) => Unexpected::Signed(*i),
            Node::Scalar(Value::Float(f)) => Unexpected::Float(*f),
            Node::Scalar(Value::Boolean(b)) => Unexpected::Bool(*b),
            Node::Scalar(Value::Datetime(_)) => Unexpected::Other("datetime"),
            Node::Scalar(_) => Unexpected::Other("value"),
        }
    }
}

impl fmt::Display for Node {
    /// As TOML writes it; a date plainly (toml shows a lone date value by
    /// its private serde form).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Scalar(Value::Datetime(d)) => d.fmt(f),
            other => other.to_value().fmt(f),
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

impl<'de> Deserialize<'de> for Table {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Node::deserialize(d)? {
            Node::Table(t) => Ok(t),
            other => Err(de::Error::invalid_type(other.unexpected(), &"a table")),
        }
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
        let v = i64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &"a TOML integer"))?;
        Ok(Node::Scalar(Value::Integer(v)))
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
            let key = match map.next_key::<Spanned<String>>() {
                Ok(Some(key)) => key,
                Ok(None) => break,
                // toml hands a date over as a map of one entry whose key
                // has no span, so `Spanned` refuses it; its value is the
                // date's text. Every key of a real table has a span.
                Err(e) if entries.is_empty() => {
                    let date = map.next_value::<String>().ok().and_then(|s| s.parse().ok());
                    return date.map(|d| Node::Scalar(Value::Datetime(d))).ok_or(e);
                }
                Err(e) => return Err(e),
            };
            let value = map.next_value::<Node>()?;
            entries.push((key, value));
        }
        Ok(Node::Table(Table(entries)))
    }
}

/// A unit file's text and path: reads the text into a [`Table`], turns
/// places in it into [`Location`]s.
pub(crate) struct Source<'a> {
    file: &'a Path,
    text: &'a str,
}

impl<'a> Source<'a> {
    pub(crate) fn new(file: &'a Path, text: &'a str) -> Self {
        Source { file, text }
    }

    /// The document's root table, or the TOML syntax error that stops the
    /// reading (alone in the list of the file's errors).
    pub(crate) fn parse(&self) -> Result<Table, Vec<UnitError>> {
        toml::from_str(self.text).map_err(|e| vec![self.toml_error(&e)])
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub(crate) fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = self.text.as_bytes().get(..offset).unwrap_or_default();
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).map_or(0, |s| String::from_utf8_lossy(s).chars().count()) + 1;
        (line, column)
    }

    fn location(&self, offset: Option<usize>, key: Option<String>) -> Location {
        let (line, column) = match offset.map(|o| self.line_col(o)) {
            Some((l, c)) => (Some(l), Some(c)),
            None => (None, None),
        };
        Location { file: self.file.to_path_buf(), line, column, key }
    }

    /// The location of the key path `segs`, found at `span`.
    pub(crate) fn locate(&self, segs: &[Seg<'_>], span: &Range<usize>) -> Location {
        self.location(Some(span.start), Some(key_path(segs)))
    }

    /// An error at the key path `segs`, found at `span`.
    pub(crate) fn error_at(&self, segs: &[Seg<'_>], span: &Range<usize>, kind: ErrorKind) -> UnitError {
        UnitError { at: self.locate(segs, span), kind }
    }

    /// An error with no place in the text (the file could not be read, its
    /// name is not a unit name).
    pub(crate) fn error_file(&self, kind: ErrorKind) -> UnitError {
        UnitError { at: self.location(None, None), kind }
    }

    /// toml's syntax error: its line and column, no key (the text around it
    /// did not read as TOML, so no key path is known).
    fn toml_error(&self, e: &toml::de::Error) -> UnitError {
        // toml's messages can span lines ("invalid array\nexpected `]`").
        let message = e.message().trim().replace('\n', ": ");
        UnitError { at: self.location(e.span().map(|s| s.start), None), kind: ErrorKind::Syntax(message) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Table {
        Source::new(Path::new("/u/x.toml"), text).parse().unwrap()
    }

    fn entry<'t>(t: &'t Table, key: &str) -> (&'t Spanned<String>, &'t Node) {
        t.0.iter().find(|(k, _)| k.get_ref() == key).map(|(k, v)| (k, v)).unwrap()
    }

    fn table(n: &Node) -> &Table {
        match n {
            Node::Table(t) => t,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keys_and_elements_keep_their_places_in_sections_dotted_keys_and_arrays() {
        let text = "description = \"d\"\n\
                    [service]\n\
                    exec = [\n  \"/bin/a\",\n  \"b\",\n]\n\
                    ready = { tcp = \"x\" }\n\
                    [a.b]\n\
                    c.d = 1\n\
                    when = 1979-05-27\n";
        let s = Source::new(Path::new("/u/x.toml"), text);
        let line = |span: &Range<usize>| s.line_col(span.start).0;
        let root = parse(text);
        assert_eq!(line(&entry(&root, "description").0.span()), 1);
        let (key, service) = entry(&root, "service");
        assert_eq!(line(&key.span()), 2);
        let (key, exec) = entry(table(service), "exec");
        assert_eq!(line(&key.span()), 3);
        let Node::Array(items) = exec else { panic!("{exec:?}") };
        assert_eq!(items.iter().map(|i| line(&i.span())).collect::<Vec<_>>(), [4, 5]);
        let (_, ready) = entry(table(service), "ready");
        assert_eq!(line(&entry(table(ready), "tcp").0.span()), 7);
        // Implied tables: placed at their keys.
        let (key, a) = entry(&root, "a");
        assert_eq!(line(&key.span()), 8);
        let (key, b) = entry(table(a), "b");
        assert_eq!(line(&key.span()), 8);
        let (key, c) = entry(table(b), "c");
        assert_eq!(line(&key.span()), 9);
        assert_eq!(line(&entry(table(c), "d").0.span()), 9);
        // A date is a value like any other.
        let (key, when) = entry(table(b), "when");
        assert_eq!(line(&key.span()), 10);
        assert!(matches!(when, Node::Scalar(Value::Datetime(_))), "{when:?}");
        assert_eq!(when.to_string(), "1979-05-27");
    }

    #[test]
    fn only_text_that_is_not_toml_fails_to_read() {
        let s = Source::new(Path::new("/u/x.toml"), "a = 1\n[b\n");
        let e = s.parse().unwrap_err().remove(0);
        assert_eq!((e.at.line, e.at.key.clone()), (Some(2), None));
        assert!(matches!(e.kind, ErrorKind::Syntax(_)), "{e:?}");
        assert!(!e.to_string().contains('\n'), "{e}");
        let dup = Source::new(Path::new("/u/x.toml"), "a = 1\na = 2\n").parse().unwrap_err().remove(0);
        assert_eq!(dup.at.line, Some(2));
        // Any type, any key: the format checks those.
        let t = parse("x = [1, \"a\", { b = true }, 1.5]\n[[y]]\nz = 1\n");
        assert_eq!(t.0.len(), 2);
        assert!(parse("").0.is_empty());
    }

    #[test]
    fn line_and_column_count_characters() {
        let s = Source::new(Path::new("/u/x.toml"), "a = 1\nbé = 2\n");
        assert_eq!(s.line_col(0), (1, 1));
        assert_eq!(s.line_col(6), (2, 1));
        assert_eq!(s.line_col(10), (2, 4));
        assert_eq!(s.line_col(1000), (3, 1));
    }

    #[test]
    fn key_paths_quote_what_is_not_bare() {
        let p = key_path(&[Seg::Key("service"), Seg::Key("environment"), Seg::Key("A.B"), Seg::Index(2)]);
        assert_eq!(p, "service.environment.\"A.B\"[2]");
    }
}
