"""Hook hygiene: after close(), after an exception in the ``with`` block and after the Watch is
garbage collected without close(), the model, its parameters, the optimizer and torch's global
hook tables are exactly as before (the user's own hooks kept), and the Watch never keeps the
model alive."""

import gc
import weakref

import pytest
import torch
from torch import nn
from torch.nn.modules import module as nn_module

from gradwatch.watch import Watch

_GLOBAL = (
    "_global_forward_hooks",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_backward_pre_hooks",
    "_global_module_registration_hooks",
    "_global_parameter_registration_hooks",
    "_global_buffer_registration_hooks",
)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(3, 6, batch_first=True)
        self.act = nn.Tanh()
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.act(self.rnn(x)[0][:, -1]))


def _hooks(model, opt):
    """Every hook table a Watch could touch, as {where: hook ids}."""
    out = {}
    for name, m in model.named_modules():
        for table in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                      "_backward_pre_hooks", "_state_dict_hooks", "_load_state_dict_pre_hooks"):
            out[f"{name}.{table}"] = tuple(getattr(m, table, {}))
    for name, p in model.named_parameters():
        out[f"{name}._backward_hooks"] = tuple(p._backward_hooks or {})
        out[f"{name}._post_accumulate_grad_hooks"] = tuple(
            getattr(p, "_post_accumulate_grad_hooks", None) or {}
        )
    out["opt.pre"] = tuple(opt._optimizer_step_pre_hooks)
    out["opt.post"] = tuple(opt._optimizer_step_post_hooks)
    for g in _GLOBAL:
        out[g] = tuple(getattr(nn_module, g, {}))
    return out


def _setup():
    torch.manual_seed(0)
    model = _Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.head.register_forward_hook(lambda m, a, o: None)  # the user's own hooks stay
    model.head.weight.register_hook(lambda g: None)
    opt.register_step_post_hook(lambda o, a, k: None)
    return model, opt


def _train(model, opt, steps=3):
    x, y = torch.randn(4, 5, 3), torch.randint(0, 2, (4,))
    for _ in range(steps):
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()


def _full_watch(model, opt, tmp_path):
    w = Watch(model, optimizer=opt, detail_every=1, recurrent_every=1)
    w.save(tmp_path / "run.jsonl")
    return w


def test_close_leaves_the_model_as_it_found_it(tmp_path):
    model, opt = _setup()
    before = _hooks(model, opt)
    with _full_watch(model, opt, tmp_path) as w:
        assert _hooks(model, opt) != before  # it did hook something
        _train(model, opt)
    assert _hooks(model, opt) == before
    w.close()  # twice is fine
    assert _hooks(model, opt) == before
    Watch(model).attach().close()  # and the model is free for a new Watch


def test_exception_in_the_with_block_removes_every_hook_and_keeps_the_record(tmp_path):
    model, opt = _setup()
    before = _hooks(model, opt)
    with pytest.raises(KeyboardInterrupt), _full_watch(model, opt, tmp_path):
        _train(model, opt)
        raise KeyboardInterrupt  # not even an Exception: Ctrl-C in a notebook
    assert _hooks(model, opt) == before
    from gradwatch.watch import load_run

    assert load_run(tmp_path / "run.jsonl").steps.tolist() == [1, 2, 3]
    Watch(model).attach().close()


def test_exception_inside_training_step_leaves_no_hook(tmp_path):
    model, opt = _setup()
    before = _hooks(model, opt)
    with pytest.raises(RuntimeError), _full_watch(model, opt, tmp_path):
        model(torch.randn(4, 5, 7))  # wrong input size: torch raises inside the hooked forward
    assert _hooks(model, opt) == before


def test_garbage_collected_watch_removes_its_hooks_and_frees_the_model(tmp_path):
    model, opt = _setup()
    before = _hooks(model, opt)
    w = _full_watch(model, opt, tmp_path).attach()
    _train(model, opt)
    probe = weakref.ref(w)
    del w
    gc.collect()
    assert probe() is None  # nothing (a hook closure, say) keeps the Watch alive
    assert _hooks(model, opt) == before
    _train(model, opt)  # training goes on without it
    Watch(model).attach().close()  # and the model can take a new Watch


def test_watch_holds_no_strong_reference_to_the_model():
    model, opt = _setup()
    w = Watch(model, optimizer=opt, detail_every=1, recurrent_every=1).attach()
    _train(model, opt)
    h = w.history
    probe = weakref.ref(model)
    del model
    gc.collect()
    assert probe() is None  # the Watch lives on; the model does not
    assert len(w.history) == len(h) == 3  # what was recorded is still readable
    with pytest.raises(RuntimeError, match="model: the watched model was garbage collected"):
        _ = w.model
    w.close()  # and closing after the model is gone is fine
