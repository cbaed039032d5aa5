"""Fused per-layer statistics on the tensors' device: a few multi-tensor kernels, no host sync."""

from __future__ import annotations

import torch


def norms(tensors: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """(P,) L2 norm of each tensor in one ``_foreach_norm`` (one read of the data)."""
    return torch.stack(torch._foreach_norm(tensors, 2, dtype=dtype))


def segment_sum(values: torch.Tensor, segment: torch.Tensor, n: int) -> torch.Tensor:
    """(P,) values summed into (n,) segments: values[i] goes to segment[i]."""
    return torch.zeros(n, dtype=values.dtype, device=values.device).index_add_(0, segment, values)


def nonfinite_counts(tensors: list[torch.Tensor], per_tensor: torch.Tensor) -> torch.Tensor:
    """(P,) number of NaN/Inf entries of each tensor, given its norm (NaN/Inf iff any entry is).

    On the CPU reading the norms costs nothing, so only tensors with a non-finite norm are
    scanned. On an accelerator that read would be a host sync: there x * 0 (0 for finite x,
    NaN otherwise) and a fused 0-"norm" count the entries of every tensor on the device.
    """
    if per_tensor.device.type == "cpu":
        counts = torch.zeros_like(per_tensor)
        bad = (~torch.isfinite(per_tensor)).numpy().nonzero()[0]
        for i in bad:
            counts[i] = (~torch.isfinite(tensors[i])).sum()
        return counts
    zeroed = torch._foreach_mul(tensors, 0.0)
    return torch.stack(torch._foreach_norm(zeroed, 0, dtype=per_tensor.dtype))
