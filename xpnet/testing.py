"""A kit for users who write layers or port models: gradient checks and backend parity.

``check_grads`` compares a model's hand-written backprop with float64 central finite
differences; ``assert_parity`` trains the same model from the same seed on several
backends and compares every parameter with the NumPy run. Both return a report and raise
AssertionError (naming the worst parameter) when beyond tolerance, so they drop into any
test suite::

    from xpnet.testing import check_grads, assert_parity
    check_grads(model, X, y, loss="cross_entropy")
    assert_parity(lambda: xn.mlp([4, 16, 3], seed=0), X, y, loss="cross_entropy", steps=5)
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import checks
from .backend import table as _backend
from .model import Sequential
from .nn import losses
from .nn import optim as optimizers
from .nn.layers import ModelError

__all__ = ["GradReport", "PARITY_TOL", "ParityReport", "assert_parity", "check_grads"]

# float32 runs differ by a few ulps per step (BLAS summation order); 1e-4 relative leaves
# room for GPUs and TF32-free cuBLAS while a real bug moves parameters by 1e-3 or more.
PARITY_TOL = {"float32": 1e-4, "float64": 1e-10}


# --------------------------------------------------------------------------- gradient check


@dataclass
class GradReport:
    """Result of ``check_grads``: relative error per parameter and the worst one."""

    errors: dict[str, float]
    worst: str
    worst_error: float
    worst_index: tuple
    analytic: float
    numeric: float
    tolerance: float
    checked: dict[str, int] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.worst_error <= self.tolerance

    def __str__(self) -> str:
        rows = "\n".join(f"  {name:>12}: {err:.3e} ({self.checked[name]} entries)"
                         for name, err in self.errors.items())
        return (f"gradient check ({'passed' if self.passed else 'FAILED'}, tolerance "
                f"{self.tolerance:g}); worst {self.worst}{list(self.worst_index)}: analytic "
                f"{self.analytic:.6g} vs numeric {self.numeric:.6g}\n{rows}")


def _float64_copy(model):
    """The same layers and parameters in float64 (on NumPy when the backend has no float64)."""
    try:
        target = _backend.resolve(model.backend, dtype="float64")
    except _backend.BackendError:  # JAX without x64 mode: the reference is the float64 one
        target = _backend.get(_backend.REFERENCE, dtype="float64")
    twin = Sequential(*copy.deepcopy(model.layers), seed=model.seed, backend=target)
    twin.set_params({k: model.backend.to_numpy(v).astype(np.float64)
                     for k, v in model.params.items()})
    twin.set_state({k: model.backend.to_numpy(v).astype(np.float64)
                    for k, v in model.state.items()})
    return twin


def _entries(shape, max_entries, rng) -> list[tuple]:
    every = list(np.ndindex(*shape))
    if max_entries is None or len(every) <= max_entries:
        return every
    picked = rng.choice(len(every), size=max_entries, replace=False)
    return [every[i] for i in sorted(picked)]


def _nan_last(error: float) -> float:
    """``error`` for ranking, a NaN above every number."""
    return math.inf if math.isnan(error) else error


def check_grads(model, X, y, loss: str = "mse", eps: float = 1e-6, tolerance: float = 1e-5,
                max_entries: int | None = 64, seed: int = 0, raise_error: bool = True,
                training: bool = False) -> GradReport:
    """Check ``model``'s analytic gradients against float64 central finite differences.

    Runs on a float64 copy (the model itself is not touched), in inference mode (Dropout
    off, BatchNorm on its running statistics) unless ``training``: then every pass runs in
    training mode with the same Dropout masks (drawn from ``seed``) and batch statistics.
    Per parameter the error is ``max|analytic - numeric| / max(max|analytic|,
    max|numeric|, 1e-12)`` over up to ``max_entries`` entries (drawn with ``seed``; None
    checks all). Raises AssertionError naming the worst parameter, its entry and both
    values when that error exceeds ``tolerance`` (unless ``raise_error=False``).

    ``loss`` may be a name, a Loss or a user's callable ``(xp, Y, T) -> (loss, dY)``; a
    user's loss is checked as a layer is: its ``dY`` against central differences of its own
    value over the model's output, reported beside the parameters as
    ``"custom loss '<name>'"``.
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"check_grads: model must be an xpnet Sequential; got "
                        f"{type(model).__name__}")
    eps = checks.real("check_grads", "eps", eps, 0.0, low_open=True)
    tolerance = checks.real("check_grads", "tolerance", tolerance, 0.0)
    max_entries = checks.integer("check_grads", "max_entries", max_entries, 1, allow_none=True)
    seed = checks.integer("check_grads", "seed", seed, 0)
    raise_error = checks.boolean("check_grads", "raise_error", raise_error)
    training = checks.boolean("check_grads", "training", training)
    entry = losses.resolve(loss)
    if not model.params and entry.builtin:  # else the report would pass with nothing checked
        raise ModelError("check_grads: the model has no parameters (no Dense layer) and the "
                         "loss is built in: nothing to check")
    twin = _float64_copy(model)
    Xd = twin.device_inputs(X)
    Td = twin.device_targets(y, entry, Xd)
    xp, backend = twin.backend.xp, twin.backend

    def forward(params=None):  # a new RNG each pass: the same masks every time
        return twin.forward(Xd, params, training=training,
                            rng=np.random.default_rng(seed) if training else None)

    Y, backprops = forward()
    grads = twin.backward(entry(xp, Y, Td)[1], backprops)
    host = {k: backend.to_numpy(v).copy() for k, v in twin.params.items()}
    rng = np.random.default_rng(seed)

    def objective(name, value):
        params = dict(twin.params)
        params[name] = backend.asarray(value)
        return float(entry(xp, forward(params)[0], Td)[0])

    # name -> (host values, analytic gradient, the objective of new values)
    targets: dict[str, tuple[Any, Any, Callable[[Any], float]]] = {
        name: (base, backend.to_numpy(grads[name]),
               functools.partial(objective, name))
        for name, base in host.items()}
    if not entry.builtin:  # a user's loss: its dY against its own value, as a layer's grads
        targets[entry.name] = (
            backend.to_numpy(Y).copy(), backend.to_numpy(entry(xp, Y, Td)[1]),
            lambda value: float(entry(xp, backend.asarray(value), Td)[0]))
    errors: dict[str, float] = {}
    checked: dict[str, int] = {}
    # (name, error, entry, analytic, numeric) of the worst parameter so far
    worst: tuple[str | None, float, tuple, float, float] = (None, -1.0, (), 0.0, 0.0)
    for name, (base, analytic_all, f) in targets.items():
        gaps, scale = [], 1e-12
        for index in _entries(base.shape, max_entries, rng):
            bumped = base.copy()
            bumped[index] = base[index] + eps
            up = f(bumped)
            bumped[index] = base[index] - eps
            numeric = (up - f(bumped)) / (2.0 * eps)
            analytic = float(analytic_all[index])
            gaps.append((abs(analytic - numeric), index, analytic, numeric))
            scale = max(scale, abs(analytic), abs(numeric))
        # a NaN compares false with everything: rank it worst, or a NaN gradient would pass
        gap, index, analytic, numeric = max(gaps, key=lambda g: _nan_last(g[0]))
        errors[name], checked[name] = gap / scale, len(gaps)
        if _nan_last(errors[name]) > _nan_last(worst[1]):
            worst = (name, errors[name], index, analytic, numeric)
    assert worst[0] is not None  # every target has an entry: the first error beats -1
    report = GradReport(errors, worst[0], worst[1], worst[2], worst[3], worst[4], tolerance,
                        checked)
    if raise_error and not report.passed:
        raise AssertionError(f"check_grads: parameter {report.worst!r} has relative error "
                             f"{report.worst_error:.3e} > tolerance {tolerance:g}\n{report}")
    return report


# --------------------------------------------------------------------------- backend parity


@dataclass
class ParityReport:
    """Result of ``assert_parity``: per backend, the largest relative gap of each parameter."""

    diffs: dict[str, dict[str, float]]
    skipped: dict[str, str]
    tolerance: float
    dtype: str

    @property
    def worst(self) -> tuple[str | None, str | None, float]:
        """(backend, parameter, gap) of the largest gap; (None, None, 0.0) when none ran."""
        cases = [(b, p, g) for b, per in self.diffs.items() for p, g in per.items()]
        return max(cases, key=lambda c: c[2]) if cases else (None, None, 0.0)

    @property
    def passed(self) -> bool:
        return self.worst[2] <= self.tolerance

    def __str__(self) -> str:
        lines = [f"parity against numpy ({self.dtype}, tolerance {self.tolerance:g}):"]
        for name, per in self.diffs.items():
            lines.append(f"  {name}: " + ", ".join(f"{p}={g:.2e}" for p, g in per.items()))
        lines += [f"  {name}: skipped ({why})" for name, why in self.skipped.items()]
        return "\n".join(lines)


def _optimizer_factory(optimizer, lr) -> Callable[[], optimizers.Optimizer]:
    if optimizer is None:
        optimizer = "sgd"
    if isinstance(optimizer, optimizers.Optimizer):
        if optimizer.state:
            raise ValueError("assert_parity: pass a fresh Optimizer (this one has state)")
        return lambda: copy.deepcopy(optimizer)
    if callable(optimizer):
        return optimizer
    return lambda: optimizers.resolve(optimizer, 0.01 if lr is None else lr)


def _train(build, label, dtype, X, y, loss, make_opt, steps, batch_size, seed) -> dict:
    with _backend.use(label, dtype=dtype) as expected:
        model = build()
        if model.backend is not expected:
            raise ValueError(f"assert_parity: build() made a model on {model.backend!r}, not on "
                             f"the current backend {label!r} ({dtype}); create it without a "
                             "backend argument")
        model.fit(X, y, loss=loss, optimizer=make_opt(), epochs=steps, batch_size=batch_size,
                  seed=seed)
        # the layers' state (BatchNorm's running statistics) is compared with the parameters
        arrays = {**model.params, **model.state}
        return {k: model.backend.to_numpy(v).astype(np.float64) for k, v in arrays.items()}


def _parity_backends(backends) -> list[str]:
    """``backends`` as a list of names: "available" for all usable here; one str is one name."""
    if backends == "available":
        return _backend.available()
    return [backends] if isinstance(backends, str) else list(backends)


def _gap(a: np.ndarray, ref: np.ndarray) -> float:
    """max |a - ref| / (1 + |ref|): relative for large entries, absolute near zero."""
    return float(np.max(np.abs(a - ref) / (1.0 + np.abs(ref)), initial=0.0))


def assert_parity(build: Callable, X, y, backends: Iterable[str] | str = "available", *,
                  steps: int = 5, loss: str = "mse", optimizer=None, lr: float | None = None,
                  batch_size: int | None = None, dtype: str = "float32", seed: int = 0,
                  tolerance: float | None = None, raise_error: bool = True) -> ParityReport:
    """Train ``build()`` on each backend and compare every parameter with the NumPy run.

    ``build`` takes no argument and returns a model on the current backend (``xn.mlp(...,
    seed=0)`` does); it is called once per backend inside ``xn.use(name, dtype=dtype)``.
    ``backends``: "available", one name or a list of names; NumPy is always the
    reference; names that cannot run here are skipped with the reason. Training is
    ``steps`` epochs (full batch by default, so ``steps`` updates) with the optimizer from
    ``optimizer`` (an Optimizer, copied per backend, a factory, or a name with ``lr``).
    Raises AssertionError naming the worst backend and parameter when a gap exceeds
    ``tolerance`` (default 1e-4 in float32, 1e-10 in float64).
    """
    if not callable(build):
        raise TypeError(f"assert_parity: build must be a callable that returns a model; got "
                        f"{type(build).__name__}")
    if not isinstance(dtype, str) or dtype not in PARITY_TOL:
        raise ValueError(f"assert_parity: dtype must be one of {', '.join(PARITY_TOL)}; "
                         f"got {dtype!r}")
    tolerance = PARITY_TOL[dtype] if tolerance is None else \
        checks.real("assert_parity", "tolerance", tolerance, 0.0)
    steps = checks.integer("assert_parity", "steps", steps, 1)
    batch_size = checks.integer("assert_parity", "batch_size", batch_size, 1, allow_none=True)
    seed = checks.integer("assert_parity", "seed", seed, 0)
    raise_error = checks.boolean("assert_parity", "raise_error", raise_error)
    names = _parity_backends(backends)
    make_opt = _optimizer_factory(optimizer, lr)
    reference = _train(build, _backend.REFERENCE, dtype, X, y, loss, make_opt, steps,
                       batch_size, seed)
    diffs, skipped = {}, {}
    for label in map(_backend.canonical_name, names):
        if label == _backend.REFERENCE:
            continue
        try:
            _backend.get(label, dtype=dtype)
        except _backend.BackendError as exc:
            skipped[label] = str(exc)
            continue
        params = _train(build, label, dtype, X, y, loss, make_opt, steps, batch_size, seed)
        diffs[label] = {k: _gap(params[k], reference[k]) for k in reference}
    report = ParityReport(diffs, skipped, tolerance, dtype)
    if raise_error and not report.passed:
        backend, param, gap = report.worst
        raise AssertionError(f"assert_parity: parameter {param!r} on {backend} differs from "
                             f"numpy by {gap:.3e} > tolerance {tolerance:g}\n{report}")
    return report

