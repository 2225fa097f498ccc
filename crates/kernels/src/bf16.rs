//! bf16 (bfloat16) for mixed-precision products: the format, rounding from `f32`, the pair
//! layout that `VDPBF16PS` reads, and a GEMM over it that accumulates in `f32` (AVX512_BF16).
//!
//! A bf16 is the upper half of an `f32`'s bits: the sign, the same 8 exponent bits and the top 7
//! fraction bits. So it keeps every `f32` exponent, widening it back is exact ([`widen`]), and the
//! product of two bf16 values (8 significant bits each, 16 together) is exact in `f32`.
//!
//! **Rounding** `f32` → bf16 is round-to-nearest, ties to even, and happens in two places only:
//! [`round`], the scalar twin (integer arithmetic on the bits), and the vector instruction
//! `VCVTNEPS2BF16` inside [`pack_pairs`], which `tests/bf16.rs` holds to the twin bit for bit.
//! Both follow the instruction's conventions: a NaN stays a quiet NaN of the same sign, a
//! subnormal `f32` becomes a zero of the same sign (the instruction reads denormal inputs as
//! zero), and a finite value past bf16's largest (about 3.39e38) rounds to infinity.
//!
//! **Pairs.** `VDPBF16PS` takes 32 bf16 values from each operand and adds two products into each
//! of 16 `f32` lanes: lane j += a₂ⱼ·b₂ⱼ + a₂ⱼ₊₁·b₂ⱼ₊₁. A product C = A·B (k the inner
//! dimension) therefore wants its operands with the two values of a pair consecutive along k.
//! A *pair matrix* holds them so: element (r, q) of the pairs of X (k × n) is one `u32` with
//! bf16(X[2q, r]) in its low half and bf16(X[2q + 1, r]) in its high half (zero when 2q + 1 = k),
//! for q < ⌈k/2⌉. [`pack_pairs`] makes one from any strided `f32` view; the GEMM
//! ([`gemm_pairs`]) takes A's pairs with any strides (a broadcast of one `u32` per row and pair)
//! and B's with rows of contiguous columns (16 columns a vector).
//!
//! Where k is contiguous in memory (the rows of a row-major A) the pairs are just the rounded
//! values in order; where k is the strided axis (a weight matrix read down its rows, a column
//! product's activations) packing interleaves two rows. Either is a pass over the data, which a
//! training step can fold into a pass that already reads it.

use crate::mat::{MatMut, MatRef};

/// A bf16 tensor kept in an `f32` buffer, two values a slot (a tape's buffers are `f32`s): the
/// first `2·v.len()` bf16 values it holds.
pub fn in_f32s(v: &[f32]) -> &[u16] {
    // SAFETY: u16's alignment divides f32's, the byte length is the same, and every bit pattern
    // is a valid u16.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u16, 2 * v.len()) }
}

/// [`in_f32s`], writable.
pub fn in_f32s_mut(v: &mut [f32]) -> &mut [u16] {
    // SAFETY: as in `in_f32s`; and every bit pattern written through the u16s is a valid f32 (a
    // NaN at worst), never read as a float by anything but this view.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u16, 2 * v.len()) }
}

/// What a training step or an inference pass computes its products in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// Everything in `f32`.
    #[default]
    F32,
    /// The axis-MLPs' products on bf16 operands accumulated in `f32`, their saved hidden tensors
    /// in bf16 ([`crate::mlp_bf16`]); everything else `f32`.
    Bf16,
}

impl Precision {
    /// The name `--precision` takes and a checkpoint records.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }

    pub fn parse(s: &str) -> Option<Precision> {
        [Precision::F32, Precision::Bf16].into_iter().find(|p| p.name() == s)
    }

    /// The precisions this CPU runs, `f32` first.
    pub fn available() -> Vec<Precision> {
        let mut v = vec![Precision::F32];
        if available() {
            v.push(Precision::Bf16);
        }
        v
    }

    /// `Ok` where this CPU runs the precision; for bf16 elsewhere, an error naming what it lacks.
    /// bf16's kernels are AVX-512 code, so they run at the avx512 level only: a `PMIXER_SIMD`
    /// that asks for a lower one (to try what an AVX2 machine does) rules them out too.
    pub fn check(self) -> Result<(), String> {
        use crate::simd::{level, Level};
        match self {
            Precision::Bf16 if !available() => Err(format!(
                "bf16 needs AVX512_BF16 (VDPBF16PS) with AVX-512F, BW and VL; this CPU ({}) lacks it",
                std::env::consts::ARCH
            )),
            Precision::Bf16 if level() != Level::Avx512 => Err(format!(
                "bf16 runs at the avx512 level (AVX512_BF16); PMIXER_SIMD chose {}",
                level().name()
            )),
            _ => Ok(()),
        }
    }

    /// The precisions this run may use: [`Precision::available`] as [`Precision::check`]
    /// allows at the SIMD level in use.
    pub fn usable() -> Vec<Precision> {
        Self::available().into_iter().filter(|p| p.check().is_ok()).collect()
    }
}

/// bf16(x), rounded to nearest with ties to even; NaN → quiet NaN (sign kept), subnormal →
/// signed zero, as `VCVTNEPS2BF16` does (see the module docs).
///
/// Adding 0x7FFF plus the lowest kept bit to the bits and truncating rounds the 16 dropped bits
/// to nearest, ties towards the even kept value; a carry out of the fraction moves to the next
/// binade, or from the largest finite values to infinity, as rounding must.
pub fn round(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x0040) as u16;
    }
    if bits & 0x7F80_0000 == 0 {
        return ((bits >> 16) & 0x8000) as u16;
    }
    let lowest_kept = (bits >> 16) & 1;
    ((bits + 0x7FFF + lowest_kept) >> 16) as u16
}

/// The `f32` a bf16 stands for (exact).
pub fn widen(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// One pair: bf16(lo) in the low half, bf16(hi) in the high half.
pub fn pair(lo: f32, hi: f32) -> u32 {
    round(lo) as u32 | (round(hi) as u32) << 16
}

/// The two values a pair stands for, (low, high).
pub fn unpair(p: u32) -> (f32, f32) {
    (widen(p as u16), widen((p >> 16) as u16))
}

/// Whether this CPU runs [`gemm_pairs`] (x86-64 with AVX-512F, BW, VL and AVX512_BF16).
pub fn available() -> bool {
    crate::isa::Avx512Bf16::detect().is_some()
}

/// The pairs of `src` (k × n, any strides) along k: `dst` (⌈k/2⌉ × n) element (q, j) =
/// [`pair`]`(src[2q, j], src[2q + 1, j])`, the high half zero when 2q + 1 = k.
///
/// Three layouts take the vector instruction where the CPU has it (the same bits as the scalar
/// twin): k contiguous both in `src` and `dst` (the values rounded in order), rows contiguous in
/// both (two rows interleaved), and k contiguous in `src` with `dst`'s rows contiguous (each
/// column's floats rounded into pairs, 16 columns at a time transposed in registers).
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))] // written through only by the x86 paths
pub fn pack_pairs(src: MatRef<f32>, mut dst: MatMut<u32>) {
    let (k, n) = (src.rows(), src.cols());
    assert!(
        dst.rows() == k.div_ceil(2) && dst.cols() == n,
        "pack_pairs: {k}×{n} into {}×{}",
        dst.rows(),
        dst.cols()
    );
    #[cfg(target_arch = "x86_64")]
    if let Some(s) = crate::isa::Avx512Bf16::detect() {
        let ((rs, cs), (drs, dcs)) = (src.strides(), dst.strides());
        if rs == 1 && drs == 1 {
            // SAFETY: the views lie in their buffers (checked or promised when they were made),
            // the token proves the instructions, and this is the layout the function reads.
            return unsafe { x86::pack_along_k(s, src.as_ptr(), k, n, cs, dst.as_mut_ptr(), dcs) };
        }
        if cs == 1 && dcs == 1 {
            // SAFETY: as above.
            return unsafe { x86::pack_two_rows(s, src.as_ptr(), k, n, rs, dst.as_mut_ptr(), drs) };
        }
        if rs == 1 && dcs == 1 {
            // SAFETY: as above.
            return unsafe { x86::pack_by_transpose(s, src.as_ptr(), k, n, cs, dst.as_mut_ptr(), drs) };
        }
    }
    pack_pairs_scalar(src, dst)
}

/// [`pack_pairs`] by [`pair`] alone: the twin the vector layouts are tested against.
pub fn pack_pairs_scalar(src: MatRef<f32>, mut dst: MatMut<u32>) {
    let (k, n) = (src.rows(), src.cols());
    assert!(dst.rows() == k.div_ceil(2) && dst.cols() == n, "pack_pairs_scalar: shapes");
    let ((rs, cs), (drs, dcs)) = (src.strides(), dst.strides());
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    for q in 0..k.div_ceil(2) {
        for j in 0..n {
            // SAFETY: (q, j) is inside dst, and (2q, j) and (2q + 1 < k, j) inside src.
            unsafe {
                let lo = *s.add(2 * q * rs + j * cs);
                let hi = if 2 * q + 1 < k { *s.add((2 * q + 1) * rs + j * cs) } else { 0.0 };
                *d.add(q * drs + j * dcs) = pair(lo, hi);
            }
        }
    }
}

/// The pairs of `src` (k × n bf16 values, any strides) along k, as [`pack_pairs`] lays them out:
/// no rounding, the values are bf16 already. With k contiguous in `src` each pair is one
/// 32-bit word: copied where k is contiguous in `dst` too, and where the CPU has AVX512_BF16,
/// transposed 16 × 16 words at a time into rows of `dst` with contiguous columns; contiguous rows of
/// `src` are interleaved, 16 columns at a time.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))] // written through only by the x86 path
pub fn pack_pairs_bf16(src: MatRef<u16>, mut dst: MatMut<u32>) {
    let (k, n) = (src.rows(), src.cols());
    assert!(dst.rows() == k.div_ceil(2) && dst.cols() == n, "pack_pairs_bf16: shapes");
    let ((rs, cs), (drs, dcs)) = (src.strides(), dst.strides());
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    #[cfg(target_arch = "x86_64")]
    if let Some(t) = crate::isa::Avx512Bf16::detect() {
        if cs == 1 && dcs == 1 {
            // SAFETY: the views lie in their buffers, the token proves the instructions, and the
            // layout is the one the function reads.
            return unsafe { x86::interleave_rows(t, s, k, n, rs, d, drs) };
        }
        if rs == 1 && dcs == 1 {
            // SAFETY: as above.
            return unsafe { x86::words_by_transpose(t, s, k, n, cs, d, drs) };
        }
    }
    if rs == 1 && drs == 1 {
        // k contiguous in both: each column's pairs are its values' 32-bit words, in order.
        for j in 0..n {
            for q in 0..k / 2 {
                // SAFETY: values 2q and 2q + 1 < k of column j are inside src (read as one
                // unaligned word), and (q, j) inside dst.
                unsafe { *d.add(q + j * dcs) = (s.add(2 * q + j * cs) as *const u32).read_unaligned() };
            }
            if k % 2 == 1 {
                // SAFETY: value k − 1 of column j is inside src, pair k/2 inside dst.
                unsafe { *d.add(k / 2 + j * dcs) = *s.add(k - 1 + j * cs) as u32 };
            }
        }
        return;
    }
    for q in 0..k.div_ceil(2) {
        for j in 0..n {
            // SAFETY: (q, j) is inside dst, and (2q, j) and (2q + 1 < k, j) inside src.
            unsafe {
                let lo = *s.add(2 * q * rs + j * cs) as u32;
                let hi = if 2 * q + 1 < k { *s.add((2 * q + 1) * rs + j * cs) as u32 } else { 0 };
                *d.add(q * drs + j * dcs) = lo | hi << 16;
            }
        }
    }
}

/// The backward pass through GELU of a row-major tile whose rows are `acc.len()` long, in mixed
/// precision: p = d ⊙ widen(g) in `f32`; the bias gradient `acc[c] += Σ_r p[r, c]` from the
/// `f32` values (rows in order), and `out = round(p)`, the operand of dz's two products, in the
/// same pass.
pub fn mul_round_add_rows(s: crate::isa::Avx512Bf16, d: &[f32], g: &[u16], acc: &mut [f32], out: &mut [u16]) {
    assert_eq!(d.len(), g.len(), "mul_round_add_rows: lengths");
    round_rows::<true>(s, d, g, acc, out)
}

/// [`mul_round_add_rows`] with no factor: `acc[c] += Σ_r d[r, c]` (as [`crate::simd::add_rows`]
/// sums) and `out = round(d)` in one pass: an output gradient's bias gradient and its rounding
/// for the two products that read it.
pub fn round_add_rows(s: crate::isa::Avx512Bf16, d: &[f32], acc: &mut [f32], out: &mut [u16]) {
    round_rows::<false>(s, d, &[], acc, out)
}

/// [`mul_round_add_rows`] (`SCALE`) or [`round_add_rows`], once `g`'s length is checked.
fn round_rows<const SCALE: bool>(
    s: crate::isa::Avx512Bf16,
    d: &[f32],
    g: &[u16],
    acc: &mut [f32],
    out: &mut [u16],
) {
    assert!(
        d.len() == out.len() && !acc.is_empty() && d.len().is_multiple_of(acc.len()),
        "round_add_rows: lengths"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the slices hold the lengths checked here and by the callers (g: d's, when SCALE);
    // the token proves the instructions.
    unsafe {
        x86::round_add_rows::<SCALE>(s, d, g, acc, out)
    };
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = g; // read by the x86 kernel only
        s.absent()
    }
}

/// [`mul_round_add_rows`] for one feature's run of items: p = d ⊙ widen(g), `out = round(p)`,
/// and Σ p returned, summed as [`crate::simd::sum`] sums (eight running sums, then a fixed tree).
pub fn mul_round_sum(s: crate::isa::Avx512Bf16, d: &[f32], g: &[u16], out: &mut [u16]) -> f32 {
    assert!(d.len() == g.len() && d.len() == out.len(), "mul_round_sum: lengths");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the slices hold d.len() values; the token proves the instructions.
    return unsafe { x86::round_sum::<true>(s, d, g, out) };
    #[cfg(not(target_arch = "x86_64"))]
    s.absent()
}

/// [`mul_round_sum`] with no factor: `out = round(d)` and Σ d returned, summed as
/// [`crate::simd::sum`] sums.
pub fn round_sum(s: crate::isa::Avx512Bf16, d: &[f32], out: &mut [u16]) -> f32 {
    assert_eq!(d.len(), out.len(), "round_sum: lengths");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the slices hold d.len() values; the token proves the instructions.
    return unsafe { x86::round_sum::<false>(s, d, &[], out) };
    #[cfg(not(target_arch = "x86_64"))]
    s.absent()
}

/// The training forward's GELU epilogue in mixed precision: `a[j] = bf(gelu(z[j]))` and
/// `gz[j] = bf(gelu'(z[j]))`, with gelu and gelu' computed in `f32` exactly as
/// [`crate::simd::gelu_keep_tile`] computes them (the same operations, so the same values before
/// rounding) and rounded by `VCVTNEPS2BF16` while in registers. `z` is left as it was.
pub fn gelu_keep_round(s: crate::isa::Avx512Bf16, z: &[f32], gz: &mut [u16], a: &mut [u16]) {
    assert!(z.len() == gz.len() && z.len() == a.len(), "gelu_keep_round: lengths");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the slices hold z.len() values; the token proves the instructions.
    unsafe {
        x86::gelu_keep_round(s, z, gz, a)
    };
    #[cfg(not(target_arch = "x86_64"))]
    s.absent()
}

/// What C holds before the pair product is added to it.
#[derive(Clone, Copy, Debug)]
pub enum PairInit<'a> {
    /// `C ← A·B`.
    Zero,
    /// `C ← C + A·B`.
    Accumulate,
    /// `C[i, j] ← bias[j] + (A·B)[i, j]` (one bias per column, as a row product's).
    ColBias(&'a [f32]),
    /// `C[i, j] ← bias[i] + (A·B)[i, j]` (one bias per row, as a column product's, whose rows
    /// are features).
    RowBias(&'a [f32]),
}

/// `C ← A·B` (plus C or a bias, as `init` says) from the pairs of A and B: `a` is m × ⌈k/2⌉
/// (A's pairs along k, any strides), `b` is ⌈k/2⌉ × n (B's pairs, columns contiguous), `c` is
/// m × n `f32` with contiguous columns. Every element of C is one chain of `VDPBF16PS` steps
/// over the pairs in ascending order, started from zero, C or the bias, whatever the tile or
/// the thread: the same bits on every run. The token proves the CPU has the instruction; ask
/// [`crate::isa::Avx512Bf16::detect`] for it, and tell the user when there is none.
pub fn gemm_pairs(s: crate::isa::Avx512Bf16, a: MatRef<u32>, b: MatRef<u32>, c: MatMut<f32>, init: PairInit) {
    let (m, kq, n) = (a.rows(), a.cols(), b.cols());
    assert!(
        b.rows() == kq && c.rows() == m && c.cols() == n,
        "gemm_pairs: {m}×{kq} pairs times {}×{n} into {}×{}",
        b.rows(),
        c.rows(),
        c.cols()
    );
    assert!(b.strides().1 == 1 && c.strides().1 == 1, "gemm_pairs: B's and C's columns must be contiguous");
    match init {
        PairInit::ColBias(v) => assert_eq!(v.len(), n, "gemm_pairs: one bias per column"),
        PairInit::RowBias(v) => assert_eq!(v.len(), m, "gemm_pairs: one bias per row"),
        PairInit::Zero | PairInit::Accumulate => {}
    }
    if m == 0 || n == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    x86::gemm_pairs(s, a, b, c, init);
    // Off x86-64 the token cannot exist.
    #[cfg(not(target_arch = "x86_64"))]
    s.absent()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::PairInit;
    use crate::isa::Avx512Bf16;
    use crate::mat::{MatMut, MatRef};
    use std::arch::x86_64::*;

    /// Where the accumulators start.
    #[derive(Clone, Copy)]
    pub(super) enum Start {
        Zero,
        C,
        ColBias(*const f32),
        RowBias(*const f32),
    }

    /// C (m × n) = A (m × kq pairs, any strides) · B (kq × n pairs, rows `rsb` apart) + start.
    pub(super) struct Problem {
        pub m: usize,
        pub kq: usize,
        pub n: usize,
        pub a: *const u32,
        pub rsa: usize,
        pub csa: usize,
        pub b: *const u32,
        pub rsb: usize,
        pub c: *mut f32,
        pub rsc: usize,
        pub start: Start,
    }

    /// [`super::gemm_pairs`] once its shapes are checked and C is not empty.
    pub(super) fn gemm_pairs(
        s: Avx512Bf16,
        a: MatRef<u32>,
        b: MatRef<u32>,
        mut c: MatMut<f32>,
        init: PairInit,
    ) {
        let (m, kq, n) = (a.rows(), a.cols(), b.cols());
        let start = match init {
            PairInit::Zero => Start::Zero,
            PairInit::Accumulate => Start::C,
            PairInit::ColBias(v) => Start::ColBias(v.as_ptr()),
            PairInit::RowBias(v) => Start::RowBias(v.as_ptr()),
        };
        let ((rsa, csa), rsb, rsc) = (a.strides(), b.strides().0, c.strides().0);
        let p =
            Problem { m, kq, n, a: a.as_ptr(), rsa, csa, b: b.as_ptr(), rsb, c: c.as_mut_ptr(), rsc, start };
        // SAFETY: the views lie in their buffers and C is a mutable borrow, so overlaps neither
        // operand; the token proves the instructions.
        unsafe {
            match n {
                0..=32 => product::<8, 2>(s, &p),
                33..=96 => product::<4, 6>(s, &p),
                _ => product::<4, 4>(s, &p),
            }
        }
    }

    /// Pairs per sweep along k: a 6-vector panel of B (96 columns) is 48 KB at 128 pairs, which
    /// stays in L2 for every block of rows; a longer k adds each sweep into what the last stored.
    const SWEEP: usize = 128;

    /// C's columns in panels of NV vectors of 16, rows MR at a time (the last few in blocks of 4,
    /// 2 and 1), k in sweeps of [`SWEEP`] pairs.
    ///
    /// # Safety
    /// The problem's pointers address every element its shapes and strides imply; C overlaps
    /// neither operand.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(super) unsafe fn product<const MR: usize, const NV: usize>(_s: Avx512Bf16, p: &Problem) {
        let mut q0 = 0;
        let mut start = p.start;
        loop {
            let kq = (p.kq - q0).min(SWEEP);
            let mut j = 0;
            while j < p.n {
                let w = (p.n - j).min(16 * NV);
                let masks: [__mmask16; NV] = std::array::from_fn(|v| lanes(w.saturating_sub(16 * v)));
                let mut i = 0;
                while i < p.m {
                    let left = p.m - i;
                    let rows = [MR, 4, 2, 1].into_iter().find(|&r| r <= left).unwrap_or(1);
                    let t = Tile {
                        kq,
                        a: p.a.wrapping_add(i * p.rsa + q0 * p.csa),
                        rsa: p.rsa,
                        csa: p.csa,
                        b: p.b.wrapping_add(q0 * p.rsb + j),
                        rsb: p.rsb,
                        c: p.c.wrapping_add(i * p.rsc + j),
                        rsc: p.rsc,
                        start: match start {
                            Start::ColBias(v) => Start::ColBias(v.wrapping_add(j)),
                            Start::RowBias(v) => Start::RowBias(v.wrapping_add(i)),
                            st => st,
                        },
                    };
                    // SAFETY: rows [i, i + rows) and the panel's w columns are inside A, B and C.
                    unsafe {
                        match rows {
                            r if r == MR => tile::<MR, NV>(&t, &masks),
                            4 => tile::<4, NV>(&t, &masks),
                            2 => tile::<2, NV>(&t, &masks),
                            _ => tile::<1, NV>(&t, &masks),
                        }
                    }
                    i += rows;
                }
                j += 16 * NV;
            }
            q0 += kq;
            if q0 >= p.kq {
                break;
            }
            start = Start::C;
        }
    }

    /// One block of C: R rows, V vectors of 16 columns (the lanes in `masks`), `kq` pairs.
    struct Tile {
        kq: usize,
        a: *const u32,
        rsa: usize,
        csa: usize,
        b: *const u32,
        rsb: usize,
        c: *mut f32,
        rsc: usize,
        start: Start,
    }

    /// The first `n` (≤ 16) lanes.
    #[inline(always)]
    fn lanes(n: usize) -> __mmask16 {
        if n >= 16 {
            0xFFFF
        } else {
            ((1u32 << n) - 1) as __mmask16
        }
    }

    /// acc[r][v] starts as the tile's start says, then for each pair q:
    /// acc[r][v] += A's pair (r, q) broadcast · B's pairs (q, vector v), by `VDPBF16PS`.
    ///
    /// # Safety
    /// Rows 0..R of A and C and the lanes in `masks` of B's kq rows and of C are inside their
    /// buffers.
    #[inline(always)]
    unsafe fn tile<const R: usize, const V: usize>(t: &Tile, masks: &[__mmask16; V]) {
        let Tile { kq, a, rsa, csa, b, rsb, c, rsc, start } = *t;
        // SAFETY: (every access below) inside the tile, as the caller promises; partial vectors
        // touch only their masks' lanes.
        unsafe {
            // Plain loops, not `array::from_fn`: a closure does not inherit the target features,
            // so its intrinsics become calls passing vectors through memory.
            let mut acc = [[_mm512_setzero_ps(); V]; R];
            for (r, row) in acc.iter_mut().enumerate() {
                for (v, x) in row.iter_mut().enumerate() {
                    *x = match start {
                        Start::Zero => _mm512_setzero_ps(),
                        Start::C => _mm512_maskz_loadu_ps(masks[v], c.add(r * rsc + 16 * v)),
                        Start::ColBias(bias) => _mm512_maskz_loadu_ps(masks[v], bias.add(16 * v)),
                        Start::RowBias(bias) => _mm512_set1_ps(*bias.add(r)),
                    };
                }
            }
            for q in 0..kq {
                let bq = b.add(q * rsb);
                let mut bv = [std::mem::transmute::<__m512i, __m512bh>(_mm512_setzero_si512()); V];
                for (v, x) in bv.iter_mut().enumerate() {
                    *x = std::mem::transmute::<__m512i, __m512bh>(_mm512_maskz_loadu_epi32(
                        masks[v],
                        bq.add(16 * v) as _,
                    ));
                }
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(
                        *a.add(r * rsa + q * csa) as i32,
                    ));
                    for (x, &bv) in row.iter_mut().zip(&bv) {
                        *x = _mm512_dpbf16_ps(*x, av, bv);
                    }
                }
            }
            for (r, row) in acc.iter().enumerate() {
                for (v, &x) in row.iter().enumerate() {
                    _mm512_mask_storeu_ps(c.add(r * rsc + 16 * v), masks[v], x);
                }
            }
        }
    }

    /// 16 lanes of bf16 (`VCVTNEPS2BF16`) widened to the low halves of 16 `u32`s.
    ///
    /// # Safety
    /// The CPU must have AVX-512F and AVX512_BF16 (the caller enables them).
    #[inline(always)]
    unsafe fn low_halves(x: __m512) -> __m512i {
        // SAFETY: register operations only, on a CPU with the instructions (the caller's promise).
        unsafe { _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(x))) }
    }

    /// [`super::pack_pairs`] for k contiguous: dst (q, j) at `dst + q + j·dcs` from src (p, j) at
    /// `src + p + j·cs`: each column's k values rounded in order, 32 at a time.
    ///
    /// # Safety
    /// The views lie in their buffers.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(super) unsafe fn pack_along_k(
        _s: Avx512Bf16,
        src: *const f32,
        k: usize,
        n: usize,
        cs: usize,
        dst: *mut u32,
        dcs: usize,
    ) {
        for j in 0..n {
            let (col, out) = (src.wrapping_add(j * cs), dst.wrapping_add(j * dcs));
            let mut p = 0;
            while p + 32 <= k {
                // SAFETY: values p..p + 32 of the column, pairs p/2..p/2 + 16 of dst's.
                unsafe {
                    let (first, second) = (_mm512_loadu_ps(col.add(p)), _mm512_loadu_ps(col.add(p + 16)));
                    let words = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(second, first));
                    _mm512_storeu_si512(out.add(p / 2) as _, words);
                }
                p += 32;
            }
            while p < k {
                let (lo, hi) = (lanes(k - p), lanes((k - p).saturating_sub(16)));
                // SAFETY: the lanes in the masks are values p.. of the column (k of them), and
                // the ⌈(k − p)/2⌉ pairs written from q = p/2 are inside dst's column.
                unsafe {
                    let first = _mm512_maskz_loadu_ps(lo, col.add(p));
                    let second = _mm512_maskz_loadu_ps(hi, col.add(p + 16));
                    // Lanes 0..15 of the result are `first`'s rounded values, 16..31 `second`'s.
                    let words = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(second, first));
                    _mm512_mask_storeu_epi32(out.add(p / 2) as _, lanes((k - p).div_ceil(2)), words);
                }
                p += 32;
            }
        }
    }

    /// [`super::gelu_keep_round`]: 16 values at a time through the scalar GELU (which LLVM
    /// turns into one pass over the 16 lanes, as in `simd::gelu_keep_tile`), then rounded; the
    /// last few one by one.
    ///
    /// # Safety
    /// z, gz and a hold z.len() values.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma")]
    pub(super) unsafe fn gelu_keep_round(_s: Avx512Bf16, z: &[f32], gz: &mut [u16], a: &mut [u16]) {
        use crate::gelu::{gelu_and_grad_with, Fused};
        let mut blocks = z.chunks_exact(16);
        let mut i = 0;
        for blk in &mut blocks {
            let (mut av, mut gv) = ([0f32; 16], [0f32; 16]);
            for ((&z, a), g) in blk.iter().zip(&mut av).zip(&mut gv) {
                (*a, *g) = gelu_and_grad_with::<f32, Fused>(z);
            }
            // SAFETY: values i..i + 16 of gz and a; the arrays hold 16 floats.
            unsafe {
                let ha = _mm512_cvtneps_pbh(_mm512_loadu_ps(av.as_ptr()));
                let hg = _mm512_cvtneps_pbh(_mm512_loadu_ps(gv.as_ptr()));
                _mm256_storeu_si256(a.as_mut_ptr().add(i) as _, std::mem::transmute::<__m256bh, __m256i>(ha));
                _mm256_storeu_si256(
                    gz.as_mut_ptr().add(i) as _,
                    std::mem::transmute::<__m256bh, __m256i>(hg),
                );
            }
            i += 16;
        }
        for (j, &z) in blocks.remainder().iter().enumerate() {
            let (av, gv) = gelu_and_grad_with::<f32, Fused>(z);
            (a[i + j], gz[i + j]) = (super::round(av), super::round(gv));
        }
    }

    /// 16 bf16 values widened to `f32`, the lanes of `m` (others zero).
    ///
    /// # Safety
    /// The lanes of `m` from `p` are readable.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    #[inline]
    unsafe fn widen16(m: __mmask16, p: *const u16) -> __m512 {
        // SAFETY: the caller's promise.
        let h = unsafe { _mm256_maskz_loadu_epi16(m, p as _) };
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
    }

    /// [`super::mul_round_add_rows`] (`SCALE`: the factors g) or [`super::round_add_rows`] (g
    /// unread), columns in groups of up to six vectors of 16 whose sums stay in registers down
    /// all the rows.
    ///
    /// # Safety
    /// As checked by the caller: d, out (and with `SCALE`, g) of one length, a whole number of
    /// rows of acc.len().
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(super) unsafe fn round_add_rows<const SCALE: bool>(
        _s: Avx512Bf16,
        d: &[f32],
        g: &[u16],
        acc: &mut [f32],
        out: &mut [u16],
    ) {
        let n = acc.len();
        let mut j0 = 0;
        while j0 < n {
            let w = (n - j0).min(96);
            // SAFETY: columns j0..j0 + w of every row and of acc.
            unsafe {
                match w.div_ceil(16) {
                    1 => add_rows_group::<1, SCALE>(d, g, acc, out, j0, w),
                    2 => add_rows_group::<2, SCALE>(d, g, acc, out, j0, w),
                    3 => add_rows_group::<3, SCALE>(d, g, acc, out, j0, w),
                    4 => add_rows_group::<4, SCALE>(d, g, acc, out, j0, w),
                    5 => add_rows_group::<5, SCALE>(d, g, acc, out, j0, w),
                    _ => add_rows_group::<6, SCALE>(d, g, acc, out, j0, w),
                }
            }
            j0 += w;
        }
    }

    /// Columns j0..j0 + w (V vectors, the last one partial unless w = 16·V) of
    /// [`round_add_rows`].
    ///
    /// # Safety
    /// The caller's lengths; j0 + w ≤ acc.len().
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    #[inline]
    unsafe fn add_rows_group<const V: usize, const SCALE: bool>(
        d: &[f32],
        g: &[u16],
        acc: &mut [f32],
        out: &mut [u16],
        j0: usize,
        w: usize,
    ) {
        let n = acc.len();
        let mut masks = [0 as __mmask16; V];
        let mut sums = [_mm512_setzero_ps(); V];
        for v in 0..V {
            masks[v] = lanes(w - 16 * v);
            // SAFETY: the lanes of the mask are columns of acc.
            sums[v] = unsafe { _mm512_maskz_loadu_ps(masks[v], acc.as_ptr().add(j0 + 16 * v)) };
        }
        for r in 0..d.len() / n {
            for v in 0..V {
                let at = r * n + j0 + 16 * v;
                // SAFETY: the lanes of masks[v] (all of them for a whole vector) are columns of
                // row r, inside d, g and out.
                unsafe {
                    let (dp, gp, op) = (d.as_ptr().add(at), g.as_ptr().add(at), out.as_mut_ptr().add(at));
                    if masks[v] == 0xFFFF {
                        let mut p = _mm512_loadu_ps(dp);
                        if SCALE {
                            let gw = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(
                                _mm256_loadu_si256(gp as _),
                            )));
                            p = _mm512_mul_ps(p, gw);
                        }
                        sums[v] = _mm512_add_ps(sums[v], p);
                        _mm256_storeu_si256(
                            op as _,
                            std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(p)),
                        );
                    } else {
                        let mut p = _mm512_maskz_loadu_ps(masks[v], dp);
                        if SCALE {
                            p = _mm512_mul_ps(p, widen16(masks[v], gp));
                        }
                        sums[v] = _mm512_add_ps(sums[v], p);
                        let h = std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(p));
                        _mm256_mask_storeu_epi16(op as _, masks[v], h);
                    }
                }
            }
        }
        for v in 0..V {
            // SAFETY: as the loads above.
            unsafe { _mm512_mask_storeu_ps(acc.as_mut_ptr().add(j0 + 16 * v), masks[v], sums[v]) };
        }
    }

    /// [`super::mul_round_sum`] (`SCALE`) or [`super::round_sum`] (g unread): eight lanes of
    /// running sums, as [`crate::simd::sum`] keeps them.
    ///
    /// # Safety
    /// d and out (and with `SCALE`, g) hold d.len() values.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(super) unsafe fn round_sum<const SCALE: bool>(
        _s: Avx512Bf16,
        d: &[f32],
        g: &[u16],
        out: &mut [u16],
    ) -> f32 {
        let (len, mut acc) = (d.len(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 8 <= len {
            // SAFETY: values i..i + 8 of d, g and out.
            unsafe {
                let mut p = _mm256_loadu_ps(d.as_ptr().add(i));
                if SCALE {
                    let gw = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(
                        _mm_loadu_si128(g.as_ptr().add(i) as _),
                    )));
                    p = _mm256_mul_ps(p, gw);
                }
                acc = _mm256_add_ps(acc, p);
                let h = std::mem::transmute::<__m128bh, __m128i>(_mm256_cvtneps_pbh(p));
                _mm_storeu_si128(out.as_mut_ptr().add(i) as _, h);
            }
            i += 8;
        }
        if i < len {
            let m = (lanes(len - i) & 0xFF) as __mmask8;
            // SAFETY: the lanes of m are values i.. of d, g and out.
            unsafe {
                let mut p = _mm256_maskz_loadu_ps(m, d.as_ptr().add(i));
                if SCALE {
                    let gw = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(
                        _mm_maskz_loadu_epi16(m, g.as_ptr().add(i) as _),
                    )));
                    p = _mm256_mul_ps(p, gw);
                }
                // Lanes past the run add +0, which changes no sum: a lane's sum starts at +0
                // and is never −0 (only −0 + −0 is).
                acc = _mm256_add_ps(acc, p);
                let h = std::mem::transmute::<__m128bh, __m128i>(_mm256_cvtneps_pbh(p));
                _mm_mask_storeu_epi16(out.as_mut_ptr().add(i) as _, m, h);
            }
        }
        let mut l = [0f32; 8];
        // SAFETY: eight floats into an array of eight.
        unsafe { _mm256_storeu_ps(l.as_mut_ptr(), acc) };
        ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))
    }

    /// The 16 × 16 matrix of 32-bit words whose rows are `r` transposed in place: lanes
    /// interleaved by 32 and 64 bits within each 128-bit lane, then the 128-bit lanes of the
    /// four groups of four rows exchanged. 64 shuffles for 256 words.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn transpose16(r: &mut [__m512i; 16]) {
        // After this pass row 4g + w holds, in its 128-bit lane L, word 4L + w of rows 4g..4g + 4.
        let mut t = *r;
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
        }
        for g in 0..4 {
            let b = 4 * g;
            r[b] = _mm512_unpacklo_epi64(t[b], t[b + 2]);
            r[b + 1] = _mm512_unpackhi_epi64(t[b], t[b + 2]);
            r[b + 2] = _mm512_unpacklo_epi64(t[b + 1], t[b + 3]);
            r[b + 3] = _mm512_unpackhi_epi64(t[b + 1], t[b + 3]);
        }
        // Column 4L + w is lane L of rows w, 4 + w, 8 + w and 12 + w.
        let u = *r;
        for w in 0..4 {
            let (p0, p1) =
                (_mm512_shuffle_i32x4::<0x44>(u[w], u[4 + w]), _mm512_shuffle_i32x4::<0xEE>(u[w], u[4 + w]));
            let (q0, q1) = (
                _mm512_shuffle_i32x4::<0x44>(u[8 + w], u[12 + w]),
                _mm512_shuffle_i32x4::<0xEE>(u[8 + w], u[12 + w]),
            );
            r[w] = _mm512_shuffle_i32x4::<0x88>(p0, q0);
            r[4 + w] = _mm512_shuffle_i32x4::<0xDD>(p0, q0);
            r[8 + w] = _mm512_shuffle_i32x4::<0x88>(p1, q1);
            r[12 + w] = _mm512_shuffle_i32x4::<0xDD>(p1, q1);
        }
    }

    /// Stores the first `qn` of the 16 transposed rows of a block: pairs q0..q0 + qn of the
    /// columns j0.. in `cols` (its rows past the columns read zero).
    ///
    /// # Safety
    /// Rows q0..q0 + qn and the lanes of `cols` from column j0 are inside dst (rows `drs` apart).
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn store_block(
        mut rows: [__m512i; 16],
        dst: *mut u32,
        drs: usize,
        (q0, qn): (usize, usize),
        j0: usize,
        cols: __mmask16,
    ) {
        transpose16(&mut rows);
        for (i, row) in rows.iter().take(qn).enumerate() {
            // SAFETY: the caller's promise.
            unsafe { _mm512_mask_storeu_epi32(dst.add((q0 + i) * drs + j0) as _, cols, *row) };
        }
    }

    /// Columns whose k is contiguous (column j at `src + j·cs`), read as vectors of pairs.
    trait ColumnPairs {
        /// Pairs q0..q0 + qn (≤ 16) of column j as the words of one vector, the rest zero.
        ///
        /// # Safety
        /// Values 2q0..2(q0 + qn) of column j are inside the source; the caller enables
        /// AVX-512F, BW and AVX512_BF16.
        unsafe fn words(&self, j: usize, q0: usize, qn: usize) -> __m512i;
        /// The last pair of an odd k (value k − 1 and a zero) of column j.
        ///
        /// # Safety
        /// Value k − 1 of column j is inside the source.
        unsafe fn last(&self, j: usize, k: usize) -> u32;
    }

    /// `f32` columns: each pair rounded (`VCVTNE2PS2BF16`).
    struct F32Columns(*const f32, usize);

    impl ColumnPairs for F32Columns {
        #[inline(always)]
        unsafe fn words(&self, j: usize, q0: usize, qn: usize) -> __m512i {
            let (lo, hi) = (lanes(2 * qn), lanes((2 * qn).saturating_sub(16)));
            // SAFETY: the caller's promise; the masks cover floats 2q0..2(q0 + qn).
            unsafe {
                let col = self.0.add(j * self.1 + 2 * q0);
                let (first, second) =
                    (_mm512_maskz_loadu_ps(lo, col), _mm512_maskz_loadu_ps(hi, col.add(16)));
                // Word w: the rounded floats 2w and 2w + 1 (`first`'s in words 0..8).
                std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(second, first))
            }
        }

        #[inline(always)]
        unsafe fn last(&self, j: usize, k: usize) -> u32 {
            // SAFETY: the caller's promise.
            super::pair(unsafe { *self.0.add(k - 1 + j * self.1) }, 0.0)
        }
    }

    /// bf16 columns: each whole pair is already one 32-bit word.
    struct Bf16Columns(*const u16, usize);

    impl ColumnPairs for Bf16Columns {
        #[inline(always)]
        unsafe fn words(&self, j: usize, q0: usize, qn: usize) -> __m512i {
            // SAFETY: the caller's promise; the mask covers words q0..q0 + qn.
            unsafe { _mm512_maskz_loadu_epi32(lanes(qn), self.0.add(j * self.1 + 2 * q0) as _) }
        }

        #[inline(always)]
        unsafe fn last(&self, j: usize, k: usize) -> u32 {
            // SAFETY: the caller's promise.
            unsafe { *self.0.add(k - 1 + j * self.1) as u32 }
        }
    }

    /// k × n pairs of `src`'s columns into dst rows of contiguous columns (`drs` apart): blocks
    /// of up to 16 columns × 16 whole pairs, read as 16 vectors of words and transposed
    /// ([`transpose16`]); an odd k's last pair one by one.
    ///
    /// # Safety
    /// `src` holds k values of each of its n columns; dst holds ⌈k/2⌉ rows of n.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    #[inline]
    unsafe fn columns_to_rows(src: impl ColumnPairs, k: usize, n: usize, dst: *mut u32, drs: usize) {
        let whole = k / 2;
        for j0 in (0..n).step_by(16) {
            let jn = (n - j0).min(16);
            for q0 in (0..whole).step_by(16) {
                let qn = (whole - q0).min(16);
                let mut rows = [_mm512_setzero_si512(); 16];
                for (i, row) in rows.iter_mut().take(jn).enumerate() {
                    // SAFETY: pairs q0..q0 + qn ≤ k/2 of column j0 + i < n.
                    *row = unsafe { src.words(j0 + i, q0, qn) };
                }
                // SAFETY: pairs q0..q0 + qn ≤ k/2 and columns j0..j0 + jn ≤ n of dst.
                unsafe { store_block(rows, dst, drs, (q0, qn), j0, lanes(jn)) };
            }
        }
        if k % 2 == 1 {
            for j in 0..n {
                // SAFETY: value k − 1 of column j is inside src, (k/2, j) inside dst.
                unsafe { *dst.add(whole * drs + j) = src.last(j, k) };
            }
        }
    }

    /// [`super::pack_pairs`] with k contiguous in src (column j at `src + j·cs`) into dst rows
    /// of contiguous columns (`drs` apart): each column's floats rounded into pairs, transposed
    /// 16 × 16 at a time ([`columns_to_rows`]).
    ///
    /// # Safety
    /// The views lie in their buffers.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(super) unsafe fn pack_by_transpose(
        _s: Avx512Bf16,
        src: *const f32,
        k: usize,
        n: usize,
        cs: usize,
        dst: *mut u32,
        drs: usize,
    ) {
        // SAFETY: the caller's promise.
        unsafe { columns_to_rows(F32Columns(src, cs), k, n, dst, drs) }
    }

    /// [`super::pack_pairs_bf16`] with k contiguous in src (column j at `src + j·cs`) into dst
    /// rows of contiguous columns: each whole pair is one 32-bit word of src, so this is a
    /// transpose of words ([`columns_to_rows`]).
    ///
    /// # Safety
    /// The views lie in their buffers.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(super) unsafe fn words_by_transpose(
        _s: Avx512Bf16,
        src: *const u16,
        k: usize,
        n: usize,
        cs: usize,
        dst: *mut u32,
        drs: usize,
    ) {
        // SAFETY: the caller's promise.
        unsafe { columns_to_rows(Bf16Columns(src, cs), k, n, dst, drs) }
    }

    /// Rows of a matrix whose columns are contiguous (row i at `src + i·rs`), two of them
    /// interleaved into pairs.
    trait RowPairs {
        /// Columns j..j + 16 of the rows at offsets `lo` and `hi` as 16 pairs (words).
        ///
        /// # Safety
        /// Those columns are inside the source; the caller enables AVX-512F, BW, VL and
        /// AVX512_BF16.
        unsafe fn pairs16(&self, lo: usize, hi: usize) -> __m512i;
        /// The lanes of `m` of the row at offset `at`, as bf16 values in the low halves of
        /// 32-bit lanes (the others zero).
        ///
        /// # Safety
        /// As [`RowPairs::pairs16`], for those lanes.
        unsafe fn low_halves(&self, m: __mmask16, at: usize) -> __m512i;
    }

    /// `f32` rows, rounded as they are paired.
    struct F32Rows {
        src: *const f32,
        /// Word j of a pair row: value j of the low row then of the high row, which
        /// `VCVTNE2PS2BF16` leaves in halves 0..16 and 16..32.
        interleave: __m512i,
    }

    impl RowPairs for F32Rows {
        #[inline(always)]
        unsafe fn pairs16(&self, lo: usize, hi: usize) -> __m512i {
            // SAFETY: the caller's promise.
            unsafe {
                let (l, h) = (_mm512_loadu_ps(self.src.add(lo)), _mm512_loadu_ps(self.src.add(hi)));
                let halves = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(h, l));
                _mm512_permutexvar_epi16(self.interleave, halves)
            }
        }

        #[inline(always)]
        unsafe fn low_halves(&self, m: __mmask16, at: usize) -> __m512i {
            // SAFETY: the caller's promise.
            unsafe { low_halves(_mm512_maskz_loadu_ps(m, self.src.add(at))) }
        }
    }

    /// bf16 rows.
    struct Bf16Rows(*const u16);

    impl RowPairs for Bf16Rows {
        #[inline(always)]
        unsafe fn pairs16(&self, lo: usize, hi: usize) -> __m512i {
            // SAFETY: the caller's promise.
            unsafe {
                let l = _mm512_cvtepu16_epi32(_mm256_loadu_si256(self.0.add(lo) as _));
                let h = _mm512_cvtepu16_epi32(_mm256_loadu_si256(self.0.add(hi) as _));
                _mm512_or_si512(l, _mm512_slli_epi32(h, 16))
            }
        }

        #[inline(always)]
        unsafe fn low_halves(&self, m: __mmask16, at: usize) -> __m512i {
            // SAFETY: the caller's promise.
            unsafe { _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, self.0.add(at) as _)) }
        }
    }

    /// dst (q, j) at `dst + q·drs + j` from rows 2q and 2q + 1 of src (`rs` apart; a last odd
    /// row paired with zeros), 16 columns at a time: whole vectors without masks, the last
    /// few masked.
    ///
    /// # Safety
    /// src holds k rows of n values; dst holds ⌈k/2⌉ rows of n.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    #[inline]
    unsafe fn interleave(src: impl RowPairs, k: usize, n: usize, rs: usize, dst: *mut u32, drs: usize) {
        for q in 0..k.div_ceil(2) {
            let (lo, out) = (2 * q * rs, dst.wrapping_add(q * drs));
            let has_hi = 2 * q + 1 < k;
            let mut j = 0;
            while has_hi && j + 16 <= n {
                // SAFETY: columns j..j + 16 of rows 2q and 2q + 1, and of dst's row q.
                unsafe { _mm512_storeu_si512(out.add(j) as _, src.pairs16(lo + j, lo + rs + j)) };
                j += 16;
            }
            while j < n {
                let m = lanes(n - j);
                // SAFETY: the lanes in m are columns j.. of rows 2q and (if it exists) 2q + 1,
                // and of dst's row q.
                unsafe {
                    let l = src.low_halves(m, lo + j);
                    let h = if has_hi { src.low_halves(m, lo + rs + j) } else { _mm512_setzero_si512() };
                    _mm512_mask_storeu_epi32(
                        out.add(j) as _,
                        m,
                        _mm512_or_si512(l, _mm512_slli_epi32(h, 16)),
                    );
                }
                j += 16;
            }
        }
    }

    /// [`super::pack_pairs`] for contiguous rows ([`interleave`], rounding as it pairs).
    ///
    /// # Safety
    /// The views lie in their buffers.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(super) unsafe fn pack_two_rows(
        _s: Avx512Bf16,
        src: *const f32,
        k: usize,
        n: usize,
        rs: usize,
        dst: *mut u32,
        drs: usize,
    ) {
        let order: [i16; 32] = std::array::from_fn(|h| (h / 2 + 16 * (h % 2)) as i16);
        // SAFETY: 32 i16s read from an array of 32; then the caller's promise.
        unsafe {
            let interleave_order = _mm512_loadu_si512(order.as_ptr() as _);
            interleave(F32Rows { src, interleave: interleave_order }, k, n, rs, dst, drs)
        }
    }

    /// [`super::pack_pairs_bf16`] for contiguous rows ([`interleave`] of bf16 values).
    ///
    /// # Safety
    /// The views lie in their buffers.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(super) unsafe fn interleave_rows(
        _s: Avx512Bf16,
        src: *const u16,
        k: usize,
        n: usize,
        rs: usize,
        dst: *mut u32,
        drs: usize,
    ) {
        // SAFETY: the caller's promise.
        unsafe { interleave(Bf16Rows(src), k, n, rs, dst, drs) }
    }
}
