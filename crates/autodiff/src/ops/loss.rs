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

/// [`softmax_cross_entropy`] against smoothed targets `q_nc = (1 − ε)·[c = y_n] + ε/C`:
/// `L = (1/N)·Σ_n (log Σ_c e^{l_nc} − Σ_c q_nc·l_nc)`, and since Σ_c q_nc = 1 the backward is
/// `dl_nc += dL·(softmax(l_n)_c − q_nc)/N`. With ε = 0 it is exactly the plain loss (the extra
/// terms are skipped, so its bits are the plain one's).
pub fn softmax_cross_entropy_smoothed<T: Real>(
    t: &mut Tape<T>,
    logits: Var,
    labels: &[usize],
    eps: f64,
) -> Var {
    let &[n, c] = t.shape(logits) else { panic!("cross-entropy: expected [N, C] logits") };
    assert_eq!(labels.len(), n, "cross-entropy: {n} logit rows but {} labels", labels.len());
    assert!((0.0..1.0).contains(&eps), "cross-entropy: smoothing {eps} outside [0, 1)");
    let mut probs = t.take(n * c);
    probs.copy_from_slice(t.value(logits));
    let (keep, spread) = (T::from_f64(1.0 - eps), T::from_f64(eps / c as f64));
    let mut total = T::ZERO;
    for (row, &y) in probs.chunks_exact_mut(c).zip(labels) {
        assert!(y < c, "cross-entropy: label {y} out of range for {c} classes");
        let ly = row[y];
        if eps > 0.0 {
            let sum = row.iter().fold(T::ZERO, |s, &l| s + l);
            total += softmax_row(row) - keep * ly - spread * sum;
            row.iter_mut().for_each(|p| *p -= spread);
            row[y] -= keep;
        } else {
            total += softmax_row(row) - ly;
            row[y] -= T::ONE;
        }
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
