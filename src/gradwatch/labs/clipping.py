"""The clipping lab: an RNN in the exploding regime, trained with and without gradient clipping.

Five runs start from the same weights and see the same batches: no clipping, norm clipping
(``clip_grad_norm_``, max norm 1), value clipping (``clip_grad_value_``, 0.5),
:class:`gradwatch.fix.AutoClip` and :class:`gradwatch.fix.ZClip`. Every number is measured in
this run: losses, pre-clip gradient norms, the cosine between the clipped and the unclipped
gradient, the gradient through time at init (:func:`gradwatch.bptt_profile`) and the Watch's
diagnosis of the unclipped run.
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from gradwatch.core.bptt import bptt_profile
from gradwatch.diagnose import clip_threshold
from gradwatch.fix import AutoClip, ZClip
from gradwatch.labs import register
from gradwatch.labs.base import Claim, LabConfig, LabResult, Plot, Series, Table, one_thread, steps
from gradwatch.watch import Watch

__all__ = ["clipping"]

RHO = 2.0  # spectral radius of W_hh at init: well above 1/gamma = 1 for tanh
LR = 0.05  # plain SGD, the same for all five runs; high enough to blow up the unclipped one
MAX_NORM, MAX_VALUE = 1.0, 0.5  # Keras' clipnorm=1.0 and clipvalue=0.5
DELAY = 10  # target: normalised sum of the last DELAY inputs
GROWTH = 100.0  # "diverged": non-finite, or the training loss above GROWTH x its first value
COS_TOL = 1e-6  # norm clipping keeps the direction: |mean cosine - 1| below this
DIVERGED = sys.float_info.max  # final/start loss ratio scored by a run that went non-finite
METHODS = ("none", "norm", "value", "autoclip", "zclip")
LABELS = {
    "none": "no clipping",
    "norm": f"norm clipping (clip_grad_norm_, max norm {MAX_NORM:g})",
    "value": f"value clipping (clip_grad_value_, {MAX_VALUE:g})",
    "autoclip": "AutoClip (10th percentile)",
    "zclip": "ZClip (z 2.5, alpha 0.97, warmup 25)",
}


@dataclass(frozen=True)
class _Sizes:
    hidden: int
    length: int  # T
    batch: int
    steps: int
    eval_batch: int


def _sizes(cfg: LabConfig) -> _Sizes:
    s = cfg.pick(_Sizes(8, 20, 8, 12, 32), _Sizes(32, 100, 32, 250, 256),
                 _Sizes(64, 200, 64, 1000, 1024))
    assert isinstance(s, _Sizes)
    return s


# ---------------------------------------------------------------- model and data
class _Net(nn.Module):
    """tanh RNN over scalar inputs, linear readout of the last hidden state."""

    def __init__(self, hidden: int, gen: torch.Generator, rho: float) -> None:
        super().__init__()
        # the default init draws from the global RNG: leave it as it was, redraw from gen
        with torch.random.fork_rng(devices=[]):
            self.rnn: nn.RNN = nn.RNN(1, hidden)
            self.out: nn.Linear = nn.Linear(hidden, 1)
        bound = 1.0 / math.sqrt(hidden)  # PyTorch's default U(-1/sqrt(H), 1/sqrt(H))
        with torch.no_grad():
            for p in (*self.rnn.parameters(), *self.out.parameters()):
                p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * bound)
            w = torch.randn(hidden, hidden, generator=gen)  # (H, H)
            w *= rho / torch.linalg.eigvals(w).abs().max()
            self._w_hh().copy_(w)

    def _w_hh(self) -> torch.Tensor:
        w = self.rnn.weight_hh_l0
        assert isinstance(w, torch.Tensor)
        return w

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (T, B, 1)
        h, _ = self.rnn(x)  # (T, B, H)
        return self.out(h[-1])[:, 0]  # (B,)


def _batch(s: _Sizes, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(s.length, n, 1, generator=gen)  # (T, B, 1)
    y = x[-DELAY:, :, 0].sum(0) / math.sqrt(DELAY)  # (B,) variance 1
    return x, y


def _mse(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (pred - y).square().mean()


# ---------------------------------------------------------------- one run
@dataclass(frozen=True)
class _Run:
    method: str
    loss: tuple[float, ...]  # training-batch loss per step taken
    grad_norm: tuple[float, ...]  # total gradient norm before clipping
    cosine: tuple[float, ...]  # cos(clipped, unclipped gradient) per step
    clipped: int  # steps where clipping changed the gradient
    nonfinite_step: int  # first step with a non-finite loss or gradient; -1 if none
    start_eval: float  # held-out MSE at init
    final_eval: float  # held-out MSE after the run (nan if it went non-finite)


def _clipper(method: str) -> Callable[[nn.Module], object]:
    if method == "none":
        return lambda m: None
    if method == "norm":
        return lambda m: nn.utils.clip_grad_norm_(m.parameters(), MAX_NORM)
    if method == "value":
        return lambda m: nn.utils.clip_grad_value_(m.parameters(), MAX_VALUE)
    if method == "autoclip":
        return AutoClip(percentile=10.0)
    if method == "zclip":
        return ZClip(alpha=0.97, z_threshold=2.5, warmup=25)
    raise ValueError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")


def _flat_grad(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])


def _train(
    net0: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]],
    evalset: tuple[torch.Tensor, torch.Tensor], method: str, lr: float,
    watch: Watch | None = None, model: nn.Module | None = None,
) -> _Run:
    """SGD on a copy of ``net0`` (or on ``model``, which must be such a copy), clipping by
    ``method``; stops at the first non-finite loss or gradient, after recording that step."""
    net = model if model is not None else copy.deepcopy(net0)
    clip = _clipper(method)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    with torch.no_grad():
        start = float(_mse(net(evalset[0]), evalset[1]))
    losses: list[float] = []
    norms: list[float] = []
    cosines: list[float] = []
    clipped, bad = 0, -1
    for i in steps(len(batches), LABELS[method]):
        x, y = batches[i]
        opt.zero_grad()
        loss = _mse(net(x), y)
        loss.backward()
        if watch is not None:
            watch.step()
        raw = _flat_grad(net).double()  # (P,) before clipping
        norm = float(raw.norm())
        if not (math.isfinite(float(loss.detach())) and math.isfinite(norm)):
            bad = i
            break
        clip(net)
        new = _flat_grad(net).double()  # (P,) after clipping
        cosines.append(float(raw @ new / (norm * new.norm())))
        clipped += int(not torch.equal(raw, new))
        losses.append(float(loss.detach()))
        norms.append(norm)
        opt.step()
    final = math.nan
    if bad < 0:
        with torch.no_grad():
            final = float(_mse(net(evalset[0]), evalset[1]))
    return _Run(method, tuple(losses), tuple(norms), tuple(cosines), clipped, bad, start, final)


def _diverged_at(run: _Run) -> int:
    """First step with a non-finite value or a loss above GROWTH x the first; -1 if none."""
    for i, v in enumerate(run.loss):
        if v > GROWTH * run.loss[0]:
            return i
    return run.nonfinite_step


# ---------------------------------------------------------------- claims
def _divergence_claim(run: _Run, budget: int) -> Claim:
    at = _diverged_at(run)
    before = run.loss[: at if at > 0 else len(run.loss)]
    best = min(before) if before else math.nan
    return Claim.check(
        f"Without clipping, SGD (lr {LR:g}) on a tanh RNN with spectral radius {RHO:g} diverges:"
        f" the loss or the gradient turns non-finite, or the loss grows > {GROWTH:g}x, within "
        f"the budget (value: the first such step; {budget} if none)",
        float(at if at >= 0 else budget),
        below=float(budget),
        measured={"non-finite at step (-1: never)": float(run.nonfinite_step),
                  "loss > 100x first at step (-1: never)": float(
                      next((i for i, v in enumerate(run.loss) if v > GROWTH * run.loss[0]), -1)),
                  "first loss": run.loss[0] if run.loss else math.nan,
                  "best loss before divergence": best,
                  "largest finite gradient norm": max(run.grad_norm, default=math.nan),
                  "budget (steps)": float(budget)},
    )


def _progress_claim(run: _Run, unclipped: _Run) -> Claim:
    ok = run.nonfinite_step < 0 and math.isfinite(run.final_eval)
    ratio = run.final_eval / run.start_eval if ok else DIVERGED
    at = _diverged_at(unclipped)
    before = unclipped.loss[: at if at > 0 else len(unclipped.loss)]
    best = min(before) if before else math.nan
    return Claim.check(
        f"{LABELS[run.method]} keeps the loss finite and ends below its starting loss: held-out "
        f"MSE after training / at init (a run that turned non-finite scores {DIVERGED:.3g})",
        ratio,
        below=1.0,
        measured={"held-out MSE at init": run.start_eval, "held-out MSE at the end": run.final_eval,
                  "non-finite at step (-1: never)": float(run.nonfinite_step),
                  "last training loss": run.loss[-1] if run.loss else math.nan,
                  "unclipped best training loss before divergence": best,
                  "steps clipped": float(run.clipped)},
    )


def _cosine_claim(run: _Run) -> Claim:
    """Norm-like clipping keeps the direction exactly; value clipping turns it."""
    mean = sum(run.cosine) / len(run.cosine) if run.cosine else math.nan
    measured = {"mean cosine": mean, "min cosine": min(run.cosine, default=math.nan),
                "steps": float(len(run.cosine)), "steps clipped": float(run.clipped)}
    if run.method == "value":
        return Claim.check(
            f"{LABELS['value']} changes the direction of the update: the cosine between the "
            "clipped and the unclipped gradient, averaged over steps, is below 1",
            mean, below=1.0 - COS_TOL, measured=measured)
    return Claim.check(
        f"{LABELS[run.method]} only rescales the gradient: |mean cosine(clipped, unclipped) - 1|"
        f" below {COS_TOL:g} (Pascanu et al. 2013)",
        abs(mean - 1.0), below=COS_TOL, measured=measured)


def _regime_claim(net: _Net, x: torch.Tensor, gen: torch.Generator) -> tuple[Claim, Plot]:
    rnn = net.rnn
    prof = bptt_profile(rnn, x, lags=(), generator=gen)
    w = net._w_hh().detach()
    sigma = float(torch.linalg.matrix_norm(w, ord=2))
    g = prof.grad_norm  # (T,) index t
    claim = Claim.check(
        "At init the recurrence is in the exploding regime (Pascanu et al. 2013: sigma_max(W) > "
        "1/gamma = 1 for tanh is needed): ||dL/dh_t|| grows going back in time, bptt_profile's "
        "per-step factor > 1",
        prof.decay_factor,
        above=1.0,
        measured={"spectral radius of W_hh": RHO, "sigma_max(W_hh)": sigma,
                  "||dL/dh_0|| / ||dL/dh_T-1||": float(g[0] / g[-1])},
    )
    plot = Plot("bptt_init", f"Gradient through time at init (tanh RNN, spectral radius {RHO:g})",
                "lag (steps back from the last)", "||dL/dh_t||",
                (Series("bptt_profile", tuple(float(v) for v in prof.lag),
                        tuple(float(v) for v in g)),), logy=True)
    return claim, plot


def _watch_claim(watch: Watch) -> Claim:
    found = watch.diagnose()
    level = clip_threshold(watch.history)
    hits = [f for f in found if f.kind in ("nonfinite", "exploding") and "clip at" in f.fix]
    return Claim.check(
        "The Watch's diagnosis of the unclipped run reports a 'nonfinite' or 'exploding' finding"
        " that prescribes a clipping threshold (value: the threshold; 0 if no such finding)",
        level if hits and math.isfinite(level) else 0.0,
        above=0.0,
        measured={"findings": float(len(found)), "nonfinite or exploding with a threshold":
                  float(len(hits)), "recorded steps": float(len(watch.history))},
    )


# ---------------------------------------------------------------- the lab
@register("clipping")
def clipping(cfg: LabConfig) -> LabResult:
    """Gradient clipping against exploding gradients in a tanh RNN.

    Claims:
        1. At init the RNN is in the exploding regime: ||dL/dh_t|| from
           :func:`gradwatch.bptt_profile` grows going back in time (per-step factor > 1).
        2. Without clipping, SGD diverges within the budget (non-finite loss or gradient, or
           the training loss above 100x its first value); the run stops at the first
           non-finite step without touching the other runs.
        3-6. Norm clipping, value clipping, AutoClip and ZClip each keep the loss finite and
           end with a held-out MSE below the one at init.
        7. Norm clipping keeps the direction of the gradient: mean cosine 1 within 1e-6.
        8. Value clipping turns it: mean cosine below 1 - 1e-6.
        9. :class:`gradwatch.Watch` on the unclipped run: ``diagnose()`` reports a "nonfinite"
           or "exploding" finding with a clipping threshold.

    Setup: ``nn.RNN`` (tanh, 1 input) with W_hh Gaussian rescaled to spectral radius 2, other
    weights PyTorch's default uniform, linear readout of the last hidden state; regression
    task: predict (x_{T-10} + ... + x_{T-1}) / sqrt(10) from T Gaussian inputs (target
    variance 1). SGD lr 0.05, float32. All five runs start from the same weights and see the
    same pre-drawn batches; start and final losses are MSE on one held-out batch. Clipping
    is applied after backward and before ``optimizer.step()``: ``clip_grad_norm_(1.0)``
    (Keras' clipnorm), ``clip_grad_value_(0.5)`` (clipvalue), ``AutoClip(percentile=10)``,
    ``ZClip(alpha=0.97, z_threshold=2.5, warmup=25)`` (the papers' defaults).

    Args:
        cfg: size ("smoke", "quick", "full"), seed and device (the lab runs on the CPU).

    Returns:
        A :class:`LabResult` with 9 claims, 1 table and 5 plots.

    Example:
        >>> res = clipping(LabConfig(size="smoke"))                  # doctest: +SKIP
        >>> [c.verdict for c in res.claims]                          # doctest: +SKIP

    Papers: Pascanu, Mikolov & Bengio 2013, "On the difficulty of training recurrent neural
    networks" (norm clipping, the exploding condition); Seetharaman et al. 2020, "AutoClip";
    Kumar et al. 2025, "ZClip".
    """
    if not isinstance(cfg, LabConfig):
        raise TypeError(f"cfg: expected a LabConfig, got {type(cfg).__name__}")
    s = _sizes(cfg)
    # Small sequential ops: one thread is faster on a shared CPU. Restored on exit.
    with one_thread():
        net0 = _Net(s.hidden, cfg.generator(1), RHO)
        data_gen = cfg.generator(2)
        batches = [_batch(s, s.batch, data_gen) for _ in range(s.steps)]
        evalset = _batch(s, s.eval_batch, cfg.generator(3))
        regime, bptt_plot = _regime_claim(net0, batches[0][0], cfg.generator(4))
        unclipped_net = copy.deepcopy(net0)
        with Watch(unclipped_net, activations=False, recurrent_every=0) as watch:
            runs = {"none": _train(net0, batches, evalset, "none", LR, watch, unclipped_net)}
        for m in METHODS[1:]:
            runs[m] = _train(net0, batches, evalset, m, LR)

    none = runs["none"]
    claims = [regime, _divergence_claim(none, s.steps)]
    claims += [_progress_claim(runs[m], none) for m in METHODS[1:]]
    claims += [_cosine_claim(runs["norm"]), _cosine_claim(runs["value"]), _watch_claim(watch)]
    return LabResult(
        name="clipping",
        title="Clipping: an exploding RNN trained with and without gradient clipping",
        config=cfg,
        setup={
            "model": f"nn.RNN tanh, 1 input, {s.hidden} hidden, W_hh Gaussian rescaled to "
                     f"spectral radius {RHO:g}, linear readout of the last hidden state, float32",
            "task": f"regression: T={s.length} inputs x_t ~ N(0,1), target (x_(T-{DELAY}) + ... "
                    f"+ x_(T-1)) / sqrt({DELAY}) (predicting 0 scores MSE 1)",
            "training": f"SGD lr {LR:g}, batch {s.batch}, {s.steps} steps, the same init and the "
                        f"same pre-drawn batches for all five runs; held-out batch of "
                        f"{s.eval_batch} for start and final MSE; a run stops at its first "
                        "non-finite loss or gradient",
            "clipping": "; ".join(LABELS[m] for m in METHODS[1:]),
            "watch": "gradwatch.Watch on the unclipped run (activations off, no recurrent "
                     "samples), then watch.diagnose()",
            "device": "cpu, one torch thread (restored after the run)",
        },
        claims=tuple(claims),
        tables=(_table(runs),),
        plots=(bptt_plot, *_plots(runs, watch)),
    )


def _table(runs: dict[str, _Run]) -> Table:
    rows = []
    for m in METHODS:
        r = runs[m]
        cos = f"{sum(r.cosine) / len(r.cosine):.9f}" if r.cosine and m != "none" else "-"
        rows.append((LABELS[m], str(len(r.loss)),
                     str(r.nonfinite_step) if r.nonfinite_step >= 0 else "never",
                     f"{r.start_eval:.4g}", f"{r.final_eval:.4g}",
                     f"{min(r.loss, default=math.nan):.4g}", f"{max(r.loss, default=math.nan):.3g}",
                     f"{max(r.grad_norm, default=math.nan):.3g}", cos, str(r.clipped)))
    return Table("Five runs from the same init on the same batches",
                 ("method", "steps run", "non-finite at", "held-out MSE at init",
                  "held-out MSE at end", "best training loss", "worst training loss",
                  "largest pre-clip norm", "mean cosine(clipped, unclipped)", "steps clipped"),
                 tuple(rows))


def _series(label: str, y: tuple[float, ...]) -> Series:
    return Series(label, tuple(float(i) for i in range(len(y))), y)


def _plots(runs: dict[str, _Run], watch: Watch) -> list[Plot]:
    g = watch.history["grad_norm"]  # (S, layers)
    ok = torch.isfinite(g).all(dim=1) & (g > 0).all(dim=1)  # drop the non-finite step
    st = watch.history.steps[ok]
    layers = tuple(
        Series(name, tuple(float(v) for v in st), tuple(float(v) for v in g[ok, j]))
        for j, name in enumerate(watch.history.layers)
    )
    return [
        Plot("loss", "Training loss per step (the unclipped run stops at its first non-finite "
             "step)", "step", "MSE (training batch)",
             tuple(_series(LABELS[m], runs[m].loss) for m in METHODS), logy=True),
        Plot("grad_norm", "Total gradient norm before clipping", "step", "||g||",
             tuple(_series(LABELS[m], runs[m].grad_norm) for m in METHODS), logy=True),
        Plot("cosine", "Cosine between the clipped and the unclipped gradient", "step",
             "cos(clipped, unclipped)",
             tuple(_series(LABELS[m], runs[m].cosine) for m in METHODS[1:])),
        Plot("watch_layers", "Unclipped run: per-layer gradient norm (Watch)", "step",
             "||dL/dW||", layers, logy=True),
    ]
