import pytest
import torch
from lab_checks import assert_well_formed

from gradwatch.labs import through_time as lab
from gradwatch.labs.base import LabConfig, LabResult

SMOKE = LabConfig("smoke", seed=3)


@pytest.fixture(scope="module")
def smoke() -> LabResult:
    return lab.through_time(SMOKE)


def test_smoke_mechanics(smoke: LabResult) -> None:
    assert smoke.name == "through_time"
    assert len(smoke.claims) == 8
    assert_well_formed(smoke, finite_values=False)
    # exact even at smoke size: the linear recurrence and Pascanu's bound
    assert [c.verdict for c in smoke.claims[:3]] == ["holds"] * 3
    assert smoke.claims[4].verdict == "holds"
    ids = [p.id for p in smoke.plots]
    assert ids == ["linear_recurrence", "rnn_radius", "gates_init", "gates_trained", "gates_loss"]
    assert len(next(p for p in smoke.plots if p.id == "rnn_radius").series) == 2 * len(lab.RADII)
    assert len(smoke.tables) == 4
    assert set(smoke.setup) >= {"linear recurrence", "tanh RNN sweep", "recall task", "watch"}


def test_deterministic_and_leaves_global_state(smoke: LabResult) -> None:
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    again = lab.through_time(SMOKE)
    assert again.to_json() == smoke.to_json()
    assert torch.equal(torch.get_rng_state(), rng)  # every draw comes from cfg's generators
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize(
    ("a", "lag", "power"),
    [
        (0.9, 10, 0.35),
        (0.9, 50, 0.005),
        (1.1, 10, 2.6),
        (1.1, 50, 117.0),
    ],
)
def test_linear_recurrence_is_the_power_within_1pct(a: float, lag: int, power: float) -> None:
    # the numbers (rounded there: compare with 2 significant digits) and the exact a^k
    p = lab._linear_profile(a)
    g = p.grad_norm.flip(0)  # (T,) by lag
    ratio = float(g[lag] / g[0])
    assert ratio == pytest.approx(a**lag, rel=0.01)
    assert ratio == pytest.approx(power, rel=0.05)
    k = p.spectral_lags.tolist().index(lag)
    assert float(p.spectral_norm[k]) == pytest.approx(a**lag, rel=0.01)
    assert lab._powers_claim(a, p).verdict == "holds"


def test_vanishing_verdict_flips_with_the_factor() -> None:
    assert lab._vanishes_claim(0.9, lab._linear_profile(0.9)).verdict == "holds"
    flipped = lab._vanishes_claim(1.1, lab._linear_profile(1.1))
    assert flipped.verdict == "does not hold"
    assert flipped.value == pytest.approx(1.1**50, rel=0.01)


def test_powers_claim_fails_for_the_wrong_factor() -> None:
    # a profile of a = 0.95 judged against 0.9^k is far off
    wrong = lab._powers_claim(0.9, lab._linear_profile(0.95))
    assert wrong.verdict == "does not hold" and wrong.value > 0.5


def test_scaled_rnn_radius_and_sigma_max() -> None:
    s = lab._sizes(LabConfig("smoke"))
    gen = torch.Generator().manual_seed(0)
    rnn, rho, smax = lab._scaled_rnn("orthogonal", 0.9, s, gen)
    assert rho == pytest.approx(0.9, abs=1e-9) and smax == pytest.approx(0.9, abs=1e-9)
    w = rnn.weight_hh_l0.detach()
    assert float(torch.linalg.svdvals(w).max()) == pytest.approx(smax, rel=1e-12)
    _, rho, smax = lab._scaled_rnn("Gaussian", 0.9, s, gen)
    assert rho == pytest.approx(0.9, abs=1e-9) and smax > 1.3  # non-normal: sigma_max ~ 2 rho


def _case(sigma_max: float, a: float) -> lab._RNNCase:
    # a stand-in RNN whose gradient multiplies by a per step
    return lab._RNNCase("test", sigma_max, sigma_max, lab._linear_profile(a))


def test_pascanu_verdicts_follow_the_measurement() -> None:
    assert lab._sufficient_claim([_case(0.9, 0.85), _case(2.0, 1.05)]).verdict == "holds"
    # a contracting W whose gradient grew would contradict the theorem
    assert lab._sufficient_claim([_case(0.9, 1.05)]).verdict == "does not hold"
    assert lab._sufficient_claim([_case(2.0, 0.8)]).verdict == "inconclusive"  # no case
    assert lab._exploding_claim([_case(1.5, 1.05), _case(0.9, 0.85)]).verdict == "holds"
    assert lab._exploding_claim([_case(0.9, 1.05)]).verdict == "does not hold"
    assert lab._exploding_claim([_case(0.9, 0.85)]).verdict == "inconclusive"
    assert lab._bound_claim([_case(0.9, 0.85)]).verdict == "holds"
    assert lab._bound_claim([_case(0.9, 0.95)]).verdict == "does not hold"


def test_forget_claim_flips() -> None:
    assert lab._forget_claim(1e-6, 1e-3, 30).verdict == "holds"
    assert lab._forget_claim(1e-3, 1e-6, 30).verdict == "does not hold"


def test_recall_batch() -> None:
    x, y = lab._recall_batch(7, 16, torch.Generator().manual_seed(1))
    assert x.shape == (7, 16, lab.SYMBOLS + 1) and y.shape == (16,)
    assert torch.equal(x[0, :, : lab.SYMBOLS].argmax(1), y)
    assert bool((x[0, :, -1] == 1).all()) and not x[1:].any()


def test_lstm_forget_bias_is_set_exactly() -> None:
    net = lab._Recall("LSTM", 8, 1.0, torch.Generator().manual_seed(0))
    f = net.rnn.bias_ih_l0[8:16] + net.rnn.bias_hh_l0[8:16]
    assert torch.equal(f, torch.ones(8))


def test_watch_prescribes_the_forget_bias() -> None:
    # at T = 30 the bias-0 LSTM's gradient falls below 1e-3 (factor ~0.65 per step)
    s = lab._Sizes(
        30, 16, 2, 4, seq_T=30, seq_hidden=16, seq_batch=8, train_steps=1, eval_n=8, watch_steps=2
    )
    claims, tables, _ = lab._watch_section(s, LabConfig("smoke", seed=1))
    assert claims[0].verdict == "holds", tables[0].rows
    assert claims[0].measured["prescribed, bias 0"] == 1.0
    # the rule itself: prescriptions swapped give the opposite verdict
    f0, _ = lab._watched_findings(None, s, torch.Generator().manual_seed(2))
    assert lab._watch_claim([], f0, (1.0, 0.0)).verdict == "does not hold"


def test_bad_config_is_refused() -> None:
    with pytest.raises(TypeError, match="cfg"):
        lab.through_time("quick")  # type: ignore[arg-type]
