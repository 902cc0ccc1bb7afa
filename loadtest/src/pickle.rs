//! Pickle encoder for record dicts, byte for byte what CPython's C pickler writes for
//! `pickle.dumps(d, 1)`, which is what `logging.handlers.SocketHandler.makePickle` sends
//! (CPython `Lib/logging/handlers.py`, `Modules/_pickle.c`). Pure: appends to a caller's buffer.
//!
//! Only what a `LogRecord` dict holds is supported: `str`, `int`, `float`, `bool`, `None`.
//! Every string is written out and memoized, never fetched back from the memo: CPython memoizes
//! by object identity, and the strings of a record dict are distinct objects.

/// `EMPTY_DICT`: push `{}`.
const EMPTY_DICT: u8 = b'}';
/// `MARK`: start of a `SETITEMS` batch.
const MARK: u8 = b'(';
/// `SETITEMS`: add the key/value pairs since the mark.
const SETITEMS: u8 = b'u';
/// `SETITEM`: add one pair (dicts of one item).
const SETITEM: u8 = b's';
/// `BINPUT`: memoize at a one-byte index.
const BINPUT: u8 = b'q';
/// `LONG_BINPUT`: memoize at a four-byte little-endian index.
const LONG_BINPUT: u8 = b'r';
/// `BINUNICODE`: four-byte little-endian length, then UTF-8.
const BINUNICODE: u8 = b'X';
/// `BININT1`: unsigned one-byte int.
const BININT1: u8 = b'K';
/// `BININT2`: unsigned two-byte little-endian int.
const BININT2: u8 = b'M';
/// `BININT`: signed four-byte little-endian int.
const BININT: u8 = b'J';
/// `LONG`: decimal text, `L` suffix and newline (protocol < 2 ints beyond 32 bits).
const LONG: u8 = b'L';
/// `INT` with the text protocol < 2 writes for `True` and `False`.
const TRUE: &[u8] = b"I01\n";
/// See [`TRUE`].
const FALSE: &[u8] = b"I00\n";
/// `BINFLOAT`: eight-byte big-endian IEEE 754 double.
const BINFLOAT: u8 = b'G';
/// `NONE`: push `None`.
const NONE: u8 = b'N';
/// `STOP`: end of pickle.
const STOP: u8 = b'.';
/// Items per `SETITEMS` batch (`BATCHSIZE` in `_pickle.c`).
const BATCH: usize = 1000;

/// A value of a record dict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Val<'a> {
    /// `str`
    Str(&'a str),
    /// `int`
    Int(i64),
    /// `float`
    Float(f64),
    /// `bool`
    Bool(bool),
    /// `None`
    None,
}

/// Memo indexes handed out so far; index 0 is the dict itself.
struct Memo(u32);

impl Memo {
    fn put(&mut self, out: &mut Vec<u8>) {
        if self.0 < 256 {
            out.extend_from_slice(&[BINPUT, self.0 as u8]);
        } else {
            out.push(LONG_BINPUT);
            out.extend_from_slice(&self.0.to_le_bytes());
        }
        self.0 += 1;
    }
}

fn encode_str(s: &str, memo: &mut Memo, out: &mut Vec<u8>) {
    out.push(BINUNICODE);
    // A record field over 4 GiB cannot be built here; the frame limit is far lower.
    let len = u32::try_from(s.len()).expect("string longer than 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    memo.put(out);
}

fn encode_int(v: i64, out: &mut Vec<u8>) {
    match v {
        0..=0xff => out.extend_from_slice(&[BININT1, v as u8]),
        0x100..=0xffff => {
            out.push(BININT2);
            out.extend_from_slice(&(v as u16).to_le_bytes());
        }
        -0x8000_0000..=0x7fff_ffff => {
            out.push(BININT);
            out.extend_from_slice(&(v as i32).to_le_bytes());
        }
        _ => {
            out.push(LONG);
            out.extend_from_slice(v.to_string().as_bytes());
            out.extend_from_slice(b"L\n");
        }
    }
}

fn encode_val(v: Val<'_>, memo: &mut Memo, out: &mut Vec<u8>) {
    match v {
        Val::Str(s) => encode_str(s, memo, out),
        Val::Int(i) => encode_int(i, out),
        Val::Float(f) => {
            out.push(BINFLOAT);
            out.extend_from_slice(&f.to_be_bytes());
        }
        Val::Bool(b) => out.extend_from_slice(if b { TRUE } else { FALSE }),
        Val::None => out.push(NONE),
    }
}

/// Appends `pickle.dumps(dict(items), 1)` to `out`.
///
/// Keys must be distinct, as in a dict.
pub fn encode_dict(items: &[(&str, Val<'_>)], out: &mut Vec<u8>) {
    let mut memo = Memo(0);
    out.push(EMPTY_DICT);
    memo.put(out);
    match items {
        [] => {}
        [(k, v)] => {
            encode_str(k, &mut memo, out);
            encode_val(*v, &mut memo, out);
            out.push(SETITEM);
        }
        _ => {
            // `batch_dict_exact`: MARK, up to 1000 pairs, SETITEMS, and again while the last
            // batch was full, so a multiple of 1000 ends with an empty MARK SETITEMS.
            out.push(MARK);
            for (i, (k, v)) in items.iter().enumerate() {
                encode_str(k, &mut memo, out);
                encode_val(*v, &mut memo, out);
                if (i + 1) % BATCH == 0 {
                    out.extend_from_slice(&[SETITEMS, MARK]);
                }
            }
            out.push(SETITEMS);
        }
    }
    out.push(STOP);
}

/// Appends a `SocketHandler` frame: four-byte big-endian length, then the protocol 1 pickle.
///
/// # Panics
/// If the pickle exceeds 4 GiB.
pub fn encode_frame(items: &[(&str, Val<'_>)], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    encode_dict(items, out);
    let len = u32::try_from(out.len() - start - 4).expect("pickle longer than 4 GiB");
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict(items: &[(&str, Val<'_>)]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_dict(items, &mut out);
        out
    }

    #[test]
    fn small_dicts_match_cpython() {
        // pickle.dumps({}, 1), pickle.dumps({'a': 1}, 1)
        assert_eq!(dict(&[]), b"}q\x00.");
        assert_eq!(
            dict(&[("a", Val::Int(1))]),
            b"}q\x00X\x01\x00\x00\x00aq\x01K\x01s."
        );
        // pickle.dumps({'a': None, 'b': True}, 1)
        assert_eq!(
            dict(&[("a", Val::None), ("b", Val::Bool(true))]),
            b"}q\x00(X\x01\x00\x00\x00aq\x01NX\x01\x00\x00\x00bq\x02I01\nu."
        );
    }

    #[test]
    fn ints_pick_the_shortest_opcode() {
        let enc = |v| {
            let mut out = Vec::new();
            encode_int(v, &mut out);
            out
        };
        assert_eq!(enc(0), b"K\x00");
        assert_eq!(enc(255), b"K\xff");
        assert_eq!(enc(256), b"M\x00\x01");
        assert_eq!(enc(65536), b"J\x00\x00\x01\x00");
        assert_eq!(enc(-1), b"J\xff\xff\xff\xff");
        assert_eq!(enc(1 << 31), b"L2147483648L\n");
        assert_eq!(enc(-(1 << 31) - 1), b"L-2147483649L\n");
    }

    #[test]
    fn frame_has_big_endian_length() {
        let mut out = Vec::new();
        encode_frame(&[("a", Val::Float(1.5))], &mut out);
        assert_eq!(&out[..4], &((out.len() - 4) as u32).to_be_bytes());
        assert_eq!(
            &out[4..],
            b"}q\x00X\x01\x00\x00\x00aq\x01G?\xf8\x00\x00\x00\x00\x00\x00s."
        );
    }
}
