//! Whole training steps (forward, backward, Adam) of the original's classifiers and the MNIST
//! autoencoder at batch 64 on synthetic images, so a regression anywhere on the path shows up
//! here. Throughput is in training FLOPs (3 × the forward's), so "elem/s" reads as FLOP/s.

use criterion::{criterion_group, Criterion, Throughput};
use pmixer::testdata::synthetic;
use pmixer::train::{OptimizerKind, Trainer};
use pmixer_autodiff::optim::AdamState;
use pmixer_model::{Arch, Model, Rng, Task};

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("train_step");
    for (name, task, h, w, layers) in [
        ("mnist_classifier_16", Task::Classify, 28, 28, 16),
        ("cifar_classifier_32", Task::Classify, 32, 96, 32),
        ("mnist_autoencoder_2", Task::Autoencode, 28, 28, 2),
    ] {
        let classes = if task == Task::Classify { 10 } else { 0 };
        let (model, mut params) = Model::new::<f32>(Arch { task, h, w, classes, layers });
        model.init(&mut params, &mut Rng::seed(0));
        let mut adam = AdamState::new(params.len());
        let data = synthetic(640, h, w, 3);
        let mut trainer = Trainer::new(model.clone(), OptimizerKind::Adam, 1e-3);
        g.throughput(Throughput::Elements(3 * 64 * model.flops_per_sample()));
        let mut batch = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                let idx: Vec<usize> = (batch * 64..batch * 64 + 64).collect();
                batch = (batch + 1) % 10;
                trainer.step(&data, &idx, &mut params, &mut adam).unwrap()
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = steps;
    config = Criterion::default().sample_size(10).warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(5));
    targets = bench
}

/// `criterion_main!`, but run on a rayon worker, as `pmixer` runs its commands (see
/// `pmixer::cli::in_pool`): parallel regions forked from outside the pool cost two context
/// switches each.
fn main() {
    rayon::ThreadPoolBuilder::new().build().expect("a rayon pool").install(steps);
    criterion::Criterion::default().configure_from_args().final_summary();
}
