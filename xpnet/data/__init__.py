"""Host side of the data: validation and target encoding, the host RNG and batching
(``validate``), and the bundled data sets (``datasets``)."""

from .validate import (
    DataError,
    batch_bounds,
    epoch_rngs,
    host_rng,
    inputs,
    parameter,
    targets,
)

__all__ = ["DataError", "batch_bounds", "epoch_rngs", "host_rng", "inputs", "parameter", "targets"]
