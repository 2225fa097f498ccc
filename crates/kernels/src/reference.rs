//! Plain reference implementations: explicit transposes and naive triple loops, written to be
//! obviously right rather than fast. Tests hold the fused kernels to these, and the benches use
//! them as the baseline. Nothing on the training path calls this module.

// Index loops are the point here: each line reads like the formula it implements.
#![allow(clippy::needless_range_loop, clippy::too_many_arguments)]

use crate::gelu::{gelu, gelu_grad};
use crate::mlp::{output_shape, Axis, Hbw, MlpGrads, MlpWeights};
use crate::real::Real;

/// Copies an (H, B, W) tensor into an items × features matrix, items-major: for rows the (h, b)
/// rows each holding W features (already that layout); for columns the explicit transpose to
/// (b, w) items each holding H features.
pub fn to_items<T: Real>(axis: Axis, s: Hbw, x: &[T]) -> Vec<T> {
    match axis {
        Axis::Rows => x.to_vec(),
        Axis::Cols => {
            let mut out = vec![T::ZERO; x.len()];
            for h in 0..s.h {
                for b in 0..s.b {
                    for w in 0..s.w {
                        out[(b * s.w + w) * s.h + h] = x[(h * s.b + b) * s.w + w];
                    }
                }
            }
            out
        }
    }
}

/// The inverse of [`to_items`]: an items × features matrix back to (H, B, W) of shape `s`.
pub fn from_items<T: Real>(axis: Axis, s: Hbw, m: &[T]) -> Vec<T> {
    match axis {
        Axis::Rows => m.to_vec(),
        Axis::Cols => {
            let mut out = vec![T::ZERO; m.len()];
            for h in 0..s.h {
                for b in 0..s.b {
                    for w in 0..s.w {
                        out[(h * s.b + b) * s.w + w] = m[(b * s.w + w) * s.h + h];
                    }
                }
            }
            out
        }
    }
}

/// `y[i, o] = c[o] + Σ_f x[i, f]·k[f, o]` for every item i: a naive dense layer.
pub fn dense<T: Real>(items: usize, n_in: usize, n_out: usize, x: &[T], k: &[T], c: &[T]) -> Vec<T> {
    let mut y = vec![T::ZERO; items * n_out];
    for i in 0..items {
        for o in 0..n_out {
            let mut acc = c[o];
            for f in 0..n_in {
                acc += x[i * n_in + f] * k[f * n_out + o];
            }
            y[i * n_out + o] = acc;
        }
    }
    y
}

/// Reference forward: returns (z, a, y) in (H, B, W) layout, as [`crate::mlp_forward`] writes them.
pub fn mlp_forward<T: Real>(
    axis: Axis,
    s: Hbw,
    n_out: usize,
    w: MlpWeights<T>,
    x: &[T],
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let n_in = match axis {
        Axis::Rows => s.w,
        Axis::Cols => s.h,
    };
    let items = s.len() / n_in;
    let xi = to_items(axis, s, x);
    let z = dense(items, n_in, n_out, &xi, w.k1, w.c1);
    let a: Vec<T> = z.iter().map(|&v| gelu(v)).collect();
    let y = dense(items, n_out, n_out, &a, w.k2, w.c2);
    let os = output_shape(axis, s, n_out);
    (from_items(axis, os, &z), from_items(axis, os, &a), from_items(axis, os, &y))
}

/// Reference backward: adds into `dx` and `grads` exactly what [`crate::mlp_backward`] does, by
/// naive loops over explicitly transposed copies.
pub fn mlp_backward<T: Real>(
    axis: Axis,
    s: Hbw,
    n_out: usize,
    w: MlpWeights<T>,
    x: &[T],
    dy: &[T],
    dx: &mut [T],
    grads: MlpGrads<T>,
) {
    let n_in = match axis {
        Axis::Rows => s.w,
        Axis::Cols => s.h,
    };
    let n = n_out;
    let items = s.len() / n_in;
    let os = output_shape(axis, s, n_out);
    let xi = to_items(axis, s, x);
    let dyi = to_items(axis, os, dy);
    let z = dense(items, n_in, n, &xi, w.k1, w.c1);
    let a: Vec<T> = z.iter().map(|&v| gelu(v)).collect();
    let mut dxi = vec![T::ZERO; items * n_in];
    for i in 0..items {
        let dyr = &dyi[i * n..(i + 1) * n];
        let ar = &a[i * n..(i + 1) * n];
        let xr = &xi[i * n_in..(i + 1) * n_in];
        let mut dzr = vec![T::ZERO; n];
        for o in 0..n {
            grads.c2[o] += dyr[o];
            for j in 0..n {
                grads.k2[j * n + o] += ar[j] * dyr[o];
            }
        }
        for j in 0..n {
            let mut da = T::ZERO;
            for o in 0..n {
                da += dyr[o] * w.k2[j * n + o];
            }
            dzr[j] = da * gelu_grad(z[i * n + j]);
        }
        for j in 0..n {
            grads.c1[j] += dzr[j];
            for f in 0..n_in {
                grads.k1[f * n + j] += xr[f] * dzr[j];
            }
        }
        for f in 0..n_in {
            let mut acc = T::ZERO;
            for j in 0..n {
                acc += dzr[j] * w.k1[f * n + j];
            }
            dxi[i * n_in + f] = acc;
        }
    }
    for (d, v) in dx.iter_mut().zip(from_items(axis, s, &dxi)) {
        *d += v;
    }
}

/// Reference for a gated forward ([`crate::mlp::Skip`]): (z, a, h + g·y) with (z, a, y) from
/// [`mlp_forward`], the residual added in a separate pass.
pub fn gated_mlp_forward<T: Real>(
    axis: Axis,
    s: Hbw,
    n_out: usize,
    w: MlpWeights<T>,
    x: &[T],
    h: &[T],
    g: T,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let (z, a, y) = mlp_forward(axis, s, n_out, w, x);
    let out = h.iter().zip(&y).map(|(&h, &m)| h + g * m).collect();
    (z, a, out)
}

/// Reference for a gated backward ([`crate::mlp::GateGrad`]), by the chain rule as written:
/// the MLP's output gradient is g·dy, passed to [`mlp_backward`]; `dg += Σ m·dy` with the MLP's
/// output m recomputed. (h's gradient, dy itself, is the caller's.)
pub fn gated_mlp_backward<T: Real>(
    axis: Axis,
    s: Hbw,
    n_out: usize,
    w: MlpWeights<T>,
    x: &[T],
    g: T,
    dy: &[T],
    dx: &mut [T],
    grads: MlpGrads<T>,
    dg: &mut T,
) {
    let (_, _, m) = mlp_forward(axis, s, n_out, w, x);
    for (&m, &d) in m.iter().zip(dy) {
        *dg += m * d;
    }
    let dm: Vec<T> = dy.iter().map(|&d| g * d).collect();
    mlp_backward(axis, s, n_out, w, x, &dm, dx, grads);
}
