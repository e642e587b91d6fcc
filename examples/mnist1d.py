"""The residual MLP baseline of MNIST-1D (Greydanus & Kobak, "Scaling down deep learning").

MNIST-1D is a 1-D analogue of MNIST: 5000 sequences of 40 values (4000 to train, 1000 to
test) made from ten 1-D digit templates by padding, translation, scaling, shear and
noise. The paper's MLP reaches 68 % test accuracy with

    h = relu(Linear(40, 100)(x));  h = h + relu(Linear(100, 100)(h));  y = Linear(100, 10)(h)

trained with Adam (lr 1e-2), batches of 100 taken in order, 6000 updates. Here that model
is ``xn.mlp([40, 100, 100, 10], residual=True)``, trained as the paper does, next to
PyTorch running the same model from the same initial weights on the same batches.

The data come from the mnist1d package's local generator (``make_dataset``), never from
its downloading ``get_dataset``: ``pip install 'xpnet[mnist1d]'``.

    python examples/mnist1d.py [--backend torch] [--seeds 0 1 2] [--steps 6000]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import xpnet as xn

if __name__ == "__main__" and sys.path and \
        os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)  # run as a script, this file (mnist1d.py) would hide the mnist1d package

PAPER_ACCURACY = 0.68  # the MLP row of the paper's table
BATCH, LR, HIDDEN = 100, 1e-2, 100


def dataset(seed: int = 42) -> dict:
    """MNIST-1D from the package's generator (the paper's arguments; ``seed`` 42 is its
    default, which gives the data set the paper reports on)."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = seed
    return make_dataset(args)


def build(seed: int, backend: str = "numpy") -> xn.Sequential:
    """The paper's residual MLP: Dense(40, 100), ReLU, Residual(Dense(100, 100), ReLU),
    Dense(100, 10)."""
    return xn.mlp([40, HIDDEN, HIDDEN, 10], residual=True, seed=seed, backend=backend)


def train_xpnet(data: dict, seed: int, steps: int, backend: str) -> float:
    """Test accuracy after ``steps`` updates of Adam on ordered batches of 100."""
    model = build(seed, backend)
    per_epoch = data["x"].shape[0] // BATCH
    model.fit(data["x"], data["y"], loss="cross_entropy", optimizer=xn.Adam(lr=LR),
              epochs=_epochs(steps, per_epoch), batch_size=BATCH, shuffle=False, seed=seed)
    return model.evaluate(data["x_test"], data["y_test"], loss="cross_entropy")["accuracy"]


def train_torch(data: dict, seed: int, steps: int) -> float:
    """The same model in PyTorch, from xpnet's initial weights for ``seed``, the paper's
    loop: batch ``i`` is rows ``(100 i) mod 4000`` onwards."""
    import torch

    init = {k: np.asarray(v) for k, v in build(seed, "numpy").params.items()}
    lins = [torch.nn.Linear(40, HIDDEN), torch.nn.Linear(HIDDEN, HIDDEN),
            torch.nn.Linear(HIDDEN, 10)]
    with torch.no_grad():
        for lin, prefix in zip(lins, ["0.", "2.0.", "3."], strict=True):
            lin.weight.copy_(torch.tensor(init[prefix + "W"].T))  # xpnet stores (n_in, n_out)
            lin.bias.copy_(torch.tensor(init[prefix + "b"]))

    def net(x):
        h = lins[0](x).relu()
        h = h + lins[1](h).relu()
        return lins[2](h)

    x = torch.tensor(data["x"], dtype=torch.float32)
    y = torch.tensor(data["y"], dtype=torch.int64)
    opt = torch.optim.Adam([p for lin in lins for p in lin.parameters()], lr=LR)
    for step in range(_epochs(steps, x.shape[0] // BATCH) * (x.shape[0] // BATCH)):
        lo = (step * BATCH) % x.shape[0]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x[lo:lo + BATCH]), y[lo:lo + BATCH]).backward()
        opt.step()
    with torch.no_grad():
        guess = net(torch.tensor(data["x_test"], dtype=torch.float32)).argmax(1).numpy()
    return float(np.mean(guess == data["y_test"]))


def _epochs(steps: int, per_epoch: int) -> int:
    if steps % per_epoch:
        raise ValueError(f"steps must be a multiple of the {per_epoch} batches of an epoch; "
                         f"got {steps}")
    return steps // per_epoch


def main(backend: str = "numpy", seeds=(0, 1, 2), steps: int = 6000, torch_too: bool = True,
         verbose: bool = True) -> dict:
    """Test accuracies per seed of xpnet (and of torch, when installed and asked for)."""
    data = dataset()
    result: dict = {"xpnet": [], "torch": [], "paper": PAPER_ACCURACY, "steps": steps}
    if torch_too:
        try:
            import torch

            torch.set_num_threads(1)
        except ImportError:
            torch_too = False
    for seed in seeds:
        result["xpnet"].append(train_xpnet(data, seed, steps, backend))
        if torch_too:
            result["torch"].append(train_torch(data, seed, steps))
        if verbose:
            shown = f"  torch {result['torch'][-1]:.3f}" if torch_too else ""
            print(f"seed {seed}: xpnet ({backend}) {result['xpnet'][-1]:.3f}{shown}")
    if verbose:
        print(f"test accuracy over {len(seeds)} seeds, {steps} updates: xpnet "
              f"{_mean_sd(result['xpnet'])}"
              + (f", torch {_mean_sd(result['torch'])}" if torch_too else "")
              + f"; the paper: {PAPER_ACCURACY:.0%}")
    return result


def _mean_sd(values) -> str:
    return f"{np.mean(values):.1%} +- {np.std(values):.1%}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch run")
    options = parser.parse_args()
    main(options.backend, options.seeds, options.steps, not options.no_torch)
