//! [`Node`]: an ordered document tree, written as block YAML (the form CloudFormation and SAM
//! templates are read and reviewed in).
//!
//! Maps keep the order they were built in, so a generated template reads like a hand-written
//! one (`Type` before `Properties`). Strings are written plain when YAML would read them back
//! as the same string, else double-quoted with JSON escapes (a subset of YAML's).

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

fn write_map(out: &mut String, entries: &[(String, Node)], indent: usize) {
    for (key, value) in entries {
        let _ = write!(out, "{:indent$}{}:", "", string(key));
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

/// `text` plain when YAML reads it back as that string, else double-quoted.
fn string(text: &str) -> String {
    if plain(text) {
        text.to_owned()
    } else {
        quoted(text)
    }
}

fn plain(text: &str) -> bool {
    const RESERVED: [&str; 22] = [
        "true", "false", "yes", "no", "on", "off", "null", "y", "n", "~", "True", "False", "Yes", "No", "On",
        "Off", "Null", "TRUE", "FALSE", "YES", "NO", "NULL",
    ];
    let Some(first) = text.chars().next() else {
        return false;
    };
    let looks_numeric = text
        .trim_start_matches(['-', '+', '.'])
        .starts_with(|c: char| c.is_ascii_digit());
    (first.is_ascii_alphanumeric() || first == '/' || first == '_' || first == '$')
        && !looks_numeric
        && !RESERVED.contains(&text)
        && !text.ends_with([' ', ':'])
        && !text.contains(": ")
        && !text.contains(" #")
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " _-./:@+=*$(),;<>!?'%^~".contains(c))
}

/// A double-quoted YAML string (JSON's escapes are valid YAML escapes).
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
            c if (c as u32) < 0x20 => {
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
    }
}
