//! The fused kernels against their reference twins, and the scalar math against known values.

use pmixer_kernels::check::{self, cases, fused, fused_into, rel_err, Gen};
use pmixer_kernels::dense::{dense_backward, dense_forward};
use pmixer_kernels::gelu::{erf, exp_f32, exp_f32_with, gelu, gelu_grad, Fused, MulAdd, Unfused};
use pmixer_kernels::Write;
use pmixer_kernels::{reference, Real};

#[test]
fn erf_matches_tabulated_values() {
    // erf to 10 digits (Abramowitz & Stegun, Table 7.1, and its symmetry erf(−x) = −erf(x)).
    let table = [
        (0.0, 0.0),
        (0.1, 0.112_462_916_0),
        (0.5, 0.520_499_877_8),
        (1.0, 0.842_700_792_9),
        (1.5, 0.966_105_146_5),
        (2.0, 0.995_322_265_0),
        (3.0, 0.999_977_909_5),
        (-0.5, -0.520_499_877_8),
        (-2.0, -0.995_322_265_0),
        (6.0, 1.0),
    ];
    for (x, want) in table {
        let e64 = erf(x);
        let e32 = erf(x as f32) as f64;
        assert!((e64 - want).abs() < 3e-7, "erf({x}) = {e64}, want {want}");
        assert!((e32 - want).abs() < 1e-6, "f32 erf({x}) = {e32}, want {want}");
    }
}

#[test]
fn gelu_and_its_derivative_match_known_values() {
    // gelu(z) = z·Φ(z) with Φ from standard normal tables.
    let table = [
        (0.0, 0.0),
        (1.0, 0.841_344_746_1),
        (-1.0, -0.158_655_253_9),
        (2.0, 1.954_499_736_1),
        (-3.0, -0.004_049_694_0),
        (0.5, 0.345_731_37),
    ];
    for (z, want) in table {
        assert!((gelu(z) - want).abs() < 3e-7, "gelu({z}) = {}, want {want}", gelu(z));
        assert!((gelu(z as f32) as f64 - want).abs() < 1e-6);
    }
    // gelu'(z) against a central difference of gelu itself, in f64.
    for i in -60..=60 {
        let z = i as f64 / 10.0;
        let h = 1e-5;
        let fd = (gelu(z + h) - gelu(z - h)) / (2.0 * h);
        assert!((gelu_grad(z) - fd).abs() < 2e-6, "gelu'({z}) = {} vs {fd}", gelu_grad(z));
    }
    // Known values: gelu'(0) = ½, gelu'(1) = Φ(1) + φ(1).
    assert!((gelu_grad(0.0) - 0.5).abs() < 1e-7);
    assert!((gelu_grad(1.0) - (0.841_344_746_1 + 0.241_970_724_5)).abs() < 3e-7);
}

/// The f32 form (A&S 7.1.26) against the f64 one over a fine sweep, and φ against its
/// definition, with multiply-adds computed as `M` says (erf(x) = 2·Φ(x·√2) − 1).
fn cdf_pdf_error<M: MulAdd>() -> (f64, f64) {
    let mut worst = (0.0f64, 0.0f64);
    for i in -6000..=6000 {
        let z = i as f64 / 1000.0;
        let (cdf, pdf) = pmixer_kernels::gelu::cdf_pdf_fast_with::<M>(z as f32);
        let (want_cdf, want_pdf) = pmixer_kernels::gelu::cdf_pdf_precise(z);
        worst.0 = worst.0.max((cdf as f64 - want_cdf).abs());
        worst.1 = worst.1.max((pdf as f64 - want_pdf).abs());
        assert!((0.0..=1.0).contains(&cdf) && pdf >= 0.0);
    }
    worst
}

#[test]
fn the_f32_normal_cdf_and_density_are_within_1e_6() {
    // Fused (every level with FMA) and unfused (the portable level on x86-64) alike.
    for (name, worst) in [("fused", cdf_pdf_error::<Fused>()), ("unfused", cdf_pdf_error::<Unfused>())] {
        assert!(worst.0 < 5e-7 && worst.1 < 2e-7, "{name}: worst |ΔΦ| {:e}, |Δφ| {:e}", worst.0, worst.1);
    }
}

fn exp_error<M: MulAdd>() -> f64 {
    let mut worst = 0.0f64;
    for i in -8700..=8800 {
        let x = i as f32 / 100.0;
        let want = (x as f64).exp();
        worst = worst.max(((exp_f32_with::<M>(x) as f64) - want).abs() / want);
    }
    worst
}

#[test]
fn exp_f32_is_accurate_over_its_range() {
    let (fused, unfused) = (exp_error::<Fused>(), exp_error::<Unfused>());
    assert!(fused < 3e-7 && unfused < 3e-7, "worst relative error {fused} (fused), {unfused} (unfused)");
    assert_eq!(exp_f32(0.0), 1.0);
    assert!(exp_f32(f32::NAN).is_nan());
    assert!(exp_f32(-1000.0) > 0.0 && exp_f32(-1000.0) < 2e-38);
    assert!(exp_f32(1000.0).is_finite());
}

fn compare<T: Real>(tol: f64) {
    for (i, c) in cases().iter().enumerate() {
        for r in check::mlp::<T>(c, 17 + i as u64, tol) {
            assert!(r.passed(), "{r}");
        }
    }
}

#[test]
fn fused_mlp_matches_reference_f32() {
    compare::<f32>(1e-5);
}

#[test]
fn fused_mlp_matches_reference_f64() {
    compare::<f64>(1e-12);
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn results_are_bitwise_independent_of_thread_count() {
    let pool = |n| rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
    for (i, c) in cases().iter().enumerate() {
        let one = pool(1).install(|| fused::<f32>(c, 99 + i as u64));
        let two = pool(2).install(|| fused::<f32>(c, 99 + i as u64));
        let three = pool(3).install(|| fused::<f32>(c, 99 + i as u64));
        for other in [&two, &three] {
            assert_eq!(bits(&one.y), bits(&other.y), "{:?}", c.s);
            assert_eq!(bits(&one.dx), bits(&other.dx));
            assert_eq!(one.dg.to_bits(), other.dg.to_bits());
            for (a, b) in one.grads.iter().zip(&other.grads) {
                assert_eq!(bits(a), bits(b));
            }
        }
    }
}

/// `Write::Set` into buffers full of NaN gives what `Write::Add` gives into zeros (the tape
/// hands fresh gradient buffers over unzeroed).
#[test]
fn setting_fresh_gradients_equals_adding_into_zeros() {
    for (i, c) in cases().iter().enumerate() {
        let added = fused_into::<f32>(c, 7 + i as u64, 0.0, Write::Add);
        let set = fused_into::<f32>(c, 7 + i as u64, f32::NAN, Write::Set);
        // Equal as numbers (0 + −0 is +0 where setting leaves −0), so no NaN survived either.
        assert!(added.dx.iter().zip(&set.dx).all(|(a, b)| a == b), "dx, {:?} {:?}", c.axis, c.s);
        assert_eq!(added.dg, set.dg);
        for (a, b) in added.grads.iter().zip(&set.grads) {
            assert!(a.iter().zip(b).all(|(a, b)| a == b), "weight gradients, {:?} {:?}", c.axis, c.s);
        }
    }
}

#[test]
fn dense_matches_reference() {
    let mut gen = Gen(5);
    let (n, ni, no) = (6, 11, 4);
    let x: Vec<f64> = gen.vec(n * ni, 1.0);
    let k: Vec<f64> = gen.vec(ni * no, 1.0);
    let c: Vec<f64> = gen.vec(no, 1.0);
    let dy: Vec<f64> = gen.vec(n * no, 1.0);
    let mut y = vec![0.0; n * no];
    dense_forward(n, ni, no, &x, &k, &c, &mut y);
    assert!(rel_err(&y, &reference::dense(n, ni, no, &x, &k, &c)) < 1e-14);
    let (mut dx, mut dk, mut dc) = (vec![0.0; n * ni], vec![0.0; ni * no], vec![0.0; no]);
    dense_backward(n, ni, no, &x, &k, &dy, &mut dx, &mut dk, &mut dc);
    for r in 0..n {
        for f in 0..ni {
            let want: f64 = (0..no).map(|o| dy[r * no + o] * k[f * no + o]).sum();
            assert!((dx[r * ni + f] - want).abs() < 1e-12);
        }
    }
    for f in 0..ni {
        for o in 0..no {
            let want: f64 = (0..n).map(|r| x[r * ni + f] * dy[r * no + o]).sum();
            assert!((dk[f * no + o] - want).abs() < 1e-12);
        }
    }
    for o in 0..no {
        let want: f64 = (0..n).map(|r| dy[r * no + o]).sum();
        assert!((dc[o] - want).abs() < 1e-12);
    }
}

/// `C ← A·B (+ C or a bias)` through the dispatcher, for every stride pattern the kernels use (and
/// one no fast path takes), against a naive f64 product.
#[test]
fn gemm_paths_match_a_naive_product() {
    for r in check::gemm_paths(true) {
        assert!(r.passed(), "{r} on {}", pmixer_kernels::simd::level().name());
    }
}

/// The dz product with the backward through GELU in its stores gives the bits of the product
/// followed by the plain loops, in both layouts, on the level in use (CI runs this file on every
/// level).
#[test]
fn the_fused_dz_product_gives_its_twins_bits() {
    for r in check::gemm_dgelu_bits(true) {
        assert!(r.passed(), "{r} on {}", pmixer_kernels::simd::level().name());
    }
}

/// The product that sums B's columns as it reads them gives the bits of the product followed
/// by the plain sums, on the level in use.
#[test]
fn the_product_with_column_sums_gives_its_twins_bits() {
    for r in check::gemm_colsum_bits(true) {
        assert!(r.passed(), "{r} on {}", pmixer_kernels::simd::level().name());
    }
}

/// The elementwise loops give the same bits whichever instruction set they run on: the tile
/// functions on the level in use (the best the CPU has, or `PMIXER_SIMD`'s: CI runs this file on
/// every level) against the scalar functions compiled for the baseline target (on x86-64,
/// `mul_add` there is the correctly rounded software `fmaf`), on 1.2 million arguments spread
/// over every exponent.
#[test]
fn gelu_tiles_give_the_scalar_bits_on_every_instruction_set() {
    let r = check::gelu_bits(2_000_000);
    assert!(r.passed(), "{r} on {}", pmixer_kernels::simd::level().name());
}
