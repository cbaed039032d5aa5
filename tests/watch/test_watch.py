import contextlib
import copy
import math
import warnings
from collections.abc import Iterator

import pytest
import torch
from tiny_models import TinyLSTM
from torch import nn

from gradwatch.core.probe import layers_of
from gradwatch.watch import RunHistory, Watch


def _mlp(depth=4, width=16, act=nn.Tanh):
    layers = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), act()]
    return nn.Sequential(*layers, nn.Linear(width, 3))


def _train(model, opt, batches, watch=None, hooked=False):
    for x, y in batches:
        nn.functional.cross_entropy(model(x), y).backward()
        if watch is not None and not hooked:
            watch.step()
        opt.step()
        opt.zero_grad()


def _batches(n=6, width=16, batch=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch, width, generator=g), torch.randint(0, 3, (batch,), generator=g))
        for _ in range(n)
    ]


def test_history_equals_a_manual_computation():
    torch.manual_seed(0)
    model = _mlp()
    ref = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    batches = _batches(3)
    expected, ratios = [], []
    for x, y in batches:
        nn.functional.cross_entropy(ref(x), y).backward()
        rows = []
        before = []
        for _, _, ps in layers_of(ref):
            rows.append(torch.cat([p.grad.flatten() for p in ps]).norm().item())
            before.append(torch.cat([p.detach().flatten() for p in ps]).clone())
        expected.append(rows)
        ref_opt.step()
        ref_opt.zero_grad()
        after = [torch.cat([p.detach().flatten() for p in ps]) for _, _, ps in layers_of(ref)]
        ratios.append(
            [((a - b).norm() / b.norm()).item() for a, b in zip(after, before, strict=True)]
        )
    with Watch(model, detail_every=1) as watch:
        _train(model, opt, batches, watch)
    h = watch.history
    assert h.steps.tolist() == [1, 2, 3]
    assert h["grad_norm"].shape == (3, 5)
    assert torch.allclose(h["grad_norm"], torch.tensor(expected, dtype=torch.float64), rtol=1e-5)
    # The last step's update happens after its step(): known only at the next step.
    assert torch.allclose(
        h["update_ratio"][:2], torch.tensor(ratios[:2], dtype=torch.float64), rtol=1e-4
    )
    assert torch.isnan(h["update_ratio"][2]).all()
    assert (h["nonfinite"] == 0).all()
    assert h["saturated"].shape == (3, 4) and (h["mean_abs"] > 0).all()
    assert h.layers == ("0", "2", "4", "6", "8") and h.activation_kinds == ("tanh",) * 4


def test_optimizer_hook_records_by_itself_with_exact_update_ratios():
    torch.manual_seed(0)
    model = _mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with Watch(model, optimizer=opt, detail_every=1) as watch:
        _train(model, opt, _batches(4), watch, hooked=True)
    h = watch.history
    assert h.steps.tolist() == [1, 2, 3, 4]
    u = h["update_ratio"]
    assert torch.isfinite(u).all() and (u > 0).all()  # every step's update, the last included
    with Watch(model, optimizer=opt, every=2, detail_every=3) as sampled:
        _train(model, opt, _batches(12), sampled, hooked=True)
    u = sampled.history["update_ratio"]  # recorded steps 1, 3, ..., 11; sampled rows 0 and 3
    assert torch.isfinite(u[[0, 3]]).all() and torch.isnan(u[[1, 2, 4, 5]]).all()
    assert not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks


def _fingerprint(model, opt):
    state = [t.clone() for s in opt.state.values() for t in s.values() if torch.is_tensor(t)]
    return [p.detach().clone() for p in model.parameters()], state


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a[0], b[0], strict=True)) and all(
        torch.equal(x, y) for x, y in zip(a[1], b[1], strict=True)
    )


class _CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 8, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(8 * 4 * 4, 3)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


@contextlib.contextmanager
def _bf16(on: bool) -> Iterator[None]:
    """bf16 autocast on the CPU. oneDNN's bf16 LSTM needs CPU instructions many machines lack
    (it raises on an AMD EPYC with AVX2 only), so oneDNN is off: torch's own kernels run it."""
    was = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = was and not on
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=on):
            yield
    finally:
        torch.backends.mkldnn.enabled = was


@pytest.mark.parametrize(
    "make,shape", [(_mlp, (8, 16)), (_CNN, (8, 1, 8, 8)), (TinyLSTM, (8, 12, 4))]
)
@pytest.mark.parametrize("opt_cls", [torch.optim.SGD, torch.optim.Adam])
@pytest.mark.parametrize("mode", ["plain", "accumulate", "bf16", "hooked"])
def test_training_is_bit_identical_with_and_without_a_watch(make, shape, opt_cls, mode):
    torch.manual_seed(0)
    base = make()
    g = torch.Generator().manual_seed(1)
    data = [
        (torch.randn(*shape, generator=g), torch.randint(0, 3, (shape[0],), generator=g))
        for _ in range(4)
    ]
    results = []
    for watched in (False, True):
        model = copy.deepcopy(base)
        kw = {"lr": 0.05, "momentum": 0.9} if opt_cls is torch.optim.SGD else {"lr": 1e-2}
        opt = opt_cls(model.parameters(), **kw)
        watch = None
        if watched:
            watch = Watch(
                model, optimizer=opt if mode == "hooked" else None, recurrent_every=2
            ).attach()
        for x, y in data:
            micro = [(x[:4], y[:4]), (x[4:], y[4:])] if mode == "accumulate" else [(x, y)]
            for xm, ym in micro:
                with _bf16(mode == "bf16"):
                    loss = nn.functional.cross_entropy(model(xm), ym) / len(micro)
                loss.backward()
            if watch is not None and mode != "hooked":
                watch.step()
            opt.step()
            opt.zero_grad()
        if watch is not None:
            assert len(watch.history) == 4
            watch.close()
        results.append(_fingerprint(model, opt))
    assert _same(results[0], results[1])


def test_step_makes_no_host_sync(monkeypatch):
    torch.manual_seed(0)
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Watch(model) as watch:
        x, y = _batches(1)[0]
        for _ in range(3):
            nn.functional.cross_entropy(model(x), y).backward()

            def boom(*a, **k):
                raise AssertionError("host sync inside Watch.step()")

            with monkeypatch.context() as m:
                for name in ("item", "__bool__", "__float__", "__int__", "tolist"):
                    m.setattr(torch.Tensor, name, boom)
                watch.step()
            opt.step()
            opt.zero_grad()
    assert len(watch.history) == 3


def test_gradient_accumulation_reads_the_accumulated_gradient():
    torch.manual_seed(0)
    model = _mlp()
    x, y = _batches(1, batch=8)[0]
    ref = copy.deepcopy(model)
    nn.functional.cross_entropy(ref(x), y).backward()
    full = [torch.cat([p.grad.flatten() for p in ps]).norm().item() for _, _, ps in layers_of(ref)]
    with Watch(model) as watch:
        for i in (0, 4):
            (nn.functional.cross_entropy(model(x[i : i + 4]), y[i : i + 4]) / 2).backward()
        watch.step()
    assert torch.allclose(
        watch.history["grad_norm"][0], torch.tensor(full, dtype=torch.float64), rtol=1e-5
    )


def test_grad_scaler_norms_are_of_the_unscaled_gradient():
    torch.manual_seed(0)
    model = _mlp()
    ref = copy.deepcopy(model)
    x, y = _batches(1)[0]
    nn.functional.cross_entropy(ref(x), y).backward()
    full = [torch.cat([p.grad.flatten() for p in ps]).norm().item() for _, _, ps in layers_of(ref)]
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    with Watch(model, scaler=scaler) as watch:
        scaler.scale(nn.functional.cross_entropy(model(x), y)).backward()
        watch.step()  # before unscale_: the Watch divides by the scale itself
    assert torch.allclose(
        watch.history["grad_norm"][0], torch.tensor(full, dtype=torch.float64), rtol=1e-5
    )


def test_every_and_bounded_history():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 1))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(4, 2)
    with Watch(model, every=3, history=16, detail_every=0) as watch:
        held = watch._layer_tables.nbytes() + watch._act_tables.nbytes()
        for _ in range(3000):
            model(x).sum().backward()
            watch.step()
            opt.step()
            opt.zero_grad()
        assert watch._layer_tables.nbytes() + watch._act_tables.nbytes() == held
    steps = watch.history.steps
    assert steps[0] == 1 and steps[-1] == 2998  # recorded steps are 1, 4, 7, ...
    assert ((steps - 1) % 3 == 0).all() and (steps.diff() > 0).all()
    assert len(steps) <= 32  # 16 recent rows + a 16-row long view of the whole run
    assert steps[-16:].tolist() == list(range(2998 - 15 * 3, 2999, 3))


def test_modules_filter_by_pattern_and_type():
    model = _mlp(3)
    with Watch(model, modules=["0", "2"]) as w:
        assert w.layer_names == ("0", "2") and [n for n, _, _ in w._acts] == []
    with Watch(model, modules=["[0-3]"]) as w:
        assert w.layer_names == ("0", "2") and [n for n, _, _ in w._acts] == ["1", "3"]
    with Watch(model, modules=[nn.Tanh, nn.Linear]) as w2:
        assert [n for n, _, _ in w2._acts] == ["1", "3", "5"] and len(w2.layer_names) == 4
    with pytest.raises(ValueError, match="model: no trainable parameters"):
        Watch(model, modules=nn.Tanh)
    with pytest.raises(TypeError, match="modules"):
        Watch(model, modules=[3])  # type: ignore[list-item]


def test_unused_layer_is_absent_not_zero():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.Linear(3, 3), nn.Linear(3, 3)

        def forward(self, x):
            return self.used(x)

    net = Net()
    with Watch(net) as w:
        net(torch.randn(2, 3)).sum().backward()
        w.step()
    g = w.history["grad_norm"][0]
    assert g[0] > 0 and math.isnan(g[1])


def test_misuse_gets_clear_messages():
    with pytest.raises(ValueError, match="model: no trainable parameters"):
        Watch(nn.Sequential(nn.ReLU()))
    with pytest.raises(TypeError, match="model"):
        Watch("model")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="every"):
        Watch(nn.Linear(2, 2), every=0)
    model = nn.Linear(2, 2)
    with Watch(model) as w:
        with pytest.raises(RuntimeError, match="already has an attached Watch"):
            Watch(model).attach()
        with pytest.warns(RuntimeWarning, match="after loss.backward"):
            w.step()
    assert len(w.history) == 0
    Watch(model).attach().close()  # closing frees the model for a new Watch


def _hook_free(model, opt=None):
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
        assert not m._backward_hooks and not getattr(m, "_backward_pre_hooks", {})
    for p in model.parameters():
        assert not p._backward_hooks
    if opt is not None:
        assert not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks


def test_no_hook_left_after_success_or_failure():
    model = TinyLSTM()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Watch(model, optimizer=opt):
        assert any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    _hook_free(model, opt)
    with pytest.raises(KeyError), Watch(model, optimizer=opt):
        raise KeyError("inside the with block")
    _hook_free(model, opt)


def test_nonfinite_gradients_are_recorded_not_raised():
    torch.manual_seed(0)
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Watch(model) as w, warnings.catch_warnings():
        warnings.simplefilter("error")
        for step in range(3):
            x, y = _batches(1)[0]
            nn.functional.cross_entropy(model(x), y).backward()
            if step == 1:
                model[2].weight.grad[0, :3] = torch.tensor([math.nan, math.inf, -math.inf])
            w.step()
            if step != 1:  # skip the poisoned update, as GradScaler does
                opt.step()
            opt.zero_grad()
    bad = w.history["nonfinite"]
    assert bad[1, 1] == 3 and bad[1].nansum() == 3 and bad[0].sum() == 0 and bad[2].sum() == 0
    assert (
        math.isnan(w.history["grad_norm"][1, 1]) and torch.isfinite(w.history["grad_norm"][2]).all()
    )


def test_recurrent_profiles_are_sampled():
    torch.manual_seed(0)
    model = TinyLSTM()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(4, 20, 4), torch.randint(0, 3, (4,))
    with Watch(model, optimizer=opt, recurrent_every=2) as w:
        for _ in range(5):
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()
    h = w.history
    samples = h.profiles("rnn")
    assert [s.step for s in samples] == [1, 3, 5]
    assert samples[0].profile.grad_norm.shape == (20,)
    assert "lstm_forget_bias:rnn" in h.meta


def test_history_is_a_frozen_result_with_a_json_round_trip():
    torch.manual_seed(0)
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Watch(model, optimizer=opt) as w:
        _train(model, opt, _batches(3), w, hooked=True)
    h = w.history
    assert RunHistory.from_json(h.to_json()) == h
    with pytest.raises(KeyError, match="stat: no statistic 'gradnorm'"):
        h["gradnorm"]


def test_rows_written_later_keep_what_their_step_read():
    """Plain steps are measured at step() and turned into rows in batches: the GradScaler's
    scale of that step, a NaN gradient at that step, and every row are there when read."""
    torch.manual_seed(0)
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=256.0, growth_interval=1)  # doubles
    expected, bad_step = [], 3
    with Watch(model, scaler=scaler, detail_every=0, history=64) as watch:
        for step, (x, y) in enumerate(_batches(7), start=1):
            opt.zero_grad()
            scaler.scale(nn.functional.cross_entropy(model(x), y)).backward()
            if step == bad_step:
                model[0].weight.grad[0, 0] = float("nan")
            scale = scaler.get_scale()
            expected.append(
                [torch.cat([p.grad.flatten() for p in ps]).double().norm().item() / scale
                 for _, _, ps in layers_of(model)]
            )
            watch.step()
            if step != bad_step:
                scaler.step(opt)
                scaler.update()  # the scale changes in place after the step was measured
        assert len(watch._measured) > 0  # some rows still pending here
        h = watch.history
    assert h.steps.tolist() == list(range(1, 8))
    got = h["grad_norm"]
    want = torch.tensor(expected, dtype=torch.float64)
    assert torch.isnan(got[bad_step - 1, 0]) and torch.isnan(want[bad_step - 1, 0])
    finite = ~torch.isnan(want)
    assert torch.allclose(got[finite], want[finite], rtol=1e-5)
    bad = h["nonfinite"]
    assert bad[bad_step - 1, 0] == 1 and bad.nansum() == 1
