"""Non-interference: a Watch with every statistic on leaves training bit-identical.

tests/watch/test_watch.py covers MLP / CNN / LSTM x SGD / Adam; here are the other models
(GRU with inter-layer dropout, a transformer block with dropout), AdamW, a Watch that writes
a run file and is read mid-run, and one torch.compile'd model. Dropout stays on: a Watch that
drew from the global RNG (a recurrent profile run in train mode, say) would change the run.
"""

import copy

import pytest
import torch
from tiny_models import TinyLSTM
from torch import nn

from gradwatch.watch import JSONLSink, Watch, load_run

STEPS = 6


class _GRU(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(4, 8, num_layers=2, dropout=0.2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):  # (B, T, 4) -> (B, 3)
        return self.head(self.rnn(x)[0][:, -1])


class _Transformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x):  # (B, T, 16) -> (B, 3)
        return self.head(self.block(x).mean(1))


def _mlp():
    return nn.Sequential(nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 16), nn.GELU(),
                         nn.Linear(16, 3))


class _CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        return self.head(self.conv(x).flatten(1))


MODELS = {
    "gru": (_GRU, (8, 10, 4)),
    "transformer": (_Transformer, (8, 6, 16)),
    "mlp": (_mlp, (8, 16)),
    "cnn": (_CNN, (8, 1, 8, 8)),
    "lstm": (TinyLSTM, (8, 10, 4)),
}
OPTIMIZERS = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9),
    "adam": lambda ps: torch.optim.Adam(ps, lr=1e-2),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
}


def _data(shape, n=STEPS):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(*shape, generator=g), torch.randint(0, 3, (shape[0],), generator=g))
            for _ in range(n)]


def _fingerprint(model, opt):
    state = [t.clone() for s in opt.state.values() for t in s.values() if torch.is_tensor(t)]
    return [p.detach().clone() for p in model.parameters()], state


def _assert_same(a, b):
    assert len(a[0]) == len(b[0]) and len(a[1]) == len(b[1])
    for x, y in zip(a[0] + a[1], b[0] + b[1], strict=True):
        assert torch.equal(x, y), "training changed under the Watch"


def _train(base, shape, opt_name, mode, watched, tmp_path, run=None):
    model = copy.deepcopy(base)
    opt = OPTIMIZERS[opt_name](model.parameters())
    watch = None
    if watched:
        watch = Watch(
            run or model,
            optimizer=opt if mode == "hooked" else None,
            history=4,  # a small ring: the run file is flushed during training
            detail_every=1,
            recurrent_every=3,
            sinks=[JSONLSink(tmp_path / "run.jsonl")],
        ).attach()
    forward = run or model
    torch.manual_seed(123)  # dropout draws the same masks in both runs
    for i, (x, y) in enumerate(_data(shape)):
        micro = [(x[:4], y[:4]), (x[4:], y[4:])] if mode == "accumulate" else [(x, y)]
        for xm, ym in micro:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
                loss = nn.functional.cross_entropy(forward(xm), ym) / len(micro)
            loss.backward()
        if watch is not None and mode != "hooked":
            watch.step()
        opt.step()
        opt.zero_grad()
        if watch is not None and mode == "read" and i % 2:
            watch.diagnose()  # a mid-run read: host sync, recurrent profiles, run file
            watch.flush()
    if watch is not None:
        watch.close()
        assert load_run(tmp_path / "run.jsonl").steps.tolist() == list(range(1, STEPS + 1))
    return _fingerprint(model, opt)


# Every optimizer on the two new models; each other mode once per model (rotating the
# optimizer); AdamW on the models tests/watch already covers with SGD and Adam.
MODES = {"accumulate": "adamw", "bf16": "adam", "hooked": "sgd", "read": "adamw"}
CASES = [
    *[(m, o, "plain") for m in ("gru", "transformer") for o in OPTIMIZERS],
    *[(m, o, mode) for m in ("gru", "transformer") for mode, o in MODES.items()],
    *[(m, "adamw", "plain") for m in ("mlp", "cnn", "lstm")],
]


# The GRU's inter-layer dropout in train mode: the Watch declines to profile it, with a warning
# (stepping it would draw dropout masks), which is the behaviour under test.
@pytest.mark.filterwarnings("ignore:Watch. no gradient-through-time profile:RuntimeWarning")
@pytest.mark.parametrize("model_name,opt_name,mode", CASES)
def test_training_is_bit_identical_under_a_full_watch(model_name, opt_name, mode, tmp_path):
    make, shape = MODELS[model_name]
    torch.manual_seed(0)
    base = make()
    ref = _train(base, shape, opt_name, mode, False, tmp_path)
    got = _train(base, shape, opt_name, mode, True, tmp_path)
    _assert_same(ref, got)


def test_compiled_model_is_bit_identical_under_a_watch(tmp_path):
    import torch._dynamo

    torch._dynamo.reset()
    torch.manual_seed(0)
    base = _mlp()
    results = []
    for watched in (False, True):
        model = copy.deepcopy(base)
        compiled = torch.compile(model)
        results.append(_train_compiled(model, compiled, watched, tmp_path))
    _assert_same(*results)


def _train_compiled(model, compiled, watched, tmp_path):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    watch = None
    if watched:
        watch = Watch(compiled, detail_every=1, sinks=[JSONLSink(tmp_path / "c.jsonl")]).attach()
    for x, y in _data((8, 16), n=4):
        nn.functional.cross_entropy(compiled(x), y).backward()
        if watch is not None:
            watch.step()
        opt.step()
        opt.zero_grad()
    if watch is not None:
        assert len(watch.history) == 4 and watch.history["grad_norm"].isfinite().all()
        watch.close()
    return _fingerprint(model, opt)
