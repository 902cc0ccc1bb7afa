//! The `tracing` layer (cargo feature `tracing`): each event becomes a record, with the fields of
//! the spans it happened in (outermost first) and then its own as extras.
//!
//! ```no_run
//! use pystash::handler::{Builder, Destination};
//! use tracing_subscriber::prelude::*;
//!
//! let (layer, _handle) = Builder::new(Destination::Tcp("127.0.0.1:5000".into())).build_layer()?;
//! tracing_subscriber::registry()
//!     .with(layer.with_filter(tracing_subscriber::filter::LevelFilter::INFO))
//!     .init();
//! tracing::info!(user = "ada", "logged in");
//! # Ok::<(), pystash::handler::HandlerError>(())
//! ```
//!
//! The `message` field is the record's message; an error field (`error = &e as &dyn Error`) is
//! also the record's exception, its chain written as `exc_info`.

use std::borrow::Cow;
use std::fmt;
use std::time::SystemTime;

use ::tracing::field::{Field as TracingField, Visit};
use ::tracing::span::{Attributes, Id, Record};
use ::tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use super::record::{error_chain, Captured, Field, Level};
use super::{Builder, Handle, HandlerError, Sender};

/// The name tracing gives an event's formatted message.
const MESSAGE: &str = "message";

/// A `tracing_subscriber` layer sending events to a pystash handler.
#[derive(Debug, Clone)]
pub struct Layer {
    sender: Sender,
}

impl Layer {
    /// A layer for `sender`.
    pub fn new(sender: Sender) -> Self {
        Layer { sender }
    }

    /// The handler this layer sends to (for its counters).
    pub fn sender(&self) -> &Sender {
        &self.sender
    }
}

impl Builder {
    /// Starts the handler and returns its `tracing` layer. Keep the handle until the program
    /// ends: dropping it delivers what is queued and stops the handler.
    ///
    /// # Errors
    ///
    /// [`HandlerError::Spawn`] when the worker thread cannot be started.
    pub fn build_layer(self) -> Result<(Layer, Handle), HandlerError> {
        let (sender, handle) = self.spawn()?;
        Ok((Layer::new(sender), handle))
    }
}

/// A span's fields, kept in its extensions.
#[derive(Debug, Default)]
struct SpanFields(Vec<(Cow<'static, str>, Field)>);

impl<S> tracing_subscriber::Layer<S> for Layer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut visitor = Fields::default();
        attrs.record(&mut visitor);
        span.extensions_mut().insert(SpanFields(visitor.fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut visitor = Fields::default();
        values.record(&mut visitor);
        let mut extensions = span.extensions_mut();
        match extensions.get_mut::<SpanFields>() {
            Some(fields) => fields.0.extend(visitor.fields),
            None => extensions.insert(SpanFields(visitor.fields)),
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut visitor = Fields::default();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    visitor.fields.extend(fields.0.iter().cloned());
                }
            }
        }
        event.record(&mut visitor);
        let level = match *meta.level() {
            ::tracing::Level::ERROR => Level::Error,
            ::tracing::Level::WARN => Level::Warn,
            ::tracing::Level::INFO => Level::Info,
            ::tracing::Level::DEBUG => Level::Debug,
            ::tracing::Level::TRACE => Level::Trace,
        };
        self.sender.send(Captured {
            level,
            created: SystemTime::now(),
            target: Cow::Borrowed(meta.target()),
            message: visitor.message.unwrap_or(Cow::Borrowed("")),
            module_path: meta.module_path().map(Cow::Borrowed),
            file: meta.file().map(Cow::Borrowed),
            line: meta.line(),
            fields: visitor.fields,
            exc_text: visitor.exc_text,
        });
    }
}

/// Collects fields; `message` apart.
#[derive(Default)]
struct Fields {
    message: Option<Cow<'static, str>>,
    fields: Vec<(Cow<'static, str>, Field)>,
    exc_text: Option<String>,
}

impl Fields {
    fn push(&mut self, field: &TracingField, value: Field) {
        self.fields.push((Cow::Borrowed(field.name()), value));
    }
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &TracingField, value: f64) {
        self.push(field, Field::Float(value));
    }

    fn record_i64(&mut self, field: &TracingField, value: i64) {
        self.push(field, Field::Int(value));
    }

    fn record_u64(&mut self, field: &TracingField, value: u64) {
        self.push(field, Field::UInt(value));
    }

    fn record_i128(&mut self, field: &TracingField, value: i128) {
        self.push(field, Field::Int128(value));
    }

    fn record_u128(&mut self, field: &TracingField, value: u128) {
        let value = match i128::try_from(value) {
            Ok(i) => Field::Int128(i),
            Err(_) => Field::Str(Cow::Owned(value.to_string())),
        };
        self.push(field, value);
    }

    fn record_bool(&mut self, field: &TracingField, value: bool) {
        self.push(field, Field::Bool(value));
    }

    fn record_str(&mut self, field: &TracingField, value: &str) {
        if field.name() == MESSAGE {
            self.message = Some(Cow::Owned(value.to_owned()));
        } else {
            self.push(field, Field::Str(Cow::Owned(value.to_owned())));
        }
    }

    fn record_error(&mut self, field: &TracingField, value: &(dyn std::error::Error + 'static)) {
        if self.exc_text.is_none() {
            self.exc_text = Some(error_chain(value));
        }
        self.push(field, Field::Error(value.to_string()));
    }

    fn record_debug(&mut self, field: &TracingField, value: &dyn fmt::Debug) {
        // `format_args!` messages arrive here; their Debug is their text.
        let text = format!("{value:?}");
        if field.name() == MESSAGE {
            self.message = Some(Cow::Owned(text));
        } else {
            self.push(field, Field::Str(Cow::Owned(text)));
        }
    }
}
