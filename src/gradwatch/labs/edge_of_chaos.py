"""The edge-of-chaos lab: mean-field phase diagram, gradient factors, trainability, isometry.

Every number is measured in this run: chi1 and xi_c from :mod:`gradwatch.core.meanfield`,
per-layer gradient norms of random deep tanh nets from :class:`gradwatch.Watch`, test accuracy
on scikit-learn's digits after a fixed SGD budget, and input-output Jacobian spectra from
:func:`gradwatch.jacobian_spectrum`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from gradwatch.core import meanfield
from gradwatch.core.jacobian import jacobian_spectrum
from gradwatch.labs import register
from gradwatch.labs.base import Claim, LabConfig, LabResult, Plot, Series, Table, one_thread
from gradwatch.labs.base import steps as progress
from gradwatch.watch import Watch

__all__ = ["edge_of_chaos"]

SIGMA_B = 0.05  # bias std of the gradient sweep and the trainability grid (Schoenholz et al.)
SIGMA_B_ISO = 0.005  # small bias at the isometry point: orthogonal tanh needs q* small
GRAD_TOL = 0.05  # max |measured - ln chi1| per layer (nats) for the gradient-factor claim
TRAIN_MARGIN = 0.3  # accuracy(L < 6 xi_c) - accuracy(L > 12 xi_c) must exceed this
ISO_RATIO = 4.0  # spread(Gaussian or ReLU) / spread(orthogonal tanh) must exceed this
ISO_MAX = 1.0  # orthogonal tanh: std / mean of sigma^2 below this at the deepest depth
LR, MOMENTUM, BATCH = 1e-2, 0.9, 128  # plain SGD, the same for every net of the grid
_F64 = torch.float64


@dataclass(frozen=True)
class _Sizes:
    pd_w: int  # phase diagram: sigma_w grid points
    pd_b: int  # sigma_b grid points
    grad_sigma_w: tuple[float, ...]
    grad_width: int
    grad_depth: int
    grad_batch: int
    train_sigma_w: tuple[float, ...]  # 0 stands for the critical sigma_w at SIGMA_B
    train_depths: tuple[int, ...]
    train_width: int
    train_steps: int
    iso_width: int
    iso_depths: tuple[int, ...]
    iso_batch: int


def _sizes(cfg: LabConfig) -> _Sizes:
    s = cfg.pick(
        _Sizes(8, 3, (0.7, 1.5, 3.0), 32, 10, 8, (0.3, 0.0), (3, 6), 16, 20,
               24, (1, 4, 16), 2),
        _Sizes(36, 11, (0.6, 0.8, 1.0, 1.12, 1.3, 1.6, 2.0, 2.5, 3.0), 256, 50, 32,
               (0.5, 0.8, 0.0, 2.0, 4.0), (6, 12, 24, 48), 128, 200,
               128, (1, 2, 4, 8, 16, 32, 64), 4),
        _Sizes(71, 21, (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.12, 1.2, 1.3, 1.6, 2.0, 2.5, 3.0, 4.0),
               512, 200, 64, (0.5, 0.7, 0.9, 0.0, 1.5, 2.0, 3.0, 4.0), (10, 20, 40, 80, 160),
               256, 400, 256, (1, 2, 4, 8, 16, 32, 64, 128), 8),
    )
    assert isinstance(s, _Sizes)
    return s


# ---------------------------------------------------------------- networks
def _linear(
    n_in: int, n_out: int, sigma_w: float, sigma_b: float, gen: torch.Generator,
    *, orthogonal: bool = False, dtype: torch.dtype = _F64,
) -> nn.Linear:
    """W ~ N(0, sigma_w^2 / n_in) (or sigma_w times a Haar orthogonal matrix), b ~ N(0, sigma_b^2).

    skip_init: the default init would draw from (and so change) the global RNG.
    """
    lin = nn.utils.skip_init(nn.Linear, n_in, n_out, dtype=dtype)
    with torch.no_grad():
        if orthogonal:
            nn.init.orthogonal_(lin.weight, gain=sigma_w, generator=gen)
        else:
            lin.weight.copy_(torch.randn(n_out, n_in, generator=gen, dtype=dtype))
            lin.weight.mul_(sigma_w / math.sqrt(n_in))
        lin.bias.copy_(torch.randn(n_out, generator=gen, dtype=dtype) * sigma_b)
    return lin


def _at_fixed_point(
    batch: int, width: int, sigma_w: float, sigma_b: float, q_star: float, gen: torch.Generator
) -> torch.Tensor:
    """Inputs whose first pre-activations have length q*.

    ||x||^2 / N = (q* - sigma_b^2) / sigma_w^2, so every layer, the first included, starts at
    the fixed point the theory assumes.
    """
    x = torch.randn(batch, width, generator=gen, dtype=_F64)  # (B, N)
    scale = math.sqrt(width * max(q_star - sigma_b**2, 0.0)) / sigma_w
    return x / x.norm(dim=1, keepdim=True) * scale


# ---------------------------------------------------------------- 1. phase diagram
def _phase_section(s: _Sizes) -> tuple[list[Claim], list[Table], list[Plot]]:
    sw = torch.linspace(0.5, 4.0, s.pd_w, dtype=_F64)
    sb = torch.linspace(0.0, 1.0, s.pd_b, dtype=_F64)
    pd = meanfield.phase_diagram("tanh", sw, sb)
    heat = tuple(
        Series(f"sigma_b={float(b):.2f}", tuple(sw.tolist()), tuple(pd.chi1[i].log10().tolist()))
        for i, b in enumerate(sb)
    )
    crit = pd.critical_sigma_w  # (B,)
    ok = ~crit.isnan()
    line = Series("chi1 = 1", tuple(crit[ok].tolist()), tuple(sb[ok].tolist()))
    crit0 = meanfield.critical_sigma_w("tanh", 0.0)
    crit_b = meanfield.critical_sigma_w("tanh", SIGMA_B)
    # chi1 on the critical line, as a check of the line itself
    on_line = [meanfield.chi1("tanh", float(c), float(b))
               for c, b in zip(crit[ok], sb[ok], strict=True)]
    claim = Claim.check(
        "tanh with sigma_b = 0 is critical (chi1 = 1) at sigma_w = 1 (Poole et al. 2016)",
        abs(crit0 - 1.0),
        below=1e-6,
        measured={
            "critical_sigma_w(sigma_b=0)": crit0,
            f"critical_sigma_w(sigma_b={SIGMA_B:g})": crit_b,
            "max |chi1 - 1| on the critical line": max(abs(c - 1) for c in on_line),
        },
    )
    table = Table(
        "tanh critical line: chi1(sigma_w, sigma_b) = 1",
        ("sigma_b", "critical sigma_w", "q* there", "chi1 there"),
        tuple(
            (f"{float(b):.2f}", f"{float(c):.6f}",
             f"{meanfield.qstar('tanh', float(c), float(b)):.4g}", f"{x:.9f}")
            for c, b, x in zip(crit[ok], sb[ok], on_line, strict=True)
        ),
    )
    plots = [
        Plot("phase_diagram", "tanh phase diagram: log10 chi1 (ordered < 0 < chaotic)",
             "sigma_w", "log10 chi1 (rows: sigma_b)", heat, kind="heatmap"),
        Plot("critical_line", "tanh edge of chaos (chi1 = 1)", "sigma_w", "sigma_b", (line,)),
    ]
    return [claim], [table], plots


# ---------------------------------------------------------------- 2a. gradient factors
def _gradient_profile(
    sigma_w: float, sigma_b: float, width: int, depth: int, batch: int, gen: torch.Generator
) -> torch.Tensor:
    """Per-layer gradient norms (Watch) of a random deep tanh net at its fixed point, (depth,).

    Loss sum_b v_b . h_L(x_b) with an independent random v_b per example, so the examples'
    backpropagated signals are uncorrelated and a layer's squared norm is their sum.
    """
    layers: list[nn.Module] = []
    for i in range(depth):
        layers.append(_linear(width, width, sigma_w, sigma_b, gen))
        if i < depth - 1:
            layers.append(nn.Tanh())
    model = nn.Sequential(*layers)
    q = meanfield.qstar("tanh", sigma_w, sigma_b)
    x = _at_fixed_point(batch, width, sigma_w, sigma_b, q, gen)  # (B, N)
    v = torch.randn(batch, width, generator=gen, dtype=_F64)  # (B, N)
    with Watch(model, activations=False) as watch:
        (model(x) * v).sum().backward()
        watch.step()
    return watch.history["grad_norm"][0]  # (depth,)


def _gradient_section(
    s: _Sizes, cfg: LabConfig
) -> tuple[list[Claim], list[Table], list[Plot]]:
    gen = cfg.generator(1)
    L = s.grad_depth
    rows, measured, predicted, profiles = [], [], [], []
    for sw in s.grad_sigma_w:
        g = _gradient_profile(sw, SIGMA_B, s.grad_width, L, s.grad_batch, gen)
        # the first layer's input sits at the fixed point too, so ||g_1||^2 / ||g_L||^2 ~ chi1^(L-1)
        meas = math.log(float(g[0]) ** 2 / float(g[-1]) ** 2) / (L - 1)
        chi = meanfield.chi1("tanh", sw, SIGMA_B)
        measured.append(meas)
        predicted.append(math.log(chi))
        profiles.append(Series(f"sigma_w={sw:g}", tuple(float(i + 1) for i in range(L)),
                               tuple(g.tolist())))
        rows.append((f"{sw:g}", f"{chi:.4f}", f"{math.log(chi):+.4f}", f"{meas:+.4f}",
                     f"{meas - math.log(chi):+.4f}"))
    diffs = [abs(m - p) for m, p in zip(measured, predicted, strict=True)]
    corr = _pearson(measured, predicted)
    claim = Claim.check(
        f"Squared gradient norms of a deep tanh net change by chi1 per layer (sigma_b={SIGMA_B:g}):"
        " the measured ln(||g_1||^2 / ||g_L||^2) / (L - 1) equals ln chi1 across the sigma_w "
        "sweep (Schoenholz et al. 2017)",
        max(diffs),
        below=GRAD_TOL,
        measured={"correlation(measured, ln chi1)": corr, "depth": float(L),
                  "width": float(s.grad_width), "points": float(len(diffs))},
    )
    sws = tuple(float(w) for w in s.grad_sigma_w)
    plots = [
        Plot("gradient_factor", f"Per-layer log factor of squared gradient norms (depth {L})",
             "sigma_w", "ln(per-layer factor)",
             (Series("measured (Watch)", sws, tuple(measured)),
              Series("ln chi1 (mean field)", sws, tuple(predicted))),
             reference={"critical (0)": 0.0}),
        Plot("gradient_profiles", "Per-layer gradient norm at init, deep tanh",
             "layer", "||dL/dW_l||", tuple(profiles), logy=True),
    ]
    table = Table(f"Gradient factor per layer, tanh, sigma_b={SIGMA_B:g}, width {s.grad_width}, "
                  f"depth {L}", ("sigma_w", "chi1", "ln chi1", "measured", "difference"),
                  tuple(rows))
    return [claim], [table], plots


def _pearson(a: Sequence[float], b: Sequence[float]) -> float:
    if len(a) < 2:
        return math.nan
    try:
        return statistics.correlation(a, b)
    except statistics.StatisticsError:  # a constant series
        return math.nan


# ---------------------------------------------------------------- 2b. trainability
def _digits(gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X, dtype=torch.float32)  # (1797, 64)
    y = torch.tensor(y, dtype=torch.long)
    perm = torch.randperm(len(X), generator=gen)
    tr, te = perm[:1200], perm[1200:]
    mu, sd = X[tr].mean(0), X[tr].std(0) + 1e-6  # standardise with the training split only
    X = (X - mu) / sd
    return X[tr], y[tr], X[te], y[te]


def _train_accuracy(
    data: tuple[torch.Tensor, ...], sigma_w: float, depth: int, width: int, steps: int,
    gen: torch.Generator,
) -> tuple[float, float]:
    """Test accuracy and final training loss of a deep tanh net after ``steps`` SGD steps."""
    xtr, ytr, xte, yte = data
    layers: list[nn.Module] = []
    n_in = xtr.shape[1]
    for _ in range(depth):
        layers += [_linear(n_in, width, sigma_w, SIGMA_B, gen, dtype=torch.float32), nn.Tanh()]
        n_in = width
    layers.append(_linear(n_in, 10, sigma_w, SIGMA_B, gen, dtype=torch.float32))
    model = nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    loss = torch.tensor(math.nan)
    for _ in progress(steps, f"tanh net, depth {depth}, sigma_w {sigma_w:.3g}"):
        idx = torch.randint(0, len(xtr), (BATCH,), generator=gen)
        loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = (model(xte).argmax(1) == yte).float().mean().item()
    return acc, float(loss.detach())


def _trainability_claim(rows: Sequence[tuple[float, float]]) -> Claim:
    """Claim on (depth / xi_c, accuracy) pairs: trainable below 6 xi_c, not above 12 xi_c."""
    below = [a for r, a in rows if r < 6]
    above = [a for r, a in rows if r > 12]
    mb = statistics.fmean(below) if below else math.nan
    ma = statistics.fmean(above) if above else math.nan
    return Claim.check(
        "Deep tanh nets train when depth L < 6 xi_c and fail when L >> 6 xi_c (Schoenholz et "
        "al. 2017): mean test accuracy for L < 6 xi_c minus mean for L > 12 xi_c",
        mb - ma,
        above=TRAIN_MARGIN,
        measured={"mean accuracy, L < 6 xi_c": mb, "mean accuracy, L > 12 xi_c": ma,
                  "nets with L < 6 xi_c": float(len(below)),
                  "nets with L > 12 xi_c": float(len(above)), "chance": 0.1},
    )


def _trainability_section(
    s: _Sizes, cfg: LabConfig
) -> tuple[list[Claim], list[Table], list[Plot]]:
    data = _digits(cfg.generator(2))
    crit = meanfield.critical_sigma_w("tanh", SIGMA_B)
    pairs, rows, series = [], [], []
    for k, sw0 in enumerate(s.train_sigma_w):
        sw = sw0 or crit
        xi = meanfield.depth_scales("tanh", sw, SIGMA_B).xi_c
        xs, ys = [], []
        for j, depth in enumerate(s.train_depths):
            acc, loss = _train_accuracy(data, sw, depth, s.train_width, s.train_steps,
                                        cfg.generator(100 + 10 * k + j))
            ratio = depth / xi  # 0 where xi_c = inf (critical)
            pairs.append((ratio, acc))
            xs.append(ratio)
            ys.append(acc)
            # "inf" alone would read back from JSON as a float: spell it out
            rows.append((f"{sw:.4g}", str(depth), f"{xi:.3g}" if xi < math.inf else "infinite",
                         f"{ratio:.2f}", f"{acc:.3f}", f"{loss:.3g}"))
        series.append(Series(f"sigma_w={sw:.3g}", tuple(xs), tuple(ys)))
    series += [Series("L = 6 xi_c", (6.0, 6.0), (0.0, 1.0)),
               Series("L = 12 xi_c", (12.0, 12.0), (0.0, 1.0))]
    plot = Plot("trainability", f"Test accuracy after {s.train_steps} SGD steps vs depth / xi_c",
                "depth / xi_c", "test accuracy (digits)", tuple(series),
                reference={"chance": 0.1})
    table = Table(f"Trainability: tanh, sigma_b={SIGMA_B:g}, width {s.train_width}, SGD lr={LR:g}"
                  f" momentum={MOMENTUM:g}, batch {BATCH}, {s.train_steps} steps",
                  ("sigma_w", "depth L", "xi_c", "L / xi_c", "test accuracy", "final loss"),
                  tuple(rows))
    return [_trainability_claim(pairs)], [table], [plot]


# ---------------------------------------------------------------- 3. dynamical isometry
def _spread_vs_depth(
    act: str, orthogonal: bool, sigma_b: float, width: int, depths: Sequence[int], batch: int,
    gen: torch.Generator,
) -> tuple[float, ...]:
    """std / mean of the squared Jacobian singular values at each depth, at criticality.

    One net of depth max(depths) at sigma_w = critical_sigma_w(act, sigma_b); the spectrum of
    its first d layers for each d (dense SVD, batch mean).
    """
    sw = meanfield.critical_sigma_w(act, sigma_b)
    q = meanfield.qstar(act, sw, sigma_b)
    if not 0 < q < math.inf:
        q = 1.0  # relu at sigma_b = 0, sigma_w = sqrt(2): every q is fixed
    fn = {"tanh": nn.Tanh, "relu": nn.ReLU}[act]
    model = nn.Sequential(*(
        nn.Sequential(_linear(width, width, sw, sigma_b, gen, orthogonal=orthogonal), fn())
        for _ in range(max(depths))
    ))
    x = _at_fixed_point(batch, width, sw, sigma_b, q, gen)  # (B, N)
    return tuple(float(jacobian_spectrum(model[:d], x).spread.mean()) for d in depths)


def _isometry_claim(
    spread: float, depth: int, *, orthogonal: bool = True, measured: dict[str, float] | None = None
) -> Claim:
    """Claim: the Jacobian spectrum of critical tanh at ``depth`` stays concentrated."""
    kind = "orthogonal" if orthogonal else "Gaussian"
    return Claim.check(
        f"Critical tanh with orthogonal weights and small q* is dynamically isometric "
        f"(Pennington et al. 2017): std / mean of the squared singular values at depth {depth} "
        f"({kind} weights measured)",
        spread,
        below=ISO_MAX,
        measured=measured,
    )


def _isometry_section(
    s: _Sizes, cfg: LabConfig
) -> tuple[list[Claim], list[Table], list[Plot]]:
    cases = (("Gaussian tanh", "tanh", False, SIGMA_B_ISO),
             ("orthogonal tanh", "tanh", True, SIGMA_B_ISO),
             ("orthogonal ReLU", "relu", True, 0.0))
    spreads = {
        label: _spread_vs_depth(act, orth, sb, s.iso_width, s.iso_depths, s.iso_batch,
                                cfg.generator(3 + i))
        for i, (label, act, orth, sb) in enumerate(cases)
    }
    deepest = s.iso_depths[-1]
    g, o, r = (spreads[c[0]][-1] for c in cases)
    sw_t = meanfield.critical_sigma_w("tanh", SIGMA_B_ISO)
    q_t = meanfield.qstar("tanh", sw_t, SIGMA_B_ISO)
    info = {"depth": float(deepest), "width": float(s.iso_width), "q* (tanh)": q_t,
            "spread Gaussian tanh": g, "spread orthogonal tanh": o, "spread orthogonal ReLU": r,
            "ceiling sqrt(width - 1)": math.sqrt(s.iso_width - 1)}
    claims = [
        Claim.check(
            f"At criticality, Gaussian weights spread the Jacobian spectrum far more than "
            f"orthogonal ones (tanh, sigma_b={SIGMA_B_ISO:g}; Pennington et al. 2017): "
            f"spread(Gaussian) / spread(orthogonal) at depth {deepest}",
            g / o, above=ISO_RATIO, measured=info),
        _isometry_claim(o, deepest, measured={"depth": float(deepest), "q* (tanh)": q_t,
                                              "spread at depth 1": spreads[cases[1][0]][0]}),
        Claim.check(
            f"Orthogonal weights do not make critical ReLU isometric (Pennington et al. 2017): "
            f"spread(orthogonal ReLU) / spread(orthogonal tanh) at depth {deepest}",
            r / o, above=ISO_RATIO, measured=info),
    ]
    ds = tuple(float(d) for d in s.iso_depths)
    plot = Plot("isometry", "Spread of the input-output Jacobian spectrum at criticality",
                "depth", "std / mean of squared singular values",
                tuple(Series(label, ds, spreads[label]) for label, *_ in cases),
                logx=True, logy=True)
    table = Table(f"Jacobian spectrum spread (std / mean of sigma^2), width {s.iso_width}",
                  ("depth", *(c[0] for c in cases)),
                  tuple((str(d), *(f"{spreads[c[0]][i]:.3f}" for c in cases))
                        for i, d in enumerate(s.iso_depths)))
    return claims, [table], [plot]


# ---------------------------------------------------------------- the lab
@register("edge_of_chaos")
def edge_of_chaos(cfg: LabConfig) -> LabResult:
    """Mean-field theory of deep random nets, checked against measurements.

    Claims:
        1. tanh with sigma_b = 0 is critical (chi1 = 1) at sigma_w = 1 (meanfield's critical
           line, with the phase diagram of log10 chi1 over (sigma_w, sigma_b)).
        2. In random deep tanh nets at their fixed point q*, the squared per-layer gradient
           norms (measured with :class:`gradwatch.Watch`) change by chi1 per layer: the
           measured per-layer log factor is within 0.05 of ln chi1 across a sigma_w sweep.
        3. Trainability: after a fixed SGD budget on digits, nets with depth below 6 xi_c
           reach a much higher test accuracy than nets deeper than 12 xi_c (margin 0.3).
        4. Dynamical isometry at criticality: the spread (std / mean) of the squared
           input-output Jacobian singular values is > 4x larger with Gaussian than with
           orthogonal weights for tanh; for orthogonal tanh with small q* it stays below 1 at
           the deepest depth; orthogonal ReLU spreads > 4x more than orthogonal tanh.

    Setup: weights W_ij ~ N(0, sigma_w^2 / N) (or sigma_w times a Haar orthogonal matrix),
    biases N(0, sigma_b^2); sigma_b = 0.05 for claims 2-3, 0.005 for the isometry (small q*).
    Gradient and spectrum nets run in float64 with inputs scaled to the fixed point q*;
    training in float32 with plain SGD (lr 0.01, momentum 0.9, batch 128). Sizes per
    ``cfg.size`` are listed in the result's ``setup``.

    Args:
        cfg: size ("smoke", "quick", "full"), seed and device (the lab runs on the CPU).

    Returns:
        A :class:`LabResult` with 6 claims, 4 tables and 6 plots.

    Example:
        >>> res = edge_of_chaos(LabConfig(size="smoke"))            # doctest: +SKIP
        >>> [c.verdict for c in res.claims]                          # doctest: +SKIP

    Papers: Poole, Lahiri, Raghu, Sohl-Dickstein & Ganguli 2016, "Exponential expressivity in
    deep neural networks through transient chaos"; Schoenholz, Gilmer, Ganguli &
    Sohl-Dickstein 2017, "Deep Information Propagation"; Pennington, Schoenholz & Ganguli
    2017, "Resurrecting the sigmoid in deep learning through dynamical isometry".
    """
    if not isinstance(cfg, LabConfig):
        raise TypeError(f"cfg: expected a LabConfig, got {type(cfg).__name__}")
    s = _sizes(cfg)
    claims: list[Claim] = []
    tables: list[Table] = []
    plots: list[Plot] = []
    # Many small ops: on a shared 2-core CPU torch's thread pool runs them several times
    # slower than one thread (workers wait on each other). Restored on exit.
    with one_thread():
        for section in (_phase_section(s), _gradient_section(s, cfg),
                        _trainability_section(s, cfg), _isometry_section(s, cfg)):
            claims += section[0]
            tables += section[1]
            plots += section[2]
    setup = {
        "phase diagram": f"tanh, sigma_w in [0.5, 4] ({s.pd_w} points) x sigma_b in [0, 1] "
                         f"({s.pd_b} points), meanfield.phase_diagram",
        "gradient sweep": f"tanh, width {s.grad_width}, depth {s.grad_depth}, batch "
                          f"{s.grad_batch}, sigma_b {SIGMA_B:g}, sigma_w in "
                          f"{list(s.grad_sigma_w)}, float64, inputs at q*, Watch grad_norm",
        "trainability": f"digits (1200 train / 597 test), tanh width {s.train_width}, depths "
                        f"{list(s.train_depths)}, sigma_w in {list(s.train_sigma_w)} (0 = "
                        f"critical), sigma_b {SIGMA_B:g}, SGD lr {LR:g} momentum {MOMENTUM:g} "
                        f"batch {BATCH}, {s.train_steps} steps, float32",
        "isometry": f"width {s.iso_width}, depths {list(s.iso_depths)}, batch {s.iso_batch}, "
                    f"critical sigma_w, sigma_b {SIGMA_B_ISO:g} (tanh) / 0 (ReLU), dense "
                    f"Jacobian SVD in float64",
        "device": "cpu, one torch thread (restored after the run)",
    }
    return LabResult(
        name="edge_of_chaos",
        title="Edge of chaos: mean-field depth scales, trainability and dynamical isometry",
        config=cfg,
        setup=setup,
        claims=tuple(claims),
        tables=tuple(tables),
        plots=tuple(plots),
    )
