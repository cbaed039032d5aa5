"""Fused per-layer statistics on the tensors' device: a few multi-tensor kernels, no host sync."""

from __future__ import annotations

import torch


def segment_sum(values: torch.Tensor, segment: torch.Tensor, n: int) -> torch.Tensor:
    """(P,) values summed into (n,) segments: values[i] goes to segment[i]."""
    return torch.zeros(n, dtype=values.dtype, device=values.device).index_add_(0, segment, values)


def segment_norms(
    tensors: list[torch.Tensor], segment: torch.Tensor, n: int, dtype: torch.dtype
) -> torch.Tensor:
    """L2 norm per segment: tensors[i] belongs to segment[i]; returns (n,) in ``dtype``.

    One ``_foreach_norm`` over every tensor, then a scatter-add of the squares, so the cost
    is one read of the data whatever the number of layers.
    """
    if not tensors:
        return torch.zeros(n, dtype=dtype, device=segment.device)
    sq = torch.stack(torch._foreach_norm(tensors, 2, dtype=dtype)).square()  # (P,)
    return segment_sum(sq, segment, n).sqrt()  # (n,)


def segment_nonfinite(
    tensors: list[torch.Tensor], segment: torch.Tensor, n: int, dtype: torch.dtype
) -> torch.Tensor:
    """Count of NaN/Inf entries per segment, (n,) in ``dtype``.

    x * 0 is 0 for finite x and NaN otherwise, and the 0-"norm" counts non-zeros: two fused
    passes instead of a boolean mask and a sum per tensor.
    """
    if not tensors:
        return torch.zeros(n, dtype=dtype, device=segment.device)
    zeroed = torch._foreach_mul(tensors, 0.0)
    counts = torch.stack(torch._foreach_norm(zeroed, 0, dtype=dtype))  # (P,)
    return segment_sum(counts, segment, n)
