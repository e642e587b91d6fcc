"""Mixed precision: 16-bit passes over float32 parameters, loss scaling, checkpoints.

The accuracy tests train on scikit-learn's digits; every other test uses small random
data. NumPy's float16 is emulated (slow) and is here for correctness only.
"""

from __future__ import annotations

import checkpoint_forge as forge
import numpy as np
import pytest

import xpnet as xn
from xpnet.backend import table
from xpnet.train.precision import LossScale


def _backend(name, device=None):
    try:
        return xn.backend.get(name, device)
    except xn.BackendError as exc:
        pytest.skip(f"backend {name!r} unavailable here: {exc}")


def _data(n=96, d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    return X, (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1)


# ------------------------------------------------------------------------ accuracy


@pytest.fixture(scope="module")
def digits():
    datasets = pytest.importorskip("sklearn.datasets")
    X, y = datasets.load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    X, y = X[order], y[order]
    return X[:1400], y[:1400], X[1400:], y[1400:]


def _digits_accuracy(digits, backend, precision) -> float:
    X, y, Xt, yt = digits
    model = xn.mlp([64, 64, 10], seed=0, backend=backend, precision=precision)
    model.fit(X, y, loss="cross_entropy", optimizer=xn.Adam(lr=3e-3), epochs=25,
              batch_size=64, seed=0)
    return model.evaluate(Xt, yt, loss="cross_entropy")["accuracy"]


@pytest.mark.parametrize("name, precision", [("torch", "mixed-bfloat16"),
                                             ("numpy", "mixed-float16")])
def test_mixed_training_on_digits_is_as_accurate_as_float32(digits, name, precision):
    backend = _backend(name)
    reference = _digits_accuracy(digits, backend, "float32")
    mixed = _digits_accuracy(digits, backend, precision)
    assert reference > 0.9
    assert abs(mixed - reference) <= 0.01, (mixed, reference)


# --------------------------------------------------------------- what stays float32


@pytest.mark.parametrize("name, precision", [("numpy", "mixed-float16"),
                                             ("torch", "mixed-bfloat16"),
                                             ("jax", "mixed-bfloat16"),
                                             ("jax", "mixed-float16")])
def test_master_weights_state_and_outputs_stay_float32(name, precision):
    backend = _backend(name)
    X, y = _data()
    model = xn.mlp([6, 16, 3], seed=0, backend=backend, precision=precision)
    opt = xn.Adam(lr=1e-2)
    history = model.fit(X, y, loss="cross_entropy", optimizer=opt, epochs=2, batch_size=32)
    assert all(np.isfinite(history.history["loss"]))
    f32 = backend.xp.float32
    assert all(p.dtype == f32 for p in model.params.values())
    assert all(s.dtype == f32 for s in opt.state_arrays().values())
    assert model.predict(X).dtype == f32
    assert isinstance(model.evaluate(X, y, loss="cross_entropy")["loss"], float)


class _Probe(xn.Identity):
    """Records the dtype the forward pass runs in."""

    seen: list = []

    def forward(self, params, X, ctx):
        _Probe.seen.append(str(X.dtype))
        return super().forward(params, X, ctx)


@pytest.mark.parametrize("name, precision, low", [("numpy", "mixed-float16", "float16"),
                                                  ("torch", "mixed-bfloat16", "bfloat16")])
def test_the_passes_run_in_16_bits(name, precision, low):
    backend = _backend(name)
    X, y = _data()
    model = xn.Sequential(xn.Dense(6, 8), _Probe(), xn.Dense(8, 3), backend=backend,
                          precision=precision)
    _Probe.seen.clear()
    model.fit(X, y, loss="cross_entropy", epochs=1, batch_size=96)
    model.predict(X)
    assert _Probe.seen and all(low in dtype for dtype in _Probe.seen), _Probe.seen
    exact = xn.Sequential(xn.Dense(6, 8), _Probe(), xn.Dense(8, 3), backend=backend)
    exact.set_params({k: backend.to_numpy(v) for k, v in model.params.items()})
    gap = np.abs(backend.to_numpy(model.predict(X)) - backend.to_numpy(exact.predict(X)))
    assert 0 < gap.max() < 0.1  # rounded to 16 bits, not computed in float32


def test_mixed_bfloat16_step_is_close_to_float32():
    backend = _backend("torch")
    X, y = _data()
    runs = {}
    for precision in ("float32", "mixed-bfloat16"):
        model = xn.mlp([6, 16, 3], seed=0, backend=backend, precision=precision)
        model.fit(X, y, loss="cross_entropy", optimizer=xn.SGD(lr=0.1), epochs=3, batch_size=32)
        runs[precision] = {k: backend.to_numpy(v) for k, v in model.params.items()}
    for name, value in runs["float32"].items():
        np.testing.assert_allclose(runs["mixed-bfloat16"][name], value, atol=0.05)


# ------------------------------------------------------------------------ loss scaling


class _Overflow:
    """A gradient hook that turns the gradients of chosen steps into inf."""

    def __init__(self, at):
        self.at, self.calls = set(at), 0

    def __call__(self, grads, step):
        self.calls += 1
        if self.calls in self.at:
            return {k: g * float("inf") for k, g in grads.items()}
        return grads


def test_loss_scale_backs_off_on_overflow_skips_the_update_and_grows_back():
    X, y = _data(n=32)
    model = xn.mlp([6, 8, 3], seed=0, precision="mixed-float16")
    scaler = LossScale(init_scale=1024.0, growth_interval=3)
    opt = xn.SGD(lr=0.1)
    step = xn.Step(model, "cross_entropy", opt, grad_hooks=[_Overflow(at={2}), scaler])
    Xd = model.device_inputs(X)
    Td = model.device_targets(y, "cross_entropy", Xd)
    scales, params = [], []
    for _ in range(6):
        before = {k: np.array(v) for k, v in model.params.items()}
        step(Xd, Td)
        scales.append(scaler.scale)
        params.append(all(np.array_equal(before[k], v) for k, v in model.params.items()))
    # step 2 overflowed: halved and skipped (weights untouched, no optimizer iteration)
    assert scales == [1024.0, 512.0, 512.0, 512.0, 1024.0, 1024.0]
    assert params == [False, True, False, False, False, False]
    assert scaler.skipped == 1 and step.skipped == 1
    assert opt.iterations == 5 and step.count == 5


def test_fit_adds_loss_scaling_for_float16_and_records_skipped_steps():
    X, y = _data(n=64)
    model = xn.mlp([6, 8, 3], seed=0, precision="mixed-float16")
    history = model.fit(X, y, loss="cross_entropy", epochs=3, batch_size=16)
    assert history.history["skipped_steps"] == [0, 0, 0]
    plain = xn.mlp([6, 8, 3], seed=0, precision="mixed-bfloat16", backend=_backend("torch"))
    fit = {"loss": "cross_entropy", "epochs": 1}
    assert "skipped_steps" not in plain.fit(X, y, **fit).history  # bfloat16: no scaling
    assert "skipped_steps" not in xn.mlp([6, 8, 3]).fit(X, y, **fit).history


def test_fit_counts_overflow_skips_per_epoch():
    X, y = _data(n=64)
    model = xn.mlp([6, 8, 3], seed=0, precision="mixed-float16")
    opt = xn.SGD(lr=0.1)
    scaler = LossScale()
    step = xn.Step(model, "cross_entropy", opt, grad_hooks=[_Overflow(at={1, 6}), scaler])
    Xd = model.device_inputs(X)
    Td = model.device_targets(y, "cross_entropy", Xd)
    for _ in range(8):
        step(Xd[:16], Td[:16])
    assert scaler.scale == 2.0 ** 14 and step.skipped == 2 and opt.iterations == 6


def test_a_scale_below_the_floor_is_a_divergence():
    X, y = _data(n=16)
    model = xn.mlp([6, 8, 3], seed=0, precision="mixed-float16")
    before = {k: np.array(v) for k, v in model.params.items()}
    scaler = LossScale(init_scale=4.0, min_scale=1.0)
    step = xn.Step(model, "cross_entropy", xn.SGD(lr=0.1),
                   grad_hooks=[_Overflow(at=range(1, 10)), scaler])
    Xd = model.device_inputs(X)
    Td = model.device_targets(y, "cross_entropy", Xd)
    step(Xd, Td)
    step(Xd, Td)
    with pytest.raises(xn.DivergenceError, match="below LossScale"):
        step(Xd, Td)
    assert all(np.array_equal(before[k], v) for k, v in model.params.items())


def test_a_non_finite_loss_is_a_divergence_not_a_skip():
    X, y = _data(n=16)
    X[3, 2] = 7e4  # finite in float32, inf once cast to float16 (max 65504)
    model = xn.mlp([6, 8, 3], seed=0, precision="mixed-float16")
    with pytest.raises(xn.DivergenceError):
        model.fit(X, y, loss="cross_entropy", epochs=1, batch_size=16)


@pytest.mark.parametrize("kwargs, match", [
    ({"init_scale": 0.0}, "init_scale must be > 0"),
    ({"init_scale": float("inf")}, "init_scale must be a finite number"),
    ({"growth_factor": 1.0}, "growth_factor must be > 1"),
    ({"backoff_factor": 1.0}, "backoff_factor must be < 1"),
    ({"growth_interval": 0}, "growth_interval must be"),
    ({"min_scale": -1.0}, "min_scale must be > 0"),
])
def test_loss_scale_arguments_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LossScale(**kwargs)


# ---------------------------------------------------------------- choosing a precision


def test_use_sets_the_default_precision_and_restores_it():
    with xn.use("numpy", precision="mixed-float16"):
        assert xn.mlp([2, 3]).precision.name == "mixed-float16"
        assert xn.mlp([2, 3], precision="float32").precision.name == "float32"
    assert xn.mlp([2, 3]).precision.name == "float32"
    with xn.use("numpy", precision="float64"):
        model = xn.mlp([2, 3])
        assert model.precision.name == "float64" and model.backend.dtype_name == "float64"


@pytest.mark.parametrize("call, match", [
    (lambda: xn.mlp([2, 3], precision="half"), "precision must be one of"),
    (lambda: xn.mlp([2, 3], precision="mixed-bfloat16", dtype="float64"),
     "keeps float32 parameters, but dtype='float64'"),
    (lambda: xn.mlp([2, 3], precision="float32", dtype="float64"), "pass one of them"),
    (lambda: xn.use("numpy", precision="bfloat16"), "precision must be one of"),
    (lambda: xn.mlp([2, 3], precision="mixed-bfloat16"), "backend 'numpy'.*bfloat16"),
])
def test_bad_precisions_are_refused_clearly(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_array_api_strict_refuses_16_bit_floats_by_name():
    strict = _backend("array_api_strict")
    with pytest.raises(xn.BackendError, match="array_api_strict.*no 16-bit float dtype"):
        xn.mlp([2, 3], backend=strict, precision="mixed-float16")


def test_torch_cpu_refuses_float16_and_says_what_it_has():
    torch_cpu = _backend("torch", "cpu")
    with pytest.raises(xn.BackendError, match="cannot compute in float16.*supports bfloat16"):
        xn.mlp([2, 3], backend=torch_cpu, precision="mixed-float16")


def test_to_keeps_or_changes_the_precision_and_refuses_before_moving():
    X, y = _data()
    model = xn.mlp([6, 8, 3], seed=0, precision="mixed-float16")
    model.fit(X, y, loss="cross_entropy", optimizer=xn.Adam(lr=1e-2), epochs=1)
    before = {k: np.array(v) for k, v in model.params.items()}
    strict = _backend("array_api_strict")
    with pytest.raises(xn.BackendError, match="float16"):
        model.to(strict)
    assert model.backend.name == "numpy" and model.precision.name == "mixed-float16"
    model.to(strict, precision="float32")
    assert model.precision.name == "float32"
    for k, v in model.params.items():
        np.testing.assert_array_equal(strict.to_numpy(v), before[k])
    model.to("numpy", precision="mixed-float16")
    assert model.precision.name == "mixed-float16"
    model.fit(X, y, loss="cross_entropy", epochs=1)  # the optimizer state moved along


# ------------------------------------------------------------------------ checkpoints


def _trained(name, precision):
    X, y = _data()
    model = xn.mlp([6, 16, 3], seed=0, backend=_backend(name), precision=precision)
    model.fit(X, y, loss="cross_entropy", optimizer=xn.Adam(lr=1e-2), epochs=2, batch_size=32)
    return model, X, y


@pytest.mark.parametrize("source, precision", [("numpy", "mixed-float16"),
                                               ("torch", "mixed-bfloat16")])
@pytest.mark.parametrize("target", ["numpy", "torch", "jax", "array_api_strict"])
def test_a_mixed_model_saves_loads_and_predicts_on_every_backend(tmp_path, source, precision,
                                                                 target):
    model, X, y = _trained(source, precision)
    path = tmp_path / "mixed.npz"
    model.save(path)
    backend = _backend(target)
    keeps = precision.removeprefix("mixed-") in backend.low_precision
    loaded = xn.load(path, backend=backend, precision=None if keeps else "float32")
    assert loaded.precision.name == (precision if keeps else "float32")
    assert all(str(v.dtype).endswith("float32") for v in loaded.params.values())
    for k, v in model.params.items():
        np.testing.assert_array_equal(backend.to_numpy(loaded.params[k]),
                                      model.backend.to_numpy(v))
    got = backend.to_numpy(loaded.predict(X))
    np.testing.assert_allclose(got, model.backend.to_numpy(model.predict(X)), atol=0.1)
    loaded.fit(X, y, loss="cross_entropy", epochs=1)  # the optimizer continues there too


def test_loading_where_the_precision_cannot_run_says_how(tmp_path):
    model, _, _ = _trained("numpy", "mixed-float16")
    model.save(tmp_path / "m.npz")
    with pytest.raises(xn.BackendError, match="saved in mixed-float16.*precision="):
        xn.load(tmp_path / "m.npz", backend=_backend("array_api_strict"))


def test_the_precision_round_trips_and_old_files_read_as_their_dtype(tmp_path):
    model, _, _ = _trained("numpy", "mixed-float16")
    model.save(tmp_path / "m.npz")
    assert xn.load(tmp_path / "m.npz").precision.name == "mixed-float16"
    arrays, meta = forge.arrays_and_meta((tmp_path / "m.npz").read_bytes())
    del meta["precision"]  # a file written before precisions existed
    (tmp_path / "old.npz").write_bytes(forge.encode(arrays, meta))
    assert xn.load(tmp_path / "old.npz").precision.name == "float32"


@pytest.mark.parametrize("value, match", [("half", "is not one of"), (16, "is not one of"),
                                          ("float64", "declares dtype 'float32'"),
                                          (None, "is not one of")])
def test_a_hostile_precision_field_is_a_checkpoint_error(tmp_path, value, match):
    model, _, _ = _trained("numpy", "mixed-float16")
    model.save(tmp_path / "m.npz")
    arrays, meta = forge.arrays_and_meta((tmp_path / "m.npz").read_bytes())
    meta["precision"] = value
    (tmp_path / "bad.npz").write_bytes(forge.encode(arrays, meta))
    with pytest.raises(xn.CheckpointError, match=match):
        xn.load(tmp_path / "bad.npz")


def test_the_backend_table_lists_16_bit_dtypes_as_a_column():
    assert table.get("numpy").low_precision == ("float16",)
    assert "bfloat16" in _backend("torch", "cpu").low_precision
    assert _backend("array_api_strict").low_precision == ()
