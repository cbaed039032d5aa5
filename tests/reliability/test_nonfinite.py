"""Non-finite gradients: a NaN/Inf injected into one layer's gradient at one step is reported as
a "nonfinite" finding naming that layer and step; nothing warns or raises; the steps after it
are recorded normally (finite norms), live and from the run file."""

import math
import random
import warnings

import pytest
import torch
from torch import nn

from gradwatch.watch import Watch, load_run

STEPS = 12


def _model():
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(),
                         nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_injected_nonfinite_gradient_is_found_with_its_first_layer_and_step(value, seed, tmp_path):
    rng = random.Random(seed)
    torch.manual_seed(seed)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    linears = [(n, m) for n, m in model.named_children() if isinstance(m, nn.Linear)]
    name, layer = rng.choice(linears)
    bad_step = rng.randint(2, STEPS - 2)  # 1-based; finite steps before and after
    param = rng.choice([layer.weight, layer.bias])
    current = {"step": 0}

    def poison(grad):  # a tensor hook on one parameter: only that layer's gradient
        if current["step"] != bad_step:
            return None
        grad = grad.clone()
        grad.view(-1)[rng.randrange(grad.numel())] = value
        return grad

    param.register_hook(poison)
    path = tmp_path / "run.jsonl"
    g = torch.Generator().manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing in gradwatch may warn, let alone raise
        with Watch(model, detail_every=1, history=8) as watch:
            watch.save(path)
            for step in range(1, STEPS + 1):
                current["step"] = step
                x, y = torch.randn(16, 8, generator=g), torch.randint(0, 3, (16,), generator=g)
                nn.functional.cross_entropy(model(x), y).backward()
                watch.step()
                if step != bad_step:  # skip the poisoned update, as GradScaler does
                    opt.step()
                opt.zero_grad()
            findings = watch.diagnose()
    h = watch.history
    col = h.layers.index(name)
    row = h.steps.tolist().index(bad_step)

    nonfinite = [f for f in findings if f.kind == "nonfinite"]
    assert len(nonfinite) == 1, [str(f) for f in findings]
    f = nonfinite[0]
    assert f.severity == "error" and f.layers == (name,)
    assert f.evidence["first_step"] == bad_step and f.evidence["steps_affected"] == 1
    assert f"first at step {bad_step} in {name}" in f.summary

    assert h["nonfinite"][row, col] == 1 and h["nonfinite"].nansum() == 1
    if math.isnan(value):
        assert math.isnan(h["grad_norm"][row, col])
    else:
        assert math.isinf(h["grad_norm"][row, col])
    others = torch.ones_like(h["grad_norm"], dtype=torch.bool)
    others[row, col] = False
    assert torch.isfinite(h["grad_norm"][others]).all()  # before, beside and after it
    assert (h["grad_norm"][row + 1 :] > 0).all()  # the next steps are recorded normally
    assert torch.isfinite(h["param_norm"]).all()

    loaded = load_run(path)  # the file has every step (the live history keeps a downsample)
    assert loaded.steps.tolist() == list(range(1, STEPS + 1))
    rows = [loaded.steps.tolist().index(s) for s in h.steps.tolist()]
    for stat in ("grad_norm", "nonfinite", "param_norm"):
        torch.testing.assert_close(loaded[stat][rows], h[stat], equal_nan=True)
    from gradwatch import diagnose

    assert [x.evidence for x in diagnose(loaded) if x.kind == "nonfinite"] == [f.evidence]


def test_nonfinite_in_several_layers_names_the_first_step_only():
    torch.manual_seed(0)
    model = _model()
    with Watch(model) as watch:
        for step in range(1, 5):
            model(torch.randn(4, 8)).sum().backward()
            if step == 2:
                model[4].weight.grad[0, 0] = math.nan
            if step == 3:
                model[0].bias.grad[0] = math.inf
                model[6].bias.grad[0] = math.nan
            watch.step()
            model.zero_grad()
    (f,) = [x for x in watch.diagnose() if x.kind == "nonfinite"]
    assert f.layers == ("4",) and f.evidence == {"first_step": 2.0, "steps_affected": 2.0}


def test_huge_finite_gradients_keep_a_finite_norm_and_are_not_called_nonfinite():
    """float32 entries of 1e20 square past float32's range: the Watch redoes that read in
    float64, so the norm is the true one and the step is not counted as non-finite."""
    model = nn.Linear(4, 3)
    with Watch(model) as watch:
        model.weight.grad = torch.full((3, 4), 1e20)
        model.bias.grad = torch.zeros(3)
        watch.step()
    h = watch.history
    assert h["grad_norm"][0, 0].item() == pytest.approx(1e20 * math.sqrt(12), rel=1e-6)
    assert h["nonfinite"][0, 0].item() == 0
    assert not [f for f in watch.diagnose() if f.kind == "nonfinite"]
