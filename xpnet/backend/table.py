"""The backend table: the one place where array libraries differ.

Everything else in xpnet computes through ``backend.xp`` (an array-API namespace).
What the standard leaves open lives here, one small row per library: import
name, default device, host transfer, device synchronisation, whether arrays can
be written in place, and whether a GPU is there.

The active backend is per thread: ``use()`` in one thread never changes another
thread's backend, and because IPython runs every cell on the same main thread a
plain ``use()`` persists across Jupyter cells (a ContextVar would not: ipykernel
runs each cell in a fresh context copy).
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Out-of-memory translation lives in memory.py; its names stay importable from here.
from .memory import OutOfMemoryError as OutOfMemoryError
from .memory import explaining_out_of_memory as explaining_out_of_memory
from .memory import is_out_of_memory as is_out_of_memory
from .memory import out_of_memory_error as out_of_memory_error

__all__ = ["Backend", "BackendError", "OutOfMemoryError", "use", "current", "available", "get",
           "NAMES"]

NAMES = ("numpy", "cupy", "torch", "jax", "array_api_strict")
_DTYPES = ("float32", "float64")


class BackendError(RuntimeError):
    """A backend cannot be used here (unknown name, library missing, no device)."""


# --------------------------------------------------------------------------- the table
# Each row: the module to import, the pip extra that installs it, how to resolve a device,
# how to copy an array to a host NumPy array, how to wait for queued work, and whether
# arrays may be updated in place. Functions take the imported library module.


def _numpy_device(lib, device):
    if device not in (None, "cpu"):
        raise BackendError(f"backend 'numpy' runs on the CPU only; got device={device!r}")
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
    elif isinstance(device, str) and device.startswith("cuda:"):
        index = int(device.split(":", 1)[1])
    elif isinstance(device, int):
        index = device
    elif hasattr(device, "id"):
        index = int(device.id)
    else:
        raise BackendError(f"backend 'cupy' takes device=<int> or 'cuda:<int>'; got {device!r}")
    if not 0 <= index < count:
        raise BackendError(f"backend 'cupy': device {index} does not exist ({count} visible)")
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
        raise BackendError(
            f"backend 'torch' takes device 'cpu' or 'cuda[:n]'; got {device!r}") from None
    if dev.type == "cuda" and not lib.cuda.is_available():
        raise BackendError("backend 'torch' with device='cuda': torch sees no CUDA device here")
    if dev.type not in ("cpu", "cuda"):
        raise BackendError(f"backend 'torch' takes device 'cpu' or 'cuda[:n]'; got {device!r}")
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
            raise BackendError(f"backend 'jax': no device {device!r} here; "
                               f"{kind} devices: {[str(d) for d in devices]}")
        return devices[int(index or 0)]
    return device


def _strict_device(lib, device):
    if device is None:
        return lib.Device("CPU_DEVICE")
    if isinstance(device, str):
        return lib.Device(device)
    return device


def _sync_cupy(lib, device):
    device.synchronize()


def _sync_torch(lib, device):
    if device.type == "cuda":
        lib.cuda.synchronize(device)


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


@dataclass(frozen=True)
class _Row:
    module: str
    extra: str
    resolve_device: Callable[[Any, Any], Any]
    to_numpy: Callable[[Any, Any], np.ndarray] = _to_numpy_default
    sync: Callable[[Any, Any], None] | None = None
    inplace: bool = True
    gpu: bool = False
    plain: Callable[[Any], Any] | None = None  # drops autograd history (torch)
    portable: Callable[[Any, Any], Any] = _portable_default  # a device as get() accepts it


_TABLE: dict[str, _Row] = {
    "numpy": _Row("numpy", "numpy", _numpy_device),
    "cupy": _Row("cupy", "cupy-cuda12 or cupy-cuda13", _cupy_device, _to_numpy_cupy,
                 _sync_cupy, gpu=True, portable=_portable_cupy),
    "torch": _Row("torch", "torch", _torch_device, _to_numpy_torch, _sync_torch,
                  plain=lambda x: x.detach(), portable=_portable_torch),
    "jax": _Row("jax", "jax", _jax_device, inplace=False, portable=_portable_jax),
    "array_api_strict": _Row("array_api_strict", "strict", _strict_device,
                             _to_numpy_strict, portable=_portable_strict),
}
_ALIASES = {"strict": "array_api_strict", "array-api-strict": "array_api_strict"}


def _namespace(name: str, lib):
    """The array-API namespace for a library: compat wrappers where the library needs them."""
    if name == "jax":
        import jax.numpy as jnp

        return jnp
    if name == "array_api_strict":
        return lib
    return importlib.import_module(f"array_api_compat.{name}")


# --------------------------------------------------------------------------- Backend


@dataclass(frozen=True, eq=False)
class Backend:
    """One resolved backend: ``name``, array namespace ``xp``, ``device`` and float ``dtype``.

    ``inplace`` says whether parameters may be updated in place (False on JAX).
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

    @property
    def inplace(self) -> bool:
        """Whether arrays may be updated in place (False on JAX: update functionally)."""
        return self.row.inplace

    @property
    def is_gpu(self) -> bool:
        """Whether arrays live on a GPU (reading a scalar there is a device sync)."""
        if self.name == "torch":
            return self.device.type == "cuda"
        if self.name == "jax":
            return getattr(self.device, "platform", "cpu") != "cpu"
        return self.row.gpu

    def asarray(self, data, dtype=None, copy: bool = True):
        """``data`` (host or any backend's array) as a new array on this backend and device."""
        dtype = self.dtype if dtype is None else dtype
        if not isinstance(data, (np.ndarray, np.generic, int, float, list, tuple)):
            data = to_numpy(data)
        return self.xp.asarray(data, dtype=dtype, device=self.device, copy=copy)

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
        elif self.name == "jax":
            self.lib.effects_barrier()

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
        raise BackendError(f"backend name must be a string; got {type(name).__name__}")
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _TABLE:
        raise BackendError(f"unknown backend {name!r}; known backends: {', '.join(NAMES)}")
    return key


def _import(name: str):
    row = _TABLE[name]
    try:
        lib = importlib.import_module(row.module)
        ns = _namespace(name, lib)
    except ImportError as exc:
        raise BackendError(
            f"backend {name!r} needs the {row.module!r} package, which is not installed "
            f"({exc}); install it with: "
            + " or ".join(f"pip install 'xpnet[{e}]'" for e in row.extra.split(" or "))
        ) from None
    return lib, ns


_cache: dict[tuple, Backend] = {}
_cache_lock = threading.Lock()


def get(name: str = "numpy", device: Any = None, dtype: str | None = None) -> Backend:
    """Resolve (and cache) a Backend without making it current."""
    name = canonical_name(name)
    dtype_name = "float32" if dtype is None else str(getattr(dtype, "__name__", dtype))
    dtype_name = dtype_name.replace("torch.", "")
    if dtype_name not in _DTYPES:
        raise BackendError(f"dtype must be one of {_DTYPES}; got {dtype!r}")
    key = (name, str(device), dtype_name)
    cached = _cache.get(key)
    if cached is not None:
        return cached
    lib, xp = _import(name)
    dev = _TABLE[name].resolve_device(lib, device)
    if dtype_name == "float64" and name == "jax" and not lib.config.jax_enable_x64:
        raise BackendError(
            "backend 'jax' with dtype='float64' needs 64-bit mode: set JAX_ENABLE_X64=1 "
            "before importing jax, or call jax.config.update('jax_enable_x64', True)"
        )
    # One Backend per resolved device: get("torch") and get("torch", "cpu") (what an unpickled
    # model asks for) are the same object, so models compare and share kernels as before.
    resolved = ("resolved", name, type(dev).__name__, str(dev), dtype_name)
    with _cache_lock:
        backend = _cache.get(resolved) or Backend(
            name, xp, dev, getattr(xp, dtype_name), dtype_name, lib, _TABLE[name])
        _cache[key] = _cache[resolved] = backend
    return backend


# --------------------------------------------------------------------------- current backend

_local = threading.local()


def _default() -> Backend:
    return get(os.environ.get("XPNET_BACKEND") or "numpy")


def current() -> Backend:
    """The backend that new models and arrays use in this thread."""
    backend = getattr(_local, "backend", None)
    if backend is None:
        backend = _local.backend = _default()
    return backend


class _Using:
    """What ``use()`` returns: the new backend, which also restores the old one as a context."""

    def __init__(self, backend: Backend, previous: Backend | None):
        self.backend, self._previous = backend, previous

    def __enter__(self) -> Backend:
        return self.backend

    def __exit__(self, *exc) -> None:
        _local.backend = self._previous

    def __getattr__(self, attr):
        return getattr(self.backend, attr)

    def __eq__(self, other) -> bool:
        return self.backend is getattr(other, "backend", other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self.backend)


def use(name: str | Backend = "numpy", device: Any = None, dtype: str | None = None) -> _Using:
    """Make ``name`` the current backend of this thread.

    A plain call persists (across Jupyter cells too); ``with xn.use("torch"): ...`` restores
    the previous backend on exit. The returned object reads like the Backend it selected.
    """
    backend = name if isinstance(name, Backend) else get(name, device, dtype)
    previous = getattr(_local, "backend", None)
    _local.backend = backend
    return _Using(backend, previous)


def available() -> list[str]:
    """Backend names usable here now (cupy only with a CUDA device)."""
    names = []
    for name in NAMES:
        try:
            get(name)
        except (BackendError, Exception):  # broken installs count as unavailable too
            continue
        names.append(name)
    return names


def to_numpy(x) -> np.ndarray:
    """A host NumPy copy of an array from any supported library."""
    if isinstance(x, np.ndarray):
        return x
    # the table's host copy for the array's own library (jax arrays live in "jaxlib": default)
    row = _TABLE.get(type(x).__module__.split(".")[0])
    if row is None:
        return np.asarray(x)
    return row.to_numpy(sys.modules[row.module], x)
