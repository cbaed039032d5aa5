"""Migration: which gradwatch numbers equal Lightning's grad_norm and wandb.watch's histograms.

Same model, same batch, same gradients read by both tools.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gradwatch import Watch


class Net(nn.Module):
    """Layers with and without bias, nested, so a layer has one or several parameters."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Linear(6, 16, bias=False)
        self.block = nn.Sequential(nn.Linear(16, 16), nn.Tanh(), nn.LayerNorm(16))
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.embed(x)))


def backward(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 6, generator=g)
    y = torch.randint(0, 3, (32,), generator=g)
    nn.functional.cross_entropy(model(x), y).backward()


def watched(model: nn.Module) -> tuple[tuple[str, ...], torch.Tensor]:
    """(layer names, (layers,) grad norms) of the gradients now in the model."""
    with Watch(model, activations=False) as watch:
        watch.step()
    h = watch.history
    return h.layers, h["grad_norm"][0]


def test_lightning_grad_norm_total_and_per_parameter_norms_match():
    grads = pytest.importorskip("lightning.pytorch.utilities")
    model = Net()
    backward(model)
    theirs = grads.grad_norm(model, norm_type=2)
    layers, ours = watched(model)

    # the total: grad_2.0_norm_total == sqrt(sum of our per-layer grad_norm^2)
    total = math.sqrt(float(ours.square().sum()))
    assert float(theirs["grad_2.0_norm_total"]) == pytest.approx(total, rel=1e-6)

    # per layer: sqrt of the sum of squares of the layer's parameters' norms
    assert layers == ("embed", "block.0", "block.2", "head")
    for j, layer in enumerate(layers):
        params = [v for k, v in theirs.items() if k.rsplit(".", 1)[0] == f"grad_2.0_norm/{layer}"]
        assert params, layer
        combined = math.sqrt(sum(float(v) ** 2 for v in params))
        assert combined == pytest.approx(float(ours[j]), rel=1e-6)

    # Lightning 2.x no longer rounds (1.x rounded to 4 digits): values are p.grad.norm() as is
    for name, p in model.named_parameters():
        assert torch.equal(theirs[f"grad_2.0_norm/{name}"], p.grad.norm(2))


def test_total_equals_clip_grad_norm_return_value():
    model = Net()
    backward(model)
    _, ours = watched(model)
    clip_total = nn.utils.clip_grad_norm_(model.parameters(), max_norm=math.inf)
    assert float(clip_total) == pytest.approx(math.sqrt(float(ours.square().sum())), rel=1e-6)


def test_wandb_watch_histograms_bound_but_do_not_give_our_norms(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = wandb.init(
        mode="offline",
        dir=str(tmp_path),
        project="gradwatch-test",
        settings=wandb.Settings(console="off", x_disable_stats=True, x_disable_meta=True),
    )
    hists: dict[str, object] = {}
    real = run._log
    monkeypatch.setattr(run, "_log", lambda d, **kw: (hists.update(d), real(d, **kw)))
    try:
        model = Net()
        wandb.watch(model, log="gradients", log_freq=1)
        backward(model)  # wandb's tensor hooks histogram each parameter's gradient here
        layers, ours = watched(model)
        wandb.unwatch(model)
    finally:
        run.finish()

    names = dict(model.named_parameters())
    assert set(hists) == {f"gradients/{n}" for n in names}  # histograms, no norm at all
    lower = dict.fromkeys(layers, 0.0)  # per layer, bounds on the sum of squares
    upper = dict.fromkeys(layers, 0.0)
    for key, hist in hists.items():
        name = key.removeprefix("gradients/")
        counts, edges = hist.histogram, hist.bins  # 64 bins over [min, max] of the gradient
        g = names[name].grad
        # what the histogram does give: its range is the extreme entries, so max |g|
        assert max(abs(edges[0]), abs(edges[-1])) == pytest.approx(float(g.abs().max()), rel=1e-6)
        assert sum(counts) == g.numel()
        layer = name.rsplit(".", 1)[0]
        for c, lo, hi in zip(counts, edges[:-1], edges[1:], strict=True):
            near = 0.0 if lo <= 0 <= hi else min(abs(lo), abs(hi))
            lower[layer] += c * near**2
            upper[layer] += c * max(abs(lo), abs(hi)) ** 2
    for j, layer in enumerate(layers):  # our L2 norm lies in the histogram's bracket only
        assert math.sqrt(lower[layer]) <= float(ours[j]) * (1 + 1e-6)
        assert float(ours[j]) <= math.sqrt(upper[layer]) * (1 + 1e-6)
