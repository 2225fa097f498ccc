//! The learnable layers: the fused axis-MLP (one tape node for Dense → GELU → Dense along a
//! whole axis of the batch, optionally with the classifier's gated residual around it) and a
//! plain dense layer. Both call `pmixer-kernels`, where the math and the stride tricks are
//! written out.

use crate::{Backward, Grad, Inputs, Pool, Tape, Tensor, Var};
use pmixer_kernels::bf16::{self, Precision};
use pmixer_kernels::dense::{dense_backward, dense_forward};
use pmixer_kernels::isa::Avx512Bf16;
use pmixer_kernels::{
    backward_workspace, hidden_len, mlp_backward, mlp_forward, output_shape, Axis, BackwardIo, ForwardIo,
    GateGrad, Hbw, MlpGrads, MlpWeights, Real, Saved, Skip, Write,
};

/// The first N inputs' gradient buffers: the tape's where it asked for one, fresh scratch from
/// the pool (in `scratch`) elsewhere (these kernels compute all their gradients in one pass;
/// usually only the network's input needs none). Give `scratch` back to the pool afterwards.
fn or_scratch<'a, const N: usize, T: Real>(
    d: &'a mut [Option<Grad<T>>],
    inputs: &Inputs<T>,
    scratch: &'a mut [(Vec<T>, bool); N],
    pool: &mut Pool<T>,
) -> [Grad<'a, T>; N] {
    let (mut d, mut scratch) = (d.iter_mut(), scratch.iter_mut());
    std::array::from_fn(|i| {
        let (buf, fresh) = scratch.next().expect("N scratch slots");
        match d.next().expect("at least N inputs") {
            Some(g) => g.reborrow(),
            None => {
                (*buf, *fresh) = (pool.take(inputs[i].len()), true);
                Grad::new(buf, fresh)
            }
        }
    })
}

/// Empty scratch slots for [`or_scratch`] (an empty `Vec` allocates nothing).
fn no_scratch<const N: usize, T>() -> [(Vec<T>, bool); N] {
    std::array::from_fn(|_| (Vec::new(), false))
}

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
/// dx = dz·K1ᵀ, bias gradients the item sums), using the gelu'(z) and a this forward kept on
/// the tape (the node's inputs `slot::DGELU` and `slot::A`).
pub fn axis_mlp<T: Real>(t: &mut Tape<T>, x: Var, axis: Axis, w: MlpVars) -> Var {
    mlp_op(t, x, axis, w, None)
}

/// The classifier's mixer step `y = h + g·MLP(n)(x)` along `axis`, for h of the output's shape
/// and a scalar gate g: [`axis_mlp`] with the gated residual added to each output tile as it is
/// computed ([`pmixer_kernels::Skip`]), so that the MLP's own output m is never stored.
/// Backward: `dh += dy`, which the tape passes through ([`Backward::pass_through`]: h's
/// gradient takes over dy's buffer, no copy); the MLP's as in [`axis_mlp`] for an output
/// gradient g·dy, and `dg += Σ m·dy`, both computed from dy with g folded into K2 (see
/// [`pmixer_kernels::GateGrad`] for the derivation).
pub fn gated_axis_mlp<T: Real>(t: &mut Tape<T>, h: Var, g: Var, x: Var, axis: Axis, w: MlpVars) -> Var {
    mlp_op(t, x, axis, w, Some((h, g)))
}

/// The positions of an axis-MLP node's inputs on the tape: x, the four weights, the two tensors
/// the forward keeps for the backward, and (gated) the residual h and the gate g.
mod slot {
    pub const X: usize = 0;
    pub const K1: usize = 1;
    pub const C1: usize = 2;
    pub const K2: usize = 3;
    pub const C2: usize = 4;
    pub const DGELU: usize = 5;
    pub const A: usize = 6;
    pub const H: usize = 7;
    pub const G: usize = 8;
}

fn mlp_op<T: Real>(t: &mut Tape<T>, x: Var, axis: Axis, w: MlpVars, skip: Option<(Var, Var)>) -> Var {
    let s = hbw(t.shape(x));
    let n = t.value(w.c1).len();
    let os = output_shape(axis, s, n);
    let hid = hidden_len(axis, s, n);
    let precision = t.precision();
    // bf16 hidden tensors take two values to an f32 slot: buffers of half the length.
    let kept_len = if precision == Precision::Bf16 { hid.div_ceil(2) } else { hid };
    let (mut gz, mut a, mut y) = (t.take(kept_len), t.take(kept_len), t.take(os.len()));
    let mut inputs = [x; slot::G + 1];
    (inputs[slot::K1], inputs[slot::C1], inputs[slot::K2], inputs[slot::C2]) = (w.k1, w.c1, w.k2, w.c2);
    if let Some((h, g)) = skip {
        assert_eq!(t.shape(h), &[os.h, os.b, os.w], "gated_axis_mlp: the residual's shape");
        assert_eq!(t.value(g).len(), 1, "gated_axis_mlp: the gate must be a scalar");
        (inputs[slot::H], inputs[slot::G]) = (h, g);
    }
    let keep = t.records(&inputs[..=slot::C2]) || skip.is_some_and(|(h, g)| t.records(&[h, g]));
    if precision == Precision::Bf16 {
        let mut work = t.take(pmixer_kernels::mlp_bf16::forward_workspace_bf16(axis, s, n));
        let value = |v: Var| f32s(t.value(v));
        let wts = MlpWeights { k1: value(w.k1), c1: value(w.c1), k2: value(w.k2), c2: value(w.c2) };
        let sk = skip.map(|(h, g)| Skip { h: value(h), g: value(g)[0] });
        let (gz16, a16) = (bf16::in_f32s_mut(f32s_mut(&mut gz)), bf16::in_f32s_mut(f32s_mut(&mut a)));
        let cpu = Avx512Bf16::detect().expect("the tape's precision was checked against the CPU");
        let io = pmixer_kernels::mlp_bf16::ForwardIoBf16 {
            cpu,
            x: value(x),
            gz: &mut gz16[..if keep { hid } else { 0 }],
            a: &mut a16[..if keep { hid } else { 0 }],
            y: f32s_mut(&mut y),
            work: f32s_mut(&mut work),
        };
        pmixer_kernels::mlp_bf16::mlp_forward_bf16(axis, s, wts, io, keep, sk);
        t.give(work);
    } else {
        let wts = MlpWeights { k1: t.value(w.k1), c1: t.value(w.c1), k2: t.value(w.k2), c2: t.value(w.c2) };
        let sk = skip.map(|(h, g)| Skip { h: t.value(h), g: t.value(g)[0] });
        mlp_forward(axis, s, wts, ForwardIo { x: t.value(x), gz: &mut gz, a: &mut a, y: &mut y }, keep, sk);
    }
    let y = Tensor::new(&[os.h, os.b, os.w], y);
    let op = AxisMlp { axis, s, n, gated: skip.is_some(), precision };
    if !keep {
        // Nothing will be recorded (inference): the node is pushed for its output only.
        t.give(gz);
        t.give(a);
        return t.push(y, &inputs[..=slot::C2], op);
    }
    (inputs[slot::DGELU], inputs[slot::A]) = (t.keep(gz), t.keep(a));
    let last = if skip.is_some() { slot::G } else { slot::A };
    t.push(y, &inputs[..=last], op)
}

struct AxisMlp {
    axis: Axis,
    s: Hbw,
    n: usize,
    /// Whether the node is [`gated_axis_mlp`]'s (with inputs h and g).
    gated: bool,
    /// bf16: the kept gelu'(z) and a are bf16, two to a slot, and the backward is
    /// [`pmixer_kernels::mlp_bf16::mlp_backward_bf16`].
    precision: Precision,
}

impl AxisMlp {
    /// (items, input features) along the op's axis.
    fn items(&self) -> (usize, usize) {
        match self.axis {
            Axis::Rows => (self.s.h * self.s.b, self.s.w),
            Axis::Cols => (self.s.b * self.s.w, self.s.h),
        }
    }
}

impl<T: Real> Backward<T> for AxisMlp {
    fn name(&self) -> &'static str {
        match (self.axis, self.gated) {
            (Axis::Rows, false) => "axis_mlp rows",
            (Axis::Cols, false) => "axis_mlp cols",
            (Axis::Rows, true) => "gated axis_mlp rows",
            (Axis::Cols, true) => "gated axis_mlp cols",
        }
    }

    /// Forward: two dense layers over every item, 2·items·(n_in·n + n²); backward twice that.
    fn flops(&self) -> (u64, u64) {
        let (items, n_in) = self.items();
        let f = 2 * (items * (n_in * self.n + self.n * self.n)) as u64;
        (f, 2 * f)
    }

    /// Forward: reads x (items·n_in) and the weights, writes gelu'(z), a and y (items·n each),
    /// and reads h when gated. Backward: reads x, gelu'(z), a, dy and the weights, writes dx and
    /// the weight gradients. (dz stays in cache: each chunk's is at most 64 KB.)
    fn bytes(&self) -> (u64, u64) {
        let (items, n_in) = self.items();
        let (x, hidden, w) = (items * n_in, items * self.n, n_in * self.n + self.n * self.n + 2 * self.n);
        let h = if self.gated { hidden } else { 0 };
        let size = std::mem::size_of::<T>();
        // The two kept hidden tensors take 2 bytes a value in bf16.
        let kept = match self.precision {
            Precision::F32 => 2 * hidden * size,
            Precision::Bf16 => 2 * hidden * 2,
        };
        let (fwd, bwd) = ((x + hidden + h + w) * size + kept, (2 * x + hidden + 2 * w) * size + kept);
        (fwd as u64, bwd as u64)
    }

    fn pass_through(&self) -> Option<usize> {
        self.gated.then_some(slot::H)
    }

    fn backward(&self, inputs: &Inputs<T>, dy: &[T], d: &mut [Option<Grad<T>>], pool: &mut Pool<T>) {
        let wts = MlpWeights {
            k1: &inputs[slot::K1],
            c1: &inputs[slot::C1],
            k2: &inputs[slot::K2],
            c2: &inputs[slot::C2],
        };
        let (x, dgelu, a) = (&inputs[slot::X], &inputs[slot::DGELU], &inputs[slot::A]);
        // Gated: h's gradient is the tape's (pass-through); dg goes to the gate's buffer, or
        // nowhere when the gate needs none.
        let mut dg = if self.gated { d[slot::G].take() } else { None };
        let mut scratch = no_scratch();
        let [dx, mut w @ ..] = or_scratch::<5, T>(&mut d[..=slot::C2], inputs, &mut scratch, pool);
        // The weights' gradients are set when all four are fresh (each parameter used once).
        let grads_write = match w.iter().all(|g| g.write() == Write::Set) {
            true => Write::Set,
            false => {
                w.iter_mut().for_each(|g| _ = g.acc());
                Write::Add
            }
        };
        let dx_write = dx.write();
        let [k1, c1, k2, c2] = w.map(Grad::into_data);
        let grads = MlpGrads { k1, c1, k2, c2, write: grads_write };
        let dx = dx.into_data();
        let mut dg_unused = T::ZERO;
        let gate = self.gated.then(|| GateGrad {
            g: inputs[slot::G][0],
            dg: match &mut dg {
                Some(dg) => &mut dg.acc()[0],
                None => &mut dg_unused,
            },
        });
        if self.precision == Precision::Bf16 {
            self.backward_bf16(BackwardBf16 { wts, x, dgelu, a, dy, dx, dx_write, grads, gate }, pool);
        } else {
            let mut dz = pool.take(hidden_len(self.axis, self.s, self.n));
            let mut work = pool.take(backward_workspace(self.axis, self.s, self.n));
            let saved = Saved { x, dgelu, a };
            let io = BackwardIo { dy, dx, dx_write, dz: &mut dz, work: &mut work };
            mlp_backward(self.axis, self.s, wts, saved, io, grads, gate);
            pool.give(dz);
            pool.give(work);
        }
        for (v, _) in scratch {
            pool.give(v);
        }
    }
}

/// `v` as the `f32`s it is on a bf16 node's tape (bf16 needs `T = f32`: [`Tape::set_precision`]).
fn f32s<T: Real>(v: &[T]) -> &[f32] {
    T::as_f32(v).expect("bf16 nodes are on f32 tapes")
}

/// [`f32s`], writable.
fn f32s_mut<T: Real>(v: &mut [T]) -> &mut [f32] {
    T::as_f32_mut(v).expect("bf16 nodes are on f32 tapes")
}

/// Everything [`AxisMlp::backward_bf16`] reads and writes, as the generic backward has them.
struct BackwardBf16<'a, T> {
    wts: MlpWeights<'a, T>,
    x: &'a [T],
    dgelu: &'a [T],
    a: &'a [T],
    dy: &'a [T],
    dx: &'a mut [T],
    dx_write: Write,
    grads: MlpGrads<'a, T>,
    gate: Option<GateGrad<'a, T>>,
}

impl AxisMlp {
    /// The mixed-precision backward, on `f32` views of the tape's buffers (a bf16 node exists
    /// only on an `f32` tape: [`Tape::set_precision`]).
    fn backward_bf16<T: Real>(&self, b: BackwardBf16<T>, pool: &mut Pool<T>) {
        use pmixer_kernels::mlp_bf16::{
            backward_workspace_bf16, mlp_backward_bf16, BackwardIoBf16, SavedBf16,
        };
        let hid = hidden_len(self.axis, self.s, self.n);
        let BackwardBf16 { wts, x, dgelu, a, dy, dx, dx_write, grads, gate } = b;
        let wts = MlpWeights { k1: f32s(wts.k1), c1: f32s(wts.c1), k2: f32s(wts.k2), c2: f32s(wts.c2) };
        let saved = SavedBf16 {
            x: f32s(x),
            dgelu: &bf16::in_f32s(f32s(dgelu))[..hid],
            a: &bf16::in_f32s(f32s(a))[..hid],
        };
        let mut work = pool.take(backward_workspace_bf16(self.axis, self.s, self.n));
        let cpu = Avx512Bf16::detect().expect("the tape's precision was checked against the CPU");
        let io = BackwardIoBf16 { cpu, dy: f32s(dy), dx: f32s_mut(dx), dx_write, work: f32s_mut(&mut work) };
        let MlpGrads { k1, c1, k2, c2, write } = grads;
        let grads =
            MlpGrads { k1: f32s_mut(k1), c1: f32s_mut(c1), k2: f32s_mut(k2), c2: f32s_mut(c2), write };
        let mut dg32 = 0f32;
        let gate32 = gate.as_ref().map(|gg| GateGrad { g: gg.g.to_f64() as f32, dg: &mut dg32 });
        mlp_backward_bf16(self.axis, self.s, wts, saved, io, grads, gate32);
        if let Some(gg) = gate {
            *gg.dg += T::from_f64(dg32 as f64);
        }
        pool.give(work);
    }
}

/// `y = x·K + c` for x `[N, in]`, K `[in, out]`, c `[out]`.
/// Backward ([`pmixer_kernels::dense::dense_backward`]): dx += dy·Kᵀ, dK += xᵀ·dy, dc += Σ_rows dy.
pub fn dense<T: Real>(t: &mut Tape<T>, x: Var, k: Var, c: Var) -> Var {
    let (&[n, n_in], &[k_in, n_out]) = (t.shape(x), t.shape(k)) else { panic!("dense: expected matrices") };
    assert_eq!(n_in, k_in, "dense: input width {n_in} vs kernel rows {k_in}");
    let mut y = t.take(n * n_out);
    dense_forward(n, n_in, n_out, t.value(x), t.value(k), t.value(c), &mut y);
    t.push(Tensor::new(&[n, n_out], y), &[x, k, c], Dense { n, n_in, n_out })
}

struct Dense {
    n: usize,
    n_in: usize,
    n_out: usize,
}

impl<T: Real> Backward<T> for Dense {
    fn name(&self) -> &'static str {
        "dense"
    }

    fn flops(&self) -> (u64, u64) {
        let f = 2 * (self.n * self.n_in * self.n_out) as u64;
        (f, 2 * f)
    }

    /// Forward: reads x and K, writes y. Backward: reads x, K and dy, adds into dx, dK and dc.
    fn bytes(&self) -> (u64, u64) {
        let (x, k, y) = (self.n * self.n_in, self.n_in * self.n_out, self.n * self.n_out);
        let size = std::mem::size_of::<T>();
        (((x + k + y) * size) as u64, ((3 * x + 3 * k + y) * size) as u64)
    }

    fn backward(&self, inputs: &Inputs<T>, dy: &[T], d: &mut [Option<Grad<T>>], pool: &mut Pool<T>) {
        let mut scratch = no_scratch();
        let [dx, dk, dc] = or_scratch::<3, T>(d, inputs, &mut scratch, pool).map(|mut g| {
            g.acc();
            g.into_data()
        });
        dense_backward(self.n, self.n_in, self.n_out, &inputs[0], &inputs[1], dy, dx, dk, dc);
        for (v, _) in scratch {
            pool.give(v);
        }
    }
}
