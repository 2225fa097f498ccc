"""Shared fixtures: the pmixer binary, small datasets the tests write themselves, and a trained
checkpoint (a few seconds of pmixer training on them)."""

import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "python"))


def pmixer_bin():
    """`PMIXER_BIN`, else the release build in the repository."""
    path = Path(os.environ.get("PMIXER_BIN", REPO / "target" / "release" / "pmixer"))
    if not path.exists():
        pytest.fail(f"{path}: no pmixer binary (cargo build --release, or set PMIXER_BIN)")
    return str(path)


def pmixer(*args):
    """Runs pmixer, failing the test with its stderr if it fails; returns its stdout."""
    out = subprocess.run([pmixer_bin(), *map(str, args)], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.fail(f"pmixer {' '.join(map(str, args))} failed:\n{out.stderr}")
    return out.stdout


def write_idx(path, array, gz=False):
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def synthetic(n, h, w, seed):
    """Images whose class decides which band of rows is bright, plus noise: learnable in a few
    epochs by a small mixer."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, h, w)).astype(np.int32)
    for i, c in enumerate(labels):
        images[i, (c * h) // 10 : (c * h) // 10 + max(1, h // 10), :] += 180
    return np.clip(images, 0, 255).astype(np.uint8), labels


def write_idx_dir(d, n_train, n_test, h, w):
    d.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 1), ("t10k", n_test, 2)):
        images, labels = synthetic(n, h, w, seed)
        write_idx(d / f"{prefix}-images-idx3-ubyte", images, gz=(prefix == "t10k"))
        write_idx(d / f"{prefix}-labels-idx1-ubyte", labels)
    return d


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    return write_idx_dir(tmp_path_factory.mktemp("data"), 320, 96, 12, 10)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, data_dir):
    """A classifier pmixer trained for 2 epochs (3 layers on 12 x 10 images), and its run dir."""
    run = tmp_path_factory.mktemp("run") / "c"
    pmixer("train", "--data-dir", data_dir, "--layers", 3, "--epochs", 2, "--batch-size", 32, "--out", run)
    return run / "checkpoint.safetensors"


@pytest.fixture(scope="session")
def trained_autoencoder(tmp_path_factory, data_dir):
    run = tmp_path_factory.mktemp("run") / "a"
    pmixer("train", "--data-dir", data_dir, "--task", "autoencode", "--layers", 2, "--epochs", 1, "--out", run)
    return run / "checkpoint.safetensors"
