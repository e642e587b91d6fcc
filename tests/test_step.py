"""The one training step: what fit runs, flat buffers, hooks, weights, binding, fast paths."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

import xpnet as xn
from xpnet.backend import kernels as fast
from xpnet.backend import to_numpy
from xpnet.nn import losses
from xpnet.nn.buffers import Buffer


def _data(n=24, d=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), rng.integers(0, k, n)


def _host(model) -> dict:
    return {k: to_numpy(v).copy() for k, v in model.params.items()}


def _same(a: dict, b: dict, rtol=0.0, atol=0.0):
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=rtol, atol=atol, err_msg=name)


OPTIMIZERS = {
    "sgd": lambda: xn.SGD(lr=0.1),
    "momentum": lambda: xn.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": lambda: xn.Adam(lr=1e-2, weight_decay=1e-2),
    "clipped": lambda: xn.Adam(lr=1e-2, clipnorm=0.1),
}


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_fit_is_the_step_called_once_per_batch(backend, opt):
    X, y = _data()
    by_fit = xn.mlp([5, 8, 3], seed=0, backend=backend)
    by_fit.fit(X, y, loss="cross_entropy", optimizer=OPTIMIZERS[opt](), epochs=2,
               batch_size=8, shuffle=False)
    by_hand = xn.mlp([5, 8, 3], seed=0, backend=backend)
    step = xn.Step(by_hand, "cross_entropy", OPTIMIZERS[opt]())
    Xd = by_hand.device_inputs(X)
    Td = by_hand.device_targets(y, "cross_entropy", Xd)
    for _ in range(2):
        for lo in range(0, 24, 8):
            step(Xd[lo:lo + 8, ...], Td[lo:lo + 8, ...])
    _same(_host(by_fit), _host(by_hand))
    assert step.count == 6 and step.optimizer.iterations == by_fit.optimizer.iterations == 6


def test_parameters_gradients_and_state_are_views_of_flat_buffers(backend):
    if not backend.views:
        pytest.skip(f"{backend.name} keeps one array per parameter (no views)")
    X, y = _data()
    model = xn.mlp([5, 8, 3], seed=0, backend=backend)
    step = xn.Step(model, "cross_entropy", xn.Adam())
    Xd = model.device_inputs(X)
    Td = model.device_targets(y, "cross_entropy", Xd)
    step(Xd, Td)
    flat = model.parameters.flat
    assert tuple(flat.shape) == (model.layout.size,)
    flat[...] = 0.0
    assert all(float(backend.xp.sum(backend.xp.abs(p))) == 0.0 for p in model.params.values())
    _, grads = step.loss_and_grads(Xd, Td)
    step.grads.flat[...] = 1.0  # the gradients handed out are the step's own buffer
    assert all(float(backend.xp.min(g)) == 1.0 for g in grads.values())
    m = step.optimizer.state["0.W"]["m"]
    step.optimizer._slots["m"].flat[...] = 2.0
    assert float(backend.xp.min(m)) == 2.0


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_the_flat_update_equals_the_per_parameter_update(backend, opt):
    if not backend.views:
        pytest.skip(f"{backend.name} has no flat buffers")
    rng = np.random.default_rng(3)
    model = xn.mlp([6, 7, 4], seed=0, backend=backend)
    grads = Buffer.zeros(model.layout, backend)
    per_param = {k: backend.xp.asarray(v, copy=True) for k, v in model.params.items()}
    flat_opt, per_opt = OPTIMIZERS[opt](), OPTIMIZERS[opt]()
    flat_opt.bind(model, model.layout, backend)
    for _ in range(4):
        grads.flat[...] = backend.asarray(rng.standard_normal(model.layout.size))
        per_grads = {k: backend.xp.asarray(v, copy=True) for k, v in grads.arrays.items()}
        flat_opt.step_flat(model.parameters, grads, backend, backend.kernels)
        per_param = per_opt.step(per_param, per_grads, backend.xp, True, kernels=None)
    _same(_host(model), {k: to_numpy(v) for k, v in per_param.items()}, rtol=2e-6, atol=1e-7)
    flat_state, per_state = flat_opt.state_arrays(), per_opt.state_arrays()
    _same({k: to_numpy(v) for k, v in flat_state.items()},
          {k: to_numpy(v) for k, v in per_state.items()}, rtol=2e-6, atol=1e-7)


def test_a_ragged_last_batch_and_reused_buffers_train_as_fresh_arrays(backend):
    """Gradients are written into the same buffer every step; a short last batch too."""
    X, y = _data(n=21)
    reused = xn.mlp([5, 8, 3], seed=0, backend=backend)
    reused.fit(X, y, loss="cross_entropy", optimizer=xn.Adam(lr=1e-2), epochs=3,
               batch_size=8, seed=1)
    fresh = xn.mlp([5, 8, 3], seed=0, backend=backend)
    fresh.fit(X, y, loss="cross_entropy", optimizer=xn.Adam(lr=1e-2), epochs=3,
              batch_size=8, seed=1)
    _same(_host(reused), _host(fresh))
    fresh.to("numpy")  # a move between fits, then training on
    fresh.fit(X, y, loss="cross_entropy", epochs=1, batch_size=8, seed=2)
    reused.to("numpy")
    reused.fit(X, y, loss="cross_entropy", epochs=1, batch_size=8, seed=2)
    _same(_host(reused), _host(fresh), rtol=1e-6)


def test_a_gradient_hook_runs_between_backward_and_update(backend):
    X, y = _data()
    model = xn.mlp([5, 8, 3], seed=0, backend=backend)
    start = _host(model)
    seen = []

    def zero(grads, step):
        seen.append(sorted(grads))
        return {k: g * 0.0 for k, g in grads.items()}

    step = xn.Step(model, "cross_entropy", xn.SGD(lr=1.0), grad_hooks=[zero])
    Xd = model.device_inputs(X)
    step(Xd, model.device_targets(y, "cross_entropy", Xd))
    assert seen == [sorted(model.params)]
    _same(_host(model), start)  # zero gradients: nothing moved
    assert not step.is_traced  # hooks take the eager path


def test_halving_the_gradients_in_a_hook_is_halving_the_learning_rate(backend):
    X, y = _data()
    runs = []
    for lr, hooks in ((0.2, [lambda g, s: {k: v * 0.5 for k, v in g.items()}]), (0.1, [])):
        model = xn.mlp([5, 8, 3], seed=0, backend=backend)
        step = xn.Step(model, "cross_entropy", xn.SGD(lr=lr), grad_hooks=hooks)
        Xd = model.device_inputs(X)
        step(Xd, model.device_targets(y, "cross_entropy", Xd))
        runs.append(_host(model))
    _same(*runs, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("loss", ["mse", "cross_entropy", "binary_cross_entropy"])
def test_sample_weights_weight_each_samples_loss(backend64, loss):
    rng = np.random.default_rng(4)
    X = rng.standard_normal((6, 4))
    y = rng.integers(0, 3, 6) if loss == "cross_entropy" else rng.random((6, 3)).round()
    model = xn.mlp([4, 5, 3], seed=0, backend=backend64)
    Xd = model.device_inputs(X)
    Td = model.device_targets(y, loss, Xd)
    step = xn.Step(model, loss, xn.SGD(lr=0.1))
    entry = losses.LOSSES[loss]
    Y = model.forward(Xd)[0]
    xp = backend64.xp
    plain = entry(xp, Y, Td)
    ones = entry(xp, Y, Td, backend64.asarray(np.full(6, 1 / 6)))
    for a, b in zip(plain, ones, strict=True):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-12, atol=1e-15)
    # weights (2, 0, 0, 0, 0, 1) are the loss of samples 0 and 5 with weights 2/3 and 1/3
    w = np.array([2.0, 0, 0, 0, 0, 1.0])
    value, _ = step.loss_and_grads(Xd, Td, weights=backend64.asarray(w / w.sum()))
    per = [float(entry(xp, Y[i:i + 1, ...], Td[i:i + 1, ...])[0]) for i in (0, 5)]
    assert float(value) == pytest.approx(2 / 3 * per[0] + 1 / 3 * per[1], rel=1e-12)
    before = _host(model)
    step(Xd, Td, weights=backend64.asarray(np.zeros(6) + 1.0))
    assert any(np.any(before[k] != v) for k, v in _host(model).items())


def test_an_optimizer_belongs_to_the_model_it_trains():
    X, y = _data()
    opt = xn.Adam()
    first = xn.mlp([5, 8, 3], seed=0)
    first.fit(X, y, loss="cross_entropy", optimizer=opt, epochs=1)
    other = xn.mlp([5, 8, 3], seed=1)
    start, state = _host(other), {k: to_numpy(v).copy() for k, v in opt.state_arrays().items()}
    with pytest.raises(ValueError, match="another model"):
        other.fit(X, y, loss="cross_entropy", optimizer=opt, epochs=1)
    _same(_host(other), start)
    _same({k: to_numpy(v) for k, v in opt.state_arrays().items()}, state)
    first.fit(X, y, loss="cross_entropy", optimizer=opt, epochs=1)  # its own model: fine
    for twin in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):  # copies are unbound
        xn.mlp([5, 8, 3], seed=2).fit(X, y, loss="cross_entropy", optimizer=twin, epochs=1)
    del first  # a released owner frees its optimizer for a new model
    import gc

    gc.collect()
    other.fit(X, y, loss="cross_entropy", optimizer=opt, epochs=1)


def test_fast_paths_switch_every_backend_to_the_portable_kernels(backend):
    assert xn.fast_paths(False) is not None
    assert type(backend.kernels) is fast.Portable and not backend.can_trace
    with xn.fast_paths(True):
        assert backend.can_trace == (backend.row.trace is not None)
    assert type(backend.kernels) is fast.Portable
    with pytest.raises(TypeError):
        xn.fast_paths("no")


@pytest.mark.parametrize("shape", [(7, 5), (300, 700)])
def test_kernels_write_into_given_buffers_as_the_portable_path_computes(backend, shape):
    rng = np.random.default_rng(5)
    A = backend.asarray(rng.standard_normal(shape).astype(np.float32))
    B = backend.asarray(rng.standard_normal((shape[0], 3)).astype(np.float32))
    portable = fast.Portable(backend.xp, backend.inplace)
    expected_mm, expected_sum = to_numpy(portable.matmul(A.T, B)), to_numpy(portable.sum_rows(A))
    for kernels in (backend.kernels, portable):
        if backend.views:
            buf = Buffer.zeros(xn.nn.buffers.Layout({"W": (shape[1], 3), "b": (shape[1],)}),
                               backend)
            kernels.matmul(A.T, B, out=buf.arrays["W"])  # the values land in the buffer
            kernels.sum_rows(A, out=buf.arrays["b"])
            np.testing.assert_allclose(to_numpy(buf.arrays["W"]), expected_mm, rtol=1e-5,
                                       atol=1e-5)
            np.testing.assert_allclose(to_numpy(buf.arrays["b"]), expected_sum, rtol=1e-5,
                                       atol=1e-5)
        np.testing.assert_allclose(to_numpy(kernels.matmul(A.T, B)), expected_mm, rtol=1e-5,
                                   atol=1e-5)


@pytest.mark.parametrize("size", [50, 200_003])  # one block, and several with a ragged tail
@pytest.mark.parametrize("kind", ["Adam", "AdamW"])  # coupled and decoupled decay
def test_the_fused_adam_update_equals_the_optimizers_own_maths(backend, size, kind):
    if backend.kernels.adam_ is None:
        pytest.skip(f"{backend.name} has no fused Adam: the optimizer's maths runs")
    rng = np.random.default_rng(6)
    host = [rng.standard_normal(size).astype(np.float32) for _ in range(2)]
    fused = [backend.asarray(h) for h in host] + [backend.asarray(np.zeros(size, np.float32))
                                                  for _ in range(2)]
    plain = [backend.asarray(a) for a in map(to_numpy, fused)]
    opt = getattr(xn, kind)(lr=1e-2, weight_decay=0.1)
    for t in (1, 2, 3):
        opt.iterations = t
        opt.update(fused[0], fused[1], {"m": fused[2], "v": fused[3]}, backend.xp, True,
                   backend.kernels)
        opt.update(plain[0], plain[1], {"m": plain[2], "v": plain[3]}, backend.xp, True, None)
    for a, b in zip(fused, plain, strict=True):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=2e-6, atol=1e-7)


def test_the_scikit_learn_estimators_train_through_the_step(monkeypatch):
    pytest.importorskip("sklearn")
    from xpnet.sklearn import MLPClassifier

    calls = []
    real = xn.Step.__call__

    def counting(self, *args, **kwargs):
        calls.append(None)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(xn.Step, "__call__", counting)
    X, y = _data(n=40)
    MLPClassifier(hidden_layer_sizes=(6,), max_iter=2, batch_size=10, random_state=0).fit(X, y)
    assert len(calls) == 8


def test_a_registered_layer_saves_and_loads(tmp_path):
    class Doubling(xn.Layer):
        """Y = 2 X."""

        def forward(self, params, X, ctx):
            return X * 2.0, lambda dY, need_dX=True: (dY * 2.0, {})

    model = xn.Sequential(xn.Dense(3, 2), Doubling(), seed=0)
    path = tmp_path / "m.npz"
    model.save(path)
    with pytest.raises(xn.CheckpointError, match="register_layer"):
        xn.load(path)
    assert xn.register_layer(Doubling) is Doubling
    try:
        again = xn.load(path)
        X = np.ones((2, 3), np.float32)
        np.testing.assert_array_equal(to_numpy(again.predict(X)), to_numpy(model.predict(X)))
        with pytest.raises(ValueError, match="already registered"):
            xn.register_layer(type("Doubling", (xn.Layer,), {}))
        with pytest.raises(TypeError):
            xn.register_layer(int)
    finally:
        xn.nn.layers.LAYERS.pop("Doubling", None)
