//! The shape of a unit file: which tables and keys it has, and the type of
//! each value.
//!
//! A [`Reader`] walks the [`Table`] of a file by the paths the format knows
//! and reports what serde reports for a struct with `deny_unknown_fields`
//! (unknown field, missing field, invalid type, in serde's words), but each
//! problem with the line and path of its key, and without stopping at the
//! first one. What the values mean is checked by [`super::check`].

use std::ops::Range;

use serde::de::{self, DeserializeOwned};
use toml::Spanned;

use super::document::{Node, Seg, Source, Table};
use super::error::{ErrorKind, Location, UnitError};

/// A place in the file: a key path and where to point for it.
#[derive(Debug, Clone)]
pub(crate) struct Place<'t> {
    pub(crate) path: Vec<Seg<'t>>,
    /// The key's span; an array element's own; for a key that is not in the
    /// file, its table's (see [`Section::place`]).
    pub(crate) span: Range<usize>,
}

impl<'t> Place<'t> {
    fn child(&self, seg: Seg<'t>, span: Range<usize>) -> Place<'t> {
        let mut path = self.path.clone();
        path.push(seg);
        Place { path, span }
    }
}

/// A key or array element that is in the file, with its value.
#[derive(Debug, Clone)]
pub(crate) struct Field<'t> {
    pub(crate) at: Place<'t>,
    pub(crate) node: &'t Node,
}

impl<'t> Field<'t> {
    /// The key of a table entry (`""` for an array element).
    pub(crate) fn key(&self) -> &'t str {
        match self.at.path.last() {
            Some(Seg::Key(k)) => k,
            _ => "",
        }
    }

    /// The value's one entry when it is a table of exactly one entry named
    /// `key`: `{ tcp = "IP:PORT" }`.
    pub(crate) fn sole_entry(&self, key: &str) -> Option<Field<'t>> {
        match self.node {
            Node::Table(Table(entries)) => match entries.as_slice() {
                [(k, node)] if k.get_ref() == key => Some(entry(&self.at, k, node)),
                _ => None,
            },
            _ => None,
        }
    }
}

/// A table whose keys have been checked against the format's.
#[derive(Debug, Clone)]
pub(crate) struct Section<'t> {
    at: Place<'t>,
    table: &'t Table,
}

impl<'t> Section<'t> {
    /// The entry `key`, if the file has it.
    pub(crate) fn get(&self, key: &str) -> Option<Field<'t>> {
        self.fields().find(|f| f.key() == key)
    }

    /// Where `key` is; when the file does not have it (a default), where its
    /// table is.
    pub(crate) fn place(&self, key: &'t str) -> Place<'t> {
        match self.get(key) {
            Some(f) => f.at,
            None => self.at.child(Seg::Key(key), self.at.span.clone()),
        }
    }

    /// Where the table itself is.
    pub(crate) fn at(&self) -> &Place<'t> {
        &self.at
    }

    /// An empty table standing for `key`, which the file leaves out: every
    /// key of it takes its default.
    fn absent(&self, key: &'t str) -> Section<'t> {
        static EMPTY: Table = Table(Vec::new());
        Section { at: self.place(key), table: &EMPTY }
    }

    /// Every entry, in file order.
    pub(crate) fn fields(&self) -> impl Iterator<Item = Field<'t>> + '_ {
        self.table.0.iter().map(|(k, node)| entry(&self.at, k, node))
    }
}

/// Reads one file's shape, collecting every problem.
pub(crate) struct Reader<'a> {
    src: &'a Source<'a>,
    pub(crate) errors: Vec<UnitError>,
}

/// serde's wording for a mismatch, without a deserializer.
fn serde_message(e: de::value::Error) -> String {
    e.to_string()
}

impl<'a> Reader<'a> {
    pub(crate) fn new(src: &'a Source<'a>) -> Self {
        Reader { src, errors: Vec::new() }
    }

    /// The location of a place, for values that keep it ([`super::Dependency`]).
    pub(crate) fn locate(&self, at: &Place<'_>) -> Location {
        self.src.locate(&at.path, &at.span)
    }

    /// A value of the right shape that is not acceptable.
    pub(crate) fn invalid(&mut self, at: &Place<'_>, message: impl Into<String>) {
        self.errors.push(self.src.error_at(&at.path, &at.span, ErrorKind::Invalid(message.into())));
    }

    /// Something that does not fit the format: unknown or missing key,
    /// wrong type.
    fn mismatch(&mut self, at: &Place<'_>, message: String) {
        self.errors.push(self.src.error_at(&at.path, &at.span, ErrorKind::Syntax(message)));
    }

    fn invalid_type(&mut self, field: &Field<'_>, expected: &str) {
        self.mismatch(&field.at, serde_message(de::Error::invalid_type(field.node.unexpected(), &expected)));
    }

    /// The file's root table, placed at the start of the file.
    pub(crate) fn root<'t>(&mut self, table: &'t Table, known: &'static [&'static str]) -> Section<'t> {
        let section = Section { at: Place { path: Vec::new(), span: 0..0 }, table };
        self.unknown_keys(&section, known);
        section
    }

    fn unknown_keys(&mut self, section: &Section<'_>, known: &'static [&'static str]) {
        for field in section.fields() {
            let key = field.key();
            if !known.contains(&key) {
                self.mismatch(&field.at, serde_message(de::Error::unknown_field(key, known)));
            }
        }
    }

    /// `field` as a table with the keys `known`.
    pub(crate) fn table<'t>(&mut self, field: &Field<'t>, known: &'static [&'static str]) -> Option<Section<'t>> {
        let section = self.map(field)?;
        self.unknown_keys(&section, known);
        Some(section)
    }

    /// `field` as a table whose keys are the file's own (environment
    /// variables).
    pub(crate) fn map<'t>(&mut self, field: &Field<'t>) -> Option<Section<'t>> {
        let Node::Table(table) = field.node else {
            self.invalid_type(field, "a table");
            return None;
        };
        Some(Section { at: field.at.clone(), table })
    }

    /// The table `key` of `parent`, if the file has it.
    pub(crate) fn section<'t>(
        &mut self,
        parent: &Section<'t>,
        key: &str,
        known: &'static [&'static str],
    ) -> Option<Section<'t>> {
        self.table(&parent.get(key)?, known)
    }

    /// The table `key` of `parent`; when the file leaves it out (or it is
    /// not a table, reported), an empty one whose keys take their defaults.
    pub(crate) fn section_or_default<'t>(
        &mut self,
        parent: &Section<'t>,
        key: &'t str,
        known: &'static [&'static str],
    ) -> Section<'t> {
        self.section(parent, key, known).unwrap_or_else(|| parent.absent(key))
    }

    /// The entry `key`, which the format requires.
    pub(crate) fn required<'t>(&mut self, section: &Section<'t>, key: &'static str) -> Option<Field<'t>> {
        let field = section.get(key);
        if field.is_none() {
            // Placed at the table that lacks it (line 1 for the root).
            self.mismatch(&section.place(key), serde_message(de::Error::missing_field(key)));
        }
        field
    }

    /// The value read into `T` by serde (a number, a string, an enum of
    /// names), with serde's message when it does not fit.
    pub(crate) fn typed<T: DeserializeOwned>(&mut self, field: &Field<'_>) -> Option<T> {
        match T::deserialize(field.node.to_value()) {
            Ok(v) => Some(v),
            Err(e) => {
                self.mismatch(&field.at, e.message().to_owned());
                None
            }
        }
    }

    /// `typed` for an entry the file may leave out.
    pub(crate) fn optional<T: DeserializeOwned>(&mut self, section: &Section<'_>, key: &str) -> Option<T> {
        self.typed(&section.get(key)?)
    }

    /// The elements of an array.
    pub(crate) fn array<'t>(&mut self, field: &Field<'t>) -> Option<Vec<Field<'t>>> {
        let Node::Array(items) = field.node else {
            self.invalid_type(field, "a sequence");
            return None;
        };
        let element = |(i, item): (usize, &'t Spanned<Node>)| Field {
            at: field.at.child(Seg::Index(i), item.span()),
            node: item.get_ref(),
        };
        Some(items.iter().enumerate().map(element).collect())
    }

    /// An array of strings, each with its place; `None` when any element is
    /// not a string (each one reported).
    pub(crate) fn strings<'t>(&mut self, field: &Field<'t>) -> Option<Vec<(Place<'t>, String)>> {
        let mut out = Vec::new();
        let mut ok = true;
        for item in self.array(field)? {
            match self.typed::<String>(&item) {
                Some(s) => out.push((item.at, s)),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}

/// The entry `key = node` of the table at `table`, placed at its key.
fn entry<'t>(table: &Place<'t>, key: &'t Spanned<String>, node: &'t Node) -> Field<'t> {
    Field { at: table.child(Seg::Key(key.get_ref()), key.span()), node }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const KNOWN: &[&str] = &["a", "t", "list"];

    /// Runs `f` on the root of `text`; its result and every error as
    /// `LINE key: message`.
    fn read<T>(text: &str, f: impl FnOnce(&mut Reader<'_>, &Section<'_>) -> T) -> (T, Vec<String>) {
        let src = Source::new(Path::new("/u/x.toml"), text);
        let table = src.parse().unwrap();
        let mut r = Reader::new(&src);
        let root = r.root(&table, KNOWN);
        let out = f(&mut r, &root);
        let errors = r
            .errors
            .iter()
            .map(|e| format!("{} {}: {}", e.at.line.unwrap(), e.at.key.clone().unwrap(), e.kind))
            .collect();
        (out, errors)
    }

    #[test]
    fn unknown_keys_are_reported_at_their_line_with_the_keys_expected() {
        let (found, errors) = read("a = 1\nb = 2\n[t]\nc = 3\n", |r, root| r.section(root, "t", &["d"]).is_some());
        assert_eq!(
            errors,
            ["2 b: unknown field `b`, expected one of `a`, `t`, `list`", "4 t.c: unknown field `c`, expected `d`"]
        );
        assert!(found, "a table with an unknown key is still read");
    }

    #[test]
    fn a_missing_key_is_placed_at_its_table() {
        let (missing, errors) = read("\n[t]\nx = 1\n", |r, root| {
            let t = r.section(root, "t", &["x", "y"]).unwrap();
            (r.required(&t, "y").is_none(), r.required(root, "a").is_none())
        });
        assert_eq!(missing, (true, true));
        assert_eq!(errors, ["2 t.y: missing field `y`", "1 a: missing field `a`"]);
    }

    #[test]
    fn types_are_checked_with_serdes_words_at_each_element() {
        let (out, errors) = read("a = -1\nlist = [\n\"x\",\n5,\n]\nt = 1\n", |r, root| {
            let n: Option<u32> = r.optional(root, "a");
            let list = r.strings(&root.get("list").unwrap());
            let t = r.section(root, "t", &[]);
            (n, list.is_none(), t.is_none())
        });
        assert_eq!(out, (None, true, true));
        assert_eq!(
            errors,
            [
                "1 a: invalid value: integer `-1`, expected u32",
                "4 list[1]: invalid type: integer `5`, expected a string",
                "6 t: invalid type: integer `1`, expected a table"
            ]
        );
        let (strings, errors) = read("list = [\"x\", \"y\"]\n", |r, root| {
            r.strings(&root.get("list").unwrap()).map(|v| v.into_iter().map(|(_, s)| s).collect::<Vec<_>>())
        });
        let strings = strings.unwrap();
        assert_eq!((strings, errors), (vec!["x".to_owned(), "y".to_owned()], vec![]));
    }
}
