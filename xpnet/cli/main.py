"""The command line: ``python -m xpnet info | train | predict | export`` (also ``xpnet``).

    python -m xpnet info                       # backends usable here, versions, devices
    python -m xpnet train                      # MLP on the bundled two-spirals set
    python -m xpnet train --data moons --layers 32,32 --backend torch --plot curves.png
    python -m xpnet train --save model.npz
    python -m xpnet predict --model model.npz --data spirals
    python -m xpnet export --model model.npz --onnx model.onnx

A bad flag or value prints one line, ``xpnet <command>: error: ...``, on stderr and exits
with status 2; so do errors xpnet raises about data, backends, checkpoints and memory.
Every output path is checked before training starts. Ctrl-C during ``train --save`` saves
the model of the last completed epoch and exits with status 130.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import sys
import threading
import time
import warnings

import numpy as np

from .. import backend as backends
from ..backend.info import format_report, report
from ..backend.memory import check_fits
from ..data import datasets
from ..io import export
from ..io.checkpoint import CheckpointError
from ..model import load, mlp
from ..nn import losses as loss_registry
from ..nn import optim as optimizers
from ..train.callbacks import Callback
from ..train.guard import DivergenceError
from ..version import __version__
from . import files as cli_data

__all__ = [
    "DEFAULT_LR", "INTERRUPTED", "LOSSES", "build_parser", "cmd_export", "cmd_info", "cmd_predict",
    "cmd_train", "main",
]

# Tuned so that the default ``train`` reaches about 99 % validation accuracy on the
# spirals in well under a second of training on NumPy.
DEFAULT_LR = {"adam": 0.01, "sgd": 0.1}
LOSSES = ("auto", "mse", "cross_entropy", "binary_cross_entropy", "huber", "l1")
INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (no usage block), exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with "(default: ...)", unless its help already says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, argparse.SUPPRESS) or action.required:
            return text
        return super()._get_help_string(action)


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


def _delimiter(text: str) -> str | None:
    try:
        return cli_data.parse_delimiter(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# --------------------------------------------------------------------------- the parser


def build_parser() -> argparse.ArgumentParser:
    """The ``xpnet`` argument parser with its four commands."""
    parser = _Parser(prog="xpnet", description="Multilayer perceptrons on any array-API backend.",
                     formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"xpnet {__version__}",
                        help="print the version and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("info", help="backends usable here: versions, devices, memory, BLAS",
                        formatter_class=_HelpFormatter)
    _add_train(commands.add_parser(
        "train", help="train an MLP and print loss and accuracy", formatter_class=_HelpFormatter,
        epilog="Output paths are checked before training starts. Ctrl-C saves the model of "
               "the last completed epoch to --save and exits with status 130."))
    _add_predict(commands.add_parser("predict", help="predict with a saved model",
                                     formatter_class=_HelpFormatter))
    _add_export(commands.add_parser(
        "export", help="write a saved model as an ONNX graph (input X, output Y)",
        formatter_class=_HelpFormatter,
        epilog="The graph's input X is (batch, features) and its output Y (batch, outputs), "
               "the batch size symbolic; Y is what predict --output values prints. Needs "
               "the onnx extra: pip install 'xpnet[onnx]'."))
    return parser


def _add_backend(p) -> None:
    p.add_argument("--backend", default=None, choices=backends.NAMES,
                   help="array library (default: $XPNET_BACKEND or numpy)")
    p.add_argument("--device", default=None,
                   help="device, e.g. cpu, cuda, cuda:1 (torch), 0 (cupy) (default: the "
                        "backend's default device)")


def _add_delimiter(p) -> None:
    p.add_argument("--delimiter", type=_delimiter, default=cli_data.AUTO,
                   help="column separator of a .csv, .tsv or .txt table: comma, semicolon, tab, "
                        "whitespace or one character; auto detects it from the first lines "
                        "(default: auto)")


def _add_train(p) -> None:
    names = ", ".join(datasets.DATASETS)
    p.add_argument("--data", default="spirals",
                   help=f"a bundled data set ({names}), a .npz (X, y) or a .csv/.tsv/.txt "
                        "table (features, then y in the last column)")
    _add_delimiter(p)
    p.add_argument("--layers", type=_layers, default="64,64",
                   help="hidden layer sizes, e.g. 64,64 (input and output widths come from the "
                        "data; 'none' for a linear model)")
    p.add_argument("--activation", default="relu",
                   choices=["relu", "leaky_relu", "tanh", "sigmoid", "gelu"],
                   help="activation between the layers")
    _add_backend(p)
    p.add_argument("--epochs", type=_positive_int, default=50, help="passes over the data")
    p.add_argument("--batch-size", type=_positive_int, default=32, help="samples per step")
    p.add_argument("--optimizer", default="adam", choices=sorted(optimizers.OPTIMIZERS),
                   help="optimizer")
    p.add_argument("--lr", type=_positive_float, default=None,
                   help="learning rate (default: 0.01 for adam, 0.1 for sgd)")
    p.add_argument("--seed", type=_seed, default=0,
                   help="seeds the generated data, the initial weights and the shuffling")
    p.add_argument("--loss", default="auto", choices=LOSSES,
                   help="auto: cross_entropy for integer labels, mse otherwise")
    p.add_argument("--validation-split", type=_fraction, default=0.2,
                   help="fraction of the samples held out to validate")
    p.add_argument("--plot", metavar="PATH",
                   help="write the learning curves in the format of the extension: .png, "
                        ".pdf, .svg, ... (default: no plot)")
    p.add_argument("--save", metavar="PATH",
                   help="save the trained model (.npz) (default: not saved)")


def _add_predict(p) -> None:
    p.add_argument("--model", required=True, metavar="PATH",
                   help="a model saved by train --save (required)")
    p.add_argument("--data", required=True,
                   help="a .npz (X, optional y), a .csv/.tsv/.txt table (the model's features, "
                        "then optional targets) or a bundled data set name (required)")
    _add_delimiter(p)
    p.add_argument("--output", default="auto", choices=["auto", "labels", "values"],
                   help="labels: the class per row (argmax; for one output, 1 where it is above "
                        "0); values: raw outputs; auto: labels for models with several outputs")
    p.add_argument("--out", metavar="PATH",
                   help="write predictions here, .npy or text (default: print them)")
    _add_backend(p)


def _opset(text: str) -> int:
    return _number(int, "a whole number", lambda v: v >= export.MIN_OPSET,
                   f"must be at least {export.MIN_OPSET}")(text)


def _add_export(p) -> None:
    p.add_argument("--model", required=True, metavar="PATH",
                   help="a model saved by train --save (required)")
    p.add_argument("--onnx", required=True, metavar="PATH",
                   help="where to write the ONNX graph, ending in .onnx (required)")
    p.add_argument("--opset", type=_opset, default=export.MIN_OPSET,
                   help="ONNX operator set version")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                   help="the graph's float type (parameters are cast to it)")


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors (2), --help and --version (0)
        return int(exc.code or 0)
    except BrokenPipeError:  # `xpnet --help | head -1`
        _stdout_to_devnull()
        return 0
    expected = (ValueError, backends.BackendError, CheckpointError, DivergenceError,
                ImportError, MemoryError, OSError)
    command = {"info": cmd_info, "train": cmd_train, "predict": cmd_predict,
               "export": cmd_export}[args.command]
    try:
        with _quiet_numerics():
            status = command(args)
        sys.stdout.flush()  # a reader that left shows here, not in Python's flush at exit
        return status
    except BrokenPipeError:  # before OSError, its base: `xpnet predict ... | head`
        _stdout_to_devnull()
        return 0
    except expected as exc:
        print(f"xpnet {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"xpnet {args.command}: interrupted", file=sys.stderr)
        return INTERRUPTED


def _one_line(exc: BaseException) -> str:
    """The error's message on one line (the library counts epochs and batches from 1 in
    its messages already, as the CLI prints them)."""
    return " ".join(str(exc).split()) or type(exc).__name__


@contextlib.contextmanager
def _quiet_numerics():
    """A diverging run is reported once, as the DivergenceError line: NumPy's overflow
    RuntimeWarnings, with their source lines, would only bury it."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _stdout_to_devnull() -> None:
    """Point stdout at os.devnull once its reader has gone, so that the flush at exit does
    not fail again (https://docs.python.org/3/library/signal.html#note-on-sigpipe)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (a test's capture)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


# --------------------------------------------------------------------------- info


def cmd_info(args) -> int:
    """Print xpnet, Python and NumPy/BLAS versions, then every backend with its devices."""
    print(format_report(report()))
    return 0


# --------------------------------------------------------------------------- train


def cmd_train(args) -> int:
    """Train an MLP on ``--data`` and print loss (and accuracy) per epoch and a summary.

    Order matters: output paths and the memory the model needs are checked before anything
    is trained; afterwards the model is saved before the plot, which may still fail.
    """
    # the snapshot is taken before the epoch's line is printed: what is printed is saved
    keeper = _LastEpoch() if args.save else None
    start = time.perf_counter()
    try:
        model, history, printer = _train(args, keeper)
    except KeyboardInterrupt:
        if keeper is None:
            raise
        return _save_interrupted(keeper, args)
    seconds = time.perf_counter() - start
    print(f"done: {_epochs_done(history, args.epochs, printer.last)} in {seconds:.2f} s on "
          f"{model.backend.name} ({model.backend.device}); final " + _format(printer.last))
    if args.save:
        _save(model, args.save)
        print(f"model saved to {args.save}")
    if args.plot:
        _plot_or_explain(history, args.plot, args.save)
        print(f"learning curves written to {args.plot}")
    return 0


def _train(args, keeper):
    """Check, load, build and fit; returns (model, history, the epoch printer)."""
    _check_train_outputs(args)
    X, y = cli_data.load_data(args.data, args.seed, args.delimiter)
    loss = cli_data.infer_loss(y) if args.loss == "auto" else args.loss
    n_out = cli_data.output_width(y, loss)
    (Xt, yt), val = cli_data.split(X, y, args.validation_split, args.seed)
    lr = args.lr or DEFAULT_LR.get(args.optimizer) or optimizers.OPTIMIZERS[args.optimizer]().lr
    sizes = [X.shape[1], *args.layers, n_out]
    backend = backends.get(args.backend or backends.current().name, args.device)
    # fit's divergence guard keeps one snapshot of parameters and optimizer state; --save
    # keeps another, of the last completed epoch, for Ctrl-C
    check_fits(backend, sizes, min(args.batch_size, Xt.shape[0]),
               len(optimizers.OPTIMIZERS[args.optimizer]().slot_names()), "train",
               advice="lower --layers (the largest layer first) or --batch-size",
               snapshots=1 + bool(args.save))
    model = mlp(sizes, activation=args.activation, seed=args.seed, backend=backend)
    optimizer = optimizers.OPTIMIZERS[args.optimizer](lr=lr)
    n_val = 0 if val is None else val[0].shape[0]
    print(f"data {args.data}: {X.shape[0]} samples, {X.shape[1]} features, "
          f"{cli_data.describe_task(y, loss)}; {Xt.shape[0]} to train, {n_val} to validate")
    n_params = sum(int(np.prod(shape)) for shape in model.param_shapes().values())
    print(f"model mlp {sizes} {args.activation} ({n_params} parameters) on "
          f"{model.backend.name} {model.backend.dtype_name}; loss {loss}; "
          f"{args.optimizer} lr {lr}; batch size {args.batch_size}")
    printer = _EpochPrinter(Xt, yt, loss, args.epochs)
    history = model.fit(Xt, yt, loss=loss, optimizer=optimizer, epochs=args.epochs,
                        batch_size=args.batch_size, validation_data=val, seed=args.seed,
                        callbacks=[cb for cb in (keeper, printer) if cb is not None])
    return model, history, printer


def _check_train_outputs(args) -> None:
    """Fail before training, not after, on any output that could not be written."""
    if args.save is not None:
        cli_data.check_save_path(args.save)
        cli_data.refuse_overwriting("--save", args.save, {"--data": args.data})
    if args.plot is not None:
        cli_data.check_plot_path(args.plot)
        cli_data.refuse_overwriting("--plot", args.plot, {"--data": args.data})


def _epochs_done(history, epochs: int, last: dict) -> str:
    """'50 epochs', or why training ended early ('3 of 50 epochs (non-finite val_loss)')."""
    done = len(history.epoch)
    if done == epochs:
        return "1 epoch" if done == 1 else f"{done} epochs"
    bad = [key for key, value in last.items() if not math.isfinite(value)]
    why = f"non-finite {', '.join(bad)}" if bad else "stopped early"
    return f"{done} of {epochs} epochs ({why})"


class _LastEpoch(Callback):
    """Keeps a copy of the model (and optimizer state) as it was after the last full epoch."""

    def __init__(self):
        self.saved: tuple[int, dict] | None = None  # (epoch from 0, snapshot), set at once

    def on_epoch_end(self, epoch, logs):
        self.saved = (epoch, self.model.snapshot(optimizer=True))


def _save_interrupted(keeper: _LastEpoch, args) -> int:
    """After Ctrl-C: save the last completed epoch's model to --save; one line says so."""
    if keeper.saved is None:
        print(f"xpnet train: interrupted before the first epoch ended; nothing saved to "
              f"{args.save}", file=sys.stderr)
        return INTERRUPTED
    epoch, snapshot = keeper.saved
    with _ignoring_interrupts():  # a second Ctrl-C must not lose the first one's save
        keeper.model.restore(snapshot)
        _save(keeper.model, args.save)
    print(f"xpnet train: interrupted; saved the model as it was after epoch "
          f"{epoch + 1}/{args.epochs} to {args.save}", file=sys.stderr)
    return INTERRUPTED


def _save(model, path: str) -> None:
    with _ignoring_interrupts():  # model.save is atomic; finishing it beats leaving none
        model.save(path)


@contextlib.contextmanager
def _ignoring_interrupts():
    """Ignore SIGINT for the block (only the main thread may change signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        # None: a handler installed outside Python, which signal() cannot put back
        signal.signal(signal.SIGINT, signal.default_int_handler if previous is None else previous)


def _plot_or_explain(history, path: str, saved: str | None) -> None:
    """Write the plot; a failure becomes one line that also says the model is safe."""
    try:
        _plot(history, path)
    except Exception as exc:  # LaTeX missing for .pgf, a full disk, a font error ...
        kept = f"; the model was saved to {saved}" if saved else ""
        raise ValueError(f"--plot: could not write {path!r} ({type(exc).__name__}: "
                         f"{exc}){kept}") from None


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
        if loss_registry.LOSSES[self.loss].classification and "accuracy" not in logs:
            logs["accuracy"] = self.model.evaluate(self.X, self.y, loss=self.loss)["accuracy"]
        # training metrics first, then validation ones, as Keras prints them
        self.last = dict(sorted(logs.items(), key=lambda kv: kv[0].startswith("val_")))
        width = len(str(self.epochs))
        try:
            print(f"epoch {epoch + 1:>{width}}/{self.epochs}  {_format(self.last)}  "
                  f"({time.perf_counter() - self.start:.2f} s)", flush=True)
        except BrokenPipeError:  # `train | head`: the reader left; training goes on to --save
            _stdout_to_devnull()


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
    if args.out is not None:
        cli_data.check_writable("--out", args.out)
        cli_data.refuse_overwriting("--out", args.out, {"--model": args.model, "--data": args.data})
    target = None if args.backend is None and args.device is None else \
        backends.get(args.backend or backends.current().name, args.device)
    model = load(args.model, backend=target)
    X, y = cli_data.read_features(args.data, model.n_in, args.delimiter)
    out = model.backend.to_numpy(model.predict(X))
    result, kind = cli_data.predictions(out, args.output)
    report = sys.stdout if args.out else sys.stderr  # keep stdout pure predictions
    if args.out:
        cli_data.write_predictions(args.out, result)
        print(f"{result.shape[0]} predictions written to {args.out}", file=report)
    else:
        _print_rows(result)
    line = cli_data.score(out, result, kind, y)
    if line is not None:
        print(line, file=report)
    return 0


def _print_rows(result: np.ndarray) -> None:
    """One line per sample: a label or value, or a row of values separated by commas."""
    for row in result if result.ndim == 2 else result[:, None]:
        print(",".join(cli_data.format_cell(v) for v in row))


# --------------------------------------------------------------------------- export


def cmd_export(args) -> int:
    """Write the model saved at ``--model`` to ``--onnx`` as an ONNX graph."""
    if not args.onnx.endswith(".onnx"):
        raise ValueError(f"--onnx path must end in .onnx; got {args.onnx!r}")
    cli_data.check_writable("--onnx", args.onnx)
    cli_data.refuse_overwriting("--onnx", args.onnx, {"--model": args.model})
    model = load(args.model, backend="numpy")
    proto = export.export_onnx(model, args.onnx, opset=args.opset, dtype=args.dtype)
    print(f"{args.model} written to {args.onnx}: ONNX opset {args.opset}, {args.dtype}, "
          f"input X (batch, {model.n_in}), output Y (batch, {model.output_width(model.n_in)}), "
          f"{len(proto.graph.node)} nodes")
    return 0
