"""Exact L2 norms of many tensors, per tensor and per layer: fused reads, no host sync on a device.

A float32 ``_foreach_norm`` loses digits in three ways: squares under ~1e-38 flush to 0 (a
vanishing gradient of 3e-26 reads 0), squares over ~3e38 overflow (a finite 1e20 gradient reads
inf), and one accumulator over millions of entries drifts (relative 3.7e-4 for 1e7 normal
entries on this project's CPU). So every tensor is read in pieces of at most ``CHUNK`` entries,
combined in float64, and

- on the host (CPU) a piece whose float32 norm is not safely inside the normal range is
  redone exactly (max-abs scaled, in float64): only then does it cost a second read;
- on an accelerator, where looking at the norm would be a host sync, every piece is scaled by
  the power of two nearest its max-abs value before squaring (exact in any binary format),
  so the result is exact without looking.

Norms, not squares, are what travel: a float64 square overflows past a norm of 1e154.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

CHUNK = 1 << 19  # entries per piece: float32 accumulation measured under 1.6e-6 relative at 2^20
REL = 1e-6  # the share of a piece's square that entries flushed to zero may cost at most
_F32, _F64 = torch.float32, torch.float64


def _group(dtype: torch.dtype) -> tuple[torch.dtype, int]:
    """(accumulation dtype, largest |exponent| of a scale 2^e) for a gradient dtype. float16
    is never scaled: its squares (2^-48 to 2^32) are all normal float32 numbers."""
    if dtype in (torch.float64, torch.complex128):
        return _F64, 1022
    if dtype in (torch.float16, torch.complex32):
        return _F32, 0
    return _F32, 126


def _floor(acc: torch.dtype) -> float:
    """Per sqrt(entry): a piece norm under sqrt(numel) * this may have lost > REL of its
    square to entries whose squares fell below the smallest normal number."""
    return math.sqrt(torch.finfo(acc).tiny / REL)


def _real(t: torch.Tensor) -> torch.Tensor:
    """A complex tensor as a real (..., 2) view: the same L2 norm, a dtype norms take."""
    return torch.view_as_real(t) if t.is_complex() else t


class NormPlan:
    """How one list of tensors (fixed shapes and dtypes, e.g. a model's gradients) is read.

    Tensors over ``CHUNK`` entries are read as views of ``CHUNK`` entries; pieces are grouped
    by accumulation dtype (one fused ``_foreach_norm`` per group). ``segment[i]`` is the layer
    of tensor ``i``; :meth:`layer_norms` combines the pieces of each layer.
    """

    def __init__(
        self, tensors: Sequence[torch.Tensor], segment: Sequence[int], layers: int, host: bool
    ) -> None:
        self.host, self.layers = host, layers
        self.dtype, self.device = tensors[0].dtype, tensors[0].device  # checked by matches()
        groups: dict[tuple[torch.dtype, int], list[int]] = {}
        for i, t in enumerate(tensors):
            groups.setdefault(_group(t.dtype), []).append(i)
        self.groups = list(groups.items())  # ((acc dtype, scale limit), tensor indices)
        self.split = {i for i, t in enumerate(tensors) if _real(t).numel() > CHUNK}
        owner, floors = [], []
        for (acc, _), idx in self.groups:
            for i in idx:
                n = _real(tensors[i]).numel()
                sizes = [min(CHUNK, n - k) for k in range(0, n, CHUNK)] if i in self.split else [n]
                owner += [i] * len(sizes)
                floors += [math.sqrt(s) * _floor(acc) for s in sizes]
        self.owner = np.array(owner, dtype=np.int64)  # (Q,) tensor of each piece
        seg = np.asarray(segment, dtype=np.int64)[self.owner]  # (Q,) layer of each piece
        self.seg = torch.from_numpy(seg) if host else torch.from_numpy(seg).to(self.device)
        self.floor = np.array(floors, dtype=np.float64)  # (Q,)

    def matches(self, tensors: Sequence[torch.Tensor]) -> bool:
        """Whether ``tensors`` still have the dtype and device this plan was made for (a model
        converted with ``.double()`` or ``.to(device)`` after attach needs a new plan)."""
        return tensors[0].dtype == self.dtype and tensors[0].device == self.device

    def _pieces(
        self, tensors: Sequence[torch.Tensor]
    ) -> list[tuple[tuple[torch.dtype, int], list[torch.Tensor]]]:
        """Per group, the pieces: views of the tensors, CHUNK entries at most."""
        out = []
        for key, idx in self.groups:
            pieces: list[torch.Tensor] = []
            for i in idx:
                t = _real(tensors[i])
                if i in self.split:
                    pieces += (t.view(-1) if t.is_contiguous() else t.reshape(-1)).split(CHUNK)
                else:
                    pieces.append(t)
            out.append((key, pieces))
        return out

    def norms(
        self, tensors: Sequence[torch.Tensor], count: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(Q,) exact float64 norms of the pieces and, with ``count``, their NaN/Inf counts
        (None when all are finite: the usual case costs nothing more on the host)."""
        groups = self._pieces(tensors)
        if not self.host:
            return self._scaled(groups, count)
        vals = np.concatenate(
            [torch.stack(torch._foreach_norm(p, 2, dtype=acc)).numpy() for (acc, _), p in groups]
        ).astype(np.float64)
        bad = ~((vals >= self.floor) & (vals < math.inf))  # NaN compares False: flagged too
        counts = None
        if bad.any():  # underflow, overflow or NaN/Inf: redo those pieces only
            flat = [p for _, ps in groups for p in ps]
            counts = np.zeros_like(vals) if count else None
            for q in np.flatnonzero(bad):
                vals[q], nonfinite = _exact(flat[q], count)
                if counts is not None:
                    counts[q] = nonfinite
            if counts is not None and not counts.any():
                counts = None
        return torch.from_numpy(vals), None if counts is None else torch.from_numpy(counts)

    def _scaled(
        self, groups: list[tuple[tuple[torch.dtype, int], list[torch.Tensor]]], count: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Device path: scale each piece by 2^-e (its max-abs is m 2^e) before squaring, an
        exact product in any binary format; the scaled copy then gives the NaN/Inf counts
        (x * 0 is NaN exactly where x is not finite)."""
        vals, counts = [], []
        for (acc, limit), pieces in groups:
            peak = torch.stack(torch._foreach_norm(pieces, math.inf, dtype=acc))  # (q,) max |x|
            ok = torch.isfinite(peak) & (peak > 0)
            e = torch.frexp(peak).exponent.clamp_(-limit, limit)
            scale = torch.where(ok, torch.ldexp(torch.ones_like(peak), -e), 1.0)  # (q,) 2^-e
            scaled = torch._foreach_mul(pieces, list(scale.unbind()))
            n = torch.stack(torch._foreach_norm(scaled, 2, dtype=acc)).to(_F64)
            vals.append(n / scale.to(_F64))
            if count:
                torch._foreach_mul_(scaled, 0.0)
                counts.append(torch.stack(torch._foreach_norm(scaled, 0, dtype=acc)).to(_F64))
        return torch.cat(vals), torch.cat(counts) if count else None

    def layer_norms(self, values: torch.Tensor) -> torch.Tensor:
        """(L,) float64 layer norms from the (Q,) piece norms: a scaled hypot per layer (no
        square of a norm is ever formed, so 1e-300 and 1e300 survive). 0 for an empty layer;
        NaN or inf where a piece is."""
        return hypot_segments(values, self.seg, self.layers)


def _exact(t: torch.Tensor, count: bool) -> tuple[float, int]:
    """(L2 norm exact to float64 rounding, NaN/Inf entries) of one piece: max-abs scaled."""
    peak = float(t.abs().amax()) if t.numel() else 0.0
    if peak == 0.0:
        return 0.0, 0
    if not math.isfinite(peak):  # NaN/Inf entries: the norm is not finite either
        nonfinite = int((~torch.isfinite(t)).sum()) if count else 0
        return (math.nan if math.isnan(peak) else math.inf), nonfinite
    return peak * float(torch.linalg.vector_norm(t.to(_F64) / peak)), 0


def hypot_segments(values: torch.Tensor, segment: torch.Tensor, n: int) -> torch.Tensor:
    """(n,) sqrt(sum of values[i]^2 over segment[i] == j), computed as max * sqrt(sum of
    (values / max)^2): exact over the whole float64 range. NaN/inf propagate; empty -> 0."""
    if values.device.type == "cpu":
        return _hypot_numpy(values, segment, n)
    return _hypot_torch(values, segment, n)


def _hypot_numpy(values: torch.Tensor, segment: torch.Tensor, n: int) -> torch.Tensor:
    v, seg = values.numpy(), segment.numpy()
    peak = np.zeros(n, dtype=v.dtype)
    with np.errstate(invalid="ignore"):  # NaN values are expected: they propagate
        np.maximum.at(peak, seg, v)  # (n,) largest value per segment
    ok = np.isfinite(peak) & (peak > 0)
    safe = np.where(ok, peak, 1.0)
    r = v / safe[seg]
    s = np.bincount(seg, weights=r * r, minlength=n)
    return torch.from_numpy(np.where(ok, safe * np.sqrt(s), peak).astype(v.dtype, copy=False))


def _hypot_torch(values: torch.Tensor, segment: torch.Tensor, n: int) -> torch.Tensor:
    peak = torch.zeros(n, dtype=values.dtype, device=values.device)
    peak.scatter_reduce_(0, segment, values, "amax")  # (n,) largest value per segment
    ok = torch.isfinite(peak) & (peak > 0)
    safe = torch.where(ok, peak, 1.0)
    r = values / safe[segment]
    s = torch.zeros_like(peak).index_add_(0, segment, r * r)
    return torch.where(ok, safe * s.sqrt(), peak)


def segment_sum(values: torch.Tensor, segment: torch.Tensor, n: int) -> torch.Tensor:
    """(P,) values summed into (n,) segments: values[i] goes to segment[i]."""
    if values.device.type == "cpu":
        v = values.numpy()
        out = np.bincount(segment.numpy(), weights=v, minlength=n)  # float64 sums
        return torch.from_numpy(out.astype(v.dtype, copy=False))
    return torch.zeros(n, dtype=values.dtype, device=values.device).index_add_(0, segment, values)
