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
use crate::real::Real;
use crate::simd;

/// `y = x·K + c`, y overwritten.
pub fn dense_forward<T: Real>(n: usize, n_in: usize, n_out: usize, x: &[T], k: &[T], c: &[T], y: &mut [T]) {
    assert!(x.len() == n * n_in && k.len() == n_in * n_out && c.len() == n_out && y.len() == n * n_out);
    // SAFETY: the shapes were checked above; y does not overlap x or K.
    unsafe {
        gemm(
            n,
            n_in,
            n_out,
            x.as_ptr(),
            (n_in, 1),
            k.as_ptr(),
            (n_out, 1),
            Init::Bias(c),
            y.as_mut_ptr(),
            (n_out, 1),
        )
    }
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
    // SAFETY: the shapes were checked above; outputs do not overlap inputs.
    unsafe {
        let (dyp, acc) = (dy.as_ptr(), Init::Accumulate);
        gemm(n, n_out, n_in, dyp, (n_out, 1), k.as_ptr(), (1, n_out), acc, dx.as_mut_ptr(), (n_in, 1));
        gemm(n_in, n, n_out, x.as_ptr(), (1, n_in), dyp, (n_out, 1), acc, dk.as_mut_ptr(), (n_out, 1));
    }
}
