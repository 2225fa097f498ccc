//! The GEMMs of the fused kernels: packing-free direct paths for the small shapes of this model,
//! written once over the vector interface [`Simd`] and compiled for AVX-512, AVX2 + FMA and NEON;
//! matrixmultiply for everything else (and for the `generic` level and `f64`).
//!
//! The mixer's products are tall and thin: m = 128–896 items a chunk against a weight matrix of
//! at most 96×96. matrixmultiply copies (packs) both operands into its own layout before every
//! product, which at k = 28 costs about as much as the arithmetic. When **B's rows and C's rows
//! are contiguous**, no packing is needed: `C[i, j..j+L] += A[i, p] · B[p, j..j+L]` is one
//! broadcast and one fused multiply-add per L outputs (L lanes), with B (≤ 36 KB) staying in
//! cache and A read as it lies, through any strides. [`gemm`] takes that path when it applies,
//! directly or for the transposed problem Cᵀ = Bᵀ·Aᵀ (the column products, whose C has contiguous
//! *columns*), or the dot-product path when both operands are contiguous along k.
//!
//! Every output element is one chain of fused multiply-adds over p in ascending order, started
//! from zero, C or the bias, whatever the tile shape, chunk or instruction set: the direct paths
//! give bitwise the same results on AVX-512, AVX2 and NEON and on any thread count. (The dot path
//! keeps 16 partial sums per element, added in [`Simd::sum16`]'s order on every set.)

use crate::isa::Simd;
use crate::mat::{MatMut, MatRef};
use crate::real::Real;
use crate::simd::{self, level, Level};
use std::any::TypeId;

/// The longest k the direct path takes in one sweep. It walks C in panels of NV vectors and
/// reads, for each block of rows, the k × (panel width) panel of B under it, which should stay
/// in cache for all the row blocks: k ≤ 256 keeps a 32-column panel within a 32 KB L1 and a
/// 96-column one within L2. A longer k is done in sweeps of 256, each adding into C what the
/// last one stored (exact: the same sums, in the same order).
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

/// `C ← A·B` (plus C or a bias, as `init` says), through a direct path for `f32` when the
/// layout and the CPU allow (see the module docs), otherwise [`Real::gemm_fallback`]. A `c`
/// marked [`MatMut::cold`] has its rows prefetched for writing just before each block of them.
pub fn gemm<T: Real>(a: MatRef<T>, b: MatRef<T>, mut c: MatMut<T>, init: Init<T>) {
    let (m, _, n) = crate::mat::product_shape(&a, &b, &c);
    if let Init::Bias(bias) = init {
        assert_eq!(bias.len(), n, "gemm: one bias per column of C");
    }
    if m == 0 || n == 0 {
        return;
    }
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        if let Some(path) = Path::of(&a, &b, &mut c, init) {
            // SAFETY: the views' elements lie in their buffers (checked or promised when they
            // were made) and C overlaps neither operand; `Path::of` read the layout off them.
            unsafe { path.run::<false>() };
            return;
        }
    }
    let beta = match init {
        Init::Zero => T::ZERO,
        Init::Accumulate => T::ONE,
        Init::Bias(v) => {
            let ((rsc, csc), p) = (c.strides(), c.as_mut_ptr());
            for i in 0..m {
                for (j, &bj) in v.iter().enumerate() {
                    // SAFETY: (i, j) is inside the view.
                    unsafe { *p.add(i * rsc + j * csc) = bj };
                }
            }
            T::ONE
        }
    };
    T::gemm_fallback(a, b, beta, c)
}

/// The product that makes dz in an MLP's backward, with the backward through GELU fused into
/// its stores (`mlp_backward`):
///
/// ```text
/// C ← (A·B) ⊙ G            dz = (dy·K2ᵀ) ⊙ gelu'(z)
/// db[j] += Σᵢ C[i, j]      dc1 = Σ over the items of dz
/// ```
///
/// G is laid out as C, whose rows or columns must be contiguous. C's rows contiguous (a row
/// MLP's hidden tile): each column's sum adds the rows in order, as
/// [`simd::mul_assign_add_rows`] does. C's columns contiguous (a column MLP's): each column's sum
/// is [`simd::mul_assign_sum`]'s, eight interleaved partial sums down the column
/// ([`simd::add_by_8`]) combined by [`simd::sum8_tree`]; `lanes` (8 per column of C) holds the
/// partial sums meanwhile. Either way the bits are those of the product followed by that pass,
/// which is what runs where no direct path takes the product (the `generic` level, `f64`). The
/// fused form saves the pass's reading and writing back dz, a hidden tensor's worth of
/// bytes each way.
pub fn gemm_dgelu<T: Real>(
    a: MatRef<T>,
    b: MatRef<T>,
    mut c: MatMut<T>,
    g: MatRef<T>,
    db: &mut [T],
    lanes: &mut [T],
) {
    let (m, _, n) = crate::mat::product_shape(&a, &b, &c);
    let (rsc, csc) = c.strides();
    assert!(
        g.rows() == m && g.cols() == n && g.strides() == (rsc, csc),
        "gemm_dgelu: G must be laid out as C"
    );
    assert!(csc == 1 || rsc == 1, "gemm_dgelu: C's rows or columns must be contiguous");
    assert_eq!(db.len(), n, "gemm_dgelu: one sum per column of C");
    let by_rows = csc == 1;
    if !by_rows {
        assert!(lanes.len() >= 8 * n, "gemm_dgelu: eight partial sums per column of C");
    }
    if m == 0 || n == 0 {
        return;
    }
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        let (gp, sums) = (g.as_ptr() as *const f32, db.as_mut_ptr() as *mut f32);
        let lanes = lanes.as_mut_ptr() as *mut f32;
        match Path::of(&a, &b, &mut c, Init::Zero) {
            Some(Path::Rows(mut d)) if by_rows => {
                d.finish = Finish::ColumnSums { g: gp, sums };
                // SAFETY: as in `gemm`; G has C's extent (same shape and strides) and `db`
                // one value per column of C.
                unsafe { Path::Rows(d).run::<true>() };
                return;
            }
            Some(Path::Transposed(mut d)) if !by_rows => {
                // Cᵀ's rows are C's columns; 8 partial sums each, zero to start.
                // SAFETY: `lanes` holds at least 8·n values (checked above).
                unsafe { std::slice::from_raw_parts_mut(lanes, 8 * n) }.fill(0.0);
                d.finish = Finish::RowLanes { g: gp, sums: lanes };
                // SAFETY: as above, and `lanes` holds 8 values for each of Cᵀ's n rows.
                unsafe { Path::Transposed(d).run::<true>() };
                for j in 0..n {
                    // SAFETY: column j's 8 partial sums and its entry of `db`, inside them.
                    unsafe { *sums.add(j) += simd::sum8_tree(&*(lanes.add(8 * j) as *const [f32; 8])) };
                }
                return;
            }
            _ => {}
        }
    }
    gemm(a, b, c.reborrow(), Init::Zero);
    let (cp, gp) = (c.as_mut_ptr(), g.as_ptr());
    if by_rows {
        // One pass over the whole tile where its rows follow each other (a row MLP's), else
        // row by row: the same sums in the same order.
        let (runs, len) = if rsc == n { (1, m * n) } else { (m, n) };
        for q in 0..runs {
            // SAFETY: run q of C and of G: `len` contiguous values inside them; C is borrowed
            // mutably, so G (a shared borrow) is another buffer.
            let (run, grun) = unsafe {
                (
                    std::slice::from_raw_parts_mut(cp.add(q * rsc), len),
                    std::slice::from_raw_parts(gp.add(q * rsc), len),
                )
            };
            simd::mul_assign_add_rows(run, grun, db);
        }
    } else {
        for (j, dbj) in db.iter_mut().enumerate() {
            // SAFETY: column j of C and of G: m contiguous values inside them.
            let (col, gcol) = unsafe {
                (
                    std::slice::from_raw_parts_mut(cp.add(j * csc), m),
                    std::slice::from_raw_parts(gp.add(j * csc), m),
                )
            };
            *dbj += simd::mul_assign_sum(col, gcol);
        }
    }
}

/// `C ← A·B` (plus C or a bias, as `init` says) and `sums[j] += Σ_p B[p, j]`, B's rows added in
/// order, as [`simd::add_rows`] adds them: a row MLP's dK2 = Aᵀ·dY with its bias gradient
/// dc2 = Σ dy, whose rows the product reads anyway (`mlp_backward`). B's rows must be
/// contiguous. Where the product's block has registers to spare for the sums (AVX-512's
/// 8 × 2 blocks, C at most 32 columns wide: MNIST's), its first block of rows adds each row of
/// B into them as it loads it; elsewhere the sums are a pass over B after the product. The bits
/// are the same either way.
pub fn gemm_colsum<T: Real>(a: MatRef<T>, b: MatRef<T>, c: MatMut<T>, init: Init<T>, sums: &mut [T]) {
    let (_, k, n) = crate::mat::product_shape(&a, &b, &c);
    let (rsb, csb) = b.strides();
    assert!(csb == 1 || n == 1, "gemm_colsum: B's rows must be contiguous");
    assert_eq!(sums.len(), n, "gemm_colsum: one sum per column of B");
    #[cfg(target_arch = "x86_64")]
    let mut c = c;
    #[cfg(target_arch = "x86_64")]
    if level() == Level::Avx512 && TypeId::of::<T>() == TypeId::of::<f32>() && k > 0 {
        if let Some(Path::Rows(mut d)) = Path::of(&a, &b, &mut c, init) {
            if d.n <= 32 {
                d.bsum = sums.as_mut_ptr() as *mut f32;
                let s = crate::isa::Avx512::detect().expect("AVX-512 level");
                // SAFETY: as in `gemm`; `sums` holds one value per column of C (checked above).
                unsafe { avx512::direct::<8, 2, false, true>(s, &d) };
                return;
            }
        }
    }
    gemm(a, b, c, init);
    let bp = b.as_ptr();
    // One pass over B's rows: the whole of B where its rows follow each other, else row by row.
    let (runs, len) = if rsb == n { (1, k * n) } else { (k, n) };
    for q in 0..runs {
        // SAFETY: run q of B: `len` contiguous values inside it.
        simd::add_rows(unsafe { std::slice::from_raw_parts(bp.add(q * rsb), len) }, sums);
    }
}

/// A read-only operand as the kernels address it: element (i, p) at `p + i·rs + p·cs`.
#[derive(Clone, Copy)]
struct Src {
    p: *const f32,
    rs: usize,
    cs: usize,
}

/// What the accumulators of a direct product start from.
#[derive(Clone, Copy)]
enum Start {
    Zero,
    /// C's current values.
    C,
    /// `bias[j]` for column j (a vector load per block).
    ColBias(*const f32),
    /// `bias[i]` for row i (a broadcast per row).
    RowBias(*const f32),
}

/// C (m×n, rows contiguous, `rsc` apart) = A (m×k, any strides) · B (k×n, rows contiguous,
/// `b.rs` apart) + what `start` says.
#[derive(Clone, Copy)]
struct Direct {
    m: usize,
    k: usize,
    n: usize,
    a: Src,
    b: Src,
    c: *mut f32,
    rsc: usize,
    start: Start,
    cold: bool,
    finish: Finish,
    /// Where B's column sums go (null: nowhere), for a kernel compiled with `SUMB`.
    bsum: *mut f32,
}

/// What a direct product does with each finished block of C: store it, or first apply the
/// backward through GELU ([`gemm_dgelu`]). G is laid out as C.
#[derive(Clone, Copy)]
enum Finish {
    Store,
    /// C ⊙= G, stored; then each column's values added into `sums[j]`, rows in order.
    ColumnSums {
        g: *const f32,
        sums: *mut f32,
    },
    /// C ⊙= G, stored; then each row's values added into that row's eight interleaved partial
    /// sums (`sums`, 8 per row), value q of the row into partial q mod 8, in order.
    RowLanes {
        g: *const f32,
        sums: *mut f32,
    },
}

/// A block's place in C, for its [`Finish`]: the product's (read through the pointer after the
/// block's k loop, so that none of it is held in registers during the loop), the block's first
/// row and column, and its width.
#[derive(Clone, Copy)]
struct At {
    finish: *const Finish,
    i: usize,
    j: usize,
    w: usize,
}

/// C (m×n, any strides) = A (m×k, rows contiguous) · B (k×n, columns contiguous) [+ C]: every
/// element a dot product over k.
#[derive(Clone, Copy)]
struct Dot {
    m: usize,
    k: usize,
    n: usize,
    a: Src,
    b: Src,
    c: *mut f32,
    rsc: usize,
    csc: usize,
    accumulate: bool,
}

/// The direct path a product takes: its own problem, the transposed problem, or dot products.
enum Path {
    Rows(Direct),
    Transposed(Direct),
    Dot(Dot),
}

impl Path {
    /// The path for an f32 product on this CPU's level, or `None` for the fallback.
    fn of<T>(a: &MatRef<T>, b: &MatRef<T>, c: &mut MatMut<T>, init: Init<T>) -> Option<Path> {
        if level() == Level::Generic {
            return None;
        }
        let (m, k, n) = (a.rows(), a.cols(), b.cols());
        let ((rsa, csa), (rsb, csb), (rsc, csc)) = (a.strides(), b.strides(), c.strides());
        let (ap, bp, cp) = (a.as_ptr() as *const f32, b.as_ptr() as *const f32, c.as_mut_ptr() as *mut f32);
        let bias = |per: fn(*const f32) -> Start| match init {
            Init::Zero => Start::Zero,
            Init::Accumulate => Start::C,
            Init::Bias(v) => per(v.as_ptr() as *const f32),
        };
        let cold = c.is_cold();
        if csb == 1 && csc == 1 {
            let (a, b) = (Src { p: ap, rs: rsa, cs: csa }, Src { p: bp, rs: rsb, cs: 1 });
            let start = bias(Start::ColBias);
            return Some(Path::Rows(Direct {
                m,
                k,
                n,
                a,
                b,
                c: cp,
                rsc,
                start,
                cold,
                finish: Finish::Store,
                bsum: std::ptr::null_mut(),
            }));
        }
        if rsa == 1 && rsc == 1 {
            // Cᵀ (n×m) = Bᵀ (n×k) · Aᵀ (k×m): Aᵀ's rows and Cᵀ's rows are contiguous.
            let (bt, at) = (Src { p: bp, rs: csb, cs: rsb }, Src { p: ap, rs: csa, cs: 1 });
            let (m, n, start) = (n, m, bias(Start::RowBias));
            let finish = Finish::Store;
            return Some(Path::Transposed(Direct {
                m,
                k,
                n,
                a: bt,
                b: at,
                c: cp,
                rsc: csc,
                start,
                cold,
                finish,
                bsum: std::ptr::null_mut(),
            }));
        }
        if csa == 1 && rsb == 1 && !matches!(init, Init::Bias(_)) {
            let (a, b) = (Src { p: ap, rs: rsa, cs: 1 }, Src { p: bp, rs: 1, cs: csb });
            let accumulate = matches!(init, Init::Accumulate);
            return Some(Path::Dot(Dot { m, k, n, a, b, c: cp, rsc, csc, accumulate }));
        }
        None
    }

    /// Runs the path with the tile shapes of this CPU's level:
    ///
    /// | level  | rows, n > 32 | rows, n ≤ 32 | transposed | registers |
    /// | ---    | ---          | ---          | ---        | ---       |
    /// | AVX-512 (16 lanes) | 4 × 6 vectors | 8 × 2 | 4 × 4 | 32 |
    /// | AVX2 (8 lanes)     | 6 × 2         | 6 × 2 | 6 × 2 | 16 |
    /// | NEON (4 lanes)     | 6 × 4         | 6 × 4 | 4 × 4 | 32 |
    ///
    /// Rows × vectors accumulators, plus a vector of B per column vector and one broadcast:
    /// each shape keeps at least 8 independent FMA chains in flight (latency 4 × 2 pipes) within
    /// the register file. Why AVX-512's three shapes differ is in [`direct`]'s docs; AVX2's 4 × 3
    /// left no register free. The dot products take blocks of 5 × 4 (then 4 × 4) on AVX-512 and
    /// 2 × 2 elsewhere (`dot`). The measurements behind each choice: `docs/performance.md`.
    ///
    /// # Safety
    /// The problem's pointers must address every element its shapes and strides imply, and C
    /// must overlap neither operand.
    unsafe fn run<const FIN: bool>(&self) {
        #[cfg(target_arch = "x86_64")]
        {
            use crate::isa::{Avx2, Avx512};
            match (level(), self) {
                (Level::Avx512, path) => {
                    let s = Avx512::detect().expect("AVX-512 level");
                    // SAFETY: the token proves the instructions; the rest is the caller's
                    // promise, passed on.
                    return unsafe {
                        match path {
                            Path::Rows(d) if d.n > 32 => avx512::direct::<4, 6, FIN, false>(s, d),
                            Path::Rows(d) => avx512::direct::<8, 2, FIN, false>(s, d),
                            Path::Transposed(d) => avx512::direct::<4, 4, FIN, false>(s, d),
                            Path::Dot(d) => avx512::dot::<5, 4, 4>(s, d),
                        }
                    };
                }
                (Level::Avx2, path) => {
                    let s = Avx2::detect().expect("AVX2 level");
                    // SAFETY: as above.
                    return unsafe {
                        match path {
                            Path::Rows(d) => avx2::direct::<6, 2, FIN, false>(s, d),
                            Path::Transposed(d) => avx2::direct::<6, 2, FIN, false>(s, d),
                            Path::Dot(d) => avx2::dot::<2, 2, 2>(s, d),
                        }
                    };
                }
                _ => {}
            }
        }
        #[cfg(target_arch = "aarch64")]
        if level() == Level::Neon {
            let s = crate::isa::Neon::detect().expect("NEON level");
            // SAFETY: the caller's promise, passed on.
            unsafe {
                match self {
                    Path::Rows(d) => neon::direct::<6, 4, FIN, false>(s, d),
                    Path::Transposed(d) => neon::direct::<4, 4, FIN, false>(s, d),
                    Path::Dot(d) => neon::dot::<2, 2, 2>(s, d),
                }
            }
            return;
        }
        unreachable!("Path::of returns a path only on a level with direct kernels")
    }
}

/// The entry points of one instruction set: [`direct`] and [`dot`] compiled with its features
/// enabled (which the intrinsics inlined into them need), each tile shape a function of its own.
macro_rules! entry_points {
    ($module:ident, $token:ty $(, $feature:literal)?) => {
        mod $module {
            use super::{Direct, Dot};
            $(#[target_feature(enable = $feature)])?
            #[inline(never)]
            /// # Safety
            /// As [`super::Path::run`].
            pub(super) unsafe fn direct<const MR: usize, const NV: usize, const FIN: bool, const SUMB: bool>(
                s: $token,
                d: &Direct,
            ) {
                // SAFETY: the caller's promise; the token proves the instructions.
                unsafe { super::direct::<_, MR, NV, FIN, SUMB>(s, d) }
            }
            $(#[target_feature(enable = $feature)])?
            #[inline(never)]
            /// # Safety
            /// As [`super::Path::run`].
            pub(super) unsafe fn dot<const DI: usize, const RI: usize, const DJ: usize>(s: $token, d: &Dot) {
                // SAFETY: as above.
                unsafe { super::dot::<_, DI, RI, DJ>(s, d) }
            }
        }
    };
}
#[cfg(target_arch = "x86_64")]
entry_points!(avx512, crate::isa::Avx512, "avx512f,avx512vl");
#[cfg(target_arch = "x86_64")]
entry_points!(avx2, crate::isa::Avx2, "avx2,fma");
#[cfg(target_arch = "aarch64")]
entry_points!(neon, crate::isa::Neon);

/// A 32 KB L1 data cache, in floats.
const L1_FLOATS: usize = 8192;

/// The widest panel of any tile shape, in floats (AVX-512's 6 vectors of 16).
const PANEL_MAX: usize = 96;

/// The direct product `d`, in sweeps of at most [`DIRECT_MAX_K`] along k, each adding into C
/// what the last one stored. Within a sweep, C's columns go in panels of NV vectors (lanes past
/// n masked off), rows MR at a time (the last few in blocks of 4, 2 and 1): MR × NV
/// accumulators.
///
/// Tile shapes give the same sums in the same order (so the same bits); AVX-512's, chosen by
/// measuring the training steps (`docs/performance.md`):
/// * 4 rows × 4 vectors for the column MLPs' transposed products, whose C rows (features) are
///   B·W floats apart, 12 KB at CIFAR's shard of 32: a multiple of 4 KB, so every row of a block
///   falls in the same L1 set and 8 rows fill all its ways. 4 rows puts 4 lines in each set and
///   needs fewer loads per multiply-add (4 broadcasts and 4 vectors per 16, against 8 and 2).
/// * 4 × 6 for a C wider than two vectors (CIFAR's row MLPs, 96 columns): one panel covers all
///   of C's columns, so A is read once per sweep instead of once per 32-column panel, which for
///   the weight gradients (A a stored activation read down its columns) saves two passes over
///   cold memory.
/// * 8 × 2 otherwise (MNIST's rows, 28 columns).
///
/// Two compile-time switches make the fused products' kernels, so that no other product's code
/// holds anything of them: `FIN`, a block's [`Finish`] other than the store (`d.finish`, in the
/// last sweep), and `SUMB`, B's column sums taken by the first block of rows (`d.bsum`).
///
/// # Safety
/// As [`Path::run`]; and `s`'s instructions must be enabled in the caller.
#[inline(always)]
unsafe fn direct<S: Simd, const MR: usize, const NV: usize, const FIN: bool, const SUMB: bool>(
    s: S,
    d: &Direct,
) {
    let nr = S::LANES * NV;
    const { assert!(S::LANES * NV <= PANEL_MAX, "a panel row must fit in `panel`") };
    // A row's eight interleaved partial sums continue from panel to panel: each must start at a
    // multiple of 8 (Finish::RowLanes).
    const { assert!(!FIN || (S::LANES * NV).is_multiple_of(8), "panels of a multiple of 8 columns") };
    // The panel of B under a block of rows is first copied to `panel`, nr floats a row (read
    // again by every block of rows, the copy costs 1/m of the products), in two cases:
    // * B's rows `b.rs` floats apart, a multiple of 1 KB (CIFAR's column products, whose rows
    //   are B·W = 32·96 floats apart): the k rows of a panel all fall in the same few L1 sets
    //   and evict each other;
    // * a panel narrower than nr (MNIST's 28 columns) on a set without cheap partial loads
    //   ([`Simd::CHEAP_PARTIAL_LOADS`]): copied rows are whole vectors, so the blocks' k loops
    //   read B with plain loads (on AVX2 a mask is a vector register, and the masks of a 6 × 2
    //   tile do not fit beside its accumulators).
    // Rows are copied whole, NV vectors each, lanes past n zero.
    let aliased = d.b.rs.is_multiple_of(256) && d.m > MR;
    let mut panel = std::mem::MaybeUninit::<[f32; DIRECT_MAX_K * PANEL_MAX]>::uninit();
    let panel = panel.as_mut_ptr() as *mut f32;
    let (mut p0, mut start) = (0, d.start);
    loop {
        let kb = (d.k - p0).min(DIRECT_MAX_K);
        let a = Src { p: d.a.p.wrapping_add(p0 * d.a.cs), ..d.a };
        let b = d.b.p.wrapping_add(p0 * d.b.rs);
        // Only for a sweep of A larger than L1 (a weight gradient's activations, not a weight
        // matrix read transposed), where the requests cost less than they save.
        if a.rs == 1 && a.cs >= d.m && kb * a.cs >= L1_FLOATS {
            // SAFETY: prefetches never fault; the runs are inside A.
            unsafe { prefetch_columns(s, a.p, d.m, kb, a.cs) };
        }
        let mut j = 0;
        while j < d.n {
            let w = (d.n - j).min(nr);
            let mut masks = [s.mask(0); NV];
            for (v, mv) in masks.iter_mut().enumerate() {
                *mv = s.mask(w.saturating_sub(S::LANES * v));
            }
            let bj = if aliased || (w < nr && !S::CHEAP_PARTIAL_LOADS) {
                for p in 0..kb {
                    let (src, dst) = (b.wrapping_add(p * d.b.rs + j), panel.wrapping_add(p * nr));
                    for (v, &mv) in masks.iter().enumerate() {
                        // SAFETY: the lanes in mv are inside B's row p; `panel` holds
                        // DIRECT_MAX_K rows of PANEL_MAX ≥ nr floats.
                        unsafe {
                            s.store(dst.add(S::LANES * v), s.load_part(mv, src.wrapping_add(S::LANES * v)))
                        };
                    }
                }
                Src { p: panel, rs: nr, cs: 1 }
            } else {
                Src { p: b.wrapping_add(j), rs: d.b.rs, cs: 1 }
            };
            let mut i = 0;
            while i < d.m {
                // Whole blocks of MR rows, then the last few in blocks of 4, 2 and 1.
                let left = d.m - i;
                let rows = if left >= MR {
                    MR
                } else if left >= 4 {
                    4
                } else if left >= 2 {
                    2
                } else {
                    1
                };
                let ai = Src { p: a.p.wrapping_add(i * a.rs), ..a };
                let cij = d.c.wrapping_add(i * d.rsc + j);
                // The bias under this block: its columns' (from j) or its rows' (from i).
                let start = match start {
                    Start::ColBias(v) => Start::ColBias(v.wrapping_add(j)),
                    Start::RowBias(v) => Start::RowBias(v.wrapping_add(i)),
                    st => st,
                };
                if d.cold && i + rows < d.m {
                    let next = (d.m - i - rows).min(MR);
                    for r in 0..next {
                        each_line(cij.wrapping_add((rows + r) * d.rsc), w, |q| s.prefetch_write(q));
                    }
                }
                // G's rows under the next block, asked for now: they arrive from L2 while this
                // block's products run, instead of stalling its stores.
                if let (true, Finish::ColumnSums { g, .. } | Finish::RowLanes { g, .. }) = (FIN, d.finish) {
                    if i + rows < d.m && p0 + kb >= d.k {
                        let next = (d.m - i - rows).min(MR);
                        for r in 0..next {
                            each_line(g.wrapping_add((i + rows + r) * d.rsc + j), w, |q| s.prefetch_read(q));
                        }
                    }
                }
                // The backward through GELU, once C holds the whole product (the last sweep).
                let at = (FIN && p0 + kb >= d.k).then_some(At { finish: &d.finish, i, j, w });
                // B's column sums, by the first block of rows (which reads every row of B).
                let bsum = if SUMB && i == 0 { d.bsum.wrapping_add(j) } else { std::ptr::null_mut() };
                let tile = Tile { k: kb, a: ai, b: bj, c: cij, rsc: d.rsc, start, at, bsum };
                // SAFETY: rows [i, i + rows) and the panel's w columns are inside A, B and C.
                unsafe {
                    match (rows, w == nr) {
                        (r, true) if r == MR => block::<S, MR, NV, true, SUMB>(s, &tile, &masks),
                        (r, false) if r == MR => block::<S, MR, NV, false, SUMB>(s, &tile, &masks),
                        (4, full) => block_rows::<S, 4, NV, SUMB>(s, &tile, &masks, full),
                        (2, full) => block_rows::<S, 2, NV, SUMB>(s, &tile, &masks, full),
                        (_, full) => block_rows::<S, 1, NV, SUMB>(s, &tile, &masks, full),
                    }
                }
                i += rows;
            }
            j += nr;
        }
        p0 += kb;
        if p0 >= d.k {
            break;
        }
        start = Start::C;
    }
}

/// Prefetches into L1 the k columns of an A read down its columns (`a.rs` = 1: a weight
/// gradient's Aᵀ, element (i, p) at `a + p·csa + i`): k runs of m floats, `csa` apart. The
/// first block of rows walks them one new line per step, which on a stored activation (cold,
/// from memory) stalls the multiply-adds; requesting the whole sweep first lets the line fills
/// overlap.
///
/// # Safety
/// None beyond `s`'s (prefetches never fault); `unsafe` for the pointer arithmetic's sake.
#[inline(always)]
unsafe fn prefetch_columns<S: Simd>(s: S, a: *const f32, m: usize, k: usize, csa: usize) {
    for p in 0..k {
        each_line(a.wrapping_add(p * csa), m, |q| s.prefetch_read(q));
    }
}

/// Calls `f` on an address in every 64-byte line of the `len` (≥ 1) floats from `p`: every
/// 16th float, and the last (whose line the 16-float steps miss when `p` is not aligned).
#[inline(always)]
fn each_line(p: *const f32, len: usize, mut f: impl FnMut(*const f32)) {
    let mut q = 0;
    while q < len {
        f(p.wrapping_add(q));
        q += 16;
    }
    f(p.wrapping_add(len - 1));
}

/// One block of a direct product: R rows of C from `c`, k steps.
#[derive(Clone, Copy)]
struct Tile {
    k: usize,
    a: Src,
    b: Src,
    c: *mut f32,
    rsc: usize,
    start: Start,
    /// Where the block is, for a finish other than [`Finish::Store`].
    at: Option<At>,
    /// Where this block adds B's column sums (null: it does not).
    bsum: *mut f32,
}

/// One R × V-vector block of C: the accumulators start as `t.start` says, then for p in 0..k,
/// acc[r] += A[r, p] · B[p, ..] (broadcast, FMA). With `FULL` every vector is whole (plain loads
/// and stores: every panel but a last, narrower one); otherwise vector v of C (and of the bias)
/// covers the lanes in `masks[v]`, and so does B's where partial loads are cheap (elsewhere a
/// narrower panel of B is a zero-padded copy, read whole: no mask in the loop, see [`direct`]).
///
/// Its shape is the one LLVM turns into registers reliably: the tile's fields copied to locals,
/// B's vectors built fresh each step by `array::from_fn` over a plain function, iterator loops
/// for the FMAs. Variants with the B vectors in an array living across the k loop, or a loading
/// closure, made LLVM keep the accumulators in a stack copy stored after every FMA
/// (`docs/performance.md`).
///
/// # Safety
/// Rows 0..R of the tile's A and C, and of B's k rows the lanes in `masks` (V whole vectors
/// unless `FULL` or [`Simd::CHEAP_PARTIAL_LOADS`]), must be inside their buffers; `s`'s
/// instructions must be enabled in the caller.
#[inline(always)]
unsafe fn block<S: Simd, const R: usize, const V: usize, const FULL: bool, const SUMB: bool>(
    s: S,
    t: &Tile,
    masks: &[S::Mask; V],
) {
    let Tile { k, a, b, c, rsc, start, bsum, .. } = *t;
    let mut acc = [[s.zero(); V]; R];
    // Every access below is inside the tile, as the caller promises; partial vectors touch only
    // their masks' lanes.
    for (r, row) in acc.iter_mut().enumerate() {
        for (v, x) in row.iter_mut().enumerate() {
            *x = match start {
                Start::Zero => s.zero(),
                // SAFETY: vector v of C's row r, inside the tile.
                Start::C => unsafe { load::<S, FULL>(s, masks[v], c.wrapping_add(r * rsc + S::LANES * v)) },
                // SAFETY: vector v of the bias, one per column of the tile.
                Start::ColBias(bias) => unsafe {
                    load::<S, FULL>(s, masks[v], bias.wrapping_add(S::LANES * v))
                },
                // SAFETY: the bias of row r, one per row of the tile.
                Start::RowBias(bias) => s.splat(unsafe { *bias.add(r) }),
            };
        }
    }
    // B's column sums (`SUMB`, a block with `bsum`): B's rows added in order, beside the FMAs.
    let sum_b = SUMB && !bsum.is_null();
    let mut bs = [s.zero(); V];
    if sum_b {
        for (v, x) in bs.iter_mut().enumerate() {
            // SAFETY: `bsum` holds one value per column of the tile.
            *x = unsafe { load::<S, FULL>(s, masks[v], bsum.wrapping_add(S::LANES * v)) };
        }
    }
    for p in 0..k {
        let bp = b.p.wrapping_add(p * b.rs);
        // SAFETY: vector v of B's row p: its lanes in masks[v] inside B, or whole inside B or
        // its padded copy (see the safety section).
        let bv: [S::V; V] = std::array::from_fn(|v| unsafe {
            let q = bp.wrapping_add(S::LANES * v);
            if FULL || !S::CHEAP_PARTIAL_LOADS {
                s.load(q)
            } else {
                s.load_part(masks[v], q)
            }
        });
        if SUMB {
            for (x, &b) in bs.iter_mut().zip(&bv) {
                *x = s.add(*x, b);
            }
        }
        let ap = a.p.wrapping_add(p * a.cs);
        for (r, row) in acc.iter_mut().enumerate() {
            // SAFETY: A's element (r, p), inside the tile.
            let av = s.splat(unsafe { *ap.add(r * a.rs) });
            for (x, &bv) in row.iter_mut().zip(&bv) {
                *x = s.fma(av, bv, *x);
            }
        }
    }
    if sum_b {
        for (v, &x) in bs.iter().enumerate() {
            // SAFETY: as the load.
            unsafe { store::<S, FULL>(s, masks[v], bsum.wrapping_add(S::LANES * v), x) };
        }
    }
    // SAFETY: the caller's promise, passed on.
    unsafe { finish_block::<S, R, V, FULL>(s, t, masks, acc) };
}

/// The end of [`block`]: its accumulators stored into C as the product's [`Finish`] says.
/// (Kept apart from the k loop: with the finish's pointers held across it, LLVM moved MNIST's
/// 8 × 2 block's masks to the stack and re-tested them every step.)
///
/// # Safety
/// As [`block`]; with `t.at`, its finish's G holds C's layout and its sums are inside their
/// buffer.
#[inline(always)]
unsafe fn finish_block<S: Simd, const R: usize, const V: usize, const FULL: bool>(
    s: S,
    t: &Tile,
    masks: &[S::Mask; V],
    acc: [[S::V; V]; R],
) {
    let (c, rsc) = (t.c, t.rsc);
    // Vector v of row r of the block of C (and of G, laid out as C).
    let at = |r: usize, v: usize| r * rsc + S::LANES * v;
    // SAFETY: `At::finish` points to the product's `Direct`, alive for the whole product.
    let finish = t.at.map(|a| (unsafe { *a.finish }, a));
    match finish {
        None | Some((Finish::Store, _)) => {
            for (r, row) in acc.iter().enumerate() {
                for (v, &x) in row.iter().enumerate() {
                    // SAFETY: vector v of C's row r, inside the tile (partial ones by their mask).
                    unsafe { store::<S, FULL>(s, masks[v], c.wrapping_add(at(r, v)), x) };
                }
            }
        }
        Some((Finish::ColumnSums { g, sums }, At { i, j, .. })) => {
            let g = g.wrapping_add(i * rsc + j);
            for (v, &mv) in masks.iter().enumerate() {
                let q = sums.wrapping_add(j + S::LANES * v);
                // SAFETY: `sums` has one value per column of C; vector v covers the block's.
                let mut sum = unsafe { load::<S, FULL>(s, mv, q) };
                for (r, row) in acc.iter().enumerate() {
                    // SAFETY: vector v of row r of G and of C, inside the block.
                    unsafe {
                        let y = s.mul(row[v], load::<S, FULL>(s, mv, g.wrapping_add(at(r, v))));
                        store::<S, FULL>(s, mv, c.wrapping_add(at(r, v)), y);
                        sum = s.add(sum, y);
                    }
                }
                // SAFETY: as the load.
                unsafe { store::<S, FULL>(s, mv, q, sum) };
            }
        }
        Some((Finish::RowLanes { g, sums }, At { i, j, w, .. })) => {
            let g = g.wrapping_add(i * rsc + j);
            for (r, row) in acc.iter().enumerate() {
                for (v, &x) in row.iter().enumerate() {
                    // SAFETY: vector v of row r of G and of C, inside the block.
                    unsafe {
                        let y = s.mul(x, load::<S, FULL>(s, masks[v], g.wrapping_add(at(r, v))));
                        store::<S, FULL>(s, masks[v], c.wrapping_add(at(r, v)), y);
                    }
                }
                // SAFETY: the w values just stored in C's row r are inside the block; `sums`
                // holds eight partial sums for each row of C, referred to by nothing else now.
                unsafe {
                    let part = &mut *(sums.add((i + r) * 8) as *mut [f32; 8]);
                    simd::add_by_8(part, std::slice::from_raw_parts(c.add(r * rsc), w));
                }
            }
        }
    }
}

/// A whole vector (`FULL`) or the lanes in `m`.
///
/// # Safety
/// As [`Simd::load`] or [`Simd::load_part`].
#[inline(always)]
unsafe fn load<S: Simd, const FULL: bool>(s: S, m: S::Mask, p: *const f32) -> S::V {
    // SAFETY: the caller's promise.
    unsafe {
        if FULL {
            s.load(p)
        } else {
            s.load_part(m, p)
        }
    }
}

/// Stores a whole vector (`FULL`) or the lanes in `m`.
///
/// # Safety
/// As [`Simd::store`] or [`Simd::store_part`].
#[inline(always)]
unsafe fn store<S: Simd, const FULL: bool>(s: S, m: S::Mask, p: *mut f32, x: S::V) {
    // SAFETY: the caller's promise.
    unsafe {
        if FULL {
            s.store(p, x)
        } else {
            s.store_part(m, p, x)
        }
    }
}

/// [`block`] for the last few rows of C, with full or masked vectors.
///
/// # Safety
/// As [`block`].
#[inline(always)]
unsafe fn block_rows<S: Simd, const R: usize, const V: usize, const SUMB: bool>(
    s: S,
    t: &Tile,
    masks: &[S::Mask; V],
    full: bool,
) {
    // SAFETY: the caller's promise.
    unsafe {
        if full {
            block::<S, R, V, true, SUMB>(s, t, masks)
        } else {
            block::<S, R, V, false, SUMB>(s, t, masks)
        }
    }
}

/// The dot-product path: C's elements in blocks of DI × DJ (the last rows in blocks of RI × DJ),
/// each element a dot product of A's row i and B's column j kept as 16-lane partial sums
/// ([`Simd::W`]) and reduced once at the end ([`sum_block`]). A block past C's last row or
/// column repeats that row or column (in bounds; the extra sums are discarded).
///
/// Each step loads DI rows of A and DJ columns of B for DI·DJ multiply-adds. A and B together
/// outgrow L1 (MNIST's are 28 × 896 floats each, 100 KB), so B streams from L2 once per block
/// of rows: taller blocks read it fewer times, and each step asks for B's lines [`DOT_AHEAD`]
/// floats on. AVX-512 takes 5 × 4 (20 accumulators, 4 vectors of B and one of A in its 32
/// registers), the last rows 4 × 4; AVX2 and NEON, whose 16 lanes take 2 and 4 registers, 2 × 2.
///
/// # Safety
/// As [`Path::run`]; and `s`'s instructions must be enabled in the caller.
#[inline(always)]
unsafe fn dot<S: Simd, const DI: usize, const RI: usize, const DJ: usize>(s: S, d: &Dot) {
    // As many tall blocks as leave a remainder the short ones cover exactly (32 = 4·5 + 3·4),
    // where there is such a count.
    let most = d.m / DI;
    let tall = (0..=most).rev().find(|t| (d.m - t * DI).is_multiple_of(RI)).unwrap_or(most);
    for t in 0..tall {
        // SAFETY: the caller's promise, passed on.
        unsafe { dot_rows::<S, DI, DJ>(s, d, t * DI) };
    }
    for i in (tall * DI..d.m).step_by(RI) {
        // SAFETY: as above.
        unsafe { dot_rows::<S, RI, DJ>(s, d, i) };
    }
}

/// Rows [i, i + R) of the dot-product path (rows past C's last repeat it), every column, in
/// R × DJ blocks.
///
/// # Safety
/// As [`dot`].
#[inline(always)]
unsafe fn dot_rows<S: Simd, const R: usize, const DJ: usize>(s: S, d: &Dot, i: usize) {
    let ri = (d.m - i).min(R);
    let mut rows = [d.a.p; R];
    for (r, row) in rows.iter_mut().enumerate() {
        *row = d.a.p.wrapping_add((i + r.min(ri - 1)) * d.a.rs);
    }
    let mut j = 0;
    while j < d.n {
        let rj = (d.n - j).min(DJ);
        let mut cols = [d.b.p; DJ];
        for (c, col) in cols.iter_mut().enumerate() {
            *col = d.b.p.wrapping_add((j + c.min(rj - 1)) * d.b.cs);
        }
        let mut acc = [[s.zero16(); DJ]; R];
        // Whole vectors, then one partial step for the tail: each lane sums its p in
        // ascending order.
        let kv = d.k / 16 * 16;
        let mut p = 0;
        while p < kv {
            // SAFETY: 16 floats from p along each row and column are inside them.
            unsafe { dot_step(s, &mut acc, &rows, &cols, p, 16) };
            p += 16;
        }
        if kv < d.k {
            // SAFETY: the k − kv floats from kv are inside them.
            unsafe { dot_step(s, &mut acc, &rows, &cols, kv, d.k - kv) };
        }
        let sums = sum_block(s, &acc);
        for (ii, row) in sums.iter().enumerate().take(ri) {
            for (jj, &v) in row.iter().enumerate().take(rj) {
                let dst = d.c.wrapping_add((i + ii) * d.rsc + (j + jj) * d.csc);
                // SAFETY: (i + ii, j + jj) is inside C.
                unsafe { *dst = if d.accumulate { *dst + v } else { v } };
            }
        }
        j += DJ;
    }
}

/// The lane sums of an R × DJ block of 16-lane partial sums, each in [`Simd::sum16`]'s order:
/// sixteen at a time by [`Simd::sum16_block`]'s tree (row by row, a last group of fewer padded
/// with copies of the first, whose sums are dropped) when the block has at least sixteen, one by
/// one otherwise.
#[inline(always)]
fn sum_block<S: Simd, const R: usize, const DJ: usize>(s: S, acc: &[[S::W; DJ]; R]) -> [[f32; DJ]; R] {
    let mut sums = [[0f32; DJ]; R];
    let n = R * DJ;
    if n >= 16 {
        for g in (0..n).step_by(16) {
            // Vector f of the block, row by row; past the last, the first again.
            let v = |f: usize| if f < n { acc[f / DJ][f % DJ] } else { acc[0][0] };
            // sum16_block's element jj·4 + ii is the sum of its block[ii][jj]: vector g + jj·4 + ii.
            let block: [[S::W; 4]; 4] =
                std::array::from_fn(|ii| std::array::from_fn(|jj| v(g + jj * 4 + ii)));
            for (t, &x) in s.sum16_block(&block).iter().enumerate() {
                if g + t < n {
                    sums[(g + t) / DJ][(g + t) % DJ] = x;
                }
            }
        }
    } else {
        for (row, a) in sums.iter_mut().zip(acc) {
            for (v, &w) in row.iter_mut().zip(a) {
                *v = s.sum16(w);
            }
        }
    }
    sums
}

/// How far ahead of the step along k the dot path asks for B's lines, in floats (four lines).
/// Without the requests, the L2 stream held MNIST's column weight gradient at 0.66 of the
/// per-core roof; two to five lines ahead all gave about 0.8 (`docs/performance.md`).
const DOT_AHEAD: usize = 64;

/// `acc[r][c] += A's row r · B's column c` over `lanes` (≤ 16) floats from p, as 16-lane
/// products (lanes past `lanes` zero); B's lines [`DOT_AHEAD`] floats on requested.
///
/// # Safety
/// `lanes` floats from p along each of `rows` and `cols` must be readable; `s`'s instructions
/// must be enabled in the caller.
#[inline(always)]
unsafe fn dot_step<S: Simd, const R: usize, const DJ: usize>(
    s: S,
    acc: &mut [[S::W; DJ]; R],
    rows: &[*const f32; R],
    cols: &[*const f32; DJ],
    p: usize,
    lanes: usize,
) {
    let mut bv = [s.zero16(); DJ];
    for (b, &col) in bv.iter_mut().zip(cols) {
        // SAFETY: the caller's promise.
        *b = unsafe { s.load16(lanes, col.add(p)) };
        s.prefetch_read(col.wrapping_add(p + DOT_AHEAD));
    }
    for (row, &a) in acc.iter_mut().zip(rows) {
        // SAFETY: the caller's promise.
        let av = unsafe { s.load16(lanes, a.add(p)) };
        for (x, &b) in row.iter_mut().zip(&bv) {
            *x = s.fma16(av, b, *x);
        }
    }
}
