"""Fused per-layer statistics on the tensors' device: a few multi-tensor kernels, no host sync."""

from __future__ import annotations

import math

import torch


def squared_norms(
    tensors: list[torch.Tensor], dtype: torch.dtype, acc: torch.dtype | None = None
) -> torch.Tensor:
    """(P,) squared L2 norm of each tensor: one fused ``_foreach_norm`` in ``dtype`` (one read
    of the data), squared in ``acc`` (default ``dtype``).

    On the CPU a norm that overflowed ``dtype`` (finite float32 entries past ~1e19) is redone
    in float64, so with ``acc=float64`` it stays finite; that costs a read only then. (Right
    after backward, with torch's threads still warm, ``_foreach_norm`` was the cheapest read
    measured on this project's 2-core VM: 2.6 ms for the 16-layer MLP's gradients against
    8-127 ms for a BLAS dot or a float64 norm per tensor.)
    """
    norms = torch.stack(torch._foreach_norm(_real(tensors), 2, dtype=dtype)).to(acc or dtype)
    sq = norms.square()
    if sq.device.type == "cpu" and not math.isfinite(sq.sum().numpy()):
        for i in (~torch.isfinite(sq)).numpy().nonzero()[0]:  # NaN/Inf entries stay so
            v = _real([tensors[i]])[0]
            sq[i] = torch.linalg.vector_norm(v, dtype=torch.float64).square()
    return sq


def _real(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Complex tensors as real (..., 2) views: the same L2 norm, a dtype _foreach_norm takes."""
    return [torch.view_as_real(t) if t.is_complex() else t for t in tensors]


def segment_sum(values: torch.Tensor, segment: torch.Tensor, n: int) -> torch.Tensor:
    """(P,) values summed into (n,) segments: values[i] goes to segment[i]."""
    return torch.zeros(n, dtype=values.dtype, device=values.device).index_add_(0, segment, values)


def nonfinite_counts(tensors: list[torch.Tensor], per_tensor: torch.Tensor) -> torch.Tensor:
    """(P,) number of NaN/Inf entries of each tensor, given its squared norm (non-finite if
    any entry is; also when a finite tensor's square overflows, and then the scan counts 0).

    On the CPU reading the norms costs nothing, so only tensors with a non-finite norm are
    scanned. On an accelerator that read would be a host sync: there x * 0 (0 for finite x,
    NaN otherwise) and a fused 0-"norm" count the entries of every tensor on the device.
    """
    if per_tensor.device.type == "cpu":
        counts = torch.zeros_like(per_tensor)
        if math.isfinite(per_tensor.sum().numpy()):  # the usual case: one read, no scan
            return counts
        bad = (~torch.isfinite(per_tensor)).numpy().nonzero()[0]
        for i in bad:
            counts[i] = (~torch.isfinite(tensors[i])).sum()
        return counts
    zeroed = torch._foreach_mul(_real(tensors), 0.0)  # complex: counts NaN components
    return torch.stack(torch._foreach_norm(zeroed, 0, dtype=per_tensor.dtype))
