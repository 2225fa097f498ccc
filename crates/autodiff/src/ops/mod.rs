//! The ops the patchless MLP-Mixer needs. Each is a forward function that computes its output
//! and records it on the [`crate::Tape`], with its [`crate::Backward`] impl directly below it and
//! the formula for both in the forward's doc comment.

mod arith;
mod layers;
mod loss;
mod shape;

pub use arith::{add, scale};
pub use layers::{axis_mlp, dense, gated_axis_mlp, MlpVars};
pub use loss::{
    mean, mse, softmax_cross_entropy, softmax_cross_entropy_mixed, softmax_cross_entropy_smoothed,
    softmax_row, Target,
};
pub use shape::{concat, pick, reshape, transpose};
