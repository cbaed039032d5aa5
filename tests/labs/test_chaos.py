import dataclasses
import math

import pytest
import torch
from lab_checks import assert_well_formed

from gradwatch.labs import chaos as lab
from gradwatch.labs.base import LabConfig, LabResult

SMOKE = LabConfig("smoke", seed=3)


@pytest.fixture(scope="module")
def smoke() -> LabResult:
    return lab.chaos(SMOKE)


def test_smoke_mechanics(smoke: LabResult) -> None:
    assert smoke.name == "chaos"
    assert len(smoke.claims) == 5
    assert_well_formed(smoke)
    assert [p.id for p in smoke.plots] == [
        "lyapunov_vs_g", "gradient_vs_lyapunov", "trained_loss_vs_g"
    ]
    lyap = smoke.plots[0]
    labels = [s.label for s in lyap.series]
    assert labels[:3] == ["measured mean", "mean + 2 se", "mean - 2 se"]
    mean, up, down = (s.y for s in lyap.series[:3])
    assert all(d <= m <= u for m, u, d in zip(mean, up, down, strict=True))
    s = lab._sizes(SMOKE)
    assert lyap.series[0].x == s.gs
    assert len(smoke.plots[1].series) == len(s.gs) + 1  # one scatter per g, and y = x
    assert len(smoke.tables) == 2 and len(smoke.tables[0].rows) == len(s.gs)
    assert set(smoke.setup) >= {"autonomous nets", "lyapunov", "gradient", "training"}


def test_deterministic_and_leaves_global_state(smoke: LabResult) -> None:
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    again = lab.chaos(SMOKE)
    assert again.to_json() == smoke.to_json()
    assert torch.equal(torch.get_rng_state(), rng)  # every draw comes from cfg's generators
    assert torch.get_num_threads() == threads


def test_linear_regime_exponent_is_ln_g() -> None:
    # tiny g: the trajectory falls to h = 0 where the Jacobian is W itself, so lambda_max is
    # ln of W's spectral radius exactly, and ln g up to the finite-N spread of that radius
    s = dataclasses.replace(lab._sizes(LabConfig("smoke")), steps=400, warmup=50)
    gen = torch.Generator().manual_seed(0)
    for g in (0.1, 0.3):
        rnn = lab._rnn(100, g, gen)
        lam, _ = lab._lyapunov_max(rnn, torch.randn(2, 100, generator=gen, dtype=torch.float64),
                                   s, gen)
        rho = float(torch.linalg.eigvals(rnn.weight_hh_l0.detach()).abs().max())
        assert lam == pytest.approx(math.log(rho), abs=0.01)
        assert lam == pytest.approx(math.log(g), abs=0.1)
        # the mean-field curve is ln g there in closed form (q* = 0, chi1 = g^2)
        assert lab._mean_field_lambda(g) == pytest.approx(math.log(g), abs=1e-9)


def test_gradient_growth_has_the_sign_of_lambda() -> None:
    # At g = 3 the trajectory is chaotic: another rounding (a different CPU's kernels, or a
    # 1e-12 change of the weights) gives another finite-time sample of both exponents. Over
    # 200 steps and 40 lags |growth - lambda| reached 0.047 against the 0.05 tolerance
    # (48 such perturbations); over 1600 steps and 320 lags, median 0.009 and at most 0.027
    # (the same 48), while lambda stays in 0.27 .. 0.28 and g = 0.5 does not move.
    s = lab._sizes(LabConfig("smoke"))
    s = dataclasses.replace(s, steps=1600, bptt_T=320)
    gen = torch.Generator().manual_seed(1)
    for g, sign in ((0.5, -1.0), (3.0, 1.0)):
        rnn = lab._rnn(64, g, gen)
        lam, _ = lab._lyapunov_max(rnn, torch.randn(4, 64, generator=gen, dtype=torch.float64),
                                   s, gen)
        growth = lab._growth(rnn, s, gen)
        assert math.copysign(1.0, lam) == math.copysign(1.0, growth) == sign
        assert growth == pytest.approx(lam, abs=lab.GROWTH_TOL)


def test_crossing_interpolates() -> None:
    gs, lam = (0.5, 1.0, 1.5, 2.0), (-0.4, -0.1, 0.2, -0.05)
    assert lab._crossing(gs, lam) == pytest.approx(1.0 + 0.5 * 0.1 / 0.3)
    assert lab._crossing((*gs, 2.5), (*lam, 0.05), last=True) == pytest.approx(2.25)
    assert math.isnan(lab._crossing(gs, (-1.0, -0.5, -0.2, -0.1)))


def _points(lams: dict[float, float], shift: float = 0.0) -> list[lab._Point]:
    return [lab._Point(g, (v - 0.01, v + 0.01), (0.0, 0.0), (v + shift, v + shift), (v, v))
            for g, v in lams.items()]


def test_verdicts_change_with_the_measurement() -> None:
    gs = (0.5, 0.9, 1.1, 1.5, 2.0, 3.0)
    theory = {g: lab._mean_field_lambda(g) for g in gs}
    assert lab._crossing_claim(_points(theory), 100, 400).verdict == "holds"
    late = {g: v - 0.1 for g, v in theory.items()}  # chaos only from g ~ 1.6: too late
    assert lab._crossing_claim(_points(late), 100, 400).verdict == "does not hold"
    assert lab._mean_field_claim(_points(theory)).verdict == "holds"
    assert lab._mean_field_claim(_points(late)).verdict == "does not hold"
    assert lab._growth_claim(_points(theory, shift=0.01)).verdict == "holds"
    assert lab._growth_claim(_points(theory, shift=0.2)).verdict == "does not hold"
    lam = [-0.6, -0.1, 0.2, 0.3]
    assert lab._sign_claim(lam, [x * 1.1 for x in lam], 60).verdict == "holds"
    flipped = lab._sign_claim(lam, [-x for x in lam], 60)
    assert flipped.verdict == "does not hold" and flipped.value == 0.0
    # below the fit's resolution 3/T nothing is compared
    assert lab._sign_claim([0.01], [-0.01], 60).verdict == "inconclusive"
    train_g = (0.5, 1.0, 2.0)
    assert lab._best_claim(train_g, (0.9, 0.4, 0.8), 1.0, 1.8).verdict == "holds"
    assert lab._best_claim(train_g, (0.9, 0.8, 0.4), 1.0, 1.8).verdict == "does not hold"


def test_smoke_sign_claim_holds(smoke: LabResult) -> None:
    sign = smoke.claims[2]
    assert sign.measured["networks compared"] >= 1
    assert sign.verdict == "holds"


def test_recall_batch_targets_are_delayed_inputs() -> None:
    s = lab._sizes(LabConfig("smoke"))
    x, y = lab._recall_batch(s, 5, torch.Generator().manual_seed(0))
    assert x.shape == (s.seq_T, 5, 1) and y.shape == (s.seq_T - s.delay, 5, 1)
    net = lab._Memory(s.hidden, 1.0, torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = net(x)
        # the loss pairs the output at t with the input at t - delay
        want = (out[s.delay :] - x[: s.seq_T - s.delay]).pow(2).mean() / y.pow(2).mean()
        assert float(lab._recall_loss(net, x, y, s.delay)) == pytest.approx(float(want))


def test_bad_config_is_refused() -> None:
    with pytest.raises(TypeError, match="cfg"):
        lab.chaos("quick")  # type: ignore[arg-type]
