"""An earlier xpnet, imported beside this one, so before/after rows run interleaved in one run.

    python bench/train_step.py --baseline /tmp/before      # a folder holding xpnet_before/

Make the folder from any commit: ``git archive <commit> xpnet | tar -x -C /tmp/before`` and
rename ``/tmp/before/xpnet`` to ``/tmp/before/xpnet_before`` (every import inside xpnet is
relative, so the copy imports as a package of its own). The baseline's own step API is used
as it was then: ``Sequential.train_step`` for one step, ``fit`` for whole runs.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

NAME = "xpnet_before"


def load(folder) -> object | None:
    """The baseline package from ``folder`` (None when no folder was given)."""
    if folder is None:
        return None
    folder = Path(folder).resolve()
    if not (folder / NAME / "__init__.py").is_file():
        raise SystemExit(f"--baseline {folder}: no {NAME}/ package there (see bench/baseline.py)")
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return importlib.import_module(NAME)


def step(pkg, model, X, T, optimizer):
    """One training step of the baseline (its ``Sequential.train_step`` of the time)."""
    losses = importlib.import_module(f"{NAME}.losses")
    return model.train_step(X, T, losses.cross_entropy, optimizer)
