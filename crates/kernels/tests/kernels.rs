//! The fused kernels against their reference twins, and the scalar math against known values.

use pmixer_kernels::dense::{dense_backward, dense_forward};
use pmixer_kernels::gelu::{erf, exp_f32, gelu, gelu_grad};
use pmixer_kernels::gemm::Init;
use pmixer_kernels::mlp::hidden_pad;
use pmixer_kernels::{
    backward_workspace, hidden_len, mlp_backward, mlp_forward, output_shape, reference, Axis, GateGrad, Hbw,
    MlpGrads, MlpWeights, Real, Skip, Write,
};

/// A small deterministic generator (xorshift64*), so the tests need no RNG crate.
struct Gen(u64);
impl Gen {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn vec<T: Real>(&mut self, n: usize, scale: f64) -> Vec<T> {
        (0..n).map(|_| T::from_f64((2.0 * self.uniform() - 1.0) * scale)).collect()
    }
}

/// max |a − b| / max(max |b|, 1): the error relative to the tensor's scale (tensors here are O(1):
/// inputs are, and gradient accumulators start at 1).
fn rel_err<T: Real, U: Real>(a: &[T], b: &[U]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1.0f64, |m, v| m.max(v.to_f64().abs()));
    a.iter().zip(b).fold(0.0f64, |m, (x, y)| m.max((x.to_f64() - y.to_f64()).abs())) / scale
}

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

#[test]
fn the_f32_normal_cdf_and_density_are_within_1e_6() {
    // erf(x) = 2·Φ(x·√2) − 1: the f32 form (A&S 7.1.26) against the f64 one over a fine sweep,
    // and φ against its definition.
    let mut worst = (0.0f64, 0.0f64);
    for i in -6000..=6000 {
        let z = i as f64 / 1000.0;
        let (cdf, pdf) = pmixer_kernels::gelu::cdf_pdf_fast(z as f32);
        let (want_cdf, want_pdf) = pmixer_kernels::gelu::cdf_pdf_precise(z);
        worst.0 = worst.0.max((cdf as f64 - want_cdf).abs());
        worst.1 = worst.1.max((pdf as f64 - want_pdf).abs());
        assert!((0.0..=1.0).contains(&cdf) && pdf >= 0.0);
    }
    assert!(worst.0 < 5e-7 && worst.1 < 2e-7, "worst |ΔΦ| {:e}, |Δφ| {:e}", worst.0, worst.1);
}

#[test]
fn exp_f32_is_accurate_over_its_range() {
    let mut worst = 0.0f64;
    for i in -8700..=8800 {
        let x = i as f32 / 100.0;
        let want = (x as f64).exp();
        worst = worst.max(((exp_f32(x) as f64) - want).abs() / want);
    }
    assert!(worst < 3e-7, "worst relative error {worst}");
    assert_eq!(exp_f32(0.0), 1.0);
    assert!(exp_f32(f32::NAN).is_nan());
    assert!(exp_f32(-1000.0) > 0.0 && exp_f32(-1000.0) < 2e-38);
    assert!(exp_f32(1000.0).is_finite());
}

struct Case {
    axis: Axis,
    s: Hbw,
    n_out: usize,
    /// A gated residual around the MLP ([`Skip`]) with this gate.
    gate: Option<f64>,
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for &(h, b, w) in &[(5, 3, 7), (28, 64, 28), (32, 64, 96), (1, 1, 1), (4, 130, 3)] {
        let s = Hbw { h, b, w };
        v.push(Case { axis: Axis::Rows, s, n_out: w, gate: None });
        v.push(Case { axis: Axis::Cols, s, n_out: h, gate: None });
        v.push(Case { axis: Axis::Rows, s, n_out: 1, gate: None });
        v.push(Case { axis: Axis::Cols, s, n_out: 1, gate: None });
        v.push(Case { axis: Axis::Rows, s, n_out: w, gate: Some(0.7) });
        v.push(Case { axis: Axis::Cols, s, n_out: h, gate: Some(-0.4) });
    }
    let s = Hbw { h: 5, b: 3, w: 7 };
    v.push(Case { axis: Axis::Rows, s, n_out: 4, gate: None });
    v.push(Case { axis: Axis::Cols, s, n_out: 9, gate: None });
    // The classifier's untrained gate: the MLP gets no gradient, the gate does.
    v.push(Case { axis: Axis::Rows, s, n_out: 7, gate: Some(0.0) });
    v
}

/// Everything one MLP call reads and writes, from a seed.
struct Run<T> {
    /// gelu'(z), as a training forward leaves it.
    z: Vec<T>,
    a: Vec<T>,
    y: Vec<T>,
    dx: Vec<T>,
    grads: [Vec<T>; 4],
    /// The gate's gradient (0 for an ungated case).
    dg: T,
}

fn weights<T: Real>(gen: &mut Gen, n_in: usize, n: usize) -> [Vec<T>; 4] {
    [gen.vec(n_in * n, 0.5), gen.vec(n, 0.1), gen.vec(n * n, 0.5), gen.vec(n, 0.1)]
}

fn n_in(c: &Case) -> usize {
    match c.axis {
        Axis::Rows => c.s.w,
        Axis::Cols => c.s.h,
    }
}

fn fused<T: Real>(c: &Case, seed: u64) -> Run<T> {
    // Start the accumulators from non-zero values to check that backward adds rather than sets.
    fused_into(c, seed, T::ONE, Write::Add)
}

/// The fused forward and backward, the backward's gradient buffers filled with `start` and
/// written as `write` says.
fn fused_into<T: Real>(c: &Case, seed: u64, start: T, write: Write) -> Run<T> {
    let mut gen = Gen(seed);
    let (ni, n) = (n_in(c), c.n_out);
    let w = weights::<T>(&mut gen, ni, n);
    let x: Vec<T> = gen.vec(c.s.len(), 1.5);
    let out = output_shape(c.axis, c.s, n).len();
    let dy: Vec<T> = gen.vec(out, 1.0);
    let h: Vec<T> = gen.vec(out, 1.0);
    let wts = MlpWeights { k1: &w[0], c1: &w[1], k2: &w[2], c2: &w[3] };
    let hid = hidden_len(c.axis, c.s, n);
    let (mut z, mut a, mut y) = (vec![T::ZERO; hid], vec![T::ZERO; hid], vec![T::ZERO; out]);
    let skip = c.gate.map(|g| Skip { h: &h, g: T::from_f64(g) });
    mlp_forward(c.axis, c.s, n, wts, &x, &mut z, &mut a, &mut y, true, skip);
    let mut dz = vec![T::ZERO; hid];
    let mut dx: Vec<T> = vec![start; x.len()];
    let mut g = [vec![start; ni * n], vec![start; n], vec![start; n * n], vec![start; n]];
    let [g0, g1, g2, g3] = &mut g;
    let grads = MlpGrads { k1: g0, c1: g1, k2: g2, c2: g3 };
    // A workspace full of garbage: the kernel must not depend on its contents.
    let mut work = vec![T::from_f64(7.0); backward_workspace(c.axis, c.s, n)];
    // The gate's gradient is always added to (a scalar, never handed over fresh).
    let mut dg = if c.gate.is_some() { T::ONE } else { T::ZERO };
    let gate = c.gate.map(|g| GateGrad { g: T::from_f64(g), dg: &mut dg });
    mlp_backward(
        c.axis, c.s, n, wts, &x, &z, &a, &dy, &mut dz, &mut work, &mut dx, write, grads, write, gate,
    );
    let (z, a) = (unpad(c, &z), unpad(c, &a));
    Run { z, a, y, dx, grads: g, dg }
}

/// A hidden tensor ([`hidden_len`]) in the output's layout: the column MLP's runs of items
/// without the pad after each.
fn unpad<T: Real>(c: &Case, v: &[T]) -> Vec<T> {
    match c.axis {
        Axis::Rows => v.to_vec(),
        Axis::Cols => {
            let items = c.s.b * c.s.w;
            let run = items + hidden_pad(items);
            assert_eq!(v.len(), c.n_out * run);
            v.chunks_exact(run).flat_map(|r| r[..items].to_vec()).collect()
        }
    }
}

/// The reference on the same inputs as `fused::<T>`, evaluated in f64: the exact answer up to
/// f64 rounding, so a comparison measures only the fused kernel's own error.
fn naive<T: Real>(c: &Case, seed: u64) -> Run<f64> {
    let mut gen = Gen(seed);
    let (ni, n) = (n_in(c), c.n_out);
    let up = |v: Vec<T>| v.into_iter().map(|x| x.to_f64()).collect::<Vec<f64>>();
    let w = weights::<T>(&mut gen, ni, n).map(up);
    let x = up(gen.vec::<T>(c.s.len(), 1.5));
    let out = output_shape(c.axis, c.s, n).len();
    let dy = up(gen.vec::<T>(out, 1.0));
    let h = up(gen.vec::<T>(out, 1.0));
    let wts = MlpWeights { k1: &w[0], c1: &w[1], k2: &w[2], c2: &w[3] };
    let (z, a, y) = match c.gate {
        Some(g) => reference::gated_mlp_forward(c.axis, c.s, n, wts, &x, &h, g),
        None => reference::mlp_forward(c.axis, c.s, n, wts, &x),
    };
    // A training forward leaves gelu'(z) where z was.
    let z = z.into_iter().map(gelu_grad).collect();
    let mut dx = vec![1.0; x.len()];
    let mut g = [vec![1.0; ni * n], vec![1.0; n], vec![1.0; n * n], vec![1.0; n]];
    let [g0, g1, g2, g3] = &mut g;
    let grads = MlpGrads { k1: g0, c1: g1, k2: g2, c2: g3 };
    let mut dg = 0.0;
    match c.gate {
        Some(gv) => {
            dg = 1.0;
            reference::gated_mlp_backward(c.axis, c.s, n, wts, &x, gv, &dy, &mut dx, grads, &mut dg);
        }
        None => reference::mlp_backward(c.axis, c.s, n, wts, &x, &dy, &mut dx, grads),
    }
    Run { z, a, y, dx, grads: g, dg }
}

fn compare<T: Real>(tol: f64) {
    for (i, c) in cases().iter().enumerate() {
        let seed = 17 + i as u64;
        let (f, r) = (fused::<T>(c, seed), naive::<T>(c, seed));
        let label = format!("{:?} {:?} n_out={} gate {:?}", c.axis, c.s, c.n_out, c.gate);
        let mut checks =
            vec![("z", rel_err(&f.z, &r.z)), ("a", rel_err(&f.a, &r.a)), ("y", rel_err(&f.y, &r.y))];
        checks.push(("dx", rel_err(&f.dx, &r.dx)));
        checks.push(("dg", rel_err(&[f.dg], &[r.dg])));
        for (name, (gf, gr)) in ["dK1", "dc1", "dK2", "dc2"].iter().zip(f.grads.iter().zip(&r.grads)) {
            checks.push((name, rel_err(gf, gr)));
        }
        for (name, err) in checks {
            assert!(err <= tol, "{label}: {name} differs from the reference by {err:e} (tolerance {tol:e})");
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

/// `C ← A·B + β·C` through the dispatcher, for every stride pattern the kernels use (and one no
/// fast path takes), against a naive f64 product.
#[test]
fn gemm_paths_match_a_naive_product() {
    let mut gen = Gen(77);
    // (m, k, n) covering vector tails (n or m not a multiple of 16 or 32, k not of 16) and tiny cases.
    let shapes = [
        (1, 1, 1),
        (3, 5, 7),
        (8, 28, 28),
        (13, 33, 17),
        (128, 28, 28),
        (40, 96, 96),
        (9, 130, 31),
        (2, 16, 48),
        (1750, 28, 28), // an inference chunk (B = 1000): long m on the transposed path
        (28, 256, 28),  // the longest k the direct paths take
        (20, 300, 30),  // past it
        (256, 32, 40),  // B's rows 1 KB apart (transposed problem): the packed panel
        (20, 24, 256),  // the same on the direct problem, eight panels
    ];
    for &(m, k, n) in &shapes {
        let a: Vec<f32> = gen.vec(m * k, 1.0);
        let b: Vec<f32> = gen.vec(k * n, 1.0);
        let c0: Vec<f32> = gen.vec(m * n, 1.0);
        let bias: Vec<f32> = gen.vec(n, 1.0);
        // Layouts as (rs, cs) for A (m×k), B (k×n), C (m×n), each row- or column-major.
        let layouts = [
            ((k, 1), (n, 1), (n, 1)), // direct
            ((1, m), (n, 1), (1, m)), // transposed problem
            ((k, 1), (1, k), (n, 1)), // dot products
            ((1, m), (1, k), (n, 1)), // none of them: matrixmultiply
        ];
        for (la, lb, lc) in layouts {
            for init in [Init::Zero, Init::Accumulate, Init::Bias(&bias)] {
                let mut c = vec![0f32; m * n];
                for i in 0..m {
                    for j in 0..n {
                        c[i * lc.0 + j * lc.1] = c0[i * n + j];
                    }
                }
                unsafe {
                    pmixer_kernels::gemm::gemm(
                        m,
                        k,
                        n,
                        a.as_ptr(),
                        la,
                        b.as_ptr(),
                        lb,
                        init,
                        c.as_mut_ptr(),
                        lc,
                    );
                }
                for i in 0..m {
                    for j in 0..n {
                        let mut want = match init {
                            Init::Zero => 0.0,
                            Init::Accumulate => c0[i * n + j] as f64,
                            Init::Bias(v) => v[j] as f64,
                        };
                        for p in 0..k {
                            want += a[i * la.0 + p * la.1] as f64 * b[p * lb.0 + j * lb.1] as f64;
                        }
                        let got = c[i * lc.0 + j * lc.1] as f64;
                        assert!(
                            (got - want).abs() < 1e-5 * (k as f64).sqrt().max(1.0) * 4.0,
                            "{m}×{k}×{n} {la:?} {lb:?} {lc:?} {init:?}: ({i},{j}) {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

/// The elementwise loops give the same bits whichever instruction set they run on: the tile
/// functions (dispatched here to the best level the CPU has, AVX-512 or AVX2 with hardware FMAs)
/// against the scalar functions compiled into this test for baseline x86-64 (where `mul_add` is
/// the correctly rounded software `fmaf`), on 1.2 million arguments spread over every exponent.
#[test]
fn gelu_tiles_give_the_scalar_bits_on_every_instruction_set() {
    let mut z: Vec<f32> = (0..2_000_000u32)
        .map(|i| f32::from_bits(i.wrapping_mul(2_654_435_761)))
        .filter(|v| v.is_finite() && v.abs() < 100.0)
        .collect();
    z.extend((0..200_000).map(|i| (i as f32 - 100_000.0) / 10_000.0));
    let mut kept = z.clone();
    let (mut a, mut a_only) = (vec![0f32; z.len()], vec![0f32; z.len()]);
    pmixer_kernels::simd::gelu_keep_tile(&mut kept, &mut a);
    pmixer_kernels::simd::gelu_tile(&z, &mut a_only);
    for (i, &x) in z.iter().enumerate() {
        let (g, dg) = pmixer_kernels::gelu::gelu_and_grad(x);
        assert_eq!(a[i].to_bits(), g.to_bits(), "gelu({x}) on {:?}", pmixer_kernels::simd::level());
        assert_eq!(a_only[i].to_bits(), gelu(x).to_bits(), "gelu({x})");
        assert_eq!(kept[i].to_bits(), dg.to_bits(), "gelu'({x})");
    }
}
