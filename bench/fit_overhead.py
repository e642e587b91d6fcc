"""What ``fit`` costs per batch beyond its step: fit against the bare step, a hand-written
NumPy loop, a PyTorch eager loop and the GEMM bound, plus peak memory and two threads.

    python bench/fit_overhead.py            # writes bench/results/fit_overhead.json and .md
    python bench/fit_overhead.py --quick    # seconds, for the smoke test
    python bench/fit_overhead.py --baseline /tmp/before   # + an earlier xpnet, interleaved

Every variant runs one epoch of ``STEPS`` batches per sample (so per-epoch work, the
shuffle, the epoch's loss read and the callbacks, is in the figure), interleaved A B C A
B C; the per-batch time is the epoch's divided by its batches. The variants:

- ``fit-sgd`` / ``fit-adam``: ``model.fit(X, y, epochs=1)`` on NumPy (``fit-torch-sgd`` on
  torch-cpu): validation of the arrays, the shuffle, per-batch gathers, the guard,
  history and callbacks;
- ``step-sgd``: the same batches through ``xn.Step`` alone (no shuffle, no guard, no
  callbacks): what fit would cost with zero overhead;
- ``numpy-loop``: shuffle, gather and the hand-written step in NumPy;
- ``torch-loop`` / ``torch-loop-adam``: ``randperm``, index tensors, ``nn.Sequential``,
  ``optimizer.step()``;
- ``gemm``: the matrix products of each batch's step only, the lower bound;
- ``before-fit-sgd``, ``before-fit-adam``, ``before-step-sgd`` (and ``before-fit-torch-sgd``):
  the same through an earlier xpnet given with ``--baseline`` (``bench/baseline.py``).

The breakdown profiles one fit epoch (cProfile; its own overhead inflates the small
parts, so read them as shares) into step, guard, shuffle and gather, callbacks and host
reads. Peak memory runs each variant in a fresh process and reports the growth of the
resident set's high-water mark during training, beside the lower bound: parameters,
gradients, optimizer state and one batch's activations.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import subprocess
import sys

import common
import numpy as np
import steps
from common import Variant

SHAPES = {"tiny": ([64, 128, 10], 64, 64), "medium": ([784, 512, 512, 10], 256, 16),
          "large": ([4096, 4096, 4096, 10], 1024, 2)}  # sizes, batch, batches per epoch
QUICK_SHAPES = {"tiny-quick": ([16, 32, 4], 16, 8), "medium-quick": ([64, 64, 64, 10], 32, 4)}
LR = steps.LR


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_common_args(parser)
    parser.add_argument("--shapes", default=None, help="comma-separated subset of the shapes")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory rows")
    parser.add_argument("--no-threads", action="store_true",
                        help="skip the rows at the libraries' default thread counts")
    parser.add_argument("--baseline", default=None, metavar="DIR",
                        help="a folder holding xpnet_before/: its fit and step rows run "
                             "interleaved with these (bench/baseline.py)")
    parser.add_argument("--memory-only", action="store_true",
                        help="only the peak-memory rows (fit_overhead_memory.json and .md)")
    parser.add_argument("--memory-child", nargs=2, metavar=("VARIANT", "SHAPE"),
                        help=argparse.SUPPRESS)  # one peak-memory measurement, in a child
    return parser.parse_args(argv)


def epoch_data(sizes, batch, n_batches, seed=0):
    rng = np.random.default_rng(seed)
    n = batch * n_batches
    return rng.standard_normal((n, sizes[0]), dtype=np.float32), rng.integers(0, sizes[-1], n)


def _xpnet(pkg=None):
    """The xpnet under test, or the baseline package ``pkg``."""
    if pkg is not None:
        return pkg
    import xpnet

    return xpnet


def _model(backend, sizes, pkg=None):
    xn = _xpnet(pkg)
    if pkg is not None:  # the baseline's own backend object
        backend = xn.backend.get(backend.name, None if backend.name == "numpy" else "cpu")
    model = xn.mlp(sizes, activation="relu", seed=0, backend=backend)
    model.set_params({f"{2 * i}.{k}": v for i, (W, b) in enumerate(steps.host_weights(sizes))
                      for k, v in (("W", W), ("b", b))})
    return model


def fit_variant(backend, sizes, batch, X, y, optimizer="sgd", pkg=None):
    xn = _xpnet(pkg)
    model = _model(backend, sizes, pkg)
    opt = xn.SGD(lr=LR) if optimizer == "sgd" else xn.Adam(lr=1e-3)
    epoch = [0]

    def run():
        model.fit(X, y, loss="cross_entropy", optimizer=opt, epochs=1, batch_size=batch,
                  seed=epoch[0])
        epoch[0] += 1

    lib = "numpy" if backend.name == "numpy" else f"{backend.name}-{backend.device}"
    name = "fit" + ("" if lib == "numpy" else f"-{backend.name}") + f"-{optimizer}"
    kind = "xpnet" if pkg is None else "before"
    return Variant(("" if pkg is None else "before-") + name, run, backend.sync, "cpu", kind,
                   {"lib": lib, "model": model})


def step_variant(backend, sizes, batch, X, y, pkg=None):
    xn = _xpnet(pkg)
    model = _model(backend, sizes, pkg)
    Xd = model.device_inputs(X)
    Td = model.device_targets(y, "cross_entropy", Xd)
    batches = [(Xd[lo:lo + batch], Td[lo:lo + batch]) for lo in range(0, X.shape[0], batch)]
    train = xn.Step(model, "cross_entropy", xn.SGD(lr=LR))

    def run():
        for Xb, Tb in batches:
            train(Xb, Tb)

    name = "step-sgd" if pkg is None else "before-step-sgd"
    return Variant(name, run, backend.sync, "cpu", "step", {"lib": "numpy"})


def numpy_loop_variant(sizes, batch, X, y):
    """Shuffle, gather and the hand-written step (bench/steps.py's) per batch, in NumPy."""
    T = np.zeros((X.shape[0], sizes[-1]), np.float32)
    T[np.arange(X.shape[0]), y] = 1.0
    params = [(W.copy(), b.copy()) for W, b in steps.host_weights(sizes)]
    rng = np.random.default_rng(0)
    last, inv_n = len(params) - 1, 1.0 / batch

    def one_step(Xb, Tb):
        acts, A = [Xb], Xb
        for i, (W, b) in enumerate(params):
            A = A @ W
            A += b
            if i < last:
                np.maximum(A, 0.0, out=A)
            acts.append(A)
        A -= A.max(axis=1, keepdims=True)
        log_total = np.log(np.exp(A).sum(axis=1))
        dY = np.exp(A - log_total[:, None])
        dY -= Tb
        dY *= inv_n
        for i in range(last, -1, -1):
            W, b = params[i]
            dW, db = acts[i].T @ dY, dY.sum(axis=0)
            if i:
                dY = dY @ W.T
                dY *= acts[i] > 0
            W -= LR * dW
            b -= LR * db
        return (log_total.sum() - (Tb * A).sum()) * inv_n

    def run():
        order = rng.permutation(X.shape[0])
        total = 0.0
        for lo in range(0, X.shape[0], batch):
            rows = order[lo:lo + batch]
            total += one_step(X[rows], T[rows])
        return total

    return Variant("numpy-loop", run, lambda: None, "cpu", "hand", {"lib": "numpy"})


def torch_loop_variant(sizes, batch, X, y, optimizer="sgd"):
    import torch
    from torch import nn

    layers = []
    for i, (W, b) in enumerate(steps.host_weights(sizes)):
        lin = nn.Linear(W.shape[0], W.shape[1])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W.T.copy()))
            lin.bias.copy_(torch.from_numpy(b))
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    net = nn.Sequential(*layers)
    opt = (torch.optim.SGD(net.parameters(), lr=LR) if optimizer == "sgd"
           else torch.optim.Adam(net.parameters(), lr=1e-3))
    loss_fn = nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(0)

    def run():
        order = torch.randperm(Xt.shape[0], generator=gen)
        total = torch.zeros(())
        for lo in range(0, Xt.shape[0], batch):
            rows = order[lo:lo + batch]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(Xt[rows]), yt[rows])
            loss.backward()
            opt.step()
            total += loss.detach()
        return float(total)

    name = "torch-loop" + ("" if optimizer == "sgd" else f"-{optimizer}")
    return Variant(name, run, lambda: None, "cpu", "peer", {"lib": "torch-cpu"})


def gemm_variant(backend, sizes, batch, n_batches):
    one = steps.gemm_variant(backend, sizes, batch)

    def run():
        for _ in range(n_batches):
            one.step()

    return Variant("gemm", run, backend.sync, "cpu", "gemm", {"lib": "numpy"})


def build_variants(sizes, batch, n_batches, have_torch, before=None):
    import xpnet as xn

    X, y = epoch_data(sizes, batch, n_batches)
    numpy_b = xn.backend.get("numpy")
    out = [fit_variant(numpy_b, sizes, batch, X, y, "sgd"),
           fit_variant(numpy_b, sizes, batch, X, y, "adam"),
           step_variant(numpy_b, sizes, batch, X, y),
           numpy_loop_variant(sizes, batch, X, y), gemm_variant(numpy_b, sizes, batch, n_batches)]
    if have_torch:
        torch_b = xn.backend.get("torch", "cpu")
        out += [fit_variant(torch_b, sizes, batch, X, y, "sgd"),
                torch_loop_variant(sizes, batch, X, y, "sgd"),
                torch_loop_variant(sizes, batch, X, y, "adam")]
    if before is not None:  # interleaved with the rows above: before/after from one run
        out += [fit_variant(numpy_b, sizes, batch, X, y, "sgd", before),
                fit_variant(numpy_b, sizes, batch, X, y, "adam", before),
                step_variant(numpy_b, sizes, batch, X, y, before)]
        if have_torch:
            out.append(fit_variant(xn.backend.get("torch", "cpu"), sizes, batch, X, y, "sgd",
                                   before))
    return out


# Each row's ratios: (numerator, denominator) variant names, read per round.
RATIOS = [("fit-sgd", "step-sgd", "fit overhead over the bare step"),
          ("fit-sgd", "numpy-loop", "fit vs hand NumPy loop"),
          ("fit-sgd", "torch-loop", "fit vs PyTorch eager loop"),
          ("fit-sgd", "gemm", "fit vs GEMM bound"),
          ("fit-adam", "torch-loop-adam", "fit Adam vs PyTorch eager loop Adam"),
          ("fit-torch-sgd", "torch-loop", "fit on torch vs PyTorch eager loop"),
          ("step-sgd", "gemm", "bare step vs GEMM bound"),
          ("fit-sgd", "before-fit-sgd", "fit SGD vs before"),
          ("fit-adam", "before-fit-adam", "fit Adam vs before"),
          ("step-sgd", "before-step-sgd", "bare step vs before"),
          ("fit-torch-sgd", "before-fit-torch-sgd", "fit on torch vs before"),
          ("before-fit-sgd", "step-sgd", "before: fit vs this bare step"),
          ("before-fit-sgd", "numpy-loop", "before: fit vs hand NumPy loop"),
          ("before-fit-sgd", "gemm", "before: fit vs GEMM bound"),
          ("before-step-sgd", "gemm", "before: bare step vs GEMM bound")]


def paired_ratios(timing: dict) -> list[dict]:
    """Median and range of the per-round ratios (samples taken moments apart)."""
    rows = []
    for num, den, what in RATIOS:
        if num not in timing or den not in timing:
            continue
        per_round = [a / b for a, b in zip(timing[num]["samples_s"], timing[den]["samples_s"],
                                           strict=True)]
        rows.append({"ratio": f"{num} / {den}", "what": what,
                     "median": statistics.median(per_round), "min": min(per_round),
                     "max": max(per_round)})
    return rows


# --------------------------------------------------------------------------- breakdown

_PARTS = {  # part -> (file suffix, function) entries whose cumulative time it is
    "guard": [("train/guard.py", "before_update"), ("train/guard.py", "after_update")],
    "shuffle and gather": [("", "<method 'permutation' of 'numpy.random._generator.Generator' "
                                "objects>"), ("", "take")],
    "callbacks": [("train/callbacks.py", "on_epoch_end"), ("train/callbacks.py", "on_batch_end"),
                  ("train/callbacks.py", "on_epoch_begin"), ("train/progress.py", "on_epoch_end")],
    "host reads": [("backend/table.py", "to_numpy")],
    "validation and set-up": [("model.py", "device_inputs"), ("model.py", "device_targets"),
                              ("train/step.py", "__init__"), ("backend/memory.py", "check_fits")],
}


def breakdown(sizes, batch, n_batches) -> dict:
    """Shares of one profiled fit epoch: the step, and what fit adds around it."""
    import xpnet as xn

    X, y = epoch_data(sizes, batch, n_batches)
    model = _model(xn.backend.get("numpy"), sizes)
    opt = xn.SGD(lr=LR)
    model.fit(X, y, loss="cross_entropy", optimizer=opt, epochs=1, batch_size=batch)  # warm
    profile = cProfile.Profile()
    profile.enable()
    model.fit(X, y, loss="cross_entropy", optimizer=opt, epochs=1, batch_size=batch, seed=1)
    profile.disable()
    stats = pstats.Stats(profile).stats  # (file, line, function) -> (cc, nc, tt, ct, callers)
    total = sum(tt for (_, _, _), (_, _, tt, _, _) in stats.items())

    def cumulative(file_suffix, func):
        return sum(ct for (f, _, fn), (_, _, _, ct, _) in stats.items()
                   if fn == func and f.endswith(file_suffix))

    step = cumulative("train/step.py", "__call__")
    parts = {name: sum(cumulative(*entry) for entry in entries)
             for name, entries in _PARTS.items()}
    parts["step (without the guard)"] = max(step - parts["guard"], 0.0)
    parts["other fit bookkeeping"] = max(total - sum(parts.values()), 0.0)
    return {"total_s": total, "shares": {k: v / total for k, v in parts.items()}}


# ------------------------------------------------------------------------------ memory

def _status_bytes(field: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (its high-water mark) of this process."""
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # kB
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> None:
    """Start the high-water mark afresh (Linux: "5" to clear_refs), so an earlier peak
    (importing torch, drawing the weights in float64) does not hide training's."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def memory_child(variant: str, shape: str) -> dict:
    """In a fresh process: how far resident memory peaks above what it was with the
    libraries imported and the data made, while ``variant`` builds its model and trains 2
    epochs (so the model, gradients, optimizer state and activations all count)."""
    common.limit_threads(1)
    sizes, batch, n_batches = {**SHAPES, **QUICK_SHAPES}[shape]
    X, y = epoch_data(sizes, batch, n_batches)
    import xpnet as xn

    if variant.startswith("torch"):
        import torch  # noqa: F401  (imported before the baseline, as xpnet's torch is)
    before = _status_bytes("VmRSS")
    _reset_peak()
    if variant.startswith("torch"):
        v = torch_loop_variant(sizes, batch, X, y, "adam" if "adam" in variant else "sgd")
    else:
        v = fit_variant(xn.backend.get("numpy"), sizes, batch, X, y,
                        "adam" if "adam" in variant else "sgd")
    v.step()
    v.step()
    return {"variant": variant, "growth_bytes": _status_bytes("VmHWM") - before,
            "before_bytes": before}


def lower_bound_bytes(sizes, batch, slots: int) -> int:
    """Parameters, gradients and ``slots`` optimizer arrays of them, plus one batch's
    activations (each layer's output, kept for backward), in float32."""
    n_params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=False))
    activations = batch * sum(sizes)
    return 4 * (n_params * (2 + slots) + activations)


def memory_rows(shapes: dict, quick: bool) -> list[dict]:
    rows = []
    variants = (("fit-sgd", 0), ("torch-loop", 0), ("fit-adam", 2), ("torch-loop-adam", 2))
    if quick:  # the smoke test: one shape, one pair (each row is a fresh process)
        shapes, variants = dict(list(shapes.items())[:1]), variants[:2]
    for shape, (sizes, batch, _) in shapes.items():
        for variant, slots in variants:
            if variant.startswith("torch") and not common.has_module("torch"):
                continue
            done = subprocess.run([sys.executable, __file__, "--memory-child", variant, shape],
                                  capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                raise RuntimeError(done.stderr[-2000:])
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row.update(shape=shape, lower_bound_bytes=lower_bound_bytes(sizes, batch, slots))
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------- the run

def run_timing(shapes: dict, reps: int, quick: bool, threads: int, before=None) -> dict:
    common.limit_threads(threads)
    have_torch = common.has_module("torch")
    results = {}
    for name, (sizes, batch, n_batches) in shapes.items():
        variants = build_variants(sizes, batch, n_batches, have_torch, before)
        timing = common.time_interleaved(variants, reps=reps, warmup=1,
                                         target_s=0.002 if quick else 0.2)
        per_batch = {k: {"median_s": v["median_s"] / n_batches,
                         "min_s": v["min_s"] / n_batches, "max_s": v["max_s"] / n_batches}
                     for k, v in timing.items()}
        results[name] = {"sizes": sizes, "batch": batch, "batches_per_epoch": n_batches,
                         "per_batch": per_batch, "ratios": paired_ratios(timing),
                         "samples_s": {k: v["samples_s"] for k, v in timing.items()}}
        print(f"-- {name} threads={threads}", flush=True)
        for r in results[name]["ratios"]:
            print(f"   {r['what']:40s} {r['median']:.3f}x  ({r['min']:.2f}-{r['max']:.2f})",
                  flush=True)
    return results


def to_markdown(payload: dict) -> str:
    out = [f"# fit_overhead\n\n`{payload['command']}`\n",
           "Per-round ratios of one epoch each (median, with the run-to-run range).\n"]
    for threads_key, results in payload["timing"].items():
        out.append(f"\n## {threads_key}\n")
        rows = []
        for shape, res in results.items():
            label = f"{shape} {'-'.join(map(str, res['sizes']))} b{res['batch']}"
            for r in res["ratios"]:
                rows.append([label, r["what"], f"{r['median']:.3f}x",
                             f"{r['min']:.2f}-{r['max']:.2f}"])
            for v, t in res["per_batch"].items():
                rows.append([label, f"{v} per batch", common.fmt_time(t["median_s"]),
                             f"{common.fmt_time(t['min_s'])}-{common.fmt_time(t['max_s'])}"])
        out.append(common.markdown_table(["shape", "what", "median", "range"], rows))
    if payload.get("breakdown"):
        out.append("\n## Where one fit epoch's time goes (cProfile, SGD, NumPy)\n")
        rows = [[shape, part, f"{share:.1%}"] for shape, b in payload["breakdown"].items()
                for part, share in sorted(b["shares"].items(), key=lambda kv: -kv[1])]
        out.append(common.markdown_table(["shape", "part", "share"], rows))
    if payload.get("memory"):
        out.append("\n## Peak resident memory growth while training (fresh process each)\n")
        rows = [[r["shape"], r["variant"], f"{r['growth_bytes'] / 2**20:.1f} MiB",
                 f"{r['lower_bound_bytes'] / 2**20:.1f} MiB",
                 f"{r['growth_bytes'] / r['lower_bound_bytes']:.2f}x"]
                for r in payload["memory"]]
        out.append(common.markdown_table(["shape", "variant", "peak growth", "lower bound",
                                          "vs bound"], rows))
    out.append("\n" + common.facts_markdown(payload["machine"]))
    return "\n".join(out)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(*args.memory_child)))
        return 0
    shapes = QUICK_SHAPES if args.quick else SHAPES
    if args.shapes:
        shapes = {k: v for k, v in {**SHAPES, **QUICK_SHAPES}.items()
                  if k in args.shapes.split(",")}
    reps = args.reps or (3 if args.quick else 7)
    thread_limits = common.limit_threads(args.threads)
    if args.memory_only:
        payload = {"benchmark": "fit_overhead", "quick": args.quick, "timing": {},
                   "command": "python bench/fit_overhead.py " + " ".join(
                       argv if argv is not None else sys.argv[1:]),
                   "breakdown": None, "memory": memory_rows(shapes, args.quick),
                   "machine": common.machine_facts()}
        path = common.write_results("fit_overhead_memory", payload, to_markdown(payload),
                                    args.out)
        print(to_markdown(payload))
        print(f"wrote {path}")
        return 0
    import baseline

    before = baseline.load(args.baseline)
    timing = {f"threads={args.threads}": run_timing(shapes, reps, args.quick, args.threads,
                                                    before)}
    if not args.no_threads:  # the libraries' defaults: every core of this machine
        import os

        cores = os.cpu_count() or 1
        if cores != args.threads:
            timing[f"threads={cores}"] = run_timing(shapes, reps, args.quick, cores)
        common.limit_threads(args.threads)
    payload = {"benchmark": "fit_overhead", "quick": args.quick,
               "command": "python bench/fit_overhead.py " + " ".join(
                   argv if argv is not None else sys.argv[1:]),
               "timing": timing,
               "breakdown": {name: breakdown(*cfg) for name, cfg in shapes.items()},
               "memory": None if args.no_memory else memory_rows(shapes, args.quick)}
    payload["machine"] = common.machine_facts()
    payload["machine"]["thread_limits"] = thread_limits
    name = "fit_overhead_quick" if args.quick else "fit_overhead"
    md = to_markdown(payload)
    path = common.write_results(name, payload, md, args.out)
    print(md)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
