"""Checkpoint fuzzer: structure-aware mutations of valid checkpoints, re-sealed, loaded.

Starting from files that ``save`` wrote (a few architectures, without optimizer state,
with Adam, with SGD momentum), each family below mutates one layer of the format: the
metadata JSON (values, types, keys, raw text), the arrays (values, shapes, dtypes, names),
the .npy headers, the zip directory, local headers and end record, or plain bytes; then
the file is sealed again, as an attacker would, so the checks behind the seal are what is
exercised. Whatever a case holds, ``load`` must return a model or raise CheckpointError,
nothing else, must leave the file as it was, and must stay within the allocation bound
(tracemalloc, every case). Deterministic: every family draws from its own seeded
generator. About 2,000 cases, about 15 s on a 2-core machine.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import json
import struct
import zipfile
import zlib

import checkpoint_forge as forge
import numpy as np
import pytest

import xpnet as xn
from xpnet.io import checkpoint as xio

SEED = 9
MB = 1 << 20
JUNK = [None, True, False, 0, 1, -1, 3, 2**31, 2**63, 10**30, -(10**30), 0.5, -2.5, 1e308,
        float("nan"), float("inf"), "", "x", "float32", "Dense", "Adam", [], [1, 2], [[[]]],
        {}, {"a": 1}, {"type": "Dense", "config": {}}, [None] * 3, "9" * 400]


def _bound(raw: bytes) -> int:
    """What any load of ``raw`` may allocate: a few times the file, plus fixed overhead
    (zipfile's directory, JSON, the model's Python objects, hashing buffers)."""
    return 4 * len(raw) + 4 * MB


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> list[bytes]:
    """Valid checkpoints: no optimizer; Adam; SGD momentum (float64, more layer types);
    plain SGD after steps (an optimizer with no state)."""
    folder = tmp_path_factory.mktemp("bases")
    rng = np.random.default_rng(SEED)

    def trained(model, optimizer, n_in, n_out):
        X = rng.standard_normal((16, n_in))
        model.fit(X, rng.integers(0, n_out, 16), loss="cross_entropy", optimizer=optimizer,
                  epochs=1, batch_size=8)
        return model

    models = [
        xn.mlp([6, 10, 4], seed=1, backend="numpy"),
        trained(xn.mlp([5, 8, 3], seed=2, backend="numpy"), xn.Adam(lr=0.01), 5, 3),
        trained(xn.Sequential(xn.Dense(4, 5), xn.LeakyReLU(0.2), xn.Dropout(0.3),
                              xn.Dense(5, 3), xn.Tanh(), xn.Dense(3, 2, bias=False), seed=3,
                              backend="numpy", dtype="float64"),
                xn.SGD(lr=0.1, momentum=0.9, nesterov=True), 4, 2),
        trained(xn.mlp([3, 4, 2], seed=4, backend="numpy", dtype="float64"),
                xn.SGD(lr=0.1), 3, 2),
    ]
    out = []
    for i, model in enumerate(models):
        model.save(folder / f"{i}.npz")
        out.append((folder / f"{i}.npz").read_bytes())
    return out


# --------------------------------------------------------------------------- helpers


def _pick(rng, items):
    return items[int(rng.integers(len(items)))]


def _nodes(value, path=()):
    """Every (path, value) in a JSON tree, the root included."""
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _nodes(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _nodes(v, (*path, i))


def _set_at(tree, path, value):
    if not path:
        return value
    owner = tree
    for key in path[:-1]:
        owner = owner[key]
    owner[path[-1]] = value
    return tree


def _junk(rng):
    return copy.deepcopy(_pick(rng, JUNK))


def _replace(members, name, data):
    return [(n, data if n == name else d) for n, d in members]


# --------------------------------------------------------------------------- mutations


def mutate_meta_value(rng, raw):
    """One node of the metadata (any depth) replaced by a value of another type."""
    arrays, meta = forge.arrays_and_meta(raw)
    path, _ = _pick(rng, list(_nodes(meta))[1:])
    if path == ("sha256",) and rng.random() < 0.7:
        path = ("seed",)
    meta = _set_at(meta, path, _junk(rng))
    return forge.encode(arrays, meta, fix_digest=path != ("sha256",))


def mutate_meta_keys(rng, raw):
    """A key deleted from, or added to, one dict of the metadata."""
    arrays, meta = forge.arrays_and_meta(raw)
    dicts = [p for p, v in _nodes(meta) if isinstance(v, dict) and v]
    path = _pick(rng, dicts)
    owner = meta
    for key in path:
        owner = owner[key]
    if rng.random() < 0.5:
        del owner[_pick(rng, sorted(owner))]
    else:
        owner[_pick(rng, ["extra", "n_in", "type", "config", "bias", "lr", "momentum"])] = (
            _junk(rng))
    return forge.encode(arrays, meta)


def mutate_meta_widths(rng, raw):
    """A Dense width (or bias flag) changed: sometimes consistent with the arrays, sometimes
    declaring far more than the file holds."""
    arrays, meta = forge.arrays_and_meta(raw)
    dense = [i for i, s in enumerate(meta["layers"]) if s["type"] == "Dense"]
    i = _pick(rng, dense)
    key = _pick(rng, ["n_in", "n_out", "bias", "n_in"])
    value = (not meta["layers"][i]["config"]["bias"]) if key == "bias" else _pick(
        rng, [1, 2, 7, 12000, 10**6, 2**40, 10**100])
    meta["layers"][i]["config"][key] = value
    if rng.random() < 0.3:  # make the arrays agree, so only the chain can be wrong
        for name in [n for n in arrays if n.startswith(f"param/{i}.")]:
            shape = [value if type(value) is int and value < 50 else 1]
            arrays[name] = np.zeros(shape * arrays[name].ndim, arrays[name].dtype)
    return forge.encode(arrays, meta)


def mutate_meta_text(rng, raw):
    """The metadata JSON text itself damaged: cut, a character replaced or inserted."""
    members = forge.members_of(raw)
    _, meta = forge.arrays_and_meta(raw)
    text = json.dumps(meta)
    at = int(rng.integers(len(text)))
    choice = int(rng.integers(4))
    char = _pick(rng, list('{}[]",:0-e. \\x\x00\u00e9\ud800'))
    if choice == 0:
        text = text[:at]
    elif choice == 1:
        text = text[:at] + char + text[at + 1:]
    elif choice == 2:
        text = text[:at] + char + text[at:]
    else:
        text = "[" * int(rng.integers(1, 50_000)) + text
    return forge.forge(_replace(members, "__xpnet__.npy", forge.meta_member(text)))


def mutate_array_values(rng, raw):
    """A value changed: with the digest recomputed (a valid file that may load) or not."""
    arrays, meta = forge.arrays_and_meta(raw)
    name = _pick(rng, sorted(arrays))
    a = arrays[name].copy()
    a.flat[int(rng.integers(a.size))] = _pick(rng, [0.0, 1e30, -7.5, np.nan, np.inf])
    arrays[name] = a
    return forge.encode(arrays, meta, fix_digest=rng.random() < 0.8)


def mutate_array_shapes(rng, raw):
    """An array replaced by one of another shape or dtype, dropped, or a stray one added."""
    arrays, meta = forge.arrays_and_meta(raw)
    name = _pick(rng, sorted(arrays))
    choice = int(rng.integers(4))
    if choice == 0:
        shape = tuple(int(s) for s in rng.integers(0, 5, int(rng.integers(0, 4))))
        arrays[name] = np.zeros(shape, arrays[name].dtype)
    elif choice == 1:
        arrays[name] = arrays[name].astype(_pick(rng, ["float16", "int64", "bool", "complex64",
                                                       "float32", "float64", "U3"]))
    elif choice == 2:
        del arrays[name]
    else:
        stray = _pick(rng, ["param/9.W", "opt/0.W/x", "opt/7.b/m", "param/0.W/m", "zz",
                            "param/", "opt/0.W", "param/-1.W", "param/0.w"])
        arrays[stray] = np.zeros(2, "float32")
    return forge.encode(arrays, meta)


def mutate_member_names(rng, raw):
    """A member renamed, duplicated, or an extra member (of any name) added."""
    members = forge.members_of(raw)
    i = int(rng.integers(len(members)))
    name, data = members[i]
    choice = int(rng.integers(3))
    others = ["PARAM/0.W.npy", "param/0.W", "param/0.W.npz", "../param/0.W.npy",
              "/param/0.W.npy", "param\\0.W.npy", "param/0.W.npy/", "__xpnet__.npy",
              "opt/0.W/m.npy", "param/0.W.npy\x00.txt", "param/é.npy", members[0][0]]
    if choice == 0:
        members[i] = (_pick(rng, others), data)
    elif choice == 1:
        members.insert(int(rng.integers(len(members) + 1)), (name, data))
    else:
        members.append((_pick(rng, others), _pick(rng, [data, b"", b"junk"])))
    return forge.forge(members)


def _npy_header_text(rng, data: bytes) -> str:
    arr_header = data[10:data.index(b"\n", 10)].decode("latin1")
    d = ast.literal_eval(arr_header)
    key = _pick(rng, ["descr", "fortran_order", "shape", "drop", "add", "garble"])
    if key == "descr":
        d["descr"] = _pick(rng, ["<f8", "<f4", "<i4", "|O", ">f4", "<U3", "|b1",
                                 [("a", "<f4")], "<f4" * 3, ("<f4", (2,)), "V8"])
    elif key == "fortran_order":
        d["fortran_order"] = _pick(rng, [True, 0, "no", None])
    elif key == "shape":
        shape = list(d["shape"]) or [1]
        j = int(rng.integers(len(shape)))
        shape[j] = _pick(rng, [0, 1, -1, shape[j] + 1, 2**40, 10**20, 2**62])
        d["shape"] = tuple(_pick(rng, [shape, shape + [1], shape[::-1], shape[:-1]]))
    elif key == "drop":
        del d[_pick(rng, sorted(d))]
    elif key == "add":
        d["extra"] = 1
    else:
        text = repr(d)
        at = int(rng.integers(len(text)))
        return text[:at] + _pick(rng, ["(", ")", "'", "{", "", "9" * 50]) + text[at + 1:]
    return repr(d)


def mutate_npy_headers(rng, raw):
    """A member's .npy header dict rewritten (shape, descr, fortran_order, keys, text), or
    its magic, version or header length field changed."""
    members = forge.members_of(raw)
    i = int(rng.integers(len(members)))
    name, data = members[i]
    body = data[data.index(b"\n", 10) + 1:]
    if rng.random() < 0.75:
        version = _pick(rng, [(1, 0), (1, 0), (2, 0)])
        data = forge.npy_with_header(_npy_header_text(rng, data), body, version)
    else:
        data = bytearray(data)
        at = _pick(rng, [0, 5, 6, 7, 8, 9])
        data[at] = int(rng.integers(256))
        data = bytes(data)
    members[i] = (name, data)
    return forge.forge(members)


_ENTRY_FIELDS = {"csize": None, "usize": None, "method": [8, 12, 14, 99, 1],
                 "flags": [1, 8, 0x20, 0x40, 0x800], "crc": None, "nlen": None, "xlen": None,
                 "clen": None, "offset": None}


def _field_value(rng, field, current):
    options = _ENTRY_FIELDS.get(field)
    if options is not None:
        return _pick(rng, options)
    limit = 0xFFFF if field in ("nlen", "xlen", "clen") else 0xFFFFFFFF
    value = _pick(rng, [current + 1, current - 1, current + 64, 0, limit,
                        current * 2, int(rng.integers(limit))])
    return min(max(value, 0), limit)


def mutate_zip_entries(rng, raw):
    """One central-directory or local-header field of one member changed."""
    _, _, entries = forge.directory(forge.unseal(raw))
    i = int(rng.integers(len(entries)))
    field = _pick(rng, sorted(_ENTRY_FIELDS))
    if rng.random() < 0.6 or field in ("offset", "clen"):
        current = entries[i][1][getattr(forge, f"E_{field.upper()}")]
        return forge.patch_entry(raw, i, **{field: _field_value(rng, field, current)})
    field = "usize" if field == "csize" and rng.random() < 0.5 else field
    body = forge.unseal(raw)
    local = forge.LOCAL.unpack_from(body, entries[i][1][forge.E_OFFSET])
    current = local[getattr(forge, f"L_{field.upper()}")]
    return forge.patch_local(raw, i, **{field: _field_value(rng, field, current)})


def mutate_zip_end(rng, raw):
    """The end record's counts, directory size or offset changed; or a zip64 end record
    added (valid, or with its counts changed)."""
    if rng.random() < 0.3:
        out = forge.with_zip64_end(raw)
        if rng.random() < 0.5:
            body = bytearray(forge.unseal(out))
            at = len(body) - forge.END.size - 20 - 56 + _pick(rng, [24, 32, 40, 48, 4, 12])
            body[at:at + 8] = struct.pack("<Q", int(rng.integers(2**40)))
            out = forge.seal(bytes(body))
        return out
    end_at = len(forge.unseal(raw)) - forge.END.size
    fields = forge.END.unpack_from(forge.unseal(raw), end_at)
    field = _pick(rng, ["entries", "entries_here", "dir_size", "dir_offset"])
    index = {"entries_here": 3, "entries": 4, "dir_size": 5, "dir_offset": 6}[field]
    limit = 0xFFFF if index < 5 else 0xFFFFFFFF
    value = _pick(rng, [fields[index] + 1, fields[index] - 1, 0, limit, 10_001,
                        int(rng.integers(limit))])
    return forge.patch_end(raw, **{field: min(max(value, 0), limit)})


def mutate_bytes(rng, raw):
    """Bytes of the zip flipped, cut, inserted or deleted anywhere, then sealed again (where
    the end record is no longer last, the tag and digest are appended as they are)."""
    body = bytearray(forge.unseal(raw))
    choice = int(rng.integers(4))
    at = int(rng.integers(len(body)))
    if choice == 0:
        for _ in range(int(rng.integers(1, 8))):
            body[int(rng.integers(len(body)))] ^= 1 << int(rng.integers(8))
    elif choice == 1:
        del body[at:at + int(rng.integers(1, 200))]
    elif choice == 2:
        body[at:at] = bytes(rng.integers(0, 256, int(rng.integers(1, 200)), dtype=np.uint8))
    else:
        body = body[:at]
    try:
        return forge.seal(bytes(body))
    except ValueError:  # no end record last: append a seal anyway
        return bytes(body) + xio._SEAL + hashlib.sha256(bytes(body)).hexdigest().encode()


def mutate_compression(rng, raw):
    """Members deflated (all, or one with headers claiming another size)."""
    members = forge.members_of(raw)
    if rng.random() < 0.5:
        return forge.forge(members, compress=_pick(rng, [zipfile.ZIP_DEFLATED,
                                                         zipfile.ZIP_BZIP2]))
    i = int(rng.integers(len(members)))
    name, data = members[i]
    z = zlib.compressobj(6, zlib.DEFLATED, -15)
    packed = z.compress(data) + z.flush()
    claimed = _pick(rng, [len(data), len(data) // 2, len(data) * 1000, 2**31])
    entries = [(n, d) for n, d in members if n != name]
    entries.append((name, packed, zipfile.ZIP_DEFLATED, zlib.crc32(data), claimed))
    return forge.seal(forge.raw_zip(entries))


MUTATIONS = [  # (family, cases): about 2,000 in all
    (mutate_meta_value, 300), (mutate_meta_keys, 150), (mutate_meta_widths, 120),
    (mutate_meta_text, 120), (mutate_array_values, 120), (mutate_array_shapes, 150),
    (mutate_member_names, 120), (mutate_npy_headers, 250), (mutate_zip_entries, 300),
    (mutate_zip_end, 100), (mutate_bytes, 250), (mutate_compression, 60),
]


def _load_case(path, raw: bytes):
    """(outcome, peak bytes): 'loaded' or 'refused'; anything else fails the test."""
    path.write_bytes(raw)
    result, peak = forge.peak_allocation(xn.load, path, backend="numpy")
    assert path.read_bytes() == raw, "load changed the file"
    if isinstance(result, xn.CheckpointError):
        assert str(path) in str(result), f"the message does not name the file: {result}"
        return "refused", peak
    if isinstance(result, BaseException):
        raise AssertionError(f"{type(result).__name__}: {result}") from result
    for name, shape in result.param_shapes().items():
        assert tuple(result.params[name].shape) == shape
    return "loaded", peak


@pytest.mark.parametrize("mutate, cases", MUTATIONS, ids=[m.__name__[7:] for m, _ in MUTATIONS])
def test_mutated_checkpoints_load_or_raise_checkpoint_error_within_the_bound(
        tmp_path, bases, mutate, cases):
    rng = np.random.default_rng([SEED, [m for m, _ in MUTATIONS].index(mutate)])
    path = tmp_path / "fuzz.npz"
    xn.load(_write(tmp_path, bases[0]), backend="numpy")  # imports outside the measurement
    outcomes, failures, highest = {"loaded": 0, "refused": 0}, [], 0
    for case in range(cases):
        raw = mutate(rng, _pick(rng, bases))
        try:
            outcome, peak = _load_case(path, raw)
            assert peak <= _bound(raw), f"peak {peak / MB:.1f} MB over the bound"
        except AssertionError as exc:
            failures.append(f"case {case}: {exc}")
            continue
        outcomes[outcome] += 1
        highest = max(highest, peak)
    print(f"{mutate.__name__}: {outcomes}, highest peak {highest / 1024:.0f} KB")  # with -s
    assert not failures, f"{len(failures)} of {cases} failed:\n" + "\n".join(failures[:10])
    assert outcomes["refused"] > 0


def _write(tmp_path, raw):
    path = tmp_path / "base.npz"
    path.write_bytes(raw)
    return path


def test_the_fuzzer_runs_at_least_1000_cases():
    assert sum(n for _, n in MUTATIONS) >= 1000


def test_every_base_checkpoint_loads(tmp_path, bases):
    for raw in bases:
        outcome, peak = _load_case(tmp_path / "base.npz", raw)
        assert outcome == "loaded" and peak <= _bound(raw)
