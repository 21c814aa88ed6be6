//! [`StructuredLogLayer`]: a `tracing-subscriber` layer that writes one JSON (or text) line per
//! event, carrying the invocation's context, with per-invocation debug sampling, buffering of
//! DEBUG lines until an error, and redaction.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::time::SystemTime;

use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Record};
use tracing::{Event, Id, Level, Metadata, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use super::config::{LogConfig, LogFormat};
use super::INVOCATION_SPAN;
use crate::json;
use crate::redact::{Redactor, MASK};

/// Writes `tracing` events as structured lines; see the [module docs](super).
///
/// ```no_run
/// use keel_runtime::logging::{LogConfig, StructuredLogLayer};
/// use tracing_subscriber::layer::SubscriberExt;
///
/// let config = LogConfig::from_env("booking-api").expect("valid KEEL_* variables");
/// let subscriber = tracing_subscriber::registry().with(StructuredLogLayer::new(config));
/// tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber");
/// ```
#[derive(Debug)]
pub struct StructuredLogLayer {
    config: LogConfig,
    /// `"service":"…","function_name":"…",…` rendered once: these never change in a process.
    process_fields: String,
    /// Most verbose level that reaches this layer at all (DEBUG when buffering or sampling).
    interest: Level,
}

impl StructuredLogLayer {
    /// A layer writing with `config`.
    pub fn new(config: LogConfig) -> Self {
        let mut process_fields = String::from("{");
        json::push_key(&mut process_fields, "service");
        json::push_str(&mut process_fields, &config.service);
        json::push_key(&mut process_fields, "function_name");
        json::push_str(&mut process_fields, &config.function.name);
        json::push_key(&mut process_fields, "function_version");
        json::push_str(&mut process_fields, &config.function.version);
        json::push_key(&mut process_fields, "function_memory_size");
        let _ = write!(process_fields, "{}", config.function.memory_size);
        process_fields.remove(0);
        let wants_debug = config.debug_buffer > 0 || config.sample_rate > 0.0;
        let interest = if wants_debug {
            config.level.max(Level::DEBUG)
        } else {
            config.level
        };
        Self {
            config,
            process_fields,
            interest,
        }
    }

    /// Renders one line: the fields of the spans around the event (outermost first, so the
    /// invocation's context leads), then the event's own. A key is written once: the event's
    /// value wins over a span's, an outer span's over an inner one's.
    fn render<S>(
        &self,
        level: Level,
        message: &str,
        event_fields: &[(Cow<'static, str>, String)],
        ctx: &Context<'_, S>,
        event: &Event<'_>,
    ) -> String
    where
        S: Subscriber + for<'lookup> LookupSpan<'lookup>,
    {
        let mut line = Line::begin(self, level, message);
        let mut written: Vec<Cow<'static, str>> = Vec::new();
        for span in ctx
            .event_scope(event)
            .into_iter()
            .flat_map(|scope| scope.from_root())
        {
            let extensions = span.extensions();
            let Some(fields) = extensions.get::<SpanFields>() else {
                continue;
            };
            for (key, value) in &fields.0 {
                let taken = event_fields.iter().any(|(k, _)| k == key) || written.contains(key);
                if !taken {
                    line.field(key, value);
                    written.push(key.clone());
                }
            }
        }
        for (key, value) in event_fields {
            line.field(key, value);
        }
        line.finish()
    }
}

/// A log line being written, in the configured format.
struct Line {
    text: String,
    format: LogFormat,
}

impl Line {
    fn begin(layer: &StructuredLogLayer, level: Level, message: &str) -> Self {
        let timestamp = humantime::format_rfc3339_millis(SystemTime::now());
        let format = layer.config.format;
        let mut text = String::with_capacity(320 + layer.process_fields.len());
        match format {
            LogFormat::Json => {
                text.push_str("{\"timestamp\":\"");
                let _ = write!(text, "{timestamp}");
                text.push_str("\",\"level\":\"");
                text.push_str(level.as_str());
                text.push_str("\",\"message\":");
                json::push_str(&mut text, message);
                text.push(',');
                text.push_str(&layer.process_fields);
            }
            LogFormat::Text => {
                let _ = write!(text, "{timestamp} {:<5} ", level.as_str());
                push_escaped(&mut text, message);
            }
        }
        Self { text, format }
    }

    /// Adds a field whose value is already rendered as JSON.
    fn field(&mut self, key: &str, value: &str) {
        match self.format {
            LogFormat::Json => {
                json::push_key(&mut self.text, key);
                self.text.push_str(value);
            }
            LogFormat::Text => {
                self.text.push(' ');
                push_escaped(&mut self.text, key);
                self.text.push('=');
                match serde_json::from_str::<String>(value) {
                    Ok(text) => push_escaped(&mut self.text, &text),
                    Err(_) => push_escaped(&mut self.text, value),
                }
            }
        }
    }

    fn finish(mut self) -> String {
        if self.format == LogFormat::Json {
            self.text.push('}');
        }
        self.text
    }
}

/// Appends `text` to a Text-format line with line breaks, tabs and other control characters
/// escaped (`\n`, `\t`, `\u{1b}`): a value can never start a line of its own.
fn push_escaped(line: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            '\t' => line.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(line, "{}", c.escape_unicode());
            }
            c => line.push(c),
        }
    }
}

/// Per-invocation state, kept in the extensions of the invocation span.
#[derive(Debug)]
struct InvocationLog {
    sampled: bool,
    /// DEBUG lines held back until the invocation fails or logs an error.
    buffer: VecDeque<String>,
    evicted: usize,
    /// Set once an error was logged: from then on DEBUG lines are written at once.
    failing: bool,
}

/// The fields of a span, rendered as JSON values.
#[derive(Debug, Default)]
struct SpanFields(Vec<(Cow<'static, str>, String)>);

impl SpanFields {
    fn set(&mut self, key: Cow<'static, str>, value: String) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }
}

/// Collects an event's or span's fields as rendered JSON values, redacting as it goes.
struct FieldVisitor<'a> {
    redactor: &'a Redactor,
    message: Option<String>,
    fields: Vec<(Cow<'static, str>, String)>,
}

impl<'a> FieldVisitor<'a> {
    fn new(redactor: &'a Redactor) -> Self {
        Self {
            redactor,
            message: None,
            fields: Vec::new(),
        }
    }

    fn push_raw(&mut self, field: &Field, rendered: String) {
        self.fields.push((Cow::Borrowed(field.name()), rendered));
    }

    fn push_text(&mut self, field: &Field, text: &str) {
        if field.name() == "message" {
            self.message = Some(self.redactor.redact_text(text).into_owned());
            return;
        }
        let mut rendered = String::with_capacity(text.len() + 2);
        if self.redactor.is_sensitive(field.name()) {
            json::push_str(&mut rendered, MASK);
        } else if let Some(value) = self.redactor.redact_json_text(text) {
            // A JSON document stays one: written as JSON, not as a string holding it.
            rendered = value.to_string();
        } else {
            json::push_str(&mut rendered, &self.redactor.redact_non_json(text));
        }
        self.push_raw(field, rendered);
    }
}

impl Visit for FieldVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push_text(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.push_text(field, &format!("{value:?}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push_number(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push_number(field, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.push_number(field, value);
        } else {
            self.push_text(field, &value.to_string());
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push_number(field, value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.push_text(field, &value.to_string());
        let chain: Vec<Value> = std::iter::successors(value.source(), |e| e.source())
            .map(|e| Value::String(self.redactor.redact_string(&e.to_string()).into_owned()))
            .collect();
        if !chain.is_empty() {
            let key = format!("{}.source_chain", field.name());
            self.fields
                .push((Cow::Owned(key), Value::Array(chain).to_string()));
        }
    }
}

impl FieldVisitor<'_> {
    fn push_number(&mut self, field: &Field, value: impl fmt::Display) {
        if self.redactor.is_sensitive(field.name()) {
            self.push_text(field, MASK);
        } else {
            self.push_raw(field, value.to_string());
        }
    }
}

fn is_invocation_span(metadata: &Metadata<'_>) -> bool {
    metadata.name() == INVOCATION_SPAN && metadata.target() == super::INVOCATION_TARGET
}

/// Targets of the libraries Keel calls AWS through.
const DEPENDENCY_TARGETS: &[&str] = &[
    "aws_smithy_",
    "aws_sdk_",
    "aws_config",
    "aws_runtime",
    "aws_credential_types",
    "aws_sigv4",
    "hyper",
    "h2",
    "rustls",
    "tower",
    "lambda_runtime",
    "lambda_extension",
];

fn is_dependency(target: &str) -> bool {
    DEPENDENCY_TARGETS.iter().any(|prefix| target.starts_with(prefix))
}

/// Whether an event is `lambda_runtime`'s echo of a handler error (`InvocationError { … }`),
/// written after Keel's own line for that failure and outside the invocation's context: one
/// failure writes one ERROR line, Keel's.
fn is_runtime_echo(metadata: &Metadata<'_>, message: &str) -> bool {
    metadata.target().starts_with("lambda_runtime") && message.starts_with("InvocationError {")
}

impl<S> tracing_subscriber::Layer<S> for StructuredLogLayer
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
{
    fn enabled(&self, metadata: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        if is_invocation_span(metadata) {
            return true;
        }
        let level = *metadata.level();
        // The AWS SDK, HTTP and TLS stacks describe every request at DEBUG: they would fill the
        // DEBUG buffer of each invocation that calls AWS. Below INFO they are heard at TRACE only.
        if level > Level::INFO && self.config.level < Level::TRACE && is_dependency(metadata.target()) {
            return false;
        }
        level <= self.interest
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(self.interest.max(Level::INFO).into())
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut visitor = FieldVisitor::new(&self.config.redactor);
        attrs.record(&mut visitor);
        let mut extensions = span.extensions_mut();
        extensions.insert(SpanFields(visitor.fields));
        if is_invocation_span(attrs.metadata()) {
            let sampled = self.config.sample_rate > 0.0 && fastrand::f64() < self.config.sample_rate;
            extensions.insert(InvocationLog {
                sampled,
                buffer: VecDeque::new(),
                evicted: 0,
                failing: false,
            });
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut visitor = FieldVisitor::new(&self.config.redactor);
        values.record(&mut visitor);
        let mut extensions = span.extensions_mut();
        if let Some(fields) = extensions.get_mut::<SpanFields>() {
            for (key, value) in visitor.fields {
                fields.set(key, value);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        let invocation = ctx
            .event_scope(event)
            .and_then(|mut scope| scope.find(|span| is_invocation_span(span.metadata())));
        let (sampled, failing, evicted) = invocation
            .as_ref()
            .and_then(|span| {
                let extensions = span.extensions();
                extensions
                    .get::<InvocationLog>()
                    .map(|log| (log.sampled, log.failing, log.evicted))
            })
            .unwrap_or((false, false, 0));

        let max_level = if sampled || failing {
            self.config.level.max(Level::DEBUG)
        } else {
            self.config.level
        };
        let write_now = level <= max_level;
        let buffer_it =
            !write_now && level == Level::DEBUG && invocation.is_some() && self.config.debug_buffer > 0;
        if !write_now && !buffer_it {
            return;
        }

        let mut visitor = FieldVisitor::new(&self.config.redactor);
        event.record(&mut visitor);
        let message = visitor.message.take().unwrap_or_default();
        if is_runtime_echo(event.metadata(), &message) {
            return;
        }
        let line = self.render(level, &message, &visitor.fields, &ctx, event);
        // Rendered before taking the span's write lock below: rendering reads the extensions.
        let eviction_note = (level == Level::ERROR && evicted > 0).then(|| {
            let note = format!(
                "{evicted} earlier DEBUG lines of this invocation were evicted from the log buffer (capacity {})",
                self.config.debug_buffer
            );
            self.render(Level::WARN, &note, &[], &ctx, event)
        });

        let Some(span) = invocation.filter(|_| buffer_it || level == Level::ERROR) else {
            self.config.output.write_line(&line);
            return;
        };
        let mut extensions = span.extensions_mut();
        let Some(log) = extensions.get_mut::<InvocationLog>() else {
            self.config.output.write_line(&line);
            return;
        };
        if buffer_it {
            if log.buffer.len() == self.config.debug_buffer {
                log.buffer.pop_front();
                log.evicted += 1;
            }
            log.buffer.push_back(line);
            return;
        }
        if level == Level::ERROR {
            log.failing = true;
            if let Some(note) = eviction_note {
                self.config.output.write_line(&note);
                log.evicted = 0;
            }
            for buffered in log.buffer.drain(..) {
                self.config.output.write_line(&buffered);
            }
        }
        self.config.output.write_line(&line);
    }
}
