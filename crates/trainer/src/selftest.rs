//! `pmixer selftest`: on the CPU it runs on, every dispatched kernel against its naive twin,
//! level by level, then a small f64 gradient check and a tiny training run. A user on a new
//! machine runs it first; CI runs it on aarch64 under an emulator (with `--threads 1`, which
//! spawns no thread at all: see `cli::in_pool`).

use crate::bench::cpu_model;
use crate::train::{OptimizerKind, Trainer};
use clap::Args;
use pmixer_autodiff::optim::AdamState;
use pmixer_kernels::check::{self, Report};
use pmixer_kernels::simd::{self, Level};
use pmixer_model::{Arch, Model, Rng, Task};

#[derive(Args, Debug)]
pub struct SelftestArgs {
    /// Worker threads (default: all cores). With 1, everything runs on the calling thread.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub threads: Option<u64>,
    /// Also check the large shapes (inference-sized chunks, CIFAR-sized MLPs): slower, and
    /// worth it on a real CPU rather than an emulator.
    #[arg(long)]
    pub full: bool,
}

/// Counts and prints the outcome of each check.
#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
    skipped: usize,
}

impl Tally {
    fn report(&mut self, level: &str, r: &Report) {
        let verdict = if r.passed() { "ok  " } else { "FAIL" };
        println!("{level:<8} {verdict} {r}");
        if r.passed() {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
    }

    fn skip(&mut self, level: &str, why: &str) {
        println!("{level:<8} skip {why}");
        self.skipped += 1;
    }
}

pub fn run(args: SelftestArgs) -> Result<(), String> {
    let levels = simd::available();
    let start = simd::level();
    let names: Vec<_> = levels.iter().map(|l| l.name()).collect();
    println!(
        "pmixer selftest on {} ({}), {} thread(s); levels this CPU has: {}; in use: {}",
        cpu_model(),
        std::env::consts::ARCH,
        rayon::current_num_threads(),
        names.join(", "),
        start.name()
    );
    let (mut tally, mut first) = (Tally::default(), None);
    let all = [Level::Avx512, Level::Avx2, Level::Neon, Level::Generic];
    for level in all {
        if !levels.contains(&level) {
            tally.skip(level.name(), "this CPU does not have it");
            continue;
        }
        simd::set_level(level)?;
        check_level(level, args.full, &mut first, &mut tally);
    }
    simd::set_level(start)?;
    check_bf16(args.full, &mut tally);
    let arch = Arch { task: Task::Classify, h: 5, w: 7, classes: 10, layers: 2 };
    let g = pmixer_model::gradcheck(arch, 2, 11);
    let name = format!(
        "f64 gradient check, classifier 5×7 of 2 layers, {} values, worst {}",
        g.checked,
        g.worst.split(':').next().unwrap_or("")
    );
    tally.report("model", &Report { name, err: g.max_err, bound: 1e-6 });
    tally.report("model", &tiny_training_run()?);
    println!("selftest: {} passed, {} failed, {} skipped", tally.passed, tally.failed, tally.skipped);
    if tally.failed > 0 {
        return Err(format!("{} check(s) failed on this CPU", tally.failed));
    }
    Ok(())
}

/// The bf16 packing against its scalar twin, and where the CPU has AVX512_BF16 the pair
/// products against f64 sums and the mixed-precision MLP against the f64 reference (skip lines
/// where it has not).
fn check_bf16(full: bool, tally: &mut Tally) {
    tally.report("bf16", &check::bf16_rounding());
    let products = check::bf16_products();
    if products.is_empty() {
        tally.skip("bf16", "pair products: this CPU has no AVX512_BF16");
    }
    for r in &products {
        tally.report("bf16", r);
    }
    if products.is_empty() {
        tally.skip("bf16", "GELU epilogues: this CPU has no AVX512_BF16");
        tally.skip("bf16", "mixed-precision MLP: this CPU has no AVX512_BF16");
        return;
    }
    if let Some(r) = check::bf16_gelu_epilogues() {
        tally.report("bf16", &r);
    }
    for (i, c) in check::cases().iter().enumerate() {
        if !full && c.s.len() > 2_000 {
            continue;
        }
        let reports = check::mlp_bf16(c, 40 + i as u64, check::MLP_BF16_TOL);
        let worst = reports.into_iter().max_by(|a, b| a.err.total_cmp(&b.err)).expect("nine tensors");
        tally.report("bf16", &worst);
    }
}

/// Bits of the first direct level's GEMM results, which every later one must reproduce.
type FirstBits = Option<(&'static str, Vec<u32>)>;

/// Every kernel at `level` (already switched to): the GEMM paths, the GELU tiles, the fused MLP
/// forward and backward (one line per case, its worst tensor); and where the level has direct
/// kernels, the GEMM's bits against the first such level checked (they must be equal: the same
/// FMA chains on every instruction set).
fn check_level(level: Level, full: bool, first: &mut FirstBits, tally: &mut Tally) {
    let name = level.name();
    for r in check::gemm_paths(full) {
        tally.report(name, &r);
    }
    for r in check::gemm_dgelu_bits(full).into_iter().chain(check::gemm_colsum_bits(full)) {
        tally.report(name, &r);
    }
    tally.report(name, &check::gelu_bits(if full { 2_000_000 } else { 200_000 }));
    for (i, c) in check::cases().iter().enumerate() {
        // Without --full, the small cases only (the batch-64 ones take minutes under qemu).
        if !full && c.s.len() > 2_000 {
            continue;
        }
        let reports = check::mlp::<f32>(c, 17 + i as u64, 1e-5);
        let worst = reports.into_iter().max_by(|a, b| a.err.total_cmp(&b.err)).expect("nine tensors");
        tally.report(name, &worst);
    }
    if level == Level::Generic {
        return;
    }
    let bits = gemm_bits();
    match first {
        None => *first = Some((name, bits)),
        Some((first_name, want)) => {
            let differ = bits.iter().zip(want.iter()).filter(|(a, b)| a != b).count();
            let label = format!("gemm results, bits of {} values against {first_name}'s", bits.len());
            tally.report(name, &Report { name: label, err: differ as f64, bound: 0.0 });
        }
    }
}

/// The bits of one product per direct path (rows narrow and wide, transposed with and without a
/// packed panel, dot), with a bias where the path takes one.
fn gemm_bits() -> Vec<u32> {
    use pmixer_kernels::gemm::{gemm, Init};
    use pmixer_kernels::{MatMut, MatRef};
    let mut gen = check::Gen(5);
    let mut out = Vec::new();
    let shapes = [(37, 28, 28, false), (9, 96, 96, false), (64, 32, 32, true), (40, 28, 30, true)];
    for (m, k, n, transposed) in shapes {
        let a: Vec<f32> = gen.vec(m * k, 1.0);
        let b: Vec<f32> = gen.vec(k * n, 1.0);
        let bias: Vec<f32> = gen.vec(n, 1.0);
        let mut c = vec![0f32; m * n];
        let (la, lc) = if transposed { ((1, m), (1, m)) } else { ((k, 1), (n, 1)) };
        gemm(
            MatRef::new(&a, m, k, la),
            MatRef::new(&b, k, n, (n, 1)),
            MatMut::new(&mut c, m, n, lc),
            Init::Bias(&bias),
        );
        let mut d = vec![0f32; m * n];
        gemm(
            MatRef::new(&a, m, k, (k, 1)),
            MatRef::new(&b, k, n, (1, k)),
            MatMut::new(&mut d, m, n, (n, 1)),
            Init::Zero,
        );
        out.extend(c.iter().chain(&d).map(|v| v.to_bits()));
    }
    out
}

/// 150 Adam steps of a 2-layer classifier on 12×12 synthetic images whose classes are easy to
/// tell apart: the mean loss of the last 10 steps must be under a third of the first 10's.
fn tiny_training_run() -> Result<Report, String> {
    let data = crate::testdata::synthetic(256, 12, 12, 3);
    let arch = Arch { task: Task::Classify, h: 12, w: 12, classes: 10, layers: 2 };
    let (model, mut params) = Model::new::<f32>(arch);
    model.init(&mut params, &mut Rng::seed(0));
    let mut adam = AdamState::new(params.len());
    let mut trainer = Trainer::new(model, OptimizerKind::Adam, 3e-3);
    let mut losses = Vec::new();
    for step in 0..150 {
        let idx: Vec<usize> = (0..32).map(|i| (step * 32 + i) % data.len()).collect();
        losses.push(trainer.step(&data, &idx, &mut params, &mut adam)?.loss as f64);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (first, last) = (mean(&losses[..10]), mean(&losses[140..]));
    let name = format!("tiny training run, 150 steps: mean loss {first:.3} → {last:.3}, ratio");
    Ok(Report { name, err: last / first, bound: 1.0 / 3.0 })
}
