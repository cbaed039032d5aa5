import dataclasses
import sys

import pytest
import torch
from lab_checks import assert_well_formed

from gradwatch.labs import saliency as lab
from gradwatch.labs.base import LabConfig, LabResult

SMOKE = LabConfig("smoke", seed=1)
F64 = torch.float64


@pytest.fixture(scope="module")
def smoke() -> LabResult:
    return lab.saliency(SMOKE)


@pytest.fixture(scope="module")
def toy() -> lab._ToyRun:
    return lab._toy(LabConfig(seed=0).generator(0), 64)


def test_smoke_mechanics(smoke: LabResult) -> None:
    assert smoke.name == "saliency"
    assert len(smoke.claims) == 8
    assert_well_formed(smoke)
    # the exactness claims hold at any size: completeness, Captum == direct
    assert [smoke.claims[i].verdict for i in (2, 3, 4, 6, 7)] == ["holds"] * 5
    assert [p.id for p in smoke.plots] == ["toy_attribution", "digits_shares"]
    toy_plot = smoke.plots[0]
    assert [len(s.x) for s in toy_plot.series] == [lab.FEATURES, lab.FEATURES]
    assert len(smoke.plots[1].series[0].x) == lab._sizes(SMOKE).n_attr
    assert len(smoke.tables) == 3 and len(smoke.tables[0].rows) == lab.FEATURES
    assert {"toy", "digits", "attribution", "saturated", "reference"} <= set(smoke.setup)
    # the per-unit saturation mask is the library's cut
    m = smoke.claims[5].measured
    assert m["share of (image, unit) pairs saturated"] == pytest.approx(
        m["same, by saturated_share"], abs=1e-12)


def test_deterministic_and_leaves_global_state(smoke: LabResult) -> None:
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    again = lab.saliency(SMOKE)
    assert again.to_json() == smoke.to_json()
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.get_num_threads() == threads


def test_toy_matches_closed_forms(toy: lab._ToyRun) -> None:
    # f(x) = W sigmoid(G x_0) + c.x, zero baseline: IG_0 = W (sigmoid(G x_0) - 1/2),
    # IG_i = c_i x_i; saliency_0 = W G sigmoid'(G x_0), saliency_i = |c_i|
    s = torch.sigmoid(torch.tensor(lab.GAIN * toy.x[0], dtype=F64))
    ig0 = lab.W_OUT * (float(s) - 0.5)
    assert toy.ig_direct[0] == pytest.approx(ig0, rel=1e-12)
    cx = torch.tensor(toy.c, dtype=F64) * torch.tensor(toy.x, dtype=F64)  # (D,), cx_0 = 0
    assert toy.ig_direct[1:] == pytest.approx(cx[1:].tolist(), rel=1e-12)
    assert toy.delta_f == pytest.approx(ig0 + float(cx.sum()), rel=1e-12)
    assert toy.saliency_direct[0] == pytest.approx(lab.W_OUT * lab.GAIN * float(s * (1 - s)),
                                                   rel=1e-12)
    assert toy.saliency_direct[1:] == pytest.approx([abs(c) for c in toy.c[1:]], rel=1e-12)


def test_toy_ig_is_complete_within_one_percent(toy: lab._ToyRun) -> None:
    assert abs(sum(toy.ig) - toy.delta_f) < lab.COMPLETE * abs(toy.delta_f)
    assert abs(sum(toy.ig_direct) - toy.delta_f) < 1e-12 * abs(toy.delta_f)
    assert lab._toy_claims(toy)[2].verdict == "holds"


def test_captum_ig_equals_direct_ig_same_nodes(toy: lab._ToyRun) -> None:
    ig, ref = torch.tensor(toy.ig, dtype=F64), torch.tensor(toy.ig_direct, dtype=F64)
    assert torch.allclose(ig, ref, rtol=lab.AGREE, atol=0)
    assert toy.saliency == toy.saliency_direct  # one autograd call each: bit-identical
    # and on a generic net (tanh MLP, batch of 5, a vector output's class 3)
    attr = lab._captum()
    gen = torch.Generator().manual_seed(7)
    w1, w2 = torch.randn(6, 4, generator=gen, dtype=F64), torch.randn(5, 6, generator=gen,
                                                                      dtype=F64)

    def f(x: torch.Tensor) -> torch.Tensor:  # (B, 4) -> (B, 5)
        return torch.tanh(x @ w1.T) @ w2.T

    x = torch.randn(5, 4, generator=gen, dtype=F64)
    base = 0.3 * torch.ones_like(x)
    got = attr.IntegratedGradients(f).attribute(x, baselines=base, target=3, n_steps=20,
                                                method="gausslegendre")
    want = lab._ig_direct(lambda z: f(z)[:, 3], x, base, 20)
    assert lab._rel_diff(got, want) < lab.AGREE


def test_captum_riemann_trapezoid_weights_sum_to_one_minus_one_over_n() -> None:
    # What the quadrature table shows: on f = sum x^2 the gradient is linear along the path,
    # so the composite trapezoid is exact, and Captum's riemann_trapezoid is (n - 1) / n of it
    attr = lab._captum()
    x = torch.tensor([[1.0, -2.0, 0.5]], dtype=F64)

    def f(z: torch.Tensor) -> torch.Tensor:
        return (z**2).sum(-1)

    for n in (8, 50):
        captum = attr.IntegratedGradients(f).attribute(x, baselines=0 * x, n_steps=n,
                                                       method="riemann_trapezoid")
        ours = lab._trapezoid_direct(f, x, 0 * x, n)
        assert torch.allclose(ours, x**2, rtol=1e-12)
        assert torch.allclose(captum, (n - 1) / n * x**2, rtol=1e-6)


def test_saliency_share_of_saturated_x0_is_tiny(toy: lab._ToyRun) -> None:
    share = toy.saliency[0] / sum(toy.saliency)
    assert share < lab.BLIND
    assert toy.saturation < lab.SATURATION and toy.saturated == 1.0
    assert toy.ig[0] == max(toy.ig, key=abs)
    assert [c.verdict for c in lab._toy_claims(toy)[:2]] == ["holds", "holds"]


def test_blind_spot_verdict_flips_on_an_unsaturated_input() -> None:
    # x_0 = 0.05: G x_0 = 0.5, sigmoid' at 0.94 of its max: the gradient sees x_0 again
    run = lab._toy(LabConfig(seed=0).generator(0), 16, x0=0.05)
    assert run.saturation > 0.9 and run.saturated == 0.0
    claim = lab._toy_claims(run)[0]
    assert claim.verdict == "does not hold" and claim.value > 0.5
    assert lab._toy_claims(run)[2].verdict == "holds"  # completeness does not care


def test_digits_verdict_follows_the_measured_shares() -> None:
    run = lab._DigitsRun(saturated=(0.1, 0.2, 0.0), sal_share=(0.01, 0.02, 0.0),
                         ig_share=(0.2, 0.3, 0.0), completeness=(1e-9, 2e-9, 3e-9),
                         library_share=0.1, captum_vs_direct_ig=1e-9, captum_vs_direct_grad=0.0,
                         delta_f=(1.0, 2.0, 3.0))
    claim = lab._digits_claims(run, 0.9)[0]
    assert claim.verdict == "holds" and claim.value == pytest.approx(0.03 / 0.5)
    swapped = dataclasses.replace(run, sal_share=run.ig_share, ig_share=run.sal_share)
    assert lab._digits_claims(swapped, 0.9)[0].verdict == "does not hold"
    none = dataclasses.replace(run, saturated=(0.0,) * 3, sal_share=(0.0,) * 3,
                               ig_share=(0.0,) * 3)
    assert lab._digits_claims(none, 0.9)[0].verdict == "inconclusive"  # no saturated unit
    broken = dataclasses.replace(run, completeness=(1e-9, 0.05, 0.0))
    assert lab._digits_claims(broken, 0.9)[1].verdict == "does not hold"


def test_missing_captum_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "captum", None)
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    with pytest.raises(ImportError, match=r"pip install 'gradwatch\[labs\]'"):
        lab.saliency(SMOKE)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(TypeError, match="cfg"):
        lab.saliency("quick")  # type: ignore[arg-type]
