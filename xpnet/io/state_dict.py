"""PyTorch's names and layout for a model's parameters and layer state, both ways.

``state_dict(model, "torch")`` names each array as ``torch.nn.Sequential`` would name the
same layers: ``"0.weight"`` (``(out_features, in_features)``: xpnet's ``W`` transposed)
and ``"0.bias"`` for a Dense layer at index 0; ``"1.weight"`` and ``"1.bias"`` for a
LayerNorm or BatchNorm's ``gamma`` and ``beta``; a BatchNorm's running statistics as
``torch.nn.BatchNorm1d``'s buffers ``"1.running_mean"``, ``"1.running_var"`` and
``"1.num_batches_tracked"``. So a ``torch.nn.Sequential`` of ``Linear``, ``LayerNorm``,
``BatchNorm1d`` and activations at the same indices loads it with ``load_state_dict``.
``load_state_dict(model, mapping)`` reads such a mapping back, checked whole first.

A block's own layers are named under the block (``"1.0.weight"``), as the children of a
nested torch module are. A ``Residual`` at index 1 is therefore the torch module::

    class Residual(torch.nn.Sequential):     # its layers are children "0", "1", ...
        def forward(self, x):
            return x + super().forward(x)

at index 1 of the outer ``torch.nn.Sequential``, holding the block's layers in order.

The names come from ``TORCH_NAMES``, one entry per layer type (its registry name), and
``FILLERS`` the buffers torch keeps that xpnet does not. This module reads a model through
the network protocol (``layers``, ``params``, ``state``, ``state_shapes``, ``layout``,
``backend``) and its ``set_params`` and ``set_state``, so it sits with the other files,
below the model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

from ..backend import table as backends
from ..data import validate
from ..nn.layers import ModelError

__all__ = ["FILLERS", "FORMATS", "TORCH_NAMES", "load_state_dict", "state_dict"]

FORMATS = ("torch",)

# per layer type: xpnet's local name -> (PyTorch's name, whether the array is transposed);
# parameters and layer state alike (BatchNorm's running statistics are torch buffers)
TORCH_NAMES: dict[str, dict[str, tuple[str, bool]]] = {
    "Dense": {"W": ("weight", True), "b": ("bias", False)},
    "LayerNorm": {"gamma": ("weight", False), "beta": ("bias", False)},
    "BatchNorm": {"gamma": ("weight", False), "beta": ("bias", False),
                  "running_mean": ("running_mean", False),
                  "running_var": ("running_var", False),
                  "num_batches_tracked": ("num_batches_tracked", False)},
}
# buffers a torch module has that the xpnet layer does not keep: written so that torch's
# strict load_state_dict finds every key, accepted and ignored on load. xpnet's BatchNorm
# counts no batches; torch reads the count only when momentum is None (a cumulative
# average), which xpnet has not, so 0 changes nothing torch computes.
FILLERS: dict[str, dict[str, Callable[[Any], Any]]] = {
    "BatchNorm": {"num_batches_tracked": lambda torch: torch.tensor(0, dtype=torch.long)},
}


class Entry(NamedTuple):
    name: str  # xpnet's name, as in model.params or model.state
    torch_name: str
    layer: str  # the layer, as named in errors
    transposed: bool
    state: bool  # layer state (model.state), not a parameter


def _leaves(layers, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(path, layer) of every layer that is not a block, a block's layers under it."""
    for i, layer in enumerate(layers):
        path = f"{prefix}{i}"
        sublayers = getattr(layer, "sublayers", None)
        inner = sublayers() if callable(sublayers) else ()
        if inner:
            yield from _leaves(inner, f"{path}.")
        else:
            yield path, layer


def _layer_entries(path: str, layer) -> Iterator[Entry]:
    """The layer's parameters, then its state, as torch orders a module's parameters
    before its buffers."""
    kind = type(layer).__name__
    names = TORCH_NAMES.get(kind, {})
    for state, local_names in ((False, layer.param_shapes()), (True, layer.state_shapes())):
        for local in local_names:
            if local not in names:
                what = "state array" if state else "parameter"
                raise ModelError(f"state_dict: layer {path} ({kind}) has a {what} {local!r} "
                                 f"with no PyTorch name; known layer types: "
                                 f"{', '.join(TORCH_NAMES)}")
            torch_name, transposed = names[local]
            yield Entry(f"{path}.{local}", f"{path}.{torch_name}", f"layer {path} ({kind})",
                        transposed, state)


def _entries(layers) -> list[Entry]:
    return [entry for path, layer in _leaves(layers) for entry in _layer_entries(path, layer)]


def _fillers(path: str, layer) -> dict[str, Callable[[Any], Any]]:
    """torch name -> make(torch) of the buffers torch has and this layer does not keep."""
    kept = set(layer.state_shapes())
    return {f"{path}.{name}": make
            for name, make in FILLERS.get(type(layer).__name__, {}).items() if name not in kept}


def _check_format(owner: str, format) -> None:
    if format not in FORMATS:
        raise ValueError(f"{owner}: format must be one of {FORMATS}; got {format!r}")


def state_dict(model, format: str = "torch") -> dict:
    """``{"0.weight": tensor (out, in), "0.bias": tensor, ...}``: the parameters and layer
    state as ``torch.nn.Sequential`` names and lays them out, as torch tensors (in torch's
    order: each layer's parameters, then its buffers).

    The tensors come by DLPack and share memory with the model's arrays where the
    libraries allow (PyTorch's own ``state_dict`` shares with its parameters too): clone
    them before changing them in place. Elsewhere they are host copies.
    """
    _check_format("state_dict", format)
    torch = backends.get("torch").lib  # names the torch extra when PyTorch is missing
    params, state, backend = model.params, model.state, model.backend
    out = {}
    for path, layer in _leaves(model.layers):
        for entry in _layer_entries(path, layer):
            value = state[entry.name] if entry.state else params[entry.name]
            tensor = _tensor(torch, backend, value)
            out[entry.torch_name] = tensor.T if entry.transposed else tensor
        out.update({name: make(torch) for name, make in _fillers(path, layer).items()})
    return out


def _tensor(torch, backend, x):
    """``x`` (an array of ``backend``) as a torch tensor, sharing memory where DLPack can."""
    try:
        return torch.from_dlpack(backend.plain(x))
    except (BufferError, RuntimeError, TypeError, ValueError, AttributeError):
        return torch.from_numpy(np.array(backend.to_numpy(x)))  # a writable host copy


def load_state_dict(model, mapping, format: str = "torch") -> None:
    """Set ``model``'s parameters and layer state (BatchNorm's running statistics) from a
    PyTorch-style ``state_dict`` (what ``state_dict`` returns, or ``torch_model.state_dict()``
    of the matching ``torch.nn.Sequential``; ``num_batches_tracked`` is accepted and, as
    xpnet's BatchNorm keeps no count, ignored).

    Values may be torch tensors or arrays of any library. Every key, shape and value is
    checked before anything changes: missing and unexpected keys, shapes that differ from
    PyTorch's layout (``(out_features, in_features)`` for a weight) and NaN or Inf are named
    in the error. As ``set_params``, it resets the optimizer's moments.
    """
    owner = "load_state_dict"
    _check_format(owner, format)
    if not isinstance(mapping, Mapping):
        raise TypeError(f"{owner}: expected a mapping of PyTorch names to tensors (such as "
                        f"torch_model.state_dict()); got {type(mapping).__name__}")
    entries = _entries(model.layers)
    expected = [entry.torch_name for entry in entries]
    ignored = {name for path, layer in _leaves(model.layers) for name in _fillers(path, layer)}
    given = set(mapping)
    missing = sorted(set(expected) - given)
    unexpected = sorted(given - set(expected) - ignored, key=str)
    if missing or unexpected:
        raise ModelError(f"{owner}: missing keys {missing}, unexpected keys {unexpected}; "
                         f"expected {expected}")
    shapes = {**model.layout.shapes, **model.state_shapes}
    backend = model.backend
    params: dict[str, Any] = {}
    state = dict(model.state)
    for entry in entries:
        shape = shapes[entry.name]
        want = shape[::-1] if entry.transposed else shape
        value = mapping[entry.torch_name]
        got = tuple(getattr(value, "shape", np.shape(value)))
        if got != want:
            layout = " (out_features, in_features)" if entry.transposed else ""
            raise ModelError(f"{owner}: {entry.torch_name!r} of {entry.layer} has shape {got}, "
                             f"expected {want}{layout}")
        value = validate.parameter(backend, value, f"{owner}: {entry.torch_name!r}", copy=False)
        value = backend.xp.permute_dims(value, (1, 0)) if entry.transposed else value
        (state if entry.state else params)[entry.name] = value
    # every value is checked: from here on nothing can fail halfway
    model.set_params(params)
    if state:
        model.set_state(state)
