import dataclasses
import math

import pytest
import torch
from lab_checks import assert_well_formed
from torch import nn

from gradwatch.labs import clipping as lab
from gradwatch.labs.base import LabConfig, LabResult
from gradwatch.watch import Watch

SMOKE = LabConfig("smoke", seed=3)
SIZES = lab._Sizes(hidden=32, length=100, batch=32, steps=40, eval_batch=64)
# Learning rates with a margin, from a sweep over these 40 batches (seeds 0-2, init weights
# perturbed by 1e-6 relative, ATen default/AVX2 kernels, MKL_CBWR=COMPATIBLE): the
# unclipped run crosses 100x its first loss within 40 steps from lr 0.05-0.07 on, but only
# for some roundings there (the lab's LR = 0.05 sits on that edge). At HIGH_LR it crosses
# at step 2-3 every time, and the Watch sees the norm grow > 1e13x; at LOW_LR, and with
# norm clipping at HIGH_LR, the worst loss stays within 3.1x of the first.
HIGH_LR, LOW_LR = 0.3, 1e-3
# At spectral radius 2 the pre-clip norm varies 10-1000x from batch to batch even at a tiny
# lr, so whether the Watch flags a spike there turns on rounding. A contracting RNN
# (radius 0.5) at LOW_LR gives the Watch nothing: measured largest norm / running median
# below 2.3 (the rule fires above 10), last / first norm below 1.8 (fires above 1e3).
STABLE_RHO = 0.5


@pytest.fixture(scope="module")
def smoke() -> LabResult:
    return lab.clipping(SMOKE)


@pytest.fixture(scope="module")
def setup() -> tuple[nn.Module, list, tuple]:
    """The quick run's net and its first 40 batches (seed 0): unclipped at HIGH_LR, it diverges."""
    cfg = LabConfig("quick", seed=0)
    net = lab._Net(SIZES.hidden, cfg.generator(1), lab.RHO)
    gen = cfg.generator(2)
    batches = [lab._batch(SIZES, SIZES.batch, gen) for _ in range(SIZES.steps)]
    return net, batches, lab._batch(SIZES, SIZES.eval_batch, cfg.generator(3))


def test_smoke_mechanics(smoke: LabResult) -> None:
    assert smoke.name == "clipping"
    assert len(smoke.claims) == 9
    assert_well_formed(smoke)
    assert smoke.claims[6].verdict == "holds"  # norm clipping's cosine: exact at any size
    ids = [p.id for p in smoke.plots]
    assert ids == ["bptt_init", "loss", "grad_norm", "cosine", "watch_layers"]
    (table,) = smoke.tables
    assert len(table.rows) == 5 and all(len(r) == len(table.columns) for r in table.rows)
    assert {"model", "task", "training", "clipping", "watch"} <= set(smoke.setup)


def test_all_runs_start_from_the_same_weights_and_batches(smoke: LabResult) -> None:
    loss = next(p for p in smoke.plots if p.id == "loss")
    firsts = {s.y[0] for s in loss.series}
    assert len(firsts) == 1  # same weights, same first batch: bit-identical first loss
    starts = {row[3] for row in smoke.tables[0].rows}
    assert len(starts) == 1


def test_deterministic_and_leaves_global_state(smoke: LabResult) -> None:
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    again = lab.clipping(SMOKE)
    assert again.to_json() == smoke.to_json()
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.get_num_threads() == threads


def test_init_is_spectral_radius_rho(setup) -> None:
    net, _, _ = setup
    w = net.rnn.weight_hh_l0.detach()
    assert float(torch.linalg.eigvals(w).abs().max()) == pytest.approx(lab.RHO, rel=1e-5)


def test_cosine_matches_a_direct_reference(setup) -> None:
    # slow reference: one step by hand, clamp the gradient, cosine by F.cosine_similarity
    net, batches, evalset = setup
    run = lab._train(net, batches[:1], evalset, "value", lab.LR)
    ref = lab.copy.deepcopy(net)
    lab._mse(ref(batches[0][0]), batches[0][1]).backward()
    g = torch.cat([p.grad.reshape(-1) for p in ref.parameters()]).double()
    clipped = g.clamp(-lab.MAX_VALUE, lab.MAX_VALUE)
    cos = float(nn.functional.cosine_similarity(g, clipped, dim=0))
    assert run.cosine[0] == pytest.approx(cos, abs=1e-12)
    assert run.grad_norm[0] == pytest.approx(float(g.norm()), rel=1e-12)


def test_cosine_verdict_flips_between_norm_and_value_clipping(setup) -> None:
    net, batches, evalset = setup
    norm = lab._train(net, batches[:10], evalset, "norm", lab.LR)
    value = lab._train(net, batches[:10], evalset, "value", lab.LR)
    assert norm.clipped > 0 and value.clipped > 0  # the exploding init gets both clipped
    assert lab._cosine_claim(norm).verdict == "holds"
    assert lab._cosine_claim(value).verdict == "holds"  # mean cosine < 1
    # the norm-clipping rule (|mean cosine - 1| < 1e-6) on value clipping's cosines fails
    as_norm = lab._cosine_claim(dataclasses.replace(value, method="norm"))
    assert as_norm.verdict == "does not hold" and as_norm.value > 1e-3
    # and value clipping's rule on norm clipping's cosines fails too
    assert lab._cosine_claim(dataclasses.replace(norm, method="value")).verdict == "does not hold"


def _watched(
    net: nn.Module, batches: list, evalset: tuple, method: str, lr: float
) -> tuple[lab._Run, Watch]:
    model = lab.copy.deepcopy(net)
    with Watch(model, activations=False, recurrent_every=0) as watch:
        run = lab._train(net, batches, evalset, method, lr, watch, model)
    return run, watch


def _worst_loss_ratio(run: lab._Run) -> float:
    return max(run.loss) / run.loss[0]


def test_divergence_verdict_flips_with_the_learning_rate_and_with_clipping(setup) -> None:
    net, batches, evalset = setup
    budget = len(batches)
    high = lab._train(net, batches, evalset, "none", HIGH_LR)
    low = lab._train(net, batches, evalset, "none", LOW_LR)
    clipped = lab._train(net, batches, evalset, "norm", HIGH_LR)
    diverged = lab._divergence_claim(high, budget)
    assert diverged.verdict == "holds" and diverged.value <= budget / 4  # measured: step 2-3
    for run in (low, clipped):
        assert lab._divergence_claim(run, budget).verdict == "does not hold"
        assert run.nonfinite_step == -1 and len(run.loss) == budget
        assert _worst_loss_ratio(run) < lab.GROWTH / 10  # measured: below 1.7 and 3.1


def test_watch_verdict_flips_between_a_diverging_and_a_stable_run(setup) -> None:
    net, batches, evalset = setup
    _, diverging = _watched(net, batches, evalset, "none", HIGH_LR)
    assert lab._watch_claim(diverging).verdict == "holds"
    # the same data and init draws with W_hh rescaled to spectral radius STABLE_RHO < 1
    stable_net = lab._Net(SIZES.hidden, LabConfig("quick", seed=0).generator(1), STABLE_RHO)
    run, stable = _watched(stable_net, batches, evalset, "none", LOW_LR)
    assert run.nonfinite_step == -1 and _worst_loss_ratio(run) < lab.GROWTH / 10
    assert lab._watch_claim(stable).verdict == "does not hold"
    assert not [f for f in stable.diagnose() if f.kind in ("nonfinite", "exploding")]


def test_nonfinite_run_stops_and_leaks_nothing(setup) -> None:
    net, batches, evalset = setup
    before = [p.detach().clone() for p in net.parameters()]
    bad = lab._train(net, batches, evalset, "none", 1e4)
    assert 0 <= bad.nonfinite_step < len(batches)
    assert len(bad.loss) == len(bad.grad_norm) == bad.nonfinite_step
    assert all(math.isfinite(v) for v in (*bad.loss, *bad.grad_norm))
    assert math.isnan(bad.final_eval)
    assert lab._progress_claim(bad, bad).value == lab.DIVERGED
    assert lab._progress_claim(bad, bad).verdict == "does not hold"
    # the shared initial weights are untouched, so the next run starts clean
    assert all(torch.equal(a, p) for a, p in zip(before, net.parameters(), strict=True))
    good = lab._train(net, batches, evalset, "norm", lab.LR)
    assert good.nonfinite_step == -1 and good.loss[0] == bad.loss[0]


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(TypeError, match="cfg"):
        lab.clipping("quick")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="method"):
        lab._clipper("adaptive")
