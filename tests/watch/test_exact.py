"""The Watch's numbers are exact in the regime it exists for: vanishing and exploding
gradients, any dtype, and a model converted after the Watch was attached."""

import math

import pytest
import torch
from torch import nn

import gradwatch as gw
from gradwatch.core.probe import layers_of

REL = 1e-5


def _sigmoid_mlp(depth=30, width=64) -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.Sigmoid()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def _reference(model: nn.Module, what: str) -> list[float]:
    """Per-layer L2 norms of the gradients (or weights) from float64 copies, max-abs scaled."""
    out = []
    for _, _, params in layers_of(model):
        ts = [(p.grad if what == "grad" else p).detach().double().flatten() for p in params]
        x = torch.cat(ts).abs()
        peak = float(x.max())
        out.append(0.0 if peak == 0 else peak * float(torch.linalg.vector_norm(x / peak)))
    return out


def _close(got: list[float], want: list[float]) -> None:
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert math.isclose(a, b, rel_tol=REL), (i, a, b)


@pytest.mark.filterwarnings("ignore:Watch.step... no gradients yet")
def test_a_30_layer_sigmoid_mlp_records_its_vanishing_gradients_exactly():
    # The case: layers 0-8 used to read exactly 0 where the float64 norm is ~3e-26.
    model = _sigmoid_mlp()
    x, y = torch.randn(64, 64), torch.randint(0, 10, (64,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gw.Watch(model, detail_every=1) as w:
        nn.functional.cross_entropy(model(x), y).backward()
        w.step()
        grads, weights = _reference(model, "grad"), _reference(model, "param")
        before = [p.detach().clone() for p in model.parameters()]
        opt.step()
        opt.zero_grad()
        w.step()  # measures the update of step 1 (and warns: no gradients yet)
    h = w.history
    assert min(grads) < 1e-25  # the regime: ~3e-26 at the first layer
    _close(h["grad_norm"][0].tolist(), grads)
    _close(h["param_norm"][0].tolist(), weights)
    moved = []
    for (_, _, params), ps in zip(layers_of(model), _split(before, model), strict=True):
        d = torch.cat([(b - p.detach()).double().flatten() for b, p in zip(ps, params,
                                                                          strict=True)])
        peak = float(d.abs().max())
        moved.append(peak * float(torch.linalg.vector_norm(d / peak)) if peak else 0.0)
    _close(h["update_ratio"][0].tolist(), [m / w_ for m, w_ in zip(moved, weights, strict=True)])
    (vanishing,) = [f for f in gw.diagnose(h) if f.kind == "vanishing"]
    ratio = vanishing.evidence["first_last_ratio"]
    assert math.isclose(ratio, grads[0] / grads[-1], rel_tol=1e-4)


def _split(flat: list[torch.Tensor], model: nn.Module) -> list[list[torch.Tensor]]:
    out, i = [], 0
    for _, _, params in layers_of(model):
        out.append(flat[i : i + len(params)])
        i += len(params)
    return out


@pytest.mark.parametrize("scale", [1e-300, 1e-150, 1e150, 1e300])
def test_float64_gradients_from_1e_300_to_1e300_are_exact(scale):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    x = torch.randn(16, 8, dtype=torch.float64)
    with gw.Watch(model) as w:
        (model(x).sum() * scale).backward()
        w.step()
    got = w.history["grad_norm"][0].tolist()
    want = _reference(model, "grad")
    assert all(math.isfinite(v) and v > 0 for v in want)
    _close(got, want)


@pytest.mark.parametrize(
    "dtype,scale",
    [(torch.float32, 1e-30), (torch.float32, 1.0), (torch.float32, 1e25),
     (torch.bfloat16, 1e-30), (torch.bfloat16, 1e25), (torch.float16, 1e-3), (torch.float16, 1.0)],
)
def test_every_dtype_is_exact_across_its_range(dtype, scale):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 4)).to(dtype)
    x = torch.randn(32, 8, dtype=dtype)
    with gw.Watch(model) as w:
        (model(x).float().sum() * scale).backward()
        w.step()
    want = _reference(model, "grad")
    assert all(math.isfinite(v) and v > 0 for v in want)
    _close(w.history["grad_norm"][0].tolist(), want)


def test_an_all_zero_gradient_is_the_only_zero():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 1))
    with gw.Watch(model) as w:
        model(torch.randn(3, 4)).sum().backward()
        model[0].weight.grad.zero_()
        model[0].bias.grad.zero_()
        model[1].weight.grad.mul_(1e-30)
        model[1].bias.grad.mul_(1e-30)
        w.step()
    g = w.history["grad_norm"][0].tolist()
    assert g[0] == 0.0 and 0 < g[1] < 1e-28


@pytest.mark.filterwarnings("ignore:Watch.step... no gradients yet")
@pytest.mark.parametrize("convert", ["double", "half", "to_float64", "bfloat16"])
def test_a_model_converted_after_attach_keeps_being_watched(convert):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2))
    dtype = {"double": torch.float64, "half": torch.float16, "to_float64": torch.float64,
             "bfloat16": torch.bfloat16}[convert]
    with gw.Watch(model, detail_every=1) as w:
        for step in range(4):
            if step == 2:  # mid-run, inside the user's loop
                model = getattr(model, convert)() if convert != "to_float64" else model.to(dtype)
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            x = torch.randn(5, 6, dtype=next(model.parameters()).dtype)
            model(x).float().square().mean().backward()
            w.step()
            want = _reference(model, "grad")
            opt.step()
            opt.zero_grad()
        w.step()
    h = w.history
    assert h.steps.tolist() == [1, 2, 3, 4]
    _close(h["grad_norm"][-1].tolist(), want)
    assert torch.isfinite(h["param_norm"]).all()
    assert torch.isfinite(h["update_ratio"][[0, 2, 3]]).all()  # step 2's update crossed it
