//! The decoded form of one log record: what the pickle and JSON decoders produce and the event
//! writer consumes. Strings borrow from the frame buffer where the wire form allows it.

use std::borrow::Cow;

/// A value taken from a pickled or JSON record, with no code attached to it.
///
/// Pickle objects the decoder does not know (anything built by GLOBAL/REDUCE/NEWOBJ/BUILD) stay
/// as [`Value::Object`] so the event writer can render them as a readable string.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// Python `None`, JSON `null`.
    None,
    /// Python `bool`, JSON `true`/`false`.
    Bool(bool),
    /// An integer that fits in 64 bits.
    Int(i64),
    /// A larger integer, as its decimal digits (with a leading `-` when negative).
    BigInt(String),
    /// Python `float`, a JSON number with a fraction or exponent.
    Float(f64),
    /// Text.
    Str(Cow<'a, str>),
    /// Python `bytes`/`bytearray`, or a Python 2 `str` that is not valid UTF-8.
    Bytes(Cow<'a, [u8]>),
    /// Python `list`, JSON array.
    List(Vec<Value<'a>>),
    /// Python `tuple`.
    Tuple(Vec<Value<'a>>),
    /// Python `dict`, JSON object, in insertion order. Keys are usually [`Value::Str`].
    Dict(Vec<(Value<'a>, Value<'a>)>),
    /// Python `set`/`frozenset`.
    Set(Vec<Value<'a>>),
    /// A reference to a class or function (pickle GLOBAL / STACK_GLOBAL), never resolved.
    Global(Box<Global<'a>>),
    /// An instance of a class the decoder does not model, kept as data for rendering.
    Object(Box<Object<'a>>),
}

/// `module.name` of a pickled class or function.
#[derive(Debug, Clone, PartialEq)]
pub struct Global<'a> {
    /// The module, e.g. `datetime`.
    pub module: Cow<'a, str>,
    /// The qualified name, e.g. `datetime`.
    pub name: Cow<'a, str>,
}

/// An object a pickle built by calling or instantiating a [`Global`]; nothing was called.
#[derive(Debug, Clone, PartialEq)]
pub struct Object<'a> {
    /// The class or function that would have been called.
    pub class: Global<'a>,
    /// Positional arguments of the call (REDUCE, NEWOBJ, INST, OBJ).
    pub args: Vec<Value<'a>>,
    /// Keyword arguments (NEWOBJ_EX), if any.
    pub kwargs: Vec<(Value<'a>, Value<'a>)>,
    /// State given by BUILD (usually the instance `__dict__`), if any.
    pub state: Option<Value<'a>>,
    /// Items appended (APPEND/APPENDS) or set (SETITEM/SETITEMS) on the object, if any.
    pub items: Vec<Value<'a>>,
}

impl<'a> Value<'a> {
    /// The text of a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Looks a key up in a dict whose keys are strings.
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        match self {
            Value::Dict(items) => items
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}
