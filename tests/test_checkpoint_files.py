"""Saved checkpoint files: their mode, and errors that name the caller's path.

A new checkpoint gets the mode ``open(path, "w")`` would give it (0666 less the umask), an
overwritten one keeps its mode, and every failure names the path the caller passed (not
the temporary ``.xpnet-*.tmp``) and leaves no temporary file behind.
"""

from __future__ import annotations

import errno
import os
import stat

import numpy as np
import pytest

import xpnet as xn
from xpnet.io import checkpoint as xio

posix_modes = pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")


def _model(seed=0):
    return xn.mlp([4, 6, 3], seed=seed, backend="numpy")


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _temporaries(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".xpnet-"))


@pytest.fixture
def umask():
    """Set the process umask for one test; the previous one is restored after."""
    saved = os.umask(0o022)
    os.umask(saved)
    yield os.umask
    os.umask(saved)


# --------------------------------------------------------------------------- modes


@posix_modes
@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002, 0o027], ids=oct)
def test_a_new_checkpoint_gets_the_mode_open_would_give(tmp_path, umask, mask):
    umask(mask)
    _model().save(tmp_path / "m.npz")
    with open(tmp_path / "plain.txt", "w"):
        pass
    assert _mode(tmp_path / "m.npz") == _mode(tmp_path / "plain.txt") == 0o666 & ~mask


@posix_modes
@pytest.mark.parametrize("existing", [0o644, 0o640, 0o600, 0o664], ids=oct)
@pytest.mark.parametrize("mask", [0o022, 0o077], ids=oct)
def test_overwriting_a_checkpoint_keeps_its_mode(tmp_path, umask, existing, mask):
    path = tmp_path / "m.npz"
    _model(seed=1).save(path)
    os.chmod(path, existing)
    umask(mask)
    _model(seed=2).save(path)
    assert _mode(path) == existing
    np.testing.assert_array_equal(xn.load(path, backend="numpy").params["0.W"],
                                  _model(seed=2).params["0.W"])


@posix_modes
def test_the_temporary_file_is_never_wider_than_the_file_it_becomes(tmp_path, umask,
                                                                    monkeypatch):
    """Replacing a 0600 file under umask 022: the temporary is 0600 when it is swapped in."""
    path = tmp_path / "m.npz"
    _model().save(path)
    os.chmod(path, 0o600)
    umask(0o022)
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append(_mode(src))
        return real_replace(src, dst)

    monkeypatch.setattr(xio.os, "replace", spy)
    _model(seed=1).save(path)
    assert seen == [0o600] and _mode(path) == 0o600


# --------------------------------------------------------------------------- errors


def _assert_names_the_path(exc: BaseException, path) -> None:
    message = str(exc)
    assert str(path) in message, message
    assert ".xpnet-" not in message and ".tmp" not in message, message


def test_a_missing_folder_is_an_error_naming_the_path(tmp_path):
    path = tmp_path / "missing" / "m.npz"
    with pytest.raises(FileNotFoundError) as info:
        _model().save(path)
    _assert_names_the_path(info.value, path)
    assert list(tmp_path.iterdir()) == []


def test_a_path_that_is_a_folder_is_an_error_naming_the_path(tmp_path):
    path = tmp_path / "m.npz"
    path.mkdir()
    with pytest.raises(IsADirectoryError) as info:
        _model().save(path)
    _assert_names_the_path(info.value, path)
    assert _temporaries(tmp_path) == [] and list(path.iterdir()) == []


def test_a_path_under_a_file_is_an_error_naming_the_path(tmp_path):
    (tmp_path / "file").write_text("x")
    path = tmp_path / "file" / "m.npz"
    with pytest.raises(NotADirectoryError) as info:
        _model().save(path)
    _assert_names_the_path(info.value, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="needs POSIX permissions, which root ignores")
def test_a_folder_without_write_permission_is_an_error_naming_the_path(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(PermissionError) as info:
            _model().save(folder / "m.npz")
    finally:
        folder.chmod(0o700)
    _assert_names_the_path(info.value, folder / "m.npz")
    assert list(folder.iterdir()) == []


def _failing(exc: OSError):
    def fail(*args, **kwargs):
        raise exc
    return fail


def _failing_on_temporaries(real_open, exc: OSError):
    def fail(name, *args, **kwargs):
        if os.path.basename(os.fspath(name)).startswith(".xpnet-"):
            raise exc
        return real_open(name, *args, **kwargs)
    return fail


@pytest.mark.parametrize("target, exc, kind", [
    ("open", PermissionError(errno.EACCES, "Permission denied"), PermissionError),
    ("fsync", OSError(errno.ENOSPC, "No space left on device"), OSError),
    ("replace", OSError(errno.EXDEV, "Invalid cross-device link"), OSError),
    ("replace", OSError("simulated failure without an errno"), OSError),
], ids=["not writable", "disk full", "cross-device", "no errno"])
def test_every_save_error_names_the_path_and_leaves_the_old_file(tmp_path, monkeypatch,
                                                                 target, exc, kind):
    path = tmp_path / "m.npz"
    _model(seed=1).save(path)
    before = path.read_bytes()
    if target == "open":
        monkeypatch.setattr(xio.os, "open", _failing_on_temporaries(os.open, exc))
    else:
        monkeypatch.setattr(xio.os, target, _failing(exc))
    with pytest.raises(kind) as info:
        _model(seed=2).save(path)
    monkeypatch.undo()
    _assert_names_the_path(info.value, path)
    assert str(exc.strerror or exc) in str(info.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


def test_a_write_that_fails_midway_names_the_path_and_leaves_no_temporary(tmp_path,
                                                                          monkeypatch):
    path = tmp_path / "m.npz"
    real_fdopen = os.fdopen

    class _Full:
        def __init__(self, fh):
            self._fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._fh.close()

        def write(self, data):
            self._fh.write(data[:100])
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(xio.os, "fdopen", lambda fd, mode: _Full(real_fdopen(fd, mode)))
    with pytest.raises(OSError) as info:
        _model().save(path)
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    _assert_names_the_path(info.value, path)
    assert list(tmp_path.iterdir()) == []
