"""LayerNorm and BatchNorm against torch.nn (float64, training and eval, several steps),
their hand-written backward against finite differences, and BatchNorm's running
statistics as layer state: saved, moved, restored, threaded by the traced step, never
updated by the optimizer."""

from __future__ import annotations

import numpy as np
import pytest
from checkpoint_forge import arrays_and_meta, encode

import xpnet as xn
from xpnet.nn import norm as norm_module
from xpnet.testing import check_grads

try:
    import torch
except ImportError:  # the oracle tests skip; the others need no torch
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch (the oracle) is not installed")

RNG = np.random.default_rng(0)
X = RNG.normal(size=(24, 5)) * 3.0 + 1.0
Y = RNG.normal(size=(24, 3))
LABELS = np.arange(24) % 3


def _model(norm, dtype="float64", backend="numpy"):
    return xn.Sequential(xn.Dense(5, 6), norm, xn.Tanh(), xn.Dense(6, 3), seed=1,
                         backend=backend, dtype=dtype)


def _torch_twin(model, norm):
    """The same network in torch, with the model's parameters (and running statistics)."""
    p = {k: torch.tensor(np.asarray(v)) for k, v in model.params.items()}
    first, last = torch.nn.Linear(5, 6).double(), torch.nn.Linear(6, 3).double()
    with torch.no_grad():
        first.weight.copy_(p["0.W"].T)
        first.bias.copy_(p["0.b"])
        last.weight.copy_(p["3.W"].T)
        last.bias.copy_(p["3.b"])
        norm.weight.copy_(p["1.gamma"])
        norm.bias.copy_(p["1.beta"])
    return torch.nn.Sequential(first, norm, torch.nn.Tanh(), last)


def _torch_norm(kind):
    if kind == "layer":
        return xn.LayerNorm(6), torch.nn.LayerNorm(6).double()
    return (xn.BatchNorm(6, momentum=0.2), torch.nn.BatchNorm1d(6, momentum=0.2).double())


@needs_torch
@pytest.mark.parametrize("kind", ["layer", "batch"])
def test_training_and_eval_match_torch_over_several_steps(kind):
    ours, theirs = _torch_norm(kind)
    model = _model(ours)
    net = _torch_twin(model, theirs)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    model.fit(X, Y, loss="mse", optimizer=xn.SGD(lr=0.1), epochs=3, batch_size=8,
              shuffle=False)
    net.train()
    for _ in range(3):
        for lo in range(0, 24, 8):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(net(torch.tensor(X[lo:lo + 8])),
                                                torch.tensor(Y[lo:lo + 8]))
            loss.backward()
            opt.step()
    got = model.params
    np.testing.assert_allclose(got["1.gamma"], theirs.weight.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(got["1.beta"], theirs.bias.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(got["0.W"], net[0].weight.detach().numpy().T, atol=1e-12)
    if kind == "batch":
        np.testing.assert_allclose(model.state["1.running_mean"],
                                   theirs.running_mean.numpy(), atol=1e-12)
        np.testing.assert_allclose(model.state["1.running_var"],
                                   theirs.running_var.numpy(), atol=1e-12)
    net.eval()  # predict and evaluate: BatchNorm on its running statistics
    with torch.no_grad():
        expected = net(torch.tensor(X)).numpy()
    np.testing.assert_allclose(model.predict(X), expected, atol=1e-12)
    loss = torch.nn.functional.mse_loss(torch.tensor(expected), torch.tensor(Y)).item()
    assert model.evaluate(X, Y, loss="mse")["loss"] == pytest.approx(loss, abs=1e-12)


@needs_torch
@pytest.mark.parametrize("kind", ["layer", "batch"])
@pytest.mark.parametrize("training", [True, False])
def test_input_gradients_match_torch_autograd(kind, training):
    ours, theirs = _torch_norm(kind)
    model = xn.Sequential(ours, seed=0, backend="numpy", dtype="float64")
    model.set_params({"0.gamma": RNG.normal(size=6), "0.beta": RNG.normal(size=6)})
    if kind == "batch":
        model.set_state({"0.running_mean": RNG.normal(size=6),
                         "0.running_var": RNG.uniform(0.5, 2.0, size=6)})
        theirs.running_mean.copy_(torch.tensor(model.state["0.running_mean"]))
        theirs.running_var.copy_(torch.tensor(model.state["0.running_var"]))
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(model.params["0.gamma"]))
        theirs.bias.copy_(torch.tensor(model.params["0.beta"]))
    theirs.train(training)
    Xn = RNG.normal(size=(7, 6)) * 2.0
    dY = RNG.normal(size=(7, 6))
    Xt = torch.tensor(Xn, requires_grad=True)
    out = theirs(Xt)
    out.backward(torch.tensor(dY))
    Yours, backprops = model.forward(Xn, training=training)
    dX, grads = backprops[0](dY)
    np.testing.assert_allclose(Yours, out.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(dX, Xt.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(grads["gamma"], theirs.weight.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(grads["beta"], theirs.bias.grad.numpy(), atol=1e-12)


@pytest.mark.parametrize("training", [True, False])
def test_finite_differences_on_every_backend(backend64, training):
    # no bias before the BatchNorm, and no beta before one: their gradients are exactly 0
    model = xn.Sequential(xn.Dense(5, 6, bias=False), xn.BatchNorm(6), xn.GELU(),
                          xn.LayerNorm(6), xn.Dense(6, 3), seed=2, backend=backend64)
    model.set_state({"1.running_mean": RNG.normal(size=6),
                     "1.running_var": RNG.uniform(0.5, 2.0, size=6)})
    check_grads(model, X[:10], LABELS[:10], loss="cross_entropy", training=training)


def test_running_statistics_are_state_not_parameters():
    model = _model(xn.BatchNorm(6))
    assert list(model.state) == ["1.running_mean", "1.running_var"]
    assert not set(model.state) & set(model.params)
    np.testing.assert_array_equal(model.state["1.running_var"], np.ones(6))
    opt = xn.Adam(lr=1e-2)
    model.fit(X, Y, optimizer=opt, epochs=1, batch_size=8)
    assert {key.rpartition("/")[0] for key in opt.state_arrays()} == set(model.params)
    assert not np.allclose(model.state["1.running_mean"], 0.0)  # the passes moved them


@needs_torch
def test_state_survives_save_load_to_and_restore(tmp_path):
    model = _model(xn.BatchNorm(6))
    model.fit(X, Y, optimizer="adam", epochs=2, batch_size=8)
    path = str(tmp_path / "bn.npz")
    model.save(path)
    back = xn.load(path, backend="torch")
    for k, v in model.state.items():
        np.testing.assert_array_equal(back.backend.to_numpy(back.state[k]), v)
    np.testing.assert_allclose(back.backend.to_numpy(back.predict(X)), model.predict(X),
                               atol=1e-12)
    back.to("numpy", dtype="float64")
    assert all(isinstance(v, np.ndarray) for v in back.state.values())
    snap = back.snapshot()
    back.fit(X, Y, epochs=1, batch_size=8)
    back.restore(snap)
    np.testing.assert_array_equal(back.state["1.running_mean"], model.state["1.running_mean"])


def test_a_checkpoint_without_the_state_it_declares_is_refused(tmp_path):
    model = _model(xn.BatchNorm(6))
    good = tmp_path / "good.npz"
    model.save(str(good))
    arrays, meta = arrays_and_meta(good.read_bytes())
    del arrays["state/1.running_var"]
    bad = tmp_path / "bad.npz"
    bad.write_bytes(encode(arrays, meta))
    with pytest.raises(xn.CheckpointError, match=r"state/1\.running_var"):
        xn.load(str(bad))


def test_traced_jax_step_threads_the_running_statistics():
    pytest.importorskip("jax")
    eager = _model(xn.BatchNorm(6), backend="numpy")
    traced = _model(xn.BatchNorm(6), backend="jax")
    step = xn.Step(traced, "mse", xn.SGD(lr=0.1))
    assert step.is_traced
    for model in (eager, traced):
        model.fit(X, Y, optimizer=xn.SGD(lr=0.1), epochs=2, batch_size=8, shuffle=False)
    for k, v in eager.state.items():
        np.testing.assert_allclose(np.asarray(traced.state[k]), v, atol=1e-10)
    np.testing.assert_allclose(np.asarray(traced.params["1.gamma"]), eager.params["1.gamma"],
                               atol=1e-10)


def test_bad_arguments_and_a_batch_of_one_are_refused():
    with pytest.raises(ValueError, match="momentum"):
        xn.BatchNorm(4, momentum=1.5)
    with pytest.raises(ValueError, match="eps"):
        xn.LayerNorm(4, eps=0.0)
    with pytest.raises(xn.ModelError, match=r"layer 1 \(LayerNorm\) expects 4 inputs"):
        xn.Sequential(xn.Dense(5, 6), xn.LayerNorm(4))
    model = _model(xn.BatchNorm(6))
    with pytest.raises(xn.ModelError, match="batch of 1 sample"):
        model.fit(X[:9], Y[:9], epochs=1, batch_size=8)


class _TwoRanks:
    """A communicator of two processes as far as fit's checks go (nothing is ever sent)."""

    rank, size = 0, 2

    def allreduce_(self, *args):  # pragma: no cover - refused before any collective
        raise AssertionError("no collective should run")

    allreduce_scalar = broadcast = barrier = abort = allreduce_


def test_data_parallel_fit_refuses_batchnorm_by_name():
    model = xn.Sequential(xn.Dense(5, 6), xn.Residual(xn.BatchNorm(6)), xn.Dense(6, 3))
    before = {k: np.array(v) for k, v in model.params.items()}
    with pytest.raises(xn.ModelError, match=r"layer 1\.0 \(BatchNorm\).*LayerNorm"):
        model.fit(X, Y, epochs=1, comm=_TwoRanks())
    for k, v in model.params.items():
        np.testing.assert_array_equal(v, before[k])


def test_the_training_mode_check_catches_a_backward_that_ignores_batch_statistics():
    class Naive(xn.BatchNorm):
        """Forward in training as BatchNorm, backward as if the statistics were fixed."""

        def forward(self, params, X, ctx):
            Y, _ = super().forward(params, X, ctx)
            xp = ctx.xp
            mean = xp.mean(X, axis=0)
            inv = 1.0 / xp.sqrt(xp.mean((X - mean) ** 2, axis=0) + self.eps)
            return Y, norm_module._affine_backprop(xp, params["gamma"], (X - mean) * inv,
                                                   inv, None)

    model = xn.Sequential(xn.Dense(5, 6, bias=False), Naive(6), xn.Tanh(), xn.Dense(6, 3),
                          seed=2, backend="numpy", dtype="float64")
    with pytest.raises(AssertionError, match="check_grads"):
        check_grads(model, X[:10], LABELS[:10], loss="cross_entropy", training=True)
