"""CUDA-graph replay of the step (``xpnet/train/graphs.py``).

On the CPU: the option is refused clearly where it cannot apply (naming the backend or the
layer and the reason), "auto" changes nothing there, and the replay logic (static buffers,
the device step count, the eager short batch, capturing again after a schedule or a
restore) is proven equal to the eager step through a stand-in capture API on torch's CPU,
one that records by running and undoing the step. On a GPU (marked ``gpu``): the real
capture on torch CUDA against the eager step.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import xpnet as xn
from xpnet.backend import BackendError
from xpnet.train import graphs
from xpnet.train.step import Step

CPU_REFUSALS = {"numpy": "NumPy runs on the CPU", "array_api_strict": "array-api-strict runs",
                "jax": "jax.jit", "torch": "its device is the CPU"}


def _data(n=70, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4)).astype(np.float32)
    return X, (X[:, 0] - X[:, 2] > 0).astype(np.int64)


def _backend(name):
    try:
        return xn.backend.get(name)
    except BackendError as exc:
        pytest.skip(f"backend {name!r} unavailable here: {exc}")


@pytest.mark.parametrize("name", sorted(CPU_REFUSALS))
def test_graphs_true_is_refused_on_the_cpu_naming_backend_and_reason(name):
    backend = _backend(name)
    model = xn.mlp([4, 8, 2], seed=0, backend=backend)
    before = {k: backend.to_numpy(v).copy() for k, v in model.params.items()}
    opt = xn.Adam(lr=1e-2)
    X, y = _data()
    with pytest.raises(ValueError, match=f"graphs=True, but backend '{name}' cannot capture "
                                         f"CUDA graphs: .*{CPU_REFUSALS[name]}"):
        model.fit(X, y, loss="cross_entropy", optimizer=opt, graphs=True)
    assert model.optimizer is None and opt.iterations == 0  # refused before any change
    for k, v in model.params.items():
        np.testing.assert_array_equal(backend.to_numpy(v), before[k])


def test_cupys_row_says_why_it_cannot_capture():
    row = xn.backend.table._TABLE["cupy"]  # the column itself: no CuPy needed to read it
    assert "cuBLAS" in row.graphs(None, None) and "6290" in row.graphs(None, None)


@pytest.mark.parametrize("bad", ["yes", 1, None, "AUTO"])
def test_the_option_is_checked(bad):
    model = xn.mlp([4, 8, 2], seed=0)
    with pytest.raises(ValueError, match="fit: graphs must be 'auto', True or False"):
        model.fit(*_data(), loss="cross_entropy", graphs=bad)


def test_auto_trains_as_eager_where_graphs_cannot_apply():
    runs = []
    for option in ("auto", False):
        model = xn.mlp([4, 8, 2], seed=0)
        history = model.fit(*_data(), loss="cross_entropy", optimizer=xn.Adam(lr=1e-2),
                            epochs=2, batch_size=16, graphs=option)
        runs.append((history.history["loss"], model.params))
    assert runs[0][0] == runs[1][0]
    for k in runs[0][1]:
        np.testing.assert_array_equal(runs[0][1][k], runs[1][1][k])


# --------------------------------------------------------------- a stand-in capture API


class RecordByUndoing:
    """Captures as CUDA does, on the CPU: ``capture(fn)`` records without changing any
    state (it runs ``fn`` and then restores every array it may write); ``replay()`` runs
    ``fn`` again and writes its loss into the captured output, as a replayed graph writes
    the same memory."""

    def __init__(self, arrays):
        self.arrays = arrays  # () -> the arrays a step writes
        self.side_calls = 0
        self.replays = 0

    def side(self, fn):
        self.side_calls += 1
        return fn()

    def capture(self, fn):
        saved = [(a, a.clone()) for a in self.arrays()]
        out = fn()
        for a, copy in saved:
            a.copy_(copy)

        def replay():
            self.replays += 1
            out.copy_(fn())

        return replay, out


def _capturing_torch_cpu(model_box):
    """torch on the CPU with its row saying it can capture, through RecordByUndoing."""
    pytest.importorskip("torch")
    plain = xn.backend.get("torch")

    def arrays():
        model = model_box[0]
        slots = model.optimizer._flat_slots(model.layout, model.backend)
        step_grads = model_box[1].grads.flat if model_box[1] is not None else None
        found = [model.parameters.flat, *(b.flat for b in slots.values())]
        graphed = model_box[1].graphed if model_box[1] is not None else None
        if graphed is not None and hasattr(graphed, "_t"):
            found.append(graphed._t)
        return found + ([step_grads] if step_grads is not None else [])

    row = dataclasses.replace(plain.row, graphs=lambda lib, device: lambda: RecordByUndoing(
        arrays))
    return xn.Backend(plain.name, plain.xp, plain.device, plain.dtype, plain.dtype_name,
                      plain.lib, row)


def _train(backend, optimizer, option, batches, model_box=None, lr_at=None):
    model = xn.mlp([4, 16, 2], seed=0, backend=backend)
    step = Step(model, "cross_entropy", optimizer, graphs=option)
    model.optimizer = optimizer
    if model_box is not None:
        model_box[:] = [model, step]
    losses = []
    for i, (X, y) in enumerate(batches):
        if lr_at is not None and i == lr_at:
            optimizer.lr = optimizer.lr / 2
        Xd = model.device_inputs(X)
        Td = model.device_targets(y, step.loss, Xd)
        losses.append(float(step(Xd, Td)))
    params = {k: backend.to_numpy(v).copy() for k, v in model.params.items()}
    return step, losses, params


def _batches():
    X, y = _data(n=70)
    # three epochs of 16-row batches and a short one of 6 rows
    return [(X[i:i + 16], y[i:i + 16]) for _ in range(3) for i in range(0, 70, 16)]


OPTIMIZERS = [lambda: xn.Adam(lr=1e-2, weight_decay=1e-3, clipnorm=1.0),
              lambda: xn.SGD(lr=0.05, momentum=0.9, nesterov=True)]


@pytest.mark.parametrize("make_optimizer", OPTIMIZERS)
def test_replay_equals_the_eager_step(make_optimizer):
    box = [None, None]
    backend = _capturing_torch_cpu(box)
    assert backend.capture_refusal is None
    eager = _train(xn.backend.get("torch"), make_optimizer(), False, _batches())
    graphed = _train(backend, make_optimizer(), True, _batches(), model_box=box)
    step = graphed[0]
    assert step.graphed is not None and step.graphed.captures == 1
    assert step.graphed.api.side_calls == graphs.WARMUP
    assert step.optimizer.iterations == len(_batches()) and isinstance(
        step.optimizer.iterations, int)
    np.testing.assert_allclose(graphed[1], eager[1], rtol=1e-5)
    for k in eager[2]:
        np.testing.assert_allclose(graphed[2][k], eager[2][k], rtol=1e-5, atol=1e-6)


def test_a_new_learning_rate_is_captured_again():
    box = [None, None]
    backend = _capturing_torch_cpu(box)
    eager = _train(xn.backend.get("torch"), xn.Adam(lr=1e-2), False, _batches(), lr_at=8)
    graphed = _train(backend, xn.Adam(lr=1e-2), True, _batches(), model_box=box, lr_at=8)
    assert graphed[0].graphed.captures == 2
    np.testing.assert_allclose(graphed[1], eager[1], rtol=1e-5)
    for k in eager[2]:
        np.testing.assert_allclose(graphed[2][k], eager[2][k], rtol=1e-5, atol=1e-6)


def test_the_short_batch_runs_eagerly():
    box = [None, None]
    backend = _capturing_torch_cpu(box)
    step = _train(backend, xn.SGD(lr=0.1), True, _batches(), model_box=box)[0]
    assert step.graphed.shape[0] == (16, 4)
    # 3 epochs of 4 full batches: 2 warm-up steps, then replays; the 3 short ones eager
    assert step.graphed.api.replays == 3 * 4 - graphs.WARMUP
    assert step.optimizer.iterations == 3 * 5


def test_fit_with_graphs_equals_eager_fit_with_a_schedule():
    box = [None, None]
    backend = _capturing_torch_cpu(box)
    X, y = _data(n=70)
    runs = []
    for b, option in ((xn.backend.get("torch"), False), (backend, True)):
        model = xn.mlp([4, 16, 2], seed=0, backend=b)
        box[:] = [model, None]
        opt = xn.Adam(lr=1e-2)
        model.optimizer = opt  # the stand-in reads its slots from the first capture on
        history = model.fit(X, y, loss="cross_entropy", optimizer=opt, epochs=3,
                            batch_size=16, graphs=option, check_every=3,
                            callbacks=[xn.LearningRateScheduler(lambda e, lr: lr * 0.5)])
        runs.append((history.history["loss"], {k: b.to_numpy(v) for k, v in
                                                model.params.items()}))
    np.testing.assert_allclose(runs[1][0], runs[0][0], rtol=1e-5)
    for k in runs[0][1]:
        np.testing.assert_allclose(runs[1][1][k], runs[0][1][k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model, reason", [
    (lambda b: xn.Sequential(xn.Dense(4, 8), xn.Dropout(0.5), xn.Dense(8, 2), seed=0,
                             backend=b), "layer 1 \\(Dropout\\) draws a new mask"),
])
def test_a_step_that_cannot_be_captured_is_refused(model, reason):
    backend = _capturing_torch_cpu([None, None])
    with pytest.raises(ValueError, match=f"fit: graphs=True, but {reason}"):
        model(backend).fit(*_data(), loss="cross_entropy", graphs=True)


def test_hooks_are_refused_by_the_step():
    backend = _capturing_torch_cpu([None, None])
    model = xn.mlp([4, 8, 2], seed=0, backend=backend)
    with pytest.raises(ValueError, match="Step: graphs=True, but the step has gradient hooks"):
        Step(model, "mse", xn.SGD(lr=0.1), grad_hooks=[lambda g, s: g], graphs=True)
    assert graphs.plan(Step(model, "mse", xn.SGD(lr=0.1), grad_hooks=[lambda g, s: g]),
                       "auto") is None


# --------------------------------------------------------------- the real thing


@pytest.mark.gpu
@pytest.mark.parametrize("make_optimizer", OPTIMIZERS)
def test_cuda_graph_replay_equals_eager_on_torch_cuda(make_optimizer):
    try:
        backend = xn.backend.get("torch", "cuda")
    except BackendError as exc:
        pytest.skip(f"torch sees no CUDA device: {exc}")
    assert backend.capture_refusal is None
    X, y = _data(n=70)
    runs = []
    for option in (False, True):
        model = xn.mlp([4, 64, 64, 2], seed=0, backend=backend)
        history = model.fit(X, y, loss="cross_entropy", optimizer=make_optimizer(), epochs=4,
                            batch_size=16, graphs=option,
                            callbacks=[xn.LearningRateScheduler(lambda e, lr: lr * 0.7)])
        runs.append((history.history["loss"], {k: backend.to_numpy(v) for k, v in
                                                model.params.items()}))
    np.testing.assert_allclose(runs[1][0], runs[0][0], rtol=1e-5)
    for k in runs[0][1]:
        np.testing.assert_allclose(runs[1][1][k], runs[0][1][k], rtol=1e-5, atol=1e-6)


class RefusesToCapture(RecordByUndoing):
    """A library that cannot record some operation of the step."""

    def capture(self, fn):
        raise RuntimeError("operation not permitted when stream is capturing")


def _refusing_torch_cpu():
    plain = xn.backend.get("torch")
    row = dataclasses.replace(plain.row,
                              graphs=lambda lib, device: lambda: RefusesToCapture(list))
    return xn.Backend(plain.name, plain.xp, plain.device, plain.dtype, plain.dtype_name,
                      plain.lib, row)


def test_a_refused_capture_warns_and_trains_eagerly_under_auto():
    pytest.importorskip("torch")
    X, y = _data(n=70)
    runs = []
    for b, option in ((xn.backend.get("torch"), False), (_refusing_torch_cpu(), "auto")):
        model = xn.mlp([4, 16, 2], seed=0, backend=b)
        with pytest.warns(RuntimeWarning) if option == "auto" else _no_warning() as caught:
            history = model.fit(X, y, loss="cross_entropy", optimizer=xn.Adam(lr=1e-2),
                                epochs=2, batch_size=16, graphs=option)
        runs.append((history.history["loss"], {k: b.to_numpy(v) for k, v in
                                                model.params.items()}))
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "the CUDA-graph capture of the training step failed" in \
        messages[0] and "operation not permitted" in messages[0]
    assert runs[1][0] == runs[0][0]
    for k in runs[0][1]:
        np.testing.assert_array_equal(runs[1][1][k], runs[0][1][k])


def test_a_refused_capture_raises_under_true():
    pytest.importorskip("torch")
    model = xn.mlp([4, 16, 2], seed=0, backend=_refusing_torch_cpu())
    with pytest.raises(RuntimeError, match="the CUDA-graph capture of the training step "
                                           "failed \\(RuntimeError: operation not permitted"):
        model.fit(*_data(), loss="cross_entropy", batch_size=16, graphs=True)


def _no_warning():
    import contextlib

    return contextlib.nullcontext()
