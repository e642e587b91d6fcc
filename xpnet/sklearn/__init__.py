"""scikit-learn estimators: ``MLPClassifier`` and ``MLPRegressor`` trained by xpnet.

Drop-ins for ``sklearn.neural_network``'s: the same parameters and defaults, the same
``fit(X, y, sample_weight=None)``, ``partial_fit``, multilabel ``y``, attributes
(``coefs_``, ``intercepts_``, ``n_layers_``, ``n_outputs_``, ``out_activation_``,
``loss_curve_``, ...) and training loop (initial weights, shuffles and validation split from
``random_state``, losses, L2 term, ``learning_rate`` schedules, early stopping), plus
``backend``, ``device`` and ``dtype``. They pass scikit-learn's own estimator checks::

    from xpnet.sklearn import MLPClassifier
    clf = MLPClassifier(hidden_layer_sizes=(64,), backend="cupy").fit(X, y)

Inputs and outputs are NumPy arrays and training runs on ``backend``; under
``sklearn.config_context(array_api_dispatch=True)`` a torch, CuPy or array-api-strict ``X``
trains on its own library and device and predictions come back in its namespace.

Differences from scikit-learn's MLP: no ``solver="lbfgs"`` (nor ``max_fun``) and no
``loss="poisson"``: each is refused at ``fit`` with the reason; ``coefs_`` and
``intercepts_`` are copies (change weights through ``model_.set_params``); Adam is
``torch.optim.Adam``'s, whose epsilon sits outside the bias correction, so Adam runs are
close to scikit-learn's rather than equal. Where scikit-learn raises, xpnet goes on:
``partial_fit`` with ``early_stopping=True`` trains without a validation set, a classifier's
validation set may hold a single sample, one whose weights are all zero is scored
unweighted, and a batch whose weights are all zero is skipped. The logistic loss is
computed from the logits, so for saturated outputs ``loss_curve_`` can exceed scikit-learn's
(which clips probabilities at machine epsilon); the gradients agree. Ctrl-C stops training
at a step boundary with ``KeyboardInterrupt`` (scikit-learn warns and keeps the weights).
"""

from __future__ import annotations

import numpy as np

try:
    from sklearn.base import ClassifierMixin, RegressorMixin
    from sklearn.metrics import accuracy_score, r2_score
    from sklearn.preprocessing import LabelBinarizer
    from sklearn.utils.multiclass import check_classification_targets, unique_labels
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError(
        "xpnet.sklearn needs scikit-learn >= 1.6, which is not installed; install the "
        "sklearn extra: pip install 'xpnet[sklearn]'"
    ) from exc

from . import arrays
from .base import BaseMLP

__all__ = ["MLPClassifier", "MLPRegressor"]


class MLPClassifier(ClassifierMixin, BaseMLP):
    """A multilayer perceptron classifier with scikit-learn's API, trained by xpnet.

    Parameters are scikit-learn's (see ``sklearn.neural_network.MLPClassifier``) plus
    ``backend`` (an xpnet backend name; default the current one), ``device`` and
    ``dtype`` (default ``X``'s float dtype; float32 on a GPU fed NumPy arrays). ``y`` holds
    class labels, or is a label indicator matrix (multilabel: one logistic output per
    label). Attributes after ``fit``: scikit-learn's (``classes_``, ``coefs_``,
    ``intercepts_``, ``n_layers_``, ``n_outputs_``, ``out_activation_``, ``loss_``,
    ``loss_curve_``, ``best_loss_``, ``validation_scores_``, ``best_validation_score_``,
    ``n_iter_``, ``t_``, ``n_features_in_``) and ``model_`` (the xpnet Sequential).
    """

    _classifier = True
    _min_validation = 1

    def _encode_targets(self, y, first: bool, classes, incremental: bool) -> np.ndarray:
        """``y`` as scikit-learn's ``LabelBinarizer`` codes it: one 0/1 column for two
        classes, one-hot columns for more, the indicator matrix itself for multilabel."""
        name = type(self).__name__
        check_classification_targets(y)
        if first:
            binarizer = LabelBinarizer()
            multilabel = y.ndim == 2
            binarizer.fit(y if multilabel or classes is None else np.asarray(classes))
            if binarizer.y_type_ not in ("binary", "multiclass", "multilabel-indicator"):
                raise ValueError(f"{name}: y must hold class labels or be a binary label "
                                 f"indicator matrix; got {binarizer.y_type_} targets")
            if not multilabel and len(binarizer.classes_) < 2:
                raise ValueError(f"{name} needs samples of at least 2 classes; got 1 class "
                                 f"({binarizer.classes_[0]!r})")
            self._label_binarizer = binarizer
            self.out_activation_ = ("softmax" if binarizer.y_type_ == "multiclass"
                                    else "logistic")
        else:
            self._check_known_labels(y, incremental)
        return self._label_binarizer.transform(y).astype(np.float64)

    def _check_known_labels(self, y, incremental: bool) -> None:
        name, known = type(self).__name__, self._label_binarizer.classes_
        if self._label_binarizer.y_type_ == "multilabel-indicator":
            if y.ndim != 2 or y.shape[1] != len(known):
                raise ValueError(f"{name}: y must be an indicator matrix of {len(known)} "
                                 f"labels, as when fitted; got shape {y.shape}")
            return
        labels = unique_labels(y)
        if not incremental and set(labels) != set(known):  # warm_start
            raise ValueError(f"{name}: warm_start needs y with the classes of the previous "
                             f"fit, {known.tolist()}; y has {labels.tolist()}")
        unknown = np.setdiff1d(labels, known)
        if unknown.size:
            raise ValueError(f"{name}: y holds labels {unknown.tolist()} that are not among "
                             f"classes_ {known.tolist()}")

    def _set_classes_on(self, backend, follows: bool) -> None:
        """``classes_`` in the fit's namespace under dispatch (numeric labels only: a string
        label has no device array), else NumPy."""
        known = self._label_binarizer.classes_
        numeric = np.issubdtype(known.dtype, np.number)
        self.classes_ = (backend.xp.asarray(known, device=backend.device)
                         if follows and numeric else known)

    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over (X, y). ``classes`` (all labels) is required on the first call."""
        if not hasattr(self, "model_") and classes is None:
            raise ValueError("MLPClassifier.partial_fit: pass classes=<all labels> on the "
                             "first call, since later batches may not show every class")
        return self._fit(X, y, sample_weight, incremental=True, classes=classes)

    def predict_proba(self, X):
        """Class probabilities, one column per ``classes_`` entry (per label, for multilabel:
        each column that label's probability)."""
        P, xp, on_device = self._outputs(X, "predict_proba")
        return self._result(self._proba(P, xp), on_device)

    def _proba(self, P, xp):
        if self._label_binarizer.y_type_ == "binary":
            return xp.concat([1.0 - P, P], axis=1)
        return P

    def predict_log_proba(self, X):
        """Natural log of ``predict_proba``."""
        P, xp, on_device = self._outputs(X, "predict_log_proba")
        return self._result(xp.log(self._proba(P, xp)), on_device)

    def predict(self, X):
        """The most probable class of each row, as labels from ``classes_``; for multilabel,
        the indicator matrix (1 where a label's probability exceeds 0.5)."""
        P, xp, on_device = self._outputs(X, "predict")
        kind = self._label_binarizer.y_type_
        if kind == "multilabel-indicator":
            return self._result(xp.astype(P > 0.5, xp.int64), on_device)
        index = (xp.astype(P[:, 0] > 0.5, xp.int64) if kind == "binary"
                 else xp.argmax(P, axis=1))
        if on_device and not isinstance(self.classes_, np.ndarray):
            return xp.take(self.classes_, index)
        return self._label_binarizer.classes_[self.model_.backend.to_numpy(index)]

    def _validation_score(self, X, y, sample_weight) -> float:
        return float(accuracy_score(y, arrays.host(self.predict(X)), sample_weight=sample_weight))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, BaseMLP):
    """A multilayer perceptron regressor with scikit-learn's API, trained by xpnet.

    Half the squared error on a linear output; ``y`` may have several columns. Parameters
    and attributes as ``MLPClassifier`` (without ``classes_``), plus ``loss`` (only
    ``"squared_error"``: xpnet has no ``"poisson"``).
    """

    _classifier = False

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, loss="squared_error",
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 backend=None, device=None, dtype=None):
        super().__init__(
            hidden_layer_sizes, activation, solver=solver, alpha=alpha, batch_size=batch_size,
            learning_rate=learning_rate, learning_rate_init=learning_rate_init,
            power_t=power_t, max_iter=max_iter, shuffle=shuffle, random_state=random_state,
            tol=tol, verbose=verbose, warm_start=warm_start, momentum=momentum,
            nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
            validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2,
            epsilon=epsilon, n_iter_no_change=n_iter_no_change, max_fun=max_fun,
            backend=backend, device=device, dtype=dtype)
        self.loss = loss

    def _check_unsupported(self, name: str) -> None:
        super()._check_unsupported(name)
        if self.loss != "squared_error":
            raise ValueError(f"{name}: loss={self.loss!r} is not available in xpnet, which "
                             "has loss='squared_error' only (scikit-learn's 'poisson' needs "
                             "an exponential output and the Poisson deviance)")

    def _encode_targets(self, y, first: bool, classes, incremental: bool) -> np.ndarray:
        T = np.asarray(y, dtype=np.float64)
        T = T.reshape(-1, 1) if T.ndim == 1 else T
        if not first and T.shape[1] != self.n_outputs_:
            raise ValueError(f"MLPRegressor: y has {T.shape[1]} outputs but the model was "
                             f"fitted with {self.n_outputs_}")
        if first:
            self.out_activation_ = "identity"
        return T

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), continuing from the current weights."""
        return self._fit(X, y, sample_weight, incremental=True)

    def predict(self, X):
        """Predicted targets: shape (n,) for one output, (n, n_outputs) otherwise."""
        P, xp, on_device = self._outputs(X, "predict")
        return self._result(xp.reshape(P, (-1,)) if self.n_outputs_ == 1 else P, on_device)

    def _validation_score(self, X, y, sample_weight) -> float:
        pred = arrays.host(self.predict(X))
        if not np.all(np.isfinite(pred)):
            return np.nan  # as scikit-learn: a diverged model scores NaN
        return float(r2_score(y, pred, sample_weight=sample_weight))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
