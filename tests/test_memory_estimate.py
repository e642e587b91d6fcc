"""backend.memory's estimate and check_fits: refuse, before allocating, what cannot fit."""

from __future__ import annotations

import types

import pytest

import xpnet as xn
from xpnet.backend import memory


def fake_backend(free=None, dtype_name="float32", is_gpu=False):
    """A stand-in Backend whose free memory the test decides (None: unknown)."""
    return types.SimpleNamespace(name="torch" if is_gpu else "numpy",
                                 device="cuda:0" if is_gpu else "cpu", dtype_name=dtype_name,
                                 item_bytes=8 if dtype_name == "float64" else 4,
                                 is_gpu=is_gpu, free_bytes=lambda: free)


def test_estimate_counts_every_part():
    # layers 3->4 (16 parameters) and 4->2 (10): 26 parameters of 4 bytes
    parts = memory.estimate_bytes([3, 4, 2], batch_size=5, item_bytes=4, optimizer_slots=2)
    assert parts == {"parameters": 104, "gradients": 104, "optimizer": 208,
                     "activations": 2 * 5 * (3 + 4 + 2) * 4, "snapshots": 0,
                     "total": 104 + 104 + 208 + 360}
    assert memory.estimate_bytes([3, 4, 2], 5, 4, 0)["optimizer"] == 0
    # each snapshot copies the parameters and the optimizer state
    with_two = memory.estimate_bytes([3, 4, 2], 5, 4, 2, snapshots=2)
    assert with_two["snapshots"] == 2 * (104 + 208)
    assert with_two["total"] == parts["total"] + 2 * (104 + 208)


@pytest.mark.parametrize("args", [
    ([3], 5, 4, 2), ([3, 0, 2], 5, 4, 2), ([3, 2.5, 2], 5, 4, 2), ([3, True, 2], 5, 4, 2),
    ([3, 4, 2], 0, 4, 2), ([3, 4, 2], 5, 0, 2), ([3, 4, 2], 5, 4, -1), ([3, 4, 2], 5, 4, 2, -1),
])
def test_estimate_refuses_nonsense(args):
    with pytest.raises(ValueError):
        memory.estimate_bytes(*args)


def test_check_fits_names_the_largest_layer_every_part_and_what_is_free():
    with pytest.raises(memory.OutOfMemoryError) as info:
        memory.check_fits(fake_backend(free=2**30), [2, 100_000, 100_000, 2], 32, 2, "train")
    message = str(info.value)
    assert isinstance(info.value, MemoryError)
    assert message.startswith("an MLP [2, 100000, 100000, 2] in float32 with batch size 32")
    assert "needs about 149.1 GiB to train" in message
    assert "dense layer 2 of 3 (100000 -> 100000, 10,000,100,000 parameters)" in message
    for part in ("parameters 37.3 GiB", "gradients 37.3 GiB", "optimizer state 74.5 GiB",
                 "activations of one batch", "only 1.0 GiB is free", "lower"):
        assert part in message, message
    assert "\n" not in message and "snapshots" not in message
    with pytest.raises(memory.OutOfMemoryError, match=r"snapshots 111\.8 GiB"):
        memory.check_fits(fake_backend(free=2**30), [2, 100_000, 100_000, 2], 32, 2, "train",
                          snapshots=1)


def test_check_fits_passes_what_fits_and_returns_the_estimate():
    estimate = memory.check_fits(fake_backend(free=2**30), [2, 64, 64, 2], 32, 2, "train")
    assert estimate["total"] == memory.estimate_bytes([2, 64, 64, 2], 32, 4, 2)["total"]
    # float64 doubles every part
    wide = memory.check_fits(fake_backend(free=2**30, dtype_name="float64"), [2, 64, 64, 2],
                             32, 2, "train")
    assert wide["total"] == 2 * estimate["total"]


def test_a_layer_too_large_to_index_is_refused_even_with_unknown_memory():
    with pytest.raises(memory.OutOfMemoryError, match=r"^cannot fit: dense layer 1 of 2 "
                                                      r"\(2000000 -> 1000000\).*2\*\*40"):
        memory.check_fits(fake_backend(free=None), [2_000_000, 1_000_000, 2], 1, 0, "fit")
    # unknown free memory and an indexable layer: nothing to refuse
    memory.check_fits(fake_backend(free=None), [2, 100_000, 100_000, 2], 32, 2, "fit")


def test_a_gpu_model_must_also_fit_on_the_host_while_its_weights_are_drawn(monkeypatch):
    monkeypatch.setattr(memory, "host_available_bytes", lambda: 2**30)
    gpu = fake_backend(free=2**40, is_gpu=True)
    with pytest.raises(memory.OutOfMemoryError, match=r"initial weights on the host.*only "
                                                      r"1\.0 GiB is free"):
        memory.check_fits(gpu, [2, 100_000, 100_000, 2], 32, 2, "train")
    memory.check_fits(gpu, [2, 1000, 1000, 2], 32, 2, "train")
    # a CPU backend's own check already counts the host
    memory.check_fits(fake_backend(free=2**40), [2, 100_000, 100_000, 2], 32, 2, "train")


def test_advice_ends_the_message():
    with pytest.raises(MemoryError, match=r"; lower --layers$"):
        memory.check_fits(fake_backend(free=10), [2, 8, 2], 1, 0, "train",
                          advice="lower --layers")


def test_available_bytes_prefers_the_backend_then_host_memory_on_cpus():
    assert memory.available_bytes(fake_backend(free=12345)) == 12345
    as_property = types.SimpleNamespace(is_gpu=False, free_bytes=777)
    assert memory.available_bytes(as_property) == 777

    def broken():
        raise RuntimeError("driver says no")

    assert memory.available_bytes(types.SimpleNamespace(is_gpu=False, free_bytes=broken)) is None
    no_method = types.SimpleNamespace(is_gpu=False)
    assert memory.available_bytes(no_method) == memory.host_available_bytes()
    assert memory.available_bytes(types.SimpleNamespace(is_gpu=True)) is None


def test_host_memory_is_read_on_linux():
    free = memory.host_available_bytes()
    if free is None:
        pytest.skip("no /proc/meminfo here")
    assert 2**20 < free < 2**60


def test_a_real_backend_answers():
    backend = xn.backend.get("numpy")
    assert memory.check_fits(backend, [2, 4, 2], 8, 2, "train")["total"] > 0


# --------------------------------------------------------------------------- building a model

WIDE = [("layer 0 (Dense 2 -> 100000, 300,000 parameters)", 300_000),
        ("layer 2 (Dense 100000 -> 100000, 10,000,100,000 parameters)", 10_000_100_000)]


def test_drawing_initial_weights_that_do_not_fit_is_refused_naming_the_largest_layer(
        monkeypatch):
    monkeypatch.setattr(memory, "host_available_bytes", lambda: 2**30)
    with pytest.raises(memory.OutOfMemoryError) as info:
        memory.check_init_fits(fake_backend(), WIDE, "Sequential")
    message = str(info.value)
    # on a CPU all of it is host memory: the parameters kept in float32 (37.3 GiB), the
    # largest layer in float64 while drawn (74.5 GiB) and the backend's copy (37.3 GiB)
    for part in ("Sequential: the initial weights need about 149.0 GiB of host memory",
                 "37.3 GiB of parameters in float32", "float64 one layer at a time",
                 "only 1.0 GiB is free", "the largest is layer 2 (Dense 100000 -> 100000"):
        assert part in message, message
    memory.check_init_fits(fake_backend(), WIDE[:1], "Sequential")  # 1.2 MiB fits


def test_a_gpu_model_needs_its_copy_on_the_device_and_the_draw_on_the_host(monkeypatch):
    monkeypatch.setattr(memory, "host_available_bytes", lambda: 2**40)
    with pytest.raises(memory.OutOfMemoryError, match=r"37\.3 GiB of torch \(cuda:0\) memory"):
        memory.check_init_fits(fake_backend(free=2**30, is_gpu=True), WIDE, "Sequential")
    memory.check_init_fits(fake_backend(free=2**40, is_gpu=True), WIDE, "Sequential")
    monkeypatch.setattr(memory, "host_available_bytes", lambda: 2**30)
    with pytest.raises(memory.OutOfMemoryError, match=r"111\.8 GiB of host memory"):
        memory.check_init_fits(fake_backend(free=2**40, is_gpu=True), WIDE, "Sequential")


def test_initial_weights_of_a_layer_too_large_to_index_are_refused_with_unknown_memory(
        monkeypatch):
    monkeypatch.setattr(memory, "host_available_bytes", lambda: None)
    with pytest.raises(memory.OutOfMemoryError, match=r"^Sequential: layer 0 .*2\*\*40"):
        memory.check_init_fits(fake_backend(), [("layer 0 (Dense)", 2**41)], "Sequential")
    memory.check_init_fits(fake_backend(), WIDE, "Sequential")  # unknown: nothing to refuse
    memory.check_init_fits(fake_backend(), [], "Sequential")  # no parameters at all


def test_a_built_model_is_not_counted_twice_nor_drawn_again(monkeypatch):
    widths = [2, 100_000, 100_000, 2]
    parts = memory.estimate_bytes(widths, 32, 4, 2, snapshots=1)
    free = parts["total"] - parts["parameters"] // 2  # enough once the parameters exist
    with pytest.raises(memory.OutOfMemoryError):
        memory.check_fits(fake_backend(free=free), widths, 32, 2, "fit", snapshots=1)
    memory.check_fits(fake_backend(free=free), widths, 32, 2, "fit", snapshots=1, built=True)
    with pytest.raises(memory.OutOfMemoryError, match="parameters are allocated already"):
        memory.check_fits(fake_backend(free=2**30), widths, 32, 2, "fit", built=True)
    # the host check of the initial draw is for models not yet built
    monkeypatch.setattr(memory, "host_available_bytes", lambda: 2**30)
    gpu = fake_backend(free=2**42, is_gpu=True)
    memory.check_fits(gpu, widths, 32, 2, "fit", built=True)
