"""Gradients through time: ||dL/dh_t|| for every step t of a recurrence, in one backward pass.

The recurrence is unrolled step by step with the module's own weights (PyTorch's equations,
gate order i,f,g,o for the LSTM and r,z,n for the GRU), and a zero probe e_t requiring grad is
added to each state: h_t + e_t. dL/de_t is then the total derivative dL/dh_t through every
later step, so one ``autograd.grad`` call on all probes gives the whole profile. The spectral
norm of dh_T/dh_t comes from power iteration with Jacobian-vector products forward through
the steps and vector-Jacobian products back, so no Jacobian is ever formed.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import vjp, vmap

from gradwatch._result import Result
from gradwatch.core import _checks
from gradwatch.core._recurrent import check_steppable

__all__ = ["BPTTProfile", "bptt_profile"]

State = tuple[torch.Tensor, ...]
Step = Callable[[torch.Tensor, State], State]

VANISH_RATIO = 1e-3  # "vanished": below this fraction of the gradient at lag 0
N_DEFAULT_LAGS = 16


@dataclass(frozen=True)
class BPTTProfile(Result):
    """How the loss gradient reaches each step of a recurrence.

    Time index t = 0..T-1 is the state after reading x_t; lag = T-1-t counts the steps back
    from the last state. The state is every layer's h (and c for LSTMs) at step t.

    Attributes:
        grad_norm: (T,) ||dL/dh_t||, Frobenius norm over the batch and the whole state.
        hidden_grad_norm: (T,) the same over the h components only (drops LSTM cells c;
            equal to ``grad_norm`` when the state has no c).
        grad_norm_per_example: (T, B) ||dL/dh_t|| for each batch example.
        lag: (T,) T-1-t.
        spectral_lags: (M,) lags k at which the spectral norm was computed.
        spectral_norm: (M,) ||dh_{T-1}/dh_{T-1-k}||_2 for batch example 0.
        spectral_norm_per_example: (M, B) the same for every batch example.
        decay_factor: exp(slope) of a least-squares fit of ln grad_norm against lag: the
            per-step factor by which the gradient shrinks (< 1) or grows (> 1) going back
            in time; NaN when fewer than two lags have a finite nonzero gradient.
        loss: the loss value.
    """

    grad_norm: torch.Tensor
    hidden_grad_norm: torch.Tensor
    grad_norm_per_example: torch.Tensor
    lag: torch.Tensor
    spectral_lags: torch.Tensor
    spectral_norm: torch.Tensor
    spectral_norm_per_example: torch.Tensor
    decay_factor: float
    loss: float

    @property
    def vanishing_lag(self) -> int | None:
        """First lag at which grad_norm falls below 1e-3 of its value at lag 0, else None."""
        by_lag = self.grad_norm.flip(0)  # (T,) index = lag
        ref = float(by_lag[0])
        if not math.isfinite(ref) or ref == 0.0:
            return None
        below = torch.nonzero(by_lag < VANISH_RATIO * ref)
        return int(below[0, 0]) if below.numel() else None


@dataclass(frozen=True)
class _Recurrence:
    """A recurrence in a common form: a state tuple, one step, a readout."""

    step: Step  # (x_t (B, D), state) -> state
    state0: State  # components (B, ...)
    n_hidden: int  # the leading n_hidden components are h; the rest are c
    readout: Callable[[State], torch.Tensor]  # state -> y_t (B, H_out)
    batch_first: bool


def bptt_profile(
    module: Any,
    x: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, Any], torch.Tensor] | None = None,
    target: Any = None,
    *,
    h0: torch.Tensor | Sequence[torch.Tensor] | None = None,
    lags: Sequence[int] | torch.Tensor | None = None,
    power_iters: int = 20,
    generator: torch.Generator | None = None,
) -> BPTTProfile:
    """Per-step gradient norms ||dL/dh_t|| and spectral norms of dh_T/dh_t of a recurrence.

    Unrolls the recurrence with the module's own weights, adds a zero probe to the state at
    every step and reads every dL/dh_t from one backward pass (not T passes). The spectral
    norm of the product of per-step Jacobians from step T-1-k to T-1 comes from power
    iteration (jvp forward through the steps, vjp back), for all lags k at once.

    Args:
        module: ``nn.RNN`` (tanh or relu), ``nn.LSTM`` (``proj_size`` allowed) or ``nn.GRU``
            with any ``num_layers``, ``bias`` and ``batch_first`` (not bidirectional, no
            dropout in training mode); or a cell: ``nn.RNNCell``, ``nn.GRUCell``,
            ``nn.LSTMCell`` (state ``(h, c)``) or any callable ``cell(x_t, h) -> h_next``
            where h is a tensor or a tuple of tensors, each with the batch as dim 0. The
            spectral norms assume batch examples do not interact (true of all of these).
        x: input sequence, (T, B, D); (B, T, D) for a module with ``batch_first=True``.
            Cells read x time-major, (T, B, ...).
        loss_fn: ``loss_fn(output, target) -> scalar``, applied to the output sequence in
            the module's layout: the top layer's h, (T, B, H) or (B, T, H); for cells the
            stacked states (first component for tuple states), (T, B, ...). Default: a fixed
            random unit vector u (drawn from ``generator``) dotted with the LAST step's
            output of each example and summed over the batch, L = sum_b <u, y_T[b]>, so the
            profile shows how the last step's signal reaches earlier steps.
        target: passed to ``loss_fn``; must be None when ``loss_fn`` is None.
        h0: initial state; default zeros. Modules: (num_layers, B, H) as for the module
            itself, ``(h0, c0)`` for an LSTM. Cells: (B, H), ``(h, c)`` for an LSTMCell;
            required for a custom callable cell.
        lags: lags k in 0..T-1 for the spectral norm; default about 16 log-spaced lags in
            1..T-1; ``()`` skips them. Sorted and deduplicated.
        power_iters: power-iteration steps for the spectral norms.
        generator: seeds the default loss direction and the power-iteration start vectors;
            default ``torch.Generator().manual_seed(0)``.

    Returns:
        A :class:`BPTTProfile`.

    Raises:
        TypeError / ValueError: naming the argument, for a bidirectional module, a non-cell,
            a wrong rank, dtype, size or batch, NaN/Inf input, or a loss that is not a scalar.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> rnn = torch.nn.RNN(4, 8)
        >>> prof = bptt_profile(rnn, torch.randn(50, 2, 4))
        >>> prof.grad_norm.shape, prof.decay_factor < 1
        (torch.Size([50]), True)

    References:
        Bengio, Simard & Frasconi (1994), "Learning long-term dependencies with gradient
        descent is difficult"; Pascanu, Mikolov & Bengio (2013), "On the difficulty of
        training recurrent neural networks".
    """
    rec, xs = _recurrence(module, x, h0)
    if loss_fn is not None:
        _checks.callable_("loss_fn", loss_fn)
    elif target is not None:
        raise ValueError(
            "target: given but loss_fn is None; the default loss (a random projection of the "
            "last step's output) ignores it. Pass loss_fn too."
        )
    power_iters = _checks.count("power_iters", power_iters, low=1)
    T, B = xs.shape[0], xs.shape[1]
    spec_lags = _lags(lags, T)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)

    out_tm, states, probes = _unroll(rec, xs, probe_steps=range(T))  # out_tm (T, B, ...)
    if loss_fn is None:
        y_last = out_tm[-1]  # (B, ...)
        u = _randn(y_last.shape[1:], gen, y_last)
        loss = (y_last * (u / u.norm())).sum()
    else:
        loss = _scalar_loss(loss_fn(out_tm.transpose(0, 1) if rec.batch_first else out_tm, target))

    flat = [e for t in range(T) for e in probes[t]]
    grads = torch.autograd.grad(loss, flat, allow_unused=True, materialize_grads=True)
    n_comp = len(rec.state0)
    sq = torch.stack([g.detach().flatten(1).pow(2).sum(1) for g in grads])  # (T*C, B)
    sq = sq.reshape(T, n_comp, B)
    per_example = sq.sum(1).sqrt()  # (T, B)
    grad_norm = sq.sum((1, 2)).sqrt()  # (T,)
    hidden = sq[:, : rec.n_hidden].sum((1, 2)).sqrt()  # (T,)
    lag = torch.arange(T - 1, -1, -1)  # (T,)

    primals = [rec.state0, *[tuple(c.detach() for c in s) for s in states[:-1]]]
    spec = _spectral(rec, xs, primals, spec_lags, power_iters, gen)  # (M, B)
    return BPTTProfile(
        grad_norm=grad_norm,
        hidden_grad_norm=hidden,
        grad_norm_per_example=per_example,
        lag=lag,
        spectral_lags=torch.tensor(spec_lags, dtype=torch.int64),
        spectral_norm=spec[:, 0],
        spectral_norm_per_example=spec,
        decay_factor=_decay_factor(grad_norm, lag),
        loss=float(loss.detach()),
    )


def _recurrence(
    module: Any, x: Any, h0: torch.Tensor | Sequence[torch.Tensor] | None
) -> tuple[_Recurrence, torch.Tensor]:
    """Validate the inputs and bring them to the common form; xs is time-major (T, B, ...)."""
    if isinstance(module, type):
        raise TypeError(f"module: got the class {module.__name__}; pass an instance of it")
    if isinstance(module, nn.RNNBase):
        return _module_recurrence(module, x, h0)
    if isinstance(module, (nn.RNNCellBase,)):
        return _nn_cell_recurrence(module, x, h0)
    return _callable_recurrence(module, x, h0)


def _module_recurrence(
    m: nn.RNNBase, x: Any, h0: torch.Tensor | Sequence[torch.Tensor] | None
) -> tuple[_Recurrence, torch.Tensor]:
    name = type(m).__name__
    check_steppable(m, "module")
    x = _checks.tensor("x", x, ndim=3)
    weight = cast(torch.Tensor, m.weight_ih_l0)
    _match_module("x", x, weight, m.input_size, name)
    xs = x.transpose(0, 1) if m.batch_first else x  # (T, B, D)
    L, B = m.num_layers, xs.shape[1]
    h_out = m.proj_size if m.proj_size > 0 else m.hidden_size
    lstm = m.mode == "LSTM"
    if h0 is None:
        hs = xs.new_zeros(L, B, h_out)  # (L, B, H_out)
        cs = xs.new_zeros(L, B, m.hidden_size) if lstm else None
    elif lstm:
        if not isinstance(h0, (tuple, list)) or len(h0) != 2:
            raise TypeError(f"h0: an LSTM needs the tuple (h0, c0), got {type(h0).__name__}")
        hs = _state_tensor("h0[0]", h0[0], (L, B, h_out), x)
        cs = _state_tensor("h0[1]", h0[1], (L, B, m.hidden_size), x)
    else:
        hs = _state_tensor("h0", h0, (L, B, h_out), x)
        cs = None
    state0 = tuple(hs.unbind(0)) + (tuple(cs.unbind(0)) if cs is not None else ())
    rec = _Recurrence(
        step=functools.partial(_module_step, m),
        state0=state0,
        n_hidden=L,
        readout=lambda s: s[L - 1],
        batch_first=bool(m.batch_first),
    )
    return rec, xs


def _module_step(m: nn.RNNBase, x_t: torch.Tensor, s: State) -> State:
    """One time step of nn.RNN / nn.LSTM / nn.GRU with PyTorch's equations."""
    L = m.num_layers
    hs, cs = s[:L], s[L:]
    new_h: list[torch.Tensor] = []
    new_c: list[torch.Tensor] = []
    inp = x_t  # (B, D)
    for k in range(L):
        w_ih, w_hh = getattr(m, f"weight_ih_l{k}"), getattr(m, f"weight_hh_l{k}")
        b_ih = getattr(m, f"bias_ih_l{k}") if m.bias else None
        b_hh = getattr(m, f"bias_hh_l{k}") if m.bias else None
        gi = F.linear(inp, w_ih, b_ih)  # (B, G*H)
        gh = F.linear(hs[k], w_hh, b_hh)  # (B, G*H)
        if m.mode == "RNN_TANH":
            h = torch.tanh(gi + gh)
        elif m.mode == "RNN_RELU":
            h = torch.relu(gi + gh)
        elif m.mode == "GRU":
            i_r, i_z, i_n = gi.chunk(3, 1)
            h_r, h_z, h_n = gh.chunk(3, 1)
            r = torch.sigmoid(i_r + h_r)
            z = torch.sigmoid(i_z + h_z)
            n = torch.tanh(i_n + r * h_n)
            h = (1 - z) * n + z * hs[k]
        else:  # LSTM
            i, f, g, o = (gi + gh).chunk(4, 1)
            c = torch.sigmoid(f) * cs[k] + torch.sigmoid(i) * torch.tanh(g)  # (B, H)
            h = torch.sigmoid(o) * torch.tanh(c)
            if m.proj_size > 0:
                h = F.linear(h, getattr(m, f"weight_hr_l{k}"))  # (B, P)
            new_c.append(c)
        new_h.append(h)
        inp = h
    return (*new_h, *new_c)


def _nn_cell_recurrence(
    cell: nn.RNNCellBase, x: Any, h0: torch.Tensor | Sequence[torch.Tensor] | None
) -> tuple[_Recurrence, torch.Tensor]:
    name = type(cell).__name__
    x = _checks.tensor("x", x, ndim=3)  # (T, B, D)
    _match_module("x", x, cell.weight_ih, cell.input_size, name)
    B, H = x.shape[1], cell.hidden_size
    lstm = isinstance(cell, nn.LSTMCell)
    if h0 is None:
        state0: State = (x.new_zeros(B, H),) * (2 if lstm else 1)
    elif lstm:
        if not isinstance(h0, (tuple, list)) or len(h0) != 2:
            raise TypeError(f"h0: an LSTMCell needs the tuple (h, c), got {type(h0).__name__}")
        state0 = tuple(_state_tensor(f"h0[{i}]", h, (B, H), x) for i, h in enumerate(h0))
    else:
        state0 = (_state_tensor("h0", h0, (B, H), x),)

    def step(x_t: torch.Tensor, s: State) -> State:
        return tuple(cell(x_t, (s[0], s[1]))) if lstm else (cell(x_t, s[0]),)

    return _Recurrence(step, state0, 1, lambda s: s[0], batch_first=False), x


def _callable_recurrence(
    cell: Any, x: Any, h0: torch.Tensor | Sequence[torch.Tensor] | None
) -> tuple[_Recurrence, torch.Tensor]:
    if not callable(cell):
        raise TypeError(
            f"module: expected nn.RNN/nn.LSTM/nn.GRU, an nn.*Cell or a callable "
            f"cell(x_t, h) -> h_next, got {type(cell).__name__}"
        )
    fn = cell.forward if isinstance(cell, nn.Module) else cell
    try:
        sig: inspect.Signature | None = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature
        sig = None
    if sig is not None:
        try:
            sig.bind(None, None)
        except TypeError:
            raise TypeError(
                f"module: {type(cell).__name__}{sig} is not a recurrent cell; expected "
                "nn.RNN/nn.LSTM/nn.GRU, an nn.*Cell or a callable cell(x_t, h) -> h_next"
            ) from None
    x = _checks.tensor("x", x, ndim=tuple(range(2, 8)))  # (T, B, ...)
    if h0 is None:
        raise ValueError(
            "h0: required for a custom cell (its state size is unknown); pass the initial "
            "state, a tensor (B, ...) or a tuple of them"
        )
    tuple_state = isinstance(h0, (tuple, list))
    parts = list(h0) if isinstance(h0, (tuple, list)) else [h0]
    if not parts:
        raise ValueError("h0: got an empty tuple; a state needs at least one tensor")
    B = x.shape[1]
    state0 = tuple(
        _state_tensor(f"h0[{i}]" if tuple_state else "h0", h, None, x) for i, h in enumerate(parts)
    )
    for i, h in enumerate(state0):
        if h.ndim == 0 or h.shape[0] != B:
            where = f"h0[{i}]" if tuple_state else "h0"
            raise ValueError(
                f"{where}: batch mismatch: x has batch size {B} (dim 1 of (T, B, ...)), the "
                f"state has shape {tuple(h.shape)}; the state needs the batch as dim 0"
            )

    def step(x_t: torch.Tensor, s: State) -> State:
        if not tuple_state:
            return (cell(x_t, s[0]),)
        out = cell(x_t, tuple(s))
        if not isinstance(out, (tuple, list)):
            raise TypeError(
                f"module: the cell got a tuple state and must return a tuple, got "
                f"{type(out).__name__}"
            )
        return tuple(out)

    return _Recurrence(step, state0, 1, lambda s: s[0], batch_first=False), x


def _match_module(
    name: str, x: torch.Tensor, weight: torch.Tensor, input_size: int, module: str
) -> None:
    if x.shape[-1] != input_size:
        raise ValueError(
            f"{name}: last dimension is {x.shape[-1]}, but the {module} has input_size={input_size}"
        )
    if x.dtype != weight.dtype or x.device != weight.device:
        raise TypeError(
            f"{name}: {x.dtype} on {x.device}, but the {module}'s weights are {weight.dtype} on "
            f"{weight.device}; convert one of them"
        )


def _state_tensor(
    name: str, h: Any, shape: tuple[int, ...] | None, x: torch.Tensor
) -> torch.Tensor:
    h = _checks.tensor(name, h)
    if shape is not None and tuple(h.shape) != shape:
        raise ValueError(
            f"{name}: expected shape {shape} (layers, batch, hidden as the module needs for x "
            f"of shape {tuple(x.shape)}), got {tuple(h.shape)}"
        )
    if h.dtype != x.dtype:
        raise TypeError(f"{name}: dtype {h.dtype} differs from x's {x.dtype}")
    return h


def _lags(lags: Sequence[int] | torch.Tensor | None, T: int) -> list[int]:
    if lags is None:
        if T < 2:
            return []
        grid = np.round(np.geomspace(1, T - 1, N_DEFAULT_LAGS)).astype(np.int64)
        return sorted({int(k) for k in grid})
    if isinstance(lags, torch.Tensor):
        if lags.is_floating_point() or lags.ndim != 1:
            raise TypeError(
                f"lags: expected a 1-D integer tensor, got {lags.dtype} of shape "
                f"{tuple(lags.shape)}"
            )
        lags = [int(k) for k in lags.tolist()]
    if isinstance(lags, (str, bytes)) or not isinstance(lags, Sequence):
        raise TypeError(f"lags: expected a sequence of ints, got {type(lags).__name__}")
    return sorted({_checks.count(f"lags[{i}]", k, low=0, high=T - 1) for i, k in enumerate(lags)})


def _randn(shape: torch.Size, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    # Draw on the generator's device, then move: same numbers on CPU and GPU.
    return torch.randn(shape, generator=gen, dtype=like.dtype, device=gen.device).to(like.device)


def _scalar_loss(loss: Any) -> torch.Tensor:
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        got = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError(f"loss_fn: must return a scalar tensor, got {got}")
    if not loss.requires_grad:
        raise ValueError(
            "loss_fn: the loss does not depend on the output through autograd (detached?); "
            "it must be differentiable in the output"
        )
    return loss.reshape(())


def _unroll(
    rec: _Recurrence, xs: torch.Tensor, probe_steps: Sequence[int] | range = ()
) -> tuple[torch.Tensor, list[State], dict[int, State]]:
    """Run the recurrence; add a zero probe requiring grad to the state at ``probe_steps``.

    Returns the time-major outputs (T, B, ...), the (probed) states after each step and the
    probes by step.
    """
    s = rec.state0
    wanted = set(probe_steps)
    outs: list[torch.Tensor] = []
    states: list[State] = []
    probes: dict[int, State] = {}
    for t in range(xs.shape[0]):
        s = rec.step(xs[t], s)
        if t == 0:
            _check_step(s, rec.state0)
        if t in wanted:
            e = tuple(torch.zeros_like(c).requires_grad_() for c in s)
            s = tuple(c + ec for c, ec in zip(s, e, strict=True))
            probes[t] = e
        states.append(s)
        outs.append(rec.readout(s))
    return torch.stack(outs), states, probes


def _check_step(s: Any, s0: State) -> None:
    ok = (
        isinstance(s, tuple)
        and len(s) == len(s0)
        and all(
            isinstance(c, torch.Tensor) and c.shape == c0.shape for c, c0 in zip(s, s0, strict=True)
        )
    )
    if not ok:
        got = [tuple(c.shape) if isinstance(c, torch.Tensor) else type(c).__name__ for c in s]
        want = [tuple(c.shape) for c in s0]
        raise ValueError(f"module: the cell must return a state shaped like h0 {want}, got {got}")


def _spectral(
    rec: _Recurrence,
    xs: torch.Tensor,
    primals: list[State],
    lags: list[int],
    power_iters: int,
    gen: torch.Generator,
) -> torch.Tensor:
    """||J_k||_2 per lag k and example, J_k = dh_{T-1}/dh_{T-1-k}; (M, B).

    All lags share the sweeps: the tangent for lag k enters at step T-k, so the M vectors
    run side by side (vmapped) through the steps. Power iteration on J_k^T J_k.
    """
    T, B, M = xs.shape[0], xs.shape[1], len(lags)
    like = rec.state0[0]
    if M == 0:
        return like.new_zeros(0, B)
    K = max(lags)
    first = T - K
    start = torch.tensor([T - k for k in lags])  # (M,) step at which J_k's product begins

    def mask(t: int, c: torch.Tensor) -> torch.Tensor:
        return (start == t).to(c).reshape(M, *([1] * (c.ndim - 1)))  # (M, 1, ...)

    def step_fn(t: int) -> Callable[..., State]:
        return lambda *s: rec.step(xs[t], s)

    def norms(v: State) -> torch.Tensor:
        return sum(c.flatten(2).pow(2).sum(-1) for c in v).sqrt()  # type: ignore[union-attr]

    def scale(v: State, n: torch.Tensor) -> State:
        return tuple(c / n.reshape(M, B, *([1] * (c.ndim - 2))) for c in v)

    with torch.no_grad():
        # J_t^T w: one vjp per step, kept for all sweeps. J_t z: the vjp of that vjp (it is
        # linear in w, so its own vjp is its transpose); cheaper than forward-mode jvp here.
        zero = tuple(torch.zeros_like(c) for c in rec.state0)
        vjp_fns = [vjp(step_fn(t), *primals[t])[1] for t in range(first, T)]
        jvp_fns = [vjp(fn, zero)[1] for fn in vjp_fns]

        def forward(v: State) -> State:  # z_k = J_k v_k, all k
            z = tuple(torch.zeros_like(c) for c in v)
            for t in range(first, T):
                z = tuple(zc + mask(t, vc) * vc for zc, vc in zip(z, v, strict=True))
                z = vmap(jvp_fns[t - first])(z)[0]
            return tuple(zc + mask(T, vc) * vc for zc, vc in zip(z, v, strict=True))

        def backward(u: State) -> State:  # w_k = J_k^T u_k, all k
            out = tuple(mask(T, c) * c for c in u)
            w = u
            for t in range(T - 1, first - 1, -1):
                w = vmap(vjp_fns[t - first])(w)
                out = tuple(oc + mask(t, wc) * wc for oc, wc in zip(out, w, strict=True))
            return out

        tiny = torch.finfo(like.dtype).tiny
        v = tuple(_randn(torch.Size((M, *c.shape)), gen, c) for c in rec.state0)  # (M, B, ...)
        v = scale(v, norms(v).clamp_min(tiny))
        for _ in range(power_iters):
            w = backward(forward(v))
            v = scale(w, norms(w).clamp_min(tiny))
        return norms(forward(v))  # (M, B)


def _decay_factor(grad_norm: torch.Tensor, lag: torch.Tensor) -> float:
    g = grad_norm.detach().double().cpu()
    k = lag.double()
    ok = torch.isfinite(g) & (g > 0)
    if int(ok.sum()) < 2:
        return math.nan
    y, k = g[ok].log(), k[ok]
    kc = k - k.mean()
    var = float((kc * kc).sum())
    if var == 0.0:
        return math.nan
    return math.exp(float((kc * (y - y.mean())).sum()) / var)
