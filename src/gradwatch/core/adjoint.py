"""Backpropagation as the costate (adjoint) recursion of a layered system.

For x_{t+1} = f_t(x_t, theta_t), t = 0..T-1, and a loss Phi(x_T), the costates
lambda_t = dPhi/dx_t obey lambda_T = grad Phi(x_T) and lambda_t = (df_t/dx_t)^T lambda_{t+1},
and the parameter gradients are dPhi/dtheta_t = (df_t/dtheta_t)^T lambda_{t+1}. Running this
recursion one step at a time, instead of one autograd call over the whole graph, exposes every
lambda_t: its norm shows where along the depth the signal shrinks or grows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import vjp

from gradwatch._result import Result
from gradwatch.core import _checks

__all__ = ["AdjointResult", "adjoint"]

StepFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class AdjointResult(Result):
    """States, costates and parameter gradients of a layered system.

    Attributes:
        states: x_0..x_T (T+1 tensors).
        costates: lambda_0..lambda_T, lambda_t = dPhi/dx_t (each shaped like x_t).
        param_grads: dPhi/dtheta_t for t = 0..T-1 (each shaped like theta_t).
        loss: Phi(x_T).
    """

    states: tuple[torch.Tensor, ...]
    costates: tuple[torch.Tensor, ...]
    param_grads: tuple[torch.Tensor, ...]
    loss: float

    @property
    def costate_norms(self) -> torch.Tensor:
        """(T+1,) float64 ||lambda_t||, t = 0..T (Frobenius norm of each costate)."""
        return torch.stack([c.detach().double().norm().cpu() for c in self.costates])


def adjoint(
    f: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor] | Sequence[StepFn],
    x0: torch.Tensor,
    thetas: Sequence[torch.Tensor] | torch.Tensor,
    phi: Callable[[torch.Tensor], torch.Tensor],
) -> AdjointResult:
    """Gradients of Phi(x_T) by the explicit costate recursion, one vector-Jacobian product
    per step.

    The forward pass stores each state and its step's vjp (``torch.func.vjp``); the backward
    pass runs lambda_t = (df_t/dx_t)^T lambda_{t+1} and dPhi/dtheta_t =
    (df_t/dtheta_t)^T lambda_{t+1} from lambda_T = grad Phi(x_T) down to t = 0. The results
    equal one ``torch.autograd.grad`` over the whole rollout, with every intermediate
    lambda_t kept.

    Args:
        f: one callable ``f(t, x, theta) -> x_next`` used at every step, or a sequence
            (list, tuple, ``nn.ModuleList``) of T callables ``f_t(x, theta) -> x_next``.
            States may change shape from step to step.
        x0: the initial state x_0 (any shape, finite, floating).
        thetas: T parameter tensors theta_0..theta_{T-1}, or one tensor whose leading
            dimension is T.
        phi: the loss, ``phi(x_T) -> scalar tensor``.

    Returns:
        An :class:`AdjointResult` with states x_0..x_T, costates lambda_0..lambda_T
        (lambda_0 = dPhi/dx_0) and param_grads dPhi/dtheta_t.

    Raises:
        TypeError / ValueError: naming the argument, for a non-callable f or phi, a count of
            thetas that does not match f, NaN/Inf inputs or states, or a non-scalar phi.

    Example:
        >>> Q = torch.linalg.qr(torch.randn(4, 3, 3))[0]
        >>> res = adjoint(lambda t, x, q: 0.5 * q @ x, torch.randn(3), Q, lambda x: x.sum())
        >>> torch.allclose(res.costate_norms[:-1] / res.costate_norms[1:],
        ...                torch.full((4,), 0.5, dtype=torch.float64))
        True

    References:
        LeCun (1988), "A theoretical framework for back-propagation"; the discrete-time
        adjoint (costate) equations of Pontryagin's maximum principle.
    """
    x0 = _floating("x0", x0)
    params = _thetas(thetas)
    steps = _steps(f, len(params))
    _checks.callable_("phi", phi)

    states = [x0.detach()]
    vjp_fns = []
    with torch.no_grad():  # torch.func differentiates anyway; no graph to module parameters
        for t, (step, theta) in enumerate(zip(steps, params, strict=True)):
            x_next, fn = vjp(step, states[-1], theta.detach())[:2]
            if not isinstance(x_next, torch.Tensor) or not x_next.is_floating_point():
                kind = x_next.dtype if isinstance(x_next, torch.Tensor) else type(x_next).__name__
                raise TypeError(f"f: step {t} must return a floating tensor, got {kind}")
            if not bool(torch.isfinite(x_next).all()):
                raise ValueError(
                    f"f: step {t} returned NaN/Inf (the state overflowed or the map is "
                    "undefined there); the costates would be meaningless"
                )
            states.append(x_next)
            vjp_fns.append(fn)

        loss, phi_vjp = vjp(phi, states[-1])[:2]
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            got = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ValueError(f"phi: must return a scalar tensor, got {got}")
        if not bool(torch.isfinite(loss).all()):
            raise ValueError(f"phi: returned {float(loss)} at x_T; it must be finite")

        costates = [phi_vjp(torch.ones_like(loss))[0]]  # lambda_T
        grads = []
        for fn in reversed(vjp_fns):
            lam, g = fn(costates[-1])  # lambda_t, dPhi/dtheta_t
            costates.append(lam)
            grads.append(g)
    return AdjointResult(
        states=tuple(states),
        costates=tuple(reversed(costates)),
        param_grads=tuple(reversed(grads)),
        loss=float(loss),
    )


def _floating(name: str, value: Any) -> torch.Tensor:
    t = _checks.tensor(name, value)
    if not t.is_floating_point():
        raise TypeError(f"{name}: expected a floating tensor, got {t.dtype}")
    return t


def _thetas(thetas: Any) -> list[torch.Tensor]:
    if isinstance(thetas, torch.Tensor):
        if thetas.ndim == 0:
            raise ValueError("thetas: a single tensor needs a leading dimension T (one per step)")
        _floating("thetas", thetas)
        return list(thetas.unbind(0))
    if isinstance(thetas, (str, bytes)) or not isinstance(thetas, Sequence):
        raise TypeError(
            f"thetas: expected a sequence of T tensors or one tensor with leading dim T, "
            f"got {type(thetas).__name__}"
        )
    if len(thetas) == 0:
        raise ValueError("thetas: empty; need one parameter tensor per step")
    return [_floating(f"thetas[{t}]", th) for t, th in enumerate(thetas)]


def _steps(f: Any, T: int) -> list[StepFn]:
    if isinstance(f, (list, tuple, nn.ModuleList)):
        if len(f) != T:
            raise ValueError(
                f"thetas: got {T} parameter tensors for the {len(f)} step functions in f; "
                "they must match one to one"
            )
        return [_checks.callable_(f"f[{t}]", ft) for t, ft in enumerate(f)]
    _checks.callable_("f", f)

    def at(t: int) -> StepFn:
        return lambda x, th: f(t, x, th)

    return [at(t) for t in range(T)]
