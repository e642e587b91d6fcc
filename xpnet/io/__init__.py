"""Files: checkpoints (sealed, atomic ``.npz``)."""

from .checkpoint import CheckpointError

__all__ = ["CheckpointError"]
