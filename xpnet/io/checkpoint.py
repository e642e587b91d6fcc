"""Checkpoints: one ``.npz`` holding the architecture (JSON), parameters and optimizer state.

Saving writes a temporary file in the destination folder, flushes and fsyncs it, then
moves it into place with ``os.replace``: a crash leaves either the old file or the new
one. A new file gets the mode ``open(path, "w")`` would give it; a file it replaces keeps
its mode. Errors name the caller's path and leave no temporary file behind.

Two checksums guard the content: the zip comment ends with a SHA-256 of every byte before
it (so any truncation or flipped bit, even in zip headers that no reader checks, raises
``CheckpointError``), and the metadata holds a SHA-256 of the arrays themselves. That is
integrity, not authenticity: anyone can write a file that passes both, so ``load`` treats
every file as hostile. It reads the zip directory and the metadata first (both capped in
size), works out from the declared architecture which arrays the file must hold and the
exact size of each, checks every member's zip entry and ``.npy`` header against that, and
only then reads the arrays, each into one array of its declared shape. It never unpickles
(``.npy`` headers are parsed by ``numpy.lib.format``, object arrays are refused), never
inflates (``save`` stores members uncompressed, and compressed members are refused), and
allocates about three times the declared model at most. The file stays a plain ``.npz``:
``numpy.load`` reads it, since readers ignore the zip comment.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import io as _io
import json
import math
import os
import secrets
import stat
import struct
import warnings
import zipfile

import numpy as np
from numpy.lib import format as npy_format

from .. import checks
from ..backend.table import PRECISIONS
from ..interrupts import protected
from ..nn import optim as optimizers
from ..nn.layers import Layer, check_chain, from_spec, spec_of, unregistered

__all__ = ["CheckpointError", "FORMAT", "VERSION", "read", "save", "size_text"]

FORMAT, VERSION = "xpnet", 1
_META = "__xpnet__"
_SEAL = b"xpnet-sha256:"  # the zip comment: this tag and the hex SHA-256 of all bytes before it
_HEX = 64
_META_KEYS = ("format", "version", "layers", "seed", "dtype", "optimizer", "sha256")
_OPTIONAL_META = ("precision",)  # files before mixed precision lack it: the dtype's own

# What a file may declare, checked before the part it bounds is read. Far above what an MLP
# needs; save refuses models beyond them, so it never writes a file that load refuses.
_MAX_MEMBERS = 10_001  # 10,000 arrays and the metadata (zipfile keeps ~0.5 KB each)
_MAX_ENTRY = 128  # bytes per zip directory entry: 46 fixed, the name, a zip64 extra field
_MAX_META = 1 << 20  # the metadata member (JSON stored as UTF-32: about 260k characters)
_MAX_NPY_HEADER = 4096  # magic, length and header dict of one .npy member (np.save: 128)
_MEMBER_OVERHEAD = 256  # zip bytes around one member: local header and directory entry
_CHUNK = 1 << 20  # bytes read or hashed at a time
_HASH_REFUSED_UP_TO = 64 << 20  # a refused file this small is hashed, to report corruption

_END = struct.Struct("<4s4H2LH")  # end of central directory record
_END64_LOCATOR = struct.Struct("<4sLQL")
_END64 = struct.Struct("<4sQ2H2L4Q")  # zip64 end record, without extensible data
_LOCAL = struct.Struct("<4s5H3L2H")  # local file header, before the name and extra field
_TAIL = _END.size + len(_SEAL) + _HEX  # end record, then the seal as its comment


class CheckpointError(ValueError):
    """A file that is not a complete, consistent xpnet checkpoint."""


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(key.encode())
        h.update(str(a.dtype).encode())
        h.update(repr(a.shape).encode())
        h.update(a.data)  # the buffer itself, not a tobytes() copy of a large array
    return h.hexdigest()


def _payload(model) -> dict[str, np.ndarray]:
    arrays = {f"param/{k}": model.backend.to_numpy(v) for k, v in model.params.items()}
    arrays.update({f"state/{k}": model.backend.to_numpy(v) for k, v in model.state.items()})
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "layers": [spec_of(layer) for layer in model.layers],
        "seed": model.seed,
        "dtype": model.backend.dtype_name,
        "precision": model.precision.name,
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


# --------------------------------------------------------------------------- save


def save(model, path) -> None:
    """Write ``model`` to ``path`` atomically (temp file, fsync, os.replace).

    A new file gets the mode ``open(path, "w")`` would give it (0666 less the umask); an
    existing file keeps its mode. Errors are ``OSError`` (or ``ValueError``) naming
    ``path``, and leave the old file, if any, and no temporary file behind.
    """
    path = checks.path("save", "path", path)
    if not path.endswith(".npz"):
        raise ValueError(f"save: checkpoint path must end in .npz; got {path!r}")
    _warn_unregistered(model, path)
    try:
        arrays = _payload(model)
        _check_loadable(arrays, path)
        raw = _encode(arrays)
        with protected():  # Ctrl-C waits for the rename or the clean-up (xpnet/interrupts.py)
            _write_atomically(path, raw)
    except OSError as exc:
        raise _about(path, exc) from exc


def _warn_unregistered(model, path: str) -> None:
    """Saving works for any layer, but ``load`` rebuilds only registered ones: say so now,
    not when the file is needed."""
    for where, layer in unregistered(model.layers):
        kind = type(layer).__name__
        warnings.warn(f"save: {path!r}: layer {where} ({kind}) is not a registered layer type, "
                      f"so load will refuse this file until @xn.register_layer (or "
                      f"xn.register_layer({kind})) has run", UserWarning, stacklevel=4)


def _check_loadable(arrays: dict[str, np.ndarray], path: str) -> None:
    """Refuse to write a file that ``load`` would refuse for its size limits."""
    if len(arrays) > _MAX_MEMBERS:
        raise ValueError(f"save: {path!r}: the model has {len(arrays) - 1} arrays; a "
                         f"checkpoint holds at most {_MAX_MEMBERS - 1}")
    meta_bytes = arrays[_META].nbytes
    if meta_bytes > _MAX_META - _MAX_NPY_HEADER:
        raise ValueError(f"save: {path!r}: the model's description takes {meta_bytes} bytes; "
                         f"a checkpoint holds at most {_MAX_META - _MAX_NPY_HEADER}")


def _write_atomically(path: str, raw: bytes) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    mode = _existing_mode(path)
    # A new file is created 0666 so the kernel applies the umask (and any default ACL)
    # exactly as open() would; reading the umask instead would race with other threads.
    # Replacing a file: 0600 while writing, then that file's mode just before the swap.
    fd, tmp = _create_temp(folder, 0o666 if mode is None else 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            if mode is not None:
                _chmod(fh.fileno(), tmp, mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def _existing_mode(path: str) -> int | None:
    """The permission bits of the file at ``path``; None when there is none yet."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    return stat.S_IMODE(st.st_mode)


def _create_temp(folder: str, mode: int) -> tuple[int, str]:
    """A new ``.xpnet-*.tmp`` in ``folder`` (O_EXCL: never an existing file or a link)."""
    flags = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
             | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0))
    for _ in range(100):
        tmp = os.path.join(folder, f".xpnet-{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, mode), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", folder)


def _chmod(fd: int, tmp: str, mode: int) -> None:
    if hasattr(os, "fchmod"):
        os.fchmod(fd, mode)
    else:
        os.chmod(tmp, mode)


def _about(path: str, exc: OSError) -> OSError:
    """``exc`` restated about ``path``: the temporary file's name means nothing to the caller."""
    if exc.errno is None:
        return OSError(f"cannot save checkpoint {path!r}: {exc}")
    # OSError(errno, ...) picks the subclass (FileNotFoundError, PermissionError, ...)
    return OSError(exc.errno, f"cannot save checkpoint ({exc.strerror})", path)


def _encode(arrays: dict[str, np.ndarray]) -> bytes:
    """The .npz bytes of ``arrays``, sealed with a SHA-256 of the whole file in its comment."""
    buf = _io.BytesIO()
    # savez's stub fears a member named allow_pickle; ours are "param/...", "state/...",
    # "opt/..." and _META (tests forge pickled files through here, so the flag stays)
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    with zipfile.ZipFile(buf, "a") as zf:
        zf.comment = _SEAL + b"0" * _HEX  # placeholder: the digest covers the comment's length
    body = buf.getvalue()[:-_HEX]
    return body + hashlib.sha256(body).hexdigest().encode()


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


# --------------------------------------------------------------------------- load


@dataclasses.dataclass
class _Contents:
    """A checkpoint read and checked, as host (NumPy) data: everything ``_build`` needs."""

    layers: list[Layer]
    seed: int | None
    dtype: str
    precision: str  # what the model computed in: "float32", ..., "mixed-float16"
    params: dict[str, np.ndarray]  # "0.W" -> array
    layer_state: dict[str, np.ndarray]  # "2.running_mean" -> array (BatchNorm's statistics)
    optimizer: optimizers.Optimizer | None  # configured, without state
    state: dict[str, np.ndarray]  # "0.W/m" -> array (empty before the first step)
    iterations: int
    nbytes: int  # of all arrays, as declared


def read(path) -> _Contents:
    """The checkpoint at ``path``, read and checked whole, as host data (``xpnet.load``
    builds the model from it).

    Safe on untrusted files: it never unpickles or runs code from the file, refuses
    anything that does not match the declared architecture, and allocates a small multiple
    of the declared model size at most. Every problem with the file raises
    ``CheckpointError`` naming ``path``.
    """
    return _read(checks.path("load", "path", path))


def size_text(n_bytes: int) -> str:
    """``n_bytes`` as a short human size (for messages about a checkpoint's arrays)."""
    return _size(n_bytes)


# --------------------------------------------------------------------------- reading


@dataclasses.dataclass
class _Declared:
    """What the metadata declares, checked: the architecture and every array it implies."""

    layers: list[Layer]
    seed: int | None
    dtype: np.dtype
    precision: str
    optimizer: optimizers.Optimizer | None
    iterations: int
    digest: str
    shapes: dict[str, tuple[int, ...]]  # "param/0.W", "state/2.running_mean", "opt/0.W/m"

    @property
    def nbytes(self) -> int:
        return sum(math.prod(s) for s in self.shapes.values()) * self.dtype.itemsize


def _read(path: str) -> _Contents:
    """The checked contents of the checkpoint at ``path``; CheckpointError for anything else."""
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path!r}: {exc}") from None
    with fh:
        size = os.fstat(fh.fileno()).st_size
        try:
            with _refusals(path):
                zf, members, declared = _survey(fh, size, path)
        except CheckpointError:
            if size <= _HASH_REFUSED_UP_TO:  # a damaged file: say so, not which check it hit
                with _refusals(path):
                    _check_seal(fh, size, path)
            raise
        with zf, _refusals(path, declared):
            _check_seal(fh, size, path)
            arrays = _read_arrays(zf, members, declared, path)
    return _Contents(
        layers=declared.layers, seed=declared.seed, dtype=declared.dtype.name,
        precision=declared.precision,
        params={k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")},
        layer_state={k[len("state/"):]: v for k, v in arrays.items()
                     if k.startswith("state/")},
        optimizer=declared.optimizer,
        state={k[len("opt/"):]: v for k, v in arrays.items() if k.startswith("opt/")},
        iterations=declared.iterations, nbytes=declared.nbytes)


@contextlib.contextmanager
def _refusals(path: str, declared: _Declared | None = None):
    """Whatever reading a hostile file raises, as a CheckpointError naming ``path``."""
    try:
        yield
    except CheckpointError:
        raise
    except MemoryError:
        needs = "" if declared is None else f" ({_size(declared.nbytes)} of arrays)"
        raise CheckpointError(f"{path!r}: not enough memory to read the model it "
                              f"declares{needs}") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path!r}: {exc}") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, struct.error, ValueError,
            NotImplementedError, RuntimeError, OverflowError, RecursionError) as exc:
        raise CheckpointError(
            f"{path!r} is not a readable xpnet checkpoint ({type(exc).__name__}: {exc})"
        ) from None


def _survey(fh, size: int, path: str):
    """Everything but the arrays' data, checked: (zip, members by array name, declaration)."""
    extent = _check_directory_size(fh, size, path)
    zf = zipfile.ZipFile(fh)
    try:
        _check_directory_parsed(fh, zf, extent, path)
        members = _members(zf, size, path)
        declared = _declaration(_metadata(zf, members, path), path)
        declared = _check_inventory(declared, members, path)
        _check_sizes(declared, members, size, path)
        for name, shape in declared.shapes.items():
            _open_array(zf, members[name], shape, declared, path)[0].close()
    except BaseException:
        zf.close()
        raise
    return zf, members, declared


def _incomplete(path: str) -> CheckpointError:
    return CheckpointError(f"{path!r} is not a complete xpnet checkpoint: its end is missing "
                           "or damaged (truncated, or not written by xpnet.save)")


def _read_seal(fh, size: int, path: str) -> bytes:
    """The hex digest at the end of the file, after checking the seal's tag is there."""
    if size < _TAIL:
        raise _incomplete(path)
    fh.seek(size - len(_SEAL) - _HEX)
    seal = fh.read(len(_SEAL) + _HEX)
    digest = seal[len(_SEAL):]
    if seal[:len(_SEAL)] != _SEAL or len(digest) != _HEX or digest.strip(b"0123456789abcdef"):
        raise _incomplete(path)
    return digest


def _check_seal(fh, size: int, path: str) -> None:
    """The SHA-256 of every byte before the digest, hashed in chunks, against the digest."""
    expected = _read_seal(fh, size, path)
    h = hashlib.sha256()
    fh.seek(0)
    left = size - _HEX
    while left:
        chunk = fh.read(min(_CHUNK, left))
        if not chunk:
            raise _incomplete(path)
        h.update(chunk)
        left -= len(chunk)
    if h.hexdigest().encode() != expected:
        raise CheckpointError(f"{path!r} is corrupted: its bytes do not match their checksum")


def _check_directory_size(fh, size: int, path: str) -> tuple[int, int, int]:
    """Refuse, before zipfile reads it, a zip directory larger than any checkpoint's.

    The seal fixes where the zip's end record is: right before the seal, its comment.
    zipfile finds the same record (the last signature in the tail; checked below) and
    reads as many directory bytes as it, or a zip64 end record just before it, says.
    Returns (entries, directory offset, directory size).
    """
    _read_seal(fh, size, path)
    at = size - _TAIL
    fh.seek(at)
    tail = fh.read(_TAIL)
    sig, disk, first_disk, here, entries, dir_size, dir_offset, comment = _END.unpack(
        tail[:_END.size])
    if (sig != b"PK\x05\x06" or tail.rfind(sig) != 0 or comment != len(_SEAL) + _HEX
            or disk or first_disk or here != entries):
        raise CheckpointError(f"{path!r} is not a readable xpnet checkpoint: its zip end "
                              "record is damaged")
    if at >= _END64_LOCATOR.size:
        fh.seek(at - _END64_LOCATOR.size)
        locator = fh.read(_END64_LOCATOR.size)
        if locator[:4] == b"PK\x06\x07":
            at, entries, dir_size, dir_offset = _zip64_end(fh, at, locator, path)
    if entries > _MAX_MEMBERS or dir_size > entries * _MAX_ENTRY:
        raise CheckpointError(
            f"{path!r}: its zip directory lists {entries} members in {dir_size} bytes; a "
            f"checkpoint has at most {_MAX_MEMBERS}, of at most {_MAX_ENTRY} bytes each")
    if dir_offset + dir_size != at:
        raise CheckpointError(f"{path!r} is not a readable xpnet checkpoint: its zip "
                              "directory is not where its end record says")
    return entries, dir_offset, dir_size


def _zip64_end(fh, at: int, locator: bytes, path: str) -> tuple[int, int, int, int]:
    """(record offset, entries, directory size, directory offset) of the zip64 end record.

    zipfile reads that record right before the locator, whatever offset the locator
    gives: both must agree here, so this check and zipfile read the same record.
    """
    _, disk, offset, disks = _END64_LOCATOR.unpack(locator)
    record_at = at - _END64_LOCATOR.size - _END64.size
    if record_at < 0 or disk or disks > 1 or offset != record_at:
        raise CheckpointError(f"{path!r} is not a readable xpnet checkpoint: its zip64 end "
                              "locator is damaged")
    fh.seek(record_at)
    (sig, record_size, _, _, disk, first_disk, here, entries, dir_size,
     dir_offset) = _END64.unpack(fh.read(_END64.size))
    if (sig != b"PK\x06\x06" or record_size != _END64.size - 12 or disk or first_disk
            or here != entries):
        raise CheckpointError(f"{path!r} is not a readable xpnet checkpoint: its zip64 end "
                              "record is damaged")
    return record_at, entries, dir_size, dir_offset


def _check_directory_parsed(fh, zf: zipfile.ZipFile, extent: tuple[int, int, int],
                            path: str) -> None:
    """zipfile's entries are the directory's, field for field: it stops quietly at the
    directory's end, cutting a name or extra field whose length runs past it."""
    entries, dir_offset, dir_size = extent
    infos = zf.infolist()
    fh.seek(dir_offset)
    raw = fh.read(dir_size)  # at most _MAX_MEMBERS * _MAX_ENTRY bytes, checked before
    at = 0
    for info in infos:
        lengths = struct.unpack_from("<3H", raw, at + 28) if at + 46 <= len(raw) else None
        if raw[at:at + 4] != b"PK\x01\x02" or lengths != (
                len(_raw_name(info)), len(info.extra), len(info.comment)):
            raise CheckpointError(f"{path!r} is not a readable xpnet checkpoint: the zip "
                                  f"directory entry of {info.filename!r} is damaged")
        at += 46 + sum(lengths)
    if len(infos) != entries or at != dir_size:
        raise CheckpointError(f"{path!r} is not a readable xpnet checkpoint: its zip "
                              f"directory holds {len(infos)} entries in {at} bytes; its end "
                              f"record says {entries} in {dir_size}")


def _raw_name(info: zipfile.ZipInfo) -> bytes:
    return info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437")


def _members(zf: zipfile.ZipFile, size: int, path: str) -> dict[str, zipfile.ZipInfo]:
    """The members by array name ("param/0.W"), each checked from its directory entry."""
    members: dict[str, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        member = _array_name(info, size, path)
        if member in members:
            raise CheckpointError(f"{path!r}: member {info.filename!r} appears twice")
        members[member] = info
    claimed = sum(info.file_size for info in members.values())
    if claimed > size:
        raise CheckpointError(f"{path!r}: its members claim {_size(claimed)} but the file is "
                              f"only {_size(size)}")
    return members


def _array_name(info: zipfile.ZipInfo, size: int, path: str) -> str:
    """The array a member holds ("param/0.W"), after checking its directory entry."""
    name = info.filename
    if not name.endswith(".npy"):
        raise CheckpointError(f"{path!r}: member {name!r} is not a .npy array")
    array = name[:-len(".npy")]
    if array != _META and not array.startswith(("param/", "state/", "opt/")):
        raise CheckpointError(f"{path!r}: unexpected member {name!r} (a checkpoint holds "
                              f"{_META}.npy, param/*.npy, state/*.npy and opt/*.npy only)")
    if info.flag_bits & 0x1:
        raise CheckpointError(f"{path!r}: member {name!r} is encrypted")
    if info.compress_type != zipfile.ZIP_STORED:
        raise CheckpointError(f"{path!r}: member {name!r} is compressed (zip method "
                              f"{info.compress_type}); xpnet stores members uncompressed and "
                              "reads no others")
    if info.compress_size != info.file_size:
        raise CheckpointError(f"{path!r}: member {name!r} claims {info.file_size} bytes but "
                              f"stores {info.compress_size}")
    if info.file_size > size:
        raise CheckpointError(f"{path!r}: member {name!r} claims {_size(info.file_size)} but "
                              f"the whole file is {_size(size)}")
    return array


def _metadata(zf: zipfile.ZipFile, members: dict, path: str):
    """The parsed JSON of the metadata member (at most ``_MAX_META`` bytes of it)."""
    info = members.get(_META)
    if info is None:
        raise CheckpointError(f"{path!r} is not an xpnet checkpoint (no xpnet metadata)")
    if info.file_size > _MAX_META:
        raise CheckpointError(f"{path!r}: its metadata member {info.filename!r} is "
                              f"{_size(info.file_size)}; at most {_size(_MAX_META)}")
    with _open_member(zf, info, path) as stream:
        dtype, shape, _, header = _npy_header(stream, info, path)
        if dtype.kind != "U" or shape != ():
            raise CheckpointError(f"{path!r}: its metadata member {info.filename!r} holds "
                                  f"{dtype} of shape {shape}, not a text string")
        _check_member_size(info, header, dtype.itemsize, path)
        text = str(np.frombuffer(_read_exactly(stream, dtype.itemsize, info, path), dtype)[0])
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path!r}: its metadata is not valid JSON ({exc})") from None


def _declaration(meta, path: str) -> _Declared:
    """The checked metadata, with the shape of every array the architecture implies."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path!r} is not an xpnet checkpoint (no xpnet metadata)")
    version = meta.get("version")
    if type(version) is not int or version != VERSION:
        raise CheckpointError(f"{path!r} has checkpoint version {version!r}; "
                              f"this xpnet reads version {VERSION}")
    missing = [k for k in _META_KEYS if k not in meta]
    if missing:
        raise CheckpointError(f"{path!r}: checkpoint metadata lacks {missing}")
    extra = sorted(set(meta) - set(_META_KEYS) - set(_OPTIONAL_META))
    if extra:
        raise CheckpointError(f"{path!r}: checkpoint metadata has unexpected fields {extra}")
    if meta["dtype"] not in ("float32", "float64"):
        raise CheckpointError(f"{path!r}: dtype {meta['dtype']!r} is not float32 or float64")
    precision = _precision(meta.get("precision", meta["dtype"]), meta["dtype"], path)
    digest = meta["sha256"]
    if not isinstance(digest, str) or len(digest) != _HEX:
        raise CheckpointError(f"{path!r}: 'sha256' {digest!r} is not a SHA-256 hex digest")
    layers = _layers(meta["layers"], path)
    optimizer, iterations = _optimizer(meta["optimizer"], path)
    return _Declared(layers=layers, seed=_seed(meta["seed"], path),
                     dtype=np.dtype(meta["dtype"]), precision=precision, optimizer=optimizer,
                     iterations=iterations, digest=digest,
                     shapes=_array_shapes(layers, optimizer))


def _layers(specs, path: str) -> list[Layer]:
    if not isinstance(specs, list) or not specs:
        raise CheckpointError(f"{path!r}: 'layers' must be a non-empty list of "
                              "{'type': str, 'config': dict}")
    layers = []
    for i, spec in enumerate(specs):
        if (not isinstance(spec, dict) or set(spec) != {"type", "config"}
                or not isinstance(spec["type"], str) or not isinstance(spec["config"], dict)):
            raise CheckpointError(f"{path!r}: layer {i} must be {{'type': str, 'config': "
                                  f"dict}}; got {_short(spec)}")
        try:
            layers.append(from_spec(spec, str(i)))
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{path!r}: layer {i} ({spec['type']}): {exc}") from None
    try:  # before any array is read: the widths decide the shapes the file must hold
        check_chain(layers, None)
    except ValueError as exc:
        raise CheckpointError(f"{path!r} declares layers that do not fit together: "
                              f"{exc}") from None
    return layers


def _precision(precision, dtype: str, path: str) -> str:
    """The declared precision, one of the known ones and consistent with the dtype (mixed
    precision keeps float32 parameters)."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise CheckpointError(f"{path!r}: precision {precision!r} is not one of {PRECISIONS}")
    params = "float32" if precision.startswith("mixed-") else precision
    if params != dtype:
        raise CheckpointError(f"{path!r}: precision {precision!r} keeps {params} parameters, "
                              f"but the file declares dtype {dtype!r}")
    return precision


def _seed(seed, path: str) -> int | None:
    if seed is not None and (type(seed) is not int or seed < 0):
        raise CheckpointError(f"{path!r}: seed {seed!r} is invalid: it must be null or an "
                              "int >= 0")
    return seed


def _optimizer(spec, path: str) -> tuple[optimizers.Optimizer | None, int]:
    """The optimizer the metadata names (configured, no state yet) and its step count."""
    if spec is None:
        return None, 0
    if not isinstance(spec, dict) or set(spec) != {"type", "config", "iterations"}:
        raise CheckpointError(f"{path!r}: 'optimizer' must be null or {{'type', 'config', "
                              f"'iterations'}}; got {spec!r}")
    kind, config, iterations = spec["type"], spec["config"], spec["iterations"]
    known = {cls.__name__: cls for cls in optimizers.OPTIMIZERS.values()}
    if not isinstance(kind, str) or kind not in known:
        raise CheckpointError(f"{path!r}: optimizer type {kind!r} is not one of "
                              f"{sorted(known)}")
    if not isinstance(config, dict):
        raise CheckpointError(f"{path!r}: optimizer config must be a dict; got {config!r}")
    if type(iterations) is not int or iterations < 0:
        raise CheckpointError(f"{path!r}: optimizer iterations {iterations!r} is not an "
                              "int >= 0")
    try:
        return known[kind].from_config(config), iterations
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path!r}: optimizer {kind}: {exc}") from None


def _array_shapes(layers: list[Layer], optimizer) -> dict[str, tuple[int, ...]]:
    """Every array the architecture implies, by name: parameters, layer state, then
    optimizer state."""
    params = {f"{i}.{k}": tuple(s) for i, layer in enumerate(layers)
              for k, s in layer.param_shapes().items()}
    shapes = {f"param/{k}": s for k, s in params.items()}
    shapes.update({f"state/{i}.{k}": tuple(s) for i, layer in enumerate(layers)
                   for k, s in layer.state_shapes().items()})
    if optimizer is not None:
        shapes.update({f"opt/{k}/{slot}": s for k, s in params.items()
                       for slot in optimizer.slot_names()})
    return shapes


def _check_inventory(declared: _Declared, members: dict, path: str) -> _Declared:
    """The members are exactly the declared arrays (optimizer state: all of it, or none)."""
    present = set(members) - {_META}
    params = {k for k in declared.shapes if k.startswith(("param/", "state/"))}
    state = {k for k in declared.shapes if k.startswith("opt/")}
    held_state = {k for k in present if k.startswith("opt/")}
    if held_state and declared.optimizer is None:
        raise CheckpointError(f"{path!r} holds optimizer state ({_listed(held_state)}) but "
                              "names no optimizer")
    unexpected = present - params - state
    if unexpected:
        raise CheckpointError(f"{path!r}: unexpected members {_listed(unexpected)}: the "
                              "declared model has no such parameter, layer state or "
                              "optimizer state")
    if params - present:
        raise CheckpointError(f"{path!r}: missing members {_listed(params - present)} that "
                              "the declared layers need")
    if held_state and held_state != state:  # all slots or none (a model saved before a step)
        raise CheckpointError(f"{path!r}: optimizer state lacks "
                              f"{_listed(state - held_state)}")
    keep = params | held_state
    return dataclasses.replace(
        declared, shapes={k: s for k, s in declared.shapes.items() if k in keep})


def _listed(names) -> str:
    return repr(sorted(f"{name}.npy" for name in names))


def _check_sizes(declared: _Declared, members: dict, size: int, path: str) -> None:
    """The file is about as large as the model it declares, and that model fits in memory."""
    needed = declared.nbytes
    arrays = "parameters" + (" and optimizer state" if any(
        k.startswith("opt/") for k in declared.shapes) else "")
    if needed > size:
        raise CheckpointError(
            f"{path!r} declares {_size(needed)} of {arrays} ({_describe(declared.layers)}, "
            f"{declared.dtype}) but the file is only {_size(size)}")
    memory = _physical_memory()
    if memory is not None and needed > memory:
        raise CheckpointError(f"{path!r} declares {_size(needed)} of {arrays}, more than this "
                              f"machine's {_size(memory)} of memory")
    overhead = (len(declared.shapes) + 1) * (_MAX_NPY_HEADER + _MEMBER_OVERHEAD)
    justified = needed + members[_META].file_size + overhead + _END64.size + 2 * _TAIL
    if size > justified:
        raise CheckpointError(f"{path!r} is {_size(size)}, more than the {_size(justified)} "
                              "its declared model can account for")


def _describe(layers: list[Layer]) -> str:
    shown = ", ".join(_short(layer) for layer in layers[:4])
    return shown + (f", ... ({len(layers)} layers)" if len(layers) > 4 else "")


def _short(value, limit: int = 120) -> str:
    """``repr(value)``, cut to ``limit`` characters (a hostile width can have 4000 digits)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX, or the value is unknown
        return None


def _size(n: int) -> str:
    """'576.0 MB' for a byte count, whatever its size (a hostile file may declare 10**40)."""
    if n >= 10**18:
        return f"about 10^{len(str(n)) - 1} bytes"
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _open_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: str):
    """``zf.open(info)``, once the member's local header says what its directory entry says
    (zipfile reads by the entry; other zip readers go by the local header)."""
    fh = zf.fp
    assert fh is not None  # only a closed ZipFile has none, and the reader holds it open
    fh.seek(info.header_offset)
    local = fh.read(_LOCAL.size)
    if len(local) != _LOCAL.size:
        raise CheckpointError(f"{path!r}: member {info.filename!r} starts past the file's end")
    sig, _, flags, method, _, _, crc, stored, size, name_len, extra_len = _LOCAL.unpack(local)
    if flags & 0x8:  # CRC and sizes follow the data (a data descriptor), as in the entry
        crc, stored, size = info.CRC, info.compress_size, info.file_size
    else:
        extra = fh.read(name_len + extra_len)[name_len:]
        stored, size = _zip64_sizes(extra, stored, size)
    if (sig != b"PK\x03\x04" or flags != info.flag_bits or method != info.compress_type
            or crc != info.CRC or (stored, size) != (info.compress_size, info.file_size)):
        raise CheckpointError(f"{path!r}: member {info.filename!r} has a local header that "
                              "disagrees with its zip directory entry")
    return zf.open(info)


def _zip64_sizes(extra: bytes, stored: int, size: int) -> tuple[int, int]:
    """(stored, size) with the 0xFFFFFFFF placeholders replaced from a zip64 extra field."""
    while len(extra) >= 4:
        kind, length = struct.unpack_from("<HH", extra)
        if kind == 1:
            body = extra[4:4 + length]
            values = list(struct.unpack_from(f"<{len(body) // 8}Q", body))
            if size == 0xFFFFFFFF and values:  # the field's order: size first, then stored
                size = values.pop(0)
            if stored == 0xFFFFFFFF and values:
                stored = values.pop(0)
            break
        extra = extra[4 + length:]
    return stored, size


class _Limited:
    """The first ``limit`` bytes of ``stream``, counted: numpy's header parser gets no more."""

    def __init__(self, stream, limit: int):
        self._stream, self._left, self.taken = stream, limit, 0

    def read(self, n: int = -1) -> bytes:
        n = self._left if n is None or n < 0 else min(n, self._left)
        data = self._stream.read(n)
        self._left -= len(data)
        self.taken += len(data)
        return data


def _npy_header(stream, info: zipfile.ZipInfo, path: str):
    """(dtype, shape, fortran order, header bytes) of a member; reads at most a few KB."""
    limited = _Limited(stream, min(info.file_size, _MAX_NPY_HEADER))
    readers = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}
    try:
        version = npy_format.read_magic(limited)
        if version not in readers:
            raise ValueError(f".npy format version {version} is not 1.0 or 2.0")
        shape, fortran, dtype = readers[version](limited, max_header_size=_MAX_NPY_HEADER)
    except Exception as exc:  # numpy's header parser raises many types on hostile bytes
        reason = str(exc) if len(str(exc)) <= 200 else str(exc)[:197] + "..."
        raise CheckpointError(f"{path!r}: member {info.filename!r} has no valid .npy header "
                              f"({type(exc).__name__}: {reason})") from None
    return dtype, tuple(shape), fortran, limited.taken


def _check_member_size(info: zipfile.ZipInfo, header: int, nbytes: int, path: str) -> None:
    if info.file_size != header + nbytes:
        raise CheckpointError(f"{path!r}: member {info.filename!r} holds "
                              f"{info.file_size - header} bytes after its .npy header, but "
                              f"its shape and dtype need {nbytes}")


def _open_array(zf: zipfile.ZipFile, info: zipfile.ZipInfo, shape: tuple[int, ...],
                declared: _Declared, path: str):
    """(stream at the member's first data byte, fortran order), after checking its .npy
    header against ``shape`` and the declared dtype, and its size against both."""
    stream = _open_member(zf, info, path)
    try:
        dtype, got, fortran, header = _npy_header(stream, info, path)
        name = info.filename
        if dtype.hasobject:
            raise CheckpointError(f"{path!r}: member {name!r} holds Python objects (dtype "
                                  f"{dtype}), which only unpickling could read; xpnet never "
                                  "unpickles")
        if dtype != declared.dtype:
            raise CheckpointError(f"{path!r}: member {name!r} has dtype {dtype}; the "
                                  f"checkpoint declares {declared.dtype}")
        if got != shape:
            raise CheckpointError(f"{path!r}: member {name!r} ({_owner(name, declared)}) has "
                                  f"shape {_short(got)}, which does not fit the declared "
                                  f"model: it needs {_short(shape)}")
        _check_member_size(info, header, math.prod(shape) * dtype.itemsize, path)
    except BaseException:
        stream.close()
        raise
    return stream, fortran


def _owner(member: str, declared: _Declared) -> str:
    """'layer 2 (Dense)' for 'param/2.W.npy'; 'optimizer state of layer 2 (Dense)' for opt/."""
    array = member[:-len(".npy")]
    index = int(array.split("/")[1].split(".")[0])
    layer = f"layer {index} ({type(declared.layers[index]).__name__})"
    if array.startswith("state/"):
        return f"state of {layer}"
    return f"optimizer state of {layer}" if array.startswith("opt/") else layer


def _read_exactly(stream, n: int, info: zipfile.ZipInfo, path: str, out=None):
    """``n`` bytes of ``stream``, read in chunks into ``out`` (a writable buffer of ``n``
    bytes; a new bytearray by default), which is returned."""
    out = bytearray(n) if out is None else out
    view = memoryview(out).cast("B")
    done = 0
    while done < n:
        chunk = stream.read(min(_CHUNK, n - done))
        if not chunk:
            raise CheckpointError(f"{path!r}: member {info.filename!r} ends after {done} of "
                                  f"its {n} data bytes")
        view[done:done + len(chunk)] = chunk
        done += len(chunk)
    return out


def _read_arrays(zf: zipfile.ZipFile, members: dict, declared: _Declared,
                 path: str) -> dict[str, np.ndarray]:
    """Each declared array, read into one preallocated array; then their digest checked."""
    arrays = {}
    for name, shape in declared.shapes.items():
        info = members[name]
        stream, fortran = _open_array(zf, info, shape, declared, path)
        with stream:
            flat = np.empty(math.prod(shape), declared.dtype)
            _read_exactly(stream, flat.nbytes, info, path, out=flat)
        arrays[name] = flat.reshape(shape, order="F" if fortran else "C")
    if _digest(arrays) != declared.digest:
        raise CheckpointError(f"{path!r} is corrupted: its arrays do not match their checksum")
    return arrays
