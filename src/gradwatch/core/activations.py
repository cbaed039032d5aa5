"""Activation functions by name: value, derivative and the bound on its derivative.

One table serves mean-field theory, the chain-rule bounds, the probe's saturation test and
critical initialisation, so "sigmoid" means the same thing everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

TensorFn = Callable[[torch.Tensor], torch.Tensor]

LEAKY_SLOPE = 0.01  # nn.LeakyReLU's default negative_slope


@dataclass(frozen=True)
class Activation:
    """An elementwise nonlinearity phi with its derivative.

    Attributes:
        name: short name ("tanh", "relu", ...) or the callable's ``__name__``.
        fn: phi, elementwise on tensors.
        derivative: phi', elementwise on tensors (autograd for user callables).
        max_derivative: sup |phi'(x)| over the reals; the per-layer factor in the chain-rule
            bound (sigmoid 0.25, tanh 1, ...). ``None`` when unknown (user callables).
        saturates: True for sigmoid-like functions whose derivative tends to 0 at both ends.
        piecewise_linear: True for relu-like functions (dead units rather than saturation).
    """

    name: str
    fn: TensorFn
    derivative: TensorFn
    max_derivative: float | None
    saturates: bool = False
    piecewise_linear: bool = False


def _sigmoid_d(x: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(x)
    return s * (1 - s)


def _gelu_d(x: torch.Tensor) -> torch.Tensor:
    cdf = 0.5 * (1 + torch.erf(x / math.sqrt(2)))
    pdf = torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    return cdf + x * pdf


def _silu_d(x: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(x)
    return s * (1 + x * (1 - s))


def _elu_d(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x > 0, torch.ones_like(x), torch.exp(x))


_NAMED: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("tanh", torch.tanh, lambda x: 1 - torch.tanh(x) ** 2, 1.0, saturates=True),
        Activation("sigmoid", torch.sigmoid, _sigmoid_d, 0.25, saturates=True),
        Activation(
            "erf",
            torch.erf,
            lambda x: (2 / math.sqrt(math.pi)) * torch.exp(-x * x),
            2 / math.sqrt(math.pi),
            saturates=True,
        ),
        Activation("relu", torch.relu, lambda x: (x > 0).to(x.dtype), 1.0, piecewise_linear=True),
        Activation(
            "leaky_relu",
            lambda x: torch.nn.functional.leaky_relu(x, LEAKY_SLOPE),
            lambda x: torch.where(x > 0, torch.ones_like(x), torch.full_like(x, LEAKY_SLOPE)),
            1.0,
            piecewise_linear=True,
        ),
        Activation("linear", lambda x: x, torch.ones_like, 1.0),
        # sup of GELU' and SiLU' found numerically (attained near x = 1.41 and x = 2.40).
        Activation("gelu", torch.nn.functional.gelu, _gelu_d, 1.1289),
        Activation("silu", torch.nn.functional.silu, _silu_d, 1.0998),
        Activation("elu", torch.nn.functional.elu, _elu_d, 1.0),
        Activation("softplus", torch.nn.functional.softplus, torch.sigmoid, 1.0),
        Activation(
            "hardtanh",
            torch.nn.functional.hardtanh,
            lambda x: ((x > -1) & (x < 1)).to(x.dtype),
            1.0,
            saturates=True,
            piecewise_linear=True,
        ),
    )
}

NAMES: tuple[str, ...] = tuple(_NAMED)

_MODULES: dict[type[nn.Module], str] = {
    nn.Tanh: "tanh",
    nn.Sigmoid: "sigmoid",
    nn.ReLU: "relu",
    nn.LeakyReLU: "leaky_relu",
    nn.GELU: "gelu",
    nn.SiLU: "silu",
    nn.ELU: "elu",
    nn.Softplus: "softplus",
    nn.Hardtanh: "hardtanh",
    nn.Identity: "linear",
}


def _autograd_derivative(fn: TensorFn) -> TensorFn:
    def derivative(x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(fn(xr).sum(), xr)
        return g

    return derivative


def activation(act: str | TensorFn | Activation) -> Activation:
    """Resolve an activation given by name, as a callable, or already resolved.

    Args:
        act: one of ``NAMES`` (tanh, sigmoid, erf, relu, leaky_relu, linear, gelu, silu, elu,
            softplus, hardtanh), an elementwise callable on tensors (its derivative is taken
            by autograd), or an :class:`Activation`.

    Returns:
        The :class:`Activation`.

    Example:
        >>> activation("sigmoid").max_derivative
        0.25
    """
    if isinstance(act, Activation):
        return act
    if isinstance(act, str):
        key = act.lower().replace("-", "_")
        if key not in _NAMED:
            raise ValueError(
                f"act: unknown activation {act!r}; expected one of {', '.join(NAMES)} "
                "or a callable on tensors"
            )
        return _NAMED[key]
    if isinstance(act, nn.Module):
        found = module_activation(act)
        if found is None:
            raise ValueError(
                f"act: {type(act).__name__} is not an activation module gradwatch knows"
            )
        return found
    if callable(act):
        name = getattr(act, "__name__", type(act).__name__)
        return Activation(name, act, _autograd_derivative(act), None)
    raise TypeError(f"act: expected a name or a callable, got {type(act).__name__}")


SATURATION = 0.01  # a unit is saturated when phi'(x) < 1% of max phi'


def _saturation_cut(act: Activation) -> float | None:
    """|x| beyond which phi'(x) < SATURATION * max phi', for even, tail-decaying phi'."""
    if act.name == "hardtanh":
        return 1.0
    if act.name not in ("tanh", "sigmoid", "erf") or act.max_derivative is None:
        return None
    lo, hi = 0.0, 60.0  # phi' falls monotonically in |x| for these three
    target = SATURATION * act.max_derivative
    for _ in range(100):
        mid = (lo + hi) / 2
        d = float(act.derivative(torch.tensor(mid, dtype=torch.float64)))
        lo, hi = (mid, hi) if d >= target else (lo, mid)
    return hi


_CUTS: dict[str, float | None] = {}


def saturated_share(act: Activation, x: torch.Tensor) -> torch.Tensor:
    """Share of entries of the pre-activation ``x`` where phi' < 1% of its maximum.

    A 0-d tensor on x's device (no host sync). For tanh, sigmoid, erf and hardtanh this is one
    comparison of |x| with a precomputed cut; for ReLU-like functions it is the inactive share.
    """
    if act.name not in _CUTS:
        _CUTS[act.name] = _saturation_cut(act)
    cut = _CUTS[act.name]
    wide = torch.promote_types(x.dtype, torch.float32)
    # In-place comparisons into a float buffer: about 4x faster than a bool mask + .float().
    if cut is not None:
        return x.abs().ge_(cut).mean(dtype=wide)
    if act.piecewise_linear:
        return x.clone().le_(0).mean(dtype=wide)
    d = act.derivative(x).abs()
    peak = act.max_derivative if act.max_derivative is not None else d.max()
    return d.lt_(SATURATION * peak).mean(dtype=wide)


def dead_share(act: Activation, x: torch.Tensor) -> torch.Tensor | None:
    """For ReLU-like functions, the share of units (positions past the batch dimension) that
    are inactive for every example of the batch ``x`` (B, ...); None for other functions."""
    if not act.piecewise_linear or act.saturates:
        return None
    if x.numel() == 0:
        return torch.full((), math.nan, device=x.device)  # no example: nothing to say
    # Inactive for the whole batch <=> the batch maximum is <= 0: one reduction, ~10x faster
    # on the CPU than a bool mask and all() (NaN entries make neither dead).
    peak = x.reshape(x.shape[0], -1).amax(dim=0) if x.ndim > 1 else x
    return peak.le(0).float().mean()


def _leaky(slope: float) -> Activation:
    return Activation(
        f"leaky_relu({slope:g})",
        lambda x: torch.nn.functional.leaky_relu(x, slope),
        lambda x: torch.where(x > 0, torch.ones_like(x), torch.full_like(x, slope)),
        max(1.0, abs(slope)),
        piecewise_linear=True,
    )


def module_activation(module: nn.Module) -> Activation | None:
    """The :class:`Activation` an ``nn.Module`` applies (honouring LeakyReLU's slope), or None."""
    for cls, name in _MODULES.items():
        if type(module) is cls:
            if isinstance(module, nn.LeakyReLU) and module.negative_slope != LEAKY_SLOPE:
                return _leaky(float(module.negative_slope))
            return _NAMED[name]
    return None
