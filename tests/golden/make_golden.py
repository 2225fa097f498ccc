"""Writes mixer_golden.json: the patchless MLP-Mixer computed by an independent framework.

JAX in float64 (exact-erf GELU, its own reverse-mode autodiff) builds a tiny classifier and a tiny
autoencoder from fixed random weights, in the natural (B, H, W) layout with explicit transposes,
and records the input, the parameters (named and shaped as in pmixer, kernels (in, out)), the
output, the loss, every parameter gradient, the input gradient, and the parameters after three
Adam steps on the same batch (Keras's form of Adam). tests/golden.rs compares pmixer with it.

Run from this folder:  pip install "jax[cpu]" && python3 make_golden.py
CI runs only the Rust side, against the committed JSON.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

H, W, B, LAYERS, CLASSES = 5, 7, 3, 2, 4
LR, B1, B2, EPS, STEPS = 1e-3, 0.9, 0.999, 1e-7, 3


def param_shapes(task):
    shapes = {}

    def mlp(prefix, n_in, n):
        shapes[f"{prefix}.dense1.kernel"] = (n_in, n)
        shapes[f"{prefix}.dense1.bias"] = (n,)
        shapes[f"{prefix}.dense2.kernel"] = (n, n)
        shapes[f"{prefix}.dense2.bias"] = (n,)

    for layer in range(LAYERS):
        mlp(f"mixer.{layer}.col", H, H)
        mlp(f"mixer.{layer}.row", W, W)
        if task == "classify":
            shapes[f"mixer.{layer}.gate"] = (1,)
    if task == "classify":
        mlp("head.rows", W, 1)
        mlp("head.cols", H, 1)
        shapes["head.out.kernel"] = (H + W, CLASSES)
        shapes["head.out.bias"] = (CLASSES,)
    return shapes


def random_params(task, rng):
    params = {}
    for name, shape in param_shapes(task).items():
        if name.endswith("gate"):
            params[name] = rng.uniform(0.2, 0.8, shape)
        elif name.endswith("kernel"):
            params[name] = rng.uniform(-0.6, 0.6, shape)
        else:
            params[name] = rng.uniform(-0.3, 0.3, shape)
    return params


def gelu(z):
    return jax.nn.gelu(z, approximate=False)


def mlp(p, prefix, x):
    """Dense + GELU, then Dense, along the last axis."""
    hidden = gelu(x @ p[f"{prefix}.dense1.kernel"] + p[f"{prefix}.dense1.bias"])
    return hidden @ p[f"{prefix}.dense2.kernel"] + p[f"{prefix}.dense2.bias"]


def mixer(p, layer, x):
    cols = jnp.swapaxes(mlp(p, f"mixer.{layer}.col", jnp.swapaxes(x, 1, 2)), 1, 2)
    return mlp(p, f"mixer.{layer}.row", cols)


def classifier_loss(p, x, labels):
    h = x
    for layer in range(LAYERS):
        h = h + p[f"mixer.{layer}.gate"][0] * mixer(p, layer, h)
    rows = mlp(p, "head.rows", h)[:, :, 0]
    cols = mlp(p, "head.cols", jnp.swapaxes(h, 1, 2))[:, :, 0]
    logits = jnp.concatenate([rows, cols], axis=1) @ p["head.out.kernel"] + p["head.out.bias"]
    loss = jnp.mean(jax.nn.logsumexp(logits, axis=1) - logits[jnp.arange(B), labels])
    return loss, logits


def autoencoder_loss(p, x, target):
    h = x
    for layer in range(LAYERS):
        h = mixer(p, layer, h)
    return jnp.mean((h - target) ** 2), h


def flat(a):
    return [float(v) for v in np.asarray(a).reshape(-1)]


def case(task, seed):
    rng = np.random.default_rng(seed)
    params = {k: jnp.asarray(v) for k, v in random_params(task, rng).items()}
    x = jnp.asarray(rng.uniform(0.0, 1.0, (B, H, W)))
    labels = jnp.asarray([3, 0, 2])
    if task == "classify":
        fn = lambda p, x: classifier_loss(p, x, labels)  # noqa: E731
    else:
        fn = lambda p, x: autoencoder_loss(p, x, x0)  # noqa: E731
        x0 = x  # the target: the data, a constant
    (loss, out), (grads, dx) = jax.value_and_grad(fn, argnums=(0, 1), has_aux=True)(params, x)
    m = {k: jnp.zeros_like(v) for k, v in params.items()}
    v = {k: jnp.zeros_like(v) for k, v in params.items()}
    p = dict(params)
    for t in range(1, STEPS + 1):
        g = jax.grad(lambda q: fn(q, x)[0])(p)
        lr_t = LR * np.sqrt(1 - B2**t) / (1 - B1**t)
        for k in p:
            m[k] = B1 * m[k] + (1 - B1) * g[k]
            v[k] = B2 * v[k] + (1 - B2) * g[k] ** 2
            p[k] = p[k] - lr_t * m[k] / (jnp.sqrt(v[k]) + EPS)
    return {
        "task": task,
        "h": H,
        "w": W,
        "b": B,
        "layers": LAYERS,
        "classes": CLASSES if task == "classify" else 0,
        "x_bhw": flat(x),
        "labels": [int(v) for v in labels],
        "output": flat(out),
        "loss": float(loss),
        "params": {k: {"shape": list(params[k].shape), "data": flat(params[k])} for k in params},
        "grads": {k: flat(grads[k]) for k in params},
        "input_grad_bhw": flat(dx),
        "adam_steps": STEPS,
        "after_adam": {k: flat(p[k]) for k in params},
    }


if __name__ == "__main__":
    out = {"generator": f"jax {jax.__version__}, float64", "cases": [case("classify", 0), case("autoencode", 1)]}
    with open("mixer_golden.json", "w") as f:
        json.dump(out, f, indent=0)
    print("wrote mixer_golden.json")
