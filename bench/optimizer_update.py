"""The optimizer update alone: every optimizer, flat against per parameter, and torch.optim.

    python bench/optimizer_update.py            # writes bench/results/optimizer_update.*
    python bench/optimizer_update.py --quick

For the tiny (64-128-10) and medium (784-512-512-10) shapes, on each mutable backend with
views (NumPy, torch): the update ``fit`` makes (``Optimizer.step_flat`` over the flat
parameter, gradient and state buffers) and the per-parameter update it replaced
(``Optimizer.step`` over a dict of separate arrays, the backend's kernels on), for SGD,
SGD with momentum 0.9, Adam, AdamW, RMSprop and Adagrad, interleaved; with torch also
``torch.optim``'s own update of the same optimizer on the same parameters (its CPU default:
``foreach`` off, one kernel sequence per tensor). Reported: the median per update, each
variant's ratio to the flat SGD update of its backend and, for torch, the flat update's
ratio to ``torch.optim`` (medians of per-round ratios).
"""

from __future__ import annotations

import argparse
import statistics
import sys

import common
import numpy as np
from common import Variant

SHAPES = {"tiny": [64, 128, 10], "medium": [784, 512, 512, 10]}
# name -> (class name in xpnet and torch.optim, arguments for both)
OPTIMIZERS = {"sgd": ("SGD", {"lr": 0.01}),
              "sgd-momentum": ("SGD", {"lr": 0.01, "momentum": 0.9}),
              "adam": ("Adam", {"lr": 1e-3}),
              "adamw": ("AdamW", {"lr": 1e-3}),
              "rmsprop": ("RMSprop", {"lr": 1e-3}),
              "adagrad": ("Adagrad", {"lr": 1e-2})}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_common_args(parser)
    parser.add_argument("--backends", default="numpy,torch")
    return parser.parse_args(argv)


def _optimizer(lib, name):
    """``name``'s optimizer from ``lib`` (xpnet, or torch.optim with its parameters)."""
    kind, settings = OPTIMIZERS[name]
    return lambda *params: getattr(lib, kind)(*params, **settings)


def update_variants(backend, sizes) -> list[Variant]:
    import xpnet as xn
    from xpnet.nn.buffers import Buffer

    rng = np.random.default_rng(0)
    model = xn.mlp(sizes, seed=0, backend=backend)
    grads = Buffer.zeros(model.layout, backend)
    grads.flat[...] = backend.asarray(
        rng.standard_normal(model.layout.size).astype(backend.dtype_name) * 1e-3)
    kernels, xp = backend.kernels, backend.xp
    label = backend.name if backend.name != "torch" else f"torch-{backend.device.type}"
    out = []
    for name in OPTIMIZERS:
        flat_opt = _optimizer(xn, name)()
        flat_opt.bind(model, model.layout, backend)
        out.append(Variant(f"{label}-{name}-flat", lambda o=flat_opt: o.step_flat(
            model.parameters, grads, backend, kernels), backend.sync, label, "xpnet",
            {"lib": label, "optimizer": name, "path": "flat"}))
        params = {k: xp.asarray(v, copy=True) for k, v in model.params.items()}
        per_grads = {k: xp.asarray(v, copy=True) for k, v in grads.arrays.items()}
        per_opt = _optimizer(xn, name)()
        out.append(Variant(f"{label}-{name}-per-parameter", lambda o=per_opt, p=params,
                           g=per_grads: o.step(p, g, xp, True, kernels=kernels),
                           backend.sync, label, "xpnet",
                           {"lib": label, "optimizer": name, "path": "per-parameter"}))
        if backend.name == "torch":
            out.append(_torch_optim_variant(backend, model, grads, name, label))
    return out


def _torch_optim_variant(backend, model, grads, name, label) -> Variant:
    """``torch.optim``'s update of separate tensors holding the same values and gradients."""
    import torch

    tensors = [torch.nn.Parameter(v.detach().clone()) for v in model.params.values()]
    for t, g in zip(tensors, grads.arrays.values(), strict=True):
        t.grad = g.detach().clone()
    opt = _optimizer(torch.optim, name)(tensors)
    return Variant(f"{label}-{name}-torch.optim", opt.step, backend.sync, label, "peer",
                   {"lib": label, "optimizer": name, "path": "torch.optim"})


def main(argv=None) -> int:
    args = parse_args(argv)
    threads = common.limit_threads(args.threads)
    from train_step import xpnet_backends

    backends, skipped = xpnet_backends(args.backends)
    backends = [be for be in backends if be.views]
    reps = args.reps or (3 if args.quick else 9)
    results, rows_md = {}, []
    for shape, sizes in SHAPES.items():
        variants = [v for be in backends for v in update_variants(be, sizes)]
        timing = common.time_interleaved(variants, reps=reps, warmup=2,
                                         target_s=0.002 if args.quick else 0.05)
        rows = []
        for v in variants:
            ref = next(w for w in variants if w.group == v.group and w.name.endswith("sgd-flat"))
            per_round = [a / b for a, b in zip(timing[v.name]["samples_s"],
                                               timing[ref.name]["samples_s"], strict=True)]
            row = {"variant": v.name, **v.info, **timing[v.name],
                   "vs_sgd_flat": statistics.median(per_round),
                   "vs_sgd_flat_range": [min(per_round), max(per_round)]}
            peer = _peer(variants, v)
            if peer is not None:  # the flat update against torch.optim's, round by round
                row["vs_torch_optim"] = statistics.median(
                    a / b for a, b in zip(timing[v.name]["samples_s"],
                                          timing[peer.name]["samples_s"], strict=True))
            rows.append(row)
            rows_md.append([f"{shape} {'-'.join(map(str, sizes))}", v.name,
                            common.fmt_time(row["median_s"]),
                            f"{row['vs_sgd_flat']:.2f}x ({min(per_round):.2f}-"
                            f"{max(per_round):.2f})",
                            common.fmt_ratio(row.get("vs_torch_optim"))])
            print(f"{shape:7s} {v.name:36s} {common.fmt_time(row['median_s']):>10s}  "
                  f"vs sgd flat {row['vs_sgd_flat']:.2f}x  "
                  f"vs torch.optim {common.fmt_ratio(row.get('vs_torch_optim'))}", flush=True)
        results[shape] = {"sizes": sizes, "rows": rows}
    facts = common.machine_facts()
    facts["thread_limits"] = threads
    command = "python bench/optimizer_update.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    payload = {"benchmark": "optimizer_update", "quick": args.quick,
               "command": command.strip(), "machine": facts, "skipped_backends": skipped,
               "shapes": results}
    md = (f"# optimizer_update\n\n`{command.strip()}`\n\n"
          + common.markdown_table(["shape", "variant", "median", "vs SGD flat (range)",
                                   "flat vs torch.optim"], rows_md)
          + "\n\n" + common.facts_markdown(facts))
    name = "optimizer_update_quick" if args.quick else "optimizer_update"
    path = common.write_results(name, payload, md, args.out)
    print(f"wrote {path}")
    return 0


def _peer(variants, v):
    """torch.optim's variant of ``v``'s optimizer, for xpnet's flat update on torch."""
    if v.info.get("path") != "flat":
        return None
    return next((w for w in variants if w.group == v.group and w.kind == "peer"
                 and w.info["optimizer"] == v.info["optimizer"]), None)


if __name__ == "__main__":
    sys.exit(main())
