//! Optimizers as pure functions: `step(params, grads, state)` updates the flat parameter buffer
//! in one loop, and the state is plain data a checkpoint can save and restore.

use pmixer_kernels::{simd, Real};

/// Adam with bias correction, in the form Keras uses (TF 2 `tf.keras.optimizers.Adam`):
/// ```text
/// t  ← t + 1
/// m  ← β1·m + (1 − β1)·g
/// v  ← β2·v + (1 − β2)·g²
/// p  ← p − lr·√(1 − β2ᵗ)/(1 − β1ᵗ) · m / (√v + ε)
/// ```
/// Algebraically Kingma & Ba's m̂/(√v̂ + ε̂) with ε̂ = ε·√(1 − β2ᵗ). Defaults are Keras's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Adam {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for Adam {
    fn default() -> Self {
        Adam { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-7 }
    }
}

/// Adam's state: first and second moments (laid out like the parameters) and the step count.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamState<T> {
    pub m: Vec<T>,
    pub v: Vec<T>,
    pub t: u64,
}

impl<T: Real> AdamState<T> {
    pub fn new(n: usize) -> Self {
        AdamState { m: vec![T::ZERO; n], v: vec![T::ZERO; n], t: 0 }
    }

    /// `t ← t + 1`, the step about to be taken (counted from 1): the one place the count moves.
    pub fn advance(&mut self) -> u64 {
        self.t += 1;
        self.t
    }
}

impl Adam {
    /// One step: `t ← t + 1`, then [`Adam::update`] of every parameter.
    pub fn step<T: Real>(&self, params: &mut [T], grads: &[T], s: &mut AdamState<T>) {
        let t = s.advance();
        self.update(t, params, grads, &mut s.m, &mut s.v);
    }

    /// The update of step `t` (counted from 1) for any slice of the parameters and the matching
    /// slices of the gradient and the moments: elementwise, so slices can be updated in any order
    /// or concurrently with the same result.
    pub fn update<T: Real>(&self, t: u64, params: &mut [T], grads: &[T], m: &mut [T], v: &mut [T]) {
        assert!(params.len() == grads.len() && m.len() == params.len() && v.len() == params.len());
        let t = t as i32;
        let lr_t = self.lr * (1.0 - self.beta2.powi(t)).sqrt() / (1.0 - self.beta1.powi(t));
        let (b1, b2) = (T::from_f64(self.beta1), T::from_f64(self.beta2));
        let (c1, c2) = (T::from_f64(1.0 - self.beta1), T::from_f64(1.0 - self.beta2));
        let (lr_t, eps) = (T::from_f64(lr_t), T::from_f64(self.eps));
        simd::adam(params, grads, m, v, [b1, c1, b2, c2, lr_t, eps]);
    }
}

/// Plain stochastic gradient descent: `p ← p − lr·g`. Stateless.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sgd {
    pub lr: f64,
}

impl Sgd {
    pub fn step<T: Real>(&self, params: &mut [T], grads: &[T]) {
        let lr = T::from_f64(self.lr);
        for (p, &g) in params.iter_mut().zip(grads) {
            *p -= lr * g;
        }
    }
}
