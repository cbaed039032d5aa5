"""The costate recursion against autograd over the whole rollout and finite differences."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from gradwatch.core.adjoint import AdjointResult, adjoint

DT = torch.float64
WIDTHS = (3, 5, 4, 2)  # x_0 .. x_T widths of a layered tanh net, T = 3


def _layer(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    # theta (out, in + 1): weights and bias
    return torch.tanh(theta[:, :-1] @ x + theta[:, -1])


def _phi(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (x * x).sum() + torch.sin(x).sum()


def _net(seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(WIDTHS[0], generator=g, dtype=DT)
    thetas = [
        torch.randn(o, i + 1, generator=g, dtype=DT) / math.sqrt(i)
        for i, o in itertools.pairwise(WIDTHS)
    ]
    return x0, thetas


def _rollout_loss(x0: torch.Tensor, thetas: list[torch.Tensor]) -> torch.Tensor:
    x = x0
    for th in thetas:
        x = _layer(x, th)
    return _phi(x)


def test_equals_autograd_over_the_rollout() -> None:
    x0, thetas = _net()
    res = adjoint([_layer] * len(thetas), x0, thetas, _phi)

    x0r = x0.clone().requires_grad_()
    thr = [th.clone().requires_grad_() for th in thetas]
    xs = [x0r]
    for th in thr:
        xs.append(_layer(xs[-1], th))
    loss = _phi(xs[-1])
    ref = torch.autograd.grad(loss, [*xs, *thr])  # every lambda_t, then every dPhi/dtheta_t
    T = len(thetas)
    assert len(res.states) == len(res.costates) == T + 1 and len(res.param_grads) == T
    for t in range(T + 1):
        torch.testing.assert_close(res.states[t], xs[t].detach(), rtol=0, atol=1e-15)
        torch.testing.assert_close(res.costates[t], ref[t], rtol=1e-12, atol=1e-14)
    for t in range(T):
        torch.testing.assert_close(res.param_grads[t], ref[T + 1 + t], rtol=1e-12, atol=1e-14)
    assert res.loss == pytest.approx(float(loss.detach()), rel=1e-15)


def test_single_step_function_and_stacked_thetas() -> None:
    # f(t, x, theta) with one (T, H, H) tensor; t enters the map (a time-dependent gain)
    g = torch.Generator().manual_seed(1)
    T, H = 6, 4
    W = torch.randn(T, H, H, generator=g, dtype=DT) / 2
    x0 = torch.randn(H, generator=g, dtype=DT)

    def f(t: int, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.sin(w @ x) * (1 + 0.1 * t)

    res = adjoint(f, x0, W, _phi)
    x0r, Wr = x0.clone().requires_grad_(), W.clone().requires_grad_()
    x = x0r
    for t in range(T):
        x = f(t, x, Wr[t])
    gx, gw = torch.autograd.grad(_phi(x), [x0r, Wr])
    torch.testing.assert_close(res.costates[0], gx, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(torch.stack(res.param_grads), gw, rtol=1e-12, atol=1e-14)


def test_equals_central_finite_differences() -> None:
    x0, thetas = _net(seed=2)
    res = adjoint([_layer] * len(thetas), x0, thetas, _phi)
    eps = 1e-6

    def fd(perturb: torch.Tensor) -> torch.Tensor:
        # central differences of the loss along each unit direction of `perturb` (in place)
        out = torch.empty(perturb.numel(), dtype=DT)
        flat = perturb.view(-1)
        for i in range(flat.numel()):
            old = float(flat[i])
            flat[i] = old + eps
            up = float(_rollout_loss(x0, thetas))
            flat[i] = old - eps
            down = float(_rollout_loss(x0, thetas))
            flat[i] = old
            out[i] = (up - down) / (2 * eps)
        return out.view_as(perturb)

    torch.testing.assert_close(res.costates[0], fd(x0), rtol=0, atol=1e-6)
    for t, th in enumerate(thetas):
        torch.testing.assert_close(res.param_grads[t], fd(th), rtol=0, atol=1e-6)


def test_contractive_linear_system_shrinks_costates_by_its_factor() -> None:
    # x_{t+1} = a Q_t x_t with Q_t orthogonal: lambda_t = a Q_t^T lambda_{t+1}, so each step
    # back multiplies ||lambda|| by exactly a.
    g = torch.Generator().manual_seed(3)
    T, H, a = 20, 5, 0.8
    Q = torch.linalg.qr(torch.randn(T, H, H, generator=g, dtype=DT))[0]  # (T, H, H)
    x0 = torch.randn(H, generator=g, dtype=DT)
    res = adjoint(lambda t, x, q: a * q @ x, x0, Q, _phi)
    n = res.costate_norms  # (T+1,)
    assert n.shape == (T + 1,)
    torch.testing.assert_close(n[:-1] / n[1:], torch.full((T,), a, dtype=DT), rtol=1e-12, atol=0)
    assert float(n[0] / n[-1]) == pytest.approx(0.8**20, rel=1e-11)
    assert 0.8**20 == pytest.approx(1.153e-2, rel=1e-3)  # the literal factor over 20 steps


def test_json_round_trip() -> None:
    x0, thetas = _net()
    res = adjoint([_layer] * len(thetas), x0, thetas, _phi)
    back = AdjointResult.from_json(res.to_json())
    assert back.loss == res.loss
    for name in ("states", "costates", "param_grads"):
        a, b = getattr(res, name), getattr(back, name)
        assert len(a) == len(b) and all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert torch.equal(back.costate_norms, res.costate_norms)


def test_bad_input_names_the_argument() -> None:
    x0, thetas = _net()
    fs = [_layer] * len(thetas)
    with pytest.raises(ValueError, match=r"^thetas: got 3 parameter tensors for the 2 step"):
        adjoint(fs[:2], x0, thetas, _phi)
    with pytest.raises(ValueError, match=r"^phi: must return a scalar"):
        adjoint(fs, x0, thetas, lambda x: x)
    with pytest.raises(TypeError, match=r"^f: expected a callable"):
        adjoint(42, x0, thetas, _phi)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^f\[1\]: expected a callable"):
        adjoint([_layer, 3, _layer], x0, thetas, _phi)  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"^phi: expected a callable"):
        adjoint(fs, x0, thetas, "sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^x0: holds 1 NaN"):
        adjoint(fs, x0.index_fill(0, torch.tensor([1]), math.nan), thetas, _phi)
    bad = [th.clone() for th in thetas]
    bad[1][0, 0] = math.inf
    with pytest.raises(ValueError, match=r"^thetas\[1\]: holds 1 NaN/Inf"):
        adjoint(fs, x0, bad, _phi)
    with pytest.raises(TypeError, match=r"^thetas\[0\]: expected a torch.Tensor"):
        adjoint(fs, x0, [1.0, *thetas[1:]], _phi)  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"^thetas: empty"):
        adjoint([], x0, [], _phi)
    with pytest.raises(ValueError, match=r"^f: step 1 returned NaN/Inf"):
        adjoint(lambda t, x, th: x / (1 - t), x0, torch.zeros(3, 1, dtype=DT), _phi)
