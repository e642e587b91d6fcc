"""Checks of plain arguments (counts, rates, switches, paths), shared by every entry point
so that each says the same thing about the same mistake.

Every check raises before anything changes, and names its ``owner`` (the call, such as
``"fit"`` or ``"SGD"``) and the argument. NumPy's numbers are numbers: ``np.int64(3)`` is
an int and ``np.float32(0.1)`` a real number; a bool is neither (``True`` is an int to
Python but never meant as a count or a rate). A number of the wrong kind is a
ValueError, an object of the wrong kind (a path) a TypeError, as ``tests/test_hostile.py``
sets out for the whole API.
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Literal, overload

__all__ = ["boolean", "existing_folder", "integer", "path", "real"]


# Overloads so a caller that does not allow None gets an int, not an Optional to narrow.
@overload
def integer(owner: str, name: str, value, low: int,
            allow_none: Literal[False] = False) -> int: ...
@overload
def integer(owner: str, name: str, value, low: int, allow_none: bool) -> int | None: ...
def integer(owner: str, name: str, value, low: int, allow_none: bool = False) -> int | None:
    """``value`` as a plain int >= ``low`` (None passes through when ``allow_none``)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        alternatives = "None or " if allow_none else ""
        raise ValueError(f"{owner}: {name} must be {alternatives}an int >= {low}; "
                         f"got {value!r}")
    return int(value)


def real(owner: str, name: str, value, low: float | None = None, high: float | None = None,
         low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite float within ``[low, high]`` (an open end with ``*_open``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value):
        raise ValueError(f"{owner}: {name} must be a finite number; got {value!r}")
    number = float(value)  # a Real (NumPy's float32 too) compares as the float it returns
    if low is not None and (number < low or (low_open and number == low)):
        raise ValueError(f"{owner}: {name} must be {'>' if low_open else '>='} {low}; "
                         f"got {value!r}")
    if high is not None and (number > high or (high_open and number == high)):
        raise ValueError(f"{owner}: {name} must be {'<' if high_open else '<='} {high}; "
                         f"got {value!r}")
    return number


def boolean(owner: str, name: str, value) -> bool:
    """``value`` when it is True or False (NumPy's ``np.True_`` too): a string such as "no"
    is truthy and would silently mean the opposite."""
    if not isinstance(value, bool) and not _bool_scalar(value):
        raise ValueError(f"{owner}: {name} must be True or False; got {value!r}")
    return bool(value)


def _bool_scalar(value) -> bool:
    """A 0-d array or NumPy scalar of bool dtype (checked without importing NumPy)."""
    dtype = getattr(value, "dtype", None)
    return getattr(value, "ndim", None) == 0 and getattr(dtype, "kind", None) == "b"


def path(owner: str, name: str, value) -> str:
    """``value`` (a str or os.PathLike) as a str."""
    try:
        value = os.fspath(value)
    except TypeError:
        raise TypeError(f"{owner}: {name} must be a str or os.PathLike; got "
                        f"{type(value).__name__} {value!r}") from None
    if not isinstance(value, str):
        raise TypeError(f"{owner}: {name} must be a str or os.PathLike of a str; got bytes "
                        f"{value!r}")
    return value


def existing_folder(owner: str, file_path: str) -> None:
    """Refuse ``file_path`` whose folder is missing (or not a folder) now, rather than
    after the training it was meant to record."""
    folder = os.path.dirname(os.path.abspath(file_path))
    if not os.path.isdir(folder):
        what = "is not a folder" if os.path.exists(folder) else "does not exist"
        raise ValueError(f"{owner}: the folder {folder!r} of {file_path!r} {what}")
