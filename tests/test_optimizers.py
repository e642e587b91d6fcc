"""Every optimizer takes torch.optim's steps, on every backend and every update path.

The oracle: the same start and the same 50 random gradients given to ``xn.<Optimizer>`` and
to ``torch.optim.<Optimizer>`` with the same arguments, in float64; the parameters must agree
after every step to 1e-10 (relative; measured gaps are ~1e-15, from torch's ``lerp`` versus
our ``b m + (1 - b) g``). Each backend runs each path it has: one update per parameter (in
place or functional), the flat-buffer update (backends with views), both with the backend's
fast kernels and with the portable maths, and the traced update (JAX, with ``lr`` and the
step count as traced arguments, as ``xpnet/train/traced.py`` calls it).

Then the training features every optimizer must have: by name in ``fit``, a checkpoint
resume that equals uninterrupted training, ``to()``, and argument checks.
"""

from __future__ import annotations

import numpy as np
import pytest

import xpnet as xn
from xpnet import cli
from xpnet.backend import to_numpy
from xpnet.nn import optim
from xpnet.nn.buffers import Buffer, Layout

STEPS = 50
RTOL, ATOL = 1e-10, 1e-12

# name -> (class name in both libraries, keyword arguments for both)
CASES = {
    "sgd": ("SGD", dict(lr=0.1)),
    "sgd-momentum": ("SGD", dict(lr=0.05, momentum=0.9)),
    "sgd-dampening": ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3)),
    "sgd-dampening-wd": ("SGD", dict(lr=0.05, momentum=0.5, dampening=0.5, weight_decay=0.1)),
    "sgd-nesterov-wd": ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01)),
    "adam": ("Adam", dict()),
    "adam-betas-eps": ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6)),
    "adam-coupled-wd": ("Adam", dict(lr=0.01, weight_decay=0.1)),
    "adam-amsgrad-wd": ("Adam", dict(lr=0.01, weight_decay=0.05, amsgrad=True)),
    "adamw": ("AdamW", dict()),
    "adamw-wd": ("AdamW", dict(lr=0.01, weight_decay=0.1)),
    "adamw-amsgrad": ("AdamW", dict(lr=0.01, betas=(0.7, 0.9), amsgrad=True)),
    "rmsprop": ("RMSprop", dict()),
    "rmsprop-centered": ("RMSprop", dict(lr=0.01, alpha=0.9, centered=True)),
    "rmsprop-momentum-wd": ("RMSprop", dict(lr=0.01, momentum=0.8, weight_decay=0.1)),
    "rmsprop-all": ("RMSprop", dict(lr=0.005, alpha=0.95, eps=1e-6, weight_decay=0.05,
                                    momentum=0.5, centered=True)),
    "adagrad": ("Adagrad", dict()),
    "adagrad-eps": ("Adagrad", dict(lr=0.1, eps=1e-3)),
    "adagrad-all": ("Adagrad", dict(lr=0.1, lr_decay=0.05, weight_decay=0.1,
                                    initial_accumulator_value=0.5)),
}
PATHS = ["per-name", "per-name-portable", "flat", "flat-portable", "traced"]
SHAPES = {"0.W": (4, 3), "0.b": (3,), "2.W": (3, 2)}


def _torch_trajectory(kind: str, kwargs: dict, start: dict, grads: list[dict]) -> list[dict]:
    torch = pytest.importorskip("torch")
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in start.items()}
    ref = getattr(torch.optim, kind)(list(tensors.values()), **kwargs)
    out = []
    for g in grads:
        for k, t in tensors.items():
            t.grad = torch.tensor(g[k])
        ref.step()
        out.append({k: t.detach().numpy().copy() for k, t in tensors.items()})
    return out


def _our_trajectory(backend, path: str, kind: str, kwargs: dict, start: dict,
                    grads: list[dict]) -> list[dict]:
    opt = getattr(xn, kind)(**kwargs)
    xp = backend.xp
    kernels = backend.kernels if not path.endswith("portable") else None
    out = []
    if path.startswith("flat"):
        layout = Layout(SHAPES)
        params = Buffer.of(layout, {k: backend.asarray(v) for k, v in start.items()}, backend)
        for g in grads:
            grad = Buffer.of(layout, {k: backend.asarray(v) for k, v in g.items()}, backend)
            opt.step_flat(params, grad, backend, kernels)
            out.append({k: to_numpy(v).copy() for k, v in params.arrays.items()})
        return out
    params = {k: backend.asarray(v) for k, v in start.items()}
    step = _traced_step(backend, opt) if path == "traced" else None
    for g in grads:
        grad = {k: backend.asarray(v) for k, v in g.items()}
        if step is not None:
            params = step(params, grad)
        else:
            params = opt.step(params, grad, xp, backend.inplace, kernels=kernels)
        out.append({k: to_numpy(v).copy() for k, v in params.items()})
    return out


def _traced_step(backend, opt):
    """``opt``'s functional update traced once, ``lr`` and ``t`` passed as traced values."""
    kind, config, xp = type(opt), opt.config(), backend.xp

    def pure(params, state, grads, lr, t):
        fresh = kind.from_config(config)
        fresh.lr, fresh.iterations = lr, t - 1
        fresh.state = {k: dict(slots) for k, slots in state.items()}
        return fresh.step(params, grads, xp, False), fresh.state

    traced = backend.trace(pure)

    def step(params, grads):
        for name, p in params.items():
            opt.state.setdefault(name, opt.init_state(p, xp))
        params, opt.state = traced(params, opt.state, grads, opt.lr, opt.iterations + 1)
        opt.iterations += 1
        return params

    return step


def _problem(seed: int = 11):
    rng = np.random.default_rng(seed)
    start = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    grads = [{k: rng.standard_normal(s) for k, s in SHAPES.items()} for _ in range(STEPS)]
    return start, grads


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", list(CASES))
def test_every_optimizer_takes_torch_optims_steps(backend64, case, path):
    if path.startswith("flat") and not backend64.views:
        pytest.skip(f"{backend64.name} keeps one array per parameter: no flat buffer")
    if path == "traced" and not backend64.can_trace:
        pytest.skip(f"{backend64.name} does not trace a step")
    kind, kwargs = CASES[case]
    start, grads = _problem()
    theirs = _torch_trajectory(kind, kwargs, start, grads)
    ours = _our_trajectory(backend64, path, kind, kwargs, start, grads)
    for step, (mine, ref) in enumerate(zip(ours, theirs, strict=True)):
        for k in SHAPES:
            np.testing.assert_allclose(mine[k], ref[k], rtol=RTOL, atol=ATOL,
                                       err_msg=f"{case} ({path}), step {step + 1}, {k}")


def test_the_registry_names_every_optimizer():
    assert optim.OPTIMIZERS == {"sgd": xn.SGD, "adam": xn.Adam, "adamw": xn.AdamW,
                                "rmsprop": xn.RMSprop, "adagrad": xn.Adagrad}
    for name, cls in optim.OPTIMIZERS.items():
        assert optim.by_type(cls.__name__) is cls
        assert type(optim.resolve(name, lr=0.5)) is cls and optim.resolve(name, 0.5).lr == 0.5
        assert cls.__doc__


def test_defaults_are_torchs():
    torch = pytest.importorskip("torch")
    import inspect

    for cls in optim.OPTIMIZERS.values():
        ours = inspect.signature(cls).parameters
        theirs = inspect.signature(getattr(torch.optim, cls.__name__)).parameters
        for name, p in ours.items():
            if name == "clipnorm":
                continue
            default = theirs[name].default
            assert p.default == (tuple(default) if isinstance(default, tuple) else default), \
                f"{cls.__name__}.{name}"


# --------------------------------------------------------------------- training features


def _data(n=48, seed=3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5))
    return X, rng.integers(0, 3, n)


TRAINED = {  # each optimizer with its state slots in use
    "sgd": lambda: xn.SGD(lr=0.05, momentum=0.9, dampening=0.1),
    "adam": lambda: xn.Adam(lr=0.01, weight_decay=0.01, amsgrad=True),
    "adamw": lambda: xn.AdamW(lr=0.01, amsgrad=True),
    "rmsprop": lambda: xn.RMSprop(lr=0.01, momentum=0.5, centered=True),
    "adagrad": lambda: xn.Adagrad(lr=0.05, initial_accumulator_value=0.1, lr_decay=0.01),
}


def _fit(model, opt, epochs, X, y):
    model.fit(X, y, loss="cross_entropy", optimizer=opt, epochs=epochs, batch_size=16,
              seed=0, shuffle=False)
    return {k: to_numpy(v).copy() for k, v in model.params.items()}


@pytest.mark.parametrize("name", list(TRAINED))
def test_a_checkpoint_resumes_as_if_never_interrupted(backend64, name, tmp_path):
    X, y = _data()
    straight = _fit(xn.mlp([5, 8, 3], seed=0, backend=backend64), TRAINED[name](), 2, X, y)
    model = xn.mlp([5, 8, 3], seed=0, backend=backend64)
    _fit(model, TRAINED[name](), 1, X, y)
    model.save(tmp_path / "half.npz")
    resumed = xn.load(tmp_path / "half.npz", backend=backend64.name, dtype="float64")
    assert type(resumed.optimizer) is type(model.optimizer)
    assert resumed.optimizer.config() == model.optimizer.config()
    assert set(resumed.optimizer.state_arrays()) == set(model.optimizer.state_arrays())
    after = _fit(resumed, resumed.optimizer, 1, X, y)
    for k in straight:
        np.testing.assert_allclose(after[k], straight[k], rtol=1e-12, atol=1e-13, err_msg=k)


@pytest.mark.parametrize("name", list(TRAINED))
def test_the_state_moves_with_the_model(name):
    X, y = _data()
    straight = _fit(xn.mlp([5, 8, 3], seed=0, backend="numpy", dtype="float64"),
                    TRAINED[name](), 3, X, y)
    model = xn.mlp([5, 8, 3], seed=0, backend="numpy", dtype="float64")
    _fit(model, TRAINED[name](), 1, X, y)
    model.to("array_api_strict", dtype="float64")  # one array per name there
    state = model.optimizer.state_arrays()
    assert set(state) == {f"{p}/{s}" for p in model.params
                          for s in model.optimizer.slot_names()}
    assert all(model.backend.owns(a) for a in state.values())
    _fit(model, model.optimizer, 1, X, y)
    model.to("numpy", dtype="float64")  # and back into flat buffers
    after = _fit(model, model.optimizer, 1, X, y)
    for k in straight:
        np.testing.assert_allclose(after[k], straight[k], rtol=1e-12, atol=1e-13, err_msg=k)


@pytest.mark.parametrize("name", ["adamw", "rmsprop", "adagrad"])
def test_fit_takes_the_new_optimizers_by_name(name):
    X, y = _data()
    model = xn.mlp([5, 8, 3], seed=0, backend="numpy")
    history = model.fit(X, y, loss="cross_entropy", optimizer=name, lr=0.02, epochs=3)
    assert type(model.optimizer) is optim.OPTIMIZERS[name] and model.optimizer.lr == 0.02
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_adagrads_accumulator_starts_at_its_initial_value(backend):
    X, y = _data(8)
    model = xn.mlp([5, 4, 3], seed=0, backend=backend)
    _, grads = model.loss_and_grads(X, y, loss="cross_entropy")
    opt = xn.Adagrad(lr=0.01, initial_accumulator_value=0.25)
    model.fit(X, y, loss="cross_entropy", optimizer=opt, epochs=1, batch_size=8)
    for name, g in grads.items():  # one step: s = 0.25 + g^2
        np.testing.assert_allclose(to_numpy(opt.state[name]["sum"]),
                                   0.25 + to_numpy(g) ** 2, rtol=1e-5, err_msg=name)


BAD = [
    (lambda: xn.SGD(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
     ["nesterov", "dampening"]),
    (lambda: xn.SGD(lr=0.1, nesterov=True), ["nesterov", "momentum"]),
    (lambda: xn.SGD(lr=0.1, momentum=0.5, dampening=1.5), ["SGD", "dampening"]),
    (lambda: xn.Adam(amsgrad="yes"), ["Adam", "amsgrad"]),
    (lambda: xn.Adam(weight_decay=-1.0), ["Adam", "weight_decay"]),
    (lambda: xn.AdamW(betas=(0.9, 1.0)), ["AdamW", "betas[1]"]),
    (lambda: xn.AdamW(eps=0.0), ["AdamW", "eps"]),
    (lambda: xn.AdamW(weight_decay=float("nan")), ["AdamW", "weight_decay"]),
    (lambda: xn.RMSprop(alpha=1.5), ["RMSprop", "alpha"]),
    (lambda: xn.RMSprop(momentum=-0.1), ["RMSprop", "momentum"]),
    (lambda: xn.RMSprop(centered=1), ["RMSprop", "centered"]),
    (lambda: xn.RMSprop(eps=-1e-8), ["RMSprop", "eps"]),
    (lambda: xn.RMSprop(lr=0.0), ["RMSprop", "lr"]),
    (lambda: xn.Adagrad(lr_decay=-0.1), ["Adagrad", "lr_decay"]),
    (lambda: xn.Adagrad(initial_accumulator_value=-1.0),
     ["Adagrad", "initial_accumulator_value"]),
    (lambda: xn.Adagrad(eps="tiny"), ["Adagrad", "eps"]),
]


@pytest.mark.parametrize("make, needles", BAD)
def test_bad_arguments_are_named(make, needles):
    with pytest.raises(ValueError) as info:
        make()
    for needle in needles:
        assert needle in str(info.value)


@pytest.mark.parametrize("name", ["adamw", "rmsprop", "adagrad"])
def test_the_command_line_takes_the_new_optimizers(name, capsys):
    assert cli.main(["train", "--epochs", "1", "--layers", "4", "--optimizer", name]) == 0
    assert f"{name} lr" in capsys.readouterr().out
