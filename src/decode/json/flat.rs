//! The fast path for the JSON line nearly every client sends.
//!
//! A record dict or a python-logstash event is one flat object: string keys; values that are
//! strings without escapes, plain numbers, `true`/`false`/`null`, now and then a list or an
//! object of those (`tags`, `args`, an extra). [`decode`] reads that shape in one pass, without
//! simd-json's tape and the conversion after it, and without writing to the line (so the
//! caller need not keep a copy for the fallback). At the first thing outside the shape (an
//! escape, an exponent, deeper nesting, anything malformed) it returns `None` and the caller
//! runs simd-json on the line, so every result but the simple one, errors included, is
//! simd-json's. For the lines it accepts it builds the value simd-json would (the tests and
//! the `json_event` fuzz target compare the two).

use std::borrow::Cow;

use crate::decode::Pool;
use crate::event::{escape_bytes, HIGHS};
use crate::value::Value;

/// Integer digits that always fit in a `u64` (nanosecond timestamps have 19).
const MAX_INT_DIGITS: usize = 19;
/// Significant digits of a number with a fraction taken here; longer ones go to simd-json.
const MAX_FLOAT_DIGITS: usize = 19;

/// Decodes `input` when it is a flat object, into its pairs; `None` means "use simd-json".
///
/// The pairs, not a [`Value`]: a `Value` built here and returned was copied out with its
/// padding, in loads that straddled the stores that built it (a store-forwarding stall).
pub(super) fn decode<'a>(input: &'a [u8], pool: &mut Pool) -> Option<Vec<(Value<'a>, Value<'a>)>> {
    let mut r = Reader { s: input, pos: 0 };
    r.ws();
    if r.peek() != Some(b'{') {
        return None;
    }
    let mut pairs = pool.dict();
    if r.object(&mut pairs, pool, false).is_some() {
        r.ws();
        if r.pos == input.len() {
            return Some(pairs);
        }
    }
    pool.recycle(Value::Dict(pairs));
    None
}

/// Appends `(key, value)` to a pair vector, writing both straight into its memory: `value`
/// is built at its destination, not in a temporary copied there afterwards.
macro_rules! push_pair {
    ($pairs:expr, $key:expr, $value:expr) => {{
        let pairs: &mut Vec<(Value<'a>, Value<'a>)> = $pairs;
        pairs.reserve(1);
        let len = pairs.len();
        // Safety: `reserve` made room for one more pair at `len`, and both halves are written
        // before the length covers it.
        unsafe {
            let slot = pairs.as_mut_ptr().add(len);
            std::ptr::addr_of_mut!((*slot).0).write(Value::Str(Cow::Borrowed($key)));
            std::ptr::addr_of_mut!((*slot).1).write($value);
            pairs.set_len(len + 1);
        }
    }};
}

struct Reader<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    /// Skips JSON whitespace.
    #[inline(always)]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// Expects `b` after optional whitespace.
    #[inline(always)]
    fn expect(&mut self, b: u8) -> Option<()> {
        self.ws();
        if self.peek() != Some(b) {
            return None;
        }
        self.pos += 1;
        Some(())
    }

    /// An object, at its `{`, into `pairs`; `nested` objects hold scalars only.
    ///
    /// Keys and scalars travel in registers (`&str`, [`Number`]) and become [`Value`]s only
    /// where [`push_pair!`] writes them into `pairs`. A `Value` built first and pushed after
    /// was stored to the stack in small pieces and copied out in 16-byte loads that straddle
    /// them; each such load waits for the stores to retire (a store-forwarding stall), and
    /// those stalls took half of this function's time.
    fn object(
        &mut self,
        pairs: &mut Vec<(Value<'a>, Value<'a>)>,
        pool: &mut Pool,
        nested: bool,
    ) -> Option<()> {
        self.pos += 1;
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Some(());
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return None;
            }
            let key = self.string()?;
            self.expect(b':')?;
            self.ws();
            match self.peek()? {
                b'"' => {
                    let text = self.string()?;
                    push_pair!(pairs, key, Value::Str(Cow::Borrowed(text)));
                }
                b'-' | b'0'..=b'9' => match self.number()? {
                    Number::Int(n) => push_pair!(pairs, key, Value::Int(n)),
                    Number::Float(x) => push_pair!(pairs, key, Value::Float(x)),
                },
                b'n' => {
                    self.literal(b"null")?;
                    push_pair!(pairs, key, Value::None);
                }
                b't' => {
                    self.literal(b"true")?;
                    push_pair!(pairs, key, Value::Bool(true));
                }
                b'f' => {
                    self.literal(b"false")?;
                    push_pair!(pairs, key, Value::Bool(false));
                }
                _ => {
                    let value = self.container(pool, nested)?;
                    push_pair!(pairs, key, value);
                }
            }
            self.ws();
            match self.peek()? {
                b',' => self.pos += 1,
                b'}' => {
                    self.pos += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// An array of scalars, at its `[`.
    fn array(&mut self, items: &mut Vec<Value<'a>>) -> Option<()> {
        self.pos += 1;
        self.ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Some(());
        }
        loop {
            self.ws();
            items.push(self.scalar()?);
            self.ws();
            match self.peek()? {
                b',' => self.pos += 1,
                b']' => {
                    self.pos += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A scalar value, in an array.
    #[inline(always)]
    fn scalar(&mut self) -> Option<Value<'a>> {
        Some(match self.peek()? {
            b'"' => Value::Str(Cow::Borrowed(self.string()?)),
            b'-' | b'0'..=b'9' => match self.number()? {
                Number::Int(n) => Value::Int(n),
                Number::Float(x) => Value::Float(x),
            },
            b't' => self.literal(b"true").map(|()| Value::Bool(true))?,
            b'f' => self.literal(b"false").map(|()| Value::Bool(false))?,
            b'n' => self.literal(b"null").map(|()| Value::None)?,
            _ => return None,
        })
    }

    /// An array or object of scalars, at its `[` or `{`; `None` when `nested` (a container
    /// in a container) or at anything else.
    #[inline(never)]
    fn container(&mut self, pool: &mut Pool, nested: bool) -> Option<Value<'a>> {
        Some(match self.peek()? {
            b'[' if !nested => {
                let mut items = pool.list();
                self.array(&mut items)?;
                Value::List(items)
            }
            b'{' if !nested => {
                let mut pairs = pool.dict();
                self.object(&mut pairs, pool, true)?;
                Value::Dict(pairs)
            }
            _ => return None,
        })
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if !self.s[self.pos..].starts_with(word) {
            return None;
        }
        self.pos += word.len();
        Some(())
    }

    /// A string without escapes, at its opening quote.
    #[inline(always)]
    fn string(&mut self) -> Option<&'a str> {
        let s: &'a [u8] = self.s;
        let start = self.pos + 1;
        let mut i = start;
        // Printable ASCII up to the closing quote, eight bytes at a time.
        loop {
            match s.get(i..i + 8) {
                Some(chunk) => {
                    let mut word = [0; 8];
                    word.copy_from_slice(chunk);
                    let mask = special(u64::from_le_bytes(word));
                    if mask == 0 {
                        i += 8;
                        continue;
                    }
                    i += (mask.trailing_zeros() / 8) as usize;
                }
                None => {
                    while s.get(i).is_some_and(|&b| !is_special(b)) {
                        i += 1;
                    }
                }
            }
            break;
        }
        match *s.get(i)? {
            b'"' => {}
            b if b >= 0x80 => return self.string_utf8(start),
            // An escape (simd-json unescapes) or a raw control character (not JSON).
            _ => return None,
        }
        self.pos = i + 1;
        // Safety: every byte before `i` is printable ASCII, valid UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(&s[start..i]) })
    }

    /// The rest of [`Self::string`] once a byte above ASCII turned up.
    #[cold]
    fn string_utf8(&mut self, start: usize) -> Option<&'a str> {
        let s: &'a [u8] = self.s;
        let end = start + memchr::memchr2(b'"', b'\\', &s[start..])?;
        if s[end] == b'\\' {
            return None;
        }
        let bytes = &s[start..end];
        if bytes.iter().any(|&b| b < 0x20) {
            return None;
        }
        let text = std::str::from_utf8(bytes).ok()?;
        self.pos = end + 1;
        Some(text)
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?`, short enough to convert exactly; exponents, `-0` and
    /// long numbers go to simd-json.
    fn number(&mut self) -> Option<Number> {
        let s: &'a [u8] = self.s;
        let start = self.pos;
        let negative = s.get(start) == Some(&b'-');
        let int_start = start + usize::from(negative);
        let (magnitude, int_end) = digits(s, int_start);
        let int_digits = int_end - int_start;
        if int_digits == 0 || (int_digits > 1 && s[int_start] == b'0') {
            return None;
        }
        match s.get(int_end) {
            Some(b'.') => {
                let (fraction, end) = digits(s, int_end + 1);
                let frac_digits = end - int_end - 1;
                if frac_digits == 0
                    || int_digits + frac_digits > MAX_FLOAT_DIGITS
                    || matches!(s.get(end), Some(b'e' | b'E'))
                {
                    return None;
                }
                self.pos = end;
                // At most 19 digits: the mantissa is exact in a u64. When it is also exact in
                // an f64 and so is the power of ten, one division rounds correctly (Clinger's
                // fast path, which Rust's parse also takes first, after parsing the text again).
                let mantissa = magnitude * POW10_U64[frac_digits] + fraction;
                if mantissa <= 1 << 53 {
                    let value = mantissa as f64 / POW10_F64[frac_digits];
                    return Some(Number::Float(if negative { -value } else { value }));
                }
                // Safety: sign, digits and a dot are ASCII.
                let text = unsafe { std::str::from_utf8_unchecked(&s[start..end]) };
                // Rust's parse, like simd-json's, rounds correctly: the same f64.
                text.parse::<f64>().ok().map(Number::Float)
            }
            Some(b'e' | b'E') => None,
            _ => {
                if int_digits > MAX_INT_DIGITS || (negative && magnitude == 0) {
                    return None;
                }
                // Up to 19 digits fit a u64 exactly; what does not fit an i64 (simd-json's
                // u64 or out of range) goes to simd-json.
                let value = if negative {
                    0i64.checked_sub_unsigned(magnitude)?
                } else {
                    i64::try_from(magnitude).ok()?
                };
                self.pos = int_end;
                Some(Number::Int(value))
            }
        }
    }
}

/// A JSON number as [`Reader::number`] returns it: small enough to come back in registers.
enum Number {
    Int(i64),
    Float(f64),
}

/// Powers of ten up to the most fraction digits [`Reader::number`] takes, each exact.
const POW10_U64: [u64; MAX_FLOAT_DIGITS + 1] = {
    let mut table = [1; MAX_FLOAT_DIGITS + 1];
    let mut i = 1;
    while i < table.len() {
        table[i] = table[i - 1] * 10;
        i += 1;
    }
    table
};
/// The same as `f64`; exact, as every power of ten up to 1e22 is.
const POW10_F64: [f64; MAX_FLOAT_DIGITS + 1] = {
    let mut table = [1.0; MAX_FLOAT_DIGITS + 1];
    let mut i = 1;
    while i < table.len() {
        table[i] = POW10_U64[i] as f64;
        i += 1;
    }
    table
};

/// The decimal digits at `s[i..]`: their value (wrapping past 19 digits; callers check the
/// count) and where they end.
#[inline(always)]
fn digits(s: &[u8], mut i: usize) -> (u64, usize) {
    let mut value: u64 = 0;
    while let Some(&b) = s.get(i) {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        value = value.wrapping_mul(10).wrapping_add(u64::from(d));
        i += 1;
    }
    (value, i)
}

/// The bytes of `word` a string scan must stop at (a quote, a backslash, a control character,
/// a byte above ASCII), as the high bit of each; exact up to the first one, which is all the
/// scan uses.
#[inline(always)]
fn special(word: u64) -> u64 {
    escape_bytes(word) | (word & HIGHS)
}

/// [`special`] for one byte.
#[inline(always)]
fn is_special(b: u8) -> bool {
    b == b'"' || b == b'\\' || !(0x20..0x80).contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Numbers with a fraction, of every digit count taken here, read as Rust's parse reads
    /// them: the division shortcut must round as the full algorithm does.
    #[test]
    fn fractions_round_like_parse() {
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut pool = Pool::default();
        for _ in 0..200_000 {
            let total = 2 + (next() % (MAX_FLOAT_DIGITS as u64 - 1)) as usize;
            let int_digits = 1 + (next() % (total as u64 - 1)) as usize;
            let mut text = String::new();
            if next() % 2 == 0 {
                text.push('-');
            }
            for i in 0..total {
                if i == int_digits {
                    text.push('.');
                }
                let digit = (next() % 10) as u8;
                // No leading zero before more integer digits.
                let digit = if i == 0 && int_digits > 1 {
                    digit.max(1)
                } else {
                    digit
                };
                text.push(char::from(b'0' + digit));
            }
            let line = format!("{{\"n\": {text}}}");
            let value = Value::Dict(decode(line.as_bytes(), &mut pool).expect("fast path"));
            let want: f64 = text.parse().unwrap();
            match value.get("n") {
                Some(Value::Float(got)) => assert_eq!(got.to_bits(), want.to_bits(), "{text}"),
                other => panic!("{text}: {other:?}"),
            }
            pool.recycle(value);
        }
    }
}
