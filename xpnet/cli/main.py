"""The command line: ``python -m xpnet info | train | predict`` (also installed as ``xpnet``).

    python -m xpnet info                       # backends usable here, versions, devices
    python -m xpnet train                      # MLP on the bundled two-spirals set
    python -m xpnet train --data moons --layers 32,32 --backend torch --plot curves.png
    python -m xpnet train --save model.npz
    python -m xpnet predict --model model.npz --data spirals

A bad flag or value prints one line, ``xpnet <command>: error: ...``, on stderr and exits
with status 2; so do errors xpnet raises about data, backends and checkpoints.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from .. import backend as backends
from ..backend.info import format_report, report
from ..data import datasets
from ..train.callbacks import Callback
from ..version import __version__
from . import files as cli_data

# Tuned so that the default ``train`` reaches about 99 % validation accuracy on the
# spirals in well under a second of training on NumPy.
DEFAULT_LR = {"adam": 0.01, "sgd": 0.1}
LOSSES = ("auto", "mse", "cross_entropy", "binary_cross_entropy")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (no usage block), exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --------------------------------------------------------------------------- value types


def _number(convert, kind: str, ok, requirement: str):
    """An argparse type: ``convert`` the text (failing: 'expected <kind>'), then require
    ``ok(value)`` (failing: '<requirement>, got <text>'); one line either way."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{requirement}, got {text.strip()}")
        return value

    return parse


_positive_int = _number(int, "a whole number", lambda v: v >= 1, "must be at least 1")
_seed = _number(int, "a whole number", lambda v: v >= 0, "must be 0 or more")
_positive_float = _number(float, "a number", lambda v: v > 0 and np.isfinite(v),
                          "must be a positive finite number")
_fraction = _number(float, "a number", lambda v: 0.0 <= v < 1.0, "must lie in [0, 1)")


def _layers(text: str) -> list[int]:
    """'64,64' -> [64, 64]; '' or 'none' -> [] (no hidden layer: a linear model)."""
    if text.strip().lower() in ("", "none"):
        return []
    sizes = []
    for part in text.split(","):
        try:
            size = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected hidden sizes separated by commas such as 64,64; got {text!r}") from None
        if size < 1:
            raise argparse.ArgumentTypeError(f"hidden sizes must be at least 1; got {size}")
        sizes.append(size)
    return sizes


# --------------------------------------------------------------------------- the parser


def build_parser() -> argparse.ArgumentParser:
    """The ``xpnet`` argument parser with its three commands."""
    parser = _Parser(prog="xpnet", description="Multilayer perceptrons on any array-API backend.")
    parser.add_argument("--version", action="version", version=f"xpnet {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("info", help="backends usable here: versions, devices, memory, BLAS")
    _add_train(commands.add_parser("train", help="train an MLP and print loss and accuracy"))
    _add_predict(commands.add_parser("predict", help="predict with a saved model"))
    return parser


def _add_backend(p) -> None:
    p.add_argument("--backend", default=None, choices=backends.NAMES,
                   help="array library (default: $XPNET_BACKEND or numpy)")
    p.add_argument("--device", default=None,
                   help="device, e.g. cpu, cuda, cuda:1 (torch), 0 (cupy)")


def _add_train(p) -> None:
    names = ", ".join(datasets.DATASETS)
    p.add_argument("--data", default="spirals",
                   help=f"a bundled data set ({names}) or a .npz (X, y) / .csv (last column y) "
                        "file (default: spirals)")
    p.add_argument("--layers", type=_layers, default=[64, 64],
                   help="hidden layer sizes, e.g. 64,64 (input and output widths come from the "
                        "data; 'none' for a linear model)")
    p.add_argument("--activation", default="relu",
                   choices=["relu", "leaky_relu", "tanh", "sigmoid", "gelu"])
    _add_backend(p)
    p.add_argument("--epochs", type=_positive_int, default=50)
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--optimizer", default="adam", choices=sorted(DEFAULT_LR))
    p.add_argument("--lr", type=_positive_float, default=None,
                   help="learning rate (default: 0.01 for adam, 0.1 for sgd)")
    p.add_argument("--seed", type=_seed, default=0,
                   help="seeds the generated data, the initial weights and the shuffling")
    p.add_argument("--loss", default="auto", choices=LOSSES,
                   help="auto: cross_entropy for integer labels, mse otherwise")
    p.add_argument("--validation-split", type=_fraction, default=0.2,
                   help="fraction of the samples held out to validate (default 0.2)")
    p.add_argument("--plot", metavar="PATH", help="write a PNG of the learning curves")
    p.add_argument("--save", metavar="PATH", help="save the trained model (.npz)")


def _add_predict(p) -> None:
    p.add_argument("--model", required=True, metavar="PATH", help="a model saved by train --save")
    p.add_argument("--data", required=True,
                   help="a .npz (X, optional y) or .csv file, or a bundled data set name")
    p.add_argument("--output", default="auto", choices=["auto", "labels", "values"],
                   help="labels: argmax class per row; values: raw outputs; auto: labels for "
                        "models with several outputs")
    p.add_argument("--out", metavar="PATH", help="write predictions here (.npy, or text)")
    _add_backend(p)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors (2), --help and --version (0)
        return int(exc.code or 0)
    import xpnet as xn

    expected = (ValueError, xn.BackendError, xn.CheckpointError, xn.DivergenceError,
                ImportError, OSError)
    try:
        return {"info": cmd_info, "train": cmd_train, "predict": cmd_predict}[args.command](args)
    except expected as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"xpnet {args.command}: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `xpnet predict ... | head`: the reader left, nothing to report
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"xpnet {args.command}: interrupted", file=sys.stderr)
        return 130


# --------------------------------------------------------------------------- info


def cmd_info(args) -> int:
    """Print xpnet, Python and NumPy/BLAS versions, then every backend with its devices."""
    print(format_report(report()))
    return 0


# --------------------------------------------------------------------------- train


def cmd_train(args) -> int:
    """Train an MLP on ``--data`` and print loss (and accuracy) per epoch and a summary."""
    import xpnet as xn

    _check_outputs(args.save, args.plot)
    X, y = cli_data.load_data(args.data, args.seed)
    loss = cli_data.infer_loss(y) if args.loss == "auto" else args.loss
    n_out = cli_data.output_width(y, loss)
    (Xt, yt), val = cli_data.split(X, y, args.validation_split, args.seed)
    lr = args.lr or DEFAULT_LR[args.optimizer]
    with xn.use(args.backend or backends.current().name, device=args.device):
        model = xn.mlp([X.shape[1], *args.layers, n_out], activation=args.activation,
                       seed=args.seed)
    optimizer = xn.Adam(lr=lr) if args.optimizer == "adam" else xn.SGD(lr=lr)
    n_val = 0 if val is None else val[0].shape[0]
    print(f"data {args.data}: {X.shape[0]} samples, {X.shape[1]} features, "
          f"{cli_data.describe_task(y, loss)}; {Xt.shape[0]} to train, {n_val} to validate")
    sizes = [X.shape[1], *args.layers, n_out]
    n_params = sum(int(np.prod(shape)) for shape in model.param_shapes().values())
    print(f"model mlp {sizes} {args.activation} ({n_params} parameters) on "
          f"{model.backend.name} {model.backend.dtype_name}; loss {loss}; "
          f"{args.optimizer} lr {lr}; batch size {args.batch_size}")
    printer = _EpochPrinter(Xt, yt, loss, args.epochs)
    start = time.perf_counter()
    history = model.fit(Xt, yt, loss=loss, optimizer=optimizer, epochs=args.epochs,
                        batch_size=args.batch_size, validation_data=val, seed=args.seed,
                        callbacks=[printer])
    seconds = time.perf_counter() - start
    print(f"done: {len(history.epoch)} epochs in {seconds:.2f} s on {model.backend.name} "
          f"({model.backend.device}); final " + _format(printer.last))
    if args.plot:
        _plot(history, args.plot)
        print(f"learning curves written to {args.plot}")
    if args.save:
        model.save(args.save)
        print(f"model saved to {args.save}")
    return 0


def _check_outputs(save, plot) -> None:
    """Fail before training, not after, on paths that cannot be written."""
    if save is not None and not save.endswith(".npz"):
        raise ValueError(f"--save path must end in .npz; got {save!r}")
    for flag, path in (("--save", save), ("--plot", plot)):
        if path is not None:
            folder = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(folder):
                raise ValueError(f"{flag}: folder {folder!r} does not exist")
    if plot is not None:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            raise ImportError("--plot needs matplotlib, which is not installed; install the "
                              "plot extra: pip install 'xpnet[plot]'")


def _format(logs: dict) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in logs.items())


class _EpochPrinter(Callback):
    """Prints one line per epoch, with training accuracy when the loop did not log it."""

    def __init__(self, X, y, loss: str, epochs: int):
        self.X, self.y, self.loss, self.epochs = X, y, loss, epochs
        self.last: dict = {}

    def on_epoch_begin(self, epoch, logs):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs):
        logs = dict(logs)
        if self.loss != "mse" and "accuracy" not in logs:
            logs["accuracy"] = self.model.evaluate(self.X, self.y, loss=self.loss)["accuracy"]
        # training metrics first, then validation ones, as Keras prints them
        self.last = dict(sorted(logs.items(), key=lambda kv: kv[0].startswith("val_")))
        width = len(str(self.epochs))
        print(f"epoch {epoch + 1:>{width}}/{self.epochs}  {_format(self.last)}  "
              f"({time.perf_counter() - self.start:.2f} s)", flush=True)


def _plot(history, path: str) -> None:
    from ..plot import learning_curves

    record = history.history
    runs = [record["loss"]] + ([record["val_loss"]] if "val_loss" in record else [])
    labels = ["training", "validation"][:len(runs)]
    fig = learning_curves(runs, labels=labels, logy="both", path=path)
    import matplotlib.pyplot as plt

    plt.close(fig)


# --------------------------------------------------------------------------- predict


def cmd_predict(args) -> int:
    """Predict with a saved model; prints one prediction per row or writes ``--out``."""
    import xpnet as xn

    target = None if args.backend is None and args.device is None else \
        backends.get(args.backend or backends.current().name, args.device)
    model = xn.load(args.model, backend=target)
    X, y = cli_data.read_features(args.data, model.n_in)
    out = model.backend.to_numpy(model.predict(X))
    as_labels = args.output == "labels" or (args.output == "auto" and out.shape[1] > 1)
    result = out.argmax(axis=1) if as_labels else (out[:, 0] if out.shape[1] == 1 else out)
    report = sys.stdout if args.out else sys.stderr  # keep stdout pure predictions
    if args.out:
        cli_data.write_predictions(args.out, result)
        print(f"{result.shape[0]} predictions written to {args.out}", file=report)
    else:
        for row in np.atleast_2d(result.T).T:
            print(",".join(cli_data.format_cell(v) for v in np.atleast_1d(row)))
    if y is not None and as_labels and y.ndim == 1 and np.all(y == np.round(y)):
        print(f"accuracy {float(np.mean(result == y)):.4f} on {y.shape[0]} samples", file=report)
    elif y is not None and not as_labels and y.shape[0] == result.shape[0]:
        mse = float(np.mean((result.reshape(y.shape) - y) ** 2))
        print(f"mse {mse:.6g} on {y.shape[0]} samples", file=report)
    return 0
