"""xpnet.plot writes real PNG figures: learning curves and decision boundaries."""

from __future__ import annotations

import builtins

import numpy as np
import pytest

import xpnet as xn

matplotlib = pytest.importorskip("matplotlib", reason="the plot extra is not installed")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

from xpnet import plot  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _read_png(path):
    image = mpimg.imread(str(path))
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    return image


def _non_trivial(image) -> bool:
    """More than a blank canvas: many distinct colours."""
    flat = image[..., :3].reshape(-1, 3)
    return len(np.unique(np.round(flat, 2), axis=0)) > 10


def _two_histories():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 1))
    y = 3.0 * X[:, 0] + 1.0
    out = []
    for lr in (0.01, 0.005):
        model = xn.mlp([1, 1], seed=0)
        out.append(model.fit(X, y, optimizer=xn.SGD(lr=lr), epochs=15, batch_size=16))
    return out


def test_learning_curves_writes_a_png_with_one_line_per_run(tmp_path):
    histories = _two_histories()
    path = tmp_path / "curves.png"
    fig = plot.learning_curves(histories, labels=["lr=0.01", "lr=0.005"], path=path)
    ax = fig.axes[0]
    assert len(ax.get_lines()) == 2
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["lr=0.01", "lr=0.005"]
    ydata = ax.get_lines()[0].get_ydata()
    np.testing.assert_allclose(ydata, histories[0].history["loss"])
    assert _non_trivial(_read_png(path))


def test_semilog_and_both_panels(tmp_path):
    histories = _two_histories()
    fig = plot.learning_curves(histories, logy=True)
    assert fig.axes[0].get_yscale() == "log"
    path = tmp_path / "both.png"
    fig = plot.learning_curves(histories, logy="both", path=path)
    assert [a.get_yscale() for a in fig.axes] == ["linear", "log"]
    _read_png(path)


def test_learning_curves_accepts_dicts_and_reports_missing_metric():
    fig = plot.learning_curves({"loss": [3.0, 2.0, 1.0]})
    assert list(fig.axes[0].get_lines()[0].get_xdata()) == [1, 2, 3]
    with pytest.raises(KeyError, match="val_loss"):
        plot.learning_curves({"loss": [1.0]}, metric="val_loss")
    with pytest.raises(ValueError, match="labels"):
        plot.learning_curves([[1.0], [2.0]], labels=["one"])


def test_decision_boundary_png_for_an_xpnet_model(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(80, 2))
    y = (X[:, 0] * X[:, 1] > 0).astype(np.int64)
    model = xn.mlp([2, 8, 2], seed=0)
    model.fit(X, y, loss="cross_entropy", optimizer=xn.Adam(lr=0.05), epochs=5, batch_size=16)
    path = tmp_path / "boundary.png"
    fig = plot.decision_boundary(model, X, y, path=path, steps=50)
    assert fig.axes and _non_trivial(_read_png(path))
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        plot.decision_boundary(model, np.zeros((4, 3)), np.zeros(4))


def test_decision_boundary_accepts_string_labels_from_estimators(tmp_path):
    class Stub:  # a scikit-learn style classifier that predicts string labels
        def predict(self, X):
            return np.where(np.asarray(X)[:, 0] > 0, "right", "left")

    X = np.array([[-1.0, 0.0], [1.0, 0.5], [-0.5, 1.0], [0.7, -1.0]])
    fig = plot.decision_boundary(Stub(), X, np.array(["left", "right", "left", "right"]),
                                 path=tmp_path / "s.png", steps=20)
    assert fig.axes


def test_missing_matplotlib_names_the_extra(monkeypatch):
    real_import = builtins.__import__

    def refuse(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", refuse)
    with pytest.raises(ImportError, match=r"xpnet\[plot\]"):
        plot.learning_curves({"loss": [1.0]})


def test_decision_boundaries_draws_one_titled_panel_per_model(tmp_path):
    rng = np.random.default_rng(2)
    X = rng.uniform(-1, 1, size=(60, 2))
    y = (X[:, 0] * X[:, 1] > 0).astype(np.int64)
    linear, hidden = xn.mlp([2, 2], seed=0), xn.mlp([2, 8, 2], seed=0)
    path = tmp_path / "both.png"
    fig = plot.decision_boundaries([linear, hidden], X, y,
                                   titles=["no hidden layer", "8 hidden units"],
                                   path=path, steps=30)
    assert [ax.get_title() for ax in fig.axes] == ["no hidden layer", "8 hidden units"]
    assert _non_trivial(_read_png(path))
    with pytest.raises(ValueError, match="titles"):
        plot.decision_boundaries([linear], X, y, titles=["a", "b"])
