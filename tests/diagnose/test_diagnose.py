import math

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from gradwatch.diagnose import Finding, clip_threshold, diagnose
from gradwatch.watch import RunHistory, Watch


def _watch_training(model, batches, lr=0.05, opt_cls=torch.optim.SGD, loss=None, **kw):
    opt = opt_cls(model.parameters(), lr=lr)
    loss = loss or nn.functional.cross_entropy
    with Watch(model, optimizer=opt, **kw) as w:
        for x, y in batches:
            loss(model(x), y).backward()
            opt.step()
            opt.zero_grad()
    return w.history


def _mlp(depth, act, width=32, he=False, n_in=32, n_out=10):
    layers, d = [], n_in
    for _ in range(depth - 1):
        lin = nn.Linear(d, width)
        if he:
            nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
            nn.init.zeros_(lin.bias)
        layers += [lin, act()]
        d = width
    return nn.Sequential(*layers, nn.Linear(d, n_out))


def _random_batches(n=8, width=32, batch=64, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch, width, generator=g), torch.randint(0, classes, (batch,), generator=g))
        for _ in range(n)
    ]


def _digits(n=20, batch=64, seed=0, image=False):
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0
    y = torch.tensor(d.target)
    if image:
        x = x.reshape(-1, 1, 8, 8)
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        out.append((x[idx], y[idx]))
    return out


def test_deep_sigmoid_mlp_vanishes_because_of_the_sigmoid():
    torch.manual_seed(0)
    found = diagnose(_watch_training(_mlp(30, nn.Sigmoid), _random_batches()))
    kinds = [f.kind for f in found]
    assert kinds.count("vanishing") == 1
    v = found[kinds.index("vanishing")]
    assert v.evidence["first_last_ratio"] < 1e-10
    # Per-layer factor at most 0.25 x the default init's gain 1/sqrt(3).
    assert v.evidence["per_layer_factor"] < 0.25 * 0.6
    assert "sigmoid" in v.cause and "nn.Sigmoid modules at 1, 3, 5" in v.fix
    assert "nn.ReLU" in v.fix and v.layers[0] == "0"
    assert "stalled" not in kinds  # a consequence of the vanishing, not reported twice


@pytest.mark.parametrize("variant", ["relu_he", "residual"])
def test_same_depth_with_relu_he_or_skips_does_not_vanish(variant):
    torch.manual_seed(0)
    if variant == "relu_he":
        model = _mlp(30, nn.ReLU, he=True)
    else:

        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.lin, self.act = nn.Linear(32, 32), nn.Sigmoid()

            def forward(self, x):
                return x + self.lin(self.act(x))

        model = nn.Sequential(*[Block() for _ in range(29)], nn.Linear(32, 10))
    found = diagnose(_watch_training(model, _random_batches(), lr=0.01))
    assert "vanishing" not in [f.kind for f in found]


def test_small_init_is_named_as_the_cause():
    torch.manual_seed(0)
    model = _mlp(20, nn.ReLU)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.5 / math.sqrt(m.in_features))
    (v,) = [
        f for f in diagnose(_watch_training(model, _random_batches(4))) if f.kind == "vanishing"
    ]
    assert v.cause.startswith("init:") and "kaiming_normal_" in v.fix


def test_tanh_rnn_with_spectral_radius_1_5_explodes():
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.RNN(4, 64, batch_first=True)
            with torch.no_grad():
                w = nn.init.normal_(self.rnn.weight_hh_l0)
                w.mul_(1.5 / torch.linalg.eigvals(w).abs().max())  # spectral radius 1.5
            self.head = nn.Linear(64, 1)

        def forward(self, x):
            return self.head(self.rnn(x)[0][:, -1])

    g = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(8, 200, 4, generator=g), torch.randn(8, 1, generator=g)) for _ in range(4)
    ]
    found = diagnose(
        _watch_training(Net(), batches, lr=1e-3, loss=nn.functional.mse_loss, recurrent_every=2)
    )
    (e,) = [f for f in found if f.kind == "recurrent_exploding"]
    assert e.layers == ("rnn",) and e.evidence["per_step_factor"] > 1
    assert "clip at" in e.fix


def test_lstm_with_zero_forget_bias_is_told_to_set_it_to_one():
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(4, 32)
            self.head = nn.Linear(32, 1)

        def forward(self, x):
            return self.head(self.rnn(x)[0][-1])

    g = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(100, 8, 4, generator=g), torch.randn(8, 1, generator=g)) for _ in range(2)
    ]
    found = diagnose(
        _watch_training(Net(), batches, loss=nn.functional.mse_loss, recurrent_every=1)
    )
    (v,) = [f for f in found if f.kind == "recurrent_vanishing"]
    assert "forget-gate bias of rnn to 1" in v.fix


def test_healthy_models_get_no_findings():
    torch.manual_seed(0)
    cnn = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 10),
    )
    assert diagnose(_watch_training(cnn, _digits(image=True), lr=0.05)) == []
    shallow = _mlp(3, nn.ReLU, width=64, n_in=64)
    assert diagnose(_watch_training(shallow, _digits(), lr=0.1)) == []

    class Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(8, 32, batch_first=True)
            self.head = nn.Linear(32, 10)

        def forward(self, x):
            return self.head(self.rnn(x)[0][:, -1])

    # The digits as sequences of 8 rows of 8 pixels: a short recurrent task.
    seqs = [(x.reshape(-1, 8, 8), y) for x, y in _digits()]
    assert (
        diagnose(_watch_training(Seq(), seqs, lr=1e-2, opt_cls=torch.optim.Adam, recurrent_every=5))
        == []
    )


def test_nonfinite_reports_first_step_and_layer():
    torch.manual_seed(0)
    model = _mlp(3, nn.Tanh)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with Watch(model) as w:
        for step, (x, y) in enumerate(_random_batches(6)):
            nn.functional.cross_entropy(model(x), y).backward()
            if step in (3, 4):
                model[2].weight.grad[0, 0] = math.inf
            w.step()
            if step not in (3, 4):
                opt.step()
            opt.zero_grad()
    found = diagnose(w.history)
    assert found[0].kind == "nonfinite" and found[0].severity == "error"
    assert found[0].layers == ("2",) and found[0].evidence["first_step"] == 4
    assert found[0].evidence["steps_affected"] == 2
    assert "step 4" in found[0].summary


def _history(grad_norm, layers=None, meta=None, update=None):
    g = torch.tensor(grad_norm, dtype=torch.float64)
    S, L = g.shape
    layers = layers or tuple(f"l{i}" for i in range(L))
    nan = torch.full((S, L), math.nan, dtype=torch.float64)
    return RunHistory(
        layers=layers,
        layer_kinds=("Linear",) * L,
        activations=(),
        activation_kinds=(),
        steps=torch.arange(1, S + 1),
        layer_stats={
            "grad_norm": g,
            "param_norm": torch.ones(S, L, dtype=torch.float64),
            "update_ratio": nan if update is None else torch.full((S, L), update),
            "nonfinite": torch.zeros(S, L, dtype=torch.float64),
        },
        activation_stats={
            k: torch.zeros(S, 0, dtype=torch.float64) for k in ("saturated", "dead", "mean_abs")
        },
        meta=meta or {},
    )


def test_spikes_prescribe_a_threshold_read_from_the_run():
    norms = [[1.0 + 0.01 * (i % 7), 1.0] for i in range(40)]
    norms[30] = [500.0, 1.0]
    h = _history(norms)
    (e,) = [f for f in diagnose(h) if f.kind == "exploding"]
    total = torch.tensor(norms, dtype=torch.float64).square().sum(1).sqrt()
    c = float(torch.quantile(total[:30], 0.9))  # the norms before the spike at step 31
    assert clip_threshold(h) == pytest.approx(c)
    assert f"clip at {c:.3g}" in e.fix and "step 31" in e.summary


def test_clip_threshold_is_read_before_the_blow_up():
    steady = [[1.0 + 0.1 * (i % 5)] for i in range(40)]
    growing = steady[:10] + [[10.0 ** (i / 3)] for i in range(30)]  # grows 1e9x
    c = clip_threshold(_history(growing))
    assert 1.0 <= c < 10  # the run reached 1e9; the level comes from before it took off
    nonfinite = [*steady[:20], [math.inf], [1e30]]
    assert 1.0 <= clip_threshold(_history(nonfinite)) <= 1.5


def test_stalled_updates():
    h = _history([[1.0, 1.0, 1.0]] * 5, update=1e-7)
    (f,) = diagnose(h)
    assert f.kind == "stalled" and "raise the learning rate" in f.fix
    assert diagnose(_history([[1.0, 1.0, 1.0]] * 5, update=1e-3)) == []


def test_gan_discriminator_saturation_needs_the_users_marking():
    norms = [[10.0 * 0.5**i, 1.0, 1.0] for i in range(20)]  # generator starves, D does not
    layers = ("gen.0", "disc.0", "disc.1")
    assert diagnose(_history(norms, layers)) == []
    found = diagnose(
        _history(norms, layers, {"gan_discriminator": "disc", "gan_loss": "saturating"})
    )
    (g,) = [f for f in found if f.kind == "gan_saturation"]
    assert g.layers == ("gen.0",) and "non-saturating" in g.fix


def test_findings_round_trip_and_bad_input():
    f = Finding("vanishing", "warning", ("a",), "s", "c", "x", {"r": 1e-9})
    assert Finding.from_json(f.to_json()) == f
    assert str(f) == "vanishing: s; cause: c; fix: x"
    with pytest.raises(TypeError, match="history"):
        diagnose({"grad_norm": []})  # type: ignore[arg-type]


def test_a_probe_at_init_is_diagnosed_like_a_run():
    from gradwatch import probe

    torch.manual_seed(0)
    model = _mlp(20, nn.ReLU)  # PyTorch's default init: sigma_w = 1/sqrt(3), below sqrt(2)
    x, y = _random_batches(1)[0]
    h = RunHistory.from_probe(probe(model, x, nn.functional.cross_entropy, y))
    assert len(h) == 1 and h.layers[0] == "0" and h["saturated"].shape == (1, 19)
    (v,) = [f for f in diagnose(h) if f.kind == "vanishing"]
    assert v.cause.startswith("init:") and "0.58" in v.cause
    he = _mlp(20, nn.ReLU, he=True)
    assert "vanishing" not in [
        f.kind
        for f in diagnose(RunHistory.from_probe(probe(he, x, nn.functional.cross_entropy, y)))
    ]



def _no_steps(layers=3):
    return RunHistory(
        layers=tuple(f"l{i}" for i in range(layers)),
        layer_kinds=("Linear",) * layers,
        activations=(),
        activation_kinds=(),
        steps=torch.zeros(0, dtype=torch.long),
        layer_stats={
            k: torch.zeros(0, layers, dtype=torch.float64)
            for k in ("grad_norm", "param_norm", "update_ratio", "nonfinite")
        },
        activation_stats={
            k: torch.zeros(0, 0, dtype=torch.float64) for k in ("saturated", "dead", "mean_abs")
        },
    )


def test_a_history_with_no_steps_is_not_called_healthy():
    (f,) = diagnose(_no_steps())
    assert f.kind == "no_data" and f.severity == "error"
    assert f.summary.startswith("no steps recorded") and "step()" in f.fix


def test_no_gradient_anywhere_is_an_error_not_a_healthy_run():
    nan = math.nan
    h = _history([[nan, nan, nan]] * 12)
    h.layer_stats["nonfinite"][:] = nan  # absent, as the Watch writes it
    (f,) = diagnose(h)
    assert f.kind == "no_gradient" and f.severity == "error"
    assert "no gradient reached any watched layer in 12 recorded steps" in f.summary
    assert f.evidence["steps"] == 12


def test_all_zero_gradients_are_an_error_and_imply_no_stalled_finding():
    h = _history([[0.0, 0.0, 0.0]] * 10, update=0.0)  # nothing moves either
    (f,) = diagnose(h)
    assert f.kind == "zero_gradient" and f.severity == "error"
    assert "every gradient is exactly 0" in f.summary and "zero_grad()" in f.cause
    assert "after loss.backward()" in f.fix
    # some absent layers do not change it: whatever reached a layer was 0
    assert [x.kind for x in diagnose(_history([[0.0, math.nan, 0.0]] * 10))] == ["zero_gradient"]


def test_some_all_zero_steps_are_fine():
    norms = [[1.0, 1.0, 1.0]] * 10
    norms[3] = norms[7] = [0.0, 0.0, 0.0]
    assert diagnose(_history(norms)) == []
    nan = math.nan
    norms[5] = [nan, nan, nan]  # and one step no gradient reached
    assert diagnose(_history(norms)) == []


def test_step_after_zero_grad_is_told_to_move():
    torch.manual_seed(0)
    model = _mlp(5, nn.Sigmoid)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with Watch(model, detail_every=1) as w:
        for x, y in _random_batches(12):
            nn.functional.cross_entropy(model(x), y).backward()
            opt.zero_grad(set_to_none=False)  # the gradients are zeros when step() reads them
            w.step()
            opt.step()
    assert (w.history["grad_norm"] == 0).all()
    found = diagnose(w.history)
    assert [f.kind for f in found] == ["zero_gradient"]  # and no "stalled" from the still weights
    assert "12 recorded steps" in found[0].summary


def test_a_watch_that_saw_no_step_says_so():
    model = _mlp(3, nn.ReLU)
    with Watch(model) as w:
        model(torch.randn(4, 32)).sum()
    assert [(f.kind, f.severity) for f in w.diagnose()] == [("no_data", "error")]


def test_a_probe_result_is_diagnosed_directly():
    from gradwatch import probe

    torch.manual_seed(0)
    model = _mlp(20, nn.ReLU)
    x, y = _random_batches(1)[0]
    result = probe(model, x, nn.functional.cross_entropy, y)
    assert diagnose(result) == diagnose(RunHistory.from_probe(result))
    assert "vanishing" in [f.kind for f in diagnose(result)]
    with pytest.raises(TypeError, match=r"history: .*ProbeResult.*got list"):
        diagnose([])  # type: ignore[arg-type]
