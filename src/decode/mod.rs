//! Frame payloads to [`Value`]s: pure, bounded, no code execution.

pub mod json;
pub mod pickle;

use std::borrow::Cow;

use crate::value::Value;

/// Most spare vectors a [`Pool`] keeps of each kind.
const POOL_MAX: usize = 16;
/// A spare vector with more room than this many elements is freed rather than kept, so one
/// huge record does not pin its memory for the life of the worker.
const POOLED_CAPACITY_MAX: usize = 1024;

/// Spare container vectors, kept between records so that steady-state decoding allocates
/// nothing: a decoder takes its lists and dicts from here and gets them back, emptied, once the
/// event is written.
///
/// The vectors are empty, so the lifetime of the values they are typed for means nothing; it is
/// changed with [`retype`] when one is taken or given back.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    lists: Vec<Vec<Value<'static>>>,
    dicts: Vec<Vec<(Value<'static>, Value<'static>)>>,
    /// Vectors handed out so far (wrapping), for [`Self::mark`].
    taken: usize,
}

impl Pool {
    /// An empty list vector, with room from an earlier record when there is one.
    pub(crate) fn list<'a>(&mut self) -> Vec<Value<'a>> {
        self.taken = self.taken.wrapping_add(1);
        self.lists.pop().map(retype).unwrap_or_default()
    }

    /// An empty dict vector, with room from an earlier record when there is one.
    pub(crate) fn dict<'a>(&mut self) -> Vec<(Value<'a>, Value<'a>)> {
        self.taken = self.taken.wrapping_add(1);
        self.dicts.pop().map(retype).unwrap_or_default()
    }

    /// A mark to give [`Self::recycle_fast`]: how many vectors were handed out so far.
    pub(crate) fn mark(&self) -> usize {
        self.taken
    }

    /// Gives back a value a fast path built after `mark`. The fast paths borrow every string
    /// and number they read, so their value owns nothing but vectors from here; when its dict
    /// was the only one taken, the vector is kept without a look at each entry, which cost as
    /// much as a record's other bookkeeping together. Anything else goes to [`Self::recycle`].
    pub(crate) fn recycle_fast(&mut self, value: Value<'_>, mark: usize) {
        match value {
            Value::Dict(mut pairs) if self.taken.wrapping_sub(mark) == 1 => {
                debug_assert!(pairs
                    .iter()
                    .all(|(k, v)| owns_nothing(k) && owns_nothing(v)));
                // Safety: the length only shrinks. The entries own nothing (the fast paths'
                // word, checked in debug builds), so forgetting them leaks nothing.
                unsafe { pairs.set_len(0) };
                self.keep_dict(pairs);
            }
            other => self.recycle(other),
        }
    }

    /// Drops `value`, keeping the vectors of it and of its children for later records.
    ///
    /// Two levels are enough for a record and its extras; deeper vectors are freed.
    pub(crate) fn recycle(&mut self, value: Value<'_>) {
        match value {
            Value::Dict(mut pairs) => {
                for (key, value) in &mut pairs {
                    self.recycle_in_place(key);
                    self.recycle_in_place(value);
                }
                // Safety: every entry is now a plain value, which owns nothing, so not dropping
                // it leaks nothing; the length only shrinks.
                unsafe { pairs.set_len(0) };
                self.keep_dict(pairs);
            }
            Value::List(mut items) | Value::Tuple(mut items) | Value::Set(mut items) => {
                for item in &mut items {
                    self.recycle_in_place(item);
                }
                // Safety: as above.
                unsafe { items.set_len(0) };
                self.keep_list(items);
            }
            other => drop(other),
        }
    }

    /// Leaves a plain value (one that owns nothing) where it is, without moving it; takes
    /// anything else out, keeping its vector, and leaves `None` in its place.
    #[inline(always)]
    fn recycle_in_place(&mut self, value: &mut Value<'_>) {
        if is_plain(value) {
            return;
        }
        match std::mem::replace(value, Value::None) {
            Value::Dict(pairs) => self.keep_dict(pairs),
            Value::List(items) | Value::Tuple(items) | Value::Set(items) => self.keep_list(items),
            other => drop(other),
        }
    }

    fn keep_list(&mut self, items: Vec<Value<'_>>) {
        if self.lists.len() < POOL_MAX && items.capacity() <= POOLED_CAPACITY_MAX {
            self.lists.push(retype(items));
        }
    }

    fn keep_dict(&mut self, pairs: Vec<(Value<'_>, Value<'_>)>) {
        if self.dicts.len() < POOL_MAX && pairs.capacity() <= POOLED_CAPACITY_MAX {
            self.dicts.push(retype(pairs));
        }
    }
}

/// A value that owns no memory.
#[inline(always)]
fn is_plain(value: &Value<'_>) -> bool {
    matches!(
        value,
        Value::None
            | Value::Bool(_)
            | Value::Int(_)
            | Value::Float(_)
            | Value::Str(Cow::Borrowed(_))
            | Value::Bytes(Cow::Borrowed(_))
    )
}

/// [`is_plain`], or a vector without an allocation (the empty tuple of pickle's EMPTY_TUPLE).
fn owns_nothing(value: &Value<'_>) -> bool {
    match value {
        Value::List(v) | Value::Tuple(v) | Value::Set(v) => v.capacity() == 0,
        Value::Dict(v) => v.capacity() == 0,
        other => is_plain(other),
    }
}

/// Empties `items` and returns its allocation typed for `U`, normally the same type with
/// another lifetime.
///
/// This is safe code: collecting a mapped `vec::IntoIter` reuses the source allocation when
/// the element layouts match (std's in-place iteration). std does not promise that reuse, so
/// `retype_keeps_the_allocation` checks it: were it lost, this would allocate, not misbehave.
pub(crate) fn retype<T, U>(mut items: Vec<T>) -> Vec<U> {
    items.clear();
    items.into_iter().map(|_| unreachable!("empty")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retype_keeps_the_allocation() {
        let text = String::from("borrowed");
        let mut items: Vec<Value<'_>> = Vec::with_capacity(40);
        items.push(Value::Str(Cow::Borrowed(&text)));
        let (ptr, capacity) = (items.as_ptr() as usize, items.capacity());
        let items: Vec<Value<'static>> = retype(items);
        assert_eq!((items.as_ptr() as usize, items.capacity()), (ptr, capacity));
        assert!(items.is_empty());
    }

    #[test]
    fn pool_reuses_vectors_two_levels_deep() {
        let mut pool = Pool::default();
        let text = String::from("x");
        let mut inner = pool.list();
        inner.reserve(8);
        inner.push(Value::Str(Cow::Borrowed(&text)));
        let inner_ptr = inner.as_ptr() as usize;
        let mut pairs = pool.dict();
        pairs.push((Value::Str(Cow::Borrowed(&text)), Value::List(inner)));
        let pairs_ptr = pairs.as_ptr() as usize;
        pool.recycle(Value::Dict(pairs));
        drop(text);
        let pairs: Vec<(Value<'_>, Value<'_>)> = pool.dict();
        assert_eq!(pairs.as_ptr() as usize, pairs_ptr);
        let inner: Vec<Value<'_>> = pool.list();
        assert_eq!(inner.as_ptr() as usize, inner_ptr);
        // Nothing left: fresh vectors.
        let fresh: Vec<Value<'_>> = pool.list();
        assert_eq!(fresh.capacity(), 0);
    }

    #[test]
    fn pool_is_bounded() {
        let mut pool = Pool::default();
        for _ in 0..POOL_MAX + 5 {
            pool.recycle(Value::List(Vec::with_capacity(4)));
        }
        pool.recycle(Value::List(Vec::with_capacity(POOLED_CAPACITY_MAX + 1)));
        assert_eq!(pool.lists.len(), POOL_MAX);
        assert!(pool.lists.iter().all(|v| v.capacity() == 4));
    }
}
