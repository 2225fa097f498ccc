//! # pmixer-fuzz
//!
//! A fuzzer for the three parsers that read untrusted files: IDX (images and labels), CIFAR-10
//! binary batches, and safetensors checkpoints (down to rebuilding a model and a training state
//! from them). `cargo fuzz` needs a nightly toolchain; this runs on stable. It starts from small
//! valid files (plain and gzipped) and applies seeded random mutations (bit flips, random and
//! boundary values in header fields, truncation, extension, splicing, re-gzipping). Coverage is
//! approximated by behaviour: an input whose outcome (loaded, or the error message with its
//! numbers masked) has not been seen joins the corpus, so mutations spread into every error
//! path. Each input runs under `catch_unwind`; a panic is a finding, saved to disk with the
//! message. Run with `cargo run --release -p pmixer-fuzz -- <target> --seconds N`.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![deny(clippy::too_many_lines)]

use flate2::write::GzEncoder;
use pmixer::data::{self, Dataset};
use pmixer::testdata::{cifar_batch, idx_images, idx_labels, synthetic};
use pmixer_model::{Arch, Checkpoint, Model, Rng, Task};
use rand::{Rng as _, RngCore};
use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

/// A parser under test: Ok(()) when the input loaded, Err(message) when it was rejected.
pub type Target = fn(&[u8]) -> Result<(), String>;

pub fn idx(raw: &[u8]) -> Result<(), String> {
    let p = Path::new("input");
    let bytes = data::decode(p, raw.to_vec()).map_err(|e| e.to_string())?;
    // Both IDX readers see every input: labels (1 dimension) and images (3).
    let labels = data::parse_idx_labels(p, &bytes).map(|_| ());
    let images = data::parse_idx_images(p, &bytes).map(|_| ());
    labels.or(images).map_err(|e| e.to_string())
}

pub fn cifar(raw: &[u8]) -> Result<(), String> {
    let p = Path::new("input");
    let bytes = data::decode(p, raw.to_vec()).map_err(|e| e.to_string())?;
    let mut out = Dataset { h: 32, w: 96, images: vec![], labels: vec![] };
    data::parse_cifar_batch(p, &bytes, &mut out).map_err(|e| e.to_string())
}

pub fn checkpoint(raw: &[u8]) -> Result<(), String> {
    let ck = Checkpoint::from_bytes(raw)?;
    Model::from_checkpoint(&ck)?;
    pmixer::train::from_checkpoint(&ck).map(|_| ())
}

pub fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).expect("writing to a Vec cannot fail");
    e.finish().expect("writing to a Vec cannot fail")
}

/// Valid starting inputs for a target, plain and gzipped.
pub fn seeds(name: &str) -> Vec<Vec<u8>> {
    let plain = match name {
        "idx" => {
            let d = synthetic(4, 3, 5, 1);
            vec![idx_images(4, 3, 5, &d.images), idx_labels(&d.labels)]
        }
        "cifar" => {
            let d = synthetic(2, 32, 96, 2);
            vec![cifar_batch(&d.images, &d.labels)]
        }
        _ => {
            let arch = Arch { task: Task::Classify, h: 3, w: 2, classes: 10, layers: 1 };
            let cfg = pmixer::train::TrainConfig {
                dataset: pmixer::train::DatasetKind::Mnist,
                data_dir: "data/mnist".into(),
                task: arch.task,
                layers: 1,
                epochs: 3,
                batch_size: 4,
                lr: 1e-3,
                optimizer: pmixer::train::OptimizerKind::Adam,
                seed: 3,
                limit: Some(8),
                shuffle: true,
                shard: 2,
                recipe: pmixer::recipe::Recipe::named("strong", pmixer::train::DatasetKind::Mnist).unwrap().0,
                precision: pmixer::train::Precision::F32,
            };
            let st = pmixer::train::fresh_state(&cfg, arch, None).expect("a fresh state");
            vec![pmixer::train::to_checkpoint(&cfg, &st).to_bytes()]
        }
    };
    let mut all = plain.clone();
    all.extend(plain.iter().map(|p| gz(p)));
    all
}

/// One seeded mutation of `input` (possibly combined with `other`).
pub fn mutate(r: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    let rounds = 1 + r.gen_range(0..4);
    for _ in 0..rounds {
        if v.is_empty() {
            v.push(r.next_u32() as u8);
            continue;
        }
        let at = if r.gen_bool(0.5) { r.gen_range(0..v.len().min(96)) } else { r.gen_range(0..v.len()) };
        match r.gen_range(0..9) {
            0 => v[at] ^= 1 << r.gen_range(0..8),
            1 => v[at] = r.next_u32() as u8,
            2 => {
                let vals: [u32; 7] = [0, 1, 0xff, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, v.len() as u32];
                let x = vals[r.gen_range(0..vals.len())];
                let bytes = if r.gen_bool(0.5) { x.to_be_bytes() } else { x.to_le_bytes() };
                let end = (at + 4).min(v.len());
                v[at..end].copy_from_slice(&bytes[..end - at]);
            }
            3 => v.truncate(at),
            4 => v.extend((0..r.gen_range(1..64)).map(|_| r.next_u32() as u8)),
            5 => {
                let end = (at + r.gen_range(1..32)).min(v.len());
                let chunk = v[at..end].to_vec();
                v.splice(at..at, chunk);
            }
            6 => {
                let end = (at + r.gen_range(1..32)).min(v.len());
                v.drain(at..end);
            }
            7 if !other.is_empty() => {
                let cut = r.gen_range(0..other.len());
                v.truncate(at);
                v.extend_from_slice(&other[cut..]);
            }
            _ => {
                // ASCII digits and JSON punctuation, for the checkpoint header.
                let pool = b"0123456789[]{}\",:-e.";
                v[at] = pool[r.gen_range(0..pool.len())];
            }
        }
    }
    if r.gen_range(0..16) == 0 {
        v = gz(&v);
    }
    v
}

/// The behaviour an input produced, with every word that holds a number masked, so that
/// "truncated at 17" and "truncated at 18" (or two magic numbers) count as one.
pub fn outcome(result: &Result<(), String>) -> String {
    match result {
        Ok(()) => "loaded".into(),
        Err(e) => e
            .split_whitespace()
            .map(|w| if w.chars().any(|c| c.is_ascii_digit()) { "#" } else { w })
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// The most inputs the corpus keeps.
const MAX_CORPUS: usize = 4096;

/// What a fuzzing session found.
pub struct Report {
    pub execs: u64,
    pub corpus: usize,
    pub outcomes: usize,
    pub panics: Vec<(String, Vec<u8>)>,
}

/// Fuzzes `target` for `seconds` from `seeds`.
pub fn fuzz(target: Target, seeds: Vec<Vec<u8>>, seconds: f64, seed: u64) -> Report {
    let mut r = Rng::seed(seed);
    let mut corpus = seeds;
    let mut seen = HashSet::new();
    let mut panics = Vec::new();
    let start = std::time::Instant::now();
    let mut execs = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        let a = r.gen_range(0..corpus.len());
        let b = r.gen_range(0..corpus.len());
        let input = mutate(&mut r, &corpus[a], &corpus[b]);
        let result = std::panic::catch_unwind(|| target(&input));
        execs += 1;
        match result {
            Ok(res) => {
                if seen.insert(outcome(&res)) && input.len() < 1 << 16 && corpus.len() < MAX_CORPUS {
                    corpus.push(input);
                }
            }
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panics.push((msg, input));
            }
        }
    }
    Report { execs, corpus: corpus.len(), outcomes: seen.len(), panics }
}
