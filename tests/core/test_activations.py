import pytest
import torch
from torch import nn

from gradwatch.core.activations import NAMES, activation, dead_share, module_activation


@pytest.mark.parametrize("name", NAMES)
def test_named_derivatives_match_autograd(name):
    a = activation(name)
    x = torch.linspace(-6, 6, 1201, dtype=torch.float64)
    x = x[x.abs() > 1e-9]  # skip the kink at 0
    x = x[(x.abs() - 1).abs() > 1e-9]  # and hardtanh's kinks at +-1
    auto = activation(a.fn).derivative(x)
    assert torch.allclose(a.derivative(x), auto, atol=1e-10)
    if a.max_derivative is not None:
        assert a.derivative(x).abs().max() <= a.max_derivative + 1e-4


def test_callable_and_module_resolution():
    a = activation(lambda x: 3 * x)
    assert torch.allclose(a.derivative(torch.randn(5)), torch.full((5,), 3.0))
    assert activation(nn.Tanh()).name == "tanh"
    assert module_activation(nn.Linear(2, 2)) is None
    leaky = module_activation(nn.LeakyReLU(0.2))
    assert leaky is not None
    assert torch.allclose(leaky.derivative(torch.tensor([-1.0, 1.0])), torch.tensor([0.2, 1.0]))


def test_bad_activation():
    with pytest.raises(ValueError, match="act: unknown activation 'tanhh'"):
        activation("tanhh")
    with pytest.raises(TypeError, match="act"):
        activation(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="act"):
        activation(nn.Linear(2, 2))


def test_dead_share_is_the_share_of_units_inactive_for_the_whole_batch():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 5, 5) - 1.5  # many units negative for all 8 examples
    x[0, 0, 0, 0] = float("nan")  # a NaN entry makes its unit neither active nor dead
    relu = activation("relu")
    reference = (x <= 0).reshape(8, -1).all(dim=0).float().mean()
    got = dead_share(relu, x)
    assert got is not None and 0.05 < float(got) < 0.95
    assert torch.equal(got, reference)
    empty = dead_share(relu, torch.empty(0, 4))
    assert empty is not None and torch.isnan(empty)
    assert dead_share(activation("tanh"), x) is None
