//! What a steady-state training step allocates, counted by a global allocator: after warm-up,
//! nothing at all. Every batch-sized buffer comes from the shards' pools, and so do the tapes'
//! lists and op boxes (on AVX-512 machines, where every product takes the packing-free kernels;
//! elsewhere matrixmultiply allocates its packing buffers).

use pmixer::testdata::synthetic;
use pmixer::train::{OptimizerKind, Trainer};
use pmixer_autodiff::optim::AdamState;
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
    for (task, layers) in [(Task::Classify, 16), (Task::Autoencode, 2)] {
        let classes = if task == Task::Classify { 10 } else { 0 };
        let (model, mut params) = Model::new::<f32>(Arch { task, h: 28, w: 28, classes, layers });
        model.init(&mut params, &mut Rng::seed(0));
        let mut adam = AdamState::new(params.len());
        let data = synthetic(640, 28, 28, 3);
        let mut trainer = Trainer::new(model, OptimizerKind::Adam, 1e-3);
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
            "{task:?}, {layers} layers: {} allocations, {} bytes per step; the largest {largest} bytes",
            count / steps,
            bytes / steps
        );
        if pmixer_kernels::simd::level() == pmixer_kernels::simd::Level::Avx512 {
            assert_eq!(
                count, 0,
                "{task:?}: {count} allocations ({bytes} bytes) in {steps} steady-state steps"
            );
        } else {
            // matrixmultiply's packing buffers, a few per product; nothing batch-sized.
            let shard_activation = 28 * 32 * 28 * 4;
            assert!(largest < shard_activation, "a {largest}-byte allocation in a steady-state step");
        }
    }
}
