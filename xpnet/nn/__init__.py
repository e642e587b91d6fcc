"""The maths, written once against the array API: layers, losses, initialisers, optimizers.

Everything here computes through an ``xp`` namespace handed in by its caller and imports
only the backend floor (for the optional fast paths a layer may take from its context).
"""

# the blocks and normalisation layers register themselves in layers.LAYERS on import, so
# that load finds them whichever of the nn modules a caller imported
from . import blocks, norm  # noqa: F401, E402

__all__ = ["blocks", "buffers", "init", "layers", "losses", "norm", "optim"]
