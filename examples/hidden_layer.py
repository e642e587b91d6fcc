"""Why hidden layers: the 4-sample problem of "Intermediate layers and backpropagation".

    inputs [1,1,1] [1,1,0] [0,1,0] [0,1,1]  ->  targets 1 0 1 0

The target is 1 exactly when the first and last bits agree. Every weight of a single
layer is pulled up by some samples as hard as it is pulled down by others, so it never
converges: the best any linear layer can do is answer 0.5 everywhere (mean squared error
0.25). Adding one hidden layer of 4 ReLU nodes lets the network build an intermediate
representation that does correlate with the target, and the error goes to 0.

Both networks are set up as in the article: weights drawn uniformly from [0, 1), no
biases, plain SGD with learning rate 0.1, one sample per update. (A network this small
can also get stuck at some seeds, when ReLU nodes switch off for every sample; the default
seed is one where it learns, as the article's run did.)

    python examples/hidden_layer.py [--backend array_api_strict]
"""

from __future__ import annotations

import argparse

import numpy as np

import xpnet as xn
from xpnet.data import datasets


def single_layer(seed: int, backend: str) -> xn.Sequential:
    """Inputs straight to the output: a weighted sum, nothing else."""
    return xn.Sequential(xn.Dense(3, 1, init="uniform", bias=False), seed=seed, backend=backend)


def one_hidden_layer(seed: int, backend: str, hidden: int = 4) -> xn.Sequential:
    """3 inputs -> ``hidden`` ReLU nodes -> 1 output, as in the article."""
    return xn.Sequential(xn.Dense(3, hidden, init="uniform", bias=False), xn.ReLU(),
                         xn.Dense(hidden, 1, init="uniform", bias=False),
                         seed=seed, backend=backend)


def train(model: xn.Sequential, epochs: int, lr: float, seed: int) -> dict:
    """Per-sample SGD on the 4 samples; returns the final loss, outputs and loss history."""
    X, y = datasets.hidden_layer_toy()
    history = model.fit(X, y, loss="mse", optimizer=xn.SGD(lr=lr), epochs=epochs,
                        batch_size=1, seed=seed)
    outputs = model.backend.to_numpy(model.predict(X))[:, 0].astype(np.float64)
    return {"loss": model.evaluate(X, y, loss="mse")["loss"], "outputs": outputs,
            "correct": bool(np.all(np.round(outputs) == y)), "history": history.history["loss"]}


def main(backend: str = "numpy", epochs: int = 300, lr: float = 0.1, seed: int = 1,
         verbose: bool = True) -> dict:
    """Train both networks; returns {"single": ..., "hidden": ...} with loss and outputs."""
    result = {"single": train(single_layer(seed, backend), epochs, lr, seed),
              "hidden": train(one_hidden_layer(seed, backend), epochs, lr, seed)}
    if verbose:
        targets = datasets.hidden_layer_toy()[1]
        print(f"targets                   {np.array2string(targets, precision=3)}")
        for name, label in (("single", "single layer"), ("hidden", "one hidden ReLU layer")):
            r = result[name]
            print(f"{label:<25} {np.array2string(r['outputs'], precision=3, suppress_small=True)}  "
                  f"loss {r['loss']:.3g}  {'all correct' if r['correct'] else 'wrong'}")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy", choices=xn.backend.NAMES)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    main(args.backend, epochs=args.epochs, seed=args.seed)
