"""``xn.set_num_threads`` reaches NumPy's BLAS and torch, and says what it needs."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import xpnet as xn

threadpoolctl = pytest.importorskip("threadpoolctl")


@pytest.fixture
def restore_threads():
    before = xn.get_num_threads()
    yield
    xn.set_num_threads(before.get("blas", 1))
    if "torch" in before:
        sys.modules["torch"].set_num_threads(before["torch"])


@pytest.mark.parametrize("n", [1, 2])
def test_set_num_threads_takes_effect_on_blas_and_torch(n, restore_threads):
    torch = pytest.importorskip("torch")
    got = xn.set_num_threads(n)
    blas = [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
    assert blas and set(blas) == {n}
    assert torch.get_num_threads() == n
    assert got["blas"] == n and got["torch"] == n
    a = np.ones((64, 64))
    assert float((a @ a)[0, 0]) == 64.0  # the BLAS still computes after the change


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", None])
def test_set_num_threads_refuses_what_is_not_a_count(bad):
    with pytest.raises(ValueError, match="set_num_threads: n must be an integer >= 1"):
        xn.set_num_threads(bad)


def test_missing_threadpoolctl_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # import now raises ImportError
    with pytest.raises(xn.BackendError, match="pip install threadpoolctl"):
        xn.set_num_threads(1)
