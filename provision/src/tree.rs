//! One tree for both formats: what the YAML and TOML readers produce and
//! the interpreter reads. Every node keeps its line, and a scalar keeps
//! the text it was written as, because YAML 1.1 (what cloud-init reads,
//! through PyYAML) and YAML 1.2 disagree on what `yes`, `0644` and `on`
//! are: the interpreter decides from the text, knowing what the key wants.

/// The two formats, told apart by the first line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Format {
    /// `#cloud-config` (YAML, cloud-init's keys; Berth's under `berth:`).
    CloudConfig,
    /// `#berth-config` (TOML, the same keys; Berth's at the top level).
    Native,
}

/// A node and its 1-based line.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub line: usize,
    pub value: Value,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A mapping, in document order. Keys are strings (a YAML key that is
    /// not a scalar is an error of the reader); a duplicate key is an
    /// error of the reader, never a silent last-one-wins.
    Map(Vec<(Key, Node)>),
    List(Vec<Node>),
    /// A scalar as written.
    Scalar(Scalar),
    /// `!!binary` (YAML): the base64 already decoded.
    Binary(Vec<u8>),
    /// YAML `~`, `null` or an empty value. TOML has none.
    Null,
}

/// A mapping key and its line.
#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    pub name: String,
    pub line: usize,
}

/// A scalar: its text and how it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Scalar {
    /// The text after unquoting and escapes (`"0644"` -> `0644`).
    pub text: String,
    pub style: Style,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// YAML plain (unquoted): its type is whatever the key needs, read
    /// from the text with YAML 1.1's rules (`yes`/`no`/`on`/`off`,
    /// leading-zero octal) as cloud-init would.
    Plain,
    /// Quoted (YAML single/double, block scalars `|` `>`; TOML strings):
    /// always a string.
    Quoted,
    /// TOML's typed scalars: the text is the value's canonical form
    /// (`true`, `420`, `1.5`, an RFC 3339 date-time).
    TomlBool,
    TomlInteger,
    TomlFloat,
    TomlDatetime,
}

impl Node {
    /// What the node is, for errors: "a mapping", "a list", "a string", ...
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Map(_) => "a mapping",
            Value::List(_) => "a list",
            Value::Binary(_) => "binary data",
            Value::Null => "null",
            Value::Scalar(s) => match s.style {
                Style::Plain | Style::Quoted => "a string",
                Style::TomlBool => "a boolean",
                Style::TomlInteger => "an integer",
                Style::TomlFloat => "a float",
                Style::TomlDatetime => "a date-time",
            },
        }
    }
}
