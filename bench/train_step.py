"""One training step (forward, backward, SGD; float32; softmax CE; ReLU) per shape and variant.

    python bench/train_step.py            # tiny, medium, large; writes bench/results/train_step.*
    python bench/train_step.py --quick    # seconds: small shapes, few repetitions
    python bench/train_step.py --tf32     # GPU: TF32 matmuls on for torch and cupy alike

Variants run interleaved in one process (A B C A B C ...): xpnet on every available backend
and device, PyTorch eager on the same device, a hand-written NumPy (CuPy) step, and the
GEMM-only lower bound of each library. The table gives each variant's median and its
ratio to its library's GEMM bound, to PyTorch eager on its device and to the hand step.
"""

from __future__ import annotations

import argparse
import os
import sys

import common

SHAPES = {
    "tiny": ([64, 128, 10], 64),
    "medium": ([784, 512, 512, 10], 256),
    "large": ([4096, 4096, 4096, 10], 1024),
}
QUICK_SHAPES = {
    "tiny": ([64, 128, 10], 64),
    "medium": ([784, 512, 512, 10], 256),
    "large-reduced": ([512, 512, 512, 10], 128),
}
SLOW_BACKENDS = {"jax": "large"}  # eager JAX dispatch is not a contender for the big shape


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_common_args(parser)
    parser.add_argument("--shapes", default=None,
                        help="comma-separated subset of " + ",".join(SHAPES))
    parser.add_argument("--backends", default="numpy,torch,jax,cupy",
                        help="xpnet backends to include when available (array_api_strict is a "
                             "conformance backend, not a speed one; add it here to time it); "
                             "torch:cuda or torch:cpu takes that device alone")
    parser.add_argument("--tf32", action="store_true", help="TF32 matmuls on GPU (both sides)")
    parser.add_argument("--name", default=None,
                        help="results file name under --out (default: train_step, with "
                             "_quick, _tf32, _ablate as the flags say)")
    parser.add_argument("--baseline", default=None, metavar="DIR",
                        help="also time an earlier xpnet found as DIR/xpnet_before (numpy and "
                             "torch-cpu), interleaved: the vs before column (bench/baseline.py)")
    parser.add_argument("--precision", default=None,
                        choices=["mixed-bfloat16", "mixed-float16"],
                        help="also time each backend that computes in it in this mixed "
                             "precision, beside torch eager under autocast")
    parser.add_argument("--ablate", action="store_true",
                        help="also time each xpnet backend with its fast paths off "
                             "(xpnet.backend.kernels.Portable), to show what they move")
    return parser.parse_args(argv)


def xpnet_backends(names: str) -> tuple[list, dict]:
    """Resolved xpnet backends (each device) and, for the rest, why they were skipped."""
    import xpnet as xn
    from xpnet.backend import BackendError

    wanted, skipped = [], {}
    for spec in names.split(","):
        name, _, only = spec.partition(":")  # "torch:cuda": that device alone
        devices = [only] if only else ["cpu", "cuda"] if name == "torch" else [None]
        for device in devices:
            try:
                wanted.append(xn.backend.get(name, device))
            except BackendError as exc:
                skipped[f"{name}:{device or 'default'}"] = str(exc)
    return wanted, skipped


def build_variants(sizes, batch, backends, shape_name, ablate=False, before=None,
                   precision=None):
    """Every variant for one shape, grouped by device."""
    import steps

    variants = []
    for be in backends:
        if SLOW_BACKENDS.get(be.name) == shape_name:
            continue
        variants.append(steps.xpnet_variant(be, sizes, batch))
        if before is not None and be.cheap_reads:
            variants.append(steps.before_variant(before, be, sizes, batch))
        if be.can_trace:
            variants.append(steps.xpnet_jit_variant(be, sizes, batch))
        if be.capture_refusal is None:  # the CUDA-graph rows (torch on CUDA)
            variants.append(steps.xpnet_variant(be, sizes, batch, graphs=True))
        if ablate:
            variants.append(steps.xpnet_variant(be, sizes, batch, portable=True))
        if precision is not None and precision.removeprefix("mixed-") in be.low_precision:
            variants.append(steps.xpnet_variant(be, sizes, batch, precision=precision))
        variants.append(steps.gemm_variant(be, sizes, batch))
    torch_backends = {be.device.type: be for be in backends if be.name == "torch"}
    for device, be in sorted(torch_backends.items()):
        variants.append(steps.torch_eager_variant(device, sizes, batch))
        if precision is not None and precision.removeprefix("mixed-") in be.low_precision:
            variants.append(steps.torch_eager_variant(device, sizes, batch,
                                                      precision.removeprefix("mixed-")))
    names = {be.name for be in backends}
    if "numpy" in names:
        import numpy as np

        variants.append(steps.hand_variant(np, sizes, batch))
    if "cupy" in names:
        import cupy as cp

        sync = cp.cuda.Device().synchronize
        variants.append(steps.hand_variant(cp, sizes, batch, sync, "cuda", "cupy"))
    return variants


def run_shape(name, sizes, batch, backends, reps, quick, ablate=False, before=None,
              precision=None):
    variants = build_variants(sizes, batch, backends, name, ablate, before, precision)
    timing = common.time_interleaved(variants, reps=reps, warmup=1 if quick else 3,
                                     target_s=0.002 if quick else 0.05)
    rat = common.ratios(variants, timing)
    rows = []
    for v in variants:
        row = {"variant": v.name, "kind": v.kind, "group": v.group, **timing[v.name], **rat[v.name]}
        rows.append(row)
    return {"sizes": sizes, "batch": batch, "rows": rows}


def to_markdown(results: dict, facts: dict, command: str) -> str:
    headers = ["shape", "variant", "median", "range", "vs GEMM bound", "vs torch eager",
               "vs hand step", "vs before"]
    rows = []
    for shape, res in results.items():
        label = f"{shape} {'-'.join(map(str, res['sizes']))} b{res['batch']}"
        for r in res["rows"]:
            spread = f"{common.fmt_time(r['min_s'])}-{common.fmt_time(r['max_s'])}"
            rows.append([label, r["variant"], common.fmt_time(r["median_s"]), spread,
                         common.fmt_ratio(r.get("vs_gemm")), common.fmt_ratio(r.get("vs_torch")),
                         common.fmt_ratio(r.get("vs_hand")),
                         common.fmt_ratio(r.get("vs_before"))])
    return (f"# train_step\n\n`{command}`\n\n" + common.markdown_table(headers, rows)
            + "\n\n" + common.facts_markdown(facts))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.tf32:
        os.environ["CUPY_TF32"] = "1"  # read by CuPy before its first matmul
    threads = common.limit_threads(args.threads)
    _torch_tf32(args.tf32)
    shapes = QUICK_SHAPES if args.quick else SHAPES
    if args.shapes:
        shapes = {k: v for k, v in {**SHAPES, **QUICK_SHAPES}.items()
                  if k in args.shapes.split(",")}
    reps = args.reps or 5 if args.quick else args.reps or 7
    backends, skipped = xpnet_backends(args.backends)
    import baseline

    before = baseline.load(args.baseline)
    results = {}
    for name, (sizes, batch) in shapes.items():
        print(f"-- {name} {sizes} batch {batch}", flush=True)
        results[name] = run_shape(name, sizes, batch, backends, reps, args.quick, args.ablate,
                                  before, args.precision)
        for r in results[name]["rows"]:
            print(f"   {r['variant']:22s} {common.fmt_time(r['median_s']):>10s}  "
                  f"gemm {common.fmt_ratio(r.get('vs_gemm')):>6s}  "
                  f"torch {common.fmt_ratio(r.get('vs_torch')):>6s}  "
                  f"hand {common.fmt_ratio(r.get('vs_hand')):>6s}  "
                  f"before {common.fmt_ratio(r.get('vs_before')):>6s}", flush=True)
    facts = common.machine_facts()
    facts["tf32"] = args.tf32
    facts["thread_limits"] = threads
    command = "python bench/train_step.py " + " ".join(argv if argv is not None else sys.argv[1:])
    payload = {"benchmark": "train_step", "quick": args.quick, "command": command.strip(),
               "machine": facts, "skipped_backends": skipped, "shapes": results}
    name = "train_step_quick" if args.quick else "train_step" + ("_tf32" if args.tf32 else "")
    name += "_ablate" if args.ablate else ""
    name += f"_{args.precision.replace('-', '_')}" if args.precision else ""
    name = args.name or name
    md = to_markdown(results, facts, command.strip())
    path = common.write_results(name, payload, md, args.out)
    print(md)
    print(f"wrote {path}")
    return 0


def _torch_tf32(on: bool) -> None:
    try:
        import torch

        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on
    except ImportError:
        pass


if __name__ == "__main__":
    sys.exit(main())
