import dataclasses
import itertools
import math

import pytest
import torch
from lab_checks import assert_well_formed

from gradwatch.diagnose import diagnose
from gradwatch.diagnose.gan import generator_ratio
from gradwatch.labs import gan as lab
from gradwatch.labs.base import LabConfig, LabResult

SMOKE = LabConfig("smoke", seed=3)
QUICK = LabConfig("quick", seed=0)
EPS = torch.finfo(torch.float64).eps


@pytest.fixture(scope="module")
def smoke() -> LabResult:
    return lab.gan(SMOKE)


@pytest.fixture(scope="module")
def gan0() -> lab._GAN:
    return lab._GAN(lab._sizes(QUICK).hidden, QUICK.generator(1))


@pytest.fixture(scope="module")
def frozen(gan0):
    """The quick run's frozen-generator phase (seed 0), watched under both losses."""
    s = lab._sizes(QUICK)
    fixed, sat = lab._frozen_generator(gan0, s, QUICK, "saturating", lab.LR)
    _, ns = lab._frozen_generator(gan0, s, QUICK, "non_saturating", lab.LR, measure=False)
    return fixed, sat, ns


def test_smoke_mechanics(smoke: LabResult) -> None:
    assert smoke.name == "gan"
    assert len(smoke.claims) == 6
    assert_well_formed(smoke)
    assert smoke.claims[2].verdict == "holds"  # the logit identities: exact at any size
    assert [p.id for p in smoke.plots] == [
        "frozen_confidence", "watch_generator", "train_w1", "train_modes", "samples"]
    fixed, train = smoke.tables
    assert len(fixed.rows) == lab._sizes(SMOKE).checkpoints and len(train.rows) == 2
    assert {"data", "model", "frozen generator", "training", "metrics", "watch"} <= set(
        smoke.setup)


def test_both_losses_start_from_the_same_weights_and_noise(smoke: LabResult) -> None:
    w1 = next(p for p in smoke.plots if p.id == "train_w1")
    assert w1.series[0].y[0] == w1.series[1].y[0]  # same init: bit-identical first W1
    assert smoke.tables[1].rows[0][1] == smoke.tables[1].rows[1][1]


def test_deterministic_and_leaves_global_state(smoke: LabResult) -> None:
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    again = lab.gan(SMOKE)
    assert again.to_json() == smoke.to_json()
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.get_num_threads() == threads


# ---------------------------------------------------------------- exactness
LOGITS = torch.tensor([-745.0, -700, -100, -50, -37, -20.5, -5, -1e-3, 0, 1e-3, 5, 20.5, 37,
                       50, 100, 700, 745], dtype=torch.float64)


@pytest.mark.parametrize("kind", lab.KINDS)
def test_logit_derivatives_match_the_formulas_to_rounding(kind: str) -> None:
    gen = torch.Generator().manual_seed(7)
    a = torch.cat([LOGITS, 15 * torch.randn(200, generator=gen, dtype=torch.float64)])
    a.requires_grad_(True)
    (d,) = torch.autograd.grad(lab.generator_loss(a, kind, "sum"), a)
    s = torch.sigmoid(a.detach())
    ref = -s if kind == "saturating" else -(1 - s)  # written out here, not taken from the lab
    assert d.dtype == torch.float64
    assert float((d - ref).abs().max()) <= 4 * EPS
    assert torch.isfinite(d).all() and bool(((d <= 0) & (d >= -1)).all())


@pytest.mark.parametrize("kind", lab.KINDS)
def test_stable_losses_equal_the_textbook_forms(kind: str) -> None:
    # slow reference: log(1 - sigmoid(a)) and -log(sigmoid(a)) literally, where 1 - sigmoid(a)
    # keeps its digits (|a| <= 10), and as -log1p(e^a) / log1p(e^-a) up to |a| = 700
    a = torch.linspace(-10, 10, 201, dtype=torch.float64, requires_grad=True)
    s = torch.sigmoid(a)
    book = torch.log(1 - s) if kind == "saturating" else -torch.log(s)
    ours = lab.generator_loss(a, kind, "none")
    torch.testing.assert_close(ours, book, rtol=1e-9, atol=1e-12)
    (g_book,) = torch.autograd.grad(book.sum(), a)
    (g_ours,) = torch.autograd.grad(ours.sum(), a)
    torch.testing.assert_close(g_ours, g_book, rtol=1e-9, atol=1e-12)
    wide = torch.linspace(-700, 700, 1401, dtype=torch.float64)
    ref = -torch.log1p(wide.exp()) if kind == "saturating" else torch.log1p((-wide).exp())
    torch.testing.assert_close(lab.generator_loss(wide, kind, "none"), ref, rtol=1e-13,
                               atol=1e-13)  # BCE keeps absolute, not relative, digits near 0


@pytest.mark.parametrize("kind", lab.KINDS)
def test_generator_gradient_is_the_chain_rule_through_the_logit(gan0, kind: str) -> None:
    # d L / d theta_G = sum_i (d l / d a_i) d a_i / d theta_G / B, with d l / d a_i the formula
    z = lab._noise(64, torch.Generator().manual_seed(5))
    norm, err, a = lab._gen_grad(gan0, z, kind)
    assert err <= 4 * EPS
    params = list(gan0.gen.parameters())
    logit = gan0.logit(gan0.gen(z))
    chain = torch.autograd.grad(logit, params, grad_outputs=lab._logit_derivative(a, kind) / 64)
    ref = float(torch.sqrt(sum(g.square().sum() for g in chain)))
    assert norm == pytest.approx(ref, rel=1e-12)


def test_wasserstein1_against_sorted_samples_and_brute_force() -> None:
    gen = torch.Generator().manual_seed(2)
    u, v = torch.randn(300, generator=gen, dtype=torch.float64), torch.rand(
        300, generator=gen, dtype=torch.float64)
    on_line = lab.wasserstein1(torch.stack([u, 0 * u], 1), torch.stack([v, 0 * v], 1))
    assert on_line == pytest.approx(float((u.sort().values - v.sort().values).abs().mean()),
                                    rel=1e-12)  # 1-D W1: matching sorted samples is optimal
    a, b = torch.randn(6, 2, generator=gen), torch.randn(6, 2, generator=gen)
    cost = torch.cdist(a.double(), b.double())
    best = min(float(cost[range(6), list(p)].mean()) for p in itertools.permutations(range(6)))
    assert lab.wasserstein1(a, b) == pytest.approx(best, rel=1e-12)
    with pytest.raises(ValueError, match="a, b"):
        lab.wasserstein1(a, b[:5])


def test_modes_and_quality() -> None:
    centres = lab._centres()
    assert lab._quality(centres.repeat(10, 1)) == (8, 1.0)
    assert lab._quality(torch.zeros(80, 2, dtype=torch.float64)) == (0, 0.0)
    one = centres[:1].repeat(50, 1)
    one[25:] += 4 * lab.STD  # half of them outside 3 std
    assert lab._quality(one) == (1, 0.5)


# ---------------------------------------------------------------- the claims, measured
def test_saturating_finding_fires_and_non_saturating_is_not_starved(frozen) -> None:
    fixed, sat, ns = frozen
    hits = [f for f in diagnose(sat) if f.kind == "gan_saturation"]
    assert len(hits) == 1 and all(not n.startswith("disc") for n in hits[0].layers)
    # the lab's statistic is the rule's own number
    assert hits[0].evidence["generator_ratio"] == pytest.approx(generator_ratio(sat),
                                                                rel=1e-12)
    assert not [f for f in diagnose(ns) if f.kind == "gan_saturation"]
    fires, silent, _ = lab._watch_claims(sat, ns)
    assert fires.verdict == "holds" and silent.verdict == "holds"
    assert lab._saturation_claim(fixed).verdict == "holds"
    assert lab._non_saturating_claim(fixed).verdict == "holds"
    assert fixed.confidence[-1] < 1e-3 < 0.3 < fixed.confidence[0]  # D became confident


def test_verdicts_flip_when_the_discriminator_is_not_trained(gan0) -> None:
    # lr 0: D stays at init (unconfident), G's gradient does not fall, the finding stays silent
    s = dataclasses.replace(lab._sizes(QUICK), fixed_steps=40, checkpoints=5)
    fixed, sat = lab._frozen_generator(gan0, s, QUICK, "saturating", 0.0)
    assert len(set(fixed.confidence)) == 1 and fixed.confidence[0] > 0.3
    claim = lab._saturation_claim(fixed)
    assert claim.verdict == "does not hold" and claim.value == pytest.approx(1.0)
    fires, _, hits = lab._watch_claims(sat, sat)
    assert fires.verdict == "does not hold" and not hits
    # and the non-saturating claim fails where its gradient does vanish (a fake trajectory)
    starved = dataclasses.replace(fixed, grad={**fixed.grad, "non_saturating": (1.0, 1e-4)})
    assert lab._non_saturating_claim(starved).verdict == "does not hold"


def test_training_verdict_follows_the_measured_distances() -> None:
    s = lab._sizes(SMOKE)
    g0 = lab._GAN(s.hidden, SMOKE.generator(1))
    runs = {k: lab._train(g0, s, SMOKE, k) for k in lab.KINDS}
    claim = lab._training_claim(runs)
    swapped = lab._training_claim({"saturating": runs["non_saturating"],
                                   "non_saturating": runs["saturating"]})
    assert swapped.value == pytest.approx(1 / claim.value, rel=1e-12)
    assert math.isclose(claim.value, 1.0) or {claim.verdict, swapped.verdict} == {
        "holds", "does not hold"}
    assert len(runs["saturating"].grad) == s.train_steps


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(TypeError, match="cfg"):
        lab.gan("quick")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kind"):
        lab.generator_loss(torch.zeros(3), "wasserstein")
