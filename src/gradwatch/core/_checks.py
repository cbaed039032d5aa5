"""Argument checks shared by core: each error names the argument, what it got, what it needs."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch


def tensor(name: str, value: Any, *, ndim: int | tuple[int, ...] | None = None) -> torch.Tensor:
    """Return ``value`` if it is a finite floating tensor of the wanted rank, else raise."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if value.ndim not in allowed:
            raise ValueError(
                f"{name}: expected a tensor with {' or '.join(map(str, allowed))} dimensions, "
                f"got shape {tuple(value.shape)}"
            )
    if value.numel() == 0:
        raise ValueError(f"{name}: got an empty tensor of shape {tuple(value.shape)}")
    finite(name, value)
    return value


def finite(name: str, value: torch.Tensor) -> None:
    """Raise if a floating tensor holds NaN or Inf (one host sync, at the call's entry)."""
    if value.is_floating_point() or value.is_complex():
        bad = int((~torch.isfinite(value)).sum())
        if bad:
            raise ValueError(f"{name}: holds {bad} NaN/Inf entries; inputs must be finite")


def callable_(name: str, value: Any) -> Callable[..., Any]:
    if not callable(value):
        raise TypeError(f"{name}: expected a callable, got {type(value).__name__}")
    return value


def number(
    name: str,
    value: Any,
    *,
    positive: bool = False,
    nonnegative: bool = False,
) -> float:
    """A finite real number, optionally > 0 or >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name}: expected a finite number, got {value}")
    if positive and v <= 0:
        raise ValueError(f"{name}: must be > 0, got {value}")
    if nonnegative and v < 0:
        raise ValueError(f"{name}: must be >= 0, got {value}")
    return v


def count(name: str, value: Any, *, low: int = 1, high: int | None = None) -> int:
    """An int in [low, high]; ``high`` is usually the dimension that bounds it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        span = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ValueError(f"{name}: must be {span}, got {value}")
    return value


def choice(name: str, value: Any, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, options))}, got {value!r}")
    return str(value)
