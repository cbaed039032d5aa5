"""Rules: a RunHistory in, Findings out. Pure: nothing prints, nothing is modified."""

from __future__ import annotations

from collections.abc import Callable

from gradwatch.core.probe import ProbeResult
from gradwatch.diagnose.coverage import coverage_findings
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
Rule = Callable[[RunHistory], list[Finding]]
# (rule, reads the gradients): a run without a usable gradient skips the second kind, whose
# findings would only echo it ("stalled" on a run of zero gradients). The others read the
# forward pass (units) or take their own backward pass (recurrent profiles).
_RULES: tuple[tuple[Rule, bool], ...] = (
    (nonfinite_findings, False),
    (depth_findings, True),
    (explosion_findings, True),
    (unit_findings, False),
    (stalled_findings, True),
    (recurrent_findings, False),
    (gan_findings, True),
)


def diagnose(history: RunHistory | ProbeResult) -> list[Finding]:
    """Say where the learning signal dies or blows up, why, and what to change.

    Args:
        history: a :class:`RunHistory` from ``Watch.history`` or ``gradwatch.load_run``, or a
            :class:`ProbeResult` from ``gradwatch.probe`` (read as a one-step history).

    Returns:
        Findings, most severe first; an empty list for a healthy run. A run with nothing to
        judge gets one error instead, and no gradient rule runs on it: ``no_data`` (no step
        recorded), ``no_gradient`` (no gradient reached any layer) or ``zero_gradient``
        (every gradient exactly 0 on every step, e.g. ``step()`` called after ``zero_grad()``).

    Example:
        >>> for finding in diagnose(watch.history):          # doctest: +SKIP
        ...     print(finding)
        vanishing: layers 0, 2, ... get < 0.001 of the last layer's gradient ...

    Paper: Bengio, Simard & Frasconi 1994 and Pascanu, Mikolov & Bengio 2013 (vanishing and
    exploding gradients); Glorot & Bengio 2010 (saturation); Lu et al. 2019 (dying ReLU).
    """
    if isinstance(history, ProbeResult):
        history = RunHistory.from_probe(history)
    if not isinstance(history, RunHistory):
        raise TypeError(
            f"history: expected a RunHistory (Watch.history or load_run) or a ProbeResult "
            f"(gradwatch.probe), got {type(history).__name__}"
        )
    found = coverage_findings(history)
    blind = bool(found)
    found += [f for rule, reads in _RULES if not (blind and reads) for f in rule(history)]
    if any(f.kind == "vanishing" for f in found):  # stalled updates are its consequence
        found = [f for f in found if f.kind != "stalled"]
    return sorted(found, key=lambda f: _ORDER[f.severity])
