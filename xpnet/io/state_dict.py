"""PyTorch's names and layout for a model's parameters, both ways.

``state_dict(model, "torch")`` names each parameter as ``torch.nn.Sequential`` would name
the same layers: ``"0.weight"`` (``(out_features, in_features)``: xpnet's ``W`` transposed)
and ``"0.bias"`` for a Dense layer at index 0, so that a ``torch.nn.Sequential`` of
``Linear`` layers and activations at the same indices loads it with ``load_state_dict``.
``load_state_dict(model, mapping)`` reads such a mapping back, checked whole first.

The names come from ``TORCH_NAMES``, one entry per layer type (its registry name); a block's
own layers are named under the block ("1.0.weight"), as nested torch modules are. This
module reads a model through the network protocol (``layers``, ``params``, ``backend``) and
its ``set_params``, so it sits with the other files, below the model.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from ..backend import table as backends
from ..data import validate
from ..nn.layers import ModelError

__all__ = ["FORMATS", "TORCH_NAMES", "load_state_dict", "state_dict"]

FORMATS = ("torch",)

# per layer type: xpnet's local name -> (PyTorch's name, whether the array is transposed)
TORCH_NAMES: dict[str, dict[str, tuple[str, bool]]] = {
    "Dense": {"W": ("weight", True), "b": ("bias", False)},
    "LayerNorm": {"gamma": ("weight", False), "beta": ("bias", False)},
    "BatchNorm": {"gamma": ("weight", False), "beta": ("bias", False)},
}
# keys PyTorch writes that xpnet has no use for: accepted on load, ignored
IGNORED: dict[str, tuple[str, ...]] = {"BatchNorm": ("num_batches_tracked",)}


def _entries(layers, prefix: str = "") -> Iterator[tuple[str, str, str, bool]]:
    """(xpnet name, torch name, layer as named in errors, transposed) of every parameter."""
    for i, layer in enumerate(layers):
        path, kind = f"{prefix}{i}", type(layer).__name__
        sublayers = getattr(layer, "sublayers", None)
        inner = sublayers() if callable(sublayers) else ()
        if inner:
            yield from _entries(inner, f"{path}.")
            continue
        names = TORCH_NAMES.get(kind, {})
        for local in layer.param_shapes():
            if local not in names:
                raise ModelError(f"state_dict: layer {path} ({kind}) has a parameter "
                                 f"{local!r} with no PyTorch name; known layer types: "
                                 f"{', '.join(TORCH_NAMES)}")
            torch_name, transposed = names[local]
            yield f"{path}.{local}", f"{path}.{torch_name}", f"layer {path} ({kind})", transposed


def _ignored(layers, prefix: str = "") -> set[str]:
    found: set[str] = set()
    for i, layer in enumerate(layers):
        found.update(f"{prefix}{i}.{key}" for key in IGNORED.get(type(layer).__name__, ()))
        sublayers = getattr(layer, "sublayers", None)
        if callable(sublayers):
            found |= _ignored(sublayers(), f"{prefix}{i}.")
    return found


def _check_format(owner: str, format) -> None:
    if format not in FORMATS:
        raise ValueError(f"{owner}: format must be one of {FORMATS}; got {format!r}")


def state_dict(model, format: str = "torch") -> dict:
    """``{"0.weight": tensor (out, in), "0.bias": tensor, ...}``: the parameters as
    ``torch.nn.Sequential`` names and lays them out, as torch tensors.

    The tensors come by DLPack and share memory with the model's parameters where the
    libraries allow (PyTorch's own ``state_dict`` shares with its parameters too): clone
    them before changing them in place. Elsewhere they are host copies.
    """
    _check_format("state_dict", format)
    torch = backends.get("torch").lib  # names the torch extra when PyTorch is missing
    params, backend = model.params, model.backend
    out = {}
    for name, torch_name, _, transposed in _entries(model.layers):
        tensor = _tensor(torch, backend, params[name])
        out[torch_name] = tensor.T if transposed else tensor
    return out


def _tensor(torch, backend, x):
    """``x`` (an array of ``backend``) as a torch tensor, sharing memory where DLPack can."""
    try:
        return torch.from_dlpack(backend.plain(x))
    except (BufferError, RuntimeError, TypeError, ValueError, AttributeError):
        return torch.from_numpy(np.array(backend.to_numpy(x)))  # a writable host copy


def load_state_dict(model, mapping, format: str = "torch") -> None:
    """Set ``model``'s parameters from a PyTorch-style ``state_dict`` (what ``state_dict``
    returns, or ``torch_model.state_dict()`` of the matching ``torch.nn.Sequential``).

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
    entries = list(_entries(model.layers))
    expected = {torch_name for _, torch_name, _, _ in entries}
    given = set(mapping)
    missing = sorted(expected - given)
    unexpected = sorted(given - expected - _ignored(model.layers), key=str)
    if missing or unexpected:
        raise ModelError(f"{owner}: missing keys {missing}, unexpected keys {unexpected}; "
                         f"expected {[t for _, t, _, _ in entries]}")
    shapes, backend = model.layout.shapes, model.backend
    values = {}
    for name, torch_name, layer, transposed in entries:
        want = shapes[name][::-1] if transposed else shapes[name]
        value = mapping[torch_name]
        got = tuple(getattr(value, "shape", np.shape(value)))
        if got != want:
            layout = " (out_features, in_features)" if transposed else ""
            raise ModelError(f"{owner}: {torch_name!r} of {layer} has shape {got}, expected "
                             f"{want}{layout}")
        value = validate.parameter(backend, value, f"{owner}: {torch_name!r}", copy=False)
        values[name] = backend.xp.permute_dims(value, (1, 0)) if transposed else value
    model.set_params(values)
