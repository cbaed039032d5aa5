"""bptt_profile against closed forms, T separate autograd calls and dense Jacobian products."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from gradwatch.core.bptt import BPTTProfile, _recurrence, _unroll, bptt_profile

DT = torch.float64
T, B, D, H = 7, 3, 3, 4
Loss = Callable[[torch.Tensor, Any], torch.Tensor]


def _linear_cell(a: float | torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return lambda x_t, h: a * h + 0 * x_t.sum(-1, keepdim=True)


# ---------------------------------------------------------------- linear recurrence, exactly


@pytest.mark.parametrize(("a", "literal"), [(0.9, 5.15e-3), (1.1, 117.4)])
def test_linear_recurrence_is_a_to_the_lag(a: float, literal: float) -> None:
    n = 51  # lags 0..50
    x = torch.zeros(n, 1, 1, dtype=DT)
    prof = bptt_profile(_linear_cell(a), x, h0=torch.ones(1, 1, dtype=DT))
    by_lag = prof.grad_norm.flip(0)  # index = lag
    expect = torch.tensor([a**k for k in range(n)], dtype=DT)
    torch.testing.assert_close(by_lag, expect, rtol=1e-10, atol=0)
    assert torch.equal(prof.lag, torch.arange(n - 1, -1, -1))
    assert float(by_lag[50]) == pytest.approx(literal, rel=1e-3)  # 0.9^50, 1.1^50
    assert prof.decay_factor == pytest.approx(a, rel=1e-10)
    # spectral norm of the product of per-step factors: a^k as well
    k = prof.spectral_lags
    assert int(k[0]) == 1 and int(k[-1]) == 50 and len(k) <= 16
    torch.testing.assert_close(prof.spectral_norm, a ** k.to(DT), rtol=1e-10, atol=0)


def test_vanishing_lag() -> None:
    x = torch.zeros(100, 1, 1, dtype=DT)
    h0 = torch.ones(1, 1, dtype=DT)
    # 0.9^65 = 1.06e-3, 0.9^66 = 9.55e-4
    assert bptt_profile(_linear_cell(0.9), x, h0=h0, lags=()).vanishing_lag == 66
    assert bptt_profile(_linear_cell(1.1), x, h0=h0, lags=()).vanishing_lag is None


def test_diagonal_state_per_example_and_spectral() -> None:
    # h_t = diag(a) h_{t-1}: dL/dh_t = a^k * w_b for each example, ||prod||_2 = max(a)^k
    a = torch.tensor([0.5, 0.9, 1.1], dtype=DT)
    n = 31
    w = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]], dtype=DT)  # (B, 3)
    x = torch.zeros(n, 2, 1, dtype=DT)
    prof = bptt_profile(
        _linear_cell(a),
        x,
        lambda y, _: (y[-1] * w).sum(),
        h0=torch.ones(2, 3, dtype=DT),
        power_iters=60,
    )
    lagk = torch.arange(n, dtype=DT)[:, None]  # (n, 1)
    per_ex = (a**lagk)[:, None, :] * w  # (n, B, 3)
    expect = per_ex.pow(2).sum(-1).sqrt()  # (n, B)
    torch.testing.assert_close(prof.grad_norm_per_example.flip(0), expect, rtol=1e-10, atol=0)
    torch.testing.assert_close(
        prof.grad_norm.flip(0), expect.pow(2).sum(1).sqrt(), rtol=1e-10, atol=0
    )
    k = prof.spectral_lags.to(DT)
    torch.testing.assert_close(
        prof.spectral_norm_per_example, (1.1**k)[:, None].expand(-1, 2), rtol=1e-10, atol=0
    )


# ---------------------------------------------------------------- nn modules vs T autograd calls


MODULES: list[tuple[str, dict[str, Any], bool]] = [
    ("RNN", {"nonlinearity": "tanh"}, False),
    ("RNN", {"nonlinearity": "relu", "num_layers": 2, "batch_first": True}, True),
    ("RNN", {"nonlinearity": "tanh", "num_layers": 2, "bias": False}, True),
    ("LSTM", {"num_layers": 2, "batch_first": True}, True),
    ("LSTM", {"proj_size": 2}, False),
    ("GRU", {"num_layers": 2}, True),
    ("GRU", {"batch_first": True, "bias": False}, False),
]


def _module(kind: str, kw: dict[str, Any], seed: int = 0) -> nn.RNNBase:
    torch.manual_seed(seed)
    m: nn.RNNBase = getattr(nn, kind)(D, H, **kw).to(DT)
    with torch.no_grad():  # larger weights than the default init: a profile that varies
        for p in m.parameters():
            p.mul_(2.0)
    return m


def _inputs(m: nn.RNNBase, random_h0: bool, seed: int = 1) -> tuple[torch.Tensor, Any, Loss]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, D, generator=g, dtype=DT)
    x = x.transpose(0, 1).contiguous() if m.batch_first else x
    L, h_out = m.num_layers, (m.proj_size or m.hidden_size)
    h0: Any = None
    if random_h0:
        h0 = torch.randn(L, B, h_out, generator=g, dtype=DT)
        if isinstance(m, nn.LSTM):
            h0 = (h0, torch.randn(L, B, m.hidden_size, generator=g, dtype=DT))
    w = torch.randn(*x.shape[:2], h_out, generator=g, dtype=DT)  # output layout

    def loss_fn(y: torch.Tensor, _: Any) -> torch.Tensor:
        return (torch.sin(2 * y) * w).sum() + 0.3 * y.pow(2).sum()

    return x, h0, loss_fn


def _split_reference(
    m: nn.RNNBase, x: torch.Tensor, h0: Any, loss_fn: Loss
) -> tuple[torch.Tensor, torch.Tensor]:
    """dL/dh_t by T autograd calls through the module's OWN forward: run x_0..x_t, make the
    state after step t a leaf, run the rest of the sequence from it. Returns (T, B) per-example
    norms over the full state and (T,) norms over h only."""
    bf, lstm = m.batch_first, isinstance(m, nn.LSTM)
    xs = x.transpose(0, 1) if bf else x  # (T, B, D)

    def lay(z: torch.Tensor) -> torch.Tensor:
        return z.transpose(0, 1) if bf else z

    per_ex, hidden = [], []
    for t in range(T):
        out_p, st = m(lay(xs[: t + 1]), h0)
        leaf = tuple(s.detach().requires_grad_() for s in (st if lstm else (st,)))
        pieces = [lay(out_p)[:t].detach(), leaf[0][-1][None]]  # the output at t is top h_t
        if t < T - 1:
            out_s, _ = m(lay(xs[t + 1 :]), leaf if lstm else leaf[0])
            pieces.append(lay(out_s))
        loss = loss_fn(lay(torch.cat(pieces)), None)
        # the last c feeds no output: its gradient is 0
        grads = torch.autograd.grad(loss, leaf, materialize_grads=True)  # each (L, B, .)
        per_ex.append(sum(g.pow(2).sum((0, 2)) for g in grads).sqrt())  # type: ignore[union-attr]
        hidden.append(grads[0].pow(2).sum().sqrt())
    return torch.stack(per_ex), torch.stack(hidden)


@pytest.mark.parametrize(("kind", "kw", "random_h0"), MODULES)
def test_module_profile_equals_t_separate_autograd_calls(
    kind: str, kw: dict[str, Any], random_h0: bool
) -> None:
    m = _module(kind, kw)
    x, h0, loss_fn = _inputs(m, random_h0)
    prof = bptt_profile(m, x, loss_fn, h0=h0, lags=())
    per_ex, hidden = _split_reference(m, x, h0, loss_fn)
    assert float(per_ex.min()) > 1e-6  # a profile with content, not zeros
    torch.testing.assert_close(prof.grad_norm_per_example, per_ex, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(prof.grad_norm, per_ex.pow(2).sum(1).sqrt(), rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(prof.hidden_grad_norm, hidden, rtol=1e-10, atol=1e-14)
    if kind != "LSTM":
        assert torch.equal(prof.hidden_grad_norm, prof.grad_norm)
    else:
        assert bool((prof.hidden_grad_norm[:-1] < prof.grad_norm[:-1]).all())
    with torch.no_grad():
        assert prof.loss == pytest.approx(float(loss_fn(m(x, h0)[0], None)), rel=1e-12)


@pytest.mark.parametrize(("kind", "kw", "random_h0"), MODULES)
def test_unrolled_forward_equals_module_forward(
    kind: str, kw: dict[str, Any], random_h0: bool
) -> None:
    m = _module(kind, kw, seed=2)
    x, h0, _ = _inputs(m, random_h0, seed=3)
    rec, xs = _recurrence(m, x, h0)
    out_tm, states, _ = _unroll(rec, xs)
    out, hn = m(x, h0)
    torch.testing.assert_close(
        out_tm.transpose(0, 1) if m.batch_first else out_tm, out, rtol=1e-12, atol=1e-13
    )
    L = m.num_layers
    last = states[-1]
    if isinstance(m, nn.LSTM):
        torch.testing.assert_close(torch.stack(last[:L]), hn[0], rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(torch.stack(last[L:]), hn[1], rtol=1e-12, atol=1e-13)
    else:
        torch.testing.assert_close(torch.stack(last), hn, rtol=1e-12, atol=1e-13)


# ---------------------------------------------------------------- nn cells vs T autograd calls


@pytest.mark.parametrize("kind", ["RNNCell", "GRUCell", "LSTMCell"])
def test_cell_profile_equals_t_separate_autograd_calls(kind: str) -> None:
    torch.manual_seed(4)
    cell = getattr(nn, kind)(D, H).to(DT)
    lstm = kind == "LSTMCell"
    g = torch.Generator().manual_seed(5)
    x = torch.randn(T, B, D, generator=g, dtype=DT)
    w = torch.randn(T, B, H, generator=g, dtype=DT)

    def loss_fn(y: torch.Tensor, _: Any) -> torch.Tensor:
        return (torch.tanh(y) * w).sum()

    prof = bptt_profile(cell, x, loss_fn, lags=())
    per_ex = []
    for t in range(T):  # fresh forward, a leaf only at step t
        s: Any = (x.new_zeros(B, H), x.new_zeros(B, H)) if lstm else x.new_zeros(B, H)
        outs: list[torch.Tensor] = []
        leaf: tuple[torch.Tensor, ...] = ()
        for tau in range(T):
            s = cell(x[tau], s)
            if tau == t:
                leaf = tuple(c.detach().requires_grad_() for c in (s if lstm else (s,)))
                s = leaf if lstm else leaf[0]
            outs.append(s[0] if lstm else s)
        grads = torch.autograd.grad(loss_fn(torch.stack(outs), None), leaf, materialize_grads=True)
        per_ex.append(sum(gr.pow(2).sum(1) for gr in grads).sqrt())  # type: ignore[union-attr]
    torch.testing.assert_close(
        prof.grad_norm_per_example, torch.stack(per_ex), rtol=1e-10, atol=1e-14
    )


def test_default_loss_is_a_unit_projection_of_the_last_step() -> None:
    m = _module("GRU", {})
    x, _, _ = _inputs(m, False)
    prof = bptt_profile(m, x)
    # one layer: dL/dh_{T-1} = u for every example, ||u|| = 1
    torch.testing.assert_close(
        prof.grad_norm_per_example[-1], torch.ones(B, dtype=DT), rtol=1e-12, atol=0
    )
    again = bptt_profile(m, x)
    assert torch.equal(again.grad_norm, prof.grad_norm) and again.loss == prof.loss
    other = bptt_profile(m, x, generator=torch.Generator().manual_seed(7))
    assert other.loss != prof.loss
    # no parameter gradient is written and the module keeps its mode
    assert all(p.grad is None for p in m.parameters()) and m.training


# ---------------------------------------------------------------- spectral norms vs dense


def _dense_spectral(jacobians: list[torch.Tensor], lags: list[int]) -> torch.Tensor:
    """||J_{T-1} ... J_{T-k}||_2 for each lag k from the dense per-step Jacobians."""
    out = []
    for k in lags:
        P = torch.eye(jacobians[0].shape[0], dtype=DT)
        for t in range(len(jacobians) - k, len(jacobians)):
            P = jacobians[t] @ P
        out.append(torch.linalg.svdvals(P)[0])
    return torch.stack(out)


def test_spectral_norm_matches_dense_product_tanh_rnn() -> None:
    n = 10
    m = _module("RNN", {"nonlinearity": "tanh"})
    x = torch.randn(n, 2, D, generator=torch.Generator().manual_seed(8), dtype=DT)
    lags = list(range(n))
    prof = bptt_profile(m, x, lags=lags, power_iters=60)
    with torch.no_grad():
        h = m(x)[0]  # (n, 2, H)
    for b in range(2):
        # closed form J_t = diag(1 - h_t^2) W_hh
        w_hh = torch.as_tensor(m.weight_hh_l0).detach()
        jac = [(1 - h[t, b] ** 2)[:, None] * w_hh for t in range(n)]
        torch.testing.assert_close(
            prof.spectral_norm_per_example[:, b], _dense_spectral(jac, lags), rtol=1e-8, atol=0
        )
    assert torch.equal(prof.spectral_norm, prof.spectral_norm_per_example[:, 0])
    assert float(prof.spectral_norm[0]) == 1.0  # lag 0: the identity


def test_spectral_norm_matches_dense_product_two_layer_lstm() -> None:
    # per-step Jacobians from torch.autograd.functional.jacobian of nn.LSTM's own one-step
    # forward on the full state (h_1, h_2, c_1, c_2) of one example
    n, L = 8, 2
    m = _module("LSTM", {"num_layers": L})
    x = torch.randn(n, 2, D, generator=torch.Generator().manual_seed(9), dtype=DT)
    lags = [1, 2, 4, 7]
    prof = bptt_profile(m, x, lags=lags, power_iters=60)
    for b in range(2):

        def one_step(s: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
            hc = s.reshape(2, L, 1, H)
            _, (hn, cn) = m(x_t[None, None], (hc[0], hc[1]))
            return torch.cat([hn.flatten(), cn.flatten()])

        s = torch.zeros(2 * L * H, dtype=DT)
        jac = []
        for t in range(n):
            xt = x[t, b]
            jac.append(torch.autograd.functional.jacobian(lambda z, xt=xt: one_step(z, xt), s))
            s = one_step(s, xt).detach()
        torch.testing.assert_close(
            prof.spectral_norm_per_example[:, b], _dense_spectral(jac, lags), rtol=1e-8, atol=0
        )


def test_default_lags() -> None:
    x = torch.zeros(100, 1, 1, dtype=DT)
    h0 = torch.ones(1, 1, dtype=DT)
    k = bptt_profile(_linear_cell(0.9), x, h0=h0, power_iters=1).spectral_lags
    assert int(k[0]) == 1 and int(k[-1]) == 99 and 12 <= len(k) <= 16
    assert bool((k.diff() > 0).all())
    one = bptt_profile(_linear_cell(0.9), x[:1], h0=h0)
    assert one.spectral_lags.numel() == 0 and one.spectral_norm.shape == (0,)
    assert math.isnan(one.decay_factor)


# ---------------------------------------------------------------- errors and serialisation


def test_bad_input_names_the_argument() -> None:
    m = _module("RNN", {})
    x, _, _ = _inputs(m, False)
    with pytest.raises(ValueError, match=r"^x: expected a tensor with 3 dimensions"):
        bptt_profile(m, x[0])
    with pytest.raises(ValueError, match=r"^h0: expected shape \(1, 3, 4\)"):
        bptt_profile(m, x, h0=torch.zeros(1, B + 1, H, dtype=DT))
    with pytest.raises(ValueError, match=r"^h0: batch mismatch"):
        bptt_profile(_linear_cell(0.5), x, h0=torch.zeros(B + 1, 1, dtype=DT))
    with pytest.raises(ValueError, match=r"^x: holds 1 NaN"):
        bptt_profile(
            m,
            x.index_put(
                (torch.tensor(2), torch.tensor(1), torch.tensor(0)),
                torch.tensor(math.nan, dtype=DT),
            ),
        )
    with pytest.raises(ValueError, match=r"^x: last dimension is 2"):
        bptt_profile(m, x[..., :2])
    with pytest.raises(TypeError, match=r"^x: torch.float32 on cpu, but the RNN's weights"):
        bptt_profile(m, x.float())
    with pytest.raises(TypeError, match=r"^module: Linear\(input"):
        bptt_profile(nn.Linear(D, D).to(DT), x)
    with pytest.raises(TypeError, match=r"^module: expected nn.RNN"):
        bptt_profile(42, x)
    with pytest.raises(TypeError, match=r"^module: got the class RNN"):
        bptt_profile(nn.RNN, x)
    with pytest.raises(ValueError, match=r"^module: LSTM is bidirectional"):
        bptt_profile(nn.LSTM(D, H, bidirectional=True).to(DT), x)
    with pytest.raises(ValueError, match=r"^module: GRU has dropout=0.5"):
        bptt_profile(nn.GRU(D, H, num_layers=2, dropout=0.5).to(DT), x)
    with pytest.raises(ValueError, match=r"^h0: required for a custom cell"):
        bptt_profile(_linear_cell(0.5), x)
    with pytest.raises(ValueError, match=r"^module: the cell must return a state shaped like"):
        bptt_profile(lambda x_t, h: h[:, :1], x, h0=torch.zeros(B, 2, dtype=DT))
    with pytest.raises(ValueError, match=r"^loss_fn: must return a scalar"):
        bptt_profile(m, x, lambda y, _: y)
    with pytest.raises(ValueError, match=r"^loss_fn: the loss does not depend"):
        bptt_profile(m, x, lambda y, _: y.detach().sum())
    with pytest.raises(ValueError, match=r"^target: given but loss_fn is None"):
        bptt_profile(m, x, target=torch.zeros(1))
    with pytest.raises(ValueError, match=r"^lags\[1\]: must be between 0 and 6, got 7"):
        bptt_profile(m, x, lags=[1, 7])
    with pytest.raises(ValueError, match=r"^power_iters: must be >= 1"):
        bptt_profile(m, x, power_iters=0)


def test_json_round_trip() -> None:
    m = _module("LSTM", {"num_layers": 2})
    x, _, _ = _inputs(m, False)
    prof = bptt_profile(m, x, power_iters=3)
    back = BPTTProfile.from_json(prof.to_json())
    for name in (
        "grad_norm",
        "hidden_grad_norm",
        "grad_norm_per_example",
        "lag",
        "spectral_lags",
        "spectral_norm",
        "spectral_norm_per_example",
    ):
        assert torch.equal(getattr(back, name), getattr(prof, name)), name
    assert back.decay_factor == prof.decay_factor and back.loss == prof.loss
    assert back.vanishing_lag == prof.vanishing_lag


def test_custom_callable_and_module_cells_match_the_nn_cell() -> None:
    # the same LSTMCell seen as nn.LSTMCell, as a plain callable with a tuple state, and as a
    # custom nn.Module cell: one profile
    torch.manual_seed(10)
    cell = nn.LSTMCell(D, H).to(DT)
    x = torch.randn(T, B, D, generator=torch.Generator().manual_seed(11), dtype=DT)
    h0 = (torch.zeros(B, H, dtype=DT), torch.zeros(B, H, dtype=DT))

    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cell = cell

        def forward(self, x_t: torch.Tensor, s: tuple[torch.Tensor, ...]) -> Any:
            return self.cell(x_t, s)

    ref = bptt_profile(cell, x, lags=[1, 3])
    for other in (lambda x_t, s: cell(x_t, s), Wrapped()):
        prof = bptt_profile(other, x, h0=h0, lags=[1, 3])
        torch.testing.assert_close(prof.grad_norm, ref.grad_norm, rtol=1e-12, atol=0)
        torch.testing.assert_close(prof.hidden_grad_norm, ref.hidden_grad_norm, rtol=1e-12, atol=0)
        torch.testing.assert_close(prof.spectral_norm, ref.spectral_norm, rtol=1e-12, atol=0)
    assert bool((ref.hidden_grad_norm[:-1] < ref.grad_norm[:-1]).all())
