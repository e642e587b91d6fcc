"""Data in and out of the command line: what ``xpnet train`` and ``xpnet predict`` read and write.

Kept apart from ``cli.py`` so that file stays argument parsing and commands. Everything
here is host-side NumPy; errors are ValueError with one line that names the file or flag.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from ..data import datasets

# --------------------------------------------------------------------------- train


def load_data(name: str, seed: int):
    """(X, y) of a bundled set (generated sets take ``seed``) or of a .npz/.csv file."""
    key = name.lower().replace("-", "_")
    if key in datasets.DATASETS:
        make = datasets.DATASETS[key]
        takes_seed = "seed" in make.__code__.co_varnames[:make.__code__.co_argcount]
        return make(seed=seed) if takes_seed else make()
    return datasets.load(name)


def infer_loss(y: np.ndarray) -> str:
    """``--loss auto``: cross entropy for integer labels, mean squared error otherwise."""
    return "cross_entropy" if np.issubdtype(y.dtype, np.integer) else "mse"


def output_width(y: np.ndarray, loss: str) -> int:
    """Width of the model's last layer: one logit per class, else one per target column."""
    if loss == "cross_entropy":
        if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1 or y.min() < 0:
            raise ValueError("--loss cross_entropy needs integer class labels 0, 1, ... in y")
        return max(int(y.max()) + 1, 2)
    return 1 if y.ndim == 1 else y.shape[1]


def describe_task(y: np.ndarray, loss: str) -> str:
    """'3 classes', 'regression' or 'binary targets', for the summary line."""
    if loss == "cross_entropy":
        return f"{int(y.max()) + 1} classes"
    return "regression" if loss == "mse" else "binary targets"


def split(X, y, fraction: float, seed: int):
    """Shuffle once (files may be sorted by class), then hold out the last ``fraction``.

    Returns ``((X_train, y_train), (X_val, y_val))``, or ``((X, y), None)`` for fraction 0.
    """
    order = np.random.default_rng(seed).permutation(X.shape[0])
    X, y = X[order], y[order]
    n_val = int(round(X.shape[0] * fraction))
    if fraction and not 1 <= n_val < X.shape[0]:
        raise ValueError(f"--validation-split {fraction} of {X.shape[0]} samples leaves no "
                         "validation or no training data; use 0 to train on everything")
    if not n_val:
        return (X, y), None
    return (X[:-n_val], y[:-n_val]), (X[-n_val:], y[-n_val:])


# --------------------------------------------------------------------------- predict


def read_features(name: str, n_in: int | None):
    """(X, y or None) to predict on: a .npz needs X (y optional); a .csv with exactly
    ``n_in`` columns is features only, any other .csv or name goes to ``load_data``."""
    if name.lower().endswith(".npz") and os.path.isfile(name):
        return _read_npz_features(name)
    if name.lower().endswith(".csv") and os.path.isfile(name):
        try:
            table = np.loadtxt(name, delimiter=",", ndmin=2, skiprows=_header_rows(name))
        except ValueError as exc:
            raise ValueError(f"{name!r} is not a table of numbers: {exc}") from None
        if n_in is not None and table.shape[1] == n_in:
            return table, None
    return load_data(name, seed=0)


def _read_npz_features(name: str):
    if not zipfile.is_zipfile(name):
        raise ValueError(f"{name!r} is not an .npz file (not a zip archive)")
    try:
        with np.load(name, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files if k in ("X", "y")}
    except Exception as exc:  # bad zip, pickled objects, truncation: one clear line
        raise ValueError(f"{name!r} is not a readable .npz file "
                         f"({type(exc).__name__}: {exc})") from None
    if "X" not in arrays:
        raise ValueError(f"{name!r} holds no array named X")
    return arrays["X"], arrays.get("y")


def _header_rows(path: str) -> int:
    with open(path) as fh:
        first = fh.readline().split(",")
    try:
        [float(cell) for cell in first]
    except ValueError:
        return 1
    return 0


def format_cell(v) -> str:
    """One prediction as printed: integers as they are, floats to 6 significant digits."""
    return str(int(v)) if np.issubdtype(np.asarray(v).dtype, np.integer) else f"{float(v):.6g}"


def write_predictions(path: str, result: np.ndarray) -> None:
    """Write ``result`` to ``path``: NumPy's format for .npy, comma-separated text otherwise."""
    if path.endswith(".npy"):
        np.save(path, result)
        return
    fmt = "%d" if np.issubdtype(result.dtype, np.integer) else "%.6g"
    np.savetxt(path, result, fmt=fmt, delimiter=",")
