"""A Finding: what happened, where, why, and what to change, with the numbers behind it."""

from __future__ import annotations

from dataclasses import dataclass, field

from gradwatch._result import Result

SEVERITIES = ("info", "warning", "error")


@dataclass(frozen=True)
class Finding(Result):
    """One diagnosis.

    Attributes:
        kind: vanishing, exploding, nonfinite, saturation, dead_relu, stalled,
            recurrent_vanishing, recurrent_exploding or gan_saturation.
        severity: "info", "warning" or "error".
        layers: qualified names of the layers or modules concerned.
        summary: what was seen, in one sentence with the numbers.
        cause: the mechanism, named from evidence in the same run.
        fix: what to change in this model.
        evidence: the numbers the rule used.
    """

    kind: str
    severity: str
    layers: tuple[str, ...]
    summary: str
    cause: str
    fix: str
    evidence: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.kind}: {self.summary}; cause: {self.cause}; fix: {self.fix}"


def names(items: list[str] | tuple[str, ...], limit: int = 6) -> str:
    """'a, b, c, ... (12 in all)' for long lists of module names."""
    items = list(items)
    if len(items) <= limit:
        return ", ".join(items)
    return ", ".join(items[: limit - 1]) + f", ... {items[-1]} ({len(items)} in all)"
