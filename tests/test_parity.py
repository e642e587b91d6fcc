"""Parity: the same seed and data train the same MLP on every backend, and our optimizers
take the same steps as torch.optim.

The NumPy run is the reference. Each parity test records every parameter after every epoch
(the trajectory) and compares it with the NumPy trajectory of the same dtype.
"""

from __future__ import annotations

import numpy as np
import pytest

import xpnet as xn
from xpnet.backend import table as backends

# float32: the backends run the same ops but their BLAS kernels sum in different orders, so
# each step may differ by a few ulps (~1e-7 relative) and training compounds that a little.
# Measured here over 6 epochs x 4 batches: <= 1.5e-7 on torch and jax (strict == numpy exactly).
# 2e-5 leaves two orders of magnitude for other CPUs and GPUs, while a real bug (a wrong
# momentum, bias correction or shuffle order) moves parameters by 1e-3 or more.
F32_TOL = 2e-5
# float64: the same argument at eps 2.2e-16; measured <= 3.3e-16.
F64_TOL = 1e-12
TOL = {"float32": F32_TOL, "float64": F64_TOL}

EPOCHS, BATCH = 6, 16


def _relative_gap(a: np.ndarray, ref: np.ndarray) -> float:
    """max |a - ref| / (1 + |ref|): relative for large entries, absolute near zero."""
    return float(np.max(np.abs(a.astype(np.float64) - ref) / (1.0 + np.abs(ref))))


class Trajectory(xn.Callback):
    """Host copies of every parameter at the end of every epoch."""

    def __init__(self):
        self.epochs: list[dict[str, np.ndarray]] = []

    def on_epoch_end(self, epoch, logs):
        backend = self.model.backend
        self.epochs.append({k: backend.to_numpy(v).copy() for k, v in self.model.params.items()})


def _classification_data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 4))
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(int) + (X[:, 3] > 0.5)
    return X, y


def _regression_data():
    rng = np.random.default_rng(1)
    X = rng.uniform(-1, 1, (48, 3))
    y = np.stack([np.sin(2 * X[:, 0]) + X[:, 1], X[:, 2] ** 2], axis=1)
    return X, y


PROBLEMS = {
    "mlp-ce": (lambda: _classification_data(), [4, 16, 3], "relu", "cross_entropy"),
    "mlp-mse": (lambda: _regression_data(), [3, 8, 2], "tanh", "mse"),
}

OPTIMIZERS = {
    "sgd-momentum": lambda: xn.SGD(lr=0.1, momentum=0.9),
    "sgd-nesterov": lambda: xn.SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam-wd": lambda: xn.Adam(lr=0.02, weight_decay=0.01),
    "adamw-amsgrad": lambda: xn.AdamW(lr=0.02, amsgrad=True),
    "rmsprop-centered": lambda: xn.RMSprop(lr=0.01, momentum=0.5, centered=True),
    "adagrad": lambda: xn.Adagrad(lr=0.05, lr_decay=0.01, initial_accumulator_value=0.1),
}


def _train(backend, problem, optimizer):
    make_data, sizes, act, loss = PROBLEMS[problem]
    X, y = make_data()
    model = xn.mlp(sizes, activation=act, seed=0, backend=backend)
    record = Trajectory()
    history = model.fit(X, y, loss=loss, optimizer=OPTIMIZERS[optimizer](), epochs=EPOCHS,
                        batch_size=BATCH, callbacks=[record], seed=1)
    return record.epochs, history.history["loss"]


_reference_cache: dict = {}


def _reference(dtype, problem, optimizer):
    key = (dtype, problem, optimizer)
    if key not in _reference_cache:
        _reference_cache[key] = _train(backends.get("numpy", dtype=dtype), problem, optimizer)
    return _reference_cache[key]


# ----------------------------------------------------------------------------- initial weights


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_same_seed_gives_bit_identical_initial_weights(backend, dtype):
    target = backends.get(backend.name, backend.device, dtype) if dtype == "float64" else backend
    sizes = [5, 7, 3]
    model = xn.mlp(sizes, activation="tanh", seed=42, backend=target)
    ref = xn.mlp(sizes, activation="tanh", seed=42, backend=backends.get("numpy", dtype=dtype))
    assert list(model.params) == list(ref.params)
    for name, value in model.params.items():
        host = target.to_numpy(value)
        assert host.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(host, ref.params[name], err_msg=name)


def test_different_seeds_give_different_weights():
    a = xn.mlp([4, 6, 2], seed=0, backend="numpy").params["0.W"]
    b = xn.mlp([4, 6, 2], seed=1, backend="numpy").params["0.W"]
    assert not np.array_equal(a, b)


# ----------------------------------------------------------------------------- trajectories


# Every optimizer on the classifier; the regression only needs to show mse trains the same.
F32_CASES = [("mlp-ce", opt) for opt in OPTIMIZERS] + [("mlp-mse", "sgd-momentum"),
                                                        ("mlp-mse", "adam-wd")]


@pytest.mark.parametrize("problem, optimizer", F32_CASES)
def test_float32_training_matches_numpy(backend, problem, optimizer):
    trajectory, losses = _train(backend, problem, optimizer)
    ref_trajectory, ref_losses = _reference("float32", problem, optimizer)
    assert len(trajectory) == EPOCHS
    assert ref_losses[-1] < ref_losses[0]  # the reference learns: not a parity of no-ops
    for epoch, (params, ref) in enumerate(zip(trajectory, ref_trajectory, strict=True)):
        for name in ref:
            gap = _relative_gap(params[name], ref[name])
            assert gap <= F32_TOL, f"epoch {epoch} {name}: gap {gap:.3g} > {F32_TOL}"
    np.testing.assert_allclose(losses, ref_losses, rtol=F32_TOL)


@pytest.mark.parametrize("problem, optimizer", [("mlp-ce", "adam-wd"),
                                                ("mlp-mse", "sgd-nesterov")])
def test_float64_training_matches_numpy_tightly(backend64, problem, optimizer):
    trajectory, losses = _train(backend64, problem, optimizer)
    ref_trajectory, ref_losses = _reference("float64", problem, optimizer)
    for epoch, (params, ref) in enumerate(zip(trajectory, ref_trajectory, strict=True)):
        for name in ref:
            gap = _relative_gap(params[name], ref[name])
            assert gap <= F64_TOL, f"epoch {epoch} {name}: gap {gap:.3g} > {F64_TOL}"
    np.testing.assert_allclose(losses, ref_losses, rtol=F64_TOL)


def _cuda_backends() -> list:
    out = []
    for name, device in (("cupy", None), ("torch", "cuda")):
        try:
            out.append(backends.get(name, device))
        except backends.BackendError:
            continue
    return out


@pytest.mark.gpu
@pytest.mark.parametrize("problem, optimizer", F32_CASES)
def test_gpu_float32_training_matches_numpy(problem, optimizer):
    """The same float32 parity on every CUDA backend present (cupy, torch 'cuda')."""
    cuda = _cuda_backends()
    if not cuda:
        pytest.skip("no CUDA device for cupy or torch")
    ref_trajectory, ref_losses = _reference("float32", problem, optimizer)
    for backend in cuda:
        assert backend.is_gpu
        trajectory, losses = _train(backend, problem, optimizer)
        for epoch, (params, ref) in enumerate(zip(trajectory, ref_trajectory, strict=True)):
            for name in ref:
                gap = _relative_gap(params[name], ref[name])
                assert gap <= F32_TOL, f"{backend}: epoch {epoch} {name}: gap {gap:.3g}"
        np.testing.assert_allclose(losses, ref_losses, rtol=F32_TOL)


def test_float32_and_float64_runs_differ_but_agree_roughly():
    """The float32 tolerance is meaningful: float32 really differs from float64 by more than
    F64_TOL, yet far less than a training bug would move it."""
    f32, _ = _reference("float32", "mlp-ce", "adam-wd")
    f64, _ = _reference("float64", "mlp-ce", "adam-wd")
    gap = max(_relative_gap(f32[-1][k], f64[-1][k]) for k in f64[-1])
    assert F64_TOL < gap < 1e-3


# ----------------------------------------------------------------------------- dtype discipline


@pytest.mark.parametrize("optimizer", ["sgd-nesterov", "adam-wd"])
def test_float32_in_means_float32_everywhere(backend, optimizer):
    X, y = _classification_data()  # float64 host data: must be cast, not upcast the model
    model = xn.mlp([4, 16, 3], seed=0, backend=backend)  # the parity shapes: JAX reuses its
    f32 = backend.xp.float32                                # compiled kernels (JAX is slow to
    opt = OPTIMIZERS[optimizer]()                           # compile a new shape)
    model.fit(X, y, loss="cross_entropy", optimizer=opt, epochs=1, batch_size=BATCH)
    for name, value in model.params.items():
        assert value.dtype == f32, f"param {name} is {value.dtype}"
    _, grads = model.loss_and_grads(X, y, loss="cross_entropy")
    for name, value in grads.items():
        assert value.dtype == f32, f"grad {name} is {value.dtype}"
    state = opt.state_arrays()
    assert state, "the optimizer kept no state to check"
    for name, value in state.items():
        assert value.dtype == f32, f"optimizer state {name} is {value.dtype}"
        assert backend.owns(value), f"optimizer state {name} is not on {backend.name}"
    assert model.predict(X).dtype == f32


def test_float64_model_stays_float64(backend64):
    X, y = _regression_data()
    model = xn.mlp([3, 8, 2], activation="tanh", seed=0, backend=backend64)
    opt = xn.Adam(lr=0.01)
    model.fit(X.astype(np.float32), y, loss="mse", optimizer=opt, epochs=1, batch_size=BATCH)
    for value in [*model.params.values(), *opt.state_arrays().values()]:
        assert value.dtype == backend64.xp.float64


# ----------------------------------------------------------------------------- JAX


def test_jax_trains_through_the_functional_path():
    backend = _jax_or_skip()
    assert backend.inplace is False
    X, y = _classification_data()
    model = xn.mlp([4, 16, 3], seed=0, backend=backend)
    before = {k: backend.to_numpy(v).copy() for k, v in model.params.items()}
    originals = model.params
    opt = xn.SGD(lr=0.1, momentum=0.9)
    model.fit(X, y, loss="cross_entropy", optimizer=opt, epochs=2, batch_size=BATCH)
    for name, value in model.params.items():
        assert value is not originals[name]  # new arrays, returned by the functional update
        assert not np.array_equal(backend.to_numpy(value), before[name]), name
    momentum = opt.state_arrays()["0.W/momentum"]
    assert float(backend.xp.sum(backend.xp.abs(momentum))) > 0  # state was carried too


def _jax_or_skip():
    try:
        return backends.get("jax")
    except backends.BackendError as exc:
        pytest.skip(f"jax unavailable: {exc}")


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_functional_update_equals_inplace_update(optimizer):
    """The JAX code path, run on NumPy, takes exactly the in-place path's steps and never
    writes into the arrays it was given."""
    backend = backends.get("numpy", dtype="float64")
    xp = backend.xp
    rng = np.random.default_rng(3)
    start = {"w": rng.standard_normal((3, 2)), "b": rng.standard_normal(2)}
    inplace_params = {k: xp.asarray(v, copy=True) for k, v in start.items()}
    functional_params = {k: xp.asarray(v, copy=True) for k, v in start.items()}
    opt_a, opt_b = OPTIMIZERS[optimizer](), OPTIMIZERS[optimizer]()
    for _ in range(4):
        grads = {k: rng.standard_normal(v.shape) for k, v in start.items()}
        given = {k: v.copy() for k, v in functional_params.items()}
        inplace_params = opt_a.step(inplace_params, grads, xp, inplace=True)
        new = opt_b.step(functional_params, grads, xp, inplace=False)
        for k in given:
            np.testing.assert_array_equal(functional_params[k], given[k])  # inputs untouched
        functional_params = new
    for k in start:
        np.testing.assert_allclose(functional_params[k], inplace_params[k], rtol=1e-14)


# ----------------------------------------------------------------------------- torch.optim


def _torch_optimizer_cases():
    return [
        ("sgd", dict(lr=0.1), dict(lr=0.1)),
        ("sgd-momentum", dict(lr=0.05, momentum=0.9), dict(lr=0.05, momentum=0.9)),
        ("sgd-nesterov-wd", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01),
         dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01)),
        ("adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6),
         dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6)),
        ("adamw", dict(lr=0.01, weight_decay=0.1), dict(lr=0.01, weight_decay=0.1)),
    ]


@pytest.mark.parametrize("case, ours, theirs", _torch_optimizer_cases(),
                         ids=[c[0] for c in _torch_optimizer_cases()])
def test_optimizers_match_torch_optim(case, ours, theirs):
    torch = pytest.importorskip("torch")
    if case.startswith("sgd"):
        mine, ref_cls = xn.SGD(**ours), torch.optim.SGD
    elif case == "adam":
        mine, ref_cls = xn.Adam(**ours), torch.optim.Adam
    else:
        mine, ref_cls = xn.AdamW(**ours), torch.optim.AdamW
    backend = backends.get("numpy", dtype="float64")
    rng = np.random.default_rng(11)
    start = {"w": rng.standard_normal((4, 3)), "b": rng.standard_normal(3)}
    params = {k: backend.asarray(v) for k, v in start.items()}
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in start.items()}
    ref = ref_cls(list(tensors.values()), **theirs)
    for step in range(8):
        grads = {k: rng.standard_normal(v.shape) for k, v in start.items()}
        params = mine.step(params, {k: backend.asarray(g) for k, g in grads.items()},
                           backend.xp, inplace=True)
        for k, t in tensors.items():
            t.grad = torch.tensor(grads[k])
        ref.step()
        for k, t in tensors.items():
            np.testing.assert_allclose(params[k], t.detach().numpy(), rtol=1e-12, atol=1e-14,
                                       err_msg=f"{case}, step {step}, {k}")
