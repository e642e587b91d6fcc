"""Blocks: layers made of layers.

A block is a layer like any other (``forward`` returns ``(Y, backprop)``); its parameters
and state are its layers', named ``"<index in the block>.<name>"``, so that inside a
model a Dense at index 0 of a block at index 1 owns ``"1.0.W"``. The model never looks
inside: a block splits what it is handed among its own layers.
"""

from __future__ import annotations

from .layers import (
    LAYERS,
    Dense,
    Layer,
    ModelError,
    chain_in_width,
    check_chain,
    default_inits,
    from_spec,
    spec_of,
)


class Residual(Layer):
    """``Y = X + f(X)``, ``f`` the chain of ``layers``: ``Residual(Dense(100, 100), ReLU())``.

    ``f`` must give as many features as it takes; the model checks that when it is built.
    """

    def __init__(self, *layers: Layer):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        if not layers:
            raise ModelError("Residual needs at least one layer")
        for j, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                kind = f"the class {layer.__name__}" if isinstance(layer, type) else \
                    type(layer).__name__
                raise ModelError(f"Residual: layer {j} is {kind}, not an xpnet Layer instance")
        self.layers: list[Layer] = list(layers)
        # (the layer's own name, the block's name) per layer: no string work per step
        self._keys = [[(k, f"{j}.{k}") for k in layer.param_shapes()]
                      for j, layer in enumerate(self.layers)]
        self._state_keys = [[(k, f"{j}.{k}") for k in layer.state_shapes()]
                            for j, layer in enumerate(self.layers)]

    # ------------------------------------------------------------------ structure
    def config(self) -> dict:
        return {"layers": [spec_of(layer) for layer in self.layers]}

    @classmethod
    def from_config(cls, config: dict, depth: int = 0) -> Residual:
        specs = config.get("layers") if set(config) == {"layers"} else None
        if not isinstance(specs, list) or not specs:
            raise ValueError("Residual: config must be {'layers': [a non-empty list of "
                             "{'type': str, 'config': dict}]}")
        return cls(*(from_spec(spec, f"{j} of a Residual", depth + 1)
                     for j, spec in enumerate(specs)))

    def sublayers(self) -> tuple[Layer, ...]:
        return tuple(self.layers)

    def in_width(self) -> int | None:
        return chain_in_width(self.layers)

    def out_width(self, width):
        return self.in_width() if width is None else width

    def check_width(self, width, path):
        need = self.in_width()
        start = need if width is None else width
        if need is not None and width is not None and need != width:
            raise ModelError(f"layer {path} (Residual) expects {need} inputs but the layer "
                             f"before gives {width}")
        end = check_chain(self.layers, start, f"{path}.")
        if start is not None and end is not None and end != start:
            raise ModelError(
                f"layer {path} (Residual) maps {start} features to {end}: the output of a "
                "residual block is added to its input, so its layers must end as wide as "
                "they start")
        return start

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {full: self.layers[j].param_shapes()[k]
                for j, keys in enumerate(self._keys) for k, full in keys}

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        return {full: self.layers[j].state_shapes()[k]
                for j, keys in enumerate(self._state_keys) for k, full in keys}

    def init_params(self, rng, default_init: str) -> dict:
        out = {}
        for j, (layer, scheme) in enumerate(zip(self.layers,
                                                 default_inits(self.layers, default_init),
                                                 strict=True)):
            out.update({f"{j}.{k}": v for k, v in layer.init_params(rng, scheme).items()})
        return out

    def init_state(self) -> dict:
        return {f"{j}.{k}": v for j, layer in enumerate(self.layers)
                for k, v in layer.init_state().items()}

    def __repr__(self) -> str:
        return f"Residual({', '.join(repr(layer) for layer in self.layers)})"

    # ------------------------------------------------------------------ pass
    def forward(self, params, X, ctx):
        grads_out, state, state_out = ctx.grads_out, ctx.state, ctx.state_out
        backs = []
        H = X
        for j, layer in enumerate(self.layers):
            # X itself is added at the end: only a Dense output inside may be overwritten
            ctx.fresh = j > 0 and type(self.layers[j - 1]) is Dense
            ctx.grads_out = None if grads_out is None else _split(grads_out, self._keys[j])
            keys = self._state_keys[j]
            ctx.state = _split(state, keys) if keys else None
            ctx.state_out = {} if keys and state_out is not None else None
            H, back = layer.forward(_split(params, self._keys[j]), H, ctx)
            if ctx.state_out:
                state_out.update({full: ctx.state_out[k] for k, full in keys
                                  if k in ctx.state_out})
            backs.append(back)
        ctx.grads_out, ctx.state, ctx.state_out = grads_out, state, state_out
        keys_per_layer = self._keys

        def backprop(dY, need_dX=True):
            grads, dH = {}, dY
            for j in range(len(backs) - 1, -1, -1):
                dH, layer_grads = backs[j](dH, need_dX=need_dX or j > 0)
                grads.update({full: layer_grads[k] for k, full in keys_per_layer[j]})
            return (dY + dH if need_dX else None), grads

        return X + H, backprop


def _split(mapping: dict, keys) -> dict:
    return {k: mapping[full] for k, full in keys}


LAYERS[Residual.__name__] = Residual

__all__ = ["Residual"]
