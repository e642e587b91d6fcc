"""The wheel and the sdist: what each ships, and that the sdist tests itself.

Built once per session with ``python -m build --no-isolation`` (the test extra installs
build and setuptools), so no index is needed here.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tarfile
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> pathlib.Path:
    if not (ROOT / "pyproject.toml").exists():
        pytest.skip("not a source checkout: pyproject.toml is absent")
    pytest.importorskip("build", reason="building the distributions needs `pip install build`")
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--sdist",
                             "--wheel", "--outdir", str(out), str(ROOT)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def _one(dist: pathlib.Path, pattern: str) -> pathlib.Path:
    found = sorted(dist.glob(pattern))
    assert len(found) == 1, f"expected one {pattern} in {dist}: {found}"
    return found[0]


def test_wheel_ships_license_typing_marker_and_every_module(dist):
    names = set(zipfile.ZipFile(_one(dist, "*.whl")).namelist())
    assert "xpnet/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), sorted(names)[:20]
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "xpnet").rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    assert not any(n.startswith(("tests/", "bench/")) for n in names)


def test_wheel_metadata_has_license_urls_and_classifiers(dist):
    wheel = zipfile.ZipFile(_one(dist, "*.whl"))
    meta = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    text = wheel.read(meta).decode()
    assert "License-Expression: MIT" in text
    assert "Project-URL: Changelog" in text and "Classifier: Typing :: Typed" in text


def test_sdist_carries_what_its_tests_need(dist):
    with tarfile.open(_one(dist, "*.tar.gz")) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    tracked = subprocess.run(["git", "ls-files", "tests", "examples", "bench", "backends"],
                             cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout: cannot list the tracked files")
    wanted = {n for n in tracked.stdout.split() if not n.startswith("bench/results/")}
    assert wanted <= names, sorted(wanted - names)
    assert {"LICENSE", "CHANGELOG.md", "README.md", "xpnet/py.typed"} <= names


def test_sdist_runs_tests_from_its_own_contents(dist, tmp_path):
    with tarfile.open(_one(dist, "*.tar.gz")) as tar:
        tar.extractall(tmp_path, filter="data")
    (root,) = tmp_path.iterdir()
    env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    code = "import xpnet, sys; print(xpnet.__file__)"
    where = subprocess.run([sys.executable, "-c", code], cwd=root, env=env,
                           capture_output=True, text=True, timeout=60)
    assert where.stdout.strip().startswith(str(root)), where.stdout + where.stderr
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "-x", "tests/test_model.py", "tests/test_examples.py"],
                            cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout
