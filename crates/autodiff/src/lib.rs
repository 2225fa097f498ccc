//! # pmixer-autodiff
//!
//! A minimal reverse-mode automatic differentiation engine, just big enough for the patchless
//! MLP-Mixer and small enough to read in one sitting. A [`Tape`] records values as they are
//! computed; each op is a forward function plus a [`Backward`] impl that sends its inputs'
//! gradients (writing a buffer no gradient has reached yet, adding into the others), so new ops
//! never touch the tape's code. Parameters live in one flat [`Params`]
//! buffer with named views, so the optimizers ([`optim::Adam`], [`optim::Sgd`]) are one loop
//! and a checkpoint one write. [`gradcheck`] compares every gradient with central finite
//! differences in `f64`. The heavy lifting (the fused axis-MLP) is delegated to
//! `pmixer-kernels`; this crate adds bookkeeping, not arithmetic.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![deny(clippy::too_many_lines)]

pub mod grad;
pub mod gradcheck;
pub mod ops;
pub mod optim;
pub mod params;
pub mod pool;
pub mod profile;
pub mod tape;
pub mod tensor;

pub use grad::Grad;
pub use params::{ParamId, ParamSpec, Params};
pub use pool::Pool;
pub use tape::{slots, Backward, Inputs, Tape, Var};
pub use tensor::{Shape, Tensor};
