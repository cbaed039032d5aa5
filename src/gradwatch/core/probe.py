"""One-shot look at a model's learning signal: one forward, one backward, nothing changed."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gradwatch._result import Result
from gradwatch.core import _checks
from gradwatch.core.activations import (
    dead_share,
    inactive_share,
    module_activation,
    saturated_share,
)

__all__ = [
    "ActivationStats",
    "LayerStats",
    "ProbeResult",
    "layers_of",
    "probe",
    "qualname",
    "weight_gain",
]


@dataclass(frozen=True)
class LayerStats(Result):
    """Gradient statistics of one layer (a leaf module with trainable parameters).

    Attributes:
        name: qualified module name, e.g. ``"features.3"``.
        kind: module class name.
        grad_norm: L2 norm of the gradient over the layer's parameters; ``None`` when no
            gradient reached it (unused in the forward pass).
        param_norm: L2 norm of the layer's parameters.
        ratio: grad_norm / param_norm (``None`` with grad_norm, inf when the weights are 0).
        nonfinite: number of NaN/Inf gradient entries.
        fan_in: inputs per output unit of the layer's weight (``None`` without a matrix weight).
        init_gain: sigma_w = sqrt(fan_in * mean(W^2)), the weight's scale in mean-field units.
    """

    name: str
    kind: str
    grad_norm: float | None
    param_norm: float
    ratio: float | None
    nonfinite: int
    fan_in: float | None = None
    init_gain: float | None = None


@dataclass(frozen=True)
class ActivationStats(Result):
    """Saturation of one activation module over the probe batch.

    Attributes:
        name: qualified module name.
        act: activation name ("sigmoid", "relu", ...).
        saturated: share of entries whose derivative is under 1% of its maximum; ``None`` for
            ReLU-like modules, whose flat side is inactivity, not saturation.
        dead: for ReLU-like modules, share of units (output positions) that are inactive for
            every example in the batch; ``None`` for the others.
        mean_abs: mean |activation|.
        inactive: for ReLU-like modules, share of entries on the flat side (x <= 0: about
            half in a healthy net); ``None`` for the others.
    """

    name: str
    act: str
    saturated: float | None
    dead: float | None
    mean_abs: float
    inactive: float | None = None


@dataclass(frozen=True)
class ProbeResult(Result):
    """What :func:`probe` measured. ``print(result)`` shows the per-layer table."""

    loss: float
    layers: tuple[LayerStats, ...]
    activations: tuple[ActivationStats, ...]

    @property
    def first_last_ratio(self) -> float | None:
        """Gradient norm of the first layer over the last's (< 1e-3 reads as vanishing)."""
        norms = [s.grad_norm for s in self.layers if s.grad_norm is not None]
        if len(norms) < 2 or norms[-1] == 0:
            return None
        return norms[0] / norms[-1]

    def __str__(self) -> str:
        rows = [
            f"{'layer':<28} {'type':<12} {'grad norm':>11} {'grad/weight':>11} {'non-finite':>10}"
        ]
        for s in self.layers:
            g = "absent" if s.grad_norm is None else f"{s.grad_norm:.3e}"
            r = "-" if s.ratio is None else f"{s.ratio:.3e}"
            rows.append(f"{s.name:<28} {s.kind:<12} {g:>11} {r:>11} {s.nonfinite:>10}")
        if self.activations:
            rows.append("")
            rows.append(
                f"{'activation':<28} {'act':<12} {'saturated':>11} {'inactive':>9} {'dead':>7} "
                f"{'mean |a|':>10}"
            )
            for a in self.activations:
                sat, off, dead = ("-" if v is None else f"{v:.1%}"
                                  for v in (a.saturated, a.inactive, a.dead))
                rows.append(
                    f"{a.name:<28} {a.act:<12} {sat:>11} {off:>9} {dead:>7} {a.mean_abs:>10.3g}"
                )
        return "\n".join(rows)


def _wide(t: torch.Tensor) -> torch.Tensor:
    """At least float32 (half and bfloat16 statistics lose digits), float64 kept as is."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def qualname(model: nn.Module, name: str) -> str:
    """A module's qualified name; the root module (name "") is called by its class name."""
    return name or type(model).__name__


def weight_gain(module: nn.Module) -> tuple[float, float] | None:
    """(fan_in, sigma_w) of a layer's weight, sigma_w = sqrt(fan_in * mean(W^2)); None without one.

    W_ij ~ N(0, sigma_w^2 / fan_in) gives back sigma_w: the scale mean-field theory compares
    with the critical value (sqrt(2) for ReLU, 1 for tanh).
    """
    w = getattr(module, "weight", None)
    if not isinstance(w, torch.Tensor) or w.ndim < 2 or not w.numel():
        return None
    fan_in = w[0].numel()  # (out, in, *kernel): the inputs of one output unit
    w = w.detach().abs() if w.is_complex() else w.detach()  # complex: mean |W|^2
    return float(fan_in), float((w.double().square().mean() * fan_in).sqrt())


def layers_of(model: nn.Module) -> list[tuple[str, nn.Module, list[nn.Parameter]]]:
    """Leaf-level layers: (qualified name, module, its own trainable parameters), in order.

    A parameter shared by several modules is counted once, under the first module that owns it.
    """
    seen: set[int] = set()
    out = []
    for name, module in model.named_modules():
        params = []
        for p in module.parameters(recurse=False):
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
        if params:
            out.append((qualname(model, name), module, params))
    return out


def probe(
    model: nn.Module,
    inputs: torch.Tensor | tuple[Any, ...],
    loss_fn: Callable[..., torch.Tensor] | None = None,
    target: Any = None,
) -> ProbeResult:
    """Measure, in one forward and one backward, where the gradient dies at initialisation.

    Per layer (leaf modules with trainable parameters, by qualified name): the gradient norm
    and the gradient/weight norm ratio. Per activation module (Sigmoid, Tanh, ReLU, ...): the
    share of saturated entries (phi' under 1% of its maximum) and, for ReLU-like modules, the
    share of units dead over the whole batch. The model, its ``.grad`` fields and its mode are
    left as they were: gradients are taken with ``torch.autograd.grad``.

    Args:
        model: the network.
        inputs: a batch tensor, or a tuple of positional inputs.
        loss_fn: ``loss_fn(output)`` or, when ``target`` is given, ``loss_fn(output, target)``;
            must return a scalar. Default: ``0.5 * mean(output**2)``.
        target: passed to ``loss_fn``.

    Returns:
        A :class:`ProbeResult`; ``print()`` it for the table.

    Example:
        >>> net = nn.Sequential(*[m for _ in range(10) for m in (nn.Linear(32, 32), nn.Sigmoid())])
        >>> res = probe(net, torch.randn(64, 32), lambda out: out.sum())
        >>> res.first_last_ratio < 1e-3
        True

    Paper: Glorot & Bengio 2010 (Understanding the difficulty of training deep feedforward
    neural networks) measure exactly these per-layer gradients and saturations at init.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    layers = layers_of(model)
    if not layers:
        raise ValueError(
            "model: has no trainable parameters (none, or all requires_grad=False); "
            "probe needs at least one parameter that takes a gradient"
        )
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor):
            _checks.tensor(f"inputs[{i}]" if isinstance(inputs, tuple) else "inputs", a)
    if loss_fn is not None:
        _checks.callable_("loss_fn", loss_fn)

    acts: list[ActivationStats] = []

    def hook(name: str) -> Callable[[nn.Module, tuple[Any, ...], Any], None]:
        def record(module: nn.Module, inp: tuple[Any, ...], out: Any) -> None:
            stats = _saturation(name, module, inp, out)
            if stats is not None:
                acts.append(stats)

        return record

    handles = [
        m.register_forward_hook(hook(qualname(model, n)))
        for n, m in model.named_modules()
        if module_activation(m) is not None
    ]
    try:
        with torch.enable_grad():
            out = model(*args)
            if loss_fn is None:
                if not isinstance(out, torch.Tensor):
                    raise TypeError(
                        "loss_fn: the model returns "
                        f"{type(out).__name__}; pass a loss_fn that reduces it to a scalar"
                    )
                loss = 0.5 * _wide(out).square().mean()
            else:
                loss = loss_fn(out) if target is None else loss_fn(out, target)
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise ValueError(
                    "loss_fn: must return a scalar tensor, got "
                    f"{getattr(loss, 'shape', type(loss).__name__)}"
                )
            flat = [p for _, _, ps in layers for p in ps]
            grads = torch.autograd.grad(loss.reshape(()), flat, allow_unused=True)
    finally:
        for h in handles:
            h.remove()

    rows = []
    i = 0
    for name, module, params in layers:
        gs = grads[i : i + len(params)]
        i += len(params)
        with torch.no_grad():
            pnorm = float(
                torch.linalg.vector_norm(
                    torch.stack(
                        [torch.linalg.vector_norm(p.detach(), dtype=torch.float64) for p in params]
                    )
                )
            )
            present = [g for g in gs if g is not None]
            fan_in, gain = weight_gain(module) or (None, None)
            if not present:
                rows.append(
                    LayerStats(name, type(module).__name__, None, pnorm, None, 0, fan_in, gain)
                )
                continue
            bad = sum(int((~torch.isfinite(g)).sum()) for g in present)
            gnorm = float(
                torch.linalg.vector_norm(
                    torch.stack([torch.linalg.vector_norm(g, dtype=torch.float64) for g in present])
                )
            )
        ratio = gnorm / pnorm if pnorm > 0 else math.inf
        rows.append(LayerStats(name, type(module).__name__, gnorm, pnorm, ratio, bad, fan_in, gain))
    return ProbeResult(float(loss.detach()), tuple(rows), tuple(acts))


def _saturation(
    name: str, module: nn.Module, inp: tuple[Any, ...], out: Any
) -> ActivationStats | None:
    act = module_activation(module)
    if act is None or not inp or not isinstance(inp[0], torch.Tensor):
        return None
    x = inp[0]
    if not x.is_floating_point() or x.numel() == 0:
        return None
    with torch.no_grad():
        x = _wide(x.detach())
        mean_abs = (
            float(_wide(out.detach()).abs().mean()) if isinstance(out, torch.Tensor) else math.nan
        )
        sat, off, dead = saturated_share(act, x), inactive_share(act, x), dead_share(act, x)
        return ActivationStats(
            name,
            act.name,
            None if sat.isnan() else float(sat),
            None if dead is None else float(dead),
            mean_abs,
            None if off is None else float(off),
        )
