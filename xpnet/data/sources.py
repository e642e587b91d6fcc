"""Where ``fit``'s batches come from: arrays in memory, memory-mapped arrays, or an
iterable of batches. One place knows the three; the loop asks each for an epoch of
device batches and trains on them.

- ``Arrays``: validated and copied to the device once; each batch is a slice, or a
  gather through the epoch's permutation, on the device.
- ``Mapped``: when X or y is memory-mapped (``np.load(path, mmap_mode="r")``,
  ``np.memmap``). Only the rows of each batch are read and moved to the device, the next
  batch being read by a background thread while the current one trains. ``fit``
  validates the whole file first, a chunk at a time.
- ``Batches``: an iterable of ``(X, y)`` batches, re-iterated each epoch (a list, a
  ``torch.utils.data.DataLoader``, any object whose ``__iter__`` returns a fresh
  iterator). Each batch is validated as it arrives, the first before training starts.

The model is reached only through its network protocol (``device_inputs``,
``device_targets``), so every batch is checked with the same rules and messages as
arrays given whole, and the source never imports the model.
"""

from __future__ import annotations

import math
import mmap
import numbers
import os
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .validate import DataError, host_array

__all__ = [
    "Arrays", "Batch", "Batches", "CHUNK_BYTES", "Mapped", "RELEASE_BYTES", "all_rows",
    "is_batches", "mapping_of", "source",
]

# Rows of a mapped file read at once when validating or evaluating it.
CHUNK_BYTES = 16 * 2**20
# Pages of a mapping the process may have touched before they are dropped from it again.
RELEASE_BYTES = 32 * 2**20
# A page fault on a file mapping maps up to this much around the page (Linux's
# fault_around_bytes default), so a row read can make more resident than its own bytes.
_FAULT_AROUND = 64 * 2**10
_END = object()


@dataclass
class Batch:
    """One training batch: rows ``[lo, hi)`` of the epoch (its global size ``hi - lo``),
    and this process's rows of it on the device. ``W``: per-sample weights (or None)."""

    lo: int
    hi: int
    X: Any
    T: Any
    W: Any = None


def all_rows(lo: int, hi: int) -> tuple[int, int]:
    """Every row of the batch ``[lo, hi)``: the shard of a single process."""
    return lo, hi


def source(model, X, y, loss, names=("X", "y"), W=None):
    """``Mapped`` when X or y is memory-mapped, else ``Arrays`` (validated on the device).
    ``W``: validated per-sample weights on the host (``validate.sample_weights``) or None."""
    if mapping_of(X) is None and mapping_of(y) is None:
        Xd = model.device_inputs(X, names[0])
        Wd = None if W is None else model.backend.asarray(W)
        return Arrays(model.backend, Xd, model.device_targets(y, loss, Xd, names[1]), Wd)
    return Mapped(model, X, y, loss, names, W)


def is_batches(X) -> bool:
    """Whether ``X`` given without y is an iterable of batches, not a table whose y is
    missing: arrays, buffers and nested lists of numbers are tables."""
    if X is None or hasattr(X, "shape") or hasattr(X, "__array__") or isinstance(
            X, (str, bytes, bytearray, memoryview, dict, set, frozenset)):
        return False
    if isinstance(X, (list, tuple)):  # [(X0, y0), ...], not [[1.0, 2.0], ...]
        first = X[0] if X else None
        return (isinstance(first, (list, tuple)) and len(first) > 0
                and not isinstance(first[0], numbers.Number))
    return hasattr(X, "__iter__")


def mapping_of(a) -> Any:
    """The ``np.memmap`` whose file mapping ``a`` views, or None (not mapped)."""
    while isinstance(a, np.ndarray):
        if isinstance(a, np.memmap) and getattr(a, "_mmap", None) is not None:
            return a
        a = a.base
    return None


def _prefetched(produce: Callable[[], Any]) -> Generator:
    """``produce()``'s results until it returns ``_END``, each next one computed in a
    background thread while the caller works on the current one.

    An exception in ``produce`` is raised here, where its result would have been used.
    Closing the generator waits for the one read in flight, so no thread outlives it.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="xpnet-prefetch") as pool:
        pending = pool.submit(produce)
        while True:
            result = pending.result()
            if result is _END:
                return
            pending = pool.submit(produce)
            yield result


# --------------------------------------------------------------------------- in memory


class Arrays:
    """Validated device arrays ``X``, ``T`` (and optional weights ``W``)."""

    shuffles = True  # the epoch's permutation applies

    def __init__(self, backend, X, T, W=None):
        self.backend, self.X, self.T, self.W = backend, X, T, W

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    def batches_per_epoch(self, bounds) -> int:
        return len(bounds)

    def validate(self) -> None:
        """Nothing to do: the arrays were checked whole when they were moved."""

    def split(self, cut: int) -> tuple[Arrays, Arrays]:
        """Rows before ``cut`` and from ``cut`` on (views, nothing copied)."""
        part = lambda a, s: None if a is None else a[s, ...]  # noqa: E731
        head, tail = slice(0, cut), slice(cut, self.n_samples)
        return (Arrays(self.backend, part(self.X, head), part(self.T, head), part(self.W, head)),
                Arrays(self.backend, part(self.X, tail), part(self.T, tail), part(self.W, tail)))

    def epoch(self, bounds, order=None, shard=all_rows) -> Generator[Batch, None, None]:
        """The batches of ``bounds`` in ``order`` (a host permutation, or None for the
        order given); ``shard(lo, hi)`` picks this process's rows of each batch."""
        xp = self.backend.xp
        rows_of = None if order is None else xp.asarray(order, device=self.backend.device)
        kernels = self.backend.kernels
        # a shuffled batch's rows go into the arrays of the batch before (one per shape: the
        # ragged last batch has its own); only the step reads them, and it is done with a
        # batch before the next is gathered. Immutable arrays (JAX) gather afresh.
        into: dict = {}
        for lo, hi in bounds:
            start, stop = shard(lo, hi)
            # gathered per batch through the permutation: the epoch is never copied whole
            rows = slice(start, stop) if rows_of is None else rows_of[start:stop]
            yield Batch(lo, hi, *(self._take(kernels, into, i, a, rows)
                                  for i, a in enumerate((self.X, self.T, self.W))))

    def _take(self, kernels, into: dict, i: int, a, rows):
        if a is None:
            return None
        if isinstance(rows, slice):
            return a[rows, ...]
        if not self.backend.inplace:
            return kernels.gather(a, rows)
        key = (i, rows.shape[0])
        out = into.get(key)
        if out is None:
            out = into[key] = kernels.gather(a, rows)
            return out
        return kernels.gather(a, rows, out=out)

    def chunks(self, batch_size=None) -> Generator[tuple, None, None]:
        """``(X, T, W)`` for evaluation: in memory, all of it at once."""
        yield self.X, self.T, self.W


# --------------------------------------------------------------------------- mapped


class _Rows:
    """Rows of a host array, read so that a file mapping's pages do not pile up.

    A process's resident memory counts every page of a file mapping it has touched, and
    touched pages stay mapped: reading a 500 MB memmap once leaves 500 MB resident. Worse,
    a page fault maps up to 64 KiB around the page (Linux's fault-around), so gathering
    4096 scattered 1 KiB rows maps a quarter of a 1 GB file. So rows are not read through
    the mapping: each run of consecutive rows is read from the file with ``os.preadv``
    straight into a buffer of our own, the only memory a read adds (the kernel's page
    cache keeps the file, but that is not this process's). Shared mappings (modes "r",
    "r+", "w+") hold what the file holds, so this reads the same numbers.

    Where that is not possible the mapping is read: a copy-on-write mapping (mode "c",
    whose changes are not in the file) keeps its touched pages resident, as dropping them
    would drop the changes; any other view the file layout cannot describe (negative or
    non-row strides) drops the mapping's pages (``madvise(MADV_DONTNEED)``) after every
    read of ``RELEASE_BYTES``, so what stays resident is bounded by about one batch.
    """

    def __init__(self, array: np.ndarray):
        self.array = array
        self._row_bytes = array.itemsize * math.prod(array.shape[1:])
        self._file = _file_layout(array)
        found = mapping_of(array)
        releasable = (self._file is None and found is not None and found.mode != "c"
                      and hasattr(mmap, "MADV_DONTNEED"))
        self._mmap = found._mmap if releasable else None
        self._touched = 0

    def __len__(self) -> int:
        return int(self.array.shape[0]) if self.array.ndim else 0

    def view(self, rows: slice) -> _Rows:
        return _Rows(self.array[rows])

    def read(self, rows) -> np.ndarray:
        """A host copy of ``rows`` (a slice, or row indices in any order)."""
        if isinstance(rows, slice):
            start, stop, _ = rows.indices(len(self))
            return self._read_sorted(np.arange(start, max(start, stop)))
        # read in file order (forward, each run at once), then put back in batch order
        order = np.argsort(rows, kind="stable")
        out = np.empty((len(rows), *self.array.shape[1:]), self.array.dtype)
        out[order] = self._read_sorted(np.asarray(rows)[order])
        return out

    def _read_sorted(self, rows: np.ndarray) -> np.ndarray:
        if self._file is None:
            out = np.array(self.array[rows])
            self._release_after(len(rows))
            return out
        name, position, stride = self._file
        out = np.empty((len(rows), *self.array.shape[1:]), self.array.dtype)
        if not len(rows):
            return out
        # runs of consecutive rows, each read at once where rows lie back to back in the file
        firsts = (np.flatnonzero(np.diff(rows) != 1) + 1 if stride == self._row_bytes
                  else np.arange(1, len(rows)))
        firsts = np.r_[0, firsts]
        counts = np.diff(np.r_[firsts, len(rows)])
        # Python ints, unpacked once: this loop runs once per row of a shuffled batch
        runs = zip(firsts.tolist(), counts.tolist(),
                   (position + rows[firsts] * stride).tolist(), strict=True)
        size, buffer = self._row_bytes, out.data.cast("B")
        fd = os.open(name, os.O_RDONLY)
        try:
            for first, count, offset in runs:
                if os.preadv(fd, [buffer[first * size:(first + count) * size]],
                             offset) != count * size:
                    raise DataError(f"{name} ended before row {int(rows[first]) + count - 1} "
                                    "of the array mapped from it: the file was truncated")
        finally:
            os.close(fd)
        return out

    def _release_after(self, n_rows: int) -> None:
        if self._mmap is None:
            return
        self._touched += n_rows * (self._row_bytes + _FAULT_AROUND)
        if self._touched >= RELEASE_BYTES:
            self._touched = 0
            self._mmap.madvise(mmap.MADV_DONTNEED)


def _file_layout(a: np.ndarray):
    """``(file name, byte position of row 0, bytes from row to row)`` where the rows of
    ``a`` can be read from the file its mapping shows (each row's bytes contiguous, rows
    in file order); None otherwise."""
    found = mapping_of(a)
    if (found is None or found.mode == "c" or not found.filename or a.ndim == 0
            or not a.shape[0] or a.strides[0] <= 0 or not a[:1].flags.c_contiguous):
        return None
    # np.memmap maps from the allocation boundary at or below its offset (numpy's memmap)
    granule = found.offset - found.offset % mmap.ALLOCATIONGRANULARITY
    base = np.frombuffer(found._mmap, np.uint8, count=1).ctypes.data
    inside = a.ctypes.data - base
    if not 0 <= inside < len(found._mmap):
        return None
    return found.filename, granule + inside, a.strides[0]


class Mapped:
    """X and y read a batch of rows at a time from the host (either may be memory-mapped,
    the other an array in memory); rows move to the device as they are needed.

    Building one checks shapes, dtypes and the first row; ``validate()`` reads the whole
    data once, a chunk at a time, before ``fit`` changes anything. ``y=None`` (predict)
    reads X alone.
    """

    shuffles = True

    def __init__(self, model, X, y, loss, names=("X", "y"), W=None):
        self.model, self.loss, self.names = model, loss, names
        self.X = _Rows(X if mapping_of(X) is not None else host_array(names[0], X))
        self.y = None if y is None else _Rows(y if mapping_of(y) is not None
                                              else host_array(names[1], y))
        self.W = None if W is None else _Rows(np.asarray(W))
        self._check_shapes()

    @classmethod
    def _of(cls, model, loss, names, X, y, W) -> Mapped:
        out = cls.__new__(cls)
        out.model, out.loss, out.names, out.X, out.y, out.W = model, loss, names, X, y, W
        return out

    def _check_shapes(self) -> None:
        """Shape, dtype and width from the first row, the sample counts from the shapes
        (nothing else is read)."""
        if self.X.array.ndim != 2:  # refused by shape alone, nothing read
            self.model.device_inputs(self.X.array, self.names[0])
        n = len(self.X)
        if self.y is not None and len(self.y) != n:
            raise DataError(f"{self.names[0]} has {n} samples but {self.names[1]} has "
                            f"{len(self.y)}: they must match")
        self._load(slice(0, 1))  # X empty, not 2-D, not numeric, or of the wrong width

    @property
    def n_samples(self) -> int:
        return len(self.X)

    def batches_per_epoch(self, bounds) -> int:
        return len(bounds)

    def _chunk_rows(self, batch_size=None) -> int:
        rows = max(1, CHUNK_BYTES // max(1, self.X._row_bytes))
        if batch_size:  # whole batches per chunk: predictions as an in-memory run makes them
            rows = max(batch_size, rows - rows % batch_size)
        return rows

    def _spans(self, batch_size=None):
        n, rows = self.n_samples, self._chunk_rows(batch_size)
        return [(lo, min(lo + rows, n)) for lo in range(0, n, rows)]

    def validate(self) -> None:
        """Every row checked as ``fit`` checks arrays in memory, a chunk at a time, so the
        data is never held whole; a chunk's problem is named with its rows (``X[a:b]``)."""
        spans = self._spans()
        for lo, hi in spans:
            where = "" if len(spans) == 1 else f"[{lo}:{hi}]"
            self._load(slice(lo, hi), where)

    def _load(self, rows, where: str = "") -> Batch:
        """``rows`` validated and on the device (``where`` is added to the names)."""
        Xd = self.model.device_inputs(self.X.read(rows), self.names[0] + where)
        Td = None if self.y is None else self.model.device_targets(
            self.y.read(rows), self.loss, Xd, self.names[1] + where)
        Wd = None if self.W is None else self.model.backend.asarray(self.W.read(rows))
        return Batch(0, Xd.shape[0], Xd, Td, Wd)

    def split(self, cut: int) -> tuple[Mapped, Mapped]:
        """Rows before ``cut`` and from ``cut`` on (views of the same files)."""
        def part(rows: slice) -> Mapped:
            view = lambda r: None if r is None else r.view(rows)  # noqa: E731
            return Mapped._of(self.model, self.loss, self.names, view(self.X), view(self.y),
                              view(self.W))
        return part(slice(0, cut)), part(slice(cut, self.n_samples))

    def epoch(self, bounds, order=None, shard=all_rows) -> Generator[Batch, None, None]:
        """As ``Arrays.epoch``, each batch read from the host while the one before trains."""
        plan = iter(bounds)

        def produce():
            span = next(plan, None)
            if span is None:
                return _END
            lo, hi = span
            start, stop = shard(lo, hi)
            batch = self._load(slice(start, stop) if order is None else order[start:stop])
            batch.lo, batch.hi = lo, hi
            return batch

        return _prefetched(produce)

    def chunks(self, batch_size=None) -> Generator[tuple, None, None]:
        """``(X, T, W)`` for evaluation, a chunk of rows (whole batches of ``batch_size``) at
        a time, the next read while the current one is evaluated."""
        spans = self._spans(batch_size)
        plan = iter(spans)

        def produce():
            span = next(plan, None)
            if span is None:
                return _END
            where = "" if len(spans) == 1 else f"[{span[0]}:{span[1]}]"
            batch = self._load(slice(*span), where)
            return batch.X, batch.T, batch.W

        return _prefetched(produce)


# --------------------------------------------------------------------------- batches


class Batches:
    """An iterable of ``(X, y)`` batches, each validated as it arrives.

    Iterated afresh each epoch; a one-shot iterator (a generator: ``iter(it) is it``) is
    refused for more than one epoch. Building one reads and checks the first batch, so a
    wrong shape or label is reported before ``fit`` changes anything. The order is the
    iterable's own (``fit``'s ``shuffle`` does not apply: shuffle in the loader, as
    ``DataLoader(shuffle=True)`` does).
    """

    shuffles = False

    def __init__(self, model, batches, loss, epochs: int, what: str = "fit"):
        self.model, self.batches, self.loss = model, batches, loss
        if isinstance(batches, (np.ndarray, str, bytes, dict)) or not hasattr(batches,
                                                                              "__iter__"):
            raise TypeError(f"{what}: without y, X must be an iterable of (X, y) batches (a "
                            f"list, a DataLoader); got {type(batches).__name__}: pass y")
        iterator = iter(batches)
        if iterator is batches and epochs > 1:
            raise ValueError(
                f"{what}: X is a one-shot iterator ({type(batches).__name__}): it can be read "
                f"once, but epochs={epochs} reads it {epochs} times; pass a list, a DataLoader "
                "or an object whose __iter__ returns a fresh iterator, or epochs=1")
        first = next(iterator, _END)
        if first is _END:
            raise DataError(f"{what}: the iterable of batches yielded no batch")
        self._first: tuple | None = (iterator, self._check(0, first))

    @property
    def n_samples(self) -> int | None:
        return None  # unknown until an epoch is read

    @property
    def first_rows(self) -> int:
        """Rows of the first batch (for the memory estimate)."""
        return int(self._first[1].X.shape[0]) if self._first else 0

    def batches_per_epoch(self, bounds) -> int | None:
        try:
            return len(self.batches)
        except TypeError:
            return None

    def validate(self) -> None:
        """Nothing more before training: the first batch was checked on arrival."""

    def _check(self, i: int, item) -> Batch:
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            got = (f"a {type(item).__name__} of {len(item)}"
                   if isinstance(item, (tuple, list)) else type(item).__name__)
            raise DataError(f"batch {i} must be a pair (X, y); got {got}")
        Xd = self.model.device_inputs(item[0], f"X of batch {i}")
        Td = self.model.device_targets(item[1], self.loss, Xd, f"y of batch {i}")
        return Batch(0, int(Xd.shape[0]), Xd, Td)

    def _arriving(self) -> Generator[Batch, None, None]:
        """This epoch's batches, validated, with their rows numbered through the epoch."""
        if self._first is not None:  # the first epoch goes on from the batch already read
            (iterator, first), self._first = self._first, None
            items: Iterator = iter([first])
            rest, start = iterator, 1
        else:
            items, rest, start = iter(()), iter(self.batches), 0
        seen = 0
        for batch in items:
            seen = batch.hi
            yield batch
        for i, item in enumerate(rest, start):
            batch = self._check(i, item)
            batch.lo, batch.hi = seen, seen + batch.hi
            seen = batch.hi
            yield batch
        if not seen:
            raise DataError("the iterable of batches yielded no batch this epoch (it did "
                            "before): its __iter__ must start again each epoch")

    def epoch(self, bounds=None, order=None, shard=all_rows) -> Generator[Batch, None, None]:
        """The iterable's batches (``bounds`` and ``order`` do not apply), each read and
        checked while the one before trains; ``shard`` picks this process's rows."""
        arriving = self._arriving()

        def produce():
            batch = next(arriving, _END)
            if batch is _END:
                return _END
            start, stop = shard(batch.lo, batch.hi)
            if (start, stop) != (batch.lo, batch.hi):
                a, b = start - batch.lo, stop - batch.lo
                batch.X, batch.T = batch.X[a:b, ...], batch.T[a:b, ...]
            return batch

        return _prefetched(produce)
