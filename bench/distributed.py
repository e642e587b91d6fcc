"""Data-parallel throughput: xpnet ``fit(comm=...)`` over MPI against PyTorch DDP (gloo).

    python bench/distributed.py           # medium and large shapes, 1 and 2 ranks (4 where
                                          # the machine has 4 cores); bench/results/distributed.*
    python bench/distributed.py --quick   # seconds: the tiny shape, one round, few steps

Every measurement is a fresh job launched from here: ``mpiexec -n k`` for xpnet,
``python -m torch.distributed.run --nproc_per_node k`` for DDP (one plain process for k = 1),
one BLAS thread per rank. Every rank trains its contiguous rows of each global batch (the
batches of bench/train_step.py; SGD, softmax cross-entropy, float32, ReLU). The jobs run
interleaved, every variant once per round, ``--reps`` rounds, so a noisy neighbour hits
them alike. In a job, warm-up steps come first, then each step is timed on rank 0 (the
ranks move in lockstep through the all-reduce).

- xpnet trains through ``fit(comm=...)`` on NumPy; a step's time is the clock between two
  batches' ``on_batch_end``. Its communication time is the time spent inside the
  communicator's calls in the gradient hook (waiting for the slower rank included).
- DDP (``DistributedDataParallel``, default buckets) alternates synced steps with
  ``no_sync()`` steps in the same job; its exposed communication is the difference of their
  medians (DDP overlaps its all-reduce with backward in gloo's thread, so it cannot be
  timed from outside).
- Scaling efficiency ``t1 / (k * tk)`` is taken per round, each k-rank job against the same
  round's one-process job of its library, and reported as the median and range of rounds.
- The overlap experiment (``--no-overlap`` skips it): in one 2-rank job, steps alternate
  between the blocking hook (``GradientAllReduce``, one all-reduce after backward) and an
  overlapped one, where each Dense layer's gradient is sent with ``MPI.Iallreduce`` as soon
  as backward has produced it and waited for before the update. ``--async-progress`` runs
  the same job again with MPICH's progress thread (``MPIR_CVAR_ASYNC_PROGRESS=1``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import common
import numpy as np

SCRIPT = Path(__file__).resolve()
SHAPES = {  # bench/train_step.py's medium and large: (sizes, global batch, timed steps)
    "medium": ([784, 512, 512, 10], 256, 30),
    "large": ([4096, 4096, 4096, 10], 1024, 3),
}
QUICK_SHAPES = {"tiny": ([64, 128, 10], 64, 5)}
# steps before the clock (allocation, caches, the first collective's setup); one is enough
# for a step of a second, and keeps a full run near five minutes
WARMUP = {"medium": 3, "large": 1, "tiny": 2}
JOB_TIMEOUT_S = 900
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_common_args(parser)
    parser.add_argument("--shapes", default=None,
                        help="comma-separated subset of " + ",".join(SHAPES | QUICK_SHAPES))
    parser.add_argument("--ranks", default=None,
                        help="comma-separated process counts (default 1,2 and 4 where the "
                             "machine has 4 cores)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per job (default per shape: medium 30, large 3)")
    parser.add_argument("--libraries", default="xpnet,ddp",
                        help="comma-separated subset of xpnet,ddp")
    parser.add_argument("--no-overlap", action="store_true",
                        help="skip the overlapped all-reduce experiment")
    parser.add_argument("--async-progress", action="store_true",
                        help="also run the overlap experiment with MPICH's progress thread")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--shape", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ---------------------------------------------------------------- the jobs (one per rank)

def _global_data(sizes, batch, n_batches):
    """The same float32 inputs and labels on every rank: ``n_batches`` global batches."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n_batches * batch, sizes[0]), dtype=np.float32)
    return X, rng.integers(0, sizes[-1], n_batches * batch)


class TimedComm:
    """A communicator that adds up the seconds spent in its sums (the rest passes through)."""

    def __init__(self, comm):
        self._comm, self.seconds = comm, 0.0
        self.rank, self.size = comm.rank, comm.size

    def allreduce_(self, array, backend=None):
        t0 = time.perf_counter()
        out = self._comm.allreduce_(array, backend)
        self.seconds += time.perf_counter() - t0
        return out

    def allreduce_scalar(self, value):
        t0 = time.perf_counter()
        out = self._comm.allreduce_scalar(value)
        self.seconds += time.perf_counter() - t0
        return out

    def __getattr__(self, name):
        return getattr(self._comm, name)


def xpnet_job(sizes, batch, steps, warmup) -> dict:
    """``fit(comm=...)`` on this job's ranks: per-step seconds and communication seconds."""
    import xpnet as xn

    comm = TimedComm(xn.distributed.init())
    X, y = _global_data(sizes, batch, max(steps + 1, warmup))
    model = xn.mlp(sizes, activation="relu", seed=0)
    opt = xn.SGD(lr=0.01)
    warm = warmup * batch
    model.fit(X[:warm], y[:warm], loss="cross_entropy", optimizer=opt, batch_size=batch,
              shuffle=False, comm=comm)

    class Clock(xn.Callback):
        """Clock and communication seconds at each batch end. Steps are timed between two
        ends, so the first batch, which also absorbs the ranks' different starts, is not."""

        def __init__(self):
            self.marks: list = []

        def on_batch_end(self, batch_index, logs):
            self.marks.append((time.perf_counter(), comm.seconds))

    clock = Clock()
    model.fit(X, y, loss="cross_entropy", optimizer=opt, batch_size=batch, shuffle=False,
              comm=comm, callbacks=[clock])
    pairs = list(zip(clock.marks[:-1], clock.marks[1:], strict=True))
    return {"step_s": [b[0] - a[0] for a, b in pairs], "comm_s": [b[1] - a[1] for a, b in pairs],
            "rank": comm.rank, "size": comm.size}


class OverlappedAllReduce:
    """Experiment: each Dense layer's gradient, weighted by the shard's share, is sent
    (``Iallreduce`` in place on its slice of the flat gradient buffer) as soon as backward
    has produced it, while backward goes on with the layers before it; the gradient hook
    waits for every send and sums the loss. The same sums as ``GradientAllReduce``."""

    def __init__(self, comm, model, grads, backend):
        from mpi4py import MPI

        self.mpi, self.world = MPI, MPI.COMM_WORLD
        self.comm, self.backend, self.grads, self.share = comm, backend, grads, 1.0
        self.on, self.requests, self.seconds = False, [], 0.0
        self._forward = model.forward
        model.forward = self.forward  # the instance's forward hands out wrapped backprops
        self.slices = {}  # layer index -> (its gradient names, its slice of the flat buffer)
        for name, (lo, hi) in model.layout.offsets.items():
            i = int(name.split(".")[0])
            names, (start, _) = self.slices.get(i, ([], (lo, hi)))
            self.slices[i] = ([*names, name], (start, hi))

    def forward(self, *args, **kwargs):
        Y, backprops = self._forward(*args, **kwargs)
        if self.on and kwargs.get("training"):
            backprops = [self._sending(i, b) if i in self.slices else b
                         for i, b in enumerate(backprops)]
        return Y, backprops

    def _sending(self, i, backprop):
        names, (lo, hi) = self.slices[i]

        def back(dY, need_dX=True):
            dX, grads = backprop(dY, need_dX)
            views = {}
            for key, g in grads.items():
                view = views[key] = self.grads.arrays[f"{i}.{key}"]
                if g is not view:
                    view[...] = g
            part = self.grads.flat[lo:hi]
            part *= self.share
            self.requests.append(self.world.Iallreduce(self.mpi.IN_PLACE, part,
                                                       op=self.mpi.SUM))
            self.mpi.Request.Testall(self.requests)  # progress for the ones already sent
            return dX, views  # the views: backward must not copy over a buffer in flight

        return back

    def __call__(self, grads, step):
        t0 = time.perf_counter()
        self.mpi.Request.Waitall(self.requests)
        self.requests = []
        xp = self.backend.xp
        local = xp.reshape(xp.multiply(step.value, self.share), (1,))
        step.value = xp.reshape(self.comm.allreduce_(local, self.backend), ())
        self.seconds += time.perf_counter() - t0
        return grads


def overlap_job(sizes, batch, steps, warmup) -> dict:
    """Blocking and overlapped all-reduce, alternating step by step in one job."""
    import xpnet as xn
    from xpnet.distributed import GradientAllReduce, shard

    comm = TimedComm(xn.distributed.init())
    X, y = _global_data(sizes, batch, 1)
    lo, hi = shard(0, batch, comm.rank, comm.size)
    model = xn.mlp(sizes, activation="relu", seed=0)
    backend = model.backend
    Xd = model.device_inputs(X[lo:hi])
    Td = model.device_targets(y[lo:hi], "cross_entropy", Xd)
    step = xn.Step(model, "cross_entropy", xn.SGD(lr=0.01))
    if step.grads is None:
        raise RuntimeError("the overlap experiment needs a flat gradient buffer (NumPy)")
    blocking = GradientAllReduce(comm, backend)
    overlapped = OverlappedAllReduce(comm, model, step.grads, backend)
    blocking.share = overlapped.share = (hi - lo) / batch
    out: dict = {"blocking_s": [], "overlap_s": [], "blocking_comm_s": [],
                 "overlap_wait_s": []}
    for i in range(2 * (warmup + steps)):
        over = i % 2 == 1
        overlapped.on = over
        step.grad_hooks[:] = [overlapped if over else blocking]
        before = overlapped.seconds if over else comm.seconds
        t0 = time.perf_counter()
        step(Xd, Td)
        took = time.perf_counter() - t0
        if i >= 2 * warmup:
            out["overlap_s" if over else "blocking_s"].append(took)
            spent = (overlapped.seconds if over else comm.seconds) - before
            out["overlap_wait_s" if over else "blocking_comm_s"].append(spent)
    out.update(rank=comm.rank, size=comm.size,
               async_progress=os.environ.get("MPIR_CVAR_ASYNC_PROGRESS"))
    return out


def ddp_job(sizes, batch, steps, warmup) -> dict:
    """PyTorch DDP (gloo) on this job's ranks, or the plain model in one process: synced
    steps alternating with ``no_sync()`` steps (the latter only with more than one rank)."""
    import torch
    import torch.distributed as dist
    from torch import nn

    torch.set_num_threads(1)
    size, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if size > 1:
        dist.init_process_group("gloo")
    import steps as step_defs  # the same weights as bench/train_step.py's torch variant

    layers = []
    for i, (W, b) in enumerate(step_defs.host_weights(sizes)):
        lin = nn.Linear(W.shape[0], W.shape[1])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W.T.copy()))
            lin.bias.copy_(torch.from_numpy(b))
        layers += [lin, nn.ReLU()] if i < len(sizes) - 2 else [lin]
    net = nn.Sequential(*layers)
    model = nn.parallel.DistributedDataParallel(net) if size > 1 else net
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()
    X, y = _global_data(sizes, batch, 1)
    lo, hi = rank * batch // size, (rank + 1) * batch // size  # equal shards on these shapes
    Xd, yd = torch.from_numpy(X[lo:hi]), torch.from_numpy(y[lo:hi])

    def one(synced: bool) -> float:
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with nullcontext() if synced or size == 1 else model.no_sync():
            loss_fn(model(Xd), yd).backward()
        opt.step()
        return time.perf_counter() - t0

    for _ in range(warmup):
        one(True)
    if size > 1:
        dist.barrier()
    out: dict = {"step_s": [], "no_sync_s": [], "rank": rank, "size": size}
    for _ in range(steps):
        out["step_s"].append(one(True))
        if size > 1:
            out["no_sync_s"].append(one(False))
    if size > 1:
        dist.barrier()
        dist.destroy_process_group()
    return out


JOBS = {"xpnet": xpnet_job, "overlap": overlap_job, "ddp": ddp_job}


def run_worker(args) -> int:
    sizes, batch, default_steps = (SHAPES | QUICK_SHAPES)[args.shape]
    result = JOBS[args.worker](sizes, batch, args.steps or default_steps, WARMUP[args.shape])
    result["threadpools"] = _threadpools()
    if result["rank"] == 0:
        args.result.write_text(json.dumps(result))
    return 0


# ------------------------------------------------------------- the launcher (this process)

def mpiexec() -> str | None:
    """mpiexec of this interpreter's environment (the mpich wheel puts it beside python)."""
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def engines() -> tuple[dict, dict]:
    """The launch command prefix of each library for k ranks, and why any is missing."""
    found, missing = {}, {}
    runner = mpiexec()
    if importlib.util.find_spec("mpi4py") is None:
        missing["xpnet"] = "mpi4py is not installed (pip install 'xpnet[mpi]')"
    elif runner is None:
        missing["xpnet"] = "no mpiexec on PATH or beside the interpreter (pip install mpich)"
    else:
        found["xpnet"] = lambda k: [runner, "-n", str(k), sys.executable]
    if importlib.util.find_spec("torch") is None:
        missing["ddp"] = "torch is not installed"
    else:
        found["ddp"] = lambda k: ([sys.executable] if k == 1 else
                                  [sys.executable, "-m", "torch.distributed.run",
                                   "--standalone", f"--nproc_per_node={k}"])
    return found, missing


def launch(prefix, worker, shape, steps, tmp: Path, env_extra=None) -> dict:
    """One job; its rank 0's measurements. A failed job stops the benchmark with its output."""
    result = tmp / f"{worker}-{shape}-{time.monotonic_ns()}.json"
    cmd = [*prefix, str(SCRIPT), "--worker", worker, "--shape", shape, "--result", str(result)]
    if steps:
        cmd += ["--steps", str(steps)]
    env = {**os.environ, **ONE_THREAD, **(env_extra or {})}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    if done.returncode != 0 or not result.exists():
        raise RuntimeError(f"job failed ({done.returncode}): {' '.join(cmd)}\n"
                           f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(result.read_text())


def plan(shapes, ranks, found, overlap, async_progress) -> list[tuple]:
    """The jobs of one round: (shape, variant, library, ranks, worker, extra env)."""
    jobs = []
    for shape in shapes:
        for k in ranks:
            if "xpnet" in found:
                jobs.append((shape, "xpnet", "xpnet", k, "xpnet", None))
            if "ddp" in found:
                jobs.append((shape, "torch-ddp", "ddp", k, "ddp", None))
        if overlap and "xpnet" in found and 2 in ranks:
            jobs.append((shape, "overlap", "xpnet", 2, "overlap", None))
            if async_progress:
                jobs.append((shape, "overlap-async", "xpnet", 2, "overlap",
                             {"MPIR_CVAR_ASYNC_PROGRESS": "1"}))
    return jobs


def summarise(shape, variant, k, rounds: list[dict], ones: list[dict] | None) -> dict:
    """One row: median step over rounds (each round's job median), efficiency per round."""
    batch = (SHAPES | QUICK_SHAPES)[shape][1]
    per_round = [statistics.median(r["step_s"]) for r in rounds]
    row = {"shape": shape, "variant": variant, "ranks": k, "batch": batch,
           "median_s": statistics.median(per_round), "min_s": min(per_round),
           "max_s": max(per_round), "rounds_s": per_round}
    row["samples_per_s"] = batch / row["median_s"]
    if variant == "xpnet":
        row["comm_s"] = statistics.median(statistics.median(r["comm_s"]) for r in rounds)
    elif k > 1:  # DDP: what the synced step costs over a step without communication
        row["comm_s"] = statistics.median(
            statistics.median(r["step_s"]) - statistics.median(r["no_sync_s"]) for r in rounds)
        row["no_sync_s"] = statistics.median(statistics.median(r["no_sync_s"]) for r in rounds)
    else:
        row["comm_s"] = 0.0
    if ones is not None:
        t1 = [statistics.median(o["step_s"]) for o in ones]
        eff = [a / (k * t) for a, t in zip(t1, per_round, strict=True)]
        row.update(efficiency=statistics.median(eff), efficiency_min=min(eff),
                   efficiency_max=max(eff), efficiency_rounds=eff)
        # the same with the communication taken out: what the machine gives k ranks'
        # compute (below 1: the ranks did not get k cores' worth of GEMM)
        row["efficiency_without_comm"] = statistics.median(t1) / (
            k * (row["median_s"] - row["comm_s"]))
    return row


def summarise_overlap(shape, variant, rounds: list[dict]) -> dict:
    """Overlapped against blocking, paired step by step within each job."""
    ratios = [statistics.median(o / b for o, b in zip(r["overlap_s"], r["blocking_s"],
                                                      strict=True)) for r in rounds]
    med = lambda key: statistics.median(statistics.median(r[key]) for r in rounds)  # noqa: E731
    return {"shape": shape, "variant": variant, "ranks": 2,
            "async_progress": rounds[0]["async_progress"], "blocking_s": med("blocking_s"),
            "overlap_s": med("overlap_s"), "blocking_comm_s": med("blocking_comm_s"),
            "overlap_wait_s": med("overlap_wait_s"), "overlap_vs_blocking": statistics.median(
                ratios), "ratio_min": min(ratios), "ratio_max": max(ratios)}


def goals(rows) -> dict:
    """The issue's targets: >= 0.85 at 2 ranks on the large shape, and xpnet's efficiency at
    least DDP's at every measured shape and rank count."""
    out = {}
    eff = {(r["shape"], r["variant"], r["ranks"]): r.get("efficiency") for r in rows}
    if ("large", "xpnet", 2) in eff:
        out["large_2_ranks_efficiency_at_least_0.85"] = eff[("large", "xpnet", 2)] >= 0.85
    for (shape, variant, k), value in eff.items():
        theirs = eff.get((shape, "torch-ddp", k))
        if variant == "xpnet" and k > 1 and theirs is not None:
            out[f"{shape}_{k}_ranks_at_least_ddp"] = value >= theirs
    return out


def to_markdown(payload) -> str:
    rows = payload["rows"]
    table = common.markdown_table(
        ["shape", "variant", "ranks", "step (median)", "range", "samples/s",
         "efficiency t1/(k tk)", "range", "communication / step",
         "efficiency without communication"],
        [[_label(r["shape"]), r["variant"], r["ranks"], common.fmt_time(r["median_s"]),
          f"{common.fmt_time(r['min_s'])}-{common.fmt_time(r['max_s'])}",
          f"{r['samples_per_s']:.0f}", _f2(r.get("efficiency")),
          "" if "efficiency_min" not in r else
          f"{r['efficiency_min']:.2f}-{r['efficiency_max']:.2f}",
          common.fmt_time(r["comm_s"]) if r["comm_s"] >= 0 else
          f"-{common.fmt_time(-r['comm_s'])}", _f2(r.get("efficiency_without_comm"))]
         for r in rows])
    parts = [f"# distributed\n\n`{payload['command']}`\n", table]
    if payload["overlap"]:
        parts.append("## Overlapping the all-reduce with backward (2 ranks, NumPy)\n\n"
                     "Steps alternate in one job between the blocking hook and the overlapped "
                     "one (`Iallreduce` per Dense layer as backward produces it). The ratio is "
                     "the median of the paired per-step ratios, its range over rounds.\n")
        parts.append(common.markdown_table(
            ["shape", "MPICH progress thread", "blocking step", "overlapped step",
             "overlapped / blocking", "range", "blocking: in all-reduce",
             "overlapped: waiting"],
            [[_label(o["shape"]), "on" if o["async_progress"] else "off",
              common.fmt_time(o["blocking_s"]), common.fmt_time(o["overlap_s"]),
              f"{o['overlap_vs_blocking']:.2f}x",
              f"{o['ratio_min']:.2f}-{o['ratio_max']:.2f}",
              common.fmt_time(o["blocking_comm_s"]), common.fmt_time(o["overlap_wait_s"])]
             for o in payload["overlap"]]))
    if payload["goals"]:
        parts.append("Goals: " + ", ".join(f"{k}: {'met' if v else 'not met'}"
                                           for k, v in payload["goals"].items()))
    for name, why in payload["skipped"].items():
        parts.append(f"Skipped {name}: {why}")
    facts = payload["machine"]
    parts.append(f"Load average (1, 5, 15 min) at the start {facts.get('load_average_at_start')}"
                 f", at the end {facts.get('load_average')}: with more runnable work than "
                 "cores, the ranks of a job wait for each other in every all-reduce.")
    parts.append(f"Rounds: {payload['reps']}; one BLAS thread per rank; communication: xpnet "
                 "the time inside the hook's all-reduce calls, DDP its synced step minus its "
                 "`no_sync()` step.\n\n" + common.facts_markdown(payload["machine"]))
    return "\n\n".join(parts)


def _label(shape: str) -> str:
    sizes, batch, _ = (SHAPES | QUICK_SHAPES)[shape]
    return f"{shape} {'-'.join(map(str, sizes))} b{batch}"


def _f2(x) -> str:
    return "" if x is None else f"{x:.2f}"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        return run_worker(args)
    common.limit_threads(1)  # this process only launches, but its facts should say 1 thread
    load_at_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    shapes = QUICK_SHAPES if args.quick else SHAPES
    if args.shapes:
        shapes = {k: v for k, v in (SHAPES | QUICK_SHAPES).items() if k in args.shapes.split(",")}
        if not shapes:
            raise SystemExit(f"--shapes: none of {args.shapes!r} is one of "
                             f"{','.join(SHAPES | QUICK_SHAPES)}")
    ranks = ([int(k) for k in args.ranks.split(",")] if args.ranks else
             [1, 2, 4] if (os.cpu_count() or 1) >= 4 and not args.quick else [1, 2])
    if 1 not in ranks:
        raise SystemExit("--ranks must include 1: the efficiency is taken against one process")
    reps = args.reps or (1 if args.quick else 3)
    found, skipped = engines()
    wanted = args.libraries.split(",")
    if not set(wanted) <= {"xpnet", "ddp"}:
        raise SystemExit(f"--libraries: expected a subset of xpnet,ddp; got {args.libraries!r}")
    found = {lib: prefix for lib, prefix in found.items() if lib in wanted}
    jobs = plan(shapes, ranks, found, not args.no_overlap, args.async_progress)
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(reps):
            for shape, variant, lib, k, worker, env in jobs:
                t0 = time.perf_counter()
                out = launch(found[lib](k), worker, shape, args.steps, Path(tmp), env)
                results.setdefault((shape, variant, k), []).append(out)
                print(f"   round {r + 1}/{reps} {shape:8s} {variant:14s} {k} ranks  "
                      f"{time.perf_counter() - t0:5.1f} s job", flush=True)
    rows, overlap = [], []
    for (shape, variant, k), rounds in results.items():
        if variant.startswith("overlap"):
            overlap.append(summarise_overlap(shape, variant, rounds))
        else:
            rows.append(summarise(shape, variant, k, rounds, results.get((shape, variant, 1))))
    facts = common.machine_facts()
    facts["thread_limits"] = {"threads": 1, **ONE_THREAD}  # the jobs' environment
    facts["job_threadpools"] = next(iter(results.values()))[0]["threadpools"] if results else []
    facts["mpi"] = _mpi_version()
    facts["load_average_at_start"] = load_at_start  # other work on the machine skews ranks
    command = ("python bench/distributed.py "
               + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    payload = {"benchmark": "distributed", "quick": args.quick, "command": command,
               "reps": reps, "ranks": ranks, "machine": facts, "skipped": skipped,
               "rows": rows, "overlap": overlap, "goals": goals(rows)}
    md = to_markdown(payload)
    path = common.write_results("distributed_quick" if args.quick else "distributed",
                                payload, md, args.out)
    print(md)
    print(f"wrote {path}")
    return 0


def _threadpools() -> list:
    """The BLAS/OpenMP pools of this job and their thread counts (what the rank ran with)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [{k: p.get(k) for k in ("internal_api", "num_threads")} for p in threadpool_info()]


def _mpi_version() -> str | None:
    try:
        from mpi4py import MPI

        return MPI.Get_library_version().strip().splitlines()[0]
    except Exception:  # no mpi4py or no MPI library: the xpnet rows are skipped anyway
        return None


if __name__ == "__main__":
    sys.exit(main())
