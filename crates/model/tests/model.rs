//! Whole-model checks: parameter counts equal the original's, the untrained classifier's trunk is
//! the identity, every gradient (parameters and input) matches finite differences in f64, and
//! checkpoints round-trip bitwise.

use pmixer_autodiff::{Params, Tape, Tensor};
use pmixer_kernels::bf16::Precision;
use pmixer_model::{Arch, Checkpoint, Model, Rng, Task};

fn classifier(h: usize, w: usize, layers: usize) -> Arch {
    Arch { task: Task::Classify, h, w, classes: 10, layers }
}

fn autoencoder(h: usize, w: usize, layers: usize) -> Arch {
    Arch { task: Task::Autoencode, h, w, classes: 0, layers }
}

#[test]
fn parameter_counts_equal_the_originals() {
    for (arch, want) in [
        (classifier(28, 28, 16), 52_616),
        (classifier(32, 96, 32), 665_008),
        (autoencoder(28, 28, 2), 6_496),
        (autoencoder(32, 96, 2), 41_472),
    ] {
        let (model, params) = Model::new::<f32>(arch);
        assert_eq!(params.len(), want, "{arch:?}");
        assert_eq!(arch.param_count(), Some(want));
        let total: usize = model.summary(&params).iter().map(|r| r.params).sum();
        assert_eq!(total, want);
    }
}

#[test]
fn parameter_names_are_stable() {
    let (_, p) = Model::new::<f32>(classifier(28, 28, 16));
    for name in [
        "mixer.3.col.dense1.kernel",
        "mixer.15.row.dense2.bias",
        "mixer.0.gate",
        "head.rows.dense2.bias",
        "head.cols.dense1.kernel",
        "head.out.kernel",
    ] {
        assert!(p.find(name).is_some(), "{name}");
    }
    assert_eq!(p.spec(p.find("head.out.kernel").unwrap()).shape, vec![56, 10]);
    assert_eq!(p.spec(p.find("mixer.2.col.dense1.kernel").unwrap()).shape, vec![28, 28]);
}

#[test]
fn forward_flops_match_the_hand_count() {
    // MNIST: 16 × (4·28³ + 4·28³) plus the head; CIFAR: 32 × (4·32²·96 + 4·96²·32) plus the head.
    let (m, _) = Model::new::<f32>(classifier(28, 28, 16));
    assert_eq!(m.flops_per_sample(), 16 * 8 * 28 * 28 * 28 + (2 * 784 + 56 + 2 * 784 + 56 + 2 * 56 * 10));
    let (m, _) = Model::new::<f32>(classifier(32, 96, 32));
    assert_eq!(m.flops_per_sample() / 1_000_000, 50);
}

#[test]
fn glorot_init_is_seeded_and_within_limits() {
    let (m, mut a) = Model::new::<f32>(classifier(28, 28, 2));
    let mut b = a.clone();
    m.init(&mut a, &mut Rng::seed(3));
    m.init(&mut b, &mut Rng::seed(3));
    assert_eq!(a.data, b.data);
    let k = a.get(a.find("mixer.0.row.dense1.kernel").unwrap());
    let limit = (6.0f32 / 56.0).sqrt();
    assert!(k.iter().all(|v| v.abs() <= limit) && k.iter().any(|v| v.abs() > 0.9 * limit));
    assert!(
        a.get(a.find("mixer.0.gate").unwrap())[0] == 0.0
            && a.get(a.find("head.out.bias").unwrap()).iter().all(|&v| v == 0.0)
    );
}

fn batch(h: usize, b: usize, w: usize, seed: u64) -> Vec<f64> {
    let mut r = Rng::seed(seed);
    (0..h * b * w).map(|_| rand::Rng::gen_range(&mut r, 0.0..1.0)).collect()
}

#[test]
fn untrained_classifier_trunk_is_the_identity() {
    // With every gate at 0 the mixers cannot matter: changing them leaves the logits unchanged.
    let arch = classifier(5, 7, 3);
    let (m, mut p) = Model::new::<f64>(arch);
    m.init(&mut p, &mut Rng::seed(1));
    let x = batch(5, 2, 7, 9);
    let logits = |p: &Params<f64>| {
        let mut t = Tape::new(p);
        let xv = t.input(Tensor::new(&[5, 2, 7], x.clone()), false);
        let out = m.forward(&mut t, xv);
        t.value(out).to_vec()
    };
    let before = logits(&p);
    let k = p.find("mixer.1.row.dense1.kernel").unwrap();
    p.get_mut(k).iter_mut().for_each(|v| *v += 0.5);
    assert_eq!(before, logits(&p));
}

/// Gradient check of a whole model with every gate non-zero, including d loss / d input.
fn whole_model_gradcheck(arch: Arch) {
    let report = pmixer_model::gradcheck(arch, 3, 11);
    assert!(
        report.max_err < 1e-6,
        "{arch:?}: {} (err {:e}, {} checked)",
        report.worst,
        report.max_err,
        report.checked
    );
}

#[test]
fn classifier_gradients_match_finite_differences() {
    whole_model_gradcheck(classifier(5, 7, 3));
}

#[test]
fn autoencoder_gradients_match_finite_differences() {
    whole_model_gradcheck(autoencoder(5, 7, 3));
}

#[test]
fn f32_and_f64_models_agree() {
    let arch = classifier(28, 28, 4);
    let (m, mut p64) = Model::new::<f64>(arch);
    m.init(&mut p64, &mut Rng::seed(5));
    for v in p64.data.iter_mut().filter(|v| **v == 0.0) {
        *v = 0.3;
    }
    let p32: Params<f32> = p64.cast();
    let x = batch(28, 4, 28, 6);
    let run = |t: &mut Tape<f64>| {
        let xv = t.input(Tensor::new(&[28, 4, 28], x.clone()), false);
        let (out, _) = m.loss(t, xv, &[1, 2, 3, 4]);
        t.value(out).to_vec()
    };
    let mut t64 = Tape::new(&p64);
    let l64 = run(&mut t64);
    let mut t32 = Tape::new(&p32);
    let xv = t32.input(Tensor::new(&[28, 4, 28], x.iter().map(|&v| v as f32).collect()), false);
    let (out, _) = m.loss(&mut t32, xv, &[1, 2, 3, 4]);
    let scale = l64.iter().fold(1.0f64, |a, v| a.max(v.abs()));
    for (a, b) in t32.value(out).iter().zip(&l64) {
        assert!((*a as f64 - b).abs() / scale < 1e-5, "{a} vs {b}");
    }
}

#[test]
fn checkpoints_round_trip_bitwise() {
    let arch = classifier(28, 28, 2);
    let (m, mut p) = Model::new::<f32>(arch);
    m.init(&mut p, &mut Rng::seed(2));
    p.data[7] = f32::from_bits(0x7f7f_ffff); // the largest finite f32 survives too
    let mut ck = m.to_checkpoint(&p);
    ck.metadata.insert("note".into(), "quotes \" and \\ and\nnewlines".into());
    let dir = std::env::temp_dir().join(format!("pmixer-ck-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.safetensors");
    ck.save(&path).unwrap();
    assert!(!pmixer_model::checkpoint::temp_path(&path).exists());
    let back = Checkpoint::load(&path).unwrap();
    assert_eq!(back, ck);
    let (m2, p2) = Model::from_checkpoint(&back).unwrap();
    assert_eq!(m2.arch, arch);
    assert_eq!(
        p2.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        p.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    let bytes = std::fs::read(&path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert_eq!((8 + header_len) % 8, 0, "data is 8-byte aligned");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn malformed_checkpoints_are_rejected_with_a_reason() {
    let (m, p) = Model::new::<f32>(autoencoder(4, 4, 1));
    let good = m.to_checkpoint(&p).to_bytes();
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let mut huge = good.clone();
    huge[..8].copy_from_slice(&(1u64 << 62).to_le_bytes());
    let mut bad_json = good.clone();
    bad_json[8] = b'[';
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![], "shorter than the 8-byte header length"),
        (good[..5].to_vec(), "shorter than the 8-byte header length"),
        (huge, "exceeds"),
        (bad_json, "JSON"),
        (good[..good.len() - 4].to_vec(), "truncated"),
        (good[..8 + header_len - 3].to_vec(), "exceeds"),
    ];
    for (bytes, want) in cases {
        let err = Checkpoint::from_bytes(&bytes).unwrap_err();
        assert!(err.contains(want), "expected {want:?} in {err:?}");
    }
    // A valid file whose tensors do not fit the architecture it claims.
    let mut ck = m.to_checkpoint(&p);
    ck.tensors.retain(|t| t.name != "mixer.0.row.dense2.bias");
    assert!(Model::from_checkpoint(&ck).unwrap_err().contains("tensors are missing"));
    // Present in number but not by name.
    let mut ck = m.to_checkpoint(&p);
    ck.tensors.iter_mut().find(|t| t.name == "mixer.0.row.dense2.bias").unwrap().name = "renamed".into();
    assert!(Model::from_checkpoint(&ck).unwrap_err().contains("missing tensor \"mixer.0.row.dense2.bias\""));
    let mut ck = m.to_checkpoint(&p);
    ck.metadata.insert("pmixer.width".into(), "3".into());
    assert!(Model::from_checkpoint(&ck).unwrap_err().contains("has shape"));
    // A forged architecture far larger than the file is refused before anything is allocated.
    let mut ck = m.to_checkpoint(&p);
    ck.metadata.insert("pmixer.layers".into(), "4096".into());
    ck.metadata.insert("pmixer.height".into(), "4096".into());
    assert!(Model::from_checkpoint(&ck)
        .unwrap_err()
        .contains("tensors are missing or the metadata is wrong"));
}

#[test]
fn tape_free_inference_equals_the_tape_forward_bitwise() {
    let mut precisions = vec![Precision::F32];
    if Precision::Bf16.check().is_ok() {
        precisions.push(Precision::Bf16);
    }
    let archs = [classifier(28, 28, 3), autoencoder(32, 96, 2), classifier(5, 7, 2)];
    for (precision, arch) in precisions.iter().flat_map(|&p| archs.map(|a| (p, a))) {
        let (m, mut p) = Model::new::<f32>(arch);
        m.init(&mut p, &mut Rng::seed(8));
        for v in p.data.iter_mut().filter(|v| **v == 0.0) {
            *v = 0.25; // gates and biases too
        }
        let b = 67;
        let x: Vec<f32> = batch(arch.h, b, arch.w, 4).iter().map(|&v| v as f32).collect();
        // A training tape (which keeps the hidden tensors) and an inference one give the same.
        let (mut train_tape, mut tape) = (Tape::new(&p), Tape::no_grad(&p));
        let mut outs = Vec::new();
        for t in [&mut train_tape, &mut tape] {
            t.set_precision(precision);
            let xv = t.input(Tensor::new(&[arch.h, b, arch.w], x.clone()), false);
            let out = m.forward(t, xv);
            outs.push(t.value(out).to_vec());
        }
        let mut buf = pmixer_model::InferBuffers::default();
        buf.set_precision(precision);
        let direct = m.infer(&p, &x, b, &mut buf);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&outs[0]), bits(&direct), "{arch:?}, {precision:?}, training tape");
        assert_eq!(bits(&outs[1]), bits(&direct), "{arch:?}, {precision:?}");
        // And again with the buffers already sized by a different batch.
        let direct = m.infer(&p, &x[..arch.h * 3 * arch.w], 3, &mut buf);
        assert_eq!(direct.len(), if arch.task == Task::Classify { 30 } else { arch.h * 3 * arch.w });
    }
}

#[test]
fn architectures_are_described_in_words() {
    assert_eq!(classifier(32, 96, 32).to_string(), "a classifier of 32 layers on 32×96 images, 10 classes");
    assert_eq!(autoencoder(28, 28, 2).to_string(), "an autoencoder of 2 layers on 28×28 images");
}
