//! Elementwise loops over one output tile, compiled three times and chosen at run time.
//!
//! The release binary targets baseline x86-64 (SSE2), so it runs on any x86-64; each function here
//! is also compiled with AVX2+FMA and with AVX-512 enabled, and the widest the CPU supports is
//! picked on first use (`PMIXER_SIMD=generic|avx2|avx512` overrides, for tests and profiling). The
//! bodies are the same source and use the same IEEE operations in the same order (Rust never
//! contracts `a*b+c` into an FMA on its own), so every variant gives bitwise the same result; only
//! the vector width differs. Other architectures (aarch64) take the generic body, which LLVM
//! vectorises for their baseline SIMD.

use crate::gelu::{gelu, gelu_grad};
use crate::real::Real;
#[cfg(target_arch = "x86_64")]
use std::sync::OnceLock;

/// The instruction-set level the elementwise loops run at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Generic,
    Avx2,
    Avx512,
}

/// The level in use: the best the CPU has, unless `PMIXER_SIMD` asks for a lower one.
pub fn level() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        static LEVEL: OnceLock<Level> = OnceLock::new();
        *LEVEL.get_or_init(|| {
            let best = if is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
            {
                Level::Avx512
            } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                Level::Avx2
            } else {
                Level::Generic
            };
            match std::env::var("PMIXER_SIMD").as_deref() {
                Ok("generic") => Level::Generic,
                Ok("avx2") if best != Level::Generic => Level::Avx2,
                _ => best,
            }
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Level::Generic
    }
}

/// Defines `pub fn $name<T: Real>(…)` whose body is compiled for each [`Level`] and dispatched.
macro_rules! multiversion {
    ($(#[$meta:meta])* pub fn $name:ident<T: Real>($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        pub fn $name<T: Real>($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body<T: Real>($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn avx512<T: Real>($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2<T: Real>($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                // SAFETY: `level()` only reports features the CPU has.
                match level() {
                    Level::Avx512 => return unsafe { avx512($($arg),*) },
                    Level::Avx2 => return unsafe { avx2($($arg),*) },
                    Level::Generic => {}
                }
            }
            body($($arg),*)
        }
    };
}

multiversion! {
    /// `z[j] += c[j]; a[j] = gelu(z[j])`: the hidden epilogue when the bias runs along the tile.
    pub fn bias_gelu_vec<T: Real>(z: &mut [T], a: &mut [T], c: &[T]) {
        for ((z, a), &c) in z.iter_mut().zip(a.iter_mut()).zip(c) {
            *z += c;
            *a = gelu(*z);
        }
    }
}

multiversion! {
    /// `z[j] += c; a[j] = gelu(z[j])`: the hidden epilogue when the whole tile shares one bias.
    pub fn bias_gelu_scalar<T: Real>(z: &mut [T], a: &mut [T], c: T) {
        for (z, a) in z.iter_mut().zip(a.iter_mut()) {
            *z += c;
            *a = gelu(*z);
        }
    }
}

multiversion! {
    /// `d[j] *= gelu'(z[j])`: back through the activation, in place.
    pub fn mul_gelu_grad<T: Real>(d: &mut [T], z: &[T]) {
        for (d, &z) in d.iter_mut().zip(z) {
            *d *= gelu_grad(z);
        }
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
    /// `y[j] += c`.
    pub fn add_scalar<T: Real>(y: &mut [T], c: T) {
        for y in y.iter_mut() {
            *y += c;
        }
    }
}

multiversion! {
    /// Σ x[j] with eight interleaved partial sums combined in a fixed order: vectorisable, and
    /// the same bits on every machine and thread count.
    pub fn sum<T: Real>(x: &[T]) -> T {
        let mut acc = [T::ZERO; 8];
        let mut blocks = x.chunks_exact(8);
        for blk in &mut blocks {
            for (a, &v) in acc.iter_mut().zip(blk) {
                *a += v;
            }
        }
        for (a, &v) in acc.iter_mut().zip(blocks.remainder()) {
            *a += v;
        }
        ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
    }
}
