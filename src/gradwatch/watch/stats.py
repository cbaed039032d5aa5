"""Fused per-layer statistics on the tensors' device: a few multi-tensor kernels, no host sync."""

from __future__ import annotations

import math

import torch

_BLAS = (torch.float32, torch.float64)


def squared_norms(tensors: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """(P,) squared L2 norm of each tensor, reading each tensor once.

    On the CPU a BLAS dot product per tensor, faster than ``_foreach_norm`` there (32 tensors,
    4.2M float32 entries, one thread, this project's 2-core Xeon, interleaved medians: 1.07 vs
    1.37 ms with the data in cache, 1.69 vs 2.04 ms from memory); a tensor whose squares
    overflow there (finite float32 entries past ~1e19) is redone in float64, so with
    ``dtype=float64`` its norm stays finite. Elsewhere one fused ``_foreach_norm``.
    """
    if not tensors or tensors[0].device.type != "cpu":
        return torch.stack(torch._foreach_norm(_real(tensors), 2, dtype=dtype)).square()
    out = []
    for t in tensors:
        v = t.reshape(-1)  # a view for the usual contiguous gradient
        if v.dtype in _BLAS:
            out.append(torch.dot(v, v).to(dtype))
        elif v.is_complex():
            out.append(torch.vdot(v, v).real.to(dtype))
        else:  # half, bfloat16, integer: no BLAS kernel, accumulate wide
            out.append(torch.linalg.vector_norm(v, dtype=dtype).square())
    sq = torch.stack(out)
    if not math.isfinite(sq.sum().numpy()):  # NaN/Inf entries, or squares past the dtype
        for i in (~torch.isfinite(sq)).numpy().nonzero()[0]:  # redo these in float64
            v = _real([tensors[i]])[0].reshape(-1)
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
