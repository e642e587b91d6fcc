"""Small data sets: generated from a seed on the host, shipped, or read from a file.

Every generator returns ``(X, y)`` as NumPy arrays: ``X`` float32 of shape
``(n_samples, n_features)``; ``y`` int64 class labels for classification sets or float32
targets for regression sets. Nothing is downloaded; the same seed gives the same arrays
on every machine (randomness comes from ``xpnet.data.host_rng``).

Classification sets are returned in a shuffled order, so that a trailing validation
split (``fit(validation_split=...)``) holds every class.
"""

from __future__ import annotations

import csv
import math
import os
import zipfile
from collections.abc import Callable

import numpy as np

from .validate import DataError, _cast_host, _real_numbers, host_rng

__all__ = [
    "DATASETS", "circles", "digits", "hidden_layer_toy", "linear", "load", "load_file",
    "moons", "spirals", "two_layer_toy", "xor", "xor_table",
]


# --------------------------------------------------------------------------- validation


def _count(name: str, value, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an int >= {low}; got {value!r}")
    return int(value)


def _real(name: str, value, low: float | None = None, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a real number; got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must lie in [{low}, {high}]; got {value!r}")
    return value


def _classification(X: np.ndarray, y: np.ndarray, rng: np.random.Generator):
    """Shuffle rows with ``rng`` and fix the dtypes (float32 X, int64 labels)."""
    order = rng.permutation(X.shape[0])
    return X[order].astype(np.float32), y[order].astype(np.int64)


def _split(n_samples: int, n_classes: int) -> list[int]:
    """Samples per class, as even as possible (the first classes get the remainder)."""
    base, extra = divmod(n_samples, n_classes)
    return [base + (k < extra) for k in range(n_classes)]


# --------------------------------------------------------------------------- 2-D classification


def spirals(n_samples: int = 1000, noise: float = 0.05, turns: float = 2.0,
            seed: int | None = 0):
    """Two interleaved spirals in the plane (labels 0 and 1): the bundled training set.

    Each arm winds ``turns`` times around the origin; the second arm is the first turned
    by half a circle, so no straight line separates them. ``noise`` is the standard
    deviation of Gaussian jitter added to each coordinate; the arms end at radius 1.
    """
    n_samples = _count("spirals: n_samples", n_samples, 2)
    noise = _real("spirals: noise", noise, 0.0)
    turns = _real("spirals: turns", turns, 0.1)
    rng = host_rng(seed)
    parts, labels = [], []
    for k, n in enumerate(_split(n_samples, 2)):
        # sqrt spreads points evenly along the arm instead of crowding the centre
        t = np.sqrt(rng.uniform(0.0, 1.0, n)) * turns * 2.0 * math.pi
        radius = t / (turns * 2.0 * math.pi)
        angle = t + k * math.pi
        arm = np.column_stack([radius * np.cos(angle), radius * np.sin(angle)])
        parts.append(arm + rng.normal(0.0, noise, arm.shape))
        labels.append(np.full(n, k))
    return _classification(np.concatenate(parts), np.concatenate(labels), rng)


def moons(n_samples: int = 500, noise: float = 0.1, seed: int | None = 0):
    """Two interleaving half circles (labels 0 and 1), as scikit-learn's ``make_moons``."""
    n_samples = _count("moons: n_samples", n_samples, 2)
    noise = _real("moons: noise", noise, 0.0)
    rng = host_rng(seed)
    n0, n1 = _split(n_samples, 2)
    a0, a1 = np.linspace(0.0, math.pi, n0), np.linspace(0.0, math.pi, n1)
    upper = np.column_stack([np.cos(a0), np.sin(a0)])
    lower = np.column_stack([1.0 - np.cos(a1), 0.5 - np.sin(a1)])
    X = np.concatenate([upper, lower])
    X = X + rng.normal(0.0, noise, X.shape)
    return _classification(X, np.repeat([0, 1], [n0, n1]), rng)


def circles(n_samples: int = 500, noise: float = 0.05, factor: float = 0.5,
            seed: int | None = 0):
    """A small circle (label 1) inside a large one (label 0), as ``make_circles``.

    ``factor`` is the inner radius relative to the outer one (0 < factor < 1).
    """
    n_samples = _count("circles: n_samples", n_samples, 2)
    noise = _real("circles: noise", noise, 0.0)
    factor = _real("circles: factor", factor, 0.0, 1.0)
    if factor in (0.0, 1.0):
        raise ValueError(f"circles: factor must lie strictly between 0 and 1; got {factor}")
    rng = host_rng(seed)
    n_out, n_in = _split(n_samples, 2)
    a_out = np.linspace(0.0, 2.0 * math.pi, n_out, endpoint=False)
    a_in = np.linspace(0.0, 2.0 * math.pi, n_in, endpoint=False)
    X = np.concatenate([np.column_stack([np.cos(a_out), np.sin(a_out)]),
                        factor * np.column_stack([np.cos(a_in), np.sin(a_in)])])
    X = X + rng.normal(0.0, noise, X.shape)
    return _classification(X, np.repeat([0, 1], [n_out, n_in]), rng)


def xor(n_samples: int = 400, noise: float = 0.0, seed: int | None = 0):
    """Points uniform in [-1, 1]^2 labelled 1 where the signs of the two coordinates differ.

    The classic problem a single linear layer cannot solve. ``noise`` jitters the points
    after labelling (so some cross the axes). For the 4-row truth table see ``xor_table``.
    """
    n_samples = _count("xor: n_samples", n_samples, 1)
    noise = _real("xor: noise", noise, 0.0)
    rng = host_rng(seed)
    X = rng.uniform(-1.0, 1.0, (n_samples, 2))
    y = ((X[:, 0] > 0) != (X[:, 1] > 0)).astype(np.int64)
    X = X + rng.normal(0.0, noise, X.shape) if noise else X
    return X.astype(np.float32), y


def xor_table():
    """The XOR truth table: X = [[0,0],[0,1],[1,0],[1,1]], y = [0,1,1,0]."""
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    return X, np.array([0, 1, 1, 0], dtype=np.int64)


# --------------------------------------------------------------------------- regression


def linear(m=2.0, b: float = 1.0, n: int = 100, noise: float = 0.0, low: float = -1.0,
           high: float = 1.0, seed: int | None = 0):
    """Samples of the line y = m x + b (the seed articles' first example), float32 targets.

    ``m`` a number gives one input column; a sequence of d slopes gives d input columns
    and y = X @ m + b (the articles' vectorised, multi-dimensional inputs). Inputs are
    uniform in [low, high); ``noise`` is the standard deviation of Gaussian noise on y.
    Returns X of shape (n, d) and y of shape (n,).
    """
    try:
        slopes = np.atleast_1d(np.asarray(m, dtype=np.float64))
    except (TypeError, ValueError):
        slopes = np.empty((0,))
    if slopes.ndim != 1 or slopes.size == 0 or not np.all(np.isfinite(slopes)):
        raise ValueError(f"linear: m must be a finite number or a 1-D sequence of them; got {m!r}")
    b = _real("linear: b", b)
    n = _count("linear: n", n, 1)
    noise = _real("linear: noise", noise, 0.0)
    low, high = _real("linear: low", low), _real("linear: high", high)
    if not low < high:
        raise ValueError(f"linear: low must be below high; got low={low}, high={high}")
    rng = host_rng(seed)
    X = rng.uniform(low, high, (n, slopes.size))
    y = X @ slopes + b
    if noise:
        y = y + rng.normal(0.0, noise, n)
    return X.astype(np.float32), y.astype(np.float32)


# --------------------------------------------------------------------------- the articles' toys


def hidden_layer_toy():
    """The 4-sample problem of "Intermediate layers and backpropagation".

    X = [[1,1,1],[1,1,0],[0,1,0],[0,1,1]] -> y = [1,0,1,0]. The target is 1 exactly when
    the first and last bits agree (XNOR), which no single linear layer can fit: its best
    mean squared error is 0.25. One hidden ReLU layer fits it exactly. Float32 targets.
    """
    X = np.array([[1, 1, 1], [1, 1, 0], [0, 1, 0], [0, 1, 1]], dtype=np.float32)
    return X, np.array([1, 0, 1, 0], dtype=np.float32)


def two_layer_toy():
    """The 3x4 input of "What makes deep learning deep": two sigmoid hidden layers fit it.

    X = [[1,0,1,0],[1,0,1,1],[0,1,0,1]] -> y = [1,1,0]. Float32 targets.
    """
    X = np.array([[1, 0, 1, 0], [1, 0, 1, 1], [0, 1, 0, 1]], dtype=np.float32)
    return X, np.array([1, 1, 0], dtype=np.float32)


# --------------------------------------------------------------------------- scikit-learn, files


def digits():
    """scikit-learn's 8x8 handwritten digits (1797 samples, 64 features scaled to [0, 1]).

    The data ship inside scikit-learn (nothing is downloaded); it needs the ``sklearn``
    extra: ``pip install 'xpnet[sklearn]'``.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError(
            "the digits data set comes with scikit-learn, which is not installed; "
            "install the sklearn extra: pip install 'xpnet[sklearn]'"
        ) from None
    bunch = load_digits()
    return (bunch.data / 16.0).astype(np.float32), bunch.target.astype(np.int64)


def load_file(path):
    """(X, y) from a ``.npz`` (arrays named ``X`` and ``y``) or a ``.csv`` file.

    A CSV holds one sample per row, features first and the target in the last column; a
    header row is skipped when its cells are not numbers. A target column whose values
    are all whole numbers is read as int64 class labels, otherwise as float32 targets.
    Raises DataError naming the file and what is wrong with it.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"data file {path!r} does not exist")
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".npz":
        X, y = _read_npz(path)
    elif suffix == ".csv":
        X, y = _read_csv(path)
    else:
        raise DataError(f"data file {path!r}: unknown format {suffix or '(none)'!r}; "
                        "use .npz (arrays X and y) or .csv (last column y)")
    return _checked(path, X, y)


def _read_npz(path: str):
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path!r} is not a readable .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in ("X", "y") if k not in npz.files]
            if missing:
                raise DataError(f"{path!r} lacks array(s) {missing}; it holds {npz.files}")
            return npz["X"], npz["y"]
    except DataError:
        raise
    except Exception as exc:  # bad zip, pickled objects, truncated file: one message
        raise DataError(f"{path!r} is not a readable .npz file ({type(exc).__name__}: {exc})") \
            from None


def _read_csv(path: str):
    with open(path, newline="") as fh:
        rows = [row for row in csv.reader(fh) if row and any(cell.strip() for cell in row)]
    if rows and not _numeric_row(rows[0]):
        rows = rows[1:]  # a header
    if not rows:
        raise DataError(f"{path!r} holds no data rows")
    widths = {len(row) for row in rows}
    if len(widths) != 1:
        raise DataError(f"{path!r}: rows have different numbers of columns {sorted(widths)}")
    if widths.pop() < 2:
        raise DataError(f"{path!r} needs at least two columns (features, then the target)")
    for i, row in enumerate(rows):
        if not _numeric_row(row):
            raise DataError(f"{path!r}: data row {i + 1} has a cell that is not a number: {row}")
    table = np.array([[float(cell) for cell in row] for row in rows])
    y = table[:, -1]
    # whole numbers are labels, but only where int64 holds them exactly: 1e20 stays a value
    if np.all(np.isfinite(y)) and np.all(y == np.round(y)) and np.all(np.abs(y) < 2**53):
        y = y.astype(np.int64)
    return table[:, :-1], y


def _numeric_row(row) -> bool:
    try:
        [float(cell) for cell in row]
    except ValueError:
        return False
    return True


def _checked(path: str, X, y):
    """X as float32 and y as int64 labels or float32 targets, checked as ``xn.fit`` would:
    real numbers only (bools as 0/1), finite, and nothing a cast would wrap or overflow."""
    X = _real_numbers(f"{path!r}: X", np.asarray(X))
    y = _real_numbers(f"{path!r}: y", np.asarray(y))
    if X.ndim == 1:
        X = X.reshape(-1, 1)
    if X.ndim != 2 or X.shape[0] == 0:
        raise DataError(f"{path!r}: X must be 2-D (samples, features); got shape {X.shape}")
    if y.ndim not in (1, 2) or y.shape[0] != X.shape[0]:
        raise DataError(f"{path!r}: X has {X.shape[0]} samples but y has shape {y.shape}")
    return _cast_host(f"{path!r}: X", X, "float32", model=False), _targets_of_file(path, y)


_INT64_MAX = np.iinfo(np.int64).max


def _targets_of_file(path: str, y: np.ndarray) -> np.ndarray:
    if y.dtype.kind in "biu":
        if y.size and y.dtype.kind == "u" and y.max() > _INT64_MAX:
            raise DataError(f"{path!r}: y holds integers up to {y.max()}, beyond int64's range "
                            "(class labels are small non-negative integers)")
        return y.astype(np.int64)
    return _cast_host(f"{path!r}: y", y, "float32", model=False)


# --------------------------------------------------------------------------- registry

DATASETS: dict[str, Callable] = {
    "spirals": spirals,
    "moons": moons,
    "circles": circles,
    "xor": xor,
    "xor_table": xor_table,
    "linear": linear,
    "hidden_layer_toy": hidden_layer_toy,
    "two_layer_toy": two_layer_toy,
    "digits": digits,
}


def load(name: str, **kwargs):
    """(X, y) of the data set ``name`` from DATASETS, or of a .npz/.csv file path."""
    if not isinstance(name, str):
        raise ValueError(f"data set name must be a string; got {type(name).__name__}")
    key = name.lower().replace("-", "_")
    if key in DATASETS:
        return DATASETS[key](**kwargs)
    if name.lower().endswith((".npz", ".csv")) or os.path.sep in name:
        return load_file(name)
    raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}, "
                     "or a path to a .npz or .csv file")
