//! Strided matrix views: a pointer, a shape and two strides, so that a transpose is a swap of the
//! strides (never a copy) and a product's operands travel as one argument each.
//!
//! Element (i, j) of a view is at `ptr + i·rs + j·cs`. A view made from a slice
//! ([`MatRef::new`], [`MatMut::new`]) is checked to lie inside it; one made from a raw pointer
//! ([`MatRef::from_raw`], [`MatMut::from_raw`]) is the caller's promise, for the kernels that
//! split one buffer between threads by disjoint sets of items.

use std::marker::PhantomData;

/// A read-only m × n view.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a, T> {
    ptr: *const T,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
    _data: PhantomData<&'a [T]>,
}

// SAFETY: a MatRef is a shared borrow of T values (the PhantomData says so); sharing it between
// threads is sharing &[T], sound when T is Sync.
unsafe impl<T: Sync> Send for MatRef<'_, T> {}
// SAFETY: as above.
unsafe impl<T: Sync> Sync for MatRef<'_, T> {}

/// A writable m × n view.
#[derive(Debug)]
pub struct MatMut<'a, T> {
    ptr: *mut T,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
    cold: bool,
    _data: PhantomData<&'a mut [T]>,
}

/// The number of elements from the first to the last of an m × n view with strides (rs, cs),
/// plus one: what the backing slice must hold (0 for an empty view).
fn extent(rows: usize, cols: usize, (rs, cs): (usize, usize)) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

/// Panics unless a buffer of `len` elements holds the `rows × cols` view with `strides`.
fn check_extent(len: usize, rows: usize, cols: usize, strides: (usize, usize)) {
    let need = extent(rows, cols, strides);
    assert!(need <= len, "a {rows}×{cols} view with strides {strides:?} needs {need} elements, has {len}");
}

/// (m, k, n) of the product C (m×n) = A (m×k) · B (k×n); panics if the shapes do not fit.
pub fn product_shape<T>(a: &MatRef<T>, b: &MatRef<T>, c: &MatMut<T>) -> (usize, usize, usize) {
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    assert!(
        b.rows() == k && c.rows() == m && c.cols() == n,
        "gemm: {m}×{k} times {}×{n} into {}×{}",
        b.rows(),
        c.rows(),
        c.cols()
    );
    (m, k, n)
}

impl<'a, T> MatRef<'a, T> {
    /// The `rows × cols` matrix at the start of `data`, element (i, j) at `data[i·rs + j·cs]`.
    /// Panics if that runs past the end of `data`.
    pub fn new(data: &'a [T], rows: usize, cols: usize, strides: (usize, usize)) -> Self {
        check_extent(data.len(), rows, cols, strides);
        // SAFETY: just checked that every element lies in `data`, which outlives 'a.
        unsafe { Self::from_raw(data.as_ptr(), rows, cols, strides) }
    }

    /// # Safety
    /// Every element (i, j), i < rows, j < cols, at `ptr + i·rs + j·cs`, must be readable for
    /// 'a and not written through any other path meanwhile.
    pub unsafe fn from_raw(ptr: *const T, rows: usize, cols: usize, (rs, cs): (usize, usize)) -> Self {
        MatRef { ptr, rows, cols, rs, cs, _data: PhantomData }
    }

    /// The transpose: the same elements, rows and columns (and their strides) swapped.
    pub fn t(self) -> Self {
        MatRef { rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs, ..self }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// (row stride, column stride).
    pub fn strides(&self) -> (usize, usize) {
        (self.rs, self.cs)
    }
    pub fn as_ptr(&self) -> *const T {
        self.ptr
    }
}

impl<'a, T> MatMut<'a, T> {
    /// The `rows × cols` matrix at the start of `data`, element (i, j) at `data[i·rs + j·cs]`.
    /// Panics if that runs past the end of `data`.
    pub fn new(data: &'a mut [T], rows: usize, cols: usize, strides: (usize, usize)) -> Self {
        check_extent(data.len(), rows, cols, strides);
        // SAFETY: every element lies in `data`, borrowed mutably (so exclusively) for 'a.
        unsafe { Self::from_raw(data.as_mut_ptr(), rows, cols, strides) }
    }

    /// # Safety
    /// Every element (i, j), i < rows, j < cols, at `ptr + i·rs + j·cs`, must be writable for
    /// 'a and touched through no other path meanwhile (in particular not through the operands
    /// of the product that writes it).
    pub unsafe fn from_raw(ptr: *mut T, rows: usize, cols: usize, (rs, cs): (usize, usize)) -> Self {
        MatMut { ptr, rows, cols, rs, cs, cold: false, _data: PhantomData }
    }

    /// With `cold`, marks the matrix as memory not touched for a long time and about to be
    /// overwritten (a training forward's stored activations), so that a product writing it may
    /// prefetch its rows for writing ([`crate::gemm::gemm`]). A hint only: results do not change.
    pub fn cold(self, cold: bool) -> Self {
        MatMut { cold, ..self }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// (row stride, column stride).
    pub fn strides(&self) -> (usize, usize) {
        (self.rs, self.cs)
    }
    pub fn is_cold(&self) -> bool {
        self.cold
    }
    pub fn as_mut_ptr(&mut self) -> *mut T {
        self.ptr
    }

    /// The transpose, as [`MatRef::t`].
    pub fn t(self) -> Self {
        MatMut { rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs, ..self }
    }

    /// The same view for a shorter borrow, leaving this one usable after it.
    pub fn reborrow(&mut self) -> MatMut<'_, T> {
        MatMut { _data: PhantomData, ..*self }
    }

    /// The view, read-only from now on.
    pub fn into_ref(self) -> MatRef<'a, T> {
        let MatMut { ptr, rows, cols, rs, cs, .. } = self;
        MatRef { ptr, rows, cols, rs, cs, _data: PhantomData }
    }
}
