"""Odd models: shared and frozen parameters, unused layers, sparse and complex gradients,
meta-device construction, modules added after attach, zero-size parameters. Each either gets
correct numbers (checked against plain autograd) or a clear message; training is unchanged."""

import copy
import math
import warnings

import pytest
import torch
from torch import nn

from gradwatch import diagnose
from gradwatch.watch import Watch


def _layer_norm(*params):
    """The reference: L2 norm of the concatenated gradients of one layer's parameters."""
    return torch.cat([p.grad.flatten() for p in params]).abs().double().norm().item()


def _train(model, batches, opt=None, **kw):
    """Train under a Watch (manual step()); returns the Watch (closed)."""
    with Watch(model, detail_every=1, **kw) as w:
        for x in batches:
            model(x).abs().sum().backward()
            w.step()
            if opt is not None:
                opt.step()
            model.zero_grad()
    return w


def test_shared_parameters_are_counted_once_with_their_whole_gradient():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 6)
            self.block = nn.Linear(6, 6)
            self.out = nn.Linear(6, 10, bias=False)
            self.out.weight = self.emb.weight  # tied input/output embedding

        def forward(self, x):  # a module applied twice, and a weight used by two modules
            return self.out(torch.tanh(self.block(torch.tanh(self.block(self.emb(x))))))

    torch.manual_seed(0)
    model = Tied()
    x = torch.tensor([1, 2, 3, 2])
    ref = copy.deepcopy(model)
    ref(x).abs().sum().backward()
    with Watch(model) as w:
        model(x).abs().sum().backward()
        w.step()
    h = w.history
    assert h.layers == ("emb", "block")  # "out" owns nothing of its own
    expected = [_layer_norm(ref.emb.weight), _layer_norm(ref.block.weight, ref.block.bias)]
    torch.testing.assert_close(h["grad_norm"][0], torch.tensor(expected, dtype=torch.float64))


def test_frozen_layers_are_left_out_and_partly_frozen_layers_keep_the_trainable_part():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4), nn.Linear(4, 1))
    model[0].requires_grad_(False)
    model[2].weight.requires_grad_(False)  # its bias still trains
    ref = copy.deepcopy(model)
    x = torch.randn(3, 4)
    ref(x).abs().sum().backward()
    with Watch(model) as w:
        model(x).abs().sum().backward()
        w.step()
    h = w.history
    assert h.layers == ("2", "3")
    expected = [_layer_norm(ref[2].bias), _layer_norm(ref[3].weight, ref[3].bias)]
    torch.testing.assert_close(h["grad_norm"][0], torch.tensor(expected, dtype=torch.float64))
    with pytest.raises(ValueError, match="no trainable parameters"):
        Watch(nn.Linear(2, 2).requires_grad_(False))


def test_unused_layer_is_absent_not_vanishing():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.unused, self.b = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 1)

        def forward(self, x):
            return self.b(torch.tanh(self.a(x)))

    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    w = _train(model, [torch.randn(4, 4) for _ in range(12)], opt)
    h = w.history
    col = h.layers.index("unused")
    assert h["grad_norm"][:, col].isnan().all() and h["nonfinite"][:, col].isnan().all()
    assert h["grad_norm"][:, [0, 2]].isfinite().all()
    assert all("unused" not in f.layers for f in diagnose(h)), [str(f) for f in diagnose(h)]


@pytest.mark.parametrize("opt_cls", [torch.optim.SGD, torch.optim.SparseAdam])
def test_sparse_gradients_match_the_dense_norm_and_training_is_unchanged(opt_cls):
    torch.manual_seed(0)
    base = nn.Embedding(20, 4, sparse=True)
    batches = [torch.randint(0, 20, (6,)) for _ in range(4)]
    finals, norms = [], []
    for watched in (False, True):
        model = copy.deepcopy(base)
        opt = opt_cls(model.parameters(), lr=0.1)
        w = Watch(model, detail_every=1).attach() if watched else None
        for x in batches:
            model(x).square().sum().backward()
            assert model.weight.grad.is_sparse
            norms.append(model.weight.grad.to_dense().double().norm().item())
            if w is not None:
                w.step()
            opt.step()
            opt.zero_grad()
        if w is not None:
            w.close()
            h = w.history
            torch.testing.assert_close(h["grad_norm"][:, 0], torch.tensor(norms[4:]).double())
            assert (h["nonfinite"] == 0).all() and h["update_ratio"][:-1].isfinite().all()
        finals.append(model.weight.detach().clone())
    assert torch.equal(finals[0], finals[1])


@pytest.mark.filterwarnings("ignore:Complex modules:UserWarning")
def test_complex_parameters_get_the_complex_norm():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)).to(torch.complex64)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(5, 3, dtype=torch.complex64)
    ref = copy.deepcopy(model)
    ref(x).abs().sum().backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "discards the imaginary part" either
        w = _train(model, [x, x, x], opt)
    h = w.history
    expected = [_layer_norm(ref[0].weight, ref[0].bias), _layer_norm(ref[1].weight, ref[1].bias)]
    torch.testing.assert_close(h["grad_norm"][0], torch.tensor(expected, dtype=torch.float64))
    assert h["param_norm"].isfinite().all() and h["update_ratio"][:-1].isfinite().all()
    assert (h["nonfinite"] == 0).all() and h.layer_info["init_gain"].isfinite().all()


def test_meta_device_model_gets_a_clear_error_then_works_once_materialised():
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 1))
    with pytest.raises(ValueError, match=r"model: .*meta device.*to_empty"):
        Watch(model)
    model.to_empty(device="cpu")
    torch.manual_seed(0)
    for m in (model[0], model[2]):
        m.reset_parameters()
    ref = copy.deepcopy(model)
    x = torch.randn(2, 3)
    ref(x).abs().sum().backward()
    with Watch(model) as w:
        model(x).abs().sum().backward()
        w.step()
    expected = [_layer_norm(ref[0].weight, ref[0].bias), _layer_norm(ref[2].weight, ref[2].bias)]
    torch.testing.assert_close(w.history["grad_norm"][0], torch.tensor(expected).double())


def test_module_added_after_attach_gets_a_warning_naming_it():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3))
    with Watch(model) as w:
        with pytest.warns(RuntimeWarning, match=r"'1'.*not watched"):
            model.append(nn.Linear(3, 1))
            model(torch.randn(2, 3)).sum().backward()
            w.step()
        with pytest.warns(RuntimeWarning, match=r"'extra'.*not watched"):
            model[0].register_parameter("extra", nn.Parameter(torch.zeros(1)))
            w.step()
    assert w.history.layers == ("0",)  # what was watched stays as it was
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # after close, and for other models: silence
        model.append(nn.Linear(1, 1))
        nn.Sequential(nn.Linear(2, 2))


def test_zero_size_parameters_are_zero_not_nan_and_not_findings():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.empty = nn.Linear(4, 0)  # weight (0, 4), bias (0,)
            self.body = nn.Linear(4, 4)
            self.head = nn.Linear(4, 1)

        def forward(self, x):
            return self.head(torch.tanh(self.body(x))) + self.empty(x).sum()

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: "Initializing zero-element tensors is a no-op"
        model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    w = _train(model, [torch.randn(4, 4) for _ in range(12)], opt)
    h = w.history
    col = h.layers.index("empty")
    assert (h["grad_norm"][:, col] == 0).all() and (h["nonfinite"][:, col] == 0).all()
    assert h["grad_norm"].isfinite().all()
    assert all("empty" not in f.layers for f in diagnose(h)), [str(f) for f in diagnose(h)]
    assert not math.isnan(h.layer_info["numel"][col]) and h.layer_info["numel"][col] == 0
