"""Forge checkpoints the way an attacker would: any zip, then a valid xpnet seal.

The seal is a SHA-256 that anyone can compute, so a hostile file passes it; these helpers
build such files so that tests reach the structural checks behind the seal. Imported by
the checkpoint tests (this module is not collected: its name does not start with test_).
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import tracemalloc
import warnings
import zipfile
import zlib

import numpy as np

from xpnet.io import checkpoint as xio

END = struct.Struct("<4s4H2LH")  # zip end of central directory record
ENTRY = struct.Struct("<4s6H3L5H2L")  # central directory entry (46 bytes, before the name)
LOCAL = struct.Struct("<4s5H3L2H")  # local file header (30 bytes, before the name)
# field indices in ENTRY / LOCAL
E_FLAGS, E_METHOD, E_CRC, E_CSIZE, E_USIZE, E_NLEN, E_XLEN, E_CLEN, E_OFFSET = (
    3, 4, 7, 8, 9, 10, 11, 12, 16)
L_FLAGS, L_METHOD, L_CRC, L_CSIZE, L_USIZE, L_NLEN, L_XLEN = 2, 3, 6, 7, 8, 9, 10


def seal(body: bytes) -> bytes:
    """``body`` (a zip without a comment: its end record is its last 22 bytes) sealed as
    ``xpnet.save`` seals: the comment is the tag and the SHA-256 of every byte before it."""
    if body[-END.size:-END.size + 4] != b"PK\x05\x06":
        raise ValueError("seal: the zip must end with its end record (no comment)")
    comment = len(xio._SEAL) + xio._HEX
    body = body[:-2] + struct.pack("<H", comment) + xio._SEAL
    return body + hashlib.sha256(body).hexdigest().encode()


def unseal(raw: bytes) -> bytes:
    """The zip without the seal (comment removed), ready to be edited and sealed again."""
    tail = len(xio._SEAL) + xio._HEX
    body = raw[:-tail]
    return body[:-2] + b"\0\0"


def npy(array) -> bytes:
    """The .npy bytes of ``array`` as ``np.save`` writes them (never pickling)."""
    buf = io.BytesIO()
    np.save(buf, np.asanyarray(array), allow_pickle=False)
    return buf.getvalue()


def npy_with_header(header: str, data: bytes, version: tuple[int, int] = (1, 0)) -> bytes:
    """A .npy member with an arbitrary header dict text (padded as numpy pads it)."""
    magic = b"\x93NUMPY" + bytes(version)
    length = "<H" if version == (1, 0) else "<I"
    prefix = len(magic) + struct.calcsize(length)
    text = header.encode("latin1")
    text += b" " * ((-(prefix + len(text) + 1)) % 64) + b"\n"
    return magic + struct.pack(length, len(text)) + text + data


def meta_member(meta) -> bytes:
    """The metadata member for ``meta`` (any JSON value, or raw text when a str)."""
    text = meta if isinstance(meta, str) else json.dumps(meta)
    return npy(np.array(text))


def build_zip(members, compress: int = zipfile.ZIP_STORED) -> bytes:
    """A zip holding ``members`` (name, bytes) in order; duplicates are kept."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = compress
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # zipfile warns on duplicates
                zf.writestr(info, data)
    return buf.getvalue()


def forge(members, compress: int = zipfile.ZIP_STORED) -> bytes:
    """A sealed checkpoint file holding ``members`` (name, bytes)."""
    return seal(build_zip(members, compress))


def members_of(raw: bytes) -> list[tuple[str, bytes]]:
    """(name, bytes) of every member of a checkpoint, in order."""
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        return [(info.filename, zf.read(info)) for info in zf.infolist()]


def arrays_and_meta(raw: bytes) -> tuple[dict, dict]:
    """The arrays (by npz name) and the parsed metadata of a valid checkpoint."""
    with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    return arrays, json.loads(str(arrays.pop(xio._META)[()]))


def encode(arrays: dict, meta: dict, fix_digest: bool = True) -> bytes:
    """A sealed checkpoint from arrays (npz names) and metadata, with the arrays' digest
    recomputed (when it can be) so only the structure differs from a valid file."""
    meta = dict(meta)
    if fix_digest:
        try:
            meta["sha256"] = xio._digest(arrays)
        except Exception:  # object arrays have no buffer; the reader refuses them anyway
            meta["sha256"] = "0" * 64
    return xio._encode({**arrays, xio._META: np.array(json.dumps(meta))})


def directory(raw: bytes) -> tuple[int, int, list[tuple[int, list]]]:
    """(directory offset, end record offset, [(entry offset, entry fields)]) of a zip."""
    end_at = raw.rfind(b"PK\x05\x06")
    fields = END.unpack_from(raw, end_at)
    count, offset = fields[4], fields[6]
    entries, at = [], offset
    for _ in range(count):
        entry = list(ENTRY.unpack_from(raw, at))
        entries.append((at, entry))
        at += ENTRY.size + entry[E_NLEN] + entry[E_XLEN] + entry[E_CLEN]
    return offset, end_at, entries


def patch_entry(raw: bytes, index: int, **changes) -> bytes:
    """``raw`` (sealed) with central directory entry ``index``'s fields changed, resealed.
    ``changes`` maps E_* index names (lowercase, without E_) to new values."""
    body = bytearray(unseal(raw))
    _, _, entries = directory(bytes(body))
    at, entry = entries[index]
    for key, value in changes.items():
        entry[globals()[f"E_{key.upper()}"]] = value
    body[at:at + ENTRY.size] = ENTRY.pack(*entry)
    return seal(bytes(body))


def patch_local(raw: bytes, index: int, **changes) -> bytes:
    """``raw`` (sealed) with member ``index``'s local header fields changed, resealed."""
    body = bytearray(unseal(raw))
    _, _, entries = directory(bytes(body))
    at = entries[index][1][E_OFFSET]
    local = list(LOCAL.unpack_from(body, at))
    for key, value in changes.items():
        local[globals()[f"L_{key.upper()}"]] = value
    body[at:at + LOCAL.size] = LOCAL.pack(*local)
    return seal(bytes(body))


def patch_end(raw: bytes, **changes) -> bytes:
    """``raw`` (sealed) with end-record fields changed (entries, dir_size, dir_offset)."""
    body = bytearray(unseal(raw))
    end_at = len(body) - END.size
    fields = list(END.unpack_from(body, end_at))
    names = {"entries_here": 3, "entries": 4, "dir_size": 5, "dir_offset": 6}
    for key, value in changes.items():
        fields[names[key]] = value
    body[end_at:] = END.pack(*fields)
    return seal(bytes(body))


def with_zip64_end(raw: bytes) -> bytes:
    """``raw`` with a zip64 end record and locator before its end record, as zipfile
    writes past 4 GiB: the plain record's directory offset becomes 0xFFFFFFFF."""
    body = unseal(raw)
    end_at = len(body) - END.size
    fields = list(END.unpack_from(body, end_at))
    entries, dir_size, dir_offset = fields[4], fields[5], fields[6]
    record = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries,
                         dir_size, dir_offset)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, end_at, 1)
    fields[6] = 0xFFFFFFFF
    return seal(body[:end_at] + record + locator + END.pack(*fields))


def deflate_bomb(shape: tuple[int, ...], zeros: int, crc: bool = False):
    """(raw deflate data, CRC-32 or 0, inflated size): an .npy header for ``shape``
    float32, then ``zeros`` zero bytes (a multiple of 1 MiB), about 1 KB per MiB. Built
    from one compressed MiB repeated: a full flush makes each copy independent."""
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    header = npy_with_header(
        f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape!r}, }}", b"")
    chunk = bytes(1 << 20)
    head = z.compress(header) + z.flush(zlib.Z_FULL_FLUSH)
    block = z.compress(chunk) + z.flush(zlib.Z_FULL_FLUSH)
    copies = zeros // len(chunk)
    checksum = 0
    if crc:
        checksum = zlib.crc32(header)
        for _ in range(copies):
            checksum = zlib.crc32(chunk, checksum)
    return head + block * copies + z.flush(), checksum, len(header) + copies * len(chunk)


def raw_zip(entries) -> bytes:
    """An unsealed zip written field by field, so its headers can say anything: each entry
    is (name, payload) or (name, payload, method, crc, claimed size); crc and size default
    to the payload's own."""
    body, cd, offset = [], [], 0
    for name, payload, *claims in entries:
        method, crc, size = claims or (zipfile.ZIP_STORED, None, None)
        crc = zlib.crc32(payload) if crc is None else crc
        size = len(payload) if size is None else size
        encoded = name.encode()
        local = LOCAL.pack(b"PK\x03\x04", 20, 0, method, 0, 0x21, crc, len(payload), size,
                           len(encoded), 0)
        cd.append(ENTRY.pack(b"PK\x01\x02", 20, 20, 0, method, 0, 0x21, crc, len(payload),
                             size, len(encoded), 0, 0, 0, 0, 0, offset) + encoded)
        body += [local, encoded, payload]
        offset += len(local) + len(encoded) + len(payload)
    directory = b"".join(cd)
    count = len(entries)
    end = END.pack(b"PK\x05\x06", 0, 0, count, count, len(directory), offset, 0)
    return b"".join(body) + directory + end


def peak_allocation(fn, *args, **kwargs):
    """(result or the exception raised, peak bytes traced by tracemalloc while it ran)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:  # returned, so the caller checks its type
            result = exc
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
