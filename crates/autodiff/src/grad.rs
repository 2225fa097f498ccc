//! The gradient buffer an op's backward writes into, and the contract that lets the first op
//! to reach a value *write* its gradient instead of zero-filling and adding.

use pmixer_kernels::{simd, Real, Write};

/// An input's gradient buffer, as an op's backward receives it.
///
/// The first op to send a gradient to a value gets its buffer *fresh*: taken from the pool as it
/// is, unzeroed, and to be overwritten in full; later ops add into what is there. An op that can
/// write its result directly (a product stored instead of accumulated, a copy instead of an add)
/// asks [`Grad::write`]; the others add into [`Grad::acc`], which zero-fills a fresh buffer
/// first. Skipping the zero fill spares a pass over every activation-sized gradient (three per
/// mixer layer) and changes no value: 0 + x = x (up to the sign of a zero).
pub struct Grad<'a, T> {
    data: &'a mut [T],
    /// Cleared by whatever hands the buffer out for writing; the tape zero-fills a buffer whose
    /// flag is still set after the op (one it never wrote).
    fresh: &'a mut bool,
}

impl<'a, T: Real> Grad<'a, T> {
    /// A gradient buffer that is `*fresh` (unspecified contents) or holds a gradient to add to.
    pub fn new(data: &'a mut [T], fresh: &'a mut bool) -> Self {
        Grad { data, fresh }
    }

    /// How the op must write: [`Write::Set`] (every element) when fresh, else [`Write::Add`].
    pub fn write(&self) -> Write {
        if *self.fresh {
            Write::Set
        } else {
            Write::Add
        }
    }

    /// The buffer itself, for an op that writes it as [`Grad::write`] says.
    pub fn data(&mut self) -> &mut [T] {
        *self.fresh = false;
        self.data
    }

    /// [`Grad::data`] for the rest of `'a`.
    pub fn into_data(self) -> &'a mut [T] {
        *self.fresh = false;
        self.data
    }

    /// The buffer to add into (zero-filled first if it was fresh).
    pub fn acc(&mut self) -> &mut [T] {
        if *self.fresh {
            self.data.fill(T::ZERO);
        }
        self.data()
    }

    /// The same buffer and flag, borrowed for a shorter time.
    pub fn reborrow(&mut self) -> Grad<'_, T> {
        Grad { data: self.data, fresh: self.fresh }
    }

    /// `g ← g + v`, or `g ← v` when fresh.
    pub fn add(&mut self, v: &[T]) {
        match self.write() {
            Write::Set => self.data().copy_from_slice(v),
            Write::Add => simd::add_assign(self.data(), v),
        }
    }

    /// `g ← g + a·v`, or `g ← a·v` when fresh.
    pub fn add_scaled(&mut self, a: T, v: &[T]) {
        match self.write() {
            Write::Set => self.data().iter_mut().zip(v).for_each(|(g, &v)| *g = a * v),
            Write::Add => simd::axpy(self.data(), a, v),
        }
    }
}
