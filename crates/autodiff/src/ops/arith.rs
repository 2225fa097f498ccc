//! Elementwise arithmetic: the residual sum, the learnable scalar gate, and the two fused into
//! the gated residual the classifier's trunk uses.

use crate::tape::{Backward, Grad, Inputs, Pool, Shape, Tape, Tensor, Var};
use pmixer_kernels::{simd, Real, Write};

/// `y = a + b` (same shapes).
/// Backward: `da += dy`, `db += dy`.
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
        for g in d.iter_mut().flatten() {
            g.add(dy);
        }
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
        let (x, g) = (&inputs[0], inputs[1][0]);
        if let Some(dx) = &mut d[0] {
            dx.add_scaled(g, dy);
        }
        if let Some(dg) = &mut d[1] {
            dg.acc()[0] += simd::dot(x, dy);
        }
    }
}

/// The classifier's residual step `y = h + g·m` in one pass (`add(h, scale(m, g))` fused).
/// Backward: `dh += dy`, `dm += g·dy`, `dg += Σ_i m_i·dy_i`.
pub fn gated_residual<T: Real>(t: &mut Tape<T>, h: Var, g: Var, m: Var) -> Var {
    assert_eq!(t.shape(h), t.shape(m), "gated_residual: shapes differ");
    assert_eq!(t.value(g).len(), 1, "gated_residual: the gate must be a scalar");
    let gv = t.value(g)[0];
    let mut y = t.take(t.value(h).len());
    simd::residual(&mut y, t.value(h), gv, t.value(m));
    let shape = Shape::new(t.shape(h));
    t.push(Tensor::new(&shape, y), &[h, g, m], GatedResidual)
}

struct GatedResidual;
impl<T: Real> Backward<T> for GatedResidual {
    fn name(&self) -> &'static str {
        "gated_residual"
    }

    fn backward(&self, inputs: &Inputs<T>, dy: &[T], d: &mut [Option<Grad<T>>], _: &mut Pool<T>) {
        let (g, m) = (inputs[1][0], &inputs[2]);
        let [dh, dg, dm] = d else { unreachable!("gated_residual has three inputs") };
        if let (Some(dh), Some(dg), Some(dm)) = (dh.as_mut(), dg.as_mut(), dm.as_mut()) {
            // The trunk's case: all three in one pass over dy.
            let (set_dh, set_dm) = (dh.write() == Write::Set, dm.write() == Write::Set);
            dg.acc()[0] += simd::residual_backward(dy, m, g, dh.data(), set_dh, dm.data(), set_dm);
            return;
        }
        if let Some(dh) = dh {
            dh.add(dy);
        }
        if let Some(dg) = dg {
            dg.acc()[0] += simd::dot(m, dy);
        }
        if let Some(dm) = dm {
            dm.add_scaled(g, dy);
        }
    }
}
