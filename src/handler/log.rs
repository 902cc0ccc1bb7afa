//! The `log` crate backend: a [`log::Log`] that encodes each record and queues it
//! for the handler's worker.
//!
//! Key-values (`log::info!(user = "ada", n = 3; "...")`) become extras with their types kept
//! (integers, floats, booleans, strings; other values as their `Display`/`Debug` text). An error
//! value (`err:err = e`) is also the record's exception: its chain becomes `exc_info`.
//!
//! On the logging thread a record costs its encoding ([`encode`]: the message formatted straight
//! into a reused buffer) and one copy into the queue.

use std::borrow::Cow;
use std::time::SystemTime;

use ::log::kv::{self, VisitSource, VisitValue};
use ::log::{LevelFilter, Metadata, Record};

use super::record::{Encoder, Field, Header};
use super::{Builder, Handle, HandlerError, Sender};

/// A `log` backend sending to a pystash handler.
#[derive(Debug, Clone)]
pub struct Logger {
    sender: Sender,
    level: LevelFilter,
}

impl Logger {
    /// A backend for `sender` that passes records up to `level`.
    pub fn new(sender: Sender, level: LevelFilter) -> Self {
        Logger { sender, level }
    }

    /// The handler this backend sends to (for its counters).
    pub fn sender(&self) -> &Sender {
        &self.sender
    }
}

impl ::log::Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            self.sender.send_with(|buf| encode(record, buf));
        }
    }

    /// Waits for delivery of what is queued, at most the builder's flush timeout.
    fn flush(&self) {
        self.sender.flush();
    }
}

impl Builder {
    /// Starts the handler and returns its `log` backend, to install or combine yourself.
    ///
    /// # Errors
    ///
    /// [`HandlerError::Spawn`] when the worker thread cannot be started.
    pub fn build_log(self) -> Result<(Logger, Handle), HandlerError> {
        let level = self.level;
        let (sender, handle) = self.spawn()?;
        Ok((Logger::new(sender, level), handle))
    }

    /// Starts the handler and installs it as the `log` backend, with the builder's level as
    /// `log::max_level`. Keep the returned handle until the program ends: dropping it delivers
    /// what is queued and stops the handler.
    ///
    /// # Errors
    ///
    /// [`HandlerError::SetLogger`] when a backend is installed already (the handler is stopped
    /// again), [`HandlerError::Spawn`] when the worker thread cannot be started.
    pub fn init_log(self) -> Result<Handle, HandlerError> {
        let level = self.level;
        let (logger, handle) = self.build_log()?;
        ::log::set_boxed_logger(Box::new(logger))?;
        ::log::set_max_level(level);
        Ok(handle)
    }
}

/// Encodes `record` into `out`: the message is formatted straight into the buffer, key-values
/// keep their types, nothing is allocated once `out` has grown to a record's size.
pub fn encode(record: &Record<'_>, out: &mut Vec<u8>) {
    let mut encoder = Encoder::begin(
        out,
        &Header {
            level: record.level().into(),
            created: SystemTime::now(),
            target: record.target(),
            module_path: record.module_path(),
            file: record.file(),
            line: record.line(),
        },
    );
    let args = record.args();
    match args.as_str() {
        Some(text) => encoder.message(text),
        None => encoder.message_fmt(*args),
    }
    // Our visitor never fails.
    let _ = record.key_values().visit(&mut Fields {
        encoder: &mut encoder,
    });
    encoder.finish();
}

/// Encodes key-values.
struct Fields<'e, 'b> {
    encoder: &'e mut Encoder<'b>,
}

impl<'kvs> VisitSource<'kvs> for Fields<'_, '_> {
    fn visit_pair(&mut self, key: kv::Key<'kvs>, value: kv::Value<'kvs>) -> Result<(), kv::Error> {
        value.visit(FieldVisitor {
            encoder: self.encoder,
            key: key.as_str(),
        })
    }
}

/// Encodes one value, keeping its type where JSON has one.
struct FieldVisitor<'e, 'b, 'k> {
    encoder: &'e mut Encoder<'b>,
    key: &'k str,
}

impl FieldVisitor<'_, '_, '_> {
    fn field(&mut self, value: Field<'_>) -> Result<(), kv::Error> {
        self.encoder.field(self.key, &value);
        Ok(())
    }
}

impl<'v> VisitValue<'v> for FieldVisitor<'_, '_, '_> {
    fn visit_any(&mut self, value: kv::Value<'_>) -> Result<(), kv::Error> {
        self.encoder.field_fmt(self.key, format_args!("{value}"));
        Ok(())
    }

    fn visit_null(&mut self) -> Result<(), kv::Error> {
        self.field(Field::Null)
    }

    fn visit_u64(&mut self, value: u64) -> Result<(), kv::Error> {
        self.field(Field::UInt(value))
    }

    fn visit_i64(&mut self, value: i64) -> Result<(), kv::Error> {
        self.field(Field::Int(value))
    }

    fn visit_u128(&mut self, value: u128) -> Result<(), kv::Error> {
        match i128::try_from(value) {
            Ok(i) => self.field(Field::Int128(i)),
            Err(_) => {
                self.encoder.field_fmt(self.key, format_args!("{value}"));
                Ok(())
            }
        }
    }

    fn visit_i128(&mut self, value: i128) -> Result<(), kv::Error> {
        self.field(Field::Int128(value))
    }

    fn visit_f64(&mut self, value: f64) -> Result<(), kv::Error> {
        self.field(Field::Float(value))
    }

    fn visit_bool(&mut self, value: bool) -> Result<(), kv::Error> {
        self.field(Field::Bool(value))
    }

    fn visit_str(&mut self, value: &str) -> Result<(), kv::Error> {
        self.field(Field::Str(Cow::Borrowed(value)))
    }

    fn visit_error(&mut self, err: &(dyn std::error::Error + 'static)) -> Result<(), kv::Error> {
        self.encoder.error(self.key, err);
        Ok(())
    }

    fn visit_borrowed_error(
        &mut self,
        err: &'v (dyn std::error::Error + 'static),
    ) -> Result<(), kv::Error> {
        self.visit_error(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::record::{decode, Level};

    #[derive(Debug)]
    struct Wrapped(std::io::Error);
    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("request failed")
        }
    }
    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn encodes_fields_typed_and_decodes_back() {
        let err = Wrapped(std::io::Error::other("timeout"));
        let kvs: [(&str, kv::Value<'_>); 8] = [
            ("user", kv::Value::from("ada")),
            ("n", kv::Value::from(-3i64)),
            ("big", kv::Value::from(u64::MAX)),
            ("huge", kv::Value::from(u128::MAX)),
            ("ratio", kv::Value::from(0.25f64)),
            ("ok", kv::Value::from(true)),
            ("dbg", kv::Value::from_debug(&[1, 2])),
            ("err", kv::Value::from_dyn_error(&err)),
        ];
        let mut buf = Vec::new();
        encode(
            &Record::builder()
                .level(::log::Level::Warn)
                .target(module_path!())
                .module_path_static(Some(module_path!()))
                .file_static(Some(file!()))
                .line(Some(7))
                .args(format_args!("hello {}", "world"))
                .key_values(&kvs)
                .build(),
            &mut buf,
        );
        let (c, used) = decode(&buf).unwrap();
        assert_eq!(used, buf.len());
        assert_eq!(c.level, Level::Warn);
        assert!(matches!(
            c.target,
            Cow::Borrowed("pystash::handler::log::tests")
        ));
        assert!(matches!(c.file, Some(Cow::Borrowed(_))));
        assert_eq!(c.message, "hello world");
        assert_eq!(c.line, Some(7));
        let fields: Vec<(&str, &Field)> = c.fields.iter().map(|(k, v)| (&**k, v)).collect();
        assert_eq!(
            fields,
            [
                ("user", &Field::Str("ada".into())),
                ("n", &Field::Int(-3)),
                ("big", &Field::UInt(u64::MAX)),
                ("huge", &Field::Str(u128::MAX.to_string().into())),
                ("ratio", &Field::Float(0.25)),
                ("ok", &Field::Bool(true)),
                ("dbg", &Field::Str("[1, 2]".into())),
                ("err", &Field::Error("request failed".into())),
            ]
        );
        assert_eq!(
            c.exc_text.as_deref(),
            Some("request failed\nCaused by: timeout")
        );

        let mut buf = Vec::new();
        encode(
            &Record::builder()
                .target("custom")
                .args(format_args!("static text"))
                .build(),
            &mut buf,
        );
        let (c, _) = decode(&buf).unwrap();
        assert_eq!(c.message, "static text");
        assert_eq!((c.module_path, c.file, c.line), (None, None, None));
        assert!(c.fields.is_empty() && c.exc_text.is_none());
        assert_eq!(c.target, "custom");
        assert_eq!(c.level, Level::Info);
    }
}
