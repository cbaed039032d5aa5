"""Checks shared by the lab tests (imported by name: tests/labs is on sys.path under pytest)."""

import math

from gradwatch.labs.base import Claim


def recomputed(c: Claim) -> str:
    """The verdict that the claim's value and rule imply: a verdict is never written by hand."""
    if not math.isfinite(c.value):
        return "inconclusive"
    ok = True
    for part in c.rule.split(" and "):
        op, bound = part.split(" ")
        ok = ok and (c.value > float(bound) if op == ">" else c.value < float(bound))
    return "holds" if ok else "does not hold"
