"""Activation statistics count only forward passes that take part in the recorded training
step: gradients enabled and the module in train() mode. A validation pass under no_grad,
inference_mode or eval() must not show up (it used to turn 0% saturated into 43-69%)."""

import contextlib

import pytest
import torch
from torch import nn

import gradwatch as gw


def _tanh_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))


def _run(validate) -> gw.RunHistory:
    """6 steps on small inputs (tanh unsaturated); a validation pass on huge inputs after each
    training forward, before backward (the worst place: between forward and step())."""
    model = _tanh_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(1)
    with gw.Watch(model, detail_every=1, recurrent_every=0) as w:
        for _ in range(6):
            loss = model(0.01 * torch.randn(32, 8, generator=g)).square().mean()
            validate(model, 100 * torch.randn(32, 8, generator=g))
            loss.backward()
            w.step()
            opt.step()
            opt.zero_grad()
    return w.history


def _no_grad(model, x):
    with torch.no_grad():
        model(x)


def _inference(model, x):
    with torch.inference_mode():
        model(x)


def _eval_mode(model, x):
    model.eval()
    model(x).sum()  # grad enabled, but the module is in eval mode
    model.train()


@pytest.mark.parametrize("validate", [_no_grad, _inference, _eval_mode],
                         ids=["no_grad", "inference_mode", "eval"])
def test_validation_passes_do_not_count(validate):
    h = _run(validate)
    assert h["saturated"].max().item() == 0.0  # the training inputs never saturate tanh


def test_a_second_training_forward_does_count():
    h = _run(lambda model, x: model(x).sum())  # grad enabled and training: part of the step
    assert h["saturated"].min().item() > 0.2


def test_recurrent_profiles_skip_validation_passes():
    torch.manual_seed(0)
    rnn = nn.RNN(3, 5, batch_first=True)
    opt = torch.optim.SGD(rnn.parameters(), lr=0.01)
    with gw.Watch(rnn, recurrent_every=1) as w:
        for _ in range(2):
            with torch.no_grad():
                rnn(torch.randn(2, 40, 3))  # a longer validation sequence
            rnn(torch.randn(2, 7, 3))[0].sum().backward()
            w.step()
            opt.step()
            opt.zero_grad()
    lengths = {len(s.profile.grad_norm) for s in w.history.recurrent}
    assert lengths == {7}, lengths


def _nothing(model, x):
    with contextlib.nullcontext():
        pass


def test_without_validation_the_statistics_are_the_same():
    ref = _run(_nothing)
    for validate in (_no_grad, _inference, _eval_mode):
        h = _run(validate)
        assert torch.equal(h["saturated"], ref["saturated"])
        assert torch.allclose(h["mean_abs"], ref["mean_abs"])
