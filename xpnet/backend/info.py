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
    for label in backends.NAMES:
        try:
            backend = backends.get(label)
        except Exception as exc:  # a broken install is as unusable as a missing one
            unusable.append({"name": label, "reason": " ".join(str(exc).split())})
            continue
        usable.append({"name": label, "version": getattr(backend.lib, "__version__", "?"),
                       "devices": backend.devices()})
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
