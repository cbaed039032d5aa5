"""The chaos lab: Lyapunov exponents of random tanh RNNs and the edge of chaos.

Random autonomous tanh RNNs h_{t+1} = tanh(W h_t), W_ij ~ N(0, g^2 / N), swept over g: the
largest Lyapunov exponent from :func:`gradwatch.core.lyapunov.lyapunov_spectrum` (QR method)
against the mean-field prediction 0.5 ln chi1 (:mod:`gradwatch.core.meanfield`), the per-step
growth of ||dL/dh_t|| going back in time from :func:`gradwatch.core.bptt.bptt_profile` on the
same networks, and input-driven copies of such RNNs trained on a delayed-recall task across g.
Every number is measured in this run.
"""

from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from gradwatch.core import meanfield
from gradwatch.core.bptt import bptt_profile
from gradwatch.core.lyapunov import lyapunov_spectrum
from gradwatch.labs import register
from gradwatch.labs.base import Claim, LabConfig, LabResult, Plot, Series, Table, one_thread
from gradwatch.labs.base import steps as progress

__all__ = ["chaos"]

EDGE = 1.0  # mean-field edge of chaos of the autonomous tanh RNN: chi1 = g^2 phi'(0)^2 = 1
CROSS_TOL = 0.1  # |zero crossing - 1|: finite-N spectral radius of W / g is 1 + O(N^-1/2)
MF_TOL = 0.05  # nats per step: measured vs 0.5 ln chi1 (the annealed mean-field theory)
GROWTH_TOL = 0.05  # nats per step: fitted gradient growth vs lambda_max, per g
SIGN_SHARE = 0.99  # every resolved network must agree in sign
RESOLUTION = 3.0  # a fit over T lags resolves growth rates above RESOLUTION / T nats per step
BEST_BAND = (0.8, 1.5)  # the best-training initial g lies around the edge
TRAIN_G = (0.5, 0.8, 1.0, 1.2, 1.5, 2.0, 3.0)
INPUT_SCALE = 1.0  # trained nets: W_ih ~ N(0, INPUT_SCALE^2), scalar inputs x_t ~ N(0, 1)
LR = 3e-3  # Adam
_F64 = torch.float64


@dataclass(frozen=True)
class _Sizes:
    n: int  # autonomous nets: units, g grid, nets per g, initial states per net
    gs: tuple[float, ...]
    nets: int
    states: int
    steps: int  # Lyapunov: accumulated steps, warm-up steps
    warmup: int
    bptt_T: int  # bptt_profile: steps back in time, trajectories
    bptt_batch: int
    hidden: int  # trained nets: units, sequence length, recall delay, Adam steps, seeds
    seq_T: int
    delay: int
    train_steps: int
    seeds: int
    batch: int
    eval_n: int


def _sizes(cfg: LabConfig) -> _Sizes:
    s = cfg.pick(
        _Sizes(32, (0.5, 0.9, 1.2, 2.0), 2, 2, 100, 50, 20, 2,
               8, 12, 4, 5, 1, 8, 64),
        _Sizes(200, (0.5, 0.7, 0.9, 1.0, 1.1, 1.2, 1.4, 1.7, 2.0, 2.5, 3.0), 4, 2, 400, 200,
               60, 4, 48, 30, 12, 100, 2, 32, 512),
        _Sizes(1000, tuple(round(0.5 + 0.1 * i, 1) for i in range(26)), 10, 4, 2000, 500,
               200, 8, 128, 60, 25, 2000, 5, 64, 2048),
    )
    assert isinstance(s, _Sizes)
    return s


# ---------------------------------------------------------------- networks
def _rnn(n: int, g: float, gen: torch.Generator, *, input_scale: float = 0.0,
         dtype: torch.dtype = _F64) -> nn.RNN:
    """tanh nn.RNN(1, n), no bias: W_hh ~ N(0, g^2 / n), W_ih ~ N(0, input_scale^2).

    Built on the meta device so no global RNG draw happens; every draw comes from ``gen``.
    """
    rnn = nn.RNN(1, n, bias=False, dtype=dtype, device="meta").to_empty(device="cpu")
    with torch.no_grad():
        _param(rnn, "weight_hh_l0").copy_(torch.randn(n, n, generator=gen, dtype=dtype) * g
                                          / math.sqrt(n))
        _param(rnn, "weight_ih_l0").copy_(torch.randn(n, 1, generator=gen, dtype=dtype)
                                          * input_scale)
    return rnn


def _param(module: nn.Module, name: str) -> torch.Tensor:
    p = getattr(module, name)
    assert isinstance(p, torch.Tensor)
    return p


def _lyapunov_max(rnn: nn.RNN, h0: torch.Tensor, s: _Sizes, gen: torch.Generator,
                  inputs: torch.Tensor | None = None) -> tuple[float, float]:
    """lambda_max of the RNN (zeros fed when ``inputs`` is None), mean over the initial
    states h0 (S, n), and its standard error across them."""
    spec = lyapunov_spectrum(rnn, h0, inputs, k=1, steps=s.steps, warmup=s.warmup,
                             generator=gen)
    return spec.max_exponent, float(spec.stderr[0])


def _growth(rnn: nn.RNN, s: _Sizes, gen: torch.Generator) -> float:
    """ln of the fitted per-step growth of ||dL/dh_t|| going back in time, from states on
    the autonomous trajectory (after the Lyapunov warm-up)."""
    h = torch.randn(1, s.bptt_batch, rnn.hidden_size, generator=gen, dtype=_F64)  # (1, B, n)
    with torch.no_grad():
        _, h = rnn(torch.zeros(s.warmup, s.bptt_batch, 1, dtype=_F64), h)  # (1, B, n)
    x = torch.zeros(s.bptt_T, s.bptt_batch, 1, dtype=_F64)  # autonomous: no drive
    prof = bptt_profile(rnn, x, h0=h, lags=(), generator=gen)
    return math.log(prof.decay_factor)


@dataclass(frozen=True)
class _Point:
    """One g of the autonomous sweep: per-network measurements."""

    g: float
    lam: tuple[float, ...]  # lambda_max per network (mean over its initial states)
    lam_se: tuple[float, ...]  # its standard error across the initial states
    growth: tuple[float, ...]  # ln gradient growth per step going back in time
    rho: tuple[float, ...]  # ln spectral radius of W (the linear-regime exponent)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.lam)

    @property
    def se(self) -> float:
        """Standard error of the mean across networks (0 for a single network)."""
        return statistics.stdev(self.lam) / math.sqrt(len(self.lam)) if len(self.lam) > 1 else 0.0


def _sweep(s: _Sizes, cfg: LabConfig) -> list[_Point]:
    points = []
    for i, g in enumerate(s.gs):
        lam, se, growth, rho = [], [], [], []
        for j in progress(s.nets, f"random tanh RNNs, g={g:g}"):
            gen = cfg.generator(1000 + 100 * i + j)
            rnn = _rnn(s.n, g, gen)
            h0 = torch.randn(s.states, s.n, generator=gen, dtype=_F64)  # (S, n)
            m, e = _lyapunov_max(rnn, h0, s, gen)
            lam.append(m)
            se.append(e)
            growth.append(_growth(rnn, s, gen))
            w = _param(rnn, "weight_hh_l0").detach()  # (n, n)
            rho.append(math.log(float(torch.linalg.eigvals(w).abs().max())))
        points.append(_Point(g, tuple(lam), tuple(se), tuple(growth), tuple(rho)))
    return points


def _mean_field_lambda(g: float) -> float:
    """0.5 ln chi1 at the fixed point q* of the q-map (sigma_w = g, sigma_b = 0): ln g for
    g <= 1 (q* = 0), the annealed prediction of Molgedey et al. (1992) above."""
    return 0.5 * math.log(meanfield.chi1("tanh", g))


# ---------------------------------------------------------------- claims
def _crossing(gs: Sequence[float], lam: Sequence[float], *, last: bool = False) -> float:
    """g where the piecewise-linear lambda(g) first (or last) goes from < 0 to >= 0; NaN if
    it never does."""
    found = [
        g0 + (g1 - g0) * (-l0) / (l1 - l0)
        for g0, g1, l0, l1 in zip(gs[:-1], gs[1:], lam[:-1], lam[1:], strict=True)
        if l0 < 0 <= l1
    ]
    if not found:
        return math.nan
    return found[-1] if last else found[0]


def _crossing_claim(points: Sequence[_Point], n: int, steps: int) -> Claim:
    gs = [p.g for p in points]
    lam = [p.mean for p in points]
    tiny = 1.0 / steps  # resolution of a steps-long estimate: ln(an O(1) factor) / steps
    marginal = [x for p in points if p.g > EDGE for x in p.lam if abs(x) < tiny]
    return Claim.check(
        "The largest Lyapunov exponent of a random tanh RNN h_(t+1) = tanh(W h_t), W_ij ~ "
        "N(0, g^2/N), crosses 0 at g = 1 (Sompolinsky et al. 1988; Molgedey et al. 1992): "
        "the g where the measured mean lambda_max (interpolated between grid points) first "
        "reaches 0",
        _crossing(gs, lam), above=EDGE - CROSS_TOL, below=EDGE + CROSS_TOL,
        measured={"last crossing (chaos for good beyond)": _finite(_crossing(gs, lam, last=True)),
                  f"first g where the mean reaches -1/{steps} (estimate's resolution)":
                      _finite(_crossing(gs, [x + tiny for x in lam])),
                  f"nets with g > 1 and |lambda_max| < 1/{steps} (marginal: cycles, tori)":
                      float(len(marginal)),
                  "units N": float(n), "grid points": float(len(gs))})


def _mean_field_claim(points: Sequence[_Point]) -> Claim:
    above = [p for p in points if p.g > EDGE]
    diffs = {p.g: p.mean - _mean_field_lambda(p.g) for p in above}
    worst = max((abs(d) for d in diffs.values()), default=math.nan)
    return Claim.check(
        "In the chaotic phase lambda_max follows the mean-field prediction 0.5 ln chi1, chi1 = "
        "g^2 E[tanh'(sqrt(q*) z)^2] (Molgedey, Schuchhardt & Schuster 1992): the largest "
        "|measured - predicted| over g > 1, nats per step",
        worst, below=MF_TOL,
        measured={f"measured - predicted, g={g:g}": d for g, d in diffs.items()})


def _sign_claim(lam: Sequence[float], growth: Sequence[float], T: int) -> Claim:
    """Per network: sign of the gradient's growth going back in time vs sign of lambda_max,
    over the networks whose |lambda_max| exceeds the fit's resolution RESOLUTION / T."""
    res = RESOLUTION / T
    pairs = [(la, gr) for la, gr in zip(lam, growth, strict=True) if abs(la) > res]
    agree = sum((la > 0) == (gr > 0) for la, gr in pairs)
    return Claim.check(
        "Positive Lyapunov exponents go with exploding gradients through time, negative ones "
        "with vanishing gradients: share of networks (|lambda_max| above the fit's resolution) "
        "whose ||dL/dh_t|| grows going back in time exactly when lambda_max > 0",
        agree / len(pairs) if pairs else math.nan, above=SIGN_SHARE,
        measured={"networks compared": float(len(pairs)), "networks agreeing": float(agree),
                  "networks in total": float(len(lam)), "resolution, nats per step": res,
                  "correlation(lambda_max, ln growth)": _finite(_pearson(lam, growth))})


def _growth_claim(points: Sequence[_Point]) -> Claim:
    diffs = {p.g: statistics.fmean(p.growth) - p.mean for p in points}
    lam = [x for p in points for x in p.lam]
    growth = [x for p in points for x in p.growth]
    return Claim.check(
        "Going back in time the gradient grows by exp(lambda_max) per step (the backward "
        "product of Jacobians has the forward product's top exponent): the largest |mean "
        "fitted ln growth - mean lambda_max| over g, nats per step",
        max(abs(d) for d in diffs.values()), below=GROWTH_TOL,
        measured={"correlation over networks": _finite(_pearson(lam, growth)),
                  **{f"ln growth - lambda_max, g={g:g}": d for g, d in diffs.items()}})


def _best_claim(gs: Sequence[float], loss: Sequence[float], edge: float,
                driven_edge: float) -> Claim:
    k = min(range(len(gs)), key=lambda i: loss[i])
    return Claim.check(
        "RNNs initialised near the edge of chaos train best on a memory task (Bertschinger & "
        "Natschlaeger 2004; Legenstein & Maass 2007): the initial g with the lowest held-out "
        "loss after training",
        gs[k], above=BEST_BAND[0], below=BEST_BAND[1],
        measured={"best held-out loss (normalised MSE)": loss[k],
                  **{f"loss, g={g:g}": v for g, v in zip(gs, loss, strict=True)},
                  "measured edge, autonomous": _finite(edge),
                  "measured edge, driven (trained nets at init)": _finite(driven_edge)})


def _pearson(a: Sequence[float], b: Sequence[float]) -> float:
    try:
        return statistics.correlation(a, b)
    except statistics.StatisticsError:  # fewer than 2 points or a constant series
        return math.nan


def _finite(v: float) -> float:
    """measured={} numbers must be finite: NaN (not found) is reported as -1."""
    return v if math.isfinite(v) else -1.0


# ---------------------------------------------------------------- 1-2. autonomous sweep
def _sweep_section(s: _Sizes, cfg: LabConfig
                   ) -> tuple[list[Claim], list[Table], list[Plot], float]:
    points = _sweep(s, cfg)
    gs = [p.g for p in points]
    means = [p.mean for p in points]
    claims = [
        _crossing_claim(points, s.n, s.steps),
        _mean_field_claim(points),
        _sign_claim([x for p in points for x in p.lam], [x for p in points for x in p.growth],
                    s.bptt_T),
        _growth_claim(points),
    ]
    fine = [0.5 + 2.5 * i / 50 for i in range(51)]
    gx = tuple(gs)
    lyap = Plot(
        "lyapunov_vs_g", f"Largest Lyapunov exponent of random tanh RNNs (N={s.n}, "
        f"{s.nets} nets per g)", "g (W_ij ~ N(0, g^2/N))", "lambda_max (nats per step)",
        (Series("measured mean", gx, tuple(means)),
         Series("mean + 2 se", gx, tuple(p.mean + 2 * p.se for p in points)),
         Series("mean - 2 se", gx, tuple(p.mean - 2 * p.se for p in points)),
         Series("mean field 0.5 ln chi1", tuple(fine), tuple(_mean_field_lambda(g) for g in fine))),
        reference={"0": 0.0})
    lam_all = [x for p in points for x in p.lam]
    lo, hi = min(lam_all), max(lam_all)
    diag = tuple(lo + (hi - lo) * i / 20 for i in range(21))
    grad = Plot(
        "gradient_vs_lyapunov", f"Gradient growth through time vs lambda_max (T={s.bptt_T})",
        "lambda_max (nats per step)", "ln(per-step growth of ||dL/dh_t|| going back)",
        (*(Series(f"g={p.g:g}", p.lam, p.growth) for p in points),
         Series("equal (y = x)", diag, diag)),
        kind="scatter", reference={"0": 0.0})
    rows = tuple(
        (f"{p.g:g}", f"{p.mean:+.4f}", f"{p.se:.4f}", f"{statistics.fmean(p.lam_se):.2g}",
         f"{_mean_field_lambda(p.g):+.4f}", f"{meanfield.qstar('tanh', p.g):.4g}",
         f"{statistics.fmean(p.rho):+.4f}", f"{statistics.fmean(p.growth):+.4f}")
        for p in points)
    table = Table(
        f"Random tanh RNNs h_(t+1) = tanh(W h_t), N={s.n}, {s.nets} nets per g, {s.states} "
        f"initial states each, {s.steps} steps after {s.warmup}",
        ("g", "lambda_max (mean over nets)", "se across nets", "se across states (mean)",
         "0.5 ln chi1 (mean field)", "q*", "ln spectral radius of W", "ln gradient growth"),
        rows)
    return claims, [table], [lyap, grad], _crossing(gs, means)


# ---------------------------------------------------------------- 3. training across g
class _Memory(nn.Module):
    """Driven tanh RNN with a linear readout of every hidden state."""

    def __init__(self, hidden: int, g: float, gen: torch.Generator) -> None:
        super().__init__()
        self.rnn = _rnn(hidden, g, gen, input_scale=INPUT_SCALE, dtype=torch.float32)
        self.out = nn.Linear(hidden, 1, device="meta").to_empty(device="cpu")
        with torch.no_grad():
            self.out.weight.copy_(torch.randn(1, hidden, generator=gen) / math.sqrt(hidden))
            self.out.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.rnn(x)[0])  # (T, B, 1) -> (T, B, 1)


def _recall_batch(s: _Sizes, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Inputs x_t ~ N(0, 1), (T, B, 1); targets x_(t-delay) for t >= delay, (T-delay, B, 1)."""
    x = torch.randn(s.seq_T, batch, 1, generator=gen)
    return x, x[: s.seq_T - s.delay]


def _recall_loss(net: _Memory, x: torch.Tensor, y: torch.Tensor, delay: int) -> torch.Tensor:
    """Mean squared error over mean square of the targets: 1 for the constant 0 output."""
    return (net(x)[delay:] - y).pow(2).mean() / y.pow(2).mean()


def _train(g: float, seed: int, s: _Sizes, cfg: LabConfig,
           held_out: tuple[torch.Tensor, ...]) -> tuple[float, float]:
    """Held-out loss after training, and lambda_max of the driven net at init."""
    gen = cfg.generator(5000 + 100 * seed + round(100 * g))
    net = _Memory(s.hidden, g, gen)
    rnn64 = copy.deepcopy(net.rnn).double()
    drive = torch.randn(s.steps + s.warmup, s.states, 1, generator=gen, dtype=_F64)  # (T, S, 1)
    driven, _ = _lyapunov_max(rnn64, torch.zeros(s.states, s.hidden, dtype=_F64), s, gen, drive)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    for _ in progress(s.train_steps, f"delayed recall, g={g:g}, seed {seed}"):
        x, y = _recall_batch(s, s.batch, gen)
        loss = _recall_loss(net, x, y, s.delay)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        final = float(_recall_loss(net, held_out[0], held_out[1], s.delay))
    return final, driven


def _train_section(s: _Sizes, cfg: LabConfig, edge: float
                   ) -> tuple[list[Claim], list[Table], list[Plot]]:
    held_out = _recall_batch(s, s.eval_n, cfg.generator(4999))
    runs = {g: [_train(g, k, s, cfg, held_out) for k in range(s.seeds)] for g in TRAIN_G}
    loss = [statistics.fmean(r[0] for r in runs[g]) for g in TRAIN_G]
    driven = [statistics.fmean(r[1] for r in runs[g]) for g in TRAIN_G]
    driven_edge = _crossing(TRAIN_G, driven)
    claim = _best_claim(TRAIN_G, loss, edge, driven_edge)
    top = max(max(loss), 1.0)
    series = [Series("mean over seeds", TRAIN_G, tuple(loss)),
              *(Series(f"seed {k}", TRAIN_G, tuple(runs[g][k][0] for g in TRAIN_G))
                for k in range(s.seeds))]
    for label, at in (("edge, autonomous (measured)", edge),
                      ("edge, driven at init (measured)", driven_edge)):
        if math.isfinite(at):
            series.append(Series(label, (at, at), (0.0, top)))
    plot = Plot("trained_loss_vs_g", f"Delayed recall (delay {s.delay}) after {s.train_steps} "
                f"Adam steps vs initial g", "initial g", "held-out loss (normalised MSE)",
                tuple(series), reference={"chance (output 0)": 1.0})
    rows = tuple(
        (f"{g:g}", f"{driven[i]:+.4f}", *(f"{runs[g][k][0]:.4f}" for k in range(s.seeds)),
         f"{loss[i]:.4f}")
        for i, g in enumerate(TRAIN_G))
    table = Table(
        f"Delayed recall y_t = x_(t-{s.delay}), T={s.seq_T}, tanh RNN H={s.hidden}, W_ih ~ "
        f"N(0, {INPUT_SCALE:g}), Adam lr {LR:g}, batch {s.batch}, {s.train_steps} steps; "
        f"held-out loss on {s.eval_n} sequences (1 = output 0)",
        ("initial g", "driven lambda_max at init", *(f"loss, seed {k}" for k in range(s.seeds)),
         "mean loss"), rows)
    return [claim], [table], [plot]


# ---------------------------------------------------------------- the lab
@register("chaos")
def chaos(cfg: LabConfig) -> LabResult:
    """Lyapunov exponents of random tanh RNNs, the edge of chaos, and gradients through time.

    Claims:
        1. The measured largest Lyapunov exponent of autonomous random tanh RNNs
           h_(t+1) = tanh(W h_t), W_ij ~ N(0, g^2/N), first reaches 0 (interpolated between
           grid points) within 0.1 of g = 1. At finite N some nets just above g = 1 sit on
           limit cycles or tori (lambda_max = 0) or stable fixed points (< 0): the claim's
           measured numbers give that window and the crossing of -1/steps.
        2. Above g = 1 it follows the mean-field prediction 0.5 ln chi1 (chi1 = g^2
           E[tanh'(sqrt(q*) z)^2] at the q-map's fixed point q*; ln g below 1) within 0.05
           nats per step.
        3. On the same networks, ||dL/dh_t|| (bptt_profile) grows going back in time exactly
           when lambda_max > 0: every network with |lambda_max| above the fit's resolution
           3 / T agrees in sign.
        4. The fitted per-step log-growth of the gradient equals lambda_max within 0.05 nats
           per step (mean over the networks of each g).
        5. Input-driven RNNs initialised at g in {0.5, 0.8, 1, 1.2, 1.5, 2, 3} and trained
           with Adam to output the input from ``delay`` steps earlier: the best initial g lies
           in [0.8, 1.5]; the driven nets' own edge (lambda_max at init with the task's input)
           is reported next to it.

    Setup: float64 autonomous nets (nn.RNN, tanh, no bias, W_ih = 0, zero input), several
    networks per g with a few initial states each; error bars are 2 standard errors across
    networks. lambda_max by the QR method (k = 1) after a warm-up; the gradient from the
    default loss of bptt_profile (a random direction of the last state) starting on the
    trajectory after the same warm-up; its growth is ln of the profile's fitted decay factor.
    Training in float32, W_ih ~ N(0, 1), scalar inputs N(0, 1), normalised MSE on every step
    t >= delay. Sizes per ``cfg.size`` are in the result's ``setup``. The lab runs on one
    torch thread (restored on exit).

    Args:
        cfg: size ("smoke", "quick", "full"), seed and device (the lab runs on the CPU).

    Returns:
        A :class:`LabResult` with 5 claims, 2 tables and 3 plots.

    Example:
        >>> res = chaos(LabConfig(size="smoke"))                    # doctest: +SKIP
        >>> [c.verdict for c in res.claims]                          # doctest: +SKIP

    Papers: Sompolinsky, Crisanti & Sommers 1988, "Chaos in random neural networks";
    Molgedey, Schuchhardt & Schuster 1992, "Suppressing chaos in neural networks by noise";
    Engelken, Wolf & Abbott 2020, "Lyapunov spectra of chaotic recurrent neural networks";
    Poole et al. 2016 and Schoenholz et al. 2017 (chi1); Pascanu, Mikolov & Bengio 2013;
    Bertschinger & Natschlaeger 2004, "Real-time computation at the edge of chaos in
    recurrent neural networks"; Legenstein & Maass 2007.
    """
    if not isinstance(cfg, LabConfig):
        raise TypeError(f"cfg: expected a LabConfig, got {type(cfg).__name__}")
    s = _sizes(cfg)
    with one_thread():  # small models: one thread beats torch's pool on a shared CPU
        claims, tables, plots, edge = _sweep_section(s, cfg)
        c, t, p = _train_section(s, cfg, edge)
    setup = {
        "autonomous nets": f"h_(t+1) = tanh(W h_t), W_ij ~ N(0, g^2/{s.n}), g in "
                           f"{list(s.gs)}, {s.nets} nets per g, no input, float64 nn.RNN "
                           "(bias False, W_ih = 0)",
        "lyapunov": f"lyapunov_spectrum, k = 1, {s.states} random N(0, 1) initial states per "
                    f"net, {s.steps} steps after {s.warmup} warm-up, QR every step",
        "gradient": f"bptt_profile over T={s.bptt_T} steps from {s.bptt_batch} states after "
                    f"{s.warmup} warm-up steps, default loss (random direction of the last "
                    f"state); ln of the fitted decay factor; signs compared where |lambda_max| "
                    f"> {RESOLUTION:g}/T",
        "mean field": "0.5 ln meanfield.chi1('tanh', g, 0): ln g for g <= 1 (q* = 0)",
        "training": f"delayed recall y_t = x_(t-{s.delay}), T={s.seq_T}, x_t ~ N(0, 1); tanh "
                    f"nn.RNN H={s.hidden}, no bias, W_ih ~ N(0, {INPUT_SCALE:g}^2), linear "
                    f"readout of every state; initial g in {list(TRAIN_G)}, {s.seeds} seeds; "
                    f"Adam lr {LR:g}, batch {s.batch}, {s.train_steps} steps, float32; loss "
                    f"on {s.eval_n} held-out sequences; driven lambda_max at init with "
                    f"{s.states} N(0, 1) input streams",
        "device": "cpu, one torch thread (restored after the run)",
    }
    return LabResult(
        name="chaos",
        title="Chaos: Lyapunov exponents, the edge of chaos and gradients through time",
        config=cfg,
        setup=setup,
        claims=(*claims, *c),
        tables=(*tables, *t),
        plots=(*plots, *p),
    )
