"""The command line: ``python -m xpnet info | train | predict`` (see ``cli.main``)."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
