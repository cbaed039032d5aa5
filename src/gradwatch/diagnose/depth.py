"""Vanishing or exploding gradients across the depth of a feed-forward stack."""

from __future__ import annotations

import math

import torch

from gradwatch.core.activations import activation
from gradwatch.diagnose._stats import WEIGHT_LAYERS, col_median, early
from gradwatch.diagnose.finding import Finding, names
from gradwatch.watch.history import RunHistory

VANISH, EXPLODE = 1e-3, 1e3  # first-layer gradient over last-layer gradient
SATURATING = ("sigmoid", "tanh", "erf", "hardtanh")
SATURATED_CAUSE = 0.1  # share of saturated units that makes saturation the cause
CRITICAL_GAIN = {"relu": math.sqrt(2), "leaky_relu": math.sqrt(2), "tanh": 1.0, "linear": 1.0}


def per_layer_factor(g: torch.Tensor) -> float:
    """exp(-slope) of ln g against layer position: the factor each layer applies going back."""
    pos = torch.arange(len(g), dtype=torch.float64)
    y = g.log()
    pos, y = pos - pos.mean(), y - y.mean()
    return math.exp(-float((pos * y).sum() / (pos * pos).sum()))


def depth_findings(h: RunHistory) -> list[Finding]:
    idx = [i for i, k in enumerate(h.layer_kinds) if k in WEIGHT_LAYERS]
    if len(idx) < 3 or len(h) == 0:
        return []
    g = col_median(h["grad_norm"][early(h)])[idx]  # (L',) near init
    ok = torch.isfinite(g) & (g > 0)
    if not bool(ok[-1]) or int(ok.sum()) < 3:
        return []
    ratio = g / g[-1]
    layers = [h.layers[i] for i in idx]
    first = float(ratio[ok][0])
    factor = per_layer_factor(g[ok])
    evidence = {"first_last_ratio": first, "per_layer_factor": factor, "layers": float(len(idx))}
    if first < VANISH:
        hit = [n for n, r in zip(layers, ratio.tolist(), strict=True) if r < VANISH]
        cause, fix = _cause(h, idx, factor, vanishing=True)
        return [
            Finding(
                "vanishing",
                "warning",
                tuple(hit),
                f"layers {names(hit)} get < {VANISH:g} of the last layer's gradient (first/last = "
                f"{first:.2e}; each layer passes back about {factor:.3g}x)",
                cause,
                fix,
                evidence,
            )
        ]
    if first > EXPLODE:
        hit = [n for n, r in zip(layers, ratio.tolist(), strict=True) if r > EXPLODE]
        cause, fix = _cause(h, idx, factor, vanishing=False)
        return [
            Finding(
                "exploding",
                "warning",
                tuple(hit),
                f"layers {names(hit)} get > {EXPLODE:g}x the last layer's gradient (first/last = "
                f"{first:.2e}; each layer multiplies it by about {factor:.3g})",
                cause,
                fix,
                evidence,
            )
        ]
    return []


def _cause(h: RunHistory, idx: list[int], factor: float, vanishing: bool) -> tuple[str, str]:
    kinds = set(h.activation_kinds)
    layers = names([h.layers[i] for i in idx])
    sat = col_median(h["saturated"][early(h)]) if h.activations else torch.empty(0)
    saturating = [
        n for n, k in zip(h.activations, h.activation_kinds, strict=True) if k in SATURATING
    ]
    gains = h.layer_info.get("init_gain")
    gain = float(gains[idx].nanmedian()) if gains is not None and len(gains) else math.nan
    share = (
        float(sat[[h.activations.index(n) for n in saturating]].nanmean()) if saturating else 0.0
    )
    # A saturating activation is the cause when its bound is below 1 (sigmoid: 0.25) or its
    # units actually sit on the flat tails; otherwise look at the init and the depth.
    if vanishing and saturating and ("sigmoid" in kinds or share > SATURATED_CAUSE):
        kind = (
            "sigmoid"
            if "sigmoid" in kinds
            else next(k for k in h.activation_kinds if k in SATURATING)
        )
        bound = activation(kind).max_derivative or 1.0
        cause = (
            f"saturating activation: {kind} (its derivative is at most {bound:g}, "
            f"{share:.0%} of its units are saturated"
        )
        cause += f", weight gain {gain:.2f})" if math.isfinite(gain) else ")"
        module = {"sigmoid": "nn.Sigmoid", "tanh": "nn.Tanh"}.get(kind, kind)
        fix = (
            f"replace the {module} modules at {names(saturating)} with nn.ReLU or "
            f"nn.LeakyReLU and use nn.init.kaiming_normal_ on {layers}; or add residual "
            "connections around them"
        )
        return cause, fix
    act = next((k for k in h.activation_kinds if k in CRITICAL_GAIN), "linear")
    critical = CRITICAL_GAIN[act]
    if math.isfinite(gain) and (gain < 0.8 * critical if vanishing else gain > 1.25 * critical):
        init = "kaiming_normal_" if act in ("relu", "leaky_relu") else "xavier_normal_"
        cause = (
            f"init: the weights' gain sigma_w = {gain:.2f} is "
            f"{'below' if vanishing else 'above'} the critical {critical:.3g} for {act}, so "
            f"each layer scales the gradient by about {factor:.3g}"
        )
        fix = f"use nn.init.{init} on {layers} (or gradwatch.fix.critical_init_(model))"
        return cause, fix
    cause = (
        f"depth without skips: {len(idx)} layers each scale the gradient by about "
        f"{factor:.3g}, compounding to {factor ** (len(idx) - 1):.2e}"
    )
    fix = (
        f"add residual connections (x + F(x)) or normalisation (nn.BatchNorm / nn.LayerNorm) "
        f"to the stack {layers}"
    )
    return cause, fix
