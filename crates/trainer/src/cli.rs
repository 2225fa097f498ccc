//! The `pmixer` command line: argument definitions and what each subcommand does.

use crate::bench;
use crate::recipe::{Defaults, Recipe, Schedule};
use crate::train::{self, DatasetKind, OptimizerKind, Stop, TrainConfig, TrainState};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use pmixer_kernels::bf16::Precision;
use pmixer_model::{Arch, Checkpoint, Model, Task};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

#[derive(Parser, Debug)]
#[command(
    name = "pmixer",
    version,
    about = "Train the patchless MLP-Mixer on CPUs, from raw IDX and CIFAR files"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train a model (the default: `pmixer` alone trains the MNIST classifier from data/mnist).
    Train(Box<TrainArgs>),
    /// Evaluate a checkpoint on a test set.
    Eval(EvalArgs),
    /// Print the layers, parameter counts and forward FLOPs of a model.
    Summary(SummaryArgs),
    /// Time training (or inference) steps and compare with a large GEMM on this machine.
    Bench(bench::BenchArgs),
    /// Draw a test image beside the map of |∂ logit(predicted class) / ∂ pixel|.
    Saliency(SaliencyArgs),
    /// Classify images: PGM/PPM files, or records of IDX/CIFAR files as FILE:INDEX.
    Predict(PredictArgs),
    /// Check every kernel this CPU can run against its naive twin, then a gradient check and a
    /// tiny training run: run it first on a new machine.
    Selftest(crate::selftest::SelftestArgs),
}

#[derive(Args, Debug)]
pub struct SaliencyArgs {
    /// A classifier checkpoint.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Which test image.
    #[arg(long)]
    pub index: usize,
    /// Where to write the picture.
    #[arg(long, default_value = "saliency.png")]
    pub out: PathBuf,
    /// mnist or cifar10 (default: the one the checkpoint was trained on).
    #[arg(long, value_parser = dataset)]
    pub dataset: Option<DatasetKind>,
    /// Directory with the dataset's files (default: the training run's).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// A classifier checkpoint.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// PGM (P5) or PPM (P6) images of the model's size, or FILE:INDEX for image INDEX of an IDX
    /// image file or a CIFAR-10 batch.
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Print each image's logits (every class, in class order, each the shortest decimal that
    /// reads back as the same f32) instead of the three likeliest classes.
    #[arg(long)]
    pub logits: bool,
}

fn positive_f64(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a finite number greater than 0")),
    }
}

fn dataset(s: &str) -> Result<DatasetKind, String> {
    DatasetKind::parse(s).ok_or_else(|| format!("unknown dataset {s:?} (expected mnist or cifar10)"))
}

pub fn precision(s: &str) -> Result<Precision, String> {
    Precision::parse(s).ok_or_else(|| format!("unknown precision {s:?} (expected f32 or bf16)"))
}

fn task(s: &str) -> Result<Task, String> {
    Task::parse(s).ok_or_else(|| format!("unknown task {s:?} (expected classify or autoencode)"))
}

fn optimizer(s: &str) -> Result<OptimizerKind, String> {
    OptimizerKind::parse(s).ok_or_else(|| format!("unknown optimizer {s:?} (expected adam or sgd)"))
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// mnist or cifar10.
    #[arg(long, value_parser = dataset)]
    pub dataset: Option<DatasetKind>,
    /// Directory with the dataset's files (default data/mnist for mnist, data/cifar10 for cifar10).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// classify or autoencode.
    #[arg(long, value_parser = task)]
    pub task: Option<Task>,
    /// Mixer layers (default: 16 for the MNIST classifier, 32 for CIFAR, 2 for autoencoders).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub layers: Option<u64>,
    /// Epochs to train for (default: the recipe's, 10 for seed; with --resume, the run's own).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub epochs: Option<u64>,
    /// Samples per step (default: the recipe's, 64 for seed).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub batch_size: Option<u64>,
    /// Learning rate, the peak of the schedule (default: the recipe's, 1e-3 for seed).
    #[arg(long, value_parser = positive_f64, allow_hyphen_values = true)]
    pub lr: Option<f64>,
    /// seed (the original's training) or strong (augmentation, label smoothing, AdamW, warmup
    /// and cosine decay, with defaults per image size: README, "Training recipe"). Each part is
    /// also a flag of its own, which overrides the recipe's value.
    #[arg(long, default_value = "seed", conflicts_with = "resume")]
    pub recipe: String,
    /// Zero pixels padded on each side before a random crop (0: none).
    #[arg(long, conflicts_with = "resume", value_parser = clap::value_parser!(u64).range(0..=1024))]
    pub crop_pad: Option<u64>,
    /// Flip half the images horizontally (the strong recipe does for CIFAR).
    #[arg(long, conflicts_with_all = ["resume", "no_flip"])]
    pub flip: bool,
    /// Never flip (the strong recipe's default for MNIST-sized images).
    #[arg(long, conflicts_with = "resume")]
    pub no_flip: bool,
    /// Zero a random square of this many pixels a side in each image (cutout; 0: none).
    #[arg(long, conflicts_with = "resume", value_parser = clap::value_parser!(u64).range(0..=4096))]
    pub cutout: Option<u64>,
    /// The probability that an image gets a box of another training image pasted over it, the
    /// target mixing the two labels by area (CutMix; 0: never).
    #[arg(long, conflicts_with = "resume", allow_hyphen_values = true)]
    pub cutmix: Option<f64>,
    /// Test on each image and its mirror image, averaging the logits (classifier only; the
    /// strong recipe's default for CIFAR).
    #[arg(long, conflicts_with_all = ["resume", "no_test_flip"])]
    pub test_flip: bool,
    /// Test on the images alone.
    #[arg(long, conflicts_with = "resume")]
    pub no_test_flip: bool,
    /// Label smoothing ε, in [0, 1).
    #[arg(long, conflicts_with = "resume", allow_hyphen_values = true)]
    pub label_smoothing: Option<f64>,
    /// AdamW's decoupled weight decay on the kernels (0: plain Adam).
    #[arg(long, conflicts_with = "resume", allow_hyphen_values = true)]
    pub weight_decay: Option<f64>,
    /// Epochs of linear warmup before the cosine decay.
    #[arg(long, conflicts_with = "resume", allow_hyphen_values = true)]
    pub warmup_epochs: Option<f64>,
    /// constant or cosine (linear warmup, then cosine decay towards 0 at the end of the run).
    #[arg(long, conflicts_with = "resume", value_parser = |s: &str| Schedule::parse(s).ok_or(format!("unknown schedule {s:?} (expected constant or cosine)")))]
    pub schedule: Option<Schedule>,
    /// adam or sgd.
    #[arg(long, default_value = "adam", value_parser = optimizer)]
    pub optimizer: OptimizerKind,
    /// Seed for initialisation and shuffling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads (default: all cores). Results do not depend on it.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub threads: Option<u64>,
    /// Train on the first N training samples only.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Keep the file order instead of reshuffling every epoch.
    #[arg(long)]
    pub no_shuffle: bool,
    /// Samples per shard: each batch is split into shards of this many samples, run
    /// concurrently (default 32). Smaller shards give many-core machines more pieces of work
    /// (README, "Scaling"); the size is part of the run's arithmetic and recorded in its
    /// checkpoint, which a resume keeps.
    #[arg(long, conflicts_with = "resume", value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub shard: Option<u64>,
    /// f32, or bf16: the axis-MLPs' products on bf16 operands (f32 accumulation) and their saved
    /// activations in bf16, on CPUs with AVX512_BF16. Recorded in the checkpoint, which a resume
    /// keeps.
    #[arg(long, default_value = "f32", conflicts_with = "resume", value_parser = precision)]
    pub precision: Precision,
    /// Start from the weights of this checkpoint instead of a random initialisation.
    #[arg(long, conflicts_with = "resume")]
    pub init: Option<PathBuf>,
    /// Run directory for checkpoint.safetensors and metrics.csv (default runs/DATASET-TASK-TIME).
    #[arg(long, conflicts_with = "resume")]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// At the end, print where the time went: each op's forward and backward, the batch
    /// assembly and the optimizer (calls, total ms, share of the step, GFLOP/s).
    #[arg(long)]
    pub profile: bool,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// The checkpoint to evaluate (its metadata gives the architecture).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// mnist or cifar10 (default: the one the checkpoint was trained on, else mnist).
    #[arg(long, value_parser = dataset)]
    pub dataset: Option<DatasetKind>,
    /// Directory with the dataset's files (default: the training run's).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Samples per evaluation step.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub batch_size: u64,
    /// Worker threads (default: all cores).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub threads: Option<u64>,
    /// Average each test image's logits with its mirror image's (default: as the run tested).
    #[arg(long, conflicts_with = "no_test_flip")]
    pub test_flip: bool,
    /// Test on the images alone, even if the run averaged with mirror images.
    #[arg(long)]
    pub no_test_flip: bool,
    /// f32 or bf16 (default: the precision the checkpoint was trained in).
    #[arg(long, value_parser = precision)]
    pub precision: Option<Precision>,
}

#[derive(Args, Debug)]
pub struct SummaryArgs {
    /// mnist (28×28) or cifar10 (32×96).
    #[arg(long, default_value = "mnist", value_parser = dataset)]
    pub dataset: DatasetKind,
    /// classify or autoencode.
    #[arg(long, default_value = "classify", value_parser = task)]
    pub task: Task,
    /// Mixer layers (default: the original's for the dataset and task).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub layers: Option<u64>,
}

/// The image size each dataset's files give (checked again against the files when training).
pub fn image_size(d: DatasetKind) -> (usize, usize) {
    match d {
        DatasetKind::Mnist => (28, 28),
        DatasetKind::Cifar10 => (32, 96),
    }
}

pub fn default_data_dir(d: DatasetKind) -> PathBuf {
    PathBuf::from(match d {
        DatasetKind::Mnist => "data/mnist",
        DatasetKind::Cifar10 => "data/cifar10",
    })
}

impl Command {
    /// The `--threads` the command was given, if it takes one.
    pub fn threads(&self) -> Option<u64> {
        match self {
            Command::Train(a) => a.threads,
            Command::Eval(a) => a.threads,
            Command::Bench(a) => a.threads,
            Command::Selftest(a) => a.threads,
            Command::Summary(_) | Command::Saliency(_) | Command::Predict(_) => None,
        }
    }
}

/// Runs `f` on a worker of a rayon pool of `threads` threads (default: one per core).
///
/// Running the command *inside* the pool matters for speed: every kernel splits its work with
/// rayon, and a parallel region forked from a thread outside the pool is injected into it and
/// waited for with a lock, two context switches each time (about 150 regions per MNIST training
/// step). Forked from a worker, the same region is pushed onto that worker's own queue, which the
/// other workers steal from (measured: `docs/performance.md`).
pub fn in_pool<R: Send>(
    threads: Option<u64>,
    f: impl FnOnce() -> Result<R, String> + Send,
) -> Result<R, String> {
    if threads == Some(1) {
        // One thread: the calling thread becomes the global pool's only worker, so no thread is
        // ever spawned and every parallel region runs here, in order. (This is how `pmixer
        // selftest --threads 1` runs under an emulator that cannot create threads.) If the
        // global pool exists already (a test calling this twice), a pool of one is built.
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).use_current_thread();
        if one.build_global().is_ok() {
            return f();
        }
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.unwrap_or(0) as usize)
        .build()
        .map_err(|e| format!("cannot start {} threads: {e}", threads.unwrap_or(0)))?;
    pool.install(f)
}

/// Seconds since 1970 as `YYYYMMDD-HHMMSS` (UTC), for default run directory names.
fn timestamp() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}", rem / 3600, rem / 60 % 60, rem % 60)
}

/// Checks before any training that `dir` can be created and written.
fn check_writable(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("{}: cannot create the run directory: {e}", dir.display()))?;
    let probe = dir.join(".pmixer-write-test");
    std::fs::write(&probe, b"ok")
        .map_err(|e| format!("{}: run directory is not writable: {e}", dir.display()))?;
    std::fs::remove_file(&probe).map_err(|e| format!("{}: {e}", probe.display()))
}

/// Opens `metrics.csv` for a run that has completed `st.epoch` epochs: a new run gets the header;
/// a resumed run keeps the lines of the epochs its checkpoint holds and drops any later one (an
/// epoch whose checkpoint was never written). Lines lost with the file are rebuilt from the
/// checkpoint's history, without timings.
fn start_metrics(path: &Path, st: &TrainState) -> Result<(), String> {
    let task = st.model.arch.task;
    let old = match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("{}: {e}", path.display())),
        Ok(m) if !m.is_file() => return Err(format!("{}: exists and is not a regular file", path.display())),
        Ok(_) => {
            std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?
        }
    };
    let mut out = train::metrics_header(task);
    for r in &st.history {
        let prefix = format!("{},", r.epoch);
        match old.lines().skip(1).find(|l| l.starts_with(&prefix)) {
            Some(line) => {
                out.push_str(line);
                out.push('\n');
            }
            None => out.push_str(&train::metrics_line(r)),
        }
    }
    write_atomic(path, out.as_bytes())
}

/// Appends `bytes` to `path`, reporting any error.
fn append(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(bytes).and_then(|_| f.sync_data()))
        .map_err(|e| format!("{}: cannot write: {e}", path.display()))
}

/// Writes `bytes` to `path` atomically ([`pmixer_model::checkpoint::write_atomic`]), the error
/// naming the file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    pmixer_model::checkpoint::write_atomic(path, bytes)
        .map_err(|e| format!("{}: cannot write: {e}", path.display()))
}

/// `pmixer train`: a new run, or one resumed from its checkpoint, one epoch after another, each
/// ending with a checkpoint, a metrics line and the curves.
pub fn train(args: TrainArgs) -> Result<(), String> {
    let (cfg, resumed, run_dir) = match &args.resume {
        Some(dir) => resume_config(dir, args.epochs)?,
        None => new_config(&args)?,
    };
    cfg.precision.check().map_err(|e| format!("--precision bf16: {e}"))?;
    check_writable(&run_dir)?;
    let (train_set, test_set) = cfg.dataset.load(&cfg.data_dir).map_err(|e| e.to_string())?;
    let arch = Arch {
        task: cfg.task,
        h: train_set.h,
        w: train_set.w,
        classes: if cfg.task == Task::Classify { crate::data::CLASSES } else { 0 },
        layers: cfg.layers,
    };
    cfg.recipe.check(cfg.epochs, &arch, cfg.dataset.channels())?;
    let mut state = initial_state(&args, &cfg, arch, resumed)?;
    let n = cfg.limit.map_or(train_set.len(), |l| l.min(train_set.len()));
    eprintln!(
        "training {} {} ({}×{}, {} layers, {} parameters) on {} samples, testing on {}; {} threads; run directory {}",
        cfg.dataset.name(),
        cfg.task.name(),
        arch.h,
        arch.w,
        arch.layers,
        state.params.len(),
        n,
        test_set.len(),
        rayon::current_num_threads(),
        run_dir.display()
    );
    if state.epoch > 0 {
        eprintln!("resuming after epoch {} of {}", state.epoch, cfg.epochs);
    }
    let ck_path = run_dir.join("checkpoint.safetensors");
    let metrics_path = run_dir.join("metrics.csv");
    start_metrics(&metrics_path, &state)?;
    let title = format!("{} {}", cfg.dataset.name(), cfg.task.name());
    if !state.history.is_empty() {
        write_atomic(
            &run_dir.join("curves.svg"),
            crate::svg::curves(cfg.task, &title, &state.history).as_bytes(),
        )?;
    }
    let after_epoch = |st: &TrainState| -> Result<(), String> {
        let Some(r) = st.history.last() else { return Ok(()) };
        let m = train::metric_name(cfg.task);
        println!(
            "epoch {}/{}  train_loss {:.4}  train_{m} {:.4}  test_loss {:.4}  test_{m} {:.4}  time {:.1}s  {:.0} samples/s  lr {:.2e}",
            r.epoch, cfg.epochs, r.train.loss, r.train.metric, r.test.loss, r.test.metric, r.seconds, r.samples_per_s, r.lr
        );
        save_checkpoint(&cfg, st, &ck_path)?;
        append(&metrics_path, train::metrics_line(r).as_bytes())?;
        write_atomic(
            &run_dir.join("curves.svg"),
            crate::svg::curves(cfg.task, &title, &st.history).as_bytes(),
        )?;
        if cfg.task == Task::Autoencode {
            let rgb = cfg.dataset == DatasetKind::Cifar10;
            let grid = crate::visual::reconstructions(&st.model, &st.params, &test_set, rgb);
            write_atomic(&run_dir.join("reconstructions.png"), &grid.encode())?;
        }
        Ok(())
    };
    crate::signal::install();
    let mut profile = args.profile.then(pmixer_autodiff::profile::Profile::default);
    let result = train::run_epochs(
        &cfg,
        &mut state,
        &train_set,
        &test_set,
        progress(cfg.batch_size),
        after_epoch,
        &mut profile,
    );
    if let Some(p) = profile {
        let level = pmixer_kernels::simd::level();
        let roof = pmixer_kernels::roof::fma_peak_gflops_one_thread(level);
        let threads = rayon::current_num_threads();
        println!(
            "profile of the training steps ({threads} threads, {}):\n{}",
            level.name(),
            p.table(Some(roof))
        );
    }
    match result {
        Ok(()) => {
            println!("checkpoint: {}", ck_path.display());
            Ok(())
        }
        Err(Stop::Failed(e)) => Err(e),
        Err(Stop::Interrupted { epoch, step }) => {
            save_checkpoint(&cfg, &state, &ck_path)?;
            Err(format!(
                "interrupted at epoch {epoch}, step {step}; checkpoint saved to {}\nresume with: pmixer train --resume {}",
                ck_path.display(),
                run_dir.display()
            ))
        }
    }
}

/// The configuration and state of the run in `dir` (`--resume`), with `--epochs` raised if given.
fn resume_config(
    dir: &Path,
    epochs: Option<u64>,
) -> Result<(TrainConfig, Option<TrainState>, PathBuf), String> {
    let path = dir.join("checkpoint.safetensors");
    let ck = Checkpoint::load(&path)?;
    let (mut cfg, state) = train::from_checkpoint(&ck).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(e) = epochs {
        cfg.epochs = e as usize;
    }
    Ok((cfg, Some(state), dir.to_path_buf()))
}

/// A new run's configuration from the flags, and its run directory, which must not hold a run.
fn new_config(args: &TrainArgs) -> Result<(TrainConfig, Option<TrainState>, PathBuf), String> {
    let dataset = args.dataset.unwrap_or(DatasetKind::Mnist);
    let task = args.task.unwrap_or(Task::Classify);
    let (recipe, defaults) = recipe_from_flags(args, dataset)?;
    let cfg = TrainConfig {
        dataset,
        data_dir: args.data_dir.clone().unwrap_or_else(|| default_data_dir(dataset)),
        task,
        layers: args.layers.map_or(dataset.default_layers(task), |l| l as usize),
        epochs: args.epochs.map_or(defaults.epochs, |e| e as usize),
        batch_size: args.batch_size.map_or(defaults.batch_size, |b| b as usize),
        lr: args.lr.unwrap_or(defaults.lr),
        optimizer: args.optimizer,
        seed: args.seed,
        limit: args.limit.map(|l| l as usize),
        shuffle: !args.no_shuffle,
        shard: args.shard.map_or(train::SHARD, |n| n as usize),
        recipe,
        precision: args.precision,
    };
    let run_dir = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("runs/{}-{}-{}", dataset.name(), task.name(), timestamp())));
    if run_dir.join("checkpoint.safetensors").exists() {
        return Err(format!(
            "{}: already holds a run; continue it with --resume {0} or choose another --out",
            run_dir.display()
        ));
    }
    Ok((cfg, None, run_dir))
}

/// `--recipe` with each of its parts overridden by its own flag where given.
fn recipe_from_flags(args: &TrainArgs, dataset: DatasetKind) -> Result<(Recipe, Defaults), String> {
    let (mut r, defaults) = Recipe::named(&args.recipe, dataset).map_err(|e| format!("--recipe: {e}"))?;
    if let Some(p) = args.crop_pad {
        r.crop_pad = p as usize;
    }
    r.flip = (r.flip || args.flip) && !args.no_flip;
    if let Some(c) = args.cutout {
        r.cutout = c as usize;
    }
    r.cutmix = args.cutmix.unwrap_or(r.cutmix);
    // The recipe's test-time flips are for classifiers; asked for explicitly, Recipe::check
    // refuses them on an autoencoder.
    r.test_flip = (r.test_flip && args.task.unwrap_or(Task::Classify) == Task::Classify || args.test_flip)
        && !args.no_test_flip;
    r.label_smoothing = args.label_smoothing.unwrap_or(r.label_smoothing);
    r.weight_decay = args.weight_decay.unwrap_or(r.weight_decay);
    r.warmup_epochs = args.warmup_epochs.unwrap_or(r.warmup_epochs);
    r.schedule = args.schedule.unwrap_or(r.schedule);
    Ok((r, defaults))
}

/// The resumed state, checked against the model the data needs, or a fresh one (from `--init`'s
/// checkpoint if given).
fn initial_state(
    args: &TrainArgs,
    cfg: &TrainConfig,
    arch: Arch,
    resumed: Option<TrainState>,
) -> Result<TrainState, String> {
    match resumed {
        Some(s) if s.model.arch != arch => Err(format!(
            "the checkpoint's model, {}, does not fit the data, which needs {}",
            s.model.arch, arch
        )),
        Some(s) => Ok(s),
        None => {
            let init = args.init.as_deref().map(Checkpoint::load).transpose()?;
            train::fresh_state(cfg, arch, init.as_ref())
                .map_err(|e| format!("{}: {e}", args.init.as_deref().unwrap_or(Path::new("")).display()))
        }
    }
}

fn save_checkpoint(cfg: &TrainConfig, state: &TrainState, path: &Path) -> Result<(), String> {
    train::to_checkpoint(cfg, state)
        .save(path)
        .map_err(|e| format!("{}: cannot write checkpoint: {e}", path.display()))
}

/// The progress report, called after each step with (step, steps, loss, learning rate): a bar
/// on a terminal, else a line every 15 s, with the rate in samples per second over the steps
/// this process ran. Returns whether to go on (false after Ctrl-C, or after the step
/// `PMIXER_INTERRUPT_AFTER_STEP` names, which tests of the interrupt path set).
fn progress(batch: usize) -> impl FnMut(usize, usize, f64, f64) -> bool {
    let tty = std::io::stderr().is_terminal();
    let stop_after: Option<usize> =
        std::env::var("PMIXER_INTERRUPT_AFTER_STEP").ok().and_then(|v| v.parse().ok());
    let mut bar: Option<ProgressBar> = None;
    let mut last_report = std::time::Instant::now();
    let mut since: Option<(usize, std::time::Instant)> = None;
    move |step: usize, steps: usize, loss: f64, lr: f64| {
        let (first, t0) = *since.get_or_insert((step, std::time::Instant::now()));
        let rate = ((step - first) * batch) as f64 / t0.elapsed().as_secs_f64().max(1e-9);
        let msg = format!("loss {loss:.4}  lr {lr:.2e}  {} samples/s", group(rate as u64));
        if tty {
            let b = bar.get_or_insert_with(|| {
                let b = ProgressBar::new(steps as u64);
                b.set_style(
                    ProgressStyle::with_template("{bar:40} {pos}/{len} steps  {msg}  eta {eta}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                b
            });
            b.set_position(step as u64);
            b.set_message(msg);
            if step == steps {
                b.finish_and_clear();
                bar = None;
            }
        } else if last_report.elapsed().as_secs() >= 15 || step == steps {
            eprintln!("  step {step}/{steps}  {msg}");
            last_report = std::time::Instant::now();
        }
        if step == steps {
            since = None;
        }
        !crate::signal::interrupted() && stop_after.is_none_or(|n| step < n)
    }
}

/// A trained model, the recipe it was trained with, and the test set to use with it.
struct Trained {
    model: Model,
    params: pmixer_autodiff::Params<f32>,
    recipe: Recipe,
    /// The precision the checkpoint was trained in (f32 for checkpoints from before bf16).
    precision: Precision,
    dataset: DatasetKind,
    test: crate::data::Dataset,
}

/// A checkpoint's model and recipe, and the test set to use with it: the dataset and directory
/// given, else the ones it was trained on, checked to have the model's image size.
fn model_and_test_set(
    checkpoint: &Path,
    dataset: Option<DatasetKind>,
    data_dir: Option<PathBuf>,
) -> Result<Trained, String> {
    let ck = Checkpoint::load(checkpoint)?;
    let (model, params) =
        Model::from_checkpoint(&ck).map_err(|e| format!("{}: {e}", checkpoint.display()))?;
    let recipe = Recipe::from_metadata(|k| ck.metadata.get(k).cloned())
        .map_err(|e| format!("{}: {e}", checkpoint.display()))?;
    let trained_on = ck.metadata.get("train.dataset").and_then(|d| DatasetKind::parse(d));
    let precision = match ck.metadata.get("train.precision") {
        None => Precision::F32,
        Some(p) => Precision::parse(p)
            .ok_or_else(|| format!("{}: train.precision {p:?} is not f32 or bf16", checkpoint.display()))?,
    };
    let dataset = dataset.or(trained_on).unwrap_or(DatasetKind::Mnist);
    let data_dir = data_dir.unwrap_or_else(|| match ck.metadata.get("train.data_dir") {
        Some(d) if trained_on == Some(dataset) => PathBuf::from(d),
        _ => default_data_dir(dataset),
    });
    let (_, test) = dataset.load(&data_dir).map_err(|e| e.to_string())?;
    if (test.h, test.w) != (model.arch.h, model.arch.w) {
        return Err(format!(
            "{}: the model takes {}×{} images but {} has {}×{}",
            checkpoint.display(),
            model.arch.h,
            model.arch.w,
            data_dir.display(),
            test.h,
            test.w
        ));
    }
    Ok(Trained { model, params, recipe, precision, dataset, test })
}

pub fn eval(args: EvalArgs) -> Result<(), String> {
    let Trained { model, params, recipe, precision, dataset, test } =
        model_and_test_set(&args.checkpoint, args.dataset, args.data_dir)?;
    let precision = args.precision.unwrap_or(precision);
    precision.check().map_err(|e| format!("precision bf16 (the checkpoint's, or --precision): {e}"))?;
    let flip = (args.test_flip || recipe.test_flip) && !args.no_test_flip;
    if flip && model.arch.task != Task::Classify {
        return Err(crate::recipe::TEST_FLIP_NEEDS_A_CLASSIFIER.into());
    }
    let batch = args.batch_size as usize;
    let m = train::evaluate(&model, &params, &test, batch, flip.then(|| dataset.channels()), precision);
    println!("test_loss: {:.6}", m.loss);
    println!("test_{}: {:.6}", train::metric_name(model.arch.task), m.metric);
    Ok(())
}

pub fn saliency(args: SaliencyArgs) -> Result<(), String> {
    let Trained { model, params, dataset, test, .. } =
        model_and_test_set(&args.checkpoint, args.dataset, args.data_dir)?;
    if model.arch.task != Task::Classify {
        return Err(format!(
            "{}: saliency needs a classifier, this is an autoencoder",
            args.checkpoint.display()
        ));
    }
    if args.index >= test.len() {
        return Err(format!(
            "--index {} is out of range: the test set has {} images",
            args.index,
            test.len()
        ));
    }
    let rgb = dataset == DatasetKind::Cifar10;
    let image = test.image(args.index);
    let (pred, p, map) = crate::visual::saliency(&model, &params, image, rgb);
    let pic = crate::visual::saliency_picture(image, test.h, test.w, rgb, &map);
    write_atomic(&args.out, &pic.encode())?;
    println!(
        "image {} (label {}): predicted class {pred} with probability {p:.4}",
        args.index, test.labels[args.index]
    );
    println!("saliency map: {}", args.out.display());
    Ok(())
}

/// One image for `predict`: a PGM/PPM file, or FILE:INDEX of an IDX/CIFAR file. CIFAR-sized
/// colour images are folded to 32×96 as the model sees them.
fn predict_input(spec: &str, h: usize, w: usize) -> Result<Vec<u8>, String> {
    let record = spec.rsplit_once(':').and_then(|(f, i)| Some((f, i.parse::<usize>().ok()?)));
    let (ih, iw, pixels) = match record {
        Some((file, index)) if !Path::new(spec).exists() => {
            crate::data::read_record(Path::new(file), index).map_err(|e| e.to_string())?
        }
        _ => {
            let (pw, ph, ch, px) = crate::data::read_pnm(Path::new(spec)).map_err(|e| e.to_string())?;
            (ph, pw * ch, px)
        }
    };
    if (ih, iw) != (h, w) {
        return Err(format!(
            "{spec}: the model takes {h}×{w} inputs (colour folded into width), this image gives {ih}×{iw}"
        ));
    }
    Ok(pixels)
}

pub fn predict(args: PredictArgs) -> Result<(), String> {
    let ck = Checkpoint::load(&args.checkpoint)?;
    let (model, params) =
        Model::from_checkpoint(&ck).map_err(|e| format!("{}: {e}", args.checkpoint.display()))?;
    if model.arch.task != Task::Classify {
        return Err(format!(
            "{}: predict needs a classifier, this is an autoencoder",
            args.checkpoint.display()
        ));
    }
    for spec in &args.images {
        let pixels = predict_input(spec, model.arch.h, model.arch.w)?;
        let logits = crate::visual::forward_one(&model, &params, &pixels);
        if args.logits {
            let values: Vec<String> = logits.iter().map(|v| v.to_string()).collect();
            println!("{spec}: logits {}", values.join(" "));
            continue;
        }
        let probs = crate::visual::softmax(&logits);
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        let top: Vec<String> = order.iter().take(3).map(|&c| format!("{c} ({:.4})", probs[c])).collect();
        println!("{spec}: {}", top.join(", "));
    }
    Ok(())
}

pub fn summary(args: SummaryArgs) -> Result<(), String> {
    let (h, w) = image_size(args.dataset);
    let layers = args.layers.map_or(args.dataset.default_layers(args.task), |l| l as usize);
    let classes = if args.task == Task::Classify { crate::data::CLASSES } else { 0 };
    let (model, params) = Model::new::<f32>(Arch { task: args.task, h, w, classes, layers });
    let rows = model.summary(&params);
    let width = rows.iter().map(|r| r.layer.len()).max().unwrap_or(5).max(5) + 2;
    let line = "_".repeat(width + 36);
    println!(
        "Model: patchless-mixer {} {} ({h}×{w}, {layers} layers)",
        args.dataset.name(),
        args.task.name()
    );
    println!("{line}");
    println!("{:<width$}{:<24}{:>12}", "Layer", "Output shape", "Param #");
    println!("{}", "=".repeat(width + 36));
    for r in &rows {
        println!("{:<width$}{:<24}{:>12}", r.layer, r.output_shape, group(r.params as u64));
    }
    println!("{}", "=".repeat(width + 36));
    println!("Total params: {}", group(params.len() as u64));
    println!("Forward FLOPs per sample: {}", group(model.flops_per_sample()));
    Ok(())
}

/// 52616 → "52,616".
pub fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
