"""Checkpoints survive crashes and reject corruption: atomic saves, one error type, no pickle."""

from __future__ import annotations

import json
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import xpnet as xn
from xpnet.io import checkpoint as xio

SIZES = [16, 64, 8]


def _trained(seed=0, backend=None):
    rng = np.random.default_rng(seed)
    model = xn.mlp(SIZES, seed=seed, backend=backend)
    X = rng.standard_normal((32, SIZES[0]))
    y = rng.integers(0, SIZES[-1], 32)
    model.fit(X, y, loss="cross_entropy", optimizer=xn.Adam(lr=1e-2), epochs=1, batch_size=8)
    return model


def _host(model) -> dict:
    out = {f"param/{k}": model.backend.to_numpy(v) for k, v in model.params.items()}
    if model.optimizer is not None:
        out.update({f"opt/{k}": model.backend.to_numpy(v)
                    for k, v in model.optimizer.state_arrays().items()})
    return out


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes() for k in a)


def test_round_trip_keeps_everything_and_training_continues_identically(tmp_path, backend):
    model = _trained(backend=backend)
    model.save(tmp_path / "m.npz")
    loaded = xn.load(tmp_path / "m.npz", backend=backend)
    assert _same(_host(model), _host(loaded))
    assert loaded.optimizer.iterations == model.optimizer.iterations
    X = np.random.default_rng(5).standard_normal((16, SIZES[0]))
    y = np.arange(16) % SIZES[-1]
    for m in (model, loaded):
        m.fit(X, y, loss="cross_entropy", optimizer=m.optimizer, epochs=1, batch_size=4)
    assert _same(_host(model), _host(loaded))


def test_a_checkpoint_is_a_plain_npz(tmp_path):
    _trained().save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as npz:
        assert "param/0.W" in npz.files


# --------------------------------------------------------------------------- crashes

_SAVER = textwrap.dedent("""
    import sys
    import xpnet as xn
    path = sys.argv[1]
    models = [xn.mlp({sizes}, seed=s) for s in (1, 2)]
    models[0].save(path)
    print("ready", flush=True)
    i = 0
    while True:
        i += 1
        models[i % 2].save(path)
""")


@pytest.mark.slow
def test_killing_a_saving_process_leaves_the_old_or_the_new_model(tmp_path):
    """SIGKILL a process that saves two models in turn, 20 times, after a random delay."""
    if not hasattr(signal, "SIGKILL"):
        pytest.skip("needs SIGKILL (POSIX)")
    sizes = [64, 256, 64]  # ~130 KB per file, so a kill often lands inside a write
    expected = [_host(xn.mlp(sizes, seed=s)) for s in (1, 2)]
    script = _SAVER.format(sizes=sizes)
    rng = np.random.default_rng(20)
    seen = [0, 0]
    for round_ in range(20):
        path = tmp_path / f"r{round_}" / "model.npz"
        path.parent.mkdir()
        proc = subprocess.Popen([sys.executable, "-c", script, str(path)],
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(float(rng.uniform(0.0, 0.03)))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
        got = _host(xn.load(path))
        matches = [_same(got, e) for e in expected]
        assert any(matches), f"round {round_}: the file is neither model"
        seen[matches.index(True)] += 1
        strays = [p.name for p in path.parent.iterdir() if p != path]
        assert all(n.startswith(".xpnet-") and n.endswith(".tmp") for n in strays), strays
    assert sum(seen) == 20


def test_a_failed_save_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    old = _trained(seed=0)
    old.save(path)

    def broken_replace(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(xio.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        _trained(seed=1).save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]
    assert _same(_host(xn.load(path)), _host(old))


# --------------------------------------------------------------------------- corruption


@pytest.fixture(scope="module")
def good_bytes(tmp_path_factory) -> tuple[bytes, dict]:
    path = tmp_path_factory.mktemp("good") / "m.npz"
    model = _trained()
    model.save(path)
    return path.read_bytes(), _host(model)


def _load_or_error(path, original):
    """CheckpointError, or (never expected) the identical model; anything else fails."""
    try:
        model = xn.load(path)
    except xn.CheckpointError:
        return "error"
    assert _same(_host(model), original), "a damaged file loaded as a different model"
    return "loaded"


def test_truncated_files_raise_checkpoint_error(tmp_path, good_bytes):
    raw, original = good_bytes
    rng = np.random.default_rng(0)
    cuts = {0, 1, 4, 30, len(raw) - 1, len(raw) - 22, len(raw) // 2}
    cuts |= {int(c) for c in rng.integers(0, len(raw), 53)}
    path = tmp_path / "cut.npz"
    results = []
    for cut in sorted(cuts):
        path.write_bytes(raw[:cut])
        results.append(_load_or_error(path, original))
    assert len(results) >= 50 and set(results) == {"error"}


def test_bit_flipped_files_raise_checkpoint_error(tmp_path, good_bytes):
    """120 single-bit flips: random positions, plus the zip headers and the seal at the end."""
    raw, original = good_bytes
    rng = np.random.default_rng(1)
    positions = [int(p) for p in rng.integers(0, len(raw), 90)]
    positions += list(range(0, 15)) + list(range(len(raw) - 15, len(raw)))
    path = tmp_path / "flip.npz"
    results = []
    for pos in positions:
        damaged = bytearray(raw)
        damaged[pos] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(damaged))
        results.append(_load_or_error(path, original))
    assert len(results) >= 100 and set(results) == {"error"}


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04" + bytes(100)])
def test_files_that_are_not_checkpoints(tmp_path, content):
    path = tmp_path / "x.npz"
    path.write_bytes(content)
    with pytest.raises(xn.CheckpointError):
        xn.load(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(xn.CheckpointError, match="cannot read"):
        xn.load(tmp_path / "absent.npz")
    with pytest.raises(xn.CheckpointError, match="cannot read"):
        xn.load(tmp_path)


# --------------------------------------------------------------------------- no pickle


def test_loading_never_unpickles(tmp_path, good_bytes, monkeypatch):
    raw, original = good_bytes
    path = tmp_path / "m.npz"
    path.write_bytes(raw)

    def refuse(*args, **kwargs):
        raise AssertionError("load unpickled something")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    assert _same(_host(xn.load(path)), original)


def test_an_object_array_is_refused_without_unpickling(tmp_path, monkeypatch):
    """A sealed file whose parameter is a pickled object array (what an attacker would write)."""
    arrays, meta = _payload_parts(_trained())
    arrays["param/0.b"] = np.array([_Boom()], dtype=object)
    path = _write(tmp_path, arrays, meta)
    _Boom.fired = False
    with pytest.raises(xn.CheckpointError):
        xn.load(path)
    assert not _Boom.fired


class _Boom:
    fired = False

    def __reduce__(self):
        return (_Boom._fire, ())

    @staticmethod
    def _fire():
        _Boom.fired = True
        return "boom"


# --------------------------------------------------------------------------- metadata


def _payload_parts(model):
    arrays = xio._payload(model)
    meta = json.loads(str(arrays.pop(xio._META)[()]))
    return arrays, meta


def _write(tmp_path, arrays, meta, name="crafted.npz"):
    """A checkpoint with valid checksums around whatever ``arrays`` and ``meta`` hold."""
    meta = dict(meta)
    try:
        meta["sha256"] = xio._digest(arrays)
    except Exception:  # an object array cannot be hashed by value; the reader refuses it anyway
        meta["sha256"] = "0" * 64
    arrays = {**arrays, xio._META: np.array(json.dumps(meta))}
    path = tmp_path / name
    path.write_bytes(xio._encode(arrays))
    return path


def _edit(key, value):
    def apply(arrays, meta):
        meta[key] = value
    return apply


def _edit_layer(index, key, value):
    def apply(arrays, meta):
        meta["layers"][index][key] = value
    return apply


def _edit_array(name, value=None):
    def apply(arrays, meta):
        if value is None:
            del arrays[name]
        else:
            arrays[name] = value
    return apply


def _set_opt(key, value):
    def apply(arrays, meta):
        meta["optimizer"][key] = value
    return apply


METADATA_CASES = [
    ("unknown layer type", _edit_layer(0, "type", "Conv2d"), ["unknown layer type", "Conv2d"]),
    ("layer config width", _edit_layer(2, "config", {"n_in": 64, "n_out": 9}), ["2.W", "shape"]),
    ("layer config junk", _edit_layer(1, "config", {"bogus": 1}), ["ReLU", "argument"]),
    ("widths do not chain", _edit_layer(2, "config", {"n_in": 3, "n_out": 8}), ["layer 2"]),
    ("missing layers", lambda a, m: m.pop("layers"), ["lacks", "layers"]),
    ("layers not a list", _edit("layers", "Dense"), ["layers"]),
    ("empty layers", _edit("layers", []), ["layers"]),
    ("missing dtype", lambda a, m: m.pop("dtype"), ["dtype"]),
    ("bad dtype", _edit("dtype", "float16"), ["float16"]),
    ("wrong format", _edit("format", "keras"), ["not an xpnet checkpoint"]),
    ("newer version", _edit("version", 99), ["version 99"]),
    ("param missing", _edit_array("param/2.b"), ["missing", "2.b"]),
    ("param shape", _edit_array("param/0.W", np.zeros((16, 3), "float32")), ["0.W", "(16, 3)"]),
    ("param not float", _edit_array("param/0.b", np.zeros(64, "int64")), ["int64"]),
    ("param NaN", _edit_array("param/0.b", np.full(64, np.nan, "float32")), ["NaN"]),
    ("stray array", _edit_array("extra", np.zeros(3)), ["unexpected", "extra"]),
    ("optimizer type", _set_opt("type", "LBFGS"), ["LBFGS"]),
    ("state without optimizer", _edit("optimizer", None), ["optimizer state", "no optimizer"]),
    ("optimizer config", _set_opt("config", {"lr": -1.0}), ["lr"]),
    ("optimizer iterations", _set_opt("iterations", -3), ["iterations"]),
    ("optimizer state shape", _edit_array("opt/0.W/m", np.zeros((2, 2), "float32")),
     ["0.W/m", "does not fit"]),
    ("optimizer state partial", _edit_array("opt/2.b/v"), ["lacks", "2.b/v"]),
    ("seed not a number", _edit("seed", "abc"), ["invalid"]),
]


@pytest.mark.parametrize("edit, words", [c[1:] for c in METADATA_CASES],
                         ids=[c[0] for c in METADATA_CASES])
def test_invalid_metadata_raises_checkpoint_error(tmp_path, edit, words):
    arrays, meta = _payload_parts(_trained())
    edit(arrays, meta)
    path = _write(tmp_path, arrays, meta)
    with pytest.raises(xn.CheckpointError) as info:
        xn.load(path)
    for word in words:
        assert word in str(info.value), f"{word!r} not in {info.value}"


@pytest.mark.parametrize("junk", [None, 0, -1, 1.5, "x", [], {}, [1, 2], {"a": 1}, True])
def test_every_metadata_field_of_any_type_loads_or_raises_checkpoint_error(tmp_path, junk):
    """Structural fuzz: each field (and each layer's field) replaced by values of other types."""
    model = _trained()
    original = _host(model)
    arrays, meta = _payload_parts(model)
    targets = [(meta, k) for k in meta if k != "sha256"]
    targets += [(spec, k) for spec in meta["layers"] for k in spec]
    targets += [(meta["optimizer"], k) for k in meta["optimizer"]]
    for i, (owner, key) in enumerate(targets):
        saved = owner[key]
        owner[key] = junk
        path = _write(tmp_path, arrays, meta, name=f"f{i}.npz")
        owner[key] = saved
        try:
            loaded = xn.load(path)
        except xn.CheckpointError:
            continue
        assert _same(_host(loaded), original), f"{key}={junk!r} gave a different model"
