"""The PyTorch twin against pmixer itself: outputs, the round trip, one Adam step, DDP."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, pmixer

torch = pytest.importorskip("torch")
import pmixer_torch as pt  # noqa: E402


def test_logits_equal_pmixers_to_1e_5_of_their_scale(trained, data_dir):
    model = pt.load_checkpoint(trained)
    images, _ = pt.load_dataset("mnist", str(data_dir), "test")
    idx = list(range(12))
    out = pmixer("predict", "--logits", "--checkpoint", trained,
                 *[f"{data_dir}/t10k-images-idx3-ubyte:{i}" for i in idx])
    theirs = np.array([[float(v) for v in line.split(": logits ")[1].split()] for line in out.splitlines()])
    # predict scales pixels as p / 255.
    x = torch.from_numpy(images[idx].astype(np.float32) / np.float32(255.0))
    with torch.no_grad():
        ours = model(x).numpy()
    scale = np.abs(theirs).max()
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() <= 1e-5 * scale, (np.abs(ours - theirs).max(), scale)


def test_autoencoder_reconstructs_like_pmixer_evaluates(trained_autoencoder, data_dir):
    model = pt.load_checkpoint(trained_autoencoder)
    images, _ = pt.load_dataset("mnist", str(data_dir), "test")
    x = pt.pixels(images)
    with torch.no_grad():
        rmse = float(((model(x) - x) ** 2).mean().sqrt())
    out = pmixer("eval", "--checkpoint", trained_autoencoder, "--data-dir", data_dir)
    theirs = float(out.split("test_rmse:")[1].split()[0])
    assert abs(rmse - theirs) <= 1e-5 * theirs, (rmse, theirs)


def test_pmixer_to_pytorch_to_pmixer_is_bitwise_on_the_weights(trained, tmp_path, data_dir):
    model = pt.load_checkpoint(trained)
    out = tmp_path / "back.safetensors"
    pt.save_checkpoint(model, out)
    before, _ = pt.read_safetensors(trained)
    after, meta = pt.read_safetensors(out)
    for name, _ in pt.param_shapes(model.task, model.h, model.w, model.classes, model.layers):
        assert before[name].tobytes() == after[name].tobytes(), name
    assert meta["pmixer.layers"] == "3"
    # pmixer reads it back and evaluates it as it evaluated the original.
    a = pmixer("eval", "--checkpoint", trained, "--data-dir", data_dir)
    b = pmixer("eval", "--checkpoint", out, "--data-dir", data_dir)
    assert a == b


def test_one_adam_step_equals_one_pmixer_step(trained, tmp_path, data_dir):
    # pmixer: one step of batch 64 on the first 64 samples, from the trained weights, Adam fresh.
    run = tmp_path / "one"
    pmixer("train", "--init", trained, "--data-dir", data_dir, "--layers", 3, "--limit", 64, "--batch-size", 64,
           "--epochs", 1, "--no-shuffle", "--out", run)
    want, _ = pt.read_safetensors(run / "checkpoint.safetensors")
    model = pt.load_checkpoint(trained).train()
    images, labels = pt.load_dataset("mnist", str(data_dir))
    opt = pt.KerasAdam(model.parameters())
    loss = torch.nn.functional.cross_entropy(model(pt.pixels(images[:64])), torch.from_numpy(labels[:64]))
    loss.backward()
    opt.step()
    for name, p in model.named_parameters():
        ref = want[name]
        scale = max(np.abs(ref).max(), 1e-30)
        assert np.abs(p.detach().numpy() - ref).max() <= 1e-6 * scale, name
    m, v = opt.flat_moments(model)
    assert np.abs(m - want["optim.adam.m"]).max() <= 1e-6 * np.abs(want["optim.adam.m"]).max()


@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")), reason="no torchrun")
def test_train_ddp_runs_an_epoch_on_two_processes(trained, tmp_path, data_dir):
    out = tmp_path / "ddp.safetensors"
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    r = subprocess.run([torchrun, "--nproc_per_node", "2", "--standalone", str(REPO / "python" / "train_ddp.py"),
                        "--checkpoint", str(trained), "--data-dir", str(data_dir), "--epochs", "1",
                        "--batch-size", "32", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "epoch 1/1" in r.stdout, r.stdout
    # pmixer evaluates what PyTorch trained.
    acc = float(pmixer("eval", "--checkpoint", out, "--data-dir", data_dir).split("test_accuracy:")[1].split()[0])
    assert 0.0 <= acc <= 1.0
