"""The shared part of ``xpnet.sklearn``'s estimators: parameters, their validation, and
the training loop (epochs, early stopping, scikit-learn's L2 term) on an xpnet backend.

Subclasses (``MLPClassifier``, ``MLPRegressor`` in ``xpnet.sklearn``) say how targets are
encoded (``_encode_targets``), which loss trains them (``_loss``) and how a held-out set
is scored (``_score_host``). Import the estimators from ``xpnet.sklearn``, which says
clearly when scikit-learn is missing.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from .. import checks
from .. import data as _data
from ..backend import table as _backend
from ..interrupts import deferred_interrupts
from ..model import mlp
from ..nn import optim as _optim
from ..train.guard import DivergenceError, Guard
from ..train.step import Step

_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}


class BaseMLP(BaseEstimator):
    """The shared training loop; subclasses say how targets are encoded and scored."""

    _loss = "mse"

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate_init=0.001, max_iter=200,
                 shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False,
                 momentum=0.9, nesterovs_momentum=True, early_stopping=False,
                 validation_fraction=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                 n_iter_no_change=10, backend=None, device=None, dtype=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.backend = backend
        self.device = device
        self.dtype = dtype

    # ------------------------------------------------------------------ validation
    def _check_params(self) -> tuple[int, ...]:
        """Every parameter checked under its own name before anything is built; returns the
        hidden layer sizes as ints."""
        name = type(self).__name__
        sizes = self.hidden_layer_sizes
        sizes = (sizes,) if isinstance(sizes, (int, np.integer)) else tuple(sizes)
        if any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1
               for s in sizes):
            raise ValueError(f"{name}: hidden_layer_sizes must be positive ints; got {sizes!r}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"{name}: activation must be one of {sorted(_ACTIVATIONS)}; "
                             f"got {self.activation!r}")
        if self.solver not in ("sgd", "adam"):
            raise ValueError(f"{name}: solver must be 'sgd' or 'adam' (xpnet has no 'lbfgs'); "
                             f"got {self.solver!r}")
        for field, low in (("alpha", 0.0), ("tol", 0.0)):
            checks.real(name, field, getattr(self, field), low)
        self._check_optimizer_params(name)
        for field in ("max_iter", "n_iter_no_change"):
            checks.integer(name, field, getattr(self, field), 1)
        for field in ("shuffle", "warm_start", "early_stopping", "nesterovs_momentum"):
            checks.boolean(name, field, getattr(self, field))
        if not (isinstance(self.batch_size, str) and self.batch_size == "auto"):
            checks.integer(name, "batch_size (or 'auto')", self.batch_size, 1)
        checks.real(name, "validation_fraction", self.validation_fraction, 0.0, 1.0,
                    low_open=True, high_open=True)
        return tuple(int(s) for s in sizes)

    def _check_optimizer_params(self, name: str) -> None:
        """The solver's settings under scikit-learn's names (the optimizers would name them
        lr, betas[0], eps)."""
        checks.real(name, "learning_rate_init", self.learning_rate_init, 0.0, low_open=True)
        checks.real(name, "epsilon", self.epsilon, 0.0, low_open=True)
        for field in ("beta_1", "beta_2", "momentum"):
            checks.real(name, field, getattr(self, field), 0.0, 1.0, high_open=True)

    def _resolve_backend(self) -> _backend.Backend:
        name = self.backend if self.backend is not None else _backend.current().name
        if self.dtype is not None:
            return _backend.resolve(name, self.device, self.dtype)
        base = _backend.resolve(name, self.device, "float32")
        if base.is_gpu:
            return base  # float32: GPUs are fast in it, and slow in float64
        try:
            return _backend.resolve(name, self.device, "float64")
        except _backend.BackendError:  # JAX without 64-bit mode
            return base

    def _optimizer(self) -> _optim.Optimizer:
        if self.solver == "sgd":
            momentum = float(self.momentum)
            return _optim.SGD(lr=self.learning_rate_init, momentum=momentum,
                              nesterov=bool(self.nesterovs_momentum) and momentum > 0)
        return _optim.Adam(lr=self.learning_rate_init, betas=(self.beta_1, self.beta_2),
                           eps=self.epsilon)

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y):
        """Train for up to ``max_iter`` epochs (fewer when the loss stops improving)."""
        return self._fit(X, y, incremental=False)

    def _fit(self, X, y, incremental: bool, classes=None):
        sizes = self._check_params()
        first = not (hasattr(self, "model_") and (incremental or self.warm_start))
        X, y = validate_data(self, X, y, reset=first, dtype=(np.float64, np.float32),
                             multi_output=self._multi_output_y)
        T = self._encode_targets(y, first, classes)
        if first:
            self._initialize(X.shape[1], T.shape[1], sizes)
        if incremental:
            self._epochs(X, T, 1, early_stopping=False)
        else:
            self._epochs(X, T, self.max_iter, early_stopping=bool(self.early_stopping), y=y)
        return self

    def _initialize(self, n_in: int, n_out: int, sizes: tuple[int, ...]) -> None:
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(np.iinfo(np.int32).max))
        self._rng = _data.host_rng(seed)
        self.model_ = mlp([n_in, *sizes, n_out], activation=_ACTIVATIONS[self.activation],
                          seed=seed, backend=self._resolve_backend())
        self.model_.optimizer = self._optimizer()
        self.n_outputs_ = n_out
        self.n_layers_ = len(sizes) + 2
        self.loss_curve_ = []
        self.validation_scores_ = [] if self.early_stopping else None
        self._best_loss = np.inf
        self.best_loss_ = np.inf if not self.early_stopping else None
        self.best_validation_score_ = -np.inf if self.early_stopping else None
        self.n_iter_ = 0
        self.t_ = 0

    def _split(self, X, T, y):
        """Hold out ``validation_fraction`` (stratified for classifiers), as scikit-learn."""
        idx, seed = np.arange(X.shape[0]), int(self._rng.integers(2**31 - 1))
        try:
            train, val = train_test_split(idx, test_size=self.validation_fraction,
                                          random_state=seed, stratify=y if self._stratify else None)
        except ValueError:  # too few samples per class to stratify: split at random
            train, val = train_test_split(idx, test_size=self.validation_fraction,
                                          random_state=seed)
        if len(train) == 0 or len(val) == 0:
            raise ValueError(f"{type(self).__name__}: validation_fraction="
                             f"{self.validation_fraction} of {X.shape[0]} samples is too small "
                             "for early stopping")
        return X[train], T[train], X[val], y[val]

    def _epochs(self, X, T, epochs: int, early_stopping: bool, y=None) -> None:
        model = self.model_
        Xv = yv = None
        if early_stopping:
            X, T, Xv, yv = self._split(X, T, y)
        Xd, Td = model.backend.asarray(X), model.backend.asarray(T)
        n = X.shape[0]
        batch = min(200, n) if self.batch_size == "auto" else min(int(self.batch_size), n)
        bounds = _data.batch_bounds(n, batch)
        l2 = _L2Penalty(self.alpha, model.backend.xp)
        step = Step(model, self._loss, model.optimizer, grad_hooks=[l2] if self.alpha else ())
        step.guard = Guard(model, 50, step.kernels)
        no_improvement, best_params = 0, None
        for _ in range(epochs):
            loss = self._one_epoch(step, l2, Xd, Td, n, bounds)
            self.n_iter_ += 1
            self.loss_curve_.append(loss)
            if self.verbose:
                print(f"Iteration {self.n_iter_}, loss = {loss:.8f}")
            if early_stopping:
                score = self._score_host(Xv, yv)
                self.validation_scores_.append(score)
                if score > self.best_validation_score_:
                    best_params = model.snapshot()
                improved = score >= self.best_validation_score_ + self.tol
                self.best_validation_score_ = max(self.best_validation_score_, score)
            else:
                improved = loss <= self._best_loss - self.tol
                self._best_loss = min(self._best_loss, loss)
                if self.best_loss_ is not None:
                    self.best_loss_ = self._best_loss
            no_improvement = 0 if improved else no_improvement + 1
            if no_improvement > self.n_iter_no_change:
                if best_params is not None:
                    model.restore(best_params)
                return
        if epochs > 1:
            warnings.warn(f"{type(self).__name__}: maximum iterations ({epochs}) reached and "
                          "the optimization hasn't converged yet.", ConvergenceWarning,
                          stacklevel=3)
        if best_params is not None:
            model.restore(best_params)

    def _one_epoch(self, step: Step, l2: _L2Penalty, Xd, Td, n: int, bounds) -> float:
        model = self.model_
        xp, backend = model.backend.xp, model.backend
        if self.shuffle and len(bounds) > 1:
            order = xp.asarray(self._rng.permutation(n), device=backend.device)
            Xd, Td = xp.take(Xd, order, axis=0), xp.take(Td, order, axis=0)
        total = None
        try:
            with deferred_interrupts() as pending, backend.quiet():
                for b, (lo, hi) in enumerate(bounds):
                    value = step(Xd[lo:hi, ...], Td[lo:hi, ...], rng=self._rng,
                                 where=(self.n_iter_, b))
                    pending.check()  # Ctrl-C lands between updates, as in fit
                    if self.alpha:
                        value = value + l2.penalty
                    self.t_ += hi - lo
                    total = value * (hi - lo) if total is None else total + value * (hi - lo)
                step.guard.after_update(step.count, total, (self.n_iter_, len(bounds) - 1),
                                        force=True)
        except DivergenceError as exc:
            raise ValueError(f"{type(self).__name__}: the training loss became non-finite "
                             f"(lower learning_rate_init): {exc}") from exc
        return float(total) / n  # the one device read of the epoch

    # ------------------------------------------------------------------ prediction
    def _forward(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        model = self.model_
        return model.backend.to_numpy(model.predict(X)).astype(np.float64, copy=False)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags


class _L2Penalty:
    """scikit-learn's L2 term as a gradient hook of the step: ``alpha / batch`` times each
    weight matrix (not the biases) added to its gradient; ``penalty`` is the term's share of
    the last batch's loss (a device scalar, read with the epoch's loss)."""

    def __init__(self, alpha: float, xp):
        self.alpha, self.xp, self.penalty = float(alpha), xp, None

    def __call__(self, grads: dict, step) -> dict:
        params = step.model.parameters.arrays
        batch = step.batch_size
        scale = self.alpha / batch
        penalty = None
        out = dict(grads)
        for name, W in params.items():
            if name.endswith(".W"):
                out[name] = grads[name] + scale * W
                term = self.xp.sum(W * W)
                penalty = term if penalty is None else penalty + term
        self.penalty = 0.5 * scale * penalty
        return out

