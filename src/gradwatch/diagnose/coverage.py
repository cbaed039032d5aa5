"""Runs with nothing to judge: no steps, no gradient anywhere, or only zero gradients.

Each of these would pass every other rule (nothing vanishes, nothing explodes), so without
this one they came back as a healthy run. At most one finding, always an error.
"""

from __future__ import annotations

from gradwatch.diagnose.finding import Finding, names
from gradwatch.watch.history import RunHistory

_WHEN = "call watch.step() after loss.backward() and before optimizer.step() / zero_grad()"


def _steps(n: int) -> str:
    return f"{n} recorded step{'' if n == 1 else 's'}"


def coverage_findings(h: RunHistory) -> list[Finding]:
    """no_data, no_gradient or zero_gradient when the run holds no gradient to judge."""
    n = len(h)
    if n == 0:
        return [
            Finding(
                "no_data",
                "error",
                (),
                "no steps recorded: the Watch saw no step() with gradients",
                "watch.step() was not called after loss.backward() (called before it, or after "
                "zero_grad() set the gradients to None), the run is shorter than every=, or it "
                "has not recorded its first step yet",
                f"{_WHEN}, or pass optimizer= to the Watch so it records by itself",
                {"steps": 0.0},
            )
        ]
    g, bad = h["grad_norm"], h["nonfinite"]  # (S, L); NaN grad_norm and nonfinite: absent
    reached = ~g.isnan() | (bad.nan_to_num(nan=0.0) > 0)  # a NaN gradient did reach its layer
    if not bool(reached.any()):
        return [
            Finding(
                "no_gradient",
                "error",
                h.layers,
                f"no gradient reached any watched layer in {_steps(n)}",
                "the loss does not depend on the watched parameters: a .detach(), "
                "torch.no_grad() or requires_grad=False between them and the loss",
                "make loss.backward() reach the model: remove the .detach() / torch.no_grad() "
                f"on the path from the parameters to the loss, set requires_grad=True; {_WHEN}",
                {"steps": float(n), "layers": float(len(h.layers))},
            )
        ]
    if bool((g[reached] == 0).all()):  # every gradient that reached a layer was exactly 0
        hit = [name for name, r in zip(h.layers, reached.any(dim=0).tolist(), strict=True) if r]
        return [
            Finding(
                "zero_gradient",
                "error",
                tuple(hit),
                f"every gradient is exactly 0 on every step ({_steps(n)}, in {names(hit)})",
                "watch.step() runs after zero_grad() (with set_to_none=False it leaves zero "
                "gradients for step() to read), or the loss does not change with the "
                "parameters (a constant or detached loss)",
                f"{_WHEN} (or pass optimizer= to the Watch so it records by itself); if it "
                "already is, check that the loss depends on the model's output",
                {"steps": float(n), "layers": float(len(hit))},
            )
        ]
    return []
