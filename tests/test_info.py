"""The ``info`` report as data: what ``xpnet info`` prints comes from this dict."""

from __future__ import annotations

import numpy as np

import xpnet as xn
from xpnet.backend import NAMES
from xpnet.backend.info import format_report, report


def test_report_lists_every_backend_once_usable_or_with_a_reason():
    info = report()
    assert info["xpnet"] == xn.__version__
    assert info["numpy"] == np.__version__
    usable = {row["name"]: row for row in info["usable"]}
    unusable = {row["name"]: row["reason"] for row in info["unusable"]}
    assert sorted([*usable, *unusable]) == sorted(NAMES)
    assert usable["numpy"]["devices"] == ["cpu"]
    assert sorted(usable) == sorted(xn.available())
    assert all(reason and "\n" not in reason for reason in unusable.values())


def test_format_report_prints_one_line_per_backend():
    info = {"xpnet": "9.9", "python": "3.x", "system": "Sys", "machine": "m", "numpy": "2.0",
            "blas": "openblas 1", "unusable": [{"name": "cupy", "reason": "no GPU"}],
            "usable": [{"name": "numpy", "version": "2.0", "devices": ["cpu"]},
                       {"name": "jax", "version": "0.1", "devices": ["cpu:0", "cpu:1"]}]}
    lines = format_report(info).splitlines()
    assert lines[:3] == ["xpnet 9.9  Python 3.x  Sys m", "numpy 2.0  BLAS: openblas 1",
                         "backends usable here:"]
    assert lines[3].split() == ["numpy", "2.0", "cpu"]
    assert lines[4].split() == ["jax", "0.1", "cpu:0,", "cpu:1"]
    assert lines[5:] == ["not usable here:", f"  {'cupy':<17} no GPU"]
