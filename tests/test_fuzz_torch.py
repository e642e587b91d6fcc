"""Property-based check of the hand-written backprop against PyTorch autograd, in float64.

hypothesis draws architectures (1-4 Dense layers of widths 1-64, any activation between
them and optionally after the last), a loss and a batch of 1-32; xpnet's loss and every
parameter gradient must agree with autograd to 1e-7 relative, with an absolute floor of
1e-9 of the array's largest entry (entries that cancel to ~0 carry no relative digits).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import xpnet as xn  # noqa: E402
from xpnet.nn.layers import ACTIVATIONS  # noqa: E402

F = torch.nn.functional
ACTIVATION_NAMES = sorted(set(ACTIVATIONS) - {"linear"})  # "linear" is "identity"
TORCH_ACTIVATIONS = {
    "relu": F.relu,
    "leaky_relu": lambda z: F.leaky_relu(z, 0.01),
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "gelu": lambda z: F.gelu(z, approximate="tanh"),
    "softmax": lambda z: torch.softmax(z, dim=-1),
    "identity": lambda z: z,
}
LOSSES = ["mse", "cross_entropy", "binary_cross_entropy"]


@st.composite
def problems(draw):
    depth = draw(st.integers(1, 4))
    widths = draw(st.lists(st.integers(1, 64), min_size=depth + 1, max_size=depth + 1))
    acts = draw(st.lists(st.sampled_from(ACTIVATION_NAMES), min_size=depth, max_size=depth))
    final = draw(st.booleans())  # an activation after the last Dense layer too
    loss = draw(st.sampled_from(LOSSES))
    batch = draw(st.integers(1, 32))
    backend = draw(st.sampled_from(["numpy", "torch"]))
    seed = draw(st.integers(0, 2**31 - 1))
    return widths, acts[:depth - 1] + ([acts[-1]] if final else []), loss, batch, backend, seed


def _xpnet_model(widths, acts, backend):
    layers = []
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(xn.Dense(n_in, n_out))
        if i < len(acts):
            layers.append(xn.nn.layers.activation(acts[i]))
    return xn.Sequential(*layers, seed=0, backend=backend, dtype="float64")


def _torch_loss(params, widths, acts, loss, X, y):
    Z = torch.asarray(X)
    for i in range(len(widths) - 1):
        Z = Z @ params[f"W{i}"] + params[f"b{i}"]
        if i < len(acts):
            Z = TORCH_ACTIVATIONS[acts[i]](Z)
    target = torch.asarray(y)
    if loss == "mse":
        return F.mse_loss(Z, target)
    if loss == "cross_entropy":
        return F.cross_entropy(Z, target)
    return F.binary_cross_entropy_with_logits(Z, target)


def _targets(rng, loss, batch, n_out):
    if loss == "cross_entropy":
        return rng.integers(0, n_out, batch)
    if loss == "binary_cross_entropy":
        return rng.random((batch, n_out))
    return rng.standard_normal((batch, n_out))


def _close(ours, ref, what):
    floor = 1e-9 * max(float(np.max(np.abs(ref))), 1e-300)
    np.testing.assert_allclose(ours, ref, rtol=1e-7, atol=floor, err_msg=what)


@settings(max_examples=40, deadline=None, database=None)
@given(problems())
def test_loss_and_gradients_match_torch_autograd(problem):
    widths, acts, loss, batch, backend, seed = problem
    rng = np.random.default_rng(seed)
    model = _xpnet_model(widths, acts, backend)
    # Random weights and biases (not the zero-bias init), scaled by 1/sqrt(fan_in) so that
    # pre-activations are about unit size: deep in saturation (|z| > ~4.5) a float64 GELU,
    # sigmoid or softmax derivative keeps fewer than 7 digits in any implementation (1 - y
    # cancels), and the comparison would measure exp/tanh rounding instead of backprop.
    host = {k: rng.standard_normal(tuple(v.shape)) / np.sqrt(v.shape[0] if k.endswith("W") else 4)
            for k, v in model.params.items()}
    model.set_params(host)
    X = rng.standard_normal((batch, widths[0]))
    y = _targets(rng, loss, batch, widths[-1])

    value, grads = model.loss_and_grads(X, y, loss=loss)

    dense = [i for i, layer in enumerate(model.layers) if isinstance(layer, xn.Dense)]
    params = {}
    for j, i in enumerate(dense):
        params[f"W{j}"] = torch.asarray(host[f"{i}.W"]).requires_grad_()
        params[f"b{j}"] = torch.asarray(host[f"{i}.b"]).requires_grad_()
    ref = _torch_loss(params, widths, acts, loss, X, y)
    ref.backward()

    _close(np.float64(value), ref.item(), "loss")
    for j, i in enumerate(dense):
        for name in ("W", "b"):
            ours = model.backend.to_numpy(grads[f"{i}.{name}"])
            _close(ours, params[f"{name}{j}"].grad.numpy(), f"{i}.{name} ({acts}, {loss})")
