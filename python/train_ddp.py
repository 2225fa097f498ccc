"""Continue training a pmixer checkpoint in PyTorch, on many processes (DistributedDataParallel,
gloo on CPU), and write a pmixer checkpoint at the end.

    torchrun --standalone --nproc_per_node 2 python/train_ddp.py \\
        --checkpoint runs/x/checkpoint.safetensors --data-dir data/mnist --epochs 1 --out ddp.safetensors
    pmixer eval --checkpoint ddp.safetensors

The update is pmixer's: its loss (softmax cross-entropy or MSE, the mean over the batch), its
Adam (pmixer_torch.KerasAdam), continuing from the checkpoint's moments and step count when it
is a training checkpoint. Each step's batch is split over the processes and the loss scaled so
that DDP's gradient average is the gradient of the whole batch's mean loss; one process with
--no-shuffle takes pmixer's steps on the same samples in the same order.
"""

import argparse
import math
import os
import sys
import time

import numpy as np
import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pmixer_torch as pt  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a checkpoint pmixer wrote")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--dataset", choices=["mnist", "cifar10"], help="default: the checkpoint's")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64, help="samples per step, over all processes")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0, help="seeds the per-epoch shuffle")
    p.add_argument("--limit", type=int, help="train on the first N samples only")
    p.add_argument("--no-shuffle", action="store_true")
    p.add_argument("--out", required=True, help="where to write the pmixer checkpoint")
    a = p.parse_args()
    for name in ("epochs", "batch_size", "limit"):
        v = getattr(a, name)
        if v is not None and v < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, not {v}")
    if not (a.lr > 0 and math.isfinite(a.lr)):
        p.error(f"--lr must be a finite number greater than 0, not {a.lr}")
    return a


def batch_loss(model, x, y, task):
    """The batch's summed loss: cross-entropy per sample, or squared error per pixel."""
    out = model(x)
    if task == "classify":
        return torch.nn.functional.cross_entropy(out, y, reduction="sum"), out
    return ((out - x) ** 2).sum(), out


def evaluate(model, images, labels, task):
    model.eval()
    loss, metric, n = 0.0, 0.0, len(images)
    with torch.no_grad():
        for i in range(0, n, 500):
            x, y = pt.pixels(images[i : i + 500]), torch.from_numpy(labels[i : i + 500])
            l, out = batch_loss(model, x, y, task)
            loss += float(l)
            if task == "classify":
                metric += float((out.argmax(1) == y).sum())
    model.train()
    if task == "classify":
        return loss / n, metric / n
    mse = loss / (n * images.shape[1] * images.shape[2])
    return mse, math.sqrt(mse)


def main():
    a = parse_args()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group("gloo")
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    model = pt.load_checkpoint(a.checkpoint).train()
    dataset = a.dataset or model.pmixer_metadata.get("train.dataset", "mnist")
    images, labels = pt.load_dataset(dataset, a.data_dir, "train")
    test_images, test_labels = pt.load_dataset(dataset, a.data_dir, "test")
    if images.shape[1:] != (model.h, model.w):
        sys.exit(f"{a.checkpoint}: the model takes {model.h}x{model.w} images, {a.data_dir} has "
                 f"{images.shape[1]}x{images.shape[2]}")
    n = min(a.limit or len(images), len(images))
    opt = pt.KerasAdam(model.parameters(), lr=a.lr)
    try:
        m, v, t = pt.read_adam_state(a.checkpoint)
        opt.load_flat(model, m, v, t)
        resumed = f"Adam state of step {t}"
    except ValueError:
        resumed = "fresh Adam state"
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    metric = "accuracy" if model.task == "classify" else "rmse"
    if rank == 0:
        print(f"training {dataset} {model.task} ({model.h}x{model.w}, {model.layers} layers) on {n} samples, "
              f"{world} processes, from {a.checkpoint} with {resumed}", flush=True)
    for epoch in range(1, a.epochs + 1):
        order = np.arange(n) if a.no_shuffle else np.random.default_rng(a.seed + epoch).permutation(n)
        start, total, seen = time.time(), 0.0, 0
        for b0 in range(0, n, a.batch_size):
            batch = order[b0 : b0 + a.batch_size]
            mine = batch[rank::world]
            x, y = pt.pixels(images[mine]), torch.from_numpy(labels[mine])
            per = 1 if model.task == "classify" else model.h * model.w
            loss, _ = batch_loss(ddp, x, y, model.task)
            # DDP averages the processes' gradients: scaled by world / (batch elements), the
            # average is the gradient of the whole batch's mean loss.
            opt.zero_grad(set_to_none=True)
            (loss * (world / (len(batch) * per))).backward()
            opt.step()
            total += float(loss.detach())
            seen += len(mine) * per
        if world > 1:
            sums = torch.tensor([total, float(seen)], dtype=torch.float64)
            dist.all_reduce(sums)
            total, seen = float(sums[0]), float(sums[1])
        if rank == 0:
            secs = time.time() - start
            test_loss, test_metric = evaluate(model, test_images, test_labels, model.task)
            print(f"epoch {epoch}/{a.epochs}  train_loss {total / seen:.4f}  test_loss {test_loss:.4f}  "
                  f"test_{metric} {test_metric:.4f}  time {secs:.1f}s  {n / secs:.0f} samples/s", flush=True)
    if rank == 0:
        model.pmixer_metadata["train.dataset"] = dataset
        model.pmixer_metadata["train.data_dir"] = os.path.abspath(a.data_dir)
        pt.save_checkpoint(model, a.out, adam=opt)
        print(f"checkpoint: {a.out}", flush=True)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
