//! [`StructuredLogLayer`]: a `tracing-subscriber` layer that writes one JSON (or text) line per
//! event, carrying the invocation's context, with per-invocation debug sampling, buffering of
//! DEBUG lines until an error, and redaction.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::ops::Range;
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
use crate::output::KEEP_BUFFER_BYTES;
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
        event_fields: &FieldVisitor<'_>,
        ctx: &Context<'_, S>,
        event: &Event<'_>,
    ) -> String
    where
        S: Subscriber + for<'lookup> LookupSpan<'lookup>,
    {
        let mut line = Line::begin(self, level, message);
        // The event's spans, outermost first, looked up once.
        let spans: smallvec::SmallVec<[_; 4]> = ctx
            .event_scope(event)
            .into_iter()
            .flat_map(|scope| scope.from_root())
            .collect();
        for (depth, span) in spans.iter().enumerate() {
            let extensions = span.extensions();
            let Some(fields) = extensions.get::<SpanFields>() else {
                continue;
            };
            // A span holds each key once (see `SpanFields::set`); an outer span's value wins.
            for (key, value) in &fields.0 {
                let outer_has = || {
                    spans[..depth]
                        .iter()
                        .any(|outer| outer.extensions().get::<SpanFields>().is_some_and(|f| f.has(key)))
                };
                if !event_fields.has(key) && !outer_has() {
                    line.field(key, value);
                }
            }
        }
        for (key, value) in event_fields.fields() {
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
        let mut text = crate::output::spare_line();
        text.reserve(320 + layer.process_fields.len());
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
    fn set(&mut self, key: Cow<'static, str>, value: &str) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => {
                slot.1.clear();
                slot.1.push_str(value);
            }
            None => self.0.push((key, value.to_owned())),
        }
    }

    fn has(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }
}

/// Collects an event's or span's fields as rendered JSON values, redacting as it goes: the
/// values are written one after another into one buffer. Its buffers are the thread's, kept
/// between events (see [`Buffers`]).
struct FieldVisitor<'a> {
    redactor: &'a Redactor,
    buffers: Buffers,
}

/// The memory a [`FieldVisitor`] writes in: taken from the thread when a visitor starts and
/// given back, emptied, when it ends, so that a warm thread renders events without allocating.
#[derive(Default)]
struct Buffers {
    /// The message, redacted (empty until recorded; `None` in buffers never used).
    message: Option<String>,
    /// The rendered values, one after another.
    values: String,
    /// Each field's name and where its value lies in `values`.
    fields: Vec<(Cow<'static, str>, Range<usize>)>,
    /// Where a `Debug` or `Display` value is formatted before it is redacted.
    formatted: String,
}

thread_local! {
    static SPARE_BUFFERS: std::cell::Cell<Option<Buffers>> = const { std::cell::Cell::new(None) };
}

impl Drop for FieldVisitor<'_> {
    fn drop(&mut self) {
        let mut buffers = std::mem::take(&mut self.buffers);
        let message = buffers.message.as_ref().map_or(0, String::capacity);
        if [buffers.values.capacity(), buffers.formatted.capacity(), message]
            .iter()
            .any(|&bytes| bytes > KEEP_BUFFER_BYTES)
        {
            return;
        }
        if let Some(message) = &mut buffers.message {
            message.clear();
        }
        buffers.values.clear();
        buffers.fields.clear();
        buffers.formatted.clear();
        // During the thread's teardown the spare is gone: the buffers are dropped.
        let _ = SPARE_BUFFERS.try_with(|spare| spare.set(Some(buffers)));
    }
}

impl<'a> FieldVisitor<'a> {
    fn new(redactor: &'a Redactor) -> Self {
        let buffers = SPARE_BUFFERS
            .try_with(|spare| spare.take())
            .ok()
            .flatten()
            .unwrap_or_default();
        Self { redactor, buffers }
    }

    /// The message recorded, if any.
    fn message(&self) -> &str {
        self.buffers.message.as_deref().unwrap_or_default()
    }

    /// Sets the message to `text`, redacted.
    fn set_message(&mut self, text: &str) {
        let redacted = self.redactor.redact_text(text);
        let message = self.buffers.message.get_or_insert_with(String::new);
        message.clear();
        message.push_str(&redacted);
    }

    /// The fields, in the order recorded.
    fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        let buffers = &self.buffers;
        buffers
            .fields
            .iter()
            .map(|(key, range)| (key.as_ref(), &buffers.values[range.clone()]))
    }

    fn has(&self, key: &str) -> bool {
        self.buffers.fields.iter().any(|(k, _)| k == key)
    }

    /// The fields as a span keeps them.
    fn span_fields(&self) -> Vec<(Cow<'static, str>, String)> {
        let buffers = &self.buffers;
        buffers
            .fields
            .iter()
            .map(|(key, range)| (key.clone(), buffers.values[range.clone()].to_owned()))
            .collect()
    }

    /// Records a field whose value `render` writes, as JSON.
    fn push_rendered(&mut self, key: Cow<'static, str>, render: impl FnOnce(&mut String)) {
        let values = &mut self.buffers.values;
        let start = values.len();
        render(values);
        let end = values.len();
        self.buffers.fields.push((key, start..end));
    }

    fn push_text(&mut self, field: &Field, text: &str) {
        if field.name() == "message" {
            self.set_message(text);
            return;
        }
        let key = Cow::Borrowed(field.name());
        if self.redactor.is_sensitive(field.name()) {
            self.push_rendered(key, |values| json::push_str(values, MASK));
        } else if let Some(value) = self.redactor.redact_json_text(text) {
            // A JSON document stays one: written as JSON, not as a string holding it.
            self.push_rendered(key, |values| {
                let _ = write!(values, "{value}");
            });
        } else {
            let redacted = self.redactor.redact_non_json(text);
            self.push_rendered(key, |values| json::push_str(values, &redacted));
        }
    }
}

impl Visit for FieldVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push_text(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut formatted = std::mem::take(&mut self.buffers.formatted);
        formatted.clear();
        let _ = write!(formatted, "{value:?}");
        self.push_text(field, &formatted);
        self.buffers.formatted = formatted;
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
            self.push_rendered(Cow::Owned(key), |values| {
                let _ = write!(values, "{}", Value::Array(chain));
            });
        }
    }
}

impl FieldVisitor<'_> {
    fn push_number(&mut self, field: &Field, value: impl fmt::Display) {
        if self.redactor.is_sensitive(field.name()) {
            self.push_text(field, MASK);
        } else {
            self.push_rendered(Cow::Borrowed(field.name()), |values| {
                let _ = write!(values, "{value}");
            });
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
        extensions.insert(SpanFields(visitor.span_fields()));
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
            for (key, range) in &visitor.buffers.fields {
                fields.set(key.clone(), &visitor.buffers.values[range.clone()]);
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
        let message = visitor.message();
        if is_runtime_echo(event.metadata(), message) {
            return;
        }
        let line = self.render(level, message, &visitor, &ctx, event);
        // Rendered before taking the span's write lock below: rendering reads the extensions.
        let eviction_note = (level == Level::ERROR && evicted > 0).then(|| {
            let note = format!(
                "{evicted} earlier DEBUG lines of this invocation were evicted from the log buffer (capacity {})",
                self.config.debug_buffer
            );
            self.render(Level::WARN, &note, &FieldVisitor::new(&self.config.redactor), &ctx, event)
        });

        let Some(span) = invocation.filter(|_| buffer_it || level == Level::ERROR) else {
            self.config.output.write_owned_line(line);
            return;
        };
        let mut extensions = span.extensions_mut();
        let Some(log) = extensions.get_mut::<InvocationLog>() else {
            self.config.output.write_owned_line(line);
            return;
        };
        if buffer_it {
            if log.buffer.len() == self.config.debug_buffer {
                log.buffer.pop_front();
                log.evicted += 1;
            }
            // Held until the invocation ends: no more memory than the line needs.
            let mut line = line;
            line.shrink_to_fit();
            log.buffer.push_back(line);
            return;
        }
        if level == Level::ERROR {
            log.failing = true;
            if let Some(note) = eviction_note {
                self.config.output.write_owned_line(note);
                log.evicted = 0;
            }
            for buffered in log.buffer.drain(..) {
                self.config.output.write_owned_line(buffered);
            }
        }
        self.config.output.write_owned_line(line);
    }
}
