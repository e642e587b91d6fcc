"""xpnet: multilayer perceptrons with hand-written backprop on any array-API library.

    import xpnet as xn
    xn.use("numpy")                       # or "cupy", "torch", "jax", "array_api_strict"
    model = xn.mlp([2, 32, 2], activation="relu", seed=0)
    history = model.fit(X, y, loss="cross_entropy", optimizer=xn.Adam(lr=1e-2), epochs=20)

Importing xpnet imports NumPy and array-api-compat only; a backend's library is imported
when that backend is first used. This module only re-exports; each name lives on its floor
(``docs/architecture.md``).
"""

from . import distributed
from .backend import Backend, BackendError, OutOfMemoryError, available, current, use
from .backend.table import fast_paths
from .backend.threads import get_num_threads, set_num_threads
from .data import DataError
from .io.checkpoint import CheckpointError
from .io.export import export_onnx
from .model import ModelError, Sequential, load, mlp
from .nn import losses
from .nn.blocks import Residual
from .nn.layers import (
    GELU,
    Dense,
    Dropout,
    Identity,
    Layer,
    LeakyReLU,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
    register_layer,
)
from .nn.norm import BatchNorm, LayerNorm
from .nn.optim import SGD, Adagrad, Adam, AdamW, Optimizer, RMSprop
from .train.callbacks import (
    Callback,
    CosineDecay,
    CSVLogger,
    EarlyStopping,
    ExponentialDecay,
    History,
    LearningRateScheduler,
    ModelCheckpoint,
    StepDecay,
    TerminateOnNaN,
)
from .train.guard import DivergenceError
from .train.precision import LossScale
from .train.step import Step
from .version import __version__ as __version__

__all__ = [
    "Adagrad", "Adam", "AdamW", "Backend", "BackendError", "Callback", "CheckpointError",
    "DataError", "Dense", "DivergenceError", "Dropout", "EarlyStopping", "GELU", "History",
    "Identity", "Layer", "LeakyReLU", "ModelError", "Optimizer", "OutOfMemoryError",
    "RMSprop", "ReLU", "SGD", "Sequential", "Sigmoid", "Softmax", "Tanh", "available",
    "current", "load", "mlp", "use",
    # export
    "export_onnx",
    # callbacks beyond the contract's
    "CSVLogger", "CosineDecay", "ExponentialDecay", "LearningRateScheduler", "ModelCheckpoint",
    "StepDecay", "TerminateOnNaN",
    # the training engine and its switches
    "Step", "fast_paths", "register_layer",
    # mixed precision: float16 loss scaling (a gradient hook of the step)
    "LossScale",
    # CPU threads of NumPy's BLAS and torch
    "get_num_threads", "set_num_threads",
    # blocks and normalisation
    "BatchNorm", "LayerNorm", "Residual",
    # the losses module (xn.losses.Huber(delta=2.0), xn.losses.LOSSES)
    "losses",
    # many processes (mpi4py is imported by distributed.init only)
    "distributed",
]
