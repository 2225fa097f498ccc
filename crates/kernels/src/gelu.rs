//! Exact (erf) GELU, its derivative, and the elementwise epilogues the fused kernels run over each
//! output tile while it is still in cache.
//!
//! ```text
//! gelu(z)  = z·Φ(z),             Φ(z) = ½·erfc(−z/√2)      (TensorFlow's tf.nn.gelu default)
//! gelu'(z) = Φ(z) + z·φ(z),      φ(z) = e^(−z²/2) / √(2π)
//! ```
//!
//! Two forms of Φ, chosen per scalar type by [`Real::cdf_pdf`]:
//! * `f64` (gradient checks, the golden file): `erfc` by the Chebyshev-fitted approximation of
//!   Press, Teukolsky, Vetterling & Flannery, *Numerical Recipes in C*, 2nd ed. (1992), §6.2,
//!   routine `erfcc`: fractional error below 1.2e-7 for every real argument, so `erf` is within
//!   1e-6 absolute (tests check 3e-7 against tabulated values), and for z < 0 Φ keeps *relative*
//!   accuracy. Two exponentials per element (one in erfc, one in φ).
//! * `f32` (training): Abramowitz & Stegun 7.1.26, [`cdf_pdf_fast`], whose exponential is the
//!   one φ needs too: one exponential per element, erf within 1.5e-7 absolute.
//!
//! Every function here is branch-free so that the loops over a tile compile to SIMD;
//! [`crate::simd`] recompiles them for AVX2 and AVX-512 and picks one at run time.
//!
//! The `f32` forms are written once over a [`MulAdd`]: [`Fused`] (one rounding; an FMA
//! instruction where the CPU has one, the same bits everywhere) for every level with FMA, and
//! [`Unfused`] (a product, then a sum) for the portable level on x86-64, whose baseline has no
//! FMA instruction: there a fused multiply-add is a call to the C library's `fmaf` per operation,
//! which keeps the loop scalar, while the unfused form vectorises with SSE2.

use crate::real::Real;

/// How the `f32` polynomials here compute `a·b + c`.
pub trait MulAdd {
    fn mul_add(a: f32, b: f32, c: f32) -> f32;
}

/// `a·b + c` rounded once (`f32::mul_add`).
pub struct Fused;

impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

/// `a·b + c` rounded twice, after the product and after the sum: within an ulp of [`Fused`]'s
/// result per operation, but not its bits.
pub struct Unfused;

impl MulAdd for Unfused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// `e^x` in `f32`, branch-free: x = n·ln2 + r with |r| ≤ ln2/2, `e^r` by its Taylor series to
/// degree 7 (truncation error < 6e-9 relative), `2^n` assembled in the exponent bits. Arguments are
/// clamped to [−87, 88] so that the result stays a normal number (e^−87 ≈ 1.6e−38); NaN stays NaN.
///
/// n is found by adding 1.5·2²³: in that range a float's spacing is 1, so the sum is rounded to an
/// integer and its bit pattern is bits(1.5·2²³) + n. Every multiply-add is fused (`mul_add`, one
/// rounding): half the operations of separate ones, and the same bits on every instruction set
/// (a hardware FMA, or the correctly rounded `fmaf` where there is none; see [`crate::simd`]). The exponent bits come from there by integer
/// arithmetic, with no float-to-int conversion (whose saturating semantics would stop LLVM from
/// vectorising the loops this is inlined into).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    exp_f32_with::<Fused>(x)
}

/// [`exp_f32`] with its multiply-adds computed as `M` says.
#[inline(always)]
pub fn exp_f32_with<M: MulAdd>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that n·LN2_HI is exact for |n| < 2^9.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = M::mul_add(x, LOG2E, ROUND);
    let n = t - ROUND;
    let r = M::mul_add(n, -LN2_LO, M::mul_add(n, -LN2_HI, x));
    // Horner's rule, one fused multiply-add per degree.
    let mut p: f32 = 1.0 / 5040.0;
    for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 1.0 / 2.0, 1.0, 1.0] {
        p = M::mul_add(p, r, c);
    }
    let biased = t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127);
    p * f32::from_bits(biased << 23)
}

/// `erfc(z)` for z ≥ 0 (Numerical Recipes `erfcc`, see the module docs).
#[inline(always)]
fn erfc_nonneg<T: Real>(z: T) -> T {
    let c = |x: f64| T::from_f64(x);
    let t = T::ONE / (T::ONE + c(0.5) * z);
    let poly = c(-1.265_512_23)
        + t * (c(1.000_023_68)
            + t * (c(0.374_091_96)
                + t * (c(0.096_784_18)
                    + t * (c(-0.186_288_06)
                        + t * (c(0.278_868_07)
                            + t * (c(-1.135_203_98)
                                + t * (c(1.488_515_87) + t * (c(-0.822_152_23) + t * c(0.170_872_77)))))))));
    t * (-z * z + poly).exp()
}

/// The error function, within 1e-6 absolute everywhere.
#[inline(always)]
pub fn erf<T: Real>(x: T) -> T {
    let e = T::ONE - erfc_nonneg(x.abs());
    if x < T::ZERO {
        -e
    } else {
        e
    }
}

/// Φ(z), the standard normal CDF: ½·erfc(−z/√2), with the reflection erfc(−u) = 2 − erfc(u).
/// This is the precise form (relative accuracy in the lower tail); [`Real::cdf_pdf`] picks the
/// form each scalar type uses.
#[inline(always)]
pub fn normal_cdf<T: Real>(z: T) -> T {
    let half_tail = T::from_f64(0.5) * erfc_nonneg(z.abs() * T::from_f64(std::f64::consts::FRAC_1_SQRT_2));
    if z < T::ZERO {
        half_tail
    } else {
        T::ONE - half_tail
    }
}

/// φ(z) = e^(−z²/2)/√(2π), the standard normal density.
#[inline(always)]
pub fn normal_pdf<T: Real>(z: T) -> T {
    const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;
    T::from_f64(INV_SQRT_2PI) * (T::from_f64(-0.5) * z * z).exp()
}

/// (Φ(z), φ(z)) by the precise forms above: what `f64` uses, so that gradient checks and the
/// golden-file comparison see erf to 1.2e-7 relative.
#[inline(always)]
pub fn cdf_pdf_precise<T: Real>(z: T) -> (T, T) {
    (normal_cdf(z), normal_pdf(z))
}

/// [`cdf_pdf_precise`] for `f64`, under the signature of [`cdf_pdf_fast_with`]: the precise
/// form has no fused multiply-adds, so `M` does not apply.
#[inline(always)]
pub fn cdf_pdf_precise_with<M: MulAdd>(z: f64) -> (f64, f64) {
    cdf_pdf_precise(z)
}

/// (Φ(z), φ(z)) in `f32` with one exponential: Abramowitz & Stegun, *Handbook of Mathematical
/// Functions* (1964), formula 7.1.26 (after Hastings), erfc(u) ≈ t·(a1 + a2·t + … + a5·t⁴)·e^(−u²)
/// with t = 1/(1 + p·u), for u = |z|/√2 ≥ 0; its error is at most 1.5e-7 absolute. e^(−u²) is
/// e^(−z²/2), so φ(z) = e^(−z²/2)/√(2π) comes from the same exponential. What the `f32` kernels
/// use: half the transcendental work of the precise form, within 1e-6 of erf everywhere (its
/// relative error grows in the far lower tail, where Φ < 1e-6). Multiply-adds fused, as in
/// [`exp_f32`].
#[inline(always)]
pub fn cdf_pdf_fast(z: f32) -> (f32, f32) {
    cdf_pdf_fast_with::<Fused>(z)
}

/// [`cdf_pdf_fast`] with its multiply-adds computed as `M` says.
#[inline(always)]
pub fn cdf_pdf_fast_with<M: MulAdd>(z: f32) -> (f32, f32) {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_8, -1.453_152_1, 1.061_405_4];
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    let u = z.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / M::mul_add(P, u, 1.0);
    let e = exp_f32_with::<M>(-0.5 * z * z);
    let poly = t * M::mul_add(t, M::mul_add(t, M::mul_add(t, M::mul_add(t, A[4], A[3]), A[2]), A[1]), A[0]);
    let half_tail = 0.5 * poly * e;
    (if z < 0.0 { half_tail } else { 1.0 - half_tail }, INV_SQRT_2PI * e)
}

/// gelu(z) = z·Φ(z).
#[inline(always)]
pub fn gelu<T: Real>(z: T) -> T {
    gelu_with::<T, Fused>(z)
}

/// [`gelu`] with `f32`'s multiply-adds computed as `M` says.
#[inline(always)]
pub fn gelu_with<T: Real, M: MulAdd>(z: T) -> T {
    z * T::cdf_pdf_with::<M>(z).0
}

/// gelu'(z) = Φ(z) + z·φ(z), derived by the product rule from gelu(z) = z·Φ(z) and Φ' = φ.
#[inline(always)]
pub fn gelu_grad<T: Real>(z: T) -> T {
    let (cdf, pdf) = T::cdf_pdf(z);
    cdf + z * pdf
}

/// (gelu(z), gelu'(z)) sharing one evaluation of Φ and φ: what a training forward keeps, so that
/// the backward pass is a multiplication with no transcendental function left in it.
#[inline(always)]
pub fn gelu_and_grad<T: Real>(z: T) -> (T, T) {
    gelu_and_grad_with::<T, Fused>(z)
}

/// [`gelu_and_grad`] with `f32`'s multiply-adds computed as `M` says.
#[inline(always)]
pub fn gelu_and_grad_with<T: Real, M: MulAdd>(z: T) -> (T, T) {
    let (cdf, pdf) = T::cdf_pdf_with::<M>(z);
    (z * cdf, cdf + z * pdf)
}
