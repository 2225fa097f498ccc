//! The learnable layers: the fused axis-MLP (one tape node for Dense → GELU → Dense along a
//! whole axis of the batch) and a plain dense layer. Both call `pmixer-kernels`, where the
//! math and the stride tricks are written out.

use crate::tape::{Backward, Tape, Tensor, Var};

/// Every input's gradient buffer: the tape's where it asked for one, zeroed scratch elsewhere
/// (these kernels compute all their gradients in one pass; usually only the network's input
/// needs none).
fn or_scratch<'a, const N: usize, T: Real>(
    d: &'a mut [Option<&mut [T]>],
    inputs: &[&[T]],
    scratch: &'a mut Vec<Vec<T>>,
) -> [&'a mut [T]; N] {
    *scratch = d
        .iter()
        .zip(inputs)
        .map(|(g, v)| if g.is_some() { Vec::new() } else { vec![T::ZERO; v.len()] })
        .collect();
    let bufs: Vec<&mut [T]> = d
        .iter_mut()
        .zip(scratch.iter_mut())
        .map(|(g, s)| match g {
            Some(g) => &mut **g,
            None => s.as_mut_slice(),
        })
        .collect();
    bufs.try_into().unwrap_or_else(|_| panic!("expected {N} inputs"))
}
use pmixer_kernels::dense::{dense_backward, dense_forward};
use pmixer_kernels::{mlp_backward, mlp_forward, output_shape, Axis, Hbw, MlpGrads, MlpWeights, Real};

/// The four parameter leaves of one `MLP(n)`: K1 (in×n), c1 (n), K2 (n×n), c2 (n).
#[derive(Clone, Copy, Debug)]
pub struct MlpVars {
    pub k1: Var,
    pub c1: Var,
    pub k2: Var,
    pub c2: Var,
}

fn hbw(shape: &[usize]) -> Hbw {
    let &[h, b, w] = shape else { panic!("axis_mlp: expected an (H, B, W) tensor, got {shape:?}") };
    Hbw { h, b, w }
}

/// `MLP(n)` along `axis` of an (H, B, W) activation; n is the length of c1.
/// Forward: [`pmixer_kernels::mlp_forward`] (z = x·K1 + c1, a = gelu(z), y = a·K2 + c2 per item).
/// Backward: [`pmixer_kernels::mlp_backward`] (dK2 = aᵀdy, dz = dy·K2ᵀ ⊙ gelu'(z), dK1 = xᵀdz,
/// dx = dz·K1ᵀ, bias gradients the item sums), using the z and a this forward kept.
pub fn axis_mlp<T: Real>(t: &mut Tape<T>, x: Var, axis: Axis, w: MlpVars) -> Var {
    let s = hbw(t.shape(x));
    let n = t.value(w.c1).len();
    let os = output_shape(axis, s, n);
    let (mut z, mut a, mut y) = (vec![T::ZERO; os.len()], vec![T::ZERO; os.len()], vec![T::ZERO; os.len()]);
    let wts = MlpWeights { k1: t.value(w.k1), c1: t.value(w.c1), k2: t.value(w.k2), c2: t.value(w.c2) };
    mlp_forward(axis, s, n, wts, t.value(x), &mut z, &mut a, &mut y);
    let inputs = [x, w.k1, w.c1, w.k2, w.c2];
    let saved = if t.records(&inputs) {
        AxisMlp { axis, s, n, z, a }
    } else {
        AxisMlp { axis, s, n, z: vec![], a: vec![] }
    };
    t.push(Tensor::new(&[os.h, os.b, os.w], y), &inputs, saved)
}

struct AxisMlp<T> {
    axis: Axis,
    s: Hbw,
    n: usize,
    z: Vec<T>,
    a: Vec<T>,
}

impl<T: Real> Backward<T> for AxisMlp<T> {
    fn backward(&self, inputs: &[&[T]], dy: &[T], d: &mut [Option<&mut [T]>]) {
        let wts = MlpWeights { k1: inputs[1], c1: inputs[2], k2: inputs[3], c2: inputs[4] };
        let mut dz = vec![T::ZERO; dy.len()];
        let mut scratch = Vec::new();
        let [dx, k1, c1, k2, c2] = or_scratch::<5, T>(d, inputs, &mut scratch);
        let grads = MlpGrads { k1, c1, k2, c2 };
        mlp_backward(self.axis, self.s, self.n, wts, inputs[0], &self.z, &self.a, dy, &mut dz, dx, grads);
    }
}

/// `y = x·K + c` for x [N, in], K [in, out], c [out].
/// Backward ([`pmixer_kernels::dense::dense_backward`]): dx += dy·Kᵀ, dK += xᵀ·dy, dc += Σ_rows dy.
pub fn dense<T: Real>(t: &mut Tape<T>, x: Var, k: Var, c: Var) -> Var {
    let (&[n, n_in], &[k_in, n_out]) = (t.shape(x), t.shape(k)) else { panic!("dense: expected matrices") };
    assert_eq!(n_in, k_in, "dense: input width {n_in} vs kernel rows {k_in}");
    let mut y = vec![T::ZERO; n * n_out];
    dense_forward(n, n_in, n_out, t.value(x), t.value(k), t.value(c), &mut y);
    t.push(Tensor::new(&[n, n_out], y), &[x, k, c], Dense { n, n_in, n_out })
}

struct Dense {
    n: usize,
    n_in: usize,
    n_out: usize,
}

impl<T: Real> Backward<T> for Dense {
    fn backward(&self, inputs: &[&[T]], dy: &[T], d: &mut [Option<&mut [T]>]) {
        let mut scratch = Vec::new();
        let [dx, dk, dc] = or_scratch::<3, T>(d, inputs, &mut scratch);
        dense_backward(self.n, self.n_in, self.n_out, inputs[0], inputs[1], dy, dx, dk, dc);
    }
}
