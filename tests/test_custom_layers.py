"""docs/custom-layers.md runs as written: its Python blocks, in order, in one namespace."""

from __future__ import annotations

import pathlib
import re

import xpnet as xn

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "custom-layers.md"


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.DOTALL | re.MULTILINE)


def test_the_custom_layers_page_runs(capsys):
    blocks = _python_blocks(DOC.read_text())
    assert len(blocks) >= 5  # the layer, the model, check_grads, parity, save and load
    namespace: dict = {}
    try:
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102
        assert xn.nn.layers.LAYERS["SkipDense"] is namespace["SkipDense"]
        assert "gradient check (passed" in capsys.readouterr().out
    finally:
        xn.nn.layers.LAYERS.pop("SkipDense", None)


def test_the_page_is_linked_from_the_readme():
    readme = (DOC.parent.parent / "README.md").read_text()
    assert "docs/custom-layers.md" in readme
