//! Central finite differences in `f64`, for tests: every parameter (or input) element is moved
//! by ±ε, the loss recomputed, and `(L(p+ε) − L(p−ε)) / 2ε` compared with the tape's gradient.
//! In f64 the difference quotient is accurate to about ε² + 1e-16/ε ≈ 1e-10 for ε = 1e-5.

use crate::params::Params;
use crate::tape::{Tape, Var};

/// The outcome of a check: the worst element, measured as
/// `|analytic − numeric| / max(1, |analytic|, |numeric|)`.
#[derive(Clone, Debug)]
pub struct GradCheck {
    pub checked: usize,
    pub max_err: f64,
    pub worst: String,
}

/// Checks d loss / d params for every element of `params`, where `build` records the loss on a
/// tape over them. `build` must be deterministic.
pub fn check<F>(params: &mut Params<f64>, eps: f64, build: F) -> GradCheck
where
    F: Fn(&mut Tape<f64>) -> Var,
{
    let mut analytic = vec![0.0; params.len()];
    {
        let mut tape = Tape::new(params);
        let loss = build(&mut tape);
        tape.backward(loss);
        tape.param_grads(&mut analytic);
    }
    let loss_at = |p: &Params<f64>| {
        let mut tape = Tape::new(p);
        let l = build(&mut tape);
        tape.value(l)[0]
    };
    let mut out = GradCheck { checked: 0, max_err: 0.0, worst: String::new() };
    let specs = params.specs().to_vec();
    for spec in &specs {
        for j in 0..spec.len {
            let i = spec.offset + j;
            let orig = params.data[i];
            params.data[i] = orig + eps;
            let up = loss_at(params);
            params.data[i] = orig - eps;
            let down = loss_at(params);
            params.data[i] = orig;
            let numeric = (up - down) / (2.0 * eps);
            let err = (analytic[i] - numeric).abs() / 1f64.max(analytic[i].abs()).max(numeric.abs());
            out.checked += 1;
            if err > out.max_err || out.worst.is_empty() {
                out.max_err = err;
                out.worst = format!("{}[{j}]: analytic {:e}, numeric {:e}", spec.name, analytic[i], numeric);
            }
        }
    }
    out
}
