//! # pmixer-model
//!
//! The patchless MLP-Mixer itself, built from `pmixer-autodiff` ops: the gated residual
//! classifier and the plain autoencoder of the original notebook, with stable parameter names
//! (`mixer.3.col.dense1.kernel`, `head.out.bias`, …), Keras's initialisation (Glorot-uniform
//! kernels, zero biases, zero gates) from a seeded generator whose state can be saved, a
//! Keras-like summary with forward FLOPs, and checkpoints in the safetensors format, written
//! atomically and read back with every header field checked against the file. The forward pass
//! is in [`model`], where the (H, B, W) layout is taken on and undone.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![deny(clippy::too_many_lines)]

pub mod checkpoint;
pub mod gradcheck;
pub mod json;
pub mod model;
pub mod rng;

pub use checkpoint::{Checkpoint, NamedTensor};
pub use gradcheck::gradcheck;
pub use model::{Arch, InferBuffers, Model, SummaryRow, Task};
pub use rng::Rng;

use pmixer_autodiff::Params;

/// Metadata keys that record the architecture in a checkpoint.
const ARCH_KEYS: [&str; 5] =
    ["pmixer.task", "pmixer.height", "pmixer.width", "pmixer.classes", "pmixer.layers"];

impl Model {
    /// The parameters as named tensors, with the architecture in the metadata.
    pub fn to_checkpoint(&self, params: &Params<f32>) -> Checkpoint {
        let a = self.arch;
        let mut ck = Checkpoint::default();
        for s in params.specs() {
            let data = params.data[s.offset..s.offset + s.len].to_vec();
            ck.tensors.push(NamedTensor { name: s.name.clone(), shape: s.shape.clone(), data });
        }
        let values = [
            a.task.name().to_string(),
            a.h.to_string(),
            a.w.to_string(),
            a.classes.to_string(),
            a.layers.to_string(),
        ];
        for (k, v) in ARCH_KEYS.iter().zip(values) {
            ck.metadata.insert(k.to_string(), v);
        }
        ck
    }

    /// The architecture recorded in a checkpoint's metadata.
    pub fn arch_of(ck: &Checkpoint) -> Result<Arch, String> {
        let get = |k: &str| {
            ck.metadata.get(k).ok_or_else(|| format!("metadata has no {k:?}: not a pmixer checkpoint"))
        };
        let num = |k: &str| -> Result<usize, String> {
            let v = get(k)?;
            v.parse().map_err(|_| format!("metadata {k:?} is {v:?}, not a number"))
        };
        let task = get(ARCH_KEYS[0])?;
        let task = Task::parse(task).ok_or_else(|| format!("unknown task {task:?} in metadata"))?;
        let arch = Arch {
            task,
            h: num(ARCH_KEYS[1])?,
            w: num(ARCH_KEYS[2])?,
            classes: num(ARCH_KEYS[3])?,
            layers: num(ARCH_KEYS[4])?,
        };
        let sane = |d: usize| (1..=4096).contains(&d);
        if !sane(arch.h)
            || !sane(arch.w)
            || arch.layers > 4096
            || (task == Task::Classify && !sane(arch.classes))
        {
            return Err(format!("implausible architecture in metadata: {arch}"));
        }
        Ok(arch)
    }

    /// Rebuilds a model and its parameters from a checkpoint: every parameter must be present
    /// with the right shape (other tensors, such as optimizer state, are ignored here).
    pub fn from_checkpoint(ck: &Checkpoint) -> Result<(Model, Params<f32>), String> {
        let arch = Model::arch_of(ck)?;
        // The metadata's claim is checked against the tensors the file holds before the model is
        // allocated: a forged header cannot make us allocate more than the file implies.
        let held: usize = ck.tensors.iter().map(|t| t.data.len()).sum();
        match arch.param_count() {
            Some(n) if n <= held => {}
            Some(n) => {
                return Err(format!(
                    "the file holds {held} parameter values but the architecture in its metadata ({arch}) needs {n}: tensors are missing or the metadata is wrong"
                ))
            }
            None => return Err(format!("the architecture in the metadata ({arch}) is too large")),
        }
        let (model, mut params) = Model::new::<f32>(arch);
        for s in params.specs().to_vec() {
            let t = ck.tensor(&s.name).ok_or_else(|| format!("missing tensor {:?}", s.name))?;
            if t.shape != s.shape {
                return Err(format!(
                    "tensor {:?} has shape {:?}, the model needs {:?}",
                    s.name, t.shape, s.shape
                ));
            }
            params.data[s.offset..s.offset + s.len].copy_from_slice(&t.data);
        }
        Ok((model, params))
    }
}
