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
use tracing_subscriber::registry::{LookupSpan, SpanRef};

use super::config::{LogConfig, LogFormat};
use super::redact::{Redactor, MASK};
use super::INVOCATION_SPAN;
use crate::json;

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
    /// `,"service":"…","function_name":"…",…` rendered once: these never change in a process.
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
        let interest = if wants_debug { config.level.max(Level::DEBUG) } else { config.level };
        Self {
            config,
            process_fields,
            interest,
        }
    }

    fn render(&self, level: Level, message: &str, context: &[(Cow<'static, str>, String)]) -> String {
        let timestamp = humantime::format_rfc3339_millis(SystemTime::now());
        match self.config.format {
            LogFormat::Json => {
                let mut line = String::with_capacity(256 + self.process_fields.len());
                line.push_str("{\"timestamp\":\"");
                let _ = write!(line, "{timestamp}");
                line.push_str("\",\"level\":\"");
                line.push_str(level.as_str());
                line.push_str("\",\"message\":");
                json::push_str(&mut line, message);
                line.push(',');
                line.push_str(&self.process_fields);
                for (key, value) in context {
                    json::push_key(&mut line, key);
                    line.push_str(value);
                }
                line.push('}');
                line
            }
            LogFormat::Text => {
                let mut line = format!("{timestamp} {:<5} {message}", level.as_str());
                for (key, value) in context {
                    let _ = write!(line, " {key}=");
                    match serde_json::from_str::<String>(value) {
                        Ok(text) => line.push_str(&text),
                        Err(_) => line.push_str(value),
                    }
                }
                line
            }
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
            self.message = Some(text.to_owned());
            return;
        }
        let mut rendered = String::with_capacity(text.len() + 2);
        if self.redactor.is_sensitive(field.name()) {
            json::push_str(&mut rendered, MASK);
        } else if let Some(value) = self.redactor.redact_json_text(text) {
            rendered = value.to_string();
        } else {
            json::push_str(&mut rendered, text);
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
            .map(|e| Value::String(e.to_string()))
            .collect();
        if !chain.is_empty() {
            let key = format!("{}.source_chain", field.name());
            self.fields.push((Cow::Owned(key), Value::Array(chain).to_string()));
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

impl<S> tracing_subscriber::Layer<S> for StructuredLogLayer
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
{
    fn enabled(&self, metadata: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        *metadata.level() <= self.interest || is_invocation_span(metadata)
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
        let (sampled, failing) = invocation
            .as_ref()
            .and_then(|span| {
                let extensions = span.extensions();
                extensions.get::<InvocationLog>().map(|log| (log.sampled, log.failing))
            })
            .unwrap_or((false, false));

        let max_level = if sampled || failing { self.config.level.max(Level::DEBUG) } else { self.config.level };
        let write_now = level <= max_level;
        let buffer_it = !write_now && level == Level::DEBUG && invocation.is_some() && self.config.debug_buffer > 0;
        if !write_now && !buffer_it {
            return;
        }

        let mut visitor = FieldVisitor::new(&self.config.redactor);
        event.record(&mut visitor);
        let message = visitor.message.take().unwrap_or_default();
        let mut context = span_context(&ctx, event, &visitor.fields);
        context.append(&mut visitor.fields);
        let line = self.render(level, &message, &context);
        // Rendered before taking the span's write lock below: it reads the same extensions.
        let note_context = (level == Level::ERROR && invocation.is_some()).then(|| span_context(&ctx, event, &[]));

        let Some(span) = invocation else {
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
            if log.evicted > 0 {
                let note = format!(
                    "{} earlier DEBUG lines of this invocation were evicted from the log buffer (capacity {})",
                    log.evicted, self.config.debug_buffer
                );
                let note_context = note_context.unwrap_or_default();
                self.config
                    .output
                    .write_line(&self.render(Level::WARN, &note, &note_context));
                log.evicted = 0;
            }
            for buffered in log.buffer.drain(..) {
                self.config.output.write_line(&buffered);
            }
        }
        self.config.output.write_line(&line);
    }
}

/// The fields of every span around `event`, innermost first, without the keys `event` sets itself.
fn span_context<S>(
    ctx: &Context<'_, S>,
    event: &Event<'_>,
    event_fields: &[(Cow<'static, str>, String)],
) -> Vec<(Cow<'static, str>, String)>
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
{
    let mut context: Vec<(Cow<'static, str>, String)> = Vec::new();
    let Some(scope) = ctx.event_scope(event) else {
        return context;
    };
    for span in scope {
        collect_span_fields(&span, event_fields, &mut context);
    }
    context
}

fn collect_span_fields<S>(
    span: &SpanRef<'_, S>,
    event_fields: &[(Cow<'static, str>, String)],
    context: &mut Vec<(Cow<'static, str>, String)>,
) where
    S: for<'lookup> LookupSpan<'lookup>,
{
    let extensions = span.extensions();
    let Some(fields) = extensions.get::<SpanFields>() else { return };
    for (key, value) in &fields.0 {
        let shadowed = event_fields.iter().chain(context.iter()).any(|(k, _)| k == key);
        if !shadowed {
            context.push((key.clone(), value.clone()));
        }
    }
}
