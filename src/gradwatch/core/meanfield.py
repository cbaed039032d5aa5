"""Mean-field theory of deep random networks: q*, chi1, depth scales and the edge of chaos.

A fully connected network with weights W_ij ~ N(0, sigma_w^2 / fan_in) and biases
b_i ~ N(0, sigma_b^2) propagates, in the wide limit, the length q of its pre-activations by the
q-map and the correlation c of two inputs by the c-map (Poole et al. 2016):

    q -> V(q) = sigma_w^2 E[phi(sqrt(q) z)^2] + sigma_b^2,            z ~ N(0, 1)
    c -> C(c) = (sigma_w^2 E[phi(u1) phi(u2)] + sigma_b^2) / q*,      (u1, u2) ~ N(0, q* R_c)

with R_c the 2x2 correlation matrix. Squared gradients shrink or grow per layer by
chi1 = sigma_w^2 E[phi'(sqrt(q*) z)^2] (Schoenholz et al. 2017); chi1 = 1 is the edge of chaos.

Gaussian integrals are composite Gauss-Legendre rules whose panel edges are the union of a grid
in z (it resolves the Gaussian) and a geometric grid in x = sqrt(q) z around 0 (it resolves the
activation; the kinks at 0 and +-1 are edges), so they stay accurate for tiny and huge q, where
a fixed Gauss-Hermite rule misses the narrow peak of phi'(sqrt(q) z)^2. E[phi(u1) phi(u2)] is
nested: u1 = sqrt(q) z1, and u2 given u1 is N(c u1, q (1 - c^2)). ReLU-like activations
(Cho & Saul 2009's arc-cosine kernel) and erf (Williams 1997) have closed forms, which
``method="auto"`` uses and the tests check the numeric path against.

Where the fixed point degenerates: q* is the limit of the q-map iterated from ``q0`` (default 1)
-- 0 when the iterates shrink to 0 (tanh with sigma_b = 0, sigma_w <= 1), inf when they grow
without bound (relu with sigma_w^2 > 2). There the per-layer factors are their limits
q -> 0+ / q -> inf, and the c-map is the limit of the normalised map
c -> (sigma_w^2 E[phi(u1) phi(u2)] + sigma_b^2) / (sigma_w^2 E[phi(u)^2] + sigma_b^2).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from gradwatch._result import Result
from gradwatch.core import _checks
from gradwatch.core.activations import Activation, TensorFn, activation

__all__ = [
    "DepthScales",
    "PhaseDiagram",
    "chi1",
    "critical_sigma_w",
    "depth_scales",
    "phase_diagram",
    "qstar",
]

METHODS = ("auto", "quadrature")
Q_FLOOR = 1e-14  # fixed points below this are reported as 0: V(q) - q is below rounding there
Q_CAP = 1e30  # q-map iterates past this count as diverging: q* = inf
CRIT_TOL = 1e-12  # |chi - 1| <= this counts as critical: depth scale inf
SIGMA_W_MAX = 100.0  # critical_sigma_w searches (0, SIGMA_W_MAX] unless told otherwise

_F64 = torch.float64
_Q_TINY = 1e-200  # where the limits q -> 0+ are evaluated


@dataclass(frozen=True)
class DepthScales(Result):
    """Mean-field fixed points, per-layer factors and depth scales of (act, sigma_w, sigma_b).

    Attributes:
        act: the activation's name.
        sigma_w: weight scale: W_ij ~ N(0, sigma_w^2 / fan_in).
        sigma_b: bias standard deviation.
        q_star: fixed point of the q-map reached from ``q0``; 0 or inf where the iterates
            shrink to 0 or grow without bound.
        c_star: stable fixed point of the correlation map (1 in the ordered phase).
        chi1: sigma_w^2 E[phi'(sqrt(q*) z)^2], the per-layer factor of squared gradient norms.
        chi_c: slope of the c-map at c* (= chi1 when c* = 1 and 0 < q* < inf; 1 where q* is 0
            or inf, see :func:`depth_scales`).
        xi_q: -1/ln(chi_q), chi_q the slope of the q-map at q*: the depth over which a
            signal's length relaxes to q*.
        xi_c: -1/ln(chi_c): the depth over which two inputs' correlation relaxes to c*;
            ``math.inf`` at criticality.
        xi_grad: -1/ln(chi1), signed: squared gradient norms scale like exp(-L / xi_grad),
            i.e. like chi1^L; negative when gradients grow with depth, inf at criticality.
    """

    act: str
    sigma_w: float
    sigma_b: float
    q_star: float
    c_star: float
    chi1: float
    chi_c: float
    xi_q: float
    xi_c: float
    xi_grad: float


@dataclass(frozen=True)
class PhaseDiagram(Result):
    """chi1, q* and xi_c over a (sigma_b, sigma_w) grid, with the critical line.

    Attributes:
        act: the activation's name.
        sigma_w: the sigma_w grid, shape (W,).
        sigma_b: the sigma_b grid, shape (B,).
        chi1: per-layer squared-gradient factor, shape (B, W); > 1 is the chaotic phase.
        q_star: fixed point of the q-map, shape (B, W).
        xi_c: correlation depth scale, shape (B, W); inf on the critical line.
        critical_sigma_w: for each sigma_b the sigma_w where chi1 = 1, shape (B,); NaN where
            none exists in (0, max(100, max sigma_w)].
    """

    act: str
    sigma_w: torch.Tensor  # (W,)
    sigma_b: torch.Tensor  # (B,)
    chi1: torch.Tensor  # (B, W)
    q_star: torch.Tensor  # (B, W)
    xi_c: torch.Tensor  # (B, W)
    critical_sigma_w: torch.Tensor  # (B,)


# ---------------------------------------------------------------------------------------------
# Public API


def qstar(
    act: Any, sigma_w: float, sigma_b: float = 0.0, *, q0: float = 1.0, method: str = "auto"
) -> float:
    """The fixed point q* of the length map q -> sigma_w^2 E[phi(sqrt(q) z)^2] + sigma_b^2.

    Found by bracketing and root-finding on the map, never by iterating it: q* is the fixed
    point that the iterates started from ``q0`` converge to. It is exactly 0 when they shrink
    to 0 (tanh with sigma_b = 0 and sigma_w <= 1; fixed points below ``Q_FLOOR`` = 1e-14 are
    reported as 0) and ``math.inf`` when they grow without bound (relu with sigma_w > sqrt(2)).
    For relu with sigma_b = 0 and sigma_w = sqrt(2) every q is fixed and ``q0`` is returned.

    Args:
        act: activation name (tanh, relu, leaky_relu, sigmoid, erf, gelu, silu, linear, ...),
            an elementwise callable on tensors, or an activation nn.Module.
        sigma_w: weight scale, > 0: W_ij ~ N(0, sigma_w^2 / fan_in).
        sigma_b: bias standard deviation, >= 0.
        q0: the input length the iterates start from, > 0. It matters only where the map has
            several attracting fixed points (e.g. gelu with sigma_b = 0: 0 and inf).
        method: "auto" uses closed forms where they exist (relu-like, erf); "quadrature"
            always integrates numerically.

    Returns:
        q* (0.0 and inf included).

    Example:
        >>> qstar("relu", 1.0, 1.0)  # sigma_b^2 / (1 - sigma_w^2 / 2)
        2.0
        >>> qstar("tanh", 0.9)
        0.0

    Paper: Poole et al. 2016, "Exponential expressivity in deep neural networks through
    transient chaos", eq. (3).
    """
    kern, sw, sb, q = _setup(act, sigma_w, sigma_b, q0, method)
    return float(_solve_q(kern, sw * sw, sb * sb, q)[0])


def chi1(
    act: Any, sigma_w: float, sigma_b: float = 0.0, *, q0: float = 1.0, method: str = "auto"
) -> float:
    """chi1 = sigma_w^2 E[phi'(sqrt(q*) z)^2]: the mean per-layer factor of squared gradients.

    chi1 < 1: gradients vanish with depth (ordered phase); chi1 > 1: they explode (chaotic
    phase). Where q* is 0 or inf its limit is taken: sigma_w^2 phi'(0)^2 for smooth phi at
    q* = 0, and sigma_w^2 / 2 for relu whatever q* is.

    Args:
        act: activation name, elementwise callable or activation module.
        sigma_w: weight scale, > 0.
        sigma_b: bias standard deviation, >= 0.
        q0: the input length the q-map starts from (see :func:`qstar`).
        method: "auto" (closed forms where they exist) or "quadrature".

    Returns:
        chi1.

    Example:
        >>> chi1("relu", 2.0)
        2.0
        >>> chi1("tanh", 1.0)
        1.0

    Paper: Schoenholz et al. 2017, "Deep Information Propagation", eq. (5);
    Poole et al. 2016, eq. (7).
    """
    kern, sw, sb, q = _setup(act, sigma_w, sigma_b, q0, method)
    return float(_analyse(kern, sw, sb, q, with_c=False).chi1[0])


def critical_sigma_w(
    act: Any,
    sigma_b: float = 0.0,
    *,
    sigma_w_max: float = SIGMA_W_MAX,
    method: str = "auto",
) -> float:
    """The edge of chaos: the smallest sigma_w > 0 with chi1(sigma_w, sigma_b) = 1.

    Exact where the theory is: sqrt(2) for relu (any sigma_b), 1 for linear, 1 for tanh with
    sigma_b = 0 (where q* = 0). chi1 is scanned on a grid, then root-found, and the root is
    kept only where chi1 crosses 1 continuously.

    Args:
        act: activation name, elementwise callable or activation module.
        sigma_b: bias standard deviation, >= 0.
        sigma_w_max: the search range is (0, sigma_w_max].
        method: "auto" (closed forms where they exist) or "quadrature".

    Returns:
        The critical sigma_w.

    Raises:
        ValueError: chi1 stays below 1 over (0, sigma_w_max] (e.g. a constant activation), or
            it jumps across 1 where q* leaps to inf (gelu and silu with sigma_b < ~0.5); the
            message says which.

    Example:
        >>> round(critical_sigma_w("relu"), 12)
        1.414213562373
        >>> critical_sigma_w("tanh")
        1.0

    Paper: Schoenholz et al. 2017, "Deep Information Propagation", section 3 (chi1 = 1).
    """
    a = activation(act)
    sb = _checks.number("sigma_b", sigma_b, nonnegative=True)
    top = _checks.number("sigma_w_max", sigma_w_max, positive=True)
    kern = _kernel(a, _checks.choice("method", method, METHODS))
    crit = float(_critical(kern, _t(sb), top)[0])
    if math.isnan(crit):
        reach = float(_analyse(kern, _t(top), _t(sb), _t(1.0), with_c=False).chi1[0])
        why = (
            f"chi1 stays below 1 (it reaches {reach:.4g} at sigma_w={top:g}); pass a larger "
            "sigma_w_max to search further"
            if reach < 1
            else "chi1 jumps across 1 where q* (started from q0=1) leaps to inf, so no sigma_w "
            "gives chi1 = 1 with a finite q*; a larger sigma_b may remove the jump"
        )
        raise ValueError(
            f"act: {a.name!r} has no edge of chaos with sigma_b={sb:g} for sigma_w in "
            f"(0, {top:g}]: {why}"
        )
    return crit


def depth_scales(
    act: Any, sigma_w: float, sigma_b: float = 0.0, *, q0: float = 1.0, method: str = "auto"
) -> DepthScales:
    """Fixed points, per-layer factors and depth scales of a deep random network.

    c* is 1 in the ordered phase (chi1 <= 1); in the chaotic phase it is the root in [0, 1) of
    C(c) = c, found by Newton on a deflated map with the nested 2-D rule. Where q* is 0 or inf
    (relu with sigma_b = 0; tanh with sigma_b = 0 and sigma_w < 1; relu with sigma_w > sqrt(2))
    the normalised c-map has slope 1 at c = 1: correlations do not converge exponentially, so
    c* = 1, chi_c = 1 and xi_c = inf there (Schoenholz et al.'s chi_c = chi1 assumes a finite,
    positive q*).

    Args:
        act: activation name, elementwise callable or activation module.
        sigma_w: weight scale, > 0.
        sigma_b: bias standard deviation, >= 0.
        q0: the input length the q-map starts from (see :func:`qstar`).
        method: "auto" (closed forms where they exist) or "quadrature".

    Returns:
        A :class:`DepthScales`.

    Example:
        >>> ds = depth_scales("tanh", 1.5, 0.3)
        >>> ds.chi1 > 1, 0 < ds.c_star < 1, ds.xi_grad < 0
        (True, True, True)

    Paper: Schoenholz et al. 2017, "Deep Information Propagation", eqs. (3)-(9);
    Poole et al. 2016, eqs. (3)-(7).
    """
    kern, sw, sb, q = _setup(act, sigma_w, sigma_b, q0, method)
    r = _analyse(kern, sw, sb, q, with_c=True)
    return DepthScales(
        act=kern.name,
        sigma_w=float(sw[0]),
        sigma_b=float(sb[0]),
        q_star=float(r.q_star[0]),
        c_star=float(r.c_star[0]),
        chi1=float(r.chi1[0]),
        chi_c=float(r.chi_c[0]),
        xi_q=float(_xi(r.chi_q)[0]),
        xi_c=float(_xi(r.chi_c)[0]),
        xi_grad=float(_xi(r.chi1)[0]),
    )


def phase_diagram(
    act: Any,
    sigma_w_grid: Sequence[float] | torch.Tensor | np.ndarray,
    sigma_b_grid: Sequence[float] | torch.Tensor | np.ndarray,
    *,
    method: str = "auto",
) -> PhaseDiagram:
    """chi1, q* and xi_c over a grid of (sigma_b, sigma_w), with the critical line.

    Every point is solved as :func:`depth_scales` would, vectorised over the grid; q* and chi1
    agree with it to rounding, xi_c to ~1e-4 relative (a lighter 2-D rule keeps a 40 x 40 grid
    at a few seconds). The critical line is :func:`critical_sigma_w` for each sigma_b.

    Args:
        act: activation name, elementwise callable or activation module.
        sigma_w_grid: 1-D, non-empty, every value > 0.
        sigma_b_grid: 1-D, non-empty, every value >= 0.
        method: "auto" (closed forms where they exist) or "quadrature".

    Returns:
        A :class:`PhaseDiagram` with (B, W) maps, B = len(sigma_b_grid), W = len(sigma_w_grid).

    Example:
        >>> pd = phase_diagram("tanh", [0.5, 1.5, 2.5], [0.0, 0.5])
        >>> pd.chi1.shape, bool((pd.chi1[:, 0] < 1).all()), bool((pd.chi1[:, 2] > 1).all())
        (torch.Size([2, 3]), True, True)

    Paper: Poole et al. 2016, Fig. 2; Schoenholz et al. 2017, Fig. 1 (the order-to-chaos
    phase diagram).
    """
    a = activation(act)
    sw = _grid("sigma_w_grid", sigma_w_grid, positive=True)  # (W,)
    sb = _grid("sigma_b_grid", sigma_b_grid, positive=False)  # (B,)
    kern = _kernel(a, _checks.choice("method", method, METHODS), fast=True)
    B, W = sb.numel(), sw.numel()
    SW = sw[None, :].expand(B, W).reshape(-1)  # (B*W,)
    SB = sb[:, None].expand(B, W).reshape(-1)  # (B*W,)
    r = _analyse(kern, SW, SB, torch.ones_like(SW), with_c=True)
    return PhaseDiagram(
        act=kern.name,
        sigma_w=sw,
        sigma_b=sb,
        chi1=r.chi1.reshape(B, W),
        q_star=r.q_star.reshape(B, W),
        xi_c=_xi(r.chi_c).reshape(B, W),
        critical_sigma_w=_critical(kern, sb, max(SIGMA_W_MAX, float(sw.max()))),
    )


# ---------------------------------------------------------------------------------------------
# Arguments


def _t(v: float) -> torch.Tensor:
    return torch.tensor([v], dtype=_F64)


def _setup(
    act: Any, sigma_w: Any, sigma_b: Any, q0: Any, method: Any
) -> tuple[_Kernel, torch.Tensor, torch.Tensor, torch.Tensor]:
    a = activation(act)
    sw = _checks.number("sigma_w", sigma_w, positive=True)
    sb = _checks.number("sigma_b", sigma_b, nonnegative=True)
    q = _checks.number("q0", q0, positive=True)
    kern = _kernel(a, _checks.choice("method", method, METHODS))
    return kern, _t(sw), _t(sb), _t(q)


def _grid(name: str, values: Any, *, positive: bool) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        if values.dtype == torch.bool or values.is_complex():
            raise TypeError(f"{name}: expected real numbers, got a tensor of {values.dtype}")
        values = values.detach().to("cpu", _F64)
    elif isinstance(values, (list, tuple, np.ndarray)):
        try:
            values = torch.from_numpy(np.array(values, dtype=np.float64))
        except (TypeError, ValueError):
            raise TypeError(f"{name}: expected a 1-D sequence of real numbers") from None
    else:
        raise TypeError(
            f"{name}: expected a 1-D sequence or tensor of numbers, got {type(values).__name__}"
        )
    t = _checks.tensor(name, values, ndim=1)
    if positive and bool((t <= 0).any()):
        raise ValueError(f"{name}: every value must be > 0, got {float(t.min()):g}")
    if not positive and bool((t < 0).any()):
        raise ValueError(f"{name}: every value must be >= 0, got {float(t.min()):g}")
    return t


# ---------------------------------------------------------------------------------------------
# Gaussian expectations of an activation


class _Rule:
    """Composite Gauss-Legendre rule for E[f(mu + sigma Z)], Z ~ N(0, 1), batched over rows.

    Panel edges in z: a uniform grid on [-K, K] (it resolves the Gaussian; the mass beyond is
    below 1e-18) united with the z where x = mu + sigma z crosses a geometric grid around 0
    (it resolves phi; its kinks at 0 and +-1 are on the grid) and any extra x-edges per row.
    """

    K = 9.0

    def __init__(self, z_panels: int, order: int, x_edges: tuple[float, ...]) -> None:
        t, w = np.polynomial.legendre.leggauss(order)
        self.t = torch.tensor(t, dtype=_F64)  # (m,)
        self.w = torch.tensor(w, dtype=_F64)  # (m,)
        self.z_edges = torch.linspace(-self.K, self.K, z_panels + 1, dtype=_F64)
        xs = torch.tensor(x_edges, dtype=_F64)
        self.x_edges = torch.cat([-xs.flip(0), torch.zeros(1, dtype=_F64), xs])
        self.max_nodes = (z_panels + self.x_edges.numel()) * order

    def __call__(
        self, mu: torch.Tensor, sigma: torch.Tensor, extra: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Nodes z and unnormalised weights w, both (..., N), for mu and sigma of shape (...)."""
        K = self.K
        xe = self.x_edges
        if extra is not None:  # (..., X)
            xe = torch.cat([xe.expand(*extra.shape[:-1], -1), extra], -1)
        ex = ((xe - mu[..., None]) / sigma.clamp_min(1e-300)[..., None]).clamp_(-K, K)
        edges = torch.cat([self.z_edges.expand(*ex.shape[:-1], -1), ex], -1).sort(-1).values
        # drop the zero-width panels that every row has at the clipped ends
        lo = int((edges <= -K).sum(-1).min()) - 1
        hi = edges.shape[-1] - int((edges >= K).sum(-1).min()) + 1
        edges = edges[..., lo:hi]  # (..., E)
        half = (edges[..., 1:] - edges[..., :-1]) / 2  # (..., E-1)
        mid = edges[..., :-1] + half
        z = torch.addcmul(mid[..., None], half[..., None], self.t).flatten(-2)  # (..., N)
        w = (half[..., None] * self.w).flatten(-2) * torch.exp(z * z * -0.5)  # (..., N)
        return z, w


_GEOMETRIC = (0.5, 1.0, 2.0, 3.0, 4.5, 6.5, 9.0, 13.0, 19.0, 28.0)
_RULE_1D = _Rule(16, 8, _GEOMETRIC)  # <= 296 nodes, ~1e-13 relative on E[phi^2], E[phi'^2]
_RULE_2D = _Rule(16, 8, _GEOMETRIC)  # per axis of the nested 2-D rule, ~1e-10
_RULE_2D_FAST = _Rule(14, 4, _GEOMETRIC)  # phase_diagram's, ~1e-5
# Outer edges at kink +- sd * these: integrating phi(u2) over u2 | u1 smooths a kink of phi to
# width sd = sqrt(q (1 - c^2)), which the outer rule must resolve when c is near 1; offsets
# wider than the geometric grid's panels next to a kink (<= 1) are not needed.
_SMOOTHED = torch.tensor([1.0, 2.5, 5.0, 9.0], dtype=_F64)
_SMOOTH_NAMES = ("tanh", "sigmoid", "erf", "gelu", "silu", "softplus")
_CHUNK = 200_000  # nodes per 2-D batch: 1.6 MB float64 tensors stay in cache


class _Kernel:
    """Gaussian expectations of one activation, batched over rows: q and c are (P,) float64."""

    name: str
    phi0: float  # phi(0): V(0) = sigma_w^2 phi0^2 + sigma_b^2
    newton_tol = 1e-14  # c* Newton stops when its estimated error is below this

    def sq(self, q: torch.Tensor) -> torch.Tensor:
        """E[phi(sqrt(q) z)^2]."""
        raise NotImplementedError

    def moments(self, q: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """E[phi], E[phi^2], E[phi'], E[phi'^2] and d/dq E[phi^2], all at sqrt(q) z."""
        raise NotImplementedError

    def pair(self, q: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """D = E[phi(u1) (phi(u2) - phi(u1))] and Psi = E[phi'(u1) phi'(u2)].

        (u1, u2) ~ N(0, q [[1, c], [c, 1]]). D = E[phi(u1) phi(u2)] - E[phi^2] is kept as a
        difference so that it stays accurate relative to its size, O(1 - c), as c -> 1.
        """
        raise NotImplementedError

    def fixed_point(
        self, sw2: torch.Tensor, sb2: torch.Tensor, q0: torch.Tensor
    ) -> torch.Tensor | None:
        """q* in closed form, or None to root-find."""
        return None

    def critical(self, sb: torch.Tensor) -> torch.Tensor | None:
        """The critical sigma_w in closed form, or None to root-find."""
        return None


class _Quadrature(_Kernel):
    def __init__(self, act: Activation, *, fast: bool = False) -> None:
        self.name = act.name
        self.fn: TensorFn = act.fn
        self.dfn: TensorFn = act.derivative
        self.phi0 = float(act.fn(torch.zeros(1, dtype=_F64))[0])
        self.rule2 = _RULE_2D_FAST if fast else _RULE_2D
        self.newton_tol = 1e-10 if fast else 1e-14
        # where phi has kinks (0 for relu-like functions and, as a guess, unknown callables)
        self.kinks: tuple[float, ...] = (
            ()
            if act.name in _SMOOTH_NAMES
            else (-1.0, 0.0, 1.0)
            if act.name == "hardtanh"
            else (0.0,)
        )

    def _nodes(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s = q.sqrt()
        z, w = _RULE_1D(torch.zeros_like(s), s)  # (P, N)
        return s[:, None] * z, z, w / w.sum(-1, keepdim=True)

    def sq(self, q: torch.Tensor) -> torch.Tensor:
        x, _, w = self._nodes(q)
        return (w * self.fn(x) ** 2).sum(-1)

    def moments(self, q: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x, z, w = self._nodes(q)  # (P, N)
        f, d = self.fn(x), self.dfn(x)
        # d/dq E[phi(sqrt(q) z)^2] = E[z phi phi'] / sqrt(q), differentiating under the integral
        slope = (w * z * f * d).sum(-1) / q.sqrt()
        return (w * f).sum(-1), (w * f * f).sum(-1), (w * d).sum(-1), (w * d * d).sum(-1), slope

    def pair(self, q: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # u1 = sqrt(q) z1 and, given u1, u2 = c u1 + sd z2 with sd = sqrt(q (1 - c^2)): the
        # inner rule puts phi's kinks on panel edges for every u1, the outer rule resolves
        # phi(u1) and, around each kink, the smoothing of phi(u2) over width sd.
        rule = self.rule2
        step = max(1, _CHUNK // rule.max_nodes**2)
        s_all = q.sqrt()  # (P,)
        sd_all = s_all * ((1 - c) * (1 + c)).clamp_min(0).sqrt()  # (P,)
        order = sd_all.argsort()  # chunks of similar sd share their kink refinement
        ds, ps = [], []
        for i in range(0, q.numel(), step):
            rows = order[i : i + step]
            s, sd, ci = s_all[rows], sd_all[rows], c[rows]  # (P,)
            extra = None
            offsets = _SMOOTHED[_SMOOTHED * float(sd[0]) < 1.0]
            if self.kinks and offsets.numel():
                offsets = torch.cat([-offsets, offsets])
                extra = torch.cat([k + sd[:, None] * offsets for k in self.kinks], -1)
            z1, w1 = rule(torch.zeros_like(s), s, extra)  # (P, N)
            w1 = w1 / w1.sum(-1, keepdim=True)
            u1 = s[:, None] * z1  # (P, N)
            mu = ci[:, None] * u1  # (P, N)
            sdx = sd[:, None].expand_as(mu)  # (P, N)
            z2, w2 = rule(mu, sdx)  # (P, N, M)
            u2 = torch.addcmul(mu[..., None], sdx[..., None], z2)  # (P, N, M)
            norm = w2.sum(-1)  # (P, N)
            g = (w2 * self.fn(u2)).sum(-1) / norm  # E[phi(u2) | u1]
            gd = (w2 * self.dfn(u2)).sum(-1) / norm  # E[phi'(u2) | u1]
            f, d = self.fn(u1), self.dfn(u1)
            ds.append((w1 * f * (g - f)).sum(-1))
            ps.append((w1 * d * gd).sum(-1))
        inverse = order.argsort()
        return torch.cat(ds)[inverse], torch.cat(ps)[inverse]


class _ReluLike(_Kernel):
    """phi(x) = x for x > 0, a x for x < 0: the arc-cosine kernels of Cho & Saul 2009."""

    def __init__(self, name: str, a: float) -> None:
        self.name, self.a, self.phi0 = name, a, 0.0
        self.kappa = (1 + a * a) / 2  # E[phi(z)^2] = E[phi'(z)^2]

    def sq(self, q: torch.Tensor) -> torch.Tensor:
        return self.kappa * q

    def moments(self, q: torch.Tensor) -> tuple[torch.Tensor, ...]:
        k = torch.full_like(q, self.kappa)
        mean = q.sqrt() * (1 - self.a) / math.sqrt(2 * math.pi)
        return mean, k * q, torch.full_like(q, (1 + self.a) / 2), k, k

    def pair(self, q: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, s, t = self.a, ((1 - c) * (1 + c)).clamp_min(0).sqrt(), torch.arccos(c)
        # E[relu(z1) relu(z2)] = (s + (pi - t) c) / 2pi and E[H(z1) H(z2)] = (pi - t) / 2pi,
        # corr(z1, z2) = c; phi = relu(x) - a relu(-x) brings in the same at -c.
        k1, k1m = (s + (math.pi - t) * c) / (2 * math.pi), (s - t * c) / (2 * math.pi)
        k0, k0m = (math.pi - t) / (2 * math.pi), t / (2 * math.pi)
        d = q * ((1 + a * a) * k1 - 2 * a * k1m - self.kappa)
        return d, (1 + a * a) * k0 + 2 * a * k0m

    def fixed_point(self, sw2: torch.Tensor, sb2: torch.Tensor, q0: torch.Tensor) -> torch.Tensor:
        g = sw2 * self.kappa  # the q-map is q -> g q + sigma_b^2
        inf = torch.full_like(g, math.inf)
        crit = torch.where(sb2 == 0, q0, inf)  # every q is fixed, or linear growth
        below = sb2 / (1 - g).clamp_min(1e-300)
        return torch.where((g - 1).abs() <= CRIT_TOL, crit, torch.where(g < 1, below, inf))

    def critical(self, sb: torch.Tensor) -> torch.Tensor:
        return torch.full_like(sb, 1 / math.sqrt(self.kappa))


class _Erf(_Kernel):
    """erf: E[erf(u1) erf(u2)] = (2/pi) arcsin(2 q c / (1 + 2 q)) (Williams 1997)."""

    name, phi0 = "erf", 0.0

    def sq(self, q: torch.Tensor) -> torch.Tensor:
        return (2 / math.pi) * torch.asin(2 * q / (1 + 2 * q))

    def moments(self, q: torch.Tensor) -> tuple[torch.Tensor, ...]:
        r = (1 + 4 * q).sqrt()
        dmean = (2 / math.sqrt(math.pi)) / (1 + 2 * q).sqrt()
        slope = (4 / math.pi) / ((1 + 2 * q) * r)
        return torch.zeros_like(q), self.sq(q), dmean, (4 / math.pi) / r, slope

    def pair(self, q: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = (2 / math.pi) * torch.asin(2 * q * c / (1 + 2 * q)) - self.sq(q)
        return d, (4 / math.pi) / ((1 + 2 * q) ** 2 - (2 * q * c) ** 2).sqrt()


def _kernel(act: Activation, method: str, *, fast: bool = False) -> _Kernel:
    if method == "auto":
        if act.name in ("relu", "linear") or (
            act.name.startswith("leaky_relu") and act.piecewise_linear
        ):
            a = -float(act.fn(torch.tensor([-1.0], dtype=_F64))[0])  # the negative slope
            return _ReluLike(act.name, a)
        if act.name == "erf":
            return _Erf()
    return _Quadrature(act, fast=fast)


# ---------------------------------------------------------------------------------------------
# Fixed points, slopes and the critical line


class _Solved(NamedTuple):
    q_star: torch.Tensor
    chi1: torch.Tensor
    chi_q: torch.Tensor
    c_star: torch.Tensor
    chi_c: torch.Tensor


def _analyse(
    kern: _Kernel, sw: torch.Tensor, sb: torch.Tensor, q0: torch.Tensor, *, with_c: bool
) -> _Solved:
    """q*, chi1, chi_q and (with_c) c*, chi_c for every row of (sw, sb, q0), all (P,)."""
    sw2, sb2 = sw * sw, sb * sb
    q_star = _solve_q(kern, sw2, sb2, q0)
    qh = q_star.clamp(_Q_TINY, Q_CAP)  # where the limits q -> 0+ and q -> inf are taken
    mean, sq, dmean, dsq, slope = kern.moments(qh)
    chi_1, chi_q = sw2 * dsq, sw2 * slope
    _finite(chi_1, kern)
    one = torch.ones_like(sw)
    if not with_c:
        return _Solved(q_star, chi_1, chi_q, one, chi_1)
    v = sw2 * sq + sb2  # V(q^), which is q* where 0 < q* < inf
    regular = (q_star > 0) & torch.isfinite(q_star)
    # chi_c = scale * Psi(c*); at c = 1 that is chi1 where 0 < q* < inf, else the normalised
    # map's slope sigma_w^2 q E[phi'^2] / V(q) in the limit
    scale = torch.where(regular, sw2, sw2 * qh / v)
    chi_c = torch.where(regular, chi_1, scale * dsq)
    c_star = one.clone()
    i = (chi_c > 1 + CRIT_TOL).nonzero().squeeze(1)  # chaotic: c = 1 is unstable
    if i.numel():
        cs, psi = _solve_c(
            kern, qh[i], sw2[i] / v[i], sb2[i] / v[i], mean[i], sq[i], dmean[i], chi_c[i]
        )
        c_star[i], chi_c[i] = cs, scale[i] * psi
    return _Solved(q_star, chi_1, chi_q, c_star, chi_c)


def _solve_q(kern: _Kernel, sw2: torch.Tensor, sb2: torch.Tensor, q0: torch.Tensor) -> torch.Tensor:
    """q* per row: the fixed point the q-map reaches from q0 (0 / inf where it shrinks / grows).

    The map is increasing in q, so its iterates from q0 move monotonically to the nearest fixed
    point on the side F(q) = V(q) - q points to; stepping q0 by factors of 16 brackets it, and
    Chandrupatla's method finds it.
    """
    closed = kern.fixed_point(sw2, sb2, q0)
    if closed is not None:
        return closed

    def F(q: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return sw2[idx] * kern.sq(q) + sb2[idx] - q

    f0 = F(q0, torch.arange(q0.numel()))
    _finite(f0, kern)
    out = torch.where(f0 == 0, q0, torch.full_like(q0, math.nan))
    lo, hi, flo, fhi = q0.clone(), q0.clone(), f0.clone(), f0.clone()
    up, down = f0 > 0, f0 < 0
    while bool(up.any()):  # step up until F <= 0, or past Q_CAP: q* = inf
        idx = up.nonzero().squeeze(1)
        q = hi[idx] * 16
        fq = F(q, idx)
        lo[idx], flo[idx], hi[idx], fhi[idx] = hi[idx], fhi[idx], q, fq
        diverged = ((q > Q_CAP) & (fq > 0)) | torch.isnan(fq)
        out[idx[diverged]] = math.inf
        up[idx] = (fq > 0) & ~diverged
    v0 = sw2 * kern.phi0**2 + sb2  # F(0) = V(0)
    while bool(down.any()):  # step down until F >= 0, or below Q_FLOOR
        idx = down.nonzero().squeeze(1)
        q = lo[idx] / 16
        fq = F(q, idx)
        hi[idx], fhi[idx], lo[idx], flo[idx] = lo[idx], flo[idx], q, fq
        floor = (q < Q_FLOOR) & (fq < 0)
        out[idx[floor & (v0[idx] <= 0)]] = 0.0  # 0 is a fixed point: q* = 0
        j = idx[floor & (v0[idx] > 0)]  # a tiny q* in (0, q)
        hi[j], fhi[j], lo[j], flo[j] = lo[j], flo[j], 0.0, v0[j]
        down[idx] = (fq < 0) & ~floor
    todo = out.isnan().nonzero().squeeze(1)
    if todo.numel():
        out[todo] = _chandrupatla(
            lambda q, idx: F(q, todo[idx]),
            lo[todo],
            hi[todo],
            flo[todo],
            fhi[todo],
            rtol=1e-15,
            atol=1e-300,
        )
    return out


def _solve_c(
    kern: _Kernel,
    q: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    mean: torch.Tensor,
    sq: torch.Tensor,
    dmean: torch.Tensor,
    chi: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The chaotic fixed point c* in [0, 1) of C(c) = a E[phi(u1) phi(u2)] + b, and Psi(c*).

    a = sigma_w^2 / V and b = sigma_b^2 / V, so C(1) = 1 with slope chi > 1 there. F(c) =
    C(c) - c is convex on [0, 1] (C is a power series in c with coefficients >= 0) with
    F(1) = 0, so its deflation G(c) = F(c) / (1 - c) = 1 + a D(c) / (1 - c) falls from
    G(0) >= 0 to G(1-) = 1 - chi < 0 and has c* as a simple root, even when c* is near 1.
    The quadratic through G(0), G'(0), G(1-) (1-D moments: D(0) = E[phi]^2 - E[phi^2],
    Psi(0) = E[phi']^2) gives the first iterate, then Newton with
    G'(c) = a (q Psi(c) (1 - c) + D(c)) / (1 - c)^2, kept inside a bracket.
    """
    d0, psi = mean * mean - sq, dmean * dmean  # D(0), Psi(0)
    g0 = b + a * mean * mean  # G(0) = (sigma_b^2 + sigma_w^2 E[phi]^2) / V
    gp0 = a * (q * psi + d0)  # G'(0)
    k2 = (1 - chi) - g0 - gp0  # G ~ g0 + gp0 c + k2 c^2
    root = (gp0 * gp0 - 4 * k2 * g0).clamp_min(0).sqrt()
    r1, r2 = 2 * g0 / (-gp0 + root), 2 * g0 / (-gp0 - root)
    cn = torch.where((r1 > 0) & (r1 < 1), r1, torch.where((r2 > 0) & (r2 < 1), r2, 0.5))
    c = torch.full_like(q, math.nan)  # the last evaluated iterate
    prev = torch.full_like(q, math.nan)  # the Newton step before it
    lo, hi = torch.zeros_like(q), torch.ones_like(q)
    active = g0 > 1e-13  # G(0) = 0: c* = 0 (odd phi with sigma_b = 0)
    c[~active] = 0.0
    newton = torch.ones_like(active)  # cn came from a Newton step (not bisection)
    for _ in range(100):
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        C, L, H = cn[idx], lo[idx], hi[idx]
        d, p = kern.pair(q[idx], C)
        g = 1 + a[idx] * d / (1 - C)
        gp = a[idx] * (q[idx] * p * (1 - C) + d) / (1 - C) ** 2
        L, H = torch.where(g > 0, C, L), torch.where(g > 0, H, C)
        step = (C - c[idx]).abs()
        err = step**3 / prev[idx] ** 2  # Newton: error K h^2 after a step h, K ~ h / h_prev^2
        nw = newton[idx]
        done = (nw & (err <= kern.newton_tol)) | (step <= 1e-14) | (g == 0) | (H - L <= 1e-14)
        nxt = C - g / gp
        good = (nxt > L) & (nxt < H)  # NaN fails both
        prev[idx] = torch.where(nw, step, math.nan)
        c[idx], psi[idx], lo[idx], hi[idx] = C, p, L, H
        cn[idx], newton[idx] = torch.where(good, nxt, (L + H) / 2), good
        active[idx] = ~done
    return c, psi


def _critical(kern: _Kernel, sb: torch.Tensor, top: float) -> torch.Tensor:
    """For each sigma_b, the smallest sigma_w in (0, top] with chi1 = 1; NaN where none."""
    closed = kern.critical(sb)
    if closed is not None:
        return torch.where(closed <= top, closed, torch.full_like(closed, math.nan))
    B = sb.numel()

    def f(s: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:  # chi1 - 1
        return _analyse(kern, s, sb[rows], torch.ones_like(s), with_c=False).chi1 - 1

    grid = torch.logspace(math.log10(min(0.05, top / 2)), math.log10(top), 48, dtype=_F64)
    # On the q* = 0 branch (sigma_b = 0, phi(0) = 0) chi1 = sigma_w^2 lim E[phi'^2] exactly;
    # putting its crossing on the grid makes e.g. tanh's sigma_w = 1 come out exact.
    d0 = float(kern.moments(torch.full((1,), _Q_TINY, dtype=_F64))[3][0])
    if d0 > 0 and 1 / math.sqrt(d0) < top:
        grid = torch.cat([grid, _t(1 / math.sqrt(d0))]).sort().values
    S = grid.numel()
    rows = torch.arange(B)[:, None].expand(B, S).reshape(-1)
    fg = torch.cat(
        [
            torch.full((B, 1), -1.0, dtype=_F64),  # chi1 -> 0 as sigma_w -> 0
            f(grid.repeat(B), rows).reshape(B, S),
        ],
        1,
    )  # (B, S + 1)
    g = torch.cat([torch.zeros(1, dtype=_F64), grid])
    at = fg >= -CRIT_TOL
    first = at.to(torch.uint8).argmax(1)  # first grid point at or past chi1 = 1
    out = torch.full((B,), math.nan, dtype=_F64)
    ar = torch.arange(B)
    exact = at.any(1) & (fg[ar, first].abs() <= CRIT_TOL)
    out[exact] = g[first[exact]]
    r = (at.any(1) & ~exact).nonzero().squeeze(1)
    if r.numel():
        j = first[r]
        out[r] = _chandrupatla(
            lambda s, idx: f(s, r[idx]),
            g[j - 1],
            g[j],
            fg[r, j - 1],
            fg[r, j],
            rtol=1e-15,
            atol=1e-15,
        )
    # Keep only continuous crossings: where the attracting fixed point that q0 = 1 leads to
    # changes (gelu: from small q* to inf) chi1 jumps across 1 instead. A jump leaves |chi1 - 1|
    # as large 1e-12 away as 1e-6 away; a continuous crossing, however steep (softplus, where
    # q* -> inf as sigma_w -> sqrt(2)), shrinks it.
    found = (~out.isnan()).nonzero().squeeze(1)
    if found.numel():
        s, n = out[found], found.numel()
        offsets = torch.tensor([-1e-12, 1e-12, -1e-6, 1e-6], dtype=_F64)
        side = f((s[None, :] * (1 + offsets[:, None])).reshape(-1), found.repeat(4)).abs()
        near, far = side.reshape(4, n)[:2], side.reshape(4, n)[2:]
        jump = ((near > 1e-6) & (near > far / 4)).any(0)
        out[found[jump]] = math.nan
    return out


def _chandrupatla(
    f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    a: torch.Tensor,
    b: torch.Tensor,
    fa: torch.Tensor,
    fb: torch.Tensor,
    *,
    rtol: float,
    atol: float,
    maxiter: int = 200,
) -> torch.Tensor:
    """Roots of f in brackets [a, b] (fa, fb of opposite signs or 0), vectorised over rows.

    ``f(x, idx)`` evaluates rows ``idx`` at ``x``; only unconverged rows are evaluated.
    Chandrupatla 1997: inverse quadratic interpolation where it is safe, else bisection.
    """
    x1, f1, x2, f2 = a.clone(), fa.clone(), b.clone(), fb.clone()
    x3, f3 = x2.clone(), f2.clone()
    t = torch.full_like(a, 0.5)
    root = torch.where(f1.abs() <= f2.abs(), x1, x2)
    root = torch.where(f1 == 0, x1, torch.where(f2 == 0, x2, root))
    active = (f1 != 0) & (f2 != 0)
    for _ in range(maxiter):
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        X1, F1, X2, F2 = x1[idx], f1[idx], x2[idx], f2[idx]
        xt = X1 + t[idx] * (X2 - X1)
        ft = f(xt, idx)
        same = torch.sign(ft) == torch.sign(F1)
        X3, F3 = torch.where(same, X1, X2), torch.where(same, F1, F2)
        X2, F2 = torch.where(same, X2, X1), torch.where(same, F2, F1)
        X1, F1 = xt, ft
        better = F1.abs() < F2.abs()
        xm, fm = torch.where(better, X1, X2), torch.where(better, F1, F2)
        tlim = (2 * rtol * xm.abs() + atol) / (X2 - X1).abs()
        done = (fm == 0) | (tlim > 0.5) | ~torch.isfinite(ft)
        xi, ph = (X1 - X2) / (X3 - X2), (F1 - F2) / (F3 - F2)
        iqi = (ph * ph < xi) & ((1 - ph) ** 2 < 1 - xi)
        tq = F1 / (F2 - F1) * F3 / (F2 - F3) + (X3 - X1) / (X2 - X1) * F1 / (F3 - F1) * F2 / (
            F3 - F2
        )
        tn = torch.where(iqi, tq, torch.full_like(tq, 0.5))
        t[idx] = torch.minimum(torch.maximum(tn, tlim), 1 - tlim).nan_to_num(0.5)
        x1[idx], f1[idx], x2[idx], f2[idx], x3[idx], f3[idx] = X1, F1, X2, F2, X3, F3
        root[idx] = xm
        active[idx] = ~done
    return root


def _xi(chi: torch.Tensor) -> torch.Tensor:
    """-1/ln|chi|, signed (negative for growth); inf within CRIT_TOL of 1, 0 at chi = 0."""
    xi = -1 / torch.log(chi.abs())
    return torch.where((chi - 1).abs() <= CRIT_TOL, torch.full_like(chi, math.inf), xi)


def _finite(values: torch.Tensor, kern: _Kernel) -> None:
    if not bool(torch.isfinite(values).all()):
        raise ValueError(
            f"act: the Gaussian integrals of {kern.name!r} are not finite; mean-field theory "
            "needs E[phi(sqrt(q) z)^2] < inf for every q"
        )
