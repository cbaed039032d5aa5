import math

import pytest
import torch
from torch import nn

from gradwatch.core.meanfield import critical_sigma_w
from gradwatch.fix import CriticalInit, critical_init_

SQRT2 = math.sqrt(2.0)


def test_sigma_w_follows_the_next_activation_module():
    net = nn.Sequential(
        nn.Linear(4, 8),
        nn.BatchNorm1d(8),  # not an activation: looked through
        nn.ReLU(),
        nn.Linear(8, 8),
        nn.Identity(),  # placeholder: looked through
        nn.Tanh(),
        nn.Linear(8, 8),  # next module is a layer: nothing follows this one
        nn.Linear(8, 2),
        nn.ReLU(),
    )
    used = critical_init_(net)
    assert used == {
        "0": pytest.approx(SQRT2, rel=1e-12),
        "3": 1.0,
        "6": 1.0,
        "7": pytest.approx(SQRT2),
    }
    assert used.activation == {"0": "relu", "3": "tanh", "6": "linear", "7": "relu"}
    assert used.fallback == ("6",)
    assert net[3].bias.abs().max() == 0  # sigma_b = 0: zero biases

    with_act = critical_init_(net, act="tanh")
    assert with_act["6"] == 1.0 and with_act.activation["6"] == "tanh"
    assert with_act.fallback == ("6",)


def test_functional_activations_fall_back():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 3), nn.Conv1d(2, 2, 3)

        def forward(self, x):  # pragma: no cover - never called
            return torch.relu(self.a(x))

    used = critical_init_(Net())
    assert dict(used) == {"a": 1.0, "b": 1.0} and used.fallback == ("a", "b")
    assert critical_init_(nn.Linear(2, 2), act=nn.ReLU()) == {"": pytest.approx(SQRT2)}


@pytest.mark.parametrize(
    ("layer", "act", "sigma_b"),
    [
        (nn.Linear(1500, 600), nn.ReLU(), 0.0),
        (nn.Conv2d(64, 96, 3), nn.Tanh(), 0.3),
        (nn.Conv1d(100, 1000, 5), nn.Sigmoid(), 0.1),
    ],
)
def test_empirical_std_matches_sigma_w(layer, act, sigma_b):
    torch.manual_seed(0)
    used = critical_init_(nn.Sequential(layer, act), sigma_b=sigma_b)
    expected = critical_sigma_w(act, sigma_b)
    assert used["0"] == pytest.approx(expected, rel=1e-12)
    w = layer.weight.detach()
    fan_in = w[0].numel()
    assert w.std().item() * math.sqrt(fan_in) == pytest.approx(expected, rel=0.02)
    assert abs(w.mean().item()) < 4 * expected / math.sqrt(fan_in * w.numel())
    if sigma_b:
        assert layer.bias.std().item() == pytest.approx(sigma_b, rel=0.15)


@pytest.mark.parametrize(
    ("layer", "act"),
    [
        (nn.Linear(128, 64), nn.Tanh()),  # out < fan_in
        (nn.Linear(64, 128), nn.ReLU()),  # out > fan_in
        (nn.Conv2d(8, 16, 3, groups=4), nn.ReLU()),  # fan_in = 2 * 3 * 3 = 18 > 16
    ],
)
def test_orthogonal_weights(layer, act):
    net = nn.Sequential(layer, act).double()
    sw = critical_init_(net, orthogonal=True, sigma_b=0.0)["0"]
    w = layer.weight.detach().flatten(1)  # (out, fan_in)
    out, fan_in = w.shape
    if out <= fan_in:
        torch.testing.assert_close(
            w @ w.T, sw**2 * torch.eye(out, dtype=w.dtype), atol=1e-5, rtol=0
        )
    else:
        gram = sw**2 * out / fan_in * torch.eye(fan_in, dtype=w.dtype)
        torch.testing.assert_close(w.T @ w, gram, atol=1e-5, rtol=0)
    # same entry variance as the Gaussian init: mean square sigma_w^2 / fan_in
    assert w.pow(2).mean().item() == pytest.approx(sw**2 / fan_in, rel=1e-9)


def test_orthogonal_draws_are_unbiased():
    # Haar measure: E[W] = 0. Without the sign fix of QR, W[0, 0] would always be < 0.
    gen = torch.Generator().manual_seed(2)
    layer = nn.Linear(4, 4)
    corner = []
    for _ in range(200):
        critical_init_(layer, orthogonal=True, generator=gen)
        corner.append(layer.weight[0, 0].item())
    mean = sum(corner) / len(corner)
    assert abs(mean) < 4 * 0.5 / math.sqrt(len(corner))  # entry std is 1 / sqrt(4)


def deep_tanh(width=128, depth=50):
    layers = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.Tanh()]
    return nn.Sequential(*layers).double()


def first_over_last(net, x):
    """||dL/dh_1|| / ||dL/dh_L|| for the pre-activations h_l of every Linear layer."""
    hs, h = [], x
    for m in net:
        h = m(h)
        if isinstance(m, nn.Linear):
            h.retain_grad()
            hs.append(h)
    (h * torch.randn_like(h)).sum().backward()
    return (hs[0].grad.norm() / hs[-1].grad.norm()).item()


@pytest.mark.parametrize("orthogonal", [False, True])
def test_critical_init_keeps_gradients_through_50_tanh_layers(orthogonal):
    # sigma_b = 0.05: q* > 0, so chi1 = 1 holds at a finite fixed point (with sigma_b = 0 the
    # q-map creeps to q* = 0 as a power law and the ratio is ~0.1-0.14 from unit inputs)
    torch.manual_seed(0)
    x = torch.randn(64, 128, dtype=torch.float64)
    net = deep_tanh()
    critical_init_(net, orthogonal=orthogonal, sigma_b=0.05)
    ratio = first_over_last(net, x)
    assert 0.1 < ratio < 10, ratio

    for m in net:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.5 / math.sqrt(128))
            nn.init.normal_(m.bias, 0.0, 0.05)
    assert first_over_last(net, x) < 1e-10  # chi1 ~ 0.25 per layer: vanishes


def test_seed_and_generator_are_respected():
    nets = [nn.Sequential(nn.Linear(20, 20), nn.ReLU(), nn.Conv1d(4, 4, 3)) for _ in range(4)]
    for orthogonal in (False, True):
        torch.manual_seed(7)
        critical_init_(nets[0], orthogonal, sigma_b=0.1)
        torch.manual_seed(7)
        critical_init_(nets[1], orthogonal, sigma_b=0.1)
        critical_init_(nets[2], orthogonal, 0.1, generator=torch.Generator().manual_seed(1))
        critical_init_(nets[3], orthogonal, 0.1, generator=torch.Generator().manual_seed(1))
        for a, b, c, d in zip(*(n.parameters() for n in nets), strict=True):
            assert torch.equal(a, b) and torch.equal(c, d) and not torch.equal(a, c)


def test_result_round_trips_and_reads_as_a_mapping():
    used = critical_init_(nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 1)), sigma_b=0.0)
    back = CriticalInit.from_json(used.to_json())
    assert back == used and back.activation == used.activation
    assert back.fallback == ("2",) and back.orthogonal is False
    assert list(used) == ["0", "2"] and len(used) == 2 and "0" in used
    assert used != {"0": 2.0, "2": 1.0}


def test_bad_input_gives_clear_errors():
    with pytest.raises(TypeError, match=r"model: expected an nn\.Module, got list"):
        critical_init_([nn.Linear(2, 2)])
    with pytest.raises(ValueError, match=r"model: Sequential has no nn\.Linear"):
        critical_init_(nn.Sequential(nn.ReLU(), nn.LayerNorm(3)))
    with pytest.raises(ValueError, match=r"sigma_b: must be >= 0, got -0\.1"):
        critical_init_(nn.Linear(2, 2), sigma_b=-0.1)
    with pytest.raises(ValueError, match="act: unknown activation"):
        critical_init_(nn.Linear(2, 2), act="tanhh")
    with pytest.raises(TypeError, match="generator"):
        critical_init_(nn.Linear(2, 2), generator=0)
    with pytest.raises(TypeError, match="orthogonal"):
        critical_init_(nn.Linear(2, 2), orthogonal="yes")
    with pytest.raises(ValueError, match="lazy"):
        critical_init_(nn.Sequential(nn.LazyLinear(3)))

    # no edge of chaos: the error names the layer and the model is left as it was
    net = nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 3))
    before = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(ValueError, match="model: layer '2' is followed by 'flat'"):

        def flat(x):
            return 0.0 * x

        critical_init_(net, act=flat)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
