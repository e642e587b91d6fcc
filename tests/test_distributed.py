"""Data-parallel fit over MPI equals single-process fit with the same global batch.

Each case launches ``mpiexec -n N python tests/mpi_train.py``, which trains in float64
and writes every rank's parameters; they must match a single-process run to 1e-10 and be
bit-identical across ranks. Skipped, with the reason, where mpiexec or mpi4py is missing.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import xpnet as xn
from xpnet.backend.table import to_numpy
from xpnet.distributed import shard

HERE = pathlib.Path(__file__).resolve().parent
SCRIPT = HERE / "mpi_train.py"
TIMEOUT = 120


def _mpiexec() -> str | None:
    """mpiexec of this interpreter's environment (the mpich wheel puts it beside python)."""
    beside = pathlib.Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def _skip_reason() -> str | None:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install 'xpnet[mpi]')"
    if _mpiexec() is None:
        return "no mpiexec on PATH or beside the interpreter (pip install mpich)"
    return None


needs_mpi = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))


def _launch(ranks: int, out, *args, timeout=TIMEOUT, script=SCRIPT):
    env = dict(os.environ, PYTHONPATH=str(HERE.parent), OMP_NUM_THREADS="1")
    return subprocess.run([_mpiexec(), "-n", str(ranks), sys.executable, str(script), str(out),
                           *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=timeout)


def _script(name: str):
    """One of the mpiexec scripts beside this file, imported to train in this process."""
    sys.path.insert(0, str(HERE))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(HERE))


def _reference(opt, batch, dropout, backend):
    net, history = _script("mpi_train").train(None, opt, batch, dropout, backend)
    return {k: to_numpy(v) for k, v in net.params.items()}, history.history["loss"]


CASES = [  # ranks, optimizer, global batch (23 rows: a short last batch), dropout
    (2, "sgd", 7, False), (2, "adam", 5, True), (3, "sgd", 7, True),
    (3, "adam", 10, False), (3, "adam", 7, True),
]


def _assert_one_process_answer(files, opt, batch, dropout):
    """Every rank's parameters bit-identical, and equal to one process's to 1e-10."""
    params, losses = _reference(opt, batch, dropout, "numpy")
    for name, want in params.items():
        np.testing.assert_allclose(files[0][name], want, rtol=1e-10, atol=1e-12)
        for other in files[1:]:
            assert np.array_equal(other[name], files[0][name]), f"ranks differ on {name}"
    np.testing.assert_allclose(files[0]["loss"], losses, rtol=1e-10)


@needs_mpi
@pytest.mark.parametrize("ranks, opt, batch, dropout", CASES)
def test_many_processes_train_as_one(tmp_path, ranks, opt, batch, dropout):
    done = _launch(ranks, tmp_path, opt, batch, int(dropout), "numpy")
    assert done.returncode == 0, done.stderr
    files = [np.load(tmp_path / f"rank{r}.npz") for r in range(ranks)]
    _assert_one_process_answer(files, opt, batch, dropout)


@needs_mpi
@pytest.mark.parametrize("backend, library", [
    ("torch", "torch"),  # flat gradients in a tensor: summed through a host copy
    ("array_api_strict", "array_api_strict"),  # one array per parameter
    pytest.param("jax", "jax", marks=pytest.mark.slow),  # immutable: the sums are new arrays
])
def test_many_processes_on_other_backends(tmp_path, monkeypatch, backend, library):
    pytest.importorskip(library)
    monkeypatch.setenv("JAX_ENABLE_X64", "1")
    done = _launch(2, tmp_path, "adam", 7, 1, backend)
    assert done.returncode == 0, done.stderr
    params, _ = _reference("adam", 7, True, backend)
    for name, want in params.items():
        np.testing.assert_allclose(np.load(tmp_path / "rank1.npz")[name], want, rtol=1e-10,
                                   atol=1e-12)


@needs_mpi
@pytest.mark.parametrize("lr, diverges", [
    (0.05, False),
    (3e5, True),  # a non-finite val_loss ends training after an epoch (TerminateOnNaN)
    (1e6, True),  # the divergence guard stops a step (fewer epochs)
])
def test_ranks_agree_on_logs_and_stopping_and_only_rank_0_writes(tmp_path, lr, diverges):
    done = _launch(3, tmp_path, lr, script=HERE / "mpi_callbacks.py")
    assert done.returncode == 0, done.stderr
    single = tmp_path / "single"
    single.mkdir()
    alone = _script("mpi_callbacks").train(None, str(single), lr, "single")
    epochs = len(alone.epoch)  # where one process stops: the ranks must stop there too
    assert (epochs < 4) == diverges
    records = [json.loads((tmp_path / f"history{r}.json").read_text()) for r in range(3)]
    assert records[1] == records[0] and records[2] == records[0]
    assert records[0]["epochs"] == list(range(epochs))
    assert len(done.stdout.strip().splitlines()) == epochs  # rank 0 prints, alone
    written = sorted(p.name for p in tmp_path.iterdir()
                     if not p.name.startswith("history") and p.name != "single")
    assert written == [*(f"ckpt-rank0-{e}.npz" for e in range(epochs)), "log-rank0.csv"]
    for key, values in alone.history.items():
        np.testing.assert_allclose(records[0]["history"][key], values, rtol=1e-10)


COLLECTIVES = """
import json, sys
import numpy as np
import xpnet as xn
comm = xn.distributed.init()
flat = np.arange(6.0) + comm.rank
strided = np.arange(6.0).reshape(2, 3).T  # not contiguous: through a host copy
frozen = np.ones(2)
frozen.flags.writeable = False
comm.allreduce_(flat)
comm.allreduce_(strided)
json.dump({"flat": flat.tolist(), "strided": strided.tolist(),
           "frozen": comm.allreduce_(frozen).tolist(), "frozen_kept": frozen.tolist(),
           "scalar": comm.allreduce_scalar(comm.rank + 0.5),
           "bcast": comm.bcast({"from": comm.rank}), "size": comm.size},
          open(f"{sys.argv[1]}/rank{comm.rank}.json", "w"))
comm.barrier()
"""


@needs_mpi
def test_the_collectives(tmp_path):
    script = tmp_path / "collectives.py"
    script.write_text(COLLECTIVES)
    done = _launch(3, tmp_path, script=script)
    assert done.returncode == 0, done.stderr
    base = np.arange(6.0)
    for rank in range(3):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["flat"] == (3 * base + 3).tolist()
        assert got["strided"] == (3 * base.reshape(2, 3).T).tolist()
        assert got["frozen"] == [3.0, 3.0] and got["frozen_kept"] == [1.0, 1.0]
        assert got["scalar"] == 4.5 and got["bcast"] == {"from": 0} and got["size"] == 3


@needs_mpi
def test_an_error_on_one_rank_ends_the_job(tmp_path):
    began = time.monotonic()
    done = _launch(2, tmp_path, "sgd", 7, 0, "numpy", "raise", timeout=60)
    assert done.returncode != 0
    assert "rank 1 fails on purpose" in done.stderr
    assert time.monotonic() - began < 30


def test_a_single_process_communicator_is_no_communicator():
    X = np.random.default_rng(0).normal(size=(19, 4))
    y = X[:, :2] * 2.0
    runs = []
    for comm in (None, xn.distributed.local()):
        net = xn.Sequential(xn.Dense(4, 6), xn.ReLU(), xn.Dropout(0.2), xn.Dense(6, 2),
                            seed=0, backend="numpy", dtype="float64")
        net.fit(X, y, optimizer="adam", lr=0.01, epochs=2, batch_size=5, comm=comm)
        runs.append(net.params)
    for name in runs[0]:
        assert np.array_equal(runs[0][name], runs[1][name])


@pytest.mark.parametrize("rows, size", [(7, 3), (2, 3), (10, 2), (1, 1), (0, 2)])
def test_shards_split_as_array_split(rows, size):
    want = [(int(part[0]), int(part[-1]) + 1) if len(part) else None
            for part in np.array_split(np.arange(4, 4 + rows), size)]
    got = [shard(4, 4 + rows, rank, size) for rank in range(size)]
    assert [g if g[0] != g[1] else None for g in got] == want


def test_importing_xpnet_does_not_import_mpi():
    code = "import sys, xpnet; xpnet.distributed.local(); print('mpi4py' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(HERE.parent)), check=True)
    assert done.stdout.strip() == "False"


def test_a_missing_mpi4py_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(ImportError, match=r"pip install 'xpnet\[mpi\]'"):
        xn.distributed.init()


def test_a_missing_mpiexec_skips(monkeypatch):
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    monkeypatch.setenv("PATH", "")
    assert _mpiexec() is None
    reason = _skip_reason()
    assert reason is not None and ("mpiexec" in reason or "mpi4py" in reason)


def test_fit_refuses_what_is_not_a_communicator():
    net = xn.Sequential(xn.Dense(2, 1), backend="numpy")
    with pytest.raises(TypeError, match="communicator"):
        net.fit(np.zeros((4, 2)), np.zeros((4, 1)), comm=object())


# ----------------------------------------------------------------- the torch engine


def _torch_skip_reason() -> str | None:
    try:
        import torch.distributed as dist
    except ImportError:
        return "torch is not installed (pip install 'xpnet[torch]')"
    return None if dist.is_available() else "this torch build has no torch.distributed"


needs_torch_distributed = pytest.mark.skipif(_torch_skip_reason() is not None,
                                             reason=str(_torch_skip_reason()))


def _torchrun(ranks: int, out, *args, timeout=TIMEOUT):
    """``torchrun --standalone`` (a free port: tests may run side by side)."""
    env = dict(os.environ, PYTHONPATH=str(HERE.parent), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={ranks}", str(HERE / "torch_train.py"),
                           str(out), *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def torch_launch(tmp_path_factory):
    """One torchrun launch per rank count trains all of its CASES (startup costs ~7 s)."""
    done = {}

    def launched(ranks: int):
        if ranks not in done:
            out = tmp_path_factory.mktemp(f"torch{ranks}")
            cases = [case for case in CASES if case[0] == ranks]
            specs = [f"{opt}:{batch}:{int(dropout)}" for _, opt, batch, dropout in cases]
            done[ranks] = (_torchrun(ranks, out, *specs), out, cases)
        return done[ranks]

    return launched


@needs_torch_distributed
@pytest.mark.parametrize("ranks, opt, batch, dropout", CASES)
def test_the_torch_engine_trains_as_one_process(torch_launch, ranks, opt, batch, dropout):
    done, out, cases = torch_launch(ranks)
    assert done.returncode == 0, done.stderr
    case = cases.index((ranks, opt, batch, dropout))
    files = [np.load(out / f"case{case}-rank{r}.npz") for r in range(ranks)]
    _assert_one_process_answer(files, opt, batch, dropout)


@needs_torch_distributed
@pytest.mark.parametrize("ranks", [2, 3])
def test_the_torch_engine_collectives(torch_launch, ranks):
    done, out, _ = torch_launch(ranks)
    assert done.returncode == 0, done.stderr
    base, total = np.arange(6.0), sum(range(ranks))
    for rank in range(ranks):
        got = json.loads((out / f"collectives{rank}.json").read_text())
        assert got["flat"] == (ranks * base + total).tolist()
        assert got["strided"] == (ranks * base.reshape(2, 3).T).tolist()
        assert got["frozen"] == [ranks] * 2 and got["frozen_kept"] == [1.0, 1.0]
        assert got["tensor"] == (ranks * np.arange(4.0) + total).tolist()
        assert got["tensor_in_place"] and got["engine"] == "torch"
        assert got["scalar"] == total + 0.5 * ranks and got["bcast"] == {"from": 0}
        assert got["size"] == ranks


@needs_torch_distributed
def test_an_error_on_one_torch_rank_ends_the_job(tmp_path):
    began = time.monotonic()
    done = _torchrun(2, tmp_path, "raise", timeout=90)
    assert done.returncode != 0
    assert "rank 1 fails on purpose" in done.stderr
    assert time.monotonic() - began < 60  # startup included: a hang would last the timeout


def test_the_torch_engine_outside_torchrun_says_how_to_launch(monkeypatch):
    pytest.importorskip("torch.distributed")
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT not "
                                           "set; launch with torchrun"):
        xn.distributed.init(engine="torch")


def test_a_missing_torch_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"pip install 'xpnet\[torch\]'"):
        xn.distributed.init(engine="torch")


def test_an_unknown_engine_lists_the_engines():
    with pytest.raises(ValueError, match=r"engine must be one of \('mpi', 'nccl', 'torch'\); "
                                         r"got 'gloo'"):
        xn.distributed.init(engine="gloo")


class _FakeWorld(xn.distributed.Communicator):
    """A communicator that claims ``size`` processes (nothing is ever sent)."""

    def __init__(self, size):
        self.size = size


@pytest.mark.parametrize("size, batch, rows", [(1, 10, 10), (4, 10, 3), (3, 10, 4),
                                               (2, None, 12)])
def test_the_memory_estimate_counts_one_shard_of_the_batch(monkeypatch, size, batch, rows):
    from xpnet.train import loop

    seen = []

    class Estimated(Exception):
        pass

    def check_fits(backend, widths, batch_size, *args, **kwargs):
        seen.append(batch_size)
        raise Estimated

    monkeypatch.setattr(loop, "check_fits", check_fits)
    net = xn.Sequential(xn.Dense(3, 4), xn.ReLU(), xn.Dense(4, 1), backend="numpy")
    with pytest.raises(Estimated):
        net.fit(np.zeros((24, 3)), np.zeros((24, 1)), batch_size=batch, comm=_FakeWorld(size))
    assert seen == [rows]


# ------------------------------------------------------- Ctrl-C and timeouts (MPICH hydra)


def _start_forever(out, what: str, **env):
    """``mpiexec -n 2 tests/mpi_stop.py`` in its own session (as a terminal's foreground
    job: Ctrl-C there is SIGINT to the whole group), and once both ranks are under way."""
    env = dict(os.environ, PYTHONPATH=str(HERE.parent), OMP_NUM_THREADS="1", **env)
    job = subprocess.Popen([_mpiexec(), "-n", "2", sys.executable, str(HERE / "mpi_stop.py"),
                            str(out), what], env=env, start_new_session=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    began = time.monotonic()
    while not all((out / f"ready{rank}").exists() for rank in range(2)):
        if job.poll() is not None or time.monotonic() - began > TIMEOUT:
            os.killpg(job.pid, signal.SIGKILL)
            pytest.fail(f"the job did not start: {job.communicate()[1]}")
        time.sleep(0.05)
    return job


def _ends_within(job, seconds: float) -> tuple[int, str]:
    try:
        out, err = job.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        job.communicate()
        pytest.fail(f"the job still ran {seconds} s later")
    return job.returncode, out + err  # hydra reports on stdout


@needs_mpi
@pytest.mark.parametrize("target", ["the job", "one rank"])
def test_ctrl_c_ends_the_whole_job(tmp_path, target):
    job = _start_forever(tmp_path, "train")
    time.sleep(0.5)  # in the middle of training
    if target == "the job":
        os.killpg(job.pid, signal.SIGINT)
    else:  # rank 1 stops at its next step boundary; its excepthook aborts the rest
        os.kill(int((tmp_path / "ready1").read_text()), signal.SIGINT)
    code, said = _ends_within(job, 20)
    assert code != 0
    assert "KeyboardInterrupt" in said


@needs_mpi
def test_mpiexec_timeout_ends_a_hung_job(tmp_path):
    job = _start_forever(tmp_path, "hang", MPIEXEC_TIMEOUT="5")
    code, said = _ends_within(job, 30)
    assert code != 0
    assert "TIMED OUT" in said  # hydra's own word for it, not a crash


# ------------------------------------------------------------------ the nccl engine


def _gpus() -> int:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount()
    except Exception:  # no cupy, no driver: the gpu marker has skipped these already
        return 0


@needs_mpi
@pytest.mark.gpu
def test_the_nccl_engine_sums_device_arrays_in_place(tmp_path):
    pytest.importorskip("cupy.cuda.nccl")
    ranks = min(2, _gpus())  # one GPU per process: NCCL refuses two ranks on one GPU
    done = _launch(ranks, tmp_path, script=HERE / "nccl_train.py")
    assert done.returncode == 0, done.stderr
    for rank in range(ranks):
        got = json.loads((tmp_path / f"collectives{rank}.json").read_text())
        assert got["device"] == (ranks * np.arange(4.0) + sum(range(ranks))).tolist()
        assert got["in_place"] and got["engine"] == "nccl" and got["gpu"] == rank
        assert got["ints"] == (ranks * np.arange(3)).tolist()
        assert got["host"] == (ranks * np.arange(2.0)).tolist()
        assert got["scalar"] == 1.5 * ranks and got["size"] == ranks


@needs_mpi
@pytest.mark.gpu
@pytest.mark.parametrize("ranks, opt, batch, dropout", CASES)
def test_the_nccl_engine_trains_as_one_process(tmp_path, ranks, opt, batch, dropout):
    pytest.importorskip("cupy.cuda.nccl")
    if _gpus() < ranks:
        pytest.skip(f"{ranks} ranks need {ranks} GPUs (one per process); {_gpus()} here")
    done = _launch(ranks, tmp_path, f"{opt}:{batch}:{int(dropout)}",
                   script=HERE / "nccl_train.py")
    assert done.returncode == 0, done.stderr
    files = [np.load(tmp_path / f"case0-rank{r}.npz") for r in range(ranks)]
    _assert_one_process_answer(files, opt, batch, dropout)


def _fake_cupy(monkeypatch, nccl_available=True, gpus=0):
    """A cupy whose NCCL and device count are what the test says (no GPU needed)."""
    import types

    cupy, cuda = types.ModuleType("cupy"), types.ModuleType("cupy.cuda")
    nccl = types.ModuleType("cupy.cuda.nccl")
    nccl.available = nccl_available
    cuda.nccl, cupy.cuda = nccl, cuda
    cuda.runtime = types.SimpleNamespace(getDeviceCount=lambda: gpus)
    for name, module in (("cupy", cupy), ("cupy.cuda", cuda), ("cupy.cuda.nccl", nccl)):
        monkeypatch.setitem(sys.modules, name, module)


def test_the_nccl_engine_without_cupy_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(ImportError, match=r"needs CuPy: pip install 'xpnet\[nccl\]'"):
        xn.distributed.init(engine="nccl")


def test_the_nccl_engine_without_nccl_names_the_wheel(monkeypatch):
    _fake_cupy(monkeypatch, nccl_available=False)
    with pytest.raises(ImportError, match="finds no NCCL library: pip install nvidia-nccl-cu12"):
        xn.distributed.init(engine="nccl")


def test_the_nccl_engine_without_a_gpu_says_so(monkeypatch):
    _fake_cupy(monkeypatch, gpus=0)
    with pytest.raises(RuntimeError, match="needs a CUDA GPU; none is visible"):
        xn.distributed.init(engine="nccl")


def test_the_nccl_engine_passes_on_what_cuda_says(monkeypatch):
    _fake_cupy(monkeypatch)

    def no_driver():
        raise OSError("cudaErrorNoDevice: no CUDA-capable device is detected")

    sys.modules["cupy.cuda"].runtime.getDeviceCount = no_driver
    with pytest.raises(RuntimeError, match="needs a CUDA GPU; CUDA says: cudaErrorNoDevice"):
        xn.distributed.init(engine="nccl")


# ------------------------------------------------- resuming on another number of ranks


@needs_mpi
def test_resuming_on_another_number_of_ranks_continues_the_run(tmp_path):
    """2 epochs on 2 ranks, then 2 more from rank 0's checkpoint on 3 ranks and on one
    process: both equal 4 epochs in one go (moments, step count, shuffles and masks)."""
    script = HERE / "mpi_resume.py"
    done = _launch(2, tmp_path, "first", script=script)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-0.npz", "ckpt-1.npz"]
    done = _launch(3, tmp_path, "resume", script=script)
    assert done.returncode == 0, done.stderr
    resumer = _script("mpi_resume")
    (tmp_path / "whole").mkdir()
    whole = resumer.first(None, str(tmp_path / "whole"), epochs=4)
    alone, history = resumer.resume(None, str(tmp_path))
    assert history.epoch == [2, 3]
    files = [np.load(tmp_path / f"resumed-rank{r}.npz") for r in range(3)]
    for name, want in whole.params.items():
        np.testing.assert_allclose(files[0][name], want, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(alone.params[name], want, rtol=1e-10, atol=1e-12)
        for other in files[1:]:
            assert np.array_equal(other[name], files[0][name]), f"ranks differ on {name}"
    assert files[0]["epochs"].tolist() == [2, 3]


def test_resuming_in_one_process_is_bit_identical(tmp_path):
    resumer = _script("mpi_resume")
    resumer.first(None, str(tmp_path))
    resumed, _ = resumer.resume(None, str(tmp_path))
    (tmp_path / "whole").mkdir()
    whole = resumer.first(None, str(tmp_path / "whole"), epochs=4)
    for name, want in whole.params.items():
        assert np.array_equal(resumed.params[name], want), name


def test_initial_epoch_past_epochs_is_refused_before_training():
    net = xn.Sequential(xn.Dense(2, 1), backend="numpy")
    before = {k: v.copy() for k, v in net.params.items()}
    with pytest.raises(ValueError, match="initial_epoch=3 is past epochs=2"):
        net.fit(np.zeros((4, 2)), np.zeros((4, 1)), epochs=2, initial_epoch=3)
    with pytest.raises(ValueError, match="initial_epoch"):
        net.fit(np.zeros((4, 2)), np.zeros((4, 1)), epochs=2, initial_epoch=-1)
    assert all(np.array_equal(before[k], v) for k, v in net.params.items())
