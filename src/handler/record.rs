//! A Rust log record as the application thread captures it, and its CPython `LogRecord` shape
//! (pure).
//!
//! The application thread encodes what the event needs (level, time, target, location, the
//! formatted message, the key-value fields) into a compact binary form with an [`Encoder`],
//! straight into a reused buffer: no allocation per record, and one copy into the queue. The
//! worker thread [`decode`]s it into a [`Captured`] that borrows from the queue's buffer, turns
//! that into the `__dict__` of a CPython `LogRecord` ([`Captured::to_value`]) and hands it to the
//! proxy's own [`EventFormat::write_record`](crate::event::EventFormat::write_record), so Rust and
//! Python records become events through one formatter.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// One key-value field's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Field<'a> {
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
    Str(Cow<'a, str>),
    /// An error: its message here, and its chain as the record's exception text.
    Error(Cow<'a, str>),
}

/// One record: everything its event needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Captured<'a> {
    /// Severity.
    pub level: Level,
    /// When the record was made.
    pub created: SystemTime,
    /// The logger: `log`'s or `tracing`'s target.
    pub target: Cow<'a, str>,
    /// The formatted message.
    pub message: Cow<'a, str>,
    /// The Rust module path, if known.
    pub module_path: Option<Cow<'a, str>>,
    /// The source file, if known.
    pub file: Option<Cow<'a, str>>,
    /// The source line, if known.
    pub line: Option<u32>,
    /// Key-value fields, in order; written as extras.
    pub fields: Vec<(Cow<'a, str>, Field<'a>)>,
    /// The exception text: the first error field's chain (`Display` of each source).
    pub exc_text: Option<Cow<'a, str>>,
}

impl<'c> Captured<'c> {
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

// The encoded form, native byte order (it never leaves the process):
//   record := u32 body_len, body
//   body   := u8 level, i64 secs, u32 nanos, str target, opt str module_path, opt str file,
//             opt u32 line, entry*
//   entry  := u8 MESSAGE str | u8 <value tag> str key, value
//   str    := u32 len, UTF-8 bytes;  opt X := u8 0 | u8 1, X
const TAG_MESSAGE: u8 = 0;
const TAG_NULL: u8 = 1;
const TAG_BOOL: u8 = 2;
const TAG_INT: u8 = 3;
const TAG_UINT: u8 = 4;
const TAG_INT128: u8 = 5;
const TAG_FLOAT: u8 = 6;
const TAG_STR: u8 = 7;
/// An error: its `Display`, then its chain.
const TAG_ERROR: u8 = 8;

/// Writes one record's encoded form to a buffer the caller owns; the entries (message, fields)
/// follow the header in any order.
#[derive(Debug)]
pub struct Encoder<'b> {
    out: &'b mut Vec<u8>,
    start: usize,
}

/// The fixed part of a record.
#[derive(Debug, Clone, Copy)]
pub struct Header<'a> {
    /// Severity.
    pub level: Level,
    /// When the record was made.
    pub created: SystemTime,
    /// The logger.
    pub target: &'a str,
    /// The Rust module path.
    pub module_path: Option<&'a str>,
    /// The source file.
    pub file: Option<&'a str>,
    /// The source line.
    pub line: Option<u32>,
}

/// Appends formatted text to the buffer; strings are UTF-8 by construction.
struct Utf8Sink<'b>(&'b mut Vec<u8>);

impl fmt::Write for Utf8Sink<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

fn put_u32(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&n.to_ne_bytes());
}

/// Writes a string's length (saturated: larger strings are cut) and bytes.
fn put_str(out: &mut Vec<u8>, s: &str) {
    let s = truncate(s, u32::MAX as usize);
    put_u32(out, s.len() as u32);
    out.extend_from_slice(s.as_bytes());
}

/// `s` cut to at most `max` bytes at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Writes formatted text as a string: a length placeholder, the text, then the real length.
fn put_fmt(out: &mut Vec<u8>, write: impl FnOnce(&mut Utf8Sink<'_>) -> fmt::Result) {
    let at = out.len();
    put_u32(out, 0);
    let mut sink = Utf8Sink(out);
    // A Display impl that fails leaves what it wrote so far.
    let _ = write(&mut sink);
    let len = out.len() - at - 4;
    match u32::try_from(len) {
        Ok(len) => out[at..at + 4].copy_from_slice(&len.to_ne_bytes()),
        Err(_) => {
            // Over 4 GiB of text: keep what fits, at a character boundary.
            let text = std::str::from_utf8(&out[at + 4..]).unwrap_or("");
            let kept = truncate(text, u32::MAX as usize).len();
            out.truncate(at + 4 + kept);
            out[at..at + 4].copy_from_slice(&(kept as u32).to_ne_bytes());
        }
    }
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
        None => out.push(0),
    }
}

impl<'b> Encoder<'b> {
    /// Starts a record at the end of `out`.
    pub fn begin(out: &'b mut Vec<u8>, header: &Header<'_>) -> Self {
        let start = out.len();
        put_u32(out, 0);
        out.push(header.level as u8);
        let (secs, nanos) = match header.created.duration_since(UNIX_EPOCH) {
            Ok(after) => (
                i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
                after.subsec_nanos(),
            ),
            Err(before) => {
                let before = before.duration();
                let secs = i64::try_from(before.as_secs()).map_or(i64::MIN, |s| -s);
                match before.subsec_nanos() {
                    0 => (secs, 0),
                    n => (secs.saturating_sub(1), 1_000_000_000 - n),
                }
            }
        };
        out.extend_from_slice(&secs.to_ne_bytes());
        put_u32(out, nanos);
        put_str(out, header.target);
        put_opt_str(out, header.module_path);
        put_opt_str(out, header.file);
        match header.line {
            Some(line) => {
                out.push(1);
                put_u32(out, line);
            }
            None => out.push(0),
        }
        Encoder { out, start }
    }

    /// The record's message.
    pub fn message(&mut self, text: &str) {
        self.out.push(TAG_MESSAGE);
        put_str(self.out, text);
    }

    /// The record's message, formatted straight into the buffer.
    pub fn message_fmt(&mut self, args: fmt::Arguments<'_>) {
        write_message_fmt(self.out, args);
    }

    /// One key-value field.
    pub fn field(&mut self, key: &str, value: &Field<'_>) {
        write_field(self.out, key, value);
    }

    /// A field whose value is text formatted straight into the buffer (`Debug`, `Display`).
    pub fn field_fmt(&mut self, key: &str, args: fmt::Arguments<'_>) {
        write_field_fmt(self.out, key, args);
    }

    /// An error field: its message as the field, its chain as the record's exception (the
    /// first error field's).
    pub fn error(&mut self, key: &str, err: &(dyn std::error::Error + 'static)) {
        write_error(self.out, key, err);
    }

    /// Entries encoded earlier with [`write_field`] and friends (a span's fields).
    pub fn entries(&mut self, entries: &[u8]) {
        self.out.extend_from_slice(entries);
    }

    /// The buffer, to append entries to with [`write_field`] and friends.
    pub fn buf(&mut self) -> &mut Vec<u8> {
        self.out
    }

    /// Ends the record.
    pub fn finish(self) {
        let len = self.out.len() - self.start - 4;
        // Records over 4 GiB are not something a logger is handed; saturate rather than panic.
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        self.out[self.start..self.start + 4].copy_from_slice(&len.to_ne_bytes());
    }
}

/// Appends the record's message, formatted straight into `out`.
pub fn write_message_fmt(out: &mut Vec<u8>, args: fmt::Arguments<'_>) {
    out.push(TAG_MESSAGE);
    put_fmt(out, |w| w.write_fmt(args));
}

/// Appends one field entry.
pub fn write_field(out: &mut Vec<u8>, key: &str, value: &Field<'_>) {
    let tag = match value {
        Field::Null => TAG_NULL,
        Field::Bool(_) => TAG_BOOL,
        Field::Int(_) => TAG_INT,
        Field::UInt(_) => TAG_UINT,
        Field::Int128(_) => TAG_INT128,
        Field::Float(_) => TAG_FLOAT,
        Field::Str(_) => TAG_STR,
        Field::Error(_) => TAG_ERROR,
    };
    out.push(tag);
    put_str(out, key);
    match value {
        Field::Null => {}
        Field::Bool(b) => out.push(u8::from(*b)),
        Field::Int(i) => out.extend_from_slice(&i.to_ne_bytes()),
        Field::UInt(u) => out.extend_from_slice(&u.to_ne_bytes()),
        Field::Int128(i) => out.extend_from_slice(&i.to_ne_bytes()),
        Field::Float(f) => out.extend_from_slice(&f.to_ne_bytes()),
        Field::Str(s) => put_str(out, s),
        // An error given as text: it is its own chain.
        Field::Error(s) => {
            put_str(out, s);
            put_str(out, s);
        }
    }
}

/// Appends a text field formatted straight into `out`.
pub fn write_field_fmt(out: &mut Vec<u8>, key: &str, args: fmt::Arguments<'_>) {
    out.push(TAG_STR);
    put_str(out, key);
    put_fmt(out, |w| w.write_fmt(args));
}

/// Appends an error field: its `Display`, then its chain.
pub fn write_error(out: &mut Vec<u8>, key: &str, err: &(dyn std::error::Error + 'static)) {
    out.push(TAG_ERROR);
    put_str(out, key);
    put_fmt(out, |w| write!(w, "{err}"));
    put_fmt(out, |w| write_error_chain(err, w));
}

/// Reads encoded records.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let bytes = self.buf.get(self.at..end)?;
        self.at = end;
        Some(bytes)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_ne_bytes(self.array()?))
    }

    fn str(&mut self) -> Option<&'a str> {
        let len = self.u32()? as usize;
        std::str::from_utf8(self.take(len)?).ok()
    }

    fn opt_str(&mut self) -> Option<Option<&'a str>> {
        match self.u8()? {
            0 => Some(None),
            _ => Some(Some(self.str()?)),
        }
    }
}

/// Decodes the record at the start of `buf`: the record, borrowing from `buf`, and the bytes it
/// took. `None` when `buf` does not start with a whole, well-formed record (which the
/// [`Encoder`] never writes).
pub fn decode(buf: &[u8]) -> Option<(Captured<'_>, usize)> {
    let len = u32::from_ne_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    let end = len.checked_add(4)?;
    let mut r = Reader {
        buf: buf.get(..end)?,
        at: 4,
    };
    let level = match r.u8()? {
        0 => Level::Trace,
        1 => Level::Debug,
        2 => Level::Info,
        3 => Level::Warn,
        4 => Level::Error,
        _ => return None,
    };
    let secs = i64::from_ne_bytes(r.array()?);
    let nanos = r.u32()?;
    let created = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(secs.unsigned_abs(), nanos))?
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(secs.unsigned_abs()))?
            .checked_add(Duration::from_nanos(u64::from(nanos)))?
    };
    let target = Cow::Borrowed(r.str()?);
    let module_path = r.opt_str()?.map(Cow::Borrowed);
    let file = r.opt_str()?.map(Cow::Borrowed);
    let line = match r.u8()? {
        0 => None,
        _ => Some(r.u32()?),
    };
    let mut record = Captured {
        level,
        created,
        target,
        message: Cow::Borrowed(""),
        module_path,
        file,
        line,
        fields: Vec::new(),
        exc_text: None,
    };
    while r.at < end {
        let tag = r.u8()?;
        if tag == TAG_MESSAGE {
            record.message = Cow::Borrowed(r.str()?);
            continue;
        }
        let key = Cow::Borrowed(r.str()?);
        let value = match tag {
            TAG_NULL => Field::Null,
            TAG_BOOL => Field::Bool(r.u8()? != 0),
            TAG_INT => Field::Int(i64::from_ne_bytes(r.array()?)),
            TAG_UINT => Field::UInt(u64::from_ne_bytes(r.array()?)),
            TAG_INT128 => Field::Int128(i128::from_ne_bytes(r.array()?)),
            TAG_FLOAT => Field::Float(f64::from_ne_bytes(r.array()?)),
            TAG_STR => Field::Str(Cow::Borrowed(r.str()?)),
            TAG_ERROR => {
                let text = r.str()?;
                let chain = r.str()?;
                if record.exc_text.is_none() {
                    record.exc_text = Some(Cow::Borrowed(chain));
                }
                Field::Error(Cow::Borrowed(text))
            }
            _ => return None,
        };
        record.fields.push((key, value));
    }
    Some((record, end))
}

impl Captured<'_> {
    /// Encodes this record (what [`Sender::send`](super::Sender::send) queues).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut encoder = Encoder::begin(
            out,
            &Header {
                level: self.level,
                created: self.created,
                target: &self.target,
                module_path: self.module_path.as_deref(),
                file: self.file.as_deref(),
                line: self.line,
            },
        );
        encoder.message(&self.message);
        let mut exc_text = self.exc_text.as_deref();
        for (key, value) in &self.fields {
            match (value, exc_text.take()) {
                // The record's exception rides on its first error field.
                (Field::Error(text), Some(chain)) => {
                    encoder.out.push(TAG_ERROR);
                    put_str(encoder.out, key);
                    put_str(encoder.out, text);
                    put_str(encoder.out, chain);
                }
                (value, chain) => {
                    exc_text = chain;
                    encoder.field(key, value);
                }
            }
        }
        if let Some(chain) = exc_text {
            // An exception without an error field: a field that carries only the chain.
            encoder.out.push(TAG_ERROR);
            put_str(encoder.out, "exc_text");
            put_str(encoder.out, chain);
            put_str(encoder.out, chain);
        }
        encoder.finish();
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
    let mut text = String::new();
    let _ = write_error_chain(err, &mut text);
    text
}

fn write_error_chain(
    err: &(dyn std::error::Error + 'static),
    out: &mut impl fmt::Write,
) -> fmt::Result {
    write!(out, "{err}")?;
    let mut source = err.source();
    while let Some(cause) = source {
        write!(out, "\nCaused by: {cause}")?;
        source = cause.source();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventConfig, EventFormat, LogstashVersion};
    use serde_json::json;
    use std::time::Duration;

    fn captured() -> Captured<'static> {
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

    fn event(record: &Captured<'_>, version: LogstashVersion, tags: &[&str]) -> serde_json::Value {
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
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
        record.exc_text = Some(error_chain(&err).into());
        record.file = None;
        record.line = None;
        record.module_path = None;
        record.fields = vec![(Cow::Borrowed("err"), Field::Error(err.to_string().into()))];
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

    #[test]
    fn encoding_round_trips_and_every_prefix_is_incomplete() {
        let mut record = captured();
        record.fields.extend([
            (Cow::Borrowed("null"), Field::Null),
            (Cow::Borrowed("i"), Field::Int(i64::MIN)),
            (Cow::Borrowed("err"), Field::Error("boom".into())),
            (Cow::Borrowed("text ✓"), Field::Str("multi\nline".into())),
        ]);
        record.exc_text = Some("boom\nCaused by: fuse".into());
        for created in [
            record.created,
            UNIX_EPOCH - Duration::from_nanos(1_500_000_001),
            UNIX_EPOCH,
        ] {
            record.created = created;
            let mut buf = b"prefix".to_vec();
            record.encode(&mut buf);
            record.encode(&mut buf);
            let (decoded, used) = decode(&buf[6..]).unwrap();
            assert_eq!(decoded, record);
            let (again, used2) = decode(&buf[6 + used..]).unwrap();
            assert_eq!(again, record);
            assert_eq!(6 + used + used2, buf.len());
            for end in 0..used {
                assert!(decode(&buf[6..6 + end]).is_none(), "prefix of {end}");
            }
        }
    }

    #[test]
    fn encoder_formats_in_place_and_takes_entries_in_any_order() {
        let mut span = Vec::new();
        write_field(&mut span, "request_id", &Field::UInt(7));
        let mut buf = Vec::new();
        let mut e = Encoder::begin(
            &mut buf,
            &Header {
                level: Level::Error,
                created: UNIX_EPOCH + Duration::from_secs(1),
                target: "t",
                module_path: None,
                file: Some("src/x.rs"),
                line: None,
            },
        );
        e.entries(&span);
        e.field_fmt("debug", format_args!("{:?}", [1, 2]));
        e.message_fmt(format_args!("{} + {}", 1, 2));
        let err = std::io::Error::other("disk");
        e.error("error", &err);
        e.finish();
        let (r, used) = decode(&buf).unwrap();
        assert_eq!(used, buf.len());
        assert_eq!(r.message, "1 + 2");
        assert_eq!(r.exc_text.as_deref(), Some("disk"));
        assert_eq!(
            r.fields,
            [
                (Cow::Borrowed("request_id"), Field::UInt(7)),
                (Cow::Borrowed("debug"), Field::Str("[1, 2]".into())),
                (Cow::Borrowed("error"), Field::Error("disk".into())),
            ]
        );
        assert_eq!((r.module_path, r.line), (None, None));
        // A record without a message entry has an empty message.
        let mut buf = Vec::new();
        Encoder::begin(
            &mut buf,
            &Header {
                level: Level::Info,
                created: UNIX_EPOCH,
                target: "t",
                module_path: None,
                file: None,
                line: Some(3),
            },
        )
        .finish();
        let (r, _) = decode(&buf).unwrap();
        assert_eq!((r.message.as_ref(), r.line), ("", Some(3)));
        // Garbage is refused, not misread.
        assert!(decode(&[2, 0, 0, 0, 9, 9]).is_none());
    }
}
