import math

import pytest

from gradwatch.labs import (
    REGISTRY,
    Claim,
    LabConfig,
    LabResult,
    Plot,
    Series,
    Table,
    available,
    register,
    run_lab,
)


def test_verdicts_are_computed_from_the_value_and_the_threshold():
    assert Claim.check("tiny", 1e-20, below=1e-6).verdict == "holds"
    assert Claim.check("tiny", 1e-3, below=1e-6).verdict == "does not hold"
    c = Claim.check("in band", 1.0, above=0.7, below=1.3, measured={"depth": 30})
    assert c.verdict == "holds" and c.rule == "> 0.7 and < 1.3" and c.measured == {"depth": 30}
    assert Claim.check("nan", math.nan, below=1.0).verdict == "inconclusive"
    with pytest.raises(ValueError, match="below/above"):
        Claim.check("no rule", 1.0)


def test_config_sizes_and_seeds():
    cfg = LabConfig("smoke", seed=3)
    assert cfg.pick(1, 2, 3) == 1 and LabConfig("full").pick(1, 2, 3) == 3
    a, b = cfg.generator(1), LabConfig("smoke", seed=3).generator(1)
    assert a.initial_seed() == b.initial_seed() != cfg.generator(2).initial_seed()
    with pytest.raises(ValueError, match="size"):
        LabConfig("huge")
    with pytest.raises(TypeError, match="seed"):
        LabConfig("quick", seed="0")  # type: ignore[arg-type]


def test_result_round_trip():
    res = LabResult(
        "x",
        "X",
        LabConfig("smoke"),
        {"width": "32"},
        (Claim.check("c", 0.5, below=1.0, measured={"a": math.inf}),),
        (Table("t", ("a", "b"), (("1", "2"),)),),
        (
            Plot(
                "p",
                "P",
                "layer",
                "|g|",
                (Series("s", (1.0, 2.0), (1e-20, math.nan)),),
                logy=True,
                reference={"bound": 1e-18},
            ),
        ),
        seconds=1.5,
    )
    back = LabResult.from_json(res.to_json())
    assert back.claims == res.claims and back.tables == res.tables
    assert back.plots[0].series[0].y[0] == 1e-20 and math.isnan(back.plots[0].series[0].y[1])
    assert back.config == res.config and back.seconds == 1.5


def test_registry_runs_and_times_a_lab():
    @register("_unit")
    def unit(cfg: LabConfig) -> LabResult:
        return LabResult("_unit", "Unit", cfg, {}, (Claim.check("c", cfg.seed, below=1),))

    try:
        res = run_lab("_unit", LabConfig("smoke", seed=0))
        assert res.claims[0].verdict == "holds" and res.seconds >= 0
        assert run_lab("_unit", LabConfig("smoke", seed=5)).claims[0].verdict == "does not hold"
    finally:
        del REGISTRY["_unit"]
    with pytest.raises(ValueError, match="unknown lab 'nope'"):
        run_lab("nope")
    assert "depth" in available() and "edge_of_chaos" in available()


def test_training_loops_report_progress_to_listeners():
    from gradwatch.labs import listening, steps

    seen = []
    with listening(lambda label, done, total: seen.append((label, done, total))):
        assert list(steps(3, "loop")) == [0, 1, 2]
    assert seen == [("loop", 1, 3), ("loop", 2, 3), ("loop", 3, 3)]
    list(steps(2, "unheard"))  # no listener: silent
    assert len(seen) == 3
