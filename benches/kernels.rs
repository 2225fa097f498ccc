//! The fused axis-MLP against its naive reference, both axes, forward and backward, at batch 64
//! with 28×28 (MNIST) and 32×96 (CIFAR) images; the layout decision; the GEMM paths alone against
//! the core's FMA peak. Throughput is in FLOPs, so criterion's "elem/s" reads as FLOP/s.

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use pmixer_kernels::{
    backward_workspace, hidden_len, mlp_backward, mlp_forward, output_shape, reference, Axis, BackwardIo,
    ForwardIo, Hbw, MatMut, MatRef, MlpGrads, MlpWeights, Saved, Write,
};

struct Setup {
    axis: Axis,
    s: Hbw,
    n: usize,
    n_in: usize,
    w: [Vec<f32>; 4],
    x: Vec<f32>,
    dy: Vec<f32>,
}

fn setup(axis: Axis, s: Hbw) -> Setup {
    let (n_in, n) = match axis {
        Axis::Rows => (s.w, s.w),
        Axis::Cols => (s.h, s.h),
    };
    let mut seed = 1u32;
    let mut r = |len: usize| -> Vec<f32> {
        (0..len)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    };
    let w = [r(n_in * n), r(n), r(n * n), r(n)];
    let (x, dy) = (r(s.len()), r(output_shape(axis, s, n).len()));
    Setup { axis, s, n, n_in, w, x, dy }
}

/// The backward pass's outputs and scratch for one [`Setup`].
struct Backward {
    dz: Vec<f32>,
    work: Vec<f32>,
    dx: Vec<f32>,
    grads: [Vec<f32>; 4],
}

impl Backward {
    fn new(st: &Setup) -> Self {
        let (n, n_in) = (st.n, st.n_in);
        Backward {
            dz: vec![0.0; hidden_len(st.axis, st.s, n)],
            work: vec![0.0; backward_workspace(st.axis, st.s, n)],
            dx: vec![0.0; st.x.len()],
            grads: [vec![0.0; n_in * n], vec![0.0; n], vec![0.0; n * n], vec![0.0; n]],
        }
    }

    /// The fused backward from the forward's `z` (gelu') and `a`: dx added into, the weight
    /// gradients written as `write` says.
    fn fused(&mut self, st: &Setup, z: &[f32], a: &[f32], write: Write) {
        let wts = MlpWeights { k1: &st.w[0], c1: &st.w[1], k2: &st.w[2], c2: &st.w[3] };
        let [k1, c1, k2, c2] = &mut self.grads;
        let grads = MlpGrads { k1, c1, k2, c2, write };
        let (dz, work, dx) = (&mut self.dz, &mut self.work, &mut self.dx);
        let io = BackwardIo { dy: &st.dy, dx, dx_write: Write::Add, dz, work };
        mlp_backward(st.axis, st.s, wts, Saved { x: &st.x, dgelu: z, a }, io, grads, None)
    }

    /// The reference backward (adding into dx and the weight gradients).
    fn reference(&mut self, st: &Setup) {
        let wts = MlpWeights { k1: &st.w[0], c1: &st.w[1], k2: &st.w[2], c2: &st.w[3] };
        let [k1, c1, k2, c2] = &mut self.grads;
        let grads = MlpGrads { k1, c1, k2, c2, write: Write::Add };
        reference::mlp_backward(st.axis, st.s, st.n, wts, &st.x, &st.dy, &mut self.dx, grads)
    }
}

/// The fused training forward of `st` into z (left as gelu'), a and y.
fn fused_forward(st: &Setup, wts: MlpWeights<f32>, z: &mut [f32], a: &mut [f32], y: &mut [f32]) {
    mlp_forward(st.axis, st.s, wts, ForwardIo { x: &st.x, gz: z, a, y }, true, None)
}

fn bench(c: &mut Criterion) {
    for (label, s) in [("28x28", Hbw { h: 28, b: 64, w: 28 }), ("32x96", Hbw { h: 32, b: 64, w: 96 })] {
        for axis in [Axis::Rows, Axis::Cols] {
            let st = setup(axis, s);
            let items = s.len() / st.n_in;
            let fwd_flops = 2 * items * (st.n_in * st.n + st.n * st.n);
            let wts = MlpWeights { k1: &st.w[0], c1: &st.w[1], k2: &st.w[2], c2: &st.w[3] };
            let out = st.dy.len();
            let hid = hidden_len(st.axis, st.s, st.n);
            let (mut z, mut a, mut y) = (vec![0.0; hid], vec![0.0; hid], vec![0.0; out]);
            let name = format!("{label}/{axis:?}");

            let mut g = c.benchmark_group("mlp_forward");
            g.throughput(Throughput::Elements(fwd_flops as u64));
            g.bench_function(BenchmarkId::new("fused", &name), |b| {
                b.iter(|| fused_forward(&st, wts, &mut z, &mut a, &mut y))
            });
            g.bench_function(BenchmarkId::new("reference", &name), |b| {
                b.iter(|| reference::mlp_forward(st.axis, st.s, st.n, wts, &st.x))
            });
            g.finish();

            let mut g = c.benchmark_group("mlp_backward");
            g.throughput(Throughput::Elements(2 * fwd_flops as u64));
            let mut bw = Backward::new(&st);
            g.bench_function(BenchmarkId::new("fused", &name), |b| {
                b.iter(|| bw.fused(&st, &z, &a, Write::Add))
            });
            g.bench_function(BenchmarkId::new("reference", &name), |b| b.iter(|| bw.reference(&st)));
            g.finish();
        }
    }
}

/// One shard (32 images) through one axis MLP on one thread, operands in cache: what a thread of
/// the training step does per op, without the rest of the step around it (compare with the
/// per-op GFLOP/s of `pmixer train --profile`).
fn one_shard(c: &mut Criterion) {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a one-thread pool");
    let mut g = c.benchmark_group("mlp_one_shard_one_thread");
    for (label, s) in [("28x28", Hbw { h: 28, b: 32, w: 28 }), ("32x96", Hbw { h: 32, b: 32, w: 96 })] {
        for axis in [Axis::Rows, Axis::Cols] {
            let st = setup(axis, s);
            let fwd_flops = 2 * (s.len() / st.n_in) * (st.n_in * st.n + st.n * st.n);
            let wts = MlpWeights { k1: &st.w[0], c1: &st.w[1], k2: &st.w[2], c2: &st.w[3] };
            let out = st.dy.len();
            let hid = hidden_len(st.axis, st.s, st.n);
            let (mut z, mut a, mut y) = (vec![0.0; hid], vec![0.0; hid], vec![0.0; out]);
            let mut bw = Backward::new(&st);
            g.throughput(Throughput::Elements(fwd_flops as u64));
            g.bench_function(format!("forward/{label}/{axis:?}"), |b| {
                pool.install(|| b.iter(|| fused_forward(&st, wts, &mut z, &mut a, &mut y)))
            });
            g.throughput(Throughput::Elements(2 * fwd_flops as u64));
            g.bench_function(format!("backward/{label}/{axis:?}"), |b| {
                pool.install(|| b.iter(|| bw.fused(&st, &z, &a, Write::Set)))
            });
        }
    }
    g.finish();
}

/// The layout decision, measured: one column-direction dense (Z = Kᵀ·X down every column, K H×H)
/// for a batch of 64, in (B, H, W) — 64 products of H×H by H×W, as the original computes it
/// after its permute — against (H, B, W), where it is one product over the B·W columns (the
/// path the fused kernel takes). Both split the batch over the same rayon threads.
fn layout(c: &mut Criterion) {
    use pmixer_kernels::Real;
    use rayon::prelude::*;
    for (label, h, w) in [("28x28", 28usize, 28usize), ("32x96", 32, 96)] {
        let b = 64;
        let st = setup(Axis::Cols, Hbw { h, b, w });
        let k = &st.w[0];
        let mut g = c.benchmark_group("layout_column_dense");
        g.throughput(Throughput::Elements((2 * b * h * h * w) as u64));
        let mut out = vec![0f32; b * h * w];
        g.bench_function(BenchmarkId::new("BHW_per_image_gemms", label), |bench| {
            bench.iter(|| {
                out.par_chunks_mut(h * w).enumerate().for_each(|(i, zb)| {
                    // Z_b (H×W) = Kᵀ (H×H, K read with swapped strides) · X_b (H×W).
                    let kt = MatRef::new(k, h, h, (h, 1)).t();
                    let xb = MatRef::new(&st.x[i * h * w..], h, w, (w, 1));
                    f32::gemm_fallback(kt, xb, 0.0, MatMut::new(zb, h, w, (w, 1)))
                })
            })
        });
        // In (H, B, W) the items are the B·W columns; the two halves of them are each one
        // product (Zᵀ = Kᵀ·Xᵀ), run on the two threads. `product(items, x, z)` does one half.
        let bw = b * w;
        // The views of one half's product: X (m items × H, items contiguous), K, Z like X.
        // SAFETY: `halves` passes xp and zp at item i0 of x and out, with items [i0, i0 + m) of
        // every feature row inside them and each half's items its own.
        let column_product = |m: usize, xp: *const f32, zp: *mut f32| unsafe {
            (
                MatRef::from_raw(xp, m, h, (1, bw)),
                MatRef::new(k, h, h, (h, 1)),
                MatMut::from_raw(zp, m, h, (1, bw)),
            )
        };
        let halves = |out: &mut [f32], product: &(dyn Fn(usize, *const f32, *mut f32) + Sync)| {
            let ptr = out.as_mut_ptr() as usize;
            (0..2usize).into_par_iter().for_each(|part| {
                let (i0, i1) = (part * bw / 2, (part + 1) * bw / 2);
                // SAFETY: each half writes only its own columns [i0, i1) of `out`.
                unsafe { product(i1 - i0, st.x.as_ptr().add(i0), (ptr as *mut f32).add(i0)) }
            })
        };
        g.bench_function(BenchmarkId::new("HBW_one_product", label), |bench| {
            bench.iter(|| {
                halves(&mut out, &|m, xp, zp| {
                    let (x, k, z) = column_product(m, xp, zp);
                    pmixer_kernels::gemm::gemm(x, k, z, pmixer_kernels::gemm::Init::Zero)
                })
            })
        });
        g.bench_function(BenchmarkId::new("HBW_one_product_matrixmultiply", label), |bench| {
            bench.iter(|| {
                halves(&mut out, &|m, xp, zp| {
                    let (x, k, z) = column_product(m, xp, zp);
                    f32::gemm_fallback(x, k, 0.0, z)
                })
            })
        });
        g.finish();
    }
}

/// The GEMM paths alone, one thread, on the products one chunk of the mixer computes (operands
/// in cache), each printed beside its fraction of the per-core FMA roof that
/// `pmixer_kernels::roof` measures for the dispatched instruction set.
fn gemm_paths(c: &mut Criterion) {
    use pmixer_kernels::gemm::{gemm, Init};
    use pmixer_kernels::{roof, simd};
    let level = simd::level();
    let peak = roof::fma_peak_gflops_one_thread(level);
    println!("per-core FMA roof ({}): {peak:.1} GFLOP/s", level.name());
    let mut g = c.benchmark_group("gemm_one_thread");
    let buf = |len: usize| -> Vec<f32> { (0..len).map(|i| (i % 97) as f32 / 97.0 - 0.5).collect() };
    // (label, m, k, n, A strides, B strides, C strides): row products (direct), column products
    // (transposed; CIFAR's with a packed panel, items 3072 apart), a row weight gradient (Aᵀ·dY,
    // A read down its columns, k = the chunk's items) and a column weight gradient (dot).
    let cases = [
        ("rows_128x96x96", 128, 96, 96, (96, 1), (96, 1), (96, 1)),
        ("rows_128x28x28", 128, 28, 28, (28, 1), (28, 1), (28, 1)),
        ("cols_192x32x32_stride3072", 192, 32, 32, (1, 3072), (32, 1), (1, 3072)),
        ("cols_128x28x28_stride896", 128, 28, 28, (1, 896), (28, 1), (1, 896)),
        ("wgrad_rows_96x512x96", 96, 512, 96, (1, 96), (96, 1), (96, 1)),
        ("wgrad_rows_28x896x28", 28, 896, 28, (1, 28), (28, 1), (28, 1)),
        ("dot_28x896x28_stride896", 28, 896, 28, (896, 1), (1, 896), (28, 1)),
        ("dot_32x512x32_stride3088", 32, 512, 32, (3088, 1), (1, 3072), (32, 1)),
    ];
    for (label, m, k, n, la, lb, lc) in cases {
        let (a, b, mut cm) = (buf(1 << 17), buf(1 << 17), buf(1 << 17));
        let mut run = || {
            gemm(
                MatRef::new(&a, m, k, la),
                MatRef::new(&b, k, n, lb),
                MatMut::new(&mut cm, m, n, lc),
                Init::Zero,
            )
        };
        g.throughput(Throughput::Elements((2 * m * k * n) as u64));
        g.bench_function(label, |bench| bench.iter(&mut run));
        // The same product timed here, median of 15 runs of 2,000 calls, for the fraction.
        let mut rates: Vec<f64> = (0..15)
            .map(|_| {
                let t = std::time::Instant::now();
                (0..2000).for_each(|_| run());
                (2000 * 2 * m * k * n) as f64 / t.elapsed().as_secs_f64() / 1e9
            })
            .collect();
        rates.sort_by(f64::total_cmp);
        println!("{label}: {:.1} GFLOP/s, {:.2} of the per-core roof", rates[7], rates[7] / peak);
    }
    g.finish();
}

/// The bf16 pair products ([`pmixer_kernels::bf16::gemm_pairs`]) on the shapes of
/// [`gemm_paths`]'s row and column products, one thread, operands packed once and in cache,
/// each printed beside its fraction of the per-core `VDPBF16PS` roof and its speed against the
/// f32 product of the same shape (where the CPU has AVX512_BF16).
fn bf16_products(c: &mut Criterion) {
    use pmixer_kernels::bf16::{gemm_pairs, pack_pairs, PairInit};
    use pmixer_kernels::gemm::{gemm, Init};
    use pmixer_kernels::{isa::Avx512Bf16, roof};
    let (Some(s), Some(peak)) = (Avx512Bf16::detect(), roof::bf16_peak_gflops_one_thread()) else {
        println!("bf16 pair products: this CPU has no AVX512_BF16");
        return;
    };
    println!("per-core bf16 roof: {peak:.1} GFLOP/s");
    let mut g = c.benchmark_group("bf16_one_thread");
    let buf = |len: usize| -> Vec<f32> { (0..len).map(|i| (i % 97) as f32 / 97.0 - 0.5).collect() };
    // (label, m, k, n, column product): C (m×n) = A (m×k) · B (k×n). Rows: A items × features,
    // B the weights. Columns: A the weights read transposed (m features × k), B items along
    // rows; f32 computes these as the model does, Cᵀ = Bᵀ·Aᵀ on its transposed path.
    let cases = [
        ("rows_128x96x96", 128, 96, 96, false),
        ("rows_128x28x28", 128, 28, 28, false),
        ("cols_32x32x192", 32, 32, 192, true),
        ("cols_28x28x128", 28, 28, 128, true),
    ];
    let rate = |run: &mut dyn FnMut(), flops: usize| -> f64 {
        let mut rates: Vec<f64> = (0..15)
            .map(|_| {
                let t = std::time::Instant::now();
                (0..2000).for_each(|_| run());
                (2000 * flops) as f64 / t.elapsed().as_secs_f64() / 1e9
            })
            .collect();
        rates.sort_by(f64::total_cmp);
        rates[7]
    };
    for (label, m, k, n, cols) in cases {
        let (a, b, kq) = (buf(m * k), buf(k * n), k.div_ceil(2));
        // A's elements (i, p): row-major, or (columns) a k × m weight matrix read transposed.
        let la = if cols { (1, m) } else { (k, 1) };
        let (mut ap, mut bp, mut cm) = (vec![0u32; m * kq], vec![0u32; kq * n], vec![0f32; m * n]);
        pack_pairs(MatRef::new(&a, m, k, la).t(), MatMut::new(&mut ap, kq, m, (1, kq)));
        pack_pairs(MatRef::new(&b, k, n, (n, 1)), MatMut::new(&mut bp, kq, n, (n, 1)));
        let mut run = || {
            gemm_pairs(
                s,
                MatRef::new(&ap, m, kq, (kq, 1)),
                MatRef::new(&bp, kq, n, (n, 1)),
                MatMut::new(&mut cm, m, n, (n, 1)),
                PairInit::Zero,
            )
        };
        g.throughput(Throughput::Elements((2 * m * k * n) as u64));
        g.bench_function(label, |bench| bench.iter(&mut run));
        let bf16 = rate(&mut run, 2 * m * k * n);
        let mut c32 = vec![0f32; m * n];
        let mut run32 = || {
            let (a, b) = (MatRef::new(&a, m, k, la), MatRef::new(&b, k, n, (n, 1)));
            if cols {
                gemm(b.t(), a.t(), MatMut::new(&mut c32, m, n, (n, 1)).t(), Init::Zero)
            } else {
                gemm(a, b, MatMut::new(&mut c32, m, n, (n, 1)), Init::Zero)
            }
        };
        let f32_rate = rate(&mut run32, 2 * m * k * n);
        println!(
            "{label}: bf16 {bf16:.1} GFLOP/s, {:.2} of the per-core bf16 roof; f32 {f32_rate:.1}; bf16/f32 {:.2}",
            bf16 / peak,
            bf16 / f32_rate
        );
    }
    g.finish();
}

/// One shard through one axis MLP on one thread, f32 ([`pmixer_kernels::mlp_forward`] and
/// backward) against mixed precision ([`pmixer_kernels::mlp_bf16`]), forward and backward
/// separately: the criterion timings of the bf16 kernels, and the ratio of the two, each the
/// median of 15 runs of 200 calls, printed.
fn mlp_bf16_one_shard(c: &mut Criterion) {
    use pmixer_kernels::mlp_bf16::*;
    let Some(s) = pmixer_kernels::isa::Avx512Bf16::detect() else {
        println!("mixed-precision MLP: this CPU has no AVX512_BF16");
        return;
    };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a one-thread pool");
    let median = |run: &mut dyn FnMut()| -> f64 {
        let mut t: Vec<f64> = (0..15)
            .map(|_| {
                let t0 = std::time::Instant::now();
                (0..200).for_each(|_| run());
                t0.elapsed().as_secs_f64() / 200.0
            })
            .collect();
        t.sort_by(f64::total_cmp);
        t[7]
    };
    let mut g = c.benchmark_group("mlp_bf16_one_shard_one_thread");
    for (label, sh) in [("28x28", Hbw { h: 28, b: 32, w: 28 }), ("32x96", Hbw { h: 32, b: 32, w: 96 })] {
        for axis in [Axis::Rows, Axis::Cols] {
            let st = setup(axis, sh);
            let wts = MlpWeights { k1: &st.w[0], c1: &st.w[1], k2: &st.w[2], c2: &st.w[3] };
            let (hid, out) = (hidden_len(axis, sh, st.n), st.dy.len());
            let (mut z, mut a, mut y) = (vec![0.0; hid], vec![0.0; hid], vec![0.0; out]);
            let (mut zb, mut ab) = (vec![0u16; hid], vec![0u16; hid]);
            let mut fw = vec![0.0; forward_workspace_bf16(axis, sh, st.n)];
            let mut bw = Backward::new(&st);
            let mut bwork = vec![0.0; backward_workspace_bf16(axis, sh, st.n)];
            let mut grads =
                [vec![0.0; st.n_in * st.n], vec![0.0; st.n], vec![0.0; st.n * st.n], vec![0.0; st.n]];
            let mut dx = vec![0.0; st.x.len()];
            let mut fwd32 = || fused_forward(&st, wts, &mut z, &mut a, &mut y);
            let f32_fwd = pool.install(|| median(&mut fwd32));
            let mut fwd16 = || {
                let io =
                    ForwardIoBf16 { cpu: s, x: &st.x, gz: &mut zb, a: &mut ab, y: &mut y, work: &mut fw };
                mlp_forward_bf16(axis, sh, wts, io, true, None)
            };
            let bf16_fwd = pool.install(|| median(&mut fwd16));
            g.bench_function(format!("forward/{label}/{axis:?}"), |b| pool.install(|| b.iter(&mut fwd16)));
            let mut bwd32 = || bw.fused(&st, &z, &a, Write::Set);
            let f32_bwd = pool.install(|| median(&mut bwd32));
            let mut bwd16 = || {
                let [k1, c1, k2, c2] = &mut grads;
                let grads = MlpGrads { k1, c1, k2, c2, write: Write::Set };
                let saved = SavedBf16 { x: &st.x, dgelu: &zb, a: &ab };
                let io = BackwardIoBf16 {
                    cpu: s,
                    dy: &st.dy,
                    dx: &mut dx,
                    dx_write: Write::Set,
                    work: &mut bwork,
                };
                mlp_backward_bf16(axis, sh, wts, saved, io, grads, None)
            };
            let bf16_bwd = pool.install(|| median(&mut bwd16));
            g.bench_function(format!("backward/{label}/{axis:?}"), |b| pool.install(|| b.iter(&mut bwd16)));
            println!(
                "{label}/{axis:?}: forward f32 {:.1} µs, bf16 {:.1} µs ({:.2}×); backward f32 {:.1} µs, bf16 {:.1} µs ({:.2}×)",
                f32_fwd * 1e6,
                bf16_fwd * 1e6,
                f32_fwd / bf16_fwd,
                f32_bwd * 1e6,
                bf16_bwd * 1e6,
                f32_bwd / bf16_bwd
            );
        }
    }
    g.finish();
}

criterion_group! {
    name = kernels;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench, one_shard, layout, gemm_paths, bf16_products, mlp_bf16_one_shard
}

/// `criterion_main!`, but run on a rayon worker, as `pmixer` runs its commands (see
/// `pmixer::cli::in_pool`): parallel regions forked from outside the pool cost two context
/// switches each.
fn main() {
    rayon::ThreadPoolBuilder::new().build().expect("a rayon pool").install(kernels);
    criterion::Criterion::default().configure_from_args().final_summary();
}
