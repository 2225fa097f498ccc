//! Training and evaluation: one step from a batch of bytes to a weight update, the epoch loop,
//! and the checkpoint that carries the whole training state.
//!
//! One training step, end to end ([`Trainer::step`]):
//! 1. The batch is split into shards of `shard` samples ([`SHARD`] unless the run says otherwise),
//!    run concurrently; per shard:
//! 2. [`Dataset::fill_batch`] turns its u8 images into an f32 (H, n, W) tensor (÷255, permuted);
//!    under a recipe that augments, [`Dataset::fill_batch_augmented`] crops, flips, mixes and
//!    cuts them too, and gives each its target (CutMix's are two labels weighted by area).
//! 3. [`Model::loss_smoothed`] (or [`Model::loss_mixed`] for the augmented batch's targets)
//!    records the forward pass on a [`Tape`]: per mixer the column MLP and the gated row MLP
//!    (the gate and the residual fused into it); then the head and the loss (cross-entropy
//!    against smoothed targets when the recipe smooths, else plain).
//! 4. [`Tape::backward_from`] walks the tape in reverse, starting from the shard's weight n/B in
//!    the batch's mean loss; each op writes or adds its inputs' gradients.
//! 5. [`Tape::param_grads`] gathers the parameter gradients into one flat buffer laid out like
//!    the parameters.
//! 6. The shards' buffers are added in shard order, and the optimizer updates the parameters in
//!    one loop over the sum (AdamW's decay first, where the recipe sets one), at the rate the
//!    recipe's schedule gives the step.

use crate::data::{self, DataError, Dataset};
use crate::recipe::Recipe;
use pmixer_autodiff::ops::{softmax_row, Target};
use pmixer_autodiff::optim::{Adam, AdamState, Sgd};
use pmixer_autodiff::profile::{Phase, Profile};
use pmixer_autodiff::{Params, Pool, Tape, Tensor};
pub use pmixer_kernels::bf16::Precision;
use pmixer_kernels::{par, simd};
use pmixer_model::{Arch, Checkpoint, Model, NamedTensor, Rng, Task};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Which dataset (and so which file reader) a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatasetKind {
    Mnist,
    Cifar10,
}

impl DatasetKind {
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "mnist",
            DatasetKind::Cifar10 => "cifar10",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "mnist" => Some(DatasetKind::Mnist),
            "cifar10" => Some(DatasetKind::Cifar10),
            _ => None,
        }
    }

    /// The original notebook's depth for each experiment.
    pub fn default_layers(self, task: Task) -> usize {
        match (task, self) {
            (Task::Autoencode, _) => 2,
            (Task::Classify, DatasetKind::Mnist) => 16,
            (Task::Classify, DatasetKind::Cifar10) => 32,
        }
    }

    /// Values per pixel in a row of the folded layout (CIFAR's R, G, B side by side).
    pub fn channels(self) -> usize {
        match self {
            DatasetKind::Mnist => 1,
            DatasetKind::Cifar10 => 3,
        }
    }

    /// Reads the training and test sets from `dir`.
    pub fn load(self, dir: &Path) -> Result<(Dataset, Dataset), DataError> {
        match self {
            DatasetKind::Mnist => data::load_idx_dir(dir),
            DatasetKind::Cifar10 => data::load_cifar_dir(dir),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimizerKind {
    Adam,
    Sgd,
}

impl OptimizerKind {
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Adam => "adam",
            OptimizerKind::Sgd => "sgd",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "adam" => Some(OptimizerKind::Adam),
            "sgd" => Some(OptimizerKind::Sgd),
            _ => None,
        }
    }
}

/// Everything that determines a run's arithmetic (saved in its checkpoints).
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    pub dataset: DatasetKind,
    pub data_dir: PathBuf,
    pub task: Task,
    pub layers: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub optimizer: OptimizerKind,
    pub seed: u64,
    pub limit: Option<usize>,
    pub shuffle: bool,
    /// Samples per shard ([`SHARD`] by default): part of the arithmetic, as the order of the
    /// shards' gradient sums.
    pub shard: usize,
    /// What the run adds to the original's training ([`Recipe::seed`]: nothing).
    pub recipe: Recipe,
    /// What the axis-MLPs compute in (`--precision`, recorded in the checkpoint).
    pub precision: Precision,
}

impl TrainConfig {
    /// The learning rate of step `t` (counted from 0) with `per_epoch` steps an epoch: the
    /// recipe's schedule over the run's `epochs · per_epoch` steps.
    pub fn lr_at(&self, t: u64, per_epoch: usize) -> f64 {
        self.recipe.lr_at(self.lr, t, per_epoch, (self.epochs * per_epoch) as u64)
    }
}

/// Loss and metric (accuracy or RMSE) over some samples.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Metrics {
    pub loss: f64,
    pub metric: f64,
}

/// Running sums from which [`Metrics`] are computed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Totals {
    pub loss_sum: f64,
    pub samples: usize,
    pub correct: usize,
}

impl Totals {
    fn add(&mut self, task: Task, loss: f64, b: usize, correct: usize) {
        self.loss_sum += loss * b as f64;
        self.samples += b;
        if task == Task::Classify {
            self.correct += correct;
        }
    }

    /// Mean loss; accuracy for the classifier, RMSE = √(mean squared error) for the autoencoder.
    fn metrics(&self, task: Task) -> Metrics {
        let n = self.samples.max(1) as f64;
        let loss = self.loss_sum / n;
        let metric = match task {
            Task::Classify => self.correct as f64 / n,
            Task::Autoencode => loss.sqrt(),
        };
        Metrics { loss, metric }
    }
}

/// The name of the metric column: `accuracy` or `rmse`.
pub fn metric_name(task: Task) -> &'static str {
    match task {
        Task::Classify => "accuracy",
        Task::Autoencode => "rmse",
    }
}

/// How many predictions in `logits` [B, C] have their argmax at the label.
pub fn count_correct(logits: &[f32], classes: usize, labels: &[usize]) -> usize {
    logits.chunks_exact(classes).zip(labels).filter(|(row, &y)| argmax(row) == y).count()
}

pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// Parameters, optimizer state and position in the run: all a resumed run needs.
#[derive(Clone, Debug)]
pub struct TrainState {
    pub model: Model,
    pub params: Params<f32>,
    pub adam: AdamState<f32>,
    pub rng: Rng,
    /// Completed epochs.
    pub epoch: usize,
    /// Steps completed in the epoch under way (0 between epochs).
    pub step: usize,
    /// The RNG as it was when the epoch under way started, before its shuffle: with `step`, it
    /// lets a run interrupted mid-epoch replay the same order and continue where it stopped.
    pub epoch_rng: Rng,
    /// Running sums of the epoch under way.
    pub partial: Totals,
    /// Per completed epoch (timings are NaN for epochs restored from a checkpoint).
    pub history: Vec<EpochRecord>,
}

/// The results of one epoch (a line of `metrics.csv`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train: Metrics,
    pub test: Metrics,
    pub seconds: f64,
    pub samples_per_s: f64,
    /// The learning rate of the epoch's last step (NaN, like the timings, for epochs restored
    /// from a checkpoint).
    pub lr: f64,
}

/// Samples per shard, unless a run sets its own (`pmixer train --shard`, recorded in the
/// checkpoint): a batch is split into shards of this many samples (the last one may be
/// smaller), each run through forward and backward on its own tape, concurrently.
///
/// Why: a parallel region per op (about 150 per MNIST step) makes the threads meet ~150 times a
/// step, and with steps of a few milliseconds that waiting is a fifth of the time. Shards make it
/// once a step: each thread runs whole forward and backward passes, and the kernels' own
/// parallel regions inside a shard stay on that thread unless another one runs out of work.
/// The shard count depends on the batch size and the shard size alone, and the shards'
/// gradients are added in shard order, so results stay bitwise independent of the thread count
/// (a different shard size changes the order of the gradient sums, and so the bits).
///
/// Many cores want smaller shards: at batch 64, 32 samples make 2 shards, and `pmixer bench
/// --span` predicts little gain past 4 cores; shards of 4 make 16 pieces of work (README,
/// "Scaling"), at the price of smaller products (2 cores run about a fifth slower).
pub const SHARD: usize = 32;

/// Length of the slices of the flat parameter buffer that the gradient sum and the optimizer
/// update split over the threads.
const UPDATE_SLICE: usize = 1 << 14;

/// Runs `f` on each `shard`-sample part of `idx`, concurrently, each part with its own state
/// from `shards` (grown on first need); returns the states used, in shard order.
fn run_sharded<'a, S: Default + Send>(
    shards: &'a mut Vec<S>,
    shard: usize,
    idx: &[usize],
    f: impl Fn(&mut S, &[usize]) + Sync,
) -> &'a mut [S] {
    let count = idx.len().div_ceil(shard);
    if shards.len() < count {
        shards.resize_with(count, S::default);
    }
    let used = &mut shards[..count];
    par::region(|reg| {
        used.par_iter_mut().zip(idx.par_chunks(shard)).for_each(|(s, part)| {
            let _task = reg.task();
            f(s, part)
        })
    });
    used
}

/// What a step's batches get besides the data: label smoothing ε, and the augmentation (recipe,
/// seed, epoch, values per pixel) when the recipe augments.
#[derive(Clone, Debug, Default)]
struct BatchPlan {
    smoothing: f64,
    /// What the shards' tapes compute the axis-MLPs in.
    precision: Precision,
    augment: Option<(Recipe, u64, usize, usize)>,
}

/// One shard's buffers, kept from step to step: its tape's pool, its gradient, its labels.
#[derive(Default)]
struct Shard {
    pool: Pool<f32>,
    grads: Vec<f32>,
    labels: Vec<usize>,
    /// The augmented batch's targets (CutMix may mix two labels; `labels` holds each image's own).
    targets: Vec<Target>,
    profile: Option<Profile>,
    /// This shard's share of the batch loss, (n_s / B)·L_s.
    loss: f64,
    correct: usize,
}

impl Shard {
    /// Forward and backward of samples `idx` of a batch of `b`: leaves `grads` holding
    /// ∂((n_s/B)·L_s)/∂θ, where L_s is the mean loss over this shard's n_s samples. The batch's
    /// mean loss is Σ_s (n_s/B)·L_s, so the shards' gradients add up to the batch's.
    fn run(
        &mut self,
        model: &Model,
        data: &Dataset,
        idx: &[usize],
        b: usize,
        params: &Params<f32>,
        plan: &BatchPlan,
    ) {
        let (h, w, n) = (data.h, data.w, idx.len());
        let start = self.profile.is_some().then(Instant::now);
        self.grads.clear();
        self.grads.resize(params.len(), 0.0);
        let mut tape = Tape::with_pool(params, std::mem::take(&mut self.pool), true);
        tape.set_precision(plan.precision);
        let mut x = tape.take(h * n * w); // fill_batch writes every element
        let augmented = match &plan.augment {
            Some((recipe, seed, epoch, channels)) => {
                let population = data.len();
                let draw = |i| crate::recipe::draw(recipe, *seed, *epoch, i, (h, w / channels), population);
                data.fill_batch_augmented(idx, *channels, draw, &mut x, &mut self.targets);
                self.labels.clear();
                self.labels.extend(self.targets.iter().map(|t| t.a));
                true
            }
            None => {
                data.fill_batch(idx, &mut x, &mut self.labels);
                false
            }
        };
        if let (Some(p), Some(t)) = (&mut self.profile, start) {
            p.record("batch (u8 -> f32, permute)", Phase::Other, t.elapsed().as_secs_f64(), 0, 0);
            tape.enable_profile(std::mem::take(p));
        }
        let x = tape.input(Tensor::new(&[h, n, w], x), false);
        let (out, loss) = match augmented {
            true => model.loss_mixed(&mut tape, x, &self.targets, plan.smoothing),
            false => model.loss_smoothed(&mut tape, x, &self.labels, plan.smoothing),
        };
        let weight = n as f64 / b as f64;
        tape.backward_from(loss, weight as f32);
        tape.param_grads(&mut self.grads);
        self.correct = match model.arch.task {
            Task::Classify => count_correct(tape.value(out), model.arch.classes, &self.labels),
            Task::Autoencode => 0,
        };
        self.loss = weight * tape.value(loss)[0] as f64;
        if let (Some(mut p), Some(t)) = (tape.take_profile(), start) {
            p.busy_seconds += t.elapsed().as_secs_f64();
            self.profile = Some(p);
        }
        self.pool = tape.into_pool();
    }
}

/// A model's training step with the buffers it reuses: one shard per `shard` samples of the
/// batch ([`SHARD`] unless [`Trainer::with_shard`] says otherwise), each with the pool its tape
/// borrows batch-sized buffers from, so that after the first step nothing batch-sized is
/// allocated.
pub struct Trainer {
    pub model: Model,
    pub opt: OptimizerKind,
    pub adam: Adam,
    pub sgd: Sgd,
    shards: Vec<Shard>,
    shard: usize,
    plan: BatchPlan,
    /// AdamW's decoupled weight decay λ, and the mask (1 on kernels, 0 elsewhere) it applies to.
    weight_decay: f64,
    decay_mask: Vec<f32>,
    /// When set, the serial part of every step is timed into it, and each shard times its
    /// forward and backward into its own ([`Trainer::take_profile`] merges them).
    profile: Option<Profile>,
}

/// What one step measured.
#[derive(Clone, Copy, Debug)]
pub struct StepOutcome {
    pub loss: f32,
    pub correct: usize,
}

impl Trainer {
    pub fn new(model: Model, opt: OptimizerKind, lr: f64) -> Self {
        Trainer {
            model,
            opt,
            adam: Adam { lr, ..Adam::default() },
            sgd: Sgd { lr },
            shards: Vec::new(),
            shard: SHARD,
            plan: BatchPlan::default(),
            weight_decay: 0.0,
            decay_mask: Vec::new(),
            profile: None,
        }
    }

    /// Trains with `recipe`'s label smoothing, weight decay (on the kernels of `params`) and
    /// augmentation (drawn from `seed`; `channels` values a pixel). The epoch of the draws is
    /// set by [`Trainer::set_epoch`].
    pub fn with_recipe(mut self, recipe: &Recipe, seed: u64, channels: usize, params: &Params<f32>) -> Self {
        self.plan.smoothing = recipe.label_smoothing;
        self.plan.augment = recipe.augments().then(|| (recipe.clone(), seed, 0, channels));
        self.weight_decay = recipe.weight_decay;
        if recipe.weight_decay > 0.0 {
            self.decay_mask = vec![0.0; params.len()];
            for s in params.specs().iter().filter(|s| s.name.ends_with(".kernel")) {
                self.decay_mask[s.offset..s.offset + s.len].fill(1.0);
            }
        }
        self
    }

    /// The epoch (from 1) whose augmentation the next steps draw.
    pub fn set_epoch(&mut self, epoch: usize) {
        if let Some((_, _, e, _)) = &mut self.plan.augment {
            *e = epoch;
        }
    }

    /// Computes the axis-MLPs in `precision` (f32 unless set; bf16 where [`Precision::check`]
    /// allows it, or the first step panics).
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.plan.precision = precision;
        self
    }

    /// Splits each batch into shards of `samples` samples instead of [`SHARD`] (at least 1).
    pub fn with_shard(mut self, samples: usize) -> Self {
        assert!(samples > 0, "a shard holds at least one sample");
        self.shard = samples;
        self
    }

    /// Switches per-op timing on (`pmixer train --profile`) or off.
    pub fn set_profile(&mut self, profile: Option<Profile>) {
        self.profile = profile;
        for s in &mut self.shards {
            s.profile = None;
        }
    }

    /// The profile so far: the shards' rows (each timed on the thread that ran it) merged with
    /// the serial part of the steps.
    pub fn take_profile(&mut self) -> Option<Profile> {
        let mut p = self.profile.take()?;
        for s in &mut self.shards {
            if let Some(sp) = s.profile.take() {
                p.merge(sp);
            }
        }
        Some(p)
    }

    /// One training step on samples `idx` of `data`: the shards' forward and backward passes
    /// (concurrently), their gradients added in shard order, the optimizer update.
    /// Returns an error if the loss or a gradient is not finite (the parameters are then left
    /// untouched) or if the update made a parameter infinite or NaN.
    pub fn step(
        &mut self,
        data: &Dataset,
        idx: &[usize],
        params: &mut Params<f32>,
        adam: &mut AdamState<f32>,
    ) -> Result<StepOutcome, String> {
        let step_start = self.profile.is_some().then(Instant::now);
        let (model, b, frozen, profiling) = (&self.model, idx.len(), &*params, self.profile.is_some());
        let plan = &self.plan;
        let shards = run_sharded(&mut self.shards, self.shard, idx, |s: &mut Shard, part| {
            if profiling {
                s.profile.get_or_insert_with(Profile::default);
            }
            s.run(model, data, part, b, frozen, plan)
        });
        let reduce_start = self.profile.is_some().then(Instant::now);
        let (first, rest) = shards.split_first_mut().expect("a batch has at least one sample");
        let (mut loss, mut correct) = (first.loss, first.correct);
        for s in rest.iter() {
            loss += s.loss;
            correct += s.correct;
        }
        let loss = loss as f32;
        if !loss.is_finite() {
            return Err(format!("the loss is {loss}"));
        }
        // The shards' gradients added in shard order, then the update, both elementwise and so
        // split over the threads in fixed slices of the flat buffers (the same sums and updates
        // whichever thread does them).
        par::region(|reg| {
            first.grads.par_chunks_mut(UPDATE_SLICE).enumerate().for_each(|(c, g)| {
                let _task = reg.task();
                for s in rest.iter() {
                    simd::add_assign(g, &s.grads[c * UPDATE_SLICE..c * UPDATE_SLICE + g.len()]);
                }
            })
        });
        let grads = &first.grads;
        if let Some(i) = first_non_finite(grads) {
            return Err(format!("the gradient of {} is {}", param_name(params, i), grads[i]));
        }
        let slices = params.data.par_chunks_mut(UPDATE_SLICE).zip(grads.par_chunks(UPDATE_SLICE));
        par::region(|reg| match self.opt {
            OptimizerKind::Adam => {
                let t = adam.advance();
                let moments = adam.m.par_chunks_mut(UPDATE_SLICE).zip(adam.v.par_chunks_mut(UPDATE_SLICE));
                // AdamW: p ← p − η·λ·p on the kernels, before Adam's step.
                let decay = (self.adam.lr * self.weight_decay) as f32;
                let mask = &self.decay_mask;
                slices.zip(moments).enumerate().for_each(|(c, ((p, g), (m, v)))| {
                    let _task = reg.task();
                    if decay > 0.0 {
                        let mask = &mask[c * UPDATE_SLICE..c * UPDATE_SLICE + p.len()];
                        p.iter_mut().zip(mask).for_each(|(p, &k)| *p -= decay * k * *p);
                    }
                    self.adam.update(t, p, g, m, v)
                });
            }
            OptimizerKind::Sgd => slices.for_each(|(p, g)| {
                let _task = reg.task();
                self.sgd.step(p, g)
            }),
        });
        if let (Some(p), Some(t), Some(s)) = (&mut self.profile, reduce_start, step_start) {
            let name = match self.opt {
                OptimizerKind::Adam => "sum shards, adam",
                OptimizerKind::Sgd => "sum shards, sgd",
            };
            let serial = t.elapsed().as_secs_f64();
            p.record(name, Phase::Other, serial, 0, 0);
            p.busy_seconds += serial;
            p.steps += 1;
            p.step_seconds += s.elapsed().as_secs_f64();
        }
        if let Some(i) = first_non_finite(&params.data) {
            return Err(format!("the update made {} {}", param_name(params, i), params.data[i]));
        }
        Ok(StepOutcome { loss, correct })
    }
}

/// The first index of `v` holding an infinity or a NaN, looked for in parallel slices.
fn first_non_finite(v: &[f32]) -> Option<usize> {
    let finite = |s: &[f32]| s.iter().fold(true, |ok, x| ok & x.is_finite()); // vectorisable: no early exit
    let c = par::region(|reg| {
        v.par_chunks(UPDATE_SLICE).position_first(|s| {
            let _task = reg.task();
            !finite(s)
        })
    })?;
    v[c * UPDATE_SLICE..].iter().position(|x| !x.is_finite()).map(|i| c * UPDATE_SLICE + i)
}

/// The name of the parameter holding flat index `i`.
fn param_name(params: &Params<f32>, i: usize) -> &str {
    params.specs().iter().find(|s| s.offset + s.len > i).map_or("?", |s| s.name.as_str())
}

/// Inference over a batch in shards of [`SHARD`] samples, run concurrently, each with its own
/// buffers; with `flip` (values per pixel), test-time flips ([`Inferer::with_flip`]). Every
/// sample's outputs depend on that sample alone (each output element is a sum in a fixed order
/// whatever the batch), so the results are bitwise those of one [`Model::infer`] over the whole
/// batch; but a shard's activations (~100 KB for MNIST) stay in a core's L2, where a
/// batch of 1,000's (3 MB per tensor) would stream from L3, and the threads meet once per batch.
#[derive(Default)]
pub struct Inferer {
    shards: Vec<InferShard>,
    flip: Option<usize>,
    precision: Precision,
}

#[derive(Default)]
struct InferShard {
    x: Vec<f32>,
    labels: Vec<usize>,
    buf: pmixer_model::InferBuffers<f32>,
    /// Per sample of the shard: its loss; and how many it classified correctly.
    losses: Vec<f64>,
    correct: usize,
    /// One row of logits in f64, for its loss.
    row: Vec<f64>,
}

impl InferShard {
    fn run(
        &mut self,
        model: &Model,
        params: &Params<f32>,
        data: &Dataset,
        idx: &[usize],
        flip: Option<usize>,
        precision: Precision,
    ) {
        let (h, w, b) = (data.h, data.w, idx.len());
        self.buf.set_precision(precision);
        self.x.resize(h * b * w, 0.0);
        data.fill_batch(idx, &mut self.x, &mut self.labels);
        let mut out = model.infer(params, &self.x, b, &mut self.buf);
        if let (Some(channels), Task::Classify) = (flip, model.arch.task) {
            // Test-time flips: logits = (f(x) + f(mirror(x)))/2. The mirror in place: each W-long
            // run's pixels in reverse order, each pixel's channels kept in order.
            for row in self.x.chunks_exact_mut(w) {
                row.reverse();
                row.chunks_exact_mut(channels).for_each(<[f32]>::reverse);
            }
            let flipped = model.infer(params, &self.x, b, &mut self.buf);
            for (l, f) in out.iter_mut().zip(flipped) {
                *l = 0.5 * (*l + f);
            }
        }
        self.losses.clear();
        self.correct = 0;
        match model.arch.task {
            Task::Classify => {
                let c = model.arch.classes;
                // The loss in f64, from the f32 logits.
                for (row, &y) in out.chunks_exact(c).zip(&self.labels) {
                    self.row.clear();
                    self.row.extend(row.iter().map(|&v| v as f64));
                    self.losses.push(softmax_row(&mut self.row) - row[y] as f64);
                }
                self.correct = count_correct(&out, c, &self.labels);
            }
            Task::Autoencode => {
                // Per sample: its squared errors over the H×W pixels, which in (H, B, W) layout
                // are the sample's W-long runs, one per row.
                for bi in 0..b {
                    let mut se = 0.0f64;
                    for r in 0..h {
                        let at = (r * b + bi) * w;
                        se += out[at..at + w]
                            .iter()
                            .zip(&self.x[at..at + w])
                            .map(|(&o, &t)| ((o - t) as f64).powi(2))
                            .sum::<f64>();
                    }
                    self.losses.push(se / (h * w) as f64);
                }
            }
        }
    }
}

impl Inferer {
    /// An inferer whose axis-MLPs compute in `precision`.
    pub fn with_precision(mut self, precision: Precision) -> Inferer {
        self.precision = precision;
        self
    }

    /// An inferer whose classifier logits are the mean of each image's and its mirror image's
    /// (`channels` values a pixel: a mirror keeps each pixel's channels in order).
    pub fn with_flip(channels: usize) -> Inferer {
        Inferer { shards: Vec::new(), flip: Some(channels), precision: Precision::F32 }
    }

    /// Runs samples `idx` of `data`: appends each sample's loss to `losses`, in sample order, and
    /// returns how many were classified correctly (0 for the autoencoder).
    pub fn run(
        &mut self,
        model: &Model,
        params: &Params<f32>,
        data: &Dataset,
        idx: &[usize],
        losses: &mut Vec<f64>,
    ) -> usize {
        let (flip, precision) = (self.flip, self.precision);
        let shards = run_sharded(&mut self.shards, SHARD, idx, |s: &mut InferShard, part| {
            s.run(model, params, data, part, flip, precision)
        });
        let mut correct = 0;
        for s in shards.iter() {
            losses.extend_from_slice(&s.losses);
            correct += s.correct;
        }
        correct
    }
}

/// Loss and metric of `params` on all of `data`, in batches of `batch` (each run in shards by an
/// [`Inferer`]). Each sample's loss is computed on its own and summed in sample order, so the
/// result does not depend on `batch`. With `flip` (values per pixel), test-time flips; the
/// axis-MLPs in `precision`.
pub fn evaluate(
    model: &Model,
    params: &Params<f32>,
    data: &Dataset,
    batch: usize,
    flip: Option<usize>,
    precision: Precision,
) -> Metrics {
    let mut inferer = Inferer { shards: Vec::new(), flip, precision };
    let (mut losses, mut correct) = (Vec::new(), 0usize);
    let idx: Vec<usize> = (0..data.len()).collect();
    for chunk in idx.chunks(batch) {
        correct += inferer.run(model, params, data, chunk, &mut losses);
    }
    let loss_sum = losses.iter().sum();
    Totals { loss_sum, samples: data.len(), correct }.metrics(model.arch.task)
}

/// A fresh state for `arch`: Glorot init from the seed, or the weights of `init` if given.
pub fn fresh_state(cfg: &TrainConfig, arch: Arch, init: Option<&Checkpoint>) -> Result<TrainState, String> {
    let mut rng = Rng::seed(cfg.seed);
    let (model, params) = match init {
        None => {
            let (model, mut params) = Model::new::<f32>(arch);
            model.init(&mut params, &mut rng);
            (model, params)
        }
        Some(ck) => {
            let (model, params) = Model::from_checkpoint(ck)?;
            if model.arch != arch {
                return Err(format!(
                    "the --init checkpoint is {}, the data and flags need {}",
                    model.arch, arch
                ));
            }
            (model, params)
        }
    };
    let adam = AdamState::new(params.len());
    let epoch_rng = rng.clone();
    Ok(TrainState {
        model,
        params,
        adam,
        rng,
        epoch: 0,
        step: 0,
        epoch_rng,
        partial: Totals::default(),
        history: Vec::new(),
    })
}

/// Why [`run_epochs`] stopped early.
#[derive(Clone, Debug, PartialEq)]
pub enum Stop {
    /// `progress` asked to stop; the state is at a step boundary, ready to be checkpointed.
    Interrupted { epoch: usize, step: usize },
    /// Training cannot go on (divergence, or an error from `after_epoch`).
    Failed(String),
}

/// Runs the rest of the run: from step `state.step` of epoch `state.epoch + 1` to the end of
/// epoch `cfg.epochs`, calling `progress(step, steps, running loss)` after every step (it returns
/// false to interrupt) and `after_epoch` (which saves the checkpoint and the metrics) after each
/// epoch. When `profile` holds a profile, every training step is timed into it.
pub fn run_epochs(
    cfg: &TrainConfig,
    state: &mut TrainState,
    train: &Dataset,
    test: &Dataset,
    mut progress: impl FnMut(usize, usize, f64, f64) -> bool,
    mut after_epoch: impl FnMut(&TrainState) -> Result<(), String>,
    profile: &mut Option<Profile>,
) -> Result<(), Stop> {
    let mut trainer = Trainer::new(state.model.clone(), cfg.optimizer, cfg.lr)
        .with_shard(cfg.shard)
        .with_precision(cfg.precision)
        .with_recipe(&cfg.recipe, cfg.seed, cfg.dataset.channels(), &state.params);
    trainer.set_profile(profile.take());
    let result = epochs(cfg, state, train, test, &mut progress, &mut after_epoch, &mut trainer);
    *profile = trainer.take_profile();
    result
}

fn epochs(
    cfg: &TrainConfig,
    state: &mut TrainState,
    train: &Dataset,
    test: &Dataset,
    progress: &mut impl FnMut(usize, usize, f64, f64) -> bool,
    after_epoch: &mut impl FnMut(&TrainState) -> Result<(), String>,
    trainer: &mut Trainer,
) -> Result<(), Stop> {
    let task = state.model.arch.task;
    let n = cfg.limit.map_or(train.len(), |l| l.min(train.len()));
    let mut order: Vec<usize> = (0..n).collect();
    while state.epoch < cfg.epochs {
        let epoch = state.epoch + 1;
        let start = std::time::Instant::now();
        if state.step == 0 {
            state.epoch_rng = state.rng.clone();
            state.partial = Totals::default();
        }
        // The epoch's order, from the RNG as the epoch found it (the same on a resumed run).
        order.sort_unstable();
        let mut rng = state.epoch_rng.clone();
        if cfg.shuffle {
            rand::seq::SliceRandom::shuffle(order.as_mut_slice(), &mut rng);
        }
        state.rng = rng;
        let steps = n.div_ceil(cfg.batch_size);
        let done = state.step;
        trainer.set_epoch(epoch);
        for (s, idx) in order.chunks(cfg.batch_size).enumerate().skip(done) {
            (trainer.adam.lr, trainer.sgd.lr) =
                (cfg.lr_at(state.adam.t, steps), cfg.lr_at(state.adam.t, steps));
            let out = trainer.step(train, idx, &mut state.params, &mut state.adam).map_err(|e| {
                Stop::Failed(format!("training diverged at epoch {epoch}, step {}: {e}", s + 1))
            })?;
            state.partial.add(task, out.loss as f64, idx.len(), out.correct);
            state.step = s + 1;
            if !progress(s + 1, steps, state.partial.metrics(task).loss, trainer.adam.lr) && s + 1 < steps {
                return Err(Stop::Interrupted { epoch, step: s + 1 });
            }
        }
        let totals = state.partial;
        let seconds = start.elapsed().as_secs_f64();
        let flip = cfg.recipe.test_flip.then(|| cfg.dataset.channels());
        let test_metrics = evaluate(&state.model, &state.params, test, cfg.batch_size, flip, cfg.precision);
        if !test_metrics.loss.is_finite() {
            // No checkpoint is written for this epoch: the one on disk stays the last good one.
            let msg = format!("training diverged at epoch {epoch}: the test loss is {}", test_metrics.loss);
            return Err(Stop::Failed(msg));
        }
        state.epoch = epoch;
        state.step = 0;
        state.partial = Totals::default();
        state.history.push(EpochRecord {
            epoch,
            train: totals.metrics(task),
            test: test_metrics,
            seconds,
            samples_per_s: (n - done * cfg.batch_size).max(1) as f64 / seconds,
            lr: trainer.adam.lr,
        });
        after_epoch(state).map_err(Stop::Failed)?;
    }
    Ok(())
}

/// The header of `metrics.csv`.
pub fn metrics_header(task: Task) -> String {
    let m = metric_name(task);
    format!("epoch,train_loss,train_{m},test_loss,test_{m},seconds,samples_per_s,lr\n")
}

/// One line of `metrics.csv`.
pub fn metrics_line(r: &EpochRecord) -> String {
    format!(
        "{},{:.6},{:.6},{:.6},{:.6},{:.3},{:.1},{:e}\n",
        r.epoch, r.train.loss, r.train.metric, r.test.loss, r.test.metric, r.seconds, r.samples_per_s, r.lr
    )
}

/// The per-epoch results kept in a checkpoint: everything in `metrics.csv` but the timings, which
/// differ from run to run and would stop an interrupted-and-resumed run from ending with bitwise
/// the same checkpoint as an uninterrupted one.
fn history_csv(history: &[EpochRecord]) -> String {
    history
        .iter()
        .map(|r| {
            format!(
                "{},{:e},{:e},{:e},{:e}\n",
                r.epoch, r.train.loss, r.train.metric, r.test.loss, r.test.metric
            )
        })
        .collect()
}

fn parse_history(csv: &str) -> Result<Vec<EpochRecord>, String> {
    csv.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let f: Vec<f64> = line
                .split(',')
                .map(|v| v.parse::<f64>())
                .collect::<Result<_, _>>()
                .map_err(|_| format!("bad history line {line:?}"))?;
            let [e, tl, tm, vl, vm] = f[..] else { return Err(format!("bad history line {line:?}")) };
            Ok(EpochRecord {
                epoch: e as usize,
                train: Metrics { loss: tl, metric: tm },
                test: Metrics { loss: vl, metric: vm },
                seconds: f64::NAN,
                samples_per_s: f64::NAN,
                lr: f64::NAN,
            })
        })
        .collect()
}

/// The checkpoint of a run: parameters, Adam moments, and in the metadata the architecture, the
/// configuration, the epoch, the step count, the RNG state and the metrics history.
pub fn to_checkpoint(cfg: &TrainConfig, st: &TrainState) -> Checkpoint {
    let mut ck = st.model.to_checkpoint(&st.params);
    let n = st.params.len();
    ck.tensors.push(NamedTensor { name: "optim.adam.m".into(), shape: vec![n], data: st.adam.m.clone() });
    ck.tensors.push(NamedTensor { name: "optim.adam.v".into(), shape: vec![n], data: st.adam.v.clone() });
    let rng: Vec<String> = st.rng.state().iter().map(|w| format!("{w:016x}")).collect();
    let meta: BTreeMap<&str, String> = BTreeMap::from([
        ("train.dataset", cfg.dataset.name().to_string()),
        ("train.data_dir", cfg.data_dir.display().to_string()),
        ("train.epochs", cfg.epochs.to_string()),
        ("train.batch_size", cfg.batch_size.to_string()),
        ("train.lr", format!("{:e}", cfg.lr)),
        ("train.optimizer", cfg.optimizer.name().to_string()),
        ("train.seed", cfg.seed.to_string()),
        ("train.limit", cfg.limit.map_or("none".into(), |l| l.to_string())),
        ("train.shuffle", cfg.shuffle.to_string()),
        ("train.shard", cfg.shard.to_string()),
        ("train.precision", cfg.precision.name().to_string()),
        ("train.epoch", st.epoch.to_string()),
        ("train.step", st.adam.t.to_string()),
        ("train.rng", rng.join(",")),
        ("train.step_in_epoch", st.step.to_string()),
        (
            "train.epoch_rng",
            st.epoch_rng.state().iter().map(|w| format!("{w:016x}")).collect::<Vec<_>>().join(","),
        ),
        ("train.partial", format!("{:e},{},{}", st.partial.loss_sum, st.partial.samples, st.partial.correct)),
        ("train.history", history_csv(&st.history)),
    ]);
    for (k, v) in meta.into_iter().chain(cfg.recipe.to_metadata()) {
        ck.metadata.insert(k.to_string(), v);
    }
    ck
}

/// Restores a run's configuration and state from its checkpoint.
pub fn from_checkpoint(ck: &Checkpoint) -> Result<(TrainConfig, TrainState), String> {
    let (model, params) = Model::from_checkpoint(ck)?;
    let get = |k: &str| {
        ck.metadata.get(k).ok_or_else(|| format!("no {k:?} in the metadata: not a training checkpoint"))
    };
    let num = |k: &str| -> Result<u64, String> {
        get(k)?.parse().map_err(|_| format!("metadata {k:?} is not a number"))
    };
    let dataset = DatasetKind::parse(get("train.dataset")?).ok_or("unknown train.dataset")?;
    let optimizer = OptimizerKind::parse(get("train.optimizer")?).ok_or("unknown train.optimizer")?;
    let limit = match get("train.limit")?.as_str() {
        "none" => None,
        l => Some(l.parse().map_err(|_| "bad train.limit")?),
    };
    let cfg = TrainConfig {
        dataset,
        data_dir: PathBuf::from(get("train.data_dir")?),
        task: model.arch.task,
        layers: model.arch.layers,
        epochs: num("train.epochs")? as usize,
        batch_size: num("train.batch_size")? as usize,
        lr: get("train.lr")?.parse().map_err(|_| "bad train.lr")?,
        optimizer,
        seed: num("train.seed")?,
        limit,
        shuffle: get("train.shuffle")? == "true",
        recipe: Recipe::from_metadata(|k| ck.metadata.get(k).cloned())?,
        // Checkpoints written before the shard size was a setting used the default.
        shard: match ck.metadata.get("train.shard") {
            None => SHARD,
            Some(_) => Some(num("train.shard")? as usize)
                .filter(|&n| n > 0)
                .ok_or("train.shard must be at least 1")?,
        },
        // Checkpoints written before bf16 existed trained in f32.
        precision: match ck.metadata.get("train.precision") {
            None => Precision::F32,
            Some(p) => {
                Precision::parse(p).ok_or_else(|| format!("train.precision {p:?} is not f32 or bf16"))?
            }
        },
    };
    let moment = |name: &str| -> Result<Vec<f32>, String> {
        let t = ck.tensor(name).ok_or_else(|| format!("missing tensor {name:?}"))?;
        if t.data.len() != params.len() {
            return Err(format!(
                "tensor {name:?} has {} values, the model has {} parameters",
                t.data.len(),
                params.len()
            ));
        }
        Ok(t.data.clone())
    };
    let rng_at = |k: &str| -> Result<Rng, String> {
        let words: Vec<u64> = get(k)?
            .split(',')
            .map(|w| u64::from_str_radix(w, 16))
            .collect::<Result<_, _>>()
            .map_err(|_| format!("bad {k}"))?;
        <[u64; 4]>::try_from(words).ok().and_then(Rng::from_state).ok_or_else(|| format!("bad {k}"))
    };
    let (rng, epoch_rng) = (rng_at("train.rng")?, rng_at("train.epoch_rng")?);
    let partial = match get("train.partial")?.split(',').collect::<Vec<_>>()[..] {
        [l, s, c] => match (l.parse(), s.parse(), c.parse()) {
            (Ok(loss_sum), Ok(samples), Ok(correct)) => Totals { loss_sum, samples, correct },
            _ => return Err("bad train.partial".into()),
        },
        _ => return Err("bad train.partial".into()),
    };
    let adam = AdamState { m: moment("optim.adam.m")?, v: moment("optim.adam.v")?, t: num("train.step")? };
    let history = parse_history(get("train.history")?)?;
    let epoch = num("train.epoch")? as usize;
    let step = num("train.step_in_epoch")? as usize;
    // Mid-epoch, `step` full or final batches account for the running sums' samples.
    let samples_fit = match step {
        0 => partial.samples == 0,
        s => {
            partial.samples > (s - 1).saturating_mul(cfg.batch_size)
                && partial.samples <= s.saturating_mul(cfg.batch_size)
        }
    };
    if cfg.batch_size == 0 || history.len() != epoch || !samples_fit {
        return Err("inconsistent training state in the metadata".into());
    }
    Ok((cfg, TrainState { model, params, adam, rng, epoch, step, epoch_rng, partial, history }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkpoint from before the shard size was a setting (no `train.shard`) resumes with the
    /// shards it was trained with, the default; a recorded size round-trips; a zero is an error.
    /// The same for the precision: recorded, f32 when absent, an unknown name an error.
    #[test]
    fn the_shard_size_and_precision_round_trip_and_default_for_older_checkpoints() {
        let arch = Arch { task: Task::Autoencode, h: 3, w: 4, classes: 0, layers: 1 };
        #[rustfmt::skip]
        let cfg = TrainConfig {
            dataset: DatasetKind::Mnist, data_dir: "d".into(), task: arch.task, layers: 1, epochs: 2,
            batch_size: 8, lr: 1e-3, optimizer: OptimizerKind::Adam, seed: 1, limit: None, shuffle: true,
            shard: 3, recipe: Recipe::named("strong", DatasetKind::Mnist).unwrap().0, precision: Precision::Bf16,
        };
        let state = fresh_state(&cfg, arch, None).unwrap();
        let mut ck = to_checkpoint(&cfg, &state);
        assert_eq!(from_checkpoint(&ck).unwrap().0, cfg);
        ck.metadata.remove("train.shard");
        assert_eq!(from_checkpoint(&ck).unwrap().0.shard, SHARD);
        ck.metadata.insert("train.shard".into(), "0".into());
        assert!(from_checkpoint(&ck).unwrap_err().contains("train.shard"));
        ck.metadata.insert("train.shard".into(), "3".into());
        ck.metadata.remove("train.precision");
        assert_eq!(from_checkpoint(&ck).unwrap().0.precision, Precision::F32);
        ck.metadata.insert("train.precision".into(), "fp8".into());
        assert!(from_checkpoint(&ck).unwrap_err().contains("train.precision"));
    }
}
