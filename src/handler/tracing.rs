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

use super::record::{
    write_error, write_field, write_field_fmt, write_message_fmt, Encoder, Field, Header, Level,
};
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

/// A span's fields, encoded, kept in its extensions.
#[derive(Debug, Default)]
struct SpanFields(Vec<u8>);

impl<S> tracing_subscriber::Layer<S> for Layer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut fields = SpanFields::default();
        attrs.record(&mut Fields {
            out: &mut fields.0,
            message: false,
        });
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut extensions = span.extensions_mut();
        if extensions.get_mut::<SpanFields>().is_none() {
            extensions.insert(SpanFields::default());
        }
        if let Some(fields) = extensions.get_mut::<SpanFields>() {
            values.record(&mut Fields {
                out: &mut fields.0,
                message: false,
            });
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let level = match *meta.level() {
            ::tracing::Level::ERROR => Level::Error,
            ::tracing::Level::WARN => Level::Warn,
            ::tracing::Level::INFO => Level::Info,
            ::tracing::Level::DEBUG => Level::Debug,
            ::tracing::Level::TRACE => Level::Trace,
        };
        self.sender.send_with(|buf| {
            let mut encoder = Encoder::begin(
                buf,
                &Header {
                    level,
                    created: SystemTime::now(),
                    target: meta.target(),
                    module_path: meta.module_path(),
                    file: meta.file(),
                    line: meta.line(),
                },
            );
            if let Some(scope) = ctx.event_scope(event) {
                for span in scope.from_root() {
                    if let Some(fields) = span.extensions().get::<SpanFields>() {
                        encoder.entries(&fields.0);
                    }
                }
            }
            event.record(&mut Fields {
                out: encoder.buf(),
                message: true,
            });
            encoder.finish();
        });
    }
}

/// Encodes fields; for an event, `message` as the record's message.
struct Fields<'o> {
    out: &'o mut Vec<u8>,
    message: bool,
}

impl Fields<'_> {
    fn push(&mut self, field: &TracingField, value: Field<'_>) {
        write_field(self.out, field.name(), &value);
    }
}

impl Visit for Fields<'_> {
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
        match i128::try_from(value) {
            Ok(i) => self.push(field, Field::Int128(i)),
            Err(_) => write_field_fmt(self.out, field.name(), format_args!("{value}")),
        }
    }

    fn record_bool(&mut self, field: &TracingField, value: bool) {
        self.push(field, Field::Bool(value));
    }

    fn record_str(&mut self, field: &TracingField, value: &str) {
        if self.message && field.name() == MESSAGE {
            write_message_fmt(self.out, format_args!("{value}"));
        } else {
            self.push(field, Field::Str(Cow::Borrowed(value)));
        }
    }

    fn record_error(&mut self, field: &TracingField, value: &(dyn std::error::Error + 'static)) {
        write_error(self.out, field.name(), value);
    }

    fn record_debug(&mut self, field: &TracingField, value: &dyn fmt::Debug) {
        // `format_args!` messages arrive here; their Debug is their text.
        if self.message && field.name() == MESSAGE {
            write_message_fmt(self.out, format_args!("{value:?}"));
        } else {
            write_field_fmt(self.out, field.name(), format_args!("{value:?}"));
        }
    }
}
