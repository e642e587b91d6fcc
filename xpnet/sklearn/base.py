"""The shared part of ``xpnet.sklearn``'s estimators: parameters, their validation, and
scikit-learn 1.9's stochastic training loop run on an xpnet backend through ``Step``.

The loop is scikit-learn's ``_fit_stochastic``, step for step: the same initial weights
(Glorot-uniform drawn from ``random_state``), the same shuffles and validation split drawn
from it, the same loss (``objective.py``), sample weights and L2 term, the same learning
rate schedules (``schedule.py``), early stopping and no-improvement counting. With
``solver="sgd"`` in float64 the loss curve equals scikit-learn's to rounding.

Subclasses (``MLPClassifier``, ``MLPRegressor`` in ``xpnet.sklearn``) say how targets are
encoded (``_encode_targets``), how outputs are decoded and how a held-out set is scored
(``_validation_score``). Import the estimators from ``xpnet.sklearn``, which says clearly
when scikit-learn is missing.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state, column_or_1d
from sklearn.utils import shuffle as _shuffle
from sklearn.utils._array_api import check_same_namespace
from sklearn.utils.validation import check_is_fitted, validate_data

from .. import checks
from ..backend import table as _backend
from ..interrupts import deferred_interrupts
from ..model import mlp
from ..nn import optim as _optim
from ..nn.layers import sigmoid
from ..train.guard import DivergenceError, Guard
from ..train.step import Step
from . import arrays
from .objective import LOSSES, L2Penalty
from .schedule import LEARNING_RATES, Schedule

__all__ = ["BaseMLP"]

_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
_MAX_FUN = 15000  # scikit-learn's default; it bounds lbfgs only


class BaseMLP(BaseEstimator):
    """The shared training loop; subclasses say how targets are encoded and scored."""

    _classifier = False
    # scikit-learn asks for 2 validation samples; accuracy is defined on one (R^2 is not)
    _min_validation = 2

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10,
                 max_fun=_MAX_FUN, backend=None, device=None, dtype=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
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
        self.max_fun = max_fun
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
        self._check_unsupported(name)
        if self.solver not in ("sgd", "adam"):
            raise ValueError(f"{name}: solver must be 'sgd' or 'adam'; got {self.solver!r}")
        if self.learning_rate not in LEARNING_RATES:
            raise ValueError(f"{name}: learning_rate must be one of {list(LEARNING_RATES)}; "
                             f"got {self.learning_rate!r}")
        for field, low in (("alpha", 0.0), ("tol", 0.0), ("power_t", 0.0)):
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

    def _check_unsupported(self, name: str) -> None:
        """scikit-learn's parameters that xpnet accepts (so that code written for scikit-learn
        constructs, clones and grid-searches) but cannot honour: a clear refusal at fit."""
        why = ("xpnet trains in mini-batches on its backend through its training step; "
               "'lbfgs' is scipy's full-batch L-BFGS-B on the host, which would bring every "
               "evaluation back to the host")
        if self.solver == "lbfgs":
            raise ValueError(f"{name}: solver='lbfgs' is not available in xpnet ({why}). Use "
                             f"solver='adam' or 'sgd', or sklearn.neural_network.{name} for "
                             "lbfgs")
        if self.max_fun != _MAX_FUN:
            raise ValueError(f"{name}: max_fun={self.max_fun!r} is not available in xpnet: it "
                             f"bounds solver='lbfgs', which xpnet does not have ({why}). "
                             f"Leave max_fun at {_MAX_FUN}, train with solver='adam' or 'sgd' and "
                             "bound training with max_iter")

    def _check_optimizer_params(self, name: str) -> None:
        """The solver's settings under scikit-learn's names (the optimizers would name them
        lr, betas[0], eps)."""
        checks.real(name, "learning_rate_init", self.learning_rate_init, 0.0, low_open=True)
        checks.real(name, "epsilon", self.epsilon, 0.0, low_open=True)
        for field in ("beta_1", "beta_2", "momentum"):
            checks.real(name, field, getattr(self, field), 0.0, 1.0, high_open=True)

    def _check_sample_weight(self, sample_weight, n: int):
        """``sample_weight`` as a host float64 vector of ``n`` finite, non-negative weights,
        not all zero (None stays None); every problem named before any state changes."""
        if sample_weight is None:
            return None
        name = type(self).__name__
        w = arrays.host(sample_weight)
        if np.isscalar(w):
            w = np.full(n, w)
        try:
            w = np.asarray(w, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name}.fit: sample_weight must be numbers; got "
                             f"{type(sample_weight).__name__} ({exc})") from None
        if w.ndim != 1 or w.shape[0] != n:
            raise ValueError(f"{name}.fit: sample_weight must have shape ({n},), one weight "
                             f"per sample of X; got shape {w.shape}")
        if not np.all(np.isfinite(w)):
            raise ValueError(f"{name}.fit: sample_weight holds {int(np.sum(~np.isfinite(w)))} "
                             "non-finite values (NaN or inf)")
        if np.any(w < 0):
            raise ValueError(f"{name}.fit: sample_weight must be non-negative; got "
                             f"{int(np.sum(w < 0))} negative weights (smallest {w.min()})")
        if not np.any(w > 0):
            raise ValueError(f"{name}.fit: sample_weight is all zero: no sample would count")
        return w

    def _resolve_backend(self, X, follows: bool) -> _backend.Backend:
        """Where to train: ``X``'s own library and device under array API dispatch (whatever
        ``backend`` and ``device`` say), else ``backend``; in ``dtype``, else ``X``'s float
        dtype (float32 on a GPU fed from the host, or where the backend has no float64)."""
        dtype = self.dtype or arrays.float_dtype_name(X)
        if follows:  # backend and device say where host inputs train; X's own place wins
            return _fallback_float32(lambda d: _backend.of_array(X, d), dtype, self.dtype)
        name = self.backend if self.backend is not None else _backend.current().name
        if self.dtype is None and _backend.resolve(name, self.device, "float32").is_gpu:
            return _backend.resolve(name, self.device, "float32")  # GPUs are slow in float64
        return _fallback_float32(lambda d: _backend.resolve(name, self.device, d), dtype,
                                 self.dtype)

    def _optimizer(self) -> _optim.Optimizer:
        if self.solver == "sgd":
            momentum = float(self.momentum)
            return _optim.SGD(lr=self.learning_rate_init, momentum=momentum,
                              nesterov=bool(self.nesterovs_momentum) and momentum > 0)
        return _optim.Adam(lr=self.learning_rate_init, betas=(self.beta_1, self.beta_2),
                           eps=self.epsilon)

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y, sample_weight=None):
        """Train for up to ``max_iter`` epochs (fewer when training stops improving).

        ``sample_weight`` (one non-negative weight per sample) weights each sample's loss as
        in scikit-learn: a batch's loss is the weighted mean, and the L2 term is divided by
        the batch's sum of weights.
        """
        return self._fit(X, y, sample_weight, incremental=False)

    def _fit(self, X, y, sample_weight, incremental: bool, classes=None):
        sizes = self._check_params()
        first = not hasattr(self, "model_") or not (incremental or self.warm_start)
        follows = arrays.follows_input(X)
        X, y = validate_data(self, X, arrays.host(y), reset=first,
                             dtype=arrays.float_dtypes(X), multi_output=True,
                             y_numeric=not self._classifier)
        y = np.asarray(arrays.host(y))
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)  # scikit-learn's warning for a column y
        sample_weight = self._check_sample_weight(sample_weight, X.shape[0])
        if not first and follows != self._follows_input:
            raise ValueError(f"{type(self).__name__}: this estimator was fitted on "
                             f"{self.model_.backend}; continue training it with inputs of "
                             "the same kind (array API dispatch on and off alike)")
        T = self._encode_targets(y, first, classes, incremental)
        self._random_state = check_random_state(self.random_state)
        if first:
            self._initialize(X, T, sizes, follows)
        self._train(X, T, y, sample_weight, incremental)
        return self

    def _initialize(self, X, T, sizes: tuple[int, ...], follows: bool) -> None:
        backend = self._resolve_backend(X, follows)
        units = [X.shape[1], *sizes, T.shape[1]]
        model = mlp(units, activation=_ACTIVATIONS[self.activation], seed=None, backend=backend)
        model.set_params(self._glorot(model, units))
        self.model_ = model
        self._follows_input = follows
        self._set_classes_on(backend, follows)
        self.n_outputs_ = T.shape[1]
        self.n_layers_ = len(units)
        self.n_iter_ = 0
        self.t_ = 0
        self.loss_curve_: list[float] = []
        self._no_improvement_count = 0
        self._best: Any = None  # the best validation score's parameters
        self.validation_scores_: Any = [] if self.early_stopping else None
        self.best_validation_score_ = -np.inf if self.early_stopping else None
        self.best_loss_: Any = None if self.early_stopping else np.inf

    def _glorot(self, model, units) -> dict:
        """scikit-learn's initial weights: per layer, coefficients then intercepts drawn
        uniform in +-sqrt(f / (fan_in + fan_out)), f = 2 for logistic, else 6."""
        factor = 2.0 if self.activation == "logistic" else 6.0
        rng, values = self._random_state, []
        for fan_in, fan_out in zip(units[:-1], units[1:], strict=True):
            bound = np.sqrt(factor / (fan_in + fan_out))
            values.append(rng.uniform(-bound, bound, (fan_in, fan_out)))
            values.append(rng.uniform(-bound, bound, fan_out))
        return dict(zip(model.params, values, strict=True))

    def _set_classes_on(self, backend, follows: bool) -> None:
        """Classifiers keep their labels where predictions are made (overridden there)."""

    def _train(self, X, T, y, sample_weight, incremental: bool) -> None:
        """scikit-learn's ``_fit_stochastic``: epochs of shuffled mini-batches."""
        model = self.model_
        if not incremental or not hasattr(self, "_schedule"):  # as scikit-learn: fit restarts
            model.optimizer = self._optimizer()  # the optimizer, partial_fit continues it
            self._schedule = Schedule(self.learning_rate, self.learning_rate_init,
                                      self.power_t, self.solver == "sgd")
        early_stopping = bool(self.early_stopping) and not incremental
        X_val = y_val = sw_val = None
        if early_stopping:
            X, T, sample_weight, X_val, y_val, sw_val = self._split(X, T, y, sample_weight)
        n = X.shape[0]
        batch = self._batch_size(n)
        backend = model.backend
        Xd, Td = arrays.to_device(backend, X), backend.asarray(T)
        Wd = None if sample_weight is None else backend.asarray(sample_weight)
        l2 = L2Penalty(self.alpha, backend.xp)
        guard = Guard(model, 50, backend.kernels)
        step = Step(model, LOSSES[self.out_activation_], model.optimizer,
                    grad_hooks=[l2] if self.alpha else (), guard=guard)
        order = np.arange(n)
        self.n_iter_ = 0
        for _ in range(self.max_iter):
            if self.shuffle:  # shuffles the last order, as scikit-learn
                order = _shuffle(order, random_state=self._random_state)
            self.loss_ = self._one_epoch(step, guard, l2, Xd, Td, Wd, sample_weight, order,
                                        batch)
            self.n_iter_ += 1
            self.t_ += n
            self.loss_curve_.append(self.loss_)
            if self.verbose:
                print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}")
            if early_stopping or not self.early_stopping:  # partial_fit: no validation set
                self._count_no_improvement(early_stopping, X_val, y_val, sw_val)
            self._schedule.epoch_ends(model.optimizer, self.t_)
            if self._no_improvement_count > self.n_iter_no_change:
                if not self._schedule.stalled(model.optimizer):
                    break
                self._no_improvement_count = 0
            if incremental:
                break
            if self.n_iter_ == self.max_iter:
                warnings.warn(f"{type(self).__name__}: maximum iterations ({self.max_iter}) "
                              "reached and the optimization hasn't converged yet.",
                              ConvergenceWarning, stacklevel=3)
        if early_stopping and self._best is not None:
            model.restore(self._best)

    def _batch_size(self, n: int) -> int:
        if self.batch_size == "auto":
            return min(200, n)
        if self.batch_size > n:
            warnings.warn(f"{type(self).__name__}: batch_size={self.batch_size} is larger "
                          f"than the {n} training samples; it is clipped to {n}", stacklevel=4)
        return min(int(self.batch_size), n)

    def _split(self, X, T, y, sample_weight):
        """Hold out ``validation_fraction`` as scikit-learn does (stratified only for one
        output column: binary classes), drawing from the same random state."""
        stratify = T if self._classifier and T.shape[1] == 1 else None
        parts = (X, T, y) if sample_weight is None else (X, T, y, sample_weight)
        try:
            split = train_test_split(*parts, random_state=self._random_state,
                                     test_size=self.validation_fraction, stratify=stratify)
        except ValueError:
            if stratify is None:
                raise
            # too few samples of a class to stratify (scikit-learn raises): split at random
            split = train_test_split(*parts, random_state=self._random_state,
                                     test_size=self.validation_fraction)
        X_tr, X_val, T_tr, _, _, y_val = split[:6]
        sw_tr, sw_val = (None, None) if sample_weight is None else split[6:8]
        if sw_val is not None and not np.any(sw_val > 0):
            sw_val = None  # no held-out sample counts (scikit-learn raises): score them alike
        if X_val.shape[0] < self._min_validation:
            raise ValueError(f"{type(self).__name__}: the validation set is too small "
                             f"({X_val.shape[0]} of {X.shape[0]} samples); increase "
                             "validation_fraction or the size of the data set")
        return X_tr, T_tr, sw_tr, X_val, y_val, sw_val

    def _one_epoch(self, step: Step, guard: Guard, l2: L2Penalty, Xd, Td, Wd, sample_weight,
                   order, batch: int) -> float:
        """One pass over the batches of ``order``; the epoch's loss as scikit-learn reports
        it (each batch's loss weighted by its row count), read once at the end."""
        backend = self.model_.backend
        xp = backend.xp
        n = order.shape[0]
        if self.shuffle and batch < n:
            index = xp.asarray(order, device=backend.device)
            Xd, Td = xp.take(Xd, index, axis=0), xp.take(Td, index, axis=0)
            Wd = None if Wd is None else xp.take(Wd, index, axis=0)
        total: Any = 0.0  # a device scalar after the first batch
        try:
            with deferred_interrupts() as pending, backend.quiet():
                for b, lo in enumerate(range(0, n, batch)):
                    hi = min(lo + batch, n)
                    weights = None
                    l2.denominator = hi - lo
                    if Wd is not None:
                        l2.denominator = float(np.sum(sample_weight[order[lo:hi]]))
                        if l2.denominator == 0.0:  # no sample of this batch counts
                            continue
                        weights = Wd[lo:hi, ...]
                    value = step(Xd[lo:hi, ...], Td[lo:hi, ...], weights=weights,
                                 where=(self.n_iter_, b))
                    pending.check()  # Ctrl-C lands between updates, as in fit
                    total = total + value * (hi - lo)
                guard.after_update(step.count, total, (self.n_iter_, b), force=True)
        except DivergenceError as exc:
            raise ValueError(f"{type(self).__name__}: the training loss became non-finite "
                             f"(lower learning_rate_init): {exc}") from exc
        return float(total) / n  # the one device read of the epoch

    def _count_no_improvement(self, early_stopping: bool, X_val, y_val, sw_val) -> None:
        """scikit-learn's ``_update_no_improvement_count``: on the validation score with
        early stopping (keeping the best parameters), else on the training loss."""
        if early_stopping:
            score = self._validation_score(X_val, y_val, sw_val)
            self.validation_scores_.append(score)
            if self.verbose:
                print(f"Validation score: {score:f}")
            stalled = score < self.best_validation_score_ + self.tol
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best = self.model_.snapshot()
        else:
            stalled = self.loss_curve_[-1] > self.best_loss_ - self.tol
            self.best_loss_ = min(self.best_loss_, self.loss_curve_[-1])
        self._no_improvement_count = self._no_improvement_count + 1 if stalled else 0

    # ------------------------------------------------------------------ prediction
    @property
    def coefs_(self) -> list:
        """The weight matrices, ``coefs_[i]`` of shape (units in, units out) as in
        scikit-learn: copies, as arrays of the fit's namespace (NumPy unless fitted under
        array API dispatch). Change weights through ``model_.set_params``."""
        return self._weights(".W")

    @property
    def intercepts_(self) -> list:
        """The bias vectors, ``intercepts_[i]`` of shape (units out,); copies, as
        ``coefs_``."""
        return self._weights(".b")

    def _weights(self, suffix: str) -> list:
        check_is_fitted(self, "model_")
        backend = self.model_.backend
        arrays_ = [a for k, a in self.model_.params.items() if k.endswith(suffix)]
        if self._follows_input:
            return [backend.xp.asarray(a, copy=True) for a in arrays_]
        return [np.array(backend.to_numpy(a)) for a in arrays_]

    @property
    def _fit_namespace(self):
        """An array of the namespace and device the estimator was fitted on (what scikit-
        learn's namespace check compares a prediction's input with)."""
        if self._follows_input:
            return next(iter(self.model_.params.values()))
        return arrays.numpy_probe()

    def _outputs(self, X, method: str):
        """``(out_activation_(X @ ...), xp, on_device)``: the output layer's activation on
        the model's backend, and whether results stay there (fitted under dispatch)."""
        check_is_fitted(self, "model_")
        if arrays.dispatching():
            check_same_namespace(X, self, attribute="_fit_namespace", method=method)
        X = validate_data(self, X, reset=False, dtype=arrays.float_dtypes(X))
        model = self.model_
        xp = model.backend.xp
        Z = model.predict_device(arrays.to_device(model.backend, X))
        if self.out_activation_ == "softmax":
            E = xp.exp(Z - xp.max(Z, axis=1, keepdims=True))
            Z = E / xp.sum(E, axis=1, keepdims=True)
        elif self.out_activation_ == "logistic":
            Z = sigmoid(xp, Z)
        return Z, xp, self._follows_input

    def _result(self, a, on_device: bool):
        """A result where the caller expects it: the input's namespace, or NumPy."""
        return a if on_device else np.asarray(self.model_.backend.to_numpy(a))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.array_api_support = True
        return tags


def _fallback_float32(make, dtype: str, requested):
    """``make(dtype)``, or float32 where the backend has no float64 (JAX without x64) and
    the user did not ask for float64 by name."""
    try:
        return make(dtype)
    except _backend.BackendError:
        if requested is not None or dtype == "float32":
            raise
        return make("float32")

