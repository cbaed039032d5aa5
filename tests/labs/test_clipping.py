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


@pytest.fixture(scope="module")
def smoke() -> LabResult:
    return lab.clipping(SMOKE)


@pytest.fixture(scope="module")
def setup() -> tuple[nn.Module, list, tuple]:
    """The quick run's net and its first 40 batches (seed 0): its unclipped run diverges."""
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


def test_divergence_and_watch_verdicts_flip_with_the_learning_rate(setup) -> None:
    net, batches, evalset = setup
    verdicts = {}
    for lr in (lab.LR, 1e-4):
        model = lab.copy.deepcopy(net)
        with Watch(model, activations=False, recurrent_every=0) as watch:
            run = lab._train(net, batches, evalset, "none", lr, watch, model)
        verdicts[lr] = (
            lab._divergence_claim(run, len(batches)).verdict,
            lab._watch_claim(watch).verdict,
        )
    assert verdicts[lab.LR] == ("holds", "holds")
    assert verdicts[1e-4] == ("does not hold", "does not hold")


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
