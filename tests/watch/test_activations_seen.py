"""Which activations the Watch sees, and how it names what it measures.

ReLU-like units are inactive (and dead), not saturated; modern activation modules (torch's and
transformers') are recognised by class and checked against what they compute; activations
applied as functions are measured on the output of the layer that feeds them, or named in
``watch.notes``."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradwatch as gw
from gradwatch.core.activations import activation, module_activation


def _train(model: nn.Module, x: torch.Tensor, steps: int = 3, **kw) -> gw.Watch:
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with gw.Watch(model, detail_every=1, **kw) as w:
        for _ in range(steps):
            model(x).float().square().mean().backward()
            w.step()
            opt.step()
            opt.zero_grad()
    return w


def test_relu_units_are_inactive_not_saturated():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.Tanh(),
                        nn.Linear(64, 1))
    h = _train(net, torch.randn(256, 32)).history
    relu, tanh = 0, 1
    assert h["saturated"][:, relu].isnan().all()  # it used to read ~50% "saturated"
    assert (h["inactive"][:, relu] - 0.5).abs().max() < 0.1  # about half: healthy
    assert h["dead"][:, relu].max() < 0.1
    assert h["inactive"][:, tanh].isnan().all() and h["dead"][:, tanh].isnan().all()
    assert h["saturated"][:, tanh].max() < 0.1
    assert gw.diagnose(h) == []


MODULES = [
    (nn.GELU(), "gelu"), (nn.GELU(approximate="tanh"), "gelu_tanh"), (nn.SiLU(), "silu"),
    (nn.Mish(), "mish"), (nn.SELU(), "selu"), (nn.CELU(), "elu"), (nn.ReLU6(), "relu6"),
    (nn.Hardswish(), "hardswish"), (nn.Hardsigmoid(), "hardsigmoid"), (nn.Softsign(), "softsign"),
    (nn.ELU(alpha=0.5), "elu(0.5)"), (nn.Softplus(beta=2.0), "softplus(2)"),
    (nn.Hardtanh(-2.0, 2.0), "hardtanh(-2,2)"), (nn.LeakyReLU(0.2), "leaky_relu(0.2)"),
]


@pytest.mark.parametrize("module,name", MODULES, ids=[n for _, n in MODULES])
def test_torch_activation_modules_are_known_with_their_arguments(module, name):
    act = module_activation(module)
    assert act is not None and act.name == name
    x = torch.linspace(-5, 5, 101, dtype=torch.float64)
    assert torch.allclose(act.fn(x), module(x), atol=1e-12)
    d = torch.autograd.functional.jacobian(lambda t: module(t).sum(), x)
    assert torch.allclose(act.derivative(x), d, atol=1e-6)
    if act.max_derivative is not None:
        assert d.abs().max() <= act.max_derivative + 1e-3


transformers = pytest.importorskip("transformers")
from transformers import activations as hf  # noqa: E402

HF = [("GELUActivation", "gelu"), ("NewGELUActivation", "gelu_tanh"),
      ("FastGELUActivation", "gelu_tanh"), ("GELUTanh", "gelu_tanh"),
      ("QuickGELUActivation", "quick_gelu"), ("SiLUActivation", "silu"),
      ("MishActivation", "mish"), ("ReLUSquaredActivation", "relu2")]


@pytest.mark.parametrize("cls,name", HF, ids=[c for c, _ in HF])
def test_transformers_activation_classes_are_known(cls, name):
    module = getattr(hf, cls)()
    act = module_activation(module)
    assert act is not None and act.name == name
    x = torch.linspace(-5, 5, 101, dtype=torch.float64)
    assert torch.allclose(act.fn(x), module(x), atol=1e-3)


def test_a_transformers_class_is_trusted_only_if_it_computes_what_its_name_says(monkeypatch):
    monkeypatch.setattr(hf.NewGELUActivation, "forward", lambda self, x: torch.sigmoid(x))
    assert module_activation(hf.NewGELUActivation()) is None
    assert module_activation(hf.ClippedGELUActivation(-3.0, 3.0)).name == "gelu_clipped(-3,3)"


def test_a_gpt2_mlp_gelu_is_watched():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=50, n_positions=16)
    model = GPT2LMHeadModel(cfg)
    ids = torch.randint(0, 50, (2, 8))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with gw.Watch(model, detail_every=1) as w:
        model(ids, labels=ids).loss.backward()
        w.step()
        opt.step()
    h = w.history
    assert h.activations == ("transformer.h.0.mlp.act", "transformer.h.1.mlp.act")
    assert h.activation_kinds == ("gelu_tanh", "gelu_tanh")
    assert h["saturated"].isfinite().all() and h["mean_abs"].isfinite().all()
    # The Watch's own gelu/tanh calls (its statistics) are not the model's functional calls.
    assert w.notes == []


def test_bert_pooler_tanh_is_watched_and_nothing_is_unseen():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                     intermediate_size=64, vocab_size=50)
    model = BertModel(cfg)
    ids = torch.randint(0, 50, (2, 8))
    with gw.Watch(model, detail_every=1) as w:
        model(ids).pooler_output.sum().backward()
        w.step()
    assert w.history.activation_kinds == ("gelu", "gelu", "tanh")
    assert w.notes == []


class Functional(nn.Module):
    """F.relu on a Linear's output (watchable), torch.tanh on an expression (not)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc1(x))
        h = F.gelu(self.fc2(h), approximate="tanh")
        return self.out(torch.tanh(2 * h))


def test_functional_activations_are_measured_on_the_layer_that_feeds_them():
    torch.manual_seed(0)
    model = Functional()
    x = torch.randn(64, 8)
    w = _train(model, x)
    h = w.history
    assert h.activations == ("fc1>relu", "fc2>gelu_tanh")
    assert h.activation_kinds == ("relu", "gelu_tanh")
    assert h["inactive"].shape == (3, 2) and h["inactive"][:, 1].isnan().all()
    # The first step (the discovery forward itself) is measured too: the reference is the
    # pre-activation of the model as it is now, so compare the last step.
    with torch.no_grad():
        pre = model.fc1(x)
    assert math.isclose(h["inactive"][-1, 0].item(), (pre <= 0).double().mean().item(),
                        rel_tol=0.05)
    assert h["inactive"][0].isfinite()[0]
    assert [n for n in w.notes if "tanh" in n] == [
        "tanh called in 'Functional' (Functional) is not watched: its input is not the output "
        "of a layer (seen 1x in one forward)"
    ]
    assert h.notes == tuple(w.notes)


def test_the_transformer_encoder_layers_functional_relu_is_watched():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    h = _train(layer, torch.randn(4, 6, 16)).history
    assert h.activations == ("linear1>relu",)
    assert (h["inactive"] - 0.5).abs().max() < 0.2


def test_notes_reach_the_run_file_and_the_report(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(Functional(), nn.PReLU())
    w = _train(model, torch.randn(16, 8))
    assert any("PReLU" in n for n in w.notes)
    w.save(tmp_path / "run.jsonl")
    loaded = gw.load_run(tmp_path / "run.jsonl")
    assert loaded.notes == tuple(w.notes) and loaded.activations == w.history.activations
    page = gw.report(loaded, tmp_path / "r.html").read_text(encoding="utf-8")  # type: ignore
    assert "Not seen by the Watch:" in page and "PReLU" in page


def test_validation_first_then_training_still_discovers():
    torch.manual_seed(0)
    model = Functional()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with gw.Watch(model, detail_every=1) as w:
        with torch.no_grad():
            model(torch.randn(4, 8))  # not a training forward: nothing discovered from it
        model(torch.randn(4, 8)).sum().backward()
        w.step()
        opt.step()
    assert w.history.activations == ("fc1>relu", "fc2>gelu_tanh")


def test_named_activations_cover_every_function_discovery_resolves():
    for name in ("relu", "tanh", "sigmoid", "silu", "mish", "selu", "relu6", "hardsigmoid",
                 "hardswish", "softsign", "gelu", "gelu_tanh", "leaky_relu", "elu", "softplus",
                 "hardtanh"):
        assert activation(name).name == name


class StarReLU(nn.Module):
    """An activation gradwatch does not know (s * relu(x)^2 + b with fixed s, b)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.8944 * torch.relu(x).square() - 0.4472


def test_an_unknown_activation_class_is_named_in_the_notes():
    model = nn.Sequential(nn.Linear(4, 4), StarReLU(), nn.Dropout(0.0), nn.Linear(4, 1))
    w = gw.Watch(model)
    assert w.notes == ["'1' (StarReLU) looks like an activation gradwatch does not know; it "
                       "gives no statistics"]
