"""Packaging: a light import, extras that match backends/*.txt, docstrings on the public API."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

import xpnet as xn
from xpnet.backend import table as backends

ROOT = pathlib.Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
REQUIRED_EXTRAS = ("cupy-cuda12", "cupy-cuda13", "torch", "jax", "strict", "test")

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli", reason="reading pyproject.toml needs tomllib or tomli")


def _pyproject() -> dict:
    if not PYPROJECT.exists():
        pytest.skip("not a source checkout: pyproject.toml is absent")
    return tomllib.loads(PYPROJECT.read_text())


def _extras() -> dict[str, list[str]]:
    """extra name -> the requirement files it is read from."""
    dynamic = _pyproject()["tool"]["setuptools"]["dynamic"]["optional-dependencies"]
    return {name: spec["file"] for name, spec in dynamic.items()}


def _requirement_lines(path: pathlib.Path) -> list[str]:
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line]


def _is_pep508(line: str) -> bool:
    try:
        from packaging.requirements import InvalidRequirement, Requirement
    except ImportError:  # a strict subset of PEP 508: name[extras] specifiers ; marker
        return re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,-]+\])?"
                            r"\s*([<>=!~]=?\s*[\w.*+!-]+\s*(,\s*[<>=!~]=?\s*[\w.*+!-]+\s*)*)?"
                            r"(\s*;.+)?", line) is not None
    try:
        Requirement(line)
    except InvalidRequirement:
        return False
    return True


# ----------------------------------------------------------------------------- import cost


def test_import_xpnet_does_not_import_gpu_or_heavy_libraries():
    code = ("import sys, json, xpnet\n"
            "heavy = ('cupy', 'torch', 'jax', 'jaxlib')\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n")
    env = {k: v for k, v in os.environ.items() if k != "XPNET_BACKEND"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_using_numpy_still_imports_nothing_heavy():
    code = ("import sys, json, xpnet as xn\n"
            "m = xn.mlp([2, 3, 1], seed=0)\n"
            "m.fit([[0.0, 1.0], [1.0, 0.0]], [1.0, 0.0], epochs=1)\n"
            "print(json.dumps(sorted(n for n in sys.modules\n"
            "                        if n.split('.')[0] in ('cupy', 'torch', 'jax'))))\n")
    env = {k: v for k, v in os.environ.items() if k != "XPNET_BACKEND"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


# ----------------------------------------------------------------------------- pyproject


def test_runtime_dependencies_are_numpy_and_array_api_compat_only():
    deps = _pyproject()["project"]["dependencies"]
    names = sorted(re.split(r"[\s<>=!~;\[]", d, maxsplit=1)[0].lower() for d in deps)
    assert names == ["array-api-compat", "numpy"]


def test_required_extras_exist():
    assert set(REQUIRED_EXTRAS) <= set(_extras())


def test_every_extra_points_at_existing_pep508_files():
    for extra, files in _extras().items():
        assert files, f"extra {extra!r} lists no files"
        for name in files:
            path = ROOT / name
            assert path.is_file(), f"extra {extra!r}: {name} does not exist"
            assert path.parent.name == "backends", f"extra {extra!r}: {name} not in backends/"
            lines = _requirement_lines(path)
            assert lines, f"{name} holds no requirements"
            for line in lines:
                assert _is_pep508(line), f"{name}: {line!r} is not a PEP 508 requirement"


def test_pep508_check_rejects_garbage():
    """Guards the test above: the checker must be able to say no."""
    assert _is_pep508("torch>=2.2")
    assert not _is_pep508("torch >=> 2")
    assert not _is_pep508("-e git+https://example.invalid/x")


def test_backend_extras_install_their_library():
    extras = _extras()
    expected = {"torch": "torch", "jax": "jax", "strict": "array-api-strict",
                "cupy-cuda12": "cupy-cuda12x", "cupy-cuda13": "cupy-cuda13x"}
    for extra, package in expected.items():
        lines = [line for f in extras[extra] for line in _requirement_lines(ROOT / f)]
        assert any(line.lower().startswith(package) for line in lines), (extra, lines)


def test_missing_library_messages_name_extras_that_exist():
    extras = _extras()
    for name, row in backends._TABLE.items():
        if name == "numpy":
            continue  # a dependency, never missing
        for extra in row.extra.split(" or "):
            assert extra in extras, f"backend {name!r} tells users to install [{extra}]"


def test_backend_files_ship_in_the_sdist():
    manifest = ROOT / "MANIFEST.in"
    text = manifest.read_text() if manifest.exists() else ""
    assert "backends/*.txt" in text or "graft backends" in text
    find = _pyproject()["tool"]["setuptools"]["packages"]["find"]
    assert find.get("include") == ["xpnet*"]  # never installs a top-level 'backends' package


def test_backends_readme_covers_every_backend():
    readme = ROOT / "backends" / "README.md"
    assert readme.is_file()
    text = readme.read_text()
    for name in backends.NAMES:
        assert name in text, f"backends/README.md does not mention {name}"


# ----------------------------------------------------------------------------- docstrings


def _documented(obj) -> bool:
    doc = obj.__doc__ if inspect.isclass(obj) else inspect.getdoc(obj)
    return bool(doc and doc.strip())


def test_every_public_name_has_a_docstring():
    missing = [name for name in xn.__all__ if not _documented(getattr(xn, name))]
    assert missing == []


def test_public_methods_of_public_classes_have_docstrings():
    missing = []
    for name in xn.__all__:
        cls = getattr(xn, name)
        if not inspect.isclass(cls) or issubclass(cls, BaseException):
            continue
        for attr, value in vars(cls).items():
            if attr.startswith("_") or not (inspect.isfunction(value) or
                                            isinstance(value, property)):
                continue
            if not _documented(value):
                missing.append(f"{name}.{attr}")
    assert missing == []


def _modules() -> list[str]:
    """Every module of the package, by dotted name."""
    names = []
    for path in sorted((ROOT / "xpnet").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


@pytest.mark.parametrize("module", _modules())
def test_every_module_lists_what_it_offers_in_all(module):
    # read the source first: a module without __all__ fails here even where its optional
    # library is missing
    path = ROOT / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = ROOT / module.replace(".", "/") / "__init__.py"
    assert re.search(r"^__all__\b", path.read_text(), re.MULTILINE), f"{module} has no __all__"
    imported = importlib.import_module(module)
    missing = [name for name in imported.__all__ if not hasattr(imported, name)
               and importlib.util.find_spec(f"{module}.{name}") is None]
    assert missing == [], f"{module}.__all__ names what it does not define: {missing}"


def test_all_names_exist_and_version_is_set():
    for name in xn.__all__:
        assert hasattr(xn, name), name
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", xn.__version__)
    assert xn.__version__ == _pyproject()["project"]["version"]
