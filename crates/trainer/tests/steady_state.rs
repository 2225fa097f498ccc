//! What a steady-state training step allocates, counted by a global allocator: after warm-up,
//! nothing at all, for the MNIST classifier and autoencoder and a CIFAR-sized classifier. Every
//! batch-sized buffer comes from the shards' pools, and so do the tapes' lists and op boxes. That
//! holds on every level with direct kernels (AVX-512, AVX2, NEON), where every product is
//! packing-free; at the `generic` level matrixmultiply allocates its packing buffers, none
//! batch-sized. (CI runs this file at each level.)

use pmixer::testdata::synthetic;
use pmixer::train::{OptimizerKind, Trainer};
use pmixer_autodiff::optim::AdamState;
use pmixer_kernels::bf16::Precision;
use pmixer_model::{Arch, Model, Rng, Task};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static COUNT: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

fn note(size: usize) {
    COUNT.fetch_add(1, Ordering::Relaxed);
    BYTES.fetch_add(size, Ordering::Relaxed);
    LARGEST.fetch_max(size, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note(l.size());
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note(l.size());
        System.alloc_zeroed(l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        note(new);
        System.realloc(p, l, new)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[test]
fn a_steady_state_step_allocates_nothing() {
    // On a worker of a pool, as `pmixer` runs its commands (`cli::in_pool`): a parallel region
    // forked from outside a pool queues its job in rayon's injector, which allocates a block
    // every 63 jobs.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("a pool");
    pool.install(steps_allocate_nothing);
}

fn steps_allocate_nothing() {
    // (task, layers, height, width): MNIST's two models and CIFAR's classifier (4 of its 32
    // layers: the same ops and shapes, each layer allocating what every other does).
    // The same in bf16 where the CPU has it (its scratch comes from the pools too).
    let mut precisions = vec![Precision::F32];
    if Precision::Bf16.check().is_ok() {
        precisions.push(Precision::Bf16);
    }
    let configs = [(Task::Classify, 16, 28, 28), (Task::Autoencode, 2, 28, 28), (Task::Classify, 4, 32, 96)];
    for (precision, (task, layers, h, w)) in precisions.iter().flat_map(|&p| configs.map(|c| (p, c))) {
        let classes = if task == Task::Classify { 10 } else { 0 };
        let (model, mut params) = Model::new::<f32>(Arch { task, h, w, classes, layers });
        model.init(&mut params, &mut Rng::seed(0));
        let mut adam = AdamState::new(params.len());
        let data = synthetic(640, h, w, 3);
        let mut trainer = Trainer::new(model, OptimizerKind::Adam, 1e-3).with_precision(precision);
        let batches: Vec<Vec<usize>> = (0..10).map(|s| (s * 64..s * 64 + 64).collect()).collect();
        for idx in &batches[..3] {
            trainer.step(&data, idx, &mut params, &mut adam).unwrap();
        }
        COUNT.store(0, Ordering::Relaxed);
        BYTES.store(0, Ordering::Relaxed);
        LARGEST.store(0, Ordering::Relaxed);
        for idx in &batches[3..] {
            trainer.step(&data, idx, &mut params, &mut adam).unwrap();
        }
        let steps = batches.len() - 3;
        let (count, bytes, largest) =
            (COUNT.load(Ordering::Relaxed), BYTES.load(Ordering::Relaxed), LARGEST.load(Ordering::Relaxed));
        println!(
            "{task:?} {h}×{w}, {layers} layers, {}: {} allocations, {} bytes per step; the largest {largest} bytes",
            precision.name(),
            count / steps,
            bytes / steps
        );
        if pmixer_kernels::simd::level() != pmixer_kernels::simd::Level::Generic {
            assert_eq!(
                count, 0,
                "{task:?} {h}×{w}: {count} allocations ({bytes} bytes) in {steps} steady-state steps"
            );
        } else {
            // matrixmultiply's packing buffers, a few per product; nothing batch-sized.
            let shard_activation = h * 32 * w * 4;
            assert!(largest < shard_activation, "a {largest}-byte allocation in a steady-state step");
        }
    }
}
