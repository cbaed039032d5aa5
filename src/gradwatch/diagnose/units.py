"""Saturated and dead units in activation modules."""

from __future__ import annotations

from gradwatch.diagnose._stats import col_median, late
from gradwatch.diagnose.finding import Finding, names
from gradwatch.watch.history import RunHistory

SATURATED, DEAD = 0.5, 0.5  # share of units, median over the last quarter of the run


def unit_findings(h: RunHistory) -> list[Finding]:
    if not h.activations or len(h) == 0:
        return []
    out = []
    sat = col_median(h["saturated"][late(h)])
    dead = col_median(h["dead"][late(h)])
    smooth = [
        (n, k, float(s))
        for n, k, s, d in zip(
            h.activations, h.activation_kinds, sat.tolist(), dead.tolist(), strict=True
        )
        if d != d and s > SATURATED
    ]  # d is NaN for saturating activations
    if smooth:
        mods = [n for n, _, _ in smooth]
        worst = max(s for _, _, s in smooth)
        kind = smooth[0][1]
        out.append(
            Finding(
                "saturation",
                "warning",
                tuple(mods),
                f"{kind} units at {names(mods)} are saturated (up to {worst:.0%} with a derivative "
                "under 1% of its maximum)",
                "pre-activations are too large: inputs not normalised or weights initialised too "
                "large, so the activation sits on its flat tails",
                f"normalise before {names(mods)} (nn.BatchNorm / nn.LayerNorm, standardised "
                "inputs), "
                "use nn.init.xavier_normal_ for the layers feeding them, or switch to nn.ReLU",
                {"max_saturated": worst},
            )
        )
    deads = [
        (n, float(d))
        for n, d in zip(h.activations, dead.tolist(), strict=True)
        if d == d and d > DEAD
    ]
    if deads:
        mods = [n for n, _ in deads]
        worst = max(d for _, d in deads)
        out.append(
            Finding(
                "dead_relu",
                "warning",
                tuple(mods),
                f"up to {worst:.0%} of the units at {names(mods)} output 0 for every example "
                "(dead ReLUs pass no gradient)",
                "large updates (learning rate too high) or negative biases pushed these units into "
                "the region where ReLU's derivative is 0",
                f"replace the ReLU modules at {names(mods)} with nn.LeakyReLU(0.01), lower the "
                "learning rate, or re-initialise with nn.init.kaiming_normal_ and zero biases",
                {"max_dead": worst},
            )
        )
    return out
