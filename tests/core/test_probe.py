import copy
import math

import pytest
import torch
from torch import nn

from gradwatch.core.probe import ProbeResult, layers_of, probe


def _mlp(depth, act, width=32):
    layers = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), act()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def test_layer_norms_equal_plain_autograd():
    torch.manual_seed(0)
    net = _mlp(4, nn.Tanh).double()
    x, y = torch.randn(16, 32, dtype=torch.float64), torch.randint(0, 10, (16,))
    res = probe(net, x, nn.functional.cross_entropy, y)
    ref = copy.deepcopy(net)
    nn.functional.cross_entropy(ref(x), y).backward()
    names = [n for n, _, _ in layers_of(ref)]
    assert [s.name for s in res.layers] == names
    for s, (_, m, params) in zip(res.layers, layers_of(ref), strict=True):
        g = torch.cat([p.grad.flatten() for p in params]).norm().item()
        w = torch.cat([p.detach().flatten() for p in params]).norm().item()
        assert s.grad_norm == pytest.approx(g, rel=1e-6)
        assert s.ratio == pytest.approx(g / w, rel=1e-6)
        assert s.kind == type(m).__name__ and s.nonfinite == 0


def test_model_left_exactly_as_found():
    torch.manual_seed(0)
    net = _mlp(3, nn.Sigmoid)
    net.eval()
    before = copy.deepcopy(net.state_dict())
    probe(net, torch.randn(8, 32))
    assert all(p.grad is None for p in net.parameters())
    assert not net.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(not m._forward_hooks for m in net.modules())


def test_hooks_removed_when_the_loss_fails():
    net = _mlp(2, nn.ReLU)

    def broken(out):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        probe(net, torch.randn(4, 32), broken)
    assert all(not m._forward_hooks for m in net.modules())


def test_deep_sigmoid_vanishes_relu_he_does_not():
    torch.manual_seed(0)
    sig = _mlp(20, nn.Sigmoid)
    relu = _mlp(20, nn.ReLU)
    for m in relu.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    x, y = torch.randn(128, 32), torch.randint(0, 10, (128,))
    r_sig = probe(sig, x, nn.functional.cross_entropy, y).first_last_ratio
    r_relu = probe(relu, x, nn.functional.cross_entropy, y).first_last_ratio
    assert r_sig is not None and r_sig < 1e-6
    assert r_relu is not None and 0.1 < r_relu < 10


def test_saturation_and_dead_units_are_counted():
    lin = nn.Linear(4, 4)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(4))
        lin.bias.copy_(torch.tensor([50.0, 0.0, -50.0, 0.0]))  # units 0 and 2 pinned
    x = torch.randn(256, 4)
    sat = probe(nn.Sequential(lin, nn.Sigmoid()), x).activations[0]
    assert sat.act == "sigmoid" and sat.dead is None
    # Two of four columns are pinned; free N(0,1) columns almost never have sigma' < 0.0025.
    assert sat.saturated == pytest.approx(0.5, abs=0.02)
    relu = probe(nn.Sequential(copy.deepcopy(lin), nn.ReLU()), x).activations[0]
    assert relu.dead == pytest.approx(0.25)  # only unit 2 is off for every example


def test_frozen_and_unused_layers():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Linear(3, 3)
            self.frozen = nn.Linear(3, 3).requires_grad_(False)
            self.unused = nn.Linear(3, 3)

        def forward(self, x):
            return self.used(self.frozen(x))

    res = probe(Net(), torch.randn(5, 3))
    by_name = {s.name: s for s in res.layers}
    assert "frozen" not in by_name
    assert by_name["unused"].grad_norm is None and by_name["unused"].ratio is None
    assert by_name["used"].grad_norm is not None and by_name["used"].grad_norm > 0
    assert "absent" in str(res)


def test_non_finite_gradients_are_reported_not_raised():
    net = _mlp(2, nn.Tanh)
    res = probe(net, torch.randn(4, 32), lambda out: (out * math.inf).sum())
    assert sum(s.nonfinite for s in res.layers) > 0


def test_bad_input():
    with pytest.raises(ValueError, match="model: has no trainable parameters"):
        probe(nn.Sequential(nn.ReLU()), torch.randn(2, 3))
    with pytest.raises(ValueError, match="model: has no trainable parameters"):
        probe(nn.Linear(3, 3).requires_grad_(False), torch.randn(2, 3))
    with pytest.raises(ValueError, match="inputs: holds 1 NaN"):
        probe(nn.Linear(3, 3), torch.tensor([[1.0, math.nan, 0.0]]))
    with pytest.raises(ValueError, match="loss_fn: must return a scalar"):
        probe(nn.Linear(3, 3), torch.randn(2, 3), lambda out: out)
    with pytest.raises(TypeError, match="model"):
        probe("net", torch.randn(2, 3))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="loss_fn"):
        probe(nn.Linear(3, 3), torch.randn(2, 3), loss_fn=3)  # type: ignore[arg-type]


def test_json_round_trip_and_table():
    torch.manual_seed(0)
    res = probe(_mlp(2, nn.ReLU), torch.randn(8, 32))
    assert ProbeResult.from_json(res.to_json()) == res
    text = str(res)
    assert "grad/weight" in text and "relu" in text and "0 " in text
