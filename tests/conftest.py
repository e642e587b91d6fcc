"""One backend fixture over the backend table; missing libraries and devices are skips."""

from __future__ import annotations

import os

# float64 gradient checks run on every backend, and JAX only has float64 in x64 mode; float32
# behaviour is unchanged by it (Python scalars are weakly typed). Must be set before jax loads.
os.environ.setdefault("JAX_ENABLE_X64", "1")

import pytest  # noqa: E402

import xpnet as xn  # noqa: E402
from xpnet.backend import NAMES, BackendError  # noqa: E402

try:  # one torch thread: two OpenMP threads on a shared 2-core box stall (ARRAY_API_NOTES 13)
    import torch

    torch.set_num_threads(1)
except ImportError:
    pass

CPU_BACKENDS = [n for n in NAMES if n != "cupy"]
# The device the backend fixtures give torch: XPNET_TEST_TORCH_DEVICE=cuda runs every
# fixture's torch case on the GPU (bench/gpu_suite.py does); unset, the CPU.
TORCH_DEVICE = os.environ.get("XPNET_TEST_TORCH_DEVICE") or None


def _backend_or_skip(name: str, device=None, dtype=None) -> xn.Backend:
    if name == "torch" and device is None:
        device = TORCH_DEVICE
    try:
        return xn.backend.get(name, device, dtype)
    except BackendError as exc:
        pytest.skip(f"backend {name!r} unavailable here: {exc}")


@pytest.fixture(params=NAMES)
def backend(request) -> xn.Backend:
    """Each backend of the table (float32), skipped with the reason when unusable here."""
    return _backend_or_skip(request.param)


@pytest.fixture(params=NAMES)
def backend64(request) -> xn.Backend:
    """Each backend of the table in float64, for finite-difference gradient checks."""
    return _backend_or_skip(request.param, dtype="float64")


@pytest.fixture
def gpu_backend(request) -> xn.Backend:
    """cupy on the first CUDA device, or a skip saying there is none."""
    return _backend_or_skip("cupy")


@pytest.fixture(autouse=True)
def _restore_backend():
    """Tests that call xn.use() or xn.fast_paths() must not leak into later tests."""
    table = xn.backend.table
    before = table._local.__dict__.get("backend")
    precision = table._local.__dict__.get("precision")
    fast = table._fast_local.__dict__.get("enabled")
    yield
    table._local.backend = before
    table._local.precision = precision
    table._fast_local.enabled = fast


def _no_gpu_reason() -> str | None:
    """None when some backend sees a CUDA device (cupy, or torch with device='cuda')."""
    reasons = []
    for name, device in (("cupy", None), ("torch", "cuda")):
        try:
            xn.backend.get(name, device)
            return None
        except BackendError as exc:
            reasons.append(str(exc))
    return "no CUDA device: " + "; ".join(reasons)


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if "gpu" in item.keywords]
    reason = _no_gpu_reason() if gpu_items else None
    if reason is None:
        return  # tests that need cupy itself also use the gpu_backend fixture, which skips
    for item in gpu_items:
        item.add_marker(pytest.mark.skip(reason=reason))


def pytest_terminal_summary(terminalreporter):
    """Skips by reason, one line each with a count (pytest's own -rs lists every skipped
    location: hundreds of lines that bury the failures)."""
    reasons: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reason = reason.removeprefix("Skipped: ")
        reasons[reason] = reasons.get(reason, 0) + 1
    if reasons:
        terminalreporter.section("skipped, by reason")
        for reason, count in sorted(reasons.items(), key=lambda item: -item[1]):
            terminalreporter.write_line(f"{count:5d}  {reason}")
