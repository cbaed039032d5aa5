"""Rules: a RunHistory in, Findings out. Pure: nothing prints, nothing is modified."""

from __future__ import annotations

from gradwatch.diagnose.depth import depth_findings
from gradwatch.diagnose.dynamics import (
    clip_threshold,
    explosion_findings,
    nonfinite_findings,
    stalled_findings,
)
from gradwatch.diagnose.finding import Finding
from gradwatch.diagnose.gan import gan_findings
from gradwatch.diagnose.recurrent import recurrent_findings
from gradwatch.diagnose.units import unit_findings
from gradwatch.watch.history import RunHistory

__all__ = ["Finding", "clip_threshold", "diagnose"]

_ORDER = {"error": 0, "warning": 1, "info": 2}


def diagnose(history: RunHistory) -> list[Finding]:
    """Say where the learning signal dies or blows up, why, and what to change.

    Args:
        history: a :class:`RunHistory` from ``Watch.history`` or ``gradwatch.load_run``.

    Returns:
        Findings, most severe first; an empty list for a healthy run.

    Example:
        >>> for finding in diagnose(watch.history):          # doctest: +SKIP
        ...     print(finding)
        vanishing: layers 0, 2, ... get < 0.001 of the last layer's gradient ...

    Paper: Bengio, Simard & Frasconi 1994 and Pascanu, Mikolov & Bengio 2013 (vanishing and
    exploding gradients); Glorot & Bengio 2010 (saturation); Lu et al. 2019 (dying ReLU).
    """
    if not isinstance(history, RunHistory):
        raise TypeError(
            f"history: expected a RunHistory (Watch.history or load_run), got "
            f"{type(history).__name__}"
        )
    found = [
        *nonfinite_findings(history),
        *depth_findings(history),
        *explosion_findings(history),
        *unit_findings(history),
        *stalled_findings(history),
        *recurrent_findings(history),
        *gan_findings(history),
    ]
    if any(f.kind == "vanishing" for f in found):  # stalled updates are its consequence
        found = [f for f in found if f.kind != "stalled"]
    return sorted(found, key=lambda f: _ORDER[f.severity])
