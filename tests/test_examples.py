"""The seed articles' worked examples (examples/*.py) learn what the articles show.

Each script's ``main()`` returns its key numbers; these tests check them on NumPy and,
where it takes a second or two, on torch (CPU) and array-api-strict too.
"""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest

from xpnet.backend import BackendError, get

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
BACKENDS = ["numpy", "torch", "array_api_strict"]


def example(name: str):
    """Import examples/<name>.py as a module (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"xpnet_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    try:
        get(request.param)
    except BackendError as exc:
        pytest.skip(f"backend {request.param!r} unavailable here: {exc}")
    return request.param


def test_one_neuron_learns_the_line_to_within_one_percent(backend):
    result = example("linear_regression").main(backend, m=2.0, b=1.0, verbose=False)
    assert result["max_relative_error"] < 0.01
    assert result["weight"] == pytest.approx(2.0, rel=0.01)
    assert result["bias"] == pytest.approx(1.0, rel=0.01)
    assert result["loss"][-1] < result["loss"][0] / 100


def test_one_neuron_fits_another_line_too():
    result = example("linear_regression").main(m=-3.0, b=0.5, epochs=80, verbose=False)
    assert result["max_relative_error"] < 0.01
    assert result["weight"] == pytest.approx(-3.0, rel=0.01)


def test_vectorised_inputs_learn_every_slope_at_once(backend):
    result = example("vectorized_inputs").main(backend, verbose=False)
    assert result["weights"].shape == (5,)
    assert result["max_relative_weight_error"] < 0.01
    assert result["relative_prediction_error"] < 0.01


def test_single_layer_cannot_fit_the_four_samples_but_one_relu_layer_can(backend):
    result = example("hidden_layer").main(backend, verbose=False)
    single, hidden = result["single"], result["hidden"]
    # 0.25 is the least squared error any linear layer can reach on this data.
    assert single["loss"] >= 0.25 - 1e-4
    assert not single["correct"]
    assert hidden["loss"] < 1e-6
    assert hidden["correct"]
    np.testing.assert_allclose(hidden["outputs"], [1, 0, 1, 0], atol=1e-3)


def test_more_training_does_not_help_the_single_layer():
    hidden_layer = example("hidden_layer")
    model = hidden_layer.single_layer(seed=0, backend="numpy")
    result = hidden_layer.train(model, epochs=1000, lr=0.1, seed=0)
    assert result["loss"] >= 0.25 - 1e-4 and not result["correct"]


def test_two_sigmoid_hidden_layers_fit_the_articles_table():
    result = example("two_hidden_layers").main(verbose=False)
    outputs = result["outputs"]
    assert outputs[0] > 0.95 and outputs[1] > 0.95 and outputs[2] < 0.05
    losses = result["loss"]
    assert losses[-1] < losses[999] < losses[0]


@pytest.mark.parametrize("name", ["torch", "array_api_strict"])
def test_two_sigmoid_hidden_layers_on_other_backends(name):
    try:
        get(name)
    except BackendError as exc:
        pytest.skip(f"backend {name!r} unavailable here: {exc}")
    # a larger step and fewer epochs: the same fit in a tenth of the time
    result = example("two_hidden_layers").main(name, epochs=1000, lr=2.0, verbose=False)
    assert np.all(np.abs(result["outputs"] - result["targets"]) < 0.05)


def test_lower_learning_rate_learns_slower(backend):
    result = example("learning_rates").main(backend, epochs=300, verbose=False)
    fast, slow = (np.array(result["loss"][lr]) for lr in (0.01, 0.005))
    assert fast[0] == pytest.approx(slow[0])  # same initial weights, same first error
    for curve in (fast, slow):
        assert curve[-1] < curve[0] / 50
        assert np.mean(np.diff(curve) <= 0) > 0.95  # the error falls epoch after epoch
    assert np.mean(slow[1:] > fast[1:]) > 0.9


def test_learning_rate_figure_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "curves.png"
    example("learning_rates").main(epochs=20, plot=str(path), verbose=False)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", ["linear_regression", "vectorized_inputs", "hidden_layer",
                                  "two_hidden_layers", "learning_rates"])
def test_every_example_has_a_main_and_a_backend_flag(name):
    source = (EXAMPLES / f"{name}.py").read_text()
    assert "--backend" in source and callable(example(name).main)


def test_the_mnist1d_residual_mlp_learns_and_agrees_with_torch():
    pytest.importorskip("mnist1d", reason="the mnist1d extra is not installed")
    pytest.importorskip("torch")
    # 400 of the paper's 6000 updates: well above chance (10 %) already
    result = example("mnist1d").main(seeds=(0,), steps=400, verbose=False)
    assert result["xpnet"][0] > 0.45
    # the same initial weights and batches: the two frameworks end close together
    assert abs(result["xpnet"][0] - result["torch"][0]) < 0.05
