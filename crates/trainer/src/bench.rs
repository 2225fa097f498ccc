//! `pmixer bench`: steady-state throughput of whole training (or inference) steps, set against
//! what a large matrix product reaches on the same threads in the same process.
//!
//! Output is one `key: value` per line. `gflops` counts the model's GEMM FLOPs (forward, plus
//! backward ≈ 2 × forward when training) at the median step rate. It is set against two
//! ceilings measured in the same process after the steps: `fma_peak_gflops`, the FMA peak of the
//! dispatched instruction set on every thread at once (`pmixer_kernels::roof`), which gives
//! `fraction_of_peak`; and `gemm_1024_gflops`, a 1024³ sgemm (matrixmultiply, split over the same
//! rayon threads), which gives `fraction_of_gemm`. `triad_gb_per_s` is the sustained memory
//! bandwidth (a STREAM triad over 3 × 256 MB).

use crate::cli::{default_data_dir, image_size};
use crate::data::{Dataset, CLASSES};
use crate::roofline;
use crate::train::{DatasetKind, Inferer, OptimizerKind, Trainer};
use clap::Args;
use pmixer_autodiff::optim::AdamState;
use pmixer_autodiff::profile::Profile;
use pmixer_autodiff::Params;
use pmixer_kernels::bf16::Precision;
use pmixer_kernels::par;
use pmixer_kernels::{roof, MatMut, MatRef, Real};
use pmixer_model::{Arch, Model, Rng, Task};
use rand::RngCore;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// mnist or cifar10.
    #[arg(long, default_value = "mnist", value_parser = |s: &str| DatasetKind::parse(s).ok_or(format!("unknown dataset {s:?}")))]
    pub dataset: DatasetKind,
    /// classify or autoencode.
    #[arg(long, default_value = "classify", value_parser = |s: &str| Task::parse(s).ok_or(format!("unknown task {s:?}")))]
    pub task: Task,
    /// Samples per shard of a training step (default 32; see `pmixer train --shard`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub shard: Option<u64>,
    /// f32 or bf16 (see `pmixer train --precision`).
    #[arg(long, default_value = "f32", value_parser = crate::cli::precision)]
    pub precision: Precision,
    /// Mixer layers (default: the original's).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub layers: Option<u64>,
    /// Samples per step.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub batch_size: u64,
    /// Worker threads (default: all cores).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub threads: Option<u64>,
    /// Seconds of measurement, split into three windows.
    #[arg(long, default_value_t = 9.0)]
    pub seconds: f64,
    /// Time inference (forward only) instead of training steps.
    #[arg(long)]
    pub eval: bool,
    /// Use random images instead of reading the dataset's files.
    #[arg(long)]
    pub synthetic: bool,
    /// Directory with the dataset's files (default data/mnist or data/cifar10).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// After the timed windows, profile as many steps again and write the step's roofline (each
    /// op's FLOPs per byte and GFLOP/s against both measured roofs) to this SVG file; the table
    /// is printed too.
    #[arg(long)]
    pub roofline: Option<PathBuf>,
    /// After the timed windows, time every parallel task of as many steps again and print the
    /// step's work, span and parallelism, and the speedups they bound on 4 to 64 cores.
    #[arg(long)]
    pub span: bool,
}

/// GFLOP/s of a 1024³ sgemm, each rayon thread taking a block of rows: the median of 5 runs.
pub fn gemm_1024_gflops() -> f64 {
    let n = 1024;
    let mut r = Rng::seed(1);
    let a: Vec<f32> = (0..n * n).map(|_| (r.next_u32() % 1000) as f32 / 1000.0).collect();
    let b = a.clone();
    let mut c = vec![0f32; n * n];
    let threads = rayon::current_num_threads();
    let rows = n.div_ceil(threads);
    let mut times: Vec<f64> = (0..6)
        .map(|_| {
            let t = Instant::now();
            c.par_chunks_mut(rows * n).enumerate().for_each(|(i, block)| {
                let m = block.len() / n;
                let a = MatRef::new(&a[i * rows * n..], m, n, (n, 1));
                f32::gemm_fallback(a, MatRef::new(&b, n, n, (n, 1)), 0.0, MatMut::new(block, m, n, (n, 1)));
            });
            t.elapsed().as_secs_f64()
        })
        .skip(1)
        .collect();
    times.sort_by(f64::total_cmp);
    2.0 * (n * n * n) as f64 / times[times.len() / 2] / 1e9
}

/// The CPU's model name, family and model as the kernel reports them (/proc/cpuinfo, x86), or
/// its implementer and part numbers (Arm), or "unknown".
pub fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    if let Some(name) = field("model name") {
        // The family and model numbers tell cores apart that a VM names alike (AMD's Zen 4 is
        // family 25, Zen 5 family 26).
        return match (field("cpu family"), field("model")) {
            (Some(f), Some(m)) => format!("{name} (family {f}, model {m})"),
            _ => name,
        };
    }
    match (field("CPU implementer"), field("CPU part")) {
        (Some(i), Some(p)) => format!("{} implementer {i} part {p}", std::env::consts::ARCH),
        _ => format!("unknown {}", std::env::consts::ARCH),
    }
}

/// The `--span` lines: per step, the work (every task's time, summed), the span (the longest
/// chain: each parallel region's longest task, serial parts whole) and their ratio, and what
/// Brent's bound T_p ≤ work/p + span predicts for p cores: a speedup over one core of at least
/// work / (work/p + span), and the samples per second that gives. Predictions, not measurements:
/// they assume tasks as long on p cores as here, and memory that keeps up.
fn span_report(total: par::WorkSpan, steps: usize, batch: usize) -> String {
    let n = steps.max(1) as f64;
    let (work, span, wall) = (total.work / n, total.span / n, total.wall / n);
    let mut out = format!(
        "span_steps: {steps}\nwall_ms: {:.3}\nwork_ms: {:.3}\nspan_ms: {:.3}\nparallelism: {:.2}\n",
        wall * 1e3,
        work * 1e3,
        span * 1e3,
        work / span.max(1e-12)
    );
    for p in [4, 8, 16, 32, 64] {
        let t = work / p as f64 + span;
        out.push_str(&format!(
            "predicted_speedup_{p}_cores: {:.2}\npredicted_samples_per_s_{p}_cores: {:.0}\n",
            work / t,
            batch as f64 / t
        ));
    }
    out
}

/// The process's peak resident set size in MB (VmHWM), where /proc exists.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// What the timed steps run on: the data, the model and its optimizer state, and the position
/// of the next batch (consecutive samples, wrapping around).
struct Subject {
    data: Dataset,
    model: Model,
    params: Params<f32>,
    adam: AdamState<f32>,
    trainer: Trainer,
    inferer: Inferer,
    losses: Vec<f64>,
    batch: usize,
    cursor: usize,
}

impl Subject {
    fn new(args: &BenchArgs) -> Result<Subject, String> {
        let batch = args.batch_size as usize;
        let data = if args.synthetic {
            let (h, w) = image_size(args.dataset);
            crate::testdata::synthetic(batch.max(1024), h, w, 7)
        } else {
            let dir = args.data_dir.clone().unwrap_or_else(|| default_data_dir(args.dataset));
            args.dataset.load(&dir).map_err(|e| e.to_string())?.0
        };
        let layers = args.layers.map_or(args.dataset.default_layers(args.task), |l| l as usize);
        let classes = if args.task == Task::Classify { CLASSES } else { 0 };
        let arch = Arch { task: args.task, h: data.h, w: data.w, classes, layers };
        let (model, mut params) = Model::new::<f32>(arch);
        model.init(&mut params, &mut Rng::seed(0));
        let adam = AdamState::new(params.len());
        let shard = args.shard.map_or(crate::train::SHARD, |n| n as usize);
        args.precision.check().map_err(|e| format!("--precision bf16: {e}"))?;
        let trainer = Trainer::new(model.clone(), OptimizerKind::Adam, 1e-3)
            .with_shard(shard)
            .with_precision(args.precision);
        let (inferer, losses) = (Inferer::default().with_precision(args.precision), Vec::new());
        Ok(Subject { data, model, params, adam, trainer, inferer, losses, batch, cursor: 0 })
    }

    fn next_batch(&mut self) -> Vec<usize> {
        let (n, b) = (self.data.len(), self.batch);
        let idx: Vec<usize> = (self.cursor..self.cursor + b).map(|i| i % n).collect();
        self.cursor = (self.cursor + b) % n;
        idx
    }

    /// One training step, or with `eval` one inference batch, on the next batch.
    fn step(&mut self, eval: bool) -> Result<(), String> {
        let idx = self.next_batch();
        if eval {
            self.losses.clear();
            self.inferer.run(&self.model, &self.params, &self.data, &idx, &mut self.losses);
            Ok(())
        } else {
            self.trainer.step(&self.data, &idx, &mut self.params, &mut self.adam).map(|_| ())
        }
    }

    /// Samples per second in three windows of `seconds / 3` each, after a warm-up, sorted.
    fn rates(&mut self, seconds: f64, eval: bool) -> Result<[f64; 3], String> {
        let warm = Instant::now();
        while warm.elapsed().as_secs_f64() < (seconds / 10.0).max(0.5) {
            self.step(eval)?;
        }
        let mut rates = [0.0; 3];
        for r in &mut rates {
            let t = Instant::now();
            let mut samples = 0;
            while t.elapsed().as_secs_f64() < seconds / 3.0 {
                self.step(eval)?;
                samples += self.batch;
            }
            *r = samples as f64 / t.elapsed().as_secs_f64();
        }
        rates.sort_by(f64::total_cmp);
        Ok(rates)
    }
}

/// The machine's measured roofs: the FMA peak of the dispatched instruction set (all threads,
/// one thread), the triad bandwidth and the 1024³ GEMM.
struct Roofs {
    peak: f64,
    peak_one: f64,
    triad: f64,
    gemm: f64,
    /// The bf16 pair-product roof, where the CPU has it.
    bf16: Option<f64>,
}

impl Roofs {
    fn measure(level: pmixer_kernels::simd::Level) -> Roofs {
        Roofs {
            peak: roof::fma_peak_gflops(level),
            peak_one: roof::fma_peak_gflops_one_thread(level),
            triad: roof::triad_gb_per_s(1 << 26),
            gemm: gemm_1024_gflops(),
            bf16: roof::bf16_peak_gflops(),
        }
    }
}

/// `pmixer bench`: the step rate in three windows (median, min, max) against the measured roofs,
/// then with `--roofline` and `--span` the profile and the work/span passes.
pub fn run(args: BenchArgs) -> Result<(), String> {
    if !(args.seconds.is_finite() && args.seconds > 0.0) {
        return Err(format!("--seconds must be a positive number, not {}", args.seconds));
    }
    if args.eval && args.roofline.is_some() {
        return Err(
            "--roofline profiles training steps; inference (--eval) runs without a tape to profile".into()
        );
    }
    if args.eval && args.span {
        return Err("--span measures training steps, not inference (--eval)".into());
    }
    let mut subject = Subject::new(&args)?;
    let rates = subject.rates(args.seconds, args.eval)?;
    // Read before the roofs are measured: the triad's arrays are not the model's memory.
    let rss = peak_rss_mb();
    let level = pmixer_kernels::simd::level();
    let roofs = Roofs::measure(level);
    let (median, b, data) = (rates[1], subject.batch, &subject.data);
    let flops = subject.model.flops_per_sample() as f64 * if args.eval { 1.0 } else { 3.0 };
    let gflops = median * flops / 1e9;
    let key = if args.eval { "eval_samples_per_s" } else { "train_samples_per_s" };
    let layers = subject.model.arch.layers;
    println!(
        "config: {} {} {}x{} layers={layers} batch={b}",
        args.dataset.name(),
        args.task.name(),
        data.h,
        data.w
    );
    println!("cpu: {}", cpu_model());
    println!("simd: {}", level.name());
    println!("threads: {}", rayon::current_num_threads());
    println!("{key}: {median:.1}");
    println!("{key}_min: {:.1}", rates[0]);
    println!("{key}_max: {:.1}", rates[2]);
    println!("flops_per_sample: {flops:.0}");
    println!("gflops: {gflops:.2}");
    println!("fma_peak_gflops: {:.2}", roofs.peak);
    println!("fma_peak_gflops_per_thread: {:.2}", roofs.peak_one);
    println!("fraction_of_peak: {:.3}", gflops / roofs.peak);
    // What this run computed in, what the CPU offers, and its bf16 roof where it has one.
    println!("precision: {}", args.precision.name());
    let offered: Vec<_> = Precision::available().into_iter().map(Precision::name).collect();
    println!("precisions: {}", offered.join(", "));
    match roofs.bf16 {
        Some(bf16) => println!("bf16_peak_gflops: {bf16:.2}"),
        None => println!("bf16_peak_gflops: none (this CPU has no AVX512_BF16)"),
    }
    println!("triad_gb_per_s: {:.1}", roofs.triad);
    println!("gemm_1024_gflops: {:.2}", roofs.gemm);
    println!("fraction_of_gemm: {:.3}", gflops / roofs.gemm);
    if let Some(rss) = rss {
        println!("peak_rss_mb: {rss:.1}");
    }
    if let Some(path) = &args.roofline {
        roofline_pass(&mut subject, &args, &roofs, path)?;
    }
    if args.span {
        span_pass(&mut subject, args.seconds)?;
    }
    Ok(())
}

/// `--roofline`: profiles as many training steps as one window, prints each op's point against
/// both roofs (the per-thread FMA peak, the triad's bandwidth per thread) and draws them.
fn roofline_pass(s: &mut Subject, args: &BenchArgs, roofs: &Roofs, path: &Path) -> Result<(), String> {
    s.trainer.set_profile(Some(Profile::default()));
    let t = Instant::now();
    while t.elapsed().as_secs_f64() < args.seconds / 3.0 {
        s.step(false)?;
    }
    let profile = s.trainer.take_profile().expect("profiling was switched on");
    let threads = rayon::current_num_threads();
    let bandwidth = roofs.triad / threads as f64;
    let points = roofline::points(&profile);
    print!("{}", roofline::table(&points, roofs.peak_one, bandwidth));
    let (dataset, task, level) = (args.dataset.name(), args.task.name(), pmixer_kernels::simd::level());
    let title = format!("{dataset} {task} step, {threads} threads, {} ({})", level.name(), cpu_model());
    let svg = roofline::svg(&title, &points, roofs.peak_one, bandwidth);
    crate::cli::write_atomic(path, svg.as_bytes())?;
    println!("roofline: {}", path.display());
    Ok(())
}

/// `--span`: times every parallel task of as many training steps as one window and prints the
/// work, span and predicted speedups ([`span_report`]).
fn span_pass(s: &mut Subject, seconds: f64) -> Result<(), String> {
    let (mut total, mut steps) = (par::WorkSpan::default(), 0usize);
    par::set_enabled(true);
    let t = Instant::now();
    while t.elapsed().as_secs_f64() < seconds / 3.0 {
        let (r, ws) = par::measure(|| s.step(false));
        r?;
        (total.work, total.span, total.wall) =
            (total.work + ws.work, total.span + ws.span, total.wall + ws.wall);
        steps += 1;
    }
    par::set_enabled(false);
    print!("{}", span_report(total, steps, s.batch));
    Ok(())
}
