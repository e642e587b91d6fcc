"""Weight initialisers, drawn on the host so every backend starts bit-identical.

Each initialiser maps ``(rng, fan_in, fan_out) -> float64 host array``; the model casts
to its dtype on the host and then copies to the device. One stream, frozen: changing
how these draw changes every seeded result, so treat it as part of the contract.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

__all__ = [
    "INITIALIZERS", "Initializer", "glorot_uniform", "he_uniform", "normal", "resolve",
    "uniform01", "zeros",
]

Initializer = Callable[[np.random.Generator, int, int], np.ndarray]


def he_uniform(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    """Kaiming/He uniform: variance 2/fan_in, for the ReLU family."""
    limit = math.sqrt(6.0 / fan_in)
    return rng.uniform(-limit, limit, (fan_in, fan_out))


def glorot_uniform(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    """Glorot/Xavier uniform: variance 2/(fan_in+fan_out), for sigmoid, tanh and linear."""
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, (fan_in, fan_out))


def normal(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    """Standard normal, as the seed articles draw (``np.random.normal``)."""
    return rng.standard_normal((fan_in, fan_out))


def uniform01(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    """Uniform on [0, 1), as the seed articles draw (``np.random.random``)."""
    return rng.random((fan_in, fan_out))


def zeros(n: int) -> np.ndarray:
    """A zero bias vector (biases start at zero whatever the weight initialiser)."""
    return np.zeros(n)


INITIALIZERS: dict[str, Initializer] = {
    "he": he_uniform,
    "glorot": glorot_uniform,
    "normal": normal,
    "uniform": uniform01,
}


def resolve(init: str | Initializer) -> Initializer:
    """An initialiser by name or the callable itself."""
    if callable(init):
        return init
    try:
        return INITIALIZERS[init]
    except KeyError:
        raise ValueError(
            f"unknown initialiser {init!r}; known: {', '.join(INITIALIZERS)} or a callable "
            "(rng, fan_in, fan_out) -> array"
        ) from None
