"""Training-step time against width and batch size, per backend and device, with a plot.

    python bench/scaling.py           # writes bench/results/scaling.json, .md and .png
    python bench/scaling.py --quick   # seconds, for the smoke test

Model: a ``[w, w, 10]`` ReLU MLP (one hidden layer of width ``w`` on ``w`` inputs), SGD,
softmax cross-entropy, float32. Width sweep at batch 256; batch sweep at width 1024. At
each point the backends run interleaved (A B A B ...), median of the repetitions. The CPU
is capped (``--cpu-max-width``, ``--cpu-max-batch``) so a full run stays within a few
minutes on a 2-core machine; GPUs run every size. Where a GPU is present the report says
from which size on it beats the fastest CPU backend.
"""

from __future__ import annotations

import argparse
import sys

import common

WIDTHS = [128, 256, 512, 1024, 2048, 4096, 8192]
BATCHES = [16, 64, 256, 1024, 4096]
QUICK_WIDTHS, QUICK_BATCHES = [32, 64, 128], [16, 64]
WIDTH_BATCH, BATCH_WIDTH = 256, 1024
QUICK_WIDTH_BATCH, QUICK_BATCH_WIDTH = 32, 64


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_common_args(parser)
    parser.add_argument("--backends", default="numpy,torch,cupy")
    parser.add_argument("--cpu-max-width", type=int, default=4096)
    parser.add_argument("--cpu-max-batch", type=int, default=4096)
    parser.add_argument("--no-plot", action="store_true")
    return parser.parse_args(argv)


def sweep(axis, points, fixed, backends, args):
    """Median step time of every backend at each point of one axis."""
    import steps

    out = []
    for value in points:
        width, batch = (value, fixed) if axis == "width" else (fixed, value)
        cap_w, cap_b = args.cpu_max_width, args.cpu_max_batch
        chosen = [be for be in backends if be.is_gpu or (width <= cap_w and batch <= cap_b)]
        if not chosen:
            continue
        sizes = [width, width, 10]
        variants = [steps.xpnet_variant(be, sizes, batch) for be in chosen]
        timing = common.time_interleaved(variants, reps=args.reps or (5 if args.quick else 5),
                                         warmup=1, target_s=0.001 if args.quick else 0.05)
        for v in variants:
            out.append({"axis": axis, "width": width, "batch": batch, "variant": v.name,
                        "group": v.group, **timing[v.name]})
        print(f"   {axis}={value:5d} " + "  ".join(
            f"{v.name} {common.fmt_time(timing[v.name]['median_s'])}" for v in variants),
            flush=True)
    return out


def crossover(rows, axis):
    """The smallest size from which every larger size has a GPU variant beating all CPU ones."""
    points = sorted({r[axis] for r in rows if r["axis"] == axis})
    wins = {}
    for p in points:
        at = [r for r in rows if r["axis"] == axis and r[axis] == p]
        cpu = [r["median_s"] for r in at if r["group"] == "cpu"]
        gpu = [r["median_s"] for r in at if r["group"] == "cuda"]
        if cpu and gpu:
            wins[p] = min(gpu) < min(cpu)
    if not wins:
        return None
    from_here = None
    for p in sorted(wins, reverse=True):
        if not wins[p]:
            break
        from_here = p
    return from_here


def plot(rows, path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, axis, title in ((axes[0], "width", f"width (batch {rows[0]['batch']})"),
                            (axes[1], "batch", "batch size")):
        sel = [r for r in rows if r["axis"] == axis]
        for name in dict.fromkeys(r["variant"] for r in sel):
            pts = sorted((r[axis], r["median_s"] * 1e3) for r in sel if r["variant"] == name)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(title)
        ax.set_ylabel("median step time (ms)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("xpnet training step, [w, w, 10] ReLU MLP, float32")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    from train_step import xpnet_backends

    args = parse_args(argv)
    threads = common.limit_threads(args.threads)
    backends, skipped = xpnet_backends(args.backends)
    widths, batches = (QUICK_WIDTHS, QUICK_BATCHES) if args.quick else (WIDTHS, BATCHES)
    w_batch, b_width = ((QUICK_WIDTH_BATCH, QUICK_BATCH_WIDTH) if args.quick
                        else (WIDTH_BATCH, BATCH_WIDTH))
    print("-- width sweep", flush=True)
    rows = sweep("width", widths, w_batch, backends, args)
    print("-- batch sweep", flush=True)
    rows += sweep("batch", batches, b_width, backends, args)
    name = "scaling_quick" if args.quick else "scaling"
    out_dir = args.out or common.RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{name}.png"
    plotted = False if args.no_plot else plot(rows, png)
    cross = {"width": crossover(rows, "width"), "batch": crossover(rows, "batch")}
    facts = common.machine_facts()
    facts["thread_limits"] = threads
    command = ("python bench/scaling.py "
               + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    payload = {"benchmark": "scaling", "quick": args.quick, "command": command,
               "machine": facts, "model": "[w, w, 10] ReLU MLP, SGD, softmax CE, float32",
               "cpu_caps": {"width": args.cpu_max_width, "batch": args.cpu_max_batch},
               "skipped_backends": skipped, "gpu_beats_cpu_from": cross,
               "plot": png.name if plotted else None, "rows": rows}
    table = common.markdown_table(
        ["axis", "width", "batch", "variant", "median"],
        [[r["axis"], r["width"], r["batch"], r["variant"], common.fmt_time(r["median_s"])]
         for r in rows])
    note = ("no GPU in this run, so no crossover" if cross == {"width": None, "batch": None}
            else f"GPU beats the CPU from: {cross}")
    md = (f"# scaling\n\n`{command}`\n\nCPU capped at width {args.cpu_max_width} and batch "
          f"{args.cpu_max_batch}; {note}.\n\n" + (f"![scaling]({png.name})\n\n" if plotted else "")
          + table + "\n\n" + common.facts_markdown(facts))
    path = common.write_results(name, payload, md, args.out)
    print(md)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
