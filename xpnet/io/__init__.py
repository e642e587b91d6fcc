"""Files: checkpoints (sealed, atomic ``.npz``), ONNX export, PyTorch-style state dicts."""

from .checkpoint import CheckpointError

__all__ = ["CheckpointError"]
