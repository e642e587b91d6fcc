"""Error against epochs for two learning rates: the figure of "Layers Upon Layers".

A network with one hidden layer (8 ReLU nodes) learns y = 2x + 1 by full-batch gradient
descent, once with learning rate 0.01 and once with 0.005, from the same initial weights.
Both errors fall epoch after epoch; the lower rate takes smaller steps down the same
slope, so its curve stays above the other one. The semilog panel shows the gap more
clearly, as the article's second figure does.

    python examples/learning_rates.py [--backend torch] [--plot curves.png | --no-plot]

Without matplotlib (``pip install 'xpnet[plot]'``) the script prints the table only.
"""

from __future__ import annotations

import argparse
import importlib.util

import xpnet as xn
from xpnet.data import datasets

RATES = (0.01, 0.005)


def main(backend: str = "numpy", rates=RATES, epochs: int = 300, seed: int = 0,
         plot: str | None = None, verbose: bool = True) -> dict:
    """Train once per learning rate; returns {"rates": ..., "loss": {rate: per-epoch loss}}.

    ``plot``: a PNG path for the linear and semilog figure (needs matplotlib).
    """
    X, y = datasets.linear(m=2.0, b=1.0, n=50, seed=seed)
    curves = {}
    for lr in rates:
        model = xn.mlp([1, 8, 1], activation="relu", seed=seed, backend=backend)
        history = model.fit(X, y, loss="mse", optimizer=xn.SGD(lr=lr), epochs=epochs,
                            batch_size=None)
        curves[lr] = history.history["loss"]
    if verbose:
        _print_table(curves, epochs)
    if plot:
        import matplotlib.pyplot as plt

        from xpnet.plot import learning_curves

        figure = learning_curves(list(curves.values()), labels=[f"lr={lr}" for lr in curves],
                                 logy="both", path=plot)
        plt.close(figure)
        if verbose:
            print(f"figure written to {plot}")
    return {"rates": tuple(rates), "loss": curves}


def _print_table(curves: dict, epochs: int) -> None:
    print("epoch  " + "  ".join(f"{f'lr={lr}':>10}" for lr in curves))
    for epoch in sorted({1, 10, 25, 50, 100, 200, epochs} & set(range(1, epochs + 1))):
        print(f"{epoch:5d}  " + "  ".join(f"{c[epoch - 1]:10.4f}" for c in curves.values()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy", choices=xn.backend.NAMES)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--plot", default="learning_rates.png",
                        help="PNG path for the figure (default: learning_rates.png)")
    parser.add_argument("--no-plot", action="store_true", help="print the table only")
    args = parser.parse_args()
    has_matplotlib = importlib.util.find_spec("matplotlib") is not None
    if not has_matplotlib and not args.no_plot:
        print("matplotlib is not installed (pip install 'xpnet[plot]'): printing the table only")
    main(args.backend, epochs=args.epochs,
         plot=args.plot if has_matplotlib and not args.no_plot else None)
