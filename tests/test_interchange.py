"""Interchange: other libraries' arrays come over by DLPack (no copy where memory can be
shared), and state_dict / load_state_dict speak PyTorch's names and layout both ways."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import xpnet as xn
from xpnet.backend import BackendError

torch = pytest.importorskip("torch")


def _backend(name: str) -> xn.Backend:
    try:
        return xn.backend.get(name)
    except BackendError as exc:
        pytest.skip(f"backend {name!r} unavailable here: {exc}")


def _pointer(x) -> int:
    """Where an array's data starts, for torch, JAX and NumPy alike."""
    if isinstance(x, np.ndarray):
        return x.ctypes.data
    if hasattr(x, "data_ptr"):
        return x.data_ptr()
    return x.unsafe_buffer_pointer()


def _jax_array(host: np.ndarray):
    jnp = pytest.importorskip("jax.numpy")
    return jnp.asarray(host)


HOST = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)


# --------------------------------------------------------------------------- DLPack inputs


@pytest.mark.parametrize("source, target", [
    ("torch", "jax"), ("jax", "torch"), ("torch", "numpy"), ("jax", "numpy")])
def test_inputs_from_another_library_share_memory_and_predict_the_same(source, target):
    model = xn.mlp([4, 8, 3], seed=0, backend=_backend(target))
    # torch's own allocation: JAX on the CPU copies a buffer not aligned to 64 bytes, as
    # NumPy's may be
    X = torch.tensor(HOST) if source == "torch" else _jax_array(HOST)
    on_device = model.device_inputs(X)
    assert model.backend.owns(on_device)
    assert _pointer(on_device) == _pointer(X)  # taken over, not copied
    expected = model.backend.to_numpy(model.predict(HOST))
    np.testing.assert_array_equal(model.backend.to_numpy(model.predict(X)), expected)


@pytest.mark.parametrize("target", ["jax", "numpy", "torch"])
def test_a_transposed_view_comes_over_with_its_values(target):
    model = xn.mlp([4, 3], seed=0, backend=_backend(target))
    X = torch.tensor(np.ascontiguousarray(HOST.T)).T  # strides (1, 6): not row-major
    assert not X.is_contiguous()
    np.testing.assert_array_equal(model.backend.to_numpy(model.predict(X)),
                                  model.backend.to_numpy(model.predict(HOST)))


def test_backend_asarray_copies_on_the_device_unless_told_it_may_share():
    jax = _backend("jax")
    X = torch.tensor(HOST)
    shared, copied = jax.asarray(X, copy=None), jax.asarray(X)
    assert _pointer(shared) == X.data_ptr() and _pointer(copied) != X.data_ptr()
    np.testing.assert_array_equal(np.asarray(copied), HOST)


def test_a_tensor_that_requires_grad_is_shared_too():
    model = xn.mlp([4, 3], seed=0, backend=_backend("jax"))
    X = torch.tensor(HOST).requires_grad_()
    assert _pointer(model.device_inputs(X)) == X.data_ptr()


def test_parameters_from_another_library_are_copied_not_aliased():
    """set_params takes torch tensors onto JAX by DLPack, then copies: a later change of the
    tensor must not reach the model."""
    model = xn.mlp([4, 3], seed=0, backend=_backend("jax"))
    values = {k: torch.from_numpy(np.ones(v.shape, np.float32)) for k, v in model.params.items()}
    model.set_params(values)
    values["0.W"] += 1.0
    np.testing.assert_array_equal(np.asarray(model.params["0.W"]), np.ones((4, 3)))


@pytest.mark.parametrize("source, target", [("torch", "jax"), ("jax", "torch"),
                                            ("numpy", "torch"), ("torch", "numpy")])
def test_to_moves_across_libraries_with_the_same_values(source, target):
    model = xn.mlp([4, 8, 3], seed=0, backend=_backend(source))

    def copy(arrays):
        return {k: np.array(model.backend.to_numpy(v)) for k, v in arrays.items()}

    before = copy(model.params)
    model.fit(HOST, np.arange(6) % 3, loss="cross_entropy", optimizer=xn.Adam(), epochs=1)
    state, trained = copy(model.optimizer.state_arrays()), copy(model.params)
    model.to(_backend(target))
    assert model.backend.name == target
    for name, value in model.params.items():
        np.testing.assert_array_equal(model.backend.to_numpy(value), trained[name])
    for name, value in model.optimizer.state_arrays().items():
        np.testing.assert_array_equal(model.backend.to_numpy(value), state[name])
    assert any(not np.array_equal(before[k], trained[k]) for k in before)


def test_the_table_says_who_imports_by_dlpack():
    """array-api-strict's devices are make-believe: its arrays and other libraries' reach
    each other through the host, which stays the fallback everywhere."""
    strict = _backend("array_api_strict")
    X = torch.tensor(HOST)
    assert strict.from_dlpack(X) is None
    model = xn.mlp([4, 3], seed=0, backend=strict)
    np.testing.assert_allclose(strict.to_numpy(model.predict(X)),
                               strict.to_numpy(model.predict(HOST)))


def test_an_array_that_cannot_be_exported_takes_the_host_path():
    """torch's "meta" tensors have no data: DLPack refuses, and the host path's error names
    the array and the model's backend."""
    model = xn.mlp([4, 3], seed=0, backend=_backend("jax"))
    with pytest.raises(xn.DataError, match="torch Tensor on device meta.*jax"):
        model.predict(torch.empty((2, 4), device="meta"))


def test_dtypes_that_would_not_survive_dlpack_take_the_host_path():
    """JAX without 64-bit mode imports int64 as int32 (wrapping) and float64 as float32 (to
    Inf); those inputs must take the host path, which converts and checks them correctly."""
    pytest.importorskip("jax")
    code = textwrap.dedent("""
        import numpy as np, torch, xpnet as xn
        model = xn.Sequential(xn.Identity(), xn.Dense(2, 1), backend="jax")
        big = torch.full((1, 2), 2**40, dtype=torch.int64)
        X = model.device_inputs(big)
        assert float(X[0, 0]) == 2.0**40, X
        try:
            model.device_inputs(torch.full((1, 2), 1e300, dtype=torch.float64))
        except xn.DataError as exc:
            assert "beyond float32's range" in str(exc), exc
        else:
            raise AssertionError("no DataError")
        print("ok")
    """)
    env = {**os.environ, "JAX_ENABLE_X64": "0", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-2000:]


@pytest.mark.gpu
def test_cupy_and_torch_cuda_share_memory_on_the_gpu():
    """A torch CUDA tensor into a CuPy model and back: no host round trip."""
    gpu = _backend("cupy")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    model = xn.mlp([4, 8, 3], seed=0, backend=gpu)
    X = torch.tensor(HOST).cuda()
    on_device = model.device_inputs(X)
    assert on_device.data.ptr == X.data_ptr()
    np.testing.assert_allclose(gpu.to_numpy(model.predict(X)), gpu.to_numpy(model.predict(HOST)),
                               rtol=1e-6, atol=1e-6)
    tm = xn.mlp([4, 8, 3], seed=0, backend=xn.backend.get("torch", "cuda"))
    assert tm.device_inputs(on_device).data_ptr() == X.data_ptr()


# --------------------------------------------------------------------------- state_dict


class TorchResidual(torch.nn.Sequential):
    """The torch module an ``xn.Residual`` corresponds to: ``x + layers(x)``, its layers the
    children "0", "1", ... (so its keys are "1.0.weight", as xpnet names them)."""

    def forward(self, x):
        return x + super().forward(x)


def _torch_layers(layers):
    nn = torch.nn
    twins = {
        "ReLU": lambda layer: nn.ReLU(), "Tanh": lambda layer: nn.Tanh(),
        "Sigmoid": lambda layer: nn.Sigmoid(), "Identity": lambda layer: nn.Identity(),
        "GELU": lambda layer: nn.GELU(approximate="tanh"),
        "LeakyReLU": lambda layer: nn.LeakyReLU(layer.slope),
        "Softmax": lambda layer: nn.Softmax(dim=-1), "Dropout": lambda layer: nn.Dropout(layer.p),
        "Dense": lambda layer: nn.Linear(layer.n_in, layer.n_out, bias=layer.bias),
        "LayerNorm": lambda layer: nn.LayerNorm(layer.n, eps=layer.eps),
        "BatchNorm": lambda layer: nn.BatchNorm1d(layer.n, eps=layer.eps,
                                                  momentum=layer.momentum),
        "Residual": lambda layer: TorchResidual(*_torch_layers(layer.sublayers())),
    }
    return [twins[type(layer).__name__](layer) for layer in layers]


def _torch_twin(model: xn.Sequential):
    """The torch.nn.Sequential of the same layers at the same indices, in eval mode."""
    return torch.nn.Sequential(*_torch_layers(model.layers)).eval()


def _every_layer(backend) -> xn.Sequential:
    return xn.Sequential(xn.Dense(4, 8), xn.GELU(), xn.Dense(8, 8), xn.LeakyReLU(0.2),
                         xn.Dropout(0.3), xn.Dense(8, 6, bias=False), xn.Tanh(),
                         xn.Dense(6, 5), xn.Sigmoid(), xn.Identity(), xn.Dense(5, 3), xn.ReLU(),
                         xn.Dense(3, 3), xn.Softmax(), seed=3, backend=backend)


@pytest.mark.parametrize("name", ["numpy", "torch", "jax", "array_api_strict"])
def test_weights_move_to_torch_and_back(name):
    backend = _backend(name)
    model = _every_layer(backend)
    twin = _torch_twin(model)
    sd = model.state_dict(format="torch")
    assert list(sd) == [k for k in twin.state_dict()]
    assert tuple(sd["0.weight"].shape) == (8, 4) and tuple(sd["0.bias"].shape) == (8,)
    twin.load_state_dict(sd)
    with torch.no_grad():
        np.testing.assert_allclose(twin(torch.from_numpy(HOST)).numpy(),
                                   backend.to_numpy(model.predict(HOST)), rtol=1e-5, atol=1e-6)
    # and back: torch's own weights into a fresh xpnet model of another seed
    with torch.no_grad():
        for p in twin.parameters():
            p.normal_()
        expected = twin(torch.from_numpy(HOST)).numpy()
    fresh = _every_layer(backend)
    fresh.set_params({k: backend.to_numpy(v) * 0 for k, v in fresh.params.items()})
    assert fresh.load_state_dict(twin.state_dict()) is fresh
    np.testing.assert_allclose(backend.to_numpy(fresh.predict(HOST)), expected,
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["numpy", "torch", "jax"])
def test_state_dict_shares_memory_with_the_parameters(name):
    backend = _backend(name)
    model = xn.mlp([4, 8, 3], seed=0, backend=backend)
    sd = model.state_dict()
    assert sd["0.weight"].data_ptr() == _pointer(model.params["0.W"])
    assert sd["0.bias"].data_ptr() == _pointer(model.params["0.b"])


def _sd(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_unchanged(model, before):
    for name, value in model.params.items():
        np.testing.assert_array_equal(model.backend.to_numpy(value), before[name])


@pytest.mark.parametrize("edit, message", [
    (lambda sd: sd.pop("2.bias"), r"missing keys \['2.bias'\]"),
    (lambda sd: sd.update({"7.weight": torch.ones(1)}), r"unexpected keys \['7.weight'\]"),
    (lambda sd: sd.update({"0.weight": torch.ones(4, 8)}),
     r"'0.weight' of layer 0 \(Dense\) has shape \(4, 8\), expected \(8, 4\) "
     r"\(out_features, in_features\)"),
    (lambda sd: sd.update({"2.bias": torch.ones(4)}), r"'2.bias' .* shape \(4,\), expected \(3,\)"),
    (lambda sd: sd["0.weight"].__setitem__((1, 2), float("nan")),
     r"'0.weight' contains 1 NaN or Inf value\(s\), the first at row 1, column 2"),
    (lambda sd: sd["2.bias"].__setitem__(0, float("inf")), r"'2.bias' contains 1 NaN or Inf"),
])
def test_load_state_dict_names_the_problem_and_changes_nothing(edit, message):
    model = xn.mlp([4, 8, 3], seed=0)
    before = {k: np.array(v) for k, v in model.params.items()}
    sd = _sd(xn.mlp([4, 8, 3], seed=1))
    edit(sd)
    with pytest.raises(xn.ModelError if "keys" in message or "shape" in message
                       else xn.DataError, match=message):
        model.load_state_dict(sd)
    _assert_unchanged(model, before)


def test_load_state_dict_refuses_what_is_not_a_state_dict():
    model = xn.mlp([4, 3], seed=0)
    with pytest.raises(TypeError, match="load_state_dict: expected a mapping"):
        model.load_state_dict([("0.weight", torch.ones(3, 4))])
    with pytest.raises(ValueError, match="format must be one of"):
        model.state_dict(format="keras")
    with pytest.raises(xn.DataError, match="'0.weight' must be numeric"):
        model.load_state_dict({"0.weight": np.full((3, 4), "a"), "0.bias": np.zeros(3)})


def test_a_layer_without_torch_names_is_named():
    class Scale(xn.Layer):
        def param_shapes(self):
            return {"s": (1,)}

        def init_params(self, rng, default_init):
            return {"s": np.ones(1)}

    model = xn.Sequential(xn.Dense(2, 2), Scale(), seed=0)
    with pytest.raises(xn.ModelError, match=r"layer 1 \(Scale\) has a parameter 's' with no "
                                            "PyTorch name"):
        model.state_dict()


def test_state_dict_without_torch_names_the_extra(monkeypatch):
    model = xn.mlp([2, 1], seed=0)
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setattr(xn.backend.table, "_cache", {})
    with pytest.raises(ImportError, match=r"xpnet\[torch\]"):
        model.state_dict()


def test_a_block_s_layers_are_named_under_it_as_nested_torch_modules_are():
    def build(seed):
        return xn.Sequential(xn.Dense(4, 6), xn.Residual(xn.ReLU(), xn.Dense(6, 6)),
                             xn.Dense(6, 2), seed=seed)

    model = build(0)
    sd = model.state_dict()
    assert list(sd) == ["0.weight", "0.bias", "1.1.weight", "1.1.bias", "2.weight", "2.bias"]
    np.testing.assert_array_equal(sd["1.1.weight"].numpy(), model.params["1.1.W"].T)
    other = build(1)
    other.load_state_dict(sd)
    for name, value in model.params.items():
        np.testing.assert_array_equal(other.params[name], value)


# --------------------------------------------------------------------------- normalisation


def _norm_model(backend, seed=0) -> xn.Sequential:
    """LayerNorm and BatchNorm, alone and inside Residuals nested two deep."""
    return xn.Sequential(
        xn.Dense(4, 8), xn.BatchNorm(8, momentum=0.3), xn.ReLU(),
        xn.Residual(xn.LayerNorm(8), xn.Dense(8, 8), xn.Tanh()),
        xn.Residual(xn.Residual(xn.BatchNorm(8, eps=1e-3), xn.Dense(8, 8)), xn.LayerNorm(8)),
        xn.Dense(8, 3), seed=seed, backend=backend)


DATA = np.random.default_rng(1).normal(size=(64, 4)).astype(np.float32) * 2 + 1


@pytest.mark.parametrize("name", ["numpy", "torch", "jax", "array_api_strict"])
def test_normalisation_moves_to_torch_and_back_with_its_running_statistics(name):
    backend = _backend(name)
    model = _norm_model(backend)
    model.fit(DATA, np.tanh(DATA[:, :3]), loss="mse", optimizer=xn.Adam(lr=0.02), epochs=3,
              batch_size=16)
    assert np.abs(backend.to_numpy(model.state["1.running_var"]) - 1).max() > 1e-2
    twin = _torch_twin(model)
    sd = model.state_dict()
    assert list(sd) == list(twin.state_dict())  # torch's order: parameters, then buffers
    assert "4.0.0.running_mean" in sd and sd["1.num_batches_tracked"].dtype == torch.long
    twin.load_state_dict(sd)  # strict: every key torch has, and no other
    with torch.no_grad():
        np.testing.assert_allclose(twin(torch.from_numpy(DATA)).numpy(),
                                   backend.to_numpy(model.predict(DATA)), rtol=1e-5, atol=1e-5)
    # and back: torch trains its own copy (its BatchNorm updates the running statistics)
    optimizer = torch.optim.SGD(twin.parameters(), lr=0.1)
    twin.train()
    for _ in range(5):
        optimizer.zero_grad()
        twin(torch.from_numpy(DATA)).square().mean().backward()
        optimizer.step()
    twin.eval()
    with torch.no_grad():
        expected = twin(torch.from_numpy(DATA)).numpy()
    fresh = _norm_model(backend, seed=1)
    assert fresh.load_state_dict(twin.state_dict()) is fresh
    buffers = dict(twin.named_buffers())
    for key in ("1.running_mean", "1.running_var", "4.0.0.running_var"):
        np.testing.assert_array_equal(backend.to_numpy(fresh.state[key]), buffers[key].numpy())
    np.testing.assert_allclose(backend.to_numpy(fresh.predict(DATA)), expected, rtol=1e-5,
                               atol=1e-5)


def test_a_torch_state_dict_without_the_batch_count_loads():
    """torch's own load accepts a dict without num_batches_tracked (it fills in 0), and
    xpnet keeps no count: it is neither required nor refused."""
    model = _norm_model(_backend("numpy"))
    sd = _sd(_norm_model(_backend("numpy"), seed=1))
    del sd["1.num_batches_tracked"]
    model.load_state_dict(sd)
    np.testing.assert_array_equal(model.params["1.gamma"], sd["1.weight"].numpy())


@pytest.mark.parametrize("edit, message", [
    (lambda sd: sd.pop("4.0.0.running_var"), r"missing keys \['4.0.0.running_var'\]"),
    (lambda sd: sd.update({"3.0.running_mean": torch.zeros(8)}),
     r"unexpected keys \['3.0.running_mean'\]"),
    (lambda sd: sd.update({"1.running_mean": torch.zeros(7)}),
     r"'1.running_mean' of layer 1 \(BatchNorm\) has shape \(7,\), expected \(8,\)"),
    (lambda sd: sd["4.0.0.running_var"].__setitem__(2, float("nan")),
     r"'4.0.0.running_var' contains 1 NaN or Inf"),
])
def test_bad_running_statistics_are_named_and_nothing_changes(edit, message):
    model = _norm_model(_backend("numpy"))
    model.set_state({k: np.full(v.shape, 2.0) for k, v in model.state.items()})
    before = {k: np.array(v) for k, v in model.params.items()}
    state = {k: np.array(v) for k, v in model.state.items()}
    sd = _sd(_norm_model(_backend("numpy"), seed=1))
    edit(sd)
    with pytest.raises(xn.DataError if "NaN" in message else xn.ModelError, match=message):
        model.load_state_dict(sd)
    _assert_unchanged(model, before)
    for name, value in model.state.items():
        np.testing.assert_array_equal(value, state[name])


def test_a_state_array_without_torch_names_is_named():
    class Counter(xn.Layer):
        def state_shapes(self):
            return {"seen": (1,)}

        def init_state(self):
            return {"seen": np.zeros(1)}

    model = xn.Sequential(xn.Dense(2, 2), xn.Residual(Counter()), seed=0)
    with pytest.raises(xn.ModelError, match=r"layer 1\.0 \(Counter\) has a state array "
                                            "'seen' with no PyTorch name"):
        model.state_dict()
