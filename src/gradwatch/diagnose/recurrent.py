"""Gradients through time in nn.RNN / nn.LSTM / nn.GRU modules."""

from __future__ import annotations

import math

from gradwatch.diagnose.dynamics import _clip_fix
from gradwatch.diagnose.finding import Finding
from gradwatch.watch.history import RunHistory

EXPLODE = 1e3  # gradient at the longest lag over lag 0
GROWING, COMPOUND = 1.01, 10.0  # a fitted per-step factor above 1.01 compounding past 10x


def recurrent_findings(h: RunHistory) -> list[Finding]:
    out = []
    for name in dict.fromkeys(s.module for s in h.recurrent):
        sample = h.profiles(name)[0]  # the earliest: behaviour near init
        p = sample.profile
        kind = h.layer_kinds[h.layers.index(name)] if name in h.layers else "RNN"
        by_lag = p.grad_norm.flip(0)
        T = len(by_lag)
        f = p.decay_factor
        ev = {"per_step_factor": f, "steps": float(T), "at_step": float(sample.step)}
        lag = p.vanishing_lag
        if lag is not None:
            ev["vanishing_lag"] = float(lag)
            out.append(
                Finding(
                    "recurrent_vanishing",
                    "warning",
                    (name,),
                    f"in {name} ({kind}) the gradient from the last step falls below 1e-3 at lag "
                    f"{lag} of {T} (per-step factor {f:.3f})",
                    f"the per-step Jacobian of the {kind} contracts: {f:.3f}^k vanishes",
                    _vanish_fix(h, name, kind),
                    ev,
                )
            )
            continue
        top = float(by_lag.max()) / float(by_lag[0]) if float(by_lag[0]) > 0 else math.inf
        steady = math.isfinite(f) and f > GROWING and f ** (T - 1) > COMPOUND
        if steady or top > EXPLODE or not math.isfinite(top):
            ev["growth"] = top
            out.append(
                Finding(
                    "recurrent_exploding",
                    "warning",
                    (name,),
                    f"in {name} ({kind}) the gradient grows {top:.2e}x going back {T} steps "
                    f"(per-step factor {f:.3f})",
                    "the recurrent Jacobian expands (its largest singular value is above 1): the "
                    "dynamics are chaotic or the recurrent weights too large",
                    _clip_fix(h) + f"; initialise the recurrent weights of {name} orthogonally or "
                    "scale them to spectral radius below 1",
                    ev,
                )
            )
    return out


def _vanish_fix(h: RunHistory, name: str, kind: str) -> str:
    if kind == "RNN":
        return f"swap nn.RNN for nn.LSTM or nn.GRU at {name}"
    if kind == "LSTM":
        bias = float(h.meta.get(f"lstm_forget_bias:{name}", "nan"))
        if bias < 0.5:
            return (
                f"set the LSTM forget-gate bias of {name} to 1 (PyTorch initialises it to 0; "
                f"now {bias:.2g}): bias_ih_l{{k}}[H:2H] = 1 for every layer k"
            )
    return (
        f"shorten the path through {name}: truncated BPTT, a hierarchical model (conv + "
        "pooling before the recurrence), or attention over the sequence"
    )
