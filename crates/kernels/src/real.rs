//! The scalar types the engine runs in: `f32` for training, `f64` for gradient checks.
//!
//! Everything in the workspace is generic over [`Real`], so the very same kernels, tape and model
//! that train in `f32` can be run in `f64`, where central finite differences are accurate to about
//! 1e-10 and a gradient check can use tight tolerances.

use crate::mat::{MatMut, MatRef};
use std::fmt::Debug;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, Mul, MulAssign, Neg, Sub, SubAssign};

/// A floating-point scalar with the handful of operations the kernels need.
pub trait Real:
    Copy
    + Send
    + Sync
    + Debug
    + Default
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + Sum
    + 'static
{
    /// The type's name in a safetensors header (`F32`, `F64`).
    const DTYPE: &'static str;
    const ZERO: Self;
    const ONE: Self;

    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    fn sqrt(self) -> Self;
    fn ln(self) -> Self;
    fn abs(self) -> Self;
    fn is_finite(self) -> bool;
    /// `e^x`. For `f32` a branch-free polynomial that the compiler can vectorise (see
    /// [`crate::gelu::exp_f32`]); for `f64` the standard library's.
    fn exp(self) -> Self;
    fn max(self, other: Self) -> Self;

    /// (Φ(z), φ(z)), the standard normal CDF and density, in the form this type uses (see
    /// [`crate::gelu`]), multiply-adds fused.
    #[inline(always)]
    fn cdf_pdf(z: Self) -> (Self, Self) {
        Self::cdf_pdf_with::<crate::gelu::Fused>(z)
    }

    /// [`Real::cdf_pdf`] with `f32`'s multiply-adds computed as `M` says (`f64`'s form has none).
    fn cdf_pdf_with<M: crate::gelu::MulAdd>(z: Self) -> (Self, Self);

    /// `C ← A·B + β·C` by matrixmultiply (single-threaded): the products no direct path of
    /// [`crate::gemm::gemm`] takes, and every `f64` product.
    fn gemm_fallback(a: MatRef<Self>, b: MatRef<Self>, beta: Self, c: MatMut<Self>);

    /// `v` as `f32`s where `Self` is `f32` (what the mixed-precision kernels take), else `None`.
    fn as_f32(v: &[Self]) -> Option<&[f32]>;
    /// [`Real::as_f32`], writable.
    fn as_f32_mut(v: &mut [Self]) -> Option<&mut [f32]>;
    fn is_f32() -> bool {
        Self::as_f32(&[]).is_some()
    }
}

/// The slice itself, for `f32`'s [`Real::as_f32`].
fn itself<T>(v: T) -> Option<T> {
    Some(v)
}

/// Nothing, for `f64`'s [`Real::as_f32`].
fn nothing<T, U>(_: T) -> Option<U> {
    None
}

/// The two implementations differ only in the names below: `exp` and Φ/φ (see [`crate::gelu`])
/// and matrixmultiply's single- or double-precision GEMM.
macro_rules! impl_real {
    ($t:ident, $dtype:literal, exp: $exp:path, cdf_pdf: $cdf_pdf:ident, gemm: $gemm:path, as_f32: $as_f32:ident) => {
        impl Real for $t {
            const DTYPE: &'static str = $dtype;
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn sqrt(self) -> Self {
                $t::sqrt(self)
            }
            fn ln(self) -> Self {
                $t::ln(self)
            }
            fn abs(self) -> Self {
                $t::abs(self)
            }
            fn is_finite(self) -> bool {
                $t::is_finite(self)
            }
            #[inline(always)]
            fn exp(self) -> Self {
                $exp(self)
            }
            #[inline(always)]
            fn max(self, other: Self) -> Self {
                if self > other {
                    self
                } else {
                    other
                }
            }
            #[inline(always)]
            fn cdf_pdf_with<M: crate::gelu::MulAdd>(z: Self) -> (Self, Self) {
                crate::gelu::$cdf_pdf::<M>(z)
            }
            fn as_f32(v: &[Self]) -> Option<&[f32]> {
                $as_f32(v)
            }
            fn as_f32_mut(v: &mut [Self]) -> Option<&mut [f32]> {
                $as_f32(v)
            }
            fn gemm_fallback(a: MatRef<Self>, b: MatRef<Self>, beta: Self, mut c: MatMut<Self>) {
                let (m, k, n) = crate::mat::product_shape(&a, &b, &c);
                let ((rsa, csa), (rsb, csb), (rsc, csc)) = (a.strides(), b.strides(), c.strides());
                // SAFETY: each view addresses only elements inside its buffer (checked or
                // promised when it was made), and C, a mutable view, overlaps neither operand.
                unsafe {
                    $gemm(
                        m,
                        k,
                        n,
                        1.0,
                        a.as_ptr(),
                        rsa as isize,
                        csa as isize,
                        b.as_ptr(),
                        rsb as isize,
                        csb as isize,
                        beta,
                        c.as_mut_ptr(),
                        rsc as isize,
                        csc as isize,
                    )
                }
            }
        }
    };
}

impl_real!(f32, "F32", exp: crate::gelu::exp_f32, cdf_pdf: cdf_pdf_fast_with, gemm: matrixmultiply::sgemm, as_f32: itself);
impl_real!(f64, "F64", exp: f64::exp, cdf_pdf: cdf_pdf_precise_with, gemm: matrixmultiply::dgemm, as_f32: nothing);
