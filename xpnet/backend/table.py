"""The backend table: the one place where array libraries differ.

Everything else in xpnet computes through ``backend.xp`` (an array-API namespace) and asks
a ``Backend`` for what the standard leaves open: each answer is a column of one small row
per library (import name, namespace, devices, host copies, synchronisation, in-place
writes, parameter views, GPU or not, whether reading a scalar is cheap, which fast
kernels, whether the step can be traced, the out-of-memory hint, free device memory).
Code outside this module never branches on a backend's name; a test reads the source to
hold that.

The active backend is per thread: ``use()`` in one thread never changes another
thread's backend, and because IPython runs every cell on the same main thread a
plain ``use()`` persists across Jupyter cells (a ContextVar would not: ipykernel
runs each cell in a fresh context copy).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import kernels as _kernels

__all__ = ["Backend", "BackendError", "UnknownBackendError", "MissingBackendError", "use",
           "current", "available", "get", "resolve", "fast_paths", "NAMES", "REFERENCE"]

NAMES = ("numpy", "cupy", "torch", "jax", "array_api_strict")
REFERENCE = "numpy"  # the backend every other one is compared against (parity, float64 checks)
_DTYPES = ("float32", "float64")
# what a model computes in: its parameters' dtype, or 16-bit compute over float32 parameters
PRECISIONS = ("float32", "float64", "mixed-bfloat16", "mixed-float16")


class BackendError(RuntimeError):
    """A backend cannot be used here (unknown name, library missing, no device).

    Unknown names and bad arguments raise ``UnknownBackendError`` (also a ``ValueError``),
    a missing library ``MissingBackendError`` (also an ``ImportError``), so code that
    catches the standard exceptions catches them too.
    """


class UnknownBackendError(BackendError, ValueError):
    """An unknown backend name, device or dtype."""


class MissingBackendError(BackendError, ImportError):
    """The backend's library is not installed."""


# --------------------------------------------------------------------------- the table
# Functions take the imported library module (and a resolved device where they need one).


def _numpy_device(lib, device):
    if device not in (None, "cpu"):
        raise UnknownBackendError(f"backend 'numpy' runs on the CPU only; got device={device!r}")
    return "cpu"


def _cupy_device(lib, device):
    count = _cuda_device_count(lib)
    if count == 0:
        raise BackendError(
            "backend 'cupy' needs a CUDA GPU, and none is visible here "
            "(cupy.cuda.runtime.getDeviceCount() == 0); use 'numpy' or 'torch' on the CPU"
        )
    if device in (None, "cuda", "gpu"):
        index = 0
    elif isinstance(device, str) and device.startswith("cuda:") and device[5:].isdigit():
        index = int(device[5:])
    elif isinstance(device, int) and not isinstance(device, bool):
        index = device
    elif hasattr(device, "id"):
        index = int(device.id)
    else:
        raise UnknownBackendError(
            f"backend 'cupy' takes device=<int> or 'cuda:<int>'; got {device!r}")
    if not 0 <= index < count:
        raise UnknownBackendError(
            f"backend 'cupy': device {index} does not exist ({count} visible)")
    return lib.cuda.Device(index)


def _cuda_device_count(lib) -> int:
    try:
        return int(lib.cuda.runtime.getDeviceCount())
    except Exception:  # no driver, no runtime: the same as no device for the user
        return 0


def _torch_device(lib, device):
    if device is None:
        device = "cpu"
    try:
        dev = lib.device(device) if not isinstance(device, lib.device) else device
    except (RuntimeError, TypeError):  # torch's own message lists 20 device kinds
        raise UnknownBackendError(
            f"backend 'torch' takes device 'cpu' or 'cuda[:n]'; got {device!r}") from None
    if dev.type == "cuda" and not lib.cuda.is_available():
        raise BackendError("backend 'torch' with device='cuda': torch sees no CUDA device here")
    if dev.type not in ("cpu", "cuda"):
        raise UnknownBackendError(
            f"backend 'torch' takes device 'cpu' or 'cuda[:n]'; got {device!r}")
    return dev


def _jax_device(lib, device):
    if device is None:
        return lib.devices()[0]
    if isinstance(device, str):
        kind, _, index = device.partition(":")
        kind = {"cuda": "gpu"}.get(kind, kind)
        try:
            devices = lib.devices(kind)
        except RuntimeError as exc:
            raise BackendError(f"backend 'jax': no {kind!r} device here ({exc})") from None
        if not (index or "0").isdigit() or int(index or 0) >= len(devices):
            raise UnknownBackendError(f"backend 'jax': no device {device!r} here; "
                                      f"{kind} devices: {[str(d) for d in devices]}")
        return devices[int(index or 0)]
    return device


def _strict_device(lib, device):
    if device is None:
        return lib.Device("CPU_DEVICE")
    if isinstance(device, str):
        try:
            return lib.Device(device)
        except ValueError as exc:
            raise UnknownBackendError(f"backend 'array_api_strict': {exc}") from None
    return device


def _compat_namespace(name):
    return lambda lib: importlib.import_module(f"array_api_compat.{name}")


def _jax_namespace(lib):
    return importlib.import_module("jax.numpy")


def _jax_dtype_check(lib, dtype_name):
    if dtype_name == "float64" and not lib.config.jax_enable_x64:
        raise BackendError(
            "backend 'jax' with dtype='float64' needs 64-bit mode: set JAX_ENABLE_X64=1 "
            "before importing jax, or call jax.config.update('jax_enable_x64', True)"
        )


def _sync_cupy(lib, device):
    device.synchronize()


def _sync_torch(lib, device):
    if device.type == "cuda":
        lib.cuda.synchronize(device)


def _sync_jax(lib, device):
    lib.effects_barrier()


def _portable_default(lib, device):
    return device


def _portable_cupy(lib, device):
    return int(device.id)


def _portable_torch(lib, device):
    return str(device)  # "cpu", "cuda:1"


def _portable_jax(lib, device):
    # "<platform>:<position>", as _jax_device resolves it; positions are per platform
    return f"{device.platform}:{lib.devices(device.platform).index(device)}"


def _portable_strict(lib, device):
    return getattr(device, "_device", "CPU_DEVICE")


def _to_numpy_default(lib, x):
    return np.asarray(x)


def _to_numpy_cupy(lib, x):
    return lib.asnumpy(x)


def _to_numpy_torch(lib, x):
    return x.detach().cpu().numpy()


def _to_numpy_strict(lib, x):
    # strict refuses NumPy conversion off its CPU device, as a GPU library would
    return np.asarray(x.to_device(lib.Device("CPU_DEVICE")))


# DLPack device types (dlpack.h's DLDeviceType): where a library's arrays can be imported
# with from_dlpack, sharing memory, instead of taking the host path
_DL_CPU, _DL_CUDA = 1, 2


def _dlpack_cpu(lib, device) -> tuple[int, int]:
    return (_DL_CPU, 0)


def _dlpack_cupy(lib, device) -> tuple[int, int]:
    return (_DL_CUDA, int(device.id))


def _dlpack_torch(lib, device) -> tuple[int, int]:
    if device.type == "cpu":
        return (_DL_CPU, 0)
    return (_DL_CUDA, lib.cuda.current_device() if device.index is None else device.index)


def _dlpack_jax(lib, device) -> tuple[int, int]:
    if getattr(device, "platform", "cpu") == "cpu":
        return (_DL_CPU, 0)
    return (_DL_CUDA, int(getattr(device, "local_hardware_id", device.id)))


def _never(lib, device) -> bool:
    return False


def _always(lib, device) -> bool:
    return True


def _torch_is_gpu(lib, device) -> bool:
    return device.type == "cuda"


def _no_low_precision(lib, device) -> tuple[str, ...]:
    return ()


def _numpy_low_precision(lib, device) -> tuple[str, ...]:
    return ("float16",)  # NumPy has no bfloat16; its float16 is emulated: slow, for tests


def _torch_low_precision(lib, device) -> tuple[str, ...]:
    # CPU matmuls in float16 are slow or missing; bfloat16 has oneDNN kernels there
    return ("float16", "bfloat16") if device.type == "cuda" else ("bfloat16",)


def _cupy_low_precision(lib, device) -> tuple[str, ...]:
    return ("float16", "bfloat16") if hasattr(lib, "bfloat16") else ("float16",)


def _jax_low_precision(lib, device) -> tuple[str, ...]:
    return ("float16", "bfloat16")


def _jax_is_gpu(lib, device) -> bool:
    return getattr(device, "platform", "cpu") != "cpu"


def host_available_bytes() -> int | None:
    """Host memory this process may still take: MemAvailable from /proc/meminfo, lowered to
    the container's cgroup limit when one is set; None where neither can be read."""
    found = []
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    cgroup = _cgroup_headroom()
    if cgroup is not None:
        found.append(cgroup)
    return min(found) if found else None


def _cgroup_headroom() -> int | None:
    """limit - usage of this process's memory cgroup (v2, then v1), or None if unlimited."""
    for limit_file, usage_file in (
            ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
            ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
             "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_file) as fh:
                limit = fh.read().strip()
            with open(usage_file) as fh:
                usage = int(fh.read().strip())
        except (OSError, ValueError):
            continue
        # v2 writes "max" when unlimited; v1 writes a huge page-rounded number instead
        if limit == "max" or int(limit) >= 2**60:
            return None
        return max(int(limit) - usage, 0)
    return None


def _host_free_bytes(lib, device) -> int | None:
    return host_available_bytes()


def _cupy_free_bytes(lib, device) -> int | None:
    with device:
        free, _ = lib.cuda.runtime.memGetInfo()
    pool = lib.get_default_memory_pool()  # cached blocks are free to xpnet too
    return int(free) + int(pool.total_bytes() - pool.used_bytes())


def _torch_free_bytes(lib, device) -> int | None:
    if device.type != "cuda":
        return _host_free_bytes(lib, device)
    free, _ = lib.cuda.mem_get_info(device)
    return int(free)


def _unknown_free_bytes(lib, device) -> int | None:
    return None


def _jax_free_bytes(lib, device) -> int | None:
    if getattr(device, "platform", "cpu") == "cpu":
        return _host_free_bytes(lib, device)
    stats = device.memory_stats() or {}
    limit = stats.get("bytes_limit")
    return None if limit is None else int(limit - stats.get("bytes_in_use", 0))


def _gib(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:.1f}"


def _torch_devices(lib) -> list[str]:
    if not lib.cuda.is_available():
        return ["cpu (no CUDA device)"]
    found = ["cpu"]
    for i in range(lib.cuda.device_count()):
        free, total = lib.cuda.mem_get_info(i)
        found.append(f"cuda:{i} {lib.cuda.get_device_name(i)} "
                     f"({_gib(free)} of {_gib(total)} GiB free)")
    return found


def _cupy_devices(lib) -> list[str]:
    found = []
    for i in range(lib.cuda.runtime.getDeviceCount()):
        props = lib.cuda.runtime.getDeviceProperties(i)
        with lib.cuda.Device(i):
            free, total = lib.cuda.runtime.memGetInfo()
        label = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        found.append(f"{i}: {label} ({_gib(free)} of {_gib(total)} GiB free)")
    return found


def _jax_devices(lib) -> list[str]:
    return [str(d) for d in lib.devices()]


def _cupy_kernels(backend):
    if hasattr(backend.lib, "ElementwiseKernel"):
        return _kernels.CuPyKernels(backend.xp, backend.inplace, backend.lib)
    return _kernels.Portable(backend.xp, backend.inplace)


def _jax_trace(lib, fn):
    return lib.jit(fn)


class _TorchGraphs:
    """torch's CUDA graphs as ``xpnet/train/graphs.py`` uses them. Warm-up work and the
    capture run on one side stream of their own, so cuBLAS has set up its handle and
    workspace for that stream before the capture (torch's docs: warm up on a side stream)."""

    def __init__(self, lib, device):
        self.cuda, self.device = lib.cuda, device
        self.stream = lib.cuda.Stream(device)

    def _fork(self):
        self.stream.wait_stream(self.cuda.current_stream(self.device))

    def _join(self):
        self.cuda.current_stream(self.device).wait_stream(self.stream)

    def side(self, fn):
        """``fn()`` on the side stream, after the work queued so far and before later work."""
        self._fork()
        with self.cuda.stream(self.stream):
            out = fn()
        self._join()
        return out

    def capture(self, fn):
        """``(replay, out)``: the kernels ``fn()`` queues are recorded, not run; each
        ``replay()`` runs them again on the same memory, ``out`` included."""
        graph = self.cuda.CUDAGraph()
        self._fork()
        with self.cuda.graph(graph, stream=self.stream):
            out = fn()
        self._join()
        return graph.replay, out


def _torch_graphs(lib, device):
    if device.type != "cuda":
        return "its device is the CPU: CUDA graphs need device='cuda'"
    return lambda: _TorchGraphs(lib, device)


def _no_graphs(reason: str):
    return lambda lib, device: reason


def _numpy_quiet(lib):
    return np.errstate(all="ignore")  # thread-local; array_api_strict computes with NumPy too


def _no_warnings(lib):
    return contextlib.nullcontext()


@dataclass(frozen=True)
class _Row:
    module: str  # what to import
    extra: str  # the pip extra(s) that install it, "a or b"
    namespace: Callable[[Any], Any]  # the library -> its array-API namespace
    resolve_device: Callable[[Any, Any], Any]
    to_numpy: Callable[[Any, Any], np.ndarray] = _to_numpy_default
    sync: Callable[[Any, Any], None] | None = None
    inplace: bool = True  # arrays may be written in place (False: update functionally)
    views: bool = True  # reshaped slices of one buffer are views (flat parameter buffers)
    is_gpu: Callable[[Any, Any], bool] = _never
    async_dispatch: bool = False  # work is queued: reading a scalar waits for it
    kernels: Callable[[Backend], Any] = lambda b: _kernels.Portable(b.xp, b.inplace)
    trace: Callable[[Any, Callable], Callable] | None = None  # trace a pure step once
    check_dtype: Callable[[Any, str], None] | None = None
    plain: Callable[[Any], Any] | None = None  # drops autograd history (torch)
    portable: Callable[[Any, Any], Any] = _portable_default  # a device as get() accepts it
    free_bytes: Callable[[Any, Any], int | None] = _host_free_bytes
    devices: Callable[[Any], list[str]] | None = None  # for the info report
    oom_hint: str = ""  # appended to out-of-memory messages
    # silences the library's floating-point warnings (the divergence guard reports instead)
    quiet: Callable[[Any], Any] = _no_warnings
    # the 16-bit float dtypes mixed precision may compute in, on this library and device
    low_precision: Callable[[Any, Any], tuple[str, ...]] = _no_low_precision
    # the DLPack (device type, id) of a device: arrays of other libraries that sit there
    # are imported with from_dlpack, sharing memory (None: only through a host copy)
    dlpack: Callable[[Any, Any], tuple[int, int]] | None = None
    # CUDA-graph capture of a step: (lib, device) -> a maker of the capture API
    # (train/graphs.py), or a string saying why this backend cannot capture
    graphs: Callable[[Any, Any], Any] = _no_graphs("it does not run on CUDA through torch")


_TABLE: dict[str, _Row] = {
    "numpy": _Row("numpy", "numpy", _compat_namespace("numpy"), _numpy_device,
                  kernels=lambda b: _kernels.NumPyKernels(b.xp, b.inplace), quiet=_numpy_quiet,
                  low_precision=_numpy_low_precision, dlpack=_dlpack_cpu,
                  graphs=_no_graphs("NumPy runs on the CPU, which has no CUDA graphs")),
    "cupy": _Row("cupy", "cupy-cuda12 or cupy-cuda13", _compat_namespace("cupy"), _cupy_device,
                 _to_numpy_cupy, _sync_cupy, is_gpu=_always, kernels=_cupy_kernels,
                 portable=_portable_cupy, free_bytes=_cupy_free_bytes, devices=_cupy_devices,
                 low_precision=_cupy_low_precision,
                 oom_hint=" CuPy also keeps freed blocks in its pool: "
                          "cupy.get_default_memory_pool().free_all_blocks() returns them.",
                 dlpack=_dlpack_cupy,
                 # cupy.matmul raises NotImplementedError under stream capture (cupy#6290)
                 graphs=_no_graphs("CuPy refuses cuBLAS calls (every matmul) during stream "
                                   "capture (CuPy issue 6290)")),
    "torch": _Row("torch", "torch", _compat_namespace("torch"), _torch_device, _to_numpy_torch,
                  _sync_torch, is_gpu=_torch_is_gpu,
                  kernels=lambda b: _kernels.TorchKernels(b.xp, b.inplace, b.lib),
                  plain=lambda x: x.detach(), portable=_portable_torch,
                  free_bytes=_torch_free_bytes, devices=_torch_devices, dlpack=_dlpack_torch,
                  low_precision=_torch_low_precision, graphs=_torch_graphs),
    "jax": _Row("jax", "jax", _jax_namespace, _jax_device, sync=_sync_jax, inplace=False,
                views=False, is_gpu=_jax_is_gpu, async_dispatch=True, trace=_jax_trace,
                check_dtype=_jax_dtype_check, portable=_portable_jax,
                free_bytes=_jax_free_bytes, devices=_jax_devices, dlpack=_dlpack_jax,
                low_precision=_jax_low_precision,
                graphs=_no_graphs("JAX compiles the whole step with jax.jit instead")),
    # the standard promises no views, so strict keeps one array per parameter; its devices
    # are make-believe, so other libraries' arrays reach it through the host
    "array_api_strict": _Row("array_api_strict", "strict", lambda lib: lib, _strict_device,
                             _to_numpy_strict, views=False, portable=_portable_strict,
                             free_bytes=_unknown_free_bytes, quiet=_numpy_quiet,
                             graphs=_no_graphs("array-api-strict runs on the CPU, which has "
                                               "no CUDA graphs")),
}
_ALIASES = {"strict": "array_api_strict", "array-api-strict": "array_api_strict"}


# --------------------------------------------------------------------------- fast paths

_fast_local = threading.local()


def _fast_default() -> bool:
    return os.environ.get("XPNET_FAST", "1") != "0"


class _FastPaths:
    """What ``fast_paths(enabled)`` returns: restores the previous setting as a context."""

    def __init__(self, previous: bool | None):
        self._previous = previous

    def __enter__(self) -> _FastPaths:
        return self

    def __exit__(self, *exc) -> None:
        _fast_local.enabled = self._previous

    def __bool__(self) -> bool:
        return fast_paths_enabled()


def fast_paths(enabled: bool) -> _FastPaths:
    """Switch the backends' fast paths (fused kernels, the traced JAX step) on or off.

    Off, every backend runs the portable array-API code, which the fast paths are proven
    equal to. A plain call holds for this thread; ``with xn.fast_paths(False): ...``
    restores the previous setting on exit. The starting value comes from ``XPNET_FAST``
    ("0" turns them off); this is the one place that reads it.
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"fast_paths takes True or False; got {enabled!r}")
    previous = getattr(_fast_local, "enabled", None)
    _fast_local.enabled = enabled
    return _FastPaths(previous)


def fast_paths_enabled() -> bool:
    """Whether this thread's steps use the fast paths (see ``fast_paths``)."""
    enabled = getattr(_fast_local, "enabled", None)
    return _fast_default() if enabled is None else enabled


# --------------------------------------------------------------------------- Backend


@dataclass(frozen=True, eq=False)
class Backend:
    """One resolved backend: ``name``, array namespace ``xp``, ``device`` and float ``dtype``.

    Its properties answer what the standard leaves open, each from the backend table:
    ``inplace``, ``views``, ``is_gpu``, ``cheap_reads``, ``kernels``, ``can_trace``.
    ``asarray`` copies host data onto the device (never aliasing the source),
    ``to_numpy`` copies back, ``sync`` waits for queued device work.
    """

    name: str
    xp: Any
    device: Any
    dtype: Any
    dtype_name: str
    lib: Any = field(repr=False)
    row: _Row = field(repr=False)
    _kernels: dict = field(default_factory=dict, repr=False)

    @property
    def item_bytes(self) -> int:
        """Bytes per number in this backend's float dtype."""
        return 2 if self.dtype_name == "bfloat16" else int(np.dtype(self.dtype_name).itemsize)

    @property
    def low_precision(self) -> tuple[str, ...]:
        """The 16-bit float dtypes this library computes in on this device (mixed
        precision); empty where it has none (array-api-strict)."""
        return self.row.low_precision(self.lib, self.device)

    @property
    def inplace(self) -> bool:
        """Whether arrays may be updated in place (False on JAX: update functionally)."""
        return self.row.inplace

    @property
    def views(self) -> bool:
        """Whether parameters can live as views of one flat buffer (not JAX, not strict)."""
        return self.row.views

    @property
    def is_gpu(self) -> bool:
        """Whether arrays live on a GPU."""
        return self.row.is_gpu(self.lib, self.device)

    @property
    def cheap_reads(self) -> bool:
        """Whether reading a scalar costs nothing extra: no GPU, no queued work. Where it is
        False each ``float()`` of a device value waits for the device (a sync)."""
        return not (self.is_gpu or self.row.async_dispatch)

    @property
    def kernels(self):
        """The fast paths for this backend (portable ones when ``fast_paths`` is off)."""
        fast = fast_paths_enabled()
        found = self._kernels.get(fast)
        if found is None:
            found = self._kernels[fast] = (self.row.kernels(self) if fast
                                           else _kernels.Portable(self.xp, self.inplace))
        return found

    @property
    def can_trace(self) -> bool:
        """Whether a pure training step can be traced once and replayed (JAX, fast paths on)."""
        return self.row.trace is not None and fast_paths_enabled()

    def trace(self, fn: Callable) -> Callable:
        """``fn`` traced by the library (``jax.jit``); only where ``can_trace``."""
        if self.row.trace is None:
            raise BackendError(f"backend {self.name!r} cannot trace a step")
        return self.row.trace(self.lib, fn)

    @property
    def capture_refusal(self) -> str | None:
        """Why this backend cannot capture a step as a CUDA graph; None where it can."""
        found = self.row.graphs(self.lib, self.device)
        return found if isinstance(found, str) else None

    def graphs(self):
        """A new capture API (``side(fn)``, ``capture(fn)``; see ``train/graphs.py``)."""
        found = self.row.graphs(self.lib, self.device)
        if isinstance(found, str):
            raise BackendError(f"backend {self.name!r} cannot capture CUDA graphs: {found}")
        return found()

    @property
    def oom_hint(self) -> str:
        """What to add to an out-of-memory message on this backend (may be empty)."""
        return self.row.oom_hint

    def quiet(self):
        """A context in which the library's floating-point warnings (overflow, invalid value)
        are silenced: inside a training step the divergence guard reports them instead."""
        return self.row.quiet(self.lib)

    def free_bytes(self) -> int | None:
        """Bytes free where this backend's arrays live (None: unknown)."""
        try:
            return self.row.free_bytes(self.lib, self.device)
        except Exception:  # a failed query must never stop training: unknown
            return None

    def devices(self) -> list[str]:
        """Every device of this backend's library, with free memory where it is known."""
        if self.row.devices is None:
            return [str(self.device)]
        return self.row.devices(self.lib)

    def asarray(self, data, dtype=None, copy: bool | None = True):
        """``data`` (host or any backend's array) as a new array on this backend and device
        (``copy=None``: it may share memory with ``data`` where no copy is needed).

        Another library's array on this device comes over by DLPack (``from_dlpack``), so
        a copy, where one is made, is made on the device; the host path is the fallback."""
        dtype = self.dtype if dtype is None else dtype
        if not isinstance(data, (np.ndarray, np.generic, int, float, list, tuple)):
            shared = self.from_dlpack(data)
            data = to_numpy(data) if shared is None else shared
        return self.xp.asarray(data, dtype=dtype, device=self.device, copy=copy)

    def from_dlpack(self, x):
        """``x`` (an array of any library) as an array of this backend's library that shares
        its memory, through DLPack; None where that cannot be done: the library or this
        backend has no DLPack import, ``x`` lives on another device, or its dtype would not
        survive (JAX without 64-bit mode turns int64 into int32 and float64 into float32)."""
        where = self.row.dlpack
        device_of = getattr(x, "__dlpack_device__", None)
        if where is None or device_of is None or isinstance(x, np.generic):
            return None
        source = _row_of(x)
        if source is not None and source.plain is not None:
            x = source.plain(x)  # a torch tensor that requires grad refuses to export
        try:
            if tuple(int(v) for v in device_of()) != where(self.lib, self.device):
                return None
            shared = self.xp.from_dlpack(x)
        except (BufferError, RuntimeError, TypeError, ValueError):  # not exportable as is
            return None
        return shared if _dtype_text(shared.dtype) == _dtype_text(x.dtype) else None

    def to_numpy(self, x) -> np.ndarray:
        """A host NumPy copy of an array of this backend."""
        return self.row.to_numpy(self.lib, x)

    def plain(self, x):
        """``x`` as plain data: a torch tensor that requires grad would otherwise record
        every later update of xpnet's in a growing autograd graph."""
        return x if self.row.plain is None else self.row.plain(x)

    def sync(self) -> None:
        """Wait until queued work on the device is done (for honest timing)."""
        if self.row.sync is not None:
            self.row.sync(self.lib, self.device)

    def owns(self, x) -> bool:
        """True when ``x`` is an array of this backend's library on this backend's device."""
        import array_api_compat as compat

        try:
            xp = compat.array_namespace(x)
        except TypeError:
            return False
        if _namespace_name(xp) != self.name:
            return False
        return _same_device(compat.device(x), self.device)

    def __reduce__(self):
        """Pickle (and deep-copy) as ``get(name, device, dtype)``: the library modules it holds
        do not pickle, and some devices (JAX's, CuPy's) neither, so the device travels as the
        string or index ``get`` resolves again."""
        return get, (self.name, self.row.portable(self.lib, self.device), self.dtype_name)

    def __repr__(self) -> str:
        return f"Backend(name={self.name!r}, device={self.device!r}, dtype={self.dtype_name!r})"


def _dtype_text(dtype) -> str:
    """'float32' for torch.float32, jnp.float32, np.float32 and array_api_strict.float32."""
    return str(dtype).rsplit(".", 1)[-1]


def _row_of(x) -> _Row | None:
    """The table row of the library ``x`` belongs to (None: not known by module name, as
    JAX's arrays, which live in "jaxlib")."""
    return _TABLE.get(type(x).__module__.split(".")[0])


def _same_device(a, b) -> bool:
    return a == b or str(a) == str(b)


def _namespace_name(xp) -> str:
    mod = xp.__name__
    for name in NAMES:
        if mod == name or mod.startswith(f"array_api_compat.{name}") or mod.startswith(name + "."):
            return name
    if mod.startswith("jax"):
        return "jax"
    return mod


def canonical_name(name: str) -> str:
    """The table name for ``name`` (accepts 'strict' for array_api_strict)."""
    if not isinstance(name, str):
        raise UnknownBackendError(f"backend name must be a string; got {type(name).__name__}")
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _TABLE:
        raise UnknownBackendError(
            f"unknown backend {name!r}; known backends: {', '.join(NAMES)}")
    return key


def _import(name: str):
    row = _TABLE[name]
    try:
        lib = importlib.import_module(row.module)
        ns = row.namespace(lib)
    except ImportError as exc:
        raise MissingBackendError(
            f"backend {name!r} needs the {row.module!r} package, which is not installed "
            f"({exc}); install it with: "
            + " or ".join(f"pip install 'xpnet[{e}]'" for e in row.extra.split(" or "))
        ) from None
    return lib, ns


_cache: dict[tuple, Backend] = {}
_cache_lock = threading.Lock()


def _dtype_name(dtype) -> str:
    name = "float32" if dtype is None else str(getattr(dtype, "__name__", dtype))
    name = name.replace("torch.", "")
    if name not in _DTYPES:
        raise UnknownBackendError(f"dtype must be one of {_DTYPES}; got {dtype!r}")
    return name


def get(name: str = "numpy", device: Any = None, dtype: str | None = None) -> Backend:
    """Resolve (and cache) a Backend without making it current."""
    name = canonical_name(name)
    dtype_name = _dtype_name(dtype)
    key = (name, str(device), dtype_name)
    cached = _cache.get(key)
    if cached is not None:
        return cached
    lib, xp = _import(name)
    row = _TABLE[name]
    dev = row.resolve_device(lib, device)
    if row.check_dtype is not None:
        row.check_dtype(lib, dtype_name)
    # One Backend per resolved device: get("torch") and get("torch", "cpu") (what an unpickled
    # model asks for) are the same object, so models compare and share kernels as before.
    resolved = ("resolved", name, type(dev).__name__, str(dev), dtype_name)
    with _cache_lock:
        backend = _cache.get(resolved) or Backend(
            name, xp, dev, getattr(xp, dtype_name), dtype_name, lib, row)
        _cache[key] = _cache[resolved] = backend
    return backend


def compute(backend: Backend, dtype_name: str) -> Backend:
    """``backend`` computing in ``dtype_name`` (its own dtype, or one of its
    ``low_precision`` dtypes for mixed precision): same library, device and kernels row.

    Raises BackendError naming the backend and what it supports otherwise.
    """
    if dtype_name == backend.dtype_name:
        return backend
    if dtype_name not in backend.low_precision:
        supported = ", ".join(backend.low_precision) or "no 16-bit float dtype"
        raise UnknownBackendError(
            f"backend {backend.name!r} on {backend.device} cannot compute in {dtype_name} "
            f"(it supports {supported}); pass another precision= or choose another backend")
    key = ("compute", backend.name, str(backend.device), dtype_name)
    with _cache_lock:
        low = _cache.get(key)
        if low is None:
            low = _cache[key] = Backend(backend.name, backend.xp, backend.device,
                                        getattr(backend.xp, dtype_name), dtype_name,
                                        backend.lib, backend.row)
    return low


def resolve(backend: Any = None, device: Any = None, dtype: str | None = None) -> Backend:
    """A Backend from what a user may pass: None (the current one), a name, a Backend or
    what ``use()`` returned, with ``device`` and ``dtype`` overriding its own."""
    if isinstance(backend, _Using):
        backend = backend.backend
    if backend is None:
        backend = current()
    if isinstance(backend, Backend):
        if device is None and dtype is None:
            return backend
        return get(backend.name, backend.device if device is None else device,
                   dtype or backend.dtype_name)
    return get(backend, device, dtype)


# --------------------------------------------------------------------------- current backend

_local = threading.local()


def _default() -> Backend:
    name = os.environ.get("XPNET_BACKEND")
    if not name:
        return get("numpy")
    try:
        return get(name)
    except BackendError as exc:
        raise type(exc)(f"XPNET_BACKEND={name!r} in the environment: {exc}") from None


def current() -> Backend:
    """The backend that new models and arrays use in this thread."""
    backend = getattr(_local, "backend", None)
    if backend is None:
        backend = _local.backend = _default()
    return backend


class _Using:
    """What ``use()`` returns: the new backend, which also restores the old one as a context."""

    def __init__(self, backend: Backend, previous: Backend | None, previous_precision=None):
        self.backend, self._previous = backend, previous
        self._previous_precision = previous_precision

    def __enter__(self) -> Backend:
        return self.backend

    def __exit__(self, *exc) -> None:
        _local.backend = self._previous
        _local.precision = self._previous_precision

    def __getattr__(self, attr):
        return getattr(self.backend, attr)

    def __eq__(self, other) -> bool:
        return self.backend is getattr(other, "backend", other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self.backend)


def use(name: str | Backend = "numpy", device: Any = None, dtype: str | None = None,
        precision: str | None = None) -> _Using:
    """Make ``name`` the current backend of this thread.

    A plain call persists (across Jupyter cells too); ``with xn.use("torch"): ...`` restores
    the previous backend on exit. The returned object reads like the Backend it selected.
    ``precision`` (one of ``PRECISIONS``) is the default of models built from now on in
    this thread: "mixed-bfloat16" / "mixed-float16" keep float32 parameters and compute
    in 16 bits; a call without it goes back to the dtype's own precision.
    """
    dtype = precision_dtype("use", precision, dtype)
    backend = name if isinstance(name, Backend) else get(name, device, dtype)
    previous = getattr(_local, "backend", None)
    previous_precision = getattr(_local, "precision", None)
    _local.backend, _local.precision = backend, precision
    return _Using(backend, previous, previous_precision)


@dataclass(frozen=True)
class Precision:
    """What a model computes in: ``param_dtype`` for parameters, gradients and optimizer
    state, ``compute_dtype`` for the passes (16 bits when ``mixed``); float16 compute
    needs its loss scaled (``scales_loss``)."""

    name: str
    param_dtype: str
    compute_dtype: str

    @classmethod
    def named(cls, name: str) -> Precision:
        """The precision of one of ``PRECISIONS``."""
        if name not in PRECISIONS:
            raise UnknownBackendError(f"precision must be one of {PRECISIONS}; got {name!r}")
        if name.startswith("mixed-"):
            return cls(name, "float32", name.removeprefix("mixed-"))
        return cls(name, name, name)

    @property
    def mixed(self) -> bool:
        return self.compute_dtype != self.param_dtype

    @property
    def scales_loss(self) -> bool:
        return self.compute_dtype == "float16"


def default_precision() -> str | None:
    """The precision ``use(..., precision=...)`` set for this thread (None: the dtype's)."""
    return getattr(_local, "precision", None)


def precision_dtype(where: str, precision: str | None, dtype: str | None) -> str | None:
    """The parameter dtype ``precision`` implies (float64 for "float64", else float32), or
    ``dtype`` when no precision is given; a dtype that contradicts it is refused."""
    if precision is None:
        return dtype
    if precision not in PRECISIONS:
        raise UnknownBackendError(f"{where}: precision must be one of {PRECISIONS}; "
                                  f"got {precision!r}")
    implied = "float64" if precision == "float64" else "float32"
    if dtype is not None and _dtype_name(dtype) != implied:
        raise UnknownBackendError(f"{where}: precision={precision!r} keeps {implied} "
                                  f"parameters, but dtype={dtype!r} was given: pass one of them")
    return implied


def available() -> list[str]:
    """Backend names usable here now (cupy only with a CUDA device)."""
    usable = []
    for candidate in NAMES:
        try:
            get(candidate)
        except Exception:  # broken installs count as unavailable too
            continue
        usable.append(candidate)
    return usable


def to_numpy(x) -> np.ndarray:
    """A host NumPy copy of an array from any supported library."""
    if isinstance(x, np.ndarray):
        return x
    # the table's host copy for the array's own library (jax arrays live in "jaxlib": default)
    row = _row_of(x)
    if row is None:
        return np.asarray(x)
    return row.to_numpy(sys.modules[row.module], x)


def of_array(x, dtype: str | None = None) -> Backend:
    """The backend that holds ``x``: its library's row on ``x``'s device (``dtype`` the
    float dtype to compute in, default float32). What follows an input's namespace, as
    scikit-learn's array API dispatch does, asks this instead of naming libraries."""
    import array_api_compat as compat

    try:
        xp = compat.array_namespace(x)
    except TypeError as exc:
        raise UnknownBackendError(f"{type(x).__name__} is not an array of any backend "
                                  f"({exc})") from None
    name = _namespace_name(xp)
    if name not in _TABLE:
        raise UnknownBackendError(f"arrays of {xp.__name__} have no xpnet backend; known "
                                  f"backends: {', '.join(NAMES)}")
    return get(name, compat.device(x), dtype)
