"""scikit-learn estimators: ``MLPClassifier`` and ``MLPRegressor`` trained by xpnet.

They take scikit-learn's parameter names and defaults (``hidden_layer_sizes``, ``solver``,
``alpha``, ``learning_rate_init``, ...) plus ``backend``, ``device`` and ``dtype``, and
pass scikit-learn's own estimator checks. Inputs and outputs are NumPy arrays; only
training and prediction run on the backend, so ``backend="cupy"`` trains on a GPU::

    from xpnet.sklearn import MLPClassifier
    clf = MLPClassifier(hidden_layer_sizes=(64,), backend="cupy").fit(X, y)

Differences from scikit-learn's MLP: solvers "sgd" and "adam" only (no "lbfgs"), a
constant learning rate, one output per class (also for two classes), and the loss in
``loss_curve_`` is xpnet's (cross entropy; mean squared error, not its half) plus the L2
term. As in scikit-learn, ``alpha`` is an L2 penalty on the weights (not the biases)
scaled by 1 / batch size.

The shared parameters and training loop live in ``sklearn_base.BaseMLP``; this module
holds what differs: how targets are encoded, predicted and scored.
"""

from __future__ import annotations

import numpy as np

try:
    from sklearn.base import ClassifierMixin, RegressorMixin
    from sklearn.utils.multiclass import check_classification_targets, unique_labels
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError(
        "xpnet.sklearn needs scikit-learn >= 1.6, which is not installed; install the "
        "sklearn extra: pip install 'xpnet[sklearn]'"
    ) from exc

from .base import BaseMLP


class MLPClassifier(ClassifierMixin, BaseMLP):
    """A multilayer perceptron classifier with scikit-learn's API, trained by xpnet.

    Parameters are scikit-learn's (see ``sklearn.neural_network.MLPClassifier``) plus
    ``backend`` (an xpnet backend name; default the current one), ``device`` and
    ``dtype`` (default float64 on CPUs, float32 on GPUs). Attributes after ``fit``:
    ``classes_``, ``loss_curve_``, ``validation_scores_`` (with ``early_stopping``),
    ``n_iter_``, ``n_features_in_``, ``model_`` (the xpnet Sequential).
    """

    _loss = "cross_entropy"
    _multi_output_y = False
    _stratify = True

    def _encode_targets(self, y, first: bool, classes=None) -> np.ndarray:
        check_classification_targets(y)
        if first:
            self.classes_ = unique_labels(classes if classes is not None else y)
            if len(self.classes_) < 2:
                raise ValueError(f"MLPClassifier needs samples of at least 2 classes; got 1 "
                                 f"class ({self.classes_[0]!r})")
        unknown = np.setdiff1d(y, self.classes_)
        if unknown.size:
            raise ValueError(f"MLPClassifier: y holds labels {unknown.tolist()} that are not "
                             f"among classes_ {self.classes_.tolist()}")
        onehot = np.zeros((y.shape[0], len(self.classes_)))
        onehot[np.arange(y.shape[0]), np.searchsorted(self.classes_, y)] = 1.0
        return onehot

    def partial_fit(self, X, y, classes=None):
        """One epoch over (X, y). ``classes`` (all labels) is required on the first call."""
        if not hasattr(self, "model_") and classes is None:
            raise ValueError("MLPClassifier.partial_fit: pass classes=<all labels> on the "
                             "first call, since later batches may not show every class")
        return self._fit(X, y, incremental=True, classes=classes)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (softmax of the logits), one column per ``classes_`` entry."""
        Z = self._forward(X)
        Z = Z - Z.max(axis=1, keepdims=True)
        E = np.exp(Z)
        return E / E.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X) -> np.ndarray:
        """Natural log of ``predict_proba``, computed stably from the logits."""
        Z = self._forward(X)
        Z = Z - Z.max(axis=1, keepdims=True)
        return Z - np.log(np.exp(Z).sum(axis=1, keepdims=True))

    def predict(self, X) -> np.ndarray:
        """The most probable class of each row, as labels from ``classes_``."""
        scores = self._forward(X)  # checks fitted-ness before classes_ is touched
        return self.classes_[np.argmax(scores, axis=1)]

    def _score_host(self, X, y) -> float:
        return float(np.mean(self.predict(X) == y))


class MLPRegressor(RegressorMixin, BaseMLP):
    """A multilayer perceptron regressor with scikit-learn's API, trained by xpnet.

    Mean squared error on a linear output; ``y`` may have several columns. Parameters
    and attributes as ``MLPClassifier`` (without ``classes_``).
    """

    _loss = "mse"
    _multi_output_y = True
    _stratify = False

    def _encode_targets(self, y, first: bool, classes=None) -> np.ndarray:
        T = np.asarray(y, dtype=np.float64)
        T = T.reshape(-1, 1) if T.ndim == 1 else T
        if not first and T.shape[1] != self.n_outputs_:
            raise ValueError(f"MLPRegressor: y has {T.shape[1]} outputs but the model was "
                             f"fitted with {self.n_outputs_}")
        return T

    def partial_fit(self, X, y):
        """One epoch over (X, y), continuing from the current weights."""
        return self._fit(X, y, incremental=True)

    def predict(self, X) -> np.ndarray:
        """Predicted targets: shape (n,) for one output, (n, n_outputs) otherwise."""
        out = self._forward(X)
        return out.ravel() if out.shape[1] == 1 else out

    def _score_host(self, X, y) -> float:
        return float(self.score(X, y))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
