//! Scalar reductions: the mean, the autoencoder's MSE and the classifier's softmax cross-entropy.

use crate::{slots, Backward, Grad, Inputs, Pool, Tape, Tensor, Var};
use pmixer_kernels::{simd, Real};

/// `y = (1/n)·Σ_i x_i`, a scalar.
/// Backward: `dx_i += dy/n`.
pub fn mean<T: Real>(t: &mut Tape<T>, x: Var) -> Var {
    let xv = t.value(x);
    let n = T::from_f64(xv.len() as f64);
    let y = simd::sum(xv) / n;
    let mut out = t.zeros(1);
    out[0] = y;
    t.push(Tensor::new(&[1], out), &[x], Mean)
}

struct Mean;
impl<T: Real> Backward<T> for Mean {
    fn name(&self) -> &'static str {
        "mean"
    }

    fn backward(&self, inputs: &Inputs<T>, dy: &[T], d: &mut [Option<Grad<T>>], _: &mut Pool<T>) {
        let ([x], [dx]) = (inputs.array(), slots(d));
        if let Some(dx) = dx {
            simd::add_scalar(dx.acc(), dy[0] / T::from_f64(x.len() as f64));
        }
    }
}

/// Mean squared error against a constant target of the same length:
/// `L = (1/n)·Σ_i (p_i − t_i)²`.
/// Backward: `dp_i += dL·2(p_i − t_i)/n`.
pub fn mse<T: Real>(t: &mut Tape<T>, pred: Var, target: &[T]) -> Var {
    let n = t.value(pred).len();
    assert_eq!(n, target.len(), "mse: prediction and target sizes differ");
    let mut diff = t.zeros(n);
    for ((e, &p), &y) in diff.iter_mut().zip(t.value(pred)).zip(target) {
        *e = p - y;
    }
    let mut loss = t.zeros(1);
    loss[0] = simd::dot(&diff, &diff) / T::from_f64(n as f64);
    let diff = t.keep(diff);
    t.push(Tensor::new(&[1], loss), &[pred, diff], Mse)
}

struct Mse;
impl<T: Real> Backward<T> for Mse {
    fn name(&self) -> &'static str {
        "mse"
    }

    fn backward(&self, inputs: &Inputs<T>, dy: &[T], d: &mut [Option<Grad<T>>], _: &mut Pool<T>) {
        let ([_, diff], [dp, _]) = (inputs.array(), slots(d));
        if let Some(dp) = dp {
            let k = dy[0] * T::from_f64(2.0 / diff.len() as f64);
            for (g, &e) in dp.acc().iter_mut().zip(diff) {
                *g += k * e;
            }
        }
    }
}

/// Replaces a row of logits l by softmax(l) and returns log Σ_c e^{l_c}: with m = max l,
/// `softmax(l)_c = e^{l_c − m} / z` and `log Σ e^{l_c} = ln z + m` for z = Σ_c e^{l_c − m} (the
/// maximum subtracted so that no exponential overflows). The one softmax of the workspace: the
/// training loss, evaluation's loss (in f64) and `predict`'s probabilities all use it.
pub fn softmax_row<T: Real>(row: &mut [T]) -> T {
    let m = row.iter().fold(row[0], |m, &v| m.max(v));
    let mut z = T::ZERO;
    for v in row.iter_mut() {
        *v = (*v - m).exp();
        z += *v;
    }
    for v in row.iter_mut() {
        *v = *v / z;
    }
    z.ln() + m
}

/// Softmax cross-entropy from logits [N, C] and integer labels, averaged over the batch:
/// `L = (1/N)·Σ_n (log Σ_c e^{l_nc} − l_{n,y_n})`, with the max subtracted before exponentiating.
/// Backward: `dl_nc += dL·(softmax(l_n)_c − [c = y_n])/N`; the forward keeps
/// `softmax(l_n)_c − [c = y_n]`, so the backward needs no labels.
pub fn softmax_cross_entropy<T: Real>(t: &mut Tape<T>, logits: Var, labels: &[usize]) -> Var {
    softmax_cross_entropy_smoothed(t, logits, labels, 0.0)
}

/// [`softmax_cross_entropy`] against smoothed targets `q_nc = (1 − ε)·[c = y_n] + ε/C`
/// ([`softmax_cross_entropy_mixed`] with every target a single label). With ε = 0 it is exactly
/// the plain loss.
pub fn softmax_cross_entropy_smoothed<T: Real>(
    t: &mut Tape<T>,
    logits: Var,
    labels: &[usize],
    eps: f64,
) -> Var {
    xent(t, logits, labels.len(), |n| Target::label(labels[n]), eps)
}

/// A classification target that may be a mix of two labels (CutMix's): label `a` with weight
/// `share`, label `b` with weight 1 − `share`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Target {
    pub a: usize,
    pub b: usize,
    pub share: f64,
}

impl Target {
    /// A single label: weight 1 on `y`.
    pub fn label(y: usize) -> Target {
        Target { a: y, b: y, share: 1.0 }
    }
}

/// Softmax cross-entropy against mixed, smoothed targets, averaged over the batch. Target n
/// puts weight `s_n` on class `a_n` and `1 − s_n` on `b_n`; smoothing by ε gives
/// `q_nc = (1 − ε)·(s_n·[c = a_n] + (1 − s_n)·[c = b_n]) + ε/C`, and
/// `L = (1/N)·Σ_n (log Σ_c e^{l_nc} − Σ_c q_nc·l_nc)`.
/// Backward: since Σ_c q_nc = 1, `dl_nc += dL·(softmax(l_n)_c − q_nc)/N`; the forward keeps
/// `softmax(l_n)_c − q_nc`, so the backward needs no targets. A single label (s = 1, a = b)
/// gives the plain or smoothed loss bit for bit: its extra terms are exact zeros.
pub fn softmax_cross_entropy_mixed<T: Real>(
    t: &mut Tape<T>,
    logits: Var,
    targets: &[Target],
    eps: f64,
) -> Var {
    xent(t, logits, targets.len(), |n| targets[n], eps)
}

/// The cross-entropy of `rows` targets given by `target(n)`, smoothed by ε.
fn xent<T: Real>(
    t: &mut Tape<T>,
    logits: Var,
    rows: usize,
    target: impl Fn(usize) -> Target,
    eps: f64,
) -> Var {
    let &[n, c] = t.shape(logits) else { panic!("cross-entropy: expected [N, C] logits") };
    assert_eq!(rows, n, "cross-entropy: {n} logit rows but {rows} targets");
    assert!((0.0..1.0).contains(&eps), "cross-entropy: smoothing {eps} outside [0, 1)");
    let mut probs = t.take(n * c);
    probs.copy_from_slice(t.value(logits));
    let (keep, spread) = (T::from_f64(1.0 - eps), T::from_f64(eps / c as f64));
    let mut total = T::ZERO;
    for (i, row) in probs.chunks_exact_mut(c).enumerate() {
        let Target { a, b, share } = target(i);
        assert!(a < c && b < c, "cross-entropy: label {} out of range for {c} classes", a.max(b));
        assert!((0.0..=1.0).contains(&share), "cross-entropy: share {share} outside [0, 1]");
        let (sa, sb) = (keep * T::from_f64(share), keep * T::from_f64(1.0 - share));
        // Σ_c (1 − ε)·(s·[c = a] + (1 − s)·[c = b])·l_c, the labels' part of Σ_c q_c·l_c.
        let labelled = sa * row[a] + sb * row[b];
        if eps > 0.0 {
            let sum = row.iter().fold(T::ZERO, |s, &l| s + l);
            total += softmax_row(row) - labelled - spread * sum;
            row.iter_mut().for_each(|p| *p -= spread);
        } else {
            total += softmax_row(row) - labelled;
        }
        row[a] -= sa;
        row[b] -= sb;
    }
    let mut loss = t.zeros(1);
    loss[0] = total / T::from_f64(n as f64);
    let residual = t.keep(probs);
    t.push(Tensor::new(&[1], loss), &[logits, residual], SoftmaxXent { n })
}

struct SoftmaxXent {
    n: usize,
}
impl<T: Real> Backward<T> for SoftmaxXent {
    fn name(&self) -> &'static str {
        "softmax_cross_entropy"
    }

    fn backward(&self, inputs: &Inputs<T>, dy: &[T], d: &mut [Option<Grad<T>>], _: &mut Pool<T>) {
        let ([_, residual], [dl, _]) = (inputs.array(), slots(d));
        if let Some(dl) = dl {
            let k = dy[0] / T::from_f64(self.n as f64);
            for (g, &r) in dl.acc().iter_mut().zip(residual) {
                *g += k * r;
            }
        }
    }
}
