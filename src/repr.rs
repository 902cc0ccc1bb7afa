//! Readable strings for values that have no JSON form (pickled objects, bytes, sets).

use crate::value::Value;

/// Appends a readable, Python-like rendering of `value` to `out`.
pub fn repr(value: &Value<'_>, out: &mut String) {
    use std::fmt::Write;
    let _ = write!(out, "{value:?}");
}
