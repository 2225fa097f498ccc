//! The axis-MLP in mixed precision: [`crate::mlp`]'s forward and backward (the same math, the
//! same layouts, the same chunks), with every product on bf16 operands accumulated in `f32`
//! ([`crate::bf16::gemm_pairs`], `VDPBF16PS`) and the two hidden tensors the backward reads,
//! a = gelu(z) and gelu'(z), stored as bf16: half their bytes. The biases, the GELU's arithmetic,
//! the bias gradients, the chunks' weight-gradient partials and their sum stay `f32`, and so do
//! the input x, the output y and the gradients the caller passes in and gets back.
//!
//! Where values are rounded to bf16 (to nearest, ties to even: [`crate::bf16::round`]), each
//! once, in a pass that reads the value anyway where there is one:
//! * a and gelu'(z), by the forward's GELU epilogue ([`crate::bf16::gelu_keep_round`]) as it
//!   stores them; y = a·K2 reads a as stored, so dK2 = aᵀ·dy sees the same a as y = a·K2 did;
//! * dy, in the pass that sums dc2 ([`crate::bf16::round_add_rows`], [`crate::bf16::round_sum`]),
//!   and dz, in the pass that multiplies it by gelu'(z) and sums dc1
//!   ([`crate::bf16::mul_round_add_rows`], [`crate::bf16::mul_round_sum`]): a bf16 tile each,
//!   read by both of their products;
//! * x and the weights (K1, K2, K1ᵀ, g·K2ᵀ; once per call), as they are packed into pairs along k
//!   for their products (inference's a too).
//!
//! A product's operands are then put into pairs along k: read in place where the pairs are
//! already 32-bit words (bf16 with k contiguous), otherwise packed by a vector pass (two rows
//! interleaved, or 16 × 16 transposes where k is contiguous but the kernel wants the other axis).
//!
//! The math is [`crate::mlp`]'s; per chunk of items:
//! ```text
//! forward                                   backward
//! z  = bf(x)·bf(K1) + c1                    dc2 += Σ dy
//! a  = gelu(z), g' = gelu'(z)   (f32)       dK2 += bf(a)ᵀ·bf(dy)
//! store bf(a), bf(g')                       dz   = bf(dy)·bf(K2ᵀ) ⊙ bf(g')   (f32 product)
//! y  = bf(a)·bf(K2) + c2                    dc1 += Σ dz
//!                                           dK1 += bf(x)ᵀ·bf(dz)
//!                                           dx  += bf(dz)·bf(K1ᵀ)
//! ```
//! with bf(·) the rounding, each product a chain of `f32` accumulations over pairs in a fixed
//! order. The chunks and the order of every sum depend on the item count alone, so any number of
//! threads gives bitwise the same results, as in `f32`.

use crate::bf16::{
    gelu_keep_round, gemm_pairs, in_f32s_mut, mul_round_add_rows, mul_round_sum, pack_pairs, pack_pairs_bf16,
    round_add_rows, round_sum, PairInit,
};
use crate::isa::Avx512Bf16;
use crate::mat::{MatMut, MatRef};
use crate::mlp::{
    backward_chunks, check_weights, chunk_range, for_each_hidden_run, for_each_run, for_each_run_of,
    forward_chunks, hidden_len, output_shape, pack_transposed, reduce_partials, split_partials, Geometry,
    SharedMut,
};
use crate::{par, simd, Axis, GateGrad, Hbw, MlpGrads, MlpWeights, Skip, Write};
use rayon::prelude::*;

/// The tensors of one [`mlp_forward_bf16`] call.
pub struct ForwardIoBf16<'a> {
    /// The proof that this CPU runs the bf16 products ([`Avx512Bf16::detect`]).
    pub cpu: Avx512Bf16,
    /// The input, (H, B, W).
    pub x: &'a [f32],
    /// gelu'(z) in bf16, of [`hidden_len`] (written in training only).
    pub gz: &'a mut [u16],
    /// a = gelu(z) in bf16, of [`hidden_len`] (written in training only).
    pub a: &'a mut [u16],
    /// y = a·K2 + c2 (plus the [`Skip`]), of [`output_shape`].
    pub y: &'a mut [f32],
    /// Scratch of [`forward_workspace_bf16`] floats.
    pub work: &'a mut [f32],
}

/// What [`mlp_backward_bf16`] reads of a training forward.
#[derive(Clone, Copy)]
pub struct SavedBf16<'a> {
    pub x: &'a [f32],
    /// gelu'(z), bf16.
    pub dgelu: &'a [u16],
    /// a = gelu(z), bf16.
    pub a: &'a [u16],
}

/// The gradients one [`mlp_backward_bf16`] call takes and gives, and its scratch.
pub struct BackwardIoBf16<'a> {
    /// The proof that this CPU runs the bf16 products ([`Avx512Bf16::detect`]).
    pub cpu: Avx512Bf16,
    pub dy: &'a [f32],
    /// The input's gradient, set or added to as `dx_write` says.
    pub dx: &'a mut [f32],
    pub dx_write: Write,
    /// Scratch of [`backward_workspace_bf16`] floats.
    pub work: &'a mut [f32],
}

/// A product's operand: `f32` values, rounded as they are packed, or bf16 ones; or one packed
/// already (a weight matrix, packed once per call): `Paired(p, k)` is the k × n matrix whose
/// pairs along its rows are p (⌈k/2⌉ × n), `PairedT(p, k)` its transpose (n × k).
#[derive(Clone, Copy)]
enum Operand<'a> {
    F32(MatRef<'a, f32>),
    Bf16(MatRef<'a, u16>),
    Paired(MatRef<'a, u32>, usize),
    PairedT(MatRef<'a, u32>, usize),
}

impl<'a> Operand<'a> {
    fn shape(&self) -> (usize, usize) {
        match self {
            Operand::F32(v) => (v.rows(), v.cols()),
            Operand::Bf16(v) => (v.rows(), v.cols()),
            Operand::Paired(p, k) => (*k, p.cols()),
            Operand::PairedT(p, k) => (p.cols(), *k),
        }
    }

    /// Its pairs along its rows as the 32-bit words they already are, with no copy: a bf16
    /// matrix whose rows (k) are contiguous, k even, column stride even and start 4-byte aligned
    /// (pair (q, j) is then the word of values 2q and 2q + 1 of column j). `None` otherwise.
    fn words(self) -> Option<MatRef<'a, u32>> {
        let Operand::Bf16(v) = self else { return None };
        let ((rs, cs), k) = (v.strides(), v.rows());
        let fits = rs == 1 && k > 0 && k % 2 == 0 && (cs % 2 == 0 || v.cols() == 1);
        if !fits || !(v.as_ptr() as usize).is_multiple_of(4) {
            return None;
        }
        // SAFETY: word (q, j) at `ptr + q + j·cs/2` covers values (2q, j) and (2q + 1, j) of the
        // view, which lie in its buffer, borrowed for as long as the result; the start is
        // 4-byte aligned and every offset is a whole number of words from it.
        Some(unsafe { MatRef::from_raw(v.as_ptr() as *const u32, k / 2, v.cols(), (1, cs / 2)) })
    }

    fn t(self) -> Self {
        match self {
            Operand::F32(v) => Operand::F32(v.t()),
            Operand::Bf16(v) => Operand::Bf16(v.t()),
            Operand::Paired(p, k) => Operand::PairedT(p, k),
            Operand::PairedT(p, k) => Operand::Paired(p, k),
        }
    }

    /// Its pairs along its rows (the product's k), ⌈rows/2⌉ × cols: a weight matrix's as they
    /// were packed (row-major), anything else packed into `dst`, laid out by `layout`, which is
    /// given the operand's own column stride (1 when its columns are contiguous).
    fn pairs<'d>(self, dst: &'d mut [u32], layout: impl Fn(usize) -> (usize, usize)) -> MatRef<'d, u32>
    where
        Self: 'd,
    {
        let (k, n) = self.shape();
        let pack = |dst: &'d mut [u32], cs: usize| MatMut::new(dst, k.div_ceil(2), n, layout(cs));
        match self {
            Operand::Paired(p, _) => p,
            Operand::PairedT(..) => unreachable!("a weight matrix's pairs are along its rows"),
            Operand::F32(v) => {
                let mut out = pack(dst, v.strides().1);
                pack_pairs(v, out.reborrow());
                out.into_ref()
            }
            Operand::Bf16(v) => {
                let mut out = pack(dst, v.strides().1);
                pack_pairs_bf16(v, out.reborrow());
                out.into_ref()
            }
        }
    }
}

/// Pair slots the packed operands of an (m × k)·(k × n) product take.
fn pairs_len(m: usize, k: usize, n: usize) -> usize {
    k.div_ceil(2) * (m + n)
}

/// `C ← A·B` (plus what `init` says) on bf16 operands: A's and B's pairs along k (packed into
/// `scratch`, at least [`pairs_len`], unless they are already), then [`gemm_pairs`]. C needs
/// contiguous columns or contiguous rows; for the latter the transposed problem Cᵀ = Bᵀ·Aᵀ is
/// computed (a row bias becoming a column bias), the same sums.
fn product(s: Avx512Bf16, a: Operand, b: Operand, c: MatMut<f32>, init: PairInit, scratch: &mut [u32]) {
    let ((m, k), n) = (a.shape(), b.shape().1);
    if c.strides().1 != 1 {
        assert_eq!(c.strides().0, 1, "product: C needs contiguous rows or columns");
        let init = match init {
            PairInit::ColBias(v) => PairInit::RowBias(v),
            PairInit::RowBias(v) => PairInit::ColBias(v),
            other => other,
        };
        return product(s, b.t(), a.t(), c.t(), init, scratch);
    }
    let kq = k.div_ceil(2);
    let (ap, bp) = scratch.split_at_mut(m * kq);
    // A's pairs (Aᵀ's along its rows), laid out along whichever of A's axes is contiguous, so
    // that packing is a vector pass: the rows (kq rows of m) or k (row-major, m × kq); a weight
    // matrix's as they were packed.
    let at = match a.t().words() {
        Some(w) => w.t(),
        None => a.t().pairs(ap, |cs| if cs == 1 { (m, 1) } else { (1, kq) }).t(),
    };
    // B's pairs with contiguous columns, as the kernel reads them (a weight matrix's are).
    let bq = b.pairs(bp, |_| (n, 1));
    gemm_pairs(s, at, bq, c, init);
}

/// Pair slots as `f32`s, [`as_pairs`]'s inverse.
fn as_floats(v: &mut [u32]) -> &mut [f32] {
    // SAFETY: as in `as_pairs`.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut f32, v.len()) }
}

/// `v` as pair slots: `f32` and `u32` have the same size and alignment.
fn as_pairs(v: &mut [f32]) -> &mut [u32] {
    // SAFETY: u32 has f32's size and alignment, every bit pattern is a valid value of both, and
    // the borrow of `v` is handed over whole.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u32, v.len()) }
}

/// The strides of a chunk's m × n hidden tile in scratch, oriented as the hidden tensor is
/// (rows: items × features row-major; columns: one run of m items per feature), so that the
/// tile's runs are the hidden tensor's runs in order.
fn tile_strides(axis: Axis, m: usize, n: usize) -> (usize, usize) {
    match axis {
        Axis::Rows => (n, 1),
        Axis::Cols => (1, m),
    }
}

/// Items a chunk holds at most when `items` are split into `chunks`.
fn chunk_max(items: usize, chunks: usize) -> usize {
    items.div_ceil(chunks)
}

/// Scratch slots a call's workspace holds: one per thread that can run a chunk at once (no
/// more than the chunks). A chunk's scratch is written before it is read, so which slot a chunk
/// uses changes no result; a few slots reused stay in cache, where a slot per chunk would
/// spread the tiles over about as many bytes as the f32 hidden tensors.
fn scratch_slots(chunks: usize) -> usize {
    chunks.min(rayon::current_num_threads()).max(1)
}

/// Runs `body(c, scratch)` for the chunks `0..chunks` in parallel, sharing out the scratch
/// slots of `per_slot` floats in `work`: the chunks go in runs, one run per slot, each run's
/// chunks one after another on its slot. Each chunk is still its own measured task
/// ([`par::Region`]), so `pmixer bench --span` sees the decomposition a machine with a thread
/// per chunk runs.
fn for_each_chunk(chunks: usize, work: &mut [f32], per_slot: usize, body: impl Fn(usize, &mut [f32]) + Sync) {
    let slots = work.len() / per_slot;
    assert!(slots > 0, "mlp_bf16: a workspace without a scratch slot");
    let run = chunks.div_ceil(slots);
    par::region(|reg| {
        work.par_chunks_mut(per_slot).take(chunks.div_ceil(run)).enumerate().for_each(|(r, scratch)| {
            for c in r * run..((r + 1) * run).min(chunks) {
                let _task = reg.task();
                body(c, scratch);
            }
        })
    });
}

/// Scratch floats per forward chunk: z's and (for inference) a's f32 tiles, then the larger
/// product's pairs.
fn forward_per_chunk(g: &Geometry, m: usize) -> usize {
    2 * m * g.n_out + pairs_len(m, g.n_in, g.n_out).max(pairs_len(m, g.n_out, g.n_out))
}

/// Pair slots of K1's and K2's pairs, packed once per call.
fn weight_pairs_len(g: &Geometry) -> usize {
    (g.n_in.div_ceil(2) + g.n_out.div_ceil(2)) * g.n_out
}

/// Length of the `work` buffer [`mlp_forward_bf16`] needs: the weights' pairs, then the
/// scratch slots (one per thread of the current rayon pool, at most one per chunk).
pub fn forward_workspace_bf16(axis: Axis, x_shape: Hbw, n_out: usize) -> usize {
    let g = Geometry::new(axis, x_shape, n_out);
    let chunks = forward_chunks(g.x.items);
    weight_pairs_len(&g) + scratch_slots(chunks) * forward_per_chunk(&g, chunk_max(g.x.items, chunks))
}

/// K (k × n, row-major) packed into `dst` as its pairs along its rows (⌈k/2⌉ × n, row-major):
/// the operand [`Operand::Paired`] stands for, and the rest of `dst`.
fn pack_weights<'a>(k: MatRef<f32>, dst: &'a mut [u32]) -> (Operand<'a>, &'a mut [u32]) {
    let (rows, n) = (k.rows(), k.cols());
    let (p, rest) = dst.split_at_mut(rows.div_ceil(2) * n);
    pack_pairs(k, MatMut::new(p, rows.div_ceil(2), n, (n, 1)));
    (Operand::Paired(MatRef::new(p, rows.div_ceil(2), n, (n, 1)), rows), rest)
}

/// Forward of `MLP(n_out)` along `axis` in mixed precision (module docs); with `keep`
/// (training) a and gelu'(z) are stored, in bf16, for [`mlp_backward_bf16`].
pub fn mlp_forward_bf16(
    axis: Axis,
    x_shape: Hbw,
    wts: MlpWeights<f32>,
    io: ForwardIoBf16,
    keep: bool,
    skip: Option<Skip<f32>>,
) {
    let (ForwardIoBf16 { cpu: s, x, gz, a, y, work }, n) = (io, wts.c1.len());
    let g = Geometry::new(axis, x_shape, n);
    check_weights(&g, &wts);
    let hid = hidden_len(axis, x_shape, n);
    assert_eq!(x.len(), x_shape.len(), "mlp_forward_bf16: input length");
    assert!(!keep || (gz.len() == hid && a.len() == hid), "mlp_forward_bf16: hidden length");
    assert_eq!(y.len(), output_shape(axis, x_shape, n).len(), "mlp_forward_bf16: output length");
    let (items, n_in) = (g.x.items, g.n_in);
    let chunks = forward_chunks(items);
    let per_slot = forward_per_chunk(&g, chunk_max(items, chunks));
    let slots = work.len().checked_sub(weight_pairs_len(&g)).map_or(0, |w| w / per_slot);
    assert!(
        slots > 0 && work.len() == weight_pairs_len(&g) + slots * per_slot,
        "mlp_forward_bf16: workspace length (see forward_workspace_bf16)"
    );
    let (gzp, ap, yp) = (SharedMut(gz.as_mut_ptr()), SharedMut(a.as_mut_ptr()), SharedMut(y.as_mut_ptr()));
    let (weights, work) = as_pairs(work).split_at_mut(weight_pairs_len(&g));
    let (k1, rest) = pack_weights(MatRef::new(wts.k1, n_in, n, (n, 1)), weights);
    let (k2, _) = pack_weights(MatRef::new(wts.k2, n, n, (n, 1)), rest);
    for_each_chunk(chunks, as_floats(work), per_slot, |c, scratch| {
        let (i0, i1) = chunk_range(items, chunks, c);
        let m = i1 - i0;
        if m == 0 {
            return;
        }
        let (zs, rest) = scratch.split_at_mut(m * n);
        let (act, rest) = rest.split_at_mut(m * n);
        let pairs = as_pairs(rest);
        let ts = tile_strides(axis, m, n);
        let xt = g.x.of(x, i0, m, n_in);
        product(s, Operand::F32(xt), k1, MatMut::new(zs, m, n, ts), PairInit::ColBias(wts.c1), pairs);
        let at = if keep {
            // gelu'(z) and a computed in f32 and stored in bf16 in one pass, run by run of the
            // hidden tensor (the tile's order).
            let mut o = 0;
            for_each_hidden_run(&g, i0, i1, |off, len| {
                // SAFETY: chunk c writes only items [i0, i1) of gz and a, which no other
                // chunk touches; the runs lie inside them.
                let (gzr, ar) = unsafe {
                    (
                        std::slice::from_raw_parts_mut(gzp.at(off), len),
                        std::slice::from_raw_parts_mut(ap.at(off), len),
                    )
                };
                gelu_keep_round(s, &zs[o..o + len], gzr, ar);
                o += len;
            });
            // The product reads a as stored, in bf16: its pairs are the stored words where k
            // (the features) is contiguous.
            // SAFETY: items [i0, i1) of a, written above by this chunk alone, inside a.
            Operand::Bf16(unsafe { MatRef::from_raw(ap.at(i0 * g.t.is), m, n, (g.t.is, g.t.fs)) })
        } else {
            simd::gelu_tile(zs, act);
            Operand::F32(MatRef::new(act, m, n, ts))
        };
        // SAFETY: as above, for y's items [i0, i1).
        let yt = unsafe { yp.mat(g.y, i0, m, n) };
        product(s, at, k2, yt, PairInit::ColBias(wts.c2), pairs);
        if let Some(sk) = &skip {
            for_each_run(&g, i0, i1, |off, len| {
                // SAFETY: as above.
                let yr = unsafe { std::slice::from_raw_parts_mut(yp.at(off), len) };
                simd::skip_add(yr, &sk.h[off..off + len], sk.g);
            });
        }
    });
}

/// Scratch floats per backward chunk: dz's f32 tile, dy's and dz's bf16 tiles, then the largest
/// product's pairs.
fn backward_per_chunk(g: &Geometry, m: usize) -> usize {
    let (n_in, n) = (g.n_in, g.n_out);
    let pairs = [pairs_len(n, m, n), pairs_len(m, n, n), pairs_len(n_in, m, n), pairs_len(m, n, n_in)];
    2 * m * n + pairs.into_iter().max().unwrap_or(0)
}

/// Length of the `work` buffer [`mlp_backward_bf16`] needs: K1ᵀ and g·K2ᵀ, their pairs (no
/// more than their own length), the chunks' weight-gradient partials, and the scratch slots
/// (one per thread of the current rayon pool, at most one per chunk).
pub fn backward_workspace_bf16(axis: Axis, x_shape: Hbw, n_out: usize) -> usize {
    let g = Geometry::new(axis, x_shape, n_out);
    let chunks = backward_chunks(g.x.items);
    let per_slot = backward_per_chunk(&g, chunk_max(g.x.items, chunks));
    backward_fixed_len(&g, chunks) + scratch_slots(chunks) * per_slot
}

/// The part of [`backward_workspace_bf16`] before the scratch slots.
fn backward_fixed_len(g: &Geometry, chunks: usize) -> usize {
    2 * (g.n_in * g.n_out + g.n_out * g.n_out) + chunks * g.params()
}

/// Backward of [`mlp_forward_bf16`] (module docs): the input gradient into `io.dx`, the weight
/// gradients into `grads`, as [`crate::mlp_backward`] does in `f32`.
pub fn mlp_backward_bf16(
    axis: Axis,
    x_shape: Hbw,
    wts: MlpWeights<f32>,
    saved: SavedBf16,
    io: BackwardIoBf16,
    grads: MlpGrads<f32>,
    gate: Option<GateGrad<f32>>,
) {
    let (SavedBf16 { x, dgelu, a }, n) = (saved, wts.c1.len());
    let BackwardIoBf16 { cpu: s, dy, dx, dx_write, work } = io;
    let g = Geometry::new(axis, x_shape, n);
    check_weights(&g, &wts);
    let hid = hidden_len(axis, x_shape, n);
    assert!(x.len() == x_shape.len() && dx.len() == x_shape.len(), "mlp_backward_bf16: input length");
    assert!(dgelu.len() == hid && a.len() == hid, "mlp_backward_bf16: hidden length");
    assert_eq!(dy.len(), output_shape(axis, x_shape, n).len(), "mlp_backward_bf16: output length");
    let (items, n_in) = (g.x.items, g.n_in);
    let chunks = backward_chunks(items);
    let per_slot = backward_per_chunk(&g, chunk_max(items, chunks));
    let slots = work.len().checked_sub(backward_fixed_len(&g, chunks)).map_or(0, |w| w / per_slot);
    assert!(
        slots > 0 && work.len() == backward_fixed_len(&g, chunks) + slots * per_slot,
        "mlp_backward_bf16: workspace length (see backward_workspace_bf16)"
    );
    let (k1t, rest) = work.split_at_mut(n_in * n);
    let (k2t, rest) = rest.split_at_mut(n * n);
    let (weights, rest) = rest.split_at_mut(n_in * n + n * n);
    let (partials, scratch) = rest.split_at_mut(chunks * g.params());
    pack_transposed(&wts, gate.as_ref().map_or(1.0, |gg| gg.g), k1t, k2t);
    let (k1t, rest) = pack_weights(MatRef::new(k1t, n, n_in, (n_in, 1)), as_pairs(weights));
    let (k2t, _) = pack_weights(MatRef::new(k2t, n, n, (n, 1)), rest);
    let dxp = SharedMut(dx.as_mut_ptr());
    let dx_init = match dx_write {
        Write::Add => PairInit::Accumulate,
        Write::Set => PairInit::Zero,
    };
    let pp = SharedMut(partials.as_mut_ptr());
    for_each_chunk(chunks, scratch, per_slot, |c, scratch| {
        // SAFETY: chunk c alone uses partials[c·params, (c + 1)·params), inside them.
        let part = unsafe { std::slice::from_raw_parts_mut(pp.at(c * g.params()), g.params()) };
        part.fill(0.0);
        let (i0, i1) = chunk_range(items, chunks, c);
        let m = i1 - i0;
        if m == 0 {
            return;
        }
        let [pk1, pc1, pk2, pc2] = split_partials(part, n_in, n);
        let (dzs, rest) = scratch.split_at_mut(m * n);
        let (tiles16, rest) = rest.split_at_mut(m * n);
        let (dy16, dz16) = in_f32s_mut(tiles16).split_at_mut(m * n);
        let pairs = as_pairs(rest);
        // a, gelu'(z) and x were stored by the forward pass, long out of cache: a's tile is
        // requested now, for dK2; the others while dK2 is computed, for the products after it.
        for_each_hidden_run(&g, i0, i1, |off, len| simd::prefetch_l2(a[off..].as_ptr(), len));
        // dc2 += Σ dy in f32, and dy rounded once for its two products into a tile laid out as
        // the hidden ones, in one pass run by run.
        let (ts, mut o) = (tile_strides(axis, m, n), 0);
        for_each_run(&g, i0, i1, |off, len| {
            let (d, out) = (&dy[off..off + len], &mut dy16[o..o + len]);
            match axis {
                Axis::Rows => round_add_rows(s, d, pc2, out),
                Axis::Cols => pc2[off / g.y.fs] += round_sum(s, d, out),
            }
            o += len;
        });
        let dyt = Operand::Bf16(MatRef::new(dy16, m, n, ts));
        let at = Operand::Bf16(g.t.of(a, i0, m, n).t());
        for_each_hidden_run(&g, i0, i1, |off, len| simd::prefetch_l2(dgelu[off..].as_ptr(), len));
        for_each_run_of(g.x, n_in, i0, i1, |off, len| simd::prefetch_l2(x[off..].as_ptr(), len));
        product(s, at, dyt, MatMut::new(pk2, n, n, (n, 1)), PairInit::Zero, pairs);
        product(s, dyt, k2t, MatMut::new(dzs, m, n, ts), PairInit::Zero, pairs);
        // dz = (dy·K2ᵀ) ⊙ gelu'(z), dc1 += Σ dz in f32 and dz rounded once for its two
        // products, in one pass run by run (the tile's runs are the hidden tensor's).
        let mut o = 0;
        for_each_hidden_run(&g, i0, i1, |off, len| {
            let (d, gz, out) = (&dzs[o..o + len], &dgelu[off..off + len], &mut dz16[o..o + len]);
            match axis {
                Axis::Rows => mul_round_add_rows(s, d, gz, pc1, out),
                Axis::Cols => pc1[off / g.t.fs] += mul_round_sum(s, d, gz, out),
            }
            o += len;
        });
        let dzt = Operand::Bf16(MatRef::new(dz16, m, n, ts));
        let xt = Operand::F32(g.x.of(x, i0, m, n_in).t());
        product(s, xt, dzt, MatMut::new(pk1, n_in, n, (n, 1)), PairInit::Zero, pairs);
        // SAFETY: chunk c writes only items [i0, i1) of dx, which no other chunk touches.
        let dxt = unsafe { dxp.mat(g.x, i0, m, n_in) };
        product(s, dzt, k1t, dxt, dx_init, pairs);
    });
    reduce_partials(partials, &wts, grads, gate);
}
