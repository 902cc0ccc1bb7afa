//! A Rust log record as the application thread captures it, and its CPython `LogRecord` shape
//! (pure).
//!
//! The application thread only copies what it must ([`Captured`]: the formatted message, the
//! time, the key-value fields; `'static` strings are borrowed, not copied). The worker thread
//! turns it into the `__dict__` of a CPython `LogRecord` ([`Captured::to_value`]) and hands that
//! to the proxy's own [`EventFormat::write_record`](crate::event::EventFormat::write_record), so
//! Rust and Python records become events through one formatter.

use std::borrow::Cow;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::value::Value;

// CPython `LogRecord` attribute names (Lib/logging/__init__.py).
const NAME: &str = "name";
const MSG: &str = "msg";
const LEVELNAME: &str = "levelname";
const LEVELNO: &str = "levelno";
const PATHNAME: &str = "pathname";
const FILENAME: &str = "filename";
const MODULE: &str = "module";
const EXC_TEXT: &str = "exc_text";
const LINENO: &str = "lineno";
const CREATED: &str = "created";
const MSECS: &str = "msecs";
const PROCESS: &str = "process";
const TAGS: &str = "tags";

/// Extra field carrying the Rust module path (`module` is the file stem, as in CPython, and the
/// event layout leaves it out).
pub const MODULE_PATH: &str = "module_path";
/// Extra field carrying the source line (the event layout writes `lineno` only next to an
/// exception).
pub const LINE: &str = "line";

/// A record's severity.
///
/// CPython has no TRACE; Rust's keeps its own name (`levelname` `"TRACE"`, `levelno` 5) rather
/// than being folded into DEBUG, so Logstash can still tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// `TRACE`, 5.
    Trace,
    /// `DEBUG`, 10.
    Debug,
    /// `INFO`, 20.
    Info,
    /// `WARNING`, 30 (Rust's WARN under CPython's name).
    Warn,
    /// `ERROR`, 40.
    Error,
}

impl Level {
    /// The CPython `levelname`.
    pub fn name(self) -> &'static str {
        match self {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARNING",
            Level::Error => "ERROR",
        }
    }

    /// The CPython `levelno`.
    pub fn number(self) -> i64 {
        match self {
            Level::Trace => 5,
            Level::Debug => 10,
            Level::Info => 20,
            Level::Warn => 30,
            Level::Error => 40,
        }
    }
}

impl From<::log::Level> for Level {
    fn from(level: ::log::Level) -> Self {
        match level {
            ::log::Level::Error => Level::Error,
            ::log::Level::Warn => Level::Warn,
            ::log::Level::Info => Level::Info,
            ::log::Level::Debug => Level::Debug,
            ::log::Level::Trace => Level::Trace,
        }
    }
}

/// One key-value field's value, owned.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    /// No value (`null`).
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer (above `i64::MAX` it is written as a big JSON number).
    UInt(u64),
    /// A 128-bit integer.
    Int128(i128),
    /// A float; NaN and infinities are written as `null`, like every event.
    Float(f64),
    /// Text; values without a typed form (`Debug`/`Display` ones) end up here too.
    Str(Cow<'static, str>),
    /// An error: its message here, and its chain as the record's exception text.
    Error(String),
}

/// What the application thread captured of one record: everything the event needs, owned.
#[derive(Debug, Clone, PartialEq)]
pub struct Captured {
    /// Severity.
    pub level: Level,
    /// When the record was made.
    pub created: SystemTime,
    /// The logger: `log`'s or `tracing`'s target.
    pub target: Cow<'static, str>,
    /// The formatted message.
    pub message: Cow<'static, str>,
    /// The Rust module path, if known.
    pub module_path: Option<Cow<'static, str>>,
    /// The source file, if known.
    pub file: Option<Cow<'static, str>>,
    /// The source line, if known.
    pub line: Option<u32>,
    /// Key-value fields, in order; written as extras.
    pub fields: Vec<(Cow<'static, str>, Field)>,
    /// The exception text: the first error field's chain (`Display` of each source).
    pub exc_text: Option<String>,
}

impl Captured {
    /// The record dict: CPython's attributes in `vars(LogRecord)` order, then the extras
    /// [`MODULE_PATH`], [`LINE`] and the fields. `tags` (the configured tags for a proxy that
    /// applies its own) go first in the record's `tags` list.
    ///
    /// Mapping: `name` is the target, `pathname` the file and `filename` its last component,
    /// `module` the file stem, `lineno` the line, `created` the time as float seconds;
    /// `funcName`, `thread` and `threadName` have no Rust counterpart and are left out
    /// (the event layout does not carry them either).
    pub fn to_value<'a>(&'a self, process: u32, tags: &'a [String]) -> Value<'a> {
        let s = |text: &'a str| Value::Str(Cow::Borrowed(text));
        let created = match self.created.duration_since(UNIX_EPOCH) {
            Ok(after) => after.as_secs_f64(),
            Err(before) => -before.duration().as_secs_f64(),
        };
        let mut items = Vec::with_capacity(14 + self.fields.len());
        items.push((s(NAME), s(&self.target)));
        items.push((s(MSG), s(&self.message)));
        items.push((s(LEVELNAME), s(self.level.name())));
        items.push((s(LEVELNO), Value::Int(self.level.number())));
        if let Some(file) = &self.file {
            let path = Path::new(file.as_ref());
            let filename = path.file_name().and_then(|f| f.to_str()).unwrap_or(file);
            let module = path.file_stem().and_then(|f| f.to_str()).unwrap_or(file);
            items.push((s(PATHNAME), s(file)));
            items.push((s(FILENAME), s(filename)));
            items.push((s(MODULE), s(module)));
        }
        if let Some(exc_text) = &self.exc_text {
            items.push((s(EXC_TEXT), s(exc_text)));
        }
        if let Some(line) = self.line {
            items.push((s(LINENO), Value::Int(i64::from(line))));
        }
        items.push((s(CREATED), Value::Float(created)));
        items.push((
            s(MSECS),
            Value::Float((created.rem_euclid(1.0) * 1000.0).floor()),
        ));
        items.push((s(PROCESS), Value::Int(i64::from(process))));
        if let Some(module_path) = &self.module_path {
            items.push((s(MODULE_PATH), s(module_path)));
        }
        if let Some(line) = self.line {
            items.push((s(LINE), Value::Int(i64::from(line))));
        }
        let mut has_tags = false;
        for (key, field) in &self.fields {
            let value = match field {
                Field::Null => Value::None,
                Field::Bool(b) => Value::Bool(*b),
                Field::Int(i) => Value::Int(*i),
                Field::UInt(u) => match i64::try_from(*u) {
                    Ok(i) => Value::Int(i),
                    Err(_) => Value::BigInt(u.to_string()),
                },
                Field::Int128(i) => match i64::try_from(*i) {
                    Ok(i) => Value::Int(i),
                    Err(_) => Value::BigInt(i.to_string()),
                },
                Field::Float(f) => Value::Float(*f),
                Field::Str(text) => s(text),
                Field::Error(text) => s(text),
            };
            if key == TAGS && !tags.is_empty() {
                has_tags = true;
                items.push((s(key), merge_tags(tags, value)));
            } else {
                items.push((s(key), value));
            }
        }
        if !has_tags && !tags.is_empty() {
            items.push((s(TAGS), merge_tags(tags, Value::None)));
        }
        Value::Dict(items)
    }
}

/// `tags` followed by the record's own tags (a list, or one string).
fn merge_tags<'a>(tags: &'a [String], own: Value<'a>) -> Value<'a> {
    let mut list: Vec<Value<'a>> = tags
        .iter()
        .map(|t| Value::Str(Cow::Borrowed(t.as_str())))
        .collect();
    match own {
        Value::None => {}
        Value::List(items) | Value::Tuple(items) => list.extend(items),
        other => list.push(other),
    }
    Value::List(list)
}

/// The text of an error and its sources, one per line after the first:
/// `outer\nCaused by: inner`.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str("\nCaused by: ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventConfig, EventFormat, LogstashVersion};
    use serde_json::json;
    use std::time::Duration;

    fn captured() -> Captured {
        Captured {
            level: Level::Warn,
            created: UNIX_EPOCH + Duration::from_micros(1_714_564_803_250_000),
            target: Cow::Borrowed("app::db"),
            message: Cow::Borrowed("query failed"),
            module_path: Some(Cow::Borrowed("app::db")),
            file: Some(Cow::Borrowed("src/db.rs")),
            line: Some(42),
            fields: vec![
                (Cow::Borrowed("user"), Field::Str(Cow::Borrowed("ana"))),
                (Cow::Borrowed("big"), Field::UInt(u64::MAX)),
                (Cow::Borrowed("n"), Field::Int128(-7)),
                (Cow::Borrowed("ok"), Field::Bool(false)),
                (Cow::Borrowed("ratio"), Field::Float(0.5)),
            ],
            exc_text: None,
        }
    }

    fn event(record: &Captured, version: LogstashVersion, tags: &[&str]) -> serde_json::Value {
        let format = EventFormat::new(EventConfig {
            version,
            host: "web-1".into(),
            message_type: "rust".into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
        });
        let mut out = Vec::new();
        format
            .write_record(&record.to_value(7, &[]), &mut out)
            .unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn levels_use_cpython_names() {
        let names: Vec<_> = [
            ::log::Level::Error,
            ::log::Level::Warn,
            ::log::Level::Info,
            ::log::Level::Debug,
            ::log::Level::Trace,
        ]
        .into_iter()
        .map(|l| (Level::from(l).name(), Level::from(l).number()))
        .collect();
        assert_eq!(
            names,
            [
                ("ERROR", 40),
                ("WARNING", 30),
                ("INFO", 20),
                ("DEBUG", 10),
                ("TRACE", 5)
            ]
        );
    }

    #[test]
    fn record_dict_is_a_record_and_formats_as_v1() {
        let record = captured();
        let value = record.to_value(7, &[]);
        assert!(EventFormat::is_record(&value));
        assert_eq!(value.get("module"), Some(&Value::Str("db".into())));
        assert_eq!(value.get("filename"), Some(&Value::Str("db.rs".into())));
        assert_eq!(value.get("process"), Some(&Value::Int(7)));
        assert_eq!(value.get("msecs"), Some(&Value::Float(250.0)));
        assert_eq!(
            event(&record, LogstashVersion::V1, &["prod"]),
            json!({
                "@timestamp": "2024-05-01T12:00:03.250000Z",
                "@version": 1,
                "message": "query failed",
                "host": "web-1",
                "path": "src/db.rs",
                "tags": ["prod"],
                "type": "rust",
                "levelname": "WARNING",
                "logger": "app::db",
                "module_path": "app::db",
                "line": 42,
                "user": "ana",
                "big": 18446744073709551615u64,
                "n": -7,
                "ok": false,
                "ratio": 0.5,
            })
        );
    }

    #[test]
    fn v0_and_error_chain() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("cannot load config")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let err = Outer(std::io::Error::other("disk on fire"));
        let mut record = captured();
        record.exc_text = Some(error_chain(&err));
        record.file = None;
        record.line = None;
        record.module_path = None;
        record.fields = vec![(Cow::Borrowed("err"), Field::Error(err.to_string()))];
        let e = event(&record, LogstashVersion::V0, &[]);
        assert_eq!(e["@message"], "query failed");
        assert_eq!(e["@source_path"], serde_json::Value::Null);
        assert_eq!(
            e["@fields"],
            json!({
                "levelname": "WARNING",
                "logger": "app::db",
                "err": "cannot load config",
                "exc_info": "cannot load config\nCaused by: disk on fire",
                "filename": null,
                "lineno": null,
            })
        );
    }

    #[test]
    fn configured_tags_lead_the_record_tags() {
        let mut record = captured();
        let tags = ["svc".to_string()];
        let value = record.to_value(1, &tags);
        assert_eq!(
            value.get("tags"),
            Some(&Value::List(vec![Value::Str("svc".into())]))
        );
        record.fields = vec![(Cow::Borrowed("tags"), Field::Str(Cow::Borrowed("mine")))];
        let value = record.to_value(1, &tags);
        assert_eq!(
            value.get("tags"),
            Some(&Value::List(vec![
                Value::Str("svc".into()),
                Value::Str("mine".into())
            ]))
        );
    }

    #[test]
    fn times_before_the_epoch() {
        let mut record = captured();
        record.created = UNIX_EPOCH - Duration::from_millis(1500);
        let e = event(&record, LogstashVersion::V1, &[]);
        assert_eq!(e["@timestamp"], "1969-12-31T23:59:58.500000Z");
    }
}
