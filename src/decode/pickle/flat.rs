//! The fast path for the pickle nearly every client sends.
//!
//! CPython's `SocketHandler` and `DatagramHandler` pickle a record's `__dict__` with protocol 1:
//! `EMPTY_DICT`, a memo PUT, then `MARK`, key and value pairs of strings and numbers (most of
//! them PUT too, a few fetched back with GET), now and then a small list or dict of scalars
//! (`tags`, an `extra`), `SETITEMS`, `STOP`. [`decode`] reads that shape (in any protocol)
//! with a stack of plain values, none of the general machine's per-value bookkeeping (weights,
//! depths, memo tracking of containers) and a memo of scalar copies only. At the first opcode
//! outside the shape it returns `None` and the caller runs the general machine from the start,
//! so every result but the simple one, errors included, is the machine's. For the pickles it
//! accepts it builds the value the machine would (the tests and the `pickle` fuzz target
//! compare the two).

use std::borrow::Cow;

use super::{decimal_int, long_le, op, trim, utf8, Limits, Memo, Scalar, HIGHEST_PROTOCOL};
use crate::decode::Pool;
use crate::value::Value;

/// The input, read front to back; every read is bounds-checked and fails with `None`.
struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    #[inline(always)]
    fn byte(&mut self) -> Option<u8> {
        let b = *self.input.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    #[inline(always)]
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let input: &'a [u8] = self.input;
        let end = self.pos.checked_add(n)?;
        let bytes = input.get(self.pos..end)?;
        self.pos = end;
        Some(bytes)
    }

    #[inline(always)]
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn line(&mut self) -> Option<&'a [u8]> {
        let input: &'a [u8] = self.input;
        let rest = input.get(self.pos..)?;
        let n = rest.iter().position(|&b| b == b'\n')?;
        self.pos += n + 1;
        Some(&rest[..n])
    }
}

/// Decodes `input` when it has the shape described above; `None` means "use the general
/// machine".
///
/// `stack`, `marks` and `memo` come in empty and are left filled; `pool` gives containers
/// their vectors.
pub(super) fn decode<'a>(
    input: &'a [u8],
    limits: &Limits,
    stack: &mut Vec<Value<'a>>,
    marks: &mut Vec<usize>,
    memo: &mut Vec<Memo<'a>>,
    pool: &mut Pool,
) -> Option<Value<'a>> {
    // Two container levels (a dict holding a list; see `is_flat`) and two open MARKs at most,
    // so the machine's depth limit cannot trip on what this path accepts.
    if limits.max_depth < 3 {
        return None;
    }
    // The vectors are moved in, so that their lengths are fields of the machine, which the
    // compiler can tell apart from the values written through their buffers.
    let mut lean = Lean {
        input,
        limits,
        stack: std::mem::take(stack),
        marks: std::mem::take(marks),
        memo: std::mem::take(memo),
        pool,
    };
    let result = lean.run();
    if result.is_none() {
        // The machine starts over; the vectors built so far go back to the pool.
        for value in lean.stack.drain(..) {
            lean.pool.recycle(value);
        }
    }
    *stack = lean.stack;
    *marks = lean.marks;
    *memo = lean.memo;
    result
}

/// Open MARKs allowed at once.
const MAX_MARKS: usize = 2;

/// The lean machine: a stack of plain values, the MARKs, a memo of scalar copies.
struct Lean<'a, 's> {
    input: &'a [u8],
    limits: &'s Limits,
    stack: Vec<Value<'a>>,
    marks: Vec<usize>,
    memo: Vec<Memo<'a>>,
    pool: &'s mut Pool,
}

impl<'a> Lean<'a, '_> {
    fn run(&mut self) -> Option<Value<'a>> {
        // The read position and the count of values built (one per push, as the machine
        // counts) are locals, kept in registers: as fields behind `self` they were loaded and
        // stored around every value written to the stack, which the compiler could not tell
        // apart from them.
        let mut r = Reader {
            input: self.input,
            pos: 0,
        };
        let mut items = 0;
        // The memo copy of the value on top, while that is the scalar pushed last; a PUT of
        // anything else (a container, or nothing above a MARK) takes the slow way.
        let mut last: Option<Scalar<'a>> = None;
        // Pushes a value onto the stack and goes on with the next opcode. Each opcode pushes
        // its own, so the value is written where it lies on the stack, straight from
        // registers: a `Value` chosen by a `match` and pushed after went through a temporary,
        // and copying that out cost a store-forwarding stall per value.
        macro_rules! push {
            ($value:expr, $last:expr) => {{
                items += 1;
                if items > self.limits.max_items {
                    // Over the budget as the machine counts it: its TooLarge.
                    return None;
                }
                let stack: &mut Vec<Value<'a>> = &mut self.stack;
                stack.reserve(1);
                let len = stack.len();
                // Safety: `reserve` made room at `len`, written before the length covers it.
                unsafe {
                    stack.as_mut_ptr().add(len).write($value);
                    stack.set_len(len + 1);
                }
                // Protocol 1 memoizes nearly every value right away: taking that BINPUT here
                // is a well-predicted test, where the opcode dispatch mispredicts often.
                if let [op::BINPUT, id, ..] = r.input[r.pos..] {
                    r.pos += 2;
                    // `$last` is built afresh here, from registers. Read back from `last`,
                    // which lives on the stack, its bytes were stored in pieces and loaded
                    // across them, a store-forwarding stall per value: half of this loop.
                    self.put(id.into(), $last)?;
                }
                last = $last;
                continue;
            }};
        }
        macro_rules! push_scalar {
            ($scalar:expr) => {
                match $scalar {
                    Scalar::None => push!(Value::None, Some(Scalar::None)),
                    Scalar::Bool(b) => push!(Value::Bool(b), Some(Scalar::Bool(b))),
                    Scalar::Int(i) => push!(Value::Int(i), Some(Scalar::Int(i))),
                    Scalar::Float(f) => push!(Value::Float(f), Some(Scalar::Float(f))),
                    Scalar::Str(s) => push!(Value::Str(Cow::Borrowed(s)), Some(Scalar::Str(s))),
                    Scalar::Bytes(b) => {
                        push!(Value::Bytes(Cow::Borrowed(b)), Some(Scalar::Bytes(b)))
                    }
                }
            };
        }
        macro_rules! push_int {
            ($int:expr) => {{
                let i: i64 = $int;
                push!(Value::Int(i), Some(Scalar::Int(i)))
            }};
        }
        macro_rules! push_str {
            ($bytes:expr) => {{
                let s = text($bytes)?;
                push!(Value::Str(Cow::Borrowed(s)), Some(Scalar::Str(s)))
            }};
        }
        macro_rules! push_bytes {
            ($bytes:expr) => {{
                let b: &'a [u8] = $bytes;
                push!(Value::Bytes(Cow::Borrowed(b)), Some(Scalar::Bytes(b)))
            }};
        }
        loop {
            let code = r.byte()?;
            match code {
                op::BINUNICODE => {
                    let n = u32::from_le_bytes(r.array()?);
                    push_str!(r.take(usize::try_from(n).ok()?)?)
                }
                op::SHORT_BINUNICODE => {
                    let n = r.byte()?;
                    push_str!(r.take(n.into())?)
                }
                op::BINPUT => {
                    let id = r.byte()?;
                    self.put(id.into(), last)?;
                }
                op::LONG_BINPUT => {
                    let id = u32::from_le_bytes(r.array()?);
                    self.put(id, last)?;
                }
                op::MEMOIZE => {
                    let id = u32::try_from(self.memo.len()).ok()?;
                    self.put(id, last)?;
                }
                op::BINGET => {
                    let id = r.byte()?;
                    push_scalar!(self.get(id.into())?)
                }
                op::LONG_BINGET => {
                    let id = u32::from_le_bytes(r.array()?);
                    push_scalar!(self.get(id)?)
                }
                op::BININT => push_int!(i32::from_le_bytes(r.array()?).into()),
                op::BININT1 => push_int!(r.byte()?.into()),
                op::BININT2 => push_int!(u16::from_le_bytes(r.array()?).into()),
                op::BINFLOAT => push_scalar!(Scalar::Float(f64::from_be_bytes(r.array()?))),
                op::NONE => push_scalar!(Scalar::None),
                op::NEWTRUE => push_scalar!(Scalar::Bool(true)),
                op::NEWFALSE => push_scalar!(Scalar::Bool(false)),
                op::INT => {
                    // Protocol 1 writes booleans as `I01`/`I00`.
                    let line = r.line()?;
                    match line {
                        b"00" => push_scalar!(Scalar::Bool(false)),
                        b"01" => push_scalar!(Scalar::Bool(true)),
                        _ => push_scalar!(small(decimal_int(trim(line)).ok()?)?),
                    }
                }
                op::LONG => {
                    // Protocol 1 writes ints beyond 32 bits (thread ids) as text.
                    let line = trim(r.line()?);
                    let digits = line.strip_suffix(b"L").unwrap_or(line);
                    match digits_int(digits) {
                        Some(i) => push_int!(i),
                        None => push_scalar!(small(decimal_int(digits).ok()?)?),
                    }
                }
                op::LONG1 => {
                    let n = r.byte()?;
                    push_scalar!(small(long_le(r.take(n.into())?).ok()?)?)
                }
                op::BINUNICODE8 => {
                    let n = u64::from_le_bytes(r.array()?);
                    push_str!(r.take(usize::try_from(n).ok()?)?)
                }
                op::SHORT_BINBYTES => {
                    let n = r.byte()?;
                    push_bytes!(r.take(n.into())?)
                }
                op::BINBYTES => {
                    let n = u32::from_le_bytes(r.array()?);
                    push_bytes!(r.take(usize::try_from(n).ok()?)?)
                }
                op::EMPTY_DICT => {
                    let pairs = self.pool.dict();
                    push!(Value::Dict(pairs), None)
                }
                op::EMPTY_LIST => {
                    let items = self.pool.list();
                    push!(Value::List(items), None)
                }
                op::EMPTY_TUPLE => push!(Value::Tuple(Vec::new()), None),
                op::MARK => {
                    if self.marks.len() >= MAX_MARKS {
                        return None;
                    }
                    self.marks.push(self.stack.len());
                    last = None;
                }
                op::SETITEMS => {
                    let start = self.marks.pop()?;
                    self.extend(start, true)?;
                    last = None;
                }
                op::APPENDS => {
                    let start = self.marks.pop()?;
                    self.extend(start, false)?;
                    last = None;
                }
                op::SETITEM => {
                    let start = self.top_n(2)?;
                    self.extend(start, true)?;
                    last = None;
                }
                op::APPEND => {
                    let start = self.top_n(1)?;
                    self.extend(start, false)?;
                    last = None;
                }
                op::TUPLE => {
                    let start = self.marks.pop()?;
                    let tuple = self.tuple(start)?;
                    push!(tuple, None)
                }
                op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                    let start = self.top_n(usize::from(code - op::TUPLE1) + 1)?;
                    let tuple = self.tuple(start)?;
                    push!(tuple, None)
                }
                op::FRAME => {
                    // Checked like the machine does, then ignored.
                    let n = u64::from_le_bytes(r.array()?);
                    if n > (r.input.len() - r.pos) as u64 {
                        return None;
                    }
                }
                op::PROTO => {
                    if r.byte()? > HIGHEST_PROTOCOL {
                        return None;
                    }
                }
                op::STOP => return self.stop(r.pos),
                _ => return None,
            }
        }
    }

    /// STOP, read with the input up to `pos`.
    fn stop(&mut self, pos: usize) -> Option<Value<'a>> {
        if self.stack.len() != 1 || !self.marks.is_empty() || pos != self.input.len() {
            return None;
        }
        self.stack.pop()
    }

    /// Where the values above the last MARK begin.
    #[inline(always)]
    fn frame_start(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    /// Where the top `n` values begin; they must all be above the last MARK.
    #[inline(always)]
    fn top_n(&self, n: usize) -> Option<usize> {
        self.stack
            .len()
            .checked_sub(n)
            .filter(|&start| start >= self.frame_start())
    }

    /// A memo PUT of the top value: a scalar (`last`, when it is the top) is copied, a
    /// container is marked as not copyable (a GET of it builds a shape this path leaves to the
    /// machine).
    #[inline(always)]
    fn put(&mut self, id: u32, last: Option<Scalar<'a>>) -> Option<()> {
        let entry = match last {
            Some(s) => Memo::Copy(s),
            None => {
                // Nothing above the last MARK is the machine's StackUnderflow.
                self.top_n(1)?;
                Memo::Lost
            }
        };
        let id = id as usize;
        if id == self.memo.len() && id < self.limits.max_memo {
            self.memo.push(entry);
        } else if id < self.memo.len() {
            self.memo[id] = entry;
        } else {
            return None;
        }
        Some(())
    }

    /// A memo GET of a scalar copied at its PUT.
    #[inline(always)]
    fn get(&self, id: u32) -> Option<Scalar<'a>> {
        match self.memo.get(id as usize)? {
            Memo::Copy(s) => Some(*s),
            _ => None,
        }
    }

    /// Moves the values from `start` up into the dict (`pairs`) or list just below them.
    fn extend(&mut self, start: usize, pairs: bool) -> Option<()> {
        let parent = start.checked_sub(1).filter(|&p| p >= self.frame_start())?;
        let (below, children) = self.stack.split_at_mut(start);
        if !children.iter().all(is_flat) || (pairs && children.len() % 2 != 0) {
            return None;
        }
        match &mut below[parent] {
            Value::Dict(items) if pairs => {
                let n = children.len() / 2;
                items.reserve(n);
                // Safety: `reserve` made room for `n` pairs past the length, each written
                // once from two children; the stack then forgets the children, so each value
                // has one owner. Plain copies, where draining the stack as an iterator of
                // `Option<Value>` shuffled every value through the stack in pieces.
                unsafe {
                    let from = children.as_ptr();
                    let to = items.as_mut_ptr().add(items.len());
                    for i in 0..n {
                        let pair = to.add(i);
                        std::ptr::addr_of_mut!((*pair).0).write(from.add(2 * i).read());
                        std::ptr::addr_of_mut!((*pair).1).write(from.add(2 * i + 1).read());
                    }
                    items.set_len(items.len() + n);
                    self.stack.set_len(start);
                }
            }
            Value::List(items) if !pairs => {
                items.reserve(children.len());
                // Safety: as for a dict, one value at a time.
                unsafe {
                    let from = children.as_ptr();
                    let to = items.as_mut_ptr().add(items.len());
                    for i in 0..children.len() {
                        to.add(i).write(from.add(i).read());
                    }
                    items.set_len(items.len() + children.len());
                    self.stack.set_len(start);
                }
            }
            _ => return None,
        }
        Some(())
    }

    /// A tuple of the values from `start` up.
    fn tuple(&mut self, start: usize) -> Option<Value<'a>> {
        if !self.stack[start..].iter().all(is_flat) {
            return None;
        }
        let mut values = self.pool.list();
        values.extend(self.stack.drain(start..));
        Some(Value::Tuple(values))
    }
}

fn is_container(value: &Value<'_>) -> bool {
    matches!(value, Value::Dict(_) | Value::List(_) | Value::Tuple(_))
}

/// A scalar, or a container holding only scalars: the only values this path puts inside
/// another, so nothing it builds nests more than two deep.
fn is_flat(value: &Value<'_>) -> bool {
    match value {
        Value::Dict(pairs) => pairs
            .iter()
            .all(|(k, v)| !is_container(k) && !is_container(v)),
        Value::List(items) | Value::Tuple(items) => !items.iter().any(is_container),
        _ => true,
    }
}

/// Text that borrows from the input; anything the machine would copy (invalid UTF-8) is left
/// to it.
#[inline(always)]
fn text(bytes: &[u8]) -> Option<&str> {
    match utf8(bytes) {
        Cow::Borrowed(s) => Some(s),
        Cow::Owned(_) => None,
    }
}

/// Up to 19 plain decimal digits (a thread id, a time in nanoseconds) that fit an `i64`;
/// anything else (a sign, more digits, a larger value) is left to `decimal_int`.
#[inline]
fn digits_int(digits: &[u8]) -> Option<i64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    // 19 digits stay below 10^19, which a u64 holds.
    let mut value: u64 = 0;
    for &d in digits {
        let d = d.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        value = value * 10 + u64::from(d);
    }
    i64::try_from(value).ok()
}

/// An integer that fits in 64 bits; a larger one owns its digits and goes to the machine.
fn small(value: Value<'_>) -> Option<Scalar<'static>> {
    match value {
        Value::Int(i) => Some(Scalar::Int(i)),
        Value::Bool(b) => Some(Scalar::Bool(b)),
        _ => None,
    }
}
