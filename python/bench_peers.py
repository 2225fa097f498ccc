"""PyTorch eager and torch.compile, timed with `pmixer bench`'s protocol, printing its keys.

    python python/bench_peers.py [--dataset mnist|cifar10] [--data-dir DIR] [--task classify|autoencode]
                                 [--eval] [--compile]
                                 [--threads N] [--seconds 9] [--batch-size 64] [--layers L]

Protocol (as `pmixer bench`): the same model (pmixer_torch.PatchlessMixer, Keras initialisation),
the same real data batches (consecutive samples, wrapping around), pmixer's Adam; a warm-up of
max(seconds/10, 0.5 s) (for torch.compile, after compiling), then three windows of seconds/3
each; the median rate, the min and the max; the peak RSS read right after the windows. Keys:
config, cpu, threads, peer, train_samples_per_s (or eval_samples_per_s) with _min and _max,
flops_per_sample, gflops, peak_rss_mb.
"""

import argparse
import os
import resource
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pmixer_torch as pt  # noqa: E402

DEFAULT_LAYERS = {("mnist", "classify"): 16, ("cifar10", "classify"): 32, ("mnist", "autoencode"): 2,
                  ("cifar10", "autoencode"): 2}


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().split("\n\n")[0].splitlines()
        fields = {k.strip(): v.strip() for k, v in (l.split(":", 1) for l in lines if ":" in l)}
    except OSError:
        return "unknown"
    name = fields.get("model name", "unknown")
    fam, model = fields.get("cpu family"), fields.get("model")
    return f"{name} (family {fam}, model {model})" if fam and model else name


def flops_per_sample(h, w, layers, classes):
    """Forward FLOPs as pmixer counts them (Model::flops_per_sample): per mixer 2·(2·H·H·W) for
    the columns and 2·(2·W·W·H) for the rows, plus the classifier head's small denses."""
    mixers = layers * (2 * 2 * h * h * w + 2 * 2 * w * w * h)
    head = 2 * (h * w + h) + 2 * (w * h + w) + 2 * (h + w) * classes if classes else 0
    return mixers + head


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=["mnist", "cifar10"], default="mnist")
    p.add_argument("--data-dir")
    p.add_argument("--task", choices=["classify", "autoencode"], default="classify")
    p.add_argument("--layers", type=int)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--seconds", type=float, default=9.0)
    p.add_argument("--eval", action="store_true", help="time inference instead of training steps")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (default: eager)")
    a = p.parse_args()
    if a.seconds <= 0 or a.batch_size < 1 or a.threads < 1:
        p.error("--seconds, --batch-size and --threads must be positive")
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    data_dir = a.data_dir or os.path.join(os.path.dirname(__file__), "..", "data", a.dataset)
    images, labels = pt.load_dataset(a.dataset, data_dir, "train")
    h, w = images.shape[1:]
    layers = a.layers or DEFAULT_LAYERS[(a.dataset, a.task)]
    classes = 10 if a.task == "classify" else 0
    model = pt.PatchlessMixer(a.task, h, w, classes, layers)
    opt = pt.KerasAdam(model.parameters())
    run = torch.compile(model) if a.compile else model
    b, n, cursor = a.batch_size, len(images), [0]

    def next_batch():
        idx = np.arange(cursor[0], cursor[0] + b) % n
        cursor[0] = (cursor[0] + b) % n
        return pt.pixels(images[idx]), torch.from_numpy(labels[idx])

    def step():
        x, y = next_batch()
        if a.eval:
            with torch.no_grad():
                run(x)
            return
        out = run(x)
        loss = torch.nn.functional.cross_entropy(out, y) if classes else ((out - x) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train(not a.eval)
    step()  # compiles, for torch.compile
    warm = time.time()
    while time.time() - warm < max(a.seconds / 10, 0.5):
        step()
    rates = []
    for _ in range(3):
        t, samples = time.time(), 0
        while time.time() - t < a.seconds / 3:
            step()
            samples += b
        rates.append(samples / (time.time() - t))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rates.sort()
    key = "eval_samples_per_s" if a.eval else "train_samples_per_s"
    flops = flops_per_sample(h, w, layers, classes) * (1 if a.eval else 3)
    print(f"config: {a.dataset} {a.task} {h}x{w} layers={layers} batch={b}")
    print(f"cpu: {cpu_model()}")
    print(f"threads: {a.threads}")
    print(f"peer: pytorch {torch.__version__} {'torch.compile' if a.compile else 'eager'}")
    print(f"{key}: {rates[1]:.1f}")
    print(f"{key}_min: {rates[0]:.1f}")
    print(f"{key}_max: {rates[2]:.1f}")
    print(f"flops_per_sample: {flops}")
    print(f"gflops: {rates[1] * flops / 1e9:.2f}")
    print(f"peak_rss_mb: {rss:.1f}")


if __name__ == "__main__":
    main()
