import math

import pytest
import torch
from lab_checks import assert_well_formed

from gradwatch.labs import long_range as lab
from gradwatch.labs.base import LabConfig, LabResult

SMOKE = LabConfig("smoke", seed=3)


@pytest.fixture(scope="module")
def smoke() -> LabResult:
    return lab.long_range(SMOKE)


def test_smoke_mechanics(smoke: LabResult) -> None:
    assert smoke.name == "long_range"
    assert len(smoke.claims) == 9
    assert_well_formed(smoke)
    ids = [p.id for p in smoke.plots]
    assert ids == ["adding_mse_T8", "adding_gradient_T8", "contact_accuracy"]
    grad = smoke.plots[1]
    assert len(grad.series) == 6  # 3 models x (init, trained)
    for s in grad.series:
        assert s.x == tuple(float(k) for k in range(8))
        assert s.y[0] == pytest.approx(1.0)  # lag 0: the last step relative to itself
    contact = smoke.plots[2]
    assert [s.label for s in contact.series] == list(lab.MODELS)
    assert all(s.x == (2.0, 6.0) and all(0 <= a <= 1 for a in s.y) for s in contact.series)
    assert len(smoke.tables[0].rows) == 3 and len(smoke.tables[1].rows) == 6
    assert set(smoke.setup) >= {"models", "training", "adding problem", "contact task"}


def test_deterministic_and_leaves_global_state(smoke: LabResult) -> None:
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    again = lab.long_range(SMOKE)
    assert again.to_json() == smoke.to_json()
    assert torch.equal(torch.get_rng_state(), rng)  # every draw comes from cfg's generators
    assert torch.get_num_threads() == threads


def test_adding_data() -> None:
    gen = torch.Generator().manual_seed(0)
    x, y, t1 = lab._adding(4000, 20, gen)
    assert x.shape == (4000, 20, 2) and y.shape == t1.shape == (4000,)
    mark = x[..., 1]
    assert torch.equal(mark.sum(1), torch.full((4000,), 2.0))
    assert torch.equal(mark[:, :10].sum(1), torch.ones(4000))  # one marker in each half
    assert torch.equal(mark.argmax(1), t1)
    assert torch.allclose((x[..., 0] * mark).sum(1), y)
    # Monte Carlo: predicting the constant 1 scores Var(u1 + u2) = 1/6
    assert float((y - 1).square().mean()) == pytest.approx(lab.CONSTANT_MSE, abs=0.01)


def test_contact_data_labels_are_salt_bridges() -> None:
    gen = torch.Generator().manual_seed(1)
    n, sep = 20_000, 7
    x, y, cls = lab._contact(n, sep, gen)
    assert x.shape == (n, sep + 2 * lab.PAD, 21)
    assert torch.equal(x[..., :20].sum(-1), torch.ones(n, sep + 2 * lab.PAD))  # one-hot
    sites = x[..., 20].nonzero()[:, 1].reshape(n, 2)  # (n, 2)
    assert torch.equal(sites[:, 1] - sites[:, 0], torch.full((n,), sep))
    assert int(sites[:, 0].max()) < lab.PAD
    letters = x[..., :20].argmax(-1).gather(1, sites)  # (n, 2)
    charge = {**{i: 1 for i in lab.BASIC}, **{i: -1 for i in lab.ACIDIC}}
    q = letters.apply_(lambda i: charge.get(i, 0))  # (n, 2)
    assert torch.equal(cls.clone().apply_(lambda c: (0, 1, -1)[c]), q)
    bridge = (q[:, 0] * q[:, 1] == -1).float()
    assert torch.equal(bridge, y)
    assert float(y.mean()) == pytest.approx(0.5, abs=0.02)
    # The Bayes ceilings by Monte Carlo: majority vote within each value of the view.
    for view, exact in (
        (q[:, 1], 5 / 7),
        (q[:, 0], 5 / 7),
        ((q != 0).long() @ torch.tensor([1, 2]), 6 / 7),
    ):
        acc = (
            sum(
                max(float(y[view == v].sum()), float((1 - y[view == v]).sum()))
                for v in view.unique()
            )
            / n
        )
        assert acc == pytest.approx(exact, abs=0.01)
    assert lab.ONE_SITE == pytest.approx(5 / 7, abs=1e-12)
    assert lab.CHARGED_ONLY == pytest.approx(6 / 7, abs=1e-12)


def test_marker_gradient_matches_autograd() -> None:
    # slow reference: unroll the RNN by hand, keep every h_t's gradient
    gen = torch.Generator().manual_seed(2)
    model = lab._Net("RNN", 2, gen).double()
    x, y, t1 = lab._adding(5, 12, gen)
    x, y = x.double(), y.double()
    ratio, profile = lab._marker_profile(model, x, y, t1)
    r = model.rnn
    h = torch.zeros(5, lab.HIDDEN, dtype=torch.float64)
    hs = []
    for t in range(12):
        h = torch.tanh(
            x[:, t] @ r.weight_ih_l0.T + r.bias_ih_l0 + h @ r.weight_hh_l0.T + r.bias_hh_l0
        )
        h.retain_grad()
        hs.append(h)
    (model.head(h).squeeze(1) - y).square().mean().backward()
    g = torch.stack([hh.grad.norm(dim=1) for hh in hs])  # (T, B)
    rel = g / g[-1]
    ref = rel[t1, torch.arange(5)].log().mean().exp()
    assert ratio == pytest.approx(float(ref), rel=1e-9)
    assert profile == pytest.approx(rel.log().mean(1).exp().flip(0).tolist(), rel=1e-9)


def test_mse_verdict_flips_when_the_model_did_not_train() -> None:
    # GRU on a short adding problem: trained, it solves it; untrained, it does not.
    sizes = lab._Sizes((6,), 400, (2,), 1, 256, 50, 8)
    cfg = LabConfig("smoke", seed=0)
    test = lab._adding(256, 6, torch.Generator().manual_seed(7))[:2]
    runs = {
        n: lab._train(
            "GRU",
            "adding",
            6,
            n,
            sizes,
            cfg,
            test,
            torch.Generator().manual_seed(4),
            torch.Generator().manual_seed(5),
        )[2]
        for n in (0, 400)
    }
    assert runs[0].steps_run == 0 and runs[0].curve_x == (0.0,)
    assert lab._mse_claim("GRU", 6, runs[0].final, 0).verdict == "does not hold"
    trained = runs[400]
    assert lab._mse_claim("GRU", 6, trained.final, trained.steps_run).verdict == "holds"
    assert trained.curve_y[0] == runs[0].final  # same init, same test set


def test_comparison_verdicts_flip_with_swapped_numbers() -> None:
    assert lab._gated_beats_rnn_claim(0.16, 0.003, 0.001, 30).verdict == "holds"
    assert lab._gated_beats_rnn_claim(0.001, 0.16, 0.15, 30).verdict == "does not hold"
    init = {"LSTM": 5e-5, "GRU": 3e-5}
    trained = {"LSTM": 0.9, "GRU": 0.8}
    v = lab._vanishing_claims(30, 1e-5, 1e-4, init, trained)
    assert [c.verdict for c in v] == ["holds", "holds"]
    v = lab._vanishing_claims(30, 0.5, 0.9, init, trained)
    assert [c.verdict for c in v] == ["does not hold", "does not hold"]
    good = {"RNN": 0.5, "LSTM": 1.0, "GRU": 0.86}
    assert [c.verdict for c in lab._contact_claims(good, 20)] == ["holds", "holds"]
    swapped = {"RNN": 1.0, "LSTM": 0.5, "GRU": 0.6}
    assert [c.verdict for c in lab._contact_claims(swapped, 20)] == [
        "does not hold",
        "does not hold",
    ]


def test_models_share_init_per_seed_and_default_scale() -> None:
    a = lab._Net("LSTM", 2, torch.Generator().manual_seed(9))
    b = lab._Net("LSTM", 2, torch.Generator().manual_seed(9))
    bound = 1 / math.sqrt(lab.HIDDEN)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
        assert float(pa.detach().abs().max()) <= bound


def test_bad_config_is_refused() -> None:
    with pytest.raises(TypeError, match="cfg"):
        lab.long_range("quick")  # type: ignore[arg-type]
