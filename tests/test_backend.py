"""The backend table: selecting, scoping and resolving backends, and its error messages."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import threading
import types

import numpy as np
import pytest

import xpnet as xn
from xpnet.backend import NAMES, BackendError
from xpnet.backend import table as backends


def _run_python(code: str, **env) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (a clean import state) with extra env vars."""
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True,
                          text=True, timeout=120)


# ----------------------------------------------------------------------------- use / current


def test_use_as_a_call_persists_and_current_reports_it():
    xn.use("numpy")
    chosen = xn.use("array_api_strict")
    assert xn.current().name == "array_api_strict"
    assert chosen.name == "array_api_strict"
    assert xn.current().name == "array_api_strict"  # still there after the call returned


def test_use_as_a_context_manager_restores_the_previous_backend():
    xn.use("numpy", dtype="float64")
    before = xn.current()
    with xn.use("array_api_strict") as inside:
        assert inside.name == "array_api_strict"
        assert xn.current().name == "array_api_strict"
    assert xn.current() is before


def test_context_manager_restores_even_when_the_block_raises():
    xn.use("numpy")
    before = xn.current()
    with pytest.raises(KeyError), xn.use("array_api_strict"):
        raise KeyError("boom")
    assert xn.current() is before


def test_nested_contexts_unwind_in_order():
    xn.use("numpy")
    outer = xn.current()
    with xn.use("array_api_strict"):
        middle = xn.current()
        with xn.use("numpy", dtype="float64"):
            assert xn.current().dtype_name == "float64"
        assert xn.current() is middle
    assert xn.current() is outer


def test_current_exposes_name_namespace_device_and_dtype():
    backend = xn.use("numpy", dtype="float64").backend
    assert backend.name == "numpy"
    assert backend.dtype == backend.xp.float64
    assert backend.dtype_name == "float64"
    assert backend.device == "cpu"
    assert backend.xp.asarray([1.0, 2.0]).shape == (2,)


def test_available_lists_numpy_and_only_known_names():
    names = xn.available()
    assert "numpy" in names
    assert set(names) <= set(NAMES)
    for name in names:  # everything listed must really resolve
        assert backends.get(name).name == name


def test_strict_alias_resolves_to_array_api_strict():
    assert backends.get("strict").name == "array_api_strict"


def test_xpnet_backend_env_sets_the_starting_default():
    code = "import xpnet as xn; print(xn.current().name)"
    result = _run_python(code, XPNET_BACKEND="array_api_strict")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "array_api_strict"


def test_without_xpnet_backend_the_default_is_numpy():
    env = {k: v for k, v in os.environ.items() if k != "XPNET_BACKEND"}
    result = subprocess.run([sys.executable, "-c", "import xpnet as xn; print(xn.current().name)"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "numpy"


# ----------------------------------------------------------------------------- error messages


def test_unknown_name_lists_the_known_backends():
    with pytest.raises(BackendError) as info:
        xn.use("tensorflow")
    message = str(info.value)
    assert "tensorflow" in message
    for name in NAMES:
        assert name in message


def test_unknown_name_does_not_change_the_current_backend():
    xn.use("array_api_strict")
    with pytest.raises(BackendError):
        xn.use("nope")
    assert xn.current().name == "array_api_strict"


def test_bad_dtype_is_refused_with_the_allowed_ones():
    with pytest.raises(BackendError, match="float32"):
        xn.use("numpy", dtype="float16")


@pytest.mark.parametrize("name, extra", [("torch", "torch"), ("jax", "jax"),
                                         ("array_api_strict", "strict"), ("cupy", "cupy-cuda12")])
def test_missing_library_names_the_extra_to_install(monkeypatch, name, extra):
    real_import = importlib.import_module
    module = backends._TABLE[name].module

    def pretend_missing(modname, *args, **kwargs):
        if modname == module or modname.startswith(module + "."):
            raise ModuleNotFoundError(f"No module named {modname!r}")
        return real_import(modname, *args, **kwargs)

    monkeypatch.setattr(backends, "_cache", {})  # force a fresh resolution
    monkeypatch.setattr(importlib, "import_module", pretend_missing)
    with pytest.raises(BackendError) as info:
        backends.get(name)
    message = str(info.value)
    assert f"xpnet[{extra}]" in message
    assert "not installed" in message
    assert name not in xn.available()


def test_cupy_without_a_cuda_device_says_so(monkeypatch):
    try:
        backends.get("cupy")
    except BackendError as exc:
        real_message = str(exc)
    else:
        pytest.skip("cupy has a CUDA device here; the no-device message cannot be provoked")
    if "not installed" in real_message:
        # cupy is absent: simulate an installed cupy whose runtime sees no device.
        runtime = types.SimpleNamespace(getDeviceCount=lambda: 0)
        fake = types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime))
        monkeypatch.setattr(backends, "_cache", {})
        monkeypatch.setattr(backends, "_import", lambda name: (fake, None))
        with pytest.raises(BackendError) as info:
            backends.get("cupy")
        real_message = str(info.value)
    assert "CUDA" in real_message
    assert "none is visible" in real_message or "no CUDA device" in real_message


def test_cupy_runtime_that_raises_counts_as_no_device(monkeypatch):
    def broken():
        raise RuntimeError("CUDA driver version is insufficient")

    runtime = types.SimpleNamespace(getDeviceCount=broken)
    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime))
    monkeypatch.setattr(backends, "_cache", {})
    monkeypatch.setattr(backends, "_import", lambda name: (fake, None))
    with pytest.raises(BackendError, match="CUDA"):
        backends.get("cupy")


def test_numpy_refuses_a_gpu_device():
    with pytest.raises(BackendError, match="CPU"):
        backends.get("numpy", device="cuda")


# ----------------------------------------------------------------------------- threads


def test_use_in_one_thread_does_not_change_another_threads_backend():
    xn.use("numpy", dtype="float64")
    main_before = xn.current()
    seen = {}
    switched = threading.Event()
    checked = threading.Event()

    def worker():
        seen["start"] = xn.current().name  # a new thread starts at the default, not main's
        xn.use("array_api_strict")
        seen["after_use"] = xn.current().name
        switched.set()
        checked.wait(timeout=30)
        seen["end"] = xn.current().name

    thread = threading.Thread(target=worker)
    thread.start()
    assert switched.wait(timeout=30)
    assert xn.current() is main_before  # the worker's use() did not leak here
    xn.use("numpy")  # and main's use() does not leak into the worker
    checked.set()
    thread.join(timeout=30)
    assert seen["after_use"] == "array_api_strict"
    assert seen["end"] == "array_api_strict"
    assert seen["start"] == backends._default().name


# ----------------------------------------------------------------------------- arrays


def test_asarray_never_aliases_host_memory(backend):
    host = np.arange(6, dtype=np.float32).reshape(2, 3)
    on_device = backend.asarray(host)
    host[...] = -1.0  # mutating the source must not reach the device copy
    np.testing.assert_array_equal(backend.to_numpy(on_device),
                                  np.arange(6, dtype=np.float32).reshape(2, 3))


def test_asarray_copy_is_not_aliased_by_later_inplace_device_updates(backend):
    if not backend.inplace:
        pytest.skip(f"{backend.name} arrays are immutable")
    host = np.ones(4, dtype=np.float32)
    on_device = backend.asarray(host)
    on_device += 1.0
    np.testing.assert_array_equal(host, np.ones(4, dtype=np.float32))


def test_asarray_uses_the_backend_dtype_and_to_numpy_round_trips(backend):
    host = np.linspace(-1, 1, 5)  # float64 in, backend dtype out: nothing upcast
    on_device = backend.asarray(host)
    assert on_device.dtype == backend.dtype
    assert backend.owns(on_device)
    back = backend.to_numpy(on_device)
    assert isinstance(back, np.ndarray)
    np.testing.assert_allclose(back, host.astype(backend.dtype_name))


def test_asarray_accepts_arrays_of_another_backend(backend):
    other = backends.get("numpy")
    np_array = other.asarray([[1.0, 2.0]])
    if backend.name != "array_api_strict":
        strict = backends.get("array_api_strict")
        source = strict.asarray([[1.0, 2.0]])
    else:
        source = np_array
    moved = backend.asarray(source)
    assert backend.owns(moved)
    np.testing.assert_array_equal(backend.to_numpy(moved), [[1.0, 2.0]])


def test_jax_float64_without_x64_gives_a_clear_error():
    pytest.importorskip("jax")
    code = (
        "import xpnet as xn\n"
        "try:\n"
        "    xn.use('jax', dtype='float64')\n"
        "except xn.BackendError as exc:\n"
        "    print('ERR', exc)\n"
        "else:\n"
        "    print('NO ERROR')\n"
    )
    result = _run_python(code, JAX_ENABLE_X64="0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ERR"), result.stdout
    assert "JAX_ENABLE_X64" in result.stdout


# ----------------------------------------------------------------------------- error types


def test_an_unknown_backend_is_also_a_value_error_and_a_missing_one_an_import_error(
        monkeypatch):
    with pytest.raises(ValueError) as info:
        xn.use("nunpy")
    assert isinstance(info.value, BackendError) and "nunpy" in str(info.value)
    for bad in ({"device": "cuda"}, {"dtype": "int8"}):
        with pytest.raises(ValueError):
            xn.backend.get("numpy", **bad)
    monkeypatch.setitem(backends._TABLE, "torch",
                        backends._TABLE["torch"].__class__(
                            **{**backends._TABLE["torch"].__dict__, "module": "no_such_lib"}))
    monkeypatch.setattr(backends, "_cache", {})
    with pytest.raises(ImportError) as info:
        xn.backend.get("torch")
    assert isinstance(info.value, BackendError) and "pip install 'xpnet[torch]'" in str(
        info.value)


def test_a_bad_xpnet_backend_says_it_came_from_the_environment():
    result = _run_python("import xpnet as xn; xn.current()", XPNET_BACKEND="nunpy")
    assert result.returncode != 0
    assert "XPNET_BACKEND='nunpy' in the environment" in result.stderr
    assert "known backends" in result.stderr
