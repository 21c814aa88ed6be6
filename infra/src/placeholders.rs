//! CloudFormation `Fn::Sub` placeholders in generated strings (`${AWS::StackName}`,
//! `${BookingApiFunction}`, `${BookingApiFunction.Version.Version}`, …), substituted as
//! `Fn::Sub` substitutes them: for a tool that reads `alarms/*.json` or `dashboards/*.json`
//! itself (the canary replay, the tests that send them to CloudWatch's API).
//!
//! As in `Fn::Sub`, `${name}` is replaced by the value of `name` (everything up to the next
//! `}`), `${!literal}` is written as `${literal}`, and a `$` not followed by `{` is kept.
//!
//! ```
//! use keel_infra::placeholders::{names, resolve};
//!
//! let text = "${AWS::StackName}-errors of ${BookingApiFunction}, not ${!Literal}";
//! assert_eq!(names(text), ["AWS::StackName", "BookingApiFunction"]);
//! let resolved = resolve(text, |name| match name {
//!     "AWS::StackName" => Some("prod".to_owned()),
//!     "BookingApiFunction" => Some("prod-api".to_owned()),
//!     _ => None,
//! });
//! assert_eq!(resolved.unwrap(), "prod-errors of prod-api, not ${Literal}");
//! ```

/// A placeholder [`resolve`] could not substitute.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnresolvedPlaceholder {
    /// The value function has no value for `${name}`.
    #[error("no value for the placeholder ${{{name}}}")]
    NoValue {
        /// The placeholder's name, without `${` and `}`.
        name: String,
    },
    /// A `${` is never closed by a `}` (CloudFormation rejects such a string).
    #[error("the placeholder `{text}` is not closed by a `}}`")]
    Unclosed {
        /// The text from that `${` to the end of the string.
        text: String,
    },
}

/// One piece of a string as `Fn::Sub` reads it.
enum Piece<'a> {
    /// Text written as it is.
    Text(&'a str),
    /// `${name}`.
    Placeholder(&'a str),
    /// `${!literal}`, written `${literal}`.
    Literal(&'a str),
    /// A `${` without its `}`: the rest of the string.
    Unclosed(&'a str),
}

/// Splits `text` into its pieces, in order.
fn pieces(text: &str) -> Vec<Piece<'_>> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        if start > 0 {
            pieces.push(Piece::Text(&rest[..start]));
        }
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                let inner = &after[..end];
                pieces.push(match inner.strip_prefix('!') {
                    Some(literal) => Piece::Literal(literal),
                    None => Piece::Placeholder(inner),
                });
                rest = &after[end + 1..];
            }
            None => {
                pieces.push(Piece::Unclosed(&rest[start..]));
                rest = "";
            }
        }
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    pieces
}

/// `text` with every `${name}` replaced by `value(name)` and every `${!literal}` by
/// `${literal}`, as `Fn::Sub` does. Fails on the first placeholder `value` has no value for,
/// or on a `${` that is never closed.
pub fn resolve(text: &str, value: impl Fn(&str) -> Option<String>) -> Result<String, UnresolvedPlaceholder> {
    let mut out = String::with_capacity(text.len());
    for piece in pieces(text) {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Placeholder(name) => match value(name) {
                Some(value) => out.push_str(&value),
                None => {
                    return Err(UnresolvedPlaceholder::NoValue {
                        name: name.to_owned(),
                    })
                }
            },
            Piece::Literal(literal) => {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            }
            Piece::Unclosed(text) => {
                return Err(UnresolvedPlaceholder::Unclosed {
                    text: text.to_owned(),
                })
            }
        }
    }
    Ok(out)
}

/// The names of the placeholders in `text` (without `${` and `}`), each once, in the order
/// they first appear; `${!literal}` and an unclosed `${` are not placeholders.
pub fn names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for piece in pieces(text) {
        if let Piece::Placeholder(name) = piece {
            if !names.iter().any(|known| known == name) {
                names.push(name.to_owned());
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> Option<String> {
        match name {
            "AWS::StackName" => Some("keel-test".into()),
            "AWS::Region" => Some("us-east-1".into()),
            "BookingApiFunction" => Some("keel-test-api".into()),
            "BookingApiFunction.Version.Version" => Some("7".into()),
            "Empty" => Some(String::new()),
            "Braces" => Some("${AWS::Region}".into()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_every_placeholder() {
        assert_eq!(
            resolve(
                "${AWS::StackName}-api:${BookingApiFunction}:live/\
                 ${BookingApiFunction.Version.Version} in ${AWS::Region}",
                sample
            ),
            Ok("keel-test-api:keel-test-api:live/7 in us-east-1".to_owned())
        );
        assert_eq!(
            resolve("${AWS::StackName}${AWS::StackName}", sample),
            Ok("keel-testkeel-test".to_owned())
        );
        assert_eq!(resolve("[${Empty}]", sample), Ok("[]".to_owned()));
    }

    #[test]
    fn text_without_placeholders_is_unchanged() {
        for text in [
            "",
            "plain",
            "100 * FILL(errors, 0) / invocations",
            "$",
            "a $ b",
            "$5",
            "{x}",
            "}{",
            "$}",
        ] {
            assert_eq!(resolve(text, |_| None), Ok(text.to_owned()), "{text:?}");
            assert!(names(text).is_empty(), "{text:?}");
        }
    }

    #[test]
    fn a_value_is_not_substituted_again() {
        assert_eq!(resolve("${Braces}", sample), Ok("${AWS::Region}".to_owned()));
    }

    #[test]
    fn an_exclamation_mark_keeps_the_placeholder_literal() {
        assert_eq!(resolve("${!Literal}", |_| None), Ok("${Literal}".to_owned()));
        assert_eq!(
            resolve("${!AWS::StackName} is ${AWS::StackName}", sample),
            Ok("${AWS::StackName} is keel-test".to_owned())
        );
        assert_eq!(resolve("${!}", |_| None), Ok("${}".to_owned()));
        assert_eq!(names("${!Literal} ${AWS::Region}"), ["AWS::Region"]);
    }

    #[test]
    fn a_dollar_before_a_placeholder_stays() {
        assert_eq!(resolve("$${AWS::Region}", sample), Ok("$us-east-1".to_owned()));
        assert_eq!(resolve("${AWS::Region}$", sample), Ok("us-east-1$".to_owned()));
    }

    #[test]
    fn the_name_runs_to_the_first_closing_brace() {
        let seen = std::cell::RefCell::new(Vec::new());
        let value = |name: &str| {
            seen.borrow_mut().push(name.to_owned());
            Some("v".to_owned())
        };
        assert_eq!(resolve("${a{b}c}", value), Ok("vc}".to_owned()));
        assert_eq!(seen.borrow().as_slice(), ["a{b"]);
        assert_eq!(names("${a{b}c} ${ spaced }"), ["a{b", " spaced "]);
    }

    #[test]
    fn an_unknown_placeholder_is_an_error_naming_it() {
        let error = resolve("${AWS::StackName}-${AlarmTopic}-${Other}", sample).unwrap_err();
        assert_eq!(
            error,
            UnresolvedPlaceholder::NoValue {
                name: "AlarmTopic".into()
            }
        );
        assert_eq!(error.to_string(), "no value for the placeholder ${AlarmTopic}");
        assert_eq!(
            resolve("${}", sample),
            Err(UnresolvedPlaceholder::NoValue { name: String::new() })
        );
    }

    #[test]
    fn an_unclosed_placeholder_is_an_error() {
        let error = resolve("${AWS::Region} and ${AWS::StackName", sample).unwrap_err();
        assert_eq!(
            error,
            UnresolvedPlaceholder::Unclosed {
                text: "${AWS::StackName".into()
            }
        );
        assert_eq!(
            error.to_string(),
            "the placeholder `${AWS::StackName` is not closed by a `}`"
        );
        assert_eq!(names("${AWS::Region} and ${AWS::StackName"), ["AWS::Region"]);
    }

    #[test]
    fn names_lists_each_placeholder_once_in_order() {
        assert_eq!(
            names("${B}-${A}-${B}-${AWS::StackName}-${A.Version.Version}"),
            ["B", "A", "AWS::StackName", "A.Version.Version"]
        );
    }

    #[test]
    fn multibyte_text_around_placeholders_is_kept() {
        assert_eq!(
            resolve("é${AWS::Region}→ü", sample),
            Ok("éus-east-1→ü".to_owned())
        );
    }
}
