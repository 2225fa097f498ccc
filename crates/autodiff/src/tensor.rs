//! Tensors: a row-major buffer and its shape, the shape kept inline so that making a tensor
//! allocates nothing but its data.

use pmixer_kernels::Real;
use std::ops::Deref;

/// The most dimensions a tensor has here ((H, B, W) activations).
pub const MAX_RANK: usize = 4;

/// A tensor's dimensions, kept inline (making a tensor allocates nothing but its data).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    dims: [usize; MAX_RANK],
    rank: usize,
}

impl Shape {
    pub fn new(dims: &[usize]) -> Self {
        assert!(dims.len() <= MAX_RANK, "a shape of rank {} (at most {MAX_RANK})", dims.len());
        let mut d = [0; MAX_RANK];
        d[..dims.len()].copy_from_slice(dims);
        Shape { dims: d, rank: dims.len() }
    }
}

impl Deref for Shape {
    type Target = [usize];
    fn deref(&self) -> &[usize] {
        &self.dims[..self.rank]
    }
}

impl std::fmt::Debug for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

/// A contiguous, row-major tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor<T> {
    pub shape: Shape,
    pub data: Vec<T>,
}

impl<T: Real> Tensor<T> {
    pub fn new(shape: &[usize], data: Vec<T>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "tensor shape {shape:?} vs {} values",
            data.len()
        );
        Tensor { shape: Shape::new(shape), data }
    }

    pub fn zeros(shape: &[usize]) -> Self {
        Tensor::new(shape, vec![T::ZERO; shape.iter().product()])
    }
}
