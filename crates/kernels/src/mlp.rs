//! The fused axis-MLP: `Dense(n) → GELU → Dense(n)` applied along the rows or the columns of every
//! image in a batch, forward and backward, with no transpose ever materialised.
//!
//! # Layout: (H, B, W)
//! Activations are stored **H-major**: element (b, h, w) of a batch lives at `(h·B + b)·W + w`.
//! In this layout both mixing directions are one matrix product each:
//!
//! * **Rows** (mix along W, `y[b,h,:] = MLP(x[b,h,:])`): the H·B rows are the *items*, each a
//!   contiguous vector of W *features*: X is an (H·B)×W matrix with strides (W, 1).
//! * **Columns** (mix along H, `y[b,:,w] = MLP(x[b,:,w])`): the B·W columns (b, w) are the items,
//!   each a vector of H features spaced B·W apart: X, read as an *items × features* matrix, is
//!   the (B·W)×H matrix with strides (1, B·W). That swap of strides is the permute
//!   `(B,H,W) → (B,W,H)` of the original model, done by addressing instead of copying; the
//!   result is written back through the same swapped strides, which is the inverse permute.
//!
//! In the (B, H, W) layout the column dense would be B separate H×H×W products; here it is one
//! (B·W)×H×H product, and the permute costs nothing. The layout is chosen once, when a batch is
//! converted from `u8` to `f32`, and undone once, in the classifier head.
//!
//! One product instead of B is at least as fast at both image sizes, twice as fast at 28×28
//! (measurements in `docs/performance.md`). CIFAR's column stride (B·W floats, a multiple of
//! 1 KB) is the layout's cost: [`crate::gemm`] works around it by copying each panel of B, and the
//! MLP's own hidden tensors avoid it by a padded layout ([`hidden_len`]).
//!
//! # Math, per item x ∈ ℝ^{n_in} (row vectors; K kept Keras-style as (in, out))
//! ```text
//! forward                                 backward (given dy, accumulating into d…)
//! z  = x·K1 + c1        (n_out)           dc2 += Σ_items dy
//! a  = gelu(z)                            dK2 += aᵀ·dy          (n_out × n_out, summed over items)
//! y  = a·K2 + c2        (n_out)           dz   = (dy·K2ᵀ) ⊙ gelu'(z)
//!                                         dc1 += Σ_items dz
//!                                         dK1 += xᵀ·dz          (n_in × n_out)
//!                                         dx  += dz·K1ᵀ
//! ```
//! Stacked over items these are GEMMs whose transposed operands (`aᵀ`, `xᵀ`, `K2ᵀ`, `K1ᵀ`) are the
//! stored matrices with their two strides swapped. (`+=` as written; with [`Write::Set`] the
//! input or weight gradients are stored instead, into buffers nothing has been added to yet.)
//!
//! # Parallelism and determinism
//! Items are split into a fixed number of contiguous chunks that depends only on the item count
//! ([`forward_chunks`], [`backward_chunks`]), never on the thread count. rayon runs the chunks on
//! whatever threads it has; each chunk writes only its own items of `z`, `a`, `y`, `dx` and its
//! own slot of the weight-gradient partials, and the partials are added to the gradients in chunk
//! order. So one thread and two give bitwise the same results. (Per item, outputs do not depend on
//! the chunking at all: every element is one sum over the features in a fixed order. Only the
//! weight gradients, sums over items, are grouped by chunk.)

use crate::gemm::{gemm, gemm_colsum, gemm_dgelu, Init};
use crate::mat::{MatMut, MatRef};
use crate::real::Real;
use crate::{par, simd};
use rayon::prelude::*;

/// Which axis of each H×W image an MLP mixes along.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Axis {
    /// Mix along W: every row (b, h, ·) goes through the MLP. Input features = W.
    Rows,
    /// Mix along H: every column (b, ·, w) goes through the MLP. Input features = H.
    Cols,
}

/// The shape of an (H, B, W)-layout activation tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hbw {
    pub h: usize,
    pub b: usize,
    pub w: usize,
}

impl Hbw {
    pub fn len(&self) -> usize {
        self.h * self.b * self.w
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The weights of one `MLP(n_out)` with `n_in` input features: K1 (n_in×n_out), c1 (n_out),
/// K2 (n_out×n_out), c2 (n_out), all row-major.
#[derive(Clone, Copy)]
pub struct MlpWeights<'a, T> {
    pub k1: &'a [T],
    pub c1: &'a [T],
    pub k2: &'a [T],
    pub c2: &'a [T],
}

/// How a backward pass puts a gradient into its buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// `buf ← buf + grad`: the buffer already holds other ops' contributions.
    Add,
    /// `buf ← grad`: the buffer is fresh (its contents are unspecified) and is overwritten in
    /// full, which spares zero-filling it first. The same values as `Add` into zeros, since
    /// 0 + x = x (up to the sign of a zero).
    Set,
}

/// Gradient buffers matching [`MlpWeights`]; the backward pass adds into them or sets them, as
/// `write` says (all four the same way).
pub struct MlpGrads<'a, T> {
    pub k1: &'a mut [T],
    pub c1: &'a mut [T],
    pub k2: &'a mut [T],
    pub c2: &'a mut [T],
    pub write: Write,
}

/// The tensors of one [`mlp_forward`] call.
pub struct ForwardIo<'a, T> {
    /// The input, (H, B, W).
    pub x: &'a [T],
    /// z = x·K1 + c1, left as gelu'(z) by a training forward; of [`hidden_len`].
    pub gz: &'a mut [T],
    /// a = gelu(z); of [`hidden_len`].
    pub a: &'a mut [T],
    /// y = a·K2 + c2 (plus the [`Skip`]); of [`output_shape`].
    pub y: &'a mut [T],
}

/// What the backward pass reads of a training forward: its input and hidden tensors.
#[derive(Clone, Copy)]
pub struct Saved<'a, T> {
    pub x: &'a [T],
    /// gelu'(z), as a training forward leaves `gz`.
    pub dgelu: &'a [T],
    /// a = gelu(z).
    pub a: &'a [T],
}

/// The gradients one [`mlp_backward`] call takes and gives, and its scratch.
pub struct BackwardIo<'a, T> {
    /// The output's gradient.
    pub dy: &'a [T],
    /// The input's gradient, set or added to as `dx_write` says.
    pub dx: &'a mut [T],
    pub dx_write: Write,
    /// Scratch for dz, of [`hidden_len`].
    pub dz: &'a mut [T],
    /// Scratch of [`backward_workspace`]: K1ᵀ, K2ᵀ, the chunks' weight-gradient partials and
    /// their dc1 partial sums.
    pub work: &'a mut [T],
}

/// The classifier's gated residual around an MLP: the forward's output is `h + g·MLP(x)`
/// instead of `MLP(x)`, for an `h` of the output's shape and a scalar gate `g`. Added to each
/// output tile right after its product, while the tile is in cache: the mixer output MLP(x)
/// itself is never stored, and no separate pass over the batch adds the residual.
#[derive(Clone, Copy)]
pub struct Skip<'a, T> {
    pub h: &'a [T],
    pub g: T,
}

/// The backward of a [`Skip`] forward: `dy` is then the gradient of `h + g·MLP(x)`.
///
/// The gradient reaching the MLP is g·dy, but rather than scaling dy (a pass over the batch) the
/// backward runs on dy itself with g folded into the weights it multiplies by, and the gate's
/// gradient comes from the weight gradients instead of from the MLP's output, which a gated
/// forward never stored. With P = Aᵀ·dY and q = Σ_items dy (what the ungated backward computes
/// as dK2 and dc2):
/// ```text
/// dK2 = Aᵀ·(g·dY) = g·P            dc2 = g·q
/// dA  = (g·dY)·K2ᵀ = dY·(g·K2)ᵀ    (g·K2ᵀ packed once, in place of K2ᵀ)
/// dg  = Σ_items ⟨y_mlp, dy⟩ = Σ_items ⟨a·K2 + c2, dy⟩ = ⟨K2, P⟩ + ⟨c2, q⟩
/// ```
/// (⟨·,·⟩ the sum of elementwise products). h's gradient is dy unchanged, which is the caller's
/// to route (the tape hands dy's own buffer over).
pub struct GateGrad<'a, T> {
    pub g: T,
    /// `dg += ⟨K2, P⟩ + ⟨c2, q⟩`.
    pub dg: &'a mut T,
}

/// An items × features view of an (H, B, W) tensor, as [`Axis`] defines it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct View {
    pub(crate) items: usize,
    /// Stride between consecutive items.
    pub(crate) is: usize,
    /// Stride between consecutive features.
    pub(crate) fs: usize,
}

/// How one MLP call addresses its input, its output, and its hidden tensors (z or gelu'(z),
/// a, and the backward's dz: see [`hidden_len`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    pub(crate) n_in: usize,
    pub(crate) n_out: usize,
    pub(crate) x: View,
    pub(crate) y: View,
    pub(crate) t: View,
}

impl Geometry {
    pub(crate) fn new(axis: Axis, x: Hbw, n_out: usize) -> Self {
        match axis {
            Axis::Rows => {
                let items = x.h * x.b;
                let y = View { items, is: n_out, fs: 1 };
                Geometry { n_in: x.w, n_out, x: View { items, is: x.w, fs: 1 }, y, t: y }
            }
            Axis::Cols => {
                let items = x.b * x.w;
                Geometry {
                    n_in: x.h,
                    n_out,
                    x: View { items, is: 1, fs: items },
                    y: View { items, is: 1, fs: items },
                    t: View { items, is: 1, fs: items + hidden_pad(items) },
                }
            }
        }
    }

    pub(crate) fn params(&self) -> usize {
        self.n_in * self.n_out + self.n_out + self.n_out * self.n_out + self.n_out
    }
}

/// Floats of padding after each feature's run of `items` items in the column MLP's hidden
/// tensors: 16 when a run is a multiple of 1 KB (256 floats), else none.
pub fn hidden_pad(items: usize) -> usize {
    if items.is_multiple_of(256) {
        16
    } else {
        0
    }
}

/// The length of the buffers for an MLP's hidden tensors: z (or gelu'(z), which replaces it),
/// a = gelu(z), and the backward's dz. They never leave the MLP (only its own backward reads
/// them), so their layout is the MLP's choice. Rows: the output's (H, B, n_out). Columns:
/// feature-major like the output, n_out runs of B·W items, each followed by [`hidden_pad`]
/// floats: feature f's item i is at f·(B·W + pad) + i.
///
/// The pad is for runs whose length is a multiple of 1 KB, such as a CIFAR shard's (32·96
/// floats, 12 KB): unpadded, the same item of every feature falls in the same L1 set, and the
/// column products, which read or write 4–8 features at a time, evict their own lines. Only the
/// hidden tensors, whose layout is free, are padded; the output, which the next op reads, keeps
/// the plain layout. MNIST's runs (28·32 floats, 3.5 KB) stay unpadded: they do not alias, and
/// padded buffers would no longer have the output's length, which the tape's pool shares buffers
/// by. (The measurements behind each choice: `docs/performance.md`.)
pub fn hidden_len(axis: Axis, x: Hbw, n_out: usize) -> usize {
    let items = x.b * x.w;
    match axis {
        Axis::Rows => output_shape(axis, x, n_out).len(),
        Axis::Cols => n_out * (items + hidden_pad(items)),
    }
}

/// The shape of `MLP(n_out)` applied along `axis` of an input of shape `x`:
/// rows map (H, B, W) → (H, B, n_out), columns map (H, B, W) → (n_out, B, W).
pub fn output_shape(axis: Axis, x: Hbw, n_out: usize) -> Hbw {
    match axis {
        Axis::Rows => Hbw { w: n_out, ..x },
        Axis::Cols => Hbw { h: n_out, ..x },
    }
}

/// Number of chunks the forward pass splits the items into: about 128 items each (so that even
/// one image's rows keep two threads busy), at most 16.
pub fn forward_chunks(items: usize) -> usize {
    (items / 128).clamp(1, 16)
}

/// Number of chunks the backward pass splits the items into: about 512 items each, at most 16. A
/// function of the item count alone, which is what makes the weight gradients independent of the
/// thread count. Longer than the forward's because each chunk computes its own weight-gradient
/// partials, products over its items (k = items per chunk): fewer, longer ones cost less
/// (`docs/performance.md`).
pub fn backward_chunks(items: usize) -> usize {
    (items / 512).clamp(1, 16)
}

/// A chunk's weight-gradient partials (dK1, dc1, dK2, dc2 in a row, [`Geometry::params`] long)
/// as the four gradients.
pub(crate) fn split_partials<T>(part: &mut [T], n_in: usize, n: usize) -> [&mut [T]; 4] {
    let (pk1, rest) = part.split_at_mut(n_in * n);
    let (pc1, rest) = rest.split_at_mut(n);
    let (pk2, pc2) = rest.split_at_mut(n * n);
    [pk1, pc1, pk2, pc2]
}

pub(crate) fn chunk_range(items: usize, chunks: usize, c: usize) -> (usize, usize) {
    (c * items / chunks, (c + 1) * items / chunks)
}

/// A raw pointer that rayon tasks may share. Each task writes a disjoint set of elements through
/// it (its own chunk of items), which is what makes the sharing sound.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut<T>(pub(crate) *mut T);
// SAFETY: the pointer is only dereferenced through `at` and `mat`, whose callers promise that
// each task touches only its own elements; sending it to another thread sends no access to any
// element another task uses.
unsafe impl<T: Send> Send for SharedMut<T> {}
// SAFETY: as for Send: shared between tasks, it gives each one access to disjoint elements only.
unsafe impl<T: Send> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// The address `offset` elements past the start.
    ///
    /// # Safety
    /// `offset` must lie within the buffer the pointer came from (at most its length).
    pub(crate) unsafe fn at(self, offset: usize) -> *mut T {
        // SAFETY: the caller keeps offset inside the buffer.
        unsafe { self.0.add(offset) }
    }

    /// Items [i0, i0 + m) × `features` of the tensor addressed as `v`, as a writable matrix.
    ///
    /// # Safety
    /// Those elements must lie in the buffer and be touched by no other task meanwhile (each
    /// chunk owns its items).
    pub(crate) unsafe fn mat<'a>(self, v: View, i0: usize, m: usize, features: usize) -> MatMut<'a, T> {
        // SAFETY: the caller's promise.
        unsafe { MatMut::from_raw(self.at(i0 * v.is), m, features, (v.is, v.fs)) }
    }
}

impl View {
    /// Items [i0, i0 + m) × `features` of `data`, addressed as this view, as a matrix.
    pub(crate) fn of<T>(self, data: &[T], i0: usize, m: usize, features: usize) -> MatRef<'_, T> {
        MatRef::new(&data[i0 * self.is..], m, features, (self.is, self.fs))
    }
}

/// Calls `f(offset, len)` for every contiguous run of the tile of items [i0, i1) of a tensor
/// addressed as `v` with `features` features. Rows: the tile is contiguous, one run of
/// (i1−i0)·features values. Columns: one run of i1−i0 items per feature.
pub(crate) fn for_each_run_of(
    v: View,
    features: usize,
    i0: usize,
    i1: usize,
    mut f: impl FnMut(usize, usize),
) {
    if v.fs == 1 {
        f(i0 * v.is, (i1 - i0) * features);
    } else {
        for feat in 0..features {
            f(feat * v.fs + i0 * v.is, i1 - i0);
        }
    }
}

/// [`for_each_run_of`] the output tile.
pub(crate) fn for_each_run(g: &Geometry, i0: usize, i1: usize, f: impl FnMut(usize, usize)) {
    for_each_run_of(g.y, g.n_out, i0, i1, f)
}

/// [`for_each_run_of`] the hidden tile.
pub(crate) fn for_each_hidden_run(g: &Geometry, i0: usize, i1: usize, f: impl FnMut(usize, usize)) {
    for_each_run_of(g.t, g.n_out, i0, i1, f)
}

/// Adds a run of an output gradient `d` (at `offset` in the output) into the bias gradient
/// `db`: rows, a tile of whole items, summed item by item into all of `db`; columns, one
/// feature's items, summed into that feature's entry.
pub(crate) fn bias_grad<T: Real>(g: &Geometry, d: &[T], db: &mut [T], offset: usize) {
    if g.y.fs == 1 {
        simd::add_rows(d, db);
    } else {
        db[offset / g.y.fs] += simd::sum(d);
    }
}

/// Forward of `MLP(n_out)` along `axis` (n_out the length of c1): the tensors of [`ForwardIo`];
/// when `keep` (training) `gz` is left holding gelu'(z), which with `a` is what the backward pass
/// needs ([`Saved`]).
///
/// Per chunk of items: `Z = c1 + X·K1` (one GEMM, X read through the axis' strides, the bias
/// loaded into its accumulators), then in one pass over the tile `a = gelu(z)` (and
/// `gz = gelu'(z)`, sharing Φ); `Y = c2 + A·K2`; with a [`Skip`], `y ← h + g·y` over the tile
/// while it is in cache.
pub fn mlp_forward<T: Real>(
    axis: Axis,
    x_shape: Hbw,
    wts: MlpWeights<T>,
    io: ForwardIo<T>,
    keep: bool,
    skip: Option<Skip<T>>,
) {
    let (ForwardIo { x, gz, a, y }, n_out) = (io, wts.c1.len());
    let z = gz;
    let g = Geometry::new(axis, x_shape, n_out);
    let (out_len, hid_len) = (output_shape(axis, x_shape, n_out).len(), hidden_len(axis, x_shape, n_out));
    check_weights(&g, &wts);
    assert_eq!(x.len(), x_shape.len(), "mlp_forward: input length");
    assert!(z.len() == hid_len && a.len() == hid_len, "mlp_forward: hidden length");
    assert_eq!(y.len(), out_len, "mlp_forward: output length");
    if let Some(sk) = &skip {
        assert_eq!(sk.h.len(), out_len, "mlp_forward: the residual's length");
    }
    let (zp, ap, yp) = (SharedMut(z.as_mut_ptr()), SharedMut(a.as_mut_ptr()), SharedMut(y.as_mut_ptr()));
    let items = g.x.items;
    let chunks = forward_chunks(items);
    par::region(|reg| {
        (0..chunks).into_par_iter().for_each(|c| {
            let _task = reg.task();
            let (i0, i1) = chunk_range(items, chunks, c);
            let m = i1 - i0;
            if m == 0 {
                return;
            }
            // In training, z, a and y are stored for the backward pass: memory the rest of the
            // step's activations have pushed out of every cache. Then Z's GEMM prefetches each block
            // of z for writing just before it, and a's and y's tiles are requested now, to arrive
            // while Z is computed. (Inference reuses a few small buffers, already in cache, where the
            // same prefetches slowed evaluation down: `docs/performance.md`.)
            // SAFETY: (the whole block) chunk c reads and writes only items [i0, i1) of z, a and y, which
            // no other chunk touches; every offset below is inside its tensor, as the geometry's
            // strides guarantee.
            unsafe {
                if keep {
                    for_each_hidden_run(&g, i0, i1, |off, len| simd::prefetch_l2(ap.at(off), len));
                    for_each_run(&g, i0, i1, |off, len| {
                        simd::prefetch_l2(yp.at(off), len);
                        if let Some(sk) = &skip {
                            simd::prefetch_l2(sk.h[off..].as_ptr(), len);
                        }
                    });
                }
                let (k1, k2) = (
                    MatRef::new(wts.k1, g.n_in, g.n_out, (g.n_out, 1)),
                    MatRef::new(wts.k2, g.n_out, g.n_out, (g.n_out, 1)),
                );
                gemm(
                    g.x.of(x, i0, m, g.n_in),
                    k1,
                    zp.mat(g.t, i0, m, g.n_out).cold(keep),
                    Init::Bias(wts.c1),
                );
                // GELU over the tile, one contiguous run at a time (rows: the whole tile, so rows
                // of 28 leave no scalar tail each; columns: one run of items per feature).
                for_each_hidden_run(&g, i0, i1, |off, len| {
                    let zr = std::slice::from_raw_parts_mut(zp.at(off), len);
                    let ar = std::slice::from_raw_parts_mut(ap.at(off), len);
                    if keep {
                        simd::gelu_keep_tile(zr, ar);
                    } else {
                        simd::gelu_tile(zr, ar);
                    }
                });
                let a_tile = MatRef::from_raw(ap.at(i0 * g.t.is), m, g.n_out, (g.t.is, g.t.fs));
                gemm(a_tile, k2, yp.mat(g.y, i0, m, g.n_out).cold(keep), Init::Bias(wts.c2));
                if let Some(sk) = &skip {
                    for_each_run(&g, i0, i1, |off, len| {
                        simd::skip_add(
                            std::slice::from_raw_parts_mut(yp.at(off), len),
                            &sk.h[off..off + len],
                            sk.g,
                        );
                    });
                }
            }
        })
    });
}

/// Length of the `work` buffer [`mlp_backward`] needs: K1ᵀ and K2ᵀ, then one set of weight
/// gradients per chunk, then per chunk the eight partial sums of each dc1 entry that a column
/// MLP's dz product keeps ([`gemm_dgelu`]).
pub fn backward_workspace(axis: Axis, x_shape: Hbw, n_out: usize) -> usize {
    let g = Geometry::new(axis, x_shape, n_out);
    g.n_in * g.n_out + g.n_out * g.n_out + backward_chunks(g.x.items) * (g.params() + 8 * g.n_out)
}

/// Backward of [`mlp_forward`]: given `io.dy`, puts the input gradient into `io.dx` and the
/// weight gradients into `grads`, adding or setting as `io.dx_write` and `grads.write` say, from
/// what the forward [`Saved`].
///
/// Per chunk: `dc2 = Σ dy` and `dK2 = Aᵀ·dY` (A read with swapped strides; a row MLP's dc2 taken
/// by that product as it reads dy, [`gemm_colsum`]), `dZ = dY·K2ᵀ` (K2 read with
/// swapped strides) with `dz *= gelu'(z)` and `dc1 = Σ dz` in its stores ([`gemm_dgelu`]),
/// `dK1 = Xᵀ·dZ`, `dX += dZ·K1ᵀ`.
/// The per-chunk weight gradients go to a partials buffer, summed in chunk order and then
/// added into `grads`. With a [`GateGrad`] (the backward of a [`Skip`] forward), g is folded into
/// K2ᵀ and into the sums of dK2 and dc2, and dg comes from those sums, as [`GateGrad`] derives.
pub fn mlp_backward<T: Real>(
    axis: Axis,
    x_shape: Hbw,
    wts: MlpWeights<T>,
    saved: Saved<T>,
    io: BackwardIo<T>,
    grads: MlpGrads<T>,
    gate: Option<GateGrad<T>>,
) {
    let (Saved { x, dgelu, a }, n_out) = (saved, wts.c1.len());
    let BackwardIo { dy, dx, dx_write, dz, work } = io;
    let g = Geometry::new(axis, x_shape, n_out);
    let (out_len, hid_len) = (output_shape(axis, x_shape, n_out).len(), hidden_len(axis, x_shape, n_out));
    check_weights(&g, &wts);
    assert!(x.len() == x_shape.len() && dx.len() == x_shape.len(), "mlp_backward: input length");
    assert!(
        dgelu.len() == hid_len && a.len() == hid_len && dz.len() == hid_len,
        "mlp_backward: hidden length"
    );
    assert_eq!(dy.len(), out_len, "mlp_backward: output length");
    let (n_in, n) = (g.n_in, g.n_out);
    let (dzp, dxp) = (SharedMut(dz.as_mut_ptr()), SharedMut(dx.as_mut_ptr()));
    let items = g.x.items;
    let chunks = backward_chunks(items);
    assert_eq!(work.len(), backward_workspace(axis, x_shape, n_out), "mlp_backward: workspace length");
    let (k1t, rest) = work.split_at_mut(n_in * n);
    let (k2t, rest) = rest.split_at_mut(n * n);
    let (partials, lanes) = rest.split_at_mut(chunks * g.params());
    pack_transposed(&wts, gate.as_ref().map_or(T::ONE, |gg| gg.g), k1t, k2t);
    let (k1t, k2t) = (&*k1t, &*k2t);
    let per_chunk = partials.par_chunks_mut(g.params()).zip(lanes.par_chunks_mut(8 * n));
    par::region(|reg| {
        per_chunk.enumerate().for_each(|(c, (part, lanes))| {
            let _task = reg.task();
            part.fill(T::ZERO);
            let (i0, i1) = chunk_range(items, chunks, c);
            let m = i1 - i0;
            if m == 0 {
                return;
            }
            let [pk1, pc1, pk2, pc2] = split_partials(part, n_in, n);
            // a, gelu'(z) and x were stored by the forward pass, long out of cache: a's tile is
            // requested now, for dK2; the others while dK2 is computed, for the products after it.
            for_each_hidden_run(&g, i0, i1, |off, len| simd::prefetch_l2(a[off..].as_ptr(), len));
            let (dy_tile, k2t, k1t) =
                (g.y.of(dy, i0, m, n), MatRef::new(k2t, n, n, (n, 1)), MatRef::new(k1t, n, n_in, (n_in, 1)));
            let (at, pk2) = (g.t.of(a, i0, m, n).t(), MatMut::new(pk2, n, n, (n, 1)));
            if g.y.fs == 1 {
                // A row MLP's dc2 = Σ dy in the product that reads dy's rows anyway.
                gemm_colsum(at, dy_tile, pk2, Init::Zero, pc2);
            } else {
                for_each_run(&g, i0, i1, |off, len| bias_grad(&g, &dy[off..off + len], pc2, off));
                gemm(at, dy_tile, pk2, Init::Zero);
            }
            for_each_hidden_run(&g, i0, i1, |off, len| simd::prefetch_l2(dgelu[off..].as_ptr(), len));
            for_each_run_of(g.x, n_in, i0, i1, |off, len| simd::prefetch_l2(x[off..].as_ptr(), len));
            // SAFETY: (the whole block) as in the forward, chunk c touches only items [i0, i1) of dz and
            // dx, which no other chunk does, at offsets inside them.
            unsafe {
                gemm_dgelu(dy_tile, k2t, dzp.mat(g.t, i0, m, n), g.t.of(dgelu, i0, m, n), pc1, lanes);
                let dz_tile = MatRef::from_raw(dzp.at(i0 * g.t.is), m, n, (g.t.is, g.t.fs));
                gemm(g.x.of(x, i0, m, n_in).t(), dz_tile, MatMut::new(pk1, n_in, n, (n, 1)), Init::Zero);
                let dx_init = match dx_write {
                    Write::Add => Init::Accumulate,
                    Write::Set => Init::Zero,
                };
                gemm(dz_tile, k1t, dxp.mat(g.x, i0, m, n_in), dx_init);
            }
        })
    });
    reduce_partials(partials, &wts, grads, gate);
}

/// K1ᵀ and g·K2ᵀ for [`mlp_backward`], packed once per call (n_in·n + n² values, never an
/// activation), so that every product reads its B operand row by row. Gated, g·K2ᵀ makes
/// dz = dy·(g·K2)ᵀ = (g·dy)·K2ᵀ; ungated, g = 1 and 1·K2ᵀ is exactly K2ᵀ.
pub(crate) fn pack_transposed<T: Real>(wts: &MlpWeights<T>, g: T, k1t: &mut [T], k2t: &mut [T]) {
    let (n_in, n) = (wts.k1.len() / wts.c1.len(), wts.c1.len());
    for f in 0..n_in {
        for j in 0..n {
            k1t[j * n_in + f] = wts.k1[f * n + j];
        }
    }
    for j in 0..n {
        for o in 0..n {
            k2t[o * n + j] = g * wts.k2[j * n + o];
        }
    }
}

/// The end of [`mlp_backward`]: the chunks' weight-gradient partials summed into the first, in
/// chunk order; with a gate, dg taken from the sums and g folded in ([`GateGrad`]); the result
/// set into or added to `grads`.
pub(crate) fn reduce_partials<T: Real>(
    partials: &mut [T],
    wts: &MlpWeights<T>,
    grads: MlpGrads<T>,
    gate: Option<GateGrad<T>>,
) {
    let (n, n_in) = (wts.c1.len(), wts.k1.len() / wts.c1.len());
    let params = n_in * n + n + n * n + n;
    let MlpGrads { k1, c1, k2, c2, write: grads_write } = grads;
    assert!(
        k1.len() == n_in * n && c1.len() == n && k2.len() == n * n && c2.len() == n,
        "mlp_backward: gradient buffer shapes"
    );
    let (total, rest) = partials.split_at_mut(params);
    for part in rest.chunks_exact(params) {
        simd::add_assign(total, part);
    }
    let (pk1, rest) = total.split_at_mut(n_in * n);
    let (pc1, rest) = rest.split_at_mut(n);
    let (pk2, pc2) = rest.split_at_mut(n * n);
    if let Some(GateGrad { g, dg }) = gate {
        // dg = ⟨K2, P⟩ + ⟨c2, q⟩, then P and q scaled into dK2 = g·P and dc2 = g·q.
        *dg += simd::dot(wts.k2, pk2) + simd::dot(wts.c2, pc2);
        simd::scale(pk2, g);
        simd::scale(pc2, g);
    }
    for (dst, src) in [(k1, &*pk1), (c1, &*pc1), (k2, &*pk2), (c2, &*pc2)] {
        match grads_write {
            Write::Set => dst.copy_from_slice(src),
            Write::Add => simd::add_assign(dst, src),
        }
    }
}

pub(crate) fn check_weights<T>(g: &Geometry, w: &MlpWeights<T>) {
    assert!(
        w.k1.len() == g.n_in * g.n_out
            && w.c1.len() == g.n_out
            && w.k2.len() == g.n_out * g.n_out
            && w.c2.len() == g.n_out,
        "MLP weight shapes do not match {} → {}",
        g.n_in,
        g.n_out
    );
}
