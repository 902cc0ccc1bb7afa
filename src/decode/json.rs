//! JSON lines to [`Value`]s, parsed in place with simd-json.
//!
//! A JSON frame is either a record dict (a `LogRecord.__dict__` sent as JSON) or a ready event
//! (python-logstash and friends); [`crate::event`] tells them apart. Strings are unescaped in place
//! by simd-json, so every [`Value::Str`] borrows from the caller's buffer.

mod flat;

use std::borrow::Cow;

use simd_json::{Buffers, ErrorType, Node, StaticNode, Tape};

use super::Pool;
use crate::value::Value;

/// Nesting deeper than this is rejected, so that converting, writing and dropping a [`Value`]
/// never recurses deep enough to overflow a thread's stack.
pub const MAX_DEPTH: usize = 128;

/// Why a JSON frame was rejected (always the sender's input).
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// The frame is not valid UTF-8.
    #[error("invalid UTF-8 in JSON at byte {offset}")]
    InvalidUtf8 {
        /// Byte offset simd-json reported.
        offset: usize,
    },
    /// The frame is not one well-formed JSON value (syntax error, trailing data, a number out of
    /// range, ...).
    #[error("invalid JSON: {0}")]
    Syntax(#[source] simd_json::Error),
    /// Arrays and objects are nested deeper than [`MAX_DEPTH`].
    #[error("JSON nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// A JSON parser that keeps its scratch buffers between frames.
pub struct JsonDecoder {
    buffers: Buffers,
    // Emptied after every frame; only the allocation is kept (see `Tape::reset`).
    tape: Tape<'static>,
    /// The vectors of earlier records' values, for [`JsonDecoder::decode_with`].
    pool: Pool,
}

impl Default for JsonDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonDecoder {
    /// A decoder with buffers sized for typical log records; they grow as needed.
    pub fn new() -> Self {
        Self {
            buffers: Buffers::new(4096),
            tape: Tape(Vec::new()),
            pool: Pool::default(),
        }
    }

    /// Parses one complete JSON document.
    ///
    /// simd-json unescapes strings inside `input`, which is why it is `&mut`; the returned value
    /// borrows every string from it. Objects become [`Value::Dict`] with [`Value::Str`] keys in
    /// document order, duplicate keys included (the event writer applies Python's last-one-wins
    /// rule at the top level). Integers above `i64::MAX` become [`Value::BigInt`]; integers beyond
    /// `u64` are rejected by simd-json.
    ///
    /// # Errors
    ///
    /// [`JsonError`] when `input` is not exactly one valid JSON value in UTF-8 (trailing data
    /// included) or nests deeper than [`MAX_DEPTH`].
    pub fn decode<'a>(&mut self, input: &'a mut [u8]) -> Result<Value<'a>, JsonError> {
        let mut tape: Tape<'a> = std::mem::replace(&mut self.tape, Tape(Vec::new())).reset();
        let parsed = simd_json::fill_tape(input, &mut self.buffers, &mut tape);
        let result = match parsed {
            Ok(()) => {
                let mut pos = 0;
                convert(&tape.0, &mut pos, 0, &mut self.pool)
            }
            Err(e) => Err(match e.error() {
                ErrorType::InvalidUtf8 => JsonError::InvalidUtf8 { offset: e.index() },
                _ => JsonError::Syntax(e),
            }),
        };
        self.tape = tape.reset();
        result
    }

    /// Parses one complete JSON document like [`Self::decode`] and calls `f` with it; the
    /// value's vectors are kept for the next call, so steady state allocates nothing. A flat
    /// object of plain values (the usual record or event) takes a fast path that leaves
    /// `input` as it was.
    ///
    /// # Errors
    ///
    /// As [`Self::decode`]; `f` is then not called.
    pub fn decode_with<R>(
        &mut self,
        input: &mut [u8],
        f: impl FnOnce(&Value<'_>) -> R,
    ) -> Result<R, JsonError> {
        let mark = self.pool.mark();
        match flat::decode(input, &mut self.pool) {
            Some(pairs) => Ok(self.hand_over_fast(pairs, mark, f)),
            None => self.decode_general_with(input, f),
        }
    }

    /// The fast path of [`Self::decode_with`] alone: calls `f` and returns its result when
    /// `input` is a flat object of plain values (strings without escapes, numbers without
    /// exponents, literals, lists and objects of those one level deep); `None`, without
    /// calling `f`, for anything else, valid or not. Never writes to `input`.
    pub fn decode_flat_with<R>(
        &mut self,
        input: &[u8],
        f: impl FnOnce(&Value<'_>) -> R,
    ) -> Option<R> {
        let mark = self.pool.mark();
        let pairs = flat::decode(input, &mut self.pool)?;
        Some(self.hand_over_fast(pairs, mark, f))
    }

    /// [`Self::decode_with`] without the fast path: simd-json, which unescapes strings in
    /// `input`.
    ///
    /// # Errors
    ///
    /// As [`Self::decode`]; `f` is then not called.
    pub fn decode_general_with<R>(
        &mut self,
        input: &mut [u8],
        f: impl FnOnce(&Value<'_>) -> R,
    ) -> Result<R, JsonError> {
        let value = self.decode(input)?;
        Ok(self.hand_over(value, f))
    }

    /// [`Self::hand_over`] for the fast path's record, built after `mark`.
    fn hand_over_fast<R>(
        &mut self,
        pairs: Vec<(Value<'_>, Value<'_>)>,
        mark: usize,
        f: impl FnOnce(&Value<'_>) -> R,
    ) -> R {
        let value = Value::Dict(pairs);
        let out = f(&value);
        self.pool.recycle_fast(value, mark);
        out
    }

    /// Calls `f` with `value`, then keeps the value's vectors for the next record.
    fn hand_over<R>(&mut self, value: Value<'_>, f: impl FnOnce(&Value<'_>) -> R) -> R {
        let out = f(&value);
        self.pool.recycle(value);
        out
    }
}

/// Converts the node at `tape[*pos]` (and its children), leaving `*pos` after it.
fn convert<'a>(
    tape: &[Node<'a>],
    pos: &mut usize,
    depth: usize,
    pool: &mut Pool,
) -> Result<Value<'a>, JsonError> {
    let Some(node) = tape.get(*pos) else {
        // simd-json returned Ok with a short tape: treat as malformed rather than panic.
        return Err(JsonError::Syntax(simd_json::Error::generic(ErrorType::Eof)));
    };
    *pos += 1;
    Ok(match *node {
        Node::String(s) => Value::Str(Cow::Borrowed(s)),
        Node::Static(s) => scalar(s),
        Node::Array { len, .. } => {
            if depth >= MAX_DEPTH {
                return Err(JsonError::TooDeep);
            }
            let mut items = pool.list();
            items.reserve(len);
            for _ in 0..len {
                items.push(convert(tape, pos, depth + 1, pool)?);
            }
            Value::List(items)
        }
        Node::Object { len, .. } => {
            if depth >= MAX_DEPTH {
                return Err(JsonError::TooDeep);
            }
            let mut items = pool.dict();
            items.reserve(len);
            for _ in 0..len {
                // Keys are strings and most values are leaves: those need no recursive call.
                let key = match tape.get(*pos) {
                    Some(&Node::String(s)) => {
                        *pos += 1;
                        Value::Str(Cow::Borrowed(s))
                    }
                    _ => convert(tape, pos, depth + 1, pool)?,
                };
                let value = match tape.get(*pos) {
                    Some(&Node::String(s)) => {
                        *pos += 1;
                        Value::Str(Cow::Borrowed(s))
                    }
                    Some(&Node::Static(s)) => {
                        *pos += 1;
                        scalar(s)
                    }
                    _ => convert(tape, pos, depth + 1, pool)?,
                };
                items.push((key, value));
            }
            Value::Dict(items)
        }
    })
}

fn scalar<'a>(node: StaticNode) -> Value<'a> {
    match node {
        StaticNode::Null => Value::None,
        StaticNode::Bool(b) => Value::Bool(b),
        StaticNode::I64(i) => Value::Int(i),
        StaticNode::U64(u) => match i64::try_from(u) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::BigInt(u.to_string()),
        },
        StaticNode::F64(f) => Value::Float(f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(text: &str) -> Result<Value<'static>, JsonError> {
        let mut bytes = text.as_bytes().to_vec();
        let mut decoder = JsonDecoder::new();
        decoder.decode(&mut bytes).map(|v| owned(&v))
    }

    /// Detaches a value from its buffer so tests can return it.
    fn owned(v: &Value<'_>) -> Value<'static> {
        match v {
            Value::Str(s) => Value::Str(Cow::Owned(s.to_string())),
            Value::List(items) => Value::List(items.iter().map(owned).collect()),
            Value::Dict(items) => {
                Value::Dict(items.iter().map(|(k, v)| (owned(k), owned(v))).collect())
            }
            Value::None => Value::None,
            Value::Bool(b) => Value::Bool(*b),
            Value::Int(i) => Value::Int(*i),
            Value::BigInt(s) => Value::BigInt(s.clone()),
            Value::Float(f) => Value::Float(*f),
            other => panic!("JSON never yields {other:?}"),
        }
    }

    fn s(text: &str) -> Value<'static> {
        Value::Str(Cow::Owned(text.to_owned()))
    }

    #[test]
    fn scalars() {
        assert_eq!(decode("null").unwrap(), Value::None);
        assert_eq!(decode("true").unwrap(), Value::Bool(true));
        assert_eq!(decode(" false ").unwrap(), Value::Bool(false));
        assert_eq!(decode("-42").unwrap(), Value::Int(-42));
        assert_eq!(decode("0").unwrap(), Value::Int(0));
        assert_eq!(decode("1.5").unwrap(), Value::Float(1.5));
        assert_eq!(decode("-2e3").unwrap(), Value::Float(-2000.0));
        assert_eq!(decode("\"hi\"").unwrap(), s("hi"));
    }

    #[test]
    fn integer_limits() {
        assert_eq!(decode("9223372036854775807").unwrap(), Value::Int(i64::MAX));
        assert_eq!(
            decode("-9223372036854775808").unwrap(),
            Value::Int(i64::MIN)
        );
        assert_eq!(
            decode("9223372036854775808").unwrap(),
            Value::BigInt("9223372036854775808".into())
        );
        assert_eq!(
            decode("18446744073709551615").unwrap(),
            Value::BigInt("18446744073709551615".into())
        );
    }

    #[test]
    fn object_keeps_document_order() {
        // More keys than halfbrown's vector backend holds, to show order does not depend on it.
        let keys: Vec<String> = (0..100).map(|i| format!("k{}", (i * 37) % 100)).collect();
        let body: Vec<String> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| format!("\"{k}\":{i}"))
            .collect();
        let text = format!("{{{}}}", body.join(","));
        let Value::Dict(items) = decode(&text).unwrap() else {
            panic!("not a dict");
        };
        assert_eq!(items.len(), 100);
        for (i, (k, v)) in items.iter().enumerate() {
            assert_eq!(k, &s(&keys[i]));
            assert_eq!(v, &Value::Int(i as i64));
        }
    }

    #[test]
    fn nested_round_trip() {
        let text = r#"{"name":"app.db","args":[1,"x",null,[true,{"a":2.25}]],"msg":"hello","e":{}, "l":[]}"#;
        let value = decode(text).unwrap();
        assert_eq!(
            value,
            Value::Dict(vec![
                (s("name"), s("app.db")),
                (
                    s("args"),
                    Value::List(vec![
                        Value::Int(1),
                        s("x"),
                        Value::None,
                        Value::List(vec![
                            Value::Bool(true),
                            Value::Dict(vec![(s("a"), Value::Float(2.25))]),
                        ]),
                    ])
                ),
                (s("msg"), s("hello")),
                (s("e"), Value::Dict(vec![])),
                (s("l"), Value::List(vec![])),
            ])
        );
    }

    #[test]
    fn duplicate_keys_are_kept_in_order() {
        let value = decode(r#"{"a":1,"b":2,"a":3}"#).unwrap();
        assert_eq!(
            value,
            Value::Dict(vec![
                (s("a"), Value::Int(1)),
                (s("b"), Value::Int(2)),
                (s("a"), Value::Int(3)),
            ])
        );
    }

    #[test]
    fn strings_borrow_from_input() {
        let mut bytes = br#"{"plain":"text","esc":"a\nb"}"#.to_vec();
        let range = bytes.as_ptr_range();
        let mut decoder = JsonDecoder::new();
        let value = decoder.decode(&mut bytes).unwrap();
        let Value::Dict(items) = &value else {
            panic!("not a dict")
        };
        for (k, v) in items {
            for s in [k, v] {
                let Value::Str(Cow::Borrowed(text)) = s else {
                    panic!("{s:?} is not borrowed");
                };
                assert!(range.contains(&text.as_ptr()));
            }
        }
        assert_eq!(value.get("esc").unwrap().as_str(), Some("a\nb"));
    }

    #[test]
    fn unicode_escapes() {
        assert_eq!(decode(r#""\u00e9""#).unwrap(), s("é"));
        assert_eq!(decode(r#""\u20ac""#).unwrap(), s("€"));
        // A surrogate pair.
        assert_eq!(decode(r#""\ud83d\ude00""#).unwrap(), s("😀"));
        assert_eq!(
            decode(r#""q\"b\\s\/n\nr\rt\tb\bf\f""#).unwrap(),
            s("q\"b\\s/n\nr\rt\tb\u{8}f\u{c}")
        );
        // Raw UTF-8 passes through.
        assert_eq!(decode("\"日本語 ü\"").unwrap(), s("日本語 ü"));
    }

    #[test]
    fn invalid_input() {
        for bad in [
            "",
            "{",
            "{\"a\":}",
            "[1,2",
            "{\"a\":1} x",
            "{\"a\":1}{}",
            "tru",
            "\"unterminated",
            "{'a':1}",
            "[1,]",
            "\"\\x\"",
            "01",
            "\"a\u{1}b\"",
            "hello world",
        ] {
            assert!(decode(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn invalid_utf8() {
        let mut decoder = JsonDecoder::new();
        let mut bytes = b"{\"a\":\"\xff\xfe\"}".to_vec();
        assert!(matches!(
            decoder.decode(&mut bytes),
            Err(JsonError::InvalidUtf8 { .. })
        ));
        let mut bytes = b"\"\xc3\"".to_vec();
        assert!(decoder.decode(&mut bytes).is_err());
    }

    #[test]
    fn deep_nesting_does_not_crash() {
        let mut decoder = JsonDecoder::new();
        for depth in [MAX_DEPTH, MAX_DEPTH + 1, 100_000] {
            let mut text = "[".repeat(depth).into_bytes();
            text.extend("]".repeat(depth).into_bytes());
            let result = decoder.decode(&mut text);
            if depth <= MAX_DEPTH {
                assert!(result.is_ok(), "depth {depth}");
            } else {
                assert!(matches!(result, Err(JsonError::TooDeep)), "depth {depth}");
            }
            let mut text = "{\"a\":".repeat(depth).into_bytes();
            text.extend(b"1");
            text.extend("}".repeat(depth).into_bytes());
            let result = decoder.decode(&mut text);
            assert_eq!(result.is_ok(), depth <= MAX_DEPTH, "depth {depth}");
        }
    }

    #[test]
    fn decode_with_reuses_vectors_and_gives_the_same_values() {
        let mut decoder = JsonDecoder::new();
        let texts = [
            r#"{"a":[1,2,{"b":[3]}],"c":"d"}"#,
            r#"{"x":{"y":[]},"z":[[["deep"]]]}"#,
            r#"[1,{"k":"v"},[2]]"#,
            "{\"a\":",
        ];
        for i in 0..40 {
            let text = texts[i % texts.len()];
            let want = decode(text)
                .map(|v| format!("{v:?}"))
                .map_err(|e| e.to_string());
            let mut bytes = text.as_bytes().to_vec();
            let got = decoder
                .decode_with(&mut bytes, |v| format!("{v:?}"))
                .map_err(|e| e.to_string());
            assert_eq!(got, want, "{text}");
        }
    }

    #[test]
    fn decoder_is_reusable() {
        let mut decoder = JsonDecoder::new();
        for i in 0..50 {
            let mut bad = b"{\"a\":".to_vec();
            assert!(decoder.decode(&mut bad).is_err());
            let mut text = format!("{{\"i\":{i},\"s\":\"{}\"}}", "x".repeat(i * 100)).into_bytes();
            let value = decoder.decode(&mut text).unwrap();
            assert_eq!(value.get("i"), Some(&Value::Int(i as i64)));
            assert_eq!(value.get("s").unwrap().as_str().unwrap().len(), i * 100);
        }
    }

    /// The fast path must build exactly what simd-json builds: checked on real lines, edge
    /// cases, and random edits of them.
    #[test]
    fn fast_path_agrees_with_simd_json() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut samples: Vec<Vec<u8>> = vec![
            std::fs::read(root.join("benches/data/record.json")).expect("sample"),
            std::fs::read(root.join("benches/data/logstash.json")).expect("sample"),
        ];
        for entry in std::fs::read_dir(root.join("fuzz/seeds/json_event")).expect("seeds") {
            samples.push(std::fs::read(entry.expect("seed").path()).expect("seed"));
        }
        for case in [
            "{}",
            " {\"a\" : 1 , \"b\":[ ],\"c\":{ }}\r\n",
            r#"{"n": -0, "m": 0}"#,
            r#"{"n": -0.0, "m": 0.5, "k": -12.25, "big": 123456789012345678}"#,
            r#"{"n": 1234567890123456789, "f": 1.7976931348623157, "e": 1e5}"#,
            r#"{"a": 0.1, "b": 0.3, "c": 8.511781692504883, "d": 1795492831.6380198, "e": -0.05}"#,
            r#"{"a": 9007199254.740992, "b": 9007199254.740993, "c": 0.0000000000000000001}"#,
            r#"{"a": 4503599627370496.5, "b": 9.999999999999999999, "c": 12345678901234567.8}"#,
            r#"{"n": 01}"#,
            r#"{"n": 1.}"#,
            r#"{"n": -}"#,
            r#"{"n": 9223372036854775807, "m": 18446744073709551615}"#,
            r#"{"n": 9223372036854775808, "m": -9223372036854775808}"#,
            r#"{"n": -9223372036854775809, "m": 1796605295781759490}"#,
            r#"{"n": 9999999999999999999, "m": 10000000000000000000}"#,
            r#"{"m": -9223372036854775808, "n": 9223372036854775807}"#,
            r#"{"m": 1796605295781759490, "n": -1}"#,
            "{\"s\": \"caf\\u00e9\", \"t\": \"caf\u{e9}\", \"u\": \"\u{1F600}\"}",
            "{\"s\": \"tab\there\"}",
            r#"{"a": [1, [2]], "b": {"c": {"d": 1}}}"#,
            r#"{"a": {"b": [1]}}"#,
            r#"{"a": 1, "a": 2}"#,
            r#"{"a": true, "b": false, "c": null, "d": tru}"#,
            r#"{"a": 1} x"#,
            r#"{"a": 1}}"#,
            r#"{"a" 1}"#,
            r#"{1: 1}"#,
            r#"[1, 2]"#,
        ] {
            samples.push(case.as_bytes().to_vec());
        }
        let mut pool = Pool::default();
        let mut general = JsonDecoder::new();
        let mut check = |data: &[u8]| -> bool {
            let Some(fast) = flat::decode(data, &mut pool).map(Value::Dict) else {
                return false;
            };
            let mut copy = data.to_vec();
            let slow = general.decode(&mut copy).map(|v| owned(&v));
            assert_eq!(
                format!("{:?}", Ok::<_, JsonError>(owned(&fast))),
                format!("{slow:?}"),
                "input {:?}",
                String::from_utf8_lossy(data)
            );
            true
        };
        let mut fast = 0;
        for sample in &samples {
            fast += usize::from(check(sample));
        }
        assert!(fast >= 10, "only {fast} samples took the fast path");
        // Random edits: bytes that matter to JSON put anywhere, cuts.
        const BYTES: &[u8] = b"\"\\{}[],:.-+eE0123456789 \t\ntruefalsn\x01\xc3\xa9\xff";
        let mut rng = 0x853c_49e6_748f_ea9b_u64;
        let mut next = move |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n.max(1) as u64) as usize
        };
        let mut variants = 0;
        for _ in 0..30_000 {
            let mut data = samples[next(samples.len())].clone();
            for _ in 0..1 + next(3) {
                let at = next(data.len() + 1);
                match next(3) {
                    0 => data.insert(at, BYTES[next(BYTES.len())]),
                    1 if at < data.len() => data[at] = BYTES[next(BYTES.len())],
                    _ => data.truncate(at.max(1)),
                }
            }
            variants += usize::from(check(&data));
        }
        assert!(
            variants > 1_000,
            "only {variants} variants took the fast path"
        );
    }
}
