"""Host side of the data: validation, target encoding, the host RNG, batching.

Inputs may be lists, NumPy arrays or arrays of any backend. Arrays that already live on
the model's backend and device stay there (validated with the model's ``xp``), and so do
other libraries' arrays on the model's device, taken over by DLPack without a copy;
anything else is checked on the host with NumPy and copied to the device once. Every
check runs before training touches any state, and every message names what was wrong.

What counts as data: a real numeric table. Integers, floats (float16 to long double) and
booleans (read as 0 and 1; not for parameters) are accepted, as are ``np.matrix`` (made
a plain array), masked arrays without masked entries (their data), memoryviews, objects
with ``__array__`` and nested lists, including lists of Python numbers too large for
int64. Refused, with a DataError naming the argument: complex numbers, text, bytes,
dates and durations, structured records, other objects, ragged lists, masked entries,
NaN or Inf, and finite values that overflow the model's float dtype.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..backend import Backend, to_numpy

__all__ = [
    "DataError", "batch_bounds", "epoch_rngs", "host_array", "host_rng", "inputs", "parameter",
    "targets",
]


class DataError(ValueError):
    """Input data that does not fit the model or the loss."""


def host_rng(seed) -> np.random.Generator:
    """The one source of randomness: a NumPy Generator (same stream on every backend)."""
    try:
        if isinstance(seed, bool):  # an int to NumPy, but never meant as a seed
            raise TypeError
        return np.random.default_rng(seed)
    except (TypeError, ValueError):
        raise ValueError(f"seed must be None or an int >= 0; got {seed!r}") from None


def epoch_rngs(seed):
    """``epoch -> Generator``: each epoch's own stream, all derived from ``seed``.

    Epoch k then shuffles and draws dropout masks alike whether training started at epoch
    0 or resumed at k (``fit(initial_epoch=k)``), on any number of processes. A seed of
    None draws fresh entropy once, so the epochs of one ``fit`` still differ.
    """
    host_rng(seed)  # the same refusal of a bad seed
    entropy = np.random.SeedSequence(seed).entropy
    return lambda epoch: np.random.default_rng(
        np.random.SeedSequence(entropy, spawn_key=(epoch,)))


def batch_bounds(n: int, batch_size: int | None):
    """(start, stop) pairs covering range(n); the last batch may be short."""
    size = n if not batch_size else min(batch_size, n)
    return [(i, min(i + size, n)) for i in range(0, n, size)]


# --------------------------------------------------------------------------- host arrays


def _describe(data) -> str:
    """'a torch array on device meta' (for messages about arrays that cannot be moved)."""
    library = type(data).__module__.split(".")[0]
    device = getattr(data, "device", None)
    return f"a {library} {type(data).__name__}" + (f" on device {device}" if device else "")


def _at(index) -> str:
    """'row 2, column 1' for a 2-D index, 'index 3' otherwise (for messages)."""
    index = tuple(int(i) for i in index)
    if len(index) == 2:
        return f"row {index[0]}, column {index[1]}"
    return f"index {index[0] if len(index) == 1 else index}"


def _plain_numpy(name: str, data):
    """NumPy subclasses and buffers as plain ndarrays; masked entries refused.

    ``np.matrix`` keeps its 2-D matrix semantics (``*`` is a matrix product) inside the
    layers, and a masked array's mask would be dropped silently, so neither may pass as is.
    """
    if isinstance(data, np.ma.MaskedArray):
        mask = np.ma.getmaskarray(data)
        if mask.any():
            first = _at(np.argwhere(mask)[0])
            raise DataError(
                f"{name} is a masked array with {int(mask.sum())} masked (missing) entries, "
                f"the first at {first}; xpnet does not train on missing values: fill them "
                f"({name}.filled(value)) or drop those rows")
        return np.asarray(np.ma.getdata(data))
    if isinstance(data, np.ndarray) and type(data) is not np.ndarray:
        return np.asarray(data)  # np.matrix, memmap, record arrays
    if isinstance(data, memoryview):
        try:
            return np.asarray(data)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{name} is a memoryview NumPy cannot read ({exc})") from None
    return data


def _refuse_non_arrays(name: str, data) -> None:
    if data is None or isinstance(data, (str, bytes, bytearray, dict, set, frozenset)):
        raise DataError(f"{name} is {type(data).__name__} {_short(data)}, not an array: "
                        "expected a 2-D table of real numbers (a NumPy array, a nested list, "
                        "or an array of any backend)")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _ragged(data, where: str = "row") -> str | None:
    """Where a nested list stops being rectangular, in words (None: it is rectangular)."""

    def length(item):
        if isinstance(item, (list, tuple)) or (isinstance(item, np.ndarray) and item.ndim):
            return len(item)
        return None

    def words(n):
        return "a single value" if n is None else f"{n} entr{'y' if n == 1 else 'ies'}"

    if not isinstance(data, (list, tuple)) or not data:
        return None
    first = length(data[0])
    for i, item in enumerate(data):
        if length(item) != first:
            return f"{where} {i} has {words(length(item))} but {where} 0 has {words(first)}"
    for i, item in enumerate(data):
        inner = _ragged(item, "entry") if isinstance(item, (list, tuple)) else None
        if inner:
            return f"in {where} {i}, {inner}"
    return None


def _to_host(name: str, data, backend: Backend | None = None, allow_bool: bool = True
             ) -> np.ndarray:
    """``data`` as a plain host ndarray of real numbers (bool allowed unless told not)."""
    _refuse_non_arrays(name, data)
    data = _plain_numpy(name, data)
    try:
        arr = to_numpy(data) if not isinstance(data, (list, tuple)) else np.asarray(data)
    except Exception as exc:
        ragged = _ragged(data) if isinstance(data, (list, tuple)) else None
        if ragged:
            raise DataError(f"{name} is a ragged nested list ({ragged}): every row needs the "
                            "same number of entries") from None
        target = f" to the model's backend {backend.name} ({backend.device})" if backend else ""
        raise DataError(
            f"{name} is {_describe(data)} and could not be moved{target} "
            f"({type(exc).__name__}: {exc})"
        ) from None
    arr = _plain_numpy(name, arr)
    return _real_numbers(name, np.asarray(arr), allow_bool)


def host_array(name: str, data) -> np.ndarray:
    """``data`` (a list, or an array of any library) as a host NumPy array of real numbers,
    not yet checked for shape or finite values (for data read a batch of rows at a time)."""
    return _to_host(name, data)


def _real_numbers(name: str, arr: np.ndarray, allow_bool: bool = True) -> np.ndarray:
    """``arr`` if its dtype holds real numbers; object arrays of numbers become float64."""
    kind = arr.dtype.kind
    if kind in "iuf" or (kind == "b" and allow_bool):
        return arr
    if kind == "b":
        raise DataError(f"{name} must be numeric and real; got dtype bool (shape {arr.shape})")
    if kind == "c":
        raise DataError(f"{name} must be real, not complex; got dtype {arr.dtype} "
                        f"(shape {arr.shape})")
    if kind == "O":
        return _object_numbers(name, arr)
    what = {"U": "text", "S": "bytes", "M": "dates", "m": "durations",
            "V": "structured records"}.get(kind, "non-numeric values")
    sample = _sample(arr) if kind in "US" else (
        f", such as {_short(arr.flat[0])}" if arr.size else "")
    raise DataError(f"{name} must be numeric: real numbers, not {what}; got dtype {arr.dtype} "
                    f"(shape {arr.shape}{sample}); convert it to numbers first")


def _sample(arr: np.ndarray) -> str:
    """', such as 'a' at row 0, column 1': the first entry that does not read as a number."""
    for index, value in np.ndenumerate(arr):
        try:
            float(value)
        except (TypeError, ValueError):
            return f", such as {_short(value.item())} at {_at(index)}"
    return ", all of it readable as numbers: convert with .astype(float)" if arr.size else ""


def _object_numbers(name: str, arr: np.ndarray) -> np.ndarray:
    """An object array of real numbers as float64 (NumPy makes one from a list holding an
    int beyond int64); anything else in it is named."""
    if arr.ndim == 0 and not isinstance(arr[()], numbers.Real):
        raise DataError(f"{name} is {type(arr[()]).__name__} {_short(arr[()])}, not an array "
                        "of real numbers")
    for index, value in np.ndenumerate(arr):
        if not isinstance(value, numbers.Real):
            raise DataError(f"{name} must be numeric; entry at {_at(index)} is "
                            f"{type(value).__name__} {_short(value)} (dtype object, shape "
                            f"{arr.shape})")
    try:
        return arr.astype(np.float64)
    except OverflowError:
        big = max((v for v in arr.flat if isinstance(v, int)), key=abs)
        raise DataError(f"{name} holds an integer of {len(str(abs(big)))} digits, beyond "
                        f"float64's range (largest finite {np.finfo(np.float64).max:.6g}): "
                        "rescale it") from None


# --------------------------------------------------------------------------- values


def _check_finite(name: str, arr: np.ndarray) -> None:
    """NaN and Inf in the data's own dtype (before any cast can create Inf from a finite)."""
    if arr.dtype.kind != "f":
        return
    finite = np.isfinite(arr)
    if not finite.all():
        bad = ~finite
        raise DataError(f"{name} contains {int(bad.sum())} NaN or Inf value(s), the first at "
                        f"{_at(np.argwhere(bad)[0])}")


def _overflow_error(name: str, arr: np.ndarray, dtype_name: str, model: bool = True
                    ) -> DataError:
    """The error for finite values of ``arr`` beyond ``dtype_name``: names the largest one."""
    flat = arr.reshape(-1)
    largest = flat[np.argmax(np.abs(flat))]
    with np.errstate(over="ignore"):
        as_float = float(np.float64(largest))
    shown = f"{as_float:.6g}" if np.isfinite(as_float) else np.format_float_scientific(
        largest, precision=6).replace(".e", "e")  # a long double beyond float64 too
    limit = np.finfo(dtype_name).max
    return DataError(
        f"{name} holds values beyond {dtype_name}'s range (largest finite {limit:.6g}), the "
        f"largest in magnitude {shown}: they would overflow to Inf; rescale the data"
        + (" or build the model with dtype='float64'" if model and limit < np.finfo("float64").max
           else ""))


def _cast_host(name: str, arr: np.ndarray, dtype_name: str, model: bool = True) -> np.ndarray:
    """``arr`` in the model's dtype, refusing NaN/Inf as given and finite values that
    overflow the dtype, each by name (``model``: the dtype is the user's choice, so the
    message may suggest float64).

    One pass over the cast result in the common case; the source is read again only to
    tell the two failures apart.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        out = arr.astype(dtype_name, copy=False)
    if out.dtype.kind == "f" and not np.all(np.isfinite(out)):
        _check_finite(name, arr)
        raise _overflow_error(name, arr, dtype_name, model)
    return out


def _cast_device(name: str, backend: Backend, x, kinds, copy: bool = False):
    """A device array of ``backend`` checked like a host one and cast to the model's dtype."""
    xp = backend.xp
    if not xp.isdtype(x.dtype, kinds):
        raise DataError(f"{name} must be numeric and real; got dtype {x.dtype} "
                        f"(shape {tuple(x.shape)})")
    if x.dtype == backend.dtype:
        out = xp.asarray(x, copy=True) if copy else x
    else:
        with np.errstate(over="ignore"):  # libraries built on NumPy warn; the check tells
            out = xp.astype(x, backend.dtype, copy=copy)
    if not bool(xp.all(xp.isfinite(out))):
        host = backend.to_numpy(x)
        _check_finite(name, host)  # names the count and the first one
        raise _overflow_error(name, host, backend.dtype_name)
    return out


# --------------------------------------------------------------------------- X


def _check_features(X_shape, n_in: int | None, first_layer: str, name: str) -> None:
    X_shape = tuple(X_shape)
    if len(X_shape) != 2:
        hint = {0: " (a single number)",
                1: " (one feature per column: use X.reshape(-1, 1))"}.get(len(X_shape), "")
        raise DataError(f"{name} must be 2-D (samples, features); got shape {X_shape}{hint}")
    if X_shape[0] == 0:
        raise DataError(f"{name} is empty: shape {X_shape}")
    if n_in is not None and X_shape[1] != n_in:
        raise DataError(
            f"{name} has {X_shape[1]} features but layer {first_layer} expects {n_in} "
            f"(shape {X_shape})"
        )
    if X_shape[1] == 0:
        raise DataError(f"{name} has no features: shape {X_shape}")


def inputs(backend: Backend, X, n_in: int | None, first_layer: str, name: str = "X"):
    """X as a validated 2-D float array on ``backend``."""
    _refuse_non_arrays(name, X)
    X = _onto_backend(backend, _plain_numpy(name, X))
    if backend.owns(X) and not isinstance(X, np.ndarray):
        _check_features(X.shape, n_in, first_layer, name)
        return _cast_device(name, backend, backend.plain(X),
                            ("real floating", "integral", "bool"))
    # NumPy arrays take the host path on every backend: its dtype rules are NumPy's own
    # (float16, long double, object arrays of numbers), which the array API does not name
    host = _to_host(name, X, backend)
    _check_features(host.shape, n_in, first_layer, name)
    host = _cast_host(name, host, backend.dtype_name)
    # on the NumPy backend X is used in place, as it always was: no copy of the whole set
    return backend.asarray(host, copy=None if backend.owns(host) else True)


def _same_library_to_device(backend: Backend, X):
    """An array of the model's library on another device, moved with the library's own copy.

    A host round trip is not always possible (array-api-strict's fake devices refuse it),
    and a direct device-to-device copy is cheaper anyway. Anything else is left as it is.
    """
    import array_api_compat as compat

    if isinstance(X, (np.ndarray, list, tuple)) or backend.owns(X):
        return X
    try:
        xp = compat.array_namespace(X)
    except TypeError:
        return X
    if xp is not backend.xp:
        return X
    try:
        return compat.to_device(X, backend.device)
    except Exception:  # left to the host path, whose error names both sides
        return X


def _onto_backend(backend: Backend, X):
    """``X`` as an array of the model's library where that needs no host round trip: moved
    by the library itself (another device), or shared through DLPack (another library on
    the same device: torch, CuPy and JAX hand each other GPU arrays this way). It is then
    checked on the device like the model's own arrays. Anything else is left as it is, for
    the host path."""
    X = _same_library_to_device(backend, X)
    if isinstance(X, (np.ndarray, list, tuple)) or backend.owns(X):
        return X
    shared = backend.from_dlpack(X)
    return X if shared is None else shared


# --------------------------------------------------------------------------- parameters


def parameter(backend: Backend, value, name: str, copy: bool = True):
    """A parameter value (host or any backend) checked numeric and finite, on ``backend``.

    ``copy=False`` lets the result share memory with ``value`` where no cast is needed: for
    a caller that copies it into place anyway (the model's parameter buffer).
    """
    _refuse_non_arrays(name, value)
    value = _onto_backend(backend, _plain_numpy(name, value))
    if backend.owns(value) and not isinstance(value, np.ndarray):
        return _cast_device(name, backend, backend.plain(value), ("real floating", "integral"),
                            copy=copy)
    host = _to_host(name, value, backend, allow_bool=False)
    return backend.asarray(_cast_host(name, host, backend.dtype_name), copy=True if copy else None)


# --------------------------------------------------------------------------- y


def targets(backend: Backend, y, loss: str, n_out: int | None, n_samples: int,
            name: str = "y"):
    """y validated for ``loss`` and encoded as float rows of width ``n_out`` on ``backend``.

    cross_entropy takes integer labels in [0, n_out) or one-hot rows (probability
    distributions: non-negative, summing to 1); the others take values shaped (n,) (when
    the model has one output) or (n, n_out).
    """
    if n_out is None:
        raise DataError(f"{name} cannot be checked: the model has no Dense layer, so its "
                        "output width is not fixed before it runs; add a Dense layer")
    _refuse_non_arrays(name, y)
    host = _to_host(name, _same_library_to_device(backend, _plain_numpy(name, y)), backend)
    if host.shape[:1] != (n_samples,):
        got = host.shape[0] if host.ndim else "a scalar"
        raise DataError(f"X has {n_samples} samples but {name} has {got}: they must match")
    if host.size == 0:
        raise DataError(f"{name} is empty: shape {host.shape}")
    _check_finite(name, host)
    if loss == "cross_entropy":
        host = _class_targets(host, n_out, name)
    else:
        host = _value_targets(host, loss, n_out, n_samples, name)
    return backend.asarray(_cast_host(name, host, backend.dtype_name))


def _value_targets(host: np.ndarray, loss: str, n_out: int, n_samples: int, name: str):
    if host.ndim == 1 and n_out == 1:
        host = host.reshape(-1, 1)
    if host.ndim != 2 or host.shape[1] != n_out:
        raise DataError(
            f"{name} shape {host.shape} does not fit loss {loss!r} for a model with "
            f"{n_out} output(s): expected ({n_samples}, {n_out})"
            + (" or (n,)" if n_out == 1 else "")
        )
    if loss == "binary_cross_entropy" and (host.min() < 0 or host.max() > 1):
        raise DataError(f"{name} for binary_cross_entropy must lie in [0, 1]; "
                        f"got values from {_number(host.min())} to {_number(host.max())}")
    return host


def _number(value) -> str:
    """A label or bound as the user wrote it: 3, not 3.0; 1e+20, not an int64 wrap-around."""
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _class_targets(host: np.ndarray, n_classes: int, name: str) -> np.ndarray:
    if host.ndim == 2 and host.shape[1] == 1:
        host = host[:, 0]
    if host.ndim == 2:
        return _distributions(host, n_classes, name)
    if host.ndim != 1:
        raise DataError(f"{name} for cross_entropy must be labels (n,) or one-hot "
                        f"(n, {n_classes}); got shape {host.shape}")
    if host.dtype.kind == "f" and not np.all(np.equal(np.mod(host, 1), 0)):
        first = int(np.argmax(np.mod(host, 1) != 0))
        raise DataError(f"{name} for cross_entropy must hold integer class labels; "
                        f"found non-integer values ({name}[{first}] = {_number(host[first])})")
    # the range is checked on the values as given: a cast to int64 first would turn 1e20
    # (or a uint64 beyond 2**63) into a wrapped-around negative number
    low, high = host.min(), host.max()
    if low < 0 or high >= n_classes:
        first = int(np.argmax((host < 0) | (host >= n_classes)))
        raise DataError(f"{name} holds class labels from {_number(low)} to {_number(high)}, "
                        f"but the model has {n_classes} outputs: labels must lie in "
                        f"[0, {n_classes - 1}] (the first outside: {name}[{first}] = "
                        f"{_number(host[first])})")
    labels = host.astype(np.int64)
    onehot = np.zeros((labels.shape[0], n_classes))
    onehot[np.arange(labels.shape[0]), labels] = 1.0
    return onehot


def _row_sum_tolerance(dtype: np.dtype) -> float:
    """How far a one-hot row's sum may stray from 1: rounding of the dtype it came in."""
    if dtype.kind != "f":
        return 0.0  # integer and boolean rows sum exactly
    return 1e-6 if dtype.itemsize >= 8 else 1e-3


def _distributions(host: np.ndarray, n_classes: int, name: str) -> np.ndarray:
    """One-hot (or soft) targets: each row a probability distribution over the classes."""
    if host.shape[1] != n_classes:
        raise DataError(f"{name} is one-hot with {host.shape[1]} columns but the model "
                        f"has {n_classes} outputs")
    negative = host < 0
    if negative.any():
        row = int(np.argmax(negative.any(axis=1)))
        raise DataError(f"one-hot {name} has negative entries (the first in row {row}: "
                        f"{host[row].tolist()}); each row must be a probability distribution")
    sums = host.sum(axis=1, dtype=np.float64)
    off = np.abs(sums - 1.0) > _row_sum_tolerance(host.dtype)
    if off.any():
        row = int(np.argmax(off))
        raise DataError(f"one-hot {name} rows must be probability distributions "
                        f"(non-negative, summing to 1), but row {row} sums to "
                        f"{sums[row]:.6g} ({int(off.sum())} row(s) do not)")
    return host


def sample_weights(owner: str, weights, n_samples: int) -> np.ndarray:
    """``weights`` (one per sample) as a host float64 vector: 1-D, ``n_samples`` long,
    finite, non-negative and not all zero; DataError naming what is wrong otherwise."""
    name = f"{owner}: sample_weight"
    host = _real_numbers(name, _to_host(name, weights), allow_bool=False).astype(np.float64)
    if host.ndim != 1:
        raise DataError(f"{name} must be 1-D, one weight per sample; got shape {host.shape}")
    if host.shape[0] != n_samples:
        raise DataError(f"{name} has {host.shape[0]} weights for {n_samples} samples: "
                        "give one per sample")
    _check_finite(name, host)
    negative = np.flatnonzero(host < 0)
    if negative.size:
        raise DataError(f"{name} must be non-negative; sample {int(negative[0])} has "
                        f"{host[negative[0]]:g}")
    if not np.any(host > 0):
        raise DataError(f"{name} is zero for every sample: nothing would be trained on")
    return host


def class_weights(owner: str, weights, n_classes: int) -> np.ndarray:
    """``weights`` (a mapping label -> weight, labels missing from it weighing 1, as in
    Keras; or a sequence of ``n_classes`` weights) as a host float64 vector of
    ``n_classes``: finite, non-negative, not all zero."""
    name = f"{owner}: class_weight"
    if isinstance(weights, dict):
        out = np.ones(n_classes)
        for label, value in weights.items():
            if isinstance(label, bool) or not isinstance(label, numbers.Integral) \
                    or not 0 <= int(label) < n_classes:
                raise DataError(f"{name} has label {label!r}; the model has {n_classes} "
                                f"classes, labelled 0 to {n_classes - 1}")
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise DataError(f"{name}[{label!r}] must be a number; got {value!r}")
            out[int(label)] = float(value)
    else:
        out = _real_numbers(name, _to_host(name, weights), allow_bool=False).astype(np.float64)
        if out.ndim != 1 or out.shape[0] != n_classes:
            raise DataError(f"{name} must hold one weight per class ({n_classes}); got shape "
                            f"{out.shape} (or pass a mapping {{label: weight}})")
    _check_finite(name, out)
    if np.any(out < 0):
        raise DataError(f"{name} must be non-negative; got {out.tolist()}")
    if not np.any(out > 0):
        raise DataError(f"{name} is zero for every class: nothing would be trained on")
    return out
