//! The patchless MLP-Mixer: named parameters, initialisation, and the forward pass on a tape.
//!
//! ```text
//! MLP(n) along an axis:  Dense(n) + exact GELU, then Dense(n)
//! Mixer:                 h ↦ MLP(W) along rows( MLP(H) along columns(h) )
//! Classifier:            h = x;  h ← h + g_l·mixer_l(h)  for l = 1..L   (g_l scalar, starts at 0)
//!                        logits = Dense(classes)( [MLP(1) over rows(h) (H values),
//!                                                  MLP(1) over columns(h) (W values)] )
//! Autoencoder:           h = x;  h ← mixer_l(h)  for l = 1..L;  loss = MSE(h, x)
//! ```
//! A batch is an (H, B, W) tensor (see `pmixer_kernels::mlp` for why); the head's row outputs
//! come out as (H, B) and are transposed to (B, H) before the concatenation, the one place the
//! layout is undone. Parameter names follow the layers: `mixer.3.col.dense1.kernel`,
//! `mixer.3.row.dense2.bias`, `mixer.3.gate`, `head.rows.dense1.kernel`, `head.cols.dense2.bias`,
//! `head.out.kernel`, `head.out.bias`. Kernels are stored Keras-style, (in, out).

use crate::rng::Rng;
use pmixer_autodiff::ops::{self, MlpVars};
use pmixer_autodiff::{ParamId, Params, Tape, Var};
use pmixer_kernels::bf16::Precision;
use pmixer_kernels::{Axis, Real};
use rand::distributions::{Distribution, Uniform};

/// What the network is trained to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    Classify,
    Autoencode,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::Classify => "classify",
            Task::Autoencode => "autoencode",
        }
    }

    pub fn parse(s: &str) -> Option<Task> {
        match s {
            "classify" => Some(Task::Classify),
            "autoencode" => Some(Task::Autoencode),
            _ => None,
        }
    }
}

/// Everything that fixes the parameter layout. `classes` is 0 for the autoencoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arch {
    pub task: Task,
    pub h: usize,
    pub w: usize,
    pub classes: usize,
    pub layers: usize,
}

/// In a person's words: "a classifier of 32 layers on 32×96 images, 10 classes".
impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let (h, w, layers) = (self.h, self.w, self.layers);
        match self.task {
            Task::Classify => {
                write!(f, "a classifier of {layers} layers on {h}×{w} images, {} classes", self.classes)
            }
            Task::Autoencode => write!(f, "an autoencoder of {layers} layers on {h}×{w} images"),
        }
    }
}

impl Arch {
    /// The number of parameters this architecture has, or `None` if it overflows: computed before
    /// anything is allocated, so that a claimed architecture can be checked against a file.
    pub fn param_count(&self) -> Option<usize> {
        let mlp =
            |n_in: usize, n: usize| n_in.checked_mul(n)?.checked_add(n.checked_mul(n)?)?.checked_add(2 * n);
        let gated = self.task == Task::Classify;
        let mixer = mlp(self.h, self.h)?.checked_add(mlp(self.w, self.w)?)?.checked_add(gated as usize)?;
        let trunk = mixer.checked_mul(self.layers)?;
        if !gated {
            return Some(trunk);
        }
        let out = self.h.checked_add(self.w)?.checked_add(1)?.checked_mul(self.classes)?;
        trunk.checked_add(mlp(self.w, 1)?)?.checked_add(mlp(self.h, 1)?)?.checked_add(out)
    }
}

/// The four parameters of one `MLP(n)`.
#[derive(Clone, Copy, Debug)]
pub struct MlpIds {
    pub k1: ParamId,
    pub c1: ParamId,
    pub k2: ParamId,
    pub c2: ParamId,
}

impl MlpIds {
    fn add<T: Real>(p: &mut Params<T>, prefix: &str, n_in: usize, n: usize) -> Self {
        MlpIds {
            k1: p.add(format!("{prefix}.dense1.kernel"), &[n_in, n]),
            c1: p.add(format!("{prefix}.dense1.bias"), &[n]),
            k2: p.add(format!("{prefix}.dense2.kernel"), &[n, n]),
            c2: p.add(format!("{prefix}.dense2.bias"), &[n]),
        }
    }

    fn vars<T: Real>(&self, t: &mut Tape<T>) -> MlpVars {
        MlpVars { k1: t.param(self.k1), c1: t.param(self.c1), k2: t.param(self.k2), c2: t.param(self.c2) }
    }
}

#[derive(Clone, Debug)]
struct Mixer {
    col: MlpIds,
    row: MlpIds,
    gate: Option<ParamId>,
}

#[derive(Clone, Debug)]
struct Head {
    rows: MlpIds,
    cols: MlpIds,
    out_k: ParamId,
    out_c: ParamId,
}

/// A network: its architecture and where each of its parameters lives in a [`Params`].
#[derive(Clone, Debug)]
pub struct Model {
    pub arch: Arch,
    mixers: Vec<Mixer>,
    head: Option<Head>,
}

/// One line of [`Model::summary`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SummaryRow {
    pub layer: String,
    pub output_shape: String,
    pub params: usize,
}

impl Model {
    /// The model and its (zero-filled) parameters, laid out in a fixed order.
    pub fn new<T: Real>(arch: Arch) -> (Model, Params<T>) {
        let (h, w) = (arch.h, arch.w);
        let mut p = Params::new();
        let gated = arch.task == Task::Classify;
        let mixers = (0..arch.layers)
            .map(|l| Mixer {
                col: MlpIds::add(&mut p, &format!("mixer.{l}.col"), h, h),
                row: MlpIds::add(&mut p, &format!("mixer.{l}.row"), w, w),
                gate: gated.then(|| p.add(format!("mixer.{l}.gate"), &[1])),
            })
            .collect();
        let head = gated.then(|| Head {
            rows: MlpIds::add(&mut p, "head.rows", w, 1),
            cols: MlpIds::add(&mut p, "head.cols", h, 1),
            out_k: p.add("head.out.kernel", &[h + w, arch.classes]),
            out_c: p.add("head.out.bias", &[arch.classes]),
        });
        (Model { arch, mixers, head }, p)
    }

    /// Keras's defaults: every kernel Glorot-uniform, U(±√(6/(fan_in + fan_out))), drawn in
    /// parameter order from `rng`; biases and gates 0 (so the untrained classifier's trunk is the
    /// identity).
    pub fn init<T: Real>(&self, params: &mut Params<T>, rng: &mut Rng) {
        let specs = params.specs().to_vec();
        for s in specs {
            let data = &mut params.data[s.offset..s.offset + s.len];
            if s.name.ends_with(".kernel") {
                let limit = (6.0 / (s.shape[0] + s.shape[1]) as f64).sqrt();
                let dist = Uniform::new_inclusive(-limit, limit);
                for v in data {
                    *v = T::from_f64(dist.sample(rng));
                }
            } else {
                data.fill(T::ZERO);
            }
        }
    }

    /// The forward pass of a batch `x` of shape (H, B, W): logits [B, classes] for the
    /// classifier, the reconstruction (H, B, W) for the autoencoder.
    pub fn forward<T: Real>(&self, t: &mut Tape<T>, x: Var) -> Var {
        let (h, w) = (self.arch.h, self.arch.w);
        let b = t.shape(x)[1];
        assert_eq!(t.shape(x), &[h, b, w], "input shape does not match the model's {h}×{w}");
        let mut act = x;
        for (i, m) in self.mixers.iter().enumerate() {
            let col = m.col.vars(t);
            let row = m.row.vars(t);
            let mixed = self.mixer_mlp(t, i, act, Axis::Cols, col);
            act = match m.gate {
                Some(g) => {
                    let g = t.param(g);
                    ops::gated_axis_mlp(t, act, g, mixed, Axis::Rows, row)
                }
                None => self.mixer_mlp(t, i, mixed, Axis::Rows, row),
            };
        }
        let Some(head) = &self.head else { return act };
        let rows = head.rows.vars(t);
        let rows = ops::axis_mlp(t, act, Axis::Rows, rows); // (H, B, 1)
        let rows = ops::reshape(t, rows, &[h, b]);
        let rows = ops::transpose(t, rows); // (B, H)
        let cols = head.cols.vars(t);
        let cols = ops::axis_mlp(t, act, Axis::Cols, cols); // (1, B, W)
        let cols = ops::reshape(t, cols, &[b, w]);
        let features = ops::concat(t, rows, cols); // (B, H + W)
        let (k, c) = (t.param(head.out_k), t.param(head.out_c));
        ops::dense(t, features, k, c)
    }

    /// Mixer `i`'s ungated MLP along `axis`: in f32 where [`Model::keeps_f32`] says so, else in
    /// the tape's precision.
    fn mixer_mlp<T: Real>(&self, t: &mut Tape<T>, i: usize, x: Var, axis: Axis, w: MlpVars) -> Var {
        if !self.keeps_f32(i, axis) {
            return ops::axis_mlp(t, x, axis, w);
        }
        let precision = t.precision();
        t.set_precision(Precision::F32);
        let out = ops::axis_mlp(t, x, axis, w);
        t.set_precision(precision);
        out
    }

    /// Whether mixer `i`'s MLP along `axis` computes in f32 whatever the precision: in an
    /// autoencoder, whose output must reproduce its input, the MLPs at both ends: the first
    /// column MLP, which reads the image, and both MLPs of the last mixer, whose row MLP writes
    /// the reconstruction. With bf16 operands (8 significant bits) at either end, the
    /// autoencoders' test RMSE came out 5–10% above f32's over 5 to 8 seeds (README, "Mixed
    /// precision"); a classifier computes every MLP in the precision asked for.
    pub fn keeps_f32(&self, i: usize, axis: Axis) -> bool {
        self.head.is_none() && (i + 1 == self.mixers.len() || (i == 0 && axis == Axis::Cols))
    }

    /// Forward plus loss: softmax cross-entropy against `labels` (classifier) or MSE against the
    /// input itself (autoencoder; `labels` unused). Returns (output, loss).
    pub fn loss<T: Real>(&self, t: &mut Tape<T>, x: Var, labels: &[usize]) -> (Var, Var) {
        self.loss_smoothed(t, x, labels, 0.0)
    }

    /// [`Model::loss`] with the classifier's targets smoothed by ε
    /// ([`ops::softmax_cross_entropy_smoothed`]; ε = 0 is [`Model::loss`]).
    pub fn loss_smoothed<T: Real>(&self, t: &mut Tape<T>, x: Var, labels: &[usize], eps: f64) -> (Var, Var) {
        self.loss_with(t, x, |t, out| ops::softmax_cross_entropy_smoothed(t, out, labels, eps))
    }

    /// [`Model::loss`] against mixed targets (CutMix's two labels per image) smoothed by ε
    /// ([`ops::softmax_cross_entropy_mixed`]; single-label targets give [`Model::loss_smoothed`]).
    pub fn loss_mixed<T: Real>(
        &self,
        t: &mut Tape<T>,
        x: Var,
        targets: &[ops::Target],
        eps: f64,
    ) -> (Var, Var) {
        self.loss_with(t, x, |t, out| ops::softmax_cross_entropy_mixed(t, out, targets, eps))
    }

    /// Forward plus loss, the classifier's loss given by `xent` from the logits.
    fn loss_with<T: Real>(
        &self,
        t: &mut Tape<T>,
        x: Var,
        xent: impl FnOnce(&mut Tape<T>, Var) -> Var,
    ) -> (Var, Var) {
        let out = self.forward(t, x);
        let loss = match self.arch.task {
            Task::Classify => xent(t, out),
            Task::Autoencode => {
                // The target is the input itself, copied into a pooled buffer for the call.
                let mut target = t.take(t.value(x).len());
                target.copy_from_slice(t.value(x));
                let loss = ops::mse(t, out, &target);
                t.give(target);
                loss
            }
        };
        (out, loss)
    }

    /// Forward FLOPs per sample, counting a multiply-add as 2: each mixer's two column denses
    /// are 2·H·H·W each and its two row denses 2·W·W·H each; the head adds its small denses.
    /// Training (forward + backward) is about three times this.
    pub fn flops_per_sample(&self) -> u64 {
        let (h, w) = (self.arch.h as u64, self.arch.w as u64);
        let mixer = 4 * h * h * w + 4 * w * w * h;
        let head = if self.head.is_some() {
            2 * h * w + 2 * h + 2 * w * h + 2 * w + 2 * (h + w) * self.arch.classes as u64
        } else {
            0
        };
        mixer * self.arch.layers as u64 + head
    }

    /// A Keras-like table of layers, output shapes (batch as `None`) and parameter counts.
    pub fn summary<T: Real>(&self, params: &Params<T>) -> Vec<SummaryRow> {
        let (h, w, c) = (self.arch.h, self.arch.w, self.arch.classes);
        let size = |id: ParamId| params.spec(id).len;
        let mlp = |m: &MlpIds| size(m.k1) + size(m.c1) + size(m.k2) + size(m.c2);
        let row =
            |layer: String, shape: String, params: usize| SummaryRow { layer, output_shape: shape, params };
        let mut rows = vec![row("input".into(), format!("(None, {h}, {w})"), 0)];
        for (l, m) in self.mixers.iter().enumerate() {
            let name = if m.gate.is_some() {
                format!("mixer.{l} (Mixer + gate)")
            } else {
                format!("mixer.{l} (Mixer)")
            };
            rows.push(row(
                name,
                format!("(None, {h}, {w})"),
                mlp(&m.col) + mlp(&m.row) + m.gate.map_or(0, size),
            ));
        }
        if let Some(hd) = &self.head {
            rows.push(row("head.rows (MLP(1) over rows)".into(), format!("(None, {h})"), mlp(&hd.rows)));
            rows.push(row("head.cols (MLP(1) over columns)".into(), format!("(None, {w})"), mlp(&hd.cols)));
            rows.push(row("concat".into(), format!("(None, {})", h + w), 0));
            rows.push(row(
                "head.out (Dense)".into(),
                format!("(None, {c})"),
                size(hd.out_k) + size(hd.out_c),
            ));
        }
        rows
    }
}

/// Buffers [`Model::infer`] reuses from batch to batch, and the precision it computes in.
#[derive(Debug, Default)]
pub struct InferBuffers<T> {
    h: Vec<T>,
    m: Vec<T>,
    y: Vec<T>,
    z: Vec<T>,
    a: Vec<T>,
    /// The mixed-precision kernels' scratch.
    work: Vec<T>,
    precision: Precision,
}

impl<T> InferBuffers<T> {
    /// Makes the passes from now on compute in `precision` (f32 unless set; bf16 needs `T = f32`
    /// and a CPU that has it: check [`Precision::check`] first, [`Model::infer`] panics otherwise).
    pub fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
    }
}

/// `v` as the `f32`s it is in bf16 inference (which needs `T = f32`).
fn f32s<T: Real>(v: &[T]) -> &[f32] {
    T::as_f32(v).expect("bf16 inference is f32")
}

fn sized<T: Real>(v: &mut Vec<T>, len: usize) -> &mut [T] {
    v.resize(len, T::ZERO);
    &mut v[..len]
}

impl Model {
    /// The forward pass without a tape, for inference: the same kernels in the same order as
    /// [`Model::forward`] (so bitwise the same outputs), but each activation overwrites the last
    /// instead of being kept for a backward pass. `x` is a batch of `b` images in (H, B, W)
    /// layout; returns logits [B, classes] or the reconstruction (H, B, W).
    ///
    /// Why the model is walked twice, here and in [`Model::forward`]: the tape keeps every
    /// activation and the GELU derivative for the backward (76 MB per 32-sample CIFAR shard),
    /// while inference needs two activation buffers whatever the depth, and takes no pool, no
    /// tape and no boxed ops per batch. The two walks are held to each other by the test
    /// `tape_free_inference_equals_the_tape_forward_bitwise` (`crates/model/tests/model.rs`):
    /// bitwise equal outputs for classifiers and autoencoders, gates and biases non-zero.
    pub fn infer<T: Real>(&self, params: &Params<T>, x: &[T], b: usize, buf: &mut InferBuffers<T>) -> Vec<T> {
        use pmixer_kernels::dense::dense_forward;
        use pmixer_kernels::isa::Avx512Bf16;
        use pmixer_kernels::mlp_bf16::{forward_workspace_bf16, mlp_forward_bf16, ForwardIoBf16};
        use pmixer_kernels::{hidden_len, mlp_forward, output_shape, ForwardIo, Hbw, MlpWeights, Skip};
        let (h, w) = (self.arch.h, self.arch.w);
        let s = Hbw { h, b, w };
        assert_eq!(x.len(), s.len(), "infer: input is not {h}×{b}×{w}");
        let weights = |m: &MlpIds| MlpWeights {
            k1: params.get(m.k1),
            c1: params.get(m.c1),
            k2: params.get(m.k2),
            c2: params.get(m.c2),
        };
        let InferBuffers { h: act, m: mixed, y, z, a, work, precision } = buf;
        let bf16 = match *precision {
            Precision::F32 => None,
            Precision::Bf16 => {
                Some(Avx512Bf16::detect().expect("bf16 inference on a CPU without AVX512_BF16"))
            }
        };
        act.clear();
        act.extend_from_slice(x);
        let n = s.len();
        // MLP(n_out) along `axis` of `x` into `out`, through the shared hidden buffers.
        let mut mlp =
            |axis: Axis, m: &MlpIds, x: &[T], out: &mut [T], skip: Option<Skip<T>>, f32_only: bool| {
                let n_out = params.get(m.c1).len();
                if let (Some(token), false) = (bf16, f32_only) {
                    let w = weights(m);
                    let wts = MlpWeights { k1: f32s(w.k1), c1: f32s(w.c1), k2: f32s(w.k2), c2: f32s(w.c2) };
                    let work =
                        T::as_f32_mut(sized(work, forward_workspace_bf16(axis, s, n_out))).expect("f32");
                    let y = T::as_f32_mut(out).expect("f32");
                    let io = ForwardIoBf16 { cpu: token, x: f32s(x), gz: &mut [], a: &mut [], y, work };
                    let skip = skip.map(|sk| Skip { h: f32s(sk.h), g: sk.g.to_f64() as f32 });
                    return mlp_forward_bf16(axis, s, wts, io, false, skip);
                }
                let hid = hidden_len(axis, s, n_out);
                let io = ForwardIo { x, gz: sized(z, hid), a: sized(a, hid), y: out };
                mlp_forward(axis, s, weights(m), io, false, skip);
            };
        for (i, mx) in self.mixers.iter().enumerate() {
            // Columns into `mixed`; rows into `y` (plus the gated residual, act + g·rows, for
            // the classifier), which becomes the next layer's input.
            mlp(Axis::Cols, &mx.col, act, sized(mixed, n), None, self.keeps_f32(i, Axis::Cols));
            let skip = mx.gate.map(|g| Skip { h: &act[..n], g: params.get(g)[0] });
            mlp(Axis::Rows, &mx.row, mixed, sized(y, n), skip, self.keeps_f32(i, Axis::Rows));
            std::mem::swap(act, y);
        }
        let Some(hd) = &self.head else { return act[..n].to_vec() };
        let mut rows = vec![T::ZERO; output_shape(Axis::Rows, s, 1).len()];
        mlp(Axis::Rows, &hd.rows, act, &mut rows, None, false);
        let mut cols = vec![T::ZERO; output_shape(Axis::Cols, s, 1).len()];
        mlp(Axis::Cols, &hd.cols, act, &mut cols, None, false);
        // [rows (H, B) transposed to (B, H) | cols (B, W)], as the head's concatenation.
        let mut features = vec![T::ZERO; b * (h + w)];
        for (bi, f) in features.chunks_exact_mut(h + w).enumerate() {
            for r in 0..h {
                f[r] = rows[r * b + bi];
            }
            f[h..].copy_from_slice(&cols[bi * w..(bi + 1) * w]);
        }
        let c = self.arch.classes;
        let mut logits = vec![T::ZERO; b * c];
        dense_forward(b, h + w, c, &features, params.get(hd.out_k), params.get(hd.out_c), &mut logits);
        logits
    }
}
