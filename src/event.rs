//! Decoded records to Logstash JSON events, appended to a buffer the caller owns (pure).
//!
//! The layout is python-logstash's `LogstashFormatterVersion1`/`Version0` (a dict of fixed
//! fields, then `dict.update(extras)`, then the exception fields), with pystash's changes:
//! `levelname`/`logger` names, `@version` as a number, six fractional digits in `@timestamp`,
//! record `tags` merged into the configured ones, `stack_info`. The writer never builds an
//! intermediate tree: constant fragments are escaped once in [`EventFormat::new`] and every value
//! is escaped straight into the output.
//!
//! Python semantics kept on purpose: an extra whose key equals a fixed key replaces that field's
//! value in place (`dict.update`), and a top-level key that occurs twice is written once, at its
//! first position, with its last value (`dict` assignment). Nested dicts are written as they are.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::repr::repr;
use crate::value::Value;

// Logstash field names (v1).
const TIMESTAMP: &str = "@timestamp";
const VERSION: &str = "@version";
const MESSAGE: &str = "message";
const HOST: &str = "host";
const PATH: &str = "path";
const TAGS: &str = "tags";
const TYPE: &str = "type";
const LEVELNAME: &str = "levelname";
const LOGGER: &str = "logger";
const EXC_INFO: &str = "exc_info";
const FILENAME: &str = "filename";
const LINENO: &str = "lineno";
const STACK_INFO: &str = "stack_info";

// Logstash field names (v0).
const V0_MESSAGE: &str = "@message";
const V0_SOURCE: &str = "@source";
const V0_SOURCE_HOST: &str = "@source_host";
const V0_SOURCE_PATH: &str = "@source_path";
const V0_TAGS: &str = "@tags";
const V0_TYPE: &str = "@type";
const V0_FIELDS: &str = "@fields";

/// The tag python-logstash's Logstash `json` codec adds to lines it could not parse.
pub const JSON_PARSE_FAILURE_TAG: &str = "_jsonparsefailure";

/// Fixed v1 fields an extra may replace, in output order (the index is the override slot).
const FIXED_V1: [&str; 8] = [
    TIMESTAMP, VERSION, MESSAGE, HOST, PATH, TYPE, LEVELNAME, LOGGER,
];
/// Fixed v0 `@fields` members an extra may replace.
const FIXED_V0: [&str; 2] = [LEVELNAME, LOGGER];

/// Values nested deeper than this are rejected rather than recursed into.
pub const MAX_DEPTH: usize = 256;

/// Objects with more extra keys than this find duplicates through a hash map instead of a scan.
const LINEAR_DEDUP_MAX: usize = 32;

/// Earliest and latest whole seconds Python's `datetime` can represent (years 1 to 9999).
const MIN_SECONDS: i64 = -62_135_596_800;
const MAX_SECONDS: i64 = 253_402_300_799;

/// The Logstash event schema to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogstashVersion {
    /// The old schema: `@message`, `@source*`, `@tags`, `@type`, and `@fields` holding the rest.
    V0,
    /// The current schema: flat fields with `@timestamp` and `@version`.
    #[default]
    V1,
}

/// What every event gets from configuration rather than from the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventConfig {
    /// Event schema.
    pub version: LogstashVersion,
    /// `host` (`@source_host` in v0): the name of the machine records came from.
    pub host: String,
    /// `type` (`@type` in v0).
    pub message_type: String,
    /// Tags put first in every event's `tags`.
    pub tags: Vec<String>,
}

/// Why a value could not be written as an event. `out` is left as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// [`EventFormat::write_event`] was given a top-level value that is not an object.
    #[error("event is not a JSON object")]
    NotAnObject,
    /// [`EventFormat::write_record`] was given a value that is not a dict, or one whose
    /// `created` is missing or not a number.
    #[error("record is not a dict with a numeric `created`")]
    NotARecord,
    /// A timestamp is NaN, infinite, or outside years 1 to 9999 (Python's `datetime` range).
    #[error("timestamp out of range")]
    TimestampOutOfRange,
    /// Lists and dicts are nested deeper than [`MAX_DEPTH`].
    #[error("value nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// How events are written: the configuration with its constant parts already escaped.
#[derive(Debug, Clone)]
pub struct EventFormat {
    version: LogstashVersion,
    /// `"host"`, escaped and quoted.
    host: Vec<u8>,
    /// `"type"`, escaped and quoted.
    message_type: Vec<u8>,
    /// The configured tags as `"a","b"`: array members without the brackets.
    tags: Vec<u8>,
    /// v0 `@source` up to the path: `"type://host/`, escaped, without the closing quote.
    source_prefix: Vec<u8>,
}

impl EventFormat {
    /// Escapes the constant parts of every event once.
    pub fn new(config: EventConfig) -> Self {
        let mut host = Vec::new();
        write_str(&config.host, &mut host);
        let mut message_type = Vec::new();
        write_str(&config.message_type, &mut message_type);
        let mut tags = Vec::new();
        for (i, tag) in config.tags.iter().enumerate() {
            if i > 0 {
                tags.push(b',');
            }
            write_str(tag, &mut tags);
        }
        // python-logstash: "%s://%s/%s" % (message_type, host, pathname).
        let mut source_prefix = vec![b'"'];
        escape_into(config.message_type.as_bytes(), &mut source_prefix);
        source_prefix.extend_from_slice(b"://");
        escape_into(config.host.as_bytes(), &mut source_prefix);
        source_prefix.push(b'/');
        Self {
            version: config.version,
            host,
            message_type,
            tags,
            source_prefix,
        }
    }

    /// A JSON object that looks like a record dict: has string `name`, `levelname`, and `msg`
    /// or `message`.
    ///
    /// It must also have a numeric `created`, so that [`Self::write_record`] can always stamp it;
    /// a dict without one is better written by [`Self::write_event`] (stamped with the arrival
    /// time) than dropped. `msg`/`message` may be any value: non-strings are rendered as text.
    pub fn is_record(value: &Value<'_>) -> bool {
        let Value::Dict(items) = value else {
            return false;
        };
        let (mut name, mut levelname, mut msg, mut created) = (false, false, false, false);
        for (k, v) in items {
            match k.as_str() {
                Some("name") => name = matches!(v, Value::Str(_)),
                Some("levelname") => levelname = matches!(v, Value::Str(_)),
                Some("msg" | "message") => msg = true,
                Some("created") => created = matches!(v, Value::Int(_) | Value::Float(_)),
                _ => {}
            }
        }
        name && levelname && msg && created
    }

    /// Appends the event for a JSON object: with [`Self::write_record`] when it
    /// [`is a record`](Self::is_record), else with [`Self::write_event`]. The keys are
    /// classified once for both the test and the record's event.
    ///
    /// # Errors
    ///
    /// As the writer chosen; `out` is then truncated back to its length at entry.
    pub fn write_object(
        &self,
        value: &Value<'_>,
        now: SystemTime,
        out: &mut Vec<u8>,
    ) -> Result<(), EventError> {
        if let Value::Dict(items) = value {
            let parts = Parts::collect(items, self.version);
            if parts.is_record() {
                let start = out.len();
                let result = self.write_parts(items, &parts, out);
                if result.is_err() {
                    out.truncate(start);
                }
                return result;
            }
        }
        self.write_event(value, now, out)
    }

    /// Appends the event for `record`, the `__dict__` of a CPython `LogRecord`.
    ///
    /// `@timestamp` comes from `created`, unless an extra named `@timestamp` replaces it. Other
    /// standard attributes that are missing are written as `null` (`message`, `path`,
    /// `levelname`, `logger`, `filename`, `lineno`); v0 `@source` then ends in an empty path.
    ///
    /// # Errors
    ///
    /// [`EventError::NotARecord`] when `record` is not a dict or `created` is missing or not a
    /// number (a record without its time is not one: the caller may fall back to
    /// [`Self::write_event`]); [`EventError::TimestampOutOfRange`] and [`EventError::TooDeep`]
    /// as their names say. `out` is then truncated back to its length at entry.
    pub fn write_record(&self, record: &Value<'_>, out: &mut Vec<u8>) -> Result<(), EventError> {
        let start = out.len();
        let result = self.write_record_unchecked(record, out);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// Appends `event`, a JSON object that is not a record (for example one python-logstash
    /// built), with its fields in order, then whichever of `@timestamp` (`now`), `@version`,
    /// `host`, `type` and `tags` it lacks (v0: `@timestamp`, `@source_host`, `@type`, `@tags`).
    ///
    /// # Errors
    ///
    /// [`EventError::NotAnObject`] when `event` is not a dict, [`EventError::TooDeep`] when it
    /// nests deeper than [`MAX_DEPTH`]; `out` is then truncated back to its length at entry.
    pub fn write_event(
        &self,
        event: &Value<'_>,
        now: SystemTime,
        out: &mut Vec<u8>,
    ) -> Result<(), EventError> {
        let start = out.len();
        let result = self.write_event_unchecked(event, now, out);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// Appends an event for a text line that is not JSON: the line as the message, tagged
    /// [`JSON_PARSE_FAILURE_TAG`] like Logstash's own `json` codec does.
    pub fn write_unparsed(&self, line: &str, now: SystemTime, out: &mut Vec<u8>) {
        let v1 = self.version == LogstashVersion::V1;
        out.push(b'{');
        write_key(if v1 { MESSAGE } else { V0_MESSAGE }, out);
        write_str(line, out);
        out.push(b',');
        write_key(if v1 { TAGS } else { V0_TAGS }, out);
        out.push(b'[');
        write_str(JSON_PARSE_FAILURE_TAG, out);
        if !self.tags.is_empty() {
            out.push(b',');
            out.extend_from_slice(&self.tags);
        }
        out.push(b']');
        out.push(b',');
        write_key(TIMESTAMP, out);
        write_system_time(now, out);
        if v1 {
            out.push(b',');
            write_key(VERSION, out);
            out.push(b'1');
        }
        out.push(b',');
        write_key(if v1 { HOST } else { V0_SOURCE_HOST }, out);
        out.extend_from_slice(&self.host);
        out.push(b',');
        write_key(if v1 { TYPE } else { V0_TYPE }, out);
        out.extend_from_slice(&self.message_type);
        out.push(b'}');
    }

    fn write_record_unchecked(
        &self,
        record: &Value<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), EventError> {
        let Value::Dict(items) = record else {
            return Err(EventError::NotARecord);
        };
        self.write_parts(items, &Parts::collect(items, self.version), out)
    }

    fn write_parts(
        &self,
        items: &[(Value<'_>, Value<'_>)],
        parts: &Parts<'_, '_>,
        out: &mut Vec<u8>,
    ) -> Result<(), EventError> {
        match self.version {
            LogstashVersion::V1 => self.write_v1(items, parts, out),
            LogstashVersion::V0 => self.write_v0(items, parts, out),
        }
    }

    fn write_v1(
        &self,
        items: &[(Value<'_>, Value<'_>)],
        parts: &Parts<'_, '_>,
        out: &mut Vec<u8>,
    ) -> Result<(), EventError> {
        // Each fixed field is written from its extra replacement when there is one.
        let fixed = |slot: usize, out: &mut Vec<u8>| -> Result<bool, EventError> {
            out.push(if slot == 0 { b'{' } else { b',' });
            write_key(FIXED_V1[slot], out);
            match parts.fixed(slot) {
                Some(v) => write_value(v, out, 1).map(|()| true),
                None => Ok(false),
            }
        };
        if !fixed(0, out)? {
            write_created(parts.get(Standard::Created), out)?;
        }
        if !fixed(1, out)? {
            out.push(b'1');
        }
        if !fixed(2, out)? {
            write_message(parts.message(), out);
        }
        if !fixed(3, out)? {
            out.extend_from_slice(&self.host);
        }
        if !fixed(4, out)? {
            write_opt(parts.get(Standard::Pathname), out)?;
        }
        out.push(b',');
        write_key(TAGS, out);
        self.write_tags(parts.get(Standard::Tags), out);
        if !fixed(5, out)? {
            out.extend_from_slice(&self.message_type);
        }
        if !fixed(6, out)? {
            write_opt(parts.get(Standard::Levelname), out)?;
        }
        if !fixed(7, out)? {
            write_opt(parts.get(Standard::Name), out)?;
        }
        let mut first = false;
        write_members(
            items,
            parts.extras,
            |i, key| parts.is_extra(i, key, LogstashVersion::V1),
            &mut first,
            out,
        )?;
        write_debug_fields(parts, out)?;
        out.push(b'}');
        Ok(())
    }

    fn write_v0(
        &self,
        items: &[(Value<'_>, Value<'_>)],
        parts: &Parts<'_, '_>,
        out: &mut Vec<u8>,
    ) -> Result<(), EventError> {
        out.push(b'{');
        write_key(TIMESTAMP, out);
        write_created(parts.get(Standard::Created), out)?;
        out.push(b',');
        write_key(V0_MESSAGE, out);
        write_message(parts.message(), out);
        out.push(b',');
        write_key(V0_SOURCE, out);
        out.extend_from_slice(&self.source_prefix);
        match parts.get(Standard::Pathname) {
            Some(Value::Str(path)) => escape_into(path.as_bytes(), out),
            Some(other) => escape_into(stringify(other).as_bytes(), out),
            None => {}
        }
        out.push(b'"');
        out.push(b',');
        write_key(V0_SOURCE_HOST, out);
        out.extend_from_slice(&self.host);
        out.push(b',');
        write_key(V0_SOURCE_PATH, out);
        write_opt(parts.get(Standard::Pathname), out)?;
        out.push(b',');
        write_key(V0_TAGS, out);
        self.write_tags(parts.get(Standard::Tags), out);
        out.push(b',');
        write_key(V0_TYPE, out);
        out.extend_from_slice(&self.message_type);
        out.push(b',');
        write_key(V0_FIELDS, out);
        for (slot, field) in [parts.get(Standard::Levelname), parts.get(Standard::Name)]
            .into_iter()
            .enumerate()
        {
            out.push(if slot == 0 { b'{' } else { b',' });
            write_key(FIXED_V0[slot], out);
            match parts.fixed(slot) {
                Some(v) => write_value(v, out, 2)?,
                None => write_opt(field, out)?,
            }
        }
        let mut first = false;
        write_members(
            items,
            parts.extras,
            |i, key| parts.is_extra(i, key, LogstashVersion::V0),
            &mut first,
            out,
        )?;
        write_debug_fields(parts, out)?;
        out.extend_from_slice(b"}}");
        Ok(())
    }

    /// Writes the configured tags followed by the record's own: a list or tuple (items that
    /// are not strings are rendered as strings) or a single string; any other `tags` is ignored.
    fn write_tags(&self, record_tags: Option<&Value<'_>>, out: &mut Vec<u8>) {
        out.push(b'[');
        out.extend_from_slice(&self.tags);
        let mut first = self.tags.is_empty();
        let mut item = |tag: &Value<'_>, out: &mut Vec<u8>| {
            if !first {
                out.push(b',');
            }
            first = false;
            write_as_str(tag, out);
        };
        match record_tags {
            Some(Value::List(tags) | Value::Tuple(tags)) => {
                for tag in tags {
                    item(tag, out);
                }
            }
            Some(tag @ Value::Str(_)) => item(tag, out),
            _ => {}
        }
        out.push(b']');
    }

    fn write_event_unchecked(
        &self,
        event: &Value<'_>,
        now: SystemTime,
        out: &mut Vec<u8>,
    ) -> Result<(), EventError> {
        let Value::Dict(items) = event else {
            return Err(EventError::NotAnObject);
        };
        let v1 = self.version == LogstashVersion::V1;
        let (host, kind, tags) = if v1 {
            (HOST, TYPE, TAGS)
        } else {
            (V0_SOURCE_HOST, V0_TYPE, V0_TAGS)
        };
        // Which of the filled-in fields are present: timestamp, version, host, type, tags.
        let mut present = [false, !v1, false, false, false];
        for (k, _) in items {
            let key = key_text(k);
            let key = key.as_ref();
            for (i, name) in [TIMESTAMP, VERSION, host, kind, tags].iter().enumerate() {
                present[i] |= key == *name;
            }
        }
        out.push(b'{');
        let mut first = true;
        write_members(items, items.len(), |_, _| true, &mut first, out)?;
        let mut fill = |i: usize, name: &str, out: &mut Vec<u8>| -> bool {
            if present[i] {
                return false;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            write_key(name, out);
            true
        };
        if fill(0, TIMESTAMP, out) {
            write_system_time(now, out);
        }
        if fill(1, VERSION, out) {
            out.push(b'1');
        }
        if fill(2, host, out) {
            out.extend_from_slice(&self.host);
        }
        if fill(3, kind, out) {
            out.extend_from_slice(&self.message_type);
        }
        if fill(4, tags, out) {
            out.push(b'[');
            out.extend_from_slice(&self.tags);
            out.push(b']');
        }
        out.push(b'}');
        Ok(())
    }
}

/// How a record key is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// A `LogRecord` attribute, written (if at all) as a fixed field.
    Standard(Standard),
    /// Not standard but named like a fixed field: replaces its value (index into `FIXED_V*`).
    Fixed(usize),
    /// Written after the fixed fields, under its own name.
    Extra,
}

/// First slot of the fixed fields an extra may replace ([`Class::slot`]).
const FIXED_SLOT: usize = Standard::Unused as usize + 1;
/// The slot of extras.
const EXTRA_SLOT: usize = FIXED_SLOT + FIXED_V1.len();
/// Slots in [`Parts`].
const SLOTS: usize = EXTRA_SLOT + 1;

impl Class {
    /// Where [`Parts`] keeps the value of a key of this class: the standard attributes in
    /// [`Standard`]'s order (`Unused` included, a slot nothing reads), the fixed fields, then
    /// one slot for every extra (nothing reads it either).
    const fn slot(self) -> usize {
        match self {
            Class::Standard(standard) => standard as usize,
            Class::Fixed(i) => FIXED_SLOT + i,
            Class::Extra => EXTRA_SLOT,
        }
    }
}

/// The `LogRecord` attributes the event uses; the rest of the standard set is dropped.
/// `Unused` stays last: the others number the first [`Class::slot`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standard {
    Created,
    Msg,
    Message,
    Pathname,
    Tags,
    Levelname,
    Name,
    ExcText,
    Filename,
    Lineno,
    StackInfo,
    Unused,
}

/// The [`Class::slot`] of `key` in `version`'s events.
#[inline]
fn classify(key: &str, version: LogstashVersion) -> usize {
    let Some(fingerprint) = fingerprint(key.as_bytes()) else {
        // No standard or fixed name is longer than 16 bytes.
        return EXTRA_SLOT;
    };
    let bucket = &NAMES[key.len()];
    for &(name, slots) in &bucket.entries[..bucket.len] {
        if name == fingerprint {
            return usize::from(slots[version as usize]);
        }
    }
    EXTRA_SLOT
}

/// What a name that is not an extra is.
#[derive(Debug, Clone, Copy)]
enum Name {
    Standard(Standard),
    /// Not a `LogRecord` attribute, but a fixed field in v1 and/or v0 (index into `FIXED_V*`).
    Fixed {
        v1: Option<usize>,
        v0: Option<usize>,
    },
}

// CPython Lib/logging/__init__.py LogRecord.__init__ (plus `message`, `asctime` set by
// Formatter.format, and `taskName` from 3.12), our own `tags`, then the fixed field names that
// are no attribute.
const NAME_LIST: [(&str, Name); 30] = [
    ("created", Name::Standard(Standard::Created)),
    ("msg", Name::Standard(Standard::Msg)),
    ("message", Name::Standard(Standard::Message)),
    ("pathname", Name::Standard(Standard::Pathname)),
    ("tags", Name::Standard(Standard::Tags)),
    ("levelname", Name::Standard(Standard::Levelname)),
    ("name", Name::Standard(Standard::Name)),
    ("exc_text", Name::Standard(Standard::ExcText)),
    ("filename", Name::Standard(Standard::Filename)),
    ("lineno", Name::Standard(Standard::Lineno)),
    ("stack_info", Name::Standard(Standard::StackInfo)),
    ("args", Name::Standard(Standard::Unused)),
    ("asctime", Name::Standard(Standard::Unused)),
    ("exc_info", Name::Standard(Standard::Unused)),
    ("funcName", Name::Standard(Standard::Unused)),
    ("levelno", Name::Standard(Standard::Unused)),
    ("module", Name::Standard(Standard::Unused)),
    ("msecs", Name::Standard(Standard::Unused)),
    ("process", Name::Standard(Standard::Unused)),
    ("processName", Name::Standard(Standard::Unused)),
    ("relativeCreated", Name::Standard(Standard::Unused)),
    ("thread", Name::Standard(Standard::Unused)),
    ("threadName", Name::Standard(Standard::Unused)),
    ("taskName", Name::Standard(Standard::Unused)),
    (
        TIMESTAMP,
        Name::Fixed {
            v1: Some(0),
            v0: None,
        },
    ),
    (
        VERSION,
        Name::Fixed {
            v1: Some(1),
            v0: None,
        },
    ),
    (
        HOST,
        Name::Fixed {
            v1: Some(3),
            v0: None,
        },
    ),
    (
        PATH,
        Name::Fixed {
            v1: Some(4),
            v0: None,
        },
    ),
    (
        TYPE,
        Name::Fixed {
            v1: Some(5),
            v0: None,
        },
    ),
    (
        LOGGER,
        Name::Fixed {
            v1: Some(7),
            v0: Some(1),
        },
    ),
];

/// Most names of one length in [`NAME_LIST`].
const BUCKET_MAX: usize = 8;

/// The names of one length, by fingerprint.
#[derive(Clone, Copy)]
struct Bucket {
    /// Each name's fingerprint and its slots, indexed by `LogstashVersion as usize`.
    entries: [(u128, [u8; 2]); BUCKET_MAX],
    len: usize,
}

/// The class of a name in [`NAME_LIST`].
const fn name_class(kind: Name, version: LogstashVersion) -> Class {
    match (kind, version) {
        (Name::Standard(standard), _) => Class::Standard(standard),
        (Name::Fixed { v1: Some(slot), .. }, LogstashVersion::V1)
        | (Name::Fixed { v0: Some(slot), .. }, LogstashVersion::V0) => Class::Fixed(slot),
        (Name::Fixed { .. }, _) => Class::Extra,
    }
}

/// [`NAME_LIST`] by length (0 to 16), built at compile time.
static NAMES: [Bucket; 17] = {
    let empty = Bucket {
        entries: [(0, [0; 2]); BUCKET_MAX],
        len: 0,
    };
    let mut buckets = [empty; 17];
    let mut i = 0;
    while i < NAME_LIST.len() {
        let (name, kind) = NAME_LIST[i];
        let bucket = &mut buckets[name.len()];
        let slots = [
            name_class(kind, LogstashVersion::V0).slot() as u8,
            name_class(kind, LogstashVersion::V1).slot() as u8,
        ];
        bucket.entries[bucket.len] = (fingerprint_const(name.as_bytes()), slots);
        bucket.len += 1;
        i += 1;
    }
    buckets
};

/// A key of at most 16 bytes as one integer: two overlapping little-endian loads cover every
/// byte, so among keys of one length equal fingerprints mean equal keys. `None` above 16.
#[inline]
fn fingerprint(key: &[u8]) -> Option<u128> {
    let n = key.len();
    let (lo, hi) = match n {
        0 => (0, 0),
        1..=3 => (
            u64::from(key[0]) | u64::from(key[n / 2]) << 8 | u64::from(key[n - 1]) << 16,
            0,
        ),
        4..=7 => (
            u64::from(u32::from_le_bytes(key[..4].try_into().ok()?)),
            u64::from(u32::from_le_bytes(key[n - 4..].try_into().ok()?)),
        ),
        8..=16 => (
            u64::from_le_bytes(key[..8].try_into().ok()?),
            u64::from_le_bytes(key[n - 8..].try_into().ok()?),
        ),
        _ => return None,
    };
    Some(u128::from(lo) | u128::from(hi) << 64)
}

/// [`fingerprint`] for the names in [`NAMES`], at compile time.
const fn fingerprint_const(key: &[u8]) -> u128 {
    const fn load(key: &[u8], at: usize, width: usize) -> u64 {
        let mut value = 0;
        let mut i = 0;
        while i < width {
            value |= (key[at + i] as u64) << (8 * i);
            i += 1;
        }
        value
    }
    let n = key.len();
    let (lo, hi) = match n {
        0 => (0, 0),
        1..=3 => (
            key[0] as u64 | (key[n / 2] as u64) << 8 | (key[n - 1] as u64) << 16,
            0,
        ),
        4..=7 => (load(key, 0, 4), load(key, n - 4, 4)),
        8..=16 => (load(key, 0, 8), load(key, n - 8, 8)),
        _ => panic!("names are at most 16 bytes"),
    };
    lo as u128 | (hi as u128) << 64
}

/// The record attributes an event needs, found in one pass.
#[derive(Default)]
struct Parts<'r, 'a> {
    /// The last value of each kind of key, by [`Class::slot`].
    slots: [Option<&'r Value<'a>>; SLOTS],
    /// How many entries are extras, duplicates included.
    extras: usize,
    /// Bit `i` set when `items[i]` is an extra, for the first [`MASKED`] entries (the writer
    /// classifies later ones again).
    extra_mask: u64,
}

/// Entries whose class [`Parts::extra_mask`] remembers.
const MASKED: usize = 64;

impl<'r, 'a> Parts<'r, 'a> {
    fn collect(items: &'r [(Value<'a>, Value<'a>)], version: LogstashVersion) -> Self {
        let mut parts = Parts::default();
        for (i, (k, v)) in items.iter().enumerate() {
            let slot = match k {
                Value::Str(key) => classify(key, version),
                other => classify(&key_text(other), version),
            };
            // Later duplicates overwrite earlier ones, as in a Python dict. Unused and extra
            // entries have slots too, which nothing reads: a store by index, where a `match`
            // on the kind of key was an indirect jump that mispredicted.
            parts.slots[slot] = Some(v);
            if slot == EXTRA_SLOT {
                parts.extras += 1;
                if i < MASKED {
                    parts.extra_mask |= 1 << i;
                }
            }
        }
        parts
    }

    /// The last value of a standard attribute.
    #[inline(always)]
    fn get(&self, standard: Standard) -> Option<&'r Value<'a>> {
        self.slots[standard as usize]
    }

    /// The extra that replaces fixed field `i` (of `FIXED_V*`).
    #[inline(always)]
    fn fixed(&self, i: usize) -> Option<&'r Value<'a>> {
        self.slots[FIXED_SLOT + i]
    }

    /// [`EventFormat::is_record`] from the attributes found: string `name` and `levelname`,
    /// `msg` or `message`, numeric `created`.
    fn is_record(&self) -> bool {
        matches!(self.get(Standard::Name), Some(Value::Str(_)))
            && matches!(self.get(Standard::Levelname), Some(Value::Str(_)))
            && self.message().is_some()
            && matches!(
                self.get(Standard::Created),
                Some(Value::Int(_) | Value::Float(_))
            )
    }

    /// `msg` (already formatted by the sender), else `message`.
    fn message(&self) -> Option<&'r Value<'a>> {
        self.get(Standard::Msg).or(self.get(Standard::Message))
    }

    /// Whether `items[i]`, with key `key`, is an extra.
    #[inline(always)]
    fn is_extra(&self, i: usize, key: &Value<'_>, version: LogstashVersion) -> bool {
        if i < MASKED {
            return self.extra_mask & (1 << i) != 0;
        }
        is_extra_key(key, version)
    }
}

/// Whether a record entry with key `key` is an extra (past the entries [`Parts`] remembers).
#[inline(never)]
fn is_extra_key(key: &Value<'_>, version: LogstashVersion) -> bool {
    let slot = match key {
        Value::Str(key) => classify(key, version),
        other => classify(&key_text(other), version),
    };
    slot == EXTRA_SLOT
}

/// Writes the exception and stack fields that follow the extras, when the record has them.
fn write_debug_fields(parts: &Parts<'_, '_>, out: &mut Vec<u8>) -> Result<(), EventError> {
    if let Some(Value::Str(exc_text)) = parts.get(Standard::ExcText) {
        if !exc_text.is_empty() {
            out.push(b',');
            write_key(EXC_INFO, out);
            write_str(exc_text, out);
            out.push(b',');
            write_key(FILENAME, out);
            write_opt(parts.get(Standard::Filename), out)?;
            out.push(b',');
            write_key(LINENO, out);
            write_opt(parts.get(Standard::Lineno), out)?;
        }
    }
    if let Some(Value::Str(stack_info)) = parts.get(Standard::StackInfo) {
        if !stack_info.is_empty() {
            out.push(b',');
            write_key(STACK_INFO, out);
            write_str(stack_info, out);
        }
    }
    Ok(())
}

/// Writes `"key":value` for every entry `select`ed by its index and key, each distinct key once:
/// at its first position, with its last value. `count` is how many entries `select` accepts;
/// `first` says whether no member has been written yet (no leading comma).
///
/// Equal keys are selected alike (selection depends on the key's text), so duplicates are
/// only looked for among the selected entries.
fn write_members(
    items: &[(Value<'_>, Value<'_>)],
    count: usize,
    select: impl Fn(usize, &Value<'_>) -> bool,
    first: &mut bool,
    out: &mut Vec<u8>,
) -> Result<(), EventError> {
    let mut member = |key: &str, value: &Value<'_>, out: &mut Vec<u8>| {
        if !*first {
            out.push(b',');
        }
        *first = false;
        write_str(key, out);
        out.push(b':');
        write_value(value, out, 1)
    };
    if count <= LINEAR_DEDUP_MAX {
        // The selected entries, each with a digest of its key: keys are compared only when
        // their digests match, which among distinct keys is almost never.
        let mut picked = [(0, 0); LINEAR_DEDUP_MAX];
        let mut n = 0;
        for (i, (k, _)) in items.iter().enumerate() {
            if n < LINEAR_DEDUP_MAX && select(i, k) {
                picked[n] = (i, key_digest(k));
                n += 1;
            }
        }
        let picked = &picked[..n];
        let same = |key: &str, digest: u64, &(j, d): &(usize, u64)| {
            d == digest && key_is(&items[j].0, key)
        };
        for (p, &(i, digest)) in picked.iter().enumerate() {
            let (k, v) = &items[i];
            let key = key_text(k);
            if picked[..p].iter().any(|e| same(&key, digest, e)) {
                continue;
            }
            let last = picked[p + 1..].iter().rev().find(|e| same(&key, digest, e));
            member(&key, last.map_or(v, |&(j, _)| &items[j].1), out)?;
        }
    } else {
        // Many extras: index the last occurrence of each key; the first occurrence takes it.
        let mut last: HashMap<Cow<'_, str>, usize> = HashMap::with_capacity(count);
        for (i, (k, _)) in items.iter().enumerate() {
            if select(i, k) {
                last.insert(key_text(k), i);
            }
        }
        for (k, _) in items {
            let key = key_text(k);
            if let Some(i) = last.remove(key.as_ref()) {
                member(&key, &items[i].1, out)?;
            }
        }
    }
    Ok(())
}

/// A digest of the text dict key `key` is written as, equal for equal texts: its length and
/// up to 16 of its bytes (all of a short key; the first and last 8 of a long one).
fn key_digest(key: &Value<'_>) -> u64 {
    let digest = |text: &str| {
        let (lo, hi) = short_words(text.as_bytes());
        lo ^ hi.rotate_left(29) ^ text.len() as u64
    };
    match key {
        Value::Str(s) => digest(s),
        other => digest(&key_text(other)),
    }
}

/// Whether dict key `key` is written as `text`.
fn key_is(key: &Value<'_>, text: &str) -> bool {
    match key {
        Value::Str(s) => s == text,
        other => key_text(other) == text,
    }
}

/// The text a dict key is written as: what Python's `json.dumps` makes of str, int, float,
/// bool and None keys; the repr of anything else (where `json.dumps` would raise).
fn key_text<'k>(key: &'k Value<'_>) -> Cow<'k, str> {
    match key {
        Value::Str(s) => Cow::Borrowed(s),
        Value::Int(i) => Cow::Owned(itoa::Buffer::new().format(*i).to_owned()),
        Value::BigInt(digits) => Cow::Borrowed(digits),
        Value::Bool(true) => Cow::Borrowed("true"),
        Value::Bool(false) => Cow::Borrowed("false"),
        Value::None => Cow::Borrowed("null"),
        // json.dumps: float.__repr__, and its own spellings of the non-finite values.
        Value::Float(f) if f.is_nan() => Cow::Borrowed("NaN"),
        Value::Float(f) if *f == f64::INFINITY => Cow::Borrowed("Infinity"),
        Value::Float(f) if *f == f64::NEG_INFINITY => Cow::Borrowed("-Infinity"),
        other => {
            let mut text = String::new();
            repr(other, &mut text);
            Cow::Owned(text)
        }
    }
}

/// Writes `created` as `@timestamp`.
fn write_created(created: Option<&Value<'_>>, out: &mut Vec<u8>) -> Result<(), EventError> {
    match created {
        Some(Value::Float(t)) => write_timestamp(*t, out),
        Some(Value::Int(t)) if (MIN_SECONDS..=MAX_SECONDS).contains(t) => {
            write_civil(*t, 0, out);
            Ok(())
        }
        Some(Value::Int(_) | Value::BigInt(_)) => Err(EventError::TimestampOutOfRange),
        _ => Err(EventError::NotARecord),
    }
}

/// Writes the message: strings as they are, other values rendered as a string.
fn write_message(message: Option<&Value<'_>>, out: &mut Vec<u8>) {
    match message {
        Some(v) => write_as_str(v, out),
        None => out.extend_from_slice(b"null"),
    }
}

/// Writes a value, or `null` when it is missing.
fn write_opt(value: Option<&Value<'_>>, out: &mut Vec<u8>) -> Result<(), EventError> {
    match value {
        Some(v) => write_value(v, out, 1),
        None => {
            out.extend_from_slice(b"null");
            Ok(())
        }
    }
}

/// Writes `value` as JSON; values JSON has no form for become strings of their repr.
///
/// NaN and infinite floats become `null` (Logstash rejects Python's `NaN`/`Infinity`).
///
/// # Errors
///
/// [`EventError::TooDeep`] when lists and dicts nest deeper than [`MAX_DEPTH`] below `depth`.
pub fn write_value(value: &Value<'_>, out: &mut Vec<u8>, depth: usize) -> Result<(), EventError> {
    match value {
        Value::None => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
        Value::BigInt(digits) if is_integer(digits) => out.extend_from_slice(digits.as_bytes()),
        Value::Float(f) if f.is_finite() => {
            out.extend_from_slice(ryu::Buffer::new().format_finite(*f).as_bytes())
        }
        Value::Float(_) => out.extend_from_slice(b"null"),
        Value::Str(s) => write_str(s, out),
        Value::List(items) | Value::Tuple(items) => {
            if depth >= MAX_DEPTH {
                return Err(EventError::TooDeep);
            }
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out, depth + 1)?;
            }
            out.push(b']');
        }
        Value::Dict(items) => {
            if depth >= MAX_DEPTH {
                return Err(EventError::TooDeep);
            }
            out.push(b'{');
            for (i, (k, v)) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                match k {
                    Value::Str(s) => write_str(s, out),
                    other => write_str(&key_text(other), out),
                }
                out.push(b':');
                write_value(v, out, depth + 1)?;
            }
            out.push(b'}');
        }
        Value::BigInt(_)
        | Value::Bytes(_)
        | Value::Set(_)
        | Value::Global(_)
        | Value::Object(_) => {
            let mut text = String::new();
            repr(value, &mut text);
            write_str(&text, out);
        }
    }
    Ok(())
}

/// Whether `digits` is a JSON integer, so a [`Value::BigInt`] can be written bare.
fn is_integer(digits: &str) -> bool {
    let unsigned = digits.strip_prefix('-').unwrap_or(digits);
    !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit())
}

/// Writes `value` as a JSON string: strings as they are, JSON scalars as their JSON text
/// (`5`, `1.5`, `true`, `null`), anything else as its repr.
fn write_as_str(value: &Value<'_>, out: &mut Vec<u8>) {
    match value {
        Value::Str(s) => write_str(s, out),
        other => write_str(&stringify(other), out),
    }
}

/// The text [`write_as_str`] writes for `value`.
fn stringify<'v>(value: &'v Value<'_>) -> Cow<'v, str> {
    match value {
        Value::Str(s) => Cow::Borrowed(s),
        Value::Int(i) => Cow::Owned(itoa::Buffer::new().format(*i).to_owned()),
        Value::BigInt(digits) => Cow::Borrowed(digits),
        Value::Float(f) if f.is_finite() => {
            Cow::Owned(ryu::Buffer::new().format_finite(*f).to_owned())
        }
        Value::Bool(true) => Cow::Borrowed("true"),
        Value::Bool(false) => Cow::Borrowed("false"),
        Value::None => Cow::Borrowed("null"),
        other => {
            let mut text = String::new();
            repr(other, &mut text);
            Cow::Owned(text)
        }
    }
}

/// Writes `"key":` for a field name that needs no escaping (the `const` names above).
fn write_key(key: &str, out: &mut Vec<u8>) {
    debug_assert!(key.bytes().all(|b| ESCAPE[usize::from(b)] == 0));
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

/// Writes `s` as a JSON string (RFC 8259 section 7): `"` and `\` and control characters escaped,
/// everything else, non-ASCII included, copied as UTF-8.
pub fn write_str(s: &str, out: &mut Vec<u8>) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    escape_into(s.as_bytes(), out);
    out.push(b'"');
}

/// For each byte: 0 when it is copied as is, else the letter after the backslash (`u` for
/// `\u00XX`).
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// Appends the escaped body of a JSON string (no quotes), copying runs of safe bytes at once.
///
/// Eight bytes at a time are checked with [`may_need_escape`] and skipped when clean; a word
/// that may hold a byte to escape is then looked at byte by byte.
fn escape_into(bytes: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    if bytes.len() <= 16 {
        // Most keys and values are short: two overlapping words hold all of it.
        let (lo, hi) = short_words(bytes);
        if !may_need_escape(lo) && !may_need_escape(hi) {
            append_short(bytes, lo, hi, out);
            return;
        }
    }
    let mut run = 0;
    let mut i = 0;
    while i < bytes.len() {
        let end = match bytes.get(i..i + 8) {
            Some(word) => {
                let word = u64::from_le_bytes(word.try_into().unwrap_or_default());
                if !may_need_escape(word) {
                    i += 8;
                    continue;
                }
                i + 8
            }
            None => bytes.len(),
        };
        for (j, &b) in bytes.iter().enumerate().take(end).skip(i) {
            let escape = ESCAPE[usize::from(b)];
            if escape == 0 {
                continue;
            }
            out.extend_from_slice(&bytes[run..j]);
            run = j + 1;
            if escape == b'u' {
                out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 0xf)],
                ]);
            } else {
                out.extend_from_slice(&[b'\\', escape]);
            }
        }
        i = end;
    }
    out.extend_from_slice(&bytes[run..]);
}

/// Appends `bytes` (at most 16 of them), given as [`short_words`] loaded them, with two
/// stores: a call to `memcpy` for each key and short value cost more than the copy.
#[inline(always)]
fn append_short(bytes: &[u8], lo: u64, hi: u64, out: &mut Vec<u8>) {
    let n = bytes.len();
    if n < 4 {
        for &b in bytes {
            out.push(b);
        }
        return;
    }
    out.reserve(16);
    let len = out.len();
    // Safety: `reserve` made room for 16 bytes past `len`; the stores cover `len..len + n`
    // (n is 4 to 16) with the bytes `short_words` loaded from those positions of `bytes`,
    // so every byte the new length covers is written.
    unsafe {
        let to = out.as_mut_ptr().add(len);
        if n >= 8 {
            to.cast::<[u8; 8]>().write_unaligned(lo.to_le_bytes());
            to.add(n - 8)
                .cast::<[u8; 8]>()
                .write_unaligned(hi.to_le_bytes());
        } else {
            let [a, b, c, d, e, f, g, h] = lo.to_le_bytes();
            to.cast::<[u8; 4]>().write_unaligned([a, b, c, d]);
            to.add(n - 4)
                .cast::<[u8; 4]>()
                .write_unaligned([e, f, g, h]);
        }
        out.set_len(len + n);
    }
}

/// Every byte of `bytes` (at most 16 of them) in two words, some bytes twice, padded with a
/// byte that needs no escape; of a longer `bytes`, the first and the last eight.
#[inline]
fn short_words(bytes: &[u8]) -> (u64, u64) {
    const PAD: u64 = 0x6161_6161_6161_6161; // "aaaaaaaa"
    let n = bytes.len();
    let word = |at: usize| {
        bytes
            .get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map_or(PAD, u64::from_le_bytes)
    };
    let half = |at: usize| {
        bytes
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map_or(0x6161_6161, u32::from_le_bytes)
    };
    match n {
        0 => (PAD, PAD),
        1..=3 => {
            let three =
                u64::from(bytes[0]) | u64::from(bytes[n / 2]) << 8 | u64::from(bytes[n - 1]) << 16;
            (three | PAD << 24, PAD)
        }
        4..=7 => (u64::from(half(0)) | u64::from(half(n - 4)) << 32, PAD),
        _ => (word(0), word(n.saturating_sub(8))),
    }
}

/// Whether any of the eight bytes in `word` may be `"`, `\` or below 0x20 (no false
/// negatives; the byte-wise pass after it is exact).
#[inline]
fn may_need_escape(word: u64) -> bool {
    escape_bytes(word) != 0
}

/// The bytes of `word` that JSON text must escape (`"`, `\`, below 0x20), as the high bit of
/// each; exact up to the first one (a borrow can flag bytes above it, never below). The classic
/// "has zero byte" and "has byte less than" bit tricks.
#[inline(always)]
pub(crate) fn escape_bytes(word: u64) -> u64 {
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    let quote = has_zero(word ^ (ONES * u64::from(b'"')));
    let backslash = has_zero(word ^ (ONES * u64::from(b'\\')));
    control | quote | backslash
}

/// One in each byte of a word.
pub(crate) const ONES: u64 = 0x0101_0101_0101_0101;
/// The high bit of each byte of a word.
pub(crate) const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Writes Unix time `unix_seconds` as a JSON string in UTC, `"2024-05-01T12:00:03.250000Z"`.
///
/// The instant is the one Python's `datetime.utcfromtimestamp` gives: the fraction is rounded
/// to the nearest microsecond, ties to even, carrying into the seconds.
///
/// # Errors
///
/// [`EventError::TimestampOutOfRange`] for NaN, infinities and times outside years 1 to 9999
/// (where Python raises too); nothing is written then.
pub fn write_timestamp(unix_seconds: f64, out: &mut Vec<u8>) -> Result<(), EventError> {
    let (seconds, micros) = split_seconds(unix_seconds).ok_or(EventError::TimestampOutOfRange)?;
    write_civil(seconds, micros, out);
    Ok(())
}

/// Whole seconds and microseconds of `t` as CPython's `_PyTime_DoubleToDenominator` splits
/// them (`modf`, round half to even, carry), or `None` outside `datetime`'s range.
fn split_seconds(t: f64) -> Option<(i64, u32)> {
    if !t.is_finite() {
        return None;
    }
    let mut whole = t.trunc();
    let mut micros = (t.fract() * 1e6).round_ties_even();
    if micros >= 1e6 {
        micros -= 1e6;
        whole += 1.0;
    } else if micros < 0.0 {
        micros += 1e6;
        whole -= 1.0;
    }
    // Range check on the float, so the casts below cannot saturate.
    if !(MIN_SECONDS as f64..=MAX_SECONDS as f64).contains(&whole) {
        return None;
    }
    // `micros` is a whole number in 0..1e6 here (-0.0 casts to 0).
    Some((whole as i64, micros as u32))
}

/// Writes `now` like [`write_timestamp`], to the microsecond (truncated), clamped to years 1 to
/// 9999.
pub fn write_system_time(now: SystemTime, out: &mut Vec<u8>) {
    let (seconds, micros) = match now.duration_since(UNIX_EPOCH) {
        Ok(after) => (
            i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
            after.subsec_micros(),
        ),
        Err(before) => {
            let before = before.duration();
            let seconds = i64::try_from(before.as_secs()).map_or(i64::MIN, |s| -s);
            // Round down to the microsecond, like the positive side.
            match before.subsec_nanos().div_ceil(1000) {
                0 => (seconds, 0),
                us => (seconds.saturating_sub(1), 1_000_000 - us),
            }
        }
    };
    if seconds < MIN_SECONDS {
        write_civil(MIN_SECONDS, 0, out);
    } else if seconds > MAX_SECONDS {
        write_civil(MAX_SECONDS, 999_999, out);
    } else {
        write_civil(seconds, micros, out);
    }
}

/// Writes `"YYYY-MM-DDTHH:MM:SS.ffffffZ"` for `seconds` (within years 1 to 9999) plus `micros`.
fn write_civil(seconds: i64, micros: u32, out: &mut Vec<u8>) {
    debug_assert!((MIN_SECONDS..=MAX_SECONDS).contains(&seconds) && micros < 1_000_000);
    let mut text = *b"\"0000-00-00T00:00:00.000000Z\"";
    text[..SECOND_TEXT].copy_from_slice(&second_text(seconds));
    put_digits(&mut text[21..27], micros);
    out.extend_from_slice(&text);
}

/// Bytes of `"YYYY-MM-DDTHH:MM:SS`.
const SECOND_TEXT: usize = 20;

/// `"YYYY-MM-DDTHH:MM:SS` for `seconds`. The last one is kept per thread: records come in
/// time order, nearly all in the second of the one before, and the calendar arithmetic was
/// 2% of the proxy's CPU.
fn second_text(seconds: i64) -> [u8; SECOND_TEXT] {
    thread_local! {
        // No valid time is i64::MIN seconds (the callers check years 1 to 9999).
        static LAST: Cell<(i64, [u8; SECOND_TEXT])> =
            const { Cell::new((i64::MIN, [0; SECOND_TEXT])) };
    }
    LAST.with(|last| {
        let (cached, text) = last.get();
        if cached == seconds {
            return text;
        }
        let days = seconds.div_euclid(86_400);
        // In 0..86400, so the narrowing is exact.
        let of_day = seconds.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        let mut text = *b"\"0000-00-00T00:00:00";
        // Years are 1..=9999 within the range checked by the callers.
        put_digits(&mut text[1..5], year.clamp(0, 9999) as u32);
        put_digits(&mut text[6..8], month);
        put_digits(&mut text[9..11], day);
        put_digits(&mut text[12..14], of_day / 3600);
        put_digits(&mut text[15..17], of_day / 60 % 60);
        put_digits(&mut text[18..20], of_day % 60);
        last.set((seconds, text));
        text
    })
}

/// Writes the last `digits.len()` decimal digits of `n`, zero-padded.
#[inline(always)]
fn put_digits(digits: &mut [u8], mut n: u32) {
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// The proleptic Gregorian (year, month, day) of a day count from 1970-01-01.
///
/// Howard Hinnant's `civil_from_days` (<https://howardhinnant.github.io/date_algorithms.html>).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097) as u32; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March first
    let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = i64::from(yoe) + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::json::JsonDecoder;
    use crate::value::{Global, Object};
    use serde_json::json;
    use std::time::Duration;

    fn s(text: &str) -> Value<'static> {
        Value::Str(Cow::Owned(text.to_owned()))
    }

    fn dict(items: Vec<(&str, Value<'static>)>) -> Value<'static> {
        Value::Dict(items.into_iter().map(|(k, v)| (s(k), v)).collect())
    }

    /// A `LogRecord.__dict__` in CPython 3.11's attribute order (`vars(makeLogRecord(...))`).
    fn record_items() -> Vec<(&'static str, Value<'static>)> {
        vec![
            ("name", s("app.db")),
            ("msg", s("query failed")),
            ("args", Value::None),
            ("levelname", s("ERROR")),
            ("levelno", Value::Int(40)),
            ("pathname", s("/srv/app/db.py")),
            ("filename", s("db.py")),
            ("module", s("db")),
            ("exc_info", Value::None),
            ("exc_text", Value::None),
            ("stack_info", Value::None),
            ("lineno", Value::Int(42)),
            ("funcName", s("query")),
            ("created", Value::Float(1714564803.25)),
            ("msecs", Value::Float(250.0)),
            ("relativeCreated", Value::Float(12.5)),
            ("thread", Value::Int(140_000)),
            ("threadName", s("MainThread")),
            ("processName", s("MainProcess")),
            ("process", Value::Int(4242)),
        ]
    }

    fn with(
        mut items: Vec<(&'static str, Value<'static>)>,
        extra: Vec<(&'static str, Value<'static>)>,
    ) -> Value<'static> {
        for (k, v) in extra {
            match items.iter_mut().find(|(key, _)| *key == k) {
                Some(slot) => slot.1 = v,
                None => items.push((k, v)),
            }
        }
        dict(items)
    }

    fn format(version: LogstashVersion, tags: &[&str]) -> EventFormat {
        EventFormat::new(EventConfig {
            version,
            host: "web-1".into(),
            message_type: "python".into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
        })
    }

    /// Parses an event with serde_json (validity, values) and lists the keys of the object at
    /// `path` in order, duplicates included, with our own decoder (serde_json's map sorts).
    fn parse(out: &[u8], path: &[&str]) -> (serde_json::Value, Vec<String>) {
        let parsed: serde_json::Value = serde_json::from_slice(out)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(out)));
        let mut bytes = out.to_vec();
        let mut decoder = JsonDecoder::new();
        let mut value = &decoder.decode(&mut bytes).unwrap();
        for key in path {
            value = value.get(key).unwrap();
        }
        let Value::Dict(items) = value else {
            panic!("not an object")
        };
        let keys = items
            .iter()
            .map(|(k, _)| k.as_str().unwrap().to_owned())
            .collect();
        (parsed, keys)
    }

    fn record_event(format: &EventFormat, record: &Value<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        format.write_record(record, &mut out).unwrap();
        out
    }

    fn timestamp(t: f64) -> Option<String> {
        let mut out = Vec::new();
        write_timestamp(t, &mut out).ok()?;
        let text = String::from_utf8(out).unwrap();
        Some(text.trim_matches('"').to_owned())
    }

    #[test]
    fn v1_fields_and_order() {
        let record = with(
            record_items(),
            vec![("user", s("ana")), ("request_id", Value::Int(7))],
        );
        let out = record_event(&format(LogstashVersion::V1, &["prod", "eu"]), &record);
        let (event, keys) = parse(&out, &[]);
        assert_eq!(
            keys,
            [
                "@timestamp",
                "@version",
                "message",
                "host",
                "path",
                "tags",
                "type",
                "levelname",
                "logger",
                "user",
                "request_id"
            ]
        );
        assert_eq!(
            event,
            json!({
                "@timestamp": "2024-05-01T12:00:03.250000Z",
                "@version": 1,
                "message": "query failed",
                "host": "web-1",
                "path": "/srv/app/db.py",
                "tags": ["prod", "eu"],
                "type": "python",
                "levelname": "ERROR",
                "logger": "app.db",
                "user": "ana",
                "request_id": 7,
            })
        );
    }

    #[test]
    fn v0_fields_and_order() {
        let record = with(
            record_items(),
            vec![("user", s("ana")), ("request_id", Value::Int(7))],
        );
        let out = record_event(&format(LogstashVersion::V0, &["prod"]), &record);
        let (event, keys) = parse(&out, &[]);
        assert_eq!(
            keys,
            [
                "@timestamp",
                "@message",
                "@source",
                "@source_host",
                "@source_path",
                "@tags",
                "@type",
                "@fields"
            ]
        );
        let (_, field_keys) = parse(&out, &["@fields"]);
        assert_eq!(field_keys, ["levelname", "logger", "user", "request_id"]);
        assert_eq!(
            event,
            json!({
                "@timestamp": "2024-05-01T12:00:03.250000Z",
                "@message": "query failed",
                // python-logstash's "%s://%s/%s": the absolute path doubles the slash.
                "@source": "python://web-1//srv/app/db.py",
                "@source_host": "web-1",
                "@source_path": "/srv/app/db.py",
                "@tags": ["prod"],
                "@type": "python",
                "@fields": {"levelname": "ERROR", "logger": "app.db", "user": "ana", "request_id": 7},
            })
        );
    }

    #[test]
    fn extras_colliding_with_fixed_fields_replace_them_in_place() {
        let record = with(
            record_items(),
            vec![
                ("host", s("from-record")),
                ("color", s("red")),
                ("@timestamp", s("custom time")),
                ("type", Value::Int(3)),
                ("logger", s("other")),
                ("path", Value::None),
                ("@version", s("2")),
            ],
        );
        let out = record_event(&format(LogstashVersion::V1, &[]), &record);
        let (event, keys) = parse(&out, &[]);
        assert_eq!(
            keys,
            [
                "@timestamp",
                "@version",
                "message",
                "host",
                "path",
                "tags",
                "type",
                "levelname",
                "logger",
                "color"
            ]
        );
        assert_eq!(event["@timestamp"], "custom time");
        assert_eq!(event["@version"], "2");
        assert_eq!(event["host"], "from-record");
        assert_eq!(event["path"], serde_json::Value::Null);
        assert_eq!(event["type"], 3);
        assert_eq!(event["logger"], "other");
        assert_eq!(event["message"], "query failed");
        assert_eq!(event["tags"], json!([]));

        // v0: only `@fields.logger` can collide; the other names are ordinary extras there.
        let out = record_event(&format(LogstashVersion::V0, &[]), &record);
        let (event, keys) = parse(&out, &["@fields"]);
        assert_eq!(
            keys,
            [
                "levelname",
                "logger",
                "host",
                "color",
                "@timestamp",
                "type",
                "path",
                "@version"
            ]
        );
        assert_eq!(event["@fields"]["logger"], "other");
        assert_eq!(event["@timestamp"], "2024-05-01T12:00:03.250000Z");
        assert_eq!(event["@source_host"], "web-1");
    }

    #[test]
    fn duplicate_keys_written_once_first_position_last_value() {
        let mut items = record_items();
        items.extend([
            ("a", Value::Int(1)),
            ("b", Value::Int(2)),
            ("a", Value::Int(3)),
            ("host", s("h1")),
            ("host", s("h2")),
        ]);
        let mut record = dict(items);
        // An int key written as "1" collides with the string key "1".
        if let Value::Dict(items) = &mut record {
            items.push((s("1"), s("str")));
            items.push((Value::Int(1), s("int")));
        }
        let out = record_event(&format(LogstashVersion::V1, &[]), &record);
        let (event, keys) = parse(&out, &[]);
        assert_eq!(&keys[9..], ["a", "b", "1"]);
        assert_eq!(event["a"], 3);
        assert_eq!(event["1"], "int");
        assert_eq!(event["host"], "h2");
        assert_eq!(keys.iter().filter(|k| *k == "host").count(), 1);
    }

    /// Long keys that differ only in the middle share a digest: they are told apart by their
    /// text, and a repeated one is still written once.
    #[test]
    fn keys_with_one_digest_are_compared_in_full() {
        let mut items = record_items();
        items.extend([
            ("request_id_a_of_the_call", Value::Int(1)),
            ("request_id_b_of_the_call", Value::Int(2)),
            ("request_id_a_of_the_call", Value::Int(3)),
        ]);
        let out = record_event(&format(LogstashVersion::V1, &[]), &dict(items));
        let (event, keys) = parse(&out, &[]);
        assert_eq!(
            &keys[9..],
            ["request_id_a_of_the_call", "request_id_b_of_the_call"]
        );
        assert_eq!(event["request_id_a_of_the_call"], 3);
        assert_eq!(event["request_id_b_of_the_call"], 2);
    }

    #[test]
    fn many_extras_use_the_hashed_dedup() {
        let mut items = record_items();
        let names: Vec<&'static str> = (0..100)
            .map(|i| &*Box::leak(format!("x{}", i % 60).into_boxed_str()))
            .collect();
        for (i, name) in names.iter().enumerate() {
            items.push((name, Value::Int(i as i64)));
        }
        let out = record_event(&format(LogstashVersion::V1, &[]), &dict(items));
        let (event, keys) = parse(&out, &[]);
        assert_eq!(keys.len(), 9 + 60);
        for i in 0..60 {
            assert_eq!(keys[9 + i], format!("x{i}"));
            let last = if i < 40 { i + 60 } else { i };
            assert_eq!(event[&keys[9 + i]], last);
        }
    }

    #[test]
    fn tags_merge() {
        let f = format(LogstashVersion::V1, &["prod"]);
        let cases: Vec<(Value<'static>, serde_json::Value)> = vec![
            (Value::List(vec![s("a"), s("b")]), json!(["prod", "a", "b"])),
            (Value::Tuple(vec![s("t")]), json!(["prod", "t"])),
            (s("single"), json!(["prod", "single"])),
            (
                Value::List(vec![
                    Value::Int(5),
                    Value::None,
                    Value::Float(1.5),
                    Value::Bool(true),
                ]),
                json!(["prod", "5", "null", "1.5", "true"]),
            ),
            (Value::Dict(vec![]), json!(["prod"])),
            (Value::None, json!(["prod"])),
        ];
        for (tags, expected) in cases {
            let record = with(record_items(), vec![("tags", tags)]);
            let (event, keys) = parse(&record_event(&f, &record), &[]);
            assert_eq!(event["tags"], expected);
            assert_eq!(keys.iter().filter(|k| *k == "tags").count(), 1);
        }
        // No configured tags: no leading comma.
        let record = with(
            record_items(),
            vec![("tags", Value::List(vec![s("a"), s("b")]))],
        );
        let out = record_event(&format(LogstashVersion::V1, &[]), &record);
        assert_eq!(parse(&out, &[]).0["tags"], json!(["a", "b"]));
        let out = record_event(&format(LogstashVersion::V0, &[]), &record);
        assert_eq!(parse(&out, &[]).0["@tags"], json!(["a", "b"]));
    }

    #[test]
    fn exception_and_stack_info() {
        let traceback =
            "Traceback (most recent call last):\n  File \"db.py\", line 42\nValueError: bad";
        let record = with(
            record_items(),
            vec![
                ("exc_text", s(traceback)),
                ("stack_info", s("Stack (most recent call last):\n  x")),
                ("user", s("ana")),
            ],
        );
        let out = record_event(&format(LogstashVersion::V1, &[]), &record);
        let (event, keys) = parse(&out, &[]);
        assert_eq!(
            &keys[9..],
            ["user", "exc_info", "filename", "lineno", "stack_info"]
        );
        assert_eq!(event["exc_info"], traceback);
        assert_eq!(event["filename"], "db.py");
        assert_eq!(event["lineno"], 42);
        assert_eq!(event["stack_info"], "Stack (most recent call last):\n  x");

        let out = record_event(&format(LogstashVersion::V0, &[]), &record);
        let (event, keys) = parse(&out, &["@fields"]);
        assert_eq!(
            keys,
            [
                "levelname",
                "logger",
                "user",
                "exc_info",
                "filename",
                "lineno",
                "stack_info"
            ]
        );
        assert_eq!(event["@fields"]["exc_info"], traceback);

        // Empty or absent exc_text / stack_info: no such fields.
        for (exc, stack) in [(s(""), s("")), (Value::None, Value::None)] {
            let record = with(
                record_items(),
                vec![("exc_text", exc), ("stack_info", stack)],
            );
            let (_, keys) = parse(
                &record_event(&format(LogstashVersion::V1, &[]), &record),
                &[],
            );
            assert_eq!(keys.len(), 9, "{keys:?}");
        }
    }

    #[test]
    fn message_fallbacks_and_non_strings() {
        let f = format(LogstashVersion::V1, &[]);
        let mut items = record_items();
        items.retain(|(k, _)| *k != "msg");
        items.push(("message", s("from message")));
        let (event, _) = parse(&record_event(&f, &dict(items.clone())), &[]);
        assert_eq!(event["message"], "from message");
        items.retain(|(k, _)| *k != "message");
        let (event, _) = parse(&record_event(&f, &dict(items)), &[]);
        assert_eq!(event["message"], serde_json::Value::Null);

        let mut bytes_repr = String::new();
        repr(&Value::Bytes(Cow::Borrowed(b"raw")), &mut bytes_repr);
        let mut list_repr = String::new();
        repr(&Value::List(vec![Value::Int(1)]), &mut list_repr);
        for (msg, expected) in [
            (Value::Int(-12), json!("-12")),
            (Value::Float(2.5), json!("2.5")),
            (Value::Bool(false), json!("false")),
            (Value::None, json!("null")),
            (
                Value::BigInt("123456789012345678901234567890".into()),
                json!("123456789012345678901234567890"),
            ),
            (Value::Bytes(Cow::Borrowed(b"raw")), json!(bytes_repr)),
            (Value::List(vec![Value::Int(1)]), json!(list_repr)),
        ] {
            let record = with(record_items(), vec![("msg", msg)]);
            assert_eq!(
                parse(&record_event(&f, &record), &[]).0["message"],
                expected
            );
        }
    }

    #[test]
    fn values_as_json() {
        let global = Global {
            module: Cow::Borrowed("datetime"),
            name: Cow::Borrowed("datetime"),
        };
        let object = Value::Object(Box::new(Object {
            class: global.clone(),
            args: vec![Value::Int(2024)],
            kwargs: vec![],
            state: None,
            items: vec![],
        }));
        let reprs: Vec<String> = [
            Value::Bytes(Cow::Borrowed(b"\x00\xff")),
            Value::Set(vec![Value::Int(1)]),
            Value::Global(Box::new(global)),
            object.clone(),
            Value::Tuple(vec![Value::Int(1)]),
            Value::Float(0.5),
        ]
        .iter()
        .map(|v| {
            let mut text = String::new();
            repr(v, &mut text);
            text
        })
        .collect();
        let value = Value::Dict(vec![
            (s("int"), Value::Int(i64::MIN)),
            (s("float"), Value::Float(0.1)),
            (s("nan"), Value::Float(f64::NAN)),
            (s("inf"), Value::Float(f64::NEG_INFINITY)),
            (s("tuple"), Value::Tuple(vec![Value::Int(1), s("x")])),
            (s("bytes"), Value::Bytes(Cow::Borrowed(b"\x00\xff"))),
            (s("set"), Value::Set(vec![Value::Int(1)])),
            (
                s("global"),
                Value::Global(Box::new(Global {
                    module: Cow::Borrowed("datetime"),
                    name: Cow::Borrowed("datetime"),
                })),
            ),
            (s("object"), object),
            (
                s("keys"),
                Value::Dict(vec![
                    (Value::Int(1), Value::Int(1)),
                    (Value::Bool(true), Value::Int(2)),
                    (Value::None, Value::Int(3)),
                    (Value::Float(f64::NAN), Value::Int(4)),
                    (Value::Float(f64::INFINITY), Value::Int(5)),
                    (Value::Tuple(vec![Value::Int(1)]), Value::Int(6)),
                    (Value::Float(0.5), Value::Int(7)),
                ]),
            ),
        ]);
        let mut out = Vec::new();
        write_value(&value, &mut out, 0).unwrap();
        let (parsed, keys) = parse(&out, &["keys"]);
        assert_eq!(
            keys,
            ["1", "true", "null", "NaN", "Infinity", &reprs[4], &reprs[5]]
        );
        assert_eq!(
            parsed,
            json!({
                "int": i64::MIN,
                "float": 0.1,
                "nan": null,
                "inf": null,
                "tuple": [1, "x"],
                "bytes": reprs[0],
                "set": reprs[1],
                "global": reprs[2],
                "object": reprs[3],
                "keys": {"1": 1, "true": 2, "null": 3, "NaN": 4, "Infinity": 5, reprs[4].clone(): 6, reprs[5].clone(): 7},
            })
        );
        // BigInts are bare JSON numbers (simd-json would reject this one, serde_json reads it).
        let mut out = Vec::new();
        let big = "-123456789012345678901234567890";
        write_value(&Value::BigInt(big.into()), &mut out, 0).unwrap();
        assert_eq!(out, big.as_bytes());
        assert!(serde_json::from_slice::<serde_json::Value>(&out)
            .unwrap()
            .is_number());
        // A BigInt that is not digits is never written bare.
        let mut out = Vec::new();
        write_value(&Value::BigInt("1e5,2".into()), &mut out, 0).unwrap();
        assert!(serde_json::from_slice::<serde_json::Value>(&out)
            .unwrap()
            .is_string());
    }

    /// The classification `classify` replaced: a plain match on the key.
    fn classify_reference(key: &str, version: LogstashVersion) -> Class {
        let standard = match key {
            "created" => Standard::Created,
            "msg" => Standard::Msg,
            "message" => Standard::Message,
            "pathname" => Standard::Pathname,
            "tags" => Standard::Tags,
            "levelname" => Standard::Levelname,
            "name" => Standard::Name,
            "exc_text" => Standard::ExcText,
            "filename" => Standard::Filename,
            "lineno" => Standard::Lineno,
            "stack_info" => Standard::StackInfo,
            "args" | "asctime" | "exc_info" | "funcName" | "levelno" | "module" | "msecs"
            | "process" | "processName" | "relativeCreated" | "thread" | "threadName"
            | "taskName" => Standard::Unused,
            _ => {
                let fixed: &[&str] = match version {
                    LogstashVersion::V1 => &FIXED_V1,
                    LogstashVersion::V0 => &FIXED_V0,
                };
                return match fixed.iter().position(|name| *name == key) {
                    Some(slot) => Class::Fixed(slot),
                    None => Class::Extra,
                };
            }
        };
        Class::Standard(standard)
    }

    #[test]
    fn classify_matches_the_plain_match() {
        let mut keys: Vec<String> = NAME_LIST.iter().map(|(k, _)| k.to_string()).collect();
        keys.extend(FIXED_V1.iter().chain(&FIXED_V0).map(|k| k.to_string()));
        // Near misses: every name with one byte changed, cut, or extended, and case changes.
        for name in keys.clone() {
            for i in 0..name.len() {
                let mut bytes = name.clone().into_bytes();
                bytes[i] ^= 0x20;
                keys.push(String::from_utf8_lossy(&bytes).into_owned());
                keys.push(name[..i].to_owned());
            }
            keys.push(format!("{name}x"));
            keys.push(format!("x{name}"));
            keys.push(format!("{name}\0"));
        }
        keys.extend(
            [
                "",
                "a",
                "ab",
                "abc",
                "relativeCreatedX",
                "relativeCreated12",
            ]
            .map(String::from),
        );
        keys.push("é".repeat(8));
        for key in &keys {
            for version in [LogstashVersion::V1, LogstashVersion::V0] {
                assert_eq!(
                    classify(key, version),
                    classify_reference(key, version).slot(),
                    "{key:?} {version:?}"
                );
            }
        }
        for (name, _) in NAME_LIST {
            assert_eq!(
                fingerprint(name.as_bytes()),
                Some(fingerprint_const(name.as_bytes()))
            );
        }
    }

    #[test]
    fn escape_matches_a_byte_at_a_time_escape() {
        fn reference(bytes: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            for &b in bytes {
                match ESCAPE[usize::from(b)] {
                    0 => out.push(b),
                    b'u' => out.extend_from_slice(format!("\\u{:04x}", b).as_bytes()),
                    e => out.extend_from_slice(&[b'\\', e]),
                }
            }
            out
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let alphabet = [
            b'a', b'"', b'\\', 0x00, 0x1f, 0x20, 0x7f, 0x80, 0xc3, 0xff, b'\n', b'!',
        ];
        for len in 0..200 {
            for _ in 0..20 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        // Mostly plain text, so clean words and dirty ones both occur.
                        if state % 8 == 0 {
                            alphabet[(state >> 8) as usize % alphabet.len()]
                        } else {
                            b'a' + (state >> 8) as u8 % 26
                        }
                    })
                    .collect();
                let mut out = b"prefix".to_vec();
                escape_into(&bytes, &mut out);
                assert_eq!(&out[6..], reference(&bytes), "{bytes:?}");
            }
        }
        for b in 0..=255u8 {
            assert_eq!(
                may_need_escape(u64::from_le_bytes([b; 8])),
                ESCAPE[usize::from(b)] != 0,
                "{b:#x}"
            );
        }
    }

    #[test]
    fn escaping_round_trips() {
        let all_controls: String = (0u8..0x20).map(char::from).collect();
        let texts = [
            "plain".to_owned(),
            "quote \" backslash \\ slash /".to_owned(),
            "\n\r\t\u{8}\u{c}".to_owned(),
            all_controls,
            "\u{7f} é ü 日本語 😀 \u{2028}".to_owned(),
            String::new(),
        ];
        for text in &texts {
            let record = with(
                record_items(),
                vec![("msg", s(text)), ("key \"\n\u{1}é", s(text))],
            );
            let out = record_event(&format(LogstashVersion::V1, &[text]), &record);
            // Nothing but printable ASCII and UTF-8 text on the wire: controls are escaped,
            // non-ASCII is not.
            let wire = std::str::from_utf8(&out).unwrap();
            assert!(!wire.bytes().any(|b| b < 0x20), "{wire}");
            assert!(!wire.contains("\\u00e9") && !wire.contains("\\ud83d"));
            let (event, keys) = parse(&out, &[]);
            assert_eq!(event["message"], text.as_str());
            assert_eq!(event["tags"], json!([text]));
            assert_eq!(event["key \"\n\u{1}é"], text.as_str());
            assert_eq!(keys[9], "key \"\n\u{1}é");
        }
        let mut out = Vec::new();
        write_str("a\"b\\c\nd\u{1}\u{1f}é", &mut out);
        assert_eq!(out, "\"a\\\"b\\\\c\\nd\\u0001\\u001fé\"".as_bytes());
    }

    #[test]
    fn timestamps_match_python() {
        // Each expected value is the output of CPython 3.11.7:
        //   python3 -c "import datetime; print(datetime.datetime.utcfromtimestamp(X)
        //               .isoformat(timespec='microseconds'))"
        // (Python's repr of X shown where the literal is not exactly representable.)
        let table: &[(f64, &str)] = &[
            (0.0, "1970-01-01T00:00:00.000000"),
            (1714564803.25, "2024-05-01T12:00:03.250000"),
            // repr 1714564803.9999995: rounds up and carries into the seconds.
            (1714564803.9999995, "2024-05-01T12:00:04.000000"),
            // repr 1714564803.9999993
            (1714564803.9999994, "2024-05-01T12:00:03.999999"),
            (1714564803.0000005, "2024-05-01T12:00:03.000000"),
            // repr 1714564803.0000014
            (1714564803.0000015, "2024-05-01T12:00:03.000001"),
            (1700000000.1234565, "2023-11-14T22:13:20.123456"),
            // repr 1700000000.9999995
            (1700000000.9999996, "2023-11-14T22:13:21.000000"),
            (1.0000005, "1970-01-01T00:00:01.000001"),
            (1e-7, "1970-01-01T00:00:00.000000"),
            // Exact ties round to even.
            (0.5e-6, "1970-01-01T00:00:00.000000"),
            (1.5e-6, "1970-01-01T00:00:00.000002"),
            (2.5e-6, "1970-01-01T00:00:00.000002"),
            // Before 1970.
            (-0.5, "1969-12-31T23:59:59.500000"),
            (-1.5, "1969-12-31T23:59:58.500000"),
            (-5e-7, "1970-01-01T00:00:00.000000"),
            (-1e-7, "1970-01-01T00:00:00.000000"),
            (-1.9999995, "1969-12-31T23:59:58.000001"),
            (-86400.25, "1969-12-30T23:59:59.750000"),
            (-2208988800.0, "1900-01-01T00:00:00.000000"),
            // repr -11644473600.000002
            (-11644473600.000001, "1600-12-31T23:59:59.999998"),
            (-62135596800.0, "0001-01-01T00:00:00.000000"),
            // Leap days and century rules.
            (951782400.5, "2000-02-29T00:00:00.500000"),
            (1582977600.75, "2020-02-29T12:00:00.750000"),
            (1709208000.0, "2024-02-29T12:00:00.000000"),
            (4107542400.123456, "2100-03-01T00:00:00.123456"),
            (1e9, "2001-09-09T01:46:40.000000"),
            (253402300799.0, "9999-12-31T23:59:59.000000"),
            // repr 253402300799.99997
            (253402300799.99998, "9999-12-31T23:59:59.999969"),
        ];
        for &(t, expected) in table {
            assert_eq!(
                timestamp(t).as_deref(),
                Some(&*format!("{expected}Z")),
                "{t:?}"
            );
        }
        // Python raises ValueError ("year 10000/0 is out of range") for these.
        for t in [
            253402300800.0,
            253402300799.9999999,
            -62135596801.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e300,
        ] {
            let mut out = b"keep".to_vec();
            assert_eq!(
                write_timestamp(t, &mut out),
                Err(EventError::TimestampOutOfRange)
            );
            assert_eq!(out, b"keep");
        }
    }

    #[test]
    fn civil_dates_agree_with_day_counting() {
        // Walk every day from 0001-01-01 to 9999-12-31 against a naive calendar.
        let (mut y, mut m, mut d) = (1i64, 1u32, 1u32);
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        for days in (MIN_SECONDS / 86_400)..=(MAX_SECONDS / 86_400) {
            assert_eq!(civil_from_days(days), (y, m, d), "{days}");
            let len = match m {
                2 if leap(y) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn integer_created() {
        let record = with(record_items(), vec![("created", Value::Int(1714564803))]);
        let (event, _) = parse(
            &record_event(&format(LogstashVersion::V1, &[]), &record),
            &[],
        );
        assert_eq!(event["@timestamp"], "2024-05-01T12:00:03.000000Z");
    }

    #[test]
    fn system_time() {
        let cases = [
            (
                UNIX_EPOCH + Duration::new(1714564803, 250_000_999),
                "2024-05-01T12:00:03.250000Z",
            ),
            (
                UNIX_EPOCH - Duration::new(1, 500_000_000),
                "1969-12-31T23:59:58.500000Z",
            ),
            (
                UNIX_EPOCH - Duration::new(0, 1),
                "1969-12-31T23:59:59.999999Z",
            ),
            (UNIX_EPOCH, "1970-01-01T00:00:00.000000Z"),
        ];
        for (now, expected) in cases {
            let mut out = Vec::new();
            write_system_time(now, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), format!("\"{expected}\""));
        }
    }

    #[test]
    fn write_event_fills_missing_fields() {
        let now = UNIX_EPOCH + Duration::from_millis(1714564803250);
        let f = format(LogstashVersion::V1, &["prod"]);
        // What python-logstash's v1 formatter sends.
        let mut sent = br#"{"@timestamp":"2024-01-01T00:00:00.000Z","@version":"1","message":"hi","host":"client","path":"/a.py","tags":["x"],"type":"logstash","level":"INFO","logger_name":"app","n":[1,{"k":null}]}"#.to_vec();
        let original: serde_json::Value = serde_json::from_slice(&sent).unwrap();
        let value = JsonDecoder::new().decode(&mut sent).unwrap();
        let mut out = Vec::new();
        f.write_event(&value, now, &mut out).unwrap();
        let (event, keys) = parse(&out, &[]);
        assert_eq!(event, original);
        assert_eq!(
            keys,
            [
                "@timestamp",
                "@version",
                "message",
                "host",
                "path",
                "tags",
                "type",
                "level",
                "logger_name",
                "n"
            ]
        );

        let event = dict(vec![("message", s("bare")), ("@version", Value::Int(1))]);
        let mut out = Vec::new();
        f.write_event(&event, now, &mut out).unwrap();
        let (event, keys) = parse(&out, &[]);
        assert_eq!(
            keys,
            ["message", "@version", "@timestamp", "host", "type", "tags"]
        );
        assert_eq!(
            event,
            json!({
                "message": "bare",
                "@version": 1,
                "@timestamp": "2024-05-01T12:00:03.250000Z",
                "host": "web-1",
                "type": "python",
                "tags": ["prod"],
            })
        );

        let mut out = Vec::new();
        f.write_event(&Value::Dict(vec![]), now, &mut out).unwrap();
        let (_, keys) = parse(&out, &[]);
        assert_eq!(keys, ["@timestamp", "@version", "host", "type", "tags"]);

        let f0 = format(LogstashVersion::V0, &[]);
        let event = dict(vec![
            ("@message", s("m")),
            ("@type", s("mine")),
            ("a", Value::Int(1)),
            ("a", Value::Int(2)),
        ]);
        let mut out = Vec::new();
        f0.write_event(&event, now, &mut out).unwrap();
        let (event, keys) = parse(&out, &[]);
        assert_eq!(
            keys,
            [
                "@message",
                "@type",
                "a",
                "@timestamp",
                "@source_host",
                "@tags"
            ]
        );
        assert_eq!(
            event,
            json!({
                "@message": "m",
                "@type": "mine",
                "a": 2,
                "@timestamp": "2024-05-01T12:00:03.250000Z",
                "@source_host": "web-1",
                "@tags": [],
            })
        );
    }

    #[test]
    fn write_unparsed_lines() {
        let now = UNIX_EPOCH + Duration::from_millis(1714564803250);
        let mut out = Vec::new();
        format(LogstashVersion::V1, &["prod"]).write_unparsed("not \"json\"\u{1}é", now, &mut out);
        let (event, keys) = parse(&out, &[]);
        assert_eq!(
            keys,
            ["message", "tags", "@timestamp", "@version", "host", "type"]
        );
        assert_eq!(
            event,
            json!({
                "message": "not \"json\"\u{1}é",
                "tags": ["_jsonparsefailure", "prod"],
                "@timestamp": "2024-05-01T12:00:03.250000Z",
                "@version": 1,
                "host": "web-1",
                "type": "python",
            })
        );
        let mut out = Vec::new();
        format(LogstashVersion::V0, &[]).write_unparsed("x", now, &mut out);
        let (event, keys) = parse(&out, &[]);
        assert_eq!(
            keys,
            ["@message", "@tags", "@timestamp", "@source_host", "@type"]
        );
        assert_eq!(event["@tags"], json!(["_jsonparsefailure"]));
        assert_eq!(event["@message"], "x");
    }

    #[test]
    fn appends_after_existing_content() {
        let f = format(LogstashVersion::V1, &[]);
        let mut out = b"prefix".to_vec();
        f.write_record(&dict(record_items()), &mut out).unwrap();
        assert!(out.starts_with(b"prefix{"));
        parse(&out[6..], &[]);
    }

    #[test]
    fn errors_truncate_out() {
        let f = format(LogstashVersion::V1, &["t"]);
        let now = UNIX_EPOCH;
        let mut deep = Value::Int(0);
        for _ in 0..MAX_DEPTH + 5 {
            deep = Value::List(vec![deep]);
        }
        let mut no_created = record_items();
        no_created.retain(|(k, _)| *k != "created");
        let cases: Vec<(Value<'static>, EventError)> = vec![
            (s("not a dict"), EventError::NotARecord),
            (dict(no_created), EventError::NotARecord),
            (
                with(record_items(), vec![("created", s("yesterday"))]),
                EventError::NotARecord,
            ),
            (
                with(record_items(), vec![("created", Value::Float(f64::NAN))]),
                EventError::TimestampOutOfRange,
            ),
            (
                with(record_items(), vec![("created", Value::Int(i64::MAX))]),
                EventError::TimestampOutOfRange,
            ),
            (
                with(record_items(), vec![("created", Value::Float(1e20))]),
                EventError::TimestampOutOfRange,
            ),
            // Fails late, after most of the event was written.
            (
                with(record_items(), vec![("deep", deep.clone())]),
                EventError::TooDeep,
            ),
        ];
        for version in [LogstashVersion::V1, LogstashVersion::V0] {
            let f = format(version, &["t"]);
            for (record, error) in &cases {
                let mut out = b"kept".to_vec();
                assert_eq!(f.write_record(record, &mut out), Err(*error));
                assert_eq!(out, b"kept");
            }
        }
        for (event, error) in [
            (Value::List(vec![]), EventError::NotAnObject),
            (s("x"), EventError::NotAnObject),
            (
                dict(vec![("a", Value::Int(1)), ("deep", deep)]),
                EventError::TooDeep,
            ),
        ] {
            let mut out = b"kept".to_vec();
            assert_eq!(f.write_event(&event, now, &mut out), Err(error));
            assert_eq!(out, b"kept");
        }
    }

    #[test]
    fn created_can_be_replaced_by_an_extra() {
        let mut items = record_items();
        items.retain(|(k, _)| *k != "created");
        items.push(("@timestamp", s("2020-01-01T00:00:00Z")));
        let (event, _) = parse(
            &record_event(&format(LogstashVersion::V1, &[]), &dict(items)),
            &[],
        );
        assert_eq!(event["@timestamp"], "2020-01-01T00:00:00Z");
    }

    #[test]
    fn missing_standard_fields_are_null() {
        let record = dict(vec![("created", Value::Float(0.0))]);
        let (event, _) = parse(
            &record_event(&format(LogstashVersion::V1, &[]), &record),
            &[],
        );
        for key in ["message", "path", "levelname", "logger"] {
            assert_eq!(event[key], serde_json::Value::Null, "{key}");
        }
        let (event, _) = parse(
            &record_event(&format(LogstashVersion::V0, &[]), &record),
            &[],
        );
        assert_eq!(event["@source"], "python://web-1/");
        assert_eq!(event["@source_path"], serde_json::Value::Null);
    }

    #[test]
    fn is_record_checks() {
        assert!(EventFormat::is_record(&dict(record_items())));
        let mut items = record_items();
        items.retain(|(k, _)| *k != "msg");
        assert!(!EventFormat::is_record(&dict(items.clone())));
        items.push(("message", Value::Int(1)));
        assert!(EventFormat::is_record(&dict(items)));
        assert!(!EventFormat::is_record(&with(
            record_items(),
            vec![("name", Value::None)]
        )));
        assert!(!EventFormat::is_record(&with(
            record_items(),
            vec![("levelname", Value::Int(40))]
        )));
        assert!(!EventFormat::is_record(&with(
            record_items(),
            vec![("created", s("now"))]
        )));
        assert!(!EventFormat::is_record(&s("x")));
        // python-logstash's own events are not records.
        let event = dict(vec![
            ("message", s("m")),
            ("level", s("INFO")),
            ("logger_name", s("a")),
        ]);
        assert!(!EventFormat::is_record(&event));
    }

    /// `write_object` classifies once what `is_record` and the writers classify apart: both
    /// ways must agree on which objects are records and write the same bytes.
    #[test]
    fn write_object_matches_is_record_then_the_writer() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let mut without_msg = record_items();
        without_msg.retain(|(k, _)| *k != "msg");
        let mut with_message = without_msg.clone();
        with_message.push(("message", Value::Int(1)));
        let values = [
            dict(record_items()),
            dict(without_msg),
            dict(with_message),
            with(record_items(), vec![("name", Value::None)]),
            with(record_items(), vec![("levelname", Value::Int(40))]),
            with(record_items(), vec![("created", s("now"))]),
            with(record_items(), vec![("created", Value::Int(1_700_000_000))]),
            with(record_items(), vec![("name", s("second"))]),
            dict(vec![("message", s("m")), ("level", s("INFO"))]),
            dict(vec![]),
        ];
        for version in [LogstashVersion::V1, LogstashVersion::V0] {
            let f = format(version, &["t"]);
            for value in &values {
                let mut want = Vec::new();
                let want_result = if EventFormat::is_record(value) {
                    f.write_record(value, &mut want)
                } else {
                    f.write_event(value, now, &mut want)
                };
                let mut got = Vec::new();
                assert_eq!(f.write_object(value, now, &mut got), want_result);
                assert_eq!(
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(&want),
                    "{value:?}"
                );
            }
        }
    }

    #[test]
    fn config_strings_are_escaped() {
        let f = EventFormat::new(EventConfig {
            version: LogstashVersion::V0,
            host: "h\"1".into(),
            message_type: "t\\y\np".into(),
            tags: vec!["a\"".into(), "é".into()],
        });
        let (event, _) = parse(&record_event(&f, &dict(record_items())), &[]);
        assert_eq!(event["@source_host"], "h\"1");
        assert_eq!(event["@type"], "t\\y\np");
        assert_eq!(event["@source"], "t\\y\np://h\"1//srv/app/db.py");
        assert_eq!(event["@tags"], json!(["a\"", "é"]));
    }
}
