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
    "DATASETS", "TEXT_TABLES", "WHITESPACE", "circles", "delimiter_name", "detect_delimiter",
    "digits", "hidden_layer_toy", "linear", "load", "load_file", "moons", "read_table",
    "read_text_table", "spirals", "table_features", "table_targets", "two_layer_toy", "xor",
    "xor_table",
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


def load_file(path, delimiter: str | None = None):
    """(X, y) from a ``.npz`` (arrays named ``X`` and ``y``) or a text table (``.csv``,
    ``.tsv``, ``.txt``).

    A table holds one sample per row, features first and the target in the last column;
    ``delimiter`` separates the columns (None: detected from the first lines among ',',
    ';', tab and whitespace; see ``read_table`` for the header rule and the errors). A
    target column of whole numbers that float64 holds exactly (|y| <= 2**53) is read as
    int64 class labels, otherwise as float32 targets. Raises DataError naming the file and
    what is wrong with it.
    """
    path = os.fspath(path)
    _existing_file(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix in TEXT_TABLES:
        return read_text_table(path, delimiter)
    if suffix != ".npz":
        raise DataError(f"data file {path!r}: unknown format {suffix or '(none)'!r}; use "
                        ".npz (arrays X and y) or a .csv, .tsv or .txt table (last column y)")
    return _checked(path, *_read_npz(path))


def _existing_file(path: str) -> None:
    if not os.path.isfile(path):
        what = "is a folder, not a file" if os.path.isdir(path) else "does not exist"
        raise DataError(f"data file {path!r} {what}")


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
    return table_features(path, X), _targets_of_file(path, y)


_INT64_MAX = np.iinfo(np.int64).max


def _targets_of_file(path: str, y: np.ndarray) -> np.ndarray:
    if y.dtype.kind in "biu":
        if y.size and y.dtype.kind == "u" and y.max() > _INT64_MAX:
            raise DataError(f"{path!r}: y holds integers up to {y.max()}, beyond int64's range "
                            "(class labels are small non-negative integers)")
        return y.astype(np.int64)
    return _cast_host(f"{path!r}: y", y, "float32", model=False)


# --------------------------------------------------------------------------- text tables
# One reader for every delimited text file: datasets.load, and the command line's train
# and predict (which name the option ``--delimiter`` in their errors).

TEXT_TABLES = (".csv", ".tsv", ".txt")  # read as delimited text, whatever the delimiter
WHITESPACE = " "  # stands for runs of spaces and tabs, as str.split() splits
_CANDIDATES = (",", ";", "\t", WHITESPACE)
_SNIFFED_LINES = 5
_OPTION = "delimiter=..."  # how errors name the way to give the delimiter
# Whole numbers up to here are exactly representable in float64, so reading them as int64
# labels loses nothing; beyond it they are taken as real-valued targets.
_EXACT_INTEGERS = 2**53


def delimiter_name(delimiter: str) -> str:
    """How errors name a delimiter: ',' or tab or whitespace."""
    return {"\t": "tab", WHITESPACE: "whitespace"}.get(delimiter, repr(delimiter))


def _split_line(line: str, delimiter: str) -> list[str]:
    if delimiter == WHITESPACE:
        return line.split()
    if '"' not in line:  # the common case, several times faster than a csv.reader per line
        return line.split(delimiter)
    return next(csv.reader([line], delimiter=delimiter, skipinitialspace=True), [])


def detect_delimiter(lines: list[str]) -> str:
    """The candidate (',', ';', tab, whitespace) that splits the first lines into the most
    columns, the same number on each; else the one giving the first line most columns."""
    lines = [line for line in lines if line.strip()][:_SNIFFED_LINES]
    if not lines:
        return ","
    best, best_width = None, 1
    for candidate in _CANDIDATES:
        widths = {len(_split_line(line, candidate)) for line in lines}
        width = widths.pop()
        if not widths and width > best_width:  # the same width on every line
            best, best_width = candidate, width
    if best is not None:
        return best
    first = {c: len(_split_line(lines[0], c)) for c in _CANDIDATES}
    guess = max(_CANDIDATES, key=lambda c: first[c])  # ties keep the earlier candidate
    return guess if first[guess] > 1 else ","


def _check_delimiter(delimiter) -> None:
    if delimiter is not None and (not isinstance(delimiter, str) or len(delimiter) != 1):
        raise ValueError(f"delimiter must be None (detect it) or one character, such as ',' "
                         f"or '\\t' (' ' for any run of whitespace); got {delimiter!r}")


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _lines(path: str) -> list[tuple[int, str]]:
    """(line number from 1, text) of every line that is not blank."""
    _existing_file(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            return [(i, line.rstrip("\r\n")) for i, line in enumerate(fh, 1) if line.strip()]
    except UnicodeDecodeError as exc:
        raise DataError(f"{path!r} is not a text file ({exc.reason} at byte {exc.start})") \
            from None


def read_table(path, delimiter: str | None = None, option: str = _OPTION
               ) -> tuple[np.ndarray, str]:
    """The numbers of a delimited text file as a 2-D float64 array, and the delimiter used.

    ``delimiter`` None detects it from the first lines (``detect_delimiter``). The first
    row is a header, and skipped, only when none of its cells is a number; every other
    cell must be a finite number, and every row as wide as the first. DataErrors name the
    line, column and text; ``option`` is how they say to give another delimiter.
    """
    path = os.fspath(path)
    _check_delimiter(delimiter)
    lines = _lines(path)
    if delimiter is None:
        delimiter = detect_delimiter([text for _, text in lines[:_SNIFFED_LINES]])
    where = f"{path!r} (delimiter {delimiter_name(delimiter)})"
    rows = [(number, _split_line(text, delimiter)) for number, text in lines]
    if not rows:
        raise DataError(f"{where} holds no data rows")
    header = not any(_is_number(cell) for cell in rows[0][1])
    if header:
        rows = rows[1:]
        if not rows:
            raise DataError(f"{where} holds a header but no data rows")
    first_line, first_cells = rows[0]
    for number, cells in rows:
        if len(cells) != len(first_cells):
            raise DataError(f"{where}: line {number} has {len(cells)} columns, but line "
                            f"{first_line} has {len(first_cells)}")
    try:  # NumPy parses text as float() does; the loop below only finds what it refused
        table = np.array([cells for _, cells in rows], dtype=np.float64)
        if np.all(np.isfinite(table)):
            return table, delimiter
    except ValueError:
        pass
    hint = "" if header else " (a first row is a header only when none of its cells is a number)"
    table = np.empty((len(rows), len(first_cells)))
    for r, (number, cells) in enumerate(rows):
        for c, cell in enumerate(cells):
            table[r, c] = _number(where, number, c, cell, hint if r == 0 else "", option)
    return table, delimiter


def _number(where: str, line: int, column: int, cell: str, hint: str, option: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise DataError(f"{where}: line {line}, column {column + 1}: {cell.strip()!r} is not "
                        f"a number{hint or _delimiter_hint(cell, option)}") from None
    if not np.isfinite(value):
        raise DataError(f"{where}: line {line}, column {column + 1}: {cell.strip()!r} is not "
                        "a finite number")
    return value


def _delimiter_hint(cell: str, option: str) -> str:
    inside = [d for d in _CANDIDATES[:3] if d in cell]
    if not inside:
        return ""
    return f" (it holds {delimiter_name(inside[0])}: pass {option} if that separates columns)"


def table_features(what: str, values: np.ndarray) -> np.ndarray:
    """Feature columns as float32, refusing values beyond its range rather than making them
    inf; ``what`` (the file) names them in the error."""
    return _cast_host(f"{what!r}: X", values, "float32", model=False)


def table_targets(what: str, values: np.ndarray) -> np.ndarray:
    """Target column(s) as int64 class labels when every value is a whole number that
    float64 holds exactly (|y| <= 2**53: 1e20 stays a value), else as float32."""
    whole = np.all(values == np.round(values)) and np.all(np.abs(values) <= _EXACT_INTEGERS)
    if whole:
        return values.astype(np.int64)
    return _cast_host(f"{what!r}: y", values, "float32", model=False)


def read_text_table(path, delimiter: str | None = None, option: str = _OPTION):
    """(X, y) of a text table: features, then the target in the last column (``read_table``
    reads it; ``table_features`` and ``table_targets`` give the dtypes)."""
    path = os.fspath(path)
    table, used = read_table(path, delimiter, option)
    if table.shape[1] < 2:
        raise DataError(f"{path!r} needs at least two columns (features, then the target), "
                        f"but split on {delimiter_name(used)} its rows have one; pass "
                        f"{option} if the file uses another")
    return table_features(path, table[:, :-1]), table_targets(path, table[:, -1])


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
    """(X, y) of the data set ``name`` from DATASETS (``kwargs`` go to its generator), or of
    a .npz or text table path (``kwargs``: ``delimiter``, see ``load_file``)."""
    if not isinstance(name, str):
        raise ValueError(f"data set name must be a string; got {type(name).__name__}")
    key = name.lower().replace("-", "_")
    if key in DATASETS:
        return DATASETS[key](**kwargs)
    if name.lower().endswith((".npz", *TEXT_TABLES)) or os.path.sep in name:
        return load_file(name, **kwargs)
    raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}, "
                     "or a path to a .npz file or a .csv, .tsv or .txt table")
