"""The foundation's demonstration: the chain rule measured in three 30-layer networks.

Stands in for ``gradwatch labs`` until the labs exist; every number is computed on each run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gradwatch.core.chain import ChainProduct, chain_bound
from gradwatch.core.probe import ProbeResult, probe


class _Residual(nn.Module):
    """x + W sigmoid(x): the identity path adds 1 to every layer's Jacobian."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.act = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.linear(self.act(x))


def _plain(depth: int, width: int, act: type[nn.Module], he: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(depth - 1):
        lin = nn.Linear(width, width)
        if he:
            nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
            nn.init.zeros_(lin.bias)
        layers += [lin, act()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


@dataclass(frozen=True)
class DemoRow:
    model: str
    probe: ProbeResult
    first_over_last: float  # first Linear layer's gradient norm over the last one's
    per_layer: float  # the geometric-mean factor per layer: first_over_last ** (1 / (L - 1))
    weight_gain: float  # sigma_w = sqrt(fan_in * mean(W^2)), averaged over the hidden layers


def depth_demo(depth: int = 30, width: int = 64, batch: int = 256, seed: int = 0) -> list[DemoRow]:
    """Probe a sigmoid MLP, a ReLU+He MLP and a sigmoid residual stack of the same depth."""
    torch.manual_seed(seed)
    # float64, so gradients far below float32's range (1e-38) show their value instead of 0.
    x, y = torch.randn(batch, width, dtype=torch.float64), torch.randint(0, 10, (batch,))
    models = {
        "sigmoid MLP (PyTorch default init)": _plain(depth, width, nn.Sigmoid, he=False),
        "ReLU MLP, He init": _plain(depth, width, nn.ReLU, he=True),
        "sigmoid residual stack": nn.Sequential(
            *[_Residual(width) for _ in range(depth - 1)], nn.Linear(width, 10)
        ),
    }
    rows = []
    for name, model in models.items():
        res = probe(model.double(), x, nn.functional.cross_entropy, y)
        norms = [s.grad_norm or 0.0 for s in res.layers if s.kind == "Linear"]
        ratio = norms[0] / norms[-1]
        gains = [
            float((m.weight.shape[1] * m.weight.detach().square().mean()).sqrt())
            for m in model.modules()
            if isinstance(m, nn.Linear) and m.weight.shape[0] == width
        ]
        per_layer = ratio ** (1 / (len(norms) - 1))
        rows.append(DemoRow(name, res, ratio, per_layer, sum(gains) / len(gains)))
    return rows


def sigmoid_bound(depth: int = 30) -> ChainProduct:
    return chain_bound("sigmoid", depth)
