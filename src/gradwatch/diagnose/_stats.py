"""Small helpers over RunHistory tables (NaN means absent and is ignored)."""

from __future__ import annotations

import math

import torch

from gradwatch.watch.history import RunHistory

WEIGHT_LAYERS = (
    "Linear",
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
    "Bilinear",
    "LazyLinear",
)


def col_median(t: torch.Tensor) -> torch.Tensor:
    """(S, C) -> (C,) median over steps, ignoring NaN."""
    return t.nanmedian(dim=0).values if t.numel() else torch.full((t.shape[1],), math.nan)


def total_norm(h: RunHistory) -> torch.Tensor:
    """(S,) total gradient norm per step over present layers (NaN when non-finite)."""
    g = h["grad_norm"]
    return g.nan_to_num(nan=0.0).square().sum(dim=1).sqrt()


def early(h: RunHistory, frac: float = 0.25) -> slice:
    """The first quarter of the recorded steps (at least one): the run near its init."""
    return slice(0, max(1, math.ceil(len(h) * frac)))


def late(h: RunHistory, frac: float = 0.25) -> slice:
    n = len(h)
    return slice(n - max(1, math.ceil(n * frac)), n)
