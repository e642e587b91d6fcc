"""The training steps the benchmarks compare, each built as a ``common.Variant``.

- ``xpnet_variant``: ``xn.Step`` (the one training step ``fit`` calls) of an ``xn.mlp`` on one
  backend (SGD, softmax CE); eager on JAX.
- ``xpnet_jit_variant``: the same step traced once with ``jax.jit`` (JAX only),
  as ``fit`` runs it there; ``xpnet_variant`` on JAX stays the eager step, for comparison.
- ``xpnet_variant(..., graphs=True)``: the step captured once as a CUDA graph and replayed
  (torch on CUDA), as ``fit`` runs it there; the plain variant stays eager.
- ``torch_eager_variant``: ``nn.Sequential`` + ``CrossEntropyLoss`` + ``optim.SGD``.
- ``hand_variant``: the same step written by hand in NumPy (or CuPy), in place, no framework.
- ``gemm_variant``: only the step's matrix products with the library's own matmul: forward
  X @ W per layer, backward dW = A.T @ dY per layer and dX = dY @ W.T for all but the first.
  No step can be faster than this on the same library, so it is the lower bound.

All variants of one shape start from the same host-drawn data and float32 weights.
"""

from __future__ import annotations

import numpy as np
from common import Variant

LR = 0.01


def host_data(sizes, batch, seed=0):
    """Float32 inputs, integer labels and their one-hot rows, drawn on the host."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((batch, sizes[0]), dtype=np.float32)
    labels = rng.integers(0, sizes[-1], batch)
    T = np.zeros((batch, sizes[-1]), np.float32)
    T[np.arange(batch), labels] = 1.0
    return X, labels, T


def host_weights(sizes, seed=0):
    """He-uniform float32 weights (n_in, n_out) and zero biases."""
    rng = np.random.default_rng(seed)
    out = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=False):
        lim = float(np.sqrt(6.0 / n_in))
        out.append((rng.uniform(-lim, lim, (n_in, n_out)).astype(np.float32),
                    np.zeros(n_out, np.float32)))
    return out


def _blocker(backend, holder):
    """A sync for ``backend``; JAX is asynchronous, so block on the last results too."""
    if backend.name == "jax":
        import jax

        return lambda: jax.block_until_ready(holder[-1]) if holder else None
    return backend.sync


def _label(backend) -> str:
    if backend.name == "torch":
        return f"torch-{backend.device.type}"
    return backend.name


def group_of(backend) -> str:
    return "cuda" if backend.is_gpu else "cpu"


def _xpnet_model(backend, sizes, precision=None):
    import xpnet as xn

    model = xn.mlp(sizes, activation="relu", seed=0, backend=backend, precision=precision)
    model.set_params({f"{2 * i}.{k}": v for i, (W, b) in enumerate(host_weights(sizes))
                      for k, v in (("W", W), ("b", b))})
    return model


def xpnet_variant(backend, sizes, batch, portable=False, optimizer=None, traced=False,
                  precision=None, graphs=False):
    """xpnet's own training step (``xn.Step``, what ``fit`` calls per batch), without fit.

    ``portable`` turns the backend's fast paths off (``xn.fast_paths(False)``): the
    ablation. ``traced`` keeps the traced step where the backend traces (JAX); otherwise
    the eager step is timed. ``graphs`` replays the step as a captured CUDA graph (torch on
    CUDA). ``optimizer`` defaults to SGD at ``LR``. ``precision`` (a mixed one) computes in
    16 bits over float32 parameters.
    """
    import xpnet as xn

    X, _, T = host_data(sizes, batch)
    model = _xpnet_model(backend, sizes, precision)
    Xd, Td = backend.asarray(X), backend.asarray(T)
    opt = optimizer if optimizer is not None else xn.SGD(lr=LR)
    with xn.fast_paths(not portable and (traced or not backend.can_trace)):
        train = xn.Step(model, "cross_entropy", opt, graphs=graphs)
    if traced and not train.is_traced:
        raise RuntimeError("the traced step does not apply here (fast paths off?)")
    holder = []

    def step():
        value = train(Xd, Td)
        if not backend.cheap_reads:
            holder[:] = [(value, model.parameters.arrays)]
        return value

    suffix = "-portable" if portable else "-jit" if traced else "-graphs" if graphs else ""
    if precision is not None:
        suffix += f"-{precision}"
    if optimizer is not None:
        suffix += f"-{type(opt).__name__.lower()}"
    return Variant(f"xpnet-{_label(backend)}{suffix}", step, _blocker(backend, holder),
                   group_of(backend), "xpnet", {"lib": _label(backend), "model": model})


def xpnet_jit_variant(backend, sizes, batch):
    """xpnet's traced JAX step: what ``fit`` runs on JAX, one call per step."""
    return xpnet_variant(backend, sizes, batch, traced=True)


def before_variant(pkg, backend, sizes, batch):
    """The same step on an earlier xpnet (``bench/baseline.py``), for before/after rows."""
    import baseline

    X, _, T = host_data(sizes, batch)
    model = pkg.mlp(sizes, activation="relu", seed=0, backend=backend.name,
                    dtype=backend.dtype_name)
    model.set_params({f"{2 * i}.{k}": v for i, (W, b) in enumerate(host_weights(sizes))
                      for k, v in (("W", W), ("b", b))})
    Xd, Td = model.backend.asarray(X), model.backend.asarray(T)
    opt = pkg.SGD(lr=LR)
    return Variant(f"before-{_label(backend)}", lambda: baseline.step(pkg, model, Xd, Td, opt),
                   backend.sync, group_of(backend), "before", {"lib": _label(backend)})


def torch_eager_variant(device, sizes, batch, autocast=None):
    """PyTorch eager on ``device``: the peer every xpnet variant of that device is held to.
    ``autocast`` ("bfloat16" or "float16") runs forward and loss under ``torch.autocast``,
    PyTorch's mixed precision (no GradScaler: the step's cost, not its overflow handling)."""
    import torch
    from torch import nn

    X, labels, _ = host_data(sizes, batch)
    layers = []
    for i, (W, b) in enumerate(host_weights(sizes)):
        lin = nn.Linear(W.shape[0], W.shape[1])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W.T.copy()))
            lin.bias.copy_(torch.from_numpy(b))
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    net = nn.Sequential(*layers).to(device)
    Xd = torch.from_numpy(X).to(device)
    yd = torch.from_numpy(labels).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()

    low = None if autocast is None else getattr(torch, autocast)

    def step():
        opt.zero_grad(set_to_none=True)
        if low is None:
            loss = loss_fn(net(Xd), yd)
        else:
            with torch.autocast(device_type=device, dtype=low):
                loss = loss_fn(net(Xd), yd)
        loss.backward()
        opt.step()
        return loss

    sync = (lambda: torch.cuda.synchronize()) if device == "cuda" else (lambda: None)
    group = "cuda" if device == "cuda" else "cpu"
    name = f"torch-eager-{device}" + ("" if autocast is None else f"-autocast-{autocast}")
    return Variant(name, step, sync, group, "peer" if autocast is None else "peer-mixed",
                   {"lib": f"torch-{device}"})


def hand_variant(xp, sizes, batch, sync=lambda: None, group="cpu", name="numpy"):
    """The step written by hand against NumPy (or CuPy, which has the same ``out=``)."""
    X, _, T = (xp.asarray(a) for a in host_data(sizes, batch))
    params = [(xp.asarray(W), xp.asarray(b)) for W, b in host_weights(sizes)]
    last = len(params) - 1
    inv_n = 1.0 / batch

    def step():
        acts, A = [X], X
        for i, (W, b) in enumerate(params):
            A = A @ W
            A += b
            if i < last:
                xp.maximum(A, 0.0, out=A)
            acts.append(A)
        A -= A.max(axis=1, keepdims=True)
        log_total = xp.log(xp.exp(A).sum(axis=1))
        loss = (log_total.sum() - (T * A).sum()) * inv_n
        dY = xp.exp(A - log_total[:, None])  # softmax, then the gradient in place
        dY -= T
        dY *= inv_n
        for i in range(last, -1, -1):
            W, b = params[i]
            dW, db = acts[i].T @ dY, dY.sum(axis=0)
            if i:
                dY = dY @ W.T
                dY *= acts[i] > 0
            W -= LR * dW
            b -= LR * db
        return loss

    return Variant(f"{name}-hand", step, sync, group, "hand", {"lib": name})


def gemm_variant(backend, sizes, batch):
    """The step's matrix products only, with the backend's own ``@``: the lower bound."""
    X, _, T = host_data(sizes, batch)
    X, dY0 = backend.asarray(X), backend.asarray(T)
    Ws = [backend.asarray(W) for W, _ in host_weights(sizes)]
    # activations have their real shapes and nonzero values, so each product does real work
    acts = [X] + [backend.asarray(np.full((batch, W.shape[1]), 0.01, np.float32))
                  for W in Ws[:-1]]
    holder: list = []

    def step():
        A = X
        for W in Ws:
            A = A @ W
        dY, grads = dY0, []
        for i in range(len(Ws) - 1, -1, -1):
            grads.append(acts[i].T @ dY)
            if i:
                dY = dY @ Ws[i].T
        if backend.name == "jax":
            holder[:] = [(A, grads)]
        return A

    label = _label(backend)
    return Variant(f"gemm-{label}", step, _blocker(backend, holder), group_of(backend), "gemm",
                   {"lib": label})
