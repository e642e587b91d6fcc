"""Two hidden layers: the network of "What makes deep learning deep".

Three samples of four bits, [1,0,1,0] [1,0,1,1] [0,1,0,1] -> 1 1 0, go through two hidden
layers of five sigmoid neurons each and a sigmoid output: "input times weight, add a
bias, activate", twice, then once more for the output. Weights start from a standard
normal draw as in the article, and full-batch gradient descent on the squared error
drives the outputs towards the targets: after 10 000 steps they read about 0.99, 0.99
and 0.02, as in the article's table.

The article sums the error over the batch with learning rate 0.1; xpnet's "mse" is the
batch mean of the squared error (whose gradient carries a factor 2), so the same step is
learning rate 0.1 * 3 / 2 = 0.15 here.

    python examples/two_hidden_layers.py [--backend torch]
"""

from __future__ import annotations

import argparse

import numpy as np

import xpnet as xn
from xpnet.data import datasets


def network(seed: int, backend: str) -> xn.Sequential:
    """4 inputs -> 5 sigmoid -> 5 sigmoid -> 1 sigmoid output."""
    return xn.Sequential(
        xn.Dense(4, 5, init="normal"), xn.Sigmoid(),
        xn.Dense(5, 5, init="normal"), xn.Sigmoid(),
        xn.Dense(5, 1, init="normal"), xn.Sigmoid(),
        seed=seed, backend=backend,
    )


def main(backend: str = "numpy", epochs: int = 10_000, lr: float = 0.15, seed: int = 3,
         verbose: bool = True) -> dict:
    """Train the two-hidden-layer network; returns its outputs and per-epoch loss."""
    X, y = datasets.two_layer_toy()
    model = network(seed, backend)
    history = model.fit(X, y, loss="mse", optimizer=xn.SGD(lr=lr), epochs=epochs,
                        batch_size=None)
    losses = history.history["loss"]
    outputs = model.backend.to_numpy(model.predict(X))[:, 0].astype(np.float64)
    if verbose:
        for epoch in range(max(epochs // 10, 1), epochs + 1, max(epochs // 10, 1)):
            print(f"loss after {epoch:>6} epochs: {losses[epoch - 1]:.6f}")
        print("actual  learnt")
        for target, out in zip(y, outputs, strict=True):
            print(f"{target:6.0f}  {out:.4f}")
    return {"outputs": outputs, "targets": y, "loss": losses}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy", choices=xn.backend.NAMES)
    parser.add_argument("--epochs", type=int, default=10_000)
    parser.add_argument("--lr", type=float, default=0.15)
    args = parser.parse_args()
    main(args.backend, epochs=args.epochs, lr=args.lr)
