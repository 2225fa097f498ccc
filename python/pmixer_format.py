"""pmixer's files with numpy alone: its checkpoints (safetensors), its parameter order, and its
datasets (IDX, CIFAR-10 binary) read as pmixer reads them. `pmixer_torch` builds on this; the
tests that need no PyTorch use it directly.
"""

import json
import math
import os
import struct

import numpy as np

ARCH_KEYS = ("pmixer.task", "pmixer.height", "pmixer.width", "pmixer.classes", "pmixer.layers")


# ---- safetensors, as pmixer writes it -------------------------------------------------------


def read_safetensors(path):
    """(tensors, metadata): {name: float32 array} in file order, and the string metadata."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > len(raw) - 8:
        raise ValueError(f"{path}: header length {n} runs past the end of the file")
    header = json.loads(raw[8 : 8 + n])
    metadata = header.pop("__metadata__", {}) or {}
    data = raw[8 + n :]
    tensors = {}
    for name, spec in header.items():
        if spec["dtype"] != "F32":
            raise ValueError(f"{path}: tensor {name!r} is {spec['dtype']}, pmixer writes F32 only")
        begin, end = spec["data_offsets"]
        if not 0 <= begin <= end <= len(data) or (end - begin) != 4 * math.prod(spec["shape"]):
            raise ValueError(f"{path}: tensor {name!r} has offsets that do not fit its shape or the file")
        tensors[name] = np.frombuffer(data[begin:end], dtype="<f4").reshape(spec["shape"]).copy()
    return tensors, metadata


def write_safetensors(path, tensors, metadata):
    """Writes [(name, array)] in the given order, as pmixer does (compact JSON header padded with
    spaces to 8 bytes), atomically: a temp file, flushed to disk, renamed over `path`."""
    parts, offset = [], 0
    blobs = []
    for name, a in tensors:
        b = np.ascontiguousarray(a, dtype="<f4").tobytes()
        shape = ",".join(str(d) for d in np.shape(a))
        parts.append(f'{json.dumps(name)}:{{"dtype":"F32","shape":[{shape}],"data_offsets":[{offset},{offset + len(b)}]}}')
        offset += len(b)
        blobs.append(b)
    meta = ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in sorted(metadata.items()))
    header = "{" + "".join(p + "," for p in parts) + f'"__metadata__":{{{meta}}}}}'
    header += " " * ((8 - (8 + len(header.encode())) % 8) % 8)
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(header.encode())))
        f.write(header.encode())
        for b in blobs:
            f.write(b)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ---- the model's parameters ------------------------------------------------------------------


def param_shapes(task, h, w, classes, layers):
    """[(name, shape)] in pmixer's order: the layout of its flat parameter buffer, and so of
    Adam's moments in a training checkpoint."""
    out = []

    def mlp(prefix, n_in, n):
        out.extend([(f"{prefix}.dense1.kernel", (n_in, n)), (f"{prefix}.dense1.bias", (n,)),
                    (f"{prefix}.dense2.kernel", (n, n)), (f"{prefix}.dense2.bias", (n,))])

    for l in range(layers):
        mlp(f"mixer.{l}.col", h, h)
        mlp(f"mixer.{l}.row", w, w)
        if task == "classify":
            out.append((f"mixer.{l}.gate", (1,)))
    if task == "classify":
        mlp("head.rows", w, 1)
        mlp("head.cols", h, 1)
        out.extend([("head.out.kernel", (h + w, classes)), ("head.out.bias", (classes,))])
    return out


def arch_of(metadata, path="checkpoint"):
    missing = [k for k in ARCH_KEYS if k not in metadata]
    if missing:
        raise ValueError(f"{path}: metadata has no {missing[0]!r}: not a pmixer checkpoint")
    task = metadata["pmixer.task"]
    h, w, classes, layers = (int(metadata[k]) for k in ARCH_KEYS[1:])
    return task, h, w, classes, layers


# ---- data, as pmixer reads it ----------------------------------------------------------------


def _read(path):
    import gzip

    for p in (path, path + ".gz"):
        if os.path.exists(p):
            with open(p, "rb") as f:
                raw = f.read()
            return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    raise FileNotFoundError(f"{path}: not found (also tried .gz)")


def read_idx(path):
    raw = _read(path)
    kind, ndim = raw[2], raw[3]
    if raw[:2] != b"\0\0" or kind != 8:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != math.prod(dims):
        raise ValueError(f"{path}: {body.size} bytes of data for dimensions {dims}")
    return body.reshape(dims)


def load_dataset(dataset, data_dir, split="train"):
    """(images u8 (N, H, W), labels int64 (N,)) as pmixer reads them; CIFAR records folded to
    32 x 96 (each pixel's R, G, B side by side)."""
    if dataset == "mnist":
        prefix = "train" if split == "train" else "t10k"
        images = read_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte"))
    elif dataset == "cifar10":
        names = [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
        recs = np.concatenate([np.frombuffer(_read(os.path.join(data_dir, n)), np.uint8).reshape(-1, 3073) for n in names])
        labels = recs[:, 0]
        images = recs[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).reshape(-1, 32, 96)
    else:
        raise ValueError(f"unknown dataset {dataset!r} (expected mnist or cifar10)")
    return np.ascontiguousarray(images), labels.astype(np.int64)
