"""gradwatch: make the learning signal of a PyTorch model visible."""

from __future__ import annotations

__version__ = "0.1.0"

__all__: list[str] = ["__version__"]
