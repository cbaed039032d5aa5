"""Labs: each reruns a classic claim about gradients as an experiment and returns a LabResult.

One file per lab, registered under a short name with ``@register("name")``.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable

from gradwatch.labs.base import (
    Claim,
    LabConfig,
    LabResult,
    Plot,
    Series,
    Table,
    listening,
    steps,
)

__all__ = [
    "REGISTRY",
    "Claim",
    "LabConfig",
    "LabResult",
    "Plot",
    "Series",
    "Table",
    "listening",
    "register",
    "run_lab",
    "steps",
]

LabFn = Callable[[LabConfig], LabResult]
REGISTRY: dict[str, LabFn] = {}
# Imported on first use; each registers itself. Order = the order `gradwatch labs` runs them.
_MODULES = (
    "depth",
    "edge_of_chaos",
    "through_time",
    "long_range",
    "clipping",
    "genomics",
    "gan",
    "chaos",
    "control",
    "topology",
    "saliency",
)


def register(name: str) -> Callable[[LabFn], LabFn]:
    """Decorator: make a lab function runnable as ``gradwatch labs NAME``."""

    def add(fn: LabFn) -> LabFn:
        REGISTRY[name] = fn
        return fn

    return add


def available() -> list[str]:
    """Names of the registered labs, in the order they run."""
    for mod in _MODULES:
        importlib.import_module(f"gradwatch.labs.{mod}")
    return list(REGISTRY)


def run_lab(name: str, config: LabConfig | None = None) -> LabResult:
    """Run one lab by name and time it.

    Example:
        >>> res = run_lab("depth", LabConfig(size="smoke"))        # doctest: +SKIP
        >>> [c.verdict for c in res.claims]                          # doctest: +SKIP
    """
    names = available()
    if name not in REGISTRY:
        raise ValueError(f"name: unknown lab {name!r}; expected one of {', '.join(names)}")
    cfg = config or LabConfig()
    t0 = time.perf_counter()
    result = REGISTRY[name](cfg)
    return result.replace(seconds=time.perf_counter() - t0)
