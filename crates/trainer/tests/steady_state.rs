//! What a steady-state training step allocates, counted by a global allocator: after warm-up,
//! nothing batch-sized (every such buffer comes from the shards' pools), only the tape's small
//! per-node bookkeeping.

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
fn a_steady_state_step_allocates_nothing_batch_sized() {
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
        // The smallest batch-sized buffer is one shard's activation, 28 × 32 × 28 floats (the
        // parameter-sized gradient is larger still). What is left is the tape's bookkeeping: the
        // largest, its table of gradient slots (24 bytes for each of ~1,000 values), is a
        // quarter of that.
        let shard_activation = 28 * 32 * 28 * 4;
        assert!(largest < shard_activation, "a {largest}-byte allocation in a steady-state step");
    }
}
