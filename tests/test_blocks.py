"""Residual blocks: nested names, width checks that name the block, mlp(residual=True),
training equal to torch, and blocks through the traced step, checkpoints (hostile nested
configs included), to(), parity and the fast paths."""

from __future__ import annotations

import numpy as np
import pytest
from checkpoint_forge import arrays_and_meta, encode

import xpnet as xn
from xpnet.testing import assert_parity, check_grads

RNG = np.random.default_rng(3)
X = RNG.normal(size=(30, 5))
LABELS = np.arange(30) % 3


def test_parameter_names_nest_with_dots():
    model = xn.Sequential(xn.Dense(5, 4), xn.Residual(xn.Dense(4, 4), xn.ReLU(),
                                                      xn.Residual(xn.Dense(4, 4))),
                          xn.Dense(4, 3))
    assert list(model.params) == ["0.W", "0.b", "1.0.W", "1.0.b", "1.2.0.W", "1.2.0.b",
                                  "2.W", "2.b"]
    assert model.n_in == 5 and model.n_out == 3


def test_mlp_residual_makes_each_equal_width_hidden_layer_a_block():
    model = xn.mlp([5, 8, 8, 8, 3], residual=True, dropout=0.1)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Dense", "ReLU", "Dropout", "Residual", "Residual", "Dense"]
    block = model.layers[3]
    assert [type(layer).__name__ for layer in block.layers] == ["Dense", "ReLU", "Dropout"]
    plain = xn.mlp([5, 8, 8, 8, 3], dropout=0.1)
    # the same weights drawn in the same order: only the skip connections differ
    for (k1, v1), v2 in zip(model.params.items(), plain.params.values(), strict=True):
        np.testing.assert_array_equal(v1, v2, err_msg=k1)
    with pytest.raises(ValueError, match="residual"):
        xn.mlp([5, 8, 3], residual="yes")


@pytest.mark.parametrize("build, message", [
    (lambda: xn.Sequential(xn.Dense(5, 8), xn.Residual(xn.Dense(8, 6))),
     r"layer 1 \(Residual\) maps 8 features to 6"),
    (lambda: xn.Sequential(xn.Dense(5, 8), xn.Residual(xn.Dense(6, 6))),
     r"layer 1 \(Residual\) expects 6 inputs but the layer before gives 8"),
    (lambda: xn.Sequential(xn.Dense(5, 8), xn.Residual(xn.Dense(8, 8), xn.Dense(6, 8))),
     r"layer 1\.1 \(Dense\) expects 6 inputs but the layer before gives 8"),
    (lambda: xn.Sequential(xn.Residual(xn.Residual(xn.Dense(4, 2)))),
     r"layer 0\.0 \(Residual\) maps 4 features to 2"),
    (lambda: xn.Residual(xn.ReLU), r"layer 0 is the class ReLU"),
    (lambda: xn.Residual(), r"at least one layer"),
])
def test_width_errors_name_the_block(build, message):
    with pytest.raises(xn.ModelError, match=message):
        build()


def test_a_residual_mlp_trains_as_torch_does():
    torch = pytest.importorskip("torch")
    model = xn.mlp([5, 7, 7, 3], residual=True, dtype="float64", backend="numpy", seed=4)
    p = {k: torch.tensor(np.asarray(v)) for k, v in model.params.items()}
    lins = [torch.nn.Linear(5, 7), torch.nn.Linear(7, 7), torch.nn.Linear(7, 3)]
    with torch.no_grad():
        for lin, prefix in zip(lins, ["0.", "2.0.", "3."], strict=True):
            lin.double()
            lin.weight.copy_(p[prefix + "W"].T)
            lin.bias.copy_(p[prefix + "b"])

    def net(x):  # the MNIST-1D residual MLP: h + relu(linear(h))
        h = lins[0](x).relu()
        h = h + lins[1](h).relu()
        return lins[2](h)

    opt = torch.optim.Adam([q for lin in lins for q in lin.parameters()], lr=1e-2)
    model.fit(X, LABELS, loss="cross_entropy", optimizer=xn.Adam(lr=1e-2), epochs=4,
              batch_size=10, shuffle=False)
    for _ in range(4):
        for lo in range(0, 30, 10):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(torch.tensor(X[lo:lo + 10])),
                                              torch.tensor(LABELS[lo:lo + 10])).backward()
            opt.step()
    np.testing.assert_allclose(model.params["2.0.W"], lins[1].weight.detach().numpy().T,
                               atol=1e-10)
    with torch.no_grad():
        np.testing.assert_allclose(model.predict(X), net(torch.tensor(X)).numpy(), atol=1e-10)


def test_nested_blocks_pass_the_gradient_check(backend64):
    model = xn.Sequential(xn.Dense(5, 4), xn.Residual(xn.Tanh(), xn.Dense(4, 4),
                                                      xn.Residual(xn.Dense(4, 4), xn.GELU())),
                          xn.Dense(4, 3), seed=5, backend=backend64)
    check_grads(model, X[:8], LABELS[:8], loss="cross_entropy")


def test_save_load_round_trip_of_nested_blocks(tmp_path):
    model = xn.Sequential(xn.Dense(5, 4), xn.Residual(xn.Dense(4, 4), xn.BatchNorm(4),
                                                      xn.Residual(xn.LayerNorm(4))),
                          xn.Dense(4, 3), seed=6)
    model.fit(X, LABELS, loss="cross_entropy", optimizer="adam", epochs=2, batch_size=10)
    path = str(tmp_path / "nested.npz")
    model.save(path)
    back = xn.load(path)
    assert repr(back) == repr(model)
    assert list(back.state) == ["1.1.running_mean", "1.1.running_var"]
    np.testing.assert_array_equal(back.predict(X), model.predict(X))
    assert set(back.optimizer.state_arrays()) == set(model.optimizer.state_arrays())


def _forged(tmp_path, edit):
    model = xn.Sequential(xn.Dense(5, 4), xn.Residual(xn.Dense(4, 4)), xn.Dense(4, 3))
    good = tmp_path / "good.npz"
    model.save(str(good))
    arrays, meta = arrays_and_meta(good.read_bytes())
    edit(meta["layers"][1]["config"])
    bad = tmp_path / "bad.npz"
    bad.write_bytes(encode(arrays, meta))
    return str(bad)


def _deep(config):
    inner = {"type": "Dense", "config": {"n_in": 4, "n_out": 4, "init": None, "bias": True}}
    for _ in range(40):
        inner = {"type": "Residual", "config": {"layers": [inner]}}
    config["layers"] = [inner]


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["layers"][0].update(type="Os.System"), r"unknown layer type 'Os\.System'"),
    (lambda c: c["layers"][0]["config"].update(n_out=5), r"maps 4 features to 5"),
    (lambda c: c.update(layers=[]), r"non-empty list"),
    (lambda c: c.update(layers=[["Dense"]]), r"must be \{'type': str, 'config': dict\}"),
    (lambda c: c.update(extra=1), r"Residual: config must be"),
    (_deep, r"nested 9 blocks deep; at most 8"),
])
def test_hostile_nested_configs_are_refused_before_arrays_are_read(tmp_path, edit, message):
    path = _forged(tmp_path, edit)
    with pytest.raises(xn.CheckpointError, match=message):
        xn.load(path)


def test_blocks_run_traced_on_jax_equal_to_eager():
    pytest.importorskip("jax")

    def build(backend):
        return xn.mlp([5, 6, 6, 3], residual=True, seed=7, backend=backend, dtype="float64")

    traced, eager = build("jax"), build("numpy")
    assert xn.Step(traced, "cross_entropy", xn.Adam()).is_traced
    for model in (traced, eager):
        model.fit(X, LABELS, loss="cross_entropy", optimizer="adam", epochs=2, batch_size=10,
                  shuffle=False)
    for k, v in eager.params.items():
        np.testing.assert_allclose(np.asarray(traced.params[k]), v, atol=1e-10, err_msg=k)


def test_to_moves_blocks_and_parity_holds():
    model = xn.mlp([5, 6, 6, 3], residual=True, seed=8)
    model.fit(X, LABELS, loss="cross_entropy", epochs=1, batch_size=10)
    expected = model.predict(X)
    model.to("array_api_strict")
    np.testing.assert_allclose(np.asarray(model.backend.to_numpy(model.predict(X))), expected,
                               atol=1e-6)
    report = assert_parity(
        lambda: xn.Sequential(xn.Dense(5, 6), xn.Residual(xn.Dense(6, 6), xn.BatchNorm(6),
                                                          xn.ReLU()), xn.Dense(6, 3), seed=9),
        X, LABELS, backends=["numpy", "array_api_strict"], loss="cross_entropy", steps=2)
    assert "1.1.running_mean" in report.diffs["array_api_strict"]


@pytest.mark.parametrize("name", ["numpy", "torch"])
def test_fast_paths_equal_the_portable_path_through_blocks(name):
    pytest.importorskip(name)
    results = []
    for fast in (True, False):
        with xn.fast_paths(fast):
            model = xn.mlp([5, 6, 6, 6, 3], residual=True, seed=10, backend=name,
                           dtype="float64")
            model.fit(X, LABELS, loss="cross_entropy", optimizer="adam", epochs=2,
                      batch_size=10, shuffle=False)
            results.append({k: model.backend.to_numpy(v) for k, v in model.params.items()})
    for k, v in results[0].items():
        np.testing.assert_allclose(v, results[1][k], atol=1e-12, err_msg=k)
