//! The instruction-set level the kernels run at ([`level`]), and the elementwise loops over one
//! output tile, compiled once per x86 level and chosen at run time.
//!
//! The release binary targets the baseline (SSE2 on x86-64, NEON on AArch64), so it runs on any
//! CPU of its architecture; on x86-64 each function here is also compiled with AVX2+FMA and with
//! AVX-512 enabled, and the widest the CPU supports is picked on first use (`PMIXER_SIMD=generic|
//! avx2|avx512|neon` asks for another, [`set_level`] switches). The products are dispatched on the
//! same level in [`crate::gemm`]. The bodies are the same source and use the same IEEE operations
//! in the same order (Rust never contracts `a*b+c` into an FMA on its own). The GELU's
//! multiply-adds are written against [`crate::gelu::MulAdd`]: fused (`mul_add`, one rounding) on
//! every level with FMA (AVX2, AVX-512, and AArch64's baseline), so those give bitwise the same
//! result and only the vector width differs (tested against the scalar functions on 1.2 million
//! arguments, on the level in use: CI runs the tests at each level); unfused in the portable body
//! on x86-64 ([`PortableMulAdd`]), whose baseline has no FMA instruction, so that the loop
//! vectorises with SSE2 instead of calling `fmaf` per operation. The `generic` level therefore
//! rounds its GELU as well as its products (matrixmultiply's) differently from the others.

use crate::gelu::{gelu_and_grad_with, gelu_with};
use crate::real::Real;
use std::sync::atomic::{AtomicU8, Ordering};

/// The instruction-set level the kernels run at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Level {
    /// Portable code only: the elementwise loops as the baseline target compiles them, the
    /// products through matrixmultiply.
    Generic,
    /// x86-64 with AVX2 and FMA3 (8-lane registers).
    Avx2,
    /// x86-64 with AVX-512F and VL (16-lane registers).
    Avx512,
    /// AArch64's Advanced SIMD (4-lane registers).
    Neon,
}

impl Level {
    /// The name `PMIXER_SIMD` and `pmixer` use.
    pub fn name(self) -> &'static str {
        match self {
            Level::Generic => "generic",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
            Level::Neon => "neon",
        }
    }

    fn parse(s: &str) -> Option<Level> {
        ALL.into_iter().find(|l| l.name() == s)
    }
}

/// The levels this CPU can run, best first (`generic` always last).
pub fn available() -> Vec<Level> {
    let mut v = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if crate::isa::Avx512::detect().is_some() && crate::isa::Avx2::detect().is_some() {
            v.push(Level::Avx512);
        }
        if crate::isa::Avx2::detect().is_some() {
            v.push(Level::Avx2);
        }
    }
    #[cfg(target_arch = "aarch64")]
    if crate::isa::Neon::detect().is_some() {
        v.push(Level::Neon);
    }
    v.push(Level::Generic);
    v
}

/// What `PMIXER_SIMD` asks for: `Ok(None)` when it is unset or empty (the best level), an error
/// naming the problem when it names no level or one this CPU lacks.
pub fn requested() -> Result<Option<Level>, String> {
    let value = match std::env::var("PMIXER_SIMD") {
        Ok(v) if !v.is_empty() => v,
        _ => return Ok(None),
    };
    let Some(l) = Level::parse(&value) else {
        return Err(format!("PMIXER_SIMD={value}: not a level (generic, avx2, avx512, neon)"));
    };
    if !available().contains(&l) {
        let names: Vec<_> = available().iter().map(|l| l.name()).collect();
        return Err(format!("PMIXER_SIMD={value}: this CPU does not have it (it has {})", names.join(", ")));
    }
    Ok(Some(l))
}

/// The level in use: the best the CPU has, unless `PMIXER_SIMD` asked for another it has (an
/// invalid request is ignored here; `pmixer` reports it through [`requested`] before starting),
/// or [`set_level`] chose one since.
pub fn level() -> Level {
    match LEVEL.load(Ordering::Relaxed) {
        UNSET => {
            let l = requested().ok().flatten().unwrap_or(available()[0]);
            LEVEL.store(l as u8, Ordering::Relaxed);
            l
        }
        v => ALL[v as usize],
    }
}

/// Switches every kernel to `level` from now on, if this CPU has it. Every level with direct
/// kernels (AVX-512, AVX2, NEON) computes bitwise the same results, so switching between them
/// changes only the speed; `generic` sends the products to matrixmultiply, which rounds
/// differently. For `pmixer selftest`, which checks each level in turn, and for benchmarks.
pub fn set_level(level: Level) -> Result<(), String> {
    if !available().contains(&level) {
        return Err(format!("this CPU does not have {}", level.name()));
    }
    LEVEL.store(level as u8, Ordering::Relaxed);
    Ok(())
}

const ALL: [Level; 4] = [Level::Generic, Level::Avx2, Level::Avx512, Level::Neon];
const UNSET: u8 = u8::MAX;
static LEVEL: AtomicU8 = AtomicU8::new(UNSET);

/// The multiply-add the portable body's `f32` polynomials use ([`crate::gelu::MulAdd`]): on
/// x86-64, whose baseline has no FMA instruction, the unfused form, which vectorises with SSE2
/// (a fused one is a call to the C library's `fmaf` per operation); elsewhere (AArch64, whose
/// baseline has FMA) the fused form, the same bits as every level with FMA.
#[cfg(target_arch = "x86_64")]
pub type PortableMulAdd = crate::gelu::Unfused;
/// See the x86-64 definition.
#[cfg(not(target_arch = "x86_64"))]
pub type PortableMulAdd = crate::gelu::Fused;

/// Whether the level in use computes the GELU's multiply-adds fused ([`crate::gelu::Fused`]),
/// as the scalar [`crate::gelu::gelu`] does, or as [`PortableMulAdd`] says.
pub fn fused_mul_add() -> bool {
    match level() {
        Level::Generic => cfg!(not(target_arch = "x86_64")),
        Level::Avx2 | Level::Avx512 | Level::Neon => true,
    }
}

/// Defines `pub fn $name<T: Real>(…)` whose body is compiled for each [`Level`] and dispatched.
/// The body may use `M`, the [`crate::gelu::MulAdd`] of its level: fused where the level has FMA,
/// [`PortableMulAdd`] in the portable body.
macro_rules! multiversion {
    ($(#[$meta:meta])* pub fn $name:ident<T: Real>($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        pub fn $name<T: Real>($($arg: $ty),*) $(-> $ret)? {
            // Bodies with no polynomial in them leave `M` unused.
            #[inline(always)]
            #[allow(clippy::extra_unused_type_parameters)]
            fn body<T: Real, M: crate::gelu::MulAdd>($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                /// # Safety
                /// The CPU must have AVX-512F and VL, AVX2 and FMA.
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                unsafe fn avx512<T: Real>($($arg: $ty),*) $(-> $ret)? { body::<T, crate::gelu::Fused>($($arg),*) }
                /// # Safety
                /// The CPU must have AVX2 and FMA.
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2<T: Real>($($arg: $ty),*) $(-> $ret)? { body::<T, crate::gelu::Fused>($($arg),*) }
                match level() {
                    // SAFETY: `level()` only reports features the CPU has.
                    Level::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    Level::Avx2 => return unsafe { avx2($($arg),*) },
                    Level::Generic | Level::Neon => {}
                }
            }
            body::<T, PortableMulAdd>($($arg),*)
        }
    };
}

multiversion! {
    /// Inference epilogue over a tile whose bias was already added: `a[j] = gelu(z[j])`.
    pub fn gelu_tile<T: Real>(z: &[T], a: &mut [T]) {
        for (&z, a) in z.iter().zip(a.iter_mut()) {
            *a = gelu_with::<T, M>(z);
        }
    }
}

multiversion! {
    /// Training epilogue over a tile whose bias was already added: `a[j] = gelu(z[j])` and, in
    /// place of the pre-activation, `z[j] ← gelu'(z[j])`, which is all the backward pass needs
    /// of it.
    pub fn gelu_keep_tile<T: Real>(z: &mut [T], a: &mut [T]) {
        for (z, a) in z.iter_mut().zip(a.iter_mut()) {
            (*a, *z) = gelu_and_grad_with::<T, M>(*z);
        }
    }
}

multiversion! {
    /// `d[j] *= g[j]` and, in the same pass, `acc[c] += Σ_r d[r·n + c]` for n = acc.len(): the
    /// backward pass through the activation and the bias gradient of a row-major tile, the same
    /// sums as `d[j] *= g[j]` followed by [`add_rows`].
    pub fn mul_assign_add_rows<T: Real>(d: &mut [T], g: &[T], acc: &mut [T]) {
        for (row, g) in d.chunks_exact_mut(acc.len()).zip(g.chunks_exact(acc.len())) {
            for ((a, d), &g) in acc.iter_mut().zip(row.iter_mut()).zip(g) {
                *d *= g;
                *a += *d;
            }
        }
    }
}

multiversion! {
    /// `d[j] *= g[j]`, returning `Σ d[j]` summed as [`sum`] sums: the backward pass through the
    /// activation and one bias gradient entry, for one feature's run of items.
    pub fn mul_assign_sum<T: Real>(d: &mut [T], g: &[T]) -> T {
        let mut acc = [T::ZERO; 8];
        let (mut db, mut gb) = (d.chunks_exact_mut(8), g.chunks_exact(8));
        for (bd, bg) in (&mut db).zip(&mut gb) {
            for ((a, d), &g) in acc.iter_mut().zip(bd.iter_mut()).zip(bg) {
                *d *= g;
                *a += *d;
            }
        }
        for ((a, d), &g) in acc.iter_mut().zip(db.into_remainder()).zip(gb.remainder()) {
            *d *= g;
            *a += *d;
        }
        sum8_tree(&acc)
    }
}

multiversion! {
    /// `y[j] += c[j]`.
    pub fn add_assign<T: Real>(y: &mut [T], c: &[T]) {
        for (y, &c) in y.iter_mut().zip(c) {
            *y += c;
        }
    }
}

multiversion! {
    /// `acc[j] += Σ_r x[r·n + j]` for n = acc.len(): the column sums of a row-major tile (a bias
    /// gradient), rows added in order.
    pub fn add_rows<T: Real>(x: &[T], acc: &mut [T]) {
        for row in x.chunks_exact(acc.len()) {
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += v;
            }
        }
    }
}

multiversion! {
    /// `y[j] += a·x[j]`: the backward of a scaling, `dx += g·dy`.
    pub fn axpy<T: Real>(y: &mut [T], a: T, x: &[T]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y += a * x;
        }
    }
}

multiversion! {
    /// `y[j] ← h[j] + a·y[j]`: the gated residual `h + g·m` added to a tile of the mixer's
    /// output m where it was computed.
    pub fn skip_add<T: Real>(y: &mut [T], h: &[T], a: T) {
        for (y, &h) in y.iter_mut().zip(h) {
            *y = h + a * *y;
        }
    }
}

multiversion! {
    /// `y[j] ← a·y[j]`.
    pub fn scale<T: Real>(y: &mut [T], a: T) {
        for y in y.iter_mut() {
            *y *= a;
        }
    }
}

multiversion! {
    /// Adam's update of one slice of the parameters (see `pmixer_autodiff::optim::Adam`), with
    /// `k = [β1, 1 − β1, β2, 1 − β2, lr_t, ε]`: `m ← β1·m + (1−β1)·g`, `v ← β2·v + (1−β2)·g²`,
    /// `p ← p − lr_t·m/(√v + ε)`. Square root and division are correctly rounded at every width.
    pub fn adam<T: Real>(p: &mut [T], g: &[T], m: &mut [T], v: &mut [T], k: [T; 6]) {
        let [b1, c1, b2, c2, lr_t, eps] = k;
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            *m = b1 * *m + c1 * g;
            *v = b2 * *v + c2 * g * g;
            *p -= lr_t * *m / (v.sqrt() + eps);
        }
    }
}

multiversion! {
    /// `y[j] += c`.
    pub fn add_scalar<T: Real>(y: &mut [T], c: T) {
        for y in y.iter_mut() {
            *y += c;
        }
    }
}

multiversion! {
    /// `Σ x[j]` with eight interleaved partial sums combined in a fixed order: vectorisable, and
    /// the same bits on every machine and thread count.
    pub fn sum<T: Real>(x: &[T]) -> T {
        let mut acc = [T::ZERO; 8];
        add_by_8(&mut acc, x);
        sum8_tree(&acc)
    }
}

multiversion! {
    /// `Σ x[j]·y[j]`, with the same fixed eight-way split as [`sum`].
    pub fn dot<T: Real>(x: &[T], y: &[T]) -> T {
        let mut acc = [T::ZERO; 8];
        let (mut xb, mut yb) = (x.chunks_exact(8), y.chunks_exact(8));
        for (bx, by) in (&mut xb).zip(&mut yb) {
            for ((a, &u), &v) in acc.iter_mut().zip(bx).zip(by) {
                *a += u * v;
            }
        }
        for ((a, &u), &v) in acc.iter_mut().zip(xb.remainder()).zip(yb.remainder()) {
            *a += u * v;
        }
        sum8_tree(&acc)
    }
}

/// `acc[q mod 8] += x[q]` for q = 0, 1, …, in that order: the eight interleaved partial sums of
/// [`sum`] and [`mul_assign_sum`] (vectorisable: one 8-lane add per 8 values), continued from
/// `acc` so that a run may come in pieces whose lengths are multiples of 8.
#[inline(always)]
pub fn add_by_8<T: Real>(acc: &mut [T; 8], x: &[T]) {
    // A local copy, which LLVM keeps in a register across the loop.
    let mut sums = *acc;
    let mut blocks = x.chunks_exact(8);
    for blk in &mut blocks {
        for (a, &v) in sums.iter_mut().zip(blk) {
            *a += v;
        }
    }
    for (a, &v) in sums.iter_mut().zip(blocks.remainder()) {
        *a += v;
    }
    *acc = sums;
}

/// The eight partial sums of [`add_by_8`] combined in one fixed order (a balanced tree over
/// partials 4 apart, then 2, then 1): the same bits on every machine.
#[inline(always)]
pub fn sum8_tree<T: Real>(acc: &[T; 8]) -> T {
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
}

/// Asks the CPU to start loading `len` values from `p` into its L2 cache (x86-64's
/// `prefetcht1`, one per 64-byte line; nothing elsewhere): for a tile that will be written or
/// read soon, so that its line fills overlap the arithmetic before. A hint: no effect on
/// results, and sound for any address.
#[inline]
pub fn prefetch_l2<T>(p: *const T, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        let (start, end) = (p as usize, p as usize + len * std::mem::size_of::<T>());
        let mut line = start & !63;
        while line < end {
            // SAFETY: a prefetch never faults, whatever the address.
            unsafe { _mm_prefetch(line as *const i8, _MM_HINT_T1) };
            line += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, len);
}
