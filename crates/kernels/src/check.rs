//! The fused kernels against their naive twins, as functions that report rather than assert, so
//! that the test suite (`tests/kernels.rs`) and `pmixer selftest` (on a user's own CPU, level by
//! level) run the same comparisons.

use crate::gelu::{gelu_and_grad_with, gelu_grad, Fused};
use crate::gemm::{gemm, gemm_colsum, gemm_dgelu, Init};
use crate::mlp::hidden_pad;
use crate::{
    backward_workspace, hidden_len, mlp_backward, mlp_forward, output_shape, reference, Axis, BackwardIo,
    ForwardIo, GateGrad, Hbw, MatMut, MatRef, MlpGrads, MlpWeights, Real, Saved, Skip, Write,
};

/// One comparison: its name, the largest error found and the bound it must stay within.
#[derive(Clone, Debug)]
pub struct Report {
    pub name: String,
    pub err: f64,
    pub bound: f64,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.err <= self.bound
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        if self.bound == 0.0 {
            write!(f, "{}: {} differ (must be 0)", self.name, self.err)
        } else {
            write!(f, "{}: error {:.1e} (bound {:.0e})", self.name, self.err, self.bound)
        }
    }
}

/// A small deterministic generator (xorshift64*), so the checks need no RNG crate.
pub struct Gen(pub u64);
impl Gen {
    pub fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn vec<T: Real>(&mut self, n: usize, scale: f64) -> Vec<T> {
        (0..n).map(|_| T::from_f64((2.0 * self.uniform() - 1.0) * scale)).collect()
    }
}

/// max |a − b| / max(max |b|, 1): the error relative to the tensor's scale (tensors here are O(1):
/// inputs are, and gradient accumulators start at 1).
pub fn rel_err<T: Real, U: Real>(a: &[T], b: &[U]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1.0f64, |m, v| m.max(v.to_f64().abs()));
    a.iter().zip(b).fold(0.0f64, |m, (x, y)| m.max((x.to_f64() - y.to_f64()).abs())) / scale
}

pub struct Case {
    pub axis: Axis,
    pub s: Hbw,
    pub n_out: usize,
    /// A gated residual around the MLP ([`Skip`]) with this gate.
    pub gate: Option<f64>,
}

/// The MLP cases the tests and `pmixer selftest` check: every layout the model uses (MNIST's
/// 28×28 and CIFAR's 32×96 at batch 64, the head's MLP(1)), odd sizes, gated and not.
pub fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for &(h, b, w) in &[(5, 3, 7), (28, 64, 28), (32, 64, 96), (1, 1, 1), (4, 130, 3)] {
        let s = Hbw { h, b, w };
        v.push(Case { axis: Axis::Rows, s, n_out: w, gate: None });
        v.push(Case { axis: Axis::Cols, s, n_out: h, gate: None });
        v.push(Case { axis: Axis::Rows, s, n_out: 1, gate: None });
        v.push(Case { axis: Axis::Cols, s, n_out: 1, gate: None });
        v.push(Case { axis: Axis::Rows, s, n_out: w, gate: Some(0.7) });
        v.push(Case { axis: Axis::Cols, s, n_out: h, gate: Some(-0.4) });
    }
    let s = Hbw { h: 5, b: 3, w: 7 };
    v.push(Case { axis: Axis::Rows, s, n_out: 4, gate: None });
    v.push(Case { axis: Axis::Cols, s, n_out: 9, gate: None });
    // The classifier's untrained gate: the MLP gets no gradient, the gate does.
    v.push(Case { axis: Axis::Rows, s, n_out: 7, gate: Some(0.0) });
    v
}

/// Everything one MLP call reads and writes, from a seed.
pub struct Run<T> {
    /// gelu'(z), as a training forward leaves it.
    pub z: Vec<T>,
    pub a: Vec<T>,
    pub y: Vec<T>,
    pub dx: Vec<T>,
    pub grads: [Vec<T>; 4],
    /// The gate's gradient (0 for an ungated case).
    pub dg: T,
}

fn weights<T: Real>(gen: &mut Gen, n_in: usize, n: usize) -> [Vec<T>; 4] {
    [gen.vec(n_in * n, 0.5), gen.vec(n, 0.1), gen.vec(n * n, 0.5), gen.vec(n, 0.1)]
}

/// A case's random inputs, drawn from its seed in one order, so that every run of the case (the
/// naive twin, the fused kernels in any precision) sees the same values: the weights, x, dy and
/// the residual h.
struct Inputs<T> {
    w: [Vec<T>; 4],
    x: Vec<T>,
    dy: Vec<T>,
    h: Vec<T>,
}

fn inputs<T: Real>(c: &Case, seed: u64) -> Inputs<T> {
    let mut gen = Gen(seed);
    let w = weights::<T>(&mut gen, n_in(c), c.n_out);
    let x = gen.vec(c.s.len(), 1.5);
    let out = output_shape(c.axis, c.s, c.n_out).len();
    let (dy, h) = (gen.vec(out, 1.0), gen.vec(out, 1.0));
    Inputs { w, x, dy, h }
}

fn n_in(c: &Case) -> usize {
    match c.axis {
        Axis::Rows => c.s.w,
        Axis::Cols => c.s.h,
    }
}

pub fn fused<T: Real>(c: &Case, seed: u64) -> Run<T> {
    // Start the accumulators from non-zero values to check that backward adds rather than sets.
    fused_into(c, seed, T::ONE, Write::Add)
}

/// The fused forward and backward, the backward's gradient buffers filled with `start` and
/// written as `write` says.
pub fn fused_into<T: Real>(c: &Case, seed: u64, start: T, write: Write) -> Run<T> {
    let (ni, n) = (n_in(c), c.n_out);
    let Inputs { w, x, dy, h } = inputs::<T>(c, seed);
    let out = dy.len();
    let wts = MlpWeights { k1: &w[0], c1: &w[1], k2: &w[2], c2: &w[3] };
    let hid = hidden_len(c.axis, c.s, n);
    let (mut z, mut a, mut y) = (vec![T::ZERO; hid], vec![T::ZERO; hid], vec![T::ZERO; out]);
    let skip = c.gate.map(|g| Skip { h: &h, g: T::from_f64(g) });
    mlp_forward(c.axis, c.s, wts, ForwardIo { x: &x, gz: &mut z, a: &mut a, y: &mut y }, true, skip);
    let mut dz = vec![T::ZERO; hid];
    let mut dx: Vec<T> = vec![start; x.len()];
    let mut g = [vec![start; ni * n], vec![start; n], vec![start; n * n], vec![start; n]];
    let [g0, g1, g2, g3] = &mut g;
    let grads = MlpGrads { k1: g0, c1: g1, k2: g2, c2: g3, write };
    // A workspace full of garbage: the kernel must not depend on its contents.
    let mut work = vec![T::from_f64(7.0); backward_workspace(c.axis, c.s, n)];
    // The gate's gradient is always added to (a scalar, never handed over fresh).
    let mut dg = if c.gate.is_some() { T::ONE } else { T::ZERO };
    let gate = c.gate.map(|g| GateGrad { g: T::from_f64(g), dg: &mut dg });
    let saved = Saved { x: &x, dgelu: &z, a: &a };
    let io = BackwardIo { dy: &dy, dx: &mut dx, dx_write: write, dz: &mut dz, work: &mut work };
    mlp_backward(c.axis, c.s, wts, saved, io, grads, gate);
    let (z, a) = (unpad(c, &z), unpad(c, &a));
    Run { z, a, y, dx, grads: g, dg }
}

/// A hidden tensor ([`hidden_len`]) in the output's layout: the column MLP's runs of items
/// without the pad after each.
fn unpad<T: Real>(c: &Case, v: &[T]) -> Vec<T> {
    match c.axis {
        Axis::Rows => v.to_vec(),
        Axis::Cols => {
            let items = c.s.b * c.s.w;
            let run = items + hidden_pad(items);
            assert_eq!(v.len(), c.n_out * run);
            v.chunks_exact(run).flat_map(|r| r[..items].to_vec()).collect()
        }
    }
}

/// The reference on the same inputs as `fused::<T>`, evaluated in f64: the exact answer up to
/// f64 rounding, so a comparison measures only the fused kernel's own error.
pub fn naive<T: Real>(c: &Case, seed: u64) -> Run<f64> {
    let (ni, n) = (n_in(c), c.n_out);
    let up = |v: Vec<T>| v.into_iter().map(|x| x.to_f64()).collect::<Vec<f64>>();
    let Inputs { w, x, dy, h } = inputs::<T>(c, seed);
    let (w, x, dy, h) = (w.map(up), up(x), up(dy), up(h));
    let wts = MlpWeights { k1: &w[0], c1: &w[1], k2: &w[2], c2: &w[3] };
    let (z, a, y) = match c.gate {
        Some(g) => reference::gated_mlp_forward(c.axis, c.s, n, wts, &x, &h, g),
        None => reference::mlp_forward(c.axis, c.s, n, wts, &x),
    };
    // A training forward leaves gelu'(z) where z was.
    let z = z.into_iter().map(gelu_grad).collect();
    let mut dx = vec![1.0; x.len()];
    let mut g = [vec![1.0; ni * n], vec![1.0; n], vec![1.0; n * n], vec![1.0; n]];
    let [g0, g1, g2, g3] = &mut g;
    let grads = MlpGrads { k1: g0, c1: g1, k2: g2, c2: g3, write: Write::Add };
    let mut dg = 0.0;
    match c.gate {
        Some(gv) => {
            dg = 1.0;
            reference::gated_mlp_backward(c.axis, c.s, n, wts, &x, gv, &dy, &mut dx, grads, &mut dg);
        }
        None => reference::mlp_backward(c.axis, c.s, n, wts, &x, &dy, &mut dx, grads),
    }
    Run { z, a, y, dx, grads: g, dg }
}

/// The fused MLP against the f64 reference on case `c` (inputs from `seed`): z (as gelu′), a, y,
/// dx, dg and the four weight gradients, each within `tol` of the reference relative to the
/// tensor's scale ([`rel_err`]).
pub fn mlp<T: Real>(c: &Case, seed: u64, tol: f64) -> Vec<Report> {
    let (f, r) = (fused::<T>(c, seed), naive::<T>(c, seed));
    let gate = c.gate.map_or(String::new(), |g| format!(", gate {g}"));
    let label =
        format!("mlp {:?} {}×{}×{} → {}{gate}, forward and backward", c.axis, c.s.h, c.s.b, c.s.w, c.n_out);
    let mut errs = vec![("z", rel_err(&f.z, &r.z)), ("a", rel_err(&f.a, &r.a)), ("y", rel_err(&f.y, &r.y))];
    errs.push(("dx", rel_err(&f.dx, &r.dx)));
    errs.push(("dg", rel_err(&[f.dg], &[r.dg])));
    for (name, (gf, gr)) in ["dK1", "dc1", "dK2", "dc2"].iter().zip(f.grads.iter().zip(&r.grads)) {
        errs.push((name, rel_err(gf, gr)));
    }
    errs.into_iter().map(|(name, err)| Report { name: format!("{label}: {name}"), err, bound: tol }).collect()
}

/// Every path of [`gemm`] (direct with narrow and wide C, transposed, transposed with a packed
/// panel, dot products, k past one sweep, the fallback) with every [`Init`], in `f32`, against a
/// product summed in f64: one report per shape and layout, the worst over the three inits,
/// relative to 1e-5·4√k. `large` adds the shapes of real chunks (inference's 1750 items, k of
/// 256 and 300), which take a while under an emulator.
pub fn gemm_paths(large: bool) -> Vec<Report> {
    let mut gen = Gen(77);
    let mut shapes =
        vec![(1, 1, 1), (3, 5, 7), (8, 28, 28), (13, 33, 17), (40, 96, 96), (9, 130, 31), (2, 16, 48)];
    shapes.extend([(256, 32, 40), (20, 24, 256)]); // B's rows 1 KB apart: the packed panel
    if large {
        shapes.extend([(128, 28, 28), (1750, 28, 28), (28, 256, 28), (20, 300, 30)]);
    }
    let mut out = Vec::new();
    for &(m, k, n) in &shapes {
        let a: Vec<f32> = gen.vec(m * k, 1.0);
        let b: Vec<f32> = gen.vec(k * n, 1.0);
        let c0: Vec<f32> = gen.vec(m * n, 1.0);
        let bias: Vec<f32> = gen.vec(n, 1.0);
        // Layouts as (rs, cs) for A (m×k), B (k×n), C (m×n), each row- or column-major.
        let layouts = [
            ("direct", (k, 1), (n, 1), (n, 1)),
            ("transposed", (1, m), (n, 1), (1, m)),
            ("dot", (k, 1), (1, k), (n, 1)),
            ("fallback", (1, m), (1, k), (n, 1)),
        ];
        for (path, la, lb, lc) in layouts {
            let mut err = 0f64;
            for init in [Init::Zero, Init::Accumulate, Init::Bias(&bias)] {
                let mut c = vec![0f32; m * n];
                for i in 0..m {
                    for j in 0..n {
                        c[i * lc.0 + j * lc.1] = c0[i * n + j];
                    }
                }
                gemm(
                    MatRef::new(&a, m, k, la),
                    MatRef::new(&b, k, n, lb),
                    MatMut::new(&mut c, m, n, lc),
                    init,
                );
                for i in 0..m {
                    for j in 0..n {
                        let mut want = match init {
                            Init::Zero => 0.0,
                            Init::Accumulate => c0[i * n + j] as f64,
                            Init::Bias(v) => v[j] as f64,
                        };
                        for p in 0..k {
                            want += a[i * la.0 + p * la.1] as f64 * b[p * lb.0 + j * lb.1] as f64;
                        }
                        err = err.max((c[i * lc.0 + j * lc.1] as f64 - want).abs());
                    }
                }
            }
            let bound = 1e-5 * (k as f64).sqrt().max(1.0) * 4.0;
            out.push(Report { name: format!("gemm {path} {m}×{k}×{n}"), err, bound });
        }
    }
    out
}

/// How many values of `x` differ from `y`'s in their bits.
fn bits_differ(x: &[f32], y: &[f32]) -> usize {
    x.iter().zip(y).filter(|(p, q)| p.to_bits() != q.to_bits()).count()
}

/// [`gemm_dgelu`] (the dz product with the backward through GELU in its stores) against its
/// naive twin: the product by [`gemm`], then written-out loops multiplying by G and summing each
/// column (rows in order where C's rows are contiguous; eight interleaved partial sums down the
/// column and [`crate::simd::sum8_tree`] where its columns are). One report per shape and layout:
/// the number of values (C and the sums) whose bits differ, bound 0. The shapes cover the row
/// and column layouts, partial vectors, every row-block height, k past one sweep (where only
/// the last may finish) and runs whose length is no multiple of 8; `large` adds real chunks'.
pub fn gemm_dgelu_bits(large: bool) -> Vec<Report> {
    let mut gen = Gen(91);
    let mut shapes = vec![(1, 3, 1), (13, 28, 28), (37, 20, 17), (64, 32, 96), (29, 300, 12), (100, 9, 40)];
    if large {
        shapes.extend([(896, 28, 28), (192, 96, 96), (256, 32, 32)]);
    }
    let mut out = Vec::new();
    for &(m, k, n) in &shapes {
        let a: Vec<f32> = gen.vec(m * k, 1.0);
        let b: Vec<f32> = gen.vec(k * n, 1.0);
        let g: Vec<f32> = gen.vec(m * n, 1.0);
        let db0: Vec<f32> = gen.vec(n, 1.0);
        // (name, A's strides, C's and G's strides): a row MLP's tile, a column MLP's.
        for (layout, la, lc) in [("rows", (k, 1), (n, 1)), ("columns", (1, m), (1, m))] {
            let (a, b) = (MatRef::new(&a, m, k, la), MatRef::new(&b, k, n, (n, 1)));
            let g_view = MatRef::new(&g, m, n, lc);
            let (mut c, mut db, mut lanes) = (vec![0f32; m * n], db0.clone(), vec![7f32; 8 * n]);
            gemm_dgelu(a, b, MatMut::new(&mut c, m, n, lc), g_view, &mut db, &mut lanes);
            let (mut want, mut want_db) = (vec![0f32; m * n], db0.clone());
            gemm(a, b, MatMut::new(&mut want, m, n, lc), Init::Zero);
            let at = |i: usize, j: usize| i * lc.0 + j * lc.1;
            for i in 0..m {
                for j in 0..n {
                    want[at(i, j)] *= g[at(i, j)];
                }
            }
            for (j, dbj) in want_db.iter_mut().enumerate() {
                if layout == "rows" {
                    for i in 0..m {
                        *dbj += want[at(i, j)];
                    }
                } else {
                    let mut part = [0f32; 8];
                    for i in 0..m {
                        part[i % 8] += want[at(i, j)];
                    }
                    *dbj += crate::simd::sum8_tree(&part);
                }
            }
            let err = (bits_differ(&c, &want) + bits_differ(&db, &want_db)) as f64;
            out.push(Report { name: format!("gemm_dgelu {layout} {m}×{k}×{n}, bits"), err, bound: 0.0 });
        }
    }
    out
}

/// [`gemm_colsum`] (a product with B's column sums taken as it reads B's rows) against its twin:
/// [`gemm`], then B's rows added in order by a written-out loop. One report per shape: the
/// number of values (C and the sums) whose bits differ, bound 0. The shapes cover k past one
/// sweep, C narrower and wider than 32 columns (the fused and the unfused forms on AVX-512),
/// partial vectors and every row-block height; `large` adds MNIST's and CIFAR's dK2 of a chunk.
pub fn gemm_colsum_bits(large: bool) -> Vec<Report> {
    let mut gen = Gen(93);
    let mut shapes = vec![(1, 5, 1), (28, 40, 28), (13, 300, 17), (9, 33, 40), (3, 64, 32)];
    if large {
        shapes.extend([(28, 896, 28), (96, 512, 96)]);
    }
    let mut out = Vec::new();
    for &(m, k, n) in &shapes {
        // A read down its columns, as a weight gradient's Aᵀ is.
        let (av, bv) = (gen.vec::<f32>(m * k, 1.0), gen.vec::<f32>(k * n, 1.0));
        let sums0: Vec<f32> = gen.vec(n, 1.0);
        let (a, b) = (MatRef::new(&av, m, k, (1, m)), MatRef::new(&bv, k, n, (n, 1)));
        let (mut c, mut sums) = (vec![0f32; m * n], sums0.clone());
        gemm_colsum(a, b, MatMut::new(&mut c, m, n, (n, 1)), Init::Zero, &mut sums);
        let (mut want, mut want_sums) = (vec![0f32; m * n], sums0);
        gemm(a, b, MatMut::new(&mut want, m, n, (n, 1)), Init::Zero);
        for row in bv.chunks_exact(n) {
            for (s, &v) in want_sums.iter_mut().zip(row) {
                *s += v;
            }
        }
        let err = (bits_differ(&c, &want) + bits_differ(&sums, &want_sums)) as f64;
        out.push(Report { name: format!("gemm_colsum {m}×{k}×{n}, bits"), err, bound: 0.0 });
    }
    out
}

/// The GELU tiles ([`crate::simd::gelu_keep_tile`], [`crate::simd::gelu_tile`]) on the level in
/// use against the scalar functions compiled for the baseline target, on `n` arguments spread
/// over every exponent and 200,000 more in [−10, 10]: the number of arguments whose bits differ
/// (bound 0), named by the first one.
pub fn gelu_bits(n: u32) -> Report {
    let mut z: Vec<f32> = (0..n)
        .map(|i| f32::from_bits(i.wrapping_mul(2_654_435_761)))
        .filter(|v| v.is_finite() && v.abs() < 100.0)
        .collect();
    z.extend((0..200_000).map(|i| (i as f32 - 100_000.0) / 10_000.0));
    let mut kept = z.clone();
    let (mut a, mut a_only) = (vec![0f32; z.len()], vec![0f32; z.len()]);
    crate::simd::gelu_keep_tile(&mut kept, &mut a);
    crate::simd::gelu_tile(&z, &mut a_only);
    // The scalar twin with the level's multiply-add (fused, or the portable body's).
    let twin: fn(f32) -> (f32, f32) = match crate::simd::fused_mul_add() {
        true => gelu_and_grad_with::<f32, Fused>,
        false => gelu_and_grad_with::<f32, crate::simd::PortableMulAdd>,
    };
    let mut first = None;
    let mut wrong = 0;
    for (i, &x) in z.iter().enumerate() {
        let (g, dg) = twin(x);
        if a[i].to_bits() != g.to_bits()
            || a_only[i].to_bits() != g.to_bits()
            || kept[i].to_bits() != dg.to_bits()
        {
            wrong += 1;
            first.get_or_insert(x);
        }
    }
    let mul_add = if crate::simd::fused_mul_add() { "fused" } else { "unfused" };
    let name = match first {
        Some(x) => format!(
            "gelu tiles ({mul_add} multiply-adds), bits of {} arguments (first wrong: {x:e})",
            z.len()
        ),
        None => format!("gelu tiles ({mul_add} multiply-adds), bits of {} arguments", z.len()),
    };
    Report { name, err: wrong as f64, bound: 0.0 }
}

/// Values that test a rounding to bf16: ties on both sides of an even kept value, the largest
/// finite `f32`s (which round to infinity), infinities, quiet and signalling NaNs of both signs,
/// subnormals, the smallest normals, zeros; then `n` more spread over every exponent.
pub fn bf16_edge_values(n: u32) -> Vec<f32> {
    let bits = [
        0x3F80_8000u32,
        0x3F81_8000,
        0x3F80_8001,
        0x3F80_7FFF,
        0xBF80_8000,
        0xBF81_8000,
        0x7F7F_FFFF,
        0x7F7F_8000,
        0x7F7F_7FFF,
        0xFF7F_FFFF,
        0x7F80_0000,
        0xFF80_0000,
        0x7FC0_0001,
        0x7F80_0001,
        0xFF80_0001,
        0xFFC1_2345,
        0x0000_0001,
        0x807F_FFFF,
        0x0040_0000,
        0x0080_0000,
        0x8080_8000,
        0x0000_0000,
        0x8000_0000,
    ];
    let mut v: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
    v.extend((0..n).map(|i| f32::from_bits(i.wrapping_mul(2_654_435_761))));
    v
}

/// bf16 rounding: the scalar twin ([`crate::bf16::round`]) against the nearest bf16 worked out
/// in f64 (ties to even) for every finite normal value of [`bf16_edge_values`] below bf16's
/// largest, then the packing ([`crate::bf16::pack_pairs`], `VCVTNEPS2BF16` where the CPU has it,
/// and [`crate::bf16::pack_pairs_bf16`] of the rounded values) in each of their vector layouts
/// against the twin, odd k and partial vectors included. The count of values that differ
/// (bound 0).
pub fn bf16_rounding() -> Report {
    use crate::bf16::{pack_pairs, pack_pairs_bf16, pack_pairs_scalar, round, widen};
    let (k, n) = (37, 53);
    let x = bf16_edge_values(200_000);
    let mut wrong = 0;
    for &v in &x {
        let b = v.to_bits();
        if !v.is_finite() || b & 0x7F80_0000 == 0 || v.abs() >= widen(0x7F7F) {
            continue;
        }
        // The two bf16 values around v: its bits truncated, and the next one up in magnitude.
        let down = (b >> 16) as u16;
        let up = down + 1;
        let (dd, du) = ((v as f64 - widen(down) as f64).abs(), (widen(up) as f64 - v as f64).abs());
        let want = if dd < du || (dd == du && down.is_multiple_of(2)) { down } else { up };
        wrong += usize::from(round(v) != want);
    }
    let checked = x.len() + 6 * k * n;
    let x = &x[..k * n];
    // (k × n) views of x and of its bf16 values into (⌈k/2⌉ × n) pairs: rows contiguous in both;
    // k contiguous in both; k contiguous into contiguous rows (the transposes).
    let kq = k.div_ceil(2);
    let rounded: Vec<u16> = x.iter().map(|&v| round(v)).collect();
    for (from, to) in [((n, 1), (n, 1)), ((1, k), (1, kq)), ((1, k), (n, 1))] {
        let (mut fast, mut twin, mut from_bf16) =
            (vec![0u32; kq * n], vec![0u32; kq * n], vec![0u32; kq * n]);
        pack_pairs(MatRef::new(x, k, n, from), MatMut::new(&mut fast, kq, n, to));
        pack_pairs_scalar(MatRef::new(x, k, n, from), MatMut::new(&mut twin, kq, n, to));
        pack_pairs_bf16(MatRef::new(&rounded, k, n, from), MatMut::new(&mut from_bf16, kq, n, to));
        wrong += fast.iter().zip(&twin).filter(|(a, b)| a != b).count();
        wrong += from_bf16.iter().zip(&twin).filter(|(a, b)| a != b).count();
    }
    let how = if crate::bf16::available() { "VCVTNEPS2BF16" } else { "the twin itself, no AVX512_BF16," };
    let name =
        format!("bf16 rounding of {checked} values (f64 nearest-even; packing by {how} against the twin)");
    Report { name, err: wrong as f64, bound: 0.0 }
}

/// The mixed-precision GELU epilogues against their definitions one value at a time, bit for
/// bit (bound 0 values differing; `None` without AVX512_BF16):
/// * the backward through GELU ([`crate::bf16::mul_round_add_rows`], [`crate::bf16::mul_round_sum`])
///   and the same without a factor ([`crate::bf16::round_add_rows`], [`crate::bf16::round_sum`]):
///   p = d·widen(g) (or d) in f32, its rounding, the column sums in row order, and the run sum in
///   eight running sums and a fixed tree; rows of 1 to 37, 96, 100 and 113 values and runs of 0
///   to 40, partial vectors included;
/// * the forward's ([`crate::bf16::gelu_keep_round`]): gelu and gelu' as the f32 kernels compute
///   them, rounded; runs of 0 to 40 and 1,000 values.
pub fn bf16_gelu_epilogues() -> Option<Report> {
    use crate::bf16::{mul_round_add_rows, mul_round_sum, round, round_add_rows, round_sum, widen};
    let s = crate::isa::Avx512Bf16::detect()?;
    let mut gen = Gen(17);
    let (mut wrong, mut checked) = (0, 0);
    // With the factors g (the backward through GELU) and without (an output gradient's bias
    // gradient and rounding: g = 1).
    for scale in [true, false] {
        let factor = |g: u16| if scale { widen(g) } else { 1.0 };
        for n in (1..=37).chain([96, 100, 113]) {
            let len = 5 * n;
            let d: Vec<f32> = gen.vec(len, 3.0);
            let g: Vec<u16> = gen.vec::<f32>(len, 1.2).into_iter().map(round).collect();
            let (mut acc, mut want_acc) = (vec![0.25f32; n], vec![0.25f32; n]);
            let mut out = vec![0u16; len];
            if scale {
                mul_round_add_rows(s, &d, &g, &mut acc, &mut out);
            } else {
                round_add_rows(s, &d, &mut acc, &mut out);
            }
            for (j, (&d, &g)) in d.iter().zip(&g).enumerate() {
                let p = d * factor(g);
                want_acc[j % n] += p;
                wrong += usize::from(out[j] != round(p));
            }
            wrong += bits_differ(&acc, &want_acc);
            checked += len + n;
        }
        for len in 0..=40 {
            let d: Vec<f32> = gen.vec(len, 3.0);
            let g: Vec<u16> = gen.vec::<f32>(len, 1.2).into_iter().map(round).collect();
            let mut out = vec![0u16; len];
            let sum = if scale { mul_round_sum(s, &d, &g, &mut out) } else { round_sum(s, &d, &mut out) };
            let mut l = [0f32; 8];
            for (j, (&d, &g)) in d.iter().zip(&g).enumerate() {
                let p = d * factor(g);
                l[j % 8] += p;
                wrong += usize::from(out[j] != round(p));
            }
            let want = ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
            wrong += usize::from(sum.to_bits() != want.to_bits());
            checked += len + 1;
        }
    }
    // The forward's epilogue: gelu and gelu' in f32 by the scalar definition (fused
    // multiply-adds, as every level with direct kernels computes them), then rounded.
    for len in (0..=40).chain([1000]) {
        let z: Vec<f32> = gen.vec(len, 6.0);
        let (mut gz, mut a) = (vec![0u16; len], vec![0u16; len]);
        crate::bf16::gelu_keep_round(s, &z, &mut gz, &mut a);
        for (j, &z) in z.iter().enumerate() {
            let (av, gv) = crate::gelu::gelu_and_grad_with::<f32, crate::gelu::Fused>(z);
            wrong += usize::from(a[j] != round(av)) + usize::from(gz[j] != round(gv));
        }
        checked += 2 * len;
    }
    let name = format!("bf16 GELU epilogues, forward and backward, {checked} values against the definition");
    Some(Report { name, err: wrong as f64, bound: 0.0 })
}

/// [`crate::bf16::gemm_pairs`] against sums in f64 of the same bf16 values, over row- and
/// column-major A, odd k, partial vectors, k past one sweep and every [`crate::bf16::PairInit`]:
/// one report per shape, the worst element's error divided by its bound
/// 2⁻²³·(⌈k/2⌉ + 2)·(|start| + Σ|a·b|) (each of the ⌈k/2⌉ + 1 additions into the f32
/// accumulator rounds at most twice, the bf16 products themselves being exact), so the bound
/// reported is 1. Empty where the CPU lacks AVX512_BF16.
pub fn bf16_products() -> Vec<Report> {
    use crate::bf16::{gemm_pairs, pack_pairs, unpair, PairInit};
    let Some(s) = crate::isa::Avx512Bf16::detect() else { return Vec::new() };
    let mut gen = Gen(91);
    let mut out = Vec::new();
    let shapes: [(usize, usize, usize); 7] =
        [(1, 1, 1), (3, 5, 7), (37, 28, 28), (9, 96, 96), (13, 33, 100), (5, 300, 17), (64, 32, 40)];
    for (m, k, n) in shapes {
        let (kq, a, b) = (k.div_ceil(2), gen.vec::<f32>(m * k, 1.0), gen.vec::<f32>(k * n, 1.0));
        let (c0, col_bias, row_bias) =
            (gen.vec::<f32>(m * n, 1.0), gen.vec::<f32>(n, 1.0), gen.vec::<f32>(m, 1.0));
        let mut bp = vec![0u32; kq * n];
        pack_pairs(MatRef::new(&b, k, n, (n, 1)), MatMut::new(&mut bp, kq, n, (n, 1)));
        // A's pairs row-major (m × kq) and column-major (kq rows of m).
        let mut ap = vec![0u32; m * kq];
        pack_pairs(MatRef::new(&a, k, m, (1, k)), MatMut::new(&mut ap, kq, m, (1, kq)));
        let mut at = vec![0u32; m * kq];
        pack_pairs(MatRef::new(&a, k, m, (1, k)), MatMut::new(&mut at, kq, m, (m, 1)));
        let mut worst = 0f64;
        for (pairs, la) in [(&ap, (kq, 1)), (&at, (1, m))] {
            for init in [
                PairInit::Zero,
                PairInit::Accumulate,
                PairInit::ColBias(&col_bias),
                PairInit::RowBias(&row_bias),
            ] {
                // C's rows n + 3 apart, the gap holding values the product must not touch.
                let rsc = n + 3;
                let mut c = vec![9.0f32; m * rsc];
                for i in 0..m {
                    c[i * rsc..i * rsc + n].copy_from_slice(&c0[i * n..(i + 1) * n]);
                }
                gemm_pairs(
                    s,
                    MatRef::new(pairs, m, kq, la),
                    MatRef::new(&bp, kq, n, (n, 1)),
                    MatMut::new(&mut c, m, n, (rsc, 1)),
                    init,
                );
                for i in 0..m {
                    for j in 0..n {
                        let start = match init {
                            PairInit::Zero => 0.0,
                            PairInit::Accumulate => c0[i * n + j] as f64,
                            PairInit::ColBias(v) => v[j] as f64,
                            PairInit::RowBias(v) => v[i] as f64,
                        };
                        let (mut want, mut size) = (start, start.abs());
                        for q in 0..kq {
                            let ((a0, a1), (b0, b1)) = (unpair(ap[i * kq + q]), unpair(bp[q * n + j]));
                            let (p0, p1) = (a0 as f64 * b0 as f64, a1 as f64 * b1 as f64);
                            want += p0 + p1;
                            size += p0.abs() + p1.abs();
                        }
                        let bound = (kq as f64 + 2.0) * size * f64::powi(2.0, -23) + f64::MIN_POSITIVE;
                        worst = worst.max((c[i * rsc + j] as f64 - want).abs() / bound);
                    }
                    if c[i * rsc + n..(i + 1) * rsc].iter().any(|&v| v != 9.0) {
                        worst = f64::INFINITY;
                    }
                }
            }
        }
        out.push(Report {
            name: format!("bf16 pair product {m}×{k}×{n} (error / bound)"),
            err: worst,
            bound: 1.0,
        });
    }
    out
}

/// The mixed-precision MLP's bound, relative to each tensor's scale: bf16 keeps 8 significant
/// bits, so every rounded operand is within 2⁻⁹ of its value, and a product over k terms of
/// random sign errs by about 2⁻⁸·√k times a typical term: under 0.03 of the scale for these
/// cases (k ≤ 520, terms about 0.5), and 0.041 measured for the gate's gradient, one sum over
/// the whole tensor. A wrong pair (a lost or swapped half) errs by about the value itself.
pub const MLP_BF16_TOL: f64 = 0.06;

/// [`fused_into`] in mixed precision ([`crate::mlp_bf16`]) on the same inputs, with the
/// gradient buffers starting at 1 and added to; z (as gelu′) and a widened from their stored
/// bf16. `None` where the CPU lacks AVX512_BF16.
pub fn fused_bf16(c: &Case, seed: u64) -> Option<Run<f32>> {
    use crate::mlp_bf16::*;
    let s = crate::isa::Avx512Bf16::detect()?;
    let (ni, n) = (n_in(c), c.n_out);
    let Inputs { w, x, dy, h } = inputs::<f32>(c, seed);
    let out = dy.len();
    let wts = MlpWeights { k1: &w[0], c1: &w[1], k2: &w[2], c2: &w[3] };
    let hid = hidden_len(c.axis, c.s, n);
    let (mut gz, mut a, mut y) = (vec![0u16; hid], vec![0u16; hid], vec![0f32; out]);
    // Workspaces full of garbage: the kernels must not depend on their contents.
    let mut work = vec![7.0f32; forward_workspace_bf16(c.axis, c.s, n)];
    let skip = c.gate.map(|g| Skip { h: &h, g: g as f32 });
    let io = ForwardIoBf16 { cpu: s, x: &x, gz: &mut gz, a: &mut a, y: &mut y, work: &mut work };
    mlp_forward_bf16(c.axis, c.s, wts, io, true, skip);
    let mut dx = vec![1f32; x.len()];
    let mut g = [vec![1f32; ni * n], vec![1f32; n], vec![1f32; n * n], vec![1f32; n]];
    let [g0, g1, g2, g3] = &mut g;
    let grads = MlpGrads { k1: g0, c1: g1, k2: g2, c2: g3, write: Write::Add };
    let mut work = vec![7.0f32; backward_workspace_bf16(c.axis, c.s, n)];
    let mut dg = if c.gate.is_some() { 1f32 } else { 0.0 };
    let gate = c.gate.map(|g| GateGrad { g: g as f32, dg: &mut dg });
    let saved = SavedBf16 { x: &x, dgelu: &gz, a: &a };
    let io = BackwardIoBf16 { cpu: s, dy: &dy, dx: &mut dx, dx_write: Write::Add, work: &mut work };
    mlp_backward_bf16(c.axis, c.s, wts, saved, io, grads, gate);
    let widen = |v: &[u16]| v.iter().map(|&b| crate::bf16::widen(b)).collect::<Vec<f32>>();
    let (z, a) = (unpad(c, &widen(&gz)), unpad(c, &widen(&a)));
    Some(Run { z, a, y, dx, grads: g, dg })
}

/// The mixed-precision MLP against the f64 reference on the f32 inputs (as [`mlp`]), each
/// tensor within `tol` relative to its scale. Empty where the CPU lacks AVX512_BF16.
pub fn mlp_bf16(c: &Case, seed: u64, tol: f64) -> Vec<Report> {
    let Some(f) = fused_bf16(c, seed) else { return Vec::new() };
    let r = naive::<f32>(c, seed);
    let gate = c.gate.map_or(String::new(), |g| format!(", gate {g}"));
    let label = format!("bf16 mlp {:?} {}×{}×{} → {}{gate}", c.axis, c.s.h, c.s.b, c.s.w, c.n_out);
    let mut errs =
        vec![("gelu'", rel_err(&f.z, &r.z)), ("a", rel_err(&f.a, &r.a)), ("y", rel_err(&f.y, &r.y))];
    errs.push(("dx", rel_err(&f.dx, &r.dx)));
    errs.push(("dg", rel_err(&[f.dg], &[r.dg])));
    for (name, (gf, gr)) in ["dK1", "dc1", "dK2", "dc2"].iter().zip(f.grads.iter().zip(&r.grads)) {
        errs.push((name, rel_err(gf, gr)));
    }
    errs.into_iter().map(|(name, err)| Report { name: format!("{label}: {name}"), err, bound: tol }).collect()
}
