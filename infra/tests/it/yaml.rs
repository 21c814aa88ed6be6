//! What the YAML writer writes reads back as the tree it was written from: parsed by a YAML
//! parser, every scalar is the same string, and every string written plain is one that YAML 1.1
//! (CloudFormation, cfn-lint) and YAML 1.2 both read as a string, not as a boolean, null,
//! number, date or merge key. Checked on the template, on strings chosen to trip a writer up,
//! and on random trees of random strings built from such pieces.

use std::sync::LazyLock;

use keel_infra::yaml::Node;
use regex::Regex;
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::TScalarStyle;

/// A document as the parser read it.
#[derive(Debug)]
enum Read {
    Map(Vec<(Scalar, Read)>),
    List(Vec<Read>),
    Scalar(Scalar),
}

/// A scalar as the parser read it: its text, and whether it was plain (then its type is the
/// one its text resolves to).
#[derive(Debug)]
struct Scalar {
    text: String,
    plain: bool,
}

/// `yaml` parsed: it must be one document, without anchors, aliases or tags.
fn read(yaml: &str) -> Read {
    let mut events = Vec::new();
    let mut parser = Parser::new_from_str(yaml);
    loop {
        match parser.next_token() {
            Ok((Event::StreamEnd, _)) => break,
            Ok((event, _)) => events.push(event),
            Err(error) => panic!("not YAML: {error}\n{yaml}"),
        }
    }
    let mut events = events.into_iter();
    assert!(matches!(events.next(), Some(Event::StreamStart)), "{yaml}");
    assert!(matches!(events.next(), Some(Event::DocumentStart)), "{yaml}");
    let document = node(&mut events, yaml).unwrap_or_else(|| panic!("no document: {yaml}"));
    assert!(matches!(events.next(), Some(Event::DocumentEnd)), "{yaml}");
    assert!(events.next().is_none(), "one document: {yaml}");
    document
}

/// The next node of `events`; `None` at the end of a collection.
fn node(events: &mut impl Iterator<Item = Event>, yaml: &str) -> Option<Read> {
    let read = match events.next() {
        Some(Event::Scalar(text, style, 0, None)) => Read::Scalar(Scalar {
            text,
            plain: style == TScalarStyle::Plain,
        }),
        Some(Event::SequenceStart(0, None)) => {
            Read::List(std::iter::from_fn(|| node(events, yaml)).collect())
        }
        Some(Event::MappingStart(0, None)) => {
            let mut entries = Vec::new();
            while let Some(key) = node(events, yaml) {
                let Read::Scalar(key) = key else {
                    panic!("a key that is not a scalar: {key:?}\n{yaml}");
                };
                let value = node(events, yaml).unwrap_or_else(|| panic!("a key without a value\n{yaml}"));
                entries.push((key, value));
            }
            Read::Map(entries)
        }
        Some(Event::SequenceEnd | Event::MappingEnd) => return None,
        other => panic!("unexpected {other:?}\n{yaml}"),
    };
    Some(read)
}

/// The implicit types a plain scalar can resolve to, as the YAML 1.1 type repository
/// (`yaml.org/type`), PyYAML (YAML 1.1, cfn-lint's reader) and the YAML 1.2 core schema write
/// them.
static IMPLICIT: LazyLock<Vec<(&'static str, Regex)>> = LazyLock::new(|| {
    [
        (
            "bool (1.1)",
            "y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF",
        ),
        ("null (1.1, 1.2)", "~|null|Null|NULL|"),
        (
            "int (1.1)",
            r"[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+|[-+]?[1-9][0-9_]*(:[0-5]?[0-9])+",
        ),
        (
            "float (1.1)",
            r"[-+]?([0-9][0-9_]*)?\.[0-9.]*([eE][-+][0-9]+)?|[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)",
        ),
        (
            "float (PyYAML)",
            r"[-+]?[0-9][0-9_]*\.[0-9_]*([eE][-+][0-9]+)?|\.[0-9_]+([eE][-+][0-9]+)?",
        ),
        (
            "timestamp (1.1)",
            r"[0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([Tt]|[ \t]+)[0-9]{1,2}:[0-9]{2}:[0-9]{2}(\.[0-9]*)?(([ \t]*)Z|[-+][0-9]{1,2}(:[0-9]{2})?)?",
        ),
        ("merge (1.1)", "<<"),
        ("value (1.1)", "="),
        ("bool (1.2)", "true|True|TRUE|false|False|FALSE"),
        ("int (1.2)", "[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+"),
        (
            "float (1.2)",
            r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)",
        ),
    ]
    .into_iter()
    .map(|(name, pattern)| (name, Regex::new(&format!("^(?:{pattern})$")).expect("a valid pattern")))
    .collect()
});

/// The type other than string that a YAML reader gives the plain scalar `text`, if any.
fn implicit_type(text: &str) -> Option<&'static str> {
    IMPLICIT
        .iter()
        .find(|(_, pattern)| pattern.is_match(text))
        .map(|(name, _)| *name)
}

/// `scalar` is read as the string `text`.
fn same_string(text: &str, scalar: &Scalar, at: &str, yaml: &str) {
    assert_eq!(scalar.text, text, "at {at}:\n{yaml}");
    if scalar.plain {
        assert_eq!(
            implicit_type(text),
            None,
            "at {at}: {text:?} is written plain, and read as another type:\n{yaml}"
        );
    }
}

/// `read` is `written`, as YAML 1.1 and 1.2 readers see it.
fn same(written: &Node, read: &Read, at: &str, yaml: &str) {
    match (written, read) {
        (Node::Str(text), Read::Scalar(scalar)) => same_string(text, scalar, at, yaml),
        (Node::Int(n), Read::Scalar(scalar)) => {
            assert!(
                scalar.plain && scalar.text == n.to_string(),
                "at {at}: {scalar:?}"
            );
            assert_eq!(implicit_type(&scalar.text), Some("int (1.1)"), "at {at}");
        }
        (Node::Bool(b), Read::Scalar(scalar)) => {
            assert!(
                scalar.plain && scalar.text == b.to_string(),
                "at {at}: {scalar:?}"
            );
        }
        (Node::Map(entries), Read::Map(read)) => {
            assert_eq!(entries.len(), read.len(), "at {at}:\n{yaml}");
            for ((key, value), (read_key, read_value)) in entries.iter().zip(read) {
                let at = format!("{at}/{key:?}");
                same_string(key, read_key, &at, yaml);
                same(value, read_value, &at, yaml);
            }
        }
        (Node::List(items), Read::List(read)) => {
            assert_eq!(items.len(), read.len(), "at {at}:\n{yaml}");
            for (n, (item, read)) in items.iter().zip(read).enumerate() {
                same(item, read, &format!("{at}/{n}"), yaml);
            }
        }
        (written, read) => panic!("at {at}: wrote {written:?}, read {read:?}\n{yaml}"),
    }
}

/// Writes `node` and reads it back.
fn round_trip(node: &Node) {
    let yaml = node.to_yaml();
    same(node, &read(&yaml), "", &yaml);
}

/// Strings a YAML writer may get wrong: YAML 1.1's booleans, nulls, numbers and dates,
/// indicators, quotes, escapes, line breaks, and what only looks like them.
fn tricky() -> Vec<String> {
    #[rustfmt::skip]
    let mut strings: Vec<String> = [
        // Booleans and nulls, YAML 1.1 and 1.2, and spellings that are neither.
        "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false", "False",
        "FALSE", "on", "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL", "~", "", "yEs", "oN",
        "nULL", "tRUE", "nO", "yy", "Yes!", "no way", "on-call", "Off:",
        // Numbers: decimal, octal, hexadecimal, binary, sexagesimal, floats, infinities.
        "0", "7", "-7", "+7", "017", "0o17", "0x1F", "0X1F", "0b101", "1_000", "1:20", "-1:20:30",
        "190:20:30.15", "1.5", "-1.5", ".5", "1.", "1e3", "1.0e+3", "6.8523015e+5", ".inf", "-.inf",
        "+.INF", ".nan", ".NaN", "1.2.3", "0.0.0.0", "127.0.0.1:9124",
        // Dates and times.
        "2012-10-17", "2010-09-09", "2001-12-14t21:59:43.10-05:00", "2001-12-14 21:59:43.10 -5",
        "2001-12-15T02:59:43.1Z", "2002-1-1 1:00:00",
        // Indicators and what ends a plain scalar.
        "<<", "=", "-", "- a", "-a", "?", "? a", ":", ": a", "a: b", "a:b", "a:", "a :", "#", "#a", "a #b",
        "a#b", "&a", "*a", "!a", "!!str", "|", "|-", ">", "%YAML", "@a", "`a", "'a'", "\"a\"", "a'b",
        "a\"b", "{a}", "[a]", "a,b", "a, b", "{", "}", "[", "]", ",", "---", "...", "--- a", "... a",
        // Spaces, escapes and line breaks.
        " ", " a", "a ", "a  b", "\t", "a\tb", "a\nb", "a\n", "\n", "a\rb", "\\", "a\\nb", "\u{0}", "\u{7}",
        "\u{1b}[0m", "\u{7f}", "\u{85}", "a\u{85}b", "\u{a0}", "\u{2028}", "\u{2029}", "\u{feff}",
        "\u{fffe}", "\u{ffff}",
        // Not ASCII.
        "é", "naïve", "日本", "😀", "\u{1F600}a",
        // What the template holds.
        "AWS::SNS::Topic", "Fn::GetAtt", "arn:aws:s3:::b/*", "${AWS::StackName}-errors", "provided.al2023",
        "booking-api", "x86_64", "arm64", "OnArm64", "Ref",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    // The booleans, nulls and first numbers, each with a sign, a dot or a space around it.
    let around: Vec<String> = strings
        .iter()
        .take(40)
        .flat_map(|s| {
            [
                format!("-{s}"),
                format!("+{s}"),
                format!(".{s}"),
                format!("{s} "),
                format!(" {s}"),
            ]
        })
        .collect();
    strings.extend(around);
    strings
}

/// Each string as a value, a key and a list item, in block and empty collections.
fn documents(text: &str) -> Vec<Node> {
    let s = || Node::Str(text.to_owned());
    vec![
        s(),
        Node::Map(vec![(text.to_owned(), s())]),
        Node::Map(vec![
            ("a".into(), s()),
            (
                text.to_owned(),
                Node::Map(vec![(text.to_owned(), Node::List(vec![]))]),
            ),
            (
                "b".into(),
                Node::List(vec![s(), Node::Map(vec![(text.to_owned(), s())])]),
            ),
        ]),
        Node::List(vec![s(), Node::List(vec![s()]), Node::Map(vec![])]),
    ]
}

#[test]
fn the_template_reads_back_as_its_tree() {
    round_trip(&keel_infra::template::template());
}

#[test]
fn tricky_strings_read_back_as_themselves() {
    for text in tricky() {
        for document in documents(&text) {
            round_trip(&document);
        }
    }
    for (n, b) in [(0, true), (-3, false), (i64::MAX, true), (i64::MIN, false)] {
        round_trip(&Node::Map(vec![("n".into(), n.into()), ("b".into(), b.into())]));
    }
}

#[test]
fn a_key_too_long_to_be_implicit_is_written_explicit_and_reads_back() {
    for length in [1000, 1022, 1023, 1024, 1025, 5000] {
        let key = "k".repeat(length);
        let needs_quotes = format!("{key}:");
        for document in documents(&key).into_iter().chain(documents(&needs_quotes)) {
            round_trip(&document);
        }
    }
}

/// Random strings of tricky pieces, in random trees: each reads back as itself.
#[test]
fn random_trees_of_tricky_strings_read_back_as_themselves() {
    let pieces = tricky();
    let mut rng = fastrand::Rng::with_seed(0x6b65656c);
    let mut text = |rng: &mut fastrand::Rng| -> String {
        (0..rng.usize(1..=4))
            .map(|_| pieces[rng.usize(..pieces.len())].as_str())
            .collect()
    };
    fn tree(
        rng: &mut fastrand::Rng,
        depth: usize,
        text: &mut impl FnMut(&mut fastrand::Rng) -> String,
    ) -> Node {
        match rng.usize(0..if depth == 0 { 3 } else { 5 }) {
            0 => Node::Str(text(rng)),
            1 => Node::Int(rng.i64(..)),
            2 => Node::Bool(rng.bool()),
            3 => Node::List((0..rng.usize(0..4)).map(|_| tree(rng, depth - 1, text)).collect()),
            _ => Node::Map(
                (0..rng.usize(0..4))
                    .map(|_| (text(rng), tree(rng, depth - 1, text)))
                    .collect(),
            ),
        }
    }
    for _ in 0..2_000 {
        let node = tree(&mut rng, 3, &mut text);
        round_trip(&node);
    }
}
