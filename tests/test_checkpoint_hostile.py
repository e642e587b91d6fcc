"""Loading hostile checkpoints: sealed files (anyone can seal) built to exhaust or confuse.

Every file here passes the SHA-256 seal, so what is tested is the structure behind it.
Each refusal must be a CheckpointError naming the path and what is wrong, leave the files
on disk as they were, and allocate little (numpy reports its buffers to tracemalloc).
"""

from __future__ import annotations

import json
import zipfile

import checkpoint_forge as forge
import numpy as np
import pytest

import xpnet as xn
from xpnet.io import checkpoint as xio

MB = 1 << 20
GIB = 1 << 30
SIZES = [16, 64, 8]


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> bytes:
    """A valid checkpoint with Adam state (13 members)."""
    rng = np.random.default_rng(0)
    model = xn.mlp(SIZES, seed=0, backend="numpy")
    model.fit(rng.standard_normal((32, SIZES[0])), rng.integers(0, SIZES[-1], 32),
              loss="cross_entropy", optimizer=xn.Adam(lr=1e-2), epochs=1, batch_size=8)
    path = tmp_path_factory.mktemp("good") / "m.npz"
    model.save(path)
    return path.read_bytes()


def _refused(tmp_path, raw: bytes, *words: str, peak_under: int = 10 * MB) -> str:
    """Load ``raw`` from a file; assert a CheckpointError naming the path and ``words``, the
    folder unchanged, and a peak allocation under ``peak_under``. Returns the message."""
    path = tmp_path / "hostile.npz"
    path.write_bytes(raw)
    before = sorted(p.name for p in tmp_path.iterdir())
    result, peak = forge.peak_allocation(xn.load, path, backend="numpy")
    assert isinstance(result, xn.CheckpointError), f"{type(result).__name__}: {result}"
    message = str(result)
    for word in (str(path), *words):
        assert word in message, f"{word!r} not in {message!r}"
    assert path.read_bytes() == raw
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert peak < peak_under, f"peak {peak / MB:.1f} MB refusing: {message}"
    return message


def _with_meta(good: bytes, edit) -> bytes:
    """``good`` with its metadata edited by ``edit(meta)`` (the arrays' digest kept valid
    unless ``edit`` changes it)."""
    arrays, meta = forge.arrays_and_meta(good)
    meta["sha256"] = xio._digest(arrays)
    edit(meta)
    return forge.encode(arrays, meta, fix_digest=False)


def _replace_member(good: bytes, name: str, data: bytes | None) -> list:
    members = [(n, d) for n, d in forge.members_of(good) if n != name]
    return members + ([(name, data)] if data is not None else [])


# --------------------------------------------------------------------------- zip bombs


@pytest.fixture(scope="module")
def bomb() -> tuple[bytes, int, int]:
    """1 GiB of zeros after a .npy header, deflated to about 1 MB."""
    return forge.deflate_bomb((GIB // 4,), GIB)


def test_a_deflated_member_that_honestly_claims_1_gib_is_refused_unread(tmp_path, good, bomb):
    data, crc, size = bomb
    entries = [(n, d) for n, d in forge.members_of(good) if n != "param/0.W.npy"]
    entries.append(("param/0.W.npy", data, zipfile.ZIP_DEFLATED, crc, size))
    _refused(tmp_path, forge.seal(forge.raw_zip(entries)), "param/0.W.npy", "compressed")


def test_a_deflated_member_whose_header_claims_its_declared_size_is_refused(
        tmp_path, good, bomb):
    data, crc, _ = bomb
    entries = [(n, d) for n, d in forge.members_of(good) if n != "param/0.W.npy"]
    entries.append(("param/0.W.npy", data, zipfile.ZIP_DEFLATED, crc, 128 + 16 * 64 * 4))
    _refused(tmp_path, forge.seal(forge.raw_zip(entries)), "param/0.W.npy", "compressed")


def test_a_compressed_metadata_member_is_refused(tmp_path, good):
    raw = forge.forge(forge.members_of(good), compress=zipfile.ZIP_DEFLATED)
    _refused(tmp_path, raw, "compressed")


def test_a_stored_member_claiming_1_gib_in_a_small_file_is_refused(tmp_path, good):
    raw = forge.patch_entry(good, 0, csize=GIB, usize=GIB)
    _refused(tmp_path, raw, "param/0.W.npy", "claim")


def test_metadata_member_claiming_more_than_a_mib_is_refused_unread(tmp_path, good):
    meta_at = [n for n, _ in forge.members_of(good)].index("__xpnet__.npy")
    raw = forge.patch_entry(good, meta_at, csize=2 * MB, usize=2 * MB)
    _refused(tmp_path, raw, "__xpnet__.npy")


def test_a_header_claiming_less_than_the_member_stores_is_refused(tmp_path, good):
    raw = forge.patch_entry(good, 1, usize=16)  # compressed size stays: they disagree
    _refused(tmp_path, raw, "param/0.b.npy", "claims 16 bytes")


def test_a_directory_listing_more_members_than_any_checkpoint_is_refused_unparsed(tmp_path):
    one = forge.npy(np.zeros(1, "float32"))
    entries = [(f"param/{i}.W.npy", one) for i in range(12_000)]
    message = _refused(tmp_path, forge.seal(forge.raw_zip(entries)), "12000 members",
                       peak_under=3 * MB)  # zipfile would keep ~6 MB of entries
    assert "at most 10001" in message


def test_a_directory_larger_than_its_entries_need_is_refused_unparsed(tmp_path, good):
    _, end_at, _ = forge.directory(forge.unseal(good))
    body = forge.unseal(good)
    offset = forge.END.unpack_from(body, end_at)[6]
    raw = forge.seal(body[:offset] + b"\0" * (4 * MB) + body[offset:end_at]
                     + forge.END.pack(*[*forge.END.unpack_from(body, end_at)][:5],
                                      end_at - offset + 4 * MB, offset, 0))
    _refused(tmp_path, raw, "zip directory")


def test_junk_before_the_zip_is_refused(tmp_path, good):
    raw = forge.seal(b"\0" * 1000 + forge.unseal(good))  # zipfile would adjust every offset
    _refused(tmp_path, raw, "directory is not where")


def test_a_file_far_larger_than_its_declared_model_is_refused_before_hashing(tmp_path, good):
    body = forge.unseal(good)
    offset, end_at, _ = forge.directory(body)
    junk = b"\0" * (8 * MB)  # hidden between the last member and the directory
    fields = list(forge.END.unpack_from(body, end_at))
    fields[6] += len(junk)
    raw = forge.seal(body[:offset] + junk + body[offset:end_at] + forge.END.pack(*fields))
    _refused(tmp_path, raw, "can account for")


# --------------------------------------------------------------------------- members


def test_a_member_that_is_not_npy_is_refused(tmp_path, good):
    raw = forge.forge([*forge.members_of(good), ("notes.txt", b"hello")])
    _refused(tmp_path, raw, "'notes.txt'", "not a .npy")


def test_an_unknown_member_is_refused(tmp_path, good):
    raw = forge.forge([*forge.members_of(good), ("weights/0.W.npy", forge.npy(np.zeros(3)))])
    _refused(tmp_path, raw, "'weights/0.W.npy'", "unexpected member")


def test_a_duplicated_member_is_refused(tmp_path, good):
    members = forge.members_of(good)
    raw = forge.forge([*members, members[0]])
    _refused(tmp_path, raw, "'param/0.W.npy'", "twice")


def test_optimizer_state_for_a_parameter_the_model_lacks_is_refused(tmp_path, good):
    extra = ("opt/7.W/m.npy", forge.npy(np.zeros((2, 2), "float32")))
    _refused(tmp_path, forge.forge([*forge.members_of(good), extra]), "7.W/m", "unexpected")


@pytest.mark.parametrize("trail", [-100, 1000], ids=["short", "long"])
def test_npy_header_shape_disagreeing_with_the_member_size_is_refused(tmp_path, good, trail):
    data = dict(forge.members_of(good))["param/0.W.npy"]
    data = data[:trail] if trail < 0 else data + b"\0" * trail
    raw = forge.forge(_replace_member(good, "param/0.W.npy", data))
    _refused(tmp_path, raw, "param/0.W.npy", "after its .npy header")


@pytest.mark.parametrize("header, words", [
    ("{'descr': '<f4', 'fortran_order': False, 'shape': (16, 3), }", ["(16, 3)", "(16, 64)"]),
    ("{'descr': '<f8', 'fortran_order': False, 'shape': (16, 64), }", ["float64"]),
    ("{'descr': '|O', 'fortran_order': False, 'shape': (16, 64), }", ["unpickl"]),
    ("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (16, 64), }", ["dtype"]),
    ("{'descr': '<f4', 'shape': (16, 64), }", ["no valid .npy header"]),
    ("[" * 3000, ["no valid .npy header"]),
    ("{'descr': '<f4', 'fortran_order': False, 'shape': (" + "9" * 3000 + ",), }",
     ["does not fit", "999..."]),
    ("{'descr': '<f4', 'fortran_order': False, 'shape': (" + "9" * 5000 + ",), }",
     ["no valid .npy header"]),
    ("{'descr': '<f4', 'fortran_order': 0, 'shape': (16, 64), }", ["no valid .npy header"]),
], ids=["shape", "dtype", "object", "structured", "keys", "nesting", "huge", "too long",
        "fortran"])
def test_npy_headers_that_disagree_or_do_not_parse_are_refused(tmp_path, good, header, words):
    data = forge.npy_with_header(header, bytes(16 * 64 * 4))
    raw = forge.forge(_replace_member(good, "param/0.W.npy", data))
    _refused(tmp_path, raw, "param/0.W.npy", *words)


def test_an_npy_header_claiming_4_gib_of_header_is_refused_reading_a_few_kb(tmp_path, good):
    data = b"\x93NUMPY\x02\x00" + (0xFFFFFFFF).to_bytes(4, "little") + bytes(32 * 1024)
    raw = forge.forge(_replace_member(good, "param/0.W.npy", data))
    _refused(tmp_path, raw, "param/0.W.npy", "no valid .npy header")


def test_an_encrypted_member_is_refused(tmp_path, good):
    _refused(tmp_path, forge.patch_entry(good, 0, flags=1), "param/0.W.npy", "encrypted")


def test_a_local_header_naming_another_member_is_refused(tmp_path, good):
    body = forge.unseal(good)
    at = forge.directory(body)[2][0][1][forge.E_OFFSET]
    name_at = at + forge.LOCAL.size
    raw = forge.seal(body[:name_at] + b"param/9.W.npy" + body[name_at + 13:])
    _refused(tmp_path, raw, "param/0.W.npy")


@pytest.mark.parametrize("field, value", [("method", 8), ("crc", 0), ("flags", 1)])
def test_a_local_header_disagreeing_with_the_directory_is_refused(tmp_path, good, field,
                                                                   value):
    """zipfile reads by the directory entry; other readers by the local header: a file
    that two readers would read differently is refused."""
    raw = forge.patch_local(good, 0, **{field: value})
    _refused(tmp_path, raw, "param/0.W.npy", "local header")


@pytest.mark.parametrize("field", ["nlen", "xlen", "clen"])
def test_a_directory_entry_running_past_the_directory_is_refused(tmp_path, good, field):
    """zipfile quietly cuts the last entry's name, extra or comment at the directory's end."""
    last = len(forge.members_of(good)) - 1
    entry = forge.directory(forge.unseal(good))[2][last][1]
    raw = forge.patch_entry(good, last, **{field: entry[getattr(forge, f"E_{field.upper()}")]
                                           + 500})
    _refused(tmp_path, raw, "__xpnet__.npy", "directory entry")


def test_a_zip64_end_record_as_save_writes_past_4_gib_loads(tmp_path, good):
    path = tmp_path / "m.npz"
    path.write_bytes(forge.with_zip64_end(good))
    (tmp_path / "good.npz").write_bytes(good)
    loaded, reference = xn.load(path, backend="numpy"), xn.load(tmp_path / "good.npz")
    for k, v in reference.params.items():
        np.testing.assert_array_equal(loaded.params[k], v)


# --------------------------------------------------------------------------- declared model


def _declaring(good, layers: list, arrays=None) -> bytes:
    """Metadata declaring ``layers`` (no optimizer) around ``arrays`` (default: good's)."""
    held, meta = forge.arrays_and_meta(good)
    held = {k: v for k, v in held.items() if k.startswith("param/")} if arrays is None else arrays
    meta.update(layers=layers, optimizer=None)
    return forge.encode(held, meta)


def _dense(n_in, n_out):
    return {"type": "Dense", "config": {"n_in": n_in, "n_out": n_out, "init": None,
                                        "bias": True}}


def test_metadata_declaring_dense_12000_by_12000_with_tiny_arrays_is_refused(tmp_path, good):
    arrays = {"param/0.W": np.zeros((2, 2), "float32"), "param/0.b": np.zeros(2, "float32")}
    message = _refused(tmp_path, _declaring(good, [_dense(12000, 12000)], arrays),
                       "576.0 MB", "Dense(n_in=12000, n_out=12000")
    assert "the file is only" in message


def test_metadata_declaring_dense_a_million_squared_is_refused_without_memory_error(
        tmp_path, good):
    arrays = {"param/0.W": np.zeros((2, 2), "float32"), "param/0.b": np.zeros(2, "float32")}
    _refused(tmp_path, _declaring(good, [_dense(10**6, 10**6)], arrays), "4000.0 GB")


def test_metadata_declaring_widths_with_thousands_of_digits_is_refused(tmp_path, good):
    arrays = {"param/0.W": np.zeros((2, 2), "float32"), "param/0.b": np.zeros(2, "float32")}
    message = _refused(tmp_path, _declaring(good, [_dense(10**4000, 2)], arrays),
                       "about 10^4000 bytes")
    assert len(message) < 500


def test_a_model_larger_than_this_machine_is_refused_with_both_sizes(tmp_path, good,
                                                                     monkeypatch):
    monkeypatch.setattr(xio, "_physical_memory", lambda: 1000)
    _refused(tmp_path, good, "19.3 KB", "1.0 KB of memory")


def test_running_out_of_memory_reading_arrays_is_a_checkpoint_error(tmp_path, good,
                                                                    monkeypatch):
    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(xio, "_read_arrays", exhausted)
    _refused(tmp_path, good, "not enough memory", "19.3 KB")


def test_running_out_of_memory_building_the_model_is_a_checkpoint_error(tmp_path, good,
                                                                        monkeypatch):
    from xpnet import model as xmodel

    def exhausted(self, mapping, what):
        raise MemoryError

    monkeypatch.setattr(xmodel.Sequential, "_stage", exhausted)  # copying in the parameters
    _refused(tmp_path, good, "not enough memory", "19.3 KB")


def _set(key, value):
    def edit(meta):
        meta[key] = value
    return edit


def _set_layer(index, key, value):
    def edit(meta):
        meta["layers"][index]["config"][key] = value
    return edit


def _set_opt(key, value):
    def edit(meta):
        meta["optimizer"][key] = value
    return edit


JUNK_METADATA = [
    ("width as a string", _set_layer(0, "n_in", "16"), ["layer 0", "n_in"]),
    ("negative width", _set_layer(0, "n_out", -64), ["layer 0", "n_out"]),
    ("zero width", _set_layer(2, "n_in", 0), ["layer 2", "n_in"]),
    ("bool width", _set_layer(0, "n_in", True), ["layer 0", "n_in"]),
    ("float width", _set_layer(0, "n_in", 16.0), ["layer 0", "n_in"]),
    ("huge width", _set_layer(0, "n_in", 10**30), ["about 10^"]),
    ("nested junk width", _set_layer(0, "n_in", {"a": [{"b": []}]}), ["layer 0", "n_in"]),
    ("nested junk init", _set_layer(0, "init", [[{}]]), ["layer 0"]),
    ("unknown init", _set_layer(0, "init", "orthogonal"), ["layer 0", "orthogonal"]),
    ("unknown config key", _set_layer(0, "units", 3), ["layer 0", "units"]),
    ("unknown layer type", lambda m: m["layers"][1].update(type="Conv2d"), ["Conv2d"]),
    ("layer type not a str", lambda m: m["layers"][1].update(type=["ReLU"]), ["layer 1"]),
    ("layer with extra key", lambda m: m["layers"][1].update(name="x"), ["layer 1"]),
    ("layers a dict", _set("layers", {"0": "Dense"}), ["layers"]),
    ("layers nested lists", _set("layers", [[[[]]]]), ["layer 0"]),
    ("unknown optimizer", _set_opt("type", "RMSprop"), ["RMSprop"]),
    ("optimizer a list", _set("optimizer", ["Adam"]), ["optimizer"]),
    ("optimizer config junk", _set_opt("config", {"lr": "fast"}), ["lr"]),
    ("optimizer config not a dict", _set_opt("config", [0.1]), ["config"]),
    ("optimizer missing iterations", lambda m: m["optimizer"].pop("iterations"),
     ["optimizer"]),
    ("iterations a bool", _set_opt("iterations", True), ["iterations"]),
    ("iterations a float", _set_opt("iterations", 2.0), ["iterations"]),
    ("iterations negative", _set_opt("iterations", -1), ["iterations"]),
    ("seed a bool", _set("seed", False), ["seed"]),
    ("seed negative", _set("seed", -5), ["seed"]),
    ("seed a list", _set("seed", [1, 2]), ["seed"]),
    ("dtype a list", _set("dtype", ["float32"]), ["dtype"]),
    ("dtype float16", _set("dtype", "float16"), ["float16"]),
    ("version a string", _set("version", "1"), ["version '1'"]),
    ("version a bool", _set("version", True), ["version True"]),
    ("sha256 not a str", _set("sha256", 12), ["sha256"]),
    ("extra field", _set("author", "mallory"), ["unexpected fields", "author"]),
    ("missing seed", lambda m: m.pop("seed"), ["lacks", "seed"]),
]


@pytest.mark.parametrize("edit, words", [c[1:] for c in JUNK_METADATA],
                         ids=[c[0] for c in JUNK_METADATA])
def test_metadata_of_the_wrong_type_or_value_is_refused(tmp_path, good, edit, words):
    _refused(tmp_path, _with_meta(good, edit), *words)


@pytest.mark.parametrize("text, words", [
    ("[" * 100_000 + "]" * 100_000, ["JSON"]),
    ("1" * 5000, ["JSON"]),
    ("{", ["JSON"]),
    ('"xpnet"', ["no xpnet metadata"]),
    ("null", ["no xpnet metadata"]),
], ids=["deep nesting", "5000-digit int", "truncated", "a string", "null"])
def test_metadata_that_is_not_a_json_object_is_refused(tmp_path, good, text, words):
    raw = forge.forge(_replace_member(good, "__xpnet__.npy", forge.meta_member(text)))
    _refused(tmp_path, raw, *words)


def test_metadata_that_is_not_a_string_is_refused(tmp_path, good):
    raw = forge.forge(_replace_member(good, "__xpnet__.npy", forge.npy(np.zeros(3))))
    _refused(tmp_path, raw, "__xpnet__.npy", "not a text string")


def test_a_file_without_metadata_is_refused(tmp_path, good):
    raw = forge.forge(_replace_member(good, "__xpnet__.npy", None))
    _refused(tmp_path, raw, "no xpnet metadata")


# --------------------------------------------------------------------------- valid files


def _peak_loading(tmp_path, model) -> tuple[int, int]:
    """(peak bytes traced loading ``model``'s checkpoint, the model's array bytes)."""
    path = tmp_path / "big.npz"
    model.save(path)
    xn.load(path, backend="numpy")  # imports and caches outside the measurement
    loaded, peak = forge.peak_allocation(xn.load, path, backend="numpy")
    assert not isinstance(loaded, Exception), loaded
    arrays = list(model.params.values())
    if model.optimizer is not None:
        arrays += list(model.optimizer.state_arrays().values())
    return peak, sum(a.nbytes for a in arrays)


def test_a_valid_load_allocates_about_twice_the_model(tmp_path):
    peak, size = _peak_loading(tmp_path, xn.mlp([512, 1024, 512], seed=0, backend="numpy"))
    # the arrays read (1x) + the model's parameter buffer they are copied into (1x): the
    # model is built from them (Sequential(params=...)), no initial weights are drawn
    assert peak < 2.3 * size, f"peak {peak / MB:.1f} MB for a {size / MB:.1f} MB model"


def test_a_valid_load_with_adam_state_allocates_at_most_three_times_the_model(tmp_path):
    rng = np.random.default_rng(0)
    model = xn.mlp([512, 1024, 512], seed=0, backend="numpy")
    model.fit(rng.standard_normal((8, 512)), rng.integers(0, 512, 8), loss="cross_entropy",
              optimizer=xn.Adam(), epochs=1, batch_size=8)
    peak, size = _peak_loading(tmp_path, model)
    assert peak < 3 * size, f"peak {peak / MB:.1f} MB for {size / MB:.1f} MB of arrays"


def test_a_fortran_ordered_array_loads(tmp_path, good):
    arrays, meta = forge.arrays_and_meta(good)
    arrays["param/0.W"] = np.asfortranarray(arrays["param/0.W"])
    path = tmp_path / "f.npz"
    path.write_bytes(forge.encode(arrays, meta))
    np.testing.assert_array_equal(xn.load(path, backend="numpy").params["0.W"],
                                  arrays["param/0.W"])


def test_the_metadata_forge_round_trips(tmp_path, good):
    """The helpers themselves: re-encoding good's parts gives a file that loads the same."""
    arrays, meta = forge.arrays_and_meta(good)
    path = tmp_path / "again.npz"
    path.write_bytes(forge.encode(arrays, meta))
    assert json.loads(json.dumps(meta))["format"] == "xpnet"
    assert xn.load(path, backend="numpy").optimizer.iterations == meta["optimizer"]["iterations"]
    path.write_bytes(forge.forge(forge.members_of(good)))
    assert xn.load(path, backend="numpy").optimizer.iterations == meta["optimizer"]["iterations"]


# --------------------------------------------------------------------------- limits


@pytest.mark.parametrize("layers, words", [
    (lambda: [xn.Dense(1, 1) for _ in range(5001)], ["10002 arrays", "at most 10000"]),
    (lambda: [xn.Dense(2, 2)] + [xn.ReLU() for _ in range(9000)], ["description"]),
], ids=["arrays", "metadata"])
def test_save_refuses_a_model_beyond_what_load_reads(tmp_path, layers, words):
    path = tmp_path / "deep.npz"
    with pytest.raises(ValueError) as info:
        xn.Sequential(*layers(), backend="numpy").save(path)
    for word in (str(path), *words):
        assert word in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_a_3000_layer_model_saves_and_loads(tmp_path):
    """Both limits leave room: 6000 arrays, about 1 MB of description (UTF-32 JSON)."""
    model = xn.Sequential(*[xn.Dense(1, 1) for _ in range(3000)], backend="numpy")
    model.save(tmp_path / "deep.npz")
    assert len(xn.load(tmp_path / "deep.npz", backend="numpy").params) == 6000
