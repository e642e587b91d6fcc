"""Checkpoints: one ``.npz`` holding the architecture (JSON), parameters and optimizer state.

Written to a temporary file in the destination folder, flushed and fsynced, then moved
into place with ``os.replace``: a crash leaves either the old file or the new one. Read
with ``allow_pickle=False`` (loading never unpickles) and checked against a SHA-256 of
the arrays, so a truncated or corrupted file raises ``CheckpointError`` instead of
giving a wrong model.
"""

from __future__ import annotations

import hashlib
import io as _io
import json
import os
import tempfile
import zipfile

import numpy as np

from . import backend as backends
from . import optim as optimizers
from .layers import from_config

FORMAT, VERSION = "xpnet", 1
_META = "__xpnet__"


class CheckpointError(ValueError):
    """A file that is not a complete, consistent xpnet checkpoint."""


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _payload(model) -> dict[str, np.ndarray]:
    arrays = {f"param/{k}": model.backend.to_numpy(v) for k, v in model.params.items()}
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "layers": [{"type": type(layer).__name__, "config": layer.config()}
                   for layer in model.layers],
        "seed": model.seed,
        "dtype": model.backend.dtype_name,
        "optimizer": None,
    }
    opt = model.optimizer
    if opt is not None:
        for k, v in opt.state_arrays().items():
            arrays[f"opt/{k}"] = model.backend.to_numpy(v)
        meta["optimizer"] = {"type": type(opt).__name__, "config": opt.config(),
                             "iterations": opt.iterations}
    meta["sha256"] = _digest(arrays)
    arrays[_META] = np.array(json.dumps(meta))
    return arrays


def save(model, path) -> None:
    """Write ``model`` to ``path`` atomically (temp file, fsync, os.replace)."""
    path = os.fspath(path)
    if not path.endswith(".npz"):
        raise ValueError(f"save: checkpoint path must end in .npz; got {path!r}")
    arrays = _payload(model)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".xpnet-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(folder)


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not every platform opens directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read(path: str) -> tuple[dict, dict[str, np.ndarray]]:
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path!r}: {exc}") from None
    try:
        with np.load(_io.BytesIO(raw), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        meta = json.loads(str(arrays.pop(_META)[()]))
    except CheckpointError:
        raise
    except Exception as exc:  # zip, CRC, header, JSON and key errors all mean the same here
        raise CheckpointError(
            f"{path!r} is not a readable xpnet checkpoint ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path!r} is not an xpnet checkpoint (no xpnet metadata)")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path!r} has checkpoint version {meta.get('version')!r}; "
                              f"this xpnet reads version {VERSION}")
    if meta.get("sha256") != _digest(arrays):
        raise CheckpointError(f"{path!r} is corrupted: its arrays do not match their checksum")
    return meta, arrays


def load(path, backend=None, device=None, dtype: str | None = None):
    """Read a checkpoint onto ``backend`` (default: the current one) with its saved dtype."""
    from .model import ModelError, Sequential

    path = os.fspath(path)
    meta, arrays = _read(path)
    try:
        layers = [from_config(spec["type"], spec["config"]) for spec in meta["layers"]]
        dtype = dtype or meta["dtype"]
        model = Sequential(*layers, seed=meta.get("seed"), backend=_target(backend, device),
                           dtype=dtype)
        model.set_params({k[len("param/"):]: v for k, v in arrays.items()
                          if k.startswith("param/")})
        spec = meta.get("optimizer")
        if spec is not None:
            cls = {"SGD": optimizers.SGD, "Adam": optimizers.Adam}[spec["type"]]
            opt = cls(**spec["config"])
            expected = {f"{p}/{slot}": model.params[p].shape
                        for p in model.params for slot in _slots(opt)}
            state = {k[len("opt/"):]: v for k, v in arrays.items() if k.startswith("opt/")}
            for k, v in state.items():
                if k not in expected or tuple(v.shape) != tuple(expected[k]):
                    raise CheckpointError(f"{path!r}: optimizer state {k!r} does not fit the model")
            opt.load_state_arrays({k: model.backend.asarray(v) for k, v in state.items()},
                                  spec["iterations"])
            model.optimizer = opt
    except CheckpointError:
        raise
    except (ModelError, ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{path!r} has an invalid architecture or parameters: {exc}") from None
    return model


def _slots(opt) -> tuple[str, ...]:
    if isinstance(opt, optimizers.Adam):
        return ("m", "v")
    return ("momentum",) if opt.momentum else ()


def _target(backend, device):
    if backend is None and device is None:
        return None
    if backend is None:
        return backends.get(backends.current().name, device)
    return backend if isinstance(backend, backends.Backend) else backends.get(backend, device)


def is_checkpoint(path) -> bool:
    """True when ``path`` looks like an npz (zip) file; a cheap check before ``load``."""
    return zipfile.is_zipfile(os.fspath(path))
