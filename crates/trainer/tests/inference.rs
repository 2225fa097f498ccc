//! Sharded inference gives every sample the bits one whole-batch `Model::infer` gives it, and the
//! evaluated metrics do not depend on the batch size.

use pmixer::testdata::synthetic;
use pmixer::train::{count_correct, evaluate, Inferer, Precision};
use pmixer_model::{Arch, InferBuffers, Model, Rng, Task};

fn model(task: Task) -> (Model, pmixer_autodiff::Params<f32>) {
    let classes = if task == Task::Classify { 10 } else { 0 };
    let (model, mut params) = Model::new::<f32>(Arch { task, h: 9, w: 11, classes, layers: 3 });
    model.init(&mut params, &mut Rng::seed(5));
    // Open the gates, so that the trunk is not the identity.
    for s in params.specs().to_vec() {
        if s.name.ends_with(".gate") {
            params.data[s.offset] = 0.3;
        }
    }
    (model, params)
}

#[test]
fn sharded_inference_matches_one_whole_batch_call_bitwise() {
    let data = synthetic(150, 9, 11, 4);
    let (model, params) = model(Task::Classify);
    let idx: Vec<usize> = (0..150).collect();
    let (mut x, mut labels) = (Vec::new(), Vec::new());
    x.resize(9 * 150 * 11, 0.0);
    data.fill_batch(&idx, &mut x, &mut labels);
    let whole = model.infer(&params, &x, 150, &mut InferBuffers::default());
    // Per-sample losses from the sharded run (150 = 4 shards of 32 + 22) agree with the logits
    // of the whole-batch call: recompute them from `whole` and compare bits.
    let mut losses = Vec::new();
    let correct = Inferer::default().run(&model, &params, &data, &idx, &mut losses);
    assert_eq!(correct, count_correct(&whole, 10, &labels));
    for (i, row) in whole.chunks_exact(10).enumerate() {
        let m = row.iter().fold(f64::MIN, |m, &v| m.max(v as f64));
        let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
        assert_eq!((lse - row[labels[i]] as f64).to_bits(), losses[i].to_bits(), "sample {i}");
    }
}

#[test]
fn evaluation_does_not_depend_on_the_batch_size() {
    let data = synthetic(150, 9, 11, 4);
    // In every precision this run may use.
    for precision in Precision::usable() {
        for task in [Task::Classify, Task::Autoencode] {
            let (model, params) = model(task);
            let reference = evaluate(&model, &params, &data, 150, None, precision);
            for batch in [1, 7, 32, 64, 1000] {
                let m = evaluate(&model, &params, &data, batch, None, precision);
                let what = format!("{task:?}, batch {batch}, {}", precision.name());
                assert_eq!(m.loss.to_bits(), reference.loss.to_bits(), "{what}");
                assert_eq!(m.metric.to_bits(), reference.metric.to_bits(), "{what}");
            }
        }
    }
}

/// Test-time flips: each sample's logits are the mean of its own and its mirror image's (width 11
/// read as 11 one-channel pixels), whatever the batch size.
#[test]
fn test_time_flips_average_the_logits_of_the_image_and_its_mirror() {
    let data = synthetic(70, 9, 11, 6);
    let (model, params) = model(Task::Classify);
    let idx: Vec<usize> = (0..70).collect();
    let (mut x, mut labels) = (vec![0f32; 9 * 70 * 11], Vec::new());
    data.fill_batch(&idx, &mut x, &mut labels);
    let plain = model.infer(&params, &x, 70, &mut InferBuffers::default());
    // The mirror image in the (H, B, W) layout: each 11-long run reversed.
    let mirrored: Vec<f32> = x.chunks_exact(11).flat_map(|r| r.iter().rev().copied()).collect();
    let flipped = model.infer(&params, &mirrored, 70, &mut InferBuffers::default());
    let mean: Vec<f32> = plain.iter().zip(&flipped).map(|(a, b)| 0.5 * (a + b)).collect();
    let mut losses = Vec::new();
    let correct = Inferer::with_flip(1).run(&model, &params, &data, &idx, &mut losses);
    assert_eq!(correct, count_correct(&mean, 10, &labels));
    assert_ne!(mean, plain);
    for (i, row) in mean.chunks_exact(10).enumerate() {
        let m = row.iter().fold(f64::MIN, |m, &v| m.max(v as f64));
        let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
        assert_eq!((lse - row[labels[i]] as f64).to_bits(), losses[i].to_bits(), "sample {i}");
    }
    let reference = evaluate(&model, &params, &data, 70, Some(1), Precision::F32);
    for batch in [1, 32, 64] {
        let m = evaluate(&model, &params, &data, batch, Some(1), Precision::F32);
        assert_eq!(m.loss.to_bits(), reference.loss.to_bits(), "batch {batch}");
    }
}
