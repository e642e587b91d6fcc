"""Whole epochs of ``fit`` against the same loop in PyTorch, and time-to-accuracy on digits.

    python bench/fit_epoch.py           # writes bench/results/fit_epoch.json and .md
    python bench/fit_epoch.py --quick   # seconds, for the smoke test

1. Epoch: ``model.fit(X, y, epochs=1)`` (validation, host-to-device transfer, shuffling,
   batching, SGD) against a PyTorch loop doing the same on the same device (transfer,
   ``randperm`` gather, slices, ``nn.Sequential`` + ``optim.SGD``), interleaved.
2. Time to accuracy: scikit-learn's digits (8x8 images, 10 classes, 1797 samples), 75/25
   split, a 64-64-10 ReLU MLP with Adam (lr 1e-3, batch 32, no L2 penalty) trained epoch by
   epoch until the held-out accuracy reaches the target; xpnet (numpy backend) against
   ``sklearn.neural_network.MLPClassifier`` with the same settings (``partial_fit`` per
   epoch), repeated with alternating order; median wall time and epochs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings

import common
import numpy as np
from common import Variant

EPOCH = {"sizes": [784, 256, 10], "n": 8192, "batch": 64}
EPOCH_QUICK = {"sizes": [64, 32, 10], "n": 512, "batch": 64}
LR = 0.01


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_common_args(parser)
    parser.add_argument("--backends", default="numpy,torch,cupy")
    parser.add_argument("--target", type=float, default=None,
                        help="held-out digits accuracy to reach (default 0.95; quick 0.80)")
    return parser.parse_args(argv)


def epoch_data(cfg, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((cfg["n"], cfg["sizes"][0]), dtype=np.float32)
    y = rng.integers(0, cfg["sizes"][-1], cfg["n"])
    return X, y


def xpnet_epoch(backend, cfg, X, y, graphs="auto"):
    """One epoch of ``fit``; ``graphs=False`` is the eager row where fit would capture."""
    import xpnet as xn

    model = xn.mlp(cfg["sizes"], seed=0, backend=backend)
    opt = xn.SGD(lr=LR)
    holder = []

    def run():
        hist = model.fit(X, y, loss="cross_entropy", optimizer=opt, epochs=1,
                         batch_size=cfg["batch"], seed=len(holder), graphs=graphs)
        holder.append(hist.history["loss"][-1])  # fit reads its epoch loss: already synced

    label = backend.name if backend.name != "torch" else f"torch-{backend.device.type}"
    label += "-eager" if graphs is False else ""
    return Variant(f"xpnet-{label}", run, backend.sync, "cuda" if backend.is_gpu else "cpu",
                   "xpnet", {"lib": label})


def torch_epoch(device, cfg, X, y):
    import torch
    from torch import nn

    sizes = cfg["sizes"]
    torch.manual_seed(0)
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    net = nn.Sequential(*layers).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    n, batch = cfg["n"], cfg["batch"]

    def run():
        Xd = torch.from_numpy(X).to(device)  # the transfer fit does too, once per call
        yd = torch.from_numpy(y).to(device)
        order = torch.randperm(n, device=device)
        Xe, ye = Xd[order], yd[order]
        total = torch.zeros((), device=device)
        for lo in range(0, n, batch):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(Xe[lo:lo + batch]), ye[lo:lo + batch])
            loss.backward()
            opt.step()
            total += loss.detach() * min(batch, n - lo)
        return float(total) / n  # fit reads its epoch loss once; so does this loop

    sync = (lambda: torch.cuda.synchronize()) if device == "cuda" else (lambda: None)
    return Variant(f"torch-loop-{device}", run, sync, "cuda" if device == "cuda" else "cpu",
                   "peer", {"lib": f"torch-{device}"})


def run_epochs(args):
    from train_step import xpnet_backends

    cfg = EPOCH_QUICK if args.quick else EPOCH
    X, y = epoch_data(cfg)
    backends, skipped = xpnet_backends(args.backends)
    variants = [xpnet_epoch(be, cfg, X, y) for be in backends if be.name != "jax"]
    # where fit replays a CUDA graph (torch on CUDA), the eager fit beside it
    variants += [xpnet_epoch(be, cfg, X, y, graphs=False) for be in backends
                 if be.capture_refusal is None]
    for device in sorted({be.device.type for be in backends if be.name == "torch"}):
        variants.append(torch_epoch(device, cfg, X, y))
    reps = args.reps or (5 if args.quick else 7)
    timing = common.time_interleaved(variants, reps=reps, warmup=1,
                                     target_s=0.0 if args.quick else 0.2)
    rat = common.ratios(variants, timing)
    rows = [{"variant": v.name, "group": v.group, **timing[v.name], **rat[v.name],
             "steps_per_epoch": -(-cfg["n"] // cfg["batch"])} for v in variants]
    return {"config": cfg, "rows": rows, "skipped_backends": skipped}


def digits_split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    return train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)


def xpnet_to_accuracy(data, target, max_epochs, seed):
    import xpnet as xn

    Xtr, Xte, ytr, yte = data
    model = xn.mlp([64, 64, 10], seed=seed, backend="numpy")

    class StopAtTarget(xn.Callback):
        """Stops fit at the first epoch whose held-out accuracy reaches the target."""

        def on_epoch_end(self, epoch, logs=None):
            if logs["val_accuracy"] >= target:
                self.model.stop_training = True

    t0 = time.perf_counter()
    hist = model.fit(Xtr, ytr, loss="cross_entropy", optimizer=xn.Adam(lr=1e-3),
                     epochs=max_epochs, batch_size=32, validation_data=(Xte, yte),
                     callbacks=[StopAtTarget()], seed=seed)
    seconds = time.perf_counter() - t0
    acc = hist.history["val_accuracy"]
    return {"seconds": seconds, "epochs": len(acc), "accuracy": acc[-1],
            "reached": acc[-1] >= target}


def sklearn_to_accuracy(data, target, max_epochs, seed):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    Xtr, Xte, ytr, yte = data
    clf = MLPClassifier(hidden_layer_sizes=(64,), activation="relu", solver="adam",
                        learning_rate_init=1e-3, batch_size=32, alpha=0.0, random_state=seed)
    classes = np.arange(10)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        epochs, acc = 0, 0.0
        while epochs < max_epochs and acc < target:
            clf.partial_fit(Xtr, ytr, classes=classes)  # one epoch, shuffled
            epochs += 1
            acc = clf.score(Xte, yte)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "epochs": epochs, "accuracy": acc, "reached": acc >= target}


def run_digits(args):
    target = args.target or (0.80 if args.quick else 0.95)
    max_epochs = 5 if args.quick else 200
    repeats = 1 if args.quick else (args.reps or 5)
    data = digits_split()
    runs = {"xpnet-numpy": [], "sklearn-MLPClassifier": []}
    for r in range(repeats):  # alternate who goes first: a noisy neighbour hits both alike
        order = list(runs) if r % 2 == 0 else list(reversed(runs))
        for name in order:
            fn = xpnet_to_accuracy if name.startswith("xpnet") else sklearn_to_accuracy
            runs[name].append(fn(data, target, max_epochs, seed=r))
    summary = {}
    for name, rs in runs.items():
        summary[name] = {"median_s": statistics.median(r["seconds"] for r in rs),
                         "median_epochs": statistics.median(r["epochs"] for r in rs),
                         "reached_all": all(r["reached"] for r in rs), "runs": rs}
    ref = summary["sklearn-MLPClassifier"]["median_s"]
    for s in summary.values():
        s["vs_sklearn"] = s["median_s"] / ref
    return {"target_accuracy": target, "max_epochs": max_epochs, "repeats": repeats,
            "summary": summary}


def to_markdown(epochs, digits, facts, command) -> str:
    cfg = epochs["config"]
    rows = [[r["variant"], common.fmt_time(r["median_s"]), common.fmt_ratio(r.get("vs_torch"))]
            for r in epochs["rows"]]
    out = [f"# fit_epoch\n\n`{command}`\n",
           f"One epoch: {'-'.join(map(str, cfg['sizes']))}, {cfg['n']} samples, batch "
           f"{cfg['batch']}, SGD, softmax cross-entropy.\n",
           common.markdown_table(["variant", "median epoch", "vs torch loop"], rows), "",
           f"Time to {digits['target_accuracy']:.0%} held-out accuracy on digits "
           f"(median of {digits['repeats']}):\n"]
    rows = [[name, common.fmt_time(s["median_s"]), s["median_epochs"],
             common.fmt_ratio(s["vs_sklearn"]), s["reached_all"]]
            for name, s in digits["summary"].items()]
    out += [common.markdown_table(["model", "median time", "epochs", "vs sklearn", "reached"],
                                  rows), "", common.facts_markdown(facts)]
    return "\n".join(out)


def main(argv=None) -> int:
    args = parse_args(argv)
    import sklearn.neural_network  # noqa: F401  load scipy's BLAS first, so the limit reaches it

    threads = common.limit_threads(args.threads)
    epochs = run_epochs(args)
    for r in epochs["rows"]:
        print(f"   {r['variant']:20s} {common.fmt_time(r['median_s']):>10s}  "
              f"torch {common.fmt_ratio(r.get('vs_torch'))}", flush=True)
    digits = run_digits(args)
    facts = common.machine_facts()
    facts["thread_limits"] = threads
    command = ("python bench/fit_epoch.py "
               + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    payload = {"benchmark": "fit_epoch", "quick": args.quick, "command": command,
               "machine": facts, "epoch": epochs, "digits": digits}
    md = to_markdown(epochs, digits, facts, command)
    path = common.write_results("fit_epoch_quick" if args.quick else "fit_epoch", payload, md,
                                args.out)
    print(md)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
