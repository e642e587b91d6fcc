"""Vectorised inputs: the second step of "Deep learning from first principles".

Instead of one number at a time the network takes a row of n = 5 inputs at once, with one
weight per input (W has shape (5, 1)) and one bias. It learns
y = m1 x1 + ... + m5 x5 + b from a batch of rows in one matrix product per step, with no
Python loop over the inputs: every weight is trained at the same time.

    python examples/vectorized_inputs.py [--backend jax]
"""

from __future__ import annotations

import argparse

import numpy as np

import xpnet as xn
from xpnet.data import datasets

SLOPES = (1.5, -2.0, 0.5, 3.0, -1.0)


def main(backend: str = "numpy", slopes=SLOPES, b: float = 0.5, epochs: int = 150,
         lr: float = 0.1, seed: int = 0, verbose: bool = True) -> dict:
    """Train one neuron with len(slopes) inputs; returns the learned weights and errors."""
    slopes = np.asarray(slopes, dtype=np.float64)
    X, y = datasets.linear(m=slopes, b=b, n=64, seed=seed)
    model = xn.Sequential(xn.Dense(slopes.size, 1), seed=seed, backend=backend)
    history = model.fit(X, y, loss="mse", optimizer=xn.SGD(lr=lr), epochs=epochs,
                        batch_size=None)
    W = model.backend.to_numpy(model.params["0.W"])[:, 0].astype(np.float64)
    bias = float(model.backend.to_numpy(model.params["0.b"])[0])
    # Unseen rows from another seed and a wider range than training used.
    X_new, y_new = datasets.linear(m=slopes, b=b, n=100, low=-3.0, high=3.0, seed=seed + 1)
    predicted = model.backend.to_numpy(model.predict(X_new))[:, 0]
    scale = float(np.abs(y_new).mean())
    result = {
        "weights": W, "bias": bias, "loss": history.history["loss"],
        "max_relative_weight_error": float(np.max(np.abs(W - slopes) / np.abs(slopes))),
        # error relative to the typical size of y: single targets near 0 would blow up a ratio
        "relative_prediction_error": float(np.abs(predicted - y_new).max() / scale),
    }
    if verbose:
        for i, (w, s) in enumerate(zip(W, slopes, strict=True)):
            print(f"  W[{i}] = {w:8.4f}   (truth {s:5.2f})")
        print(f"  b    = {bias:8.4f}   (truth {b:5.2f})")
        print(f"worst weight error {100 * result['max_relative_weight_error']:.3f} %; worst "
              f"prediction error on unseen rows {100 * result['relative_prediction_error']:.3f} "
              f"% of mean |y|")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy", choices=xn.backend.NAMES)
    parser.add_argument("--epochs", type=int, default=150)
    args = parser.parse_args()
    main(args.backend, epochs=args.epochs)
