//! # pmixer-kernels
//!
//! The compute kernels of the patchless MLP-Mixer, as plain functions over slices with explicit
//! shapes and strides: the fused axis-MLP (`Dense → exact GELU → Dense` along the rows or the
//! columns of every image, forward and backward, with bias and GELU applied to each output tile
//! while it is in cache), a small dense layer for the classifier head, and the scalar math they
//! rest on (a vectorisable `exp`, `erf`, GELU and its derivative). Activations use the (H, B, W)
//! layout, in which mixing along either axis is one GEMM whose transposes are stride swaps rather
//! than copies ([`mlp`] explains why). Work is split over the batch with rayon in a fixed chunking,
//! so results are bitwise the same on any thread count. Every kernel has a plain twin in
//! [`reference`](mod@reference) that tests and benches compare against. This crate knows nothing of autodiff:
//! `pmixer-autodiff` wraps these functions as tape operations.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![deny(clippy::too_many_lines)]

pub mod bf16;
pub mod check;
pub mod dense;
pub mod gelu;
pub mod gemm;
pub mod isa;
pub mod mat;
pub mod mlp;
pub mod mlp_bf16;
pub mod par;
pub mod real;
pub mod reference;
pub mod roof;
pub mod simd;

pub use mat::{MatMut, MatRef};
pub use mlp::{
    backward_workspace, hidden_len, mlp_backward, mlp_forward, output_shape, Axis, BackwardIo, ForwardIo,
    GateGrad, Hbw, MlpGrads, MlpWeights, Saved, Skip, Write,
};
pub use real::Real;
