//! The `log` crate backend: a [`log::Log`](::log::Log) that captures each record and queues it
//! for the handler's worker.
//!
//! Key-values (`log::info!(user = "ada", n = 3; "...")`) become extras with their types kept
//! (integers, floats, booleans, strings; other values as their `Display`/`Debug` text). An error
//! value (`err:err = e`) is also the record's exception: its chain becomes `exc_info`.

use std::borrow::Cow;
use std::time::SystemTime;

use ::log::kv::{self, VisitSource, VisitValue};
use ::log::{LevelFilter, Metadata, Record};

use super::record::{error_chain, Captured, Field};
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
            self.sender.send(capture(record));
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

/// Copies what the event needs out of `record`: `'static` strings (target, module path, file
/// and message without arguments, as the macros give them) are borrowed, the rest is owned.
pub fn capture(record: &Record<'_>) -> Captured {
    let args = record.args();
    let message = match args.as_str() {
        Some(text) => Cow::Borrowed(text),
        None => Cow::Owned(std::fmt::format(*args)),
    };
    // The macros' default target is the module path: borrow the static one when they match.
    let target = match record.module_path_static() {
        Some(module) if module == record.target() => Cow::Borrowed(module),
        _ => Cow::Owned(record.target().to_owned()),
    };
    let module_path = match record.module_path_static() {
        Some(module) => Some(Cow::Borrowed(module)),
        None => record.module_path().map(|m| Cow::Owned(m.to_owned())),
    };
    let file = match record.file_static() {
        Some(file) => Some(Cow::Borrowed(file)),
        None => record.file().map(|f| Cow::Owned(f.to_owned())),
    };
    let mut fields = Fields {
        fields: Vec::new(),
        exc_text: None,
    };
    // Our visitor never fails.
    let _ = record.key_values().visit(&mut fields);
    Captured {
        level: record.level().into(),
        created: SystemTime::now(),
        target,
        message,
        module_path,
        file,
        line: record.line(),
        fields: fields.fields,
        exc_text: fields.exc_text,
    }
}

/// Collects key-values.
struct Fields {
    fields: Vec<(Cow<'static, str>, Field)>,
    exc_text: Option<String>,
}

impl<'kvs> VisitSource<'kvs> for Fields {
    fn visit_pair(&mut self, key: kv::Key<'kvs>, value: kv::Value<'kvs>) -> Result<(), kv::Error> {
        let mut visitor = FieldVisitor {
            field: Field::Null,
            exc_text: None,
        };
        value.visit(&mut visitor)?;
        if self.exc_text.is_none() {
            self.exc_text = visitor.exc_text;
        }
        self.fields
            .push((Cow::Owned(key.as_str().to_owned()), visitor.field));
        Ok(())
    }
}

/// Converts one value, keeping its type where JSON has one.
struct FieldVisitor {
    field: Field,
    exc_text: Option<String>,
}

impl<'v> VisitValue<'v> for FieldVisitor {
    fn visit_any(&mut self, value: kv::Value<'_>) -> Result<(), kv::Error> {
        self.field = Field::Str(Cow::Owned(value.to_string()));
        Ok(())
    }

    fn visit_null(&mut self) -> Result<(), kv::Error> {
        self.field = Field::Null;
        Ok(())
    }

    fn visit_u64(&mut self, value: u64) -> Result<(), kv::Error> {
        self.field = Field::UInt(value);
        Ok(())
    }

    fn visit_i64(&mut self, value: i64) -> Result<(), kv::Error> {
        self.field = Field::Int(value);
        Ok(())
    }

    fn visit_u128(&mut self, value: u128) -> Result<(), kv::Error> {
        self.field = match i128::try_from(value) {
            Ok(i) => Field::Int128(i),
            Err(_) => Field::Str(Cow::Owned(value.to_string())),
        };
        Ok(())
    }

    fn visit_i128(&mut self, value: i128) -> Result<(), kv::Error> {
        self.field = Field::Int128(value);
        Ok(())
    }

    fn visit_f64(&mut self, value: f64) -> Result<(), kv::Error> {
        self.field = Field::Float(value);
        Ok(())
    }

    fn visit_bool(&mut self, value: bool) -> Result<(), kv::Error> {
        self.field = Field::Bool(value);
        Ok(())
    }

    fn visit_str(&mut self, value: &str) -> Result<(), kv::Error> {
        self.field = Field::Str(Cow::Owned(value.to_owned()));
        Ok(())
    }

    fn visit_error(&mut self, err: &(dyn std::error::Error + 'static)) -> Result<(), kv::Error> {
        self.field = Field::Error(err.to_string());
        self.exc_text = Some(error_chain(err));
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
    use crate::handler::record::Level;

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
    fn captures_static_parts_borrowed_and_fields_typed() {
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
        let c = capture(
            &Record::builder()
                .level(::log::Level::Warn)
                .target(module_path!())
                .module_path_static(Some(module_path!()))
                .file_static(Some(file!()))
                .line(Some(7))
                .args(format_args!("hello {}", "world"))
                .key_values(&kvs)
                .build(),
        );
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

        let c = capture(
            &Record::builder()
                .target("custom")
                .args(format_args!("static text"))
                .build(),
        );
        assert!(matches!(c.message, Cow::Borrowed("static text")));
        assert_eq!(c.target, "custom");
        assert_eq!(c.level, Level::Info);
    }
}
