import dataclasses

import pytest
import torch
from lab_checks import assert_well_formed
from torch.nn import functional as F

from gradwatch.labs import genomics as lab
from gradwatch.labs.base import LabConfig, LabResult

SMOKE = LabConfig("smoke", seed=3)


@pytest.fixture(scope="module")
def smoke() -> LabResult:
    return lab.genomics(SMOKE)


def test_smoke_mechanics(smoke: LabResult) -> None:
    assert smoke.name == "genomics"
    assert len(smoke.claims) == 6
    assert_well_formed(smoke)
    ids = [p.id for p in smoke.plots]
    assert ids == [
        "input_gradient_init",
        "input_gradient_trained",
        "bptt_profile",
        "accuracy",
        "hier_training_gradients",
    ]
    assert set(smoke.setup) >= {"data", "local CNN", "hierarchical", "flat GRU", "gradients"}
    # the flat GRU's gradient falls with distance even at smoke size
    flat_init = smoke.claims[3].measured["log10 ratio, flat GRU"]
    assert flat_init < smoke.claims[3].measured["log10 ratio, hierarchical"] < 0


def test_deterministic_and_leaves_global_state(smoke: LabResult) -> None:
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    again = lab.genomics(SMOKE)
    assert again.to_json() == smoke.to_json()
    assert torch.equal(torch.get_rng_state(), rng)  # every draw comes from cfg's generators
    assert torch.get_num_threads() == threads


def test_genome_layout_and_labels() -> None:
    task = lab._Task(400, 12, (60, 350), 2)
    b = lab._genome(task, 3000, torch.Generator().manual_seed(0))
    te, tp = _kind(b.x, b.enh, 12), _kind(b.x, b.prom, 12)
    assert bool((te >= 0).all() and (tp >= 0).all())
    assert torch.equal(b.y, (te == tp).float())
    d = b.prom - b.enh
    assert int(d.min()) >= 60 and int(d.max()) <= 350
    assert int(b.prom.min()) >= 400 - 12 - 4 and int((b.prom + 12).max()) <= 400
    # no single element says anything about the label; classes balanced
    for t in (0, 1):
        assert float(b.y[te == t].mean()) == pytest.approx(0.5, abs=0.04)
        assert float(b.y[tp == t].mean()) == pytest.approx(0.5, abs=0.04)
    p = lab._genome(task, 500, torch.Generator().manual_seed(0), rule="presence")
    assert torch.equal(p.y, _kind(p.x, p.enh, 12).float())


def _kind(x: torch.Tensor, start: torch.Tensor, m: int) -> torch.Tensor:
    """(n,) 0 where x[start:start+m] is all C/G, 1 where all A/T, -1 otherwise."""
    is_gc = torch.tensor([False, True, True, False])[  # A C G T
        x[torch.arange(len(start))[:, None], start[:, None] + torch.arange(m)]
    ]  # (n, m)
    return torch.where(is_gc.all(1), 0, torch.where((~is_gc).all(1), 1, -1))


def _flat_model(z_bias: float, seed: int = 0) -> "lab._Recurrent":
    sz = lab._sizes(SMOKE)
    m = lab._build("flat", sz, torch.Generator().manual_seed(seed))
    assert isinstance(m, lab._Recurrent)
    with torch.no_grad():
        h = m.gru.hidden_size
        m.gru.get_parameter("bias_hh_l0")[h : 2 * h].fill_(z_bias)
    return m


def _plain_log10_grad(m: "lab._Recurrent", x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    m = m.double()
    x = x.double().requires_grad_(True)
    loss = F.binary_cross_entropy_with_logits(m(x, last=True), y.double(), reduction="sum")
    (g,) = torch.autograd.grad(loss, x)
    return g.norm(dim=2).log10()  # (B, L)


def test_log_space_gradient_matches_plain_autograd() -> None:
    # slow reference: one float64 backward; 250 bases = 2 full chunks and a partial one
    m = _flat_model(lab.Z_BIAS)
    b = lab._genome(lab._Task(250, 10, (50, 200), 1), 3, torch.Generator().manual_seed(1))
    x = lab._onehot(b.x)
    fast = lab._log10_input_grad(m, x, b.y)
    ref = _plain_log10_grad(m, x, b.y)
    assert fast.shape == (3, 250)
    assert torch.allclose(fast, ref, atol=1e-9, rtol=0)
    hier = lab._build("hier", lab._sizes(SMOKE), torch.Generator().manual_seed(2))
    assert isinstance(hier, lab._Recurrent)
    b = lab._genome(lab._sizes(SMOKE).task, 2, torch.Generator().manual_seed(3))
    x = lab._onehot(b.x)
    assert torch.allclose(
        lab._log10_input_grad(hier, x, b.y), _plain_log10_grad(hier, x, b.y), atol=1e-9, rtol=0
    )


def test_log_space_resolves_what_float64_underflows() -> None:
    m = _flat_model(-2.0)  # the update gate mostly rewrites: fast decay per base
    x = lab._onehot(torch.randint(0, 4, (1, 1200), generator=torch.Generator().manual_seed(4)))
    y = torch.ones(1)
    plain = _plain_log10_grad(m, x, y)[0]  # (L,)
    logs = lab._log10_input_grad(m, x, y)[0]  # (L,)
    assert bool(torch.isneginf(plain[:100]).all())  # 0 in float64
    assert bool(torch.isfinite(logs).all()) and float(logs[:100].max()) < -320
    ok = plain > -150  # deeper, float64's own products lose digits
    assert torch.allclose(logs[ok], plain[ok], atol=1e-6, rtol=0)
    # it keeps falling at a steady rate where float64 has nothing left
    early, late = float(logs[:200].mean()), float(logs[600:800].mean())
    assert early < late - 100


def test_log10_norm_and_element_ratio() -> None:
    v = torch.tensor([[1e-3, 2e-3, 5e-4], [3.0, 4.0, 1e-30]], dtype=torch.float64)
    assert torch.allclose(lab._log10_norm(v.log10()), v.norm(dim=1).log10(), atol=1e-12)
    b = lab._Batch(
        torch.zeros(1, 10, dtype=torch.long), torch.ones(1), torch.tensor([1]), torch.tensor([6])
    )
    g = torch.full((1, 10), -5.0, dtype=torch.float64)
    g[0, 6:8] = -1.0
    ratio = lab._element_log_ratio(g, b, 2)
    assert float(ratio[0]) == pytest.approx(-4.0, abs=1e-12)


def test_gap_verdict_flips_when_models_swap() -> None:
    assert lab._gap_claim(-110.0, -1.3, "at init").verdict == "holds"
    assert lab._gap_claim(-1.3, -110.0, "at init").verdict == "does not hold"
    assert lab._gap_claim(-1.0, -1.3, "at init").verdict == "does not hold"


def test_local_cnn_verdict_flips_when_presence_decides() -> None:
    # the same local CNN: at chance on the match label, well above it when the enhancer's
    # type alone decides (presence is a local feature)
    sz = dataclasses.replace(
        lab._sizes(SMOKE), task=lab._Task(200, 10, (40, 180), 0), local_steps=300, n_test=400
    )
    accs = {
        rule: lab._local_accuracy(sz, sz.task, torch.Generator().manual_seed(7), rule)[0]
        for rule in ("match", "presence")
    }
    assert lab._chance_claim(accs["match"], "local CNN").verdict == "holds"
    flipped = lab._chance_claim(accs["presence"], "local CNN")
    assert flipped.verdict == "does not hold", accs
    assert accs["presence"] > 0.65


def test_bad_config_is_refused() -> None:
    with pytest.raises(TypeError, match="cfg"):
        lab.genomics("quick")  # type: ignore[arg-type]
