//! A plain dense layer over a row-major batch, for the classifier's output layer.
//!
//! ```text
//! forward  y = x·K + c           x (N×in), K (in×out), c (out), y (N×out)
//! backward dx += dy·Kᵀ           Kᵀ: K read with strides (1, out) instead of (out, 1)
//!          dK += xᵀ·dy           xᵀ: x read with strides (1, in)
//!          dc += Σ_rows dy
//! ```
//! The head's N×in matrix is tiny (64×124 for MNIST), so this runs on one thread, through
//! [`crate::gemm::gemm`] (whose direct paths allocate nothing, unlike matrixmultiply's packing).

use crate::gemm::{gemm, Init};
use crate::mat::{MatMut, MatRef};
use crate::real::Real;
use crate::simd;

/// `y = x·K + c`, y overwritten.
pub fn dense_forward<T: Real>(n: usize, n_in: usize, n_out: usize, x: &[T], k: &[T], c: &[T], y: &mut [T]) {
    assert!(x.len() == n * n_in && k.len() == n_in * n_out && c.len() == n_out && y.len() == n * n_out);
    gemm(
        MatRef::new(x, n, n_in, (n_in, 1)),
        MatRef::new(k, n_in, n_out, (n_out, 1)),
        MatMut::new(y, n, n_out, (n_out, 1)),
        Init::Bias(c),
    );
}

/// Backward of [`dense_forward`]: adds into `dx`, `dk` and `dc`.
#[allow(clippy::too_many_arguments)]
pub fn dense_backward<T: Real>(
    n: usize,
    n_in: usize,
    n_out: usize,
    x: &[T],
    k: &[T],
    dy: &[T],
    dx: &mut [T],
    dk: &mut [T],
    dc: &mut [T],
) {
    assert!(x.len() == n * n_in && k.len() == n_in * n_out && dy.len() == n * n_out);
    assert!(dx.len() == x.len() && dk.len() == k.len() && dc.len() == n_out);
    for row in dy.chunks_exact(n_out) {
        simd::add_assign(dc, row);
    }
    let (dy, acc) = (MatRef::new(dy, n, n_out, (n_out, 1)), Init::Accumulate);
    gemm(dy, MatRef::new(k, n_in, n_out, (n_out, 1)).t(), MatMut::new(dx, n, n_in, (n_in, 1)), acc);
    gemm(MatRef::new(x, n, n_in, (n_in, 1)).t(), dy, MatMut::new(dk, n_in, n_out, (n_out, 1)), acc);
}
