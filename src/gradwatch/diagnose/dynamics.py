"""Findings over training time: non-finite values, norm spikes and growth, stalled updates."""

from __future__ import annotations

import math

import torch

from gradwatch.diagnose._stats import col_median, late, total_norm
from gradwatch.diagnose.finding import Finding, names
from gradwatch.watch.history import RunHistory

SPIKE = 10.0  # a norm above 10x the running median of the steps before it
WINDOW = 20
GROWTH = 1e3  # last over first total norm
STALLED = 1e-5  # update / weight ratio


def _spikes(tn: torch.Tensor) -> list[int]:
    """Indices whose norm exceeds SPIKE x the median of the WINDOW norms before them."""
    return [i for i in range(WINDOW // 2, len(tn))
            if float(tn[i]) > SPIKE * float(tn[max(0, i - WINDOW):i].median())]


def clip_threshold(h: RunHistory) -> float:
    """A clipping level read from the run: the 90th percentile of the total gradient norms
    before it blew up (before the first non-finite step or spike; the first quarter of the
    run when the norm grew over 1e3x), so a divergence does not set its own threshold."""
    tn = total_norm(h)
    bad = (~torch.isfinite(tn)).nonzero()
    tn = tn[: int(bad[0, 0]) if bad.numel() else len(tn)]
    tn = tn[tn > 0]
    if not tn.numel():
        return math.nan
    spikes = _spikes(tn)
    if spikes:
        tn = tn[: spikes[0]]
    q = max(1, len(tn) // 10)
    if len(tn) >= 4 and float(tn[-q:].median() / tn[:q].median()) > GROWTH:
        tn = tn[: max(1, math.ceil(len(tn) / 4))]
    return float(torch.quantile(tn, 0.9))


def _clip_fix(h: RunHistory) -> str:
    c = clip_threshold(h)
    if not math.isfinite(c):
        return (
            "clip the gradient norm (torch.nn.utils.clip_grad_norm_) or use gradwatch.fix.AutoClip"
        )
    return (
        f"clip at {c:.3g} (the 90th percentile of the norms before the blow-up): "
        f"torch.nn.utils.clip_grad_norm_(model.parameters(), {c:.3g}), "
        "or gradwatch.fix.AutoClip()"
    )


def nonfinite_findings(h: RunHistory) -> list[Finding]:
    bad = h["nonfinite"].nan_to_num(nan=0.0) > 0
    bad |= torch.isinf(h["grad_norm"])
    rows = bad.any(dim=1).nonzero()
    if not rows.numel():
        return []
    r = int(rows[0, 0])
    step = int(h.steps[r])
    layers = [n for n, b in zip(h.layers, bad[r].tolist(), strict=True) if b]
    n_steps = int(bad.any(dim=1).sum())
    tn = total_norm(h)[:r]
    tn = tn[torch.isfinite(tn) & (tn > 0)]
    grew = tn.numel() >= 2 and float(tn[-1] / tn[0]) > GROWTH
    cause = (
        f"exploding gradients overflowed: the norm grew {float(tn[-1] / tn[0]):.2e}x before it"
        if grew
        else "a NaN/Inf from the forward pass or the loss (log(0), division by zero, overflow "
        "in low precision) or a learning rate far too high"
    )
    return [
        Finding(
            "nonfinite",
            "error",
            tuple(layers),
            f"NaN/Inf gradients first at step {step} in {names(layers)} ({n_steps} recorded steps "
            "affected)",
            cause,
            _clip_fix(h)
            + "; check the loss for log(0) or division by zero; lower the learning rate",
            {"first_step": float(step), "steps_affected": float(n_steps)},
        )
    ]


def explosion_findings(h: RunHistory) -> list[Finding]:
    tn = total_norm(h)
    good = torch.isfinite(tn) & (tn > 0)
    steps, tn = h.steps[good], tn[good]
    if tn.numel() < 5:
        return []
    spikes = []
    for i in range(WINDOW // 2, len(tn)):
        med = float(tn[max(0, i - WINDOW) : i].median())
        if float(tn[i]) > SPIKE * med:
            spikes.append(int(steps[i]))
    growth = float(tn[-max(1, len(tn) // 10) :].median() / tn[: max(1, len(tn) // 10)].median())
    if growth < GROWTH and not spikes:
        return []
    what = (
        f"the total gradient norm grew {growth:.2e}x over the run"
        if growth >= GROWTH
        else f"{len(spikes)} spikes above {SPIKE:g}x the running median (first at step {spikes[0]})"
    )
    return [
        Finding(
            "exploding",
            "warning",
            (),
            what,
            "large per-step Jacobians compound (weights growing, learning rate too high, or an "
            "expanding recurrence)",
            _clip_fix(h),
            {"growth": growth, "spikes": float(len(spikes)), "clip_at": clip_threshold(h)},
        )
    ]


def stalled_findings(h: RunHistory) -> list[Finding]:
    u = col_median(h["update_ratio"][late(h)])
    known = torch.isfinite(u)
    if int(known.sum()) == 0:
        return []
    low = known & (u < STALLED)
    if float(low.sum()) < 0.8 * float(known.sum()):
        return []
    layers = [n for n, b in zip(h.layers, low.tolist(), strict=True) if b]
    med = float(u[known].median())
    return [
        Finding(
            "stalled",
            "warning",
            tuple(layers),
            f"updates are tiny: ||dW||/||W|| is {med:.1e} (median), under {STALLED:g} in "
            f"{names(layers)}",
            "the learning rate is too small for these weights, or the gradient reaching them "
            "has vanished",
            "raise the learning rate (a ratio near 1e-3 per step is typical), or fix the vanishing "
            "gradient first if one is reported",
            {"median_update_ratio": med},
        )
    ]
