"""Training: the one step, the fit/evaluate loop, callbacks, progress and metrics."""
