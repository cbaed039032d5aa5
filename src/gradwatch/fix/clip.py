"""Adaptive gradient clipping with no host sync per step: AutoClip, ZClip and AGC.

Each clipper is called after ``loss.backward()`` (and after ``GradScaler.unscale_``) and before
``optimizer.step()``. It computes the total gradient norm with fused ``_foreach_norm`` passes,
decides the clipping factor on the device, scales the gradients in place, and returns the
PRE-clip total norm as a 0-d tensor on the gradients' device. Nothing in a per-step call reads
a tensor value on the host (no ``.item()``, ``float()``, ``bool()``, no Python branch on a
tensor), so a CUDA step stays asynchronous; the statistics live in preallocated device tensors.

Shared conventions:
- ``parameters`` is an ``nn.Module``, a single tensor, or an iterable of tensors/Parameters;
  parameters whose ``.grad`` is None are skipped. With no gradient at all the call returns a
  CPU zero and changes nothing.
- A non-finite total norm (NaN/Inf gradients) leaves the gradients untouched (the optimizer or
  ``GradScaler`` decides what to do with them) and is kept out of the running statistics.
- Global clipping scales by ``min(1, threshold / (norm + 1e-6))``, as
  ``torch.nn.utils.clip_grad_norm_`` does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from gradwatch.core import _checks

__all__ = ["AutoClip", "ZClip", "agc_"]

CLIP_EPS = 1e-6  # added to the norm in the clip factor, as clip_grad_norm_ does
ZCLIP_MODES = ("fixed", "reciprocal")


def _grads(parameters: Any) -> list[torch.Tensor]:
    """The existing ``.grad`` tensors of ``parameters`` (validated, None skipped)."""
    return [p.grad for p in _params(parameters) if p.grad is not None]


def _params(parameters: Any) -> list[torch.Tensor]:
    if isinstance(parameters, nn.Module):
        return list(parameters.parameters())
    if isinstance(parameters, torch.Tensor):
        return [parameters]
    if isinstance(parameters, (str, bytes)) or not isinstance(parameters, Iterable):
        raise TypeError(
            "parameters: expected an nn.Module, a tensor or an iterable of tensors, "
            f"got {type(parameters).__name__}"
        )
    params = list(parameters)
    for i, p in enumerate(params):
        if not isinstance(p, torch.Tensor):
            raise TypeError(
                f"parameters: item {i} is a {type(p).__name__}; expected tensors or "
                "nn.Parameters (pass model.parameters(), not optimizer.param_groups)"
            )
    return params


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    # float64 sums of squares: a finite float32 gradient above ~1e19 has a square float32
    # cannot hold; its norm would read inf and the step would never be clipped.
    return torch.float64


def _total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """L2 norm of all gradients together, 0-d, on grads[0]'s device (float32 or float64)."""
    groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for g in grads:
        groups.setdefault((g.device, g.dtype), []).append(g)
    device = grads[0].device
    out = torch.float64 if any(dt == torch.float64 for _, dt in groups) else torch.float32
    parts = []
    for (_, dt), gs in groups.items():
        norms = torch._foreach_norm(gs, 2, dtype=_acc_dtype(dt))  # len(gs) x (), float64
        parts.append(torch.linalg.vector_norm(torch.stack(norms)).to(device))
    return torch.linalg.vector_norm(torch.stack(parts)).to(out)  # ()


def _scale_(grads: list[torch.Tensor], coef: torch.Tensor) -> None:
    """grads *= coef (a 0-d device tensor), one fused pass per device."""
    groups: dict[torch.device, list[torch.Tensor]] = {}
    for g in grads:
        groups.setdefault(g.device, []).append(g)
    for device, gs in groups.items():
        torch._foreach_mul_(gs, coef.to(device))


def _clip_factor(norm: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """min(1, level / (norm + eps)); 1 for a non-finite norm."""
    coef = (level / (norm + CLIP_EPS)).clamp(max=1.0)
    return torch.where(torch.isfinite(norm), coef, torch.ones_like(coef))


class _Checkpointable:
    """state_dict / load_state_dict for a clipper whose state is a few device tensors."""

    _TENSORS: tuple[str, ...] = ()  # attributes holding the running state (None before use)
    _CONFIG: tuple[str, ...] = ()  # settings the state's shape depends on

    def state_dict(self) -> dict[str, Any]:
        """The running state (tensor copies) and the settings it belongs to, for a checkpoint."""
        state: dict[str, Any] = {k: getattr(self, k) for k in self._CONFIG}
        for k in self._TENSORS:
            t = getattr(self, k)
            state[k] = None if t is None else t.detach().clone()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; refuses a state of other settings."""
        if not isinstance(state, dict):
            raise TypeError(f"state: expected a dict from state_dict(), got {type(state).__name__}")
        missing = [k for k in (*self._CONFIG, *self._TENSORS) if k not in state]
        if missing:
            raise ValueError(f"state: missing {', '.join(missing)}; expected a state_dict()")
        for k in self._CONFIG:
            if state[k] != getattr(self, k):
                raise ValueError(
                    f"state: saved with {k}={state[k]!r}, this {type(self).__name__} has "
                    f"{k}={getattr(self, k)!r}"
                )
        for k in self._TENSORS:
            t = state[k]
            if t is not None and not isinstance(t, torch.Tensor):
                raise TypeError(f"state: {k} must be a tensor or None, got {type(t).__name__}")
            setattr(self, k, None if t is None else t.detach().clone())


class AutoClip(_Checkpointable):
    """Clip the total gradient norm to a percentile of the norms seen so far.

    Each call computes the total gradient norm g_t, appends it to the history (a preallocated
    device ring buffer of the last ``history`` finite norms), and clips the gradients to
    ``eta_t = percentile(history, p)``, the current norm included, as the paper does. The
    percentile is the linear interpolation of ``numpy.percentile`` (virtual index
    p/100 * (n - 1) into the n sorted norms), computed on the device by sort and gather.

    Args:
        percentile: p in (0, 100]; the paper's default is 10.
        history: how many of the latest finite norms to keep (the paper keeps all of them;
            a bounded ring keeps memory and the per-step sort constant).

    Returns:
        Calling ``clip(parameters)`` returns the pre-clip total gradient norm (0-d tensor on
        the gradients' device) and scales the gradients in place.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(4, 2)
        >>> clip = AutoClip(percentile=10.0)
        >>> net(torch.randn(8, 4)).pow(2).sum().backward()
        >>> norm = clip(net)           # before optimizer.step(); no host sync
        >>> clip.threshold == clip.history[0].item()   # one norm seen: it is its own percentile
        True
        >>> resumed = AutoClip(percentile=10.0); resumed.load_state_dict(clip.state_dict())

    Paper: Seetharaman, Wichern, Pardo & Le Roux 2020, "AutoClip: Adaptive gradient clipping
    for source separation networks".
    """

    _TENSORS = ("_norms", "_count")
    _CONFIG = ("percentile", "size")

    def __init__(self, percentile: float = 10.0, history: int = 1000) -> None:
        p = _checks.number("percentile", percentile)
        if not 0 < p <= 100:
            raise ValueError(f"percentile: must be in (0, 100], got {percentile}")
        self.percentile = p
        self.size = _checks.count("history", history, low=1)
        self._norms: torch.Tensor | None = None  # (H,) ring buffer, slot = count % H
        self._count: torch.Tensor | None = None  # () int64, finite norms seen

    def _state(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._norms is None or self._count is None:
            self._norms = torch.zeros(self.size, dtype=like.dtype, device=like.device)
            self._count = torch.zeros((), dtype=torch.int64, device=like.device)
        elif self._norms.device != like.device or self._norms.dtype != like.dtype:
            self._norms = self._norms.to(like.device, like.dtype)
            self._count = self._count.to(like.device)
        return self._norms, self._count

    @torch.no_grad()
    def __call__(self, parameters: Any) -> torch.Tensor:
        grads = _grads(parameters)
        if not grads:
            return torch.zeros(())
        norm = _total_norm(grads)  # ()
        norms, count = self._state(norm)
        ok = torch.isfinite(norm)
        slots = torch.arange(self.size, device=norm.device)  # (H,)
        write = (slots == count % self.size) & ok  # (H,)
        norms.copy_(torch.where(write, norm, norms))
        count.add_(ok.to(count.dtype))
        level = _percentile(norms, count.clamp(max=self.size), self.percentile / 100.0)
        _scale_(grads, _clip_factor(norm, level))
        return norm

    @property
    def history(self) -> torch.Tensor:
        """The finite norms in the ring, oldest first, on the CPU (reads the device)."""
        if self._norms is None or self._count is None:
            return torch.zeros(0)
        count = int(self._count)
        norms = self._norms.cpu()
        if count <= self.size:
            return norms[:count]
        start = count % self.size
        return torch.cat([norms[start:], norms[:start]])

    @property
    def threshold(self) -> float:
        """The clipping level now: the percentile of ``history`` (inf before any norm)."""
        if self._norms is None or self._count is None:
            return math.inf
        level = _percentile(self._norms, self._count.clamp(max=self.size), self.percentile / 100)
        return float(level)


def _percentile(buf: torch.Tensor, n: torch.Tensor, q: float) -> torch.Tensor:
    """numpy.percentile(buf[:n], 100 q) (linear) with n a device int; inf when n = 0."""
    slots = torch.arange(buf.numel(), device=buf.device)  # (H,)
    vals = torch.where(slots < n, buf, math.inf).sort().values  # (H,) valid first
    last = (n - 1).clamp(min=0)
    pos = q * last.to(buf.dtype)  # () virtual index
    lo = pos.floor().long().clamp(max=last)
    hi = (lo + 1).clamp(max=last)
    a = vals.gather(0, lo.view(1))[0]
    b = vals.gather(0, hi.view(1))[0]
    level = a + (pos - lo.to(buf.dtype)) * (b - a)
    level = torch.where(hi == lo, a, level)  # avoids inf - inf at the top
    return torch.where(n > 0, level, math.inf)


class ZClip(_Checkpointable):
    """Clip gradient-norm spikes detected by a z-score against EMA statistics.

    With g_t the total gradient norm, mu and s^2 the EMA mean and variance:

    1. Warmup: the first ``warmup`` finite norms are only collected (no clipping); then
       mu = mean(norms), s^2 = mean((norms - mu)^2) (population variance).
    2. Each later step: z_t = (g_t - mu) / (s + eps). If z_t > z_threshold the norm is clipped
       to g*_t = mu + z_threshold * s (``mode="fixed"``) or to
       g*_t = mu + (z_threshold^2 / z_t) * s (``mode="reciprocal"``, the reference code's
       default "adaptive_scaling": the larger the spike, the harder it is cut); else
       g*_t = g_t.
    3. The EMA is updated with the clipped norm g*_t:
       mu <- alpha mu + (1 - alpha) g*_t, then s^2 <- alpha s^2 + (1 - alpha) (g*_t - mu)^2
       with the new mu (as the reference implementation does).

    A non-finite g_t is not clipped, not counted in warmup and does not touch mu or s^2.

    Args:
        alpha: EMA smoothing factor in (0, 1); the paper uses 0.97.
        z_threshold: z-score above which a norm is a spike, > 0; the paper uses 2.5.
        warmup: number of finite norms collected before clipping starts, >= 1.
        mode: "fixed" (clip to mu + z_threshold s) or "reciprocal" (mu + z_threshold^2 s / z).
        eps: added to s in the z-score, > 0.

    Returns:
        Calling ``clip(parameters)`` returns the pre-clip total gradient norm (0-d tensor on
        the gradients' device) and scales the gradients in place.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(4, 2)
        >>> clip = ZClip(warmup=5)
        >>> for _ in range(10):
        ...     net.zero_grad()
        ...     net(torch.randn(8, 4)).pow(2).sum().backward()
        ...     norm = clip(net)       # before optimizer.step(); no host sync
        >>> clip.mean > 0
        True

    Paper: Kumar, Owen, Roy Chowdhury & Güra 2025, "ZClip: Adaptive Spike Mitigation for LLM
    Pre-Training" (arXiv 2504.02507); update rules as in its reference code
    (github.com/bluorion-com/ZClip).
    """

    _TENSORS = ("_buf", "_stats", "_count")
    _CONFIG = ("alpha", "z_threshold", "warmup", "mode", "eps")

    def __init__(
        self,
        alpha: float = 0.97,
        z_threshold: float = 2.5,
        warmup: int = 25,
        *,
        mode: str = "fixed",
        eps: float = 1e-6,
    ) -> None:
        a = _checks.number("alpha", alpha)
        if not 0 < a < 1:
            raise ValueError(f"alpha: must be in (0, 1), got {alpha}")
        self.alpha = a
        self.z_threshold = _checks.number("z_threshold", z_threshold, positive=True)
        self.warmup = _checks.count("warmup", warmup, low=1)
        self.mode = _checks.choice("mode", mode, ZCLIP_MODES)
        self.eps = _checks.number("eps", eps, positive=True)
        self._buf: torch.Tensor | None = None  # (W,) warmup norms
        self._stats: torch.Tensor | None = None  # (2,) EMA mean, EMA variance
        self._count: torch.Tensor | None = None  # () int64, warmup norms collected (<= W)

    def _state(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._buf is None or self._stats is None or self._count is None:
            self._buf = torch.zeros(self.warmup, dtype=like.dtype, device=like.device)
            self._stats = torch.zeros(2, dtype=like.dtype, device=like.device)
            self._count = torch.zeros((), dtype=torch.int64, device=like.device)
        elif self._buf.device != like.device or self._buf.dtype != like.dtype:
            self._buf = self._buf.to(like.device, like.dtype)
            self._stats = self._stats.to(like.device, like.dtype)
            self._count = self._count.to(like.device)
        return self._buf, self._stats, self._count

    @torch.no_grad()
    def __call__(self, parameters: Any) -> torch.Tensor:
        grads = _grads(parameters)
        if not grads:
            return torch.zeros(())
        norm = _total_norm(grads)  # ()
        buf, stats, count = self._state(norm)
        a, zt = self.alpha, self.z_threshold
        ok = torch.isfinite(norm)
        ready = count >= self.warmup
        mean, var = stats[0], stats[1]
        std = var.sqrt()
        z = (norm - mean) / (std + self.eps)
        spike = ready & ok & (z > zt)
        if self.mode == "fixed":
            level = mean + zt * std
        else:
            level = mean + (zt * zt / z) * std  # only used where z > zt > 0
        clipped = torch.where(spike, level, norm)
        _scale_(grads, torch.where(spike, _clip_factor(norm, level), torch.ones_like(norm)))

        # EMA step with the clipped norm (after warmup, finite norms only)
        ema_mean = a * mean + (1 - a) * clipped
        ema_var = a * var + (1 - a) * (clipped - ema_mean) ** 2
        # warmup: store the norm, and initialise mean/var once the buffer is full
        collect = ~ready & ok
        slots = torch.arange(self.warmup, device=norm.device)  # (W,)
        buf.copy_(torch.where((slots == count) & collect, norm, buf))
        count.add_(collect.to(count.dtype))
        full = collect & (count == self.warmup)
        w_mean = buf.mean()
        w_var = (buf - w_mean).pow(2).mean()
        update = ready & ok
        new = torch.stack(
            [
                torch.where(update, ema_mean, torch.where(full, w_mean, mean)),
                torch.where(update, ema_var, torch.where(full, w_var, var)),
            ]
        )  # (2,)
        stats.copy_(new)
        return norm

    @property
    def ready(self) -> bool:
        """True once warmup is over and clipping is active (reads the device)."""
        return self._count is not None and int(self._count) >= self.warmup

    @property
    def mean(self) -> float:
        """EMA mean of the (clipped) norms; nan during warmup (reads the device)."""
        return float(self._stats[0]) if self._stats is not None and self.ready else math.nan

    @property
    def std(self) -> float:
        """EMA standard deviation of the (clipped) norms; nan during warmup."""
        if self._stats is None or not self.ready:
            return math.nan
        return math.sqrt(float(self._stats[1]))

    @property
    def threshold(self) -> float:
        """The largest norm the next step lets through unclipped: mean + z_threshold (std + eps).

        inf during warmup.
        """
        if not self.ready:
            return math.inf
        return self.mean + self.z_threshold * (self.std + self.eps)


@torch.no_grad()
def agc_(parameters: Any, clipping: float = 0.01, eps: float = 1e-3) -> torch.Tensor:
    """Unit-wise adaptive gradient clipping, in place on ``.grad``.

    For each unit i of a parameter W with gradient G, with ``m_i = clipping * max(||W_i||, eps)``:
    if ``||G_i|| > m_i`` then ``G_i <- G_i * m_i / ||G_i||``. A unit is a slice along dim 0
    (an output row of a Linear weight, an output filter of a Conv weight: the norm runs over
    all other dims). Parameters with ndim <= 1 (biases, gains, scalars) are ONE unit each,
    their whole-vector norm, as in the paper's reference code (deepmind-research/nfnets,
    ``unitwise_norm``: axis=None for vectors) and timm's ``adaptive_clip_grad``. A unit whose
    gradient norm is not finite is left untouched. The paper does not clip the final
    classifier layer: pass the parameters to clip, without it.

    Args:
        parameters: an nn.Module, a tensor, or an iterable of tensors/Parameters; those whose
            grad is None are skipped.
        clipping: the ratio lambda > 0 (the paper uses 0.01 to 0.16 depending on batch size).
        eps: floor on the weight norm, > 0, so units initialised at zero can still move.

    Returns:
        The pre-clip total gradient norm, a 0-d tensor on the gradients' device (a CPU zero
        when no parameter has a gradient). Never syncs with the host.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(4, 2)
        >>> net(torch.randn(8, 4)).pow(2).sum().backward()
        >>> norm = agc_(net.parameters(), clipping=0.01)
        >>> bool((net.weight.grad.norm(dim=1) <= 0.01 * net.weight.norm(dim=1) * (1 + 1e-5)).all())
        True

    Paper: Brock, De, Smith & Simonyan 2021, "High-Performance Large-Scale Image Recognition
    Without Normalization", section 4.1.
    """
    lam = _checks.number("clipping", clipping, positive=True)
    floor = _checks.number("eps", eps, positive=True)
    params = [p for p in _params(parameters) if p.grad is not None]
    if not params:
        return torch.zeros(())
    grads = [p.grad for p in params if p.grad is not None]
    total = _total_norm(grads)
    for p, g in zip(params, grads, strict=True):
        acc = _acc_dtype(g.dtype)
        dims = tuple(range(1, g.ndim)) if g.ndim > 1 else None
        keep = g.ndim > 1
        w_norm = torch.linalg.vector_norm(p.detach(), dim=dims, keepdim=keep, dtype=acc)
        g_norm = torch.linalg.vector_norm(g, dim=dims, keepdim=keep, dtype=acc)  # (out, 1, ...)
        most = lam * w_norm.clamp(min=floor)
        clip = torch.isfinite(g_norm) & (g_norm > most)
        coef = torch.where(clip, most / g_norm.clamp(min=torch.finfo(acc).tiny), 1.0)
        g.mul_(coef)
    return total
