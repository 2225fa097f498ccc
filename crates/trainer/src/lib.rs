//! # pmixer (the trainer)
//!
//! The `pmixer` command and the pieces it is made of: readers for the raw dataset files (IDX and
//! the CIFAR-10 binary format, plain or gzipped, every header checked against the file before
//! anything is allocated from it), the training loop (batch assembly in the (H, B, W) layout,
//! tape, backward, optimizer), evaluation, checkpoints that hold the whole training state so a
//! run can resume exactly, and a benchmark that relates the step rate to a large GEMM measured
//! in the same process. `train::Trainer::step` is the place to start reading one step.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![deny(clippy::too_many_lines)]

pub mod bench;
pub mod cli;
pub mod data;
pub mod png;
pub mod recipe;
pub mod roofline;
pub mod selftest;
pub mod signal;
pub mod svg;
pub mod testdata;
pub mod train;
pub mod visual;
