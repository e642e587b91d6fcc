"""docs/custom-layers.md runs as written: its Python blocks, in order, in one namespace."""

from __future__ import annotations

import pathlib
import re
import warnings

import pytest

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


def test_saving_an_unregistered_layer_warns_that_load_will_refuse_it(tmp_path):
    class Halving(xn.Layer):
        """Y = X / 2."""

        def forward(self, params, X, ctx):
            return X * 0.5, lambda dY, need_dX=True: (dY * 0.5, {})

    model = xn.Sequential(xn.Dense(3, 2), xn.Residual(Halving()), seed=0)
    path = tmp_path / "halving.npz"
    with pytest.warns(UserWarning, match=r"layer 1\.0 \(Halving\) is not a registered"):
        model.save(path)
    with pytest.raises(xn.CheckpointError, match=r"@xn.register_layer"):
        xn.load(path)
    xn.register_layer(Halving)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model.save(path)
        assert isinstance(xn.load(path).layers[1].layers[0], Halving)
    finally:
        xn.nn.layers.LAYERS.pop("Halving", None)
