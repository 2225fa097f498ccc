//! Mutation test of every parser: from small valid files of each format (IDX images, IDX labels,
//! CIFAR-10 binary, safetensors checkpoint; plain and gzipped), thousands of seeded variants:
//! truncated at every offset, bytes flipped, header fields set to hostile values. Each must load
//! or fail with an error, never panic, and never make a single allocation larger than the file
//! implies (a counting global allocator records the largest one).
//!
//! One test function, so that nothing else runs in this process while it measures allocations.

use pmixer::data::{self, Dataset};
use pmixer::testdata::{cifar_batch, idx_images, idx_labels, synthetic};
use pmixer_model::{Checkpoint, Model, Rng};
use rand::{Rng as _, RngCore};
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LARGEST.fetch_max(l.size(), Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        LARGEST.fetch_max(l.size(), Ordering::Relaxed);
        System.alloc_zeroed(l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LARGEST.fetch_max(new, Ordering::Relaxed);
        System.realloc(p, l, new)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

type Parser = fn(&[u8]) -> bool;

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Decodes (gzip or not) and parses as the trainer does; true when the variant loaded.
fn idx3(raw: &[u8]) -> bool {
    let p = Path::new("variant");
    data::decode(p, raw.to_vec()).and_then(|b| data::parse_idx_images(p, &b)).is_ok()
}

fn idx1(raw: &[u8]) -> bool {
    let p = Path::new("variant");
    data::decode(p, raw.to_vec()).and_then(|b| data::parse_idx_labels(p, &b)).is_ok()
}

fn cifar(raw: &[u8]) -> bool {
    let p = Path::new("variant");
    let mut out = Dataset { h: 32, w: 96, images: vec![], labels: vec![] };
    data::decode(p, raw.to_vec()).and_then(|b| data::parse_cifar_batch(p, &b, &mut out)).is_ok()
}

fn checkpoint(raw: &[u8]) -> bool {
    match Checkpoint::from_bytes(raw) {
        Ok(ck) => {
            let model = Model::from_checkpoint(&ck).is_ok();
            let state = pmixer::train::from_checkpoint(&ck).is_ok();
            model || state
        }
        Err(_) => false,
    }
}

struct Tally {
    variants: usize,
    loaded: usize,
    panics: Vec<String>,
    over: Vec<String>,
}

/// Runs one variant: no panic, and no allocation above `limit` bytes.
fn run(t: &mut Tally, name: &str, what: &str, parse: Parser, bytes: &[u8], limit: usize) {
    LARGEST.store(0, Ordering::Relaxed);
    let outcome = catch_unwind(AssertUnwindSafe(|| parse(bytes)));
    let largest = LARGEST.load(Ordering::Relaxed);
    t.variants += 1;
    match outcome {
        Ok(true) => t.loaded += 1,
        Ok(false) => {}
        Err(_) => t.panics.push(format!("{name}: {what}")),
    }
    if largest > limit {
        t.over.push(format!("{name}: {what}: allocated {largest} bytes for a {}-byte input", bytes.len()));
    }
}

/// Every mutation of `valid`, plain and gzipped. `fields` are byte ranges of header fields to
/// overwrite with hostile values.
fn mutate(t: &mut Tally, name: &str, parse: Parser, valid: &[u8], fields: &[(usize, usize)], seed: u64) {
    // Allocations may reach a small multiple of the input (a Vec grows by doubling, a CIFAR
    // record is expanded once) plus a fixed allowance, never what a header claims.
    let limit = |len: usize| 4 * len + (1 << 20);
    let mut variants: Vec<(String, Vec<u8>)> = vec![("valid".into(), valid.to_vec())];
    for cut in 0..valid.len() {
        variants.push((format!("truncated at {cut}"), valid[..cut].to_vec()));
    }
    let mut r = Rng::seed(seed);
    for i in 0..2000 {
        let mut v = valid.to_vec();
        for _ in 0..r.gen_range(1..=4) {
            let at =
                if i % 2 == 0 { r.gen_range(0..valid.len().min(64)) } else { r.gen_range(0..valid.len()) };
            v[at] ^= 1 << r.gen_range(0..8);
        }
        variants.push((format!("flip {i}"), v));
    }
    let hostile: [u64; 8] =
        [0, 1, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 1 << 40, u64::MAX, valid.len() as u64];
    for &(start, len) in fields {
        for &h in &hostile {
            let mut v = valid.to_vec();
            let bytes = if len == 4 { (h as u32).to_be_bytes().to_vec() } else { h.to_le_bytes().to_vec() };
            v[start..start + len].copy_from_slice(&bytes[..len]);
            variants.push((format!("field {start} = {h:#x}"), v));
        }
    }
    for (what, v) in &variants {
        run(t, name, what, parse, v, limit(v.len()));
    }
    // The same through gzip, and a compressed stream with its own bytes damaged.
    for (what, v) in variants.iter().step_by(7) {
        run(t, name, &format!("gzip of {what}"), parse, &gz(v), limit(v.len()));
    }
    let packed = gz(valid);
    for i in 0..500 {
        let mut v = packed.clone();
        let at = r.gen_range(0..v.len());
        v[at] = r.next_u32() as u8;
        let cut = if i % 3 == 0 { r.gen_range(0..v.len()) } else { v.len() };
        run(t, name, &format!("damaged gzip {i}"), parse, &v[..cut], limit(valid.len()));
    }
}

#[test]
fn no_input_panics_or_allocates_beyond_what_the_file_implies() {
    let mut t = Tally { variants: 0, loaded: 0, panics: vec![], over: vec![] };
    let imgs = synthetic(6, 5, 4, 1);
    let dims: Vec<(usize, usize)> = (0..3).map(|i| (4 + 4 * i, 4)).collect();
    mutate(&mut t, "idx3", idx3, &idx_images(6, 5, 4, &imgs.images), &dims, 1);
    mutate(&mut t, "idx1", idx1, &idx_labels(&imgs.labels), &[(4, 4)], 2);
    let c = synthetic(2, 32, 96, 3);
    mutate(&mut t, "cifar", cifar, &cifar_batch(&c.images, &c.labels), &[], 3);
    // A small training checkpoint (a 1-layer 3×4 autoencoder with its Adam state and metadata).
    let arch = pmixer_model::Arch { task: pmixer_model::Task::Autoencode, h: 3, w: 4, classes: 0, layers: 1 };
    let cfg = pmixer::train::TrainConfig {
        dataset: pmixer::train::DatasetKind::Mnist,
        data_dir: "d".into(),
        task: arch.task,
        layers: 1,
        epochs: 2,
        batch_size: 8,
        lr: 1e-3,
        optimizer: pmixer::train::OptimizerKind::Adam,
        seed: 1,
        limit: None,
        shuffle: true,
        shard: 4,
        recipe: pmixer::recipe::Recipe::named("strong", pmixer::train::DatasetKind::Mnist).unwrap().0,
        precision: pmixer::train::Precision::F32,
    };
    let state = pmixer::train::fresh_state(&cfg, arch, None).unwrap();
    let ck = pmixer::train::to_checkpoint(&cfg, &state).to_bytes();
    let json_numbers: Vec<(usize, usize)> =
        (8..ck.len().min(400)).filter(|&i| ck[i].is_ascii_digit()).map(|i| (i, 1)).take(40).collect();
    mutate(&mut t, "checkpoint", checkpoint, &ck, &[(0, 8)], 4);
    // Single-byte rewrites of the digits in the JSON header (shapes, offsets, metadata numbers).
    for (i, _) in json_numbers {
        for d in [b'0', b'9'] {
            let mut v = ck.clone();
            v[i] = d;
            run(
                &mut t,
                "checkpoint",
                &format!("digit at {i} = {}", d as char),
                checkpoint,
                &v,
                4 * v.len() + (1 << 20),
            );
        }
    }
    println!(
        "{} variants, {} loaded, {} panics, {} over-allocations",
        t.variants,
        t.loaded,
        t.panics.len(),
        t.over.len()
    );
    assert!(t.variants > 10_000);
    assert!(t.panics.is_empty(), "panics: {:?}", &t.panics[..t.panics.len().min(10)]);
    assert!(t.over.is_empty(), "over-allocations: {:?}", &t.over[..t.over.len().min(10)]);
}
