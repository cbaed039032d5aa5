import math

import pytest
import torch
from lab_checks import assert_well_formed
from torch import nn

from gradwatch.core.chain import chain_bound
from gradwatch.labs import depth as lab
from gradwatch.labs.base import LabConfig, LabResult

SMOKE = LabConfig("smoke", seed=3)


@pytest.fixture(scope="module")
def smoke() -> LabResult:
    return lab.depth(SMOKE).replace(seconds=1.0)  # run_lab sets it; NaN != NaN


def test_smoke_mechanics(smoke: LabResult) -> None:
    assert smoke.name == "depth"
    assert len(smoke.claims) >= 19
    assert_well_formed(smoke)
    ids = [p.id for p in smoke.plots]
    assert {"profile_init", "accuracy_depth", "init_profiles", "cnn_profiles"} <= set(ids)


def test_deterministic_for_a_seed() -> None:
    # Everything except timings (claim 7) must repeat exactly; the cheap parts are enough here.
    a = lab._vanishing_claims(SMOKE, "sigmoid", "default")
    b = lab._vanishing_claims(SMOKE, "sigmoid", "default")
    assert a == b
    sz = lab._sizes(SMOKE)
    data = lab._digits(SMOKE, sz.n_train)
    runs = [lab._run(SMOKE, data, sz, "x", 4, 7, act="relu", init="he") for _ in range(2)]
    assert runs[0] == runs[1]
    other = lab._vanishing_claims(LabConfig("smoke", seed=4), "sigmoid", "default")
    assert other[0].value != a[0].value


def test_vanishing_verdict_flips_with_activation() -> None:
    cfg = LabConfig("smoke", seed=0)
    sig, sig_bound, prof = lab._vanishing_claims(cfg, "sigmoid", "default", depth=16)
    relu, relu_bound, rprof = lab._vanishing_claims(cfg, "relu", "he", depth=16)
    assert sig.verdict == "holds" and sig.value < 1e-6
    assert relu.verdict == "does not hold" and relu.value > 1e-3
    # The bound max|phi'| * sigma_w holds for both: it is a bound, not a vanishing claim.
    assert sig_bound.verdict == "holds" and relu_bound.verdict == "holds"
    assert 0.1 < prof.factor < 0.25 * prof.gain * 1.1
    assert 0.7 < rprof.factor < 1.3


def test_profile_matches_autograd_reference() -> None:
    # The Watch-based profile against per-layer norms taken directly with autograd (float64).
    sz = lab._sizes(SMOKE)
    data = lab._digits(SMOKE, sz.n_train)
    net = lab._init(lab._Net(6, 16, "sigmoid"), "default", torch.Generator().manual_seed(1))
    prof = lab._profile(net, data)
    m = net.double()
    loss = nn.functional.cross_entropy(m(data.x_train[:256].double()), data.y_train[:256])
    lins = [x for x in m.modules() if isinstance(x, nn.Linear)]
    grads = torch.autograd.grad(loss, [p for x in lins for p in (x.weight, x.bias)])
    ref = [
        math.hypot(float(grads[2 * i].norm()), float(grads[2 * i + 1].norm()))
        for i in range(len(lins))
    ]
    assert prof.norms == pytest.approx(ref, rel=1e-10)
    assert prof.first_last == pytest.approx(ref[0] / ref[-1], rel=1e-10)
    hidden = ref[1:-1]
    assert prof.factor == pytest.approx((hidden[0] / hidden[-1]) ** (1 / (len(hidden) - 1)))
    # Default init is U(+-1/sqrt(fan_in)): sigma_w = 1/sqrt(3)
    assert prof.gain == pytest.approx(1 / math.sqrt(3), rel=0.1)


def test_sigmoid_profile_within_chain_bound() -> None:
    # Measured first/last of the hidden layers stays under (0.25 sigma_w)^(n-1) times a slack
    # for the weights' spread: the chain-rule bound from gradwatch.chain_bound.
    _, _, prof = lab._vanishing_claims(LabConfig("smoke", seed=1), "sigmoid", "default", 12)
    n = 12 - 2
    bound = chain_bound("sigmoid", n - 1, prof.gain * 1.1)
    assert math.log10(prof.norms[1] / prof.norms[-2]) < bound.log10


@pytest.mark.parametrize(
    "scheme,expected",
    [
        ("he", math.sqrt(2)),
        ("xavier", 1.0),
        ("uniform05", 0.05 / math.sqrt(3) * 8),
    ],
)
def test_init_gains(scheme: str, expected: float) -> None:
    net = lab._Net(4, 64, "relu")
    lab._init(net, scheme, torch.Generator().manual_seed(0))
    block = net.blocks[0]
    assert isinstance(block, lab._Block) and isinstance(block.layer, nn.Linear)
    w = block.layer.weight.detach()
    assert float((w.square().mean() * 64).sqrt()) == pytest.approx(expected, rel=0.05)


def test_split_is_disjoint_and_seeded() -> None:
    d1 = lab._digits(LabConfig("smoke", seed=0), 400)
    d2 = lab._digits(LabConfig("smoke", seed=0), 400)
    assert torch.equal(d1.x_train, d2.x_train)
    assert d1.x_train.shape == (400, 64) and d1.x_test.shape == (500, 64)
    d3 = lab._digits(LabConfig("smoke", seed=1), 400)
    assert not torch.equal(d1.x_train, d3.x_train)
    # standardised with the training statistics
    assert d1.x_train.mean(0).abs().max() < 1e-5


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="cfg"):
        lab.depth("smoke")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="act"):
        lab._vanishing_claims(SMOKE, "softsign")
    with pytest.raises(ValueError, match="depth"):
        lab._vanishing_claims(SMOKE, "sigmoid", depth=3)
