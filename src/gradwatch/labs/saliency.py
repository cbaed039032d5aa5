"""The saliency lab: a saturated unit is a blind spot for gradient saliency, not for IG.

A gradient is a local derivative: where a unit sits on the flat tail of its nonlinearity, the
gradient through it is near zero however much that unit decides the output. Integrated
Gradients (Sundararajan et al. 2017) integrates the gradient along the straight path from a
baseline, so it sees the change the unit made on the way, and its attributions add up to
f(x) - f(baseline) (completeness). Two settings, every number measured in this run: a
hand-set network where feature x_0 saturates a sigmoid unit that decides the output, and a
tanh MLP trained on scikit-learn's digits whose hidden units saturate on some images.
Attributions come from Captum (imported lazily: the ``labs`` extra) and are checked against a
direct computation (``torch.autograd.grad`` and Gauss-Legendre IG written out here).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from gradwatch.core.activations import SATURATION, activation, saturated_share
from gradwatch.labs import register
from gradwatch.labs.base import Claim, LabConfig, LabResult, Plot, Series, Table, one_thread
from gradwatch.labs.base import steps as progress

__all__ = ["saliency"]

FEATURES = 8  # toy: x_0 drives the sigmoid unit, x_1..x_7 enter linearly
GAIN = 10.0  # toy: weight from x_0 into the sigmoid unit
W_OUT = 2.0  # toy: weight of the sigmoid unit in the output
LINEAR_SCALE = 0.1  # toy: c_i ~ LINEAR_SCALE * N(0, 1), the "small linear terms"
X0 = 1.0  # toy: x_0 at the input of interest; GAIN * X0 = 10 puts sigmoid' at 1.8e-4 of its max
BLIND = SATURATION  # "almost nothing": a share below the library's 1% saturation cut
COMPLETE = 0.01  # completeness: |sum(IG) - (f(x) - f(b))| / |f(x) - f(b)| below 1%
# Captum multiplies the gradients by quadrature weights cast to float32: agreement with the
# direct float64 computation is to float32 rounding of the weights (eps 1.2e-7), not to 1e-15.
AGREE = 1e-6
EXACT = 1e-12  # Captum's Saliency is one autograd call: equal to ours up to float64 rounding
METHOD = "gausslegendre"  # Captum's default IG quadrature; the direct reference uses the same
ACT = "tanh"  # digits MLP hidden units
LR = 1e-2  # Adam, digits MLP
BATCH = 64
N_TEST = 500
_F64 = torch.float64


@dataclass(frozen=True)
class _Sizes:
    ig_steps: int  # quadrature nodes for every IG
    hidden: int  # digits MLP width
    epochs: int
    n_train: int
    n_attr: int  # test images attributed


def _sizes(cfg: LabConfig) -> _Sizes:
    s = cfg.pick(_Sizes(16, 32, 3, 500, 32), _Sizes(64, 64, 20, 1297, 500),
                 _Sizes(300, 128, 50, 1297, 500))
    assert isinstance(s, _Sizes)
    return s


def _captum() -> ModuleType:
    """captum.attr, imported on first use: Captum is an optional dependency (the labs extra)."""
    try:
        from captum import attr
    except ImportError as e:
        raise ImportError(
            "the saliency lab needs Captum (captum.attr.Saliency, IntegratedGradients): "
            "pip install 'gradwatch[labs]' (or pip install captum)"
        ) from e
    return attr


# ---------------------------------------------------------------- attribution, direct
def _shares(a: torch.Tensor) -> torch.Tensor:
    """|a| / sum |a| along the last dimension."""
    m = a.abs()
    return m / m.sum(-1, keepdim=True)


def _saliency_direct(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """|df/dx| by one ``torch.autograd.grad`` call; f maps (B, D) to (B,)."""
    xr = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(xr).sum(), xr)  # (B, D): rows are independent
    return g.abs()


def _ig_direct(
    f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, base: torch.Tensor, n: int
) -> torch.Tensor:
    """Integrated Gradients by n-node Gauss-Legendre quadrature on [0, 1], written out:
    (x - b) * sum_k w_k df/dx(b + a_k (x - b)); f maps (B, D) to (B,)."""
    nodes, weights = np.polynomial.legendre.leggauss(n)  # on [-1, 1]
    alphas = (0.5 * (nodes + 1)).tolist()
    w = (0.5 * weights).tolist()
    total = torch.zeros_like(x)  # (B, D)
    for a_k, w_k in zip(alphas, w, strict=True):
        total += w_k * _grad(f, base + a_k * (x - base))
    return total * (x - base)


def _trapezoid_direct(
    f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, base: torch.Tensor, n: int
) -> torch.Tensor:
    """IG by the composite trapezoid rule on n equally spaced points (spacing 1 / (n - 1))."""
    total = torch.zeros_like(x)  # (B, D)
    for k in range(n):
        w_k = (0.5 if k in (0, n - 1) else 1.0) / (n - 1)
        total += w_k * _grad(f, base + (k / (n - 1)) * (x - base))
    return total * (x - base)


def _grad(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    xr = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(xr).sum(), xr)
    return g


def _completeness(ig: torch.Tensor, df: torch.Tensor) -> torch.Tensor:
    """|sum_i IG_i - (f(x) - f(b))| / |f(x) - f(b)| per row: ig (B, D), df (B,)."""
    return (ig.sum(-1) - df).abs() / df.abs()


def _rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|."""
    return float((a - b).abs().max() / b.abs().max())


# ---------------------------------------------------------------- toy: one saturated unit
class _Toy(nn.Module):
    """f(x) = W_OUT * sigmoid(GAIN * x_0) + sum_{i>0} c_i x_i, as a two-branch network:
    one sigmoid unit reading x_0, and a linear skip reading x_1..x_{D-1}."""

    def __init__(self, c: torch.Tensor) -> None:  # c (D,), c_0 = 0
        super().__init__()
        w = torch.zeros(1, len(c), dtype=_F64)
        w[0, 0] = GAIN
        self.unit = nn.Parameter(w, requires_grad=False)  # (1, D)
        self.skip = nn.Parameter(c.to(_F64)[None], requires_grad=False)  # (1, D)

    def pre(self, x: torch.Tensor) -> torch.Tensor:  # x (B, D) -> (B,)
        return (x @ self.unit.T)[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (B, D) -> (B,)
        return W_OUT * torch.sigmoid(self.pre(x)) + (x @ self.skip.T)[:, 0]


@dataclass(frozen=True)
class _ToyRun:
    x: tuple[float, ...]  # the input of interest
    c: tuple[float, ...]  # linear coefficients (c_0 = 0)
    saliency: tuple[float, ...]  # Captum Saliency, |df/dx|
    saliency_direct: tuple[float, ...]  # torch.autograd.grad
    ig: tuple[float, ...]  # Captum IntegratedGradients (gausslegendre)
    ig_direct: tuple[float, ...]  # Gauss-Legendre written out
    delta_f: float  # f(x) - f(0)
    saturation: float  # sigmoid'(GAIN x_0) / max sigmoid'
    saturated: float  # the library's saturated_share on the unit's pre-activation (0 or 1)
    trapezoid_captum: float  # sum of Captum's riemann_trapezoid IG
    trapezoid_direct: float  # sum of the composite trapezoid IG written out


def _toy(gen: torch.Generator, n: int, x0: float = X0) -> _ToyRun:
    """The toy network at an input with x_0 = x0, attributed against the zero baseline."""
    attr = _captum()
    c = LINEAR_SCALE * torch.randn(FEATURES, generator=gen, dtype=_F64)  # (D,)
    c[0] = 0.0
    x = torch.randn(1, FEATURES, generator=gen, dtype=_F64)  # (1, D)
    x[0, 0] = x0
    base = torch.zeros_like(x)
    net = _Toy(c)
    sal = attr.Saliency(net).attribute(x.clone().requires_grad_(True), abs=True)  # (1, D)
    ig = attr.IntegratedGradients(net).attribute(x, baselines=base, n_steps=n, method=METHOD)
    trap = attr.IntegratedGradients(net).attribute(
        x, baselines=base, n_steps=n, method="riemann_trapezoid")
    with torch.no_grad():
        df = float(net(x) - net(base))
        z = net.pre(x)  # (1,)
    sig = activation("sigmoid")
    assert sig.max_derivative is not None
    return _ToyRun(
        x=_floats(x[0]), c=_floats(c), saliency=_floats(sal[0]),
        saliency_direct=_floats(_saliency_direct(net, x)[0]), ig=_floats(ig[0]),
        ig_direct=_floats(_ig_direct(net, x, base, n)[0]), delta_f=df,
        saturation=float(sig.derivative(z)[0] / sig.max_derivative),
        saturated=float(saturated_share(sig, z)),
        trapezoid_captum=float(trap.sum()),
        trapezoid_direct=float(_trapezoid_direct(net, x, base, n).sum()),
    )


def _floats(t: torch.Tensor) -> tuple[float, ...]:
    return tuple(float(v) for v in t.detach().reshape(-1))


def _t(v: tuple[float, ...]) -> torch.Tensor:
    return torch.tensor(v, dtype=_F64)


def _toy_claims(run: _ToyRun) -> list[Claim]:
    sal_share = _shares(_t(run.saliency))  # (D,)
    ig_share = _shares(_t(run.ig))  # (D,)
    completeness = abs(sum(run.ig) - run.delta_f) / abs(run.delta_f)
    setting = (f"f(x) = {W_OUT:g} sigmoid({GAIN:g} x_0) + sum_i c_i x_i at x_0 = {run.x[0]:g}, "
               "zero baseline")
    return [
        Claim.check(
            f"Gradient saliency is blind to a saturated unit: in {setting}, x_0 decides the "
            f"output but gets almost nothing of |df/dx| (its share, below the {BLIND:g} "
            "saturation cut)",
            float(sal_share[0]), below=BLIND,
            measured={"|df/dx_0|": run.saliency[0],
                      "largest |df/dx_i|, i > 0": max(run.saliency[1:]),
                      "sigmoid'(GAIN x_0) / max sigmoid'": run.saturation,
                      "saturated_share of the unit": run.saturated,
                      "x_0's share of IG": float(ig_share[0])}),
        Claim.check(
            "Integrated Gradients (Sundararajan et al. 2017) gives x_0 the largest share: "
            "|IG_0| / max_{i>0} |IG_i|",
            abs(run.ig[0]) / max(abs(v) for v in run.ig[1:]), above=1.0,
            measured={"IG_0": run.ig[0], "largest |IG_i|, i > 0": max(abs(v) for v in run.ig[1:]),
                      "x_0's share of IG": float(ig_share[0]),
                      "x_0's share of saliency": float(sal_share[0]),
                      "f(x) - f(0)": run.delta_f}),
        Claim.check(
            f"IG is complete: its attributions sum to f(x) - f(baseline) within {COMPLETE:.0%} "
            f"(|sum IG - delta f| / |delta f|, Captum {METHOD})",
            completeness, below=COMPLETE,
            measured={"sum of IG": sum(run.ig), "f(x) - f(0)": run.delta_f,
                      "Captum riemann_trapezoid: sum of IG": run.trapezoid_captum,
                      "trapezoid written out: sum of IG": run.trapezoid_direct}),
        Claim.check(
            f"Captum's IntegratedGradients ({METHOD}) equals IG computed directly with the same "
            f"nodes (max |difference| / max |IG|, below {AGREE:g}: Captum rounds the quadrature "
            "weights to float32)",
            _rel_diff(_t(run.ig), _t(run.ig_direct)), below=AGREE,
            measured={"max |Captum - direct|": float(
                (_t(run.ig) - _t(run.ig_direct)).abs().max())}),
        Claim.check(
            f"Captum's Saliency equals |torch.autograd.grad| (max |difference| / max |grad|, "
            f"below {EXACT:g})",
            _rel_diff(_t(run.saliency), _t(run.saliency_direct)), below=EXACT,
            measured={"max |Captum - autograd|": float(
                (_t(run.saliency) - _t(run.saliency_direct)).abs().max())}),
    ]


# ---------------------------------------------------------------- digits: a trained MLP
class _Mlp(nn.Module):
    """64 -> hidden (tanh) -> 10; attributions go to ``fc1``'s output, the pre-activation."""

    def __init__(self, hidden: int, gen: torch.Generator) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # default init draws globally: redraw from gen
            self.fc1 = nn.Linear(64, hidden)
            self.fc2 = nn.Linear(hidden, 10)
        with torch.no_grad():
            for layer in (self.fc1, self.fc2):
                bound = 1.0 / math.sqrt(layer.in_features)  # PyTorch's default scale
                for p in layer.parameters():
                    p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * bound)
        self.act = nn.Tanh()

    def head(self, z: torch.Tensor) -> torch.Tensor:  # z (B, H) -> logits (B, 10)
        out = self.fc2(self.act(z))
        assert isinstance(out, torch.Tensor)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (B, 64) -> (B, 10)
        return self.head(self.fc1(x))


def _digits(gen: torch.Generator, n_train: int) -> tuple[torch.Tensor, ...]:
    """Digits split by ``gen`` into train / 500 test, standardised with training statistics."""
    from sklearn.datasets import load_digits

    x_np, y_np = load_digits(return_X_y=True)
    x = torch.as_tensor(x_np, dtype=torch.float32)  # (1797, 64)
    y = torch.as_tensor(y_np, dtype=torch.long)
    perm = torch.randperm(len(x), generator=gen)
    test, train = perm[:N_TEST], perm[N_TEST : N_TEST + n_train]
    mu, sd = x[train].mean(0), x[train].std(0).clamp_min(1e-2)  # border pixels are constant
    return (x[train] - mu) / sd, y[train], (x[test] - mu) / sd, y[test]


def _train(s: _Sizes, cfg: LabConfig) -> tuple[_Mlp, torch.Tensor, float]:
    """Adam on cross-entropy; returns the net, the test images and the test accuracy."""
    x, y, xt, yt = _digits(cfg.generator(1), s.n_train)
    net = _Mlp(s.hidden, cfg.generator(2))
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    shuffle = cfg.generator(3)
    for _ in progress(s.epochs, f"digits MLP ({ACT}, {s.hidden} hidden)"):
        perm = torch.randperm(len(x), generator=shuffle)
        for i in range(0, len(x), BATCH):
            b = perm[i : i + BATCH]
            opt.zero_grad()
            F.cross_entropy(net(x[b]), y[b]).backward()
            opt.step()
    with torch.no_grad():
        acc = float((net(xt).argmax(1) == yt).float().mean())
    return net, xt, acc


@dataclass(frozen=True)
class _DigitsRun:
    saturated: tuple[float, ...]  # per image: share of hidden units saturated
    sal_share: tuple[float, ...]  # per image: saturated units' share of |dF/dz|
    ig_share: tuple[float, ...]  # per image: saturated units' share of |IG|
    completeness: tuple[float, ...]  # per image: |sum IG - delta F| / |delta F|
    library_share: float  # saturated_share over all (image, unit) pairs
    captum_vs_direct_ig: float  # max relative difference
    captum_vs_direct_grad: float
    delta_f: tuple[float, ...]  # per image: F(x) - F(0), target logit


def _attribute(net0: _Mlp, xt: torch.Tensor, n: int) -> _DigitsRun:
    """Saliency and IG on the hidden pre-activations z = fc1(x), target: the predicted class.

    Saliency: Captum's LayerGradientXActivation with multiply_by_inputs=False (the plain layer
    gradient dF/dz). IG: Captum's LayerIntegratedGradients on fc1 (IG in z-space from
    z' = fc1(0) to z = fc1(x), the standard hidden-layer IG). Both in float64.
    """
    attr = _captum()
    net = copy.deepcopy(net0).to(_F64)
    x = xt.to(_F64)  # (B, 64)
    base = torch.zeros_like(x)  # the mean image (inputs are standardised)
    with torch.no_grad():
        target = net(x).argmax(1)  # (B,)
        z, zb = net.fc1(x), net.fc1(base)  # (B, H)
        df = net(x).gather(1, target[:, None])[:, 0] - net(base).gather(1, target[:, None])[:, 0]
    grad = attr.LayerGradientXActivation(net, net.fc1, multiply_by_inputs=False).attribute(
        x, target=target)  # (B, H)
    ig = attr.LayerIntegratedGradients(net, net.fc1).attribute(
        x, baselines=base, target=target, n_steps=n, method=METHOD)  # (B, H)

    def head(zz: torch.Tensor) -> torch.Tensor:  # (B, H) -> target logit (B,)
        return net.head(zz).gather(1, target[:, None])[:, 0]

    ig_ref = _ig_direct(head, z, zb, n)  # (B, H)
    grad_ref = _grad(head, z)  # (B, H)
    act = activation(ACT)
    assert act.max_derivative is not None
    sat = act.derivative(z) < SATURATION * act.max_derivative  # (B, H) the library's cut
    sal_share = (_shares(grad) * sat).sum(-1)  # (B,)
    ig_share = (_shares(ig) * sat).sum(-1)  # (B,)
    return _DigitsRun(
        saturated=_floats(sat.to(_F64).mean(-1)), sal_share=_floats(sal_share),
        ig_share=_floats(ig_share), completeness=_floats(_completeness(ig, df)),
        library_share=float(saturated_share(act, z)),
        captum_vs_direct_ig=_rel_diff(ig, ig_ref),
        captum_vs_direct_grad=_rel_diff(grad, grad_ref), delta_f=_floats(df),
    )


def _mean(v: tuple[float, ...]) -> float:
    return sum(v) / len(v) if v else math.nan


def _digits_claims(run: _DigitsRun, acc: float) -> list[Claim]:
    sal, ig = _mean(run.sal_share), _mean(run.ig_share)
    with_sat = [i for i, s in enumerate(run.saturated) if s > 0]
    smaller = sum(run.sal_share[i] < run.ig_share[i] for i in with_sat)
    return [
        Claim.check(
            f"On a trained digits MLP ({ACT}), saturated hidden units (phi' < {SATURATION:g} of "
            "its max) get a smaller share of gradient saliency than of IG attribution: mean "
            "share of |dF/dz| / mean share of |IG| over test images",
            sal / ig if ig > 0 else math.nan, below=1.0,
            measured={"mean saturated share of saliency": sal,
                      "mean saturated share of IG": ig,
                      "share of (image, unit) pairs saturated": _mean(run.saturated),
                      "same, by saturated_share": run.library_share,
                      "images with a saturated unit": float(len(with_sat)),
                      "of those, saliency share < IG share": float(smaller),
                      "test accuracy": acc}),
        Claim.check(
            f"IG on the hidden layer is complete on every test image: worst |sum IG - delta F| / "
            f"|delta F| below {COMPLETE:.0%} (F: the predicted class's logit)",
            max(run.completeness), below=COMPLETE,
            measured={"median over images": float(np.median(run.completeness)),
                      "smallest |delta F|": min(abs(v) for v in run.delta_f),
                      "images": float(len(run.completeness))}),
        Claim.check(
            f"Captum's LayerIntegratedGradients and LayerGradientXActivation (no multiply) equal "
            f"the direct computation on the hidden layer (worst max |difference| / max |value| "
            f"of the two, below {AGREE:g})",
            max(run.captum_vs_direct_ig, run.captum_vs_direct_grad), below=AGREE,
            measured={"IG: Captum vs direct Gauss-Legendre": run.captum_vs_direct_ig,
                      "gradient: Captum vs torch.autograd.grad": run.captum_vs_direct_grad}),
    ]


# ---------------------------------------------------------------- the lab
@register("saliency")
def saliency(cfg: LabConfig) -> LabResult:
    """Gradient saliency against Integrated Gradients where a unit saturates.

    Claims:
        1. Toy f(x) = 2 sigmoid(10 x_0) + sum_{i>0} c_i x_i at x_0 = 1 (the sigmoid unit
           saturated: sigmoid' at 1.8e-4 of its max): x_0's share of gradient saliency
           |df/dx| is below 1%.
        2. Integrated Gradients gives x_0 the largest share.
        3. IG's attributions sum to f(x) - f(0) within 1% (completeness).
        4. Captum's IntegratedGradients equals IG written out with the same Gauss-Legendre
           nodes (to Captum's float32 quadrature weights: 1e-6 relative).
        5. Captum's Saliency equals |torch.autograd.grad| (1e-12 relative).
        6. Digits MLP (tanh): the saturated hidden units' mean share of saliency is smaller
           than their mean share of IG attribution (ratio < 1).
        7. Hidden-layer IG is complete within 1% on every attributed test image.
        8. Captum's layer attributions equal the direct computation (1e-6 relative).

    Setup: toy in float64, 8 features, c_i ~ 0.1 N(0, 1), x_i ~ N(0, 1) for i > 0, zero
    baseline. Digits (scikit-learn, 8x8) standardised with training statistics, 500 held-out
    images; MLP 64 -> H tanh -> 10 trained with Adam (lr 1e-2, batch 64); attributions to the
    hidden pre-activations z = fc1(x) for the predicted class's logit, baseline the zero
    (mean) image, in float64. Saliency: Captum ``Saliency`` (toy) and
    ``LayerGradientXActivation(multiply_by_inputs=False)`` (the layer gradient, digits). IG:
    Captum ``IntegratedGradients`` and ``LayerIntegratedGradients`` with Gauss-Legendre
    quadrature (Captum's default). A unit is saturated when phi'(z) < 1% of max phi'
    (``gradwatch.core.activations.SATURATION``).

    Args:
        cfg: size ("smoke", "quick", "full"), seed and device (the lab runs on the CPU).

    Returns:
        A :class:`LabResult` with 8 claims, 3 tables and 2 plots.

    Raises:
        ImportError: Captum is missing (``pip install 'gradwatch[labs]'``).

    Example:
        >>> res = saliency(LabConfig(size="smoke"))                  # doctest: +SKIP
        >>> [c.verdict for c in res.claims]                          # doctest: +SKIP

    Papers: Sundararajan, Taly & Yan 2017, "Axiomatic Attribution for Deep Networks"
    (Integrated Gradients, completeness); Simonyan, Vedaldi & Zisserman 2014, "Deep Inside
    Convolutional Networks" (gradient saliency); Kokhlikyan et al. 2020, "Captum".
    """
    if not isinstance(cfg, LabConfig):
        raise TypeError(f"cfg: expected a LabConfig, got {type(cfg).__name__}")
    _captum()  # fail before any work if the extra is missing
    s = _sizes(cfg)
    with one_thread():
        toy = _toy(cfg.generator(0), s.ig_steps)
        net, xt, acc = _train(s, cfg)
        digits = _attribute(net, xt[: s.n_attr], s.ig_steps)

    claims = [*_toy_claims(toy), *_digits_claims(digits, acc)]
    return LabResult(
        name="saliency",
        title="Saliency: a saturated unit is a blind spot for the gradient, not for IG",
        config=cfg,
        setup={
            "toy": f"f(x) = {W_OUT:g} sigmoid({GAIN:g} x_0) + sum_(i>0) c_i x_i, {FEATURES} "
                   f"features, c_i ~ {LINEAR_SCALE:g} N(0,1), x_0 = {X0:g}, x_i ~ N(0,1), zero "
                   "baseline, float64",
            "digits": f"scikit-learn digits standardised, {N_TEST} held-out images ({s.n_attr} "
                      f"attributed); MLP 64 -> {s.hidden} {ACT} -> 10, Adam lr {LR:g}, batch "
                      f"{BATCH}, {s.epochs} epochs on {s.n_train} images",
            "attribution": f"Captum Saliency / IntegratedGradients (toy, inputs); "
                           "LayerGradientXActivation(multiply_by_inputs=False) / "
                           "LayerIntegratedGradients on fc1 (digits: the hidden pre-activations, "
                           f"target the predicted class); IG {METHOD}, {s.ig_steps} nodes",
            "saturated": f"phi'(z) < {SATURATION:g} x max phi' (gradwatch.core.activations)",
            "reference": "torch.autograd.grad; IG by Gauss-Legendre nodes written out (numpy "
                         "leggauss), the same nodes as Captum",
            "device": "cpu, one torch thread (restored after the run)",
        },
        claims=tuple(claims),
        tables=(_toy_table(toy), _quadrature_table(toy, s.ig_steps), _digits_table(digits, acc)),
        plots=_plots(toy, digits),
    )


def _toy_table(run: _ToyRun) -> Table:
    sal, ig = _shares(_t(run.saliency)), _shares(_t(run.ig))
    rows = tuple(
        (f"x_{i}", f"{run.x[i]:.4g}", f"{run.c[i]:.4g}" if i else f"{GAIN:g} into sigmoid",
         f"{run.saliency[i]:.4g}", f"{run.saliency_direct[i]:.4g}", f"{float(sal[i]):.4f}",
         f"{run.ig[i]:.6g}", f"{run.ig_direct[i]:.6g}", f"{float(ig[i]):.4f}")
        for i in range(len(run.x))
    )
    return Table("Toy: attribution per feature (x_0 saturates the sigmoid unit)",
                 ("feature", "x_i", "weight", "saliency |df/dx| (Captum)", "saliency (autograd)",
                  "share of saliency", "IG (Captum)", "IG (direct)", "share of IG"), rows)


def _quadrature_table(run: _ToyRun, n: int) -> Table:
    rows = []
    for name, total in ((f"Captum {METHOD}", sum(run.ig)),
                        ("direct Gauss-Legendre", sum(run.ig_direct)),
                        ("Captum riemann_trapezoid", run.trapezoid_captum),
                        ("direct composite trapezoid", run.trapezoid_direct)):
        err = abs(total - run.delta_f) / abs(run.delta_f)
        rows.append((name, str(n), f"{total:.9g}", f"{run.delta_f:.9g}",
                     f"{total / run.delta_f:.6f}", f"{err:.3g}"))
    return Table("Toy: IG completeness by quadrature rule (Captum's riemann_trapezoid weights "
                 "sum to 1 - 1/n)",
                 ("rule", "nodes", "sum of IG", "f(x) - f(0)", "sum / (f(x) - f(0))",
                  "completeness error"), tuple(rows))


def _digits_table(run: _DigitsRun, acc: float) -> Table:
    sal, ig = _mean(run.sal_share), _mean(run.ig_share)
    rows = (
        ("test accuracy", f"{acc:.4f}"),
        ("images attributed", str(len(run.saturated))),
        ("share of (image, unit) pairs saturated", f"{_mean(run.saturated):.4f}"),
        ("images with at least one saturated unit", str(sum(v > 0 for v in run.saturated))),
        ("mean saturated share of saliency |dF/dz|", f"{sal:.4g}"),
        ("mean saturated share of IG", f"{ig:.4g}"),
        ("ratio (saliency / IG)", f"{sal / ig:.4g}" if ig > 0 else "-"),
        ("IG completeness error: median / worst",
         f"{float(np.median(run.completeness)):.3g} / {max(run.completeness):.3g}"),
        ("Captum vs direct: IG / gradient",
         f"{run.captum_vs_direct_ig:.3g} / {run.captum_vs_direct_grad:.3g}"),
    )
    return Table("Digits MLP: saturated hidden units under saliency and IG", ("quantity", "value"),
                 rows)


def _plots(toy: _ToyRun, digits: _DigitsRun) -> tuple[Plot, ...]:
    idx = tuple(float(i) for i in range(len(toy.x)))
    sal, ig = _floats(_shares(_t(toy.saliency))), _floats(_shares(_t(toy.ig)))
    line = tuple(i / 10 for i in range(11))
    return (
        Plot("toy_attribution", "Toy: share of attribution per feature (x_0 saturates the unit)",
             "feature index i", "share of |attribution|",
             (Series("gradient saliency |df/dx_i|", idx, sal), Series("Integrated Gradients", idx,
                                                                       ig)),
             logy=all(v > 0 for v in (*sal, *ig)), kind="scatter",
             reference={f"{BLIND:g}: the \"almost nothing\" cut for x_0's saliency": BLIND}),
        Plot("digits_shares", "Digits MLP: saturated hidden units' share, per test image",
             "saturated units' share of IG", "saturated units' share of saliency",
             (Series("test image", digits.ig_share, digits.sal_share),
              Series("equal shares", line, line)), kind="scatter"),
    )
