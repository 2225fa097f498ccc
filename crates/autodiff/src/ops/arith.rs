//! Elementwise arithmetic: the residual sum and the learnable scalar gate.

use crate::tape::{Backward, Tape, Tensor, Var};
use pmixer_kernels::{simd, Real};

/// `y = a + b` (same shapes).
/// Backward: `da += dy`, `db += dy`.
pub fn add<T: Real>(t: &mut Tape<T>, a: Var, b: Var) -> Var {
    assert_eq!(t.shape(a), t.shape(b), "add: shapes differ");
    let y: Vec<T> = t.value(a).iter().zip(t.value(b)).map(|(&x, &y)| x + y).collect();
    let shape = t.shape(a).to_vec();
    t.push(Tensor::new(&shape, y), &[a, b], Add)
}

struct Add;
impl<T: Real> Backward<T> for Add {
    fn backward(&self, _: &[&[T]], dy: &[T], d: &mut [Option<&mut [T]>]) {
        for g in d.iter_mut().flatten() {
            simd::add_assign(g, dy);
        }
    }
}

/// `y = g·x` for a scalar `g` (shape [1]): the mixer gate.
/// Backward: `dx += g·dy`, `dg += Σ_i x_i·dy_i`.
pub fn scale<T: Real>(t: &mut Tape<T>, x: Var, g: Var) -> Var {
    assert_eq!(t.value(g).len(), 1, "scale: the gate must be a scalar");
    let gv = t.value(g)[0];
    let y: Vec<T> = t.value(x).iter().map(|&v| gv * v).collect();
    let shape = t.shape(x).to_vec();
    t.push(Tensor::new(&shape, y), &[x, g], Scale)
}

struct Scale;
impl<T: Real> Backward<T> for Scale {
    fn backward(&self, inputs: &[&[T]], dy: &[T], d: &mut [Option<&mut [T]>]) {
        let (x, g) = (inputs[0], inputs[1][0]);
        if let Some(dx) = d[0].as_deref_mut() {
            for (dx, &dy) in dx.iter_mut().zip(dy) {
                *dx += g * dy;
            }
        }
        if let Some(dg) = d[1].as_deref_mut() {
            let prod: Vec<T> = x.iter().zip(dy).map(|(&x, &dy)| x * dy).collect();
            dg[0] += simd::sum(&prod);
        }
    }
}
