import math

import pytest
import torch
from lab_checks import assert_well_formed

from gradwatch.core import meanfield
from gradwatch.labs import edge_of_chaos as lab
from gradwatch.labs.base import LabConfig, LabResult

SMOKE = LabConfig("smoke", seed=3)


@pytest.fixture(scope="module")
def smoke() -> LabResult:
    return lab.edge_of_chaos(SMOKE)


def test_smoke_mechanics(smoke: LabResult) -> None:
    assert smoke.name == "edge_of_chaos"
    assert len(smoke.claims) == 6
    assert_well_formed(smoke)
    assert smoke.claims[0].verdict == "holds"  # exact even at smoke size
    ids = [p.id for p in smoke.plots]
    assert {
        "phase_diagram",
        "critical_line",
        "gradient_factor",
        "gradient_profiles",
        "trainability",
        "isometry",
    } == set(ids)
    heat = next(p for p in smoke.plots if p.id == "phase_diagram")
    assert heat.kind == "heatmap" and len({s.x for s in heat.series}) == 1  # rows share x
    assert set(smoke.setup) >= {"phase diagram", "gradient sweep", "trainability", "isometry"}


def test_deterministic_and_leaves_global_state(smoke: LabResult) -> None:
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    again = lab.edge_of_chaos(SMOKE)
    assert again.to_json() == smoke.to_json()
    assert torch.equal(torch.get_rng_state(), rng)  # every draw comes from cfg's generators
    assert torch.get_num_threads() == threads


def test_phase_heatmap_is_meanfield_chi1(smoke: LabResult) -> None:
    heat = next(p for p in smoke.plots if p.id == "phase_diagram")
    row = heat.series[-1]  # sigma_b = 1
    for sw, y in zip(row.x[::3], row.y[::3], strict=True):
        assert y == pytest.approx(math.log10(meanfield.chi1("tanh", sw, 1.0)), abs=1e-9)


def test_inputs_sit_at_the_fixed_point() -> None:
    # Monte Carlo: the first layer's pre-activations have mean square q*.
    sw, sb, n = 1.5, 0.05, 512
    q = meanfield.qstar("tanh", sw, sb)
    gen = torch.Generator().manual_seed(0)
    x = lab._at_fixed_point(64, n, sw, sb, q, gen)  # (64, n)
    lin = lab._linear(n, n, sw, sb, gen)
    with torch.no_grad():
        h = lin(x)  # (64, n)
    assert float(h.square().mean()) == pytest.approx(q, rel=0.05)


def test_watch_profile_matches_autograd() -> None:
    # slow reference: the same net's weight+bias gradient norms by plain autograd
    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    sw, sb, n, depth, batch = 1.3, 0.05, 32, 6, 4
    g = lab._gradient_profile(sw, sb, n, depth, batch, gen_a)
    layers = []
    for i in range(depth):
        layers.append(lab._linear(n, n, sw, sb, gen_b))
        if i < depth - 1:
            layers.append(torch.nn.Tanh())
    model = torch.nn.Sequential(*layers)
    x = lab._at_fixed_point(batch, n, sw, sb, meanfield.qstar("tanh", sw, sb), gen_b)
    v = torch.randn(batch, n, generator=gen_b, dtype=torch.float64)
    (model(x) * v).sum().backward()
    ref = [
        math.hypot(float(m.weight.grad.norm()), float(m.bias.grad.norm()))
        for m in model
        if isinstance(m, torch.nn.Linear)
    ]
    assert g.tolist() == pytest.approx(ref, rel=1e-10)


def test_gradient_factor_follows_chi1() -> None:
    # chaotic and ordered: the measured per-layer log factor tracks ln chi1
    gen = torch.Generator().manual_seed(2)
    for sw in (0.7, 2.0):
        g = lab._gradient_profile(sw, 0.05, 128, 20, 16, gen)
        meas = math.log(float(g[0]) ** 2 / float(g[-1]) ** 2) / 19
        assert meas == pytest.approx(math.log(meanfield.chi1("tanh", sw, 0.05)), abs=0.05)


def test_isometry_verdict_flips_with_gaussian_weights() -> None:
    depths = (16,)
    spreads = {
        orth: lab._spread_vs_depth(
            "tanh", orth, lab.SIGMA_B_ISO, 32, depths, 2, torch.Generator().manual_seed(5)
        )[-1]
        for orth in (True, False)
    }
    assert lab._isometry_claim(spreads[True], 16).verdict == "holds"
    flipped = lab._isometry_claim(spreads[False], 16, orthogonal=False)
    assert flipped.verdict == "does not hold"
    assert spreads[False] > 4 * spreads[True]


def test_trainability_verdict_follows_accuracies() -> None:
    good = [(0.0, 0.95), (2.0, 0.9), (5.0, 0.8), (8.0, 0.5), (15.0, 0.1), (30.0, 0.09)]
    assert lab._trainability_claim(good).verdict == "holds"
    swapped = [(r, 1.0 - a) for r, a in good]
    assert lab._trainability_claim(swapped).verdict == "does not hold"
    only_shallow = [(r, a) for r, a in good if r < 12]
    assert lab._trainability_claim(only_shallow).verdict == "inconclusive"


def test_bad_config_is_refused() -> None:
    with pytest.raises(TypeError, match="cfg"):
        lab.edge_of_chaos("quick")  # type: ignore[arg-type]
