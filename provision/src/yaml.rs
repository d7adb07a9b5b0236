//! `#cloud-config` YAML -> [`crate::tree::Node`].
//!
//! Built on `saphyr-parser`'s event stream, whose events carry their
//! position, the scalar's style and its tag, so that the tree keeps what
//! the interpreter needs to read the document as cloud-init (PyYAML, YAML
//! 1.1) would: the line of every node, the text of every scalar and whether
//! it was quoted.
//!
//! What this reader refuses (each a [`Diagnostic`] with its line):
//! - a syntax error of the YAML;
//! - a key that is not a scalar (`? [a, b]: c`), a duplicate key;
//! - more than one document in the stream (cloud-init reads one);
//! - a tag other than the core schema's (`!!str`, `!!int`, `!!binary`, ...);
//!   `!!binary` is decoded here (base64, whitespace ignored) into
//!   [`Value::Binary`];
//! - nesting deeper than [`MAX_DEPTH`], or more than [`MAX_NODES`] nodes
//!   once aliases are expanded (a "billion laughs" document).
//!
//! Aliases (`*a`) are expanded to a copy of the anchored node; the merge
//! key `<<` (YAML 1.1, which PyYAML applies) adds the keys of the merged
//! mapping(s) that the mapping does not have itself.

use std::collections::HashMap;

use base64::Engine;
use saphyr_parser::{Event, Parser, ScalarStyle, Tag};

use crate::diag::{Diagnostic, Place};
use crate::tree::{Key, Node, Scalar, Style, Value};

/// The deepest nesting of mappings and lists accepted.
pub const MAX_DEPTH: usize = 64;
/// The most nodes a document may have once aliases are expanded.
pub const MAX_NODES: usize = 200_000;

/// Reads one YAML document. An empty stream (or one with only comments)
/// is [`Value::Null`] at line 1.
///
/// Errors: every duplicate or non-scalar key found, or the first syntax
/// error; each at its line, with the key path where known.
pub fn read(source: &str, text: &str) -> Result<Node, Vec<Diagnostic>> {
    let mut b = Builder {
        source,
        stack: Vec::new(),
        paths: Vec::new(),
        anchors: HashMap::new(),
        root: None,
        docs: 0,
        nodes: 0,
        errors: Vec::new(),
    };
    for ev in Parser::new_from_str(text) {
        let (ev, span) = match ev {
            Ok(e) => e,
            Err(e) => {
                b.errors.push(Diagnostic::new(
                    Place::new(source, e.marker().line().max(1), ""),
                    format!("YAML: {}", e.info()),
                ));
                return Err(b.errors);
            }
        };
        let line = span.start.line().max(1);
        if let Err(d) = b.event(ev, line) {
            b.errors.push(d);
            return Err(b.errors);
        }
    }
    if !b.errors.is_empty() {
        return Err(b.errors);
    }
    Ok(b.root.unwrap_or(Node { line: 1, value: Value::Null }))
}

enum Open {
    List {
        line: usize,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        line: usize,
        anchor: usize,
        entries: Vec<(Key, Node)>,
        /// Key -> its line, for duplicates in constant time.
        seen: HashMap<String, usize>,
        merges: Vec<Node>,
        pending: Option<PendingKey>,
    },
}

enum PendingKey {
    Key(Key),
    Merge,
    /// A key that was refused: its value is read and dropped.
    Bad,
    /// A collection being read as a key (refused): then its value is dropped.
    BadKey,
}

struct Builder<'s> {
    source: &'s str,
    stack: Vec<Open>,
    /// The key path of each open collection (`users[1].groups`), for errors.
    paths: Vec<String>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    docs: usize,
    nodes: usize,
    errors: Vec<Diagnostic>,
}

impl Builder<'_> {
    fn err(&self, line: usize, msg: impl Into<String>) -> Diagnostic {
        Diagnostic::new(Place::new(self.source, line, ""), msg)
    }

    fn count(&mut self, n: usize, line: usize) -> Result<(), Diagnostic> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(self.err(line, format!("YAML: more than {MAX_NODES} nodes (aliases expanded)")));
        }
        Ok(())
    }

    fn event(&mut self, ev: Event<'_>, line: usize) -> Result<(), Diagnostic> {
        match ev {
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => Ok(()),
            Event::DocumentStart(_) => {
                self.docs += 1;
                if self.docs > 1 {
                    return Err(self.err(line, "YAML: more than one document (`---`): user data is one document"));
                }
                Ok(())
            }
            Event::Alias(id) => {
                let node = match self.anchors.get(&id) {
                    Some(n) => n.clone(),
                    None => return Err(self.err(line, "YAML: an alias to an unknown anchor")),
                };
                // An alias copies its anchor's nesting to where it is: without
                // this bound, aliases of aliases nest thousands deep, and the
                // recursive walks of the tree overflow a thread's stack.
                if self.stack.len().saturating_add(depth(&node)) > MAX_DEPTH {
                    return Err(self.err(line, format!("YAML: nested deeper than {MAX_DEPTH} (aliases expanded)")));
                }
                self.count(size(&node), line)?;
                self.finish(node, 0, line)
            }
            Event::Scalar(text, style, anchor, tag) => {
                self.count(1, line)?;
                let value = self.scalar(&text, style, tag.as_deref(), line)?;
                self.finish(Node { line, value }, anchor, line)
            }
            Event::SequenceStart(anchor, tag) => {
                self.collection_tag(tag.as_deref(), "seq", line)?;
                self.push(Open::List { line, anchor, items: Vec::new() }, line)
            }
            Event::MappingStart(anchor, tag) => {
                self.collection_tag(tag.as_deref(), "map", line)?;
                self.push(
                    Open::Map {
                        line,
                        anchor,
                        entries: Vec::new(),
                        seen: HashMap::new(),
                        merges: Vec::new(),
                        pending: None,
                    },
                    line,
                )
            }
            Event::SequenceEnd => match self.pop() {
                Some(Open::List { line: l, anchor, items }) => {
                    self.finish(Node { line: l, value: Value::List(items) }, anchor, line)
                }
                _ => Err(self.err(line, "YAML: unbalanced sequence")),
            },
            Event::MappingEnd => match self.pop() {
                Some(Open::Map { line: l, anchor, mut entries, merges, .. }) => {
                    for m in merges {
                        merge_into(&mut entries, m);
                    }
                    self.finish(Node { line: l, value: Value::Map(entries) }, anchor, line)
                }
                _ => Err(self.err(line, "YAML: unbalanced mapping")),
            },
        }
    }

    fn pop(&mut self) -> Option<Open> {
        self.paths.pop();
        self.stack.pop()
    }

    /// The key path of the node being read next.
    fn child_path(&self) -> String {
        let parent = self.paths.last().map_or("", String::as_str);
        match self.stack.last() {
            Some(Open::List { items, .. }) => format!("{parent}[{}]", items.len()),
            Some(Open::Map { pending: Some(PendingKey::Key(k)), .. }) => join(parent, &k.name),
            _ => parent.to_string(),
        }
    }

    fn push(&mut self, open: Open, line: usize) -> Result<(), Diagnostic> {
        let path = self.child_path();
        self.count(1, line)?;
        if self.stack.len() >= MAX_DEPTH {
            return Err(self.err(line, format!("YAML: nested deeper than {MAX_DEPTH}")));
        }
        // A collection as a mapping key: refused; it and its value are
        // read and dropped.
        if let Some(Open::Map { pending: pending @ None, .. }) = self.stack.last_mut() {
            *pending = Some(PendingKey::BadKey);
            let d = Diagnostic::new(
                Place::new(self.source, line, &path),
                "YAML: a key must be a scalar, not a mapping or a list",
            );
            self.errors.push(d);
        }
        self.paths.push(path);
        self.stack.push(open);
        Ok(())
    }

    fn collection_tag(&self, tag: Option<&Tag>, want: &str, line: usize) -> Result<(), Diagnostic> {
        match tag {
            None => Ok(()),
            Some(t)
                if t.handle == "tag:yaml.org,2002:" && (t.suffix == want || (want == "map" && t.suffix == "omap")) =>
            {
                Ok(())
            }
            Some(t) => Err(self.err(
                line,
                format!(
                    "YAML: unsupported tag `{}{}` on a {}",
                    t.handle,
                    t.suffix,
                    if want == "seq" { "list" } else { "mapping" }
                ),
            )),
        }
    }

    fn scalar(&mut self, text: &str, style: ScalarStyle, tag: Option<&Tag>, line: usize) -> Result<Value, Diagnostic> {
        let style = match style {
            ScalarStyle::Plain => Style::Plain,
            _ => Style::Quoted,
        };
        if let Some(t) = tag {
            let core = t.handle == "tag:yaml.org,2002:";
            return match (core, t.suffix.as_str()) {
                (true, "binary") => {
                    let clean: String = text.chars().filter(|c| !c.is_whitespace()).collect();
                    match base64::engine::general_purpose::STANDARD.decode(clean.as_bytes()) {
                        Ok(b) => Ok(Value::Binary(b)),
                        // Collected, and the rest of the document still read.
                        Err(e) => {
                            let at = Place::new(self.source, line, &self.child_path());
                            let d = Diagnostic::new(at, format!("YAML: !!binary is not valid base64: {e}"));
                            self.errors.push(d);
                            Ok(Value::Null)
                        }
                    }
                }
                (true, "str") => Ok(Value::Scalar(Scalar { text: text.to_string(), style: Style::Quoted })),
                (true, "null") => Ok(Value::Null),
                (true, "int" | "bool" | "float" | "timestamp") => {
                    Ok(Value::Scalar(Scalar { text: text.to_string(), style: Style::Plain }))
                }
                // `!` alone: the non-specific tag, a string.
                (false, "!") if t.handle.is_empty() => {
                    Ok(Value::Scalar(Scalar { text: text.to_string(), style: Style::Quoted }))
                }
                _ => Err(self.err(line, format!("YAML: unsupported tag `{}{}`", t.handle, t.suffix))),
            };
        }
        if style == Style::Plain && matches!(text, "" | "~" | "null" | "Null" | "NULL") {
            return Ok(Value::Null);
        }
        Ok(Value::Scalar(Scalar { text: text.to_string(), style }))
    }

    /// A complete node: into its parent (as a key, a value or an item), or
    /// the document's root.
    fn finish(&mut self, node: Node, anchor: usize, line: usize) -> Result<(), Diagnostic> {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        let source = self.source;
        let parent = self.paths.last().cloned().unwrap_or_default();
        match self.stack.last_mut() {
            None => {
                if self.root.is_some() {
                    return Err(self.err(line, "YAML: more than one document"));
                }
                self.root = Some(node);
                Ok(())
            }
            Some(Open::List { items, .. }) => {
                items.push(node);
                Ok(())
            }
            Some(Open::Map { seen, merges, pending, .. }) => match pending.take() {
                None => {
                    let name = match node.value {
                        Value::Scalar(s) => s.text,
                        Value::Null => "~".to_string(),
                        Value::Binary(_) | Value::Map(_) | Value::List(_) => {
                            self.errors.push(Diagnostic::new(
                                Place::new(source, node.line, &parent),
                                "YAML: a key must be a scalar",
                            ));
                            *pending = Some(PendingKey::Bad);
                            return Ok(());
                        }
                    };
                    if name == "<<" {
                        *pending = Some(PendingKey::Merge);
                    } else if let Some(first) = seen.get(&name) {
                        let msg = format!("YAML: duplicate key `{name}` (first at line {first})");
                        self.errors.push(Diagnostic::new(Place::new(source, node.line, &join(&parent, &name)), msg));
                        *pending = Some(PendingKey::Bad);
                    } else {
                        seen.insert(name.clone(), node.line);
                        *pending = Some(PendingKey::Key(Key { name, line: node.line }));
                    }
                    Ok(())
                }
                Some(PendingKey::Key(k)) => {
                    if let Some(Open::Map { entries, .. }) = self.stack.last_mut() {
                        entries.push((k, node));
                    }
                    Ok(())
                }
                Some(PendingKey::Merge) => {
                    // As PyYAML: only a mapping or a list of mappings merges;
                    // anything else would be dropped without a word.
                    let mergeable = match &node.value {
                        Value::Map(_) => true,
                        Value::List(l) => l.iter().all(|n| matches!(n.value, Value::Map(_))),
                        _ => false,
                    };
                    if mergeable {
                        merges.push(node);
                    } else {
                        self.errors.push(Diagnostic::new(
                            Place::new(source, line, &join(&parent, "<<")),
                            format!(
                                "YAML: the merge key `<<` needs a mapping or a list of mappings, found {}",
                                node.kind()
                            ),
                        ));
                    }
                    Ok(())
                }
                Some(PendingKey::Bad) => Ok(()),
                Some(PendingKey::BadKey) => {
                    *pending = Some(PendingKey::Bad);
                    Ok(())
                }
            },
        }
    }
}

/// `<<: *a` or `<<: [*a, *b]`: the keys of the merged mapping(s) that
/// `entries` does not have (earlier merges win, as in YAML 1.1).
fn merge_into(entries: &mut Vec<(Key, Node)>, merged: Node) {
    let maps = match merged.value {
        Value::Map(m) => vec![m],
        Value::List(l) => l
            .into_iter()
            .filter_map(|n| match n.value {
                Value::Map(m) => Some(m),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let mut have: std::collections::HashSet<String> = entries.iter().map(|(k, _)| k.name.clone()).collect();
    for m in maps {
        for (k, v) in m {
            if have.insert(k.name.clone()) {
                entries.push((k, v));
            }
        }
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// How many collections deep `n` is (a scalar: 0). Bounded by
/// [`MAX_DEPTH`] for every node the reader keeps, so the recursion is too.
fn depth(n: &Node) -> usize {
    match &n.value {
        Value::Map(m) => 1 + m.iter().map(|(_, v)| depth(v)).max().unwrap_or(0),
        Value::List(l) => 1 + l.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn size(n: &Node) -> usize {
    match &n.value {
        Value::Map(m) => m.iter().fold(1usize, |a, (_, v)| a.saturating_add(1).saturating_add(size(v))),
        Value::List(l) => l.iter().fold(1usize, |a, v| a.saturating_add(size(v))),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(n: &Node) -> &Vec<(Key, Node)> {
        match &n.value {
            Value::Map(m) => m,
            v => panic!("not a map: {v:?}"),
        }
    }

    #[test]
    fn lines_styles_and_binary() {
        let t = "#cloud-config\nhostname: a\nmode: '0644'\nplain: 0644\nlist:\n  - x\n  - [a, b]\nbin: !!binary aGVsbG8=\nnone:\n";
        let n = read("u", t).unwrap();
        let m = map(&n);
        assert_eq!(m[0].0.name, "hostname");
        assert_eq!(m[0].0.line, 2);
        assert_eq!(m[0].1, Node { line: 2, value: Value::Scalar(Scalar { text: "a".into(), style: Style::Plain }) });
        assert_eq!(m[1].1.value, Value::Scalar(Scalar { text: "0644".into(), style: Style::Quoted }));
        assert_eq!(m[2].1.value, Value::Scalar(Scalar { text: "0644".into(), style: Style::Plain }));
        let Value::List(l) = &m[3].1.value else { panic!() };
        assert_eq!(l[0].line, 6);
        assert_eq!(l[1].line, 7);
        assert_eq!(m[4].1.value, Value::Binary(b"hello".to_vec()));
        assert_eq!(m[5].1.value, Value::Null);
    }

    #[test]
    fn empty_is_null() {
        assert_eq!(read("u", "#cloud-config\n").unwrap().value, Value::Null);
        assert_eq!(read("u", "").unwrap().value, Value::Null);
    }

    #[test]
    fn duplicate_and_complex_keys_are_errors() {
        let e = read("u", "a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].to_string(), "u:3: key a: YAML: duplicate key `a` (first at line 1)");
        let e = read("u", "? [a, b]\n: c\nd: 1\n").unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].message.contains("scalar"));
        let e = read("u", "x:\n  a: 1\n  a: 2\ny:\n  - b: 1\n    b: 2\n").unwrap_err();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].to_string(), "u:3: key x.a: YAML: duplicate key `a` (first at line 2)");
        assert_eq!(e[1].to_string(), "u:6: key y[0].b: YAML: duplicate key `b` (first at line 5)");
    }

    #[test]
    fn syntax_errors_have_lines() {
        let e = read("u", "a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        assert!(e[0].place.line >= 2, "{e:?}");
        assert!(e[0].message.starts_with("YAML:"));
        let e = read("u", "a: !!binary '%%%'\n").unwrap_err();
        assert!(e[0].message.contains("base64"));
        assert!(read("u", "a: 1\n---\nb: 2\n").is_err());
        assert!(read("u", "a: !foo x\n").is_err());
    }

    #[test]
    fn aliases_and_merge_keys() {
        let n = read("u", "base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\nc: *b\n").unwrap();
        let m = map(&n);
        let o = map(&m[1].1);
        let names: Vec<_> = o.iter().map(|(k, _)| k.name.as_str()).collect();
        assert_eq!(names, ["y", "x"]);
        assert_eq!(map(&m[2].1).len(), 2);
        // `<<` of a scalar (or a list holding one) merges nothing: an
        // error, not a silent drop.
        let e = read("u", "a: &a 5\nb:\n  <<: *a\n  c: 1\nd:\n  <<: [{x: 1}, 2]\n").unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(
            e[0].to_string(),
            "u:3: key b.<<: YAML: the merge key `<<` needs a mapping or a list of mappings, found a string"
        );
        assert_eq!(e[1].place.key, "d.<<");
    }

    #[test]
    fn billion_laughs_and_depth_are_bounded() {
        let mut t = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            t.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert!(read("u", &t).unwrap_err()[0].message.contains("nodes"));
        let deep = "[".repeat(1000);
        assert!(read("u", &deep).is_err());
    }

    #[test]
    fn aliases_do_not_nest_deeper_than_the_bound() {
        // Each alias puts its anchor's 40 levels under 40 more: within the
        // node budget, thousands deep once expanded, which overflowed the
        // 2 MiB stack of PID1's user-data thread (an abort: a kernel panic).
        let mut t = String::from("#cloud-config\n");
        for k in 0..3 {
            let inner = if k == 0 { "x".to_string() } else { format!("*a{}", k - 1) };
            t.push_str(&format!("a{k}: &a{k} {}{inner}{}\n", "[".repeat(40), "]".repeat(40)));
        }
        let e = read("u", &t).unwrap_err();
        assert_eq!(e[0].to_string(), "u:3: YAML: nested deeper than 64 (aliases expanded)");
        // Shallow aliases still work.
        assert!(read("u", "a: &a [[1]]\nb: [*a, *a]\n").is_ok());
    }
}
