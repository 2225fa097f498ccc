"""The file side of the twin, with numpy alone (CI runs these without PyTorch)."""

import numpy as np
from conftest import synthetic, write_idx

from pmixer_format import load_dataset, param_shapes, read_idx, read_safetensors, write_safetensors


def test_a_pmixer_checkpoint_round_trips_byte_for_byte(trained, tmp_path):
    tensors, metadata = read_safetensors(trained)
    out = tmp_path / "copy.safetensors"
    write_safetensors(out, list(tensors.items()), metadata)
    assert out.read_bytes() == trained.read_bytes()


def test_parameter_order_and_shapes_are_pmixers(trained, trained_autoencoder):
    for path, task in ((trained, "classify"), (trained_autoencoder, "autoencode")):
        tensors, metadata = read_safetensors(path)
        arch = (task, int(metadata["pmixer.height"]), int(metadata["pmixer.width"]),
                int(metadata["pmixer.classes"]), int(metadata["pmixer.layers"]))
        params = [(name, tuple(a.shape)) for name, a in tensors.items() if not name.startswith("optim.")]
        assert params == param_shapes(*arch)
        n = sum(int(np.prod(s)) for _, s in params)
        assert tensors["optim.adam.m"].shape == (n,)


def test_idx_files_read_back_plain_and_gzipped(tmp_path):
    images, labels = synthetic(7, 5, 4, 3)
    for gz in (False, True):
        write_idx(tmp_path / "train-images-idx3-ubyte", images, gz=gz)
        write_idx(tmp_path / "train-labels-idx1-ubyte", labels, gz=gz)
        if gz:
            for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
                (tmp_path / name).rename(tmp_path / f"{name}.gz")
        x, y = load_dataset("mnist", str(tmp_path))
        assert (x == images).all() and (y == labels).all()
        assert (read_idx(str(tmp_path / "train-labels-idx1-ubyte")) == labels).all()
        for f in tmp_path.iterdir():
            f.unlink()


def test_cifar_records_fold_each_pixels_colours_side_by_side(tmp_path):
    rec = np.zeros((2, 3073), np.uint8)
    rec[:, 0] = [3, 7]
    planes = rec[:, 1:].reshape(2, 3, 32, 32)
    planes[1, 0, 5, 9], planes[1, 1, 5, 9], planes[1, 2, 5, 9] = 11, 22, 33
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)]:
        (tmp_path / name).write_bytes(rec.tobytes())
    x, y = load_dataset("cifar10", str(tmp_path))
    assert x.shape == (10, 32, 96) and list(y[:2]) == [3, 7]
    assert list(x[1, 5, 27:30]) == [11, 22, 33] and x[1].sum() == 66
