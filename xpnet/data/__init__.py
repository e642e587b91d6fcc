"""Host side of the data: validation and target encoding, the host RNG and batching
(``validate``), and the bundled data sets (``datasets``)."""

from .validate import (
    DataError,
    batch_bounds,
    class_weights,
    epoch_rngs,
    host_rng,
    inputs,
    parameter,
    sample_weights,
    targets,
)

__all__ = ["DataError", "batch_bounds", "class_weights", "epoch_rngs", "host_rng", "inputs",
           "parameter", "sample_weights", "targets"]
