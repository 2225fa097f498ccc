//! The GEMMs of the fused kernels: a packing-free AVX-512 path for the small shapes of this
//! model, matrixmultiply for everything else.
//!
//! The mixer's products are tall and thin: m = 128–384 items a chunk against a weight matrix of
//! at most 96×96. matrixmultiply copies (packs) both operands into its own layout before every
//! product, which at k = 28 costs about as much as the arithmetic. When **B's rows and C's rows are
//! contiguous**, no packing is needed: C[i, j..j+16] += A[i, p] · B[p, j..j+16] is one broadcast
//! and one fused multiply-add per 16 outputs, with B (≤ 36 KB) staying in L1/L2 and A read as it
//! lies, through any strides. [`gemm`] takes that path when it applies, directly or for the
//! transposed problem Cᵀ = Bᵀ·Aᵀ (the column-direction products, whose C has contiguous
//! *columns*), and otherwise calls matrixmultiply. Each output element is a sum over p in
//! ascending order whichever chunk it falls in, so results stay independent of the thread count.

use crate::real::Real;
#[cfg(target_arch = "x86_64")]
use crate::simd::{level, Level};
#[cfg(target_arch = "x86_64")]
use std::any::TypeId;

/// The longest k the direct path takes in one sweep. It walks C in panels of 32–96 columns and
/// reads, for each block of rows, the k × (panel width) panel of B under it, which should stay
/// in cache for all the row blocks: k ≤ 256 keeps a 32-column panel within L1's 32 KB and a
/// 96-column one within L2. A longer k is done in sweeps of 256, each adding into C what the
/// last one stored (exact: the same sums, in the same order). (The rows of A are read once per
/// panel, from wherever they are.)
#[cfg(target_arch = "x86_64")]
const DIRECT_MAX_K: usize = 256;

/// What C holds before A·B is added to it.
#[derive(Clone, Copy, Debug)]
pub enum Init<'a, T> {
    /// `C ← A·B`.
    Zero,
    /// `C ← C + A·B`.
    Accumulate,
    /// `C[i, j] ← bias[j] + (A·B)[i, j]`: a dense layer's bias (one per column of C), which the
    /// direct paths load into the accumulators before the first product, so that adding it
    /// costs no pass over C.
    Bias(&'a [T]),
}

/// `C ← A·B` (plus C or a bias, as `init` says), like [`Real::gemm`] but taking the packing-free
/// AVX-512 path for f32 when the layout allows (see the module docs).
///
/// # Safety
/// As [`Real::gemm`]: the pointers must address every element the shapes and strides imply, and
/// C must not overlap A or B.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm<T: Real>(
    m: usize,
    k: usize,
    n: usize,
    a: *const T,
    rs_a: (usize, usize),
    b: *const T,
    rs_b: (usize, usize),
    init: Init<T>,
    c: *mut T,
    rs_c: (usize, usize),
) {
    gemm_hinted(m, k, n, a, rs_a, b, rs_b, init, c, rs_c, false)
}

/// [`gemm`]; with `cold_c` set, for a C in memory not touched for a long time and about to be
/// overwritten: a training forward pass's stored activations, which the rest of the step's
/// activations (88 MB a CIFAR shard) have long pushed out of every cache. On the direct path each
/// block's rows of C are prefetched for writing (`prefetchw`) while the block before it is
/// computed, so that their line fills overlap the arithmetic instead of stalling the stores.
/// Not for outputs already in cache (a backward pass's scratch and gradients), where the same
/// prefetches evict lines still in use. Measured per call site in a CIFAR training step (`rdtsc`
/// around each call, medians of four runs): the forward products 4% (rows) and 13% (columns'
/// second product) faster with it; the backward's column products, writing warm buffers, 4%
/// slower, hence the flag.
///
/// # Safety
/// As [`gemm`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_hinted<T: Real>(
    m: usize,
    k: usize,
    n: usize,
    a: *const T,
    (rsa, csa): (usize, usize),
    b: *const T,
    (rsb, csb): (usize, usize),
    init: Init<T>,
    c: *mut T,
    (rsc, csc): (usize, usize),
    cold_c: bool,
) {
    if let Init::Bias(bias) = init {
        assert_eq!(bias.len(), n, "gemm: one bias per column of C");
    }
    #[cfg(target_arch = "x86_64")]
    if TypeId::of::<T>() == TypeId::of::<f32>() && level() == Level::Avx512 && m > 0 && n > 0 {
        use direct::Start;
        let (a, b, c) = (a as *const f32, b as *const f32, c as *mut f32);
        // Where the accumulators start; a bias is one per column of C (`ColBias`) or, on the
        // transposed problem, one per row of Cᵀ (`RowBias`).
        let start = |per_bias: fn(*const f32) -> Start| match init {
            Init::Zero => Start::Zero,
            Init::Accumulate => Start::C,
            Init::Bias(v) => per_bias(v.as_ptr() as *const f32),
        };
        if csb == 1 && csc == 1 {
            let (a, b, c) = ((a, rsa, csa), (b, rsb), (c, rsc));
            // Tiles of 4 rows by 96 columns for a C wider than two vectors, 8 by 32 otherwise
            // (see `gemm_avx512`).
            if n > 32 {
                return direct::gemm_avx512::<4, 6>(m, k, n, a, b, c, start(Start::ColBias), cold_c);
            }
            return direct::gemm_avx512::<8, 2>(m, k, n, a, b, c, start(Start::ColBias), cold_c);
        }
        if rsa == 1 && rsc == 1 {
            // Cᵀ (n×m) = Bᵀ (n×k) · Aᵀ (k×m): Aᵀ's rows and Cᵀ's rows are contiguous. In blocks
            // of 4 rows by 64 columns rather than 8 by 32 (see `gemm_avx512`).
            let (bt, at, ct) = ((b, csb, rsb), (a, csa), (c, csc));
            return direct::gemm_avx512::<4, 4>(n, k, m, bt, at, ct, start(Start::RowBias), cold_c);
        }
        if csa == 1 && rsb == 1 && !matches!(init, Init::Bias(_)) {
            // Both operands contiguous along k (the column direction's weight gradients, a sum
            // over items): C[i, j] is a dot product of A's row i and B's column j.
            let acc = matches!(init, Init::Accumulate);
            return direct::gemm_dot_avx512(m, k, n, a, rsa, b, csb, c, (rsc, csc), acc);
        }
    }
    let beta = match init {
        Init::Zero => T::ZERO,
        Init::Accumulate => T::ONE,
        Init::Bias(v) => {
            for i in 0..m {
                for (j, &bj) in v.iter().enumerate() {
                    *c.add(i * rsc + j * csc) = bj;
                }
            }
            T::ONE
        }
    };
    T::gemm(
        m,
        k,
        n,
        T::ONE,
        a,
        rsa as isize,
        csa as isize,
        b,
        rsb as isize,
        csb as isize,
        beta,
        c,
        rsc as isize,
        csc as isize,
    )
}

#[cfg(target_arch = "x86_64")]
mod direct {
    use super::DIRECT_MAX_K;
    use std::arch::x86_64::*;

    /// A 32 KB L1 data cache, in floats.
    const L1_FLOATS: usize = 8192;

    /// What the accumulators of [`gemm_avx512`] start from.
    #[derive(Clone, Copy)]
    pub enum Start {
        Zero,
        /// C's current values.
        C,
        /// `bias[j]` for column j (a vector load per block).
        ColBias(*const f32),
        /// `bias[i]` for row i (a broadcast per row).
        RowBias(*const f32),
    }

    fn mask(lanes: usize) -> __mmask16 {
        if lanes >= 16 {
            0xffff
        } else {
            ((1u32 << lanes) - 1) as __mmask16
        }
    }

    /// C (m×n, rows contiguous, row stride rsc) = A (m×k, any strides) · B (k×n, rows
    /// contiguous) + what `start` says, in sweeps of at most [`DIRECT_MAX_K`] along k, each
    /// adding into C what the last one stored. Within a sweep, columns go in panels of NV
    /// 16-lane vectors (the last ones masked), rows MR at a time: MR × NV accumulators.
    ///
    /// Three tile shapes, the same sums in the same order (so the same bits), each measured on
    /// the training step with the shapes alternating in 0.7-second windows in one process (a
    /// temporary switch; ratios of step rates, 20–30 rounds each):
    /// * 4 rows × 4 vectors for the column MLPs' transposed products, whose C rows (features)
    ///   are B·W floats apart, 12 KB at CIFAR's shard of 32: a multiple of 4 KB, so that every
    ///   row of a block falls in the same L1 set and 8 rows fill all its 8 ways. 4 rows by 64
    ///   columns puts 4 lines in each set and also needs fewer loads per multiply-add (4
    ///   broadcasts and 4 vectors per 16, against 8 and 2). CIFAR 1.030 and 1.016 against 8 × 2;
    ///   MNIST, whose C rows are 3.5 KB apart, 1.002.
    /// * 4 × 6 for a C wider than two vectors (CIFAR's row MLPs, 96 columns): one panel covers
    ///   all of C's columns, so A is read once per sweep instead of once per 32-column panel,
    ///   which for the weight gradients (A a stored activation, read down its columns, k = the
    ///   chunk's items) saves two passes over cold memory; and 4 broadcasts and 6 vectors per
    ///   24 multiply-adds. CIFAR 1.047, 1.028, 1.040 against 8 × 2; 6 × 4 measured 1.007.
    /// * 8 × 2 otherwise (MNIST's rows, 28 columns: 4 × 6 would leave 4 × 2 accumulators,
    ///   0.983 there).
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn gemm_avx512<const MR: usize, const NV: usize>(
        m: usize,
        k: usize,
        n: usize,
        (a, rsa, csa): (*const f32, usize, usize),
        (b, rsb): (*const f32, usize),
        (c, rsc): (*mut f32, usize),
        start: Start,
        cold_c: bool,
    ) {
        let nr = 16 * NV;
        // B's rows `rsb` floats apart: when that is a multiple of 1 KB (CIFAR's column products,
        // whose rows are B·W = 32·96 floats apart) the k rows of a panel all fall in the same few
        // L1 sets and evict each other, so the panel is first copied to `panel`, nr floats a row
        // (read again by every block of rows, the copy costs 1/m of the products). Rows are
        // copied whole, NV vectors each (lanes past w hold zeros the blocks never read); only for
        // panels of at most 4 vectors (the column products'), which is all `panel` holds.
        let pack = NV <= 4 && rsb.is_multiple_of(256) && m > MR;
        let mut panel = std::mem::MaybeUninit::<[f32; DIRECT_MAX_K * 64]>::uninit();
        let panel = panel.as_mut_ptr() as *mut f32;
        let (mut p0, mut start) = (0, start);
        loop {
            let kb = (k - p0).min(DIRECT_MAX_K);
            let (a, b) = (a.add(p0 * csa), b.add(p0 * rsb));
            // Only for a sweep of A larger than L1 (a weight gradient's activations, not a
            // weight matrix read transposed), where the requests cost less than they save.
            if rsa == 1 && csa >= m && kb * csa >= L1_FLOATS {
                prefetch_columns(a, m, kb, csa);
            }
            let mut j = 0;
            while j < n {
                let w = (n - j).min(nr);
                let masks: [__mmask16; 6] = std::array::from_fn(|v| mask(w.saturating_sub(16 * v)));
                let vectors = w.div_ceil(16);
                let (bj, rsb) = if pack {
                    for p in 0..kb {
                        let (src, dst) = (b.add(p * rsb + j), panel.add(p * nr));
                        for (v, &mv) in masks.iter().enumerate().take(NV) {
                            _mm512_storeu_ps(dst.add(16 * v), _mm512_maskz_loadu_ps(mv, src.add(16 * v)));
                        }
                    }
                    (panel as *const f32, nr)
                } else {
                    (b.add(j), rsb)
                };
                let mut i = 0;
                while i < m {
                    let rows = (m - i).min(MR);
                    let (ai, cij) = (a.add(i * rsa), c.add(i * rsc + j));
                    // The bias under this block: its columns' (from j) or its rows' (from i).
                    let start = match start {
                        Start::ColBias(v) => Start::ColBias(v.add(j)),
                        Start::RowBias(v) => Start::RowBias(v.add(i)),
                        s => s,
                    };
                    macro_rules! go {
                        ($(($r:literal, $v:literal))*) => {
                            match (rows, vectors) {
                                $(($r, $v) => block::<$r, $v>(kb, ai, rsa, csa, bj, rsb, cij, rsc, &masks, start),)*
                                _ => unreachable!(),
                            }
                        };
                    }
                    if cold_c && i + rows < m {
                        prefetch_rows_for_write(c.add((i + rows) * rsc + j), (m - i - rows).min(MR), w, rsc);
                    }
                    if MR == 8 {
                        go!((1, 1)(2, 1)(3, 1)(4, 1)(5, 1)(6, 1)(7, 1)(8, 1)(1, 2)(2, 2)(3, 2)(4, 2)(5, 2)(
                            6, 2
                        )(7, 2)(8, 2));
                    } else if NV == 6 {
                        go!((1, 1)(2, 1)(3, 1)(4, 1)(1, 2)(2, 2)(3, 2)(4, 2)(1, 3)(2, 3)(3, 3)(4, 3)(1, 4)(
                            2, 4
                        )(3, 4)(4, 4)(1, 5)(2, 5)(3, 5)(4, 5)(1, 6)(2, 6)(3, 6)(
                            4, 6
                        ));
                    } else {
                        go!((1, 1)(2, 1)(3, 1)(4, 1)(1, 2)(2, 2)(3, 2)(4, 2)(1, 3)(2, 3)(3, 3)(4, 3)(1, 4)(
                            2, 4
                        )(3, 4)(4, 4));
                    }
                    i += rows;
                }
                j += nr;
            }
            p0 += kb;
            if p0 >= k {
                break;
            }
            start = Start::C;
        }
    }

    /// Prefetches into L1 the k columns of an A read down its columns (`rsa` = 1: a weight
    /// gradient's Aᵀ, element (i, p) at `a + p·csa + i`): k runs of m floats, `csa` apart. The
    /// first block of rows walks them one new line per step, which on a stored activation (cold,
    /// from memory) stalls the multiply-adds; requesting the whole sweep first lets the line
    /// fills overlap. (Measured per call site in a CIFAR step: the rows' two weight-gradient
    /// products 4% and 6% faster.)
    #[inline(always)]
    unsafe fn prefetch_columns(a: *const f32, m: usize, k: usize, csa: usize) {
        for p in 0..k {
            each_line(a.add(p * csa), m, |q| _mm_prefetch(q as *const i8, _MM_HINT_T0));
        }
    }

    /// Prefetches for writing (`prefetchw`: the line is fetched in a state that lets it be
    /// written without a second request) `rows` rows of `w` floats from `c`, `rsc` apart.
    #[inline(always)]
    unsafe fn prefetch_rows_for_write(c: *mut f32, rows: usize, w: usize, rsc: usize) {
        for r in 0..rows {
            each_line(c.add(r * rsc), w, |q| prefetchw(q));
        }
    }

    /// Calls `f` on an address in every 64-byte line of the `len` (≥ 1) floats from `p`: every
    /// 16th float, and the last (whose line the 16-float steps miss when `p` is not aligned).
    #[inline(always)]
    unsafe fn each_line(p: *const f32, len: usize, mut f: impl FnMut(*const f32)) {
        let mut q = 0;
        while q < len {
            f(p.add(q));
            q += 16;
        }
        f(p.add(len - 1));
    }

    /// `prefetchw`, which every x86-64 CPU with AVX-512 has (this path runs on no other).
    #[inline(always)]
    unsafe fn prefetchw(p: *const f32) {
        std::arch::asm!("prefetchw [{}]", in(reg) p, options(nostack, preserves_flags, readonly));
    }

    /// C (m×n, any strides) = A (m×k, rows contiguous) · B (k×n, columns contiguous) [+ C]:
    /// every C[i, j] a dot product over k, four rows by four columns at a time, with 16-lane
    /// partial sums reduced once at the end, all sixteen together ([`reduce16`]).
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn gemm_dot_avx512(
        m: usize,
        k: usize,
        n: usize,
        a: *const f32,
        rsa: usize,
        b: *const f32,
        csb: usize,
        c: *mut f32,
        (rsc, csc): (usize, usize),
        acc: bool,
    ) {
        const D: usize = 4;
        let mut i = 0;
        while i < m {
            let ri = (m - i).min(D);
            let mut j = 0;
            while j < n {
                let rj = (n - j).min(D);
                let (ai, bj) = (a.add(i * rsa), b.add(j * csb));
                macro_rules! go {
                    ($(($ri:literal, $rj:literal))*) => {
                        match (ri, rj) {
                            $(($ri, $rj) => dot_block::<$ri, $rj>(k, ai, rsa, bj, csb),)*
                            _ => unreachable!(),
                        }
                    };
                }
                let s = go!((1, 1)(1, 2)(1, 3)(1, 4)(2, 1)(2, 2)(2, 3)(2, 4)(3, 1)(3, 2)(3, 3)(3, 4)(4, 1)(
                    4, 2
                )(4, 3)(4, 4));
                let sums = reduce16(&s);
                for ii in 0..ri {
                    for jj in 0..rj {
                        let dst = c.add((i + ii) * rsc + (j + jj) * csc);
                        let v = sums[jj * D + ii];
                        *dst = if acc { *dst + v } else { v };
                    }
                }
                j += D;
            }
            i += D;
        }
    }

    /// The 16-lane partial sums of an RI × RJ block of dot products (rows of A from `a`, `rsa`
    /// apart; columns of B from `b`, `csb` apart), lanes past k zero; unused entries zero. Whole
    /// vectors with plain loads, then one masked step for the tail: each lane sums its p in
    /// ascending order.
    #[inline(always)]
    unsafe fn dot_block<const RI: usize, const RJ: usize>(
        k: usize,
        a: *const f32,
        rsa: usize,
        b: *const f32,
        csb: usize,
    ) -> [[__m512; 4]; 4] {
        let mut s = [[_mm512_setzero_ps(); 4]; 4];
        #[inline(always)]
        unsafe fn step<const RI: usize, const RJ: usize>(
            s: &mut [[__m512; 4]; 4],
            a: *const f32,
            rsa: usize,
            b: *const f32,
            csb: usize,
            mk: __mmask16,
        ) {
            let load =
                |p: *const f32| if mk == 0xffff { _mm512_loadu_ps(p) } else { _mm512_maskz_loadu_ps(mk, p) };
            let mut bv = [_mm512_setzero_ps(); RJ];
            for (jj, v) in bv.iter_mut().enumerate() {
                *v = load(b.add(jj * csb));
            }
            for (ii, row) in s.iter_mut().enumerate().take(RI) {
                let av = load(a.add(ii * rsa));
                for (sv, &bvj) in row.iter_mut().zip(&bv) {
                    *sv = _mm512_fmadd_ps(av, bvj, *sv);
                }
            }
        }
        let kv = k / 16 * 16;
        let mut p = 0;
        while p < kv {
            step::<RI, RJ>(&mut s, a.add(p), rsa, b.add(p), csb, 0xffff);
            p += 16;
        }
        if kv < k {
            step::<RI, RJ>(&mut s, a.add(kv), rsa, b.add(kv), csb, mask(k - kv));
        }
        s
    }

    /// The lane sums of sixteen vectors s[ii][jj] at once, returned transposed: element
    /// `jj·4 + ii` is Σ_lanes s[ii][jj]. Reducing them one by one costs about ten shuffles and adds
    /// each (160 for a block, more than its 128 FMAs at k = 128); this tree costs 45.
    ///
    /// Vectors v_q, q = 4ii + jj, with 128-bit lanes L0..L3:
    /// 1. pairs (v_2t, v_2t+1) → u_t = [x.L0+x.L2, x.L1+x.L3, y.L0+y.L2, y.L1+y.L3] (8 vectors);
    /// 2. pairs (u_2t, u_2t+1) → w_t, whose lane L holds 4 partial sums of v_(4t+L) (4 vectors);
    /// 3. pairs (w_0, w_1), (w_2, w_3), interleaved within lanes and added: lane L of x_0 holds
    ///    2 partials each of v_L and v_(4+L), of x_1 those of v_(8+L) and v_(12+L);
    /// 4. one last interleave and add: lane L = [Σv_L, Σv_(4+L), Σv_(8+L), Σv_(12+L)], so
    ///    element 4L + e is Σ v_(4e+L) = Σ s[e][L].
    #[inline(always)]
    unsafe fn reduce16(s: &[[__m512; 4]; 4]) -> [f32; 16] {
        let v = |q: usize| s[q / 4][q % 4];
        let mut u = [_mm512_setzero_ps(); 8];
        for (t, ut) in u.iter_mut().enumerate() {
            let (x, y) = (v(2 * t), v(2 * t + 1));
            *ut = _mm512_add_ps(_mm512_shuffle_f32x4(x, y, 0x44), _mm512_shuffle_f32x4(x, y, 0xEE));
        }
        let mut w = [_mm512_setzero_ps(); 4];
        for (t, wt) in w.iter_mut().enumerate() {
            let (p, q) = (u[2 * t], u[2 * t + 1]);
            *wt = _mm512_add_ps(_mm512_shuffle_f32x4(p, q, 0x88), _mm512_shuffle_f32x4(p, q, 0xDD));
        }
        let x0 = _mm512_add_ps(_mm512_unpacklo_ps(w[0], w[1]), _mm512_unpackhi_ps(w[0], w[1]));
        let x1 = _mm512_add_ps(_mm512_unpacklo_ps(w[2], w[3]), _mm512_unpackhi_ps(w[2], w[3]));
        let r = _mm512_add_ps(_mm512_shuffle_ps(x0, x1, 0x44), _mm512_shuffle_ps(x0, x1, 0xEE));
        let mut out = [0f32; 16];
        _mm512_storeu_ps(out.as_mut_ptr(), r);
        out
    }

    /// A store of the lanes in `m`: a plain one when that is all of them (a masked store costs
    /// more on some cores, AMD's Zen 4 among them).
    #[inline(always)]
    unsafe fn store(p: *mut f32, m: __mmask16, v: __m512) {
        if m == 0xffff {
            _mm512_storeu_ps(p, v)
        } else {
            _mm512_mask_storeu_ps(p, m, v)
        }
    }

    /// A load of the lanes in `m` (zeros elsewhere), plain when that is all of them.
    #[inline(always)]
    unsafe fn load(m: __mmask16, p: *const f32) -> __m512 {
        if m == 0xffff {
            _mm512_loadu_ps(p)
        } else {
            _mm512_maskz_loadu_ps(m, p)
        }
    }

    /// One R × 16V block of C: the accumulators start as `start` says, then for p in 0..k,
    /// acc[r] += A[r, p] · B[p, ..] (broadcast, FMA). Vector v covers the lanes in `masks[v]`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn block<const R: usize, const V: usize>(
        k: usize,
        a: *const f32,
        rsa: usize,
        csa: usize,
        b: *const f32,
        rsb: usize,
        c: *mut f32,
        rsc: usize,
        masks: &[__mmask16; 6],
        start: Start,
    ) {
        let mut s = [[_mm512_setzero_ps(); V]; R];
        for (r, sr) in s.iter_mut().enumerate() {
            for (v, acc) in sr.iter_mut().enumerate() {
                *acc = match start {
                    Start::Zero => _mm512_setzero_ps(),
                    Start::C => _mm512_maskz_loadu_ps(masks[v], c.add(r * rsc + 16 * v)),
                    Start::ColBias(bias) => _mm512_maskz_loadu_ps(masks[v], bias.add(16 * v)),
                    Start::RowBias(bias) => _mm512_set1_ps(*bias.add(r)),
                };
            }
        }
        for p in 0..k {
            let bp = b.add(p * rsb);
            let bv: [__m512; V] = std::array::from_fn(|v| load(masks[v], bp.add(16 * v)));
            let ap = a.add(p * csa);
            for (r, sr) in s.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*ap.add(r * rsa));
                for (acc, &bvv) in sr.iter_mut().zip(&bv) {
                    *acc = _mm512_fmadd_ps(av, bvv, *acc);
                }
            }
        }
        for (r, sr) in s.iter().enumerate() {
            for (v, &acc) in sr.iter().enumerate() {
                store(c.add(r * rsc + 16 * v), masks[v], acc);
            }
        }
    }
}
