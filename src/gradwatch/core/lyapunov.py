"""Lyapunov spectra of recurrent dynamics by the QR method.

A recurrence h_{t+1} = F(h_t, x_t) stretches a small perturbation v by its Jacobian J_t at
every step. The Lyapunov exponents are the growth rates of the product J_T ... J_1: positive
exponents mean chaos (gradients through time explode), negative ones contraction (they
vanish). The QR method (Benettin et al. 1980; Shimada & Nagashima 1979) pushes k orthonormal
tangent vectors through the Jacobians, re-orthonormalises them with a QR decomposition and
accumulates log|diag R|; Engelken, Wolf & Abbott (2020) and Vogt et al. (2022) use it on RNNs.

Tangents are pushed matrix-free with forward-mode AD (``torch.autograd.forward_ad``): each
state's row is repeated k times and the k tangents ride along as the S*k rows of one batched
call of the step, so a step costs one call and no functorch transform (``vmap(jvp)`` costs
about 1 ms of Python per call). Plain forward AD would still run every matrix product on all
S*k primal rows and multiply by a materialised zero tangent of each weight; ``_SharedPrimal``
removes both for ``@`` / ``mm`` / ``F.linear`` with a constant operand, checked against plain
forward AD on the first step. nn.RNN, nn.LSTM, nn.GRU and their cells get hand-written tangent
maps: the primal runs once and all k tangents go through one product per weight.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn
from torch.func import vmap
from torch.overrides import TorchFunctionMode

from gradwatch._result import Result
from gradwatch.core import _checks
from gradwatch.core._recurrent import check_steppable

__all__ = ["LyapunovSpectrum", "lyapunov_spectrum"]

JACOBIANS = ("jvp", "dense")
SHARED_MIN_DIM = 64  # below this state size, _SharedPrimal costs more Python than it saves
StepMap = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]
# (H (S, n), X (S, D) | None, V (S, k, n) | None) -> (H_next (S, n), V_next (S, k, n) | None)
TangentMap = Callable[
    [torch.Tensor, "torch.Tensor | None", "torch.Tensor | None"],
    "tuple[torch.Tensor, torch.Tensor | None]",
]


@dataclass(frozen=True)
class LyapunovSpectrum(Result):
    """The k largest Lyapunov exponents of a recurrence, in nats per step.

    Attributes:
        exponents: ``(k,)`` descending, mean over the initial states (float64, CPU).
        stderr: ``(k,)`` standard error of that mean across the S initial states
            (std / sqrt(S)); NaN when S = 1.
        per_state: ``(S, k)`` the exponents of each initial state, columns in the same order.
        steps: steps accumulated (after the warm-up).
        warmup: steps run before accumulation started.
        reortho_every: steps between QR re-orthonormalisations.
        state_dim: dimension of the flattened state (2H per layer for an LSTM); k <= state_dim.
    """

    exponents: torch.Tensor
    stderr: torch.Tensor
    per_state: torch.Tensor
    steps: int
    warmup: int
    reortho_every: int
    state_dim: int

    @property
    def max_exponent(self) -> float:
        """The largest exponent: > 0 means chaotic dynamics, < 0 a stable trajectory."""
        return float(self.exponents[0])

    @property
    def sum(self) -> float:
        """Sum of the computed exponents; with k = state_dim, the mean log-volume change."""
        return float(self.exponents.sum())

    @property
    def kaplan_yorke_dimension(self) -> float:
        """Kaplan-Yorke dimension j + (l_1 + ... + l_j) / |l_{j+1}| of the attractor.

        j is the largest count of exponents with a nonnegative partial sum. 0 when the largest
        exponent is negative; k when every partial sum is nonnegative (then the dimension is
        at least k: compute more exponents).
        """
        partial = torch.cumsum(self.exponents, 0)  # (k,)
        nonneg = (partial >= 0).nonzero()
        if len(nonneg) == 0:
            return 0.0
        j = int(nonneg[-1]) + 1  # exponents in the partial sum
        if j == len(self.exponents):
            return float(j)
        return j + float(partial[j - 1]) / abs(float(self.exponents[j]))


def lyapunov_spectrum(
    step: Any,
    h0: Any,
    inputs: Any = None,
    k: int | None = None,
    steps: int = 1000,
    warmup: int = 100,
    reortho_every: int = 1,
    *,
    generator: torch.Generator | None = None,
    jacobian: str = "jvp",
    batched: bool | None = None,
) -> LyapunovSpectrum:
    """Lyapunov spectrum of ``h_{t+1} = step(h_t[, x_t])`` by the QR method.

    S trajectories run batched; each carries k orthonormal tangent vectors, pushed through the
    step's Jacobian every step and re-orthonormalised (reduced QR, sign of diag R fixed) every
    ``reortho_every`` steps. The exponents are the accumulated log|diag R| over ``steps``
    steps after ``warmup`` steps, divided by ``steps``.

    Args:
        step: the map. A callable ``step(h) -> h_next`` (``step(h, x) -> h_next`` when
            ``inputs`` is given) on a state (N,) or a batch of states (B, N), row by row; a
            state may be a tuple of tensors, e.g. ``(h, c)``, returned as a tuple. Or an
            ``nn.RNNCell``, ``nn.GRUCell``, ``nn.LSTMCell`` (state ``(h, c)``), or an
            ``nn.RNN`` / ``nn.GRU`` / ``nn.LSTM`` of any depth, driven one step at a time; its
            state is every layer's h (then every layer's c), and zeros are fed when
            ``inputs`` is None.
        h0: initial states: (S, N) or (N,); a tuple of such for tuple states and LSTM cells.
            nn.RNN / nn.GRU also take PyTorch's (L, S, H) or (L, H); nn.LSTM ``(h, c)`` as such.
        inputs: None, a tensor (T, S, D) or (T, D) (shared by all states) with
            T >= warmup + steps, time-major whatever ``batch_first`` says, or a callable
            ``t -> x_t`` returning (S, D) or (D,).
        k: number of exponents, 1 <= k <= state dimension; default all of them.
        steps: steps accumulated, >= 1.
        warmup: steps run first (trajectory and tangents) and discarded, >= 0.
        reortho_every: steps between QR re-orthonormalisations, >= 1. Larger saves QRs but
            the tangents may overflow (an error says so).
        generator: draws the initial tangent frame; default a generator seeded with 0, so
            repeated calls agree.
        jacobian: ``"jvp"`` (matrix-free forward mode, the default) or ``"dense"`` (the full
            per-step Jacobian (S, N, N) from N forward-mode tangents, then J @ Q; a
            reference, no faster).
        batched: whether a callable ``step`` maps batches row by row (fast: its products
            ``h @ W.T``, ``W @ h.T``, ``F.linear`` run once per state) or only single states
            (then it is vmapped, slower). None: decided by a probe call on 3 states.

    Returns:
        LyapunovSpectrum with ``exponents`` (k,) descending, ``stderr``, ``per_state`` (S, k).

    Raises:
        TypeError / ValueError: naming the argument that is wrong; ValueError also when the
        trajectory or the tangent vectors leave the finite range.

    Example:
        >>> W = torch.randn(200, 200, dtype=torch.float64) * 2.0 / 200**0.5
        >>> spec = lyapunov_spectrum(lambda h: torch.tanh(h @ W.T),
        ...                          torch.randn(4, 200, dtype=torch.float64), k=8, steps=500)
        >>> spec.max_exponent > 0  # g = 2: chaotic
        True

    Paper: Benettin, Galgani, Giorgilli & Strelcyn (1980), "Lyapunov characteristic
    exponents for smooth dynamical systems ... Part 2: Numerical application", Meccanica 15;
    Shimada & Nagashima (1979), Prog. Theor. Phys. 61; Engelken, Wolf & Abbott (2020),
    "Lyapunov spectra of chaotic recurrent neural networks", arXiv:2006.02427.
    """
    steps = _checks.count("steps", steps, low=1)
    warmup = _checks.count("warmup", warmup, low=0)
    reortho_every = _checks.count("reortho_every", reortho_every, low=1)
    jacobian = _checks.choice("jacobian", jacobian, JACOBIANS)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator, got {type(generator).__name__}")
    if batched is not None and not isinstance(batched, bool):
        raise TypeError(f"batched: expected True, False or None, got {type(batched).__name__}")
    if isinstance(step, type):
        raise TypeError(f"step: got the class {step.__name__}; pass an instance of it")
    _checks.callable_("step", step)

    dyn = _dynamics(step, h0)
    H = dyn.h0  # (S, n)
    S, n = H.shape
    k = n if k is None else _checks.count("k", k, low=1, high=n)
    x_at = _inputs(inputs, warmup + steps, H, dyn.input_size)
    push = dyn.tangent
    if push is None:
        assert dyn.step is not None
        f, rows = _batched_step(dyn, H, x_at, batched)
        push = _forward_ad(f, rows and n >= SHARED_MIN_DIM)

    if generator is None:
        generator = torch.Generator().manual_seed(0)
    # One draw per state, so a state's frame (and exponents) do not depend on S.
    draws = [
        torch.randn((n, k), generator=generator, dtype=H.dtype, device=generator.device)
        for _ in range(S)
    ]
    Q0 = torch.stack(draws)  # (S, n, k)
    with torch.no_grad(), fwAD.dual_level():  # one level for all steps' forward-mode AD
        Q = torch.linalg.qr(Q0.to(H.device)).Q  # (S, n, k)
        eye = torch.eye(n, dtype=H.dtype, device=H.device).expand(S, n, n)  # (S, n, n)
        V = Q.mT  # (S, k, n) tangent vectors as rows
        log_r = torch.zeros(S, k, dtype=torch.float64, device=H.device)
        ones = torch.ones(S, k, dtype=H.dtype, device=H.device)
        total = warmup + steps
        for t in range(total):
            x = x_at(t)
            if jacobian == "dense":
                H_next, Jt = push(H, x, eye)  # Jt (S, n, n): row j is J e_j, i.e. J^T
                assert Jt is not None
                V = V @ Jt  # (S, k, n): rows v J^T = (J v)^T
            else:
                H_next, V = push(H, x, V)
                assert V is not None
            H = H_next
            u = t - warmup  # accumulation step, < 0 during warm-up
            end = t == warmup - 1 if u < 0 else u == steps - 1
            if (u + 1 if u >= 0 else t + 1) % reortho_every == 0 or end:
                Qr, R = torch.linalg.qr(V.mT)  # (S, n, k), (S, k, k)
                d = R.diagonal(dim1=-2, dim2=-1)  # (S, k)
                V = (Qr * torch.copysign(ones, d).unsqueeze(1)).mT  # diag R > 0
                if u >= 0:
                    log_r += d.abs().log()
        if not bool(torch.isfinite(H).all()):
            raise ValueError(
                "step: the trajectory left the finite range (NaN/Inf); Lyapunov exponents "
                "need bounded dynamics. Check the step map and the scale of h0 and inputs."
            )
        if bool(torch.isnan(log_r).any() | torch.isposinf(log_r).any()):
            raise ValueError(
                f"reortho_every: the tangent vectors overflowed between re-orthonormalisations "
                f"(got reortho_every={reortho_every}); lower it, e.g. to 1"
            )
    return _result(log_r.cpu() / steps, steps, warmup, reortho_every, n)


def _result(
    per_state: torch.Tensor, steps: int, warmup: int, reortho_every: int, n: int
) -> LyapunovSpectrum:
    S = per_state.shape[0]
    mean = per_state.mean(0)  # (k,)
    order = torch.argsort(mean, descending=True, stable=True)
    per_state = per_state[:, order].clone()  # (S, k)
    mean = mean[order]
    if S > 1:
        stderr = per_state.std(0, correction=1) / math.sqrt(S)
    else:
        stderr = torch.full_like(mean, math.nan)
    return LyapunovSpectrum(mean, stderr, per_state, steps, warmup, reortho_every, n)


# ---------------------------------------------------------------------------- step maps


@dataclass
class _Dynamics:
    """A recurrence on flat states (S, n): a hand-written tangent map, or a step to linearise."""

    h0: torch.Tensor  # (S, n)
    input_size: int | None  # modules: D; None for callables
    tangent: TangentMap | None = None
    step: Any = None  # the user's callable
    sizes: tuple[int, ...] | None = None  # tuple state: sizes of its parts


def _dynamics(step: Any, h0: Any) -> _Dynamics:
    if isinstance(step, nn.RNNBase):
        return _module_dynamics(step, h0)
    if isinstance(step, nn.RNNCellBase):
        return _cell_dynamics(step, h0)
    if isinstance(h0, (tuple, list)):
        if len(h0) == 0:
            raise ValueError("h0: got an empty tuple; pass a state tensor or a tuple of them")
        parts = [_state("h0", f"h0[{i}]", p) for i, p in enumerate(h0)]
        if len({p.shape[0] for p in parts}) != 1 or len({p.ndim for p in h0}) != 1:
            shapes = [tuple(p.shape) for p in h0]
            raise ValueError(f"h0: the parts must share their leading dimensions, got {shapes}")
        return _Dynamics(
            torch.cat(parts, 1), None, step=step, sizes=tuple(p.shape[1] for p in parts)
        )
    return _Dynamics(_state("h0", "h0", h0), None, step=step)


def _state(arg: str, name: str, value: Any) -> torch.Tensor:
    """A floating (S, n) state from (S, n) or (n,)."""
    value = _checks.tensor(name, value, ndim=(1, 2))
    if not value.is_floating_point():
        raise TypeError(f"{arg}: expected a floating tensor, got dtype {value.dtype}")
    return value.detach().reshape(-1, value.shape[-1]) if value.ndim == 1 else value.detach()


def _batched_step(
    dyn: _Dynamics,
    H: torch.Tensor,
    x_at: Callable[[int], torch.Tensor | None],
    batched: bool | None,
) -> tuple[StepMap, bool]:
    """The user's step on flat row batches (B, n), and whether it is the step itself."""
    step, sizes = dyn.step, dyn.sizes
    n = H.shape[1]
    with_x = x_at(0) is not None

    def call(h: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
        state: Any = h if sizes is None else tuple(h.split(sizes, -1))
        out = step(state, x) if with_x else step(state)
        if sizes is not None:
            if not isinstance(out, (tuple, list)) or len(out) != len(sizes):
                raise ValueError(
                    f"step: for a state of {len(sizes)} parts it must return a tuple of "
                    f"{len(sizes)} tensors, got {type(out).__name__}"
                )
            out = torch.cat(list(out), -1)
        if not isinstance(out, torch.Tensor) or out.shape != h.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"step: returned {got} for a state of shape {tuple(h.shape)}; it must return "
                "the next state with the same shape"
            )
        return out

    def rows(h: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
        return call(h, x)

    def vmapped(h: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
        return vmap(call, in_dims=(0, 0 if x is not None else None))(h, x)

    if batched is not None:
        return (rows, True) if batched else (vmapped, False)
    # Probe: 3 distinct states near the first one; a batched step must agree row by row.
    gen = torch.Generator(device=H.device).manual_seed(1)
    P = H[:1] + 0.1 * torch.randn((3, n), generator=gen, dtype=H.dtype, device=H.device)  # (3, n)
    x0 = x_at(0)
    X = None if x0 is None else x0[:1].expand(3, x0.shape[1])  # (3, D)
    ref = got = None
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a batch-only step may warn on single states
        try:
            ref = vmapped(P, X)
        except Exception as err:  # not vmappable: the batched call alone decides
            err_v = err
        try:
            got = rows(P, X)
        except Exception as err:
            err_b = err
    if ref is None and got is None:
        cls = TypeError if isinstance(err_b, TypeError) else ValueError
        raise cls(
            f"step: calling it failed both on a batch of states (3, {n}) ({err_b}) and on "
            f"single states under torch.func.vmap ({err_v})"
        ) from err_b
    if got is None or ref is None:
        return (vmapped, False) if got is None else (rows, True)
    tol = 1e-3 if H.dtype in (torch.float16, torch.bfloat16, torch.float32) else 1e-8
    ok = torch.allclose(got, ref, rtol=tol, atol=tol)
    return (rows, True) if ok else (vmapped, False)


def _forward_ad(f: StepMap, rows: bool) -> TangentMap:
    """Tangent map of a row-wise step by forward-mode AD; the k tangents ride as k*S rows.

    With ``rows`` (the step maps batches row by row), matrix products run under
    :class:`_SharedPrimal`; the first call checks that against plain forward AD and falls back
    to it for good on any disagreement.
    """
    shared: list[bool] = [rows]  # still trusted
    checked: list[bool] = [not rows]

    def plain(
        H: torch.Tensor, x: torch.Tensor | None, V: torch.Tensor, fast: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        S, k, n = V.shape
        Hr = _repeat_rows(H, k)  # (S*k, n), row s*k + j is state s
        xr = None if x is None else _repeat_rows(x, k)  # (S*k, D)
        dual = fwAD.make_dual(Hr, V.reshape(S * k, n))  # in the caller's dual level
        if fast:
            with _SharedPrimal(S * k, k):
                y = f(dual, xr)
        else:
            y = f(dual, xr)
        out = fwAD.unpack_dual(y)
        tangent = out.tangent
        if tangent is None:  # the step does not depend on h
            tangent = torch.zeros_like(out.primal)
        return out.primal[::k], tangent.reshape(S, k, n)

    def push(
        H: torch.Tensor, x: torch.Tensor | None, V: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if V is None:
            return f(H, x), None
        if not checked[0]:
            checked[0] = True
            ref = plain(H, x, V, fast=False)
            try:
                got = plain(H, x, V, fast=True)
            except Exception:
                got = None
            tol = 1e-4 if H.dtype in (torch.float16, torch.bfloat16, torch.float32) else 1e-9
            shared[0] = got is not None and all(
                torch.allclose(a, b, rtol=tol, atol=tol) for a, b in zip(got, ref, strict=True)
            )
            return ref
        return plain(H, x, V, fast=shared[0])

    return push


_PRODUCTS = {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.mm, torch.Tensor.mm}


class _SharedPrimal(TorchFunctionMode):
    """Matrix products of a dual operand with a constant inside a forward-AD step.

    The dual rows are k copies of each state (row s*k + j is state s), so the primal product
    runs on one row per state, and the constant's tangent, which forward AD would build as a
    dense zero matrix and multiply, is never formed: (p, t) @ W = (p @ W, t @ W). Everything
    else passes through. ``tanh(h @ W.T)`` then costs about what a hand-written loop costs.
    """

    def __init__(self, rows: int, k: int) -> None:
        super().__init__()
        self.rows, self.k = rows, k

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in _PRODUCTS and len(args) == 2 and not kwargs:
            a, b = args
            if _is_matrix(a) and _is_matrix(b):
                (pa, ta), (pb, tb) = fwAD.unpack_dual(a), fwAD.unpack_dual(b)
                if ta is not None and tb is None and a.shape[0] == self.rows:
                    p = _repeat_rows(func(pa[:: self.k], b), self.k)
                    return fwAD.make_dual(p, func(ta, b))
                if tb is not None and ta is None and b.shape[1] == self.rows:
                    p = _repeat_rows(func(a, pb[:, :: self.k]).T, self.k).T
                    return fwAD.make_dual(p, func(a, tb))
        elif func is F.linear and len(args) >= 2 and set(kwargs) <= {"bias"}:
            a, w = args[0], args[1]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            if _is_matrix(a) and a.shape[0] == self.rows and isinstance(w, torch.Tensor):
                pa, ta = fwAD.unpack_dual(a)
                if (
                    ta is not None
                    and fwAD.unpack_dual(w).tangent is None
                    and (bias is None or fwAD.unpack_dual(bias).tangent is None)
                ):
                    p = _repeat_rows(F.linear(pa[:: self.k], w, bias), self.k)
                    return fwAD.make_dual(p, F.linear(ta, w))
        return func(*args, **kwargs)


def _is_matrix(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.ndim == 2


def _repeat_rows(a: torch.Tensor, k: int) -> torch.Tensor:
    """(S, m) -> (S*k, m), each row k times in a row (contiguous: a dual's primal must be)."""
    S, m = a.shape
    return a.unsqueeze(1).expand(S, k, m).contiguous().view(S * k, m)


def _inputs(
    inputs: Any, total: int, H: torch.Tensor, input_size: int | None
) -> Callable[[int], torch.Tensor | None]:
    """x_t as (S, D) (or None) for t < total; zeros of input_size are not needed (skipped)."""
    S = H.shape[0]
    if inputs is None:
        return lambda t: None
    if callable(inputs) and not isinstance(inputs, torch.Tensor):

        def call(t: int) -> torch.Tensor:
            x = inputs(t)
            if (
                not isinstance(x, torch.Tensor)
                or x.ndim not in (1, 2)
                or (x.ndim == 2 and x.shape[0] != S)
            ):
                got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise ValueError(f"inputs: inputs({t}) returned {got}; expected ({S}, D) or (D,)")
            if input_size is not None and x.shape[-1] != input_size:
                raise ValueError(
                    f"inputs: inputs({t}) has {x.shape[-1]} features; the module takes {input_size}"
                )
            x = x.to(dtype=H.dtype, device=H.device)
            return x.expand(S, x.shape[-1]) if x.ndim == 1 else x

        call(0)
        return call
    xs = _checks.tensor("inputs", inputs, ndim=(2, 3))
    if not xs.is_floating_point():
        raise TypeError(f"inputs: expected a floating tensor, got dtype {xs.dtype}")
    if xs.shape[0] < total:
        raise ValueError(
            f"inputs: has {xs.shape[0]} time steps; warmup + steps needs at least {total}"
        )
    if xs.ndim == 3 and xs.shape[1] != S:
        raise ValueError(
            f"inputs: shape {tuple(xs.shape)} is (T, S, D) for S={xs.shape[1]} states, but h0 "
            f"holds {S}; pass (T, {S}, D) or (T, D)"
        )
    if input_size is not None and xs.shape[-1] != input_size:
        raise ValueError(f"inputs: has {xs.shape[-1]} features; the module takes {input_size}")
    xs = xs.detach().to(dtype=H.dtype, device=H.device)
    if xs.ndim == 2:
        xs = xs.unsqueeze(1).expand(xs.shape[0], S, xs.shape[1])  # (T, S, D)
    return lambda t: xs[t]


# -------------------------------------------------------- RNN modules: hand-written tangents


@dataclass
class _Layer:
    kind: str  # "RNN_TANH", "RNN_RELU", "GRU", "LSTM"
    w_ih: torch.Tensor  # (G*H, D)
    w_hh: torch.Tensor  # (G*H, P)
    b_ih: torch.Tensor | None
    b_hh: torch.Tensor | None
    w_hr: torch.Tensor | None = None  # LSTM projection (P, H)


def _layer_step(
    layer: _Layer,
    x: torch.Tensor | None,  # (S, D), None for zero input
    dx: torch.Tensor | None,  # (S, k, D) tangent of x, None for a constant input
    h: torch.Tensor,  # (S, P)
    c: torch.Tensor | None,  # (S, H) LSTM cell
    dh: torch.Tensor | None,  # (S, k, P)
    dc: torch.Tensor | None,  # (S, k, H)
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """One layer of nn.RNN / GRU / LSTM (PyTorch's equations) and its tangent map."""
    gi = F.linear(x, layer.w_ih, layer.b_ih) if x is not None else layer.b_ih  # (S, G*H)
    gh = F.linear(h, layer.w_hh, layer.b_hh)  # (S, G*H)
    # Tangents of the input and hidden gate pre-activations, (S, k, G*H); all k in one product.
    dgi = None if dx is None else dx @ layer.w_ih.T
    dgh = None if dh is None else dh @ layer.w_hh.T
    dg = dgh if dgi is None or dgh is None else dgh + dgi
    if layer.kind in ("RNN_TANH", "RNN_RELU"):
        pre = gh if gi is None else gi + gh  # (S, H)
        if layer.kind == "RNN_TANH":
            h_new = torch.tanh(pre)
            slope = 1 - h_new * h_new
        else:
            h_new = torch.relu(pre)
            slope = (pre > 0).to(pre.dtype)
        return h_new, None, None if dg is None else slope.unsqueeze(1) * dg, None
    if layer.kind == "GRU":
        h_r, h_z, h_n = gh.chunk(3, -1)  # (S, H) each
        if gi is None:
            r, z, n_pre = torch.sigmoid(h_r), torch.sigmoid(h_z), None
        else:
            i_r, i_z, i_n = gi.chunk(3, -1)
            r, z, n_pre = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z), i_n
        n_ = torch.tanh(r * h_n if n_pre is None else n_pre + r * h_n)
        h_new = (1 - z) * n_ + z * h
        if dg is None or dgh is None:
            return h_new, None, None, None
        assert dh is not None
        dr, dz, _ = dg.chunk(3, -1)  # (S, k, H) each
        dr = _u(r * (1 - r)) * dr
        dz = _u(z * (1 - z)) * dz
        dn_pre = dr * _u(h_n) + _u(r) * dgh.chunk(3, -1)[2]  # r gates only the hidden part
        if dgi is not None:
            dn_pre = dn_pre + dgi.chunk(3, -1)[2]
        dn = _u(1 - n_ * n_) * dn_pre
        return h_new, None, dz * _u(h - n_) + _u(1 - z) * dn + _u(z) * dh, None
    # LSTM
    assert c is not None
    gates = gh if gi is None else gi + gh  # (S, 4H)
    i, f, g, o = gates.chunk(4, -1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c_new = f * c + i * g  # (S, H)
    tc = torch.tanh(c_new)
    m = o * tc  # (S, H)
    h_new = m if layer.w_hr is None else m @ layer.w_hr.T  # (S, P)
    if dg is None:
        return h_new, c_new, None, None
    assert dc is not None
    di, df, dgg, do = dg.chunk(4, -1)  # (S, k, H) each
    dc_new = (
        _u(f * (1 - f) * c) * df + _u(f) * dc + _u(i * (1 - i) * g) * di + _u(i * (1 - g * g)) * dgg
    )
    dm = _u(o * (1 - o) * tc) * do + _u(o * (1 - tc * tc)) * dc_new
    dh_new = dm if layer.w_hr is None else dm @ layer.w_hr.T
    return h_new, c_new, dh_new, dc_new


def _u(a: torch.Tensor) -> torch.Tensor:
    return a.unsqueeze(1)  # (S, H) -> (S, 1, H), broadcast over the k tangents


def _stack_map(layers: list[_Layer], sizes: list[int]) -> TangentMap:
    """Tangent map of stacked layers on flat states [h_0..h_{L-1}, c_0..c_{L-1}]."""
    L = len(layers)
    lstm = layers[0].kind == "LSTM"

    def push(
        H: torch.Tensor, x: torch.Tensor | None, V: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        hs = H.split(sizes, -1) if len(sizes) > 1 else (H,)  # parts (S, P) / (S, H)
        vs: Sequence[Any] = [None] * len(sizes)
        if V is not None:
            vs = V.split(sizes, -1) if len(sizes) > 1 else (V,)
        new: list[torch.Tensor] = [H] * len(sizes)
        dnew: list[Any] = [None] * len(sizes)
        inp, dinp = x, None
        for layer_idx, layer in enumerate(layers):
            c = hs[L + layer_idx] if lstm else None
            dc = vs[L + layer_idx] if lstm else None
            h_new, c_new, dh_new, dc_new = _layer_step(
                layer, inp, dinp, hs[layer_idx], c, vs[layer_idx], dc
            )
            new[layer_idx], dnew[layer_idx] = h_new, dh_new
            if lstm:
                assert c_new is not None
                new[L + layer_idx], dnew[L + layer_idx] = c_new, dc_new
            inp, dinp = h_new, dh_new
        if len(new) == 1:
            return new[0], dnew[0]
        H_next = torch.cat(new, -1)  # (S, n)
        return H_next, None if V is None else torch.cat(dnew, -1)  # (S, k, n)

    return push


def _module_dynamics(m: nn.RNNBase, h0: Any) -> _Dynamics:
    name = type(m).__name__
    check_steppable(m, "step")
    if m.mode not in ("RNN_TANH", "RNN_RELU", "GRU", "LSTM"):
        raise ValueError(f"step: unsupported recurrent mode {m.mode!r} of {name}")
    L, Hd = m.num_layers, m.hidden_size
    P = m.proj_size if m.proj_size > 0 else Hd
    lstm = m.mode == "LSTM"
    layers = [
        _Layer(
            m.mode,
            getattr(m, f"weight_ih_l{i}").detach(),
            getattr(m, f"weight_hh_l{i}").detach(),
            getattr(m, f"bias_ih_l{i}").detach() if m.bias else None,
            getattr(m, f"bias_hh_l{i}").detach() if m.bias else None,
            getattr(m, f"weight_hr_l{i}").detach() if m.proj_size > 0 else None,
        )
        for i in range(L)
    ]
    sizes = [P] * L + ([Hd] * L if lstm else [])
    n = sum(sizes)
    if lstm and isinstance(h0, (tuple, list)):
        if len(h0) != 2:
            raise ValueError(f"h0: an LSTM takes the tuple (h, c), got {len(h0)} parts")
        H = torch.cat(
            [
                _layered(f"h0[{i}]", p, L, w)
                for i, (p, w) in enumerate(zip(h0, (P, Hd), strict=True))
            ],
            -1,
        )
    elif isinstance(h0, (tuple, list)):
        raise TypeError(f"h0: {name} takes one state tensor, got a {type(h0).__name__}")
    elif lstm:
        if isinstance(h0, torch.Tensor) and h0.ndim == 3:
            raise ValueError(
                f"h0: an LSTM's state is the tuple (h, c), shapes ({L}, S, {P}) and "
                f"({L}, S, {Hd}) as PyTorch lays them out; got one tensor {tuple(h0.shape)}"
            )
        H = _sized("h0", h0, n, "(h, c), or flat ")
    else:
        H = _layered("h0", h0, L, Hd)  # (S, n) flat, or PyTorch's layout
    return _Dynamics(
        _matched(H, layers[0].w_hh, name), m.input_size, tangent=_stack_map(layers, sizes)
    )


def _layered(name: str, value: Any, L: int, width: int) -> torch.Tensor:
    """(S, L*width) from PyTorch's (L, S, width) / (L, width), or flat (S, L*width) / (L*width,)."""
    value = _checks.tensor(name, value, ndim=(1, 2, 3))
    if value.ndim == 3 and value.shape[0] == L and value.shape[2] == width:
        return value.detach().transpose(0, 1).reshape(value.shape[1], L * width)
    if value.ndim == 2 and L > 1 and value.shape == (L, width):
        return value.detach().reshape(1, L * width)
    if value.ndim in (1, 2) and value.shape[-1] == L * width:
        return value.detach().reshape(-1, L * width)
    raise ValueError(
        f"{name}: got shape {tuple(value.shape)}; expected ({L}, S, {width}) or ({L}, {width}) "
        f"as PyTorch lays it out, or flat (S, {L * width}) / ({L * width},)"
    )


def _matched(H: torch.Tensor, weight: torch.Tensor, name: str) -> torch.Tensor:
    if not H.is_floating_point():
        raise TypeError(f"h0: expected a floating tensor, got dtype {H.dtype}")
    if H.dtype != weight.dtype or H.device != weight.device:
        raise ValueError(
            f"h0: is {H.dtype} on {H.device} but the {name}'s weights are {weight.dtype} on "
            f"{weight.device}; pass h0.to(weight) or convert the module"
        )
    return H


def _cell_dynamics(cell: nn.RNNCellBase, h0: Any) -> _Dynamics:
    name = type(cell).__name__
    if isinstance(cell, nn.LSTMCell):
        kind = "LSTM"
    elif isinstance(cell, nn.GRUCell):
        kind = "GRU"
    elif isinstance(cell, nn.RNNCell):
        kind = "RNN_TANH" if cell.nonlinearity == "tanh" else "RNN_RELU"
    else:
        raise TypeError(f"step: unsupported cell type {name}; pass a callable step instead")
    Hd = cell.hidden_size
    layer = _Layer(
        kind,
        cell.weight_ih.detach(),
        cell.weight_hh.detach(),
        cell.bias_ih.detach() if cell.bias_ih is not None else None,
        cell.bias_hh.detach() if cell.bias_hh is not None else None,
    )
    sizes = [Hd, Hd] if kind == "LSTM" else [Hd]
    if kind == "LSTM" and isinstance(h0, (tuple, list)):
        if len(h0) != 2:
            raise ValueError(f"h0: an LSTMCell takes the tuple (h, c), got {len(h0)} parts")
        parts = [_sized(f"h0[{i}]", p, Hd) for i, p in enumerate(h0)]
        if parts[0].shape[0] != parts[1].shape[0]:
            raise ValueError(f"h0: h and c hold {parts[0].shape[0]} and {parts[1].shape[0]} states")
        H = torch.cat(parts, -1)
    elif isinstance(h0, (tuple, list)):
        raise TypeError(f"h0: {name} takes one state tensor, got a {type(h0).__name__}")
    else:
        H = _sized("h0", h0, sum(sizes))
    return _Dynamics(
        _matched(H, cell.weight_hh, name), cell.input_size, tangent=_stack_map([layer], sizes)
    )


def _sized(name: str, value: Any, width: int, other: str = "") -> torch.Tensor:
    value = _checks.tensor(name, value, ndim=(1, 2))
    if value.shape[-1] != width:
        raise ValueError(
            f"{name}: got shape {tuple(value.shape)}; expected {other}(S, {width}) or ({width},)"
        )
    return value.detach().reshape(-1, width)
