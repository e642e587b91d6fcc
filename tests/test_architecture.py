"""The layout holds: floors import only downward, no import circles, no backend-name branches.

Read from the package's own source with ``ast`` (nothing is imported), so a violation is
found whether or not the offending line runs. Every import counts, function-level ones
too: a deferred import is still a dependency. The floors are those of
``docs/architecture.md``.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

from xpnet.backend.table import _ALIASES, NAMES

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "xpnet"
TABLE = "xpnet.backend.table"

# the floor of every top-level part of the package; a module imports only its floor or below
FLOORS = {
    "xpnet.version": 0, "xpnet.checks": 0, "xpnet.interrupts": 0, "xpnet.backend": 0,
    "xpnet.nn": 1, "xpnet.data": 1,
    "xpnet.io": 2, "xpnet.train": 2, "xpnet.distributed": 2,
    "xpnet.model": 3,
    "xpnet.cli": 4, "xpnet.sklearn": 4, "xpnet.plot": 4, "xpnet.testing": 4,
    "xpnet": 5, "xpnet.__main__": 5,
}


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ["xpnet", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _resolve(module: str, node: ast.ImportFrom) -> list[str]:
    """The xpnet modules an ``import from`` statement in ``module`` depends on."""
    if node.level:
        base = module.split(".")
        if not _is_package(module):
            base = base[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if not target.startswith("xpnet"):
        return []
    names = [f"{target}.{alias.name}" for alias in node.names]
    submodules = [name for name in names if name in MODULES]
    return submodules if submodules and len(submodules) == len(names) else [target]


def _imports(module: str, source: str | None = None) -> set[str]:
    tree = ast.parse(MODULES[module].read_text() if source is None else source)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            found.update(_resolve(module, node))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("xpnet"))
    return {name for name in found if name in MODULES and name != module}


GRAPH = {module: _imports(module) for module in MODULES}


def _floor(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in FLOORS:
            return FLOORS[prefix]
    raise AssertionError(f"{module} is on no floor: add it to FLOORS and docs/architecture.md")


def test_every_module_is_on_a_floor():
    for module in MODULES:
        _floor(module)


def test_no_module_imports_from_a_floor_above_its_own():
    upward = sorted(f"{m} (floor {_floor(m)}) imports {t} (floor {_floor(t)})"
                    for m, targets in GRAPH.items() for t in targets if _floor(t) > _floor(m))
    assert upward == []


def _cycle() -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(GRAPH[node]):
            # a package's __init__ re-exports its submodules: that edge is its own content
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for module in sorted(GRAPH):
        if module not in state:
            found = visit(module)
            if found:
                return found
    return None


def test_no_import_circles():
    assert _cycle() is None


def test_the_circle_check_can_say_no():
    """Guards the test above: a planted circle is found."""
    GRAPH["xpnet.backend.kernels"].add("xpnet.model")
    try:
        assert _cycle() is not None
    finally:
        GRAPH["xpnet.backend.kernels"].discard("xpnet.model")


BACKEND_WORDS = set(NAMES) | set(_ALIASES)


def _names_a_backend(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.lower() in BACKEND_WORDS
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_names_a_backend(e) for e in node.elts)
    return False


def _backend_branches(source: str) -> list[int]:
    """Lines that compare something with a backend's name (==, !=, in, match, startswith)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and any(
                _names_a_backend(side) for side in [node.left, *node.comparators]):
            lines.append(node.lineno)
        elif isinstance(node, ast.match_case) and _names_a_backend(
                getattr(node.pattern, "value", None) or ast.Constant(None)):
            lines.append(node.pattern.lineno)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("startswith", "endswith")
              and any(_names_a_backend(a) for a in node.args)):
            lines.append(node.lineno)
    return lines


def test_no_backend_name_branches_outside_the_table():
    found = {module: _backend_branches(path.read_text()) for module, path in MODULES.items()
             if module != TABLE}
    assert {m: lines for m, lines in found.items() if lines} == {}


@pytest.mark.parametrize("code", [
    'if backend.name == "jax": pass',
    'x = name != "cupy"',
    'y = b.name in ("torch", "numpy")',
    'z = mod.startswith("torch")',
    'match name:\n    case "strict":\n        pass',
])
def test_the_branch_check_can_say_no(code):
    assert _backend_branches(code)


def test_the_rules_see_function_level_imports():
    """A deferred import is still a dependency: the old model <-> io circle went through one."""
    source = "def load():\n    from ..model import Sequential\n"
    assert _imports("xpnet.io.checkpoint", source) == {"xpnet.model"}


def test_the_layout_doc_names_every_package_and_its_floor():
    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    for part in FLOORS:
        name = part.removeprefix("xpnet.").removeprefix("xpnet")
        if name and not name.startswith("__"):
            assert name in doc, f"docs/architecture.md does not mention {name}"
