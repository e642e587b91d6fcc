"""The package version (its own module, so the ground floor can report it without importing
the package's public face)."""

__all__ = ["__version__"]

__version__ = "0.1.0"
