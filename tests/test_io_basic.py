"""save / load: round trips across backends, optimizer state, atomic writes, no unpickling."""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import pytest

import xpnet as xn
from xpnet.backend import table as backends
from xpnet.io import checkpoint as xio


def _data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4))
    return X, (X[:, 0] > X[:, 1]).astype(int) + (X[:, 2] > 0.5)


def _trained(backend="numpy", dtype=None, optimizer=None):
    X, y = _data()
    model = xn.mlp([4, 6, 3], seed=0, backend=backend, dtype=dtype)
    model.fit(X, y, loss="cross_entropy", optimizer=optimizer or xn.Adam(lr=0.05), epochs=2,
              batch_size=16)
    return model


def _host(model):
    return {k: model.backend.to_numpy(v) for k, v in model.params.items()}


def _write_npz(path: pathlib.Path, arrays: dict) -> None:
    """Write ``arrays`` as xpnet's writer frames them, so a test reaches the reader's checks."""
    encode = getattr(xio, "_encode", None)  # the whole-file seal, where io has one
    if encode is None:
        np.savez(path, **arrays)
    else:
        path.write_bytes(encode(arrays))


def _leftovers(folder: pathlib.Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != "model.npz")


# ----------------------------------------------------------------------------- round trips


def test_numpy_to_any_backend_round_trip(tmp_path, backend):
    model = _trained("numpy")
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = xn.load(path, backend=backend.name)
    assert (loaded.backend.name, loaded.backend.dtype) == (backend.name, backend.dtype)
    assert [type(a) for a in loaded.layers] == [type(b) for b in model.layers]
    for k, v in loaded.params.items():
        assert backend.owns(v)
        np.testing.assert_array_equal(backend.to_numpy(v), _host(model)[k])
    X, _ = _data(8, seed=1)
    np.testing.assert_allclose(backend.to_numpy(loaded.predict(X)), model.predict(X),
                               rtol=1e-5, atol=1e-6)


def test_any_backend_to_numpy_round_trip(tmp_path, backend):
    model = _trained(backend)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = xn.load(path, backend="numpy")
    for k, v in _host(model).items():
        np.testing.assert_array_equal(loaded.params[k], v)


def test_loaded_model_predicts_identically_on_the_same_backend(tmp_path, backend):
    model = _trained(backend)
    model.save(tmp_path / "model.npz")
    loaded = xn.load(tmp_path / "model.npz", backend=backend)
    X, _ = _data(8, seed=2)
    np.testing.assert_array_equal(backend.to_numpy(loaded.predict(X)),
                                  backend.to_numpy(model.predict(X)))


def test_load_uses_the_current_backend_by_default(tmp_path):
    _trained("numpy").save(tmp_path / "model.npz")
    with xn.use("array_api_strict"):
        loaded = xn.load(tmp_path / "model.npz")
    assert loaded.backend.name == "array_api_strict"


def test_dtype_survives_and_can_be_overridden(tmp_path):
    _trained("numpy", dtype="float64").save(tmp_path / "model.npz")
    assert xn.load(tmp_path / "model.npz", backend="numpy").params["0.W"].dtype == np.float64
    as32 = xn.load(tmp_path / "model.npz", backend="numpy", dtype="float32")
    assert as32.params["0.W"].dtype == np.float32


def test_architecture_and_configs_survive(tmp_path):
    model = xn.Sequential(xn.Dense(4, 5), xn.LeakyReLU(0.2), xn.Dropout(0.3), xn.Dense(5, 3),
                          xn.Dense(3, 2, bias=False), seed=3, backend="numpy")
    model.save(tmp_path / "model.npz")
    loaded = xn.load(tmp_path / "model.npz", backend="numpy")
    assert [repr(layer) for layer in loaded.layers] == [repr(layer) for layer in model.layers]
    assert list(loaded.params) == list(model.params)


# ----------------------------------------------------------------------------- optimizer state


@pytest.mark.parametrize("make_opt", [lambda: xn.Adam(lr=0.05, weight_decay=0.01),
                                      lambda: xn.SGD(lr=0.1, momentum=0.9, nesterov=True)],
                         ids=["adam", "sgd-nesterov"])
def test_optimizer_state_survives_and_training_continues_identically(tmp_path, make_opt):
    X, y = _data()
    model = _trained("numpy", optimizer=make_opt())
    model.save(tmp_path / "model.npz")
    loaded = xn.load(tmp_path / "model.npz", backend="numpy")
    assert type(loaded.optimizer) is type(model.optimizer)
    assert loaded.optimizer.config() == model.optimizer.config()
    assert loaded.optimizer.iterations == model.optimizer.iterations
    saved_state = model.optimizer.state_arrays()
    assert saved_state
    for k, v in loaded.optimizer.state_arrays().items():
        np.testing.assert_array_equal(v, saved_state[k])
    for m in (model, loaded):  # the same next epochs from the same state
        m.fit(X, y, loss="cross_entropy", optimizer=m.optimizer, epochs=1, batch_size=16, seed=5)
    for k, v in _host(model).items():
        np.testing.assert_array_equal(loaded.params[k], v)


def test_optimizer_state_moves_to_another_backend(tmp_path, backend):
    model = _trained("numpy")
    model.save(tmp_path / "model.npz")
    loaded = xn.load(tmp_path / "model.npz", backend=backend.name)
    for k, v in loaded.optimizer.state_arrays().items():
        assert backend.owns(v), k
        assert v.dtype == backend.dtype


def test_model_without_optimizer_round_trips(tmp_path):
    model = xn.mlp([3, 2], seed=0, backend="numpy")
    model.save(tmp_path / "model.npz")
    assert xn.load(tmp_path / "model.npz", backend="numpy").optimizer is None


# ----------------------------------------------------------------------------- atomic writes


def test_save_writes_a_temp_file_then_os_replace(tmp_path, monkeypatch):
    calls = []
    real_replace = os.replace

    def spy(src, dst):
        calls.append((os.fspath(src), os.fspath(dst), os.path.getsize(src)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    path = tmp_path / "model.npz"
    _trained("numpy").save(path)
    assert len(calls) == 1
    src, dst, size = calls[0]
    assert os.path.dirname(src) == str(tmp_path)  # same folder: the rename is atomic
    assert src != dst and dst == str(path)
    assert size == path.stat().st_size > 0  # the temp file was complete before the swap
    assert _leftovers(tmp_path) == []


def test_failed_save_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    old = xn.mlp([4, 6, 3], seed=1, backend="numpy")
    old.save(path)
    before = path.read_bytes()

    def exploding_savez(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(xio.np, "savez", exploding_savez)
    with pytest.raises(OSError, match="disk full"):
        _trained("numpy").save(path)
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []
    monkeypatch.undo()
    np.testing.assert_array_equal(xn.load(path, backend="numpy").params["0.W"], old.params["0.W"])


def test_save_refuses_a_path_without_npz(tmp_path):
    with pytest.raises(ValueError, match=".npz"):
        xn.mlp([2, 1], backend="numpy").save(tmp_path / "model.bin")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- reading safely


class _Tripwire:
    """Unpickling this creates a file: proof that a loader unpickled untrusted data."""

    def __init__(self, target: pathlib.Path):
        self.target = target

    def __reduce__(self):
        return (pathlib.Path.touch, (self.target,))


def test_object_arrays_are_never_unpickled(tmp_path):
    model = xn.mlp([3, 2], seed=0, backend="numpy")
    model.save(tmp_path / "model.npz")
    with np.load(tmp_path / "model.npz") as npz:
        arrays = {name: npz[name] for name in npz.files}
    tripwire = tmp_path / "unpickled"
    arrays["param/0.b"] = np.array([_Tripwire(tripwire)], dtype=object)
    evil = tmp_path / "evil.npz"
    _write_npz(evil, arrays)  # savez pickles object arrays
    with pytest.raises(xn.CheckpointError) as info:
        xn.load(evil, backend="numpy")
    assert "pickle" in str(info.value).lower()
    assert not tripwire.exists()


@pytest.mark.parametrize("damage", ["truncate", "not-a-zip", "no-metadata"])
def test_damaged_files_raise_checkpoint_error(tmp_path, damage):
    path = tmp_path / "model.npz"
    xn.mlp([3, 2], seed=0, backend="numpy").save(path)
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "not-a-zip":
        path.write_bytes(b"hello world")
    else:
        np.savez(path, weights=np.zeros(3))
    with pytest.raises(xn.CheckpointError):
        xn.load(path, backend="numpy")


def test_tampered_arrays_fail_the_checksum(tmp_path):
    path = tmp_path / "model.npz"
    xn.mlp([3, 2], seed=0, backend="numpy").save(path)
    with np.load(path) as npz:
        arrays = {name: npz[name] for name in npz.files}
    meta = json.loads(str(arrays["__xpnet__"][()]))
    assert meta["format"] == "xpnet"
    arrays["param/0.W"] = arrays["param/0.W"] + 1.0
    _write_npz(path, arrays)
    with pytest.raises(xn.CheckpointError, match="checksum|corrupt"):
        xn.load(path, backend="numpy")


def test_missing_file_raises_checkpoint_error(tmp_path):
    with pytest.raises(xn.CheckpointError):
        xn.load(tmp_path / "absent.npz", backend=backends.get("numpy"))
