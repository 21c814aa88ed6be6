//! The part of CloudWatch metric math the alarms use, over [`Series`].
//!
//! Supported: numbers, the ids of the alarm's metric queries, `+ - * /`, unary minus,
//! parentheses, the comparisons `== != < <= > >=` and `AND`/`OR` (1 for true, 0 for false),
//! `FILL(x, value)` and `IF(condition, a[, b])`. As in CloudWatch, an operation on a period where
//! an operand has no datapoint has no datapoint, dividing by zero gives none, `FILL` gives one,
//! and `IF` without `b` gives none where the condition is false.
//!
//! ```
//! use std::collections::BTreeMap;
//! use keel_infra::replay::{math, Datapoint, Series};
//!
//! let series = |values: &[Option<f64>]| Series {
//!     start_ms: 0,
//!     period_s: 60,
//!     points: values.iter().map(|v| v.map(|value| Datapoint { value, samples: 1.0 })).collect(),
//! };
//! let inputs = BTreeMap::from([
//!     ("errors".to_owned(), series(&[None, Some(2.0)])),
//!     ("invocations".to_owned(), series(&[Some(10.0), Some(20.0)])),
//! ]);
//! let rate = math::evaluate("100 * FILL(errors, 0) / invocations", &inputs).unwrap();
//! assert_eq!(rate.points.iter().map(|p| p.map(|p| p.value)).collect::<Vec<_>>(), [Some(0.0), Some(10.0)]);
//! ```

use std::collections::BTreeMap;

use super::{Datapoint, Series};

/// An expression that cannot be evaluated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MathError {
    /// Not an expression this module reads.
    #[error("at character {at}: {reason}")]
    Syntax {
        /// Where, from 0.
        at: usize,
        /// What was expected.
        reason: String,
    },
    /// An id that is none of the alarm's queries.
    #[error("{0} is not the id of a query of the alarm")]
    UnknownId(String),
    /// A function this module does not evaluate.
    #[error("{0} is not supported (FILL and IF are)")]
    UnknownFunction(String),
    /// Operands over different periods.
    #[error("the operands' periods differ: each query of an alarm has the same period")]
    Misaligned,
    /// The expression is a constant, which an alarm cannot watch.
    #[error("the expression is a constant, not a time series")]
    Constant,
}

/// Evaluates `expression` over `inputs` (query id → series).
pub fn evaluate(expression: &str, inputs: &BTreeMap<String, Series>) -> Result<Series, MathError> {
    let mut parser = Parser {
        tokens: tokenize(expression)?,
        next: 0,
        inputs,
        depth: 0,
    };
    let value = parser.expression()?;
    if let Some((at, token)) = parser.tokens.get(parser.next) {
        return Err(syntax(*at, format!("unexpected {token:?}")));
    }
    match value {
        Operand::Series(series) => Ok(series),
        Operand::Constant(_) => Err(MathError::Constant),
    }
}

fn syntax(at: usize, reason: impl Into<String>) -> MathError {
    MathError::Syntax {
        at,
        reason: reason.into(),
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Number(f64),
    Name(String),
    Operator(&'static str),
    Open,
    Close,
    Comma,
}

fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, MathError> {
    const OPERATORS: [&str; 12] = ["==", "!=", "<=", ">=", "&&", "||", "<", ">", "+", "-", "*", "/"];
    let mut tokens = Vec::new();
    let mut at = 0;
    while let Some(c) = text[at..].chars().next() {
        let rest = &text[at..];
        let start = at;
        if c.is_whitespace() {
            at += c.len_utf8();
            continue;
        }
        let token = if c.is_ascii_digit() || c == '.' {
            let len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let number = rest[..len]
                .parse()
                .map_err(|_| syntax(start, format!("{:?} is not a number", &rest[..len])))?;
            at += len;
            Token::Number(number)
        } else if c.is_ascii_alphabetic() || c == '_' {
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            at += len;
            Token::Name(rest[..len].to_owned())
        } else if let Some(op) = OPERATORS.into_iter().find(|op| rest.starts_with(op)) {
            at += op.len();
            Token::Operator(match op {
                "&&" => "AND",
                "||" => "OR",
                op => op,
            })
        } else {
            at += c.len_utf8();
            match c {
                '(' => Token::Open,
                ')' => Token::Close,
                ',' => Token::Comma,
                _ => return Err(syntax(start, format!("unexpected {c:?}"))),
            }
        };
        tokens.push((start, token));
    }
    Ok(tokens)
}

/// A value during evaluation.
#[derive(Clone, Debug)]
enum Operand {
    Constant(f64),
    Series(Series),
}

struct Parser<'a> {
    tokens: Vec<(usize, Token)>,
    next: usize,
    inputs: &'a BTreeMap<String, Series>,
    /// How deep the parser is in parentheses, calls and unary minuses.
    depth: usize,
}

/// The deepest nesting read: deeper would risk the stack, and no alarm needs it.
const MAX_DEPTH: usize = 64;

/// Binary operators by precedence, loosest first.
const LEVELS: [&[&str]; 5] = [
    &["OR"],
    &["AND"],
    &["==", "!=", "<", "<=", ">", ">="],
    &["+", "-"],
    &["*", "/"],
];

impl Parser<'_> {
    fn expression(&mut self) -> Result<Operand, MathError> {
        self.level(0)
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next).map(|(_, token)| token)
    }

    fn position(&self) -> usize {
        self.tokens
            .get(self.next)
            .map_or_else(|| self.tokens.last().map_or(0, |(at, _)| at + 1), |(at, _)| *at)
    }

    fn operator_at(&self, level: usize) -> Option<&'static str> {
        match self.peek()? {
            Token::Operator(op) if LEVELS[level].contains(op) => Some(op),
            Token::Name(name) if LEVELS[level].contains(&name.as_str()) => {
                LEVELS[level].iter().copied().find(|op| op == name)
            }
            _ => None,
        }
    }

    fn level(&mut self, level: usize) -> Result<Operand, MathError> {
        if level == LEVELS.len() {
            return self.unary();
        }
        let mut left = self.level(level + 1)?;
        while let Some(op) = self.operator_at(level) {
            self.next += 1;
            let right = self.level(level + 1)?;
            left = combine(&[left, right], |v| binary(op, v[0], v[1]))?;
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Operand, MathError> {
        let at = self.position();
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(syntax(at, format!("nested more than {MAX_DEPTH} deep")));
        }
        let operand = if self.peek() == Some(&Token::Operator("-")) {
            self.next += 1;
            self.unary()
                .and_then(|operand| combine(&[operand], |v| Some(-v[0])))
        } else {
            self.primary()
        };
        self.depth -= 1;
        operand
    }

    fn expect(&mut self, expected: Token, what: &str) -> Result<(), MathError> {
        if self.peek() == Some(&expected) {
            self.next += 1;
            Ok(())
        } else {
            Err(syntax(self.position(), format!("expected {what}")))
        }
    }

    fn primary(&mut self) -> Result<Operand, MathError> {
        let at = self.position();
        let Some(token) = self.peek().cloned() else {
            return Err(syntax(at, "the expression ends too early"));
        };
        self.next += 1;
        match token {
            Token::Number(value) => Ok(Operand::Constant(value)),
            Token::Open => {
                let value = self.expression()?;
                self.expect(Token::Close, "`)`")?;
                Ok(value)
            }
            Token::Name(name) if self.peek() == Some(&Token::Open) => {
                self.next += 1;
                let mut args = vec![self.expression()?];
                while self.peek() == Some(&Token::Comma) {
                    self.next += 1;
                    args.push(self.expression()?);
                }
                self.expect(Token::Close, "`)` after the arguments")?;
                call(&name, args, at)
            }
            Token::Name(name) => self
                .inputs
                .get(&name)
                .cloned()
                .map(Operand::Series)
                .ok_or(MathError::UnknownId(name)),
            other => Err(syntax(at, format!("unexpected {other:?}"))),
        }
    }
}

fn binary(op: &str, a: f64, b: f64) -> Option<f64> {
    let truth = |t: bool| Some(if t { 1.0 } else { 0.0 });
    match op {
        "+" => Some(a + b),
        "-" => Some(a - b),
        "*" => Some(a * b),
        "/" => (b != 0.0).then(|| a / b),
        "==" => truth(a == b),
        "!=" => truth(a != b),
        "<" => truth(a < b),
        "<=" => truth(a <= b),
        ">" => truth(a > b),
        ">=" => truth(a >= b),
        "AND" => truth(a != 0.0 && b != 0.0),
        _ => truth(a != 0.0 || b != 0.0),
    }
}

fn call(name: &str, args: Vec<Operand>, at: usize) -> Result<Operand, MathError> {
    let arity = |range: std::ops::RangeInclusive<usize>| {
        if range.contains(&args.len()) {
            Ok(())
        } else {
            Err(syntax(
                at,
                format!("{name} takes {range:?} arguments, not {}", args.len()),
            ))
        }
    };
    match name {
        "FILL" => {
            arity(2..=2)?;
            let Operand::Constant(fill) = args[1] else {
                return Err(syntax(at, "FILL's second argument must be a number"));
            };
            Ok(match &args[0] {
                Operand::Series(series) => Operand::Series(Series {
                    points: series
                        .points
                        .iter()
                        .map(|p| {
                            p.or(Some(Datapoint {
                                value: fill,
                                samples: 0.0,
                            }))
                        })
                        .collect(),
                    ..series.clone()
                }),
                constant => constant.clone(),
            })
        }
        "IF" => {
            arity(2..=3)?;
            if args.len() == 2 {
                combine(&args, |v| (v[0] != 0.0).then_some(v[1]))
            } else {
                combine(&args, |v| Some(if v[0] != 0.0 { v[1] } else { v[2] }))
            }
        }
        _ => Err(MathError::UnknownFunction(name.to_owned())),
    }
}

/// `operation` period by period; a period where a series operand has no datapoint has none.
fn combine(operands: &[Operand], operation: impl Fn(&[f64]) -> Option<f64>) -> Result<Operand, MathError> {
    let mut shape: Option<&Series> = None;
    for operand in operands {
        if let Operand::Series(series) = operand {
            match shape {
                Some(s)
                    if (s.start_ms, s.period_s, s.points.len())
                        != (series.start_ms, series.period_s, series.points.len()) =>
                {
                    return Err(MathError::Misaligned)
                }
                _ => shape = Some(series),
            }
        }
    }
    let Some(shape) = shape else {
        let values: Vec<f64> = operands
            .iter()
            .map(|o| match o {
                Operand::Constant(v) => *v,
                Operand::Series(_) => f64::NAN,
            })
            .collect();
        return Ok(Operand::Constant(operation(&values).unwrap_or(f64::NAN)));
    };
    let mut values = vec![0.0; operands.len()];
    let points = (0..shape.points.len())
        .map(|i| {
            let mut samples = f64::INFINITY;
            for (slot, operand) in values.iter_mut().zip(operands) {
                *slot = match operand {
                    Operand::Constant(v) => *v,
                    Operand::Series(series) => {
                        let point = series.points[i]?;
                        samples = samples.min(point.samples);
                        point.value
                    }
                };
            }
            let value = operation(&values)?;
            Some(Datapoint { value, samples })
        })
        .collect();
    Ok(Operand::Series(Series {
        start_ms: shape.start_ms,
        period_s: shape.period_s,
        points,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(values: &[Option<f64>]) -> Series {
        Series {
            start_ms: 60_000,
            period_s: 60,
            points: values
                .iter()
                .map(|v| v.map(|value| Datapoint { value, samples: 1.0 }))
                .collect(),
        }
    }

    fn run(expression: &str) -> Result<Vec<Option<f64>>, MathError> {
        let inputs = BTreeMap::from([
            (
                "errors".to_owned(),
                series(&[None, Some(2.0), Some(0.0), Some(5.0)]),
            ),
            (
                "invocations".to_owned(),
                series(&[Some(10.0), Some(20.0), Some(0.0), None]),
            ),
        ]);
        evaluate(expression, &inputs).map(|s| s.points.iter().map(|p| p.map(|p| p.value)).collect())
    }

    #[test]
    fn the_error_rate_the_canary_alarms_use() {
        assert_eq!(
            run("100 * FILL(errors, 0) / invocations").unwrap(),
            [Some(0.0), Some(10.0), None, None]
        );
        assert_eq!(
            run("errors / invocations").unwrap(),
            [None, Some(0.1), None, None]
        );
    }

    #[test]
    fn arithmetic_precedence_and_unary_minus() {
        assert_eq!(run("invocations + 2 * 3").unwrap()[0], Some(16.0));
        assert_eq!(run("(invocations + 2) * 3").unwrap()[0], Some(36.0));
        assert_eq!(run("-invocations - -1").unwrap()[0], Some(-9.0));
        assert_eq!(run("invocations / 4 / 5").unwrap()[0], Some(0.5));
        assert_eq!(
            run("invocations-errors").unwrap(),
            [None, Some(18.0), Some(0.0), None]
        );
    }

    #[test]
    fn if_comparisons_and_logic() {
        assert_eq!(
            run("IF(invocations > 5, errors, 0)").unwrap(),
            [None, Some(2.0), Some(0.0), None]
        );
        assert_eq!(
            run("IF(FILL(errors, 0) >= 2 AND invocations != 0, 1)").unwrap(),
            [None, Some(1.0), None, None]
        );
        assert_eq!(
            run("FILL(errors, 0) == 0 || invocations < 1").unwrap(),
            [Some(1.0), Some(0.0), Some(1.0), None]
        );
        assert_eq!(run("FILL(invocations, 7) <= 7").unwrap()[3], Some(1.0));
    }

    #[test]
    fn fill_counts_no_samples() {
        let inputs = BTreeMap::from([("m".to_owned(), series(&[None]))]);
        let filled = evaluate("FILL(m, 3)", &inputs).unwrap();
        assert_eq!(
            filled.points,
            [Some(Datapoint {
                value: 3.0,
                samples: 0.0
            })]
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let cases = [
            ("errors +", "at character 8: the expression ends too early"),
            ("(errors", "expected `)`"),
            ("errors $ 1", "at character 7: unexpected '$'"),
            ("nope * 2", "nope is not the id of a query of the alarm"),
            ("RATE(errors)", "RATE is not supported (FILL and IF are)"),
            ("FILL(errors)", "FILL takes 2..=2 arguments, not 1"),
            (
                "FILL(errors, invocations)",
                "FILL's second argument must be a number",
            ),
            ("1 + 2", "the expression is a constant"),
            ("errors 2", "unexpected Number(2.0)"),
            ("1..2 * errors", "\"1..2\" is not a number"),
        ];
        for (expression, message) in cases {
            let error = run(expression).unwrap_err().to_string();
            assert!(error.contains(message), "{expression}: {error}");
        }
        // Deep nesting is refused before it can exhaust the stack.
        let deep = format!("{}errors{}", "(".repeat(10_000), ")".repeat(10_000));
        let minuses = format!("{}errors", "-".repeat(10_000));
        for expression in [&deep, &minuses] {
            let error = run(expression).unwrap_err().to_string();
            assert!(error.contains("nested more than 64 deep"), "{error}");
        }
        assert!(run(&format!("{}errors{}", "(".repeat(60), ")".repeat(60))).is_ok());
        let mut inputs = BTreeMap::from([("a".to_owned(), series(&[Some(1.0)]))]);
        inputs.insert(
            "b".to_owned(),
            Series {
                period_s: 10,
                ..series(&[Some(1.0)])
            },
        );
        assert_eq!(evaluate("a + b", &inputs), Err(MathError::Misaligned));
    }
}
