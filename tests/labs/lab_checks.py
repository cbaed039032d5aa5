"""Checks shared by the lab tests (imported by name: tests/labs is on sys.path under pytest)."""

import math

from gradwatch.labs.base import VERDICTS, Claim, LabResult


def recomputed(c: Claim) -> str:
    """The verdict that the claim's value and rule imply: a verdict is never written by hand."""
    if not math.isfinite(c.value):
        return "inconclusive"
    ok = True
    for part in c.rule.split(" and "):
        op, bound = part.split(" ")
        ok = ok and (c.value > float(bound) if op == ">" else c.value < float(bound))
    return "holds" if ok else "does not hold"


def assert_well_formed(result: LabResult, *, finite_values: bool = True) -> None:
    """Every verdict follows from its value and rule; every number the report draws is
    finite (and positive on log axes); every table is rectangular."""
    for c in result.claims:
        assert c.verdict in VERDICTS, c.statement
        assert c.rule and c.verdict == recomputed(c), c.statement
        assert not finite_values or math.isfinite(c.value), c.statement
        assert all(math.isfinite(v) for v in c.measured.values()), c.statement
    ids = [p.id for p in result.plots]
    assert len(set(ids)) == len(ids)
    for p in result.plots:
        assert p.series, p.id
        for s in p.series:
            assert len(s.x) == len(s.y) > 0
            assert all(math.isfinite(v) for v in (*s.x, *s.y)), (p.id, s.label)
            assert not p.logy or all(v > 0 for v in s.y), (p.id, s.label)
            assert not p.logx or all(v > 0 for v in s.x), (p.id, s.label)
    for t in result.tables:
        assert t.rows and all(len(r) == len(t.columns) for r in t.rows), t.title
    assert LabResult.from_json(result.to_json()) == result
