"""One neuron learns a line: the first worked example of "Deep learning from first principles".

The article's smallest network has one input, one weight W, one bias b and no activation:
y_hat = W x + b. Gradient descent on the squared error moves W towards the slope m and b
towards the intercept, and the trained neuron then answers inputs it never saw to within
about 1 %. Here the neuron is an xpnet ``Dense(1, 1)`` trained with plain SGD.

    python examples/linear_regression.py [--backend torch]
"""

from __future__ import annotations

import argparse

import numpy as np

import xpnet as xn
from xpnet.data import datasets


def main(backend: str = "numpy", m: float = 2.0, b: float = 1.0, epochs: int = 60,
         lr: float = 0.1, seed: int = 0, verbose: bool = True) -> dict:
    """Train the one-neuron model; returns its weight, bias and worst relative test error."""
    X, y = datasets.linear(m=m, b=b, n=20, seed=seed)
    model = xn.Sequential(xn.Dense(1, 1), seed=seed, backend=backend)
    # Full batch, no momentum: exactly the article's W -= lr dC/dW, b -= lr dC/db.
    history = model.fit(X, y, loss="mse", optimizer=xn.SGD(lr=lr), epochs=epochs,
                        batch_size=None)
    # Unseen inputs, outside the training range [-1, 1]: a line generalises if W and b are right.
    X_new = np.linspace(2.0, 10.0, 9, dtype=np.float32).reshape(-1, 1)
    truth = m * X_new[:, 0] + b
    predicted = model.backend.to_numpy(model.predict(X_new))[:, 0]
    relative = np.abs(predicted - truth) / np.abs(truth)
    W = float(model.backend.to_numpy(model.params["0.W"])[0, 0])
    bias = float(model.backend.to_numpy(model.params["0.b"])[0])
    if verbose:
        print(f"learned y = {W:.4f} x + {bias:.4f}   (truth: y = {m} x + {b})")
        print(f"training loss: epoch 1 {history.history['loss'][0]:.4g}, "
              f"epoch {epochs} {history.history['loss'][-1]:.3g}")
        for x, t, p, r in zip(X_new[:, 0], truth, predicted, relative, strict=True):
            print(f"  x = {x:5.1f}   true {t:7.3f}   predicted {p:7.3f}   error {100 * r:.3f} %")
    return {"weight": W, "bias": bias, "max_relative_error": float(relative.max()),
            "loss": history.history["loss"]}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy", choices=xn.backend.NAMES)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--lr", type=float, default=0.1)
    args = parser.parse_args()
    main(args.backend, epochs=args.epochs, lr=args.lr)
