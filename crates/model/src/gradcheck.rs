//! The whole model against central finite differences in f64: what the model's tests check at
//! several sizes, and `pmixer selftest` once on the user's machine.

use crate::{Arch, Model, Rng, Task};
use pmixer_autodiff::gradcheck::{check, GradCheck};
use pmixer_autodiff::ParamId;

/// Checks every parameter's gradient and the input's (what a saliency map reads) for a model of
/// `arch` on a batch of `b` random images: kernels Glorot-initialised from `seed`, and every other
/// parameter (biases and, for the classifier, the gates) drawn from [−0.5, 0.5] so that no path
/// is switched off. The autoencoder's target is the input itself, held fixed while the input
/// moves (Keras's `fit(x, x)`).
pub fn gradcheck(arch: Arch, b: usize, seed: u64) -> GradCheck {
    let (h, w) = (arch.h, arch.w);
    let (m, mut p) = Model::new::<f64>(arch);
    m.init(&mut p, &mut Rng::seed(seed));
    let mut r = Rng::seed(seed + 1);
    for (i, s) in p.specs().to_vec().iter().enumerate() {
        if !s.name.ends_with(".kernel") {
            for v in p.get_mut(ParamId(i)) {
                *v = rand::Rng::gen_range(&mut r, -0.5..0.5);
            }
        }
    }
    // The input as an extra parameter, so the check covers d loss / d input too.
    let x = p.add("input", &[h, b, w]);
    for v in p.get_mut(x) {
        *v = rand::Rng::gen_range(&mut r, 0.0..1.0);
    }
    let labels: Vec<usize> = (0..b).map(|i| (3 + 7 * i) % arch.classes.max(1)).collect();
    let target = p.get(x).to_vec();
    check(&mut p, 1e-5, |t| {
        let xv = t.param(x);
        match arch.task {
            Task::Classify => m.loss(t, xv, &labels).1,
            Task::Autoencode => {
                let out = m.forward(t, xv);
                pmixer_autodiff::ops::mse(t, out, &target)
            }
        }
    })
}
