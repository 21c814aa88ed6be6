//! [`Node`]: an ordered document tree, written as block YAML (the form CloudFormation and SAM
//! templates are read and reviewed in).
//!
//! Maps keep the order they were built in, so a generated template reads like a hand-written
//! one (`Type` before `Properties`). A string is written plain only when every YAML reader
//! reads it back as that same string, YAML 1.1 ones included (YAML 1.1, the YAML templates are
//! read with by CloudFormation and cfn-lint, takes `ON`, `y`, `no`, `1:20`, `0x1F` or
//! `2012-10-17` for booleans, numbers and dates); else it is double-quoted with JSON's escapes
//! (a subset of YAML's), and the characters YAML 1.1 reads as line breaks or refuses are
//! escaped too.
//!
//! The writer is kept rather than emitting through `serde_norway` (the maintained fork of
//! `serde_yaml`): that serializer quotes only what YAML 1.2 reads as another type, and writes
//! `ON`, `y`, `no`, `1:20` and `2012-10-17` plain, which YAML 1.1 readers misread. Keeping it
//! also keeps the template's text as it is and adds no dependency, and a test reads what it
//! writes back with a YAML parser, checking every plain string against YAML 1.1's and 1.2's
//! implicit types.

use std::fmt::Write;

/// A YAML value.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    /// A mapping, in order.
    Map(Vec<(String, Node)>),
    /// A sequence.
    List(Vec<Node>),
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
}

/// A mapping from `(key, value)` pairs, in order.
pub fn map<K: Into<String>, const N: usize>(entries: [(K, Node); N]) -> Node {
    Node::Map(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
}

/// A sequence.
pub fn list<const N: usize>(items: [Node; N]) -> Node {
    Node::List(items.into())
}

/// A string.
pub fn s(text: impl Into<String>) -> Node {
    Node::Str(text.into())
}

impl From<i64> for Node {
    fn from(value: i64) -> Self {
        Node::Int(value)
    }
}

impl From<bool> for Node {
    fn from(value: bool) -> Self {
        Node::Bool(value)
    }
}

impl Node {
    /// The value as a YAML document (block style, two-space indents, a final newline).
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        match self {
            Node::Map(entries) if !entries.is_empty() => write_map(&mut out, entries, 0),
            Node::List(items) if !items.is_empty() => write_list(&mut out, items, 0),
            scalar => {
                out.push_str(&inline(scalar));
                out.push('\n');
            }
        }
        out
    }

    /// The value at `key` of a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// A scalar, or an empty collection, on one line.
fn inline(node: &Node) -> String {
    match node {
        Node::Str(text) => string(text),
        Node::Int(n) => n.to_string(),
        Node::Bool(b) => b.to_string(),
        Node::Map(_) => "{}".into(),
        Node::List(_) => "[]".into(),
    }
}

fn is_block(node: &Node) -> bool {
    matches!(node, Node::Map(e) if !e.is_empty()) || matches!(node, Node::List(i) if !i.is_empty())
}

/// The longest key written as an implicit key (`key: value`), in characters; a longer one is
/// written as an explicit key (`? key` then `: value`), as YAML requires.
const MAX_IMPLICIT_KEY: usize = 1024;

fn write_map(out: &mut String, entries: &[(String, Node)], indent: usize) {
    for (key, value) in entries {
        let key = string(key);
        if key.chars().count() <= MAX_IMPLICIT_KEY {
            let _ = write!(out, "{:indent$}{key}:", "");
        } else {
            let _ = write!(out, "{:indent$}? {key}\n{:indent$}:", "", "");
        }
        write_value(out, value, indent + 2);
    }
}

fn write_list(out: &mut String, items: &[Node], indent: usize) {
    for item in items {
        let _ = write!(out, "{:indent$}-", "");
        match item {
            // The first entry on the dash's line, the rest under it.
            Node::Map(entries) if !entries.is_empty() => {
                let mut first = String::new();
                write_map(&mut first, entries, indent + 2);
                out.push(' ');
                out.push_str(&first[indent + 2..]);
            }
            other => write_value(out, other, indent + 2),
        }
    }
}

/// After `key:` or `-`: a scalar on the same line, a collection on the next ones.
fn write_value(out: &mut String, value: &Node, indent: usize) {
    match value {
        Node::Map(entries) if is_block(value) => {
            out.push('\n');
            write_map(out, entries, indent);
        }
        Node::List(items) if is_block(value) => {
            out.push('\n');
            write_list(out, items, indent);
        }
        scalar => {
            out.push(' ');
            out.push_str(&inline(scalar));
            out.push('\n');
        }
    }
}

/// `text` plain when every YAML reader reads it back as that string, else double-quoted.
fn string(text: &str) -> String {
    if plain(text) {
        text.to_owned()
    } else {
        quoted(text)
    }
}

/// The plain scalars YAML 1.1 reads as booleans (`y`, `on`, ...) or null, every spelling it
/// lists; YAML 1.2's (`true`, `null`, ...) are among them.
const RESERVED: [&str; 26] = [
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false", "False",
    "FALSE", "on", "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL", "~",
];

/// Whether `text` can be written plain: it starts with a letter, `/`, `_` or `$` (so never
/// with a digit, sign or dot, the start of every number, date and time YAML 1.1 or 1.2 reads,
/// nor with an indicator such as `-`, `?`, `:`, `&`, `*`, `!`, `|`, `>`, `%`, `@`, `<<`, `=`
/// or a quote); it is none of [`RESERVED`]; it holds only ASCII letters, digits, spaces and
/// punctuation that means nothing inside a block scalar; and it has no `: ` or ` #`, nor a
/// trailing space or colon, that would end it early.
fn plain(text: &str) -> bool {
    let Some(first) = text.chars().next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || matches!(first, '/' | '_' | '$'))
        && !RESERVED.contains(&text)
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " _-./:@+=*$(),;<>!?'%^~".contains(c))
        && !text.ends_with([' ', ':'])
        && !text.contains(": ")
        && !text.contains(" #")
}

/// A double-quoted YAML string. JSON's escapes are valid YAML escapes; besides the C0 controls,
/// the characters YAML 1.1 reads as line breaks (U+0085, U+2028, U+2029) or does not accept
/// unescaped (DEL, the C1 controls, U+FEFF, U+FFFE, U+FFFF) are escaped as `\uXXXX`.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{0}'..='\u{1f}'
            | '\u{7f}'..='\u{9f}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{feff}'
            | '\u{fffe}'
            | '\u{ffff}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_yaml_keeps_order_and_nests() {
        let doc = map([
            ("Type", s("AWS::SNS::Topic")),
            (
                "Properties",
                map([
                    ("Tags", list([map([("Key", s("app")), ("Value", s("keel"))])])),
                    ("Names", list([s("a"), s("b")])),
                    ("Empty", Node::List(vec![])),
                    ("Count", 3.into()),
                    ("On", true.into()),
                ]),
            ),
        ]);
        assert_eq!(
            doc.to_yaml(),
            "Type: AWS::SNS::Topic\nProperties:\n  Tags:\n    - Key: app\n      Value: keel\n  Names:\n    - a\n    - b\n  Empty: []\n  Count: 3\n  \"On\": true\n"
        );
    }

    #[test]
    fn strings_yaml_would_misread_are_quoted() {
        for text in [
            "",
            "127.0.0.1:9124",
            "${AWS::StackName}-errors",
            "yes",
            "no",
            "on",
            "null",
            "ON",
            "Off",
            "Y",
            "n",
            "NULL",
            "1:20",
            "0x1F",
            "0o17",
            "2012-10-17",
            ".inf",
            "<<",
            "=",
            "3",
            "1.5",
            "-2",
            "a: b",
            "x #y",
            "*",
            "&a",
            "!Ref",
            "\"q\"",
            "tab\there",
            "- x",
            "ends:",
            " lead",
        ] {
            assert!(string(text).starts_with('"'), "{text:?} -> {}", string(text));
        }
        for text in [
            "AWS::SNS::Topic",
            "provided.al2023",
            "arn:aws:s3:::b/*",
            "booking-api",
            "Fn::GetAtt",
        ] {
            assert_eq!(string(text), text);
        }
        assert_eq!(quoted("a\"b\\c\nd"), "\"a\\\"b\\\\c\\nd\"");
        // What YAML 1.1 reads as a line break, or refuses unescaped.
        assert_eq!(
            quoted("a\u{85}b\u{2028}\u{2029}\u{7f}\u{9f}\u{feff}\u{ffff}\u{0}é"),
            "\"a\\u0085b\\u2028\\u2029\\u007f\\u009f\\ufeff\\uffff\\u0000é\""
        );
    }

    #[test]
    fn a_long_key_is_written_explicit() {
        let key = "k".repeat(MAX_IMPLICIT_KEY + 1);
        let doc = map([
            (key.as_str(), s("v")),
            ("short", list([map([(key.as_str(), 1.into())])])),
        ]);
        assert_eq!(
            doc.to_yaml(),
            format!("? {key}\n: v\nshort:\n  - ? {key}\n    : 1\n")
        );
    }
}
