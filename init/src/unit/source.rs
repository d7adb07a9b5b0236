//! Where things are in a unit file: byte offsets to lines and columns, and
//! key paths to the line that holds them.
//!
//! toml's typed deserializer reports an error with a byte span but no key
//! path we can read, and the semantic checks that run after it need the line
//! of a key. Both come from one extra parse of the text into a tree that
//! keeps the span of every key and value (unit files are small: parsing
//! twice costs nothing next to starting a process).
//!
//! Spans are read through `toml::Spanned`'s private protocol. Rather than
//! copying its magic names, they are captured once from `toml::Spanned`
//! itself ([`spanned_protocol`]); should a future toml change the protocol,
//! the tree loses its spans and errors lose their lines, nothing worse.

use std::fmt::Write as _;
use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

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

/// A unit file's text, its path, and (when it parses) its span tree.
pub(crate) struct Source<'a> {
    file: &'a Path,
    text: &'a str,
    tree: Option<Node>,
}

impl<'a> Source<'a> {
    pub(crate) fn new(file: &'a Path, text: &'a str) -> Self {
        let tree = toml::from_str::<Plain>(text).ok().map(|p| p.0);
        Source { file, text, tree }
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
        let (line, column) = match offset {
            Some(o) => {
                let (l, c) = self.line_col(o);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        Location { file: self.file.to_path_buf(), line, column, key }
    }

    /// The location of a key path: the line of its key (or, for an array
    /// element, of the element). A path that is not in the file (a default)
    /// falls back to the deepest part of it that is.
    pub(crate) fn locate(&self, segs: &[Seg<'_>]) -> Location {
        let offset = self.tree.as_ref().and_then(|t| t.lookup(segs)).map(|r| r.start);
        self.location(offset, Some(key_path(segs)))
    }

    /// An error at a key path.
    pub(crate) fn error_at(&self, segs: &[Seg<'_>], kind: ErrorKind) -> UnitError {
        UnitError { at: self.locate(segs), kind }
    }

    /// An error with no place in the text (the file could not be read, its
    /// name is not a unit name).
    pub(crate) fn error_file(&self, kind: ErrorKind) -> UnitError {
        UnitError { at: self.location(None, None), kind }
    }

    /// Turn toml's error into ours: line and column from its span, the key
    /// path from the span tree.
    pub(crate) fn toml_error(&self, e: &toml::de::Error) -> UnitError {
        // toml's messages can span lines ("invalid array\nexpected `]`").
        let message = e.message().trim().replace('\n', ": ");
        let span = e.span();
        let mut key = None;
        if let (Some(tree), Some(span)) = (&self.tree, &span) {
            if let Some(field) = missing_field(&message) {
                // Its span is the table's that lacks the field (the whole
                // document for the root table).
                let mut path = tree.path_of_span(span).unwrap_or_default();
                path.push(field.to_owned());
                key = Some(path);
            } else {
                key = tree.path_at(span.start);
            }
        }
        let key = key.map(|p| key_path(&p.iter().map(|s| owned_seg(s)).collect::<Vec<_>>()));
        UnitError { at: self.location(span.map(|s| s.start), key), kind: ErrorKind::Syntax(message) }
    }
}

/// "missing field `exec`" -> "exec".
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

/// Path steps as stored when searching the tree: indices are kept as
/// `\0N` strings so that a path is one `Vec<String>`.
fn owned_seg(s: &str) -> Seg<'_> {
    match s.strip_prefix('\0').and_then(|n| n.parse().ok()) {
        Some(i) => Seg::Index(i),
        None => Seg::Key(s),
    }
}

fn index_seg(i: usize) -> String {
    format!("\0{i}")
}

fn contains(span: &Option<Range<usize>>, offset: usize) -> bool {
    span.as_ref().is_some_and(|s| s.contains(&offset) || (s.is_empty() && s.start == offset))
}

/// A parsed TOML value with the spans of every key and value.
#[derive(Debug)]
struct Node {
    span: Option<Range<usize>>,
    kind: NodeKind,
}

#[derive(Debug)]
enum NodeKind {
    Table(Vec<(Key, Node)>),
    Array(Vec<Node>),
    Leaf,
}

#[derive(Debug)]
struct Key {
    name: String,
    span: Option<Range<usize>>,
}

impl Node {
    fn lookup(&self, segs: &[Seg<'_>]) -> Option<Range<usize>> {
        let (first, rest) = match segs.split_first() {
            Some(x) => x,
            None => return self.span.clone(),
        };
        let (key_span, child) = match (first, &self.kind) {
            (Seg::Key(k), NodeKind::Table(entries)) => {
                let (key, node) = entries.iter().find(|(key, _)| key.name == *k)?;
                (key.span.clone(), node)
            }
            (Seg::Index(i), NodeKind::Array(items)) => (None, items.get(*i)?),
            _ => return None,
        };
        if rest.is_empty() {
            // The key's own line reads best; an element has only its value.
            return key_span.or_else(|| child.span.clone());
        }
        child.lookup(rest).or(key_span).or_else(|| child.span.clone())
    }

    /// The deepest key path whose key or value holds `offset`. Every table
    /// is searched, not only those whose span holds the offset: a
    /// `[section]` table's span covers its header, not its body.
    fn path_at(&self, offset: usize) -> Option<Vec<String>> {
        let mut path = Vec::new();
        self.find(offset, &mut path).then_some(path)
    }

    fn find(&self, offset: usize, path: &mut Vec<String>) -> bool {
        match &self.kind {
            NodeKind::Table(entries) => {
                for (key, node) in entries {
                    path.push(key.name.clone());
                    if contains(&key.span, offset) || node.find(offset, path) {
                        return true;
                    }
                    if contains(&node.span, offset) {
                        return true;
                    }
                    path.pop();
                }
                false
            }
            NodeKind::Array(items) => {
                for (i, node) in items.iter().enumerate() {
                    path.push(index_seg(i));
                    if node.find(offset, path) || contains(&node.span, offset) {
                        return true;
                    }
                    path.pop();
                }
                false
            }
            NodeKind::Leaf => false,
        }
    }

    /// The path of the table whose span is exactly `span` (root: empty).
    fn path_of_span(&self, span: &Range<usize>) -> Option<Vec<String>> {
        fn walk(node: &Node, span: &Range<usize>, path: &mut Vec<String>) -> bool {
            if let NodeKind::Table(entries) = &node.kind {
                for (key, child) in entries {
                    path.push(key.name.clone());
                    if child.span.as_ref() == Some(span) || walk(child, span, path) {
                        return true;
                    }
                    path.pop();
                }
            }
            false
        }
        let mut path = Vec::new();
        walk(self, span, &mut path).then_some(path)
    }
}

// ---- deserializing the span tree -------------------------------------------

/// `toml::Spanned`'s struct name and field names (start, end, value),
/// captured by asking `toml::Spanned` to deserialize itself from a
/// deserializer that records what it is asked for.
fn spanned_protocol() -> Option<(&'static str, &'static [&'static str])> {
    static PROTOCOL: OnceLock<Option<(&'static str, &'static [&'static str])>> = OnceLock::new();
    *PROTOCOL.get_or_init(|| match toml::Spanned::<u8>::deserialize(Capture) {
        Err(Captured(Some(p))) if p.1.len() == 3 => Some(p),
        _ => None,
    })
}

struct Capture;

#[derive(Debug)]
struct Captured(Option<(&'static str, &'static [&'static str])>);

impl std::fmt::Display for Captured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("captured")
    }
}

impl std::error::Error for Captured {}

impl de::Error for Captured {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Captured(None)
    }
}

impl<'de> Deserializer<'de> for Capture {
    type Error = Captured;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Captured> {
        Err(Captured(None))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Captured> {
        Err(Captured(Some((name, fields))))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// A node read without asking for its span (the root, a spanned value's
/// inside).
struct Plain(Node);

/// A node read with its span where the deserializer has one.
struct WithSpan(Node);

/// A table key, with its span where the deserializer has one.
struct KeyName(Key);

impl<'de> Deserialize<'de> for Plain {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor { first_key: None }).map(Plain)
    }
}

impl<'de> Deserialize<'de> for WithSpan {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match spanned_protocol() {
            Some((name, fields)) => d.deserialize_struct(name, fields, SpanVisitor { fields }),
            None => d.deserialize_any(NodeVisitor { first_key: None }),
        }
        .map(WithSpan)
    }
}

impl<'de> Deserialize<'de> for KeyName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match spanned_protocol() {
            Some((name, fields)) => d.deserialize_struct(name, fields, KeyVisitor { fields }),
            None => d.deserialize_any(KeyVisitor { fields: &[] }),
        }
        .map(KeyName)
    }
}

fn leaf() -> Node {
    Node { span: None, kind: NodeKind::Leaf }
}

struct NodeVisitor {
    /// A key the span visitor already read before it saw a plain table.
    first_key: Option<Key>,
}

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a TOML value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
        Ok(leaf())
    }
    fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
        Ok(leaf())
    }
    fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
        Ok(leaf())
    }
    fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
        Ok(leaf())
    }
    fn visit_str<E>(self, _: &str) -> Result<Node, E> {
        Ok(leaf())
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(leaf())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(WithSpan(n)) = seq.next_element()? {
            items.push(n);
        }
        Ok(Node { span: None, kind: NodeKind::Array(items) })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        if let Some(key) = self.first_key {
            let WithSpan(value) = map.next_value()?;
            entries.push((key, value));
        }
        while let Some(KeyName(key)) = map.next_key()? {
            let WithSpan(value) = map.next_value()?;
            entries.push((key, value));
        }
        Ok(Node { span: None, kind: NodeKind::Table(entries) })
    }
}

/// Reads either `Spanned`'s map (start, end, value) or, where the
/// deserializer has no span (an implicit table), the value itself.
struct SpanVisitor {
    fields: &'static [&'static str],
}

impl<'de> Visitor<'de> for SpanVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a TOML value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
        Ok(leaf())
    }
    fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
        Ok(leaf())
    }
    fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
        Ok(leaf())
    }
    fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
        Ok(leaf())
    }
    fn visit_str<E>(self, _: &str) -> Result<Node, E> {
        Ok(leaf())
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(leaf())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Node, A::Error> {
        NodeVisitor { first_key: None }.visit_seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let Some(KeyName(first)) = map.next_key()? else {
            return Ok(Node { span: None, kind: NodeKind::Table(Vec::new()) });
        };
        if !self.fields.contains(&first.name.as_str()) {
            // A plain table: the deserializer had no span for it.
            return NodeVisitor { first_key: Some(first) }.visit_map(map);
        }
        let (mut start, mut end, mut value) = (None, None, None);
        let mut key = Some(first);
        while let Some(k) = key {
            match self.fields.iter().position(|f| *f == k.name) {
                Some(0) => start = Some(map.next_value::<usize>()?),
                Some(1) => end = Some(map.next_value::<usize>()?),
                _ => value = Some(map.next_value::<Plain>()?.0),
            }
            key = map.next_key::<KeyName>()?.map(|k| k.0);
        }
        let mut node = value.unwrap_or_else(leaf);
        if let (Some(s), Some(e)) = (start, end) {
            node.span = Some(s..e);
        }
        Ok(node)
    }
}

struct KeyVisitor {
    fields: &'static [&'static str],
}

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a TOML key")
    }

    fn visit_str<E>(self, v: &str) -> Result<Key, E> {
        Ok(Key { name: v.to_owned(), span: None })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Key, A::Error> {
        let (mut start, mut end, mut name) = (None, None, String::new());
        while let Some(k) = map.next_key::<String>()? {
            match self.fields.iter().position(|f| *f == k) {
                Some(0) => start = Some(map.next_value::<usize>()?),
                Some(1) => end = Some(map.next_value::<usize>()?),
                _ => name = map.next_value::<String>()?,
            }
        }
        let span = match (start, end) {
            (Some(s), Some(e)) => Some(s..e),
            _ => None,
        };
        Ok(Key { name, span })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(text: &str) -> Source<'_> {
        Source::new(Path::new("/u/x.toml"), text)
    }

    #[test]
    fn the_spanned_protocol_is_captured() {
        let (name, fields) = spanned_protocol().unwrap();
        assert!(name.contains("Spanned"), "{name}");
        assert_eq!(fields.len(), 3);
    }

    #[test]
    fn keys_are_found_in_sections_inline_tables_arrays_and_dotted_keys() {
        let text = "description = \"d\"\n\
                    [service]\n\
                    exec = [\n  \"/bin/a\",\n  \"b\",\n]\n\
                    ready = { tcp = \"x\" }\n\
                    [a.b]\n\
                    c.d = 1\n\
                    when = 1979-05-27\n";
        let s = src(text);
        let line = |segs: &[Seg<'_>]| s.locate(segs).line;
        assert_eq!(line(&[Seg::Key("description")]), Some(1));
        assert_eq!(line(&[Seg::Key("service")]), Some(2));
        assert_eq!(line(&[Seg::Key("service"), Seg::Key("exec")]), Some(3));
        assert_eq!(line(&[Seg::Key("service"), Seg::Key("exec"), Seg::Index(1)]), Some(5));
        assert_eq!(line(&[Seg::Key("service"), Seg::Key("ready"), Seg::Key("tcp")]), Some(7));
        assert_eq!(line(&[Seg::Key("a"), Seg::Key("b"), Seg::Key("c"), Seg::Key("d")]), Some(9));
        assert_eq!(line(&[Seg::Key("a"), Seg::Key("b"), Seg::Key("when")]), Some(10));
        // Not in the file: the deepest part that is.
        assert_eq!(line(&[Seg::Key("service"), Seg::Key("nope")]), Some(2));

        let tree = s.tree.as_ref().unwrap();
        let off = text.find("\"b\"").unwrap();
        assert_eq!(tree.path_at(off).unwrap(), vec!["service".to_owned(), "exec".into(), index_seg(1)]);
        let off = text.find("\"x\"").unwrap();
        assert_eq!(tree.path_at(off).unwrap(), vec!["service", "ready", "tcp"]);
    }

    #[test]
    fn line_and_column_count_characters() {
        let s = src("a = 1\nbé = 2\n");
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
