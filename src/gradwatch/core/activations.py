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
        saturates: True when phi' tends to 0 on both sides (sigmoid, tanh, hardtanh, ReLU6):
            its units saturate.
        piecewise_linear: True for ReLU-like functions whose x <= 0 side is flat or nearly so
            (ReLU, leaky ReLU, ReLU^2): their units are inactive there (and dead when inactive
            for a whole batch) rather than saturated. Hardtanh is piecewise linear and
            saturates.
        live: for piecewise functions that saturate, the open interval outside which phi' is
            0 (hardtanh (-1, 1), ReLU6 (0, 6)); ``None`` otherwise.
    """

    name: str
    fn: TensorFn
    derivative: TensorFn
    max_derivative: float | None
    saturates: bool = False
    piecewise_linear: bool = False
    live: tuple[float, float] | None = None


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


_SELU_A, _SELU_L = 1.6732632423543772, 1.0507009873554805  # Klambauer et al. 2017


def _interval(lo: float, hi: float) -> TensorFn:
    return lambda x: ((x > lo) & (x < hi)).to(x.dtype)


def _quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


def _relu2(x: torch.Tensor) -> torch.Tensor:
    return torch.relu(x).square()


def _autograd_derivative(fn: TensorFn) -> TensorFn:
    def derivative(x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(fn(xr).sum(), xr)
        return g

    return derivative


# Activations whose derivative has no short closed form here take it by autograd.
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
            _interval(-1.0, 1.0),
            1.0,
            saturates=True,
            piecewise_linear=True,
            live=(-1.0, 1.0),
        ),
        # sups found numerically on a fine grid (as GELU's and SiLU's above)
        Activation(
            "gelu_tanh",
            lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
            _autograd_derivative(lambda x: torch.nn.functional.gelu(x, approximate="tanh")),
            1.1290,
        ),
        Activation("quick_gelu", _quick_gelu, _autograd_derivative(_quick_gelu), 1.0998),
        Activation(
            "mish",
            torch.nn.functional.mish,
            _autograd_derivative(torch.nn.functional.mish),
            1.0885,
        ),
        Activation(
            "selu",
            torch.nn.functional.selu,
            lambda x: _SELU_L * torch.where(x > 0, torch.ones_like(x), _SELU_A * torch.exp(x)),
            _SELU_L * _SELU_A,
        ),
        Activation(
            "relu6",
            torch.nn.functional.relu6,
            _interval(0.0, 6.0),
            1.0,
            saturates=True,
            piecewise_linear=True,
            live=(0.0, 6.0),
        ),
        Activation(
            "hardsigmoid",
            torch.nn.functional.hardsigmoid,
            lambda x: _interval(-3.0, 3.0)(x) / 6,
            1 / 6,
            saturates=True,
            piecewise_linear=True,
            live=(-3.0, 3.0),
        ),
        Activation(
            "hardswish",
            torch.nn.functional.hardswish,
            _autograd_derivative(torch.nn.functional.hardswish),
            1.5,
        ),
        Activation(
            "softsign",
            torch.nn.functional.softsign,
            lambda x: 1 / (1 + x.abs()) ** 2,
            1.0,
            saturates=True,
        ),
        Activation(
            "relu2", _relu2, lambda x: 2 * torch.relu(x), None, piecewise_linear=True
        ),
    )
}

NAMES: tuple[str, ...] = tuple(_NAMED)


def _leaky(slope: float) -> Activation:
    return Activation(
        f"leaky_relu({slope:g})",
        lambda x: torch.nn.functional.leaky_relu(x, slope),
        lambda x: torch.where(x > 0, torch.ones_like(x), torch.full_like(x, slope)),
        max(1.0, abs(slope)),
        piecewise_linear=True,
    )


def _elu(alpha: float) -> Activation:
    return Activation(
        f"elu({alpha:g})",
        lambda x: torch.nn.functional.elu(x, alpha),
        lambda x: torch.where(x > 0, torch.ones_like(x), alpha * torch.exp(x)),
        max(1.0, abs(alpha)),
    )


def _hardtanh(lo: float, hi: float) -> Activation:
    return Activation(
        f"hardtanh({lo:g},{hi:g})",
        lambda x: torch.nn.functional.hardtanh(x, lo, hi),
        _interval(lo, hi),
        1.0,
        saturates=True,
        piecewise_linear=True,
        live=(lo, hi),
    )


def _softplus(beta: float) -> Activation:
    return Activation(
        f"softplus({beta:g})",
        lambda x: torch.nn.functional.softplus(x, beta),
        lambda x: torch.sigmoid(beta * x),
        1.0,
    )


def _clipped_gelu(lo: float, hi: float) -> Activation:
    def fn(x: torch.Tensor) -> torch.Tensor:
        return torch.clip(torch.nn.functional.gelu(x), lo, hi)

    return Activation(f"gelu_clipped({lo:g},{hi:g})", fn, _autograd_derivative(fn), 1.1289,
                      saturates=True)


def _from_module(m: nn.Module) -> Activation | None:
    """The Activation of a module of a class gradwatch knows, with its arguments read."""
    name = _MODULES.get(type(m))
    if name is not None:
        return _NAMED[name]
    if type(m) is nn.LeakyReLU:
        s = float(m.negative_slope)
        return _NAMED["leaky_relu"] if s == LEAKY_SLOPE else _leaky(s)
    if type(m) is nn.GELU:
        return _NAMED["gelu_tanh" if m.approximate == "tanh" else "gelu"]
    if type(m) is nn.ELU:
        return _NAMED["elu"] if m.alpha == 1.0 else _elu(float(m.alpha))
    if type(m) is nn.CELU:  # celu(x, a) = elu(x / a) * a: the same derivative as elu at a = 1
        return _NAMED["elu"] if m.alpha == 1.0 else None
    if type(m) is nn.Softplus:
        return _NAMED["softplus"] if m.beta == 1 else _softplus(float(m.beta))
    if type(m) is nn.Hardtanh:
        lo, hi = float(m.min_val), float(m.max_val)
        return _NAMED["hardtanh"] if (lo, hi) == (-1.0, 1.0) else _hardtanh(lo, hi)
    if type(m) is nn.ReLU6:
        return _NAMED["relu6"]
    return _foreign(m)


_MODULES: dict[type[nn.Module], str] = {
    nn.Tanh: "tanh",
    nn.Sigmoid: "sigmoid",
    nn.ReLU: "relu",
    nn.SiLU: "silu",
    nn.Identity: "linear",
    nn.Mish: "mish",
    nn.SELU: "selu",
    nn.Hardsigmoid: "hardsigmoid",
    nn.Hardswish: "hardswish",
    nn.Softsign: "softsign",
}

# Hugging Face transformers' activation classes (transformers/activations.py), by class name:
# each is checked against what the module computes before it is trusted (below).
_TRANSFORMERS: dict[str, str] = {
    "GELUActivation": "gelu",
    "NewGELUActivation": "gelu_tanh",
    "FastGELUActivation": "gelu_tanh",
    "GELUTanh": "gelu_tanh",
    "PytorchGELUTanh": "gelu_tanh",
    "AccurateGELUActivation": "gelu_tanh",
    "QuickGELUActivation": "quick_gelu",
    "SiLUActivation": "silu",
    "MishActivation": "mish",
    "LinearActivation": "linear",
    "ReLUSquaredActivation": "relu2",
}
_GRID = torch.linspace(-6.0, 6.0, 121, dtype=torch.float64)  # where "computes phi" is checked


def _computes(m: nn.Module, act: Activation) -> bool:
    """Whether module ``m`` computes ``act.fn`` (to 1e-3: approximations of GELU agree)."""
    try:
        with torch.no_grad():
            got = m(_GRID.clone())
    except Exception:  # a module that takes no 1-D float64 input is not this activation
        return False
    ref = act.fn(_GRID)
    return (
        isinstance(got, torch.Tensor)
        and got.shape == ref.shape
        and bool(torch.allclose(got.double(), ref, rtol=1e-3, atol=1e-3))
    )


def _foreign(m: nn.Module) -> Activation | None:
    """A transformers activation module: known by class, trusted only if it computes it."""
    cls = type(m)
    if not cls.__module__.startswith("transformers."):
        return None
    if cls.__name__ == "ClippedGELUActivation":
        lo, hi = (float(getattr(m, k)) for k in ("min", "max"))
        act = _clipped_gelu(lo, hi)
    elif cls.__name__ in _TRANSFORMERS:
        act = _NAMED[_TRANSFORMERS[cls.__name__]]
    else:
        return None
    if any(True for _ in m.parameters()) or any(True for _ in m.buffers()):
        return None
    return act if _computes(m, act) else None


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


SATURATION = 0.01  # a unit is saturated when |phi'(x)| < 1% of max |phi'|


def _saturation_cut(act: Activation) -> float | None:
    """|x| beyond which phi'(x) < SATURATION * max phi', for even, tail-decaying phi'."""
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
    """Share of entries of the pre-activation ``x`` where |phi'| < 1% of its maximum.

    A 0-d tensor on x's device (no host sync); NaN for ReLU-like functions, whose flat side is
    inactivity (:func:`inactive_share`), not saturation. For tanh, sigmoid and erf this
    is one comparison of |x| with a precomputed cut, for hardtanh-like functions one with
    their live interval; for the others (GELU, SiLU, ELU, softplus: flat on one side only) a
    pass over phi'.
    """
    wide = torch.promote_types(x.dtype, torch.float32)
    if act.piecewise_linear and not act.saturates:
        return torch.full((), math.nan, dtype=wide, device=x.device)
    if act.live is not None:
        lo, hi = act.live
        return ((x <= lo) | (x >= hi)).mean(dtype=wide)
    if act.name not in _CUTS:
        _CUTS[act.name] = _saturation_cut(act)
    cut = _CUTS[act.name]
    # In-place comparisons into a float buffer: about 4x faster than a bool mask + .float().
    if cut is not None:
        return x.abs().ge_(cut).mean(dtype=wide)
    d = act.derivative(x).abs()
    peak = act.max_derivative if act.max_derivative is not None else d.max()
    return d.lt_(SATURATION * peak).mean(dtype=wide)


def inactive_share(act: Activation, x: torch.Tensor) -> torch.Tensor | None:
    """For ReLU-like functions, the share of entries of ``x`` on the flat side (x <= 0); a 0-d
    tensor on x's device, ``None`` for other functions. About half in a healthy ReLU net."""
    if not act.piecewise_linear or act.saturates:
        return None
    return x.clone().le_(0).mean(dtype=torch.promote_types(x.dtype, torch.float32))


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


def module_activation(module: nn.Module) -> Activation | None:
    """The :class:`Activation` an ``nn.Module`` applies, or None.

    Known by class: torch's activation modules (their arguments read: LeakyReLU's slope,
    ELU's alpha, GELU's approximation, Hardtanh's range, ...) and, when the model uses them,
    Hugging Face transformers' activation classes (GELUActivation, NewGELUActivation,
    QuickGELUActivation, SiLUActivation, ...), each of these checked against what it computes.
    """
    return _from_module(module)
