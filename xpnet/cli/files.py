"""Data in and out of the command line: what ``xpnet train`` and ``xpnet predict`` read and write.

Kept apart from ``main.py`` so that file stays argument parsing and commands. Everything
here is host-side NumPy; errors are ValueError with one line that names the file or flag.

Text tables (.csv, .tsv, .txt) are read by ``datasets.read_table``, the reader
``datasets.load`` uses too: a header is recognised only when none of the first row's cells
is a number, any other cell that is not a number is reported by line and column, and the
delimiter is detected unless ``--delimiter`` gives it. Its errors name ``--delimiter``.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from ..data import datasets

__all__ = [
    "AUTO", "MAX_SPARSE_CLASSES", "OPTION", "check_plot_path", "check_save_path", "check_writable",
    "class_count", "describe_task", "format_cell", "infer_loss", "load_data", "output_width",
    "parse_delimiter", "plot_formats", "predictions", "read_features", "refuse_overwriting",
    "score", "split", "write_predictions",
]

# --------------------------------------------------------------------------- delimiters

AUTO = None  # --delimiter auto: datasets.read_table detects it
_NAMED = {"comma": ",", "semicolon": ";", "tab": "\t", "\\t": "\t",
          "space": datasets.WHITESPACE, "whitespace": datasets.WHITESPACE}
OPTION = "--delimiter"  # how the shared reader's errors name the way to give a delimiter


def parse_delimiter(text: str) -> str | None:
    """``--delimiter``: auto (None), a name (comma, semicolon, tab, whitespace) or one
    character."""
    key = text.lower()
    if key == "auto":
        return AUTO
    if key in _NAMED:
        return _NAMED[key]
    if len(text) == 1 and not (text.isalnum() or text in "+-._\"'\r\n"):
        return text  # one space stands for WHITESPACE, since they are the same character
    raise ValueError(f"expected auto, comma, semicolon, tab, whitespace or one character that "
                     f"cannot be part of a number; got {text!r}")


# --------------------------------------------------------------------------- train


def load_data(name: str, seed: int, delimiter: str | None = AUTO):
    """(X, y) of a bundled set (generated sets take ``seed``), a .npz or a text table
    (.csv, .tsv, .txt)."""
    X, y = _load(name, seed, delimiter)
    if X.ndim == 2 and X.shape[1] == 0:
        raise ValueError(f"{name!r}: X has no feature columns")
    return X, y


def _load(name: str, seed: int, delimiter: str | None):
    if name.lower().endswith(datasets.TEXT_TABLES):
        return datasets.read_text_table(name, delimiter, OPTION)
    key = name.lower().replace("-", "_")
    if key in datasets.DATASETS:
        make = datasets.DATASETS[key]
        takes_seed = "seed" in make.__code__.co_varnames[:make.__code__.co_argcount]
        return make(seed=seed) if takes_seed else make()
    return datasets.load(name)


def infer_loss(y: np.ndarray) -> str:
    """``--loss auto``: cross entropy for integer labels, mean squared error otherwise."""
    return "cross_entropy" if np.issubdtype(y.dtype, np.integer) else "mse"


# A label this far above the labels present is almost surely a stray value (an id, a
# sentinel) rather than a class: one output each for thousands of empty classes.
MAX_SPARSE_CLASSES = 1000


def class_count(y: np.ndarray) -> int:
    """Classes the labels imply (largest label + 1, at least 2), refusing labels that would
    make most of them empty: more classes than samples, or over MAX_SPARSE_CLASSES classes
    of which fewer than half occur."""
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1 or y.size == 0:
        raise ValueError("--loss cross_entropy needs integer class labels 0, 1, ... in y")
    if y.min() < 0:
        row = int(np.argmin(y))
        raise ValueError(f"label {int(y[row])} (sample {row + 1}) is negative; --loss "
                         "cross_entropy needs class labels 0, 1, ...")
    n_classes = max(int(y.max()) + 1, 2)
    distinct = int(np.unique(y).size)
    if n_classes > max(y.shape[0], 2) or (n_classes > MAX_SPARSE_CLASSES
                                          and 2 * distinct < n_classes):
        row = int(np.argmax(y))
        raise ValueError(
            f"label {int(y[row])} (sample {row + 1}) would make {n_classes:,} classes, one "
            f"output each for 0 to {int(y[row])}, but y holds {distinct} distinct labels in "
            f"{y.shape[0]} samples; number the classes 0, 1, ..., or use --loss mse for "
            "numeric targets")
    return n_classes


def output_width(y: np.ndarray, loss: str) -> int:
    """Width of the model's last layer: one logit per class, else one per target column."""
    if loss == "cross_entropy":
        return class_count(y)
    return 1 if y.ndim == 1 else y.shape[1]


def describe_task(y: np.ndarray, loss: str) -> str:
    """'3 classes', 'regression' or 'binary targets', for the summary line."""
    if loss == "cross_entropy":
        return f"{class_count(y)} classes"
    return "binary targets" if loss == "binary_cross_entropy" else "regression"


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


def read_features(name: str, n_in: int | None, delimiter: str | None = AUTO):
    """(X, y or None) to predict on: a .npz needs X (y optional); a text table holds ``n_in``
    feature columns, then optionally targets; any other name goes to ``load_data``."""
    if name.lower().endswith(".npz") and os.path.isfile(name):
        X, y = _read_npz_features(name)
    elif name.lower().endswith(datasets.TEXT_TABLES):
        X, y = _prediction_csv(name, n_in, delimiter)
    else:
        X, y = load_data(name, seed=0)
    return X, _checked_targets(name, X, y)


def _prediction_csv(path: str, n_in: int | None, delimiter: str | None):
    table, used = datasets.read_table(path, delimiter, OPTION)
    if n_in is None:
        n_in = table.shape[1] - 1
    if table.shape[1] < n_in:
        raise ValueError(f"{path!r} split on {datasets.delimiter_name(used)} has "
                         f"{table.shape[1]} columns, but the model takes {n_in} features (then "
                         f"optionally targets); pass {OPTION} if the file uses another")
    X, rest = datasets.table_features(path, table[:, :n_in]), table[:, n_in:]
    if rest.shape[1] == 0:
        return X, None
    return X, datasets.table_targets(path, rest[:, 0] if rest.shape[1] == 1 else rest)


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


def _checked_targets(name: str, X, y):
    """y as a numeric 1-D or 2-D array with a row per sample of X (bools as 0/1), or None."""
    if y is None:
        return None
    y = np.asarray(y)
    if y.dtype == bool:
        y = y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.number) or np.issubdtype(y.dtype, np.complexfloating):
        raise ValueError(f"{name!r}: y must hold real numbers; got dtype {y.dtype}")
    rows = np.shape(X)[0] if np.ndim(X) else None
    if y.ndim not in (1, 2) or y.shape[0] != rows:
        raise ValueError(f"{name!r}: X has {rows} rows but y has shape {y.shape}; y needs one "
                         "row per sample")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"{name!r}: y contains NaN or Inf values")
    return y


def predictions(out: np.ndarray, output: str) -> tuple[np.ndarray, str]:
    """(what to print, "labels" or "values") for model outputs ``out`` of shape (n, width).

    labels: the argmax class per row; for a one-output model, 1 where its output (a logit,
    as binary cross entropy trains it) is above 0. values: the outputs, 1-D for one output.
    auto: labels for models with several outputs, values for one.
    """
    width = out.shape[1]
    if output == "labels" or (output == "auto" and width > 1):
        labels = out.argmax(axis=1) if width > 1 else (out[:, 0] > 0)
        return labels.astype(np.int64), "labels"
    return (out[:, 0] if width == 1 else out), "values"


def _labels_in(y: np.ndarray, width: int) -> np.ndarray | None:
    """Class labels y stands for: itself when 1-D whole numbers, the argmax of one-hot rows
    as wide as the model; None when y holds other values."""
    whole = np.all(y == np.round(y))
    if y.ndim == 1:
        return y.astype(np.int64) if whole else None
    one_hot = y.shape[1] == width > 1 and np.all((y == 0) | (y == 1)) \
        and np.all(y.sum(axis=1) == 1)
    return y.argmax(axis=1) if one_hot else None


def score(out: np.ndarray, result: np.ndarray, kind: str, y) -> str | None:
    """'accuracy ... on n samples' or 'mse ... on n samples' when y can be compared with
    the predictions, else None (y absent, or targets of another kind or shape).

    Labels are scored against class labels in y; values of a several-output model against
    1-D class labels (by argmax) or against targets of their shape (mse); values of a
    one-output model against 1-D targets (mse).
    """
    if y is None:
        return None
    n, width = out.shape
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if kind == "labels" or (width > 1 and y.ndim == 1):
        labels = _labels_in(y, width)
        if labels is None:
            return None
        predicted = result if kind == "labels" else out.argmax(axis=1)
        return f"accuracy {float(np.mean(predicted == labels)):.4f} on {n} samples"
    values = out[:, 0] if width == 1 else out
    if y.shape != values.shape:
        return None
    return f"mse {float(np.mean((values - y) ** 2)):.6g} on {n} samples"


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


# --------------------------------------------------------------------------- output paths


def check_writable(flag: str, path: str) -> None:
    """Fail now, not after the work, when ``path`` cannot be written: it is a folder, its
    folder is missing or not a folder, or that folder (or the file itself) is read-only."""
    if os.path.isdir(path):
        raise ValueError(f"{flag}: {path!r} is a folder; give a file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.exists(folder):
        raise ValueError(f"{flag}: folder {folder!r} does not exist")
    if not os.path.isdir(folder):
        raise ValueError(f"{flag}: {folder!r} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{flag}: folder {folder!r} is not writable")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise ValueError(f"{flag}: {path!r} exists and is not writable")


def refuse_overwriting(flag: str, path: str, inputs: dict[str, str]) -> None:
    """Refuse an output path that is one of the command's input files (``{flag: path}``)."""
    for other_flag, other in inputs.items():
        if other and os.path.exists(other) and os.path.exists(path) \
                and os.path.samefile(other, path):
            raise ValueError(f"{flag} {path!r} would overwrite the {other_flag} file")


def check_save_path(path: str) -> None:
    """``--save``: a writable path ending in .npz."""
    if not path.endswith(".npz"):
        raise ValueError(f"--save path must end in .npz; got {path!r}")
    check_writable("--save", path)


def plot_formats() -> dict[str, str]:
    """The file formats matplotlib writes here, {extension: description}."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise ImportError("--plot needs matplotlib, which is not installed; install the "
                          "plot extra: pip install 'xpnet[plot]'")
    from matplotlib.figure import Figure

    return Figure().canvas.get_supported_filetypes()


def check_plot_path(path: str) -> None:
    """``--plot``: matplotlib installed, a format it writes (from the extension), writable."""
    formats = plot_formats()
    extension = os.path.splitext(path)[1].lower().lstrip(".")
    if extension not in formats:
        known = ", ".join(f".{e}" for e in sorted(formats))
        got = f"extension .{extension}" if extension else "no extension"
        raise ValueError(f"--plot {path!r} has {got}, which matplotlib cannot write; use one "
                         f"of {known}")
    check_writable("--plot", path)
