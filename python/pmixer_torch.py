"""A PyTorch twin of pmixer's patchless MLP-Mixer: carry a pmixer model to PyTorch and back.

    model = load_checkpoint("runs/x/checkpoint.safetensors")   # float32, eval mode
    logits = model(pixels / 255.0)                              # (N, H, W) -> (N, classes)
    save_checkpoint(model, "out.safetensors")                   # pmixer eval/predict/train --init

The model is pmixer's (README, "The model"; docs/math.md), written for PyTorch's (N, H, W)
layout where pmixer computes in (H, N, W): a mixer layer runs MLP(H) down every column, then
MLP(W) along every row; the classifier adds each layer through a scalar gate,
h <- h + g * mixer(h), and ends in a head of MLP(1) over rows and over columns, concatenated,
and a dense layer. MLP(n) is Dense(n), exact (erf) GELU, Dense(n). Parameter names are pmixer's
(`mixer.3.col.dense1.kernel`, ...), kernels stored (in, out) as pmixer and Keras store them, so
`state_dict()` keys are the checkpoint's tensor names.

`KerasAdam` is pmixer's Adam (the Keras form, epsilon outside the bias correction), so that a
step here is a step there; `read_adam_state` takes a training checkpoint's moments and step count.
The file format is safetensors, read and written with numpy alone.
"""

import math

import numpy as np
import torch
from torch import nn

from pmixer_format import (  # noqa: F401 (re-exported: one import gives the whole twin)
    ARCH_KEYS,
    arch_of,
    load_dataset,
    param_shapes,
    read_idx,
    read_safetensors,
    write_safetensors,
)


class Dense(nn.Module):
    """y = x @ kernel + bias over the last axis; kernel (in, out), Glorot-uniform; bias 0."""

    def __init__(self, n_in, n_out):
        super().__init__()
        limit = math.sqrt(6.0 / (n_in + n_out))
        self.kernel = nn.Parameter(torch.empty(n_in, n_out).uniform_(-limit, limit))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x):
        return x @ self.kernel + self.bias


class MLP(nn.Module):
    """MLP(n) over the last axis: Dense(n), exact GELU, Dense(n)."""

    def __init__(self, n_in, n):
        super().__init__()
        self.dense1 = Dense(n_in, n)
        self.dense2 = Dense(n, n)

    def forward(self, x):
        return self.dense2(nn.functional.gelu(self.dense1(x), approximate="none"))


class Mixer(nn.Module):
    """MLP(H) down every column, then MLP(W) along every row, of an (N, H, W) batch."""

    def __init__(self, h, w, gated):
        super().__init__()
        self.col = MLP(h, h)
        self.row = MLP(w, w)
        self.gate = nn.Parameter(torch.zeros(1)) if gated else None

    def forward(self, x):
        return self.row(self.col(x.transpose(1, 2)).transpose(1, 2))


class Head(nn.Module):
    """MLP(1) over rows (N, H) and over columns (N, W), concatenated, then Dense(classes)."""

    def __init__(self, h, w, classes):
        super().__init__()
        self.rows = MLP(w, 1)
        self.cols = MLP(h, 1)
        self.out = Dense(h + w, classes)

    def forward(self, x):
        rows = self.rows(x).squeeze(-1)
        cols = self.cols(x.transpose(1, 2)).squeeze(-1)
        return self.out(torch.cat([rows, cols], dim=1))


class PatchlessMixer(nn.Module):
    """pmixer's model: `task` "classify" (gated residual mixers and a head; forward gives logits
    (N, classes)) or "autoencode" (plain mixers; forward gives the reconstruction (N, H, W)),
    on (N, H, W) inputs, pixels / 255, colour folded into the width (CIFAR: 32 x 96)."""

    def __init__(self, task="classify", h=28, w=28, classes=10, layers=16):
        super().__init__()
        if task not in ("classify", "autoencode"):
            raise ValueError(f"unknown task {task!r} (expected classify or autoencode)")
        self.task, self.h, self.w, self.layers = task, h, w, layers
        self.classes = classes if task == "classify" else 0
        gated = task == "classify"
        self.mixer = nn.ModuleList(Mixer(h, w, gated) for _ in range(layers))
        self.head = Head(h, w, classes) if gated else None
        self.pmixer_metadata = {}

    def forward(self, x):
        if x.dim() != 3 or tuple(x.shape[1:]) != (self.h, self.w):
            raise ValueError(f"expected (N, {self.h}, {self.w}) inputs, got {tuple(x.shape)}")
        for m in self.mixer:
            x = x + m.gate * m(x) if m.gate is not None else m(x)
        return self.head(x) if self.head is not None else x

    def arch_metadata(self):
        return dict(zip(ARCH_KEYS, (self.task, str(self.h), str(self.w), str(self.classes), str(self.layers))))


def load_checkpoint(path):
    """A pmixer checkpoint as a PatchlessMixer (float32, eval mode); its metadata is kept in
    `model.pmixer_metadata` for `save_checkpoint`."""
    tensors, metadata = read_safetensors(path)
    arch = arch_of(metadata, path)
    model = PatchlessMixer(*arch)
    state = {}
    for name, shape in param_shapes(*arch):
        if name not in tensors:
            raise ValueError(f"{path}: missing tensor {name!r}")
        if tuple(tensors[name].shape) != shape:
            raise ValueError(f"{path}: tensor {name!r} has shape {tensors[name].shape}, the model needs {shape}")
        state[name] = torch.from_numpy(tensors[name])
    model.load_state_dict(state)
    model.pmixer_metadata = dict(metadata)
    return model.float().eval()


def save_checkpoint(model, path, adam=None):
    """Writes `model` as a pmixer checkpoint (`pmixer eval`, `predict` and `train --init` read
    it): its parameters in pmixer's order, its architecture, and the dataset it came from when
    known. `adam`, a KerasAdam, adds its moments (as `optim.adam.m`/`v`, flat in pmixer's order)."""
    arch = (model.task, model.h, model.w, model.classes, model.layers)
    state = model.state_dict()
    tensors = [(name, state[name].detach().cpu().numpy()) for name, _ in param_shapes(*arch)]
    metadata = model.arch_metadata()
    for k in ("train.dataset", "train.data_dir"):
        if k in model.pmixer_metadata:
            metadata[k] = model.pmixer_metadata[k]
    if adam is not None:
        m, v = adam.flat_moments(model)
        tensors += [("optim.adam.m", m), ("optim.adam.v", v)]
        metadata["pmixer.adam_step"] = str(adam.t)
    write_safetensors(path, tensors, metadata)


# ---- pmixer's Adam ---------------------------------------------------------------------------


class KerasAdam(torch.optim.Optimizer):
    """pmixer's (and Keras's) Adam: t <- t + 1; m <- b1 m + (1 - b1) g; v <- b2 v + (1 - b2) g^2;
    p <- p - lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps), in float32 as pmixer does.
    (PyTorch's Adam puts eps inside the bias correction: a different update.)"""

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-7):
        super().__init__(params, dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps))
        self.t = 0

    @torch.no_grad()
    def step(self, closure=None):
        self.t += 1
        f32 = lambda x: torch.tensor(x, dtype=torch.float32)  # noqa: E731 (pmixer's constants are f32)
        for group in self.param_groups:
            b1, b2 = group["beta1"], group["beta2"]
            lr_t = group["lr"] * math.sqrt(1.0 - b2**self.t) / (1.0 - b1**self.t)
            k1, c1, k2, c2 = f32(b1), f32(1.0 - b1), f32(b2), f32(1.0 - b2)
            lr_t, eps = f32(lr_t), f32(group["eps"])
            for p in group["params"]:
                if p.grad is None:
                    continue
                s = self.state[p]
                if "m" not in s:
                    s["m"], s["v"] = torch.zeros_like(p), torch.zeros_like(p)
                g = p.grad
                # The same operations in the same order as pmixer_kernels::simd::adam.
                s["m"] = k1 * s["m"] + c1 * g
                s["v"] = k2 * s["v"] + c2 * g * g
                p.sub_(lr_t * s["m"] / (s["v"].sqrt() + eps))

    def load_flat(self, model, m, v, t):
        """Sets the moments from flat buffers laid out in pmixer's parameter order, and t."""
        params = dict(model.named_parameters())
        offset = 0
        for name, shape in param_shapes(model.task, model.h, model.w, model.classes, model.layers):
            n = math.prod(shape)
            s = self.state[params[name]]
            s["m"] = torch.from_numpy(np.array(m[offset : offset + n], dtype=np.float32).reshape(shape))
            s["v"] = torch.from_numpy(np.array(v[offset : offset + n], dtype=np.float32).reshape(shape))
            offset += n
        if offset != len(m) or offset != len(v):
            raise ValueError(f"moments of {len(m)} values for a model of {offset} parameters")
        self.t = t

    def flat_moments(self, model):
        params = dict(model.named_parameters())
        ms, vs = [], []
        for name, _ in param_shapes(model.task, model.h, model.w, model.classes, model.layers):
            s = self.state.get(params[name], {})
            zero = torch.zeros_like(params[name])
            ms.append(s.get("m", zero).detach().cpu().numpy().ravel())
            vs.append(s.get("v", zero).detach().cpu().numpy().ravel())
        return np.concatenate(ms), np.concatenate(vs)


def read_adam_state(path):
    """(m, v, t) of a pmixer training checkpoint: Adam's flat moments and its step count."""
    tensors, metadata = read_safetensors(path)
    if "optim.adam.m" not in tensors:
        raise ValueError(f"{path}: no Adam state (not a training checkpoint)")
    t = int(metadata.get("train.step", metadata.get("pmixer.adam_step", "0")))
    return tensors["optim.adam.m"], tensors["optim.adam.v"], t


def pixels(images):
    """u8 images as pmixer's training batches see them: x * (1/255) in float32."""
    return torch.from_numpy(images.astype(np.float32) * np.float32(1.0 / 255.0))
