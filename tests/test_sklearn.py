"""xpnet.sklearn estimators pass scikit-learn's own estimator checks and behave like its MLPs."""

from __future__ import annotations

import os
import pickle

# scikit-learn refuses array API dispatch without SciPy's array API mode, and its estimator
# checks skip every array API check without it; SciPy reads it when first imported.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="scikit-learn (the sklearn extra) is not installed")

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import make_classification, make_regression  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from xpnet.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

# Short runs on purpose: "not converged" is expected and would only be noise here.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

# Small networks and few epochs keep the whole check suite fast; the checks that measure
# learning (check_classifiers_train, check_regressors_train) still need a working model.
CHECKED = [
    MLPClassifier(hidden_layer_sizes=(16,), max_iter=100, learning_rate_init=0.01,
                  random_state=0, backend="numpy"),
    MLPRegressor(hidden_layer_sizes=(16,), max_iter=100, learning_rate_init=0.01,
                 random_state=0, backend="numpy"),
    # The other solver with scikit-learn's adaptive schedule. Early stopping is not among
    # these: its random validation split can never make weights equal repeated rows
    # (check_sample_weight_equivalence; scikit-learn runs that check on its own MLP without
    # it too); test_matches_scikit_learn_step_for_step covers that path.
    MLPClassifier(hidden_layer_sizes=(16,), max_iter=100, solver="sgd", learning_rate_init=0.1,
                  learning_rate="adaptive", random_state=0, backend="numpy"),
]

# None so far: every check of scikit-learn's suite passes. A failure that cannot be fixed
# goes here as {"check_name": "why it cannot pass"}.
EXPECTED_FAILURES: dict[str, str] = {}


@parametrize_with_checks(CHECKED, expected_failed_checks=lambda est: EXPECTED_FAILURES)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


# ----------------------------------------------------------------------------- behaviour


def _classification(n=240, classes=3, seed=0):
    return make_classification(n_samples=n, n_features=6, n_informative=4, n_classes=classes,
                               n_clusters_per_class=1, random_state=seed)


def test_classifier_learns_and_reports_its_curve_with_string_labels():
    X, y = _classification()
    labels = np.array(["cat", "dog", "eel"])[y]
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=60, learning_rate_init=0.01,
                        random_state=0).fit(X, labels)
    assert clf.score(X, labels) > 0.9
    assert list(clf.classes_) == ["cat", "dog", "eel"] and clf.n_features_in_ == 6
    assert len(clf.loss_curve_) == clf.n_iter_ and clf.loss_curve_[-1] < clf.loss_curve_[0] / 2
    proba = clf.predict_proba(X)
    assert isinstance(proba, np.ndarray) and proba.shape == (240, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert np.array_equal(clf.classes_[proba.argmax(axis=1)], clf.predict(X))
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X)), proba, rtol=1e-10)


def test_partial_fit_steps_are_the_epochs_of_fit():
    X, y = _classification(120)
    params = dict(hidden_layer_sizes=(8,), random_state=3, batch_size=32, shuffle=False)
    with pytest.warns(Warning):  # 3 iterations do not converge
        full = MLPClassifier(max_iter=3, **params).fit(X, y)
    steps = MLPClassifier(**params)
    with pytest.raises(ValueError, match="classes"):
        steps.partial_fit(X, y)
    for _ in range(3):
        steps.partial_fit(X, y, classes=[0, 1, 2])
    # n_iter_ counts the last call's epochs and t_ every sample seen, as in scikit-learn
    assert steps.n_iter_ == 1 and steps.t_ == 3 * 120
    assert steps.loss_curve_ == pytest.approx(full.loss_curve_)
    np.testing.assert_allclose(steps.predict_proba(X), full.predict_proba(X), rtol=1e-10)


def test_early_stopping_records_validation_scores_and_stops():
    X, y = _classification(300)
    clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=500, early_stopping=True,
                        n_iter_no_change=3, learning_rate_init=0.05, random_state=0).fit(X, y)
    assert clf.n_iter_ < 500
    assert len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_)


def test_alpha_shrinks_the_weights():
    X, y = _classification(120)
    norms = []
    for alpha in (0.0, 10.0):
        clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=40, alpha=alpha,
                            learning_rate_init=0.01, random_state=0).fit(X, y)
        norms.append(sum(float(np.sum(np.asarray(v) ** 2))
                         for k, v in clf.model_.params.items() if k.endswith(".W")))
    assert norms[1] < 0.5 * norms[0]


def test_warm_start_continues_from_the_fitted_weights():
    X, y = make_regression(n_samples=100, n_features=4, noise=0.1, random_state=0)
    y = y / y.std()
    reg = MLPRegressor(hidden_layer_sizes=(16,), max_iter=20, learning_rate_init=0.01,
                       warm_start=True, random_state=0)
    with pytest.warns(Warning):
        reg.fit(X, y)
        first = reg.loss_curve_[-1]
        reg.fit(X, y)
    assert reg.n_iter_ == 20 and len(reg.loss_curve_) == 40  # n_iter_: the last fit's
    assert reg.loss_curve_[20] < reg.loss_curve_[0] and reg.loss_curve_[-1] < first


def test_regressor_multi_output_on_another_backend_and_pickle(backend):
    X, Y = make_regression(n_samples=80, n_features=5, n_targets=2, random_state=1)
    Y = Y / Y.std(axis=0)
    reg = MLPRegressor(hidden_layer_sizes=(16,), max_iter=30, learning_rate_init=0.02,
                       random_state=0, backend=backend.name)
    with pytest.warns(Warning):
        reg.fit(X, Y)
    assert reg.model_.backend.name == backend.name
    pred = reg.predict(X)
    assert isinstance(pred, np.ndarray) and pred.shape == (80, 2)
    assert reg.score(X, Y) > 0.5
    again = pickle.loads(pickle.dumps(reg))
    np.testing.assert_array_equal(again.predict(X), pred)
    again.partial_fit(X, Y)  # optimizer state came along: training continues
    assert again.n_iter_ == 1 and len(again.loss_curve_) == reg.n_iter_ + 1


def test_clone_and_bad_parameters_are_reported_at_fit():
    X, y = _classification(60)
    for bad, needle in [({"solver": "lbfgs"}, "solver"), ({"activation": "gelu"}, "activation"),
                        ({"hidden_layer_sizes": (0,)}, "hidden_layer_sizes"),
                        ({"batch_size": 0}, "batch_size"), ({"max_iter": 0}, "max_iter")]:
        clf = clone(MLPClassifier(**bad))  # construction and clone never validate
        with pytest.raises(ValueError, match=needle):
            clf.fit(X, y)
        assert not hasattr(clf, "model_")


@pytest.mark.gpu
def test_classifier_trains_on_the_gpu(gpu_backend):
    X, y = _classification()
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=60, learning_rate_init=0.01,
                        random_state=0, backend="cupy").fit(X, y)
    assert clf.model_.backend.is_gpu and clf.model_.backend.dtype_name == "float32"
    assert clf.score(X, y) > 0.9
