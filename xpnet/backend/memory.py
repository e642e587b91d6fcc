"""Out-of-memory errors: foreseen before allocating, or translated after the fact.

``estimate_bytes`` says about how much memory training an MLP of given widths takes, and
``check_fits`` raises ``OutOfMemoryError`` (a MemoryError) before anything is allocated
when that exceeds what is free, naming the largest layer and what to lower.

CuPy, torch and XLA each raise their own out-of-memory error. ``explaining_out_of_memory``
wraps a training or evaluation loop and re-raises any of them as ``OutOfMemoryError``
naming the batch size, the data and model sizes, and what to lower first. The
library's types are looked up in ``sys.modules`` by name, so this module imports none of them.
"""

from __future__ import annotations

import contextlib
import math
import operator
import sys
from typing import TYPE_CHECKING

from .table import host_available_bytes

if TYPE_CHECKING:
    from .table import Backend

__all__ = ["MAX_LAYER_ELEMENTS", "OutOfMemoryError", "available_bytes", "check_fits",
           "check_init_fits", "estimate_bytes", "explaining_out_of_memory", "host_available_bytes",
           "is_out_of_memory", "out_of_memory_error"]


class OutOfMemoryError(MemoryError):
    """The device ran out of memory; the message names the batch and model sizes and what to lower.

    The library's own error (CuPy's, torch's or XLA's) is kept as ``__cause__``.
    """


# Each library's out-of-memory exception, as (module, attribute path). Only libraries that
# are already imported are consulted: an exception can only come from one of those.
_OOM_TYPES = (
    ("cupy", "cuda.memory.OutOfMemoryError"),
    ("torch", "OutOfMemoryError"),
    ("torch", "cuda.OutOfMemoryError"),
)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CuPy's and torch's out-of-memory errors and XLA's RESOURCE_EXHAUSTED."""
    for module, path in _OOM_TYPES:
        cls = sys.modules.get(module)
        for part in path.split("."):
            cls = getattr(cls, part, None)
        if isinstance(cls, type) and isinstance(exc, cls):
            return True
    return "RESOURCE_EXHAUSTED" in str(exc) and type(exc).__name__.endswith("RuntimeError")


def _size(n_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if n_bytes < 1024 or unit == "EiB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    return ""  # unreachable


def out_of_memory_error(exc: BaseException, backend: Backend, what: str, batch_size,
                        n_samples: int, n_params: int, widths) -> OutOfMemoryError:
    """An OutOfMemoryError for ``exc`` that names the sizes involved and what to lower.

    ``widths`` are the layer widths: activations for a batch take about
    ``batch * sum(widths)`` numbers, kept for the backward pass while training.
    """
    item = backend.item_bytes
    batch = n_samples if batch_size is None else min(batch_size, n_samples)
    params = n_params * item
    activations = batch * sum(widths) * item
    return OutOfMemoryError(
        f"{backend.name} ran out of memory on {backend.device} during {what} with "
        f"batch_size={batch_size} ({n_samples} samples held on the device) and a model of "
        f"{n_params:,} parameters ({_size(params)} in {backend.dtype_name}; training adds "
        f"gradients and optimizer state of up to 3x that, and about {_size(activations)} of "
        f"activations per batch). Lower batch_size first, then the layer widths; use "
        f"float32 rather than float64, or pass the data in smaller parts.{backend.oom_hint} "
        f"({type(exc).__name__}: {exc})"
    )


@contextlib.contextmanager
def explaining_out_of_memory(model, what: str, batch_size, n_samples: int):
    """Re-raise an out-of-memory error from the block as OutOfMemoryError about ``model``."""
    try:
        yield
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        n_params = sum(math.prod(shape) for shape in model.layout.shapes.values())
        widths = model.widths
        raise out_of_memory_error(exc, model.backend, what, batch_size, n_samples, n_params,
                                  widths) from exc


# --------------------------------------------------------------------------- before allocating

# No single parameter array may hold more elements than this: far beyond any device, and
# past what some libraries' index arithmetic is tested for, so it is refused whatever the
# free memory says.
MAX_LAYER_ELEMENTS = 2**40

_PART_NAMES = {"parameters": "parameters", "gradients": "gradients",
               "optimizer": "optimizer state", "activations": "activations of one batch",
               "snapshots": "snapshots"}


def _dense_layers(widths) -> list[tuple[int, int, int]]:
    """(n_in, n_out, parameters) of each Dense layer between consecutive ``widths``."""
    return [(a, b, a * b + b) for a, b in zip(widths[:-1], widths[1:], strict=False)]


def _check_count(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}; got {value!r}")
    return value


def _check_widths(widths) -> list[int]:
    widths = list(widths)
    if len(widths) < 2:
        raise ValueError(f"widths must list at least inputs and outputs; got {widths}")
    return [_check_count("each width", _as_int(w), 1) for w in widths]


def _as_int(value):
    """Python and NumPy integers as int; anything else unchanged, for the error to name."""
    if isinstance(value, bool):
        return value
    try:
        return operator.index(value)
    except TypeError:
        return value


def estimate_bytes(widths, batch_size: int, item_bytes: int, optimizer_slots: int,
                   snapshots: int = 0) -> dict:
    """About how many bytes training an MLP with layer ``widths`` takes, part by part.

    ``widths`` run from inputs to outputs (``[features, *hidden, outputs]``); each pair is a
    Dense layer of ``n_in * n_out`` weights and ``n_out`` biases. Returns a dict of bytes:
    ``parameters``, ``gradients`` (one per parameter), ``optimizer`` (``optimizer_slots``
    per parameter: 2 for Adam, 0 for plain SGD), ``activations`` (one batch's layer outputs
    kept for the backward pass plus their gradients: ``2 * batch * sum(widths)``),
    ``snapshots`` (``snapshots`` copies of parameters and optimizer state kept aside, as
    ``model.snapshot(optimizer=True)`` makes them; none by default) and ``total``. An
    estimate: libraries add workspace and allocator slack on top.
    """
    widths = _check_widths(widths)
    batch_size = _check_count("batch_size", batch_size, 1)
    item_bytes = _check_count("item_bytes", item_bytes, 1)
    optimizer_slots = _check_count("optimizer_slots", optimizer_slots, 0)
    snapshots = _check_count("snapshots", snapshots, 0)
    params = sum(p for _, _, p in _dense_layers(widths)) * item_bytes
    parts = {
        "parameters": params,
        "gradients": params,
        "optimizer": optimizer_slots * params,
        "activations": 2 * batch_size * sum(widths) * item_bytes,
        "snapshots": snapshots * (1 + optimizer_slots) * params,
    }
    parts["total"] = sum(parts.values())
    return parts


def available_bytes(backend: Backend) -> int | None:
    """Bytes free where ``backend`` keeps its arrays, or None when unknown.

    ``backend.free_bytes()`` where the Backend offers it; otherwise host memory for CPU
    backends and None (unknown) for GPUs.
    """
    free = getattr(backend, "free_bytes", None)
    if free is not None:
        try:
            free = free() if callable(free) else free
        except Exception:  # a library that cannot say: treat as unknown, never fail on it
            return None
        return None if free is None else int(free)
    return None if backend.is_gpu else host_available_bytes()


def _largest_layer(widths) -> str:
    layers = _dense_layers(widths)
    i, (n_in, n_out, params) = max(enumerate(layers), key=lambda item: item[1][2])
    return f"dense layer {i + 1} of {len(layers)} ({n_in} -> {n_out}, {params:,} parameters)"


def _short(widths) -> str:
    shown = [str(w) for w in widths]
    if len(shown) > 8:
        shown = [*shown[:4], "...", *shown[-2:]]
    return "[" + ", ".join(shown) + "]"


def check_fits(backend: Backend, widths, batch_size: int, optimizer_slots: int, what: str,
               advice: str = "lower the layer widths (the largest layer first) or the "
                             "batch size", snapshots: int = 0, built: bool = False) -> dict:
    """Raise OutOfMemoryError before allocating when training does not fit; else the estimate.

    Refuses any layer of more than ``MAX_LAYER_ELEMENTS`` parameters whatever the free
    memory, then compares ``estimate_bytes`` (with ``snapshots`` copies of parameters and
    optimizer state kept aside) with ``available_bytes(backend)`` (skipped
    when that is unknown) and, for GPUs, the host memory that drawing the initial weights
    takes with what the host has free. ``built``: the model exists already (``fit``), so
    its parameters are allocated (no longer in the free memory) and its weights drawn.
    ``what`` is the verb for the work ("train", "fit"); the message names the largest
    layer, each part of the estimate, what is free, and ends with ``advice``.
    """
    widths = _check_widths(widths)
    for i, (n_in, n_out, params) in enumerate(_dense_layers(widths)):
        if params > MAX_LAYER_ELEMENTS:
            raise OutOfMemoryError(
                f"cannot {what}: dense layer {i + 1} of {len(widths) - 1} ({n_in} -> {n_out}) "
                f"would hold {params:,} parameters, more than the {MAX_LAYER_ELEMENTS:,} "
                f"(2**40) one array may have; {advice}")
    item = backend.item_bytes
    estimate = estimate_bytes(widths, batch_size, item, optimizer_slots, snapshots)
    free = available_bytes(backend)
    allocated = estimate["parameters"] if built else 0
    if free is not None and estimate["total"] - allocated > free:
        parts = ", ".join(f"{label} {_size(estimate[key])}" for key, label in _PART_NAMES.items()
                          if estimate[key] or key != "snapshots")
        held = ", of which the parameters are allocated already" if built else ""
        raise OutOfMemoryError(
            f"an MLP {_short(widths)} in {backend.dtype_name} with batch size {batch_size} "
            f"and {optimizer_slots} optimizer slots per parameter needs about "
            f"{_size(estimate['total'])} to {what} ({parts}{held}), but only {_size(free)} is "
            f"free on {backend.name} ({backend.device}); the largest layer is "
            f"{_largest_layer(widths)}; {advice}")
    if backend.is_gpu and not built:
        _check_host_init(widths, estimate["parameters"], what, advice)
    return estimate


def _init_host_bytes(param_bytes: int, largest_layer_params: int) -> int:
    """Host memory drawing initial weights takes: every parameter in its dtype, plus the
    largest layer once more in float64 while it is drawn (layers are drawn one at a time)."""
    return param_bytes + 8 * largest_layer_params


def _check_host_init(widths, param_bytes: int, what: str, advice: str) -> None:
    """A model on a GPU still draws its initial weights on the host (issue 9's
    "Unable to allocate 74.5 GiB ... float64" came from there)."""
    need = _init_host_bytes(param_bytes, max(p for _, _, p in _dense_layers(widths)))
    free = host_available_bytes()
    if free is not None and need > free:
        raise OutOfMemoryError(
            f"an MLP {_short(widths)} draws its initial weights on the host, which needs about "
            f"{_size(need)} of host memory to {what}, but only {_size(free)} is free; the "
            f"largest layer is {_largest_layer(widths)}; {advice}")


def check_init_fits(backend: Backend, layers: list[tuple[str, int]], owner: str,
                    advice: str = "lower the layer widths (the largest layer first)") -> None:
    """Raise OutOfMemoryError before a model's initial weights are drawn when they would
    not fit, naming the largest layer, the estimate and what is free.

    ``layers`` holds (the layer as the caller names it, its number of parameters) for
    each layer with parameters. The weights are drawn on the host in float64, one layer
    at a time, kept in the backend's dtype and then copied onto the backend: on a CPU
    backend all of that is host memory; on a GPU the copy is compared with the device's
    free memory (when known) and the rest with the host's. A layer of more than
    ``MAX_LAYER_ELEMENTS`` parameters is refused whatever the free memory.
    """
    if not layers:
        return
    largest_name, largest = max(layers, key=lambda layer: layer[1])
    if largest > MAX_LAYER_ELEMENTS:
        raise OutOfMemoryError(
            f"{owner}: {largest_name} would hold more than the {MAX_LAYER_ELEMENTS:,} (2**40) "
            f"parameters one array may have; {advice}")
    params = sum(count for _, count in layers) * backend.item_bytes
    host = _init_host_bytes(params, largest)
    where = f"{backend.name} ({backend.device})"
    needs = [(host, host_available_bytes(), "host"), (params, available_bytes(backend), where)] \
        if backend.is_gpu else [(host + params, host_available_bytes(), "host")]
    for need, free, place in needs:
        if free is not None and need > free:
            raise OutOfMemoryError(
                f"{owner}: the initial weights need about {_size(need)} of {place} memory "
                f"({_size(params)} of parameters in {backend.dtype_name}, drawn on the host "
                f"in float64 one layer at a time and copied onto {where}), but only "
                f"{_size(free)} is free; the largest is {largest_name}; {advice}")
