//! [`LogConfig`]: how the structured logs are written.

use tracing::Level;

use crate::config::{parse_var, ConfigError};
use crate::function::{service_name, var, FunctionInfo};
use crate::output::Output;
use crate::redact::Redactor;

/// Line format, from `AWS_LAMBDA_LOG_FORMAT`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (the default; what CloudWatch Logs Insights queries).
    #[default]
    Json,
    /// Human-readable lines for local use (`AWS_LAMBDA_LOG_FORMAT=Text`).
    Text,
}

/// Default capacity of the per-invocation DEBUG buffer.
pub const DEFAULT_DEBUG_BUFFER: usize = 50;

/// How [`StructuredLogLayer`](super::StructuredLogLayer) writes.
///
/// | variable | meaning | default |
/// |---|---|---|
/// | `KEEL_SERVICE` | the `service` field | the name given to [`LogConfig::from_env`] |
/// | `KEEL_LOG_LEVEL` / `AWS_LAMBDA_LOG_LEVEL` | lines at this level or more severe are written (DEBUG lines of the AWS SDK, hyper and rustls only at `TRACE`) | `INFO` |
/// | `KEEL_LOG_SAMPLE_RATE` | share of invocations (0–1) logged at DEBUG, drawn per invocation | `0` |
/// | `KEEL_REDACT_FIELDS` | comma-separated field names whose values are masked as `***` (see [`Redactor`](crate::redact::Redactor)) | [`DEFAULT_REDACTED_FIELDS`](crate::redact::DEFAULT_REDACTED_FIELDS) |
/// | `KEEL_LOG_BUFFER_SIZE` | DEBUG lines held per invocation and written only if it fails (0 = off) | `50` |
/// | `AWS_LAMBDA_LOG_FORMAT` | `JSON` or `Text` | `JSON` |
/// | `KEEL_LOG_WRITE` | `poll`: the lines of each poll of an invocation written together, in one write; `line`: each line at once (see [`output`](crate::output); it applies to the whole process) | `poll` |
#[derive(Clone, Debug)]
pub struct LogConfig {
    pub(crate) service: String,
    pub(crate) level: Level,
    pub(crate) sample_rate: f64,
    pub(crate) redactor: Redactor,
    pub(crate) debug_buffer: usize,
    pub(crate) format: LogFormat,
    pub(crate) output: Output,
    pub(crate) function: FunctionInfo,
}

impl LogConfig {
    /// Defaults for `service`, with the function's details from the Lambda environment.
    pub fn new(service: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            level: Level::INFO,
            sample_rate: 0.0,
            redactor: Redactor::default(),
            debug_buffer: DEFAULT_DEBUG_BUFFER,
            format: LogFormat::Json,
            output: Output::stdout(),
            function: FunctionInfo::from_env(),
        }
    }

    /// Defaults overridden by the variables in the table above.
    pub fn from_env(service: impl Into<String>) -> Result<Self, ConfigError> {
        let mut config = Self::new(service);
        config.service = service_name(config.service, &config.function);
        let level = match parse_var("KEEL_LOG_LEVEL", "TRACE, DEBUG, INFO, WARN or ERROR", parse_level)? {
            Some(level) => Some(level),
            None => parse_var(
                "AWS_LAMBDA_LOG_LEVEL",
                "TRACE, DEBUG, INFO, WARN, ERROR or FATAL",
                parse_level,
            )?,
        };
        if let Some(level) = level {
            config.level = level;
        }
        if let Some(rate) = parse_var("KEEL_LOG_SAMPLE_RATE", "a number from 0 to 1", |v| {
            v.parse::<f64>().ok().filter(|r| (0.0..=1.0).contains(r))
        })? {
            config.sample_rate = rate;
        }
        if let Some(list) = var("KEEL_REDACT_FIELDS") {
            config.redactor = Redactor::from_list(&list);
        }
        if let Some(size) = parse_var("KEEL_LOG_BUFFER_SIZE", "a whole number of lines", |v| {
            v.parse().ok()
        })? {
            config.debug_buffer = size;
        }
        if let Some(format) = parse_var("AWS_LAMBDA_LOG_FORMAT", "JSON or Text", |v| {
            match v.to_ascii_lowercase().as_str() {
                "json" => Some(LogFormat::Json),
                "text" => Some(LogFormat::Text),
                _ => None,
            }
        })? {
            config.format = format;
        }
        if let Some(each_line) = parse_var("KEEL_LOG_WRITE", "poll or line", |v| {
            match v.to_ascii_lowercase().as_str() {
                "poll" => Some(false),
                "line" => Some(true),
                _ => None,
            }
        })? {
            crate::output::write_each_line(each_line);
        }
        Ok(config)
    }

    /// Lines at `level` or more severe are written.
    #[must_use]
    pub fn level(mut self, level: Level) -> Self {
        self.level = level;
        self
    }

    /// Share of invocations logged at DEBUG; clamped to 0–1 (NaN counts as 0).
    #[must_use]
    pub fn sample_rate(mut self, rate: f64) -> Self {
        self.sample_rate = if rate.is_nan() { 0.0 } else { rate.clamp(0.0, 1.0) };
        self
    }

    /// JSON field names to mask, replacing the defaults; an empty list turns redaction off.
    #[must_use]
    pub fn redact_fields<I, S>(mut self, fields: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.redactor = Redactor::new(fields);
        self
    }

    /// Capacity of the per-invocation DEBUG buffer; 0 writes no DEBUG line unless sampled.
    #[must_use]
    pub fn debug_buffer(mut self, lines: usize) -> Self {
        self.debug_buffer = lines;
        self
    }

    /// JSON or text lines.
    #[must_use]
    pub fn format(mut self, format: LogFormat) -> Self {
        self.format = format;
        self
    }

    /// Where lines go (standard output by default).
    #[must_use]
    pub fn output(mut self, output: Output) -> Self {
        self.output = output;
        self
    }

    /// The function details written on every line (read from the environment by default).
    #[must_use]
    pub fn function(mut self, function: FunctionInfo) -> Self {
        self.function = function;
        self
    }
}

fn parse_level(value: &str) -> Option<Level> {
    match value.to_ascii_uppercase().as_str() {
        "TRACE" => Some(Level::TRACE),
        "DEBUG" => Some(Level::DEBUG),
        "INFO" => Some(Level::INFO),
        "WARN" | "WARNING" => Some(Level::WARN),
        "ERROR" | "FATAL" | "CRITICAL" => Some(Level::ERROR),
        _ => None,
    }
}
