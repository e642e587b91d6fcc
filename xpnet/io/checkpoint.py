"""Checkpoints: one ``.npz`` holding the architecture (JSON), parameters and optimizer state.

Written to a temporary file in the destination folder, flushed and fsynced, then moved
into place with ``os.replace``: a crash leaves either the old file or the new one. Read
with ``allow_pickle=False`` (loading never unpickles). Two checksums guard the content:
the zip comment ends with a SHA-256 of every byte before it (so any truncation or flipped
bit, even in zip headers that no reader checks, raises ``CheckpointError``), and the
metadata holds a SHA-256 of the arrays themselves. The file stays a plain ``.npz``:
``numpy.load`` reads it, since readers ignore the zip comment.
"""

from __future__ import annotations

import hashlib
import io as _io
import json
import os
import tempfile
import zipfile

import numpy as np

FORMAT, VERSION = "xpnet", 1
_META = "__xpnet__"
_SEAL = b"xpnet-sha256:"  # the zip comment: this tag and the hex SHA-256 of all bytes before it
_HEX = 64


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
    raw = _encode(_payload(model))
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".xpnet-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
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


def _encode(arrays: dict[str, np.ndarray]) -> bytes:
    """The .npz bytes of ``arrays``, sealed with a SHA-256 of the whole file in its comment."""
    buf = _io.BytesIO()
    np.savez(buf, **arrays)
    with zipfile.ZipFile(buf, "a") as zf:
        zf.comment = _SEAL + b"0" * _HEX  # placeholder: the digest covers the comment's length
    body = buf.getvalue()[:-_HEX]
    return body + hashlib.sha256(body).hexdigest().encode()


def _unseal(raw: bytes, path: str) -> None:
    """Raise unless ``raw`` ends with the seal that ``_encode`` wrote and the seal matches."""
    if len(raw) < len(_SEAL) + _HEX or raw[-_HEX - len(_SEAL):-_HEX] != _SEAL:
        raise CheckpointError(f"{path!r} is not a complete xpnet checkpoint: its end is missing "
                              "or damaged (truncated, or not written by xpnet.save)")
    if hashlib.sha256(raw[:-_HEX]).hexdigest().encode() != raw[-_HEX:]:
        raise CheckpointError(f"{path!r} is corrupted: its bytes do not match their checksum")


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
    _unseal(raw, path)
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
    _check_meta(meta, arrays, path)
    return meta, arrays


def _check_meta(meta: dict, arrays: dict, path: str) -> None:
    """The metadata's shape, before anything is built from it (names what is wrong)."""
    missing = [k for k in ("layers", "dtype", "optimizer") if k not in meta]
    if missing:
        raise CheckpointError(f"{path!r}: checkpoint metadata lacks {missing}")
    layers = meta["layers"]
    if not isinstance(layers, list) or not layers or not all(
            isinstance(s, dict) and isinstance(s.get("type"), str)
            and isinstance(s.get("config"), dict) for s in layers):
        raise CheckpointError(f"{path!r}: 'layers' must be a non-empty list of "
                              "{'type': str, 'config': dict}")
    if meta["dtype"] not in ("float32", "float64"):
        raise CheckpointError(f"{path!r}: dtype {meta['dtype']!r} is not float32 or float64")
    opt = meta["optimizer"]
    if opt is not None and not isinstance(opt, dict):
        raise CheckpointError(f"{path!r}: 'optimizer' must be null or a dict; got {opt!r}")
    if opt is None and any(k.startswith("opt/") for k in arrays):
        raise CheckpointError(f"{path!r} holds optimizer state but names no optimizer")
    strays = sorted(k for k in arrays if not k.startswith(("param/", "opt/")))
    if strays:
        raise CheckpointError(f"{path!r}: unexpected arrays {strays}")
    for name, a in arrays.items():
        if a.dtype.kind != "f":
            raise CheckpointError(f"{path!r}: array {name!r} has dtype {a.dtype}, not float")


def read(path) -> tuple[dict, dict[str, np.ndarray]]:
    """The checked metadata and host arrays of the checkpoint at ``path``.

    Raises CheckpointError for anything that is not a complete, consistent xpnet
    checkpoint; building a model from the result is ``xpnet.load``'s part.
    """
    return _read(os.fspath(path))
