//! Pickle payloads to [`Value`]s, without running or resolving anything.
//!
//! CPython's `SocketHandler`/`DatagramHandler` send `pickle.dumps(dict(record.__dict__), 1)`
//! behind a 4-byte length (`makePickle` in CPython `Lib/logging/handlers.py`); [`decode`] takes
//! the bytes after that length. Every opcode of protocols 0–5 is understood (CPython
//! `Lib/pickletools.py` documents them); classes and functions stay names ([`Value::Global`],
//! [`Value::Object`]), and the few forms CPython uses for plain values (bytes under protocols
//! 0–2, sets under 0–3, `copyreg` helpers) become plain values. The input is hostile: nesting,
//! element counts (memo copies included), memo size and every wire length are bounded by
//! [`Limits`] before anything is allocated.

use std::borrow::Cow;
use std::mem;

mod flat;

use super::{retype, Pool};
use crate::value::{Global, Object, Value};

/// Bounds on what one pickle may build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of containers, and most MARKs open at once.
    pub max_depth: usize,
    /// Most values built in total, counting every element copied by GET/DUP.
    pub max_items: usize,
    /// Most memo entries.
    pub max_memo: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 100,
            max_items: 1_000_000,
            max_memo: 100_000,
        }
    }
}

/// Why a pickle was rejected. All of them are the client's doing.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PickleError {
    /// The input ended before STOP, or a length claims more bytes than remain.
    #[error("pickle is truncated")]
    Truncated,
    /// A byte that is no pickle opcode.
    #[error("unknown pickle opcode 0x{0:02x}")]
    UnknownOpcode(u8),
    /// An opcode needed more values than the stack holds above the last MARK.
    #[error("pickle stack underflow")]
    StackUnderflow,
    /// An opcode that collects values up to a MARK found no MARK.
    #[error("pickle MARK missing")]
    NoMark,
    /// Containers or MARKs nest deeper than [`Limits::max_depth`].
    #[error("pickle nests too deep")]
    TooDeep,
    /// More values than [`Limits::max_items`] (memo copies included), more memo entries than
    /// [`Limits::max_memo`], or an integer too long to print.
    #[error("pickle is too large")]
    TooLarge,
    /// A GET of a memo id never PUT, or a PUT that skips ids.
    #[error("pickle memo id is unknown")]
    BadMemo,
    /// An opcode this decoder refuses: persistent ids, the extension registry, out-of-band
    /// buffers, protocols above 5.
    #[error("unsupported pickle feature: {0}")]
    Unsupported(&'static str),
    /// A text argument (string literal, number, name, memo id) is malformed.
    #[error("bad pickle text argument: {0}")]
    BadText(&'static str),
    /// An opcode's operands have the wrong shape (APPEND to a non-list, odd SETITEMS, ...).
    #[error("malformed pickle: {0}")]
    Malformed(&'static str),
    /// Bytes follow STOP.
    #[error("bytes after pickle STOP")]
    TrailingData,
}

type Result<T> = std::result::Result<T, PickleError>;

/// Decodes one complete pickle into the value its STOP returns.
///
/// A one-off: [`Decoder::decode_with`] does the same with buffers kept between records.
///
/// # Errors
///
/// Any [`PickleError`]: the pickle is truncated, malformed, over [`Limits`], or uses a feature
/// that would need code or out-of-band data to load.
pub fn decode<'a>(input: &'a [u8], limits: &Limits) -> Result<Value<'a>> {
    let mut pool = Pool::default();
    if let Some(value) = decode_flat(input, limits, &mut pool) {
        return Ok(value);
    }
    Machine::new(input, limits, Scratch::default(), &mut pool).run()
}

/// The fast path alone, with vectors of its own.
fn decode_flat<'a>(input: &'a [u8], limits: &Limits, pool: &mut Pool) -> Option<Value<'a>> {
    let (mut stack, mut marks, mut memo) = (Vec::new(), Vec::new(), Vec::new());
    flat::decode(input, limits, &mut stack, &mut marks, &mut memo, pool)
}

/// [`decode`] by the general machine alone, without the fast path for flat records; for
/// checking that the two agree.
#[doc(hidden)]
pub fn decode_general<'a>(input: &'a [u8], limits: &Limits) -> Result<Value<'a>> {
    let mut pool = Pool::default();
    Machine::new(input, limits, Scratch::default(), &mut pool).run()
}

/// A pickle decoder that keeps its working memory between records: its stack, memo and the
/// vectors of the records it built, so that decoding a stream of similar records allocates
/// nothing once it has seen the first few.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Empty between calls; typed `'static` only because no value is in them then.
    scratch: Scratch<'static>,
    pool: Pool,
}

/// The machine's own vectors, empty between calls.
#[derive(Debug, Default)]
struct Scratch<'a> {
    stack: Vec<Slot<'a>>,
    /// The fast path's stack ([`flat`]).
    values: Vec<Value<'a>>,
    marks: Vec<usize>,
    memo: Vec<Memo<'a>>,
    saved: Vec<Slot<'a>>,
}

/// Scratch vectors that grew past this many elements are shrunk back after the record, so
/// one huge pickle does not pin its memory.
const SCRATCH_CAPACITY_MAX: usize = 4096;

impl<'a> Scratch<'a> {
    /// Empties every vector and retypes it for another record's lifetime.
    fn recycle<'b>(self) -> Scratch<'b> {
        Scratch {
            stack: Self::keep(self.stack),
            values: Self::keep(self.values),
            marks: Self::keep(self.marks),
            memo: Self::keep(self.memo),
            saved: Self::keep(self.saved),
        }
    }

    /// Empties one vector, shrinks it when it grew too large, and retypes it.
    #[inline(always)]
    fn keep<T, U>(mut items: Vec<T>) -> Vec<U> {
        items.clear();
        if items.capacity() > SCRATCH_CAPACITY_MAX {
            items.shrink_to(SCRATCH_CAPACITY_MAX);
        }
        retype(items)
    }
}

impl Decoder {
    /// A decoder with nothing allocated yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes one complete pickle and calls `f` with the value its STOP returns; the value's
    /// vectors are kept for the next call.
    ///
    /// # Errors
    ///
    /// As [`decode`]; `f` is then not called.
    pub fn decode_with<R>(
        &mut self,
        input: &[u8],
        limits: &Limits,
        f: impl FnOnce(&Value<'_>) -> R,
    ) -> Result<R> {
        // The fast path's vectors are retyped one by one, not as a `Scratch` moved whole:
        // the moves of the struct went through memory and stalled on store forwarding.
        let mut values = retype(mem::take(&mut self.scratch.values));
        let mut memo = retype(mem::take(&mut self.scratch.memo));
        let marks = &mut self.scratch.marks;
        let mark = self.pool.mark();
        let flat = flat::decode(input, limits, &mut values, marks, &mut memo, &mut self.pool);
        marks.clear();
        if let Some(value) = flat {
            self.scratch.values = Scratch::keep(values);
            self.scratch.memo = Scratch::keep(memo);
            let out = f(&value);
            self.pool.recycle_fast(value, mark);
            return Ok(out);
        }
        let scratch = Scratch {
            stack: retype(mem::take(&mut self.scratch.stack)),
            values: Scratch::keep(values),
            marks: mem::take(&mut self.scratch.marks),
            memo: Scratch::keep(memo),
            saved: retype(mem::take(&mut self.scratch.saved)),
        };
        let mut machine = Machine::new(input, limits, scratch, &mut self.pool);
        let result = machine.run();
        self.scratch = machine.into_scratch().recycle();
        let value = result?;
        let out = f(&value);
        self.pool.recycle(value);
        Ok(out)
    }
}

/// Opcodes, named as in CPython `Lib/pickle.py`.
mod op {
    pub(super) const MARK: u8 = b'(';
    pub(super) const STOP: u8 = b'.';
    pub(super) const POP: u8 = b'0';
    pub(super) const POP_MARK: u8 = b'1';
    pub(super) const DUP: u8 = b'2';
    pub(super) const FLOAT: u8 = b'F';
    pub(super) const INT: u8 = b'I';
    pub(super) const BININT: u8 = b'J';
    pub(super) const BININT1: u8 = b'K';
    pub(super) const LONG: u8 = b'L';
    pub(super) const BININT2: u8 = b'M';
    pub(super) const NONE: u8 = b'N';
    pub(super) const PERSID: u8 = b'P';
    pub(super) const BINPERSID: u8 = b'Q';
    pub(super) const REDUCE: u8 = b'R';
    pub(super) const STRING: u8 = b'S';
    pub(super) const BINSTRING: u8 = b'T';
    pub(super) const SHORT_BINSTRING: u8 = b'U';
    pub(super) const UNICODE: u8 = b'V';
    pub(super) const BINUNICODE: u8 = b'X';
    pub(super) const APPEND: u8 = b'a';
    pub(super) const BUILD: u8 = b'b';
    pub(super) const GLOBAL: u8 = b'c';
    pub(super) const DICT: u8 = b'd';
    pub(super) const EMPTY_DICT: u8 = b'}';
    pub(super) const APPENDS: u8 = b'e';
    pub(super) const GET: u8 = b'g';
    pub(super) const BINGET: u8 = b'h';
    pub(super) const INST: u8 = b'i';
    pub(super) const LONG_BINGET: u8 = b'j';
    pub(super) const LIST: u8 = b'l';
    pub(super) const EMPTY_LIST: u8 = b']';
    pub(super) const OBJ: u8 = b'o';
    pub(super) const PUT: u8 = b'p';
    pub(super) const BINPUT: u8 = b'q';
    pub(super) const LONG_BINPUT: u8 = b'r';
    pub(super) const SETITEM: u8 = b's';
    pub(super) const TUPLE: u8 = b't';
    pub(super) const EMPTY_TUPLE: u8 = b')';
    pub(super) const SETITEMS: u8 = b'u';
    pub(super) const BINFLOAT: u8 = b'G';
    // Protocol 2.
    pub(super) const PROTO: u8 = 0x80;
    pub(super) const NEWOBJ: u8 = 0x81;
    pub(super) const EXT1: u8 = 0x82;
    pub(super) const EXT2: u8 = 0x83;
    pub(super) const EXT4: u8 = 0x84;
    pub(super) const TUPLE1: u8 = 0x85;
    pub(super) const TUPLE2: u8 = 0x86;
    pub(super) const TUPLE3: u8 = 0x87;
    pub(super) const NEWTRUE: u8 = 0x88;
    pub(super) const NEWFALSE: u8 = 0x89;
    pub(super) const LONG1: u8 = 0x8a;
    pub(super) const LONG4: u8 = 0x8b;
    // Protocol 3.
    pub(super) const BINBYTES: u8 = b'B';
    pub(super) const SHORT_BINBYTES: u8 = b'C';
    // Protocol 4.
    pub(super) const SHORT_BINUNICODE: u8 = 0x8c;
    pub(super) const BINUNICODE8: u8 = 0x8d;
    pub(super) const BINBYTES8: u8 = 0x8e;
    pub(super) const EMPTY_SET: u8 = 0x8f;
    pub(super) const ADDITEMS: u8 = 0x90;
    pub(super) const FROZENSET: u8 = 0x91;
    pub(super) const NEWOBJ_EX: u8 = 0x92;
    pub(super) const STACK_GLOBAL: u8 = 0x93;
    pub(super) const MEMOIZE: u8 = 0x94;
    pub(super) const FRAME: u8 = 0x95;
    // Protocol 5.
    pub(super) const BYTEARRAY8: u8 = 0x96;
    pub(super) const NEXT_BUFFER: u8 = 0x97;
    pub(super) const READONLY_BUFFER: u8 = 0x98;
}

/// Longest LONG4 payload accepted, in bytes (about 9,900 decimal digits): printing a long
/// integer is quadratic, and CPython itself refuses to print more than 4,300 digits.
const MAX_LONG_BYTES: usize = 4096;
/// Longest protocol 0 LONG/INT text accepted, in digits.
const MAX_LONG_DIGITS: usize = 10_000;
/// Highest pickle protocol this decoder knows.
const HIGHEST_PROTOCOL: u8 = 5;

/// A value on the unpickler stack with what the bounds need to know about it.
#[derive(Debug, Clone)]
struct Slot<'a> {
    value: Value<'a>,
    /// Values in `value`, itself included.
    weight: usize,
    /// Container nesting of `value`: 0 for a scalar, 1 for a flat container.
    depth: usize,
    /// The memo id this slot was last PUT under, when its memo entry tracks it on the stack
    /// ([`Memo::OnStack`]); never set for values memoized as a [`Memo::Copy`].
    memo: Option<u32>,
}

/// Bytes of owned text that weigh as much as one value: a copy of a string decoded into its
/// own allocation costs its length, so memo copies of a large one use up the budget quickly.
const BYTES_PER_WEIGHT: usize = 64;

impl<'a> Slot<'a> {
    fn scalar(value: Value<'a>) -> Self {
        let owned = match &value {
            Value::Str(Cow::Owned(s)) => s.len(),
            Value::Bytes(Cow::Owned(b)) => b.len(),
            _ => 0,
        };
        Slot {
            value,
            weight: 1 + owned / BYTES_PER_WEIGHT,
            depth: 0,
            memo: None,
        }
    }
}

/// Where a memoized value is.
///
/// CPython's memo holds references, so a GET sees the object as it is when the GET runs (a
/// list PUT while empty and filled afterwards). A value that can still change (a container, an
/// object) is therefore read from the stack while it is there, and copied into `saved` only
/// when it leaves the stack. A scalar never changes: when it costs nothing to copy (a number,
/// or text borrowed from the input) the memo keeps the copy from the PUT on, and its trip
/// through the stack needs no tracking. Protocol 1 PUTs nearly every string of a record, so
/// that is the common case.
///
/// Entries are `Copy`, so emptying the memo costs nothing.
#[derive(Debug, Clone, Copy)]
enum Memo<'a> {
    /// A scalar copied at PUT.
    Copy(Scalar<'a>),
    /// Still on the stack at this index.
    OnStack(usize),
    /// Left the stack; its last state is `saved[i]`.
    Saved(usize),
    /// Left the stack after the copy budget was spent; a GET of it is [`PickleError::TooLarge`].
    Lost,
}

/// A [`Value`] that is copied without allocating.
#[derive(Debug, Clone, Copy)]
enum Scalar<'a> {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
    Bytes(&'a [u8]),
}

impl<'a> Scalar<'a> {
    /// The copy of a slot's value, when it is a scalar that weighs 1 and borrows or owns
    /// nothing on the heap.
    fn of(slot: &Slot<'a>) -> Option<Self> {
        if slot.weight != 1 {
            // A REDUCE result (bytes from `_codecs.encode`) weighs its arguments too; GET must
            // charge that, so it is tracked like a container.
            return None;
        }
        Self::of_value(&slot.value)
    }

    /// The copy of a value that is a scalar borrowing or owning nothing on the heap.
    #[inline(always)]
    fn of_value(value: &Value<'a>) -> Option<Self> {
        Some(match *value {
            Value::None => Scalar::None,
            Value::Bool(b) => Scalar::Bool(b),
            Value::Int(i) => Scalar::Int(i),
            Value::Float(f) => Scalar::Float(f),
            Value::Str(Cow::Borrowed(s)) => Scalar::Str(s),
            Value::Bytes(Cow::Borrowed(b)) => Scalar::Bytes(b),
            _ => return None,
        })
    }

    fn value(self) -> Value<'a> {
        match self {
            Scalar::None => Value::None,
            Scalar::Bool(b) => Value::Bool(b),
            Scalar::Int(i) => Value::Int(i),
            Scalar::Float(f) => Value::Float(f),
            Scalar::Str(s) => Value::Str(Cow::Borrowed(s)),
            Scalar::Bytes(b) => Value::Bytes(Cow::Borrowed(b)),
        }
    }
}

/// The unpickler: one pickle's state.
struct Machine<'a, 'l> {
    input: &'a [u8],
    pos: usize,
    limits: &'l Limits,
    stack: Vec<Slot<'a>>,
    /// Stack lengths at each open MARK.
    marks: Vec<usize>,
    memo: Vec<Memo<'a>>,
    /// Last states of memoized values that left the stack ([`Memo::Saved`]).
    saved: Vec<Slot<'a>>,
    /// The fast path's stack, unused here, kept for the next record.
    values: Vec<Value<'a>>,
    /// Values built so far, copies included.
    items: usize,
    /// Values that may still be copied into `saved` when they leave the stack.
    snapshot_budget: usize,
    /// Where container vectors come from.
    pool: &'l mut Pool,
}

impl<'a, 'l> Machine<'a, 'l> {
    fn new(input: &'a [u8], limits: &'l Limits, scratch: Scratch<'a>, pool: &'l mut Pool) -> Self {
        let Scratch {
            stack,
            values,
            marks,
            memo,
            saved,
        } = scratch;
        Machine {
            input,
            pos: 0,
            limits,
            stack,
            marks,
            memo,
            saved,
            values,
            items: 0,
            snapshot_budget: limits.max_items,
            pool,
        }
    }

    /// Gives the vectors back (not yet emptied).
    fn into_scratch(self) -> Scratch<'a> {
        Scratch {
            stack: self.stack,
            values: self.values,
            marks: self.marks,
            memo: self.memo,
            saved: self.saved,
        }
    }

    fn run(&mut self) -> Result<Value<'a>> {
        loop {
            let code = self.byte()?;
            match code {
                op::STOP => return self.stop(),
                op::MARK => {
                    if self.marks.len() >= self.limits.max_depth {
                        return Err(PickleError::TooDeep);
                    }
                    self.marks.push(self.stack.len());
                }
                op::POP => {
                    if self.stack.len() > self.frame_start() {
                        self.discard_from(self.stack.len() - 1);
                    } else {
                        // CPython: POP on an empty frame pops the MARK.
                        self.pop_mark()?;
                    }
                }
                op::POP_MARK => {
                    let start = self.pop_mark()?;
                    self.discard_from(start);
                }
                op::DUP => {
                    let top = self.top()?;
                    let (weight, value, depth) = (top.weight, top.value.clone(), top.depth);
                    self.charge(weight)?;
                    self.stack.push(Slot {
                        value,
                        weight,
                        depth,
                        memo: None,
                    });
                }

                // Numbers.
                op::NONE => self.push(Value::None)?,
                op::NEWTRUE => self.push(Value::Bool(true))?,
                op::NEWFALSE => self.push(Value::Bool(false))?,
                op::INT => {
                    let line = self.line()?;
                    let value = match line {
                        b"00" => Value::Bool(false),
                        b"01" => Value::Bool(true),
                        _ => decimal_int(trim(line))?,
                    };
                    self.push(value)?;
                }
                op::BININT => {
                    let v = i32::from_le_bytes(self.array()?);
                    self.push(Value::Int(v.into()))?;
                }
                op::BININT1 => {
                    let v = self.byte()?;
                    self.push(Value::Int(v.into()))?;
                }
                op::BININT2 => {
                    let v = u16::from_le_bytes(self.array()?);
                    self.push(Value::Int(v.into()))?;
                }
                op::LONG => {
                    let line = trim(self.line()?);
                    let digits = line.strip_suffix(b"L").unwrap_or(line);
                    let value = decimal_int(digits)?;
                    self.push(value)?;
                }
                op::LONG1 => {
                    let n = self.byte()?;
                    let bytes = self.take(n.into())?;
                    self.push(long_le(bytes)?)?;
                }
                op::LONG4 => {
                    let n = i32::from_le_bytes(self.array()?);
                    let n = usize::try_from(n).map_err(|_| PickleError::BadText("LONG4 size"))?;
                    if n > MAX_LONG_BYTES {
                        return Err(PickleError::TooLarge);
                    }
                    let bytes = self.take(n)?;
                    self.push(long_le(bytes)?)?;
                }
                op::FLOAT => {
                    let line = self.line()?;
                    let v = std::str::from_utf8(trim(line))
                        .ok()
                        .and_then(|s| s.parse::<f64>().ok())
                        .ok_or(PickleError::BadText("FLOAT"))?;
                    self.push(Value::Float(v))?;
                }
                op::BINFLOAT => {
                    let v = f64::from_be_bytes(self.array()?);
                    self.push(Value::Float(v))?;
                }

                // Strings and bytes.
                op::STRING => {
                    let line = self.line()?;
                    let quoted = match line {
                        [q @ (b'\'' | b'"'), inner @ .., last] if q == last => inner,
                        _ => return Err(PickleError::BadText("STRING not quoted")),
                    };
                    let bytes = escape_decode(quoted)?;
                    self.push(py2_str(bytes))?;
                }
                op::BINSTRING => {
                    let n = i32::from_le_bytes(self.array()?);
                    let n =
                        usize::try_from(n).map_err(|_| PickleError::BadText("BINSTRING size"))?;
                    let bytes = self.take(n)?;
                    self.push(py2_str(Cow::Borrowed(bytes)))?;
                }
                op::SHORT_BINSTRING => {
                    let n = self.byte()?;
                    let bytes = self.take(n.into())?;
                    self.push(py2_str(Cow::Borrowed(bytes)))?;
                }
                op::UNICODE => {
                    let line = self.line()?;
                    let text = raw_unicode_escape(line)?;
                    self.push(Value::Str(text))?;
                }
                op::BINUNICODE => {
                    let n = u32::from_le_bytes(self.array()?);
                    let bytes = self.take_u64(n.into())?;
                    self.push(Value::Str(utf8(bytes)))?;
                }
                op::SHORT_BINUNICODE => {
                    let n = self.byte()?;
                    let bytes = self.take(n.into())?;
                    self.push(Value::Str(utf8(bytes)))?;
                }
                op::BINUNICODE8 => {
                    let n = u64::from_le_bytes(self.array()?);
                    let bytes = self.take_u64(n)?;
                    self.push(Value::Str(utf8(bytes)))?;
                }
                op::BINBYTES => {
                    let n = u32::from_le_bytes(self.array()?);
                    let bytes = self.take_u64(n.into())?;
                    self.push(Value::Bytes(Cow::Borrowed(bytes)))?;
                }
                op::SHORT_BINBYTES => {
                    let n = self.byte()?;
                    let bytes = self.take(n.into())?;
                    self.push(Value::Bytes(Cow::Borrowed(bytes)))?;
                }
                op::BINBYTES8 | op::BYTEARRAY8 => {
                    let n = u64::from_le_bytes(self.array()?);
                    let bytes = self.take_u64(n)?;
                    self.push(Value::Bytes(Cow::Borrowed(bytes)))?;
                }

                // Containers.
                op::EMPTY_TUPLE => self.push_container(Value::Tuple(Vec::new()), 1, 0)?,
                op::EMPTY_LIST => {
                    let items = self.pool.list();
                    self.push_container(Value::List(items), 1, 0)?
                }
                op::EMPTY_DICT => {
                    let pairs = self.pool.dict();
                    self.push_container(Value::Dict(pairs), 1, 0)?
                }
                op::EMPTY_SET => {
                    let items = self.pool.list();
                    self.push_container(Value::Set(items), 1, 0)?
                }
                op::TUPLE | op::LIST | op::FROZENSET => {
                    let start = self.pop_mark()?;
                    let (values, weight, depth) = self.collect(start);
                    let value = match code {
                        op::TUPLE => Value::Tuple(values),
                        op::LIST => Value::List(values),
                        _ => Value::Set(values),
                    };
                    self.push_container(value, weight + 1, depth)?;
                }
                op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                    let n = usize::from(code - op::TUPLE1) + 1;
                    let start = self.top_n(n)?;
                    let (values, weight, depth) = self.collect(start);
                    self.push_container(Value::Tuple(values), weight + 1, depth)?;
                }
                op::DICT => {
                    let start = self.pop_mark()?;
                    if (self.stack.len() - start) % 2 != 0 {
                        return Err(PickleError::Malformed("DICT with an odd number of items"));
                    }
                    let (weight, depth) = self.leave(start);
                    let mut pairs = self.pool.dict();
                    push_pairs(&mut pairs, self.stack.drain(start..));
                    self.push_container(Value::Dict(pairs), weight + 1, depth)?;
                }
                op::APPEND => {
                    let start = self.top_n(1)?;
                    self.extend_from(start, Extend::Append)?;
                }
                op::APPENDS => {
                    let start = self.pop_mark()?;
                    self.extend_from(start, Extend::Append)?;
                }
                op::SETITEM => {
                    let start = self.top_n(2)?;
                    self.extend_from(start, Extend::SetItems)?;
                }
                op::SETITEMS => {
                    let start = self.pop_mark()?;
                    self.extend_from(start, Extend::SetItems)?;
                }
                op::ADDITEMS => {
                    let start = self.pop_mark()?;
                    self.extend_from(start, Extend::AddItems)?;
                }

                // Classes and objects: named, never resolved or called.
                op::GLOBAL => {
                    let module = text(self.line()?)?;
                    let name = text(self.line()?)?;
                    self.push(Value::Global(Box::new(global(module, name))))?;
                }
                op::STACK_GLOBAL => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module.value, name.value) {
                        (Value::Str(module), Value::Str(name)) => {
                            self.push(Value::Global(Box::new(global(module, name))))?;
                        }
                        _ => return Err(PickleError::Malformed("STACK_GLOBAL of non-strings")),
                    }
                }
                op::REDUCE => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let slot = reduce(callable, args)?;
                    self.push_slot(slot)?;
                }
                op::NEWOBJ => {
                    let args = self.pop()?;
                    let class = self.pop()?;
                    let weight = class.weight + args.weight;
                    let depth = args.depth.saturating_sub(1);
                    let mut args = sequence(args.value)?;
                    let object = Object {
                        class: callee(class.value, &mut args, "NEWOBJ"),
                        args,
                        kwargs: Vec::new(),
                        state: None,
                        items: Vec::new(),
                    };
                    self.push_object(object, weight, depth)?;
                }
                op::NEWOBJ_EX => {
                    let kwargs = self.pop()?;
                    let args = self.pop()?;
                    let class = self.pop()?;
                    let weight = class.weight + args.weight + kwargs.weight;
                    let depth = args.depth.max(kwargs.depth).saturating_sub(1);
                    let mut args = sequence(args.value)?;
                    let object = Object {
                        class: callee(class.value, &mut args, "NEWOBJ_EX"),
                        args,
                        kwargs: match kwargs.value {
                            Value::Dict(pairs) => pairs,
                            _ => return Err(PickleError::Malformed("NEWOBJ_EX kwargs not a dict")),
                        },
                        state: None,
                        items: Vec::new(),
                    };
                    self.push_object(object, weight, depth)?;
                }
                op::INST => {
                    let module = text(self.line()?)?;
                    let name = text(self.line()?)?;
                    let start = self.pop_mark()?;
                    let (args, weight, depth) = self.collect(start);
                    let object = Object {
                        class: global(module, name),
                        args,
                        kwargs: Vec::new(),
                        state: None,
                        items: Vec::new(),
                    };
                    self.push_object(object, weight + 1, depth)?;
                }
                op::OBJ => {
                    let start = self.pop_mark()?;
                    if self.stack.len() == start {
                        return Err(PickleError::StackUnderflow);
                    }
                    let (mut args, weight, depth) = self.collect(start);
                    let class = args.remove(0);
                    let class = callee(class, &mut args, "OBJ");
                    let object = Object {
                        class,
                        args,
                        kwargs: Vec::new(),
                        state: None,
                        items: Vec::new(),
                    };
                    self.push_object(object, weight, depth)?;
                }
                op::BUILD => {
                    let state = self.pop()?;
                    self.build(state)?;
                }

                // Memo.
                op::PUT => {
                    let id = memo_id(self.line()?)?;
                    self.put(id)?;
                }
                op::BINPUT => {
                    let id = self.byte()?;
                    self.put(id.into())?;
                }
                op::LONG_BINPUT => {
                    let id = u32::from_le_bytes(self.array()?);
                    self.put(id)?;
                }
                op::MEMOIZE => {
                    let id = u32::try_from(self.memo.len()).map_err(|_| PickleError::TooLarge)?;
                    self.put(id)?;
                }
                op::GET => {
                    let id = memo_id(self.line()?)?;
                    self.get(id)?;
                }
                op::BINGET => {
                    let id = self.byte()?;
                    self.get(id.into())?;
                }
                op::LONG_BINGET => {
                    let id = u32::from_le_bytes(self.array()?);
                    self.get(id)?;
                }

                // Framing.
                op::PROTO => {
                    if self.byte()? > HIGHEST_PROTOCOL {
                        return Err(PickleError::Unsupported("protocol above 5"));
                    }
                }
                op::FRAME => {
                    // Frames only help streaming readers; the whole pickle is already here.
                    let n = u64::from_le_bytes(self.array()?);
                    if n > (self.input.len() - self.pos) as u64 {
                        return Err(PickleError::Truncated);
                    }
                }

                op::PERSID | op::BINPERSID => {
                    return Err(PickleError::Unsupported("persistent id"))
                }
                op::EXT1 | op::EXT2 | op::EXT4 => {
                    return Err(PickleError::Unsupported("extension registry"))
                }
                op::NEXT_BUFFER | op::READONLY_BUFFER => {
                    return Err(PickleError::Unsupported("out-of-band buffer"))
                }
                _ => return Err(PickleError::UnknownOpcode(code)),
            }
        }
    }

    fn stop(&mut self) -> Result<Value<'a>> {
        // Nothing runs after STOP, so the memo needs no copy of the result (a record dict is
        // usually memoized): it is taken as it is.
        self.top_n(1)?;
        let slot = self.stack.pop().ok_or(PickleError::StackUnderflow)?;
        if !self.stack.is_empty() || !self.marks.is_empty() {
            // CPython would ignore them; its pickler never leaves any.
            return Err(PickleError::Malformed("values left on the stack at STOP"));
        }
        if self.pos != self.input.len() {
            return Err(PickleError::TrailingData);
        }
        Ok(slot.value)
    }

    // Reading the input.

    fn byte(&mut self) -> Result<u8> {
        let b = *self.input.get(self.pos).ok_or(PickleError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let bytes = self.take(N)?;
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// The next `n` bytes, checked against what remains before anything uses `n`.
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let input: &'a [u8] = self.input;
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= input.len())
            .ok_or(PickleError::Truncated)?;
        let bytes = &input[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn take_u64(&mut self, n: u64) -> Result<&'a [u8]> {
        let n = usize::try_from(n).map_err(|_| PickleError::Truncated)?;
        self.take(n)
    }

    /// The text up to the next newline, without it.
    fn line(&mut self) -> Result<&'a [u8]> {
        let input: &'a [u8] = self.input;
        let rest = &input[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(PickleError::Truncated)?;
        self.pos += n + 1;
        Ok(&rest[..n])
    }

    // The stack.

    /// Where the values above the last MARK begin.
    fn frame_start(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn charge(&mut self, weight: usize) -> Result<()> {
        self.items = self.items.saturating_add(weight);
        if self.items > self.limits.max_items {
            return Err(PickleError::TooLarge);
        }
        Ok(())
    }

    fn push(&mut self, value: Value<'a>) -> Result<()> {
        let slot = Slot::scalar(value);
        self.charge(slot.weight)?;
        self.stack.push(slot);
        Ok(())
    }

    /// Pushes a container whose children (already counted) weigh `weight - 1` and nest
    /// `child_depth` deep.
    fn push_container(
        &mut self,
        value: Value<'a>,
        weight: usize,
        child_depth: usize,
    ) -> Result<()> {
        let depth = child_depth + 1;
        if depth > self.limits.max_depth {
            return Err(PickleError::TooDeep);
        }
        self.charge(1)?;
        self.stack.push(Slot {
            value,
            weight,
            depth,
            memo: None,
        });
        Ok(())
    }

    fn push_object(&mut self, object: Object<'a>, weight: usize, child_depth: usize) -> Result<()> {
        self.push_container(Value::Object(Box::new(object)), weight + 1, child_depth)
    }

    /// Pushes a slot built from popped slots; its weight and depth are already computed.
    fn push_slot(&mut self, slot: Slot<'a>) -> Result<()> {
        if slot.depth > self.limits.max_depth {
            return Err(PickleError::TooDeep);
        }
        self.charge(1)?;
        self.stack.push(slot);
        Ok(())
    }

    fn top(&self) -> Result<&Slot<'a>> {
        if self.stack.len() > self.frame_start() {
            self.stack.last().ok_or(PickleError::StackUnderflow)
        } else {
            Err(PickleError::StackUnderflow)
        }
    }

    /// Where the top `n` values begin; they must all be above the last MARK.
    fn top_n(&self, n: usize) -> Result<usize> {
        self.stack
            .len()
            .checked_sub(n)
            .filter(|&start| start >= self.frame_start())
            .ok_or(PickleError::StackUnderflow)
    }

    /// Pops the top value above the last MARK, saving it in the memo if it was memoized.
    fn pop(&mut self) -> Result<Slot<'a>> {
        let index = self.top_n(1)?;
        let slot = self.stack.pop().ok_or(PickleError::StackUnderflow)?;
        if slot.memo.is_some() {
            save(self.memo_mut(), index, &slot);
        }
        Ok(slot)
    }

    fn pop_mark(&mut self) -> Result<usize> {
        self.marks.pop().ok_or(PickleError::NoMark)
    }

    /// The memo with what [`save`] needs beside it.
    fn memo_mut(&mut self) -> MemoMut<'_, 'a> {
        MemoMut {
            memo: &mut self.memo,
            saved: &mut self.saved,
            budget: &mut self.snapshot_budget,
        }
    }

    /// Drops the slots from `start` up, moving each into `saved` if a memo entry tracks it.
    fn discard_from(&mut self, start: usize) {
        while self.stack.len() > start {
            let Some(slot) = self.stack.pop() else { break };
            let index = self.stack.len();
            let Some(id) = slot.memo else { continue };
            if let Some(entry) = self.memo.get_mut(id as usize) {
                if matches!(entry, Memo::OnStack(i) if *i == index) {
                    *entry = Memo::Saved(self.saved.len());
                    self.saved.push(Slot { memo: None, ..slot });
                }
            }
        }
    }

    /// Saves the tracked values from `start` to the top before they leave the stack, and
    /// returns their total weight and deepest depth.
    fn leave(&mut self, start: usize) -> (usize, usize) {
        let (mut weight, mut depth) = (0, 0);
        let mut memo = MemoMut {
            memo: &mut self.memo,
            saved: &mut self.saved,
            budget: &mut self.snapshot_budget,
        };
        for (index, slot) in self.stack.iter().enumerate().skip(start) {
            weight += slot.weight;
            depth = depth.max(slot.depth);
            if slot.memo.is_some() {
                save(memo.reborrow(), index, slot);
            }
        }
        (weight, depth)
    }

    /// Takes the values from `start` to the top, with their total weight and deepest depth.
    fn collect(&mut self, start: usize) -> (Vec<Value<'a>>, usize, usize) {
        let (weight, depth) = self.leave(start);
        let mut values = self.pool.list();
        values.extend(self.stack.drain(start..).map(|slot| slot.value));
        (values, weight, depth)
    }

    /// Adds the values from `start` to the top to the container just below them.
    fn extend_from(&mut self, start: usize, how: Extend) -> Result<()> {
        let parent = start
            .checked_sub(1)
            .filter(|&parent| parent >= self.frame_start())
            .ok_or(PickleError::StackUnderflow)?;
        let (weight, child_depth) = self.leave(start);
        // The parent's value is taken out so the children can be drained into it; on error the
        // whole pickle is rejected, so it need not go back.
        let mut value = mem::replace(&mut self.stack[parent].value, Value::None);
        let count = self.stack.len() - start;
        let extra = extend(&mut value, self.stack.drain(start..), how)?;
        let max_depth = self.limits.max_depth;
        let slot = &mut self.stack[parent];
        slot.value = value;
        slot.weight += weight + extra;
        if count > 0 {
            let child_depth = if extra > 0 {
                child_depth + 1
            } else {
                child_depth
            };
            slot.depth = slot.depth.max(child_depth + 1);
            if slot.depth > max_depth {
                return Err(PickleError::TooDeep);
            }
        }
        self.charge(extra)
    }

    /// BUILD: sets the state of the object on top of the stack.
    fn build(&mut self, state: Slot<'a>) -> Result<()> {
        let index = self.top_n(1)?;
        let max_depth = self.limits.max_depth;
        let target = &mut self.stack[index];
        let Value::Object(object) = &mut target.value else {
            return Err(PickleError::Malformed(
                "BUILD on a value that is not an object",
            ));
        };
        let depth = state.depth + 1;
        if depth > max_depth {
            return Err(PickleError::TooDeep);
        }
        target.depth = target.depth.max(depth);
        target.weight += state.weight;
        // CPython merges a dict state into `__dict__`; anything else goes to `__setstate__`.
        match (&mut object.state, state.value) {
            (Some(Value::Dict(old)), Value::Dict(new)) => old.extend(new),
            (old, new) => *old = Some(new),
        }
        Ok(())
    }

    #[inline]
    fn put(&mut self, id: u32) -> Result<()> {
        let index = self.top_n(1)?;
        match Scalar::of(&self.stack[index]) {
            Some(copy) => self.set_memo(id, Memo::Copy(copy)),
            None => self.put_tracked(id, index),
        }
    }

    /// Stores a memo entry under `id`: an existing id or the next one.
    #[inline]
    fn set_memo(&mut self, id: u32, entry: Memo<'a>) -> Result<()> {
        let id = id as usize;
        match id.cmp(&self.memo.len()) {
            std::cmp::Ordering::Less => self.memo[id] = entry,
            std::cmp::Ordering::Equal if self.memo.len() < self.limits.max_memo => {
                self.memo.push(entry)
            }
            std::cmp::Ordering::Equal => return Err(PickleError::TooLarge),
            // Picklers number memo entries 0, 1, 2, ...; a gap is hostile.
            std::cmp::Ordering::Greater => return Err(PickleError::BadMemo),
        }
        Ok(())
    }

    /// PUT of a value that can still change, or that a GET must charge more than 1 for.
    #[inline(never)]
    fn put_tracked(&mut self, id: u32, index: usize) -> Result<()> {
        self.set_memo(id, Memo::OnStack(index))?;
        let slot = &mut self.stack[index];
        if let Some(old) = slot.memo.replace(id) {
            // Memoized twice: the older entry keeps the value as it is now.
            if old != id {
                let slot = &self.stack[index];
                let copy = Slot {
                    memo: Some(old),
                    ..slot.clone()
                };
                save(self.memo_mut(), index, &copy);
            }
        }
        Ok(())
    }

    fn get(&mut self, id: u32) -> Result<()> {
        let source = match self.memo.get(id as usize) {
            Some(Memo::Copy(copy)) => {
                let value = copy.value();
                self.charge(1)?;
                self.stack.push(Slot::scalar(value));
                return Ok(());
            }
            Some(Memo::OnStack(index)) => self.stack.get(*index),
            Some(Memo::Saved(i)) => self.saved.get(*i),
            Some(Memo::Lost) => return Err(PickleError::TooLarge),
            None => None,
        };
        let source = source.ok_or(PickleError::BadMemo)?;
        let (weight, depth) = (source.weight, source.depth);
        // Count the copy before making it: a pickle that doubles a list by GETs stops here.
        self.items = self.items.saturating_add(weight);
        if self.items > self.limits.max_items {
            return Err(PickleError::TooLarge);
        }
        let value = source.value.clone();
        self.stack.push(Slot {
            value,
            weight,
            depth,
            memo: None,
        });
        Ok(())
    }
}

/// The memo, the saved states and the copy budget, borrowed together while the stack is
/// borrowed too.
struct MemoMut<'m, 'a> {
    memo: &'m mut [Memo<'a>],
    saved: &'m mut Vec<Slot<'a>>,
    budget: &'m mut usize,
}

impl<'a> MemoMut<'_, 'a> {
    fn reborrow(&mut self) -> MemoMut<'_, 'a> {
        MemoMut {
            memo: self.memo,
            saved: self.saved,
            budget: self.budget,
        }
    }
}

/// Copies a slot leaving the stack from `index` into `saved`, if its memo entry tracks it
/// there; past the copy budget the entry is lost instead.
fn save<'a>(memo: MemoMut<'_, 'a>, index: usize, slot: &Slot<'a>) {
    let Some(entry) = slot.memo.and_then(|id| memo.memo.get_mut(id as usize)) else {
        return;
    };
    if matches!(entry, Memo::OnStack(i) if *i == index) {
        *entry = if slot.weight <= *memo.budget {
            *memo.budget -= slot.weight;
            memo.saved.push(Slot {
                memo: None,
                ..slot.clone()
            });
            Memo::Saved(memo.saved.len() - 1)
        } else {
            Memo::Lost
        };
    }
}

/// Appends keys and values to a dict, in pairs (the caller checked there is an even number).
fn push_pairs<'a>(pairs: &mut Vec<(Value<'a>, Value<'a>)>, slots: std::vec::Drain<'_, Slot<'a>>) {
    pairs.reserve(slots.len() / 2);
    let mut values = slots.map(|slot| slot.value);
    while let (Some(key), Some(value)) = (values.next(), values.next()) {
        pairs.push((key, value));
    }
}

/// Pairs up keys and values (the caller checked there is an even number).
fn pairs_of<'a>(
    slots: impl Iterator<Item = Slot<'a>>,
) -> impl Iterator<Item = (Value<'a>, Value<'a>)> {
    let mut values = slots.map(|slot| slot.value);
    std::iter::from_fn(move || Some((values.next()?, values.next()?)))
}

/// What APPEND(S), SETITEM(S) and ADDITEMS do to their container.
#[derive(Debug, Clone, Copy)]
enum Extend {
    Append,
    SetItems,
    AddItems,
}

/// Moves `children` into `parent`; returns how many values it had to create (key-value tuples
/// for SETITEMS on an object) for the caller to count.
fn extend<'a>(
    parent: &mut Value<'a>,
    children: std::vec::Drain<'_, Slot<'a>>,
    how: Extend,
) -> Result<usize> {
    let odd = children.len() % 2 != 0;
    match (how, parent) {
        (Extend::Append, Value::List(values)) | (Extend::AddItems, Value::Set(values)) => {
            values.extend(children.map(|slot| slot.value));
            Ok(0)
        }
        (Extend::SetItems, Value::Dict(pairs)) => {
            if odd {
                return Err(PickleError::Malformed(
                    "SETITEMS with an odd number of items",
                ));
            }
            push_pairs(pairs, children);
            Ok(0)
        }
        (Extend::Append | Extend::AddItems, Value::Object(object)) => {
            object.items.extend(children.map(|slot| slot.value));
            Ok(0)
        }
        (Extend::SetItems, Value::Object(object)) => {
            if odd {
                return Err(PickleError::Malformed(
                    "SETITEMS with an odd number of items",
                ));
            }
            let extra = children.len() / 2;
            object
                .items
                .extend(pairs_of(children).map(|(k, v)| Value::Tuple(vec![k, v])));
            Ok(extra)
        }
        (Extend::Append, _) => Err(PickleError::Malformed("APPEND to a non-list")),
        (Extend::SetItems, _) => Err(PickleError::Malformed("SETITEM on a non-dict")),
        (Extend::AddItems, _) => Err(PickleError::Malformed("ADDITEMS to a non-set")),
    }
}

/// REDUCE: `callable(*args)`, never called.
fn reduce<'a>(callable: Slot<'a>, args: Slot<'a>) -> Result<Slot<'a>> {
    let weight = callable.weight + args.weight;
    let depth = args.depth.max(callable.depth);
    let mut args = sequence(args.value)?;
    let class = callee(callable.value, &mut args, "REDUCE");
    let (value, depth) = match plain_call(&class, &mut args, depth) {
        Some(plain) => plain,
        // The object holds the arguments in place of their tuple: same depth.
        None => (object(class, args, Vec::new()), depth.max(1)),
    };
    Ok(Slot {
        value,
        weight,
        depth,
        memo: None,
    })
}

/// The value and depth of the calls CPython's pickler uses for plain values and instances
/// (CPython `Lib/copyreg.py`, `Objects/bytearrayobject.c`, `Objects/setobject.c`), or `None`
/// for any other call. `args_depth` is the depth of the argument tuple.
fn plain_call<'a>(
    class: &Global<'a>,
    args: &mut Vec<Value<'a>>,
    args_depth: usize,
) -> Option<(Value<'a>, usize)> {
    let bytes = match (
        class.module.as_ref(),
        class.name.as_ref(),
        args.as_mut_slice(),
    ) {
        // Protocols 0-2 pickle `bytes` as `_codecs.encode(text, 'latin1')`, and `bytearray`
        // as `bytearray(text, 'latin-1')`.
        ("_codecs", "encode", [Value::Str(text), Value::Str(encoding)])
        | ("builtins", "bytearray", [Value::Str(text), Value::Str(encoding)])
            if is_latin1(encoding) =>
        {
            latin1_bytes(text)?
        }
        ("builtins", "bytes" | "bytearray", []) => Cow::Borrowed(&[][..]),
        ("builtins", "bytes" | "bytearray", [Value::Bytes(bytes)]) => mem::take(bytes),
        // Protocols 0-3 pickle sets as `set([items])`.
        ("builtins", "set" | "frozenset", []) => return Some((Value::Set(Vec::new()), 1)),
        ("builtins", "set" | "frozenset", [Value::List(items)]) => {
            let depth = args_depth.saturating_sub(1).max(1);
            return Some((Value::Set(mem::take(items)), depth));
        }
        // Protocols 0-1 instances: `copyreg._reconstructor(cls, base, state)`. The state is
        // `base(obj)` for subclasses of builtins and None otherwise; `__dict__` comes by BUILD.
        ("copyreg", "_reconstructor", [Value::Global(class), Value::Global(_), state]) => {
            let args = match mem::replace(state, Value::None) {
                Value::None => Vec::new(),
                state => vec![state],
            };
            return Some((
                object((**class).clone(), args, Vec::new()),
                args_depth.max(1),
            ));
        }
        ("copyreg", "__newobj__", [Value::Global(_), ..]) => {
            let Value::Global(class) = args.remove(0) else {
                return None;
            };
            let object = object(*class, mem::take(args), Vec::new());
            return Some((object, args_depth.max(1)));
        }
        ("copyreg", "__newobj_ex__", [Value::Global(class), Value::Tuple(a), Value::Dict(k)]) => {
            let object = object((**class).clone(), mem::take(a), mem::take(k));
            return Some((object, args_depth.max(1)));
        }
        _ => return None,
    };
    Some((Value::Bytes(bytes), 0))
}

fn object<'a>(
    class: Global<'a>,
    args: Vec<Value<'a>>,
    kwargs: Vec<(Value<'a>, Value<'a>)>,
) -> Value<'a> {
    Value::Object(Box::new(Object {
        class,
        args,
        kwargs,
        state: None,
        items: Vec::new(),
    }))
}

/// The class or function a REDUCE/NEWOBJ/OBJ would call.
///
/// CPython pickles methods and classmethods as `getattr(owner, name)` (zoneinfo's
/// `ZoneInfo._unpickle`): that becomes the dotted name `owner.name`. Any other computed callable
/// becomes the first argument of the pseudo-class `pickle.<OPCODE>`.
fn callee<'a>(callable: Value<'a>, args: &mut Vec<Value<'a>>, opcode: &'static str) -> Global<'a> {
    if let Value::Object(object) = &callable {
        if let Some(method) = method_name(object) {
            return method;
        }
    }
    match callable {
        Value::Global(class) => *class,
        other => {
            args.insert(0, other);
            Global {
                module: Cow::Borrowed("pickle"),
                name: Cow::Borrowed(opcode),
            }
        }
    }
}

/// `owner.name` for a plain `getattr(owner, name)` of a global.
fn method_name<'a>(object: &Object<'a>) -> Option<Global<'a>> {
    let getattr = object.class.module == "builtins"
        && object.class.name == "getattr"
        && object.kwargs.is_empty()
        && object.state.is_none()
        && object.items.is_empty();
    match object.args.as_slice() {
        [Value::Global(owner), Value::Str(name)] if getattr => Some(Global {
            module: owner.module.clone(),
            name: Cow::Owned(format!("{}.{name}", owner.name)),
        }),
        _ => None,
    }
}

/// Call arguments: CPython's pickler always gives a tuple.
fn sequence(value: Value<'_>) -> Result<Vec<Value<'_>>> {
    match value {
        Value::Tuple(values) | Value::List(values) => Ok(values),
        _ => Err(PickleError::Malformed("call arguments are not a tuple")),
    }
}

/// A GLOBAL with the Python 2 module names CPython writes for protocols 0-2 mapped back, as
/// CPython's unpickler does (`fix_imports`, `Lib/_compat_pickle.py`).
fn global<'a>(module: Cow<'a, str>, name: Cow<'a, str>) -> Global<'a> {
    let module = match module.as_ref() {
        "__builtin__" | "exceptions" => Cow::Borrowed("builtins"),
        "copy_reg" => Cow::Borrowed("copyreg"),
        _ => module,
    };
    Global { module, name }
}

fn is_latin1(encoding: &str) -> bool {
    ["latin1", "latin-1", "latin_1", "iso-8859-1", "iso8859-1"]
        .iter()
        .any(|name| encoding.eq_ignore_ascii_case(name))
}

/// The bytes a `str.encode('latin1')` gives, or `None` above U+00FF.
fn latin1_bytes<'a>(text: &mut Cow<'a, str>) -> Option<Cow<'a, [u8]>> {
    if text.is_ascii() {
        return Some(match mem::take(text) {
            Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
            Cow::Owned(s) => Cow::Owned(s.into_bytes()),
        });
    }
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect::<Option<Vec<u8>>>()
        .map(Cow::Owned)
}

fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// GLOBAL/INST names: UTF-8, as CPython 3 reads them.
fn text(bytes: &[u8]) -> Result<Cow<'_, str>> {
    std::str::from_utf8(bytes)
        .map(Cow::Borrowed)
        .map_err(|_| PickleError::BadText("name is not UTF-8"))
}

/// BINUNICODE text: UTF-8, borrowed. CPython writes lone surrogates with `surrogatepass`,
/// which Rust cannot hold; they become U+FFFD.
fn utf8(bytes: &[u8]) -> Cow<'_, str> {
    // Record text is nearly always ASCII, which `is_ascii` checks a word at a time where
    // `from_utf8` goes byte by byte on short strings. `from_utf8` validates much faster than
    // the lossy path; only broken text takes the latter.
    if bytes.is_ascii() {
        // Safety: ASCII is valid UTF-8 (`utf8_is_from_utf8_or_lossy` compares with std).
        return Cow::Borrowed(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// A Python 2 `str` (STRING, BINSTRING): text when it is UTF-8, bytes otherwise.
fn py2_str(bytes: Cow<'_, [u8]>) -> Value<'_> {
    match bytes {
        Cow::Borrowed(b) => match std::str::from_utf8(b) {
            Ok(s) => Value::Str(Cow::Borrowed(s)),
            Err(_) => Value::Bytes(Cow::Borrowed(b)),
        },
        Cow::Owned(b) => match String::from_utf8(b) {
            Ok(s) => Value::Str(Cow::Owned(s)),
            Err(e) => Value::Bytes(Cow::Owned(e.into_bytes())),
        },
    }
}

fn memo_id(line: &[u8]) -> Result<u32> {
    std::str::from_utf8(trim(line))
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(PickleError::BadText("memo id"))
}

/// INT/LONG text: decimal digits with an optional sign.
fn decimal_int(text: &[u8]) -> Result<Value<'static>> {
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(PickleError::BadText("integer"));
    }
    if digits.len() > MAX_LONG_DIGITS {
        return Err(PickleError::TooLarge);
    }
    let mut value: i64 = 0;
    for &d in digits {
        let d = i64::from(d - b'0');
        let next = value.checked_mul(10).and_then(|v| {
            if negative {
                v.checked_sub(d)
            } else {
                v.checked_add(d)
            }
        });
        match next {
            Some(next) => value = next,
            None => {
                let digits = std::str::from_utf8(digits).unwrap_or_default();
                let digits = digits.trim_start_matches('0');
                let sign = if negative { "-" } else { "" };
                return Ok(Value::BigInt(format!("{sign}{digits}")));
            }
        }
    }
    Ok(Value::Int(value))
}

/// LONG1/LONG4: two's-complement little-endian.
fn long_le(bytes: &[u8]) -> Result<Value<'static>> {
    let Some(&last) = bytes.last() else {
        return Ok(Value::Int(0));
    };
    let negative = last & 0x80 != 0;
    let fill = if negative { 0xff } else { 0 };
    // Drop sign bytes that repeat the sign of the byte below them.
    let mut len = bytes.len();
    while len > 1 && bytes[len - 1] == fill && (bytes[len - 2] & 0x80 != 0) == negative {
        len -= 1;
    }
    let bytes = &bytes[..len];
    if len <= 8 {
        let mut buf = [fill; 8];
        buf[..len].copy_from_slice(bytes);
        return Ok(Value::Int(i64::from_le_bytes(buf)));
    }
    if len > MAX_LONG_BYTES {
        return Err(PickleError::TooLarge);
    }
    // Magnitude in 32-bit limbs, little-endian.
    let mut limbs: Vec<u32> = bytes
        .chunks(4)
        .map(|chunk| {
            let mut buf = [fill; 4];
            buf[..chunk.len()].copy_from_slice(chunk);
            u32::from_le_bytes(buf)
        })
        .collect();
    if negative {
        let mut carry = true;
        for limb in &mut limbs {
            let (v, c) = (!*limb).overflowing_add(u32::from(carry));
            *limb = v;
            carry = c;
        }
    }
    // Repeated division by 10^9, least significant chunk first.
    let mut chunks = Vec::new();
    while limbs.iter().any(|&l| l != 0) {
        let mut rem: u64 = 0;
        for limb in limbs.iter_mut().rev() {
            let cur = (rem << 32) | u64::from(*limb);
            *limb = (cur / 1_000_000_000) as u32;
            rem = cur % 1_000_000_000;
        }
        chunks.push(rem as u32);
        while limbs.last() == Some(&0) {
            limbs.pop();
        }
    }
    let mut out = String::with_capacity(chunks.len() * 9 + 1);
    if negative {
        out.push('-');
    }
    let mut chunks = chunks.iter().rev();
    if let Some(first) = chunks.next() {
        out.push_str(&first.to_string());
    }
    for chunk in chunks {
        out.push_str(&format!("{chunk:09}"));
    }
    Ok(Value::BigInt(out))
}

/// STRING: the body of a Python bytes literal (`codecs.escape_decode`).
fn escape_decode(raw: &[u8]) -> Result<Cow<'_, [u8]>> {
    if !raw.contains(&b'\\') {
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        i += 1;
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let Some(&e) = raw.get(i) else {
            return Err(PickleError::BadText("trailing \\ in STRING"));
        };
        i += 1;
        match e {
            b'\n' => {}
            b'\\' | b'\'' | b'"' => out.push(e),
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(v as u8);
            }
            b'x' => {
                let hex = raw.get(i..i + 2).and_then(hex_value);
                let v = hex.ok_or(PickleError::BadText("invalid \\x escape in STRING"))?;
                out.push(v as u8);
                i += 2;
            }
            _ => {
                out.push(b'\\');
                out.push(e);
            }
        }
    }
    Ok(Cow::Owned(out))
}

fn hex_value(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |acc, &d| {
        let v = char::from(d).to_digit(16)?;
        Some(acc * 16 + v)
    })
}

/// UNICODE: `raw-unicode-escape`: `\uXXXX` and `\UXXXXXXXX` after an odd run of backslashes,
/// every other byte is a Latin-1 character.
fn raw_unicode_escape(raw: &[u8]) -> Result<Cow<'_, str>> {
    if raw.is_ascii() && !raw.contains(&b'\\') {
        return Ok(Cow::Borrowed(
            std::str::from_utf8(raw).map_err(|_| PickleError::BadText("UNICODE"))?,
        ));
    }
    let mut out = String::with_capacity(raw.len());
    let mut pending_high: Option<u32> = None;
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b != b'\\' {
            flush_surrogate(&mut out, &mut pending_high);
            out.push(char::from(b));
            i += 1;
            continue;
        }
        let run = raw[i..].iter().take_while(|&&c| c == b'\\').count();
        let width = match raw.get(i + run) {
            Some(b'u') if run % 2 == 1 => 4,
            Some(b'U') if run % 2 == 1 => 8,
            _ => {
                flush_surrogate(&mut out, &mut pending_high);
                out.extend(std::iter::repeat_n('\\', run));
                i += run;
                continue;
            }
        };
        if run > 1 {
            flush_surrogate(&mut out, &mut pending_high);
            out.extend(std::iter::repeat_n('\\', run - 1));
        }
        let start = i + run + 1;
        let code = raw
            .get(start..start + width)
            .and_then(hex_value)
            .ok_or(PickleError::BadText("truncated \\uXXXX escape in UNICODE"))?;
        i = start + width;
        match code {
            0xD800..=0xDBFF => {
                flush_surrogate(&mut out, &mut pending_high);
                pending_high = Some(code);
            }
            0xDC00..=0xDFFF => match pending_high.take() {
                Some(high) => {
                    let c = 0x10000 + ((high - 0xD800) << 10) + (code - 0xDC00);
                    out.push(char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER));
                }
                None => out.push(char::REPLACEMENT_CHARACTER),
            },
            _ => {
                flush_surrogate(&mut out, &mut pending_high);
                let c = char::from_u32(code)
                    .ok_or(PickleError::BadText("\\U escape above U+10FFFF in UNICODE"))?;
                out.push(c);
            }
        }
    }
    flush_surrogate(&mut out, &mut pending_high);
    Ok(Cow::Owned(out))
}

/// A high surrogate with no low one after it is not text; it becomes U+FFFD.
fn flush_surrogate(out: &mut String, pending_high: &mut Option<u32>) {
    if pending_high.take().is_some() {
        out.push(char::REPLACEMENT_CHARACTER);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repr::repr_string;

    const FIXTURES: &[(&str, &[u8])] = &[
        (
            "record-p0.pickle",
            include_bytes!("testdata/record-p0.pickle"),
        ),
        (
            "record-p1.pickle",
            include_bytes!("testdata/record-p1.pickle"),
        ),
        (
            "record-p2.pickle",
            include_bytes!("testdata/record-p2.pickle"),
        ),
        (
            "record-p3.pickle",
            include_bytes!("testdata/record-p3.pickle"),
        ),
        (
            "record-p4.pickle",
            include_bytes!("testdata/record-p4.pickle"),
        ),
        (
            "record-p5.pickle",
            include_bytes!("testdata/record-p5.pickle"),
        ),
        ("exc-p1.pickle", include_bytes!("testdata/exc-p1.pickle")),
    ];
    /// `file<TAB>key<TAB>rendering` lines written by `scripts/gen-pickle-fixtures.py`.
    const EXPECTED: &str = include_str!("testdata/expected.tsv");

    fn dec(input: &[u8]) -> Result<Value<'_>> {
        decode(input, &Limits::default())
    }

    fn str_value(s: &str) -> Value<'_> {
        Value::Str(Cow::Borrowed(s))
    }

    /// A deterministic xorshift generator for the fuzz-style loops.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn cpython_records_decode_to_what_python_had() {
        for (name, data) in FIXTURES {
            let record = dec(data).unwrap_or_else(|e| panic!("{name}: {e}"));
            let Value::Dict(pairs) = &record else {
                panic!("{name}: not a dict: {record:?}");
            };
            let mut checked = 0;
            for line in EXPECTED.lines() {
                let mut parts = line.splitn(3, '\t');
                let (Some(file), Some(key), Some(want)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    panic!("bad expected.tsv line {line:?}");
                };
                if file != *name {
                    continue;
                }
                let value = record
                    .get(key)
                    .unwrap_or_else(|| panic!("{name}: no field {key}"));
                assert_eq!(repr_string(value), want, "{name}: field {key}");
                checked += 1;
            }
            assert_eq!(checked, pairs.len(), "{name}: every field checked");
            assert!(checked >= 20, "{name}: only {checked} fields");

            // Types, not only renderings.
            let msg = "query users took 12.5 ms";
            assert_eq!(record.get("msg"), Some(&str_value(msg)), "{name}");
            assert_eq!(record.get("lineno"), Some(&Value::Int(42)), "{name}");
            assert_eq!(record.get("args"), Some(&Value::None), "{name}");
            assert_eq!(
                record.get("created"),
                Some(&Value::Float(1704164645.123456)),
                "{name}"
            );
            assert_eq!(
                record.get("thread"),
                Some(&Value::Int(140234567890123)),
                "{name}"
            );
            if name.starts_with("record") {
                assert_eq!(record.get("levelname"), Some(&str_value("WARNING")));
                assert_eq!(
                    record.get("x_str"),
                    Some(&str_value("héllo ✓ 日本 'quoted' \"double\"\ttab")),
                    "{name}"
                );
                assert_eq!(
                    record.get("x_big"),
                    Some(&Value::BigInt("1267650600228229401496703205383".into())),
                    "{name}"
                );
                assert_eq!(record.get("x_true"), Some(&Value::Bool(true)), "{name}");
                assert_eq!(
                    record.get("x_bytes"),
                    Some(&Value::Bytes(Cow::Borrowed(b"ab\x00'\xff\n"))),
                    "{name}"
                );
                assert_eq!(
                    record.get("x_set"),
                    Some(&Value::Set(vec![
                        Value::Int(1),
                        Value::Int(2),
                        Value::Int(3)
                    ])),
                    "{name}"
                );
                let Some(Value::Object(point)) = record.get("x_point") else {
                    panic!("{name}: x_point is not an object");
                };
                assert_eq!(point.class.module, "__main__");
                assert_eq!(point.class.name, "Point");
            } else {
                let Some(Value::Str(text)) = record.get("exc_text") else {
                    panic!("exc_text is not text");
                };
                assert!(text.starts_with("Traceback (most recent call last):"));
                assert!(text.ends_with("KeyError: 'missing'"));
            }
        }
    }

    #[test]
    fn binary_strings_borrow_from_the_input() {
        let data = FIXTURES[1].1;
        let record = dec(data).unwrap();
        let Value::Dict(pairs) = &record else {
            panic!()
        };
        for (key, value) in pairs {
            assert!(matches!(key, Value::Str(Cow::Borrowed(_))), "{key:?}");
            if let Value::Str(s) = value {
                assert!(matches!(s, Cow::Borrowed(_)), "{key:?} owns {s:?}");
            }
        }
    }

    #[test]
    fn utf8_is_from_utf8_or_lossy() {
        let cases: [&[u8]; 9] = [
            b"",
            b"ascii only, longer than one machine word",
            b"caf\xc3\xa9",
            b"\xff",
            b"0123456\x80",
            b"\x7f\x00\x01",
            "日本語 text after the multibyte".as_bytes(),
            b"\xed\xa0\x80 lone surrogate",
            b"abcdefgh\xc3",
        ];
        for bytes in cases {
            let want = String::from_utf8_lossy(bytes);
            let got = utf8(bytes);
            assert_eq!(got, want, "{bytes:?}");
            assert_eq!(
                matches!(got, Cow::Borrowed(_)),
                std::str::from_utf8(bytes).is_ok()
            );
        }
    }

    #[test]
    fn reused_decoder_matches_one_off_decode() {
        // Records, broken records and hostile ones through one decoder, in turns: nothing of
        // one may show in the next.
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut decoder = Decoder::new();
        let limits = Limits::default();
        let mut inputs: Vec<Vec<u8>> = FIXTURES.iter().map(|(_, d)| d.to_vec()).collect();
        inputs.push(
            b"}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01K\x02eX\x01\x00\x00\x00bq\x03h\x02u."
                .to_vec(),
        );
        inputs.push(b"\x80\x02]q\x00h\x00a.".to_vec());
        inputs.push(b"(K\x01q\x00K\x02q\x01h\x00h\x01h\x00l.".to_vec());
        for i in 0..3000 {
            let mut data = inputs[i % inputs.len()].clone();
            if i % 3 == 1 {
                let at = rng.below(data.len());
                data[at] ^= 1 << rng.below(8);
            }
            let want = dec(&data).map(|value| format!("{value:?}"));
            let got = decoder.decode_with(&data, &limits, |value| format!("{value:?}"));
            assert_eq!(got, want, "input {i}: {data:?}");
        }
    }

    #[test]
    fn memo_copies_and_tracked_values_agree() {
        // A string memoized twice (copied at PUT) and a list memoized twice then grown
        // (tracked on the stack), all read back after they left it; the same answers as when
        // every entry was tracked.
        let data = b"\x80\x02(X\x01\x00\x00\x00xq\x00q\x01]q\x02q\x03K\x07ah\x00h\x01h\x02h\x03l.";
        let list = Value::List(vec![Value::Int(7)]);
        assert_eq!(
            dec(data).unwrap(),
            Value::List(vec![
                str_value("x"),
                list.clone(),
                str_value("x"),
                str_value("x"),
                // The older id keeps the list as it was at the second PUT: empty.
                Value::List(Vec::new()),
                list,
            ])
        );
    }

    #[test]
    fn memo_gets_see_the_finished_object() {
        // pickle.dumps({'a': l, 'b': l}, 1) with l = [1, 2]: l is memoized while empty.
        let data =
            b"}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01K\x02eX\x01\x00\x00\x00bq\x03h\x02u.";
        let list = Value::List(vec![Value::Int(1), Value::Int(2)]);
        let want = Value::Dict(vec![(str_value("a"), list.clone()), (str_value("b"), list)]);
        assert_eq!(dec(data).unwrap(), want);

        // l = []; l.append(l): the cycle is cut where the GET happens.
        let data = b"\x80\x02]q\x00h\x00a.";
        assert_eq!(
            dec(data).unwrap(),
            Value::List(vec![Value::List(Vec::new())])
        );
    }

    #[test]
    fn protocol_0_text_opcodes() {
        // pickle.dumps([True, False, 2**70, 'a\\b\nc\xe9\U0001f600', b'\xff', 1.5, -7], 0)
        let data = b"(lp0\nI01\naI00\naL1180591620717411303424L\naVa\\u005cb\\u000ac\xe9\\U0001f600\np1\nac_codecs\nencode\np2\n(V\xff\np3\nVlatin1\np4\ntp5\nRp6\naF1.5\naI-7\na.";
        let want = Value::List(vec![
            Value::Bool(true),
            Value::Bool(false),
            Value::BigInt("1180591620717411303424".into()),
            Value::Str("a\\b\nc\u{e9}\u{1f600}".into()),
            Value::Bytes(Cow::Borrowed(b"\xff")),
            Value::Float(1.5),
            Value::Int(-7),
        ]);
        assert_eq!(dec(data).unwrap(), want);

        // Python 2 str: text when UTF-8, bytes otherwise; escapes as in a bytes literal.
        assert_eq!(dec(b"S'caf\\xc3\\xa9'\n.").unwrap(), str_value("café"));
        assert_eq!(
            dec(b"S'\\xff\\n\\'\\101'\n.").unwrap(),
            Value::Bytes(Cow::Borrowed(b"\xff\n'A"))
        );
        assert_eq!(dec(b"U\x02hi.").unwrap(), str_value("hi"));
        assert_eq!(
            dec(b"T\x01\x00\x00\x00\x80.").unwrap(),
            Value::Bytes(Cow::Borrowed(b"\x80"))
        );
        // raw-unicode-escape: an even run of backslashes is no escape.
        assert_eq!(
            dec(b"V\\\\u0041\\\\\\u0041\\ud83d\\ude00\n.").unwrap(),
            Value::Str("\\\\u0041\\\\A\u{1f600}".into())
        );
        assert_eq!(
            dec(b"V\\u12\n."),
            Err(PickleError::BadText("truncated \\uXXXX escape in UNICODE"))
        );
        assert_eq!(
            dec(b"I12345678901234567890\n.").unwrap(),
            Value::BigInt("12345678901234567890".into())
        );
        assert_eq!(dec(b"L-5\n.").unwrap(), Value::Int(-5));
        assert_eq!(dec(b"Finf\n.").unwrap(), Value::Float(f64::INFINITY));
        // PUT/GET by decimal id.
        assert_eq!(
            dec(b"(Vx\np0\ng0\nt.").unwrap(),
            Value::Tuple(vec![str_value("x"), str_value("x")])
        );
    }

    #[test]
    fn binary_integers() {
        let long1 = |bytes: &[u8]| {
            let mut data = vec![op::PROTO, 2, op::LONG1, bytes.len() as u8];
            data.extend_from_slice(bytes);
            data.push(op::STOP);
            repr_string(&decode(&data, &Limits::default()).unwrap())
        };
        assert_eq!(long1(&[]), "0");
        assert_eq!(long1(&[0xff]), "-1");
        assert_eq!(long1(&[0x00, 0x80]), "-32768");
        assert_eq!(long1(&[0x00, 0x80, 0x00]), "32768");
        assert_eq!(long1(&[0xff; 8]), "-1");
        assert_eq!(
            long1(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
            i64::MAX.to_string()
        );
        assert_eq!(
            long1(&[0, 0, 0, 0, 0, 0, 0, 0x80, 0]),
            "9223372036854775808"
        );
        assert_eq!(
            long1(&[0, 0, 0, 0, 0, 0, 0, 0x80, 0xff]),
            i64::MIN.to_string()
        );
        // -(2**70)
        assert_eq!(
            long1(&[0, 0, 0, 0, 0, 0, 0, 0, 0xc0]),
            "-1180591620717411303424"
        );
        // 2**100 + 7 through LONG4.
        let mut data = vec![op::PROTO, 2, op::LONG4, 13, 0, 0, 0, 7];
        data.extend_from_slice(&[0; 11]);
        data.extend_from_slice(&[0x10, op::STOP]);
        assert_eq!(
            dec(&data).unwrap(),
            Value::BigInt("1267650600228229401496703205383".into())
        );
        assert_eq!(dec(b"J\xfe\xff\xff\xff.").unwrap(), Value::Int(-2));
        assert_eq!(dec(b"M\xff\xff.").unwrap(), Value::Int(65535));
        assert_eq!(
            dec(b"G?\xf8\x00\x00\x00\x00\x00\x00.").unwrap(),
            Value::Float(1.5)
        );
    }

    #[test]
    fn protocol_4_and_5_opcodes() {
        // FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL, EMPTY_SET/ADDITEMS, FROZENSET,
        // NEWOBJ_EX, BYTEARRAY8.
        let mut data = vec![0x80, 5, 0x95, 0, 0, 0, 0, 0, 0, 0, 0];
        data.extend_from_slice(b"(\x8c\x01m\x94\x8c\x01C\x94\x93\x94)}\x8c\x01kK\x01s\x92");
        data.extend_from_slice(b"\x8f(K\x01K\x02\x90(K\x03\x91");
        data.extend_from_slice(b"\x96\x02\x00\x00\x00\x00\x00\x00\x00ab");
        data.extend_from_slice(b"\x8e\x01\x00\x00\x00\x00\x00\x00\x00cl.");
        let len = (data.len() - 11) as u64;
        data[3..11].copy_from_slice(&len.to_le_bytes());
        let Value::List(items) = dec(&data).unwrap() else {
            panic!()
        };
        let Value::Object(object) = &items[0] else {
            panic!()
        };
        assert_eq!(
            (object.class.module.as_ref(), object.class.name.as_ref()),
            ("m", "C")
        );
        assert_eq!(object.kwargs, vec![(str_value("k"), Value::Int(1))]);
        assert_eq!(items[1], Value::Set(vec![Value::Int(1), Value::Int(2)]));
        assert_eq!(items[2], Value::Set(vec![Value::Int(3)]));
        assert_eq!(items[3], Value::Bytes(Cow::Borrowed(b"ab")));
        assert_eq!(items[4], Value::Bytes(Cow::Borrowed(b"c")));
    }

    #[test]
    fn computed_callables_and_dict_subclasses() {
        // datetime(2024, 1, 2, tzinfo=ZoneInfo('Europe/Paris')), protocol 4: the zone is
        // `getattr(ZoneInfo, '_unpickle')('Europe/Paris', 1)`.
        let data = b"\x80\x04\x95~\x00\x00\x00\x00\x00\x00\x00\x8c\x08datetime\x94\x8c\x08datetime\x94\x93\x94C\x0a\x07\xe8\x01\x02\x00\x00\x00\x00\x00\x00\x94\x8c\x08builtins\x94\x8c\x07getattr\x94\x93\x94\x8c\x08zoneinfo\x94\x8c\x08ZoneInfo\x94\x93\x94\x8c\x09_unpickle\x94\x86\x94R\x94\x8c\x0cEurope/Paris\x94K\x01\x86\x94R\x94\x86\x94R\x94.";
        let value = dec(data).unwrap();
        assert_eq!(repr_string(&value), "2024-01-02T00:00:00[Europe/Paris]");

        // OrderedDict(a=1), protocol 2: SETITEM on an object.
        let data =
            b"\x80\x02ccollections\x0aOrderedDict\x0aq\x00)Rq\x01X\x01\x00\x00\x00aq\x02K\x01s.";
        assert_eq!(
            repr_string(&dec(data).unwrap()),
            "collections.OrderedDict([('a', 1)])"
        );

        // A callable that is neither a global nor getattr stays data.
        let value = dec(b"](tR.").unwrap();
        assert_eq!(repr_string(&value), "pickle.REDUCE([])");
    }

    #[test]
    fn os_system_is_named_never_run() {
        let value = dec(b"cos\nsystem\n(S'echo hi'\ntR.").unwrap();
        let Value::Object(object) = &value else {
            panic!("{value:?}");
        };
        assert_eq!(object.class.module, "os");
        assert_eq!(object.class.name, "system");
        assert_eq!(object.args, vec![str_value("echo hi")]);
        assert_eq!(repr_string(&value), "os.system('echo hi')");
        // The same through protocol 4's STACK_GLOBAL and INST/OBJ.
        let value = dec(b"\x8c\x02os\x8c\x06system\x93\x8c\x02id\x85R.").unwrap();
        assert!(repr_string(&value).contains("system"));
        let value = dec(b"(S'id'\nios\nsystem\n.").unwrap();
        assert_eq!(repr_string(&value), "os.system('id')");
        let value = dec(b"(cos\nsystem\nS'id'\no.").unwrap();
        assert_eq!(repr_string(&value), "os.system('id')");
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        let marks = vec![op::MARK; 100_000];
        assert_eq!(dec(&marks), Err(PickleError::TooDeep));

        let mut lists = vec![op::EMPTY_LIST; 100_000];
        lists.extend(std::iter::repeat_n(op::APPEND, 99_999));
        lists.push(op::STOP);
        assert_eq!(dec(&lists), Err(PickleError::TooDeep));

        let mut nested = b"(".repeat(50_000);
        nested.extend(b"]".repeat(50_000));
        assert_eq!(dec(&nested), Err(PickleError::TooDeep));

        // Tuples of tuples through TUPLE1.
        let mut tuples = vec![op::EMPTY_TUPLE];
        tuples.extend(std::iter::repeat_n(op::TUPLE1, 100_000));
        tuples.push(op::STOP);
        assert_eq!(dec(&tuples), Err(PickleError::TooDeep));

        // Exactly at the limit is fine.
        let limits = Limits {
            max_depth: 10,
            ..Limits::default()
        };
        let mut ok = vec![op::EMPTY_LIST; 10];
        ok.extend([op::APPEND; 9]);
        ok.push(op::STOP);
        assert!(decode(&ok, &limits).is_ok());
        let mut deeper = vec![op::EMPTY_LIST; 11];
        deeper.extend([op::APPEND; 10]);
        deeper.push(op::STOP);
        assert_eq!(decode(&deeper, &limits), Err(PickleError::TooDeep));
    }

    #[test]
    fn lengths_are_checked_before_allocating() {
        for opcode in [op::BINUNICODE, op::BINBYTES, op::BINSTRING] {
            let mut data = vec![opcode, 0xff, 0xff, 0xff, 0x7f];
            data.extend_from_slice(&[b'a'; 95]);
            assert_eq!(dec(&data), Err(PickleError::Truncated), "{opcode:#x}");
        }
        for opcode in [op::BINUNICODE8, op::BINBYTES8, op::BYTEARRAY8, op::FRAME] {
            let mut data = vec![opcode];
            data.extend_from_slice(&u64::MAX.to_le_bytes());
            data.extend_from_slice(&[b'a'; 91]);
            assert_eq!(dec(&data), Err(PickleError::Truncated), "{opcode:#x}");
        }
        assert_eq!(
            dec(&[b"X\xff\xff\xff\xff".as_slice(), &[b'a'; 95]].concat()),
            Err(PickleError::Truncated),
            "4 GiB claim"
        );
        assert_eq!(
            dec(b"T\xff\xff\xff\xffab."),
            Err(PickleError::BadText("BINSTRING size"))
        );
        let mut long4 = vec![op::LONG4];
        long4.extend_from_slice(&100_000i32.to_le_bytes());
        long4.extend(vec![1; 100_000]);
        long4.push(op::STOP);
        assert_eq!(dec(&long4), Err(PickleError::TooLarge));
    }

    #[test]
    fn billion_laughs_stops_early() {
        // l0 = []; l1 = [l0, l0]; l2 = [l1, l1]; ... each a GET of the previous memo entry.
        let mut data = vec![op::EMPTY_LIST, op::BINPUT, 0];
        for i in 1..=200u8 {
            data.extend_from_slice(&[op::MARK, op::BINGET, i - 1, op::BINGET, i - 1, op::LIST]);
            data.extend_from_slice(&[op::BINPUT, i, op::POP]);
        }
        data.extend_from_slice(&[op::BINGET, 200, op::STOP]);
        let started = std::time::Instant::now();
        assert_eq!(dec(&data), Err(PickleError::TooLarge));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));

        // DUP doubles too.
        let mut dup = vec![op::EMPTY_LIST];
        for _ in 0..64 {
            dup.extend_from_slice(&[op::DUP, op::TUPLE2]);
        }
        dup.push(op::STOP);
        assert!(matches!(
            dec(&dup),
            Err(PickleError::TooLarge | PickleError::TooDeep)
        ));
    }

    #[test]
    fn copies_of_a_large_owned_string_are_charged_by_size() {
        // An escaped protocol-0 string decodes into its own allocation; re-getting it many
        // times must use up the budget by its size, not count 1 per copy.
        let mut data = b"S'".to_vec();
        data.extend(std::iter::repeat_n(&b"\\x41"[..], 150_000).flatten());
        data.extend_from_slice(b"'\nq\x00");
        for _ in 0..20_000 {
            data.extend_from_slice(&[op::BINGET, 0, op::POP]);
        }
        data.push(op::STOP);
        let started = std::time::Instant::now();
        assert_eq!(dec(&data), Err(PickleError::TooLarge));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn memo_is_bounded() {
        let limits = Limits {
            max_memo: 3,
            ..Limits::default()
        };
        let ok = b"(K\x01q\x00K\x02q\x01K\x03q\x02l.";
        assert!(decode(ok, &limits).is_ok());
        let over = b"(K\x01q\x00K\x02q\x01K\x03q\x02K\x04q\x03l.";
        assert_eq!(decode(over, &limits), Err(PickleError::TooLarge));
        assert_eq!(dec(b"K\x01q\x05."), Err(PickleError::BadMemo), "id gap");
        assert_eq!(dec(b"h\x00."), Err(PickleError::BadMemo));
        assert_eq!(
            dec(b"(q\x00."),
            Err(PickleError::StackUnderflow),
            "PUT on a MARK"
        );
    }

    #[test]
    fn malformed_and_refused() {
        assert_eq!(dec(b""), Err(PickleError::Truncated));
        assert_eq!(dec(b"N"), Err(PickleError::Truncated));
        assert_eq!(dec(b"N.x"), Err(PickleError::TrailingData));
        assert_eq!(dec(b"."), Err(PickleError::StackUnderflow));
        assert_eq!(dec(b"t."), Err(PickleError::NoMark));
        assert_eq!(dec(b"\xff"), Err(PickleError::UnknownOpcode(0xff)));
        assert!(matches!(dec(b"NN."), Err(PickleError::Malformed(_))));
        assert!(matches!(dec(b"(NN."), Err(PickleError::Malformed(_))));
        assert!(matches!(dec(b"NNa."), Err(PickleError::Malformed(_))));
        assert!(matches!(dec(b"(K\x01d."), Err(PickleError::Malformed(_))));
        assert!(matches!(dec(b"S'abc\n."), Err(PickleError::BadText(_))));
        assert!(matches!(dec(b"S'a\\x4'\n."), Err(PickleError::BadText(_))));
        assert!(matches!(dec(b"Ix\n."), Err(PickleError::BadText(_))));
        assert_eq!(
            dec(b"\x80\x06N."),
            Err(PickleError::Unsupported("protocol above 5"))
        );
        for data in [
            &b"P1\n."[..],
            b"NQ.",
            b"\x82\x01.",
            b"\x83\x01\x00.",
            b"\x84\x01\x00\x00\x00.",
        ] {
            assert!(
                matches!(dec(data), Err(PickleError::Unsupported(_))),
                "{data:?}"
            );
        }
        assert!(matches!(dec(b"\x97."), Err(PickleError::Unsupported(_))));
        assert!(matches!(dec(b"NN\x98."), Err(PickleError::Unsupported(_))));
        // POP on an empty frame pops the MARK, as CPython does.
        assert_eq!(dec(b"N(0."), Ok(Value::None));
        assert_eq!(dec(b"(NN1N."), Ok(Value::None));
    }

    #[test]
    fn every_prefix_of_a_real_pickle_is_an_error() {
        for (name, data) in FIXTURES {
            for len in 0..data.len() {
                assert!(dec(&data[..len]).is_err(), "{name} cut at {len}");
            }
        }
    }

    /// The fast path for flat records must build exactly what the machine builds: checked on
    /// CPython's records (fixtures and fuzz seeds, every protocol), and on them truncated and
    /// with bits flipped.
    #[test]
    fn fast_path_agrees_with_the_machine() {
        let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/pickle");
        let mut samples: Vec<Vec<u8>> = FIXTURES.iter().map(|(_, d)| d.to_vec()).collect();
        for entry in std::fs::read_dir(seeds).expect("fuzz seeds") {
            samples.push(std::fs::read(entry.expect("seed").path()).expect("seed"));
        }
        let limits = Limits::default();
        let check = |data: &[u8]| -> bool {
            let fast = decode_flat(data, &limits, &mut Pool::default());
            if let Some(value) = &fast {
                let machine = decode_general(data, &limits);
                assert_eq!(
                    format!("{:?}", Ok::<_, PickleError>(value)),
                    format!("{:?}", machine.as_ref()),
                    "input {data:?}"
                );
            }
            fast.is_some()
        };
        let mut fast = 0;
        for sample in &samples {
            fast += usize::from(check(sample));
        }
        // Protocols 1 to 5 of the plain, exception and extras records at least.
        assert!(fast >= 15, "only {fast} samples took the fast path");
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut variants = 0;
        for _ in 0..20_000 {
            let mut data = samples[rng.below(samples.len())].clone();
            if rng.below(4) == 0 {
                data.truncate(rng.below(data.len() + 1));
            }
            for _ in 0..rng.below(3) {
                let at = rng.below(data.len().max(1));
                if let Some(b) = data.get_mut(at) {
                    *b ^= 1 << rng.below(8);
                }
            }
            variants += usize::from(check(&data));
        }
        assert!(
            variants > 1_000,
            "only {variants} variants took the fast path"
        );
    }

    /// Protocol 1 writes ints beyond 32 bits as `L<digits>L`: the fast path takes every one
    /// that fits an `i64` (nanosecond times have 19 digits) and leaves the rest to the machine.
    #[test]
    fn fast_path_takes_long_text_up_to_i64() {
        let limits = Limits::default();
        for (digits, fits) in [
            ("0", true),
            ("123456789012345678", true),
            ("1796626687462369928", true),
            ("9223372036854775807", true),
            ("9223372036854775808", false),
            ("9999999999999999999", false),
            ("12345678901234567890", false),
        ] {
            let data = format!("}}(X\x01\x00\x00\x00aL{digits}L\nu.");
            let data = data.as_bytes();
            let fast = decode_flat(data, &limits, &mut Pool::default());
            let machine = decode_general(data, &limits).expect("decodes");
            match fast {
                Some(value) => {
                    assert!(fits, "{digits}");
                    assert_eq!(value, machine, "{digits}");
                    assert_eq!(value.get("a"), Some(&Value::Int(digits.parse().unwrap())));
                }
                None => assert!(!fits, "{digits} left the fast path"),
            }
        }
    }

    #[test]
    fn random_and_bit_flipped_input_never_panics() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut ok = 0;
        for i in 0..20_000 {
            let data = if i % 2 == 0 {
                let len = rng.below(64);
                (0..len).map(|_| rng.next() as u8).collect::<Vec<u8>>()
            } else {
                let mut data = FIXTURES[rng.below(FIXTURES.len())].1.to_vec();
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(data.len());
                    data[at] ^= 1 << rng.below(8);
                }
                data
            };
            if let Ok(value) = dec(&data) {
                ok += 1;
                let _ = repr_string(&value);
            }
        }
        // Some flips only touch string contents and still decode.
        assert!(ok > 0);
    }
}
