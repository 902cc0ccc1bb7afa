//! Readable strings for values that have no JSON form (pickled objects, bytes, sets).
//!
//! The event writer emits JSON-native values as JSON and calls [`repr`] for the rest. Output is
//! Python-like and deterministic: `b'..'` bytes, `{1, 2}` sets, `module.Class(arg, k=v)`
//! objects, and the values logging extras usually hold rendered as people read them: ISO 8601
//! dates (`datetime.isoformat()`), `str()` of `timedelta`, `Decimal` and `UUID`. State layouts
//! follow CPython `Lib/_pydatetime.py` (`_getstate`), `Lib/uuid.py`, `Lib/_pydecimal.py`.

use std::fmt::Write;

use crate::value::{Object, Value};

/// Longest rendering of one value, in bytes; longer ones are cut and end with [`ELLIPSIS`].
pub const MAX_REPR_BYTES: usize = 64 * 1024;
/// Marks a rendering cut at [`MAX_REPR_BYTES`] or at `MAX_REPR_DEPTH`.
pub const ELLIPSIS: &str = "...";
/// Deepest nesting rendered; the pickle decoder never builds deeper values.
const MAX_REPR_DEPTH: usize = 200;

/// Appends a readable, Python-like rendering of `value` to `out`, at most [`MAX_REPR_BYTES`]
/// (plus [`ELLIPSIS`]).
pub fn repr(value: &Value<'_>, out: &mut String) {
    let start = out.len();
    let limit = start + MAX_REPR_BYTES;
    let mut w = Writer { out, limit };
    w.value(value, 0);
    if out.len() > limit {
        let mut cut = limit;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str(ELLIPSIS);
    }
}

/// [`repr`] into a new string.
pub fn repr_string(value: &Value<'_>) -> String {
    let mut out = String::new();
    repr(value, &mut out);
    out
}

struct Writer<'o> {
    out: &'o mut String,
    /// Rendering stops once `out` is longer than this; [`repr`] then cuts it.
    limit: usize,
}

impl Writer<'_> {
    fn full(&self) -> bool {
        self.out.len() > self.limit
    }

    fn push(&mut self, s: &str) {
        if !self.full() {
            self.out.push_str(s);
        }
    }

    fn value(&mut self, value: &Value<'_>, depth: usize) {
        if self.full() {
            return;
        }
        if depth > MAX_REPR_DEPTH {
            self.push(ELLIPSIS);
            return;
        }
        match value {
            Value::None => self.push("None"),
            Value::Bool(true) => self.push("True"),
            Value::Bool(false) => self.push("False"),
            Value::Int(i) => {
                let _ = write!(self.out, "{i}");
            }
            Value::BigInt(digits) => self.push(digits),
            Value::Float(f) => float(*f, self.out),
            Value::Str(s) => self.str(s),
            Value::Bytes(b) => self.bytes(b),
            Value::List(items) => self.seq("[", items, "]", depth),
            Value::Tuple(items) if items.len() == 1 => self.seq("(", items, ",)", depth),
            Value::Tuple(items) => self.seq("(", items, ")", depth),
            Value::Set(items) if items.is_empty() => self.push("set()"),
            Value::Set(items) => self.seq("{", items, "}", depth),
            Value::Dict(pairs) => {
                self.push("{");
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        self.push(", ");
                    }
                    self.value(k, depth + 1);
                    self.push(": ");
                    self.value(v, depth + 1);
                }
                self.push("}");
            }
            Value::Global(global) => {
                self.push(&global.module);
                self.push(".");
                self.push(&global.name);
            }
            Value::Object(object) => self.object(object, depth),
        }
    }

    fn seq(&mut self, open: &str, items: &[Value<'_>], close: &str, depth: usize) {
        self.push(open);
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.value(item, depth + 1);
        }
        self.push(close);
    }

    /// Python `repr(str)`.
    fn str(&mut self, s: &str) {
        let quote = if s.contains('\'') && !s.contains('"') {
            '"'
        } else {
            '\''
        };
        self.out.push(quote);
        for c in s.chars() {
            if self.full() {
                return;
            }
            match c {
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                '\r' => self.out.push_str("\\r"),
                '\t' => self.out.push_str("\\t"),
                c if c == quote => {
                    self.out.push('\\');
                    self.out.push(c);
                }
                c if printable(c) => self.out.push(c),
                c if u32::from(c) < 0x100 => {
                    let _ = write!(self.out, "\\x{:02x}", u32::from(c));
                }
                c if u32::from(c) < 0x10000 => {
                    let _ = write!(self.out, "\\u{:04x}", u32::from(c));
                }
                c => {
                    let _ = write!(self.out, "\\U{:08x}", u32::from(c));
                }
            }
        }
        self.out.push(quote);
    }

    /// Python `repr(bytes)`.
    fn bytes(&mut self, b: &[u8]) {
        let quote = if b.contains(&b'\'') && !b.contains(&b'"') {
            b'"'
        } else {
            b'\''
        };
        self.out.push('b');
        self.out.push(char::from(quote));
        for &byte in b {
            if self.full() {
                return;
            }
            match byte {
                b'\\' => self.out.push_str("\\\\"),
                b'\n' => self.out.push_str("\\n"),
                b'\r' => self.out.push_str("\\r"),
                b'\t' => self.out.push_str("\\t"),
                _ if byte == quote => {
                    self.out.push('\\');
                    self.out.push(char::from(byte));
                }
                0x20..=0x7e => self.out.push(char::from(byte)),
                _ => {
                    let _ = write!(self.out, "\\x{byte:02x}");
                }
            }
        }
        self.out.push(char::from(quote));
    }

    fn object(&mut self, object: &Object<'_>, depth: usize) {
        if self.known(object, depth) {
            return;
        }
        self.push(&object.class.module);
        self.push(".");
        self.push(&object.class.name);
        self.push("(");
        let mut first = true;
        let mut sep = |w: &mut Self| {
            if !std::mem::take(&mut first) {
                w.push(", ");
            }
        };
        for arg in &object.args {
            sep(self);
            self.value(arg, depth + 1);
        }
        let mut keyword = |w: &mut Self, k: &Value<'_>, v: &Value<'_>| {
            sep(w);
            match k {
                Value::Str(k) => w.push(k),
                k => w.value(k, depth + 1),
            }
            w.push("=");
            w.value(v, depth + 1);
        };
        for (k, v) in &object.kwargs {
            keyword(self, k, v);
        }
        match &object.state {
            None | Some(Value::None) => {}
            Some(Value::Dict(pairs)) => {
                for (k, v) in pairs {
                    keyword(self, k, v);
                }
            }
            // `__slots__` classes: `(__dict__ or None, {slot: value})`.
            Some(Value::Tuple(parts))
                if parts.len() == 2
                    && parts
                        .iter()
                        .all(|p| matches!(p, Value::None | Value::Dict(_))) =>
            {
                for part in parts {
                    if let Value::Dict(pairs) = part {
                        for (k, v) in pairs {
                            keyword(self, k, v);
                        }
                    }
                }
            }
            Some(state) => keyword(self, &Value::Str("state".into()), state),
        }
        if !object.items.is_empty() {
            sep(self);
            self.seq("[", &object.items, "]", depth + 1);
        }
        self.push(")");
    }

    /// Renders the classes with a well-known readable form; false for the rest.
    fn known(&mut self, object: &Object<'_>, depth: usize) -> bool {
        if !object.kwargs.is_empty() || !object.items.is_empty() {
            return false;
        }
        let args = object.args.as_slice();
        let rendered = match (object.class.module.as_ref(), object.class.name.as_ref()) {
            ("datetime", "datetime") if object.state.is_none() => datetime(args),
            ("datetime", "date") if object.state.is_none() => date(args),
            ("datetime", "time") if object.state.is_none() => time(args),
            ("datetime", "timedelta") if object.state.is_none() => {
                timedelta_parts(args).map(|(d, s, us)| timedelta_str(d, s, us))
            }
            ("datetime", "timezone") if object.state.is_none() => timezone(args),
            ("decimal", "Decimal") if object.state.is_none() => match args {
                [Value::Str(s)] => Some(s.to_string()),
                _ => None,
            },
            ("uuid", "UUID") if args.is_empty() => object.state.as_ref().and_then(uuid),
            ("builtins", "set" | "frozenset") if object.state.is_none() => {
                let items = match args {
                    [] => Some(&[][..]),
                    [Value::List(items) | Value::Set(items) | Value::Tuple(items)] => {
                        Some(items.as_slice())
                    }
                    _ => None,
                };
                if let Some(items) = items {
                    let frozen = object.class.name == "frozenset";
                    match (frozen, items.is_empty()) {
                        (false, true) => self.push("set()"),
                        (false, false) => self.seq("{", items, "}", depth),
                        (true, true) => self.push("frozenset()"),
                        (true, false) => {
                            self.push("frozenset(");
                            self.seq("{", items, "}", depth);
                            self.push(")");
                        }
                    }
                    return true;
                }
                None
            }
            _ => None,
        };
        match rendered {
            Some(text) => {
                self.push(&text);
                true
            }
            None => false,
        }
    }
}

/// Python `repr(float)`: shortest round-trip digits, exponent form below 1e-4 and from 1e16.
fn float(f: f64, out: &mut String) {
    if f.is_nan() {
        out.push_str("nan");
        return;
    }
    if f.is_infinite() {
        out.push_str(if f < 0.0 { "-inf" } else { "inf" });
        return;
    }
    if f == 0.0 {
        out.push_str(if f.is_sign_negative() { "-0.0" } else { "0.0" });
        return;
    }
    // Rust's `{:e}` gives the shortest round-trip digits: `-1.2345e-7`.
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    out.push_str(sign);
    if !(-4..16).contains(&exp) {
        let _ = write!(
            out,
            "{mantissa}e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        );
        return;
    }
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if exp < 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
        out.push_str(&digits);
    } else {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', int_len - digits.len()));
            out.push_str(".0");
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    }
}

/// Whether Python's `str.isprintable()` holds for `c`, for the characters that matter in logs:
/// controls, separators other than space, format characters and private use are not.
fn printable(c: char) -> bool {
    let c = u32::from(c);
    !matches!(c,
        0x00..=0x1f | 0x7f..=0xa0 | 0xad | 0x034f | 0x061c | 0x1680 | 0x180e
        | 0x2000..=0x200f | 0x2028..=0x202f | 0x205f..=0x206f | 0x3000 | 0xd800..=0xf8ff
        | 0xfeff | 0xfff9..=0xfffb | 0xfffe | 0xffff | 0xe0000..=0xe0fff | 0xf0000..)
}

/// The state bytes of a pickled date/time: bytes, or a Python 2 `str` decoded as text.
fn state_bytes<'v>(value: &'v Value<'_>) -> Option<&'v [u8]> {
    match value {
        Value::Bytes(b) => Some(b),
        Value::Str(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// `datetime.datetime`: `(state, [tzinfo])`, state = `[yhi, ylo, month(+128 fold), day, hour,
/// minute, second, us1, us2, us3]`.
fn datetime(args: &[Value<'_>]) -> Option<String> {
    let (state, tz) = match args {
        [state] => (state, None),
        [state, tz] => (state, Some(tz)),
        _ => return None,
    };
    let &[yhi, ylo, month, day, hour, minute, second, us1, us2, us3] = state_bytes(state)? else {
        return None;
    };
    let mut out = ymd(yhi, ylo, month & 0x7f, day)?;
    out.push('T');
    hms(&mut out, hour, minute, second, [us1, us2, us3])?;
    tz_suffix(&mut out, tz);
    Some(out)
}

/// `datetime.date`: `(state,)`, state = `[yhi, ylo, month, day]`.
fn date(args: &[Value<'_>]) -> Option<String> {
    let [state] = args else { return None };
    let &[yhi, ylo, month, day] = state_bytes(state)? else {
        return None;
    };
    ymd(yhi, ylo, month, day)
}

/// `datetime.time`: `(state, [tzinfo])`, state = `[hour(+128 fold), minute, second, us1, us2,
/// us3]`.
fn time(args: &[Value<'_>]) -> Option<String> {
    let (state, tz) = match args {
        [state] => (state, None),
        [state, tz] => (state, Some(tz)),
        _ => return None,
    };
    let &[hour, minute, second, us1, us2, us3] = state_bytes(state)? else {
        return None;
    };
    let mut out = String::with_capacity(21);
    hms(&mut out, hour & 0x7f, minute, second, [us1, us2, us3])?;
    tz_suffix(&mut out, tz);
    Some(out)
}

fn ymd(yhi: u8, ylo: u8, month: u8, day: u8) -> Option<String> {
    let year = u16::from(yhi) * 256 + u16::from(ylo);
    if !(1..=9999).contains(&year) || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    Some(format!("{year:04}-{month:02}-{day:02}"))
}

fn hms(out: &mut String, hour: u8, minute: u8, second: u8, us: [u8; 3]) -> Option<()> {
    let us = u32::from(us[0]) << 16 | u32::from(us[1]) << 8 | u32::from(us[2]);
    if hour > 23 || minute > 59 || second > 59 || us > 999_999 {
        return None;
    }
    let _ = write!(out, "{hour:02}:{minute:02}:{second:02}");
    if us != 0 {
        let _ = write!(out, ".{us:06}");
    }
    Some(())
}

/// Appends the UTC offset of a fixed-offset `datetime.timezone` (`+05:30`), or the zone's name
/// in brackets (RFC 9557) for zoneinfo/pytz zones, or the zone's rendering in brackets.
fn tz_suffix(out: &mut String, tz: Option<&Value<'_>>) {
    let Some(tz) = tz else { return };
    match tz {
        Value::None => {}
        Value::Object(zone) => match (zone.class.module.as_ref(), zone.class.name.as_ref()) {
            ("datetime", "timezone") => match zone.args.first().and_then(offset_micros) {
                Some(micros) => offset(out, micros),
                None => bracketed(out, tz),
            },
            ("pytz", "_UTC") => out.push_str("+00:00"),
            // zoneinfo `ZoneInfo._unpickle(key, from_cache)`, pytz `_p(zone, ...)`.
            _ => match zone.args.first() {
                Some(Value::Str(key)) => {
                    out.push('[');
                    out.push_str(key);
                    out.push(']');
                }
                _ => bracketed(out, tz),
            },
        },
        _ => bracketed(out, tz),
    }
}

fn bracketed(out: &mut String, tz: &Value<'_>) {
    out.push('[');
    repr(tz, out);
    out.push(']');
}

/// `datetime.timezone(offset[, name])` on its own, as Python's `str()`: `UTC`, `UTC+05:30`.
fn timezone(args: &[Value<'_>]) -> Option<String> {
    match args {
        [_, Value::Str(name)] => Some(name.to_string()),
        [delta] => {
            let micros = offset_micros(delta)?;
            let mut out = String::from("UTC");
            if micros != 0 {
                offset(&mut out, micros);
            }
            Some(out)
        }
        _ => None,
    }
}

/// The length of a pickled `datetime.timedelta`, in microseconds.
fn offset_micros(value: &Value<'_>) -> Option<i64> {
    let Value::Object(delta) = value else {
        return None;
    };
    if delta.class.module != "datetime" || delta.class.name != "timedelta" {
        return None;
    }
    let (days, seconds, micros) = timedelta_parts(&delta.args)?;
    // 999999999 days do not fit in i64 microseconds.
    days.checked_mul(86_400_000_000)?
        .checked_add(seconds * 1_000_000 + micros)
}

/// `(days, seconds, microseconds)`, normalized as CPython keeps them.
fn timedelta_parts(args: &[Value<'_>]) -> Option<(i64, i64, i64)> {
    let int = |v: &Value<'_>| match v {
        Value::Int(i) => Some(*i),
        _ => None,
    };
    let (days, seconds, micros) = match args {
        [d] => (int(d)?, 0, 0),
        [d, s] => (int(d)?, int(s)?, 0),
        [d, s, us] => (int(d)?, int(s)?, int(us)?),
        _ => return None,
    };
    // CPython's bounds: |days| <= 999999999, 0 <= seconds < 86400, 0 <= us < 10**6.
    let ok = days.abs() <= 999_999_999
        && (0..86_400).contains(&seconds)
        && (0..1_000_000).contains(&micros);
    ok.then_some((days, seconds, micros))
}

/// Python `str(timedelta)`: `1 day, 2:03:04.000005`, `-1 day, 23:59:59`.
fn timedelta_str(days: i64, seconds: i64, micros: i64) -> String {
    let mut out = String::new();
    if days != 0 {
        let plural = if days.abs() != 1 { "s" } else { "" };
        let _ = write!(out, "{days} day{plural}, ");
    }
    let _ = write!(
        out,
        "{}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    );
    if micros != 0 {
        let _ = write!(out, ".{micros:06}");
    }
    out
}

/// A UTC offset as `datetime.isoformat()` writes it: `+05:30`, `-00:00:30.5` style.
fn offset(out: &mut String, micros: i64) {
    let sign = if micros < 0 { '-' } else { '+' };
    let micros = micros.unsigned_abs();
    let seconds = micros / 1_000_000;
    let fraction = micros % 1_000_000;
    let _ = write!(out, "{sign}{:02}:{:02}", seconds / 3600, seconds / 60 % 60);
    if seconds % 60 != 0 || fraction != 0 {
        let _ = write!(out, ":{:02}", seconds % 60);
        if fraction != 0 {
            let _ = write!(out, ".{fraction:06}");
        }
    }
}

/// `uuid.UUID`: its state is `{'int': n}` (and maybe `is_safe`); rendered as `str(uuid)`.
fn uuid(state: &Value<'_>) -> Option<String> {
    let n: u128 = match state.get("int")? {
        Value::Int(i) => u128::try_from(*i).ok()?,
        Value::BigInt(digits) => digits.parse().ok()?,
        _ => return None,
    };
    let hex = format!("{n:032x}");
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::value::Global;

    fn s(text: &str) -> Value<'_> {
        Value::Str(Cow::Borrowed(text))
    }

    fn global<'a>(module: &'a str, name: &'a str) -> Global<'a> {
        Global {
            module: Cow::Borrowed(module),
            name: Cow::Borrowed(name),
        }
    }

    fn object<'a>(module: &'a str, name: &'a str, args: Vec<Value<'a>>) -> Object<'a> {
        Object {
            class: global(module, name),
            args,
            kwargs: Vec::new(),
            state: None,
            items: Vec::new(),
        }
    }

    fn obj<'a>(module: &'a str, name: &'a str, args: Vec<Value<'a>>) -> Value<'a> {
        Value::Object(Box::new(object(module, name, args)))
    }

    fn bytes(b: &[u8]) -> Value<'_> {
        Value::Bytes(Cow::Borrowed(b))
    }

    fn delta(days: i64, seconds: i64, micros: i64) -> Value<'static> {
        obj(
            "datetime",
            "timedelta",
            vec![Value::Int(days), Value::Int(seconds), Value::Int(micros)],
        )
    }

    fn fixed_zone(days: i64, seconds: i64, micros: i64) -> Value<'static> {
        obj("datetime", "timezone", vec![delta(days, seconds, micros)])
    }

    #[test]
    fn floats_like_python() {
        // repr() of each, from CPython 3.11.
        let cases = [
            (0.1_f64, "0.1"),
            (1.0_f64, "1.0"),
            (-2.5_f64, "-2.5"),
            (1e+16_f64, "1e+16"),
            (1000000000000000.0_f64, "1000000000000000.0"),
            (1.2345678901234568e+17_f64, "1.2345678901234568e+17"),
            (0.0001_f64, "0.0001"),
            (1e-05_f64, "1e-05"),
            (1.5e-07_f64, "1.5e-07"),
            (5e-324_f64, "5e-324"),
            (1.7976931348623157e+308_f64, "1.7976931348623157e+308"),
            (0.30000000000000004_f64, "0.30000000000000004"),
            (100.0_f64, "100.0"),
            (12345.678_f64, "12345.678"),
            (-0.0_f64, "-0.0"),
            (f64::NAN, "nan"),
            (f64::NEG_INFINITY, "-inf"),
        ];
        for (f, want) in cases {
            assert_eq!(repr_string(&Value::Float(f)), want);
        }
    }

    #[test]
    fn strings_and_bytes_like_python() {
        let text = "a\x00\x7f\u{80}\u{a0}\u{ad}\u{2028}\u{e000}\u{f0000} é✓日本😀 \\ '\"";
        assert_eq!(
            repr_string(&s(text)),
            r#"'a\x00\x7f\x80\xa0\xad\u2028\ue000\U000f0000 é✓日本😀 \\ \'"'"#
        );
        assert_eq!(repr_string(&s("it's")), r#""it's""#);
        assert_eq!(repr_string(&s("tab\there\n")), r"'tab\there\n'");
        assert_eq!(repr_string(&bytes(b"'\"")), r#"b'\'"'"#);
        assert_eq!(repr_string(&bytes(b"'")), r#"b"'""#);
        assert_eq!(repr_string(&bytes(b"ab\x00\\\xff\r")), r"b'ab\x00\\\xff\r'");
        assert_eq!(repr_string(&bytes(b"")), "b''");
    }

    #[test]
    fn containers_like_python() {
        let one = Value::Int(1);
        assert_eq!(repr_string(&Value::Tuple(vec![one.clone()])), "(1,)");
        assert_eq!(repr_string(&Value::Tuple(vec![])), "()");
        assert_eq!(
            repr_string(&Value::Tuple(vec![one.clone(), Value::None])),
            "(1, None)"
        );
        assert_eq!(repr_string(&Value::Set(vec![])), "set()");
        assert_eq!(
            repr_string(&Value::Set(vec![one.clone(), Value::Int(2)])),
            "{1, 2}"
        );
        assert_eq!(
            repr_string(&obj(
                "builtins",
                "frozenset",
                vec![Value::List(vec![one.clone()])]
            )),
            "frozenset({1})"
        );
        assert_eq!(
            repr_string(&obj("builtins", "frozenset", vec![])),
            "frozenset()"
        );
        let dict = Value::Dict(vec![
            (
                s("k"),
                Value::List(vec![Value::Bool(true), Value::Float(1.5)]),
            ),
            (
                Value::Int(2),
                Value::BigInt("-123456789012345678901234567890".into()),
            ),
        ]);
        assert_eq!(
            repr_string(&dict),
            "{'k': [True, 1.5], 2: -123456789012345678901234567890}"
        );
        assert_eq!(
            repr_string(&Value::Global(Box::new(global("os", "system")))),
            "os.system"
        );
    }

    #[test]
    fn dates_and_times_like_isoformat() {
        let state = bytes(b"\x07\xe8\x01\x02\x03\x04\x05\x01\xe2\x40");
        let naive = obj("datetime", "datetime", vec![state.clone()]);
        assert_eq!(repr_string(&naive), "2024-01-02T03:04:05.123456");
        let utc = obj("datetime", "datetime", vec![state, fixed_zone(0, 0, 0)]);
        assert_eq!(repr_string(&utc), "2024-01-02T03:04:05.123456+00:00");
        // Whole seconds, fold bit in the month, a negative offset with seconds.
        let state = bytes(b"\x07\xe8\x81\x02\x03\x04\x05\x00\x00\x00");
        let west = obj(
            "datetime",
            "datetime",
            vec![state, fixed_zone(-1, 86_400 - 3_600 * 5 - 30, 0)],
        );
        assert_eq!(repr_string(&west), "2024-01-02T03:04:05-05:00:30");
        // A Python 2 str state that happened to be valid text.
        let py2 = obj("datetime", "date", vec![s("\x07\x01\x02\x03")]);
        assert_eq!(repr_string(&py2), "1793-02-03");
        let date = obj("datetime", "date", vec![bytes(b"\x07\xe8\x02\x1d")]);
        assert_eq!(repr_string(&date), "2024-02-29");
        let time = obj("datetime", "time", vec![bytes(b"\x0d\x0e\x0f\x00\x01\xf4")]);
        assert_eq!(repr_string(&time), "13:14:15.000500");
        let ist = fixed_zone(0, 19_800, 0);
        let time = obj(
            "datetime",
            "time",
            vec![bytes(b"\x0d\x0e\x0f\x00\x00\x00"), ist.clone()],
        );
        assert_eq!(repr_string(&time), "13:14:15+05:30");
        assert_eq!(repr_string(&ist), "UTC+05:30");
        assert_eq!(repr_string(&fixed_zone(0, 0, 0)), "UTC");
        assert_eq!(
            repr_string(&fixed_zone(999_999_999, 0, 0)),
            "datetime.timezone(999999999 days, 0:00:00)"
        );
        // A zone that is not a fixed offset keeps its name.
        let paris = obj(
            "zoneinfo",
            "ZoneInfo._unpickle",
            vec![s("Europe/Paris"), Value::Int(1)],
        );
        let state = bytes(b"\x07\xe8\x01\x02\x00\x00\x00\x00\x00\x00");
        let dt = obj("datetime", "datetime", vec![state.clone(), paris]);
        assert_eq!(repr_string(&dt), "2024-01-02T00:00:00[Europe/Paris]");
        let odd = obj("mytz", "Zone", vec![]);
        let dt = obj("datetime", "datetime", vec![state, odd]);
        assert_eq!(repr_string(&dt), "2024-01-02T00:00:00[mytz.Zone()]");
        // A state that is no date falls back to the generic form.
        let bad = obj("datetime", "date", vec![bytes(b"\x07\xe8\x0d\x01")]);
        assert_eq!(repr_string(&bad), r"datetime.date(b'\x07\xe8\r\x01')");
    }

    #[test]
    fn timedeltas_like_str() {
        assert_eq!(repr_string(&delta(1, 7384, 5)), "1 day, 2:03:04.000005");
        assert_eq!(repr_string(&delta(-1, 86_399, 0)), "-1 day, 23:59:59");
        assert_eq!(repr_string(&delta(2, 0, 0)), "2 days, 0:00:00");
        assert_eq!(repr_string(&delta(0, 59, 1)), "0:00:59.000001");
        assert_eq!(
            repr_string(&delta(0, 90_000, 0)),
            "datetime.timedelta(0, 90000, 0)"
        );
    }

    #[test]
    fn decimal_uuid_and_objects() {
        assert_eq!(
            repr_string(&obj("decimal", "Decimal", vec![s("1.50")])),
            "1.50"
        );

        let mut uuid = object("uuid", "UUID", vec![]);
        uuid.state = Some(Value::Dict(vec![(
            s("int"),
            Value::BigInt("24197857161011715162171839636988778104".into()),
        )]));
        assert_eq!(
            repr_string(&Value::Object(Box::new(uuid.clone()))),
            "12345678-1234-5678-1234-567812345678"
        );
        uuid.state = Some(Value::Dict(vec![(s("int"), Value::Int(5))]));
        assert_eq!(
            repr_string(&Value::Object(Box::new(uuid))),
            "00000000-0000-0000-0000-000000000005"
        );

        let mut point = object("__main__", "Point", vec![]);
        point.state = Some(Value::Dict(vec![
            (s("x"), Value::Int(1)),
            (s("y"), Value::Int(2)),
        ]));
        assert_eq!(
            repr_string(&Value::Object(Box::new(point))),
            "__main__.Point(x=1, y=2)"
        );
        assert_eq!(
            repr_string(&obj("__main__", "Color", vec![Value::Int(1)])),
            "__main__.Color(1)"
        );

        let mut full = object("m", "C", vec![Value::Int(1), s("a")]);
        full.kwargs = vec![(s("k"), Value::None)];
        // `__slots__` state: (None, {slot: value}).
        full.state = Some(Value::Tuple(vec![
            Value::None,
            Value::Dict(vec![(s("slot"), Value::Bool(false))]),
        ]));
        full.items = vec![Value::Int(7)];
        assert_eq!(
            repr_string(&Value::Object(Box::new(full.clone()))),
            "m.C(1, 'a', k=None, slot=False, [7])"
        );
        full.state = Some(Value::Int(3));
        full.items.clear();
        assert_eq!(
            repr_string(&Value::Object(Box::new(full))),
            "m.C(1, 'a', k=None, state=3)"
        );
    }

    #[test]
    fn output_is_bounded() {
        let long = "é".repeat(MAX_REPR_BYTES);
        let out = repr_string(&s(&long));
        assert!(out.ends_with(ELLIPSIS));
        assert!(out.len() <= MAX_REPR_BYTES + ELLIPSIS.len());
        assert!(out.starts_with("'éé"));

        let many = Value::Set((0..1_000_000).map(Value::Int).collect());
        let out = repr_string(&many);
        assert!(out.len() <= MAX_REPR_BYTES + ELLIPSIS.len());
        assert!(out.starts_with("{0, 1, 2"));
        assert!(out.ends_with(ELLIPSIS));

        // Appends after what `out` holds; the bound is per rendering.
        let mut out = String::from("prefix ");
        repr(&bytes(&[0; 100_000]), &mut out);
        assert!(out.starts_with("prefix b'\\x00"));
        assert_eq!(out.len(), "prefix ".len() + MAX_REPR_BYTES + ELLIPSIS.len());

        let mut deep = Value::List(vec![]);
        for _ in 0..1_000 {
            deep = Value::List(vec![deep]);
        }
        let out = repr_string(&deep);
        assert!(out.contains("[...]"));
        // Dropping it would recurse 1,000 deep: fine here, and never built by the decoder.
    }
}
