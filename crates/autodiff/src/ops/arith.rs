//! Elementwise arithmetic: a sum and a scaling by a learnable scalar. (The classifier's gated
//! residual `h + g·m` is fused into the MLP that computes m: `layers::gated_axis_mlp`.)

use crate::{slots, Backward, Grad, Inputs, Pool, Shape, Tape, Tensor, Var};
use pmixer_kernels::{simd, Real};

/// `y = a + b` (same shapes).
/// Backward: `da += dy` (dy passed through by the tape, see [`Backward::pass_through`]),
/// `db += dy`.
pub fn add<T: Real>(t: &mut Tape<T>, a: Var, b: Var) -> Var {
    assert_eq!(t.shape(a), t.shape(b), "add: shapes differ");
    let mut y = t.take(t.value(a).len());
    for ((y, &u), &v) in y.iter_mut().zip(t.value(a)).zip(t.value(b)) {
        *y = u + v;
    }
    let shape = Shape::new(t.shape(a));
    t.push(Tensor::new(&shape, y), &[a, b], Add)
}

struct Add;
impl<T: Real> Backward<T> for Add {
    fn name(&self) -> &'static str {
        "add"
    }

    fn backward(&self, _: &Inputs<T>, dy: &[T], d: &mut [Option<Grad<T>>], _: &mut Pool<T>) {
        let [_, db] = slots(d);
        if let Some(db) = db {
            db.add(dy);
        }
    }

    fn pass_through(&self) -> Option<usize> {
        Some(0)
    }
}

/// `y = g·x` for a scalar `g` (shape `[1]`): the mixer gate.
/// Backward: `dx += g·dy`, `dg += Σ_i x_i·dy_i`.
pub fn scale<T: Real>(t: &mut Tape<T>, x: Var, g: Var) -> Var {
    assert_eq!(t.value(g).len(), 1, "scale: the gate must be a scalar");
    let gv = t.value(g)[0];
    let mut y = t.take(t.value(x).len());
    for (y, &v) in y.iter_mut().zip(t.value(x)) {
        *y = gv * v;
    }
    let shape = Shape::new(t.shape(x));
    t.push(Tensor::new(&shape, y), &[x, g], Scale)
}

struct Scale;
impl<T: Real> Backward<T> for Scale {
    fn name(&self) -> &'static str {
        "scale"
    }

    fn backward(&self, inputs: &Inputs<T>, dy: &[T], d: &mut [Option<Grad<T>>], _: &mut Pool<T>) {
        let [x, g] = inputs.array();
        let [dx, dg] = slots(d);
        if let Some(dx) = dx {
            dx.add_scaled(g[0], dy);
        }
        if let Some(dg) = dg {
            dg.acc()[0] += simd::dot(x, dy);
        }
    }
}
