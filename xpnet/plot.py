"""Figures: learning curves (the seed articles' error-against-epochs plot) and decision boundaries.

matplotlib is an optional extra (``pip install 'xpnet[plot]'``), imported only when a
function here is called. Without a display (no ``DISPLAY`` on Linux, CI, a server) the
non-interactive Agg backend is selected, so saving a PNG always works.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["decision_boundaries", "decision_boundary", "learning_curves"]


def _pyplot():
    """matplotlib.pyplot, with Agg chosen when nothing could show a window."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError(
            "xpnet.plot needs matplotlib, which is not installed; install the plot extra: "
            "pip install 'xpnet[plot]'"
        ) from exc
    headless = sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if headless and "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(history, metric: str) -> list[float]:
    """The per-epoch values of ``metric`` from a History, a dict of lists, or a plain sequence."""
    record = getattr(history, "history", history)
    if isinstance(record, dict):
        if metric not in record:
            raise KeyError(f"learning_curves: metric {metric!r} not recorded; "
                           f"have {sorted(record)}")
        return [float(v) for v in record[metric]]
    return [float(v) for v in record]


def _axes(plt, ax, figsize=(6.0, 4.0)):
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize)
    return fig, ax


def _save(fig, path) -> None:
    if path is not None:
        fig.savefig(os.fspath(path), dpi=100, bbox_inches="tight")


def learning_curves(histories, labels: Sequence[str] | None = None, logy: bool | str = False,
                    metric: str = "loss", ax=None, path=None) -> Any:
    """Plot ``metric`` against epoch for several runs; returns the matplotlib Figure.

    ``histories``: one or a list of Histories (from ``fit``), dicts of per-epoch lists,
    or plain sequences of numbers. ``labels`` names each run (for example
    ``["lr=0.01", "lr=0.005"]``). ``logy=True`` draws the semilog version of the figure;
    ``logy="both"`` draws the linear and the semilog panels side by side, as the seed
    articles do. ``ax`` draws into an existing Axes; ``path`` saves a PNG there.
    """
    if hasattr(histories, "history") or isinstance(histories, dict):
        histories = [histories]
    histories = list(histories)
    if not histories:
        raise ValueError("learning_curves: no histories given")
    if labels is not None and len(labels) != len(histories):
        raise ValueError(f"learning_curves: {len(labels)} labels for {len(histories)} histories")
    if logy not in (True, False, "both"):
        raise ValueError(f"learning_curves: logy must be True, False or 'both'; got {logy!r}")
    if logy == "both" and ax is not None:
        raise ValueError("learning_curves: logy='both' draws two panels; it cannot use one ax")
    series = [_series(h, metric) for h in histories]
    plt = _pyplot()
    if logy == "both":
        fig, axes = plt.subplots(1, 2, figsize=(11.0, 4.0))
        for panel, log in zip(axes, (False, True), strict=True):
            _draw_curves(panel, series, labels, log, metric)
    else:
        fig, ax = _axes(plt, ax)
        _draw_curves(ax, series, labels, bool(logy), metric)
    _save(fig, path)
    return fig


def _draw_curves(ax, series, labels, logy: bool, metric: str) -> None:
    for i, values in enumerate(series):
        label = labels[i] if labels is not None else (f"run {i}" if len(series) > 1 else None)
        ax.plot(range(1, len(values) + 1), values, label=label)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric + (" (log scale)" if logy else ""))
    if labels is not None or len(series) > 1:
        ax.legend()
    ax.grid(True, which="both" if logy else "major", alpha=0.3)


def _grid(X: np.ndarray, steps: int):
    pad = 0.1 * (X.max(axis=0) - X.min(axis=0) + 1e-12)
    lo, hi = X.min(axis=0) - pad, X.max(axis=0) + pad
    xx, yy = np.meshgrid(np.linspace(lo[0], hi[0], steps), np.linspace(lo[1], hi[1], steps))
    return xx, yy, np.column_stack([xx.ravel(), yy.ravel()])


def _classes(out: np.ndarray) -> np.ndarray:
    """Predicted class per row: argmax of several outputs, or threshold 0 on one logit."""
    if out.ndim == 2 and out.shape[1] > 1:
        return out.argmax(axis=1)
    return (out.reshape(-1) >= 0).astype(np.int64)


def decision_boundary(model, X, y, ax=None, path=None, steps: int = 200) -> Any:
    """Colour the plane by the class ``model`` predicts and scatter the 2-D points ``X``.

    ``model`` is an xpnet Sequential (logits out) or anything with ``predict`` returning
    class labels (a scikit-learn estimator). Returns the Figure; ``path`` saves a PNG.
    """
    from .backend import to_numpy

    X, y = np.asarray(to_numpy(X), dtype=np.float64), np.asarray(to_numpy(y)).reshape(-1)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(f"decision_boundary: X must have shape (n, 2); got {X.shape}")
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"decision_boundary: X has {X.shape[0]} rows but y has {y.shape[0]}")
    plt = _pyplot()
    fig, ax = _axes(plt, ax, figsize=(5.0, 5.0))
    xx, yy, grid = _grid(X, steps)
    out = np.asarray(to_numpy(model.predict(grid)))
    labels = _classes(out) if hasattr(model, "params") else out.reshape(-1)
    # Labels may be strings (scikit-learn): colour by their index among the sorted classes.
    classes, codes = np.unique(np.concatenate([labels, y]), return_inverse=True)
    zz, colours = codes[:labels.shape[0]].reshape(xx.shape), codes[labels.shape[0]:]
    levels = np.arange(len(classes) + 1) - 0.5
    ax.contourf(xx, yy, zz, levels=levels, alpha=0.3, cmap="coolwarm")
    ax.scatter(X[:, 0], X[:, 1], c=colours, s=12, vmin=0, vmax=max(len(classes) - 1, 1),
               cmap="coolwarm", edgecolors="k", linewidths=0.3)
    ax.set_xlabel("x1")
    ax.set_ylabel("x2")
    _save(fig, path)
    return fig


def decision_boundaries(models, X, y, titles: Sequence[str] | None = None, path=None,
                        steps: int = 200) -> Any:
    """Decision boundaries of several models side by side, one panel each; returns the Figure.

    The seed articles' point in one picture: ``[linear_model, hidden_layer_model]`` on
    spirals or XOR shows the straight cut a model without a hidden layer is limited to.
    """
    models = list(models)
    if not models:
        raise ValueError("decision_boundaries: no models given")
    if titles is not None and len(titles) != len(models):
        raise ValueError(f"decision_boundaries: {len(titles)} titles for {len(models)} models")
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(models), figsize=(4.5 * len(models), 4.5), squeeze=False)
    for i, (model, ax) in enumerate(zip(models, axes[0], strict=True)):
        decision_boundary(model, X, y, ax=ax, steps=steps)
        if titles is not None:
            ax.set_title(titles[i])
    _save(fig, path)
    return fig
