//! The buffer pool: every batch-sized buffer a tape uses (values, what ops keep for their
//! backward, gradients, scratch) is taken from a [`Pool`] and given back to it, so that a
//! training loop which hands one pool from each step's tape to the next allocates nothing after
//! its first step. None of this changes a value; a reader of the math can skip this file.
//!
//! Besides free buffers, the pool carries a finished tape's own bookkeeping (its emptied lists
//! and its op boxes) to the next tape: see `Spare` in `tape.rs`.

use crate::tape::Spare;
use pmixer_kernels::Real;
use std::collections::HashMap;

/// Free buffers, by length, for reuse; and the last tape's emptied bookkeeping.
pub struct Pool<T> {
    free: HashMap<usize, Vec<Vec<T>>>,
    pub(crate) spare: Spare<T>,
}

impl<T: Real> Default for Pool<T> {
    fn default() -> Self {
        Pool::new()
    }
}

/// At most this many free buffers of one length are kept (a step uses far fewer).
const POOL_PER_LEN: usize = 4096;

impl<T: Real> Pool<T> {
    pub fn new() -> Self {
        Pool { free: HashMap::new(), spare: Spare::default() }
    }

    /// A zero-filled buffer of `len`, reused when one of that length is free.
    pub fn zeros(&mut self, len: usize) -> Vec<T> {
        match self.free.get_mut(&len).and_then(Vec::pop) {
            Some(mut v) => {
                v.fill(T::ZERO);
                v
            }
            None => vec![T::ZERO; len],
        }
    }

    /// A buffer of `len` whose contents are unspecified (left from an earlier use), for outputs
    /// that are overwritten in full.
    pub fn take(&mut self, len: usize) -> Vec<T> {
        self.free.get_mut(&len).and_then(Vec::pop).unwrap_or_else(|| vec![T::ZERO; len])
    }

    /// Returns a buffer for reuse.
    pub fn give(&mut self, v: Vec<T>) {
        if v.is_empty() {
            return;
        }
        let bucket = self.free.entry(v.len()).or_default();
        if bucket.len() < POOL_PER_LEN {
            bucket.push(v);
        }
    }
}
