"""Interleaved timing: A B C A B C ... in one process, medians per variant.

Interleaving spreads drift (thermal, other processes, allocator state) evenly over the
variants, so their ratios are fair even on a busy machine.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable

import torch


def interleaved(variants: dict[str, Callable[[], None]], rounds: int, warmup: int = 2
                ) -> dict[str, list[float]]:
    """Per variant, the list of ``rounds`` timings (seconds) of one call each."""
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def read_all(params: list[torch.Tensor]) -> None:
    """The floor: read every gradient byte once, in one fused ``_foreach_norm``.

    Right after backward it was the cheapest full read measured on this project's 2-core VM
    (16-layer MLP's gradients: 2.6 ms, against 8-127 ms for one BLAS dot or one float64 norm
    per tensor, which wake threads that contend with torch's still-spinning pool).
    """
    torch._foreach_norm([p.grad for p in params if p.grad is not None])


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch "
            f"threads, torch {torch.__version__}, Python {platform.python_version()}")
