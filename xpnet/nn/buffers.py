"""Named arrays that live as views of one flat buffer (where the backend has views).

A model's parameters, their gradients and each optimizer state slot share one ``Layout``:
the same names, shapes and offsets. An update that is elementwise (every optimizer's) then
runs once over the whole flat buffer instead of once per parameter (the multi-tensor
update of PyTorch's ``foreach``/fused optimizers), a guard reads one reduction, and a
gradient all-reduce sends one buffer. Backends without views (JAX, array-api-strict) keep
one array per name: ``Buffer.flat`` is then None and everything works per name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import array_api_compat

__all__ = ["Buffer", "Layout"]


class Layout:
    """Names and shapes packed end to end into one 1-D buffer."""

    def __init__(self, shapes: Mapping[str, tuple[int, ...]]):
        self.shapes = {name: tuple(shape) for name, shape in shapes.items()}
        self.offsets: dict[str, tuple[int, int]] = {}
        start = 0
        for name, shape in self.shapes.items():
            stop = start + math.prod(shape)
            self.offsets[name] = (start, stop)
            start = stop
        self.size = start

    def __eq__(self, other) -> bool:
        return isinstance(other, Layout) and self.shapes == other.shapes

    __hash__ = None  # type: ignore[assignment]


class Buffer:
    """Arrays by name on one backend: views of ``flat`` where ``backend.views``, else
    separate arrays (``flat`` None). ``arrays`` is the name -> array mapping."""

    def __init__(self, layout: Layout, arrays: dict[str, Any], flat: Any = None):
        self.layout, self.arrays, self.flat = layout, arrays, flat

    @classmethod
    def zeros(cls, layout: Layout, backend) -> Buffer:
        """A zero buffer of ``layout`` on ``backend`` (flat where the backend has views)."""
        xp = backend.xp
        if backend.views:
            flat = xp.zeros((layout.size,), dtype=backend.dtype, device=backend.device)
            return cls(layout, _views(layout, flat, xp), flat)
        return cls(layout, {name: xp.zeros(shape, dtype=backend.dtype, device=backend.device)
                            for name, shape in layout.shapes.items()})

    @classmethod
    def of(cls, layout: Layout, values: Mapping[str, Any], backend) -> Buffer:
        """A new buffer holding copies of ``values`` (device arrays of ``layout``'s shapes)."""
        if not backend.views:
            xp = backend.xp
            return cls(layout, {key: xp.asarray(values[key], copy=True)
                                for key in layout.shapes})
        buffer = cls.zeros(layout, backend)
        for name, view in buffer.arrays.items():
            view[...] = values[name]
        return buffer

    def copy(self, backend) -> Buffer:
        """A new buffer with the same values (one copy of ``flat`` where there is one)."""
        xp = backend.xp
        if self.flat is None:
            return Buffer(self.layout, {k: xp.asarray(v, copy=True)
                                        for k, v in self.arrays.items()})
        flat = xp.asarray(self.flat, copy=True)
        return Buffer(self.layout, _views(self.layout, flat, xp), flat)

    def __getstate__(self) -> dict:
        """Pickle and deep-copy the flat buffer alone: its views are made again on the way
        back (a copied NumPy view would otherwise be an array of its own)."""
        if self.flat is None:
            return dict(self.__dict__)
        return {"layout": self.layout, "flat": self.flat}

    def __setstate__(self, state: dict) -> None:
        if "arrays" not in state:
            state["arrays"] = _views(state["layout"], state["flat"],
                                     array_api_compat.array_namespace(state["flat"]))
        self.__dict__.update(state)

    def parts(self) -> list:
        """What holds every value: the flat buffer alone, or each array."""
        return [self.flat] if self.flat is not None else list(self.arrays.values())


def _views(layout: Layout, flat, xp) -> dict[str, Any]:
    return {name: xp.reshape(flat[start:stop], layout.shapes[name])
            for name, (start, stop) in layout.offsets.items()}
