"""What xpnet can use here: versions, BLAS, and every backend with its devices.

``report()`` gathers it as a dict (for bug reports and scripts); ``format_report()`` is the
text ``python -m xpnet info`` prints.
"""

from __future__ import annotations

import platform

import numpy as np

from ..version import __version__
from . import table as backends

__all__ = ["report", "format_report"]


def report() -> dict:
    """xpnet, Python and NumPy/BLAS versions, then each backend: usable (library version and
    devices) or not (the reason, one line)."""
    usable, unusable = [], []
    for name in backends.NAMES:
        try:
            backend = backends.get(name)
        except Exception as exc:  # a broken install is as unusable as a missing one
            unusable.append({"name": name, "reason": " ".join(str(exc).split())})
            continue
        usable.append({"name": name, "version": getattr(backend.lib, "__version__", "?"),
                       "devices": _devices(name, backend)})
    return {"xpnet": __version__, "python": platform.python_version(),
            "system": platform.system(), "machine": platform.machine(),
            "numpy": np.__version__, "blas": _blas(), "usable": usable, "unusable": unusable}


def format_report(info: dict) -> str:
    """``report()`` as the lines ``xpnet info`` prints (no trailing newline)."""
    lines = [f"xpnet {info['xpnet']}  Python {info['python']}  "
             f"{info['system']} {info['machine']}",
             f"numpy {info['numpy']}  BLAS: {info['blas']}",
             "backends usable here:"]
    for row in info["usable"]:
        lines.append(f"  {row['name']:<17} {row['version']:<12} {', '.join(row['devices'])}")
    if info["unusable"]:
        lines.append("not usable here:")
        lines.extend(f"  {row['name']:<17} {row['reason']}" for row in info["unusable"])
    return "\n".join(lines)


def _blas() -> str:
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # older NumPy has no dict mode; the BLAS line is a nicety
        return "unknown"


def _gib(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:.1f}"


def _devices(name: str, backend) -> list[str]:
    lib = backend.lib
    if name == "torch":
        if not lib.cuda.is_available():
            return ["cpu (no CUDA device)"]
        found = ["cpu"]
        for i in range(lib.cuda.device_count()):
            free, total = lib.cuda.mem_get_info(i)
            found.append(f"cuda:{i} {lib.cuda.get_device_name(i)} "
                         f"({_gib(free)} of {_gib(total)} GiB free)")
        return found
    if name == "cupy":
        return [_cupy_device(lib, i) for i in range(lib.cuda.runtime.getDeviceCount())]
    if name == "jax":
        return [str(d) for d in lib.devices()]
    return [str(backend.device)]


def _cupy_device(lib, i: int) -> str:
    props = lib.cuda.runtime.getDeviceProperties(i)
    with lib.cuda.Device(i):
        free, total = lib.cuda.runtime.memGetInfo()
    label = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return f"{i}: {label} ({_gib(free)} of {_gib(total)} GiB free)"
