"""Training: the one step, the fit/evaluate loop, callbacks, progress and metrics."""

__all__ = [
    "callbacks", "graphs", "guard", "loop", "metrics", "precision", "progress", "step", "traced",
]
