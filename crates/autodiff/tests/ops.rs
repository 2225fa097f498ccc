//! Every op's backward against central finite differences in f64, and the optimizers against
//! updates computed by hand.

use pmixer_autodiff::gradcheck::check;
use pmixer_autodiff::ops::{self, MlpVars, Target};
use pmixer_autodiff::optim::{Adam, AdamState, Sgd};
use pmixer_autodiff::{ParamId, Params, Tape, Tensor, Var};
use pmixer_kernels::Axis;

struct Gen(u64);
impl Gen {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }
    fn fill(&mut self, p: &mut Params<f64>, scale: f64) {
        for v in p.data.iter_mut() {
            *v = self.next() * scale;
        }
    }
    fn vec(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.next()).collect()
    }
}

const EPS: f64 = 1e-5;
const TOL: f64 = 1e-7;

/// Gradient-checks `build` over freshly randomised `params`; the op's output is reduced to a
/// loss by MSE against a fixed random target so that dy is neither uniform nor trivial.
fn assert_grads(mut params: Params<f64>, seed: u64, build: impl Fn(&mut Tape<f64>) -> Var) {
    let mut gen = Gen(seed);
    gen.fill(&mut params, 1.0);
    let report = check(&mut params, EPS, build);
    assert!(report.checked > 0);
    assert!(report.max_err < TOL, "gradient check failed: {} (err {:e})", report.worst, report.max_err);
}

fn target(n: usize) -> Vec<f64> {
    Gen(1234).vec(n)
}

#[test]
fn add_and_scale() {
    let mut p = Params::new();
    let (a, b, g) = (p.add("a", &[2, 3]), p.add("b", &[2, 3]), p.add("g", &[1]));
    assert_grads(p, 1, |t| {
        let (a, b, g) = (t.param(a), t.param(b), t.param(g));
        let s = ops::add(t, a, b);
        let y = ops::scale(t, s, g);
        ops::mse(t, y, &target(6))
    });
}

#[test]
fn an_input_used_twice_gets_both_gradients() {
    let mut p = Params::new();
    let a = p.add("a", &[4]);
    assert_grads(p, 2, |t| {
        let a = t.param(a);
        let y = ops::add(t, a, a);
        ops::mse(t, y, &target(4))
    });
}

#[test]
fn reshape_transpose_concat() {
    let mut p = Params::new();
    let (a, b) = (p.add("a", &[3, 2]), p.add("b", &[4, 3]));
    assert_grads(p, 3, |t| {
        let (a, b) = (t.param(a), t.param(b));
        let at = ops::transpose(t, a); // [2, 3]
        let br = ops::reshape(t, b, &[2, 6]);
        let y = ops::concat(t, at, br); // [2, 9]
        ops::mse(t, y, &target(18))
    });
}

#[test]
fn pick() {
    let mut p = Params::new();
    let x = p.add("x", &[2, 3]);
    assert_grads(p, 10, |t| {
        let x = t.param(x);
        let a = ops::pick(t, x, 4);
        let b = ops::pick(t, x, 1);
        let y = ops::scale(t, a, b);
        ops::mse(t, y, &[0.3])
    });
}

#[test]
fn dense() {
    let mut p = Params::new();
    let (x, k, c) = (p.add("x", &[5, 4]), p.add("k", &[4, 3]), p.add("c", &[3]));
    assert_grads(p, 4, |t| {
        let (x, k, c) = (t.param(x), t.param(k), t.param(c));
        let y = ops::dense(t, x, k, c);
        ops::mse(t, y, &target(15))
    });
}

fn mlp_params(p: &mut Params<f64>, n_in: usize, n: usize) -> [ParamId; 4] {
    [p.add("k1", &[n_in, n]), p.add("c1", &[n]), p.add("k2", &[n, n]), p.add("c2", &[n])]
}

fn mlp_vars(t: &mut Tape<f64>, ids: [ParamId; 4]) -> MlpVars {
    MlpVars { k1: t.param(ids[0]), c1: t.param(ids[1]), k2: t.param(ids[2]), c2: t.param(ids[3]) }
}

#[test]
fn axis_mlp_along_rows_and_columns() {
    let (h, b, w) = (5, 3, 7);
    for (axis, n_in, n) in
        [(Axis::Rows, w, w), (Axis::Cols, h, h), (Axis::Rows, w, 1), (Axis::Cols, h, 1), (Axis::Cols, h, 4)]
    {
        let mut p = Params::new();
        let x = p.add("x", &[h, b, w]);
        let ids = mlp_params(&mut p, n_in, n);
        let out = match axis {
            Axis::Rows => h * b * n,
            Axis::Cols => n * b * w,
        };
        assert_grads(p, 5, |t| {
            let xv = t.param(x);
            let m = mlp_vars(t, ids);
            let y = ops::axis_mlp(t, xv, axis, m);
            ops::mse(t, y, &target(out))
        });
    }
}

#[test]
fn gated_axis_mlp_along_rows_and_columns() {
    // y = h + g·MLP(x): h's gradient passed through by the tape, g's from the weight gradients.
    let (h, b, w) = (5, 3, 7);
    for (axis, n_in, n) in [(Axis::Rows, w, w), (Axis::Cols, h, h), (Axis::Rows, w, 4)] {
        let mut p = Params::new();
        let x = p.add("x", &[h, b, w]);
        let ids = mlp_params(&mut p, n_in, n);
        let out = match axis {
            Axis::Rows => [h, b, n],
            Axis::Cols => [n, b, w],
        };
        let (skip, gate) = (p.add("h", &out), p.add("g", &[1]));
        assert_grads(p, 11, |t| {
            let (xv, hv, gv) = (t.param(x), t.param(skip), t.param(gate));
            let m = mlp_vars(t, ids);
            let y = ops::gated_axis_mlp(t, hv, gv, xv, axis, m);
            ops::mse(t, y, &target(out.iter().product()))
        });
    }
}

#[test]
fn a_residual_around_its_own_input() {
    // y = x + g·MLP(x), the mixer's shape: x is both the MLP's input and the pass-through.
    let (h, b, w) = (4, 2, 6);
    let mut p = Params::new();
    let x = p.add("x", &[h, b, w]);
    let ids = mlp_params(&mut p, w, w);
    let gate = p.add("g", &[1]);
    assert_grads(p, 12, |t| {
        let (xv, gv) = (t.param(x), t.param(gate));
        let m = mlp_vars(t, ids);
        let y = ops::gated_axis_mlp(t, xv, gv, xv, Axis::Rows, m);
        ops::mse(t, y, &target(h * b * w))
    });
}

#[test]
fn mean_mse_and_cross_entropy() {
    let mut p = Params::new();
    let x = p.add("x", &[3, 5]);
    let mut pg = p.clone();
    let g = pg.add("g", &[1]);
    assert_grads(pg, 6, |t| {
        let (x, g) = (t.param(x), t.param(g));
        let y = ops::scale(t, x, g); // bilinear in (x, g), so the check sees both
        ops::mean(t, y)
    });
    assert_grads(p.clone(), 7, |t| {
        let x = t.param(x);
        ops::softmax_cross_entropy(t, x, &[4, 0, 2])
    });
    assert_grads(p.clone(), 8, |t| {
        let x = t.param(x);
        ops::mse(t, x, &target(15))
    });
    assert_grads(p.clone(), 9, |t| {
        let x = t.param(x);
        ops::softmax_cross_entropy_smoothed(t, x, &[4, 0, 2], 0.1)
    });
    let mixed = [Target { a: 4, b: 1, share: 0.7 }, Target::label(0), Target { a: 2, b: 3, share: 0.25 }];
    assert_grads(p, 10, |t| {
        let x = t.param(x);
        ops::softmax_cross_entropy_mixed(t, x, &mixed, 0.1)
    });
}

#[test]
fn cross_entropy_value_is_log_sum_exp_minus_the_label_logit() {
    let p = Params::<f64>::new();
    let mut t = Tape::new(&p);
    let logits = t.input(Tensor::new(&[2, 3], vec![1.0, 2.0, 3.0, 0.0, 0.0, 0.0]), false);
    let l = ops::softmax_cross_entropy(&mut t, logits, &[2, 1]);
    let want = ((1f64.exp() + 2f64.exp() + 3f64.exp()).ln() - 3.0 + 3f64.ln()) / 2.0;
    assert!((t.value(l)[0] - want).abs() < 1e-12);
}

#[test]
fn smoothed_cross_entropy_is_the_cross_entropy_against_the_smoothed_target() {
    // L = Σ_c −q_c·log softmax(l)_c with q = 0.9·onehot + 0.1/3, for one row.
    let p = Params::<f64>::new();
    let mut t = Tape::new(&p);
    let logits = t.input(Tensor::new(&[1, 3], vec![1.0, 2.0, 3.0]), false);
    let l = ops::softmax_cross_entropy_smoothed(&mut t, logits, &[0], 0.1);
    let lse = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
    let q = [0.9 + 0.1 / 3.0, 0.1 / 3.0, 0.1 / 3.0];
    let want: f64 = q.iter().zip([1.0, 2.0, 3.0]).map(|(q, l)| -q * (l - lse)).sum();
    assert!((t.value(l)[0] - want).abs() < 1e-12);
    // ε = 0 gives the plain loss's bits.
    let mut t2 = Tape::new(&p);
    let logits = t2.input(Tensor::new(&[1, 3], vec![1.0, 2.0, 3.0]), false);
    let a = ops::softmax_cross_entropy_smoothed(&mut t2, logits, &[0], 0.0);
    let b = ops::softmax_cross_entropy(&mut t2, logits, &[0]);
    assert_eq!(t2.value(a)[0].to_bits(), t2.value(b)[0].to_bits());
}

#[test]
fn mixed_cross_entropy_is_the_cross_entropy_against_the_mixed_target() {
    // q = 0.9·(0.3·onehot(0) + 0.7·onehot(2)) + 0.1/3, for one row.
    let p = Params::<f64>::new();
    let mut t = Tape::new(&p);
    let logits = t.input(Tensor::new(&[1, 3], vec![1.0, 2.0, 3.0]), false);
    let l = ops::softmax_cross_entropy_mixed(&mut t, logits, &[Target { a: 0, b: 2, share: 0.3 }], 0.1);
    let lse = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
    let q = [0.9 * 0.3 + 0.1 / 3.0, 0.1 / 3.0, 0.9 * 0.7 + 0.1 / 3.0];
    let want: f64 = q.iter().zip([1.0, 2.0, 3.0]).map(|(q, l)| -q * (l - lse)).sum();
    assert!((t.value(l)[0] - want).abs() < 1e-12);
    // Single labels give the smoothed loss's bits, value and gradient (in f32, where rounding
    // would show).
    let p = Params::<f32>::new();
    let rows = vec![0.3f32, -1.2, 2.5, 0.7, 0.0, -0.4];
    let run = |mixed: bool| {
        let mut t = Tape::new(&p);
        let x = t.input(Tensor::new(&[2, 3], rows.clone()), true);
        let l = match mixed {
            true => ops::softmax_cross_entropy_mixed(&mut t, x, &[Target::label(2), Target::label(0)], 0.1),
            false => ops::softmax_cross_entropy_smoothed(&mut t, x, &[2, 0], 0.1),
        };
        t.backward(l);
        let mut bits = vec![t.value(l)[0].to_bits()];
        bits.extend(t.grad(x).unwrap().iter().map(|g| g.to_bits()));
        bits
    };
    assert_eq!(run(true), run(false));
}

#[test]
fn input_leaves_get_gradients_when_asked() {
    // The gradient of Σ (2x)² / n through an input leaf equals the one through a parameter.
    let mut p = Params::<f64>::new();
    let g = p.add("g", &[1]);
    p.data[0] = 2.0;
    let x = vec![0.5, -1.0, 3.0];
    let mut t = Tape::new(&p);
    let xi = t.input(Tensor::new(&[3], x.clone()), true);
    let gv = t.param(g);
    let y = ops::scale(&mut t, xi, gv);
    let l = ops::mse(&mut t, y, &[0.0; 3]);
    t.backward(l);
    let dx = t.grad(xi).unwrap();
    for (d, v) in dx.iter().zip(&x) {
        assert!((d - 8.0 * v / 3.0).abs() < 1e-12);
    }
    let frozen = t.input(Tensor::new(&[1], vec![0.0]), false);
    assert!(t.grad(frozen).is_none());
}

#[test]
fn adam_matches_a_step_by_hand() {
    let adam = Adam::default();
    let mut p = vec![1.0f64, -2.0];
    let g = [0.5, -0.25];
    let mut s = AdamState::new(2);
    adam.step(&mut p, &g, &mut s);
    adam.step(&mut p, &g, &mut s);
    // Two identical steps: m₂ = (1 − 0.9²)·g, v₂ = (1 − 0.999²)·g², lr₂ = lr·√(1 − 0.999²)/(1 − 0.9²).
    for (i, &gi) in g.iter().enumerate() {
        let step = |t: i32| {
            let m = (1.0 - 0.9f64.powi(t)) * gi;
            let v = (1.0 - 0.999f64.powi(t)) * gi * gi;
            1e-3 * (1.0 - 0.999f64.powi(t)).sqrt() / (1.0 - 0.9f64.powi(t)) * m / (v.sqrt() + 1e-7)
        };
        let start = [1.0, -2.0][i];
        assert!((p[i] - (start - step(1) - step(2))).abs() < 1e-15, "param {i}: {}", p[i]);
    }
    assert_eq!(s.t, 2);
    let mut q = vec![1.0f64];
    Sgd { lr: 0.1 }.step(&mut q, &[2.0]);
    assert!((q[0] - 0.8).abs() < 1e-15);
}
