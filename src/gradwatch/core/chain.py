"""The chain rule as a product of per-layer factors, kept in log space.

Backpropagation through L layers multiplies L Jacobians; bounding each by
``max|phi'| * ||W||`` bounds the gradient by a product of scalars. Products such as
0.25^600 underflow float64 to 0, so they are kept as (sign, log10 |product|).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from gradwatch._result import Result
from gradwatch.core import _checks
from gradwatch.core.activations import TensorFn, activation

__all__ = ["ChainProduct", "chain_bound", "chain_product", "derivative_bound"]


@dataclass(frozen=True)
class ChainProduct(Result):
    """A product of factors as ``sign * 10**log10``.

    Attributes:
        log10: log10 of the product's magnitude (``-inf`` when a factor is 0).
        sign: +1, -1, or 0 when a factor is 0.
        n_factors: how many factors were multiplied.
    """

    log10: float
    sign: int
    n_factors: int

    @property
    def value(self) -> float:
        """The product as a float; 0.0 or inf where float64 cannot hold it (use ``log10``)."""
        if self.sign == 0:
            return 0.0
        try:
            return float(self.sign * 10.0**self.log10)
        except OverflowError:
            return self.sign * math.inf

    @property
    def per_factor(self) -> float:
        """The geometric mean factor: |product|^(1/n)."""
        return 10.0 ** (self.log10 / self.n_factors) if self.n_factors else 1.0

    def __str__(self) -> str:
        # Format from the logarithm so 0.25**600 prints as 5.81e-362, not 0.
        if self.sign == 0:
            return "0"
        exp = math.floor(self.log10)
        mant = 10.0 ** (self.log10 - exp)
        if mant >= 9.995:  # rounding would print 10.00
            mant, exp = mant / 10, exp + 1
        return f"{'-' if self.sign < 0 else ''}{mant:.2f}e{exp:+03d}"


def chain_product(factors: Iterable[float] | torch.Tensor) -> ChainProduct:
    """Multiply factors exactly in log space.

    Args:
        factors: per-layer (or per-step) multipliers, e.g. activation derivatives or
            measured per-layer gradient ratios. Must be finite.

    Returns:
        The :class:`ChainProduct`; ``str()`` of it prints the value even far below float64's
        range.

    Example:
        >>> str(chain_product([0.25] * 30))
        '8.67e-19'
        >>> round(chain_product([0.25] * 600).log10, 3)
        -361.236

    Paper: Hochreiter 1991 (Untersuchungen zu dynamischen neuronalen Netzen) and Bengio,
    Simard & Frasconi 1994: the gradient through L layers is a product of L factors.
    """
    if isinstance(factors, torch.Tensor):
        _checks.finite("factors", factors)
        values = [float(v) for v in factors.detach().flatten().tolist()]
    else:
        try:
            values = [_checks.number("factors[i]", f) for f in factors]
        except TypeError:
            raise TypeError("factors: expected real numbers or a tensor of them") from None
    sign = 1
    logs = []
    for v in values:
        if v == 0:
            return ChainProduct(-math.inf, 0, len(values))
        sign *= 1 if v > 0 else -1
        logs.append(math.log10(abs(v)))
    return ChainProduct(math.fsum(logs), sign, len(values))


def derivative_bound(act: str | TensorFn) -> float:
    """The largest value of |phi'(x)|: the activation's share of each layer's factor.

    Args:
        act: an activation name ("sigmoid", "tanh", "relu", ...) or a callable; for a callable
            the bound is found numerically on a grid over [-20, 20].

    Returns:
        sup |phi'| (sigmoid 0.25, tanh 1, relu 1, erf 2/sqrt(pi), gelu 1.129, silu 1.100).

    Example:
        >>> derivative_bound("sigmoid")
        0.25

    Paper: Hochreiter 1991; the 0.25 bound of the logistic function is what makes 30 sigmoid
    layers scale the gradient by at most 0.25^30.
    """
    a = activation(act)
    if a.max_derivative is not None:
        return a.max_derivative
    grid = torch.linspace(-20.0, 20.0, 400_001, dtype=torch.float64)
    d = a.derivative(grid)
    _checks.finite("act (its derivative)", d)
    return float(d.abs().max())


def chain_bound(act: str | TensorFn, depth: int, weight_gain: float = 1.0) -> ChainProduct:
    """Upper bound on the gradient's shrinkage through ``depth`` layers: (max|phi'| * gain)^depth.

    Args:
        act: activation name or callable.
        depth: number of layers (or time steps).
        weight_gain: bound on each layer's weight Jacobian, e.g. its spectral norm (1 for
            orthogonal weights).

    Returns:
        The bound as a :class:`ChainProduct`.

    Example:
        >>> str(chain_bound("sigmoid", 30))
        '8.67e-19'

    Paper: Bengio, Simard & Frasconi 1994; Pascanu, Mikolov & Bengio 2013 (sigma_max(W) < 1/gamma).
    """
    n = _checks.count("depth", depth, low=0)
    gain = _checks.number("weight_gain", weight_gain, positive=True)
    return chain_product([derivative_bound(act) * gain] * n)
