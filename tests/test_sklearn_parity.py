"""xpnet.sklearn is a drop-in for scikit-learn's MLPs: it trains as they do, step for step, and
takes sample weights, multilabel targets and array API inputs."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="scikit-learn (the sklearn extra) is not installed")
os.environ.setdefault("SCIPY_ARRAY_API", "1")  # array API dispatch needs it (test_sklearn.py)

import sklearn  # noqa: E402
from sklearn import neural_network as sk  # noqa: E402
from sklearn.datasets import (  # noqa: E402
    load_digits,
    make_classification,
    make_multilabel_classification,
    make_regression,
)
from sklearn.model_selection import train_test_split  # noqa: E402

from xpnet.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _digits(n=600):
    X, y = load_digits(return_X_y=True)
    return X[:n] / 16.0, y[:n]


def _weights(n, seed=0):
    return np.random.default_rng(seed).uniform(0.0, 2.0, n)


def _multilabel():
    X, Y = make_multilabel_classification(200, 10, n_classes=4, random_state=0)
    return X / X.max(), Y


def _regression(targets):
    X, Y = make_regression(200, 5, n_targets=targets, random_state=0)
    return X, Y / Y.std(axis=0)


SGD = dict(hidden_layer_sizes=(16,), solver="sgd", learning_rate_init=0.1, max_iter=25,
           random_state=0)

# (name, estimator classes, data, parameters, fit keywords): every path of the loop
CASES = [
    ("multiclass, weighted", "clf", _digits, {}, True),
    ("invscaling", "clf", _digits, dict(learning_rate="invscaling", power_t=0.3), False),
    ("adaptive", "clf", _digits, dict(learning_rate="adaptive", n_iter_no_change=2, tol=0.05,
                                      max_iter=80), False),
    ("early stopping, weighted", "clf", _digits, dict(early_stopping=True), True),
    ("binary, weighted", "clf", lambda: (_digits()[0], _digits()[1] % 2), {}, True),
    ("binary, early stopping", "clf", lambda: (_digits()[0], _digits()[1] % 2),
     dict(early_stopping=True, n_iter_no_change=2), False),
    ("multilabel", "clf", _multilabel, {}, False),
    ("regression, 2 outputs, weighted", "reg", lambda: _regression(2),
     dict(learning_rate_init=0.01), True),
    ("regression, early stopping", "reg", lambda: _regression(1),
     dict(learning_rate_init=0.01, early_stopping=True), False),
    ("no momentum, no L2, batches of 50", "clf", _digits,
     dict(momentum=0.0, alpha=0.0, batch_size=50), True),
]
CLASSES = {"clf": (MLPClassifier, sk.MLPClassifier), "reg": (MLPRegressor, sk.MLPRegressor)}


@pytest.mark.parametrize("name, kind, data, params, weighted", CASES, ids=[c[0] for c in CASES])
def test_matches_scikit_learn_step_for_step(name, kind, data, params, weighted):
    """Same initial weights, shuffles, split, loss, L2 term, schedule and stopping: in float64
    the loss curve, the weights and the predictions equal scikit-learn's to rounding."""
    X, y = data()
    fit = {"sample_weight": _weights(X.shape[0])} if weighted else {}
    ours_cls, theirs_cls = CLASSES[kind]
    ours = ours_cls(**SGD | params, backend="numpy").fit(X, y, **fit)
    theirs = theirs_cls(**SGD | params).fit(X, y, **fit)
    assert ours.n_iter_ == theirs.n_iter_ and ours.t_ == theirs.t_
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-9)
    for attr in ("n_layers_", "n_outputs_", "out_activation_"):
        assert getattr(ours, attr) == getattr(theirs, attr), attr
    for attr in ("best_loss_", "best_validation_score_"):  # None for the other kind of stop
        mine, sk_value = getattr(ours, attr), getattr(theirs, attr)
        assert (mine is None) == (sk_value is None), attr
        assert mine is None or mine == pytest.approx(sk_value, rel=1e-9), attr
    if params.get("early_stopping"):
        np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_)
    assert model_rate(ours) == pytest.approx(theirs._optimizer.learning_rate, rel=1e-12)
    for mine, sk_arrays in ((ours.coefs_, theirs.coefs_), (ours.intercepts_, theirs.intercepts_)):
        assert [a.shape for a in mine] == [a.shape for a in sk_arrays]
        for a, b in zip(mine, sk_arrays, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)
    if kind == "clf":
        np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
        np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), atol=1e-10)
    else:
        np.testing.assert_allclose(ours.predict(X), theirs.predict(X), atol=1e-10)


def model_rate(est) -> float:
    return est.model_.optimizer.lr


def test_the_schedules_change_the_rate_as_scikit_learn_says():
    X, y = _digits(300)
    inv = MLPClassifier(**SGD | dict(max_iter=4, learning_rate="invscaling", power_t=0.25))
    inv.fit(X, y)
    assert model_rate(inv) == pytest.approx(0.1 / (4 * 300 + 1) ** 0.25)
    # adaptive: each stall (no tol improvement for n_iter_no_change epochs) divides by 5
    ada = MLPClassifier(**SGD | dict(max_iter=40, learning_rate="adaptive", tol=10.0,
                                     n_iter_no_change=1)).fit(X, y)
    stalls = round(np.log(0.1 / model_rate(ada)) / np.log(5))
    assert stalls >= 2 and model_rate(ada) == pytest.approx(0.1 / 5**stalls)
    constant = MLPClassifier(**SGD | dict(max_iter=3)).fit(X, y)
    assert model_rate(constant) == 0.1
    # Adam ignores learning_rate, as in scikit-learn
    adam = MLPClassifier(**SGD | dict(solver="adam", learning_rate="invscaling", max_iter=3))
    assert model_rate(adam.fit(X, y)) == 0.1


def test_partial_fit_matches_scikit_learn_with_sample_weight():
    X, y = _digits(300)
    w = _weights(300)
    ours, theirs = MLPClassifier(**SGD), sk.MLPClassifier(**SGD)
    for est in (ours, theirs):
        for _ in range(3):
            est.partial_fit(X, y, sample_weight=w, classes=np.arange(10))
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-9)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), atol=1e-10)


def test_digits_side_by_side_with_sample_weight_as_scikit_learn():
    """Adam (xpnet's is torch's, with epsilon outside the bias correction, so the runs are
    close rather than equal): held-out accuracy within 0.01 of scikit-learn's."""
    X, y = load_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X / 16.0, y, test_size=0.3, random_state=0)
    w = np.where(y_tr % 2 == 0, 2.0, 0.5)  # even digits count four times as much
    params = dict(hidden_layer_sizes=(64,), learning_rate_init=0.005, max_iter=60,
                  random_state=0)
    ours = MLPClassifier(**params, backend="numpy").fit(X_tr, y_tr, sample_weight=w)
    theirs = sk.MLPClassifier(**params).fit(X_tr, y_tr, sample_weight=w)
    acc_ours, acc_theirs = ours.score(X_te, y_te), theirs.score(X_te, y_te)
    assert acc_theirs > 0.95 and abs(acc_ours - acc_theirs) <= 0.01, (acc_ours, acc_theirs)
    assert ours.loss_curve_[-1] == pytest.approx(theirs.loss_curve_[-1], rel=0.05)


def test_integer_weights_equal_repeated_rows():
    X, y = _digits(150)
    w = np.random.default_rng(1).integers(0, 3, 150)
    params = SGD | dict(shuffle=False, max_iter=10)  # one batch: order plays no part
    weighted = MLPClassifier(**params).fit(X, y, sample_weight=w)
    repeated = MLPClassifier(**params).fit(np.repeat(X, w, axis=0), np.repeat(y, w))
    np.testing.assert_allclose(weighted.loss_curve_, repeated.loss_curve_, rtol=1e-9)
    np.testing.assert_allclose(weighted.predict_proba(X), repeated.predict_proba(X),
                               atol=1e-10)


@pytest.mark.parametrize("weights, needle", [
    (np.ones(5), r"shape \(60,\)"),
    (np.r_[np.ones(59), np.nan], "non-finite"),
    (np.r_[np.ones(59), -1.0], "non-negative"),
    (np.zeros(60), "all zero"),
    (np.array(["a"] * 60), "numbers"),
])
def test_sample_weight_is_checked_before_anything_changes(weights, needle):
    X, y = _digits(60)
    clf = MLPClassifier(max_iter=2)
    with pytest.raises(ValueError, match=f"sample_weight.*{needle}|{needle}.*"):
        clf.fit(X, y, sample_weight=weights)
    assert not hasattr(clf, "model_")


def test_multilabel_predicts_the_indicator_matrix():
    X, Y = _multilabel()
    clf = MLPClassifier(hidden_layer_sizes=(32,), learning_rate_init=0.01, max_iter=300,
                        random_state=0).fit(X, Y)
    assert clf.out_activation_ == "logistic" and clf.n_outputs_ == 4
    assert clf.coefs_[-1].shape == (32, 4) and list(clf.classes_) == [0, 1, 2, 3]
    pred, proba = clf.predict(X), clf.predict_proba(X)
    assert pred.shape == (200, 4) and set(np.unique(pred)) <= {0, 1}
    np.testing.assert_array_equal(pred, (proba > 0.5).astype(int))
    assert np.all((proba >= 0) & (proba <= 1)) and not np.allclose(proba.sum(axis=1), 1.0)
    assert clf.score(X, Y) > 0.5  # subset accuracy: every label of a row right
    with pytest.raises(ValueError, match="indicator matrix of 4 labels"):
        clf.partial_fit(X, Y[:, :3])


def test_binary_has_one_logistic_output_as_scikit_learn():
    X, y = make_classification(120, 6, random_state=0)
    clf = MLPClassifier(hidden_layer_sizes=(8, 5), max_iter=50, random_state=0).fit(X, y)
    assert clf.n_outputs_ == 1 and clf.out_activation_ == "logistic" and clf.n_layers_ == 4
    assert [c.shape for c in clf.coefs_] == [(6, 8), (8, 5), (5, 1)]
    assert [b.shape for b in clf.intercepts_] == [(8,), (5,), (1,)]
    proba = clf.predict_proba(X)
    assert proba.shape == (120, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[(proba[:, 1] > 0.5).astype(int)])


def test_every_scikit_learn_parameter_is_accepted_and_the_missing_ones_are_refused():
    for ours, theirs in CLASSES.values():
        ours(**theirs().get_params())  # no TypeError for any of scikit-learn's names
        assert set(theirs().get_params()) <= set(ours().get_params())
    X, y = _digits(60)
    for est, needle in [(MLPClassifier(solver="lbfgs"), "solver='lbfgs'"),
                        (MLPClassifier(max_fun=100), "max_fun=100"),
                        (MLPRegressor(loss="poisson"), "loss='poisson'")]:
        with pytest.raises(ValueError, match=needle) as err:
            est.fit(X, y)
        message = str(err.value)
        assert "xpnet" in message and ("sgd" in message or "squared_error" in message)
        assert not hasattr(est, "model_")
    with pytest.raises(ValueError, match="mini-batches"):  # the reason is given
        MLPClassifier(solver="lbfgs").fit(X, y)
    with pytest.raises(ValueError, match="learning_rate must be one of"):
        MLPClassifier(learning_rate="optimal").fit(X, y)


def test_the_array_api_support_tag():
    assert MLPClassifier().__sklearn_tags__().array_api_support
    assert MLPRegressor().__sklearn_tags__().array_api_support


# ----------------------------------------------------------------------------- array API


def _dispatch():
    return sklearn.config_context(array_api_dispatch=True)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_torch_inputs_train_on_torch_under_dispatch(dtype):
    torch = pytest.importorskip("torch")
    X, y = _digits(200)
    w = _weights(200)
    Xt = torch.asarray(X, dtype=getattr(torch, dtype))
    yt, wt = torch.asarray(y), torch.asarray(w)
    with _dispatch():
        clf = MLPClassifier(**SGD, backend="numpy").fit(Xt, yt, sample_weight=wt)
        pred, proba = clf.predict(Xt), clf.predict_proba(Xt)
        score = clf.score(Xt, yt)
    assert clf.model_.backend.name == "torch" and clf.model_.backend.dtype_name == dtype
    assert isinstance(pred, torch.Tensor) and pred.dtype == torch.int64
    assert isinstance(proba, torch.Tensor) and proba.dtype == getattr(torch, dtype)
    assert isinstance(clf.classes_, torch.Tensor) and isinstance(clf.coefs_[0], torch.Tensor)
    assert isinstance(score, float)
    # the same training as on NumPy: the input's library is only where it runs
    host = MLPClassifier(**SGD, dtype=dtype).fit(X, y, sample_weight=w)
    rtol = 1e-9 if dtype == "float64" else 1e-3
    np.testing.assert_allclose(clf.loss_curve_, host.loss_curve_, rtol=rtol)
    assert score == pytest.approx(host.score(X, y), abs=0.02)
    with _dispatch(), pytest.raises(ValueError, match="same namespace"):
        clf.predict(X)  # a NumPy input to a torch-fitted estimator


def test_regressor_under_dispatch_returns_the_input_namespace():
    torch = pytest.importorskip("torch")
    X, Y = _regression(2)
    with _dispatch():
        reg = MLPRegressor(**SGD | dict(learning_rate_init=0.01)).fit(
            torch.asarray(X), torch.asarray(Y))
        out = reg.predict(torch.asarray(X))
    assert isinstance(out, torch.Tensor) and tuple(out.shape) == (200, 2)
    assert reg.model_.backend.name == "torch"


def test_without_dispatch_torch_inputs_are_converted_to_numpy():
    torch = pytest.importorskip("torch")
    X, y = _digits(100)
    clf = MLPClassifier(**SGD | dict(max_iter=3)).fit(torch.asarray(X), torch.asarray(y))
    assert isinstance(clf.predict(torch.asarray(X)), np.ndarray)
    assert clf.model_.backend.name == "numpy"


@pytest.mark.gpu
def test_torch_cuda_inputs_train_on_their_gpu():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device here")
    X, y = _digits(300)
    Xc = torch.asarray(X, dtype=torch.float32, device="cuda")
    yc = torch.asarray(y, device="cuda")
    with _dispatch():
        clf = MLPClassifier(**SGD).fit(Xc, yc, sample_weight=torch.ones(300, device="cuda"))
        pred = clf.predict(Xc)
    assert clf.model_.backend.is_gpu and pred.device.type == "cuda"
    assert float((pred == yc).float().mean()) > 0.9


@pytest.mark.gpu
def test_cupy_inputs_train_on_their_gpu():
    cupy = pytest.importorskip("cupy")
    X, y = _digits(300)
    with warnings.catch_warnings(), _dispatch():
        clf = MLPClassifier(**SGD).fit(cupy.asarray(X, dtype=cupy.float32), cupy.asarray(y))
        pred = clf.predict(cupy.asarray(X, dtype=cupy.float32))
    assert isinstance(pred, cupy.ndarray) and clf.model_.backend.is_gpu
    assert float((pred == cupy.asarray(y)).mean()) > 0.9


def test_a_batch_whose_weights_are_all_zero_is_skipped():
    """scikit-learn divides by the batch's zero weight sum; xpnet skips that batch, so the
    weights are those of training on the other batch alone."""
    X, y = _digits(200)
    w = np.r_[np.zeros(100), np.ones(100)]
    params = SGD | dict(shuffle=False, batch_size=100, max_iter=5)
    weighted = MLPClassifier(**params).fit(X, y, sample_weight=w)
    alone = MLPClassifier(**params).fit(X[100:], y[100:])
    np.testing.assert_allclose(weighted.predict_proba(X), alone.predict_proba(X), atol=1e-12)
    # the epoch's loss averages over all 200 rows, the skipped batch counting zero
    np.testing.assert_allclose(weighted.loss_curve_, np.array(alone.loss_curve_) / 2)


def test_partial_fit_with_early_stopping_trains_without_a_validation_set():
    X, y = _digits(100)
    clf = MLPClassifier(**SGD | dict(early_stopping=True))
    clf.partial_fit(X, y, classes=np.arange(10))
    clf.partial_fit(X, y)
    assert len(clf.loss_curve_) == 2 and clf.validation_scores_ == []
